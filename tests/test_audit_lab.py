"""The audit, run as a user runs it, against the lab's real SSH hosts."""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import EXPECTED, HOSTILE_MARKERS, LAB_TIMEOUT, ROOT, lab_args, run_audit


@pytest.fixture(scope="module")
def serial(lab, tmp_path_factory):
    return run_audit(tmp_path_factory.mktemp("serial"), *lab_args(lab))


@pytest.fixture(scope="module")
def parallel(lab, tmp_path_factory):
    before = {name: lab.sshd_events(name) for name in lab.hosts}
    audit = run_audit(tmp_path_factory.mktemp("xdist"), *lab_args(lab), "-n", "2")
    audit.sshd_delta = {name: tuple(a - b for a, b in zip(lab.sshd_events(name), before[name])) for name in lab.hosts}
    return audit


@pytest.fixture(scope="module")
def processes(lab, tmp_path_factory):
    before = {name: lab.sshd_events(name) for name in lab.hosts}
    audit = run_audit(tmp_path_factory.mktemp("processes"), *lab_args(lab), "--xennet-processes=3")
    audit.sshd_delta = {name: tuple(a - b for a, b in zip(lab.sshd_events(name), before[name])) for name in lab.hosts}
    return audit


def test_every_interface_gets_its_verdict_in_summary_json(lab, serial):
    assert serial.verdicts(lab) == EXPECTED, serial.stdout
    summary = serial.summary
    assert summary["schema"] == 2 and summary["scope"] == "all" and summary["complete"] is True
    assert summary["counts"] == {"sg-on": 12, "jumbo-mtu": 3, "susceptible": 7, "not-applicable": 0, "error": 3}


def test_summary_rows_carry_the_kernel_state(lab, serial):
    rows = {(r["host"], r["interface"]): r for r in serial.summary["results"]}
    row = rows[(lab.hosts["multi"].address, "eth2")]
    assert (row["mtu"], row["scatter_gather"], row["virtual"], row["driver"]) == (9001, "off", True, None)
    assert row["message"] == "MTU is set to Jumbo-Frame size on eth2. This mitigates the bug."
    assert row["kernel"] and row["sg_fixed"] is False


def test_exit_status_is_nonzero_when_any_interface_is_exposed_or_in_error(serial):
    assert serial.returncode == 1


def test_exit_status_is_zero_when_everything_is_mitigated(lab, tmp_path):
    audit = run_audit(tmp_path, *lab_args(lab, ["sgon", "jumbo", "plain1"]))
    assert audit.returncode == 0, audit.stdout
    assert set(audit.verdicts(lab).values()) == {"sg-on", "jumbo-mtu"}


def test_xdist_gives_the_same_results(serial, parallel):
    strip = lambda s: [{k: v for k, v in r.items()} for r in s["results"]]  # noqa: E731
    assert strip(parallel.summary) == strip(serial.summary)
    assert parallel.summary["counts"] == serial.summary["counts"]
    assert parallel.returncode == serial.returncode == 1


def test_xdist_contacts_each_host_once_with_one_command(lab, parallel):
    # Counted by each host's own sshd: one login and one command, however many workers.
    reachable = {name for name, host in lab.hosts.items() if host.plan.sshd}
    assert {name: parallel.sshd_delta[name] for name in reachable} == {name: (1, 1) for name in reachable}
    assert parallel.stdout.count("gathered 14 hosts") == 1


def test_several_gathering_processes_give_the_same_results(serial, processes):
    # Hosts dealt to 3 processes as slots free (the hung one among them) come back as one run's.
    assert processes.summary["results"] == serial.summary["results"]
    assert (processes.junit.get("tests"), processes.returncode) == (serial.junit.get("tests"), 1)
    assert "gathered 14 hosts" in processes.stdout


def test_several_gathering_processes_contact_each_host_once_with_one_command(lab, processes):
    reachable = {name for name, host in lab.hosts.items() if host.plan.sshd}
    assert {name: processes.sshd_delta[name] for name in reachable} == {name: (1, 1) for name in reachable}


def test_dead_hung_and_ethtool_less_hosts_are_one_error_case_each(lab, serial):
    errors = {r["host"]: r for r in serial.summary["results"] if r["verdict"] == "error"}
    assert {h: (r["interface"], r["message"]) for h, r in errors.items()} == {
        lab.hosts["dead"].address: (None, "connection refused"),
        lab.hosts["hung"].address: (None, f"timed out running the probe (limit {LAB_TIMEOUT}s)"),
        lab.hosts["noethtool"].address: (None, "ethtool not found (looked in PATH, /sbin and /usr/sbin)"),
    }


def test_junit_has_host_then_interface_then_check(lab, serial):
    cases = serial.junit.iter("testcase")
    by_class = {c.get("classname"): c for c in cases}
    multi = lab.hosts["multi"].address
    vlan = by_class[f"{multi}.eth1\u2024100"]  # the dot in eth1.100 must not split the class
    props = {p.get("name"): p.get("value") for p in vlan.iter("property")}
    assert props == {
        "host": multi,
        "interface": "eth1.100",
        "driver": "",
        "mtu": "1500",
        "scatter_gather": "on",
        "sg_fixed": "false",
        "boot_sg": "default",  # nothing in this machine's configuration touches SG
        "boot_sg_source": "",
        "boot_sg_problem": "",
        "verdict": "sg-on",
        "kernel": props["kernel"],
    }
    assert vlan.get("name") == f"XENNET-01 scatter-gather/MTU: eth1.100 on {multi}"  # the real interface name
    exposed = by_class[f"{lab.hosts['exposed'].address}.eth0"]
    assert exposed.find("failure") is not None
    assert "You are potentially susceptible to the bug." in exposed.find("failure").get("message")
    dead = by_class[f"{lab.hosts['dead'].address}.(host)"]
    assert dead.find("error") is not None
    assert dead.get("name") == f"XENNET-01 scatter-gather/MTU: host {lab.hosts['dead'].address}"
    assert len(by_class) == len(EXPECTED)
    names = [c.get("name") for c in serial.junit.iter("testcase")]
    assert len(set(names)) == len(names) == len(EXPECTED)  # every case's name is distinct


@pytest.mark.parametrize("run", ["serial", "parallel"])
def test_junit_times_are_gathering_times_and_the_suite_is_the_wall_time(lab, run, request):
    audit = request.getfixturevalue(run)
    (suite,) = audit.junit.iter("testsuite")
    times = [float(c.get("time")) for c in suite.iter("testcase")]
    assert all(t > 0 for t in times), times  # gathered before any test phase, carried to xdist workers
    hung = next(c for c in suite.iter("testcase") if c.get("classname") == f"{lab.hosts['hung'].address}.(host)")
    assert float(hung.get("time")) >= LAB_TIMEOUT, times  # the hung host's error case shows its timeout
    assert float(suite.get("time")) >= max(times)  # the run's wall time includes gathering


def test_html_report_has_sortable_audit_columns(lab, serial):
    page = serial.html
    for title in ("Host", "Interface", "Driver", "MTU", "SG", "Verdict"):
        assert re.search(rf'<th class="sortable" data-column-type="\w+">{title}</th>', page), title
    blob = json.loads(html.unescape(re.search(r'data-jsonblob="([^"]*)"', page).group(1)))
    rows = [t for tests in blob["tests"].values() for t in tests]
    verdicts = {}

    def cell(cells: str, col: str) -> str:
        return html.unescape(re.search(rf'<td class="col-{col}">([^<]*)</td>', cells).group(1))

    for row in rows:
        cells = "".join(row["resultsTableRow"])
        verdicts[(cell(cells, "host"), cell(cells, "interface"))] = cell(cells, "verdict")
    names = {h.address: n for n, h in lab.hosts.items()}
    assert {(names[h], i or None): v for (h, i), v in verdicts.items()} == EXPECTED
    assert "<script src=" not in page  # self-contained


def test_terminal_summary_is_the_diagnostic_results_block(lab, serial):
    out = serial.stdout
    assert "----------[Diagnostic Results]----------" in out
    exposed = lab.hosts["exposed"].address
    assert (
        f"[WARN] {exposed}|eth0: Scatter-Gather is off and MTU is set below 9001 on eth0. "
        "You are potentially susceptible to the bug."
    ) in out
    assert "-- You can enable Scatter-Gather with 'sudo ethtool -K eth0 sg on'" in out
    assert "[SUCCESS]" not in out.split("Diagnostic Results")[-1]  # only with -v
    assert "(15 passing case(s) not listed: -v lists every case)" in out
    assert "sg-on: 12  jumbo-mtu: 3  susceptible: 7  not-applicable: 0  error: 3" in out


def test_verbose_terminal_lists_every_case(lab, tmp_path):
    audit = run_audit(tmp_path, *lab_args(lab, ["sgon", "exposed"]), "-v")
    block = audit.stdout.split("Diagnostic Results")[-1]
    assert f"[SUCCESS] {lab.hosts['sgon'].address}|eth0: Scatter-Gather is enabled on eth0." in block
    assert f"[WARN] {lab.hosts['exposed'].address}|eth0:" in block
    assert "not listed" not in block


def test_test_ids_are_host_pipe_interface_and_sorted(lab, tmp_path):
    audit = run_audit(tmp_path, *lab_args(lab, ["multi", "sgon"]), "--collect-only", "-q")
    ids = re.findall(r"test_xennet_sg_mtu\[(.*)\]", audit.stdout)
    assert ids == sorted(ids) and len(ids) == 5
    assert f"{lab.hosts['multi'].address}|eth1.100" in ids
    assert not any("paramiko" in i or "root@" in i for i in ids)


def test_default_scope_skips_non_xen_interfaces_naming_their_driver(lab, tmp_path):
    args = [a for a in lab_args(lab, ["multi"]) if not a.startswith("--xennet-scope")]
    audit = run_audit(tmp_path, *args, "-rs")
    assert audit.returncode == 0, audit.stdout
    assert set(audit.verdicts(lab).values()) == {"not-applicable"}
    assert "eth1 is virtual: not affected" in audit.stdout
    assert audit.summary["scope"] == "xen"


def test_openssh_backend_gives_the_same_verdicts(lab, tmp_path):
    names = ["sgon", "exposed", "multi", "dead"]
    audit = run_audit(tmp_path, *lab_args(lab, names, scheme="ssh"), f"--ssh-config={lab.ssh_config}")
    assert audit.verdicts(lab) == {k: v for k, v in EXPECTED.items() if k[0] in names}, audit.stdout


def test_ansible_inventory_goes_through_testinfra(lab, tmp_path):
    pytest.importorskip("ansible", reason="ansible-core is the optional [ansible] extra")
    names = ["sgon", "exposed", "multi"]
    inventory = lab.write_ansible_inventory(tmp_path / "lab.ini", connection="paramiko_ssh", names=names)
    audit = run_audit(
        tmp_path / "reports",
        "--hosts=ansible://all",
        f"--ansible-inventory={inventory}",
        f"--ssh-known-hosts={lab.known_hosts}",
        "--xennet-scope=all",
    )
    hosts = {r["host"] for r in audit.summary["results"]}
    assert hosts == set(names), audit.stdout  # inventory names label the hosts
    verdicts = {(r["host"], r["interface"]): r["verdict"] for r in audit.summary["results"]}
    assert verdicts == {k: v for k, v in EXPECTED.items() if k[0] in names}


def test_plain_pytest_audits_this_machine_and_says_so(tmp_path):
    audit = run_audit(tmp_path)
    assert audit.returncode == 0, audit.stdout
    assert audit.summary["target"] == "local"
    assert {r["host"] for r in audit.summary["results"]} == {"local"}
    assert "local (this machine)" in audit.html
    assert "xennet: target local (this machine)" in audit.stdout


def test_plain_pytest_does_not_collect_the_projects_own_tests(tmp_path):
    audit = run_audit(tmp_path, "--collect-only", "-q")
    collected = [line for line in audit.stdout.splitlines() if "::" in line]
    assert collected and all(line.startswith("compliance/test_xennet.py::") for line in collected)
    assert (ROOT / "tests").is_dir()


def test_hostile_interface_names_are_never_executed(lab, serial, parallel):
    # The probe ran on the host (in its own mount namespace, /tmp and cwd shared with
    # this machine) and the reports were built here: no marker may exist anywhere.
    places = [ROOT, ROOT / "compliance", serial.reports, parallel.reports, Path("/tmp"), Path("/root"), Path("/")]
    assert [p / m for p in places for m in HOSTILE_MARKERS if (p / m).exists()] == []


def test_hostile_interface_names_keep_unique_readable_ids(lab, serial, tmp_path):
    address = lab.hosts["hostile"].address
    names = sorted(i for (h, i) in EXPECTED if h == "hostile")
    rows = [r for r in serial.summary["results"] if r["host"] == address]
    assert sorted(r["interface"] for r in rows) == names  # exact, in JSON
    audit = run_audit(tmp_path, *lab_args(lab, ["hostile"]), "--collect-only", "-q")
    ids = re.findall(r"test_xennet_sg_mtu\[(.*)\]$", audit.stdout, re.M)
    assert ids == [f"{address}|{name}" for name in names]


def test_hostile_interface_names_are_escaped_in_every_report(lab, serial):
    assert "<b>x<b>" not in serial.html
    assert "<b>x<b>" not in serial.html_rendered and "&lt;b&gt;x&lt;b&gt;" in serial.html_rendered
    junit = (serial.reports / "junit.xml").read_text()
    assert "<b>x<b>" not in junit
    classes = {c.get("classname") for c in serial.junit.iter("testcase")}
    assert f"{lab.hosts['hostile'].address}.<b>x<b>" in classes  # parsed back intact
    assert "\x1b" not in serial.stdout


def test_hosts_that_match_nothing_are_a_usage_error_not_a_clean_audit(tmp_path):
    pytest.importorskip("ansible", reason="ansible-core is the optional [ansible] extra")
    audit = run_audit(
        tmp_path, "--hosts=ansible://nosuchgroup", f"--ansible-inventory={ROOT / 'inventories' / 'example.ini'}"
    )
    assert audit.returncode == 4, audit.stdout
    assert "--hosts=ansible://nosuchgroup matched no host: nothing to audit" in audit.stderr + audit.stdout


def test_an_inventory_key_that_wins_over_the_identity_file_is_named_once(lab, tmp_path):
    pytest.importorskip("ansible", reason="ansible-core is the optional [ansible] extra")
    names = ["sgon", "exposed"]
    inventory = lab.write_ansible_inventory(tmp_path / "lab.ini", connection="paramiko_ssh", names=names)
    other = tmp_path / "jenkins_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    audit = run_audit(
        tmp_path / "reports",
        "--hosts=ansible://all",
        f"--ansible-inventory={inventory}",
        f"--ssh-identity-file={other}",
        f"--ssh-known-hosts={lab.known_hosts}",
        "--xennet-scope=all",
    )
    warning = (
        "xennet: warning: the inventory's ansible_ssh_private_key_file wins over --ssh-identity-file "
        "(Ansible's precedence) for 2 host(s): exposed, sgon"
    )
    assert audit.stdout.count(warning) == 1, audit.stdout
    # The inventory's key logged in (Ansible's precedence, documented in the README).
    assert {r["host"]: r["verdict"] for r in audit.summary["results"]} == {"sgon": "sg-on", "exposed": "susceptible"}
