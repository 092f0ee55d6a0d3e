"""Report: turn case rows (:class:`compliance.row.Row`) into JUnit details, HTML cells, summary.json
and the terminal block.

Every string in a row came from a host and is untrusted: it is escaped for the
format it lands in (XML by ElementTree, HTML by :func:`html.escape`, terminals by
:func:`printable`).

>>> printable("eth0\\x1b[2J")
'eth0\\\\x1b[2J'
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import functools
import html
import json
import os
import unicodedata
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping
from operator import attrgetter
from pathlib import Path
from typing import Any

import pytest
from _pytest.junitxml import xml_key  # the stash key pytest's own record_xml_attribute uses

from compliance import rule
from compliance.cases import Case
from compliance.options import Settings
from compliance.row import Row
from compliance.rule import CONTROL, Judgement, Verdict
from compliance.targets import redact
from compliance.waivers import ACTIVE, Waivers
from compliance.workaround import REMEDIATED, added_verdicts

SCHEMA = 2  # summary.json; 2 added error_kind and natural host order (see CHANGELOG.md)
JUNIT_PROPERTIES = (
    "host",
    "interface",
    "driver",
    "mtu",
    "scatter_gather",
    "sg_fixed",
    "boot_sg",
    "boot_sg_source",
    "boot_sg_problem",
    "verdict",
    "kernel",
)
TAGS = {
    Verdict.SG_ON.value: "SUCCESS",
    Verdict.JUMBO_MTU.value: "SUCCESS",
    Verdict.SUSCEPTIBLE.value: "WARN",
    Verdict.NONE_APPLICABLE.value: "WARN",
    Verdict.NOT_PERSISTENT.value: "WARN",
    Verdict.ERROR.value: "ERROR",
    REMEDIATED: "SUCCESS",
}
ONE_DOT_LEADER = "\u2024"  # looks like "." but is not Jenkins' package separator
WAIVED = "waived"  # a count, not a verdict: susceptible cases an active waiver made xfail (--xennet-waivers)


def printable(text: Any) -> str:
    """Render untrusted text for a terminal: control and non-ASCII characters escaped."""
    return str(text).encode("unicode_escape").decode("ascii")


# Control characters, format characters (bidi overrides such as U+202E among them), line and
# paragraph separators, lone surrogates: never shown raw in a page, where they could reorder
# or hide what an auditor reads.
_INVISIBLE = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"))


def visible(text: Any) -> str:
    r"""Untrusted text with every control or bidi character escaped as the terminal shows it.

    >>> visible("eth0\x1b[2J \u202etxt.exe caf\u00e9")
    'eth0\\x1b[2J \\u202etxt.exe café'
    """
    text = str(text)
    if text.isascii() and text.isprintable():  # the common case, at C speed: nothing to escape
        return text
    return "".join(printable(c) if unicodedata.category(c) in _INVISIBLE else c for c in text)


def html_text(value: Any) -> str:
    """A value for an HTML page: control and bidi characters made visible, then HTML-escaped."""
    return html.escape(visible(property_value(value)))


def property_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def junit_properties(record: Row) -> list[tuple[str, str]]:
    waiver = [("waiver", json.dumps(record.waiver))] if record.waiver else []
    return [(name, visible(property_value(getattr(record, name)))) for name in JUNIT_PROPERTIES] + [
        (name, visible(value)) for name, value in workaround_properties(record) + waiver
    ]


def is_waived(record: Row) -> bool:
    """A susceptible case an active waiver made xfail."""
    return record.verdict == Verdict.SUSCEPTIBLE.value and (record.waiver or {}).get("status") == ACTIVE


def waiver_label(waiver: dict[str, Any]) -> str:
    """A row's waiver, or an unmatched one, in one line: ``waiver #N (FILE:LINE, owner O, expires D)``."""
    return f"waiver #{waiver['index']} ({waiver['source']}, owner {waiver['owner']}, expires {waiver['expires']})"


def unmatched_waivers(waivers: Waivers, rows: Iterable[Row]) -> list[dict[str, Any]]:
    """summary.json's ``unmatched_waivers``: those whose globs match no susceptible case of the run."""
    susceptible = [(r.host, r.interface) for r in rows if r.verdict == Verdict.SUSCEPTIBLE.value]
    return [w.to_dict() for w in waivers.unmatched(susceptible)]


def counts_of(rows: Iterable[Row], shown: Iterable[str], waived: bool) -> dict[str, int]:
    """Cases per verdict (every ``shown`` one, zeros included), then ``waived`` when waivers were given."""
    rows = list(rows)
    counts = Counter(r.verdict for r in rows)
    result = {v: counts.get(v, 0) for v in shown} | dict(counts)
    if waived:
        result[WAIVED] = sum(map(is_waived, rows))
    return result


def workaround_properties(record: Row) -> list[tuple[str, str]]:
    """``workaround_*`` properties of a touched interface: the same data as summary.json."""
    done = record.workaround
    if not done:
        return []
    return [
        ("workaround_mode", done["mode"]),
        ("workaround_result", done["result"]),
        ("workaround_commands", json.dumps(done["commands"])),
        ("workaround_before", json.dumps(done["before"])),
        ("workaround_after", json.dumps(done["after"])),
        ("workaround_persisted", json.dumps(done["persisted"])),
        ("workaround_cause", property_value(done.get("cause"))),
    ]


def _state_text(data: dict[str, Any] | None) -> str:
    if not data:
        return "?"
    return f"sg {data.get('scatter_gather') or '?'}, mtu {data.get('mtu') or '?'}"


def workaround_text(record: Row) -> str:
    """``before -> after (result)`` for the HTML cell; empty for an untouched case."""
    done = record.workaround
    if not done:
        return ""
    after = _state_text(done["after"]) if done["after"] else "unchanged"
    text = f"{_state_text(done['before'])} \u2192 {after} ({done['result']})"
    if done.get("cause"):
        text += f": {done['cause']}"
    files = [p.get("file") or p.get("connection") for p in done.get("persisted", []) if p.get("action") != "unchanged"]
    return text + (f"; persisted: {', '.join(map(str, files))}" if files else "")


def boot_text(record: Row) -> str:
    """SG at the next boot, for a cell: ``off (/etc/…:3)``, ``default``, ``undetermined: why``; empty when not read."""
    if record.boot_sg is None:
        return f"undetermined: {record.boot_sg_problem}" if record.boot_sg_problem else ""
    return f"{record.boot_sg} ({record.boot_sg_source})" if record.boot_sg_source else record.boot_sg


@dataclasses.dataclass(frozen=True)
class Column:
    """A column of the results table: pytest-html's report and the merged page are built from the same ones."""

    key: str  # pytest-html's data-column-type, and the cell's class col-KEY
    title: str
    value: Callable[[Row], Any]

    def text(self, record: Row | None) -> str:
        """The cell's text, not yet escaped; empty for a report that carries no row."""
        return "" if record is None else property_value(self.value(record))


COLUMNS = (
    Column("host", "Host", attrgetter("host")),
    Column("interface", "Interface", attrgetter("interface")),
    Column("driver", "Driver", attrgetter("driver")),
    Column("mtu", "MTU", attrgetter("mtu")),
    Column("sg", "SG", attrgetter("scatter_gather")),
    Column("boot", "Boot SG", boot_text),
    Column("verdict", "Verdict", attrgetter("verdict")),
)
# pytest-html shows a case's message as the case's own output; the merged page has no such place.
DETAIL_COLUMN = Column("message", "Detail", attrgetter("message"))
WORKAROUND_COLUMN = Column("workaround", "Workaround", workaround_text)


def columns(*, detail: bool = False, workaround: bool = False) -> tuple[Column, ...]:
    """The table's columns: :data:`COLUMNS`, then the detail and the workaround (when it is not off)."""
    return COLUMNS + ((DETAIL_COLUMN,) if detail else ()) + ((WORKAROUND_COLUMN,) if workaround else ())


def junit_names(record: Row) -> tuple[str, str]:
    """(classname, name) so that Jenkins shows host -> interface -> check.

    Jenkins splits a classname at its last dot into package and class, so dots in
    the interface name (VLANs such as ``eth0.100``) are replaced by a look-alike there.
    The name is distinct and readable on its own (viewers that show only names): the
    check, then the real interface name and the host.
    """
    iface = record.interface
    cls = "(host)" if iface is None else visible(iface).replace(".", ONE_DOT_LEADER)
    where = f"host {visible(record.host)}" if iface is None else f"{visible(iface)} on {visible(record.host)}"
    return f"{visible(record.host)}.{cls}", f"{CONTROL.id} scatter-gather/MTU: {where}"


def html_header_cells(workaround: bool = False) -> list[str]:
    """pytest-html's header cells for our columns."""
    return [f'<th class="sortable" data-column-type="{c.key}">{c.title}</th>' for c in columns(workaround=workaround)]


def html_row_cells(record: Row | None, workaround: bool = False) -> list[str]:
    """pytest-html's cells for a row; empty ones for a report without a row (a collection error, say)."""
    return [f'<td class="col-{c.key}">{html_text(c.text(record))}</td>' for c in columns(workaround=workaround)]


def html_test_id_cell(test_id: str) -> str:
    return f'<td class="col-testId">{html_text(test_id)}</td>'


def summary(
    records: Iterable[Row],
    *,
    scope: str,
    target: str,
    complete: bool,
    host_key_policy: str = "strict",
    workaround: str = "off",
    shard: str | None = None,
    generated: datetime.datetime | None = None,
    waivers: Waivers | None = None,
    require_applicable: bool = False,
    require_persistent: bool = False,
) -> dict[str, Any]:
    """summary.json's content. The --xennet-require-* options are ``require_*: true`` keys, only
    when on: they change what passes, and shards that differ on them are not one run
    (compliance.merge compares every such key)."""
    rows = sorted(records, key=Row.sort_key)
    counts = Counter(r.verdict for r in rows)
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "generated": (generated or datetime.datetime.now(datetime.timezone.utc)).isoformat(timespec="seconds"),
        "scope": scope,
        "target": target,
        "complete": complete,
        "host_key_policy": host_key_policy,
        "workaround": workaround,
    }
    if require_applicable:
        data["require_applicable"] = True
    if require_persistent:
        data["require_persistent"] = True
    data["shard"] = shard  # "K/N" for one shard of a split run (--xennet-shard), else null
    if waivers is not None:  # only with --xennet-waivers
        data["waivers"] = waivers.file_info()
        data["unmatched_waivers"] = unmatched_waivers(waivers, rows)
    data["counts"] = counts_of(rows, shown_verdicts(workaround, counts), waived=waivers is not None)
    data["results"] = [r.to_dict() for r in rows]
    return data


REPORT_WRITE_FAILED = 6  # exit status: the verdicts are known, but a report could not be written


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _point(key: str, plugin: Any, path: Path) -> None:
    """Where LogXML (``logfile``, a str) or pytest-html (``_report_path``, a Path) writes."""
    if key == "junit":
        plugin.logfile = str(path)
    else:
        plugin._report_path = path


def write_atomically(path: Path, write: Callable[[Path], None]) -> str | None:
    """``write(tmp)`` then rename over ``path``; None, or one line naming the file and the OS error."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        if tmp.stat().st_size == 0:
            raise OSError(errno.EIO, "nothing was written")
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return f"cannot write {path}: {exc.strerror or exc}"
    return None


def summary_text(data: Mapping[str, Any]) -> str:
    """summary.json's text: indented, each ``results`` row on a line of its own.

    json's indenting encoder is pure Python, its compact one C: at 1,000 hosts the rows took
    ≈ 55 ms indented, ≈ 20 ms one per line. A row per line also greps and diffs as a case.

    >>> print(summary_text({"schema": 2, "counts": {"error": 0}, "results": [{"host": "h1", "fixes": []}]}))
    {
      "schema": 2,
      "counts": {
        "error": 0
      },
      "results": [
        {"host": "h1", "fixes": []}
      ]
    }
    <BLANKLINE>
    """
    parts = []
    for key, value in data.items():
        if not isinstance(key, str):  # json.dumps would turn it into one; here it would be no JSON at all
            raise TypeError(f"summary keys are strings, not {key!r}")
        if key == "results" and isinstance(value, list) and value:
            rows = ",\n".join("    " + json.dumps(row, ensure_ascii=True) for row in value)
            parts.append(f"  {json.dumps(key)}: [\n{rows}\n  ]")
        else:
            parts.append(
                f"  {json.dumps(key)}: " + json.dumps(value, indent=2, ensure_ascii=True).replace("\n", "\n  ")
            )
    return "{\n" + ",\n".join(parts) + "\n}\n" if parts else "{}\n"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically, so a reader (or an interrupted run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(summary_text(data))
    os.replace(tmp, path)


class CrashCloser:
    """Ends a crashed case the way a finished one ends, after every other plugin saw the crash.

    xdist reports a case whose worker died with ``when="???"`` and nothing after it:
    pytest-html, which writes a row at the teardown report, would drop the case. A teardown
    report, sent once the crash report has gone everywhere (trylast), closes it.
    """

    def __init__(self, config: Any, reporter: AuditReporter) -> None:
        self.config = config
        self.reporter = reporter

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when != "???" or report.nodeid not in self.reporter.crashed:
            return
        closing = pytest.TestReport(
            report.nodeid, report.location, report.keywords, "passed", None, "teardown", duration=0.0
        )
        closing.node = report.node  # type: ignore[attr-defined]  # xdist's worker: the same JUnit testcase
        closing.xennet = report.xennet  # type: ignore[attr-defined]
        self.config.hook.pytest_runtest_logreport(report=closing)


def discard_stale(paths: dict[str, Path], error: str) -> None:
    """After a usage error: no older run's reports may look current.

    The older junit.xml and report.html go; where the summary's directory exists, the summary
    says why the run stopped (``"complete": false``, ``"error"``). No directory is created.
    """
    try:
        for key in ("junit", "html", "summary_html"):
            if key in paths:
                paths[key].unlink(missing_ok=True)
        if "summary_html" in paths:
            paths["summary_html"].with_name("summary.css").unlink(missing_ok=True)  # the page's stylesheet
        if paths["summary"].parent.is_dir() and paths["summary"] not in (paths["junit"], paths.get("html")):
            stopped = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            data = {
                "schema": SCHEMA,
                "generated": stopped,
                "complete": False,
                "error": error,
                "counts": {},
                "results": [],
            }
            write_json(paths["summary"], data)
    except OSError:
        pass  # the usage error is what the user must see; the directory is theirs to fix


def case_label(record: Row) -> str:
    host = printable(record.host)
    return host if record.interface is None else f"{host}|{printable(record.interface)}"


def shown_verdicts(workaround: str = "off", found: Iterable[str] = ()) -> tuple[str, ...]:
    """Verdicts every count lists: the rule's, then the workaround's (``remediated``) when it may act.

    ``none-applicable`` and ``not-persistent`` (only --xennet-require-applicable and
    --xennet-require-persistent give them) are listed when ``found`` has them.
    """
    rare = {Verdict.NONE_APPLICABLE.value, Verdict.NOT_PERSISTENT.value} - set(found)
    return tuple(v.value for v in Verdict if v.value not in rare) + added_verdicts(workaround)


def terminal_lines(
    records: Iterable[Row], workaround: str = "off", verbose: bool = False, waivers: bool = False
) -> list[str]:
    """ec2rl's ``[Diagnostic Results]`` block: a line per ``[WARN]``, ``[WAIVED]`` and ``[ERROR]`` case, then counts.

    At fleet scale the passing cases would drown the rest: their ``[SUCCESS]`` lines are
    listed only when ``verbose`` (pytest's ``-v``), or when the workaround changed something
    there (a change to a host is always shown). ``waivers``: the counts end with ``waived``.
    """
    rows = sorted(records, key=Row.sort_key)
    lines = ["----------[Diagnostic Results]----------"]
    hidden = 0
    for record in rows:
        tag = TAGS.get(record.verdict)
        if tag is None:
            continue
        if tag == "SUCCESS" and not verbose and not record.workaround:
            hidden += 1
            continue
        if is_waived(record):
            tag = "WAIVED"
        lines.append(f"[{tag}] {case_label(record)}: {printable(record.message)}")
        if record.waiver:
            state = "waived by" if tag == "WAIVED" else "expired:"
            lines.append(
                f"-- {state} {printable(waiver_label(record.waiver))}: {printable(record.waiver['justification'])}"
            )
        if record.verdict == Verdict.SUSCEPTIBLE.value:
            enable, mtu = record.fixes
            lines.append(f"-- You can enable Scatter-Gather with '{printable(enable)}'")
            lines.append(f"-- You can set MTU with '{printable(mtu)}'")
        if record.boot_sg == "off" and record.verdict != Verdict.NOT_PERSISTENT.value:
            lines.append(f"-- at boot: {printable(boot_text(record))}")
        done = record.workaround
        if done:
            what = "would run" if done["result"] == "planned" else "ran"
            lines += [f"-- workaround {what}: {printable(c)}" for c in done["commands"]]
            if done.get("cause"):
                lines.append(f"-- workaround failed: {printable(done['cause'])}")
    if hidden:
        lines.append(f"({hidden} passing case(s) not listed: -v lists every case)")
    counts = Counter(r.verdict for r in rows)
    shown = counts_of(rows, shown_verdicts(workaround, counts), waived=waivers)
    lines.append("  ".join(f"{v}: {n}" for v, n in shown.items()))
    return lines


def unmatched_lines(unmatched: list[dict[str, Any]]) -> list[str]:
    """The terminal's list of waivers that matched no susceptible case (a typo, a host gone, an interface fixed)."""
    if not unmatched:
        return []
    lines = [f"xennet: {len(unmatched)} waiver(s) matched no susceptible case (review them):"]
    for waiver in unmatched:
        globs = f"host '{printable(waiver['host'])}', interface '{printable(waiver['interface'])}'"
        lines.append(f"  {printable(waiver_label(waiver))}: {globs}")
    return lines


def target_description(hosts: str | None) -> str:
    if not hosts:
        return "local (this machine)"
    specs = [redact(s) for s in hosts.split(",")]
    shown = ", ".join(specs[:5])
    return shown + (f" and {len(specs) - 5} more" if len(specs) > 5 else "")


def host_key_description(config: Any) -> str:
    policy = config.getoption("ssh_host_key_policy")
    if policy == "insecure":
        return "INSECURE: any host key accepted, hosts were not authenticated"
    return policy


def row_of(test_report: Any) -> Row | None:
    """The row a test report carries (``report.xennet``, in its dict form), or None."""
    data = getattr(test_report, "xennet", None)
    return None if data is None else Row.from_dict(data)


def _escape_metadata(value: Any) -> Any:
    if isinstance(value, dict):
        return {html_text(k): _escape_metadata(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_metadata(v) for v in value]
    return html_text(value)


class AuditReporter:
    """Controller-side plugin: collects every case's row and writes the reports.

    Under xdist it runs only on the controller, which receives each worker's reports
    (with their row attached as ``xennet``) through ``pytest_runtest_logreport``.
    """

    def __init__(
        self,
        config: Any,
        settings: Settings,
        summary_path: Path,
        local: bool,
        cases: Callable[[], list[Case]],
        started: Any = None,
        summary_html: Path | None = None,
        waivers: Waivers | None = None,
    ) -> None:
        self.config = config
        self.started = started  # a _pytest.timing.Instant at the run's start (before gathering)
        self.settings = settings
        self.cases = cases  # this run's cases, in the order every xdist worker collects them
        self.records: dict[str, Row] = {}
        self.workaround = settings.workaround
        self.summary_path = summary_path
        self.summary_html = summary_html  # summary.html (summary.css beside it)
        self.waivers = waivers  # --xennet-waivers, checked
        self.local = local  # every target is this machine
        self.case_of: dict[str, Case] = {}  # nodeid -> case, from what the workers collected
        self.writers: dict[str, tuple[Path, Any]] = {}  # "junit"/"html" -> (final path, the plugin that renders it)
        self.write_errors: list[str] = []
        self.crashed: set[str] = set()
        self.bugs: list[Any] = []  # reports of cases that ended in an exception of the suite itself
        config.pluginmanager.register(CrashCloser(config, self), "xennet-crash-closer")

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        # Workers collect the cases in one order (Case.sort_key): a nodeid names its case.
        self.case_of = dict(zip(ids, self.cases()))

    @pytest.hookimpl(tryfirst=True)  # before LogXML and pytest-html see the report
    def pytest_runtest_logreport(self, report: Any) -> None:
        if getattr(report, "xennet_bug", False):
            self.bugs.append(report)
        if report.when == "???" and report.nodeid in self.case_of:
            # xdist's report for a case whose worker died: whatever it said before is void.
            worker = getattr(getattr(report, "node", None), "gateway", None)
            cause = f"worker {getattr(worker, 'id', '?')} crashed while running this case"
            report.xennet_seconds = self.case_of[report.nodeid].seconds
            crashed = self.case_of[report.nodeid].record(Judgement(Verdict.ERROR, cause))
            report.xennet = dataclasses.replace(crashed, error_kind="worker-crash").to_dict()
            self.crashed.add(report.nodeid)
        elif report.nodeid in self.crashed:
            return  # the crash decides this case's row
        elif report.nodeid in self.records:
            return  # the row is final after setup, where the case is judged (and acted on)
        record = row_of(report)
        if record is None:
            return
        first = report.nodeid not in self.records  # not so only for a crash after setup
        self.records[report.nodeid] = record
        xml = self.config.stash.get(xml_key, None)
        if xml is not None:
            # Done here on the controller: record_xml_attribute is a no-op on xdist workers,
            # and record_property warns under junit_family=xunit2 (pytest's default).
            classname, name = junit_names(record)
            reporter = xml.node_reporter(report)
            reporter.add_attribute("classname", classname)
            reporter.add_attribute("name", name)
            if first:
                # The case's time is its host's gathering time (plus its own phases, which LogXML adds).
                reporter.duration += float(getattr(report, "xennet_seconds", 0.0) or 0.0)
                for prop, value in junit_properties(record):
                    reporter.add_property(prop, value)

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_report_title(self, report: Any) -> None:
        report.title = f"{CONTROL.id}: xen-netfront scatter-gather/MTU compliance"

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells[2:2] = html_header_cells(self.workaround != "off")

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_row(self, report: Any, cells: list[str]) -> None:
        # pytest-html inserts the test id as raw HTML; hostile interface names are in it.
        test_id = report.nodeid + ("" if report.when == "call" else f"::{report.when}")
        cells[1] = html_test_id_cell(test_id)
        cells[2:2] = html_row_cells(row_of(report), self.workaround != "off")

    @pytest.hookimpl(optionalhook=True)
    def pytest_metadata(self, metadata: dict[str, Any], config: Any) -> None:
        metadata["Audit target"] = target_description(config.option.hosts)
        metadata["Scope"] = config.getoption("xennet_scope")
        metadata["Check"] = f"{CONTROL.id}: {CONTROL.title}"
        metadata["Host keys"] = host_key_description(config)
        # pytest-html 4.2 renders environment keys and values as raw HTML.
        escaped = _escape_metadata(dict(metadata))
        metadata.clear()
        metadata.update(escaped)

    def _summary(self, exitstatus: int) -> dict[str, Any]:
        cases = self.cases()
        complete = exitstatus != 2 and not self.crashed and len(self.records) >= len(cases)
        rows = list(self.records.values())
        if exitstatus == 2:
            # Interrupted: the hosts gathered by then keep their (audit-only) verdicts, judged as the run
            # judges them (the next boot too, under --xennet-require-persistent); the others say why they have none.
            seen = {r.sort_key() for r in rows}
            rows += [row for c in cases if (row := self._unrun(c)).sort_key() not in seen]
        return summary(
            rows,
            scope=self.settings.scope,
            target="local" if self.local else "remote",
            complete=complete,
            host_key_policy=self.settings.host_key_policy,
            workaround=self.workaround,
            shard=str(self.settings.shard) if self.settings.shard else None,
            waivers=self.waivers,
            require_applicable=self.settings.require_applicable,
            require_persistent=self.settings.require_persistent,
        )

    def _unrun(self, case: Case) -> Row:
        """The row of a case the run did not reach: its judgement alone, no workaround, no waiver."""
        judgement = case.judge(self.settings.scope)
        row = case.record(judgement)
        return rule.at_boot(judgement, row)[1] if self.settings.require_persistent else row

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: Any) -> None:
        """Take over when the JUnit and HTML reports reach the disk (see :meth:`pytest_sessionfinish`).

        LogXML and pytest-html still build them; they write to /dev/null, which cannot fail.
        """
        xml = self.config.stash.get(xml_key, None)
        if xml is not None:
            self.writers["junit"] = (Path(xml.logfile), xml)
            if self.started is not None:  # the suite's time is the run's wall time, gathering included
                xml.suite_start = self.started
        for plugin in self.config.pluginmanager.get_plugins():
            if type(plugin).__module__.startswith("pytest_html.") and hasattr(plugin, "_report_path"):
                self.writers["html"] = (Path(plugin._report_path), plugin)
        for key, (_, plugin) in self.writers.items():
            _point(key, plugin, Path(os.devnull))

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_sessionfinish(self, session: Any, exitstatus: int) -> Generator[None, None, None]:
        """Write every report, each on its own: atomically (a temporary file, then a rename), so
        no half-written or empty file is left, and one that fails neither stops the others nor
        reads as a verdict: it is a line naming the file and the error, and exit status 6."""
        # LogXML's own writer, pointed at /dev/null, renders no case: only the real file below
        # holds them (rendering the fleet's cases twice cost ≈ 0.1 s at 1,000 hosts).
        xml = self.writers.get("junit", (None, None))[1]
        cases = xml.node_reporters_ordered if xml is not None else []
        try:
            if xml is not None:
                xml.node_reporters_ordered = []
            result = yield
        finally:
            if xml is not None:
                xml.node_reporters_ordered = cases + xml.node_reporters_ordered  # and any case since
        if self.config.option.collectonly:
            return result
        data = self._summary(int(session.exitstatus))
        for key, (path, plugin) in list(self.writers.items()):
            error = write_atomically(path, functools.partial(self._render, key, plugin))
            if error is None:
                _point(key, plugin, path)  # its "generated ... file" line names the real file
            else:
                self.write_errors.append(error)
                self.config.pluginmanager.unregister(plugin)  # nor may it claim a file it did not write
        if self.summary_html is not None:
            from compliance import summary_html  # imports this module

            self.write_errors += summary_html.write(self.summary_html, data)
        text = summary_text(data)
        error = write_atomically(self.summary_path, lambda tmp: _write_text(tmp, text))
        if error is not None:
            self.write_errors.append(error)
        if self.write_errors and int(session.exitstatus) in (0, 1):
            # Only over a verdict: an interrupt (2) or an internal error (3) says more.
            session.exitstatus = REPORT_WRITE_FAILED
        return result

    @staticmethod
    def _render(key: str, plugin: Any, tmp: Path) -> None:
        """Have LogXML or pytest-html render its report into ``tmp``."""
        _point(key, plugin, tmp)
        try:
            plugin.pytest_sessionfinish() if key == "junit" else plugin._generate_report()
        finally:
            _point(key, plugin, Path(os.devnull))

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int) -> None:
        verbose = (self.config.option.verbose or 0) > 0
        waivers = self.waivers is not None
        for line in terminal_lines(self.records.values(), self.workaround, verbose=verbose, waivers=waivers):
            terminalreporter.write_line(line)
        if self.waivers is not None and not self.config.option.collectonly:
            for line in unmatched_lines(unmatched_waivers(self.waivers, self.records.values())):
                terminalreporter.write_line(line, yellow=True)
        if self.bugs and self.config.option.tbstyle == "no":
            # pytest shows no traceback under --tb=no, the audit's default: a bug's must still be seen.
            terminalreporter.write_line(
                f"xennet: {len(self.bugs)} case(s) ended in an error of the suite itself (a bug: "
                "please report it with the traceback below)",
                red=True,
            )
            for bug in self.bugs:
                terminalreporter.write_sep("_", f"{bug.nodeid} ({bug.when})", red=True)
                for line in bug.longreprtext.splitlines():
                    terminalreporter.write_line(printable(line))
        if int(exitstatus) == 2:
            terminalreporter.write_line("the run was interrupted: reports hold only what finished", red=True)
        if self.crashed:
            terminalreporter.write_line(
                f"{len(self.crashed)} case(s) lost with a crashed worker: errors in every report", red=True
            )
        for error in self.write_errors:
            terminalreporter.write_line(error, red=True)
        if self.config.option.collectonly:
            terminalreporter.write_line("--collect-only: no report was written")
        elif all(not e.startswith(f"cannot write {self.summary_path}:") for e in self.write_errors):
            terminalreporter.write_line(f"summary: {self.summary_path}")
