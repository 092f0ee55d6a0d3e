"""Targets: the run's hosts, from ``--hosts`` specs and Ansible inventories, checked before any
host is contacted.

Each spec becomes one or more :class:`Target`: plain data (how to reach the host, and the
run's deadline and host-key policy) from which :func:`compliance.backends.connect` builds
the suite's hardened backend. Every mistake a user can make here is a :class:`UsageProblem`
of one line: an unknown scheme, an empty spec, a host given twice, a missing file, an
inventory that is missing or malformed, ``ansible-inventory`` not found.

>>> [t.label for t in expand(["paramiko://root@10.0.0.5", "ssh://web1:2222"]).targets]
['10.0.0.5', 'web1:2222']
>>> expand(["lokal://"]).targets
Traceback (most recent call last):
...
compliance.options.UsageProblem: unknown scheme 'lokal' in --hosts entry 'lokal://'; valid schemes: paramiko://, ssh://, local://, ansible://
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compliance.bastion import Bastions, parse_jump
from compliance.options import DEFAULT_MAX_OUTPUT, DEFAULT_TIMEOUT, UsageProblem

SCHEMES = ("paramiko", "ssh", "local", "ansible")
CONNECTIONS = ("paramiko", "ssh", "local")  # what a target finally connects with
# Ansible's connection plugins that reach a host the way one of ours does.
ANSIBLE_CONNECTIONS = {
    "ssh": "ssh",
    "smart": "ssh",
    "paramiko_ssh": "paramiko",
    "paramiko": "paramiko",
    "local": "local",
}
ANSIBLE_KEY_VARS = ("ansible_ssh_private_key_file", "ansible_private_key_file")
INVENTORY_TIMEOUT = 120  # seconds; a dynamic inventory script may be slow, never endless


@dataclasses.dataclass
class Target:
    """One host to audit. ``label`` is how reports name it: no scheme, user or password.

    ``source`` is the ``--hosts`` entry it came from (password removed), for messages.
    ``hostspec`` is testinfra's ``[user[:password]@]host[:port]``; ``options`` the keyword
    arguments of the backend (identity file, ssh_config, sudo, deadline, host keys).
    ``bastions`` are the run's bastion connections, shared by the targets of one expansion.
    """

    label: str
    source: str
    connection: str
    hostspec: str = dataclasses.field(repr=False)
    options: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    backend: Any = dataclasses.field(default=None, repr=False, compare=False)  # set by connect()
    started: float | None = dataclasses.field(default=None, repr=False, compare=False)  # when gathering began
    overdue: bool = dataclasses.field(default=False, repr=False, compare=False)  # closed for using up its budget
    bastions: Bastions | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def timeout(self) -> float:
        return float(self.options.get("timeout", DEFAULT_TIMEOUT))

    @property
    def sudo(self) -> bool:
        return bool(self.options.get("sudo"))

    def connect(self) -> Any:
        """The hardened backend for this host, built once (nothing is contacted until it runs)."""
        if self.backend is None:
            from compliance import backends  # paramiko is imported only by runs that connect

            self.backend = backends.connect(self)
        return self.backend

    def close(self) -> None:
        """Close the connection, if any; safe from another thread (aborts a command in flight)."""
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.close()


@dataclasses.dataclass
class Expansion:
    """The targets of a run, sorted by label, and warnings to show once (one line each)."""

    targets: list[Target]
    warnings: list[str] = dataclasses.field(default_factory=list)


def redact(spec: str) -> str:
    """A host spec without its password: ``paramiko://user:pw@h`` -> ``paramiko://user@h``.

    >>> redact("paramiko://root:s3cret@10.0.0.5:2222")
    'paramiko://root@10.0.0.5:2222'
    """
    scheme, sep, rest = spec.rpartition("://")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{userinfo}{at}{host}"


def label_of(connection: str, hostspec: str) -> str:
    """``HOST`` or ``HOST:PORT`` (port only when not 22); ``local`` for this machine.

    >>> label_of("paramiko", "root:pw@[fe80::1]:2222")
    '[fe80::1]:2222'
    """
    if connection == "local":
        return "local"
    name, port = _host_port(hostspec.rpartition("@")[2])
    shown = f"[{name}]" if ":" in name else name
    return f"{shown}:{port}" if port and port != "22" else shown


def _host_port(netloc: str) -> tuple[str, str | None]:
    match = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", netloc)
    if match:
        return match.group(1), match.group(2)
    if netloc.count(":") == 1:
        name, port = netloc.split(":")
        return name, port
    return netloc, None


def split_hosts(hosts: str | None) -> list[str] | None:
    """``--hosts`` as a list; None when it was not given (this machine). Empty entries are mistakes."""
    if hosts is None:
        return None
    specs = [s.strip() for s in hosts.split(",")]
    if not any(specs):
        raise UsageProblem("--hosts is empty: name hosts, or leave --hosts out to audit this machine")
    if "" in specs:
        raise UsageProblem(
            f"--hosts has an empty entry (a stray comma?): {redact_list(hosts)!r}; "
            "separate host specs with single commas"
        )
    return specs


def redact_list(hosts: str) -> str:
    return ",".join(redact(s) for s in hosts.split(","))


def _readable_file(path: str, what: str) -> str:
    full = os.path.expanduser(path)
    if not os.path.exists(full):
        raise UsageProblem(f"{what} {path}: no such file")
    if not os.path.isfile(full):
        raise UsageProblem(f"{what} {path}: not a file")
    if not os.access(full, os.R_OK):
        raise UsageProblem(f"{what} {path}: not readable")
    return full


def check_files(
    ssh_identity_file: str | None,
    ssh_config: str | None,
    known_hosts: str | None,
    host_key_policy: str,
) -> None:
    """Every file the user named must be there and readable, before any host is contacted.

    With ``accept-new``, the first known_hosts file is where new keys are recorded: it may
    not exist yet, but its directory must.
    """
    if ssh_identity_file:
        _readable_file(ssh_identity_file, "--ssh-identity-file")
    if ssh_config:
        _readable_file(ssh_config, "--ssh-config")
    for index, path in enumerate((known_hosts or "").split()):
        if index == 0 and host_key_policy == "accept-new" and not os.path.exists(os.path.expanduser(path)):
            parent = os.path.dirname(os.path.expanduser(path)) or "."
            if not os.path.isdir(parent):
                raise UsageProblem(f"--ssh-known-hosts {path}: no such directory to record new host keys in")
            continue
        _readable_file(path, "--ssh-known-hosts")


def _scheme_of(spec: str, connection: str | None) -> tuple[str, str, dict[str, Any]]:
    """(scheme, hostspec, query options) of one spec, as testinfra reads it."""
    if any(c.isspace() for c in spec):
        raise UsageProblem(f"--hosts entry {redact(spec)!r} holds a blank: separate host specs with commas")
    if "://" not in spec:
        scheme = connection or "paramiko"
        if scheme not in SCHEMES:
            raise UsageProblem(f"unknown --connection {scheme!r}; valid: {', '.join(SCHEMES)}")
        return scheme, spec, {}
    url = urllib.parse.urlparse(spec)
    if url.scheme not in SCHEMES:
        valid = ", ".join(f"{s}://" for s in SCHEMES)
        raise UsageProblem(f"unknown scheme {url.scheme!r} in --hosts entry {redact(spec)!r}; valid schemes: {valid}")
    query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
    options: dict[str, Any] = {}
    for key in ("sudo", "force_ansible"):
        if query.get(key, "false").lower() == "true":
            options[key] = True
    for key in ("sudo_user", "ssh_config", "ssh_identity_file", "ansible_inventory"):
        if key in query:
            options[key] = os.path.expanduser(query[key]) if key != "sudo_user" else query[key]
    if url.scheme != "local" and not url.netloc:
        raise UsageProblem(f"--hosts entry {redact(spec)!r} names no host")
    if url.scheme == "local" and (url.netloc or url.path):
        raise UsageProblem(f"--hosts entry {redact(spec)!r}: local:// is this machine and takes no host")
    return url.scheme, url.netloc, options


def expand(
    specs: Sequence[str] | None,
    *,
    connection: str | None = None,
    ssh_config: str | None = None,
    ssh_identity_file: str | None = None,
    ssh_extra_args: str | None = None,
    sudo: bool = False,
    sudo_user: str | None = None,
    ansible_inventory: str | None = None,
    force_ansible: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    known_hosts: str | None = None,
    host_key_policy: str = "strict",
    max_output: int = DEFAULT_MAX_OUTPUT,
) -> Expansion:
    """Every target of the run, sorted by label; no host is contacted.

    ``specs`` None means this machine. Raises :class:`UsageProblem` for any mistake.
    """
    if force_ansible:
        raise UsageProblem(
            "--force-ansible is not supported: the audit connects to each host itself "
            "(bounded by --xennet-timeout, host keys verified)"
        )
    # `~` is expanded once, here: OpenSSH's -F and paramiko would each read it literally.
    ssh_config = os.path.expanduser(ssh_config) if ssh_config else ssh_config
    ssh_identity_file = os.path.expanduser(ssh_identity_file) if ssh_identity_file else ssh_identity_file
    known_hosts = " ".join(os.path.expanduser(p) for p in known_hosts.split()) if known_hosts else known_hosts
    run = {"timeout": timeout, "known_hosts": known_hosts, "host_key_policy": host_key_policy, "max_output": max_output}
    found: dict[str, Target] = {}
    warnings: list[str] = []
    inventories: dict[str | None, dict[str, Any]] = {}
    bastions = Bastions()  # nothing is contacted until a host behind a bastion is
    for spec in specs if specs is not None else ["local://"]:
        scheme, hostspec, query = _scheme_of(spec, connection)
        base = {
            "ssh_config": ssh_config,
            "ssh_identity_file": ssh_identity_file,
            "ssh_extra_args": ssh_extra_args,
            "sudo": sudo,
            "sudo_user": sudo_user,
            **query,
        }
        if scheme == "ansible":
            inventory = query.get("ansible_inventory", ansible_inventory)
            if inventory not in inventories:
                inventories[inventory] = read_inventory(inventory)
            made, warning = _from_inventory(hostspec, inventories[inventory], base, run, redact(spec))
            warnings += [warning] if warning else []
        else:
            made = [Target(label_of(scheme, hostspec), redact(spec), scheme, hostspec, {**base, **run})]
            extra = [("--ssh-extra-args", ssh_extra_args)] if ssh_extra_args else []
            if scheme == "ssh":
                _check_host_keys(made[0], extra)
            if scheme != "local":
                _check_jumps(extra)
        for target in made:
            target.bastions = bastions
            if target.label in found:
                raise UsageProblem(
                    f"host {target.label} is given twice: by {found[target.label].source!r} and {target.source!r}"
                )
            found[target.label] = target
    return Expansion(sorted(found.values(), key=lambda t: t.label), warnings)


# ---------------------------------------------------------------------- Ansible


def ansible_inventory_command() -> str:
    """``ansible-inventory`` from PATH, else beside this Python (a virtualenv used without activating it)."""
    beside = str(Path(sys.executable).parent)
    found = shutil.which("ansible-inventory", path=os.pathsep.join([os.environ.get("PATH", ""), beside]))
    if found is None:
        raise UsageProblem(
            "ansible:// hosts need ansible-inventory, found neither on PATH nor beside "
            f"{sys.executable}: pip install 'xennet-compliance[ansible]' into this environment "
            "(or activate the virtualenv it is installed in)"
        )
    return found


def read_inventory(path: str | None) -> dict[str, Any]:
    """``ansible-inventory --list``: a missing file and a malformed one are different mistakes."""
    if path and not os.path.isdir(os.path.expanduser(path)):  # Ansible also reads inventory directories
        _readable_file(path, "--ansible-inventory")
    argv = [ansible_inventory_command(), "--list"] + (["-i", os.path.expanduser(path)] if path else [])
    # Ansible only warns about an inventory it cannot parse, and lists an empty one.
    env = dict(os.environ, ANSIBLE_VERBOSITY="0", ANSIBLE_INVENTORY_UNPARSED_FAILED="True", ANSIBLE_NOCOLOR="1")
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=INVENTORY_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise UsageProblem(f"ansible-inventory did not answer within {INVENTORY_TIMEOUT}s for {path}") from None
    if proc.returncode != 0:
        raise UsageProblem(
            f"--ansible-inventory {path or '(ansible default)'} is malformed: {_ansible_words(proc.stderr)}"
        )
    try:
        inventory = json.loads(proc.stdout)
    except ValueError:
        raise UsageProblem(f"ansible-inventory printed no inventory for {path}") from None
    if not isinstance(inventory, dict):
        raise UsageProblem(f"ansible-inventory printed no inventory for {path}")
    return inventory


def _ansible_words(stderr: str) -> str:
    """Ansible's own reason, in one line: its first parser failure, else its last message."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "Failed to parse" in line:
            return line.removeprefix("[WARNING]: ")
    return lines[-1].removeprefix("[ERROR]: ") if lines else "ansible-inventory failed"


def _inventory_hosts(inventory: dict[str, Any], pattern: str) -> list[str]:
    def members(group: str, seen: set[str]) -> set[str]:
        if group in seen:
            return set()
        seen.add(group)
        entry = inventory.get(group) or {}
        hosts = set(entry.get("hosts", []))
        for child in entry.get("children", []):
            hosts |= members(child, seen)
        return hosts

    result: set[str] = set()
    for group, entry in inventory.items():
        if group == "_meta" or not isinstance(entry, dict):
            continue
        if fnmatch.fnmatch(group, pattern):
            result |= members(group, set())
        result |= {h for h in entry.get("hosts", []) if fnmatch.fnmatch(h, pattern)}
    return sorted(result)


def _from_inventory(
    pattern: str, inventory: dict[str, Any], base: dict[str, Any], run: dict[str, Any], source: str
) -> tuple[list[Target], str | None]:
    """The hosts an inventory pattern matches, each as ansible would reach it (testinfra's reading)."""
    from testinfra.utils.ansible_runner import get_ansible_config, get_ansible_host

    names = _inventory_hosts(inventory, pattern)
    config = get_ansible_config()
    hostvars = (inventory.get("_meta") or {}).get("hostvars", {})
    targets = []
    for name in names:
        host = get_ansible_host(config, inventory, name, base["ssh_config"], base["ssh_identity_file"])
        backend = getattr(host, "backend", None)
        kind = getattr(backend, "NAME", None)
        if backend is None or kind not in CONNECTIONS:
            connection = hostvars.get(name, {}).get("ansible_connection", "ssh")
            raise UsageProblem(
                f"inventory host {name}: ansible_connection={connection} is not supported "
                f"(use {', '.join(sorted(ANSIBLE_CONNECTIONS))})"
            )
        target = _from_backend(
            name, source, kind, backend, base, run, _ssh_args_of(name, config, hostvars.get(name, {}))
        )
        targets.append(target)
    overridden = [
        n for n in names if base["ssh_identity_file"] and any(k in hostvars.get(n, {}) for k in ANSIBLE_KEY_VARS)
    ]
    warning = None
    if overridden:
        shown = ", ".join(overridden[:5]) + (f" and {len(overridden) - 5} more" if len(overridden) > 5 else "")
        warning = (
            f"the inventory's ansible_ssh_private_key_file wins over --ssh-identity-file "
            f"(Ansible's precedence) for {len(overridden)} host(s): {shown}"
        )
    return targets, warning


def _ssh_args_of(name: str, config: Any, hostvars: dict[str, Any]) -> list[tuple[str, str]]:
    """An inventory host's ssh arguments, each with where it came from, in the order testinfra
    joins them (ansible.cfg's ssh_args, then ansible_ssh_common_args, then ansible_ssh_extra_args;
    each variable from the environment, else the inventory, else ansible.cfg)."""
    found = [("ansible.cfg's ssh_args", config.get("ssh_connection", "ssh_args", fallback=""))]
    for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        env = var.upper()
        if env in os.environ:
            found.append((f"${env}", os.environ[env]))
        elif var in hostvars:
            found.append((f"inventory host {name}'s {var}", str(hostvars[var])))
        else:
            key = var.removeprefix("ansible_")
            found.append((f"ansible.cfg's {key}", config.get("ssh_connection", key, fallback="")))
    return [(where, str(args)) for where, args in found if str(args or "").strip()]


def _check_host_keys(target: Target, args: Sequence[tuple[str, str]]) -> None:
    """OpenSSH targets only: no option in force may weaken the host-key policy (see compliance.hostkeys)."""
    from compliance import hostkeys

    name = _host_port(target.hostspec.rpartition("@")[2])[0]
    options = target.options
    hostkeys.check(name, args, options.get("ssh_config"), options.get("known_hosts"), options["host_key_policy"])


def _from_backend(
    name: str,
    source: str,
    kind: str,
    backend: Any,
    base: dict[str, Any],
    run: dict[str, Any],
    inventory_args: Sequence[tuple[str, str]] = (),
) -> Target:
    """A target from the (never connected) testinfra backend that testinfra built for an inventory host.

    ``--ssh-extra-args`` comes before the inventory's ssh arguments: OpenSSH keeps an option's
    first value, so the command line wins, and neither is dropped.
    """
    spec = backend.host  # testinfra's HostSpec: name, port, user, password
    hostspec = spec.name if ":" not in spec.name else f"[{spec.name}]"
    if spec.port:
        hostspec += f":{spec.port}"
    if spec.user:
        hostspec = f"{spec.user}{':' + spec.password if spec.password else ''}@{hostspec}"
    # testinfra gives the paramiko backend no ssh arguments; the suite reads their ProxyJump and
    # ProxyCommand for it (as Ansible's paramiko_ssh reads ProxyCommand from them).
    inventory_extra = getattr(backend, "ssh_extra_args", None) if kind == "ssh" else None
    if kind == "paramiko":
        inventory_extra = " ".join(args for _, args in inventory_args) or None
    options = {
        **base,
        "ssh_config": getattr(backend, "ssh_config", base["ssh_config"]),
        "ssh_identity_file": getattr(backend, "ssh_identity_file", base["ssh_identity_file"]),
        "ssh_extra_args": " ".join(a for a in (base["ssh_extra_args"], inventory_extra) if a) or None,
        # --sudo applies to every host; an inventory's ansible_become adds to it.
        "sudo": bool(base["sudo"] or backend.sudo),
        "sudo_user": base["sudo_user"] or backend.sudo_user,
        **run,
    }
    target = Target(name, source, kind, "local" if kind == "local" else hostspec, options)
    extra = [("--ssh-extra-args", base["ssh_extra_args"])] if base["ssh_extra_args"] else []
    if kind == "ssh":
        _check_host_keys(target, [*extra, *inventory_args])
    if kind != "local":
        _check_jumps([*extra, *inventory_args])
    return target


def _check_jumps(args: Sequence[tuple[str, str]]) -> None:
    """A ProxyJump (or -J) in the ssh arguments must be readable, on either backend."""
    from compliance import hostkeys

    for where, text in args:
        for setting in hostkeys.parse_args(text or "", where)[0]:
            if setting.key == "proxyjump":
                try:
                    parse_jump(setting.value)
                except ValueError as exc:
                    raise UsageProblem(f"{exc} in {where}") from None
