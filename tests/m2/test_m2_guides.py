"""M2 guides and label distributions: scoring, sites and plates, Pyro's ELBOs, and training."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from common import assert_close
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, config_enumerate

from guides.m2 import EnumeratedLabelGuide, GaussianLabelGuide, RelaxedLabelGuide, build_m2_guide
from pyro_vae.datasets import LabelledSplit, get_dataset
from pyro_vae.inference import TrainingError
from pyro_vae.inference.m2 import train_m2, validation_objective_m2
from pyro_vae.models_m2 import (
    OneHotOnSimplex,
    RelaxedOneHotMass,
    RelaxedOneHotMassStraightThrough,
    build_m2_model,
)


def test_concrete_density_is_nan_at_a_one_hot_but_the_mass_score_is_not():
    logits = torch.tensor([0.3, -0.2]).log_softmax(-1)
    one_hot = torch.tensor([1.0, 0.0])
    concrete = dist.RelaxedOneHotCategorical(torch.tensor(2.2), logits=logits, validate_args=False)
    assert not torch.isfinite(concrete.log_prob(one_hot))
    assert_close(RelaxedOneHotMass(torch.tensor(2.2), logits=logits).log_prob(one_hot), logits[0], rtol=1e-6)


def test_one_hot_on_simplex_extends_the_categorical_linearly():
    probs = torch.tensor([0.2, 0.5, 0.3])
    ours, plain = OneHotOnSimplex(probs=probs), dist.OneHotCategorical(probs=probs)
    support = ours.enumerate_support()
    assert torch.equal(support, plain.enumerate_support())
    assert_close(ours.log_prob(support), plain.log_prob(support), rtol=1e-6)
    v = torch.tensor([0.1, 0.6, 0.3])
    assert_close(ours.log_prob(v), (v * probs.log()).sum(), rtol=1e-6)
    assert ours.expand((4,)).batch_shape == (4,) and isinstance(ours.expand((4,)), OneHotOnSimplex)
    with pytest.raises(ValueError):
        ours.log_prob(torch.tensor([0.5, 0.6, 0.3]))  # off the simplex


def test_relaxed_draws_stay_on_the_simplex_at_low_temperature():
    logits = torch.randn(500, 3).log_softmax(-1) * 10
    draws = RelaxedOneHotMass(torch.tensor(0.01), logits=logits).rsample((20,))
    assert ((draws.sum(-1) - 1).abs() < 1e-6).all() and (draws >= 0).all()


def test_straight_through_draws_are_one_hot_with_relaxed_gradients():
    logits = torch.tensor([[0.1, 0.7, -0.3]], requires_grad=True)
    d = RelaxedOneHotMassStraightThrough(torch.tensor(1.0), logits=logits.log_softmax(-1))
    draw = d.rsample((50,))
    assert ((draw == 0) | (draw == 1)).all() and (draw.sum(-1) == 1).all()
    (draw * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("restarts", [None, 2])
def test_guide_sites_and_plates(restarts):
    x = torch.randn(5, 2)
    for guide in (build_m2_guide("enum", 2, 1, 2, hidden=(8,), num_restarts=restarts),
                  build_m2_guide("relaxed", 2, 1, 2, hidden=(8,), num_restarts=restarts),
                  build_m2_guide("gaussian", 2, 1, 1, hidden=(8,), num_restarts=restarts)):
        tr = poutine.trace(guide).get_trace(x)
        lead = () if restarts is None else (restarts,)
        plates = ["data"] if restarts is None else ["restarts", "data"]
        assert tr.nodes["z"]["value"].shape == (*lead, 5, 1)
        assert sorted(f.name for f in tr.nodes["y"]["cond_indep_stack"]) == sorted(plates)
        labelled = poutine.trace(guide).get_trace(x, torch.eye(guide.label_dim)[torch.zeros(5, dtype=torch.long)]
                                                  if guide.label_kind == "discrete" else torch.randn(5, 1))
        assert "y" not in labelled.nodes and "z" in labelled.nodes


@pytest.mark.parametrize("restarts", [None, 3])
def test_both_discrete_guides_work_with_the_same_model_in_pyro(restarts):
    """TraceEnum_ELBO on config_enumerate(enum guide), Trace_ELBO with the relaxed guide, both
    against one model instance; labelled data with Trace_ELBO for either."""
    model = build_m2_model(1, 2, 2, "discrete", 0.01, hidden=(8,), num_restarts=restarts)
    nesting = 1 if restarts is None else 2
    x = torch.randn(6, 2)
    y = torch.eye(2)[torch.tensor([0, 1, 1, 0, 1, 0])]
    enum = build_m2_guide("enum", 2, 1, 2, hidden=(8,), num_restarts=restarts)
    relaxed = build_m2_guide("relaxed", 2, 1, 2, hidden=(8,), num_restarts=restarts)
    losses = [
        TraceEnum_ELBO(max_plate_nesting=nesting).differentiable_loss(model, config_enumerate(enum, "parallel"), x),
        Trace_ELBO(max_plate_nesting=nesting).differentiable_loss(model, relaxed, x),
        Trace_ELBO(max_plate_nesting=nesting).differentiable_loss(model, relaxed, x, y),
    ]
    for loss in losses:
        assert torch.isfinite(loss)
        model.zero_grad()
        loss.backward()
        assert model.decoder.net[0].weight.grad.abs().sum() > 0


def test_guide_arguments_are_checked():
    with pytest.raises(ValueError, match="temperature=0"):
        RelaxedLabelGuide(2, 1, 2, temperature=0)
    with pytest.raises(ValueError, match="label_dim=2"):
        GaussianLabelGuide(2, 1, 2)
    with pytest.raises(ValueError, match="label_dim=1"):
        EnumeratedLabelGuide(2, 1, 1)
    with pytest.raises(ValueError, match="guide='mfg'"):
        build_m2_guide("mfg", 2, 1, 2)
    with pytest.raises(ValueError, match="label_probs"):
        build_m2_model(1, 2, 2, "discrete", 0.01, label_probs=(0.5, 0.6))


def _subset(split: LabelledSplit, n: int) -> LabelledSplit:
    return LabelledSplit(split.x[:n], split.z[:n], split.y[:n], split.labelled[:n])


@pytest.mark.parametrize("name, kind", [
    ("discrete_semicircle", "enum"), ("discrete_semicircle", "relaxed"), ("continuous_semicircle", "gaussian"),
])
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_guides_train_on_the_semicircles(name, kind, objective):
    """A few epochs raise the validation objective J, for every restart."""
    ds = get_dataset(name, labelled_fraction=0.2)
    splits = ds.splits(seed=0)
    train, val = _subset(splits.train, 600), _subset(splits.val, 300)
    model = build_m2_model(1, 2, ds.label_dim, ds.label_kind, 0.01, hidden=(16, 16), num_restarts=2)
    guide = build_m2_guide(kind, 2, 1, ds.label_dim, hidden=(16, 16), num_restarts=2)
    kwargs = dict(alpha=0.1, gamma=2.0, kind=objective, num_particles=4)
    pyro.set_rng_seed(0)
    before = validation_objective_m2(model, guide, val, **kwargs)
    result = train_m2(model, guide, train, val, objective=objective, alpha=0.1, gamma=2.0, num_particles=4,
                      epochs=4, batch_size=50, lr=3e-3, progress=False)
    assert result.steps == 4 * 12 and len(result.history) == 4 * 2
    assert torch.isfinite(result.val_objective).all()
    assert (result.val_objective > before + 0.5).all(), (before, result.val_objective)
    assert result.best_restart == int(result.val_objective.argmax())


def test_training_stops_on_nan_naming_the_step():
    ds = get_dataset("discrete_semicircle")
    train = _subset(ds.splits(seed=0).train, 200)
    model = build_m2_model(1, 2, 2, "discrete", 0.01, hidden=(8,))
    guide = build_m2_guide("enum", 2, 1, 2, hidden=(8,))
    with torch.no_grad():
        model.decoder.net[0].weight.fill_(math.nan)
    with pytest.raises(TrainingError, match="step 1 "):
        train_m2(model, guide, train, epochs=1, progress=False)


@pytest.mark.parametrize("kwargs, match", [
    ({"objective": "renyi"}, "objective='renyi'"),
    ({"alpha": -1.0}, "alpha=-1.0"),
    ({"gamma": 0.0}, "gamma=0.0"),
    ({"epochs": 0}, "epochs=0"),
    ({"batch_size": 201}, "batch_size=201"),
    ({"lr": 0}, "lr=0"),
])
def test_train_m2_rejects_bad_arguments(kwargs, match):
    ds = get_dataset("discrete_semicircle")
    train = _subset(ds.splits(seed=0).train, 200)
    model = build_m2_model(1, 2, 2, "discrete", 0.01, hidden=(8,))
    guide = build_m2_guide("enum", 2, 1, 2, hidden=(8,))
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        train_m2(model, guide, train, progress=False, **kwargs)
    with pytest.raises(ValueError, match="labelled"):
        train_m2(model, guide, ds.splits(seed=0).train[:2], progress=False)


@pytest.mark.parametrize("kind", ["enum", "relaxed"])
def test_factorised_guide_ignores_y_in_q_z(kind):
    """z_given_y=False gives q(y|x) q(z|x) (Eqs. 13, 15 of 004): q(z|·) is the same for every y."""
    guide = build_m2_guide(kind, 2, 1, 2, hidden=(8,), z_given_y=False, num_restarts=2)
    x = torch.randn(4, 2)
    q0 = guide.latent_distribution(x, torch.eye(2)[[0, 0, 0, 0]])
    q1 = guide.latent_distribution(x, torch.eye(2)[[1, 1, 1, 1]])
    assert q0.loc.shape == (2, 4, 1) and torch.equal(q0.loc, q1.loc) and torch.equal(q0.scale, q1.scale)
    enumerated = guide.latent_distribution(x, torch.eye(2).reshape(2, 1, 1, 2))
    assert enumerated.loc.shape == (2, 2, 4, 1)
    model = build_m2_model(1, 2, 2, "discrete", 0.01, hidden=(8,), num_restarts=2)
    loss = (TraceEnum_ELBO(max_plate_nesting=2).differentiable_loss(model, config_enumerate(guide, "parallel"), x)
            if kind == "enum" else Trace_ELBO(max_plate_nesting=2).differentiable_loss(model, guide, x))
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="z_given_y=1"):
        build_m2_guide(kind, 2, 1, 2, z_given_y=1)


class _PyroStyleGuide:
    """An M2 guide as a Pyro user writes one: a callable (not an nn.Module) registering its networks with
    ``pyro.module`` — its parameters reach the trainer only through the trace's param sites."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, x, y=None):
        pyro.module("m2_guide", self.inner)
        return self.inner(x, y)


@pytest.mark.parametrize("lagging", [False, True])
def test_a_guide_whose_parameters_are_pyro_params_is_trained(lagging):
    from pyro_vae.inference.m2_lagging import train_m2_lagging

    ds = get_dataset("discrete_semicircle", labelled_fraction=0.2)
    train = _subset(ds.splits(seed=0).train, 200)
    model = build_m2_model(1, 2, 2, "discrete", 0.01, hidden=(8,))
    guide = _PyroStyleGuide(build_m2_guide("relaxed", 2, 1, 2, hidden=(8,)))
    before = [p.detach().clone() for p in guide.inner.parameters()]
    fit = train_m2_lagging if lagging else train_m2
    fit(model, guide, train, epochs=1, batch_size=100, progress=False)
    assert all(not torch.equal(a, b) for a, b in zip(before, guide.inner.parameters()))
