"""Tables in the papers' layout from a run store, beside the papers' numbers.

For each data set and method: the grid point selected by the experiment's rule (mean over
data versions of ``select.metric``, e.g. the validation objective, 004 Appendix D), then each
reported metric as mean ± std over data versions of that point's runs (each run already holds
its best restart), the paper's mean ± std beside it, and the difference in units of the
paper's std. Written as Markdown and CSV (atomically) by the caller.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import statistics
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from pyro_vae.reproduce.experiments import data_version, point_label, resolved
from pyro_vae.runs.store import RunStore, config_hash


def metric_value(metrics: dict, path: str):
    """``metrics["a"]["b"]`` for ``"a.b"``; list items by index (``"cohorts.0.smooth_knn.mean"``)."""
    value = metrics
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class Row(NamedTuple):
    dataset: str
    method: str
    metric: str
    selected: str  # the grid point, e.g. "particles=20"
    ours_mean: float | None
    ours_std: float | None
    versions: int  # data versions with a finite value of the metric
    paper_mean: float | None
    paper_std: float | None
    runs: int | None = None  # finished runs of the selected point (more than ``versions`` when some lack the metric)

    @property
    def diff_in_paper_std(self) -> float | None:
        if None in (self.ours_mean, self.paper_mean) or not self.paper_std:
            return None
        return (self.ours_mean - self.paper_mean) / self.paper_std


def columns(experiment) -> list[str]:
    """Report columns: each method's label, split by the ``report.split_by`` grid keys."""
    cols = []
    for method in experiment.methods:
        split = [k for k in experiment.split_by if k in method.grid]
        values = [dict(zip(split, v)) for v in itertools.product(*(method.grid[k] for k in split))] or [{}]
        for v in values:
            col = method.column + (f" [{point_label(v, split)}]" if v else "")
            if col not in cols:
                cols.append(col)
    return cols


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def select_runs(
    experiment, runs_dir: str | Path, quick: bool = False, overrides: dict | None = None
) -> dict[tuple[str, str], tuple[str, list]]:
    """``(dataset, column) -> (selected grid point, its finished runs)`` by the experiment's rule.

    A point's score is the mean of ``select.metric`` over its runs (where no point of a cell has
    it, the first of ``select.fallback`` that some point has) — over the runs on
    ``search_versions`` only when the experiment selects-then-replicates, so the selected
    point's replicas on the other versions do not enter its own selection.
    ``quick`` and ``overrides`` must be those the sweep ran with (they are part of each run's config).
    """
    store = RunStore(runs_dir)
    finished = {rec.config_hash: rec for rec in store.list(status="finished")}
    groups: dict[tuple[str, str, str], list] = {}
    for spec, point, cfg in experiment.labelled_runs(quick=quick, overrides=overrides):
        rec = finished.get(config_hash(resolved(cfg).to_dict()))
        if rec is None:
            continue
        groups.setdefault((cfg.dataset, experiment.column_of(spec, point), point_label(point, spec.grid)), []).append(rec)
    sign = 1.0 if experiment.select_mode == "max" else -1.0
    search = set(experiment.search_versions)
    selected = {}
    for dataset in experiment.datasets:
        for column in columns(experiment):
            candidates = {point: recs for (d, c, point), recs in groups.items() if (d, c) == (dataset, column)}
            if not candidates:
                continue

            def score(point: str, metric: str) -> float:
                searched = [r for r in candidates[point] if not search or _version(r) in search]
                mean, _ = _mean_std([metric_value(r.metrics or {}, metric) for r in searched])
                return -math.inf if mean is None else sign * mean

            rules = [experiment.select_metric, *experiment.select_fallback]
            metric = next((m for m in rules if any(score(p, m) > -math.inf for p in candidates)), None)
            if metric is None:
                warnings.warn(f"{dataset}/{column}: no run has {' or '.join(rules)}; the first grid point stands "
                              "in for a selection", RuntimeWarning, stacklevel=2)
                metric = rules[0]
            point = max(candidates, key=lambda p: score(p, metric))
            selected[(dataset, column)] = (point, candidates[point])
    return selected


def build_rows(experiment, runs_dir: str | Path, quick: bool = False, overrides: dict | None = None) -> list[Row]:
    """Rows of the report for ``experiment`` from the finished runs in ``runs_dir`` (see :func:`select_runs`)."""
    rows = []
    for (dataset, column), (point, records) in select_runs(experiment, runs_dir, quick, overrides).items():
        for metric in experiment.metrics:
            values = [metric_value(r.metrics or {}, metric) for r in records]
            finite = sum(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
            mean, std = _mean_std(values)
            paper = experiment.paper_values.get(metric, {}).get(dataset, {}).get(column)
            rows.append(Row(dataset, column, metric, point, mean, std, finite,
                            paper[0] if paper else None, paper[1] if paper else None, len(records)))
    return rows


def _fmt(mean: float | None, std: float | None) -> str:
    return "—" if mean is None else f"{mean:.3f} ± {std:.3f}"


def to_markdown(experiment, rows: list[Row], *, quick: bool = False, reductions: Sequence[str] = ()) -> str:
    """A Markdown table per metric: rows data sets, columns methods (ours | paper | Δ/σ_paper).

    The header states the protocol: the paper's, quick mode, or the listed ``reductions``.
    """
    out = io.StringIO()
    out.write(f"# {experiment.title or experiment.name}\n\n")
    out.write(f"Source: {experiment.paper} {experiment.reference}. ")
    out.write("Quick mode (shrunken protocol): numbers are a smoke test, not a reproduction.\n\n" if quick else "\n\n")
    if reductions:
        out.write("**Protocol reductions:** " + "; ".join(reductions) + ".\n\n")
    elif not quick:
        out.write("**Protocol:** the paper's (all data versions, restarts, epochs, grids and evaluation sizes of the "
                  "config).\n\n")
    methods = columns(experiment)
    for metric in experiment.metrics:
        out.write(f"## {metric}\n\n| data set | " + " | ".join(methods) + " |\n")
        out.write("|---|" + "---|" * len(methods) + "\n")
        for dataset in experiment.datasets:
            cells = []
            for method in methods:
                row = next((r for r in rows if (r.dataset, r.method, r.metric) == (dataset, method, metric)), None)
                if row is None:
                    cells.append("not run")
                    continue
                n = f"n={row.versions}" + (f" of {row.runs} runs: the others have no value" if
                                              row.runs is not None and row.runs > row.versions else "")
                cell = f"{_fmt(row.ours_mean, row.ours_std)} ({n}; {row.selected})"
                if row.paper_mean is not None:
                    diff = row.diff_in_paper_std
                    cell += f"<br>paper {_fmt(row.paper_mean, row.paper_std)}"
                    cell += f", Δ = {diff:+.1f} σ" if diff is not None else ""
                cells.append(cell)
            out.write(f"| {dataset} | " + " | ".join(cells) + " |\n")
        out.write("\n")
    if experiment.notes:
        out.write(experiment.notes.strip() + "\n")
    return out.getvalue()


def to_csv(experiment, rows: list[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["experiment", "dataset", "method", "metric", "selected", "ours_mean", "ours_std", "versions",
                     "paper_mean", "paper_std", "diff_in_paper_std"])
    for r in rows:
        writer.writerow([experiment.name, r.dataset, r.method, r.metric, r.selected, r.ours_mean, r.ours_std,
                         r.versions, r.paper_mean, r.paper_std, r.diff_in_paper_std])
    return out.getvalue()


def generic_rows(runs_dir: str | Path, metrics: tuple[str, ...] = ("test_loglik", "smooth_knn")) -> list[dict[str, Any]]:
    """For a plain runs folder: one row per (data set, method, options) over data versions."""
    store = RunStore(runs_dir)
    groups: dict[tuple, list[dict]] = {}
    for rec in store.list(status="finished"):
        cfg = rec.config or {}
        key = (cfg.get("dataset"), cfg.get("method"), str(sorted((cfg.get("options") or {}).items())))
        groups.setdefault(key, []).append(rec.metrics or {})
    rows = []
    for (dataset, method, options), ms in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        row = {"dataset": dataset, "method": method, "options": options, "runs": len(ms)}
        for metric in metrics:
            row[metric + "_mean"], row[metric + "_std"] = _mean_std([m.get(metric) for m in ms])
        rows.append(row)
    return rows


def _version(record) -> Any:
    return data_version(record.config or {})


def paired_differences(experiment, runs_dir: str | Path, quick: bool = False, overrides: dict | None = None) -> list[dict]:
    """Every pair of columns per data set and metric, paired over data versions.

    For the selected grid point of each column, the runs of the same data version are paired:
    mean of (column a − column b) with its standard error over versions, and in how many
    versions a < b (the papers' claims are orderings, e.g. "IWAE learns p(x) better than the
    MFG-VAE"). Only versions where both columns have a finished run count.
    """
    selected = select_runs(experiment, runs_dir, quick, overrides)
    out = []
    for dataset in experiment.datasets:
        cols = [c for c in columns(experiment) if (dataset, c) in selected]
        for metric in experiment.metrics:
            for a, b in itertools.combinations(cols, 2):
                va = {_version(r): metric_value(r.metrics or {}, metric) for r in selected[(dataset, a)][1]}
                vb = {_version(r): metric_value(r.metrics or {}, metric) for r in selected[(dataset, b)][1]}
                diffs = [va[v] - vb[v] for v in sorted(set(va) & set(vb), key=str) if va[v] is not None and vb[v] is not None]
                if not diffs:
                    continue
                mean = sum(diffs) / len(diffs)
                se = (math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
                      if len(diffs) > 1 else None)
                out.append({"dataset": dataset, "metric": metric, "a": a, "b": b, "versions": len(diffs),
                            "mean_diff": mean, "se": se, "a_lower_in": sum(d < 0 for d in diffs)})
    return out


def pairs_markdown(pairs: list[dict]) -> str:
    """The paired differences as a Markdown table."""
    if not pairs:
        return ""
    lines = ["## Paired differences over data versions (a − b)", "",
             "| data set | metric | a | b | versions | mean(a − b) ± SE | a < b in |", "|---|---|---|---|---|---|---|"]
    for p in pairs:
        se = "—" if p["se"] is None else f"{p['se']:.3f}"
        lines.append(f"| {p['dataset']} | {p['metric']} | {p['a']} | {p['b']} | {p['versions']} | "
                     f"{p['mean_diff']:+.3f} ± {se} | {p['a_lower_in']}/{p['versions']} |")
    return "\n".join(lines) + "\n"


def metric_noise(experiment, runs_dir: str | Path, quick: bool = False, overrides: dict | None = None) -> list[dict]:
    """Each reported metric's own noise against the spread it is judged by.

    For every selected (data set, column) and every metric whose runs record its SE (``METRIC_se``,
    or ``.se`` beside a ``.mean``: the Monte Carlo standard error of that run's value, e.g. smooth
    kNN over its repeats, the IS log-likelihood over test points): the root mean square of those within-run SEs, the
    standard deviation of the metric over data versions, and the repeats behind it where the run
    records ``METRIC_repeats``. A metric is quiet enough when its own SE is small beside the
    between-version spread and the paired differences it judges.
    """
    out = []
    for (dataset, column), (_, records) in select_runs(experiment, runs_dir, quick, overrides).items():
        for metric in experiment.metrics:
            ms = [r.metrics or {} for r in records]
            se_path, repeats_path = _noise_paths(metric)
            ses = [metric_value(m, se_path) for m in ms]
            ses = [v for v in ses if v is not None and math.isfinite(v)]
            if not ses:
                continue
            _, spread = _mean_std([metric_value(m, metric) for m in ms])
            repeats = sorted({metric_value(m, repeats_path) for m in ms} - {None})
            out.append({"dataset": dataset, "method": column, "metric": metric, "runs": len(ses),
                        "within_run_se": math.sqrt(sum(v * v for v in ses) / len(ses)),
                        "between_version_sd": spread, "repeats": ",".join(map(str, repeats)) or None})
    return out


def _noise_paths(metric: str) -> tuple[str, str]:
    """Where a run keeps a metric's SE and repeats: ``METRIC_se`` beside a top-level value, or the
    siblings ``.se`` / ``.repeats`` of a ``.mean`` (``cohorts.0.smooth_knn.mean``)."""
    if metric.endswith(".mean"):
        stem = metric[: -len(".mean")]
        return f"{stem}.se", f"{stem}.repeats"
    return f"{metric}_se", f"{metric}_repeats"


def noise_markdown(rows: list[dict]) -> str:
    """:func:`metric_noise` as a Markdown table."""
    if not rows:
        return ""
    lines = ["## Metric noise: each run's own SE against the spread over data versions", "",
             "| data set | method | metric | repeats | within-run SE (RMS) | SD over versions | runs |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        sd = "—" if r["between_version_sd"] is None else f"{r['between_version_sd']:.3f}"
        lines.append(f"| {r['dataset']} | {r['method']} | {r['metric']} | {r['repeats'] or '—'} | "
                     f"{r['within_run_se']:.3f} | {sd} | {r['runs']} |")
    return "\n".join(lines) + "\n"
