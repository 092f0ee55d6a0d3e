"""XENNET-01: xen-netfront interfaces have scatter-gather on or a jumbo MTU.

One case per (host, interface), from the facts gathered once per run: the audit
(:mod:`compliance.audit`) collects ``test_xennet_sg_mtu`` as one ``CaseItem`` per case,
whose node id reads ``compliance/test_xennet.py::test_xennet_sg_mtu[HOST|IFACE]``.
Errors and not-applicable cases are settled before the check, in the case's setup; what
reaches the check is pass, susceptible, or a verdict a ``--xennet-require-*`` option fails.
With ``--xennet-workaround``, the judgement is the state after the workaround, and a
workaround that failed (including persistence) fails the case with its one-line cause.
With ``--xennet-waivers``, a susceptible case an active waiver matches fails here as any
other, under the xfail mark its setup gave it (the justification is the reason); one
that only an expired waiver matches fails, naming it.
"""

from __future__ import annotations

import pytest

from compliance.rule import CONTROL, Judgement, Verdict
from compliance.waivers import Decision
from compliance.workaround import Outcome


def test_xennet_sg_mtu(judgement: Judgement, workaround: Outcome | None, waiver: Decision | None) -> None:
    if workaround is not None and workaround.failed:
        pytest.fail(f"workaround failed: {workaround.cause}\n{judgement.message}", pytrace=False)
    if judgement.verdict is Verdict.SUSCEPTIBLE:
        fixes = "\n".join(f"-- {fix}" for fix in judgement.fixes)
        if workaround is not None:  # dry-run
            fixes += "".join(f"\n-- dry-run, would run: {c}" for c in workaround.commands)
        expired = "" if waiver is None or waiver.active else f"{waiver.expired_message()}\n"
        pytest.fail(f"{expired}{judgement.message}\n{fixes}\n{CONTROL.remediation}", pytrace=False)
    if judgement.verdict is Verdict.NONE_APPLICABLE:  # --xennet-require-applicable
        pytest.fail(judgement.message, pytrace=False)
    if judgement.verdict is Verdict.NOT_PERSISTENT:  # --xennet-require-persistent
        pytest.fail(judgement.message, pytrace=False)
    assert judgement.verdict.mitigated, judgement
