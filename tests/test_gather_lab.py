"""Gathering, in this process, against the lab's real SSH hosts."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from compliance import gather as gather_module
from compliance.backends import ParamikoBackend
from compliance.gather import gather, probe_host
from tests.conftest import LAB_TIMEOUT, lab_targets

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


# Lab hosts that answer quickly: enough for a process to have hosts left to share after a window.
QUICK = ["sgon", "jumbo", "exposed", "bigmtu", "below", "mixed", "plain1", "plain2", "plain3", "multi"]


def facts_of(results):
    return [(r.host, r.facts, r.error) for r in results]


def test_a_spare_process_joins_when_the_client_is_busy_with_the_same_results(lab, monkeypatch):
    # The progress callback runs in gathering's own process: burning CPU there makes the client
    # the limit, as a fleet of fast hosts does. Nothing is faked: the window measures the real CPU.
    monkeypatch.setattr(gather_module, "BUSY_WINDOW", 0.3)
    serial = gather(lab_targets(lab, QUICK), workers=1)
    before = {n: lab.sshd_events(n) for n in QUICK}
    said: list[str] = []

    def burn(done: int, total: int) -> None:
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            pass

    spread = gather(lab_targets(lab, QUICK), workers=2, progress=burn, spare=1, say=said.append)
    assert facts_of(spread) == facts_of(serial)
    assert {n: lab.sshd_events(n) for n in QUICK} == {n: (b[0] + 1, b[1] + 1) for n, b in before.items()}
    assert any(line.startswith("gathering: the client's CPU is the limit") for line in said), said
    (counts,) = [line for line in said if line.startswith("gathered by 2 processes: ")]
    mine, theirs = (
        int(n) for n in counts.removeprefix("gathered by 2 processes: ").removesuffix(" hosts").split(" + ")
    )
    assert mine + theirs == len(QUICK) and theirs > 0, said
    assert established_to(lab) == []


def test_a_spare_process_stays_out_while_the_hosts_are_the_limit(lab, monkeypatch):
    monkeypatch.setattr(gather_module, "BUSY_WINDOW", 0.3)
    said: list[str] = []
    results = gather(lab_targets(lab, QUICK), workers=1, spare=1, say=said.append)
    assert [r.error for r in results] == [None] * len(QUICK)
    assert said == []  # one process gathered every host: nothing to tell


def test_explicit_processes_share_the_hosts_from_the_start(lab):
    said: list[str] = []
    results = gather(lab_targets(lab, QUICK), workers=4, processes=2, say=said.append)
    assert [r.error for r in results] == [None] * len(QUICK)
    (counts,) = said
    assert counts.startswith("gathered by 2 processes: "), said
