"""Restart-batched networks: each restart is an independent network, and can be taken out whole."""

import torch

from common import assert_close
from pyro_vae.datasets import get_dataset
from pyro_vae.models import build_vae_model
from pyro_vae.nets import MLP, select_restart
from pyro_vae.pipeline import RunConfig, build_model_and_guide


def test_batched_mlp_equals_its_restarts_one_by_one():
    torch.manual_seed(0)
    net = MLP(2, 3, (5, 4), num_restarts=4)
    x = torch.randn(7, 2)
    out = net(x)
    assert out.shape == (4, 7, 3)
    for r in range(4):
        assert_close(select_restart(net, r)(x), out[r], rtol=1e-6, atol=1e-7, msg=f"restart {r}")
    # leading (particle) dims fold into one batched product and give the same numbers
    xs = torch.randn(6, 4, 7, 2)
    assert_close(net(xs)[:, 2], select_restart(net, 2)(xs[:, 2]), rtol=1e-5, atol=1e-6, msg="particles")


def test_select_restart_keeps_fixed_buffers_whole_when_a_dimension_equals_r():
    ds = get_dataset("linear_jte")  # its family holds 2×2 constants; R = 2 must not slice them
    model, _ = build_model_and_guide(RunConfig("linear_jte", restarts=2), ds, 2)
    single = select_restart(model, 1)
    assert single.decoder.a_true.shape == (2, 2) and single.decoder.b_diag.shape == (2,)
    assert single.log_noise_var.shape == (1, 2)
    z = torch.randn(5, 2)
    assert_close(single.decoder(z), model.decoder(z)[1], rtol=1e-6, msg="restart 1 of the family")


def test_select_restart_slices_a_fixed_noise_buffer():
    model = build_vae_model(1, 2, [0.1, 0.2], num_restarts=3)
    assert select_restart(model, 2).noise_variance().shape == (1, 2)
