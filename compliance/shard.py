"""Shards: split the host list across machines, ``--xennet-shard K/N``.

A host's shard depends only on its label and N (a jump consistent hash of the
label's SHA-256), never on the other hosts: adding or removing hosts never moves
the rest, and going from N to N+1 shards moves only about 1/(N+1) of them.

>>> Shard.parse("2/4")
Shard(index=2, count=4)
>>> shard_of("10.0.0.5", 4) in (1, 2, 3, 4)
True
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import TypeVar

_SPEC = re.compile(r"([1-9][0-9]{0,5})/([1-9][0-9]{0,5})")
_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = _SPEC.fullmatch(text.strip())
        if not match:
            raise ValueError(f"shard must be K/N with whole numbers 1 <= K <= N, got {text!r}")
        index, count = int(match.group(1)), int(match.group(2))
        if index > count:
            raise ValueError(f"shard {index}/{count}: K must not exceed N")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def option_type(text: str) -> Shard:
    """argparse ``type=``: a bad value is a usage error (pytest exit status 4)."""
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _jump_hash(key: int, buckets: int) -> int:
    """Lamping & Veach's jump consistent hash: a bucket in [0, buckets)."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def shard_of(label: str, count: int) -> int:
    """The 1-based shard of ``count`` that audits the host named ``label``."""
    key = int.from_bytes(hashlib.sha256(label.encode("utf-8", "surrogateescape")).digest()[:8], "big")
    return _jump_hash(key, count) + 1


def select(items: Iterable[_T], shard: Shard | None, label: str = "label") -> list[_T]:
    """The items (targets, with a ``label`` attribute) that belong to ``shard``; all when None."""
    items = list(items)
    if shard is None:
        return items
    return [item for item in items if shard_of(getattr(item, label), shard.count) == shard.index]


def split(labels: Sequence[str], count: int) -> dict[int, list[str]]:
    """Every shard's labels, 1..count (some may be empty for few hosts)."""
    shards: dict[int, list[str]] = {k: [] for k in range(1, count + 1)}
    for name in labels:
        shards[shard_of(name, count)].append(name)
    return shards
