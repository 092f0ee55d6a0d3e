"""Disks that misbehave: a full one and a read-only one, as small tmpfs mounts of the test's own.

The audit (of this machine) still ends with every report it could write, whole, and one line
for each it could not; never a traceback, a 0-byte file, or exit status 1 (a verdict).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs of the given options at a directory of the test's own; unmounted at the end."""
    mounted = []

    def mount(options: str):
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "xennet-test", str(where)], check=True)
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", str(where)], check=True)


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--hosts=local://", *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)


def pages(path) -> int:
    return -(-path.stat().st_size // 4096)


def test_a_full_disk_costs_one_report_not_the_others(tmpfs, tmp_path):
    # Room for junit.xml, summary.json and summary.html with its CSS (as large as a first run made
    # them), not for report.html.
    sizes = audit(f"--reports-dir={tmp_path / 'first'}", f"--html={tmp_path / 'first' / 'report.html'}")
    assert sizes.returncode == 0, sizes.stdout
    small = ("junit.xml", "summary.json", "summary.html", "summary.css")
    room = sum(pages(tmp_path / "first" / name) for name in small) + 1
    assert room < pages(tmp_path / "first" / "report.html")
    full = tmpfs(f"size={room * 4}k")
    proc = audit(f"--reports-dir={full}", f"--html={full / 'report.html'}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 6, out
    assert f"cannot write {full / 'report.html'}: No space left on device" in proc.stdout
    assert "Traceback" not in out and "INTERNALERROR" not in out
    assert sorted(p.name for p in full.iterdir()) == sorted(small)  # no 0-byte file, no temp file
    assert json.loads((full / "summary.json").read_text())["complete"] is True
    assert len(list(ET.parse(full / "junit.xml").getroot().iter("testcase"))) >= 1
    assert f"Generated html report: file://{full / 'report.html'}" not in proc.stdout


def test_a_summary_that_cannot_be_written_does_not_stop_the_html_report(tmpfs, tmp_path):
    full = tmpfs("size=4k")
    (full / "filler").write_bytes(b"x" * 4096)
    reports_dir = tmp_path / "reports"
    proc = audit(
        f"--reports-dir={reports_dir}",
        f"--html={reports_dir / 'report.html'}",
        f"--xennet-summary={full / 'summary.json'}",
    )
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert f"cannot write {full / 'summary.json'}: No space left on device" in proc.stdout
    reports = ["junit.xml", "report.html", "summary.css", "summary.html"]
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == reports
    assert sorted(p.name for p in full.iterdir()) == ["filler"]


def test_a_summary_page_that_cannot_be_written_costs_only_itself(tmpfs, tmp_path):
    full = tmpfs("size=4k")
    (full / "filler").write_bytes(b"x" * 4096)
    proc = audit(f"--reports-dir={tmp_path / 'reports'}", f"--xennet-summary-html={full / 'summary.html'}")  # no --html
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert f"cannot write {full / 'summary.css'}: No space left on device" in proc.stdout
    assert f"cannot write {full / 'summary.html'}: No space left on device" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["junit.xml", "summary.json"]
    assert sorted(p.name for p in full.iterdir()) == ["filler"]


def test_a_read_only_report_directory_is_refused_before_any_host(tmpfs):
    read_only = tmpfs("ro,size=16k")
    proc = audit(f"--reports-dir={read_only}")
    assert proc.returncode == 4
    assert proc.stderr.strip() == f"ERROR: report directory {read_only} is not writable"
