"""004 §5 ("Effect on downstream tasks"): misestimated p(x) hurts OOD detection and synthetic data.

``python -m pyro_vae.downstream.ood experiments/downstream/ood.toml --runs RUNS --out DIR``
trains (or reuses) an MFG-VAE and an IWAE per data set through the ordinary pipeline, scores
held-out points and points from shifted distributions by ``log p(x)`` — the true model's, and
each learned model's by quadrature (exact, K ≤ 2) and by importance sampling (000 Eq. 48: q with
its variance ×2 as proposal) — and reports the AUROC of each score at telling them apart, with
the smooth k-NN statistic of samples from each model against the test set (synthetic data; the
run's ``smooth_knn``). Writes ``DIR/report.md``, ``DIR/results.json``, ``DIR/scores_NAME.png``
and ``DIR/provenance.json``.

Shifts: ``"off-manifold"`` (the true process with the noise's standard deviation ×3) and
``"uniform box"`` (uniform over the data's bounding box, 10 % wider on each side).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from pyro_vae.downstream.common import finish_provenance, start_experiment, train_or_reuse

__all__ = ["auroc", "shifted", "main"]

SHIFTS = ("off-manifold", "uniform box")


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(score(in) > score(out)) + ½ P(tie): the Mann–Whitney form of the area under the ROC curve."""
    inside, outside = np.asarray(inside, dtype=float), np.asarray(outside, dtype=float)
    ranks = rankdata(np.concatenate([inside, outside]))
    n1, n0 = len(inside), len(outside)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auroc_se(a: float, n1: int, n0: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUROC."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return math.sqrt(max(a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a), 0.0) / (n1 * n0))


def shifted(dataset, kind: str, n: int, x_ref: torch.Tensor, seed: int) -> torch.Tensor:
    """``n`` points of a shifted distribution (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "off-manifold":
        z = torch.randn(n, dataset.latent_dim, generator=gen)
        eps = torch.randn(n, dataset.obs_dim, generator=gen)
        with torch.no_grad():
            return dataset.f(z) + 3.0 * eps * dataset.obs_noise_var().sqrt()
    if kind == "uniform box":
        lo, hi = x_ref.min(0).values, x_ref.max(0).values
        pad = 0.1 * (hi - lo)
        return lo - pad + (hi - lo + 2 * pad) * torch.rand(n, x_ref.shape[1], generator=gen)
    raise ValueError(f"kind={kind!r}: expected one of {SHIFTS}")


def _scores(model, guide, x: torch.Tensor, samples: int, seed: int) -> dict[str, np.ndarray]:
    from pyro_vae.metrics.loglik import exact_log_likelihood, importance_log_likelihood

    out = {"IS": importance_log_likelihood(model, guide, x, num_samples=samples, seed=seed).per_point.numpy()}
    with torch.no_grad():
        exact = exact_log_likelihood(model.decoder, model.noise_variance().reshape(-1), x, model.latent_dim)
    if exact is not None:
        out["exact"] = exact.double().cpu().numpy()
    return out


def run(cfg: dict, runs: Path, out: Path, quick: bool = False) -> dict:
    from pyro_vae.datasets import get_dataset
    from pyro_vae.io import atomic_write_bytes
    from pyro_vae.metrics.loglik import true_log_likelihood
    from pyro_vae.pipeline import load_trained
    from pyro_vae.plots.common import figure_png_bytes
    from pyro_vae.plots.downstream import ood_panel

    q = cfg.get("quick", {}) if quick else {}
    points, samples = int(q.get("points", cfg["points"])), int(q.get("is_samples", cfg["is_samples"]))
    results = {}
    for name in cfg["datasets"]:
        dataset = get_dataset(name)
        x_in = dataset.splits(int(cfg["train"].get("data_seed", 0))).test.x[:points]
        sets = {"held-out": x_in, **{k: shifted(dataset, k, points, x_in, seed=17 + i) for i, k in enumerate(SHIFTS)}}
        scorers: dict[str, dict[str, np.ndarray]] = {"truth": {k: true_log_likelihood(dataset, v).double().numpy()
                                                               for k, v in sets.items()}}
        knn = {}
        for label, method in cfg["methods"].items():
            fields = {**cfg["train"], **q.get("train", {}), **method, "dataset": name}
            run_dir, info = train_or_reuse(fields, runs)
            _, _, model, guide, metrics = load_trained(run_dir)
            per_set = {k: _scores(model, guide, v, samples, seed=int(cfg.get("seed", 0))) for k, v in sets.items()}
            for kind in per_set["held-out"]:
                scorers[f"{label} ({kind})"] = {k: per_set[k][kind] for k in sets}
            knn[label] = {"smooth_knn": metrics.get("smooth_knn"), "smooth_knn_se": metrics.get("smooth_knn_se"),
                          "test_loglik_exact": metrics.get("test_loglik_exact"), "run": Path(info["run_dir"]).name,
                          "reused_run": info["reused_run"]}
        table = {}
        for scorer, s in scorers.items():
            table[scorer] = {}
            for kind in SHIFTS:
                a = auroc(s["held-out"], s[kind])
                table[scorer][kind] = {"auroc": a, "se": auroc_se(a, len(s["held-out"]), len(s[kind]))}
        results[name] = {"auroc": table, "synthetic": knn}
        panel = ood_panel({k: (v["held-out"], v["off-manifold"]) for k, v in scorers.items() if "IS" not in k},
                          f"{name}: log p(x) of held-out vs off-manifold points")
        atomic_write_bytes(out / f"scores_{name}.png", figure_png_bytes(panel))
        print(f"[ood] {name}: " + "; ".join(f"{k} {v['off-manifold']['auroc']:.3f}/{v['uniform box']['auroc']:.3f}"
                                            for k, v in table.items()), flush=True)
    return {"datasets": results, "points": points, "is_samples": samples, "quick": quick}


def _markdown(cfg: dict, res: dict) -> str:
    lines = [f"# {cfg['title']}", "", cfg.get("notes", "").strip(), ""]
    for name, r in res["datasets"].items():
        lines += [f"## {name}", "", "AUROC of log p(x) at separating held-out test points from each shifted set "
                  f"({res['points']} points each; ± Hanley–McNeil SE):", "", "| score | " + " | ".join(SHIFTS) + " |",
                  "|---|" + "---|" * len(SHIFTS)]
        for scorer, row in r["auroc"].items():
            lines.append(f"| {scorer} | " + " | ".join(f"{row[k]['auroc']:.3f} ± {row[k]['se']:.3f}" for k in SHIFTS) + " |")
        lines += ["", "Synthetic data: smooth k-NN statistic of samples from the model against the test set "
                  "(lower is better), and the exact test log-likelihood:", "", "| model | smooth kNN | test log-lik (exact) | run |",
                  "|---|---|---|---|"]
        for label, k in r["synthetic"].items():
            knn = "-" if k["smooth_knn"] is None else f"{k['smooth_knn']:.3f} ± {k['smooth_knn_se']:.3f}"
            ll = "-" if k["test_loglik_exact"] is None else f"{k['test_loglik_exact']:.4f}"
            lines.append(f"| {label} | {knn} | {ll} | `{k['run']}` |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from pyro_vae.io import atomic_write_text, dumps_json, write_json

    args, cfg, record = start_experiment("pyro_vae.downstream.ood", argv)
    start = time.perf_counter()
    out = Path(args.out)
    res = run(cfg, Path(args.runs), out, args.quick)
    atomic_write_text(out / "report.md", _markdown(cfg, res))
    atomic_write_text(out / "results.json", dumps_json(res, nonfinite="null"))
    record["wall_seconds"] = round(time.perf_counter() - start, 1)
    write_json(out / "provenance.json", finish_provenance(record), nonfinite="null")
    return 0


if __name__ == "__main__":
    sys.exit(main())
