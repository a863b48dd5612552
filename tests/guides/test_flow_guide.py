"""The amortised normalising-flow guide (004 §9's rich variational family): a normalised
density, restart batching, every objective and method, and a bimodal posterior."""

import json
import math

import pyro.poutine as poutine
import pytest
import torch
from torch import nn

from common import assert_close
from guides.flow import FlowGuide
from guides.mean_field import MeanFieldGuide
from pyro_vae.cli import main
from pyro_vae.datasets import get_dataset
from pyro_vae.inference import train
from pyro_vae.inference.fixed_model import fit_guide
from pyro_vae.inference.methods import METHODS, resolve_options
from pyro_vae.models import VAEModel
from pyro_vae.nets import BatchedLinear, select_restart
from guides.registry import resolve_guide
from pyro_vae.pipeline import RunConfig, build_model_and_guide
from pyro_vae.posterior.compare import grid_kl
from pyro_vae.posterior.grid import grid_posterior
from pyro_vae.posterior.target import posterior_target


def _random_flow(obs_dim: int, latent_dim: int, num_restarts=None, seed: int = 0) -> FlowGuide:
    """A flow whose splines and couplings are far from the identity (last layers not shrunk)."""
    torch.manual_seed(seed)
    guide = FlowGuide(obs_dim, latent_dim, (16,), num_restarts=num_restarts, count_bins=6)
    with torch.no_grad():
        for net in [guide.encoder, *guide.couplings]:
            last = [m for m in net.net if isinstance(m, BatchedLinear)][-1]
            last.weight.mul_(100.0)
            last.bias.mul_(100.0)
    return guide


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_flow_density_integrates_to_one(latent_dim):
    """∫ q(z | x) dz = 1 by a Riemann sum on a fine grid, for non-trivial splines and couplings."""
    guide = _random_flow(2, latent_dim)
    x = torch.tensor([[0.3, -1.0], [1.5, 0.2]])
    m = 4001 if latent_dim == 1 else 601
    t = torch.linspace(-12, 12, m)
    pts = t[:, None] if latent_dim == 1 else torch.cartesian_prod(t, t)
    with torch.no_grad():
        q = guide.flow_distribution(x)
        log_q = q.log_prob(pts[:, None, :].expand(-1, 2, -1))  # (G, N)
        mass = log_q.double().exp().sum(0) * (t[1] - t[0]).double() ** latent_dim
        draws = q.sample((20000,))
    assert_close(mass, torch.ones(2), atol=2e-3, msg="total mass")
    assert draws.abs().max() < 12  # the grid holds the mass
    sd = draws.std(0)
    assert bool((sd > 0.05).all()), sd


def test_restart_batched_flow_equals_its_single_restarts():
    guide = _random_flow(2, 2, num_restarts=3, seed=1)
    x = torch.randn(5, 2)
    z = torch.randn(4, 3, 5, 2)  # (S, R, N, K)
    with torch.no_grad():
        batched = guide.flow_distribution(x).log_prob(z)
        assert batched.shape == (4, 3, 5)
        for r in range(3):
            single = select_restart(guide, r).flow_distribution(x).log_prob(z[:, r])
            assert_close(batched[:, r], single, rtol=1e-5, atol=1e-5, msg=f"restart {r}")
    tr = poutine.trace(guide).get_trace(x)
    site = tr.nodes["z"]
    assert site["fn"].has_rsample and site["value"].shape == (3, 5, 2)
    assert {f.name: f.dim for f in site["cond_indep_stack"]} == {"restarts": -2, "data": -1}
    assert not hasattr(guide, "distribution")  # that name promises a diagonal Normal elsewhere


@pytest.mark.parametrize("method,objective", [("vae", "elbo"), ("iwae", "iwae"), ("beta", "beta"), ("libi", None)])
def test_flow_guide_trains_with_every_objective_and_method(method, objective):
    """``--guide flow`` through the method registry (restarts batched, K = 2, correlated posteriors)."""
    ds = get_dataset("linear_jte")
    x, _ = ds.sample(120, seed=0)
    config = RunConfig(
        dataset="linear_jte", method=method, guide="flow", epochs=3, batch_size=40, restarts=3, particles=4,
        beta=2.0, hidden=(8,), lr=1e-2, options={"step2_epochs": 2, "repeats": 2} if method == "libi" else {},
    )
    config.options = resolve_options(method, config.options)
    torch.manual_seed(0)
    model, guide = build_model_and_guide(config, ds, 3)
    assert isinstance(guide, FlowGuide) and resolve_guide("flow") is FlowGuide
    before = [p.detach().clone() for p in guide.parameters()]
    result = METHODS[method].fit(model, guide, x[:80], x[80:], config, progress=False)
    assert result.val_objective.shape == (3,) and bool(torch.isfinite(result.val_objective).all())
    assert any(not torch.equal(a, b) for a, b in zip(before, guide.parameters()))
    if objective is not None:  # the objective's own training loop, directly
        res = train(model, guide, x[:80], x[80:], objective=objective, num_particles=4, beta=2.0, epochs=2,
                    batch_size=40, progress=False)
        assert bool(torch.isfinite(res.val_objective).all())


class _Truth(nn.Module):
    """A data set's true f as a parameter-free decoder."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.dataset.f(z)


def _grid_kls(dataset, log_q, x: torch.Tensor, log_marginal: torch.Tensor, lo=-8.0, hi=8.0, m=16001):
    """KL(q ‖ p) and KL(p ‖ q) per x for K = 1 on one uniform grid (trapezoid rule); p exact."""
    z = torch.linspace(lo, hi, m, dtype=torch.float64)
    pts = z[None, :, None].expand(x.shape[0], -1, -1)  # (N, G, 1)
    log_p = posterior_target(dataset).log_joint(x.double()[:, None, :], pts) - log_marginal[:, None]
    lq = log_q(pts)
    w = torch.full((m,), float(z[1] - z[0]), dtype=torch.float64)
    w[0] = w[-1] = w[0] / 2
    q, p = lq.exp(), log_p.exp()
    kl_qp = (w * torch.where(q > 0, q * (lq - log_p), torch.zeros_like(q))).sum(-1)
    kl_pq = (w * torch.where(p > 0, p * (log_p - lq), torch.zeros_like(p))).sum(-1)
    return kl_qp, kl_pq


@pytest.mark.slow
def test_flow_fits_the_bimodal_absolute_value_posterior_better_than_mean_field():
    """Absolute-Value (f(z) = f(−z), 004 §6): at x ≈ (0.8, 0.8) the posterior has two modes at
    z ≈ ±1.28, each of sd ≈ 0.2. Both guides are trained against the frozen truth with the same
    objective (IWAE, 5 particles: the ELBO's mode-seeking KL(q ‖ p) leaves even a flow on one
    mode from a unimodal start, KL(q ‖ p) ≈ log 2), for seeds 0-7 (every seed counts). KLs are
    computed on a uniform quadrature grid against the exact posterior (cross-checked with
    ``grid_kl`` for the Gaussian); each seed's KL is the largest over the three x.

    Measured (seeds 0-7): flow KL(q ‖ p) 0.21-0.90 (median 0.53), mean-field 9.98-12.39;
    flow KL(p ‖ q) 0.10-1.00 (median 0.23), mean-field 1.15-1.23, the moment-matched Gaussian
    1.14. Margins: on every seed the flow's KL(q ‖ p) is below a fifth of the mean-field guide's
    and its KL(p ‖ q) below the mean-field guide's; over seeds the median flow beats the best any
    Gaussian can do in both directions — KL(q ‖ p) < log 2 − 0.1 (a Gaussian on one mode) and
    KL(p ‖ q) < half the moment-matched Gaussian's. (Single seeds do not: seed 0's flow ends at
    0.85 > log 2, one mode favoured.)
    """
    ds = get_dataset("absolute_value")
    splits = ds.splits(0)
    model = VAEModel(_Truth(ds), 1, 2, ds.obs_noise_var())
    x = torch.tensor([[0.8, 0.8], [0.78, 0.82], [0.82, 0.79]])
    post = grid_posterior(ds, x)
    assert bool(post.converged.all())
    # the best Gaussian in KL(p ‖ q) matches the posterior's mean and variance
    mm = torch.distributions.Normal(post.mean, post.sd)  # (N, 1)
    best_gauss_pq = float(_grid_kls(ds, lambda pts: mm.log_prob(pts.squeeze(-1)), x, post.log_marginal)[1].max())
    flow_qp, flow_pq = [], []
    for seed in range(8):
        kls = {}
        for name in ("mean_field", "flow"):
            torch.manual_seed(seed)
            guide = MeanFieldGuide(2, 1, (32, 32)) if name == "mean_field" else FlowGuide(2, 1, (32, 32))
            fit_guide(model, guide, splits.train.x[:300], splits.val.x[:100], objective="iwae", num_particles=5,
                      epochs=60, batch_size=100, lr=5e-3, seed=seed)
            with torch.no_grad():
                if name == "mean_field":
                    q = guide.distribution(x)
                    loc, scale = q.loc.double()[:, None], q.scale.double()[:, None]
                    log_q = lambda pts: torch.distributions.Normal(loc, scale).log_prob(pts).sum(-1)  # noqa: E731
                else:
                    q = guide.flow_distribution(x)
                    log_q = lambda pts: q.log_prob(pts.transpose(0, 1).float()).transpose(0, 1).double()  # noqa: E731
                kls[name] = _grid_kls(ds, log_q, x, post.log_marginal)
                if name == "mean_field" and seed == 0:  # the uniform-grid KLs agree with the package's grid_kl
                    ref = grid_kl(ds, guide, post, x)
                    assert_close(kls[name][0], ref.kl_qp, rtol=1e-3, atol=1e-3, msg="KL(q||p) vs grid_kl")
                    assert_close(kls[name][1], ref.kl_pq, rtol=1e-3, atol=1e-3, msg="KL(p||q) vs grid_kl")
        (f_qp, f_pq), (m_qp, m_pq) = [(float(a.max()), float(b.max())) for a, b in (kls["flow"], kls["mean_field"])]
        assert f_qp < m_qp / 5 and f_pq < m_pq, (seed, kls)
        flow_qp.append(f_qp)
        flow_pq.append(f_pq)
    median = lambda v: sorted(v)[len(v) // 2 - 1: len(v) // 2 + 1]  # noqa: E731  (the two middle values)
    assert max(median(flow_qp)) < math.log(2) - 0.1, flow_qp
    assert max(median(flow_pq)) < best_gauss_pq / 2, (flow_pq, best_gauss_pq)


def test_cli_trains_and_reevaluates_a_flow_guide(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["train", "absolute_value", "--guide", "flow", "--epochs", "2", "--restarts", "2", "--hidden", "8",
            "--eval-samples", "50", "--out", str(runs), "--json", "--quiet"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    m = summary["metrics"]
    # I_q from the flow's own density (K = 1: the joint is the one coordinate's)
    assert m["mutual_info_method"] == "monte_carlo" and m["mutual_info_per_dim"] == [m["mutual_info_joint"]]
    assert 0 <= m["mutual_info_joint"] <= math.log(2000)
    assert math.isfinite(m["test_loglik"]) and m["test_loglik"] < m["true_loglik"]
    assert abs(m["test_loglik_exact"] - m["test_loglik"]) < 0.5
    assert main(["evaluate", summary["run_dir"], "--json", "--eval-samples", "50"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert abs(again["metrics"]["test_loglik"] - m["test_loglik"]) < 1e-6
