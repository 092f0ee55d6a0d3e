"""``xennet-audit``: the audit as a command, from any directory.

    xennet-audit --hosts=paramiko://root@10.0.0.5 --ssh-identity-file=~/.ssh/audit

It runs pytest on the installed audit (``--pyargs compliance``) with the same options and
exit statuses as ``pytest``; reports go to ``./reports/`` unless ``--reports-dir`` says
otherwise. A configuration file in the current directory (someone else's ``pytest.ini``,
``addopts`` and all) is never read, and no ``.pytest_cache`` is left behind.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import pytest

# An empty configuration of our own: pytest must not pick up the caller's.
_ISOLATION = ["-c", os.devnull, "--rootdir", "."]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # This module is part of the package pytest would rewrite: it is imported already, harmlessly.
    quiet = ["-W", "ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning"]
    return int(pytest.main([*_ISOLATION, *quiet, "-p", "no:cacheprovider", "-ra", "--pyargs", "compliance", *args]))


if __name__ == "__main__":
    sys.exit(main())
