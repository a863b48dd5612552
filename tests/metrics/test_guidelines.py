"""Guideline checks of 004 Section 9: residual normality (4) and class overlap (1)."""

import math

import numpy as np
import pytest
import torch
from common import assert_close, assert_within_se

from pyro_vae.metrics import class_overlap, residual_normality


def _circle_data(n, noise_sd, seed):
    g = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    points = torch.stack([angle.cos(), angle.sin()], 1)
    return points + noise_sd * torch.randn(n, 2, generator=g, dtype=torch.float64)


def circle(z):
    return torch.cat([z.cos(), z.sin()], -1)


def test_linear_decoder_finds_least_squares_codes_and_gaussian_normal_coords():
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([[1.0, 0.5], [0.3, -1.0], [0.8, 0.2]], dtype=torch.float64)
    x = torch.randn(300, 2, generator=g, dtype=torch.float64) @ w.T
    x = x + 0.1 * torch.randn(300, 3, generator=g, dtype=torch.float64)
    result = residual_normality(x, lambda z: z @ w.T, latent_dim=2)
    least_squares = torch.linalg.lstsq(w, x.T).solution.T
    assert_close(result.z, least_squares, atol=1e-4, rtol=0)
    assert_close(result.residuals, x - least_squares @ w.T, atol=1e-4, rtol=0)
    assert result.normal_coords.shape == (300, 1)
    assert result.hz_p_value > 0.01
    # Testing R itself, as the guideline reads, rejects: R lies in a plane of R^3.
    assert residual_normality(x, lambda z: z @ w.T, latent_dim=2, project=False).hz_p_value < 1e-6


def test_true_manifold_passes_and_misestimated_manifolds_fail():
    x = _circle_data(400, 0.05, seed=1)
    good = residual_normality(x, circle, latent_dim=1, noise_var=[0.05**2, 0.05**2])
    # Whitened normal coordinates of the true model are N(0, 1).
    coords = good.normal_coords[:, 0].numpy()
    assert_within_se(coords.std(), 1.0, 1.0 / math.sqrt(2 * 400), msg="normal coordinate sd")
    assert good.hz_p_value > 0.01
    line = residual_normality(x, lambda z: torch.cat([z, 0 * z], -1), latent_dim=1)
    ellipse = residual_normality(x, lambda z: torch.cat([1.3 * z.cos(), 0.8 * z.sin()], -1), latent_dim=1)
    assert line.hz_p_value < 1e-6
    assert ellipse.hz_p_value < 1e-3


def test_module_decoder_keeps_its_dtype_and_gradients():
    decoder = torch.nn.Linear(1, 2)
    with torch.no_grad():
        decoder.weight.copy_(torch.tensor([[1.0], [2.0]]))
        decoder.bias.zero_()
    g = torch.Generator().manual_seed(2)
    t = torch.randn(100, 1, generator=g)
    x = (t @ torch.tensor([[1.0, 2.0]]) + 0.1 * torch.randn(100, 2, generator=g)).numpy()
    result = residual_normality(x, decoder, latent_dim=1, steps=200, seed=3)
    assert result.z.dtype == torch.float32 and decoder.weight.grad is None
    assert_close(result.z[:, 0], (torch.tensor(x) @ torch.tensor([1.0, 2.0])) / 5.0, atol=1e-3, rtol=0)


def test_residual_normality_validates_input():
    x = torch.zeros(20, 2)
    with pytest.raises(ValueError, match="latent_dim must be in \\[1, 1\\]; got 2"):
        residual_normality(x, circle, latent_dim=2)
    with pytest.raises(ValueError, match="noise_var must hold 2 positive numbers"):
        residual_normality(x, circle, latent_dim=1, noise_var=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="at least 2 columns"):
        residual_normality(torch.zeros(20, 1), circle, latent_dim=1)


def _two_blobs(n, shift, rng):
    x = np.vstack([rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + shift])
    return x, np.r_[np.zeros(n, int), np.ones(n, int)]


def test_separable_classes():
    x, y = _two_blobs(300, 5.0, np.random.default_rng(0))
    result = class_overlap(x, y)
    assert result.balanced_accuracy > 0.97 and result.mean_entropy < 0.15 and result.num_classes == 2


def test_overlapping_classes_are_at_chance_with_high_entropy():
    x, y = _two_blobs(300, 0.0, np.random.default_rng(1))
    result = class_overlap(torch.tensor(x), torch.tensor(y))
    assert_within_se(result.balanced_accuracy, 0.5, math.sqrt(0.25 / 300), msg="balanced accuracy")
    assert result.mean_entropy > 0.6  # log 2 = 0.693 at complete overlap


def test_balanced_accuracy_ignores_class_imbalance():
    # 90 / 10 labels independent of x: plain accuracy would be about 0.9.
    rng = np.random.default_rng(2)
    y = (rng.uniform(size=1000) < 0.1).astype(int)
    result = class_overlap(rng.normal(size=(1000, 3)), y)
    assert result.balanced_accuracy < 0.6


def test_hidden_layer_separates_what_a_linear_classifier_cannot():
    rng = np.random.default_rng(3)
    radius = np.r_[rng.uniform(0, 1, 300), rng.uniform(2, 3, 300)]
    angle = rng.uniform(0, 2 * np.pi, 600)
    x = np.c_[radius * np.cos(angle), radius * np.sin(angle)]
    y = np.r_[np.zeros(300, int), np.ones(300, int)]
    assert class_overlap(x, y, hidden=16).balanced_accuracy > 0.95
    assert class_overlap(x, y, hidden=0).balanced_accuracy < 0.7


def test_three_classes_and_arbitrary_labels():
    rng = np.random.default_rng(4)
    x = np.vstack([rng.normal(size=(100, 2)) + c for c in ([0, 0], [6, 0], [0, 6])])
    y = np.repeat([-1, 7, 3], 100)
    result = class_overlap(x, y, seed=1)
    assert result.num_classes == 3 and result.balanced_accuracy > 0.95


def test_class_overlap_validates_input():
    with pytest.raises(ValueError, match="at least 2 classes"):
        class_overlap(np.zeros((10, 2)), np.zeros(10))
    with pytest.raises(ValueError, match="one label per row"):
        class_overlap(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="test_fraction must be in \\(0, 1\\)"):
        class_overlap(np.zeros((10, 2)), np.r_[np.zeros(5), np.ones(5)], test_fraction=1.0)
