"""The default scope (``--xennet-scope=xen``, what users run) end to end, against lab hosts
that look like Xen guests (``IfacePlan(xen=True)``, see tests/lab.py).

A Xen interface is a veth that the host's own /sys/class/net shows as xen-netfront
(device vif-N, driver vif, module xen_netfront, its live mtu file), and whose ethtool and
ip in the host's sessions couple SG and MTU as the driver does (xennet_set_features,
xennet_change_mtu). What a real Xen guest shows comes from
/work/shared/reference/xen-netfront-facts.md: nothing here was captured from one.

Each test gets a fresh lab of its own (index 3); states are checked on the host itself.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from compliance.probe import PROBE_COMMAND, PROBE_SCRIPT, parse_probe
from tests.conftest import fresh_lab_fixture, lab_args, lab_plan, run_audit
from tests.lab import ETHTOOL_REFUSING_SG, HostPlan, IfacePlan, Lab, LabError, read_sg

LAB_INDEX = 4
UDEV_RULE = "/etc/udev/rules.d/70-xennet-compliance-sg.rules"
INTERFACES = (
    "auto lo\niface lo inet loopback\n\n"
    "auto eth1\niface eth1 inet manual\n    mtu 1500\n\n"
    "auto eth3\niface eth3 inet manual\n    mtu 1500\n"
)
# A Xen guest: three xen-netfront NICs (the management one among them, as on EC2) in
# each state the driver allows, and a veth neighbour with SG off, which the default
# scope must leave alone although --xennet-scope=all would call it susceptible.
GUEST = HostPlan(
    "guest",
    (
        IfacePlan("eth0", xen=True),
        IfacePlan("eth1", sg=False, xen=True),
        IfacePlan("eth2", mtu=9001, xen=True),
        IfacePlan("eth3", sg=False),
    ),
    etc_files=(("network/interfaces", INTERFACES),),
)
# No Xen NIC at all: the default scope has nothing to judge or change here.
PLAIN = HostPlan("plain", (IfacePlan("eth0"), IfacePlan("eth1", sg=False)), private_etc=True)
EXPECTED = {
    ("guest", "eth0"): "sg-on",
    ("guest", "eth1"): "susceptible",
    ("guest", "eth2"): "sg-on",
    ("guest", "eth3"): "not-applicable",
    ("plain", "eth0"): "not-applicable",
    ("plain", "eth1"): "not-applicable",
}
XEN_NICS = {("guest", "eth0"), ("guest", "eth1"), ("guest", "eth2")}


fresh_lab = fresh_lab_fixture(LAB_INDEX)
plan = lab_plan


def default_scope(lab: Lab, names=None, scheme: str = "paramiko") -> list[str]:
    """lab_args as a user types them: without --xennet-scope, i.e. the default scope."""
    args = lab_args(lab, names, scheme)
    assert "--xennet-scope=all" in args  # what conftest adds for veth-only labs
    return [a for a in args if not a.startswith("--xennet-scope")]


def rows(audit, lab):
    names = {h.address: n for n, h in lab.hosts.items()}
    return {(names.get(r["host"], r["host"]), r["interface"]): r for r in audit.summary["results"]}


def sg(lab, host, iface):
    return read_sg(lab.exec(host, ["ethtool", "-k", iface]).stdout)


def kernel_mtu(lab, host, iface):
    """The kernel's own MTU, asked from outside the host (no wrapper, no fake sysfs)."""
    out = subprocess.run(["ip", "-j", "-n", lab.hosts[host].netns, "link", "show", "dev", iface], capture_output=True)
    return json.loads(out.stdout)[0]["mtu"]


def ssh(lab, host, command):
    """A command over OpenSSH through the host's own sshd, as a user's session runs it."""
    argv = ["ssh", "-F", str(lab.ssh_config), lab.hosts[host].address, command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def cat(lab, host, path):
    return lab.exec(host, ["cat", path]).stdout


# Over SSH, per interface: NAME, then device, driver and module basenames ('-' when the
# link is missing), then /sys/class/net's mtu file.
SYSFS_VIEW = (
    "cd /sys/class/net && for i in *; do "
    'b() { if [ -e "$1" ]; then p=$(readlink -f "$1"); echo "${p##*/}"; else echo -; fi; }; '
    'printf "%s %s %s %s %s\\n" "$i" "$(b "$i/device")" "$(b "$i/device/driver")" '
    '"$(b "$i/device/driver/module")" "$(cat "$i/mtu")"; done'
)


@plan(GUEST)
def test_a_xen_guest_shows_xen_netfront_in_sysfs_and_the_probe_reads_it(fresh_lab):
    lab = fresh_lab
    seen = ssh(lab, "guest", SYSFS_VIEW)
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.splitlines() == [
        "eth0 vif-0 vif xen_netfront 1500",
        "eth1 vif-1 vif xen_netfront 1500",
        "eth2 vif-2 vif xen_netfront 9001",
        "eth3 - - - 1500",
        "lo - - - 65536",
    ]
    # The neighbour is what the kernel makes of a veth; the Xen NIC's device is a vif-N.
    links = ssh(lab, "guest", "readlink /sys/class/net/eth3 /sys/class/net/eth1/device").stdout.split()
    assert links == ["../../devices/virtual/net/eth3", "../../../vif-1"]
    # The probe itself, over SSH, as the audit sends it.
    argv = ["ssh", "-F", str(lab.ssh_config), lab.hosts["guest"].address, PROBE_COMMAND]
    probed = subprocess.run(argv, input=PROBE_SCRIPT.encode(), capture_output=True, timeout=30, check=True)
    facts = {i.name: i for i in parse_probe(probed.stdout).interfaces}
    assert {n: (i.driver, i.virtual, i.mtu, i.scatter_gather) for n, i in facts.items()} == {
        "eth0": ("xen_netfront", False, 1500, True),
        "eth1": ("xen_netfront", False, 1500, False),
        "eth2": ("xen_netfront", False, 9001, True),
        "eth3": (None, True, 1500, False),
    }
    # ethtool -i answers as for a driver without get_drvinfo: the bus driver and device.
    info = ssh(lab, "guest", "ethtool -i eth1").stdout.splitlines()
    assert ("driver: vif" in info, "bus-info: vif-1" in info) == (True, True)
    assert "driver: veth" in ssh(lab, "guest", "ethtool -i eth3").stdout.splitlines()
    # The mtu file is the kernel's, live: a change made outside shows through it.
    lab.set_mtu("guest", "eth2", 8000)
    assert ssh(lab, "guest", "cat /sys/class/net/eth2/mtu").stdout == "8000\n"
    # None of it is this machine's: its /sys/class/net is the kernel's.
    assert " /sys/class/net " not in Path("/proc/self/mountinfo").read_text()


@plan(GUEST, PLAIN)
def test_default_scope_judges_the_xen_nics_and_leaves_their_neighbours_alone(fresh_lab, tmp_path):
    lab = fresh_lab
    for scheme in ("paramiko", "ssh"):
        audit = run_audit(tmp_path / scheme, *default_scope(lab, scheme=scheme))
        assert audit.returncode == 1, audit.stdout  # guest/eth1 is susceptible
        assert audit.summary["scope"] == "xen" and audit.summary["complete"] is True
        assert {k: r["verdict"] for k, r in rows(audit, lab).items()} == EXPECTED, scheme
        found = rows(audit, lab)
        assert {k: r["driver"] for k, r in found.items() if k in XEN_NICS} == dict.fromkeys(XEN_NICS, "xen_netfront")
        assert {k: r["virtual"] for k, r in found.items() if k in XEN_NICS} == dict.fromkeys(XEN_NICS, False)
        assert (found[("guest", "eth3")]["driver"], found[("guest", "eth3")]["virtual"]) == (None, True)
        assert found[("guest", "eth3")]["message"] == "eth3 is virtual: not affected"
        assert found[("guest", "eth1")]["fixes"] == ["sudo ethtool -K eth1 sg on", "sudo ip link set dev eth1 mtu 9001"]
    # A Xen guest whose every NIC is mitigated passes.
    lab.set_sg("guest", "eth1", True)
    clean = run_audit(tmp_path / "clean", *default_scope(lab, ["guest"]))
    assert clean.returncode == 0, clean.stdout


@plan(GUEST, PLAIN)
def test_apply_and_persist_touch_only_the_xen_nics(fresh_lab, tmp_path):
    lab = fresh_lab
    audit = run_audit(tmp_path, *default_scope(lab), "--xennet-workaround=apply", "--xennet-persist")
    assert audit.returncode == 0, audit.stdout
    found = rows(audit, lab)
    assert [k for k, r in found.items() if "workaround" in r] == [("guest", "eth1")]
    assert found[("guest", "eth1")]["verdict"] == "remediated"
    assert {k: r["verdict"] for k, r in found.items() if k != ("guest", "eth1")} == {
        k: v for k, v in EXPECTED.items() if k != ("guest", "eth1")
    }
    # On the hosts themselves: SG on where the Xen NIC was susceptible, nowhere else.
    assert [sg(lab, "guest", i) for i in ("eth0", "eth1", "eth2", "eth3")] == [True, True, True, False]
    assert sg(lab, "plain", "eth1") is False
    assert cat(lab, "guest", "/etc/network/interfaces") == INTERFACES.replace(
        "eth1 inet manual\n", "eth1 inet manual\n    offload-sg on\n"
    )
    assert lab.exec("plain", ["test", "-e", UDEV_RULE], check=False).returncode == 1
    assert not Path(UDEV_RULE).exists()  # this machine's /etc is untouched
    # The rule matches the driver as this host's kernel names it: device/driver's basename.
    (rule,) = cat(lab, "guest", UDEV_RULE).splitlines()[1:]
    driver = lab.exec("guest", ["readlink", "-f", "/sys/class/net/eth1/device/driver"]).stdout.strip()
    assert f'DRIVERS=="{Path(driver).name}"' in rule.split(", ")
    assert rule == 'ACTION=="add", SUBSYSTEM=="net", DRIVERS=="vif", RUN+="/usr/sbin/ethtool -K $name sg on"'
    note = [p.get("note") for p in found[("guest", "eth1")]["workaround"]["persisted"]]
    assert note == [None, None]  # no "matches xen-netfront only" warning: this is one


@plan(GUEST)
def test_xen_nics_couple_sg_and_mtu_and_the_workaround_keeps_to_sg(fresh_lab, tmp_path):
    lab = fresh_lab
    # SG off: xen-netfront refuses any MTU above 1500; the veth neighbour does not care.
    refused = ssh(lab, "guest", "ip link set dev eth1 mtu 9001")
    assert (refused.returncode, refused.stderr) == (2, "RTNETLINK answers: Invalid argument\n")
    assert lab.exec("guest", ["ip", "link", "set", "eth1", "mtu", "1501"], check=False).returncode == 2
    assert kernel_mtu(lab, "guest", "eth1") == 1500
    assert ssh(lab, "guest", "ip link set dev eth3 mtu 9001").returncode == 0
    assert kernel_mtu(lab, "guest", "eth3") == 9001
    with pytest.raises(LabError, match="refuses MTU 9001"):
        lab.set_mtu("guest", "eth1", 9001)

    # The workaround turns SG on, and the MTU fallback is not taken though allowed.
    audit = run_audit(tmp_path / "apply", *default_scope(lab), "--xennet-workaround=apply", "--xennet-allow-mtu")
    assert audit.returncode == 0, audit.stdout
    done = rows(audit, lab)[("guest", "eth1")]["workaround"]
    assert done["commands"] == ["/usr/sbin/ethtool -K eth1 sg on"]
    assert done["after"] == {"scatter_gather": "on", "sg_fixed": False, "mtu": 1500}
    assert (sg(lab, "guest", "eth1"), kernel_mtu(lab, "guest", "eth1")) == (True, 1500)

    # SG on: a jumbo MTU is accepted. SG off again: the driver brings it back to 1500.
    assert ssh(lab, "guest", "ip link set dev eth1 mtu 9001").returncode == 0
    assert kernel_mtu(lab, "guest", "eth1") == 9001
    assert ssh(lab, "guest", "ethtool -K eth1 sg off").returncode == 0
    assert (sg(lab, "guest", "eth1"), kernel_mtu(lab, "guest", "eth1")) == (False, 1500)
    # So a Xen NIC never gets to "jumbo-mtu" with SG off: it is susceptible again.
    again = run_audit(tmp_path / "again", *default_scope(lab))
    assert rows(again, lab)[("guest", "eth1")]["verdict"] == "susceptible"
    # The lab's own SG setter keeps to the driver too.
    lab.set_sg("guest", "eth2", False)
    assert kernel_mtu(lab, "guest", "eth2") == 1500


# A Xen NIC whose backend lacks feature-sg: the driver keeps SG off whatever is asked
# (xennet_fix_features), as tests/test_workaround_lab.py's REFUSES_SG host answers; the
# kernel's SG is off too, so the ip wrapper refuses jumbo MTUs as xen-netfront does.
NO_SG_BACKEND = HostPlan(
    "nosg",
    (IfacePlan("eth0", xen=True), IfacePlan("eth1", sg=False, xen=True)),
    fake_ethtool=ETHTOOL_REFUSING_SG,
)


@plan(NO_SG_BACKEND)
def test_when_the_backend_refuses_sg_the_mtu_fallback_is_refused_too(fresh_lab, tmp_path):
    lab = fresh_lab
    audit = run_audit(tmp_path, *default_scope(lab), "--xennet-workaround=apply", "--xennet-allow-mtu")
    assert audit.returncode == 1, audit.stdout
    row = rows(audit, lab)[("nosg", "eth1")]
    assert (row["verdict"], row["workaround"]["result"]) == ("susceptible", "failed")
    # The MTU step is not even tried: xen-netfront refuses it while SG is off.
    assert row["workaround"]["commands"] == ["/usr/sbin/ethtool -K eth1 sg on"]
    assert row["workaround"]["cause"].endswith(
        "no MTU change: xen-netfront refuses an MTU above 1500 while scatter-gather is off"
    ), row["workaround"]["cause"]
    assert kernel_mtu(lab, "nosg", "eth1") == 1500


def test_the_lab_refuses_a_xen_nic_state_the_driver_cannot_have():
    with pytest.raises(ValueError, match="xen-netfront refuses MTU 9001 on 'eth1' while SG is off"):
        Lab([HostPlan("bad", (IfacePlan("eth0"), IfacePlan("eth1", mtu=9001, sg=False, xen=True)))])
    Lab([HostPlan("ok", (IfacePlan("eth0", mtu=9001, sg=True, xen=True), IfacePlan("eth1", mtu=9001, sg=False)))])


@plan(HostPlan("guest", (IfacePlan("eth0", xen=True),)), HostPlan("nitro", (IfacePlan("eth0"),)))
def test_require_applicable_fails_a_host_with_no_xen_nic(fresh_lab, tmp_path):
    lab = fresh_lab
    plain = run_audit(tmp_path / "plain", *default_scope(lab))
    assert plain.returncode == 0, plain.stdout  # without the flag: nothing in scope passes vacuously
    audit = run_audit(tmp_path / "required", *default_scope(lab), "--xennet-require-applicable")
    assert audit.returncode == 1, audit.stdout
    found = rows(audit, lab)
    assert (found[("nitro", None)]["verdict"], found[("nitro", None)]["message"]) == (
        "none-applicable", "no interface in scope 'xen': drivers seen: virtual"
    )  # fmt: skip
    assert found[("guest", "eth0")]["verdict"] == "sg-on" and ("guest", None) not in found
    assert audit.summary["counts"]["none-applicable"] == 1
    failure = next(c for c in audit.junit.iter("testcase") if c.get("classname").endswith(".(host)"))
    assert "drivers seen: virtual" in failure.find("failure").get("message")
