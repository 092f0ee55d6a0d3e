"""XENNET-01: xen-netfront interfaces have scatter-gather on or a jumbo MTU.

One test case per (host, interface), parametrized from the facts gathered once per
run (see conftest.py). Errors and not-applicable cases are settled in the
``xennet_judgement`` fixture; what reaches the test body is pass or susceptible.
"""

import pytest

from compliance.rule import CONTROL, Verdict


def test_xennet_sg_mtu(xennet_judgement):
    if xennet_judgement.verdict is Verdict.SUSCEPTIBLE:
        fixes = "\n".join(f"-- {fix}" for fix in xennet_judgement.fixes)
        pytest.fail(f"{xennet_judgement.message}\n{fixes}\n{CONTROL.remediation}", pytrace=False)
    assert xennet_judgement.verdict.mitigated, xennet_judgement
