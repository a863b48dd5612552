"""The figure panels of an experiment, from the runs its sweep recorded.

For each data set: the true p(x) beside each method's learned p_θ(x) with f_θ(z) overlaid
(004 Figures 4–5, 8–16 top rows); the posteriors at the experiment's marked points under the
true and the learned f with the guide's q (bottom rows); the aggregate posterior against the
prior (000 Figure 1E/F). Each method's model is the selected grid point's run on the first data
version, its best restart.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pyro_vae.plots import aggregate_posterior_panel, density_panel, posterior_panel, save_png
from pyro_vae.reproduce.report import select_runs


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text).strip("_")


def _landscape(folder: Path) -> list[Path]:
    """000 Figure 1A/B: min_φ of the objective and I(X; Z) over the diagonal B of LinearJTE."""
    from pyro_vae.plots import landscape_panel, linear_jte_landscape

    land = linear_jte_landscape()
    return [
        save_png(landscape_panel(land.pmo, land.b1, land.b2, title="L(θ, φ*) = MLEO + PMO over B (000 Fig. 1A)"),
                 folder / "landscape_objective.png"),
        save_png(landscape_panel(land.mutual_info, land.b1, land.b2, title="I(X; Z) over B (000 Fig. 1B)", mark="max"),
                 folder / "landscape_mutual_info.png"),
    ]


def _m2_figures(experiment, folder: Path, quick: bool, overrides: dict | None) -> list[Path]:
    """004 Figures 17–22: f(z, y) per label and p(x | y) per cohort, the truth beside each method."""
    from pyro_vae.pipeline_m2 import cohorts, load_trained_m2, sample_m2
    from pyro_vae.plots import m2_panel

    written, truths = [], set()
    for (dataset_name, column), (_, records) in select_runs(experiment, folder / "runs", quick, overrides).items():
        first = min(records, key=lambda r: ((r.config or {}).get("data_seed", 0), (r.config or {}).get("split", 0)))
        _, ds, model, _, _ = load_trained_m2(first.run_dir)
        labels = dict(cohorts(ds))
        with torch.no_grad():
            samples = {name: sample_m2(model, 500, y=y, seed=0) for name, y in labels.items()}
        if dataset_name.endswith("semicircle") and dataset_name not in truths:
            truths.add(dataset_name)
            truth = m2_panel(ds.f, label_values=labels)
            written.append(save_png(truth, folder / "figures" / f"{dataset_name}_true_f.png"))
        if ds.obs_dim == 2:
            fig = m2_panel(model.f, label_values=labels, samples=samples)
            written.append(save_png(fig, folder / "figures" / f"{dataset_name}_{_slug(column)}_f_and_cohorts.png"))
    return written


def experiment_figures(experiment, folder: str | Path, *, quick: bool = False, overrides: dict | None = None) -> list[Path]:
    """Write the panels of ``experiment`` under ``folder/figures``; returns the paths written."""
    from pyro_vae.pipeline import load_trained
    from pyro_vae.traces import diagonal_normal, guide_distribution

    folder = Path(folder)
    if experiment.kind == "m2":
        return _m2_figures(experiment, folder, quick, overrides)
    selected = select_runs(experiment, folder / "runs", quick, overrides)
    written = []
    if experiment.figures.get("landscape"):
        written += _landscape(folder / "figures")
    for dataset_name in experiment.datasets:
        trained = {}
        for (dataset, column), (_, records) in selected.items():
            if dataset != dataset_name or not records:
                continue
            first = min(records, key=lambda r: (r.config or {}).get("data_seed", 0))
            _, ds, model, guide, _ = load_trained(first.run_dir)
            trained[column] = (ds, model, guide)
        if not trained:
            continue
        ds = next(iter(trained.values()))[0]
        if ds.obs_dim > 5:
            continue
        models = {col: model for col, (_, model, _) in trained.items() if model.latent_dim == ds.latent_dim}
        written.append(save_png(density_panel(ds, models or None), folder / "figures" / f"{dataset_name}_density.png"))
        points = experiment.figures.get("points", {}).get(dataset_name)
        if points and ds.latent_dim <= 2:
            x = torch.tensor(points, dtype=torch.float32)
            for col, (_, model, guide) in trained.items():
                if model.latent_dim > 2:
                    continue
                fig = posterior_panel(ds, x, model=model, guide=guide)
                written.append(save_png(fig, folder / "figures" / f"{dataset_name}_posteriors_{_slug(col)}.png"))
        x_test = ds.splits(0).test.x
        guides = {  # the aggregate posterior panel pools Gaussian encoders
            col: guide for col, (_, model, guide) in trained.items()
            if model.latent_dim <= 2 and diagonal_normal(guide_distribution(guide, x_test[:2])) is not None
        }
        if guides:
            same_k = all(model.latent_dim == ds.latent_dim for _, model, _ in trained.values())
            truth = _true_mean_field(ds, x_test) if same_k else None
            if truth is not None:
                guides = {"truth (θ_GT, φ_GT)": truth, **guides}
            fig = aggregate_posterior_panel(guides, x_test)
            written.append(save_png(fig, folder / "figures" / f"{dataset_name}_aggregate_posterior.png"))
    return written


def _true_mean_field(ds, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(loc, scale)`` of the true model's best mean-field posteriors on ``x`` (φ_GT of 000 Fig. 1E):
    the exact posterior means and ``1 / (Σ⁻¹)_ii`` variances (000 Eqs. 23-24); None unless the truth
    is linear-Gaussian."""
    from pyro_vae.metrics import linear_gaussian as lg

    try:
        params = lg.linear_gaussian_params(ds)
    except ValueError:  # a non-linear mean function or a non-normal prior
        return None
    post = lg.posterior(params, x.double())
    scale = lg.mean_field_optimum(post.cov).sqrt()
    return post.mean, scale.expand_as(post.mean)
