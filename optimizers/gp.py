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
from typing import Any

import numpy as np
import torch
from botorch.exceptions import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.optim.utils import get_parameters
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import Kernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, Prior
from torch.distributions import Distribution
from torch.nn import Module

DTYPE = torch.float64
MIN_NOISE = 1e-6


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
    choices, each a bin of [0, 1]). Both parts are matrix products, so a posterior over many points stays cheap.
    """

    has_lengthscale = True

    def __init__(self, choices: Sequence[int], **kwargs: Any):
        super().__init__(ard_num_dims=len(choices), **kwargs)
        self.choices = [int(k) for k in choices]
        self.numeric = [i for i, k in enumerate(self.choices) if k == 0]
        self.categorical = [i for i, k in enumerate(self.choices) if k > 0]
        self._counts = torch.tensor([self.choices[i] for i in self.categorical])

    def _choice(self, x: torch.Tensor) -> torch.Tensor:
        """The choice index of each categorical coordinate of ``x`` (..., n_categorical): the bin it lies in."""
        index = (x[..., self.categorical].detach() * self._counts).floor().long()
        return torch.minimum(index, self._counts - 1)

    def _one_hot(self, x: torch.Tensor, inv_ls: torch.Tensor) -> torch.Tensor:
        """Each categorical coordinate as a one-hot vector of its choice, scaled by its 1 / lengthscale."""
        index = self._choice(x).clamp_min(0)
        parts = [
            torch.nn.functional.one_hot(index[..., j], self.choices[i]).to(x.dtype) * inv_ls[i]
            for j, i in enumerate(self.categorical)
        ]
        return torch.cat(parts, dim=-1)

    def squared_distance(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False) -> torch.Tensor:
        inv_ls: torch.Tensor = self.lengthscale.reshape(-1).reciprocal()
        if diag:
            delta = x1 - x2
            if self.categorical:
                delta = delta.clone()
                delta[..., self.categorical] = (self._choice(x1) != self._choice(x2)).to(x1.dtype)
            return ((delta * inv_ls) ** 2).sum(-1)
        r2 = torch.zeros(x1.shape[:-1] + x2.shape[-2:-1], dtype=x1.dtype)
        if self.numeric:
            num = self.numeric
            mean = x1[..., num].mean(dim=-2, keepdim=True)  # centred: less cancellation in |a|^2 + |b|^2 - 2ab
            a = (x1[..., num] - mean) * inv_ls[num]
            b = (x2[..., num] - mean) * inv_ls[num]
            r2 = r2 + (a * a).sum(-1, keepdim=True) + (b * b).sum(-1).unsqueeze(-2) - 2 * a @ b.transpose(-1, -2)
        if self.categorical:
            # Hamming part: sum over categoricals of (1 - [same choice]) / l^2.
            same = self._one_hot(x1, inv_ls) @ self._one_hot(x2, inv_ls).transpose(-1, -2)
            r2 = r2 + (inv_ls[self.categorical] ** 2).sum() - same
        return r2.clamp_min(0.0)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, **params: Any) -> torch.Tensor:
        return matern52(self.squared_distance(x1, x2, diag))


def matern52(r2: torch.Tensor) -> torch.Tensor:
    """Matern-5/2 of a squared distance; the clamp keeps the gradient finite at distance 0."""
    s = (5 * r2.clamp_min(1e-30)).sqrt()
    return (1 + s + s * s / 3) * torch.exp(-s)


def make_gp(x01: torch.Tensor, y: torch.Tensor, choices: Sequence[int] | None = None) -> SingleTaskGP:
    """An unfitted SingleTaskGP on inputs in [0, 1]^d and standardized targets ``y`` (shape n).

    ``choices[i]``: the number of choices of coordinate i if it is categorical, else 0 (default: all numeric).
    """
    d = x01.shape[-1]
    kernel = ScaleKernel(
        MixedMaternKernel(choices or [0] * d, lengthscale_prior=InverseLengthscalePrior()),
        outputscale_prior=GammaPrior(2.0, 1.0),
    )
    likelihood = GaussianLikelihood(noise_prior=GammaPrior(1.1, 30.0), noise_constraint=GreaterThan(MIN_NOISE))
    model = SingleTaskGP(x01, y.unsqueeze(-1), likelihood=likelihood, covar_module=kernel, outcome_transform=None)
    # A deterministic start (no prior sampling): same data, same fit.
    model.covar_module.base_kernel.lengthscale = 0.5
    model.covar_module.outputscale = 1.0
    model.likelihood.noise = 1e-2
    return model


def fit_gp(model: SingleTaskGP, maxiter: int = 100) -> SingleTaskGP:
    """MAP-fit the hyperparameters with L-BFGS-B, one attempt from the deterministic start.

    Bounded iterations keep the cost of a fit bounded; a fit that stops early is still a usable model.
    """
    try:
        _fit(model, maxiter)
    except (torch.linalg.LinAlgError, ModelFittingError):
        # Near-duplicate points can make the kernel matrix singular at the tiny noise floor: retry once with a
        # floor that keeps it positive definite (deterministic, no random restarts).
        model.likelihood.noise_covar.register_constraint("raw_noise", GreaterThan(1e-4))
        model.likelihood.noise = 1e-2
        model.covar_module.base_kernel.lengthscale = 0.5
        model.covar_module.outputscale = 1.0
        model.mean_module.constant = 0.0
        _fit(model, maxiter)
    model.eval()
    for parameter in model.parameters():  # fitted: from here on gradients are only taken with respect to inputs
        parameter.requires_grad_(False)
    return model


def _fit(model: SingleTaskGP, maxiter: int) -> None:
    """Maximize the same objective as gpytorch's ExactMarginalLogLikelihood (log marginal likelihood plus log
    priors, per point) with BoTorch's ``fit_gpytorch_mll``, given a closure that evaluates it on a dense kernel
    matrix: at the sizes a sweep has (at most FIT_HYPERPARAMETERS_ON points) this is several times faster than
    going through gpytorch's lazy tensors, and the result is the same MAP estimate."""
    x, y = model.train_inputs[0], model.train_targets
    n = len(y)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    params = list(get_parameters(mll, requires_grad=True).values())  # the order fit_gpytorch_mll optimizes in
    priors = list(model.named_priors())  # type: ignore[operator]  # gpytorch is untyped

    def closure() -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        for p in params:
            p.grad = None
        k = model.covar_module.outputscale * model.covar_module.base_kernel.forward(x, x)
        k = k + model.likelihood.noise.reshape(()) * torch.eye(n, dtype=DTYPE)
        chol = torch.linalg.cholesky(k)
        r = (y - model.mean_module.constant).unsqueeze(-1)
        alpha = torch.cholesky_solve(r, chol)
        value = log_marginal_likelihood(r, alpha, chol)
        for _, module, prior, prior_closure, _ in priors:
            value = value + prior.log_prob(prior_closure(module)).sum()
        loss = -value / n
        loss.backward()  # type: ignore[no-untyped-call]  # torch's backward is untyped
        return loss.detach(), [p.grad for p in params]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(
            mll,
            closure=closure,
            optimizer_kwargs={"options": {"maxiter": maxiter}},
            max_attempts=1,
            warning_handler=lambda w: True,
        )


def log_marginal_likelihood(residual: torch.Tensor, alpha: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """log N(residual; 0, K) given K's Cholesky factor and alpha = K^-1 residual (same shape as residual)."""
    n = chol.shape[-1]
    return -0.5 * (residual * alpha).sum() - chol.diagonal().log().sum() - 0.5 * n * math.log(2 * math.pi)


class Posterior:
    """The exact posterior of a fitted SingleTaskGP on a data set of our choosing, batched over points.

    GPyTorch's batched posterior re-forms the training kernel for every query point, which costs O(b n^2)
    memory for b candidates; here the Cholesky factor is computed once and each query costs O(n) kernel
    entries plus a triangular solve. The same fitted hyperparameters serve larger data (the full bounded
    subset) and pending points (fantasies) without a refit.
    """

    def __init__(self, model: SingleTaskGP, x01: torch.Tensor, y: torch.Tensor):
        self.kernel = model.covar_module
        self.const = model.mean_module.constant.detach().reshape(())
        self.noise = model.likelihood.noise.detach().reshape(())
        self.outputscale = self.kernel.outputscale.detach().reshape(())
        self.set_data(x01, y)

    def _k(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # The kernel's forward on dense tensors: gpytorch's lazy evaluation costs more than the arithmetic here.
        k: torch.Tensor = self.outputscale * self.kernel.base_kernel.forward(a, b)
        return k

    def set_data(self, x01: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x01, y
        with torch.no_grad():
            k = self._k(x01, x01)
            k.diagonal().add_(self.noise)
            self.chol = torch.linalg.cholesky(k + 1e-9 * torch.eye(len(y), dtype=k.dtype))
            self.alpha = torch.cholesky_solve((y - self.const).unsqueeze(-1), self.chol).squeeze(-1)

    def log_evidence(self) -> float:
        """The log marginal likelihood of the data under the fitted hyperparameters."""
        return float(log_marginal_likelihood(self.y - self.const, self.alpha, self.chol))

    def __call__(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance (of the latent function) at points ``x01`` (b, d)."""
        k = self._k(x01, self.x)  # (b, n)
        mean = self.const + k @ self.alpha
        v = torch.linalg.solve_triangular(self.chol, k.T, upper=False)  # (n, b)
        var = (self.outputscale - (v * v).sum(0)).clamp_min(1e-12)
        return mean, var


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
