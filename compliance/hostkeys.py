"""OpenSSH options that could weaken the host-key policy, checked before any host is contacted.

For ``ssh://`` hosts (and inventory hosts reached with OpenSSH), the policy's own options come
first on the command line (``-o StrictHostKeyChecking=...``, ``-o CheckHostIP=no``, and
``-o UserKnownHostsFile=...`` when ``--ssh-known-hosts`` is given): OpenSSH keeps an option's
first value, and ``-o`` beats any config file, so those cannot be changed by what follows.
What the suite does not set itself is read here, in OpenSSH's order (``-o`` options in
command-line order, then the config file: the last ``-F``, else ``~/.ssh/config``), and the
value in force is refused when it would trust keys the policy does not name:

- ``UserKnownHostsFile /dev/null`` (or ``none``): no known_hosts file at all; under
  ``accept-new`` any key, a changed one too, would be accepted.
- ``GlobalKnownHostsFile`` naming any file: keys from outside the policy's files.
- ``KnownHostsCommand`` (anything but ``none``): keys printed by a command.
- Under ``accept-new``, ``UserKnownHostsFile`` (other than the policy's own) and
  ``HostKeyAlias``: a key looked up where the policy does not look is "new", so a changed
  key would be recorded and accepted.

Each refusal is a :class:`UsageProblem` of one line naming where the option came from.
paramiko reads none of these (only ssh_config's ``UserKnownHostsFile``, as further
known_hosts files), so paramiko hosts are not checked.

>>> check("10.0.0.5", [("--ssh-extra-args", "-o StrictHostKeyChecking=no")], None, None, "strict")
>>> check("10.0.0.5", [("--ssh-extra-args", "-oKnownHostsCommand=/bin/cat")], None, None, "strict")
Traceback (most recent call last):
...
compliance.options.UsageProblem: KnownHostsCommand=/bin/cat in --ssh-extra-args would trust host keys that a command prints; name known_hosts files with --ssh-known-hosts instead
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import os
import re
import shlex
from collections.abc import Iterator, Sequence

from compliance.options import UsageProblem

# OpenSSH's getopt string (ssh.c, 9.x): a letter followed by ':' takes an argument.
_SSH_GETOPT = "1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:P:Q:R:S:TVw:W:XYy"
_TAKES_ARG = {c for c, nxt in zip(_SSH_GETOPT, _SSH_GETOPT[1:] + " ") if c != ":" and nxt == ":"}
USER_CONFIG = "~/.ssh/config"
WATCHED = ("userknownhostsfile", "globalknownhostsfile", "knownhostscommand", "hostkeyalias")
NO_FILE = ("/dev/null", "none")
_KEYWORD = re.compile(r"\s*([^\s=]+)\s*(?:=\s*)?(.*?)\s*$")
_MAX_INCLUDE_DEPTH = 16


@dataclasses.dataclass(frozen=True)
class Setting:
    """One option as OpenSSH would read it: its keyword (as written), value and origin."""

    keyword: str
    value: str
    where: str

    @property
    def key(self) -> str:
        return self.keyword.lower()


def _split_option(text: str) -> tuple[str, str] | None:
    match = _KEYWORD.match(text)
    if not match or not match.group(2):
        return None
    return match.group(1), match.group(2)


def _words(value: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError:
        return value.split()


def parse_args(args: str, where: str) -> tuple[list[Setting], list[str]]:
    """The ``-o`` settings (in order) and ``-F`` files of an ssh argument string; ``-J HOPS`` is
    read as the setting ``ProxyJump`` it stands for.

    >>> parse_args("-C -o 'UserKnownHostsFile /dev/null' -F cfg -oCheckHostIP=no", "x")[1]
    ['cfg']
    >>> parse_args("-CJ root@bastion", "x")[0]
    [Setting(keyword='ProxyJump', value='root@bastion', where='x')]
    """
    try:
        tokens = shlex.split(args)
    except ValueError as exc:
        raise UsageProblem(f"the ssh arguments in {where} cannot be read ({exc}): {args!r}") from None
    settings: list[Setting] = []
    files: list[str] = []
    tokens.reverse()
    while tokens:
        token = tokens.pop()
        if not token.startswith("-") or token in ("-", "--"):
            continue
        for index, letter in enumerate(token[1:], 1):
            if letter not in _TAKES_ARG:
                continue
            value = token[index + 1 :] or (tokens.pop() if tokens else "")
            if letter == "o":
                option = _split_option(value)
                if option:
                    settings.append(Setting(option[0], option[1], where))
            elif letter == "F":
                files.append(os.path.expanduser(value))
            elif letter == "J":
                settings.append(Setting("ProxyJump", value, where))
            break
    return settings, files


def without_jump(args: str) -> str:
    """``args`` without its ``-J HOPS`` (the suite then routes through the bastion itself; OpenSSH
    refuses ``-J`` after a ProxyCommand). Arguments without ``-J`` come back unchanged.

    >>> without_jump("-C -J root@b1,root@b2 -o Foo=bar")
    '-C -o Foo=bar'
    >>> without_jump("-CJroot@b1 -o 'ProxyCommand ssh -W %h:%p b' -v")
    "-C -o 'ProxyCommand ssh -W %h:%p b' -v"
    """
    try:
        tokens = shlex.split(args)
    except ValueError:
        return args  # refused with its own words by parse_args
    kept: list[str] = []
    removed = False
    tokens.reverse()
    while tokens:
        token = tokens.pop()
        if token.startswith("-") and token not in ("-", "--"):
            for index, letter in enumerate(token[1:], 1):
                if letter not in _TAKES_ARG:
                    continue
                value = [] if index + 1 < len(token) or not tokens else [tokens.pop()]
                if letter == "J":
                    removed, token, value = True, token[:index], []
                kept += ([token] if token != "-" else []) + value
                break
            else:
                kept.append(token)
            continue
        kept.append(token)
    return shlex.join(kept) if removed else args


def _host_matches(patterns: Sequence[str], host: str) -> bool:
    """ssh_config's Host line: any pattern matches and no negated one does."""
    matched = False
    for pattern in patterns:
        for one in pattern.split(","):
            negated = one.startswith("!")
            if fnmatch.fnmatchcase(host.lower(), one.lstrip("!").lower()):
                if negated:
                    return False
                matched = True
    return matched


def config_settings(
    path: str, host: str, label: str, note: str = "", depth: int = 0, watched: Sequence[str] = WATCHED
) -> Iterator[Setting]:
    """The ``watched`` options a config file gives ``host``, in file order, each with its file and line.

    ``Host`` blocks are matched against the host name; a ``Match`` block is assumed to apply
    (its criteria are not evaluated here: the check errs towards refusing). ``Include``d files
    are read in place (relative paths from ``~/.ssh``, as OpenSSH reads a user's config).
    """
    try:
        with open(os.path.expanduser(path), errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    active = True
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        option = _split_option(line)
        if option is None:
            continue
        keyword, value = option
        key = keyword.lower()
        if key == "host":
            active = _host_matches(_words(value), host)
        elif key == "match":
            active = True
        elif not active:
            continue
        elif key == "include" and depth < _MAX_INCLUDE_DEPTH:
            for pattern in _words(value):
                full = os.path.expanduser(pattern)
                if not os.path.isabs(full):
                    full = os.path.join(os.path.expanduser("~/.ssh"), full)
                for included in sorted(glob.glob(full)):
                    yield from config_settings(included, host, included, f" (included by {label})", depth + 1, watched)
        elif key in watched:
            yield Setting(keyword, value, f"{label} line {number}{note}")


def _refusal(setting: Setting, host_key_policy: str) -> str | None:
    words = _words(setting.value)
    shown = f"{setting.keyword}={setting.value} in {setting.where}"
    if host_key_policy == "accept-new" and setting.key in ("userknownhostsfile", "hostkeyalias"):
        # accept-new records a key it cannot find: looked up elsewhere, a changed key is "new".
        return (
            f"{shown} would make accept-new look the host's key up where the policy does not, and take a "
            "changed key for a new one; name known_hosts files with --ssh-known-hosts instead"
        )
    if setting.key == "userknownhostsfile" and any(w.lower() in NO_FILE for w in words):
        return (
            f"{shown} would check host keys against no known_hosts file (under accept-new, any key would "
            "be accepted); remove it, or name known_hosts files with --ssh-known-hosts, which then take precedence"
        )
    if setting.key == "globalknownhostsfile" and any(w.lower() not in NO_FILE for w in words):
        return (
            f"{shown} would trust host keys from a file the host-key policy does not name; "
            "name known_hosts files with --ssh-known-hosts instead"
        )
    if setting.key == "knownhostscommand" and setting.value.lower() != "none":
        return f"{shown} would trust host keys that a command prints; name known_hosts files with --ssh-known-hosts instead"
    return None


def check(
    host: str,
    args: Sequence[tuple[str, str]],
    ssh_config: str | None,
    known_hosts: str | None,
    host_key_policy: str,
) -> None:
    """Refuse (UsageProblem) an option in force for ``host`` that would weaken the policy.

    ``args`` are the ssh argument strings after the policy's own options, each with where it
    came from, in command-line order; ``ssh_config`` is ``--ssh-config`` (OpenSSH's last ``-F``).
    """
    if host_key_policy == "insecure":
        return  # any key is accepted already, and every report says so
    settings: list[Setting] = []
    files: list[tuple[str, str, str]] = []
    for where, text in args:
        found, named = parse_args(text or "", where)
        settings += found
        files += [(f, f, f" (-F in {where})") for f in named]
    if ssh_config:
        files.append((ssh_config, f"--ssh-config {ssh_config}", ""))
    path, label, note = files[-1] if files else (os.path.expanduser(USER_CONFIG), USER_CONFIG, "")
    settings += config_settings(path, host, label, note)
    # The suite's own options come first: these keywords are its own, whatever follows.
    own = {"userknownhostsfile"} if known_hosts else set()
    seen: set[str] = set()
    for setting in settings:
        if setting.key not in WATCHED or setting.key in seen:
            continue
        seen.add(setting.key)  # OpenSSH keeps the first value
        if setting.key in own:
            continue
        refusal = _refusal(setting, host_key_policy)
        if refusal:
            raise UsageProblem(refusal)
