"""summary.html: a static page of summary.json, readable where scripts and inline styles are not.

Jenkins serves archived HTML under ``sandbox; default-src 'none'; img-src 'self'; style-src 'self';``:
pytest-html's page (scripts, inline styles) is blank there. This one has no script and no
inline style; its look is a stylesheet, ``summary.css``, written beside it and linked.

It is rendered by Jinja2 with autoescape from the summary dict (:func:`compliance.report.summary`),
so every string from a host is HTML-escaped; control and bidi characters are first made
visible (:func:`compliance.report.visible`), here and again on every output (``finalize``).

At fleet scale (10,000 cases: ``bench/summary_page.py``) the page stays light: everything is
computed here (:class:`Host`, :class:`Case`), the template only prints; passing hosts are one
line each, their interfaces in a closed ``<details>`` that the browser does not lay out; and
every host is ``content-visibility: auto`` (summary.css), so only the hosts on screen are laid out.

>>> page = render({"counts": {"error": 1}, "results": [{"host": "h<b>", "interface": None,
...     "verdict": "error", "message": "x\\u202e", "fixes": []}]})
>>> "h&lt;b&gt;" in page and "x\\\\u202e" in page and "<script" not in page
True
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from compliance.report import WAIVED, _write_text, property_value, visible, write_atomically
from compliance.rule import CONTROL
from compliance.waivers import ACTIVE

CSS_NAME = "summary.css"
TEMPLATE = "summary.html.j2"
# Hosts are laid out by the browser in chunks, each ``content-visibility: auto`` (summary.css): only
# the chunks on screen are laid out, and the browser watches a few hundred chunks, not every host.
FAILING_CHUNK, PASSING_CHUNK = 20, 100
INDEX_OPEN_MAX = 100  # the index of failing hosts is open up to this many; beyond, one click opens it
FAILING = ("error", "susceptible", "none-applicable", "not-persistent")  # a failing case's verdicts: host listed first
# Run facts shown on the page, in this order (summary.json keys; absent ones are left out).
FACTS = (
    "generated",
    "scope",
    "target",
    "complete",
    "host_key_policy",
    "workaround",
    "require_applicable",
    "require_persistent",
    "shard",
    "shards",
    "error",
)


def _shown(value: Any) -> Any:
    """Every ``{{ }}`` output: None as empty, booleans as JSON does, control/bidi characters visible.

    Markup (a macro's output: the template's own, its values already shown so) is left as it is.
    """
    if isinstance(value, markupsafe.Markup):
        return value
    return text(value)


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("compliance", "templates"),
        autoescape=True,  # every template, whatever its name
        finalize=_shown,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def stylesheet() -> str:
    return importlib.resources.files("compliance").joinpath("templates", CSS_NAME).read_text(encoding="utf-8")


def text(value: Any) -> str:
    """A value as the page shows it (before autoescape): '' for None, control/bidi characters visible."""
    if type(value) is str and value.isascii() and value.isprintable():  # most values: nothing to do
        return value
    return visible(property_value(value))


def waived(row: Mapping[str, Any]) -> bool:
    """Whether an active waiver decided the case (pytest's xfail: it does not fail the run)."""
    return (row.get("waiver") or {}).get("status") == ACTIVE


def fails(row: Mapping[str, Any]) -> bool:
    """Whether a case fails (as the audit's test does): a failing verdict, or a workaround that failed."""
    if waived(row):
        return False
    return row.get("verdict") in FAILING or (row.get("workaround") or {}).get("result") == "failed"


@dataclasses.dataclass(frozen=True)
class Case:
    """One row as the page shows it. Every string is ``text()``: the template only escapes and prints."""

    interface: str
    driver: str
    mtu: str
    sg: str
    verdict: str  # with the error kind: "error (timeout)"
    facts: str  # "driver vif, MTU 1500, SG on": the three cells, as a passing host's line shows them
    failing: bool
    message: str
    fix: tuple[str, ...]  # the fix commands (either one fixes the interface), shown one per line
    notes: tuple[tuple[str, tuple[str, ...], bool], ...]  # the Details cell's other entries: (label, lines, is code)

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Case:
        interface = row.get("interface")
        kind = row.get("error_kind")
        return cls(
            interface=text(interface) if interface is not None else "(host)",
            driver=text(row.get("driver")),
            mtu=text(row.get("mtu")),
            sg=text(row.get("scatter_gather")),
            verdict=text(row.get("verdict")) + (f" ({text(kind)})" if kind else ""),
            facts=", ".join(
                f"{label} {text(row[key])}"
                for label, key in (("driver", "driver"), ("MTU", "mtu"), ("SG", "scatter_gather"))
                if row.get(key) is not None
            ),
            failing=fails(row),
            message=text(row.get("message")),
            fix=tuple(text(c) for c in row.get("fixes") or ()) if row.get("verdict") == "susceptible" else (),
            notes=tuple(notes(row)),
        )


def notes(row: Mapping[str, Any]) -> Iterable[tuple[str, tuple[str, ...], bool]]:
    """The Details cell's entries after the message: (label, lines, shown as code), each line ``text()``.

    A per-case field of summary.json that people should see (the workaround's outcome, and others
    to come) is one more ``yield`` here: no new column, nothing in the template.
    """
    if row.get("boot_sg") is not None:
        source = row.get("boot_sg_source")
        yield "Boot SG", (text(row["boot_sg"]) + (f" ({text(source)})" if source else ""),), False
    elif row.get("boot_sg_problem"):
        yield "Boot SG", ("undetermined: " + text(row["boot_sg_problem"]),), False
    waiver = row.get("waiver")
    if waiver:
        label = "Waived" if waiver.get("status") == ACTIVE else "Expired waiver"
        yield (
            label,
            (
                f"#{text(waiver.get('index'))} ({text(waiver.get('source'))}, {text(waiver.get('owner'))}, "
                f"expires {text(waiver.get('expires'))}): {text(waiver.get('justification'))}",
            ),
            False,
        )
    done = row.get("workaround")
    if done:
        yield "Workaround", (f"{text(done.get('mode'))}: {text(done.get('result'))}",), False
        if done.get("commands"):
            yield "Commands", tuple(text(c) for c in done["commands"]), True
        yield "Before", (as_json(done.get("before")),), True
        yield "After", (as_json(done.get("after")),), True
        if done.get("persisted"):
            yield "Persisted", (as_json(done["persisted"]),), True
        if done.get("cause"):
            yield "Cause", (text(done["cause"]),), False


def as_json(value: Any) -> str:
    return visible(json.dumps(value, ensure_ascii=False, sort_keys=True))


@dataclasses.dataclass(frozen=True)
class Host:
    """A host's cases, as a section (failing) or one line that opens (passing)."""

    anchor: str  # "h1", "h2"...: an id that no host name can break
    name: str
    failing: bool
    counts: str  # "4 cases: susceptible 1, sg-on 3"
    worst: str  # its failing verdicts ("susceptible", "error (timeout)"), for the index
    kernel: str
    cases: tuple[Case, ...]


def host_groups(results: Iterable[Mapping[str, Any]]) -> list[Host]:
    """Rows grouped by host, in the summary's (natural) order, failing hosts first."""
    rows: dict[str, list[Mapping[str, Any]]] = {}
    for row in results:
        rows.setdefault(str(row.get("host")), []).append(row)
    hosts = [host(k, name, group) for k, (name, group) in enumerate(rows.items(), start=1)]
    return sorted(hosts, key=lambda h: not h.failing)  # stable: natural order within each part


def host(k: int, name: str, rows: list[Mapping[str, Any]]) -> Host:
    cases = tuple(Case.of(row) for row in rows)
    # Its failing verdicts first, then the others, each in the order first seen.
    counts = Counter(sorted((str(row.get("verdict")) for row in rows), key=lambda v: v not in FAILING))
    if any(waived(row) for row in rows):
        counts[WAIVED] = sum(waived(row) for row in rows)
    kernels = dict.fromkeys(text(row.get("kernel")) for row in rows if row.get("kernel") is not None)
    return Host(
        anchor=f"h{k}",
        name=text(name),
        failing=any(c.failing for c in cases),
        counts=plural(len(rows), "case") + ": " + ", ".join(f"{text(v)} {n:,}" for v, n in counts.items()),
        worst=", ".join(dict.fromkeys(c.verdict for c in cases if c.failing)),
        kernel=", ".join(kernels),
        cases=cases,
    )


def chunks(hosts: list[Host], size: int) -> list[list[Host]]:
    return [hosts[i : i + size] for i in range(0, len(hosts), size)]


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def outcome(hosts: list[Host], cases: int) -> str:
    failing = sum(h.failing for h in hosts)
    if not hosts:
        return "No case was reported."
    if not failing:
        return f"All {plural(len(hosts), 'host')} pass ({plural(cases, 'case')})."
    return f"{failing:,} of {plural(len(hosts), 'host')} failing ({plural(cases, 'case')})."


def render(summary: Mapping[str, Any]) -> str:
    """The page for a summary dict (summary.json's content, a shard's or a merged one)."""
    results = summary.get("results", [])
    hosts = host_groups(results)
    counts = summary.get("counts", {})
    kinds = Counter(text(r.get("error_kind")) for r in results if r.get("verdict") == "error" and r.get("error_kind"))
    failing, passing = [h for h in hosts if h.failing], [h for h in hosts if not h.failing]
    return (
        environment()
        .get_template(TEMPLATE)
        .render(
            title=f"{CONTROL.id}: xen-netfront scatter-gather/MTU compliance",
            css=CSS_NAME,
            outcome=outcome(hosts, len(results)),
            facts=[(key, text(summary[key])) for key in FACTS if summary.get(key) is not None],
            counts=[(text(v), f"{n:,}", v in FAILING and n > 0) for v, n in counts.items()],
            error_kinds=[(k, f"{n:,}") for k, n in kinds.most_common()],
            failing=failing,
            failing_chunks=chunks(failing, FAILING_CHUNK),
            failing_count=f"{len(failing):,}",
            index_open=len(failing) <= INDEX_OPEN_MAX,
            passing=passing,
            passing_chunks=chunks(passing, PASSING_CHUNK),
            passing_count=f"{len(passing):,}",
            unmatched_waivers=[
                (
                    text(w.get("index")),
                    text(w.get("source")),
                    text(w.get("host")),
                    text(w.get("interface")),
                    text(w.get("owner")),
                    text(w.get("expires")),
                )
                for w in summary.get("unmatched_waivers") or ()
            ],
        )
    )


def write(path: Path, summary: Mapping[str, Any]) -> list[str]:
    """Write ``summary.css`` beside ``path``, then the page, each atomically; the errors, one line each."""
    try:
        css, page = stylesheet(), render(summary)
    except (OSError, jinja2.TemplateError) as exc:  # a broken install: the other reports are still written
        return [f"cannot write {path}: {exc}"]
    errors = [
        write_atomically(path.with_name(CSS_NAME), lambda tmp: _write_text(tmp, css)),
        write_atomically(path, lambda tmp: _write_text(tmp, page)),
    ]
    return [e for e in errors if e is not None]
