"""diagnose() from Python on any Pyro model and guide; the checks' verdicts on known cases."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from toy_models import A, SIGMA2, GaussianGuide, draw, linear_model

from pyro_vae.diagnose import checks as C
from pyro_vae.diagnose import diagnose
from pyro_vae.diagnose.latent import LatentRow
from pyro_vae.diagnose.report import Check, Report
from pyro_vae.io import dumps_json


def functional_model(x):
    """A user's own Pyro model with pyro.param, no nn.Module: x = z·a + ε, σ² = 0.1."""
    a = pyro.param("a", A.clone())
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
        pyro.sample("x", dist.Normal(z * a, math.sqrt(SIGMA2)).to_event(1), obs=x)


def functional_guide(x):
    w = pyro.param("w", (A / (1.0 + float(A @ A) / SIGMA2) / SIGMA2).clone())
    s = pyro.param("s", torch.tensor(1.0 / math.sqrt(1.0 + float(A @ A) / SIGMA2)), constraint=dist.constraints.positive)
    with pyro.plate("data", x.shape[0], dim=-1):
        pyro.sample("z", dist.Normal((x @ w)[:, None], s).to_event(1))


def test_diagnose_any_pyro_model_exact_posterior_raises_no_alarm():
    x = draw(150, 0)
    state = torch.random.get_rng_state()
    report = diagnose(functional_model, functional_guide, x, checks=("posterior", "floor", "khat", "residuals", "noise"),
                      num_particles=300, khat_points=20, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    verdicts = {c.key: c.verdict for c in report.checks}
    assert verdicts == {"posterior_gap": "ok", "mean_field_floor": "ok", "psis_khat": "ok",
                        "residual_normality": "ok", "noise_variance": "ok"}, report.text()
    assert report.by_key("posterior_gap").value < 0.01
    assert report.density_verdict() == "ok"
    json.loads(dumps_json(report.to_dict(), nonfinite="null"))
    assert "004 §9 item 4(i)" in report.text()


def test_diagnose_is_reproducible_by_seed():
    x = draw(100, 1)
    model, guide = linear_model(), GaussianGuide(scale=1.3)
    a = diagnose(model, guide, x, checks=("posterior", "noise"), num_particles=200, seed=5)
    b = diagnose(model, guide, x, checks=("posterior", "noise"), num_particles=200, seed=5)
    assert [c.value for c in a.checks] == [c.value for c in b.checks]


def test_residuals_off_the_manifold_raise_the_manifold_alarm():
    """Data on a circle, a model whose manifold is a line: the residuals are far from Gaussian."""
    gen = torch.Generator().manual_seed(2)
    t = torch.rand(400, generator=gen) * 2 * math.pi
    x = torch.stack([torch.cos(t), torch.sin(t)], 1) + 0.05 * torch.randn(400, 2, generator=gen)
    report = diagnose(linear_model(), GaussianGuide(), x, checks=("residuals",), seed=0)
    assert report.by_key("residual_normality").verdict == "alarm"


def test_sigma2_twice_the_data_noise_raises_the_noise_alarm():
    x = draw(2000, 4)
    model = linear_model(sigma2=0.25, noise="learned")
    report = diagnose(model, GaussianGuide(sigma2=0.25), x, checks=("noise",), num_particles=300, seed=0)
    check = report.by_key("noise_variance")
    assert check.verdict == "alarm" and check.value > 1.5, report.text()
    assert check.evidence["learned_jointly"] is True and "jointly" in check.advice


def test_richer_family_runs_and_keeps_the_callers_guide():
    x = draw(300, 5)
    model, guide = linear_model(), GaussianGuide(scale=1.0)
    report = diagnose(model, guide, x, checks=("family",), family_epochs=1, num_particles=100)
    check = report.by_key("richer_family")
    assert check.evidence["base_refitted"] is False  # a closed-form guide: nothing to refit
    assert check.evidence["flow_warm_started"] is False  # and no MLP encoder to start the flow from
    assert math.isfinite(check.value)


def test_class_check_on_separable_and_overlapping_labels():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=gen)
    sep = diagnose(linear_model(), GaussianGuide(), x[:50], checks=("classes",), labelled=(x, (x[:, 0] > 0).long()))
    mix = diagnose(linear_model(), GaussianGuide(), x[:50], checks=("classes",),
                   labelled=(x, torch.randint(0, 2, (400,), generator=gen)))
    assert sep.by_key("class_overlap").verdict == "ok" and mix.by_key("class_overlap").verdict == "alarm"


def _row(k, elbo, ll):
    return LatentRow(k, torch.full((50,), elbo, dtype=torch.float64) + 0.01 * torch.randn(50, dtype=torch.float64),
                     torch.full((50,), ll, dtype=torch.float64), torch.full((50,), ll, dtype=torch.float64)
                     + 0.01 * torch.randn(50, dtype=torch.float64), "quadrature", 0.02 / k)


def test_latent_check_fires_when_elbo_and_loglik_disagree_on_k():
    """004 Table 1's pattern: the ELBO prefers K = 2, the log-likelihood K = 1."""
    th = C.Thresholds()
    torch.manual_seed(0)
    disagree = C.check_latent([_row(1, -1.0, -0.80), _row(2, -0.9, -0.85), _row(3, -0.95, -0.86)], 1, th)
    agree = C.check_latent([_row(1, -0.9, -0.80), _row(2, -1.0, -0.85)], 1, th)
    assert disagree.verdict == "alarm" and disagree.evidence["k_elbo"] == 2 and disagree.evidence["k_loglik"] == 1
    assert disagree.value == pytest.approx(0.05, abs=0.01)
    assert agree.verdict == "ok"


def test_bad_arguments_are_named():
    x = draw(20, 0)
    with pytest.raises(ValueError, match="checks"):
        diagnose(linear_model(), GaussianGuide(), x, checks=("nope",))
    with pytest.raises(ValueError, match="num_particles"):
        diagnose(linear_model(), GaussianGuide(), x, num_particles=0)
    with pytest.raises(ValueError, match="verdict"):
        Check("k", "manifold", "s", 1.0, "t", "004", "maybe", "a")
    with pytest.raises(ValueError, match="hz_alpha"):
        C.Thresholds(hz_alpha=2.0)
    assert Report([]).density_verdict() == "skipped"
