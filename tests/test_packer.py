"""The Packer examples (``packer/``), without AWS and without the lab.

- Packer itself (Debian's ``packer``, 1.6.6) formats and validates both templates, and refuses
  a Nitro instance type. That Packer predates ``required_plugins``, so the templates are
  validated without ``plugins.pkr.hcl``, whose block is checked with python-hcl2.
- Their ``shell-local`` blocks, read from the templates and run as Packer runs them
  (tests/packer_example.py), pass the suite options it really has (``xennet-audit --help``),
  keep the private key off every command line and output, and fail when the host key cannot
  be verified. ``xennet-audit`` is a recorder here; tests/test_packer_lab.py runs the real
  audit against lab hosts.
- The after-build launch script, against a stand-in AWS CLI (tests/fake_aws.py): the right
  AMI from Packer's manifest, the hypervisor check, and an instance terminated on success,
  failure and interruption alike.
- The console host-key filter on a real EC2 console output (tests/data/console/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import packer_example as px
from tests.conftest import signal_at_default

CONSOLE_KEYS = [
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBPpr+er3f3udgTXl6EPI+7KGx6TXD6uSDR2iwHifbA/rgJqMHVg8Ziq+0dQ1jn6Upu1OgReLw+OG91rLAB+lHNY=",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGH5fGgBdTgC1nD8E/TekwJAet/K4f1f8DiBiQ4NYry/",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCpCdv92wqd3FA503SQRIyr3vPAV2jBzlulqfdMFh8KMlLcJ5Myk5SLPZqxM9BVsCpNttEIFWAArKalPLg4Od6JuBQEI0EzhxWELE7kH/92urWy1VA1lWquWQnNNC0JXqqsZlUZ1PWcbCqRVBwQntKL30KY2GD3J4AfvcVljxCOJcBOej5YIAsapMqJVb95ouIbrVCLV1DUjkTy60XoUtmGmkLGoGea798Ux9MWSk6J+nyCB0jSOYVYjeaajv4ioyrkXumO4/7JoQCxfcAKk9vtMN+jNU6tnrfP+KmcrPJBxf3tAuycPrkVVMJW2fxXgsmAWgOTJpgRnkg4SNm025nR",
]
PACKER = shutil.which("packer")
needs_packer = pytest.mark.skipif(
    PACKER is None, reason="packer is not installed (Debian's packer; tests/system_packages.py installs it as root)"
)
EXAMPLES = {"in-build": px.IN_BUILD, "after-build": px.AFTER_BUILD}
REQUIRED_VARS = {
    "in-build": ["-var", "source_ami=ami-0123456789abcdef0"],
    "after-build": [
        "-var",
        "source_ami=ami-0123456789abcdef0",
        "-var",
        "audit_subnet_id=subnet-0123456789abcdef0",
        "-var",
        "audit_security_group_id=sg-0123456789abcdef0",
    ],
}
INSTANCE_TYPE_VAR = {"in-build": "instance_type", "after-build": "audit_instance_type"}
# Stands in for xennet-audit: records its argv and the identity file it was given, exits $RECORD_EXIT.
RECORDER = """#!{python}
import json, os, stat, sys
record = os.environ["RECORD_DIR"]
key = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--ssh-identity-file="))
known = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--ssh-known-hosts="))
json.dump({{"argv": sys.argv[1:], "key": open(key).read(), "key_mode": stat.S_IMODE(os.stat(key).st_mode),
           "known_hosts": open(known).read(), "cwd": os.getcwd()}}, open(os.path.join(record, "audit.json"), "w"))
sys.exit(int(os.environ.get("RECORD_EXIT", "0")))
"""


def packer(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PACKER is not None
    env = dict(os.environ, CHECKPOINT_DISABLE="1", PACKER_CACHE_DIR=str(cwd or "/tmp"))
    return subprocess.run([PACKER, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def words(text: str) -> str:
    return " ".join(text.split())


# ---- Packer itself ---------------------------------------------------------------------------


@needs_packer
@pytest.mark.parametrize("example", EXAMPLES)
def test_the_examples_are_as_packer_fmt_writes_them(example):
    done = packer("fmt", "-check", "-diff", str(EXAMPLES[example].parent))
    assert done.returncode == 0, done.stdout + done.stderr


def validate(example: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    copy = tmp_path / EXAMPLES[example].name
    shutil.copy(EXAMPLES[example], copy)
    return packer("validate", *REQUIRED_VARS[example], *extra, copy.name, cwd=tmp_path)


@needs_packer
@pytest.mark.parametrize("example", EXAMPLES)
def test_packer_validates_the_examples(example, tmp_path):
    done = validate(example, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_packer
@pytest.mark.parametrize("example", EXAMPLES)
@pytest.mark.parametrize(
    "instance_type", ["t3.micro", "m5.large", "c6i.xlarge", "r4.large", "i3.large", "m4", "m4.16xlarge", "t2"]
)
def test_packer_refuses_an_instance_type_without_xen_netfront(example, instance_type, tmp_path):
    done = validate(example, tmp_path, "-var", f"{INSTANCE_TYPE_VAR[example]}={instance_type}")
    assert done.returncode == 1
    assert "must be a Xen type whose NIC can be xen-netfront" in words(done.stdout + done.stderr)


@needs_packer
@pytest.mark.parametrize("example", EXAMPLES)
def test_packer_refuses_an_unknown_host_key_method(example, tmp_path):
    done = validate(example, tmp_path, "-var", "host_keys=insecure")
    assert done.returncode == 1
    assert 'The host_keys must be "console" or "accept-new".' in words(done.stdout + done.stderr)


@needs_packer
@pytest.mark.parametrize("example", EXAMPLES)
def test_packer_refuses_a_build_variable_it_does_not_have(example, tmp_path):
    """validate really reads the shell-local blocks: a misspelt build variable is an error."""
    copy = tmp_path / EXAMPLES[example].name
    copy.write_text(EXAMPLES[example].read_text().replace("${build.", "${build.Nope", 1))
    done = packer("validate", *REQUIRED_VARS[example], copy.name, cwd=tmp_path)
    assert done.returncode == 1 and 'does not have an attribute named "Nope' in words(done.stdout + done.stderr)


@pytest.mark.parametrize("example", EXAMPLES)
def test_each_example_asks_for_the_amazon_plugin(example):
    template = px.load(EXAMPLES[example].parent / "plugins.pkr.hcl")
    (block,) = template["packer"]
    assert block["required_version"] == ">= 1.7.0"
    (plugins,) = block["required_plugins"]
    assert plugins["amazon"]["source"] == "github.com/hashicorp/amazon"


# ---- the templates' content ------------------------------------------------------------------


def test_the_in_build_example_audits_last_on_a_xen_type_with_a_key_of_its_own():
    template = px.load(px.IN_BUILD)
    (source,) = template["source"]
    builder = source["amazon-ebs"]["xen"]
    assert builder["instance_type"] == "${var.instance_type}" and px.variables(template)["instance_type"] == "t2.micro"
    assert builder["temporary_key_pair_type"] == "ed25519"
    audit = px.in_build_provisioner(template)
    # The key is in the script's text only: environment_vars end up on a command line and in the log.
    assert not [v for v in audit["environment_vars"] if "SSHPrivateKey" in v]
    assert audit["inline"].count("${build.SSHPrivateKey}") == 1
    # shell-local also runs each inline line through Go's template engine.
    assert not [line for line in audit["inline"] if "{{" in line]


def test_the_after_build_example_hands_the_manifest_to_the_launch_script():
    template = px.load(px.AFTER_BUILD)
    chain = px.after_build_post_processors(template)
    assert [kind for kind, _ in chain] == ["manifest", "shell-local"]
    assert chain[0][1]["output"] == "${var.manifest}"
    assert "XENNET_MANIFEST=${var.manifest}" in chain[1][1]["environment_vars"]
    assert px.variables(template)["audit_instance_type"] == "t2.micro"


# ---- host keys from the EC2 console ----------------------------------------------------------


def known_hosts(console: str, host: str = "10.0.0.5", port: str = "22") -> subprocess.CompletedProcess[str]:
    script = px.SCRIPTS / "xennet-known-hosts.sh"
    return subprocess.run(["sh", str(script), host, port], input=console, capture_output=True, text=True)


def block(*lines: str) -> str:
    return (
        "-----BEGIN SSH HOST KEY KEYS-----\n"
        + "".join(f"{line}\n" for line in lines)
        + "-----END SSH HOST KEY KEYS-----\n"
    )


def test_the_host_keys_of_a_real_ec2_console_output():
    done = known_hosts(px.CONSOLE.read_text())
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"10.0.0.5 {k}" for k in CONSOLE_KEYS]


OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHtOReNwl7HPAz5EUR/6mRdACoNszPBcSS9tCUeot7CE"


@pytest.mark.parametrize(
    ("console", "port", "expected"),
    [
        # A port other than 22 is written as OpenSSH looks it up.
        (block(OTHER_KEY + " root@vm1"), "2222", [f"[10.0.0.5]:2222 {OTHER_KEY}"]),
        # A reboot prints the block again: the last complete block counts.
        (block(CONSOLE_KEYS[1]) + "reboot\n" + block(OTHER_KEY), "22", [f"10.0.0.5 {OTHER_KEY}"]),
        # CR LF line ends (a serial console's), trailing blanks.
        (
            block(OTHER_KEY).replace("\n", "\r\n").replace("KEYS-----\r", "KEYS----- \r"),
            "22",
            [f"10.0.0.5 {OTHER_KEY}"],
        ),
        # Interleaved console lines inside the block are not keys.
        (block("[  317.19] cloud-init[1278]: ci-info: no keys", OTHER_KEY), "22", [f"10.0.0.5 {OTHER_KEY}"]),
        # A block still being written (no END yet) after a complete one: the complete one.
        (
            block(OTHER_KEY) + "-----BEGIN SSH HOST KEY KEYS-----\n" + CONSOLE_KEYS[1] + "\n",
            "22",
            [f"10.0.0.5 {OTHER_KEY}"],
        ),
    ],
    ids=["port", "last-block", "crlf", "interleaved", "unfinished-later-block"],
)
def test_the_host_key_block_is_read_strictly(console, port, expected):
    done = known_hosts(console, port=port)
    assert (done.returncode, done.stdout.splitlines()) == (0, expected)


@pytest.mark.parametrize(
    "console",
    [
        "",
        "None\n",  # what `aws ... --output text --query Output` prints before the console is posted
        "-----BEGIN SSH HOST KEY KEYS-----\n" + OTHER_KEY + "\n",  # not finished
        block(),  # empty
        block("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "ssh-ed25519 not;base64"),  # no usable key
        "ec2: " + block(OTHER_KEY).replace("\n", "\nec2: "),  # a format it does not know: prefixed markers
        "\n".join(line for line in px.CONSOLE.read_text().splitlines() if "KEY KEYS" not in line),
    ],
    ids=["empty", "not-posted", "unfinished", "empty-block", "no-usable-key", "prefixed", "real-without-block"],
)
def test_no_complete_host_key_block_is_a_failure(console):
    done = known_hosts(console)
    assert (done.returncode, done.stdout) == (1, "")


# ---- the in-build shell-local, with a recorder as xennet-audit --------------------------------


@pytest.fixture
def aws(tmp_path):
    authorized = tmp_path / "authorized_keys"
    authorized.write_text("")
    return px.FakeAws(tmp_path / "aws", authorized)


@pytest.fixture
def recorder(tmp_path):
    """A stand-in xennet-audit, and its record directory (RECORD_DIR)."""
    path = tmp_path / "xennet-audit-recorder"
    path.write_text(RECORDER.format(python=sys.executable))
    path.chmod(0o755)
    (tmp_path / "record").mkdir()
    return path


def recorded(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "record" / "audit.json").read_text())


def env(aws: px.FakeAws, tmp_path: Path, **extra: str) -> dict[str, str]:
    return aws.environment(tmp_path, RECORD_DIR=str(tmp_path / "record"), **extra)


def help_options() -> set[str]:
    audit = Path(sys.executable).parent / "xennet-audit"
    shown = subprocess.run([str(audit), "--help"], capture_output=True, text=True, timeout=120, cwd="/")
    assert shown.returncode == 0, shown.stderr
    return set(re.findall(r"(--[a-z][a-z0-9-]+)", shown.stdout))


@pytest.mark.parametrize("exit_status", [0, 1, 4])
def test_the_in_build_audit_passes_real_options_and_its_exit_status_is_the_builds(exit_status, aws, recorder, tmp_path):
    work = tmp_path / "cwd"
    work.mkdir()
    done = px.in_build(str(recorder)).run(env(aws, tmp_path, RECORD_EXIT=str(exit_status)), work, tmp_path)
    assert done.returncode == exit_status, done.stderr
    record = recorded(tmp_path)
    argv = record["argv"]
    assert argv[0] == "--hosts=ssh://ec2-user@198.51.100.7:22"
    key_file = argv[1].split("=", 1)[1]
    known_file = next(a for a in argv if a.startswith("--ssh-known-hosts=")).split("=", 1)[1]
    assert argv == [
        "--hosts=ssh://ec2-user@198.51.100.7:22",
        f"--ssh-identity-file={key_file}",
        "--ssh-extra-args=-o IdentitiesOnly=yes",
        f"--ssh-known-hosts={known_file}",
        "--ssh-host-key-policy=strict",
        "--xennet-require-applicable",
        "--reports-dir=reports/in-build",
    ]
    # Every option is one the audit has.
    options = {a.split("=", 1)[0] for a in argv}
    assert options <= help_options(), options - help_options()
    # The host keys: those the instance printed on its console, for the address connected to.
    assert record["known_hosts"].splitlines() == [f"198.51.100.7 {k}" for k in CONSOLE_KEYS]
    assert (work / "reports/in-build/known_hosts").read_text() == record["known_hosts"]
    assert ["ec2", "get-console-output", "--region", "us-east-1", "--instance-id", px.INSTANCE,
            "--output", "text", "--query", "Output"] in aws.calls()  # fmt: skip
    # The key: in a file of mode 0600, gone afterwards, never printed.
    assert (record["key"].strip(), record["key_mode"]) == (px.FAKE_KEY.strip(), 0o600)
    assert not Path(key_file).exists() and not Path(known_file).exists()
    assert "fake-test-key" not in done.stdout + done.stderr
    assert record["cwd"] == str(work)


def test_accept_new_gives_the_audit_an_empty_known_hosts_of_its_own(aws, recorder, tmp_path):
    done = px.in_build(str(recorder), host_keys="accept-new").run(env(aws, tmp_path), tmp_path, tmp_path)
    assert done.returncode == 0, done.stderr
    record = recorded(tmp_path)
    assert "--ssh-host-key-policy=accept-new" in record["argv"] and record["known_hosts"] == ""
    assert aws.calls() == []  # the console is not asked


def test_no_host_keys_on_the_console_fails_the_build_without_auditing(aws, recorder, tmp_path):
    empty = tmp_path / "console.txt"
    empty.write_text("None\n")
    aws.configure(console=str(empty))
    done = px.in_build(str(recorder)).run(env(aws, tmp_path, XENNET_CONSOLE_TIMEOUT="0"), tmp_path, tmp_path)
    assert done.returncode == 69
    assert f"no SSH host keys on the EC2 console of {px.INSTANCE}" in done.stderr
    assert not (tmp_path / "record" / "audit.json").exists()


# ---- the after-build launch script, with a recorder as xennet-audit ---------------------------


def launched(aws: px.FakeAws) -> list[list[str]]:
    return [c for c in aws.calls() if c[:2] == ["ec2", "run-instances"]]


@pytest.mark.parametrize(("exit_status", "tag"), [(0, "passed"), (1, "failed")])
def test_the_launch_script_audits_this_runs_ami_and_always_terminates(exit_status, tag, aws, recorder, tmp_path):
    done = px.after_build(tmp_path, str(recorder)).run(
        env(aws, tmp_path, RECORD_EXIT=str(exit_status)), tmp_path, tmp_path
    )
    assert done.returncode == exit_status, done.stderr
    (launch,) = launched(aws)
    assert launch[launch.index("--image-id") + 1] == px.AMI  # this run's, in us-east-1
    assert launch[launch.index("--instance-type") + 1] == "t2.micro"
    record = recorded(tmp_path)
    assert record["argv"][0] == "--hosts=ssh://ec2-user@198.51.100.7:22"
    assert record["key_mode"] == 0o600 and "PRIVATE KEY" in record["key"]
    state = aws.state()
    assert [v["state"] for v in state["instances"].values()] == ["terminated"]
    assert state["key_pairs"] == []  # deleted
    assert state["tags"] == [[px.AMI, f"Key=xennet-compliance,Value={tag}"]]
    # The key pair's public half went to EC2; the private half never left this machine's temp dir.
    assert (tmp_path / "authorized_keys").read_text().startswith("ssh-ed25519 ")
    assert "PRIVATE KEY" not in done.stdout + done.stderr
    assert not Path(next(a for a in record["argv"] if a.startswith("--ssh-identity-file=")).split("=", 1)[1]).exists()


def test_a_nitro_instance_type_is_refused_before_anything_is_launched(aws, recorder, tmp_path):
    aws.configure(hypervisors={"t2": "nitro"})  # EC2's word is the one that counts
    done = px.after_build(tmp_path, str(recorder)).run(env(aws, tmp_path), tmp_path, tmp_path)
    assert done.returncode == 64
    assert "t2.micro runs on nitro, not xen" in done.stderr
    assert [c[1] for c in aws.calls()] == ["describe-instance-types"]


@pytest.fixture
def default_disposition(signum):
    with signal_at_default(signum):
        yield


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
@pytest.mark.usefixtures("default_disposition")
def test_an_interrupted_launch_still_terminates_the_instance(signum, aws, recorder, tmp_path):
    aws.configure(boot_seconds=60)
    proc = px.after_build(tmp_path, str(recorder)).start(env(aws, tmp_path), tmp_path, tmp_path)
    deadline = time.monotonic() + 60
    while not [c for c in aws.calls() if c[:2] == ["ec2", "wait"]]:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signum)  # as a CI job is aborted: the whole process group
    # The build fails (the signal also ends Packer's own `sh -c` around the script); the
    # script finishes its cleanup first, holding the output pipes until then.
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, err
    state = aws.state()
    assert [v["state"] for v in state["instances"].values()] == ["terminated"]
    assert state["key_pairs"] == []
    assert "terminated i-0fa4e0000000000001" in err
    assert not (tmp_path / "record" / "audit.json").exists()


# ---- the scripts themselves ------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (Debian's shellcheck)")
def test_the_scripts_pass_shellcheck():
    scripts = sorted(str(p) for p in px.SCRIPTS.glob("*.sh"))
    done = subprocess.run(["shellcheck", "--shell=sh", *scripts], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_the_scripts_are_executable():
    assert all(p.stat().st_mode & stat.S_IXUSR for p in px.SCRIPTS.glob("*.sh"))
