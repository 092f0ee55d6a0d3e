"""What brings the interface up at boot: RHEL ifcfg, Debian ifupdown and NetworkManager keyfiles.

Each reads only what the probe shipped (see :data:`compliance.boot.AWK_PROGRAM`) and says what
it does to SG of one interface; they run after udev, and :func:`compliance.boot.evaluate`
requires them to agree when several of them would touch the same interface.

>>> from compliance.boot import ConfFile, Device
>>> f = ConfFile("ifcfg", "/etc/sysconfig/network-scripts/ifcfg-eth0",
...     ((1, "DEVICE=eth0"), (4, 'ETHTOOL_OPTS="-K ${DEVICE} tso off; -K ${DEVICE} sg off"')))
>>> ifcfg([f], Device("eth0")).describe()
'off (/etc/sysconfig/network-scripts/ifcfg-eth0:4)'
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import re
import shlex
from collections.abc import Sequence

from compliance.boot import (
    IFUPDOWN_DIR,
    IFUPDOWN_FILE,
    NM_DIRS,
    SG_FEATURES,
    ConfFile,
    Device,
    Outcome,
    Setting,
    agree,
    command_effect,
    effect_of,
    name_matcher,
)

# --------------------------------------------------------------------------- RHEL ifcfg

# network-scripts skips these names (network-functions, is_ignored_file); so does NM's ifcfg-rh.
IFCFG_IGNORED = ("~", ".bak", ".old", ".orig", ".rpmnew", ".rpmorig", ".rpmsave")
IFCFG_DEVICE_WORDS = ("${DEVICE}", "$DEVICE", "${REALDEVICE}", "$REALDEVICE")
SHELL_NO = frozenset({"no", "NO", "No", "false", "FALSE", "False", "n", "N", "f", "F", "0", "off", "OFF", "Off"})
_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)")


@functools.lru_cache(maxsize=256)
def assignments(file: ConfFile) -> dict[str, tuple[str | None, int]]:
    """``KEY=value`` lines as the shell that sources the file sees them: the last one wins.

    The value is None when the suite cannot read it as one shell word.

    >>> assignments(ConfFile("ifcfg", "/x", ((1, 'ETHTOOL_OPTS="-K eth0 sg off" # quiet'),)))
    {'ETHTOOL_OPTS': ('-K eth0 sg off', 1)}
    """
    found: dict[str, tuple[str | None, int]] = {}
    for number, text in file.lines:
        match = _ASSIGNMENT.fullmatch(text)
        if match is None:
            continue
        try:
            words = shlex.split(match.group(2), comments=True)
        except ValueError:
            found[match.group(1)] = (None, number)
            continue
        found[match.group(1)] = (words[0] if len(words) == 1 else ("" if not words else None), number)
    return found


def _ifcfg_file(file: ConfFile, device: Device) -> Outcome:
    values = assignments(file)
    onboot = values.get("ONBOOT", ("yes", 0))[0]
    if onboot in SHELL_NO:
        return Outcome()  # not brought up at boot
    configured = values.get("DEVICE", (file.name[len("ifcfg-") :], 0))[0] or file.name[len("ifcfg-") :]
    opts, line = values.get("ETHTOOL_OPTS", ("", 0))
    where = f"{file.path}:{line}"
    if opts is None:
        return Outcome(problem=f"cannot read ETHTOOL_OPTS at {where}")

    def targets(word: str) -> bool | None:
        # ${DEVICE} is the file's own interface (set from the name when DEVICE is not).
        return configured == device.name if word in IFCFG_DEVICE_WORDS else name_matcher(device.name, ())(word)

    result = Outcome()
    for command in opts.split(";"):
        command = command.strip()
        if not command.startswith("-"):
            continue  # "autoneg off speed 100": network-scripts runs ethtool -s DEVICE with it
        try:
            argv = ["ethtool", *shlex.split(command)]
        except ValueError:
            return Outcome(problem=f"cannot read ETHTOOL_OPTS at {where}")
        effect = effect_of(argv, targets)
        if effect.doubt is not None:
            return Outcome(problem=f"{where}: {effect.doubt}")
        if effect.on is not None:
            result = Outcome(Setting(effect.on, where))
    return result


def ifcfg(files: Sequence[ConfFile], device: Device) -> Outcome:
    """``ETHTOOL_OPTS`` of every ifcfg file brought up at boot (``ONBOOT`` not no) that names the interface.

    Commands are separated by ``;``; each that starts with ``-`` is run as ``ethtool CMD``,
    so an ifcfg file may change another interface too (``-K eth1 …`` in ifcfg-eth0).
    """
    outcomes = [
        _ifcfg_file(f, device)
        for f in sorted(files, key=lambda f: f.name)
        if f.name.startswith("ifcfg-") and not f.name.endswith(IFCFG_IGNORED)
    ]
    return agree(outcomes, "network-scripts bring them up in an order the suite does not know")


# --------------------------------------------------------------------------- Debian ifupdown

_STANZAS = frozenset({"iface", "mapping", "auto", "source", "source-directory", "source-dir", "rename"})
_AT_BOOT = frozenset({"auto", "allow-auto", "allow-hotplug"})
IFUPDOWN_NAME_WORDS = ("$IFACE", "${IFACE}")
_RUN_PARTS_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclasses.dataclass
class Stanza:
    name: str
    options: list[tuple[str, int, str, str]] = dataclasses.field(default_factory=list)  # path, line, option, rest


@dataclasses.dataclass
class Interfaces:
    stanzas: list[Stanza] = dataclasses.field(default_factory=list)
    at_boot: set[str] = dataclasses.field(default_factory=set)
    mappings: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (glob, path:line)
    problem: str | None = None


def read_interfaces(files: Sequence[ConfFile]) -> Interfaces:
    """/etc/network/interfaces and what it sources (``source`` globs, ``source-directory``), in ifupdown's order."""
    by_path = {f.path: f for f in files}
    found = Interfaces()

    def walk(path: str, depth: int) -> None:
        if depth > 8 or found.problem:
            found.problem = found.problem or f"{path}: sources nested too deep"
            return
        file = by_path[path]
        here = path.rsplit("/", 1)[0]
        current: Stanza | None = None
        for number, text in file.lines:
            words = text.split()
            keyword, args = words[0], words[1:]
            where = f"{path}:{number}"
            if keyword == "source":
                current = None
                for pattern in args:
                    pattern = pattern if pattern.startswith("/") else f"{here}/{pattern}"
                    if pattern.rsplit("/", 1)[0] not in (IFUPDOWN_DIR, here):
                        found.problem = f"{where} sources {pattern}, which the suite does not read"
                        return
                    for target in sorted(p for p in by_path if fnmatch.fnmatchcase(p, pattern)):
                        walk(target, depth + 1)
            elif keyword in ("source-directory", "source-dir"):
                current = None
                for directory in args:
                    directory = (directory if directory.startswith("/") else f"{here}/{directory}").rstrip("/")
                    if directory != IFUPDOWN_DIR:
                        found.problem = f"{where} sources {directory}, which the suite does not read"
                        return
                    names = sorted(p for p in by_path if p.startswith(directory + "/"))
                    for target in names:
                        if _RUN_PARTS_NAME.fullmatch(target.rsplit("/", 1)[-1]):
                            walk(target, depth + 1)
            elif keyword in _AT_BOOT:
                current = None
                found.at_boot.update(args)
            elif keyword == "iface" and args:
                current = Stanza(args[0])
                found.stanzas.append(current)
            elif keyword == "mapping":
                current = None
                found.mappings += [(glob, where) for glob in args]
            elif keyword in _STANZAS or keyword.startswith("allow-") or keyword in ("no-auto-down", "no-scripts"):
                current = None
            elif current is not None:
                current.options.append((path, number, keyword, text.strip()[len(keyword) :].strip()))

    if IFUPDOWN_FILE in by_path:
        walk(IFUPDOWN_FILE, 0)
    return found


def _option_effect(option: tuple[str, int, str, str], device: Device) -> Outcome:
    path, number, keyword, rest = option
    where = f"{path}:{number}"
    if keyword.startswith("offload-"):
        # if-up.d/ethtool: IF_OFFLOAD_X=v becomes `ethtool --offload IFACE x v`
        if keyword[len("offload-") :] not in SG_FEATURES:
            return Outcome()
        if rest not in ("on", "off"):
            return Outcome(problem=f"{where}: {keyword} {rest!r} is neither on nor off")
        return Outcome(Setting(rest == "on", where))
    effect = command_effect(rest, name_matcher(device.name, IFUPDOWN_NAME_WORDS))
    if effect.doubt is not None:
        return Outcome(problem=f"{where}: {effect.doubt}")
    return Outcome(None if effect.on is None else Setting(effect.on, where))


def ifupdown(files: Sequence[ConfFile], device: Device) -> Outcome:
    """``offload-sg`` (and ``pre-up``/``up``/``post-up`` commands that run ethtool) of the interface's stanzas.

    Only an interface that ifupdown brings up at boot (``auto``, ``allow-auto``,
    ``allow-hotplug``) counts. Per stanza, ``pre-up`` commands run first; ``up``/``post-up``
    commands and ethtool's hook (if-up.d on current Debian, if-pre-up.d on older ones) may
    run in either order, so they must agree.
    """
    found = read_interfaces(files)
    if found.problem is not None:
        return Outcome(problem=found.problem)
    for glob, where in found.mappings:
        if fnmatch.fnmatchcase(device.name, glob):
            return Outcome(problem=f"{where} maps {device.name} to a logical interface the suite does not follow")
    if device.name not in found.at_boot:
        return Outcome()
    result = Outcome()
    for stanza in (s for s in found.stanzas if s.name == device.name):
        pre = [_option_effect(o, device) for o in stanza.options if o[2] == "pre-up"]
        later = [_option_effect(o, device) for o in stanza.options if o[2] in ("up", "post-up")]
        hook = [_option_effect(o, device) for o in stanza.options if o[2].startswith("offload-")]
        for outcome in (
            *pre,
            agree(
                [_last(later), _last(hook)],
                "ethtool's hook and up commands run in an order that depends on the Debian release",
            ),
        ):
            if outcome.problem is not None or outcome.setting is not None:
                result = outcome
    return result


def _last(outcomes: Sequence[Outcome]) -> Outcome:
    for outcome in outcomes:
        if outcome.problem is not None:
            return outcome
    settings = [o for o in outcomes if o.setting is not None]
    return settings[-1] if settings else Outcome()


# --------------------------------------------------------------------------- NetworkManager

NM_RANK = {"/run/NetworkManager/system-connections": 0, "/etc/NetworkManager/system-connections": 1}  # else 2
ETHERNET_TYPES = frozenset({"ethernet", "802-3-ethernet"})
_MKSTEMP = re.compile(r".*\.[A-Za-z0-9]{6}")


@dataclasses.dataclass(frozen=True)
class Profile:
    path: str
    values: dict[tuple[str, str], tuple[str, int]]  # (section, key) -> (value, line)

    def get(self, section: str, key: str, default: str = "") -> str:
        return self.values.get((section, key), (default, 0))[0]

    @property
    def uuid(self) -> str:
        return self.get("connection", "uuid") or self.path

    @property
    def label(self) -> str:
        return f"{self.get('connection', 'id') or self.path.rsplit('/', 1)[-1]!r} ({self.path})"

    @property
    def priority(self) -> int:
        value = self.get("connection", "autoconnect-priority", "0").strip()
        return int(value) if re.fullmatch(r"-?\d+", value) else 0

    @property
    def rank(self) -> int:
        return NM_RANK.get(self.path.rsplit("/", 1)[0], 2)


def nm_ignored(path: str) -> bool:
    """The names NetworkManager's keyfile plugin skips (nm_keyfile_utils_ignore_filename)."""
    directory, _, name = path.rpartition("/")
    if not name or name.startswith("."):
        return True
    if directory != NM_DIRS[0]:  # /run and /usr/lib need the extension
        return not name.endswith(".nmconnection") or name == ".nmconnection"
    lower = name.lower()
    return name.endswith("~") or lower.endswith((".pem", ".der")) or bool(_MKSTEMP.fullmatch(name))


@functools.lru_cache(maxsize=256)
def read_profile(file: ConfFile) -> Profile:
    """A keyfile's shipped lines: ``[section]`` and ``key=value``; the last value of a key wins (GKeyFile)."""
    section = ""
    values: dict[tuple[str, str], tuple[str, int]] = {}
    for number, text in file.lines:
        text = text.strip()
        if text.startswith("[") and text.endswith("]"):
            section = text[1:-1]
            continue
        key, sep, value = text.partition("=")
        if sep:
            values[(section, key.strip())] = (value.strip(), number)
    return Profile(file.path, values)


def gkeyfile_boolean(value: str) -> bool | None:
    """GKeyFile's booleans: ``true``/``1`` and ``false``/``0`` (trailing blanks ignored), nothing else."""
    value = value.rstrip()
    return True if value in ("true", "1") else False if value in ("false", "0") else None


def _nm_names(patterns: Sequence[str], name: str) -> bool:
    """[match] interface-name: ``!`` must not match, ``&`` must match, plain ones: at least one must (NM 1.14+)."""
    optional = [p for p in patterns if not p.startswith(("!", "&"))]
    if any(fnmatch.fnmatchcase(name, p[1:]) for p in patterns if p.startswith("!")):
        return False
    if not all(fnmatch.fnmatchcase(name, p[1:]) for p in patterns if p.startswith("&")):
        return False
    return not optional or any(fnmatch.fnmatchcase(name, p) for p in optional)


def applies(profile: Profile, device: Device) -> bool | None:
    """Whether NetworkManager may activate this profile on the device at boot (None: cannot tell)."""
    if gkeyfile_boolean(profile.get("connection", "autoconnect", "true")) is False:
        return False
    name = profile.get("connection", "interface-name")
    if name:
        if name != device.name:
            return False
    elif profile.get("connection", "type") not in ETHERNET_TYPES:
        return False
    elif device.type is None:
        return None  # a virtual interface: whether NetworkManager takes it for Ethernet is not known
    elif device.type != "1":
        return False
    patterns = [p for p in profile.get("match", "interface-name").split(";") if p]
    if patterns and not _nm_names(patterns, device.name):
        return False
    mac = profile.get("ethernet", "mac-address") or profile.get("802-3-ethernet", "mac-address")
    if mac:
        if device.address is None:
            return None
        return mac.lower() == device.address.lower()
    return True


def _profile_sg(profile: Profile) -> Outcome:
    value, line = profile.values.get(("ethtool", "feature-sg"), ("", 0))
    if not value:
        return Outcome()
    flag = gkeyfile_boolean(value)
    where = f"{profile.path}:{line}"
    if flag is None:
        return Outcome(problem=f"{where}: feature-sg={value!r} is not a boolean")
    return Outcome(Setting(flag, where))


def networkmanager(files: Sequence[ConfFile], device: Device) -> Outcome:
    """``ethtool.feature-sg`` of the keyfile profile NetworkManager would activate on the interface at boot.

    A profile applies when its ``interface-name`` is the interface (or it has none and is an
    Ethernet profile), its ``[match]`` and ``mac-address`` allow it, and ``autoconnect`` is not
    false. Among those, NetworkManager takes the highest ``autoconnect-priority``, then the one
    used last (a timestamp the suite does not read): profiles tied on priority must agree. A
    profile in /run shadows one of the same UUID in /etc, which shadows /usr/lib.
    """
    profiles: dict[str, Profile] = {}
    for file in files:
        if nm_ignored(file.path):
            continue
        profile = read_profile(file)
        if profile.uuid not in profiles or profile.rank < profiles[profile.uuid].rank:
            profiles[profile.uuid] = profile
    candidates = [
        (p, fits) for p in sorted(profiles.values(), key=lambda p: p.path) if (fits := applies(p, device)) is not False
    ]
    outcomes = _choices(candidates)
    problems = [o for o in outcomes if o.problem is not None]
    if problems:
        return problems[0]
    if len({o.state for o in outcomes}) == 1:
        return outcomes[0]
    shown = " and ".join(p.label for p, _ in candidates[:2])
    return Outcome(
        problem=f"NetworkManager may activate {shown} on {device.name} (the choice depends on priority, "
        "last use or MAC address), and they disagree on ethtool.feature-sg"
    )


def _choices(candidates: Sequence[tuple[Profile, bool | None]]) -> list[Outcome]:
    """What each profile NetworkManager might pick would do: the highest priority first, lower ones
    only when none of the highest surely applies."""
    if not candidates:
        return [Outcome()]
    best = max(p.priority for p, _ in candidates)
    top = [(p, fits) for p, fits in candidates if p.priority == best]
    outcomes = [_profile_sg(p) for p, _ in top]
    if not any(fits for _, fits in top):
        outcomes += _choices([(p, fits) for p, fits in candidates if p.priority != best])
    return outcomes
