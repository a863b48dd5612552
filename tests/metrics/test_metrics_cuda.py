"""The torch metrics run on the device of their inputs."""

import numpy as np
import pytest
import torch
from common import assert_close, requires_cuda

from pyro_vae.metrics import henze_zirkler_torch, mutual_info_gaussian_encoder, optimal_noise_var, residual_normality

pytestmark = [requires_cuda, pytest.mark.cuda]


def test_henze_zirkler_torch_on_cuda_matches_cpu():
    x = torch.tensor(np.random.default_rng(0).standard_t(4, size=(200, 3)))
    stat_cpu, p_cpu = henze_zirkler_torch(x)
    stat, p = henze_zirkler_torch(x.cuda())
    assert stat.device.type == "cuda"
    assert_close(stat, stat_cpu, rtol=1e-9)
    assert_close(p, p_cpu, rtol=1e-6)


def test_batched_henze_zirkler_on_cuda_matches_cpu_with_a_singular_batch():
    x = torch.tensor(np.random.default_rng(1).standard_t(4, size=(3, 600, 2)))
    x[1, :, 1] = 2 * x[1, :, 0]
    stat_cpu, _ = henze_zirkler_torch(x)
    stat, _ = henze_zirkler_torch(x.cuda())
    assert stat.device.type == "cuda" and float(stat[1]) == 2400.0
    assert_close(stat, stat_cpu, rtol=1e-9)


def test_encoder_metrics_stay_on_cuda():
    loc, scale = torch.randn(300, 2, device="cuda"), torch.rand(300, 2, device="cuda") + 0.1
    assert mutual_info_gaussian_encoder(loc, scale, num_samples=2).device.type == "cuda"
    decoder = torch.nn.Linear(2, 3).cuda()
    x = torch.randn(300, 3, device="cuda")
    assert optimal_noise_var(x, decoder, loc, scale, num_samples=3).device.type == "cuda"
    result = residual_normality(x, decoder, latent_dim=2, steps=20)
    assert result.z.device.type == "cuda"
