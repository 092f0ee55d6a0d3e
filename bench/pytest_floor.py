"""The pytest side's floor: plain pytest, one trivial test per (host, interface) case, junit.xml.

bench/run.py copies this file into a run's own directory as ``test_floor.py``, beside a
``cases.json`` that lists the cases' ids (``host|interface``, as the audit names them), and runs
it with pytest's and the installed plugins' defaults but without this suite's plugin. What it
costs is what pytest itself spends per case (collection, three phases and their reports, JUnit,
the terminal): any audit that reports a pytest case per interface spends at least that.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CASES = json.loads((Path(__file__).parent / "cases.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_case(case: str) -> None:
    assert case
