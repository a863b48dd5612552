"""NUTS reference posteriors against the grid, and the diagnostics that flag untrustworthy runs."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from common import assert_close, assert_within_se
from pyro_vae.datasets import get_dataset
from pyro_vae.posterior.compare import nuts_vs_grid
from pyro_vae.posterior.grid import grid_posterior
from pyro_vae.posterior.nuts import _arviz, check_diagnostics, dispersed_initial_points, nuts_posterior


def test_unimodal_posterior_matches_the_grid_within_monte_carlo_error():
    """Circle at x = (−1, 0): a single mode; mean and variance within 4 MCSE (from ArviZ's ESS)."""
    ds = get_dataset("circle")
    x = torch.tensor([[-1.0, 0.0]])
    res = nuts_posterior(ds, x, num_warmup=150, num_samples=300, seed=0)
    assert res.ok, res.reasons
    assert res.samples.shape == (4, 300, 1)
    post = grid_posterior(ds, x)
    cmp = nuts_vs_grid(res, post, 0)
    assert_within_se(float(cmp.mean_error[0]), 0.0, float(cmp.mean_se[0]), k=4.0, msg="mean")
    assert_within_se(float(cmp.var_error[0]), 0.0, float(cmp.var_se[0]), k=4.0, msg="variance")
    assert cmp.wasserstein < 0.1 * float(post.sd[0, 0])
    # the record: InferenceData with the draws, and a JSON-able provenance
    assert res.idata.posterior["z"].shape == (4, 300, 1)
    assert int(res.idata.sample_stats["diverging"].sum()) == res.diagnostics["divergences"] == 0
    record = json.loads(json.dumps(res.provenance))
    assert record["method"] == "NUTS" and record["seed"] == 0 and len(record["chains"]["seeds"]) == 4
    assert record["arguments"]["num_warmup"] == 150 and record["ok"] is True
    assert {"torch", "pyro", "arviz"} <= set(record["versions"])


def test_bimodal_posterior_that_mixes_matches_the_grid():
    """Variant 1 at x = 0.03: modes at z ≈ 0.33 and 0.67 with a low barrier, which NUTS crosses."""
    ds = get_dataset("variant1")
    x = torch.tensor([[0.03]])
    res = nuts_posterior(ds, x, num_warmup=200, num_samples=500, seed=0, min_ess_bulk=300, min_ess_tail=300)
    assert res.ok, res.reasons
    post = grid_posterior(ds, x)
    cmp = nuts_vs_grid(res, post, 0)
    assert_within_se(float(cmp.mean_error[0]), 0.0, float(cmp.mean_se[0]), k=4.0, msg="mean")
    assert_within_se(float(cmp.var_error[0]), 0.0, float(cmp.var_se[0]), k=4.0, msg="variance")
    # mass of the upper mode: 1/2 by symmetry; SE from the ESS of the indicator
    az = _arviz()
    upper = (res.samples[..., 0] > 0.5).double().numpy()
    ess = float(az.ess(upper))
    assert_within_se(float(upper.mean()), 0.5, math.sqrt(0.25 / ess), k=4.0, msg="mode mass")


def test_chains_that_never_mix_are_flagged_though_each_mode_is_right():
    """Absolute-Value at x = (0.8, 0.8): two modes ±1.28 separated by a ~60-nat barrier. The four
    dispersed chains settle two in each mode: R-hat flags the run, though within each mode the
    draws match the grid posterior restricted to that side."""
    ds = get_dataset("absolute_value")
    x = torch.tensor([[0.8, 0.8]])
    res = nuts_posterior(ds, x, num_warmup=100, num_samples=200, seed=0)
    assert not res.ok
    assert any(r.startswith("R-hat") for r in res.reasons)
    assert res.diagnostics["r_hat"][0] > 1.5
    chain_means = res.samples[..., 0].mean(1)
    assert int((chain_means > 0).sum()) == 2
    post = grid_posterior(ds, x)
    z, w = post.points()[0, :, 0], post.log_weights()[0].exp()
    az = _arviz()
    for side in (1.0, -1.0):
        on_side = side * z > 0
        mean = float((w * z)[on_side].sum() / w[on_side].sum())
        sd = math.sqrt(float((w * (z - mean) ** 2)[on_side].sum() / w[on_side].sum()))
        draws = res.samples[side * chain_means > 0, :, 0].numpy()
        se = sd / math.sqrt(float(az.ess(draws)))
        assert_within_se(float(draws.mean()), mean, se, k=4.0, msg=f"mode {side:+.0f}")


def test_under_run_single_chain_is_flagged():
    """One short chain in one mode of a bimodal posterior: its R-hat looks fine, but it is not trusted."""
    ds = get_dataset("absolute_value")
    res = nuts_posterior(ds, torch.tensor([0.8, 0.8]), num_chains=1, num_warmup=50, num_samples=60, seed=0)
    assert not res.ok
    text = " ".join(res.reasons)
    assert "1 chain(s) < 4" in text and "ess bulk" in text
    assert res.provenance["ok"] is False and res.provenance["reasons"] == res.reasons


def test_same_seed_same_draws():
    ds = get_dataset("case1")
    kwargs = dict(num_chains=2, num_warmup=20, num_samples=20, min_chains=1)
    a = nuts_posterior(ds, torch.tensor([0.5]), seed=3, **kwargs)
    b = nuts_posterior(ds, torch.tensor([0.5]), seed=3, **kwargs)
    c = nuts_posterior(ds, torch.tensor([0.5]), seed=4, **kwargs)
    assert torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples, c.samples)


def test_dispersed_initial_points_cover_the_prior():
    z = dispersed_initial_points(4, 1)
    assert_close(z[:, 0], norm.ppf(0.01 + 0.98 * np.arange(4) / 3), atol=1e-10)  # quantiles 0.01 ... 0.99
    u = dispersed_initial_points(5, 2, prior="uniform", seed=1)
    assert u.shape == (5, 2) and float(u.min()) >= 0.01 and float(u.max()) <= 0.99
    assert len(set(np.round(u[:, 0].numpy(), 6))) == 5


def test_check_diagnostics_thresholds():
    good = {"num_chains": 4, "r_hat": [1.002], "ess_bulk": [900.0], "ess_tail": [800.0], "divergences": 0}
    assert check_diagnostics(good)[0]
    for change, word in [({"r_hat": [1.02]}, "R-hat"), ({"r_hat": [float("nan")]}, "R-hat"),
                         ({"ess_tail": [399.0]}, "ess tail"), ({"divergences": 1}, "divergent")]:
        ok, reasons, _ = check_diagnostics({**good, **change})
        assert not ok and word in reasons[0]
    assert check_diagnostics({**good, "ess_bulk": [150.0]}, min_ess_bulk=100)[0]


def test_bad_arguments_raise():
    ds = get_dataset("figure8")
    with pytest.raises(ValueError, match="one observation"):
        nuts_posterior(ds, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="initial_points"):
        nuts_posterior(ds, torch.zeros(2), initial_points=torch.zeros(3, 1))
    with pytest.raises(ValueError, match="support"):
        nuts_posterior(get_dataset("variant1"), torch.zeros(1), initial_points=torch.full((4, 1), 1.5))
