"""How well Protein's score model ranks and picks on a real job's landscape, with and without the warp choice.

    python benchmarks/surrogate.py                          # 3 data sets x 120 MLP runs, then the table
    python benchmarks/surrogate.py --data-seeds 0,1 --points 60 --draws 10

A 16-trial sweep gives the model 5 trials: whether they beat random search's is mostly luck of the draw, so
that comparison (benchmarks/real_jobs.py) needs many seeds to see a model change. This one looks at the model
itself. It trains the MLP recipe (recipes/mlp.py, in this process, the same code a job runs) at uniformly random
points of the real-jobs search space, once per data set (kept in a result file and reused), then, for many
random training sets of n of those runs, fits Protein's model and asks it about the other runs:

- rank correlation (Spearman) of the model's mean with the runs' true validation MSE;
- the run the acquisition (log expected improvement, as a suggestion ranks candidates) would pick among the
  others: its true MSE (median), how often it is a good run (MSE under 0.1), how often it beats the best of the
  training set.

Each under "tail" (the log-compressed tail alone, as before the warp choice) and "evidence" (what Protein does:
the warp with the highest warped-GP evidence, see optimizers/warps.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from real_jobs import OBJECTIVES, run_in_process  # noqa: E402

RESULTS = "train_dir/bench_surrogate.jsonl"
GOOD = 0.1  # an MSE under this is a good run (about 1 in 10 random points)


def landscape(data_seed: int, points: int, path: Path) -> list[dict]:
    """``points`` random runs on data set ``data_seed``: those in the result file, plus new ones appended."""
    from optimizers.config import ParameterConfig
    from optimizers.spaces import Space

    runs = [r for r in _read(path) if r["data_seed"] == data_seed][:points]
    space = Space({k: ParameterConfig(**v) for k, v in OBJECTIVES["mlp"]["parameters"].items()})
    rng = np.random.default_rng([data_seed, 17])
    draws = [space.decode(rng.uniform(-1, 1, space.dim)) for _ in range(points)]
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(len(runs), points):
            score = run_in_process("mlp", draws[i], data_seed, f"landscape_{data_seed}_{i:04d}", Path(tmp))
            record = {"data_seed": data_seed, "params": draws[i], "score": score}
            with path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            runs.append(record)
            print(f"data set {data_seed}: {i + 1}/{points} runs", file=sys.stderr, flush=True)
    return runs


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def quality(runs: list[list[dict]], n: int, draws: int, warp_choice: bool) -> dict[str, float]:
    import torch
    from scipy.stats import spearmanr

    from optimizers import warps
    from optimizers.base import Observation
    from optimizers.config import ProteinConfig
    from optimizers.protein import Protein
    from optimizers.protein_model import Model, _t01

    cfg = ProteinConfig.model_validate({"parameters": OBJECTIVES["mlp"]["parameters"], "goal": "minimize"})
    candidates = warps.candidates
    if not warp_choice:
        warps.candidates = lambda y: [warps.TailWarp(y)]
    rows = []
    try:
        for data in runs:
            scores = np.array([r["score"] for r in data])
            for draw in range(draws):
                rng = np.random.default_rng(draw)
                order = rng.permutation(len(data))
                train, test = order[:n], order[n:]
                protein = Protein(cfg, seed=draw)
                model = Model(
                    protein, protein._data([Observation(data[i]["params"], scores[i]) for i in train]), [], rng
                )
                x = np.array([protein.space.encode(data[i]["params"]) for i in test])
                with torch.no_grad():
                    mean = model.score(_t01(x))[0].numpy()
                pick = scores[test][int(np.argmax(model._rank(x)[0]))]
                rows.append((spearmanr(-mean, scores[test]).statistic, pick, pick < GOOD, pick < scores[train].min()))
    finally:
        warps.candidates = candidates
    a = np.array(rows, dtype=float)
    return {
        "spearman": float(np.nanmean(a[:, 0])),
        "pick": float(np.median(a[:, 1])),
        "good": a[:, 2].mean(),
        "improves": a[:, 3].mean(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-seeds", default="0,1,2")
    ap.add_argument("--points", type=int, default=120, help="random runs per data set")
    ap.add_argument("--draws", type=int, default=25, help="random training sets per data set and n")
    ap.add_argument("--n", default="11,16,30", help="training-set sizes (11: where a default sweep's model starts)")
    ap.add_argument("--results", default=RESULTS)
    args = ap.parse_args()
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = [landscape(int(s), args.points, path) for s in args.data_seeds.split(",")]
    print(f"MLP validation MSE, {len(runs)} data sets x {args.points} random runs, {args.draws} training sets each")
    print("| n | warp | rank correlation | pick (median MSE) | pick is good (< 0.1) | pick beats the training best |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in (int(v) for v in args.n.split(",")):
        for label, choice in (("tail only", False), ("evidence", True)):
            q = quality(runs, n, args.draws, choice)
            print(f"| {n} | {label} | {q['spearman']:.2f} | {q['pick']:.3f} | {q['good']:.0%} | {q['improves']:.0%} |")


if __name__ == "__main__":
    main()
