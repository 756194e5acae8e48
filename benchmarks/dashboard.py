"""How soon a 10,000-trial sweep's dashboard is usable, in Debian's Chromium under Playwright.

    python benchmarks/dashboard.py                # 10,000 trials
    python benchmarks/dashboard.py --trials 2000
    python benchmarks/dashboard.py --screenshots docs   # docs/dashboard.png and docs/report.png (300 trials)

The sweep's log is written with the real event types into the real SQLite store (10,000 ended trials, every
seventh failed: about 90,000 events), under a definition that allows one trial more; then ``serve`` resumes it
(the page is a live sweep's, its last trial holding at a gate) and the browser opens the page:

- cold: a fresh browser context (nothing cached) against a serve that has not folded the trials yet;
- warm: the same page reloaded (plotly.js cached, the server's trial book current).

Two moments, in milliseconds from the start of navigation (``performance.now()``): the table usable (the first
page of trials drawn in it; the page answers clicks from then on, between pages) and every chart drawn with every
trial (``body[data-ready]``: the page is interactive and complete). Then: a sort of the 10,000-row table, and the
time from a trial's completion on disk to its point in the optimization history. Also the offline report of the
same sweep: its size, how long ``report`` takes and how soon the file has every chart drawn.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.dashboard_support import CHROMIUM, CHROMIUM_ARGS, write_long_sweep  # noqa: E402

NAME = "bench"


def wait_for(cond, what: str, deadline: float = 120.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if value := cond():
            return value
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def load(page, url: str) -> dict[str, float]:
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=120_000)
    wall = (time.perf_counter() - start) * 1000
    timings = page.evaluate(
        """() => Object.fromEntries(performance.getEntriesByType('resource')
              .filter(e => e.name.includes('plotly') || e.name.includes('trials?offset=0'))
              .map(e => [e.name.includes('plotly') ? 'plotly.js loaded' : 'first page of trials', e.responseEnd]))"""
    )
    drawn = {
        k if "navigation" in k else f"draw {k} (ms)": v
        for k, v in page.evaluate("window.sweepDashboard.timings").items()
    }
    return {
        "every chart drawn (ms from navigation)": float(page.evaluate("document.body.dataset.readyMs")),
        "wall (ms, goto to ready)": wall,
        **timings,
        **drawn,
    }


@contextlib.contextmanager
def served(root: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """``serve`` on the sweep under ``root`` and its address; at the end it is stopped and ``root`` removed."""
    serve = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve", "--sweep", NAME, "--log-format", "json"],
        cwd=root,
        env=env(),
        stdout=open(root / "serve.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        endpoint = root / "train_dir" / NAME / "endpoint.json"
        wait_for(endpoint.exists, "endpoint.json")
        yield serve, json.loads(endpoint.read_text())["url"]
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def write_report(root: Path) -> float:
    """``report`` of the sweep into ``root/report.html``; returns the seconds it took."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "orchestrator", "report", "--sweep", NAME, "--out", "report.html"],
        cwd=root,
        env=env(),
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def screenshots(out: Path) -> None:
    """The dashboard of a 300-trial sweep with three trials running, and the report of it once they finished."""
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="dashboard_shots_"))
    write_long_sweep(root, NAME, 300, extra_trials=3)
    with served(root) as (serve, url):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1900})  # the charts and the table's top
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=120_000)
            page.wait_for_function(
                "() => document.getElementById('curves').data.filter(t => t.x.length >= 6).length === 3",
                timeout=120_000,
            )
            page.wait_for_timeout(1500)  # the last throttled redraw
            page.screenshot(path=str(out / "dashboard.png"))
            for n in range(301, 304):
                (root / "gates" / f"{NAME}_trial_{n:04d}").touch()
            serve.wait(timeout=120)
            write_report(root)
            page.route("http*://**", lambda route: route.abort())
            page.goto((root / "report.html").as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=120_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "report.png"))
            browser.close()
    print(f"wrote {out / 'dashboard.png'} and {out / 'report.png'}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--screenshots", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    if args.screenshots:
        return screenshots(args.screenshots)
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="dashboard_bench_"))
    t0 = time.perf_counter()
    write_long_sweep(root, NAME, args.trials)
    print(f"log of {args.trials} trials written in {time.perf_counter() - t0:.1f}s")
    results: dict[str, dict[str, float]] = {}
    with served(root) as (serve, url), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        results["cold"] = load(page, url)
        results["warm"] = load(page, url)
        results["warm again"] = load(page, url)
        sort_ms = page.evaluate(
            """() => { const th = [...document.querySelectorAll('#trials th')].find(t => t.textContent === 'score');
                       const t = performance.now(); th.click(); return performance.now() - t; }"""
        )
        results["interaction"] = {"sort the table by score (ms)": sort_ms}
        before = page.evaluate("document.getElementById('history').data[0].x.length")
        (root / "gates" / f"{NAME}_trial_{args.trials + 1:04d}").touch()
        t = time.perf_counter()
        page.wait_for_function(
            f"() => document.getElementById('history').data[0].x.length === {before + 1}", timeout=120_000
        )
        results["interaction"]["gate opened to the trial's point drawn (ms, includes its eval job)"] = (
            time.perf_counter() - t
        ) * 1000
        serve.wait(timeout=120)

        report_s = write_report(root)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.route("http*://**", lambda route: route.abort())
        results["report"] = {
            "report command (s)": report_s,
            "size (MB)": (root / "report.html").stat().st_size / 2**20,
            **load(page, (root / "report.html").as_uri()),
        }
        browser.close()
    print(f"\n{args.trials:,} trials, Chromium {CHROMIUM}, {os.cpu_count()} cores")
    for part, numbers in results.items():
        for what, value in numbers.items():
            print(f"  {part:<12} {what:<70} {value:10.1f}")


if __name__ == "__main__":
    main()
