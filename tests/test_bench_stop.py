"""Every bench that builds a lab brings it down when it is stopped: Ctrl-C, kill, `timeout`, a CI abort.

Each bench runs as a user runs it (``python -m bench.X``), is sent SIGTERM once its lab's sshds
are up, and must then leave no namespace, root link or process behind, and write no results.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.lab import _links_with_prefix, _netns_with_prefix, cleanup_prefix, require_root

ROOT = Path(__file__).resolve().parent.parent

MARK = "XENNET_BENCH_STOP_TEST"
LAB_INDEX = 14  # tests/conftest.py make_lab: the index-th /24 of XENNET_LAB_NETWORK


def lab_names() -> tuple[str, str]:
    """A prefix and network of this test's own, apart from other labs of this run and of other runs."""
    network = ipaddress.IPv4Network(os.environ.get("XENNET_LAB_NETWORK", "198.18.0.0/20"))
    return os.environ.get("XENNET_LAB_PREFIX", "xnl") + "q", str(list(network.subnets(new_prefix=24))[LAB_INDEX])


def bench_argv(module: str, prefix: str, network: str, out: Path) -> tuple[list[str], dict[str, str]]:
    """The bench's command line at its smallest size, and its environment: this test's lab names, and
    a mark that every process it starts inherits."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])  # ansible
    env = dict(os.environ, PATH=path, XENNET_BENCH_PREFIX=prefix, XENNET_BENCH_NETWORK=network)
    env[MARK] = f"{prefix}-{uuid.uuid4().hex}"
    args = {
        "run": ["--hosts", "2", "--scale", "2", "--repeat", "1"],
        "pinned": ["--hosts", "2", "--repeat", "1"],
        "case_cost": ["--hosts", "2", "--repeat", "1"],
        "bastion": ["--hosts", "2", "--repeat", "1", "--prefix", prefix, "--network", network],
        "flood_rss": ["--timeouts", "30", "--prefix", prefix, "--network", network],
        # enough interfaces that creating them outlasts the wait below
        "probe_cost": ["--sizes", "2000", "--repeat", "1", "--netns", f"{prefix}-probe"],
    }[module]
    return [sys.executable, "-m", f"bench.{module}", *args, "--out", str(out)], env


def hosts_up(prefix: str) -> bool:
    """Every host's namespace has its sshd (the lab's park has no process; probe_cost's namespace is no host's)."""
    names = _netns_with_prefix(prefix)
    if names == [f"{prefix}-probe"]:
        return True
    hosts = [n for n in names if n != f"{prefix}-park"]
    return bool(hosts) and all(
        subprocess.run(["ip", "netns", "pids", n], capture_output=True, text=True).stdout for n in hosts
    )


def namespaces(prefix: str) -> set[int]:
    """The inodes of the lab's network namespaces, by which a process in one is found after it is unnamed."""
    return {os.stat(f"/run/netns/{name}").st_ino for name in _netns_with_prefix(prefix)}


def processes_in(inodes: set[int]) -> list[str]:
    found = []
    for ns in Path("/proc").glob("[0-9]*/ns/net"):
        try:
            if os.stat(ns).st_ino in inodes:
                found.append((ns.parent.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone meanwhile
            pass
    return found


def marked(mark: str) -> dict[int, str]:
    """The live processes whose environment holds ``mark``: the bench and all it started, wherever
    they went (a session of their own, orphaned). A zombie is dead already: init reaps it."""
    found = {}
    needle = f"{MARK}={mark}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (
                needle in (proc / "environ").read_bytes().split(b"\0")
                and (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            ):
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):  # gone meanwhile
            pass
    return found


@pytest.mark.parametrize("module", ["run", "pinned", "case_cost", "bastion", "flood_rss", "probe_cost"])
def test_a_stopped_bench_leaves_nothing_behind(module: str, tmp_path: Path) -> None:
    reason = require_root()
    if reason:
        pytest.skip(f"the benches need root and the lab's tools: {reason}")
    if module == "pinned" and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("bench.pinned needs 2 or more usable CPUs")
    prefix, network = lab_names()
    cleanup_prefix(prefix)  # a killed run's leftovers: the prefix is this test's own
    out = tmp_path / "RESULTS.md"
    argv, env = bench_argv(module, prefix, network, out)
    log = tmp_path / "bench.log"
    with log.open("wb") as sink:
        bench = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 120
        while not hosts_up(prefix):
            assert bench.poll() is None, f"the bench ended before its lab was up:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"its lab was not up in 120 s:\n{log.read_text()}"
            time.sleep(0.1)
        time.sleep(0.5)  # into its work
        inodes = namespaces(prefix)
        assert bench.poll() is None, f"the bench ended before it was stopped:\n{log.read_text()}"
        bench.send_signal(signal.SIGTERM)
        bench.wait(timeout=90)
        left = marked(env[MARK])
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for pid in marked(env[MARK]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        leftovers = _netns_with_prefix(prefix), _links_with_prefix(prefix)
        cleanup_prefix(prefix)
    text = log.read_text()
    assert bench.returncode != 0, text
    assert "KeyboardInterrupt" in text, text  # it unwound, rather than dying where it stood
    assert leftovers == ([], []), text
    assert not left, f"processes it started were still running: {left}"
    assert not processes_in(inodes), "processes were left in its lab's namespaces"
    assert not out.exists(), "a stopped bench wrote results"
