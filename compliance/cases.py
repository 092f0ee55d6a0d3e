"""Cases: one per (host, interface), or one per host that could not be gathered.

>>> from compliance.gather import HostResult
>>> [c.id for c in build_cases([HostResult("web1", error="web1: connection refused")])]
['web1']
"""

from __future__ import annotations

import dataclasses
from typing import Any

from compliance.gather import HostResult
from compliance.probe import InterfaceFacts
from compliance.rule import Judgement, Verdict, judge


@dataclasses.dataclass(frozen=True)
class Case:
    host: str
    kernel: str | None = None
    interface: InterfaceFacts | None = None
    error: str | None = None
    ethtool: str | None = None  # the host's ethtool path, for the workaround's commands

    @property
    def id(self) -> str:
        """``HOST|IFACE``; just ``HOST`` for a host-level case. Stable across runs and workers."""
        return f"{self.host}|{self.interface.name}" if self.interface else self.host

    def judge(self, scope: str) -> Judgement:
        if self.error is not None:
            return Judgement(Verdict.ERROR, self.error)
        if self.interface is None:
            # A host reached over the network shows at least the interface it was reached
            # by; seeing none means /sys could not be read as expected: doubt, not a pass.
            return Judgement(Verdict.ERROR, "no network interface besides lo in /sys/class/net")
        return judge(self.interface, scope)

    def record(self, judgement: Judgement) -> dict[str, Any]:
        """The case's row in every report (summary.json's ``results`` schema)."""
        iface = self.interface
        return {
            "host": self.host,
            "interface": iface.name if iface else None,
            "driver": iface.driver if iface else None,
            "virtual": iface.virtual if iface else None,
            "mtu": iface.mtu if iface else None,
            "scatter_gather": iface.sg_state if iface else None,
            "sg_fixed": iface.sg_fixed if iface else None,
            "verdict": judgement.verdict.value,
            "message": judgement.message,
            "fixes": list(judgement.fixes),
            "kernel": self.kernel,
        }


def build_cases(results: list[HostResult]) -> list[Case]:
    """All cases, sorted by id so that every xdist worker collects the same order."""
    cases: list[Case] = []
    for result in results:
        if result.facts is None:
            cases.append(Case(result.host, error=result.error or f"{result.host}: no facts"))
        elif not result.facts.interfaces:
            cases.append(Case(result.host, kernel=result.facts.kernel))
        else:
            cases.extend(
                Case(result.host, result.facts.kernel, iface, ethtool=result.facts.ethtool)
                for iface in result.facts.interfaces
            )
    return sorted(cases, key=lambda c: (c.host, c.interface.name if c.interface else ""))
