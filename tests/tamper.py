"""A TCP relay on loopback that flips one bit on its way to the client: a network that corrupts
or alters an SSH connection's data, for the lab's hosts.

    with TamperingRelay((lab_host_address, 22), after=len(PROBE_INPUT)) as relay:
        ...connect to ("127.0.0.1", relay.port)...

A byte a quarter into the first long chunk the host sends once the client has sent ``after``
bytes (the probe, say) gets one bit flipped: the handshake is past, and the byte is inside the
command's output, whose packet comes first (its exit status and the channel's close, short
packets, follow it in the chunk, and are read after the exit status). Its MAC or AEAD tag must
then fail; a packet's first bytes, its length, would fail otherwise.
"""

from __future__ import annotations

import socket
import threading

OUTPUT = 512  # a chunk this long holds the command's output: window adjusts, exit status and close are short


class TamperingRelay:
    def __init__(self, dest: tuple[str, int], after: int) -> None:
        self.dest = dest
        self.after = after
        self.sent = 0  # bytes from the client so far
        self.flipped = threading.Event()
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

    def _start(self, target, *args) -> None:
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
                elif self.sent >= self.after and len(data) >= OUTPUT and not self.flipped.is_set():
                    i = len(data) // 4  # inside the output's packet, past its length
                    data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
                    self.flipped.set()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shut(dst)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
