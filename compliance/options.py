"""The audit's command-line options.

Registered as a pytest11 entry point, so pytest knows them before it parses the
command line: ``--ssh-known-hosts FILE`` (with a space) then works from anywhere.
A clone that is not installed gets them through the root conftest.py instead.
"""

from __future__ import annotations

import pytest

from compliance import backends
from compliance.gather import DEFAULT_WORKERS
from compliance.rule import SCOPES


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xennet", "xen-netfront scatter-gather/MTU audit")
    group.addoption(
        "--xennet-scope",
        choices=SCOPES,
        default="xen",
        help="xen (default): judge only xen-netfront interfaces; all: judge every non-loopback interface",
    )
    group.addoption(
        "--xennet-workers",
        type=int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"hosts gathered in parallel (default {DEFAULT_WORKERS})",
    )
    group.addoption(
        "--xennet-timeout",
        type=float,
        default=backends.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"bound on connecting to a host, and on its remote command (default {backends.DEFAULT_TIMEOUT})",
    )
    group.addoption(
        "--xennet-summary",
        default="reports/summary.json",
        metavar="PATH",
        help="where to write the JSON summary (default reports/summary.json)",
    )
    group.addoption(
        "--ssh-host-key-policy",
        choices=backends.HOST_KEY_POLICIES,
        default="strict",
        help="strict (default): refuse unknown and changed host keys; accept-new: record keys of hosts "
        "never seen before (in the first --ssh-known-hosts file, else ~/.ssh/known_hosts), refuse changed "
        "ones; insecure: accept any key (the reports say so)",
    )
    group.addoption(
        "--ssh-known-hosts",
        metavar="FILE",
        help="known_hosts file(s), space-separated, checked in addition to ~/.ssh/known_hosts",
    )


def pytest_configure(config: pytest.Config) -> None:
    # pytest locates its config file before any plugin has declared its options, so a
    # path given as a separate argument (`--ssh-identity-file ~/.ssh/key`) is taken for a
    # test path, the project's pyproject.toml is never read, and the audit is not found.
    here = config.invocation_params.dir
    if config.inipath is None and (here / "compliance" / "test_xennet.py").is_file():
        raise pytest.UsageError(
            "pytest did not read this project's pyproject.toml: an option's path value was probably "
            "given as a separate argument (e.g. `--ssh-identity-file KEY`). Write it with `=` "
            "(`--ssh-identity-file=KEY`), or run through tox (`tox -e audit -- ...`)."
        )
