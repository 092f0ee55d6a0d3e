"""Bring a namespace SSH lab up or down by hand (debugging aid).

python -m tests.lab_cli up --hosts 3        # prints host specs and ssh_config
ssh -F /tmp/xnl-lab-cli/ssh_config host000 ethtool -k eth0
python -m tests.lab_cli down
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from tests.lab import HostPlan, Lab, cleanup_prefix, require_root


def _default_workdir(prefix: str) -> Path:
    return Path(f"/tmp/{prefix}-lab-cli")


def up(args: argparse.Namespace) -> int:
    workdir = args.workdir or _default_workdir(args.prefix)
    plan = [HostPlan(f"host{i:03d}") for i in range(args.hosts)]
    lab = Lab(plan, prefix=args.prefix, network=args.network, workdir=workdir).start()
    lab.detach()  # keep running after we exit; `down` removes it
    for name in lab.hosts:
        print(f"{name}\t{lab.spec(name)}")
    print(f"ssh_config: {lab.ssh_config}\nkey_file: {lab.key_file}\nknown_hosts: {lab.known_hosts}")
    return 0


def down(args: argparse.Namespace) -> int:
    cleanup_prefix(args.prefix)
    workdir = args.workdir or _default_workdir(args.prefix)
    # Only delete a directory that is recognisably a lab workdir.
    if (workdir / "ssh_config").is_file() and (workdir / "hosts").is_dir():
        shutil.rmtree(workdir)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.lab_cli", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--prefix", default="xnl")
    parser.add_argument("--network", default="198.18.0.0/20")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    reason = require_root()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    return up(args) if args.command == "up" else down(args)


if __name__ == "__main__":
    sys.exit(main())
