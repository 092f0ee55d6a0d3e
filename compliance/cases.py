"""Cases: one per (host, interface), or one per host that could not be gathered.

>>> from compliance.gather import HostResult
>>> [c.id for c in build_cases([HostResult("web1", error="connection refused", error_kind="refused")])]
['web1']
"""

from __future__ import annotations

import dataclasses

from compliance.gather import HostResult
from compliance.probe import InterfaceFacts
from compliance.row import Row, order_key
from compliance.rule import Judgement, Verdict, judge


@dataclasses.dataclass(frozen=True)
class Case:
    host: str
    kernel: str | None = None
    interface: InterfaceFacts | None = None
    error: str | None = None
    error_kind: str | None = None  # the kind of ``error`` (gather.ERROR_KINDS)
    ethtool: str | None = None  # the host's ethtool path, for the workaround's commands
    seconds: float = 0.0  # how long gathering the host took: the JUnit case's time
    unmet: str | None = None  # --xennet-require-applicable: why this host has nothing to judge

    @property
    def id(self) -> str:
        """``HOST|IFACE``; just ``HOST`` for a host-level case. Stable across runs and workers."""
        return f"{self.host}|{self.interface.name}" if self.interface else self.host

    def judge(self, scope: str) -> Judgement:
        if self.error is not None:
            return Judgement(Verdict.ERROR, self.error)
        if self.unmet is not None:
            return Judgement(Verdict.NONE_APPLICABLE, self.unmet)
        if self.interface is None:
            # A host reached over the network shows at least the interface it was reached
            # by; seeing none means /sys could not be read as expected: doubt, not a pass.
            return Judgement(Verdict.ERROR, "no network interface besides lo in /sys/class/net")
        return judge(self.interface, scope)

    def record(self, judgement: Judgement) -> Row:
        """The case's row in every report, as the rule judged it."""
        iface = self.interface
        kind = None
        if judgement.verdict is Verdict.ERROR:
            # A host that was not gathered says why; anything else is the probe's output in doubt.
            kind = (self.error_kind or "other") if self.error is not None else "probe"
        if iface is None:
            return Row(
                self.host,
                verdict=judgement.verdict.value,
                error_kind=kind,
                message=judgement.message,
                fixes=judgement.fixes,
                kernel=self.kernel,
            )
        # The boot configuration is reported for the interfaces the rule judged (in scope, readable).
        judged = judgement.verdict not in (Verdict.NOT_APPLICABLE, Verdict.ERROR)
        return Row(
            self.host,
            iface.name,
            driver=iface.driver,
            virtual=iface.virtual,
            mtu=iface.mtu,
            scatter_gather=iface.sg_state,
            sg_fixed=iface.sg_fixed,
            boot_sg=iface.boot_sg if judged else None,
            boot_sg_source=iface.boot_sg_source if judged else None,
            boot_sg_problem=iface.boot_sg_problem if judged else None,
            verdict=judgement.verdict.value,
            error_kind=kind,
            message=judgement.message,
            fixes=judgement.fixes,
            kernel=self.kernel,
        )

    def sort_key(self) -> tuple[object, ...]:
        return order_key(self.host, self.interface.name if self.interface else None)


def build_cases(results: list[HostResult], require_applicable: str | None = None) -> list[Case]:
    """All cases, in report order, so that every xdist worker collects the same order.

    ``require_applicable`` (a scope): a host whose every interface is out of that scope gets a
    failing host-level case, naming the drivers it saw.
    """
    cases: list[Case] = []
    for result in results:
        if require_applicable and result.facts is not None and result.facts.interfaces:
            judged = [judge(iface, require_applicable).verdict for iface in result.facts.interfaces]
            if all(v is Verdict.NOT_APPLICABLE for v in judged):
                seen = sorted({i.driver or "virtual" for i in result.facts.interfaces})
                why = f"no interface in scope {require_applicable!r}: drivers seen: {', '.join(seen)}"
                cases.append(Case(result.host, kernel=result.facts.kernel, seconds=result.seconds, unmet=why))
        if result.facts is None:
            cases.append(
                Case(
                    result.host, error=result.error or "no facts", error_kind=result.error_kind, seconds=result.seconds
                )
            )
        elif not result.facts.interfaces:
            cases.append(Case(result.host, kernel=result.facts.kernel, seconds=result.seconds))
        else:
            cases.extend(
                Case(result.host, result.facts.kernel, iface, ethtool=result.facts.ethtool, seconds=result.seconds)
                for iface in result.facts.interfaces
            )
    return sorted(cases, key=Case.sort_key)
