"""summary.html at fleet scale: how long it takes to render (Jinja2) and to load in headless Chromium,
against pytest-html's report.html on the same number of cases.

    python -m bench.summary_page --cases 10000 --repeat 3

Chromium's load time is the wall time of ``chromium --dump-dom URL`` (which returns once the page
has loaded and its scripts have run) minus that of a one-line page: Chromium's own start-up is
left out. summary.html is served with Jenkins' default CSP, report.html without one (it needs its
scripts). Everything is served from 127.0.0.1; nothing else is contacted. Needs /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from compliance import report, summary_html
from compliance.row import Row

CSP = "sandbox; default-src 'none'; img-src 'self'; style-src 'self';"
CHROMIUM = "/usr/bin/chromium"
VERDICTS = ("sg-on", "jumbo-mtu", "susceptible", "not-applicable", "error")


def fleet(cases: int) -> dict[str, Any]:
    rows = []
    for i in range(cases):
        host, iface = f"10.{i // 4 // 65536 % 256}.{i // 4 // 256 % 256}.{i // 4 % 256}", f"eth{i % 4}"
        verdict = VERDICTS[i % 7 % len(VERDICTS)]
        rows.append(
            Row(
                host,
                iface,
                driver="vif",
                mtu=9001 if verdict == "jumbo-mtu" else 1500,
                scatter_gather="on" if verdict == "sg-on" else "off",
                verdict=verdict,
                message=f"{verdict} on {iface}",
                fixes=(f"sudo ethtool -K {iface} sg on", f"sudo ip link set dev {iface} mtu 9001")
                if verdict == "susceptible"
                else (),
                kernel="4.14.355-1.el7.x86_64",
            )
        )
    return report.summary(rows, scope="xen", target="remote", complete=True)


def serve(directory: Path, csp: str | None) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def end_headers(self) -> None:
            if csp:
                self.send_header("Content-Security-Policy", csp)
            super().end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def load_seconds(url: str, profile: Path) -> float:
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    argv += ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server"]
    argv += [f"--user-data-dir={profile}", "--dump-dom", url]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return elapsed


def pytest_html_report(cases: int, where: Path) -> Path:
    test = where / "test_many.py"
    test.write_text(f"import pytest\n\n@pytest.mark.parametrize('i', range({cases}))\ndef test_case(i):\n    pass\n")
    out = where / "report.html"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:compliance.plugin", "-p", "no:cacheprovider"]
    argv += ["-p", "no:randomly", f"--html={out}", "--self-contained-html", str(test)]
    subprocess.run(argv, cwd=where, check=True, capture_output=True, timeout=900)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.summary_page")
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = fleet(args.cases)
    renders = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        page = summary_html.render(data)
        renders.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        site = root / "summary"
        assert summary_html.write(site / "summary.html", data) == []
        (site / "blank.html").write_text("<!DOCTYPE html><title>x</title>")
        other = root / "pytest-html"
        other.mkdir()
        html_report = pytest_html_report(args.cases, other)
        (other / "blank.html").write_text("<!DOCTYPE html><title>x</title>")
        ours, theirs = serve(site, CSP), serve(other, None)
        try:
            url = f"http://127.0.0.1:{ours.server_address[1]}"
            url2 = f"http://127.0.0.1:{theirs.server_address[1]}"
            times: dict[str, list[float]] = {"blank": [], "summary.html": [], "report.html": []}
            for k in range(args.repeat):  # round-robin, each with a fresh profile
                times["blank"].append(load_seconds(f"{url}/blank.html", root / f"p{k}a"))
                times["summary.html"].append(load_seconds(f"{url}/summary.html", root / f"p{k}b"))
                times["report.html"].append(load_seconds(f"{url2}/report.html", root / f"p{k}c"))
        finally:
            ours.shutdown()
            theirs.shutdown()
        blank = statistics.median(times["blank"])
        print(f"{args.cases} cases; medians of {args.repeat}")
        print(f"summary.html: {len(page) / 1e6:.1f} MB, Jinja2 render {statistics.median(renders):.2f} s")
        print(f"report.html (pytest-html): {html_report.stat().st_size / 1e6:.1f} MB")
        print(f"chromium start-up (one-line page): {blank:.2f} s")
        for name in ("summary.html", "report.html"):
            print(f"{name}: load in chromium {statistics.median(times[name]) - blank:.2f} s beyond start-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
