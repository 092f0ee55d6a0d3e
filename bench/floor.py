"""The floor: the least a paramiko client can do to reach every host once.

One connection and one trivial command (`echo /sys/class/net/*`, a shell builtin,
so that the interfaces it sees can be checked) per host, from a thread pool, with
TCP_NODELAY and host keys verified against one known_hosts file parsed once.
Prints one JSON object: host -> interface names.

    python -m bench.floor --key KEY --known-hosts FILE --workers 16 HOST...
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

import paramiko

COMMAND = "echo /sys/class/net/*"


def interfaces(address: str, key: str, known: paramiko.HostKeys, timeout: float) -> list[str]:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    for keytype, hostkey in (known.lookup(address) or {}).items():
        client.get_host_keys().add(address, keytype, hostkey)
    sock = socket.create_connection((address, 22), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        client.connect(
            address,
            username="root",
            key_filename=key,
            sock=sock,
            timeout=timeout,
            look_for_keys=False,
            allow_agent=False,
        )
        _, stdout, _ = client.exec_command(COMMAND, timeout=timeout)
        words = stdout.read().decode().split()
    finally:
        client.close()
    return sorted(w.rsplit("/", 1)[-1] for w in words if w != "/sys/class/net/lo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--key", required=True)
    parser.add_argument("--known-hosts", required=True)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("hosts", nargs="+")
    args = parser.parse_args(argv)
    known = paramiko.HostKeys(args.known_hosts)
    with ThreadPoolExecutor(args.workers) as pool:
        seen = pool.map(lambda h: interfaces(h, args.key, known, args.timeout), args.hosts)
        json.dump(dict(zip(args.hosts, seen)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
