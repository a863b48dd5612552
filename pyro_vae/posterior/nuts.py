"""Reference posteriors ``p_θ(z | x)`` by NUTS, with diagnostics that decide whether to trust them.

For one observation ``x`` the potential energy is ``U(u) = −[log p(x, z) + log |dz/du|]`` in the
unconstrained coordinate ``u``, ``z = biject_to(support)(u)`` (``z = u`` under an N(0, I) prior,
``z = sigmoid(u)`` under U(0, 1)^K), with ``log p(x, z)`` from a Pyro trace of the model
conditioned on ``x`` and ``z`` (:class:`~pyro_vae.posterior.target.ModelTarget`): the same code
serves a data set's truth, a learned model and a user's model. Each of ``num_chains`` chains is its own :class:`pyro.infer.MCMC` run with
:class:`pyro.infer.NUTS` (Hoffman & Gelman 2014), started from a different point spread over
the prior (quantiles ``0.01 … 0.99``; scrambled Sobol points for K ≥ 2) and seeded from its
own stream, so the chains run one after another and give the same draws on every machine,
whatever its number of cores.

The draws become an ArviZ ``InferenceData`` (posterior ``z``, sample stats ``diverging``), and
ArviZ's rank-normalised split R-hat, bulk and tail ESS and divergence count decide ``ok``:
a result that fails any threshold carries ``ok=False`` and the reasons, and must not be used
as ground truth. Several dispersed chains matter: on a bimodal posterior a single chain
stuck in one mode reports a perfect R-hat, while chains that start in different modes and
never cross show R-hat ≫ 1.

The returned ``provenance`` records how the draws were made (after posteriordb's reference
posteriors): method, arguments, seeds, initial points, diagnostics, package versions.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from typing import Any, NamedTuple

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS

from pyro_vae import checks
from pyro_vae.posterior.target import posterior_target
from pyro_vae.provenance import provenance_record, utc_now

__all__ = ["NUTSResult", "dispersed_initial_points", "nuts_posterior", "nuts_posteriors", "check_diagnostics",
           "format_against"]


class NUTSResult(NamedTuple):
    """Draws from ``p(z | x)`` for one x, with their diagnostics.

    Attributes
    ----------
    samples : Tensor (chains, draws, K)
        Posterior draws (float64), per chain.
    idata : arviz.InferenceData
        ``posterior.z`` (chain, draw, z_dim) — named after the model's latent site —,
        ``sample_stats.diverging``, ``observed_data.x``.
    ok : bool
        Every diagnostic passed its threshold.
    reasons : list of str
        Why ``ok`` is false (empty when it is true).
    diagnostics : dict
        ``r_hat``, ``ess_bulk``, ``ess_tail``, ``mcse_mean``, ``mcse_sd`` (per latent
        dimension), ``divergences``, ``acceptance_rate`` (per chain), ``num_chains``,
        ``num_samples``, ``seconds``, and the ``thresholds`` applied.
    provenance : dict
        How the draws were made (see the module docstring).
    """

    samples: torch.Tensor
    idata: Any
    ok: bool
    reasons: list
    diagnostics: dict
    provenance: dict

    def flat(self) -> torch.Tensor:
        """All chains' draws pooled, ``(chains · draws, K)``."""
        return self.samples.reshape(-1, self.samples.shape[-1])


def _arviz():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def _dispersed_quantiles(num_chains: int, latent_dim: int, seed: int = 0) -> torch.Tensor:
    """Quantiles ``(num_chains, K)`` in [0.01, 0.99]: evenly spaced (K = 1) or scrambled Sobol (K ≥ 2)."""
    if latent_dim == 1:
        p = torch.linspace(0.0, 1.0, num_chains, dtype=torch.float64)[:, None] if num_chains > 1 else torch.full(
            (1, 1), 0.5, dtype=torch.float64
        )
    else:
        engine = torch.quasirandom.SobolEngine(latent_dim, scramble=True, seed=seed)
        p = engine.draw(num_chains, dtype=torch.float64)
    return 0.01 + 0.98 * p


def dispersed_initial_points(num_chains: int, latent_dim: int, prior: str = "normal", seed: int = 0) -> torch.Tensor:
    """Starting points ``(num_chains, K)`` spread over the prior: quantiles in [0.01, 0.99].

    K = 1: evenly spaced quantiles from 0.01 to 0.99. K ≥ 2: a scrambled Sobol sequence
    (seeded) mapped to the same range, per dimension, through the prior's quantile function
    (``"normal"``: N(0, 1); ``"uniform"``: U(0, 1)). A model's own prior is used by
    :func:`nuts_posterior` (``target.initial_points``).
    """
    p = _dispersed_quantiles(num_chains, latent_dim, seed)
    if prior == "uniform":
        return p
    return math.sqrt(2.0) * torch.special.erfinv(2 * p - 1)


def _potential(target, x: torch.Tensor):
    transform = target.transform

    def potential(params: dict) -> torch.Tensor:
        u = params["u"]
        z = transform(u)
        log_jac = transform.log_abs_det_jacobian(u, z).to(torch.float64)
        return -(target.log_joint(x, z) + log_jac)

    return potential


def _chain_seeds(seed: int, num_chains: int) -> list[int]:
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(num_chains)]


def format_against(value: float, threshold: float) -> str:
    """``value`` with as many significant digits as it takes to tell it from ``threshold``
    (at least 4): R-hat 1.01002 against 1.01 prints "1.01002", not "1.01"."""
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.4g}"
    for digits in range(4, 18):
        text = f"{value:.{digits}g}"
        shown = float(text)
        if (shown > threshold) == (value > threshold) and (shown < threshold) == (value < threshold):
            return text
    return repr(value)


def check_diagnostics(
    diagnostics: dict,
    *,
    max_rhat: float = 1.01,
    min_ess_bulk: float | None = None,
    min_ess_tail: float | None = None,
    max_divergences: int = 0,
    min_chains: int = 4,
) -> tuple[bool, list[str], dict]:
    """Apply the thresholds to a diagnostics dict; returns ``(ok, reasons, thresholds)``.

    Defaults: R-hat ≤ 1.01, bulk and tail ESS ≥ 100 per chain, no divergence, at least 4
    chains (Vehtari et al. 2021, "Rank-normalization, folding, and localization").
    """
    chains = diagnostics["num_chains"]
    thresholds = {
        "max_rhat": max_rhat,
        "min_ess_bulk": 100.0 * chains if min_ess_bulk is None else float(min_ess_bulk),
        "min_ess_tail": 100.0 * chains if min_ess_tail is None else float(min_ess_tail),
        "max_divergences": max_divergences,
        "min_chains": min_chains,
    }
    reasons = []
    if chains < min_chains:
        reasons.append(f"{chains} chain(s) < {min_chains}: R-hat cannot detect chains stuck in different modes")
    rhat = max(diagnostics["r_hat"])
    if not rhat <= max_rhat:  # also catches NaN
        reasons.append(f"R-hat {format_against(rhat, max_rhat)} > {max_rhat:g}")
    for key, name in (("ess_bulk", "min_ess_bulk"), ("ess_tail", "min_ess_tail")):
        ess = min(diagnostics[key])
        if not ess >= thresholds[name]:
            reasons.append(f"{key.replace('_', ' ')} {format_against(ess, thresholds[name])} < {thresholds[name]:g}")
    if diagnostics["divergences"] > max_divergences:
        reasons.append(f"{diagnostics['divergences']} divergent transition(s) > {max_divergences}")
    return not reasons, reasons, thresholds


def nuts_posterior(
    source,
    x: torch.Tensor,
    *,
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    seed: int = 0,
    initial_points: torch.Tensor | None = None,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    jit_compile: bool = False,
    max_rhat: float = 1.01,
    min_ess_bulk: float | None = None,
    min_ess_tail: float | None = None,
    max_divergences: int = 0,
    min_chains: int = 4,
) -> NUTSResult:
    """Draw from ``p(z | x)`` for one observation by NUTS, and judge the draws.

    Parameters
    ----------
    source : Dataset, VAEModel, Pyro model or target
        The ground truth of a data set, an unbatched learned model, or any Pyro model
        ``model(x)`` with one latent site and the site it observes (see
        :func:`pyro_vae.posterior.target.posterior_target`): the potential is the negative
        log joint of the model conditioned on ``x``, through Pyro traces.
    x : Tensor (D,) or (1, D)
        One observation.
    num_chains, num_warmup, num_samples : int
        Chains (run one after another) and per-chain warmup (step size and diagonal mass
        matrix adaptation) and kept draws.
    seed : int
        Seeds every chain (independent streams from ``numpy.random.SeedSequence(seed)``)
        and the Sobol starting points.
    initial_points : Tensor (num_chains, K), optional
        Starting points in z-space; default :func:`dispersed_initial_points`.
    target_accept_prob, max_tree_depth, jit_compile :
        Passed to :class:`pyro.infer.NUTS`.
    max_rhat, min_ess_bulk, min_ess_tail, max_divergences, min_chains :
        Thresholds of :func:`check_diagnostics` (ESS defaults: 100 per chain).

    Returns
    -------
    NUTSResult

    References
    ----------
    Hoffman & Gelman (2014), the No-U-Turn Sampler; Vehtari et al. (2021) for R-hat and ESS;
    004 Figure 10c for the posteriors of the Figure-8 example that NUTS is checked against.
    """
    x = torch.as_tensor(x)
    if x.dim() == 2 and x.shape[0] == 1:
        x = x[0]
    target = posterior_target(source, obs_dim=x.shape[-1] if x.dim() >= 1 else None)
    d, k = target.obs_dim, target.latent_dim
    if x.dim() != 1 or x.shape[0] != d:
        raise ValueError(f"x of shape {tuple(x.shape)}: expected one observation of shape ({d},)")
    x = checks.data_tensor("x", x.reshape(1, d), dtype=torch.float64)[0]
    for name, value in (("num_chains", num_chains), ("num_samples", num_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: expected a positive integer")
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, int) or num_warmup < 0:
        raise ValueError(f"num_warmup={num_warmup!r}: expected a non-negative integer")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected a non-negative integer")
    if initial_points is None:
        initial_points = target.initial_points(_dispersed_quantiles(num_chains, k, seed))
    initial_points = torch.as_tensor(initial_points, dtype=torch.float64)
    if initial_points.shape != (num_chains, k):
        raise ValueError(f"initial_points of shape {tuple(initial_points.shape)}: expected ({num_chains}, {k})")
    if not bool(torch.isfinite(target.log_prior(initial_points)).all()):
        raise ValueError("initial_points: every point must lie in the prior's support")

    start_time, start = utc_now(), time.perf_counter()
    x = x.detach().to(torch.float64)
    potential = _potential(target, x)
    seeds = _chain_seeds(seed, num_chains)
    draws, diverging, acceptance = [], [], []
    for chain, chain_seed in enumerate(seeds):
        u0 = target.transform.inv(initial_points[chain].to(x.device))
        kernel = NUTS(
            potential_fn=potential, target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth,
            jit_compile=jit_compile, ignore_jit_warnings=True,
        )
        mcmc = MCMC(
            kernel, num_samples=num_samples, warmup_steps=num_warmup, num_chains=1,
            initial_params={"u": u0}, disable_progbar=True, transforms={},
        )
        pyro.set_rng_seed(chain_seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pyro's notes on jit and CPU count
            mcmc.run()
        u = mcmc.get_samples()["u"].detach().to(device="cpu", dtype=torch.float64).reshape(num_samples, k)
        with torch.no_grad():
            draws.append(target.transform(u).to(torch.float64))
        diag = mcmc.diagnostics()
        flags = np.zeros(num_samples, dtype=bool)
        flags[np.asarray(diag["divergences"]["chain 0"], dtype=int)] = True
        diverging.append(flags)
        acceptance.append(float(diag["acceptance rate"]["chain 0"]))
    samples = torch.stack(draws)  # (C, S, K)
    seconds = time.perf_counter() - start

    az = _arviz()
    name = getattr(target, "latent", "z")  # the model's latent site
    idata = az.from_dict(
        posterior={name: samples.numpy()},
        sample_stats={"diverging": np.stack(diverging)},
        observed_data={"x": x.cpu().numpy()},
        dims={name: [f"{name}_dim"], "x": ["x_dim"]},
    )
    diagnostics = {
        "r_hat": _per_dim(az.rhat(idata, var_names=[name]), k, name),
        "ess_bulk": _per_dim(az.ess(idata, var_names=[name], method="bulk"), k, name),
        "ess_tail": _per_dim(az.ess(idata, var_names=[name], method="tail"), k, name),
        "mcse_mean": _per_dim(az.mcse(idata, var_names=[name], method="mean"), k, name),
        "mcse_sd": _per_dim(az.mcse(idata, var_names=[name], method="sd"), k, name),
        "divergences": int(np.stack(diverging).sum()),
        "acceptance_rate": acceptance,
        "num_chains": num_chains,
        "num_samples": num_samples,
        "seconds": seconds,
    }
    ok, reasons, thresholds = check_diagnostics(
        diagnostics, max_rhat=max_rhat, min_ess_bulk=min_ess_bulk, min_ess_tail=min_ess_tail,
        max_divergences=max_divergences, min_chains=min_chains,
    )
    diagnostics["thresholds"] = thresholds
    provenance = provenance_record(
        seed=seed,
        device=str(x.device),
        start_time=start_time,
        method="NUTS",
        target=target.name,
        prior=target.prior,
        x=x.cpu().tolist(),
        arguments={
            "num_chains": num_chains, "num_warmup": num_warmup, "num_samples": num_samples,
            "target_accept_prob": target_accept_prob, "max_tree_depth": max_tree_depth,
            "jit_compile": jit_compile, "adapt_step_size": True, "adapt_mass_matrix": "diagonal",
        },
        chains={"seeds": seeds, "initial_points": initial_points.tolist(), "run": "sequential"},
        diagnostics={key: value for key, value in diagnostics.items()},
        ok=ok,
        reasons=reasons,
    )
    provenance["versions"]["arviz"] = az.__version__
    provenance["end_time"] = utc_now()
    idata.posterior.attrs["provenance"] = json.dumps(provenance)
    return NUTSResult(samples, idata, ok, reasons, diagnostics, provenance)


def _per_dim(dataset, k: int, name: str = "z") -> list[float]:
    return [float(v) for v in np.asarray(dataset[name].values, dtype=float).reshape(k)]


def nuts_posteriors(source, x: torch.Tensor, *, seed: int = 0, **kwargs) -> list[NUTSResult]:
    """:func:`nuts_posterior` for each row of ``x`` (N, D), independent chains per row.

    Row ``n`` is seeded with ``seed + n``. Keyword arguments are passed on.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x of shape {getattr(x, 'shape', None)}: expected (N, D)")
    return [nuts_posterior(source, row, seed=seed + n, **kwargs) for n, row in enumerate(x)]
