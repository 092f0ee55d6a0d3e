"""Fixtures for the project's own tests: a session-wide lab of real SSH hosts, and a
helper that runs the audit against it exactly as a user would (``python -m pytest``)."""

from __future__ import annotations

import dataclasses
import html
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.lab import HostPlan, IfacePlan, Lab, require_networkmanager, require_root

ROOT = Path(__file__).resolve().parent.parent

# Mixed states; the verdict each interface must get under --xennet-scope=all.
PLAN = (
    HostPlan("sgon", (IfacePlan("eth0", mtu=1500, sg=True),)),
    HostPlan("jumbo", (IfacePlan("eth0", mtu=9001, sg=False),)),
    HostPlan("exposed", (IfacePlan("eth0", mtu=1500, sg=False),)),
    HostPlan(
        "multi",
        (
            IfacePlan("eth0", mtu=1500, sg=True),
            IfacePlan("eth1", mtu=1500, sg=False),
            IfacePlan("eth2", mtu=9001, sg=False),
            IfacePlan("eth1.100", mtu=1500, sg=True),
        ),
    ),
    HostPlan("bigmtu", (IfacePlan("eth0", mtu=9216, sg=False),)),
    HostPlan("below", (IfacePlan("eth0", mtu=9000, sg=False),)),
    HostPlan("mixed", (IfacePlan("eth0", mtu=9001, sg=True), IfacePlan("eth1", mtu=1500, sg=False))),
    HostPlan("plain1", (IfacePlan("eth0"),)),
    HostPlan("plain2", (IfacePlan("eth0"), IfacePlan("eth1"))),
    HostPlan("plain3", (IfacePlan("eth0", mtu=1500, sg=False),)),
    HostPlan("dead", sshd=False),
    HostPlan("hung", hang=True),
    HostPlan("noethtool", ethtool=False),
    # Names Linux allows; each would run a command if it ever reached a shell unquoted.
    HostPlan(
        "hostile",
        (
            IfacePlan("eth0"),
            IfacePlan("$(>xnl-pwned)", sg=False),
            IfacePlan("`>xnl-pwn2`"),
            IfacePlan("a;b"),
            IfacePlan("a|b"),
            IfacePlan("a'b"),
            IfacePlan("<b>x<b>", sg=False),
        ),
    ),
)
HOSTILE_MARKERS = ("xnl-pwned", "xnl-pwn2")
EXPECTED = {
    ("sgon", "eth0"): "sg-on",
    ("jumbo", "eth0"): "jumbo-mtu",
    ("exposed", "eth0"): "susceptible",
    ("multi", "eth0"): "sg-on",
    ("multi", "eth1"): "susceptible",
    ("multi", "eth2"): "jumbo-mtu",
    ("multi", "eth1.100"): "sg-on",
    ("bigmtu", "eth0"): "jumbo-mtu",
    ("below", "eth0"): "susceptible",
    ("mixed", "eth0"): "sg-on",
    ("mixed", "eth1"): "susceptible",
    ("plain1", "eth0"): "sg-on",
    ("plain2", "eth0"): "sg-on",
    ("plain2", "eth1"): "sg-on",
    ("plain3", "eth0"): "susceptible",
    ("dead", None): "error",
    ("hung", None): "error",
    ("noethtool", None): "error",
    ("hostile", "eth0"): "sg-on",
    ("hostile", "$(>xnl-pwned)"): "susceptible",
    ("hostile", "`>xnl-pwn2`"): "sg-on",
    ("hostile", "a;b"): "sg-on",
    ("hostile", "a|b"): "sg-on",
    ("hostile", "a'b"): "sg-on",
    ("hostile", "<b>x<b>"): "susceptible",
}
LAB_TIMEOUT = 3


@contextmanager
def signal_at_default(signum: int) -> Iterator[None]:
    """The signal at its default in the processes started meanwhile: a run under nohup (or started in
    the background by a shell) hands them HUP (or INT) ignored, and neither sh nor Python takes over a
    signal ignored on entry. A CI job's abort, or Ctrl-C, reaches processes whose signals are not ignored."""
    previous = signal.signal(signum, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def make_lab(plan, index: int = 0) -> Lab:
    """A lab of its own for ``plan``: labs with different indexes never collide.

    Prefix and network come from XENNET_LAB_PREFIX / XENNET_LAB_NETWORK (defaults
    ``xnl``, ``198.18.0.0/20``) so that two test runs on one machine can coexist;
    lab ``index`` gets the index-th /24 of that network (16 labs in a /20).
    """
    reason = require_root()
    if reason:
        pytest.skip(f"lab needs root and its tools: {reason}")
    reason = require_networkmanager() if any(h.networkmanager for h in plan) else None
    if reason:
        pytest.skip(reason)
    prefix = os.environ.get("XENNET_LAB_PREFIX", "xnl")
    network = ipaddress.IPv4Network(os.environ.get("XENNET_LAB_NETWORK", "198.18.0.0/20"))
    subnet = list(network.subnets(new_prefix=24))[index]
    return Lab(plan, prefix=prefix if index == 0 else f"{prefix}{index}", network=str(subnet))


def fresh_lab_fixture(index: int):
    """A ``fresh_lab`` fixture: a lab of its own (index ``index``) per test, planned by :func:`lab_plan`.

    For tests that change hosts: the session lab is read-only.
    """

    @pytest.fixture
    def fresh_lab(request):
        with make_lab(request.param, index) as started:
            yield started

    return fresh_lab


def lab_plan(*hosts):
    """Mark a test that uses ``fresh_lab`` with that lab's plan."""
    return pytest.mark.parametrize("fresh_lab", [hosts], indirect=True, ids=["lab"])


@pytest.fixture(scope="session")
def lab():
    """The session's lab of PLAN, read-only for tests (tests that change hosts make their own)."""
    with make_lab(PLAN) as started:
        yield started


@dataclasses.dataclass
class Audit:
    """One finished audit run and its reports."""

    returncode: int
    stdout: str
    stderr: str
    reports: Path

    @property
    def summary(self) -> dict:
        return json.loads((self.reports / "summary.json").read_text())

    @property
    def junit(self) -> ET.Element:
        return ET.parse(self.reports / "junit.xml").getroot()

    @property
    def html(self) -> str:
        return (self.reports / "report.html").read_text()

    @property
    def html_rendered(self) -> str:
        """What pytest-html's script renders as HTML: the environment and each row's cells and log.

        The rows live in an attribute-escaped JSON blob; its keys are never shown.
        """
        blob = json.loads(html.unescape(re.search(r'data-jsonblob="([^"]*)"', self.html).group(1)))
        rows = ["".join(t["resultsTableRow"]) + t["log"] for tests in blob["tests"].values() for t in tests]
        return "\n".join([json.dumps(blob["environment"]), *rows])

    def verdicts(self, lab: Lab) -> dict:
        """(lab host name, interface) -> verdict, from summary.json."""
        names = {h.address: name for name, h in lab.hosts.items()}
        return {(names[r["host"]], r["interface"]): r["verdict"] for r in self.summary["results"]}


def audit_argv(reports: Path, *args: str) -> list[str]:
    """The command line of an audit as a user would type it, writing reports under ``reports``."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--junitxml={reports / 'junit.xml'}",
        f"--html={reports / 'report.html'}",
        f"--xennet-summary={reports / 'summary.json'}",
        f"--xennet-summary-html={reports / 'summary.html'}",
        *args,
    ]


def run_audit(reports: Path, *args: str, timeout: float = 300, env: dict | None = None) -> Audit:
    """Run the audit as a user would, from the project root, writing reports under ``reports``."""
    reports.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        audit_argv(reports, *args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, COLUMNS="200", **(env or {})),
    )
    return Audit(proc.returncode, proc.stdout, proc.stderr, reports)


def live_children(pid: int) -> list[int]:
    """The process's children that are still running (not zombies waiting to be reaped)."""
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [c for c in children if Path(f"/proc/{c}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]


def lab_targets(lab: Lab, names, scheme: str = "paramiko", **kw):
    """The suite's targets for lab hosts ``names``, with the lab's key, known_hosts and timeout
    (each overridable), for tests that drive gathering or a backend in this process."""
    from compliance.targets import expand

    kw.setdefault("ssh_identity_file", str(lab.key_file))
    kw.setdefault("known_hosts", str(lab.known_hosts))
    kw.setdefault("timeout", LAB_TIMEOUT)
    return expand([lab.spec(n, scheme=scheme) for n in names], **kw).targets


def lab_args(lab: Lab, names=None, scheme: str = "paramiko") -> list[str]:
    names = list(names or lab.hosts)
    return [
        "--hosts=" + ",".join(lab.spec(n, scheme=scheme) for n in names),
        f"--ssh-identity-file={lab.key_file}",
        f"--ssh-known-hosts={lab.known_hosts}",
        f"--xennet-timeout={LAB_TIMEOUT}",
        "--xennet-scope=all",
    ]
