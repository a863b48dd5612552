"""Surrogate networks (004 App. G/H, 000 Mobius): fitting, warning, caching and reloading."""

from __future__ import annotations

import warnings

import pyro.poutine as poutine
import pytest
import torch
from common import assert_close

import pyro_vae.datasets.surrogate as surrogate
from pyro_vae.datasets import get_dataset
from pyro_vae.datasets.unsupervised import EMBED_5D


def _no_fit(*args, **kwargs):
    raise AssertionError("fit_to_function called although the surrogate is cached")


def _fake_fit(mse: float):
    def fit(net, fn, sample_inputs, **kwargs):
        return mse

    return fit


def test_fit_warns_caches_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path))
    ds = get_dataset("circle", surrogate=True, surrogate_max_steps=20)
    torch.manual_seed(0)
    expected_draw = torch.rand(1)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"MSE .* not below the target 0\.0001"):
        x, z = ds.sample(200, seed=0)
    assert torch.equal(torch.rand(1), expected_draw)  # fitting leaves the global RNG alone
    files = sorted(p.name for p in (tmp_path / "surrogates").iterdir())
    assert len(files) == 1 and files[0].startswith("circle-") and files[0].endswith(".pt")
    assert ds.surrogate_mse is not None and ds.surrogate_mse > 1e-4
    # the data come from the network, not from f
    with torch.no_grad():
        assert_close(ds.f(z), ds.surrogate_net()(z), atol=0, rtol=0)
        assert not torch.allclose(ds.f(z), ds.true_f(z), atol=1e-3)
    # a second instance loads the cached weights instead of fitting
    monkeypatch.setattr(surrogate, "fit_to_function", _no_fit)
    again = get_dataset("circle", surrogate=True, surrogate_max_steps=20)
    with pytest.warns(UserWarning, match="MSE"):
        x2, z2 = again.sample(200, seed=0)
    assert torch.equal(x, x2) and torch.equal(z, z2)
    assert again.surrogate_mse == pytest.approx(ds.surrogate_mse)
    # the network is frozen but f stays differentiable in z
    zz = torch.randn(5, 1, requires_grad=True)
    (grad,) = torch.autograd.grad(again.f(zz).sum(), zz)
    assert grad.abs().sum() > 0
    assert not any(p.requires_grad for p in again.surrogate_net().parameters())
    # the Pyro model uses the surrogate too
    tr = poutine.trace(poutine.condition(again.model, data={"z": z2})).get_trace(x2)
    assert_close(tr.nodes["x"]["fn"].base_dist.loc, again.f(z2), atol=0, rtol=0)


def test_options_change_the_cache_key(tmp_path, monkeypatch):
    monkeypatch.setattr(surrogate, "fit_to_function", _fake_fit(5e-5))
    for steps in (10, 11):
        get_dataset("mobius", surrogate=True, surrogate_max_steps=steps, cache_dir=str(tmp_path)).sample(3, seed=0)
    get_dataset("mobius", surrogate=True, surrogate_max_steps=10, surrogate_seed=1, cache_dir=str(tmp_path)).sample(
        3, seed=0)
    assert len(list(tmp_path.iterdir())) == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_no_warning_when_target_met(tmp_path, monkeypatch):
    monkeypatch.setattr(surrogate, "fit_to_function", _fake_fit(5e-5))
    ds = get_dataset("spiral_dots", surrogate=True, cache_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds.sample(10, seed=0)
    saved = torch.load(next(tmp_path.iterdir()), weights_only=True)
    assert saved["mse"] == pytest.approx(5e-5) and "state_dict" in saved


def test_embedded_sets_embed_the_2d_surrogate(tmp_path, monkeypatch):
    monkeypatch.setattr(surrogate, "fit_to_function", _fake_fit(5e-5))
    ds = get_dataset("figure8_5d", surrogate=True, cache_dir=str(tmp_path))
    z = torch.randn(4, 1)
    with torch.no_grad():
        expected = ds.inner.surrogate_net()(z) @ torch.tensor(EMBED_5D)
        assert_close(ds.f(z), expected, atol=1e-6, rtol=1e-6)
    assert [p.name.split("-")[0] for p in tmp_path.iterdir()] == ["figure8"]


def test_semicircle_surrogate_takes_labels(tmp_path, monkeypatch):
    monkeypatch.setattr(surrogate, "fit_to_function", _fake_fit(5e-5))
    ds = get_dataset("discrete_semicircle", surrogate=True, cache_dir=str(tmp_path))
    x, z, y = ds.sample(5, seed=0)
    assert x.shape == (5, 2) and ds.surrogate_net().in_dim == 3
    with torch.no_grad():
        assert_close(ds.f(z, y[:, 1:]), ds.f(z, y), atol=0, rtol=0)


def test_not_offered_for_exact_sets():
    for name in ("linear_jte", "case1", "variant1", "floor", "gaussian"):
        with pytest.raises(ValueError, match="surrogate=True"):
            get_dataset(name, surrogate=True)


@pytest.mark.slow
def test_full_fit_reaches_the_papers_target(tmp_path):
    """004 App. G: the surrogate fits f with MSE < 1e-4."""
    ds = get_dataset("circle", surrogate=True, cache_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds.sample(10, seed=0)
    assert ds.surrogate_mse < 1e-4
    z = torch.randn(5000, 1, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert ((ds.f(z) - ds.true_f(z)) ** 2).mean().item() < 2e-4
