"""Following a sweep: how late attach's lines are, and what 50 attached clients cost serve.

    python benchmarks/attach.py            # 12 trials per run, runs with 0 and 50 clients, twice each
    python benchmarks/attach.py --quick    # 6 trials, once each

Each run is a real ``python -m orchestrator serve`` (human log lines on a pipe) on a small sweep of real local
jobs (each prints a progress line every 0.1 s for about 1.5 s; serve turns that into a JobProgress event a second
per job), a real ``python -m orchestrator attach`` (human lines on a pipe) and, for the loaded runs, one helper
process holding 50 more HTTP streams (``GET /events?since=0``, reading every event). Jobs wait at a gate until
everyone is connected; the measured window runs from the gate opening to serve's "Sweep finished" line.

1. Delay, event to attach line: for every line attach prints, the time it reached this process minus the time
   the same line (serve prints the very same text for each event) reached it from serve. Both pipes are read by
   threads here and stamped with one monotonic clock, so the number is "how far attach trails serve's own log".
   Also end to end: the event's own timestamp (taken when the event was made, before the durable append and its
   fsync) to the attach line.
2. serve's CPU (user + system, psutil; the jobs are other processes) over the window, with 0 and with 50
   clients; the peer is the same run with no client at all: the ratio is the price of 50 followers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

JOB = """
import json, os, sys, time
while not os.path.exists({gate!r}):
    time.sleep(0.02)
kind = "eval" if sys.argv[1].endswith("evaluate") else "train"
for i in range(15):
    print(f"Epoch {{i}} / 1000 sps / {{100 * (i + 1) / 15:.2f}}% of 15.00 ksteps", flush=True)
    time.sleep(0.1)
if kind == "eval":
    print("SWEEP_RESULT " + json.dumps({{"score": float(len(sys.argv))}}), flush=True)
"""

SWEEP = """
max_trials = {trials}
max_parallel_jobs = 2
monitoring_interval = 3600
recipe_module = "toy"
capture_output = false
command = ["{python}", "{job}"]
seed = 1

[protein_config]
metric = "score"
method = "random"

[protein_config.parameters."toy.x"]
distribution = "uniform"
min = -1.0
max = 1.0
"""


class Lines(threading.Thread):
    """Reads a pipe line by line, stamping each with the monotonic and the wall clock on arrival."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[tuple[float, float, str]] = []
        self.start()

    def run(self) -> None:
        for line in self.stream:
            self.lines.append((time.monotonic(), time.time(), line.rstrip("\n")))

    def wait_for(self, prefix: str, timeout: float = 120) -> tuple[float, float, str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for item in self.lines:
                if item[2].startswith(prefix):
                    return item
            time.sleep(0.01)
        raise TimeoutError(prefix)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def wait_file(path: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise TimeoutError(str(path))
        time.sleep(0.02)


def run(clients: int, trials: int) -> dict:
    """One sweep with ``clients`` followers: two attach processes (when clients >= 2) and the rest in a helper."""
    procs: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen(*args, **kwargs):  # remember every process, so none outlives a failed run
        procs.append(real_popen(*args, **kwargs))
        return procs[-1]

    try:
        return _run(clients, trials, popen)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _run(clients: int, trials: int, popen) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_attach_"))
    gate = tmp / "gate"
    try:
        return _measure(clients, trials, popen, tmp, gate)
    finally:
        gate.touch()  # jobs waiting at the gate end on their own


def _measure(clients: int, trials: int, popen, tmp: Path, gate: Path) -> dict:
    import httpx
    import psutil

    (tmp / "job.py").write_text(textwrap.dedent(JOB.format(gate=str(gate))))
    (tmp / "sweep.toml").write_text(SWEEP.format(trials=trials, python=PY, job=tmp / "job.py"))
    serve = popen(
        [PY, "-m", "orchestrator", "serve", "--sweep", "bench", "--config", "sweep.toml", "--log-format", "human"],
        cwd=tmp,
        env=env(),
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    serve_out = Lines(serve.stdout)
    endpoint = tmp / "train_dir" / "bench" / "endpoint.json"
    wait_file(endpoint)
    url = json.loads(endpoint.read_text())["url"]
    followers = []
    if clients >= 2:
        for extra in (["--json"], []):
            followers.append(
                popen(
                    [PY, "-m", "orchestrator", "attach", "--sweep", "bench", *extra],
                    cwd=tmp,
                    env=env(),
                    stdout=subprocess.PIPE,
                    text=True,
                    bufsize=1,
                )
            )
    attach_json, attach_out = (Lines(f.stdout) for f in followers) if followers else (None, None)
    worker = None
    if clients > 2:
        worker = popen([PY, __file__, "--worker", url, str(clients - 2)], stdout=subprocess.PIPE, text=True)
    end = time.monotonic() + 120
    while httpx.get(f"{url}/health", timeout=10).json()["clients"] < clients:
        if time.monotonic() > end:
            raise TimeoutError("clients")
        time.sleep(0.05)
    proc = psutil.Process(serve.pid)
    time.sleep(0.5)  # let the connections settle before the window opens
    c0, t0, w0 = proc.cpu_times(), time.monotonic(), time.time()
    gate.touch()
    serve_out.wait_for("[SweepOrchestrator] Sweep finished")
    c1, t1 = proc.cpu_times(), time.monotonic()
    serve.wait(timeout=60)
    for f in followers:
        assert f.wait(timeout=60) == 0
    per_client = json.loads(worker.communicate(timeout=60)[0]) if worker else []
    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    import sqlite3

    db = sqlite3.connect(tmp / "train_dir" / "bench" / "events.db")
    (stored,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
    db.close()
    if not followers:
        return {"clients": clients, "events": stored, "delays": [], "end_to_end": [], "cpu": cpu, "wall": t1 - t0}
    attach_json.join(5)
    attach_out.join(5)

    events = [json.loads(line) for _, _, line in attach_json.lines]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "attach --json missed or doubled events"
    assert all(n == len(events) for n in per_client), (per_client, len(events))

    # pair each attach line with serve's identical line (by text and occurrence)
    served: dict[str, list[float]] = {}
    for t, _, line in serve_out.lines:
        if line.startswith("["):
            served.setdefault(line, []).append(t)
    used: dict[str, int] = {}
    delays = []
    for t, _, line in attach_out.lines:
        if line in served and used.get(line, 0) < len(served[line]):
            was = served[line][used.get(line, 0)]
            used[line] = used.get(line, 0) + 1
            if was >= t0:  # lines from before the window were replays for a follower that was not there yet
                delays.append(t - was)
    # end to end: the event's own timestamp to the matching --json line's arrival
    ends = [wall - e["event"]["ts"] for (_, wall, _), e in zip(attach_json.lines, events) if e["event"]["ts"] >= w0]
    return {
        "clients": clients,
        "events": stored,
        "delays": delays,
        "end_to_end": ends,
        "cpu": cpu,
        "wall": t1 - t0,
    }


async def _worker(url: str, n: int) -> list[int]:
    import anyio
    import httpx

    counts = [0] * n

    async def one(i: int, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", f"{url}/events", params={"since": 0}) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    counts[i] += 1

    limits = httpx.Limits(max_connections=n + 5)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=300), limits=limits) as client:
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i, client)
    return counts


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--worker", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.worker:
        import anyio

        print(json.dumps(anyio.run(_worker, ns.worker[0], int(ns.worker[1]))))
        return
    trials, repeats = (6, 1) if ns.quick else (12, 2)
    configs = (0, 2, ns.clients)
    results: dict[int, list[dict]] = {c: [] for c in configs}
    for _ in range(repeats):
        for clients in configs:
            r = run(clients, trials)
            results[clients].append(r)
            delay = f", attach delay median {1e3 * statistics.median(r['delays']):.2f} ms" if r["delays"] else ""
            print(
                f"  run: {clients:>2} clients, {r['events']} events, window {r['wall']:.1f}s, "
                f"serve CPU {r['cpu']:.3f}s{delay}",
                flush=True,
            )
    row = {}
    for clients, runs in results.items():
        delays = [d for r in runs for d in r["delays"]]
        ends = [d for r in runs for d in r["end_to_end"]]
        cpu, wall, events = (sum(r[k] for r in runs) for k in ("cpu", "wall", "events"))
        row[clients] = {
            "median": 1e3 * statistics.median(delays) if delays else float("nan"),
            "p99": 1e3 * pct(delays, 99),
            "e2e_median": 1e3 * statistics.median(ends) if ends else float("nan"),
            "e2e_p99": 1e3 * pct(ends, 99),
            "cpu_pct": 100 * cpu / wall,
            "cpu_per_event": 1e3 * cpu / events,
            "n": len(delays),
        }
    print()
    print(
        f"Following a sweep: {trials} trials x {repeats} runs per column, 2 jobs at a time; "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    )
    n = ns.clients
    print(f"{'':<36} {'0 clients':>11} {'2 clients':>11} {f'{n} clients':>11} {f'{n} vs 0':>8} {f'{n} vs 2':>8}")
    for key, label, unit in [
        ("median", "serve line -> attach line, median", "ms"),
        ("p99", "serve line -> attach line, p99", "ms"),
        ("e2e_median", "event made -> attach line, median", "ms"),
        ("e2e_p99", "event made -> attach line, p99", "ms"),
        ("cpu_pct", "serve CPU over the window", "%"),
        ("cpu_per_event", "serve CPU per event", "ms"),
    ]:
        vals = [row[c][key] for c in configs]
        cells = " ".join(f"{v:>8.2f} {unit:<2}" for v in vals)
        r0 = f"{vals[2] / vals[0]:>7.2f}x" if vals[0] == vals[0] and vals[0] else f"{'-':>8}"
        r2 = f"{vals[2] / vals[1]:>7.2f}x" if vals[1] == vals[1] and vals[1] else f"{'-':>8}"
        cells = cells.replace("     nan ms", f"{'-':>8}   ")
        print(f"{label:<36} {cells} {r0} {r2}")
    print(f"(delays over {row[2]['n']} and {row[n]['n']} lines; {n} clients = 2 attach processes + {n - 2} streams)")


if __name__ == "__main__":
    main()
