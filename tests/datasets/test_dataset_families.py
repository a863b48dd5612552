"""Parametric likelihood families of the 000 data sets: shapes, restarts, ground truth."""

from __future__ import annotations

import pytest
import torch
from common import assert_close

from pyro_vae.datasets import get_dataset

FAMILIES = [("linear_jte", {}), ("cubic_jte", {}), ("gaussian", {}), ("case1", {}), ("case1", {"theta": 0.0}),
            ("case2", {}), ("case2", {"b_diag": (0.001, 0.008)})]
R = 3


@pytest.mark.parametrize("name, params", FAMILIES)
def test_ground_truth_reproduces_the_process(name, params):
    ds = get_dataset(name, **params)
    z = torch.randn(10, ds.latent_dim)
    for restarts in (None, R):
        fam = ds.decoder_family(num_restarts=restarts)
        assert isinstance(fam, torch.nn.Module)
        before = fam(z).detach()
        fam.set_ground_truth()
        loc = fam(z)
        if restarts is None:
            assert loc.shape == (10, ds.obs_dim)
            assert_close(loc, ds.f(z), atol=1e-5, rtol=1e-5, msg=name)
            assert_close(fam.noise_var(), ds.obs_noise_var(), atol=1e-7, rtol=1e-5, msg=name)
        else:
            assert loc.shape == (R, 10, ds.obs_dim)
            assert fam.noise_var().shape == (R, 1, ds.obs_dim)
            for r in range(R):
                assert_close(loc[r], ds.f(z), atol=1e-5, rtol=1e-5, msg=f"{name} restart {r}")
                assert_close(fam.noise_var()[r, 0], ds.obs_noise_var(), atol=1e-7, rtol=1e-5, msg=name)
            # random initialisations differ between restarts
            assert not torch.allclose(before[0], before[1])


@pytest.mark.parametrize("name, params", FAMILIES)
def test_broadcasting_and_gradients(name, params):
    ds = get_dataset(name, **params)
    fam = ds.decoder_family(num_restarts=R)
    z = torch.randn(5, R, 7, ds.latent_dim)  # (particles, restarts, N, K)
    loc = fam(z)
    assert loc.shape == (5, R, 7, ds.obs_dim)
    x = torch.randn(7, ds.obs_dim)
    log_lik = torch.distributions.Normal(loc, fam.noise_var().sqrt()).log_prob(x).sum()
    grads = torch.autograd.grad(log_lik, [p for p in fam.parameters()])
    assert grads and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    for p in fam.parameters():
        assert p.shape[0] == R


@pytest.mark.parametrize("name, params", FAMILIES)
def test_initialisation_follows_global_seed(name, params):
    ds = get_dataset(name, **params)
    torch.manual_seed(5)
    a = [p.detach().clone() for p in ds.decoder_family(R).parameters()]
    torch.manual_seed(5)
    b = [p.detach().clone() for p in ds.decoder_family(R).parameters()]
    torch.manual_seed(6)
    c = [p.detach().clone() for p in ds.decoder_family(R).parameters()]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


def test_case1_theta_stays_valid():
    ds = get_dataset("case1", theta=0.05, sigma2=0.01)
    fam = ds.decoder_family(R)
    with torch.no_grad():
        fam.raw_theta.copy_(torch.tensor([-40.0, 0.3, 40.0]).view(R, 1, 1))
    theta, noise = fam.theta().flatten(), fam.noise_var().flatten()
    assert (theta.abs() <= 0.1).all() and (noise > 0).all() and (noise <= 0.01).all()
    assert_close(noise[1], 0.01 - theta[1] ** 2, rtol=1e-6)


def test_case2_b_stays_valid():
    ds = get_dataset("case2")
    fam = ds.decoder_family(R)
    with torch.no_grad():
        fam.raw_b.copy_(torch.tensor([[-50.0, 50.0], [0.0, 0.0], [3.0, -3.0]]))
    b, noise = fam.b_diag(), fam.noise_var()
    assert ((b >= 0) & (b <= 0.01)).all() and (noise > 0).all()
    assert_close(noise[1, 0], [0.005, 0.005], rtol=1e-6)
    assert torch.isfinite(fam(torch.randn(4, 2))).all()


def test_families_learn_the_papers_parameter():
    """Each family frees θ of its paper and fixes the rest."""
    jte = get_dataset("linear_jte").decoder_family()
    assert [n for n, _ in jte.named_parameters()] == ["A"] and jte.A.shape == (2, 2)
    assert [n for n, _ in get_dataset("case2").decoder_family().named_parameters()] == ["raw_b"]
    assert [n for n, _ in get_dataset("case1").decoder_family().named_parameters()] == ["raw_theta"]
    gauss = get_dataset("gaussian").decoder_family(R)
    assert gauss.A.shape == (R, 2, 4)
    assert get_dataset("cubic_jte").decoder_family().cubic


@pytest.mark.parametrize("name", ["figure8", "mobius", "floor", "variant1", "discrete_semicircle", "clusters_5d"])
def test_no_family_for_mlp_sets(name):
    assert get_dataset(name).decoder_family(num_restarts=2) is None
