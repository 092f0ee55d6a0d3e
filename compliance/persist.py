"""Keep scatter-gather on across reboots (``--xennet-persist``): the boot-configuration edits.

:func:`persist` is the one entry point; the workaround calls it once SG is on::

    persisted = persist(session, ethtool, iface, outcome.commands, now)

It writes a udev rule for xen-netfront (``vif``) interfaces, then the host's own network
configuration for the interface, where it has one: NetworkManager (``nmcli``), else RHEL
``ifcfg-IF`` (``ETHTOOL_OPTS``), else Debian ifupdown (``offload-sg on``). Files the suite
did not create are backed up first; a line that is already there is never written again.
Each entry of the returned list is one ``persisted`` object of the reports.

The pieces, each small and testable on its own:

- text edits, pure: :func:`udev_rule`, :func:`with_line`, :func:`ifcfg_with_sg`,
  :func:`interfaces_with_sg`, :func:`backup_path`;
- :class:`Discovery`: what the host has, read in one remote command;
- :class:`Writer`: writes one file on the host, with a backup and a lost-update check;
- :class:`NetworkManager`: asks NM to keep ``ethtool.feature-sg`` on for a connection.

Every remote command goes through the session (``run(argv)``, ``sh(script, *args)``,
``render(argv)``): interface names reach commands only as quoted arguments.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import re
import shlex
from collections.abc import Callable
from typing import Any, Protocol

from compliance.probe import InterfaceFacts, excerpt, last_line
from compliance.rule import XEN_DRIVERS

UDEV_RULE_FILE = "/etc/udev/rules.d/70-xennet-compliance-sg.rules"
# Not next to the originals: ifupdown sources every file of interfaces.d, network-scripts
# reads every ifcfg-* it does not recognise as a backup.
BACKUP_DIR = "/etc/xennet-compliance/backups"
IFCFG_DIR = "/etc/sysconfig/network-scripts"
IFUPDOWN_FILE = "/etc/network/interfaces"
IFUPDOWN_DIR = "/etc/network/interfaces.d"
UDEV_HEADER = "# Written by xennet-compliance (XENNET-01): scatter-gather on for xen-netfront at boot."
_SAFE_PATH = re.compile(r"/[A-Za-z0-9_./+-]+")

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


class PersistError(Exception):
    """One line, safe to show, naming why persisting stopped."""


class Session(Protocol):
    """What persisting needs from a connection to one host (the workaround's HostSession)."""

    def run(self, argv: list[str]) -> Any: ...  # argv, each element quoted (sudo added when --sudo)

    def sh(self, script: str, *args: str) -> Any: ...  # sh -c SCRIPT sh ARGS...

    def render(self, argv: list[str]) -> str: ...  # the command as a user would type it


# --------------------------------------------------------------------------- text edits (pure)


def udev_rule(ethtool: str) -> str:
    """The rule line; only for an ethtool path that cannot break out of the quoted RUN value.

    >>> udev_rule("/usr/sbin/ethtool")
    'ACTION=="add", SUBSYSTEM=="net", DRIVERS=="vif", RUN+="/usr/sbin/ethtool -K $name sg on"'
    """
    if not _SAFE_PATH.fullmatch(ethtool):
        raise PersistError(f"refusing to write ethtool path {excerpt(ethtool)} into a udev rule")
    # udev substitutes $name itself (no shell), and kernel names hold no blanks.
    return f'ACTION=="add", SUBSYSTEM=="net", DRIVERS=="vif", RUN+="{ethtool} -K $name sg on"'


def with_line(text: str | None, line: str, header: str) -> str | None:
    """``text`` with ``line`` added; None when the line is already there.

    >>> with_line(None, "rule", "# header")
    '# header\\nrule\\n'
    >>> with_line("# header\\nrule\\n", "rule", "# header") is None
    True
    """
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

    >>> ifcfg_with_sg('DEVICE=eth0\\nONBOOT=yes\\n')
    'DEVICE=eth0\\nONBOOT=yes\\nETHTOOL_OPTS="-K ${DEVICE} sg on"\\n'
    """
    lines = text.splitlines(keepends=True)
    found = [i for i, raw in enumerate(lines) if _ETHTOOL_OPTS.match(raw.rstrip("\n"))]
    wanted = "-K ${DEVICE} sg on"
    if not found:
        return text + ("" if not text or text.endswith("\n") else "\n") + f'ETHTOOL_OPTS="{wanted}"\n'
    index = found[-1]  # the file is sourced: the last assignment wins
    match = _ETHTOOL_OPTS.match(lines[index].rstrip("\n"))
    assert match is not None  # found above by the same pattern
    indent, raw_value = match.groups()
    try:
        (value,) = shlex.split(raw_value) or [""]
    except ValueError:
        raise PersistError(f"cannot parse ETHTOOL_OPTS in ifcfg: {excerpt(raw_value)}") from None
    if any(c in value for c in '"\\`'):
        raise PersistError(f"refusing to rewrite ETHTOOL_OPTS={excerpt(raw_value)}")
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

    >>> interfaces_with_sg('auto eth0\\niface eth0 inet dhcp\\n', 'eth0')
    'auto eth0\\niface eth0 inet dhcp\\n    offload-sg on\\n'
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


def backup_path(path: str, when: datetime.datetime) -> str:
    """Where a file's original goes: one flat directory, named after the path and the time.

    >>> backup_path("/etc/network/interfaces", datetime.datetime(2026, 11, 25, 2, 0))
    '/etc/xennet-compliance/backups/etc_network_interfaces.20261125T020000Z'
    """
    return f"{BACKUP_DIR}/{path.strip('/').replace('/', '_')}.{when.strftime('%Y%m%dT%H%M%SZ')}"


def is_ifupdown_file(path: str) -> bool:
    return path == IFUPDOWN_FILE or path.startswith(IFUPDOWN_DIR + "/")


# --------------------------------------------------------------------------- the host's side


@dataclasses.dataclass
class Discovery:
    """What one interface's boot configuration is, as the host told it.

    ``connection`` is NetworkManager's connection for the interface (None when NM does not
    manage it), ``nm_sg`` that connection's ``ethtool.feature-sg``, and ``files`` maps each
    editable file that exists to its text (None when it is not UTF-8 text).

    >>> Discovery.parse("nm\\tZXRoMQ==\\nnmsg\\toff\\nXENNET-DISCOVER-END\\n")
    Discovery(connection='eth1', nm_sg='off', files={})
    """

    connection: str | None
    nm_sg: str | None
    files: dict[str, str | None]

    @classmethod
    def read(cls, session: Session, name: str) -> Discovery:
        """One remote command for everything (a host may have hundreds of interfaces.d files)."""
        found = session.sh(_DISCOVER_SCRIPT, name, UDEV_RULE_FILE, ifcfg_path(name), IFUPDOWN_FILE, IFUPDOWN_DIR)
        return cls.parse(found.stdout)

    @classmethod
    def parse(cls, stdout: str) -> Discovery:
        if "XENNET-DISCOVER-END" not in stdout.splitlines():
            raise PersistError(f"cannot read the network configuration: {excerpt(stdout) or 'no output'}")
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
                    raise PersistError("cannot read NetworkManager's connection name") from None
        return cls(connection, nm_sg, files)


def ifcfg_path(name: str) -> str:
    return f"{IFCFG_DIR}/ifcfg-{name}"


class Writer:
    """Writes files on one host: each change is announced in ``commands`` before it is made.

    ``files`` is what discovery read; it is updated after each write, so that a second
    interface on the same host edits the new text. ``None`` as the new text means there is
    nothing to do, and nothing runs:

    >>> Writer(None, {}, [], datetime.datetime.now).write("/etc/x", None)
    {'file': '/etc/x', 'action': 'unchanged', 'backup': None}
    """

    def __init__(
        self,
        session: Session,
        files: dict[str, str | None],
        commands: list[str],
        now: Callable[[], datetime.datetime],
    ) -> None:
        self.session = session
        self.files = files
        self.commands = commands
        self.now = now

    def write(self, path: str, new: str | None) -> dict[str, Any]:
        if new is None:
            return {"file": path, "action": "unchanged", "backup": None}
        existed = path in self.files
        if existed and self.files[path] is None:
            raise PersistError(f"{path} is not a text file")
        backup = backup_path(path, self.now()) if existed else ""
        self.commands.append(
            f"{'update' if existed else 'create'} {path}" + (f" (backup in {BACKUP_DIR})" if existed else "")
        )
        result = self.session.sh(_WRITE_SCRIPT, path, new, self.files.get(path) or "", backup, "1" if existed else "0")
        if result.rc != 0:
            raise PersistError(f"cannot write {path}: {last_line(result.stderr)}")
        written = [line.partition("\t")[2] for line in result.stdout.splitlines() if line.startswith("backup\t")]
        self.files[path] = new
        return {"file": path, "action": "changed" if existed else "created", "backup": written[0] if written else None}


class NetworkManager:
    """Keeps ``ethtool.feature-sg`` on in the NM connection that owns the interface.

    NM owns that configuration whatever its file format (keyfile, ifcfg-rh), so the suite
    asks nmcli rather than editing NM's files; the setting applies at the next activation.

    >>> NetworkManager.modify_argv("Wired connection 1")
    ['nmcli', 'connection', 'modify', 'id', 'Wired connection 1', 'ethtool.feature-sg', 'on']
    """

    def __init__(self, session: Session, commands: list[str]) -> None:
        self.session = session
        self.commands = commands

    @staticmethod
    def modify_argv(connection: str) -> list[str]:
        return ["nmcli", "connection", "modify", "id", connection, "ethtool.feature-sg", "on"]

    def keep_sg_on(self, connection: str, current: str | None) -> dict[str, Any]:
        """``current`` is the connection's ethtool.feature-sg as discovery read it."""
        if current == "on":
            return {"via": "networkmanager", "connection": connection, "action": "unchanged"}
        argv = self.modify_argv(connection)
        self.commands.append(self.session.render(argv))
        said = self.session.run(argv)
        # nmcli's exit status is not the proof: read the setting back.
        check = self.session.run(["nmcli", "-g", "ethtool.feature-sg", "connection", "show", "id", connection])
        if check.stdout.strip() != "on":
            raise PersistError(f"NetworkManager did not keep ethtool.feature-sg on: {last_line(said.stderr)}")
        return {"via": "networkmanager", "connection": connection, "action": "changed"}


# --------------------------------------------------------------------------- the entry point


def persist(
    session: Session,
    ethtool: str,
    iface: InterfaceFacts,
    commands: list[str],
    now: Callable[[], datetime.datetime],
) -> list[dict[str, Any]]:
    """Keep SG on for ``iface`` at boot; one ``persisted`` entry per configuration touched.

    ``commands`` (the outcome's) gets each change as it is made, so that a failure midway
    still shows what ran. Raises :class:`PersistError` with a one-line cause.
    """
    name = iface.name
    found = Discovery.read(session, name)
    writer = Writer(session, found.files, commands, now)
    done: list[dict[str, Any]] = []
    entry = writer.write(UDEV_RULE_FILE, with_line(found.files.get(UDEV_RULE_FILE), udev_rule(ethtool), UDEV_HEADER))
    entry["via"] = "udev"
    if iface.driver not in XEN_DRIVERS:
        entry["note"] = "the udev rule matches xen-netfront (vif) interfaces only"
    done.append(entry)
    ifcfg = ifcfg_path(name)
    if found.connection:  # NetworkManager owns the interface's configuration, whatever its file format
        done.append(NetworkManager(session, commands).keep_sg_on(found.connection, found.nm_sg))
    elif ifcfg in found.files:
        if found.files[ifcfg] is None:
            raise PersistError(f"{ifcfg} is not a text file")
        done.append({**writer.write(ifcfg, ifcfg_with_sg(found.files[ifcfg] or "")), "via": "ifcfg"})
    else:
        # /etc/network/interfaces first, then interfaces.d in name order: the first stanza wins.
        for path in sorted(found.files, key=lambda p: (p != IFUPDOWN_FILE, p)):
            text = found.files[path]
            if not is_ifupdown_file(path) or text is None:
                continue
            if not any(line.split()[:2] == ["iface", name] for line in text.splitlines()):
                continue
            done.append({**writer.write(path, interfaces_with_sg(text, name)), "via": "ifupdown"})
            break
    return done
