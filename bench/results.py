"""bench/RESULTS.md: each benchmark keeps a section of its own, between its markers.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "RESULTS.md"
>>> update_section(path, "<!-- a:start -->\\none\\n<!-- a:end -->")
>>> update_section(path, "<!-- b:start -->\\ntwo\\n<!-- b:end -->")
>>> update_section(path, "<!-- a:start -->\\nthree\\n<!-- a:end -->")
>>> path.read_text().split()
['<!--', 'a:start', '-->', 'three', '<!--', 'a:end', '-->', '<!--', 'b:start', '-->', 'two', '<!--', 'b:end', '-->']
"""

from __future__ import annotations

import re
from pathlib import Path


def update_section(results: Path, text: str) -> None:
    """Replace the section that ``text`` holds (``<!-- NAME:start -->`` … ``<!-- NAME:end -->``), or append it."""
    match = re.match(r"<!-- ([a-z0-9-]+):start -->", text)
    if match is None:
        raise ValueError("a section starts with <!-- NAME:start -->")
    start, end = match.group(0), f"<!-- {match.group(1)}:end -->"
    if not text.rstrip().endswith(end):
        raise ValueError(f"a section ends with {end}")
    old = results.read_text() if results.exists() else ""
    if start in old and end in old:
        new = old[: old.index(start)] + text + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    results.write_text(new)
