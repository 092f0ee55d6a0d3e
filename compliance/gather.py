"""Gather: run the probe once on every host, in parallel, and close every connection.

>>> from compliance.targets import expand
>>> targets = expand(["paramiko://root@web1"], timeout=5).targets    # doctest: +SKIP
>>> [r.host for r in gather(targets, workers=16)]                    # doctest: +SKIP
['web1']
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from compliance.options import DEFAULT_WORKERS
from compliance.probe import PROBE_COMMAND, PROBE_SCRIPT, HostFacts, ProbeError, excerpt, last_line, parse_probe
from compliance.targets import Target

SIGNAL_POLL = 0.25  # seconds; how soon Ctrl-C or SIGTERM stops gathering at the latest


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


def describe_error(exc: BaseException, target: Target, doing: str = "running the probe") -> str:
    """One line naming the cause, chosen by the exception's type; never a secret.

    Reports show it beside the host, so it names the host only where that helps.
    """
    import paramiko  # only runs that connect pay for it

    from compliance import backends

    host = target.label
    if isinstance(exc, backends.HostTimeout):
        # One wording for both backends: the phase, and the limit it ran into.
        return f"timed out {'connecting' if exc.phase == 'connecting' else doing} (limit {exc.limit:g}s)"
    if isinstance(exc, backends.OutputLimit):
        return str(exc)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"timed out (limit {target.timeout:g}s)"
    if isinstance(exc, (ConnectionRefusedError, paramiko.ssh_exception.NoValidConnectionsError)):
        return "connection refused"
    if isinstance(exc, (backends.HostKeyMismatch, paramiko.BadHostKeyException)):
        return f"host key mismatch for {host}"
    if isinstance(exc, backends.UnknownHostKey):
        return f"host key for {host} is not in known_hosts (add it, or pass --ssh-known-hosts FILE)"
    if isinstance(exc, (backends.AuthenticationFailed, paramiko.AuthenticationException)):
        return "authentication failed"
    if isinstance(exc, backends.SudoRefused):
        return f"sudo requires a password on {host}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}: {excerpt(str(exc))}"
    if isinstance(exc, backends.SshFailed):
        return f"ssh failed: {excerpt(str(exc))}"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.strerror or 'not found'}: {excerpt(str(exc.filename))}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {excerpt(str(exc))}"


HOST_GRACE = 2.0  # seconds past the backends' own bounds, so that their precise causes come first


def host_budget(target: Target) -> float:
    """The most one host may take, whatever the backend: connecting, then the probe, each ``timeout``."""
    return 2 * target.timeout + HOST_GRACE


def probe_host(target: Target) -> HostResult:
    """Run the probe on one host over one connection, then close it."""
    target.started = time.monotonic()
    try:
        result = target.connect().run_script(PROBE_COMMAND, PROBE_SCRIPT.encode())
        try:
            facts = parse_probe(result.stdout)
        except ProbeError as exc:
            from compliance.backends import sudo_refusal

            refusal = sudo_refusal(result.stderr_text)
            if refusal is not None:
                raise refusal from None
            if result.rc != 0:
                return HostResult(
                    target.label, error=f"probe failed (exit {result.rc}): {last_line(result.stderr_text)}"
                )
            return HostResult(target.label, error=str(exc))
        return HostResult(target.label, facts=facts)
    except Exception as exc:
        if target.overdue:  # gather() closed it: the host used up its budget
            return HostResult(
                target.label, error=f"timed out (limit {host_budget(target):g}s for connecting, then the probe)"
            )
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
        running = {pool.submit(probe_host, t): t for t in targets}
        pending = set(running)
        while pending:
            # Each backend bounds each step; this bounds the host: a user can plan with it.
            now = time.monotonic()
            for future in pending:
                target = running[future]
                if target.started is not None and not target.overdue and now - target.started > host_budget(target):
                    target.overdue = True
                    target.close()
            # Wake up now and then: the kernel may hand SIGINT/SIGTERM to any thread, and
            # Python runs the handler only when the main thread runs again.
            done, pending = concurrent.futures.wait(
                pending, timeout=SIGNAL_POLL, return_when=concurrent.futures.FIRST_COMPLETED
            )
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
