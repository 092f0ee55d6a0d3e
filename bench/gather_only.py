"""The audit's gathering alone: targets, one connection and the probe per host, no pytest.

What the audit's client spends on SSH and on parsing the probe's output, so that
``bench/case_cost.py`` can tell it apart from what pytest and the reports spend per case.
Prints one JSON object: host -> interface names (as ``bench/floor.py`` does).

    python -m bench.gather_only --key KEY --known-hosts FILE --workers 16 HOST...
"""

from __future__ import annotations

import argparse
import gc
import json
import sys

from compliance.gather import gather
from compliance.targets import expand


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gather_only")
    parser.add_argument("--key", required=True)
    parser.add_argument("--known-hosts", required=True)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("hosts", nargs="+")
    args = parser.parse_args(argv)
    specs = [f"paramiko://root@{host}" for host in args.hosts]
    targets = expand(specs, ssh_identity_file=args.key, known_hosts=args.known_hosts).targets
    gc.freeze()  # as the audit does before gathering
    results = gather(targets, workers=args.workers)
    failed = [r.host for r in results if r.facts is None]
    if failed:
        print(f"not gathered: {', '.join(failed)}", file=sys.stderr)
        return 1
    json.dump({r.host: [i.name for i in r.facts.interfaces] for r in results if r.facts is not None}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
