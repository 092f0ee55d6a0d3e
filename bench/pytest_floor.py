"""The pytest side's floor: plain pytest, one case per (host, interface) that computes nothing, junit.xml.

bench/run.py copies this file into a run's own directory as its ``conftest.py``, beside a
``cases.json`` that lists the cases (``[id, message]``: a message for a case that fails, as a
susceptible interface's does, with ``pytest.fail(message, pytrace=False)``), and runs pytest on
that file with the installed plugins but without this suite's. Each case is an item that
computes nothing, run by the audit's own lean protocol (compliance/audit.py, ``CaseItem.run_lean``): its three
phases reported through every plugin's makereport and logreport hooks (JUnit, the terminal),
nothing around them. What it costs is what pytest spends per case at the least: any audit that
reports a pytest case per interface this way spends at least that.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest


class Case(pytest.Item):
    def __init__(self, *, failure: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failure = failure

    def runtest(self) -> None:
        if self.failure:
            pytest.fail(self.failure, pytrace=False)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        return excinfo.getrepr(style="value", tbfilter=False)  # as the audit's CaseItem does

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, self.name


class Cases(pytest.File):
    def collect(self) -> Iterator[Case]:
        for name, failure in json.loads(self.path.read_text()):
            yield Case.from_parent(self, name=name, failure=failure)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Cases | None:
    return Cases.from_parent(parent, path=file_path) if file_path.name == "cases.json" else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Any) -> bool:
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    phases: tuple[tuple[Literal["setup", "call", "teardown"], Callable[[], None]], ...] = (
        ("setup", item.setup),
        ("call", item.runtest),
        ("teardown", item.teardown),
    )
    for when, run in phases:
        call = pytest.CallInfo.from_call(run, when=when)
        report = ihook.pytest_runtest_makereport(item=item, call=call)
        ihook.pytest_runtest_logreport(report=report)
        if call.excinfo is not None:  # as the audit's: a failure goes to --pdb and faulthandler's hooks
            ihook.pytest_exception_interact(node=item, call=call, report=report)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
