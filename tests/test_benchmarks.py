"""The benchmarks' quick forms, run as a user runs them: a subprocess that writes results and reports them."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def benchmark(script: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/<script> argv...`` as a user runs it, from ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, str(ROOT / "benchmarks" / script), *argv]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def real_jobs(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return benchmark("real_jobs.py", *argv, cwd=cwd)


def test_real_jobs_in_process_writes_runs_and_reports_them(tmp_path: Path) -> None:
    results = tmp_path / "runs.jsonl"
    run = real_jobs(
        "--in-process", "--trials", "4", "--seeds", "1", "--repeats", "1", "--results", str(results), cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr[-3000:]

    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["method"], r["seed"], r["draw"]) for r in records] == [("bayes", 0, 0), ("random", 0, 0), ("tpe", 0, 0)]
    for r in records:
        assert len(r["trials"]) == 4
        assert all(math.isfinite(t["score"]) and t["cost"] > 0 for t in r["trials"])  # the train seconds
        assert set(r["trials"][0]["params"]) == {
            "trainer.lr",
            "model.width",
            "trainer.weight_decay",
            "model.activation",
        }
    assert records[0]["trials"][0]["info"]["source"] == "search_center"  # Protein, through the Tuner

    best = {r["method"]: min(t["score"] for t in r["trials"]) for r in records}
    report = run.stdout[run.stdout.index("mlp in-process") :]
    for method, b in best.items():
        assert re.search(rf"^\| {method} \| 1 \| {b:.4g} \| {b:.4g} \| {b:.4g} \|$", report, re.M), report
    for peer in ("random", "tpe"):
        share = "100%" if best["bayes"] < best[peer] else "0%"
        ratio = best["bayes"] / best[peer]
        assert (
            f"bayes / {peer}: geometric mean ratio {ratio:.3f}; bayes's best is the better on {share} of 1 " in report
        )

    again = real_jobs("--in-process", "--report-only", "--results", str(results), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == report.strip()


def test_real_jobs_in_process_geometric_mean_over_draws(tmp_path: Path) -> None:
    """The report reads several draws per data seed: geometric means, per-draw means and pairwise shares."""
    results = tmp_path / "runs.jsonl"
    bests = {
        "bayes": {(0, 0): 0.1, (0, 1): 0.4, (1, 0): 0.2, (1, 1): 0.2},
        "random": {(0, 0): 0.2, (0, 1): 0.2, (1, 0): 0.1, (1, 1): 0.3},
    }
    with results.open("w") as f:
        for method, runs in bests.items():
            for (seed, draw), b in runs.items():
                trials = [{"params": {}, "score": s, "cost": 1.0, "info": {"source": "sobol"}} for s in (b * 3, b)]
                f.write(
                    json.dumps({"objective": "mlp", "method": method, "seed": seed, "draw": draw, "trials": trials})
                    + "\n"
                )
    run = real_jobs(
        "--in-process", "--report-only", "--methods", "bayes,random", "--results", str(results), cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    geo = {m: math.exp(statistics.fmean(math.log(v) for v in runs.values())) for m, runs in bests.items()}
    assert f"| bayes | 4 | {geo['bayes']:.4g} | 0.2 | 0.1414 / 0.2828 |" in run.stdout
    assert f"| random | 4 | {geo['random']:.4g} | 0.2 | 0.1414 / 0.2449 |" in run.stdout
    # seed 0: 0.1 beats both 0.2s, 0.4 loses both; seed 1: 0.2 loses to 0.1, beats 0.3, twice -> 4 of 8
    assert (
        f"geometric mean ratio {geo['bayes'] / geo['random']:.3f}; bayes's best is the better on 50% of 8 "
        in run.stdout
    )
    assert "bayes's best trial came from: sobol on 4" in run.stdout


def test_real_jobs_in_process_is_the_mlp_only(tmp_path: Path) -> None:
    run = real_jobs("--in-process", "--ppo", cwd=tmp_path)
    assert run.returncode == 2
    assert "--in-process runs the MLP only" in run.stderr
    assert "Traceback" not in run.stderr


def optimizer_benchmark() -> Any:
    """benchmarks/optimizer.py as a module."""
    spec = importlib.util.spec_from_file_location("bench_optimizer", ROOT / "benchmarks" / "optimizer.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    return bench


def test_problems_are_chosen_by_whole_name_or_by_prefix() -> None:
    # The parallel benchmark's default "Hartmann-6" must not also pick Hartmann-6 in 10-D.
    bench = optimizer_benchmark()
    names = lambda wanted: [p.name for p in bench.select(wanted)]  # noqa: E731
    assert names(["Hartmann-6", "Branin"]) == ["Branin", "Hartmann-6"]
    assert names(["Hartmann"]) == ["Hartmann-6", "Hartmann-6 in 10-D (4 inert)"]
    assert names(["Mixed-4"]) == ["Mixed-4 (cat-dependent optimum)"]


def test_optimizer_benchmark_at_a_short_budget(tmp_path: Path) -> None:
    # --budget gives every problem the same trial budget (a short sweep); its runs are kept apart from full ones.
    results = tmp_path / "runs.jsonl"
    argv = ["--budget", "5", "--seeds", "1", "--problems", "Branin", "--methods", "protein,random"]
    argv += ["--results", str(results)]
    run = benchmark("optimizer.py", *argv, "--no-timing", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]

    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted((r["method"], r["mode"], len(r["values"])) for r in records) == [
        ("protein", "budget 5", 5),
        ("random", "budget 5", 5),
    ]
    assert [r["fallbacks"] for r in records] == [0, 0] and "fell back" not in run.stdout
    bench = optimizer_benchmark()
    cells = []
    for method in ("protein", "random"):
        (r,) = [r for r in records if r["method"] == method]
        regret = min(r["values"]) - r["optimum"]
        cells.append(f"{bench.fmt(regret)} / {int(regret > 0.1)} of 1")
    assert f"| Branin | 5 trials | 0.1 | {cells[0]} | {cells[1]} |" in run.stdout, run.stdout
    again = benchmark("optimizer.py", *argv, "--report-only", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "runs," not in again.stdout  # nothing run again: the results file holds them
    assert again.stdout[again.stdout.index("| Branin") :].splitlines()[0] in run.stdout


def test_the_report_warns_of_runs_where_protein_fell_back_to_random_search(capsys) -> None:
    # A model failure gives a random suggestion and a log line only: the table would hide it among the results.
    bench = optimizer_benchmark()
    branin = bench.Problem("Branin", 2, 0.1)
    trace = {"values": [1.0, 0.5], "costs": [1.0, 1.0], "optimum": 0.0, "suggest_time": 0.1}
    traces = {(branin, "protein", 0): {**trace, "fallbacks": 0}, (branin, "protein", 1): {**trace, "fallbacks": 2}}
    bench.report([branin], ["protein"], 2, traces)
    out = capsys.readouterr().out
    assert "WARNING: Protein fell back to a random suggestion 2 times" in out and "Branin seed 1" in out, out
    assert "seed 0" not in out


def test_optimizer_benchmark_with_noise_scores_the_true_value_of_the_pick() -> None:
    # --noise: each method sees noisy values (the same draws at a seed), and a run is scored by the true value of
    # the trial it observed best, so a lucky draw is no find.
    bench = optimizer_benchmark()
    branin = bench.Problem("Branin", 6, 0.1)
    runs = {m: bench.run(branin, m, seed=3, noise=2.0) for m in ("random", "tpe")}
    draws = [[v - t for v, t in zip(r["values"], r["true_values"])] for r in runs.values()]
    assert draws[0] == pytest.approx(draws[1]) and all(abs(d) > 0 for d in draws[0])  # the same draws, not zero
    assert max(map(abs, draws[0])) < 2.0  # sd 0.2: 2.0 is ten of them
    r = runs["random"]
    pick = min(range(6), key=lambda i: r["values"][i])
    assert bench.regret_at_trials(r, 6) == pytest.approx(r["true_values"][pick] - r["optimum"])
    assert "true_values" not in bench.run(branin, "random", seed=3)  # without noise, nothing changes


def test_optimizer_benchmark_runs_past_the_cost_problem_s_trial_cap() -> None:
    # --budget may ask for more trials than the noise draws a cost-aware run needs; the run is not cut short.
    bench = optimizer_benchmark()
    run = bench.run(bench.Problem("Branin", bench.MAX_COST_TRIALS + 10, 0.1), "random", seed=0)
    assert len(run["values"]) == bench.MAX_COST_TRIALS + 10


def test_problems_with_inert_parameters_and_the_extra_problem() -> None:
    # --inert K: the same function with K more parameters it ignores; PPO-12 (outside the table): PPO-11 whose
    # optimizer choice moves the best learning rate and adds a floor.
    bench = optimizer_benchmark()
    mixed = bench.select(["Mixed-5"])[0]
    wider = bench.with_inert(mixed, 4)
    assert wider.name == "Mixed-5 (log, pow2, int, cat; edge) + 4 inert" and wider.budget == mixed.budget
    params, optimum, evaluate = bench.make_function(mixed.name)
    wide_params, wide_optimum, wide_evaluate = bench.make_function(wider.name)
    assert list(wide_params) == [*params, "inert0", "inert1", "inert2", "inert3"] and wide_optimum == optimum
    point = {"lr": 0.1, "width": 512, "layers": 7, "wd": 1e-5, "act": "sigmoid"}
    assert evaluate(point)[0] == pytest.approx(0.0, abs=0.02)
    assert wide_evaluate({**point, "inert0": 0.3, "inert1": 0.9, "inert2": 0.0, "inert3": 1.0}) == evaluate(point)

    (ppo12,) = bench.select(["PPO-12"])
    assert ppo12 not in bench.PROBLEMS  # not a row of the table
    params, optimum, evaluate = bench.make_function(ppo12.name)
    assert params["optimizer"]["choices"] == ["sgd", "rmsprop", "adam"] and optimum == 0.0
    best = {"ent": 1e-2, "gamma": 0.99, "lam": 0.95, "clip": 0.2, "vf": 0.5, "grad_norm": 1.0, "n_steps": 2048}
    best |= {"minibatch": 64, "epochs": 10, "act": "tanh", "lr": 10**-2.4, "optimizer": "adam"}
    assert evaluate(best)[0] == pytest.approx(0.0)
    sgd = evaluate({**best, "optimizer": "sgd"})[0]
    assert sgd > 0.3 and evaluate({**best, "optimizer": "sgd", "lr": 10**-2.0})[0] == pytest.approx(0.3)
