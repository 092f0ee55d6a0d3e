"""Gather: run the probe once on every host, in parallel, and close every connection.

>>> targets = make_targets(["paramiko://root@web1"], timeout=5)      # doctest: +SKIP
>>> [r.host for r in gather(targets, workers=16)]                    # doctest: +SKIP
['web1']
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import socket
from collections.abc import Callable, Sequence
from typing import Any

import paramiko
import testinfra.backend
from testinfra.backend.base import BaseBackend

from compliance import backends
from compliance.probe import PROBE_COMMAND, HostFacts, ProbeError, excerpt, parse_probe

DEFAULT_WORKERS = 16
SIGNAL_POLL = 0.25  # seconds; how soon Ctrl-C or SIGTERM stops gathering at the latest


@dataclasses.dataclass
class Target:
    """One host to audit. ``label`` is how reports name it: no scheme, user or password."""

    label: str
    backend: BaseBackend
    settings: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    connection: BaseBackend | None = dataclasses.field(default=None, repr=False)

    @property
    def timeout(self) -> float:
        return self.settings.get("timeout", backends.DEFAULT_TIMEOUT)

    def close(self) -> None:
        for backend in (self.connection, self.backend):
            close = getattr(backend, "close", None)
            if close is not None:
                close()


class GatherInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while gathering; ``results`` holds the hosts that finished."""

    def __init__(self, results: list[HostResult]):
        super().__init__("interrupted while gathering")
        self.results = results


@dataclasses.dataclass(frozen=True)
class HostResult:
    """The outcome of gathering one host: facts, or a one-line error."""

    host: str
    facts: HostFacts | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "facts": self.facts.to_dict() if self.facts else None, "error": self.error}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostResult:
        facts = HostFacts.from_dict(data["facts"]) if data["facts"] else None
        return cls(data["host"], facts, data["error"])


def label_of(backend: BaseBackend) -> str:
    """``HOST`` or ``HOST:PORT`` (port only when not 22); ``local`` for this machine."""
    if backend.NAME == "local":
        return "local"
    spec = getattr(backend, "host", None)
    if spec is None or isinstance(spec, str):  # ansible keeps the inventory name
        return str(spec or backend.get_hostname())
    port = spec.port
    name = f"[{spec.name}]" if ":" in spec.name else spec.name
    return f"{name}:{port}" if port and str(port) != "22" else name


def make_targets(hosts: Sequence[str] | None, **backend_kwargs: Any) -> list[Target]:
    """Expand host specs (``ansible://`` groups included) into targets, one per label.

    ``backend_kwargs`` are testinfra's (ssh_config, ssh_identity_file, sudo, ...) plus
    ``timeout`` and ``known_hosts``. No host is contacted here.
    """
    backends.install()
    specs = list(hosts) if hosts else [None]
    backend_kwargs.setdefault("controlpersist", 0)  # OpenSSH: leave no master connection behind
    try:
        found = testinfra.backend.get_backends(specs, **backend_kwargs)
    except FileNotFoundError as exc:
        if "ansible" in str(exc):
            raise RuntimeError(
                "ansible:// hosts need ansible-core: pip install 'xennet-compliance[ansible]'"
            ) from exc
        raise
    settings = {k: backend_kwargs[k] for k in ("timeout", "known_hosts", "host_key_policy") if k in backend_kwargs}
    targets: dict[str, Target] = {}
    for backend in found:
        targets.setdefault(label_of(backend), Target(label_of(backend), backend, settings))
    return sorted(targets.values(), key=lambda t: t.label)


def connection_backend(target: Target) -> BaseBackend:
    """The backend that really connects: an Ansible host resolves to paramiko, ssh or local."""
    backend = target.backend
    runner = getattr(backend, "ansible_runner", None)
    if runner is None or backend.force_ansible:
        return backend
    inner = runner.get_host(backend.host, ssh_config=backend.ssh_config, ssh_identity_file=backend.ssh_identity_file)
    if inner is None:
        return backend
    inner = inner.backend
    # testinfra builds these from the inventory; our deadline and host key settings still apply.
    settings = target.settings
    timeout = target.timeout
    inner.timeout = timeout if isinstance(inner, backends.ParamikoBackend) else backends.whole_seconds(timeout)
    inner.known_hosts = settings.get("known_hosts")
    inner.host_key_policy = settings.get("host_key_policy", "strict")
    if hasattr(inner, "controlpersist"):
        inner.controlpersist = 0
    target.connection = inner  # so that an interrupt can close it
    return inner


# OpenSSH reports its failures on stderr, exit status 255.
_SSH_CAUSES = (
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "host key mismatch for {host}"),
    ("Host key verification failed", "host key for {host} is not in known_hosts (add it, or pass --ssh-known-hosts FILE)"),
    ("Permission denied", "authentication failed"),
    ("Connection refused", "connection refused"),
    ("timed out", "timed out connecting"),
)


def describe_error(exc: BaseException, target: Target) -> str:
    """One line naming the cause; reports show it beside the host. Never a secret."""
    host = target.label
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return str(exc) if str(exc) and str(exc) != "timed out" else f"timed out after {target.timeout:g}s"
    if isinstance(exc, (ConnectionRefusedError, paramiko.ssh_exception.NoValidConnectionsError)):
        return "connection refused"
    if isinstance(exc, paramiko.BadHostKeyException):
        return f"host key mismatch for {host}"
    if isinstance(exc, paramiko.AuthenticationException):
        return "authentication failed"
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return f"host key for {host} is not in known_hosts (add it, or pass --ssh-known-hosts FILE)"
    result = exc.args[0] if isinstance(exc, RuntimeError) and exc.args else None
    if hasattr(result, "stderr"):
        for needle, cause in _SSH_CAUSES:
            if needle in result.stderr:
                return cause.format(host=host)
        return f"ssh failed: {last_line(result.stderr)}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {excerpt(str(exc))}"


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return excerpt(lines[-1]) if lines else "no output"


def probe_host(target: Target) -> HostResult:
    """Run the probe on one host over one connection, then close it."""
    try:
        backend = connection_backend(target)
        result = backend.run(PROBE_COMMAND)
        try:
            facts = parse_probe(result.stdout)
        except ProbeError as exc:
            if "sudo:" in result.stderr and ("password is required" in result.stderr or "terminal is required" in result.stderr):
                return HostResult(target.label, error=f"sudo requires a password on {target.label}")
            if result.rc != 0:
                return HostResult(target.label, error=f"probe failed (exit {result.rc}): {last_line(result.stderr)}")
            return HostResult(target.label, error=str(exc))
        return HostResult(target.label, facts=facts)
    except Exception as exc:  # noqa: BLE001 - every failure becomes this host's error case
        return HostResult(target.label, error=describe_error(exc, target))
    finally:
        target.close()


def gather(
    targets: Sequence[Target],
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[int, int], None] | None = None,
) -> list[HostResult]:
    """Probe every target from a bounded thread pool; results come back sorted by host.

    On KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one) every connection is
    closed at once and GatherInterrupted carries the hosts that finished.
    """
    results: list[HostResult] = []
    if not targets:
        return results
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets))))
    try:
        pending = {pool.submit(probe_host, t) for t in targets}
        while pending:
            # Wake up now and then: the kernel may hand SIGINT/SIGTERM to any thread, and
            # Python runs the handler only when the main thread runs again.
            done, pending = concurrent.futures.wait(pending, timeout=SIGNAL_POLL, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                results.append(future.result())
                if progress is not None:
                    progress(len(results), len(targets))
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        for target in targets:
            target.close()
        raise GatherInterrupted(sorted(results, key=lambda r: r.host)) from None
    pool.shutdown()
    return sorted(results, key=lambda r: r.host)
