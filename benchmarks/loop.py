"""The service's own overhead, side by side with Optuna's ``study.optimize`` on SQLite storage (the peer).

    python benchmarks/loop.py            # ~6 min: 10,000 of our trials, 2,000 of Optuna's, 500 real jobs
    python benchmarks/loop.py --quick    # ~2 min: 2,000 of our trials, 500 of Optuna's, 100 real jobs

Optuna runs fewer trials than we do because it is slow here (70 trials/s with SQLite storage on a quiet machine,
10 on a loaded one: 10,000 could take a quarter of an hour). Its rate is about steady over a study (the summary
shows its delay over the first and second half), and so is ours (our state does not grow with the sweep), so
comparing our 10,000-trial rate with its 2,000-trial rate favours neither; nothing is extrapolated.
``--peer-trials 10000`` runs it in full.

The W&B mirror is off in every part (``wandb.mode = "disabled"``): it is a buffered subscriber, measured on its
own in its tests, and mirroring 10,000 trials to offline runs would measure W&B, not the loop.

What is measured (each part runs in its own process, so memory and imports do not mix):

1. Loop throughput: the real ``SweepService`` (anyio, in-process) with the real ``SQLiteStore`` (WAL,
   synchronous=FULL: every append is on disk before its side effect), random search, ``max_parallel_jobs=8``,
   logging on (JSON lines to /dev/null), and an in-process dispatcher whose jobs end at once (``watch`` yields
   Started then Exited). A trial is a train job then an eval job: ten durable events. Peer: Optuna's
   ``study.optimize`` with ``RandomSampler`` on ``sqlite:///`` storage and a trivial objective of two
   ``suggest_float`` calls. Both report trials per second over the whole run.
2. Dispatch delay, recorded by the dispatcher (not the service): from a job's exit (just before ``watch`` yields
   Exited, which the service puts on its queue) to the ``submit`` it leads to. Without the optimizer: a train
   job's exit to its eval's submit. With it: an eval's exit to the next new trial's train submit (the optimizer
   runs in a worker thread in between). Peer: the time from one Optuna objective's return to the next one's
   start (tell, ask and sampling; Optuna has no job to dispatch). Every step from an exit to a dispatch waits
   for at least one SQLite commit with synchronous=FULL (the write-ahead rule), so the table also shows that
   commit's own time on this disk, and the delay of a second run with synchronous=NORMAL (a diagnostic of the
   loop's own overhead, not a supported setting).
3. Memory: resident set size at trial 1,000 and at the end, both measured in the same process.
4. Start-up: ``python -m orchestrator serve`` on the finished sweep's log (10,000 trials: 100,003 events): the
   whole process, from exec to exit, replaying the log, opening the sweep and printing its summary. Peer:
   ``optuna.load_study`` of its study plus ``study.best_trial``, also as a whole process.
5. Watching real jobs: ``serve`` runs N train jobs at once through the local dispatcher (each a launcher plus
   ``/bin/sh benchmarks/sleep_job.sh``); once all N run, the serve process's own CPU time over a window, as a
   percentage of one core (psutil ``cpu_times``; the jobs and launchers are other processes).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SLEEP_JOB = ROOT / "benchmarks" / "sleep_job.sh"

TARGETS = {
    "throughput": "x10 Optuna",
    "delay": "< 5 ms",
    "memory": "flat",
    "startup": "< 2 s",
    "cpu": "< 20% of a core",
}


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


# -- ours: the real service, an instant in-process dispatcher ----------------------------------------------------


class InstantDispatcher:
    """Jobs that end the moment they start, in-process. Measures the delay from a job's exit to the submit it
    leads to, keeping only what is still unmatched (so its own memory stays flat)."""

    name = "instant"

    def __init__(self, mark_trial: int, parallel: int) -> None:
        from orchestrator.core.jobs import Exited, JobHandle, Started

        self._types = (Exited, JobHandle, Started)
        self.mark_trial = mark_trial
        self.parallel = parallel
        self.train_exits: dict[int, float] = {}  # trial -> its train job's exit, until its eval is submitted
        self.eval_exits: deque[float] = deque()  # eval exits not yet followed by a new trial's train submit
        self.delay_no_opt = array("d")
        self.delay_opt = array("d")
        self.rss_at_mark: float | None = None

    def route(self, kind: str) -> str:
        return self.name

    async def submit(self, spec: Any) -> Any:
        now = time.perf_counter()
        if spec.kind == "eval":
            self.delay_no_opt.append(now - self.train_exits.pop(spec.trial))
        elif spec.trial > self.parallel and self.eval_exits:
            # An eval's exit frees a slot: the next new trial's train job is what it leads to.
            self.delay_opt.append(now - self.eval_exits.popleft())
        if spec.trial == self.mark_trial and self.rss_at_mark is None:
            self.rss_at_mark = rss_mb()
        return self._types[1](spec.key, self.name, {})

    async def find(self, spec: Any) -> Any:
        return None

    async def watch(self, spec: Any, handle: Any) -> AsyncIterator[Any]:
        Exited, _, Started = self._types
        yield Started()
        result = {"score": (spec.trial * 7919 % 1000) / 1000.0, "cost": 1.0} if spec.kind == "eval" else {"cost": 1.0}
        if spec.kind == "eval":
            self.eval_exits.append(time.perf_counter())
        else:
            self.train_exits[spec.trial] = time.perf_counter()
        yield Exited(exit_code=0, result=result, duration=0.0)

    async def cancel(self, spec: Any, handle: Any) -> None:
        return None

    async def aclose(self) -> None:
        return None


def sweep_config(name: str, trials: int, train_dir: Path, parallel: int = 8, **fields: Any) -> Any:
    from orchestrator.core.config import SweepConfig

    return SweepConfig(
        sweep_name=name,
        max_trials=trials,
        max_parallel_jobs=parallel,
        recipe_module="bench",
        capture_output=False,
        monitoring_interval=3600,
        train_dir=train_dir,
        seed=0,
        wandb={"mode": "disabled"},
        protein_config={
            "metric": "score",
            "method": "random",
            "parameters": {
                "trainer.optimizer.learning_rate": {"distribution": "log_normal", "min": 1e-5, "max": 1e-2},
                "trainer.batch_size": {"distribution": "uniform_pow2", "min": 16, "max": 1024},
            },
        },
        **fields,
    )


def fsync_floor(directory: Path, n: int = 200) -> list[float]:
    """Seconds per commit of one small row in SQLite with the store's settings (WAL, synchronous=FULL): the
    disk's own floor under every durable step of the loop."""
    import sqlite3

    db = sqlite3.connect(directory / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (x TEXT)")
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?)", ("x" * 300,))
        db.execute("COMMIT")
        out.append(time.perf_counter() - t0)
    db.close()
    return out


def part_ours(trials: int, workdir: Path, synchronous: str = "FULL") -> dict[str, Any]:
    import anyio

    from optimizers import make_optimizer
    from orchestrator.console import ConsoleSubscriber
    from orchestrator.logs import configure_logging
    from orchestrator.service import SweepService
    from stores.sqlite import SQLiteStore

    config = sweep_config("bench", trials, workdir / "train_dir")
    dispatcher = InstantDispatcher(mark_trial=min(1000, trials // 2), parallel=config.max_parallel_jobs)
    store = SQLiteStore(config.sweep_dir / "events.db")
    if synchronous != "FULL":  # diagnostic only: the loop's own overhead without waiting for the disk
        store._db.execute(f"PRAGMA synchronous={synchronous}")
    floor = fsync_floor(workdir) if synchronous == "FULL" else []
    devnull = open(os.devnull, "w")
    configure_logging("json", stream=devnull)  # serve's default off a terminal: JSON lines, here to /dev/null
    console = ConsoleSubscriber("OptimizingScheduler", human=False)  # serve's lines, as JSON
    optimizer = make_optimizer(config.protein_config, 0, config.max_trials)
    service = SweepService(config, store, dispatcher, optimizer, subscribers=[console])  # type: ignore[arg-type]
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(devnull):  # the final summary
        state = anyio.run(service.run)
    wall = time.perf_counter() - t0
    gc.collect()
    rss_end = rss_mb()
    store.close()
    assert state.finished and state.completed == trials

    return {
        "trials": trials,
        "wall": wall,
        "events": state.events,
        "delay_no_opt": list(dispatcher.delay_no_opt),
        "delay_opt": list(dispatcher.delay_opt),
        "rss_mark": dispatcher.rss_at_mark,
        "mark": dispatcher.mark_trial,
        "rss_end": rss_end,
        "db": str(config.sweep_dir / "events.db"),
        "fsync": floor,
    }


# -- the peer: Optuna ------------------------------------------------------------------------------------------


def part_optuna(trials: int, workdir: Path) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = workdir / "optuna.db"
    study = optuna.create_study(
        study_name="bench",
        storage=f"sqlite:///{db}",
        sampler=optuna.samplers.RandomSampler(seed=0),
        direction="maximize",
    )
    starts: list[float] = []
    ends: list[float] = []
    mark = min(1000, trials // 2)
    rss_mark: list[float] = []

    def objective(trial: Any) -> float:
        starts.append(time.perf_counter())
        lr = trial.suggest_float("trainer.optimizer.learning_rate", 1e-5, 1e-2, log=True)
        bs = trial.suggest_int("trainer.batch_size", 16, 1024, log=True)
        if trial.number + 1 == mark:
            rss_mark.append(rss_mb())
        ends.append(time.perf_counter())
        return lr * bs

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    wall = time.perf_counter() - t0
    gc.collect()
    return {
        "trials": trials,
        "wall": wall,
        "delay": [s - e for e, s in zip(ends, starts[1:])],
        "rss_mark": rss_mark[0] if rss_mark else None,
        "mark": mark,
        "rss_end": rss_mb(),
        "db": str(db),
    }


# -- start-up ----------------------------------------------------------------------------------------------------


def env_with_root() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def timed_process(argv: list[str], cwd: Path, repeat: int = 3) -> tuple[float, str]:
    """The best wall time of ``repeat`` runs of a whole process (the machine is shared: the best is the least
    disturbed), and the last run's output."""
    best, out = float("inf"), ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, env=env_with_root(), capture_output=True, text=True, timeout=600)
        took = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{argv} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        best, out = min(best, took), proc.stdout
    return best, out


def startup(ours_db: Path, optuna_db: Path, workdir: Path) -> dict[str, Any]:
    from stores.sqlite import SQLiteStore

    store = SQLiteStore(ours_db)
    events = store.last_seq()
    store.close()
    train_dir = ours_db.parent.parent
    ours, out = timed_process(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "serve",
            "--sweep",
            "bench",
            "--train-dir",
            str(train_dir),
            "--log-format",
            "json",
            "--overrides",
            "wandb.mode=disabled",
        ],
        cwd=workdir,
    )
    assert "SWEEP SUMMARY" in out
    bare, _ = timed_process([sys.executable, "-c", "pass"], cwd=workdir)
    peer_code = (
        "import optuna; optuna.logging.set_verbosity(optuna.logging.WARNING); "
        f"s = optuna.load_study(study_name='bench', storage='sqlite:///{optuna_db}'); "
        "print(len(s.trials), s.best_trial.number)"
    )
    peer, _ = timed_process([sys.executable, "-c", peer_code], cwd=workdir)
    return {"events": events, "ours": ours, "peer": peer, "python": bare}


# -- watching real subprocess jobs -------------------------------------------------------------------------------


def part_watch(jobs: int, sleep: float, window: float, workdir: Path) -> dict[str, Any]:
    import psutil

    config = {
        "max_trials": jobs,
        "max_parallel_jobs": jobs,
        "recipe_module": "bench",
        "command": ["/bin/sh", str(SLEEP_JOB)],
        "capture_output": False,
        "monitoring_interval": 3600,
        "retry_backoff": 0.1,
        "seed": 0,
        "wandb": {"mode": "disabled"},
        "protein_config": {
            "metric": "score",
            "method": "random",
            "parameters": {"x": {"distribution": "uniform", "min": 0.0, "max": 1.0}},
        },
    }
    (workdir / "watch.toml").write_text(_toml(config))
    env = env_with_root()
    env["SLEEP_JOB_SECONDS"] = str(sleep)
    argv = [
        sys.executable,
        "-m",
        "orchestrator",
        "serve",
        "--sweep",
        "watch",
        "--config",
        "watch.toml",
        "--log-format",
        "json",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    serve = psutil.Process(proc.pid)
    sweep_dir = workdir / "train_dir" / "watch"
    try:
        started = 0
        while started < jobs and time.perf_counter() - t0 < sleep:
            time.sleep(0.5)
            started = sum(1 for _ in sweep_dir.glob("*/train.1/launcher.json"))
        all_running_after = time.perf_counter() - t0
        cpu0, w0 = serve.cpu_times(), time.perf_counter()
        time.sleep(window)
        cpu1, w1 = serve.cpu_times(), time.perf_counter()
        ended_early = sum(1 for _ in sweep_dir.glob("*/train.1/exit.json"))
        rss = serve.memory_info().rss / 2**20
        _, err = proc.communicate(timeout=sleep * 4 + 600)
        total = time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"serve failed ({proc.returncode}): {err[-2000:]}")
    busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "jobs": jobs,
        "running": started,
        "ramp": all_running_after,
        "window": w1 - w0,
        "cpu_pct": 100.0 * busy / (w1 - w0),
        "ended_in_window": ended_early,
        "rss": rss,
        "total": total,
    }


def _toml(tree: dict[str, Any], prefix: str = "") -> str:
    flat = {k: v for k, v in tree.items() if not isinstance(v, dict)}
    lines = [f"[{prefix}]"] if prefix and flat else []
    lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in flat.items()]
    for k, v in tree.items():
        if isinstance(v, dict):
            lines.append(_toml(v, f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k)))
    return "\n".join(lines) + "\n"


# -- driver ------------------------------------------------------------------------------------------------------


def run_part(name: str, *args: Any) -> dict[str, Any]:
    """Run one part in a fresh process (separate memory, separate imports); it prints JSON on its last line."""
    argv = [sys.executable, __file__, "--part", name, *map(str, args)]
    proc = subprocess.run(argv, env=env_with_root(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"part {name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_ratio(x: float) -> str:
    return f"{x:.1f}x" if x >= 1 else f"{x:.2f}x"


def ms(values: list[float]) -> list[float]:
    return [1e3 * v for v in values]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 of our trials, 500 of Optuna's, 100 real jobs")
    parser.add_argument("--trials", type=int, default=None, help="our trials (default 10,000)")
    parser.add_argument(
        "--peer-trials", type=int, default=None, help="Optuna's trials (default 2,000: about 3 minutes at its rate)"
    )
    parser.add_argument("--jobs", type=int, default=None, help="concurrent real jobs (default 500)")
    parser.add_argument("--skip-watch", action="store_true", help="skip part 5 (real subprocess jobs)")
    parser.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    ns = parser.parse_args()

    if ns.part:  # a child process running one part
        name, *rest = ns.part
        if name == "ours":
            out = part_ours(int(rest[0]), Path(rest[1]), *rest[2:])
        elif name == "optuna":
            out = part_optuna(int(rest[0]), Path(rest[1]))
        else:
            out = part_watch(int(rest[0]), float(rest[1]), float(rest[2]), Path(rest[3]))
        print(json.dumps(out))
        return 0

    trials = ns.trials or (2_000 if ns.quick else 10_000)
    peer_trials = ns.peer_trials or (500 if ns.quick else 2_000)
    jobs = ns.jobs or (100 if ns.quick else 500)
    print(
        f"benchmarks/loop.py: {trials:,} of our trials, {peer_trials:,} of Optuna's, {jobs} real jobs; "
        f"{os.cpu_count()} cores, shared (compare ratios)"
    )
    with tempfile.TemporaryDirectory(prefix="bench_loop_") as tmp:
        work = Path(tmp)
        for d in ("ours", "nosync", "optuna", "watch"):
            (work / d).mkdir()
        print("  1-3. our loop ...", flush=True)
        ours = run_part("ours", trials, work / "ours")
        print(f"       {ours['wall']:.1f} s; again with synchronous=NORMAL (diagnostic) ...", flush=True)
        nosync = run_part("ours", trials, work / "nosync", "NORMAL")
        print(f"       {nosync['wall']:.1f} s; Optuna ...", flush=True)
        peer = run_part("optuna", peer_trials, work / "optuna")
        print(f"       {peer['wall']:.1f} s; start-up ...", flush=True)
        up = startup(Path(ours["db"]), Path(peer["db"]), work)
        watch = None
        if not ns.skip_watch:
            print(f"  5. {jobs} real jobs at once ...", flush=True)
            sleep, window = (20.0, 8.0) if jobs <= 100 else (60.0, 15.0)
            watch = run_part("watch", jobs, sleep, window, work / "watch")

    ours_tps = ours["trials"] / ours["wall"]
    peer_tps = peer["trials"] / peer["wall"]
    d_no, d_opt, d_peer = ms(ours["delay_no_opt"]), ms(ours["delay_opt"]), ms(peer["delay"])
    n_no = ms(nosync["delay_no_opt"])
    floor = ms(ours["fsync"])
    med, p99 = statistics.median, lambda v: percentile(v, 99)

    def growth(r: dict[str, Any]) -> float:  # MB per 1,000 trials between the mark and the end
        return (r["rss_end"] - r["rss_mark"]) * 1000 / (r["trials"] - r["mark"])

    rows: list[tuple[str, str, str, str, str]] = [
        (
            "trials/s, whole loop, durable SQLite log",
            f"{ours_tps:,.0f}",
            f"{peer_tps:,.1f}",
            fmt_ratio(ours_tps / peer_tps),
            TARGETS["throughput"],
        ),
        (
            "job end -> next dispatch, median, no optimizer",
            f"{med(d_no):.2f} ms",
            f"{med(d_peer):.1f} ms",
            fmt_ratio(med(d_peer) / med(d_no)),
            TARGETS["delay"],
        ),
        (
            "job end -> next dispatch, p99, no optimizer",
            f"{p99(d_no):.2f} ms",
            f"{p99(d_peer):.1f} ms",
            fmt_ratio(p99(d_peer) / p99(d_no)),
            TARGETS["delay"],
        ),
        (
            "job end -> next dispatch, median, with optimizer",
            f"{med(d_opt):.2f} ms",
            f"{med(d_peer):.1f} ms",
            fmt_ratio(med(d_peer) / med(d_opt)),
            "-",
        ),
        (
            "job end -> next dispatch, p99, with optimizer",
            f"{p99(d_opt):.2f} ms",
            f"{p99(d_peer):.1f} ms",
            fmt_ratio(p99(d_peer) / p99(d_opt)),
            "-",
        ),
        (
            "  same, no optimizer, synchronous=NORMAL: median / p99",
            f"{med(n_no):.2f} / {p99(n_no):.2f} ms",
            "-",
            "-",
            "(diagnostic)",
        ),
        (
            "  one SQLite commit, synchronous=FULL: median / p99",
            f"{med(floor):.2f} / {p99(floor):.2f} ms",
            "-",
            "-",
            "(the disk's floor)",
        ),
        (
            f"RSS at trial {ours['mark']:,} -> end",
            f"{ours['rss_mark']:.0f} -> {ours['rss_end']:.0f} MB",
            f"{peer['rss_mark']:.0f} -> {peer['rss_end']:.0f} MB",
            "-",
            TARGETS["memory"],
        ),
        (
            "RSS growth per 1,000 trials",
            f"{growth(ours):.2f} MB",
            f"{growth(peer):.2f} MB",
            fmt_ratio(growth(peer) / growth(ours)) if growth(ours) > 0 else "-",
            TARGETS["memory"],
        ),
        (
            f"start-up, whole process, {up['events']:,}-event log",
            f"{up['ours']:.2f} s",
            f"{up['peer']:.2f} s",
            fmt_ratio(up["peer"] / up["ours"]),
            TARGETS["startup"],
        ),
    ]
    if watch is not None:
        rows.append(
            (
                f"serve CPU with {watch['running']} real jobs running",
                f"{watch['cpu_pct']:.1f}% of a core",
                "-",
                "-",
                TARGETS["cpu"],
            )
        )
    header = ("metric", f"ours ({trials:,} trials)", f"Optuna ({peer_trials:,} trials)", "ratio", "target")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print()
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print()
    half = len(peer["delay"]) // 2
    first, second = peer["delay"][:half], peer["delay"][half:]
    print(
        f"ratio: how many times better ours is (above 1: ours is better). Our log: {ours['events']:,} events "
        f"in {ours['wall']:.1f} s; Optuna: {peer['wall']:.1f} s."
    )
    print(
        f"Optuna's delay is one objective's return to the next one's start (tell, ask, sample: it has no job to "
        f"dispatch); median {1e3 * med(first):.1f} ms over its first half, {1e3 * med(second):.1f} ms over its "
        f"second."
    )
    print(f"Start-up: a bare `python -c pass` takes {up['python']:.2f} s here; best of 3 runs each.")
    if watch is not None:
        print(
            f"Real jobs: all {watch['running']} running {watch['ramp']:.1f} s after serve started; CPU over "
            f"{watch['window']:.1f} s ({watch['ended_in_window']} ended inside the window); serve RSS "
            f"{watch['rss']:.0f} MB; the whole sweep ({2 * watch['jobs']} jobs) took {watch['total']:.1f} s."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
