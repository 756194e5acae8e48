"""Protein, genetic and random search: the contract the service relies on."""

from __future__ import annotations

import logging
import math

import pytest

from optimizers import Observation, ProteinConfig, make_optimizer
from optimizers import gp as gp_module
from optimizers.genetic import GeneticSearch
from optimizers.protein import Protein, param_key
from optimizers.random_search import RandomSearch

MIXED = {
    "lr": {"distribution": "log_normal", "min": 1e-5, "max": 1e-1},
    "gamma": {"distribution": "logit_normal", "min": 0.9, "max": 0.999},
    "epochs": {"distribution": "int_uniform", "min": 1, "max": 4},
    "batch": {"distribution": "uniform_pow2", "min": 16, "max": 256},
    "clip": {"distribution": "uniform", "min": 0.1, "max": 0.3},
    "width": {"distribution": "categorical", "choices": [32, 64, 128]},
}


def config(parameters=None, **kw) -> ProteinConfig:
    settings = kw.pop("settings", {"num_random_samples": 4})
    return ProteinConfig(
        parameters=parameters or {"x": {"distribution": "uniform", "min": 0.0, "max": 1.0, "scale": 1.0}},
        settings=settings,
        **kw,
    )


def run(opt, f, trials: int, cost=lambda p: 1.0) -> list[Observation]:
    obs: list[Observation] = []
    for _ in range(trials):
        s = opt.suggest(obs, [], 1)[0]
        score = f(s.params)
        obs.append(Observation(s.params, score, cost(s.params), failed=score is None))
    return obs


def mixed_score(p) -> float:
    return -((math.log10(p["lr"]) + 3) ** 2) - (p["epochs"] - 3) ** 2 - 0.01 * abs(p["batch"] - 64) + p["clip"]


def valid(cfg: ProteinConfig, params: dict) -> bool:
    for name, p in cfg.parameters.items():
        v = params[name]
        if p.distribution == "categorical":
            ok = v in p.choices
        else:
            ok = p.min <= v <= p.max
            if p.distribution == "int_uniform":
                ok = ok and isinstance(v, int)
            if p.distribution == "uniform_pow2":
                ok = ok and isinstance(v, int) and v & (v - 1) == 0
        if not ok:
            return False
    return True


def test_make_optimizer_picks_by_method():
    assert isinstance(make_optimizer(config(method="bayes")), Protein)
    assert isinstance(make_optimizer(config(method="genetic")), GeneticSearch)
    assert isinstance(make_optimizer(config(method="random")), RandomSearch)


def test_center_first_then_sobol_then_model():
    cfg = config({"x": {"distribution": "uniform", "min": 0.0, "max": 1.0, "mean": 0.2, "scale": 1.0}})
    obs = run(Protein(cfg, seed=0), lambda p: -((p["x"] - 0.7) ** 2), 1)
    assert obs[0].params == {"x": 0.2}
    opt = Protein(cfg, seed=0)
    sources = []
    observations: list[Observation] = []
    for _ in range(7):
        s = opt.suggest(observations, [], 1)[0]
        sources.append(s.info["source"])
        observations.append(Observation(s.params, -((s.params["x"] - 0.7) ** 2), 1.0))
    assert sources[:5] == ["search_center", "sobol", "sobol", "sobol", "sobol"]
    assert sources[5:] == ["bayes", "bayes"]
    assert {"predicted_score", "predicted_score_std", "predicted_cost"} <= set(s.info)


def test_deterministic_under_a_seed():
    cfg = config(MIXED)
    obs = run(Protein(cfg, seed=3), mixed_score, 8)
    a = Protein(cfg, seed=3).suggest(obs, [], 2)
    b = Protein(cfg, seed=3).suggest(obs, [], 2)
    assert [s.params for s in a] == [s.params for s in b]
    assert [o.params for o in run(Protein(cfg, seed=3), mixed_score, 8)] == [o.params for o in obs]


def test_values_are_always_valid_for_every_method():
    cfg = config(MIXED)
    for opt in (Protein(cfg, seed=1), GeneticSearch(cfg, seed=1), RandomSearch(cfg, seed=1)):
        obs = run(opt, mixed_score, 12)
        assert all(valid(cfg, o.params) for o in obs)
        assert len({param_key(o.params) for o in obs}) == len(obs)


def test_minimize_and_maximize_go_opposite_ways():
    f = lambda p: (p["x"] - 0.3) ** 2  # noqa: E731
    best_min = min(o.score for o in run(Protein(config(goal="minimize"), seed=0), f, 12))
    best_max = max(o.score for o in run(Protein(config(goal="maximize"), seed=0), f, 12))
    assert best_min < 1e-3
    assert best_max > 0.45  # the far end, x = 1


def test_pending_points_give_distinct_suggestions():
    cfg = config(MIXED)
    obs = run(Protein(cfg, seed=0), mixed_score, 8)
    first = Protein(cfg, seed=0).suggest(obs, [], 1)[0].params
    batch = Protein(cfg, seed=0).suggest(obs, [first], 4)
    keys = {param_key(s.params) for s in batch} | {param_key(first)}
    assert len(keys) == 5
    assert all(valid(cfg, s.params) for s in batch)


def test_failures_steer_suggestions_away():
    # The score rises toward x = 1, but every run with x > 0.5 crashes: a model that ignored failures would
    # keep proposing the right end.
    cfg = config(settings={"num_random_samples": 6})
    f = lambda p: None if p["x"] > 0.5 else p["x"]  # noqa: E731
    obs = run(Protein(cfg, seed=0), f, 16)
    later = [o.params["x"] for o in obs[10:]]
    assert sum(x > 0.6 for x in later) <= 1, later


def test_max_suggestion_cost_drops_dear_candidates():
    cfg = config(settings={"num_random_samples": 6, "max_suggestion_cost": 5.0})
    cost = lambda p: math.exp(4 * p["x"])  # noqa: E731 - over 5 above x = 0.4
    obs = run(Protein(cfg, seed=0), lambda p: p["x"], 12, cost)
    later = obs[8:]
    assert all(o.params["x"] < 0.5 for o in later), [o.params for o in later]


def test_random_fallback_when_the_model_fails(monkeypatch, caplog):
    cfg = config()
    obs = run(Protein(cfg, seed=0), lambda p: p["x"], 6)

    def broken(*a, **k):
        raise RuntimeError("Cholesky failed")

    monkeypatch.setattr(gp_module, "fit_gp", broken)
    with caplog.at_level(logging.WARNING, logger="optimizers.protein"):
        out = Protein(cfg, seed=0).suggest(obs, [], 2)
    assert all("Cholesky failed" in s.info["fallback"] for s in out)
    assert all(0 <= s.params["x"] <= 1 for s in out)
    assert "falling back" in caplog.text and "Cholesky failed" in caplog.text


def test_all_failures_keep_exploring():
    cfg = config(MIXED)
    obs = run(Protein(cfg, seed=0), lambda p: None, 8)
    assert len({param_key(o.params) for o in obs}) == 8


def test_genetic_is_deterministic_and_improves_on_its_start():
    cfg = config(MIXED, method="genetic")
    a = run(GeneticSearch(cfg, seed=2), mixed_score, 30)
    b = run(GeneticSearch(cfg, seed=2), mixed_score, 30)
    assert [o.params for o in a] == [o.params for o in b]
    assert max(o.score for o in a[15:]) >= max(o.score for o in a[:10])


def test_protein_beats_random_on_a_smooth_function():
    cfg = config(
        {f"x{i}": {"distribution": "uniform", "min": -1.0, "max": 1.0, "scale": 1.0} for i in range(3)}, goal="minimize"
    )
    f = lambda p: sum((p[f"x{i}"] - 0.3) ** 2 for i in range(3))  # noqa: E731
    ours = min(o.score for o in run(Protein(cfg, seed=0), f, 20))
    rand = min(o.score for o in run(RandomSearch(cfg, seed=0), f, 20))
    assert ours < rand / 10


@pytest.mark.parametrize("method", ["bayes", "genetic", "random"])
def test_method_name_dispatches_inside_protein(method):
    out = Protein(config(method=method), seed=0).suggest([], [], 3)
    assert len({param_key(s.params) for s in out}) == 3
