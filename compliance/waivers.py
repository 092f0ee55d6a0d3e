r"""Waivers (``--xennet-waivers FILE``): accepted exposures, each justified, owned and dated.

The file is YAML, read with PyYAML's safe loader, and checked against a JSON Schema
(``waivers.schema.json``, beside this module) with ``jsonschema``. Each mistake is one line
naming the file and the line at fault (``FILE:LINE: message``), which the audit reports as a
usage error (exit status 4) before any host is contacted::

    waivers:
      - host: "10.0.0.*"          # fnmatch glob on the host label
        interface: "eth0"         # fnmatch glob on the interface name
        justification: "vendor appliance; fix scheduled"
        expires: 2027-03-31       # UTC date, inclusive
        owner: "OPS-1234"

What a waiver does (decided here; the audit applies it):

- It applies only to a **susceptible** interface that its two globs match. An ``error`` is
  never waived (fail closed: "could not determine" is not a risk anyone accepted), nor is
  ``none-applicable``; a passing case needs no waiver.
- Active (the run started, in UTC, on or before ``expires``): the case is xfail, with the
  justification as its reason. Expired: the case fails, naming the waiver and its expiry.
- When several match, the first active one in the file decides, else the first expired one.
- A waiver is *matched* when its globs match at least one susceptible case of the run; the
  others are listed as unmatched (a typo, a host gone, an interface fixed: review them).

PyYAML and jsonschema are imported only when a file is read: an audit without waivers
does not pay for them.

>>> ws = parse(b'''waivers:
...   - host: "10.0.0.*"
...     interface: "eth*"
...     justification: "vendor appliance; fix scheduled"
...     expires: 2027-03-31
...     owner: "OPS-1234"
... ''', "w.yml", as_of=datetime.date(2027, 3, 31))
>>> decision = ws.decide("10.0.0.5", "eth0")
>>> (decision.waiver.source, decision.active, ws.decide("10.0.1.5", "eth0"))
('w.yml:2', True, None)
>>> parse(b"waivers:\n  - {host: a, interface: b, justification: c, expires: 2027-02-30, owner: d}\n", "w.yml")
Traceback (most recent call last):
...
compliance.waivers.WaiverError: w.yml:2: waiver #1: 'expires' must be a date, YYYY-MM-DD (UTC); got a string ('2027-02-30')
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import importlib.resources
import json
import re
from collections.abc import Iterable
from fnmatch import translate
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema
    import yaml

KEYS = ("host", "interface", "justification", "expires", "owner")
SCHEMA_FILE = "waivers.schema.json"
MAX_BYTES = 1 << 20  # a waiver file is written by people; anything bigger is a wrong path (/dev/zero)
ACTIVE, EXPIRED = "active", "expired"


class WaiverError(ValueError):
    """The waiver file cannot be used: one line, ``FILE:LINE: message`` (or ``FILE: message``)."""


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(translate(pattern))  # fnmatch's syntax, case-sensitive on every platform


@dataclasses.dataclass(frozen=True)
class Waiver:
    """One entry of the file; ``index`` is its 1-based position, ``source`` its ``FILE:LINE``."""

    index: int
    source: str
    host: str
    interface: str
    justification: str
    expires: datetime.date
    owner: str

    def matches(self, host: str, interface: str | None) -> bool:
        """Both globs match; a host-level case (no interface) never matches.

        >>> w = Waiver(1, "w.yml:2", "web[0-9]*", "eth?", "j", datetime.date(2027, 1, 1), "o")
        >>> w.matches("web12", "eth0"), w.matches("web12", "eth10"), w.matches("WEB1", "eth0"), w.matches("web1", None)
        (True, False, False, False)
        """
        return (
            interface is not None
            and _glob(self.host).fullmatch(host) is not None
            and _glob(self.interface).fullmatch(interface) is not None
        )

    def active(self, as_of: datetime.date) -> bool:
        """Inclusive: a waiver that expires on a day still covers a run that started that day (UTC)."""
        return as_of <= self.expires

    def describe(self) -> str:
        """``waiver #N (FILE:LINE: host '…', interface '…', owner '…', expires YYYY-MM-DD)``"""
        return (
            f"waiver #{self.index} ({self.source}: host {self.host!r}, interface {self.interface!r}, "
            f"owner {self.owner!r}, expires {self.expires.isoformat()})"
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["expires"] = self.expires.isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Waiver:
        return cls(**{**data, "expires": datetime.date.fromisoformat(data["expires"])})


@dataclasses.dataclass(frozen=True)
class Decision:
    """What a waiver does to one susceptible case: waive it (active) or fail it (expired)."""

    waiver: Waiver
    active: bool
    as_of: datetime.date  # the run's start (UTC date): one date for every case and worker

    def reason(self) -> str:
        """The xfail reason: the justification, then which waiver and until when."""
        w = self.waiver
        return f"{w.justification} [waiver #{w.index} {w.source}, owner {w.owner}, expires {w.expires.isoformat()}]"

    def expired_message(self) -> str:
        return (
            f"expired {self.waiver.describe()}: it covered runs until {self.waiver.expires.isoformat()} (UTC, "
            f"inclusive); this run started on {self.as_of.isoformat()}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The row's ``waiver`` object."""
        return {**self.waiver.to_dict(), "status": ACTIVE if self.active else EXPIRED}


@dataclasses.dataclass(frozen=True)
class Waivers:
    """A checked waiver file, and the date its expiries are judged against."""

    entries: tuple[Waiver, ...]
    as_of: datetime.date
    sha256: str = ""

    def decide(self, host: str, interface: str | None) -> Decision | None:
        """The decision for a susceptible case: the first active match, else the first expired one."""
        matching = [w for w in self.entries if w.matches(host, interface)]
        for waiver in matching:
            if waiver.active(self.as_of):
                return Decision(waiver, True, self.as_of)
        return Decision(matching[0], False, self.as_of) if matching else None

    def unmatched(self, susceptible: Iterable[tuple[str, str | None]]) -> list[Waiver]:
        """The waivers that match none of these (host, interface) susceptible cases, in file order."""
        left = list(self.entries)
        for host, interface in susceptible:
            left = [w for w in left if not w.matches(host, interface)]
            if not left:
                break
        return left

    def file_info(self) -> dict[str, Any]:
        """summary.json's ``waivers``: which file (by content: paths differ between machines), how many entries."""
        return {"sha256": self.sha256, "count": len(self.entries)}

    def to_dict(self) -> dict[str, Any]:
        """For xdist workers (``workerinput``): they never read the file, so every worker judges the same."""
        return {"as_of": self.as_of.isoformat(), "sha256": self.sha256, "entries": [w.to_dict() for w in self.entries]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Waivers:
        return cls(
            tuple(Waiver.from_dict(w) for w in data["entries"]),
            datetime.date.fromisoformat(data["as_of"]),
            data["sha256"],
        )


# --------------------------------------------------------------------------- reading the file


def load(path: str, base: Path, as_of: datetime.date) -> Waivers:
    """Read and check the file at ``path`` (as given; relative to ``base``, ``~`` expanded)."""
    full = base / Path(path).expanduser()
    try:
        with open(full, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise WaiverError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise WaiverError(f"{path}: not a file") from None
    except PermissionError:
        raise WaiverError(f"{path}: not readable") from None
    except OSError as exc:
        raise WaiverError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise WaiverError(f"{path}: larger than {MAX_BYTES} bytes: not a waiver file")
    return parse(data, path, as_of)


def parse(data: bytes, name: str, as_of: datetime.date | None = None) -> Waivers:
    """Check ``data`` (the file's bytes; ``name`` labels it in messages) and build the waivers."""
    import yaml

    text = _decode(data, name)
    root = _compose(text, name)
    _refuse_duplicate_keys(root, name)
    document = _construct(root, text, name)
    _validate(document, root, name)
    items = _node_at(root, ["waivers"])
    nodes = items.value if isinstance(items, yaml.SequenceNode) else [items] * len(document["waivers"])
    entries = tuple(
        Waiver(
            index=i + 1,
            source=f"{name}:{_line(node)}",
            host=item["host"],
            interface=item["interface"],
            justification=item["justification"],
            expires=datetime.date.fromisoformat(item["expires"]),
            owner=item["owner"],
        )
        for i, (item, node) in enumerate(zip(document["waivers"], nodes))
    )
    today = as_of or datetime.datetime.now(datetime.timezone.utc).date()
    return Waivers(entries, today, hashlib.sha256(data).hexdigest())


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1  # marks count from 0


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise WaiverError(f"{name}:{line}: not UTF-8 text (byte {data[exc.start]:#04x})") from None


def _loader_class() -> type[yaml.SafeLoader]:
    import yaml

    class Loader(yaml.SafeLoader):
        """The safe loader, with dates left as text: the schema checks them, and names their line."""

    def as_text(loader: Loader, node: yaml.Node) -> Any:
        return loader.construct_yaml_str(node)

    Loader.add_constructor("tag:yaml.org,2002:timestamp", as_text)
    return Loader


def _yaml_error(exc: Exception, text: str, name: str) -> WaiverError:
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        at = f":{mark.line + 1}" if mark is not None else ""
        context = exc.context or ""
        if exc.context_mark is not None and mark is not None and exc.context_mark.line != mark.line:
            context += f" (line {exc.context_mark.line + 1})"
        what = ": ".join(p for p in (context, exc.problem) if p) or "cannot parse"
        return WaiverError(f"{name}{at}: YAML: {' '.join(what.split())}")
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return WaiverError(f"{name}:{line}: YAML: character U+{character:04X} is not allowed")
    return WaiverError(f"{name}: YAML: {' '.join(str(exc).split())}")


def _compose(text: str, name: str) -> yaml.Node:
    import yaml

    try:
        loader = _loader_class()(text)  # the reader refuses control characters here
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, name) from None
    if root is None:
        raise WaiverError(f"{name}:1: empty: expected a mapping with one key, 'waivers' (a list of waivers)")
    return root


def _construct(root: yaml.Node, text: str, name: str) -> Any:
    import yaml

    loader = _loader_class()("")
    try:
        return loader.construct_document(root)
    except yaml.YAMLError as exc:  # e.g. an unhashable key, an unknown tag
        raise _yaml_error(exc, text, name) from None
    finally:
        loader.dispose()


def _walk(root: yaml.Node) -> Iterable[yaml.Node]:
    """Every node once, in document order (aliases share nodes: each is visited once)."""
    import yaml

    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in reversed(node.value) for n in reversed(pair))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))


def _refuse_duplicate_keys(root: yaml.Node, name: str) -> None:
    """PyYAML keeps the last of two equal keys; a waiver file means what it says once."""
    import yaml

    problems = []
    for node in _walk(root):
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[str, int] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                if key.value in first:
                    problems.append((_line(key), f"duplicate key {key.value!r} (first on line {first[key.value]})"))
                first.setdefault(key.value, _line(key))
    _raise_first(problems, name)


def _raise_first(problems: list[tuple[int, str]], name: str) -> None:
    """The first problem in the file, by line, and how many more there are."""
    unique = sorted(set(problems))
    if unique:
        line, message = unique[0]
        more = len(unique) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise WaiverError(f"{name}:{line}: {message}{tail}")


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema of the file (``compliance/waivers.schema.json``)."""
    text = importlib.resources.files("compliance").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _validator() -> jsonschema.protocols.Validator:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema())
    return cls(schema(), format_checker=cls.FORMAT_CHECKER)


def _validate(document: Any, root: yaml.Node, name: str) -> None:
    problems = [_locate(error, root) for error in _validator().iter_errors(document)]
    _raise_first(problems, name)


def _node_at(root: yaml.Node, path: Iterable[Any]) -> yaml.Node:
    """The node at a JSON path (mapping keys, sequence indexes); the deepest one found."""
    import yaml

    node = root
    for part in path:
        if isinstance(node, yaml.MappingNode):
            found = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)]
            if not found:
                break
            node = found[-1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    return node


def _key_node(mapping: yaml.Node, key: Any) -> yaml.Node:
    import yaml

    if isinstance(mapping, yaml.MappingNode):
        for k, _ in mapping.value:
            if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                return k
    return mapping


def _subject(path: list[Any]) -> str:
    """What a JSON path names, as the message says it."""
    if not path:
        return "the file"
    if path == ["waivers"]:
        return "'waivers'"
    if len(path) < 2 or path[0] != "waivers" or not isinstance(path[1], int):
        return repr(".".join(map(str, path)))
    where = f"waiver #{path[1] + 1}"
    return where if len(path) == 2 else f"{where}: {path[2]!r}"


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()}: YAML reads yes, no, on, off as booleans; quote it)"
    if isinstance(value, (int, float)):
        return f"a number ({value!r}; quote it)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, str):
        return f"a string ({value!r})"
    return f"{type(value).__name__} {value!r}"


_TYPES = {"string": "a string", "array": "a list", "object": "a mapping (key: value)"}


def _locate(error: jsonschema.ValidationError, root: yaml.Node) -> tuple[int, str]:
    """(line, message) of one schema violation: the line of the YAML node at fault."""
    path = list(error.absolute_path)
    node = _node_at(root, path)
    subject = _subject(path)
    instance: Any = error.instance
    if error.validator == "required":
        required: Any = error.validator_value
        missing = [k for k in required if k not in instance]
        if not path:
            return _line(node), "missing key 'waivers' (a list of waivers)"
        return _line(node), f"{subject}: missing key(s) {', '.join(map(repr, missing))}"
    if error.validator == "additionalProperties":
        error_schema: Any = error.schema
        allowed = list(error_schema.get("properties", {}))
        extra = [k for k in instance if k not in allowed]
        keys = ", ".join(allowed)
        where = "" if not path else f"{subject}: "
        return _line(_key_node(node, extra[0])), f"{where}unknown key {extra[0]!r} (keys: {keys})"
    if error.validator == "format" or (error.validator == "type" and path[-1:] == ["expires"]):
        return _line(node), f"{subject} must be a date, YYYY-MM-DD (UTC); got {_kind(instance)}"
    if error.validator == "type":
        expected = _TYPES.get(str(error.validator_value), str(error.validator_value))
        return _line(node), f"{subject} must be {expected}; got {_kind(instance)}"
    if error.validator == "pattern":
        return _line(node), f"{subject} is empty"
    return _line(node), f"{subject}: {error.message}"
