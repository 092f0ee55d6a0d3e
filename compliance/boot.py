"""Boot configuration: what a host's own configuration will do to scatter-gather at the next boot.

The probe ships the relevant configuration files back as raw text (bounded, framed); this
module and its three helpers read them, pure and without I/O:

- :mod:`compliance.boot_udev`: udev rules that run ``ethtool -K … sg`` (the suite's own
  rule among them), with udev's override-by-filename and lexical order;
- :mod:`compliance.boot_link`: systemd ``.link`` files (``ScatterGather=``, systemd v260+);
- :mod:`compliance.boot_netcfg`: RHEL ifcfg ``ETHTOOL_OPTS``, NetworkManager keyfiles
  (``ethtool.feature-sg``) and ifupdown (``offload-sg``, ``up ethtool -K``).

Each gives an :class:`Outcome` for one interface; :func:`evaluate` orders them as the host
boots them, later wins: the ``.link`` file (udev's ``net_setup_link`` builtin, while rules are
processed), then udev ``RUN`` programs (after every rule), then whatever brings the
interface up (ifupdown, network-scripts, NetworkManager). What cannot be decided is a
``problem``, never a guess: under ``--xennet-require-persistent`` it is an error.

>>> e = Setting(False, "/etc/udev/rules.d/80-x.rules:3")
>>> combine([Outcome(), Outcome(e), Outcome()]).describe()
'off (/etc/udev/rules.d/80-x.rules:3)'
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import re
import shlex
from collections.abc import Callable, Iterable, Sequence

# Where the probe looks, in udev's and systemd's priority order (a file of the same name
# earlier in the list replaces the later ones). /lib is skipped where it is /usr/lib.
UDEV_DIRS = (
    "/etc/udev/rules.d",
    "/run/udev/rules.d",
    "/usr/local/lib/udev/rules.d",
    "/usr/lib/udev/rules.d",
    "/lib/udev/rules.d",
)
LINK_DIRS = (
    "/etc/systemd/network",
    "/run/systemd/network",
    "/usr/local/lib/systemd/network",
    "/usr/lib/systemd/network",
    "/lib/systemd/network",
)
NM_DIRS = (
    "/etc/NetworkManager/system-connections",
    "/run/NetworkManager/system-connections",
    "/usr/lib/NetworkManager/system-connections",
)
IFCFG_DIR = "/etc/sysconfig/network-scripts"
IFUPDOWN_FILE = "/etc/network/interfaces"
IFUPDOWN_DIR = "/etc/network/interfaces.d"
RUNTIME_PREFIX = "/run/"  # emptied at every boot
OUTPUT_CAP = 65536  # bytes of configuration text the probe ships per host, at most

# (kind, directory or file, name prefix, name suffix), in priority order within a kind.
SOURCES: tuple[tuple[str, str, str, str], ...] = (
    *(("udev", d, "", ".rules") for d in UDEV_DIRS),
    *(("link", d, "", ".link") for d in LINK_DIRS),
    *(("nm", d, "", "") for d in NM_DIRS),
    ("ifcfg", IFCFG_DIR, "ifcfg-", ""),
    ("ifupdown", IFUPDOWN_FILE, "", ""),
    ("ifupdown", IFUPDOWN_DIR, "", ""),
)

# One awk run reads every file the sh part of the probe listed (pairs of KIND PATH; an
# unreadable directory comes as xKIND), and prints only what can matter: udev rule files
# that name ethtool outside a comment (or share a name with another, which may mask it),
# every .link file, and of ifcfg, keyfile and ifupdown files only the lines the parsers
# read (no wifi or 802.1x secrets leave the host). Each line is "l<TAB>N<TAB>TEXT": a
# file's text can never pass for a protocol line. Output is capped at OUTPUT_CAP bytes.
AWK_PROGRAM = r"""
function put(s) {
  if (out > cap) return
  out += length(s) + 1
  if (out > cap) { print "truncated"; return }
  print s
}
function base(p) { sub(/.*\//, "", p); return p }
function keep(k, l) {
  if (k == "udev" || k == "link") return 1
  if (k == "ifcfg") return l ~ /^[ \t]*(export[ \t]+)?(DEVICE|ETHTOOL_OPTS|ONBOOT)=/
  if (k == "nm") return l ~ /^[ \t]*\[/ || l ~ /^[ \t]*(id|uuid|type|interface-name|autoconnect|autoconnect-priority|mac-address|feature-sg)[ \t]*=/
  if (l ~ /^[ \t]*(iface|auto|allow-[^ \t]*|mapping|source|source-directory|source-dir|no-auto-down|no-scripts|rename)([ \t]|$)/) return 1
  if (l ~ /^[ \t]*offload-/) return 1
  return l ~ /^[ \t]*(pre-up|up|post-up)[ \t]/ && index(l, "ethtool")
}
BEGIN {
  cap = CAP + 0; out = 0; ver = 0
  for (i = 1; i + 1 < ARGC; i += 2) if (ARGV[i] == "udev") seen[base(ARGV[i + 1])]++
  for (i = 1; i + 1 < ARGC; i += 2) {
    k = ARGV[i]; p = ARGV[i + 1]
    if (index(p, "\n")) { put("unsafe\t" k); continue }
    if (substr(k, 1, 1) == "x") { put("unreadable\t" substr(k, 2) "\t" p); continue }
    n = 0; hit = 0; c = 0
    while ((r = (getline l < p)) > 0) {
      c++
      if (l ~ /^[ \t]*([#;]|$)/) continue
      if (!keep(k, l)) continue
      n++; t[n] = c "\t" l
      if (index(l, "ethtool")) hit = 1
      if (k == "link" && l ~ /ScatterGather/) ver = 1
    }
    close(p)
    if (r < 0) { put("unreadable\t" k "\t" p); continue }
    if (k == "udev" && !hit && seen[base(p)] < 2) continue
    put("file\t" k "\t" p)
    if (c == 0) put("masked")
    for (j = 1; j <= n; j++) put("l\t" t[j])
  }
  if (ver) {
    v = ""
    cmd = "udevadm --version 2>/dev/null || /bin/udevadm --version 2>/dev/null || /sbin/udevadm --version 2>/dev/null"
    cmd | getline v
    close(cmd)
    put("udevadm\t" v)
  }
  print "end"
  exit
}
"""


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class Setting:
    """One configuration line that turns SG on or off; ``source`` is ``path:line``."""

    on: bool
    source: str

    @property
    def state(self) -> str:
        return "on" if self.on else "off"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one mechanism (or all of them) does to SG at boot: a setting, nothing, or a problem."""

    setting: Setting | None = None
    problem: str | None = None

    @property
    def state(self) -> str | None:
        """``on``, ``off``, ``default`` (nothing touches SG), or None when undetermined."""
        if self.problem is not None:
            return None
        return self.setting.state if self.setting else "default"

    @property
    def source(self) -> str | None:
        return None if self.problem is not None or self.setting is None else self.setting.source

    def describe(self) -> str:
        """One line for a report cell: ``off (path:line)``, ``default``, or ``undetermined: why``."""
        if self.problem is not None:
            return f"undetermined: {self.problem}"
        return f"{self.state} ({self.source})" if self.setting else "default"


def combine(stages: Sequence[Outcome]) -> Outcome:
    """Stages in boot order, later wins: the last one that decides, unless a later one is in doubt.

    >>> on, off = Setting(True, "a:1"), Setting(False, "b:2")
    >>> combine([Outcome(on), Outcome(problem="?"), Outcome(off)]).setting == off
    True
    >>> combine([Outcome(on), Outcome(problem="cannot read x")]).problem
    'cannot read x'
    """
    for stage in reversed(stages):
        if stage.problem is not None or stage.setting is not None:
            return stage
    return Outcome()


def agree(outcomes: Sequence[Outcome], why: str) -> Outcome:
    """Mechanisms of one stage (only one of them runs last, and which is not known): they must agree.

    >>> agree([Outcome(Setting(True, "a:1")), Outcome(Setting(False, "b:2"))], "x").problem
    'a:1 turns it on, b:2 off; x'
    """
    problems = [o.problem for o in outcomes if o.problem is not None]
    if problems:
        return Outcome(problem=problems[0])
    settings = [o.setting for o in outcomes if o.setting is not None]
    if len({s.on for s in settings}) > 1:
        on = next(s for s in settings if s.on)
        off = next(s for s in settings if not s.on)
        return Outcome(problem=f"{on.source} turns it on, {off.source} off; {why}")
    return Outcome(settings[-1]) if settings else Outcome()


# --------------------------------------------------------------------------- the host's side


@dataclasses.dataclass(frozen=True)
class Level:
    """One device of the chain udev walks for KERNELS/SUBSYSTEMS/DRIVERS: the net device, then its parents."""

    kernel: str
    subsystem: str
    driver: str


@dataclasses.dataclass(frozen=True)
class Device:
    """What the rules can match on, as the probe read it. None: not known."""

    name: str
    address: str | None = None
    type: str | None = None  # ARPHRD number, "1" for Ethernet
    mtu: int | None = None
    renamed: bool | None = None  # name_assign_type 4: KERNEL== saw another name at boot
    parents: tuple[Level, ...] = ()
    virtual: bool = False

    @property
    def chain(self) -> tuple[Level, ...]:
        return (Level(self.name, "net", ""), *self.parents)

    @property
    def original_name(self) -> str | None:
        """The name the kernel gave it (KERNEL==, OriginalName=), when the interface was not renamed."""
        return None if self.renamed is not False else self.name

    @property
    def driver(self) -> str | None:
        """The driver bound to its device (``ethtool -i``'s, udev's ID_NET_DRIVER); None when virtual."""
        drivers = [level.driver for level in self.parents if level.driver]
        return drivers[0] if drivers else None


@dataclasses.dataclass(frozen=True)
class ConfFile:
    kind: str
    path: str
    lines: tuple[tuple[int, str], ...]  # (line number, text): only the lines that matter were shipped
    masked: bool = False  # the file is empty (or a link to /dev/null): it masks its name

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def runtime(self) -> bool:
        return self.path.startswith(RUNTIME_PREFIX)


def overridden(files: Sequence[ConfFile], directories: Sequence[str]) -> list[ConfFile]:
    """udev's and systemd's file set: one file per name (the earliest of ``directories`` wins),
    in lexical order of names. Masked files stay in: the caller decides what a mask means."""
    chosen: dict[str, tuple[int, ConfFile]] = {}
    for file in files:
        directory = file.path.rsplit("/", 1)[0]
        rank = directories.index(directory) if directory in directories else len(directories)
        if file.name not in chosen or rank < chosen[file.name][0]:
            chosen[file.name] = (rank, file)
    return [chosen[name][1] for name in sorted(chosen)]


@dataclasses.dataclass(frozen=True)
class BootFiles:
    """The probe's boot section, parsed: the files, the ones it could not read, and any doubt."""

    files: tuple[ConfFile, ...] = ()
    unreadable: tuple[tuple[str, str], ...] = ()  # (kind, path)
    udev_version: int | None = None
    problem: str | None = None
    # Whether any line names SG at all (parse_section sets it): no line, no setting, and
    # every interface is "default" without reading the rules for each of them.
    touches_sg: bool = True

    def of(self, kind: str, runtime: bool = True) -> list[ConfFile]:
        return [f for f in self.files if f.kind == kind and (runtime or not f.runtime)]

    def unread(self, kind: str, runtime: bool = True) -> str | None:
        """A problem naming the first file (or directory) of ``kind`` that could not be read."""
        for k, path in self.unreadable:
            if k == kind and (runtime or not path.startswith(RUNTIME_PREFIX)):
                return f"cannot read {path} (audit as root, or with --sudo)"
        return None


def parse_section(lines: Iterable[str], excerpt: Callable[[str], str]) -> BootFiles:
    """The lines between ``boot_begin`` and its end marker (text, already decoded).

    >>> b = parse_section(["file\\tudev\\t/etc/udev/rules.d/x.rules", "l\\t2\\tKERNEL==\\"e*\\"", "end"], str)
    >>> b.files[0].lines
    ((2, 'KERNEL=="e*"'),)
    """
    files: list[ConfFile] = []
    current: tuple[str, str, list[tuple[int, str]], list[bool]] | None = None
    unreadable: list[tuple[str, str]] = []
    version: int | None = None
    problem: str | None = None
    ended = False

    def close() -> None:
        if current is not None:
            files.append(ConfFile(current[0], current[1], tuple(current[2]), bool(current[3])))

    for raw in lines:
        key, _, rest = raw.partition("\t")
        if ended:
            problem = problem or f"unexpected line after the boot configuration: {excerpt(raw)}"
        elif key == "l" and current is not None:
            number, sep, text = rest.partition("\t")
            if not sep or not number.isdigit():
                problem = problem or f"unexpected boot configuration line: {excerpt(raw)}"
                continue
            current[2].append((int(number), text))
        elif key == "file" and rest.count("\t") >= 1:
            close()
            kind, _, path = rest.partition("\t")
            current = (kind, path, [], [])
        elif key == "masked" and not rest and current is not None and not current[2]:
            current[3].append(True)
        elif key == "unreadable" and rest.count("\t") >= 1:
            kind, _, path = rest.partition("\t")
            unreadable.append((kind, path))
        elif key == "udevadm":
            version = int(rest.split()[0]) if rest.split() and rest.split()[0].isdigit() else None
        elif key == "unsafe":
            problem = problem or "a configuration file name holds a newline"
        elif key == "truncated":
            problem = problem or f"the boot configuration is over {OUTPUT_CAP} bytes: not read whole"
        elif key == "end" and not rest:
            ended = True
        else:
            problem = problem or f"unexpected boot configuration line: {excerpt(raw)}"
    close()
    if not ended:
        problem = problem or "the boot configuration was not read to its end"
    touches = any(names_sg(text) for f in files for _, text in f.lines)
    return BootFiles(tuple(files), tuple(unreadable), version, problem, touches)


# --------------------------------------------------------------------------- ethtool commands

SG_FEATURES = frozenset({"sg", "scatter-gather", "tx-scatter-gather"})  # ethtool's alias, long name, kernel name
# Any way a configuration line can name SG: an ethtool word, ScatterGather=, feature-sg, offload-sg.
SG_WORDS = re.compile(r"(?<![\w-])(?:tx-)?(?:sg|scatter-gather)(?![\w-])|ScatterGather|feature-sg|offload-(?:tx-)?s")
# Every SG_WORDS match holds one of these: looked for first, at C speed (the regex, with its
# lookbehind, is tried at every position of every configuration line).
_SG_HINTS = ("sg", "scatter-gather", "ScatterGather", "offload-")


def names_sg(text: str) -> bool:
    """Whether a configuration line may name SG (SG_WORDS).

    >>> names_sg("ETHTOOL_OPTS='-K eth0 sg off'"), names_sg("NAME=eth0"), names_sg("msg=1")
    (True, False, False)
    """
    return any(hint in text for hint in _SG_HINTS) and SG_WORDS.search(text) is not None


SET_FEATURES = frozenset({"-K", "--features", "--offload"})
SHELLS = frozenset({"sh", "bash", "dash", "ash", "ksh", "zsh", "busybox"})
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "\n", "(", ")"})
_PREFIXES = frozenset({"sudo", "exec", "env", "nice", "command", "-n"})


@dataclasses.dataclass(frozen=True)
class Effect:
    """What one ethtool command does to one interface's SG: None when it does not touch it."""

    on: bool | None = None
    doubt: str | None = None  # the command touches SG, but its target or value is unknown


@functools.lru_cache(maxsize=4096)
def commands_in(text: str) -> tuple[tuple[str, ...], ...] | None:
    """The commands of a command line that may run ethtool (a shell's ``-c`` script included).

    A command whose program is a variable (``$ETHTOOL``) is kept too: it may be ethtool.
    None: the line cannot be parsed.

    >>> commands_in("/bin/sh -c '/sbin/ethtool -K $1 sg off; ip link' -- $name")
    (('/sbin/ethtool', '-K', '$1', 'sg', 'off'),)
    """
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        lexer.commenters = ""
        words = list(lexer)
    except ValueError:
        return None
    found: list[tuple[str, ...]] = []
    command: list[str] = []
    for word in [*words, ";"]:
        if word not in _SEPARATORS:
            command.append(word)
            continue
        while command and command[0] in _PREFIXES:
            command = command[1:]  # sudo ethtool ..., exec ethtool ...
        if command:
            program = command[0].rsplit("/", 1)[-1]
            if program == "ethtool" or "$" in program:
                found.append(tuple(command))
            elif program in SHELLS and "-c" in command[:-1]:
                inner = commands_in(command[command.index("-c") + 1])
                if inner is None:
                    return None
                found.extend(inner)
        command = []
    return tuple(found)


def effect_of(argv: Sequence[str], targets: Callable[[str], bool | None]) -> Effect:
    """What ``ethtool … -K DEV feature on|off …`` does to SG of the interface ``targets`` recognises.

    ``targets(word)`` says whether a device word names this interface (True), another one
    (False), or cannot be known (None, e.g. ``$1``). ethtool applies its arguments in order,
    so the last SG word wins; ``scatter-gather`` is only accepted by ethtool 5.6 and later
    (netlink), an older one refuses the whole command: taken as meant, which fails closed.

    >>> effect_of(["ethtool", "-K", "eth0", "tso", "off", "sg", "off"], lambda w: w == "eth0")
    Effect(on=False, doubt=None)
    >>> effect_of(["ethtool", "-K", "eth1", "sg", "off"], lambda w: w == "eth0")
    Effect(on=None, doubt=None)
    """
    words = list(argv[1:])
    at = next((i for i, w in enumerate(words) if w in SET_FEATURES), None)
    if at is None:
        return Effect()  # -i, -G, -s ...: not a feature change
    device, pairs = (words[at + 1] if len(words) > at + 1 else ""), words[at + 2 :]
    if not any(w in SG_FEATURES for w in pairs[0::2]):
        return Effect()
    if len(pairs) % 2 or any(v not in ("on", "off") for v in pairs[1::2]):
        return Effect(doubt=f"cannot read the ethtool command: {shlex.join(argv)}")
    target = targets(device)
    if target is None:
        return Effect(doubt=f"cannot tell which interface {device!r} is in: {shlex.join(argv)}")
    if not target:
        return Effect()
    values = [v for k, v in zip(pairs[0::2], pairs[1::2]) if k in SG_FEATURES]
    return Effect(on=values[-1] == "on")


def command_effect(text: str, targets: Callable[[str], bool | None]) -> Effect:
    """The net effect on SG of a command line that may run ethtool, several times or through a shell.

    Scripts it calls are not read (a limit the README states).

    >>> command_effect("/sbin/ethtool -K %k tx off rx off sg off gso off", lambda w: w == "%k")
    Effect(on=False, doubt=None)
    """
    commands = commands_in(text)
    if commands is None:
        return Effect(doubt=f"cannot parse the command: {text}") if "ethtool" in text else Effect()
    result = Effect()
    for argv in commands:
        effect = effect_of(argv, targets)
        if effect.doubt is None and effect.on is not None and "$" in argv[0].rsplit("/", 1)[-1]:
            effect = Effect(doubt=f"cannot tell what program {argv[0]!r} is in: {shlex.join(argv)}")
        if effect.doubt is not None:
            return effect
        if effect.on is not None:
            result = effect
    return result


def name_matcher(name: str, aliases: Iterable[str]) -> Callable[[str], bool | None]:
    """``targets`` for :func:`effect_of`: the interface's name or an alias for it; any other ``$`` word is unknown."""
    known = set(aliases)

    def targets(word: str) -> bool | None:
        if word == name or word in known:
            return True
        if "$" in word or "%" in word or "`" in word:
            return None
        return False

    return targets


def glob_any(patterns: Iterable[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


# --------------------------------------------------------------------------- the whole host


def evaluate(files: BootFiles, device: Device) -> Outcome:
    """SG of ``device`` at the next boot. /run does not survive a reboot: it must not decide."""
    if files.problem is not None:
        return Outcome(problem=files.problem)
    if not files.touches_sg and not files.unreadable:
        return Outcome()  # most hosts: nothing names SG
    now = _evaluate(files, device, runtime=True)
    if not any(f.runtime for f in files.files) and not any(p.startswith(RUNTIME_PREFIX) for _, p in files.unreadable):
        return now
    persistent = _evaluate(files, device, runtime=False)
    if now == persistent:
        return now
    if now.state == persistent.state and now.problem is None:
        return persistent
    runtime = sorted({f.path for f in files.files if f.runtime})
    shown = ", ".join(runtime[:2]) if runtime else "/run"
    return Outcome(
        problem=f"runtime configuration ({shown}) decides it now ({now.describe()}), but /run is emptied at "
        f"boot; without it: {persistent.describe()}"
    )


def _evaluate(files: BootFiles, device: Device, runtime: bool) -> Outcome:
    from compliance import boot_link, boot_netcfg, boot_udev

    def guarded(kind: str, run: Callable[[], Outcome]) -> Outcome:
        unread = files.unread(kind, runtime)
        return Outcome(problem=unread) if unread else run()

    link = guarded("link", lambda: boot_link.evaluate(files.of("link", runtime), device, files.udev_version))
    udev = guarded("udev", lambda: boot_udev.evaluate(files.of("udev", runtime), device))
    managers = [
        guarded("ifupdown", lambda: boot_netcfg.ifupdown(files.of("ifupdown", runtime), device)),
        guarded("ifcfg", lambda: boot_netcfg.ifcfg(files.of("ifcfg", runtime), device)),
        guarded("nm", lambda: boot_netcfg.networkmanager(files.of("nm", runtime), device)),
    ]
    up = agree(managers, "which one applies last depends on the service that brings the interface up")
    return combine([link, udev, up])
