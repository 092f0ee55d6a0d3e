"""The workaround, run as a user runs it, against lab hosts it really changes.

Each test gets a fresh lab of its own (index 2): these tests change hosts, the session
lab is read-only. States are checked on the host itself (`ethtool -k`, files in its
private /etc), never through the suite.
"""

from __future__ import annotations

import html
import json
import subprocess
from pathlib import Path

from tests.conftest import fresh_lab_fixture, lab_args, lab_plan, run_audit
from tests.lab import ETHTOOL_REFUSING_SG, HostPlan, IfacePlan, UserPlan, read_sg

LAB_INDEX = 2
UDEV_RULE = "/etc/udev/rules.d/70-xennet-compliance-sg.rules"
INTERFACES = "auto lo\niface lo inet loopback\n\nauto eth1\niface eth1 inet manual\n    mtu 1500\n"
IFCFG = 'DEVICE=eth1\nONBOOT=yes\nETHTOOL_OPTS="-K ${DEVICE} tso off"\n'


fresh_lab = fresh_lab_fixture(LAB_INDEX)
plan = lab_plan


def sg(lab, host, iface):
    return read_sg(lab.exec(host, ["ethtool", "-k", iface]).stdout)


def mtu(lab, host, iface):
    return int(lab.exec(host, ["cat", f"/sys/class/net/{iface}/mtu"]).stdout)


def rows(audit, lab):
    names = {h.address: n for n, h in lab.hosts.items()}
    return {(names.get(r["host"], r["host"]), r["interface"]): r for r in audit.summary["results"]}


def html_rows(audit) -> str:
    """The report's rendered rows, unescaped: what a reader sees."""
    return html.unescape(audit.html_rendered)


def cat(lab, host, path):
    return lab.exec(host, ["cat", path]).stdout


MIXED = HostPlan(
    "mixed",
    (
        IfacePlan("eth0"),
        IfacePlan("eth1", sg=False),
        IfacePlan("eth2", mtu=9001, sg=False),
        IfacePlan("eth3", mtu=9000, sg=True),
    ),
)


@plan(MIXED)
def test_apply_turns_sg_on_only_where_susceptible_and_a_second_apply_does_nothing(fresh_lab, tmp_path):
    lab = fresh_lab
    audit = run_audit(tmp_path / "first", *lab_args(lab), "--xennet-workaround=apply")
    assert audit.returncode == 0, audit.stdout
    # The host itself says: fixed where susceptible, untouched where mitigated.
    assert (sg(lab, "mixed", "eth1"), mtu(lab, "mixed", "eth1")) == (True, 1500)
    assert (sg(lab, "mixed", "eth2"), mtu(lab, "mixed", "eth2")) == (False, 9001)
    assert (sg(lab, "mixed", "eth0"), sg(lab, "mixed", "eth3")) == (True, True)
    found = rows(audit, lab)
    fixed = found[("mixed", "eth1")]
    assert fixed["verdict"] == "remediated" and fixed["scatter_gather"] == "on"
    assert fixed["workaround"] == {
        "mode": "apply",
        "result": "applied",
        "commands": ["/usr/sbin/ethtool -K eth1 sg on"],
        "before": {"scatter_gather": "off", "sg_fixed": False, "mtu": 1500},
        "after": {"scatter_gather": "on", "sg_fixed": False, "mtu": 1500},
        "persisted": [],
        "cause": None,
    }
    assert [k for k, r in found.items() if "workaround" in r] == [("mixed", "eth1")]
    assert audit.summary["counts"]["remediated"] == 1 and audit.summary["workaround"] == "apply"
    case = next(c for c in audit.junit.iter("testcase") if c.get("classname").endswith(".eth1"))
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert (props["verdict"], props["workaround_result"]) == ("remediated", "applied")
    assert json.loads(props["workaround_after"])["scatter_gather"] == "on"
    assert "sg off, mtu 1500 \u2192 sg on, mtu 1500 (applied)" in html_rows(audit)
    assert "-- workaround ran: /usr/sbin/ethtool -K eth1 sg on" in audit.stdout

    before = lab.sshd_events("mixed")
    again = run_audit(tmp_path / "second", *lab_args(lab), "--xennet-workaround=apply")
    assert again.returncode == 0, again.stdout
    assert [r for r in again.summary["results"] if "workaround" in r] == []
    # One login, one command: the gathering probe. Nothing was run to "fix" anything.
    assert tuple(a - b for a, b in zip(lab.sshd_events("mixed"), before)) == (1, 1)
    assert (sg(lab, "mixed", "eth1"), sg(lab, "mixed", "eth2")) == (True, False)


@plan(MIXED)
def test_dry_run_records_exact_commands_and_changes_nothing(fresh_lab, tmp_path):
    lab = fresh_lab
    before = lab.sshd_events("mixed")
    audit = run_audit(tmp_path, *lab_args(lab), "--xennet-workaround=dry-run", "--xennet-allow-mtu")
    assert audit.returncode == 1, audit.stdout
    assert (sg(lab, "mixed", "eth1"), mtu(lab, "mixed", "eth1")) == (False, 1500)
    # Dry-run does not even connect again: the probe was the only command.
    assert tuple(a - b for a, b in zip(lab.sshd_events("mixed"), before)) == (1, 1)
    row = rows(audit, lab)[("mixed", "eth1")]
    assert row["verdict"] == "susceptible"
    assert row["workaround"]["result"] == "planned" and row["workaround"]["after"] is None
    assert row["workaround"]["commands"] == [
        "/usr/sbin/ethtool -K eth1 sg on",
        "ip link set dev eth1 mtu 9001  # only if scatter-gather stays off and max MTU >= 9001",
    ]
    # The Diagnostic Results block shows them; pytest's FAILURES section, which would repeat them, is off.
    assert "-- workaround would run: /usr/sbin/ethtool -K eth1 sg on" in audit.stdout
    assert "= FAILURES =" not in audit.stdout and "dry-run, would run" not in audit.stdout


@plan(
    HostPlan(
        "users",
        (IfacePlan("eth0", sg=False),),
        users=(UserPlan("auditor"), UserPlan("asker", sudo="password"), UserPlan("ops", sudo="nopasswd")),
    )
)
def test_privilege_failures_are_one_clear_line_and_change_nothing(fresh_lab, tmp_path):
    lab = fresh_lab
    common = [a for a in lab_args(lab) if not a.startswith("--hosts=")]

    def audit_as(user, *extra):
        return run_audit(
            tmp_path / f"{user}{len(extra)}",
            f"--hosts={lab.spec('users', user=user)}",
            *common,
            "--xennet-workaround=apply",
            *extra,
        )

    address = lab.hosts["users"].address
    plain = audit_as("auditor")
    assert plain.returncode == 1
    row = rows(plain, lab)[("users", "eth0")]
    assert row["workaround"]["result"] == "failed" and row["verdict"] == "susceptible"
    assert row["workaround"]["cause"] == (
        f"not root on {address} (logged in as uid {row['workaround']['cause'].split('uid ')[1].split(')')[0]}): "
        "pass --sudo, or log in as root"
    )
    assert row["workaround"]["commands"] == []
    assert f"workaround failed: not root on {address}" in plain.stdout
    for user in ("auditor", "asker"):  # no sudo rights; sudo wants a password
        refused = audit_as(user, "--sudo")
        assert refused.returncode == 1
        (row,) = refused.summary["results"]
        assert (
            row["verdict"] == "error" and row["message"] == "sudo requires a password" and row["error_kind"] == "sudo"
        )
    assert sg(lab, "users", "eth0") is False
    via_sudo = audit_as("ops", "--sudo")
    assert via_sudo.returncode == 0, via_sudo.stdout
    assert rows(via_sudo, lab)[("users", "eth0")]["workaround"]["commands"] == ["sudo /usr/sbin/ethtool -K eth0 sg on"]
    assert sg(lab, "users", "eth0") is True


@plan(
    HostPlan("deb", (IfacePlan("eth0"), IfacePlan("eth1", sg=False)), etc_files=(("network/interfaces", INTERFACES),)),
    HostPlan(
        "rh",
        (IfacePlan("eth0"), IfacePlan("eth1", sg=False)),
        etc_files=(("sysconfig/network-scripts/ifcfg-eth1", IFCFG),),
    ),
    HostPlan("bare", (IfacePlan("eth0", sg=False),), private_etc=True),
)
def test_persist_writes_the_udev_rule_and_the_hosts_own_configuration_once(fresh_lab, tmp_path):
    lab = fresh_lab
    args = [*lab_args(lab), "--xennet-workaround=apply", "--xennet-persist"]
    audit = run_audit(tmp_path / "first", *args)
    assert audit.returncode == 0, audit.stdout
    rule = 'ACTION=="add", SUBSYSTEM=="net", DRIVERS=="vif", RUN+="/usr/sbin/ethtool -K $name sg on"'
    for host in ("deb", "rh", "bare"):
        assert cat(lab, host, UDEV_RULE).splitlines()[1:] == [rule]
    assert cat(lab, "deb", "/etc/network/interfaces") == INTERFACES.replace(
        "inet manual\n", "inet manual\n    offload-sg on\n"
    )
    assert cat(lab, "rh", "/etc/sysconfig/network-scripts/ifcfg-eth1") == IFCFG.replace(
        'tso off"', 'tso off; -K ${DEVICE} sg on"'
    )
    found = rows(audit, lab)
    deb = found[("deb", "eth1")]["workaround"]["persisted"]
    assert [(p["via"], p["file"], p["action"]) for p in deb] == [
        ("udev", UDEV_RULE, "created"),
        ("ifupdown", "/etc/network/interfaces", "changed"),
    ]
    assert cat(lab, "deb", deb[1]["backup"]) == INTERFACES  # the original, before the change
    rh = found[("rh", "eth1")]["workaround"]["persisted"]
    assert cat(lab, "rh", rh[1]["backup"]) == IFCFG
    assert [p["via"] for p in found[("bare", "eth0")]["workaround"]["persisted"]] == ["udev"]
    assert "persisted: /etc/udev/rules.d/70-xennet-compliance-sg.rules, /etc/network/interfaces" in html_rows(audit)
    assert not Path(UDEV_RULE).exists()  # this machine's /etc is untouched

    # SG goes off again (a reboot without persistence would do it): the lines are there already.
    for host in ("deb", "rh"):
        lab.set_sg(host, "eth1", False)
    backups = lab.exec("deb", ["ls", "/etc/xennet-compliance/backups"]).stdout
    again = run_audit(tmp_path / "second", *args)
    assert again.returncode == 0, again.stdout
    assert cat(lab, "deb", "/etc/network/interfaces").count("offload-sg on") == 1
    assert cat(lab, "rh", "/etc/sysconfig/network-scripts/ifcfg-eth1").count("sg on") == 1
    assert cat(lab, "deb", UDEV_RULE).count(rule) == 1
    assert lab.exec("deb", ["ls", "/etc/xennet-compliance/backups"]).stdout == backups
    persisted = rows(again, lab)[("deb", "eth1")]["workaround"]["persisted"]
    assert {p["action"] for p in persisted} == {"unchanged"}


# A connection name nmcli must escape in its terse output (-g writes ':' as '\\:').
NM_CONNECTION = "xennet lab: uplink"
NM_KEYFILE = "NetworkManager/system-connections/uplink.nmconnection"
NM_HOST = HostPlan(
    "nm",
    (IfacePlan("eth0"), IfacePlan("eth1", sg=False)),
    networkmanager=True,
    etc_files=(
        (
            NM_KEYFILE,
            (
                f"[connection]\nid={NM_CONNECTION}\ntype=ethernet\ninterface-name=eth1\n\n"
                "[ethtool]\nfeature-sg=false\n\n[ipv4]\nmethod=disabled\n\n[ipv6]\nmethod=disabled\n"
            ),
        ),
    ),
)


@plan(NM_HOST)
def test_persist_has_a_real_networkmanager_keep_sg_on(fresh_lab, tmp_path):
    lab = fresh_lab

    def nmcli(*args):
        return lab.exec("nm", ["nmcli", *args]).stdout.strip()

    def nm_sg():
        return nmcli("-g", "ethtool.feature-sg", "connection", "show", "id", NM_CONNECTION)

    # The host's own NetworkManager activated the connection, and turned SG off itself.
    assert nmcli("-g", "GENERAL.CONNECTION", "device", "show", "eth1") == NM_CONNECTION.replace(":", "\\:")
    assert (nm_sg(), sg(lab, "nm", "eth1")) == ("off", False)
    args = [*lab_args(lab), "--xennet-workaround=apply", "--xennet-persist"]
    audit = run_audit(tmp_path / "first", *args)
    assert audit.returncode == 0, audit.stdout
    assert sg(lab, "nm", "eth1") is True
    assert nm_sg() == "on"
    assert "feature-sg=true" in cat(lab, "nm", f"/etc/{NM_KEYFILE}").split("[ethtool]")[1]
    done = rows(audit, lab)[("nm", "eth1")]["workaround"]
    assert done["persisted"] == [
        {
            "file": UDEV_RULE,
            "action": "created",
            "backup": None,
            "via": "udev",
            "note": "the udev rule matches xen-netfront (vif) interfaces only",
        },
        {"via": "networkmanager", "connection": NM_CONNECTION, "action": "changed"},
    ]
    assert done["commands"] == [
        "/usr/sbin/ethtool -K eth1 sg on",
        f"create {UDEV_RULE}",
        "nmcli connection modify id 'xennet lab: uplink' ethtool.feature-sg on",
    ]
    assert "workaround" not in rows(audit, lab)[("nm", "eth0")]

    # SG off again, as after a reboot without persistence: NM's connection says on already.
    lab.set_sg("nm", "eth1", False)
    again = run_audit(tmp_path / "second", *args)
    assert again.returncode == 0, again.stdout
    persisted = rows(again, lab)[("nm", "eth1")]["workaround"]["persisted"]
    assert [(p["via"], p["action"]) for p in persisted] == [("udev", "unchanged"), ("networkmanager", "unchanged")]
    assert nm_sg() == "on"
    # What a boot does: NM activates the connection, and now turns SG on itself.
    lab.set_sg("nm", "eth1", False)
    nmcli("connection", "up", "id", NM_CONNECTION)
    assert sg(lab, "nm", "eth1") is True


@plan(
    HostPlan("one", private_etc=True),
    HostPlan("two", private_etc=True),
    HostPlan("shared"),
)
def test_private_etc_is_seen_by_its_host_only(fresh_lab, tmp_path):
    lab = fresh_lab
    name = f"99-xennet-lab-{tmp_path.name}.rules"
    target = f"/etc/udev/rules.d/{name}"
    ssh = ["ssh", "-F", str(lab.ssh_config), lab.hosts["one"].address]
    subprocess.run([*ssh, f"mkdir -p /etc/udev/rules.d && echo marker > {target}"], check=True, timeout=30)
    assert cat(lab, "one", target) == "marker\n"
    assert (lab.private_etc("one") / "udev" / "rules.d" / name).read_text() == "marker\n"
    assert not Path(target).exists()
    for other in ("two", "shared"):
        assert lab.exec(other, ["test", "-e", target], check=False).returncode == 1


@plan(
    HostPlan("a", (IfacePlan("eth0", sg=False),)),
    HostPlan("b", (IfacePlan("eth0", sg=False), IfacePlan("eth1", sg=False))),
)
def test_xdist_workers_act_with_their_own_connections(fresh_lab, tmp_path):
    lab = fresh_lab
    before = {n: lab.sshd_events(n) for n in lab.hosts}
    audit = run_audit(tmp_path, *lab_args(lab), "--xennet-workaround=apply", "-n", "2")
    assert audit.returncode == 0, audit.stdout
    assert {k: r["verdict"] for k, r in rows(audit, lab).items()} == {
        ("a", "eth0"): "remediated",
        ("b", "eth0"): "remediated",
        ("b", "eth1"): "remediated",
    }
    assert [sg(lab, h, i) for h, i in (("a", "eth0"), ("b", "eth0"), ("b", "eth1"))] == [True, True, True]
    for name in lab.hosts:  # gathering's login, plus at most one per worker that acted there
        logins = lab.sshd_events(name)[0] - before[name][0]
        assert 2 <= logins <= 3, (name, logins)


def test_options_that_act_are_never_implied(tmp_path):
    persist = run_audit(tmp_path / "p", "--xennet-persist")
    assert persist.returncode == 4 and "--xennet-persist needs --xennet-workaround=apply" in persist.stderr
    dry = run_audit(tmp_path / "d", "--xennet-workaround=dry-run", "--xennet-persist")
    assert dry.returncode == 4
    mtu_only = run_audit(tmp_path / "m", "--xennet-allow-mtu")
    assert mtu_only.returncode == 4 and "--xennet-allow-mtu needs" in mtu_only.stderr
    helptext = run_audit(tmp_path / "h", "--help").stdout
    assert "--xennet-workaround=MODE" in helptext and "off (default): change nothing; dry-run:" in helptext


# xen-netfront whose backend lacks feature-sg keeps SG off whatever is asked
# (xennet_fix_features); veth cannot, so this host's ethtool answers as such a
# driver does (the text of tests/data/ethtool/xen-sg-refused.txt). MTU is real.
REFUSES_SG = HostPlan(
    "nosg",
    (IfacePlan("eth0", mtu=9001), IfacePlan("eth1")),
    fake_ethtool=ETHTOOL_REFUSING_SG,
)


@plan(REFUSES_SG)
def test_when_the_driver_refuses_sg_only_an_allowed_mtu_change_remediates(fresh_lab, tmp_path):
    lab = fresh_lab
    refused = run_audit(tmp_path / "refused", *lab_args(lab), "--xennet-workaround=apply")
    assert refused.returncode == 1, refused.stdout
    row = rows(refused, lab)[("nosg", "eth1")]
    assert (row["verdict"], row["workaround"]["result"]) == ("susceptible", "failed")
    assert row["workaround"]["cause"] == (
        "scatter-gather is still off on eth1 (tx-scatter-gather: off [requested on]); "
        "no MTU change: --xennet-allow-mtu was not given"
    )
    assert mtu(lab, "nosg", "eth1") == 1500  # MTU is opt-in: untouched

    allowed = run_audit(tmp_path / "allowed", *lab_args(lab), "--xennet-workaround=apply", "--xennet-allow-mtu")
    assert allowed.returncode == 0, allowed.stdout
    assert mtu(lab, "nosg", "eth1") == 9001  # the kernel's own MTU, read directly
    row = rows(allowed, lab)[("nosg", "eth1")]
    assert row["verdict"] == "remediated" and row["mtu"] == 9001
    assert row["workaround"]["commands"] == ["/usr/sbin/ethtool -K eth1 sg on", "ip link set dev eth1 mtu 9001"]
    assert row["workaround"]["after"] == {"scatter_gather": "off", "sg_fixed": False, "mtu": 9001}
    assert rows(allowed, lab)[("nosg", "eth0")]["verdict"] == "jumbo-mtu"  # mitigated: untouched


# Answers the probe and `id -u`, then its session's sshd is killed under the workaround's next
# command: the connection ends mid-workaround.
DROPS = HostPlan(
    "drops",
    (IfacePlan("eth0"), IfacePlan("eth1", sg=False)),
    force_command=(
        'case "$SSH_ORIGINAL_COMMAND" in sh) exec sh ;; *"id -u"*) exec sh -c "$SSH_ORIGINAL_COMMAND" ;; '
        "*) kill -9 $PPID ;; esac"
    ),
)


@plan(DROPS)
def test_a_connection_lost_during_the_workaround_is_worded_as_a_rows_cause(fresh_lab, tmp_path):
    # It read "LostConnection: connection lost" (the exception's type and text), unlike every row's cause.
    lab = fresh_lab
    audit = run_audit(tmp_path, *lab_args(lab), "--xennet-workaround=apply")
    assert audit.returncode == 1, audit.stdout
    row = rows(audit, lab)[("drops", "eth1")]
    assert (row["verdict"], row["workaround"]["result"]) == ("susceptible", "failed"), row
    assert row["workaround"]["cause"] == "connection lost applying the workaround", row["workaround"]
    assert sg(lab, "drops", "eth1") is False  # nothing changed
