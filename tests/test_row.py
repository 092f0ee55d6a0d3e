"""The report row, defined once: its dict form is summary.json's schema, and every report uses it."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET

import pytest

from compliance import merge, report
from compliance.cases import Case, build_cases
from compliance.gather import HostResult
from compliance.probe import HostFacts, InterfaceFacts
from compliance.row import Row

# summary.json's results entry, as users parse it: keys, their order and their JSON types.
SUSCEPTIBLE_ROW_JSON = (
    '{"host": "10.0.0.5", "interface": "eth0", "driver": "vif", "virtual": false, "mtu": 1500, '
    '"scatter_gather": "off", "sg_fixed": false, "boot_sg": "off", "boot_sg_source": "/etc/x.rules:3", '
    '"boot_sg_problem": null, "verdict": "susceptible", "error_kind": null, '
    '"message": "Scatter-Gather is off and MTU is set below 9001 on eth0. You are potentially susceptible to the bug.", '
    '"fixes": ["sudo ethtool -K eth0 sg on", "sudo ip link set dev eth0 mtu 9001"], "kernel": "4.14.355"}'
)
HOST_ROW_JSON = (
    '{"host": "web1", "interface": null, "driver": null, "virtual": null, "mtu": null, "scatter_gather": null, '
    '"sg_fixed": null, "boot_sg": null, "boot_sg_source": null, "boot_sg_problem": null, "verdict": "error", '
    '"error_kind": "refused", "message": "connection refused", "fixes": [], '
    '"kernel": null}'
)
WORKAROUND = {
    "mode": "dry-run",
    "result": "planned",
    "commands": ["sudo /usr/sbin/ethtool -K eth0 sg on"],
    "before": {"scatter_gather": "off", "sg_fixed": False, "mtu": 1500},
    "after": None,
    "persisted": [],
    "cause": None,
}


def susceptible(host="10.0.0.5", name="eth0"):
    facts = InterfaceFacts(
        name, driver="vif", mtu=1500, scatter_gather=False, boot_sg="off", boot_sg_source="/etc/x.rules:3"
    )
    case = Case(host, "4.14.355", facts)
    return case.record(case.judge("xen"))


def unreachable(host="web1"):
    case = Case(host, error="connection refused", error_kind="refused")
    return case.record(case.judge("xen"))


def test_the_dict_form_is_summary_jsons_schema_to_the_byte():
    assert json.dumps(susceptible().to_dict()) == SUSCEPTIBLE_ROW_JSON
    assert json.dumps(unreachable().to_dict()) == HOST_ROW_JSON


def test_workaround_is_the_last_key_and_only_there_when_touched():
    touched = dataclasses.replace(susceptible(), workaround=WORKAROUND)
    assert list(touched.to_dict())[-2:] == ["kernel", "workaround"]
    assert "workaround" not in susceptible().to_dict()


@pytest.mark.parametrize(
    "row", [susceptible(), unreachable(), dataclasses.replace(susceptible(), workaround=WORKAROUND)]
)
def test_dict_form_round_trips_through_json(row):
    text = json.dumps(row.to_dict())
    assert Row.from_dict(json.loads(text)) == row
    assert json.dumps(Row.from_dict(json.loads(text)).to_dict()) == text


def test_summary_json_round_trips():
    rows = [susceptible("b"), unreachable("a"), dataclasses.replace(susceptible("c"), workaround=WORKAROUND)]
    results = json.loads(json.dumps(report.summary(rows, scope="xen", target="remote", complete=True)))["results"]
    assert [Row.from_dict(r) for r in results] == sorted(rows, key=Row.sort_key)


@pytest.mark.parametrize("change", [{"extra": 1}, {"interface": None, "iface": "eth0"}])
def test_another_schema_is_refused(change):
    data = susceptible().to_dict() | change
    with pytest.raises(ValueError, match="not a report row"):
        Row.from_dict(data)
    missing = susceptible().to_dict()
    del missing["verdict"]
    with pytest.raises(ValueError, match="missing \\['verdict'\\]"):
        Row.from_dict(missing)
    with pytest.raises(ValueError, match="not a report row"):
        Row.from_dict(["web1"])


def test_cases_rows_and_merged_rows_share_one_order():
    facts = HostFacts(
        "k", None, None, None, None, (InterfaceFacts("eth1"), InterfaceFacts("eth0"), InterfaceFacts("eth0.100"))
    )
    cases = build_cases(
        [
            HostResult("b", facts=facts),
            HostResult("a", error="refused", error_kind="refused"),
            HostResult("a0", facts=facts),
        ]
    )
    assert [c.sort_key() for c in cases] == [c.record(c.judge("all")).sort_key() for c in cases]
    assert [c.id for c in cases] == ["a", "a0|eth0", "a0|eth0.100", "a0|eth1", "b|eth0", "b|eth0.100", "b|eth1"]
    rows = [c.record(c.judge("all")) for c in reversed(cases)]
    results = report.summary(rows, scope="all", target="remote", complete=True)["results"]
    assert [(r["host"], r["interface"]) for r in results] == [(c.host, c.interface and c.interface.name) for c in cases]


def write_shard(directory, index, count, rows):
    directory.mkdir()
    summary = report.summary(rows, scope="xen", target="remote", complete=True, shard=f"{index}/{count}")
    report.write_json(directory / "summary.json", summary)
    suite = ET.Element("testsuite", tests=str(len(rows)))
    for _ in rows:
        ET.SubElement(suite, "testcase")
    ET.ElementTree(suite).write(directory / "junit.xml")
    return directory


def test_a_merge_writes_the_shards_rows_unchanged_in_report_order(tmp_path):
    first = [susceptible("c"), unreachable("a")]
    second = [dataclasses.replace(susceptible("b"), workaround=WORKAROUND)]
    merged = merge.merge(
        tmp_path / "out", [write_shard(tmp_path / "s2", 2, 2, second), write_shard(tmp_path / "s1", 1, 2, first)]
    )
    unsharded = report.summary(first + second, scope="xen", target="remote", complete=True)
    assert json.dumps(merged["results"]) == json.dumps(unsharded["results"])
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["results"] == unsharded["results"]


def test_a_shard_with_rows_of_another_schema_is_refused(tmp_path):
    shard = write_shard(tmp_path / "s1", 1, 1, [susceptible()])
    data = json.loads((shard / "summary.json").read_text())
    data["results"][0]["sg"] = data["results"][0].pop("scatter_gather")
    (shard / "summary.json").write_text(json.dumps(data))
    with pytest.raises(merge.MergeError, match="not a report row"):
        merge.merge(tmp_path / "out", [shard])


def test_hosts_and_interfaces_are_in_natural_order_in_every_report(tmp_path):
    hosts = ["10.0.0.10", "10.0.0.4", "web10", "web2", "10.0.0.9"]
    facts = HostFacts("k", None, None, None, None, (InterfaceFacts("eth10"), InterfaceFacts("eth2")))
    cases = build_cases([HostResult(h, facts=facts) for h in hosts])
    order = ["10.0.0.4", "10.0.0.9", "10.0.0.10", "web2", "web10"]
    assert [c.id for c in cases] == [f"{h}|{i}" for h in order for i in ("eth2", "eth10")]
    rows = [c.record(c.judge("all")) for c in reversed(cases)]
    results = report.summary(rows, scope="all", target="remote", complete=True)["results"]
    assert [(r["host"], r["interface"]) for r in results] == [(c.host, c.interface.name) for c in cases]
    terminal = [line.split(":")[0] for line in report.terminal_lines(rows, verbose=True) if line.startswith("[")]
    assert terminal == [f"[ERROR] {c.id}" for c in cases]  # InterfaceFacts with nothing read: in doubt
    # the merge: shards given in any order, rows in the one order
    (one, two) = tmp_path / "s1", tmp_path / "s2"
    merged = merge.merge(tmp_path / "out", [write_shard(one, 1, 2, rows[:4]), write_shard(two, 2, 2, rows[4:])])
    assert [(r["host"], r["interface"]) for r in merged["results"]] == [(c.host, c.interface.name) for c in cases]


def test_error_rows_carry_their_kind():
    assert unreachable().error_kind == "refused" and susceptible().error_kind is None
    doubt = Case("web1", "k", InterfaceFacts("eth0"))  # nothing read: the probe's output is in doubt
    assert doubt.record(doubt.judge("all")).error_kind == "probe"
    (nothing,) = build_cases([HostResult("web1", facts=HostFacts("k", None, None, None, None, ()))])
    assert nothing.record(nothing.judge("all")).error_kind == "probe"
    (typed,) = build_cases([HostResult("web1", error="timed out", error_kind="timeout")])
    assert typed.record(typed.judge("all")).error_kind == "timeout"


def test_the_merge_reads_schema_1_shards(tmp_path):
    rows = [susceptible("10.0.0.10"), unreachable("10.0.0.4")]
    shard = write_shard(tmp_path / "s1", 1, 1, rows)
    data = json.loads((shard / "summary.json").read_text())
    data["schema"] = 1
    for row in data["results"]:
        del row["error_kind"]
    data["results"][1]["message"] = "10.0.0.4: connection refused"
    (shard / "summary.json").write_text(json.dumps(data))
    merged = merge.merge(tmp_path / "out", [shard])
    assert merged["schema"] == 2
    assert [(r["host"], r["error_kind"]) for r in merged["results"]] == [("10.0.0.4", "refused"), ("10.0.0.10", None)]
    assert list(merged["results"][0]) == list(rows[0].to_dict())


def test_the_merge_carries_boot_sg_and_reads_rows_written_before_it(tmp_path):
    # 0.2.0's schema 2 rows have no boot_sg keys: read as null, written with the keys.
    shard = write_shard(tmp_path / "s1", 1, 1, [susceptible("10.0.0.10"), susceptible("10.0.0.4")])
    data = json.loads((shard / "summary.json").read_text())
    for key in ("boot_sg", "boot_sg_source", "boot_sg_problem"):
        del data["results"][0][key]
    (shard / "summary.json").write_text(json.dumps(data))
    merged = merge.merge(tmp_path / "out", [shard])
    assert [(r["boot_sg"], r["boot_sg_source"]) for r in merged["results"]] == [(None, None), ("off", "/etc/x.rules:3")]
    assert list(merged["results"][0])[7:10] == ["boot_sg", "boot_sg_source", "boot_sg_problem"]
    assert "off (/etc/x.rules:3)" in (tmp_path / "out" / "report.html").read_text()
    assert "<dt>Boot SG</dt><dd>off (/etc/x.rules:3)</dd>" in (tmp_path / "out" / "summary.html").read_text()
