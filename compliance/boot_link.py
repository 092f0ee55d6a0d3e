"""systemd ``.link`` files: ``ScatterGather=`` in the first file whose ``[Match]`` fits the interface.

systemd-udevd's ``net_setup_link`` builtin reads ``*.link`` from /etc/systemd/network,
/run/systemd/network, /usr/local/lib/systemd/network and /usr/lib/systemd/network (and
/lib/systemd/network); a file in an earlier directory replaces one of the same name, an
empty one masks it, and the first file in lexical order of names whose ``[Match]`` section
fits the device is the only one applied (systemd.link(5)). ``ScatterGather=`` exists only
from systemd v260 (/work/shared/reference/xen-netfront-facts.md; requested in
https://github.com/systemd/systemd/issues/39318): an older udevd ignores the key, so the
suite asks ``udevadm --version`` when a file sets it. Drop-in directories (``foo.link.d``)
are not read.

>>> from compliance.boot import ConfFile, Device
>>> f = ConfFile("link", "/etc/systemd/network/10-sg.link", ((1, "[Match]"), (2, "OriginalName=eth*"),
...     (3, "[Link]"), (4, "ScatterGather=no")))
>>> evaluate([f], Device("eth0", renamed=False), 260).describe()
'off (/etc/systemd/network/10-sg.link:4)'
>>> evaluate([f], Device("eth0", renamed=False), 252).describe()
'default'
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shlex
from collections.abc import Sequence

from compliance.boot import LINK_DIRS, ConfFile, Device, Outcome, Setting, glob_any, overridden

SCATTER_GATHER_SINCE = 260  # the systemd version that knows ScatterGather=
TRUE = frozenset({"1", "yes", "y", "true", "t", "on"})
FALSE = frozenset({"0", "no", "n", "false", "f", "off"})
# [Match] keys the suite can check; every other one (Property=, Host=, Virtualization=,
# KernelCommandLine=, Path=, …) cannot be, and makes the match undecided.
CHECKED = frozenset({"MACAddress", "OriginalName", "Driver"})


@dataclasses.dataclass(frozen=True)
class LinkFile:
    path: str
    match: tuple[tuple[str, tuple[str, ...]], ...]  # key -> its list, after resets
    scatter_gather: tuple[str, int] | None  # (value, line)


def _words(value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError:
        return value.split()


@functools.lru_cache(maxsize=256)
def parse(file: ConfFile) -> LinkFile:
    section = ""
    lists: dict[str, list[str]] = {}
    sg: tuple[str, int] | None = None
    pending = ""
    for number, text in file.lines:
        text = pending + text.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        if text.startswith("[") and text.endswith("]"):
            section = text[1:-1]
            continue
        key, sep, value = text.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if section == "Match":
            lists[key] = [] if not value else [*lists.get(key, []), *_words(value)]
        elif section == "Link" and key == "ScatterGather":
            sg = (value, number) if value else None
    match = tuple((k, tuple(v)) for k, v in lists.items() if v)
    return LinkFile(file.path, match, sg)


def ordered(files: Sequence[ConfFile]) -> list[LinkFile]:
    """One file per name (the earliest directory wins; an empty one masks the name), in lexical order."""
    return [parse(f) for f in overridden(files, LINK_DIRS) if not f.masked]


def _mac(text: str) -> str:
    return re.sub(r"[^0-9a-f]", "", text.lower())


def _names(patterns: Sequence[str], value: str | None) -> bool | None:
    """A glob list; ``!`` before the first pattern inverts the whole list (systemd.link(5))."""
    inverted = bool(patterns) and patterns[0].startswith("!")
    globs = [patterns[0][1:], *patterns[1:]] if inverted else list(patterns)
    if value is None:
        return None if globs != ["*"] else not inverted
    return glob_any(globs, value) != inverted


def match(link: LinkFile, device: Device) -> tuple[bool | None, str | None]:
    unknown: str | None = None
    for key, values in link.match:
        if key == "MACAddress":
            found: bool | None = None if device.address is None else _mac(device.address) in map(_mac, values)
        elif key == "OriginalName":
            found = _names(values, device.original_name)
        elif key == "Driver":
            found = _names(values, device.driver)
        else:
            found = None
        if found is False:
            return False, None
        if found is None:
            unknown = unknown or f"{key}="
    return (None, unknown) if unknown else (True, None)


def _setting(link: LinkFile, version: int | None) -> Outcome:
    if link.scatter_gather is None:
        return Outcome()
    value, line = link.scatter_gather
    if version is None:
        return Outcome(problem=f"{link.path}:{line} sets ScatterGather=, and the systemd version is not known")
    if version < SCATTER_GATHER_SINCE:
        return Outcome()  # systemd before v260 ignores the key
    if value.lower() not in TRUE | FALSE:
        return Outcome(problem=f"{link.path}:{line}: ScatterGather={value!r} is not a boolean")
    return Outcome(Setting(value.lower() in TRUE, f"{link.path}:{line}"))


def evaluate(files: Sequence[ConfFile], device: Device, version: int | None) -> Outcome:
    """The first matching .link file's ScatterGather=; a match that cannot be checked must not matter."""
    possible: list[Outcome] = []
    undecided: str | None = None
    for link in ordered(files):
        found, unknown = match(link, device)
        if found is False:
            continue
        possible.append(_setting(link, version))
        if found:
            break
        undecided = undecided or f"{link.path} ({unknown})"
    else:
        possible.append(Outcome())  # no file matched at all
    problems = [o for o in possible if o.problem is not None]
    if problems:
        return problems[0]
    if len({o.setting for o in possible}) > 1:
        return Outcome(problem=f"cannot tell whether {undecided} applies to {device.name}")
    return possible[0]
