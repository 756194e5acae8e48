"""A sweep at cloud scale through the real service and the real SkyPilot dispatcher, against a simulated SkyPilot.

    python benchmarks/scale.py                       # 1,000 jobs in flight, 20,000 trials (see --help)
    python benchmarks/scale.py --trials 2000 --parallel 200

``python -m orchestrator serve`` runs a sweep with ``dispatcher_type = "skypilot"`` (train and eval jobs both
managed jobs), random search and the W&B mirror off, so what is measured is the orchestrator. The SDK seam is
``benchmarks.simsky:shared``: launch latency, a managed-jobs controller that queues jobs beyond its launching and
running limits, 5% of the jobs preempted once and recovered by SkyPilot, and occasional API errors, with time
compressed (``--speedup`` simulated seconds per real second; every duration below is simulated).

Reported: serve's CPU share (of one core, over the run) and its peak memory, events per second, SDK calls per
simulated minute, the time from a job's end to the next launch, and whether any job was lost (a trial without
its result) or launched twice (two launch requests for one job name). Overhead = the simulated seconds the
orchestrator's dispatch delay (job end to next launch) adds, over the simulated cluster time (GPU-seconds of
running jobs).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """
max_trials = {trials}
max_parallel_jobs = {parallel}
monitoring_interval = 600
recipe_module = "recipes.toy"
max_retries = 2
retry_backoff = 1
seed = 1
dispatcher_type = "skypilot"

[wandb]
mode = "disabled"

[protein_config]
metric = "score"
method = "random"

[protein_config.parameters."toy.x"]
distribution = "uniform"
min = -1.0
max = 1.0

[dispatcher_options.skypilot]
gpus = "A10G:1"
poll_interval = {poll}
max_launches_in_flight = {launches}
api_backoff = {backoff}
sdk = "benchmarks.simsky:shared"
sdk_options = {{stats_path = "{stats}", speedup = {speedup}, train_s = {train_s}, eval_s = {eval_s}, \
launching_limit = {launching_limit}, running_limit = {running_limit}, api_error_rate = {api_error_rate}}}
"""


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=20000)
    p.add_argument("--parallel", type=int, default=1000, help="jobs in flight (max_parallel_jobs)")
    p.add_argument("--speedup", type=float, default=600.0, help="simulated seconds per real second")
    p.add_argument("--train-s", type=float, default=3600.0, help="simulated train job length (+-30%%)")
    p.add_argument("--eval-s", type=float, default=300.0, help="simulated eval job length")
    p.add_argument("--poll", type=float, default=15.0, help="simulated seconds between status reads")
    p.add_argument("--launches", type=int, default=16, help="max_launches_in_flight")
    p.add_argument("--launching-limit", type=int, default=128, help="controller: jobs provisioning at once")
    p.add_argument("--running-limit", type=int, default=2000, help="controller: jobs running at once")
    p.add_argument("--api-error-rate", type=float, default=0.002)
    p.add_argument("--timeout", type=float, default=1800.0, help="real seconds before the run is abandoned")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    stats_path = work / "simsky.json"
    (work / "sweep.toml").write_text(
        SWEEP.format(
            trials=args.trials,
            parallel=args.parallel,
            poll=args.poll / args.speedup,
            launches=args.launches,
            backoff=1.0 / args.speedup * 10,
            stats=stats_path,
            speedup=args.speedup,
            train_s=args.train_s,
            eval_s=args.eval_s,
            launching_limit=args.launching_limit,
            running_limit=args.running_limit,
            api_error_rate=args.api_error_rate,
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "orchestrator", "serve", "--sweep", "scale", "--config", "sweep.toml"]
    argv += ["--log-format", "json"]
    print(f"bench-scale: {args.trials} trials, {args.parallel} jobs in flight, speedup {args.speedup:g}x, in {work}")
    t0 = time.monotonic()
    with open(work / "serve.log", "w") as log:
        proc = subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    cpu = peak = 0.0
    while proc.poll() is None:
        try:
            cpu, peak = proc_cpu_seconds(proc.pid), max(peak, proc_peak_rss_mib(proc.pid))
        except (OSError, IndexError):
            pass
        if time.monotonic() - t0 > args.timeout:
            proc.kill()
            print("bench-scale: timed out")
            break
        time.sleep(0.5)
    wall = time.monotonic() - t0
    report(work, stats_path, args, wall, cpu, peak, proc.returncode)


def report(
    work: Path, stats_path: Path, args: argparse.Namespace, wall: float, cpu: float, peak: float, rc: int
) -> None:
    stats = json.loads(stats_path.read_text())
    db = sqlite3.connect(work / "train_dir" / "scale" / "events.db")
    (events,) = db.execute("select count(*) from events").fetchone()
    types = dict(db.execute("select type, count(*) from events group by type").fetchall())
    sim_minutes = stats["sim_seconds"] / 60
    calls = stats["calls"]
    ends, launches = sorted(stats["ends"]), sorted(stats["launch_times"])
    # For each job end, the first launch after it (the freed slot filled). An upper bound of the dispatch delay:
    # it includes the wait for the next status read or log line, and every real millisecond the service spends
    # counts as `speedup` simulated milliseconds.
    gaps = [launches[i] - end for end in ends if (i := bisect.bisect_left(launches, end)) < len(launches)]
    overhead = sum(gaps) / stats["busy_s"] if stats["busy_s"] else float("nan")
    completed = types.get("TrialCompleted", 0)
    lost = args.trials - completed
    rows = [
        ("serve exit code", f"{rc}"),
        ("trials completed / asked", f"{completed} / {args.trials}"),
        ("jobs launched (SkyPilot jobs)", f"{stats['jobs']}"),
        ("jobs launched twice", f"{len(stats['launched_twice'])}"),
        ("trials lost (no result)", f"{lost}"),
        ("wall time (real)", f"{wall:.0f} s"),
        ("simulated time", f"{stats['sim_seconds'] / 3600:.1f} h"),
        ("serve CPU share (of one core)", f"{100 * cpu / wall:.1f}%"),
        ("serve peak memory (RSS)", f"{peak:.0f} MiB"),
        ("events / s (real)", f"{events / wall:.0f} ({events} events)"),
        ("SDK calls / simulated minute", f"{sum(calls.values()) / sim_minutes:.1f}"),
        ("  of which batched status reads", f"{calls.get('managed_jobs (status read)', 0) / sim_minutes:.1f}"),
        ("SDK calls by method", ", ".join(f"{k}: {v}" for k, v in sorted(calls.items()))),
        ("API errors injected / preemptions", f"{stats['api_errors']} / {stats['preemptions']}"),
        ("job end -> next launch (median, p95)", fmt_gaps(gaps, args.speedup)),
        ("sum of those delays / cluster time", f"{100 * overhead:.2f}%"),
        ("serve CPU / cluster time", f"{100 * cpu * args.speedup / stats['busy_s']:.4f}%"),
    ]
    print("\n| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def fmt_gaps(gaps: list[float], speedup: float) -> str:
    if len(gaps) < 2:
        return "n/a"
    median, p95 = statistics.median(gaps), statistics.quantiles(gaps, n=20)[-1]
    return (
        f"{median:.0f} s, {p95:.0f} s simulated ({1000 * median / speedup:.0f} ms, {1000 * p95 / speedup:.0f} ms real)"
    )


if __name__ == "__main__":
    main()
