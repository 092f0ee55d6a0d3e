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
from compliance.row import Row

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
    # Only with --xennet-require-persistent: mitigated now, but the boot configuration turns SG
    # off (or leaves it to a driver default the suite does not know).
    NOT_PERSISTENT = "not-persistent"
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


def at_boot(judgement: Judgement, row: Row) -> tuple[Judgement, Row]:
    """--xennet-require-persistent: a case's judgement and row once the next boot is judged too."""
    found = persistent(judgement, row)
    if found is judgement:
        return judgement, row
    kind = "probe" if found.verdict is Verdict.ERROR else None
    return found, dataclasses.replace(
        row, verdict=found.verdict.value, message=found.message, fixes=found.fixes, error_kind=kind
    )


def persistent(judgement: Judgement, row: Row) -> Judgement:
    """``--xennet-require-persistent``: a mitigated case must stay mitigated at the next boot.

    At boot SG must be ``on`` (a configuration line turns it on), or ``default`` on
    xen-netfront, whose driver turns SG on by itself (``xennet_create_dev``: ``NETIF_F_SG`` is in
    ``hw_features`` and ``features |= hw_features``; only a backend without ``feature-sg`` takes
    it away, and then it is off now too). Any other driver's default is not known here. SG
    ``[fixed]`` on cannot be turned off. A boot state the suite could not determine is an error.

    >>> on_now = Judgement(Verdict.SG_ON, "Scatter-Gather is enabled on eth0. This mitigates the bug.")
    >>> row = Row("h", "eth0", driver="xen_netfront", scatter_gather="on", boot_sg="off", boot_sg_source="/etc/x:3")
    >>> persistent(on_now, row).message
    'Scatter-Gather is enabled on eth0 now, but /etc/x:3 turns it off at boot.'
    >>> persistent(on_now, dataclasses.replace(row, boot_sg="default")).verdict
    <Verdict.SG_ON: 'sg-on'>
    """
    if not judgement.verdict.mitigated or row.interface is None:
        return judgement
    name = excerpt(row.interface)
    if row.sg_fixed and row.scatter_gather == "on":
        return judgement
    if row.boot_sg is None:
        why = row.boot_sg_problem or "the boot configuration was not read"
        return Judgement(Verdict.ERROR, f"cannot tell whether scatter-gather is on at boot on {name}: {why}")
    if row.boot_sg == "on" or (row.boot_sg == "default" and row.driver in XEN_DRIVERS):
        return judgement
    now = "Scatter-Gather is enabled" if judgement.verdict is Verdict.SG_ON else "MTU is set to Jumbo-Frame size"
    if row.boot_sg == "off":
        return Judgement(Verdict.NOT_PERSISTENT, f"{now} on {name} now, but {row.boot_sg_source} turns it off at boot.")
    driver = f"driver {excerpt(row.driver)}" if row.driver else "a virtual interface"
    return Judgement(
        Verdict.NOT_PERSISTENT,
        f"{now} on {name} now, but no boot configuration turns scatter-gather on, and the default of {driver} "
        "is not known to the suite.",
    )
