"""testinfra's paramiko, OpenSSH and local backends, hardened for unattended fleet audits.

All of them verify host keys (by policy), bound connecting and every command by
``timeout`` seconds, never prompt (``sudo -n``, ``BatchMode``), and can be closed,
also from another thread to abort a command in flight. :func:`connect` is the one
place that builds them, from a :class:`compliance.targets.Target`; testinfra's own
registry is left alone, so other testinfra users in the same process get upstream's.

>>> from compliance.targets import expand
>>> (target,) = expand(["paramiko://root@web1"], timeout=5).targets
>>> connect(target)  # doctest: +ELLIPSIS
<compliance.backends.ParamikoBackend object at ...>
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import getpass
import inspect
import logging
import math
import os
import re
import select
import selectors
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paramiko
import testinfra.backend.local
import testinfra.backend.paramiko
import testinfra.backend.ssh
from cryptography.exceptions import InvalidTag
from testinfra.backend import base

from compliance import bastion, hostkeys
from compliance.bastion import BastionError, Bastions, ForwardFailed, Shared
from compliance.options import DEFAULT_MAX_OUTPUT, DEFAULT_TIMEOUT, UsageProblem

USER_KNOWN_HOSTS = "~/.ssh/known_hosts"
# Hosts connected through one bastion connection at a time, at most (each a channel on it);
# more wait for a free one within their own connecting time.
BASTION_CHANNELS = 32
# paramiko's transport threads log their own failures (a banner cut short by an interrupt, say)
# with a traceback; each becomes the host's one-line error instead. Handlers up the tree
# (pytest's log capture) still receive them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def connect(target: Any) -> base.BaseBackend:
    """The suite's hardened backend for ``target`` (a Target); nothing is contacted yet.

    An identity file that is missing (one named by an inventory, say) is this host's
    error, naming the file, not a vague failure at authentication time.
    """
    options = dict(target.options)
    identity = options.get("ssh_identity_file")
    if identity and not os.path.isfile(os.path.expanduser(identity)):
        raise FileNotFoundError(2, "identity file not found", identity)
    max_output = int(options.get("max_output", DEFAULT_MAX_OUTPUT))
    if target.connection == "local":
        return LocalBackend(
            sudo=options.get("sudo", False),
            sudo_user=options.get("sudo_user"),
            timeout=float(options.get("timeout", DEFAULT_TIMEOUT)),
            max_output=max_output,
        )
    timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
    policy = str(options.get("host_key_policy", "strict"))
    if target.connection == "paramiko":
        return ParamikoBackend(
            target.hostspec, ssh_config=options.get("ssh_config"), ssh_identity_file=identity,
            sudo=bool(options.get("sudo")), sudo_user=options.get("sudo_user"), timeout=timeout,
            known_hosts=options.get("known_hosts"), host_key_policy=policy, max_output=max_output,
            ssh_extra_args=options.get("ssh_extra_args"), bastions=getattr(target, "bastions", None),
        )  # fmt: skip
    if target.connection == "ssh":
        return SshBackend(
            target.hostspec, ssh_config=options.get("ssh_config"), ssh_identity_file=identity,
            sudo=bool(options.get("sudo")), sudo_user=options.get("sudo_user"), timeout=timeout,
            known_hosts=options.get("known_hosts"), host_key_policy=policy,
            ssh_extra_args=options.get("ssh_extra_args"), controlpersist=0,  # leave no master connection behind
            max_output=max_output, bastions=getattr(target, "bastions", None),
        )  # fmt: skip
    raise ValueError(f"unknown connection {target.connection!r}")


# ---------------------------------------------------------------- typed host errors
# Every way a host can fail becomes one of these (or a builtin such as TimeoutError,
# ConnectionRefusedError, FileNotFoundError): gather names causes by type, not by text.


class HostError(Exception):
    """A host-level failure whose message is one line, safe to show."""


class HostKeyMismatch(HostError):
    """The host presented a key different from the recorded one."""


class UnknownHostKey(HostError):
    """The host's key is not recorded, and the policy refuses unknown keys."""


class AuthenticationFailed(HostError):
    """The host refused the credentials offered, or stopped trying them (sshd's MaxAuthTries);
    ``detail``: the host's reason, when it gave one."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("authentication failed" + (f": {detail}" if detail else ""))
        self.detail = detail


class SudoRefused(HostError):
    """sudo wants a password (``sudo -n`` never waits for one) or refuses the user."""


class SshFailed(HostError):
    """OpenSSH failed for a reason it only told in words (its last line is the message)."""


class HostTimeout(HostError, TimeoutError):
    """The host did not answer in time: ``phase`` is ``connecting`` or ``running``."""

    def __init__(self, phase: str, limit: float) -> None:
        super().__init__(f"timed out {phase} (limit {limit:g}s)")
        self.phase = phase
        self.limit = limit


class OutputLimit(HostError):
    """The host printed more than the run allows (--xennet-max-output): stopped at once."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"output exceeds {limit} bytes")
        self.limit = limit


class LostConnection(HostError, ConnectionError):
    """The connection ended before the command's exit status came: the host or the network dropped
    it, or its data failed the integrity check (``detail`` then says so; paramiko only)."""

    def __init__(self, detail: str = "", phase: str = "running") -> None:
        super().__init__("connection lost" + (f": {detail}" if detail else ""))
        self.detail = detail
        self.phase = phase  # "connecting" or "running", as HostTimeout's


INTEGRITY_FAILED = "its data failed the integrity check (corrupted or altered on the way)"


def failed_integrity(exc: BaseException | None) -> bool:
    """Whether paramiko's transport ended on a packet that failed its check: an AEAD tag
    (cryptography's InvalidTag), or an HMAC, which paramiko reports only in words."""
    if exc is None:
        return False
    return isinstance(exc, InvalidTag) or (isinstance(exc, paramiko.SSHException) and str(exc) == "Mismatched MAC")


def integrity_lost(transport: paramiko.Transport | None, exc: BaseException | None = None) -> bool:
    """Whether ``transport`` ended on a packet that failed its check: ``exc``, the error it saved, or
    one it handed to a waiter (:class:`Transport`). Some of paramiko's calls on a dead transport
    only say "No existing session"."""
    return failed_integrity(exc) or (
        transport is not None
        and (failed_integrity(transport.saved_exception) or getattr(transport, "integrity_failed", False))
    )


LOSS_GRACE = 0.2  # seconds: a host's DISCONNECT closes the channels just before the transport ends


def connection_lost(transport: paramiko.Transport | None, exc: BaseException | None = None) -> LostConnection | None:
    """A LostConnection when ``transport`` has ended, or a packet failed its integrity check (``exc``
    may be that error); None while it is up: a command that ended without an exit status (killed
    by a signal, which paramiko does not record) is the command's failure."""
    if transport is None:  # never connected: the connection's own error says why
        return None
    integrity = integrity_lost(transport, exc)
    if not integrity and transport.is_active():
        transport.join(LOSS_GRACE)
        if transport.is_active():
            return None
    return LostConnection(INTEGRITY_FAILED if integrity else "")


_UNRESOLVED = "ssh: Could not resolve host"  # ssh.c: "... hostname NAME: WORDS", or '... host "NAME"'


def _unresolved(line: str) -> socket.gaierror:
    """A name OpenSSH could not resolve: the resolver's words without the name, as paramiko's gaierror."""
    found = re.search(r"Could not resolve hostname \S+: (.+)", line)
    words = found.group(1) if found else "the name does not resolve"
    return socket.gaierror(socket.EAI_AGAIN if "Temporary failure" in words else socket.EAI_NONAME, words)


# The socket errors that have a kind of their own (paramiko's socket raises them): any other
# connect() error (EACCES, EHOSTDOWN) shows its words, as ssh failed.
_CONNECT_ERRNOS = {"No route to host": errno.EHOSTUNREACH, "Network is unreachable": errno.ENETUNREACH}


def _socket_kind(words: str) -> BaseException | None:
    """A socket error, by its words (strerror), as the socket's own exception; None for one with no kind."""
    if words in ("Connection timed out", "Operation timed out"):
        return TimeoutError(words)  # ConnectTimeout; the backend makes it a HostTimeout
    if words == "Connection refused":
        return ConnectionRefusedError(errno.ECONNREFUSED, words)
    number = _CONNECT_ERRNOS.get(words)
    return OSError(number, os.strerror(number)) if number is not None else None


def _connect_failed(found: re.Match[str]) -> BaseException:
    """connect() failed: its kind, or its line's words (EACCES, EHOSTDOWN)."""
    return _socket_kind(found[1]) or SshFailed(unnamed(found[0]))


def _banner_failed(found: re.Match[str]) -> BaseException | None:
    """The banner's read failed: its kind, if it has one (otherwise OpenSSH's last line says it)."""
    return _socket_kind(found[1])


# OpenSSH reports its failures only as text on stderr (exit status 255): this table is the one
# place that reads it, turning each into the type the rest of the suite works with. Each line is
# matched whole, as OpenSSH writes it: ssh passes the remote command's stderr on the same stream,
# and a word there (a file the probe may not read: "Permission denied") must not decide the kind.
_OPENSSH_FAILURES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], BaseException | None]], ...] = (
    # sshconnect.c's warning box, then "Host key verification failed.".
    (re.compile(r"@ *WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! *@"), lambda m: HostKeyMismatch(m[0])),
    (re.compile(r"Host key verification failed\."), lambda m: UnknownHostKey(m[0])),
    # sshconnect2.c; "USER@HOST: " from OpenSSH 7.6 on (a user name may hold spaces, a host not).
    (re.compile(r"(?:.+@\S+: )?Permission denied \([^)]*\)\."), lambda m: AuthenticationFailed()),
    # sshd's MaxAuthTries, in the client's disconnect line (packet.c): the keys offered ran out its
    # tries. sshd before 6.8 added " for USER" (6.7: and where from); a client before 7.2 has no " port N".
    (
        re.compile(
            r"Received disconnect from \S+?(?: port \d+)?: ?\d+: (Too many authentication failures)(?: for .+)?"
        ),
        lambda m: AuthenticationFailed(m[1]),
    ),
    # connect() failed: sshconnect.c ssh_connect_direct; or, for a user's `ProxyCommand ssh -W`,
    # the bastion's (channels.c).
    (re.compile(r"ssh: connect to host \S+ port \d+: (.+)"), _connect_failed),
    (re.compile(r"channel \d+: open failed: connect failed: (.+)"), _connect_failed),
    # Connected, then the banner's read failed (kex.c; ssh_exchange_identification before 8.0), and
    # packet.c's sshpkt_fatal for it ("banner exchange: Connection to ADDRESS port 22: WORDS").
    (re.compile(r"(?:kex|ssh)_exchange_identification: read: (.+)"), _banner_failed),
    (re.compile(r"banner exchange: Connection to \S+(?: port \d+)?: (.+)"), _banner_failed),
    # ConnectTimeout spent waiting for the banner (sshconnect.c; from 8.0 packet.c's line too, 7.0/7.1 no port).
    (
        re.compile(r"Connection timed out during banner exchange|Connection to \S+(?: port \d+)? timed out"),
        lambda m: TimeoutError(m[0]),
    ),
    # clientloop.c, after ServerAliveCountMax unanswered keepalives (a ServerAliveInterval in the ssh_config).
    (re.compile(r"Timeout, server .* not responding\."), lambda m: LostConnection(KEEPALIVES_UNANSWERED)),
    # The resolver's words alone (socket.gaierror's strerror, as paramiko's).
    (re.compile(re.escape(_UNRESOLVED) + ".*"), lambda m: _unresolved(m[0])),
)

# Where OpenSSH names the host in its words, each phrase that does followed by the host's address or
# name and, from OpenSSH 7.2, its port ("Connection closed by ADDRESS port 22", "Received disconnect
# from ADDRESS port 22:2: ...", before 7.2 "... from ADDRESS: 2: ..."; "UNKNOWN port 65535" through a
# proxy): a report's row already names the host, and a message without it groups with the same
# failure on every other host.
_OPENSSH_NAMED = re.compile(
    r"\b(Connection closed by|Connection reset by|Disconnected from|Disconnecting|Unable to negotiate with"
    r"|Connection to|Received disconnect from|connect to host) (?!(?:peer|remote host)(?:\.?$|: ))\S+?(?: port \d+)?(?::\d+|: \d+(?=: ))?"
    r"(?=: |\.?$| timed out)"
)
_NAMED_AS = {"connect to host": "connect to the host"}
_OLD_DISCONNECT = re.compile(r"(Received disconnect from the host): \d+(?=: )")  # before 7.2: "ADDRESS: 2: ..."
# What a host that stopped answering OpenSSH's keepalives (ServerAliveInterval) lost.
KEEPALIVES_UNANSWERED = "it stopped answering keepalives"


# What ssh's session loop (clientloop.c, after login) says when the connection ends under the
# command, closed or reset by the host: paramiko's LostConnection, in its words, without the host.
# At LogLevel VERBOSE or -v, its byte counts and debug lines come after it.
_OPENSSH_LOST = re.compile(r"Connection to \S+ closed by remote host\.|Read from remote host \S+: .+")
_OPENSSH_AFTER = ("debug", "Transferred:", "Bytes per second:")


def unnamed(line: str) -> str:
    """OpenSSH's line without the host's address (or name) and port, which the report's row gives.

    >>> unnamed("ssh_dispatch_run_fatal: Connection to 10.0.0.5 port 22: message authentication code incorrect")
    'ssh_dispatch_run_fatal: Connection to the host: message authentication code incorrect'
    >>> unnamed("Received disconnect from 2001:db8::5 port 22:2: Too many authentication failures")
    'Received disconnect from the host: Too many authentication failures'
    """
    named = _OPENSSH_NAMED.sub(lambda m: _NAMED_AS.get(m.group(1), f"{m.group(1)} the host"), line)
    # Before 7.2 only (no port): an IPv6 address ends in what the port-less form reads as "::5: 2".
    return named if " port " in line else _OLD_DISCONNECT.sub(r"\1", named)


def said_lines(stderr: str) -> list[str]:
    """OpenSSH's non-empty lines, stripped."""
    return [line.strip() for line in stderr.splitlines() if line.strip()]


def last_words(lines: list[str]) -> str:
    """OpenSSH's last line, without the host (:func:`unnamed`)."""
    return unnamed(lines[-1]) if lines else "no output"


def openssh_failure(stderr: str) -> BaseException:
    """The exception for an OpenSSH client that exited 255 with ``stderr``."""
    lines = said_lines(stderr)
    said = [line for line in lines if not line.startswith(_OPENSSH_AFTER)]
    if said and _OPENSSH_LOST.fullmatch(said[-1]):
        return LostConnection()
    for pattern, kind in _OPENSSH_FAILURES:
        # The line that says it: after it may come a proxy's own words ("Connection closed by UNKNOWN ...").
        found = next((m for m in map(pattern.fullmatch, lines) if m is not None), None)
        failure = kind(found) if found is not None else None
        if failure is not None:
            return failure
    return SshFailed(last_words(lines))


def sudo_refusal(stderr: str) -> SudoRefused | None:
    """A SudoRefused when sudo (run as ``sudo -n``) said on ``stderr`` why it would not run the command."""
    if "sudo:" in stderr and ("password is required" in stderr or "terminal is required" in stderr):
        return SudoRefused("sudo requires a password")
    return None


@dataclasses.dataclass(frozen=True)
class ScriptResult:
    """What a script run on standard input gave back, as bytes: the suite decodes them itself,
    so testinfra never asks the host for its locale (a second remote command)."""

    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "backslashreplace")


def collect(proc: subprocess.Popen, stdin: bytes, deadline: float, limit: int, timeout: float) -> tuple[bytes, bytes]:
    """A process's stdout and stderr, read as they come, never more than ``limit`` bytes in all.

    ``subprocess.communicate`` keeps every byte until the process ends: a host printing
    endlessly filled gigabytes before its deadline. Raises OutputLimit or HostTimeout; the
    caller kills the process.
    """
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(stdin)  # a script of a few KiB: the pipe takes it whole
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the command did not read it; what it printed says why
    streams: dict[int, list[bytes]] = {proc.stdout.fileno(): [], proc.stderr.fileno(): []}
    total = 0
    with selectors.DefaultSelector() as selector:
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HostTimeout("running", timeout)
            for key, _ in selector.select(remaining):
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fd)
                    continue
                total += len(data)
                if total > limit:
                    raise OutputLimit(limit)
                streams[key.fd].append(data)
    try:
        proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise HostTimeout("running", timeout) from None
    return b"".join(streams[proc.stdout.fileno()]), b"".join(streams[proc.stderr.fileno()])


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (its own session); safe from any thread."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_group(proc: subprocess.Popen) -> None:
    """:func:`kill`, then reap the process and close its pipes (from the thread that runs it)."""
    kill(proc)
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def whole_seconds(timeout: float) -> int:
    """OpenSSH's ConnectTimeout takes whole seconds: round up, at least 1."""
    return max(1, math.ceil(float(timeout)))


def _expand(paths: str | None) -> list[str]:
    return [os.path.expanduser(p) for p in (paths or "").split()]


_parsed_files: dict[str, tuple[tuple[int, int], Any]] = {}
_parsed_files_lock = threading.Lock()


def parsed_file(path: str, parse: Any) -> Any:
    """``parse(path)``, shared by every host's backend until the file changes; None if unreadable.

    paramiko would parse a known_hosts file once per host, in time quadratic in its length:
    for a fleet-sized file that made gathering cubic in the number of hosts.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    version = (st.st_mtime_ns, st.st_size)
    with _parsed_files_lock:  # one parse per version, not one per waiting thread
        cached = _parsed_files.get(path)
        if cached is None or cached[0] != version:
            try:
                cached = _parsed_files[path] = (version, parse(path))
            except OSError:
                return None
        return cached[1]


class KnownHosts:
    """A known_hosts file, read as paramiko's HostKeys reads it, but indexed: looking up a
    plain host name is a dict access, so a fleet-sized file costs O(1) per host, not O(N).
    Hashed names (``|1|salt|hash``) can only be scanned, as OpenSSH does too.

    >>> KnownHosts("~/.ssh/known_hosts").lookup("10.0.0.5")  # doctest: +SKIP
    [<paramiko.ed25519key.Ed25519Key ...>]
    """

    def __init__(self, path: str):
        self.by_name: dict[str, list[paramiko.PKey]] = {}
        self.hashed: list[tuple[str, paramiko.PKey]] = []
        with open(os.path.expanduser(path)) as f:
            for lineno, raw in enumerate(f, 1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
                except (paramiko.SSHException, paramiko.hostkeys.InvalidHostKey):
                    continue  # as OpenSSH does; a line that cannot be read grants nothing
                if entry is None or entry.key is None:
                    continue
                for name in entry.hostnames:
                    if name.startswith("|1|"):
                        self.hashed.append((name, entry.key))
                    else:
                        self.by_name.setdefault(name, []).append(entry.key)

    def lookup(self, name: str) -> list[paramiko.PKey]:
        """Keys recorded for ``name`` (``host`` or ``[host]:port``), in file order per kind."""
        found = list(self.by_name.get(name, ()))
        for hashed, key in self.hashed:
            if paramiko.util.constant_time_bytes_eq(paramiko.HostKeys.hash_host(name, hashed), hashed):
                found.append(key)
        return found


def record_file(known_hosts: str | None) -> str:
    """Where accept-new records new keys: the first --ssh-known-hosts file, else ~/.ssh/known_hosts."""
    return (_expand(known_hosts) or _expand(USER_KNOWN_HOSTS))[0]


class NonInteractiveSudo:
    """``sudo -n``: fail at once when a password would be needed, never wait for one."""

    def get_sudo_command(self, command: str, sudo_user: str | None) -> str:
        if sudo_user is None:
            return base.BaseBackend.quote("sudo -n /bin/sh -c %s", command)
        return base.BaseBackend.quote("sudo -n -u %s /bin/sh -c %s", sudo_user, command)


class AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """OpenSSH's ``accept-new``: record the key of a host never seen before.

    A host whose recorded key differs never reaches this policy: paramiko raises
    BadHostKeyException first, so a known key is never replaced.
    """

    _lock = threading.Lock()  # gathering threads may append to the same file

    def __init__(self, path: str):
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        with self._lock:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


class RejectPolicy(paramiko.MissingHostKeyPolicy):
    """``strict``: an unknown key is refused, as a typed error (paramiko's own raises a bare SSHException)."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise UnknownHostKey(f"{hostname} is not in known_hosts")


class InsecurePolicy(paramiko.MissingHostKeyPolicy):
    """Accept any key, record nothing: the reports say the run was insecure."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        return None


def host_key_policy(policy: str, known_hosts: str | None) -> paramiko.MissingHostKeyPolicy:
    """The run's ``--ssh-host-key-policy`` for a key that is not recorded, as paramiko applies it."""
    if policy == "accept-new":
        return AcceptNewPolicy(record_file(known_hosts))
    if policy == "insecure":
        return InsecurePolicy()
    if policy != "strict":
        raise ValueError(f"unknown host key policy {policy!r}")
    return RejectPolicy()


def load_known_keys(client: paramiko.SSHClient, hostname: str, port: int, files: Sequence[str]) -> None:
    """A host's known keys, as paramiko's connect() looks them up (``host``, or ``[host]:port``
    when not 22), from ``files`` in order; the first key of each type wins."""
    name = hostname if port == 22 else f"[{hostname}]:{port}"
    known = client.get_host_keys()
    for path in files:
        known_hosts = parsed_file(path, KnownHosts)
        for key in known_hosts.lookup(name) if known_hosts else ():
            if key.get_name() not in (known.lookup(name) or {}):
                known.add(name, key.get_name(), key)


def _private_key(path: str) -> paramiko.PKey | None:
    try:
        return paramiko.PKey.from_path(path)
    except Exception:  # encrypted, DSA, FIDO (-sk), ...: connect() reads it its own way
        return None


def with_loaded_key(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with its one identity file as a key loaded once per run (``pkey``), not once per host.

    paramiko's connect() reads ``key_filename`` again for every host, once per key type it
    tries. A file it would read differently keeps ``key_filename``: several files, a
    certificate beside the key, and any key ``PKey.from_path`` cannot load by itself
    (encrypted, DSA, FIDO ``-sk``), which paramiko skips or reports as it always did.
    """
    path = cfg.get("key_filename")
    if isinstance(path, list) and len(path) == 1:
        path = path[0]
    if not isinstance(path, str) or cfg.get("pkey") is not None or os.path.exists(f"{path}-cert.pub"):
        return cfg
    key = parsed_file(path, _private_key)
    return cfg if key is None else {**cfg, "pkey": key, "key_filename": None}


def warm(targets: Sequence[Any]) -> None:
    """Read once, before gathering forks, the files every paramiko host's connection reads:
    the known_hosts files and the identity file the targets name. Each gathering process
    inherits them parsed (and this module imported), instead of parsing them again.
    Only a head start: a file it cannot read or parse is left for each host's connection to
    report, as without it.

    >>> warm([])
    """
    seen: set[tuple[Any, Any, Any]] = set()
    for target in targets:
        options = target.options
        named = (options.get("known_hosts"), options.get("ssh_identity_file"), options.get("host_key_policy"))
        if target.connection != "paramiko" or named in seen:
            continue
        seen.add(named)
        known_hosts = [] if named[2] == "insecure" else _expand(USER_KNOWN_HOSTS) + _expand(named[0])
        for path in known_hosts:
            with contextlib.suppress(Exception):  # the hosts' connections say what is wrong with it
                parsed_file(path, KnownHosts)
        if named[1]:
            with contextlib.suppress(Exception):
                with_loaded_key({"key_filename": os.path.expanduser(named[1])})


# ssh_config's GSSAPI keywords, as SSHClient.connect takes them (testinfra swaps the two). paramiko 5
# has no GSSAPI: the keywords are then ignored, as any other it cannot do, not a TypeError per host.
GSSAPI_ARGS = {"gssapiauthentication": "gss_auth", "gssapikeyexchange": "gss_kex"}
CONNECT_ARGS = frozenset(inspect.signature(paramiko.SSHClient.connect).parameters)

# With a CTR cipher paramiko builds an HMAC per packet and compares it byte by byte in Python; an
# AEAD cipher's tag is checked in C. Preferred first when the host offers one (OpenSSH 6.2 and
# later); a host that does not still gets paramiko's own order. Nothing is disabled.
AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


class Transport(paramiko.Transport):
    """paramiko's Transport, remembering that a packet failed its integrity check: paramiko hands
    the error that ended it to one waiter only (``get_exception`` clears it), and authentication
    then goes on to its next method, which fails as "No existing session"."""

    integrity_failed = False

    def get_exception(self) -> Exception | None:
        exc = super().get_exception()
        if failed_integrity(exc):
            self.integrity_failed = True
        return exc


def aead_first(sock: Any, /, **transport_args: Any) -> paramiko.Transport:
    """A :class:`Transport` that prefers AES-GCM, then paramiko's own order (SSHClient's
    ``transport_factory``; paramiko 3 and 4 also pass ``gss_kex`` and ``gss_deleg_creds``).

    >>> with socket.socket() as sock:
    ...     aead_first(sock).get_security_options().ciphers[:3]
    ('aes128-gcm@openssh.com', 'aes256-gcm@openssh.com', 'aes128-ctr')
    """
    transport = Transport(sock, **transport_args)
    options = transport.get_security_options()
    aead = tuple(c for c in AEAD_CIPHERS if c in options.ciphers)
    options.ciphers = aead + tuple(c for c in options.ciphers if c not in aead)
    return transport


def handshake(client: paramiko.SSHClient, cfg: dict[str, Any], timeout: float, bastion_hop: bool = False) -> None:
    """``client.connect(**cfg)``, its failures typed; the client is closed when it fails.

    paramiko says a banner or an authentication ran out of time only in words, and a silent
    server can surface as "No existing session": the clock says what happened. A bastion that
    closes the connection during the handshake, well within the time, is HandshakeClosed.
    """
    started = time.monotonic()
    try:
        client.connect(**with_loaded_key(cfg), transport_factory=aead_first)
    except (socket.timeout, TimeoutError):
        client.close()
        raise HostTimeout("connecting", timeout) from None
    except paramiko.SSHException as exc:
        transport = client.get_transport()
        if integrity_lost(transport, exc):  # an HMAC ("Mismatched MAC"), or what paramiko said after it
            client.close()
            raise LostConnection(INTEGRITY_FAILED, phase="connecting") from None
        cause = f"{exc} {getattr(transport, 'saved_exception', None) or ''}".lower()
        client.close()
        elapsed = time.monotonic() - started
        if bastion_hop and "banner" in cause and elapsed < timeout:
            raise bastion.HandshakeClosed() from None
        if "banner" in cause or "timeout" in cause or elapsed >= timeout:
            raise HostTimeout("connecting", timeout) from None
        raise
    except BaseException as exc:
        lost = isinstance(exc, Exception) and integrity_lost(client.get_transport(), exc)  # an AEAD tag, say
        client.close()
        if lost:
            raise LostConnection(INTEGRITY_FAILED, phase="connecting") from None
        raise


def _shut(sock: Any) -> None:
    """Wake paramiko's reader thread at once: after close() it would sit in recv() on a real socket."""
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def close_client(client: paramiko.SSHClient, timeout: float) -> None:
    """Close a client's connection for good: on return its transport thread has ended."""
    transport = client.get_transport()
    if transport is not None:
        _shut(transport.sock)
    client.close()
    if transport is not None and transport is not threading.current_thread():
        transport.join(timeout)


class ChannelSocket:
    """A channel through a bastion, as the socket of the SSH connection inside it.

    paramiko builds a packet for a channel, then sends it without holding the channel's lock;
    reading from a channel can send a window adjustment too. A host's connection closing its
    channel while another thread writes could thus put data on the wire after the close, and
    OpenSSH answers that by dropping the whole bastion connection ("data packet referred to
    nonexistent channel"), every host on it with it: seen at 200 hosts. Here closing waits for
    the read or write in progress, and none starts after it.
    """

    def __init__(self, chan: paramiko.Channel, peer: tuple[str, int]):
        self._chan = chan
        self._peer = peer
        self._timeout: float | None = None
        self._cond = threading.Condition()
        self._busy = 0
        self._closing = False
        self._ready = chan.fileno()  # readable when data, or the end, is waiting

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout
        self._chan.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self._timeout

    def getpeername(self) -> tuple[str, int]:
        return self._peer

    @property
    def _closed(self) -> bool:  # paramiko's Transport looks at it, as at a socket's
        return self._closing or self._chan.closed

    def _enter(self) -> bool:
        with self._cond:
            if self._closing:
                return False
            self._busy += 1
            return True

    def _leave(self) -> None:
        with self._cond:
            self._busy -= 1
            if not self._busy:
                self._cond.notify_all()

    def send(self, data: bytes) -> int:
        if not self._enter():
            raise OSError(errno.EBADF, "Socket is closed")  # paramiko reads (errno, text)
        try:
            return self._chan.send(data)
        finally:
            self._leave()

    def recv(self, size: int) -> bytes:
        # Closed, it reads as the end of the stream (as a shut socket does), quietly.
        try:
            # Wait outside the busy section: a reader waiting for data must not hold up a close.
            ready = self._closing or bool(select.select([self._ready], [], [], self._timeout)[0])
        except (OSError, ValueError):  # closed (and its descriptor gone) meanwhile
            return b""
        if not ready:
            raise socket.timeout()
        if not self._enter():
            return b""
        try:
            return self._chan.recv(size)
        finally:
            self._leave()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            while self._busy:
                self._cond.wait()
        self._chan.close()


@dataclasses.dataclass(frozen=True)
class HopPlan:
    """How paramiko reaches one bastion of a chain: from its ProxyJump element and its ssh_config."""

    label: str  # user@bastion[:port], as errors name it
    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...]
    known_hosts: tuple[str, ...]  # its ssh_config's UserKnownHostsFile
    command: str | None = None  # its own ProxyCommand (first hop only, as OpenSSH)


class ParamikoHop:
    """A bastion's paramiko connection, its host key verified by the run's policy; each host
    behind it is a ``direct-tcpip`` channel on it, at most BASTION_CHANNELS at a time."""

    def __init__(self, client: paramiko.SSHClient, timeout: float, release: Callable[[], None] | None = None):
        self.client = client
        self.timeout = timeout
        self._release = release  # the channel this connection runs in, on the bastion before it
        self._slots = threading.BoundedSemaphore(BASTION_CHANNELS)

    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def dies_within(self, seconds: float) -> bool:
        """True if the connection is gone, or goes within ``seconds`` (a host saw its channel end:
        paramiko ends a dying connection's channels before it marks the connection inactive)."""
        transport = self.client.get_transport()
        if transport is not None and transport.is_alive() and transport is not threading.current_thread():
            transport.join(seconds)
        return not self.alive()

    def open(self, dest: tuple[str, int], shared: Shared) -> tuple[ChannelSocket, Callable[[], None]]:
        """A channel to ``dest`` through this bastion, and the function that frees its slot."""
        if not self._slots.acquire(timeout=self.timeout):
            raise HostTimeout("connecting", self.timeout)
        freed = threading.Event()

        def release() -> None:
            if not freed.is_set():
                freed.set()
                self._slots.release()

        shown = f"{dest[0]}:{dest[1]}"
        transport = self.client.get_transport()
        try:
            if transport is None:
                raise paramiko.SSHException("SSH session not active")
            chan = transport.open_channel("direct-tcpip", dest, ("127.0.0.1", 0), timeout=self.timeout)
            return ChannelSocket(chan, dest), release
        except paramiko.ChannelException as exc:
            release()
            if exc.code == paramiko.common.OPEN_FAILED_CONNECT_FAILED:
                raise ForwardFailed(shared.label, shown, str(exc.text).lower()) from None
            raise BastionError(shared.label, bastion.ChannelRefused(_refusal(shown, str(exc.text)))) from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            release()
            if "timeout opening channel" in str(exc).lower():
                shared.fail(bastion.Unresponsive(f"did not answer a channel request within {self.timeout:g}s"))
            shared.check()
            raise BastionError(
                shared.label, bastion.ChannelRefused(f"could not open a channel to {shown}: {exc}")
            ) from None

    def close(self) -> None:
        close_client(self.client, self.timeout)
        if self._release is not None:
            self._release()


def _refusal(dest: str, reason: str) -> str:
    hint = " (see its AllowTcpForwarding and PermitOpen)" if "prohibited" in reason.lower() else ""
    return f"refused to forward to {dest}: {reason.lower()}{hint}"


class ParamikoBackend(NonInteractiveSudo, testinfra.backend.paramiko.ParamikoBackend):
    """paramiko with host key checking, deadlines, TCP_NODELAY, close() and bastions.

    Known host keys come from ``~/.ssh/known_hosts``, ssh_config's
    ``UserKnownHostsFile`` and ``known_hosts`` (space-separated paths). A ``ProxyJump``
    (from ``ssh_extra_args`` or the ssh_config) goes through the run's shared bastion
    connections (``bastions``); a ``ProxyCommand`` runs as paramiko's ProxyCommand.
    """

    def __init__(
        self,
        hostspec: str,
        *args: Any,
        timeout: float = DEFAULT_TIMEOUT,
        known_hosts: str | None = None,
        host_key_policy: str = "strict",
        max_output: int = DEFAULT_MAX_OUTPUT,
        ssh_extra_args: str | None = None,
        bastions: Bastions | None = None,
        **kwargs: Any,
    ):
        super().__init__(hostspec, *args, **kwargs)
        self.timeout = float(timeout)
        self.max_output = max_output
        self.known_hosts = known_hosts
        self.host_key_policy = host_key_policy
        self.ssh_extra_args = ssh_extra_args
        self._own_bastions = bastions is None  # a backend built alone closes its own
        self.bastions = bastions if bastions is not None else Bastions()
        self._bastion: Shared | None = None  # the bastion this host is reached through
        self._release: Callable[[], None] | None = None  # frees this host's channel on it
        self._config_known_hosts: list[str] = []

    def _load_ssh_config(
        self, client: paramiko.SSHClient, cfg: dict[str, Any], ssh_config: Any, ssh_config_dir: str = "~/.ssh"
    ) -> dict[str, Any]:
        """testinfra's reading of the host's ssh_config, without its ProxyCommand (the route is
        chosen in _route; testinfra would start the command here, and choke on ``none``) and
        StrictHostKeyChecking (the run's policy decides); plus UserKnownHostsFile. Returns the lookup."""
        lookup: dict[str, Any] = dict(ssh_config.lookup(self.host.name))
        for key, value in lookup.items():
            if key == "hostname":
                cfg[key] = value
            elif key == "user":
                cfg["username"] = value
            elif key == "port":
                cfg[key] = int(value)
            elif key == "identityfile":
                cfg["key_filename"] = os.path.expanduser(value[0])
            elif key == "requesttty":
                self.get_pty = value in ("yes", "force")
            elif key in GSSAPI_ARGS and GSSAPI_ARGS[key] in CONNECT_ARGS:
                cfg[GSSAPI_ARGS[key]] = value.lower() == "yes"
            elif key == "userknownhostsfile":
                self._config_known_hosts.extend(_expand(value))
            elif key == "include":
                path = os.path.join(os.path.expanduser(ssh_config_dir), value)
                included = parsed_file(path, paramiko.SSHConfig.from_path)
                if included is None:
                    raise FileNotFoundError(2, "ssh_config Include not found", path)
                self._load_ssh_config(client, cfg, included, ssh_config_dir)
        return lookup

    def _ssh_config_path(self) -> str | None:
        if self.ssh_config:
            return self.ssh_config
        default = os.path.expanduser("~/.ssh/config")
        return default if os.path.exists(default) else None

    def _policy(self) -> paramiko.MissingHostKeyPolicy:
        return host_key_policy(self.host_key_policy, self.known_hosts)

    @property
    def client(self) -> paramiko.SSHClient:
        # Not functools.cached_property: before Python 3.12 it holds one lock for all
        # instances, so every host's handshake waited for the previous one to finish.
        client = self.__dict__.get("client")
        if client is None:
            client = self.__dict__["client"] = self._connect()
        return client

    def _connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        cfg: dict[str, Any] = {
            "hostname": self.host.name,
            "port": int(self.host.port) if self.host.port else 22,
            "username": self.host.user,
            "password": self.host.password,
            "timeout": self.timeout,
            "banner_timeout": self.timeout,
            "auth_timeout": self.timeout,
            "channel_timeout": self.timeout,
        }
        config_path = self._ssh_config_path()
        ssh_config = parsed_file(config_path, paramiko.SSHConfig.from_path) if config_path else None
        lookup: dict[str, Any] = {}
        if ssh_config is not None and config_path is not None:
            lookup = self._load_ssh_config(client, cfg, ssh_config, os.path.dirname(config_path))
        # Our policy, set after ssh_config: `StrictHostKeyChecking no` there must not
        # silently turn checking off; --ssh-host-key-policy=insecure does that, visibly.
        client.set_missing_host_key_policy(self._policy())
        if self.ssh_identity_file:
            cfg["key_filename"] = os.path.expanduser(self.ssh_identity_file)
        if self.host_key_policy != "insecure":
            load_known_keys(client, cfg["hostname"], cfg["port"], self._known_hosts_files())
        route = self._route(lookup, config_path, cfg)
        try:
            cfg["sock"] = self._open_sock(route, ssh_config, cfg)
            self._connecting = cfg["sock"]  # so that close() can abort a handshake in progress
            if self.__dict__.get("_closed"):  # closed before the socket was there to shut
                raise ConnectionAbortedError("connection closed")
            handshake(client, cfg, self.timeout)
        except (BastionError, ForwardFailed):
            client.close()
            raise
        except (socket.timeout, TimeoutError):
            client.close()
            self._blame_bastion()
            raise HostTimeout("connecting", self.timeout) from None
        except (EOFError, OSError, paramiko.SSHException) as exc:
            client.close()
            # The connection ended under the handshake; refused keys and credentials are the host's.
            self._blame_bastion(
                ended=not isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException))
            )
            raise
        except BaseException:
            client.close()
            self._blame_bastion()
            raise
        return client

    def _known_hosts_files(self, more: Sequence[str] = ()) -> list[str]:
        """~/.ssh/known_hosts first, as OpenSSH reads it, then ssh_config's and the user's files."""
        return _expand(USER_KNOWN_HOSTS) + self._config_known_hosts + list(more) + _expand(self.known_hosts)

    # ---- routes: directly, a ProxyCommand, or bastions -------------------------------

    def _route(self, lookup: dict[str, Any], config_path: str | None, cfg: dict[str, Any]) -> bastion.Route:
        """OpenSSH's order: the ssh arguments' ProxyJump/-J/ProxyCommand, then the ssh_config's."""
        settings = hostkeys.parse_args(self.ssh_extra_args, "ssh arguments")[0] if self.ssh_extra_args else []
        route = bastion.settings_route([(s.keyword, s.value) for s in settings])
        if route is not None and route.command:
            user = cfg["username"] or getpass.getuser()
            return bastion.Route(
                command=bastion.expand_tokens(route.command, cfg["hostname"], cfg["port"], user, self.host.name)
            )
        if route is not None:
            return route
        return bastion.config_route(lookup, lambda: _proxy_keywords(config_path, self.host.name))

    def _open_sock(self, route: bastion.Route, ssh_config: Any, cfg: dict[str, Any]) -> Any:
        if route.command:
            return paramiko.ProxyCommand(route.command)
        if route.hops:
            chain = self._plan_chain(route.hops, ssh_config, ())
            self._bastion = shared = self._shared(chain)
            hop = shared.get(self.timeout)
            chan, self._release = hop.open((cfg["hostname"], cfg["port"]), shared)
            return chan
        return self._connect_socket(cfg["hostname"], cfg["port"])

    def _plan_chain(self, hops: Sequence[bastion.Hop], ssh_config: Any, seen: tuple[str, ...]) -> tuple[HopPlan, ...]:
        """Each bastion of a ProxyJump as paramiko reaches it; the first one's own ssh_config
        ProxyJump (or ProxyCommand) is followed, as OpenSSH does."""
        first = hops[0]
        if first.host in seen or len(seen) >= bastion.MAX_HOPS:
            raise BastionError(str(first), bastion.RouteError(f"the ssh_config's ProxyJumps loop through {first.host}"))
        lookup = dict(ssh_config.lookup(first.host)) if ssh_config is not None else {}
        own = bastion.config_route(lookup, lambda: _proxy_keywords(self._ssh_config_path(), first.host))
        before = self._plan_chain(own.hops, ssh_config, (*seen, first.host)) if own.hops else ()
        plans = [self._hop_plan(first, lookup, own.command)]
        for hop in hops[1:]:
            plans.append(self._hop_plan(hop, dict(ssh_config.lookup(hop.host)) if ssh_config is not None else {}))
        return before + tuple(plans)

    def _hop_plan(self, hop: bastion.Hop, lookup: dict[str, Any], command: str | None = None) -> HopPlan:
        port = hop.port or int(lookup.get("port", 22))
        user = hop.user or lookup.get("user") or getpass.getuser()
        # The bastion is offered the host's identity too (OpenSSH's own ProxyJump would not).
        keys = [os.path.expanduser(k) for k in lookup.get("identityfile", [])]
        if self.ssh_identity_file:
            keys.append(os.path.expanduser(self.ssh_identity_file))
        return HopPlan(
            label=f"{user}@{hop.host}" + (f":{port}" if port != 22 else ""),
            hostname=lookup.get("hostname", hop.host),
            port=port,
            user=user,
            key_files=tuple(keys),
            known_hosts=tuple(_expand(lookup.get("userknownhostsfile"))),
            command=command,
        )

    def _shared(self, chain: tuple[HopPlan, ...]) -> Shared:
        key = ("paramiko", chain, self.host_key_policy, self.known_hosts)
        return self.bastions.shared(key, lambda: chain[-1].label, lambda shared: self._open_hop(chain))

    def _open_hop(self, chain: tuple[HopPlan, ...]) -> ParamikoHop:
        """Connect to the last bastion of ``chain``, through the ones before it."""
        hop = chain[-1]
        release = None
        if len(chain) > 1:
            upstream = self._shared(chain[:-1])
            sock, release = upstream.get(self.timeout).open((hop.hostname, hop.port), upstream)
        elif hop.command:
            sock = paramiko.ProxyCommand(hop.command)
        else:
            try:
                sock = self._connect_socket(hop.hostname, hop.port)
            except (socket.timeout, TimeoutError):
                raise HostTimeout("connecting", self.timeout) from None
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(self._policy())
        if self.host_key_policy != "insecure":
            load_known_keys(client, hop.hostname, hop.port, self._known_hosts_files(hop.known_hosts))
        cfg = {
            "hostname": hop.hostname,
            "port": hop.port,
            "username": hop.user,
            "key_filename": list(hop.key_files) or None,
            "sock": sock,
            "timeout": self.timeout,
            "banner_timeout": self.timeout,
            "auth_timeout": self.timeout,
            "channel_timeout": self.timeout,
        }
        try:
            handshake(client, cfg, self.timeout, bastion_hop=True)
        except BaseException:
            if release is not None:
                release()
            raise
        return ParamikoHop(client, self.timeout, release)

    def _blame_bastion(self, ended: bool = False) -> None:
        """When this host's bastion has died, that is the cause (BastionError), whatever the symptom
        here. ``ended``: this host's connection ended under it; if the bastion's goes too, within a
        second, it went first."""
        if self._bastion is None:
            return
        hop = self._bastion.get(self.timeout)  # raises if the bastion is known gone
        if ended and hop.dies_within(1.0):
            self._bastion.check()

    def _connect_socket(self, hostname: str, port: int) -> socket.socket:
        sock = socket.create_connection((hostname, port), timeout=self.timeout)
        # Without it every further command on the connection waits ~40 ms (Nagle + delayed ACK).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def run_script(self, command: str, script: bytes) -> ScriptResult:
        """Run ``command`` (through sudo when asked) with ``script`` on its standard input."""
        return ScriptResult(*self._exec_command(self.encode(self.get_command(command)), stdin=script))

    def _exec_command(self, command: bytes, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
        try:
            rc, stdout, stderr = self._exec_once(command, stdin)
        except (BastionError, ForwardFailed, OutputLimit):
            raise
        except HostTimeout:
            self._blame_bastion()
            raise
        except Exception as exc:
            self._blame_bastion(ended=True)
            lost = connection_lost(self._transport(), exc)
            if lost is not None:
                raise lost from exc
            raise
        if rc == -1:  # the channel closed without an exit status: the connection ended, or a signal
            self._blame_bastion(ended=True)
            lost = connection_lost(self._transport())
            if lost is not None:
                raise lost
        return rc, stdout, stderr

    def _transport(self) -> paramiko.Transport | None:
        """The connection's transport, if it was made (never connects: ``client`` would)."""
        client = self.__dict__.get("client")
        return client.get_transport() if client is not None else None

    def _exec_once(self, command: bytes, stdin: bytes) -> tuple[int, bytes, bytes]:
        transport = self.client.get_transport()
        assert transport is not None
        deadline = time.monotonic() + self.timeout
        chan = transport.open_session(timeout=self.timeout)
        try:
            if self.get_pty:
                chan.get_pty()
            chan.exec_command(command)
            try:
                if stdin:
                    chan.sendall(stdin)
                chan.shutdown_write()  # EOF: `sh` ends with the script
            except OSError:
                if not chan.closed:
                    raise
                # Closed under us: the command may have ended without reading it all. Without an
                # exit status (-1), _exec_command tells a lost connection from a signal.
            stdout, stderr = self._read_both(chan, deadline)
            if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise HostTimeout("running", self.timeout)
            return chan.recv_exit_status(), stdout, stderr
        finally:
            chan.close()

    def _read_both(self, chan: paramiko.Channel, deadline: float) -> tuple[bytes, bytes]:
        """stdout and stderr as they come, to their end; past max_output bytes in all, an error at once.

        Both at once: a host flooding stderr while its stdout stays open must be stopped by
        the cap, not by the clock. The channel's fileno() is readable when either has data.
        """
        out: list[bytes] = []
        err: list[bytes] = []
        size = 0
        fd = chan.fileno()
        while True:
            if chan.recv_ready():
                data, into = chan.recv(65536), out
            elif chan.recv_stderr_ready():
                data, into = chan.recv_stderr(65536), err
            elif chan.eof_received or chan.closed:
                return b"".join(out), b"".join(err)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                    raise HostTimeout("running", self.timeout)
                continue
            size += len(data)
            if size > self.max_output:
                raise OutputLimit(self.max_output)
            into.append(data)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        # No silent reconnect-and-retry: one connection, one attempt, one deadline.
        cmd = self.encode(self.get_command(command, *args))
        rc, stdout, stderr = self._exec_command(cmd)
        return self.result(rc, cmd, stdout, stderr)

    def close(self) -> None:
        """Close the connection; a handshake or a command in flight on another thread then fails at once."""
        self._closed = True
        connecting = self.__dict__.pop("_connecting", None)
        _shut(connecting)
        if isinstance(connecting, ChannelSocket):
            connecting.close()  # a host behind a bastion: its channel is its socket
        client = self.__dict__.pop("client", None)
        if client is not None:
            close_client(client, self.timeout)
        release, self._release = self._release, None
        if release is not None:
            release()
        if self._own_bastions:
            self.bastions.close()


def _proxy_keywords(config_path: str | None, host: str) -> list[str]:
    """ProxyJump and ProxyCommand as the ssh_config gives them to ``host``, in file order."""
    if not config_path:
        return []
    found = hostkeys.config_settings(config_path, host, config_path, watched=("proxyjump", "proxycommand"))
    return [s.keyword for s in found]


def openssh_host_key_options(policy: str, known_hosts: str | None) -> list[str]:
    """The policy's OpenSSH options, as argv. CheckHostIP=no: the key is checked for the name
    connected to, as paramiko does; OpenSSH's extra IP check would also write IP entries to known_hosts."""
    if policy == "insecure":
        return ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "CheckHostIP=no"]
    checking = {"strict": "yes", "accept-new": "accept-new"}[policy]
    options = ["-o", f"StrictHostKeyChecking={checking}", "-o", "CheckHostIP=no"]
    if known_hosts:
        # OpenSSH records accept-new keys in the first file listed.
        options += ["-o", f"UserKnownHostsFile={known_hosts} {USER_KNOWN_HOSTS}"]
    return options


# Runs an OpenSSH master ("$@") until the suite closes this shell's standard input, or dies
# (the kernel closes it then): a master never outlives the run. Exits when the master does.
_MASTER_WATCHDOG = (
    'exec 3<&0; "$@" </dev/null 3<&- & master=$!; '
    '(read -r _ <&3; kill "$master" 2>/dev/null) & watcher=$!; '
    'wait "$master"; status=$?; kill "$watcher" 2>/dev/null; exit "$status"'
)
# What a host's ssh says when the connection it ran through ended under it.
_CLOSED_UNDER_IT = ("Connection closed by", "closed by remote host", "Broken pipe", "kex_exchange_identification")
# What a `ssh -W` through a master says when the bastion did not open the channel; the master's
# own log says why ("channel 3: open failed: connect failed: Connection refused").
_FORWARD_REFUSED = "Stdio forwarding request failed"


def forward_failure(said: str, label: str, dest: str) -> BaseException | None:
    """The master's words (``said``) on a channel the bastion ``label`` did not open to ``dest``:
    a refusal (the bastion's error), or the host unreachable from it (the host's)."""
    reasons = [line.split("open failed:", 1)[1].strip() for line in said.splitlines() if "open failed:" in line]
    if any("prohibited" in r for r in reasons):
        return BastionError(label, bastion.ChannelRefused(_refusal(dest, "administratively prohibited")))
    failed = [r for r in reasons if r.startswith("connect failed")]
    if failed:
        # Hosts failing at the same moment share the log: one reason only if they agree.
        return ForwardFailed(label, dest, failed[0] if len(set(failed)) == 1 else "connect failed")
    if reasons:
        return BastionError(label, bastion.ChannelRefused(_refusal(dest, reasons[-1])))
    return None


class OpenSshMaster:
    """An OpenSSH ControlMaster to one bastion (``argv`` holds the run's host-key options); hosts
    behind it reach it with :attr:`proxy_command`, a ``ssh -W`` that uses its control socket
    and never connects on its own."""

    def __init__(self, argv: Sequence[str], control_path: str, hop_host: str, timeout: float):
        self.control_path = control_path
        self.timeout = timeout
        self.log_path = control_path + ".log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["sh", "-c", _MASTER_WATCHDOG, "sh", *argv],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        # ProxyCommand=false: should the socket be gone, the client fails rather than log in itself.
        client = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ControlMaster=no"]
        client += ["-o", f"ControlPath={control_path}", "-o", "ProxyCommand=false"]
        self.proxy_command = shlex.join([*client, "-W", "[%h]:%p", hop_host])

    def wait_ready(self) -> None:
        """Until its control socket answers; the master's own failure, typed, if it exits first."""
        deadline = time.monotonic() + self.timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise self.failure()
            if time.monotonic() > deadline:
                self.close()
                raise HostTimeout("connecting", self.timeout)
            time.sleep(0.02)

    def _answers(self) -> bool:
        if not os.path.exists(self.control_path):
            return False
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(self.control_path)
            except OSError:
                return False
        return True

    def failure(self) -> BaseException:
        """Why the master ended, from what it said."""
        said = self.said()
        failure = openssh_failure(said)
        if isinstance(failure, TimeoutError):
            return HostTimeout("connecting", self.timeout)
        if isinstance(failure, SshFailed) and "kex_exchange_identification" in said:
            return bastion.HandshakeClosed()
        return failure

    def alive(self) -> bool:
        return self.proc.poll() is None and os.path.exists(self.control_path)

    def said(self, since: int = 0) -> str:
        """What the master has logged, from byte ``since`` (see :meth:`log_size`)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(since)
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def dies_within(self, seconds: float) -> bool:
        """True if the master is gone, or goes within ``seconds`` (a host saw its connection end)."""
        try:
            self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            return not self.alive()
        return True

    def close(self) -> None:
        """Stop the master: the watchdog ends it when its standard input closes; SIGKILL if it lingers."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            kill(self.proc)
            self.proc.wait()


class SshBackend(NonInteractiveSudo, testinfra.backend.ssh.SshBackend):
    """OpenSSH with BatchMode (never prompts), a host key policy, a process deadline,
    extra known_hosts, sshpass reading the password from its environment (not argv), and
    bastions: a ``ProxyJump`` OpenSSH would take (``ssh -G`` says) goes through the run's
    ControlMaster for that bastion, verified with the run's policy."""

    ssh_extra_args: str | None  # testinfra's; without its -J once the route is the suite's

    def __init__(
        self,
        hostspec: str,
        *args: Any,
        timeout: float = DEFAULT_TIMEOUT,
        known_hosts: str | None = None,
        host_key_policy: str = "strict",
        max_output: int = DEFAULT_MAX_OUTPUT,
        bastions: Bastions | None = None,
        **kwargs: Any,
    ):
        # testinfra formats timeout into ConnectTimeout, which takes whole seconds.
        super().__init__(hostspec, *args, timeout=whole_seconds(timeout), **kwargs)
        self.max_output = max_output
        self.known_hosts = known_hosts
        self.host_key_policy = host_key_policy
        self._own_bastions = bastions is None  # a backend built alone closes its own
        self.bastions = bastions if bastions is not None else Bastions()
        self._procs: set[subprocess.Popen] = set()
        self._closed = False
        self._routed = False
        self._proxy: str | None = None  # ProxyCommand through the bastion's master
        self._bastion: Shared | None = None
        self._dest = self.host.name

    def _host_key_options(self) -> tuple[list[str], list[str]]:
        """The policy's options as testinfra's command template takes them (values apart)."""
        argv = openssh_host_key_options(self.host_key_policy, self.known_hosts)
        options, values = [], []
        for name, value in zip(argv[::2], argv[1::2]):
            if value.startswith("UserKnownHostsFile=") and self.host_key_policy != "insecure":  # user's paths
                options.append(f"{name} UserKnownHostsFile=%s")
                values.append(value.split("=", 1)[1])
            else:
                options.append(f"{name} {value}")
        return options, values

    def _build_ssh_command(self, command: str) -> tuple[list[str], list[str]]:
        cmd, cmd_args = super()._build_ssh_command(command)
        if self.host.password:
            # testinfra passes `sshpass -p PASSWORD`, visible to every user in ps.
            cmd, cmd_args = ["sshpass", "-e", "ssh", *cmd[4:]], cmd_args[1:]
        options, values = self._host_key_options()
        if self._proxy is not None:
            # First, so that no ProxyJump or ProxyCommand after it (arguments, ssh_config) applies.
            options.append("-o %s")
            values.append(f"ProxyCommand={self._proxy}")
        if not self.host.password:
            options.append("-o BatchMode=yes")
        # One command per host needs no master connection, and a master left behind (an
        # ansible.cfg's ControlPersist) would outlive the run.
        options.append("-o ControlMaster=no")
        # OpenSSH keeps the first value it is given for an option: ours come right after
        # `ssh`, before --ssh-extra-args or an inventory's ssh args, so none can weaken them.
        at = cmd.index("ssh") + 1
        return cmd[:at] + options + cmd[at:], values + cmd_args

    # ---- bastions ---------------------------------------------------------------------

    def _route(self) -> None:
        """Once: what OpenSSH would do for this host (``ssh -G``); a ProxyJump goes through the
        run's master for that bastion instead of a login of its own to it."""
        if self._routed:
            return
        cmd, args = testinfra.backend.ssh.SshBackend._build_ssh_command(self, "true")
        if cmd[0] == "sshpass":
            cmd, args = cmd[3:], args[1:]
        said = self._settings_of(self.quote(" ".join([*cmd[:-1], "-G %s"]), *args[:-1]))
        self._dest = f"{said.get('hostname', self.host.name)}:{said.get('port', '22')}"
        jump = said.get("proxyjump", "none")
        if jump.lower() != "none":
            self._bastion = self._master(bastion.parse_jump(jump), ())
            self._proxy = self._bastion.get(self.timeout).proxy_command
            if self.ssh_extra_args:
                self.ssh_extra_args = hostkeys.without_jump(self.ssh_extra_args)
        self._routed = True

    def _settings_of(self, command: str) -> dict[str, str]:
        """``ssh -G``'s settings (lowercase keywords), from a shell command line."""
        try:
            proc = subprocess.run(
                command, shell=True, capture_output=True, timeout=self.timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise HostTimeout("connecting", self.timeout) from None
        if proc.returncode != 0:
            # ssh -G connects to nothing: only a name it could not canonicalize is more than its words.
            lines = said_lines(proc.stderr.decode("utf-8", "replace"))
            resolve = next((line for line in lines if _UNRESOLVED in line), None)
            raise _unresolved(resolve) if resolve is not None else SshFailed(last_words(lines))
        pairs = (line.split(" ", 1) for line in proc.stdout.decode("utf-8", "replace").splitlines())
        return {p[0].lower(): p[1] for p in pairs if len(p) == 2}

    def _config_file(self) -> str | None:
        """The one ssh_config OpenSSH reads here: --ssh-config, else the last -F in the arguments."""
        if self.ssh_config:
            return self.ssh_config
        files = hostkeys.parse_args(self.ssh_extra_args, "ssh arguments")[1] if self.ssh_extra_args else []
        return files[-1] if files else None

    def _master(self, hops: Sequence[bastion.Hop], seen: tuple[str, ...]) -> Shared:
        """The run's master for the last of ``hops``, reached through the ones before it."""
        last, before = hops[-1], tuple(hops[:-1])
        key = (
            "openssh",
            tuple(hops),
            self._config_file(),
            self.ssh_identity_file,
            self.host_key_policy,
            self.known_hosts,
        )
        return self.bastions.shared(
            key, lambda: str(last), lambda shared: self._start_master(shared, last, before, (*seen, last.host))
        )

    def _start_master(
        self, shared: Shared, hop: bastion.Hop, before: tuple[bastion.Hop, ...], seen: tuple[str, ...]
    ) -> OpenSshMaster:
        config = self._config_file()
        where = (["-F", config] if config else []) + (["-l", hop.user] if hop.user else [])
        where += ["-p", str(hop.port)] if hop.port else []
        said = self._settings_of(shlex.join(["ssh", *where, "-G", "--", hop.host]))
        port = int(said.get("port", "22"))
        shared.label = f"{said.get('user', getpass.getuser())}@{hop.host}" + (f":{port}" if port != 22 else "")
        try:
            # What the suite does not set for the master, OpenSSH reads from the ssh_config.
            hostkeys.check(hop.host, [], config, self.known_hosts, self.host_key_policy)
        except UsageProblem as exc:
            raise bastion.ConfigRefused(str(exc)) from None
        own = said.get("proxyjump", "none")
        upstream = before or (bastion.parse_jump(own) if own.lower() != "none" else ())
        options = []
        through: Shared | None = None
        if upstream:
            if upstream[-1].host in seen or len(seen) > bastion.MAX_HOPS:
                raise bastion.RouteError(f"the ssh_config's ProxyJumps loop through {upstream[-1].host}")
            through = self._master(upstream, seen)
            options += ["-o", f"ProxyCommand={through.get(self.timeout).proxy_command}"]
        control_path = self.bastions.control_path()
        seconds = str(whole_seconds(self.timeout))
        argv = ["ssh", *openssh_host_key_options(self.host_key_policy, self.known_hosts), *options]
        for option in (
            "BatchMode=yes",
            f"ConnectTimeout={seconds}",
            "ControlMaster=yes",
            f"ControlPath={control_path}",
            "ControlPersist=no",
            "LogLevel=INFO",  # its log says why a channel was not opened (the client is only told "refused")
            # A bastion that stops answering is given up after about twice the timeout.
            f"ServerAliveInterval={seconds}",
            "ServerAliveCountMax=2",
            # Only forwarding: nothing an ssh_config adds for the bastion runs here.
            "ClearAllForwardings=yes",
            "PermitLocalCommand=no",
            "ForkAfterAuthentication=no",
        ):
            argv += ["-o", option]
        argv += ["-N", *where, *(["-i", self.ssh_identity_file] if self.ssh_identity_file else []), "--", hop.host]
        before_log = through.get(self.timeout).log_size() if through is not None else 0
        master = OpenSshMaster(argv, control_path, hop.host, self.timeout)
        try:
            master.wait_ready()
        except BaseException:
            master.close()
            if through is not None and _FORWARD_REFUSED in master.said():
                # The bastion before it did not open the channel to this one: its words say why.
                said_there = through.get(self.timeout).said(before_log)
                raise forward_failure(said_there, through.label, f"{hop.host}:{port}") or bastion.ChannelRefused(
                    f"{through.label} did not open a channel to it"
                ) from None
            raise
        return master

    def _blame_bastion(self, stderr: str, log_from: int) -> None:
        """When this host failed through a bastion, the bastion's part, if any, as its own error."""
        if self._bastion is None:
            return
        master = self._bastion.get(self.timeout)  # raises if the bastion is known gone
        if any(line.startswith(_FORWARD_REFUSED) for line in said_lines(stderr)):
            said = master.said(log_from)
            raise forward_failure(said, self._bastion.label, self._dest) or BastionError(
                self._bastion.label, bastion.ChannelRefused(f"did not open a channel to {self._dest}")
            )
        # The connection ended under the host: if the master goes too, it was the bastion's.
        if any(s in stderr for s in _CLOSED_UNDER_IT) and master.dies_within(1.0):
            self._bastion.check()

    # ---- running ----------------------------------------------------------------------

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        self._route()
        return super().run(command, *args, **kwargs)

    def run_local(self, command: str, *args: str) -> base.CommandResult:
        cmd = self.encode(self.quote(command, *args))
        rc, stdout, stderr = self._ssh(cmd, b"")
        return self.result(rc, cmd, stdout, stderr)

    def run_script(self, command: str, script: bytes) -> ScriptResult:
        """Run ``command`` (through sudo when asked) with ``script`` on its standard input."""
        self._route()
        cmd, cmd_args = self._build_ssh_command(self.get_command(command))
        return ScriptResult(*self._ssh(self.encode(self.quote(" ".join(cmd), *cmd_args)), script))

    def _ssh(self, cmd: bytes, stdin: bytes) -> tuple[int, bytes, bytes]:
        """One ssh process: its deadline, its input, and OpenSSH's own failures as typed errors."""
        log_from = 0
        if self._bastion is not None:
            log_from = self._bastion.get(self.timeout).log_size()  # raises for a bastion known gone
        env = dict(os.environ, SSHPASS=self.host.password) if self.host.password else None
        # ConnectTimeout bounds connecting; the process deadline adds `timeout` for the command.
        limit = 2 * self.timeout
        proc = subprocess.Popen(
            cmd,
            shell=True,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._procs.add(proc)
        try:
            if self._closed:
                kill(proc)
            stdout, stderr = collect(proc, stdin, time.monotonic() + limit, self.max_output, self.timeout)
        except (HostTimeout, OutputLimit):
            kill_group(proc)
            raise
        finally:
            self._procs.discard(proc)
            # Now, not when the Popen is collected: a failure's traceback keeps it alive until then.
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        if self._closed:
            raise ConnectionAbortedError("connection closed")
        if proc.returncode == 255:  # OpenSSH's own failure, not the remote command's
            said = stderr.decode("utf-8", "replace")
            self._blame_bastion(said, log_from)
            failure = openssh_failure(said)
            raise HostTimeout("connecting", self.timeout) if isinstance(failure, TimeoutError) else failure
        return proc.returncode, stdout, stderr

    def close(self) -> None:
        """Each command is its own ssh process: kill any still running."""
        self._closed = True
        for proc in list(self._procs):
            kill(proc)
        if self._own_bastions:
            self.bastions.close()


class LocalBackend(NonInteractiveSudo, testinfra.backend.local.LocalBackend):
    """This machine, with ``sudo -n``."""

    def __init__(
        self, *args: Any, timeout: float = DEFAULT_TIMEOUT, max_output: int = DEFAULT_MAX_OUTPUT, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.timeout = float(timeout)
        self.max_output = max_output

    def run_script(self, command: str, script: bytes) -> ScriptResult:
        """Run ``command`` (through sudo when asked) with ``script`` on its standard input."""
        proc = subprocess.Popen(
            self.encode(self.get_command(command)),
            shell=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = collect(proc, script, time.monotonic() + self.timeout, self.max_output, self.timeout)
        except (HostTimeout, OutputLimit):
            kill_group(proc)
            raise
        return ScriptResult(proc.returncode, stdout, stderr)

    def close(self) -> None:
        """Nothing to close."""
