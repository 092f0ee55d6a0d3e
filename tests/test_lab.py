"""Tests of the namespace SSH lab itself (tests/lab.py).  Need root."""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko
import pytest

from tests.lab import (
    CLIENT_GRACE,
    NEIGH_THRESHOLDS,
    HostPlan,
    IfacePlan,
    Lab,
    LabError,
    neighbour_limits_for,
    processes_with,
    raise_neighbour_limits,
    read_sg,
    require_root,
)

REASON = require_root()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

# Must not overlap the session lab (xnl, 198.18.0.0/20) or the benchmark
# (198.18.128.0/18): these labs may all run at the same time.
PREFIX, NETWORK = "xnt", "198.18.64.0/21"
LIFECYCLE_PREFIX, LIFECYCLE_NETWORK = "xnu", "198.18.72.0/21"

# Interface names a shell would execute.  Kernel names cannot hold "/" or
# blanks, so the payloads create marker files relative to the current directory.
MARKERS = ("xnt-pwned", "xnt-pwn2")
HOSTILE = (
    IfacePlan("$(>xnt-pwned)", mtu=1280, sg=True),
    IfacePlan("`>xnt-pwn2`", mtu=1500, sg=False),
    IfacePlan("a;b", mtu=65535, sg=False),
    IfacePlan("<b>x<b>", mtu=1500, sg=True),
    IfacePlan("a'b", mtu=576, sg=False),
)
PLAN = (
    HostPlan("plain"),
    HostPlan("multi", ifaces=(IfacePlan("eth0", mtu=9000, sg=False),) + HOSTILE),
    HostPlan("nossh", sshd=False),
    HostPlan("hang", hang=True),
    HostPlan("knobs", ifaces=(IfacePlan("eth0"), IfacePlan("eth1", mtu=1500, sg=True))),
)
SSH_HOSTS = ("plain", "multi", "knobs")

# Prints "NAME<TAB>MTU<TAB>SG" for every interface the remote host sees.
REMOTE_IFACES = (
    'cd /sys/class/net && for i in *; do printf \'%s\\t%s\\t%s\\n\' "$i" "$(cat "$i/mtu")" '
    '"$(ethtool -k "$i" | sed -n \'s/^scatter-gather: \\([a-z]*\\).*/\\1/p\')"; done'
)


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def root_bashrc() -> tuple[str, str]:
    """/root/.bashrc hash taken before any lab exists."""
    return "/root/.bashrc", sha256("/root/.bashrc")


@pytest.fixture(scope="module")
def lab(root_bashrc: tuple[str, str]) -> Iterator[Lab]:
    the_lab = Lab(PLAN, prefix=PREFIX, network=NETWORK)
    try:
        yield the_lab.start()
    finally:
        the_lab.stop()


@contextmanager
def ssh(lab: Lab, name: str) -> Iterator[paramiko.SSHClient]:
    """paramiko client with strict host key checking against lab.known_hosts."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(lab.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        lab.hosts[name].address,
        username="root",
        key_filename=str(lab.key_file),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        yield client
    finally:
        client.close()


def run(client: paramiko.SSHClient, command: str) -> str:
    _, stdout, stderr = client.exec_command(command, timeout=20)
    out = stdout.read().decode()
    assert stdout.channel.recv_exit_status() == 0, stderr.read().decode()
    return out


def remote_ifaces(client: paramiko.SSHClient) -> dict[str, tuple[int, str]]:
    rows = [line.split("\t") for line in run(client, REMOTE_IFACES).splitlines()]
    return {name: (int(mtu), sg) for name, mtu, sg in rows}


def prefixed(prefix: str) -> tuple[list[str], list[str]]:
    """(netns, root links) whose names start with PREFIX-."""
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return (
        [line.split()[0] for line in ns.splitlines() if line.startswith(prefix + "-")],
        [
            line.split(": ")[1].split("@")[0]
            for line in links.splitlines()
            if line.split(": ")[1].startswith(prefix + "-")
        ],
    )


# ---------------------------------------------------------------------------
# 1. what paramiko sees


@pytest.mark.parametrize("name", SSH_HOSTS)
def test_paramiko_sees_exactly_the_planned_interfaces(lab: Lab, name: str) -> None:
    with ssh(lab, name) as client:
        seen = remote_ifaces(client)
    planned = {i.name: (i.mtu, "on" if i.sg else "off") for i in lab.hosts[name].plan.ifaces}
    assert set(seen) == set(planned) | {"lo"}
    assert {k: v for k, v in seen.items() if k != "lo"} == planned


def test_paramiko_rejects_unknown_host_key(lab: Lab) -> None:
    client = paramiko.SSHClient()  # no host keys loaded at all
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        client.connect(
            lab.hosts["plain"].address,
            username="root",
            key_filename=str(lab.key_file),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
    client.close()


def test_ssh_session_sees_only_its_own_sys_class_net(lab: Lab) -> None:
    with ssh(lab, "plain") as client:
        assert run(client, "ls /sys/class/net").split() == ["eth0", "lo"]
        assert run(client, "ip -o -4 addr show dev eth0").split()[3] == f"{lab.hosts['plain'].address}/21"


# ---------------------------------------------------------------------------
# 2. OpenSSH client


@pytest.mark.parametrize("target", ["ip", "alias"])
def test_openssh_client_with_lab_ssh_config(lab: Lab, target: str) -> None:
    host = lab.hosts["plain"]
    dest = f"root@{host.address}" if target == "ip" else host.name
    proc = subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), dest, "hostname -I"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [host.address]


def test_openssh_client_checks_host_keys_strictly(lab: Lab) -> None:
    proc = subprocess.run(
        [
            "ssh",
            "-F",
            str(lab.ssh_config),
            "-o",
            "UserKnownHostsFile=/dev/null",
            f"root@{lab.hosts['plain'].address}",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr


def test_ssh_config_drives_paramiko_too(lab: Lab) -> None:
    opts = paramiko.SSHConfig.from_path(str(lab.ssh_config)).lookup("multi")
    assert opts["hostname"] == lab.hosts["multi"].address
    assert (opts["user"], opts["stricthostkeychecking"], opts["batchmode"]) == ("root", "yes", "yes")
    client = paramiko.SSHClient()
    client.load_host_keys(opts["userknownhostsfile"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        opts["hostname"],
        username=opts["user"],
        key_filename=opts["identityfile"][0],
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    try:
        assert run(client, "cat /sys/class/net/eth0/mtu").strip() == "9000"
    finally:
        client.close()


# ---------------------------------------------------------------------------
# 3. shell startup files


def test_bashrc_is_empty_inside_hosts_only(lab: Lab, root_bashrc: tuple[str, str]) -> None:
    with ssh(lab, "plain") as client:
        assert run(client, "wc -c < ~/.bashrc").strip() == "0"
        assert run(client, "echo $HOME").strip() == "/root"
    path, digest = root_bashrc
    assert sha256(path) == digest
    assert Path(path).stat().st_size > 0
    mountpoints = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    assert path not in mountpoints
    # lab.exec sees the same private mounts as the ssh sessions.
    assert lab.exec("plain", ["wc", "-c", path]).stdout.split()[0] == "0"


# ---------------------------------------------------------------------------
# 4. unreachable and hanging hosts


def test_host_without_sshd_refuses_connections(lab: Lab) -> None:
    host = lab.hosts["nossh"]
    addrs = lab.exec("nossh", ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
    assert f"{host.address}/" in addrs
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host.address, 22), timeout=5).close()


def test_hanging_host_accepts_auth_but_commands_hang(lab: Lab) -> None:
    with ssh(lab, "hang") as client:
        _, stdout, _ = client.exec_command("echo hi")
        chan = stdout.channel
        readable, _, _ = select.select([chan], [], [], 2.0)
        assert readable == [] and not chan.recv_ready()
        assert not chan.exit_status_ready()
        pids = lab.exec("plain", ["ip", "netns", "pids", lab.hosts["hang"].netns]).stdout.split()
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in pids]
        assert [b"sleep", b"3600", b""] in cmdlines


# ---------------------------------------------------------------------------
# 5. hostile interface names


def test_hostile_interface_names_exist_verbatim_and_never_ran(lab: Lab) -> None:
    expected = {i.name for i in PLAN[1].ifaces} | {"lo"}
    assert set(lab.exec("multi", ["ls", "/sys/class/net"]).stdout.split()) == expected
    with ssh(lab, "multi") as client:
        assert set(run(client, "ls /sys/class/net").split()) == expected
    for iface in HOSTILE:
        out = lab.exec("multi", ["cat", f"/sys/class/net/{iface.name}/mtu"]).stdout
        assert int(out) == iface.mtu
    places = {Path.cwd(), Path("/root"), Path("/"), Path("/tmp"), lab.key_file.parent}
    assert [p / m for p in places for m in MARKERS if (p / m).exists()] == []


# ---------------------------------------------------------------------------
# 7. runtime knobs change real kernel state


def test_set_sg_and_set_mtu_change_kernel_state(lab: Lab) -> None:
    try:
        lab.set_sg("knobs", "eth1", False)
        lab.set_mtu("knobs", "eth1", 4000)
        assert read_sg(lab.exec("knobs", ["ethtool", "-k", "eth1"]).stdout) is False
        assert lab.exec("knobs", ["cat", "/sys/class/net/eth1/mtu"]).stdout.strip() == "4000"
        with ssh(lab, "knobs") as client:
            assert remote_ifaces(client)["eth1"] == (4000, "off")
        lab.set_sg("knobs", "eth1", True)
        assert read_sg(lab.exec("knobs", ["ethtool", "-k", "eth1"]).stdout) is True
        with pytest.raises(LabError):
            lab.set_mtu("knobs", "eth1", 100000)  # above the veth maximum
    finally:
        lab.set_sg("knobs", "eth1", True)
        lab.set_mtu("knobs", "eth1", 1500)


# ---------------------------------------------------------------------------
# ansible inventory


def test_ansible_inventory(lab: Lab, tmp_path: Path) -> None:
    inv = lab.write_ansible_inventory(tmp_path / "inv.ini", connection="ssh", names=["plain", "multi"])
    lines = inv.read_text().splitlines()
    assert lines[0] == "[lab]"
    assert lines[1].startswith(
        f"plain ansible_host={lab.hosts['plain'].address} ansible_user=root "
        f"ansible_connection=ssh ansible_ssh_private_key_file={lab.key_file}"
    )
    assert f"ansible_ssh_common_args='-F {lab.ssh_config}'" in lines[1]
    assert len(lines) == 3
    if shutil.which("ansible") is None:
        pytest.skip("ansible not installed; inventory text checked only")
    proc = subprocess.run(
        ["ansible", "-i", str(inv), "plain", "-m", "raw", "-a", "cat /sys/class/net/eth0/mtu"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CHANGED" in proc.stdout and "1500" in proc.stdout


# ---------------------------------------------------------------------------
# 6. lifecycle: leftovers, failure, teardown, coexistence


def test_start_cleans_leftovers_and_stop_removes_everything(lab: Lab) -> None:
    # Simulate a SIGKILLed earlier run: namespaces with a process inside, links.
    subprocess.run(["ip", "netns", "add", f"{LIFECYCLE_PREFIX}-h000"], check=True)
    subprocess.run(["ip", "netns", "add", f"{LIFECYCLE_PREFIX}-stale"], check=True)
    subprocess.run(["ip", "link", "add", f"{LIFECYCLE_PREFIX}-br", "type", "bridge"], check=True)
    subprocess.run(
        ["ip", "link", "add", f"{LIFECYCLE_PREFIX}-v9", "type", "veth", "peer", "name", f"{LIFECYCLE_PREFIX}-q9"],
        check=True,
    )
    squatter = subprocess.Popen(["ip", "netns", "exec", f"{LIFECYCLE_PREFIX}-stale", "sleep", "600"])
    stale_workdir = Path(f"/tmp/{LIFECYCLE_PREFIX}-lab-stale")
    (stale_workdir / "hosts").mkdir(parents=True, exist_ok=True)
    (stale_workdir / "empty").touch()
    plan = [HostPlan("a"), HostPlan("b", ifaces=(IfacePlan("eth0"), IfacePlan("x", sg=False)))]
    second = Lab(plan, prefix=LIFECYCLE_PREFIX, network=LIFECYCLE_NETWORK)
    try:
        second.start()
        assert squatter.wait(timeout=10) == -9
        assert not stale_workdir.exists()
        ns, links = prefixed(LIFECYCLE_PREFIX)
        assert sorted(ns) == ["xnu-h000", "xnu-h001", "xnu-park"]
        assert sorted(links) == ["xnu-br", "xnu-v0", "xnu-v1"]
        with ssh(second, "b") as client:
            assert set(run(client, "ls /sys/class/net").split()) == {"eth0", "x", "lo"}
        sshd_pids = [p.pid for p in second._sshd.values()]
        workdir = second.key_file.parent
    finally:
        second.stop()
        squatter.kill()
    assert prefixed(LIFECYCLE_PREFIX) == ([], [])
    assert not any(Path(f"/proc/{pid}").exists() for pid in sshd_pids)
    assert not workdir.exists()
    second.stop()  # idempotent
    assert prefixed(LIFECYCLE_PREFIX) == ([], [])
    with second, ssh(second, "a") as client:  # the same Lab object can be started again
        assert run(client, "echo again").strip() == "again"
    assert prefixed(LIFECYCLE_PREFIX) == ([], [])
    # The other lab, running concurrently, was not touched.
    with ssh(lab, "plain") as client:
        assert run(client, "echo ok").strip() == "ok"


def test_failed_start_tears_down_what_it_built() -> None:
    bad = Lab(
        [HostPlan("a"), HostPlan("b", ifaces=(IfacePlan("eth0", mtu=100000),))],
        prefix=LIFECYCLE_PREFIX,
        network=LIFECYCLE_NETWORK,
    )
    with pytest.raises(LabError):
        bad.start()
    assert prefixed(LIFECYCLE_PREFIX) == ([], [])
    assert bad.workdir is None


def test_context_manager_and_caller_workdir_is_kept(tmp_path: Path) -> None:
    with Lab([HostPlan("solo")], prefix=LIFECYCLE_PREFIX, network=LIFECYCLE_NETWORK, workdir=tmp_path) as solo:
        assert solo.key_file.parent == tmp_path.resolve()
        with ssh(solo, "solo") as client:
            assert run(client, "echo ok").strip() == "ok"
    assert prefixed(LIFECYCLE_PREFIX) == ([], [])
    assert (tmp_path / "known_hosts").exists()


def test_overlapping_network_is_refused(lab: Lab) -> None:
    clash = Lab([HostPlan("a")], prefix="xnv", network="198.18.64.0/24")
    with pytest.raises(LabError, match="overlaps"):
        clash.start()
    assert prefixed("xnv") == ([], [])
    with ssh(lab, "plain") as client:
        assert run(client, "echo ok").strip() == "ok"


@pytest.mark.parametrize(
    "plan",
    [
        [HostPlan("a", ifaces=(IfacePlan("sixteen-bytes-xx"),))],
        [HostPlan("a", ifaces=(IfacePlan("a b"),))],
        [HostPlan("a", ifaces=(IfacePlan("a/b"),))],
        [HostPlan("a", ifaces=(IfacePlan("eth0"), IfacePlan("eth0")))],
        [HostPlan("a"), HostPlan("a")],
    ],
)
def test_invalid_plans_are_rejected_before_touching_anything(plan: list[HostPlan]) -> None:
    with pytest.raises(ValueError):
        Lab(plan, prefix=LIFECYCLE_PREFIX, network=LIFECYCLE_NETWORK)


def test_too_many_hosts_for_network() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        Lab([HostPlan(f"h{i}") for i in range(250)], prefix="xnv", network="198.18.80.0/24")


def test_hang_host_still_authenticates_quickly(lab: Lab) -> None:
    # Earlier hung sessions must not block new ones (MaxSessions/MaxStartups).
    start = time.monotonic()
    with ssh(lab, "hang") as client:
        assert client.get_transport() is not None and client.get_transport().is_authenticated()
    assert time.monotonic() - start < 5


def allowed_cpus(client: paramiko.SSHClient) -> set[int]:
    """The CPUs a command the host's sshd starts may run on (its Cpus_allowed_list, e.g. ``0-1,3``)."""
    listed = run(client, "sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status").strip()
    cpus: set[int] = set()
    for part in listed.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning the hosts apart needs two CPUs")
def test_pin_keeps_the_hosts_and_what_they_start_on_their_cpus(lab: Lab) -> None:
    """bench/pinned.py's lab: sshd's later sessions and their commands inherit the hosts' CPUs."""
    with ssh(lab, "plain") as client:
        before = allowed_cpus(client)
    assert len(before) > 1  # the hosts start with the test's CPUs: pinning them to one must show
    theirs = min(before)
    lab.pin({theirs})
    try:
        with ssh(lab, "plain") as client:
            assert allowed_cpus(client) == {theirs}
    finally:
        lab.pin(before)
    with ssh(lab, "plain") as client:
        assert allowed_cpus(client) == before


def test_neighbour_table_fits_the_lab(lab: Lab) -> None:
    """A 1,000-host lab overflows the default ARP table (1,024 entries); the lab raises it."""
    got = tuple(int(p.read_text()) for p in NEIGH_THRESHOLDS)
    assert all(g >= n for g, n in zip(got, neighbour_limits_for(len(lab.plan))))
    assert neighbour_limits_for(1000)[2] > 2 * 1000  # room for a bench lab of 1,000 hosts


def test_neighbour_limits_are_never_lowered(lab: Lab) -> None:
    before = tuple(int(p.read_text()) for p in NEIGH_THRESHOLDS)
    assert all(b > n for b, n in zip(before, neighbour_limits_for(0)))  # the lab raised them above this
    raise_neighbour_limits(0)
    assert tuple(int(p.read_text()) for p in NEIGH_THRESHOLDS) == before


STOPPED_CLIENT = """
import sys, time
from tests.lab import killed_on_stop, stop_signals_interrupt
stop_signals_interrupt()
# a client that ignores SIGTERM and leaves a process in a session of its own
with killed_on_stop(["sh", "-c", "trap '' TERM; setsid sleep 300 & sleep 300"]) as proc:
    print("running", flush=True)
    proc.wait()
"""


@pytest.mark.parametrize("stops", [1, 2], ids=["stopped", "stopped twice"])
def test_a_stopped_client_ends_with_all_it_started(tmp_path: Path, stops: int) -> None:
    """killed_on_stop: SIGTERM and a grace, cut short by a second stop; then SIGKILL to everything the
    client started, found by its environment mark, before the stop goes on. No root needed."""
    mark = f"XENNET_TEST_{os.getpid()}_{stops}"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), **{mark: "1"})
    caller = subprocess.Popen(
        [sys.executable, "-c", STOPPED_CLIENT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert caller.stdout is not None and caller.stdout.readline() == "running\n", caller.stderr
        deadline = time.monotonic() + 10
        while len(processes_with(mark)) < 4:  # the caller, sh, and both sleeps
            assert time.monotonic() < deadline, processes_with(mark)
            time.sleep(0.02)
        started = time.monotonic()
        caller.send_signal(signal.SIGTERM)
        if stops == 2:
            time.sleep(0.5)
            caller.send_signal(signal.SIGINT)
        _, err = caller.communicate(timeout=CLIENT_GRACE + 15)
        took = time.monotonic() - started
    finally:
        for pid in processes_with(mark):
            os.kill(pid, signal.SIGKILL)
    assert "KeyboardInterrupt" in err, err
    assert processes_with(mark) == {}, "the client, or what it started, outlived the stop"
    if stops == 1:
        assert took >= CLIENT_GRACE - 1, f"{took:.1f} s: no grace for a client that ignores SIGTERM"
    else:
        assert took < CLIENT_GRACE - 2, f"{took:.1f} s: the second stop did not cut the grace short"
