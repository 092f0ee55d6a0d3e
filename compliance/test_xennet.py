"""XENNET-01: xen-netfront interfaces have scatter-gather on or a jumbo MTU.

One test case per (host, interface), parametrized from the facts gathered once per
run (see conftest.py). Errors and not-applicable cases are settled in the
``xennet_judgement`` fixture; what reaches the test body is pass or susceptible.
With ``--xennet-workaround``, the judgement is the state after the workaround, and a
workaround that failed (including persistence) fails the case with its one-line cause.
With ``--xennet-waivers``, a susceptible case an active waiver matches fails here as any
other, under the xfail mark the fixture gave it (the justification is the reason); one
that only an expired waiver matches fails, naming it.
"""

import pytest

from compliance.rule import CONTROL, Verdict


def test_xennet_sg_mtu(xennet_judgement, xennet_workaround, xennet_waiver):
    if xennet_workaround is not None and xennet_workaround.failed:
        pytest.fail(f"workaround failed: {xennet_workaround.cause}\n{xennet_judgement.message}", pytrace=False)
    if xennet_judgement.verdict is Verdict.SUSCEPTIBLE:
        fixes = "\n".join(f"-- {fix}" for fix in xennet_judgement.fixes)
        if xennet_workaround is not None:  # dry-run
            fixes += "".join(f"\n-- dry-run, would run: {c}" for c in xennet_workaround.commands)
        expired = "" if xennet_waiver is None or xennet_waiver.active else f"{xennet_waiver.expired_message()}\n"
        pytest.fail(f"{expired}{xennet_judgement.message}\n{fixes}\n{CONTROL.remediation}", pytrace=False)
    if xennet_judgement.verdict is Verdict.NONE_APPLICABLE:  # --xennet-require-applicable
        pytest.fail(xennet_judgement.message, pytrace=False)
    if xennet_judgement.verdict is Verdict.NOT_PERSISTENT:  # --xennet-require-persistent
        pytest.fail(xennet_judgement.message, pytrace=False)
    assert xennet_judgement.verdict.mitigated, xennet_judgement
