"""Client CPU per host with the client alone on its core: the figure a real fleet's agent pays.

    sudo python -m bench.pinned --hosts 1000 --repeat 5     # writes its section of bench/RESULTS.md

``bench/run.py`` lets the client and the lab's sshds share every core, as they do on this machine
by default. Then the hosts' handshakes and remote commands run beside the client and move its CPU
time (caches, the other hyperthread, the scheduler): the floor's own CPU spread 2.5 to 3.6 s from round
to round at 1,000 hosts. On a fleet the hosts are other machines. Here the lab's hosts (their sshds,
and every session and command those start) run on every CPU but one, and the client on that one:
each approach, and this process, which only waits for it.

Round-robin, ``--repeat`` times: (a) the floor, (a+) the floor sending the audit's probe, (s)
Python's start-up, (p) plain pytest with the audit's cases, (g) the audit's gathering alone and
(b) the audit with its three reports, as ``bench/run.py`` defines them. Then the least this
design can spend, (a+) + (p) - (s), and what a 2-core agent audits per minute by CPU. Wall
times are the lab's, whose hosts now have fewer cores: not the point here.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.results import update_section
from bench.run import (
    NETWORK,
    PREFIX,
    ROOT,
    STATES,
    Bench,
    Row,
    bound,
    machine,
    run_round_robin,
    table,
    versions,
)
from tests.lab import HostPlan, Lab, require_root

START, END = "<!-- pinned:start -->", "<!-- pinned:end -->"
TARGET = 1.3


def split_cpus(cpus: set[int]) -> tuple[int, set[int]]:
    """The client's CPU (the highest) and the hosts' (the rest).

    >>> split_cpus({0, 1})
    (1, {0})
    >>> split_cpus({2, 5, 7})
    (7, {2, 5})
    """
    client = max(cpus)
    return client, cpus - {client}


def per_minute(rows: dict[str, Row], hosts: int, cores: int) -> float:
    """Hosts a ``cores``-core agent audits per minute when its CPU is the limit.

    Gathering, less the start-up it includes, spreads over every core (the spare gathering
    processes join once one is busy); the rest of the audit (start-up, pytest, the cases and
    the reports) runs in one process after it.
    """
    gathering = rows["g"].cpu - rows["s"].cpu
    rest = rows["b"].cpu - gathering
    return 60 * hosts / (gathering / cores + rest)


def verdict(rounds: list[float]) -> str:
    """What the bound's ratio to the floor, round by round, says of the target.

    >>> verdict([1.31, 1.35]).startswith("Above")
    True
    """
    if min(rounds) > TARGET:
        return (
            f"Above {TARGET} × in every round: the target is out of reach for this design, whatever the suite "
            "does beyond it."
        )
    if max(rounds) <= TARGET:
        return f"At or below {TARGET} × in every round: the target leaves the suite the difference."
    return f"On both sides of {TARGET} × across rounds: the target is at the edge of what this design allows."


def section(
    args: argparse.Namespace, started: datetime.datetime, rows: list[Row], client: int, theirs: set[int]
) -> str:
    by_key = {row.approach.key: row for row in rows}
    floor = by_key["a"]
    hosts = args.hosts
    rounds = len(floor.runs)
    bound_cpu = bound(lambda key: by_key[key].cpu)
    bounds = [bound(lambda key, i=i: by_key[key].runs[i].cpu) / floor.runs[i].cpu for i in range(rounds)]
    audits = [b.cpu / a.cpu for b, a in zip(by_key["b"].runs, floor.runs)]
    gathering = by_key["g"].cpu - by_key["s"].cpu
    rest = by_key["b"].cpu - gathering
    lines = [
        START,
        "## Client CPU with the client alone on its core",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `bench/pinned.py` on {machine()}",
        f"({versions()}). As root: `python3 -m bench.pinned --hosts {hosts} --repeat {args.repeat} "
        f"--workers {args.workers}`.",
        "",
        f"The lab's {hosts} hosts (their sshds, and every session and command they start) ran on CPU "
        f"{', '.join(str(c) for c in sorted(theirs))}, and each client on CPU {client} alone, as an agent's CPU "
        "is apart from a fleet's hosts. CPU is the client's process tree (user + system, wait4); medians of "
        f"{args.repeat} round-robin runs; every run's output checked as in `bench/run.py`. Wall times are the "
        "lab's, whose hosts had one core fewer than the client: not what this section measures.",
        "",
        *table(rows, {hosts: floor}),
        "",
        "Spread (client CPU, min–max): "
        + "; ".join(
            f"{r.approach.key} {min(x.cpu for x in r.runs):.2f}–{max(x.cpu for x in r.runs):.2f} s" for r in rows
        )
        + ".",
        "",
        "| | client CPU | × the floor's, medians | × the floor's, round by round |",
        "|---|---:|---:|---|",
        f"| the least this design can spend: (a+) + (p) − (s) | {bound_cpu:.2f} s | **{bound_cpu / floor.cpu:.2f}** "
        f"| {min(bounds):.2f}–{max(bounds):.2f} |",
        f"| the audit as run (b) | {by_key['b'].cpu:.2f} s | **{by_key['b'].cpu / floor.cpu:.2f}** "
        f"| {min(audits):.2f}–{max(audits):.2f} |",
        f"| the issue's target | | {TARGET} | |",
        "",
        f"The bound spends nothing on parsing, judging, JUnit properties, summary.json or summary.html. "
        f"{verdict(bounds)}",
        "",
        f"**By CPU, per host:** gathering (g − s) {1000 * gathering / hosts:.2f} ms, everything else in the audit "
        f"(b − (g − s): start-up, pytest, the cases, the reports) {1000 * rest / hosts:.2f} ms. A 2-core agent "
        f"whose CPU is the limit gathers on both cores and runs the rest on one: ≈ "
        f"**{per_minute(by_key, hosts, 2):,.0f} hosts per minute** ({per_minute(by_key, hosts, 1):,.0f} on one core), "
        f"at {hosts} hosts with two interfaces each.",
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pinned", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    reason = require_root()
    if reason:
        parser.error(reason)
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        parser.error(f"needs two CPUs, one for the client and one for the hosts: this process may use {sorted(cpus)}")
    client, theirs = split_cpus(cpus)
    started = datetime.datetime.now(datetime.timezone.utc)
    workdir = Path(tempfile.mkdtemp(prefix="xnb-pinned-"))
    plan = [HostPlan(f"b{i:03d}", STATES[i % len(STATES)]) for i in range(args.hosts)]
    text = None
    try:
        print(f"building a lab of {args.hosts} hosts...", flush=True)
        with Lab(plan, prefix=PREFIX, network=NETWORK, workdir=workdir / "lab") as lab:
            lab.pin(theirs)
            os.sched_setaffinity(0, {client})  # this process and every client it starts
            try:
                bench = Bench(lab, workdir, args.workers)
                n = args.hosts
                approaches = [
                    bench.floor(n),
                    bench.floor_probe(n),
                    bench.start_up(),
                    bench.pytest_floor(n),
                    bench.gather_only(n),
                    bench.audit(n),
                ]
                for approach in approaches:  # a warm-up each: bytecode, page cache
                    bench.measure(approach, workdir / f"warm-{approach.key}")
                rows = run_round_robin(bench, approaches, n, args.repeat, "pinned")
            finally:
                os.sched_setaffinity(0, cpus)
                lab.pin(cpus)  # the lab's teardown kills every host: on every CPU, not on one
            problems = [f"{row.approach.title}: {p}" for row in rows for p in row.problems]
            if problems:
                raise SystemExit("runs that do not count:\n" + "\n".join(problems))
            text = section(args, started, rows, client, theirs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if text is not None:  # measured: kept, even when the lab's teardown fails
            update_section(args.out, text)
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
