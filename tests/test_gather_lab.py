"""Gathering, in this process, against the lab's real SSH hosts."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from compliance import gather as gather_module
from compliance.backends import ParamikoBackend
from compliance.gather import gather, probe_host
from tests.conftest import LAB_TIMEOUT, ROOT, lab_targets, live_children

REACHABLE = ["sgon", "multi", "exposed"]


def established_to(lab) -> list[str]:
    out = subprocess.run(["ss", "-Htn", "state", "established"], capture_output=True, text=True, check=True).stdout
    addresses = {f"{h.address}:22" for h in lab.hosts.values()}
    return [line for line in out.splitlines() if any(a in line.split() for a in addresses)]


def test_one_login_and_one_command_per_host_and_every_connection_closed(lab):
    before = {n: lab.sshd_events(n) for n in REACHABLE}
    fds = len(os.listdir("/proc/self/fd"))
    results = gather(lab_targets(lab, REACHABLE), workers=2)
    assert [r.error for r in results] == [None, None, None]
    assert {n: lab.sshd_events(n) for n in REACHABLE} == {n: (b[0] + 1, b[1] + 1) for n, b in before.items()}
    assert established_to(lab) == []
    assert len(os.listdir("/proc/self/fd")) == fds


def test_progress_counts_every_host(lab):
    seen = []
    gather(lab_targets(lab, REACHABLE + ["dead"]), workers=2, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_refused_authentication_is_one_line(lab, tmp_path):
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (result,) = gather(lab_targets(lab, ["sgon"], ssh_identity_file=str(key)))
    assert result.error == "authentication failed"


def test_unknown_host_key_is_refused(lab, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    (result,) = gather(lab_targets(lab, ["sgon"], known_hosts=str(empty)))
    if result.error is None:
        pytest.skip("~/.ssh/known_hosts already trusts the lab's host key")
    assert result.error == "host key is not in known_hosts (add it, or pass --ssh-known-hosts FILE)"
    assert result.error_kind == "host-key"


def test_openssh_backend_bounds_a_hung_command(lab):
    (result,) = gather(lab_targets(lab, ["hung"], scheme="ssh", ssh_config=str(lab.ssh_config)))
    # One wording for both backends: the phase and the limit.
    assert result.error == f"timed out running the probe (limit {LAB_TIMEOUT}s)"


def test_paramiko_sets_tcp_nodelay_and_closes(lab):
    (target,) = lab_targets(lab, ["sgon"])
    backend = target.connect()
    assert isinstance(backend, ParamikoBackend)
    assert backend.run("true").rc == 0
    sock = backend.client.get_transport().sock
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    backend.close()
    assert "client" not in backend.__dict__ and sock.fileno() == -1


def test_probe_host_over_openssh_matches_paramiko(lab):
    (via_paramiko,) = lab_targets(lab, ["multi"])
    (via_ssh,) = lab_targets(lab, ["multi"], scheme="ssh", ssh_config=str(lab.ssh_config))
    assert probe_host(via_paramiko).facts == probe_host(via_ssh).facts


@pytest.mark.parametrize("scheme", ["paramiko", "ssh"])
def test_an_address_with_no_host_is_no_route_and_never_named(lab, scheme):
    # On the lab's bridge, where nothing answers ARP for it: the kernel says EHOSTUNREACH after ~3 s.
    # OpenSSH once made it "OSError: ssh: connect to host ADDRESS port 22: No route to host".
    nobody = str(lab.network.broadcast_address - 1)
    assert nobody not in {h.address for h in lab.hosts.values()}
    from compliance.targets import expand

    (target,) = expand([f"{scheme}://root@{nobody}"], known_hosts=str(lab.known_hosts), timeout=15).targets
    fds = len(os.listdir("/proc/self/fd"))
    result = probe_host(target)
    assert (result.error, result.error_kind) == ("No route to host", "unreachable")
    # ssh's pipes are closed with the failure, not when its traceback's cycle is collected.
    assert len(os.listdir("/proc/self/fd")) == fds


# Lab hosts that answer quickly: enough for a process to have hosts left to share after a window.
QUICK = ["sgon", "jumbo", "exposed", "bigmtu", "below", "mixed", "plain1", "plain2", "plain3", "multi"]


def facts_of(results):
    return [(r.host, r.facts, r.error) for r in results]


def my_children() -> set[int]:
    """This process's children still running: the lab's sshds among them."""
    return set(live_children(os.getpid()))


@pytest.fixture
def leaves_nothing(lab):
    """Gathering leaves no process, thread, file descriptor or connection behind."""
    fds, threads, children = len(os.listdir("/proc/self/fd")), threading.active_count(), my_children()
    frozen = gc.get_freeze_count()
    yield
    assert my_children() == children
    assert gc.get_freeze_count() == frozen  # forking froze the heap; a caller gets it back as it was
    assert (len(os.listdir("/proc/self/fd")), threading.active_count()) == (fds, threads)
    assert established_to(lab) == []


def test_a_spare_process_joins_when_the_client_is_busy_with_the_same_results(lab, monkeypatch, leaves_nothing):
    # The progress callback runs in gathering's own process: burning CPU there makes the client
    # the limit, as a fleet of fast hosts does. Nothing is faked: the window measures the real CPU
    # (busy=0.3 of a core, so that a loaded test machine still counts as busy).
    monkeypatch.setattr(gather_module, "BUSY_WINDOW", 0.3)
    serial = gather(lab_targets(lab, QUICK), workers=1)
    before = {n: lab.sshd_events(n) for n in QUICK}
    said: list[str] = []

    def burn(done: int, total: int) -> None:
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            pass

    spread = gather(lab_targets(lab, QUICK), workers=2, progress=burn, spare=1, say=said.append, busy=0.3)
    assert facts_of(spread) == facts_of(serial)
    assert {n: lab.sshd_events(n) for n in QUICK} == {n: (b[0] + 1, b[1] + 1) for n, b in before.items()}
    assert any(line.startswith("gathering: the client's CPU is the limit") for line in said), said
    (counts,) = [line for line in said if line.startswith("gathered by 2 processes: ")]
    mine, theirs = (
        int(n) for n in counts.removeprefix("gathered by 2 processes: ").removesuffix(" hosts").split(" + ")
    )
    assert mine + theirs == len(QUICK) and theirs > 0, said


def test_a_spare_process_stays_out_while_the_hosts_are_the_limit(lab, monkeypatch, leaves_nothing):
    monkeypatch.setattr(gather_module, "BUSY_WINDOW", 0.3)
    said: list[str] = []
    spares: list[int] = []
    lab_processes = my_children()
    results = gather(
        lab_targets(lab, QUICK),
        workers=1,
        spare=1,
        say=said.append,
        progress=lambda *_: spares.append(len(my_children() - lab_processes)),
    )
    assert [r.error for r in results] == [None] * len(QUICK)
    assert set(spares) == {1}  # the spare stood by throughout...
    assert said == []  # ... and this process gathered every host: nothing to tell


def test_explicit_processes_share_the_hosts_from_the_start(lab, leaves_nothing):
    said: list[str] = []
    results = gather(lab_targets(lab, QUICK), workers=4, processes=2, say=said.append)
    assert [r.error for r in results] == [None] * len(QUICK)
    (counts,) = said
    assert counts.startswith("gathered by 2 processes: "), said


def test_a_gathering_process_ends_when_its_parent_is_killed(lab, tmp_path):
    # Two processes: sgon (dealt first) stays in the parent, hung goes to the child, which waits on it.
    script = tmp_path / "gather.py"
    script.write_text(
        "import os, sys\n"
        "from compliance.gather import gather\n"
        "from compliance.targets import expand\n"
        f"targets = expand({[lab.spec('sgon'), lab.spec('hung')]!r}, ssh_identity_file={str(lab.key_file)!r},\n"
        f"    known_hosts={str(lab.known_hosts)!r}, timeout=600).targets\n"
        "gather(targets, workers=2, processes=2, progress=lambda done, total: print(done, flush=True))\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "1\n"  # sgon is done; hung is not
        (child,) = live_children(parent.pid)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{child}").exists(), "the gathering process outlived its parent"
    finally:
        parent.kill()
        parent.wait()
