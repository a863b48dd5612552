"""The shared training engine: groups of runs equal the runs trained alone; cadence; optimisers."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from common import PerRestartNoise, assert_close
from guides.mean_field import MeanFieldGuide
from pyro_vae.inference import TrainingError, train
from pyro_vae.inference.lagging import train_lagging
from pyro_vae.inference.trainer import Minibatches, make_optimizer
from pyro_vae.models import build_vae_model
from pyro_vae.nets import select_restart


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g)
    return torch.cat([torch.cos(2 * z), torch.sin(3 * z)], -1) + 0.1 * torch.randn(n, 2, generator=g)


def _model_guide(num_restarts=None, seed=0):
    torch.manual_seed(seed)
    return (build_vae_model(1, 2, 0.01, hidden=(16, 16), num_restarts=num_restarts),
            MeanFieldGuide(2, 1, hidden=(16, 16), num_restarts=num_restarts))


def _params(model, guide):
    return list(model.parameters()) + list(guide.parameters())


GROUP_CASES = [
    ("elbo", dict(objective="elbo")),
    ("iwae", dict(objective="iwae", num_particles=3)),
    # LIN with schedules that agree across the group: every inner loop stops after two windows
    # (threshold never met after the first), and every restart leaves aggressive mode after epoch 1.
    ("lin", dict(threshold=1e9, window=2, max_inner_steps=10, mi_threshold=1e9)),
]


@pytest.mark.parametrize("name,kw", GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
def test_a_run_trained_in_a_group_equals_the_run_trained_alone(monkeypatch, name, kw):
    """Three runs (own data version, own minibatch seed) in one vectorised loop: each restart
    follows its run trained alone — same init, minibatches and noise — to float tolerance."""
    xs = [_data(120, seed=v) for v in (1, 2, 3)]
    seeds = [7, 8, 9]
    group_model, group_guide = _model_guide(num_restarts=3)
    singles = [(select_restart(group_model, r), select_restart(group_guide, r)) for r in range(3)]
    noise = PerRestartNoise(3)
    monkeypatch.setattr(dist.Normal, "rsample", lambda self, s=torch.Size(): noise.rsample(self, s))
    fit = train_lagging if name == "lin" else train
    common = dict(epochs=3, batch_size=40, progress=False, **kw)
    grouped = fit(group_model, group_guide, xs, [x[:60] for x in xs], seed=seeds, group_restarts=[1, 1, 1], **common)
    for r, (model, guide) in enumerate(singles):
        noise.reset(single=r)
        alone = fit(model, guide, xs[r], xs[r][:60], seed=seeds[r], **common)
        ref_model, ref_guide = select_restart(group_model, r), select_restart(group_guide, r)
        for a, b in zip(_params(model, guide), _params(ref_model, ref_guide)):
            assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"{name}: run {r} parameters")
        assert_close(alone.val_objective[0], grouped.val_objective[r], rtol=1e-4, msg=f"{name}: run {r} validation")
    assert len({round(float(v), 6) for v in grouped.val_objective}) == 3  # really three different runs


def test_lin_runs_with_different_schedules_train_as_one_group(monkeypatch):
    """Runs with their own T and R (004 App. D's LIN grid) in one vectorised loop: each follows its
    run trained alone, inner-loop lengths included. Noise-free draws (z = the encoder's mean), so a
    restart whose inner loop stopped early consumes nothing that the others use."""
    xs = [_data(120, seed=v) for v in (1, 2, 3)]
    seeds, thresholds, windows = [7, 8, 9], [1e9, 0.0, 0.05], [2, 3, 4]
    group_model, group_guide = _model_guide(num_restarts=3)
    singles = [(select_restart(group_model, r), select_restart(group_guide, r)) for r in range(3)]
    monkeypatch.setattr(dist.Normal, "rsample", lambda self, s=torch.Size(): self.loc.expand(self._extended_shape(s)))
    common = dict(epochs=2, batch_size=40, progress=False, max_inner_steps=12, mi_threshold=-1e9)
    grouped = train_lagging(group_model, group_guide, xs, [x[:60] for x in xs], seed=seeds, group_restarts=[1, 1, 1],
                            threshold=thresholds, window=windows, **common)
    inner = {}
    for r, (model, guide) in enumerate(singles):
        alone = train_lagging(model, guide, xs[r], xs[r][:60], seed=seeds[r], threshold=thresholds[r],
                              window=windows[r], **common)
        for a, b in zip(_params(model, guide), _params(select_restart(group_model, r), select_restart(group_guide, r))):
            assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"run {r} parameters")
        assert_close(alone.val_objective[0], grouped.val_objective[r], rtol=1e-4, msg=f"run {r} validation")
        inner[r] = [row["inner_steps"] for row in alone.history]
        assert inner[r] == [row["inner_steps"] for row in grouped.history if row["restart"] == r]
    assert len({tuple(v) for v in inner.values()}) > 1  # the schedules really differ


def test_beta_runs_with_different_betas_train_as_one_group(monkeypatch):
    """β-VAE runs with their own β (000 Table 1's grid), warmed up, in one vectorised loop: each
    restart follows its run trained alone (same init, minibatches and noise)."""
    xs = [_data(120, seed=v) for v in (1, 2, 3)]
    seeds, betas = [7, 8, 9], [0.5, 2.0, 5.0]
    group_model, group_guide = _model_guide(num_restarts=3)
    singles = [(select_restart(group_model, r), select_restart(group_guide, r)) for r in range(3)]
    noise = PerRestartNoise(3)
    monkeypatch.setattr(dist.Normal, "rsample", lambda self, s=torch.Size(): noise.rsample(self, s))
    common = dict(objective="beta", anneal_epochs=2, epochs=3, batch_size=40, progress=False)
    grouped = train(group_model, group_guide, xs, [x[:60] for x in xs], seed=seeds, group_restarts=[1, 1, 1],
                    beta=betas, **common)
    for r, (model, guide) in enumerate(singles):
        noise.reset(single=r)
        alone = train(model, guide, xs[r], xs[r][:60], seed=seeds[r], beta=betas[r], **common)
        for a, b in zip(_params(model, guide), _params(select_restart(group_model, r), select_restart(group_guide, r))):
            assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"run {r} parameters")
        assert_close(alone.val_objective[0], grouped.val_objective[r], rtol=1e-4, msg=f"run {r} validation")
    assert len({round(float(v), 6) for v in grouped.val_objective}) == 3  # really three different runs


def test_per_run_betas_are_checked():
    model, guide = _model_guide(num_restarts=2)
    x = _data(50, seed=0)
    with pytest.raises(ValueError, match="one value per run needs a group"):
        train(model, guide, x, objective="beta", beta=[1.0, 2.0], epochs=1, progress=False)
    with pytest.raises(ValueError, match="beta=-1"):
        train(model, guide, [x, x], objective="beta", beta=[1.0, -1.0], seed=[0, 1], group_restarts=[1, 1],
              epochs=1, progress=False)


def test_per_run_schedules_are_checked():
    model, guide = _model_guide(num_restarts=2)
    x = _data(50, seed=0)
    with pytest.raises(ValueError, match="needs group_restarts"):
        train_lagging(model, guide, x, threshold=[0.1, 0.1], window=5, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"expected one per run \(2\)"):
        train_lagging(model, guide, [x, x], threshold=[0.1], window=5, seed=[0, 1], group_restarts=[1, 1],
                      epochs=1, progress=False)
    with pytest.raises(ValueError, match="window=0"):
        train_lagging(model, guide, [x, x], threshold=0.1, window=[5, 0], seed=[0, 1], group_restarts=[1, 1],
                      epochs=1, progress=False)


def test_group_minibatches_are_each_runs_own():
    xs = [torch.arange(10.0).reshape(5, 2), 100 + torch.arange(10.0).reshape(5, 2)]
    group = Minibatches(xs, 2, [3, 4], restarts=[2, 1])
    alone = [Minibatches(x, 2, s) for x, s in zip(xs, [3, 4])]
    group.new_epoch(), [b.new_epoch() for b in alone]
    batch = group.batch(1)
    assert batch.shape == (3, 2, 2)
    assert torch.equal(batch[0], alone[0].batch(1)) and torch.equal(batch[1], alone[0].batch(1))
    assert torch.equal(batch[2], alone[1].batch(1))


def test_validation_cadence_keeps_the_final_selection():
    x = _data(100, 1)
    every = train(*_model_guide(2), x, x, epochs=4, batch_size=50, seed=3, progress=False)
    sparse = train(*_model_guide(2), x, x, epochs=4, batch_size=50, seed=3, progress=False, val_every=3)
    assert [row["epoch"] for row in sparse.history] == [3, 3, 4, 4]
    assert_close(sparse.val_objective, every.val_objective, rtol=1e-5, msg="last epoch's validation")
    assert sparse.best_restart == every.best_restart


def test_optimisers_are_pluggable():
    x = _data(100, 1)
    base = train(*_model_guide(), x, epochs=2, batch_size=50, seed=3, progress=False, lr=1e-3)
    as_class = train(*_model_guide(), x, epochs=2, batch_size=50, seed=3, progress=False, lr=1e-3,
                     optimizer=torch.optim.Adam)
    as_pyro = train(*_model_guide(), x, epochs=2, batch_size=50, seed=3, progress=False,
                    optimizer=pyro.optim.Adam({"lr": 1e-3}))
    sgd = train(*_model_guide(), x, epochs=2, batch_size=50, seed=3, progress=False,
                optimizer=lambda p: torch.optim.SGD(p, lr=1e-4))
    assert_close(as_class.val_objective, base.val_objective, rtol=1e-6, msg="torch class")
    assert_close(as_pyro.val_objective, base.val_objective, rtol=1e-6, msg="pyro.optim")
    assert not torch.allclose(sgd.val_objective, base.val_objective)
    with pytest.raises(ValueError, match="optimizer="):
        make_optimizer([torch.zeros(1, requires_grad=True)], optimizer=3)


def test_bad_group_arguments_fail_before_work():
    model, guide = _model_guide(3)
    xs = [_data(60, v) for v in (1, 2)]
    with pytest.raises(ValueError, match="group_restarts"):
        train(model, guide, xs, epochs=1, batch_size=20, group_restarts=[1, 1], progress=False)
    with pytest.raises(ValueError, match="val_every"):
        train(model, guide, xs[0], epochs=1, batch_size=20, val_every=0, progress=False)


def test_nan_in_a_group_names_step_and_restart():
    model, guide = _model_guide(2)
    xs = [_data(60, 1), _data(60, 2)]
    with torch.no_grad():
        model.decoder.net[0].weight[1].fill_(float("nan"))
    with pyro.validation_enabled(False), pytest.raises(TrainingError, match=r"step 1 \(epoch 1\).*restart 1"):
        train(model, guide, xs, epochs=1, batch_size=20, seed=[0, 1], group_restarts=[1, 1], progress=False)


def test_near_equal_batches_cover_every_row_once_in_batches_differing_by_at_most_one():
    """LiBI's minibatches (its Henze-Zirkler term needs K + 2 rows per batch): no short last batch."""
    from pyro_vae.inference.trainer import NearEqualBatches

    x = torch.arange(23.0).reshape(23, 1)
    batches = NearEqualBatches(x, 10, seeds=4)
    for _ in range(2):
        batches.new_epoch()
        parts = [batches.batch(i) for i in range(batches.steps_per_epoch)]
        assert [p.shape[0] for p in parts] == [8, 8, 7]
        assert sorted(torch.cat(parts).reshape(-1).tolist()) == x.reshape(-1).tolist()


def test_an_earlier_models_tensors_in_the_param_store_are_not_collected():
    """A sweep's worker trains groups of different sizes one after another, and Pyro's param store
    keeps the earlier model's tensors under the same names: only the current modules' parameters
    are trained (LIN's per-restart optimiser used to collect the stale ones and refuse their shape)."""
    from pyro_vae.inference.svi import collect_parameters

    pyro.clear_param_store()
    try:
        x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
        earlier_model, earlier_guide = build_vae_model(1, 2, 0.1, num_restarts=5), MeanFieldGuide(2, 1, num_restarts=5)
        pyro.module(earlier_model.name, earlier_model)
        pyro.module(earlier_guide.name, earlier_guide)
        model, guide = build_vae_model(1, 2, 0.1, num_restarts=3), MeanFieldGuide(2, 1, num_restarts=3)
        found = collect_parameters(model, guide, example_args=(x[:4],))
        assert {id(p) for p in found} == {id(p) for p in [*model.parameters(), *guide.parameters()]}
        result = train_lagging(model, guide, x, x, epochs=1, batch_size=20, progress=False)
        assert result.val_objective.shape == (3,) and bool(torch.isfinite(result.val_objective).all())
    finally:
        pyro.clear_param_store()
