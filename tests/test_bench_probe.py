"""bench/run.py's cut-down probes (a+nb, a+s): run by a real sh on this machine's own sysfs, each
lacks exactly what it says, and still lists every interface, as bench/floor.py --script checks."""

from __future__ import annotations

import os
import subprocess

import pytest

from bench.run import PROBE_VARIANTS, probe_without, wall_verdict
from compliance.probe import END, PROBE_COMMAND, PROBE_INPUT, PROTOCOL


def run_probe(script: bytes) -> list[bytes]:
    done = subprocess.run([PROBE_COMMAND], input=script, capture_output=True, check=True, timeout=60)
    return done.stdout.split(b"\n")


@pytest.mark.parametrize("without", list(PROBE_VARIANTS), ids=[key for key, _ in PROBE_VARIANTS.values()])
def test_a_cut_down_probe_lacks_only_its_parts(without):
    lines = run_probe(probe_without(without))
    keys = {line.partition(b"\t")[0] for line in lines}
    assert lines[0] == PROTOCOL and END in lines
    names = sorted(n for n in os.listdir("/sys/class/net") if n != "lo")
    assert sorted(line[6:].decode() for line in lines if line.startswith(b"iface\t")) == names
    assert (b"boot_begin" in keys) is ("boot" not in without)
    found_ethtool = any(line.startswith(b"ethtool\t/") for line in lines)
    assert (b"ethtool_begin" in keys) is (found_ethtool and bool(names) and "ethtool" not in without)


def test_the_whole_probe_is_the_audits():
    assert probe_without(()) == PROBE_INPUT


def test_a_part_that_is_gone_is_an_error(monkeypatch):
    monkeypatch.setattr("compliance.probe.PROBE_SCRIPT", "echo nothing to cut")
    for part in ("boot", "ethtool"):
        with pytest.raises(ValueError, match="not found"):
            probe_without((part,))


def walls(**ratios):
    from types import SimpleNamespace

    return {"a": SimpleNamespace(wall=10.0)} | {
        k.replace("_", "+"): SimpleNamespace(wall=10 * v) for k, v in ratios.items()
    }


def test_the_wall_verdict_says_only_what_ran_as_the_table_rounds_it():
    # The run at 878b4b2: a+ 1.22, a+nb 1.16, a+s 1.06 (bench/RESULTS.md).
    (said, _) = wall_verdict(walls(a_=1.2239, a_nb=1.16, a_s=1.06))
    assert "took 1.22 ×" in said and "without its boot-configuration section was within it (1.16 ×)" in said
    # A part left out (--skip a+nb) is never spoken of; 1.2004 prints as 1.20, and is within.
    (said, _) = wall_verdict(walls(a_=1.25))
    assert "boot-configuration" not in said and "sysfs" not in said
    assert wall_verdict(walls(a_=1.2004))[0].startswith("The floor sending the whole probe is within 1.2 ×")
