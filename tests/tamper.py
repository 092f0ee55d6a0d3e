"""A TCP relay on loopback that flips one bit on its way to the client: a network that corrupts
or alters an SSH connection's data, for the lab's hosts.

    with TamperingRelay((lab_host_address, 22), after=len(PROBE_INPUT)) as relay:
        ...connect to ("127.0.0.1", relay.port)...

Where the bit is flipped, so that the packet's MAC or AEAD tag must fail (a packet's first
bytes, its length, would fail otherwise):

- ``after=N``: a byte a quarter into the first long chunk the host sends once the client has
  sent N bytes (the probe, say). The handshake is past, and the byte is inside the command's
  output, whose packet comes first (its exit status and the channel's close, short packets,
  follow it in the chunk, and are read after the exit status).
- ``after=None``: a byte inside the host's answer to the client's first encrypted request (its
  SERVICE_REQUEST for authentication): the first chunk the host sends once the client has sent
  more than its own NEWKEYS. The host's own first encrypted packet (EXT_INFO) comes unasked,
  while the key exchange ends, so this one fails while authentication waits for it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

OUTPUT = 512  # a chunk this long holds the command's output: window adjusts, exit status and close are short
NEWKEYS = 21  # SSH_MSG_NEWKEYS: the packets after it are encrypted
INTO_PACKET = 10  # bytes into the first encrypted packet: past its length field, within its first block


class TamperingRelay:
    def __init__(self, dest: tuple[str, int], after: int | None) -> None:
        self.dest = dest
        self.after = after
        self.sent = 0  # bytes from the client so far
        self.flipped = threading.Event()
        self._from_client = bytearray()  # the client's stream until its NEWKEYS (after=None)
        self._asked: int | None = None  # where the client's encrypted stream begins, once known
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = [self._server]
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> TamperingRelay:
        self._start(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        for sock in self._sockets:
            _shut(sock)
        for thread in self._threads:
            thread.join(10)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        try:
            client, _ = self._server.accept()
        except OSError:  # closed by __exit__
            return
        host = socket.create_connection(self.dest, timeout=10)
        self._sockets += [client, host]
        self._start(self._pump, client, host, False)
        self._start(self._pump, host, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, to_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if not to_client:
                    self.sent += len(data)
                    if self.after is None and self._asked is None:
                        self._from_client += data
                        self._asked = encrypted_from(bytes(self._from_client))
                elif not self.flipped.is_set():
                    data = self._tamper(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shut(dst)

    def _tamper(self, data: bytes) -> bytes:
        if self.after is not None:
            if self.sent < self.after or len(data) < OUTPUT:
                return data
            at = len(data) // 4
        else:
            if self._asked is None or self.sent <= self._asked or len(data) <= INTO_PACKET:
                return data
            at = INTO_PACKET  # the chunk begins with the answer's packet
        self.flipped.set()
        return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def encrypted_from(stream: bytes) -> int | None:
    """Where a side's encrypted packets begin in its stream (past its NEWKEYS), once that came.

    Before it, the stream is the banner line, then binary packets: a 4-byte length, the
    padding's length, the message number.
    """
    at = stream.find(b"\r\n") + 2
    while at > 1 and at + 6 <= len(stream):
        end = at + 4 + int.from_bytes(stream[at : at + 4], "big")
        if end > len(stream):
            return None
        if stream[at + 5] == NEWKEYS:
            return end
        at = end
    return None


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
