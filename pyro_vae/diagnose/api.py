"""``diagnose(model, guide, x, ...)``: the checks of 004 §9 on any Pyro model and guide.

>>> from pyro_vae.diagnose import diagnose
>>> report = diagnose(model, guide, x_heldout, x_train=x_train, noise_learned=True)
>>> print(report.text())            # or report.to_dict() for JSON

The model and guide follow :class:`~pyro_vae.diagnose.probe.ModelProbe`'s contract (sites
``"z"`` and ``"x"`` in the plate ``"data"``, a Gaussian likelihood). Which checks run:

- ``"posterior"`` (log p_θ(x) − ELBO), ``"floor"`` (the best Gaussian per point),
  ``"khat"`` (PSIS k̂), ``"family"`` (flow guide trained against the frozen model): posterior
  mismatch, 004 §5.1 / §9 item 4(ii); ``"floor"`` and ``"family"`` make the density verdict;
- ``"residuals"``: Henze-Zirkler normality of x − f(ẑ), item 4(i) (needs K < D);
- ``"noise"``: σ² of the model vs Eq. 9's vs held-out log-likelihood's, §8 Case A / item 2;
- ``"latent"``: when ``latent_models`` gives a trained model per K, §8 Case B;
- ``"classes"``: when ``labelled = (x, y)`` is given, item 1.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping

import torch

from pyro_vae.diagnose import checks as C
from pyro_vae.diagnose.latent import latent_dimension_table
from pyro_vae.diagnose.noise import noise_profile
from pyro_vae.diagnose.posterior import best_gaussian_elbo, posterior_gap, psis_khat, richer_family_gain
from pyro_vae.diagnose.probe import ModelProbe, seeded
from pyro_vae.diagnose.report import Check, Report, skipped

__all__ = ["CHECKS", "diagnose"]

CHECKS = ("posterior", "floor", "khat", "family", "residuals", "noise", "latent", "classes")


def _check_names(checks: Iterable[str]) -> tuple[str, ...]:
    names = tuple(checks)
    unknown = [c for c in names if c not in CHECKS]
    if unknown or not names:
        raise ValueError(f"checks={list(names)!r}: expected a non-empty selection of {CHECKS}")
    return names


def diagnose(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    x_train: torch.Tensor | None = None,
    labelled: tuple[torch.Tensor, torch.Tensor] | None = None,
    noise_learned: bool | None = None,
    latent_models: Mapping[int, tuple[Callable, Callable]] | None = None,
    checks: Iterable[str] = CHECKS,
    thresholds: C.Thresholds | None = None,
    num_particles: int = 1000,
    khat_points: int = 200,
    family_epochs: int = 10,
    seed: int = 0,
    context: dict | None = None,
) -> Report:
    """Run the checks on held-out points ``x`` (see the module docstring).

    Parameters
    ----------
    model, guide : callable
        A trained, unbatched model and guide.
    x : Tensor (N, D)
        Held-out observations the checks are computed on.
    x_train : Tensor, optional
        Observations to train the richer family on (default ``x``).
    labelled : (Tensor (M, D), Tensor (M,)), optional
        Inputs and class labels for the semi-supervised check.
    noise_learned : bool, optional
        Whether σ² was learned jointly with the ELBO (read from a
        :class:`~pyro_vae.models.VAEModel`'s ``noise`` when not given).
    latent_models : dict K -> (model, guide), optional
        Trained models with other latent dimensions (the given model included or not).
    checks : iterable of str
        A selection of :data:`CHECKS`.
    thresholds : Thresholds, optional
    num_particles : int
        Draws of q per point for the bounds (and importance samples when K > 2).
    khat_points : int
        Points (the first of ``x``) on which PSIS k̂ is computed.
    family_epochs : int
        Training budget of the richer family (and of the refitted guide).
    seed : int
        Seeds every draw; the caller's global RNG state is restored afterwards.
    context : dict, optional
        Extra fields for the report's context (e.g. the run folder).

    Returns
    -------
    Report
    """
    names = _check_names(checks)
    th = thresholds or C.Thresholds()
    for arg, value in (("num_particles", num_particles), ("khat_points", khat_points), ("family_epochs", family_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg}={value!r}: expected a positive integer")
    probe = ModelProbe(model, guide, x)
    if x_train is not None and (x_train.dim() != 2 or x_train.shape[1] != probe.obs_dim):
        raise ValueError(f"x_train of shape {tuple(x_train.shape)}: expected (N, {probe.obs_dim})")
    if noise_learned is None and getattr(model, "noise", None) in ("learned", "fixed"):
        noise_learned = model.noise == "learned"
    out: list[Check] = []
    timings: dict[str, float] = {}
    arrays: dict[str, Any] = {"x": x.detach().cpu().numpy(), "manifold": _manifold(probe, seed)}

    def timed(name: str, fn):
        start = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - start, 2)
        return result

    if "posterior" in names or "floor" in names:
        gap = timed("posterior", lambda: posterior_gap(model, guide, x, num_particles=num_particles, seed=seed))
        floor = None
        if "floor" in names:
            floor = timed("floor", lambda: best_gaussian_elbo(model, guide, x, num_particles=num_particles, seed=seed))
        if "posterior" in names:
            out.append(C.check_posterior_gap(gap, th, floor))
        if floor is not None:
            out.append(C.check_mean_field_floor(gap.log_lik, floor, th))
            arrays["floor"] = (gap.log_lik - floor).numpy()
        arrays["gap"] = gap.gap.numpy()
    if "khat" in names:
        khat = timed("khat", lambda: psis_khat(model, guide, x[:khat_points], num_particles=num_particles, seed=seed))
        out.append(C.check_khat(khat, th, num_particles))
        arrays["khat"] = khat.numpy()
    if "family" in names:
        gain = timed("family", lambda: richer_family_gain(
            model, guide, x if x_train is None else x_train, x, epochs=family_epochs, seed=seed))
        out.append(C.check_richer_family(gain, th))
    if "residuals" in names:
        if probe.latent_dim >= probe.obs_dim:
            out.append(skipped("residual_normality", "manifold", "Henze-Zirkler p-value of the residuals x − f(ẑ)",
                               C.SECTIONS["residual_normality"],
                               f"K = {probe.latent_dim} ≥ D = {probe.obs_dim}: the manifold fills the space, no residual to test"))
        else:
            check, coords = timed("residuals", lambda: _residual_check(probe, x, th, seed))
            out.append(check)
            arrays["residual_coords"] = coords
    if "noise" in names:
        if probe.noise_var is None:
            out.append(skipped("noise_variance", "noise variance", "σ²_model / σ²_held-out-log-lik",
                               C.SECTIONS["noise_variance"], "the model's σ² varies with z"))
        else:
            prof = timed("noise", lambda: noise_profile(model, guide, x, seed=seed, num_samples=num_particles))
            out.append(C.check_noise(prof, noise_learned, th))
            arrays["noise_profile"] = (prof.multipliers.numpy(), prof.mean_log_lik.numpy(),
                                       float((prof.elbo_optimal / prof.model).mean()))
    if "latent" in names and latent_models:
        rows = timed("latent", lambda: latent_dimension_table(latent_models, x, num_particles=num_particles, seed=seed))
        out.append(C.check_latent(rows, probe.latent_dim, th))
        arrays["latent"] = [(r.k, float(r.elbo.mean()), float(r.iwae.mean()), float(r.log_lik.mean())) for r in rows]
    if "classes" in names and labelled is not None:
        out.append(timed("classes", lambda: _class_check(*labelled, th, seed)))
    ctx = {"num_points": int(x.shape[0]), "latent_dim": probe.latent_dim, "obs_dim": probe.obs_dim, "seed": seed,
           **(context or {}), "seconds": timings}
    return Report(out, ctx, arrays)


def _manifold(probe: ModelProbe, seed: int):
    """Points of the learned manifold f(z) for the figure: a z-line (K = 1) or prior draws."""
    with torch.no_grad():
        if probe.latent_dim == 1:
            z = torch.linspace(-3.5, 3.5, 600, dtype=probe.dtype, device=probe.device)[:, None]
        else:
            gen = torch.Generator().manual_seed(seed)
            z = torch.randn(2000, probe.latent_dim, generator=gen).to(probe.dtype).to(probe.device)
        return probe.f(z).cpu().numpy()


def _residual_check(probe: ModelProbe, x: torch.Tensor, th: C.Thresholds, seed: int):
    from pyro_vae.metrics.guidelines import residual_normality

    with seeded(seed):
        res = residual_normality(x, probe.f, probe.latent_dim, probe.noise_var, project=True, seed=seed)
    check = C.check_residuals(res.hz_statistic, res.hz_p_value, int(x.shape[0]), True, th)
    return check, res.normal_coords.detach().cpu().numpy()


def _class_check(x: torch.Tensor, y: torch.Tensor, th: C.Thresholds, seed: int) -> Check:
    from pyro_vae.metrics.guidelines import class_overlap

    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y has {y.shape[0]} labels for {x.shape[0]} points")
    res = class_overlap(x, y, seed=seed)
    return C.check_classes(res.balanced_accuracy, res.mean_entropy, res.num_classes, int(x.shape[0]), th)
