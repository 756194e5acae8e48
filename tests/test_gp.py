"""Protein's GP in plain torch against the BoTorch / gpytorch model it computes (make_gp, fit_gp)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gpytorch.kernels import MaternKernel

from optimizers import gp

CHOICES = {"numeric": [0, 0, 0], "mixed": [0, 4, 0, 3]}


def _data(choices: list[int], n: int = 25, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.uniform(0, 1, (n, len(choices))))
    y = torch.sin(6 * x[:, 0]) + x[:, 1] ** 2 - 0.5 * (x[:, -1] > 0.5) + 0.05 * torch.as_tensor(rng.normal(size=n))
    return x, (y - y.mean()) / y.std()


@pytest.mark.parametrize("choices", CHOICES.values(), ids=CHOICES.keys())
def test_fit_lands_on_botorchs_map_estimate_with_categoricals_too(choices: list[int]) -> None:
    # Same objective, raw parameters, start and L-BFGS-B as fit_gpytorch_mll on ExactMarginalLogLikelihood: the
    # same iterates up to rounding, so the same estimate far tighter than the data could tell apart.
    x, y = _data(choices)
    ours = gp.fit(x, y, choices)
    reference = gp.Hyperparameters.of(gp.fit_gp(gp.make_gp(x, y, choices)))
    assert torch.allclose(ours.lengthscale, reference.lengthscale, rtol=1e-4)
    for a, b in [
        (ours.outputscale, reference.outputscale),
        (ours.noise, reference.noise),
        (ours.constant, reference.constant),
    ]:
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
    assert ours.lengthscale.ne(gp.START_LENGTHSCALE).all()  # it did move from the start


@pytest.mark.parametrize("choices", CHOICES.values(), ids=CHOICES.keys())
def test_the_fits_closed_form_gradient_is_autograds_of_the_objective(choices: list[int]) -> None:
    # The fit steps on value_and_grad (closed form); the objective's definition is the torch function. Far from the
    # start too: short and long lengthscales, noise at its floor, a mean away from the data.
    x, y = _data(choices)
    objective = gp.FitObjective(x, y, choices)
    rng = np.random.default_rng(0)
    for scale in (0.5, 3.0):
        raw = torch.as_tensor(rng.normal(0, scale, 3 + len(choices)))
        raw[0] = -8.0 if scale > 1 else raw[0]
        leaf = raw.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(objective(leaf), leaf)
        value, grad = objective.value_and_grad(raw.numpy())
        assert value == pytest.approx(float(objective(raw)), rel=1e-12)
        assert np.allclose(grad, expected.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("choices", CHOICES.values(), ids=CHOICES.keys())
def test_posterior_and_its_gradient_are_gpytorchs(choices: list[int]) -> None:
    x, y = _data(choices)
    model = gp.fit_gp(gp.make_gp(x, y, choices))
    posterior = gp.Posterior(gp.Hyperparameters.of(model), x, y)
    q = torch.as_tensor(np.random.default_rng(2).uniform(0, 1, (7, len(choices)))).requires_grad_(True)
    reference = model.posterior(q)
    mean, var = posterior(q)
    assert torch.allclose(mean, reference.mean.squeeze(-1), atol=1e-6)
    assert torch.allclose(var, reference.variance.squeeze(-1), atol=1e-6)
    assert torch.allclose(posterior.mean(q), mean)
    (d_mean,) = torch.autograd.grad(mean.sum(), q, retain_graph=True)
    (d_var,) = torch.autograd.grad(var.sum(), q)
    (d_mean_ref,) = torch.autograd.grad(reference.mean.sum(), q, retain_graph=True)
    (d_var_ref,) = torch.autograd.grad(reference.variance.sum(), q)
    assert torch.allclose(d_mean, d_mean_ref, atol=1e-5) and torch.allclose(d_var, d_var_ref, atol=1e-5)
    categorical = [i for i, k in enumerate(choices) if k]
    assert not d_mean[:, categorical].any()  # a choice has no gradient
    # The evidence the warps are compared by: gpytorch's marginal likelihood of the data (its total, not per point).
    model.train()
    mll = model.likelihood(model(x)).log_prob(y)
    assert posterior.log_evidence() == pytest.approx(float(mll.detach()), rel=1e-6)


def test_the_plain_kernel_is_the_gpytorch_kernel_class() -> None:
    # Coordinate 1 is a categorical of 5 choices (bins of [0, 1]).
    kernel = gp.MixedMaternKernel([0, 5]).double()
    kernel.lengthscale = torch.tensor([0.2, 0.7])
    a, b = torch.rand(6, 2, dtype=gp.DTYPE), torch.rand(4, 2, dtype=gp.DTYPE)
    hyper = gp.Hyperparameters(torch.tensor([0.2, 0.7], dtype=gp.DTYPE), 1.3, 0.01, 0.0, (0, 5))
    posterior = gp.Posterior(hyper, b, torch.zeros(4, dtype=gp.DTYPE))
    assert torch.allclose(posterior._k(a), 1.3 * kernel(a, b).to_dense())
    # A categorical's distance is 0 for the same choice and 1 for any other, however far apart the codes.
    x = torch.tensor([[0.5, 0.05], [0.5, 0.15], [0.5, 0.3], [0.5, 0.9]], dtype=gp.DTYPE)
    kernel.lengthscale = torch.tensor([0.2, 1.0])
    r2 = kernel.squared_distance(x, x).detach()
    assert r2[0, 1] == 0
    assert torch.allclose(r2[0, 2:], torch.ones(2, dtype=gp.DTYPE))
    assert torch.allclose(kernel.squared_distance(x[:1], x[2:3], diag=True).detach(), r2[0, 2])
    # The numeric part is an ordinary Matern-5/2: the same as gpytorch's on a purely numeric space.
    numeric = gp.MixedMaternKernel([0, 0]).double()
    reference = MaternKernel(nu=2.5, ard_num_dims=2).double()
    numeric.lengthscale = reference.lengthscale = torch.tensor([0.3, 0.7])
    assert torch.allclose(numeric(a, b).to_dense(), reference(a, b).to_dense())


def test_matern_gradient_is_autograds_of_the_formula_and_finite_at_distance_zero() -> None:
    r2 = torch.tensor([0.0, 1e-8, 0.3, 2.0, 40.0], dtype=gp.DTYPE, requires_grad=True)
    (ours,) = torch.autograd.grad(gp.matern52(r2).sum(), r2)
    r2_pos = r2.detach()[1:].clone().requires_grad_(True)
    s = (5 * r2_pos).sqrt()
    (expected,) = torch.autograd.grad(((1 + s + s * s / 3) * torch.exp(-s)).sum(), r2_pos)
    assert torch.allclose(ours[1:], expected)
    assert ours[0] == pytest.approx(-5 / 6)


@pytest.mark.parametrize("choices", CHOICES.values(), ids=CHOICES.keys())
def test_a_fixed_mean_is_botorchs_fit_with_the_constant_frozen(choices: list[int]) -> None:
    # Protein holds the score GP's prior mean at the worst score (see protein_model.Model._fit): the fit must be
    # BoTorch's with the constant excluded from the optimization, and keep it exactly.
    x, y = _data(choices)
    worst = float(y.min())
    ours = gp.fit(x, y, choices, constant=worst)
    reference = gp.Hyperparameters.of(gp.fit_gp(gp.make_gp(x, y, choices, constant=worst)))
    assert ours.constant == worst  # exactly: L-BFGS-B never moves a coordinate whose bounds meet
    assert reference.constant == pytest.approx(worst, abs=1e-6)
    assert torch.allclose(ours.lengthscale, reference.lengthscale, rtol=1e-4)
    assert ours.outputscale == pytest.approx(reference.outputscale, rel=1e-4)
    assert ours.noise == pytest.approx(reference.noise, rel=1e-4, abs=1e-6)
    # Far from every observation the posterior mean falls back to it: unexplored space is not presumed average.
    far = torch.full((1, len(choices)), 0.5)
    far[0, 0] = 40.0  # far outside the box along a numeric coordinate
    assert float(gp.Posterior(ours, x, y).mean(far)) == pytest.approx(worst, abs=1e-6)
