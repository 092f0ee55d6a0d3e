"""--xennet-waivers through the real plugin, against the lab's SSH hosts: xfail, expiry, errors never
waived, unmatched waivers, malformed files (exit 4, no host contacted), xdist, and shards merged."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from compliance.shard import split as shard_split
from tests.conftest import ROOT, lab_args, run_audit

FUTURE, PAST = "2099-12-31", "2000-01-01"


def waiver_file(path: Path, *entries: tuple[str, str, str, str]) -> Path:
    """A waiver file of (host, interface, expires, owner) entries, five lines each (the first at line 2)."""
    lines = ["waivers:"]
    for host, interface, expires, owner in entries:
        lines += [
            f'  - host: "{host}"',
            f'    interface: "{interface}"',
            f'    justification: "accepted by {owner}"',
            f"    expires: {expires}",
            f'    owner: "{owner}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def rows(audit, lab) -> dict:
    """(lab host name, interface) -> row, from summary.json."""
    names = {h.address: name for name, h in lab.hosts.items()}
    return {(names[r["host"]], r["interface"]): r for r in audit.summary["results"]}


def junit_cases(audit) -> dict:
    """classname -> <testcase>, from junit.xml."""
    return {c.get("classname"): c for c in audit.junit.iter("testcase")}


# ---- waived, superseded and unmatched waivers, serially and under xdist -----------------------

WAIVED_HOSTS = ["exposed", "sgon", "multi"]


@pytest.fixture(scope="module")
def waived_file(lab, tmp_path_factory) -> Path:
    address = {name: lab.hosts[name].address for name in WAIVED_HOSTS}
    return waiver_file(
        tmp_path_factory.mktemp("waivers") / "waivers.yml",
        (address["exposed"], "eth0", FUTURE, "OPS-1234"),  # 1: waives exposed|eth0
        (address["multi"], "eth1", PAST, "OPS-1"),  # 2: expired, but #3 is active for the same case
        (address["multi"], "eth[0-9]", FUTURE, "team-net"),  # 3: waives multi|eth1 (eth0 passes, eth1.100 is no match)
        (address["sgon"], "*", FUTURE, "OPS-7"),  # 4: matches only a passing case: unmatched
        ("nosuch-*", "*", FUTURE, "OPS-9"),  # 5: matches nothing
    )


@pytest.fixture(scope="module")
def waived_serial(lab, waived_file, tmp_path_factory):
    return run_audit(tmp_path_factory.mktemp("serial"), *lab_args(lab, WAIVED_HOSTS), f"--xennet-waivers={waived_file}")


@pytest.fixture(scope="module")
def waived_xdist(lab, waived_file, tmp_path_factory):
    args = [*lab_args(lab, WAIVED_HOSTS), f"--xennet-waivers={waived_file}", "-n", "2"]
    return run_audit(tmp_path_factory.mktemp("xdist"), *args)


@pytest.fixture(params=["serial", "xdist"])
def waived(request):
    return request.getfixturevalue(f"waived_{request.param}")


def test_waived_susceptible_cases_are_xfail_and_the_run_passes(lab, waived, waived_file):
    assert waived.returncode == 0, waived.stdout + waived.stderr
    by_case = rows(waived, lab)
    assert {k: r["verdict"] for k, r in by_case.items() if "waiver" in r} == {
        ("exposed", "eth0"): "susceptible",  # the row keeps its verdict
        ("multi", "eth1"): "susceptible",
    }
    assert {k: (r["waiver"]["index"], r["waiver"]["status"]) for k, r in by_case.items() if "waiver" in r} == {
        ("exposed", "eth0"): (1, "active"),
        ("multi", "eth1"): (3, "active"),  # the active waiver wins over the expired #2
    }
    assert by_case[("exposed", "eth0")]["waiver"] == {
        "index": 1,
        "source": f"{waived_file}:2",
        "host": lab.hosts["exposed"].address,
        "interface": "eth0",
        "justification": "accepted by OPS-1234",
        "expires": FUTURE,
        "owner": "OPS-1234",
        "status": "active",
    }
    counts = waived.summary["counts"]
    assert (counts["susceptible"], counts["waived"], counts["error"]) == (2, 2, 0)
    assert " 2 xfailed" in waived.stdout and "failed" not in waived.stdout.replace("xfailed", "")


def test_junit_and_html_show_waived_cases_as_xfail_with_the_justification(lab, waived, waived_file):
    cases = junit_cases(waived)
    case = cases[f"{lab.hosts['exposed'].address}.eth0"]
    skipped = case.find("skipped")
    assert skipped is not None and skipped.get("type") == "pytest.xfail"
    assert skipped.get("message") == (
        f"accepted by OPS-1234 [waiver #1 {waived_file}:2, owner OPS-1234, expires {FUTURE}]"
    )
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert json.loads(props["waiver"])["status"] == "active" and props["verdict"] == "susceptible"
    assert sum(1 for c in cases.values() if c.find("skipped") is not None) == 2
    assert sum(1 for c in cases.values() if c.find("failure") is not None) == 0
    assert waived.html_rendered.count('<td class="col-result">XFailed</td>') == 2  # pytest-html's own outcome


def test_terminal_and_summary_list_the_unmatched_waivers(lab, waived, waived_file):
    assert [(w["index"], w["owner"]) for w in waived.summary["unmatched_waivers"]] == [(4, "OPS-7"), (5, "OPS-9")]
    assert waived.summary["waivers"]["count"] == 5
    out = waived.stdout
    assert "xennet: 2 waiver(s) matched no susceptible case (review them):" in out
    assert f"  waiver #5 ({waived_file}:22, owner OPS-9, expires {FUTURE}): host 'nosuch-*', interface '*'" in out
    exposed = lab.hosts["exposed"].address
    assert f"[WAIVED] {exposed}|eth0: Scatter-Gather is off and MTU is set below 9001 on eth0." in out
    assert "waived: 2" in out.split("Diagnostic Results")[-1]


def test_summary_html_shows_each_waiver_in_a_compact_cell(lab, waived, waived_file):
    page = (waived.reports / "summary.html").read_text()
    assert f"Waived: #1 ({waived_file}:2, OPS-1234, expires {FUTURE})" in page  # exposed passes: its one line
    assert "Unmatched waivers" in page and "nosuch-*" in page
    assert "<script" not in page and "style=" not in page


def test_xdist_gives_the_same_waivers(waived_serial, waived_xdist):
    for key in ("results", "counts", "waivers", "unmatched_waivers"):
        assert waived_xdist.summary[key] == waived_serial.summary[key], key
    assert waived_xdist.returncode == waived_serial.returncode == 0


def test_expired_waiver_fails_its_case_naming_it(lab, tmp_path):
    path = waiver_file(tmp_path / "w.yml", (lab.hosts["exposed"].address, "eth*", PAST, "OPS-1"))
    # --tb=short: pytest's FAILURES section (off by default in an audit) shows the failure's whole text.
    audit = run_audit(tmp_path / "r", *lab_args(lab, ["exposed"]), f"--xennet-waivers={path}", "--tb=short")
    assert audit.returncode == 1, audit.stdout
    assert "= FAILURES =" in audit.stdout
    row = rows(audit, lab)[("exposed", "eth0")]
    assert (row["verdict"], row["waiver"]["status"], row["waiver"]["source"]) == ("susceptible", "expired", f"{path}:2")
    assert audit.summary["counts"]["waived"] == 0 and audit.summary["unmatched_waivers"] == []
    failure = junit_cases(audit)[f"{lab.hosts['exposed'].address}.eth0"].find("failure")
    named = (
        f"expired waiver #1 ({path}:2: host '{lab.hosts['exposed'].address}', interface 'eth*', owner 'OPS-1', "
        f"expires {PAST}): it covered runs until {PAST} (UTC, inclusive); this run started on "
    )
    assert failure is not None and named in failure.text
    assert named in audit.stdout and f"-- expired: waiver #1 ({path}:2, owner OPS-1, expires {PAST})" in audit.stdout


def test_errors_are_never_waived_and_waived_interfaces_are_left_alone(lab, tmp_path):
    address = {name: lab.hosts[name].address for name in ("dead", "noethtool", "exposed", "plain3")}
    path = waiver_file(
        tmp_path / "w.yml",
        (address["exposed"], "*", FUTURE, "OPS-1"),
        (address["dead"], "*", FUTURE, "OPS-2"),  # an unreachable host: could not determine, so not waived
        (address["noethtool"], "*", FUTURE, "OPS-3"),
    )
    audit = run_audit(
        tmp_path / "r",
        *lab_args(lab, list(address)),
        f"--xennet-waivers={path}",
        "--xennet-workaround=dry-run",
    )
    assert audit.returncode == 1, audit.stdout
    by_case = rows(audit, lab)
    assert {k: (r["verdict"], "waiver" in r) for k, r in by_case.items()} == {
        ("dead", None): ("error", False),
        ("noethtool", None): ("error", False),
        ("exposed", "eth0"): ("susceptible", True),
        ("plain3", "eth0"): ("susceptible", False),
    }
    assert "workaround" not in by_case[("exposed", "eth0")]  # an active waiver: the workaround does not plan it
    assert by_case[("plain3", "eth0")]["workaround"]["result"] == "planned"
    assert [w["index"] for w in audit.summary["unmatched_waivers"]] == [2, 3]
    cases = junit_cases(audit)
    assert cases[f"{address['dead']}.(host)"].find("error") is not None


# ---- malformed files: exit 4 before any host is contacted ------------------------------------

GOOD_ENTRY = (
    '  - host: "{host}"\n    interface: "eth0"\n    justification: "j"\n    expires: 2099-12-31\n    owner: "o"\n'
)
MALFORMED = {
    "yaml-syntax": ("waivers:\n" + GOOD_ENTRY + "    - [oops\n", 7, "YAML: "),
    "not-a-mapping": ("- host: x\n", 1, "the file must be a mapping (key: value); got a list"),
    "unknown-key": ("waivers:\n" + GOOD_ENTRY + "    hots: x\n", 7, "waiver #1: unknown key 'hots'"),
    "missing-key": ("waivers:\n" + GOOD_ENTRY.replace('    owner: "o"\n', ""), 2, "waiver #1: missing key(s) 'owner'"),
    "wrong-type": ("waivers:\n" + GOOD_ENTRY.replace('"eth0"', "[eth0]"), 3, "waiver #1: 'interface' must be a string"),
    "bad-date": (
        "waivers:\n" + GOOD_ENTRY.replace("2099-12-31", "2099-02-30"),
        5,
        "waiver #1: 'expires' must be a date, YYYY-MM-DD (UTC)",
    ),
    "empty-glob": ("waivers:\n" + GOOD_ENTRY.replace('"{host}"', '""'), 2, "waiver #1: 'host' is empty"),
    "duplicate-key": ("waivers:\n" + GOOD_ENTRY + '    owner: "p"\n', 7, "duplicate key 'owner' (first on line 6)"),
}


@pytest.mark.parametrize("kind", [*MALFORMED, "missing-file", "directory"])
def test_a_malformed_file_is_exit_4_naming_the_line_and_no_host_is_contacted(lab, tmp_path, kind):
    path = tmp_path / "waivers.yml"
    if kind == "directory":
        path.mkdir()
        where, message = f"{path}", "not a file"
    elif kind == "missing-file":
        where, message = f"{path}", "no such file"
    else:
        text, line, message = MALFORMED[kind]
        path.write_text(text.replace("{host}", lab.hosts["sgon"].address))
        where = f"{path}:{line}"
    reports = tmp_path / "r"
    reports.mkdir()
    (reports / "summary.json").write_text('{"complete": true}')  # an older run's: must not look current
    before = lab.sshd_events("sgon")
    audit = run_audit(reports, *lab_args(lab, ["sgon"]), f"--xennet-waivers={path}")
    assert audit.returncode == 4, audit.stdout + audit.stderr
    errors = [line for line in (audit.stdout + audit.stderr).splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR: --xennet-waivers {where}: {message}"), errors
    assert "Traceback" not in audit.stdout + audit.stderr and "gathering" not in audit.stdout
    assert lab.sshd_events("sgon") == before  # the host's own sshd saw no connection at all
    assert audit.summary["complete"] is False and audit.summary["error"] == errors[0].removeprefix("ERROR: ")


# ---- shards, merged ----------------------------------------------------------------------------

SHARD_HOSTS = ["sgon", "exposed", "multi", "mixed", "plain3", "below"]
SHARDS = 3


def test_shards_merge_waivers_like_an_unsharded_run(lab, tmp_path):
    address = {name: lab.hosts[name].address for name in SHARD_HOSTS}
    path = waiver_file(
        tmp_path / "w.yml",
        (address["exposed"], "eth0", FUTURE, "OPS-1"),
        (address["multi"], "eth1", FUTURE, "OPS-2"),
        (address["mixed"], "eth1", PAST, "OPS-3"),  # expired: fails its case
        ("nosuch-*", "*", FUTURE, "OPS-4"),
    )
    args = [*lab_args(lab, SHARD_HOSTS), f"--xennet-waivers={path}"]
    whole = run_audit(tmp_path / "whole", *args)
    split = shard_split(sorted(address.values()), SHARDS)
    shards = [run_audit(tmp_path / f"s{k}", *args, f"--xennet-shard={k}/{SHARDS}") for k in split]
    owner_of = {0: address["exposed"], 1: address["multi"], 2: address["mixed"]}
    for k, shard in zip(split, shards):
        assert shard.returncode in (0, 1), shard.stdout + shard.stderr
        # A waiver for another shard's host matches nothing here: each shard lists it as unmatched.
        unmatched = [w["index"] for w in shard.summary["unmatched_waivers"]]
        assert unmatched == [i + 1 for i, host in owner_of.items() if host not in split[k]] + [4], (k, split)
    out = tmp_path / "merged"
    proc = subprocess.run(
        [sys.executable, "-m", "compliance.merge", str(out), *(str(s.reports) for s in shards)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    merged = json.loads((out / "summary.json").read_text())
    assert merged["results"] == whole.summary["results"]
    assert merged["counts"] == whole.summary["counts"] and merged["counts"]["waived"] == 2
    assert merged["waivers"] == whole.summary["waivers"]
    assert merged["unmatched_waivers"] == whole.summary["unmatched_waivers"] and len(merged["unmatched_waivers"]) == 1
    assert re.search(r"Waived(: |</dt><dd>)#1 ", (out / "summary.html").read_text())


# ---- the lean protocol and pytest's own report alike ------------------------------------------


def junit_outcomes(audit) -> list:
    """Each <testcase>: its names, outcome elements (tag, type, message, text) and properties; no times."""
    return [
        (
            case.get("classname"),
            case.get("name"),
            [(c.tag, c.get("type"), c.get("message"), (c.text or "").strip()) for c in case if c.tag != "properties"],
            sorted((p.get("name"), p.get("value")) for p in case.iter("property") if "second" not in p.get("name")),
        )
        for case in audit.junit.iter("testcase")
    ]


def counts_line(audit) -> str:
    """pytest's last line without its time: '3 failed, 9 passed, ... in'."""
    return re.sub(r" in [0-9.]+s.*", "", audit.stdout.strip().splitlines()[-1])


SETUP_HOOK_SPY = """
import os

def pytest_runtest_setup(item):
    if "test_xennet_sg_mtu[" in item.nodeid:
        with open(os.environ["SETUP_HOOK_LOG"], "a") as log:
            log.write(item.nodeid.split("[", 1)[1].rstrip("]") + "\\n")
"""


def test_cases_run_lean_report_as_pytests_own_protocol_does(lab, waived_file, tmp_path):
    """A case that only judges facts skips pytest's per-phase runtest hooks (client CPU at fleet
    scale); --setup-show sends every case through pytest's own protocol, and an active waiver sends
    its case there (pytest's xfail). Both must report every case of the lab (pass, fail, error,
    xfail) alike, in JUnit, summary.json and the terminal, serially and under xdist."""
    (tmp_path / "spy").mkdir()
    (tmp_path / "spy" / "setup_hook_spy.py").write_text(SETUP_HOOK_SPY)
    args = [*lab_args(lab), f"--xennet-waivers={waived_file}", "-p", "setup_hook_spy"]

    def audit(name, *more):
        log = tmp_path / f"{name}.setups"
        log.touch()
        env = {"PYTHONPATH": str(tmp_path / "spy"), "SETUP_HOOK_LOG": str(log)}
        return run_audit(tmp_path / name, *args, *more, env=env), sorted(log.read_text().split())

    (lean, lean_setups), (whole, whole_setups) = audit("lean"), audit("whole", "--setup-show")
    xdist, xdist_setups = audit("xdist", "-n", "2")
    assert lean.returncode == whole.returncode == xdist.returncode == 1, lean.stdout + lean.stderr
    waived = sorted(f"{lab.hosts[h].address}|{i}" for h, i in (("exposed", "eth0"), ("multi", "eth1")))
    assert lean_setups == xdist_setups == waived  # only the waived cases took pytest's protocol
    assert len(whole_setups) == len(whole.summary["results"])
    outcomes = {c.tag for case in lean.junit.iter("testcase") for c in case}
    assert {"failure", "error", "skipped"} <= outcomes, outcomes
    assert (
        junit_outcomes(lean) == junit_outcomes(whole) == sorted(junit_outcomes(xdist), key=junit_outcomes(lean).index)
    )
    for run in (whole, xdist):
        assert run.summary["results"] == lean.summary["results"]
        assert run.summary["counts"] == lean.summary["counts"]
    assert counts_line(lean) == counts_line(whole)
    assert "xfailed" in counts_line(lean) and "error" in counts_line(lean)
