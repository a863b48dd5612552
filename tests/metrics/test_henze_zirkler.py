"""Henze-Zirkler test: reference values, NumPy vs torch, size under the null, the penalty."""

import math

import numpy as np
import pytest
import torch
from common import assert_close, assert_within_se

from pyro_vae.metrics import henze_zirkler, henze_zirkler_penalty, henze_zirkler_torch


def _reference_data(case):
    """Data sets for the stored reference values (NumPy's PCG64 streams are stable)."""
    if case == "normal_2d":
        rng = np.random.default_rng(1)
        return rng.standard_normal((50, 2)) @ np.array([[1.0, 0.5], [0.0, 0.8]]) + np.array([4.0, 6.0])
    if case == "exponential_3d":
        return np.random.default_rng(2).exponential(size=(80, 3))
    if case == "uniform_5d":
        return np.random.default_rng(3).uniform(size=(200, 5))
    if case == "t3_4d":
        return np.random.default_rng(4).standard_t(3, size=(120, 4))
    raise KeyError(case)


# Computed once with an independent implementation: pingouin 0.7.0 (numpy 2.4.6, scipy 1.17.1),
# `hz, pval, normal = pingouin.multivariate_normality(_reference_data(case))`.
PINGOUIN_0_7_0 = {
    "normal_2d": (0.6513306129698859, 0.19886769389936026),
    "exponential_3d": (3.3307452829443065, 1.0758300296661345e-14),
    "uniform_5d": (1.2683987207325615, 6.824044222152981e-07),
    "t3_4d": (2.0079792888617245, 5.308924419461597e-14),
}


@pytest.mark.parametrize("case", sorted(PINGOUIN_0_7_0))
def test_matches_pingouin_reference_values(case):
    stat, p_value = PINGOUIN_0_7_0[case]
    result = henze_zirkler(_reference_data(case))
    assert_close(result.statistic, stat, rtol=1e-10)
    assert_close(result.p_value, p_value, rtol=1e-8)


@pytest.mark.parametrize("case", sorted(PINGOUIN_0_7_0))
def test_torch_version_agrees_with_numpy(case):
    x = _reference_data(case)
    stat, p_value = henze_zirkler_torch(torch.tensor(x, dtype=torch.float32))
    assert stat.dtype == torch.float64
    expected = henze_zirkler(x.astype(np.float32))
    assert_close(stat, expected.statistic, rtol=1e-10)
    assert_close(p_value, expected.p_value, rtol=1e-8)


def test_torch_gradient_matches_finite_differences():
    x = torch.tensor(_reference_data("t3_4d")[:30], requires_grad=True)
    stat, p_value = henze_zirkler_torch(x)
    (grad,) = torch.autograd.grad(stat, x, retain_graph=True)
    direction = torch.randn_like(x)
    h = 1e-6
    numeric = (henze_zirkler_torch(x + h * direction)[0] - henze_zirkler_torch(x - h * direction)[0]) / (2 * h)
    assert_close((grad * direction).sum(), numeric, rtol=1e-6)
    assert torch.autograd.grad(p_value, x)[0].abs().sum() > 0


def test_affine_invariant():
    x = _reference_data("exponential_3d")
    a = np.array([[2.0, 0.3, 0.0], [0.0, 0.5, 1.0], [0.1, 0.0, 3.0]])
    assert_close(henze_zirkler(x @ a + 7.0).statistic, henze_zirkler(x).statistic, rtol=1e-9)


@pytest.mark.parametrize("p", [2, 3])
def test_size_close_to_nominal_under_normal_data(p):
    rng = np.random.default_rng(10 + p)
    reps = 400
    p_values = np.array([henze_zirkler(rng.standard_normal((50, p))).p_value for _ in range(reps)])
    for alpha in (0.05, 0.1):
        rate = np.mean(p_values < alpha)
        assert_within_se(rate, alpha, math.sqrt(alpha * (1 - alpha) / reps), msg=f"size at alpha={alpha}")


def test_rejects_clearly_non_normal_data():
    rng = np.random.default_rng(12)
    ring = rng.normal(size=(300, 2))
    ring /= np.linalg.norm(ring, axis=1, keepdims=True)
    assert henze_zirkler(ring).p_value < 1e-6
    assert henze_zirkler(rng.exponential(size=(300, 1))).p_value < 1e-6


def test_singular_covariance_gives_4n():
    x = np.random.default_rng(13).normal(size=(40, 1))
    degenerate = np.hstack([x, 2 * x])
    assert henze_zirkler(degenerate).statistic == 160.0
    assert henze_zirkler(degenerate).p_value < 1e-10
    stat, _ = henze_zirkler_torch(torch.tensor(degenerate))
    assert float(stat) == 160.0


def test_penalty_is_exp_below_cap_and_linear_above():
    x = torch.tensor(_reference_data("t3_4d"), requires_grad=True)
    stat = henze_zirkler_torch(x)[0].detach()
    assert_close(henze_zirkler_penalty(x), torch.exp(stat), rtol=1e-12)
    assert_close(henze_zirkler_penalty(x, max_exponent=1.0), math.e * stat, rtol=1e-12)


def test_penalty_stays_finite_where_exp_overflows():
    # 2500 codes in two tight clusters: HZ is about 0.3 n, beyond float64's exp range.
    g = torch.Generator().manual_seed(0)
    sign = torch.randint(0, 2, (2500, 1), generator=g).double() * 2 - 1
    codes = (sign + 1e-3 * torch.randn(2500, 1, generator=g, dtype=torch.float64)).requires_grad_(True)
    stat = henze_zirkler_torch(codes)[0].detach()
    assert float(stat) > 710 and torch.isinf(torch.exp(stat))
    penalty = henze_zirkler_penalty(codes, max_exponent=50.0)
    assert_close(penalty, math.exp(50.0) * (1 + stat - 50.0), rtol=1e-12)
    (grad,) = torch.autograd.grad(penalty, codes)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_rejects_too_few_rows():
    with pytest.raises(ValueError, match="at least p \\+ 2 = 5 rows"):
        henze_zirkler(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="max_exponent must be"):
        henze_zirkler_penalty(torch.randn(10, 2), max_exponent=-1.0)


@pytest.mark.parametrize("n, p", [(100, 1), (100, 2), (600, 2), (30, 4)])
def test_batched_statistic_equals_one_call_per_batch(n, p):
    # LiBI's step 1 tests each restart's codes in one call; (600, 2) spans several pair blocks.
    # The statistic is bit-identical; batched and single matrix products may round the gradient's
    # last float64 bit differently (seen at p = 1), which float32 codes do not see.
    g = torch.Generator().manual_seed(n + p)
    x = torch.randn(5, n, p, generator=g, dtype=torch.float64).requires_grad_(True)
    stat, p_value = henze_zirkler_torch(x)
    (grad,) = torch.autograd.grad(stat.sum(), x)
    for r in range(5):
        xr = x[r].detach().clone().requires_grad_(True)
        stat_r, p_r = henze_zirkler_torch(xr)
        assert torch.equal(stat[r], stat_r) and torch.equal(p_value[r], p_r)
        assert_close(grad[r], torch.autograd.grad(stat_r, xr)[0], rtol=1e-12, atol=1e-14)


def test_batched_input_may_be_an_array_and_bad_shapes_are_named():
    x = np.random.default_rng(15).normal(size=(2, 30, 2))
    stat, _ = henze_zirkler_torch(x)
    assert stat.shape == (2,) and float(stat[1]) == float(henze_zirkler_torch(x[1])[0])
    with pytest.raises(ValueError, match=r"at least p \+ 2 = 4 rows for 2 columns; got 3"):
        henze_zirkler_torch(torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(n,\), \(n, p\) or \(R, n, p\); got \(2, 2, 3, 2\)"):
        henze_zirkler_torch(torch.zeros(2, 2, 3, 2))


def test_a_singular_batch_gives_4n_with_zero_gradient_and_leaves_the_others_alone():
    g = torch.Generator().manual_seed(14)
    x = torch.randn(3, 40, 2, generator=g, dtype=torch.float64)
    x[1, :, 1] = 2 * x[1, :, 0]  # rank 1
    x.requires_grad_(True)
    stat, _ = henze_zirkler_torch(x)
    (grad,) = torch.autograd.grad(stat.sum(), x)
    assert float(stat[1].detach()) == 160.0 and torch.equal(grad[1], torch.zeros_like(grad[1]))
    assert torch.isfinite(grad).all()
    for r in (0, 2):
        assert torch.equal(stat[r], henze_zirkler_torch(x[r].detach())[0])
