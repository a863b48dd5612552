"""From statistics to checks: each threshold, the section behind it, the verdict and the advice.

The thresholds live in :class:`Thresholds` (defaults calibrated on the benchmarks whose truth
is known; see ``experiments/results/diagnose/report.md``). Each ``check_*`` function takes the
result of one statistic (:mod:`.posterior`, :mod:`.noise`, :mod:`.latent`,
:func:`pyro_vae.metrics.guidelines.residual_normality`, :func:`~pyro_vae.metrics.guidelines.class_overlap`)
and returns a :class:`~pyro_vae.diagnose.report.Check`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pyro_vae.diagnose.latent import LatentRow, preferred
from pyro_vae.diagnose.noise import NoiseProfile
from pyro_vae.diagnose.posterior import FamilyGain, PosteriorGap
from pyro_vae.diagnose.report import Check, verdict_above

__all__ = [
    "Thresholds", "SECTIONS", "check_posterior_gap", "check_mean_field_floor", "check_khat", "check_richer_family",
    "check_residuals", "check_noise", "check_latent", "check_classes",
]

SECTIONS = {
    "posterior_gap": "004 §5.1 cond. 1, §9 item 4; 000 Eq. 2 (PMO)",
    "psis_khat": "004 §5.1 cond. 1, §9 item 4; Yao et al. 2018",
    "mean_field_floor": "004 §5.1 cond. 1, §5.3, §9 item 3",
    "richer_family": "004 §9 item 4(ii), §5.3 (Fig. 5); 000 §2",
    "residual_normality": "004 §9 item 4(i); 000 Eq. 43",
    "noise_variance": "004 §8 Case A (Eq. 9), §9 item 2",
    "latent_dimension": "004 §8 Case B (Table 1)",
    "class_overlap": "004 §7, §9 item 1",
}

RICH_FAMILY_ADVICE = (
    "use a richer variational family (`--guide flow`, or `--method iwae`), or LiBI (`--method libi`, 000 §2: "
    "learn the likelihood before inference so the posterior matching term cannot bias θ)"
)


@dataclass(frozen=True)
class Thresholds:
    """Alarm thresholds of the checks (see each ``check_*``)."""

    gap_nats: float = 0.1  # mean log p_θ(x) − ELBO per point
    khat: float = 0.7  # per-point Pareto k̂ above which q is an unreliable proposal (Yao et al.)
    khat_fraction: float = 0.1  # share of points above ``khat``
    floor_nats: float = 0.05  # per-point gap of the best Gaussian counted as "poorly approximated"
    floor_share: float = 0.25  # share of such points above which condition 1 holds for the learned model
    family_gain_nats: float = 0.02  # mean held-out ELBO gain of a flow over the refitted guide
    hz_alpha: float = 0.01  # Henze-Zirkler p-value below which residuals are not Gaussian
    noise_ratio: float = 1.25  # σ²_model / σ²_loglik outside [1/r, r]
    latent_nats: float = 0.0  # ELBO-preferred K beats the log-lik-preferred K by more than this
    balanced_accuracy: float = 0.9  # below: classes overlap (use a rich q for unlabelled data)

    def __post_init__(self):
        for name, value in self.__dict__.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}={value!r}: expected a finite non-negative number")
        if not 0 < self.hz_alpha < 1 or self.noise_ratio <= 1 or not 0 < self.khat_fraction < 1 or not 0 < self.floor_share < 1:
            raise ValueError("hz_alpha, khat_fraction and floor_share must lie in (0, 1) and noise_ratio above 1")


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    n = values.shape[0]
    return float(values.mean()), float(values.std() / math.sqrt(n)) if n > 1 else float("nan")


def check_posterior_gap(gap: PosteriorGap, th: Thresholds, floor: torch.Tensor | None = None) -> Check:
    """Mean ``log p_θ(x) − ELBO`` (the learned model's PMO, 000 Eq. 2): how loose q's bound is.

    With ``floor`` (per-point ELBO of the best Gaussian, :func:`~.posterior.best_gaussian_elbo`)
    the gap splits into the family's part (log p − best Gaussian) and the encoder's
    (best Gaussian − q: the amortisation gap), and the advice names the larger.
    """
    mean, se = _mean_se(gap.gap)
    verdict = verdict_above(mean, th.gap_nats, se)
    evidence: dict = {
        "iwae_minus_elbo": float(gap.iwae_gap.mean()), "log_lik_method": gap.log_lik_method,
        "num_particles": gap.num_particles, "elbo": float(gap.elbo.mean()), "log_lik": float(gap.log_lik.mean()),
        "share_points_gap_above_0.1": float((gap.gap > 0.1).double().mean()),
        "gap_quantiles_50_90_99": [float(v) for v in torch.quantile(gap.gap, torch.tensor([0.5, 0.9, 0.99], dtype=gap.gap.dtype))],
        "num_points": int(gap.gap.shape[0]),
    }
    encoder_part = None
    if floor is not None:
        family_part = float((gap.log_lik - floor).mean())
        encoder_part = mean - family_part
        evidence.update(family_part=family_part, amortisation_part=encoder_part)
    if verdict == "ok":
        advice = "q is close to the model's posterior: the ELBO is a tight bound here"
    elif encoder_part is not None and encoder_part > mean / 2:
        advice = (
            f"q misses the model's posterior by {mean:.3g} nats per point, {encoder_part:.3g} of it the encoder's "
            "(a Gaussian fitted per point does better): train the inference network longer against the fixed "
            "decoder (LiBI step 2, 000 §2), or use lagging inference networks (`--method lin`)"
        )
    else:
        advice = (
            f"q misses the model's posterior by {mean:.3g} nats per point and even the best Gaussian cannot do much "
            "better: the posteriors are not Gaussian-shaped (condition 1) — " + RICH_FAMILY_ADVICE
        )
    return Check(
        "posterior_gap", "posterior mismatch", "log p_θ(x) − ELBO (nats/point)", mean,
        f"alarm above {th.gap_nats:g} by 2 SE", SECTIONS["posterior_gap"], verdict, advice, se, evidence,
    )


def check_mean_field_floor(log_lik: torch.Tensor, best_gaussian: torch.Tensor, th: Thresholds) -> Check:
    """Share of points whose model posterior no Gaussian approximates within ``th.floor_nats``."""
    floor = log_lik - best_gaussian
    share = float((floor > th.floor_nats).double().mean())
    n = floor.shape[0]
    se = math.sqrt(max(share * (1 - share), 1.0 / n) / n)
    verdict = verdict_above(share, th.floor_share, se)
    if verdict == "ok":
        advice = (
            f"a Gaussian fits the model's posterior within {th.floor_nats:g} nats at {1 - share:.0%} of the points: "
            "the mean-field family is adequate for this decoder (no density alarm)"
        )
    else:
        advice = (
            f"at {share:.0%} of the points even the best Gaussian misses the model's posterior by more than "
            f"{th.floor_nats:g} nats (multi-modal or skewed posteriors — condition 1 of 004 §5.1 on the learned model); "
            "when no simpler f explains the data (condition 2: curved manifolds like Figure-8, clustered data) the "
            "ELBO then misestimates p(x) — " + RICH_FAMILY_ADVICE
        )
    return Check(
        "mean_field_floor", "posterior mismatch",
        f"share of points where the best Gaussian misses p_θ(z|x) by > {th.floor_nats:g} nats", share,
        f"alarm above {th.floor_share:g} by 2 SE", SECTIONS["mean_field_floor"], verdict, advice, se,
        {"mean_floor": float(floor.mean()), "median_floor": float(floor.median()),
         "floor_quantile_90": float(torch.quantile(floor, 0.9)), "num_points": n},
    )


def check_khat(khat: torch.Tensor, th: Thresholds, num_particles: int) -> Check:
    """Share of points whose PSIS k̂ exceeds ``th.khat``."""
    share = float((khat > th.khat).double().mean())
    n = khat.shape[0]
    se = math.sqrt(max(share * (1 - share), 1.0 / n) / n)
    verdict = verdict_above(share, th.khat_fraction, se)
    advice = (
        f"for {share:.0%} of the points q is an unreliable importance proposal (k̂ > {th.khat:g}): its tails are "
        "lighter than the posterior's, so IWAE and importance-sampled log-likelihoods built on it are biased low"
        if verdict != "ok"
        else "q's importance weights have light tails at almost every point (k̂ below the threshold)"
    )
    return Check(
        "psis_khat", "posterior mismatch", f"share of points with PSIS k̂ > {th.khat:g}", share,
        f"alarm above {th.khat_fraction:g} by 2 SE", SECTIONS["psis_khat"], verdict, advice, se,
        {"median_khat": float(khat.median()), "share_above_0.5": float((khat > 0.5).double().mean()),
         "num_points": n, "num_particles": num_particles},
    )


def check_richer_family(gain: FamilyGain, th: Thresholds) -> Check:
    """Held-out ELBO gain of a flow guide over the (refitted) given guide, decoder frozen."""
    mean, se = _mean_se(gain.elbo_gain)
    ll_mean, ll_se = _mean_se(gain.loglik_gain)
    verdict = verdict_above(mean, th.family_gain_nats, se)
    advice = (
        f"a normalising flow fits this decoder's posteriors {mean:.3g} nats per point better than the given family "
        "(same budget): the family, not its training, limits the bound, so the ELBO is pulling θ towards simpler "
        "posteriors (004 §5.1) — " + RICH_FAMILY_ADVICE
        if verdict != "ok"
        else "a richer family does not fit this decoder's posteriors better than the given one"
    )
    return Check(
        "richer_family", "posterior mismatch", "held-out ELBO gain of a flow guide, decoder frozen (nats/point)", mean,
        f"alarm above {th.family_gain_nats:g} by 2 SE", SECTIONS["richer_family"], verdict, advice, se,
        {"loglik_estimate_gain": ll_mean, "loglik_estimate_gain_se": ll_se, "epochs": gain.epochs,
         "base_refitted": gain.base_refitted, "flow_warm_started": gain.flow_warm_started, "base_elbo": float(gain.base_elbo.mean()),
         "flow_elbo": float(gain.flow_elbo.mean()), "seconds": gain.seconds},
    )


def check_residuals(hz_statistic: float, hz_p_value: float, num_points: int, projected: bool, th: Thresholds) -> Check:
    """Henze-Zirkler test of the residuals x − f(ẑ) to the learned manifold."""
    verdict = "alarm" if hz_p_value < th.hz_alpha else "ok"
    advice = (
        f"the residuals to the learned manifold are not Gaussian (HZ p = {hz_p_value:.2g}): the manifold may have "
        "been misestimated (004 §9 item 4(i)) — look at the data's topology (item 3) and " + RICH_FAMILY_ADVICE
        if verdict == "alarm"
        else "the residuals to the learned manifold look Gaussian, as the model assumes"
    )
    return Check(
        "residual_normality", "manifold", "Henze-Zirkler p-value of the residuals x − f(ẑ)", hz_p_value,
        f"alarm below {th.hz_alpha:g}", SECTIONS["residual_normality"], verdict, advice, None,
        {"hz_statistic": hz_statistic, "num_points": num_points, "normal_space_projection": projected},
    )


def check_noise(profile: NoiseProfile, learned: bool | None, th: Thresholds) -> Check:
    """The model's σ² against the σ² that maximises held-out log-likelihood (and Eq. 9's)."""
    best = profile.multipliers[profile.best]
    ratio = float(1.0 / best)  # σ²_model / σ²_loglik, the same for every dimension
    gain, se = profile.gain_se()
    off = abs(math.log(ratio)) > math.log(th.noise_ratio)
    significant = gain > 2 * se if math.isfinite(se) else gain > 0
    verdict = "alarm" if off and significant else ("inconclusive" if off else "ok")
    at_edge = profile.best in (0, len(profile.multipliers) - 1)
    how = "learned jointly with the ELBO" if learned else ("fixed" if learned is False else "the model's")
    eq9 = float((profile.elbo_optimal / profile.loglik_optimal).mean())
    if verdict == "ok":
        advice = f"the {how} σ² agrees with the σ² chosen by held-out log-likelihood (within ×{th.noise_ratio:g})"
    else:
        advice = (
            f"the {how} σ² is {ratio:.3g}× the σ² that maximises held-out log-likelihood (gain {gain:.3g} ± {se:.2g} "
            "nats/point); set σ² by validation log-likelihood or domain knowledge, not jointly with the ELBO "
            "(004 §9 item 2; Eq. 9 shows the ELBO's σ² absorbs q's misfit), then retrain"
        )
    if at_edge:
        advice += f" (the best σ² lies at the edge of the searched range ×{float(profile.multipliers[0]):.3g}–×{float(profile.multipliers[-1]):.3g})"
    return Check(
        "noise_variance", "noise variance", "σ²_model / σ²_held-out-log-lik", ratio,
        f"alarm outside [1/{th.noise_ratio:g}, {th.noise_ratio:g}] with a significant log-lik gain",
        SECTIONS["noise_variance"], verdict, advice, None,
        {"noise_var_model": profile.model.tolist(), "noise_var_eq9": profile.elbo_optimal.tolist(),
         "noise_var_loglik": profile.loglik_optimal.tolist(), "eq9_over_loglik": eq9, "learned_jointly": learned,
         "loglik_gain": gain, "loglik_gain_se": se, "method": profile.method,
         "profile": {f"{float(c):.4g}": float(v) for c, v in zip(profile.multipliers, profile.mean_log_lik)}},
    )


def check_latent(rows: list[LatentRow], current_k: int | None, th: Thresholds) -> Check:
    """Does the ELBO prefer a different K than the log-likelihood does (004 Table 1)?"""
    k_elbo, elbo_diffs = preferred(rows, "elbo")
    k_ll, ll_diffs = preferred(rows, "log_lik")
    k_iwae, _ = preferred(rows, "iwae")
    # how much the ELBO's K loses in log-likelihood against the log-lik's K
    loss, loss_se = ll_diffs[k_elbo]
    value = 0.0 if k_elbo == k_ll else -loss
    verdict = "ok" if k_elbo == k_ll else verdict_above(value, th.latent_nats, loss_se)
    table = {
        r.k: {"elbo": float(r.elbo.mean()), "iwae": float(r.iwae.mean()), "log_lik": float(r.log_lik.mean()),
              "log_lik_method": r.log_lik_method, "noise_var_mean": r.noise_var_mean}
        for r in rows
    }
    if verdict == "ok":
        advice = f"the ELBO and the log-likelihood agree on K = {k_elbo}"
    else:
        advice = (
            f"the ELBO prefers K = {k_elbo} but the log-likelihood prefers K = {k_ll} ({value:.3g} ± {loss_se:.2g} "
            "nats/point better): a larger K with a smaller σ² lets an MFG-VAE model the noise to get simpler "
            "posteriors (004 §8 Case B); choose K by held-out log-likelihood (IWAE or importance sampling), "
            "not by the ELBO"
        )
    return Check(
        "latent_dimension", "latent dimension", "log-lik lost by the ELBO's choice of K (nats/point)", value,
        f"alarm when the ELBO's K differs and loses more than {th.latent_nats:g} by 2 SE",
        SECTIONS["latent_dimension"], verdict, advice, loss_se,
        {"k_elbo": k_elbo, "k_loglik": k_ll, "k_iwae": k_iwae, "current_k": current_k,
         "table": {str(k): v for k, v in table.items()}},
    )


def check_classes(balanced_accuracy: float, mean_entropy: float, num_classes: int, num_points: int, th: Thresholds) -> Check:
    """Balanced accuracy of a small classifier of y | x (guideline 1)."""
    verdict = "alarm" if balanced_accuracy < th.balanced_accuracy else "ok"
    if verdict == "alarm":
        advice = (
            f"the classes overlap (balanced accuracy {balanced_accuracy:.3f}, chance {1 / num_classes:.3f}): cohorts "
            "share a manifold, so a semi-supervised MFG-VAE tends to ignore the labels (functional collapse, 004 §7) — "
            "use a rich family for q(z|x) in the unlabelled objective U (e.g. `train-m2 --objective iwae`, 004 Eqs. "
            "14-15) and regularise the decoder (item 5)"
        )
    else:
        advice = (
            f"the classes separate well (balanced accuracy {balanced_accuracy:.3f}): a mean-field q is enough for a "
            "semi-supervised VAE on these labels (004 §9 item 1)"
        )
    return Check(
        "class_overlap", "semi-supervised", "balanced accuracy of a small classifier of y | x", balanced_accuracy,
        f"alarm below {th.balanced_accuracy:g}", SECTIONS["class_overlap"], verdict, advice, None,
        {"mean_entropy_nats": mean_entropy, "max_entropy_nats": math.log(num_classes), "num_classes": num_classes,
         "num_points": num_points},
    )
