"""The floor: the least a paramiko client can do to reach every host once.

One connection and one trivial command (`echo /sys/class/net/*`, a shell builtin,
so that the interfaces it sees can be checked) per host, from a thread pool, with
TCP_NODELAY and host keys verified against one known_hosts file parsed once and indexed
by host name, and the client key loaded once (paramiko's ``HostKeys.lookup`` scans every entry: at 1,000 hosts that scan was
most of ≈ 2.5 ms of the floor's CPU per host, which no fleet tool need spend).
Prints one JSON object: host -> interface names.

    python -m bench.floor --key KEY --known-hosts FILE --workers 16 HOST...

With ``--aead-first`` it prefers AES-GCM, as the audit's own connections do (paramiko's default
is AES-CTR with an HMAC). With ``--script FILE`` (the audit's probe, written out by bench/run.py) it runs ``sh`` with
the file on its standard input and reads the whole output, as the audit does, but parses
nothing beyond its ``iface`` lines: the least any client sending the probe spends.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import paramiko

COMMAND = "echo /sys/class/net/*"
AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")  # as compliance.backends prefers them


Known = dict[str, list[paramiko.PKey]]


def read_known_hosts(path: str) -> Known:
    """Plain (unhashed) known_hosts entries by host name, parsed once with paramiko's own parser."""
    known: Known = {}
    with open(path) as lines:
        for line in lines:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
            if entry is not None and entry.key is not None:
                for name in entry.hostnames:
                    known.setdefault(name, []).append(entry.key)
    return known


def aead_first(sock: socket.socket, **transport_args: Any) -> paramiko.Transport:
    """paramiko's Transport preferring AES-GCM, then its own order, as the audit's connections do
    (without importing the suite: the floor's start-up stays Python's and paramiko's)."""
    transport = paramiko.Transport(sock, **transport_args)
    options = transport.get_security_options()
    aead = tuple(c for c in AEAD_CIPHERS if c in options.ciphers)
    options.ciphers = aead + tuple(c for c in options.ciphers if c not in aead)
    return transport


def interfaces(
    address: str, key: paramiko.PKey, known: Known, timeout: float, script: bytes = b"", aead: bool = False
) -> list[str]:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    for hostkey in known.get(address, []):
        client.get_host_keys().add(address, hostkey.get_name(), hostkey)
    sock = socket.create_connection((address, 22), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        client.connect(
            address,
            username="root",
            pkey=key,
            sock=sock,
            timeout=timeout,
            look_for_keys=False,
            allow_agent=False,
            transport_factory=aead_first if aead else None,
        )
        if script:
            stdin, stdout, _ = client.exec_command("sh", timeout=timeout)
            stdin.write(script)
            stdin.channel.shutdown_write()
            words = [m.decode() for m in re.findall(rb"^iface\t(.*)$", stdout.read(), re.M)]
        else:
            _, stdout, _ = client.exec_command(COMMAND, timeout=timeout)
            words = stdout.read().decode().split()
    finally:
        client.close()
    return sorted(name for name in (w.rsplit("/", 1)[-1] for w in words) if name != "lo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--key", required=True)
    parser.add_argument("--known-hosts", required=True)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--script", help="run sh with this file on standard input instead of the builtin command")
    parser.add_argument("--aead-first", action="store_true", help="prefer AES-GCM, as the audit does")
    parser.add_argument("hosts", nargs="+")
    args = parser.parse_args(argv)
    known = read_known_hosts(args.known_hosts)
    key = paramiko.PKey.from_path(args.key)  # loaded once, not once per host
    script = Path(args.script).read_bytes() if args.script else b""
    with ThreadPoolExecutor(args.workers) as pool:
        seen = pool.map(lambda h: interfaces(h, key, known, args.timeout, script, args.aead_first), args.hosts)
        json.dump(dict(zip(args.hosts, seen)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
