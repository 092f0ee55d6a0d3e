"""udev rules that run ``ethtool -K … sg on|off`` at boot, as udev would apply them to one interface.

udev reads every ``*.rules`` file of /etc/udev/rules.d, /run/udev/rules.d,
/usr/local/lib/udev/rules.d, /usr/lib/udev/rules.d and /lib/udev/rules.d; a file in an
earlier directory replaces one of the same name in a later one (an empty file, or a link to
/dev/null, masks it), and all files are processed together in lexical order of their names.
At boot every device gets an ``add`` event. ``RUN`` programs run after all rules, in the order
they were added (``RUN=`` and ``RUN:=`` empty the list first; ``:=`` makes it final), so the
last ``ethtool -K`` that names SG decides.

A rule whose match the suite cannot check (``ATTRS{vendor}``, ``ENV{…}``, ``KERNEL==`` of a
renamed interface, …) is followed both ways; when the two ways end differently, the result
is a problem naming the rule, never a guess.

>>> from compliance.boot import ConfFile, Device, Level
>>> rule = ConfFile("udev", "/etc/udev/rules.d/70-x.rules",
...     ((2, 'ACTION=="add", SUBSYSTEM=="net", DRIVERS=="vif", RUN+="/usr/sbin/ethtool -K $name sg on"'),))
>>> evaluate([rule], Device("eth0", parents=(Level("vif-0", "xen", "vif"),))).describe()
'on (/etc/udev/rules.d/70-x.rules:2)'
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence

from compliance.boot import (
    UDEV_DIRS,
    ConfFile,
    Device,
    Level,
    Outcome,
    Setting,
    command_effect,
    name_matcher,
    overridden,
)

# udev's own names for the device in RUN: $name, %k, $kernel, $env{INTERFACE}, %E{INTERFACE}.
NAME_WORDS = ("$name", "$kernel", "%k", "$env{INTERFACE}", "%E{INTERFACE}")
PARENT_KEYS = frozenset({"KERNELS", "SUBSYSTEMS", "DRIVERS", "ATTRS"})
MATCH_OPS = frozenset({"==", "!="})
PATH_LIMIT = 256  # ways through the rules followed at most, when matches cannot be checked

_TOKEN = re.compile(
    r'\s*(?P<key>[A-Z_]+)(?:\{(?P<attr>[^}]*)\})?\s*(?P<op>==|!=|\+=|-=|:=|=)\s*[a-z]?"(?P<value>(?:[^"\\]|\\.)*)"\s*(?:,|$)'
)


@dataclasses.dataclass(frozen=True)
class Token:
    key: str
    attr: str | None
    op: str
    value: str

    @property
    def label(self) -> str:
        return self.key + (f"{{{self.attr}}}" if self.attr is not None else "")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One RUN program that touches SG (or may: ``doubt``)."""

    value: str
    setting: Setting | None
    doubt: str | None = None


@dataclasses.dataclass(frozen=True)
class Rule:
    where: str  # path:line
    tokens: tuple[Token, ...]
    error: str | None = None
    text: str = ""

    def values(self, key: str) -> list[Token]:
        return [t for t in self.tokens if t.key == key]

    @property
    def goto(self) -> str | None:
        found = [t.value for t in self.tokens if t.key == "GOTO"]
        return found[-1] if found else None

    @property
    def label(self) -> str | None:
        found = [t.value for t in self.tokens if t.key == "LABEL"]
        return found[-1] if found else None

    def runs(self) -> list[Token]:
        return [t for t in self.tokens if t.key == "RUN" and t.attr in (None, "program") and t.op not in MATCH_OPS]


def tokens(text: str) -> tuple[Token, ...] | None:
    """A rule's tokens, or None when the line is not udev syntax (udev skips such a line).

    >>> [t.label for t in tokens('SUBSYSTEM=="net", ATTR{address}=="a", RUN+="x"')]
    ['SUBSYSTEM', 'ATTR{address}', 'RUN']
    """
    found: list[Token] = []
    at = 0
    text = text.rstrip()
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            return None
        value = re.sub(r"\\(.)", r"\1", match.group("value"))
        found.append(Token(match.group("key"), match.group("attr"), match.group("op"), value))
        at = match.end()
    return tuple(found)


@functools.lru_cache(maxsize=256)
def parse(file: ConfFile) -> tuple[Rule, ...]:
    """The rules of one file; a line ending in ``\\`` continues on the next one (cached: every
    interface of a host reads the same files)."""
    rules: list[Rule] = []
    pending: tuple[int, str] | None = None
    for number, text in file.lines:
        if pending is not None:
            number, text = pending[0], pending[1] + text.lstrip()
            pending = None
        if text.rstrip().endswith("\\"):
            pending = (number, text.rstrip()[:-1])
            continue
        where = f"{file.path}:{number}"
        found = tokens(text)
        error = None if found is not None else f"{where} is not a udev rule the suite can read"
        rules.append(Rule(where, found or (), error, text))
    if pending is not None:
        where = f"{file.path}:{pending[0]}"
        rules.append(Rule(where, (), f"{where} is continued past the end of the file", pending[1]))
    return tuple(rules)


def ordered(files: Sequence[ConfFile]) -> list[ConfFile]:
    """udev's file set: one file per name (the earliest directory wins), in lexical order of names."""
    return overridden(files, UDEV_DIRS)


# --------------------------------------------------------------------------- matching


def pattern_match(pattern: str, value: str) -> bool:
    """udev's match: ``|`` separates alternatives, each a shell glob (or plain text).

    >>> pattern_match("add|change", "add"), pattern_match("eth*", "ens5"), pattern_match("", "")
    (True, False, True)
    """
    import fnmatch

    return any(fnmatch.fnmatchcase(value, alternative) for alternative in pattern.split("|"))


def _compare(token: Token, value: str | None) -> bool | None:
    if value is None:
        return None
    found = pattern_match(token.value, value)
    return found if token.op == "==" else not found


def _device_value(token: Token, device: Device) -> str | None:
    """The value a device key has at boot, or None when the suite cannot know it."""
    attributes = {
        "address": device.address,
        "type": device.type,
        "mtu": None if device.mtu is None else str(device.mtu),
    }
    known: dict[str, str | None] = {
        "ACTION": "add",
        "SUBSYSTEM": "net",
        "KERNEL": device.original_name,
        "NAME": device.original_name,
        "DRIVER": "",  # a net device has no driver of its own; its parent has
    }
    if token.key in known:
        return known[token.key]
    if token.key == "ATTR" and token.attr in attributes:
        return attributes[token.attr]
    if token.key == "ENV" and token.attr == "INTERFACE":
        return device.original_name
    return None


def _level_value(token: Token, level: Level, index: int, device: Device) -> str | None:
    if token.key == "KERNELS":
        return level.kernel if index else device.original_name
    if token.key == "SUBSYSTEMS":
        return level.subsystem
    if token.key == "DRIVERS":
        return level.driver
    if token.key == "ATTRS" and index == 0:
        return _device_value(Token("ATTR", token.attr, token.op, token.value), device)
    return None


def match(rule: Rule, device: Device) -> tuple[bool | None, str | None]:
    """(True/False/None, the first key it could not check). Parent keys must all match one device of the chain."""
    unknown: str | None = None
    for token in rule.tokens:
        if token.op not in MATCH_OPS or token.key in PARENT_KEYS:
            continue
        found = _compare(token, _device_value(token, device))
        if found is False:
            return False, None
        if found is None and unknown is None:
            unknown = token.label
    parents = [t for t in rule.tokens if t.key in PARENT_KEYS and t.op in MATCH_OPS]
    if parents:
        levels = [
            [_compare(t, _level_value(t, level, i, device)) for t in parents] for i, level in enumerate(device.chain)
        ]
        if not any(all(r is True for r in level) for level in levels):
            if all(any(r is False for r in level) for level in levels):
                return False, None
            unknown = unknown or next(t.label for t in parents)
    return (None, unknown) if unknown else (True, None)


# --------------------------------------------------------------------------- what the rules do


def _entry(token: Token, rule: Rule, device: Device) -> Entry | None:
    effect = command_effect(token.value, name_matcher(device.name, NAME_WORDS))
    if effect.doubt is not None:
        return Entry(token.value, None, f"{rule.where}: {effect.doubt}")
    if effect.on is not None:
        return Entry(token.value, Setting(effect.on, rule.where))
    return None


def _side_effects(rule: Rule, device: Device) -> str | None:
    """PROGRAM and IMPORT{program} run while rules are processed: one that changes SG is not ordered here."""
    for token in rule.tokens:
        if token.key == "PROGRAM" or (token.key == "IMPORT" and token.attr == "program"):
            effect = command_effect(token.value, name_matcher(device.name, NAME_WORDS))
            if effect.doubt is not None or effect.on is not None:
                return f"{rule.where} changes scatter-gather from {token.label}, which the suite does not follow"
    return None


def _relevant(rule: Rule, device: Device) -> bool:
    """Only rules that jump, empty the RUN list or add an SG program can change which one runs last."""
    return bool(rule.goto) or any(t.op != "+=" or _entry(t, rule, device) is not None for t in rule.runs())


def _apply(rule: Rule, device: Device, run: tuple[Entry, ...], final: bool) -> tuple[tuple[Entry, ...], bool]:
    for token in rule.runs():
        if final:
            break
        entry = _entry(token, rule, device)
        if token.op in ("=", ":="):
            run = ()
        elif token.op == "-=":
            run = tuple(e for e in run if e.value != token.value)
            continue
        if entry is not None:
            run = (*run, entry)
        final = token.op == ":="
    return run, final


def evaluate(files: Sequence[ConfFile], device: Device) -> Outcome:
    """What udev's rules do to SG of ``device`` at boot: the last RUN program that names SG."""
    rules = [rule for file in ordered(files) for rule in parse(file)]
    files_of = [rule.where.rsplit(":", 1)[0] for rule in rules]
    for rule in rules:
        if rule.error is not None and "ethtool" in rule.text:
            return Outcome(problem=rule.error)
        side = _side_effects(rule, device)
        if side is not None:
            return Outcome(problem=side)
    relevant = [_relevant(rule, device) for rule in rules]
    ends: list[tuple[Entry | None, tuple[str, ...]]] = []
    stack: list[tuple[int, tuple[Entry, ...], bool, tuple[str, ...]]] = [(0, (), False, ())]
    while stack:
        index, run, final, why = stack.pop()
        while index < len(rules):
            rule = rules[index]
            if rule.error is not None or not relevant[index]:
                index += 1
                continue
            found, unknown = match(rule, device)
            if found is None:
                if len(stack) + len(ends) >= PATH_LIMIT:
                    return Outcome(problem=f"too many udev rules whose match cannot be checked (from {rule.where})")
                stack.append((index + 1, run, final, why))
                why = (*why, f"{rule.where} ({unknown})")
                found = True
            if not found:
                index += 1
                continue
            run, final = _apply(rule, device, run, final)
            label = rule.goto
            targets = [
                i for i in range(index + 1, len(rules)) if files_of[i] == files_of[index] and rules[i].label == label
            ]
            index = targets[0] if label and targets else index + 1
        ends.append((run[-1] if run else None, why))
    return _outcome(ends, device)


def _outcome(ends: list[tuple[Entry | None, tuple[str, ...]]], device: Device) -> Outcome:
    for last, _ in ends:
        if last is not None and last.doubt is not None:
            return Outcome(problem=last.doubt)
    results = {None if last is None else last.setting for last, _ in ends}
    if len(results) == 1:
        (setting,) = results
        return Outcome(setting)
    why = next(w for _, w in ends if w)
    return Outcome(problem=f"cannot tell whether udev rule {why[0]} applies to {device.name}")
