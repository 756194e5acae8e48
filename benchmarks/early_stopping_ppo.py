"""Early stopping on real PPO sweeps, at equal total training cost (part (b) of the benchmark).

    python benchmarks/early_stopping_ppo.py              # 2 seeds x 5 methods, 2 sweeps at a time (~40 min)
    python benchmarks/early_stopping_ppo.py --seeds 1 --budget-trials 6 --methods protein,protein+asha

The objective is ``recipes.cartpole`` (PPO on CartPole-v1, stable-baselines3) trained for TOTAL_STEPS environment
steps, short enough that the scores stay far below the ceiling of 500, over the learning rate, the clip range and
the entropy coefficient (the ranges of configs/demo.toml). The score is the eval job's mean return over
EVAL_EPISODES deterministic episodes. Every method gets the same budget of environment steps, BUDGET_TRIALS full
trials' worth, one trial at a time:

- Protein without stopping, + median, + ASHA: sweeps run by ``python -m orchestrator serve`` with the local
  dispatcher, as a user runs them; the job's ``SWEEP_REPORT`` lines (mean training return after each rollout) feed
  the service's rule (grace GRACE_STEPS, reduction factor 3, min_trials 5). Serve runs the sweep to a trial count
  and is resumed with more trials until the budget is spent (a resumed sweep replays its log: nothing is lost).
- Optuna TPE + HyperbandPruner / + MedianPruner: the same train and eval commands as subprocesses
  (``python -m orchestrator.run recipes.cartpole.train ...``); this process reads the same ``SWEEP_REPORT`` lines,
  calls ``trial.report`` and ``should_prune``, and terminates the job (SIGTERM) when told to prune.

Cost: environment steps trained (a completed trial's total, a stopped one's last step), not seconds, so the
comparison does not depend on what else the machine runs. Runs are cached in ``--results``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from early_stopping import by_method, load_runs  # noqa: E402
from loop import _toml  # noqa: E402
from optimizer import optuna_distributions  # noqa: E402
from real_jobs import PPO_PARAMETERS  # noqa: E402

from optimizers.config import ParameterConfig  # noqa: E402  (imported here, not in the worker threads)
from orchestrator.reducer import fold  # noqa: E402
from stores.sqlite import SQLiteStore  # noqa: E402

TOTAL_STEPS = 3072  # 12 rollouts of 256 steps: far below the ceiling of 500 (at 5120 steps the best trials reach it)
EVAL_EPISODES = 10
BUDGET_TRIALS = 12
GRACE_STEPS = 384  # rungs at 384 and 1152 steps (judged at the first reports past them: 512 and 1280)
RANDOM_SAMPLES = 4  # Protein's initial design (search center + 4 Sobol points), so the model drives most trials
METHODS = ["protein", "protein+median", "protein+asha", "tpe+hyperband", "tpe+median"]
TRAIN = {"trainer.total_timesteps": TOTAL_STEPS, "trainer.progress_interval": 0}
EVAL = {"evaluator.episodes": EVAL_EPISODES}
Done = list[tuple[float, float]]  # (cost so far, eval score) of every completed trial, in order


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def sweep_toml(rule: str, trials: int, seed: int) -> str:
    return _toml(
        {
            "max_trials": trials,  # raised with --args max_trials=N as the sweep is resumed
            "recipe_module": "recipes.cartpole",
            "max_parallel_jobs": 1,
            "monitoring_interval": 3600,
            "seed": seed,
            "train_overrides": TRAIN,
            "eval_overrides": EVAL,
            "early_stopping": {"method": rule, "grace_steps": GRACE_STEPS, "reduction_factor": 3, "min_trials": 5},
            "protein_config": {
                "metric": "score",
                "goal": "maximize",
                "method": "bayes",
                "parameters": PPO_PARAMETERS,
                "settings": {"num_random_samples": RANDOM_SAMPLES},
            },
        }
    )


def steps_of(trial: Any) -> float:
    """Environment steps a trial trained: all of them if it completed, else as far as its job reported."""
    if trial.status == "completed":
        return float(TOTAL_STEPS)
    train = trial.jobs_of("train")
    return max([trial.reported_step or 0.0, *[j.step or 0.0 for j in train]])


def run_serve(rule: str, seed: int, budget: float, workdir: Path) -> dict[str, Any]:
    """Serve the sweep, resumed with more trials until its trials have trained ``budget`` steps."""
    name = f"ppo_{rule}_{seed}"
    trials, spent, shown = 0, 0.0, []
    (workdir / f"{name}.toml").write_text(sweep_toml(rule, 1, seed))
    while spent < budget:
        trials += max(1, math.ceil((budget - spent) / TOTAL_STEPS))  # never more than the budget left
        argv = [sys.executable, "-m", "orchestrator", "serve", "--sweep", name, "--config", f"{name}.toml"]
        argv += ["--args", f"max_trials={trials}", "--log-format", "json", "--overrides", "wandb.mode=disabled"]
        proc = subprocess.run(argv, cwd=workdir, env=env(), capture_output=True, text=True)
        if proc.returncode not in (0, 1):  # 1: no trial completed (all stopped), still a sweep that ran
            raise RuntimeError(
                f"serve {name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        store = SQLiteStore(workdir / "train_dir" / name / "events.db")
        try:
            state = fold(s.event for s in store.read(0))
        finally:
            store.close()
        shown = state.shown_trials()
        spent = sum(steps_of(t) for t in shown)
    done: Done = []
    so_far = 0.0
    for t in shown:
        so_far += steps_of(t)
        if t.status == "completed" and t.score is not None:
            done.append((so_far, float(t.score)))
    stopped = sum(t.status == "stopped" for t in shown)
    return {"done": done, "trials": len(shown), "stopped": stopped, "spent": spent}


def run_optuna(pruner_name: str, seed: int, budget: float, workdir: Path) -> dict[str, Any]:
    import optuna  # imported by main() first: never for the first time in a worker thread

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.HyperbandPruner(min_resource=GRACE_STEPS, max_resource=TOTAL_STEPS, reduction_factor=3)
        if pruner_name == "hyperband"
        else optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=GRACE_STEPS - 1)
    )
    specs = {n: ParameterConfig(**p).model_dump(exclude_none=True) for n, p in PPO_PARAMETERS.items()}
    dists, to_ours = optuna_distributions(specs)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    done: Done = []
    spent, n, stopped = 0.0, 0, 0
    while spent < budget:
        n += 1
        trial = study.ask(dists)
        run = f"ppo_tpe_{pruner_name}_{seed}_{n:04d}"
        overrides = [f"{k}={v}" for k, v in {**TRAIN, **to_ours(trial.params)}.items()]
        argv = [sys.executable, "-m", "orchestrator.run", "recipes.cartpole.train", "--args", f"run={run}"]
        proc = subprocess.Popen(
            [*argv, "--overrides", *overrides], cwd=workdir, env=env(), stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        step, pruned = 0.0, False
        for line in proc.stdout:
            if not line.startswith("SWEEP_REPORT "):
                continue
            report = json.loads(line.removeprefix("SWEEP_REPORT "))
            step = float(report["step"])
            trial.report(float(report["score"]), int(step))
            if step < TOTAL_STEPS and trial.should_prune():
                pruned = True
                proc.send_signal(signal.SIGTERM)
                break
        proc.stdout.close()
        proc.wait()
        spent += step if pruned else TOTAL_STEPS
        if pruned:
            stopped += 1
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        if proc.returncode != 0:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        score = evaluate(run, workdir)
        study.tell(trial, score)
        done.append((spent, score))
    return {"done": done, "trials": n, "stopped": stopped, "spent": spent}


def evaluate(run: str, workdir: Path) -> float:
    argv = [sys.executable, "-m", "orchestrator.run", "recipes.cartpole.evaluate"]
    argv += ["--args", f"policy_uri=file://./train_dir/{run}/checkpoints", f"run={run}"]
    argv += ["--overrides", *[f"{k}={v}" for k, v in EVAL.items()]]
    out = subprocess.run(argv, cwd=workdir, env=env(), capture_output=True, text=True, check=True).stdout
    line = next(s for s in reversed(out.splitlines()) if s.startswith("SWEEP_RESULT "))
    return float(json.loads(line.removeprefix("SWEEP_RESULT "))["score"])


def run_one(method: str, seed: int, budget: float, workdir: Path) -> dict[str, Any]:
    start = time.time()
    if method.startswith("protein"):
        out = run_serve(method.partition("+")[2] or "none", seed, budget, workdir)
    else:
        out = run_optuna(method.partition("+")[2], seed, budget, workdir)
    return {"method": method, "seed": seed, "budget": budget, "seconds": time.time() - start, **out}


def best(done: Done) -> float:
    return max((s for _, s in done), default=-math.inf)


def cost_to_reach(done: Done, target: float) -> float:
    return next((c for c, s in done if s >= target), math.inf)


def table(runs: list[dict[str, Any]], methods: list[str], budget: float) -> list[str]:
    by, seeds = by_method([r for r in runs if r["budget"] == budget], methods)
    if not seeds:
        return ["no seed has every method yet"]
    base = {s: best(by["protein"][s]["done"]) for s in seeds}
    lines = [
        f"PPO on CartPole ({TOTAL_STEPS} steps a trial, eval over {EVAL_EPISODES} episodes), {len(seeds)} seeds; "
        f"equal total cost {budget:g} steps ({budget / TOTAL_STEPS:g} full trials); per seed, then the median.",
        "",
        "| method | trials | stopped | completed | best eval return | ratio | cost to reach |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in methods:
        rs = [by[m][s] for s in seeds]
        bests = [best(r["done"]) for r in rs]
        costs = [cost_to_reach(r["done"], base[s]) / budget for r, s in zip(rs, seeds)]
        per_seed = " / ".join(f"{b:.0f}" for b in bests)
        lines.append(
            f"| {m} | {sum(r['trials'] for r in rs)} | {sum(r['stopped'] for r in rs)} | "
            f"{sum(len(r['done']) for r in rs)} | {per_seed} (median {statistics.median(bests):.0f}) | "
            f"{statistics.median(bests) / statistics.median(base.values()):.2f} | "
            + " / ".join(f"{c:.2f}x" for c in costs)
            + " |"
        )
    lines.append("")
    lines.append("trials, stopped, completed: summed over seeds. ratio: median best over Protein without stopping's.")
    lines.append("cost to reach: cost (x the budget) until a completed trial scored Protein without stopping's best.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--budget-trials", type=float, default=BUDGET_TRIALS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--results", default="train_dir/bench_early_stopping_ppo.jsonl")
    args = parser.parse_args()
    methods = args.methods.split(",")
    if "protein" not in methods:
        methods.insert(0, "protein")
    budget = args.budget_trials * TOTAL_STEPS
    path = Path(args.results)
    runs = load_runs(path)
    have = {(r["method"], r["seed"], r["budget"]) for r in runs}
    tasks = [(m, s) for s in range(args.seeds) for m in methods if (m, s, budget) not in have]
    workdir = Path(tempfile.mkdtemp(prefix="early_stopping_ppo_"))
    import optuna  # noqa: F401  (before the threads: two first imports at once can fail)

    start = time.time()
    with ThreadPoolExecutor(max_workers=args.workers) as pool, path.open("a") as out:
        futures = [pool.submit(run_one, m, s, budget, workdir) for m, s in tasks]
        for i, future in enumerate(futures):
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - one broken run must not lose the others
                print(f"[{i + 1}/{len(tasks)}] {tasks[i]} failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            runs.append(result)
            out.write(json.dumps(result) + "\n")
            out.flush()
            print(
                f"[{i + 1}/{len(tasks)}] {result['method']} seed {result['seed']}: {result['trials']} trials, "
                f"{result['stopped']} stopped, best {best(result['done']):.0f} ({time.time() - start:.0f} s)",
                flush=True,
            )
    print("\n".join(["", *table(runs, methods, budget)]))
    print(f"workdir {workdir}")


if __name__ == "__main__":
    main()
