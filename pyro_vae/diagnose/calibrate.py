"""Calibrate ``pyro-vae diagnose`` on benchmarks whose truth is known.

``python -m pyro_vae.diagnose.calibrate experiments/diagnose/calibration.toml --runs RUNS --out DIR``
trains each case through the ordinary pipeline (finished runs in ``RUNS`` are reused), runs the
diagnosis, and writes ``DIR/report.md`` (expected vs obtained verdicts, an honest miss stays a
miss), ``DIR/reports/CASE.json`` (each full report), ``DIR/CASE.png`` for the cases that ask for
a figure, and ``DIR/provenance.json`` (command, commit, package versions, machine, wall times).

The config (TOML) has ``[train]`` (RunConfig fields shared by every case), ``[diagnose]``
(``max_points``, ``particles``, ``khat_points``, ``family_epochs``, ``seed``) and ``[[cases]]``,
each with ``name``, ``why`` (the paper's claim), ``expect`` (``{check key or "density": verdict}``),
and either ``dataset`` (+ optional ``train`` overrides and ``latent_dims``) or ``sample = {dataset,
n, seed}`` (the data set drawn to a CSV with a ``y`` labels column and fitted by ``fit-data``).
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

from pyro_vae.diagnose.report import Report

__all__ = ["load_calibration", "run_case", "expected_vs_obtained", "main"]

CASE_KEYS = {"name", "why", "expect", "dataset", "train", "latent_dims", "sample", "plot"}
DIAGNOSE_KEYS = {"max_points", "particles", "khat_points", "family_epochs", "seed"}


def load_calibration(path: str | Path) -> dict:
    """Read and check a calibration config (raises ``ValueError`` naming the bad key)."""
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    unknown = set(cfg) - {"name", "title", "notes", "train", "diagnose", "cases", "quick"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level key {sorted(unknown)[0]!r}")
    if set(cfg.get("diagnose", {})) - DIAGNOSE_KEYS:
        raise ValueError(f"{path}: [diagnose] takes {sorted(DIAGNOSE_KEYS)}")
    cases = cfg.get("cases") or []
    if not cases:
        raise ValueError(f"{path}: no [[cases]]")
    for case in cases:
        extra = set(case) - CASE_KEYS
        if extra or "name" not in case or "expect" not in case or ("dataset" in case) == ("sample" in case):
            raise ValueError(f"{path}: case {case.get('name')!r} needs name, expect and one of dataset/sample; "
                             f"unknown keys {sorted(extra)}")
    return cfg


def _train_config(cfg: dict, case: dict, quick: bool):
    from pyro_vae.pipeline import RunConfig

    fields = {**cfg.get("train", {}), **case.get("train", {})}
    if quick:
        fields.update(cfg.get("quick", {}).get("train", {}))
    if "hidden" in fields:
        fields["hidden"] = tuple(fields["hidden"])
    return RunConfig(dataset=case["dataset"], **fields)


def _sample_csv(spec: dict, folder: Path) -> Path:
    """Draw the data set to ``folder/NAME-nN-sS.csv`` with columns x1..xD and y (class index)."""
    from pyro_vae.datasets import get_dataset
    from pyro_vae.io import write_csv

    name, n, seed = spec["dataset"], int(spec.get("n", 5000)), int(spec.get("seed", 0))
    path = folder / f"{name}-n{n}-s{seed}.csv"
    if path.exists():
        return path
    drawn = get_dataset(name).sample(n, seed=seed)
    x, y = drawn[0].numpy(), drawn[-1]
    labels = (y.argmax(-1) if y.dim() == 2 and y.shape[-1] > 1 else y.reshape(-1)).long().numpy()
    rows = [{**{f"x{j + 1}": float(v) for j, v in enumerate(row)}, "y": int(label)} for row, label in zip(x, labels)]
    write_csv(path, rows)
    return path


def run_case(cfg: dict, case: dict, runs: Path, *, quick: bool = False, progress: bool = False) -> tuple[Report, dict]:
    """Train (or reuse) the case's run(s) and diagnose it; returns the report and what was run."""
    from pyro_vae.diagnose import api
    from pyro_vae.diagnose.data import load_subject
    from pyro_vae.diagnose.fit import fit_data, fit_data_config, latent_variant
    from pyro_vae.pipeline import load_trained, train_and_evaluate
    from pyro_vae.runs import RunStore

    opts = {"max_points": 1000, "particles": 1000, "khat_points": 200, "family_epochs": 10, "seed": 0,
            **cfg.get("diagnose", {}), **(cfg.get("quick", {}).get("diagnose", {}) if quick else {})}
    start = time.perf_counter()
    if "sample" in case:
        path = _sample_csv(case["sample"], runs)
        train = {**cfg.get("train", {}), **case.get("train", {}), **(cfg.get("quick", {}).get("train", {}) if quick else {})}
        keep = {k: train[k] for k in ("epochs", "restarts", "lr", "seed", "eval_samples") if k in train}
        config = fit_data_config(path, labels="y", latent_dim=int(case["sample"].get("latent_dim", 1)),
                                 noise=train.get("noise", "learned"), **keep)
    else:
        config = _train_config(cfg, case, quick)
        config.validate()
    done = RunStore(runs).finished(config.resolved().to_dict())
    run_dir = Path(done.run_dir) if done else Path((fit_data(config, runs, progress=progress) if "sample" in case
                                                     else train_and_evaluate(config, runs, progress=progress))["run_dir"])
    trained = time.perf_counter() - start
    subject = load_subject(run_dir, max_points=opts["max_points"], seed=opts["seed"])
    latent_models = None
    if case.get("latent_dims"):
        latent_models = {}
        for k in case["latent_dims"]:
            _, _, model, guide, _ = load_trained(latent_variant(subject.config, int(k), runs, progress=progress))
            latent_models[int(k)] = (model, guide)
    report = api.diagnose(
        subject.model, subject.guide, subject.x_eval, x_train=subject.x_train, labelled=subject.labelled,
        latent_models=latent_models, num_particles=opts["particles"], khat_points=opts["khat_points"],
        family_epochs=opts["family_epochs"], seed=opts["seed"], context={**subject.source, "case": case["name"]},
    )
    info = {"run_dir": str(run_dir), "config": subject.config.to_dict(), "train_seconds": round(trained, 1),
            "total_seconds": round(time.perf_counter() - start, 1), "reused_run": done is not None}
    return report, info


def _obtained(report: Report, key: str) -> tuple[str, str]:
    if key == "density":
        checks = [c for c in report.checks if c.key in ("mean_field_floor", "richer_family")]
        return report.density_verdict(), "; ".join(f"{c.key} {c.value:.3g}" for c in checks if c.value is not None)
    try:
        c = report.by_key(key)
    except KeyError:
        return "not run", ""
    return c.verdict, "" if c.value is None else f"{c.value:.3g}" + (f" ± {c.se:.2g}" if c.se is not None else "")


def expected_vs_obtained(cases: list[dict], reports: dict[str, Report]) -> list[dict]:
    """One row per (case, expectation): expected verdict, obtained verdict, the numbers, match."""
    rows = []
    for case in cases:
        report = reports.get(case["name"])
        for key, expected in case["expect"].items():
            obtained, numbers = _obtained(report, key) if report is not None else ("failed", "")
            rows.append({"case": case["name"], "check": key, "expected": expected, "obtained": obtained,
                         "numbers": numbers, "match": obtained == expected, "why": case.get("why", "")})
    return rows


def _markdown(cfg: dict, rows: list[dict], reports: dict[str, Report], infos: dict[str, dict], quick: bool) -> str:
    hits = sum(r["match"] for r in rows)
    lines = [f"# {cfg.get('title', cfg.get('name', 'diagnose calibration'))}", ""]
    if cfg.get("notes"):
        lines += [cfg["notes"].strip(), ""]
    lines += [f"{hits} of {len(rows)} expectations met" + (" (quick settings)" if quick else "") + ".", "",
              "| case | check | expected | obtained | statistic | match | why (paper) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['check']} | {r['expected']} | {r['obtained']} | {r['numbers']} | "
                     f"{'yes' if r['match'] else '**no**'} | {r['why']} |")
    lines += ["", "## Every check of every case", ""]
    for name, report in reports.items():
        info = infos[name]
        lines += [f"### {name}", "", f"run `{Path(info['run_dir']).name}` (trained {info['train_seconds']} s"
                  f"{', reused' if info['reused_run'] else ''}; case total {info['total_seconds']} s)", "",
                  "| group | check | statistic | value | threshold | verdict |", "|---|---|---|---|---|---|"]
        for c in report.checks:
            value = "-" if c.value is None else f"{c.value:.4g}" + (f" ± {c.se:.2g}" if c.se is not None else "")
            lines.append(f"| {c.group} | {c.key} | {c.statistic} | {value} | {c.threshold} | {c.verdict} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from pyro_vae.io import atomic_write_bytes, atomic_write_text, dumps_json, write_json
    from pyro_vae.plots.common import figure_png_bytes
    from pyro_vae.plots.diagnose import diagnosis_figure
    from pyro_vae.provenance import git_commit, machine_record, package_versions, utc_now

    parser = argparse.ArgumentParser(prog="python -m pyro_vae.diagnose.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--runs", required=True, help="runs folder (reused across invocations)")
    parser.add_argument("--out", required=True, help="results folder (report.md, reports/, provenance.json)")
    parser.add_argument("--cases", default=None, help="comma-separated subset of case names")
    parser.add_argument("--quick", action="store_true", help="the config's [quick] overrides (a smoke test)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_calibration(args.config)
    cases = cfg["cases"]
    if args.cases:
        wanted = args.cases.split(",")
        missing = sorted(set(wanted) - {c["name"] for c in cases})
        if missing:
            raise SystemExit(f"--cases: unknown case {missing[0]!r}")
        cases = [c for c in cases if c["name"] in wanted]
    runs, out = Path(args.runs), Path(args.out)
    runs.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, "-m", "pyro_vae.diagnose.calibrate", *(argv or sys.argv[1:])]),
        "commit": git_commit(), "versions": package_versions(), "machine_start": machine_record(), "start_time": utc_now(),
        "config": cfg, "quick": args.quick,
    }
    reports, infos = {}, {}
    t0 = time.perf_counter()
    for case in cases:
        print(f"[calibrate] {case['name']} ...", flush=True)
        report, info = run_case(cfg, case, runs, quick=args.quick)
        reports[case["name"]], infos[case["name"]] = report, info
        atomic_write_text(out / "reports" / f"{case['name']}.json", dumps_json({**report.to_dict(), "run": info}, nonfinite="null"))
        if case.get("plot"):
            atomic_write_bytes(out / f"{case['name']}.png", figure_png_bytes(diagnosis_figure(report)))
        print(f"[calibrate] {case['name']}: density {report.density_verdict()}, alarms {report.alarms()} "
              f"({info['total_seconds']} s)", flush=True)
    rows = expected_vs_obtained(cases, reports)
    atomic_write_text(out / "report.md", _markdown(cfg, rows, reports, infos, args.quick))
    record.update(end_time=utc_now(), wall_seconds=round(time.perf_counter() - t0, 1), machine_end=machine_record(),
                  cases={name: infos[name] for name in infos}, expectations_met=sum(r["match"] for r in rows),
                  expectations=len(rows))
    write_json(out / "provenance.json", record, nonfinite="null")
    print(f"[calibrate] {record['expectations_met']} of {len(rows)} expectations met; wrote {out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
