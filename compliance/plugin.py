"""The pytest plugin (entry point ``pytest11: xennet``): options always, the audit only when asked.

Installed, pytest loads this module in every run of the environment. It declares the
audit's options and decides, from the run's arguments, whether the audit's test module
(``compliance/test_xennet.py``) is to be collected: from the project root (``testpaths``),
``pytest --pyargs compliance`` from anywhere, or ``xennet-audit``. Only then does it load
the audit (:mod:`compliance.audit`: paramiko, gathering, reports) and register it. Any
other pytest run is untouched: nothing heavy is imported and testinfra is upstream's.

>>> is_audit_module(Path(__file__).with_name(AUDIT_MODULE_FILE))
True
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from compliance import options

AUDIT_MODULE = "compliance.test_xennet"
AUDIT_MODULE_FILE = "test_xennet.py"
PLUGIN_NAME = "xennet-audit"
HINT = (
    "the xennet audit is not collected from here: run `xennet-audit ARGS`, or "
    "`pytest --pyargs compliance ARGS`, or plain `pytest ARGS` in the project's root"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    options.pytest_addoption(parser)


def is_audit_module(path: Path) -> bool:
    """Any copy of the audit's test module: the installed one, or a clone's."""
    return (
        path.name == AUDIT_MODULE_FILE
        and path.parent.name == "compliance"
        and (path.parent / "plugin.py").is_file()
        and path.is_file()
    )


def _arg_paths(config: pytest.Config) -> list[Path]:
    """The run's collection arguments as paths (``--pyargs`` names resolved as pytest does)."""
    paths = []
    for arg in config.args:
        text = str(arg).split("::")[0]
        path = config.invocation_params.dir / text
        if not path.exists() and config.option.pyargs:
            try:
                spec = importlib.util.find_spec(text)
            except (ImportError, ValueError):
                spec = None
            if spec is not None and spec.submodule_search_locations:
                path = Path(next(iter(spec.submodule_search_locations)))
            elif spec is not None and spec.origin:
                path = Path(spec.origin)
        paths.append(path)
    return paths


def audit_selected(config: pytest.Config) -> bool:
    """Whether this run collects the audit's test module (a clone's or the installed one)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: the controller decided
        return "xennet_results" in workerinput
    # Only the module itself, its package, or a directory that holds the package (a clone's
    # root): never any ancestor, or a project whose virtualenv sits inside it would audit.
    for path in _arg_paths(config):
        path = path.resolve()
        if path.is_file() and is_audit_module(path):
            return True
        if path.is_dir() and (
            is_audit_module(path / AUDIT_MODULE_FILE) or is_audit_module(path / "compliance" / AUDIT_MODULE_FILE)
        ):
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    # Before pytest_configure: report paths must be set before junitxml, pytest-html and
    # pytest-metadata configure themselves, whatever order the entry points loaded in.
    if config.option.help or config.option.version or config.pluginmanager.is_blocked(PLUGIN_NAME):
        return
    here = config.invocation_params.dir
    if config.inipath is None and is_audit_module(here / "compliance" / AUDIT_MODULE_FILE):
        # pytest locates its configuration before it knows plugin options, so in a clone's
        # root `--ssh-identity-file KEY` made KEY look like a test path: the project's
        # pyproject.toml was never read, and `pytest` would collect the project's own tests.
        raise pytest.UsageError(
            "pytest did not read this project's pyproject.toml: an option's path value was probably "
            "given as a separate argument (e.g. `--ssh-identity-file KEY`). Write it with `=` "
            "(`--ssh-identity-file=KEY`), or run `xennet-audit`, which takes either."
        )
    if audit_selected(config):
        from compliance.audit import AuditPlugin  # paramiko and testinfra backends load only here

        config.pluginmanager.register(AuditPlugin(config), PLUGIN_NAME)
    elif not hasattr(config, "workerinput") and options.given(config.option):
        raise pytest.UsageError(f"{', '.join(options.given(config.option))} given, but {HINT}")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # A broad run (`pytest /`) that happens to walk into a copy of the audit never runs it.
    if is_audit_module(collection_path) and not config.pluginmanager.has_plugin(PLUGIN_NAME):
        return True
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent: Any) -> pytest.Module | None:
    """The audit module is always the one of this plugin's package, whichever copy was found.

    After `pip install .`, a clone's root holds a second copy of the package; importing the
    clone's file as ``compliance.test_xennet`` would clash with the installed package.
    """
    if not is_audit_module(module_path):
        return None
    module: pytest.Module = pytest.Module.from_parent(parent, path=module_path)
    module.obj = importlib.import_module(AUDIT_MODULE)
    return module


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    # `pytest --hosts=...` outside the project collects nothing: say how to reach the audit.
    nothing = int(exitstatus) == pytest.ExitCode.NO_TESTS_COLLECTED
    if (
        nothing
        and getattr(config.option, "hosts", None) is not None
        and not config.pluginmanager.has_plugin(PLUGIN_NAME)
    ):
        terminalreporter.write_line(f"xennet: {HINT}", yellow=True)
