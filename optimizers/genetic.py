"""A small genetic search: tournament selection, uniform crossover and box mutation in the normalized space.

No model, so it is cheap and robust to noisy, crashing objectives; useful as a baseline and for very large
sweeps. Same contract as Protein: the goal is applied once, failures never become parents, pending and
observed points are not proposed again, and the output is deterministic under a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from optimizers.base import Observation, Suggestion, param_key
from optimizers.config import ProteinConfig
from optimizers.spaces import Space

POPULATION = 16  # the best successes that may become parents
TOURNAMENT = 3


class GeneticSearch:
    reads_observations = True

    def __init__(self, config: ProteinConfig, seed: int | None = None, budget: int | None = None):
        self.config = config
        self.space = Space(config.parameters)
        self.random_samples = config.settings.random_samples(self.space.dim, budget)
        self.seed = seed
        self.sign = 1.0 if config.goal == "maximize" else -1.0

    def suggest(
        self, observations: Sequence[Observation], pending: Sequence[dict[str, Any]], n: int = 1
    ) -> list[Suggestion]:
        st = self.config.settings
        rng = np.random.default_rng(None if self.seed is None else [self.seed, len(observations), len(pending)])
        taken = {param_key(o.params) for o in observations} | {param_key(p) for p in pending}
        ok = [o for o in observations if not o.failed and o.score is not None and math.isfinite(float(o.score))]
        ok.sort(key=lambda o: -self.sign * float(o.score))  # type: ignore[arg-type]
        parents = np.array([self.space.encode(o.params) for o in ok[:POPULATION]]).reshape(-1, self.space.dim)
        c = self.space.center()
        s = self.space.scales() * st.global_search_scale  # mutation widths; random points span the whole space

        out: list[Suggestion] = []
        for i in range(n):
            k = len(observations) + len(pending) + i
            for attempt in range(100):
                if k == 0 and st.seed_with_search_center and attempt == 0:
                    x, info = c, {"source": "search_center"}
                elif len(parents) < 2 or k < self.random_samples:
                    x, info = rng.uniform(-1, 1, self.space.dim), {"source": "random"}
                else:
                    x, info = self._child(parents, rng, s * (1 + attempt / 10)), {"source": "genetic"}
                params = self.space.decode(x)
                if param_key(params) not in taken:
                    break
            out.append(Suggestion(params, info))
            taken.add(param_key(params))
        return out

    def _child(self, parents: np.ndarray, rng: np.random.Generator, scales: np.ndarray) -> np.ndarray:
        # Parents are sorted best first, so the lowest index in a tournament wins.
        a, b = (
            parents[rng.choice(len(parents), size=min(TOURNAMENT, len(parents)), replace=False).min()] for _ in range(2)
        )
        child = np.where(rng.random(len(a)) < 0.5, a, b)
        # Mutate a few genes with a box as wide as a tenth of the search scale, and one in ten children widely.
        width = scales * (1.0 if rng.random() < 0.1 else 0.1)
        mask = rng.random(len(a)) < max(1.0 / len(a), 0.3)
        return np.asarray(np.clip(child + mask * width * rng.uniform(-1, 1, len(a)), -1, 1))
