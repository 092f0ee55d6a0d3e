"""``xennet-audit``: the audit as a command, from any directory.

    xennet-audit --hosts=paramiko://root@10.0.0.5 --ssh-identity-file=~/.ssh/audit

It runs pytest on the installed audit (``--pyargs compliance``) with the same options and
exit statuses as ``pytest``; reports go to ``./reports/`` unless ``--reports-dir`` says
otherwise. A configuration file in the current directory (someone else's ``pytest.ini``,
``addopts`` and all) is never read, and no ``.pytest_cache`` is left behind. A mistake
pytest itself finds on the command line (an unknown option, a missing value) is one line
too, and leaves no older report looking current.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import pytest

from compliance.options import DEFAULT_REPORTS_DIR, report_paths
from compliance.report import discard_stale

# An empty configuration of our own: pytest must not pick up the caller's.
_ISOLATION = ["-c", os.devnull, "--rootdir", "."]
# This module is part of the package pytest would rewrite: it is imported already, harmlessly.
_QUIET = ["-W", "ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning"]
_REPORT_OPTIONS = ("--reports-dir", "--xennet-summary", "--xennet-summary-html", "--junitxml", "--junit-xml", "--html")


def option_values(args: Sequence[str]) -> dict[str, str]:
    """The report options in ``args``, ``--opt=value`` or ``--opt value``, as pytest would read them.

    >>> option_values(["--html", "r.html", "--reports-dir=out", "-q"])
    {'--html': 'r.html', '--reports-dir': 'out'}
    """
    found: dict[str, str] = {}
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in _REPORT_OPTIONS:
            if eq:
                found[name] = value
            elif i + 1 < len(args):
                found[name] = args[i + 1]
    return found


class OneLineUsage:
    """pytest's own command-line errors (argparse's) as one line, with the old reports discarded."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)

    @pytest.hookimpl(wrapper=True)
    def pytest_cmdline_parse(self, pluginmanager: Any, args: list[str]) -> Generator[None, Any, Any]:
        try:
            return (yield)
        except pytest.UsageError as exc:
            lines = [line for line in str(exc).splitlines() if ": error: " in line]
            message = lines[0].split(": error: ", 1)[1] if lines else " ".join(str(exc).split())
            given = option_values(self.args)
            paths = report_paths(
                Path.cwd(),
                given.get("--reports-dir", DEFAULT_REPORTS_DIR),
                given.get("--xennet-summary"),
                given.get("--junitxml", given.get("--junit-xml")),
                given.get("--html"),
                given.get("--xennet-summary-html"),
            )
            discard_stale(paths, message)
            raise pytest.UsageError(message) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    pytest_args = [*_ISOLATION, *_QUIET, "-p", "no:cacheprovider", "-ra", "--pyargs", "compliance", *args]
    return int(pytest.main(pytest_args, plugins=[OneLineUsage(args)]))


if __name__ == "__main__":
    sys.exit(main())
