"""The rule: judge one interface's facts. Pure, no I/O.

>>> from compliance.probe import InterfaceFacts
>>> judge(InterfaceFacts("eth0", driver="xen_netfront", mtu=1500, scatter_gather=False)).verdict
<Verdict.SUSCEPTIBLE: 'susceptible'>
"""

from __future__ import annotations

import dataclasses
import enum
import shlex

from compliance.probe import InterfaceFacts, excerpt

JUMBO_MTU = 9001
# Module name, ethtool -i's "driver: vif" (the xenbus driver), and its old alias.
XEN_DRIVERS = frozenset({"xen_netfront", "vif", "netfront"})
SCOPES = ("xen", "all")


@dataclasses.dataclass(frozen=True)
class Control:
    """One check, described the way a policy document would."""

    id: str
    title: str
    rationale: str
    remediation: str


CONTROL = Control(
    id="XENNET-01",
    title="xen-netfront interfaces have scatter-gather on or a jumbo MTU",
    rationale=(
        "On unpatched kernels the paravirtual Xen network driver (xen-netfront) can drop "
        "packets when an interface has scatter-gather off and an MTU below 9001."
    ),
    remediation=(
        "Turn scatter-gather on with `ethtool -K IF sg on` (the real lever: xen-netfront "
        "refuses an MTU above 1500 while SG is off), or set the MTU to 9001."
    ),
)


class Verdict(str, enum.Enum):
    SG_ON = "sg-on"
    JUMBO_MTU = "jumbo-mtu"
    SUSCEPTIBLE = "susceptible"
    NOT_APPLICABLE = "not-applicable"
    # Only with --xennet-require-applicable: a host none of whose interfaces is in scope
    # (an AMI validated on a Nitro builder would otherwise pass with nothing checked).
    NONE_APPLICABLE = "none-applicable"
    ERROR = "error"

    @property
    def mitigated(self) -> bool:
        return self in (Verdict.SG_ON, Verdict.JUMBO_MTU)


@dataclasses.dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    message: str
    fixes: tuple[str, ...] = ()


def fix_commands(name: str) -> tuple[str, ...]:
    """The two workarounds, with the name quoted for a shell."""
    quoted = shlex.quote(name)
    return (f"sudo ethtool -K {quoted} sg on", f"sudo ip link set dev {quoted} mtu {JUMBO_MTU}")


def judge(iface: InterfaceFacts, scope: str = "xen") -> Judgement:
    """Judge one interface. Anything undetermined is an error, never a pass."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    name = excerpt(iface.name)
    if scope == "xen":
        if iface.driver is None and not iface.virtual and iface.problem is None:
            return Judgement(Verdict.ERROR, f"cannot read the driver of {name}")
        if iface.driver is None and iface.virtual:
            return Judgement(Verdict.NOT_APPLICABLE, f"{name} is virtual: not affected")
        if iface.driver is not None and iface.driver not in XEN_DRIVERS:
            return Judgement(Verdict.NOT_APPLICABLE, f"{name} uses {excerpt(iface.driver)}: not affected")
    if iface.problem is not None:
        return Judgement(Verdict.ERROR, iface.problem)
    if iface.scatter_gather is None or iface.mtu is None:
        return Judgement(Verdict.ERROR, f"cannot determine scatter-gather and MTU of {name}")
    if iface.scatter_gather:
        return Judgement(Verdict.SG_ON, f"Scatter-Gather is enabled on {name}. This mitigates the bug.")
    if iface.mtu >= JUMBO_MTU:
        return Judgement(Verdict.JUMBO_MTU, f"MTU is set to Jumbo-Frame size on {name}. This mitigates the bug.")
    return Judgement(
        Verdict.SUSCEPTIBLE,
        f"Scatter-Gather is off and MTU is set below {JUMBO_MTU} on {name}. "
        "You are potentially susceptible to the bug.",
        fix_commands(iface.name),
    )
