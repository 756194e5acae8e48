"""Protein against its peers on test functions, side by side, equal budgets, the defaults a user gets.

    python benchmarks/optimizer.py                     # 16 seeds, every problem (hours on 2 shared cores)
    python benchmarks/optimizer.py --quick             # 3 seeds, budgets up to 40, timing up to 1000
    python benchmarks/optimizer.py --problems Hartmann,Mixed --methods protein --seeds 8 --workers 2
    python benchmarks/optimizer.py --report-only       # the table from what the result file holds
    python benchmarks/optimizer.py --budget 16 --no-timing   # short sweeps: every problem at 16 trials
    python benchmarks/optimizer.py --noise 0.5 --no-timing   # noisy scores, as an RL return is
    python benchmarks/optimizer.py --inert 4 --problems Mixed   # each problem with 4 parameters it ignores
    python benchmarks/optimizer.py --problems PPO-12           # problems outside the table (EXTRA_PROBLEMS)

Protein runs with ParameterConfig's defaults (no ``scale``, no ``mean``: the search center is the middle of each
range) and default settings. Peers: random search, Optuna's TPESampler and Optuna's GPSampler (all seeded), given
the same space (log, integer, power-of-two exponents and categorical distributions). Every function is
minimized. Problems: the classic ones (Branin, Hartmann-6, Levy-4, Ackley-5 on [-5, 10], Rosenbrock-4), optima
near edges and corners (Styblinski-Tang-4 on [-3, 5], Levy-4 on [-10, 1.2], Levy-5 on [-2, 9.5]), multi-modal
ones (Schwefel-4 with its optimum near the edge, Shekel-4, Michalewicz-5's narrow ridges, Rastrigin-4 on
[-3.3, 5.12] so its optimum is off the center), mixed spaces (Mixed-5: log, power of two, integer and a
categorical with the optimum in the outer part of the ranges; Mixed-4: each activation has its own best
learning rate, the global one far from the usual default), a cost-aware multi-fidelity Hartmann-6 (a seventh
parameter ``fidelity`` in [0, 1] plays total_timesteps: cost = 0.1 + fidelity; scored at equal total cost too),
and sweeps of 8 to 11 parameters (Hartmann-6 with 4 parameters it ignores, Styblinski-Tang-8 on [-3, 5],
Rosenbrock-8, and PPO-11: a PPO-shaped space of log, power-of-two, integer and categorical parameters where the
activation sets the best learning rate and several weak parameters have their best near a range end).

For each problem the table shows the median simple regret at the trial budget and how many seeds are stuck:
their final regret is above the problem's stated threshold (STUCK_WHY says what that threshold separates).
Runs go to parallel processes (``--workers``), and each finished run is appended to a result file, so a long
run can be stopped, resumed, or reported while it goes. Then the time of one suggestion after n observations.

``--noise F`` adds Gaussian noise of sd F times the problem's stuck threshold to every value a method sees (the
same draws for every method at a seed), and scores a run by the true value of the trial it observed best: the
trial a user would pick, so a lucky draw is not a find.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METHODS = ["protein", "random", "tpe", "gpsampler"]
COST_BUDGET = 40.0  # total cost for the cost-aware problem (a full-fidelity trial costs 1.1)
MAX_COST_TRIALS = 160
RESULTS = "train_dir/bench_optimizer.jsonl"
ACTIVATIONS = ["relu", "gelu", "tanh", "sigmoid"]


@dataclass(frozen=True)
class Problem:
    name: str
    budget: int
    stuck: float  # a run whose final regret is above this is counted as stuck (the reason is in STUCK_WHY)
    cost_aware: bool = False


PROBLEMS = [
    Problem("Branin", 50, 0.1),
    Problem("Hartmann-6", 80, 0.1),
    Problem("Levy-4", 50, 1.0),
    Problem("Ackley-5", 50, 3.0),
    Problem("Rosenbrock-4", 50, 1000.0),
    Problem("MF-Hartmann-6 (cost)", 50, 0.1, cost_aware=True),
    Problem("Styblinski-Tang-4 (edge)", 50, 14.0),
    Problem("Levy-4 (corner)", 50, 1.0),
    Problem("Schwefel-4 (edge, multi-modal)", 60, 100.0),
    Problem("Shekel-4 (multi-modal)", 60, 3.0),
    Problem("Michalewicz-5 (multi-modal, ridges)", 50, 0.5),
    Problem("Rastrigin-4 (off-center)", 50, 0.9),
    Problem("Levy-5 (edge)", 50, 1.0),
    Problem("Mixed-5 (log, pow2, int, cat; edge)", 40, 0.1),
    Problem("Mixed-4 (cat-dependent optimum)", 40, 0.1),
    Problem("Hartmann-6 in 10-D (4 inert)", 80, 0.1),
    Problem("Styblinski-Tang-8 (edge)", 80, 14.0),
    Problem("Rosenbrock-8", 80, 1000.0),
    Problem("PPO-11 (mixed, weak parameters)", 80, 0.1),
]
# Problems outside the table, for checks on problems no change was tuned on (``--problems PPO-12``).
EXTRA_PROBLEMS = [Problem("PPO-12 (two categoricals)", 80, 0.1)]
STUCK_WHY = {
    "Branin": "well above the three equal minima",
    "Hartmann-6": "the local optimum at -3.2032 (regret 0.119) is stuck",
    "Levy-4": "the nearest local minima",
    "Ackley-5": "outside the central funnel",
    "Rosenbrock-4": "not yet in the valley",
    "MF-Hartmann-6 (cost)": "as Hartmann-6",
    "Styblinski-Tang-4 (edge)": "one coordinate in the other basin (+2.75) costs 14.1",
    "Levy-4 (corner)": "the nearest local minima",
    "Schwefel-4 (edge, multi-modal)": "one coordinate in a neighbouring basin costs ~119",
    "Shekel-4 (multi-modal)": "the other wells bottom out 5 or more above",
    "Michalewicz-5 (multi-modal, ridges)": "one coordinate off its narrow ridge costs 0.5 or more",
    "Rastrigin-4 (off-center)": "one coordinate in a neighbouring well costs ~1",
    "Levy-5 (edge)": "the nearest local minima",
    "Mixed-5 (log, pow2, int, cat; edge)": "a wrong activation costs at least 0.15",
    "Mixed-4 (cat-dependent optimum)": "the relu basin (regret 0.3) and the others",
    "Hartmann-6 in 10-D (4 inert)": "as Hartmann-6",
    "Styblinski-Tang-8 (edge)": "as Styblinski-Tang-4",
    "Rosenbrock-8": "as Rosenbrock-4",
    "PPO-11 (mixed, weak parameters)": "a wrong activation costs at least 0.15",
    "PPO-12 (two categoricals)": "a wrong activation or optimizer costs at least 0.15",
}


def select(wanted: list[str]) -> list[Problem]:
    """The problems named in ``wanted``: each a whole name (Hartmann-6 is not Hartmann-6 in 10-D) or, when it
    names none, a name prefix (Hartmann: both)."""
    every = PROBLEMS + EXTRA_PROBLEMS
    names = {p.name for p in every}
    return [p for p in every if any(p.name == w or (w not in names and p.name.startswith(w)) for w in wanted)]


def with_inert(problem: Problem, k: int) -> Problem:
    """``problem`` with ``k`` more parameters its function ignores, as a sweep often has (see make_function)."""
    return Problem(f"{problem.name} + {k} inert", problem.budget, problem.stuck, problem.cost_aware)


def _schwefel(x):
    return 418.9829 * len(x) - sum(v * math.sin(math.sqrt(abs(v))) for v in x)


def _mixed5(p: dict) -> float:
    lr, width, layers, wd = math.log10(p["lr"]), math.log2(p["width"]), p["layers"], math.log10(p["wd"])
    act = {"relu": 0.3, "gelu": 0.15, "tanh": 0.5, "sigmoid": 0.0}[p["act"]]
    return (
        0.5 * (lr + 1) ** 2
        + 0.05 * (width - 9) ** 2
        + 0.02 * (layers - 7) ** 2
        + 0.1 * (wd + 5) ** 2
        + 0.05 * (lr + 1) * (width - 9)
        + act
    )


def _mixed4(p: dict) -> float:
    # Each activation has its own best learning rate and floor: relu near the usual 1e-3 (a decent local
    # optimum), tanh at a high rate (the global one).
    best_lr, floor = {"relu": (-3.0, 0.3), "gelu": (-3.5, 0.4), "tanh": (-0.7, 0.0), "sigmoid": (-1.5, 0.2)}[p["act"]]
    lr, drop = math.log10(p["lr"]), p["dropout"]
    return floor + 0.3 * (lr - best_lr) ** 2 + 0.5 * (drop - 0.05) ** 2 + 0.01 * (math.log2(p["batch"]) - 5) ** 2


def _ppo11(p: dict) -> float:
    # A PPO-shaped space: each activation has its own best learning rate (more epochs want a lower one) and
    # floor, and the other eight parameters matter less and less, several with their best near a range end.
    best_lr, floor = {"tanh": (-2.4, 0.0), "elu": (-2.8, 0.15), "relu": (-3.1, 0.3)}[p["act"]]
    lr = math.log10(p["lr"]) - best_lr + 0.5 * math.log10(p["epochs"] / 10)
    return (
        floor
        + lr**2
        + 0.3 * (math.log10(p["ent"]) + 2) ** 2
        + 0.5 * (math.log10(1 - p["gamma"]) + 2) ** 2
        + 4 * (p["lam"] - 0.95) ** 2
        + 2 * (p["clip"] - 0.2) ** 2
        + 0.2 * (p["vf"] - 0.5) ** 2
        + 0.05 * math.log10(p["grad_norm"]) ** 2
        + 0.1 * (math.log2(p["n_steps"]) - 11) ** 2
        + 0.05 * (math.log2(p["minibatch"]) - 6) ** 2
    )


def _ppo12(p: dict) -> float:
    # PPO-11 with the optimizer as a second categorical: each has its own best learning rate and floor.
    shift, floor = {"adam": (0.0, 0.0), "rmsprop": (-0.4, 0.15), "sgd": (0.4, 0.3)}[p["optimizer"]]
    return floor + _ppo11({**p, "lr": p["lr"] / 10**shift})


def make_function(name: str):
    """(parameters as ProteinConfig writes them, optimum, evaluate(params) -> (value, cost)). A name ending in
    ``+ K inert`` is that problem with K parameters in [0, 1] its function ignores."""
    import torch

    base, _, inert_suffix = name.partition(" + ")
    if inert_suffix:
        params, optimum, evaluate = make_function(base)
        k = int(inert_suffix.split()[0])
        params = {**params, **{f"inert{i}": {"distribution": "uniform", "min": 0.0, "max": 1.0} for i in range(k)}}
        return params, optimum, evaluate
    from botorch.test_functions import (
        Ackley,
        Branin,
        Hartmann,
        Levy,
        Michalewicz,
        Rastrigin,
        Rosenbrock,
        Shekel,
        StyblinskiTang,
    )
    from botorch.test_functions.multi_fidelity import AugmentedHartmann

    def uniform(bounds):
        return {
            f"x{i}": {"distribution": "uniform", "min": float(lo), "max": float(hi)}
            for i, (lo, hi) in enumerate(bounds)
        }

    if name.startswith("Schwefel"):
        params = uniform([(-500.0, 500.0)] * 4)
        return params, 0.0, lambda p: (_schwefel([p[f"x{i}"] for i in range(4)]), 1.0)
    if name.startswith("Mixed-5"):
        params = {
            "lr": {"distribution": "log_normal", "min": 1e-5, "max": 1.0},
            "width": {"distribution": "uniform_pow2", "min": 4, "max": 1024},
            "layers": {"distribution": "int_uniform", "min": 1, "max": 8},
            "wd": {"distribution": "log_normal", "min": 1e-6, "max": 1e-1},
            "act": {"distribution": "categorical", "choices": ACTIVATIONS},
        }
        return params, 0.0, lambda p: (_mixed5(p), 1.0)
    if name.startswith("Mixed-4"):
        params = {
            "lr": {"distribution": "log_normal", "min": 1e-5, "max": 1.0},
            "act": {"distribution": "categorical", "choices": ACTIVATIONS},
            "dropout": {"distribution": "uniform", "min": 0.0, "max": 0.8},
            "batch": {"distribution": "uniform_pow2", "min": 8, "max": 512},
        }
        return params, 0.0, lambda p: (_mixed4(p), 1.0)
    if name.startswith("PPO-11"):
        params = {
            "lr": {"distribution": "log_normal", "min": 1e-5, "max": 1e-2},
            "ent": {"distribution": "log_normal", "min": 1e-5, "max": 1e-1},
            "gamma": {"distribution": "uniform", "min": 0.9, "max": 0.9999},
            "lam": {"distribution": "uniform", "min": 0.8, "max": 1.0},
            "clip": {"distribution": "uniform", "min": 0.05, "max": 0.5},
            "vf": {"distribution": "uniform", "min": 0.1, "max": 1.0},
            "grad_norm": {"distribution": "log_normal", "min": 0.1, "max": 10.0},
            "n_steps": {"distribution": "uniform_pow2", "min": 64, "max": 4096},
            "minibatch": {"distribution": "uniform_pow2", "min": 32, "max": 1024},
            "epochs": {"distribution": "int_uniform", "min": 1, "max": 20},
            "act": {"distribution": "categorical", "choices": ["relu", "tanh", "elu"]},
        }
        return params, 0.0, lambda p: (_ppo11(p), 1.0)
    if name.startswith("PPO-12"):
        params, _, _ = make_function("PPO-11 (mixed, weak parameters)")
        params["optimizer"] = {"distribution": "categorical", "choices": ["sgd", "rmsprop", "adam"]}
        return params, 0.0, lambda p: (_ppo12(p), 1.0)
    fn = {
        "Branin": lambda: Branin(),
        "Hartmann-6": lambda: Hartmann(dim=6),
        "Levy-4": lambda: Levy(dim=4),
        "Ackley-5": lambda: Ackley(dim=5, bounds=[(-5.0, 10.0)] * 5),
        "Rosenbrock-4": lambda: Rosenbrock(dim=4),
        "MF-Hartmann-6 (cost)": lambda: AugmentedHartmann(),
        "Styblinski-Tang-4 (edge)": lambda: StyblinskiTang(dim=4, bounds=[(-3.0, 5.0)] * 4),
        "Levy-4 (corner)": lambda: Levy(dim=4, bounds=[(-10.0, 1.2)] * 4),
        "Shekel-4 (multi-modal)": lambda: Shekel(),
        "Michalewicz-5 (multi-modal, ridges)": lambda: Michalewicz(dim=5),
        "Rastrigin-4 (off-center)": lambda: Rastrigin(dim=4, bounds=[(-3.3, 5.12)] * 4),
        "Levy-5 (edge)": lambda: Levy(dim=5, bounds=[(-2.0, 9.5)] * 5),
        "Hartmann-6 in 10-D (4 inert)": lambda: Hartmann(dim=6),
        "Styblinski-Tang-8 (edge)": lambda: StyblinskiTang(dim=8, bounds=[(-3.0, 5.0)] * 8),
        "Rosenbrock-8": lambda: Rosenbrock(dim=8),
    }[name]()
    inert = 4 if "inert" in name else 0  # parameters the function ignores, as a sweep often has
    params = uniform(list(fn.bounds.numpy().T) + [(0.0, 1.0)] * inert)
    names = list(params)[: fn.dim]
    if name.startswith("MF"):
        params["fidelity"] = params.pop(names[-1])
        names[-1] = "fidelity"

    def evaluate(p: dict) -> tuple[float, float]:
        x = torch.tensor([[float(p[n]) for n in names]], dtype=torch.float64)
        cost = 0.1 + float(p["fidelity"]) if "fidelity" in p else 1.0
        return float(fn(x)), cost

    return params, float(fn.optimal_value), evaluate


def optuna_distributions(params: dict) -> tuple[dict, object]:
    """The same space for Optuna, and a map from its params back to ours (a power of two is its exponent)."""
    import optuna.distributions as od

    dists, pow2 = {}, []
    for n, p in params.items():
        d = p["distribution"]
        if d == "categorical":
            dists[n] = od.CategoricalDistribution(p["choices"])
        elif d == "int_uniform":
            dists[n] = od.IntDistribution(int(p["min"]), int(p["max"]))
        elif d == "uniform_pow2":
            dists[n] = od.IntDistribution(math.ceil(math.log2(p["min"])), math.floor(math.log2(p["max"])))
            pow2.append(n)
        else:
            dists[n] = od.FloatDistribution(float(p["min"]), float(p["max"]), log=d == "log_normal")
    return dists, lambda values: {n: 2**v if n in pow2 else v for n, v in values.items()}


def run(problem: Problem, method: str, seed: int, noise: float = 0.0) -> dict:
    """One optimization run; returns the trace of (value, cost) and the wall time spent suggesting. With
    ``noise``, each method sees its values plus Gaussian noise of sd ``noise`` times the problem's stuck threshold
    (an RL score is noisy), the same draws for every method at a seed, and the trace keeps the true values too."""
    import torch

    torch.set_num_threads(1)
    params_spec, optimum, noiseless = make_function(problem.name)
    trials = max(problem.budget, MAX_COST_TRIALS)  # as many as a run can take (--budget may raise it)
    draws = np.random.default_rng(10_000 + seed).normal(0.0, noise * problem.stuck, trials)
    true_values: list[float] = []

    def evaluate(params: dict) -> tuple[float, float]:
        value, cost = noiseless(params)
        true_values.append(value)
        return value + float(draws[len(true_values) - 1]), cost

    values: list[float] = []
    costs: list[float] = []
    suggest_time = 0.0
    fallbacks = 0  # Protein's suggestions that fell back to random search: each a model failure to look into

    def done() -> bool:
        if problem.cost_aware:  # enough for both scores: the cost budget and the trial budget
            spent = sum(costs) >= COST_BUDGET and len(values) >= problem.budget
            return spent or len(values) >= MAX_COST_TRIALS
        return len(values) >= problem.budget

    if method == "protein":
        from optimizers import Observation, ProteinConfig
        from optimizers.protein import Protein

        # The defaults a user gets: no scale, no mean, default settings, and the number of trials when the run
        # has one (serve passes max_trials); a cost-aware run goes on until its cost budget is spent too.
        budget = None if problem.cost_aware else problem.budget
        opt = Protein(ProteinConfig(goal="minimize", parameters=params_spec), seed=seed, budget=budget)
        obs: list = []
        while not done():
            t = time.perf_counter()
            suggestion = opt.suggest(obs, [], 1)[0]
            suggest_time += time.perf_counter() - t
            params = suggestion.params
            fallbacks += "fallback" in suggestion.info
            value, cost = evaluate(params)
            obs.append(Observation(params, value, cost))
            values.append(value)
            costs.append(cost)
    else:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="minimize", sampler=make_sampler(method, seed))
        dists, to_ours = optuna_distributions(params_spec)
        while not done():
            t = time.perf_counter()
            trial = study.ask(dists)
            params = to_ours(trial.params)
            suggest_time += time.perf_counter() - t
            value, cost = evaluate(params)
            study.tell(trial, value)
            values.append(value)
            costs.append(cost)
    trace = {"values": values, "costs": costs, "optimum": optimum, "suggest_time": suggest_time, "fallbacks": fallbacks}
    return {**trace, "true_values": true_values} if noise else trace


def make_sampler(method: str, seed: int, **tpe_kwargs):
    import optuna

    return {
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, **tpe_kwargs),
        "gpsampler": lambda: optuna.samplers.GPSampler(seed=seed),
    }[method]()


def regret_at_trials(trace: dict, budget: int) -> float:
    return _regret(trace, budget)


def regret_at_cost(trace: dict, budget: float) -> float:
    spent = np.cumsum(trace["costs"])
    return _regret(trace, int(np.searchsorted(spent, budget + 1e-9, side="right")))


def _regret(trace: dict, n: int) -> float:
    """The true value of the best observed of the first ``n`` trials (the trial a user would pick), less the
    optimum: with noise, a lucky draw is not a find."""
    if n == 0:
        return math.inf
    pick = int(np.argmin(trace["values"][:n]))
    return trace.get("true_values", trace["values"])[pick] - trace["optimum"]


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
            parameters={n_: {"distribution": "uniform", "min": 0.0, "max": 1.0} for n_ in names},
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


def load_results(paths: list[str]) -> dict:
    """Finished runs from result files (one JSON object a line), keyed by (problem, method, seed)."""
    found = {}
    for path in paths:
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    r = json.loads(line)
                    found[(r["problem"], r["method"], r["seed"])] = r
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 seeds, budgets up to 40, timing up to 1000")
    ap.add_argument("--seeds", type=int, default=None, help="default 16 (3 with --quick)")
    ap.add_argument(
        "--budget", type=int, default=None, help="every problem's trial budget (a short sweep) instead of its own"
    )
    ap.add_argument("--workers", type=int, default=2, help="runs in parallel processes")
    ap.add_argument("--problems", default=None, help="comma-separated names or name prefixes (none: every problem)")
    ap.add_argument(
        "--inert", type=int, default=0, help="add this many parameters every function ignores to each problem"
    )
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument(
        "--results",
        action="append",
        default=None,
        help=f"result file(s): runs found there are reused, new ones appended to the first "
        f"(default {RESULTS}; '-' keeps none)",
    )
    ap.add_argument("--report-only", action="store_true", help="print the table from the result files, run nothing")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument(
        "--noise", type=float, default=0.0, help="Gaussian noise on every value, sd this times the stuck threshold"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    seeds = args.seeds or (3 if args.quick else 16)
    methods = args.methods.split(",")
    problems = select(args.problems.split(",")) if args.problems else PROBLEMS
    if args.quick:
        problems = [Problem(p.name, min(p.budget, 40), p.stuck, p.cost_aware) for p in problems]
    if args.budget:
        problems = [Problem(p.name, args.budget, p.stuck, p.cost_aware) for p in problems]
    if args.inert:
        problems = [with_inert(p, args.inert) for p in problems]
    paths = [p for p in (args.results or [RESULTS]) if p != "-"]
    mode = "quick" if args.quick else f"budget {args.budget}" if args.budget else "full"  # runs of one mode compare
    mode += f", noise {args.noise:g}" if args.noise else ""
    found = {k: r for k, r in load_results(paths).items() if r.get("mode") == mode}

    jobs = [(p, m, s) for p in problems for m in methods for s in range(seeds)]
    todo = [] if args.report_only else [j for j in jobs if (j[0].name, j[1], j[2]) not in found]
    # Seed by seed (a partial run covers every problem), slow jobs first within a seed.
    todo.sort(key=lambda j: (j[2], j[1] not in ("protein", "gpsampler"), -j[0].budget))
    started = time.time()
    if todo:
        if paths:
            os.makedirs(os.path.dirname(paths[0]) or ".", exist_ok=True)
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = {pool.submit(run, *j, noise=args.noise): j for j in todo}
            for fut in as_completed(futures):
                p, m, s = futures[fut]
                r = {"problem": p.name, "method": m, "seed": s, "mode": mode, **fut.result()}
                found[(p.name, m, s)] = r
                if paths:
                    with open(paths[0], "a") as f:
                        f.write(json.dumps(r) + "\n")
        print(f"\n{len(todo)} runs, {time.time() - started:.0f} s wall\n")
    traces = {j: found[(j[0].name, j[1], j[2])] for j in jobs if (j[0].name, j[1], j[2]) in found}
    if traces:
        report(problems, methods, seeds, traces)

    if not args.no_timing and not args.report_only:
        sizes = [30, 100, 300, 1000] if args.quick else [30, 60, 100, 300, 1000, 2000]
        print("\nOne suggestion after n observations (Hartmann-6, random observations), seconds:\n")
        print("| n | protein | tpe | gpsampler | gpsampler/protein |")
        print("| --- | --- | --- | --- | --- |")
        for m in ("protein", "tpe", "gpsampler"):
            time_suggestion(m, 20)  # warm up: imports and first-call costs are not a suggestion's
        for n in sizes:
            t = {
                m: float(np.median([time_suggestion(m, n, seed) for seed in range(3 if n <= 300 else 1)]))
                for m in ("protein", "tpe", "gpsampler")
            }
            print(
                f"| {n} | {t['protein']:.3f} | {t['tpe']:.3f} | {t['gpsampler']:.2f} | "
                f"{t['gpsampler'] / t['protein']:.1f}x |",
                flush=True,
            )
    print(f"\ntotal {time.time() - started:.0f} s")


def report(problems, methods, seeds, traces) -> None:
    print(
        "Median simple regret at the budget over the seeds that finished, and (after /) how many of them are "
        "stuck: final regret above the problem's threshold. ratio = peer median / ours (above 1: ours better).\n"
    )
    others = [m for m in methods if m != "protein"]
    print(
        "| problem | budget | stuck above | "
        + " | ".join(methods)
        + " | "
        + " | ".join(f"{m}/ours" for m in others)
        + " |"
    )
    print("|" + " --- |" * (3 + len(methods) + len(others)))
    for p in problems:
        for label, score in _scorers(p):
            med, cells = {}, []
            for m in methods:
                r = np.array([score(traces[(p, m, s)]) for s in range(seeds) if (p, m, s) in traces])
                if not len(r):
                    med[m] = math.nan
                    cells.append("-")
                    continue
                med[m] = float(np.median(r))
                cells.append(f"{fmt(med[m])} / {int((r > p.stuck).sum())} of {len(r)}")
            ratios = [fmt(med[m] / med["protein"]) if med.get("protein", 0) > 0 else "-" for m in others]
            print(f"| {p.name} | {label} | {fmt(p.stuck)} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    tsug = {
        m: np.mean([t["suggest_time"] / max(1, len(t["values"])) for j, t in traces.items() if j[1] == m])
        for m in methods
        if any(j[1] == m for j in traces)
    }
    print("\nMean time per suggestion during the runs: " + ", ".join(f"{m} {v:.3f} s" for m, v in tsug.items()))
    fell_back = {j: t["fallbacks"] for j, t in traces.items() if t.get("fallbacks")}
    if fell_back:
        print(
            f"\nWARNING: Protein fell back to a random suggestion {sum(fell_back.values())} times (a model failure"
            f" each; its warning says why) in {len(fell_back)} runs: "
            + ", ".join(f"{p.name} seed {s}" for p, _, s in sorted(fell_back, key=lambda j: (j[0].name, j[2])))
        )
    if "protein" in tsug and "gpsampler" in tsug:
        # Inside a run (warm imports, observations as the sweep makes them), per problem: what a user waits.
        print("\n| problem | protein s/suggestion | gpsampler s/suggestion | protein/gpsampler |")
        print("| --- | --- | --- | --- |")
        for p in problems:
            per = {
                m: [t["suggest_time"] / max(1, len(t["values"])) for j, t in traces.items() if j[0] == p and j[1] == m]
                for m in ("protein", "gpsampler")
            }
            if per["protein"] and per["gpsampler"]:
                a, b = float(np.mean(per["protein"])), float(np.mean(per["gpsampler"]))
                print(f"| {p.name} | {a:.3f} | {b:.3f} | {a / b:.2f}x |")
        print(f"| all | {tsug['protein']:.3f} | {tsug['gpsampler']:.3f} | {tsug['protein'] / tsug['gpsampler']:.2f}x |")


def _scorers(p: Problem):
    if p.cost_aware:
        return [
            (f"{p.budget} trials", lambda tr: regret_at_trials(tr, p.budget)),
            (f"cost {COST_BUDGET:g}", lambda tr: regret_at_cost(tr, COST_BUDGET)),
        ]
    return [(f"{p.budget} trials", lambda tr: regret_at_trials(tr, p.budget))]


if __name__ == "__main__":
    main()
