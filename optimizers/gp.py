"""Gaussian-process surrogates for Protein: a BoTorch SingleTaskGP with priors that suit small sweeps.

Inputs live in [0, 1]^d and targets are standardized by the caller, so the models carry no transforms and can
be re-conditioned on extra points (pending trials) without refitting. The priors follow what makes Optuna's
GPSampler strong on few observations: lengthscales near the width of the box, a Matern-5/2 kernel, and a
noise floor low enough (1e-6) to exploit deterministic objectives yet a noise prior that tolerates RL noise.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from botorch.exceptions import ModelFittingError
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


def make_gp(x01: torch.Tensor, y: torch.Tensor) -> SingleTaskGP:
    """An unfitted SingleTaskGP on inputs in [0, 1]^d and standardized targets ``y`` (shape n)."""
    d = x01.shape[-1]
    kernel = ScaleKernel(
        MaternKernel(nu=2.5, ard_num_dims=d, lengthscale_prior=InverseLengthscalePrior()),
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
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    try:
        _fit(mll, maxiter)
    except ModelFittingError:
        # Near-duplicate points can make the kernel matrix singular at the tiny noise floor: retry once with a
        # floor that keeps it positive definite (deterministic, no random restarts).
        model.likelihood.noise_covar.register_constraint("raw_noise", GreaterThan(1e-4))
        model.likelihood.noise = 1e-2
        model.covar_module.base_kernel.lengthscale = 0.5
        model.covar_module.outputscale = 1.0
        _fit(mll, maxiter)
    model.eval()
    return model


def _fit(mll: ExactMarginalLogLikelihood, maxiter: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(
            mll,
            optimizer_kwargs={"options": {"maxiter": maxiter}},
            max_attempts=1,
            warning_handler=lambda w: True,
        )


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

    def set_data(self, x01: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x01, y
        with torch.no_grad():
            k = self.kernel(x01).to_dense()
            k.diagonal().add_(self.noise)
            self.chol = torch.linalg.cholesky(k + 1e-9 * torch.eye(len(y), dtype=k.dtype))
            self.alpha = torch.cholesky_solve((y - self.const).unsqueeze(-1), self.chol).squeeze(-1)

    def __call__(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance (of the latent function) at points ``x01`` (b, d)."""
        k = self.kernel(x01, self.x).to_dense()  # (b, n)
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
