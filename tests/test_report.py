"""Report formatting: every host string escaped for the format it lands in."""

from __future__ import annotations

import dataclasses
import json
import unicodedata

import pytest

from compliance import report
from compliance.cases import Case
from compliance.probe import InterfaceFacts


def record(name="eth0", host="10.0.0.5", **facts):
    iface = InterfaceFacts(
        name,
        driver=facts.pop("driver", "xen_netfront"),
        mtu=facts.pop("mtu", 1500),
        scatter_gather=facts.pop("sg", False),
    )
    case = Case(host, "4.14.355", iface)
    return case.record(case.judge("xen"))


def test_junit_classname_keeps_host_then_interface_even_with_dots():
    assert report.junit_names(record("eth0.100")) == (
        "10.0.0.5.eth0\u2024100",
        "XENNET-01 scatter-gather/MTU: eth0.100 on 10.0.0.5",
    )
    assert report.junit_names(dataclasses.replace(record(), interface=None))[0] == "10.0.0.5.(host)"


def test_html_cells_escape_host_strings():
    cells = "".join(report.html_row_cells(record("<b>x<b>", host="h&<i>")))
    assert "<b>" not in cells and "<i>" not in cells
    assert "&lt;b&gt;x&lt;b&gt;" in cells and "h&amp;&lt;i&gt;" in cells
    assert report.html_test_id_cell("t[h|<b>x<b>]") == '<td class="col-testId">t[h|&lt;b&gt;x&lt;b&gt;]</td>'


def test_environment_metadata_is_escaped_recursively():
    escaped = report._escape_metadata({"<k>": {"Packages": ["<b>", "a&b"]}, "Target": "<img src=x>"})
    assert json.dumps(escaped) == json.dumps(
        {"&lt;k&gt;": {"Packages": ["&lt;b&gt;", "a&amp;b"]}, "Target": "&lt;img src=x&gt;"}
    )


def test_terminal_lines_escape_control_characters():
    lines = report.terminal_lines([record("a\x1b[2Jb")])
    assert "\x1b" not in "".join(lines)
    assert lines[1].startswith("[WARN] 10.0.0.5|a\\x1b[2Jb: Scatter-Gather is off")
    assert lines[2] == "-- You can enable Scatter-Gather with 'sudo ethtool -K 'a\\x1b[2Jb' sg on'"


def test_terminal_lists_only_warnings_and_errors_unless_verbose():
    ok = record("eth0", sg=True)
    rows = [ok, record("eth1"), dataclasses.replace(record(), interface=None, verdict="error", message="refused")]
    lines = report.terminal_lines(rows)
    assert not [line for line in lines if line.startswith("[SUCCESS]")]
    assert [line.split(":")[0] for line in lines if line.startswith("[")] == [
        "[ERROR] 10.0.0.5",
        "[WARN] 10.0.0.5|eth1",
    ]
    assert lines[-2] == "(1 passing case(s) not listed: -v lists every case)"
    assert lines[-1] == "sg-on: 1  jumbo-mtu: 0  susceptible: 1  not-applicable: 0  error: 1"
    verbose = report.terminal_lines(rows, verbose=True)
    assert any(line.startswith("[SUCCESS] 10.0.0.5|eth0: ") for line in verbose)
    assert verbose[-1] == lines[-1] and not any("not listed" in line for line in verbose)


def test_summary_counts_every_verdict_and_sorts_rows():
    rows = [record("eth1"), record("eth0", sg=True), dataclasses.replace(record(), interface=None, verdict="error")]
    data = report.summary(rows, scope="xen", target="remote", complete=True)
    assert data["counts"] == {"sg-on": 1, "jumbo-mtu": 0, "susceptible": 1, "not-applicable": 0, "error": 1}
    assert [r["interface"] for r in data["results"]] == [None, "eth0", "eth1"]
    assert data["schema"] == 2 and data["complete"] is True and data["generated"].endswith("+00:00")


@pytest.mark.parametrize(
    ("require", "keys"),
    [
        ({}, []),
        ({"require_persistent": True}, ["require_persistent"]),
        ({"require_persistent": True, "require_applicable": True}, ["require_applicable", "require_persistent"]),
    ],
)
def test_summary_names_the_requirements_that_change_what_passes_only_when_on(require, keys):
    data = report.summary([record()], scope="xen", target="remote", complete=True, shard="1/2", **require)
    assert [k for k in data if k.startswith("require")] == keys and all(data[k] is True for k in keys)
    assert list(data)[list(data).index("workaround") + 1 : list(data).index("shard")] == keys


def test_html_columns_are_those_of_today():
    assert report.html_header_cells() == [
        f'<th class="sortable" data-column-type="{key}">{title}</th>'
        for key, title in [
            ("host", "Host"),
            ("interface", "Interface"),
            ("driver", "Driver"),
            ("mtu", "MTU"),
            ("sg", "SG"),
            ("boot", "Boot SG"),
            ("verdict", "Verdict"),
        ]
    ]
    assert report.html_row_cells(record())[4] == '<td class="col-sg">off</td>'
    assert report.html_row_cells(None, workaround=True) == [
        f'<td class="col-{c.key}"></td>' for c in report.columns(workaround=True)
    ]


def test_one_column_list_drives_pytest_html_and_the_merged_page(monkeypatch):
    from compliance.merge import merged_html

    monkeypatch.setattr(
        report, "COLUMNS", report.COLUMNS + (report.Column("kernel", "Kernel", lambda row: row.kernel),)
    )
    rows = [record()]
    assert report.html_header_cells()[-1] == '<th class="sortable" data-column-type="kernel">Kernel</th>'
    assert report.html_row_cells(rows[0])[-1] == '<td class="col-kernel">4.14.355</td>'
    page = merged_html(dict(report.summary(rows, scope="xen", target="remote", complete=True), shards=2))
    assert "<th>Verdict</th><th>Kernel</th><th>Detail</th>" in page
    assert "<td>susceptible</td><td>4.14.355</td><td>Scatter-Gather is off" in page


@pytest.mark.parametrize("code", range(0x180))
def test_visible_shows_every_character_as_the_slow_path_does(code: int) -> None:
    """Plain ASCII skips the per-character lookup; every other character still gets it."""
    char = chr(code)
    expected = report.printable(char) if unicodedata.category(char) in report._INVISIBLE else char
    assert report.visible(f"eth{char}0") == f"eth{expected}0"


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"schema": 2, "results": []},
        {"schema": 2, "counts": {"error": 1}, "results": [{"host": 'a\n"b\u202e', "fixes": ["x\ny"]}], "tail": None},
        {"results": [{"host": "h1"}, {"host": "h2", "waiver": {"index": 1, "nested": {"k": [1, 2]}}}], "e": {}},
    ],
    ids=["empty", "no-rows", "hostile-row", "nested"],
)
def test_summary_text_is_the_same_json_with_a_row_per_line(data):
    text = report.summary_text(data)
    assert json.loads(text) == data and list(json.loads(text)) == list(data)  # values and key order
    assert text.endswith("\n") and text.isascii()
    # Everything but the rows is json's own indented text.
    rowless = {**data, "results": []} if "results" in data else data
    assert report.summary_text(rowless) == json.dumps(rowless, indent=2, ensure_ascii=True) + "\n"
    rows = data.get("results") or []
    lines = text.splitlines()
    for row in rows:  # each row whole on a line of its own (a newline in a value stays escaped)
        assert (
            f"    {json.dumps(row, ensure_ascii=True)}," in lines
            or f"    {json.dumps(row, ensure_ascii=True)}" in lines
        )


def test_summary_text_refuses_a_key_that_is_not_a_string():
    with pytest.raises(TypeError, match="summary keys are strings"):
        report.summary_text({"schema": 2, 1: "x"})
