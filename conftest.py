"""Project root marker for pytest: puts the project on sys.path, so `compliance` imports
from a fresh clone without installing. The audit's own wiring is compliance/conftest.py."""

collect_ignore = ["bench", "reports", "inventories"]
