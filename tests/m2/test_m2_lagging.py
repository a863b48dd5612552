"""Lagging Inference Networks for M2: guide-only inner loops, training, the pipeline and CLI wiring."""

from __future__ import annotations

import json

import pytest
import torch

from guides.m2 import build_m2_guide
from pyro_vae.cli import main
from pyro_vae.datasets import get_dataset
from pyro_vae.datasets.base import LabelledSplit
from pyro_vae.inference.lagging import RestartAdam, encoder_inner_loop
from pyro_vae.inference.m2 import _parts, m2_objective, validation_objective_m2
from pyro_vae.inference.m2_lagging import m2_mutual_info, predicted_labels, train_m2_lagging
from pyro_vae.inference.svi import collect_parameters
from pyro_vae.models import unregistered
from pyro_vae.models_m2 import build_m2_model
from pyro_vae.pipeline_m2 import M2Config


def _tiny(n: int, seed: int = 0) -> LabelledSplit:
    s = get_dataset("discrete_semicircle", labelled_fraction=0.2).splits(seed).train
    return LabelledSplit(s.x[:n], s.z[:n], s.y[:n], s.labelled[:n])


def _pair(restarts=2, guide="enum", z_given_y=True, seed=0):
    torch.manual_seed(seed)
    model = build_m2_model(1, 2, 2, "discrete", 0.01, hidden=(8,), num_restarts=restarts)
    return model, build_m2_guide(guide, 2, 1, 2, hidden=(8,), z_given_y=z_given_y, num_restarts=restarts)


def test_guide_only_inner_loop_leaves_the_decoder_unchanged():
    model, guide = _pair()
    train = _tiny(200)
    decoder = collect_parameters(model)
    encoder = collect_parameters(guide)
    before_dec = [p.detach().clone() for p in decoder]
    before_enc = [p.detach().clone() for p in encoder]
    optim = RestartAdam(encoder, 2, lr=1e-2)

    def loss_fn(idx):
        return -m2_objective(model, guide, *_parts(train, idx), alpha=0.1, gamma=1.0)

    gen = torch.Generator().manual_seed(0)
    with unregistered():
        taken = encoder_inner_loop(loss_fn, optim, decoder, lambda j: torch.randperm(200, generator=gen)[:50],
                                   torch.tensor([True, False]), threshold=-1e9, window=2, max_steps=6)
    assert taken.tolist() == [6, 0]
    assert all(torch.equal(a, b) for a, b in zip(before_dec, decoder))  # the decoder, bit for bit
    assert all(p.requires_grad for p in decoder)  # unfrozen afterwards
    moved = [not torch.equal(a[0], b[0]) for a, b in zip(before_enc, encoder)]
    assert any(moved)  # restart 0's q(y|x) and q(z|x,y) moved ...
    assert all(torch.equal(a[1], b[1]) for a, b in zip(before_enc, encoder))  # ... restart 1's did not


def test_training_raises_j_with_two_restarts():
    model, guide = _pair()
    train, val = _tiny(400), _tiny(200, seed=1)
    before = validation_objective_m2(model, guide, val, alpha=0.1, gamma=1.0)
    result = train_m2_lagging(model, guide, train, val, alpha=0.1, gamma=1.0, epochs=3, batch_size=100, lr=1e-2,
                              max_inner_steps=20, mi_threshold=-1e9, progress=False)
    assert result.val_objective.shape == (2,) and (result.val_objective > before).all()
    rows = result.history
    assert len(rows) == 6 and {r["restart"] for r in rows} == {0, 1}
    assert all(r["aggressive"] for r in rows) and all(r["inner_steps"] > 0 for r in rows)
    assert all(r["mutual_info"] is not None and r["mutual_info"] >= -1e-6 for r in rows)
    first = [r["train_loss"] for r in rows if r["epoch"] == 1]
    last = [r["train_loss"] for r in rows if r["epoch"] == 3]
    assert all(b < a for a, b in zip(first, last))  # −J per point fell
    assert result.steps > 3 * 4  # inner steps counted beside the outer ones


def test_aggressive_mode_ends_when_mutual_info_stops_rising():
    model, guide = _pair(restarts=2, guide="relaxed", z_given_y=False)
    train = _tiny(200)
    result = train_m2_lagging(model, guide, train, objective="iwae", num_particles=2, epochs=3, batch_size=100,
                              max_inner_steps=5, mi_threshold=1e9, progress=False)
    by_epoch = {e: [r for r in result.history if r["epoch"] == e] for e in (1, 2, 3)}
    # the first epoch only sets the reference I_q; it cannot rise by 1e9 nats in the second
    assert all(r["aggressive"] and r["mutual_info"] is not None for r in by_epoch[1] + by_epoch[2])
    assert all(not r["aggressive"] and r["inner_steps"] == 0 and r["mutual_info"] is None for r in by_epoch[3])


def test_mutual_info_uses_the_predicted_label():
    _, guide = _pair(restarts=2)
    x = _tiny(100).x
    y_hat = predicted_labels(guide, x)
    assert y_hat.shape == (2, 100, 2) and torch.equal(y_hat.sum(-1), torch.ones(2, 100))
    mi = m2_mutual_info(guide, x)
    assert mi.shape == (2,) and (mi <= torch.log(torch.tensor(100.0)) + 1e-5).all()


@pytest.mark.parametrize("name, value", [("threshold", float("nan")), ("window", 0), ("max_inner_steps", 1.5),
                                         ("mi_threshold", "0"), ("epochs", 0), ("objective", "kl"), ("alpha", -1.0)])
def test_bad_trainer_options_name_themselves(name, value):
    model, guide = _pair()
    kwargs = {"epochs": 1, "batch_size": 50, "progress": False, name: value}
    with pytest.raises(ValueError, match=name):
        train_m2_lagging(model, guide, _tiny(100), **kwargs)


@pytest.mark.parametrize("field, value", [("lagging", 1), ("lin_threshold", float("inf")), ("lin_threshold", True),
                                          ("lin_window", 0), ("lin_window", 2.0)])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        M2Config("discrete_semicircle", **{field: value}).validate()


def test_cli_lagging_run(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["train-m2", "discrete_semicircle", "--lagging", "--epochs", "2", "--restarts", "2", "--hidden", "8",
                 "--batch-size", "1000", "--eval-samples", "300", "--quiet", "--json", "--out", str(out)])
    printed, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(printed)
    config = json.loads((tmp_path / "runs" / summary["run_dir"].split("/")[-1] / "config.json").read_text())
    assert (config["lagging"], config["lin_threshold"], config["lin_window"]) == (True, 0.1, 5)
    history = (tmp_path / "runs" / summary["run_dir"].split("/")[-1]).glob("history*")
    assert list(history) and len(summary["metrics"]["val_objective_per_restart"]) == 2


def test_cli_bad_lin_window_exits_2(tmp_path, capsys):
    code = main(["train-m2", "discrete_semicircle", "--method", "lin", "--option", "window=0", "--out", str(tmp_path)])
    _, err = capsys.readouterr()
    assert code == 2 and "--option window=0" in err
    code = main(["train-m2", "discrete_semicircle", "--lagging", "--lin-window", "0", "--out", str(tmp_path)])
    _, err = capsys.readouterr()
    assert code == 2 and "--lin-window" in err and "'0'" in err  # the older spelling still names itself
