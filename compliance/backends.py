"""testinfra's paramiko and OpenSSH backends, hardened for unattended fleet audits.

Both verify host keys, bound connecting and every command by ``timeout`` seconds,
never prompt, and can be closed. :func:`install` puts them in testinfra's backend
registry, so ``paramiko://`` and ``ssh://`` hosts (including those an Ansible
inventory resolves to) use them.

>>> install()
>>> testinfra.get_host("paramiko://root@web1", timeout=5).backend  # doctest: +SKIP
<compliance.backends.ParamikoBackend ...>
"""

from __future__ import annotations

import functools
import math
import os
import signal
import socket
import subprocess
import time
from typing import Any

import paramiko
import testinfra.backend
import testinfra.backend.paramiko
import testinfra.backend.ssh
from testinfra.backend import base

DEFAULT_TIMEOUT = 30


def install() -> None:
    """Register the hardened backends under testinfra's own scheme names."""
    testinfra.backend.BACKENDS["paramiko"] = f"{__name__}.ParamikoBackend"
    testinfra.backend.BACKENDS["ssh"] = f"{__name__}.SshBackend"


def _expand(paths: str | None) -> list[str]:
    return [os.path.expanduser(p) for p in (paths or "").split()]


class ParamikoBackend(testinfra.backend.paramiko.ParamikoBackend):
    """paramiko with host key checking, deadlines, TCP_NODELAY and close().

    Known host keys come from ``~/.ssh/known_hosts``, ssh_config's
    ``UserKnownHostsFile`` and ``known_hosts`` (space-separated paths).
    """

    def __init__(
        self, hostspec: str, *args: Any, timeout: float = DEFAULT_TIMEOUT, known_hosts: str | None = None, **kwargs: Any
    ):
        super().__init__(hostspec, *args, **kwargs)
        self.timeout = float(timeout)
        self.known_hosts = known_hosts
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

    @functools.cached_property
    def client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
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
        if config_path:
            with open(config_path) as f:
                ssh_config = paramiko.SSHConfig()
                ssh_config.parse(f)
            self._load_ssh_config(client, cfg, ssh_config, os.path.dirname(config_path))
        if self.ssh_identity_file:
            cfg["key_filename"] = os.path.expanduser(self.ssh_identity_file)
        # Default known_hosts first, as OpenSSH does; the user's files add to it.
        client.load_system_host_keys()
        for path in self._config_known_hosts + _expand(self.known_hosts):
            if os.path.exists(path):
                client.load_system_host_keys(path)
        if "sock" not in cfg:
            cfg["sock"] = self._connect_socket(cfg["hostname"], cfg["port"])
        try:
            client.connect(**cfg)
        except BaseException:
            client.close()
            raise
        return client

    def _connect_socket(self, hostname: str, port: int) -> socket.socket:
        sock = socket.create_connection((hostname, port), timeout=self.timeout)
        # Without it every further command on the connection waits ~40 ms (Nagle + delayed ACK).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _exec_command(self, command: bytes) -> tuple[int, bytes, bytes]:
        transport = self.client.get_transport()
        assert transport is not None
        deadline = time.monotonic() + self.timeout
        chan = transport.open_session(timeout=self.timeout)
        try:
            if self.get_pty:
                chan.get_pty()
            chan.exec_command(command)
            stdout = self._read_until_eof(chan, chan.recv, deadline)
            stderr = self._read_until_eof(chan, chan.recv_stderr, deadline)
            if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"command timed out after {self.timeout:g}s")
            return chan.recv_exit_status(), stdout, stderr
        finally:
            chan.close()

    def _read_until_eof(self, chan: paramiko.Channel, recv: Any, deadline: float) -> bytes:
        chunks = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"command timed out after {self.timeout:g}s")
            chan.settimeout(remaining)
            try:
                data = recv(65536)
            except socket.timeout:
                raise TimeoutError(f"command timed out after {self.timeout:g}s") from None
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        # No silent reconnect-and-retry: one connection, one attempt, one deadline.
        cmd = self.encode(self.get_command(command, *args))
        rc, stdout, stderr = self._exec_command(cmd)
        return self.result(rc, cmd, stdout, stderr)

    def close(self) -> None:
        client = self.__dict__.pop("client", None)
        if client is not None:
            client.close()


class SshBackend(testinfra.backend.ssh.SshBackend):
    """OpenSSH with BatchMode (never prompts), a process deadline and extra known_hosts."""

    def __init__(
        self, hostspec: str, *args: Any, timeout: float = DEFAULT_TIMEOUT, known_hosts: str | None = None, **kwargs: Any
    ):
        # testinfra formats timeout into ConnectTimeout, which takes whole seconds.
        super().__init__(hostspec, *args, timeout=max(1, math.ceil(float(timeout))), **kwargs)
        self.known_hosts = known_hosts

    def _build_ssh_command(self, command: str) -> tuple[list[str], list[str]]:
        cmd, cmd_args = super()._build_ssh_command(command)
        # The last element is "%s %s" (host, command): insert our options before it.
        options, values = [], []
        if not self.host.password:
            options.append("-o BatchMode=yes")
        if self.known_hosts:
            options.append("-o UserKnownHostsFile=%s")
            values.append("~/.ssh/known_hosts " + self.known_hosts)
        return cmd[:-1] + options + cmd[-1:], cmd_args[:-2] + values + cmd_args[-2:]

    def run_local(self, command: str, *args: str) -> base.CommandResult:
        cmd = self.encode(self.quote(command, *args))
        # ConnectTimeout bounds connecting; the process deadline adds `timeout` for the command.
        limit = 2 * self.timeout
        proc = subprocess.Popen(
            cmd, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            stdout, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise TimeoutError(f"ssh timed out after {limit:g}s") from None
        return self.result(proc.returncode, cmd, stdout, stderr)

    def close(self) -> None:
        """Nothing stays open: each command is its own ssh process."""
