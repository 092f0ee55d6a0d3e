"""Trust through Ansible inventories: --sudo, the workaround as a sudo user, and host keys.

A lab of its own (index 6): the workaround changes its hosts, and two of them have a
non-root user with passwordless sudo. States are checked on the host itself.
"""

from __future__ import annotations

import pytest

from tests.conftest import LAB_TIMEOUT, make_lab, run_audit
from tests.lab import HostPlan, IfacePlan, UserPlan, read_sg

LAB_INDEX = 7
OPS = UserPlan("ops", sudo="nopasswd")
# An ethtool that answers root only: the probe passes only if it really ran through sudo.
ROOT_ONLY_ETHTOOL = (
    "[ \"$(id -u)\" = 0 ] || { echo 'Cannot get device feature settings: Operation not permitted' >&2; exit 75; }\n"
    "printf 'Features for %s:\\nscatter-gather: on\\n\\ttx-scatter-gather: on\\n' \"$2\"\n"
)
PLAN = (
    HostPlan("rootonly", users=(OPS,), fake_ethtool=ROOT_ONLY_ETHTOOL),
    HostPlan("fixme", (IfacePlan("eth0"), IfacePlan("eth1", sg=False)), users=(OPS,)),
)
CONNECTIONS = ["ssh", "paramiko_ssh"]


@pytest.fixture(scope="module")
def trust_lab():
    pytest.importorskip("ansible", reason="ansible-core is the optional [ansible] extra")
    with make_lab(PLAN, LAB_INDEX) as started:
        yield started


def inventory_args(lab, inventory, *extra):
    return [
        "--hosts=ansible://all",
        f"--ansible-inventory={inventory}",
        f"--ssh-known-hosts={lab.known_hosts}",
        f"--xennet-timeout={LAB_TIMEOUT}",
        "--xennet-scope=all",
        *extra,
    ]


def sg(lab, host, iface):
    return read_sg(lab.exec(host, ["ethtool", "-k", iface]).stdout)


def by_host(audit, lab):
    names = {h.address: n for n, h in lab.hosts.items()}
    return {(names.get(r["host"], r["host"]), r["interface"]): r for r in audit.summary["results"]}


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_sudo_reaches_inventory_hosts_without_ansible_become(trust_lab, tmp_path, connection):
    lab = trust_lab
    inventory = lab.write_ansible_inventory(tmp_path / "lab.ini", connection, ["rootonly"], user="ops")
    assert "ansible_become" not in inventory.read_text()
    plain = run_audit(tmp_path / "plain", *inventory_args(lab, inventory))
    (row,) = plain.summary["results"]
    assert row["verdict"] == "error" and "Operation not permitted" in row["message"], plain.stdout
    with_sudo = run_audit(tmp_path / "sudo", *inventory_args(lab, inventory, "--sudo"))
    assert with_sudo.returncode == 0, with_sudo.stdout + with_sudo.stderr
    assert [(r["interface"], r["verdict"]) for r in with_sudo.summary["results"]] == [("eth0", "sg-on")]


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_workaround_through_an_inventory_as_a_sudo_user_and_as_root(trust_lab, tmp_path, connection):
    lab = trust_lab
    for user, extra in (("ops", ["--sudo"]), ("root", [])):
        lab.set_sg("fixme", "eth1", False)
        inventory = lab.write_ansible_inventory(tmp_path / f"{user}.ini", connection, ["fixme"], user=user)
        audit = run_audit(tmp_path / user, *inventory_args(lab, inventory, "--xennet-workaround=apply", *extra))
        assert audit.returncode == 0, audit.stdout + audit.stderr
        row = by_host(audit, lab)[("fixme", "eth1")]
        assert row["verdict"] == "remediated", row
        prefix = "sudo " if extra else ""
        assert row["workaround"]["commands"] == [f"{prefix}/usr/sbin/ethtool -K eth1 sg on"]
        assert sg(lab, "fixme", "eth1") is True  # the host itself says so


@pytest.mark.parametrize("become", ["", "ansible_become=true"])
def test_dry_run_shows_sudo_exactly_where_apply_would_use_it(trust_lab, tmp_path, become):
    # No --sudo: sudo only for an inventory's ansible_become, never shown when not used.
    lab = trust_lab
    lab.set_sg("fixme", "eth1", False)
    inventory = lab.write_ansible_inventory(tmp_path / "lab.ini", "ssh", ["fixme"], extra_vars=become)
    audit = run_audit(tmp_path / "r", *inventory_args(lab, inventory, "--xennet-workaround=dry-run"))
    row = by_host(audit, lab)[("fixme", "eth1")]
    prefix = "sudo " if become else ""
    assert row["workaround"]["commands"] == [f"{prefix}/usr/sbin/ethtool -K eth1 sg on"], audit.stdout
    assert sg(lab, "fixme", "eth1") is False
