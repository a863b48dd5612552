"""Bad input to the public Python functions: one ValueError naming the argument, before any work.

Also the other side: float64 data (what ``torch.from_numpy`` gives) and NumPy arrays are
accepted and converted, not refused.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from guides.mean_field import MeanFieldGuide
from pyro_vae import checks
from pyro_vae.datasets import get_dataset
from pyro_vae.inference import train
from pyro_vae.models import build_vae_model


def _pair(restarts=2):
    return build_vae_model(1, 2, noise_var=0.02, hidden=(4,), num_restarts=restarts), MeanFieldGuide(2, 1, (4,), num_restarts=restarts)


def _x(n=20, d=2, dtype=torch.float32):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=dtype)


NAN = _x()
NAN[3, 1] = float("nan")
INF = _x()
INF[0, 0] = float("inf")

TRAIN_CASES = [
    ("width", dict(x_train=_x(d=3)), "x_train has 3 columns: the model expects D=2"),
    ("nan", dict(x_train=NAN), "x_train has 1 non-finite value(s) (first at row 3, column 1"),
    ("inf", dict(x_train=INF), "x_train has 1 non-finite value(s) (first at row 0, column 0: inf)"),
    ("nan-in-val", dict(x_val=NAN), "x_val has 1 non-finite"),
    ("val-width", dict(x_val=_x(d=1)), "x_val has 1 columns"),
    ("one-dim", dict(x_train=torch.zeros(20)), "x_train has shape (20,): expected (N, D)"),
    ("three-dim", dict(x_train=torch.zeros(2, 20, 2)), "x_train has shape (2, 20, 2)"),
    ("no-rows", dict(x_train=torch.zeros(0, 2)), "x_train has 0 rows"),
    ("bool", dict(x_train=torch.zeros(20, 2, dtype=torch.bool)), "x_train has dtype torch.bool"),
    ("complex", dict(x_train=torch.zeros(20, 2, dtype=torch.complex64)), "x_train has dtype torch.complex64"),
    ("strings", dict(x_train=np.array([["a", "b"]] * 20)), "x_train has dtype <U1"),
    ("ragged", dict(x_train=[[1.0, 2.0], [1.0]]), "x_train: cannot be read as an array"),
    ("lr-inf", dict(lr=float("inf")), "lr=inf: expected a finite number > 0"),
    ("lr-nan", dict(lr=float("nan")), "lr=nan"),
    ("lr-zero", dict(lr=0.0), "lr=0.0"),
    ("lr-string", dict(lr="0.1"), "lr='0.1'"),
    ("beta-negative", dict(beta=-1.0), "beta=-1.0"),
    ("epochs-bool", dict(epochs=True), "epochs=True"),
    ("epochs-float", dict(epochs=2.0), "epochs=2.0"),
    ("batch-zero", dict(batch_size=0), "batch_size=0"),
    ("particles-zero", dict(num_particles=0), "num_particles=0"),
]


@pytest.mark.parametrize("name, kwargs, message", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_refuses_bad_input_before_any_step(name, kwargs, message):
    model, guide = _pair()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = dict(x_train=_x(), x_val=None, epochs=1, batch_size=10, progress=False)
    args.update(kwargs)
    x_train, x_val = args.pop("x_train"), args.pop("x_val")
    with pytest.raises(ValueError) as info:
        train(model, guide, x_train, x_val, **args)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no step was taken


def test_train_refuses_a_model_and_guide_with_different_restarts():
    model, _ = _pair(2)
    _, guide = _pair(3)
    with pytest.raises(ValueError, match="model has num_restarts=2 but guide has num_restarts=3"):
        train(model, guide, _x(), epochs=1, progress=False)


def test_train_accepts_float64_and_numpy_data():
    model, guide = _pair()
    res = train(model, guide, torch.from_numpy(_x().numpy().astype(np.float64)), _x().numpy(), epochs=1,
                batch_size=10, progress=False)
    assert res.steps == 2 and torch.isfinite(res.val_objective).all()


def test_lagging_libi_and_m2_trainers_check_their_data():
    from pyro_vae.inference.lagging import train_lagging
    from pyro_vae.inference.libi import train_libi

    model, guide = _pair()
    with pytest.raises(ValueError, match="x_train has 1 non-finite"):
        train_lagging(model, guide, NAN, epochs=1, batch_size=10, progress=False)
    with pytest.raises(ValueError, match="x_train has 3 columns"):
        train_libi(model, guide, _x(d=3), step1_epochs=1, step2_epochs=1, progress=False)
    with pytest.raises(ValueError, match="lr=inf"):
        train_libi(model, guide, _x(), lr=float("inf"), progress=False)


def test_m2_trainers_check_their_data():
    from pyro_vae.inference.m2 import train_m2
    from pyro_vae.inference.m2_lagging import train_m2_lagging
    from pyro_vae.pipeline_m2 import M2Config, build_m2

    config = M2Config("discrete_semicircle", hidden=(4,))
    dataset = config.validate()
    split = dataset.splits(0).train
    model, guide = build_m2(config, dataset, [0.5, 0.5], None)
    bad = split._replace(x=split.x.clone())
    bad.x[5, 0] = float("nan")
    with pytest.raises(ValueError, match="x_train has 1 non-finite value"):
        train_m2(model, guide, bad, epochs=1, progress=False)
    with pytest.raises(ValueError, match="lr=inf"):
        train_m2(model, guide, split, lr=float("inf"), epochs=1, progress=False)
    with pytest.raises(ValueError, match="x_train has 3 columns"):
        train_m2_lagging(model, guide, split._replace(x=torch.zeros(split.x.shape[0], 3)), epochs=1, progress=False)
    with pytest.raises(ValueError, match="threshold=-1"):
        train_m2_lagging(model, guide, split, threshold=-1, epochs=1, progress=False)
    float64 = split._replace(x=split.x.double())
    assert checks.labelled_data(model, guide, float64)[0].x.dtype == torch.float32


def test_nuts_posterior_names_a_non_finite_x():
    from pyro_vae.posterior.nuts import nuts_posterior

    with pytest.raises(ValueError, match=r"x has 1 non-finite value\(s\)"):
        nuts_posterior(get_dataset("figure8"), torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ValueError, match="expected one observation of shape"):
        nuts_posterior(get_dataset("figure8"), torch.zeros(3))


@pytest.mark.parametrize("n, message", [(10**11, "n=100000000000: needs about"), (0, "n=0"), (1.5, "n=1.5"), (True, "n=True")])
def test_dataset_sample_refuses_sizes(n, message):
    with pytest.raises(ValueError) as info:
        get_dataset("figure8").sample(n, seed=0)
    assert message in str(info.value)


def test_pipeline_refuses_before_writing(tmp_path, monkeypatch):
    from pyro_vae.pipeline import RunConfig, train_and_evaluate
    from pyro_vae.pipeline_m2 import M2Config, train_and_evaluate_m2

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    cases = [
        (RunConfig("figure8"), "", "runs_dir='': expected a non-empty path"),
        (RunConfig("figure8"), "/proc/runs", "runs_dir='/proc/runs': cannot create the folder"),
        (RunConfig("figure8"), tmp_path / "afile" / "runs", "exists and is not a folder"),
        (RunConfig("figure8", epochs=10**12), "runs", "epochs=1000000000000: needs about"),
        (RunConfig("figure8", method="lin", options={"threshold": -1}), "runs", "threshold=-1"),
        (RunConfig("figure8", lr=float("inf")), "runs", "lr=inf"),
    ]
    for config, runs, message in cases:
        with pytest.raises(ValueError) as info:
            train_and_evaluate(config, runs, progress=False)
        assert message in str(info.value), (message, str(info.value))
    for config, message in [(M2Config("discrete_semicircle", lagging=True, lin_threshold=-1.0), "lin_threshold=-1.0"),
                            (M2Config("discrete_semicircle", epochs=10**12), "epochs=1000000000000")]:
        with pytest.raises(ValueError, match=message):
            train_and_evaluate_m2(config, "runs", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["afile"]


def test_checks_number_helpers():
    assert checks.positive_number("lr", 0.5) == 0.5 and checks.nonneg_int("seed", 0) == 0
    for call, message in [
        (lambda: checks.positive_int("epochs", np.int64(0)), "epochs=0: expected an integer ≥ 1"),
        (lambda: checks.integer("k", 5, low=0, high=3), "k=5: expected an integer in [0, 3]"),
        (lambda: checks.finite_number("t", float("-inf")), "t=-inf: expected a finite number"),
        (lambda: checks.finite_number("p", 1.0, low=0, high=1, high_open=True), "p=1.0"),
        (lambda: checks.nonneg_number("--option threshold", -1), "--option threshold -1"),
    ]:
        with pytest.raises(checks.InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
            call()
    with pytest.raises(checks.InputError, match="needs about 2 kB of memory"):
        checks.require_memory("n", 5, {"x": 2000.0}, available=1000)
    assert checks.format_bytes(1.6e12) == "1.6 TB" and checks.format_bytes(12) == "12 B"
    assert checks.available_memory() > 0
