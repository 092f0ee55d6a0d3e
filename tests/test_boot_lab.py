"""Boot configuration end to end: lab Xen guests given real configuration files in their own
/etc (tests/data/boot, sources in tests/data/README.md), audited through the plugin as users
run it; ``boot_sg`` in every report, and ``--xennet-require-persistent`` failing what the next
boot would turn off. The suite's own ``--xennet-persist`` output is read back as ``on``.

Each test gets a fresh lab of its own (index 12); the files are checked on the host itself.
"""

from __future__ import annotations

import html
from pathlib import Path

from tests.conftest import fresh_lab_fixture, lab_args, lab_plan, run_audit
from tests.lab import HostPlan, IfacePlan, UserPlan, read_sg

LAB_INDEX = 12
DATA = Path(__file__).parent / "data" / "boot"
UDEV_RULE = "/etc/udev/rules.d/70-xennet-compliance-sg.rules"
VETH_RULES = (DATA / "udev" / "99-veth-offload.rules").read_text()  # KERNEL=="sbr0" ... sg off, line 3
IFCFG_BOND = (DATA / "ifcfg" / "ifcfg-bond0.64").read_text()  # ETHTOOL_OPTS="-K ${DEVICE} ... sg off", line 8
SNIFFER = (DATA / "ifupdown" / "sniffer-eno1.interfaces").read_text()  # offload-sg off, line 6
NM_KEYFILE = "/etc/NetworkManager/system-connections/eth1.nmconnection"
NM_PROFILE = (
    "[connection]\nid=eth1\nuuid=6a4d6b0e-5b40-4e3c-9a5e-2f0d2c1e7a11\ntype=ethernet\ninterface-name=eth1\n\n"
    "[ethtool]\nfeature-sg=false\n\n[ipv4]\nmethod=disabled\n\n[ipv6]\nmethod=disabled\n"
)  # feature-sg on line 8

fresh_lab = fresh_lab_fixture(LAB_INDEX)
plan = lab_plan


def default_scope(lab, names=None) -> list[str]:
    """As users run it: no --xennet-scope, so only the xen-netfront NICs are judged."""
    return [a for a in lab_args(lab, names) if not a.startswith("--xennet-scope")]


def rows(audit, lab):
    names = {h.address: n for n, h in lab.hosts.items()}
    return {(names.get(r["host"], r["host"]), r["interface"]): r for r in audit.summary["results"]}


def boot(row) -> tuple:
    return row["boot_sg"], row["boot_sg_source"], row["boot_sg_problem"]


def xen_guest(name: str, nic: str, sg: bool = True, **plan) -> HostPlan:
    return HostPlan(name, (IfacePlan("eth0", xen=True), IfacePlan(nic, sg=sg, xen=True)), **plan)


# Each host has SG on now; three of them have a configuration that turns it off at boot.
MECHANISMS = (
    xen_guest("udev", "sbr0", etc_files=(("udev/rules.d/99-veth-offload.rules", VETH_RULES),)),
    xen_guest("rh", "bond0.64", etc_files=(("sysconfig/network-scripts/ifcfg-bond0.64", IFCFG_BOND),)),
    xen_guest("deb", "eno1", etc_files=(("network/interfaces", SNIFFER),)),
    xen_guest("clean", "eth1", private_etc=True),
)
TURNED_OFF = {
    ("udev", "sbr0"): "/etc/udev/rules.d/99-veth-offload.rules:3",
    ("rh", "bond0.64"): "/etc/sysconfig/network-scripts/ifcfg-bond0.64:8",
    ("deb", "eno1"): "/etc/network/interfaces:6",
}


@plan(*MECHANISMS)
def test_boot_sg_names_the_line_that_turns_sg_off_and_require_persistent_fails_it(fresh_lab, tmp_path):
    lab = fresh_lab
    audit = run_audit(tmp_path / "plain", *default_scope(lab))
    assert audit.returncode == 0, audit.stdout  # information only: every NIC has SG on now
    found = rows(audit, lab)
    for key, source in TURNED_OFF.items():
        assert (found[key]["verdict"], boot(found[key])) == ("sg-on", ("off", source, None)), key
    others = {k: boot(r) for k, r in found.items() if k not in TURNED_OFF}
    assert others == dict.fromkeys(others, ("default", None, None))
    assert "-- at boot: off (/etc/udev/rules.d/99-veth-offload.rules:3)" not in audit.stdout  # no warning: passes

    strict = run_audit(tmp_path / "strict", *default_scope(lab), "--xennet-require-persistent")
    assert strict.returncode == 1, strict.stdout
    found = rows(strict, lab)
    for (host, nic), source in TURNED_OFF.items():
        row = found[(host, nic)]
        assert row["verdict"] == "not-persistent" and row["error_kind"] is None
        assert row["message"] == f"Scatter-Gather is enabled on {nic} now, but {source} turns it off at boot."
        assert f"[WARN] {lab.hosts[host].address}|{nic}: {row['message']}" in strict.stdout
    assert {k: r["verdict"] for k, r in found.items() if k not in TURNED_OFF} == dict.fromkeys(
        [("udev", "eth0"), ("rh", "eth0"), ("deb", "eth0"), ("clean", "eth0"), ("clean", "eth1")], "sg-on"
    )
    assert strict.summary["counts"]["not-persistent"] == 3
    # JUnit: a failure naming the file and line, and the boot_sg properties.
    case = next(c for c in strict.junit.iter("testcase") if c.get("classname").endswith(".sbr0"))
    assert "/etc/udev/rules.d/99-veth-offload.rules:3 turns it off at boot" in case.find("failure").get("message")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert (props["boot_sg"], props["boot_sg_source"], props["verdict"]) == (
        "off", "/etc/udev/rules.d/99-veth-offload.rules:3", "not-persistent"
    )  # fmt: skip
    # The HTML reports: pytest-html's Boot SG column, and summary.html's cell, failing hosts first.
    assert "off (/etc/network/interfaces:6)" in html.unescape(strict.html_rendered)
    page = (strict.reports / "summary.html").read_text()
    assert "<dt>Boot SG</dt><dd>off (/etc/sysconfig/network-scripts/ifcfg-bond0.64:8)</dd>" in page
    assert "<h2>Failing hosts (3)</h2>" in page

    # A host whose configuration leaves SG to xen-netfront's default passes under the flag.
    clean = run_audit(tmp_path / "clean", *default_scope(lab, ["clean"]), "--xennet-require-persistent")
    assert clean.returncode == 0, clean.stdout


@plan(
    xen_guest(
        "locked",
        "eth1",
        users=(UserPlan("auditor", sudo="nopasswd"),),
        etc_files=(("NetworkManager/system-connections/eth1.nmconnection", NM_PROFILE),),
    )
)
def test_what_the_audit_cannot_read_is_an_error_under_require_persistent(fresh_lab, tmp_path):
    lab = fresh_lab
    lab.exec("locked", ["chmod", "600", NM_KEYFILE])  # as NetworkManager requires its keyfiles
    auditor = [
        a if not a.startswith("--hosts=") else f"--hosts={lab.spec('locked', user='auditor')}"
        for a in default_scope(lab)
    ]
    plain = run_audit(tmp_path / "plain", *auditor)
    assert plain.returncode == 0, plain.stdout
    why = f"cannot read {NM_KEYFILE} (audit as root, or with --sudo)"
    assert boot(rows(plain, lab)[("locked", "eth1")]) == (None, None, why)

    strict = run_audit(tmp_path / "strict", *auditor, "--xennet-require-persistent")
    assert strict.returncode == 1, strict.stdout
    row = rows(strict, lab)[("locked", "eth1")]
    assert (row["verdict"], row["error_kind"]) == ("error", "probe")
    assert row["message"] == f"cannot tell whether scatter-gather is on at boot on eth1: {why}"

    # Through sudo the keyfile is read: NetworkManager would turn SG off at boot.
    sudo = run_audit(tmp_path / "sudo", *auditor, "--sudo", "--xennet-require-persistent")
    row = rows(sudo, lab)[("locked", "eth1")]
    assert (row["verdict"], boot(row)) == ("not-persistent", ("off", f"{NM_KEYFILE}:8", None))


PERSIST = (
    # A udev rule turns SG off for sbr0 at boot; ifupdown brings sbr0 up after udev.
    xen_guest(
        "deb",
        "sbr0",
        sg=False,
        etc_files=(
            ("udev/rules.d/99-veth-offload.rules", VETH_RULES),
            ("network/interfaces", "auto sbr0\niface sbr0 inet manual\n"),
        ),
    ),
    xen_guest(
        "rh",
        "eth1",
        sg=False,
        etc_files=(
            ("sysconfig/network-scripts/ifcfg-eth1", 'DEVICE=eth1\nONBOOT=yes\nETHTOOL_OPTS="-K ${DEVICE} tso off"\n'),
        ),
    ),
    xen_guest("bare", "eth1", sg=False, private_etc=True),
)


@plan(*PERSIST)
def test_what_persist_writes_is_read_back_as_boot_sg_on(fresh_lab, tmp_path):
    lab = fresh_lab
    before = rows(run_audit(tmp_path / "before", *default_scope(lab)), lab)
    assert (before[("deb", "sbr0")]["verdict"], boot(before[("deb", "sbr0")])) == (
        "susceptible", ("off", "/etc/udev/rules.d/99-veth-offload.rules:3", None)
    )  # fmt: skip
    assert boot(before[("bare", "eth1")]) == ("default", None, None)

    # Fixed now but not at boot: the udev rule would turn it off again.
    now_only = run_audit(
        tmp_path / "now", *default_scope(lab, ["deb"]), "--xennet-workaround=apply", "--xennet-require-persistent"
    )
    assert now_only.returncode == 1, now_only.stdout
    row = rows(now_only, lab)[("deb", "sbr0")]
    assert row["verdict"] == "not-persistent" and row["workaround"]["result"] == "applied"
    assert read_sg(lab.exec("deb", ["ethtool", "-k", "sbr0"]).stdout) is True
    lab.set_sg("deb", "sbr0", False)

    # Persisted: the suite's files are read back. On deb, ifupdown (offload-sg on, written by
    # persist) runs after udev, so it beats the rule that turns SG off.
    args = [*default_scope(lab), "--xennet-workaround=apply", "--xennet-persist", "--xennet-require-persistent"]
    persisted = run_audit(tmp_path / "persist", *args)
    assert persisted.returncode == 0, persisted.stdout
    found = rows(persisted, lab)
    assert (
        lab.exec("deb", ["cat", "/etc/network/interfaces"]).stdout
        == "auto sbr0\niface sbr0 inet manual\n    offload-sg on\n"
    )
    expected = {
        ("deb", "sbr0"): ("on", "/etc/network/interfaces:3", None),
        ("rh", "eth1"): ("on", "/etc/sysconfig/network-scripts/ifcfg-eth1:3", None),
        ("bare", "eth1"): ("on", f"{UDEV_RULE}:2", None),
    }
    assert {k: boot(found[k]) for k in expected} == expected
    assert {found[k]["verdict"] for k in expected} == {"remediated"}

    # What the next audit of the image sees: mitigated now and at boot.
    after = run_audit(tmp_path / "after", *default_scope(lab), "--xennet-require-persistent")
    assert after.returncode == 0, after.stdout
    assert {k: boot(rows(after, lab)[k]) for k in expected} == expected


NM_HOST = HostPlan(
    "nm",
    (IfacePlan("eth0"), IfacePlan("eth1", sg=False)),
    networkmanager=True,
    etc_files=(("NetworkManager/system-connections/eth1.nmconnection", NM_PROFILE),),
)


@plan(NM_HOST)
def test_networkmanagers_own_keyfile_is_read_before_and_after_persist(fresh_lab, tmp_path):
    lab = fresh_lab
    args = [*lab_args(lab), "--xennet-require-persistent"]  # --xennet-scope=all: the NICs are veths
    before = run_audit(tmp_path / "before", *args)
    row = rows(before, lab)[("nm", "eth1")]
    assert (row["verdict"], boot(row)) == ("susceptible", ("off", f"{NM_KEYFILE}:8", None))
    # eth0 is nobody's: a veth's default is not known to the suite, so it fails under the flag.
    assert rows(before, lab)[("nm", "eth0")]["message"] == (
        "Scatter-Gather is enabled on eth0 now, but no boot configuration turns scatter-gather on, and the default "
        "of a virtual interface is not known to the suite."
    )
    persisted = run_audit(tmp_path / "persist", *args, "--xennet-workaround=apply", "--xennet-persist")
    row = rows(persisted, lab)[("nm", "eth1")]
    keyfile = lab.exec("nm", ["cat", NM_KEYFILE]).stdout.splitlines()
    line = keyfile.index("feature-sg=true") + 1  # NetworkManager rewrote its own file
    assert (row["verdict"], boot(row)) == ("remediated", ("on", f"{NM_KEYFILE}:{line}", None))
