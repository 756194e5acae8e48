"""Gaussian-process surrogates for Protein: a BoTorch SingleTaskGP with priors that suit small sweeps.

Inputs live in [0, 1]^d and targets are standardized by the caller, so the models carry no transforms and can
be re-conditioned on extra points (pending trials) without refitting. The priors follow what makes Optuna's
GPSampler strong on few observations: lengthscales near the width of the box, a Matern-5/2 kernel, and a
noise floor low enough (1e-6) to exploit deterministic objectives yet a noise prior that tolerates RL noise.

A categorical parameter is not an ordered coordinate: its kernel distance is 0 for the same choice and 1 for any
other (a Hamming distance, as in Optuna's GPSampler and BoTorch's MixedSingleTaskGP), with its own lengthscale,
and enters the Matern-5/2 through the combined scaled distance. Its coordinate in [0, 1] only names the choice
(bin ``floor(x * k)`` of ``k`` equal bins), so the kernel, and the acquisition, have no gradient along it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from gpytorch.constraints import GreaterThan, Positive
from gpytorch.kernels import Kernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, Prior
from scipy.optimize import minimize
from torch.distributions import Distribution
from torch.nn import Module

DTYPE = torch.float64
MIN_NOISE = 1e-6
START_LENGTHSCALE, START_OUTPUTSCALE, START_NOISE = 0.5, 1.0, 1e-2  # the deterministic start of every fit
NOISE_PRIOR = (1.1, 30.0)  # Gamma(concentration, rate)
OUTPUTSCALE_PRIOR = (2.0, 1.0)


class InverseLengthscalePrior(Prior):  # type: ignore[misc]  # gpytorch is untyped
    """Optuna's heuristic prior on 1/l^2: log p = -(0.1 / lam + 0.1 * lam), a wide bump around l = 1."""

    def __init__(self) -> None:
        Module.__init__(self)
        Distribution.__init__(self, validate_args=False)
        self._transform = None

    def log_prob(self, lengthscale: torch.Tensor) -> torch.Tensor:
        lam = lengthscale.pow(-2)
        return -(0.1 / lam + 0.1 * lam)

    def expand(self, batch_shape: Any) -> InverseLengthscalePrior:  # pragma: no cover - never batched here
        return self  # required by the Prior interface


class MixedMaternKernel(Kernel):  # type: ignore[misc]  # gpytorch is untyped
    """Matern-5/2 on the distance sqrt(sum_i (delta_i / l_i)^2), where delta_i is x_i - x'_i for a numeric
    coordinate and [choice(x_i) != choice(x'_i)] for a categorical one (``choices[i]`` > 0: its number of
    choices, each a bin of [0, 1]): the kernel of make_gp's model, as a gpytorch module. Posterior calls the
    same functions (features, squared_distance, matern52) on fixed hyperparameters, without the module.
    """

    has_lengthscale = True

    def __init__(self, choices: Sequence[int], **kwargs: Any):
        super().__init__(ard_num_dims=len(choices), **kwargs)
        self.choices = [int(k) for k in choices]

    def squared_distance(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False) -> torch.Tensor:
        inv_ls: torch.Tensor = self.lengthscale.reshape(-1).reciprocal()
        f1, f2 = features(x1, inv_ls, self.choices), features(x2, inv_ls, self.choices)
        return ((f1 - f2) ** 2).sum(-1) if diag else squared_distance(f1, f2)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, **params: Any) -> torch.Tensor:
        return matern52(self.squared_distance(x1, x2, diag))


def features(x01: torch.Tensor, inv_lengthscale: torch.Tensor, choices: Sequence[int]) -> torch.Tensor:
    """Points (..., d) as vectors whose squared Euclidean distance is the kernel's scaled squared distance: a
    numeric coordinate times its 1 / lengthscale, a categorical one as the one-hot vector of its choice times
    1 / (lengthscale * sqrt 2). Both parts are matrix products, so a posterior over many points stays cheap."""
    categorical = [i for i, k in enumerate(choices) if k]
    if not categorical:
        return x01 * inv_lengthscale
    numeric = [i for i, k in enumerate(choices) if not k]
    parts = [x01[..., numeric] * inv_lengthscale[numeric]]
    for i in categorical:
        one_hot = torch.nn.functional.one_hot(choice_index(x01[..., i], choices[i]), choices[i]).to(x01.dtype)
        parts.append(one_hot * (inv_lengthscale[i] / math.sqrt(2)))
    return torch.cat(parts, dim=-1)


def choice_index(x01: torch.Tensor, k: int) -> torch.Tensor:
    """The choice a categorical coordinate in [0, 1] names (of ``k``): the bin it lies in. No gradient."""
    return (x01.detach() * k).floor().long().clamp(0, k - 1)


def squared_distance(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (..., n1, n2) between feature vectors (..., n1, F) and (..., n2, F)."""
    mean = f2.mean(dim=-2, keepdim=True)  # centred: less cancellation in |a|^2 + |b|^2 - 2ab
    a, b = f1 - mean, f2 - mean
    r2 = (a * a).sum(-1, keepdim=True) + (b * b).sum(-1).unsqueeze(-2) - 2 * a @ b.transpose(-1, -2)
    return r2.clamp_min(0.0)


def matern52(r2: torch.Tensor) -> torch.Tensor:
    """Matern-5/2 of a squared distance."""
    value: torch.Tensor = _Matern52.apply(r2)  # type: ignore[no-untyped-call]  # torch's apply is untyped
    return value


class _Matern52(torch.autograd.Function):
    """Matern-5/2 of a squared distance r2 as one autograd node, as Optuna's GPSampler has it: its derivative
    -5/6 (1 + s) exp(-s), s = sqrt(5 r2), is finite at r2 = 0 where autograd through the square root is not,
    and one node instead of eight saves most of the kernel's autograd overhead at the sizes a sweep has."""

    @staticmethod
    def forward(ctx: Any, r2: torch.Tensor) -> torch.Tensor:
        value, slope = matern52_and_slope(r2)
        ctx.save_for_backward(slope)
        return value

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        slope: torch.Tensor = ctx.saved_tensors[0]
        return grad * slope


def matern52_and_slope(r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Matern-5/2 of a squared distance and its derivative with respect to it, without autograd."""
    s = (5 * r2).sqrt()
    e = torch.exp(-s)
    return e * (1 + s + (5 / 3) * r2), (-5 / 6) * (1 + s) * e


def make_gp(
    x01: torch.Tensor, y: torch.Tensor, choices: Sequence[int] | None = None, constant: float | None = None
) -> SingleTaskGP:
    """An unfitted SingleTaskGP on inputs in [0, 1]^d and standardized targets ``y`` (shape n): the model Protein
    uses, as BoTorch defines it. ``fit`` finds its MAP hyperparameters and ``Posterior`` conditions it on data,
    without the modules' per-call overhead; ``fit_gp`` fits it through BoTorch, the reference they must agree with.

    ``choices[i]``: the number of choices of coordinate i if it is categorical, else 0 (default: all numeric).
    ``constant``: the prior mean, held fixed; by default it is a hyperparameter fit with the others.
    """
    d = x01.shape[-1]
    kernel = ScaleKernel(
        MixedMaternKernel(choices or [0] * d, lengthscale_prior=InverseLengthscalePrior()),
        outputscale_prior=GammaPrior(*OUTPUTSCALE_PRIOR),
    )
    likelihood = GaussianLikelihood(noise_prior=GammaPrior(*NOISE_PRIOR), noise_constraint=GreaterThan(MIN_NOISE))
    model = SingleTaskGP(x01, y.unsqueeze(-1), likelihood=likelihood, covar_module=kernel, outcome_transform=None)
    # A deterministic start (no prior sampling): same data, same fit.
    model.covar_module.base_kernel.lengthscale = START_LENGTHSCALE
    model.covar_module.outputscale = START_OUTPUTSCALE
    model.likelihood.noise = START_NOISE
    if constant is not None:
        model.mean_module.constant = constant
        model.mean_module.raw_constant.requires_grad_(False)
    return model


def fit_gp(model: SingleTaskGP, maxiter: int = 100) -> SingleTaskGP:
    """MAP-fit a make_gp model with BoTorch's ``fit_gpytorch_mll`` on gpytorch's ExactMarginalLogLikelihood, one
    attempt from its deterministic start: the definition ``fit`` computes faster."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(
            ExactMarginalLogLikelihood(model.likelihood, model),
            optimizer_kwargs={"options": {"maxiter": maxiter}},
            max_attempts=1,
            warning_handler=lambda w: True,
        )
    model.eval()
    return model


@dataclass(frozen=True)
class Hyperparameters:
    """A fitted make_gp model: ``lengthscale`` (d,) in [0, 1] units, ``choices`` as make_gp takes them."""

    lengthscale: torch.Tensor
    outputscale: float
    noise: float
    constant: float
    choices: tuple[int, ...]

    @classmethod
    def of(cls, model: SingleTaskGP) -> Hyperparameters:
        kernel = model.covar_module.base_kernel
        return cls(
            kernel.lengthscale.detach().reshape(-1).clone(),
            float(model.covar_module.outputscale.detach()),
            float(model.likelihood.noise.detach()),
            float(model.mean_module.constant.detach()),
            tuple(kernel.choices),
        )


def fit(
    x01: torch.Tensor,
    y: torch.Tensor,
    choices: Sequence[int] | None = None,
    maxiter: int = 100,
    constant: float | None = None,
) -> Hyperparameters:
    """MAP-fit the hyperparameters of make_gp's model on inputs ``x01`` (n, d) in [0, 1] and standardized targets
    ``y`` (n) as ``fit_gp`` does, as Optuna's GPSampler fits its GP: the objective of gpytorch's
    ExactMarginalLogLikelihood (log marginal likelihood plus log priors, per point; see FitObjective) as a function
    of the raw parameters BoTorch optimizes, from the same deterministic start (same data, same fit), and scipy's
    L-BFGS-B with the options fit_gpytorch_mll passes. Going through the modules costs several times more than the
    arithmetic at the sizes a sweep has (at most FIT_HYPERPARAMETERS_ON points). A kernel matrix that is not
    positive definite is a NaN value, as in BoTorch's closure: L-BFGS-B steps back. Bounded iterations keep the
    cost of a fit bounded; a fit that stops early is still a usable model. ``constant``: the prior mean held
    fixed, as make_gp's.
    """
    objective = FitObjective(x01, y, choices)
    d = x01.shape[1]
    # The raw start as gpytorch sets it: the inverse softplus of each positive value (the noise's above its
    # floor); the mean's raw value is the mean itself, 0.
    positive = Positive()
    start = positive.inverse_transform(
        torch.tensor([START_NOISE - MIN_NOISE, 1.0, START_OUTPUTSCALE] + [START_LENGTHSCALE] * d, dtype=DTYPE)
    )
    start[1] = 0.0 if constant is None else constant
    bounds: list[tuple[float | None, float | None]] = [(None, None)] * len(start)
    if constant is not None:  # a fixed mean: L-BFGS-B keeps a coordinate whose bounds meet where it starts
        bounds[1] = (constant, constant)
    raw = minimize(
        objective.value_and_grad,
        start.numpy(),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": maxiter},
    ).x
    value = positive.transform(torch.from_numpy(raw))
    return Hyperparameters(value[3:], float(value[2]), float(value[0]) + MIN_NOISE, float(raw[1]), objective.counts)


class FitObjective:
    """The negative of gpytorch's ExactMarginalLogLikelihood objective for make_gp's model (log marginal likelihood
    plus the log priors, per point) as a function of the raw parameters BoTorch optimizes, in its order: noise,
    mean, outputscale, lengthscales, each positive one the softplus of its raw value (plus the floor for the
    noise), as gpytorch's constraints have it.

    ``__call__`` is the definition, in torch (differentiable by autograd); ``value_and_grad`` is what the fit calls:
    the same value and its gradient in closed form, dL/dK = (alpha alpha^T - K^-1) / 2 pushed through the kernel by
    the chain rule. Autograd's backward pass over the same graph cost as much as the forward one, and the fits are
    most of a suggestion's time; tests hold the two gradients together.
    """

    def __init__(self, x01: torch.Tensor, y: torch.Tensor, choices: Sequence[int] | None = None):
        n, d = x01.shape
        self.n, self.y = n, y
        self.counts = tuple(int(k) for k in choices) if choices else (0,) * d
        # Per coordinate the squared difference, or [another choice] for a categorical: fixed during the fit.
        diff = x01.unsqueeze(-2) - x01.unsqueeze(-3)
        self.sqd = diff * diff
        for i, k in enumerate(self.counts):
            if k:
                c = choice_index(x01[:, i], k)
                self.sqd[:, :, i] = (c.unsqueeze(-1) != c.unsqueeze(-2)).to(DTYPE)
        self.sqd_flat = self.sqd.reshape(n * n, d)
        self.eye = torch.eye(n, dtype=DTYPE)
        (ca, ra), (cn, rn) = OUTPUTSCALE_PRIOR, NOISE_PRIOR
        self.gamma_norm = ca * math.log(ra) - math.lgamma(ca) + cn * math.log(rn) - math.lgamma(cn)  # GammaPrior's

    def _priors(self, scale: torch.Tensor, noise: torch.Tensor, inv_ls2: torch.Tensor) -> torch.Tensor:
        """The log priors: InverseLengthscalePrior's and the two Gamma priors."""
        (ca, ra), (cn, rn) = OUTPUTSCALE_PRIOR, NOISE_PRIOR
        value = -0.1 * (inv_ls2 + inv_ls2.reciprocal()).sum()
        return value + (ca - 1) * scale.log() - ra * scale + (cn - 1) * noise.log() - rn * noise + self.gamma_norm

    @staticmethod
    def _hyperparameters(raw: torch.Tensor, positive: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(noise, mean, outputscale, 1 / lengthscale^2) from the raw parameters and their softplus."""
        return positive[0] + MIN_NOISE, raw[1], positive[2], positive[3:].pow(-2)

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        noise, constant, scale, inv_ls2 = self._hyperparameters(raw, torch.nn.functional.softplus(raw))
        k = scale * matern52(self.sqd @ inv_ls2) + noise * self.eye
        value = log_marginal_likelihood(self.y - constant, torch.linalg.cholesky(k))
        return -(value + self._priors(scale, noise, inv_ls2)) / self.n

    def value_and_grad(self, raw_np: np.ndarray) -> tuple[float, np.ndarray]:
        raw = torch.from_numpy(raw_np)
        positive, dpositive = torch.nn.functional.softplus(raw), torch.sigmoid(raw)
        noise, constant, scale, inv_ls2 = self._hyperparameters(raw, positive)
        m, slope = matern52_and_slope(self.sqd @ inv_ls2)
        chol, info = torch.linalg.cholesky_ex(scale * m + noise * self.eye)
        if info.item() or not torch.isfinite(chol).all():
            return math.nan, np.full_like(raw_np, math.nan)
        residual = self.y - constant
        value = log_marginal_likelihood(residual, chol) + self._priors(scale, noise, inv_ls2)
        alpha = torch.cholesky_solve(residual.unsqueeze(-1), chol).squeeze(-1)
        w = 0.5 * (torch.outer(alpha, alpha) - torch.cholesky_inverse(chol))  # d log-likelihood / dK
        (ca, ra), (cn, rn) = OUTPUTSCALE_PRIOR, NOISE_PRIOR
        d_noise = w.diagonal().sum() + (cn - 1) / noise - rn
        d_scale = (w * m).sum() + (ca - 1) / scale - ra
        d_inv_ls2 = self.sqd_flat.T @ (scale * w * slope).reshape(-1) - 0.1 * (1 - inv_ls2.pow(-2))
        grad = torch.empty_like(raw)
        grad[0] = d_noise * dpositive[0]
        grad[1] = alpha.sum()
        grad[2] = d_scale * dpositive[2]
        grad[3:] = d_inv_ls2 * (-2 * positive[3:].pow(-3)) * dpositive[3:]
        return -float(value) / self.n, (-grad / self.n).numpy()


def log_marginal_likelihood(residual: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """log N(residual; 0, K) given K's lower Cholesky factor."""
    u = torch.linalg.solve_triangular(chol, residual.unsqueeze(-1), upper=False)
    n = chol.shape[-1]
    value: torch.Tensor = -0.5 * (u * u).sum() - chol.diagonal().log().sum() - 0.5 * n * math.log(2 * math.pi)
    return value


class Posterior:
    """The exact posterior of make_gp's model with fitted hyperparameters, on a data set of our choosing, batched
    over points, in plain torch (gradients with respect to the points by autograd).

    GPyTorch's batched posterior re-forms the training kernel for every query point, and its modules cost more
    per call than the arithmetic here; the Cholesky factor is computed once and each query costs O(n) kernel
    entries plus a triangular solve. The same fitted hyperparameters serve larger data (the full bounded subset)
    and pending points (fantasies) without a refit.
    """

    def __init__(self, hyper: Hyperparameters, x01: torch.Tensor, y: torch.Tensor):
        self.lengthscale = hyper.lengthscale
        self.inv_lengthscale = hyper.lengthscale.reciprocal()
        self.outputscale, self.noise, self.const = hyper.outputscale, hyper.noise, hyper.constant
        self.choices = hyper.choices
        self.set_data(x01, y)

    def _k(self, x01: torch.Tensor) -> torch.Tensor:
        """The kernel between points ``x01`` (b, d) and the data (b, n)."""
        f = features(x01, self.inv_lengthscale, self.choices)
        return self.outputscale * matern52(squared_distance(f, self.features))

    def set_data(self, x01: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x01, y
        self.features = features(x01, self.inv_lengthscale, self.choices)
        k = self._k(x01)
        k.diagonal().add_(self.noise + 1e-9)
        self.chol = torch.linalg.cholesky(k)
        self.alpha = torch.cholesky_solve((y - self.const).unsqueeze(-1), self.chol).squeeze(-1)

    def log_evidence(self) -> float:
        """The log marginal likelihood of the data under the fitted hyperparameters."""
        return float(log_marginal_likelihood(self.y - self.const, self.chol))

    def __call__(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance (of the latent function) at points ``x01`` (b, d)."""
        k = self._k(x01)  # (b, n)
        v = torch.linalg.solve_triangular(self.chol, k.T, upper=False)  # (n, b)
        return self.const + k @ self.alpha, (self.outputscale - (v * v).sum(0)).clamp_min(1e-12)

    def mean(self, x01: torch.Tensor) -> torch.Tensor:
        """The mean alone: O(n) per point where the variance costs O(n^2)."""
        return self.const + self._k(x01) @ self.alpha


def select_subset(x: np.ndarray, y: np.ndarray, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` observations: the best quarter, the latest quarter, and a spread.

    The best points keep the model sharp where the optimizer exploits; the latest ones keep it honest about
    where it has just been; farthest-point sampling over the rest keeps the global shape. Deterministic.
    """
    n = len(y)
    if n <= limit:
        return np.arange(n)
    k = limit // 4
    chosen = list(dict.fromkeys([*np.argsort(-y, kind="stable")[:k].tolist(), *range(n - k, n)]))
    picked = np.zeros(n, dtype=bool)
    picked[chosen] = True
    dist = np.min(((x[:, None, :] - x[picked][None, :, :]) ** 2).sum(-1), axis=1)
    while len(chosen) < limit:
        i = int(np.argmax(np.where(picked, -1.0, dist)))
        chosen.append(i)
        picked[i] = True
        dist = np.minimum(dist, ((x - x[i]) ** 2).sum(-1))
    return np.array(sorted(chosen))
