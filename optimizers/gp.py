"""Gaussian-process surrogates for Protein: a BoTorch SingleTaskGP with priors that suit small sweeps.

Inputs live in [0, 1]^d and targets are standardized by the caller, so the models carry no transforms and can
be re-conditioned on extra points (pending trials) without refitting. The priors follow what makes Optuna's
GPSampler strong on few observations: lengthscales near the width of the box, a Matern-5/2 kernel, and a
noise floor low enough (1e-6) to exploit deterministic objectives yet a noise prior that tolerates RL noise.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, Prior
from torch.distributions import Distribution
from torch.nn import Module

DTYPE = torch.float64
MIN_NOISE = 1e-6


class InverseLengthscalePrior(Prior):
    """Optuna's heuristic prior on 1/l^2: log p = -(0.1 / lam + 0.1 * lam), a wide bump around l = 1."""

    def __init__(self) -> None:
        Module.__init__(self)
        Distribution.__init__(self, validate_args=False)
        self._transform = None

    def log_prob(self, lengthscale: torch.Tensor) -> torch.Tensor:
        lam = lengthscale.pow(-2)
        return -(0.1 / lam + 0.1 * lam)

    def expand(self, batch_shape):  # pragma: no cover - required by the interface, never batched here
        return self


def make_gp(x01: torch.Tensor, y: torch.Tensor) -> SingleTaskGP:
    """An unfitted SingleTaskGP on inputs in [0, 1]^d and standardized targets ``y`` (shape n)."""
    d = x01.shape[-1]
    kernel = ScaleKernel(
        MaternKernel(nu=2.5, ard_num_dims=d, lengthscale_prior=InverseLengthscalePrior()),
        outputscale_prior=GammaPrior(2.0, 1.0),
    )
    likelihood = GaussianLikelihood(noise_prior=GammaPrior(1.1, 30.0), noise_constraint=GreaterThan(MIN_NOISE))
    model = SingleTaskGP(
        x01, y.unsqueeze(-1), likelihood=likelihood, covar_module=kernel, outcome_transform=None
    )
    # A deterministic start (no prior sampling): same data, same fit.
    model.covar_module.base_kernel.lengthscale = 0.5
    model.covar_module.outputscale = 1.0
    model.likelihood.noise = 1e-2
    return model


def fit_gp(model: SingleTaskGP, maxiter: int = 150) -> SingleTaskGP:
    """MAP-fit the hyperparameters with L-BFGS-B, one attempt from the deterministic start.

    Bounded iterations keep the cost of a fit bounded; a fit that stops early is still a usable model.
    """
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(
            mll,
            optimizer_kwargs={"options": {"maxiter": maxiter}},
            max_attempts=1,
            warning_handler=lambda w: True,
        )
    model.eval()
    return model


def condition(model: SingleTaskGP, x01: torch.Tensor, y: torch.Tensor) -> SingleTaskGP:
    """Point a fitted model at another data set, keeping its hyperparameters (no refit)."""
    model.set_train_data(inputs=x01, targets=y, strict=False)
    # SingleTaskGP keeps its own copies for the posterior's bookkeeping.
    model.train_inputs = (x01,)
    model.train_targets = y
    model.eval()
    return model


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
