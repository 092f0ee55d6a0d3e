"""Bastions (jump hosts): where a host's ``ProxyJump`` leads, and one shared connection per bastion.

**Routes.** A host is reached directly, through a ``ProxyCommand`` (the user's own program), or
through the hops of a ``ProxyJump`` (outermost first). As OpenSSH reads them, the first value
wins: ``-o ProxyJump=``, ``-J`` and ``-o ProxyCommand=`` in the ssh arguments
(``--ssh-extra-args``, an inventory's ``ansible_ssh_common_args``), then the ssh_config; ``none``
means directly. ``ssh://`` hosts take OpenSSH's own answer (``ssh -G``); ``paramiko://`` hosts
read the same settings here (:func:`settings_route`, :func:`config_route`).

**One connection per bastion.** :class:`Bastions` holds the run's bastion connections, each a
:class:`Shared`: made once, on first use, by one host while the others behind it wait; every
host behind it is then a channel on it (paramiko's ``direct-tcpip``, or OpenSSH's ``-W`` through a
ControlMaster). A bastion that fails (refused, timed out, its host key, or lost mid-run) fails
every host behind it at once, each with a :class:`BastionError` naming the hop; it is never tried
again in the same run. The suite closes them at the end of gathering (``compliance.gather``),
and at exit whatever is left (the workaround's).

>>> parse_jump("root@bastion:2222,ssh://ops@[fe80::1]:22")
(Hop(host='bastion', user='root', port=2222), Hop(host='fe80::1', user='ops', port=22))
>>> settings_route([("ProxyJump", "none"), ("ProxyCommand", "nc %h %p")])
Route(hops=(), command=None)
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import Any

MAX_HOPS = 8  # ProxyJumps of bastions followed through ssh_config, at most: more is a loop
CONTROL_DIR_PREFIX = "xennet-ssh-"
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes; OpenSSH adds a suffix while binding


# ---------------------------------------------------------------- failures
# Types, not words: compliance.gather names each kind by the exception's type.


class BastionError(Exception):
    """A bastion on the way to a host failed: ``hop`` is ``user@bastion[:port]``, ``cause`` why."""

    def __init__(self, hop: str, cause: BaseException):
        super().__init__(f"bastion {hop}: {cause}")
        self.hop = hop
        self.cause = cause


class HopFailure(Exception):
    """A bastion's own failure, with a one-line message safe to show (the cause of a BastionError)."""


class ConnectionLost(HopFailure):
    """The bastion's connection ended while the run still needed it."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("connection lost" + (f" ({detail})" if detail else ""))


class ChannelRefused(HopFailure):
    """The bastion refused to forward to a host (``AllowTcpForwarding``, ``PermitOpen``, resources)."""


class HandshakeClosed(HopFailure):
    """The bastion closed the connection before the SSH handshake ended (often its ``MaxStartups``)."""

    def __init__(self) -> None:
        super().__init__("closed the connection during the SSH handshake (its MaxStartups may be reached)")


class RouteError(HopFailure):
    """The ssh_config's route to a bastion cannot be followed (a loop of ProxyJumps, a bad value)."""


class ConfigRefused(HopFailure):
    """An ssh_config option for the bastion would weaken the host-key policy (compliance.hostkeys)."""


class ConnectTimeout(HopFailure):
    """A host waited longer than its connecting time for the bastion's connection to be made."""

    def __init__(self, limit: float) -> None:
        super().__init__(f"timed out connecting (limit {limit:g}s)")  # as a host's own connecting timeout reads


class Unresponsive(HopFailure):
    """The bastion's connection is up but it did not answer a request in time: given up for the run."""


class ForwardFailed(Exception):
    """The bastion is up but could not connect to the host behind it: the host's error, not the bastion's."""

    def __init__(self, hop: str, dest: str, reason: str):
        super().__init__(f"the bastion {hop} cannot connect to {dest}: {reason}")
        self.hop = hop


# ---------------------------------------------------------------- routes


@dataclasses.dataclass(frozen=True)
class Hop:
    """One element of a ``ProxyJump``, as written: ``[user@]host[:port]`` or ``ssh://...``."""

    host: str
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port else "")


_HOST_PORT = re.compile(r"(\[[^\]]+\]|[^:\[\]@/]+)(?::(\d+))?")


def _parse_hop(part: str, whole: str) -> Hop:
    """OpenSSH's parse_ssh_uri / parse_user_host_port: the user ends at the last ``@``."""
    text = part.strip()
    uri = text.lower().startswith("ssh://")
    if uri:
        text = text[len("ssh://") :].rstrip("/")
    user, at, rest = text.rpartition("@")
    match = _HOST_PORT.fullmatch(rest)
    if not match or (at and not user):
        raise ValueError(f"bad ProxyJump {whole!r}: cannot read {part.strip()!r}")
    port = int(match.group(2)) if match.group(2) else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"bad ProxyJump {whole!r}: port {port}")
    return Hop(match.group(1).strip("[]"), user or None, port)


def parse_jump(text: str) -> tuple[Hop, ...]:
    """A ``ProxyJump`` value: its hops, outermost first; ``none`` is no jump at all.

    >>> parse_jump("none"), parse_jump("b1,b2")
    ((), (Hop(host='b1', user=None, port=None), Hop(host='b2', user=None, port=None)))
    """
    value = text.strip()
    if value.lower() == "none":
        return ()
    if not value:
        raise ValueError("bad ProxyJump '': no host")
    return tuple(_parse_hop(part, value) for part in value.split(","))


@dataclasses.dataclass(frozen=True)
class Route:
    """How a host is reached: through ``hops`` (a ProxyJump), through ``command`` (a ProxyCommand),
    or, with neither, directly."""

    hops: tuple[Hop, ...] = ()
    command: str | None = None


def settings_route(settings: Sequence[tuple[str, str | None]]) -> Route | None:
    """The route the first ``ProxyJump`` or ``ProxyCommand`` among ``(keyword, value)`` settings
    gives (OpenSSH keeps the first of either); None when there is neither. A value of ``none``
    (or None, paramiko's ``ProxyCommand none``) is the direct route."""
    for keyword, value in settings:
        key = keyword.lower()
        if key == "proxyjump":
            return Route(hops=parse_jump(value or "none"))
        if key == "proxycommand":
            return Route() if value is None or value.strip().lower() == "none" else Route(command=value)
    return None


def config_route(lookup: dict[str, Any], order: Callable[[], Sequence[str]]) -> Route:
    """The route an ssh_config gives, from paramiko's ``lookup`` of the host. When it holds both
    a ProxyJump and a ProxyCommand, ``order()`` (the keywords in file order) says which came first."""
    found: list[str] = [k for k in ("proxyjump", "proxycommand") if k in lookup]
    if len(found) == 2:
        first = next((k.lower() for k in order() if k.lower() in found), "proxyjump")
        found = [first]
    return settings_route([(k, lookup[k]) for k in found]) or Route()


def expand_tokens(command: str, host: str, port: int, user: str, original: str) -> str:
    """OpenSSH's ``%h %p %r %n %%`` in a ProxyCommand given as an argument (ssh_config's are
    expanded by paramiko already).

    >>> expand_tokens("ssh -W %h:%p %r@bastion # 100%%", "10.0.0.5", 22, "root", "web1")
    'ssh -W 10.0.0.5:22 root@bastion # 100%'
    """
    tokens = {"h": host, "p": str(port), "r": user, "n": original, "%": "%"}
    return re.sub(r"%(.)", lambda m: tokens.get(m.group(1), m.group(0)), command)


# ---------------------------------------------------------------- shared connections


class Shared:
    """One bastion's connection for the run, made once by ``opener`` when a host first needs it.

    Hosts that arrive while it is being made wait for it (at most ``wait`` seconds each); when
    making it fails, or it dies later, every host asking is told at once, with the cause. The
    handle ``opener`` returns has ``alive()``, ``close()`` and whatever the backend uses it for.
    """

    def __init__(self, label: str, opener: Callable[[Shared], Any]):
        self.label = label  # the opener may refine it (the user ssh_config gives, say)
        self._opener = opener
        self._lock = threading.Lock()
        self._handle: Any = None
        self._cause: BaseException | None = None
        self._closed = False

    def get(self, wait: float) -> Any:
        """The connection, made now if it is not yet; raises BastionError if it failed or died."""
        self.check()
        if not self._lock.acquire(timeout=wait):
            raise BastionError(self.label, ConnectTimeout(wait))
        try:
            self.check()
            if self._handle is None:
                if self._closed:
                    raise BastionError(self.label, ConnectionLost("the run closed it"))
                try:
                    self._handle = self._opener(self)
                except BastionError:
                    raise  # a bastion further out failed: its own Shared recorded it
                except Exception as exc:
                    self._cause = exc
                    raise BastionError(self.label, exc) from None
            return self._handle
        finally:
            self._lock.release()

    def check(self) -> None:
        """Raise BastionError if this bastion failed, or its connection has died since."""
        if self._cause is None and self._handle is not None and not self._handle.alive():
            self.fail(ConnectionLost())
        if self._cause is not None:
            raise BastionError(self.label, self._cause)

    def fail(self, cause: BaseException) -> None:
        """Give up on this bastion for the run: hosts in flight through it end at once, later ones
        are told ``cause``."""
        if self._cause is None:
            self._cause = cause
        if self._handle is not None:
            self._handle.close()

    def close(self) -> None:
        self._closed = True
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()
        if self._cause is None:
            self._cause = ConnectionLost("the run closed it")


class Bastions:
    """The bastion connections of one run (one per bastion, and per hop of a chain), shared by
    every host behind each; safe from any thread. Nothing is contacted until a host needs it.

    >>> with Bastions() as run:
    ...     a = run.shared(("root", "b1", 22), lambda: "root@b1", lambda shared: None)
    ...     a is run.shared(("root", "b1", 22), lambda: "root@b1", lambda shared: None)
    True
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Any, Shared] = {}
        self._dir: str | None = None
        self._count = 0

    def __enter__(self) -> Bastions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def shared(self, key: Any, label: Callable[[], str], opener: Callable[[Shared], Any]) -> Shared:
        """The one Shared for ``key`` (made with ``label()`` and ``opener`` the first time)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                if not self._entries:
                    atexit.register(self.close)  # the workaround's connections live until exit
                entry = self._entries[key] = Shared(label(), opener)
            return entry

    def control_path(self) -> str:
        """A fresh path for an OpenSSH control socket, in a directory of this run's own (0700)."""
        with self._lock:
            if self._dir is None:
                base = tempfile.gettempdir()
                if len(base) > _SOCKET_PATH_MAX - 30 or "%" in base:
                    base = "/tmp"  # a socket path must be short, and OpenSSH expands % in it
                self._dir = tempfile.mkdtemp(prefix=CONTROL_DIR_PREFIX, dir=base)  # mode 0700
            self._count += 1
            return os.path.join(self._dir, f"m{self._count}")

    @property
    def control_dir(self) -> str | None:
        return self._dir

    def close(self) -> None:
        """Close every bastion connection (the hosts behind them are done) and remove the control
        directory. Idempotent."""
        atexit.unregister(self.close)
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
            directory, self._dir = self._dir, None
        for entry in entries:
            entry.close()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
