"""Protein on real jobs, run through ``serve`` as a user runs them, against random search and Optuna's TPE.

    python benchmarks/real_jobs.py                  # MLP: 16 trials x 5 seeds per method (~40 min on 2 cores)
    python benchmarks/real_jobs.py --ppo            # also PPO on CartPole (recipes.cartpole): 10 trials x 3 seeds
    python benchmarks/real_jobs.py --quick          # MLP: 8 trials x 1 seed
    python benchmarks/real_jobs.py --ppo --no-mlp --ppo-seeds 2
    python benchmarks/real_jobs.py --report-only    # the tables from what the result file holds
    python benchmarks/real_jobs.py --in-process     # MLP in this process: 16 trials x 16 data seeds x 3 draws (~20 min)
    python benchmarks/real_jobs.py --in-process --report-only

The MLP objective is ``recipes.mlp`` (a torch MLP on synthetic regression data; minimise the validation MSE)
over a learning rate (log scale), a width (a power of two), a weight decay (log scale) and an activation (4
choices), with the means a user would write and every other setting at its default. Each seed is another data
set (``data.seed``) as well as another optimizer seed: the methods are compared on a class of problems, not on
one. Protein (method=bayes) and random search (method=random) run as sweeps through
``python -m orchestrator serve`` with the local dispatcher, two jobs at a time, so Protein sees what a user's
sweep gives it (the cost is the train job's seconds); TPE (Optuna 5, seeded) calls the same recipe functions
in this process, one trial at a time. Every method gets the same number of trials. The tables show each seed's
best score, the median, and on how many seeds each method has the best score of all methods.

With so few seeds, one draw of each optimizer per data set measures its luck as much as the method: random
search's geometric mean best over 16 data seeds moved from 0.064 to 0.078 with only its own seed changed.
``--in-process`` measures with several draws: every method runs in this process through the library API
(``optimizers.Tuner``: ask/tell; Protein is method bayes with ``budget`` the trial count, as serve sizes it;
random search is method random; TPE through Optuna as above), on the same recipe functions, with two trials
in flight for the Tuner methods as serve runs them (ask two, tell the oldest, ask again) and the train seconds
as the cost. Each of ``--seeds`` data seeds (default 16) gets ``--repeats`` optimizer draws (default 3; draw r
seeds the optimizer with seed + 1000 r, Protein's too). The report gives each method's geometric mean and
median of the per-run best, the geometric mean of each draw, and for Protein against each peer the ratio of
the geometric means and the share of (data seed, Protein's draw, the peer's draw) pairs where Protein's best
is the better. Results go to ``train_dir/bench_real_jobs_in_process.jsonl``.

PPO on CartPole trains for ``PPO_TIMESTEPS`` steps (``--ppo-timesteps``): at 30k every method's best trial
reached CartPole's ceiling of 500; at 10k random settings score 31 to 500 (one in twelve at 500), so fewer
trials reach it, though the best of 10 trials still comes near it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
IN_PROCESS_REPEATS = 3  # optimizer draws per data seed with --in-process
DRAW_STRIDE = 1000  # draw r of data seed s seeds the optimizer with s + DRAW_STRIDE * r
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


def protein_config(objective: str, method: str) -> dict[str, Any]:
    """The sweep's ``protein_config``: what serve hands the optimizer, and what the in-process Tuner gets."""
    o = OBJECTIVES[objective]
    return {
        "metric": "score",
        "goal": o["goal"],
        "method": method,
        "parameters": o["parameters"],
        "settings": {"max_suggestion_cost": o["max_suggestion_cost"]},
    }


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
            "protein_config": protein_config(objective, method),
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


def run_tpe(objective: str, trials: int, seed: int, workdir: Path, rng_seed: int | None = None) -> list[dict[str, Any]]:
    """Optuna's TPE on the same recipe functions, in this process (the same code a job runs), one trial at a
    time. ``seed`` is the data seed; ``rng_seed`` the sampler's (the data seed if None)."""
    import optuna

    from optimizers.config import ParameterConfig

    o = OBJECTIVES[objective]
    rng_seed = seed if rng_seed is None else rng_seed
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    specs = {n: ParameterConfig(**p).model_dump(exclude_none=True) for n, p in o["parameters"].items()}
    dists, to_ours = optuna_distributions(specs)
    study = optuna.create_study(direction=o["goal"], sampler=optuna.samplers.TPESampler(seed=rng_seed))
    out = []
    for i in range(trials):
        trial = study.ask(dists)
        params = to_ours(trial.params)
        score, cost = run_in_process(objective, params, seed, f"{objective}_tpe_{seed}_{rng_seed}_{i:04d}", workdir)
        study.tell(trial, score)
        out.append({"params": params, "score": score, "cost": cost, "info": {"source": "tpe"}})
    return out


def run_tuner(
    objective: str, method: str, trials: int, seed: int, rng_seed: int, workdir: Path, in_flight: int = 2
) -> list[dict[str, Any]]:
    """A method of ``optimizers.Tuner`` on the recipe functions in this process, with ``in_flight`` trials
    pending as serve runs them (ask two, tell the oldest, ask again) and the train seconds as cost. The
    trials in the order they finished."""
    from optimizers import Tuner

    tuner = Tuner(protein_config(objective, method), seed=rng_seed, budget=trials)
    running: list[tuple[dict[str, Any], dict[str, Any]]] = []
    out: list[dict[str, Any]] = []
    while len(out) < trials:
        while len(running) < in_flight and len(out) + len(running) < trials:
            params = tuner.ask()
            running.append((params, dict(tuner.last_suggestion.info) if tuner.last_suggestion else {}))
        params, info = running.pop(0)
        run = f"{objective}_{method}_{seed}_{rng_seed}_{len(out):04d}"
        score, cost = run_in_process(objective, params, seed, run, workdir)
        tuner.tell(params, score, cost)
        out.append({"params": params, "score": score, "cost": cost, "info": info})
    return out


def run_in_process(
    objective: str, params: dict[str, Any], seed: int, run: str, workdir: Path
) -> tuple[float, float | None]:
    """Train and evaluate one point with the recipe's own functions in this process: the score it reports and
    the cost the train function reports (the seconds of training), as serve takes them. The checkpoint is
    removed afterwards (an in-process run makes thousands)."""
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
                train_result = recipe.train(run=run, config=config)
                kwargs = (
                    {"config": config_type.model_validate(_nest(o["eval_overrides"]))}
                    if "config" in recipe.evaluate.__annotations__
                    else {}
                )
                result = recipe.evaluate(policy_uri=f"file://./train_dir/{run}/checkpoints", run=run, **kwargs)
            finally:
                sys.stdout = stdout
                shutil.rmtree(Path("train_dir") / run, ignore_errors=True)
    finally:
        os.chdir(cwd)
    cost = (train_result or {}).get("cost", result.get("cost"))
    return float(result["score"]), None if cost is None else float(cost)


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
            lines.append(best_origins(records, objective, seeds))
    return "\n".join(lines)


def report_in_process(records: list[dict[str, Any]], methods: list[str]) -> str:
    """Per objective, over the data seeds every method ran: each method's geometric mean and median of the
    per-run best, and the geometric mean of each draw (the spread one draw per data set would show); then
    Protein against each peer: the ratio of the geometric means, and the share of (data seed, Protein's draw,
    the peer's draw) pairs where Protein's best is the better (a tie counts half)."""
    lines = []
    for objective in dict.fromkeys(r["objective"] for r in records):
        goal = OBJECTIVES[objective]["goal"]
        sign = 1.0 if goal == "minimize" else -1.0
        best: dict[str, dict[int, dict[int, float]]] = {m: {} for m in methods}  # method -> seed -> draw -> best
        trials = 0
        for r in records:
            if r["objective"] == objective and r["method"] in best:
                best[r["method"]].setdefault(r["seed"], {})[r["draw"]] = best_of(r["trials"], goal)
                trials = len(r["trials"])
        seeds = sorted(set.intersection(*(set(b) for b in best.values())))
        if not seeds:
            continue
        draws = sorted({d for m in methods for s in seeds for d in best[m][s]})
        lines += [
            f"\n{objective} in-process, {trials} trials, {len(seeds)} data seeds, draws {draws} ({goal}): "
            "best score per run",
            "| method | runs | geometric mean | median | geometric mean per draw |",
            "| --- | --- | --- | --- | --- |",
        ]
        geo = {}
        for m in methods:
            v = [best[m][s][d] for s in seeds for d in sorted(best[m][s])]
            geo[m] = statistics.geometric_mean(v)
            per_draw = [
                f"{statistics.geometric_mean([best[m][s][d] for s in seeds]):.4g}"
                for d in draws
                if all(d in best[m][s] for s in seeds)
            ]
            lines.append(f"| {m} | {len(v)} | {geo[m]:.4g} | {statistics.median(v):.4g} | {' / '.join(per_draw)} |")
        if "bayes" in methods:
            for m in methods:
                if m == "bayes":
                    continue
                pairs = [
                    (sign * a > sign * b) - (sign * a < sign * b)  # -1: Protein better (lower for minimize)
                    for s in seeds
                    for a in best["bayes"][s].values()
                    for b in best[m][s].values()
                ]
                share = (pairs.count(-1) + 0.5 * pairs.count(0)) / len(pairs)
                lines.append(
                    f"bayes / {m}: geometric mean ratio {geo['bayes'] / geo[m]:.3f}; bayes's best is the better "
                    f"on {share:.0%} of {len(pairs)} (data seed, draw, peer draw) pairs"
                )
            lines.append(best_origins(records, objective, seeds))
    return "\n".join(lines)


def best_origins(records: list[dict[str, Any]], objective: str, seeds: list[int]) -> str:
    """How many of Protein's runs on ``seeds`` found their best trial by which step."""
    goal = OBJECTIVES[objective]["goal"]
    origins = Counter(
        best_origin(r["trials"], goal)
        for r in records
        if r["objective"] == objective and r["method"] == "bayes" and r["seed"] in seeds
    )
    return "bayes's best trial came from: " + ", ".join(f"{k} on {v}" for k, v in origins.most_common())


def best_origin(trace: list[dict[str, Any]], goal: str) -> str:
    """How the best trial of a sweep was chosen, from its info: search_center, sobol, bayes, escape or random."""
    b = best_of(trace, goal)
    info = next(t.get("info") or {} for t in trace if t["score"] == b)
    return "escape" if "escape" in info else str(info.get("source"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="MLP, 8 trials, 1 seed (with --in-process: 1 draw)")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None, help="MLP seeds (default 5; with --in-process 16)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="the MLP with every method in this process through optimizers.Tuner (TPE through Optuna), "
        "--repeats optimizer draws per data seed; no serve",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=IN_PROCESS_REPEATS,
        help=f"with --in-process: optimizer seeds per data seed and method (seed + {DRAW_STRIDE} x draw; "
        f"default {IN_PROCESS_REPEATS})",
    )
    ap.add_argument("--ppo", action="store_true", help="also PPO on CartPole: --ppo-trials trials, --ppo-seeds seeds")
    ap.add_argument("--no-mlp", action="store_true", help="skip the MLP (with --ppo: PPO alone)")
    ap.add_argument("--ppo-trials", type=int, default=10)
    ap.add_argument("--ppo-seeds", type=int, default=3)
    ap.add_argument("--ppo-timesteps", type=int, default=PPO_TIMESTEPS, help="PPO training steps per trial")
    ap.add_argument("--methods", default="bayes,random,tpe")
    ap.add_argument(
        "--results",
        default=None,
        help="runs are appended here (default train_dir/bench_real_jobs.jsonl; "
        "with --in-process train_dir/bench_real_jobs_in_process.jsonl)",
    )
    ap.add_argument("--report-only", action="store_true", help="the tables from the result file, nothing run")
    args = ap.parse_args()
    methods = args.methods.split(",")
    if args.in_process and (args.ppo or args.no_mlp):
        ap.error("--in-process runs the MLP only: drop --ppo and --no-mlp")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    results = args.results or (
        "train_dir/bench_real_jobs_in_process.jsonl" if args.in_process else "train_dir/bench_real_jobs.jsonl"
    )
    OBJECTIVES["ppo"]["train_overrides"]["trainer.total_timesteps"] = args.ppo_timesteps
    if args.report_only:
        with open(results) as f:
            records = [json.loads(line) for line in f]
        print(report_in_process(records, methods) if args.in_process else report(records, methods))
        return
    trials = args.trials or (8 if args.quick else 16)
    os.makedirs(os.path.dirname(results) or ".", exist_ok=True)
    if args.in_process:
        seeds = range(args.first_seed, args.first_seed + (args.seeds or (1 if args.quick else 16)))
        with tempfile.TemporaryDirectory(prefix="real_jobs_") as workdir:  # checkpoints live only until evaluated
            records = run_all_in_process(
                methods, trials, seeds, 1 if args.quick else args.repeats, Path(workdir), results
            )
        print(report_in_process(records, methods))
        return
    workdir = Path(tempfile.mkdtemp(prefix="real_jobs_"))
    seeds = args.seeds or (1 if args.quick else 5)
    first = args.first_seed
    runs = [] if args.no_mlp else [("mlp", trials, s) for s in range(first, first + seeds)]
    if args.ppo:
        runs += [("ppo", args.ppo_trials, s) for s in range(first, first + args.ppo_seeds)]
    records = []
    for objective, n, seed in runs:
        for method in methods:
            t0 = time.time()
            trace = (
                run_tpe(objective, n, seed, workdir)
                if method == "tpe"
                else run_serve(objective, method, n, seed, workdir)
            )
            keep_run(records, results, {"objective": objective, "method": method, "seed": seed, "trials": trace}, t0)
    print(report(records, methods))
    print(f"\nworkdir {workdir}")


def run_all_in_process(
    methods: list[str], trials: int, seeds: range, repeats: int, workdir: Path, results: str
) -> list[dict[str, Any]]:
    """Every method on every data seed, ``repeats`` optimizer draws each (draw r seeds the optimizer with
    seed + DRAW_STRIDE * r; draw 0 is the serve mode's seed); draw by draw, so a cut-short run holds whole draws."""
    import torch

    torch.set_num_threads(1)  # one core, the model's fit included
    records = []
    for draw in range(repeats):
        for seed in seeds:
            rng_seed = seed + DRAW_STRIDE * draw
            for method in methods:
                t0 = time.time()
                trace = (
                    run_tpe("mlp", trials, seed, workdir, rng_seed)
                    if method == "tpe"
                    else run_tuner("mlp", method, trials, seed, rng_seed, workdir)
                )
                record = {"objective": "mlp", "method": method, "seed": seed, "draw": draw, "rng_seed": rng_seed}
                keep_run(records, results, {**record, "trials": trace}, t0)
    return records


def keep_run(records: list[dict[str, Any]], results: str, record: dict[str, Any], started: float) -> None:
    """Add a finished run to ``records`` and the results file (a cut-short benchmark keeps it), and say so."""
    records.append(record)
    with open(results, "a") as f:
        f.write(json.dumps(record) + "\n")
    draw = f" draw {record['draw']}" if "draw" in record else ""
    b = best_of(record["trials"], OBJECTIVES[record["objective"]]["goal"])
    print(
        f"{record['objective']} {record['method']} seed {record['seed']}{draw}: best {b:.4g} of "
        f"{len(record['trials'])} ({time.time() - started:.0f} s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
