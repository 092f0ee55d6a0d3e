"""Project root for pytest.

Being here puts the project on sys.path, so `compliance` imports from a fresh clone,
and loads the audit's options when the project is not installed (installed, they
come from the entry point of the same name). The audit's wiring is compliance/conftest.py.
"""

pytest_plugins = ["compliance.options"]
collect_ignore = ["bench", "reports", "inventories"]
