"""The rule, as a table: facts in, verdict and message out."""

from __future__ import annotations

import pytest

from compliance.probe import InterfaceFacts
from compliance.row import Row
from compliance.rule import JUMBO_MTU, Judgement, Verdict, fix_commands, judge, persistent


def xen(name="eth0", **kw):
    return InterfaceFacts(name, driver=kw.pop("driver", "xen_netfront"), **kw)


@pytest.mark.parametrize(
    ("iface", "scope", "verdict", "message"),
    [
        (
            xen(mtu=1500, scatter_gather=True),
            "xen",
            Verdict.SG_ON,
            "Scatter-Gather is enabled on eth0. This mitigates the bug.",
        ),
        (
            xen(mtu=9001, scatter_gather=False),
            "xen",
            Verdict.JUMBO_MTU,
            "MTU is set to Jumbo-Frame size on eth0. This mitigates the bug.",
        ),
        # ec2rl only matched exactly 9001; anything above is jumbo too.
        (
            xen(mtu=9216, scatter_gather=False),
            "xen",
            Verdict.JUMBO_MTU,
            "MTU is set to Jumbo-Frame size on eth0. This mitigates the bug.",
        ),
        (
            xen(mtu=9000, scatter_gather=False),
            "xen",
            Verdict.SUSCEPTIBLE,
            "Scatter-Gather is off and MTU is set below 9001 on eth0. You are potentially susceptible to the bug.",
        ),
        (
            xen(mtu=1500, scatter_gather=False, driver="vif"),
            "xen",
            Verdict.SUSCEPTIBLE,
            "Scatter-Gather is off and MTU is set below 9001 on eth0. You are potentially susceptible to the bug.",
        ),
        (
            xen(mtu=1500, scatter_gather=False, driver="netfront"),
            "xen",
            Verdict.SUSCEPTIBLE,
            "Scatter-Gather is off and MTU is set below 9001 on eth0. You are potentially susceptible to the bug.",
        ),
        (
            xen(mtu=1500, scatter_gather=False, driver="ena"),
            "xen",
            Verdict.NOT_APPLICABLE,
            "eth0 uses ena: not affected",
        ),
        (
            InterfaceFacts("veth1", virtual=True, mtu=1500, scatter_gather=False),
            "xen",
            Verdict.NOT_APPLICABLE,
            "veth1 is virtual: not affected",
        ),
        # ec2rl passes when it cannot read the driver; we do not.
        (InterfaceFacts("eth0", mtu=1500, scatter_gather=True), "xen", Verdict.ERROR, "cannot read the driver of eth0"),
        (
            InterfaceFacts("veth1", virtual=True, mtu=1500, scatter_gather=False),
            "all",
            Verdict.SUSCEPTIBLE,
            "Scatter-Gather is off and MTU is set below 9001 on veth1. You are potentially susceptible to the bug.",
        ),
        (
            xen(mtu=1500, scatter_gather=True, driver="ena"),
            "all",
            Verdict.SG_ON,
            "Scatter-Gather is enabled on eth0. This mitigates the bug.",
        ),
        (
            xen(mtu=1500, problem="ethtool -k failed (exit 1): boom"),
            "xen",
            Verdict.ERROR,
            "ethtool -k failed (exit 1): boom",
        ),
        (xen(mtu=1500), "xen", Verdict.ERROR, "cannot determine scatter-gather and MTU of eth0"),
        (xen(scatter_gather=False), "all", Verdict.ERROR, "cannot determine scatter-gather and MTU of eth0"),
        (InterfaceFacts("bonding_masters", problem="not a dir"), "xen", Verdict.ERROR, "not a dir"),
    ],
)
def test_verdicts(iface, scope, verdict, message):
    judgement = judge(iface, scope)
    assert (judgement.verdict, judgement.message) == (verdict, message)


def test_susceptible_carries_both_fixes_for_that_interface():
    judgement = judge(xen("eth1", mtu=1500, scatter_gather=False))
    assert judgement.fixes == ("sudo ethtool -K eth1 sg on", f"sudo ip link set dev eth1 mtu {JUMBO_MTU}")


def test_mitigated_verdicts_carry_no_fixes():
    assert judge(xen(mtu=1500, scatter_gather=True)).fixes == ()


@pytest.mark.parametrize("name", ["$(reboot)", "`id`", "a;b", "a|b", "a'b", "<b>x<b>"])
def test_fix_commands_quote_hostile_names(name):
    import shlex

    for command in fix_commands(name):
        assert shlex.split(command)[3 if "ethtool" in command else 5] == name


def test_each_interface_is_judged_by_its_own_driver():
    # ec2rl judged every NIC by the first NIC's driver.
    first, second = (
        xen("eth0", driver="ena", mtu=1500, scatter_gather=False),
        xen("eth1", mtu=1500, scatter_gather=False),
    )
    assert [judge(i).verdict for i in (first, second)] == [Verdict.NOT_APPLICABLE, Verdict.SUSCEPTIBLE]


def test_unknown_scope_is_refused():
    with pytest.raises(ValueError):
        judge(xen(mtu=1500, scatter_gather=True), "some")


def test_only_sg_on_and_jumbo_mtu_are_mitigated():
    assert {v for v in Verdict if v.mitigated} == {Verdict.SG_ON, Verdict.JUMBO_MTU}


def test_the_rule_judges_states_and_knows_no_workaround():
    # "remediated" is the workaround's verdict (compliance.workaround), not a state's.
    assert [v.value for v in Verdict] == [
        "sg-on", "jumbo-mtu", "susceptible", "not-applicable", "none-applicable", "not-persistent", "error"
    ]  # fmt: skip


def test_require_applicable_fails_a_host_with_nothing_in_scope_naming_its_drivers():
    from compliance.cases import build_cases
    from compliance.gather import HostResult
    from compliance.probe import HostFacts

    nitro = HostFacts("6.1", None, "Amazon EC2", "i-0abc", "/usr/sbin/ethtool", (
        InterfaceFacts("ens5", driver="ena", mtu=9001, scatter_gather=True),
        InterfaceFacts("docker0", virtual=True, mtu=1500, scatter_gather=True),
    ))  # fmt: skip
    xen = HostFacts("4.14", "xen", "Xen", None, "/sbin/ethtool", (
        InterfaceFacts("eth0", driver="xen_netfront", mtu=1500, scatter_gather=True),
    ))  # fmt: skip
    results = [HostResult("builder", facts=nitro), HostResult("guest", facts=xen)]
    assert [c.id for c in build_cases(results)] == ["builder|docker0", "builder|ens5", "guest|eth0"]
    cases = build_cases(results, require_applicable="xen")
    assert [c.id for c in cases] == ["builder", "builder|docker0", "builder|ens5", "guest|eth0"]
    judgement = cases[0].judge("xen")
    assert judgement.verdict is Verdict.NONE_APPLICABLE
    assert judgement.message == "no interface in scope 'xen': drivers seen: ena, virtual"
    assert cases[0].record(judgement).verdict == "none-applicable"


# ---- --xennet-require-persistent: mitigated now and at boot ---------------------------------

SG_ON_NOW = Judgement(Verdict.SG_ON, "Scatter-Gather is enabled on eth0. This mitigates the bug.")
JUMBO_NOW = Judgement(Verdict.JUMBO_MTU, "MTU is set to Jumbo-Frame size on eth0. This mitigates the bug.")


def boot_row(boot_sg, driver="xen_netfront", source=None, problem=None, fixed=False):
    return Row(
        "h", "eth0", driver=driver, scatter_gather="on", sg_fixed=fixed,
        boot_sg=boot_sg, boot_sg_source=source, boot_sg_problem=problem,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("now", "row", "verdict", "message"),
    [
        (SG_ON_NOW, boot_row("on", source="/etc/udev/rules.d/70-x.rules:2"), Verdict.SG_ON, None),
        # xen-netfront turns SG on by itself (xennet_create_dev): its default passes.
        (SG_ON_NOW, boot_row("default"), Verdict.SG_ON, None),
        (
            SG_ON_NOW,
            boot_row("off", source="/etc/network/interfaces:7"),
            Verdict.NOT_PERSISTENT,
            "Scatter-Gather is enabled on eth0 now, but /etc/network/interfaces:7 turns it off at boot.",
        ),
        (
            JUMBO_NOW,
            boot_row("off", source="/etc/network/interfaces:7"),
            Verdict.NOT_PERSISTENT,
            "MTU is set to Jumbo-Frame size on eth0 now, but /etc/network/interfaces:7 turns it off at boot.",
        ),
        # Any other driver's default is not known to the suite: it fails, naming the driver.
        (
            SG_ON_NOW,
            boot_row("default", driver="ena"),
            Verdict.NOT_PERSISTENT,
            "Scatter-Gather is enabled on eth0 now, but no boot configuration turns scatter-gather on, and the "
            "default of driver ena is not known to the suite.",
        ),
        (
            SG_ON_NOW,
            boot_row(
                None, problem="cannot read /etc/NetworkManager/system-connections/a (audit as root, or with --sudo)"
            ),
            Verdict.ERROR,
            "cannot tell whether scatter-gather is on at boot on eth0: cannot read "
            "/etc/NetworkManager/system-connections/a (audit as root, or with --sudo)",
        ),
        # SG [fixed] on: no configuration can turn it off.
        (SG_ON_NOW, boot_row("off", driver="veth", source="/x:1", fixed=True), Verdict.SG_ON, None),
    ],
)
def test_require_persistent_judges_the_next_boot(now, row, verdict, message):
    found = persistent(now, row)
    assert found.verdict is verdict
    assert found.message == (message or now.message)


@pytest.mark.parametrize("verdict", [Verdict.SUSCEPTIBLE, Verdict.ERROR, Verdict.NOT_APPLICABLE])
def test_require_persistent_leaves_other_verdicts_alone(verdict):
    judgement = Judgement(verdict, "as it was")
    assert persistent(judgement, boot_row("off", source="/x:1")) is judgement
