"""Where the audit's client CPU goes beyond SSH: per case, before and after a change.

    sudo python -m bench.case_cost --hosts 200 --before ../xennet-before   # updates bench/RESULTS.md

On one lab (tests/lab.py, two interfaces per host), round-robin and ``--repeat`` times:
(a) the floor (bench/floor.py), (g) the audit's gathering alone (bench/gather_only.py: its
SSH and probe parsing, no pytest), and the audit with its three reports (junit.xml,
summary.json, summary.html) from this tree and, with ``--before DIR``, from another checkout
of the project (e.g. ``git worktree add ../xennet-before COMMIT``). CPU is the process
tree's, from wait4(). Then one run of each audit under cProfile: the main thread's time
in pytest's per-case protocol and in each plugin's part of it, at the session's end, in
collection and start-up, in ms per case (cProfile inflates call-heavy code; the shares are
what it is for). The lab's prefix and network come from XENNET_BENCH_PREFIX /
XENNET_BENCH_NETWORK, as for bench/run.py.
"""

from __future__ import annotations

import argparse
import datetime
import pstats
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.results import update_section
from bench.run import NETWORK, PREFIX, ROOT, STATES, Approach, Bench, machine, stop_brings_the_lab_down, versions
from tests.lab import HostPlan, Lab

START, END = "<!-- case-cost:start -->", "<!-- case-cost:end -->"

# (what, [(file suffix, function)]): a row is the cumulative time of its functions (either tree's name).
PER_CASE = (
    (
        "the whole per-case protocol: pytest's, or the suite's lean one (3 phases, every plugin's hooks)",
        [("_pytest/runner.py", "runtestprotocol"), ("compliance/audit.py", "run_lean")],
    ),
    (
        "the case itself: judge, workaround, waiver, check",
        [
            ("compliance/audit.py", "settle"),
            ("compliance/audit.py", "xennet_judgement"),
            ("compliance/test_xennet.py", "test_xennet_sg_mtu"),
        ],
    ),
    ("pytest's fixtures (setup of a fixture-parametrized function)", [("_pytest/fixtures.py", "_fillfixtures")]),
    ("test reports: building them, failures' representation", [("_pytest/reports.py", "from_item_and_call")]),
    ("JUnit writer, per case", [("_pytest/junitxml.py", "pytest_runtest_logreport")]),
    (
        "terminal, per case",
        [
            ("_pytest/terminal.py", "pytest_runtest_logreport"),
            ("_pytest/terminal.py", "pytest_runtest_logstart"),
            ("_pytest/terminal.py", "pytest_runtest_logfinish"),
        ],
    ),
    (
        "the suite's reporter, per case (rows, JUnit names and properties)",
        [("compliance/report.py", "pytest_runtest_logreport")],
    ),
    ("pytest-html, per case", [("pytest_html/basereport.py", "pytest_runtest_logreport")]),
    ("log capture, per phase", [("_pytest/logging.py", "_runtest_for")]),
    ("output capture, per phase", [("_pytest/capture.py", "item_capture")]),
)
PER_RUN = (
    ("start-up: options, plugins, their imports", [("_pytest/config/__init__.py", "_prepareconfig")]),
    ("gathering (the main thread waits; threads are not profiled)", [("compliance/gather.py", "gather")]),
    ("collection", [("_pytest/main.py", "perform_collect")]),
    ("JUnit writer, at the end", [("_pytest/junitxml.py", "pytest_sessionfinish")]),
    ("summary.json and summary.html", [("compliance/report.py", "pytest_sessionfinish")]),
    ("terminal summary (FAILURES section, the suite's lines)", [("_pytest/terminal.py", "pytest_terminal_summary")]),
)


def cumulative(stats: pstats.Stats, wanted: Sequence[tuple[str, str]]) -> float:
    total = 0.0
    for (path, _, name), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        if any(path.endswith(suffix) and name == func for suffix, func in wanted):
            total += ct
    return total


def top_self(stats: pstats.Stats, n: int) -> list[tuple[str, float]]:
    rows = [
        (f"{Path(path).parent.name}/{Path(path).name}:{name}" if line else name, tt)
        for (path, line, name), (_, _, tt, _, _) in stats.stats.items()  # type: ignore[attr-defined]
    ]
    return sorted(rows, key=lambda r: -r[1])[:n]


class CaseCost:
    def __init__(self, bench: Bench, hosts: int, before: Path | None) -> None:
        self.bench = bench
        self.hosts = hosts
        self.before = before

    def audit(self, tree: Path, key: str, title: str, profile: Path | None = None) -> Approach:
        """The audit as bench/run.py runs it, from ``tree``'s copy of the project."""
        base = self.bench.audit(self.hosts)

        def command(run_dir: Path):
            argv, _, env = base.command(run_dir)
            if profile is not None:  # python -m cProfile -o FILE -m pytest ...
                argv = [argv[0], "-m", "cProfile", "-o", str(profile), *argv[1:]]
            return argv, tree, env

        def check(run_dir: Path, stdout: str) -> str | None:
            problem = base.check(run_dir, stdout)
            header = f"from {tree / 'compliance'}"
            return problem or (None if header in stdout else f"not the audit of {tree}")

        return Approach(key, title, command, check)

    def audits(self, profiles: dict[str, Path] | None = None) -> list[Approach]:
        made = [self.audit(ROOT, "now", "(b) this audit, this tree", (profiles or {}).get("now"))]
        if self.before is not None:
            made.insert(0, self.audit(self.before, "before", "(b0) this audit, before", (profiles or {}).get("before")))
        return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.case_cost", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--before", type=Path, help="another checkout of the project, measured alongside")
    parser.add_argument("--before-label", default="before", help="what --before is, for the table")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    stop_brings_the_lab_down(parser)
    before = args.before.resolve() if args.before else None
    if before is not None and not (before / "compliance" / "test_xennet.py").is_file():
        parser.error(f"--before {before}: not a checkout of this project")
    started = datetime.datetime.now(datetime.timezone.utc)
    workdir = Path(tempfile.mkdtemp(prefix="xnb-casecost-"))
    plan = [HostPlan(f"b{i:03d}", STATES[i % len(STATES)]) for i in range(args.hosts)]
    cpu: dict[str, list[float]] = {}
    titles: dict[str, str] = {}
    profiles = {key: workdir / f"{key}.prof" for key in ("now", "before")}
    try:
        print(f"building a lab of {args.hosts} hosts...", flush=True)
        with Lab(plan, prefix=PREFIX, network=NETWORK, workdir=workdir / "lab") as lab:
            bench = Bench(lab, workdir, args.workers)
            cost = CaseCost(bench, args.hosts, before)
            approaches = [bench.floor(args.hosts), bench.gather_only(args.hosts), *cost.audits()]
            for approach in approaches:  # a warm-up each: bytecode, page cache
                bench.measure(approach, workdir / f"warm-{approach.key}")
            for r in range(args.repeat):
                for approach in approaches:
                    run = bench.measure(approach, workdir / f"{approach.key}-{r}")
                    if run.problem:
                        raise SystemExit(f"{approach.title}: {run.problem}")
                    cpu.setdefault(approach.key, []).append(run.cpu)
                    titles[approach.key] = approach.title
                    print(f"  {approach.title}: {run.cpu:.2f} s CPU, {run.wall:.2f} s", flush=True)
            for approach in cost.audits(profiles):
                run = bench.measure(approach, workdir / f"profile-{approach.key}")
                if run.problem:
                    raise SystemExit(f"{approach.title} (profiled): {run.problem}")
        cases = 2 * args.hosts
        stats = {key: pstats.Stats(str(path)) for key, path in profiles.items() if path.is_file()}
        text = section(args, started, cpu, titles, stats, cases)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    update_section(args.out, text)
    print(text)
    return 0


def section(
    args: argparse.Namespace,
    started: datetime.datetime,
    cpu: dict[str, list[float]],
    titles: dict[str, str],
    stats: dict[str, pstats.Stats],
    cases: int,
) -> str:
    median = {key: statistics.median(values) for key, values in cpu.items()}
    floor = median["a"]
    keys = [k for k in ("before", "now") if k in stats]
    label = {"before": args.before_label, "now": "after"}
    lines = [
        START,
        f"## Client CPU per case, {args.hosts} hosts ({cases} cases)",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `bench/case_cost.py` on {machine()}",
        f"({versions()}). As root: `python3 -m bench.case_cost --hosts {args.hosts} --repeat {args.repeat}"
        + (" --before DIR`" if args.before else "`")
        + ". CPU of the process tree (user + system, wait4), medians of "
        f"{args.repeat} round-robin runs after a warm-up each.",
        "",
        "| approach | CPU | CPU ms/host | × floor | beyond gathering, ms/case |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in ["a", "g", *keys]:
        beyond = (median[key] - median["g"]) / cases * 1000 if key in ("before", "now") else None
        lines.append(
            f"| {titles[key]} | {median[key]:.2f} s | {median[key] / args.hosts * 1000:.1f} | "
            f"{median[key] / floor:.2f} | {'' if beyond is None else f'{beyond:.2f}'} |"
        )
    lines += [
        "",
        "The audit's main thread under cProfile, one run each, ms per case (cProfile's own overhead",
        "included: compare rows and columns, not with the CPU above). Rows inside the per-case protocol",
        "are parts of its first row.",
        "",
        "| where | " + " | ".join(label[k] for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for title, wanted in (*PER_CASE, *PER_RUN):
        values = [cumulative(stats[k], wanted) / cases * 1000 for k in keys]
        lines.append(f"| {title} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    totals = [sum(tt for (_, _, tt, _, _) in stats[k].stats.values()) / cases * 1000 for k in keys]
    lines.append("| **all of the main thread** | " + " | ".join(f"**{v:.3f}**" for v in totals) + " |")
    for k in keys:
        lines += ["", f"Top functions by own time, {label[k]} (ms per case):", ""]
        lines += [f"- `{name}` {tt / cases * 1000:.3f}" for name, tt in top_self(stats[k], 10)]
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
