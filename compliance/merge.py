"""Merge the reports of a sharded run (``--xennet-shard K/N``) into one set.

    python -m compliance.merge OUT_DIR SHARD_DIR...

Each SHARD_DIR holds one shard's ``summary.json`` and ``junit.xml`` (a path to a
``summary.json`` also works; its ``junit.xml`` is read from the same directory).
OUT_DIR receives ``summary.json``, ``junit.xml``, ``report.html`` and ``summary.html`` (with its
``summary.css``: the page an audit run writes, readable under Jenkins' default CSP).

The shards must be 1..N of the same N exactly once, and agree on everything that
describes the run (schema, scope, target, host key policy, ...): anything else is
refused (exit status 2), never merged into a report that looks whole.

Shards of schema 1 (0.1.x) and 2 are read; the merged summary is schema 2. A schema 1 row
has no ``error_kind``: an error row gets the kind its (schema 1) message names.

Shards audited with ``--xennet-waivers`` must have used the same file (``waivers``: its
sha256 and count). Rows keep their ``waiver`` objects, ``counts`` its ``waived``, and
``unmatched_waivers`` is what *no* shard matched: the intersection of the shards' lists
(a waiver for a host of shard 2 is unmatched in every other shard).

>>> kind_from_message("host key mismatch for web1"), kind_from_message("timed out (limit 10s)")
('host-key', 'timeout')
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compliance import report, summary_html
from compliance.row import Row
from compliance.rule import CONTROL
from compliance.shard import Shard

# Keys that differ between shards by nature; every other key describes the run and must match.
PER_SHARD_KEYS = ("generated", "complete", "shard", "counts", "results", "unmatched_waivers")
JUNIT_COUNTS = ("tests", "errors", "failures", "skipped")


READS_SCHEMAS = (1, 2)
# Schema 1 messages, as 0.1.x worded them, and their kind; the first that matches wins.
_SCHEMA1_KINDS = (
    ("connection refused", "refused"),
    ("timed out", "timeout"),
    ("authentication failed", "auth"),
    ("host key", "host-key"),
    ("cannot resolve", "dns"),
    ("sudo requires a password", "sudo"),
    ("output exceeds", "output-limit"),
    ("crashed while running this case", "worker-crash"),
    ("not gathered: the run was interrupted", "interrupted"),
    ("ssh failed", "ssh"),
    ("No route to host", "unreachable"),
    ("Network is unreachable", "unreachable"),
    ("probe failed", "probe"),
    ("cannot read", "probe"),
    ("cannot determine", "probe"),
    ("no network interface", "probe"),
)


def kind_from_message(message: str) -> str:
    """The ``error_kind`` of a schema 1 error row, read from its message."""
    for needle, kind in _SCHEMA1_KINDS:
        if needle in message:
            return kind
    return "other"


def upgrade_row(data: Any, schema: int) -> Any:
    """A ``results`` entry of ``schema`` in schema 2's form (schema 1 had no ``error_kind``)."""
    if schema >= 2 or not isinstance(data, dict) or "error_kind" in data:
        return data
    kind = kind_from_message(str(data.get("message", ""))) if data.get("verdict") == "error" else None
    keys = list(data)
    at = keys.index("verdict") + 1 if "verdict" in keys else len(keys)
    return dict([*data.items()][:at] + [("error_kind", kind)] + [*data.items()][at:])


class MergeError(Exception):
    """The inputs cannot be merged; the message says why, in one line."""


@dataclasses.dataclass
class ShardReports:
    source: Path
    shard: Shard
    summary: dict[str, Any]
    junit: ET.Element
    rows: list[Row]


def load(source: Path) -> ShardReports:
    summary_path = source / "summary.json" if source.is_dir() else source
    junit_path = summary_path.parent / "junit.xml"
    try:
        summary = json.loads(summary_path.read_text())
        junit = ET.parse(junit_path).getroot()
    except (OSError, ValueError, ET.ParseError) as exc:
        raise MergeError(f"{source}: cannot read its reports: {exc}") from None
    if not isinstance(summary, dict) or summary.get("schema") not in READS_SCHEMAS:
        found = summary.get("schema") if isinstance(summary, dict) else None
        raise MergeError(f"{summary_path}: summary schema {found!r}, this merge reads schema 1 and 2")
    if not isinstance(summary.get("results"), list) or not isinstance(summary.get("counts"), dict):
        raise MergeError(f"{summary_path}: not an audit summary (no results or counts)")
    if not summary.get("shard"):
        raise MergeError(f"{summary_path}: not a shard (run with --xennet-shard K/N)")
    try:
        shard = Shard.parse(str(summary["shard"]))
        rows = [Row.from_dict(upgrade_row(r, summary["schema"])) for r in summary["results"]]
    except (ValueError, TypeError) as exc:
        raise MergeError(f"{summary_path}: {exc}") from None
    if junit.tag == "testsuite":
        junit = _wrap(junit)
    return ShardReports(source, shard, summary, junit, rows)


def _wrap(suite: ET.Element) -> ET.Element:
    root = ET.Element("testsuites")
    root.append(suite)
    return root


def check(shards: Sequence[ShardReports]) -> int:
    """Refuse anything but shards 1..N of one run; return N."""
    if not shards:
        raise MergeError("no shard reports given")
    counts = {s.shard.count for s in shards}
    if len(counts) != 1:
        raise MergeError(f"shards of different splits: {', '.join(sorted(str(s.shard) for s in shards))}")
    (count,) = counts
    seen: dict[int, Path] = {}
    for s in shards:
        if s.shard.index in seen:
            raise MergeError(f"shard {s.shard} given twice: {seen[s.shard.index]} and {s.source}")
        seen[s.shard.index] = s.source
    missing = [f"{k}/{count}" for k in range(1, count + 1) if k not in seen]
    if missing:
        raise MergeError(f"missing shard(s) {', '.join(missing)}")
    first = shards[0]
    for s in shards[1:]:
        for key in sorted(set(first.summary) | set(s.summary)):
            if key not in PER_SHARD_KEYS and first.summary.get(key) != s.summary.get(key):
                raise MergeError(
                    f"shards disagree on {key}: {_value(first.summary, key)} ({first.source}) "
                    f"vs {_value(s.summary, key)} ({s.source})"
                )
    owner: dict[str, ShardReports] = {}
    for s in shards:
        for host in {r.host for r in s.rows}:
            if host in owner:
                raise MergeError(f"host {report.printable(host)} is in shard {owner[host].shard} and {s.shard}")
            owner[host] = s
    for s in shards:
        cases = len(list(s.junit.iter("testcase")))
        if s.summary.get("complete") and cases != len(s.rows):
            raise MergeError(f"{s.source}: junit.xml has {cases} cases, summary.json {len(s.rows)}: not from one run")
    return count


def _value(summary: dict[str, Any], key: str) -> str:
    """A run fact as a refusal names it; "(absent)" for one the shard does not have (an option not given).

    >>> _value({"scope": "xen"}, "scope"), _value({}, "require_persistent")
    ("'xen'", '(absent)')
    """
    return repr(summary[key]) if key in summary else "(absent)"


def unmatched_everywhere(lists: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The waivers that no shard matched: in every shard's ``unmatched_waivers`` (by their index in the file).

    >>> a, b, c = ({"index": i} for i in (1, 2, 3))
    >>> unmatched_everywhere([[a, b, c], [b, c], [a, c]])
    [{'index': 3}]
    """
    common = set.intersection(*({w["index"] for w in waivers} for waivers in lists)) if lists else set()
    return [w for w in lists[0] if w["index"] in common] if lists else []


def merge_summary(shards: Sequence[ShardReports], generated: datetime.datetime | None = None) -> dict[str, Any]:
    rows = sorted((r for s in shards for r in s.rows), key=Row.sort_key)
    keys = dict.fromkeys(k for s in shards for k in s.summary["counts"])  # each shard's zero-filled verdicts
    waived = report.WAIVED in keys  # not a verdict: counted from the rows' waivers
    merged = dict(shards[0].summary)
    merged.update(
        schema=report.SCHEMA,
        generated=(generated or datetime.datetime.now(datetime.timezone.utc)).isoformat(timespec="seconds"),
        complete=all(s.summary.get("complete") is True for s in shards),
        shard=None,
        shards=len(shards),
        counts=report.counts_of(rows, [k for k in keys if k != report.WAIVED], waived=waived),
        results=[r.to_dict() for r in rows],
    )
    if "unmatched_waivers" in merged:  # the shards agree on "waivers" (checked): all of them have one
        merged["unmatched_waivers"] = unmatched_everywhere([s.summary.get("unmatched_waivers", []) for s in shards])
    return merged


def merge_junit(shards: Sequence[ShardReports]) -> ET.ElementTree:
    """One <testsuites>, with each shard's <testsuite> (named after its shard) and summed totals."""
    root = ET.Element("testsuites")
    totals: Counter[str] = Counter()
    seconds = 0.0
    for s in shards:
        for suite in s.junit.iter("testsuite"):
            suite.set("name", f"{suite.get('name', 'pytest')} (shard {s.shard})")
            for key in JUNIT_COUNTS:
                totals[key] += int(suite.get(key, "0"))
            seconds += float(suite.get("time", "0") or 0)
            root.append(suite)
    for key in JUNIT_COUNTS:
        root.set(key, str(totals[key]))
    root.set("time", f"{seconds:.3f}")
    return ET.ElementTree(root)


_CSS = (
    "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#eee}"
    ".v-susceptible{background:#fdd}.v-error{background:#fbb}.v-sg-on,.v-jumbo-mtu{background:#dfd}"
)


def merged_html(summary: dict[str, Any]) -> str:
    """A self-contained page: run facts, counts and one row per case, in report.columns. Every value is escaped."""
    esc = report.html_text
    facts = {k: v for k, v in summary.items() if k not in ("counts", "results")}
    columns = report.columns(detail=True)
    rows = []
    for record in map(Row.from_dict, summary["results"]):
        cells = "".join(f"<td>{esc(c.text(record))}</td>" for c in columns)
        rows.append(f'<tr class="v-{esc(record.verdict)}">{cells}</tr>')
    title = (
        f"{CONTROL.id}: xen-netfront scatter-gather/MTU compliance (merged from {esc(summary.get('shards'))} shards)"
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html><head><meta charset="utf-8">',
            f"<title>{title}</title><style>{_CSS}</style></head><body>",
            f"<h1>{title}</h1>",
            "<h2>Run</h2><table>",
            *(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts.items()),
            "</table><h2>Counts</h2><table>",
            *(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary["counts"].items()),
            "</table><h2>Results</h2><table>",
            "<tr>" + "".join(f"<th>{c.title}</th>" for c in columns) + "</tr>",
            *rows,
            "</table></body></html>",
            "",
        ]
    )


def merge(out: Path, sources: Sequence[Path]) -> dict[str, Any]:
    """Read, check and merge the shards' reports into ``out``; return the merged summary."""
    shards = sorted((load(Path(s)) for s in sources), key=lambda s: s.shard.index)
    check(shards)
    summary = merge_summary(shards)
    junit = merge_junit(shards)
    out.mkdir(parents=True, exist_ok=True)
    junit_tmp = out / "junit.xml.tmp"
    junit.write(junit_tmp, encoding="utf-8", xml_declaration=True)
    junit_tmp.replace(out / "junit.xml")
    html_tmp = out / "report.html.tmp"
    html_tmp.write_text(merged_html(summary), encoding="utf-8")
    html_tmp.replace(out / "report.html")
    errors = summary_html.write(out / "summary.html", summary)
    if errors:
        raise MergeError("; ".join(errors))
    report.write_json(out / "summary.json", summary)  # last: its presence means the set is whole
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m compliance.merge",
        description="Merge the reports of --xennet-shard runs into one summary.json, junit.xml, report.html "
        "and summary.html.",
    )
    parser.add_argument("out", type=Path, metavar="OUT_DIR", help="where the merged reports are written")
    parser.add_argument(
        "shards", type=Path, nargs="+", metavar="SHARD", help="a shard's report directory (or its summary.json)"
    )
    args = parser.parse_args(argv)
    try:
        summary = merge(args.out, args.shards)
    except MergeError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    counts = "  ".join(f"{k}: {v}" for k, v in summary["counts"].items())
    print(f"merged {summary['shards']} shards, {len(summary['results'])} cases ({counts}) into {args.out}")
    if not summary["complete"]:
        print("some shard did not report every case: the merged summary says complete: false", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
