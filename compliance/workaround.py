"""The optional workaround: turn scatter-gather on where XENNET-01 found an interface susceptible.

Policy, in the order it is applied to each *susceptible* interface (nothing else is touched):

1. ``--xennet-workaround=off`` (default): change nothing.
2. ``dry-run``: record the exact commands that ``apply`` would run; change nothing.
3. ``apply``, as root or through testinfra's ``--sudo``:
   read the interface again (``not-needed`` if it is mitigated by now);
   ``ethtool -K IF sg on``; read again; only if SG is still off **and** ``--xennet-allow-mtu``
   **and** the device's max MTU allows it, ``ip link set dev IF mtu 9001``; read again.
   Remediated only if the last read is mitigated: the re-read is trusted, never an exit code.
4. ``--xennet-persist`` (with apply, once SG is on): a udev rule for xen-netfront (``vif``)
   interfaces, plus the host's own network configuration where it has one for the interface
   (NetworkManager, else RHEL ifcfg, else Debian ifupdown). Files the suite did not create
   are backed up first; a line that is already there is never written again.

A host where privilege fails (sudo refuses or wants a password, or not root without ``--sudo``)
gets no command at all. Interface names reach commands only as quoted arguments.
The boot-configuration edits of ``--xennet-persist`` live in :mod:`compliance.persist`.

>>> render(["/usr/sbin/ethtool", "-K", "a;b", "sg", "on"], sudo=True)
"sudo /usr/sbin/ethtool -K 'a;b' sg on"
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import shlex
from collections.abc import Callable, Sequence
from typing import Any

from compliance import persist
from compliance.options import WORKAROUND_MODES
from compliance.probe import PROBE_COMMAND, PROBE_INPUT, InterfaceFacts, ProbeError, excerpt, last_line, parse_probe
from compliance.row import Row
from compliance.rule import JUMBO_MTU, XEN_DRIVERS, Judgement, Verdict, judge
from compliance.targets import Target

MODES = WORKAROUND_MODES
# The workaround's verdict, never the rule's (which judges a state, not who fixed it): a
# susceptible interface that the workaround fixed, verified by reading it again.
REMEDIATED = "remediated"

# `ip` is in /sbin on older distros and outside non-root PATHs; exec keeps argv intact.
_IP_SCRIPT = (
    'for c in "$(command -v ip 2>/dev/null)" /sbin/ip /usr/sbin/ip; do '
    '[ -n "$c" ] && [ -x "$c" ] && exec "$c" "$@"; done; echo "ip: command not found" >&2; exit 127'
)


class WorkaroundError(Exception):
    """One line, safe to show, naming why the workaround stopped."""


# --------------------------------------------------------------------------- pure parts


def state(iface: InterfaceFacts | None) -> dict[str, Any] | None:
    if iface is None:
        return None
    return {"scatter_gather": iface.sg_state, "sg_fixed": iface.sg_fixed, "mtu": iface.mtu}


def sg_argv(ethtool: str, name: str) -> list[str]:
    return [ethtool, "-K", name, "sg", "on"]


def mtu_argv(name: str) -> list[str]:
    return ["ip", "link", "set", "dev", name, "mtu", str(JUMBO_MTU)]


def render(argv: Sequence[str], sudo: bool = False) -> str:
    """The command as a user would type it (names quoted)."""
    return ("sudo " if sudo else "") + shlex.join(argv)


def parse_max_mtu(ip_d_link_output: str) -> int | None:
    """``maxmtu N`` from ``ip -d link show`` (iproute2 >= 4.19); None when absent."""
    match = re.search(r"\bmaxmtu (\d+)\b", ip_d_link_output)
    return int(match.group(1)) if match else None


def mtu_step(allow_mtu: bool, after_sg: InterfaceFacts, max_mtu: int | None) -> str | None:
    """Why the MTU step must not run, or None when it may. Fails closed on an unknown maximum."""
    if after_sg.scatter_gather:
        return "scatter-gather is on"
    if not allow_mtu:
        return "--xennet-allow-mtu was not given"
    if after_sg.driver in XEN_DRIVERS:
        # xennet_change_mtu: with SG off, anything above 1500 is EINVAL. Not worth trying.
        return "xen-netfront refuses an MTU above 1500 while scatter-gather is off"
    if max_mtu is None:
        return "the device's max MTU cannot be read (needs iproute2 4.19 or later)"
    if max_mtu < JUMBO_MTU:
        return f"the device's max MTU is {max_mtu}"
    return None


def complaint_of(said: Any) -> str:
    """A command's own last words, or its exit status when it said nothing."""
    text = said.stderr + said.stdout
    return last_line(text) if text.strip() else f"exit {said.rc}"


# --------------------------------------------------------------------------- the outcome


@dataclasses.dataclass
class Outcome:
    """What the workaround did to one interface: the ``workaround`` object of every report."""

    mode: str
    result: str = "planned"  # applied | planned | failed | not-needed
    commands: list[str] = dataclasses.field(default_factory=list)
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    persisted: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    cause: str | None = None  # one line, when failed
    judgement: Judgement | None = None  # the rule's verdict on the final state
    remediated: bool = False  # the fix was verified by a re-read (persisting it may still fail)
    final: InterfaceFacts | None = None  # the last read of the interface (boot_sg included), not in the reports' object

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "result": self.result,
            "commands": list(self.commands),
            "before": self.before,
            "after": self.after,
            "persisted": list(self.persisted),
            "cause": self.cause,
        }

    @property
    def failed(self) -> bool:
        return self.result == "failed"

    @property
    def verdict(self) -> str:
        """The case's verdict in the reports: ``remediated`` once the fix is verified, else the rule's."""
        if self.remediated:
            return REMEDIATED
        assert self.judgement is not None, "act() always judges the outcome"
        return self.judgement.verdict.value


def added_verdicts(mode: str) -> tuple[str, ...]:
    """The verdicts the workaround adds to the rule's in every count: ``remediated``, whenever it is on."""
    return () if mode == "off" else (REMEDIATED,)


# --------------------------------------------------------------------------- acting on a host


class HostSession:
    """One connection to one host, for every interface the workaround touches there."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._backend: Any = None
        self._privilege: str | None = None  # "ok", or why not
        self.sudo = target.sudo

    @property
    def label(self) -> str:
        return self.target.label

    def backend(self) -> Any:
        if self._backend is None:
            self._backend = self.target.connect()
        return self._backend

    def run(self, argv: Sequence[str]) -> Any:
        """Run argv; testinfra quotes every element (and adds sudo when --sudo was given)."""
        return self.backend().run(" ".join(["%s"] * len(argv)), *argv)

    def sh(self, script: str, *args: str) -> Any:
        return self.run(["sh", "-c", script, "sh", *args])

    def render(self, argv: Sequence[str]) -> str:
        return render(argv, self.sudo)

    def check_privilege(self) -> None:
        """Root (directly or through sudo), or a one-line reason; asked once per host."""
        if self._privilege is None:
            self._privilege = self._ask_privilege()
        if self._privilege != "ok":
            raise WorkaroundError(self._privilege)

    def _ask_privilege(self) -> str:
        try:
            result = self.run(["id", "-u"])
        except Exception as exc:
            from compliance.gather import describe_error

            return f"cannot connect to {self.label}: {describe_error(exc, self.target, doing='running id -u')}"
        stderr = result.stderr
        from compliance.backends import sudo_refusal

        if sudo_refusal(result.stderr_bytes.decode("utf-8", "backslashreplace")) is not None:
            return f"sudo requires a password on {self.label} (or the user has no sudo rights there)"
        if "sudo:" in stderr or result.rc != 0:
            return f"cannot run commands as root on {self.label}: {last_line(stderr)}"
        uid = result.stdout.strip()
        if uid != "0":
            how = "sudo gave" if self.sudo else "logged in as"
            hint = "" if self.sudo else ": pass --sudo, or log in as root"
            return f"not root on {self.label} ({how} uid {excerpt(uid)}){hint}"
        return "ok"

    def read(self, name: str) -> tuple[str, InterfaceFacts]:
        """(ethtool path, the interface's facts), from the probe and its own parser."""
        result = self.backend().run_script(PROBE_COMMAND, PROBE_INPUT)  # through sudo when --sudo
        try:
            facts = parse_probe(result.stdout)
        except ProbeError as exc:
            raise WorkaroundError(f"cannot read the state again: {exc}") from None
        for iface in facts.interfaces:
            if iface.name == name:
                if iface.problem:
                    raise WorkaroundError(f"cannot read the state again: {iface.problem}")
                return facts.ethtool or "ethtool", iface
        raise WorkaroundError(f"{excerpt(name)} is gone")

    def close(self) -> None:
        self.target.close()
        self._backend = None


class Remediator:
    """Session-wide: the mode, and one HostSession per host this process acts on."""

    def __init__(
        self,
        mode: str,
        targets: Callable[[], Sequence[Target]],
        *,
        allow_mtu: bool = False,
        persist: bool = False,
        scope: str = "xen",
        sudo: bool = False,
        now: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown workaround mode {mode!r}")
        self.mode = mode
        self.allow_mtu = allow_mtu
        self.persist = persist
        self.scope = scope
        self.sudo = sudo
        self._targets_factory = targets
        self._targets: dict[str, Target] | None = None
        self._sessions: dict[str, HostSession] = {}
        self._now = now or (lambda: datetime.datetime.now(datetime.timezone.utc))

    def session(self, label: str) -> HostSession:
        if label not in self._sessions:
            if self._targets is None:  # built only when some case needs acting
                self._targets = {t.label: t for t in self._targets_factory()}
            if label not in self._targets:
                raise WorkaroundError(f"{label} is not among this run's hosts")
            self._sessions[label] = HostSession(self._targets[label])
        return self._sessions[label]

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()

    # ---- the policy -----------------------------------------------------

    def act(self, host: str, iface: InterfaceFacts, ethtool: str | None, judgement: Judgement) -> Outcome | None:
        """The workaround for one case; None when the case is not to be touched."""
        if self.mode == "off" or judgement.verdict is not Verdict.SUSCEPTIBLE:
            return None
        if self.mode == "dry-run":
            return self._plan(iface, ethtool or "ethtool", judgement, self._sudo_on(host))
        outcome = Outcome(self.mode, before=state(iface))
        try:
            self._apply(self.session(host), iface, judgement, outcome)
        except (WorkaroundError, persist.PersistError) as exc:
            outcome.result, outcome.cause = "failed", str(exc)
        except Exception as exc:
            outcome.result, outcome.cause = "failed", self._failure(host, exc)
        if outcome.judgement is None:
            outcome.judgement = judgement
        return outcome

    def _failure(self, host: str, exc: Exception) -> str:
        """An exception as a host's row words it (``connection refused``, ``timed out connecting``...)."""
        from compliance.gather import describe_error

        target = (self._targets or {}).get(host)
        if target is None:
            return f"{type(exc).__name__}: {excerpt(str(exc))}"
        return describe_error(exc, target, "applying the workaround")

    def _sudo_on(self, host: str) -> bool:
        """Whether apply would use sudo on this host: --sudo, or its inventory's ansible_become.

        Only the targets are expanded; nothing is contacted."""
        try:
            return self.session(host).sudo
        except WorkaroundError:
            return self.sudo

    def _plan(self, iface: InterfaceFacts, ethtool: str, judgement: Judgement, sudo: bool) -> Outcome:
        commands = [render(sg_argv(ethtool, iface.name), sudo)]
        if self.allow_mtu:
            commands.append(
                render(mtu_argv(iface.name), sudo) + f"  # only if scatter-gather stays off and max MTU >= {JUMBO_MTU}"
            )
        return Outcome("dry-run", "planned", commands, before=state(iface), judgement=judgement)

    def _apply(self, session: HostSession, gathered: InterfaceFacts, judgement: Judgement, outcome: Outcome) -> None:
        session.check_privilege()  # before any change: a refusal leaves the host untouched
        ethtool, now = session.read(gathered.name)
        outcome.before = state(now)
        fresh = judge(now, self.scope)
        if fresh.verdict is not Verdict.SUSCEPTIBLE:
            outcome.result, outcome.after, outcome.judgement = "not-needed", state(now), fresh
            return
        argv = sg_argv(ethtool, now.name)
        outcome.commands.append(render(argv, session.sudo))
        said = session.run(argv)
        _, after = session.read(now.name)
        outcome.after = state(after)
        complaint = complaint_of(said)
        if not after.scatter_gather:
            ask = self.allow_mtu and after.driver not in XEN_DRIVERS
            reason = mtu_step(self.allow_mtu, after, self._max_mtu(session, now.name) if ask else None)
            if reason is not None:
                raise WorkaroundError(
                    f"scatter-gather is still off on {excerpt(now.name)} ({complaint}); no MTU change: {reason}"
                )
            argv = mtu_argv(now.name)
            outcome.commands.append(render(argv, session.sudo))
            said = session.sh(_IP_SCRIPT, *argv[1:])
            _, after = session.read(now.name)
            outcome.after = state(after)
            complaint = complaint_of(said)
        outcome.final = after
        final = judge(after, self.scope)
        if not final.verdict.mitigated:
            raise WorkaroundError(f"{excerpt(now.name)} is still susceptible after the workaround: {complaint}")
        outcome.result, outcome.remediated = "applied", True
        outcome.judgement = Judgement(final.verdict, remediated_message(now.name, final.verdict))
        if self.persist:
            if not after.scatter_gather:
                raise WorkaroundError("MTU 9001 was set but is not persisted: only scatter-gather is")
            outcome.persisted = persist.persist(session, ethtool, now, outcome.commands, self._now)
            # Read the boot configuration back: what the reports call boot_sg is what the host now says.
            _, outcome.final = session.read(now.name)

    def _max_mtu(self, session: HostSession, name: str) -> int | None:
        result = session.sh(_IP_SCRIPT, "-d", "link", "show", "dev", name)
        return parse_max_mtu(result.stdout) if result.rc == 0 else None


def remediated_message(name: str, verdict: Verdict) -> str:
    how = "Scatter-Gather is now enabled" if verdict is Verdict.SG_ON else "MTU is now set to Jumbo-Frame size"
    return f"{how} on {excerpt(name)} by the workaround. This mitigates the bug."


def apply_to_record(record: Row, outcome: Outcome) -> Row:
    """The case's row after acting: final state and verdict, plus the ``workaround`` object."""
    changes: dict[str, Any] = {"workaround": outcome.to_dict()}
    if outcome.after is not None:
        changes.update(outcome.after)  # state()'s keys are row fields
    final = outcome.final
    if final is not None and (record.boot_sg is not None or record.boot_sg_problem is not None):
        changes.update(
            boot_sg=final.boot_sg, boot_sg_source=final.boot_sg_source, boot_sg_problem=final.boot_sg_problem
        )
    if outcome.judgement is not None:
        changes.update(verdict=outcome.verdict, message=outcome.judgement.message, fixes=outcome.judgement.fixes)
        changes["error_kind"] = (record.error_kind or "probe") if outcome.verdict == "error" else None
    return dataclasses.replace(record, **changes)
