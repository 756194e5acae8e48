"""Sweep search definitions: the seed's ProteinConfig, ParameterConfig and ProteinSettings.

Parameters are keyed by their dotted override path (``trainer.optimizer.learning_rate``); a nested dict of the
same shape, as the seed writes it, is flattened on the way in.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Distribution = Literal["uniform", "int_uniform", "uniform_pow2", "log_normal", "logit_normal", "categorical"]
NUMERIC_DISTRIBUTIONS = ("uniform", "int_uniform", "uniform_pow2", "log_normal", "logit_normal")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParameterConfig(_Strict):
    """One searched hyperparameter. What each ``distribution`` samples (random search, the initial design):

    - ``uniform``: a float, uniform in [min, max].
    - ``int_uniform``: an integer in [min, max], each one equally likely.
    - ``uniform_pow2``: a power of two in [min, max], each exponent equally likely (log-uniform over 2^k).
    - ``log_normal``: a float, log-uniform within [min, max] (uniform in log10). Despite the seed's name it is
      not a normal distribution: ``mean`` is only the search center, and nothing concentrates around it.
    - ``logit_normal``: a float in (0, 1), uniform in log10(1 - v) within [min, max], so resolution gathers
      near 1 (discount factors, GAE lambda). Again ``mean`` is only the search center.
    - ``categorical``: one of ``choices``, each equally likely.

    ``mean`` is the search center: the first suggestion (default: the middle of the range in the encoded space,
    or the first choice). ``scale`` is the half-width, in the normalized [-1, 1] space, of the box of candidates
    Protein draws around each Pareto point ('auto': 0.5); it does not narrow the initial design, random search
    or the global candidates, which always span [min, max] and every choice.
    """

    distribution: Distribution
    min: float | None = None
    max: float | None = None
    mean: Any = None  # a number, or for a categorical one of the choices
    scale: float | Literal["auto"] = "auto"
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParameterConfig:
        if self.distribution == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list, e.g. choices = [32, 64, 128]")
            if self.mean is not None and self.mean not in self.choices:
                raise ValueError(f"mean {self.mean!r} is not one of the choices {self.choices!r}")
            return self
        if self.choices is not None:
            raise ValueError(f"'choices' only applies to distribution='categorical', not {self.distribution!r}")
        if self.mean is not None and (isinstance(self.mean, bool) or not isinstance(self.mean, (int, float))):
            raise ValueError(f"mean must be a number for distribution {self.distribution!r} (got {self.mean!r})")
        if self.min is None or self.max is None:
            raise ValueError(f"distribution {self.distribution!r} needs both 'min' and 'max'")
        if not (math.isfinite(self.min) and math.isfinite(self.max)):
            raise ValueError("'min' and 'max' must be finite numbers")
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be less than max ({self.max}): swap them or widen the range")
        if self.distribution == "log_normal" and self.min <= 0:
            raise ValueError(f"log_normal needs min > 0 (got {self.min}): a log range cannot touch 0")
        if self.distribution == "uniform_pow2":
            if self.min < 1:
                raise ValueError(f"uniform_pow2 needs min >= 1 (got {self.min})")
            if 2 ** math.ceil(math.log2(self.min) - 1e-9) > self.max:
                raise ValueError(f"uniform_pow2 range [{self.min}, {self.max}] holds no power of two")
        if self.distribution == "int_uniform" and math.ceil(self.min) > math.floor(self.max):
            raise ValueError(f"int_uniform range [{self.min}, {self.max}] holds no integer")
        if self.distribution == "logit_normal" and not (0 < self.min and self.max < 1):
            raise ValueError(f"logit_normal needs 0 < min < max < 1 (got [{self.min}, {self.max}])")
        if self.mean is not None and not (self.min <= self.mean <= self.max):
            raise ValueError(f"mean ({self.mean}) must lie within [min, max] = [{self.min}, {self.max}]")
        if isinstance(self.scale, float) and not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"scale must be 'auto' or a positive number (got {self.scale})")
        return self


DEFAULT_RANDOM_SAMPLES = 10  # the initial design of a long sweep (or one of unknown length)


class ProteinSettings(_Strict):
    """Optimizer knobs; names follow the seed."""

    num_random_samples: int | None = Field(
        None,
        ge=0,
        description="space-filling samples before the GP takes over; unset: a third of the sweep's trial budget, "
        "between d + 1 and 10 (10 when the budget is not known)",
    )
    max_suggestion_cost: float = Field(3600.0 * 24 * 365, gt=0, description="drop candidates predicted to cost more")
    global_search_scale: float = Field(1.0, gt=0)
    random_suggestions: int = Field(1024, ge=1)
    suggestions_per_pareto: int = Field(256, ge=1)
    resample_frequency: int = Field(0, ge=0)
    seed_with_search_center: bool = True
    expansion_rate: float = Field(0.25, ge=0)
    max_fit_observations: int = Field(512, ge=16, description="observations the GP is fit on, at most")

    def random_samples(self, dim: int, budget: int | None) -> int:
        """``num_random_samples``, or when unset the number a sweep of ``budget`` trials over ``dim`` parameters
        gets: a short sweep cannot spend 10 of its 16 trials before the model starts, and the model needs about
        d + 1 points to fit a lengthscale per parameter."""
        if self.num_random_samples is not None:
            return self.num_random_samples
        if budget is None:
            return DEFAULT_RANDOM_SAMPLES
        return min(DEFAULT_RANDOM_SAMPLES, max(dim + 1, budget // 3))


class ProteinConfig(_Strict):
    """What to optimize (``metric``, ``goal``), how (``method``) and over what (``parameters``)."""

    metric: str = "score"
    goal: Literal["maximize", "minimize"] = "maximize"
    method: Literal["bayes", "random", "genetic"] = "bayes"
    parameters: dict[str, ParameterConfig]
    settings: ProteinSettings = ProteinSettings()

    @field_validator("parameters", mode="before")
    @classmethod
    def _flatten(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        flat: dict[str, Any] = {}
        _flatten_into(flat, "", value)
        if not flat:
            raise ValueError("at least one parameter is needed, e.g. [protein.parameters.'trainer.lr']")
        return flat


def _looks_like_leaf(value: Any) -> bool:
    return isinstance(value, ParameterConfig) or (isinstance(value, dict) and "distribution" in value)


def _flatten_into(flat: dict[str, Any], prefix: str, tree: dict[str, Any]) -> None:
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if _looks_like_leaf(value):
            flat[path] = value
        elif isinstance(value, dict):
            _flatten_into(flat, path, value)
        else:
            raise ValueError(f"parameter {path!r} must be a table with a 'distribution' (got {value!r})")
