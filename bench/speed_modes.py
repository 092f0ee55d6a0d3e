"""How much the same Python work costs on one CPU while another CPU of the machine is idle, then busy.

    python -m bench.speed_modes            # prints, and writes its section of bench/RESULTS.md

On a virtual machine the CPU time of a fixed pure-Python loop (bench/run.py's ``fixed_work``)
is not a constant: when the host runs the vCPU on a physical core that another vCPU shares (this
machine's other one, or another tenant's), the same work takes longer. Where the host puts them
changes over time. Every CPU figure of bench/run.py moves with it, which is why that bench also
samples the machine's speed beside each run (:class:`bench.run.Speedometer`).

Phases, each timing ``fixed_work`` on CPU 0 (or the first CPU this process may use) every
0.1 s: the other CPU idle; the other CPU running a busy loop (a child process pinned there);
idle again.
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
from bench.run import SPEED_WORK, fixed_work, percentile

START, END = "<!-- speed-modes:start -->", "<!-- speed-modes:end -->"
BUSY = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\nwhile time.monotonic() < end: pass\n"


def sample(seconds: float) -> list[float]:
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(fixed_work())
        time.sleep(0.1)
    return samples


def phases(seconds: float) -> list[tuple[str, list[float]]]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs two CPUs")
    here, other = cpus[0], cpus[1]
    os.sched_setaffinity(0, {here})
    idle = sample(seconds)
    busy_loop = subprocess.Popen([sys.executable, "-c", BUSY, str(seconds + 1)])
    try:
        os.sched_setaffinity(busy_loop.pid, {other})
        time.sleep(0.2)
        busy = sample(seconds)
    finally:
        busy_loop.kill()
        busy_loop.wait()
    return [
        (f"CPU {other} idle", idle),
        (f"CPU {other} running a busy loop", busy),
        (f"CPU {other} idle again", sample(seconds)),
    ]


def section(results: list[tuple[str, list[float]]]) -> str:
    lines = [
        START,
        "## The same work, one CPU, its neighbour idle or busy (`bench/speed_modes.py`)",
        "",
        f"CPU time of the same fixed work ({SPEED_WORK:,} turns of a pure-Python loop) on CPU 0, every 0.1 s:",
        "",
        "| CPU 0's neighbour | samples | 10th / 50th / 90th percentile |",
        "|---|---:|---|",
    ]
    for name, xs in results:
        p10, p50, p90 = (1000 * percentile(xs, q) for q in (0.1, 0.5, 0.9))
        lines.append(f"| {name} | {len(xs)} | {p10:.2f} / {p50:.2f} / {p90:.2f} ms |")
    idle, busy = statistics.median(results[0][1]), statistics.median(results[1][1])
    lines += [
        "",
        f"With CPU 1 busy, the same work cost CPU 0 {busy / idle:.2f} × its CPU time with CPU 1 idle (medians), in",
        "this run. Where the host puts the two vCPUs (on one physical core, or each beside another tenant's)",
        "changes from minute to minute: run it again to see the machine as it is now.",
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speed_modes")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each phase")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = parser.parse_args(argv)
    text = section(phases(args.seconds))
    print(text)
    update_section(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
