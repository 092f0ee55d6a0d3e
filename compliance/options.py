"""The audit's command-line options.

Registered as a pytest11 entry point, so pytest knows them before it parses the
command line: ``--ssh-known-hosts FILE`` (with a space) then works from anywhere.
A clone that is not installed gets them through the root conftest.py instead.
"""

from __future__ import annotations

import pytest

from compliance import backends, shard
from compliance.gather import DEFAULT_WORKERS
from compliance.rule import JUMBO_MTU, SCOPES
from compliance.workaround import MODES


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
        "--xennet-shard",
        type=shard.option_type,
        metavar="K/N",
        help="audit only shard K of N (1-based): a stable split of the hosts by name, for N machines; "
        "combine their reports with `python -m compliance.merge`",
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
    group.addoption(
        "--xennet-workaround",
        choices=MODES,
        default="off",
        help="off (default): change nothing; dry-run: record the commands that would fix each susceptible "
        "interface; apply: run them (as root, or with --sudo) and pass only if a re-read shows it mitigated",
    )
    group.addoption(
        "--xennet-allow-mtu",
        action="store_true",
        help=f"with the workaround: if scatter-gather stays off, set MTU {JUMBO_MTU} (jumbo frames can break "
        "paths that leave the VPC)",
    )
    group.addoption(
        "--xennet-persist",
        action="store_true",
        help="with --xennet-workaround=apply: keep scatter-gather on across reboots (a udev rule, and the "
        "host's NetworkManager, ifcfg or ifupdown configuration); writes files under /etc, backing up changed ones",
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
    # Acting on hosts is never implied: flags that only make sense with it are refused without it.
    mode = config.getoption("xennet_workaround", "off")
    if config.getoption("xennet_persist", False) and mode != "apply":
        raise pytest.UsageError("--xennet-persist needs --xennet-workaround=apply")
    if config.getoption("xennet_allow_mtu", False) and mode == "off":
        raise pytest.UsageError("--xennet-allow-mtu needs --xennet-workaround=dry-run or apply")
