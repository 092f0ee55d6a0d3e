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

>>> ifcfg_with_sg('DEVICE=eth0\\nONBOOT=yes\\n')
'DEVICE=eth0\\nONBOOT=yes\\nETHTOOL_OPTS="-K ${DEVICE} sg on"\\n'
>>> interfaces_with_sg('auto eth0\\niface eth0 inet dhcp\\n', 'eth0')
'auto eth0\\niface eth0 inet dhcp\\n    offload-sg on\\n'
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import re
import shlex
from collections.abc import Callable, Sequence
from typing import Any

from compliance import gather
from compliance.probe import PROBE_COMMAND, InterfaceFacts, ProbeError, excerpt, parse_probe
from compliance.row import Row
from compliance.rule import JUMBO_MTU, XEN_DRIVERS, Judgement, Verdict, judge

MODES = ("off", "dry-run", "apply")
# The workaround's verdict, never the rule's (which judges a state, not who fixed it): a
# susceptible interface that the workaround fixed, verified by reading it again.
REMEDIATED = "remediated"
UDEV_RULE_FILE = "/etc/udev/rules.d/70-xennet-compliance-sg.rules"
# Not next to the originals: ifupdown sources every file of interfaces.d, network-scripts
# reads every ifcfg-* it does not recognise as a backup.
BACKUP_DIR = "/etc/xennet-compliance/backups"
IFCFG_DIR = "/etc/sysconfig/network-scripts"
IFUPDOWN_FILE = "/etc/network/interfaces"
IFUPDOWN_DIR = "/etc/network/interfaces.d"
_SAFE_PATH = re.compile(r"/[A-Za-z0-9_./+-]+")

# `ip` is in /sbin on older distros and outside non-root PATHs; exec keeps argv intact.
_IP_SCRIPT = (
    'for c in "$(command -v ip 2>/dev/null)" /sbin/ip /usr/sbin/ip; do '
    '[ -n "$c" ] && [ -x "$c" ] && exec "$c" "$@"; done; echo "ip: command not found" >&2; exit 127'
)

# What persistence needs to know, in one command: NetworkManager's connection for the
# interface and the files the suite may edit, base64-framed (contents are untrusted).
_DISCOVER_SCRIPT = r"""
n=$1; rule=$2; ifcfg=$3; main=$4; dir=$5
dump() { if [ -f "$1" ]; then printf 'file\t%s\t' "$1"; base64 < "$1" | tr -d '\n'; printf '\n'; fi; }
if command -v nmcli >/dev/null 2>&1; then
  c=$(nmcli -g GENERAL.CONNECTION device show "$n" 2>/dev/null)
  if [ -n "$c" ]; then
    printf 'nm\t%s\n' "$(printf '%s' "$c" | base64 | tr -d '\n')"
    c=$(printf '%s' "$c" | sed -e 's/\\:/:/g' -e 's/\\\\/\\/g')
    printf 'nmsg\t%s\n' "$(nmcli -g ethtool.feature-sg connection show id "$c" 2>/dev/null)"
  fi
fi
dump "$rule"; dump "$ifcfg"; dump "$main"
for f in "$dir"/*; do dump "$f"; done
echo XENNET-DISCOVER-END
"""

# Write one file. An existing file must still hold what was read (no lost update), and is
# copied to the first free backup name first; a new file must still be absent.
_WRITE_SCRIPT = r"""
f=$1; new=$2; old=$3; bak=$4; existed=$5
if [ "$existed" = 1 ]; then
  [ -f "$f" ] || { echo "$f vanished since it was read" >&2; exit 3; }
  cur=$(cat -- "$f"; printf x); cur=${cur%x}
  [ "$cur" = "$old" ] || { echo "$f changed since it was read" >&2; exit 3; }
  mkdir -p -- "${bak%/*}" || exit 3
  b=$bak; i=1; while [ -e "$b" ]; do b=$bak.$i; i=$((i+1)); done
  cp -p -- "$f" "$b" || exit 3
  printf 'backup\t%s\n' "$b"
else
  [ ! -e "$f" ] || { echo "$f appeared since it was read" >&2; exit 3; }
  mkdir -p -- "${f%/*}" || exit 3
fi
printf '%s' "$new" > "$f" || exit 3
"""


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
    if max_mtu is None:
        return "the device's max MTU cannot be read (needs iproute2 4.19 or later)"
    if max_mtu < JUMBO_MTU:
        return f"the device's max MTU is {max_mtu}"
    return None


def udev_rule(ethtool: str) -> str:
    if not _SAFE_PATH.fullmatch(ethtool):
        raise WorkaroundError(f"refusing to write ethtool path {excerpt(ethtool)} into a udev rule")
    # udev substitutes $name itself (no shell), and kernel names hold no blanks.
    return f'ACTION=="add", SUBSYSTEM=="net", DRIVERS=="vif", RUN+="{ethtool} -K $name sg on"'


def with_line(text: str | None, line: str, header: str) -> str | None:
    """``text`` with ``line`` added; None when the line is already there."""
    if text is None:
        return f"{header}\n{line}\n"
    if line in (raw.strip() for raw in text.splitlines()):
        return None
    return text + ("" if not text or text.endswith("\n") else "\n") + line + "\n"


_ETHTOOL_OPTS = re.compile(r"^(\s*)ETHTOOL_OPTS=(.*?)\s*$")


def _sg_on(command: str) -> bool | None:
    """True/False when this ETHTOOL_OPTS command sets sg on/off with -K, else None."""
    words = command.split()
    if not words or words[0] not in ("-K", "--features", "--offload"):
        return None
    for key, value in zip(words[2::2], words[3::2]):
        if key == "sg":
            return value == "on"
    return None


def _turn_sg_on(command: str) -> str:
    words = command.split()
    for k in range(2, len(words) - 1, 2):
        if words[k] == "sg":
            words[k + 1] = "on"
    return " ".join(words)


def ifcfg_with_sg(text: str) -> str | None:
    """An ifcfg file with ``-K ${DEVICE} sg on`` in ETHTOOL_OPTS; None when it is there already.

    initscripts runs each ``;``-separated ETHTOOL_OPTS command that starts with ``-``
    as ``ethtool CMD``; a value that does not start with ``-`` means ``ethtool -s DEVICE VALUE``.
    """
    lines = text.splitlines(keepends=True)
    found = [i for i, raw in enumerate(lines) if _ETHTOOL_OPTS.match(raw.rstrip("\n"))]
    wanted = "-K ${DEVICE} sg on"
    if not found:
        return text + ("" if not text or text.endswith("\n") else "\n") + f'ETHTOOL_OPTS="{wanted}"\n'
    index = found[-1]  # the file is sourced: the last assignment wins
    indent, raw_value = _ETHTOOL_OPTS.match(lines[index].rstrip("\n")).groups()
    try:
        (value,) = shlex.split(raw_value) or [""]
    except ValueError:
        raise WorkaroundError(f"cannot parse ETHTOOL_OPTS in ifcfg: {excerpt(raw_value)}") from None
    if any(c in value for c in '"\\`'):
        raise WorkaroundError(f"refusing to rewrite ETHTOOL_OPTS={excerpt(raw_value)}")
    commands = [c.strip() for c in value.split(";") if c.strip()]
    if commands and not commands[0].startswith("-"):
        commands[0] = "-s ${DEVICE} " + commands[0]
    states = [_sg_on(c) for c in commands]
    if False in states:  # the host turns sg off explicitly: turn that into on, keep the rest
        commands = [_turn_sg_on(c) if s is False else c for c, s in zip(commands, states)]
    elif True in states:
        return None
    else:
        commands.append(wanted)
    lines[index] = f'{indent}ETHTOOL_OPTS="{"; ".join(commands)}"\n'
    return "".join(lines)


_STANZA_START = ("iface", "mapping", "auto", "source", "source-directory", "rename", "no-auto-down", "no-scripts")


def interfaces_with_sg(text: str, name: str) -> str | None:
    """An ifupdown file with ``offload-sg on`` in ``name``'s first stanza.

    None when no stanza configures ``name`` (this file is not how the host sets it up)
    or when ``offload-sg on`` is already there; an ``offload-sg off`` line is turned on.
    """
    lines = text.splitlines(keepends=True)
    stanzas: list[list[int]] = []  # line indexes: iface line, then its options
    current: list[int] | None = None
    for i, raw in enumerate(lines):
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] in _STANZA_START or words[0].startswith("allow-"):
            current = None
            if words[0] == "iface" and len(words) >= 2 and words[1] == name:
                current = [i]
                stanzas.append(current)
        elif current is not None:
            current.append(i)
    if not stanzas:
        return None
    options = [(i, lines[i].split()) for s in stanzas for i in s[1:]]
    sg = [(i, w) for i, w in options if w[0] == "offload-sg"]
    if sg and all(w[1:] == ["on"] for _, w in sg):
        return None
    if sg:
        for i, _ in sg:
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            lines[i] = f"{indent}offload-sg on\n"
        return "".join(lines)
    first = stanzas[0]
    indent = "    "
    if len(first) > 1:
        raw = lines[first[1]]
        indent = raw[: len(raw) - len(raw.lstrip())] or indent
    head = lines[first[0]]
    lines[first[0]] = head if head.endswith("\n") else head + "\n"
    lines.insert(first[0] + 1, f"{indent}offload-sg on\n")
    return "".join(lines)


def parse_discovery(stdout: str) -> tuple[str | None, str | None, dict[str, str | None]]:
    """(NM connection, its ethtool.feature-sg, {path: text, or None when not UTF-8 text})."""
    if "XENNET-DISCOVER-END" not in stdout.splitlines():
        raise WorkaroundError(f"cannot read the network configuration: {excerpt(stdout) or 'no output'}")
    connection = nm_sg = None
    files: dict[str, str | None] = {}
    for raw in stdout.splitlines():
        kind, _, rest = raw.partition("\t")
        try:
            if kind == "nm":
                connection = base64.b64decode(rest, validate=True).decode()
                # nmcli -g escapes ':' and '\' in its terse output
                connection = re.sub(r"\\(.)", r"\1", connection)
            elif kind == "nmsg":
                nm_sg = rest
            elif kind == "file":
                path, _, data = rest.partition("\t")
                blob = base64.b64decode(data, validate=True)
                files[path] = None if b"\0" in blob else blob.decode()
        except (binascii.Error, UnicodeDecodeError):
            if kind == "file":
                files[rest.partition("\t")[0]] = None
            else:
                raise WorkaroundError("cannot read NetworkManager's connection name") from None
    return connection, nm_sg, files


def complaint_of(said: Any) -> str:
    """A command's own last words, or its exit status when it said nothing."""
    text = said.stderr + said.stdout
    return gather.last_line(text) if text.strip() else f"exit {said.rc}"


def backup_path(path: str, when: datetime.datetime) -> str:
    return f"{BACKUP_DIR}/{path.strip('/').replace('/', '_')}.{when.strftime('%Y%m%dT%H%M%SZ')}"


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

    def __init__(self, target: gather.Target) -> None:
        self.target = target
        self._backend: Any = None
        self._privilege: str | None = None  # "ok", or why not
        self.sudo = bool(getattr(target.backend, "sudo", False))

    @property
    def label(self) -> str:
        return self.target.label

    def backend(self) -> Any:
        if self._backend is None:
            self._backend = gather.connection_backend(self.target)
        return self._backend

    def run(self, argv: Sequence[str]) -> Any:
        """Run argv; testinfra quotes every element (and adds sudo when --sudo was given)."""
        return self.backend().run(" ".join(["%s"] * len(argv)), *argv)

    def sh(self, script: str, *args: str) -> Any:
        return self.run(["sh", "-c", script, "sh", *args])

    def check_privilege(self) -> None:
        """Root (directly or through sudo), or a one-line reason; asked once per host."""
        if self._privilege is None:
            self._privilege = self._ask_privilege()
        if self._privilege != "ok":
            raise WorkaroundError(self._privilege)

    def _ask_privilege(self) -> str:
        try:
            result = self.run(["id", "-u"])
        except Exception as exc:  # noqa: BLE001 - the host's one-line cause
            return f"cannot connect to {self.label}: {gather.describe_error(exc, self.target)}"
        stderr = result.stderr
        if "sudo:" in stderr and ("password is required" in stderr or "terminal is required" in stderr):
            return f"sudo requires a password on {self.label} (or the user has no sudo rights there)"
        if "sudo:" in stderr or result.rc != 0:
            return f"cannot run commands as root on {self.label}: {gather.last_line(stderr)}"
        uid = result.stdout.strip()
        if uid != "0":
            how = "sudo gave" if self.sudo else "logged in as"
            hint = "" if self.sudo else ": pass --sudo, or log in as root"
            return f"not root on {self.label} ({how} uid {excerpt(uid)}){hint}"
        return "ok"

    def read(self, name: str) -> tuple[str, InterfaceFacts]:
        """(ethtool path, the interface's facts), from the probe and its own parser."""
        result = self.backend().run(PROBE_COMMAND)  # the probe, through sudo when --sudo
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
        targets: Callable[[], Sequence[gather.Target]],
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
        self._targets: dict[str, gather.Target] | None = None
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
            return self._plan(iface, ethtool or "ethtool", judgement)
        outcome = Outcome(self.mode, before=state(iface))
        try:
            self._apply(self.session(host), iface, judgement, outcome)
        except WorkaroundError as exc:
            outcome.result, outcome.cause = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - a lost connection etc.: this case fails, closed
            outcome.result, outcome.cause = "failed", f"{type(exc).__name__}: {excerpt(str(exc))}"
        if outcome.judgement is None:
            outcome.judgement = judgement
        return outcome

    def _plan(self, iface: InterfaceFacts, ethtool: str, judgement: Judgement) -> Outcome:
        commands = [render(sg_argv(ethtool, iface.name), self.sudo)]
        if self.allow_mtu:
            commands.append(
                render(mtu_argv(iface.name), self.sudo) + f"  # only if scatter-gather stays off and max MTU >= {JUMBO_MTU}"
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
            reason = mtu_step(self.allow_mtu, after, self._max_mtu(session, now.name) if self.allow_mtu else None)
            if reason is not None:
                raise WorkaroundError(f"scatter-gather is still off on {excerpt(now.name)} ({complaint}); no MTU change: {reason}")
            argv = mtu_argv(now.name)
            outcome.commands.append(render(argv, session.sudo))
            said = session.sh(_IP_SCRIPT, *argv[1:])
            _, after = session.read(now.name)
            outcome.after = state(after)
            complaint = complaint_of(said)
        final = judge(after, self.scope)
        if not final.verdict.mitigated:
            raise WorkaroundError(f"{excerpt(now.name)} is still susceptible after the workaround: {complaint}")
        outcome.result, outcome.remediated = "applied", True
        outcome.judgement = Judgement(final.verdict, remediated_message(now.name, final.verdict))
        if self.persist:
            if not after.scatter_gather:
                raise WorkaroundError("MTU 9001 was set but is not persisted: only scatter-gather is")
            outcome.persisted = self._persist(session, ethtool, now, outcome)

    def _max_mtu(self, session: HostSession, name: str) -> int | None:
        result = session.sh(_IP_SCRIPT, "-d", "link", "show", "dev", name)
        return parse_max_mtu(result.stdout) if result.rc == 0 else None

    # ---- persistence ----------------------------------------------------

    def _persist(self, session: HostSession, ethtool: str, iface: InterfaceFacts, outcome: Outcome) -> list[dict[str, Any]]:
        name = iface.name
        ifcfg = f"{IFCFG_DIR}/ifcfg-{name}"
        found = session.sh(_DISCOVER_SCRIPT, name, UDEV_RULE_FILE, ifcfg, IFUPDOWN_FILE, IFUPDOWN_DIR)
        connection, nm_sg, files = parse_discovery(found.stdout)
        done: list[dict[str, Any]] = []
        header = "# Written by xennet-compliance (XENNET-01): scatter-gather on for xen-netfront at boot."
        rule = udev_rule(ethtool)
        entry = self._write(session, UDEV_RULE_FILE, files, with_line(files.get(UDEV_RULE_FILE), rule, header), outcome)
        entry["via"] = "udev"
        if iface.driver not in XEN_DRIVERS:
            entry["note"] = "the udev rule matches xen-netfront (vif) interfaces only"
        done.append(entry)
        if connection:  # NetworkManager owns the interface's configuration, whatever its file format
            argv = ["nmcli", "connection", "modify", "id", connection, "ethtool.feature-sg", "on"]
            if nm_sg == "on":
                done.append({"via": "networkmanager", "connection": connection, "action": "unchanged"})
            else:
                outcome.commands.append(render(argv, session.sudo))
                said = session.run(argv)
                check = session.run(["nmcli", "-g", "ethtool.feature-sg", "connection", "show", "id", connection])
                if check.stdout.strip() != "on":
                    raise WorkaroundError(f"NetworkManager did not keep ethtool.feature-sg on: {gather.last_line(said.stderr)}")
                done.append({"via": "networkmanager", "connection": connection, "action": "changed"})
        elif ifcfg in files:
            if files[ifcfg] is None:
                raise WorkaroundError(f"{ifcfg} is not a text file")
            entry = self._write(session, ifcfg, files, ifcfg_with_sg(files[ifcfg] or ""), outcome)
            done.append({**entry, "via": "ifcfg"})
        else:
            for path in sorted(files, key=lambda p: (p != IFUPDOWN_FILE, p)):
                if not (path == IFUPDOWN_FILE or path.startswith(IFUPDOWN_DIR + "/")) or files[path] is None:
                    continue
                text = files[path] or ""
                if not any(line.split()[:2] == ["iface", name] for line in text.splitlines()):
                    continue
                entry = self._write(session, path, files, interfaces_with_sg(text, name), outcome)
                done.append({**entry, "via": "ifupdown"})
                break
        return done

    def _write(self, session: HostSession, path: str, files: dict[str, str | None], new: str | None, outcome: Outcome) -> dict[str, Any]:
        if new is None:
            return {"file": path, "action": "unchanged", "backup": None}
        existed = path in files
        if existed and files[path] is None:
            raise WorkaroundError(f"{path} is not a text file")
        backup = backup_path(path, self._now()) if existed else ""
        outcome.commands.append(f"{'update' if existed else 'create'} {path}" + (f" (backup in {BACKUP_DIR})" if existed else ""))
        result = session.sh(_WRITE_SCRIPT, path, new, files.get(path) or "", backup, "1" if existed else "0")
        if result.rc != 0:
            raise WorkaroundError(f"cannot write {path}: {gather.last_line(result.stderr)}")
        written = [line.partition("\t")[2] for line in result.stdout.splitlines() if line.startswith("backup\t")]
        files[path] = new  # a second interface on this host edits the new text
        return {"file": path, "action": "changed" if existed else "created", "backup": written[0] if written else None}


def remediated_message(name: str, verdict: Verdict) -> str:
    how = "Scatter-Gather is now enabled" if verdict is Verdict.SG_ON else "MTU is now set to Jumbo-Frame size"
    return f"{how} on {excerpt(name)} by the workaround. This mitigates the bug."


def apply_to_record(record: Row, outcome: Outcome) -> Row:
    """The case's row after acting: final state and verdict, plus the ``workaround`` object."""
    changes: dict[str, Any] = {"workaround": outcome.to_dict()}
    if outcome.after is not None:
        changes.update(outcome.after)  # state()'s keys are row fields
    if outcome.judgement is not None:
        changes.update(verdict=outcome.verdict, message=outcome.judgement.message, fixes=outcome.judgement.fixes)
    return dataclasses.replace(record, **changes)
