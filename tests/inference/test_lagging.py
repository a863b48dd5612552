"""Lagging Inference Networks: masked per-restart Adam, the encoder-only inner loop, leaving
aggressive mode, 000's segment variant, options and the CLI."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from common import assert_close
from guides.mean_field import MeanFieldGuide
from pyro_vae.cli import main
from pyro_vae.inference import TrainingError, VariationalObjective
from pyro_vae.inference import lagging
from pyro_vae.inference.lagging import RestartAdam, encoder_inner_loop, train_lagging, train_lagging_segments
from pyro_vae.inference.methods import resolve_options
from pyro_vae.models import build_vae_model, unregistered
from pyro_vae.nets import select_restart


def _data(n=200, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g)
    return torch.cat([torch.cos(2 * z), torch.sin(3 * z)], -1) + 0.1 * torch.randn(n, 2, generator=g)


def _model_guide(num_restarts=2, seed=0):
    torch.manual_seed(seed)
    return (
        build_vae_model(1, 2, 0.01, hidden=(16, 16), num_restarts=num_restarts),
        MeanFieldGuide(2, 1, hidden=(16, 16), num_restarts=num_restarts),
    )


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def test_restart_adam_is_adam_and_leaves_masked_restarts_bit_for_bit():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(2, 3, 4))
    ref = torch.nn.Parameter(p.detach()[0].clone())
    opt, torch_opt = RestartAdam([p], 2, lr=0.01), torch.optim.Adam([ref], lr=0.01)
    start = p.detach().clone()
    for _ in range(4):  # restart 1 masked throughout: its slice and moments never move
        g = torch.randn(2, 3, 4)
        p.grad, ref.grad = g.clone(), g[0].clone()
        opt.step(torch.tensor([True, False]))
        torch_opt.step()
    assert torch.equal(p.detach()[1], start[1])
    assert torch.equal(opt.exp_avg[0][1], torch.zeros(3, 4)) and torch.equal(opt.exp_avg_sq[0][1], torch.zeros(3, 4))
    assert opt.steps.tolist() == [4.0, 0.0]
    assert_close(p.detach()[0], ref.detach(), rtol=1e-5, atol=1e-7, msg="restart 0 follows torch's Adam")
    # restart 1's first step now is a first Adam step (its own bias correction): lr * sign(g)
    g = torch.randn(2, 3, 4)
    p.grad = g
    before = p.detach().clone()
    opt.step(torch.tensor([False, True]))
    assert torch.equal(p.detach()[0], before[0])
    assert_close(p.detach()[1], start[1] - 0.01 * g[1].sign(), rtol=1e-5, atol=1e-6, msg="first step of restart 1")


def test_inner_loop_leaves_decoder_and_masked_restarts_untouched():
    x = _data(100)
    model, guide = _model_guide()
    decoder, encoder = list(model.parameters()), list(guide.parameters())
    enc_opt = RestartAdam(encoder, 2, lr=1e-2)
    elbo = VariationalObjective("elbo")
    loss_fn = lambda xb: -elbo.per_point(model, guide, xb).sum(-1)  # noqa: E731
    dec0, enc0 = _snapshot(model), _snapshot(guide)
    with unregistered():
        taken = encoder_inner_loop(loss_fn, enc_opt, decoder, lambda j: x[(j * 20) % 100 :][:50],
                                   torch.tensor([True, False]), threshold=-math.inf, window=3, max_steps=7)
    assert taken.tolist() == [7, 0]
    assert all(torch.equal(a, b) for a, b in zip(dec0, model.parameters())), "decoder moved in the encoder-only loop"
    assert all(p.grad is None for p in decoder) and all(p.requires_grad for p in decoder)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(enc0, guide.parameters())), "masked restart's encoder moved"
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(enc0, guide.parameters())), "active encoder did not train"


def test_inner_loop_stops_when_the_window_mean_falls_by_less_than_threshold():
    """T and R of 004 App. D: compare R-step mean losses; stop when the fall is below T."""
    p = torch.nn.Parameter(torch.zeros(2, 1))
    opt = RestartAdam([p], 2, lr=1e-3)
    calls = {"j": 0}

    def loss_fn(xb):  # restart 0 falls by 1 nat per point per step, restart 1 is flat
        j = calls["j"]
        calls["j"] += 1
        return (p[:, 0] * 0 + torch.tensor([100.0 - j, 5.0])) * xb.shape[0]

    taken = encoder_inner_loop(loss_fn, opt, [], lambda j: torch.zeros(10, 2), torch.tensor([True, True]),
                               threshold=0.5, window=3, max_steps=12)
    assert taken.tolist() == [12, 6]  # restart 1: first window always continues, second did not fall


def test_aggressive_mode_ends_for_good_when_mutual_info_stops_rising(monkeypatch):
    script = iter([[1.0, 1.0], [2.0, 2.0], [3.0, 1.5], [4.0, 3.0]])  # restart 1's I_q drops after epoch 3
    monkeypatch.setattr(lagging, "_mutual_info", lambda guide, x, seed: torch.tensor(next(script), dtype=torch.float64))
    model, guide = _model_guide()
    res = train_lagging(model, guide, _data(100), epochs=4, batch_size=50, max_inner_steps=3, progress=False)
    rows = {(h["epoch"], h["restart"]): h for h in res.history}
    assert [rows[e, 0]["aggressive"] for e in range(1, 5)] == [True] * 4
    assert [rows[e, 1]["aggressive"] for e in range(1, 5)] == [True, True, True, False]
    assert rows[4, 1]["inner_steps"] == 0 and rows[4, 1]["mutual_info"] is None
    assert rows[3, 0]["inner_steps"] == 2 * 3 and rows[3, 1]["mutual_info"] == 1.5
    assert res.steps == 4 * 2 * (1 + 3)


def test_lin_loss_falls_and_best_restart_is_selected():
    x = _data(200)
    model, guide = _model_guide()
    res = train_lagging(model, guide, x, x[:100], epochs=6, batch_size=50, lr=3e-3, max_inner_steps=20, progress=False)
    first = [h["train_loss"] for h in res.history if h["epoch"] == 1]
    last = [h["train_loss"] for h in res.history if h["epoch"] == 6]
    assert all(b < a - 2.0 for a, b in zip(first, last)), (first, last)
    assert res.best_restart == int(res.val_objective.argmax()) and len(res.history) == 12
    assert {"epoch", "restart", "train_loss", "val_objective", "aggressive", "inner_steps", "mutual_info"} <= set(res.history[0])
    assert all(h["inner_steps"] >= 4 * 10 for h in res.history if h["epoch"] == 1)  # 2 windows of 5 at least


class PerRestartNoise:
    """Reparameterisation noise from one generator per restart (as in test_training)."""

    def __init__(self, restarts, single=None):
        self.gens = [torch.Generator().manual_seed(100 + r) for r in range(restarts)]
        self.single = single

    def rsample(self, normal, sample_shape=torch.Size()):
        shape = normal._extended_shape(sample_shape)
        per = shape[:-3] + shape[-2:]
        if self.single is not None:
            eps = torch.randn(shape, generator=self.gens[self.single])
        else:
            eps = torch.stack([torch.randn(per, generator=g) for g in self.gens], dim=-3)
        return normal.loc + eps.expand(shape) * normal.scale


def test_batched_restarts_follow_single_runs_while_their_schedules_agree(monkeypatch):
    """window > max_inner_steps: every inner loop runs its 3 steps, so restarts share a schedule."""
    x = _data(100)
    batched_model, batched_guide = _model_guide(num_restarts=2)
    singles = [(select_restart(batched_model, r), select_restart(batched_guide, r)) for r in range(2)]
    noise = PerRestartNoise(2)
    monkeypatch.setattr(dist.Normal, "rsample", lambda self, s=torch.Size(): noise.rsample(self, s))
    kw = dict(epochs=2, batch_size=50, window=5, max_inner_steps=3, seed=4, progress=False)
    batched = train_lagging(batched_model, batched_guide, x, **kw)
    for r, (model, guide) in enumerate(singles):
        noise.__init__(2, single=r)
        single = train_lagging(model, guide, x, **kw)
        for a, b in zip(list(model.parameters()) + list(guide.parameters()),
                        list(select_restart(batched_model, r).parameters()) + list(select_restart(batched_guide, r).parameters())):
            assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"restart {r} parameters")
        assert_close(single.val_objective[0], batched.val_objective[r], rtol=1e-4, msg=f"restart {r} validation")


def test_segments_encoder_phase_leaves_decoder_untouched():
    x = _data(200)
    model, guide = _model_guide()
    dec0, enc0 = _snapshot(model), _snapshot(guide)
    seen = {}

    def callback(step, row):
        if row["epoch"] == 1 and row["restart"] == 0:
            seen["decoder"], seen["encoder"] = _snapshot(model), _snapshot(guide)

    res = train_lagging_segments(model, guide, x, segments=2, epochs=4, batch_size=50, progress=False, callback=callback)
    assert all(torch.equal(a, b) for a, b in zip(dec0, seen["decoder"])), "decoder moved while the encoder trained alone"
    assert any(not torch.equal(a, b) for a, b in zip(enc0, seen["encoder"]))
    assert any(not torch.equal(a, b) for a, b in zip(dec0, model.parameters())), "joint phase did not train the decoder"
    assert [h["encoder_steps"] for h in res.history if h["restart"] == 0] == [4, 0, 4, 0]
    assert res.steps == 16 and res.best_restart == int(res.val_objective.argmax())


def test_nan_in_the_inner_loop_names_where():
    model, guide = _model_guide(num_restarts=None)
    forward, calls = model.decoder.forward, {"n": 0}

    def poisoned(z):
        calls["n"] += 1
        return forward(z) * float("nan") if calls["n"] > 5 else forward(z)

    model.decoder.forward = poisoned
    with pyro.validation_enabled(False), pytest.raises(TrainingError, match=r"encoder-only step after step 0 \(epoch 1\)"):
        train_lagging(model, guide, _data(100), epochs=1, batch_size=50, progress=False)


@pytest.mark.parametrize(
    "method,options,match",
    [
        ("lin", {"threshold": "high"}, "threshold='high'"),
        ("lin", {"window": 0}, "window=0"),
        ("lin", {"max_inner_steps": 2.5}, "max_inner_steps=2.5"),
        ("lin", {"mi_threshold": float("nan")}, "mi_threshold=nan"),
        ("lin", {"segments": 3}, "option 'segments' is not one of method 'lin'"),
        ("lin_segments", {"segments": 0}, "segments=0"),
        ("lin_segments", {"encoder_fraction": 1.0}, "encoder_fraction=1.0"),
    ],
)
def test_bad_options_raise_value_error(method, options, match):
    with pytest.raises(ValueError, match=match):
        resolve_options(method, options)


def test_bad_arguments_fail_before_work():
    model, guide = _model_guide()
    before = _snapshot(model) + _snapshot(guide)
    with pytest.raises(ValueError, match="segments=9: more than half the 16"):
        train_lagging_segments(model, guide, _data(200), segments=9, epochs=4, batch_size=50, progress=False)
    with pytest.raises(ValueError, match="window=-1"):
        train_lagging(model, guide, _data(200), window=-1, progress=False)
    with pytest.raises(ValueError, match="distribution"):
        train_lagging(model, lambda x: pyro.param("w", torch.zeros(2, 1)), _data(200), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(model) + _snapshot(guide)))


def test_cli_trains_lin_end_to_end(tmp_path, capsys):
    argv = ["train", "circle", "--method", "lin", "--epochs", "2", "--restarts", "2", "--eval-samples", "100",
            "--hidden", "8", "--json", "--quiet", "--out", str(tmp_path), "--option", "max_inner_steps=10",
            "--batch-size", "1000"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["best_restart"] in (0, 1) and math.isfinite(summary["metrics"]["test_loglik"])
    header = (tmp_path.glob("*/history.csv").__next__()).read_text().splitlines()[0].split(",")
    assert {"aggressive", "inner_steps", "mutual_info"} <= set(header)
