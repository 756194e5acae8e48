"""Random search over the normalized space: the baseline every other method must beat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from optimizers.base import Observation, Suggestion
from optimizers.config import ProteinConfig
from optimizers.spaces import Space


class RandomSearch:
    """Uniform samples in [-1, 1]^d, decoded; the search center first when the settings ask for it."""

    reads_observations = False  # it only counts them (to seed itself), so the service keeps no history for it

    def __init__(self, config: ProteinConfig, seed: int | None = None):
        self.config = config
        self.space = Space(config.parameters)
        self.seed = seed

    def suggest(
        self, observations: Sequence[Observation], pending: Sequence[dict[str, Any]], n: int = 1
    ) -> list[Suggestion]:
        # Seeded by how far the sweep got, so a restarted service proposes what the first one would have.
        rng = np.random.default_rng(None if self.seed is None else [self.seed, len(observations), len(pending)])
        out: list[Suggestion] = []
        if self.config.settings.seed_with_search_center and not observations and not pending:
            out.append(Suggestion(self.space.decode(self.space.center()), {"source": "search_center"}))
        while len(out) < n:
            out.append(Suggestion(self.space.decode(rng.uniform(-1, 1, self.space.dim)), {"source": "random"}))
        return out[:n]
