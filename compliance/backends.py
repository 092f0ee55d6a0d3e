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

import dataclasses
import logging
import math
import os
import select
import selectors
import signal
import socket
import subprocess
import threading
import time
from typing import Any

import paramiko
import testinfra.backend.local
import testinfra.backend.paramiko
import testinfra.backend.ssh
from testinfra.backend import base

from compliance.options import DEFAULT_MAX_OUTPUT, DEFAULT_TIMEOUT

USER_KNOWN_HOSTS = "~/.ssh/known_hosts"
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
        )  # fmt: skip
    if target.connection == "ssh":
        return SshBackend(
            target.hostspec, ssh_config=options.get("ssh_config"), ssh_identity_file=identity,
            sudo=bool(options.get("sudo")), sudo_user=options.get("sudo_user"), timeout=timeout,
            known_hosts=options.get("known_hosts"), host_key_policy=policy,
            ssh_extra_args=options.get("ssh_extra_args"), controlpersist=0,  # leave no master connection behind
            max_output=max_output,
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
    """The host refused every credential offered."""


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


# OpenSSH reports its failures only as text on stderr (exit status 255): this table is the
# one place that reads it, turning each into the type the rest of the suite works with.
_OPENSSH_FAILURES: tuple[tuple[str, type[BaseException]], ...] = (
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", HostKeyMismatch),
    ("Host key verification failed", UnknownHostKey),
    ("Permission denied", AuthenticationFailed),
    ("Connection refused", ConnectionRefusedError),
    ("timed out", TimeoutError),  # ConnectTimeout; the backend makes it a HostTimeout
    ("Could not resolve hostname", socket.gaierror),
    ("No route to host", OSError),
    ("Network is unreachable", OSError),
)


def openssh_failure(stderr: str) -> BaseException:
    """The exception for an OpenSSH client that exited 255 with ``stderr``."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    for needle, kind in _OPENSSH_FAILURES:
        if needle in stderr:
            return kind(last)
    return SshFailed(last)


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


class ParamikoBackend(NonInteractiveSudo, testinfra.backend.paramiko.ParamikoBackend):
    """paramiko with host key checking, deadlines, TCP_NODELAY and close().

    Known host keys come from ``~/.ssh/known_hosts``, ssh_config's
    ``UserKnownHostsFile`` and ``known_hosts`` (space-separated paths).
    """

    def __init__(
        self,
        hostspec: str,
        *args: Any,
        timeout: float = DEFAULT_TIMEOUT,
        known_hosts: str | None = None,
        host_key_policy: str = "strict",
        max_output: int = DEFAULT_MAX_OUTPUT,
        **kwargs: Any,
    ):
        super().__init__(hostspec, *args, **kwargs)
        self.timeout = float(timeout)
        self.max_output = max_output
        self.known_hosts = known_hosts
        self.host_key_policy = host_key_policy
        self._config_known_hosts: list[str] = []

    def _load_ssh_config(self, client: paramiko.SSHClient, cfg: dict[str, Any], ssh_config: Any, *args: Any) -> None:
        super()._load_ssh_config(client, cfg, ssh_config, *args)
        files = ssh_config.lookup(self.host.name).get("userknownhostsfile")
        self._config_known_hosts.extend(_expand(files))

    def _ssh_config_path(self) -> str | None:
        if self.ssh_config:
            return self.ssh_config
        default = os.path.expanduser("~/.ssh/config")
        return default if os.path.exists(default) else None

    def _policy(self) -> paramiko.MissingHostKeyPolicy:
        if self.host_key_policy == "accept-new":
            return AcceptNewPolicy(record_file(self.known_hosts))
        if self.host_key_policy == "insecure":
            return InsecurePolicy()
        if self.host_key_policy != "strict":
            raise ValueError(f"unknown host key policy {self.host_key_policy!r}")
        return RejectPolicy()

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
        if ssh_config is not None and config_path is not None:
            self._load_ssh_config(client, cfg, ssh_config, os.path.dirname(config_path))
        # Our policy, set after ssh_config: `StrictHostKeyChecking no` there must not
        # silently turn checking off; --ssh-host-key-policy=insecure does that, visibly.
        client.set_missing_host_key_policy(self._policy())
        if self.ssh_identity_file:
            cfg["key_filename"] = os.path.expanduser(self.ssh_identity_file)
        if self.host_key_policy != "insecure":
            self._load_known_keys(client, cfg["hostname"], cfg["port"])
        started = time.monotonic()
        try:
            if "sock" not in cfg:
                cfg["sock"] = self._connect_socket(cfg["hostname"], cfg["port"])
            self._connecting = cfg["sock"]  # so that close() can abort a handshake in progress
            if self.__dict__.get("_closed"):  # closed before the socket was there to shut
                raise ConnectionAbortedError("connection closed")
            client.connect(**cfg)
        except (socket.timeout, TimeoutError):
            client.close()
            raise HostTimeout("connecting", self.timeout) from None
        except paramiko.SSHException as exc:
            transport = client.get_transport()
            cause = f"{exc} {getattr(transport, 'saved_exception', None) or ''}".lower()
            client.close()
            # paramiko says a banner or an authentication ran out of time only in words, and a
            # silent server can surface as "No existing session": the clock says what happened.
            if "banner" in cause or "timeout" in cause or time.monotonic() - started >= self.timeout:
                raise HostTimeout("connecting", self.timeout) from None
            raise
        except BaseException:
            client.close()
            raise
        return client

    def _load_known_keys(self, client: paramiko.SSHClient, hostname: str, port: int) -> None:
        """This host's known keys, as paramiko's connect() looks them up: ~/.ssh/known_hosts
        first, as OpenSSH does, then the user's files; the first key of each type wins."""
        name = hostname if port == 22 else f"[{hostname}]:{port}"
        known = client.get_host_keys()
        for path in _expand(USER_KNOWN_HOSTS) + self._config_known_hosts + _expand(self.known_hosts):
            known_hosts = parsed_file(path, KnownHosts)
            for key in known_hosts.lookup(name) if known_hosts else ():
                if key.get_name() not in (known.lookup(name) or {}):
                    known.add(name, key.get_name(), key)

    def _connect_socket(self, hostname: str, port: int) -> socket.socket:
        sock = socket.create_connection((hostname, port), timeout=self.timeout)
        # Without it every further command on the connection waits ~40 ms (Nagle + delayed ACK).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def run_script(self, command: str, script: bytes) -> ScriptResult:
        """Run ``command`` (through sudo when asked) with ``script`` on its standard input."""
        return ScriptResult(*self._exec_command(self.encode(self.get_command(command)), stdin=script))

    def _exec_command(self, command: bytes, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
        transport = self.client.get_transport()
        assert transport is not None
        deadline = time.monotonic() + self.timeout
        chan = transport.open_session(timeout=self.timeout)
        try:
            if self.get_pty:
                chan.get_pty()
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()  # EOF: `sh` ends with the script
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
        if isinstance(connecting, socket.socket):
            try:
                connecting.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        client = self.__dict__.pop("client", None)
        transport = client.get_transport() if client is not None else None
        if transport is not None and isinstance(transport.sock, socket.socket):
            # paramiko's reader thread holds the socket open in recv() after close();
            # shutdown wakes it at once, so the connection is really gone on return.
            try:
                transport.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if client is not None:
            client.close()
        if transport is not None and transport is not threading.current_thread():
            transport.join(self.timeout)


class SshBackend(NonInteractiveSudo, testinfra.backend.ssh.SshBackend):
    """OpenSSH with BatchMode (never prompts), a host key policy, a process deadline,
    extra known_hosts, and sshpass reading the password from its environment (not argv)."""

    def __init__(
        self,
        hostspec: str,
        *args: Any,
        timeout: float = DEFAULT_TIMEOUT,
        known_hosts: str | None = None,
        host_key_policy: str = "strict",
        max_output: int = DEFAULT_MAX_OUTPUT,
        **kwargs: Any,
    ):
        # testinfra formats timeout into ConnectTimeout, which takes whole seconds.
        super().__init__(hostspec, *args, timeout=whole_seconds(timeout), **kwargs)
        self.max_output = max_output
        self.known_hosts = known_hosts
        self.host_key_policy = host_key_policy
        self._procs: set[subprocess.Popen] = set()
        self._closed = False

    def _host_key_options(self) -> tuple[list[str], list[str]]:
        """The policy's options. CheckHostIP=no: the key is checked for the name connected to,
        as paramiko does; OpenSSH's extra IP check would also write IP entries to known_hosts."""
        if self.host_key_policy == "insecure":
            return ["-o StrictHostKeyChecking=no", "-o UserKnownHostsFile=/dev/null", "-o CheckHostIP=no"], []
        checking = {"strict": "yes", "accept-new": "accept-new"}[self.host_key_policy]
        options = [f"-o StrictHostKeyChecking={checking}", "-o CheckHostIP=no"]
        if not self.known_hosts:
            return options, []
        # OpenSSH records accept-new keys in the first file listed.
        return options + ["-o UserKnownHostsFile=%s"], [f"{self.known_hosts} {USER_KNOWN_HOSTS}"]

    def _build_ssh_command(self, command: str) -> tuple[list[str], list[str]]:
        cmd, cmd_args = super()._build_ssh_command(command)
        if self.host.password:
            # testinfra passes `sshpass -p PASSWORD`, visible to every user in ps.
            cmd, cmd_args = ["sshpass", "-e", "ssh", *cmd[4:]], cmd_args[1:]
        options, values = self._host_key_options()
        if not self.host.password:
            options.append("-o BatchMode=yes")
        # One command per host needs no master connection, and a master left behind (an
        # ansible.cfg's ControlPersist) would outlive the run.
        options.append("-o ControlMaster=no")
        # OpenSSH keeps the first value it is given for an option: ours come right after
        # `ssh`, before --ssh-extra-args or an inventory's ssh args, so none can weaken them.
        at = cmd.index("ssh") + 1
        return cmd[:at] + options + cmd[at:], values + cmd_args

    def run_local(self, command: str, *args: str) -> base.CommandResult:
        cmd = self.encode(self.quote(command, *args))
        rc, stdout, stderr = self._ssh(cmd, b"")
        return self.result(rc, cmd, stdout, stderr)

    def run_script(self, command: str, script: bytes) -> ScriptResult:
        """Run ``command`` (through sudo when asked) with ``script`` on its standard input."""
        cmd, cmd_args = self._build_ssh_command(self.get_command(command))
        return ScriptResult(*self._ssh(self.encode(self.quote(" ".join(cmd), *cmd_args)), script))

    def _ssh(self, cmd: bytes, stdin: bytes) -> tuple[int, bytes, bytes]:
        """One ssh process: its deadline, its input, and OpenSSH's own failures as typed errors."""
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
        if self._closed:
            raise ConnectionAbortedError("connection closed")
        if proc.returncode == 255:  # OpenSSH's own failure, not the remote command's
            failure = openssh_failure(stderr.decode("utf-8", "replace"))
            raise HostTimeout("connecting", self.timeout) if isinstance(failure, TimeoutError) else failure
        return proc.returncode, stdout, stderr

    def close(self) -> None:
        """Each command is its own ssh process: kill any still running."""
        self._closed = True
        for proc in list(self._procs):
            kill(proc)


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
