"""The normalized search space: every parameter maps to [-1, 1] and back.

Linear for uniform and int_uniform, log2 for uniform_pow2, log10 for log_normal, log10(1 - v) for logit_normal
(so resolution concentrates near 1, where a discount factor lives), and equal-width bins for a categorical.
Integers (int_uniform, and the exponents of uniform_pow2) get equal-width bins: the range is widened by half a
step at each end, so a uniform point of [-1, 1] decodes to every allowed integer with the same probability (the
published version gave the two end values half a share each). Decoding clips to [-1, 1] first, so a decoded
value never leaves [min, max] and integers stay integers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from optimizers.config import ParameterConfig

AUTO_SCALE = 0.5


def _pow2_exponents(p: ParameterConfig) -> tuple[int, int]:
    lo, hi = float(p.min), float(p.max)  # type: ignore[arg-type]
    return math.ceil(math.log2(lo) - 1e-9), math.floor(math.log2(hi) + 1e-9)


def _bounds(p: ParameterConfig) -> tuple[float, float]:
    lo, hi = float(p.min), float(p.max)  # type: ignore[arg-type]
    if p.distribution == "int_uniform":
        return math.ceil(lo) - 0.5, math.floor(hi) + 0.5
    if p.distribution == "uniform_pow2":
        e0, e1 = _pow2_exponents(p)
        return e0 - 0.5, e1 + 0.5
    if p.distribution == "log_normal":
        return math.log10(lo), math.log10(hi)
    if p.distribution == "logit_normal":
        return math.log10(1 - lo), math.log10(1 - hi)
    return lo, hi


def _forward(p: ParameterConfig, v: float) -> float:
    if p.distribution == "uniform_pow2":
        return math.log2(v)
    if p.distribution == "log_normal":
        return math.log10(v)
    if p.distribution == "logit_normal":
        return math.log10(1 - v)
    return v


def _inverse(p: ParameterConfig, t: float) -> float:
    if p.distribution == "uniform_pow2":
        return float(2.0**t)
    if p.distribution == "log_normal":
        return float(10.0**t)
    if p.distribution == "logit_normal":
        return float(1 - 10.0**t)
    return t


def choice_code(index: Any, k: int) -> Any:
    """The coordinate in [-1, 1] of choice ``index`` (an int or an array of them) of ``k``: the middle of its bin."""
    return -1 + 2 * (index + 0.5) / k


def choice_index(x: Any, k: int) -> np.ndarray:
    """The choice (of ``k``) whose bin holds each coordinate of ``x`` (a number or an array) in [-1, 1]."""
    return np.asarray(np.clip(((np.asarray(x) + 1) / 2 * k).astype(int), 0, k - 1))


def encode_value(p: ParameterConfig, value: Any) -> float:
    """Map one value to [-1, 1]."""
    if p.distribution == "categorical":
        k = len(p.choices)  # type: ignore[arg-type]
        return float(choice_code(p.choices.index(value), k))  # type: ignore[union-attr]
    t0, t1 = _bounds(p)
    x = 2 * (_forward(p, float(value)) - t0) / (t1 - t0) - 1
    return float(min(1.0, max(-1.0, x)))


def search_center(p: ParameterConfig) -> Any:
    """The seed's center: ``mean`` when given, else the middle of the range in the encoded space."""
    if p.mean is not None:
        return p.mean
    if p.distribution == "categorical":
        return p.choices[0]  # type: ignore[index]
    return decode_value(p, 0.0)


def decode_value(p: ParameterConfig, x: float) -> Any:
    """Map a point of [-1, 1] (clipped first) back to a valid value of the parameter."""
    x = float(min(1.0, max(-1.0, x)))
    if p.distribution == "categorical":
        k = len(p.choices)  # type: ignore[arg-type]
        return p.choices[int(choice_index(x, k))]  # type: ignore[index]
    t0, t1 = _bounds(p)
    t = t0 + (x + 1) / 2 * (t1 - t0)
    lo, hi = float(p.min), float(p.max)  # type: ignore[arg-type]
    if p.distribution == "int_uniform":
        return int(min(math.floor(hi), max(math.ceil(lo), math.floor(t + 0.5))))
    if p.distribution == "uniform_pow2":
        lo_exp, hi_exp = _pow2_exponents(p)
        return int(2 ** min(hi_exp, max(lo_exp, math.floor(t + 0.5))))
    return float(min(hi, max(lo, _inverse(p, t))))


class Space:
    """An ordered set of named parameters and the maps between their values and points of [-1, 1]^d."""

    def __init__(self, parameters: Mapping[str, ParameterConfig]):
        self.parameters = dict(parameters)
        self.names = list(self.parameters)

    @property
    def discrete(self) -> bool:
        """Whether any parameter takes only some values of its range (int, pow2, categorical)."""
        return any(p.distribution in ("int_uniform", "uniform_pow2", "categorical") for p in self.parameters.values())

    @property
    def dim(self) -> int:
        return len(self.names)

    def encode(self, values: Mapping[str, Any]) -> np.ndarray:
        return np.array([encode_value(self.parameters[n], values[n]) for n in self.names], dtype=float)

    def decode(self, x: np.ndarray) -> dict[str, Any]:
        return {n: decode_value(self.parameters[n], float(xi)) for n, xi in zip(self.names, x)}

    def center(self) -> np.ndarray:
        return self.encode({n: search_center(p) for n, p in self.parameters.items()})

    def scales(self) -> np.ndarray:
        """Half-width of the search box around a point, per dimension, in the normalized space."""
        return np.array([AUTO_SCALE if p.scale == "auto" else float(p.scale) for p in self.parameters.values()])

    def categorical_mask(self) -> np.ndarray:
        """Which coordinates are categorical."""
        return np.array([p.distribution == "categorical" for p in self.parameters.values()], dtype=bool)

    def choice_counts(self) -> list[int]:
        """Per coordinate: the number of choices of a categorical, 0 for a numeric parameter (the GP kernel's
        ``choices``)."""
        return [len(p.choices) if p.distribution == "categorical" else 0 for p in self.parameters.values()]  # type: ignore[arg-type]

    def round_trip(self, x: np.ndarray) -> np.ndarray:
        """Snap a normalized point to the one its decoded values encode to (integers, choices)."""
        return self.encode(self.decode(x))
