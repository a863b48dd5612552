"""The 000 processes: Cholesky construction, closed-form marginals against samples, Mobius."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from common import assert_close, assert_within_se

from pyro_vae.datasets import get_dataset

A = np.array([[0.75, 0.25], [1.5, -1.0]])
A_GAUSS = np.array([[-0.7074, 0.0995, 0.0286, 0.1240], [0.7074, 0.9948, -0.9995, 0.9920]])


@pytest.mark.parametrize("name, b", [("linear_jte", (0.006, 0.006)), ("case2", (0.006, 0.006)),
                                     ("cubic_jte", (0.006, 0.006))])
def test_cholesky_construction(name, b):
    ds = get_dataset(name)
    chol = np.linalg.cholesky(A @ A.T + np.diag(b))  # numpy's factor is lower-triangular
    assert chol[0, 1] == 0
    z = np.array([[0.3, -1.2], [2.0, 0.5], [-0.7, -0.1]])
    expected = z @ chol.T
    if name == "cubic_jte":
        expected = expected**3
    assert_close(ds.f(torch.as_tensor(z)), expected, atol=1e-12, rtol=0, msg=name)
    assert_close(ds.obs_noise_var(dtype=torch.float64), [0.004, 0.004], atol=1e-15, rtol=0)


def test_case2_noise_follows_b():
    ds = get_dataset("case2", b_diag=(0.0, 0.009))
    assert_close(ds.obs_noise_var(dtype=torch.float64), [0.01, 0.001], atol=1e-15, rtol=0)
    z = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    chol = np.linalg.cholesky(A @ A.T + np.diag([0.0, 0.009]))
    assert_close(ds.f(z), np.ones((1, 2)) @ chol.T, atol=1e-12, rtol=0)


def test_gaussian_and_case1_f():
    z = torch.tensor([[0.5, -2.0]], dtype=torch.float64)
    assert_close(get_dataset("gaussian").f(z), z.numpy() @ A_GAUSS, atol=1e-12, rtol=0)
    assert_close(get_dataset("case1", theta=0.3).f(torch.tensor([[2.0]])), [[0.6]], atol=1e-6, rtol=0)


def test_mobius_matches_complex_arithmetic():
    ds = get_dataset("mobius")
    gen = np.random.default_rng(0)
    z = gen.normal(size=(20, 2))
    w = z[:, 0] + 1j * z[:, 1]
    m = ((1 + 0j) * w + (1 + 4j)) / ((1 + 0j) * w + (7 + 4j))
    assert_close(ds.f(torch.as_tensor(z)), np.stack([m.real, m.imag], -1), atol=1e-12, rtol=0)
    assert_close(ds.f(torch.zeros(1, 2, dtype=torch.float64)), [[23 / 65, 24 / 65]], atol=1e-12, rtol=0)


def _check_moments(ds, n: int, seed: int) -> None:
    """Sample mean and covariance of x agree with ``marginal()`` within 4 standard errors."""
    x = ds.sample(n, seed=seed)[0].double()
    mvn = ds.marginal()
    assert mvn.loc.dtype == torch.float64
    cov = mvn.covariance_matrix
    d = cov.shape[0]
    mean = x.mean(0)
    xc = x - mean
    emp = xc.T @ xc / (n - 1)
    for i in range(d):
        assert_within_se(mean[i].item(), mvn.loc[i].item(), (cov[i, i] / n).sqrt().item(), msg=f"{ds.name} mean[{i}]")
        for j in range(i, d):
            se = ((cov[i, i] * cov[j, j] + cov[i, j] ** 2) / n).sqrt().item()  # Gaussian 4th moments
            assert_within_se(emp[i, j].item(), cov[i, j].item(), se, msg=f"{ds.name} cov[{i},{j}]")


@pytest.mark.parametrize(
    "name, params",
    [("linear_jte", {}), ("case2", {}), ("case2", {"b_diag": (0.0, 0.009)}), ("case2", {"b_diag": (0.0099, 0.0)}),
     ("case1", {}), ("case1", {"theta": 0.0}), ("case1", {"theta": 0.099, "sigma2": 0.01}), ("gaussian", {})],
)
def test_samples_agree_with_closed_form_marginal(name, params):
    _check_moments(get_dataset(name, **params), n=20000, seed=11)


def test_closed_forms():
    cov = A @ A.T + 0.01 * np.eye(2)
    for params in ({}, {"b_diag": (0.0, 0.009)}):
        assert_close(get_dataset("case2", **params).marginal().covariance_matrix, cov, atol=1e-15, rtol=0)
    assert_close(get_dataset("linear_jte").marginal().covariance_matrix, cov, atol=1e-15, rtol=0)
    assert_close(get_dataset("gaussian").marginal().covariance_matrix, A_GAUSS.T @ A_GAUSS + 1e-6 * np.eye(4),
                 atol=1e-15, rtol=0)
    assert_close(get_dataset("case1", theta=0.2, sigma2=0.25).marginal().covariance_matrix, [[0.25]], atol=0, rtol=0)


def test_moment_check_can_fail():
    """A data set whose marginal is misreported is caught by the moment check."""
    ds = get_dataset("case1", theta=0.5)
    ds.obs_noise_var = lambda device=None, dtype=None: torch.full((1,), 0.5, device=device, dtype=dtype)
    with pytest.raises(AssertionError, match="cov"):
        _check_moments(ds, n=20000, seed=11)


@pytest.mark.parametrize("name", ["cubic_jte", "mobius", "figure8", "discrete_semicircle", "variant1"])
def test_no_marginal_for_nonlinear(name):
    assert get_dataset(name).marginal() is None
