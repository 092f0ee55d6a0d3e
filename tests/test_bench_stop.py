"""Every bench that builds a lab brings it down when it is stopped: Ctrl-C, kill, `timeout`, a CI abort.

Each bench runs as a user runs it (``python -m bench.X``) and is sent SIGTERM while one of its
clients (an audit, a floor, the probe) is running against its lab. The client must have ended
before the lab starts to come down; then no namespace, root link or process may be left, no
audit's temporary directory, and no results written.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.lab import CLIENT_MARK, _links_with_prefix, _netns_with_prefix, cleanup_prefix, processes_with, require_root

ROOT = Path(__file__).resolve().parent.parent

MARK = "XENNET_BENCH_STOP_TEST"  # in the environment of the bench, and so of everything it starts
LAB_INDEX = 14  # tests/conftest.py make_lab: the index-th /24 of XENNET_LAB_NETWORK


def lab_names() -> tuple[str, str]:
    """A prefix and network of this test's own, apart from other labs of this run and of other runs."""
    network = ipaddress.IPv4Network(os.environ.get("XENNET_LAB_NETWORK", "198.18.0.0/20"))
    return os.environ.get("XENNET_LAB_PREFIX", "xnl") + "q", str(list(network.subnets(new_prefix=24))[LAB_INDEX])


def bench_argv(module: str, prefix: str, network: str, out: Path) -> tuple[list[str], dict[str, str]]:
    """The bench's command line at a small size, and its environment: this test's lab names, and a mark."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])  # ansible
    env = dict(os.environ, PATH=path, XENNET_BENCH_PREFIX=prefix, XENNET_BENCH_NETWORK=network)
    env[MARK] = uuid.uuid4().hex
    args = {
        "run": ["--hosts", "2", "--scale", "2", "--repeat", "1"],
        "pinned": ["--hosts", "2", "--repeat", "1"],
        "case_cost": ["--hosts", "2", "--repeat", "1"],
        "bastion": ["--hosts", "2", "--repeat", "1", "--prefix", prefix, "--network", network],
        "flood_rss": ["--timeouts", "30", "--prefix", prefix, "--network", network],
        "probe_cost": ["--sizes", "300", "--repeat", "5", "--netns", f"{prefix}-probe"],
    }[module]
    return [sys.executable, "-m", f"bench.{module}", *args, "--out", str(out)], env


def inode(path: str) -> int | None:
    with contextlib.suppress(OSError):
        return os.stat(path).st_ino
    return None


def host_namespaces(prefix: str) -> dict[str, int]:
    """The lab hosts' namespaces (not the lab's park, nor probe_cost's own): name -> inode."""
    names = [n for n in _netns_with_prefix(prefix) if n not in (f"{prefix}-park", f"{prefix}-probe")]
    return {n: i for n in names if (i := inode(f"/run/netns/{n}")) is not None}


def occupied() -> set[int]:
    """The network namespaces (inodes) that some process is in."""
    return {i for ns in Path("/proc").glob("[0-9]*/ns/net") if (i := inode(str(ns))) is not None}


def clients(mark: str) -> dict[int, str]:
    """The bench's clients of its lab, and all they started (tests.lab.killed_on_stop marks them)."""
    ours = processes_with(MARK, mark)
    return {pid: cmd for pid, cmd in processes_with(CLIENT_MARK).items() if pid in ours}


def ready(module: str, running: dict[int, str]) -> bool:
    """Whether to stop the bench now. bench.bastion: once an ssh:// audit's OpenSSH clients run, in
    sessions of their own (its ControlMaster, ProxyJump's ssh), with its temporary directory."""
    if module != "bastion":
        return bool(running)
    commands = running.values()
    return any("--hosts=ssh://" in c for c in commands) and any(c.startswith("ssh ") for c in commands)


@pytest.mark.parametrize("module", ["run", "pinned", "case_cost", "bastion", "flood_rss", "probe_cost"])
def test_a_stopped_bench_ends_its_clients_then_leaves_nothing_behind(module: str, tmp_path: Path) -> None:
    reason = require_root()
    if reason:
        pytest.skip(f"the benches need root and the lab's tools: {reason}")
    if module == "pinned" and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("bench.pinned needs 2 or more usable CPUs")
    prefix, network = lab_names()
    cleanup_prefix(prefix)  # a killed run's leftovers: the prefix is this test's own
    out = tmp_path / "RESULTS.md"
    argv, env = bench_argv(module, prefix, network, out)
    mark = env[MARK]
    # The bench's and its audits' temporary files, apart from other runs' (short: ssh's sockets live there).
    env["TMPDIR"] = temporary = tempfile.mkdtemp(prefix="xnq-")
    log = tmp_path / "bench.log"
    during: dict[int, str] | None = None  # the clients alive when the lab started to come down
    with log.open("wb") as sink:
        bench = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 120
        while not ready(module, clients(mark)):
            assert bench.poll() is None, f"the bench ended before a client of its lab ran:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no client of its lab ran in 120 s:\n{log.read_text()}"
            time.sleep(0.02)
        hosts = host_namespaces(prefix)
        inodes = set(hosts.values()) | {i for i in [inode(f"/run/netns/{prefix}-probe")] if i is not None}
        bench.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 90
        while bench.poll() is None and time.monotonic() < deadline:
            if during is None and (
                len(host_namespaces(prefix)) < len(hosts)
                or set(hosts.values()) - occupied()  # a host's sshd killed: the teardown's first step
                or (module == "probe_cost" and not _netns_with_prefix(prefix))
            ):
                during = clients(mark)
            time.sleep(0.01)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        left = processes_with(MARK, mark)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        leftovers = _netns_with_prefix(prefix), _links_with_prefix(prefix)
        cleanup_prefix(prefix)
        text = log.read_text()
        audits = sorted(p.name for p in Path(temporary).glob("**/xennet-ssh-*"))
        shutil.rmtree(temporary)  # bench.pinned keeps its runs' output there, for a look
    assert bench.returncode != 0, text
    assert "KeyboardInterrupt" in text, text  # it unwound, rather than dying where it stood
    assert during is not None, f"its lab never started to come down:\n{text}"
    assert not during, f"clients still running as its lab came down: {during}"
    assert leftovers == ([], []), text
    assert not left, f"processes it started were still running: {left}"
    assert not inodes & occupied(), "processes were left in its lab's namespaces"
    assert not audits, f"an audit's temporary directory was left: {audits}"
    assert not out.exists(), "a stopped bench wrote results"
