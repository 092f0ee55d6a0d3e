"""Gather: run the probe once on every host, in parallel, and close every connection.

>>> from compliance.targets import expand
>>> targets = expand(["paramiko://root@web1"], timeout=5).targets    # doctest: +SKIP
>>> [r.host for r in gather(targets, workers=16)]                    # doctest: +SKIP
['web1']
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import gc
import multiprocessing
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
    "auth": "the host refused the credentials offered, or stopped trying them (MaxAuthTries)",
    "host-key": "the host key is not the recorded one, or is not recorded",
    "unreachable": "no route to the host, the network is down, the connection was lost mid-run, or a bastion cannot connect to it",
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
    if isinstance(exc, (backends.HostTimeout, backends.LostConnection)):
        # One wording for both backends: what was under way ("connecting", or ``doing``), then why.
        during = "connecting" if exc.phase == "connecting" else doing
        if isinstance(exc, backends.HostTimeout):
            return f"timed out {during} (limit {exc.limit:g}s)"
        return f"connection lost {during}" + (f": {exc.detail}" if exc.detail else "")
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
    if isinstance(exc, backends.AuthenticationFailed):
        return excerpt(str(exc))  # "authentication failed", and the host's reason when it gave one
    if isinstance(exc, paramiko.AuthenticationException):
        return "authentication failed"
    if isinstance(exc, backends.SudoRefused):
        return "sudo requires a password"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {excerpt(exc.strerror or str(exc))}"  # the resolver's words
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
            if target.overdue:  # gather() closed it under the command: its output was cut short
                raise TimeoutError from exc  # worded below
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


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: taskset, a container's cpuset), not the machine's
    count. A CPU quota (``docker --cpus``) is not an affinity: it is not seen.

    >>> 1 <= usable_cpus() <= (os.cpu_count() or 1)
    True
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no sched_getaffinity
        return os.cpu_count() or 1


def processes_for(hosts: int, asked: int | None, cores: int | None = None, may_jump: bool = False) -> int:
    """How many processes may gather ``hosts``: ``asked`` (None: auto), never more than the hosts.

    Auto is one process per usable CPU, for every HOSTS_PER_PROCESS hosts: below that, a second
    process costs more than it saves; the audit starts with one and the others join only when
    the client's CPU is the limit (gather's ``spare``). Auto is one process when a host may be
    behind a bastion (``may_jump``): each process would open its own connection to it, and a
    run shares one.

    >>> processes_for(1000, None, cores=2), processes_for(150, None, cores=2), processes_for(1, 4)
    (2, 1, 1)
    >>> processes_for(1000, None, cores=2, may_jump=True), processes_for(1000, 2, may_jump=True)
    (1, 2)
    """
    if asked is None:
        asked = 1 if may_jump else min(cores or usable_cpus(), max(1, hosts // HOSTS_PER_PROCESS))
    return max(1, min(asked, hosts))


BUSY = 0.75  # of a core: above it, gathering's client CPU is the limit and spare processes join
BUSY_WINDOW = 1.0  # seconds of gathering over which that CPU is measured


def gather(
    targets: Sequence[Target],
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[int, int], None] | None = None,
    processes: int = 1,
    spare: int = 0,
    say: Callable[[str], None] | None = None,
    busy: float = BUSY,
) -> list[HostResult]:
    """Probe every target; results come back sorted by host, whatever the processes.

    ``workers`` hosts at a time in all. This process deals each host, as a slot frees, to
    whichever gathering process has the fewest under way: itself (a thread pool) and
    ``processes - 1`` forked ones. ``spare`` more are forked too, but are dealt hosts only
    once this process's CPU, over a second of gathering, reaches ``busy`` of a core: when
    the client's CPU, not the hosts, is the limit (``say`` tells the user). On
    KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one) every connection is closed at
    once and GatherInterrupted carries the hosts that finished.
    """
    if not targets:
        return []
    # fork keeps the parent's imports and settings, and is safe only while no other thread runs.
    forkable = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
    processes = max(1, min(processes, len(targets)))
    spare = max(0, min(spare, len(targets) - processes)) if forkable else 0
    gathering = _Gathering(targets, workers, progress, say, busy)
    try:
        results = gathering.run(processes - 1 if forkable else 0, spare)
    except GatherInterrupted as exc:
        raise GatherInterrupted(sorted(exc.results, key=_host_order)) from None
    return sorted(results, key=_host_order)


@dataclasses.dataclass(eq=False)
class _Process:
    """A forked gathering process, as its parent sees it: the hosts dealt to it and not yet back."""

    child: Any
    tasks: Any  # the parent's end: a host's index, or None for "no more"
    results: Any  # the parent's end: (index, HostResult) as each host finishes
    dealing: bool  # dealt hosts now (a spare is not, until the client is busy)
    running: set[int] = dataclasses.field(default_factory=set)
    reader: threading.Thread | None = None
    alive: bool = True
    done: int = 0


LOST = "the gathering process died before this host was done"


class _Gathering:
    """One run of gather(): deals the hosts, a slot at a time, and collects every result."""

    def __init__(
        self,
        targets: Sequence[Target],
        workers: int,
        progress: Callable[[int, int], None] | None,
        say: Callable[[str], None] | None,
        busy: float,
    ) -> None:
        self.targets = targets
        self.workers = max(1, workers)
        self.progress = progress
        self.say = say
        self.busy = busy
        self.results: dict[int, HostResult] = {}
        # Every event on one queue, so that the loop waits in one place: ("mine", index, future)
        # from this process's threads, ("theirs", index, result, process) from a reader thread
        # per child, ("lost", process) when a child's pipe ends.
        self.events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        # Events taken off the queue and not yet settled: an interrupt must not lose them.
        self.batch: collections.deque[tuple[Any, ...]] = collections.deque()
        self.mine: dict[int, tuple[Target, concurrent.futures.Future[HostResult]]] = {}  # under way here
        self.done_here = 0
        self.processes: list[_Process] = []
        self.unfreeze = False  # whether this run froze the heap, and unfreezes it at the end

    def run(self, others: int, spare: int) -> list[HostResult]:
        pool: concurrent.futures.ThreadPoolExecutor | None = None
        finished = False
        try:
            if others or spare:
                self._fork(others, spare)
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(self.workers, len(self.targets)))
            self._loop(pool)
            finished = True
        except KeyboardInterrupt:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            self._stop_children()  # what they sent before they went is read to its end, and kept
            self._keep_finished()  # before closing: a closed host's thread ends with an error of its own
            for target in self.targets:
                target.close()
            raise GatherInterrupted(list(self.results.values())) from None
        finally:
            self._end(finished)
            close_bastions(self.targets)  # the bastion connections this process opened
            if self.unfreeze:
                gc.unfreeze()
        assert pool is not None
        pool.shutdown()
        self._tell()
        return [self.results[i] for i in range(len(self.targets))]

    def _fork(self, others: int, spare: int) -> None:
        if any(t.connection == "paramiko" for t in self.targets):
            from compliance import backends

            backends.warm(self.targets)  # parsed here once, not once per process
        # Frozen, the parent's objects are not copied on write by each process's collections
        # (Python's advice for fork without exec); unfrozen when the children are gone, unless
        # the caller had frozen the heap itself (as the audit does).
        self.unfreeze = gc.get_freeze_count() == 0
        gc.freeze()
        context = multiprocessing.get_context("fork")
        for k in range(others + spare):
            tasks_in, tasks_out = context.Pipe(duplex=False)
            results_in, results_out = context.Pipe(duplex=False)
            # The child closes every end of ours it inherits, its own included: it then sees EOF,
            # or a broken pipe, as soon as this process is gone.
            ours = [fd for p in self.processes for fd in (p.tasks.fileno(), p.results.fileno())]
            ours += [tasks_out.fileno(), results_in.fileno()]
            child = context.Process(
                target=_child, args=(self.targets, self.workers, tasks_in, results_out, ours, os.getpid()), daemon=True
            )
            try:
                child.start()
            except OSError:  # no memory, or no process slot, for another: gather with those there are
                for end in (tasks_in, tasks_out, results_in, results_out):
                    end.close()
                break
            finally:
                tasks_in.close()
                results_out.close()
            self.processes.append(_Process(child, tasks_out, results_in, dealing=k < others))
        for process in self.processes:  # threads only now: every fork is done
            process.reader = threading.Thread(target=self._read, args=(process,), daemon=True)
            process.reader.start()

    def _read(self, process: _Process) -> None:
        """A child's results onto the event queue, then its end: EOF (done, or died), or anything unreadable."""
        try:
            while True:
                index, result = process.results.recv()
                self.events.put(("theirs", index, result, process))
        except BaseException:  # whatever ends the pipe, the loop must hear of it
            self.events.put(("lost", process))

    def _loop(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        todo = list(reversed(range(len(self.targets))))  # popped from the end: in the targets' order
        under_way = 0
        scanned = time.monotonic()
        measured = (scanned, _cpu())
        while todo or under_way:
            while todo and under_way < self.workers:
                self._deal(todo.pop(), pool)
                under_way += 1
            now = time.monotonic()
            if now - scanned >= SIGNAL_POLL:
                # Each backend bounds each step; this bounds the host: a user can plan with it.
                # A scan per poll, not per finished host: a fleet's hosts under way are many.
                scanned = now
                close_overdue([target for target, _ in self.mine.values()], now)
            if now - measured[0] >= BUSY_WINDOW:
                measured = self._spread_if_busy(measured, now, len(todo))
            # Wake up now and then: the kernel may hand SIGINT/SIGTERM to any thread, and
            # Python runs the handler only when the main thread runs again.
            try:
                self.batch.append(self.events.get(timeout=SIGNAL_POLL))
            except queue.Empty:
                continue
            while not self.events.empty():
                self.batch.append(self.events.get())
            while self.batch:
                under_way -= self._settle(self.batch[0])
                self.batch.popleft()

    def _spread_if_busy(self, measured: tuple[float, float], now: float, left: int) -> tuple[float, float]:
        """Spare processes join when this one's CPU over the last window reached ``busy`` of a core."""
        cpu = _cpu()
        share = (cpu - measured[1]) / (now - measured[0])
        standby = [p for p in self.processes if p.alive and not p.dealing]
        if standby and share >= self.busy and left >= self.workers:
            for process in standby:
                process.dealing = True
            if self.say is not None:
                self.say(
                    f"gathering: the client's CPU is the limit ({share:.2f} of a core): "
                    f"{len(standby)} more process(es) share the {left} hosts left"
                )
        return now, cpu

    def _deal(self, index: int, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        """The host to the gathering process with the fewest under way: this one when even."""
        least = min((p for p in self.processes if p.alive and p.dealing), key=lambda p: len(p.running), default=None)
        if least is not None and len(least.running) < len(self.mine):
            try:
                least.tasks.send(index)
            except OSError:
                pass  # it died: its "lost" event is on the way, and this host stays here
            else:
                least.running.add(index)
                return
        target = self.targets[index]
        future = pool.submit(probe_host, target)
        self.mine[index] = (target, future)
        future.add_done_callback(lambda f: self.events.put(("mine", index, f)))

    def _settle(self, event: tuple[Any, ...]) -> int:
        """Record one event; how many hosts it finished. Settling it again records nothing new."""
        if event[0] == "mine":
            _, index, future = event
            if index not in self.mine or future.cancelled():
                return 0
            self._record(index, future.result())
            del self.mine[index]
            self.done_here += 1
            return 1
        process: _Process = event[-1]
        if event[0] == "theirs":
            index = event[1]
            if index not in process.running:
                return 0
            self._record(index, event[2])
            process.running.discard(index)
            process.done += 1
            return 1
        # A child that died (OOM killer, a crash) leaves the hosts it had without a result: say so.
        process.alive = False
        if process.child.is_alive():
            process.child.kill()  # its pipe failed: whatever it still does is not read
        lost = sorted(process.running)
        for index in lost:
            self._record(index, HostResult(self.targets[index].label, error=LOST, error_kind="other"))
        process.running.clear()
        return len(lost)

    def _record(self, index: int, result: HostResult) -> None:
        self.results[index] = result
        if self.progress is not None:
            self.progress(len(self.results), len(self.targets))

    def _keep_finished(self) -> None:
        """Interrupted: a host that finished as the interrupt came (queued, or not yet taken) keeps its result."""
        while not self.events.empty():
            self.batch.append(self.events.get())
        for event in self.batch:
            if event[0] != "lost":
                self._settle(event)
        self.batch.clear()
        for index, (_, future) in list(self.mine.items()):
            if future.done() and not future.cancelled() and future.exception() is None:
                self._record(index, future.result())

    def _stop_children(self, kill: bool = True) -> None:
        """Every child gone (killed first, when ``kill``), and every result it sent read to its EOF."""
        for process in self.processes:
            if kill and process.child.is_alive():
                process.child.kill()  # its sockets close with it
        for process in self.processes:
            process.child.join()
            if process.reader is not None:
                process.reader.join(timeout=5)  # it reads to the child's EOF

    def _end(self, finished: bool) -> None:
        """Every child told there is no more, then gone: at once when interrupted."""
        for process in self.processes:
            try:
                process.tasks.send(None)
            except OSError:
                pass
        self._stop_children(kill=not finished)
        for process in self.processes:
            process.child.close()
            process.tasks.close()
            process.results.close()

    def _tell(self) -> None:
        """How many hosts each process gathered, when more than one did."""
        counts = [self.done_here] + [p.done for p in self.processes if p.done]
        if self.say is not None and len(counts) > 1:
            self.say(f"gathered by {len(counts)} processes: {' + '.join(map(str, counts))} hosts")


def _cpu() -> float:
    """This process's CPU time so far (user and system, every thread; not its children)."""
    times = os.times()
    return times.user + times.system


def _ignore(signum: int, frame: Any) -> None:
    """A gathering child's SIGTERM handler: its parent ends it."""


def close_overdue(running: Sequence[Target], now: float) -> None:
    """Close every host under way that used up its budget (its thread then reports a timeout)."""
    for target in running:
        if target.started is not None and not target.overdue and now - target.started > host_budget(target):
            target.overdue = True
            target.close()


def _child(targets: Sequence[Target], workers: int, tasks: Any, results: Any, ours: list[int], parent: int) -> None:
    """A gathering process: probes each host its parent deals it, sending each result up as it is known.

    Anything unexpected ends it at once (``os._exit``), its connections with it: its parent
    then sees EOF and reports the hosts it had as lost, never waits for them.
    """
    try:
        # The parent decides, and kills us: Ctrl-C, or a SIGTERM sent to the whole process group
        # (a CI job's abort), must not end us first and turn our hosts into lost ones.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _ignore)  # a handler, not SIG_IGN: an ssh:// host's OpenSSH must not inherit it
        for fd in ours:
            os.close(fd)
        _serve(targets, workers, tasks, results, parent)
    except BaseException:  # a child never unwinds into its parent's code
        os._exit(1)


def _serve(targets: Sequence[Target], workers: int, tasks: Any, results: Any, parent: int) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets))))
    running: dict[int, Target] = {}
    running_lock = threading.Lock()
    sending = threading.Lock()  # one sender at a time on the pipe

    def send(index: int, future: concurrent.futures.Future[HostResult]) -> None:
        try:
            result = future.result()
            with sending:
                results.send((index, result))
        except BaseException:  # unsendable, or the parent is gone: end, and it sees EOF
            os._exit(1)
        with running_lock:
            running.pop(index, None)

    dealt = True
    while dealt or running:
        if not dealt:
            time.sleep(SIGNAL_POLL / 5)
        elif tasks.poll(SIGNAL_POLL):
            try:
                index = tasks.recv()
            except EOFError:
                os._exit(1)  # the parent is gone: nobody would read what we send
            if index is None:
                dealt = False
            else:
                with running_lock:
                    running[index] = targets[index]
                pool.submit(probe_host, targets[index]).add_done_callback(functools.partial(send, index))
        if os.getppid() != parent:
            os._exit(1)
        with running_lock:
            under_way = list(running.values())
        close_overdue(under_way, time.monotonic())
    pool.shutdown()
    close_bastions(targets)
    results.close()


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
