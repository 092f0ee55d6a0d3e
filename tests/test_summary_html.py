"""summary.html (compliance/summary_html.py): escaping, grouping, failing hosts first, no script or inline style."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

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


def test_grouped_by_host_failing_first_then_in_the_summary_order():
    data = hostile_summary()
    page = summary_html.render(data)
    hosts = re.findall(r'<span class="host-name">(.*?)</span>', page)
    passing = [r["host"] for r in data["results"] if r["host"].startswith("10.")]  # the summary's own order
    assert hosts == ["&lt;b&gt;h$(x)\\x1b[2J\\u202eexe.txt", "web9", *passing]
    assert re.findall(r'<section class="host (\w+)">', page) == ["failing", "failing", "passing", "passing"]


def test_counts_fixes_and_workaround_are_shown():
    data = hostile_summary()
    page = summary_html.render(data)
    for verdict, count in data["counts"].items():
        assert f'<td class="count" id="count-{verdict}">{count}</td>' in page
    assert '<span class="badge v-susceptible">susceptible: 1</span>' in page
    assert 'class="fixes"' in page and "mtu 9001</code>" in page
    assert "<dt>Workaround</dt><dd>dry-run: planned</dd>" in page
    assert page.count('class="fixes"') == 1  # only the susceptible row


def test_host_groups_counts():
    groups = summary_html.host_groups(
        [{"host": "a", "verdict": "sg-on"}, {"host": "b", "verdict": "error"}, {"host": "a", "verdict": "susceptible"}]
    )
    assert [(g["host"], g["failing"], g["counts"]) for g in groups] == [
        ("a", True, {"sg-on": 1, "susceptible": 1}),
        ("b", True, {"error": 1}),
    ]


def test_write_puts_the_stylesheet_beside_the_page(tmp_path):
    target = tmp_path / "out" / "page.html"
    assert summary_html.write(target, hostile_summary()) == []
    assert (tmp_path / "out" / "summary.css").read_text() == summary_html.stylesheet()
    assert "host-name" in target.read_text()
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
    assert '<th>shards</th><td class="fact-shards">2</td>' in page
    assert (out / "summary.css").read_text() == summary_html.stylesheet()
