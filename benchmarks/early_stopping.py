"""Early stopping at equal total training cost, on synthetic learning curves.

    python benchmarks/early_stopping.py                    # crossing curves, 5 seeds (~4 min on 2 cores)
    python benchmarks/early_stopping.py --family ordered   # curves that keep their early ranks
    python benchmarks/early_stopping.py --seeds 3          # quicker

The curve family: saturating exponentials with crossing, noisy curves. A trial with parameters x, y (uniform in
[0, 1]) and lr (log-uniform in [1e-4, 1e-1]) scores ``a * (1 - exp(-r * t / T))`` at step t of T = 81, where the
asymptote ``a = 1 - (x - 0.7)**2 - 0.5 * (y - 0.3)**2 - 0.15 * log10(lr / 3e-3)**2`` and the rate
``r = 3 * (lr / 3e-3) ** 0.7``: a large learning rate rises fast to a low plateau, a small one slowly to a higher
one, so early leaders are often not the final winners (Hertel et al.'s warning about RL curves). Every report and
the final score get Gaussian noise (sd 0.03). A step costs 1; every method gets the same total: BUDGET_TRIALS full
trials' worth of steps.

Methods: Protein without stopping, Protein + median, Protein + ASHA (the rule of
orchestrator/core/early_stopping.py, grace 3 steps, reduction factor 3, min_trials 5; a stopped trial is observed
at its last reported value and the steps it spent; ``/fail``: observed as a failure instead), and Optuna TPE +
HyperbandPruner / + MedianPruner reporting the same curves each step.
Scores: the true (noise-free) final value of the trial each method would pick (its best observed final score),
and the cost at which a method first completed a trial whose true final value reached the no-stopping sweep's.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from orchestrator.core.early_stopping import judge, rung_of  # noqa: E402

T = 81
NOISE = 0.03
BUDGET_TRIALS = 16
SETTINGS = {"grace_steps": 3.0, "reduction_factor": 3.0, "min_trials": 5}
METHODS = ["protein", "protein+median", "protein+asha", "protein+asha/fail", "tpe+hyperband", "tpe+median"]
FAMILY = {"name": "crossing"}  # --family ordered: every curve rises at the same rate, so early ranks hold
SPACE = {
    "x": {"distribution": "uniform", "min": 0.0, "max": 1.0, "scale": "auto"},
    "y": {"distribution": "uniform", "min": 0.0, "max": 1.0, "scale": "auto"},
    "lr": {"distribution": "log_normal", "min": 1e-4, "max": 1e-1, "scale": "auto"},
}


def true_curve(p: dict, t: float) -> float:
    a = 1 - (p["x"] - 0.7) ** 2 - 0.5 * (p["y"] - 0.3) ** 2 - 0.15 * math.log10(p["lr"] / 3e-3) ** 2
    r = 3 * (p["lr"] / 3e-3) ** 0.7 if FAMILY["name"] == "crossing" else 3.0
    return a * (1 - math.exp(-r * t / T))


def run_protein(method: str, seed: int) -> list[tuple[float, float, float]]:
    """(cost so far, observed final, true final) of every completed trial, in order."""
    from optimizers import Observation, ProteinConfig
    from optimizers.protein import Protein

    rng = np.random.default_rng(seed)
    opt = Protein(ProteinConfig(goal="maximize", metric="score", parameters=SPACE), seed=seed)
    rule, _, observe = (method.partition("+")[2] or "none").partition("/")
    rungs: dict[int, list[tuple[int, float]]] = {}
    obs: list = []
    done: list[tuple[float, float, float]] = []
    spent, n = 0.0, 0
    while spent < BUDGET_TRIALS * T:
        n += 1
        params = opt.suggest(obs, [], 1)[0].params
        best, stopped_at, last = -math.inf, None, 0.0
        for t in range(1, T + 1):
            spent += 1
            last = true_curve(params, t) + rng.normal(0, NOISE)
            best = max(best, last)
            reached = rung_of(t, SETTINGS)
            if rule != "none" and t < T and rung_of(t - 1, SETTINGS) < reached:
                rungs.setdefault(reached, []).append((n, best))
                if judge(rule, tuple(rungs[reached]), SETTINGS, minimize=False) is not None:
                    stopped_at = t
                    break
            if spent >= BUDGET_TRIALS * T:
                break
        if stopped_at is not None and observe == "fail":  # the alternative: an imputed failure
            obs.append(Observation(params, None, float(stopped_at), failed=True))
        elif stopped_at is not None:  # what the service does: the last reported value at the cost spent
            obs.append(Observation(params, last, float(stopped_at)))
        elif t == T:
            final = true_curve(params, T)
            observed = final + rng.normal(0, NOISE)
            obs.append(Observation(params, observed, float(T)))
            done.append((spent, observed, final))
    return done


def run_optuna(method: str, seed: int) -> list[tuple[float, float, float]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(seed)
    pruner = (
        optuna.pruners.HyperbandPruner(min_resource=3, max_resource=T, reduction_factor=3)
        if method.endswith("hyperband")
        else optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)
    )
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    done: list[tuple[float, float, float]] = []
    spent = 0.0
    while spent < BUDGET_TRIALS * T:
        trial = study.ask()
        params = {
            "x": trial.suggest_float("x", 0, 1),
            "y": trial.suggest_float("y", 0, 1),
            "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        }
        pruned = False
        for t in range(1, T + 1):
            spent += 1
            trial.report(true_curve(params, t) + rng.normal(0, NOISE), t)
            if t < T and trial.should_prune():
                pruned = True
                break
            if spent >= BUDGET_TRIALS * T:
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif t == T:
            final = true_curve(params, T)
            observed = final + rng.normal(0, NOISE)
            study.tell(trial, observed)
            done.append((spent, observed, final))
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return done


def picked(done: list[tuple[float, float, float]]) -> float:
    """The true final value of the trial with the best observed final score."""
    return max(done, key=lambda d: d[1])[2] if done else -math.inf


def cost_to_reach(done: list[tuple[float, float, float]], target: float) -> float:
    return next((c for c, _, true in done if true >= target), math.inf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--family", choices=["crossing", "ordered"], default="crossing")
    args = parser.parse_args()
    FAMILY["name"] = args.family
    logging.disable(logging.WARNING)
    budget = BUDGET_TRIALS * T
    results: dict[str, list[list]] = {m: [] for m in METHODS}
    start = time.time()
    for seed in range(args.seeds):
        for m in METHODS:
            results[m].append(run_protein(m, seed) if m.startswith("protein") else run_optuna(m, seed))
        print(f"seed {seed} done ({time.time() - start:.0f}s)", flush=True)
    base = [picked(d) for d in results["protein"]]
    print(f"\n{args.family} curves, {args.seeds} seeds, medians.")
    print(f"Equal total cost {budget:.0f} steps ({BUDGET_TRIALS} full trials).")
    header = f"{'method':<16} {'trials done':>11} {'true final':>11} {'regret ratio':>13} "
    header += f"{'cost to reach':>14} {'reached':>8}"
    print(header + "\n" + "-" * len(header))
    best_possible = 1.0
    for m in METHODS:
        finals = [picked(d) for d in results[m]]
        regret = statistics.median(best_possible - f for f in finals)
        ratio = regret / statistics.median(best_possible - b for b in base)
        costs = [cost_to_reach(d, b) / budget for d, b in zip(results[m], base)]
        reached = sum(math.isfinite(c) for c in costs)
        cost = statistics.median(costs)
        print(
            f"{m:<16} {statistics.median(len(d) for d in results[m]):>11.0f} {statistics.median(finals):>11.4f} "
            f"{ratio:>13.2f} {cost:>13.2f}x {reached:>5}/{args.seeds}"
        )
    print("\nregret ratio: median (1 - true final) over Protein without stopping's (below 1: better).")
    print("cost to reach: median cost (x the budget) to complete a trial as good as Protein without stopping's pick.")


if __name__ == "__main__":
    main()
