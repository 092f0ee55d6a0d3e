"""Hosts that misbehave on purpose (sshd's ForceCommand): one that floods, one that trickles, one
that stops halfway. None may take the run down, hold the audit past its limits, or pass.

Each host here is an `error` with a one-line cause; the audit's memory stays bounded whatever
the timeout, because a host's output is capped (--xennet-max-output) and read as it comes.
"""

from __future__ import annotations

import concurrent.futures
import html
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import ROOT, audit_argv, lab_args, lab_targets, make_lab
from tests.lab import HostPlan, IfacePlan

LAB_INDEX = 5
PLAN = (
    HostPlan("good"),
    HostPlan("flood", force_command="exec yes"),
    HostPlan("floodstderr", force_command="exec sh -c 'yes >&2'"),
    HostPlan("trickle", force_command="exec sh -c 'while :; do echo x; sleep 0.2; done'"),
    HostPlan("truncated", force_command="printf 'XENNET-PROBE 3\\nkernel\\t6.1\\nhypervisor\\txen\\n'"),
    HostPlan("silent", silent=True),
    # Its session's sshd is killed while the client is still sending: the connection ends mid-command.
    HostPlan("dies", force_command="exec sh -c 'sleep 1; kill -9 $PPID'"),
    # Its command dies by a signal: sshd sends no exit status, and the connection stays up.
    HostPlan("killed", force_command="exec sh -c 'kill -9 $$'"),
    # Its session's sshd is stopped: the connection stays open and nothing answers on it any more.
    HostPlan("frozen", force_command="exec sh -c 'kill -STOP $PPID; sleep 60'"),
    # Its command says what a file it may not read makes cat say, then exits 255, as OpenSSH's own failures do.
    HostPlan(
        "denied",
        force_command="exec sh -c 'setpriv --reuid=65534 --regid=65534 --clear-groups cat /etc/shadow; exit 255'",
    ),
)
TIMEOUT = 8  # long: the flooding hosts must be stopped by the output cap, not by the clock


@pytest.fixture(scope="module")
def lab():
    with make_lab(PLAN, LAB_INDEX) as started:
        yield started


def audit_with_peak_rss(reports, *args):
    """Run the audit as a user would; return (completed process, peak RSS of its process tree in MiB).

    The peak is wait4()'s for this child and the processes it waited for: getrusage(RUSAGE_CHILDREN)
    would be the largest child this test process ever had (a browser, pip) whatever the audit used.
    """
    reports.mkdir(parents=True, exist_ok=True)
    argv = audit_argv(reports, *args)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err, text=True, env=dict(os.environ, COLUMNS="200"))
        watchdog = threading.Timer(300, child.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            watchdog.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it
        assert child.returncode != -signal.SIGKILL, "the audit ran past 300 s"
        out.seek(0)
        err.seek(0)
        proc = subprocess.CompletedProcess(argv, child.returncode, out.read(), err.read())
    return proc, usage.ru_maxrss / 1024


@pytest.mark.parametrize("scheme", ["paramiko", "ssh"])
def test_flooding_trickling_and_truncated_hosts_are_one_line_errors(lab, tmp_path, scheme):
    hosts = [n for n in lab.hosts if n not in ("dies", "killed", "frozen", "denied")]
    args = [a for a in lab_args(lab, hosts, scheme=scheme) if not a.startswith("--xennet-timeout")]
    extra = [f"--ssh-config={lab.ssh_config}"] if scheme == "ssh" else []
    proc, peak_mib = audit_with_peak_rss(tmp_path, *args, *extra, f"--xennet-timeout={TIMEOUT}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    names = {h.address: n for n, h in lab.hosts.items()}
    found = {
        names[r["host"]]: (r["verdict"], r["error_kind"], r["message"])
        for r in summary["results"]
        if r["interface"] is None
    }
    assert found == {
        "flood": ("error", "output-limit", "output exceeds 4194304 bytes"),
        "floodstderr": ("error", "output-limit", "output exceeds 4194304 bytes"),
        "trickle": ("error", "timeout", f"timed out running the probe (limit {TIMEOUT}s)"),
        "truncated": (
            "error",
            "probe",
            "probe output is truncated: XENNET-PROBE 3\\nkernel\\t6.1\\nhypervisor\\txen\\n",
        ),
        # One wording for both backends: the phase, and the limit.
        "silent": ("error", "timeout", f"timed out connecting (limit {TIMEOUT}s)"),
    }, proc.stdout
    # JUnit: each case's time is its host's gathering time, so the silent host's shows the timeout.
    cases = ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")
    times = {names[c.get("classname").rsplit(".", 1)[0]]: float(c.get("time")) for c in cases}
    assert times["silent"] >= TIMEOUT and times["trickle"] >= TIMEOUT and times["good"] < TIMEOUT, times
    good = [r["verdict"] for r in summary["results"] if names[r["host"]] == "good"]
    assert good == ["sg-on"] and proc.returncode == 1
    # Unbounded, one flooding host held gigabytes by its deadline; capped, it holds at most the cap.
    assert peak_mib < 200, f"peak RSS {peak_mib:.0f} MiB"


def run_unread(lab, name: str, scheme: str = "paramiko"):
    """``sh`` on host ``name`` with more input than sshd's session window (2 MiB): the client is
    still sending when a command that never reads it ends, or the connection does."""
    (target,) = lab_targets(lab, [name], scheme, timeout=TIMEOUT)
    try:
        return target.connect().run_script("sh", b"#" * (4 << 20))
    finally:
        target.close()


@pytest.mark.parametrize("scheme", ["paramiko", "ssh"])
def test_a_command_that_exits_without_reading_its_input_still_gives_its_output(lab, scheme):
    # The truncated host's command never reads the probe: a race every run can lose (the host
    # answers before the probe is sent), lost here every time. Its output is the host's answer.
    result = run_unread(lab, "truncated", scheme)
    assert (result.rc, result.stdout) == (0, b"XENNET-PROBE 3\nkernel\t6.1\nhypervisor\txen\n")


def test_a_connection_that_ends_while_the_probe_is_sent_is_the_connections_error(lab):
    # No exit status came: the connection's loss, not an empty answer with exit status -1.
    from compliance.backends import LostConnection

    with pytest.raises(LostConnection, match=r"^connection lost$"):
        run_unread(lab, "dies")


@pytest.mark.parametrize("scheme", ["paramiko", "ssh"])
def test_a_connection_that_ends_mid_command_is_a_lost_connection_not_a_probe_failure(lab, tmp_path, scheme):
    # The probe is sent whole; the host's sshd dies before the command ends. It was once
    # "probe failed (exit -1): no output", of kind probe (paramiko), and "ssh failed: Connection
    # to ADDRESS closed by remote host.", of kind ssh (OpenSSH).
    extra = [f"--ssh-config={lab.ssh_config}"] if scheme == "ssh" else []
    proc, _ = audit_with_peak_rss(tmp_path, *lab_args(lab, ["dies"], scheme=scheme), *extra)
    summary = json.loads((tmp_path / "summary.json").read_text())
    found = [(r["verdict"], r["error_kind"], r["message"]) for r in summary["results"]]
    assert found == [("error", "unreachable", "connection lost running the probe")], proc.stdout
    assert proc.returncode == 1


def test_a_command_killed_by_a_signal_is_the_probes_failure_not_a_lost_connection(lab):
    from compliance.gather import probe_host

    (target,) = lab_targets(lab, ["killed"], timeout=TIMEOUT)
    result = probe_host(target)
    assert (result.error, result.error_kind) == ("probe failed (exit -1): no output", "probe")
    # Still sending when it died (4 MiB, past sshd's window): no exit status, and no send error either.
    assert run_unread(lab, "killed").rc == -1
    # OpenSSH's client handles no exit signal: it exits 255, silent.
    (target,) = lab_targets(lab, ["killed"], "ssh", timeout=TIMEOUT, ssh_config=str(lab.ssh_config))
    result = probe_host(target)
    assert (result.error, result.error_kind) == ("ssh failed: no output", "ssh")


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ("paramiko", ("probe failed (exit 255): cat: /etc/shadow: Permission denied", "probe")),
        # OpenSSH's client cannot tell its own exit status 255 from the command's: the words are the
        # command's, and only OpenSSH's own line ("USER@HOST: Permission denied (publickey).") is auth.
        ("ssh", ("ssh failed: cat: /etc/shadow: Permission denied", "ssh")),
    ],
)
def test_a_command_that_says_permission_denied_is_not_an_authentication_failure(lab, scheme, expected):
    from compliance.gather import probe_host

    config = {"ssh_config": str(lab.ssh_config)} if scheme == "ssh" else {}
    (target,) = lab_targets(lab, ["denied"], scheme, timeout=TIMEOUT, **config)
    result = probe_host(target)
    assert (result.error, result.error_kind) == expected


def test_openssh_refusing_a_user_name_with_spaces_is_an_authentication_failure(lab):
    # OpenSSH 7.6 and later say "USER@HOST: Permission denied (...)", the user name as given.
    from compliance.backends import openssh_failure
    from compliance.gather import error_kind

    proc = subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), "-l", r"CORP\John Doe", lab.hosts["good"].address, "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 255 and "John Doe@" in proc.stderr, proc.stderr
    assert error_kind(openssh_failure(proc.stderr)) == "auth"


def test_openssh_offering_more_keys_than_sshd_tries_is_an_authentication_failure(lab, tmp_path):
    # sshd's MaxAuthTries (6 by default) ends the connection: OpenSSH prints the disconnect's reason.
    from compliance.backends import openssh_failure
    from compliance.gather import describe_error

    keys = []
    for k in range(7):
        key = tmp_path / f"wrong{k}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        keys += ["-i", str(key)]
    proc = subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), *keys, lab.hosts["good"].address, "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 255 and "Too many authentication failures" in proc.stderr, proc.stderr
    failure = openssh_failure(proc.stderr)
    assert describe_error(failure, None) == "authentication failed: Too many authentication failures", proc.stderr


def test_a_host_closed_for_its_budget_mid_command_is_a_timeout(lab):
    # As gather's watchdog closes a host that used up its budget: what the command had printed
    # by then ("x" lines) is cut short, a timeout, never the probe's failure.
    from compliance.gather import close_overdue, host_budget, probe_host

    (target,) = lab_targets(lab, ["trickle"], timeout=TIMEOUT)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(probe_host, target)
        time.sleep(2)  # the probe runs: the host trickles its lines
        close_overdue([target], time.monotonic() + host_budget(target) + 1)
        result = running.result(timeout=TIMEOUT)
    budget = f"{host_budget(target):g}"
    assert (result.error, result.error_kind) == (
        f"timed out (limit {budget}s for connecting, then the probe)",
        "timeout",
    )
    assert result.seconds < TIMEOUT  # closed at once, not at the backend's own limit


def test_the_cap_is_an_option(lab, tmp_path):
    args = [a for a in lab_args(lab, ["flood"]) if not a.startswith("--xennet-timeout")]
    proc, _ = audit_with_peak_rss(tmp_path, *args, f"--xennet-timeout={TIMEOUT}", "--xennet-max-output=65536")
    assert "output exceeds 65536 bytes" in proc.stdout, proc.stdout


# The probe runs; any later command (the workaround's) hangs: the case is in flight on a worker.
STALL = "sh -c 'if [ \"$SSH_ORIGINAL_COMMAND\" = sh ]; then exec sh; fi; exec sleep 600'"
CRASH_PLAN = (
    HostPlan("stall", (IfacePlan("eth0", sg=False),), force_command=STALL),
    *(HostPlan(f"ok{i}") for i in range(4)),
)


@pytest.fixture(scope="module")
def crash_lab():
    with make_lab(CRASH_PLAN, LAB_INDEX + 1) as started:
        yield started


def worker_talking_to(address: str, parent: int) -> int:
    """The pid of the audit's xdist worker with a connection to ``address`` (found in /proc, by ss)."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", "dst", address], capture_output=True, text=True).stdout
    pids = {int(p) for p in re.findall(r"pid=(\d+)", out)}
    children = {int(p) for p in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()}
    found = pids & children
    return found.pop() if found else 0


def test_a_killed_worker_loses_no_case_and_every_report_says_so(crash_lab, tmp_path):
    lab = crash_lab
    args = [a for a in lab_args(lab) if not a.startswith("--xennet-timeout")]
    proc = subprocess.Popen(
        audit_argv(tmp_path, *args, "--xennet-timeout=120", "--xennet-workaround=apply", "-n", "2"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    address = lab.hosts["stall"].address
    deadline = time.monotonic() + 60
    victim = 0
    while not victim and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        victim = worker_talking_to(address, proc.pid)
    assert victim, "no worker ever acted on the stalling host"
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = {(r["host"], r["interface"]): r for r in summary["results"]}
    lost = rows[(address, "eth0")]
    assert lost["verdict"] == "error" and "crashed while running this case" in lost["message"], out
    assert lost["error_kind"] == "worker-crash"
    assert summary["complete"] is False
    assert len(rows) == len(lab.hosts) and summary["counts"]["error"] == 1 and summary["counts"]["sg-on"] == 4
    # JUnit and pytest-html keep the case too, and agree with summary.json.
    cases = {c.get("classname"): c for c in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")}
    assert len(cases) == len(rows) and cases[f"{address}.eth0"].find("error") is not None
    page = (tmp_path / "report.html").read_text()
    blob = json.loads(html.unescape(re.search(r'data-jsonblob="([^"]*)"', page).group(1)))
    assert len(blob["tests"]) == len(rows) and any(f"{address}|eth0" in nodeid for nodeid in blob["tests"])
    assert "case(s) lost with a crashed worker" in out


def test_a_host_that_stops_answering_openssh_keepalives_is_a_lost_connection_that_names_nobody(lab, tmp_path):
    # OpenSSH's "Timeout, server ADDRESS not responding." (a user's ServerAliveInterval) was
    # "ssh failed: Timeout, server ADDRESS not responding.", of kind ssh: named.
    config = tmp_path / "ssh_config"
    # OpenSSH's default LogLevel (INFO) prints it; the lab's own ssh_config says ERROR, which keeps it quiet.
    keepalives = "Host *\n    ServerAliveInterval 1\n    ServerAliveCountMax 2\n    LogLevel INFO\n\n"
    config.write_text(keepalives + lab.ssh_config.read_text())
    from compliance.gather import probe_host

    (target,) = lab_targets(lab, ["frozen"], "ssh", timeout=TIMEOUT, ssh_config=str(config))
    result = probe_host(target)
    assert (result.error, result.error_kind) == (
        "connection lost running the probe: it stopped answering keepalives",
        "unreachable",
    )
    assert result.seconds < TIMEOUT  # the keepalives, ≈ 3 s, not the process's deadline
