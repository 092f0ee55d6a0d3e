"""summary.html in Debian's headless Chromium, served as Jenkins serves archived HTML: under its CSP.

A tiny HTTP server on 127.0.0.1 serves the page and its stylesheet with Jenkins' default
``Content-Security-Policy``; Chromium dumps the DOM it rendered and takes a screenshot. Nothing
but 127.0.0.1 is contacted (no proxy, no background networking, no component updates).
"""

from __future__ import annotations

import functools
import http.server
import os
import struct
import subprocess
import threading
import zlib
from pathlib import Path

import pytest

from compliance import summary_html
from tests.test_summary_html import Structure, hostile_summary

JENKINS_CSP = "sandbox; default-src 'none'; img-src 'self'; style-src 'self';"
CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK) and os.geteuid() != 0,
    reason=f"{CHROMIUM} is not installed, and only root can install it (`python -m tests.system_packages`)",
)


@pytest.fixture(autouse=True)
def installed_chromium():
    if not os.access(CHROMIUM, os.X_OK):  # root: tests.system_packages (run first by tox) installs it
        pytest.fail(f"{CHROMIUM} is missing: run `python -m tests.system_packages` as root (Debian package chromium)")


class CSPHandler(http.server.SimpleHTTPRequestHandler):
    requested: list[str]

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", JENKINS_CSP)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # http.server's own signature
        self.requested.append(self.path)


@pytest.fixture
def served(tmp_path):
    """The page and its CSS written by the audit's own writer, served on 127.0.0.1; yields (url, requested paths)."""
    site = tmp_path / "site"
    data = hostile_summary()
    assert summary_html.write(site / "summary.html", data) == []
    requested: list[str] = []
    handler = type("Handler", (CSPHandler,), {"requested": requested})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/summary.html", requested, data
    finally:
        server.shutdown()
        server.server_close()


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",  # 127.0.0.1 directly, whatever the environment says
        f"--user-data-dir={profile}",
        *args,
    ]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["HOME"] = str(tmp_path)  # no dotfiles of the caller's
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


def test_the_page_renders_under_jenkins_csp(served, tmp_path):
    url, requested, data = served
    proc = chromium(tmp_path, "--dump-dom", url)
    assert proc.returncode == 0, proc.stderr
    dom = proc.stdout
    assert "<h3>&lt;b&gt;h$(x)\\x1b[2J\\u202eexe.txt</h3>" in dom
    assert "<b>" not in dom
    for verdict, count in data["counts"].items():
        assert f'<td id="count-{verdict}">{count}</td>' in dom
    page = Structure(dom)
    assert [h["kind"] for h in page.hosts] == ["failing", "failing", "passing", "passing"]
    assert sum(len(h["rows"]) for h in page.hosts) == len(data["results"])
    assert [href for href, _ in page.index] == [f"#{h['id']}" for h in page.hosts[:2]]
    assert "/summary.html" in requested and "/summary.css" in requested  # the stylesheet is loaded, not blocked


def png_pixels(path: Path) -> set[tuple[int, int, int]]:
    """The distinct RGB colours of an 8-bit RGB or RGBA, non-interlaced PNG (Chromium's screenshots)."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos : pos + 4])
        kind, body = raw[pos + 4 : pos + 8], raw[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    data = zlib.decompress(idat)
    previous = bytearray(stride)
    colours: set[tuple[int, int, int]] = set()
    for y in range(height):
        kind = data[y * (stride + 1)]
        line = bytearray(data[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        colours.update(tuple(line[x : x + 3]) for x in range(0, stride, bpp))  # type: ignore[misc]
        previous = line
    return colours


def test_a_screenshot_shows_the_stylesheet_applied(served, tmp_path):
    url, requested, _ = served
    shot = tmp_path / "summary.png"
    proc = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,800", url)
    assert proc.returncode == 0, proc.stderr
    assert shot.is_file() and shot.stat().st_size > 0
    colours = png_pixels(shot)
    # summary.css: a failing host's border (#c33) and a failing row's background (#fdd)
    assert (0xCC, 0x33, 0x33) in colours and (0xFF, 0xDD, 0xDD) in colours
    assert "/summary.css" in requested
