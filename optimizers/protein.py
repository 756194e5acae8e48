"""Protein: cost-aware Bayesian optimization for sweeps, on BoTorch.

The seed's algorithm (search center, then space-filling samples, then a GP on score and a GP on log cost with
candidates around the score/cost Pareto front and a random cost target), with its known weak points fixed:

- the acquisition is log expected improvement, so the model's uncertainty counts, not only its mean;
- the goal is applied once, to the data (``maximize`` internally), so ``minimize`` is handled correctly;
- trials in flight are fantasized at the model's mean (kriging believer), so parallel workers get different
  points, and no suggestion repeats a pending or observed one;
- failed trials get an imputed score below the worst success, so the optimizer learns to avoid what crashes;
- the GP is fit on a bounded subset with bounded L-BFGS iterations, so a suggestion stays fast at thousands of
  observations;
- a categorical is a categorical: the kernel sees only same choice or not (see optimizers.gp), and the
  acquisition search tries choices by enumeration instead of gradient steps along their codes;
- if anything in the model path fails, the suggestion falls back to random and says why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import qmc

from optimizers.base import Key, Observation, Suggestion, param_key
from optimizers.config import ProteinConfig
from optimizers.spaces import Space, choice_code

if TYPE_CHECKING:
    from optimizers.protein_model import Model

logger = logging.getLogger("optimizers.protein")


@dataclass
class Data:
    x: np.ndarray  # encoded points, (n, d) in [-1, 1]
    y: np.ndarray  # goal-applied scores (higher is better), failures imputed
    ok: np.ndarray  # bool: a real score, not an imputed failure
    log_cost: np.ndarray


class Protein:
    """The sweep optimizer the service calls: ``suggest(observations, pending, n)``."""

    reads_observations = True

    def __init__(self, config: ProteinConfig, seed: int | None = None, budget: int | None = None):
        """``budget``: the sweep's number of trials, if known (serve passes max_trials). It sizes the initial
        design (see ProteinSettings.random_samples) and keeps the last trials from escaping (see
        protein_model.Model._refining)."""
        if config.method != "bayes":
            raise ValueError(
                f"Protein is method='bayes'; for method={config.method!r} use optimizers.make_optimizer(config)"
            )
        self.config = config
        self.settings = config.settings
        self.space = Space(config.parameters)
        self.seed = seed
        self.sign = 1.0 if config.goal == "maximize" else -1.0
        self.random_samples = self.settings.random_samples(self.space.dim, budget)
        self.budget = budget

    # ------------------------------------------------------------------ entry point
    def suggest(
        self, observations: Sequence[Observation], pending: Sequence[dict[str, Any]], n: int = 1
    ) -> list[Suggestion]:
        with ExitStack() as model_threads:  # entered once the model's turn comes (see _model)
            return self._suggest(observations, pending, n, model_threads)

    def _suggest(
        self, observations: Sequence[Observation], pending: Sequence[dict[str, Any]], n: int, model_threads: ExitStack
    ) -> list[Suggestion]:
        # Seeded by how far the sweep got, so a restarted service proposes what the first one would have.
        rng = np.random.default_rng(None if self.seed is None else [self.seed, len(observations), len(pending)])
        in_flight = {param_key(p) for p in pending}
        taken = {param_key(o.params) for o in observations} | in_flight
        pending_x = [self.space.encode(p) for p in pending]
        data = self._data(observations)
        out: list[Suggestion] = []
        model: Model | None = None
        for i in range(n):
            k = len(observations) + len(pending) + i  # how many points were handed out before this one
            s = self._initial(k, taken, rng, int(data.ok.sum()))
            if s is None:
                try:
                    if model is None:
                        model = self._model(data, pending_x, rng, model_threads)
                    s = model.suggest(taken, in_flight, rng)
                except Exception as err:  # the seed's promise: never stall a sweep on a model failure
                    reason = f"{type(err).__name__}: {err}"
                    logger.warning("Protein falling back to a random suggestion: %s", reason)
                    s = self._random(taken, rng, {"source": "random", "fallback": reason})
                    model = None
            out.append(s)
            taken.add(param_key(s.params))
            in_flight.add(param_key(s.params))
            pending_x.append(self.space.encode(s.params))
            if model is not None and i + 1 < n:
                model.add_pending(pending_x[-1])
        return out

    def _model(self, data: Data, pending_x: list[np.ndarray], rng: np.random.Generator, threads: ExitStack) -> Model:
        """The fitted model for this call. torch and BoTorch are imported here, when the model's turn first comes:
        a sweep's initial design, and a short sweep that never gets past it, start without them (seconds of CPU
        per process)."""
        from optimizers import protein_model

        threads.enter_context(protein_model.one_thread())
        return protein_model.Model(self, data, pending_x, rng)

    # ------------------------------------------------------------------ phases before the model
    def initial_design_size(self) -> int:
        """How many points come before the model: the search center (if seeded with it) and the Sobol points."""
        return int(self.settings.seed_with_search_center) + self.random_samples

    def _initial(self, k: int, taken: set[Key], rng: np.random.Generator, n_ok: int) -> Suggestion | None:
        st = self.settings
        offset = 1 if st.seed_with_search_center else 0
        if k == 0 and st.seed_with_search_center:
            s = Suggestion(self.space.decode(self.space.center()), {"source": "search_center"})
            s = s if param_key(s.params) not in taken else self._random(taken, rng, {"source": "random"})
        elif k < self.initial_design_size() or n_ok < 1:
            s = self._sobol(k - offset, taken, rng)
        else:
            return None  # the model's turn (it also handles resample_frequency: it knows the Pareto front)
        if param_key(s.params) in taken and n_ok >= 1:
            return None  # a small space, every point tried before the design ended: the model repeats the best
        return s

    def _sobol(self, index: int, taken: set[Key], rng: np.random.Generator) -> Suggestion:
        """Point ``index`` of the initial design: scrambled Sobol over the whole space (``scale`` does not narrow
        it: the optimum may lie anywhere), and each categorical cycling through all its choices in a seeded order,
        so ``k`` initial points show ``k`` choices whatever the other dimensions do."""
        seed = self.seed if self.seed is not None else int(rng.integers(2**31))
        sobol = qmc.Sobol(self.space.dim, scramble=True, seed=seed)
        if index > 0:
            sobol.fast_forward(index)
        x = sobol.random(1)[0] * 2 - 1
        order = np.random.default_rng([seed, 7])
        for j, p in enumerate(self.space.parameters.values()):
            if p.distribution == "categorical":
                k = len(p.choices)  # type: ignore[arg-type]
                cycle = order.permutation(k)  # drawn for every categorical, so each has its own order
                x[j] = choice_code(cycle[index % k], k)
        s = Suggestion(self.space.decode(x), {"source": "sobol", "index": index})
        return s if param_key(s.params) not in taken else self._random(taken, rng, {"source": "random"})

    def _random(self, taken: set[Key], rng: np.random.Generator, info: dict[str, Any]) -> Suggestion:
        """A uniform point of the whole space not yet taken (the last draw if all 200 were)."""
        params: dict[str, Any] = {}
        for _ in range(200):
            params = self.space.decode(rng.uniform(-1, 1, self.space.dim))
            if param_key(params) not in taken:
                break
        return Suggestion(params, dict(info))

    # ------------------------------------------------------------------ data
    def _data(self, observations: Sequence[Observation]) -> Data:
        xs, ys, ok, costs = [], [], [], []
        for o in observations:
            good = not o.failed and o.score is not None and math.isfinite(float(o.score))
            xs.append(self.space.encode(o.params))
            ys.append(self.sign * float(o.score) if good and o.score is not None else math.nan)
            ok.append(good)
            cost = 1.0 if o.cost is None else float(o.cost)  # no cost given: every trial costs the same
            costs.append(math.log(max(cost, 1e-12)) if math.isfinite(cost) else math.nan)
        x = np.array(xs, dtype=float).reshape(len(xs), self.space.dim)
        y, okm = np.array(ys, dtype=float), np.array(ok, dtype=bool)
        if okm.any() and not okm.all():
            # A failure scores a little below the worst success: the GP learns the region is bad without a
            # cliff so deep that it distorts the rest of the fit.
            good = y[okm]
            spread = float(good.max() - good.min()) or 1.0
            y[~okm] = good.min() - 0.25 * spread
        return Data(x, y, okm, np.array(costs, dtype=float))
