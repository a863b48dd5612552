"""Run 004 Appendix F: attack success with and without manifold projection, true vs mismatched model.

``python -m pyro_vae.downstream.appendix_f experiments/downstream/appendix_f.toml --runs RUNS --out DIR``
trains (or reuses) the two VAEs through the ordinary pipeline — the true latent dimension and σ²,
and a larger K with σ² learned jointly (which the ELBO drives down, 004 §8 Case B) — fits the
learned classifier, attacks it by L∞ PGD over a range of ε, and writes ``DIR/report.md``,
``DIR/results.json``, ``DIR/figure7.png`` (a uniform grid projected onto each learned manifold,
with one attacked point, as 004 Figure 7) and ``DIR/provenance.json``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from pyro_vae.downstream.adversarial import (
    attack_success, fit_classifier, pgd_attack, projection, true_projection,
)
from pyro_vae.downstream.common import start_experiment, train_or_reuse

DEFENCES = ("none", "true model", "mismatched model", "true manifold (oracle)")


def labeller(threshold: float):
    """Eq. 32's ``g ∘ f_GT`` as a function of z: ``y = 1[z < threshold]`` (on the Circle, the arc of
    angles 2πΦ(z) below 2πΦ(threshold); −0.6745 gives the first quadrant)."""
    def labels(z: torch.Tensor) -> torch.Tensor:
        return (z[:, 0] < threshold).long()
    return labels


def run(cfg: dict, runs: Path, out: Path, quick: bool = False) -> dict:
    from pyro_vae.datasets import get_dataset
    from pyro_vae.pipeline import load_trained

    train = {**cfg["train"], **(cfg.get("quick", {}).get("train", {}) if quick else {})}
    points = int(cfg.get("quick", {}).get("points", cfg["points"]) if quick else cfg["points"])
    dataset = get_dataset(cfg["dataset"])
    if dataset.latent_dim != 1:
        raise ValueError(f"dataset={cfg['dataset']!r}: the true projection here needs K = 1")
    models, infos = {}, {}
    for name in ("true", "mismatched"):
        run_dir, info = train_or_reuse({**train, **cfg["models"][name], "dataset": cfg["dataset"]}, runs)
        _, _, model, guide, metrics = load_trained(run_dir)
        model.requires_grad_(False), guide.requires_grad_(False)
        models[name] = (model, guide)
        infos[name] = {**info, "noise_var": metrics.get("noise_var"), "latent_dim": model.latent_dim,
                       "test_loglik_exact": metrics.get("test_loglik_exact"), "test_elbo": metrics.get("test_elbo")}
    _labels = labeller(float(cfg["label_z_below"]))
    splits = dataset.splits(int(train.get("data_seed", 0)))
    clf = fit_classifier(splits.train.x, _labels(splits.train.z), hidden=int(cfg.get("classifier_hidden", 0)),
                         seed=int(cfg.get("seed", 0)))
    x = splits.test.x[:points]
    y = _labels(true_projection(dataset.f, x)[1])
    defences = {
        "none": None,
        "true model": projection(*models["true"]),
        "mismatched model": projection(*models["mismatched"]),
        "true manifold (oracle)": lambda v: true_projection(dataset.f, v)[0],
    }
    rows = []
    for eps in cfg["eps"]:
        adv = pgd_attack(clf, x, y, float(eps), steps=int(cfg["pgd_steps"]))
        y_adv = _labels(true_projection(dataset.f, adv)[1])
        row = {"eps": float(eps)}
        for name, d in defences.items():
            r = attack_success(clf, d, x, adv, y, y_adv)
            row[name] = r.success
            row[f"{name} clean accuracy"] = r.clean_accuracy
        for name in ("true model", "mismatched model"):  # the attacker differentiates through M
            adaptive = pgd_attack(clf, x, y, float(eps), steps=int(cfg["pgd_steps"]), through=defences[name])
            row[f"{name}, adaptive"] = attack_success(
                clf, defences[name], x, adaptive, y, _labels(true_projection(dataset.f, adaptive)[1])).success
        with torch.no_grad():
            for name in ("true model", "mismatched model"):
                row[f"{name} shift"] = float((defences[name](adv) - adv).norm(dim=-1).mean())
        rows.append(row)
        print(f"[appendix F] eps {eps}: " + ", ".join(f"{k} {row[k]:.3f}" for k in DEFENCES), flush=True)
    return {"rows": rows, "models": infos, "points": points, "classifier_test_accuracy": float(
        (clf(x).argmax(-1) == y).double().mean()), "dataset": cfg["dataset"], "quick": quick,
        "_figure": (dataset, models, clf, x, _labels)}


def _markdown(cfg: dict, res: dict) -> str:
    m = res["models"]
    lines = [f"# {cfg['title']}", "", cfg.get("notes", "").strip(), "",
             f"Models: true K = {m['true']['latent_dim']}, σ² = {m['true']['noise_var']} (run `{Path(m['true']['run_dir']).name}`); "
             f"mismatched K = {m['mismatched']['latent_dim']}, σ² learned = "
             f"{[round(v, 5) for v in m['mismatched']['noise_var']]} (run `{Path(m['mismatched']['run_dir']).name}`). "
             f"Classifier test accuracy {res['classifier_test_accuracy']:.3f} on {res['points']} test points.", "",
             "Attack success (share of the points each defended classifier got right that the attack flips; "
             "oblivious L∞ PGD on the classifier, as in 004 App. F; last two columns: adaptive PGD through M):", "",
             "| ε | no defence | projection, true K and σ² | projection, mismatched | projection onto the true manifold | "
             "true, adaptive | mismatched, adaptive | mean ‖M(x′)−x′‖ true / mismatched |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['eps']:g} | {r['none']:.3f} | {r['true model']:.3f} | {r['mismatched model']:.3f} | "
                     f"{r['true manifold (oracle)']:.3f} | {r['true model, adaptive']:.3f} | "
                     f"{r['mismatched model, adaptive']:.3f} | {r['true model shift']:.3f} / "
                     f"{r['mismatched model shift']:.3f} |")
    lines += ["", "Figure 7 (`figure7.png`): a uniform grid projected by M onto the manifold of each learned model."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from pyro_vae.io import atomic_write_bytes, atomic_write_text, dumps_json, write_json
    from pyro_vae.plots.common import figure_png_bytes
    from pyro_vae.plots.downstream import projection_panels

    args, cfg, record = start_experiment("pyro_vae.downstream.appendix_f", argv)
    out = Path(args.out)
    start = time.perf_counter()
    res = run(cfg, Path(args.runs), out, args.quick)
    dataset, models, clf, x, labels = res.pop("_figure")
    panels = projection_panels(dataset, models, clf, x, float(cfg["figure_eps"]), labels=labels)
    atomic_write_bytes(out / "figure7.png", figure_png_bytes(panels))
    atomic_write_text(out / "report.md", _markdown(cfg, res))
    atomic_write_text(out / "results.json", dumps_json(res, nonfinite="null"))
    record.update(wall_seconds=round(time.perf_counter() - start, 1))
    from pyro_vae.downstream.common import finish_provenance

    write_json(out / "provenance.json", finish_provenance(record), nonfinite="null")
    return 0


if __name__ == "__main__":
    sys.exit(main())
