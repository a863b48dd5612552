"""A guide's ``q(z | x)`` beside the learned model's posterior and the truth's, at chosen x.

A learned model need not share the truth's latent coordinates (a mirrored latent ``z → −z``
fits the data as well), so q is compared with *both* posteriors, labelled: the learned model's
``p_θ(z | x)`` (what the ELBO asks q to match, 000 Eq. 2) and the true ``p(z | x)``. Each
reference is computed by NUTS or quadrature on the model's Pyro program
(:mod:`pyro_vae.posterior.nuts`, :mod:`pyro_vae.posterior.grid`); the KLs use the grid
(K ≤ 2; :func:`pyro_vae.posterior.compare.grid_kl`, Monte Carlo ``KL(q ‖ p)`` for a q that is not
a diagonal Normal). :func:`posterior_comparison` returns the summary (what ``pyro-vae
posterior`` prints, as JSON or text) and the draws; :func:`comparison_idata` makes an ArviZ
``InferenceData`` of them.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = ["PosteriorComparison", "comparison_idata", "posterior_comparison"]

METHODS = ("nuts", "quadrature")


class PosteriorComparison(NamedTuple):
    """``summary`` (JSON-able) and the draws behind it.

    ``draws[role]`` is ``(chains, draws, N, K)`` float64 for the roles ``"truth"``,
    ``"model"`` (with a model) and ``"guide"`` (with a guide; iid draws laid out as chains);
    ``diverging[role]`` is ``(chains, draws, N)`` for the NUTS roles; ``provenance`` lists the
    NUTS records; ``references[role]`` is ``(GridPosterior or None, list of NUTSResult or None)``.
    """

    summary: dict
    draws: dict
    diverging: dict
    provenance: list
    references: dict


def _reference(source, x, method, *, need_grid, seed, num_chains, num_warmup, num_samples):
    from pyro_vae.posterior.grid import grid_posterior
    from pyro_vae.posterior.nuts import nuts_posteriors

    k = source.latent_dim
    grid = grid_posterior(source, x) if k <= 2 and (need_grid or method == "quadrature") else None
    nuts = None
    if method == "nuts":
        nuts = nuts_posteriors(source, x, seed=seed, num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples)
    return grid, nuts


def _block(label, method, grid, nuts, i) -> dict:
    if method == "nuts":
        res, draws = nuts[i], nuts[i].flat()
        d = res.diagnostics
        out = {
            "label": label, "method": "nuts", "mean": draws.mean(0).tolist(), "sd": draws.std(0).tolist(),
            "r_hat": max(d["r_hat"]), "ess_bulk": min(d["ess_bulk"]), "divergences": d["divergences"],
            "ok": res.ok, "reasons": list(res.reasons), "thresholds": d.get("thresholds"),
        }
    else:
        ok = bool(grid.converged[i])
        out = {
            "label": label, "method": "quadrature", "mean": grid.mean[i].tolist(), "sd": grid.sd[i].tolist(),
            "r_hat": None, "ess_bulk": None, "divergences": None, "ok": ok,
            "reasons": [] if ok else [f"grid did not converge (last change {float(grid.max_change[i]):.2g} nats)"],
        }
    out["log_marginal"] = float(grid.log_marginal[i]) if grid is not None else None
    return out


def _kl_block(kl, i) -> dict:
    return {"kl_q_p": float(kl.kl_qp[i]), "kl_q_p_se": float(kl.kl_qp_se[i]), "kl_p_q": float(kl.kl_pq[i]),
            "kl_q_p_method": kl.method, "kl_p_q_method": "grid"}


def _grid_draws(grid, n: int, total: int, seed: int) -> torch.Tensor:
    from pyro_vae.posterior.grid import sample_grid_posterior

    return torch.stack([sample_grid_posterior(grid, i, total, seed + i) for i in range(n)], 1)  # (total, N, K)


def posterior_comparison(
    dataset,
    x: torch.Tensor,
    *,
    model=None,
    guide=None,
    method: str = "nuts",
    seed: int = 0,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    model_label: str = "learned model",
    guide_label: str = "q(z|x)",
    kl_samples: int = 4000,
) -> PosteriorComparison:
    """Reference posteriors of the truth (and of a learned model) at ``x``, beside a guide's q.

    Parameters
    ----------
    dataset : Dataset
        The ground truth (its Pyro program).
    x : Tensor (N, D)
    model : Pyro model, optional
        A learned (unbatched) model, e.g. a run's selected restart.
    guide : Pyro guide, optional
        The guide whose ``q(z | x)`` is compared (in the learned model's latent space).
    method : {"nuts", "quadrature"}
        How each reference posterior is computed (quadrature needs K ≤ 2). The KLs always
        use the grid, computed whenever K ≤ 2.
    seed, num_chains, num_warmup, num_samples :
        NUTS settings (:func:`pyro_vae.posterior.nuts.nuts_posteriors`); with quadrature, the
        draws kept for ``comparison_idata`` are ``num_chains × num_samples`` from the grid.
    model_label, guide_label : str
        How the summary names them.
    kl_samples : int
        Draws of q for a Monte Carlo ``KL(q ‖ p)`` (q not a diagonal Normal).

    Returns
    -------
    PosteriorComparison
    """
    from pyro_vae.posterior.compare import grid_kl
    from pyro_vae.traces import diagonal_normal, guide_distribution
    from pyro_vae.rng import isolated_rng

    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {METHODS}")
    n = x.shape[0]
    total = num_chains * num_samples
    roles = [("truth", dataset, f"true model: {dataset.name}")]
    if model is not None:
        roles.append(("model", model, model_label))
    refs = {}
    for role, source, _ in roles:
        refs[role] = _reference(source, x, method, need_grid=guide is not None, seed=seed, num_chains=num_chains,
                                num_warmup=num_warmup, num_samples=num_samples)
    q = None
    if guide is not None:
        q = guide_distribution(guide, x)
        k_q = q.event_shape[0]
    draws, diverging, provenance = {}, {}, []
    for role, source, _ in roles:
        grid, nuts = refs[role]
        if nuts is not None:
            draws[role] = torch.stack([r.samples for r in nuts], 2)  # (C, S, N, K)
            if all(r.idata is not None for r in nuts):
                diverging[role] = np.stack([np.asarray(r.idata.sample_stats["diverging"].values, dtype=bool)
                                            for r in nuts], 2)
            provenance += [{"role": role, **r.provenance} for r in nuts]
        elif grid is not None:
            draws[role] = _grid_draws(grid, n, total, seed).reshape(num_chains, num_samples, n, -1)
    kls = {}
    guide_moments = None
    if q is not None:
        with isolated_rng("cpu", seed), torch.no_grad():
            q_draws = q.sample((total,)).double().cpu()  # (total, N, K)
        draws["guide"] = q_draws.reshape(num_chains, num_samples, n, k_q)
        normal = diagonal_normal(q)
        if normal is not None:
            guide_moments = ("exact", normal[0].detach().double().cpu(), normal[1].detach().double().cpu())
        else:
            guide_moments = ("monte_carlo", q_draws.mean(0), q_draws.std(0))
        for role, source, _ in roles:
            grid = refs[role][0]
            if grid is None:
                kls[role] = f"no KL: the {role}'s latent space has K = {source.latent_dim} > 2 (the KLs use the grid)"
            elif source.latent_dim != k_q:
                kls[role] = f"no KL: q has K = {k_q}, the {role}'s posterior K = {source.latent_dim}"
            else:
                kls[role] = grid_kl(source, q, grid, x, num_samples=kl_samples, seed=seed)
    points = []
    for i in range(n):
        point: dict[str, Any] = {"x": x[i].tolist()}
        for role, _, label in roles:
            grid, nuts = refs[role]
            point[role] = _block(label, method, grid, nuts, i)
        # every reference at this x usable? (the model's reasons are prefixed; the truth's are not)
        point["ok"] = all(point[role]["ok"] for role, _, _ in roles)
        point["reasons"] = [r if role == "truth" else f"{role}: {r}" for role, _, _ in roles for r in point[role]["reasons"]]
        if q is not None:
            how, mean, sd = guide_moments
            block = {"label": guide_label, "mean": mean[i].reshape(-1).tolist(), "sd": sd[i].reshape(-1).tolist(),
                     "moments": how}
            for role, _, _ in roles:
                kl = kls[role]
                block[f"kl_to_{role}"] = kl if isinstance(kl, str) else _kl_block(kl, i)
            point["guide"] = block
        points.append(point)
    summary = {"method": method, "dataset": dataset.name, "points": points}
    return PosteriorComparison(summary, draws, diverging, provenance, refs)


def comparison_idata(comparison: PosteriorComparison):
    """An ArviZ ``InferenceData`` of a :class:`PosteriorComparison`.

    ``posterior``: ``z_truth``, ``z_model``, ``z_guide`` (those present), each
    ``(chain, draw, point, z_dim)`` (the guide's and the grid's draws are independent, laid out
    as chains); ``sample_stats``: ``diverging_truth``/``diverging_model`` for NUTS;
    ``observed_data``: ``x`` (point, x_dim). ``posterior.attrs`` hold the summary and the NUTS
    provenance records as JSON.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az

    posterior, dims = {}, {}
    for role, value in comparison.draws.items():
        posterior[f"z_{role}"] = value.numpy()
        dims[f"z_{role}"] = ["point", f"z_dim_{role}"]
    stats = {f"diverging_{role}": value for role, value in comparison.diverging.items()}
    for role in comparison.diverging:
        dims[f"diverging_{role}"] = ["point"]
    x = np.array([p["x"] for p in comparison.summary["points"]])
    dims["x"] = ["point", "x_dim"]
    idata = az.from_dict(posterior=posterior, sample_stats=stats or None, observed_data={"x": x}, dims=dims)
    idata.posterior.attrs["summary"] = json.dumps(comparison.summary, default=str)
    idata.posterior.attrs["provenance"] = json.dumps(comparison.provenance, default=str)
    return idata
