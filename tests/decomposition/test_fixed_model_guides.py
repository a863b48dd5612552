"""Guides trained against frozen models, decoders fitted to the truth, and the GT initialisation."""

import torch
from torch import nn

from common import assert_close
from guides.mean_field import MeanFieldGuide
from pyro_vae.datasets import get_dataset
from pyro_vae.inference import validation_objective
from pyro_vae.inference.fixed_model import fit_decoder_to_truth, fit_guide, gt_initialise
from pyro_vae.metrics.decomposition import decompose_elbo
from pyro_vae.metrics.linear_gaussian import linear_gaussian_params, optimal_pmo
from pyro_vae.models import VAEModel, build_vae_model
from pyro_vae.nets import MLP


def test_fit_guide_leaves_the_model_bit_for_bit_unchanged():
    ds = get_dataset("figure8")
    x, _ = ds.sample(400, seed=0)
    torch.manual_seed(0)
    model = build_vae_model(1, 2, 0.02, hidden=(20, 20), noise="learned")  # even a learnable σ² stays put
    guide = MeanFieldGuide(2, 1, (20, 20))
    model_before = {k: v.clone() for k, v in model.state_dict().items()}
    guide_before = {k: v.clone() for k, v in guide.state_dict().items()}
    torch.manual_seed(1)
    elbo_before = float(validation_objective(model, guide, x))
    fit_guide(model, guide, x, epochs=5, lr=1e-2, seed=0)
    for key, value in model.state_dict().items():
        assert torch.equal(value, model_before[key]), key
    assert all(p.requires_grad for p in model.parameters())
    assert any(not torch.equal(v, guide_before[k]) for k, v in guide.state_dict().items())
    torch.manual_seed(1)
    assert float(validation_objective(model, guide, x)) > elbo_before + 0.3


def test_guide_trained_on_linear_jte_truth_approaches_the_mean_field_optimum():
    """φ_GT on LinearJTE: PMO → PMO* = 0.532 (000 App. C.3) from above.

    Tolerance: PMO − PMO* within [−4 SE, 0.05 nats]; the encoder is linear (the optimal
    mean-field guide is linear in x) so that a few hundred full-batch steps get there.
    """
    ds = get_dataset("linear_jte")
    splits = ds.splits(0)
    family = ds.decoder_family()
    family.set_ground_truth()
    model = VAEModel(family, 2, 2, ds.obs_noise_var())
    torch.manual_seed(0)
    guide = MeanFieldGuide(2, 2, encoder=nn.Linear(2, 4))
    for lr, epochs in [(0.05, 300), (0.01, 100), (0.002, 100)]:
        fit_guide(model, guide, splits.train.x, splits.val.x, epochs=epochs, lr=lr, batch_size=500, seed=0)
    dec = decompose_elbo(model, guide, splits.test.x[:200], ds, num_particles=100, seed=0)
    closed = float(optimal_pmo(linear_gaussian_params(ds)))
    assert abs(dec.mleo) < 1e-5  # the model is the truth (in float32)
    assert -4 * dec.pmo_se < dec.pmo - closed < 0.05, (dec.pmo, closed, dec.pmo_se)


def test_fit_decoder_to_truth_reaches_the_target_on_figure8():
    torch.manual_seed(0)
    net = MLP(1, 2)
    fit = fit_decoder_to_truth(net, get_dataset("figure8"), target_mse=1e-4, seed=0)
    assert fit.reached and fit.mse < 1e-4
    z = torch.linspace(-3, 3, 101)[:, None]
    with torch.no_grad():
        assert float(((net(z) - get_dataset("figure8").f(z)) ** 2).mean()) < 1e-3


def test_gt_initialise_with_the_family_keeps_the_best_restart():
    ds = get_dataset("case1")
    x, _ = ds.sample(300, seed=0)
    init = gt_initialise(ds, num_restarts=3, decoder="family", x_train=x[:200], x_val=x[200:], epochs=3, lr=1e-2, seed=0)
    assert init.decoder_fit.mse < 1e-10 and init.decoder_fit.reached
    assert init.best_restart == int(init.train.val_objective.argmax())
    assert init.model.num_restarts is None and init.guide.num_restarts is None
    assert_close(init.model.decoder.theta(), ds.theta, rtol=1e-6)
    assert_close(init.model.noise_variance(), ds.obs_noise_var(), rtol=1e-5)
    assert len(set(float(v) for v in init.train.val_objective)) == 3  # restarts differ


def test_gt_initialise_maps_a_uniform_prior_through_the_normal_cdf():
    """Variant 1 has z ~ U(0, 1); the VAE's prior is N(0, 1), so its GT decoder is f(Φ(z))."""
    ds = get_dataset("variant1")
    init = gt_initialise(ds, num_restarts=2, hidden=(20, 20), epochs=1, max_fit_steps=1500, target_mse=1e-5, seed=0)
    z = torch.linspace(-2, 2, 101)[:, None]
    with torch.no_grad():
        fitted = init.model.decoder(z)
        err_phi = float(((fitted - ds.f(torch.special.ndtr(z))) ** 2).mean())
        err_raw = float(((fitted - ds.f(z)) ** 2).mean())
    assert err_phi < 1e-3 < err_raw
    assert abs(init.decoder_fit.mse - err_phi) < 1e-3
