"""The user's data files (CSV/NPZ/NPY, labels), the calibration config and the summary figure."""

import numpy as np
import pytest
import torch

from toy_models import GaussianGuide, draw, linear_model

from pyro_vae.datasets import get_dataset
from pyro_vae.datasets.user import DataFileError, read_data_file
from pyro_vae.diagnose import diagnose
from pyro_vae.diagnose.calibrate import expected_vs_obtained, load_calibration
from pyro_vae.plots.common import figure_png_bytes
from pyro_vae.plots.diagnose import diagnosis_figure


def _table(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3))


def test_csv_with_string_labels(tmp_path):
    x = _table()
    path = tmp_path / "d.csv"
    path.write_text("u,kind,v,w\n" + "".join(f"{a},{'cat' if a > 0 else 'dog'},{b},{c}\n" for a, b, c in x))
    table = read_data_file(path, labels="kind")
    assert table.columns == ["u", "v", "w"] and table.x.shape == (40, 3)
    assert set(table.y.tolist()) == {0, 1} and (table.y == (x[:, 0] <= 0)).all()  # 'cat' < 'dog'


def test_npz_with_one_hot_labels_and_npy_with_label_column(tmp_path):
    x = _table()
    y = np.eye(3)[np.arange(40) % 3]
    np.savez(tmp_path / "d.npz", x=x, y=y)
    table = read_data_file(tmp_path / "d.npz", labels="y")
    assert np.allclose(table.x, x) and (table.y == np.arange(40) % 3).all()
    np.save(tmp_path / "d.npy", np.concatenate([x, (np.arange(40) % 2)[:, None]], 1))
    table = read_data_file(tmp_path / "d.npy", labels="-1")
    assert table.x.shape == (40, 3) and (table.y == np.arange(40) % 2).all()
    with pytest.raises(DataFileError, match="column index"):
        read_data_file(tmp_path / "d.npy", labels="y")


def test_file_dataset_splits_and_checks(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, _table(90))
    ds = get_dataset("file", path=str(path), latent_dim=2)
    assert ds.sizes == (50, 20, 20) and ds.obs_dim == 3 and ds.latent_dim == 2 and not ds.has_truth
    a, b = ds.splits(0), ds.splits(0)
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, ds.splits(1).train.x)
    rows = torch.cat([a.train.x, a.val.x, a.test.x])
    assert torch.equal(rows.sort(0).values, ds.x.sort(0).values)  # a partition of the rows
    with pytest.raises(ValueError, match="path=None"):
        get_dataset("file")
    with pytest.raises(ValueError, match="changed"):
        get_dataset("file", path=str(path), sha256="0" * 64)
    with pytest.raises(ValueError, match="cannot draw"):
        ds.sample(5, seed=0)


def test_calibration_config_is_checked(tmp_path):
    good = load_calibration("experiments/diagnose/calibration.toml")
    assert {c["name"] for c in good["cases"]} >= {"figure8", "clusters", "circle", "absolute_value",
                                                  "spiral_dots_learned", "figure8_5d", "discrete_semicircle"}
    bad = tmp_path / "bad.toml"
    bad.write_text('[[cases]]\nname = "x"\nexpect = { density = "ok" }\ndataset = "figure8"\nsample = { dataset = "circle" }\n')
    with pytest.raises(ValueError, match="one of dataset/sample"):
        load_calibration(bad)


def test_expected_vs_obtained_keeps_misses_and_the_figure_renders():
    x = draw(60, 0)
    report = diagnose(linear_model(), GaussianGuide(scale=1.2), x, checks=("posterior", "floor", "noise", "residuals"),
                      num_particles=100)
    rows = expected_vs_obtained(
        [{"name": "toy", "expect": {"density": "ok", "noise_variance": "alarm", "latent_dimension": "alarm"}}],
        {"toy": report},
    )
    by = {r["check"]: r for r in rows}
    assert by["density"]["match"] and by["density"]["obtained"] == "ok"
    assert not by["noise_variance"]["match"]  # an honest miss stays in the table
    assert by["latent_dimension"]["obtained"] == "not run"
    png = figure_png_bytes(diagnosis_figure(report))
    assert png[:4] == b"\x89PNG" and len(png) > 10_000


def test_latent_variant_configs(tmp_path, monkeypatch):
    """K other than the truth's starts at random (004 Table 1); a file run changes the file's K."""
    from pyro_vae.diagnose import fit
    from pyro_vae.pipeline import RunConfig

    seen = []
    monkeypatch.setattr(fit, "train_and_evaluate", lambda config, runs, progress=False: seen.append(config) or {"run_dir": str(tmp_path / "r")})
    base = RunConfig(dataset="figure8_5d", init="mixed", noise="learned", epochs=3)
    fit.latent_variant(base, 2, tmp_path)
    fit.latent_variant(base, 1, tmp_path)
    assert (seen[0].latent_dim, seen[0].init, seen[0].noise) == (2, "random", "learned")
    assert (seen[1].latent_dim, seen[1].init) == (None, "mixed")
    path = tmp_path / "d.npy"
    np.save(path, _table(60))
    file_config = fit.fit_data_config(path, latent_dim=1, epochs=2)
    fit.latent_variant(file_config, 2, tmp_path)
    assert seen[2].dataset_params["latent_dim"] == 2 and seen[2].dataset_params["sha256"] == file_config.dataset_params["sha256"]
