"""Backend pieces that need no host: known_hosts lookups, sudo, OpenSSH command lines."""

from __future__ import annotations

import os
import socket
import subprocess

import paramiko
import pytest
from cryptography.exceptions import InvalidTag

from compliance.backends import (
    KnownHosts,
    LostConnection,
    ParamikoBackend,
    SshBackend,
    SshFailed,
    aead_first,
    integrity_lost,
    openssh_failure,
    record_file,
    unnamed,
    with_loaded_key,
)
from compliance.gather import describe_error, error_kind, probe_host
from compliance.targets import expand


@pytest.fixture(scope="module")
def keys():
    return [paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate(), paramiko.RSAKey.generate(1024)]


def test_known_hosts_index_matches_paramikos_lookup(tmp_path, keys):
    a, b, c = keys
    hashed = paramiko.HostKeys.hash_host("10.0.0.7")
    text = (
        "# a comment\n\n"
        f"10.0.0.5,web1 {a.get_name()} {a.get_base64()}\n"
        f"[10.0.0.6]:2222 {b.get_name()} {b.get_base64()}\n"
        f"{hashed} {c.get_name()} {c.get_base64()}\n"
    )
    (tmp_path / "reference").write_text(text)
    reference = paramiko.HostKeys(str(tmp_path / "reference"))
    # paramiko refuses a whole file for one bad line; the index skips it, as OpenSSH does.
    (tmp_path / "known_hosts").write_text(text + "10.0.0.9 ssh-ed25519 not-base64\n")
    index = KnownHosts(str(tmp_path / "known_hosts"))
    for name in ("10.0.0.5", "web1", "[10.0.0.6]:2222", "10.0.0.6", "10.0.0.7", "10.0.0.8"):
        expected = sorted(k.get_base64() for k in (reference.lookup(name) or {}).values())
        assert sorted(k.get_base64() for k in index.lookup(name)) == expected, name
    assert [k.get_base64() for k in index.lookup("10.0.0.7")] == [c.get_base64()]
    assert index.lookup("10.0.0.9") == []


def test_accept_new_records_in_the_first_named_file():
    assert record_file("/a/kh /b/kh").endswith("/a/kh")
    assert record_file(None).endswith("/.ssh/known_hosts")


@pytest.mark.parametrize("backend_class", [ParamikoBackend, SshBackend])
def test_sudo_never_prompts(backend_class):
    backend = backend_class("root@10.0.0.5", sudo=True)
    assert backend.get_command("id -u") == "sudo -n /bin/sh -c 'id -u'"
    backend = backend_class("root@10.0.0.5", sudo=True, sudo_user="ops")
    assert backend.get_command("id -u") == "sudo -n -u ops /bin/sh -c 'id -u'"


@pytest.mark.parametrize(
    ("policy", "options"),
    [
        ("strict", ["-o StrictHostKeyChecking=yes", "-o CheckHostIP=no", "-o BatchMode=yes", "-o ControlMaster=no"]),
        (
            "accept-new",
            ["-o StrictHostKeyChecking=accept-new", "-o CheckHostIP=no", "-o BatchMode=yes", "-o ControlMaster=no"],
        ),
        (
            "insecure",
            [
                "-o StrictHostKeyChecking=no",
                "-o UserKnownHostsFile=/dev/null",
                "-o CheckHostIP=no",
                "-o BatchMode=yes",
                "-o ControlMaster=no",
            ],
        ),
    ],
)
def test_openssh_command_line_carries_the_host_key_policy_first(policy, options):
    # OpenSSH keeps an option's first value: extra args (an inventory's, an ansible.cfg's) come later.
    extra = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o CheckHostIP=yes -o ControlMaster=auto"
    cmd, args = SshBackend("root@10.0.0.5", host_key_policy=policy, ssh_extra_args=extra)._build_ssh_command("true")
    assert cmd[: len(options) + 1] == ["ssh", *options] and args[-2:] == ["10.0.0.5", "true"]
    assert cmd.index(extra) > len(options)


def test_openssh_known_hosts_file_comes_first_so_accept_new_records_there():
    cmd, args = SshBackend("10.0.0.5", known_hosts="/kh", host_key_policy="accept-new")._build_ssh_command("true")
    assert "-o UserKnownHostsFile=%s" in cmd and "/kh ~/.ssh/known_hosts" in args


def test_openssh_password_goes_through_the_environment_not_argv():
    backend = SshBackend("root:s3cret@10.0.0.5")
    cmd, args = backend._build_ssh_command("true")
    assert cmd[:3] == ["sshpass", "-e", "ssh"] and "s3cret" not in " ".join(cmd + args)


def test_closing_aborts_a_paramiko_handshake_in_progress():
    """gather() closes a host that used up its budget: that must work while paramiko is still connecting."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts, and never sends an SSH banner
    port = listener.getsockname()[1]
    backend = ParamikoBackend(f"root@127.0.0.1:{port}", timeout=60, host_key_policy="insecure")
    failure: list[BaseException] = []

    def connect() -> None:
        try:
            backend.run("true")
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    accepted, _ = listener.accept()
    for _ in range(500):  # the connecting thread has the socket a moment after the TCP handshake
        if "_connecting" in backend.__dict__:
            break
        threading.Event().wait(0.01)
    backend.close()
    worker.join(20)  # far below the 60 s the handshake would otherwise wait for a banner
    try:
        assert not worker.is_alive() and failure, "close() did not abort the handshake"
    finally:
        accepted.close()
        listener.close()


def keygen(path, *extra: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path), *extra], check=True)
    return str(path)


def test_one_identity_file_is_loaded_once_for_every_host(tmp_path):
    path = keygen(tmp_path / "id")
    first = with_loaded_key({"hostname": "a", "key_filename": path})
    second = with_loaded_key({"hostname": "b", "key_filename": [path]})
    assert first["key_filename"] is None and isinstance(first["pkey"], paramiko.Ed25519Key)
    assert second["pkey"] is first["pkey"]  # parsed once, shared
    assert first["pkey"].get_base64() == paramiko.PKey.from_path(path).get_base64()


def test_identity_files_paramiko_reads_otherwise_are_left_to_it(tmp_path):
    plain = keygen(tmp_path / "plain")
    other = keygen(tmp_path / "other")
    encrypted = tmp_path / "encrypted"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(encrypted)], check=True)
    dsa = tmp_path / "dsa"  # paramiko 5 loads no DSA key: connect() skips it, as before
    subprocess.run(["ssh-keygen", "-q", "-t", "dsa", "-N", "", "-f", str(dsa)], check=True)
    certified = keygen(tmp_path / "certified")
    (tmp_path / "certified-cert.pub").write_text("ssh-ed25519-cert-v01@openssh.com AAAA\n")
    for cfg in (
        {"key_filename": [plain, other]},  # paramiko tries each in turn
        {"key_filename": str(encrypted)},  # needs a passphrase
        {"key_filename": str(dsa)},
        {"key_filename": certified},  # paramiko loads the certificate beside it
        {"key_filename": str(tmp_path / "missing")},
        {"key_filename": None},
    ):
        assert with_loaded_key(cfg) == cfg


def test_warm_parses_what_every_gathering_process_would_parse_and_fails_for_no_host(tmp_path):
    """Before gathering forks, the targets' known_hosts and identity files are read once, in the
    parent; a missing or unreadable file is left for each host's connection to report."""
    from compliance import backends

    key = keygen(tmp_path / "id")
    known = tmp_path / "known_hosts"
    known.write_text(f"web1 {(tmp_path / 'id.pub').read_text()}")
    good = expand(["paramiko://web1", "paramiko://web2"], ssh_identity_file=key, known_hosts=str(known)).targets
    missing = expand(["paramiko://web3"], ssh_identity_file=str(tmp_path / "gone"), known_hosts="/nonexistent").targets
    garbled = tmp_path / "garbled"
    garbled.write_bytes(b"web4 ssh-ed25519 \xff\xfe not UTF-8\n")  # KnownHosts raises on it: the host's error
    unread = tmp_path / "unread"
    unread.write_text(known.read_text())
    bad = expand(["paramiko://web4"], known_hosts=str(garbled)).targets
    insecure = expand(["paramiko://web5"], known_hosts=str(unread), host_key_policy="insecure").targets
    backends.warm([*good, *missing, *bad, *insecure])

    def parsed_again(path):
        raise AssertionError(f"{path} parsed again")

    assert backends.parsed_file(str(known), parsed_again).lookup("web1")  # the parent's parse, shared
    assert isinstance(backends.parsed_file(key, parsed_again), paramiko.Ed25519Key)
    assert backends.parsed_file("/nonexistent", parsed_again) is None
    with pytest.raises(UnicodeDecodeError):
        backends.parsed_file(str(garbled), backends.KnownHosts)  # not cached: each host meets it
    assert backends.parsed_file(str(unread), lambda path: "read now") == "read now"  # insecure reads none


def test_the_transport_remembers_an_integrity_failure_after_handing_it_on():
    # paramiko's get_exception() gives the error that ended a transport to one waiter, and clears it;
    # authentication then tries its next method, which only says "No existing session".
    left, right = socket.socketpair()
    with left, right:
        plain, ours = paramiko.Transport(left), aead_first(right)
        for transport in (plain, ours):
            transport.saved_exception = InvalidTag()
            assert isinstance(transport.get_exception(), InvalidTag) and transport.saved_exception is None
        said = paramiko.SSHException("No existing session")
        assert (integrity_lost(plain, said), integrity_lost(ours, said)) == (False, True)


# OpenSSH's own lines (clientloop.c, sshconnect.c, packet.c), as ssh prints them at exit status 255.
VERBOSE_TAIL = (
    "Transferred: sent 5944, received 2080 bytes, in 1.0 seconds\r\nBytes per second: sent 5913.5, received 2069.4\r\n"
)


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        # The session's connection, after login, closed or reset by the host: lost, without its address.
        ("Connection to 10.0.0.5 closed by remote host.\r\n", (LostConnection, "connection lost")),
        ("Read from remote host 10.0.0.5: Connection reset by peer\r\n", (LostConnection, "connection lost")),
        ("Connection to 10.0.0.5 closed by remote host.\r\n" + VERBOSE_TAIL, (LostConnection, "connection lost")),
        # sshd closed it before its banner (MaxStartups, say): OpenSSH 8.0-9.4, then 7.x.
        (
            "kex_exchange_identification: Connection closed by remote host\r\nConnection closed by 10.0.0.5 port 22\r\n",
            (SshFailed, "Connection closed by the host"),
        ),
        (
            "ssh_exchange_identification: Connection closed by remote host\r\n",
            (SshFailed, "ssh_exchange_identification: Connection closed by remote host"),
        ),
    ],
)
def test_openssh_words_for_a_connection_that_ended(stderr, expected):
    failure = openssh_failure(stderr)
    assert (type(failure), str(failure)) == expected


# OpenSSH's lines that name the host (packet.c's sshpkt_fatal, sshconnect.c, ssh.c), as users
# reported them. A report's row names the host: its message never does (README, summary.json).
@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        # https://github.com/vmactions/dragonflybsd-vm/issues/1 (a failed MAC, mid-transfer)
        (
            "ssh_dispatch_run_fatal: Connection to 127.0.0.1 port 2226: message authentication code incorrect\n",
            "ssh failed: ssh_dispatch_run_fatal: Connection to the host: message authentication code incorrect",
        ),
        # https://github.com/corneliusludmann/gitpod-playground/issues/4 (through a ProxyCommand)
        (
            "Bad packet length 4064835853.\n"
            "ssh_dispatch_run_fatal: Connection to UNKNOWN port 65535: message authentication code incorrect\n",
            "ssh failed: ssh_dispatch_run_fatal: Connection to the host: message authentication code incorrect",
        ),
        # https://github.com/bryanpkc/corkscrew/issues/19 (closed before the banner, through a proxy)
        (
            "kex_exchange_identification: Connection closed by remote host\nConnection closed by UNKNOWN port 65535\n",
            "ssh failed: Connection closed by the host",
        ),
        # https://github.com/elpy1/ssh-over-ssm/issues/14 (MaxAuthTries, through a ProxyCommand)
        (
            "Received disconnect from UNKNOWN port 65535:2: Too many authentication failures\n"
            "Disconnected from UNKNOWN port 65535\n",
            "authentication failed: Too many authentication failures",
        ),
        # https://github.com/jawj/IKEv2-setup/issues/146 (MaxAuthTries 2)
        (
            "Received disconnect from 203.0.113.7 port 22:2: Too many authentication failures\n",
            "authentication failed: Too many authentication failures",
        ),
        # https://github.com/sequelpro/sequelpro/issues/1722 (OpenSSH before 7.2, which added "port")
        (
            "Received disconnect from 203.0.113.7: 2: Too many authentication failures for root\n",
            "authentication failed: Too many authentication failures",
        ),
        # https://github.com/WassimBenzarti/colab-ssh/issues/70
        (
            "packet_write_wait: Connection to UNKNOWN port 65535: Unknown error\n",
            "ssh failed: packet_write_wait: Connection to the host: Unknown error",
        ),
        # sshconnect.c ssh_connect_direct and ssh.c, as paramiko's socket errors word them
        ("ssh: connect to host 10.0.0.5 port 22: No route to host\n", "No route to host"),
        ("ssh: connect to host 10.0.0.5 port 22: Network is unreachable\n", "Network is unreachable"),
        (
            "Received disconnect from 2001:db8::5: 2: Too many authentication failures\n",
            "authentication failed: Too many authentication failures",
        ),
        # https://github.com/microsoft/vscode-remote-release/issues/9431 (the resolver's words kept)
        (
            "ssh: Could not resolve hostname linprog: No such host is known.\n",
            "cannot resolve the host name: No such host is known.",
        ),
        # A ProxyCommand's bastion that does not resolve: the resolver's line, not the proxy's last words.
        (
            "ssh: Could not resolve hostname bastion.example: Name or service not known\r\n"
            "kex_exchange_identification: Connection closed by remote host\r\n"
            "Connection closed by UNKNOWN port 65535\r\n",
            "cannot resolve the host name: Name or service not known",
        ),
        # ssh.c with CanonicalizeFallbackLocal no: the name in quotes, no resolver's words.
        ('ssh: Could not resolve host "linprog"\n', "cannot resolve the host name: the name does not resolve"),
        # OpenSSH 7.0/7.1 named the host without its port (packet.c sshpkt_fatal).
        ("Connection closed by 10.0.0.5\n", "ssh failed: Connection closed by the host"),
        ("Connection reset by 2001:db8::5\n", "ssh failed: Connection reset by the host"),
        (
            "packet_write_wait: Connection to 10.0.0.5: Broken pipe\n",
            "ssh failed: packet_write_wait: Connection to the host: Broken pipe",
        ),
        (
            "Unable to negotiate with 10.0.0.5 port 22: no matching host key type found. Their offer: ssh-rsa\n",
            "ssh failed: Unable to negotiate with the host: no matching host key type found. Their offer: ssh-rsa",
        ),
        # Other connect errors show their words (sshconnect.c); "peer" and "remote host" name nobody.
        ("ssh: connect to host 10.0.0.5 port 22: Host is down\n", "ssh failed: ssh: connect to the host: Host is down"),
        (
            "kex_exchange_identification: read: Connection reset by peer\r\n",
            "ssh failed: kex_exchange_identification: read: Connection reset by peer",
        ),
        # Host names that begin like the phrases that name nobody.
        (
            "ssh: connect to host remote-db1.example.com port 22: Host is down\n",
            "ssh failed: ssh: connect to the host: Host is down",
        ),
        ("Connection closed by peer.corp.example port 22\n", "ssh failed: Connection closed by the host"),
        # https://github.com/NixOS/infra/issues/352 (MaxStartups: the banner's read reset, then sshpkt_fatal's line)
        (
            "kex_exchange_identification: read: Connection reset by peer\r\nConnection reset by 135.181.230.86 port 22\r\n",
            "ssh failed: Connection reset by the host",
        ),
        # Not OpenSSH's own words (a remote command's, before it died by a signal): no kind from them.
        ("nfs: server fs1 not responding, still trying\n", "ssh failed: nfs: server fs1 not responding, still trying"),
        (
            "curl: (6) Could not resolve host: example.com\n",
            "ssh failed: curl: (6) Could not resolve host: example.com",
        ),
        # packet.c from 8.0 (9.6's strict KEX, say).
        (
            "Disconnecting 10.0.0.5 port 22: strict KEX violation: unexpected packet type 2 (seqnr 1)\n",
            "ssh failed: Disconnecting the host: strict KEX violation: unexpected packet type 2 (seqnr 1)",
        ),
    ],
)
def test_a_message_from_openssh_never_names_the_host(stderr, message):
    described = describe_error(openssh_failure(stderr), None)
    assert described == message
    names = ("127.0.0.1", "UNKNOWN", "65535", "203.0.113.7", "10.0.0.5", "2001:db8::5", "linprog", "bastion.example")
    names += ("135.181.230.86",)
    assert not any(name in described for name in names)


# Users' OpenSSH lines whose kind OpenSSH's own line decides (sshconnect.c, sshconnect2.c, packet.c).
@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        # https://github.com/ansible/ansible/issues/82201 (OpenSSH 7.6 and later: USER@HOST first)
        ("root@193.84.2.125: Permission denied (publickey,password).\n", "auth"),
        # https://github.com/RedHatNordicsSA/ansible-roadshow/issues/26 (older: no USER@HOST)
        ("Permission denied (publickey,gssapi-keyex,gssapi-with-mic).\r\n", "auth"),
        # https://github.com/jawj/IKEv2-setup/issues/146 (sshd's MaxAuthTries, in packet.c's disconnect line)
        ("Received disconnect from 203.0.113.7 port 22:2: Too many authentication failures\n", "auth"),
        # https://github.com/wpoa/open-access-media-importer/issues/80
        ("ssh: connect to host tools.mi.ur.de port 22: Connection refused\n", "refused"),
        # https://github.com/0xNullGun/SSH-KaliLinux/issues/4 (ConnectTimeout, or the kernel's)
        ("ssh: connect to host segfault.net port 22: Connection timed out\n", "timeout"),
        # https://github.com/pry0cc/axiom/issues/618 (connected; no banner within ConnectTimeout)
        (
            "Connection timed out during banner exchange\r\nConnection to 45.79.146.115 port 2266 timed out\r\n",
            "timeout",
        ),
        # https://github.com/microsoft/vscode-remote-release/issues/6624 (the same through a ProxyCommand)
        ("Connection timed out during banner exchange\r\nConnection to UNKNOWN port 65535 timed out\r\n", "timeout"),
        # https://github.com/oschulz/container-env/issues/17 (a ProxyJump's bastion could not connect)
        (
            "channel 0: open failed: connect failed: Name or service not known\r\nstdio forwarding failed\r\n"
            "kex_exchange_identification: Connection closed by remote host\r\n",
            "ssh",
        ),
        ("channel 0: open failed: connect failed: Connection refused\r\nstdio forwarding failed\r\n", "refused"),
        # connect() refused by the local firewall or an LSM (EACCES): not an authentication failure.
        ("ssh: connect to host 10.0.0.5 port 22: Permission denied\n", "ssh"),
        # Connected, then the banner's read failed (kex.c, then packet.c's sshpkt_fatal; OpenSSH 8.0 on).
        (
            "kex_exchange_identification: read: No route to host\r\n"
            "banner exchange: Connection to 10.0.0.5 port 22: No route to host\r\n",
            "unreachable",
        ),
        ("ssh_exchange_identification: read: Connection timed out\r\n", "timeout"),  # before 8.0
        # A remote command's words, as cat says them (the root-only test below makes them for real).
        ("cat: /etc/shadow: Permission denied\n", "ssh"),
    ],
)
def test_openssh_own_line_decides_the_kind(stderr, kind):
    assert error_kind(openssh_failure(stderr)) == kind


def test_a_bastion_that_could_not_connect_is_its_words_not_the_proxy_last_line():
    failure = openssh_failure(
        "channel 0: open failed: connect failed: Name or service not known\r\nstdio forwarding failed\r\n"
        "kex_exchange_identification: Connection closed by remote host\r\n"
    )
    assert (
        describe_error(failure, None) == "ssh failed: channel 0: open failed: connect failed: Name or service not known"
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens on it once closed


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: reads /etc/shadow as nobody (setpriv)")
def test_a_remote_command_words_never_decide_the_kind():
    # ssh passes the remote command's stderr on its own: a command that exits 255 (or dies by a
    # signal, which OpenSSH's client also reports as 255) after real tools said these words.
    denied = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", "/etc/shadow"],
        capture_output=True,
        text=True,
    ).stderr
    refused = subprocess.run(
        ["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{_closed_port()}"], capture_output=True, text=True
    ).stderr
    assert "Permission denied" in denied and "Connection refused" in refused
    for said in (denied, refused, denied + refused):
        failure = openssh_failure(said)
        assert (error_kind(failure), describe_error(failure, None)) == ("ssh", f"ssh failed: {said.splitlines()[-1]}")


@pytest.mark.parametrize(
    ("line", "unnamed_line"),
    [
        # https://github.com/sequelpro/sequelpro/issues/1722 (OpenSSH before 7.2: no port)
        (
            "Received disconnect from 203.0.113.7: 2: Too many authentication failures for root",
            "Received disconnect from the host: Too many authentication failures for root",
        ),
        (
            "Received disconnect from 2001:db8::5: 2: Too many authentication failures",
            "Received disconnect from the host: Too many authentication failures",
        ),
        # https://github.com/jawj/IKEv2-setup/issues/146, and the line after it through a ProxyCommand
        # (https://github.com/elpy1/ssh-over-ssm/issues/14)
        (
            "Received disconnect from 203.0.113.7 port 22:2: Too many authentication failures",
            "Received disconnect from the host: Too many authentication failures",
        ),
        ("Disconnected from UNKNOWN port 65535", "Disconnected from the host"),
    ],
)
def test_a_disconnect_line_names_nobody(line, unnamed_line):
    assert unnamed(line) == unnamed_line


def test_a_name_that_does_not_resolve_reads_alike_under_both_backends():
    # paramiko's (socket.create_connection's) gaierror against OpenSSH's line for the same name.
    with pytest.raises(socket.gaierror) as raised:
        socket.getaddrinfo("no-such-host.invalid", 22)
    ours = openssh_failure("ssh: Could not resolve hostname no-such-host.invalid: Name or service not known\n")
    assert describe_error(raised.value, None) == describe_error(ours, None)
    assert describe_error(ours, None) == "cannot resolve the host name: Name or service not known"


def test_a_server_that_stops_answering_keepalives_is_a_lost_connection_that_names_nobody():
    # clientloop.c, after ServerAliveCountMax unanswered keepalives (ServerAliveInterval in a user's ssh_config).
    failure = openssh_failure("Timeout, server web1.example.com not responding.\r\n")
    assert isinstance(failure, LostConnection) and str(failure) == "connection lost: it stopped answering keepalives"


def test_a_name_ssh_cannot_canonicalize_is_a_dns_error_that_names_nobody(tmp_path):
    # ssh -G, which the suite asks for a host's route, fails first: 'ssh: Could not resolve host "NAME"'.
    config = tmp_path / "ssh_config"
    config.write_text("CanonicalizeHostname yes\nCanonicalDomains invalid\nCanonicalizeFallbackLocal no\n")
    (target,) = expand(["ssh://root@web1-nosuch"], ssh_config=str(config), timeout=10).targets
    result = probe_host(target)
    assert (result.error, result.error_kind) == ("cannot resolve the host name: the name does not resolve", "dns")


def test_a_bad_ssh_config_is_its_words_not_an_authentication_failure(tmp_path):
    # ssh -G connects to nothing: "Permission denied" in what it prints (a Match exec's stderr, an
    # unreadable Include) is no host's refusal; its last line says what is wrong with the file.
    config = tmp_path / "ssh_config"
    config.write_text(
        "Match exec \"echo 'cat: /etc/vpn/key: Permission denied' >&2; false\"\n    ProxyJump vpn-gw\n"
        "Host *\n    Bogus yes\n"
    )
    (target,) = expand(["ssh://root@web1.invalid"], ssh_config=str(config), timeout=10).targets
    result = probe_host(target)
    assert (result.error, result.error_kind) == (
        f"ssh failed: {config}: terminating, 1 bad configuration options",
        "ssh",
    )
