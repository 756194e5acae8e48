"""Protein, genetic and random search: the contract the service relies on."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pytest

from optimizers import Observation, ProteinConfig, Suggestion, make_optimizer
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


@pytest.mark.parametrize(
    ("budget", "expected"),
    [(None, 10), (16, 5), (24, 8), (100, 10), (3, 5)],  # a third of the budget, between d + 1 = 5 and 10
)
def test_initial_design_is_sized_from_the_trial_budget_unless_set(budget, expected):
    four_d = {k: MIXED[k] for k in ("lr", "epochs", "clip", "width")}
    auto = ProteinConfig(parameters=four_d)
    assert Protein(auto, seed=0, budget=budget).initial_design_size() == 1 + expected
    # Set explicitly, num_random_samples wins over the budget, for every method that has an initial design.
    fixed = ProteinConfig(parameters=four_d, settings={"num_random_samples": 7})
    assert Protein(fixed, seed=0, budget=budget).initial_design_size() == 8
    assert GeneticSearch(fixed, seed=0, budget=budget).random_samples == 7


def test_a_short_sweep_hands_over_to_the_model_after_its_initial_design():
    four_d = {k: MIXED[k] for k in ("lr", "epochs", "clip", "width")}
    opt = make_optimizer(ProteinConfig(parameters=four_d), seed=0, budget=16)
    sources = []
    observations: list[Observation] = []
    for _ in range(8):
        s = opt.suggest(observations, [], 1)[0]
        sources.append(s.info["source"])
        score = -((math.log10(s.params["lr"]) + 3) ** 2) - (s.params["epochs"] - 3) ** 2 + s.params["clip"]
        observations.append(Observation(s.params, score, 1.0))
    assert sources == ["search_center"] + ["sobol"] * 5 + ["bayes"] * 2


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


def test_the_cost_weight_peaks_at_the_cost_target_without_a_kink():
    # The acquisition's gradient steps cross the cost target: a kink there made them zigzag.
    import torch

    from optimizers.protein_model import MIN_COST_WEIGHT, _cost_weight

    target = 0.4
    c = torch.tensor([target - 1e-6, target + 1e-6, target - 0.3, target + 0.3, target + 2.0], dtype=torch.float64)
    c.requires_grad_(True)
    _cost_weight(c, target).sum().backward()
    w = _cost_weight(c.detach(), target)
    assert c.grad is not None and abs(float(c.grad[0] - c.grad[1])) < 1e-3  # the slope is continuous at the target
    assert float(w[0]) > float(w[2]) and math.isclose(float(w[2]), float(w[3]))  # highest there, symmetric
    assert float(w[4]) == MIN_COST_WEIGHT  # and never below the floor


def test_random_fallback_when_the_model_fails(monkeypatch, caplog):
    cfg = config()
    obs = run(Protein(cfg, seed=0), lambda p: p["x"], 6)

    def broken(*a, **k):
        raise RuntimeError("Cholesky failed")

    monkeypatch.setattr(gp_module, "fit", broken)
    with caplog.at_level(logging.WARNING, logger="optimizers.protein"):
        out = Protein(cfg, seed=0).suggest(obs, [], 2)
    assert all("Cholesky failed" in s.info["fallback"] for s in out)
    assert all(0 <= s.params["x"] <= 1 for s in out)
    assert "falling back" in caplog.text and "Cholesky failed" in caplog.text


def test_a_space_tried_point_by_point_repeats_the_point_the_model_rates_best():
    """Six points in all: once each was tried, a trial re-runs the best-rated one (a noisy score gains most from
    that), the next best while it is in flight; never a random point, and no fallback."""
    from optimizers import Tuner

    score = {("a", 1): 0.1, ("a", 2): 0.2, ("b", 1): 0.9, ("b", 2): 0.5, ("c", 1): 0.3, ("c", 2): 0.4}
    space = {
        "opt": {"distribution": "categorical", "choices": ["a", "b", "c"]},
        "n": {"distribution": "int_uniform", "min": 1, "max": 2},
    }
    tuner = Tuner(space, seed=0)
    for params in ({"opt": o, "n": n} for o, n in score):
        tuner.tell(params, score[params["opt"], params["n"]])
    first = tuner.ask()
    assert (first["opt"], first["n"]) == ("b", 1)
    assert tuner.last_suggestion is not None and tuner.last_suggestion.info["source"] == "repeat"
    second = tuner.ask()  # ("b", 1) is in flight
    assert (second["opt"], second["n"]) == ("b", 2) and "fallback" not in tuner.last_suggestion.info


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
def test_make_optimizer_picks_the_method(method):
    optimizer = make_optimizer(config(method=method), seed=0)
    assert type(optimizer) is {"bayes": Protein, "genetic": GeneticSearch, "random": RandomSearch}[method]
    out = optimizer.suggest([], [], 3)
    assert len({param_key(s.params) for s in out}) == 3


def test_protein_is_bayes_and_says_where_the_other_methods_are():
    with pytest.raises(ValueError, match="use optimizers.make_optimizer"):
        Protein(config(method="random"), seed=0)


# ---------------------------------------------------------------------- exploration with the defaults a user gets

DEFAULTS = {  # no scale, no mean: what a user writes
    "lr": {"distribution": "log_normal", "min": 1e-6, "max": 1.0},
    "width": {"distribution": "uniform_pow2", "min": 4, "max": 1024},
    "act": {"distribution": "categorical", "choices": ["relu", "gelu", "tanh", "sigmoid", "elu"]},
    "x": {"distribution": "uniform", "min": 0.0, "max": 10.0},
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_initial_design_spans_every_range_and_every_choice_with_default_scale(seed):
    cfg = ProteinConfig(parameters=DEFAULTS)  # default settings: center + 10 Sobol points
    opt = Protein(cfg, seed=seed)
    obs = run(opt, lambda p: 0.0, 11)
    assert obs[0].params == {"lr": 1e-3, "width": 64, "act": "relu", "x": 5.0}  # the search center first
    design = [o.params for o in obs[1:]]
    # The default scale (0.5 of the normalized half-width) used to confine these to the middle half of each
    # range: 10^-4.5..10^-1.5, 16..256, 2.5..7.5. Now the outer quarters are reached too.
    lrs = [p["lr"] for p in design]
    assert min(lrs) < 10**-4.5 and max(lrs) > 10**-1.5
    assert min(p["width"] for p in design) < 16 and max(p["width"] for p in design) > 256
    assert min(p["x"] for p in design) < 2.5 and max(p["x"] for p in design) > 7.5
    assert {p["act"] for p in design[:5]} == {"relu", "gelu", "tanh", "sigmoid", "elu"}  # every choice in 5


def test_optimum_in_a_corner_is_found_with_defaults():
    # Best where every parameter is at the top of its range: the old default box never got there.
    cfg = ProteinConfig(parameters=DEFAULTS, goal="maximize")

    def f(p: dict) -> float:
        return math.log10(p["lr"]) + math.log2(p["width"]) / 10 + p["x"] / 10 + (p["act"] == "elu")

    obs = run(Protein(cfg, seed=0), f, 24)
    best = max(obs, key=lambda o: o.score).params
    assert best["lr"] > 0.1 and best["width"] >= 512 and best["x"] > 8.0 and best["act"] == "elu"


def test_a_stalled_search_escapes_the_basin_of_its_best():
    # Told a best point and then 14 worse ones around it (no improvement for longer than the patience of
    # max(6, d) trials), three suggestions in four leave the best's neighbourhood; the fourth may refine it.
    # Nothing observed outside the basin: the escape goes where nothing was observed.
    cfg = config(
        {
            "x": {"distribution": "uniform", "min": 0.0, "max": 1.0},
            "y": {"distribution": "uniform", "min": 0.0, "max": 1.0},
        }
    )

    def f(p: dict[str, float]) -> float:
        return -((p["x"] - 0.4) ** 2 + (p["y"] - 0.4) ** 2)

    rng = np.random.default_rng(0)
    obs = [Observation({"x": 0.4, "y": 0.4}, 0.0, 1.0)]
    for _ in range(14):  # worse points around the best, after it
        p = {"x": float(0.4 + rng.uniform(-0.2, 0.2)), "y": float(0.4 + rng.uniform(-0.2, 0.2))}
        obs.append(Observation(p, f(p), 1.0))
    opt = Protein(cfg, seed=0)
    infos = [opt.suggest(obs[: len(obs) - drop], [], 1)[0] for drop in (0, 1)]
    escaping = [s for s in infos if "escape" in s.info]
    staying = [s for s in infos if "escape" not in s.info]
    assert len(escaping) == 1 and len(staying) == 1  # 14 stalled trials escape, 13 refine (the fourth of four)
    e = escaping[0].params
    assert math.dist((e["x"], e["y"]), (0.4, 0.4)) >= 0.25 * math.sqrt(2) / 2  # radius in [0, 1] units
    assert min(math.dist((e["x"], e["y"]), (o.params["x"], o.params["y"])) for o in obs) > 0.2
    # Nothing stalled yet: no escape.
    assert "escape" not in opt.suggest(obs[:5], [], 1)[0].info
    # The same stalled search at the end of a known trial budget does not restart elsewhere: an escape has no
    # trials left to climb what it finds. The last trial refines the best; the one before probes it (the best's
    # settings with one parameter moved: a single trial that may end in a better basin).
    last = Protein(cfg, seed=0, budget=16).suggest(obs, [], 1)[0]  # 15 observed: the last trial of 16
    assert "escape" not in last.info and "refine" in last.info
    assert math.dist((last.params["x"], last.params["y"]), (0.4, 0.4)) < 0.05  # the model's best
    probe = Protein(cfg, seed=0, budget=17).suggest(obs, [], 1)[0]  # the second to last of 17
    assert "one parameter moved" in probe.info.get("escape", ""), probe.info
    assert [probe.params[k] == 0.4 for k in ("x", "y")].count(True) == 1
    assert "escape" in Protein(cfg, seed=0, budget=25).suggest(obs, [], 1)[0].info  # 10 trials left: escape


def test_the_endgame_lets_an_escape_that_is_climbing_another_basin_go_on():
    cfg = config(
        {
            "x": {"distribution": "uniform", "min": 0.0, "max": 1.0},
            "y": {"distribution": "uniform", "min": 0.0, "max": 1.0},
        }
    )

    def f(p: dict[str, float]) -> float:  # the best at (0.15, 0.15), another basin rising toward (0.9, 0.9)
        near, far = (p["x"] - 0.15) ** 2 + (p["y"] - 0.15) ** 2, (p["x"] - 0.9) ** 2 + (p["y"] - 0.9) ** 2
        return max(-30 * near, -0.05 - 30 * far, -1.0)

    rng = np.random.default_rng(0)
    points = [{"x": 0.15, "y": 0.15}, {"x": 0.5, "y": 0.5}, {"x": 0.2, "y": 0.8}, {"x": 0.8, "y": 0.2}]
    points += [{"x": 0.5, "y": 0.1}, {"x": 0.1, "y": 0.5}]
    points += [
        {"x": float(0.15 + rng.uniform(-0.08, 0.08)), "y": float(0.15 + rng.uniform(-0.08, 0.08))} for _ in range(12)
    ]
    points += [{"x": 0.7, "y": 0.65}, {"x": 0.75, "y": 0.72}, {"x": 0.8, "y": 0.78}]  # escape steps, each better
    obs = [Observation(p, f(p), 1.0) for p in points]
    # The second to last trial of the budget: the endgame, yet the escape goes on climbing the other basin.
    s = Protein(cfg, seed=0, budget=len(obs) + 2).suggest(obs, [], 1)[0]
    assert "escape" in s.info and "refine" not in s.info
    # Once its climb stopped improving (the last escapes found nothing better), the endgame refines the best.
    stopped = obs + [Observation({"x": 0.3, "y": 0.9}, -1.0, 1.0), Observation({"x": 0.9, "y": 0.4}, -1.0, 1.0)]
    stopped += [Observation({"x": 0.45, "y": 0.95}, -1.0, 1.0), Observation({"x": 0.99, "y": 0.6}, -1.0, 1.0)]
    s = Protein(cfg, seed=0, budget=len(stopped) + 1).suggest(stopped, [], 1)[0]
    assert "refine" in s.info


def choice_dependent_problem(weak: list[str]) -> tuple[ProteinConfig, Any]:
    """x and an activation ("a", "b", "c"), each choice with its own best x (an optimizer's own learning rate)
    and floor, "a" the worst: plus ``weak`` parameters in [0, 1], each best at 0.5."""
    cfg = config(
        {
            "x": {"distribution": "uniform", "min": 0.0, "max": 1.0},
            **{w: {"distribution": "uniform", "min": 0.0, "max": 1.0} for w in weak},
            "act": {"distribution": "categorical", "choices": ["a", "b", "c"]},
        }
    )
    best_x = {"a": (0.3, 0.2), "b": (0.6, 0.0), "c": (0.9, 0.1)}

    def f(p: dict) -> float:
        bx, floor = best_x[p["act"]]
        return -(floor + 4 * (p["x"] - bx) ** 2 + 0.1 * sum((p[w] - 0.5) ** 2 for w in weak))

    return cfg, f


def test_an_escape_first_tries_the_best_settings_with_each_other_choice():
    # The search converged on "a"; "b" and "c" were seen only at poor settings, so the model believes them poor
    # everywhere. Escape steps try the best's settings with another choice, one choice at a time, before
    # restarting elsewhere.
    cfg, f = choice_dependent_problem([])
    rng = np.random.default_rng(0)
    points = [{"x": 0.3, "act": "a"}, {"x": 0.0, "act": "b"}, {"x": 0.05, "act": "c"}, {"x": 0.02, "act": "b"}]
    points += [{"x": float(0.3 + rng.uniform(-0.15, 0.15)), "act": "a"} for _ in range(12)]
    obs = [Observation(p, f(p), 1.0) for p in points]
    probes = []
    for _ in range(2):
        s = Protein(cfg, seed=0).suggest(obs, [], 1)[0]
        assert "another choice" in s.info.get("escape", ""), s.info
        probes.append(s.params)
        obs.append(Observation(s.params, f(s.params) - 1.0, 1.0))  # told worse than the best: still stalled
    assert [p["x"] for p in probes] == [0.3, 0.3]  # the best's settings, each time
    assert sorted(p["act"] for p in probes) == ["b", "c"]  # each other choice once


def test_a_choice_whose_probe_came_close_is_tried_along_its_parameters_a_few_times():
    # "b" has the best floor but its own best x (0.55, an optimizer's own learning rate): its probe at the
    # converged best's settings (x = 0.3 with "a") scores a little worse than the best, as a coupled choice does.
    # It gets a few trials at "b" with one parameter moved; a choice whose probe came nowhere near gets none.
    cfg = config(
        {
            "x": {"distribution": "uniform", "min": 0.0, "max": 1.0},
            "w": {"distribution": "uniform", "min": 0.0, "max": 1.0},
            "act": {"distribution": "categorical", "choices": ["a", "b", "c"]},
        }
    )
    best_x = {"a": (0.3, 0.2), "b": (0.55, 0.0), "c": (0.9, 1.5)}

    def f(p: dict) -> float:
        bx, floor = best_x[p["act"]]
        return -(floor + 4 * (p["x"] - bx) ** 2 + 0.2 * (p["w"] - 0.5) ** 2)

    rng = np.random.default_rng(0)
    points = [{"x": 0.3, "w": 0.5, "act": "a"}, {"x": 0.0, "w": 0.1, "act": "b"}, {"x": 0.05, "w": 0.9, "act": "c"}]
    points += [{"x": 0.95, "w": 0.2, "act": "a"}]
    points += [
        {"x": float(0.3 + rng.uniform(-0.15, 0.15)), "w": float(rng.uniform(0.4, 0.6)), "act": "a"} for _ in range(12)
    ]
    points += [{"x": 0.3, "w": 0.5, "act": "c"}, {"x": 0.3, "w": 0.5, "act": "b"}]  # probes: "c" far, "b" close
    obs = [Observation(p, f(p), 1.0) for p in points]
    assert f(points[-1]) < f(points[0])  # the probe is behind the best

    def next_steps(observations: list[Observation], n: int) -> list[Suggestion]:
        out = []
        for _ in range(n):  # each told behind the best: the search stays stalled
            out.append(Protein(cfg, seed=0).suggest(observations, [], 1)[0])
            told = min(f(out[-1].params), f(points[0])) - 0.01
            observations = observations + [Observation(out[-1].params, told, 1.0)]
        return out

    line = [s.params for s in next_steps(obs, 8) if "close to the best" in s.info.get("escape", "")]
    assert len(line) == 3, line  # CHOICE_LINE_STEPS (a refine of the best among them), then the search moves on
    for p in line:  # "b" at the probe's settings but one
        assert p["act"] == "b" and [p["x"] == 0.3, p["w"] == 0.5].count(True) == 1, line
    # With the probe of "b" far behind too, no trials along its line.
    far = [Observation(o.params, o.score - (2.0 if o.params == points[-1] else 0.0), 1.0) for o in obs]
    assert not [s for s in next_steps(far, 3) if "close to the best" in s.info.get("escape", "")]


def test_in_a_wide_space_other_choices_are_probed_before_the_escape_patience():
    # 9 parameters: escapes wait 9 trials without improvement, but a probe of the best's settings with another
    # choice is one trial and abandons no climb, so it comes after STALL_PATIENCE (6) of them.
    weak = [f"w{i}" for i in range(7)]
    cfg, f = choice_dependent_problem(weak)
    rng = np.random.default_rng(0)
    design = [
        {"x": float(rng.uniform()), **{w: float(rng.uniform()) for w in weak}, "act": "abc"[i % 3]} for i in range(10)
    ]
    best = {"x": 0.3, **{w: 0.5 for w in weak}, "act": "a"}
    near = [{k: (v if k == "act" else float(v + rng.uniform(-0.1, 0.1))) for k, v in best.items()} for _ in range(6)]
    obs = [Observation(p, f(p) - 1.0, 1.0) for p in design]  # poor settings elsewhere
    obs += [Observation(p, f(p), 1.0) for p in [best, *near]]

    def suggest(observations: list[Observation]) -> Suggestion:
        return Protein(cfg, seed=0).suggest(observations, [], 1)[0]

    assert "escape" not in suggest(obs[:-1]).info  # 5 trials without improvement: still climbing
    probe = suggest(obs)  # 6: the probe
    assert "another choice" in probe.info.get("escape", ""), probe.info
    assert probe.params["act"] != "a" and {k: v for k, v in probe.params.items() if k != "act"} == {
        k: v for k, v in best.items() if k != "act"
    }


def test_a_stalled_search_moves_one_parameter_at_a_time_out_of_its_basin():
    # Each parameter has a good basin near 0.1 and a poorer one near 0.7, and the search converged with x0 in the
    # poorer one: no small step leaves it, and a restart elsewhere moves every parameter. The escape first tries
    # the best's settings with a single parameter moved out of its basin, each parameter once.
    names = ["x0", "x1", "x2", "x3"]
    cfg = config({n: {"distribution": "uniform", "min": 0.0, "max": 1.0} for n in names})

    def f(p: dict[str, float]) -> float:
        return -sum(min(4 * (p[n] - 0.1) ** 2, 0.3 + 4 * (p[n] - 0.7) ** 2) for n in names)

    rng = np.random.default_rng(0)
    best = {"x0": 0.7, "x1": 0.1, "x2": 0.1, "x3": 0.1}
    points = [{n: float(rng.uniform()) for n in names} for _ in range(8)] + [best]
    points += [{n: float(v + rng.uniform(-0.05, 0.05)) for n, v in best.items()} for _ in range(6)]
    stalled = [Observation(p, f(p), 1.0) for p in points]

    def suggest(observations: list[Observation]) -> Suggestion:
        return Protein(cfg, seed=0).suggest(observations, [], 1)[0]

    def moved(s: Suggestion) -> list[str]:
        return [n for n in names if not math.isclose(s.params[n], best[n], abs_tol=1e-9)]

    # Told the truth, the probes find x0's good basin.
    obs, found = list(stalled), False
    for _ in range(6):
        s = suggest(obs)
        obs.append(Observation(s.params, f(s.params), 1.0))
        if "refine" not in s.info:
            assert "one parameter moved" in s.info.get("escape", ""), s.info
            assert len(moved(s)) == 1 and abs(s.params[moved(s)[0]] - best[moved(s)[0]]) >= 0.25, s.params
            found = s.params["x0"] < 0.4 and f(s.params) > f(best)
            if found:
                break
    assert found, [o.params for o in obs[len(stalled) :]]

    # Told that no probe improves, each parameter is moved twice at most (once more when the model's lengthscale
    # grew past its first move), and then the escape goes elsewhere.
    obs, tried = list(stalled), []
    for _ in range(16):
        s = suggest(obs)
        obs.append(Observation(s.params, f(s.params) if "refine" in s.info else min(f(s.params), f(best) - 0.5), 1.0))
        if "one parameter moved" in s.info.get("escape", ""):
            assert tried.count(moved(s)[0]) < 2
            tried += moved(s)
        elif "refine" not in s.info:
            break
    assert "escape" in s.info and "one parameter moved" not in s.info["escape"]


def test_an_escape_leaves_the_whole_ridge_of_a_basin_and_restarts_on_the_rest_of_the_space():
    # The best's basin is a ridge along y (the score ignores y): a fixed ball around the best leaves most of the
    # ridge outside it, where the full model predicts scores as good as the best. The escape excludes the basin
    # along its lengthscales and models the rest of the space on its own: its suggestion leaves the ridge and
    # climbs toward the best of the points observed off it (a second hill at x = 0.9).
    cfg = config(
        {
            "x": {"distribution": "uniform", "min": 0.0, "max": 1.0},
            "y": {"distribution": "uniform", "min": 0.0, "max": 1.0},
        }
    )

    def f(p: dict[str, float]) -> float:
        return max(-10 * (p["x"] - 0.3) ** 2, -0.2 - 10 * (p["x"] - 0.9) ** 2)

    rng = np.random.default_rng(1)
    spread = [(0.05, 0.1), (0.95, 0.2), (0.75, 0.9), (0.6, 0.5), (0.1, 0.95), (0.85, 0.6)]
    obs = [Observation({"x": x, "y": y}, f({"x": x, "y": y}), 1.0) for x, y in spread]
    obs.append(Observation({"x": 0.3, "y": 0.5}, 0.0, 1.0))
    for _ in range(14):  # worse points near the best, after it
        p = {"x": float(0.3 + rng.uniform(-0.1, 0.1)), "y": float(0.5 + rng.uniform(-0.2, 0.2))}
        obs.append(Observation(p, f(p), 1.0))
    s = Protein(cfg, seed=0).suggest(obs, [], 1)[0]
    assert "escape" in s.info
    assert s.params["x"] > 0.7  # off the ridge (x = 0.3), on the second hill


# ---------------------------------------------------------------------- library use: ask/tell


def test_ask_tell_finds_the_optimum_and_cost_is_optional():
    from optimizers import Tuner

    tuner = Tuner(
        {
            "lr": {"distribution": "log_normal", "min": 1e-5, "max": 1e-1},
            "act": {"distribution": "categorical", "choices": ["relu", "tanh", "gelu"]},
        },
        goal="minimize",
        seed=0,
    )
    for i in range(16):
        params = tuner.ask()
        assert tuner.pending and set(params) == {"lr", "act"}
        loss = (math.log10(params["lr"]) + 2) ** 2 + (params["act"] != "tanh")
        tuner.tell(params, loss, cost=None if i % 2 else 10.0)
    assert not tuner.pending
    assert all(o.cost is None for o in tuner.observations[1::2])
    best = tuner.best()
    assert best.params["act"] == "tanh" and 10**-2.5 < best.params["lr"] < 10**-1.5


def test_ask_twice_before_telling_gives_distinct_points_and_failures_are_told_with_none():
    from optimizers import Tuner

    tuner = Tuner(
        {"x": {"distribution": "uniform", "min": 0.0, "max": 1.0}}, seed=1, settings={"num_random_samples": 2}
    )
    for _ in range(4):
        tuner.tell(tuner.ask(), None)  # four failures
    a, b = tuner.ask(), tuner.ask()
    assert a != b and len(tuner.pending) == 2
    tuner.tell(a, 1.0)
    assert len(tuner.pending) == 1 and tuner.best().params == a
    assert [o.failed for o in tuner.observations] == [True] * 4 + [False]
    with pytest.raises(ValueError, match="lack"):
        tuner.tell({}, 1.0)


def test_observation_without_cost_models_the_score_alone():
    obs = [Observation({"x": x}, -((x - 0.7) ** 2)) for x in (0.1, 0.5, 0.9, 0.3)]
    s = Protein(config(settings={"num_random_samples": 2}), seed=0).suggest(obs, [], 1)[0]
    assert s.info["source"] == "bayes" and s.info["cost_target"] is None


def test_no_deprecation_warnings_from_our_code_paths():
    import warnings

    from optimizers import Tuner

    cfg = ProteinConfig(parameters=MIXED, settings={"num_random_samples": 3})
    Protein(cfg, seed=0).suggest([], [], 1)  # imports (BoTorch's own import-time warnings are not ours)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        tuner = Tuner(cfg, seed=0)
        for i in range(7):
            p = tuner.ask()
            tuner.tell(p, None if i == 4 else mixed_score(p), cost=1.0 + i)
        tuner.ask(), tuner.ask()
        for method in ("random", "genetic"):
            run(make_optimizer(cfg.model_copy(update={"method": method}), 0), mixed_score, 6)


def test_one_diverged_run_does_not_blind_the_model():
    # Losses near the optimum differ by hundredths; one diverged run scored 1e4. The model must still see where
    # the good runs are (it compresses the bad tail) and suggest near x = 0.3.
    cfg = config(
        {"x": {"distribution": "uniform", "min": 0.0, "max": 1.0}}, goal="minimize", settings={"num_random_samples": 2}
    )
    xs = [0.05, 0.15, 0.25, 0.45, 0.6, 0.75, 0.85]
    obs = [Observation({"x": x}, (x - 0.3) ** 2, 1.0) for x in xs] + [Observation({"x": 0.97}, 1e4, 1.0)]
    for seed in range(3):
        s = Protein(cfg, seed=seed).suggest(obs, [], 1)[0]
        assert s.info["source"] == "bayes" and abs(s.params["x"] - 0.3) < 0.1
        assert s.info["predicted_score"] < 0.05  # reported on the user's scale, not the warped one


def test_observation_log_keeps_an_absent_cost_apart_from_a_nan_one():
    from optimizers.base import ObservationLog

    log = ObservationLog()
    for cost in (None, math.nan, 2.5):
        log.append(Observation({"x": 0.5}, 1.0, cost))
    got = [o.cost for o in log]
    assert got[0] is None and math.isnan(got[1]) and got[2] == 2.5


def test_categorical_kernel_distance_is_one_between_any_two_choices_whatever_their_codes():
    import torch

    kernel = gp_module.MixedMaternKernel([0, 5]).double()
    kernel.lengthscale = torch.tensor([0.2, 1.0])
    # Coordinate 1 is a categorical of 5 choices (bins of [0, 1]): choice 0, 0 again (another point of its bin),
    # choice 1 (the neighbouring code) and choice 4 (the farthest code). The numeric coordinate is the same.
    x = torch.tensor([[0.5, 0.05], [0.5, 0.15], [0.5, 0.3], [0.5, 0.9]], dtype=torch.float64)
    r2 = kernel.squared_distance(x, x).detach()
    assert r2[0, 1] == 0  # the same choice
    assert torch.allclose(r2[0, 2:], torch.ones(2, dtype=torch.float64))  # any other choice: distance 1
    assert torch.allclose(kernel.squared_distance(x[:1], x[2:3], diag=True).detach(), r2[0, 2])
    # The numeric part is an ordinary Matern-5/2: the same as gpytorch's on a purely numeric space.
    from gpytorch.kernels import MaternKernel

    numeric = gp_module.MixedMaternKernel([0, 0]).double()
    reference = MaternKernel(nu=2.5, ard_num_dims=2).double()
    numeric.lengthscale = reference.lengthscale = torch.tensor([0.3, 0.7])
    a, b = torch.rand(6, 2, dtype=torch.float64), torch.rand(4, 2, dtype=torch.float64)
    assert torch.allclose(numeric(a, b).to_dense(), reference(a, b).to_dense())


def test_acquisition_proposes_an_unexplored_choice_between_explored_ones():
    # Choices a, c, d are explored and all equally mediocre whatever x; b, whose code lies between a's and c's,
    # never was. With choices as an ordered coordinate b would look like its neighbours; as a categorical it is
    # unknown, so it is the most promising place to look.
    cfg = config(
        {
            "x": {"distribution": "uniform", "min": 0.0, "max": 1.0},
            "act": {"distribution": "categorical", "choices": ["a", "b", "c", "d"]},
        },
        settings={"num_random_samples": 2},
    )
    rng = np.random.default_rng(0)
    obs = [
        Observation({"x": float(x), "act": act}, float(0.01 * np.sin(7 * x)), 1.0)
        for act in ("a", "c", "d")
        for x in rng.uniform(0, 1, 5)
    ]
    obs.sort(key=lambda o: float(o.score or 0.0))  # the best last: not stalled, so no escape step (tested apart)
    for seed in range(3):
        s = Protein(cfg, seed=seed).suggest(obs, [], 1)[0]
        assert s.info["source"] == "bayes" and s.params["act"] == "b"


def test_a_short_sweep_expects_the_worst_score_where_it_has_seen_nothing():
    # In a sweep whose budget leaves the model at most two patiences of trials (too few to stall and escape), the
    # score GP's prior mean is the worst score seen, not the average: far from every observation the model
    # predicts a poor result, so its few steps climb from what it has seen instead of spreading over unexplored
    # corners. A longer sweep, or one without a budget, fits the mean; so does an escape step's model.
    import torch

    from optimizers.protein_model import Model, _t01

    cfg = config(
        {
            "x": {"distribution": "uniform", "min": 0.0, "max": 1.0},
            "y": {"distribution": "uniform", "min": 0.0, "max": 1.0},
        },
        goal="minimize",
    )
    rng = np.random.default_rng(0)
    points = rng.uniform(0.0, 0.3, (10, 2))  # all in one corner of the box
    obs = [Observation({"x": float(a), "y": float(b)}, float((a - 0.2) ** 2 + b), 1.0) for a, b in points]
    obs.sort(key=lambda o: -float(o.score or 0.0))  # each better than the last

    short = Protein(cfg, seed=0, budget=16)  # 6 initial points, then 10 model steps: fewer than 2 patiences
    model = Model(short, short._data(obs), [], rng)
    worst = float(model.ys.min())  # the warped, standardized scores (higher is better)
    with torch.no_grad():
        far = float(model.score.mean(_t01(np.array([[1.0, 1.0]]))))  # the opposite corner, in [-1, 1] units
        near = model.score.mean(_t01(short.space.encode(obs[-1].params)[None]))
    assert model.score.const == worst
    assert far <= worst + 0.05 * float(np.ptp(model.ys))  # at most the worst seen (or the trend, extrapolated)
    assert float(near) > worst  # where it has seen results, it believes them
    for long in (Protein(cfg, seed=0, budget=40), Protein(cfg, seed=0)):
        model = Model(long, long._data(obs), [], rng)
        assert model.score.const != float(model.ys.min())

    # An escape step, even in a short sweep, models the rest of the space with a fitted mean.
    model = Model(short, short._data(obs), [], rng)
    basin = [np.array([[1.0, 1.0]])]  # a basin away from the data: all of it is the rest of the space
    assert model._restart(basin, rng) is not None
    assert model.acq_score.const != model.score.const


@pytest.mark.parametrize("dim, pessimistic", [(7, False), (8, True)])
def test_from_eight_parameters_the_score_model_expects_the_worst_where_it_has_seen_nothing(dim, pessimistic):
    # With 8 or more parameters even a long sweep sees little of the space: the score GP's prior mean is the
    # worst score seen whatever the budget, while the cost GP keeps a fitted mean (it is held only in a short
    # sweep). Below 8 parameters both are fitted.
    from optimizers.protein_model import Model

    cfg = config({f"x{i}": {"distribution": "uniform", "min": 0.0, "max": 1.0} for i in range(dim)}, goal="minimize")
    rng = np.random.default_rng(0)
    points = rng.uniform(0.0, 1.0, (30, dim))
    obs = [
        Observation({f"x{i}": float(v) for i, v in enumerate(p)}, float(((p - 0.3) ** 2).sum()), float(1 + 3 * p[0]))
        for p in points
    ]
    for protein in (Protein(cfg, seed=0), Protein(cfg, seed=0, budget=200)):  # no budget, and a long one
        model = Model(protein, protein._data(obs), [], rng)
        assert (model.score.const == float(model.ys.min())) is pessimistic
        assert model.cost is not None and model.cost.const != float(model.cost.y.min())


def test_a_probe_with_no_candidate_left_gives_none_in_a_space_of_integers():
    # A lengthscale longer than the range leaves the coordinate probe no value to try; with integer parameters
    # (whose values are snapped) that is still None, so the search goes on to its next step, not to a fallback.
    import torch

    from optimizers.protein_model import Model

    cfg = config({n: {"distribution": "int_uniform", "min": 0, "max": 100} for n in ("x", "y")})
    rng = np.random.default_rng(0)
    points = [{n: int(50 + rng.integers(-5, 6)) for n in ("x", "y")} for _ in range(9)]
    obs = [Observation(p, -((p["x"] - 50) ** 2) - (p["y"] - 50) ** 2, 1.0) for p in points]
    protein = Protein(cfg, seed=0)
    model = Model(protein, protein._data(obs), [], np.random.default_rng(0))
    model.score.lengthscale = torch.full((2,), 1.2, dtype=torch.float64)
    assert model._coordinate_probe(set(), np.random.default_rng(0)) is None


def test_a_coordinate_probe_reaches_past_a_long_lengthscale_and_moves_a_parameter_at_most_twice():
    # The probe's move along a parameter is at least its reach (two score-GP lengthscales, in [-1, 1] units) but
    # never needs to exceed three quarters of the way to the far end: a lengthscale of 0.8 of the range still
    # leaves the best at the centre somewhere to go, one longer than the range does not. The lengthscale is set
    # by hand: only the reach reads it.
    import torch

    from optimizers.protein_model import Model

    cfg = config({n: {"distribution": "uniform", "min": 0.0, "max": 1.0} for n in ("x", "y")})
    rng = np.random.default_rng(0)
    best = {"x": 0.5, "y": 0.5}
    points = [best] + [{n: float(0.5 + rng.uniform(-0.05, 0.05)) for n in best} for _ in range(8)]

    def probe(extra: list[dict[str, float]], lengthscale: float) -> Suggestion | None:
        obs = [Observation(p, -((p["x"] - 0.5) ** 2) - (p["y"] - 0.5) ** 2, 1.0) for p in points + extra]
        protein = Protein(cfg, seed=0)
        model = Model(protein, protein._data(obs), [], np.random.default_rng(0))
        model.score.lengthscale = torch.full((2,), lengthscale, dtype=torch.float64)
        return model._coordinate_probe(set(), np.random.default_rng(0))

    s = probe([], 0.8)  # reach 1.6 from the centre, past both ends: capped at 0.75
    assert s is not None and "one parameter moved" in s.info["escape"]
    moved = [n for n in best if abs(s.params[n] - 0.5) > 1e-9]
    assert len(moved) == 1 and abs(s.params[moved[0]] - 0.5) >= 0.375 - 1e-9, s.params
    assert probe([], 1.2) is None  # longer than the range: no second basin the model can see
    # x moved twice by 0.3 of the range (past LINE_MIN, short of the reach): tried; y is still probed. Both: none.
    s = probe([{"x": 0.2, "y": 0.5}, {"x": 0.8, "y": 0.5}], 0.8)
    assert s is not None and s.params["x"] == 0.5 and abs(s.params["y"] - 0.5) >= 0.375 - 1e-9, s.params
    assert probe([{"x": 0.2, "y": 0.5}, {"x": 0.8, "y": 0.5}, {"x": 0.5, "y": 0.2}, {"x": 0.5, "y": 0.8}], 0.8) is None


def test_in_the_endgame_once_every_parameter_left_its_basin_the_coordinate_probe_moves_each_a_little():
    # Far moves first (at least the reach: a lengthscale, 0.6 in [-1, 1] units here). In the endgame, once every
    # parameter had one, a nearer move each, between half a lengthscale (at least NEAR_MIN) and the reach: a
    # ripple's next well. Not before the endgame nor while an escape climbs, and never for a parameter whose
    # lengthscale is longer than its range. The lengthscale is set by hand: only the probe's distances read it.
    import torch

    from optimizers.protein_model import Model

    cfg = config({n: {"distribution": "uniform", "min": 0.0, "max": 1.0} for n in ("x", "y")})
    rng = np.random.default_rng(0)
    best = {"x": 0.5, "y": 0.5}
    points = [best] + [{n: float(0.5 + rng.uniform(-0.02, 0.02)) for n in best} for _ in range(8)]

    def probe(
        extra: list[dict[str, float]], lengthscale: float, endgame: bool = True, climbing: bool = False
    ) -> Suggestion | None:
        obs = [Observation(p, -((p["x"] - 0.5) ** 2) - (p["y"] - 0.5) ** 2, 1.0) for p in points + extra]
        protein = Protein(cfg, seed=0, budget=len(obs) + 2 if endgame else len(obs) + 40)
        model = Model(protein, protein._data(obs), [], np.random.default_rng(0))
        model.score.lengthscale = torch.full((2,), lengthscale, dtype=torch.float64)
        model._escape_climbing = lambda: climbing  # type: ignore[method-assign]  # an escape's climb, or none
        return model._coordinate_probe(set(), np.random.default_rng(0))

    def move(s: Suggestion | None) -> tuple[str, float]:
        assert s is not None and "one parameter moved" in s.info["escape"]
        (name,) = [n for n in best if abs(s.params[n] - 0.5) > 1e-9]
        return name, abs(s.params[name] - 0.5) * 2  # in [-1, 1] units

    far = [{"x": 0.15, "y": 0.5}, {"x": 0.5, "y": 0.85}]  # each moved 0.7, past the reach of 0.6
    assert move(probe([], 0.3))[1] >= 0.6 - 1e-9
    assert move(probe(far[:1], 0.3))[0] == "y"
    assert probe(far, 0.3, endgame=False) is None  # before the endgame: the escape's turn
    assert probe(far, 0.3, climbing=True) is None  # an escape climbing another basin: its turn, endgame or not
    first = probe(far, 0.3)
    name, dist = move(first)
    assert "a little" in first.info["escape"] and 0.3 - 1e-9 <= dist < 0.6, dist  # type: ignore[union-attr]
    other = "y" if name == "x" else "x"
    name2, dist2 = move(probe(far + [dict(first.params)], 0.3))  # type: ignore[union-attr]
    assert name2 == other and 0.3 - 1e-9 <= dist2 < 0.6, dist2
    assert probe(far + [dict(first.params), {**best, other: 0.3}], 0.3) is None  # both moved a little: done
    assert probe(far, 1.2) is None  # longer than the range: no basin to leave, near or far


def test_the_initial_design_runs_without_torch_and_the_model_imports_it() -> None:
    # A fresh process: this one has torch loaded already. serve starts a sweep's initial design without it.
    import subprocess
    import sys

    script = """
import sys
from optimizers import Observation, ProteinConfig, make_optimizer
cfg = ProteinConfig(parameters={"x": {"distribution": "uniform", "min": 0.0, "max": 1.0, "mean": 0.5}})
opt = make_optimizer(cfg, seed=0, budget=10)
obs = []
while "torch" not in sys.modules:
    s = opt.suggest(obs, [], 1)[0]
    print(s.info["source"])
    obs.append(Observation(s.params, -(s.params["x"] - 0.3) ** 2))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    sources = done.stdout.split()
    assert sources and sources[0] == "search_center" and "bayes" not in sources[:-1] and sources[-1] == "bayes", sources


def test_an_escape_moves_a_parameter_its_best_left_at_an_end_of_its_range_inward_once():
    # Converged on (0.8, 0.8); outside its basin the best point has x at 0, the end of its range, where the rest
    # of the space's optimum has it at 0.15. An escape step first tries that point with x moved inward (between
    # NEAR_MIN and EDGE_REACH in [-1, 1] units), y kept; once tried there, not again. A point at no end, or at
    # the end where the converged best has that parameter too: nothing.
    from optimizers.protein_model import EDGE_REACH, NEAR_MIN, Model

    cfg = config({n: {"distribution": "uniform", "min": 0.0, "max": 1.0} for n in ("x", "y")})

    home = {"x": 0.8, "y": 0.8}

    def f(p: dict[str, float]) -> float:
        near = (p["x"] - home["x"]) ** 2 + (p["y"] - home["y"]) ** 2
        away = (p["x"] - 0.15) ** 2 + (p["y"] - 0.2) ** 2
        return max(-30 * near, -0.05 - 30 * away, -1.0)

    rng = np.random.default_rng(0)
    points = [dict(home)] + [{n: float(0.8 + rng.uniform(-0.1, 0.1)) for n in "xy"} for _ in range(12)]
    points += [{"x": 0.0, "y": 0.2}, {"x": 0.5, "y": 0.6}, {"x": 0.2, "y": 0.9}, {"x": 0.9, "y": 0.1}]
    points += [{"x": 0.8, "y": 0.0}, {"x": 0.0, "y": 0.8}]  # the best's own probes, each parameter moved

    def model(extra: list[dict[str, float]]) -> tuple[Model, list[np.ndarray]]:
        obs = [Observation(p, f(p), 1.0) for p in points + extra]
        protein = Protein(cfg, seed=0)
        m = Model(protein, protein._data(obs), [], np.random.default_rng(0))
        basins = m._escape_from()
        assert basins is not None  # stalled: an escape step
        return m, basins

    m, basins = model([])
    edge_best = np.array([-1.0, -0.6])  # (0, 0.2) in [-1, 1] units
    s = m._edge_probe(edge_best, basins, set(), np.random.default_rng(0))
    assert s is not None and "end of its range moved inward" in s.info["escape"], s
    assert s.params["y"] == pytest.approx(0.2) and NEAR_MIN / 2 - 1e-9 <= s.params["x"] <= EDGE_REACH / 2 + 1e-9
    m, basins = model([dict(s.params)])
    assert m._edge_probe(edge_best, basins, set(), np.random.default_rng(0)) is None  # tried
    assert m._edge_probe(np.array([-0.4, -0.6]), basins, set(), np.random.default_rng(0)) is None  # at no end
    right = np.array([1.0, -0.4])  # (1, 0.3): x at its top end
    s = m._edge_probe(right, basins, set(), np.random.default_rng(0))
    assert s is not None and s.params["y"] == pytest.approx(0.3) and s.params["x"] < 1.0
    # The converged best has x at its top end too: an escape's best there is at x's optimum edge, not pushed.
    home["x"] = 1.0
    points[0] = dict(home)
    m, basins = model([])
    assert not m._in_basin(np.array([[0.4, -0.4], [0.6, -0.4]]), basins).any()  # where it would go is open
    assert m._edge_probe(right, basins, set(), np.random.default_rng(0)) is None
