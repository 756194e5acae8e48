"""Parallel sweeps: regret at equal trials with 1, 4 and 8 trials in flight, completions out of order.

    python benchmarks/parallel.py            # Branin, Hartmann-6 and Mixed-4 (a categorical), 5 seeds
    python benchmarks/parallel.py --quick    # Branin, 3 seeds
    python benchmarks/parallel.py --problems Mixed --seeds 8

A simulated pool of ``q`` workers: each trial takes a random time (exponential, seeded, the same for every
method), a worker that finishes reports and at once asks for a new point while the other ``q - 1`` are still
running. Protein gets the running points as ``pending`` (it fantasizes them); Optuna's TPE runs with
``constant_liar=True`` (running trials count as bad). The same functions and spaces as benchmarks/optimizer.py,
Protein with its defaults. Mixed-4 has a categorical (the activation) whose choice moves the best learning
rate, so a fantasized point in flight must also steer the other workers' choices. Reports the median simple
regret after the trial budget, how many seeds are stuck (above the problem's threshold in benchmarks/optimizer.py),
how much parallelism costs each method (median regret at q over median regret at q=1) and TPE's median over ours.
"""

from __future__ import annotations

import argparse
import heapq
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from optimizer import fmt, make_function, make_sampler, optuna_distributions, select  # noqa: E402

IN_FLIGHT = [1, 4, 8]
METHODS = ("protein", "tpe")


def run(problem_name: str, budget: int, method: str, q: int, seed: int) -> float:
    """Simple regret after ``budget`` completed trials with ``q`` in flight."""
    import torch

    torch.set_num_threads(1)
    spec, optimum, evaluate = make_function(problem_name)
    durations = np.random.default_rng([seed, 99]).exponential(1.0, budget + q)
    if method == "protein":
        from optimizers import Tuner

        tuner = Tuner(spec, goal="minimize", seed=seed, budget=budget)
        ask, tell = (lambda: tuner.ask()), (lambda handle, params, value: tuner.tell(params, value))
    else:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="minimize", sampler=make_sampler(method, seed, constant_liar=True))
        dists, to_ours = optuna_distributions(spec)

        def ask():
            trial = study.ask(dists)
            return trial, to_ours(trial.params)

        def tell(handle, params, value):
            study.tell(handle, value)

    running: list = []  # (finish time, order, handle, params)
    clock, started, done, best = 0.0, 0, 0, np.inf
    while done < budget:
        while len(running) < q and started < budget:
            asked = ask()
            handle, params = (None, asked) if method == "protein" else asked
            heapq.heappush(running, (clock + durations[started], started, handle, params))
            started += 1
        clock, _, handle, params = heapq.heappop(running)
        value, _ = evaluate(params)
        tell(handle, params, value)
        best = min(best, value)
        done += 1
    return best - optimum


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--problems", default="Branin,Hartmann-6,Mixed-4", help="comma-separated names or name prefixes")
    args = ap.parse_args()
    seeds = args.seeds or (3 if args.quick else 5)
    wanted = ["Branin"] if args.quick else args.problems.split(",")
    problems = [p for p in select(wanted) if not p.cost_aware]
    jobs = [(p.name, p.budget, m, q, s) for s in range(seeds) for p in problems for m in METHODS for q in IN_FLIGHT]
    started = time.time()
    regrets = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = {pool.submit(run, *job): job for job in jobs}
        for fut in as_completed(futures):
            regrets[futures[fut]] = fut.result()
            print("run", futures[fut], fmt(regrets[futures[fut]]), flush=True)  # partial results survive a stop
    print(f"{len(jobs)} runs, {seeds} seeds, {time.time() - started:.0f} s wall\n")
    print(
        "| problem (trials) | in flight | Protein / stuck | TPE (constant liar) / stuck | Protein q / q=1 | "
        "TPE q / q=1 | TPE/ours |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for p in problems:
        runs = {
            (m, q): [regrets[(p.name, p.budget, m, q, s)] for s in range(seeds)] for m in METHODS for q in IN_FLIGHT
        }
        med = {k: float(np.median(v)) for k, v in runs.items()}
        stuck = {k: sum(r > p.stuck for r in v) for k, v in runs.items()}
        for q in IN_FLIGHT:
            ours, tpe = med[("protein", q)], med[("tpe", q)]
            print(
                f"| {p.name} ({p.budget}) | {q} | {fmt(ours)} / {stuck[('protein', q)]} of {seeds} | "
                f"{fmt(tpe)} / {stuck[('tpe', q)]} of {seeds} | {ratio(ours, med[('protein', 1)])} | "
                f"{ratio(tpe, med[('tpe', 1)])} | {ratio(tpe, ours)} |"
            )


def ratio(a: float, b: float) -> str:
    return fmt(a / b) if b > 0 else "-"


if __name__ == "__main__":
    main()
