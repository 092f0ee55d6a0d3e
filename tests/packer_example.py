"""The Packer examples (``packer/``) as the tests run them: read with a real HCL2 parser
(python-hcl2), their ``shell-local`` blocks rendered with given build values, and run as
Packer's shell-local runs them (packer-plugin-sdk, ``shell-local/run.go``): the inline lines
joined into a script that starts with the default shebang ``#!/bin/sh -e``, made executable,
and run by ``/bin/sh -c "{{.Vars}} {{.Script}}"``, where Vars are ``KEY='value' `` pairs in
key order (``PACKER_BUILD_NAME`` and ``PACKER_BUILDER_TYPE`` among them), a ``'`` in a value
written ``'"'"'``.

So what the tests run is the example's own text: an argument changed in the example changes
what is tested.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hcl2
from hcl2.utils import SerializationOptions

ROOT = Path(__file__).resolve().parent.parent
PACKER_DIR = ROOT / "packer"
IN_BUILD = PACKER_DIR / "in-build" / "xennet-in-build.pkr.hcl"
AFTER_BUILD = PACKER_DIR / "after-build" / "xennet-after-build.pkr.hcl"
SCRIPTS = PACKER_DIR / "scripts"
CONSOLE = ROOT / "tests" / "data" / "console" / "ec2-ubuntu-14.04-cloud-init-0.7.5.txt"
# What the tests give as build.SSHPrivateKey when no host is logged in to (a recorder audits).
FAKE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAfake-test-key-not-a-secret\n-----END OPENSSH PRIVATE KEY-----\n"
INSTANCE = "i-0123456789abcdef0"
RUN = "4f2d1c1e-0000-4000-8000-00000000c0de"
MANIFEST = {
    # The manifest post-processor's format (Packer's docs): runs accumulate in one file.
    "builds": [
        {"name": "image", "builder_type": "amazon-ebs", "build_time": 1700000000, "files": None,
         "artifact_id": "us-east-1:ami-0000000000000old1", "packer_run_uuid": "11111111-0000-4000-8000-000000000001", "custom_data": None},
        {"name": "image", "builder_type": "amazon-ebs", "build_time": 1700000900, "files": None,
         "artifact_id": "eu-west-1:ami-0eu0000000000000a,us-east-1:ami-0use000000000000b", "packer_run_uuid": RUN, "custom_data": None},
    ],
    "last_run_uuid": RUN,
}  # fmt: skip
AMI = "ami-0use000000000000b"  # this run's, in the examples' default region
_OPTIONS = SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)
_INTERPOLATION = re.compile(r"(?<!\$)\$\{([^}]*)\}")


def load(path: Path) -> dict[str, Any]:
    """The template as python-hcl2 reads it (strings unquoted, no comments)."""
    return hcl2.loads(path.read_text(), serialization_options=_OPTIONS)


def variables(template: Mapping[str, Any]) -> dict[str, Any]:
    """Each declared variable and its default (None when it has none)."""
    found: dict[str, Any] = {}
    for block in template.get("variable", []):
        for name, body in block.items():
            found[name] = body.get("default")
    return found


def in_build_provisioner(template: Mapping[str, Any]) -> dict[str, Any]:
    """The in-build example's last provisioner: the audit."""
    (build,) = template["build"]
    (kind, body), *_ = build["provisioner"][-1].items()
    assert kind == "shell-local", kind
    return body


def after_build_post_processors(template: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The after-build example's post-processor chain, in order, as (type, body)."""
    (build,) = template["build"]
    (chain,) = build["post-processors"]
    return [next(iter(p.items())) for p in chain["post-processor"]]


def _packer_quote(value: str) -> str:
    """A value inside Packer's ``%s='%s' `` env var format (createFlattenedEnvVars)."""
    return value.replace("'", "'\"'\"'")


def render(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``${NAME}`` replaced by ``values[NAME]``, and ``$${`` read as ``${``.

    Any other interpolation is an error: the tests must know every value the example uses.
    """

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"the example uses ${{{name}}}, which the test gives no value")
        return values[name]

    return _INTERPOLATION.sub(one, text).replace("$${", "${")


@dataclasses.dataclass
class ShellLocal:
    """One rendered shell-local block: its environment_vars and inline script."""

    environment: dict[str, str]
    script: str

    def command(self, script_path: Path) -> list[str]:
        """Packer's default execute_command on Unix, with {{.Vars}} and {{.Script}} filled in."""
        env = dict(self.environment, PACKER_BUILD_NAME="xen", PACKER_BUILDER_TYPE="amazon-ebs")
        flattened = "".join(f"{k}='{_packer_quote(v)}' " for k, v in sorted(env.items()))
        return ["/bin/sh", "-c", f"{flattened} {script_path}"]

    def start(self, env: Mapping[str, str], cwd: Path, workdir: Path) -> subprocess.Popen[str]:
        """Start it as Packer would (the caller waits): the script in a file of mode 0700 in ``workdir``.

        Its own process group, as a CI job's: the tests interrupt it the way Jenkins aborts one."""
        fd, name = tempfile.mkstemp(prefix="packer-shell", dir=workdir)
        with os.fdopen(fd, "w") as f:
            f.write("#!/bin/sh -e\n" + self.script)
        os.chmod(name, 0o700)
        return subprocess.Popen(
            self.command(Path(name)),
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def run(
        self, env: Mapping[str, str], cwd: Path, workdir: Path, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run it to the end."""
        proc = self.start(env, cwd, workdir)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def shell_local(body: Mapping[str, Any], values: Mapping[str, str]) -> ShellLocal:
    """A shell-local block rendered with ``values`` (``build.*``, ``var.*``, ``path.root``)."""
    environment = {}
    for pair in body.get("environment_vars", []):
        key, _, value = render(pair, values).partition("=")
        environment[key] = value
    script = "".join(render(line, values) + "\n" for line in body["inline"])
    return ShellLocal(environment, script)


def values_for(template: Mapping[str, Any], path: Path, **given: str) -> dict[str, str]:
    """Every ``var.*`` (the example's default unless given as ``var_NAME=``), ``path.root``,
    and the ``build.*`` values given as ``build_NAME=``."""
    found = {f"var.{k}": str(v) for k, v in variables(template).items() if v is not None}
    for key, value in given.items():
        prefix, _, name = key.partition("_")
        found[f"{prefix}.{name}"] = value
    found["path.root"] = str(path.parent)
    return found


def in_build(audit: str, *, host: str = "198.51.100.7", key: str = FAKE_KEY, host_keys: str = "console") -> ShellLocal:
    """The in-build example's audit provisioner, for a build instance at ``host`` (as ec2-user, port 22)."""
    template = load(IN_BUILD)
    values = values_for(
        template,
        IN_BUILD,
        build_Host=host,
        build_Port="22",
        build_User="ec2-user",
        build_ID=INSTANCE,
        build_SSHPrivateKey=key,
        var_xennet_audit=audit,
        var_host_keys=host_keys,
    )
    return shell_local(in_build_provisioner(template), values)


def after_build(workdir: Path, audit: str) -> ShellLocal:
    """The after-build example's launch post-processor, with MANIFEST as Packer's manifest in ``workdir``."""
    manifest = workdir / "packer-manifest.json"
    manifest.write_text(json.dumps(MANIFEST))
    template = load(AFTER_BUILD)
    values = values_for(
        template,
        AFTER_BUILD,
        build_PackerRunUUID=RUN,
        var_audit_subnet_id="subnet-0123456789abcdef0",
        var_audit_security_group_id="sg-0123456789abcdef0",
        var_xennet_audit=audit,
        var_manifest=str(manifest),
    )
    (_, body) = after_build_post_processors(template)[1]
    return shell_local(body, values)


class FakeAws:
    """The stand-in AWS CLI (tests/fake_aws.py) first on PATH, and the EC2 account it plays."""

    def __init__(self, root: Path, authorized_keys: Path, address: str = "198.51.100.7") -> None:
        self.root = root
        bindir = root / "bin"
        bindir.mkdir(parents=True)
        shim = bindir / "aws"
        shim.write_text(f'#!/bin/sh\nexec {sys.executable} {Path(__file__).parent / "fake_aws.py"} "$@"\n')
        shim.chmod(0o755)
        (root / "config.json").write_text(json.dumps({"hypervisors": {"t2": "xen", "m3": "xen"}}))
        self.configure(console=str(CONSOLE), address=address, authorized_keys=str(authorized_keys))

    def configure(self, **settings: object) -> None:
        path = self.root / "config.json"
        config = json.loads(path.read_text())
        config.update(settings)
        path.write_text(json.dumps(config))

    def calls(self) -> list[list[str]]:
        path = self.root / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def state(self) -> dict[str, Any]:
        return json.loads((self.root / "state.json").read_text())

    def environment(self, home: Path, **extra: str) -> dict[str, str]:
        """A job's environment: the fake aws and this Python's scripts (xennet-audit) first on PATH."""
        path = os.pathsep.join([str(self.root / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]])
        return {"PATH": path, "HOME": str(home), "FAKE_AWS_DIR": str(self.root), **extra}
