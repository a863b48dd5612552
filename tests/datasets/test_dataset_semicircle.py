"""Semi-supervised sets of 004 App. H: labels, masks, f(z, y) and the beta inverse CDF."""

from __future__ import annotations

import math

import pyro.poutine as poutine
import pytest
import scipy.special
import torch
from common import assert_close, assert_within_se

from pyro_vae.datasets import LabelledSplit, get_dataset
from pyro_vae.datasets.semicircle import beta_icdf

NAMES = ["discrete_semicircle", "continuous_semicircle"]


@pytest.mark.parametrize("name", NAMES)
def test_attributes(name):
    ds = get_dataset(name)
    assert ds.latent_dim == 1 and ds.obs_dim == 2
    assert (ds.label_dim, ds.label_kind) == ((2, "discrete") if name.startswith("discrete") else (1, "continuous"))
    assert ds.labelled_fraction == 0.1


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fraction", [0.1, 0.0, 1.0, 0.37])
def test_splits_carry_labels_and_masks(name, fraction):
    ds = get_dataset(name, labelled_fraction=fraction)
    splits = ds.splits(seed=2)
    for part, size in zip(splits, (5000, 2000, 2000)):
        assert isinstance(part, LabelledSplit)
        assert part.y.shape == (size, ds.label_dim) and part.y.dtype == torch.float32
        assert part.labelled.shape == (size,) and part.labelled.dtype == torch.bool
        assert int(part.labelled.sum()) == round(fraction * size)
    if 0 < fraction < 1:
        assert not torch.equal(splits.val.labelled, splits.test.labelled)
        assert torch.equal(splits.train.labelled, ds.splits(seed=2).train.labelled)
        assert not torch.equal(splits.train.labelled, ds.splits(seed=3).train.labelled)


def test_discrete_labels_are_fair_one_hot():
    _, _, y = get_dataset("discrete_semicircle").sample(10000, seed=0)
    assert ((y == 0) | (y == 1)).all() and (y.sum(-1) == 1).all()
    assert_within_se(y[:, 1].mean().item(), 0.5, math.sqrt(0.25 / 10000), msg="P(y = 1)")


def test_continuous_labels_are_standard_normal():
    _, _, y = get_dataset("continuous_semicircle").sample(10000, seed=0)
    assert_within_se(y.mean().item(), 0.0, math.sqrt(1 / 10000), msg="mean y")
    assert_within_se(y.var().item(), 1.0, math.sqrt(2 / 10000), msg="var y")


def test_discrete_f_matches_eq38():
    ds = get_dataset("discrete_semicircle")
    z = torch.tensor([[-1.0], [0.0], [0.8]], dtype=torch.float64)
    phi = torch.special.ndtr(z)
    y0 = torch.tensor([[1.0, 0.0]] * 3, dtype=torch.float64)
    y1 = torch.tensor([[0.0, 1.0]] * 3, dtype=torch.float64)
    angle0, angle1 = math.pi * phi.sqrt(), math.pi * phi**3
    assert_close(ds.f(z, y0), torch.cat([angle0.cos(), angle0.sin()], -1), atol=1e-12, rtol=0)
    assert_close(ds.f(z, y1), torch.cat([angle1.cos(), angle1.sin()], -1), atol=1e-12, rtol=0)
    # 0/1 labels of shape (..., 1) mean the same
    assert_close(ds.f(z, torch.zeros(3, 1, dtype=torch.float64)), ds.f(z, y0), atol=0, rtol=0)
    assert_close(ds.f(z, torch.ones(3, 1, dtype=torch.float64)), ds.f(z, y1), atol=0, rtol=0)
    with pytest.raises(ValueError, match="y.shape"):
        ds.f(z, torch.zeros(3, 3))


def test_beta_icdf_against_scipy_and_gradient():
    p = torch.tensor([1e-4, 0.1, 0.5, 0.77, 0.999], dtype=torch.float64, requires_grad=True)
    h = beta_icdf(p)
    # h is the inverse: the Beta(0.2, 0.2) CDF at h returns p
    assert_close(scipy.special.betainc(0.2, 0.2, h.detach().numpy()), p.detach(), atol=1e-6, rtol=1e-9)
    assert h[2].item() == pytest.approx(0.5, abs=1e-12)  # symmetric Beta
    assert (h[1:] > h[:-1]).all()
    assert torch.autograd.gradcheck(beta_icdf, (p[1:4].detach().requires_grad_(True),))


def test_continuous_f_matches_eq39_and_is_differentiable():
    ds = get_dataset("continuous_semicircle")
    z = torch.tensor([[-0.5], [0.2], [1.3]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[-1.0], [0.0], [2.0]], dtype=torch.float64, requires_grad=True)
    h = torch.as_tensor(scipy.special.betaincinv(0.2, 0.2, scipy.special.ndtr(y.detach().numpy())))
    phi = torch.special.ndtr(z.detach())
    angle = h * math.pi * phi.sqrt() + (1 - h) * math.pi * phi**3
    assert_close(ds.f(z, y), torch.cat([angle.cos(), angle.sin()], -1), atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(ds.f, (z, y))


@pytest.mark.parametrize("name", NAMES)
def test_model_generates_labels_when_not_given(name):
    ds = get_dataset(name)
    tr = poutine.trace(ds.model).get_trace(n=6)
    assert tr.nodes["y"]["value"].shape == (6, ds.label_dim) and not tr.nodes["y"]["is_observed"]
    x = ds.sample(6, seed=0)[0]
    tr = poutine.trace(ds.model).get_trace(x)
    assert tr.nodes["x"]["is_observed"] and not tr.nodes["y"]["is_observed"]
