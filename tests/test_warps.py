"""Protein's output warps: exact maps with the right Jacobian, and the evidence choosing the one the data need."""

from __future__ import annotations

import numpy as np
import pytest

from optimizers import warps
from optimizers.base import Observation
from optimizers.config import ProteinConfig
from optimizers.protein import Protein

RNG = np.random.default_rng(0)
LOSSES = np.exp(RNG.normal(-1.0, 1.5, 40))  # positive, over orders of magnitude, one far tail
SCORES = -LOSSES


@pytest.mark.parametrize("warp", [warps.TailWarp(SCORES), warps.PowerWarp(SCORES)], ids=["tail", "box-cox"])
def test_a_warp_is_increasing_inverts_exactly_and_knows_its_jacobian(warp: warps.Warp) -> None:
    y = SCORES
    w = warp(y)
    order = np.argsort(y)
    assert np.all(np.diff(w[order]) > 0)
    assert np.allclose([warp.inverse(float(v)) for v in w], y, rtol=1e-8, atol=1e-10)
    h = 1e-6 * np.abs(y)
    slopes = (warp(y + h) - warp(y - h)) / (2 * h)
    assert np.isclose(warp.log_jacobian(y), np.log(slopes).sum(), rtol=1e-5)


def _suggest(values: np.ndarray, x: np.ndarray) -> dict:
    cfg = ProteinConfig.model_validate(
        {
            "parameters": {n: {"distribution": "uniform", "min": 0, "max": 1} for n in ("a", "b")},
            "goal": "minimize",
        }
    )
    obs = [Observation({"a": float(a), "b": float(b)}, float(v), 1.0) for (a, b), v in zip(x, values)]
    return Protein(cfg, seed=0).suggest(obs, [], 1)[0].info


def test_the_evidence_chooses_a_log_like_warp_for_a_multiplicative_loss_and_none_for_a_smooth_one() -> None:
    x = np.random.default_rng(1).uniform(0, 1, (30, 2))
    bowl = 3 * (x[:, 0] - 0.3) ** 2 + 2 * (x[:, 1] - 0.6) ** 2
    multiplicative = _suggest(np.exp(6 * bowl), x)  # a loss whose differences are ratios, as an MSE's are
    assert multiplicative["score_warp"].startswith("box-cox loss")
    assert abs(float(multiplicative["score_warp"].split("^")[1])) < 0.5  # near a log
    assert _suggest(1 + bowl, x)["score_warp"] == "tail"  # near its optimum, only linear keeps 1e-6 apart
    assert _suggest(bowl, x)["score_warp"] == "tail"
    # A positive score to maximize (here: minimizing its negative) is not a loss: no log-like map is offered.
    assert _suggest(-np.exp(6 * bowl), x)["score_warp"] == "tail"


def test_the_box_cox_power_is_scipys_maximum_likelihood_estimate() -> None:
    from scipy import stats

    rng = np.random.default_rng(3)
    for x in [LOSSES, rng.uniform(0.1, 5, 30), rng.gamma(2.0, 1.0, 60) + 1e-3, np.exp(rng.normal(0, 3, 20))]:
        x = x / x.std()
        assert warps.boxcox_power(x) == pytest.approx(stats.boxcox_normmax(x, method="mle"), abs=1e-5)
