"""Search spaces and optimizers. Pure computation: nothing here does I/O or touches an event loop."""

from __future__ import annotations

from typing import Any

from optimizers.base import Observation, Optimizer, Suggestion
from optimizers.config import ParameterConfig, ProteinConfig, ProteinSettings

__all__ = [
    "Observation",
    "Optimizer",
    "ParameterConfig",
    "ProteinConfig",
    "ProteinSettings",
    "Suggestion",
    "Tuner",
    "make_optimizer",
]


def make_optimizer(config: ProteinConfig, seed: int | None = None, budget: int | None = None) -> Optimizer:
    """Build the optimizer that ``config.method`` names; ``budget`` is the sweep's number of trials, if known."""
    if config.method == "random":
        from optimizers.random_search import RandomSearch

        return RandomSearch(config, seed)
    if config.method == "genetic":
        from optimizers.genetic import GeneticSearch

        return GeneticSearch(config, seed, budget)
    from optimizers.protein import Protein

    return Protein(config, seed, budget)


def __getattr__(name: str) -> Any:
    # Tuner imports Protein (torch, BoTorch): loaded on first use, so importing the package stays light.
    if name == "Tuner":
        from optimizers.tuner import Tuner

        return Tuner
    raise AttributeError(f"module 'optimizers' has no attribute {name!r}")
