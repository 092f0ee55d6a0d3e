"""The private names the suite relies on in pytest, testinfra and pytest-html, each by name.

pyproject.toml bounds these dependencies from above; before raising a bound, run this
file against the new release. A failure here names exactly what moved.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest


def test_testinfra_paramiko_backend_has_the_hooks_the_suite_overrides():
    from testinfra.backend.paramiko import ParamikoBackend

    # _load_ssh_config is replaced whole (testinfra's started a ProxyCommand while reading the
    # ssh_config), and with it `client`, its only caller: neither is relied on any more.
    # _exec_command(command: bytes) -> (rc, stdout, stderr): replaced with a deadline-bound version.
    assert list(inspect.signature(ParamikoBackend._exec_command).parameters) == ["self", "command"]
    for name in ("get_command", "encode", "result", "quote", "parse_hostspec"):
        assert callable(getattr(ParamikoBackend, name)), name


def test_testinfra_openssh_command_layout():
    from testinfra.backend.ssh import SshBackend

    # The suite inserts its options before the last element ("%s %s": host, command), swaps
    # sshpass -p for sshpass -e, and turns the line into `ssh ... -G HOST` (a host's route):
    # all depend on this layout.
    cmd, args = SshBackend("u@h", timeout=5, controlpersist=0)._build_ssh_command("true")
    assert cmd[0] == "ssh" and cmd[-1] == "%s %s" and args[-2:] == ["h", "true"]
    cmd, args = SshBackend("u:pw@h", timeout=5, controlpersist=0)._build_ssh_command("true")
    assert cmd[:4] == ["sshpass", "-p", "%s", "ssh"] and args[0] == "pw"


def test_testinfra_host_spec_and_backend_attributes():
    from testinfra.backend.base import HostSpec

    assert [f.name for f in dataclasses.fields(HostSpec)] == ["name", "port", "user", "password"]
    from testinfra.backend.ssh import SshBackend

    backend = SshBackend(
        "u@h:2222", ssh_config="c", ssh_identity_file="k", ssh_extra_args="-x", sudo=True, sudo_user="r"
    )
    assert (backend.ssh_config, backend.ssh_identity_file, backend.ssh_extra_args) == ("c", "k", "-x")
    assert (backend.sudo, backend.sudo_user, backend.host.port) == (True, "r", "2222")


def test_testinfra_ansible_helpers():
    from testinfra.utils import ansible_runner

    params = list(inspect.signature(ansible_runner.get_ansible_host).parameters)
    assert params == ["config", "inventory", "host", "ssh_config", "ssh_identity_file"]
    assert callable(ansible_runner.get_ansible_config)


def test_pytest_junitxml_stash_key_and_node_reporter():
    from _pytest.junitxml import LogXML, _NodeReporter, xml_key

    assert isinstance(xml_key, pytest.StashKey)
    assert callable(LogXML.node_reporter)
    for name in ("add_attribute", "add_property"):
        assert callable(getattr(_NodeReporter, name)), name


def test_pytest_module_object_can_be_set():
    # compliance.plugin hands pytest the installed audit module instead of importing a clone's copy.
    assert isinstance(inspect.getattr_static(pytest.Module, "obj"), property)
    assert inspect.getattr_static(pytest.Module, "obj").fset is not None


def test_pytest_html_row_cells_put_the_test_id_second():
    from pytest_html import basereport

    source = inspect.getsource(basereport)
    result, test_id = source.index('\'<td class="col-result">'), source.index('\'<td class="col-testId">')
    assert result < test_id  # cells[0] is the result, cells[1] the test id the suite re-escapes


def test_the_report_writers_the_suite_drives_itself():
    # compliance.report.AuditReporter has LogXML and pytest-html render into a file of its
    # choosing (then renames it): LogXML writes to `logfile`, pytest-html to `_report_path`.
    from _pytest.junitxml import LogXML
    from pytest_html.basereport import BaseReport

    assert list(inspect.signature(LogXML.pytest_sessionfinish).parameters) == ["self"]
    assert "self.logfile" in inspect.getsource(LogXML.pytest_sessionfinish)
    # Its own render (to /dev/null) is given no case: it renders those in node_reporters_ordered.
    assert "for node_reporter in self.node_reporters_ordered" in inspect.getsource(LogXML.pytest_sessionfinish)
    assert "self._report_path" in inspect.getsource(BaseReport._write_report)
    assert callable(BaseReport._generate_report)
