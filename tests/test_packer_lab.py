"""The Packer examples' audits against lab hosts that look like Xen guests (tests/lab.py).

- ``local://`` inside a host: ``xennet-audit --hosts=local://`` run in the host's own network
  and mount namespaces (``Lab.exec``: ``ip netns exec`` plus the host's bind mounts, its
  xen-netfront sysfs among them), as a `shell` provisioner would run it inside the build
  instance.
- Over SSH, exactly as the examples run it: the in-build ``shell-local`` provisioner and the
  after-build launch script, read from ``packer/`` and run as Packer runs them
  (tests/packer_example.py), log in to a lab host as a non-root ``ec2-user`` with the
  build's key, and check its host key against the keys on its "EC2 console". EC2 is the
  stand-in tests/fake_aws.py (no AWS here): its console is a real EC2 console output
  (tests/data/console/) carrying the lab host's key, and its "instance" is the lab host.

Everything the audit itself does is real: sshd, OpenSSH, the probe, the verdicts and reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import packer_example as px
from tests.conftest import make_lab
from tests.lab import HostPlan, IfacePlan, Lab, UserPlan

LAB_INDEX = 12
XENNET_AUDIT = str(Path(sys.executable).parent / "xennet-audit")
EC2_USER = (UserPlan("ec2-user"),)
# A build instance on a Xen type: its NICs are xen-netfront; eth1 has SG off.
GUEST = HostPlan("guest", (IfacePlan("eth0", xen=True), IfacePlan("eth1", sg=False, xen=True)), users=EC2_USER)
# The same image on Nitro: nothing is xen-netfront (here: veths, the audit's "virtual").
NITRO = HostPlan("nitro", (IfacePlan("eth0"), IfacePlan("eth1", sg=False)), users=EC2_USER)
GUEST_VERDICTS = {"eth0": "sg-on", "eth1": "susceptible"}


@pytest.fixture(scope="module")
def lab():
    with make_lab((GUEST, NITRO), LAB_INDEX) as started:
        yield started


@pytest.fixture
def guest_fixed(lab):
    """The guest with SG turned on everywhere, for the length of one test."""
    lab.set_sg("guest", "eth1", True)
    yield lab
    lab.set_sg("guest", "eth1", False)


def summary(reports: Path) -> dict:
    return json.loads((reports / "summary.json").read_text())


def verdicts(reports: Path) -> dict:
    return {r["interface"]: r["verdict"] for r in summary(reports)["results"]}


# ---- local:// inside the host -----------------------------------------------------------------


def audit_inside(lab: Lab, host: str, reports: Path, *args: str):
    """xennet-audit --hosts=local:// in the host's namespaces, as a build's own shell runs it."""
    argv = [XENNET_AUDIT, "--hosts=local://", f"--reports-dir={reports}", *args]
    return lab.exec(host, argv, check=False)


@pytest.mark.parametrize("require", [[], ["--xennet-require-applicable"]], ids=["plain", "require-applicable"])
def test_local_audit_inside_a_xen_guest_judges_its_xen_nics(lab, tmp_path, require):
    done = audit_inside(lab, "guest", tmp_path, *require)
    assert done.returncode == 1, done.stdout + done.stderr  # eth1 is susceptible
    assert verdicts(tmp_path) == GUEST_VERDICTS
    assert {r["driver"] for r in summary(tmp_path)["results"]} == {"xen_netfront"}
    assert summary(tmp_path)["target"] == "local"


def test_local_audit_inside_a_fixed_xen_guest_passes(guest_fixed, tmp_path):
    done = audit_inside(guest_fixed, "guest", tmp_path, "--xennet-require-applicable")
    assert done.returncode == 0, done.stdout + done.stderr
    assert verdicts(tmp_path) == {"eth0": "sg-on", "eth1": "sg-on"}


def test_local_audit_inside_a_host_without_xen_nics_passes_only_without_require_applicable(lab, tmp_path):
    vacuous = audit_inside(lab, "nitro", tmp_path / "plain")
    assert vacuous.returncode == 0, vacuous.stdout  # nothing in scope: the pass means nothing
    assert set(verdicts(tmp_path / "plain").values()) == {"not-applicable"}
    required = audit_inside(lab, "nitro", tmp_path / "required", "--xennet-require-applicable")
    assert required.returncode == 1, required.stdout
    assert verdicts(tmp_path / "required") == {
        None: "none-applicable",
        "eth0": "not-applicable",
        "eth1": "not-applicable",
    }
    (row,) = [r for r in summary(tmp_path / "required")["results"] if r["interface"] is None]
    assert row["message"] == "no interface in scope 'xen': drivers seen: virtual"


# ---- over SSH, as the examples run it ---------------------------------------------------------


def console_with_key_of(lab: Lab, host: str, path: Path) -> Path:
    """The real EC2 console output, its host key block carrying the lab host's own key."""
    key = " ".join((lab.host_dir(host) / "ssh_host_ed25519_key.pub").read_text().split()[:2])
    text = px.CONSOLE.read_text()
    begin, end = "-----BEGIN SSH HOST KEY KEYS-----\n", "-----END SSH HOST KEY KEYS-----\n"
    before, rest = text.split(begin)
    _, after = rest.split(end)
    path.write_text(f"{before}{begin}{key} root@{host}\n{end}{after}")
    return path


@pytest.fixture
def ec2(lab, tmp_path):
    """The stand-in EC2 account: its instances are lab hosts, its key pairs go to the lab's authorized_keys."""
    return px.FakeAws(tmp_path / "aws", lab.key_file.parent / "authorized_keys")


def run_in_build(lab: Lab, host: str, ec2: px.FakeAws, tmp_path: Path, host_keys: str = "console", console=None):
    """The in-build provisioner for a build instance that is this lab host, with the lab's key as the build's."""
    ec2.configure(console=str(console or console_with_key_of(lab, host, tmp_path / "console.txt")))
    provisioner = px.in_build(
        XENNET_AUDIT, host=lab.hosts[host].address, key=lab.key_file.read_text(), host_keys=host_keys
    )
    done = provisioner.run(ec2.environment(tmp_path), tmp_path, tmp_path)
    assert "PRIVATE KEY" not in done.stdout + done.stderr
    return done


@pytest.mark.parametrize("host_keys", ["console", "accept-new"])
def test_in_build_audit_over_ssh_fails_a_susceptible_build_instance(lab, ec2, tmp_path, host_keys):
    done = run_in_build(lab, "guest", ec2, tmp_path, host_keys)
    assert done.returncode == 1, done.stdout + done.stderr
    reports = tmp_path / "reports/in-build"
    assert verdicts(reports) == GUEST_VERDICTS
    assert summary(reports)["host_key_policy"] == ("strict" if host_keys == "console" else "accept-new")
    # The key the audit trusted is kept with the reports: the lab host's own, for its address
    # (OpenSSH hashes the name it records where ssh_config says HashKnownHosts).
    lab_key = (lab.host_dir("guest") / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    (line,) = (reports / "known_hosts").read_text().splitlines()
    assert line.split()[1:] == lab_key
    found = subprocess.run(
        ["ssh-keygen", "-F", lab.hosts["guest"].address, "-f", str(reports / "known_hosts")],
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0, found.stdout


def test_in_build_audit_over_ssh_passes_a_fixed_build_instance(guest_fixed, ec2, tmp_path):
    done = run_in_build(guest_fixed, "guest", ec2, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert verdicts(tmp_path / "reports/in-build") == {"eth0": "sg-on", "eth1": "sg-on"}


def test_in_build_audit_on_a_nitro_builder_fails_for_having_nothing_in_scope(lab, ec2, tmp_path):
    done = run_in_build(lab, "nitro", ec2, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert verdicts(tmp_path / "reports/in-build") == {
        None: "none-applicable", "eth0": "not-applicable", "eth1": "not-applicable"
    }  # fmt: skip


def test_in_build_audit_refuses_a_host_whose_key_is_not_the_consoles(guest_fixed, ec2, tmp_path):
    # The console shows other keys than the host presents: a man in the middle, for all we know.
    done = run_in_build(guest_fixed, "guest", ec2, tmp_path, console=px.CONSOLE)
    assert done.returncode == 1, done.stdout + done.stderr
    (row,) = summary(tmp_path / "reports/in-build")["results"]
    assert (row["verdict"], row["error_kind"]) == ("error", "host-key"), row
    assert "host key" in row["message"], row


@pytest.mark.parametrize(("fixed", "status", "tag"), [(False, 1, "failed"), (True, 0, "passed")])
def test_after_build_launches_audits_and_terminates(lab, ec2, tmp_path, fixed, status, tag):
    ec2.configure(address=lab.hosts["guest"].address, console=str(console_with_key_of(lab, "guest", tmp_path / "c")))
    if fixed:
        lab.set_sg("guest", "eth1", True)
    try:
        done = px.after_build(tmp_path, XENNET_AUDIT).run(ec2.environment(tmp_path), tmp_path, tmp_path)
    finally:
        if fixed:
            lab.set_sg("guest", "eth1", False)
    assert done.returncode == status, done.stdout + done.stderr
    reports = tmp_path / "reports/after-build"
    assert verdicts(reports) == ({"eth0": "sg-on", "eth1": "sg-on"} if fixed else GUEST_VERDICTS)
    assert summary(reports)["host_key_policy"] == "strict"
    state = ec2.state()
    assert [v["state"] for v in state["instances"].values()] == ["terminated"]
    assert state["key_pairs"] == [] and state["tags"] == [[px.AMI, f"Key=xennet-compliance,Value={tag}"]]
    assert "PRIVATE KEY" not in done.stdout + done.stderr
