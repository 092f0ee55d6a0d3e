"""Every mistake a user makes on the command line: exit status 4 and one line, before any host is contacted.

Hosts named here are on loopback: if a check were ever skipped, nothing would leave this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from compliance import targets
from compliance.options import UsageProblem, tb_given
from tests.conftest import ROOT, run_audit

INVENTORIES = ROOT / "inventories"


def one_line_error(audit) -> str:
    """The run's usage error: exit 4, a single ERROR line, no traceback."""
    assert audit.returncode == 4, audit.stdout + audit.stderr
    output = audit.stdout + audit.stderr
    assert "Traceback" not in output and "INTERNALERROR" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1, output
    return errors[0].removeprefix("ERROR: ")


@pytest.fixture
def inventory_tools():
    pytest.importorskip("ansible", reason="ansible-core is the optional [ansible] extra")


@pytest.mark.parametrize("spec", ["lokal://", "paramkio://root@127.0.0.1"])
def test_unknown_scheme_lists_the_valid_ones(tmp_path, spec):
    error = one_line_error(run_audit(tmp_path, f"--hosts={spec}"))
    scheme = spec.split("://")[0]
    assert error == (
        f"unknown scheme {scheme!r} in --hosts entry {spec!r}; valid schemes: paramiko://, ssh://, local://, ansible://"
    )


@pytest.mark.parametrize("hosts", ["paramiko://root@127.0.0.1,", ",local://", "local://,,ssh://127.0.0.1"])
def test_an_empty_spec_is_a_stray_comma(tmp_path, hosts):
    assert "--hosts has an empty entry (a stray comma?)" in one_line_error(run_audit(tmp_path, f"--hosts={hosts}"))


def test_an_empty_hosts_option_is_not_this_machine(tmp_path):
    assert one_line_error(run_audit(tmp_path, "--hosts=")).startswith("--hosts is empty")


def test_the_same_host_twice_names_both_specs(tmp_path):
    error = one_line_error(run_audit(tmp_path, "--hosts=paramiko://root:s3cret@127.0.0.1,ssh://ops@127.0.0.1"))
    assert error == "host 127.0.0.1 is given twice: by 'paramiko://root@127.0.0.1' and 'ssh://ops@127.0.0.1'"
    assert "s3cret" not in error


@pytest.mark.parametrize("option", ["--ssh-identity-file", "--ssh-config", "--ssh-known-hosts"])
def test_a_missing_file_is_named(tmp_path, option):
    missing = tmp_path / "no-such-file"
    error = one_line_error(run_audit(tmp_path / "r", "--hosts=paramiko://root@127.0.0.1", f"{option}={missing}"))
    assert error == f"{option} {missing}: no such file"


def test_a_directory_is_not_a_file(tmp_path):
    error = one_line_error(
        run_audit(tmp_path / "r", "--hosts=paramiko://root@127.0.0.1", f"--ssh-identity-file={tmp_path}")
    )
    assert error == f"--ssh-identity-file {tmp_path}: not a file"


def test_accept_new_may_create_its_known_hosts_file(tmp_path):
    # The first known_hosts file is where accept-new records keys: it need not exist yet.
    from compliance.targets import check_files

    check_files(None, None, str(tmp_path / "new_known_hosts"), "accept-new")
    with pytest.raises(UsageProblem, match="no such file"):
        check_files(None, None, str(tmp_path / "new_known_hosts"), "strict")


def test_a_missing_inventory_and_a_malformed_one_are_different_mistakes(tmp_path, inventory_tools):
    missing = tmp_path / "nosuch.ini"
    error = one_line_error(run_audit(tmp_path / "a", "--hosts=ansible://all", f"--ansible-inventory={missing}"))
    assert error == f"--ansible-inventory {missing}: no such file"
    malformed = tmp_path / "bad.ini"
    malformed.write_text("[web\nweb1 ansible_host=127.0.0.1\n")
    error = one_line_error(run_audit(tmp_path / "b", "--hosts=ansible://all", f"--ansible-inventory={malformed}"))
    # Ansible's own words, not "missing file ?".
    assert error.startswith(
        f"--ansible-inventory {malformed} is malformed: Failed to parse inventory with 'ini' plugin"
    )
    assert "missing file" not in error


def test_ansible_inventory_is_found_beside_python_when_the_venv_is_not_activated(tmp_path, inventory_tools):
    # `/venv/bin/python -m pytest` without `activate`: PATH lacks the venv's bin directory.
    env = {"PATH": "/usr/bin:/bin"}
    audit = run_audit(
        tmp_path, "--hosts=ansible://nosuchgroup", f"--ansible-inventory={INVENTORIES / 'example.ini'}", env=env
    )
    assert one_line_error(audit) == "--hosts=ansible://nosuchgroup matched no host: nothing to audit"


def test_without_ansible_inventory_the_fix_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(UsageProblem) as raised:
        targets.ansible_inventory_command()
    assert "pip install 'xennet-compliance[ansible]'" in str(raised.value)
    assert "activate the virtualenv" in str(raised.value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("0", "positive"),
        ("-5", "positive"),
        ("soon", "number"),
        ("nan", "positive"),
        ("inf", "positive"),
    ],
)
def test_timeout_must_be_a_positive_number(tmp_path, value, why):
    error = one_line_error(run_audit(tmp_path, f"--xennet-timeout={value}"))
    assert error.startswith("--xennet-timeout must be a ") and why in error and repr(value) in error


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_workers_must_be_at_least_one(tmp_path, value):
    assert one_line_error(run_audit(tmp_path, f"--xennet-workers={value}")).startswith("--xennet-workers must be")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--xennet-scope", "everything"),
        ("--ssh-host-key-policy", "lax"),
        ("--xennet-workaround", "yes"),
        ("--xennet-shard", "5/4"),
        ("--xennet-waivers", ""),
    ],
)
def test_other_bad_values_are_one_line_too(tmp_path, option, value):
    assert one_line_error(run_audit(tmp_path, f"{option}={value}")).startswith(option)


def test_force_ansible_is_refused(tmp_path, inventory_tools):
    error = one_line_error(
        run_audit(
            tmp_path, "--hosts=ansible://all", "--force-ansible", f"--ansible-inventory={INVENTORIES / 'example.ini'}"
        )
    )
    assert error.startswith("--force-ansible is not supported")


@pytest.mark.parametrize(
    "mistake",
    ["--hosts=lokal://", "--xennet-timeout=0", "--xennet-workers=0", "--xennet-scope=x", "--xennet-persist"],
)
def test_a_usage_error_leaves_no_older_report_looking_current(tmp_path, mistake):
    good = run_audit(tmp_path, "--hosts=local://")
    assert good.returncode == 0, good.stdout
    assert all((tmp_path / name).exists() for name in ("junit.xml", "report.html", "summary.json", "summary.html"))
    bad = run_audit(tmp_path, mistake)
    error = one_line_error(bad)
    assert not (tmp_path / "junit.xml").exists() and not (tmp_path / "report.html").exists()
    assert not (tmp_path / "summary.html").exists() and not (tmp_path / "summary.css").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["complete"], summary["error"], summary["results"]) == (False, error, [])


def test_collect_only_says_it_writes_no_report(tmp_path):
    audit = run_audit(tmp_path, "--hosts=local://", "--collect-only", "-q")
    assert audit.returncode == 0, audit.stdout
    assert "--collect-only: no report was written" in audit.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_reports_dir_holds_every_report(tmp_path):
    out = tmp_path / "shard-7"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--hosts=local://", f"--reports-dir={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reports = ["junit.xml", "summary.css", "summary.html", "summary.json"]
    assert sorted(p.name for p in out.iterdir()) == reports
    assert f"summary: {out / 'summary.json'}" in proc.stdout


def test_pytest_html_writes_only_when_asked_and_an_older_page_goes(tmp_path):
    """pytest-html's page costs more per case than every other report (see the README's Large
    fleets): only --html writes it; an older run's page at the default path would look current."""
    asked = run_audit(tmp_path, "--hosts=local://")  # with --html=tmp_path/report.html
    assert asked.returncode == 0 and "<html" in (tmp_path / "report.html").read_text()[:500]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--hosts=local://", f"--reports-dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junit.xml", "summary.css", "summary.html", "summary.json"]
    assert "Generated html report" not in proc.stdout


def test_summary_html_option_moves_the_page_and_its_stylesheet(tmp_path):
    proc = run_audit(tmp_path, "--hosts=local://", f"--xennet-summary-html={tmp_path / 'page' / 'audit.html'}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in (tmp_path / "page").iterdir()) == ["audit.html", "summary.css"]
    assert '<link rel="stylesheet" href="summary.css">' in (tmp_path / "page" / "audit.html").read_text()
    assert not (tmp_path / "summary.html").exists()


def test_summary_html_on_another_reports_path_is_a_usage_error(tmp_path):
    error = one_line_error(run_audit(tmp_path, "--hosts=local://", f"--xennet-summary-html={tmp_path / 'report.html'}"))
    assert error == f"--html and --xennet-summary-html name the same file: {tmp_path / 'report.html'}"


def test_a_path_value_after_a_space_in_a_clones_root_is_named(tmp_path):
    key = tmp_path / "key"
    key.write_text("")
    error = one_line_error(run_audit(tmp_path / "r", "--ssh-identity-file", str(key), "--hosts=local://"))
    assert error.startswith("pytest did not read this project's pyproject.toml") and "`=`" in error


@pytest.mark.parametrize(
    ("hosts", "why"),
    [
        ("local:// paramiko://root@127.0.0.1", "holds a blank: separate host specs with commas"),
        ("paramiko://root@127.0.0.1 paramiko://root@127.0.0.2", "holds a blank"),
        ("local://foo", "local:// is this machine and takes no host"),
    ],
)
def test_specs_that_would_silently_drop_a_host_are_refused(tmp_path, hosts, why):
    assert why in one_line_error(run_audit(tmp_path, f"--hosts={hosts}"))


def test_a_report_directory_that_cannot_be_made_is_named_before_any_host(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--hosts=local://", f"--reports-dir={blocker / 'r'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 4 and "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip() == f"ERROR: cannot create report directory {blocker / 'r'}: Not a directory"


def test_tilde_is_expanded_once_for_every_path(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    (target,) = targets.expand(
        ["ssh://root@127.0.0.1"], ssh_config="~/cfg", ssh_identity_file="~/key", known_hosts="~/a ~/b"
    ).targets
    assert target.options["ssh_config"] == str(tmp_path / "cfg")
    assert target.options["ssh_identity_file"] == str(tmp_path / "key")
    assert target.options["known_hosts"] == f"{tmp_path / 'a'} {tmp_path / 'b'}"


def test_only_the_audits_own_paths_select_it(tmp_path):
    """A directory that merely contains a virtualenv with the package installed is not the audit."""
    from types import SimpleNamespace

    from compliance.plugin import audit_selected

    package = tmp_path / "ws" / ".venv" / "lib" / "python3.11" / "site-packages" / "compliance"
    package.mkdir(parents=True)
    for name in ("__init__.py", "plugin.py", "test_xennet.py"):
        (package / name).write_text("")

    def selected(*args: Path) -> bool:
        config = SimpleNamespace(
            args=[str(a) for a in args],
            invocation_params=SimpleNamespace(dir=tmp_path),
            option=SimpleNamespace(pyargs=False),
        )
        return audit_selected(config)  # type: ignore[arg-type]

    assert not selected(tmp_path / "ws") and not selected(tmp_path)
    assert selected(package) and selected(package / "test_xennet.py") and selected(package.parent)
    assert selected(ROOT) and not selected(ROOT / "tests")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (("--junitxml=j", "--html=j"), "--junitxml and --html name the same file"),
        (("--xennet-summary=r.x", "--junitxml=r.x"), "--junitxml and --xennet-summary name the same file"),
    ],
)
def test_two_reports_may_not_share_a_path(tmp_path, options, error):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pyargs", "compliance", "--hosts=local://", *options],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    assert proc.returncode == 4 and error in proc.stderr, proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_report_path_that_is_a_directory_is_refused_before_any_host(tmp_path):
    (tmp_path / "s").mkdir()
    error = one_line_error(run_audit(tmp_path / "r", f"--xennet-summary={tmp_path / 's'}"))
    assert error == f"report path {tmp_path / 's'} is a directory"


@pytest.mark.parametrize(
    ("args", "env", "shown"),
    [
        ((), {}, False),
        (("--tb=auto",), {}, True),
        (("--tb", "auto"), {}, True),
        ((), {"PYTEST_ADDOPTS": "--tb=auto"}, True),
        (("-o", "addopts=--tb=auto"), {}, True),  # as the ini file's addopts
        (("@{args}",), {}, True),  # a file of arguments
        (("--tb=no",), {}, False),
    ],
    ids=["default", "tb=auto", "tb auto", "PYTEST_ADDOPTS", "ini addopts", "@file", "tb=no"],
)
def test_tb_given_in_any_way_pytest_takes_it_is_kept(tmp_path, args, env, shown):
    """pytest's FAILURES and ERRORS sections are off by default in an audit (--tb=no); a --tb the user
    gave, even pytest's own default `auto`, is theirs."""
    (tmp_path / "args").write_text("--tb=auto\n")
    args = [a.format(args=tmp_path / "args") for a in args]
    audit = run_audit(tmp_path, "--hosts=paramiko://root@127.0.0.1:1", "--xennet-scope=all", *args, env=env)
    assert audit.returncode == 1, audit.stdout + audit.stderr  # the refused port is an error, not a pass
    assert ("= ERRORS =" in audit.stdout) is shown, audit.stdout


def test_tb_given_does_not_read_a_fifo_pytest_has_read_already(tmp_path):
    """A second read of an @fifo (or @/dev/stdin) would wait for a writer that is gone: the audit would hang."""
    fifo = tmp_path / "args"
    os.mkfifo(fifo)
    answer: list[bool] = []
    reader = threading.Thread(target=lambda: answer.append(tb_given([f"@{fifo}", "-q"])), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert answer == [False]


@pytest.mark.parametrize("waivers", [False, True], ids=["plain", "waivers"])
def test_a_bug_in_the_suite_shows_its_traceback_whatever_tb_says(tmp_path, waivers):
    """--tb=no is the audit's default; an exception that is no verdict is a bug, and its traceback is shown.
    With waivers, judging is also how a case's protocol is chosen: the bug is still the case's error."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "buggy_setup.py").write_text(  # a bug in judging, which each case's setup does
        "import compliance.cases\n\n"
        "def judge(case, scope):\n    raise KeyError('a bug in the suite')\n\n"
        "compliance.cases.Case.judge = judge\n"
    )
    env = dict(os.environ, PYTHONPATH=str(plugins))
    extra = []
    if waivers:
        (tmp_path / "w.yml").write_text(
            'waivers:\n  - {host: "nosuch", interface: "*", justification: "j", expires: 2099-12-31, owner: "o"}\n'
        )
        extra = [f"--xennet-waivers={tmp_path / 'w.yml'}"]
    audit = run_audit(tmp_path, "--hosts=local://", "--xennet-scope=all", "-p", "buggy_setup", *extra, env=env)
    assert audit.returncode == 1, audit.stdout
    out = audit.stdout
    assert "ended in an error of the suite itself (a bug" in out
    assert "buggy_setup.py" in out and "KeyError: 'a bug in the suite'" in out  # the frame, then the error
    errors = [e for case in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase") for e in case.iter("error")]
    assert errors and all("buggy_setup.py" in (e.text or "") for e in errors)


def test_audit_cases_between_other_tests_leave_pytests_setup_state_as_they_expect(tmp_path):
    """Cases run lean skip pytest's per-phase hooks; doctests before them and tests after them, in
    another package, still find their modules set up and torn down as pytest expects."""
    audit = run_audit(
        tmp_path, "--hosts=local://", "--xennet-scope=all", "--doctest-modules",
        "compliance/targets.py", "compliance/test_xennet.py", "tests/test_rule.py",
    )  # fmt: skip
    out = audit.stdout + audit.stderr
    assert "not torn down" not in out and "INTERNALERROR" not in out, out
    others = [
        case
        for case in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")
        if case.get("classname", "").startswith(("compliance.targets", "tests.test_rule"))
    ]
    outcomes = [child.tag for case in others for child in case]
    assert len(others) >= 10 and not outcomes, out  # each passed: no failure, error or skip


def test_an_audit_runs_with_pytests_setup_and_debugging_plugins_blocked(tmp_path):
    """-p no:setuponly, no:setupplan and no:debugging leave their options unset: cases run all the same."""
    audit = run_audit(
        tmp_path, "--hosts=local://", "--xennet-scope=all",
        "-p", "no:setuponly", "-p", "no:setupplan", "-p", "no:debugging",
    )  # fmt: skip
    assert audit.returncode in (0, 1) and "INTERNALERROR" not in audit.stderr + audit.stdout, audit.stdout
    cases = list(ET.parse(tmp_path / "junit.xml").getroot().iter("testcase"))
    assert cases and len(cases) == len(audit.summary["results"]), audit.stdout


def test_an_audit_run_in_process_freezes_each_stage_and_leaves_the_heap_collectable(tmp_path):
    """pytest.main() in-process, as a wrapper script would call it. The audit freezes what outlives
    gathering, collection and the run loop, so garbage collections skip it (bench/RESULTS.md);
    the caller gets its heap back collectable, and its SIGTERM handler back."""
    import gc
    import signal

    seen: dict[str, int] = {}

    class Spy:
        @pytest.hookimpl(trylast=True)
        def pytest_sessionstart(self, session):
            seen["gathered"] = gc.get_freeze_count()

        @pytest.hookimpl(trylast=True)
        def pytest_runtest_logreport(self, report):
            seen.setdefault("run loop", gc.get_freeze_count())

        @pytest.hookimpl(trylast=True)
        def pytest_sessionfinish(self, session):
            seen["session finish"] = gc.get_freeze_count()

    assert gc.get_freeze_count() == 0, "this test's own process must start unfrozen"
    handler = signal.getsignal(signal.SIGTERM)
    status = pytest.main(
        ["-p", "no:cacheprovider", "-q", "--pyargs", "compliance", "--hosts=local://", "--xennet-scope=all",
         f"--reports-dir={tmp_path}"],
        plugins=[Spy()],
    )  # fmt: skip
    assert status in (0, 1), status
    assert json.loads((tmp_path / "summary.json").read_text())["complete"]
    assert 0 < seen["gathered"] < seen["run loop"] < seen["session finish"], seen
    assert gc.get_freeze_count() == 0
    assert signal.getsignal(signal.SIGTERM) == handler


def test_runxfail_with_waivers_is_refused_before_any_host(tmp_path):
    # A waiver is pytest's xfail: --runxfail would fail every waived case while summary.json counts it waived.
    (tmp_path / "w.yml").write_text(
        'waivers:\n  - {host: "nosuch", interface: "*", justification: "j", expires: 2099-12-31, owner: "o"}\n'
    )
    error = one_line_error(run_audit(tmp_path / "r", f"--xennet-waivers={tmp_path / 'w.yml'}", "--runxfail"))
    assert error == "--runxfail ignores every waiver (a waived case is an xfail): drop it, or --xennet-waivers"


def test_waivers_without_pytests_skipping_plugin_are_refused(tmp_path):
    (tmp_path / "w.yml").write_text(
        'waivers:\n  - {host: "nosuch", interface: "*", justification: "j", expires: 2099-12-31, owner: "o"}\n'
    )
    error = one_line_error(run_audit(tmp_path / "r", f"--xennet-waivers={tmp_path / 'w.yml'}", "-p", "no:skipping"))
    assert error == "--xennet-waivers needs pytest's skipping plugin (a waived case is an xfail): drop -p no:skipping"
