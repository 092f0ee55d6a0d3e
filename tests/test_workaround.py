"""The workaround's pure parts: persist's file edits, the MTU guard, and how reports show it.

The MTU branch cannot be reached in the lab: on veth (the lab's interfaces) scatter-gather
can always be turned on, and this machine's kernel offers no device whose SG is fixed off.
Its guard is tested here, on `ip -d link` text and on interface facts.
"""

from __future__ import annotations

import dataclasses
import html

import pytest

from compliance import report
from compliance.cases import Case
from compliance.persist import PersistError, ifcfg_with_sg, interfaces_with_sg, udev_rule, with_line
from compliance.probe import InterfaceFacts
from compliance.row import Row
from compliance.rule import Judgement, Verdict
from compliance.workaround import (
    REMEDIATED,
    Outcome,
    apply_to_record,
    mtu_step,
    parse_max_mtu,
    remediated_message,
)

IP_D_LINK = (
    "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc mq state UP mode DEFAULT group default qlen 1000\n"
    "    link/ether 0a:1b:2c:3d:4e:5f brd ff:ff:ff:ff:ff:ff promiscuity 0 minmtu 68 maxmtu {max} addrgenmode eui64\n"
)
SG_OFF = InterfaceFacts("eth0", driver="vif", mtu=1500, scatter_gather=False)
OTHER_SG_OFF = InterfaceFacts("eth0", driver="ixgbevf", mtu=1500, scatter_gather=False)  # --xennet-scope=all


def test_mtu_step_runs_only_when_sg_stays_off_it_was_allowed_and_the_device_takes_9001():
    assert mtu_step(True, OTHER_SG_OFF, parse_max_mtu(IP_D_LINK.format(max=65535))) is None
    assert mtu_step(True, OTHER_SG_OFF, 9001) is None
    assert mtu_step(False, OTHER_SG_OFF, 65535) == "--xennet-allow-mtu was not given"
    assert mtu_step(True, OTHER_SG_OFF, parse_max_mtu(IP_D_LINK.format(max=1500))) == "the device's max MTU is 1500"
    sg_on = InterfaceFacts("eth0", driver="vif", mtu=1500, scatter_gather=True)
    assert mtu_step(True, sg_on, 65535) == "scatter-gather is on"


def test_mtu_step_never_runs_on_xen_netfront_which_refuses_it_while_sg_is_off():
    # drivers/net/xen-netfront.c, xennet_change_mtu: MTU > 1500 needs NETIF_F_SG.
    assert mtu_step(True, SG_OFF, 65535) == "xen-netfront refuses an MTU above 1500 while scatter-gather is off"


def test_an_unknown_max_mtu_fails_closed():
    old_iproute2 = "2: eth0: <BROADCAST,UP> mtu 1500 qdisc mq state UP\n    link/ether 0a:1b:2c:3d:4e:5f\n"
    assert parse_max_mtu(old_iproute2) is None
    assert "cannot be read" in mtu_step(True, OTHER_SG_OFF, None)


def test_ifcfg_gets_ethtool_opts_once():
    text = "DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes"
    new = ifcfg_with_sg(text)
    assert new == 'DEVICE=eth0\nBOOTPROTO=dhcp\nONBOOT=yes\nETHTOOL_OPTS="-K ${DEVICE} sg on"\n'
    assert ifcfg_with_sg(new) is None


def test_ifcfg_keeps_existing_ethtool_commands():
    assert ifcfg_with_sg('DEVICE=eth0\nETHTOOL_OPTS="-K ${DEVICE} tso off"\n') == (
        'DEVICE=eth0\nETHTOOL_OPTS="-K ${DEVICE} tso off; -K ${DEVICE} sg on"\n'
    )
    # the old form (no leading -) means `ethtool -s DEVICE ...`
    assert ifcfg_with_sg("ETHTOOL_OPTS='autoneg off speed 100'\n") == (
        'ETHTOOL_OPTS="-s ${DEVICE} autoneg off speed 100; -K ${DEVICE} sg on"\n'
    )
    assert ifcfg_with_sg('ETHTOOL_OPTS="-K eth0 tso on sg off"\n') == 'ETHTOOL_OPTS="-K eth0 tso on sg on"\n'
    assert ifcfg_with_sg('ETHTOOL_OPTS="-K ${DEVICE} sg on"\n') is None


def test_ifcfg_refuses_values_it_cannot_rewrite_safely():
    with pytest.raises(PersistError):
        ifcfg_with_sg('ETHTOOL_OPTS="-K `reboot` sg off"\n')
    with pytest.raises(PersistError):
        ifcfg_with_sg('ETHTOOL_OPTS="-K eth0\n')


def test_ifupdown_stanza_gets_offload_sg_once():
    text = "auto lo\niface lo inet loopback\n\nauto eth1\niface eth1 inet static\n\taddress 10.0.0.5/24\n"
    new = interfaces_with_sg(text, "eth1")
    assert new == (
        "auto lo\niface lo inet loopback\n\nauto eth1\niface eth1 inet static\n\toffload-sg on\n\taddress 10.0.0.5/24\n"
    )
    assert interfaces_with_sg(new, "eth1") is None
    assert interfaces_with_sg(text, "eth2") is None  # not configured by ifupdown
    assert interfaces_with_sg("iface eth10 inet dhcp\n", "eth1") is None
    flipped = interfaces_with_sg("iface eth1 inet dhcp\n  offload-sg off\n", "eth1")
    assert flipped == "iface eth1 inet dhcp\n  offload-sg on\n"


def test_ifupdown_only_edits_the_interfaces_own_stanza():
    text = "iface eth0 inet dhcp\n    mtu 1500\niface eth1 inet dhcp\n    offload-sg on\n"
    assert interfaces_with_sg(text, "eth0") == (
        "iface eth0 inet dhcp\n    offload-sg on\n    mtu 1500\niface eth1 inet dhcp\n    offload-sg on\n"
    )


def test_udev_rule_line_is_never_written_twice_and_paths_are_checked():
    rule = udev_rule("/usr/sbin/ethtool")
    assert rule == 'ACTION=="add", SUBSYSTEM=="net", DRIVERS=="vif", RUN+="/usr/sbin/ethtool -K $name sg on"'
    first = with_line(None, rule, "# header")
    assert first == f"# header\n{rule}\n"
    assert with_line(first, rule, "# header") is None
    assert with_line("# edited by hand", rule, "# header") == f"# edited by hand\n{rule}\n"
    with pytest.raises(PersistError):
        udev_rule('/usr/sbin/ethtool"; RUN+="/bin/sh')


def _record(**workaround):
    done = {
        "mode": "apply",
        "result": "applied",
        "commands": ["/usr/sbin/ethtool -K '<b>x<b>' sg on"],
        "before": {"scatter_gather": "off", "sg_fixed": False, "mtu": 1500},
        "after": {"scatter_gather": "on", "sg_fixed": False, "mtu": 1500},
        "persisted": [],
        "cause": None,
    } | workaround
    return Row.from_dict(
        {
            "host": "h",
            "interface": "<b>x<b>",
            "driver": None,
            "virtual": True,
            "mtu": 1500,
            "scatter_gather": "on",
            "sg_fixed": False,
            "verdict": "remediated",
            "error_kind": None,
            "message": "m",
            "fixes": [],
            "kernel": "k",
            "workaround": done,
        }
    )


def test_reports_show_before_and_after_escaped():
    cells = "".join(report.html_row_cells(_record(), workaround=True))
    assert '<td class="col-workaround">sg off, mtu 1500 \u2192 sg on, mtu 1500 (applied)</td>' in cells
    failed = "".join(report.html_row_cells(_record(result="failed", after=None, cause="<i>no</i>"), workaround=True))
    assert html.escape("(failed): <i>no</i>") in failed and "<i>" not in failed
    assert 'data-column-type="workaround"' in "".join(report.html_header_cells(workaround=True))
    assert "workaround" not in "".join(report.html_header_cells())


def test_junit_properties_carry_the_workaround():
    props = dict(report.junit_properties(_record()))
    assert props["verdict"] == "remediated" and props["workaround_result"] == "applied"
    assert props["workaround_before"] == '{"scatter_gather": "off", "sg_fixed": false, "mtu": 1500}'
    assert props["workaround_commands"] == "[\"/usr/sbin/ethtool -K '<b>x<b>' sg on\"]"
    untouched = dataclasses.replace(_record(), workaround=None)
    assert not [k for k, _ in report.junit_properties(untouched) if k.startswith("workaround")]


def test_counts_name_remediated_only_when_the_workaround_is_on():
    rows = [_record()]
    assert "remediated" not in report.summary([], scope="all", target="remote", complete=True)["counts"]
    counts = report.summary(rows, scope="all", target="remote", complete=True, workaround="apply")["counts"]
    assert counts["remediated"] == 1 and counts["susceptible"] == 0
    assert report.terminal_lines(rows, "apply")[-1].endswith("remediated: 1")
    assert report.terminal_lines(rows, "apply", verbose=True)[1].startswith("[SUCCESS] h|<b>x<b>: m")
    assert (
        "remediated" in report.summary([], scope="all", target="remote", complete=True, workaround="dry-run")["counts"]
    )


OFF = {"scatter_gather": "off", "sg_fixed": False, "mtu": 1500}
ON = {"scatter_gather": "on", "sg_fixed": False, "mtu": 1500}


def _susceptible_row():
    case = Case("h", "k", SG_OFF)
    judgement = case.judge("xen")
    return case.record(judgement), judgement


def test_a_verified_fix_makes_the_row_remediated_with_the_state_read_after():
    row, _ = _susceptible_row()
    fixed = Judgement(Verdict.SG_ON, remediated_message("eth0", Verdict.SG_ON))
    done = apply_to_record(
        row, Outcome("apply", "applied", ["ethtool -K eth0 sg on"], OFF, ON, judgement=fixed, remediated=True)
    )
    assert (done.verdict, done.scatter_gather, done.fixes) == (REMEDIATED, "on", ())
    assert done.message == "Scatter-Gather is now enabled on eth0 by the workaround. This mitigates the bug."
    assert done.workaround["result"] == "applied" and "remediated" not in done.workaround
    assert row.verdict == "susceptible"  # the audit's row is not changed in place


def test_a_fix_whose_persisting_failed_is_remediated_but_failed():
    row, _ = _susceptible_row()
    fixed = Judgement(Verdict.SG_ON, remediated_message("eth0", Verdict.SG_ON))
    outcome = Outcome("apply", "failed", [], OFF, ON, cause="cannot write /etc/x", judgement=fixed, remediated=True)
    done = apply_to_record(row, outcome)
    assert (done.verdict, done.workaround["result"], outcome.failed) == (REMEDIATED, "failed", True)


@pytest.mark.parametrize("result", ["planned", "failed"])
def test_an_unverified_workaround_leaves_the_rules_verdict(result):
    row, judgement = _susceptible_row()
    done = apply_to_record(
        row, Outcome("apply", result, before=OFF, after=OFF if result == "failed" else None, judgement=judgement)
    )
    assert (done.verdict, done.fixes, done.scatter_gather) == ("susceptible", judgement.fixes, "off")
    assert (
        done.to_dict()["workaround"] == Outcome("apply", result, before=OFF, after=done.workaround["after"]).to_dict()
    )
