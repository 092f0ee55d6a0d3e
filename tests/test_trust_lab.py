"""Trust: host keys, secrets and interrupts, against the lab's real SSH hosts."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import selectors
import signal
import subprocess
import time

import pytest

from tests.conftest import ROOT, audit_argv, lab_args, live_children, make_lab, run_audit, signal_at_default
from tests.lab import HostPlan, IfacePlan

NAMES = ["sgon", "exposed", "multi"]


def known_hosts_lines(lab) -> dict[str, str]:
    """Lab host name -> its known_hosts line."""
    by_address = {line.split()[0]: line for line in lab.known_hosts.read_text().splitlines() if line.strip()}
    return {name: by_address[host.address] for name, host in lab.hosts.items() if host.address in by_address}


def args_with(lab, names, known_hosts, *extra, scheme="paramiko"):
    args = [a for a in lab_args(lab, names, scheme=scheme) if not a.startswith("--ssh-known-hosts")]
    return [*args, f"--ssh-known-hosts={known_hosts}", *extra]


@pytest.fixture
def isolated_home(tmp_path):
    """A HOME whose ~/.ssh/known_hosts is empty: only the files a test names are trusted."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    return {"HOME": str(home)}


@pytest.mark.parametrize("scheme", ["paramiko", "ssh"])
def test_changed_host_key_errors_that_host_only_and_is_never_replaced(lab, tmp_path, isolated_home, scheme):
    lines = known_hosts_lines(lab)
    impostor = lines["jumbo"].split(maxsplit=1)[1]  # another host's real key
    forged = "".join(f"{lab.hosts[n].address} {impostor}\n" if n == "sgon" else lines[n] + "\n" for n in NAMES)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(forged)
    extra = [f"--ssh-config={lab.ssh_config}"] if scheme == "ssh" else []
    for policy in ("strict", "accept-new"):
        audit = run_audit(
            tmp_path / policy,
            *args_with(lab, NAMES, known_hosts, f"--ssh-host-key-policy={policy}", *extra, scheme=scheme),
            env=isolated_home,
        )
        sgon = lab.hosts["sgon"].address
        rows = audit.summary["results"]
        assert [(r["verdict"], r["message"]) for r in rows if r["host"] == sgon] == [("error", "host key mismatch")], (
            audit.stdout
        )
        others = [r["verdict"] for r in rows if r["host"] != sgon]
        assert len(others) == 1 + 4 and "error" not in others  # exposed, and multi's four interfaces
        assert known_hosts.read_text() == forged


def test_unknown_host_is_refused_by_default(lab, tmp_path, isolated_home):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    audit = run_audit(tmp_path / "r", *args_with(lab, ["sgon"], empty), env=isolated_home)
    (row,) = audit.summary["results"]
    assert row["verdict"] == "error" and "is not in known_hosts" in row["message"]
    assert audit.summary["host_key_policy"] == "strict"
    assert empty.read_text() == ""


@pytest.mark.parametrize("scheme", ["paramiko", "ssh"])
def test_accept_new_records_unknown_hosts_then_strict_trusts_them(lab, tmp_path, isolated_home, scheme):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    extra = [f"--ssh-config={lab.ssh_config}"] if scheme == "ssh" else []
    if scheme == "ssh":
        # The lab's ssh_config names its own known_hosts file; point it at ours instead.
        config = tmp_path / "ssh_config"
        config.write_text(lab.ssh_config.read_text().replace(str(lab.known_hosts), str(known_hosts)))
        extra = [f"--ssh-config={config}"]
    first = run_audit(
        tmp_path / "first",
        *args_with(lab, ["sgon", "exposed"], known_hosts, "--ssh-host-key-policy=accept-new", *extra, scheme=scheme),
        env=isolated_home,
    )
    assert {r["verdict"] for r in first.summary["results"]} == {"sg-on", "susceptible"}, first.stdout
    recorded = sorted(line.split() for line in known_hosts.read_text().splitlines())
    assert recorded == sorted(known_hosts_lines(lab)[n].split() for n in ("sgon", "exposed"))
    second = run_audit(
        tmp_path / "second", *args_with(lab, ["sgon", "exposed"], known_hosts, *extra, scheme=scheme), env=isolated_home
    )
    assert {r["verdict"] for r in second.summary["results"]} == {"sg-on", "susceptible"}, second.stdout


def test_insecure_policy_is_announced_in_every_report(lab, tmp_path, isolated_home):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    audit = run_audit(
        tmp_path / "r", *args_with(lab, ["sgon"], empty, "--ssh-host-key-policy=insecure"), env=isolated_home
    )
    assert [r["verdict"] for r in audit.summary["results"]] == ["sg-on"]
    assert audit.summary["host_key_policy"] == "insecure"
    assert "INSECURE: any host key accepted" in audit.html
    assert "host keys INSECURE" in audit.stdout
    assert empty.read_text() == ""


def test_gssapi_keywords_in_the_ssh_config_leave_paramiko_hosts_audited(lab, tmp_path):
    # Common in Kerberos shops' ~/.ssh/config. paramiko 5 has no GSSAPI: passing the keywords on
    # made every host fail with a TypeError.
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n    GSSAPIAuthentication yes\n    GSSAPIKeyExchange Yes\n")
    audit = run_audit(tmp_path / "r", *lab_args(lab, ["sgon"]), f"--ssh-config={config}")
    assert [r["verdict"] for r in audit.summary["results"]] == ["sg-on"], audit.stdout


def test_password_in_a_host_spec_and_the_identity_file_appear_nowhere(lab, tmp_path):
    secret = "Xq7-s3cret-pw"
    names = ["exposed", "dead"]  # a failure and an error: tracebacks and messages are written
    specs = ",".join(f"paramiko://root:{secret}@{lab.hosts[n].address}" for n in names)
    args = [a if not a.startswith("--hosts=") else f"--hosts={specs}" for a in lab_args(lab, names)]
    audit = run_audit(tmp_path, *args, "-v", "-l", "--tb=long", "-rA")
    assert audit.returncode == 1 and len(audit.summary["results"]) == 2, audit.stdout
    # Nor the identity file's contents: any line of the private key's body.
    key_lines = [line for line in lab.key_file.read_text().splitlines() if line and not line.startswith("-----")]
    texts = {p.name: p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()}
    texts.update(stdout=audit.stdout, stderr=audit.stderr)
    assert [name for name, text in texts.items() if secret in text] == []
    assert [name for name, text in texts.items() if any(line in text for line in key_lines)] == []


def read_until(proc: subprocess.Popen, marker: str, deadline: float) -> list[str]:
    """Lines of ``proc``'s output up to the one holding ``marker``; fails (and kills) after ``deadline`` s."""
    seen: list[str] = []
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        end = time.monotonic() + deadline
        while not any(marker in line for line in seen):
            if not selector.select(max(0.0, end - time.monotonic())):
                proc.kill()
                pytest.fail(f"no {marker!r} within {deadline}s: {''.join(seen)!r}")
            line = proc.stdout.readline()
            if not line:
                proc.kill()
                pytest.fail(f"output ended before {marker!r}: {''.join(seen)!r}")
            seen.append(line)
    return seen


# x86_64 and aarch64 numbers of the tgkill syscall: a signal to one chosen thread.
TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine())


def send_to_a_thread_that_is_not_main(pid: int, sig: int) -> None:
    """Deliver ``sig`` to one of the process's other threads, as the kernel may do with
    any process-directed signal (Python then runs the handler only in the main thread)."""
    tid = next(int(t) for t in sorted(os.listdir(f"/proc/{pid}/task")) if int(t) != pid)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(TGKILL, pid, tid, int(sig)) == 0, os.strerror(ctypes.get_errno())


@pytest.mark.parametrize(
    ("sig", "extra", "to"),
    [
        (signal.SIGTERM, [], "process"),
        # The finished host is judged as the run would have judged it: its next boot too.
        (signal.SIGTERM, ["--xennet-require-persistent"], "process"),
        (signal.SIGINT, [], "process"),
        (signal.SIGTERM, ["-n", "2"], "process"),
        (signal.SIGTERM, ["--xennet-processes=2"], "process"),
        (signal.SIGINT, ["--xennet-processes=2"], "process"),
        # A CI job's abort, or `timeout`, signals the whole tree: the gathering child may get it first.
        (signal.SIGTERM, ["--xennet-processes=2"], "children-first"),
        pytest.param(
            signal.SIGTERM, [], "thread", marks=pytest.mark.skipif(TGKILL is None, reason="tgkill number unknown")
        ),
    ],
)
def test_interrupted_run_still_writes_every_report(lab, tmp_path, sig, extra, to):
    # The hung host keeps gathering busy (for up to 600 s); sgon finishes first. The run
    # must stop on the signal, whichever thread the kernel hands it to, not at the timeout.
    args = [a for a in lab_args(lab, ["sgon", "hung"]) if not a.startswith("--xennet-timeout")]
    with signal_at_default(sig):
        proc = subprocess.Popen(
            audit_argv(tmp_path, *args, "--xennet-timeout=600", *extra),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    seen = read_until(proc, "gathering 1/2 hosts", deadline=60)  # sgon gathered, the hung host not
    if to == "thread":
        send_to_a_thread_that_is_not_main(proc.pid, sig)
    else:
        if to == "children-first":
            children = live_children(proc.pid)
            assert children, "no gathering child to signal"
            for child in children:
                os.kill(child, sig)
            time.sleep(0.2)
        proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    out = "".join(seen) + out
    assert proc.returncode == 2, out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["complete"] is False
    # The finished host keeps its verdict; the one in flight says why it has none.
    verdicts = {r["host"]: (r["verdict"], r["message"]) for r in summary["results"]}
    # A veth's SG at boot is its driver's default, which the suite does not know.
    expected = "not-persistent" if "--xennet-require-persistent" in extra else "sg-on"
    assert verdicts[lab.hosts["sgon"].address][0] == expected, out
    assert verdicts[lab.hosts["hung"].address] == ("error", "not gathered: the run was interrupted")
    assert "Traceback" not in out.split("Diagnostic Results")[-1]
    assert (tmp_path / "junit.xml").exists() and (tmp_path / "report.html").exists()
    assert "interrupted" in out


def test_a_gathering_process_that_dies_leaves_its_hosts_in_error(lab, tmp_path):
    # Two processes: sgon, dealt first, stays in the audit's own; hung goes to the other, which is
    # killed (as the OOM killer would): its host is an error that says so, sgon keeps its verdict.
    args = [a for a in lab_args(lab, ["sgon", "hung"]) if not a.startswith("--xennet-timeout")]
    proc = subprocess.Popen(
        audit_argv(tmp_path, *args, "--xennet-timeout=600", "--xennet-processes=2"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = read_until(proc, "gathering 1/2 hosts", deadline=60)
    alive = live_children(proc.pid)
    assert len(alive) == 1, alive
    os.kill(alive[0], signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    out = "".join(seen) + out
    verdicts = {
        r["host"]: (r["verdict"], r["message"]) for r in json.loads((tmp_path / "summary.json").read_text())["results"]
    }
    assert verdicts == {
        lab.hosts["sgon"].address: ("sg-on", "Scatter-Gather is enabled on eth0. This mitigates the bug."),
        lab.hosts["hung"].address: ("error", "the gathering process died before this host was done"),
    }, out
    assert proc.returncode == 1, out


# Hosts whose ethtool prints what the suite cannot trust ($2 is the interface name).
ODD_HOSTS = (
    HostPlan(
        "junk",
        fake_ethtool="printf 'Features for %s:\\nscatter-gather: on\\n\\033]0;pwned\\007<script>alert(1)</script>\\n' \"$2\"\n",
    ),
    HostPlan("truncated", fake_ethtool="printf 'Features for %s:\\nrx-checksumming: on\\n' \"$2\"\n"),
    HostPlan(
        "liar",
        (IfacePlan("eth0"), IfacePlan("eth1")),
        fake_ethtool="printf 'Features for eth0:\\nscatter-gather: on\\n'\n",
    ),
    HostPlan("refuses", fake_ethtool="echo 'netlink error: Operation not permitted' >&2; exit 1\n"),
)


@pytest.fixture(scope="module")
def odd_lab():
    with make_lab(ODD_HOSTS, 1) as started:
        yield started


def test_output_the_suite_cannot_parse_fails_closed_with_an_escaped_excerpt(odd_lab, tmp_path):
    audit = run_audit(tmp_path, *lab_args(odd_lab))
    names = {h.address: n for n, h in odd_lab.hosts.items()}
    rows = {(names[r["host"]], r["interface"]): (r["verdict"], r["message"]) for r in audit.summary["results"]}
    assert rows == {
        ("junk", "eth0"): ("error", "unexpected ethtool -k line: \\x1b]0;pwned\\x07<script>alert(1)</script>"),
        ("truncated", "eth0"): (
            "error",
            "no single scatter-gather line in ethtool -k output: Features for eth0:\\nrx-checksumming: on",
        ),
        # A host can lie about an interface, but not answer for the wrong one.
        ("liar", "eth0"): ("sg-on", "Scatter-Gather is enabled on eth0. This mitigates the bug."),
        ("liar", "eth1"): ("error", "ethtool -k answered for eth0, not eth1"),
        ("refuses", "eth0"): ("error", "ethtool -k failed (exit 1): netlink error: Operation not permitted"),
    }, audit.stdout
    assert audit.returncode == 1
    for page in (audit.html, audit.html_rendered):
        assert "<script>alert(1)</script>" not in page and "\x1b" not in page and "\x07" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in audit.html_rendered
    assert "\x1b" not in audit.stdout and "<script>alert(1)</script>" not in (tmp_path / "junit.xml").read_text()


def test_extra_ssh_args_cannot_switch_host_key_checking_off(lab, tmp_path, isolated_home):
    # OpenSSH keeps an option's first value: the policy's options come before --ssh-extra-args.
    lines = known_hosts_lines(lab)
    forged = f"{lab.hosts['sgon'].address} {lines['jumbo'].split(maxsplit=1)[1]}\n"
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(forged)
    weaken = "--ssh-extra-args=-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    audit = run_audit(tmp_path / "r", *args_with(lab, ["sgon"], known_hosts, weaken, scheme="ssh"), env=isolated_home)
    assert [(r["verdict"], r["message"]) for r in audit.summary["results"]] == [("error", "host key mismatch")], (
        audit.stdout
    )
    assert audit.summary["host_key_policy"] == "strict"


@pytest.mark.parametrize("connection", ["ssh", "paramiko_ssh"])
@pytest.mark.parametrize("via", ["inventory", "--ssh-extra-args"])
def test_inventory_ssh_args_cannot_switch_host_key_checking_off(lab, tmp_path, isolated_home, connection, via):
    # A changed key behind an inventory's ansible_ssh_common_args (or --ssh-extra-args with an
    # inventory): the policy's options come first, so the host errors and the summary's "strict" is true.
    pytest.importorskip("ansible", reason="ansible-core is the optional [ansible] extra")
    lines = known_hosts_lines(lab)
    sgon = lab.hosts["sgon"].address
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{sgon} {lines['jumbo'].split(maxsplit=1)[1]}\n")
    weaken = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o CheckHostIP=no"
    inventory = lab.write_ansible_inventory(
        tmp_path / "lab.ini", connection, ["sgon"], ssh_args=weaken if via == "inventory" else ""
    )
    extra = [f"--ssh-extra-args={weaken}"] if via != "inventory" else []
    audit = run_audit(
        tmp_path / "r",
        "--hosts=ansible://all",
        f"--ansible-inventory={inventory}",
        f"--ssh-known-hosts={known_hosts}",
        "--xennet-timeout=3",
        *extra,
        env=isolated_home,
    )
    assert [(r["host"], r["verdict"], r["message"]) for r in audit.summary["results"]] == [
        ("sgon", "error", "host key mismatch")
    ], audit.stdout + audit.stderr
    assert audit.summary["host_key_policy"] == "strict" and "host keys strict" in audit.stdout
    assert known_hosts.read_text().startswith(f"{sgon} ")  # never replaced


@pytest.mark.parametrize("scheme", ["ssh", "ansible"])
def test_options_that_add_trust_are_refused_before_any_host(lab, tmp_path, isolated_home, scheme):
    # GlobalKnownHostsFile would make OpenSSH trust the real key from a file the policy does not name.
    before = lab.sshd_events("sgon")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    trusted = "-o GlobalKnownHostsFile=" + str(lab.known_hosts)
    if scheme == "ssh":
        hosts = [
            f"--hosts={lab.spec('sgon', scheme='ssh')}",
            f"--ssh-extra-args={trusted}",
            "--ssh-config=" + str(lab.ssh_config),
        ]
        where = "--ssh-extra-args"
    else:
        pytest.importorskip("ansible", reason="ansible-core is the optional [ansible] extra")
        inventory = lab.write_ansible_inventory(tmp_path / "lab.ini", "ssh", ["sgon"], ssh_args=trusted)
        hosts = ["--hosts=ansible://all", f"--ansible-inventory={inventory}"]
        where = "inventory host sgon's ansible_ssh_common_args"
    audit = run_audit(tmp_path / "r", *hosts, f"--ssh-known-hosts={empty}", env=isolated_home)
    assert audit.returncode == 4, audit.stdout + audit.stderr
    assert f"ERROR: GlobalKnownHostsFile={lab.known_hosts} in {where} would trust host keys" in audit.stderr
    assert lab.sshd_events("sgon") == before
