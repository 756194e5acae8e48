"""Protein's model turn, on BoTorch: one fitted score GP (and log-cost GP) per suggest() call, and the search
for the point of highest acquisition over it (log expected improvement, weighted toward a random cost target),
with the escape, probe and refine steps that keep a converged search moving. ``Protein`` (optimizers.protein)
runs the initial design and hands over to ``Model`` once the observations can teach a GP.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from botorch.acquisition.analytic import _log_ei_helper
from scipy.optimize import minimize
from scipy.stats import qmc
from threadpoolctl import ThreadpoolController

from optimizers import gp, warps
from optimizers.base import Key, Suggestion, param_key
from optimizers.spaces import choice_code, choice_index

if TYPE_CHECKING:
    from optimizers.protein import Data, Protein


MAX_PARETO_CENTERS = 16
FIT_HYPERPARAMETERS_ON = 128  # observations the hyperparameters are fit on; the posterior uses more
LOCAL_STARTS = 10  # multi-start L-BFGS-B from the best pool candidates
MIN_COST_WEIGHT = 0.02
COST_WEIGHT_ROUNDING = 0.1  # the cost weight's peak is rounded over this much of the log-cost range
STALL_PATIENCE = 6  # model-guided successes without improvement (at least d) before escape steps begin
ESCAPE_CYCLE = 4  # once stalled, every ESCAPE_CYCLE-th suggestion refines the best; the others escape its basin
ESCAPE_RADIUS = 0.5  # the basin an escape step avoids: a ball of this times sqrt(d) in [-1, 1] units,
ESCAPE_LENGTHSCALES = 1.0  # and within this many lengthscales of the best or the path it climbed
PROBE_RADIUS = 0.1  # another choice counts as tried at the best's settings within this times sqrt(d)
MIN_ESCAPE_POINTS = 3  # observations outside the basin needed to model the rest of the space
SHORT_SWEEP = 2  # a sweep with at most this many patiences of model trials has pessimistic GP prior means
HIGH_DIMENSIONS = 8  # a space of at least this many parameters has a pessimistic score GP prior mean in any sweep
LINE_POINTS = 16  # values tried along a parameter's range by a coordinate probe
REACH_SHARE = 0.75  # a coordinate probe's move need not exceed this share of the way to the far end
EDGE_REACH = 1.0  # an edge probe moves a parameter at an end of its range at most this far inward
NEAR_MIN = 0.25  # the endgame's nearer probe moves a parameter at least this far (see _coordinate_probe)
LINE_MIN = 0.5  # a coordinate probe moves its parameter at least this far (in [-1, 1] units)
CHOICE_LINE_STEPS = 3  # trials along one parameter for another choice whose probe came close (see _choice_line_probe)
CHOICE_LINE_REACH = 0.5  # how far (in [-1, 1] units) such a trial moves its parameter
ENDGAME_SHARE = 0.1  # the last tenth of a known trial budget (at least 2 trials) refines or probes, never escapes


class Model:
    """One fitted score GP (and cost GP) for one suggest() call, conditioned on pending points."""

    def __init__(self, protein: Protein, data: Data, pending_x: list[np.ndarray], rng: np.random.Generator):
        self.p = protein
        self.space = protein.space
        self.data = data
        st = protein.settings
        self.stalled = _stalled(data.y[data.ok])
        self.patience = max(STALL_PATIENCE, self.space.dim)
        short = self._short_sweep()  # see _prior_mean
        self.pessimistic_score = short or self.space.dim >= HIGH_DIMENSIONS
        self.pessimistic_cost = short
        idx = gp.select_subset(data.x, data.y, st.max_fit_observations)
        self.x = data.x[idx]
        y = data.y[idx]
        self.warp, self.y_mean, self.y_std, self.ys, self.score = self._fit_warped(self.x, y)

        ok_idx = np.flatnonzero(data.ok & np.isfinite(data.log_cost))
        lc = data.log_cost[ok_idx]
        self.cost = None
        if len(lc) >= 3 and float(lc.max() - lc.min()) > 1e-6:
            sub = ok_idx[gp.select_subset(data.x[ok_idx], -lc, st.max_fit_observations)]
            lcs = data.log_cost[sub]
            self.lc_mean, self.lc_std = float(lcs.mean()), float(lcs.std()) or 1.0
            cost_ys = (lcs - self.lc_mean) / self.lc_std
            self.cost = self._fit(data.x[sub], cost_ys, constant=self._prior_mean(cost_ys, self.pessimistic_cost))
            self.lc_lo, self.lc_hi = float(lc.min()), float(lc.max())
        elif len(lc):
            self.lc_mean, self.lc_std, self.lc_lo, self.lc_hi = (
                float(np.median(lc)),
                1.0,
                float(lc.min()),
                float(lc.max()),
            )
        else:
            self.lc_mean, self.lc_std, self.lc_lo, self.lc_hi = 0.0, 1.0, 0.0, 0.0

        # Improvement is measured against the best the model believes in at observed points: robust to noise.
        with torch.no_grad():
            mu = self.score.mean(_t01(data.x[data.ok]))
        self.mu_ok = mu.numpy()
        self.best_f = self.target_f = float(mu.max())
        self.acq_score = self.score  # the GP the acquisition reads: the escape model during an escape step
        self.refine = False  # a refine step: the acquisition is the posterior mean
        ok = np.flatnonzero(data.ok)
        self.best_index = int(ok[np.argmax(data.y[ok])])
        self.pareto = self._pareto()
        self.pending_x: list[np.ndarray] = []
        for px in pending_x:
            self.add_pending(px)
        # The published random cost target: somewhere between the cheapest run and a bit past the dearest one.
        self.target = float(rng.uniform(0.0, 1.0 + st.expansion_rate))

    def _fit_warped(self, x: np.ndarray, y: np.ndarray) -> tuple[warps.Warp, float, float, np.ndarray, gp.Posterior]:
        """The score GP under the warp of the scores with the highest evidence (see optimizers.warps): the GP's
        marginal likelihood of the warped, standardized scores plus the log Jacobian of both maps."""
        best: tuple[float, warps.Warp, float, float, np.ndarray, gp.Posterior] | None = None
        for warp in warps.candidates(y):
            w = warp(y)
            mean, std = float(w.mean()), float(w.std()) or 1.0
            ys = (w - mean) / std
            posterior = self._fit_scores(x, ys)
            evidence = posterior.log_evidence() + warp.log_jacobian(y) - len(y) * math.log(std)
            if best is None or evidence > best[0]:
                best = (evidence, warp, mean, std, ys, posterior)
        assert best is not None  # the tail warp is always a candidate
        return best[1:]

    def _fit_scores(self, x: np.ndarray, ys: np.ndarray) -> gp.Posterior:
        return self._fit(x, ys, constant=self._prior_mean(ys, self.pessimistic_score))

    @staticmethod
    def _prior_mean(ys: np.ndarray, pessimistic: bool) -> float | None:
        """A GP's prior mean: when ``pessimistic``, the lowest target seen, held fixed; otherwise None, a mean fit
        with the other hyperparameters. Pessimistic in a short sweep (see _short_sweep), and the score GP's in a
        space of HIGH_DIMENSIONS or more parameters too.

        Held at the worst score, the score model expects a poor result where it knows little, so expected
        improvement there comes from the uncertainty alone and the search climbs from what it has seen; with a
        mean fit to the average score every region far from the data looks like an average trial, as uncertain
        as anything, and a short sweep spreads its model steps over them. De Ath et al. (2020, "What do you
        mean? The role of the mean function in Bayesian optimisation") found this worst-seen constant the best
        of eight mean functions on synthetic problems of 5 or more dimensions: it favours exploitation. That is
        what a sweep too short to escape a basin should do (the MLP real job at 16 trials: 0.94 of random search's
        geometric mean best, against 0.99 with a fitted mean), and what makes a longer one settle in the nearest
        basin (held during the first climb of 50-trial sweeps, 5 of 16 Styblinski-Tang-4 seeds stuck, against 0).
        In 8 or more dimensions even 80 trials leave most of the space unseen, and the optimism of a fitted mean
        costs more than a nearby basin does: there the score GP's worst-seen mean holds for the whole sweep
        (80 trials, 16 seeds, median regret / seeds stuck, against the fitted mean: PPO-11, a PPO-shaped space of
        11 parameters, 0.025 / 4 against 0.12 / 8; Rosenbrock-8 284 against 418; Hartmann-6 with 4 inert
        parameters 3 stuck against 5; Styblinski-Tang-8 the same). Below 8 parameters the fitted mean stays:
        with the worst-seen mean 4-parameter problems with edge and corner optima settle in the nearest basin.
        An escape step's model fits the mean in any case: it searches the rest of the space. The cost GP's is
        held at the cheapest cost seen in a short sweep only, so the cost-aware weighting does not presume
        unexplored regions dear; held in longer sweeps it left 6 of 16 MF-Hartmann-6 seeds stuck at cost 40
        (against 1)."""
        return float(ys.min()) if pessimistic else None

    def _short_sweep(self) -> bool:
        """Whether the sweep's known trial budget leaves the model at most SHORT_SWEEP patiences of trials after
        the initial design: too few for a climb to stall and an escape to find and climb another basin, so the
        model exploits from its first step."""
        budget = self.p.budget
        return budget is not None and budget - self.p.initial_design_size() <= SHORT_SWEEP * self.patience

    def _fit(self, x: np.ndarray, ys: np.ndarray, constant: float | None = None) -> gp.Posterior:
        """A GP on standardized targets ``ys``; ``constant`` fixes its prior mean (see _fit_scores)."""
        # Hyperparameters from a bounded subset; the posterior then conditions on the full (bounded) set.
        sub = gp.select_subset(x, ys, FIT_HYPERPARAMETERS_ON)
        choices = self.space.choice_counts()
        y = torch.as_tensor(ys, dtype=gp.DTYPE)
        return gp.Posterior(gp.fit(_t01(x[sub]), y[sub], choices, constant=constant), _t01(x), y)

    def _pareto(self) -> np.ndarray:
        """Successes no cheaper success beats: the seed's score/cost front (indices into data)."""
        ok = np.flatnonzero(self.data.ok)
        order = ok[np.lexsort((-self.data.y[ok], np.nan_to_num(self.data.log_cost[ok], nan=np.inf)))]
        front, best = [], -np.inf
        for i in order:
            if self.data.y[i] > best:
                front.append(i)
                best = self.data.y[i]
        return np.array(front, dtype=int)

    def add_pending(self, x: np.ndarray) -> None:
        """Fantasize a trial in flight at the model's mean, so its neighbourhood loses its appeal."""
        with torch.no_grad():
            mu = self.score.mean(_t01(x[None]))
        self.x = np.vstack([self.x, x[None]])
        self.ys = np.append(self.ys, float(mu))
        self.pending_x.append(x)
        self.score.set_data(_t01(self.x), torch.as_tensor(self.ys, dtype=gp.DTYPE))

    # ------------------------------------------------------------------ acquisition
    def _acq(self, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(acquisition, predicted log cost) at encoded points ``xt`` (b, d) in [-1, 1]. A refine step's acquisition
        is the posterior mean (see _refining), without the cost target: it converges on the best there is."""
        x01 = (xt + 1) / 2
        mean, var = self.acq_score(x01)
        log_cost = torch.full_like(mean, self.lc_mean) if self.cost is None else self._log_cost(x01)
        if self.refine:
            return mean, log_cost
        sigma = var.sqrt()
        value = _log_ei_helper((mean - self.target_f) / sigma) + sigma.log()
        if self.cost is None:
            return value, log_cost
        c_norm = (log_cost - self.lc_lo) / (self.lc_hi - self.lc_lo)
        weight = _cost_weight(c_norm, self.target)
        # Over max_suggestion_cost: a soft wall for the gradient steps, and dropped outright in _rank.
        excess = (log_cost - math.log(self.p.settings.max_suggestion_cost)).clamp_min(0.0)
        value = value + weight.log() - 100.0 * excess
        return value, log_cost

    def _log_cost(self, x01: torch.Tensor) -> torch.Tensor:
        assert self.cost is not None
        return self.cost.mean(x01) * self.lc_std + self.lc_mean  # the variance is not used

    def _pool(self, rng: np.random.Generator) -> np.ndarray:
        """Candidates: a box around each Pareto point (the seed's), finer boxes around the best few, and a
        global Sobol set so the model can send us somewhere new."""
        st = self.p.settings
        d = self.space.dim
        scales = self.space.scales() * st.global_search_scale
        front = self.data.x[self.pareto]
        if len(front) > MAX_PARETO_CENTERS:  # spread the centers along the front, cheap to dear
            front = front[np.linspace(0, len(front) - 1, MAX_PARETO_CENTERS).round().astype(int)]
        per = max(16, min(st.suggestions_per_pareto, 1024 // len(front)))
        ok = np.flatnonzero(self.data.ok)
        top = self.data.x[ok[np.argsort(-self.data.y[ok], kind="stable")[:3]]]
        parts = [_in_boxes(front, scales, per, rng)]
        parts += [_in_boxes(top, w * scales, 64, rng) for w in (0.1, 0.01)]
        seed = int(rng.integers(2**31))
        parts.append(qmc.Sobol(d, scramble=True, seed=seed).random(min(st.random_suggestions, 1024)) * 2 - 1)
        parts.append(self._other_choices(top))
        return self._snap(np.vstack(parts))

    def _other_choices(self, points: np.ndarray) -> np.ndarray:
        """Each point with one categorical switched to each of its other choices: a good setting with another
        choice is a candidate the Sobol set would rarely contain."""
        out = [np.empty((0, self.space.dim))]
        for j, p in enumerate(self.space.parameters.values()):
            if p.distribution == "categorical":
                k = len(p.choices)  # type: ignore[arg-type]
                for c in range(k):
                    moved = points.copy()
                    moved[:, j] = choice_code(c, k)
                    out.append(moved)
        return np.vstack(out)

    def _snap(self, x: np.ndarray) -> np.ndarray:
        """Move points onto the values they decode to (integers, powers of two, choices); identity otherwise."""
        if not self.space.discrete:
            return np.asarray(np.clip(x, -1, 1))
        return np.array([self.space.round_trip(xi) for xi in x])

    def suggest(self, taken: set[Key], in_flight: set[Key], rng: np.random.Generator) -> Suggestion:
        st = self.p.settings
        k = len(self.data.y) + len(self.pending_x)
        if st.resample_frequency and (k + 1) % st.resample_frequency == 0 and len(self.pareto):
            # The seed's resampling: re-run a Pareto point to average out a lucky or unlucky score. An observed
            # point may repeat on purpose; one in flight may not.
            i = int(rng.choice(self.pareto))
            params = self.space.decode(self.data.x[i])
            if param_key(params) not in in_flight:
                return Suggestion(params, {"source": "resample", "observation": int(i)})

        try:
            return self._optimize(taken, rng) or self._repeat(in_flight)
        finally:
            self.acq_score, self.target_f, self.refine = self.score, self.best_f, False

    def _optimize(self, taken: set[Key], rng: np.random.Generator) -> Suggestion | None:
        """The untaken point of highest acquisition: ranked over a candidate pool, then refined by local search.
        An escape step ranks with the escape model, outside the basin of the best (see _escape_from)."""
        pool = self._pool(rng)
        self.refine = self._refining()
        basins = self._escape_from()
        climb_from = self.data.x[self.best_index][None]  # also climb from the incumbent
        endgame_probe = self._endgame_probe()
        if (not self.refine and self._probing()) or endgame_probe:
            # Every escape step, before it in a space of over 6 parameters, and every other step of an endgame
            # whose refining no longer improves. Cheap tests of the converged best first: one trial each, near
            # it (see the two probes), ranked by expected improvement.
            self.refine = False
            probe = (
                self._other_choice_probe(taken)
                or self._choice_line_probe(taken, rng)
                or self._coordinate_probe(taken, rng)
            )
            if probe is not None:
                return probe
            self.refine = endgame_probe
        if basins is not None:
            local = self._restart(basins, rng)
            if local is not None:  # climb from the best outside the basins: climbing the incumbent is what it escapes
                edge = self._edge_probe(local[0], basins, taken, rng)
                if edge is not None:
                    return edge
                pool, climb_from = np.vstack([pool, local]), local[:1]
            else:  # too little observed outside the basins to model it
                far = self._far_from_data(pool, basins, taken)
                if far is not None:
                    return far
                basins = None
        scored = self._scored(pool, basins)
        values, _ = self._rank(*scored)
        if not np.isfinite(values).any():  # the basins cover every candidate: nothing to escape to
            basins, self.acq_score, self.target_f = None, self.score, self.best_f
            climb_from = self.data.x[self.best_index][None]
            scored = self._scored(pool)
            values, _ = self._rank(*scored)
        # Starts: the best candidate plus a roulette draw weighted by exp(acquisition) (as Optuna's GPSampler
        # does), so the local searches spread over several basins instead of all climbing the same one.
        top = int(np.argmax(values))
        probs = np.exp(values - values[top])
        probs[top] = 0.0
        n_more = min(LOCAL_STARTS - 2, int(np.count_nonzero(probs > 0)))
        more: Any = rng.choice(len(pool), size=n_more, replace=False, p=probs / probs.sum()) if n_more else []
        starts = np.vstack([pool[[top, *more]], climb_from])
        refined = self._snap(self._refine(starts))
        cands = np.vstack([refined, pool])
        (v_refined, c_refined), (v_pool, c_pool) = self._scored(refined, basins), scored  # the pool's, once
        cvals, clog = self._rank(np.concatenate([v_refined, v_pool]), np.concatenate([c_refined, c_pool]))
        for j in np.argsort(-cvals, kind="stable"):
            params = self.space.decode(cands[j])
            if param_key(params) in taken or cvals[j] == -np.inf:
                continue
            info = self._info(cands[j], float(cvals[j]), float(clog[j]))
            if basins is not None:
                info["escape"] = f"no improvement in {self.stalled} trials: searching outside the best's basin"
            if self.refine:
                info["refine"] = "the model's best point (its posterior mean's maximum), to converge on the best"
            return Suggestion(params, info)
        return None  # every candidate was taken: a small discrete space, tried point by point

    def _repeat(self, in_flight: set[Key]) -> Suggestion:
        """Once every point of a (small, discrete) space was tried: the observed point the model rates best, not
        in flight if another is free. Running it again is what a noisy score (an RL return) gains most from; a
        random repeat would spend the trial on a point known to be poor."""
        ok = np.flatnonzero(self.data.ok)
        ranked = [self.space.decode(self.data.x[i]) for i in ok[np.argsort(-self.mu_ok, kind="stable")]]
        params = next((p for p in ranked if param_key(p) not in in_flight), ranked[0])
        info = {"source": "repeat", "repeat": "every point of the space was tried: the one the model rates best, again"}
        return Suggestion(params, info)

    def _escape_from(self) -> list[np.ndarray] | None:
        """The basins to search outside of, when this suggestion should escape; else None.

        Once stalled (see _stalled_for), three suggestions in four escape the best's basin and the fourth refines
        it: the basin is converged (its steps no longer improve), and the rest of the space is where a better
        optimum may still be. A basin is given by its
        points, its best first: the model's points reached from the best by steps downhill of at most
        ESCAPE_LENGTHSCALES of the score GP's lengthscales, so the path the search climbed belongs to it. A lower
        basin that earlier escape steps climbed and converged on (as many of its points as the patience after
        the last that improved on its best) is left too, and so on: the escape does not settle in the first
        basin it finds. Computed from the observations alone (restarts reproduce it).
        """
        if self._stalled_for() is None or self.refine:
            return None
        best = self._incumbent()
        outside = np.ones(len(self.x), dtype=bool)
        basins: list[np.ndarray] = []
        while True:
            basins.append(self._basin(best, outside))
            outside &= ~self._in_basin(self.x, basins[-1:])
            if not outside.any():
                return basins
            best = int(np.flatnonzero(outside)[np.argmax(self.ys[outside])])
            climbed = self.ys[self._basin_points(best, outside)]  # in the order they were observed
            if _stalled(climbed, span=float(np.ptp(self.ys))) < self.patience:
                return basins  # the best outside is not a converged basin: the escape may climb it

    def _stalled_for(self) -> int | None:
        """How many trials past the patience the search has gone without improving its best, or None while it
        has not stalled: max(STALL_PATIENCE, d) model-guided trials (the initial design is no climb)."""
        stalled = self._model_steps_stalled()
        return stalled - self.patience if stalled >= self.patience else None

    def _model_steps_stalled(self) -> int:
        """How many trials the search has gone without improving its best, not counting the initial design."""
        return min(self.stalled, len(self.data.y) - self.p.initial_design_size())

    def _probing(self) -> bool:
        """Whether the probes (another choice, then one parameter moved; see both) are due: after STALL_PATIENCE
        model-guided trials without improvement, however many parameters there are. The escape's patience grows
        with d, so a climb in many dimensions is not abandoned while it still makes progress; a probe abandons
        nothing (one trial at the best's settings but one).
        In PPO-11 (11 parameters) waiting for 11 left the best activation untried until the endgame on 4 of 16
        seeds (regret 0.15, the second-best activation's floor); probing after 6 left none (median regret 0.0061
        against 0.025). Below 7 parameters the two patiences are the same. Every escape step is past both."""
        return self._model_steps_stalled() >= STALL_PATIENCE

    def _refining(self) -> bool:
        """Whether this suggestion refines the best (its acquisition the posterior mean) rather than searching:
        every ESCAPE_CYCLE-th suggestion once stalled, and, when the sweep's trial budget is known, every one of
        its last ENDGAME_SHARE. Expected improvement at a converged optimum prefers the model's uncertain spots
        to the point it believes best (on Branin it hopped between the three equal minima); and an escape needs
        several trials to climb what it finds, so one begun in the endgame has none left."""
        stalled = self._stalled_for()
        if stalled is not None and stalled % ESCAPE_CYCLE == ESCAPE_CYCLE - 1:
            return True
        return self._endgame_left() is not None and not self._escape_climbing()

    def _endgame_probe(self) -> bool:
        """Whether this endgame step probes the best (see the two probes) rather than refining it: every other
        step of the endgame, the last one never, when the last trial did not improve on the best. A converged
        refine repeats the best to within noise; a probe may still move a parameter out of its poorer basin."""
        left = self._endgame_left()
        return self.refine and left is not None and left % 2 == 0 and self.stalled >= 1

    def _endgame_left(self) -> int | None:
        """Trials left in a known budget, this suggestion included, when they are its last ENDGAME_SHARE (at
        least 2); otherwise None."""
        budget = self.p.budget
        if budget is None:
            return None
        left = budget - len(self.data.y) - len(self.pending_x)
        return left if left <= max(2, int(ENDGAME_SHARE * budget)) else None

    def _escape_climbing(self) -> bool:
        """Whether escape steps are climbing a new basin: the best observation outside the best's basin is among
        the last ESCAPE_CYCLE. The endgame lets such a climb go on rather than refine a converged best."""
        if self._stalled_for() is None:
            return False
        observed = len(self.x) - len(self.pending_x)  # the model's points: observations, then trials in flight
        outside = ~self._in_basin(self.x, [self._basin(self._incumbent(), np.ones(len(self.x), dtype=bool))])
        outside[observed:] = False
        if not outside.any():
            return False
        return bool(np.flatnonzero(outside)[np.argmax(self.ys[outside])] >= observed - ESCAPE_CYCLE)

    def _incumbent(self) -> int:
        """The best observation's index among the model's points."""
        return int(np.argmin(np.linalg.norm(self.x - self.data.x[self.best_index], axis=1)))

    def _basin(self, best: int, allowed: np.ndarray) -> np.ndarray:
        """The basin of model point ``best`` among the ``allowed`` points: its points, ``best`` first."""
        return np.vstack([self.x[best], self.x[self._basin_points(best, allowed)]])

    def _basin_points(self, best: int, allowed: np.ndarray) -> np.ndarray:
        """Which of the model's points (among ``allowed``) are reached from point ``best`` by steps downhill of
        at most ESCAPE_LENGTHSCALES lengthscales (``best`` included)."""
        basin = np.zeros(len(self.x), dtype=bool)
        basin[best] = True
        frontier = [best]
        while frontier:
            i = frontier.pop()
            down = allowed & ~basin & (self.ys <= self.ys[i]) & self._near(self.x, self.x[i][None])
            basin |= down
            frontier += np.flatnonzero(down).tolist()
        return basin

    def _restart(self, basins: list[np.ndarray], rng: np.random.Generator) -> np.ndarray | None:
        """Set up an escape step: a search restarted in the rest of the space (TuRBO's restart, keeping the data
        there), or None when too few observations lie outside the basin to model it.

        The score GP is refit, hyperparameters too, on the observations outside the basin, and the acquisition is
        expected improvement over the best of them. Ranking the rest of the space with the full model would not
        escape: the basin's own data (and the long lengthscales it teaches along its ridges) make the points
        just outside the excluded region look best, so every escape step would land on the basin's flank.
        Returns local candidates around the best points outside the basin, the best of them first.
        """
        outside = ~self._in_basin(self.x, basins)  # the model's points: observations and trials in flight
        if outside.sum() < MIN_ESCAPE_POINTS:
            return None
        x, ys = self.x[outside], self.ys[outside]
        ys = (ys - ys.mean()) / (ys.std() or 1.0)
        self.acq_score = self._fit(x, ys)  # a fitted mean: an escape searches the rest of the space
        with torch.no_grad():
            mu = self.acq_score(_t01(x))[0].numpy()
        self.target_f = float(mu.max())
        best = x[np.argsort(-mu, kind="stable")[:3]]
        scales = self.space.scales() * self.p.settings.global_search_scale
        return self._snap(np.vstack([best] + [_in_boxes(best, w * scales, 64, rng) for w in (1.0, 0.1, 0.01)]))

    def _other_choice_probe(self, taken: set[Key]) -> Suggestion | None:
        """The best's settings with one categorical at another choice, if such a point was never tried near there:
        the one of highest expected improvement, or None. Each choice of a categorical is a basin of its own (an
        optimizer's or activation's best learning rate is its own), and the model, having seen a choice only at
        poor settings, believes it poor everywhere; trying it at the best's settings is the cheapest test of
        that belief. An escape step makes these probes before restarting elsewhere, and in a space of more than
        STALL_PATIENCE parameters they come earlier (see _probing)."""
        best = self.data.x[self.best_index]
        fresh = [c for c in self._other_choices(best[None]) if not (c == best).all() and not self._tried_at(c)]
        if not fresh:
            return None
        return self._probe([np.array(fresh)], taken, "the best's settings with another choice")

    def _choice_line_probe(self, taken: set[Key], rng: np.random.Generator) -> Suggestion | None:
        """Another choice whose probe at the best's settings came close to the best, with the parameter the score is
        most sensitive to moved a little (at most CHOICE_LINE_REACH): the value of highest expected improvement,
        or None. A choice often moves the best value of a parameter it is coupled to (an optimizer's or
        activation's best learning rate is its own), so its probe at the best's settings scores a little worse than
        the best even where its own optimum is better, and one trial is too few to write it off. The closest other
        choice of each categorical gets up to CHOICE_LINE_STEPS trials along that parameter from its probe. Close:
        the model's mean at the probe is behind the best's by at most what moving the best's parameter by
        CHOICE_LINE_REACH costs it, a gap a shift of the parameter's best value could explain. PPO-12 (an
        activation and an optimizer, each with its own best learning rate; 80 trials, 32 seeds) left 16 seeds
        stuck without these trials, 11 of them on a poorer choice; with them, 8 and 4."""
        best = self.data.x[self.best_index]
        cat = self.space.categorical_mask()
        numeric = np.flatnonzero(~cat).tolist()
        if not numeric or not cat.any():
            return None
        ok = np.flatnonzero(self.data.ok)
        mu = dict(zip(ok.tolist(), self.mu_ok.tolist()))
        drops = self._line_drops(best)
        coupled = max(drops, key=lambda k: drops[k])  # the parameter the score is most sensitive to
        grid = _line_grid(rng)
        cands = []
        switched = self._other_choices(best[None])
        for j in np.flatnonzero(cat).tolist():
            others = switched[switched[:, j] != best[j]]  # this categorical's other choices
            probes = [int(i) for c in others for i in ok[self._at_settings(self.data.x[ok], c)]]
            if not probes:
                continue
            closest = max(probes, key=lambda i: mu[i])
            p = self.data.x[closest]
            if drops[coupled] < mu[self.best_index] - mu[closest] or self._on_lines(p) >= CHOICE_LINE_STEPS:
                continue
            moves = np.abs(grid - p[coupled])
            cands.append(_along(p, coupled, grid[(moves <= CHOICE_LINE_REACH) & (moves >= PROBE_RADIUS)]))
        return self._probe(cands, taken, "another choice close to the best, one parameter moved")

    def _line_drops(self, best: np.ndarray) -> dict[int, float]:
        """For each numeric parameter, what moving ``best``'s by CHOICE_LINE_REACH (either way, on average) costs
        it in the score model's mean."""
        moves = []
        for k in np.flatnonzero(~self.space.categorical_mask()).tolist():
            for step in (-CHOICE_LINE_REACH, CHOICE_LINE_REACH):
                if -1 <= best[k] + step <= 1:
                    moved = best.copy()
                    moved[k] += step
                    moves.append((k, moved))
        with torch.no_grad():
            mean = self.score.mean(_t01(np.array([best] + [m for _, m in moves]))).numpy()
        drops: dict[int, list[float]] = {}
        for (k, _), m in zip(moves, mean[1:]):
            drops.setdefault(k, []).append(float(mean[0] - m))
        return {k: float(np.mean(d)) for k, d in drops.items()}

    def _on_lines(self, point: np.ndarray) -> int:
        """How many points observed or in flight have ``point``'s choices and settings but for one numeric
        parameter, moved at least PROBE_RADIUS."""
        return sum(
            self._moved_along(point, j, PROBE_RADIUS, same_choices=True)
            for j in np.flatnonzero(~self.space.categorical_mask()).tolist()
        )

    def _coordinate_probe(self, taken: set[Key], rng: np.random.Generator) -> Suggestion | None:
        """The best's settings with one numeric parameter moved out of the best's basin along it (at least a
        score-GP lengthscale away, see _near), if no such point was tried: the parameter and value of highest
        expected improvement, or None. Hyperparameters often act apart from one another, and one left in the
        wrong basin of its range is a local optimum no small step leaves and a restart elsewhere (every
        parameter moved) rarely repairs. A parameter whose lengthscale is longer than its range has no second
        basin the model can see: it is not probed. One whose lengthscale is shorter may: its move is capped at
        REACH_SHARE of the way to the far end of its range, so a lengthscale of more than half the range still
        leaves it somewhere to go. A parameter is probed again when its first move fell short of a lengthscale
        that grew since, never more than twice. Styblinski-Tang-8 (80 trials, 16 seeds) left 10 seeds with one
        parameter in its poorer basin (regret 15); with the uncapped probes 2 on one machine, 5 on another; capped,
        and with the endgame's probes (see _endgame_probe), 0 there (3 of 32 against 12).
        In the endgame, once every parameter was tried so and unless an escape is climbing another basin (on
        Hartmann-6 such a climb, 0.29 from the optimum, lost its last trials to these probes), each is moved once
        more, less far: between half a lengthscale (at least NEAR_MIN) and the reach, where a ripple's next well
        may lie (Levy-5's stuck seeds had parameters one well, about 0.6 of the fitted lengthscale, from the
        optimum's). Not before the endgame: there these probes delayed the escape, and Hartmann-6 left 6 of 16
        seeds in its local basin against 4."""
        best = self.data.x[self.best_index]
        grid = _line_grid(rng)
        lengthscale = self.score.lengthscale.numpy() * ESCAPE_LENGTHSCALES  # in the GP's [0, 1] units
        numeric = np.flatnonzero(~self.space.categorical_mask()).tolist()
        reach = np.maximum(LINE_MIN, 2 * lengthscale)  # [-1, 1] units
        # A lengthscale longer than half the range leaves no room for a move beyond it; one up to the whole range
        # may still hide a second basin on the far side, which a shorter move reaches. Longer: no second basin.
        reach = np.where(reach <= 2.0, np.minimum(reach, REACH_SHARE * (1 + np.abs(best))), reach)
        cands = []
        for j in numeric:
            # Tried: moved out of its basin, or moved twice (lengthscales drift: the basin's reach with them).
            if not self._moved_along(best, j, reach[j]) and self._moved_along(best, j, LINE_MIN) < 2:
                cands.append(_along(best, j, grid[np.abs(grid - best[j]) >= reach[j]]))
        endgame = self._endgame_left() is not None and not self._escape_climbing()  # an escape's climb goes first
        if sum(len(c) for c in cands) == 0 and endgame:  # one nearer move each, at last
            near = np.maximum(NEAR_MIN, lengthscale)  # half a lengthscale in [-1, 1] units
            for j in numeric:
                in_band = self._moved_along(best, j, near[j]) - self._moved_along(best, j, reach[j])
                if near[j] < reach[j] <= 2.0 and not in_band:
                    dist = np.abs(grid - best[j])
                    cands.append(_along(best, j, grid[(dist >= near[j]) & (dist < reach[j])]))
            return self._probe(cands, taken, "the best's settings with one parameter moved a little")
        return self._probe(cands, taken, "the best's settings with one parameter moved")

    def _edge_probe(
        self, point: np.ndarray, basins: list[np.ndarray], taken: set[Key], rng: np.random.Generator
    ) -> Suggestion | None:
        """The escape's best ``point`` with one numeric parameter that sits at an end of its range moved inward
        (between NEAR_MIN and EDGE_REACH), if no such point was tried: the value of highest expected improvement
        under the escape model, or None. An escape model fit on a few scattered points pushes its first steps into
        the corners of the space, and a parameter that reached an end there stays: the points the climb then
        observes all have it there, so the model never learns that moving it inward pays. Hartmann-6's stuck seeds
        climbed towards the global basin for 20 trials or more with one or two parameters at 0, where its optimum
        has them at 0.15 and 0.28. A parameter the converged best has at the same end is not moved: two climbs
        ending there say the optimum is at that edge (Styblinski-Tang-4's, near its lower ends, lost 2 of 16
        seeds to such probes)."""
        grid = _line_grid(rng)
        best = self.data.x[self.best_index]
        cands = []
        for j in np.flatnonzero(~self.space.categorical_mask()).tolist():
            at_end = abs(point[j]) >= 1 - 1e-9
            if at_end and best[j] != point[j] and not self._moved_along(point, j, NEAR_MIN):
                dist = np.abs(grid - point[j])
                cands.append(_along(point, j, grid[(dist >= NEAR_MIN) & (dist <= EDGE_REACH)]))
        what = "the escape's best with a parameter at an end of its range moved inward"
        return self._probe(cands, taken, what, basins)

    def _probe(
        self, parts: list[np.ndarray], taken: set[Key], what: str, basins: list[np.ndarray] | None = None
    ) -> Suggestion | None:
        """The untaken candidate (of any of the ``parts``, outside the ``basins`` if given) of highest acquisition,
        as an escape step saying ``what`` it tries, or None."""
        cands = np.vstack([np.empty((0, self.space.dim)), *parts])
        if not len(cands):
            return None
        cands = self._snap(cands)
        values, log_cost = self._rank(*self._scored(cands, basins))
        for j in np.argsort(-values, kind="stable"):
            params = self.space.decode(cands[j])
            if param_key(params) in taken or values[j] == -np.inf:
                continue
            info = self._info(cands[j], float(values[j]), float(log_cost[j]))
            info["escape"] = f"no improvement in {self.stalled} trials: {what}"
            return Suggestion(params, info)
        return None

    def _moved_along(self, point: np.ndarray, j: int, reach: float, same_choices: bool = False) -> int:
        """How many points observed or in flight have ``point``'s settings (within PROBE_RADIUS * sqrt(d)) but for
        coordinate ``j``, moved at least ``reach``."""
        rest = np.ones(self.space.dim, dtype=bool)
        rest[j] = False
        radius = PROBE_RADIUS * math.sqrt(max(1, int(rest.sum())))
        close = np.linalg.norm((self.x - point)[:, rest], axis=1) < radius
        if same_choices:
            close &= self._same_choices(self.x, point)
        return int((close & (np.abs(self.x[:, j] - point[j]) >= reach)).sum())

    def _tried_at(self, point: np.ndarray) -> bool:
        """Whether a point observed or in flight was tried at ``point`` (see _at_settings)."""
        return bool(self._at_settings(self.x, point).any())

    def _at_settings(self, x: np.ndarray, point: np.ndarray) -> np.ndarray:
        """Which points of ``x`` have ``point``'s choices and numeric settings within PROBE_RADIUS * sqrt(d) of it
        (in [-1, 1] units)."""
        cat = self.space.categorical_mask()
        radius = PROBE_RADIUS * math.sqrt(max(1, int((~cat).sum())))
        close = np.linalg.norm((x - point)[:, ~cat], axis=1) < radius
        return np.asarray(close & self._same_choices(x, point))

    def _far_from_data(self, pool: np.ndarray, basins: list[np.ndarray], taken: set[Key]) -> Suggestion | None:
        """The candidate outside the basin farthest from every point observed or in flight (TuRBO's fresh design
        for a restart, one point at a time), or None if the basin covers every candidate."""
        out = pool[~self._in_basin(pool, basins)]
        gap = np.min(np.linalg.norm(out[:, None, :] - self.x[None, :, :], axis=2), axis=1)
        for j in np.argsort(-gap, kind="stable"):
            params = self.space.decode(out[j])
            if param_key(params) not in taken:
                info = {
                    "source": "escape",
                    "escape": f"no improvement in {self.stalled} trials: a point far from "
                    "the data, outside the best's basin",
                }
                return Suggestion(params, info)
        return None

    def _in_basin(self, x: np.ndarray, basins: list[np.ndarray]) -> np.ndarray:
        """Which points of ``x`` lie in one of the basins, each given by its points (its best first): within a
        ball of ESCAPE_RADIUS * sqrt(d) around its best, or near any of its points (see _near)."""
        cat = self.space.categorical_mask()
        radius = ESCAPE_RADIUS * math.sqrt(max(1, int((~cat).sum())))
        out = np.zeros(len(x), dtype=bool)
        for basin in basins:
            ball = np.linalg.norm((x - basin[0])[:, ~cat], axis=1) < radius
            out |= (ball & self._same_choices(x, basin[0])) | self._near(x, basin)
        return out

    def _near(self, x: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Which points of ``x`` lie within ESCAPE_LENGTHSCALES of the score GP's lengthscales of one of
        ``points`` (a basin long along a coordinate reaches far along it) in the numeric coordinates, with the
        same choice of every categorical (another choice is another basin, however near its code)."""
        cat = self.space.categorical_mask()
        ls = 2 * self.score.lengthscale.numpy()[~cat]  # in [-1, 1] units
        out = np.zeros(len(x), dtype=bool)
        for p in points:
            close = np.linalg.norm((x - p)[:, ~cat] / ls, axis=1) < ESCAPE_LENGTHSCALES
            out |= close & self._same_choices(x, p)
        return out

    def _same_choices(self, x: np.ndarray, point: np.ndarray) -> np.ndarray:
        """Which points of ``x`` have every categorical at ``point``'s choice."""
        cat = self.space.categorical_mask()
        return np.asarray(np.all(np.isclose(x[:, cat], point[cat]), axis=1))

    def _scored(self, x: np.ndarray, basins: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Acquisition values (-inf inside the basins being escaped) and log costs at points ``x``, each point on
        its own: the pool's serve again when the refined points join it."""
        with torch.no_grad():
            values_t, log_cost_t = self._acq(torch.as_tensor(x, dtype=gp.DTYPE))
        values, log_cost = values_t.numpy(), log_cost_t.numpy()
        if basins is not None:
            values = np.where(self._in_basin(x, basins), -np.inf, values)
        return values, log_cost

    def _rank(self, values: np.ndarray, log_cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values for ranking candidates scored by _scored: -inf when predicted over max_suggestion_cost (the
        cheapest first when nothing is affordable); and their log costs."""
        too_dear = log_cost > math.log(self.p.settings.max_suggestion_cost)
        if too_dear.all():  # nothing affordable: the cheapest, rather than nothing
            return -log_cost, log_cost
        return np.where(too_dear, -np.inf, values), log_cost

    def _refine(self, starts: np.ndarray) -> np.ndarray:
        """Local search on the acquisition from each start, as Optuna's GPSampler does on mixed spaces: gradient
        steps on the numeric coordinates with every categorical held fixed (the kernel has no gradient along a
        choice), then each categorical tried at every choice in turn; the points whose choice changed climb again.
        """
        x = self._climb(starts)
        cat = np.flatnonzero(self.space.categorical_mask())
        for _ in range(2):
            switched = self._best_choices(x, cat)
            changed = np.any(switched != x, axis=1)
            if not changed.any():
                break
            x = switched
            x[changed] = self._climb(x[changed])
        return x

    def _best_choices(self, x: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Each point with each categorical, one after another, set to the choice of highest acquisition (the
        current one kept on ties)."""
        x = x.copy()
        rows = np.arange(len(x))
        for j in cat:
            k = self.space.choice_counts()[j]
            codes = choice_code(np.arange(k), k)
            trial = np.repeat(x[None], k, axis=0)  # (k, b, d): every point at every choice
            trial[:, :, j] = codes[:, None]
            with torch.no_grad():
                values = self._acq(torch.as_tensor(trial.reshape(-1, x.shape[1]), dtype=gp.DTYPE))[0]
            values_kb = values.numpy().reshape(k, len(x))
            current = choice_index(x[:, j], k)
            best = values_kb.argmax(0)
            x[:, j] = np.where(values_kb[best, rows] > values_kb[current, rows], codes[best], x[:, j])
        return x

    def _climb(self, starts: np.ndarray) -> np.ndarray:
        """Multi-start L-BFGS-B on the acquisition, all starts in one problem (they do not interact), categorical
        coordinates fixed.

        Optimized in units of the kernel's lengthscales (as Optuna's GPSampler does): the acquisition is then
        about equally curved in every direction, and L-BFGS-B converges in far fewer steps.
        """
        shape = starts.shape
        ls = 2 * self.acq_score.lengthscale.numpy()  # in [-1, 1] units
        z0 = (starts / ls).ravel()
        fixed = np.tile(self.space.categorical_mask(), shape[0])
        lo = np.where(fixed, z0, np.tile(-1 / ls, shape[0]))
        hi = np.where(fixed, z0, np.tile(1 / ls, shape[0]))

        def f(z: np.ndarray) -> tuple[float, np.ndarray]:
            xt = torch.as_tensor(z.reshape(shape) * ls, dtype=gp.DTYPE).requires_grad_(True)
            loss = -self._acq(xt)[0].sum()
            loss.backward()  # type: ignore[no-untyped-call]  # torch's backward is untyped
            return float(loss.detach()), (xt.grad.numpy() * ls).ravel()  # type: ignore[union-attr]

        res = minimize(f, z0, jac=True, method="L-BFGS-B", bounds=list(zip(lo, hi)), options={"maxiter": 200})
        x = np.clip(res.x.reshape(shape) * ls, -1, 1)
        x[:, fixed[: shape[1]]] = starts[:, fixed[: shape[1]]]  # exactly the codes they started with
        return np.asarray(x)

    def _info(self, x: np.ndarray, acq: float, log_cost: float) -> dict[str, Any]:
        with torch.no_grad():
            m, v = self.score(_t01(x[None]))
        w, dw = float(m[0]) * self.y_std + self.y_mean, math.sqrt(float(v[0])) * self.y_std
        mean = self.warp.inverse(w)
        std = abs(self.warp.inverse(w + dw) - self.warp.inverse(w - dw)) / 2  # one std, on the user's scale
        return {
            "source": "bayes",
            "predicted_score": self.p.sign * mean,
            "predicted_score_std": std,
            "predicted_cost": math.exp(log_cost),
            "acquisition": acq,
            "cost_target": self.target if self.cost is not None else None,
            "fit_observations": int(len(self.x) - len(self.pending_x)),
            "score_warp": self.warp.name,
        }


@functools.cache
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()  # finding the loaded BLAS libraries costs milliseconds: once per process


@contextmanager
def one_thread() -> Iterator[None]:
    # Many small tensor ops: with several intra-op threads they fight each other (and the other jobs on the
    # machine) and a fit gets ~10x slower. One thread is also what makes the arithmetic reproducible.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _threadpools().limit(limits=1):  # OpenBLAS under scipy's L-BFGS-B has the same problem
            yield
    finally:
        torch.set_num_threads(before)


def _stalled(y: np.ndarray, span: float | None = None) -> int:
    """How many scores (in order, higher is better) came after the last one that improved on the best by more
    than a thousandth of their range (or of ``span``): steps of 1e-4 on a converged local optimum are not
    progress."""
    tol = 1e-3 * (float(y.max() - y.min()) if span is None else span)
    best, last = -np.inf, 0
    for i, v in enumerate(y):
        if v > best + tol:
            last = i
        best = max(best, v)
    return len(y) - 1 - last


def _line_grid(rng: np.random.Generator) -> np.ndarray:
    """LINE_POINTS values spread over [-1, 1], one at random in each of as many equal parts."""
    return (np.arange(LINE_POINTS) + rng.uniform(0, 1, LINE_POINTS)) / LINE_POINTS * 2 - 1


def _along(point: np.ndarray, j: int, values: np.ndarray) -> np.ndarray:
    """``point`` with coordinate ``j`` set to each of ``values`` in turn."""
    moved = np.repeat(point[None], len(values), axis=0)
    moved[:, j] = values
    return moved


def _cost_weight(c_norm: torch.Tensor, target: float) -> torch.Tensor:
    """The seed's preference for a trial near the random cost target (log costs normalized to the observed
    range): 1 minus the distance to the target, at least MIN_COST_WEIGHT. The distance is rounded off within
    COST_WEIGHT_ROUNDING of the target: with the kink of a plain absolute value the acquisition's gradient
    steps zigzagged across it, and a cost-aware climb took twice the L-BFGS evaluations of a plain one."""
    distance = ((target - c_norm) ** 2 + COST_WEIGHT_ROUNDING**2).sqrt()
    return (1 - distance).clamp_min(MIN_COST_WEIGHT)


def _in_boxes(centers: np.ndarray, half_widths: np.ndarray, per: int, rng: np.random.Generator) -> np.ndarray:
    """``per`` uniform points in each box center +- half_width, the box cut to [-1, 1] (no pile-up on edges)."""
    lo = np.maximum(-1.0, centers - half_widths)
    hi = np.minimum(1.0, centers + half_widths)
    u = rng.uniform(0, 1, (len(centers), per, centers.shape[1]))
    return np.asarray((lo[:, None] + u * (hi - lo)[:, None]).reshape(-1, centers.shape[1]))


def _t01(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor((np.asarray(x) + 1.0) / 2.0, dtype=gp.DTYPE)
