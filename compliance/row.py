"""The report row: one case's result as every report shows it.

Defined once, here, for everything that touches it: ``cases`` builds it, the workaround
updates it, ``report`` renders it (JUnit, HTML, summary.json, terminal) and ``merge``
reads it back from the shards. Its dict form is a ``results`` entry of summary.json
(keys and their order are the schema users parse), and the form in which it travels
from an xdist worker to the controller as ``report.xennet``.

>>> row = Row("web1", "eth0", driver="vif", mtu=1500, scatter_gather="off", verdict="susceptible")
>>> list(row.to_dict())
['host', 'interface', 'driver', 'virtual', 'mtu', 'scatter_gather', 'sg_fixed', 'boot_sg', 'boot_sg_source', 'boot_sg_problem', 'verdict', 'error_kind', 'message', 'fixes', 'kernel']
>>> Row.from_dict(row.to_dict()) == row
True
>>> [r.interface for r in sorted([row, Row("web1", verdict="error")], key=Row.sort_key)]
[None, 'eth0']
>>> sorted(["10.0.0.10", "10.0.0.4", "web10", "web9", "web09"], key=lambda h: order_key(h, None))
['10.0.0.4', '10.0.0.10', 'web09', 'web9', 'web10']
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Mapping
from typing import Any

_DIGITS = re.compile(r"([0-9]+)")
SPARSE_KEYS = ("workaround", "waiver")  # in a row's dict only when set: a touched case, a waived one
# Keys a row may lack: the sparse ones, and the boot_sg ones (rows written before 0.3.0 lack them).
OPTIONAL_KEYS = frozenset({*SPARSE_KEYS, "boot_sg", "boot_sg_source", "boot_sg_problem"})


def natural(text: str) -> tuple[tuple[str, int], ...]:
    """``text`` as (text, number) pairs, so that numbers compare as numbers: web9 < web10, 10.0.0.4 < 10.0.0.10."""
    parts = _DIGITS.split(text)
    # split() alternates text and digits, starting and ending with text (maybe empty).
    pairs = [(parts[i], int(parts[i + 1])) for i in range(0, len(parts) - 1, 2)]
    return (*pairs, (parts[-1], -1))


def order_key(host: str, interface: str | None) -> tuple[Any, ...]:
    """The one order of hosts, cases and rows everywhere (cases, summary, terminal, merge).

    Natural order (numbers in a name compare as numbers), ties broken by the text itself,
    so the order is total; a host's own case comes before its interfaces. Every xdist
    worker must collect the cases in the same order, and every report (shard or merged)
    lists the rows in it.
    """
    return (natural(host), host, interface is not None, natural(interface or ""), interface or "")


@dataclasses.dataclass(frozen=True)
class Row:
    """One case's row. Fields are in summary.json's key order; the values are untrusted host strings."""

    host: str
    interface: str | None = None  # None for a host-level case (unreachable host, ...)
    driver: str | None = None
    virtual: bool | None = None
    mtu: int | None = None
    scatter_gather: str | None = None  # "on", "off", or None when unknown
    sg_fixed: bool | None = None
    # SG at the next boot (compliance.boot), for an interface judged in scope: "on", "off",
    # "default", or None (not read, or undetermined: then boot_sg_problem says why).
    boot_sg: str | None = None
    boot_sg_source: str | None = None  # file:line that decides boot_sg ("on"/"off")
    boot_sg_problem: str | None = None
    verdict: str = ""  # a rule.Verdict value, or one the workaround adds ("remediated")
    error_kind: str | None = None  # for an error: a key of gather.ERROR_KINDS (schema 2); else None
    message: str = ""
    fixes: tuple[str, ...] = ()
    kernel: str | None = None
    workaround: dict[str, Any] | None = None  # workaround.Outcome.to_dict(); absent from the dict when None
    waiver: dict[str, Any] | None = None  # waivers.Decision.to_dict() of a susceptible case; absent when None

    def sort_key(self) -> tuple[Any, ...]:
        return order_key(self.host, self.interface)

    def to_dict(self) -> dict[str, Any]:
        """summary.json's ``results`` entry; ``workaround`` only for a case the workaround touched, ``waiver``
        only for a case a waiver decided."""
        data = dict(zip(ROW_KEYS, _values(self)))
        data["fixes"] = list(self.fixes)
        for key in SPARSE_KEYS:
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Row:
        """The inverse of :meth:`to_dict`. Refuses a missing or unknown key: that is another schema.

        The boot_sg keys may be missing: rows written before they were added (0.2.0) lack them.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"not a report row: {type(data).__name__}")
        missing = [n for n in ROW_KEYS if n not in data and n not in OPTIONAL_KEYS]
        unknown = [k for k in data if k not in _ROW_KEY_SET]
        if missing or unknown:
            raise ValueError(f"not a report row: missing {missing}, unknown {unknown}")
        return cls(**{**data, "fixes": tuple(data["fixes"])})


# Every row is converted at least twice per run (to the dict that travels with its report, and
# back): the field names once, not dataclasses.fields() per row.
ROW_KEYS = tuple(field.name for field in dataclasses.fields(Row))
_ROW_KEY_SET = frozenset(ROW_KEYS)
_values = operator.attrgetter(*ROW_KEYS)
