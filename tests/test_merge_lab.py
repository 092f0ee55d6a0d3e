"""Sharded audits of the lab, merged, against one unsharded audit of the same lab."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from compliance.shard import split as shard_split
from tests.conftest import EXPECTED, HOSTILE_MARKERS, ROOT, lab_args, run_audit

SHARDS = 3


def merge(out, *sources):
    return subprocess.run(
        [sys.executable, "-m", "compliance.merge", str(out), *map(str, sources)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def unsharded(lab, tmp_path_factory):
    return run_audit(tmp_path_factory.mktemp("unsharded"), *lab_args(lab))


@pytest.fixture(scope="module")
def shards(lab, tmp_path_factory):
    return [
        run_audit(tmp_path_factory.mktemp(f"shard{k}"), *lab_args(lab), f"--xennet-shard={k}/{SHARDS}")
        for k in range(1, SHARDS + 1)
    ]


@pytest.fixture(scope="module")
def merged(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged")
    proc = merge(out, *(s.reports for s in shards))
    assert proc.returncode == 0, proc.stderr
    return out


def test_shards_are_disjoint_and_cover_every_host(lab, shards):
    hosts = [{r["host"] for r in s.summary["results"]} for s in shards]
    assert sum(len(h) for h in hosts) == len(set().union(*hosts)) == len(lab.hosts)
    assert set().union(*hosts) == {h.address for h in lab.hosts.values()}
    assert [s.summary["shard"] for s in shards] == [f"{k}/{SHARDS}" for k in range(1, SHARDS + 1)]
    assert all(h for h in hosts), "the lab is big enough for every shard to get a host"


def test_each_shard_gathers_only_its_hosts(shards):
    for s in shards:
        hosts = {r["host"] for r in s.summary["results"]}
        assert f"gathered {len(hosts)} hosts" in s.stdout


def test_merge_equals_an_unsharded_run(lab, unsharded, merged):
    summary = json.loads((merged / "summary.json").read_text())
    assert summary["results"] == unsharded.summary["results"]
    assert summary["counts"] == unsharded.summary["counts"]
    assert summary["complete"] is True and summary["shard"] is None and summary["shards"] == SHARDS
    names = {h.address: name for name, h in lab.hosts.items()}
    assert {(names[r["host"]], r["interface"]): r["verdict"] for r in summary["results"]} == EXPECTED


def test_merged_junit_has_every_case_once(unsharded, merged):
    def cases(root):
        return sorted(
            (c.get("classname"), c.find("failure") is not None, c.find("error") is not None)
            for c in root.iter("testcase")
        )

    root = ET.parse(merged / "junit.xml").getroot()
    assert cases(root) == cases(unsharded.junit)
    totals = {k: int(root.get(k)) for k in ("tests", "failures", "errors")}
    assert totals == {"tests": len(EXPECTED), "failures": 7, "errors": 3}
    assert len(list(root.iter("testsuite"))) == SHARDS


def test_merged_html_escapes_every_host_string(lab, merged):
    page = (merged / "report.html").read_text()
    assert "&lt;b&gt;x&lt;b&gt;" in page and "<b>x<b>" not in page
    assert "$(&gt;xnl-pwned)" in page
    assert page.count("<tr class=") == len(EXPECTED)
    assert "<script" not in page
    summary_page = (merged / "summary.html").read_text()
    assert "&lt;b&gt;x&lt;b&gt;" in summary_page and "<b>x<b>" not in summary_page
    assert "<script" not in summary_page and "style=" not in summary_page and (merged / "summary.css").is_file()
    for marker in HOSTILE_MARKERS:
        assert not (ROOT / marker).exists()


def test_missing_and_duplicate_shards_are_refused(shards, tmp_path):
    proc = merge(tmp_path / "out", shards[0].reports, shards[2].reports)
    assert proc.returncode == 2 and f"missing shard(s) 2/{SHARDS}" in proc.stderr
    proc = merge(tmp_path / "out", shards[0].reports, shards[1].reports, shards[2].reports, shards[1].reports)
    assert proc.returncode == 2 and f"shard 2/{SHARDS} given twice" in proc.stderr
    assert not (tmp_path / "out" / "summary.json").exists()


def test_an_unsharded_or_mismatched_report_is_refused(shards, unsharded, tmp_path):
    proc = merge(tmp_path / "out", unsharded.reports, *(s.reports for s in shards))
    assert proc.returncode == 2 and "not a shard" in proc.stderr
    odd = tmp_path / "odd"
    odd.mkdir()
    summary = dict(shards[1].summary, scope="xen")
    (odd / "summary.json").write_text(json.dumps(summary))
    (odd / "junit.xml").write_bytes((shards[1].reports / "junit.xml").read_bytes())
    proc = merge(tmp_path / "out", shards[0].reports, odd, shards[2].reports)
    assert proc.returncode == 2 and "shards disagree on scope" in proc.stderr
    (odd / "summary.json").write_text(json.dumps(dict(shards[1].summary, schema=99)))
    proc = merge(tmp_path / "out", shards[0].reports, odd, shards[2].reports)
    assert proc.returncode == 2 and "schema 99" in proc.stderr
    assert not (tmp_path / "out" / "summary.json").exists()


def test_shards_run_with_other_requirements_are_refused_and_alike_ones_keep_them(lab, shards, tmp_path):
    # --xennet-require-persistent changes what passes: a shard run with it is not the same run.
    strict = [
        run_audit(
            tmp_path / f"strict{k}", *lab_args(lab), f"--xennet-shard={k}/{SHARDS}", "--xennet-require-persistent"
        )
        for k in range(1, SHARDS + 1)
    ]
    assert strict[1].summary["require_persistent"] is True and "require_persistent" not in shards[0].summary
    proc = merge(tmp_path / "out", shards[0].reports, strict[1].reports, shards[2].reports)
    assert proc.returncode == 2 and "shards disagree on require_persistent: (absent) (" in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "summary.json").exists()
    proc = merge(tmp_path / "out", *(s.reports for s in strict))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["require_persistent"] is True
    assert "<tr><th>require_persistent</th><td>true</td></tr>" in (tmp_path / "out" / "summary.html").read_text()


def test_an_incomplete_shard_makes_the_merge_incomplete(shards, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "summary.json").write_text(json.dumps(dict(shards[0].summary, complete=False)))
    (partial / "junit.xml").write_bytes((shards[0].reports / "junit.xml").read_bytes())
    proc = merge(tmp_path / "out", partial, *(s.reports for s in shards[1:]))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["complete"] is False


def test_the_readme_jenkins_matrix_works_with_more_shards_than_hosts(lab, tmp_path):
    """README "Jenkins: shard, merge, publish": 4 shards, 2 hosts; an empty shard is valid and merges."""
    names, count = ["sgon", "exposed"], 4
    whole = run_audit(tmp_path / "whole", *lab_args(lab, names))
    split = shard_split(sorted({r["host"] for r in whole.summary["results"]}), count)
    assert [k for k, hosts in split.items() if not hosts], "2 hosts leave at least 2 of 4 shards empty"
    audits = [run_audit(tmp_path / f"s{k}", *lab_args(lab, names), f"--xennet-shard={k}/{count}") for k in split]
    for k, audit in zip(split, audits):
        assert audit.returncode in (0, 1), audit.stdout + audit.stderr  # the example's exit-status check
        assert {r["host"] for r in audit.summary["results"]} == set(split[k])
        assert audit.summary["complete"] is True and audit.summary["shard"] == f"{k}/{count}"
        if not split[k]:
            assert audit.returncode == 0 and audit.summary["results"] == [], audit.stdout
            assert "holds none of the 2 hosts" in audit.stdout
            assert len(list(audit.junit.iter("testcase"))) == 0
    out = tmp_path / "merged"
    proc = merge(out, *(a.reports for a in audits))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results"] == whole.summary["results"] and summary["complete"] is True
    assert not summary["counts"]["error"]  # the example's publish check passes
    assert int(ET.parse(out / "junit.xml").getroot().get("tests")) == len(whole.summary["results"])
