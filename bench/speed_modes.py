"""How much the same Python work costs on one CPU while another CPU of the machine is idle, then busy.

    python -m bench.speed_modes            # prints, and writes its section of bench/RESULTS.md

On a virtual machine the CPU time of a fixed pure-Python loop (bench/run.py's ``fixed_work``)
need not be a constant: if the host runs the vCPU on a physical core that another vCPU shares
(this machine's other one, or another tenant's), the same work may take longer, and where the
host puts them can change over time. bench/run.py samples that work beside each run
(:class:`bench.run.Speedometer`) for the same reason.

Phases, each timing ``fixed_work`` on the first CPU this process may use every 0.1 s: the
second CPU idle; the second CPU running a busy loop (a child process pinned there); idle again.
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
from bench.run import SPEED_WORK, Speedometer, deciles

START, END = "<!-- speed-modes:start -->", "<!-- speed-modes:end -->"
BUSY = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\nwhile time.monotonic() < end: pass\n"


def sample(seconds: float) -> list[float]:
    """``fixed_work`` timed every 0.1 s for ``seconds``, in a thread that inherits this thread's CPUs."""
    with Speedometer(every=0.1) as speed:
        time.sleep(seconds)
    return speed.samples


def phases(seconds: float) -> tuple[int, int, list[tuple[str, list[float]]]]:
    """(the CPU timed, the other CPU, each phase's samples); this process's CPUs are restored after."""
    allowed = os.sched_getaffinity(0)
    cpus = sorted(allowed)
    if len(cpus) < 2:
        raise SystemExit("needs two CPUs")
    here, other = cpus[0], cpus[1]
    os.sched_setaffinity(0, {here})
    try:
        idle = sample(seconds)
        busy_loop = subprocess.Popen([sys.executable, "-c", BUSY, str(seconds + 1)])
        try:
            os.sched_setaffinity(busy_loop.pid, {other})
            time.sleep(0.2)
            busy = sample(seconds)
        finally:
            busy_loop.kill()
            busy_loop.wait()
        again = sample(seconds)
    finally:
        os.sched_setaffinity(0, allowed)
    return here, other, [("idle", idle), ("running a busy loop", busy), ("idle again", again)]


def section(here: int, other: int, results: list[tuple[str, list[float]]]) -> str:
    lines = [
        START,
        "## The same work, one CPU, its neighbour idle or busy (`bench/speed_modes.py`)",
        "",
        f"CPU time of the same fixed work ({SPEED_WORK:,} turns of a pure-Python loop) on CPU {here}, every 0.1 s:",
        "",
        f"| CPU {other} | samples | 10th / 50th / 90th percentile |",
        "|---|---:|---|",
    ]
    for name, xs in results:
        p10, p50, p90 = (1000 * x for x in deciles(xs))
        lines.append(f"| {name} | {len(xs)} | {p10:.2f} / {p50:.2f} / {p90:.2f} ms |")
    idle, busy = statistics.median(results[0][1]), statistics.median(results[1][1])
    lines += [
        "",
        f"With CPU {other} busy, the same work cost CPU {here} {busy / idle:.2f} × its CPU time with CPU {other} idle "
        "(medians), in this run. Where the host puts the vCPUs may change from minute to minute: run it again",
        "to see the machine as it is now.",
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speed_modes")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each phase")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = parser.parse_args(argv)
    if not args.seconds > 0:
        parser.error("--seconds must be more than 0")
    text = section(*phases(args.seconds))
    print(text)
    update_section(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
