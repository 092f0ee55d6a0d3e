"""Bastions without a lab: ProxyJump values, routes from ssh arguments and real ssh_configs (checked
against OpenSSH's own reading, ``ssh -G``), the shared-connection registry, and the errors' words."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import threading
from pathlib import Path

import paramiko
import pytest

from compliance import bastion, hostkeys
from compliance.backends import ParamikoBackend, SshBackend, forward_failure
from compliance.bastion import BastionError, Bastions, Hop, Route, parse_jump
from compliance.gather import describe_error, error_kind
from compliance.options import UsageProblem
from compliance.targets import Target, expand

DATA = Path(__file__).parent / "data" / "bastion"


@pytest.mark.parametrize(
    ("value", "hops"),
    [
        ("david@Project-Bastion", (Hop("Project-Bastion", "david"),)),  # davidkhala.ssh_config
        ("jumphost", (Hop("jumphost"),)),  # zdm-proxy.ssh_config
        ("root@bast:2222,u2@b2", (Hop("bast", "root", 2222), Hop("b2", "u2"))),
        ("root@[198.18.207.11]", (Hop("198.18.207.11", "root"),)),  # as `ssh -G` prints it (openssh-G-proxyjump.txt)
        ("ssh://ops@[fe80::1]:2200", (Hop("fe80::1", "ops", 2200),)),
        ("a@b@host", (Hop("host", "a@b"),)),  # OpenSSH: the user ends at the last @
        ("NONE", ()),
    ],
)
def test_proxyjump_values_read_as_openssh_reads_them(value, hops):
    assert parse_jump(value) == hops


@pytest.mark.parametrize("value", ["", "root@", "host:0", "host:65536", "a,,b", "host:port", "[fe80::1"])
def test_unreadable_proxyjump_values_are_refused(value):
    with pytest.raises(ValueError, match="bad ProxyJump"):
        parse_jump(value)


def test_hops_print_back_as_proxyjump_elements():
    assert [str(h) for h in parse_jump("root@b1:2222,[fe80::1],ops@b3")] == ["root@b1:2222", "[fe80::1]", "ops@b3"]


@pytest.mark.parametrize(
    ("args", "route"),
    [
        ("-o ProxyJump=root@b1", Route(hops=(Hop("b1", "root"),))),
        ("-C -J root@b1,b2 -v", Route(hops=(Hop("b1", "root"), Hop("b2")))),
        ("-o ProxyJump=none -o ProxyJump=root@b1", Route()),  # OpenSSH keeps the first value
        ("-o 'ProxyCommand ssh -W %h:%p b1' -o ProxyJump=b2", Route(command="ssh -W %h:%p b1")),
        ("-o ProxyCommand=none -J b2", Route()),
        ("-o StrictHostKeyChecking=no", None),
    ],
)
def test_the_first_proxy_setting_in_the_arguments_wins(args, route):
    settings = hostkeys.parse_args(args, "--ssh-extra-args")[0]
    assert bastion.settings_route([(s.keyword, s.value) for s in settings]) == route


def test_inventory_arguments_seen_in_public_inventories_name_their_bastion():
    # tests/data/bastion/inventory-ssh-args.txt: ansible_ssh_common_args values from public repositories.
    lines = (DATA / "inventory-ssh-args.txt").read_text().splitlines()
    routes = [
        bastion.settings_route([(s.keyword, s.value) for s in hostkeys.parse_args(line, "x")[0]]) for line in lines
    ]
    assert [r.hops[0].user for r in routes] == [
        "ansible", "$SSH_USER", "user", "ec2-user", "inria_ubinet01", "azureuser", "ec2-user", "ubuntu"
    ]  # fmt: skip
    assert routes[2].hops[0].host == "${yandex_compute_instance.bastion.network_interface.0.nat_ip_address}"
    assert routes[4] == Route(hops=(Hop("faraday.inria.fr", "inria_ubinet01"),))


def openssh_reading(config: Path, host: str) -> dict[str, str]:
    """What OpenSSH makes of ``host`` with this config (no network)."""
    out = subprocess.run(["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def paramiko_chain(config: Path, host: str, identity: str | None = None):
    """The bastions paramiko goes through for ``host`` (none contacted)."""
    backend = ParamikoBackend(f"{host}", ssh_config=str(config), ssh_identity_file=identity)
    ssh_config = paramiko.SSHConfig.from_path(str(config))
    client = paramiko.SSHClient()
    cfg = {"hostname": host, "port": 22, "username": None}
    lookup = backend._load_ssh_config(client, cfg, ssh_config, str(config.parent))
    route = backend._route(lookup, str(config), cfg)
    return backend._plan_chain(route.hops, ssh_config, ()) if route.hops else ()


@pytest.mark.skipif(subprocess.run(["which", "ssh"], capture_output=True).returncode != 0, reason="needs OpenSSH")
@pytest.mark.parametrize(
    ("config", "host", "bastions"),
    [
        # A bastion, then a second jump box whose own ssh_config block jumps through it; negated patterns.
        ("terraform-pws-dark.ssh_config", "pws_om", ["pws_bastion", "pws_sjb"]),
        ("terraform-pws-dark.ssh_config", "pws_bosh", []),  # !*bosh: reached directly
        ("terraform-pws-dark.ssh_config", "pws_sjb", ["pws_bastion"]),
        ("zdm-proxy.ssh_config", "zdm-proxy-0", ["jumphost"]),
        ("zdm-proxy.ssh_config", "172.18.100.12", ["jumphost"]),
        ("davidkhala.ssh_config", "target", ["Project-Bastion"]),
    ],
)
def test_paramiko_reads_real_ssh_configs_as_openssh_does(config, host, bastions):
    path = DATA / config
    chain = paramiko_chain(path, host)
    # OpenSSH's chain: the host's ProxyJump, and each first hop's own, outermost first.
    expected, name = [], host
    while (jump := openssh_reading(path, name).get("proxyjump")) is not None:
        (hop,) = parse_jump(jump)
        expected.insert(0, hop.host)
        name = hop.host
    assert expected == bastions
    assert [p.label.split("@", 1)[1] for p in chain] == bastions
    for plan, name in zip(chain, bastions):
        said = openssh_reading(path, name)
        assert (plan.user, plan.hostname, plan.port) == (said["user"], said["hostname"], int(said["port"])), name


def test_a_bastion_is_offered_its_own_keys_then_the_hosts(tmp_path):
    (hop,) = paramiko_chain(DATA / "zdm-proxy.ssh_config", "zdm-proxy-0", identity="~/audit-key")
    assert hop.key_files == (os.path.expanduser("~/.ssh/zdm-key"), os.path.expanduser("~/audit-key"))
    assert hop.known_hosts == ("/dev/null",)  # an extra file to read (nothing): paramiko never trusts less


def test_proxyjump_none_in_an_earlier_block_keeps_a_host_direct(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host direct\n    ProxyJump none\nHost * !bastion\n    ProxyJump root@bastion\n")
    assert paramiko_chain(config, "direct") == ()
    assert [p.label for p in paramiko_chain(config, "web1")] == ["root@bastion"]
    assert openssh_reading(config, "direct").get("proxyjump") is None  # OpenSSH agrees


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("Host web1\n    ProxyCommand nc %h %p\nHost *\n    ProxyJump b1\n", Route(command="nc web1 22")),
        ("Host web1\n    ProxyJump b1\nHost *\n    ProxyCommand nc %h %p\n", Route(hops=(Hop("b1"),))),
        ("Host web1\n    ProxyCommand none\nHost *\n    ProxyJump b1\n", Route()),
    ],
)
def test_between_proxycommand_and_proxyjump_the_first_in_the_file_wins(tmp_path, text, route):
    config = tmp_path / "ssh_config"
    config.write_text(text)
    backend = ParamikoBackend("web1", ssh_config=str(config))
    cfg = {"hostname": "web1", "port": 22, "username": None}
    lookup = backend._load_ssh_config(paramiko.SSHClient(), cfg, paramiko.SSHConfig.from_path(str(config)), "")
    assert backend._route(lookup, str(config), cfg) == route
    said = openssh_reading(config, "web1")
    assert ("proxyjump" in said, "proxycommand" in said) == (bool(route.hops), bool(route.command))


def test_a_proxycommand_argument_gets_the_hosts_tokens():
    backend = ParamikoBackend("ops@web1:2222", ssh_extra_args="-o 'ProxyCommand=ssh -W %h:%p -l %r bastion'")
    cfg = {"hostname": "10.0.0.5", "port": 2222, "username": "ops"}
    assert backend._route({}, None, cfg) == Route(command="ssh -W 10.0.0.5:2222 -l ops bastion")


def test_ssh_config_loops_of_bastions_are_refused(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host b1\n    ProxyJump b2\nHost b2\n    ProxyJump b1\nHost web1\n    ProxyJump b1\n")
    with pytest.raises(BastionError, match="ProxyJumps loop through b1"):
        paramiko_chain(config, "web1")


# ---------------------------------------------------------------- OpenSSH's words


def test_ssh_G_output_names_the_bastion():
    # Captured here (OpenSSH 9.2): `ssh -G` prints an address ProxyJump in brackets.
    said = dict(line.split(" ", 1) for line in (DATA / "openssh-G-proxyjump.txt").read_text().splitlines())
    assert parse_jump(said["proxyjump"]) == (Hop("198.18.207.11", "root"),)


@pytest.mark.parametrize(
    ("log", "kind", "message"),
    [
        (
            "master-prohibited.log",
            "bastion",
            "bastion root@b1: refused to forward to 10.0.0.5:22: administratively prohibited "
            "(see its AllowTcpForwarding and PermitOpen)",
        ),
        (
            "master-connect-failed.log",
            "unreachable",
            "the bastion root@b1 cannot connect to 10.0.0.5:22: connect failed: Connection refused",
        ),
    ],
)
def test_a_masters_log_says_why_a_channel_was_not_opened(log, kind, message):
    # Captured here: the ControlMaster's log line, for a client that was only told this:
    assert "Session open refused by peer" in (DATA / "client-forward-refused.txt").read_text()
    failure = forward_failure((DATA / log).read_text(), "root@b1", "10.0.0.5:22")
    target = Target("10.0.0.5", "ssh://10.0.0.5", "ssh", "10.0.0.5")
    assert (error_kind(failure), describe_error(failure, target)) == (kind, message)


def test_two_different_reasons_at_once_are_not_pinned_on_either_host():
    said = "channel 2: open failed: connect failed: Connection refused\nchannel 3: open failed: connect failed: No route to host\n"
    assert str(forward_failure(said, "root@b1", "h:22")) == "the bastion root@b1 cannot connect to h:22: connect failed"


@pytest.mark.parametrize(
    ("cause", "message"),
    [
        (ConnectionRefusedError(), "bastion root@b1: connection refused"),
        (paramiko.BadHostKeyException("b1", paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()), "bastion root@b1: host key mismatch"),
        (paramiko.AuthenticationException("no"), "bastion root@b1: authentication failed"),
        (bastion.ConnectionLost(), "bastion root@b1: connection lost"),
        (bastion.HandshakeClosed(), "bastion root@b1: closed the connection during the SSH handshake (its MaxStartups may be reached)"),
        (bastion.ConnectTimeout(3), "bastion root@b1: timed out connecting (limit 3s)"),
    ],
)  # fmt: skip
def test_bastion_errors_name_the_hop_and_are_one_kind(cause, message):
    target = Target("10.0.0.5", "paramiko://10.0.0.5", "paramiko", "10.0.0.5")
    exc = BastionError("root@b1", cause)
    assert (describe_error(exc, target), error_kind(exc)) == (message, "bastion")


# ---------------------------------------------------------------- the registry


def test_sixteen_hosts_asking_at_once_make_one_connection():
    made, ready = [], threading.Barrier(16)

    class Handle:
        def alive(self):
            return True

        def close(self):
            pass

    def opener(shared):
        made.append(shared)
        return Handle()

    with Bastions() as run:
        got = []

        def ask():
            ready.wait()
            got.append(run.shared(("k",), lambda: "root@b1", opener).get(5))

        threads = [threading.Thread(target=ask) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(made) == 1 and len(got) == 16 and len({id(h) for h in got}) == 1


def test_a_failed_bastion_is_tried_once_and_every_host_is_told_why():
    tries = []

    def opener(shared):
        tries.append(1)
        raise ConnectionRefusedError()

    with Bastions() as run:
        shared = run.shared(("k",), lambda: "root@b1", opener)
        for _ in range(3):
            with pytest.raises(BastionError) as caught:
                shared.get(5)
            assert isinstance(caught.value.cause, ConnectionRefusedError)
    assert tries == [1]


def test_a_bastion_that_dies_fails_the_hosts_after_it():
    class Handle:
        closed = False

        def alive(self):
            return not self.closed

        def close(self):
            self.closed = True

    with Bastions() as run:
        shared = run.shared(("k",), lambda: "root@b1", lambda s: Handle())
        handle = shared.get(5)
        handle.closed = True  # its connection ended
        with pytest.raises(BastionError, match="bastion root@b1: connection lost"):
            shared.get(5)


def test_control_sockets_live_in_a_private_directory_removed_at_the_end():
    run = Bastions()
    path = run.control_path()
    directory = run.control_dir
    assert directory is not None and os.path.dirname(path) == directory
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert len(path) < 100  # a Unix socket path
    run.close()
    assert not os.path.exists(directory)


# ---------------------------------------------------------------- the command line


def test_an_unreadable_proxyjump_argument_is_a_usage_error_on_both_backends():
    for scheme in ("paramiko", "ssh"):
        with pytest.raises(UsageProblem, match=r"^bad ProxyJump 'root@': cannot read 'root@' in --ssh-extra-args$"):
            expand([f"{scheme}://web1"], ssh_extra_args="-o ProxyJump=root@")


def test_the_targets_of_a_run_share_one_registry():
    targets = expand(["paramiko://web1", "ssh://web2"]).targets
    assert targets[0].bastions is targets[1].bastions is not None


def test_openssh_command_line_routes_through_the_master_first():
    backend = SshBackend("root@10.0.0.5", ssh_extra_args="-J root@b1 -o ProxyJump=b2")
    backend._proxy = "ssh -S /tmp/x -W [%h]:%p b1"
    backend.ssh_extra_args = hostkeys.without_jump(backend.ssh_extra_args)
    cmd, args = backend._build_ssh_command("true")
    line = backend.quote(" ".join(cmd), *args)
    argv = shlex.split(line)
    at = argv.index("ProxyCommand=ssh -S /tmp/x -W [%h]:%p b1")
    assert argv[1:at] == ["-o", "StrictHostKeyChecking=yes", "-o", "CheckHostIP=no", "-o"]
    assert "-J" not in argv and "ProxyJump=b2" in argv  # ignored by OpenSSH after a ProxyCommand
