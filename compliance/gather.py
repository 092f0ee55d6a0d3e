"""Gather: run the probe once on every host, in parallel, and close every connection.

>>> from compliance.targets import expand
>>> targets = expand(["paramiko://root@web1"], timeout=5).targets    # doctest: +SKIP
>>> [r.host for r in gather(targets, workers=16)]                    # doctest: +SKIP
['web1']
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gc
import multiprocessing
import multiprocessing.connection
import os
import queue
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from compliance.options import DEFAULT_WORKERS, HOSTS_PER_PROCESS
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


def processes_for(hosts: int, asked: int | None, cores: int | None = None, may_jump: bool = False) -> int:
    """How many processes gather ``hosts``: ``asked`` (None: auto), never more than the hosts.

    Auto is one process per core, for every HOSTS_PER_PROCESS hosts: below that, a second
    process costs more than it saves. Auto is one process when a host may be behind a bastion
    (``may_jump``): each process would open its own connection to it, and a run shares one.

    >>> processes_for(1000, None, cores=2), processes_for(150, None, cores=2), processes_for(1, 4)
    (2, 1, 1)
    >>> processes_for(1000, None, cores=2, may_jump=True), processes_for(1000, 2, may_jump=True)
    (1, 2)
    """
    if asked is None:
        asked = 1 if may_jump else min(cores or os.cpu_count() or 1, max(1, hosts // HOSTS_PER_PROCESS))
    return max(1, min(asked, hosts))


def gather(
    targets: Sequence[Target],
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[int, int], None] | None = None,
    processes: int = 1,
) -> list[HostResult]:
    """Probe every target; results come back sorted by host, whatever the processes.

    ``workers`` hosts at a time in all, from one thread pool per process: with more than
    one process the hosts are dealt round-robin, and each process streams its results
    back as they come. On KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one) every
    connection is closed at once and GatherInterrupted carries the hosts that finished.
    """
    processes = max(1, min(processes, len(targets)))
    # fork keeps the parent's imports and settings, and is safe only while no other thread runs.
    try:
        if processes > 1 and threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
            results = _gather_processes(targets, workers, progress, processes)
        else:
            results = _gather_threads(targets, workers, progress)
    except GatherInterrupted as exc:
        raise GatherInterrupted(sorted(exc.results, key=_host_order)) from None
    return sorted(results, key=_host_order)


def _gather_threads(
    targets: Sequence[Target],
    workers: int,
    progress: Callable[[int, int], None] | None,
    each: Callable[[Target, HostResult], None] | None = None,
) -> list[HostResult]:
    """One process's share: a bounded thread pool; ``each`` sees every result as it comes."""
    results: list[HostResult] = []
    if not targets:
        return results
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets))))
    # Each host's future reports itself done on a queue: waiting on the whole pending set
    # (concurrent.futures.wait) costs a lock per pending future at every wake-up, which is
    # quadratic in the fleet (≈ 1.3 s of client CPU at 1,000 hosts).
    finished: queue.SimpleQueue[concurrent.futures.Future[HostResult]] = queue.SimpleQueue()
    running: dict[concurrent.futures.Future[HostResult], Target] = {}
    taken: set[concurrent.futures.Future[HostResult]] = set()  # futures whose result is in results
    try:
        for target in targets:
            future = pool.submit(probe_host, target)
            running[future] = target
            future.add_done_callback(finished.put)
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
            try:
                done = [finished.get(timeout=SIGNAL_POLL)]
            except queue.Empty:
                continue
            while not finished.empty():
                done.append(finished.get())
            pending.difference_update(done)
            for future in done:
                results.append(future.result())
                taken.add(future)
                if each is not None:
                    each(running[future], results[-1])
                if progress is not None:
                    progress(len(results), len(targets))
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        # A host that finished as the interrupt came (queued, or not yet taken) keeps its result.
        for future in running:
            if future not in taken and future.done() and not future.cancelled() and future.exception() is None:
                results.append(future.result())
        for target in targets:
            target.close()
        raise GatherInterrupted(results) from None
    finally:
        close_bastions(targets)  # each process closes the bastion connections it opened
    pool.shutdown()
    return results


def _gather_processes(
    targets: Sequence[Target], workers: int, progress: Callable[[int, int], None] | None, processes: int
) -> list[HostResult]:
    """Deal the targets to ``processes`` forked children; collect their results as they stream in."""
    context = multiprocessing.get_context("fork")
    numbered = list(enumerate(targets))
    shares = [numbered[k::processes] for k in range(processes)]
    per_process = [len(share) * workers // len(targets) or 1 for share in shares]
    children: list[tuple[Any, Any]] = []
    got: dict[int, HostResult] = {}
    try:
        if any(t.connection == "paramiko" for t in targets):
            from compliance import backends

            backends.warm(targets)  # parsed here once, not once per process
        # Frozen, the parent's objects are not copied on write by each process's collections
        # (Python's advice for fork without exec).
        gc.freeze()
        for share, threads in zip(shares, per_process):
            reader, writer = context.Pipe(duplex=False)
            child = context.Process(target=_child, args=(share, threads, writer), daemon=True)
            child.start()
            writer.close()  # the child holds it: EOF here when the child is gone
            children.append((child, reader))
        open_readers = [reader for _, reader in children]
        while open_readers:
            for ready in multiprocessing.connection.wait(open_readers, timeout=SIGNAL_POLL):
                assert isinstance(ready, multiprocessing.connection.Connection)
                try:
                    index, result = ready.recv()
                except EOFError:
                    open_readers.remove(ready)
                    continue
                got[index] = result
                if progress is not None:
                    progress(len(got), len(targets))
        # A child that died (OOM killer, a crash) leaves its hosts without a result: say so.
        lost = "the gathering process died before this host was done"
        return [got.get(i) or HostResult(t.label, error=lost, error_kind="other") for i, t in numbered]
    except KeyboardInterrupt:
        raise GatherInterrupted(list(got.values())) from None
    finally:
        for child, reader in children:
            if child.is_alive():
                child.terminate()  # its sockets close with it
            child.join()
            reader.close()


def _child(share: list[tuple[int, Target]], workers: int, writer: Any) -> None:
    """A gathering process: its share of the hosts, each result sent up as soon as it is known."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it terminates us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    index = {id(target): i for i, target in share}
    targets = [target for _, target in share]
    try:
        _gather_threads(targets, workers, None, each=lambda t, r: writer.send((index[id(t)], r)))
    finally:
        writer.close()


def may_jump(targets: Sequence[Target]) -> bool:
    """Whether a host may be reached through a bastion: an ssh_config (given, or ~/.ssh/config) or
    ssh arguments that could name one. A guess on the safe side, for --xennet-processes=auto."""
    if any(t.options.get("ssh_config") for t in targets) or os.path.exists(os.path.expanduser("~/.ssh/config")):
        return any(t.connection != "local" for t in targets)
    return any(re.search(r"(?i)proxy|(^|\s)-J", str(t.options.get("ssh_extra_args") or "")) for t in targets)


def close_bastions(targets: Sequence[Target]) -> None:
    """The run's bastion connections end with gathering: every host behind them is done."""
    for bastions in {id(t.bastions): t.bastions for t in targets if t.bastions is not None}.values():
        bastions.close()


def _host_order(result: HostResult) -> Any:
    return order_key(result.host, None)
