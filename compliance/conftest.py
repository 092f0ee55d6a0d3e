"""The suite's pytest wiring: gather -> cases -> judge -> report.

Loaded for runs that collect ``compliance/`` (plain ``pytest`` at the project root,
through ``testpaths``), not for the project's own tests in ``tests/``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from compliance import backends, report
from compliance.cases import Case, build_cases
from compliance.gather import HostResult, gather, make_targets
from compliance.report import AuditReporter
from compliance.rule import Verdict

RESULTS = pytest.StashKey[list]()  # list[HostResult], same on controller and workers
RECORD = pytest.StashKey[dict]()  # this item's record
WORKERINPUT_KEY = "xennet_results"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _root_path(config: pytest.Config, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else config.rootpath / path


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    backends.install()
    if _is_worker(config):
        return
    # All three reports are on by default; --junitxml / --html / --xennet-summary move them.
    if not config.option.xmlpath:
        config.option.xmlpath = str(config.rootpath / "reports" / "junit.xml")
    if getattr(config.option, "htmlpath", "missing") is None:
        config.option.htmlpath = str(config.rootpath / "reports" / "report.html")
        config.option.self_contained_html = True
    config.pluginmanager.register(
        AuditReporter(config, expected_cases=lambda: len(build_cases(config.stash.get(RESULTS, [])))), "xennet-reporter"
    )


def _gather(config: pytest.Config) -> list[HostResult]:
    option = config.option
    hosts = option.hosts.split(",") if option.hosts else None
    timeout = config.getoption("xennet_timeout")
    known_hosts = config.getoption("ssh_known_hosts")
    targets = make_targets(
        hosts,
        connection=option.connection,
        ssh_config=option.ssh_config,
        ssh_identity_file=option.ssh_identity_file,
        ssh_extra_args=option.ssh_extra_args,
        sudo=option.sudo,
        sudo_user=option.sudo_user,
        ansible_inventory=option.ansible_inventory,
        force_ansible=option.force_ansible,
        timeout=timeout,
        known_hosts=known_hosts,
    )
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    started = time.monotonic()
    shown = [0.0]

    def progress(done: int, total: int) -> None:
        if terminal is None:
            return
        now = time.monotonic()
        # A live counter on a terminal; a line every few seconds in a CI log.
        if terminal.isatty():
            terminal.rewrite(f"gathering {done}/{total} hosts")
        elif done == total or now - shown[0] >= 5:
            terminal.write_line(f"gathering {done}/{total} hosts")
            shown[0] = now

    results = gather(targets, workers=config.getoption("xennet_workers"), timeout=timeout, known_hosts=known_hosts, progress=progress)
    if terminal is not None:
        failed = sum(1 for r in results if r.error)
        line = f"gathered {len(results)} hosts in {time.monotonic() - started:.1f}s ({failed} unreachable or in error)"
        terminal.rewrite(line) if terminal.isatty() else terminal.write_line(line)
        terminal.write_line("")
    return results


def pytest_report_header(config: pytest.Config) -> str:
    return f"xennet: target {report.target_description(config.option.hosts)}, scope {config.getoption('xennet_scope')}"


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


class AuditError(Exception):
    """The interface's state cannot be determined: the case errors, it never passes."""


@pytest.fixture
def xennet_judgement(xennet_case: Case, request: pytest.FixtureRequest, record_property: Any) -> Any:
    """Judge this case; a host or interface in doubt errors here, in setup."""
    judgement = xennet_case.judge(request.config.getoption("xennet_scope"))
    record = xennet_case.record(judgement)
    request.node.stash[RECORD] = record
    for name, value in report.junit_properties(record):
        record_property(name, value)
    if judgement.verdict is Verdict.ERROR:
        raise AuditError(judgement.message)
    if judgement.verdict is Verdict.NOT_APPLICABLE:
        pytest.skip(judgement.message)
    return judgement


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    test_report = yield
    record = item.stash.get(RECORD, None)
    if record is not None:
        test_report.xennet = record  # travels to the xdist controller with the report
    return test_report


