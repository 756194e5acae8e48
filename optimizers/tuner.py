"""Ask/tell over the sweep optimizers, for use as a library (the way CARBS is used), without the service.

    from optimizers import Tuner

    tuner = Tuner({"lr": {"distribution": "log_normal", "min": 1e-5, "max": 1e-1},
                   "act": {"distribution": "categorical", "choices": ["relu", "tanh"]}}, goal="minimize", seed=0)
    for _ in range(30):
        params = tuner.ask()
        tuner.tell(params, train_and_evaluate(**params))   # cost=seconds is optional; score=None marks a failure
    print(tuner.best())

``ask()`` may be called several times before the answers come back (parallel workers): the points handed out
and not yet told are pending, and the model fantasizes them so each ask gets a different point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from optimizers import make_optimizer
from optimizers.base import Key, Observation, Suggestion, param_key
from optimizers.config import ProteinConfig


class Tuner:
    """Hold the observations and pending points of one search and ask the optimizer for the next point.

    ``config`` is a ProteinConfig (or its dict), or just the parameters (a mapping of name to ParameterConfig
    or its dict), in which case ``goal``, ``method`` and ``settings`` apply. ``budget``: how many trials the search
    will run, if known (a short search starts its model sooner).
    """

    def __init__(
        self,
        config: ProteinConfig | Mapping[str, Any],
        goal: str = "maximize",
        method: str = "bayes",
        seed: int | None = None,
        settings: Mapping[str, Any] | None = None,
        budget: int | None = None,
    ):
        if not isinstance(config, ProteinConfig):
            is_full = "parameters" in config
            config = ProteinConfig.model_validate(
                dict(config)
                if is_full
                else {"parameters": dict(config), "goal": goal, "method": method, "settings": dict(settings or {})}
            )
        self.config = config
        self.optimizer = make_optimizer(config, seed, budget)
        self.observations: list[Observation] = []
        self.pending: dict[Key, dict[str, Any]] = {}
        self.last_suggestion: Suggestion | None = None

    def ask(self) -> dict[str, Any]:
        """The next parameters to try (also kept as pending until told). ``last_suggestion.info`` says how
        they were chosen (search center, Sobol, the model's prediction)."""
        s = self.optimizer.suggest(self.observations, list(self.pending.values()), 1)[0]
        self.pending[param_key(s.params)] = s.params
        self.last_suggestion = s
        return dict(s.params)

    def tell(self, params: Mapping[str, Any], score: float | None, cost: float | None = None) -> None:
        """Record a result. ``score=None`` (or NaN) marks a failed trial; ``cost`` is optional (uniform if absent).

        ``params`` need not come from ``ask``: any point of the space may be told (a warm start)."""
        missing = set(self.config.parameters) - set(params)
        if missing:
            raise ValueError(f"tell: params lack {sorted(missing)}; pass every searched parameter")
        params = {n: params[n] for n in self.config.parameters}
        self.pending.pop(param_key(params), None)
        failed = score is None or not math.isfinite(float(score))
        self.observations.append(
            Observation(params, None if score is None or failed else float(score), cost, failed=failed)
        )

    def best(self) -> Observation | None:
        """The best successful observation so far (by the goal), or None."""
        ok = [o for o in self.observations if not o.failed]
        if not ok:
            return None
        sign = 1.0 if self.config.goal == "maximize" else -1.0
        return max(ok, key=lambda o: sign * float(o.score))  # type: ignore[arg-type]
