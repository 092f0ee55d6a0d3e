"""The audit's command-line options, and their values checked once into :class:`Settings`.

Options are declared without argparse ``type=`` or ``choices=``: argparse answers a bad
value with a usage banner and a traceback-free but multi-line error, before any plugin
can clean up. The suite checks every value itself (:meth:`Settings.from_options`), so each
mistake is one line, exit status 4, and an older run's reports are never left looking
current. This module imports nothing heavy: it is loaded by every pytest run in the
environment, audit or not.

>>> import argparse
>>> s = Settings.from_options(argparse.Namespace(**{**OPTION_DEFAULTS, "xennet_timeout": "5"}))
>>> (s.timeout, s.scope, s.workers)
(5.0, 'xen', 16)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
from pathlib import Path
from typing import Any, NoReturn

import pytest

from compliance.rule import JUMBO_MTU, SCOPES
from compliance.shard import Shard

DEFAULT_WORKERS = 16
HOSTS_PER_PROCESS = 100  # --xennet-processes=auto: a spare gathering process per this many hosts, up to the usable CPUs
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_OUTPUT = 4 << 20  # bytes per host: the probe prints ~1.9 KiB per interface, so ~2,000 interfaces
DEFAULT_REPORTS_DIR = "reports"
HOST_KEY_POLICIES = ("strict", "accept-new", "insecure")
WORKAROUND_MODES = ("off", "dry-run", "apply")

# dest -> default, for every option this module declares (a Namespace of these is a default run).
OPTION_DEFAULTS: dict[str, Any] = {
    "xennet_scope": "xen",
    "xennet_workers": str(DEFAULT_WORKERS),
    "xennet_processes": "auto",
    "xennet_timeout": str(int(DEFAULT_TIMEOUT)),
    "xennet_max_output": str(DEFAULT_MAX_OUTPUT),
    "reports_dir": DEFAULT_REPORTS_DIR,
    "xennet_summary": None,
    "xennet_summary_html": None,
    "xennet_shard": None,
    "ssh_host_key_policy": "strict",
    "ssh_known_hosts": None,
    "xennet_workaround": "off",
    "xennet_allow_mtu": False,
    "xennet_persist": False,
    "xennet_require_applicable": False,
    "xennet_waivers": None,
    "xennet_require_persistent": False,
}


class UsageProblem(Exception):
    """A mistake on the command line: one line, safe to show (never a password)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xennet", "xen-netfront scatter-gather/MTU audit")
    add = group.addoption
    add(
        "--xennet-scope",
        default=OPTION_DEFAULTS["xennet_scope"],
        metavar="SCOPE",
        help="xen (default): judge only xen-netfront interfaces; all: judge every non-loopback interface",
    )
    add(
        "--xennet-workers",
        default=OPTION_DEFAULTS["xennet_workers"],
        metavar="N",
        help=f"hosts gathered in parallel, at least 1 (default {DEFAULT_WORKERS})",
    )
    add(
        "--xennet-processes",
        default=OPTION_DEFAULTS["xennet_processes"],
        metavar="N",
        help="processes that gather, sharing --xennet-workers; auto (default): one, joined by one "
        f"more per usable CPU (for every {HOSTS_PER_PROCESS} hosts) once the client's CPU is the limit",
    )
    add(
        "--xennet-timeout",
        default=OPTION_DEFAULTS["xennet_timeout"],
        metavar="SECONDS",
        help=f"bound on connecting to a host, and on its remote command; positive (default {DEFAULT_TIMEOUT:g})",
    )
    add(
        "--xennet-require-applicable",
        action="store_true",
        help="a host none of whose interfaces is in scope fails (verdict none-applicable, naming the drivers it "
        "saw): for validating an image, which must be checked on a Xen instance type",
    )
    add(
        "--xennet-waivers",
        default=None,
        metavar="FILE",
        help="YAML file of waivers (host and interface globs, justification, expires, owner): a susceptible "
        "interface one matches is xfail, with the justification as its reason, through its expiry date (UTC, "
        "inclusive); after it, the case fails naming the waiver. Errors are never waived",
    )
    add(
        "--xennet-require-persistent",
        action="store_true",
        help="a case passes only if it is mitigated now and at the next boot: a configuration line that turns "
        "scatter-gather off fails it (verdict not-persistent, naming the file and line), and a boot "
        "configuration the suite cannot read is an error",
    )
    add(
        "--xennet-max-output",
        default=OPTION_DEFAULTS["xennet_max_output"],
        metavar="BYTES",
        help=f"a host that prints more (stdout and stderr together) is an error at once (default {DEFAULT_MAX_OUTPUT})",
    )
    add(
        "--reports-dir",
        default=OPTION_DEFAULTS["reports_dir"],
        metavar="DIR",
        help="where junit.xml, summary.json and summary.html are written, relative to the current "
        "directory (default reports/); --junitxml, --xennet-summary and --xennet-summary-html move one report; "
        "pytest-html's page only with --html PATH",
    )
    add(
        "--xennet-summary",
        default=None,
        metavar="PATH",
        help="where to write the JSON summary (default REPORTS_DIR/summary.json)",
    )
    add(
        "--xennet-summary-html",
        default=None,
        metavar="PATH",
        help="where to write the static summary page, readable under Jenkins' default CSP "
        "(default REPORTS_DIR/summary.html); its stylesheet summary.css goes beside it",
    )
    add(
        "--xennet-shard",
        default=None,
        metavar="K/N",
        help="audit only shard K of N (1-based): a stable split of the hosts by name, for N machines; "
        "combine their reports with `python -m compliance.merge`",
    )
    add(
        "--ssh-host-key-policy",
        default=OPTION_DEFAULTS["ssh_host_key_policy"],
        metavar="POLICY",
        help="strict (default): refuse unknown and changed host keys; accept-new: record keys of hosts "
        "never seen before (in the first --ssh-known-hosts file, else ~/.ssh/known_hosts), refuse changed "
        "ones; insecure: accept any key (the reports say so)",
    )
    add(
        "--ssh-known-hosts",
        default=None,
        metavar="FILE",
        help="known_hosts file(s), space-separated, checked in addition to ~/.ssh/known_hosts",
    )
    add(
        "--xennet-workaround",
        default=OPTION_DEFAULTS["xennet_workaround"],
        metavar="MODE",
        help="off (default): change nothing; dry-run: record the commands that would fix each susceptible "
        "interface; apply: run them (as root, or with --sudo) and pass only if a re-read shows it mitigated",
    )
    add(
        "--xennet-allow-mtu",
        action="store_true",
        help=f"with the workaround: if scatter-gather stays off, set MTU {JUMBO_MTU} (jumbo frames can break "
        "paths that leave the VPC)",
    )
    add(
        "--xennet-persist",
        action="store_true",
        help="with --xennet-workaround=apply: keep scatter-gather on across reboots (a udev rule, and the "
        "host's NetworkManager, ifcfg or ifupdown configuration); writes files under /etc, backing up changed ones",
    )


def _choice(option: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UsageProblem(f"{option} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def _positive_seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise UsageProblem(f"--xennet-timeout must be a number of seconds; got {value!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise UsageProblem(f"--xennet-timeout must be a positive number of seconds; got {value!r}")
    return seconds


def _max_output(value: Any) -> int:
    try:
        limit = int(str(value))
    except ValueError:
        raise UsageProblem(f"--xennet-max-output must be a whole number of bytes; got {value!r}") from None
    if limit < 4096:
        raise UsageProblem(f"--xennet-max-output must be at least 4096 bytes; got {value!r}")
    return limit


def _workers(value: Any) -> int:
    try:
        workers = int(str(value))
    except ValueError:
        raise UsageProblem(f"--xennet-workers must be a whole number, at least 1; got {value!r}") from None
    if workers < 1:
        raise UsageProblem(f"--xennet-workers must be at least 1; got {value!r}")
    return workers


def _processes(value: Any) -> int | None:
    """None for auto (decided per run from the hosts and the cores), else a count of at least 1."""
    if str(value) == "auto":
        return None
    try:
        processes = int(str(value))
    except ValueError:
        raise UsageProblem(f"--xennet-processes must be auto or a whole number, at least 1; got {value!r}") from None
    if processes < 1:
        raise UsageProblem(f"--xennet-processes must be auto or at least 1; got {value!r}")
    return processes


@dataclasses.dataclass(frozen=True)
class Settings:
    """The audit's own options, checked. Paths are as given (resolved by the caller)."""

    scope: str = "xen"
    workers: int = DEFAULT_WORKERS
    processes: int | None = None  # None: auto
    timeout: float = DEFAULT_TIMEOUT
    max_output: int = DEFAULT_MAX_OUTPUT
    reports_dir: str = DEFAULT_REPORTS_DIR
    summary: str | None = None
    summary_html: str | None = None
    shard: Shard | None = None
    host_key_policy: str = "strict"
    known_hosts: str | None = None
    workaround: str = "off"
    allow_mtu: bool = False
    persist: bool = False
    require_applicable: bool = False
    waivers: str | None = None  # the waiver file, as given (read by the audit: compliance.waivers)
    require_persistent: bool = False

    @classmethod
    def from_options(cls, option: Any) -> Settings:
        """Check every value; the first mistake raises :class:`UsageProblem`."""
        shard = None
        if option.xennet_shard is not None:
            try:
                shard = Shard.parse(str(option.xennet_shard))
            except ValueError as exc:
                raise UsageProblem(f"--xennet-shard: {exc}") from None
        if not str(option.reports_dir or "").strip():
            raise UsageProblem("--reports-dir is empty")
        waivers = getattr(option, "xennet_waivers", None)
        if waivers is not None and not str(waivers).strip():
            raise UsageProblem("--xennet-waivers is empty")
        settings = cls(
            scope=_choice("--xennet-scope", option.xennet_scope, SCOPES),
            workers=_workers(option.xennet_workers),
            processes=_processes(getattr(option, "xennet_processes", "auto")),
            timeout=_positive_seconds(option.xennet_timeout),
            max_output=_max_output(option.xennet_max_output),
            reports_dir=str(option.reports_dir),
            summary=option.xennet_summary,
            summary_html=getattr(option, "xennet_summary_html", None),
            shard=shard,
            host_key_policy=_choice("--ssh-host-key-policy", option.ssh_host_key_policy, HOST_KEY_POLICIES),
            known_hosts=option.ssh_known_hosts,
            workaround=_choice("--xennet-workaround", option.xennet_workaround, WORKAROUND_MODES),
            allow_mtu=bool(option.xennet_allow_mtu),
            persist=bool(option.xennet_persist),
            require_applicable=bool(option.xennet_require_applicable),
            waivers=waivers,
            require_persistent=bool(getattr(option, "xennet_require_persistent", False)),
        )
        # Acting on hosts is never implied: flags that only make sense with it are refused without it.
        if settings.persist and settings.workaround != "apply":
            raise UsageProblem("--xennet-persist needs --xennet-workaround=apply")
        if settings.allow_mtu and settings.workaround == "off":
            raise UsageProblem("--xennet-allow-mtu needs --xennet-workaround=dry-run or apply")
        return settings


def report_paths(
    base: Path,
    reports_dir: str,
    summary: str | None,
    junitxml: str | None,
    html: str | None,
    summary_html: str | None = None,
) -> dict[str, Path]:
    """Each report's path (an explicit one wins over ``reports_dir``), ``~`` expanded, relative to ``base``.

    Also used before the options are checked: a run that stops on a usage error must still
    find (and discard) the older reports it would have replaced.
    """

    def under(path: str) -> Path:
        return base / Path(path).expanduser()

    reports = under(reports_dir or DEFAULT_REPORTS_DIR)
    return {
        "junit": under(junitxml) if junitxml else reports / "junit.xml",
        "html": under(html) if html else reports / "report.html",
        "summary": under(summary) if summary else reports / "summary.json",
        "summary_html": under(summary_html) if summary_html else reports / "summary.html",
    }


def given(option: Any) -> list[str]:
    """The audit's own options that differ from their defaults, as ``--name`` (for hints)."""
    return [
        "--" + dest.replace("_", "-")
        for dest, default in OPTION_DEFAULTS.items()
        if getattr(option, dest, default) != default
    ]


class _ArgsError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own would print a usage banner and exit
        raise _ArgsError(message)


def tb_given(args: list[str]) -> bool:
    """Whether ``args`` set pytest's ``--tb``, in any spelling pytest takes: ``--tb=X``, ``--tb X``,
    or in an ``@file`` of arguments, one per line (no abbreviations).

    >>> [tb_given(a) for a in (["-q"], ["--tb=auto"], ["--tb", "short", "-q"], ["--hosts=--tb"], ["@/nonexistent"])]
    [False, True, True, False, False]
    """
    parser = _Parser(add_help=False, allow_abbrev=False)
    parser.add_argument("--tb")
    try:
        return parser.parse_known_args(_from_files(args))[0].tb is not None
    except _ArgsError:
        return False


def _from_files(args: list[str], depth: int = 0) -> list[str]:
    """``args`` with each ``@file`` replaced by its lines, as pytest's parser reads them. Only a
    regular file is read again: pytest has read a FIFO or ``@/dev/stdin`` already (a second read
    would wait, or find nothing)."""
    expanded = []
    for arg in args:
        if arg.startswith("@") and depth < 20 and os.path.isfile(arg[1:]):
            try:
                lines = Path(arg[1:]).read_text().splitlines()
            except (OSError, UnicodeDecodeError):
                continue
            expanded += _from_files(lines, depth + 1)
        else:
            expanded.append(arg)
    return expanded


def pytest_arguments(config: pytest.Config) -> list[str]:
    """The arguments pytest parsed for this run: the ini file's ``addopts``, then ``PYTEST_ADDOPTS``,
    then the command line's (as ``Config.parse`` puts them together)."""
    env = shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    return [*config.getini("addopts"), *env, *(str(a) for a in config.invocation_params.args)]
