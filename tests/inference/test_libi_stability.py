"""LiBI step 1's stabilisers (pyro_vae.inference.libi_stability): per-restart clipping, the
Gaussian code initialisation, whitening, and the divergence guard."""

import math

import pytest
import torch

from common import assert_close
from guides.mean_field import MeanFieldGuide
from pyro_vae.datasets import get_dataset
from pyro_vae.inference import TrainingError
from pyro_vae.inference.libi import Step1Terms, code_network_for, fit_likelihood, step1_terms
from pyro_vae.inference.libi_stability import (
    PenaltyGuard,
    clip_grad_norm_per_restart,
    gaussian_code_targets,
    initialise_codes,
    whiten_output,
)
from pyro_vae.metrics.normality import henze_zirkler
from pyro_vae.models import VAEModel
from pyro_vae.nets import MLP


def test_clipping_scales_each_restart_alone_and_keeps_directions():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(3, 4, 2))
    b = torch.nn.Parameter(torch.zeros(3, 1, 2))
    shared = torch.nn.Parameter(torch.zeros(5))
    scale = torch.tensor([1e-3, 1.0, 1e6])  # restart 0 under the bound, 1 and 2 over it
    gw, gb, gs = torch.randn(3, 4, 2) * scale[:, None, None], torch.randn(3, 1, 2) * scale[:, None, None], torch.randn(5) * 7
    w.grad, b.grad, shared.grad = gw.clone(), gb.clone(), gs.clone()
    norms = clip_grad_norm_per_restart([w, b, shared], 0.5, 3)
    want = torch.cat([gw.reshape(3, -1), gb.reshape(3, -1)], 1).double().norm(dim=1)
    assert_close(norms, want, rtol=1e-6)
    for r in range(3):
        got = torch.cat([w.grad[r].reshape(-1), b.grad[r].reshape(-1)])
        orig = torch.cat([gw[r].reshape(-1), gb[r].reshape(-1)])
        factor = min(1.0, 0.5 / float(want[r]))
        assert_close(got, orig * factor, rtol=1e-5, msg=f"restart {r}")
    assert torch.equal(w.grad[0], gw[0])  # under the bound: untouched, bit for bit
    assert_close(shared.grad.norm(), torch.tensor(0.5), rtol=1e-6)  # shared: clipped by its own norm
    # max_norm = inf only measures
    w.grad = gw.clone()
    clip_grad_norm_per_restart([w], math.inf, 3)
    assert torch.equal(w.grad, gw)


def test_gaussian_code_targets_are_standard_and_gaussian_on_cubic_jte():
    """CubicJTE's x are a cube of a Gaussian: HZ(x) ≈ 148 on 500 points; the targets' HZ is
    within the null's bulk (its 0.999 quantile at n = 500, p = 2 is 1.69)."""
    x = get_dataset("cubic_jte").splits(0).train.x
    t = gaussian_code_targets(x, 2)
    assert t.shape == (500, 2) and t.dtype == x.dtype
    assert_close(t.mean(0), torch.zeros(2), atol=1e-6)
    assert_close(t.T @ t / 500, torch.eye(2), atol=1e-5)
    assert henze_zirkler(x).statistic > 100
    assert henze_zirkler(t).statistic < 1.0
    assert gaussian_code_targets(x, 1).shape == (500, 1)
    with pytest.raises(ValueError, match="latent_dim=3"):
        gaussian_code_targets(x, 3)


def test_whitening_fixes_mean_and_covariance_but_not_hz():
    """HZ is affine invariant, so whitening h's output cannot lower the Henze-Zirkler penalty."""
    torch.manual_seed(1)
    x = get_dataset("linear_jte").splits(0).train.x
    h = MLP(2, 2, num_restarts=3)
    with torch.no_grad():
        before = h(x).double()
    assert whiten_output(h, x)
    with torch.no_grad():
        z = h(x).double()
    for r in range(3):
        assert_close(z[r].mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-5)
        assert_close(z[r].T @ z[r] / 500 - torch.outer(z[r].mean(0), z[r].mean(0)), torch.eye(2, dtype=torch.float64),
                     atol=1e-4)
        assert_close(henze_zirkler(z[r]).statistic, henze_zirkler(before[r]).statistic, rtol=1e-3)
    single = MLP(2, 2, hidden=(8,))
    assert whiten_output(single, x)
    with torch.no_grad():
        assert_close(single(x).mean(0), torch.zeros(2), atol=1e-5)
    assert not whiten_output(torch.nn.Linear(2, 2), x)  # no BatchedLinear layer: left alone


def test_gaussian_initialisation_starts_the_penalties_near_their_minimum():
    """The CLI's default code network (3 × 50 leaky ReLU) on CubicJTE: random codes have HZ
    ≈ 200 on the 500 training points (penalty e^200); after the initialisation every restart's
    three exponents are small."""
    ds = get_dataset("cubic_jte")
    x = ds.splits(0).train.x
    torch.manual_seed(0)
    h = MLP(2, 2, num_restarts=2)
    model = VAEModel(ds.decoder_family(2), 2, 2, ds.obs_noise_var(), num_restarts=2)
    before = step1_terms(model, h, x)
    assert float(before.hz_stat.detach().min()) > 50
    assert initialise_codes(h, x, 2, "gaussian") == "gaussian"
    after = step1_terms(model, h, x)
    assert float(after.hz_stat.detach().max()) < 2.0, after.hz_stat
    assert float(after.sigma_exponent.detach().max()) < 1e-6 and float(after.mu_exponent.detach().max()) < 1e-6
    assert initialise_codes(h, x, 2, "none") == "none"
    with pytest.raises(ValueError, match="code_init='pca'"):
        initialise_codes(h, x, 2, "pca")


def _terms(hz=(1.0, 1.0), sigma=(1.0, 1.0), mu=(1.0, 1.0)):
    t = [torch.tensor(v, dtype=torch.float64) for v in (hz, sigma, mu)]
    zero = torch.zeros(2, dtype=torch.float64)
    return Step1Terms(zero, t[0], t[1], t[2], zero, zero, t[0].log(), t[1].log(), t[2].log())


def test_guard_trips_on_the_median_of_recent_penalties_and_names_the_term_step_and_restart():
    guard = PenaltyGuard(1e3, warmup=10, window=5)
    for step in range(1, 11):  # in the warm-up nothing trips, however large
        guard.check(_terms(hz=(1.0, 1e9)), step=step, epoch=step, repeat=1)
    with pytest.raises(TrainingError, match=r"Henze-Zirkler penalty .* restart 1 has median 1e\+09 nats \(HZ = 20.72\) "
                                            r"over the last 5 steps, > 1000, at step 11 \(epoch 3, round 2\)"):
        guard.check(_terms(hz=(1.0, 1e9)), step=11, epoch=3, repeat=1)
    guard = PenaltyGuard(1e3, warmup=0, window=5)
    for step in range(1, 30):  # isolated spikes (2 in every 5 steps) leave the median alone
        guard.check(_terms(sigma=(1e12 if step % 5 in (0, 1) else 2.0, 1.0)), step=step, epoch=step, repeat=0)
    guard = PenaltyGuard(1e3, warmup=100, window=5)
    for step in range(1, 6):
        guard.check(_terms(mu=(1.0, 5e3)), step=step, epoch=step, repeat=0)
    with pytest.raises(TrainingError, match=r"mean penalty .* restart 1 .* at step 5 .* at the last step"):
        guard.check(_terms(mu=(1.0, 5e3)), step=5, epoch=5, repeat=0, final=True)
    guard.check(_terms(), step=1, epoch=6, repeat=1)  # step 1: a new round, a new window
    guard.check(_terms(), step=1, epoch=6, repeat=1, final=True)
    off = PenaltyGuard(None, 0)
    off.check(_terms(hz=(1e30, 1e30)), step=50, epoch=50, repeat=0)
    off.check(_terms(hz=(1e30, 1e30)), step=50, epoch=50, repeat=0, final=True)
    for kw, needle in [(dict(bound=0), "guard_bound=0"), (dict(bound=float("inf")), "guard_bound=inf"),
                       (dict(warmup=-1), "guard_warmup=-1"), (dict(warmup=2.0), "guard_warmup=2.0"),
                       (dict(window=0), "guard_window=0")]:
        with pytest.raises(ValueError, match=needle):
            PenaltyGuard(**kw)


def test_guard_stops_the_full_batch_divergence_of_the_randomly_initialised_code_network():
    """The issue's regime (3 × 50 code network as the CLI builds it, random initialisation,
    no clipping, full batch of 500, lr 0.01) keeps the Henze-Zirkler penalty at e^10-e^14 for
    thousands of steps (bench/libi_step1.py): the guard stops it once its warm-up is over."""
    ds = get_dataset("linear_jte")
    x = ds.splits(0).train.x
    torch.manual_seed(0)
    model = VAEModel(ds.decoder_family(2), 2, 2, ds.obs_noise_var(), num_restarts=2)
    h = code_network_for(MeanFieldGuide(2, 2, (50, 50, 50), num_restarts=2), 2, 2, 2)
    with pytest.raises(TrainingError, match=r"Henze-Zirkler penalty .* at step 21 \(epoch 21, round 1\)"):
        fit_likelihood(model, h, x, x[:50], epochs=40, lr=0.01, guard=PenaltyGuard(1e3, warmup=20, window=10))


def _full_batch_pair(dataset: str, seed: int, epochs: int):
    """The issue's protocol shape: 3 × 50 MLP encoder (the CLI's), 2 restarts, full batch of the
    500 training points, lr 0.01, the same epochs for the VAE and for LiBI's step 1 (and step 2)."""
    from pyro_vae.inference import train
    from pyro_vae.inference.libi import train_libi
    from pyro_vae.nets import select_restart

    ds = get_dataset(dataset)
    splits = ds.splits(0)
    x, xv = splits.train.x, splits.val.x[:100]
    fitted = {}
    for method in ("vae", "libi"):
        torch.manual_seed(seed)
        model = VAEModel(ds.decoder_family(2), 2, 2, ds.obs_noise_var(), num_restarts=2)
        guide = MeanFieldGuide(2, 2, (50, 50, 50), num_restarts=2)
        if method == "vae":
            result = train(model, guide, x, xv, epochs=epochs, batch_size=500, lr=0.01, seed=seed, progress=False)
        else:
            result = train_libi(model, guide, x, xv, step1_epochs=epochs, step2_epochs=epochs, lr=0.01, seed=seed,
                                progress=False)
        fitted[method] = (select_restart(model, result.best_restart), result)
    return ds, fitted


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_full_batch_step1_stays_below_its_start_and_libi_beats_the_vae_on_linear_jte(seed):
    """000's regime (full batch, lr 0.01) with the default stabilisers: after a warm-up of 50
    epochs the selected restart's step-1 loss (Eq. 44, one step per epoch) never exceeds its
    initial value (factor 1; measured 0.04-0.65 of it on seeds 0-2 at 400 epochs), and LiBI's
    MLEO = KL(p_data ‖ p_θ) (closed form, 000 App. C.2) is below the VAE's with the same data,
    seed and epochs (measured at 400 epochs, seeds 0-2: LiBI 0.292, 0.003, 0.003; VAE 1.518,
    0.060, 0.344; at 2000 epochs seed 0: 0.003 vs 0.163).

    Not every restart is calm: restart 1 of seed 0 keeps its codes' covariance ‖Σ − I‖_F ≈ 1
    from I (Σ-exponent ≈ 2 throughout) and its Henze-Zirkler statistic jumps from ≈ 0.5 to 8-21
    for a few steps at a time (loss up to 1.3e9 at step 289), recovering each time; its
    likelihood term ends at 55 nats against the selected restart's. Selection by the validation
    objective (Eq. 44 on held-out codes) must not pick such a restart, which is checked here."""
    from pyro_vae.metrics.linear_gaussian import linear_gaussian_params, mleo

    ds, fitted = _full_batch_pair("linear_jte", seed, 400)
    truth = ds.marginal()
    kl = {m: float(mleo(linear_gaussian_params(model), truth.loc, truth.covariance_matrix))
          for m, (model, _) in fitted.items()}
    result = fitted["libi"][1]
    losses = [h["train_loss"] for h in result.history if h["step"] == 1 and h["restart"] == result.best_restart]
    assert len(losses) == 400 and max(losses[50:]) <= losses[0], (losses[0], max(losses[50:]))
    assert kl["libi"] < kl["vae"], kl


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_full_batch_libi_beats_the_vae_on_cubic_jte(seed):
    """CubicJTE at the same protocol shape: LiBI's MLEO (mean over the 500 test points of
    log p_data(x) − log p_θ(x), both by :mod:`pyro_vae.metrics.cholesky_quadrature`) is below
    the VAE's. Measured at 400 epochs: LiBI 1.227, 1.225; VAE 46.8, 3.55 (seeds 0, 1); at 2000
    epochs seed 0: 0.289 vs 47.7. Step 1 is *not* calm here: the selected restart's loss
    reaches 9.3e10 after the warm-up on seed 0 (initial 2.0e5) before recovering, so no bound on
    the loss is asserted for CubicJTE."""
    from pyro_vae.metrics.cholesky_quadrature import family_log_marginal

    ds, fitted = _full_batch_pair("cubic_jte", seed, 400)
    x = ds.splits(0).test.x
    truth = family_log_marginal(ds, x).log_marginal
    kl = {m: float((truth - family_log_marginal(model, x).log_marginal).mean()) for m, (model, _) in fitted.items()}
    assert kl["libi"] < kl["vae"], kl
