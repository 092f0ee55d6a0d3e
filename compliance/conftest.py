"""The suite's pytest wiring: gather -> cases -> judge -> report.

Loaded for runs that collect ``compliance/`` (plain ``pytest`` at the project root,
through ``testpaths``), not for the project's own tests in ``tests/``.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from compliance import backends, report, shard, workaround
from compliance.cases import Case, build_cases
from compliance.gather import GatherInterrupted, HostResult, Target, gather, make_targets
from compliance.report import AuditReporter
from compliance.rule import Verdict

RESULTS = pytest.StashKey[list]()  # list[HostResult], same on controller and workers
RECORD = pytest.StashKey[dict]()  # this item's record
OUTCOME = pytest.StashKey[Any]()  # this item's workaround.Outcome, when it was touched
INTERRUPTED = pytest.StashKey[bool]()  # gathering was interrupted
PREVIOUS_SIGTERM = pytest.StashKey[Any]()
WORKERINPUT_KEY = "xennet_results"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_unconfigure(config: pytest.Config) -> None:
    previous = config.stash.get(PREVIOUS_SIGTERM, None)
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    backends.install()
    if _is_worker(config):
        return
    # Jenkins aborts a build with SIGTERM: handle it like Ctrl-C, so reports are still written.
    if threading.current_thread() is threading.main_thread():
        config.stash[PREVIOUS_SIGTERM] = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    # All three reports are on by default; --junitxml / --html / --xennet-summary move them.
    # A --collect-only run writes none by default, so it never clobbers a real audit's.
    if not config.option.collectonly:
        reports = config.rootpath / "reports"
        config.option.xmlpath = config.option.xmlpath or str(reports / "junit.xml")
        if getattr(config.option, "htmlpath", "missing") is None:
            config.option.htmlpath = str(reports / "report.html")
    config.option.self_contained_html = True  # one file to archive and to mail, wherever it goes
    config.pluginmanager.register(
        AuditReporter(config, expected_cases=lambda: len(build_cases(config.stash.get(RESULTS, [])))), "xennet-reporter"
    )


def audit_targets(config: pytest.Config) -> list[Target]:
    """The run's hosts, from testinfra's options and ours; nothing is contacted."""
    option = config.option
    return make_targets(
        option.hosts.split(",") if option.hosts else None,
        connection=option.connection,
        ssh_config=option.ssh_config,
        ssh_identity_file=option.ssh_identity_file,
        ssh_extra_args=option.ssh_extra_args,
        sudo=option.sudo,
        sudo_user=option.sudo_user,
        ansible_inventory=option.ansible_inventory,
        force_ansible=option.force_ansible,
        timeout=config.getoption("xennet_timeout"),
        known_hosts=config.getoption("ssh_known_hosts"),
        host_key_policy=config.getoption("ssh_host_key_policy"),
    )


def _gather(config: pytest.Config) -> list[HostResult]:
    everyone = audit_targets(config)
    if not everyone:
        # An empty group or inventory must not read as a clean audit.
        raise pytest.UsageError(f"--hosts={report.target_description(config.option.hosts)} matched no host: nothing to audit")
    targets = shard.select(everyone, config.getoption("xennet_shard"))
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    started = time.monotonic()
    shown = [0.0]

    def say(line: str) -> None:
        if terminal is not None:
            terminal.rewrite(line) if terminal.isatty() else terminal.write_line(line)
            terminal.flush()  # progress is for now: a CI console must not get it at exit

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        # A live counter on a terminal; a line every few seconds in a CI log.
        if terminal is not None and (terminal.isatty() or done == total or now - shown[0] >= 5):
            say(f"gathering {done}/{total} hosts")
            shown[0] = now

    try:
        results = gather(targets, workers=config.getoption("xennet_workers"), progress=progress)
    except GatherInterrupted as exc:
        say(f"interrupted while gathering: {len(exc.results)}/{len(targets)} hosts finished")
        config.stash[INTERRUPTED] = True
        return exc.results
    failed = sum(1 for r in results if r.error)
    say(f"gathered {len(results)} hosts in {time.monotonic() - started:.1f}s ({failed} unreachable or in error)")
    if terminal is not None:
        terminal.write_line("")
    return results


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"received signal {signum}")


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    # Reached when gathering was interrupted: stop here, through pytest's own interrupt
    # path, so that every report is still written (with what finished).
    if session.config.stash.get(INTERRUPTED, False):
        raise session.Interrupted("interrupted while gathering")


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"xennet: target {report.target_description(config.option.hosts)}, "
        f"scope {config.getoption('xennet_scope')}, host keys {report.host_key_description(config)}"
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if _is_worker(config):
        # Workers never gather: the controller handed them its results.
        config.stash[RESULTS] = [HostResult.from_dict(d) for d in config.workerinput[WORKERINPUT_KEY]]
    else:
        config.stash[RESULTS] = _gather(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput[WORKERINPUT_KEY] = [r.to_dict() for r in node.config.stash[RESULTS]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "xennet_case" in metafunc.fixturenames:
        cases = build_cases(metafunc.config.stash[RESULTS])
        metafunc.parametrize("xennet_case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def xennet_remediator(request: pytest.FixtureRequest) -> Any:
    """The optional workaround. Workers act too: they rebuild targets from their own options
    (host specs may hold passwords, so they never travel in workerinput), one connection
    per host they act on, closed at session end."""
    config = request.config
    remediator = workaround.Remediator(
        config.getoption("xennet_workaround"),
        lambda: audit_targets(config),
        allow_mtu=config.getoption("xennet_allow_mtu"),
        persist=config.getoption("xennet_persist"),
        scope=config.getoption("xennet_scope"),
        sudo=bool(config.option.sudo),
    )
    yield remediator
    remediator.close()


@pytest.fixture
def xennet_judgement(
    xennet_case: Case, request: pytest.FixtureRequest, record_property: Any, xennet_remediator: Any
) -> Any:
    """Judge this case (then apply the workaround, if asked); a host or interface in doubt errors here, in setup."""
    judgement = xennet_case.judge(request.config.getoption("xennet_scope"))
    record = xennet_case.record(judgement)
    if xennet_case.interface is not None:
        outcome = xennet_remediator.act(xennet_case.host, xennet_case.interface, xennet_case.ethtool, judgement)
        if outcome is not None:
            request.node.stash[OUTCOME] = outcome
            record = workaround.apply_to_record(record, outcome)
            judgement = outcome.judgement
    request.node.stash[RECORD] = record.to_dict()  # the row's dict form: it travels to the xdist controller
    for name, value in report.junit_properties(record):
        record_property(name, value)
    if judgement.verdict is Verdict.ERROR:
        # Failing in setup makes the case an error, never a pass; the cause is one line, no traceback.
        pytest.fail(judgement.message, pytrace=False)
    if judgement.verdict is Verdict.NOT_APPLICABLE:
        pytest.skip(judgement.message)
    return judgement


@pytest.fixture
def xennet_workaround(xennet_judgement: Any, request: pytest.FixtureRequest) -> Any:
    """What the workaround did to this case (a workaround.Outcome), or None when untouched."""
    return request.node.stash.get(OUTCOME, None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    test_report = yield
    record = item.stash.get(RECORD, None)
    if record is not None:
        test_report.xennet = record  # travels to the xdist controller with the report
    return test_report


