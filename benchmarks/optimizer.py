"""Protein against its peers on botorch.test_functions, side by side, equal budgets.

    python benchmarks/optimizer.py            # full: 8 seeds, ~15 min on 2 cores
    python benchmarks/optimizer.py --quick    # 3 seeds, shorter budgets, timing up to 1000 observations

Peers: random search, Optuna's TPESampler and Optuna's GPSampler (all Optuna samplers seeded). Every function
is minimized (Protein runs with goal='minimize', so that path is exercised too). For each function the table
shows the median and the interquartile range of simple regret at the trial budget, and each peer's median as a
ratio to ours (above 1: we are better). The cost-aware problem is a multi-fidelity Hartmann-6: a seventh
parameter ``fidelity`` in [0, 1] plays the part of total_timesteps (more is slightly better and costs more,
cost = 0.1 + fidelity); it is scored at equal total cost. Then the time of one suggestion with 100 ... 2000
observations already made.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METHODS = ["protein", "random", "tpe", "gpsampler"]
COST_BUDGET = 40.0  # total cost for the cost-aware problem (a full-fidelity trial costs 1.1)
MAX_COST_TRIALS = 160


@dataclass(frozen=True)
class Problem:
    name: str
    budget: int
    cost_aware: bool = False


PROBLEMS = [
    Problem("Branin", 50),
    Problem("Hartmann-6", 80),
    Problem("Levy-4", 50),
    Problem("Ackley-5", 50),
    Problem("Rosenbrock-4", 50),
    Problem("MF-Hartmann-6 (cost)", 50, cost_aware=True),
]


def make_function(name: str):
    import torch
    from botorch.test_functions import Ackley, Branin, Hartmann, Levy, Rosenbrock
    from botorch.test_functions.multi_fidelity import AugmentedHartmann

    fn = {
        "Branin": lambda: Branin(),
        "Hartmann-6": lambda: Hartmann(dim=6),
        "Levy-4": lambda: Levy(dim=4),
        "Ackley-5": lambda: Ackley(dim=5, bounds=[(-5.0, 10.0)] * 5),
        "Rosenbrock-4": lambda: Rosenbrock(dim=4),
        "MF-Hartmann-6 (cost)": lambda: AugmentedHartmann(),
    }[name]()
    bounds = fn.bounds.numpy()
    names = [f"x{i}" for i in range(fn.dim)]
    if name.startswith("MF"):
        names[-1] = "fidelity"
    optimum = float(fn.optimal_value)

    def evaluate(params: dict) -> tuple[float, float]:
        x = torch.tensor([[float(params[n]) for n in names]], dtype=torch.float64)
        value = float(fn(x))
        cost = 0.1 + float(params["fidelity"]) if "fidelity" in params else 1.0
        return value, cost

    return names, bounds, optimum, evaluate


def run(problem: Problem, method: str, seed: int) -> dict:
    """One optimization run; returns the trace of (value, cost) and the wall time spent suggesting."""
    import torch

    torch.set_num_threads(1)
    names, bounds, optimum, evaluate = make_function(problem.name)
    values: list[float] = []
    costs: list[float] = []
    suggest_time = 0.0

    def done() -> bool:
        if problem.cost_aware:  # enough for both scores: the cost budget and the trial budget
            spent = sum(costs) >= COST_BUDGET and len(values) >= problem.budget
            return spent or len(values) >= MAX_COST_TRIALS
        return len(values) >= problem.budget

    if method == "protein":
        from optimizers import Observation, ProteinConfig
        from optimizers.protein import Protein

        config = ProteinConfig(
            goal="minimize",
            parameters={
                n: {"distribution": "uniform", "min": float(lo), "max": float(hi), "scale": 1.0}
                for n, lo, hi in zip(names, bounds[0], bounds[1])
            },
        )
        opt = Protein(config, seed=seed)
        obs: list = []
        while not done():
            t = time.perf_counter()
            params = opt.suggest(obs, [], 1)[0].params
            suggest_time += time.perf_counter() - t
            value, cost = evaluate(params)
            obs.append(Observation(params, value, cost))
            values.append(value)
            costs.append(cost)
    else:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = {
            "random": lambda: optuna.samplers.RandomSampler(seed=seed),
            "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
            "gpsampler": lambda: optuna.samplers.GPSampler(seed=seed),
        }[method]()
        study = optuna.create_study(direction="minimize", sampler=sampler)
        dists = {
            n: optuna.distributions.FloatDistribution(float(lo), float(hi))
            for n, lo, hi in zip(names, bounds[0], bounds[1])
        }
        while not done():
            t = time.perf_counter()
            trial = study.ask(dists)
            params = dict(trial.params)
            suggest_time += time.perf_counter() - t
            value, cost = evaluate(params)
            study.tell(trial, value)
            values.append(value)
            costs.append(cost)
    return {"values": values, "costs": costs, "optimum": optimum, "suggest_time": suggest_time}


def regret_at_trials(trace: dict, budget: int) -> float:
    return min(trace["values"][:budget]) - trace["optimum"]


def regret_at_cost(trace: dict, budget: float) -> float:
    spent, best = 0.0, math.inf
    for v, c in zip(trace["values"], trace["costs"]):
        spent += c
        if spent > budget + 1e-9:
            break
        best = min(best, v)
    return best - trace["optimum"]


# ---------------------------------------------------------------------- timing of one suggestion


def time_suggestion(method: str, n: int, seed: int = 0) -> float:
    import torch

    torch.set_num_threads(1)
    from botorch.test_functions import Hartmann

    fn = Hartmann(dim=6)
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, 6))
    Y = fn(torch.tensor(X)).numpy()
    names = [f"x{i}" for i in range(6)]
    if method == "protein":
        from optimizers import Observation, ProteinConfig
        from optimizers.protein import Protein

        config = ProteinConfig(
            goal="minimize",
            parameters={n_: {"distribution": "uniform", "min": 0.0, "max": 1.0, "scale": 1.0} for n_ in names},
        )
        obs = [Observation(dict(zip(names, map(float, x))), float(y), 1.0) for x, y in zip(X, Y)]
        opt = Protein(config, seed=seed)
        t = time.perf_counter()
        opt.suggest(obs, [], 1)
        return time.perf_counter() - t
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed) if method == "tpe" else optuna.samplers.GPSampler(seed=seed)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    dists = {n_: optuna.distributions.FloatDistribution(0.0, 1.0) for n_ in names}
    study.add_trials(
        [
            optuna.trial.create_trial(params=dict(zip(names, map(float, x))), distributions=dists, value=float(y))
            for x, y in zip(X, Y)
        ]
    )
    t = time.perf_counter()
    study.ask(dists)
    return time.perf_counter() - t


# ---------------------------------------------------------------------- report


def fmt(v: float) -> str:
    if v == 0:
        return "0"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 seeds, shorter budgets, timing up to 1000")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--problems", default=None, help="comma-separated subset of problem names (none: timing only)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    seeds = args.seeds or (3 if args.quick else 8)
    methods = args.methods.split(",")
    problems = [p for p in PROBLEMS if not args.problems or p.name in args.problems.split(",")]
    if args.quick:
        problems = [Problem(p.name, min(p.budget, 40), p.cost_aware) for p in problems]

    jobs = [(p, m, s) for p in problems for m in methods for s in range(seeds)]
    # Slow jobs first so the pool does not end on one straggler.
    jobs.sort(key=lambda j: (j[1] not in ("protein", "gpsampler"), -j[0].budget))
    started = time.time()
    if jobs:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            traces = dict(zip(jobs, pool.map(run, *zip(*jobs))))
        print(f"\n{len(jobs)} runs, {seeds} seeds, {time.time() - started:.0f} s wall\n")
        report(problems, methods, seeds, jobs, traces)

    if not args.no_timing:
        sizes = [100, 300, 1000] if args.quick else [100, 300, 1000, 2000]
        print("\nOne suggestion after n observations (Hartmann-6, random observations), seconds:\n")
        print("| n | protein | tpe | gpsampler | gpsampler/protein |")
        print("| --- | --- | --- | --- | --- |")
        for m in ("protein", "tpe", "gpsampler"):
            time_suggestion(m, 20)  # warm up: imports and first-call costs are not a suggestion's
        for n in sizes:
            t = {m: time_suggestion(m, n) for m in ("protein", "tpe", "gpsampler")}
            print(
                f"| {n} | {t['protein']:.3f} | {t['tpe']:.3f} | {t['gpsampler']:.2f} | "
                f"{t['gpsampler'] / t['protein']:.1f}x |",
                flush=True,
            )
    print(f"\ntotal {time.time() - started:.0f} s")


def report(problems, methods, seeds, jobs, traces) -> None:
    print("Median simple regret (interquartile range) at the trial budget; ratio = peer median / ours.\n")
    header = (
        "| function | budget | "
        + " | ".join(methods)
        + " | "
        + " | ".join(f"{m}/ours" for m in methods if m != "protein")
        + " |"
    )
    print(header)
    print("|" + " --- |" * (2 + len(methods) + len(methods) - 1))
    for p in problems:
        for label, score in _scorers(p):
            med, cells = {}, []
            for m in methods:
                r = np.array([score(traces[(p, m, s)]) for s in range(seeds)])
                med[m] = float(np.median(r))
                q1, q3 = np.percentile(r, [25, 75])
                cells.append(f"{fmt(med[m])} ({fmt(q1)}-{fmt(q3)})")
            ratios = (
                [fmt(med[m] / med["protein"]) if med["protein"] > 0 else "inf" for m in methods if m != "protein"]
                if "protein" in methods
                else []
            )
            print(f"| {p.name} | {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    tsug = {
        m: np.mean([traces[j]["suggest_time"] / max(1, len(traces[j]["values"])) for j in jobs if j[1] == m])
        for m in methods
    }
    print("\nMean time per suggestion during the runs: " + ", ".join(f"{m} {tsug[m]:.3f} s" for m in methods))


def _scorers(p: Problem):
    if p.cost_aware:
        return [
            (f"{p.budget} trials", lambda tr: regret_at_trials(tr, p.budget)),
            (f"cost {COST_BUDGET:g}", lambda tr: regret_at_cost(tr, COST_BUDGET)),
        ]
    return [(f"{p.budget} trials", lambda tr: regret_at_trials(tr, p.budget))]


if __name__ == "__main__":
    main()
