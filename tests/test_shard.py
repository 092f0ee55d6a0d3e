"""The shard split (--xennet-shard K/N): deterministic, disjoint, complete, stable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from compliance.shard import Shard, select, shard_of, split
from tests.conftest import ROOT

HOSTS = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(2000)] + [
    "web1",
    "db-2.example.com",
    "[::1]:2222",
]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 16])
def test_every_host_is_in_exactly_one_shard(count):
    shards = split(HOSTS, count)
    assert sorted(shards) == list(range(1, count + 1))
    assert sorted(h for hosts in shards.values() for h in hosts) == sorted(HOSTS)


def test_shards_are_balanced():
    sizes = [len(hosts) for hosts in split(HOSTS, 4).values()]
    assert max(sizes) - min(sizes) < 0.15 * len(HOSTS) / 4, sizes


def test_a_hosts_shard_depends_only_on_its_name():
    # Adding hosts (or reordering them) never moves a host to another shard.
    before = split(HOSTS[:1000], 4)
    after = split(list(reversed(HOSTS)), 4)
    for index, hosts in before.items():
        assert set(hosts) <= set(after[index])


def test_the_split_is_a_fixed_function_of_the_name():
    # Pinned values: a change of hash would silently reshuffle every fleet's shards.
    assert [shard_of(h, 4) for h in ("10.0.0.1", "10.0.0.2", "web1", "db-2.example.com", "[::1]:2222")] == [
        2,
        2,
        1,
        3,
        2,
    ]
    # ...and not Python's salted hash(): another interpreter agrees.
    code = "from compliance.shard import shard_of; print([shard_of(h, 5) for h in ('10.0.0.1', 'web1', 'é')])"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=ROOT,
    )
    assert other.stdout.strip() == str([shard_of(h, 5) for h in ("10.0.0.1", "web1", "é")])


def test_one_more_shard_moves_few_hosts():
    four, five = ({h: shard_of(h, n) for h in HOSTS} for n in (4, 5))
    moved = sum(four[h] != five[h] for h in HOSTS)
    assert moved < 0.3 * len(HOSTS)  # about 1/5 with a consistent hash; 4/5 with a plain modulo
    assert all(five[h] == 5 for h in HOSTS if four[h] != five[h])  # hosts only move to the new shard


def test_select_keeps_the_order_and_none_means_all():
    class Target:
        def __init__(self, label):
            self.label = label

    targets = [Target(h) for h in HOSTS[:50]]
    assert select(targets, None) == targets
    chosen = select(targets, Shard(2, 3))
    assert chosen == [t for t in targets if shard_of(t.label, 3) == 2]


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "a/b", "2", "2/", "/4", "-1/4", "1/4/2", " ", "1.5/4"])
def test_bad_shards_are_refused(text):
    with pytest.raises(ValueError):
        Shard.parse(text)


def test_good_shards_parse():
    assert Shard.parse("1/1") == Shard(1, 1)
    assert str(Shard.parse("3/12")) == "3/12"


@pytest.mark.parametrize("value", ["0/4", "5/4", "x"])
def test_a_bad_shard_option_is_a_usage_error(value, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--xennet-shard={value}",
            f"--junitxml={tmp_path / 'j.xml'}",
            f"--html={tmp_path / 'r.html'}",
            f"--xennet-summary={tmp_path / 's.json'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "--xennet-shard" in proc.stderr
    # No report that could pass for an audit: the summary only says why the run stopped.
    assert not (tmp_path / "j.xml").exists() and not (tmp_path / "r.html").exists()
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["complete"] is False and summary["error"].startswith("--xennet-shard") and summary["results"] == []
