"""The dashboard, the offline report and the export, with real sweeps (serve as a subprocess, real jobs, the real
SQLite log) and a real browser: Playwright driving Debian's Chromium (a listed prerequisite, never downloaded).

Every wait is on a condition in the page or on disk, bounded by a generous deadline; nothing here measures speed
(benchmarks/dashboard.py does).
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator import events as ev
from stores.sqlite import SQLiteStore
from tests.conftest import serve_env
from tests.dashboard_support import CHROMIUM, CHROMIUM_ARGS, write_gated_sweep, write_long_sweep
from tests.test_attach import wait_for

PY = sys.executable
DEADLINE = 60.0
CHARTS = ("history", "pareto", "importance", "parcoords", "curves")


class LiveSweep:
    """A gated sweep under ``root``, served by a real ``serve`` process."""

    def __init__(self, root: Path, name: str = "dash"):
        self.root, self.name = root, name
        self.dir = root / "train_dir" / name
        self.procs: list[subprocess.Popen] = []

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        cmd = [PY, "-m", "orchestrator", *args, "--sweep", self.name]
        return subprocess.run(cmd, cwd=self.root, env=serve_env(**env), capture_output=True, text=True, timeout=120)

    def serve(self, *extra: str, **env: str) -> subprocess.Popen:
        log = open(self.root / "serve.log", "w")
        cmd = [PY, "-m", "orchestrator", "serve", "--sweep", self.name, *extra, "--log-format", "human"]
        proc = subprocess.Popen(
            cmd, cwd=self.root, env=serve_env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def url(self) -> str:
        path = self.dir / "endpoint.json"
        wait_for(path.exists, "endpoint.json")
        return json.loads(path.read_text())["url"]

    def open_gate(self, trial: int) -> None:
        (self.root / "gates" / f"{self.name}_trial_{trial:04d}").touch()

    def finish(self, proc: subprocess.Popen, trials: int) -> int:
        for n in range(1, trials + 1):
            self.open_gate(n)
        return proc.wait(timeout=DEADLINE)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        gates = self.root / "gates"
        if gates.is_dir():
            (gates / "_all").touch()  # the jobs serve left running (they outlive it by design) end too
        log = self.root / "serve.log"
        if log.exists():
            print(log.read_text()[-3000:])  # shown when a test fails


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveSweep]:
    sweep = LiveSweep(tmp_path)
    yield sweep
    sweep.cleanup()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (README.md, prerequisites)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}"


def points(page: Any) -> dict[str, list[int]]:
    """Each chart's traces and how many points each holds (parallel coordinates: lines)."""
    return page.evaluate(
        """ids => Object.fromEntries(ids.map(id => [id, (document.getElementById(id).data || []).map(t =>
              t.type === 'parcoords' ? t.dimensions[0].values.length : t.x.length)]))""",
        list(CHARTS),
    )


def table_rows(page: Any) -> list[list[str]]:
    return page.evaluate(
        "() => [...document.querySelectorAll('#trials tbody tr')].map(tr => [...tr.cells].map(td => td.textContent))"
    )


def ready(page: Any) -> None:
    page.wait_for_selector("body[data-ready='1']", timeout=DEADLINE * 1000)


# -- the live page -------------------------------------------------------------------------------------------
def test_live_page_draws_every_chart_and_follows_the_sweep_without_a_reload(live: LiveSweep, page: Any) -> None:
    write_gated_sweep(live.root, trials=4, parallel=2)
    proc = live.serve("--config", "sweep.toml")
    url = live.url()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url.removeprefix(url).split("?")[0]))
    page.goto(url)
    ready(page)
    page.evaluate("window.sameDocument = true")  # gone if the page reloaded

    # Two trials train at once; their progress lines draw one learning curve each, growing live.
    page.wait_for_function(
        "() => { const d = document.getElementById('curves').data;"
        " return d.length === 2 && d.every(t => t.x.length >= 2) }",
        timeout=DEADLINE * 1000,
    )
    assert points(page)["history"] == [0, 0]

    live.open_gate(1)  # trial 1 completes
    page.wait_for_function("() => document.getElementById('history').data[0].x.length === 1", timeout=DEADLINE * 1000)
    assert page.evaluate("window.sameDocument") is True
    rows = {r[0]: r for r in table_rows(page)}
    assert rows["trial_0001"][1] == "completed"

    assert live.finish(proc, 4) == 0
    page.wait_for_function(
        "() => document.getElementById('headline').textContent.startsWith('finished')", timeout=DEADLINE * 1000
    )
    page.wait_for_function("() => document.getElementById('history').data[0].x.length === 4", timeout=DEADLINE * 1000)
    assert page.evaluate("window.sameDocument") is True
    drawn = points(page)
    completed = _completed(live.dir / "events.db")
    assert drawn["history"][0] == 4  # every completed trial
    best_line = page.evaluate("(({x, y}) => x.map((t, i) => [t, y[i]]))(document.getElementById('history').data[1])")
    assert best_line == _best_so_far_corners(completed)
    assert drawn["pareto"] == [4, len(_pareto_front(completed))]
    assert drawn["importance"] == [2]  # one bar per parameter
    assert drawn["parcoords"] == [4]
    assert drawn["curves"] == []  # nothing runs any more
    # What the page asked for: itself, its files, trials, and the event stream (which told it when to ask).
    assert set(requests) == {
        "/",
        "/static/dashboard.css",
        "/static/plotly.min.js",
        "/static/dashboard.js",
        "/trials",
        "/events",
    }
    assert [r[0] for r in table_rows(page)] == [f"trial_{n:04d}" for n in range(1, 5)]
    # the log-scale parameter's axis is in log10 units, labelled with real values
    lr_axis = page.evaluate("document.getElementById('parcoords').data[0].dimensions[1]")
    assert lr_axis["label"] == "toy.lr (log)" and lr_axis["ticktext"] == ["1e-4", "0.001", "0.01", "0.1"]
    assert lr_axis["tickvals"] == [-4, -3, -2, -1]


def _completed(db: Path) -> list[ev.TrialCompleted]:
    store = SQLiteStore(db)
    try:
        done = [s.event for s in store.read(0) if isinstance(s.event, ev.TrialCompleted)]
    finally:
        store.close()
    return sorted(done, key=lambda e: e.trial)


def _pareto_front(done: list[ev.TrialCompleted]) -> list[int]:
    """Trials on the score/cost front, computed here from the log: no cheaper trial scores as well."""
    return [
        e.trial
        for e in done
        if not any((o.cost < e.cost and o.score >= e.score) or (o.cost == e.cost and o.score > e.score) for o in done)
    ]


def _best_so_far_corners(done: list[ev.TrialCompleted]) -> list[list[float]]:
    """The best-so-far step line's points: each improvement, then the last trial at the best score."""
    corners: list[list[float]] = []
    for e in done:
        if not corners or e.score > corners[-1][1]:
            corners.append([e.trial, e.score])
    if corners[-1][0] != done[-1].trial:
        corners.append([done[-1].trial, corners[-1][1]])
    return corners


def test_table_sorts_by_a_column(live: LiveSweep, page: Any) -> None:
    write_gated_sweep(live.root, trials=3, parallel=3)
    assert live.finish(live.serve("--config", "sweep.toml"), 3) == 0
    live.serve("--config", "sweep.toml", "--args", "max_trials=4")  # extended: serve stays up on trial 4
    page.goto(live.url())
    ready(page)
    page.wait_for_function("() => document.querySelectorAll('#trials tbody tr').length === 4", timeout=DEADLINE * 1000)
    page.click("#trials th:text-is('score')")
    scores = [r[4] for r in table_rows(page)]  # trial, status, toy.x, toy.lr, score
    completed = [float(s) for s in scores if s]
    assert completed == sorted(completed) and len(completed) == 3 and scores[-1] == ""  # missing last
    page.click("#trials th:text-is('score')")
    completed = [float(r[4]) for r in table_rows(page) if r[4]]
    assert completed == sorted(completed, reverse=True)


def test_token_off_loopback(live: LiveSweep, browser: Any) -> None:
    secret = "dashboard-secret-token"
    write_gated_sweep(live.root, trials=2, parallel=2)
    live.serve("--config", "sweep.toml", SWEEP_HTTP_TOKEN=secret, SWEEP_HTTP_HOST="0.0.0.0")
    port = int(live.url().rsplit(":", 1)[1])
    url = f"http://{_outward_address()}:{port}"
    for path in ("/", "/trials", "/static/plotly.min.js", "/static/dashboard.js"):
        assert httpx.get(f"{url}{path}", timeout=10).status_code == 401, path
    assert httpx.get(f"{url}/?token=wrong", timeout=10).status_code == 401

    context = browser.new_context()
    try:
        page = context.new_page()
        assert page.goto(f"{url}/").status == 401
        page.goto(f"{url}/?token={secret}")
        ready(page)
        assert secret not in page.url  # redirected: the token is in an HttpOnly cookie, not the address bar
        assert page.evaluate("document.cookie") == ""
        page.wait_for_function("() => document.getElementById('curves').data.length === 2", timeout=DEADLINE * 1000)
        assert points(page)["importance"] == [0]
    finally:
        context.close()


def test_trials_route_answers_pages_changes_and_bad_input(live: LiveSweep) -> None:
    write_gated_sweep(live.root, trials=2, parallel=2)
    live.serve("--config", "sweep.toml")
    url = live.url()
    wait_for(lambda: httpx.get(f"{url}/trials", timeout=10).json()["summary"]["trials_total"] == 2, "two trials")
    first = httpx.get(f"{url}/trials?offset=1&limit=1", timeout=10).json()
    assert [t["trial"] for t in first["trials"]] == [2] and first["summary"]["goal"] == "maximize"
    assert first["summary"]["parameters"]["toy.lr"]["distribution"] == "log_normal"
    live.open_gate(1)
    wait_for(lambda: httpx.get(f"{url}/trials", timeout=10).json()["summary"]["completed"] == 1, "trial 1 done")
    seq = httpx.get(f"{url}/trials?offset=0&limit=1", timeout=10).json()["summary"]["last_seq"]
    # Only what changed after seq: trial 1 ended before it; trial 2's job may report progress meanwhile.
    changed = httpx.get(f"{url}/trials?changed_since={seq}", timeout=10).json()["trials"]
    assert all(t["trial"] == 2 and t["seq"] > seq for t in changed), changed
    assert {t["trial"] for t in httpx.get(f"{url}/trials?changed_since=0", timeout=10).json()["trials"]} == {1, 2}
    for query in ("limit=abc", "offset=1.5", "changed_since=x", "offset=99999999999999999999999", "offset=-1"):
        bad = httpx.get(f"{url}/trials?{query}", timeout=10)
        name = query.partition("=")[0]
        assert bad.status_code == 400 and f"{name} must be a whole number" in bad.json()["error"], bad.text
    assert httpx.get(f"{url}/static/nope.js", timeout=10).status_code == 404
    assert httpx.get(f"{url}/static/..%2F..%2Fpyproject.toml", timeout=10).status_code == 404  # files of static/ only


def _outward_address() -> str:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))  # no packet is sent: this only picks a route
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def test_a_long_sweep_loads_in_pages(tmp_path: Path, page: Any) -> None:
    """More trials than one /trials page: every one reaches the page (10,000 are timed in benchmarks/dashboard.py)."""
    live = LiveSweep(tmp_path, "long")
    try:
        write_long_sweep(tmp_path, "long", trials=2500)
        live.serve()
        page.goto(live.url())
        ready(page)
        page.wait_for_function("() => document.body.dataset.trials === '2501'", timeout=DEADLINE * 1000)
        done = _completed(tmp_path / "train_dir" / "long" / "events.db")
        assert len(done) == 2500 - 2500 // 7
        assert points(page)["history"][0] == len(done)
        assert page.text_content("#pageinfo") == "1–100 of 2501"
        # Parallel coordinates draw the best 1,000 (more are a block of colour, and slow without a GPU).
        assert page.text_content("#parcoords-shown") == f"The best 1,000 of {len(done):,} completed trials"
        drawn = sorted(page.evaluate("document.getElementById('parcoords').data[0].line.color"), reverse=True)
        assert drawn == sorted((e.score for e in done), reverse=True)[:1000]
    finally:
        live.cleanup()


def test_a_trial_stopped_early_reads_as_stopped(tmp_path: Path, page: Any) -> None:
    live = LiveSweep(tmp_path, "stops")
    try:
        write_long_sweep(tmp_path, "stops", trials=6, stop_every=3)  # 3 and 6 stopped (7 would fail: none here)
        live.serve()
        page.goto(live.url())
        ready(page)
        page.wait_for_function("() => document.body.dataset.trials === '7'", timeout=DEADLINE * 1000)
        assert "4 completed, 0 failed, 2 stopped early" in page.text_content("#headline")
        statuses = {r[0]: r[1] for r in table_rows(page)}
        assert statuses["trial_0003"] == statuses["trial_0006"] == "stopped at 50000"
        assert statuses["trial_0001"] == "completed"
        color = "td => getComputedStyle(td).color"
        stopped = page.eval_on_selector("#trials td.status-stopped", color)
        assert stopped not in (page.eval_on_selector("#trials td.status-completed", color), "rgb(0, 0, 0)")
        record = httpx.get(f"{live.url()}/trials", timeout=10).json()
        third = next(r for r in record["trials"] if r["trial"] == 3)
        assert third["status"] == "stopped" and third["stop_step"] == 50_000 and third["reason"].startswith("asha")
    finally:
        live.cleanup()


# -- the offline report --------------------------------------------------------------------------------------
def test_report_of_a_finished_sweep_renders_offline(live: LiveSweep, page: Any) -> None:
    write_gated_sweep(live.root, trials=3, parallel=3)
    assert live.finish(live.serve("--config", "sweep.toml"), 3) == 0
    done = live.run("report", "--out", "report.html")
    assert done.returncode == 0, done.stderr
    html = (live.root / "report.html").read_text()
    assert "<script src" not in html and "<link" not in html  # everything inlined

    requested: list[str] = []

    def block(route: Any) -> None:
        requested.append(route.request.url)
        route.abort()

    page.route("http://**/*", block)
    page.route("https://**/*", block)
    page.goto((live.root / "report.html").as_uri())
    ready(page)
    assert requested == []
    drawn = points(page)
    assert drawn["history"][0] == 3 and drawn["parcoords"] == [3] and drawn["importance"] == [2]
    assert drawn["pareto"][0] == 3
    assert len(table_rows(page)) == 3
    assert page.text_content("#headline").startswith("finished: 3 of 3 trials, 3 completed")


def test_report_default_path_and_errors(live: LiveSweep) -> None:
    write_gated_sweep(live.root, trials=1, parallel=1)
    assert live.finish(live.serve("--config", "sweep.toml"), 1) == 0
    done = live.run("report")
    assert done.returncode == 0 and (live.dir / "report.html").exists()
    bad = live.run("report", "--out", "no/such/dir/r.html")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --out: cannot write") and "Traceback" not in bad.stderr
    missing = live.run("report", "--train-dir", "elsewhere")
    assert missing.returncode == 2 and "no sweep named" in missing.stderr


# -- export --------------------------------------------------------------------------------------------------
def _written_sweep(root: Path) -> list[ev.Event]:
    """A small log with what a table must carry: a nested parameter path, a failure whose reason needs CSV
    quoting, a trial still in flight."""
    events: list[ev.Event] = [
        ev.SweepCreated(
            sweep="exp",
            config={
                "max_trials": 3,
                "protein_config": {
                    "parameters": {"trainer.lr": {"distribution": "log_normal", "min": 1e-5, "max": 1e-1}}
                },
            },
        ),
        ev.TrialSuggested(
            trial=1, run="exp_trial_0001", params={"trainer.lr": 0.001, "model": {"width": 64}}, ts=100.0
        ),
        ev.JobRequested(key="k1", trial=1, kind="train", argv=["t"], ts=101.0),
        ev.JobStarted(key="k1", ts=102.0),
        ev.JobExited(key="k1", exit_code=0, duration=7.5, ts=109.5),
        ev.TrialCompleted(trial=1, score=0.25, cost=7.5, ts=110.0),
        ev.TrialSuggested(trial=2, run="exp_trial_0002", params={"trainer.lr": 0.01, "model": {"width": 32}}, ts=111.0),
        ev.TrialFailed(trial=2, reason='eval failed: "no result", exit code 3\nsee log', ts=112.0),
        ev.TrialSuggested(trial=3, run="exp_trial_0003", params={"trainer.lr": 1e-4, "model": {"width": 8}}, ts=113.0),
    ]
    store = SQLiteStore(root / "train_dir" / "exp" / "events.db")
    try:
        store.append(events)
    finally:
        store.close()
    return events


def _status(root: Path, fmt: str) -> str:
    cmd = [PY, "-m", "orchestrator", "status", "--sweep", "exp", "--format", fmt]
    done = subprocess.run(cmd, cwd=root, env=serve_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_export_round_trips_through_csv_and_json(tmp_path: Path) -> None:
    _written_sweep(tmp_path)
    columns = [
        "trial",
        "run",
        "status",
        "trainer.lr",
        "model.width",
        "score",
        "cost",
        "reason",
        "stop_step",
        "source",
        "suggested_at",
        "started_at",
        "ended_at",
        "train_seconds",
        "eval_seconds",
    ]
    rows = json.loads(_status(tmp_path, "json"))
    assert [list(r) for r in rows] == [columns] * 3
    assert rows[0] == {
        "trial": 1,
        "run": "exp_trial_0001",
        "status": "completed",
        "trainer.lr": 0.001,
        "model.width": 64,
        "score": 0.25,
        "cost": 7.5,
        "reason": None,
        "stop_step": None,
        "source": None,
        "suggested_at": "1970-01-01T00:01:40.000Z",
        "started_at": "1970-01-01T00:01:42.000Z",
        "ended_at": "1970-01-01T00:01:50.000Z",
        "train_seconds": 7.5,
        "eval_seconds": 0.0,
    }
    assert rows[1]["status"] == "failed" and rows[1]["reason"] == 'eval failed: "no result", exit code 3\nsee log'
    assert rows[1]["score"] is None and rows[2]["status"] == "pending" and rows[2]["ended_at"] is None

    table = list(csv.DictReader(io.StringIO(_status(tmp_path, "csv"))))
    assert [list(r) for r in table] == [columns] * 3
    as_text = [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows]
    assert table == as_text  # the same table, cell for cell (the reason's quote, comma and newline included)


def test_export_of_a_real_sweep_has_a_column_per_parameter(live: LiveSweep) -> None:
    write_gated_sweep(live.root, trials=2, parallel=2)
    assert live.finish(live.serve("--config", "sweep.toml"), 2) == 0
    done = live.run("status", "--format", "csv")
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["trial"] for r in table] == ["1", "2"] and {r["status"] for r in table} == {"completed"}
    for r in table:
        x = float(r["toy.x"])
        assert float(r["score"]) == pytest.approx(-((x - 0.3) ** 2)) and float(r["cost"]) == float(r["trial"])
        assert 1e-4 <= float(r["toy.lr"]) <= 1e-1 and float(r["train_seconds"]) > 0


# -- the trial book behind the page --------------------------------------------------------------------------
def _stored(events: list[ev.Event]) -> list[ev.StoredEvent]:
    return [ev.StoredEvent(seq, e) for seq, e in enumerate(events, start=1)]


def test_trial_book_folds_incrementally_and_knows_what_changed() -> None:
    from orchestrator.trials import CURVE_POINTS, TrialBook

    key = "s_trial_0001.train.1"
    events: list[ev.Event] = [
        ev.SweepCreated(sweep="s", config={"max_trials": 3}),
        ev.TrialSuggested(trial=1, run="s_trial_0001", params={"x": 1}),
        ev.TrialSuggested(trial=2, run="s_trial_0002", params={"x": 2}),
        ev.JobRequested(key=key, trial=1, kind="train", argv=["t"], ts=1000.0),
        ev.JobStarted(key=key, ts=1001.0),
        *[
            ev.JobProgress(key=key, step=10 * i, total=10 * (CURVE_POINTS + 50), ts=1001.0 + i)
            for i in range(1, CURVE_POINTS + 51)
        ],
    ]
    stored = _stored(events)
    whole, halves = TrialBook(), TrialBook()
    whole.add(stored)
    halves.add(stored[:7])
    halves.add(stored[5:])  # overlapping: events already folded are skipped
    assert whole.records() == halves.records()

    running = whole.records()[0]
    assert running["status"] == "training" and running["job"] == "train" and running["seq"] == len(stored)
    curve = running["curve"]
    assert len(curve) <= CURVE_POINTS and curve[0] == [1.0, 10, 3500] and curve[-1][1] == 10 * (CURVE_POINTS + 50)
    assert [p[0] for p in curve] == sorted(p[0] for p in curve)  # thinned, still in order
    assert [r["trial"] for r in whole.changed_since(3)] == [1]  # trial 2 has not changed since its suggestion

    done = ev.StoredEvent(len(stored) + 1, ev.TrialCompleted(trial=1, score=0.5, cost=2.0))
    whole.add([done])
    assert [r["trial"] for r in whole.changed_since(len(stored))] == [1]
    ended = whole.records()[0]
    assert ended["status"] == "completed" and ended["score"] == 0.5 and "curve" not in ended
    assert [r["trial"] for r in whole.records(offset=1, limit=5)] == [2]


def test_export_format_does_not_go_with_follow(capsys) -> None:
    from orchestrator.cli import main

    assert main(["status", "--sweep", "any", "--follow", "--format", "csv"]) == 2
    assert "--format csv exports every trial once" in capsys.readouterr().err
