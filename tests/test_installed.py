"""The installed route, as a new user takes it: a fresh virtualenv, a non-editable `pip install`,
then the audit from an empty directory, from a clone's root, and beside other testinfra tests.

The venv is built once per run from a copy of this working tree (so the clone itself gets no
build/ or egg-info), with pip's cache: on a fresh machine its first build downloads from PyPI.
Every audit here is of this machine (local://): nothing leaves it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT

COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".tox", ".venv", "reports", "__pycache__", "*.egg-info", "build", ".pytest_cache"
)
OTHER_TEST = """
import sys
import testinfra.backend

def test_testinfra_is_upstreams(host):
    assert type(host.backend).__module__ == "testinfra.backend.local"
    assert testinfra.backend.BACKENDS["paramiko"] == "testinfra.backend.paramiko.ParamikoBackend"
    assert "compliance.audit" not in sys.modules and "paramiko" not in sys.modules
    assert "compliance.waivers" not in sys.modules and "jsonschema" not in sys.modules
    assert host.run("true").rc == 0
"""


class Installed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "venv" / "bin"
        self.clone = root / "clone"

    def run(self, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        # No activation: the venv's bin is on PATH, as `activate` would put it; HOME stays.
        env = dict(os.environ, PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}", COLUMNS="200")
        env.pop("PYTHONPATH", None)
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    where = Installed(tmp_path_factory.mktemp("installed"))
    shutil.copytree(ROOT, where.clone, ignore=COPY_IGNORE)
    venv.create(where.root / "venv", with_pip=True)
    proc = subprocess.run(
        [str(where.bin / "python"), "-m", "pip", "install", "--quiet", str(where.clone)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        pytest.fail(f"pip install failed:\n{proc.stdout}\n{proc.stderr}")
    return where


def reports_of(directory: Path) -> dict:
    reports = ["junit.xml", "summary.css", "summary.html", "summary.json"]  # report.html only with --html
    assert sorted(p.name for p in (directory / "reports").iterdir()) == reports
    # The template and the stylesheet are package data: the page is whole, and styled.
    assert "summary_html" not in str(directory)
    assert 'class="host"' in (directory / "reports" / "summary.html").read_text()
    assert "section.host" in (directory / "reports" / "summary.css").read_text()
    return json.loads((directory / "reports" / "summary.json").read_text())


def test_the_install_is_not_editable(installed):
    proc = installed.run(
        [str(installed.bin / "python"), "-c", "import compliance; print(compliance.__file__)"], cwd=installed.root
    )
    assert "site-packages" in proc.stdout and str(installed.clone) not in proc.stdout


def test_console_script_from_an_empty_directory(installed, tmp_path):
    proc = installed.run([str(installed.bin / "xennet-audit"), "--hosts=local://"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = reports_of(tmp_path)
    assert summary["target"] == "local" and summary["complete"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]  # no .pytest_cache, nothing else


def test_pytest_pyargs_from_an_empty_directory(installed, tmp_path):
    proc = installed.run([str(installed.bin / "pytest"), "--pyargs", "compliance", "--hosts=local://"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {r["host"] for r in reports_of(tmp_path)["results"]} == {"local"}


def test_console_script_ignores_the_callers_pytest_config(installed, tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --this-option-does-not-exist\n")
    # Path values may follow a space: xennet-audit pins its own (empty) configuration.
    proc = installed.run(
        [str(installed.bin / "xennet-audit"), "--hosts=local://", "--reports-dir", "out"], cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out" / "summary.json").is_file()


def test_console_script_reads_a_waiver_file_with_the_packaged_schema(installed, tmp_path):
    (tmp_path / "waivers.yml").write_text(
        'waivers:\n  - {host: "nosuch*", interface: "*", justification: "j", expires: 2099-01-01, owner: "o"}\n'
    )
    proc = installed.run([str(installed.bin / "xennet-audit"), "--xennet-waivers", "waivers.yml"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = reports_of(tmp_path)
    assert summary["waivers"]["count"] == 1 and summary["counts"]["waived"] == 0
    assert [w["source"] for w in summary["unmatched_waivers"]] == ["waivers.yml:2"]
    (tmp_path / "waivers.yml").write_text("waivers:\n  - {host: a}\n")
    proc = installed.run([str(installed.bin / "xennet-audit"), "--xennet-waivers", "waivers.yml"], cwd=tmp_path)
    assert proc.returncode == 4 and proc.stderr.strip() == (
        "ERROR: --xennet-waivers waivers.yml:2: waiver #1: missing key(s) 'interface', 'justification', "
        "'expires', 'owner'"
    )


def test_console_script_makes_pytests_own_usage_errors_one_line_too(installed, tmp_path):
    good = installed.run([str(installed.bin / "xennet-audit"), "--hosts=local://"], cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    proc = installed.run([str(installed.bin / "xennet-audit"), "--xennet-timout=5"], cwd=tmp_path)
    assert proc.returncode == 4 and proc.stderr.strip() == "ERROR: unrecognized arguments: --xennet-timout=5"
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["summary.json"]
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert (summary["complete"], summary["error"]) == (False, "unrecognized arguments: --xennet-timout=5")


def test_console_script_usage_error_is_one_line(installed, tmp_path):
    proc = installed.run([str(installed.bin / "xennet-audit"), "--hosts=lokal://"], cwd=tmp_path)
    assert proc.returncode == 4
    assert (
        proc.stderr.strip().startswith("ERROR: unknown scheme 'lokal'") and len(proc.stderr.strip().splitlines()) == 1
    )


def test_bare_pytest_in_a_clones_root_after_a_non_editable_install(installed):
    # The clone's compliance/ and the installed one are two copies of the package.
    proc = installed.run([str(installed.bin / "pytest"), "-p", "no:cacheprovider"], cwd=installed.clone)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ImportPathMismatchError" not in proc.stdout + proc.stderr
    assert reports_of(installed.clone)["target"] == "local"
    shutil.rmtree(installed.clone / "reports")


def test_other_testinfra_tests_in_the_same_environment_see_upstream_testinfra(installed, tmp_path):
    (tmp_path / "test_other.py").write_text(OTHER_TEST)
    proc = installed.run(
        [str(installed.bin / "pytest"), "-p", "no:cacheprovider", "--hosts=local://", "-q"], cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert not (tmp_path / "reports").exists()


def test_audit_options_outside_the_audit_get_a_hint(installed, tmp_path):
    hint = "the xennet audit is not collected from here: run `xennet-audit ARGS`"
    nothing = installed.run([str(installed.bin / "pytest"), "-p", "no:cacheprovider", "--hosts=local://"], cwd=tmp_path)
    assert nothing.returncode == 5 and hint in nothing.stdout
    wrong = installed.run([str(installed.bin / "pytest"), "-p", "no:cacheprovider", "--xennet-scope=all"], cwd=tmp_path)
    assert wrong.returncode == 4 and f"ERROR: --xennet-scope given, but {hint}" in wrong.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="the audit reads Linux sysfs")
def test_pyargs_under_xdist(installed, tmp_path):
    proc = installed.run(
        [
            str(installed.bin / "pytest"),
            "--pyargs",
            "compliance",
            "--hosts=local://",
            "-n",
            "2",
            "-p",
            "no:cacheprovider",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert reports_of(tmp_path)["complete"] is True
