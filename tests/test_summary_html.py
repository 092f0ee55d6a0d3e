"""summary.html (compliance/summary_html.py): escaping, grouping, failing hosts first, the index, no script or inline style."""

from __future__ import annotations

import html.parser
import json
import re
import xml.etree.ElementTree as ET

import pytest

from compliance import merge, report, summary_html
from compliance.row import Row

HOSTILE_HOST = "<b>h$(x)\x1b[2J\u202eexe.txt"
HOSTILE_IFACE = "<b>eth$(x)\x1b[2J\u202e0"


def hostile_summary() -> dict:
    rows = [
        Row("10.0.0.10", "eth0", driver="vif", mtu=9001, scatter_gather="off", verdict="jumbo-mtu"),
        Row("10.0.0.4", "eth0", driver="vif", mtu=1500, scatter_gather="on", verdict="sg-on"),
        Row(
            HOSTILE_HOST,
            HOSTILE_IFACE,
            driver="vif",
            mtu=1500,
            scatter_gather="off",
            verdict="susceptible",
            message="Scatter-Gather is off",
            fixes=(f"sudo ethtool -K {HOSTILE_IFACE} sg on", f"sudo ip link set dev {HOSTILE_IFACE} mtu 9001"),
            workaround={
                "mode": "dry-run",
                "result": "planned",
                "commands": [f"ethtool -K {HOSTILE_IFACE} sg on"],
                "before": {"scatter_gather": "off", "mtu": 1500},
                "after": None,
                "persisted": [],
                "cause": None,
            },
        ),
        Row("web9", None, verdict="error", message="connection refused"),
    ]
    return report.summary(rows, scope="xen", target="remote", complete=True, workaround="dry-run")


def test_host_strings_are_escaped_and_made_visible():
    page = summary_html.render(hostile_summary())
    assert "<b>" not in page and "$(x)" in page  # text, not markup; nothing here runs a shell
    assert "&lt;b&gt;h$(x)\\x1b[2J\\u202eexe.txt" in page
    assert "&lt;b&gt;eth$(x)\\x1b[2J\\u202e0" in page
    assert "\x1b" not in page and "\u202e" not in page
    assert f"sudo ethtool -K {report.visible(HOSTILE_IFACE).replace('<', '&lt;').replace('>', '&gt;')} sg on" in page


def test_no_script_and_no_inline_style():
    page = summary_html.render(hostile_summary()).lower()
    assert "<script" not in page and "style=" not in page and "<style" not in page
    assert '<link rel="stylesheet" href="summary.css">' in page
    assert "javascript:" not in page and not re.search(r"<[^>]*\son\w+=", page)  # no event handler attribute


class Structure(html.parser.HTMLParser):
    """What a reader sees of the page: hosts in order (failing section or passing line), their rows,
    the index's links and the ids they point to. Works on the page and on Chromium's DOM dump."""

    def __init__(self, page: str) -> None:
        super().__init__()
        # {"kind", "id", "name", "open", "rows"}: a failing host's rows are lists of cells, a passing host's
        # rows are its lines (one cell each)
        self.hosts: list[dict] = []
        self.index: list[tuple[str, str]] = []  # (href, link text)
        self.ids: set[str] = set()
        self._stack: list[str] = []
        self._text: list[str] | None = None
        self._href = ""
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if attrs.get("class") == "host" and tag in ("section", "details"):
            kind = "failing" if tag == "section" else "passing"
            self.hosts.append({"kind": kind, "id": attrs["id"], "name": None, "open": "open" in attrs, "rows": []})
        elif tag == "a" and "failing-index" in self._stack:
            self._text, self._href = [], attrs.get("href", "")
        elif tag in ("h3", "strong", "td", "li") and self.hosts and "failing-index" not in self._stack:
            self._text, self._href = [], attrs.get("href", "")
            if tag == "li":
                self.hosts[-1]["rows"].append([])
        elif tag == "tr" and self.hosts and "tbody" in self._stack:
            self.hosts[-1]["rows"].append([])
        elif tag == "br" and self._text is not None:
            self._text.append("\n")
        if tag not in ("br", "meta", "link"):
            self._stack.append(attrs.get("id", tag))

    def handle_endtag(self, tag):
        if self._text is not None and tag in ("h3", "strong", "td", "li", "a"):
            value, self._text = "".join(self._text), None
            if tag == "a":
                self.index.append((self._href, value))
            elif tag in ("td", "li"):
                self.hosts[-1]["rows"][-1].append(value)
            elif self.hosts[-1]["name"] is None:
                self.hosts[-1]["name"] = value
        if self._stack:
            self._stack.pop()

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def test_grouped_by_host_failing_first_then_in_the_summary_order():
    data = hostile_summary()
    page = Structure(summary_html.render(data))
    passing = [r["host"] for r in data["results"] if r["host"].startswith("10.")]  # the summary's own order
    assert [(h["kind"], h["name"]) for h in page.hosts] == [
        ("failing", report.visible(HOSTILE_HOST)),
        ("failing", "web9"),
        *(("passing", host) for host in passing),
    ]
    assert [len(h["rows"]) for h in page.hosts] == [1, 1, 1, 1]
    assert not any(h["open"] for h in page.hosts)  # passing hosts: one line each, closed


def test_the_index_links_every_failing_host_and_nothing_else():
    page = Structure(summary_html.render(hostile_summary()))
    failing = [h for h in page.hosts if h["kind"] == "failing"]
    assert page.index == [(f"#{h['id']}", h["name"]) for h in failing]
    assert len({h["id"] for h in page.hosts}) == len(page.hosts)  # ids from the position, never from a name


def test_rows_show_each_case_with_its_fixes_in_the_details_cell():
    rows = Structure(summary_html.render(hostile_summary())).hosts[0]["rows"]
    iface = report.visible(HOSTILE_IFACE)
    assert rows[0][:5] == [iface, "vif", "1500", "off", "susceptible"]
    details = rows[0][5]
    assert details.startswith("Scatter-Gather is offFix (either command):")
    assert f"sudo ethtool -K {iface} sg on\nsudo ip link set dev {iface} mtu 9001" in details


def test_a_passing_host_is_a_line_that_opens_on_a_line_per_interface():
    rows = [
        Row("h1", "eth0", driver="vif", mtu=1500, scatter_gather="on", verdict="sg-on", message="SG on", kernel="6.1"),
        Row("h1", "eth1", driver="ena", mtu=9001, verdict="not-applicable", message="not xen", kernel="6.1"),
    ]
    (host,) = Structure(summary_html.render(report.summary(rows, scope="xen", target="remote", complete=True))).hosts
    assert (host["kind"], host["open"]) == ("passing", False)
    assert host["rows"] == [
        ["eth0: sg-on (driver vif, MTU 1500, SG on). SG on"],
        ["eth1: not-applicable (driver ena, MTU 9001). not xen"],
    ]


@pytest.mark.parametrize(
    ("failing", "index_open"),
    [(1, True), (summary_html.INDEX_OPEN_MAX, True), (summary_html.INDEX_OPEN_MAX + 1, False)],
)
def test_the_index_is_open_unless_it_is_long(failing, index_open):
    results = [{"host": f"h{i}", "verdict": "error"} for i in range(failing)]
    page = summary_html.render({"counts": {"error": failing}, "results": results})
    assert ('<details id="failing-index" open>' in page) is index_open
    assert len(Structure(page).index) == failing


def test_hosts_are_laid_out_in_chunks():
    results = [{"host": f"f{i}", "verdict": "error"} for i in range(summary_html.FAILING_CHUNK + 1)]
    results += [{"host": f"p{i}", "verdict": "sg-on"} for i in range(summary_html.PASSING_CHUNK * 2)]
    page = summary_html.render({"counts": {}, "results": results})
    failing, passing = page.split('<section id="passing">')
    assert failing.count('<div class="chunk">') == 2 and passing.count('<div class="chunk">') == 2
    assert len(Structure(page).hosts) == len(results)


@pytest.mark.parametrize(
    ("row", "failing"),
    [
        ({"verdict": "sg-on"}, False),
        ({"verdict": "jumbo-mtu"}, False),
        ({"verdict": "not-applicable"}, False),
        ({"verdict": "remediated"}, False),
        ({"verdict": "susceptible"}, True),
        ({"verdict": "error"}, True),
        ({"verdict": "none-applicable"}, True),  # --xennet-require-applicable fails the case
        ({"verdict": "susceptible", "workaround": {"result": "planned"}}, True),
        ({"verdict": "remediated", "workaround": {"result": "applied"}}, False),
        ({"verdict": "sg-on", "workaround": {"result": "failed"}}, True),  # e.g. persistence failed
    ],
)
def test_a_host_is_failing_when_one_of_its_cases_fails(row, failing):
    hosts = summary_html.host_groups([{"host": "a", "interface": "eth0", **row}])
    assert [h.failing for h in hosts] == [failing]


def test_counts_fixes_and_workaround_are_shown():
    data = hostile_summary()
    page = summary_html.render(data)
    for verdict, count in data["counts"].items():
        assert f'<td id="count-{verdict}">{count}</td>' in page
    assert '<tr class="failing"><th>susceptible</th><td id="count-susceptible">1</td></tr>' in page
    assert '<tr><th>not-applicable</th><td id="count-not-applicable">0</td></tr>' in page
    assert 'class="fix"' in page and "mtu 9001</pre>" in page
    assert "<dt>Workaround</dt><dd>dry-run: planned</dd>" in page
    assert page.count('class="fix"') == 1  # only the susceptible row
    assert '<p id="outcome" class="failing">2 of 4 hosts failing (4 cases).</p>' in page


def test_error_kinds_are_counted_and_shown_with_the_verdict():
    rows = [Row(f"h{i}", verdict="error", error_kind=kind, message="x") for i, kind in enumerate("aab")]
    page = summary_html.render(report.summary(rows, scope="xen", target="remote", complete=True))
    assert "<tr><th>a</th><td>2</td></tr>\n<tr><th>b</th><td>1</td></tr>" in page
    assert [h["rows"][0][4] for h in Structure(page).hosts] == ["error (a)", "error (a)", "error (b)"]


def test_a_host_line_counts_failing_verdicts_first_and_names_its_kernel():
    rows = [
        {"host": "a", "interface": f"eth{i}", "verdict": v, "kernel": "6.1"}
        for i, v in enumerate(("sg-on", "error", "sg-on"))
    ]
    (host,) = summary_html.host_groups(rows)
    assert (host.counts, host.kernel, host.worst) == ("3 cases: error 1, sg-on 2", "6.1", "error")


@pytest.mark.parametrize(("results", "outcome"), [
    ([], "No case was reported."),
    ([{"host": "a", "verdict": "sg-on"}, {"host": "b", "verdict": "sg-on"}], "All 2 hosts pass (2 cases)."),
])  # fmt: skip
def test_the_outcome_line(results, outcome):
    assert f">{outcome}</p>" in summary_html.render({"counts": {}, "results": results})


def test_write_puts_the_stylesheet_beside_the_page(tmp_path):
    target = tmp_path / "out" / "page.html"
    assert summary_html.write(target, hostile_summary()) == []
    assert (tmp_path / "out" / "summary.css").read_text() == summary_html.stylesheet()
    assert 'class="host"' in target.read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["page.html", "summary.css"]


def test_the_merge_writes_the_same_page_for_merged_shards(tmp_path):
    rows = [Row.from_dict(r) for r in hostile_summary()["results"]]
    halves = {1: [r for r in rows if r.host.startswith("10.")], 2: [r for r in rows if not r.host.startswith("10.")]}
    for k, part in halves.items():
        shard = tmp_path / f"shard{k}"
        shard.mkdir()
        data = report.summary(part, scope="xen", target="remote", complete=True, workaround="dry-run", shard=f"{k}/2")
        (shard / "summary.json").write_text(json.dumps(data))
        suite = ET.Element("testsuite", tests=str(len(part)))
        for _ in part:
            ET.SubElement(suite, "testcase")
        ET.ElementTree(suite).write(shard / "junit.xml")
    out = tmp_path / "merged"
    assert merge.main([str(out), str(tmp_path / "shard1"), str(tmp_path / "shard2")]) == 0
    merged = json.loads((out / "summary.json").read_text())
    page = (out / "summary.html").read_text()
    assert page == summary_html.render(merged)
    assert "&lt;b&gt;h$(x)\\x1b[2J\\u202eexe.txt" in page and "<b>" not in page
    assert "<tr><th>shards</th><td>2</td></tr>" in page
    assert (out / "summary.css").read_text() == summary_html.stylesheet()


def test_the_run_table_names_the_requirements_in_force():
    rows = [Row(host="h1", interface="eth0", verdict="not-persistent", message="m")]
    data = report.summary(rows, scope="xen", target="remote", complete=True, require_persistent=True)
    table = re.search(r'<table class="facts" id="run">(.*?)</table>', summary_html.render(data), re.S)
    assert table is not None and "<tr><th>require_persistent</th><td>true</td></tr>" in table.group(1)
    assert "require_applicable" not in table.group(1)
