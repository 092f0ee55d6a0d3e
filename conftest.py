"""Project root for pytest: a thin entry.

Being here puts the project on sys.path, so that a clone that is not installed loads the
audit's plugin (installed, the ``pytest11`` entry point of the same name loads it first,
and this line is a no-op). Everything else lives in ``compliance/plugin.py``.
"""

pytest_plugins = ["compliance.plugin"]
collect_ignore = ["bench", "reports", "inventories"]
