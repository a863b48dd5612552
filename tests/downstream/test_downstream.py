"""The downstream-task experiments: AUROC, the PGD attack, projections, and the runners' quick modes."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from common import assert_within_se

from pyro_vae.datasets import get_dataset
from pyro_vae.downstream.adversarial import attack_success, fit_classifier, pgd_attack, true_projection
from pyro_vae.downstream.ood import auroc, auroc_se, shifted


def test_auroc_of_two_gaussians_is_phi_of_half_the_squared_distance():
    """For N(Δ, 1) vs N(0, 1) scores, AUROC = Φ(Δ / √2)."""
    rng = np.random.default_rng(0)
    delta, n = 1.0, 4000
    a = auroc(rng.normal(delta, 1, n), rng.normal(0, 1, n))
    truth = norm.cdf(delta / math.sqrt(2))
    assert_within_se(a, truth, auroc_se(truth, n, n), k=4.0)
    assert auroc([1, 2, 3], [0, -1]) == 1.0 and auroc([0, 0], [0, 0]) == 0.5


def test_true_projection_onto_the_circle():
    circle = get_dataset("circle")
    x = torch.tensor([[2.0, 0.0001], [0.0, -0.5], [-3.0, 0.0]])
    point, z = true_projection(circle.f, x)
    assert torch.allclose(point, torch.tensor([[1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]]), atol=2e-3)
    assert z[1, 0] > 0 and abs(float(z[2, 0])) < 1e-2  # the lower half has z > 0; (−1, 0) is z = 0


def test_pgd_stays_in_the_ball_and_fools_a_linear_classifier():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=gen)
    y = (x[:, 0] > 0).long()
    clf = fit_classifier(x, y, steps=300, seed=0)
    for eps in (0.0, 0.1, 0.5):
        adv = pgd_attack(clf, x, y, eps, steps=10)
        assert float((adv - x).abs().max()) <= eps + 1e-6
    adv = pgd_attack(clf, x, y, 0.5, steps=10)
    # the true label does not move with x here: every correct point within 0.5 of the boundary flips
    res = attack_success(clf, None, x, adv, y, y)
    near = (x[:, 0].abs() < 0.4).double().mean()
    assert res.success >= 0.9 * float(near) and res.clean_accuracy > 0.95
    assert attack_success(clf, None, x, x, y, y).success == 0.0


def test_shifted_sets():
    fig8 = get_dataset("figure8")
    x = fig8.splits(0).test.x[:500]
    off = shifted(fig8, "off-manifold", 300, x, seed=0)
    box = shifted(fig8, "uniform box", 300, x, seed=0)
    assert off.shape == box.shape == (300, 2)
    span = x.max(0).values - x.min(0).values
    assert bool((box >= x.min(0).values - 0.11 * span).all() and (box <= x.max(0).values + 0.11 * span).all())
    with pytest.raises(ValueError, match="kind"):
        shifted(fig8, "sideways", 3, x, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("module,config", [("appendix_f", "appendix_f"), ("ood", "ood")])
def test_runner_quick_mode_writes_report_and_provenance(tmp_path, module, config):
    import importlib

    runner = importlib.import_module(f"pyro_vae.downstream.{module}")
    out = tmp_path / "out"
    code = runner.main([f"experiments/downstream/{config}.toml", "--runs", str(tmp_path / "runs"), "--out", str(out), "--quick"])
    assert code == 0
    report = (out / "report.md").read_text()
    record = json.loads((out / "provenance.json").read_text())
    assert "| " in report and record["command"].endswith("--quick") and record["versions"]["torch"]
    assert record["machine_start"]["cpus"] >= 1 and record["wall_seconds"] > 0
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True
