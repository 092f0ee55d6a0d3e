"""Hosts that misbehave on purpose (sshd's ForceCommand): one that floods, one that trickles, one
that stops halfway. None may take the run down, hold the audit past its limits, or pass.

Each host here is an `error` with a one-line cause; the audit's memory stays bounded whatever
the timeout, because a host's output is capped (--xennet-max-output) and read as it comes.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess

import pytest

from tests.conftest import ROOT, audit_argv, lab_args, make_lab
from tests.lab import HostPlan

LAB_INDEX = 5
PLAN = (
    HostPlan("good"),
    HostPlan("flood", force_command="exec yes"),
    HostPlan("floodstderr", force_command="exec sh -c 'yes >&2'"),
    HostPlan("trickle", force_command="exec sh -c 'while :; do echo x; sleep 0.2; done'"),
    HostPlan("truncated", force_command="printf 'XENNET-PROBE 2\\nkernel\\t6.1\\nhypervisor\\txen\\n'"),
)
TIMEOUT = 8  # long: the flooding hosts must be stopped by the output cap, not by the clock


@pytest.fixture(scope="module")
def lab():
    with make_lab(PLAN, LAB_INDEX) as started:
        yield started


def audit_with_peak_rss(reports, *args):
    """Run the audit as a user would; return (completed process, peak RSS of its process tree in MiB)."""
    reports.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(
        audit_argv(reports, *args), cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, COLUMNS="200"),
    )  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest any child reached: a new peak shows as a change.
    return proc, max(peak, before) / 1024


@pytest.mark.parametrize("scheme", ["paramiko", "ssh"])
def test_flooding_trickling_and_truncated_hosts_are_one_line_errors(lab, tmp_path, scheme):
    args = [a for a in lab_args(lab, scheme=scheme) if not a.startswith("--xennet-timeout")]
    extra = [f"--ssh-config={lab.ssh_config}"] if scheme == "ssh" else []
    proc, peak_mib = audit_with_peak_rss(tmp_path, *args, *extra, f"--xennet-timeout={TIMEOUT}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    names = {h.address: n for n, h in lab.hosts.items()}
    found = {names[r["host"]]: (r["verdict"], r["message"]) for r in summary["results"] if r["interface"] is None}
    assert found == {
        "flood": ("error", "output exceeds 1048576 bytes"),
        "floodstderr": ("error", "output exceeds 1048576 bytes"),
        "trickle": ("error", f"timed out running the probe (limit {TIMEOUT}s)"),
        "truncated": ("error", "probe output is truncated: XENNET-PROBE 2\\nkernel\\t6.1\\nhypervisor\\txen\\n"),
    }, proc.stdout
    good = [r["verdict"] for r in summary["results"] if names[r["host"]] == "good"]
    assert good == ["sg-on"] and proc.returncode == 1
    # Unbounded, one flooding host held gigabytes by its deadline; capped, it holds at most 1 MiB.
    assert peak_mib < 200, f"peak RSS {peak_mib:.0f} MiB"


def test_the_cap_is_an_option(lab, tmp_path):
    args = [a for a in lab_args(lab, ["flood"]) if not a.startswith("--xennet-timeout")]
    proc, _ = audit_with_peak_rss(tmp_path, *args, f"--xennet-timeout={TIMEOUT}", "--xennet-max-output=65536")
    assert "output exceeds 65536 bytes" in proc.stdout, proc.stdout
