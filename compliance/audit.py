"""The audit's pytest wiring: check the command line -> gather -> cases -> judge -> report.

Registered by :mod:`compliance.plugin` only for runs that collect the audit. Under xdist the
controller checks and gathers; workers get the facts through ``workerinput``.

>>> AuditPlugin.__name__
'AuditPlugin'
"""

from __future__ import annotations

import atexit
import bdb
import dataclasses
import datetime
import gc
import importlib.metadata
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from _pytest import timing  # the clock LogXML times its suite with

from compliance import report, rule, shard, targets, waivers, workaround
from compliance.cases import Case, build_cases
from compliance.gather import GatherInterrupted, HostResult, gather, may_jump, processes_for
from compliance.options import Settings, UsageProblem, pytest_arguments, report_paths, tb_given
from compliance.plugin import is_audit_module
from compliance.report import AuditReporter
from compliance.rule import Judgement, Verdict

CHECK = "test_xennet_sg_mtu"  # the audit module's check: one CaseItem per case
# What a case ends with by design: a verdict (pytest.fail, pytest.skip), or the run being stopped.
EXPECTED = (pytest.fail.Exception, pytest.skip.Exception, KeyboardInterrupt)
Skipped = pytest.skip.Exception
WORKERINPUT_KEY = "xennet_results"
WAIVERS_KEY = "xennet_waivers"  # workerinput: the checked waivers, so workers never read the file


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"received signal {signum}")


def _version() -> str:
    try:
        return f"xennet-compliance {importlib.metadata.version('xennet-compliance')}"
    except importlib.metadata.PackageNotFoundError:
        return "xennet-compliance (not installed)"


def _writable_dir(directory: Path) -> None:
    """Create a report directory now, and make sure it takes files: a run must not find out at the end."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageProblem(f"cannot create report directory {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageProblem(f"report directory {directory} is not writable")


def _distinct_report_paths(paths: dict[str, Path]) -> None:
    """Two reports given one path would overwrite each other, and Jenkins would read the wrong one."""
    options = {
        "junit": "--junitxml",
        "html": "--html",
        "summary": "--xennet-summary",
        "summary_html": "--xennet-summary-html",
    }
    seen: dict[Path, str] = {}
    for key, path in paths.items():
        resolved = path.resolve()
        if resolved in seen:
            raise UsageProblem(f"{options[seen[resolved]]} and {options[key]} name the same file: {path}")
        seen[resolved] = key


def audit_targets(config: pytest.Config, settings: Settings) -> targets.Expansion:
    """The run's hosts, from testinfra's options and ours; nothing is contacted."""
    option = config.option
    return targets.expand(
        targets.split_hosts(option.hosts),
        connection=option.connection,
        ssh_config=option.ssh_config,
        ssh_identity_file=option.ssh_identity_file,
        ssh_extra_args=option.ssh_extra_args,
        sudo=option.sudo,
        sudo_user=option.sudo_user,
        ansible_inventory=option.ansible_inventory,
        force_ansible=option.force_ansible,
        timeout=settings.timeout,
        known_hosts=settings.known_hosts,
        host_key_policy=settings.host_key_policy,
        max_output=settings.max_output,
    )


def _waivable(config: pytest.Config) -> None:
    """A waived case is pytest's xfail (its skipping plugin): without it, or under --runxfail, the
    case would fail while the reports count it waived."""
    if not config.pluginmanager.has_plugin("skipping"):
        raise UsageProblem(
            "--xennet-waivers needs pytest's skipping plugin (a waived case is an xfail): drop -p no:skipping"
        )
    if config.option.runxfail:
        raise UsageProblem("--runxfail ignores every waiver (a waived case is an xfail): drop it, or --xennet-waivers")


class AuditPlugin:
    """One audit run: its checked settings, its targets (controller) and its results."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.worker = hasattr(config, "workerinput")
        self.results: list[HostResult] = []
        self._cases: tuple[list[HostResult], list[Case]] | None = None  # built from these results
        self.interrupted = False
        self.previous_sigterm: Any = None
        self.warnings: list[str] = []
        self._remediator: workaround.Remediator | None = None
        self.chosen: list[targets.Target] = []
        self.waivers: waivers.Waivers | None = None
        self.started = timing.Instant()  # the run's start: JUnit's suite time is the run's wall time
        option = config.option
        base = config.invocation_params.dir
        # From the raw options, before they are checked: a usage error still finds the old reports
        # (once checked, the same options name the same paths).
        self.paths = report_paths(
            base,
            option.reports_dir,
            option.xennet_summary,
            option.xmlpath,
            getattr(option, "htmlpath", None),
            option.xennet_summary_html,
        )
        try:
            self.settings = Settings.from_options(option)
            if self.settings.waivers is not None:
                _waivable(config)
            if self.worker:
                data = getattr(config, "workerinput").get(WAIVERS_KEY)  # noqa: B009 - set by xdist on workers only
                self.waivers = None if data is None else waivers.Waivers.from_dict(data)
                return
            self._set_report_paths()
            targets.check_files(
                option.ssh_identity_file, option.ssh_config, self.settings.known_hosts, self.settings.host_key_policy
            )
            self.waivers = self._load_waivers()
            expansion = audit_targets(config, self.settings)
            if not expansion.targets:
                # An empty group or inventory must not read as a clean audit.
                raise UsageProblem(
                    f"--hosts={report.target_description(option.hosts)} matched no host: nothing to audit"
                )
        except UsageProblem as exc:
            if not self.worker:
                self._discard_stale_reports(str(exc))
            raise pytest.UsageError(str(exc)) from None
        self.everyone = expansion.targets
        self.warnings = expansion.warnings

    def _load_waivers(self) -> waivers.Waivers | None:
        """The checked waiver file; its expiries are judged against the run's start (UTC), for every case."""
        if self.settings.waivers is None:
            return None
        as_of = datetime.datetime.now(datetime.timezone.utc).date()
        try:
            return waivers.load(self.settings.waivers, self.config.invocation_params.dir, as_of)
        except waivers.WaiverError as exc:
            raise UsageProblem(f"--xennet-waivers {exc}") from None

    # ---- reports ----------------------------------------------------------

    def _set_report_paths(self) -> None:
        """Point pytest's JUnit and HTML plugins at this run's paths; make sure they can be written."""
        option = self.config.option
        option.xennet_summary = str(self.paths["summary"])
        # A --collect-only run writes no report at all, so it never clobbers a real audit's.
        if option.collectonly:
            option.xmlpath = None
            if hasattr(option, "htmlpath"):
                option.htmlpath = None
            return
        # pytest-html's page only when asked (--html): at fleet scale it costs more per case than the
        # rest of the run, and it is blank under Jenkins' CSP. summary.html is the fleet page.
        stale = self.paths.pop("html") if getattr(option, "htmlpath", None) is None else None
        _distinct_report_paths(self.paths)
        for path in self.paths.values():
            _writable_dir(path.parent)
            if path.is_dir():
                raise UsageProblem(f"report path {path} is a directory")
        if stale is not None and stale.is_file():
            stale.unlink()  # an older run's page at the default path would look current
        option.xmlpath = str(self.paths["junit"])
        if "html" in self.paths:
            option.htmlpath = str(self.paths["html"])
            option.self_contained_html = True  # one file to archive and to mail, wherever it goes

    def _discard_stale_reports(self, error: str) -> None:
        if not self.config.option.collectonly:
            report.discard_stale(self.paths, error)

    # ---- configure / session ------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        if config.option.tbstyle == "auto" and not tb_given(pytest_arguments(config)):
            # pytest's FAILURES and ERRORS sections repeat each case's message, which the Diagnostic
            # Results block already shows, at a cost quadratic in the cases (4.5 s of client CPU at
            # 1,000 hosts, bench/RESULTS.md). --tb (auto, short, long, line, native) brings them back;
            # a bug's traceback is shown whatever the style (pytest_runtest_makereport).
            config.option.tbstyle = "no"
        # At exit the interpreter's last garbage collection walks every object the run made
        # (≈ 0.5 s of client CPU at 1,000 hosts, measured) only to free memory the exit frees anyway.
        # Frozen objects are skipped; once per process, and only at its exit.
        atexit.unregister(gc.freeze)
        atexit.register(gc.freeze)
        # Before gathering, before the run loop and at session finish the audit freezes what
        # exists, all of which lives until the reports are written, so that the collections later
        # allocations set off do not walk it again and again (≈ 0.7 s of client CPU at 1,000 hosts,
        # bench/RESULTS.md). The price: an exception in the __del__ of garbage frozen with it is
        # never seen (pytest's unraisable-exception plugin collects at unconfigure). A heap that was
        # unfrozen is collectable again once this config is done with, after those collections
        # (cleanups run last in, first out), as a caller of pytest.main() expects.
        if gc.get_freeze_count() == 0:
            config.add_cleanup(gc.unfreeze)
        if self.worker:
            return
        reporter = AuditReporter(
            config,
            self.settings,
            self.paths["summary"],
            local=all(t.connection == "local" for t in self.everyone),
            cases=self.cases,
            started=self.started,
            summary_html=self.paths["summary_html"],
            waivers=self.waivers,
        )
        config.pluginmanager.register(reporter, "xennet-reporter")
        # Jenkins aborts a build with SIGTERM: handle it like Ctrl-C, so reports are still written.
        if threading.current_thread() is threading.main_thread():
            self.previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self.previous_sigterm)

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        lines = [
            f"xennet: target {report.target_description(config.option.hosts)}, "
            f"scope {self.settings.scope}, host keys {report.host_key_description(config)}",
            # After `pip install .`, a clone's root runs the installed copy: say which one runs.
            f"xennet: {_version()} from {Path(__file__).parent}",
        ]
        if config.option.collectonly:
            lines.append("xennet: --collect-only: hosts are gathered to name the cases, but no report is written")
        return lines

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.worker:
            # Workers never gather: the controller handed them its results.
            workerinput = getattr(self.config, "workerinput")  # noqa: B009 - set by xdist on workers only
            self.results = [HostResult.from_dict(d) for d in workerinput[WORKERINPUT_KEY]]
        else:
            self.results = self._gather()

    def _say(self, line: str, progress: bool = False, **markup: bool) -> None:
        """A line for the terminal now: progress rewrites itself on a tty; anything else stays."""
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is None:
            return
        if progress and terminal.isatty():
            terminal.rewrite(line, **markup)
        else:
            if terminal.isatty():
                terminal.rewrite("")  # clear a progress line before a lasting one
            terminal.write_line(line, **markup)
        terminal.flush()  # progress is for now: a CI console must not get it at exit

    def _gather(self) -> list[HostResult]:
        for warning in self.warnings:
            self._say(f"xennet: warning: {warning}", yellow=True)
        self.chosen = chosen = shard.select(self.everyone, self.settings.shard)
        if not chosen:
            self._say(
                f"xennet: shard {self.settings.shard} holds none of the {len(self.everyone)} hosts: nothing to audit"
            )
            return []
        started = time.monotonic()
        shown = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            terminal = self.config.pluginmanager.get_plugin("terminalreporter")
            # A live counter on a terminal; a line every few seconds in a CI log.
            if terminal is not None and (terminal.isatty() or done == total or now - shown[0] >= 5):
                self._say(f"gathering {done}/{total} hosts", progress=done < total)
                shown[0] = now

        # What exists now (imports, settings, targets) outlives gathering: frozen, it is not walked
        # again by the collections gathering's allocations set off.
        gc.freeze()
        try:
            most = processes_for(len(chosen), self.settings.processes, may_jump=may_jump(chosen))
            # auto: one process, and spares that join only when the client's CPU is the limit.
            auto = self.settings.processes is None
            results = gather(
                chosen,
                workers=self.settings.workers,
                progress=progress,
                processes=1 if auto else most,
                spare=most - 1 if auto else 0,
                say=self._say,
            )
        except GatherInterrupted as exc:
            self._say(f"interrupted while gathering: {len(exc.results)}/{len(chosen)} hosts finished")
            self.interrupted = True
            return exc.results
        failed = sum(1 for r in results if r.error)
        self._say(
            f"gathered {len(results)} hosts in {time.monotonic() - started:.1f}s ({failed} unreachable or in error)"
        )
        self._say("")
        return results

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        # The facts, cases and items live until the reports are written; gathering's garbage
        # (paramiko's connections are cycles) must not be frozen with them.
        gc.collect()
        gc.freeze()
        # Reached when gathering was interrupted: stop here, through pytest's own interrupt
        # path, so that every report is still written (with what finished).
        if self.interrupted:
            raise session.Interrupted("interrupted while gathering")

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[WORKERINPUT_KEY] = [r.to_dict() for r in self.results]
        if self.waivers is not None:
            node.workerinput[WAIVERS_KEY] = self.waivers.to_dict()

    # ---- collection ------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_pycollect_makeitem(self, collector: pytest.Collector, name: str, obj: object) -> list[CaseItem] | None:
        """The audit module's check becomes one :class:`CaseItem` per case, in report order."""
        if name != CHECK or not isinstance(collector, pytest.Module) or not is_audit_module(collector.path):
            return None
        cases = self._built()
        ids = unique([case_id(case) for case in cases])
        return [
            CaseItem.from_parent(collector, name=f"{CHECK}[{i}]", case=case, check=obj, audit=self)
            for i, case in zip(ids, cases)
        ]

    def empty_shard(self) -> bool:
        """This run is a shard that holds no host: nothing to audit, and a valid (empty) result."""
        return self.settings.shard is not None and not self.interrupted and not self.worker and not self.chosen

    def cases(self) -> list[Case]:
        """This run's cases; every chosen host yields at least one, so nothing gathered is never complete."""
        cases = self._built()
        gathered = {c.host for c in cases}
        missing = [t for t in self.chosen if t.label not in gathered]
        return cases + [
            Case(t.label, error="not gathered: the run was interrupted", error_kind="interrupted") for t in missing
        ]

    def _built(self) -> list[Case]:
        """The gathered hosts' cases, built once: collection and every report read them."""
        if self._cases is None or self._cases[0] is not self.results:
            self._cases = (self.results, build_cases(self.results, self._require()))
        return self._cases[1]

    def _require(self) -> str | None:
        return self.settings.scope if self.settings.require_applicable else None

    def remediator(self) -> workaround.Remediator:
        """The optional workaround, one per process, made when a case first needs it.

        Workers act too: they rebuild targets from their own options (host specs may hold
        passwords, so they never travel in workerinput), one connection per host they act
        on, closed at session end.
        """
        if self._remediator is None:
            config, settings = self.config, self.settings
            self._remediator = workaround.Remediator(
                settings.workaround,
                lambda: audit_targets(config, settings).targets,
                allow_mtu=settings.allow_mtu,
                persist=settings.persist,
                scope=settings.scope,
                sudo=bool(config.option.sudo),
            )
        return self._remediator

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        gc.freeze()  # the run's reports live until they are written (AuditReporter, after this hook)
        if self._remediator is not None:
            self._remediator.close()
        if self.empty_shard() and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            session.exitstatus = pytest.ExitCode.OK  # an empty shard passed: it had nothing to audit

    def settle(self, item: CaseItem) -> None:
        """Judge a case (then apply the workaround, if asked); a host or interface in doubt errors here, in setup."""
        case = item.case
        judgement = case.judge(self.settings.scope)
        record = case.record(judgement)
        waiver = self._waiver(case, judgement)
        # An active waiver is a person's decision about this interface: the workaround leaves it alone.
        if case.interface is not None and not (waiver is not None and waiver.active):
            outcome = self.remediator().act(case.host, case.interface, case.ethtool, judgement)
            if outcome is not None:
                item.outcome = outcome
                record = workaround.apply_to_record(record, outcome)
                judgement = outcome.judgement or judgement
                waiver = self._waiver(case, judgement)  # a remediated interface needs no waiver
        if self.settings.require_persistent and case.interface is not None:
            judgement, record = rule.at_boot(judgement, record)
        if waiver is not None:
            item.waiver = waiver
            record = dataclasses.replace(record, waiver=waiver.to_dict())
            if waiver.active:
                # pytest's own xfail, so that JUnit, pytest-html and the terminal show it as such. Strict, and
                # only for the case's own failure (pytest.fail): anything else stays an error.
                mark = pytest.mark.xfail(reason=waiver.reason(), strict=True, raises=pytest.fail.Exception)
                item.add_marker(mark)
        item.judgement = judgement
        item.record = record.to_dict()  # the row's dict form: it travels to the xdist controller
        if judgement.verdict is Verdict.ERROR:
            # Failing in setup makes the case an error, never a pass; the cause is one line, no traceback.
            pytest.fail(judgement.message, pytrace=False)
        if judgement.verdict is Verdict.NOT_APPLICABLE:
            pytest.skip(judgement.message)

    def _waiver(self, case: Case, judgement: Any) -> waivers.Decision | None:
        """The waiver deciding a case: only a susceptible interface is waived; an error never is (fail closed)."""
        if self.waivers is None or case.interface is None or judgement.verdict is not Verdict.SUSCEPTIBLE:
            return None
        return self.waivers.decide(case.host, case.interface.name)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        """A case's run, lean (:meth:`CaseItem.run_lean`) when it only judges gathered facts.

        pytest's own protocol runs a case that changes a host (the workaround); one that a
        waiver, or a skip, skipif or xfail mark from elsewhere, may skip or make an xfail (pytest's
        skipping plugin decides in its runtest hooks); one that ``--setup-show``/``--setup-only``/
        ``--setup-plan`` look into; and the last case before a test of another kind, whose
        teardown leaves pytest's set-up nodes as that test expects them.
        """
        if not isinstance(item, CaseItem) or self.settings.workaround != "off":
            return None
        if nextitem is not None and not isinstance(nextitem, CaseItem):
            return None
        config = item.config
        if any(config.getoption(name, False) for name in ("setupshow", "setuponly", "setupplan")):
            return None
        if any(mark.name in ("skip", "skipif", "xfail") for mark in item.iter_markers()) or self._waived(item.case):
            return None
        item.run_lean()
        return True

    def _waived(self, case: Case) -> bool:
        """Whether an active waiver may decide the case (judged again in its setup: a pure function).
        A judgement that fails here says yes: the case's setup then reports the failure."""
        if self.waivers is None or case.interface is None:
            return False
        try:
            waiver = self._waiver(case, case.judge(self.settings.scope))
        except Exception:
            return True
        return waiver is not None and waiver.active

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Any:
        test_report = yield
        if isinstance(item, CaseItem):
            if item.record is not None:
                test_report.xennet = item.record  # travels to the xdist controller with the report
            # The host's gathering time, for the JUnit case: gathering happens before any test phase.
            test_report.xennet_seconds = item.case.seconds
            if call.excinfo is not None and not isinstance(call.excinfo.value, EXPECTED):
                # A bug, not a verdict: its whole traceback goes to JUnit and to the terminal,
                # whatever --tb says (pytest formats a setup error in the --tb style).
                test_report.longrepr = item.repr_failure(call.excinfo)
                test_report.xennet_bug = True
        return test_report


def case_id(case: Case) -> str:
    r"""The case's id in its nodeid, escaped as pytest escapes a parameter id (non-ASCII, control bytes).

    >>> case_id(Case("web1", interface=None))
    'web1'
    >>> case_id(Case("h\u00e9\n"))
    'h\\xe9\\n'
    """
    return case.id.encode("unicode_escape").decode("ascii")


def unique(ids: list[str]) -> list[str]:
    """Node ids made unique as pytest's parametrize makes them: a repeated id gets 0, 1, ...

    >>> unique(["a", "b", "a", "h1", "h1"])
    ['a0', 'b', 'a1', 'h1_0', 'h1_1']
    """
    counts = Counter(ids)
    taken = set(ids)
    next_suffix: Counter[str] = Counter()
    out = []
    for i in ids:
        if counts[i] > 1:
            sep = "_" if i[-1:].isdigit() else ""
            while f"{i}{sep}{next_suffix[i]}" in taken:
                next_suffix[i] += 1
            new = f"{i}{sep}{next_suffix[i]}"
            taken.add(new)
            next_suffix[i] += 1
            i = new
        out.append(i)
    return out


class CaseItem(pytest.Item):
    """One case of XENNET-01: a host's interface, or a host that could not be judged.

    Collected from the audit module's ``test_xennet_sg_mtu`` as pytest's pattern for tests
    that are not Python functions: judged in :meth:`setup` (an error or an out-of-scope
    interface ends there, as pytest's error or skip), checked in :meth:`runtest`. A
    fixture-parametrized function did the same with pytest's fixture and traceback
    machinery per case: at fleet scale, most of the run's client CPU (bench/RESULTS.md).
    Node ids are those of the parametrized function: ``compliance/test_xennet.py::test_xennet_sg_mtu[web1|eth0]``.
    """

    def __init__(self, *, case: Case, check: Callable[..., None], audit: AuditPlugin, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.check = check
        self.audit = audit
        self.judgement: Judgement | None = None
        self.outcome: workaround.Outcome | None = None  # what the workaround did, when it touched the case
        self.waiver: waivers.Decision | None = None  # the waiver deciding the case, when one matched it
        self.record: dict[str, Any] | None = None  # the case's row, once judged

    def setup(self) -> None:
        self.audit.settle(self)

    def runtest(self) -> None:
        self.check(self.judgement, self.outcome, self.waiver)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        # The check's own failure is its message ("Failed: ..." as its crash line): only the
        # last frame is looked at, none filtered. Anything else is a bug: its whole traceback.
        if isinstance(excinfo.value, pytest.fail.Exception) and not excinfo.value.pytrace:
            return excinfo.getrepr(style="value", tbfilter=False)
        return super().repr_failure(excinfo, style)

    def run_lean(self) -> None:
        """pytest's runtest protocol for a case that only judges gathered facts: its three phases,
        each reported through every plugin's makereport and logreport hooks (JUnit, terminal,
        pytest-html, the suite's reporter, xdist), without the runtest_setup/call/teardown hooks
        around each phase. Those capture output and logs, collect unraisable exceptions and set
        PYTEST_CURRENT_TEST: most of pytest's cost per case at fleet scale (bench/RESULTS.md,
        case-cost), for a judgement of facts in memory that prints nothing.
        """
        ihook = self.ihook  # looked up by path on each access
        reraise: tuple[type[BaseException], ...] = (pytest.exit.Exception,)
        if not self.config.getoption("usepdb", False):  # None with -p no:debugging
            reraise += (KeyboardInterrupt,)
        ihook.pytest_runtest_logstart(nodeid=self.nodeid, location=self.location)
        if self._phase(ihook, reraise, "setup", self.setup).passed:
            self._phase(ihook, reraise, "call", self.runtest)
        self._phase(ihook, reraise, "teardown", self.teardown)
        ihook.pytest_runtest_logfinish(nodeid=self.nodeid, location=self.location)

    def _phase(
        self,
        ihook: Any,
        reraise: tuple[type[BaseException], ...],
        when: Literal["setup", "call", "teardown"],
        run: Callable[[], None],
    ) -> pytest.TestReport:
        """One phase as pytest's call_and_report makes it: timed, reported, and --pdb on an exception."""
        call = pytest.CallInfo.from_call(run, when=when, reraise=reraise)
        report: pytest.TestReport = ihook.pytest_runtest_makereport(item=self, call=call)
        ihook.pytest_runtest_logreport(report=report)
        excinfo = call.excinfo
        if excinfo and not hasattr(report, "wasxfail") and not isinstance(excinfo.value, (Skipped, bdb.BdbQuit)):
            ihook.pytest_exception_interact(node=self, call=call, report=report)
        return report

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, self.check.__code__.co_firstlineno - 1, self.name
