"""Targets and labels from host specs: no host is contacted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest
from cryptography.exceptions import InvalidTag

from compliance.backends import INTEGRITY_FAILED, LostConnection, failed_integrity
from compliance.gather import HostResult, describe_error, error_kind
from compliance.options import HOSTS_PER_PROCESS
from compliance.probe import HostFacts, InterfaceFacts
from compliance.report import target_description
from compliance.targets import Target, expand
from compliance.targets import redact as redact_spec


def make_targets(specs, **kwargs):
    return expand(specs, **kwargs).targets


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("spec", "label"),
    [
        ("paramiko://root@10.0.0.5", "10.0.0.5"),
        ("paramiko://root:s3cret@10.0.0.5:2222", "10.0.0.5:2222"),
        ("ssh://ec2-user@web1:22", "web1"),
        ("ssh://web1", "web1"),
        ("paramiko://root@[fe80::1]:2222", "[fe80::1]:2222"),
        ("10.0.0.7", "10.0.0.7"),
        ("local://", "local"),
    ],
)
def test_labels_have_no_scheme_user_or_password(spec, label):
    (target,) = make_targets([spec])
    assert target.label == label


def test_no_hosts_means_this_machine():
    assert [t.label for t in make_targets(None)] == ["local"]


def test_targets_are_sorted_by_label():
    targets = make_targets(["ssh://b", "paramiko://root@a", "paramiko://ec2-user@c"])
    assert [t.label for t in targets] == ["a", "b", "c"]


@pytest.mark.parametrize("inventory", ["example.ini", "example.yml"])
def test_example_inventories_expand_to_their_hosts(inventory):
    pytest.importorskip("ansible", reason="ansible-core is the optional [ansible] extra")
    targets = make_targets(["ansible://all"], ansible_inventory=str(ROOT / "inventories" / inventory))
    assert [t.label for t in targets] == ["db1", "web1", "web2"]


@pytest.mark.parametrize(
    ("spec", "redacted"),
    [
        ("paramiko://root:s3cret@10.0.0.5", "paramiko://root@10.0.0.5"),
        ("paramiko://root:p@ss:w0rd@10.0.0.5:2222", "paramiko://root@10.0.0.5:2222"),
        ("ssh://web1", "ssh://web1"),
        ("root:pw@web1", "root@web1"),
    ],
)
def test_specs_are_redacted(spec, redacted):
    assert redact_spec(spec) == redacted


def test_target_description_never_shows_a_password():
    text = target_description("paramiko://root:s3cret@a," + ",".join(f"ssh://h{i}" for i in range(9)))
    assert "s3cret" not in text and text.endswith("and 5 more")
    assert target_description(None) == "local (this machine)"


def test_host_results_survive_the_trip_to_xdist_workers():
    facts = HostFacts(
        "6.1", "xen", "Xen", None, "/usr/sbin/ethtool", (InterfaceFacts("$(x)", "vif", False, 1500, False, True),)
    )
    results = (
        HostResult("web1", facts=facts, seconds=0.25),
        HostResult("web2", error="connection refused", error_kind="refused", seconds=12.5),
    )
    for result in results:
        assert HostResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    # the gathering time and the error kind reach the cases the workers build
    from compliance.cases import build_cases

    assert [(c.seconds, c.error_kind) for c in build_cases(list(results))] == [(0.25, None), (12.5, "refused")]


def test_a_host_showing_no_interface_is_in_doubt_not_a_pass():
    from compliance.cases import build_cases

    facts = HostFacts("6.1", None, None, None, "/usr/sbin/ethtool", ())
    (case,) = build_cases([HostResult("web1", facts=facts)])
    judgement = case.judge("all")
    assert (case.id, judgement.verdict.value) == ("web1", "error")
    assert judgement.message == "no network interface besides lo in /sys/class/net"


# ---------------------------------------------------------------- a connection lost mid-run


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (LostConnection(), "connection lost running the probe"),
        (LostConnection(INTEGRITY_FAILED), f"connection lost running the probe: {INTEGRITY_FAILED}"),
        (LostConnection(INTEGRITY_FAILED, phase="connecting"), f"connection lost connecting: {INTEGRITY_FAILED}"),
    ],
)
def test_a_lost_connection_is_one_line_of_kind_unreachable(exc, message):
    target = Target("10.0.0.5", "paramiko://10.0.0.5", "paramiko", "10.0.0.5")
    assert (describe_error(exc, target), error_kind(exc)) == (message, "unreachable")


@pytest.mark.parametrize(
    ("exc", "failed"),
    [
        (InvalidTag(), True),  # AES-GCM's tag: what paramiko's transport dies of, as cryptography raises it
        (paramiko.SSHException("Mismatched MAC"), True),  # an HMAC (CTR ciphers): paramiko's words
        (paramiko.SSHException("Signature verification (ssh-ed25519) failed."), False),  # the host key's
        (EOFError(), False),
        (None, False),
    ],
)
def test_only_a_failed_mac_or_tag_is_an_integrity_failure(exc, failed):
    assert failed_integrity(exc) is failed


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs two usable CPUs"
)
def test_auto_processes_count_the_cpus_this_process_may_use() -> None:
    """An agent limited by taskset or a container's cpuset forks no spare for CPUs it may not use."""
    one = min(os.sched_getaffinity(0))
    code = "from compliance.gather import processes_for; print(processes_for(1000, None))"

    def auto(cpus: set[int]) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
        )
        return done.stdout.strip()

    assert auto({one}) == "1"
    assert auto(os.sched_getaffinity(0)) == str(min(len(os.sched_getaffinity(0)), 1000 // HOSTS_PER_PROCESS))
