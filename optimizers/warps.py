"""Output warps for Protein's score GP: monotone maps of the scores (higher is better) before the GP sees them.

Real objectives are rarely Gaussian. A sweep of an MLP's learning rate has a plateau of runs that did not learn
(loss 0.9), a few diverged ones (1e4) and the good runs squeezed together at the top (0.05 to 0.15): a loss is
multiplicative in nature, and a GP on it spends its fit on the gaps between those groups. A smooth test
function near its optimum is the opposite case: there the differences that matter are 1e-6, and a log-like map
would bend them into a spike. No single map suits both, so Protein fits the GP under each candidate and keeps the
one with the highest evidence for the scores as observed: the GP's marginal likelihood of the warped scores plus
the log Jacobian of the warp, which is the likelihood of a warped GP (Snelson et al., 2004). The candidates:

- ``TailWarp``: linear, with scores far below the median log-compressed (one diverged run must not set the scale);
- ``PowerWarp``: when the scores are negated positive losses (a minimized MSE), a Box-Cox transform of the
  losses (HEBO's output transform); its power is the usual maximum-likelihood estimate. Box-Cox of positive
  scores to be maximized was tried too: on Hartmann-6 it won the evidence and made the search worse.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from scipy import optimize, stats
from scipy.special import inv_boxcox

TAIL_IQRS = 2.0  # scores further below the median than this many interquartile ranges are log-compressed
MAX_POWER = 3.0  # Box-Cox powers are kept within +-MAX_POWER: beyond, the map is numerically fragile


class Warp(Protocol):
    name: str  # for a suggestion's info

    def __call__(self, y: np.ndarray) -> np.ndarray: ...

    def inverse(self, w: float) -> float: ...

    def log_jacobian(self, y: np.ndarray) -> float: ...


class TailWarp:
    """Compress the bad tail of the scores logarithmically, leave the rest linear.

    Scores more than TAIL_IQRS interquartile ranges below the median are pulled in along a log curve; the order
    is kept.
    """

    name = "tail"

    def __init__(self, y: np.ndarray):
        q25, self.median, q75 = np.percentile(y, [25, 50, 75])
        self.scale = float(q75 - q25) or float(np.std(y)) or 1.0

    def _z(self, y: np.ndarray) -> np.ndarray:
        return np.asarray((np.asarray(y, dtype=float) - self.median) / self.scale)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        z = self._z(y)
        low = z < -TAIL_IQRS
        z[low] = -TAIL_IQRS - np.log1p(-z[low] - TAIL_IQRS)
        return z

    def inverse(self, w: float) -> float:
        z = w if w >= -TAIL_IQRS else -TAIL_IQRS - math.expm1(-w - TAIL_IQRS)
        return float(self.median + z * self.scale)

    def log_jacobian(self, y: np.ndarray) -> float:
        z = self._z(y)
        slope = np.where(z < -TAIL_IQRS, 1.0 / np.maximum(-z - TAIL_IQRS + 1.0, 1.0), 1.0)
        return float(np.log(slope).sum() - len(z) * math.log(self.scale))


class PowerWarp:
    """Minus the Box-Cox transform of the losses ``-y`` (all positive), scaled by their standard deviation;
    increasing in ``y``. For a loss such as an MSE the power comes out near 0, a log, which makes 0.05 and 0.15 as
    different as 0.15 and 0.45."""

    def __init__(self, y: np.ndarray):
        loss = -np.asarray(y, dtype=float)
        self.s = float(loss.std()) or 1.0
        power = boxcox_power(loss / self.s)
        self.power = float(np.clip(power, -MAX_POWER, MAX_POWER)) if math.isfinite(power) else 1.0
        self.name = f"box-cox loss ^ {self.power:.2f}"

    def _loss(self, y: np.ndarray) -> np.ndarray:
        return np.maximum(-np.asarray(y, dtype=float) / self.s, 1e-300)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        return -np.asarray(stats.boxcox(self._loss(y), self.power))

    def inverse(self, w: float) -> float:
        t = -w
        if self.power != 0:  # beyond the image of (0, inf): the nearest point of it
            t = max(t, -1 / self.power + 1e-12) if self.power > 0 else min(t, -1 / self.power - 1e-12)
        return float(-inv_boxcox(t, self.power) * self.s)

    def log_jacobian(self, y: np.ndarray) -> float:
        return float(((self.power - 1) * np.log(self._loss(y))).sum() - len(y) * math.log(self.s))


def boxcox_power(x: np.ndarray) -> float:
    """The maximum-likelihood Box-Cox power of positive data: scipy's ``boxcox_normmax(x, method="mle")``, the
    maximum of ``stats.boxcox_llf`` by Brent's method from the bracket (-2, 2), to a relative tolerance of 1e-5
    rather than 1.5e-8 (a dozen evaluations of the likelihood instead of up to thirty: each costs scipy's
    array-API dispatch, half a millisecond)."""
    return float(optimize.brent(lambda power: -stats.boxcox_llf(power, x), brack=(-2.0, 2.0), tol=1e-5))


def candidates(y: np.ndarray) -> list[Warp]:
    """The warps worth comparing on scores ``y``: the tail warp always, Box-Cox when the scores are negated
    positive losses."""
    out: list[Warp] = [TailWarp(y)]
    if np.ptp(y) > 0 and (-y).min() > 0:
        warp = PowerWarp(y)
        if np.isfinite(warp(y)).all():
            out.append(warp)
    return out
