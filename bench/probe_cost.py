"""The probe's cost as a host's interface count grows: 150, 300 and 600 interfaces.

    sudo python -m bench.probe_cost            # updates its section of bench/RESULTS.md

One network namespace (``xnbp-probe``) holds veth pairs, so every interface is a real one that
`ethtool -k` answers for. In the same run, the probe (`sh` reading the script on standard input,
as a host runs it) is timed against the least any probe must do: a shell loop that runs
`ethtool -k` once per interface and prints nothing. Medians of --repeat runs. The namespace
is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.results import update_section
from compliance.probe import PROBE_COMMAND, PROBE_SCRIPT, parse_probe
from tests.lab import killed_on_stop, stop_signals_interrupt

ROOT = Path(__file__).resolve().parent.parent
NETNS = "xnbp-probe"
START, END = "<!-- probe-cost:start -->", "<!-- probe-cost:end -->"
LOOP = 'for p in /sys/class/net/*; do ethtool -k "${p##*/}" >/dev/null 2>&1 </dev/null; done\n'


def ip_batch(netns: str, lines: list[str]) -> None:
    subprocess.run(["ip", "-n", netns, "-batch", "-"], input="".join(f"{x}\n" for x in lines), text=True, check=True)


def timed(netns: str, script: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    argv = ["ip", "netns", "exec", netns, PROBE_COMMAND]
    with killed_on_stop(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        stdout, stderr = proc.communicate(script.encode())
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv, stdout, stderr)
    return time.perf_counter() - started, stdout


def measure(netns: str, sizes: list[int], repeat: int) -> list[tuple[int, float, float, int]]:
    """(interfaces, probe seconds, loop seconds, probe output bytes) per size, medians."""
    rows = []
    pairs = 0
    for size in sizes:
        wanted = size // 2
        ip_batch(netns, [f"link add pa{i} type veth peer name pb{i}" for i in range(pairs, wanted)])
        pairs = wanted
        probe, loop, out = [], [], b""
        for _ in range(repeat):  # round-robin: the machine's noise falls on both alike
            seconds, out = timed(netns, PROBE_SCRIPT)
            probe.append(seconds)
            loop.append(timed(netns, LOOP)[0])
        facts = parse_probe(out)
        if len(facts.interfaces) != size or any(i.problem for i in facts.interfaces):
            raise SystemExit(f"the probe did not read all {size} interfaces right")
        rows.append((size, statistics.median(probe), statistics.median(loop), len(out)))
        print(f"{size} interfaces: probe {rows[-1][1]:.2f} s, ethtool loop {rows[-1][2]:.2f} s", file=sys.stderr)
    return rows


def section(rows: list[tuple[int, float, float, int]], repeat: int) -> str:
    by_size = {n: probe for n, probe, _, _ in rows}
    lines = [
        START,
        "## The probe's cost in interfaces per host",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/probe_cost.py` (as root:",
        "`python3 -m bench.probe_cost`): one network namespace with veth pairs, the probe as a host runs it",
        "(`sh` reading the script on standard input), against a shell loop that only runs `ethtool -k` once",
        f"per interface. Medians of {repeat} runs, round-robin.",
        "",
        "| interfaces | probe | `ethtool -k` loop | probe / loop | probe output |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {n} | {probe:.2f} s | {loop:.2f} s | {probe / loop:.2f} | {size / 1024:.0f} KiB |"
            for n, probe, loop, size in rows
        ),
        "",
    ]
    if 300 in by_size and 600 in by_size:
        ratio = by_size[600] / by_size[300]
        verdict = "met" if ratio <= 2.5 else "NOT met"
        lines.append(f"600 interfaces take **{ratio:.2f} ×** the time of 300 (target ≤ 2.5 ×: {verdict}).")
    lines += [
        "Before (issue 9), the probe grew its output with `out=$out...` per line: 1.2 s, 4.9 s and 18.6 s at",
        "150, 300 and 600 interfaces. It now appends per interface to chunks of at most 32 KiB.",
        END,
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe_cost", description=__doc__)
    parser.add_argument("--sizes", default="150,300,600")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--netns",
        default=NETNS,
        help=f"the namespace it creates, and replaces if a stopped run left it (default {NETNS})",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    stop_signals_interrupt()
    if os.geteuid() != 0:
        parser.error("needs root (a network namespace and veth pairs)")
    subprocess.run(["ip", "netns", "del", args.netns], capture_output=True)
    subprocess.run(["ip", "netns", "add", args.netns], check=True)
    try:
        rows = measure(args.netns, sorted(int(s) for s in args.sizes.split(",")), args.repeat)
    finally:
        subprocess.run(["ip", "netns", "del", args.netns], check=True)
    update_section(args.out, section(rows, args.repeat))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
