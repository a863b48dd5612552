"""log p_θ(x) of the LinearJTE/CubicJTE family by the quadrature fitted to its likelihood."""

import pytest
import torch

from common import assert_close
from pyro_vae.datasets import get_dataset
from pyro_vae.metrics.cholesky_quadrature import cholesky_family_log_marginal, family_log_marginal
from pyro_vae.models import VAEModel
from pyro_vae.posterior.grid import grid_posterior


def test_linear_family_matches_the_closed_form():
    ds = get_dataset("linear_jte")
    x = ds.splits(0).test.x[:100]
    res = family_log_marginal(ds, x, nodes=51)
    assert_close(res.log_marginal, ds.marginal().log_prob(x.double()), atol=1e-10)
    assert res.max_change < 1e-10
    model = VAEModel(ds.decoder_family(), 2, 2, ds.obs_noise_var())
    for seed, scale in [(0, 0.2), (1, 0.2), (0, 1.0), (1, 1.0), (2, 1.0)]:  # near the truth, then random A
        torch.manual_seed(seed)
        with torch.no_grad():
            model.decoder.A.copy_(ds.a.float() + scale * torch.randn(2, 2))
        a = model.decoder.A.detach().double()
        cov = a @ a.T + torch.diag(model.decoder.b_diag.double()) + torch.diag(model.decoder.noise_var().double())
        want = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), cov).log_prob(x.double())
        res = family_log_marginal(model, x, nodes=51)
        err = float((res.log_marginal - want).abs().max())
        # accurate, or its refinement says it is not (x far in a poorly fitting model's tail)
        assert err < 1e-6 or res.max_change > err / 2, (seed, scale, err, res.max_change)
        if scale < 1:
            assert err < 1e-6, (seed, err)


def test_cubic_family_agrees_with_the_generic_grid_where_that_converges():
    """The z-space grid converges on about half of CubicJTE's points; there the two agree to
    1e-3 nats, and this quadrature's own refinement changes it by < 1e-2 at 51 nodes."""
    ds = get_dataset("cubic_jte")
    x = ds.splits(0).test.x[:60]
    res = family_log_marginal(ds, x)
    assert res.max_change < 1e-2
    grid = grid_posterior(ds, x, keep_density=False)
    ok = grid.converged
    assert int(ok.sum()) >= 20
    assert_close(res.log_marginal[ok], grid.log_marginal[ok].double(), atol=1e-3)
    model = VAEModel(ds.decoder_family(), 2, 2, ds.obs_noise_var())
    model.decoder.set_ground_truth()
    assert_close(family_log_marginal(model, x).log_marginal, res.log_marginal, atol=1e-5)


def test_bad_arguments_are_named():
    x = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"x of shape \(3, 3\)"):
        cholesky_family_log_marginal(x, torch.eye(3), torch.ones(3), cubic=True)
    with pytest.raises(ValueError, match="nodes=50"):
        cholesky_family_log_marginal(torch.zeros(3, 2), torch.eye(2), torch.ones(2), cubic=True, nodes=50)
    with pytest.raises(ValueError, match="source"):
        family_log_marginal(get_dataset("figure8"), torch.zeros(3, 2))
