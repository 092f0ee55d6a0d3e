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
from compliance.probe import PROBE_COMMAND, PROBE_INPUT, HostFacts, ProbeError, excerpt, last_line, parse_probe
from compliance.row import order_key
from compliance.targets import Target

SIGNAL_POLL = 0.25  # seconds; how soon Ctrl-C or SIGTERM stops gathering at the latest


class GatherInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while gathering; ``results`` holds the hosts that finished."""

    def __init__(self, results: list[HostResult]):
        super().__init__("interrupted while gathering")
        self.results = results


# Every error row's ``error_kind`` (summary.json schema 2), one word per cause: users group by it.
ERROR_KINDS = {
    "refused": "the host refused the connection",
    "timeout": "the host did not answer in time (connecting, or running the probe)",
    "auth": "the host refused every credential offered",
    "host-key": "the host key is not the recorded one, or is not recorded",
    "unreachable": "no route to the host, or the network is down, or a bastion cannot connect to it",
    "dns": "the host name does not resolve",
    "sudo": "sudo wants a password, or refuses the user",
    "probe": "the probe ran but its output, or an interface in it, cannot be judged",
    "output-limit": "the host printed more than --xennet-max-output",
    "ssh": "OpenSSH failed for another reason (its last line is the message)",
    "bastion": "a bastion (jump host) on the way failed: refused, timed out, its host key, lost, or would not forward",
    "worker-crash": "the xdist worker running the case died",
    "interrupted": "the run was interrupted before the host was gathered",
    "other": "any other failure (the message names its type)",
}


@dataclasses.dataclass(frozen=True)
class HostResult:
    """The outcome of gathering one host: facts, or a one-line error and its kind (see ERROR_KINDS)."""

    host: str
    facts: HostFacts | None = None
    error: str | None = None
    error_kind: str | None = None
    seconds: float = 0.0  # how long gathering this host took (JUnit's per-case time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "facts": self.facts.to_dict() if self.facts else None,
            "error": self.error,
            "error_kind": self.error_kind,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostResult:
        facts = HostFacts.from_dict(data["facts"]) if data["facts"] else None
        return cls(data["host"], facts, data["error"], data.get("error_kind"), float(data.get("seconds", 0.0)))


def error_kind(exc: BaseException) -> str:
    """The kind (a key of ERROR_KINDS) of a host's failure, chosen by the exception's type.

    >>> error_kind(ConnectionRefusedError()), error_kind(TimeoutError()), error_kind(ValueError())
    ('refused', 'timeout', 'other')
    """
    import paramiko

    from compliance import backends, bastion

    kinds: tuple[tuple[Any, str], ...] = (
        (bastion.BastionError, "bastion"),  # whatever its cause: the bastion is what to fix
        (bastion.ForwardFailed, "unreachable"),
        ((backends.HostTimeout, TimeoutError, socket.timeout), "timeout"),
        (backends.OutputLimit, "output-limit"),
        ((ConnectionRefusedError, paramiko.ssh_exception.NoValidConnectionsError), "refused"),
        ((backends.HostKeyMismatch, paramiko.BadHostKeyException, backends.UnknownHostKey), "host-key"),
        ((backends.AuthenticationFailed, paramiko.AuthenticationException), "auth"),
        (backends.SudoRefused, "sudo"),
        (socket.gaierror, "dns"),
        (backends.SshFailed, "ssh"),
        (FileNotFoundError, "other"),
        (OSError, "unreachable"),
    )
    for types, kind in kinds:
        if isinstance(exc, types):
            return kind
    return "other"


def describe_error(exc: BaseException, target: Target, doing: str = "running the probe") -> str:
    """One line naming the cause, chosen by the exception's type; never a secret.

    Reports show it beside the host, so it never repeats the host.
    """
    import paramiko  # only runs that connect pay for it

    from compliance import backends, bastion

    if isinstance(exc, bastion.BastionError):
        return f"bastion {exc.hop}: {describe_error(exc.cause, target, 'connecting')}"
    if isinstance(exc, bastion.ConfigRefused):
        return str(exc)  # the suite's own words, naming the file and line: whole
    if isinstance(exc, (bastion.HopFailure, bastion.ForwardFailed)):
        return excerpt(str(exc))  # may quote the bastion's words
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
        return "host key mismatch"
    if isinstance(exc, backends.UnknownHostKey):
        return "host key is not in known_hosts (add it, or pass --ssh-known-hosts FILE)"
    if isinstance(exc, (backends.AuthenticationFailed, paramiko.AuthenticationException)):
        return "authentication failed"
    if isinstance(exc, backends.SudoRefused):
        return "sudo requires a password"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {excerpt(str(exc))}"
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
    target.started = started = time.monotonic()

    def done(**outcome: Any) -> HostResult:
        return HostResult(target.label, seconds=round(time.monotonic() - started, 3), **outcome)

    try:
        result = target.connect().run_script(PROBE_COMMAND, PROBE_INPUT)
        try:
            facts = parse_probe(result.stdout)
        except ProbeError as exc:
            from compliance.backends import sudo_refusal

            refusal = sudo_refusal(result.stderr_text)
            if refusal is not None:
                raise refusal from None
            if result.rc != 0:
                return done(
                    error=f"probe failed (exit {result.rc}): {last_line(result.stderr_text)}", error_kind="probe"
                )
            return done(error=str(exc), error_kind="probe")
        return done(facts=facts)
    except Exception as exc:
        if target.overdue:  # gather() closed it: the host used up its budget
            return done(
                error=f"timed out (limit {host_budget(target):g}s for connecting, then the probe)",
                error_kind="timeout",
            )
        return done(error=describe_error(exc, target), error_kind=error_kind(exc))
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
        scanned = 0.0
        while pending:
            # Each backend bounds each step; this bounds the host: a user can plan with it.
            # A scan per poll, not per finished host: a fleet's pending set is large.
            now = time.monotonic()
            if now - scanned >= SIGNAL_POLL:
                scanned = now
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
        raise GatherInterrupted(sorted(results, key=_host_order)) from None
    finally:
        close_bastions(targets)
    pool.shutdown()
    return sorted(results, key=_host_order)


def close_bastions(targets: Sequence[Target]) -> None:
    """The run's bastion connections end with gathering: every host behind them is done."""
    for bastions in {id(t.bastions): t.bastions for t in targets if t.bastions is not None}.values():
        bastions.close()


def _host_order(result: HostResult) -> Any:
    return order_key(result.host, None)
