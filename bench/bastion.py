"""A fleet behind one bastion: the audit's shared bastion connection against a login per host.

    sudo python -m bench.bastion --hosts 200      # updates its section of bench/RESULTS.md

A lab of one bastion and N hosts reachable only through it (``HostPlan(behind=...)``; two
interfaces each, in bench/run.py's four states). For paramiko:// and ssh://, the audit is run
as a user runs it, with an ssh_config of the usual kind (``ProxyJump root@BASTION``: one
connection to the bastion for the run), against the same audit with ``ProxyCommand ssh -W
%h:%p BASTION`` (a login to the bastion per host: what OpenSSH's own ProxyJump does, and what
the suite did before). Round-robin, ``--repeat`` times; medians. CPU is the audit's process
tree (user + system, from wait4: the suite's masters and every ssh it started included); the
bastion's logins are counted in its sshd log; every run must get every verdict right.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.results import update_section
from bench.run import STATES, machine, stop_brings_the_lab_down, verdict, versions
from tests.lab import HostPlan, Lab, run_client

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bastion:start -->", "<!-- bastion:end -->"
PREFIX, NETWORK = "xnbj", "198.18.224.0/20"
APPROACHES = (  # key, scheme, route
    ("paramiko-jump", "paramiko", "ProxyJump"),
    ("paramiko-command", "paramiko", "ProxyCommand"),
    ("ssh-jump", "ssh", "ProxyJump"),
    ("ssh-command", "ssh", "ProxyCommand"),
)


def config(lab: Lab, path: Path, route: str) -> Path:
    bastion = lab.hosts["bastion"].address
    hop = {
        "ProxyJump": f"ProxyJump root@{bastion}",
        # The lab's ssh_config verifies the bastion's key for this hop too.
        "ProxyCommand": f"ProxyCommand ssh -F {lab.ssh_config} -W %h:%p {bastion}",
    }[route]
    path.write_text(f"Host * !{bastion}\n    {hop}\n")
    return path


def run(lab: Lab, names: list[str], scheme: str, route: str, work: Path, workers: int) -> dict:
    """One audit as a user runs it: wall, CPU of its process tree, the bastion's logins, verdicts."""
    reports = work / f"{scheme}-{route}-{time.monotonic_ns()}"
    argv = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--reports-dir={reports}",
        "--hosts=" + ",".join(lab.spec(n, scheme=scheme) for n in names),
        f"--ssh-identity-file={lab.key_file}", f"--ssh-known-hosts={lab.known_hosts}",
        f"--ssh-config={config(lab, work / f'{route}.ssh_config', route)}", "--xennet-scope=all",
        f"--xennet-workers={workers}",
    ]  # fmt: skip
    logins = len(lab.logins_from("bastion"))
    started = time.monotonic()
    with open(work / "output", "wb") as output:
        _, usage = run_client(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    wall = time.monotonic() - started
    if not (reports / "summary.json").exists():
        raise RuntimeError(f"the audit wrote no summary.json:\n{(work / 'output').read_text()[-3000:]}")
    summary = json.loads((reports / "summary.json").read_text())
    address = {lab.hosts[n].address: n for n in names}
    got = {(address.get(r["host"]), r["interface"]): r["verdict"] for r in summary["results"]}
    want = {(n, i.name): verdict(i) for n in names for i in lab.hosts[n].plan.ifaces}
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "logins": len(lab.logins_from("bastion")) - logins,
        "right": got == want and summary["complete"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bastion", description=__doc__)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--prefix", default=PREFIX, help=f"the lab's name prefix (default {PREFIX})")
    parser.add_argument("--network", default=NETWORK, help=f"the lab's network (default {NETWORK})")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    stop_brings_the_lab_down(parser)
    plan = [HostPlan("bastion")] + [
        HostPlan(f"b{i:03d}", STATES[i % len(STATES)], behind="bastion") for i in range(args.hosts)
    ]
    work = Path(tempfile.mkdtemp(prefix="xnbj-bench-"))
    results: dict[str, list[dict]] = {key: [] for key, _, _ in APPROACHES}
    started = time.gmtime()
    loads = [os.getloadavg()[0]]  # the machine is shared: say how busy it was
    try:
        with Lab(plan, prefix=args.prefix, network=args.network, workdir=work / "lab") as lab:
            names = [p.name for p in plan[1:]]
            for rep in range(args.repeat):
                for key, scheme, route in APPROACHES:
                    one = run(lab, names, scheme, route, work, args.workers)
                    results[key].append(one)
                    loads.append(os.getloadavg()[0])
                    print(
                        f"[{rep + 1}/{args.repeat}] {key}: {one['wall']:.2f}s wall, {one['cpu']:.2f}s cpu, "
                        f"{one['logins']} bastion logins, verdicts {'right' if one['right'] else 'WRONG'}",
                        file=sys.stderr,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write(args, started, results, loads)
    return 0


def write(
    args: argparse.Namespace, started: time.struct_time, results: dict[str, list[dict]], loads: list[float]
) -> None:
    def median(key: str, field: str) -> float:
        return statistics.median(r[field] for r in results[key])

    rows = []
    for key, scheme, route in APPROACHES:
        logins = sorted({r["logins"] for r in results[key]})
        right = all(r["right"] for r in results[key])
        how = "one shared connection" if route == "ProxyJump" else "a login per host"
        rows.append(
            f"| `{scheme}://` | `{route}` ({how}) | {median(key, 'wall'):.2f} s | {median(key, 'cpu'):.2f} s "
            f"| {', '.join(map(str, logins))} | {'yes' if right else '**NO**'} |"
        )
    ratio = {s: median(f"{s}-command", "cpu") / median(f"{s}-jump", "cpu") for s in ("paramiko", "ssh")}
    wall = {s: median(f"{s}-command", "wall") / median(f"{s}-jump", "wall") for s in ("paramiko", "ssh")}
    text = "\n".join(
        [
            START,
            f"## {args.hosts} hosts behind one bastion",
            "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', started)} by `bench/bastion.py` on {machine()}",
            f"({versions()}). As root: `python3 -m bench.bastion --hosts {args.hosts} --repeat {args.repeat}"
            f" --workers {args.workers}`.",
            "",
            f"A lab of one bastion and {args.hosts} hosts reachable only through it (each a network namespace",
            "linked only to the bastion's; two interfaces each). The audit runs as a user runs it, with",
            "`--ssh-config` saying `ProxyJump root@BASTION` for every host, against the same audit with",
            "`ProxyCommand ssh -W %h:%p BASTION` (a login to the bastion per host, as OpenSSH's own ProxyJump",
            f"makes, and as the suite did before). Round-robin, {args.repeat} times, medians; CPU is the audit's",
            "process tree (user + system, wait4: the suite's ControlMaster and every ssh it started included);",
            "the bastion's logins come from its sshd log; every run must get every verdict right. The machine's",
            f"1-minute load average, sampled after each run: {min(loads):.1f} to {max(loads):.1f} (wall times grow with it).",
            "",
            "| backend | route | wall | CPU, audit's process tree | bastion logins per run | verdicts right |",
            "|---|---|---:|---:|---:|---|",
            *rows,
            "",
            f"One shared connection against a login per host: client CPU ÷ {ratio['paramiko']:.1f} with paramiko,"
            f" ÷ {ratio['ssh']:.1f} with OpenSSH; wall time ÷ {wall['paramiko']:.1f} and ÷ {wall['ssh']:.1f}.",
            END,
        ]
    )
    update_section(args.out, text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
