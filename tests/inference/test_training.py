import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from common import PerRestartNoise, assert_close
from guides.mean_field import MeanFieldGuide
from pyro_vae.inference import TrainingError, train
from pyro_vae.models import build_vae_model
from pyro_vae.nets import select_restart


def _data(n=200, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g)
    return torch.cat([torch.cos(2 * z), torch.sin(3 * z)], -1) + 0.1 * torch.randn(n, 2, generator=g)


def _model_guide(num_restarts=None, seed=0):
    torch.manual_seed(seed)
    return (
        build_vae_model(1, 2, 0.01, hidden=(20, 20), num_restarts=num_restarts),
        MeanFieldGuide(2, 1, hidden=(20, 20), num_restarts=num_restarts),
    )


@pytest.mark.parametrize("objective,particles", [("elbo", 1), ("iwae", 3)])
def test_batched_restarts_follow_single_runs(monkeypatch, objective, particles):
    x = _data()
    batched_model, batched_guide = _model_guide(num_restarts=3)
    singles = [(select_restart(batched_model, r), select_restart(batched_guide, r)) for r in range(3)]
    noise = PerRestartNoise(3)
    monkeypatch.setattr(dist.Normal, "rsample", lambda self, s=torch.Size(): noise.rsample(self, s))
    kw = dict(objective=objective, num_particles=particles, epochs=3, batch_size=50, seed=7, progress=False)
    batched = train(batched_model, batched_guide, x, **kw)
    for r, (model, guide) in enumerate(singles):
        noise.reset(single=r)
        single = train(model, guide, x, **kw)
        ref_model, ref_guide = select_restart(batched_model, r), select_restart(batched_guide, r)
        for a, b in zip(list(model.parameters()) + list(guide.parameters()),
                        list(ref_model.parameters()) + list(ref_guide.parameters())):
            assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"restart {r} parameters")
        assert_close(single.val_objective[0], batched.val_objective[r], rtol=1e-4, msg=f"restart {r} validation")
    # the restarts really are different runs
    assert not torch.allclose(batched.val_objective[0], batched.val_objective[1])


def test_loss_falls_and_best_restart_is_selected():
    x = _data(500)
    model, guide = _model_guide(num_restarts=2)
    res = train(model, guide, x, x[:100], epochs=15, batch_size=50, seed=0, progress=False, lr=3e-3)
    first = [h["train_loss"] for h in res.history if h["epoch"] == 1]
    last = [h["train_loss"] for h in res.history if h["epoch"] == 15]
    assert all(b < a - 0.5 for a, b in zip(first, last)), (first, last)
    assert res.best_restart == int(res.val_objective.argmax())
    assert res.steps == 15 * 10 and len(res.history) == 30


def test_same_seed_same_numbers():
    x = _data()
    runs = []
    for _ in range(2):
        model, guide = _model_guide()
        runs.append(train(model, guide, x, epochs=2, batch_size=50, seed=3, progress=False).history)
    assert runs[0] == runs[1]


def test_nan_loss_stops_with_the_step():
    x = _data()
    model, guide = _model_guide()
    calls = {"n": 0}
    forward = model.decoder.forward

    def poisoned(z):
        calls["n"] += 1
        out = forward(z)
        return out * float("nan") if calls["n"] > 7 else out

    model.decoder.forward = poisoned
    with pytest.raises(TrainingError, match=r"step 6 \(epoch 2\)"):
        train(model, guide, x, epochs=3, batch_size=50, progress=False)
    calls["n"] = 0
    with pyro.validation_enabled(False), pytest.raises(TrainingError, match=r"nan at step 6 \(epoch 2\) in restart 0"):
        train(model, guide, x, epochs=3, batch_size=50, progress=False)


def test_custom_guide_callable_is_first_class():
    """A user's own guide: a plain function with pyro.param sites and the "z" site in "data"."""
    x = _data(300)
    torch.manual_seed(0)
    model = build_vae_model(1, 2, 0.01, hidden=(20, 20))

    def linear_guide(x):
        w = pyro.param("w", torch.zeros(2, 1))
        b = pyro.param("b", torch.zeros(1))
        log_s = pyro.param("log_s", torch.zeros(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ w + b, log_s.exp()).to_event(1))

    res = train(model, linear_guide, x, epochs=10, batch_size=50, progress=False, lr=1e-2)
    first, last = res.history[0]["train_loss"], res.history[-1]["train_loss"]
    assert last < first - 1.0
    assert pyro.param("w").abs().sum() > 0  # the guide's own parameters were trained


def test_models_work_with_pyro_svi():
    x = _data(100)
    model, guide = _model_guide()
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(60)]
    assert sum(losses[-10:]) < sum(losses[:10])
    names = set(pyro.get_param_store().keys())
    assert any(n.startswith("model$$$") for n in names) and any(n.startswith("guide$$$") for n in names)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(epochs=0), "epochs=0"),
        (dict(batch_size=500), "batch_size=500: larger than the 200"),
        (dict(objective="vae"), "objective='vae'"),
        (dict(lr=-1.0), "lr=-1.0"),
        (dict(anneal_epochs=-2), "anneal_epochs=-2"),
    ],
)
def test_bad_arguments_fail_before_work(kwargs, match):
    model, guide = _model_guide()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=match):
        train(model, guide, _data(), progress=False, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_beta_annealing_changes_the_objective():
    x = _data()
    results = []
    for anneal in (0, 3):
        model, guide = _model_guide()
        results.append(train(model, guide, x, objective="beta", beta=2.0, anneal_epochs=anneal,
                             epochs=2, batch_size=50, progress=False).history[0]["train_loss"])
    # warm-up starts from beta≈0, so the first epoch's loss (KL down-weighted) is lower
    assert results[1] < results[0]
