"""A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``: no package needed.

Chromium reads commands from file descriptor 3 and writes replies and events to 4, each a JSON
message ended by a NUL byte. No port is opened, so nothing but this process can drive the
browser. Used by bench/summary_page.py to time a page in Debian's headless ``chromium``.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-proxy-server",  # 127.0.0.1 directly, whatever the environment says
)


class CDPError(RuntimeError):
    pass


def high_fd(fd: int) -> int:
    """``fd`` moved to a number above 4, so that the shell's redirections to 3 and 4 cannot clobber it."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Browser:
    """One headless Chromium with a fresh profile, driven through the pipe; a context manager."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 1024) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        to_browser_r, from_browser_w = (high_fd(fd) for fd in (to_browser_r, from_browser_w))
        # Chromium expects the pipe's ends on fds 3 and 4: bash moves them there (dash knows only fds 0-9) (no preexec_fn,
        # which is unsafe in a process with threads, as the bench's HTTP servers are).
        wire = f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        argv = [
            "/bin/bash",
            "-c",
            wire,
            "bash",
            CHROMIUM,
            *FLAGS,
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
        ]
        argv += [f"--window-size={width},{height}", "about:blank"]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["HOME"] = str(profile)
        self.proc = subprocess.Popen(
            argv, pass_fds=(to_browser_r, from_browser_w), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (CDPError, OSError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("no message from chromium in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise CDPError("chromium closed its pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 300
    ) -> Any:
        """Send a command and return its result; events read meanwhile are kept in ``events``."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 300) -> dict[str, Any]:
        """The first event (kept or new) that matches; the matching one and those before it are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if predicate(event):
                    del self.events[: i + 1]
                    return event
            self.events.append(self._read(deadline))

    def until(self, method: str, timeout: float = 300) -> list[dict[str, Any]]:
        """Every event (kept or new) up to and including the first ``method``; all of them are dropped."""
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while True:
            while self.events:
                event = self.events.pop(0)
                seen.append(event)
                if event.get("method") == method:
                    return seen
            self.events.append(self._read(deadline))

    def page_session(self) -> str:
        """A session attached to the browser's one page (the tab opened on about:blank)."""
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        session: str = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        return session

    def evaluate(self, session: str, expression: str, timeout: float = 300) -> Any:
        """The value of a JavaScript expression in the page (promises awaited); the bench's own code, not the page's."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=session,
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise CDPError(f"evaluate: {result['exceptionDetails']}")
        return result["result"].get("value")
