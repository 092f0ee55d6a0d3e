"""Fleets behind bastions, against the lab: hosts reachable only through a lab bastion.

Each host planned ``behind`` a bastion has no link but one into the bastion's namespace, so
every verdict here proves the route. A lab of its own (index 9), read-only; the test that
kills a bastion gets a fresh one (index 10). Both backends, run as a user runs the audit.
"""

from __future__ import annotations

import contextlib
import glob
import os
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from compliance.gather import close_bastions
from compliance.probe import PROBE_COMMAND, PROBE_INPUT, parse_probe
from tests.conftest import LAB_TIMEOUT, ROOT, audit_argv, lab_targets, make_lab, run_audit
from tests.lab import SILENT_ACCEPTED, HostPlan, IfacePlan

LAB_INDEX = 9
SCHEMES = ["paramiko", "ssh"]
STATES = (  # sg-on, susceptible, jumbo-mtu
    (IfacePlan("eth0"),),
    (IfacePlan("eth0", mtu=1500, sg=False),),
    (IfacePlan("eth0", mtu=9001, sg=False),),
)
WEB = [f"web{i}" for i in range(1, 9)]
PLAN = (
    # MaxSessions 1: hosts are forwarding channels on the one connection, not sessions.
    HostPlan("bastion", sshd_options=("MaxSessions 1",)),
    *(HostPlan(name, STATES[i % 3], behind="bastion") for i, name in enumerate(WEB)),
    HostPlan("gone", behind="bastion", sshd=False),  # down, behind a bastion that is up
    HostPlan("direct"),
    # A chain: outer (port 2222) -> inner -> deep.
    HostPlan("outer", port=2222),
    HostPlan("inner", behind="outer"),
    HostPlan("deep", STATES[2], behind="inner"),
    HostPlan("down", sshd=False),
    HostPlan("orphan", behind="down"),
    HostPlan("mute", silent=True),  # accepts, never says a word
    HostPlan("muted1", behind="mute"),
    HostPlan("muted2", behind="mute"),
    HostPlan("gate", sshd_options=("AllowTcpForwarding no",)),
    HostPlan("fenced", behind="gate"),
    # Full as soon as one connection has not logged in yet.
    HostPlan("crowded", sshd_options=("MaxStartups 1:100:1",)),
    HostPlan("crowd", behind="crowded"),
)
VERDICT = {0: "sg-on", 1: "susceptible", 2: "jumbo-mtu"}


def verdict_of(plan: HostPlan) -> str:
    (iface,) = plan.ifaces
    return "sg-on" if iface.sg else ("jumbo-mtu" if iface.mtu >= 9001 else "susceptible")


@pytest.fixture(scope="module")
def lab():
    with make_lab(PLAN, LAB_INDEX) as started:
        yield started


@pytest.fixture
def home(tmp_path):
    """A HOME with an empty ~/.ssh: only what a test names is read (no ~/.ssh/config, no known_hosts)."""
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    return {"HOME": str(tmp_path / "home")}


def addr(lab, name):
    return lab.hosts[name].address


def write_config(lab, path, text):
    path.write_text(text.format(**{name: host.address for name, host in lab.hosts.items()}))
    return path


def usual_config(lab, path):
    """An ssh_config of the usual kind: everything but the bastion jumps through it; one host says
    ``ProxyJump none``; and a careless ``StrictHostKeyChecking no`` that must change nothing."""
    return write_config(
        lab,
        path,
        "Host {direct}\n    ProxyJump none\n\n"
        "Host * !{bastion}\n    ProxyJump root@{bastion}\n\n"
        "Host *\n    StrictHostKeyChecking no\n",
    )


def audit(lab, tmp_path, env, names, scheme, *extra, known_hosts=None, timeout=LAB_TIMEOUT):
    return run_audit(
        tmp_path / f"r{time.monotonic_ns()}",
        "--hosts=" + ",".join(lab.spec(n, scheme) for n in names),
        f"--ssh-identity-file={lab.key_file}",
        f"--ssh-known-hosts={known_hosts or lab.known_hosts}",
        f"--xennet-timeout={timeout}",
        "--xennet-scope=all",
        *extra,
        env=env,
    )


def rows(lab, run):
    names = {h.address: n for n, h in lab.hosts.items()}
    return {names.get(r["host"], r["host"]): r for r in run.summary["results"]}


def logins(lab, names):
    return {n: len(lab.logins_from(n)) for n in names}


def control_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "xennet-ssh-*")))


def masters_running():
    """The command lines of running OpenSSH masters in a control directory of the suite's (from /proc)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if (
            argv[0] == "ssh"
            and "ControlMaster=yes" in argv
            and any(a.startswith("ControlPath=/tmp/xennet-ssh-") for a in argv)
        ):
            found.append(argv)
    return found


def forged(lab, tmp_path, name, key_of):
    """The lab's known_hosts with ``name``'s line holding ``key_of``'s key."""
    lines = lab.known_hosts.read_text().splitlines()
    other = next(line for line in lines if line.split()[0] == lab.known_hosts_name(key_of)).split(None, 1)[1]
    text = "".join(
        (f"{lab.known_hosts_name(name)} {other}" if line.split()[0] == lab.known_hosts_name(name) else line) + "\n"
        for line in lines
    )
    path = tmp_path / "known_hosts"
    path.write_text(text)
    return path


def test_hosts_behind_a_bastion_cannot_be_reached_directly(lab):
    with socket.socket() as sock, pytest.raises(OSError):
        sock.settimeout(5)
        sock.connect((addr(lab, "web1"), 22))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_hosts_behind_a_bastion_get_their_verdicts_over_one_login_to_it(lab, tmp_path, home, scheme):
    config = usual_config(lab, tmp_path / "ssh_config")
    dirs = control_dirs()
    before = logins(lab, ["bastion", *WEB, "direct"])
    run = audit(lab, tmp_path, home, [*WEB, "direct"], scheme, f"--ssh-config={config}", "--xennet-workers=16")
    got = rows(lab, run)
    assert {n: got[n]["verdict"] for n in WEB} == {n: verdict_of(lab.hosts[n].plan) for n in WEB}, run.stdout
    assert got["direct"]["verdict"] == "sg-on"
    after = logins(lab, ["bastion", *WEB, "direct"])
    assert after["bastion"] - before["bastion"] == 1  # one shared connection for 8 hosts
    for name in WEB:
        assert after[name] - before[name] == 1 and lab.logins_from(name)[-1] == addr(lab, "bastion"), name
    # ProxyJump none: reached from here, not through the bastion (which could reach it too).
    assert lab.logins_from("direct")[-1] == str(lab.network.network_address + 1)
    assert control_dirs() == dirs and masters_running() == []  # the ControlMaster ended with the run


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("form", ["-J {jump}", "-o ProxyJump={jump}", "ssh_config"])
def test_a_chain_of_bastions_with_a_port(lab, tmp_path, home, scheme, form):
    jump = f"root@{addr(lab, 'outer')}:2222,root@{addr(lab, 'inner')}"
    if form == "ssh_config":
        # The inner bastion's own ProxyJump is followed, as OpenSSH does.
        config = write_config(
            lab,
            tmp_path / "ssh_config",
            "Host {inner}\n    ProxyJump root@{outer}:2222\nHost {deep}\n    ProxyJump root@{inner}\n",
        )
        extra = [f"--ssh-config={config}"]
    else:
        extra = ["--ssh-extra-args=" + form.format(jump=jump)]  # as an Ansible user writes it
    before = logins(lab, ["outer", "inner", "deep"])
    run = audit(lab, tmp_path, home, ["deep"], scheme, *extra)
    assert rows(lab, run)["deep"]["verdict"] == "jumbo-mtu", run.stdout
    after = logins(lab, ["outer", "inner", "deep"])
    assert {n: after[n] - before[n] for n in after} == {"outer": 1, "inner": 1, "deep": 1}
    assert lab.logins_from("inner")[-1] == addr(lab, "outer") and lab.logins_from("deep")[-1] == addr(lab, "inner")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_changed_host_key_behind_a_bastion_is_refused(lab, tmp_path, home, scheme):
    config = usual_config(lab, tmp_path / "ssh_config")
    known_hosts = forged(lab, tmp_path, "web1", key_of="web2")
    run = audit(lab, tmp_path, home, ["web1", "web2"], scheme, f"--ssh-config={config}", known_hosts=known_hosts)
    got = rows(lab, run)
    assert (got["web1"]["verdict"], got["web1"]["error_kind"], got["web1"]["message"]) == (
        "error", "host-key", "host key mismatch"
    )  # fmt: skip
    assert got["web2"]["verdict"] == "susceptible"


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_a_changed_bastion_key_is_refused_and_never_replaced(lab, tmp_path, home, scheme, policy):
    config = usual_config(lab, tmp_path / "ssh_config")  # with StrictHostKeyChecking no, ignored
    known_hosts = forged(lab, tmp_path, "bastion", key_of="direct")
    text = known_hosts.read_text()
    before = logins(lab, ["bastion"])
    run = audit(
        lab, tmp_path, home, ["web1", "web2", "direct"], scheme, f"--ssh-config={config}",
        f"--ssh-host-key-policy={policy}", known_hosts=known_hosts,
    )  # fmt: skip
    got = rows(lab, run)
    for name in ("web1", "web2"):
        assert (got[name]["error_kind"], got[name]["message"]) == (
            "bastion", f"bastion root@{addr(lab, 'bastion')}: host key mismatch"
        ), run.stdout  # fmt: skip
    assert got["direct"]["verdict"] == "sg-on"
    assert logins(lab, ["bastion"]) == before and known_hosts.read_text() == text


@pytest.mark.parametrize("scheme", SCHEMES)
def test_an_unknown_bastion_is_refused_and_recorded_only_under_accept_new(lab, tmp_path, home, scheme):
    config = usual_config(lab, tmp_path / "ssh_config")
    web1 = next(line for line in lab.known_hosts.read_text().splitlines() if line.split()[0] == addr(lab, "web1"))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(web1 + "\n")
    strict = audit(lab, tmp_path, home, ["web1"], scheme, f"--ssh-config={config}", known_hosts=known_hosts)
    assert rows(lab, strict)["web1"]["message"] == (
        f"bastion root@{addr(lab, 'bastion')}: host key is not in known_hosts (add it, or pass --ssh-known-hosts FILE)"
    )
    assert known_hosts.read_text() == web1 + "\n"
    new = audit(
        lab, tmp_path, home, ["web1"], scheme, f"--ssh-config={config}", "--ssh-host-key-policy=accept-new",
        known_hosts=known_hosts,
    )  # fmt: skip
    assert rows(lab, new)["web1"]["verdict"] == "sg-on", new.stdout
    bastion = next(line for line in lab.known_hosts.read_text().splitlines() if line.split()[0] == addr(lab, "bastion"))
    assert sorted(known_hosts.read_text().splitlines()) == sorted([web1, bastion])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_dead_bastion_is_named(lab, tmp_path, home, scheme):
    extra = f"--ssh-extra-args=-o ProxyJump=root@{addr(lab, 'down')}"
    run = audit(lab, tmp_path, home, ["orphan"], scheme, extra)
    row = rows(lab, run)["orphan"]
    assert (row["error_kind"], row["message"]) == ("bastion", f"bastion root@{addr(lab, 'down')}: connection refused")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_silent_bastion_is_tried_once_for_every_host_behind_it(lab, tmp_path, home, scheme):
    extra = f"--ssh-extra-args=-o ProxyJump=root@{addr(lab, 'mute')}"
    tried = lab.sshd_log("mute").read_text().count(SILENT_ACCEPTED)
    run = audit(lab, tmp_path, home, ["muted1", "muted2"], scheme, extra)
    got = rows(lab, run)
    for name in ("muted1", "muted2"):
        assert (got[name]["error_kind"], got[name]["message"]) == (
            "bastion", f"bastion root@{addr(lab, 'mute')}: timed out connecting (limit {LAB_TIMEOUT}s)"
        ), run.stdout  # fmt: skip
    assert lab.sshd_log("mute").read_text().count(SILENT_ACCEPTED) == tried + 1


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_bastion_that_will_not_forward_is_named(lab, tmp_path, home, scheme):
    extra = f"--ssh-extra-args=-o ProxyJump=root@{addr(lab, 'gate')}"
    row = rows(lab, audit(lab, tmp_path, home, ["fenced"], scheme, extra))["fenced"]
    assert (row["error_kind"], row["message"]) == (
        "bastion",
        f"bastion root@{addr(lab, 'gate')}: refused to forward to {addr(lab, 'fenced')}:22: administratively "
        "prohibited (see its AllowTcpForwarding and PermitOpen)",
    )


@contextlib.contextmanager
def occupied(lab, name):
    """Someone else's connection to ``name`` that has not logged in (it never speaks)."""
    deadline = time.monotonic() + 30
    while True:
        sock = socket.create_connection((addr(lab, name), 22), timeout=5)
        try:
            if sock.recv(64).startswith(b"SSH-"):  # its sshd took it (a connection over MaxStartups gets none)
                break
        except OSError:
            pass
        sock.close()  # the previous test's connection still counts: try again
        assert time.monotonic() < deadline, f"{name}'s sshd never took a connection"
        time.sleep(0.1)
    try:
        yield
    finally:
        sock.close()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_bastion_past_its_maxstartups_is_named(lab, tmp_path, home, scheme):
    extra = f"--ssh-extra-args=-o ProxyJump=root@{addr(lab, 'crowded')}"
    with occupied(lab, "crowded"):
        row = rows(lab, audit(lab, tmp_path, home, ["crowd"], scheme, extra))["crowd"]
    assert (row["error_kind"], row["message"]) == (
        "bastion",
        f"bastion root@{addr(lab, 'crowded')}: closed the connection during the SSH handshake "
        "(its MaxStartups may be reached)",
    )
    assert "past MaxStartups" in lab.sshd_log("crowded").read_text()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_host_down_behind_a_working_bastion_is_the_hosts_error(lab, tmp_path, home, scheme):
    config = usual_config(lab, tmp_path / "ssh_config")
    got = rows(lab, audit(lab, tmp_path, home, ["gone", "web1"], scheme, f"--ssh-config={config}"))
    said = {"paramiko": "connect failed", "ssh": "connect failed: Connection refused"}[scheme]
    assert (got["gone"]["error_kind"], got["gone"]["message"]) == (
        "unreachable", f"the bastion root@{addr(lab, 'bastion')} cannot connect to {addr(lab, 'gone')}:22: {said}"
    )  # fmt: skip
    assert got["web1"]["verdict"] == "sg-on"  # the bastion is fine


@pytest.mark.parametrize("connection", ["paramiko_ssh", "ssh"])
def test_ansible_inventories_proxyjump_in_common_args(lab, tmp_path, home, connection):
    pytest.importorskip("ansible", reason="ansible-core is the optional [ansible] extra")
    inventory = lab.write_ansible_inventory(
        tmp_path / "lab.ini", connection, WEB[:3], ssh_args=f"-o ProxyJump=root@{addr(lab, 'bastion')}"
    )
    before = logins(lab, ["bastion"])
    run = run_audit(
        tmp_path / "r", "--hosts=ansible://all", f"--ansible-inventory={inventory}",
        f"--ssh-known-hosts={lab.known_hosts}", f"--xennet-timeout={LAB_TIMEOUT}", "--xennet-scope=all", env=home,
    )  # fmt: skip
    verdicts = {r["host"]: r["verdict"] for r in run.summary["results"]}
    assert verdicts == {n: verdict_of(lab.hosts[n].plan) for n in WEB[:3]}, run.stdout
    assert logins(lab, ["bastion"])["bastion"] - before["bastion"] == 1


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_proxycommand_of_the_users_still_works(lab, tmp_path, home, scheme):
    hop = f"ssh -F {lab.ssh_config} -W %h:%p {addr(lab, 'bastion')}"  # the lab's config verifies the bastion
    before = logins(lab, ["bastion"])
    run = audit(lab, tmp_path, home, WEB[:2], scheme, f"--ssh-extra-args=-o 'ProxyCommand={hop}'")
    assert {n: r["verdict"] for n, r in rows(lab, run).items()} == {"web1": "sg-on", "web2": "susceptible"}, run.stdout
    assert logins(lab, ["bastion"])["bastion"] - before["bastion"] == 2  # the user's command: one login per host


def test_the_bastions_ssh_config_cannot_weaken_its_check_on_openssh(lab, tmp_path, home):
    config = write_config(
        lab, tmp_path / "ssh_config", "Host {bastion}\n    GlobalKnownHostsFile " + str(lab.known_hosts) + "\n"
    )
    extra = [f"--ssh-config={config}", f"--ssh-extra-args=-o ProxyJump=root@{addr(lab, 'bastion')}"]
    row = rows(lab, audit(lab, tmp_path, home, ["web1"], "ssh", *extra))["web1"]
    assert row["error_kind"] == "bastion"
    assert row["message"] == (
        f"bastion root@{addr(lab, 'bastion')}: GlobalKnownHostsFile={lab.known_hosts} in --ssh-config {config} line 2 "
        "would trust host keys from a file the host-key policy does not name; name known_hosts files with "
        "--ssh-known-hosts instead"
    )


def test_the_openssh_master_is_private_verified_and_ends_with_the_run(lab, tmp_path):
    config = usual_config(lab, tmp_path / "ssh_config")
    (target,) = lab_targets(lab, ["web1"], "ssh", ssh_config=str(config))
    result = target.connect().run_script(PROBE_COMMAND, PROBE_INPUT)
    assert [i.name for i in parse_probe(result.stdout).interfaces] == ["eth0"]
    target.close()
    directory = target.bastions.control_dir
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    sockets = [p for p in os.listdir(directory) if stat.S_ISSOCK(os.stat(os.path.join(directory, p)).st_mode)]
    (master,) = [argv for argv in masters_running() if f"ControlPath={directory}/m1" in argv]
    assert len(sockets) == 1
    # The hop carries the run's policy first, whatever the ssh_config says (StrictHostKeyChecking no).
    assert master[:5] == ["ssh", "-o", "StrictHostKeyChecking=yes", "-o", "CheckHostIP=no"]
    close_bastions([target])
    assert not os.path.exists(directory) and masters_running() == []


def test_paramiko_prefers_aes_gcm_on_the_bastion_and_behind_it(lab, tmp_path):
    config = usual_config(lab, tmp_path / "ssh_config")
    (target,) = lab_targets(lab, ["web1"], "paramiko", ssh_config=str(config))
    try:
        backend = target.connect()
        behind = backend.client.get_transport()
        hop = backend._bastion.get(LAB_TIMEOUT).client.get_transport()
        ciphers = {behind.local_cipher, behind.remote_cipher, hop.local_cipher, hop.remote_cipher}
        assert ciphers == {"aes128-gcm@openssh.com"}
    finally:
        target.close()
        close_bastions([target])


# ---------------------------------------------------------------- a bastion that dies mid-run

DYING_PLAN = (
    HostPlan("dying"),
    HostPlan("hung1", behind="dying", hang=True),
    HostPlan("hung2", behind="dying", hang=True),
    HostPlan("hung3", behind="dying", hang=True),
    HostPlan("fine", behind="dying"),
)


@pytest.fixture
def dying_lab():
    with make_lab(DYING_PLAN, LAB_INDEX + 1) as started:
        yield started


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_bastion_that_dies_mid_run_fails_every_host_behind_it_at_once(dying_lab, tmp_path, home, scheme):
    lab = dying_lab
    names = ["hung1", "hung2", "hung3", "fine"]
    args = audit_argv(
        tmp_path,
        "--hosts=" + ",".join(lab.spec(n, scheme) for n in names),
        f"--ssh-identity-file={lab.key_file}",
        f"--ssh-known-hosts={lab.known_hosts}",
        f"--ssh-extra-args=-o ProxyJump=root@{addr(lab, 'dying')}",
        "--xennet-timeout=60",  # hung hosts would take a minute each: the bastion's death must end them
        "--xennet-workers=2",
        "--xennet-scope=all",
    )
    proc = subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, **home), stdout=subprocess.PIPE, text=True)
    try:
        # The first two hung hosts are running the probe through the bastion: it goes down.
        while sum(lab.sshd_events(n)[1] for n in names) < 2 and proc.poll() is None:
            time.sleep(0.05)
        lab.kill_host("dying")
        stdout, _ = proc.communicate(timeout=90)
    finally:
        proc.kill()
    got = rows_of(lab, tmp_path)
    lost = f"bastion root@{addr(lab, 'dying')}: connection lost"
    assert {n: (got[n]["error_kind"], got[n]["message"]) for n in names} == {n: ("bastion", lost) for n in names}, (
        stdout
    )


def rows_of(lab, reports):
    import json

    names = {h.address: n for n, h in lab.hosts.items()}
    summary = json.loads((reports / "summary.json").read_text())
    return {names[r["host"]]: r for r in summary["results"]}
