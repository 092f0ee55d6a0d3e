"""A lab of real SSH hosts built from Linux network namespaces.

Each lab host is a network namespace with its own veth interfaces (hostile
names, MTUs and scatter-gather settings exactly as planned) and its own sshd
listening on the host's address.  All management interfaces hang off one
bridge in the root namespace, so the test process reaches every host directly
by IP.  Nothing is routed anywhere else.

Typical use::

    with Lab([HostPlan("web1"), HostPlan("db1", sshd=False)]) as lab:
        lab.spec("web1")   # "paramiko://root@198.18.0.10"

A host planned ``behind`` another (a bastion) has no link to the bridge: its
management veth's peer sits in the bastion's namespace, which routes the host's
address to it.  Only the bastion reaches it (namespaces do not forward), as a
fleet behind a jump host::

    with Lab([HostPlan("bastion"), HostPlan("web1", behind="bastion")]) as lab:
        lab.ssh_config   # web1's block says ProxyJump root@BASTION

Everything the lab creates is named after ``prefix`` (namespaces
``PREFIX-h000``..., ``PREFIX-park``, links ``PREFIX-br``/``PREFIX-vN``), which
is also how leftovers of a killed run are found and removed.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import ipaddress
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

__all__ = [
    "ETHTOOL_REFUSING_SG",
    "SILENT_ACCEPTED",
    "HostPlan",
    "IfacePlan",
    "Lab",
    "LabError",
    "LabHost",
    "UserPlan",
    "cleanup_prefix",
    "read_sg",
    "require_networkmanager",
    "require_root",
]

SSHD = "/usr/sbin/sshd"
# Files in root's home that bash/sh read for a remote command; each lab host sees
# an empty file instead (the real ones run `pyenv init`: slow and lock-contended).
SHELL_STARTUP_FILES = ("/root/.bashrc", "/root/.profile", "/root/.bash_profile")
# The sh wrapper every host command runs through: bind-mount (SRC, DST) pairs up
# to "--", then exec the rest.  Paths arrive as argv, never inside the script.
_MOUNT_WRAPPER = 'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 1; shift 2; done; shift; exec "$@"'
_PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,7}")
_HOST_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_USER_NAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
FIRST_LAB_UID = 61000  # lab users get free uids from here (checked against this machine)
_WORKERS = 8
_T = TypeVar("_T")


# A fake_ethtool for a driver that keeps SG off whatever is asked (xen-netfront whose backend
# lacks feature-sg, xennet_fix_features): -k as tests/data/ethtool/xen-sg-refused.txt, -K refused.
ETHTOOL_REFUSING_SG = (
    'case "$1" in\n'
    "  -k) printf 'Features for %s:\\nscatter-gather: off\\n\\ttx-scatter-gather: off [requested on]\\n' \"$2\" ;;\n"
    "  -K) echo 'Actual changes:'; echo 'tx-scatter-gather: off [requested on]';"
    " echo 'Could not change any device features' >&2; exit 1 ;;\n"
    "  *) exit 2 ;;\n"
    "esac\n"
)
ETHTOOL_PATHS = ("/usr/sbin/ethtool", "/sbin/ethtool", "/usr/bin/ethtool", "/bin/ethtool")
IP_PATHS = ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip")
# xen-netfront: while SG is off, xennet_change_mtu refuses an MTU above ETH_DATA_LEN, and
# turning SG off brings the MTU back down to it (xennet_set_features).
XEN_MTU_WITHOUT_SG = 1500
NM_STATE_DIR = "/var/lib/NetworkManager"
NM_TIMEOUT = 30  # seconds for a host's NetworkManager to finish starting
# NetworkManager waits for udev to initialise each device wherever /sys is writable; no
# udevd runs in a lab host, so NM gets a read-only /sys, as in a container, and takes
# links from the kernel alone. The remount is NM's own: the host's sessions keep a
# writable /sys.
_NM_COMMAND = "mount -o remount,bind,ro /sys && exec NetworkManager --debug"


BONDING_MASTERS = "/sys/class/net/bonding_masters"
# What a Xen guest's sessions must see, one line per Xen interface (names as arguments):
# NAME, the module's and the driver's basenames, the MTU read through /sys/class/net.
_XEN_CHECK = (
    'for n do m=$(readlink -f "/sys/class/net/$n/device/driver/module") || exit 1; '
    'd=$(readlink -f "/sys/class/net/$n/device/driver") || exit 1; v=; read -r v < "/sys/class/net/$n/mtu"; '
    'printf \'%s\\t%s\\t%s\\t%s\\n\' "$n" "${m##*/}" "${d##*/}" "$v"; done'
)
# Shared by both wrappers: is $1 a xen-netfront NIC here (the driver its /sys shows, as the
# probe reads it), and is its NETIF_F_SG (tx-scatter-gather, what the driver checks) off?
_XEN_SH = r"""real_ethtool={ethtool}
real_ip={ip}
xen() {{ d=$(readlink -f "/sys/class/net/$1/device/driver" 2>/dev/null) && [ "${{d##*/}}" = vif ]; }}
sg_off() {{ "$real_ethtool" -k "$1" 2>/dev/null | grep -q "^[[:blank:]]tx-scatter-gather: off"; }}
"""
_XEN_WRAPPERS = {
    # xennet_set_features: SG off brings the MTU down to 1500. `-i` answers as the
    # kernel does for a driver without get_drvinfo: the bus driver's and device's names.
    "ethtool": "#!/bin/sh\n# xen-netfront as the lab emulates it (tests/lab.py)\n"
    + _XEN_SH
    + r"""case ${{1-}} in
-K|--features|--offload)
  "$real_ethtool" "$@"; rc=$?
  if [ $# -ge 2 ] && xen "$2" && sg_off "$2"; then
    m=; read -r m < "/sys/class/net/$2/mtu"
    if [ "${{m:-0}}" -gt 1500 ]; then "$real_ip" link set dev "$2" mtu 1500 || rc=1; fi
  fi
  exit $rc ;;
-i|--driver)
  if [ $# -eq 2 ] && xen "$2"; then
    o=$("$real_ethtool" "$@") || exit $?
    v=$(readlink "/sys/class/net/$2/device"); v=${{v##*/}}
    printf '%s\n' "$o" | sed -e 's/^driver: .*/driver: vif/' -e 's/^version: .*/version: /' \
      -e "s/^bus-info: .*/bus-info: $v/"
    exit 0
  fi ;;
esac
exec "$real_ethtool" "$@"
""",
    # xennet_change_mtu: while SG is off, an MTU above 1500 is EINVAL. Reads
    # `ip [OPTIONS] link set|change {DEVICE | dev DEVICE} ... mtu N`; -batch and -netns
    # (another namespace) go to the real ip untouched.
    "ip": "#!/bin/sh\n# xen-netfront as the lab emulates it (tests/lab.py)\n"
    + _XEN_SH
    + r"""obj= cmd= first= dev= mtu= prev= skip=
for a do
  if [ -n "$skip" ]; then skip=; continue; fi
  if [ -z "$obj" ]; then
    case $a in
      -b|-batch|-n|-netns) exec "$real_ip" "$@" ;;
      -f|-family|-l|-loops|-rc|-rcvbuf) skip=1 ;;
      -*) ;;
      *) obj=$a ;;
    esac
    continue
  fi
  if [ -z "$cmd" ]; then cmd=$a; continue; fi
  [ -n "$first" ] || first=$a
  case $prev in dev) dev=$a ;; mtu) mtu=$a ;; esac
  prev=$a
done
[ -n "$dev" ] || dev=$first
case $obj in l|li|lin|link)
  case $cmd in s|se|set|ch|cha|chan|chang|change)
    case $mtu in ''|*[!0-9]*) ;; *)
      if [ "$mtu" -gt 1500 ] && xen "$dev" && sg_off "$dev"; then
        echo "RTNETLINK answers: Invalid argument" >&2
        exit 2
      fi ;;
    esac ;;
  esac ;;
esac
exec "$real_ip" "$@"
""",
}


class LabError(RuntimeError):
    """The lab could not be built, configured or verified."""


@dataclass(frozen=True)
class IfacePlan:
    """One interface inside a lab host."""

    name: str  # may be hostile ("$(reboot)", "a;b"); kernel limit 15 bytes
    mtu: int = 1500
    sg: bool = True  # scatter-gather, set with `ethtool -K NAME sg on|off`
    # Looks like a xen-netfront NIC in the host's own /sys/class/net (device -> vif-N, whose
    # driver is vif, whose module is xen_netfront; the live mtu file), and the host's sessions
    # get xen-netfront's SG/MTU coupling (see Lab._xen_mounts). sg=False caps mtu at 1500.
    xen: bool = False


SUDO_RIGHTS = ("none", "nopasswd", "password")


@dataclass(frozen=True)
class UserPlan:
    """A non-root login user of one lab host (key auth, like root)."""

    name: str
    sudo: str = "none"  # none: no sudo rights; nopasswd: NOPASSWD: ALL; password: ALL, password asked


@dataclass(frozen=True)
class HostPlan:
    """One lab host; ``ifaces[0]`` is the management interface."""

    name: str
    ifaces: tuple[IfacePlan, ...] = (IfacePlan("eth0"),)
    sshd: bool = True  # False: address exists but port 22 refuses
    hang: bool = False  # True: auth works, every command hangs
    # sshd's ForceCommand: whatever is asked, the host runs this (a flooding, trickling or
    # truncating host). Takes precedence over hang.
    force_command: str | None = None
    # True: port 22 accepts connections and never says a word (no SSH banner): a host that
    # hangs while being connected to, not while running a command.
    silent: bool = False
    ethtool: bool = True  # False: ethtool is hidden from the host's sessions, as if not installed
    # A sh script body that stands in for ethtool in the host's sessions: a broken or
    # hostile host's output. The lab itself still configures interfaces with the real one.
    fake_ethtool: str | None = None
    # A writable copy of /etc seen only by this host (sshd sessions and Lab.exec);
    # implied by users and etc_files.  Costs a copy of /etc at start: opt-in.
    private_etc: bool = False
    users: tuple[UserPlan, ...] = ()  # created in the host's private /etc
    etc_files: tuple[tuple[str, str], ...] = ()  # (path relative to /etc, text) written into it
    # NetworkManager runs inside the host, on a D-Bus system bus of its own (private /etc,
    # /run and /var/lib/NetworkManager), managing every interface but ifaces[0]; its
    # connections come from etc_files (NetworkManager/system-connections/*.nmconnection).
    networkmanager: bool = False
    # root's login shell in the host's private /etc/passwd (any path, e.g. /usr/bin/tcsh).
    root_shell: str | None = None
    # A shell bind-mounted over /bin/sh in the host's sessions (e.g. /usr/bin/posh).
    sh: str | None = None
    # Reachable only through this other lab host (a bastion, which may itself be behind
    # another): no link to the bridge; the bastion's namespace routes this host's address.
    behind: str | None = None
    port: int = 22  # sshd's port (and the silent listener's)
    sshd_options: tuple[str, ...] = ()  # more sshd_config lines, e.g. "AllowTcpForwarding no"

    @property
    def needs_private_etc(self) -> bool:
        return (
            self.private_etc or bool(self.users) or bool(self.etc_files) or self.networkmanager or bool(self.root_shell)
        )

    @property
    def xen(self) -> bool:
        """True when any interface looks like a xen-netfront NIC (``IfacePlan(xen=True)``)."""
        return any(i.xen for i in self.ifaces)


@dataclass(frozen=True)
class LabHost:
    """A host of a lab: where it lives and how it was planned."""

    name: str
    netns: str
    address: str
    plan: HostPlan
    index: int = 0
    root_veth: str = ""  # root-namespace end of the management veth ("" behind a bastion)
    bastion_veth: str = ""  # for a host behind a bastion: the end of its management veth in the bastion's netns
    # (source, target) bind mounts applied in the host's mount namespace, for
    # sshd and for Lab.exec alike.  Add per-host private mounts here.
    mounts: tuple[tuple[Path, Path], ...] = ()


def require_networkmanager() -> str | None:
    """Why a ``HostPlan(networkmanager=True)`` cannot run here, or None if it can."""
    missing = [
        t
        for t in ("NetworkManager", "nmcli", "nm-online", "dbus-daemon")
        if shutil.which(t, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])) is None
    ]
    if missing:
        return "NetworkManager hosts need missing tools: " + ", ".join(missing)
    if not os.path.isdir(NM_STATE_DIR):
        return f"NetworkManager hosts need {NM_STATE_DIR} (apt-get install network-manager)"
    return None


NEIGH_THRESHOLDS = tuple(Path(f"/proc/sys/net/ipv4/neigh/default/gc_thresh{i}") for i in (1, 2, 3))


def neighbour_limits_for(hosts: int) -> tuple[int, int, int]:
    """The ARP table limits (gc_thresh1/2/3) a lab of ``hosts`` needs on its one bridge.

    The kernel's defaults (128/512/1024) are one table for the whole machine: at about
    1,000 hosts connects fail with "neighbor table overflow".

    >>> neighbour_limits_for(1000)
    (2024, 4048, 8096)
    """
    base = hosts + 1024  # room for whatever else the machine talks to
    return base, 2 * base, 4 * base


def raise_neighbour_limits(hosts: int) -> None:
    """Raise gc_thresh1/2/3 to what ``hosts`` need; never lower them.

    Never lowered, not even back at teardown: the machine's own settings or another
    lab running at the same time may need more than this lab.
    """
    for path, needed in reversed(list(zip(NEIGH_THRESHOLDS, neighbour_limits_for(hosts)))):
        if int(path.read_text()) < needed:  # largest first: thresh1 <= thresh2 <= thresh3 holds throughout
            path.write_text(f"{needed}\n")


def stop_signals_interrupt() -> None:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt, so that a program holding a lab (a bench)
    stopped by Ctrl-C, kill, `timeout` or a CI abort unwinds through its ``with Lab(...)`` and the
    lab comes down. SIGINT too: a non-interactive shell starts a background job with it ignored.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


CLIENT_MARK = "XENNET_LAB_CLIENT"  # in the environment of every process a client of the lab started
CLIENT_GRACE = 10.0  # seconds a stopped client has to end by itself, before it is killed


def processes_with(variable: str, value: str | None = None) -> dict[int, str]:
    """The live processes whose environment sets ``variable`` (to ``value``, if given): pid ->
    command line. The environment is inherited, so this finds a process's descendants wherever
    they went (a session of their own, orphaned); a zombie is dead already and is left out."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            if value is None:
                hit = any(entry.startswith(f"{variable}=".encode()) for entry in env)
            else:
                hit = f"{variable}={value}".encode() in env
            if hit and (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):  # gone meanwhile
            pass
    return found


@contextlib.contextmanager
def killed_on_stop(argv: Sequence[str], **popen: Any) -> Iterator[subprocess.Popen[Any]]:
    """Start a client of a lab (an audit, a bench's floor, a probe) in a session of its own.

    Stopped while it runs (an exception in the block: SIGINT or SIGTERM made KeyboardInterrupt),
    the client ends before the exception goes on: its group gets SIGTERM (an audit then closes its
    connections and removes its temporary files) and up to CLIENT_GRACE seconds, or until a second
    stop; then whatever it started that still runs is killed, found by a mark in its environment
    (OpenSSH clients run in sessions of their own). Not found so: an ssh ControlPersist master
    (ansible's), which blanks its environment as it renames itself; it ends with the lab's sshd.
    Ctrl-C at a terminal reaches only the caller's group, so it is passed on this way too.
    """
    mark = uuid.uuid4().hex
    base = popen.pop("env", None)
    env = {**(os.environ if base is None else base), CLIENT_MARK: mark}
    proc = subprocess.Popen(argv, start_new_session=True, env=env, **popen)
    try:
        yield proc
    except BaseException:
        _end_client(proc, mark)
        raise


def _end_client(proc: subprocess.Popen[Any], mark: str) -> None:
    try:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=CLIENT_GRACE)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):  # out of time, or stopped again: no more grace
        pass
    deadline = time.monotonic() + 10
    while True:
        try:  # a further stop does not cut this short: it takes a moment, and leaves nothing running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            left = processes_with(CLIENT_MARK, mark)
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if (not left and proc.poll() is not None) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        except KeyboardInterrupt:
            continue


def run_client(argv: Sequence[str], **popen: Any) -> tuple[int, resource.struct_rusage]:
    """Run a client of a lab to its end (see :func:`killed_on_stop`): its exit status, and the
    rusage of its process tree from wait4, which the benches measure."""
    with killed_on_stop(argv, **popen) as proc:
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage


def require_root() -> str | None:
    """Return why the lab cannot run on this machine, or None if it can."""
    if os.geteuid() != 0:
        return "the namespace lab needs root (network namespaces, veth, sshd)"
    missing = [t for t in ("ip", "ethtool", "ssh-keygen", "mount", "sh") if not shutil.which(t)]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    if missing:
        return "the namespace lab needs missing tools: " + ", ".join(missing)
    if not os.path.exists("/proc/self/ns/net") or not os.path.exists("/proc/self/ns/mnt"):
        return "the kernel has no network/mount namespace support"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


# --------------------------------------------------------------------------
# small process helpers


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run argv (never through a shell), capturing text output."""
    # surrogateescape: interface names may hold bytes that are not UTF-8.
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, errors="surrogateescape")
    if check and proc.returncode != 0:
        raise LabError(
            f"command failed (rc={proc.returncode}): {list(argv)!r}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        )
    return proc


def _ip_batch(lines: Iterable[str], netns: str | None = None, force: bool = False) -> None:
    """Run many `ip` commands in one process.  Lines hold only lab-made names."""
    text = "".join(line + "\n" for line in lines)
    if not text:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else [])
    _run(argv + ["-batch", "-"], input=text, check=not force)


def _ip_json(argv: Sequence[str], netns: str | None = None) -> list[dict]:
    out = _run(["ip", "-j"] + (["-n", netns] if netns else []) + list(argv)).stdout
    # strict=False: ip -j leaves control bytes of interface names unescaped.
    return json.loads(out, strict=False) if out.strip() else []


def _parallel(fn: Callable[[_T], object], items: Sequence[_T]) -> None:
    """Apply fn to every item on a small thread pool; re-raise the first error.

    The work is mostly fork/exec of short `ip`/`ethtool` processes, which
    overlap well even on two cores.
    """
    if not items:
        return
    with ThreadPoolExecutor(max_workers=min(_WORKERS, len(items))) as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()


def read_sg(ethtool_k_output: str) -> bool:
    """Parse the top-level ``scatter-gather: on|off`` line of `ethtool -k`."""
    for line in ethtool_k_output.splitlines():
        if line.startswith("scatter-gather:"):
            return line.split(":", 1)[1].split()[0] == "on"
    raise LabError(f"no scatter-gather line in ethtool output:\n{ethtool_k_output}")


def _valid_ifname(name: str) -> bool:
    """Kernel rules (dev_valid_name) for an interface name."""
    return (
        0 < len(name.encode("utf-8", "surrogateescape")) <= 15
        and name not in (".", "..")
        and not any(c in "/: \t\n\v\f\r" for c in name)  # the kernel's isspace(), not Python's
    )


# --------------------------------------------------------------------------
# process and namespace teardown (also used for leftovers of killed runs)


def _netns_pids(names: Iterable[str]) -> list[int]:
    """PIDs living in any of the named netns: one /proc scan for all of them
    (`ip netns pids` per namespace rescans /proc each time: quadratic)."""
    wanted = set()
    for name in names:
        try:
            st = os.stat(f"/run/netns/{name}")
        except OSError:
            continue
        wanted.add((st.st_dev, st.st_ino))
    pids = []
    for entry in os.listdir("/proc") if wanted else ():
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:  # exited meanwhile, or a kernel thread
            continue
        if (st.st_dev, st.st_ino) in wanted:
            pids.append(int(entry))
    return pids


def _kill_netns_processes(names: Sequence[str], timeout: float = 30.0) -> None:
    """SIGKILL everything in the namespaces; repeat since sshd may fork meanwhile, until none is left.

    Bounded by time, not by rounds: a process counts until it has exited, and a thousand sshds
    dying on one busy CPU took longer than fifty rounds of 20 ms (bench/pinned.py's lab).
    """
    deadline = time.monotonic() + timeout
    while pids := _netns_pids(names):
        if time.monotonic() > deadline:
            raise LabError(f"processes in {list(names)} survive SIGKILL for {timeout:g}s: {pids}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def _root_links() -> dict[str, dict]:
    return {link["ifname"]: link for link in _ip_json(["link", "show"])}


def _links_with_prefix(prefix: str) -> list[str]:
    return [name for name in _root_links() if name.startswith(prefix + "-")]


def _netns_with_prefix(prefix: str) -> list[str]:
    return [ns["name"] for ns in _ip_json(["netns", "list"]) if ns["name"].startswith(prefix + "-")]


def _remove(netns: Sequence[str], links: Sequence[str], timeout: float = 5.0) -> None:
    """Kill processes in, then delete, the given namespaces and root links."""
    existing_ns = {ns["name"] for ns in _ip_json(["netns", "list"])}
    netns = [ns for ns in netns if ns in existing_ns]
    _kill_netns_processes(netns)
    root = _root_links()
    # A veth whose peer sits in another namespace dies with that namespace.
    # The kernel destroys a deleted namespace's devices asynchronously but in
    # one batch: 0.1 s for 200 veths against ~3 s for 200 `link del`s.
    crossing = [link for link in links if "link_netnsid" in root.get(link, {})]
    _ip_batch([f"link del dev {link}" for link in links if link in root and link not in crossing], force=True)
    _ip_batch([f"netns del {ns}" for ns in netns], force=True)
    deadline = time.monotonic() + timeout
    while crossing and time.monotonic() < deadline:
        time.sleep(0.02)
        root = _root_links()
        crossing = [link for link in crossing if link in root]
    _ip_batch([f"link del dev {link}" for link in crossing], force=True)  # peers elsewhere


def cleanup_prefix(prefix: str, timeout: float = 10.0, keep: Path | None = None) -> None:
    """Remove every namespace and root link named ``PREFIX-*`` (leftovers of a
    killed lab), killing the processes inside those namespaces first, and the
    temporary workdirs such labs left behind (except ``keep``)."""
    _remove(_netns_with_prefix(prefix), _links_with_prefix(prefix))
    for stale in Path(tempfile.gettempdir()).glob(f"{prefix}-lab-*"):
        # Only directories that look like a lab workdir (see Lab._prepare_workdir).
        if stale != keep and (stale / "empty").is_file() and (stale / "hosts").is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    deadline = time.monotonic() + timeout
    while _links_with_prefix(prefix) or _netns_with_prefix(prefix):
        if time.monotonic() > deadline:
            raise LabError(
                f"leftovers with prefix {prefix!r} do not go away: "
                f"links={_links_with_prefix(prefix)} netns={_netns_with_prefix(prefix)}"
            )
        time.sleep(0.05)


# --------------------------------------------------------------------------
# the lab


class Lab:
    """A set of namespace hosts, each running a real sshd (see module doc)."""

    def __init__(
        self,
        plan: Sequence[HostPlan],
        prefix: str = "xnl",
        network: str = "198.18.0.0/20",
        workdir: Path | None = None,
    ) -> None:
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"prefix must match {_PREFIX_RE.pattern}: {prefix!r}")
        self.prefix = prefix
        self.network = ipaddress.IPv4Network(network)
        self.plan = tuple(plan)
        self._own_workdir = workdir is None
        self.workdir: Path | None = Path(workdir) if workdir is not None else None
        self.bridge = f"{prefix}-br"
        self.park_netns = f"{prefix}-park"
        self._validate_plan()
        self.hosts: dict[str, LabHost] = {hp.name: self._make_host(idx, hp) for idx, hp in enumerate(self.plan)}
        self._sshd: dict[str, subprocess.Popen[bytes]] = {}
        self._daemons: list[subprocess.Popen[bytes]] = []  # dbus-daemon and NetworkManager of NM hosts
        self._built = False  # True once anything may exist in the kernel

    # ---- planning -------------------------------------------------------

    def _validate_plan(self) -> None:
        names = [hp.name for hp in self.plan]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate host names in plan: {names}")
        last = int(self.network.network_address) + 10 + len(self.plan) - 1
        if len(self.plan) > 0 and last >= int(self.network.broadcast_address):
            raise ValueError(f"{len(self.plan)} hosts do not fit in {self.network}")
        if len(f"{self.prefix}-v{len(self.plan)}") > 15:
            raise ValueError("too many hosts for the interface name length limit")
        for hp in self.plan:
            if not _HOST_NAME_RE.fullmatch(hp.name):
                raise ValueError(f"host name must match {_HOST_NAME_RE.pattern}: {hp.name!r}")
            if not hp.ifaces:
                raise ValueError(f"host {hp.name!r} needs at least one interface")
            ifnames = [i.name for i in hp.ifaces]
            if len(set(ifnames)) != len(ifnames) or "lo" in ifnames:
                raise ValueError(f"host {hp.name!r}: interface names must be unique and not 'lo'")
            for name in ifnames:
                if not _valid_ifname(name):
                    raise ValueError(f"host {hp.name!r}: invalid interface name {name!r}")
            for iface in hp.ifaces:
                if iface.xen and not iface.sg and iface.mtu > XEN_MTU_WITHOUT_SG:
                    raise ValueError(
                        f"host {hp.name!r}: xen-netfront refuses MTU {iface.mtu} on {iface.name!r} while SG is off"
                    )
            users = [u.name for u in hp.users]
            if len(set(users)) != len(users):
                raise ValueError(f"host {hp.name!r}: duplicate user names {users}")
            for user in hp.users:
                if not _USER_NAME_RE.fullmatch(user.name) or user.sudo not in SUDO_RIGHTS:
                    raise ValueError(f"host {hp.name!r}: bad user {user!r}")
            for rel, _ in hp.etc_files:
                if Path(rel).is_absolute() or ".." in Path(rel).parts:
                    raise ValueError(f"host {hp.name!r}: etc_files paths are relative to /etc: {rel!r}")
            if not 0 < hp.port < 65536:
                raise ValueError(f"host {hp.name!r}: bad port {hp.port}")
            self._bastions_of(hp)  # an unknown bastion or a loop is refused here
            if hp.networkmanager and not re.fullmatch(r"[A-Za-z0-9_.-]+", ifnames[0]):
                # it goes into NetworkManager.conf as the one unmanaged device
                raise ValueError(f"host {hp.name!r}: a NetworkManager host needs a plain management interface name")

    def _bastions_of(self, hp: HostPlan) -> list[str]:
        """The bastions on the way to a host, outermost first (empty for a host on the bridge)."""
        by_name = {h.name: h for h in self.plan}
        chain: list[str] = []
        while hp.behind is not None:
            if hp.behind not in by_name:
                raise ValueError(f"host {hp.name!r} is behind {hp.behind!r}, which is not in the plan")
            if hp.behind in chain or hp.behind == hp.name:
                raise ValueError(f"host {hp.name!r}: a loop of bastions through {hp.behind!r}")
            chain.insert(0, hp.behind)
            hp = by_name[hp.behind]
        return chain

    def _make_host(self, idx: int, hp: HostPlan) -> LabHost:
        address = self.network.network_address + 10 + idx
        behind = hp.behind is not None
        return LabHost(
            name=hp.name,
            netns=f"{self.prefix}-h{idx:03d}",
            address=str(address),
            plan=hp,
            index=idx,
            root_veth="" if behind else f"{self.prefix}-v{idx}",
            bastion_veth=f"j{idx}" if behind else "",
        )

    def behind(self, name: str) -> list[str]:
        """The hosts whose bastion is ``name`` (directly)."""
        return [h.name for h in self.hosts.values() if h.plan.behind == name]

    def jump(self, name: str, user: str = "root") -> str:
        """The OpenSSH ``ProxyJump`` value that reaches ``name`` (``root@A,root@B:2222``); "" if direct."""
        return ",".join(self.endpoint(b, user) for b in self._bastions_of(self.hosts[name].plan))

    def endpoint(self, name: str, user: str = "root") -> str:
        """``user@address``, with ``:port`` when not 22 (a ProxyJump element)."""
        host = self.hosts[name]
        return f"{user}@{host.address}" + (f":{host.plan.port}" if host.plan.port != 22 else "")

    @staticmethod
    def _tmp_names(hp: HostPlan) -> list[str]:
        """Safe creation-time names for a host's interfaces, distinct from every
        planned name so that renaming in order can never collide."""
        planned = {i.name for i in hp.ifaces}
        base = "lt"
        while any(f"{base}{k}" in planned for k in range(len(hp.ifaces))):
            base += "_"
        return [f"{base}{k}" for k in range(len(hp.ifaces))]

    @staticmethod
    def _park_peer(host: LabHost, ifidx: int) -> str:
        return f"p{host.index}x{ifidx}"

    # ---- paths ------------------------------------------------------------

    def _wd(self) -> Path:
        if self.workdir is None:
            raise LabError("the lab has not been started")
        return self.workdir

    @property
    def key_file(self) -> Path:
        """Client private key (ed25519, no passphrase), authorized on every host."""
        return self._wd() / "client_ed25519"

    @property
    def known_hosts(self) -> Path:
        """known_hosts with every host's key, keyed by IP address."""
        return self._wd() / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        """ssh_config for OpenSSH (`ssh -F`) and paramiko.SSHConfig."""
        return self._wd() / "ssh_config"

    def host_dir(self, name: str) -> Path:
        """Per-host directory in the workdir (host key, sshd config and log)."""
        return self._wd() / "hosts" / f"h{self.hosts[name].index:03d}"

    def sshd_log(self, name: str) -> Path:
        return self.host_dir(name) / "sshd.log"

    def sshd_events(self, name: str) -> tuple[int, int]:
        """(logins, session commands) this host's sshd has logged so far."""
        try:
            text = self.sshd_log(name).read_text(errors="replace")
        except FileNotFoundError:
            return 0, 0
        return text.count("Accepted publickey for "), text.count("Starting session: ")

    # ---- public API -------------------------------------------------------

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Lab:
        """Build namespaces, interfaces and sshds; tear down and re-raise on failure."""
        if self._built:
            raise LabError("lab already started")
        try:
            self._prepare_workdir()
            cleanup_prefix(self.prefix, keep=self.workdir)
            self._check_routes()
            raise_neighbour_limits(len(self.plan))
            self._make_keys()
            self._built = True
            atexit.register(self.stop)
            self._create_topology()
            _parallel(self._configure_host, list(self.hosts.values()))
            self._write_client_files()
            self._start_sshds()
            _parallel(self._start_networkmanager, [h for h in self.hosts.values() if h.plan.networkmanager])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Remove everything this lab created.  Idempotent."""
        atexit.unregister(self.stop)
        try:
            if self._built:
                self._teardown_kernel_state()
        finally:
            if self._own_workdir and self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None

    def _teardown_kernel_state(self) -> None:
        for proc in [*self._sshd.values(), *self._daemons]:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # sshd and its listener group
            except ProcessLookupError:
                pass
        hosts = list(self.hosts.values())
        _remove(
            [h.netns for h in hosts] + [self.park_netns],
            [h.root_veth for h in hosts if h.root_veth] + [self.bridge],
        )
        for proc in [*self._sshd.values(), *self._daemons]:
            proc.wait(timeout=10)  # reap the SIGKILLed sshds and daemons: no zombies
        self._sshd.clear()
        self._daemons.clear()
        self._built = False

    def detach(self) -> None:
        """Keep the lab running after this Python process exits (for the CLI)."""
        atexit.unregister(self.stop)

    def spec(self, name: str, scheme: str = "paramiko", user: str = "root") -> str:
        """testinfra host spec, e.g. ``paramiko://root@198.18.0.10`` (``:PORT`` when not 22)."""
        return f"{scheme}://{self.endpoint(name, user)}"

    def kill_host(self, name: str) -> None:
        """The host goes down: SIGKILL every process in its network namespace (sshd and its
        sessions; their connections close). Its namespace and links stay until the lab stops."""
        _kill_netns_processes([self.hosts[name].netns])

    def pin(self, cpus: set[int]) -> None:
        """Run the hosts on ``cpus`` only: every process of theirs now (each thread), and what those
        start from now on (sshd's sessions, the remote commands). bench/pinned.py keeps the
        client's CPU apart from the hosts' with it, as on a fleet whose hosts are other machines.
        Call it while the lab is idle: a process forked between the scan and its turn keeps its CPUs."""
        for pid in _netns_pids([h.netns for h in self.hosts.values()] + [self.park_netns]):
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            except OSError:  # exited meanwhile
                continue
            for tid in tids:
                try:
                    os.sched_setaffinity(tid, cpus)
                except ProcessLookupError:
                    pass

    def logins_from(self, name: str) -> list[str]:
        """The source address of each login this host's sshd has logged, in order."""
        try:
            text = self.sshd_log(name).read_text(errors="replace")
        except FileNotFoundError:
            return []
        return re.findall(r"Accepted publickey for \S+ from (\S+) port", text)

    def exec(self, name: str, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run argv inside the host's namespaces (network namespace, its own
        /sys, and the same private bind mounts its sshd sees)."""
        proc = subprocess.run(
            self._ns_argv(self.hosts[name], argv), capture_output=True, text=True, errors="surrogateescape"
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        return proc

    def set_sg(self, name: str, iface: str, on: bool) -> None:
        """Set scatter-gather with real ethtool and verify the kernel took it.

        On a Xen interface, SG off also brings the MTU down to 1500, as xen-netfront does."""
        host = self.hosts[name]
        said = self._ethtool_sg(host, iface, on)
        self._check(host, iface, "sg", self._read_sg(host, iface), on, said)
        if not on and self._is_xen(host, iface):
            (link,) = _ip_json(["link", "show", "dev", iface], netns=host.netns)
            if link["mtu"] > XEN_MTU_WITHOUT_SG:
                self.set_mtu(name, iface, XEN_MTU_WITHOUT_SG)

    def set_mtu(self, name: str, iface: str, mtu: int) -> None:
        """Set the MTU with `ip link` and verify the kernel took it.

        On a Xen interface with SG off, an MTU above 1500 is refused, as xen-netfront does."""
        host = self.hosts[name]
        if mtu > XEN_MTU_WITHOUT_SG and self._is_xen(host, iface) and not self._read_sg(host, iface):
            raise LabError(f"{host.name}/{iface!r}: xen-netfront refuses MTU {mtu} while SG is off")
        _run(["ip", "-n", host.netns, "link", "set", "dev", iface, "mtu", str(mtu)])
        (link,) = _ip_json(["link", "show", "dev", iface], netns=host.netns)
        self._check(host, iface, "mtu", link["mtu"], mtu)

    def write_ansible_inventory(
        self,
        path: Path,
        connection: str = "paramiko_ssh",
        names: Sequence[str] | None = None,
        user: str = "root",
        ssh_args: str = "",
        extra_vars: str = "",
    ) -> Path:
        """Write an INI inventory with group [lab] and return its path.

        ``ssh_args`` go into ``ansible_ssh_common_args`` after the lab's ``-F``; ``extra_vars``
        (``key=value ...``) are added to every host's line.
        """
        lines = ["[lab]"]
        for name in names if names is not None else list(self.hosts):
            host = self.hosts[name]
            line = (
                f"{name} ansible_host={host.address} ansible_user={user} "
                f"ansible_connection={connection} ansible_ssh_private_key_file={self.key_file}"
                # Lab hosts share this machine's filesystem: skip interpreter discovery.
                " ansible_python_interpreter=/usr/bin/python3"
            )
            if connection == "ssh":
                line += f" ansible_ssh_common_args='-F {self.ssh_config}{' ' + ssh_args if ssh_args else ''}'"
            elif connection == "paramiko_ssh":
                # Ansible's paramiko plugin can only check ~/.ssh/known_hosts and
                # would record lab keys there; the lab never writes root's home.
                line += " ansible_paramiko_host_key_checking=False"
                if ssh_args:
                    line += f" ansible_ssh_common_args='{ssh_args}'"
            if extra_vars:
                line += f" {extra_vars}"
            lines.append(line)
        path = Path(path)
        path.write_text("\n".join(lines) + "\n")
        return path

    # ---- start(): steps -----------------------------------------------------

    def _prepare_workdir(self) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-lab-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        if re.search(r"[\s'\"\\%#]", str(self.workdir.resolve())):
            # Paths go unquoted into ssh_config and the inventory.
            raise LabError(f"workdir path must not contain blanks/quotes: {self.workdir}")
        self.workdir = self.workdir.resolve()
        (self._wd() / "empty").write_text("")
        for name, host in self.hosts.items():
            self.host_dir(name).mkdir(parents=True, exist_ok=True)
            self.hosts[name] = dataclasses.replace(host, mounts=tuple(self._host_mounts(host)))
            if host.plan.xen:
                self._make_xen_tree(host)
        _parallel(self._make_private_etc, [h for h in self.hosts.values() if h.plan.needs_private_etc])

    def private_etc(self, name: str) -> Path:
        """This machine's path of the host's private /etc (only for plans that ask for one)."""
        return self.host_dir(name) / "etc"

    def _make_private_etc(self, host: LabHost) -> None:
        """A copy of this machine's /etc that the host sees (and writes) as /etc."""
        etc = self.private_etc(host.name)
        shutil.rmtree(etc, ignore_errors=True)  # a reused workdir
        _run(["cp", "-a", "/etc", str(etc)])
        for rel, text in host.plan.etc_files:
            (etc / rel).parent.mkdir(parents=True, exist_ok=True)
            (etc / rel).write_text(text)
        if host.plan.users:
            self._add_users(host, etc)
        if host.plan.root_shell:
            passwd = etc / "passwd"
            lines = passwd.read_text().splitlines()
            fields = lines[0].split(":")  # root's line comes first
            if fields[0] != "root":
                raise LabError("the first line of /etc/passwd is not root's")
            lines[0] = ":".join([*fields[:6], host.plan.root_shell])
            passwd.write_text("\n".join(lines) + "\n")
        if host.plan.networkmanager:
            self._configure_networkmanager(host, etc)

    def _add_users(self, host: LabHost, etc: Path) -> None:
        """passwd/shadow/group entries (and sudoers.d rights) in the private /etc.

        Uids are unused on this machine: lab users share its process table and /tmp.
        """
        if not (etc / "sudoers").is_file():
            raise LabError("lab users need sudo installed (apt-get install sudo)")
        used = {
            int(line.split(":")[2])
            for f in ("/etc/passwd", "/etc/group")
            for line in Path(f).read_text().splitlines()
            if line.count(":") >= 2
        }
        free = (uid for uid in range(FIRST_LAB_UID, FIRST_LAB_UID + 10000) if uid not in used)
        # sshd reads the fixed AuthorizedKeysFile as the user: the path must be traversable.
        for d in (self._wd(), self._wd() / "hosts", self.host_dir(host.name)):
            d.chmod(0o711)
        for user, uid in zip(host.plan.users, free):
            home = self.host_dir(host.name) / "home" / user.name
            home.mkdir(parents=True, exist_ok=True)
            home.parent.chmod(0o711)
            os.chown(home, uid, uid)
            with open(etc / "passwd", "a") as f:
                f.write(f"{user.name}:x:{uid}:{uid}:xennet lab user:{home}:/bin/sh\n")
            with open(etc / "group", "a") as f:
                f.write(f"{user.name}:x:{uid}:\n")
            with open(etc / "shadow", "a") as f:
                f.write(f"{user.name}:*:19000:0:99999:7:::\n")  # no password; not '!' (sshd: locked)
            if user.sudo != "none":
                rights = "NOPASSWD: ALL" if user.sudo == "nopasswd" else "ALL"  # ALL: sudo asks a password
                rule = etc / "sudoers.d" / f"xennet-lab-{user.name}"
                rule.parent.mkdir(exist_ok=True)
                rule.write_text(f"{user.name} ALL=(ALL:ALL) {rights}\n")
                rule.chmod(0o440)

    def _configure_networkmanager(self, host: LabHost, etc: Path) -> None:
        """NM's configuration in the private /etc, and the host's private /run and NM state."""
        conf = etc / "NetworkManager" / "conf.d" / "99-xennet-lab.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        # Keyfiles only; no automatic profiles; never DNS, resolv.conf or the hostname
        # (a netns shares this machine's UTS namespace); the management interface (sshd's
        # address) is never NM's. Root needs no polkit.
        conf.write_text(
            "[main]\nplugins=keyfile\nno-auto-default=*\ndns=none\nrc-manager=unmanaged\n"
            "hostname-mode=none\nauth-polkit=false\n\n"
            f"[keyfile]\nunmanaged-devices=interface-name:{host.plan.ifaces[0].name}\n"
        )
        connections = etc / "NetworkManager" / "system-connections"
        for keyfile in connections.glob("*") if connections.is_dir() else ():
            keyfile.chmod(0o600)  # NM ignores keyfiles that others can read
        hdir = self.host_dir(host.name)
        for d in ("run", "nm-state"):
            shutil.rmtree(hdir / d, ignore_errors=True)  # a reused workdir
        for d in ("run/sshd", "run/dbus", "nm-state"):  # run/sshd: sshd's privilege separation
            (hdir / d).mkdir(parents=True)
        (hdir / "nm-state").chmod(0o700)

    def _start_networkmanager(self, host: LabHost) -> None:
        """The host's own system bus, then its NetworkManager; wait until NM has started up."""
        hdir = self.host_dir(host.name)
        self._spawn_daemon(
            host, ["dbus-daemon", "--system", "--nofork", "--nopidfile", "--nosyslog"], hdir / "dbus.log"
        )
        socket_path = hdir / "run" / "dbus" / "system_bus_socket"
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if time.monotonic() > deadline:
                raise LabError(f"{host.name}: no D-Bus system bus after 10s:\n{(hdir / 'dbus.log').read_text()}")
            time.sleep(0.05)
        self._spawn_daemon(host, ["sh", "-c", _NM_COMMAND], hdir / "NetworkManager.log")
        # -s: startup complete, i.e. every connection that was to come up has (or failed).
        said = self.exec(host.name, ["nm-online", "-s", "-q", "-t", str(NM_TIMEOUT)], check=False)
        if said.returncode != 0:
            log = (hdir / "NetworkManager.log").read_text(errors="replace")
            raise LabError(f"{host.name}: NetworkManager did not start (nm-online: {said.returncode}):\n{log[-4000:]}")

    def _spawn_daemon(self, host: LabHost, argv: Sequence[str], log_path: Path) -> None:
        with open(log_path, "wb") as log:
            self._daemons.append(
                subprocess.Popen(
                    self._ns_argv(host, argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def _host_mounts(self, host: LabHost) -> list[tuple[Path, Path]]:
        """The (source, target) bind mounts private to one host: the single
        place to add more (e.g. a per-host writable copy of /etc/...)."""
        empty = self._wd() / "empty"
        # The private /etc first: later mounts may target files inside it.
        mounts = [(self.private_etc(host.name), Path("/etc"))] if host.plan.needs_private_etc else []
        if host.plan.networkmanager:
            # A /run of its own holds the host's D-Bus socket: nmcli in its sshd sessions
            # reaches its NetworkManager, never another host's or this machine's.
            mounts += [
                (self.host_dir(host.name) / "run", Path("/run")),
                (self.host_dir(host.name) / "nm-state", Path(NM_STATE_DIR)),
            ]
        mounts += [(empty, Path(t)) for t in SHELL_STARTUP_FILES if os.path.isfile(t)]
        if host.plan.sh is not None:
            # /bin/sh is a symlink (to dash): mount over the file it names.
            mounts.append((Path(host.plan.sh), Path(os.path.realpath("/bin/sh"))))
        real_ethtool = [Path(p) for p in ETHTOOL_PATHS if os.path.isfile(p) and not os.path.islink(p)]
        if host.plan.xen:
            # Before anything covers them: the real binaries at private paths, for the wrappers.
            mounts += [
                (Path(os.path.realpath(_first_file(paths))), self._xen_dir(host) / "bin" / tool)
                for tool, paths in (("ethtool", ETHTOOL_PATHS), ("ip", IP_PATHS))
            ]
        if not host.plan.ethtool:
            # A non-executable file over the binary: `command -v` and `[ -x ]` both miss it.
            mounts += [(Path("/dev/null"), p) for p in real_ethtool]
        elif host.plan.fake_ethtool is not None:
            mounts += [(self._fake_ethtool(host), p) for p in real_ethtool]
        elif host.plan.xen:
            mounts += [(self._xen_dir(host) / "ethtool", p) for p in real_ethtool]
        if host.plan.xen:
            mounts += self._xen_mounts(host)
        return mounts

    # ---- Xen guests ---------------------------------------------------------
    #
    # A host with IfacePlan(xen=True) interfaces sees, in its own mount namespace, a
    # /sys/class/net built in the workdir (XEN/sys/class-net) and bind-mounted over the
    # real one.  Its other interfaces (and lo) keep the real relative links into
    # /sys/devices/virtual/net.  A Xen interface links instead to XEN/sys/devices/vif-N/
    # net/NAME, whose `device` is vif-N, whose `driver` is XEN/sys/bus/xen/drivers/vif,
    # whose `module` is XEN/sys/module/xen_netfront: the basenames a Xen guest shows.
    # Its `mtu` is the real interface's sysfs file, bind-mounted; every other attribute
    # is a link to the real one.  ethtool and ip in the host's sessions are wrappers
    # (XEN/ethtool, XEN/ip) around the real binaries, bind-mounted at XEN/bin, that add
    # xen-netfront's coupling of SG and MTU for interfaces whose driver reads `vif`.

    def _xen_dir(self, host: LabHost) -> Path:
        return self.host_dir(host.name) / "xen"

    def _xen_ifaces(self, host: LabHost) -> list[tuple[int, IfacePlan]]:
        """(vif number, plan) of each Xen interface, numbered in plan order from 0."""
        return list(enumerate(i for i in host.plan.ifaces if i.xen))

    def _xen_mounts(self, host: LabHost) -> list[tuple[Path, Path]]:
        xdir = self._xen_dir(host)
        sys_dir = xdir / "sys"
        mounts = [(xdir / "ip", Path(p)) for p in _unique_real_files(IP_PATHS)]
        mounts += [
            (
                Path("/sys/devices/virtual/net") / iface.name / "mtu",
                sys_dir / f"devices/vif-{n}/net" / iface.name / "mtu",
            )
            for n, iface in self._xen_ifaces(host)
        ]
        if os.path.isfile(BONDING_MASTERS):  # per network namespace, wherever bonding is loaded
            mounts.append((Path(BONDING_MASTERS), sys_dir / "class-net" / "bonding_masters"))
        return mounts + [(sys_dir / "class-net", Path("/sys/class/net"))]

    def _make_xen_tree(self, host: LabHost) -> None:
        """The files behind _xen_mounts: the fake sysfs tree and the two wrappers."""
        xdir = self._xen_dir(host)
        shutil.rmtree(xdir, ignore_errors=True)  # a reused workdir
        (xdir / "bin").mkdir(parents=True)
        for tool in ("ethtool", "ip"):
            (xdir / "bin" / tool).write_text("")  # mount points of the real binaries
            script = _XEN_WRAPPERS[tool].format(
                ethtool=shlex.quote(str(xdir / "bin" / "ethtool")), ip=shlex.quote(str(xdir / "bin" / "ip"))
            )
            (xdir / tool).write_text(script)
            (xdir / tool).chmod(0o755)
        sys_dir = xdir / "sys"
        class_net = sys_dir / "class-net"
        class_net.mkdir(parents=True)
        (sys_dir / "bus/xen/drivers/vif").mkdir(parents=True)
        (sys_dir / "module/xen_netfront/drivers").mkdir(parents=True)
        (sys_dir / "bus/xen/drivers/vif/module").symlink_to("../../../../module/xen_netfront")
        (sys_dir / "module/xen_netfront/drivers/xen:vif").symlink_to("../../../bus/xen/drivers/vif")
        if os.path.isfile(BONDING_MASTERS):
            (class_net / "bonding_masters").write_text("")
        # name_assign_type is the kernel's own for the Xen NIC (below); the others link to the veth's.
        attributes = sorted(set(os.listdir("/sys/class/net/lo")) - {"device", "mtu", "subsystem", "name_assign_type"})
        xen = dict((iface.name, n) for n, iface in self._xen_ifaces(host))
        for name in ["lo", *(i.name for i in host.plan.ifaces)]:
            if name not in xen:
                (class_net / name).symlink_to(f"../../devices/virtual/net/{name}")  # as the kernel links it
                continue
            vif = sys_dir / "devices" / f"vif-{xen[name]}"
            netdir = vif / "net" / name
            netdir.mkdir(parents=True)
            (vif / "driver").symlink_to("../../bus/xen/drivers/vif")
            (vif / "subsystem").symlink_to("../../bus/xen")
            (vif / "devtype").write_text("vif\n")
            (vif / "nodename").write_text(f"device/vif/{xen[name]}\n")
            # A device's uevent: udev walks the parents that have one (KERNELS/DRIVERS==).
            (vif / "uevent").write_text(f"DRIVER=vif\nXENBUS_TYPE=vif\nXENBUS_PATH=device/vif/{xen[name]}\n")
            (sys_dir / "bus/xen/drivers/vif" / vif.name).symlink_to(f"../../../../devices/{vif.name}")
            (netdir / "device").symlink_to("../../../" + vif.name)
            (netdir / "subsystem").symlink_to("/sys/class/net")
            (netdir / "mtu").write_text("")  # mount point of the live file
            for attr in attributes:
                (netdir / attr).symlink_to(f"/sys/devices/virtual/net/{name}/{attr}")
            # xen-netfront's eth%d comes from alloc_etherdev_mq: NET_NAME_ENUM, never renamed
            # on a guest booted with net.ifnames=0 (Amazon Linux); a veth here was renamed (4).
            (netdir / "name_assign_type").write_text("1\n")
            (class_net / name).symlink_to(netdir)

    def _is_xen(self, host: LabHost, iface: str) -> bool:
        return any(i.xen for i in host.plan.ifaces if i.name == iface)

    def _verify_xen(self, host: LabHost) -> None:
        """What the host's own sessions see: a xen_netfront module and the live MTU."""
        xen = [i for _, i in self._xen_ifaces(host)]
        said = self.exec(host.name, ["sh", "-c", _XEN_CHECK, "sh", *(i.name for i in xen)], check=False)
        want = "".join(f"{i.name}\txen_netfront\tvif\t{i.mtu}\n" for i in xen)
        self._check(host, "(xen sysfs)", "view", said.stdout, want, said.stderr)

    def _fake_ethtool(self, host: LabHost) -> Path:
        path = self.host_dir(host.name) / "fake-ethtool"
        path.write_text("#!/bin/sh\n" + (host.plan.fake_ethtool or ""))
        path.chmod(0o755)
        return path

    def _check_routes(self) -> None:
        """Refuse a network that overlaps a route we do not own."""
        for route in _ip_json(["-4", "route", "show", "table", "all"]):
            dst = route.get("dst", "default")
            if dst == "default" or route.get("dev") == self.bridge:
                continue
            if ipaddress.IPv4Network(dst, strict=False).overlaps(self.network):
                raise LabError(
                    f"lab network {self.network} overlaps existing route {dst} "
                    f"dev {route.get('dev')} (table {route.get('table', 'main')})"
                )

    def _make_keys(self) -> None:
        """One client key for the lab, one host key per host (ssh-keygen)."""

        def keygen(path: Path) -> None:
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xennet-lab", "-f", str(path)])

        paths = [self.key_file] + [self.host_dir(n) / "ssh_host_ed25519_key" for n in self.hosts]
        for p in paths:
            p.unlink(missing_ok=True)  # a reused workdir: ssh-keygen would prompt
        _parallel(keygen, paths)

    def _create_topology(self) -> None:
        """Bridge, namespaces and every veth pair, in two `ip -batch` runs.

        Interfaces are created under safe temporary names; hostile final names
        are applied later, one argv at a time.
        """
        plen = self.network.prefixlen
        lines = [
            f"netns add {self.park_netns}",
            f"link add name {self.bridge} type bridge",
            f"address add {self.network.network_address + 1}/{plen} dev {self.bridge}",
            f"link set dev {self.bridge} up",
        ]
        lines += [f"netns add {host.netns}" for host in self.hosts.values()]  # bastions' before their hosts' links
        park_up = []
        in_bastion: dict[str, list[str]] = {}  # bastion netns -> its `ip` lines for the hosts behind it
        for host in self.hosts.values():
            tmps = self._tmp_names(host.plan)
            if host.plan.behind is not None:
                bastion = self.hosts[host.plan.behind]
                lines.append(
                    f"link add name {tmps[0]} netns {host.netns} type veth peer name {host.bastion_veth} "
                    f"netns {bastion.netns}"
                )
                # The host's address is in the lab's network, which the bastion has on its own
                # management link: a host route wins. The host reaches the bastion's address on
                # its link (the bastion answers ARP for its addresses on any interface).
                in_bastion.setdefault(bastion.netns, []).extend(
                    [f"link set dev {host.bastion_veth} up", f"route add {host.address}/32 dev {host.bastion_veth}"]
                )
            else:
                lines += [
                    f"link add name {host.root_veth} type veth peer name {tmps[0]} netns {host.netns}",
                    f"link set dev {host.root_veth} master {self.bridge} up",
                ]
            for k in range(1, len(tmps)):
                peer = self._park_peer(host, k)
                lines.append(
                    f"link add name {tmps[k]} netns {host.netns} type veth peer name {peer} netns {self.park_netns}"
                )
                park_up.append(f"link set dev {peer} up")
        _ip_batch(lines)
        _ip_batch(park_up, netns=self.park_netns)
        for netns, bastion_lines in in_bastion.items():
            _ip_batch(bastion_lines, netns=netns)

    def _configure_host(self, host: LabHost) -> None:
        """Address, names, SG and MTU of one host's interfaces, then verify."""
        tmps = self._tmp_names(host.plan)
        _ip_batch(
            [
                "link set dev lo up",
                f"address add {host.address}/{self.network.prefixlen} dev {tmps[0]}",
            ],
            netns=host.netns,
        )
        for tmp, iface in zip(tmps, host.plan.ifaces):
            # SG first: some drivers (xen-netfront) cap the MTU by SG state.
            self._ethtool_sg(host, tmp, iface.sg)
            _run(["ip", "-n", host.netns, "link", "set", "dev", tmp, "name", iface.name, "mtu", str(iface.mtu), "up"])
        self._verify_host(host)

    def _write_client_files(self) -> None:
        pub = self.key_file.with_name(self.key_file.name + ".pub").read_text()
        (self._wd() / "authorized_keys").write_text(pub)
        (self._wd() / "authorized_keys").chmod(0o644)  # lab users' sshd reads it as the user
        known = []
        for name in self.hosts:
            keytype, key = (self.host_dir(name) / "ssh_host_ed25519_key.pub").read_text().split()[:2]
            known.append(f"{self.known_hosts_name(name)} {keytype} {key}\n")
        self.known_hosts.write_text("".join(known))
        self.ssh_config.write_text("".join(self._ssh_config_block(h) for h in self.hosts.values()))

    def known_hosts_name(self, name: str) -> str:
        """How known_hosts names this host: its address, as ``[address]:port`` when not 22."""
        host = self.hosts[name]
        return host.address if host.plan.port == 22 else f"[{host.address}]:{host.plan.port}"

    def _ssh_config_block(self, host: LabHost) -> str:
        jump = self.jump(host.name)
        return (
            f"Host {host.address} {host.name}\n"
            f"    HostName {host.address}\n"
            + (f"    Port {host.plan.port}\n" if host.plan.port != 22 else "")
            + (f"    ProxyJump {jump}\n" if jump else "")
            + "    User root\n"
            f"    IdentityFile {self.key_file}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {self.known_hosts}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
            "    PasswordAuthentication no\n"
            "    ControlMaster no\n"
            "    ConnectTimeout 10\n"
            "    LogLevel ERROR\n\n"
        )

    def _sshd_config(self, host: LabHost) -> str:
        hdir = self.host_dir(host.name)
        lines = [
            f"ListenAddress {host.address}",
            f"Port {host.plan.port}",
            f"HostKey {hdir / 'ssh_host_ed25519_key'}",
            f"PidFile {hdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self._wd() / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "X11Forwarding no",
            "MaxStartups 1000:30:2000",
            "MaxSessions 100",
            "LogLevel VERBOSE",  # logs each login and each session's command: tests count them
            "Subsystem sftp internal-sftp",  # ansible transfers files over sftp
            *host.plan.sshd_options,
        ]
        if host.plan.force_command is not None:
            lines.append(f"ForceCommand {host.plan.force_command}")
        elif host.plan.hang:
            lines.append("ForceCommand exec sleep 3600")
        return "\n".join(lines) + "\n"

    def _start_sshds(self) -> None:
        """Spawn every sshd first, then wait for all, so 200 hosts start fast."""
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd privsep dir
        wanted = [h for h in self.hosts.values() if h.plan.sshd]
        for host in wanted:
            cfg = self.host_dir(host.name) / "sshd_config"
            cfg.write_text(self._sshd_config(host))
            argv = [SSHD, "-D", "-e", "-f", str(cfg)]
            if host.plan.silent:
                argv = [sys.executable, "-c", _SILENT_LISTENER, host.address, str(host.plan.port)]
            with open(self.sshd_log(host.name), "wb") as log:
                self._sshd[host.name] = subprocess.Popen(
                    self._ns_argv(host, argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        self._wait_for_sshds(wanted, timeout=max(10.0, 0.1 * len(wanted)))

    def _wait_for_sshds(self, hosts: Sequence[LabHost], timeout: float) -> None:
        pending = {h.name: h for h in hosts}
        deadline = time.monotonic() + timeout
        while pending:
            for name, host in list(pending.items()):
                rc = self._sshd[name].poll()
                if rc is not None:
                    self._sshd_failed(name, f"sshd exited with status {rc}")
                if _listening(self._sshd[name].pid, host.address, host.plan.port):
                    del pending[name]
            if pending and time.monotonic() > deadline:
                self._sshd_failed(next(iter(pending)), f"sshd not accepting after {timeout:.0f}s")
            if pending:
                time.sleep(0.05)

    def _sshd_failed(self, name: str, why: str) -> None:
        log = self.sshd_log(name).read_text(errors="replace")
        raise LabError(f"{name} ({self.hosts[name].address}): {why}; sshd log:\n{log}")

    # ---- namespace helpers --------------------------------------------------

    def _ns_argv(self, host: LabHost, argv: Sequence[str]) -> list[str]:
        """argv that runs `argv` in the host's netns with its bind mounts.

        `ip netns exec` gives a private (slave) mount namespace with /sys
        remounted for the netns, so the mounts never leak to the root.
        """
        mount_args = [str(p) for pair in host.mounts for p in pair]
        return ["ip", "netns", "exec", host.netns, "sh", "-c", _MOUNT_WRAPPER, "sh", *mount_args, "--", *argv]

    def _ethtool_sg(self, host: LabHost, iface: str, on: bool) -> str:
        """Request SG on/off; return ethtool's complaints.  Callers verify the
        result with `ethtool -k`: -K's exit status does not say what changed."""
        # ethtool has no netns option; `ip netns exec` also gives it a fitting /sys.
        argv = ["ip", "netns", "exec", host.netns, "ethtool", "-K", iface, "sg", "on" if on else "off"]
        proc = _run(argv, check=False)
        return proc.stdout + proc.stderr

    def _read_sg(self, host: LabHost, iface: str) -> bool:
        return read_sg(_run(["ip", "netns", "exec", host.netns, "ethtool", "-k", iface]).stdout)

    def _verify_host(self, host: LabHost) -> None:
        """The kernel state must be exactly the plan: names, MTUs and SG."""
        links = {link["ifname"]: link for link in _ip_json(["link", "show"], netns=host.netns)}
        # A bastion also holds the ends of the management links of the hosts behind it.
        planned = (
            {i.name for i in host.plan.ifaces} | {"lo"} | {self.hosts[b].bastion_veth for b in self.behind(host.name)}
        )
        if set(links) != planned:
            raise LabError(f"{host.name}: interfaces {sorted(links)} != planned {sorted(planned)}")
        for iface in host.plan.ifaces:
            self._check(host, iface.name, "mtu", links[iface.name]["mtu"], iface.mtu)
            self._check(host, iface.name, "sg", self._read_sg(host, iface.name), iface.sg)
        if host.plan.xen:
            self._verify_xen(host)

    @staticmethod
    def _check(host: LabHost, iface: str, what: str, actual: object, wanted: object, detail: str = "") -> None:
        if actual != wanted:
            raise LabError(
                f"{host.name}/{iface!r}: kernel has {what}={actual!r}, wanted {wanted!r}"
                + (f"\n{detail.strip()}" if detail.strip() else "")
            )


def _first_file(paths: Sequence[str]) -> str:
    for p in paths:
        if os.path.isfile(p):
            return p
    raise LabError(f"none of {list(paths)} exists")


def _unique_real_files(paths: Sequence[str]) -> list[str]:
    """The distinct files behind paths (merged /usr makes /bin/ip and /usr/sbin/ip one file)."""
    return list(dict.fromkeys(os.path.realpath(p) for p in paths if os.path.isfile(p)))


# Accepts every connection on ADDRESS:PORT and keeps it open without a word; logs each one
# (SILENT_ACCEPTED in its sshd log: tests count the connection attempts).
SILENT_ACCEPTED = "silent listener: accepted a connection"
_SILENT_LISTENER = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64); held = []\n"
    f"while True: held.append(s.accept()); print({SILENT_ACCEPTED!r}, flush=True)\n"
)


def _listening(pid: int, address: str, port: int = 22) -> bool:
    """True once the process's netns has a TCP listener on address:port.

    /proc/PID/net/tcp shows the sockets of PID's netns: no subprocess, and
    unlike a probe connection no sshd child and no sshd log noise.
    """
    ip_hex = int.from_bytes(socket.inet_aton(address), "little")
    want = f"{ip_hex:08X}:{port:04X}"
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(f[1] == want and f[3] == "0A" for f in (line.split() for line in lines))  # 0A: LISTEN
