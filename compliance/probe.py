"""The probe: one remote command that reports a host's network facts, and its parser.

The script is POSIX sh, reads only sysfs and ``ethtool -k``, and changes nothing. It is
sent on standard input to ``sh`` (:data:`PROBE_COMMAND`), one word that every login
shell runs alike (bash, dash, zsh, fish, tcsh/csh, ksh, mksh, busybox ash, yash, posh):
no login shell ever parses the script itself. (Not ``sh -s``: posh has no ``-s``; a POSIX
shell given no operand reads its commands from standard input anyway.) Interface names only ever reach a command as
a quoted ``"$n"`` argument.

Its output is a byte protocol: ``key<TAB>value`` lines, split on ``\n`` alone (a name can
hold any byte but ``/``, ``:``, NUL and whitespace, never a newline), and each interface's
``ethtool -k`` output framed by ``ethtool_begin`` and ``XENNET-ETHTOOL-END`` lines. After the
interfaces comes the boot configuration (:mod:`compliance.boot`): the files one ``awk`` read,
framed by ``boot_begin`` and ``XENNET-BOOT-END``, each of their lines prefixed with ``l<TAB>``
so that no file can forge a protocol line. The
parser reads bytes and decodes them itself: the host's locale is never asked. Anything it
does not recognise becomes a problem, never a pass.

>>> facts = parse_probe(run_script_on_host(PROBE_COMMAND, PROBE_SCRIPT))  # doctest: +SKIP
>>> [(i.name, i.driver, i.mtu, i.scatter_gather) for i in facts.interfaces]  # doctest: +SKIP
[('eth0', 'xen_netfront', 1500, True)]
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from compliance import boot

PROTOCOL = b"XENNET-PROBE 3"
END = b"XENNET-PROBE-END"
ETHTOOL_END = b"XENNET-ETHTOOL-END"
BOOT_END = b"XENNET-BOOT-END"
EXCERPT_CHARS = 200

# Names reach commands only as "$n". ethtool is looked up in PATH, then /sbin and
# /usr/sbin, which non-root PATHs (and some sudo secure_paths) omit. The script runs on
# every host of a fleet, often on cores that sshd shares, so it keeps to shell builtins:
# ethtool (once per interface), readlink (only for a NIC with a device) and one awk (the boot
# configuration) are its only programs. Output is built in memory and printed at the end (a
# write per line would be an SSH packet per line), in chunks of at most 32 KiB: appending to one ever-growing
# variable is quadratic, and posh, whose printf is not a builtin, cannot pass an
# argument over 128 KiB to it. A host with a few interfaces writes once.
PROBE_SCRIPT = r"""
LC_ALL=C; export LC_ALL
nl='
'
tab='	'
k=0
out='XENNET-PROBE 3'$nl
flush() { k=$((k+1)); eval "c$k=\$out"; out=; }
emit() { out=$out$1; if [ "${#out}" -ge 32768 ]; then flush; fi; }
line() { emit "$1$tab$2$nl"; }
first() { v=; if [ -r "$2" ]; then read -r v 2>/dev/null < "$2"; fi; line "$1" "$v"; }
e=
saved_ifs=$IFS; IFS=:
for d in $PATH /sbin /usr/sbin; do
  if [ -n "$d" ] && [ -f "$d/ethtool" ] && [ -x "$d/ethtool" ]; then e=$d/ethtool; break; fi
done
IFS=$saved_ifs
first kernel /proc/sys/kernel/osrelease
first hypervisor /sys/hypervisor/type
first sys_vendor /sys/class/dmi/id/sys_vendor
first board_asset_tag /sys/class/dmi/id/board_asset_tag
line ethtool "$e"
for p in /sys/class/net/*; do
  [ -e "$p" ] || [ -L "$p" ] || continue
  n=${p##*/}
  [ "$n" = lo ] && continue
  line iface "$n"
  if [ ! -d "$p" ]; then line kind notdir; continue; fi
  d=
  if [ -e "$p/device" ]; then
    line virtual 0
    if [ -e "$p/device/driver/module" ]; then d=$(readlink -f "$p/device/driver/module" </dev/null)
    elif [ -e "$p/device/driver" ]; then d=$(readlink -f "$p/device/driver" </dev/null); fi
    # For the boot configuration's matches: a real NIC's MAC address and type, and its device
    # and parents as udev's KERNELS/SUBSYSTEMS/DRIVERS see them (cd -P: no program).
    v=; read -r v 2>/dev/null < "$p/address"; line address "$v"
    v=; read -r v 2>/dev/null < "$p/type"; line type "$v"
    if cd -P "$p/device" 2>/dev/null; then
      pq=$PWD; pj=0
      while [ -n "$pq" ] && [ -e "$pq/uevent" ] && [ "$pj" -lt 16 ]; do
        ps=; pr=
        if [ -e "$pq/subsystem" ] && cd -P "$pq/subsystem" 2>/dev/null; then ps=${PWD##*/}; fi
        if [ -e "$pq/driver" ] && cd -P "$pq/driver" 2>/dev/null; then pr=${PWD##*/}; fi
        line parent "${pq##*/}$tab$ps$tab$pr"
        pq=${pq%/*}; pj=$((pj+1))
      done
      cd /
    fi
  else
    line virtual 1
  fi
  line driver "${d##*/}"
  m=; read -r m 2>/dev/null < "$p/mtu"; line mtu "$m"
  # Renamed since the kernel named it? Then udev's KERNEL== saw another name at boot.
  v=; read -r v 2>/dev/null < "$p/name_assign_type"; line name_assign_type "$v"
  if [ -n "$e" ]; then
    o=$("$e" -k "$n" 2>&1 </dev/null); r=$?
    emit "ethtool_rc$tab$r${nl}ethtool_begin$tab$nl$o${nl}XENNET-ETHTOOL-END$nl"
  fi
done
# The boot configuration: file names listed here, their relevant text read by one awk.
ba=
saved_ifs=$IFS; IFS=:
for bd in $PATH /usr/bin /bin; do
  if [ -n "$bd" ] && [ -f "$bd/awk" ] && [ -x "$bd/awk" ]; then ba=$bd/awk; break; fi
done
IFS=$saved_ifs
line boot_awk "$ba"
if [ -n "$ba" ]; then
  set --
  bseen=:
  for bs in @SOURCES@; do
    bk=${bs%%,*}; br=${bs#*,}; bd=${br%%,*}; br=${br#*,}; bx=${br%%,*}; by=${br#*,}
    if [ -f "$bd" ]; then set -- "$@" "$bk" "$bd"; continue; fi
    [ -d "$bd" ] || continue
    if [ ! -r "$bd" ] || [ ! -x "$bd" ]; then set -- "$@" "x$bk" "$bd"; continue; fi
    cd -P "$bd" 2>/dev/null || continue
    case $bseen in *":$PWD:"*) continue ;; esac
    bseen=$bseen$PWD:
    for bf in "$bd/$bx"*"$by"; do
      if [ -f "$bf" ] || [ -c "$bf" ]; then set -- "$@" "$bk" "$bf"; fi
    done
  done
  cd /
  bo=$("$ba" -v CAP=@CAP@ '@AWK@' "$@" 2>&1 </dev/null); br=$?
  emit "boot_rc$tab$br${nl}boot_begin$tab$nl$bo${nl}XENNET-BOOT-END$nl"
fi
emit "XENNET-PROBE-END$nl"
flush
i=1
while [ "$i" -le "$k" ]; do eval "printf '%s' \"\$c$i\""; i=$((i+1)); done
"""
PROBE_SCRIPT = (
    PROBE_SCRIPT.replace("@SOURCES@", " ".join(",".join(source) for source in boot.SOURCES))
    .replace("@CAP@", str(boot.OUTPUT_CAP))
    .replace("@AWK@", boot.AWK_PROGRAM)
)

# The script travels on standard input: no login shell (csh and fish included) parses it.
PROBE_COMMAND = "sh"
PROBE_INPUT = PROBE_SCRIPT.encode()


class ProbeError(Exception):
    """The probe's output cannot be trusted; the message is one line, safe to show."""


@dataclasses.dataclass(frozen=True)
class InterfaceFacts:
    """What the probe saw of one interface. ``problem`` is set when its state is unknown."""

    name: str
    driver: str | None = None
    virtual: bool = False
    mtu: int | None = None
    scatter_gather: bool | None = None
    sg_fixed: bool = False
    problem: str | None = None
    # What the host's configuration does to SG at the next boot (compliance.boot): "on", "off",
    # "default" or None; the file:line that decides it; why it is undetermined.
    boot_sg: str | None = None
    boot_sg_source: str | None = None
    boot_sg_problem: str | None = None

    @property
    def sg_state(self) -> str | None:
        """``on``, ``off``, or None when unknown: as every report spells it."""
        return None if self.scatter_gather is None else ("on" if self.scatter_gather else "off")


@dataclasses.dataclass(frozen=True)
class HostFacts:
    """What the probe saw of one host."""

    kernel: str
    hypervisor: str | None
    sys_vendor: str | None
    board_asset_tag: str | None
    ethtool: str | None
    interfaces: tuple[InterfaceFacts, ...]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostFacts:
        ifaces = tuple(InterfaceFacts(**i) for i in data["interfaces"])
        return cls(**{**data, "interfaces": ifaces})


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """A short, single-line, printable rendering of untrusted host output."""
    shown = text[:limit].encode("unicode_escape").decode("ascii")
    return shown + ("..." if len(text) > limit else "")


def last_line(text: str) -> str:
    """The last non-blank line of a command's output, as a short excerpt."""
    lines = [line for line in text.splitlines() if line.strip()]
    return excerpt(lines[-1]) if lines else "no output"


# ``ethtool -k`` output, every format since ethtool 3 (2005); see tests/data/README.md.
# - Header: ``Offload parameters for IF:`` (up to 3.3), ``Features for IF:`` (3.4 on).
# - Names: spaced (``tcp segmentation offload``, ethtool 3-6, and RHEL's patched ethtool 6,
#   which mixes them with ``generic-receive-offload``), hyphenated from 2.6.33 (2009).
# - Sub-features: tab-indented under their legacy flag (3.4 on).
# - Annotations: ``[fixed]``, ``[requested on|off]`` (3.4 on), ``[not requested]`` (netlink).
# ethtool prints ``Cannot get ...`` on stderr for each legacy ioctl that fails, and prints
# that flag as "off" anyway: a zero default, not a reading. The probe merges stderr in, and
# with stdout on a pipe those lines can come before the header.
_NOTE = r"(?: \[(fixed|requested on|requested off|not requested)\])?"
_FEATURE = re.compile(r"(\t?)([a-z0-9][a-z0-9_-]*(?: [a-z0-9_-]+)*): (on|off)" + _NOTE)
_HEADER = re.compile(r"(?:Features|Offload parameters) for (.+):")
_NOISE = re.compile(r"Cannot get .*")  # ethtool's stderr for optional features
# A failed read of SG itself (``Cannot get device scatter-gather settings: ...``), or of all
# netdev features at once (ethtool 3.4-5.x then prints tx-scatter-gather from memory it
# never filled): SG was not read, whatever line follows.
_SG_UNREAD = re.compile(r"Cannot get (?:.*scatter-gather|device generic features).*")


# Output with nothing odd in it: the header, then only feature lines. Checked in one pass of the
# regex engine, not a Python loop over ~60 lines per interface; anything else takes the line by
# line path below, which says what is wrong.
# Its feature lines' groups do not capture: a group inside a repeat is saved at every line.
_FEATURE_UNCAPTURED = re.sub(r"(?<!\\)\((?!\?)", "(?:", _FEATURE.pattern)
_CLEAN = re.compile(rf"\n*{_HEADER.pattern}\n(?:\n*{_FEATURE_UNCAPTURED}(?:\n|\Z))*\n*")
# Found by its literal, which the regex engine scans for at C speed; what leads it on its line says
# which flag it is (anything else, e.g. ``tx-scatter-gather-fraglist``, is not a scatter-gather line).
_SG_STATE = re.compile(rf"scatter-gather: (on|off){_NOTE}$", re.M)
_SG_LEADS = {
    "": (False, "scatter-gather"),
    "\t": (True, "scatter-gather"),
    "tx-": (False, "tx-scatter-gather"),
    "\ttx-": (True, "tx-scatter-gather"),
}  # what leads the literal on its line -> (indented, which flag)
Reading = list[tuple[bool, str | None]]  # (on, note) of each scatter-gather line of one kind


def _decided(legacy: Reading, netdev: Reading) -> tuple[bool, bool] | None:
    """tx-scatter-gather decides when shown, else the one legacy line; None when that is not so."""
    if len(legacy) != 1 or len(netdev) > 1:
        return None
    state, note = netdev[0] if netdev else legacy[0]
    return state, note == "fixed"


def clean_sg(text: str, name: str) -> tuple[bool, bool] | None:
    """(scatter_gather_on, sg_fixed) when the output is clean and unambiguous; None: read it line by line."""
    match = _CLEAN.fullmatch(text)
    if match is None or match.group(1) != name:
        return None
    legacy: Reading = []
    netdev: Reading = []
    for found in _SG_STATE.finditer(text):
        lead = _SG_LEADS.get(text[text.rfind("\n", 0, found.start()) + 1 : found.start()])
        if lead is None:
            continue
        (indent, feature), (state, note) = lead, found.groups()
        if feature == "scatter-gather":
            if indent:  # the legacy flag is never a sub-feature
                return None
            legacy.append((state == "on", note or None))
        else:
            netdev.append((state == "on", note or None))
    return _decided(legacy, netdev)


def parse_ethtool_features(text: str, name: str) -> tuple[bool, bool]:
    """Return (scatter_gather_on, sg_fixed) from ``ethtool -k NAME`` output.

    ``tx-scatter-gather`` (the kernel's NETIF_F_SG, which xen-netfront checks) decides
    when shown; otherwise the legacy ``scatter-gather`` line does. ``sg_fixed`` comes from
    the line that decides.

    >>> parse_ethtool_features("Features for eth0:\\nscatter-gather: on\\n"
    ...                        "\\ttx-scatter-gather: on [fixed]\\n", "eth0")
    (True, True)
    >>> parse_ethtool_features("Offload parameters for eth0:\\nscatter-gather: off\\n"
    ...                        "tcp segmentation offload: off\\n", "eth0")
    (False, False)
    """
    clean = clean_sg(text, name)
    return clean if clean is not None else read_lines(text, name)


def read_lines(text: str, name: str) -> tuple[bool, bool]:
    """parse_ethtool_features line by line: any output, and the reason when it is in doubt."""
    header = None
    unread = None  # the first line saying SG was not read
    stray = None  # the first line that is not a feature
    legacy: Reading = []
    netdev: Reading = []
    for raw in text.split("\n"):  # not splitlines: names may hold \x1c, U+2028...
        if not raw:
            continue
        if _NOISE.fullmatch(raw):
            if unread is None and _SG_UNREAD.fullmatch(raw):
                unread = raw
            continue
        if header is None:
            match = _HEADER.fullmatch(raw)
            if not match:
                raise ProbeError(f"unexpected ethtool -k output: {excerpt(raw)}")
            header = match.group(1)
            continue
        match = _FEATURE.fullmatch(raw)
        if not match:
            stray = raw if stray is None else stray
            continue
        indent, feature, state, note = match.groups()
        if feature == "scatter-gather" and indent:  # the legacy flag is never a sub-feature
            stray = raw if stray is None else stray
        elif feature == "scatter-gather":
            legacy.append((state == "on", note))
        elif feature == "tx-scatter-gather":
            netdev.append((state == "on", note))
    if header is None:
        raise ProbeError(f"no ethtool -k output for {excerpt(name)}")
    if header != name:
        raise ProbeError(f"ethtool -k answered for {excerpt(header)}, not {excerpt(name)}")
    if unread is not None:
        raise ProbeError(f"ethtool could not read scatter-gather of {excerpt(name)}: {excerpt(unread)}")
    if stray is not None:
        raise ProbeError(f"unexpected ethtool -k line: {excerpt(stray)}")
    decided = _decided(legacy, netdev)
    if decided is None:
        raise ProbeError(f"no single scatter-gather line in ethtool -k output: {excerpt(text)}")
    return decided


def text_of(raw: bytes) -> str:
    """Host bytes as text: UTF-8, with any other byte kept as an escape (``\\xff``), never an error."""
    return raw.decode("utf-8", "backslashreplace")


def _interface(block: dict[str, Any]) -> InterfaceFacts:
    raw_name: bytes = block["iface"]
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError:
        # Still its own row, so that the host's other interfaces are judged.
        return InterfaceFacts(text_of(raw_name), problem="interface name is not UTF-8 (its bytes are shown escaped)")
    if block.get("kind") == b"notdir":
        return InterfaceFacts(name, problem=f"/sys/class/net/{excerpt(name)} is not an interface directory")
    driver = text_of(block.get("driver", b"")) or None
    virtual = block.get("virtual") == b"1"

    def facts(**seen: Any) -> InterfaceFacts:  # built once: a frozen dataclass's replace() is not cheap
        return InterfaceFacts(name, driver=driver, virtual=virtual, **seen)

    mtu_text = text_of(block.get("mtu", b""))
    if not mtu_text:
        return facts(problem=f"cannot read MTU of {excerpt(name)} (it may have vanished)")
    if not (mtu_text.isascii() and mtu_text.isdigit()):
        return facts(problem=f"cannot read MTU of {excerpt(name)}: {excerpt(mtu_text)}")
    mtu = int(mtu_text)
    if "ethtool" not in block:
        return facts(mtu=mtu, problem=f"no ethtool -k output for {excerpt(name)}")
    # surrogateescape: a stray byte cannot match any known line, so it fails closed, escaped.
    ethtool_text = b"\n".join(block["ethtool"]).decode("utf-8", "surrogateescape")
    rc = text_of(block.get("ethtool_rc", b"?"))
    if rc != "0":
        # A failed ethtool may still have printed a plausible table: it is not a reading.
        return facts(mtu=mtu, problem=f"ethtool -k failed (exit {excerpt(rc)}): {excerpt(ethtool_text)}")
    try:
        sg, fixed = parse_ethtool_features(ethtool_text, name)
    except ProbeError as exc:
        return facts(mtu=mtu, problem=str(exc))
    return facts(mtu=mtu, scatter_gather=sg, sg_fixed=fixed)


_HOST_KEYS = (b"kernel", b"hypervisor", b"sys_vendor", b"board_asset_tag", b"ethtool")
_IFACE_KEYS = (b"kind", b"virtual", b"driver", b"mtu", b"ethtool_rc", b"address", b"type", b"name_assign_type")
_BOOT_KEYS = (b"boot_awk", b"boot_rc")


def boot_files(section: dict[bytes, Any]) -> boot.BootFiles:
    """The probe's boot section as files; anything amiss is the whole host's boot configuration in doubt."""
    if b"boot_awk" not in section:
        return boot.BootFiles(problem="the probe did not read the boot configuration")
    if not section[b"boot_awk"]:
        return boot.BootFiles(problem="awk not found (looked in PATH, /usr/bin and /bin): boot configuration not read")
    lines = [text_of(raw) for raw in section.get(b"lines", [])]
    rc = text_of(section.get(b"boot_rc", b"?"))
    if rc != "0" or b"lines" not in section:
        return boot.BootFiles(
            problem=f"reading the boot configuration failed (exit {excerpt(rc)}): {excerpt(' '.join(lines))}"
        )
    return boot.parse_section(lines, excerpt)


def device_of(facts: InterfaceFacts, block: dict[str, Any]) -> boot.Device:
    """What udev and the network configuration can match this interface on."""
    parents = []
    for raw in block.get("parents", []):
        kernel, _, rest = text_of(raw).partition("\t")
        subsystem, _, driver = rest.partition("\t")
        parents.append(boot.Level(kernel, subsystem, driver))
    assign = text_of(block.get("name_assign_type", b""))
    return boot.Device(
        facts.name,
        address=text_of(block.get("address", b"")) or None,
        type=text_of(block.get("type", b"")) or None,
        mtu=facts.mtu,
        renamed=None if not assign.isdigit() else assign == "4",  # NET_NAME_RENAMED
        parents=tuple(parents),
        virtual=facts.virtual,
    )


def _with_boot(facts: InterfaceFacts, block: dict[str, Any], files: boot.BootFiles) -> InterfaceFacts:
    if facts.problem is not None:
        return facts
    found = boot.evaluate(files, device_of(facts, block))
    return dataclasses.replace(facts, boot_sg=found.state, boot_sg_source=found.source, boot_sg_problem=found.problem)


def parse_probe(stdout: bytes) -> HostFacts:
    r"""Parse the probe's output (bytes). Raises ProbeError when the host as a whole is in doubt.

    >>> out = (b"XENNET-PROBE 3\nkernel\t6.1\nhypervisor\txen\nsys_vendor\tXen\nboard_asset_tag\t\n"
    ...        b"ethtool\t/sbin/ethtool\niface\teth\xff\nvirtual\t1\ndriver\t\nmtu\t1500\nXENNET-PROBE-END\n")
    >>> parse_probe(out).interfaces[0].name
    'eth\\xff'
    """
    lines = stdout.split(b"\n")  # only \n: str.splitlines would also split on \x1c, \x85, U+2028...
    try:
        start = lines.index(PROTOCOL)
    except ValueError:
        raise ProbeError(f"no probe output (got: {excerpt(text_of(stdout)) or 'nothing'})") from None
    if END not in lines[start:]:
        raise ProbeError(f"probe output is truncated: {excerpt(text_of(stdout[-EXCERPT_CHARS:]))}")
    body = iter(lines[start + 1 : lines.index(END, start)])
    host: dict[bytes, bytes] = {}
    blocks: list[dict[str, Any]] = []
    section: dict[bytes, Any] = {}  # the boot configuration, after every interface
    for raw in body:
        key, sep, value = raw.partition(b"\t")
        if not sep:
            raise ProbeError(f"unexpected probe line: {excerpt(text_of(raw))}")
        if section and key not in _BOOT_KEYS and key != b"boot_begin":
            raise ProbeError(f"unexpected probe line: {excerpt(text_of(raw))}")
        if key == b"iface":
            blocks.append({"iface": value})
        elif key == b"ethtool_begin" and blocks and "ethtool" not in blocks[-1] and not value:
            blocks[-1]["ethtool"] = list(_until(body, ETHTOOL_END))
        elif key == b"parent" and blocks:
            blocks[-1].setdefault("parents", []).append(value)
        elif key in _IFACE_KEYS and blocks and key.decode() not in blocks[-1]:
            blocks[-1][key.decode()] = value
        elif key in _HOST_KEYS and not blocks and key not in host:
            host[key] = value
        elif key in _BOOT_KEYS and key not in section:
            section[key] = value
        elif key == b"boot_begin" and section and b"lines" not in section and not value:
            section[b"lines"] = list(_until(body, BOOT_END))
        else:
            raise ProbeError(f"unexpected probe line: {excerpt(text_of(raw))}")
    missing = [k.decode() for k in _HOST_KEYS if k not in host]
    if missing:
        raise ProbeError(f"probe output lacks {', '.join(missing)}")
    if not host[b"ethtool"]:
        raise ProbeError("ethtool not found (looked in PATH, /sbin and /usr/sbin)")
    names = [b["iface"] for b in blocks]
    if len(set(names)) != len(names):
        raise ProbeError("probe output lists an interface twice")
    files = boot_files(section)
    interfaces = [_with_boot(_interface(b), b, files) for b in blocks]
    if len({i.name for i in interfaces}) != len(interfaces):
        raise ProbeError("two interface names look alike once escaped")
    return HostFacts(
        kernel=text_of(host[b"kernel"]),
        hypervisor=text_of(host[b"hypervisor"]) or None,
        sys_vendor=text_of(host[b"sys_vendor"]) or None,
        board_asset_tag=text_of(host[b"board_asset_tag"]) or None,
        ethtool=text_of(host[b"ethtool"]),
        interfaces=tuple(sorted(interfaces, key=lambda i: i.name)),
    )


def _until(lines: Any, marker: bytes) -> Any:
    """The lines of an iterator up to ``marker`` (consumed); the marker must come."""
    for raw in lines:
        if raw == marker:
            return
        yield raw
    what = "ethtool -k output" if marker == ETHTOOL_END else "the boot configuration"
    raise ProbeError(f"{what} is not closed: the probe output is truncated")
