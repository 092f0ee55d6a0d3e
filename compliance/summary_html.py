"""summary.html: a static page of summary.json, readable where scripts and inline styles are not.

Jenkins serves archived HTML under ``sandbox; default-src 'none'; img-src 'self'; style-src 'self';``:
pytest-html's page (scripts, inline styles) is blank there. This one has no script and no
inline style; its look is a stylesheet, ``summary.css``, written beside it and linked.

It is rendered by Jinja2 with autoescape from the summary dict (:func:`compliance.report.summary`),
so every string from a host is HTML-escaped; control and bidi characters are first made
visible (:func:`compliance.report.visible`), as the ``visible`` filter and on every output.

>>> page = render({"counts": {"error": 1}, "results": [{"host": "h<b>", "interface": None,
...     "verdict": "error", "message": "x\\u202e", "fixes": []}]})
>>> "h&lt;b&gt;" in page and "x\\\\u202e" in page and "<script" not in page
True
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2

from compliance.report import WAIVED, _write_text, property_value, visible, write_atomically
from compliance.rule import CONTROL
from compliance.waivers import ACTIVE

CSS_NAME = "summary.css"
TEMPLATE = "summary.html.j2"
FAILING = (
    "error",
    "susceptible",
    "not-persistent",
)  # a host with any such case is listed first (unless a waiver made it xfail)
# Run facts shown on the page, in this order (summary.json keys; absent ones are left out).
FACTS = ("generated", "scope", "target", "complete", "host_key_policy", "workaround", "shard", "shards", "error")


def _shown(value: Any) -> str:
    """Every ``{{ }}`` output: None as empty, booleans as JSON does, control/bidi characters visible."""
    return visible(property_value(value))


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("compliance", "templates"),
        autoescape=True,  # every template, whatever its name
        finalize=_shown,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["visible"] = visible
    env.filters["tojson_text"] = lambda value: json.dumps(value, ensure_ascii=False, sort_keys=True)
    return env


def stylesheet() -> str:
    return importlib.resources.files("compliance").joinpath("templates", CSS_NAME).read_text(encoding="utf-8")


def host_groups(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by host, in the summary's (natural) order, failing hosts (error, susceptible) first."""
    groups: dict[str, dict[str, Any]] = {}
    for row in results:
        host = str(row.get("host"))
        group = groups.setdefault(host, {"host": host, "rows": [], "counts": {}, "failing": False})
        group["rows"].append(row)
        verdict = str(row.get("verdict"))
        group["counts"][verdict] = group["counts"].get(verdict, 0) + 1
        waived = (row.get("waiver") or {}).get("status") == ACTIVE
        if waived:
            group["counts"][WAIVED] = group["counts"].get(WAIVED, 0) + 1
        group["failing"] |= verdict in FAILING and not waived
    return sorted(groups.values(), key=lambda g: not g["failing"])  # stable: natural order within each part


def render(summary: dict[str, Any]) -> str:
    """The page for a summary dict (summary.json's content, a shard's or a merged one)."""
    groups = host_groups(summary.get("results", []))
    facts = [(key, summary[key]) for key in FACTS if key in summary and summary[key] is not None]
    return (
        environment()
        .get_template(TEMPLATE)
        .render(
            title=f"{CONTROL.id}: xen-netfront scatter-gather/MTU compliance",
            css=CSS_NAME,
            facts=facts,
            counts=summary.get("counts", {}),
            groups=groups,
            failing_hosts=sum(g["failing"] for g in groups),
            unmatched_waivers=summary.get("unmatched_waivers"),
        )
    )


def write(path: Path, summary: dict[str, Any]) -> list[str]:
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
