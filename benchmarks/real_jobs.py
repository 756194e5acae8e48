"""Protein on real jobs, run through ``serve`` as a user runs them, against random search and Optuna's TPE.

    python benchmarks/real_jobs.py                  # MLP: 16 trials x 5 seeds per method (~40 min on 2 cores)
    python benchmarks/real_jobs.py --ppo            # also PPO on CartPole (recipes.cartpole): 10 trials x 3 seeds
    python benchmarks/real_jobs.py --quick          # MLP: 8 trials x 1 seed
    python benchmarks/real_jobs.py --ppo --no-mlp --ppo-seeds 2
    python benchmarks/real_jobs.py --report-only    # the tables from what the result file holds

The MLP objective is ``recipes.mlp`` (a torch MLP on synthetic regression data; minimise the validation MSE)
over a learning rate (log scale), a width (a power of two), a weight decay (log scale) and an activation (4
choices), with the means a user would write and every other setting at its default. Each seed is another data
set (``data.seed``) as well as another optimizer seed: the methods are compared on a class of problems, not on
one. Protein (method=bayes) and random search (method=random) run as sweeps through
``python -m orchestrator serve`` with the local dispatcher, two jobs at a time, so Protein sees what a user's
sweep gives it (the cost is the train job's seconds); TPE (Optuna 5, seeded) calls the same recipe functions
in this process, one trial at a time. Every method gets the same number of trials. The tables show each seed's
best score, the median, and on how many seeds each method has the best score of all methods.

PPO on CartPole trains for ``PPO_TIMESTEPS`` steps (``--ppo-timesteps``): at 30k every method's best trial
reached CartPole's ceiling of 500; at 10k random settings score 31 to 500 (one in twelve at 500), so fewer
trials reach it, though the best of 10 trials still comes near it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from loop import _toml  # noqa: E402
from optimizer import optuna_distributions  # noqa: E402

MLP_PARAMETERS: dict[str, dict[str, Any]] = {
    "trainer.lr": {"distribution": "log_normal", "min": 1e-4, "max": 1.0, "mean": 3e-3},
    "model.width": {"distribution": "uniform_pow2", "min": 8, "max": 512, "mean": 64},
    "trainer.weight_decay": {"distribution": "log_normal", "min": 1e-6, "max": 1e-1, "mean": 1e-4},
    "model.activation": {"distribution": "categorical", "choices": ["relu", "gelu", "tanh", "sigmoid"], "mean": "relu"},
}
PPO_PARAMETERS: dict[str, dict[str, Any]] = {  # as configs/demo.toml
    "trainer.optimizer.learning_rate": {"distribution": "log_normal", "min": 1e-5, "max": 1e-2, "mean": 3e-4},
    "trainer.losses.loss_configs.ppo.clip_coef": {"distribution": "uniform", "min": 0.1, "max": 0.3, "mean": 0.2},
    "trainer.losses.loss_configs.ppo.ent_coef": {"distribution": "log_normal", "min": 1e-4, "max": 0.03, "mean": 1e-3},
}
PPO_TIMESTEPS = 10_000
OBJECTIVES = {
    "mlp": {
        "recipe": "recipes.mlp",
        "goal": "minimize",
        "parameters": MLP_PARAMETERS,
        "train_overrides": {},
        "seed_override": "data.seed",  # each seed another data set
        "eval_overrides": {},
        "max_suggestion_cost": 120,
    },
    "ppo": {
        "recipe": "recipes.cartpole",
        "goal": "maximize",
        "parameters": PPO_PARAMETERS,
        "train_overrides": {"trainer.total_timesteps": PPO_TIMESTEPS},
        "seed_override": "trainer.seed",  # each seed another environment and initial network
        "eval_overrides": {"evaluator.episodes": 10},
        "max_suggestion_cost": 300,
    },
}


def train_overrides(objective: str, seed: int) -> dict[str, Any]:
    o = OBJECTIVES[objective]
    return {**o["train_overrides"], o["seed_override"]: seed}


def sweep_toml(objective: str, method: str, trials: int, seed: int) -> str:
    o = OBJECTIVES[objective]
    return _toml(
        {
            "max_trials": trials,
            "recipe_module": o["recipe"],
            "train_entrypoint": "train",
            "eval_entrypoint": "evaluate",
            "max_parallel_jobs": 2,
            "monitoring_interval": 3600,
            "dispatcher_type": "local",
            "seed": seed,
            "train_overrides": train_overrides(objective, seed),
            "eval_overrides": o["eval_overrides"],
            "protein_config": {
                "metric": "score",
                "goal": o["goal"],
                "method": method,
                "parameters": o["parameters"],
                "settings": {"max_suggestion_cost": o["max_suggestion_cost"]},
            },
        }
    )


def run_serve(objective: str, method: str, trials: int, seed: int, workdir: Path) -> list[dict[str, Any]]:
    """One sweep through ``serve``; its trials (params, score) in order, read back from its event log."""
    from orchestrator.reducer import fold
    from stores.sqlite import SQLiteStore

    name = f"{objective}_{method}_{seed}"
    (workdir / f"{name}.toml").write_text(sweep_toml(objective, method, trials, seed))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "serve",
            "--sweep",
            name,
            "--config",
            f"{name}.toml",
            "--log-format",
            "json",
            "--overrides",
            "wandb.mode=disabled",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"serve {name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    store = SQLiteStore(workdir / "train_dir" / name / "events.db")
    try:
        state = fold(s.event for s in store.read(0))
    finally:
        store.close()
    return [
        {"params": dict(t.params), "score": t.score, "cost": t.cost, "info": dict(t.info)} for t in state.shown_trials()
    ]


def run_tpe(objective: str, trials: int, seed: int, workdir: Path) -> list[dict[str, Any]]:
    """Optuna's TPE on the same recipe functions, in this process (the same code a job runs)."""
    import optuna

    from optimizers.config import ParameterConfig

    o = OBJECTIVES[objective]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    specs = {n: ParameterConfig(**p).model_dump(exclude_none=True) for n, p in o["parameters"].items()}
    dists, to_ours = optuna_distributions(specs)
    study = optuna.create_study(direction=o["goal"], sampler=optuna.samplers.TPESampler(seed=seed))
    out = []
    for i in range(trials):
        trial = study.ask(dists)
        params = to_ours(trial.params)
        score = run_in_process(objective, params, seed, f"{objective}_tpe_{seed}_{i:04d}", workdir)
        study.tell(trial, score)
        out.append({"params": params, "score": score, "cost": None, "info": {"source": "tpe"}})
    return out


def run_in_process(objective: str, params: dict[str, Any], seed: int, run: str, workdir: Path) -> float:
    """Train and evaluate one point with the recipe's own functions in this process; the score it reports."""
    import importlib

    o = OBJECTIVES[objective]
    recipe = importlib.import_module(o["recipe"])
    config_type = recipe.train.__annotations__["config"]
    if isinstance(config_type, str):
        config_type = getattr(recipe, config_type)
    config = config_type.model_validate(_nest({**train_overrides(objective, seed), **params}))
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        with open(os.devnull, "w") as devnull:
            stdout, sys.stdout = sys.stdout, devnull  # the recipes' progress lines
            try:
                recipe.train(run=run, config=config)
                kwargs = (
                    {"config": config_type.model_validate(_nest(o["eval_overrides"]))}
                    if "config" in recipe.evaluate.__annotations__
                    else {}
                )
                result = recipe.evaluate(policy_uri=f"file://./train_dir/{run}/checkpoints", run=run, **kwargs)
            finally:
                sys.stdout = stdout
    finally:
        os.chdir(cwd)
    return float(result["score"])


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def best_of(trace: list[dict[str, Any]], goal: str) -> float:
    scores = [t["score"] for t in trace if t["score"] is not None]
    return min(scores) if goal == "minimize" else max(scores)


def report(records: list[dict[str, Any]], methods: list[str]) -> str:
    """Per objective: each method's best score per seed, the median, and the seeds where it is best of all (a
    tie counts for each); then Protein against each peer, seed by seed. Seeds every method finished only."""
    lines = []
    for objective in dict.fromkeys(r["objective"] for r in records):
        goal = OBJECTIVES[objective]["goal"]
        best: dict[str, dict[int, float]] = {m: {} for m in methods}
        trials = 0
        for r in records:
            if r["objective"] == objective and r["method"] in best:
                best[r["method"]][r["seed"]] = best_of(r["trials"], goal)
                trials = len(r["trials"])
        seeds = sorted(set.intersection(*(set(b) for b in best.values())))
        if not seeds:
            continue
        sign = 1.0 if goal == "minimize" else -1.0
        top = {s: min(sign * best[m][s] for m in methods) for s in seeds}
        lines += [
            f"\n{objective}, {trials} trials, {len(seeds)} seeds ({goal}): best score per seed",
            "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | median | best of all |",
            "| --- |" + " --- |" * (len(seeds) + 2),
        ]
        for m in methods:
            v = [best[m][s] for s in seeds]
            wins = sum(sign * best[m][s] == top[s] for s in seeds)
            lines.append(
                f"| {m} | "
                + " | ".join(f"{x:.3g}" for x in v)
                + f" | {statistics.median(v):.3g} | {wins} of {len(seeds)} |"
            )
        if "bayes" in methods:
            for m in methods:
                if m != "bayes":
                    ahead = sum(sign * best["bayes"][s] < sign * best[m][s] for s in seeds)
                    lines.append(f"bayes ahead of {m} on {ahead} of {len(seeds)} seeds")
            origins = Counter(
                best_origin(r["trials"], goal)
                for r in records
                if r["objective"] == objective and r["method"] == "bayes" and r["seed"] in seeds
            )
            lines.append("bayes's best trial came from: " + ", ".join(f"{k} on {v}" for k, v in origins.most_common()))
    return "\n".join(lines)


def best_origin(trace: list[dict[str, Any]], goal: str) -> str:
    """How the best trial of a sweep was chosen, from its info: search_center, sobol, bayes, escape or random."""
    b = best_of(trace, goal)
    info = next(t.get("info") or {} for t in trace if t["score"] == b)
    return "escape" if "escape" in info else str(info.get("source"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="MLP, 8 trials, 1 seed")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None, help="MLP seeds (default 5)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--ppo", action="store_true", help="also PPO on CartPole: --ppo-trials trials, --ppo-seeds seeds")
    ap.add_argument("--no-mlp", action="store_true", help="skip the MLP (with --ppo: PPO alone)")
    ap.add_argument("--ppo-trials", type=int, default=10)
    ap.add_argument("--ppo-seeds", type=int, default=3)
    ap.add_argument("--ppo-timesteps", type=int, default=PPO_TIMESTEPS, help="PPO training steps per trial")
    ap.add_argument("--methods", default="bayes,random,tpe")
    ap.add_argument("--results", default="train_dir/bench_real_jobs.jsonl", help="runs are appended here")
    ap.add_argument("--report-only", action="store_true", help="the tables from the result file, nothing run")
    args = ap.parse_args()
    methods = args.methods.split(",")
    OBJECTIVES["ppo"]["train_overrides"]["trainer.total_timesteps"] = args.ppo_timesteps
    if args.report_only:
        with open(args.results) as f:
            print(report([json.loads(line) for line in f], methods))
        return
    trials = args.trials or (8 if args.quick else 16)
    seeds = args.seeds or (1 if args.quick else 5)
    first = args.first_seed
    runs = [] if args.no_mlp else [("mlp", trials, s) for s in range(first, first + seeds)]
    if args.ppo:
        runs += [("ppo", args.ppo_trials, s) for s in range(first, first + args.ppo_seeds)]
    workdir = Path(tempfile.mkdtemp(prefix="real_jobs_"))
    os.makedirs(os.path.dirname(args.results) or ".", exist_ok=True)
    records = []
    for objective, n, seed in runs:
        for method in methods:
            t0 = time.time()
            trace = (
                run_tpe(objective, n, seed, workdir)
                if method == "tpe"
                else run_serve(objective, method, n, seed, workdir)
            )
            record = {"objective": objective, "method": method, "seed": seed, "trials": trace}
            records.append(record)
            with open(args.results, "a") as f:
                f.write(json.dumps(record) + "\n")
            b = best_of(trace, OBJECTIVES[objective]["goal"])
            print(
                f"{objective} {method} seed {seed}: best {b:.4g} of {len(trace)} ({time.time() - t0:.0f} s)", flush=True
            )
    print(report(records, methods))
    print(f"\nworkdir {workdir}")


if __name__ == "__main__":
    main()
