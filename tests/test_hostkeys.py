"""Options that would weaken the host-key policy: refused (naming where) or overridden, never silent.

No host is contacted: targets are only expanded.
"""

from __future__ import annotations

import pytest

from compliance import hostkeys
from compliance.options import UsageProblem
from compliance.targets import expand
from tests.conftest import run_audit
from tests.test_usage import one_line_error

HOST = "ssh://root@127.0.0.1"
GLOBAL = "GlobalKnownHostsFile=/etc/ssh/other_known_hosts"
GLOBAL_WHY = "would trust host keys from a file the host-key policy does not name"


def refusal(**kwargs) -> str:
    with pytest.raises(UsageProblem) as caught:
        expand([kwargs.pop("spec", HOST)], **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture(autouse=True)
def empty_home(tmp_path, monkeypatch):
    """A HOME without ~/.ssh/config and no ansible.cfg around: only what a test writes is read."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    for var in ("ANSIBLE_CONFIG", "ANSIBLE_SSH_COMMON_ARGS", "ANSIBLE_SSH_EXTRA_ARGS"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.mark.parametrize(
    "extra",
    [
        f"-o {GLOBAL}",
        f"-o{GLOBAL}",
        "-C -o 'GlobalKnownHostsFile /etc/ssh/other_known_hosts'",
        f"-vo {GLOBAL}",
    ],
)
def test_global_known_hosts_file_in_extra_args_is_refused(extra):
    assert refusal(ssh_extra_args=extra) == (
        f"{GLOBAL} in --ssh-extra-args {GLOBAL_WHY}; name known_hosts files with --ssh-known-hosts instead"
    )


def test_known_hosts_command_is_refused_and_none_is_not():
    assert refusal(ssh_extra_args="-o KnownHostsCommand=/usr/bin/cat").startswith(
        "KnownHostsCommand=/usr/bin/cat in --ssh-extra-args would trust host keys that a command prints"
    )
    expand([HOST], ssh_extra_args="-o KnownHostsCommand=none -o GlobalKnownHostsFile=/dev/null")


def test_user_known_hosts_dev_null_is_refused_unless_the_suite_names_the_files(tmp_path):
    weaken = "-o UserKnownHostsFile=/dev/null"
    assert refusal(ssh_extra_args=weaken).startswith(
        "UserKnownHostsFile=/dev/null in --ssh-extra-args would check host keys against no known_hosts file"
    )
    assert "UserKnownHostsFile=none" in refusal(ssh_extra_args="-o UserKnownHostsFile=none")
    # --ssh-known-hosts: the suite's own -o UserKnownHostsFile comes first and wins.
    known = tmp_path / "known_hosts"
    known.write_text("")
    expand([HOST], ssh_extra_args=weaken, known_hosts=str(known))
    expand([HOST], ssh_extra_args=f"-o UserKnownHostsFile={known}")  # a real file: trusted as OpenSSH does


def test_overridden_options_are_accepted():
    # StrictHostKeyChecking and CheckHostIP: the policy's own -o options come first.
    expand([HOST], ssh_extra_args="-o StrictHostKeyChecking=no -o CheckHostIP=yes")


def test_the_first_value_is_the_one_in_force():
    expand([HOST], ssh_extra_args=f"-o GlobalKnownHostsFile=/dev/null -o {GLOBAL}")
    assert GLOBAL_WHY in refusal(ssh_extra_args=f"-o {GLOBAL} -o GlobalKnownHostsFile=/dev/null")


def test_paramiko_and_insecure_runs_are_not_checked():
    # paramiko ignores --ssh-extra-args; insecure accepts any key already, and says so.
    expand(["paramiko://root@127.0.0.1"], ssh_extra_args=f"-o {GLOBAL}")
    expand([HOST], ssh_extra_args=f"-o {GLOBAL}", host_key_policy="insecure")


def test_ssh_config_file_and_line_are_named(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host other\n    UserKnownHostsFile /dev/null\n\n"
        "Host 127.0.0.* !127.0.0.2\n    StrictHostKeyChecking no\n    KnownHostsCommand /bin/cat %H\n"
    )
    assert refusal(ssh_config=str(config)) == (
        f"KnownHostsCommand=/bin/cat %H in --ssh-config {config} line 6 would trust host keys that a command "
        "prints; name known_hosts files with --ssh-known-hosts instead"
    )
    expand(["ssh://root@127.0.0.2"], ssh_config=str(config))  # negated: the block does not apply
    expand(["ssh://root@other.example"], ssh_config=str(config))  # `Host other` is another name


def test_included_file_and_user_config_are_read(tmp_path, empty_home):
    included = tmp_path / "fleet.conf"
    included.write_text("Host *\n  GlobalKnownHostsFile=/srv/fleet_known_hosts\n")
    (empty_home / ".ssh" / "config").write_text(f"Include {included}\n")
    message = refusal()
    assert message.startswith(
        f"GlobalKnownHostsFile=/srv/fleet_known_hosts in {included} line 2 (included by ~/.ssh/config) "
    )
    # --ssh-config replaces ~/.ssh/config (OpenSSH's -F).
    clean = tmp_path / "clean"
    clean.write_text("Host *\n  StrictHostKeyChecking no\n")
    expand([HOST], ssh_config=str(clean))


def test_f_in_extra_args_is_the_config_read(tmp_path):
    config = tmp_path / "cfg"
    config.write_text("UserKnownHostsFile /dev/null\n")
    assert refusal(ssh_extra_args=f"-F {config}").startswith(
        f"UserKnownHostsFile=/dev/null in {config} line 1 (-F in --ssh-extra-args) "
    )


def test_unreadable_ssh_arguments_are_refused():
    assert refusal(ssh_extra_args="-o 'UserKnownHostsFile /x").startswith(
        "the ssh arguments in --ssh-extra-args cannot be read"
    )


@pytest.fixture
def inventory_tools():
    pytest.importorskip("ansible", reason="ansible-core is the optional [ansible] extra")


def write_inventory(tmp_path, variables: str):
    path = tmp_path / "inventory.ini"
    path.write_text(f"[web]\nweb1 ansible_host=127.0.0.1 ansible_connection=ssh {variables}\n")
    return str(path)


@pytest.mark.parametrize("var", ["ansible_ssh_common_args", "ansible_ssh_extra_args"])
def test_inventory_ssh_args_name_the_host_and_variable(tmp_path, inventory_tools, var):
    inventory = write_inventory(tmp_path, f"{var}='-o {GLOBAL}'")
    message = refusal(spec="ansible://all", ansible_inventory=inventory)
    assert message.startswith(f"{GLOBAL} in inventory host web1's {var} {GLOBAL_WHY}")
    # paramiko_ssh ignores ssh arguments: nothing to refuse.
    paramiko = write_inventory(tmp_path, f"ansible_connection=paramiko_ssh {var}='-o {GLOBAL}'")
    expand(["ansible://all"], ansible_inventory=paramiko)


def test_inventory_f_file_and_ansible_cfg_are_named(tmp_path, inventory_tools, monkeypatch):
    config = tmp_path / "cfg"
    config.write_text("Host *\n  UserKnownHostsFile /dev/null\n")
    inventory = write_inventory(tmp_path, f"ansible_ssh_common_args='-F {config}'")
    message = refusal(spec="ansible://all", ansible_inventory=inventory)
    assert message.startswith(
        f"UserKnownHostsFile=/dev/null in {config} line 2 (-F in inventory host web1's ansible_ssh_common_args) "
    )
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[ssh_connection]\nssh_args = -C -o KnownHostsCommand=/bin/cat\n")
    monkeypatch.setenv("ANSIBLE_CONFIG", str(cfg))
    plain = write_inventory(tmp_path, "")
    assert refusal(spec="ansible://all", ansible_inventory=plain).startswith(
        "KnownHostsCommand=/bin/cat in ansible.cfg's ssh_args would trust"
    )
    monkeypatch.setenv("ANSIBLE_SSH_EXTRA_ARGS", f"-o {GLOBAL}")
    cfg.write_text("[ssh_connection]\nssh_args = -C\n")
    assert refusal(spec="ansible://all", ansible_inventory=plain).startswith(f"{GLOBAL} in $ANSIBLE_SSH_EXTRA_ARGS ")


def test_extra_args_and_inventory_args_are_both_kept_extra_args_first(tmp_path, inventory_tools):
    inventory = write_inventory(tmp_path, "ansible_ssh_common_args='-o ConnectionAttempts=2'")
    (target,) = expand(
        ["ansible://all"], ansible_inventory=inventory, ssh_extra_args="-o ServerAliveInterval=5"
    ).targets
    assert target.options["ssh_extra_args"] == "-o ServerAliveInterval=5 -o ConnectionAttempts=2"


def test_one_line_and_exit_4_before_any_host(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("GlobalKnownHostsFile /srv/fleet\n")
    error = one_line_error(run_audit(tmp_path / "r", f"--hosts={HOST}", f"--ssh-config={config}"))
    assert error.startswith(f"GlobalKnownHostsFile=/srv/fleet in --ssh-config {config} line 1 {GLOBAL_WHY}")
    error = one_line_error(run_audit(tmp_path / "r2", f"--hosts={HOST}", f"--ssh-extra-args=-o {GLOBAL}"))
    assert error.startswith(f"{GLOBAL} in --ssh-extra-args ")


def test_parse_args_reads_getopt_as_ssh_does():
    settings, files = hostkeys.parse_args("-p 22 -i key -o A=1 -oB=2 -Fcfg -Cqo 'C 3' host", "x")
    assert [(s.keyword, s.value) for s in settings] == [("A", "1"), ("B", "2"), ("C", "3")]
    assert files == ["cfg"]


@pytest.mark.parametrize("option", ["HostKeyAlias=unused", "UserKnownHostsFile=/nonexistent/known_hosts"])
def test_accept_new_refuses_options_that_would_look_keys_up_elsewhere(option):
    # A key not found is "new" under accept-new: looked up under another name or file, a changed key passes.
    with pytest.raises(UsageProblem, match="would make accept-new look the host's key up where the policy does not"):
        hostkeys.check("10.0.0.5", [("--ssh-extra-args", f"-o {option}")], None, None, "accept-new")
    hostkeys.check(
        "10.0.0.5", [("--ssh-extra-args", f"-o {option}")], None, None, "strict"
    )  # strict refuses unknown keys
