"""A stand-in for the AWS CLI (`aws`), for the Packer examples' tests: EC2 cannot be reached here.

It answers only the calls the examples' scripts make, with the exact arguments they pass
(anything else exits 255, as the CLI does on a usage error), and logs each call. The EC2
account it plays lives in ``$FAKE_AWS_DIR``:

- ``config.json``: ``console`` (path of the console output to serve), ``address`` (the
  launched instance's address: a lab host), ``authorized_keys`` (where an imported key pair's
  public key is appended: what EC2 does to a new instance's login user), ``hypervisors``
  (instance type family -> ``xen``/``nitro``), ``wait_seconds`` (how long ``ec2 wait`` takes);
- ``calls.jsonl``: one JSON argv per call; ``state.json``: key pairs, instances and tags.

The SSH side of every test stays real: the audit logs in to a lab host over a real sshd.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

INSTANCE_ID = "i-0fa4e0000000000001"


class Usage(Exception):
    pass


def _options(args: list[str]) -> dict[str, list[str]]:
    """``--name value...`` pairs (a flag takes every word up to the next ``--``)."""
    found: dict[str, list[str]] = {}
    name = None
    for arg in args:
        if arg.startswith("--"):
            name = arg[2:]
            found[name] = []
        elif name is None:
            raise Usage(f"unexpected {arg!r}")
        else:
            found[name].append(arg)
    return found


def _one(opts: dict[str, list[str]], name: str) -> str:
    values = opts.get(name, [])
    if len(values) != 1:
        raise Usage(f"--{name} needs one value, got {values}")
    return values[0]


def _expect(opts: dict[str, list[str]], **wanted: str) -> None:
    for name, value in wanted.items():
        got = _one(opts, name.replace("_", "-"))
        if got != value:
            raise Usage(f"--{name.replace('_', '-')} {got!r}, expected {value!r}")


class Account:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = json.loads((root / "config.json").read_text())
        state = root / "state.json"
        self.state: dict[str, Any] = (
            json.loads(state.read_text()) if state.exists() else {"key_pairs": [], "instances": {}, "tags": []}
        )

    def save(self) -> None:
        (self.root / "state.json").write_text(json.dumps(self.state))

    def ec2(self, command: str, args: list[str]) -> str:
        opts = _options(args)
        if "region" not in opts:
            raise Usage("no --region")
        handler = getattr(self, command.replace("-", "_"), None)
        if handler is None:
            raise Usage(f"unknown command ec2 {command}")
        return handler(opts)

    def get_console_output(self, opts: dict[str, list[str]]) -> str:
        _expect(opts, output="text", query="Output")
        _one(opts, "instance-id")
        return Path(self.config["console"]).read_text()

    def describe_instance_types(self, opts: dict[str, list[str]]) -> str:
        _expect(opts, output="text", query="InstanceTypes[0].Hypervisor")
        family = _one(opts, "instance-types").split(".")[0]
        return self.config["hypervisors"].get(family, "nitro") + "\n"

    def import_key_pair(self, opts: dict[str, list[str]]) -> str:
        material = _one(opts, "public-key-material")
        if not material.startswith("fileb://"):
            raise Usage("public key material not from a file")
        public = Path(material[len("fileb://") :]).read_text()
        with open(self.config["authorized_keys"], "a") as f:
            f.write(public)
        self.state["key_pairs"].append(_one(opts, "key-name"))
        return json.dumps({"KeyName": _one(opts, "key-name")}) + "\n"

    def delete_key_pair(self, opts: dict[str, list[str]]) -> str:
        name = _one(opts, "key-name")
        self.state["key_pairs"] = [k for k in self.state["key_pairs"] if k != name]
        return ""

    def run_instances(self, opts: dict[str, list[str]]) -> str:
        _expect(opts, count="1", output="text", query="Instances[0].InstanceId")
        _expect(opts, instance_initiated_shutdown_behavior="terminate")
        if _one(opts, "key-name") not in self.state["key_pairs"]:
            raise Usage("no such key pair")
        spec = _one(opts, "tag-specifications")
        run = spec.split("Key=xennet-audit-run,Value=", 1)[1].split("}", 1)[0]
        self.state["instances"][INSTANCE_ID] = {
            "state": "running",
            "run": run,
            "image": _one(opts, "image-id"),
            "type": _one(opts, "instance-type"),
        }
        return INSTANCE_ID + "\n"

    def wait(self, what: str, opts: dict[str, list[str]]) -> str:
        if what not in ("instance-running", "instance-terminated"):
            raise Usage(f"unknown waiter {what}")
        _one(opts, "instance-ids")
        if what == "instance-running":
            time.sleep(float(self.config.get("boot_seconds", 0)))
        return ""

    def describe_instances(self, opts: dict[str, list[str]]) -> str:
        _expect(opts, output="text")
        if "filters" in opts:
            run = opts["filters"][0].split("Values=", 1)[1]
            alive = [i for i, v in self.state["instances"].items() if v["run"] == run and v["state"] != "terminated"]
            return "\t".join(alive) + "\n"
        _one(opts, "instance-ids")
        return self.config["address"] + "\n"

    def terminate_instances(self, opts: dict[str, list[str]]) -> str:
        for instance in opts["instance-ids"]:
            self.state["instances"][instance]["state"] = "terminated"
        return ""

    def create_tags(self, opts: dict[str, list[str]]) -> str:
        self.state["tags"].append([_one(opts, "resources"), _one(opts, "tags")])
        return ""


def main(argv: list[str]) -> int:
    root = Path(os.environ["FAKE_AWS_DIR"])
    with open(root / "calls.jsonl", "a") as f:
        f.write(json.dumps(argv) + "\n")
    account = Account(root)
    try:
        if argv[:2] == ["ec2", "wait"]:
            out = account.wait(argv[2], _options(argv[3:]))
        elif len(argv) >= 2 and argv[0] == "ec2":
            out = account.ec2(argv[1], argv[2:])
        else:
            raise Usage(f"unknown command {argv[:2]}")
    except Usage as exc:
        print(f"aws: error: {exc}", file=sys.stderr)
        return 255
    account.save()
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
