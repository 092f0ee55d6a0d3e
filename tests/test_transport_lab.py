"""The probe's transport against real hosts: any login shell, any /bin/sh, any bytes in a name,
and still one login and one remote command per host.

Each host of this module's lab gets root's login shell from its own private /etc/passwd, or
another shell bind-mounted over its /bin/sh, or interfaces whose names hold bytes that
Python's str.splitlines() splits at, or that are not UTF-8 at all.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import lab_args, lab_targets, make_lab, run_audit
from tests.lab import HostPlan, IfacePlan
from tests.tamper import TamperingRelay

LAB_INDEX = 3
BUSYBOX_ASH = "ash"  # a symlink named ash to busybox, made by the lab fixture
LOGIN_SHELLS = {
    "bash": "/bin/bash",
    "dash": "/bin/dash",
    "zsh": "/usr/bin/zsh",
    "fish": "/usr/bin/fish",
    "tcsh": "/usr/bin/tcsh",
    "csh": "/usr/bin/csh",
    "ksh": "/usr/bin/ksh93",
    "mksh": "/usr/bin/mksh",
    "ash": BUSYBOX_ASH,
    "yash": "/usr/bin/yash",
    "posh": "/usr/bin/posh",
}
# 60 interfaces: the probe's output is past 128 KiB, where posh (printf not a builtin) failed.
MANY = tuple(IfacePlan(f"v{i}", sg=i % 2 == 0) for i in range(60))
CTR_ONLY = "Ciphers aes128-ctr,aes256-ctr"
# \udcff: the byte 0xff; \x1b and U+202E (a bidi override) must never reach a page raw.
ODD_NAMES = ("eth0", "a\x1cb", "a\x1eb", "caf\u00e9", "eth\udcff", "t\x1b[2J", "x\u202egnp.exe")


def plan(ash: str) -> tuple[HostPlan, ...]:
    shells = {**LOGIN_SHELLS, "ash": ash}
    return (
        *(HostPlan(f"sh-{name}", (IfacePlan("eth0"), IfacePlan("eth1", sg=False)), root_shell=path)
          for name, path in shells.items()),
        HostPlan("posh-sh", (IfacePlan("eth0"), *MANY), sh="/usr/bin/posh"),
        HostPlan("bytes", tuple(IfacePlan(name) for name in ODD_NAMES)),
        HostPlan("wide", (IfacePlan("eth0"), *(IfacePlan(f"w{i}", sg=i % 3 != 0) for i in range(599)))),
        # An sshd without AES-GCM, as before OpenSSH 6.2: the client's preference must not be a requirement.
        HostPlan("ctr-only", (IfacePlan("eth0"), IfacePlan("eth1", sg=False)), sshd_options=(CTR_ONLY,)),
    )  # fmt: skip


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    wanted = [path for path in [*LOGIN_SHELLS.values(), "/usr/bin/busybox"] if path != BUSYBOX_ASH]
    missing = [path for path in wanted if not shutil.which(path)]
    if missing:
        pytest.skip(f"shells not installed: {missing} (tests/system_packages.py installs them as root)")
    ash = tmp_path_factory.mktemp("shells") / "ash"  # busybox runs as ash when called by that name
    os.symlink("/usr/bin/busybox", ash)
    with make_lab(plan(str(ash)), LAB_INDEX) as started:
        yield started


@pytest.fixture(scope="module")
def audit(lab, tmp_path_factory):
    before = {name: lab.sshd_events(name) for name in lab.hosts}
    result = run_audit(tmp_path_factory.mktemp("transport"), *lab_args(lab))
    result.sshd_delta = {n: tuple(a - b for a, b in zip(lab.sshd_events(n), before[n])) for n in lab.hosts}
    return result


def rows(audit, lab, host):
    address = lab.hosts[host].address
    return {r["interface"]: (r["verdict"], r["message"]) for r in audit.summary["results"] if r["host"] == address}


@pytest.mark.parametrize("shell", sorted(LOGIN_SHELLS))
def test_the_probe_runs_under_any_login_shell(lab, audit, shell):
    found = rows(audit, lab, f"sh-{shell}")
    assert {i: v for i, (v, _) in found.items()} == {"eth0": "sg-on", "eth1": "susceptible"}, (found, audit.stdout)
    assert audit.sshd_delta[f"sh-{shell}"] == (1, 1)


def test_posh_as_sh_prints_more_than_128_kib(lab, audit):
    found = rows(audit, lab, "posh-sh")
    assert len(found) == 61, audit.stdout
    assert {v for v, _ in found.values()} == {"sg-on", "susceptible"}
    assert {i for i, (v, _) in found.items() if v == "susceptible"} == {f"v{i}" for i in range(1, 60, 2)}


def test_names_with_any_byte_keep_the_host_and_one_command(lab, audit):
    found = rows(audit, lab, "bytes")
    assert found == {
        "eth0": ("sg-on", "Scatter-Gather is enabled on eth0. This mitigates the bug."),
        "a\x1cb": ("sg-on", "Scatter-Gather is enabled on a\\x1cb. This mitigates the bug."),
        "a\x1eb": ("sg-on", "Scatter-Gather is enabled on a\\x1eb. This mitigates the bug."),
        "caf\u00e9": ("sg-on", "Scatter-Gather is enabled on caf\\xe9. This mitigates the bug."),
        "eth\\xff": ("error", "interface name is not UTF-8 (its bytes are shown escaped)"),
        "t\x1b[2J": ("sg-on", "Scatter-Gather is enabled on t\\x1b[2J. This mitigates the bug."),
        "x\u202egnp.exe": ("sg-on", "Scatter-Gather is enabled on x\\u202egnp.exe. This mitigates the bug."),
    }, audit.stdout
    # Non-ASCII output never makes testinfra ask the host for its locale (a second command).
    assert audit.sshd_delta["bytes"] == (1, 1)


def test_openssh_backend_sends_the_script_too(lab, tmp_path):
    names = ["sh-tcsh", "sh-fish", "bytes"]
    audit = run_audit(tmp_path, *lab_args(lab, names, scheme="ssh"), f"--ssh-config={lab.ssh_config}")
    for name in ("sh-tcsh", "sh-fish"):
        assert {i: v for i, (v, _) in rows(audit, lab, name).items()} == {"eth0": "sg-on", "eth1": "susceptible"}
    assert rows(audit, lab, "bytes")["eth\\xff"][0] == "error" and rows(audit, lab, "bytes")["eth0"][0] == "sg-on"


def test_control_and_bidi_characters_are_escaped_in_every_report(lab, audit):
    for text in (audit.html, audit.html_rendered, (audit.reports / "junit.xml").read_text(), audit.stdout):
        assert "\x1b" not in text and "\u202e" not in text
    assert "t\\x1b[2J" in audit.html_rendered and "x\\u202egnp.exe" in audit.html_rendered
    classes = {c.get("classname") for c in audit.junit.iter("testcase")}
    address = lab.hosts["bytes"].address
    assert {f"{address}.t\\x1b[2J", f"{address}.x\\u202egnp\u2024exe"} <= classes


def test_a_host_of_600_interfaces_is_audited_whole_with_the_default_limits(lab, audit):
    # ~1.1 MiB of probe output: within the default --xennet-max-output (4 MiB), in one command.
    found = rows(audit, lab, "wide")
    assert len(found) == 600 and {v for v, _ in found.values()} == {"sg-on", "susceptible"}, audit.stdout
    assert sum(v == "susceptible" for v, _ in found.values()) == 200
    assert audit.sshd_delta["wide"] == (1, 1)


@pytest.mark.parametrize(("host", "cipher"), [("sh-bash", "aes128-gcm@openssh.com"), ("ctr-only", "aes128-ctr")])
def test_paramiko_prefers_aes_gcm_and_still_reaches_a_host_without_it(lab, audit, host, cipher):
    # GCM's tag is checked in C; the CTR ciphers' HMAC by paramiko, byte by byte, in Python.
    (target,) = lab_targets(lab, [host])
    try:
        transport = target.connect().client.get_transport()
        assert (transport.local_cipher, transport.remote_cipher) == (cipher, cipher)
    finally:
        target.close()
    assert {i: v for i, (v, _) in rows(audit, lab, host).items()} == {"eth0": "sg-on", "eth1": "susceptible"}


# AES-GCM's tag (cryptography's InvalidTag); an HMAC (paramiko's "Mismatched MAC"). In the output,
# or in the answer authentication waits for, with a password to try after the key: paramiko's
# authentication then goes on to it, and fails as "No existing session".
@pytest.mark.parametrize("host", ["sh-bash", "ctr-only"])
@pytest.mark.parametrize(("where", "doing"), [("output", "running the probe"), ("handshake", "connecting")])
def test_data_altered_on_the_way_is_a_lost_connection_that_says_so(lab, tmp_path, host, where, doing):
    from compliance.probe import PROBE_INPUT

    address = lab.hosts[host].address
    with TamperingRelay((address, 22), after=len(PROBE_INPUT) if where == "output" else None) as relay:
        known = tmp_path / "known_hosts"
        keys = [
            line.split(None, 1)[1] for line in lab.known_hosts.read_text().splitlines() if line.split()[0] == address
        ]
        known.write_text("".join(f"[127.0.0.1]:{relay.port} {key}\n" for key in keys))
        spec = f"paramiko://root:not-the-password@127.0.0.1:{relay.port}"
        args = [f"--hosts={spec}", f"--ssh-identity-file={lab.key_file}", f"--ssh-known-hosts={known}"]
        audit = run_audit(tmp_path / "reports", *args, "--xennet-scope=all")
        assert relay.flipped.is_set()
    (row,) = audit.summary["results"]
    integrity = "its data failed the integrity check (corrupted or altered on the way)"
    assert (row["verdict"], row["error_kind"], row["message"]) == (
        "error",
        "unreachable",
        f"connection lost {doing}: {integrity}",
    ), audit.stdout
    assert audit.returncode == 1 and "not-the-password" not in audit.stdout + audit.stderr
