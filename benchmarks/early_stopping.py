"""Early stopping at equal total training cost, on synthetic learning curves (part (a) of the benchmark).

    python benchmarks/early_stopping.py                      # both families, 12 seeds, 2 processes (~30 min)
    python benchmarks/early_stopping.py --family realistic --seeds 4 --methods protein,protein+asha

Curves: a trial with parameters x, y (uniform in [0, 1]) and lr (log-uniform in [1e-4, 1e-1]) scores
``a * (1 - exp(-r * t / T))`` at step t of T = 81, with the asymptote
``a = 1 - (x - 0.7)**2 - 0.5 * (y - 0.3)**2 - 0.15 * log10(lr / 3e-3)**2`` (best 1.0) and a rate r that grows with
the learning rate, so a large learning rate rises fast to a lower plateau. Every report and the final score get
Gaussian noise (sd 0.03). Two families (``rank_correlations`` prints how well each rung predicts the end):

- ``realistic``: ``r = 12 * (lr / 3e-3) ** 0.15``: a middling trial is at a third of its plateau at the first rung
  and at 98% by step 27; mostly rank-preserving, with some crossing, as published PPO and LCBench curves are;
- ``crossing``: ``r = 3 * (lr / 3e-3) ** 0.7``: every fast learner plateaus low and the best trials start slowest,
  an adversarial family for any stopping rule (Hertel et al.'s warning about RL curves, arXiv 2007.14604).

A step costs 1; every method gets the same total, BUDGET_TRIALS full trials' steps, and runs one trial at a time.
Methods: Protein without stopping, Protein + median, Protein + ASHA (the service's rule,
orchestrator/core/early_stopping.py: grace 9 steps, reduction factor 3, min_trials 5), and Optuna TPE +
HyperbandPruner / + MedianPruner fed the same reports. What Protein is told about a stopped trial (the suffix):

- ``/spent``: its last reported value at the cost it spent (cheap-looking);
- ``/full``: its last reported value at the cost a completed trial would have had (every run here costs T, so
  this is what an unknown cost, left out of Protein's cost model, amounts to: the service tells NaN);
- ``/lift``: as ``/full``, at its value at the rung plus the median gain completed trials made from that rung to
  the end (what the service does: orchestrator/core/early_stopping.py, ``imputed_score``);
- ``/fail``: a failure at the cost it spent.

Scores: the true (noise-free) final value of the trial each method would pick (its best observed final score),
and the cost at which it first completed a trial whose true final value reached Protein without stopping's pick.
Runs are cached in ``--results`` (one JSON line per family, method and seed), so a longer run reuses a shorter one.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from orchestrator.core.early_stopping import judge, rung_of  # noqa: E402

T = 81
NOISE = 0.03
BUDGET_TRIALS = 40
SETTINGS = {"grace_steps": 9.0, "reduction_factor": 3.0, "min_trials": 5}
FAMILIES = {"realistic": (12.0, 0.15), "crossing": (3.0, 0.7)}  # r = r0 * (lr / 3e-3) ** exponent
METHODS = [
    "protein",
    "protein+median/lift",
    "protein+asha/spent",
    "protein+asha/full",
    "protein+asha/lift",
    "tpe+hyperband",
    "tpe+median",
]
SPACE = {
    "x": {"distribution": "uniform", "min": 0.0, "max": 1.0, "scale": "auto"},
    "y": {"distribution": "uniform", "min": 0.0, "max": 1.0, "scale": "auto"},
    "lr": {"distribution": "log_normal", "min": 1e-4, "max": 1e-1, "scale": "auto"},
}
Done = list[tuple[float, float, float]]  # (cost so far, observed final, true final) of every completed trial


def true_curve(p: dict[str, float], t: float, family: str) -> float:
    a = 1 - (p["x"] - 0.7) ** 2 - 0.5 * (p["y"] - 0.3) ** 2 - 0.15 * math.log10(p["lr"] / 3e-3) ** 2
    r0, exponent = FAMILIES[family]
    return a * (1 - math.exp(-r0 * (p["lr"] / 3e-3) ** exponent * t / T))


def run_protein(family: str, method: str, seed: int, budget: float) -> dict[str, Any]:
    from optimizers import Observation, ProteinConfig
    from optimizers.protein import Protein

    rng = np.random.default_rng(seed)
    opt = Protein(ProteinConfig(goal="maximize", metric="score", parameters=SPACE), seed=seed)
    rule, _, told = (method.partition("+")[2] or "none").partition("/")
    rungs: dict[int, list[tuple[int, float]]] = {}
    at_rung: dict[int, dict[int, float]] = {}  # trial -> its best value when it reached each rung
    finals: dict[int, float] = {}  # completed trial -> its observed final score
    obs: list[Any] = []
    done: Done = []
    spent, n, stopped = 0.0, 0, 0
    while spent < budget:
        n += 1
        params = opt.suggest(obs, [], 1)[0].params
        best, stopped_at, last, k = -math.inf, None, 0.0, -1
        for t in range(1, T + 1):
            spent += 1
            last = true_curve(params, t, family) + rng.normal(0, NOISE)
            best = max(best, last)
            reached = rung_of(t, SETTINGS)
            if rule != "none" and t < T and rung_of(t - 1, SETTINGS) < reached:
                k = reached
                rungs.setdefault(k, []).append((n, best))
                at_rung.setdefault(n, {})[k] = best
                if judge(rule, tuple(rungs[k]), SETTINGS, minimize=False) is not None:
                    stopped_at = t
                    break
            if spent >= budget:
                break
        if stopped_at is not None:
            stopped += 1
            if told == "fail":
                obs.append(Observation(params, None, float(stopped_at), failed=True))
            elif told == "spent":
                obs.append(Observation(params, last, float(stopped_at)))
            elif told == "lift":
                gains = [v - at_rung[j][k] for j, v in finals.items() if k in at_rung.get(j, {})]
                lifted = at_rung[n][k] + statistics.median(gains) if gains else last
                obs.append(Observation(params, lifted, float(T)))
            else:
                obs.append(Observation(params, last, float(T)))
        elif t == T:
            final = true_curve(params, T, family)
            observed = final + rng.normal(0, NOISE)
            obs.append(Observation(params, observed, float(T)))
            finals[n] = observed
            done.append((spent, observed, final))
    return {"done": done, "trials": n, "stopped": stopped}


def run_optuna(family: str, method: str, seed: int, budget: float) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(seed)
    grace = int(SETTINGS["grace_steps"])
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.HyperbandPruner(min_resource=grace, max_resource=T, reduction_factor=3)
        if method.endswith("hyperband")
        else optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=grace - 1)
    )
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    done: Done = []
    spent, n, stopped = 0.0, 0, 0
    while spent < budget:
        n += 1
        trial = study.ask()
        params = {
            "x": trial.suggest_float("x", 0, 1),
            "y": trial.suggest_float("y", 0, 1),
            "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        }
        pruned = False
        for t in range(1, T + 1):
            spent += 1
            trial.report(true_curve(params, t, family) + rng.normal(0, NOISE), t)
            if t < T and trial.should_prune():
                pruned = True
                break
            if spent >= budget:
                break
        if pruned:
            stopped += 1
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif t == T:
            final = true_curve(params, T, family)
            observed = final + rng.normal(0, NOISE)
            study.tell(trial, observed)
            done.append((spent, observed, final))
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return {"done": done, "trials": n, "stopped": stopped}


def run_one(task: tuple[str, str, int, float]) -> dict[str, Any]:
    family, method, seed, budget = task
    logging.disable(logging.WARNING)
    start = time.time()
    run = run_protein if method.startswith("protein") else run_optuna
    out = run(family, method, seed, budget)
    return {"family": family, "method": method, "seed": seed, "budget": budget, "seconds": time.time() - start, **out}


def picked(done: Done) -> float:
    """The true final value of the trial with the best observed final score."""
    return max(done, key=lambda d: d[1])[2] if done else -math.inf


def cost_to_reach(done: Done, target: float) -> float:
    return next((c for c, _, true in done if true >= target), math.inf)


def rank_correlations(family: str, n: int = 2000) -> list[float]:
    """Spearman correlation between the value reported at each rung and the final score, over random trials."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    trials = [{"x": rng.uniform(), "y": rng.uniform(), "lr": 10 ** rng.uniform(-4, -1)} for _ in range(n)]
    final = [true_curve(p, T, family) + rng.normal(0, NOISE) for p in trials]
    out = []
    k = 0
    while (step := SETTINGS["grace_steps"] * SETTINGS["reduction_factor"] ** k) < T:
        early = [true_curve(p, step, family) + rng.normal(0, NOISE) for p in trials]
        out.append(float(spearmanr(early, final)[0]))
        k += 1
    return out


def _trials(r: dict[str, Any]) -> int:
    return int(r["trials"])


def _stopped(r: dict[str, Any]) -> int:
    return int(r["stopped"])


def _completed(r: dict[str, Any]) -> int:
    return len(r["done"])


def load_runs(path: Path) -> list[dict[str, Any]]:
    """The cached runs (one JSON object a line); none if the file does not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def by_method(runs: list[dict[str, Any]], methods: list[str]) -> tuple[dict[str, dict[int, Any]], list[int]]:
    """``runs`` by method and seed, and the seeds every method (and the reference, "protein") has a run for."""
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["method"], {})[r["seed"]] = r
    return by, sorted(set(by.get("protein", {})).intersection(*(by.get(m, {}) for m in methods)))


def table(family: str, runs: list[dict[str, Any]], methods: list[str], budget: float) -> list[str]:
    by, seeds = by_method([r for r in runs if r["family"] == family and r["budget"] == budget], methods)
    if not seeds:
        return [f"{family}: no seed has every method yet"]
    base = {s: picked(by["protein"][s]["done"]) for s in seeds}
    base_regret = statistics.median(1 - base[s] for s in seeds)
    lines = [
        f"{family} curves (rank correlation of rungs with the end: "
        + ", ".join(f"{c:.2f}" for c in rank_correlations(family))
        + f"), {len(seeds)} seeds, medians; equal total cost {budget:g} steps ({budget / T:g} full trials).",
        "",
        "| method | trials | stopped | completed | true final | regret ratio | cost to reach | seeds that reached it |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in methods:
        rs = [by[m][s] for s in seeds]
        finals = [picked(r["done"]) for r in rs]
        ratio = statistics.median(1 - f for f in finals) / base_regret
        costs = [cost_to_reach(r["done"], base[s]) / budget for r, s in zip(rs, seeds)]
        reached = sum(math.isfinite(c) for c in costs)
        counts = " | ".join(f"{statistics.median(f(r) for r in rs):.0f}" for f in (_trials, _stopped, _completed))
        lines.append(
            f"| {m} | {counts} | {statistics.median(finals):.4f} | {ratio:.2f}"
            f" | {statistics.median(costs):.2f}x | {reached}/{len(seeds)} |"
        )
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--family", choices=[*FAMILIES, "both"], default="both")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--budget-trials", type=float, default=BUDGET_TRIALS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--results", default="train_dir/bench_early_stopping.jsonl")
    args = parser.parse_args()
    families = list(FAMILIES) if args.family == "both" else [args.family]
    methods = args.methods.split(",")
    if "protein" not in methods:
        methods.insert(0, "protein")  # the reference every ratio is over
    budget = args.budget_trials * T
    path = Path(args.results)
    runs = load_runs(path)
    have = {(r["family"], r["method"], r["seed"], r["budget"]) for r in runs}
    tasks = [
        (f, m, s, budget) for s in range(args.seeds) for f in families for m in methods if (f, m, s, budget) not in have
    ]
    tasks.sort(key=lambda t: not t[1].startswith("protein+"))  # the long runs first, so the pool ends together
    start = time.time()
    with ProcessPoolExecutor(max_workers=args.workers) as pool, path.open("a") as out:
        for i, result in enumerate(pool.map(run_one, tasks)):
            runs.append(result)
            out.write(json.dumps(result) + "\n")
            out.flush()
            print(
                f"[{i + 1}/{len(tasks)}] {result['family']} {result['method']} seed {result['seed']}: "
                f"{result['trials']} trials, {result['seconds']:.0f} s ({time.time() - start:.0f} s)",
                flush=True,
            )
    print()
    for f in families:
        print("\n".join(table(f, runs, methods, budget)))
    print("regret ratio: median (1 - true final) over Protein without stopping's (below 1: better).")
    print("cost to reach: median cost (x the budget) to complete a trial as good as Protein without stopping's pick.")


if __name__ == "__main__":
    main()
