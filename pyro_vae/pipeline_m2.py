"""Train a semi-supervised M2 model and evaluate it: the testable body of ``pyro-vae train-m2``.

``train_and_evaluate_m2(config, runs_dir)`` validates the config, loads the data (a semi-circle
data version, or a UCI split), builds the restart-batched M2 model and guide, trains them
(:func:`pyro_vae.inference.m2.train_m2`, or with ``lagging=True`` the Lagging Inference
Networks variant :func:`pyro_vae.inference.m2_lagging.train_m2_lagging`), keeps the restart with the best validation objective
(004 App. D), evaluates it on the test split and records the run in the run store.

Metrics (004 Section 7, App. E.3, Tables 3–6):

* ``smooth_knn``: smooth k-NN statistic between samples of the learned ``p_θ(x)`` and the test
  set (lower is better): the mean over 1 000 repeats of 100 vs 100, with its SE and repeats;
* ``cohorts``: the same per cohort, learned ``p_θ(x | y)`` against the truth's ``p(x | y)``:
  y = 0 / 1 (discrete semi-circle, drawn from the true process), y = ±3.5 (continuous
  semi-circle), every class (UCI: the test rows of that class);
* ``classifier_accuracy`` of ``argmax q_φ(y | x)`` on every test label (discrete; with the
  majority-class rate beside it) or ``classifier_rmse`` of its mean (continuous), and the mean
  ``log q_φ(y | x)``;
* ``counterfactuals``: for the first labelled test points, ``x' = f_θ(ẑ, y')`` with ``ẑ`` the
  mean of ``q_φ(z | x, y)`` and the label flipped (``y' = 1 − y``; ``(y + 1) mod C`` for C > 2;
  ``−y`` for a continuous label), beside the true ``f(z, y')`` where the truth is known, and
  their RMSE over all labelled test points;
* functional collapse: ``function_gap`` = mean over ``z ~ N(0, I)`` of ``‖f(z, a) − f(z, b)‖``
  for the cohort pair(s), learned and true, with their ratio (≈ 0 when ``f_θ(z, 0) ≈
  f_θ(z, 1)``), and ``cohort_separation`` = smooth k-NN between the two cohorts' samples,
  learned and true (≈ 0 when ``p_θ(x | y = 0) ≈ p_θ(x | y = 1)``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from guides.m2 import PAPER_TEMPERATURE, build_m2_guide
from pyro_vae.datasets import Dataset, get_dataset
from pyro_vae.datasets.uci import NUM_SPLITS, UCI_FILES
from pyro_vae.inference import resolve_device
from pyro_vae.inference.m2 import KINDS, check_weights, m2_terms, train_m2, validation_objective_m2
from pyro_vae.inference.m2_lagging import train_m2_lagging
from pyro_vae.metrics import smooth_knn_test
from pyro_vae.pipeline import KNN_REPEATS
from pyro_vae.models_m2 import M2Model, build_m2_model
from pyro_vae.run_steps import fit_or_fail, load_params_state, select_evaluate_record
from pyro_vae import checks
from pyro_vae.runs import RunStore, evaluable_config, load_run

GUIDES = ("auto", "enum", "relaxed", "gaussian")
CONTINUOUS_COHORTS = (-3.5, 3.5)  # 004 Table 4


@dataclass
class M2Config:
    """Everything an M2 run depends on; stored as the run's ``config.json``.

    ``hidden=None`` means 3 × 50 units on the semi-circles and 3 × 100 on the UCI sets
    (004 App. D); ``latent_dim`` and ``noise_var`` default to the data set's. ``data_seed`` is
    the synthetic data version; ``split`` picks one of the five UCI splits. ``z_given_y``
    chooses ``q(z | x, y)`` (Kingma et al. 2014) or the factorised ``q(z | x)`` that Eqs. 13 and
    15 of 004 write for U. The discrete label's prior is uniform on the semi-circle (the truth's)
    and the visible training labels' frequencies on a UCI set.
    """

    dataset: str
    guide: str = "auto"  # enum or relaxed (discrete labels), gaussian (continuous); auto picks enum / gaussian
    objective: str = "elbo"
    alpha: float = 0.1
    gamma: float = 1.0
    labelled_fraction: float = 0.1
    particles: int = 20
    temperature: float = PAPER_TEMPERATURE
    straight_through: bool = False
    z_given_y: bool = True  # False: q(y|x) q(z|x), the fully factorised family of Eqs. 13 and 15 of 004
    epochs: int = 100
    batch_size: int = 100
    lr: float = 1e-3
    restarts: int = 1
    seed: int = 0
    data_seed: int = 0
    split: int = 0
    device: str = "cpu"
    hidden: tuple[int, ...] | None = None
    latent_dim: int | None = None
    noise_var: float | None = None
    eval_samples: int = 2000
    counterfactuals: int = 5
    data_dir: str | None = None
    method: str = "m2"
    lagging: bool = False  # Lagging Inference Networks (004 Tables 3-4, LIN): aggressive guide training
    lin_threshold: float = 0.1  # T of 004 App. D: the inner loop's convergence threshold, nats per point
    lin_window: int = 5  # R of 004 App. D: steps averaged before comparing with lin_threshold

    # ------------------------------------------------------------------ checks
    def validate(self) -> Dataset:
        """Check every field (``ValueError`` naming it) and return the data set (nothing is read)."""
        if self.method != "m2":
            raise ValueError(f"method={self.method!r}: an M2Config trains 'm2'")
        if self.guide not in GUIDES:
            raise ValueError(f"guide={self.guide!r}: expected one of {GUIDES}")
        if self.objective not in KINDS:
            raise ValueError(f"objective={self.objective!r}: expected one of {KINDS}")
        check_weights(self.alpha, self.gamma)
        if not (_is_number(self.labelled_fraction) and 0 <= self.labelled_fraction <= 1):
            raise ValueError(f"labelled_fraction={self.labelled_fraction!r}: expected a number in [0, 1]")
        if not (_is_number(self.temperature) and 0 < self.temperature < math.inf):
            raise ValueError(f"temperature={self.temperature!r}: expected a positive number")
        if not (_is_number(self.lr) and 0 < self.lr < math.inf):
            raise ValueError(f"lr={self.lr!r}: expected a positive number")
        for name in ("particles", "epochs", "batch_size", "restarts", "eval_samples"):
            _check_int(name, getattr(self, name), 1)
        for name in ("seed", "data_seed", "split", "counterfactuals"):
            _check_int(name, getattr(self, name), 0)
        if self.eval_samples < 2:
            raise ValueError(f"eval_samples={self.eval_samples!r}: expected at least 2")
        if self.hidden is not None and (len(self.hidden) == 0 or any(not _is_int(h) or h < 1 for h in self.hidden)):
            raise ValueError(f"hidden={self.hidden!r}: expected positive integers")
        if self.latent_dim is not None:
            _check_int("latent_dim", self.latent_dim, 1)
        if self.noise_var is not None and not (_is_number(self.noise_var) and 0 < self.noise_var < math.inf):
            raise ValueError(f"noise_var={self.noise_var!r}: expected a positive number")
        checks.nonneg_number("lin_threshold", self.lin_threshold)
        _check_int("lin_window", self.lin_window, 1)
        for name in ("straight_through", "z_given_y", "lagging"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r}: expected True or False")
        resolve_device(self.device)
        uci = _is_uci(self.dataset)
        params: dict[str, Any] = {"labelled_fraction": self.labelled_fraction}
        if uci and self.data_dir is not None:
            params["data_dir"] = str(self.data_dir)
        kind = getattr(get_dataset(self.dataset), "label_kind", "")
        if not kind:
            raise ValueError(f"dataset={self.dataset!r} has no labels; the M2 model needs a semi-supervised set "
                             "(discrete_semicircle, continuous_semicircle, diabetic_retinopathy, contraceptive, titanic)")
        dataset = get_dataset(self.dataset, **params)
        guide = self.resolved_guide(dataset)
        if kind == "continuous" and guide != "gaussian":
            raise ValueError(f"guide={self.guide!r}: {self.dataset!r} has a continuous label; expected 'gaussian' or 'auto'")
        if kind == "discrete" and guide == "gaussian":
            raise ValueError(f"guide='gaussian': {self.dataset!r} has a discrete label; expected 'enum', 'relaxed' or 'auto'")
        if self.straight_through and guide != "relaxed":
            raise ValueError(f"straight_through=True: only the relaxed guide draws straight-through, not {guide!r}")
        if uci:
            if self.split >= NUM_SPLITS:
                raise ValueError(f"split={self.split}: expected 0..{NUM_SPLITS - 1} (004 App. D's five splits)")
            if self.data_seed != 0:
                raise ValueError(f"data_seed={self.data_seed}: {self.dataset!r} is real data; choose a split with split")
        else:
            if self.split != 0:
                raise ValueError(f"split={self.split}: splits are for the UCI sets; use data_seed for {self.dataset!r}")
            if self.data_dir is not None:
                raise ValueError(f"data_dir={self.data_dir!r}: only the UCI sets are read from files")
        if self.batch_size > dataset.sizes[0]:
            raise ValueError(f"batch_size={self.batch_size}: larger than the {dataset.sizes[0]} training points "
                             f"of {self.dataset!r}")
        return dataset

    def resolved_guide(self, dataset: Dataset) -> str:
        if self.guide != "auto":
            return self.guide
        return "gaussian" if dataset.label_kind == "continuous" else "enum"

    def model_hidden(self) -> tuple[int, ...]:
        if self.hidden is not None:
            return tuple(self.hidden)
        return (100, 100, 100) if _is_uci(self.dataset) else (50, 50, 50)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["hidden"] = None if self.hidden is None else list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> M2Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config key {unknown[0]!r} is unknown; expected some of {sorted(known)}")
        data = dict(data)
        if data.get("hidden") is not None:
            data["hidden"] = tuple(data["hidden"])
        return cls(**data)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(name: str, value, low: int) -> None:
    if not _is_int(value) or value < low:
        raise ValueError(f"{name}={value!r}: expected an integer >= {low}")


def _is_uci(name: str) -> bool:
    return name in UCI_FILES


# --------------------------------------------------------------------------- building
def load_splits(config: M2Config, dataset: Dataset, device: torch.device):
    """The data version (semi-circles) or the UCI split the config names."""
    seed = config.split if _is_uci(config.dataset) else config.data_seed
    return dataset.splits(seed, device=device)


def label_prior(dataset: Dataset, train) -> list[float] | None:
    """``p(y)``: the truth's uniform prior on the semi-circle, else the visible training labels'
    class frequencies (add-one smoothed); None for a continuous label."""
    if dataset.label_kind != "discrete":
        return None
    if not _is_uci(dataset.name):
        return [1.0 / dataset.label_dim] * dataset.label_dim
    counts = train.y[train.labelled].sum(0).double().cpu() + 1.0
    return (counts / counts.sum()).tolist()


def build_m2(config: M2Config, dataset: Dataset, probs: list[float] | None, num_restarts: int | None):
    """The M2 model and the configured guide (restart-batched with ``num_restarts``)."""
    k = config.latent_dim or dataset.latent_dim
    noise = config.noise_var if config.noise_var is not None else dataset.noise_var
    hidden = config.model_hidden()
    model = build_m2_model(k, dataset.obs_dim, dataset.label_dim, dataset.label_kind, noise, hidden=hidden,
                           label_probs=probs, num_restarts=num_restarts)
    guide = build_m2_guide(config.resolved_guide(dataset), dataset.obs_dim, k, dataset.label_dim, hidden=hidden,
                           temperature=config.temperature, straight_through=config.straight_through,
                           z_given_y=config.z_given_y, num_restarts=num_restarts)
    return model, guide


# --------------------------------------------------------------------------- evaluation
def sample_m2(model: M2Model, n: int, *, y: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """``n`` draws of x from an unbatched model: ``z ~ N(0, I)``, ``y ~ p(y)`` unless a label
    row ``y`` (label_dim,) is given (a cohort), ``x = f_θ(z, y) + ε``."""
    device = model.log_noise_var.device
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.latent_dim, generator=gen)
    if y is None:
        if model.label_kind == "discrete":
            idx = torch.multinomial(model.label_probs().cpu(), n, replacement=True, generator=gen)
            labels = torch.eye(model.label_dim)[idx]
        else:
            labels = torch.randn(n, 1, generator=gen)
    else:
        labels = y.reshape(1, -1).float().cpu().expand(n, -1)
    eps = torch.randn(n, model.obs_dim, generator=gen)
    with torch.no_grad():
        loc = model.f(z.to(device), labels.to(device)).reshape(n, model.obs_dim)
        return (loc + eps.to(device) * model.noise_variance().reshape(-1).sqrt()).cpu()


def _true_samples(dataset: Dataset, n: int, y: torch.Tensor, seed: int) -> torch.Tensor:
    """Draws of the truth's ``p(x | y)`` (semi-circles) for the label row ``y``."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dataset.latent_dim, generator=gen)
    eps = torch.randn(n, dataset.obs_dim, generator=gen)
    with torch.no_grad():
        return dataset.f(z, y.reshape(1, -1).float().expand(n, -1)) + eps * dataset.obs_noise_var().sqrt()


def cohorts(dataset: Dataset) -> list[tuple[str, torch.Tensor]]:
    """(name, label row) of the cohorts compared: each class, or y = ±3.5 for a continuous label."""
    if dataset.label_kind == "continuous":
        return [(f"y={v:g}", torch.tensor([v])) for v in CONTINUOUS_COHORTS]
    eye = torch.eye(dataset.label_dim)
    names = getattr(dataset, "classes", None) or [str(c) for c in range(dataset.label_dim)]
    return [(f"y={c} ({names[c]})" if _is_uci(dataset.name) else f"y={c}", eye[c]) for c in range(dataset.label_dim)]


KNN_DRAW = 100  # points per side of each smooth kNN repeat (004: 100 vs 100)


def _knn(a: torch.Tensor, b: torch.Tensor, seed: int) -> dict[str, float] | None:
    """Smooth kNN over ``KNN_REPEATS`` draws of 100 vs 100 (fewer points when a pool is smaller).

    Model and truth samples are pools of ``KNN_DRAW × KNN_REPEATS`` draws (:func:`_pool_size`),
    so every repeat sees (nearly) fresh draws and the mean's SE, ≈ 0.03, is small beside the
    differences it judges; a test set is a fixed pool, as in the unsupervised evaluation.
    """
    n = min(KNN_DRAW, a.shape[0], b.shape[0])
    if n < 2:
        return None
    res = smooth_knn_test(a.cpu().numpy(), b.cpu().numpy(), n=n, repeats=KNN_REPEATS, seed=seed)
    return {"mean": float(res.mean), "se": float(res.se), "n": n, "repeats": KNN_REPEATS}


def _pool_size(eval_samples: int) -> int:
    """Draws of a model or of the truth for the smooth kNN: enough for fresh draws every repeat."""
    return max(eval_samples, KNN_DRAW * KNN_REPEATS)


def _flip(dataset: Dataset, y: torch.Tensor) -> torch.Tensor:
    if dataset.label_kind == "continuous":
        return -y
    c = dataset.label_dim
    return torch.nn.functional.one_hot((y.argmax(-1) + 1) % c, c).to(y)


def _label_value(dataset: Dataset, y: torch.Tensor):
    return float(y[0]) if dataset.label_kind == "continuous" else int(y.argmax())


def evaluate_m2(model: M2Model, guide, dataset: Dataset, splits, config: M2Config) -> dict[str, Any]:
    """Test metrics of one (unbatched) model and guide; see the module docstring."""
    test = splits.test
    seed, n_eval = config.seed, config.eval_samples
    device = test.x.device
    particles = config.particles if config.objective == "iwae" else 1
    torch.manual_seed(seed)
    import pyro

    pyro.set_rng_seed(seed)
    out: dict[str, Any] = {}
    out["test_objective"] = float(validation_objective_m2(
        model, guide, test, alpha=config.alpha, gamma=config.gamma, kind=config.objective, num_particles=particles)[0])
    with torch.no_grad():
        empty = test.x[:0]
        u = torch.cat([m2_terms(model, guide, chunk, empty, test.y[:0], kind=config.objective,
                                num_particles=particles).unlabelled for chunk in torch.split(test.x, 1000)], -1)
    out["test_log_px_bound"] = float(u.mean())
    synthetic = not _is_uci(dataset.name)

    # p(x) and the cohorts p(x | y)
    pool = _pool_size(n_eval)
    learned_px = sample_m2(model, pool, seed=seed)
    out["smooth_knn"] = _knn(learned_px, test.x, seed)
    groups = cohorts(dataset)
    learned_cohorts, true_cohorts, rows = [], [], []
    for i, (name, label) in enumerate(groups):
        learned = sample_m2(model, pool, y=label, seed=seed + 1 + i)
        if synthetic:
            truth = _true_samples(dataset, pool, label, seed + 101 + i)
        else:
            truth = test.x[test.y.argmax(-1) == int(label.argmax())].cpu()
        learned_cohorts.append(learned)
        true_cohorts.append(truth)
        rows.append({"cohort": name, "smooth_knn": _knn(learned, truth, seed)})
    out["cohorts"] = rows

    # the classifier q(y | x) on every test label
    with torch.no_grad():
        log_q = guide.label_log_prob(test.x, test.y)
        out["classifier_log_q"] = float(log_q.mean())
        q = guide.label_distribution(test.x)
        if dataset.label_kind == "discrete":
            pred = q.probs.argmax(-1)
            truth_idx = test.y.argmax(-1)
            out["classifier_accuracy"] = float((pred == truth_idx).float().mean())
            out["majority_accuracy"] = float(torch.bincount(truth_idx).max() / truth_idx.numel())
        else:
            out["classifier_rmse"] = float(((q.mean - test.y) ** 2).mean().sqrt())

    # counterfactuals x' = f(ẑ, y') for labelled test points
    labelled = test.labelled.nonzero().reshape(-1)
    with torch.no_grad():
        if labelled.numel():
            x_l, y_l = test.x[labelled], test.y[labelled]
            y_flip = _flip(dataset, y_l)
            z_hat = guide.latent_distribution(x_l, y_l).loc
            x_cf = model.f(z_hat, y_flip).reshape(len(labelled), -1)
            x_cf_true = dataset.f(test.z[labelled].cpu(), y_flip.cpu()).to(device) if synthetic else None
            examples = []
            for j in range(min(config.counterfactuals, len(labelled))):
                ex = {"index": int(labelled[j]), "x": x_l[j].tolist(), "y": _label_value(dataset, y_l[j]),
                      "y_flipped": _label_value(dataset, y_flip[j]), "x_counterfactual": x_cf[j].tolist()}
                if x_cf_true is not None:
                    ex["x_counterfactual_true"] = x_cf_true[j].tolist()
                examples.append(ex)
            out["counterfactuals"] = examples
            out["counterfactual_rmse"] = (float(((x_cf - x_cf_true) ** 2).sum(-1).mean().sqrt())
                                          if x_cf_true is not None else None)
        else:
            out["counterfactuals"], out["counterfactual_rmse"] = [], None

    # functional collapse: f(z, a) vs f(z, b) at the same z, and p(x | a) vs p(x | b)
    pairs = list(itertools.combinations(range(len(groups)), 2)) if dataset.label_kind == "discrete" else [(0, 1)]
    gen = torch.Generator().manual_seed(seed + 7)
    z = torch.randn(n_eval, model.latent_dim, generator=gen).to(device)
    z_true = torch.randn(n_eval, dataset.latent_dim, generator=gen) if synthetic else None
    gaps, true_gaps, seps, true_seps = [], [], [], []
    with torch.no_grad():
        for a, b in pairs:
            ya, yb = groups[a][1].to(device).expand(n_eval, -1), groups[b][1].to(device).expand(n_eval, -1)
            gaps.append(float((model.f(z, ya) - model.f(z, yb)).norm(dim=-1).mean()))
            seps.append(_knn(learned_cohorts[a], learned_cohorts[b], seed))
            if synthetic:
                fa = dataset.f(z_true, groups[a][1].expand(n_eval, -1))
                fb = dataset.f(z_true, groups[b][1].expand(n_eval, -1))
                true_gaps.append(float((fa - fb).norm(dim=-1).mean()))
                true_seps.append(_knn(true_cohorts[a], true_cohorts[b], seed))
    out["function_gap"] = float(np.mean(gaps))
    out["function_gap_true"] = float(np.mean(true_gaps)) if synthetic else None
    out["function_gap_ratio"] = out["function_gap"] / out["function_gap_true"] if synthetic else None
    out["cohort_separation"] = _mean_knn(seps)
    out["cohort_separation_true"] = _mean_knn(true_seps) if synthetic else None
    return out


def _mean_knn(rows: list[dict | None]) -> float | None:
    values = [r["mean"] for r in rows if r is not None]
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------- the run
def train_and_evaluate_m2(config: M2Config, runs_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Train, select the best restart, evaluate and record an M2 run; returns the JSON summary.

    Raises ``ValueError`` for a bad config or unavailable data before anything is written; a
    training failure (e.g. NaN) marks the run failed and re-raises.
    """
    dataset = config.validate()
    checks.check_run(config, dataset, runs_dir)
    store = RunStore(runs_dir)
    device = resolve_device(config.device)
    splits = load_splits(config, dataset, device)
    probs = label_prior(dataset, splits.train)
    torch.manual_seed(config.seed)
    model, guide = build_m2(config, dataset, probs, config.restarts)
    model.to(device), guide.to(device)
    particles = config.particles if config.objective == "iwae" else 1
    with store.start(config.to_dict()) as run:
        run.write_config({**config.to_dict(), "resolved_device": str(device),
                          "resolved_guide": config.resolved_guide(dataset), "label_probs": probs,
                          "hidden_resolved": list(config.model_hidden())})
        common = dict(objective=config.objective, alpha=config.alpha, gamma=config.gamma,
                      num_particles=particles, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                      seed=config.seed, progress=progress)
        if config.lagging:
            fit = lambda: train_m2_lagging(model, guide, splits.train, splits.val,  # noqa: E731
                                           threshold=config.lin_threshold, window=config.lin_window, **common)
        else:
            fit = lambda: train_m2(model, guide, splits.train, splits.val, **common)  # noqa: E731
        result = fit_or_fail(run, fit)
        metrics = select_evaluate_record(
            run, model, guide, result, lambda m, g: evaluate_m2(m, g, dataset, splits, config),
            seconds_per_epoch=result.seconds / config.epochs, labelled_train_points=int(splits.train.labelled.sum()),
        )
    return {"run_dir": str(run.run_dir), "run_id": run.run_id, "best_restart": result.best_restart, "metrics": metrics}


def load_trained_m2(run_dir: str | Path, device: str = "cpu") -> tuple[M2Config, Dataset, M2Model, Any, dict]:
    """Rebuild the selected restart's model and guide of a finished M2 run."""
    loaded = load_run(run_dir)
    probs = loaded.config.get("label_probs")
    stored = {k: v for k, v in loaded.config.items() if k not in ("label_probs", "resolved_guide", "hidden_resolved")}
    config = evaluable_config(loaded._replace(config=stored), M2Config)
    config.device = device
    dataset = config.validate()
    model, guide = build_m2(config, dataset, probs, None)
    load_params_state(model, guide, loaded.params)
    dev = resolve_device(device)
    return config, dataset, model.to(dev), guide.to(dev), loaded.metrics or {}
