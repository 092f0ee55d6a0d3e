"""Waiver files (compliance/waivers.py): parsing, the schema's errors with their lines, matching, expiry;
and how the reports count and show waivers (report, merge, summary.html). No host is involved."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from compliance import merge, report, summary_html, waivers
from compliance.row import Row
from compliance.waivers import WaiverError, Waivers, parse
from tests.conftest import ROOT, run_audit

DAY = datetime.date(2027, 3, 31)
GOOD = """\
# Accepted exposures, reviewed monthly.
waivers:
  - host: "10.0.0.*"          # glob on the host label
    interface: "eth0"         # glob
    justification: "vendor appliance; fix scheduled"
    expires: 2027-03-31       # UTC date, inclusive
    owner: "OPS-1234"

  - host: db[0-9]*
    interface: "eth?"
    justification: >-
      legacy kernel,
      replaced in Q2
    expires: "2026-12-31"
    owner: team-db
"""


def entry(**changes: str) -> str:
    """GOOD's first waiver alone, with some lines replaced (a value of None drops the key)."""
    fields = {
        "host": '"10.0.0.*"',
        "interface": '"eth0"',
        "justification": '"vendor appliance"',
        "expires": "2027-03-31",
        "owner": '"OPS-1234"',
    }
    fields.update(changes)
    lines = [f"{key}: {value}" for key, value in fields.items() if value is not None]
    return "waivers:\n  - " + "\n    ".join(lines) + "\n"


def test_a_valid_file_gives_each_waiver_with_its_line():
    ws = parse(GOOD.encode(), "waivers.yml", as_of=DAY)
    assert [w.to_dict() for w in ws.entries] == [
        {
            "index": 1,
            "source": "waivers.yml:3",
            "host": "10.0.0.*",
            "interface": "eth0",
            "justification": "vendor appliance; fix scheduled",
            "expires": "2027-03-31",
            "owner": "OPS-1234",
        },
        {
            "index": 2,
            "source": "waivers.yml:9",
            "host": "db[0-9]*",
            "interface": "eth?",
            "justification": "legacy kernel, replaced in Q2",
            "expires": "2026-12-31",
            "owner": "team-db",
        },
    ]
    assert ws.as_of == DAY and len(ws.sha256) == 64
    assert ws.file_info() == {"sha256": ws.sha256, "count": 2}
    assert Waivers.from_dict(ws.to_dict()) == ws  # what xdist workers receive


def test_an_empty_list_is_a_valid_file():
    assert parse(b"waivers: []\n", "w.yml", as_of=DAY).entries == ()


def test_the_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(waivers.schema())
    assert list(waivers.schema()["$defs"]["waiver"]["properties"]) == list(waivers.KEYS)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param(
            "waivers:\n  - host: a\n    interface: [eth0\n",
            "w.yml:4: YAML: while parsing a flow sequence (line 3): expected ',' or ']', but got '<stream end>'",
            id="yaml-syntax",
        ),
        pytest.param(
            "waivers:\n  - host: a\n   interface: b\n",
            "w.yml:3: YAML: while parsing a block collection (line 2): expected <block end>, but found "
            "'<block mapping start>'",
            id="yaml-indentation",
        ),
        pytest.param(
            "waivers:\n\t- host: a\n",
            "w.yml:2: YAML: while scanning for the next token: found character '\\t' that cannot start any token",
            id="yaml-tab",
        ),
        pytest.param("waivers: []\n---\nwaivers: []\n", None, id="two-documents"),
        pytest.param("", "w.yml:1: empty: expected a mapping with one key, 'waivers' (a list of waivers)", id="empty"),
        pytest.param("- host: a\n", "w.yml:1: the file must be a mapping (key: value); got a list", id="not-a-mapping"),
        pytest.param("waivers:\n", "w.yml:1: 'waivers' must be a list; got nothing (null)", id="waivers-null"),
        pytest.param(
            "waivers:\n  host: a\n", "w.yml:2: 'waivers' must be a list; got a mapping", id="waivers-not-a-list"
        ),
        pytest.param(
            "waivers:\n  - just a string\n",
            "w.yml:2: waiver #1 must be a mapping (key: value); got a string ('just a string')",
            id="waiver-not-a-mapping",
        ),
        pytest.param(
            "waiver: []\n",
            "w.yml:1: missing key 'waivers' (a list of waivers) (and 1 more problem)",
            id="no-waivers-key",
        ),
        pytest.param(
            "waivers: []\nexpires: 2027-01-01\n",
            "w.yml:2: unknown key 'expires' (keys: waivers)",
            id="unknown-root-key",
        ),
        pytest.param(
            entry() + "    hots: web1\n",
            "w.yml:7: waiver #1: unknown key 'hots' (keys: host, interface, justification, expires, owner)",
            id="unknown-key",
        ),
        pytest.param(
            entry(owner=None, justification=None),
            "w.yml:2: waiver #1: missing key(s) 'justification', 'owner'",
            id="missing-keys",
        ),
        pytest.param(
            entry(host="10"), "w.yml:2: waiver #1: 'host' must be a string; got a number (10; quote it)", id="int-host"
        ),
        pytest.param(
            entry(owner="yes"),
            "w.yml:6: waiver #1: 'owner' must be a string; got a boolean (true: YAML reads yes, no, on, off as "
            "booleans; quote it)",
            id="bool-owner",
        ),
        pytest.param(
            entry(interface="[eth0, eth1]"),
            "w.yml:3: waiver #1: 'interface' must be a string; got a list",
            id="list-interface",
        ),
        pytest.param(
            entry(expires="2027-02-30"),
            "w.yml:5: waiver #1: 'expires' must be a date, YYYY-MM-DD (UTC); got a string ('2027-02-30')",
            id="no-such-day",
        ),
        pytest.param(
            entry(expires="2027-03-31T10:00:00Z"),
            "w.yml:5: waiver #1: 'expires' must be a date, YYYY-MM-DD (UTC); got a string ('2027-03-31T10:00:00Z')",
            id="date-time",
        ),
        pytest.param(
            entry(expires="31/03/2027"),
            "w.yml:5: waiver #1: 'expires' must be a date, YYYY-MM-DD (UTC); got a string ('31/03/2027')",
            id="other-date-format",
        ),
        pytest.param(
            entry(expires="20270331"),
            "w.yml:5: waiver #1: 'expires' must be a date, YYYY-MM-DD (UTC); got a number (20270331; quote it)",
            id="compact-date",
        ),
        pytest.param(entry(interface='""'), "w.yml:3: waiver #1: 'interface' is empty", id="empty-glob"),
        pytest.param(entry(host='"   "'), "w.yml:2: waiver #1: 'host' is empty", id="blank-glob"),
        pytest.param(
            entry(interface=""), "w.yml:3: waiver #1: 'interface' must be a string; got nothing (null)", id="no-glob"
        ),
        pytest.param(entry(justification='""'), "w.yml:4: waiver #1: 'justification' is empty", id="empty-reason"),
        pytest.param(
            entry() + '    host: "db*"\n', "w.yml:7: duplicate key 'host' (first on line 2)", id="duplicate-key"
        ),
        pytest.param(
            "waivers: []\nwaivers: []\n", "w.yml:2: duplicate key 'waivers' (first on line 1)", id="duplicate-root-key"
        ),
        pytest.param(
            "waivers: !!python/object/apply:os.system [id]\n",
            "w.yml:1: YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'",
            id="python-tag",
        ),
        pytest.param("waivers: []\x00\n", "w.yml:1: YAML: character U+0000 is not allowed", id="control-character"),
        pytest.param(
            "waivers:\n  - host: a\n  - host: 3\n    x: 1\n",
            "w.yml:2: waiver #1: missing key(s) 'interface', 'justification', 'expires', 'owner' (and 3 more problems)",
            id="first-problem-by-line",
        ),
    ],
)
def test_each_mistake_is_one_line_naming_its_line(text, error):
    with pytest.raises(WaiverError) as raised:
        parse(text.encode(), "w.yml", as_of=DAY)
    message = str(raised.value)
    assert "\n" not in message
    if error is None:
        assert message.startswith("w.yml:2: YAML: ") and "document" in message
    else:
        assert message == error


def test_a_file_that_is_not_utf8_names_the_line_and_byte():
    with pytest.raises(WaiverError, match=r"^w\.yml:2: not UTF-8 text \(byte 0xff\)$"):
        parse(b"waivers: []\n# caf\xff\n", "w.yml")


def test_dates_quoted_or_not_and_yaml_anchors_read_alike():
    quoted = parse(entry(expires='"2027-03-31"').encode(), "w.yml", as_of=DAY).entries[0]
    plain = parse(entry().encode(), "w.yml", as_of=DAY).entries[0]
    assert quoted == plain and plain.expires == DAY
    text = "waivers:\n  - &base {host: a, interface: b, justification: c, expires: 2027-01-01, owner: d}\n  - <<: *base\n    host: z\n"
    ws = parse(text.encode(), "w.yml", as_of=DAY)
    assert [(w.host, w.interface, w.source) for w in ws.entries] == [("a", "b", "w.yml:2"), ("z", "b", "w.yml:3")]


def big_file(directory: Path) -> Path:
    path = directory / "big.yml"
    path.write_bytes(b"#" * (waivers.MAX_BYTES + 1))  # /dev/zero given by mistake would be endless
    return path


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda d: d / "nosuch.yml", "no such file"),
        (lambda d: d, "not a file"),
        (big_file, f"larger than {waivers.MAX_BYTES} bytes: not a waiver file"),
    ],
    ids=["missing", "directory", "too-big"],
)
def test_a_file_that_cannot_be_read_is_named(tmp_path, make, error):
    path = make(tmp_path)
    with pytest.raises(WaiverError) as raised:
        waivers.load(str(path), tmp_path, DAY)
    assert str(raised.value) == f"{path}: {error}"


def test_an_unreadable_file_is_named(tmp_path):
    """As a user without the right to read it (root reads anything): a real EACCES from open()."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run the check as another user")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    path = private / "waivers.yml"
    path.write_text(GOOD)
    code = "import pathlib, sys; from compliance import waivers; waivers.load(sys.argv[1], pathlib.Path('/'), None)"
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(f"compliance.waivers.WaiverError: {path}: not readable"), proc.stderr


def test_a_relative_path_is_read_from_the_base_directory(tmp_path):
    (tmp_path / "w.yml").write_text(GOOD)
    assert waivers.load("w.yml", tmp_path, DAY).entries[0].source == "w.yml:3"


# ---- matching and expiry ---------------------------------------------------------------


def waiver(index=1, host="*", interface="*", expires=DAY) -> waivers.Waiver:
    return waivers.Waiver(index, f"w.yml:{index + 1}", host, interface, f"reason {index}", expires, "ops")


@pytest.mark.parametrize(
    ("host_glob", "iface_glob", "host", "iface", "matches"),
    [
        ("10.0.0.*", "eth0", "10.0.0.5", "eth0", True),
        ("10.0.0.*", "eth0", "10.0.1.5", "eth0", False),
        ("10.0.0.*", "eth0", "10.0.0.5", "eth0.100", False),  # a glob matches the whole name
        ("web?", "eth*", "web1", "eth0.100", True),
        ("web?", "eth*", "web10", "eth0", False),
        ("Web1", "eth0", "web1", "eth0", False),  # case-sensitive, on every platform
        ("web1:2222", "*", "web1:2222", "eth0", True),  # the label holds a non-default port
        ("web1", "*", "web1:2222", "eth0", False),
        ("*", "a[[]b]", "h", "a[b]", True),  # [[] is a literal [
        ("*", "*", "h", None, False),  # a host-level case has no interface to match
    ],
)
def test_globs_match_the_host_label_and_the_interface_name(host_glob, iface_glob, host, iface, matches):
    assert waiver(host=host_glob, interface=iface_glob).matches(host, iface) is matches


def test_expiry_is_an_inclusive_utc_date():
    w = waiver(expires=DAY)
    assert w.active(DAY) and w.active(DAY - datetime.timedelta(days=400))
    assert not w.active(DAY + datetime.timedelta(days=1))


def test_the_first_active_waiver_decides_else_the_first_expired_one():
    old = DAY - datetime.timedelta(days=1)
    ws = Waivers(
        (waiver(1, expires=old), waiver(2, host="web*"), waiver(3), waiver(4, host="db*", expires=old)), as_of=DAY
    )
    decision = ws.decide("web1", "eth0")
    assert (decision.waiver.index, decision.active) == (2, True)  # a renewed waiver wins over an expired one
    assert ws.decide("db1", "eth0").waiver.index == 3
    expired_only = Waivers((waiver(1, host="x", expires=old), waiver(2, expires=old)), as_of=DAY)
    decision = expired_only.decide("web1", "eth0")
    assert (decision.waiver.index, decision.active) == (2, False)
    assert decision.to_dict()["status"] == "expired"
    assert decision.expired_message() == (
        "expired waiver #2 (w.yml:3: host '*', interface '*', owner 'ops', expires 2027-03-30): it covered runs "
        "until 2027-03-30 (UTC, inclusive); this run started on 2027-03-31"
    )
    assert Waivers((waiver(1, host="x"),), as_of=DAY).decide("web1", "eth0") is None


def test_the_xfail_reason_is_the_justification_then_the_waiver():
    decision = Waivers((waiver(1),), as_of=DAY).decide("h", "eth0")
    assert decision.reason() == "reason 1 [waiver #1 w.yml:2, owner ops, expires 2027-03-31]"


def test_unmatched_waivers_match_no_susceptible_case():
    ws = Waivers((waiver(1, host="web*"), waiver(2, host="db*"), waiver(3, interface="eth9")), as_of=DAY)
    assert [w.index for w in ws.unmatched([("web1", "eth0"), ("web2", None)])] == [2, 3]
    assert [w.index for w in ws.unmatched([])] == [1, 2, 3]


# ---- reports ------------------------------------------------------------------------------


def row(host, iface, verdict, status=None) -> Row:
    decision = None if status is None else {**waiver().to_dict(), "status": status}
    return Row(
        host, iface, verdict=verdict, message=f"{iface} is {verdict}", fixes=("fix sg", "fix mtu"), waiver=decision
    )


ROWS = [
    row("web1", "eth0", "susceptible", "active"),
    row("web1", "eth1", "sg-on"),
    row("web2", "eth0", "susceptible", "expired"),
    row("web3", "eth0", "susceptible"),
]


def test_summary_counts_waived_cases_and_lists_unmatched_waivers():
    ws = Waivers((waiver(1, host="web[12]"), waiver(2, host="gone*")), as_of=DAY, sha256="ab")
    data = report.summary(ROWS, scope="xen", target="remote", complete=True, waivers=ws)
    assert data["counts"] == {
        "sg-on": 1,
        "jumbo-mtu": 0,
        "susceptible": 3,
        "not-applicable": 0,
        "error": 0,
        "waived": 1,
    }
    assert data["waivers"] == {"sha256": "ab", "count": 2}
    assert [w["index"] for w in data["unmatched_waivers"]] == [2]
    assert data["results"][0]["waiver"]["status"] == "active" and "waiver" not in data["results"][1]
    plain = report.summary(ROWS[1:2], scope="xen", target="remote", complete=True)
    assert "waived" not in plain["counts"] and "waivers" not in plain and "unmatched_waivers" not in plain


def test_a_rows_waiver_survives_the_round_trip_and_a_junit_property():
    assert Row.from_dict(ROWS[0].to_dict()) == ROWS[0]
    props = dict(report.junit_properties(ROWS[0]))
    assert '"status": "active"' in props["waiver"] and "waiver" not in dict(report.junit_properties(ROWS[1]))


def test_the_terminal_tags_waived_cases_and_names_expired_waivers():
    lines = report.terminal_lines(ROWS, waivers=True)
    assert "[WAIVED] web1|eth0: eth0 is susceptible" in lines
    assert "-- waived by waiver #1 (w.yml:2, owner ops, expires 2027-03-31): reason 1" in lines
    assert "[WARN] web2|eth0: eth0 is susceptible" in lines
    assert "-- expired: waiver #1 (w.yml:2, owner ops, expires 2027-03-31): reason 1" in lines
    assert lines[-1] == "sg-on: 1  jumbo-mtu: 0  susceptible: 3  not-applicable: 0  error: 0  waived: 1"
    assert report.terminal_lines(ROWS)[-1].endswith("error: 0")  # no waivers given: no waived count
    unmatched = report.unmatched_lines([{**waiver(2, host="gone\x1b*").to_dict()}])
    assert unmatched == [
        "xennet: 1 waiver(s) matched no susceptible case (review them):",
        "  waiver #2 (w.yml:3, owner ops, expires 2027-03-31): host 'gone\\x1b*', interface '*'",
    ]


def test_summary_html_shows_waivers_and_does_not_list_a_waived_host_as_failing():
    ws = Waivers((waiver(1, host="web[12]"), waiver(2, host="<gone>")), as_of=DAY, sha256="ab")
    data = report.summary(ROWS, scope="xen", target="remote", complete=True, waivers=ws)
    hosts = {h.name: h for h in summary_html.host_groups(data["results"])}
    assert (hosts["web1"].failing, hosts["web2"].failing, hosts["web3"].failing) == (False, True, True)
    assert hosts["web1"].counts == "2 cases: susceptible 1, sg-on 1, waived 1"
    page = summary_html.render(data)
    assert "; Waived: #1 (w.yml:2, ops, expires 2027-03-31): reason 1</li>" in page  # web1 passes: one line
    assert "<dt>Expired waiver</dt><dd>#1" in page
    assert "Unmatched waivers" in page and "<code>&lt;gone&gt;</code>" in page and "<gone>" not in page
    assert 'id="count-waived">1<' in page


def test_merging_keeps_waivers_and_intersects_the_unmatched():
    def shard(k, rows, unmatched):
        ws = Waivers((waiver(1, host="web1"), waiver(2, host="web2"), waiver(3, host="gone")), as_of=DAY, sha256="ab")
        data = report.summary(rows, scope="xen", target="remote", complete=True, shard=f"{k}/2", waivers=ws)
        assert [w["index"] for w in data["unmatched_waivers"]] == unmatched
        return merge.ShardReports(ROOT, merge.Shard.parse(f"{k}/2"), data, None, rows)  # type: ignore[arg-type]

    shards = [shard(1, ROWS[:2], [2, 3]), shard(2, ROWS[2:], [1, 3])]
    merged = merge.merge_summary(shards)
    assert [w["index"] for w in merged["unmatched_waivers"]] == [3]
    assert merged["counts"]["waived"] == 1 and merged["waivers"] == {"sha256": "ab", "count": 3}
    assert [r.get("waiver", {}).get("status") for r in merged["results"]] == ["active", None, "expired", None]


def imported(audit) -> set[str]:
    """The modules an audit run imported (``PYTHONPROFILEIMPORTTIME``'s lines on stderr)."""
    return {line.split("|")[-1].strip() for line in audit.stderr.splitlines() if line.startswith("import time:")}


def test_an_audit_without_waivers_does_not_import_jsonschema(tmp_path):
    """The bench times every audit: jsonschema (~0.1 s to import) is loaded only for --xennet-waivers.

    (PyYAML is imported by every audit anyway, through a dependency's vendored copy.)
    """
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    plain = run_audit(tmp_path / "plain", "--hosts=local://", env=env)
    assert plain.returncode in (0, 1), plain.stdout + plain.stderr
    assert "compliance.waivers" in imported(plain) and "jsonschema" not in imported(plain)
    (tmp_path / "w.yml").write_text("waivers: []\n")
    waived = run_audit(tmp_path / "waived", "--hosts=local://", f"--xennet-waivers={tmp_path / 'w.yml'}", env=env)
    assert waived.returncode in (0, 1), waived.stdout + waived.stderr
    assert "jsonschema" in imported(waived) and waived.summary["waivers"]["count"] == 0
