"""Train a model on a benchmark and evaluate it: the testable body of ``pyro-vae train``.

``train_and_evaluate(config, runs_dir)`` validates the config, draws the data version,
builds the model and guide (restart-batched), trains them, selects the best restart by the
validation objective (004 Appendix D), evaluates it on the test split and records everything
in the run store. ``evaluate_run(run_dir)`` recomputes the metrics of a finished run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from guides.registry import build_guide, canonical_spec, resolve_guide
from pyro_vae.datasets import Dataset, get_dataset
from pyro_vae.inference import resolve_device, validation_objective
from pyro_vae.inference.methods import METHODS, resolve_options
from pyro_vae.metrics import (
    importance_log_likelihood,
    optimal_noise_var,
    mutual_info_encoder,
    smooth_knn_test,
    true_log_likelihood,
)
from pyro_vae.metrics.decomposition import decompose_elbo
from pyro_vae.models import VAEModel, build_vae_model
from pyro_vae.rng import isolated_rng
from pyro_vae import checks
from pyro_vae.runs import RunStore, evaluable_config, load_run, update_metrics
from pyro_vae.runs.artefacts import ArtefactStore
from pyro_vae.run_steps import fit_or_fail, load_params_state, select_evaluate_record
from pyro_vae.truth_init import initialise_at_truth, true_test_log_lik

INITS = ("random", "gt", "mixed")
TEST_IWAE_PARTICLES = 20  # the S of 004's IWAE rows (Table 1 "Test −ELBO" of IWAE is its IWAE-20 bound)
KNN_REPEATS = 1000  # smooth kNN repeats (batched, seconds): SE over repeats ≈ 0.03–0.05 instead of ≈ 0.3 at 20
NOISES = ("fixed", "learned", "posthoc")
DECODERS = ("auto", "mlp", "family")


@dataclass
class RunConfig:
    """Everything a training run depends on; stored as the run's ``config.json``."""

    dataset: str
    method: str = "vae"
    dataset_params: dict = field(default_factory=dict)
    data_seed: int = 0
    particles: int = 20
    beta: float = 1.0
    anneal_epochs: int = 0
    epochs: int = 100
    batch_size: int = 100
    lr: float = 1e-3
    restarts: int = 1
    seed: int = 0
    device: str = "cpu"
    hidden: tuple[int, ...] = (50, 50, 50)
    decoder: str = "auto"  # the data set's parametric family when it has one (000 App. E), else the MLP
    noise: str = "fixed"
    eval_samples: int = 5000
    init: str = "random"  # "gt": every restart at the truth; "mixed": the first half at the truth (004 App. D)
    gt_fit_steps: int = 20000  # most supervised steps when fitting the decoder to the true f (--init gt)
    latent_dim: int | None = None  # K of the trained model; None = the data set's (004 §8 varies it)
    guide: str = "mean_field"
    options: dict = field(default_factory=dict)  # the method's own options (see inference.methods)
    val_every: int = 1  # validation cadence in epochs; the last epoch always validates and selects

    def validate(self) -> Dataset:
        """Check every field (raising ``ValueError`` naming it) and return the data set."""
        resolve_options(self.method, self.options)
        resolve_guide(self.guide)  # a name, an entry point or 'package.module:Factory' (guides/registry.py)
        if self.latent_dim is not None and (not isinstance(self.latent_dim, int) or self.latent_dim < 1):
            raise ValueError(f"latent_dim={self.latent_dim!r}: expected a positive integer or None")
        for name in ("particles", "epochs", "batch_size", "restarts", "eval_samples", "gt_fit_steps", "val_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if not isinstance(self.anneal_epochs, int) or self.anneal_epochs < 0:
            raise ValueError(f"anneal_epochs={self.anneal_epochs!r}: expected a non-negative integer")
        for name in ("lr", "beta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r}: expected a positive number")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder={self.decoder!r}: expected one of {DECODERS}")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r}: expected one of {INITS}")
        if self.noise not in NOISES:
            raise ValueError(f"noise={self.noise!r}: expected one of {NOISES}")
        if self.init != "random" and self.guide != "mean_field":
            raise ValueError(f"init={self.init!r} copies the mean-field φ_GT into the restarts; guide={self.guide!r} "
                             "needs init='random'")
        if self.noise == "posthoc" and self.guide != "mean_field":
            raise ValueError(f"noise='posthoc' needs the Gaussian guide for Eq. 9's expectation; guide={self.guide!r}")
        if any(not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValueError(f"hidden={self.hidden!r}: expected positive integers")
        resolve_device(self.device)
        dataset = get_dataset(self.dataset, **self.dataset_params)
        if getattr(dataset, "label_kind", None):
            raise ValueError(f"dataset={self.dataset!r} is semi-supervised: the M2 model trains it, not {self.method!r}")
        if self.decoder == "family" and dataset.decoder_family() is None:
            raise ValueError(f"decoder='family': data set {self.dataset!r} has no parametric family; use 'mlp'")
        if self.latent_dim not in (None, dataset.latent_dim):
            if self.decoder == "family":
                raise ValueError(f"latent_dim={self.latent_dim}: the parametric family of {self.dataset!r} has K={dataset.latent_dim}")
            if self.init != "random":
                raise ValueError(f"init={self.init!r}: the truth has K={dataset.latent_dim}, not latent_dim={self.latent_dim}")
        train_size = dataset.sizes[0]
        if self.batch_size > train_size:
            raise ValueError(f"batch_size={self.batch_size}: larger than the {train_size} training points of {self.dataset!r}")
        return dataset

    def model_latent_dim(self, dataset: Dataset) -> int:
        return dataset.latent_dim if self.latent_dim is None else self.latent_dim

    def uses_family(self, dataset: Dataset) -> bool:
        return self.decoder == "family" or (
            self.decoder == "auto" and self.latent_dim in (None, dataset.latent_dim) and dataset.decoder_family() is not None
        )

    def resolved(self) -> RunConfig:
        """A copy with the method's options completed by their defaults (what the run store hashes)."""
        return dataclasses.replace(
            self, options=resolve_options(self.method, self.options), hidden=tuple(self.hidden),
            guide=canonical_spec(self.guide),
        )

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config key {unknown[0]!r} is unknown; expected some of {sorted(known)}")
        data = dict(data)
        if "hidden" in data:
            data["hidden"] = tuple(data["hidden"])
        return cls(**data)


def build_model_and_guide(config: RunConfig, dataset: Dataset, num_restarts: int | None) -> tuple[VAEModel, Any]:
    """The model (MLP or the data set's parametric family) and the guide ``config.guide`` names."""
    k = config.model_latent_dim(dataset)
    decoder = dataset.decoder_family(num_restarts) if config.uses_family(dataset) else None
    model = build_vae_model(
        k,
        dataset.obs_dim,
        dataset.obs_noise_var(),
        hidden=config.hidden,
        decoder=decoder,
        noise="learned" if config.noise == "learned" else "fixed",
        num_restarts=num_restarts,
    )
    guide = build_guide(config.guide, dataset.obs_dim, k, hidden=config.hidden, num_restarts=num_restarts)
    return model, guide


def set_posthoc_noise(model: VAEModel, guide, x: torch.Tensor, seed: int = 0) -> list[float]:
    """Replace a fixed σ² by the one that maximises the ELBO for the trained θ, φ (Eq. 9 of 004)."""
    q = guide.distribution(x)
    sigma2 = optimal_noise_var(x, model.decoder, q.loc, q.scale, seed=seed)
    with torch.no_grad():
        model.log_noise_var.copy_(sigma2.reshape(model.log_noise_var.shape).log())
    return [float(v) for v in sigma2.reshape(-1)]


def evaluate_model(
    model: VAEModel, guide, dataset: Dataset, x_test: torch.Tensor, *, eval_samples: int = 5000, seed: int = 0,
    true_log_lik: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Test metrics of one (unbatched) model and guide.

    ``test_loglik`` (importance sampling, Eq. 48 of 000) with its SE over test points, Monte
    Carlo SE and ESS; ``test_loglik_exact`` by quadrature when K ≤ 2 (else None), with the largest change
    of any point at its grid's last refinement (``test_loglik_exact_change``, the size of its last correction);
    ``true_loglik`` under the ground-truth process; ``test_elbo`` and ``test_iwae`` (S = 20) per point; the split
    −ELBO = entropy + MLEO + PMO (``elbo``, ``mleo``, ``pmo``; Eq. 2 of 000); the smooth k-NN
    statistic between samples of p_θ(x) and the test set (``KNN_REPEATS`` draws of 100 vs 100,
    004 App. D, fresh model samples each; lower is better) with the SE of its mean over the
    repeats; and I_q(x; z_i) per latent dimension (nats, 004 Table 1) and I_q(x; z), from q's own
    density unless q is a diagonal Normal (``mutual_info_method`` says which).
    ``true_log_lik`` (per test point) skips recomputing the truth's log-likelihood.
    """
    est = importance_log_likelihood(model, guide, x_test, num_samples=eval_samples, seed=seed)
    if not getattr(dataset, "has_truth", True):  # the user's own data (datasets.user): no p_data
        return evaluate_without_truth(model, guide, x_test, est, seed=seed)
    truth = true_log_likelihood(dataset, x_test) if true_log_lik is None else true_log_lik.to(x_test.device)
    parts = decompose_elbo(model, guide, x_test, dataset, num_samples=eval_samples, seed=seed, true_log_lik=truth,
                           importance=est)
    exact = parts.model_log_lik if parts.model_log_lik_method != "importance" else None
    elbo, iwae = test_bounds(model, guide, x_test, seed)
    n = x_test.shape[0]
    truth = truth.double()
    draw = min(100, n)
    generated = sample_model(model, draw * KNN_REPEATS, seed=seed)  # fresh model draws for every repeat
    knn = smooth_knn_test(generated, x_test, n=draw, repeats=KNN_REPEATS, seed=seed)
    mi = mutual_info_encoder(guide, x_test, seed=seed)  # q's own density unless q is a diagonal Normal
    return {
        "smooth_knn": float(knn.mean),
        "smooth_knn_se": float(knn.se),
        "smooth_knn_repeats": KNN_REPEATS,
        "mutual_info_per_dim": None if mi.per_dim is None else [float(v) for v in mi.per_dim],
        "mutual_info_avg": mi.avg,  # avg_i I(x; z_i), 004 Table 1
        "mutual_info_joint": float(mi.joint),
        "mutual_info_method": mi.method,
        "test_loglik": est.mean,
        "test_loglik_se": est.se,
        "test_loglik_mc_se": est.mc_se,
        "test_loglik_ess": est.ess,
        "test_loglik_exact": exact,
        "test_loglik_exact_change": parts.model_log_lik_change if exact is not None else None,
        "test_loglik_proposal": est.proposal,
        "elbo": parts.elbo,
        "mleo": parts.mleo,
        "mleo_se": parts.mleo_se,
        "pmo": parts.pmo,
        "pmo_se": parts.pmo_se,
        "true_loglik": float(truth.mean()),
        "true_loglik_se": float(truth.std() / math.sqrt(n)),
        "test_elbo": elbo,
        "noise_var": [float(v) for v in model.noise_variance().detach().reshape(-1)],
        "noise_var_mean": float(model.noise_variance().detach().mean()),
        "neg_test_elbo": -elbo,
        "test_iwae": iwae,
        "neg_test_iwae": -iwae,
    }


def test_bounds(model: VAEModel, guide, x_test: torch.Tensor, seed: int = 0) -> tuple[float, float]:
    """The test ELBO and IWAE bound (S = ``TEST_IWAE_PARTICLES``) per point, on their own seeded RNG.

    004 Table 1 reports a "Test −ELBO" for its IWAE rows below the VAE's, i.e. the IWAE bound the
    model was trained with (S = 20), not the ELBO of the IWAE-trained q; both are recorded.
    """
    with isolated_rng(x_test.device, seed):
        elbo = validation_objective(model, guide, x_test, "elbo")
    with isolated_rng(x_test.device, seed):
        iwae = validation_objective(model, guide, x_test, "iwae", num_particles=TEST_IWAE_PARTICLES)
    return float(elbo[0]), float(iwae[0])


def evaluate_without_truth(model: VAEModel, guide, x_test: torch.Tensor, est, *, seed: int = 0) -> dict[str, Any]:
    """:func:`evaluate_model`'s metrics that need no true process (data from a file).

    ``est`` is the importance-sampled log-likelihood already computed; the quadrature value
    (K ≤ 2) stands in for the decomposition's exact one. MLEO, PMO and the true log-likelihood
    are absent.
    """
    from pyro_vae.metrics.loglik import exact_log_likelihood

    with torch.no_grad():
        exact = exact_log_likelihood(model.decoder, model.noise_variance().reshape(-1), x_test, model.latent_dim)
    elbo, iwae = test_bounds(model, guide, x_test, seed)
    n = x_test.shape[0]
    knn = smooth_knn_test(sample_model(model, n, seed=seed), x_test, n=min(100, n), repeats=20, seed=seed)
    mi = mutual_info_encoder(guide, x_test, seed=seed)  # q's own density unless q is a diagonal Normal
    return {
        "smooth_knn": float(knn.mean), "smooth_knn_se": float(knn.se),
        "mutual_info_per_dim": None if mi.per_dim is None else [float(v) for v in mi.per_dim],
        "mutual_info_avg": mi.avg, "mutual_info_joint": float(mi.joint), "mutual_info_method": mi.method,
        "test_loglik": est.mean, "test_loglik_se": est.se, "test_loglik_mc_se": est.mc_se, "test_loglik_ess": est.ess,
        "test_loglik_exact": None if exact is None else float(exact.mean()),
        "test_elbo": elbo, "neg_test_elbo": -elbo, "test_iwae": iwae, "neg_test_iwae": -iwae,
        "noise_var": [float(v) for v in model.noise_variance().detach().reshape(-1)],
        "noise_var_mean": float(model.noise_variance().detach().mean()),
    }


def sample_model(model: VAEModel, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` draws of x from an unbatched model's p_θ(x): z ~ N(0, I), x = f_θ(z) + ε."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.latent_dim, generator=gen).to(device)
    eps = torch.randn(n, model.obs_dim, generator=gen).to(device)
    with torch.no_grad():
        loc = model.decoder(z).reshape(n, model.obs_dim)
        return loc + eps * model.noise_variance().reshape(-1).sqrt()


class PreparedRun(NamedTuple):
    """A run ready to train: its resolved config, data, restart-batched model and guide."""

    config: RunConfig
    dataset: Dataset
    splits: Any
    model: VAEModel
    guide: Any
    init_info: dict


def prepare_run(config: RunConfig, artefacts: ArtefactStore | None = None) -> PreparedRun:
    """Validate, draw the data version, build the model and guide (seeded), initialise at the truth."""
    dataset = config.validate()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    splits = dataset.splits(config.data_seed, device=device)
    model, guide = build_model_and_guide(config, dataset, config.restarts)
    model.to(device), guide.to(device)
    config = config.resolved()
    init_info: dict = {}
    if config.init != "random":
        init_info = initialise_at_truth(model, guide, config, dataset, splits.train.x.cpu(), splits.val.x.cpu(), artefacts)
    return PreparedRun(config, dataset, splits, model, guide, init_info)


def finish_run(run, prepared: PreparedRun, model, guide, result, artefacts: ArtefactStore | None = None,
               extra: dict | None = None) -> dict:
    """Select the best restart, evaluate it on the test split and record the run as finished."""
    config, dataset, splits = prepared.config, prepared.dataset, prepared.splits
    init_info = dict(prepared.init_info)
    truth, refs = true_test_log_lik(config, dataset, splits.test.x, artefacts)
    used = init_info.pop("artefacts", []) + refs

    def evaluate(best_model, best_guide) -> dict:
        if config.noise == "posthoc":
            init_info["posthoc_noise_var"] = set_posthoc_noise(best_model, best_guide, splits.train.x, config.seed)
        metrics = evaluate_model(best_model, best_guide, dataset, splits.test.x, eval_samples=config.eval_samples,
                                 seed=config.seed, true_log_lik=truth)
        return {**metrics, **init_info}

    metrics = select_evaluate_record(run, model, guide, result, evaluate, **(extra or {}),
                                     **({"artefacts": used} if used else {}))
    return metrics


def train_and_evaluate(config: RunConfig, runs_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Train, select the best restart, evaluate and record a run; returns the JSON summary.

    Raises ``ValueError`` for a bad config before anything is written; a training failure
    (e.g. NaN) marks the run failed and re-raises. The GT initialisation and the true test
    log-likelihood are shared artefacts of ``runs_dir`` (built once per key).
    """
    checks.check_run(config, config.validate(), runs_dir)
    store = RunStore(runs_dir)
    artefacts = ArtefactStore(runs_dir)
    resolved = config.resolved()
    with store.start(resolved.to_dict()) as run:
        run.write_config({**resolved.to_dict(), "resolved_device": str(resolve_device(config.device))})
        prepared = prepare_run(config, artefacts)
        method = METHODS[prepared.config.method]
        result = fit_or_fail(run, lambda: method.fit(prepared.model, prepared.guide, prepared.splits.train.x,
                                                     prepared.splits.val.x, prepared.config, progress))
        metrics = finish_run(run, prepared, prepared.model, prepared.guide, result, artefacts)
    return {"run_dir": str(run.run_dir), "run_id": run.run_id, "best_restart": result.best_restart, "metrics": metrics}


def load_trained(run_dir: str | Path, device: str = "cpu") -> tuple[RunConfig, Dataset, VAEModel, Any, dict]:
    """Rebuild the selected restart's model and guide of a finished run."""
    loaded = load_run(run_dir)
    config = evaluable_config(loaded, RunConfig)  # also a run killed after saving params.pt
    config.device = device
    dataset = config.validate()
    model, guide = build_model_and_guide(config, dataset, None)
    load_params_state(model, guide, loaded.params)
    dev = resolve_device(device)
    return config, dataset, model.to(dev), guide.to(dev), loaded.metrics or {}


def evaluate_run(run_dir: str | Path, *, device: str = "cpu", eval_samples: int | None = None) -> dict[str, Any]:
    """Recompute a finished run's test metrics and store them; returns the JSON summary."""
    config, dataset, model, guide, old = load_trained(run_dir, device)
    splits = dataset.splits(config.data_seed, device=resolve_device(device))
    metrics = evaluate_model(model, guide, dataset, splits.test.x, eval_samples=eval_samples or config.eval_samples, seed=config.seed)
    merged = update_metrics(run_dir, metrics, rebuild=True)
    return {"run_dir": str(run_dir), "best_restart": merged.get("best_restart", old.get("best_restart")), "metrics": merged}
