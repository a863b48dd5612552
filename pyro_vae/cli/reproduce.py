"""``pyro-vae experiments``, ``reproduce`` and ``report``: the papers' tables from one command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from pyro_vae.cli.common import add_command, comma_list, flags_of, positive_int
from pyro_vae.io import atomic_write_text, read_json, write_json
from pyro_vae.provenance import utc_now


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def sweep_dir(out: str | Path, name: str, quick: bool, reduced: bool = False) -> Path:
    return Path(out) / (f"{name}-quick" if quick else f"{name}-reduced" if reduced else name)


def write_report(experiment, folder: Path, quick: bool) -> str:
    """Build the experiment's tables from ``folder/runs`` and write report.md / report.csv."""
    from pyro_vae.io import write_csv
    from pyro_vae.reproduce.report import (
        build_rows, metric_noise, noise_markdown, paired_differences, pairs_markdown, to_csv, to_markdown,
    )

    rows = build_rows(experiment, folder / "runs", quick=quick)
    sweep = read_json(folder / "sweep.json") if (folder / "sweep.json").is_file() else {}
    pairs = paired_differences(experiment, folder / "runs", quick=quick)
    markdown = to_markdown(experiment, rows, quick=quick, reductions=sweep.get("reductions", ()))
    markdown += ("\n" + pairs_markdown(pairs)) if pairs else ""
    noise = metric_noise(experiment, folder / "runs", quick=quick)
    markdown += ("\n" + noise_markdown(noise)) if noise else ""
    atomic_write_text(folder / "report.md", markdown)
    atomic_write_text(folder / "report.csv", to_csv(experiment, rows))
    if pairs:
        write_csv(folder / "pairs.csv", pairs)
    return markdown


def cmd_experiments(args: argparse.Namespace) -> int:
    from pyro_vae.reproduce.experiments import experiment_names, load_experiment

    rows = []
    for name in experiment_names():
        exp = load_experiment(name)
        reduced = exp.protocol(reduced=True).planned_runs() if exp.reduced else None
        rows.append({"name": name, "title": exp.title, "runs": len(exp.runs()), "quick_runs": len(exp.runs(quick=True)),
                     "reduced_runs": reduced})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            extra = f", {r['reduced_runs']} reduced" if r["reduced_runs"] is not None else ""
            print(f"{r['name']:<24s} {r['runs']:>5d} runs ({r['quick_runs']} quick{extra})  {r['title']}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from pyro_vae import checks
    from pyro_vae.reproduce.experiments import checked_runs, load_experiment
    from pyro_vae.reproduce.sweep import _label

    checks.output_dir("--out", args.out)
    if args.results is not None:
        checks.output_dir("--results", args.results)
    if args.quick and args.reduced:
        raise ValueError("--quick and --reduced: choose one protocol (quick shrinks the paper's; reduced is the "
                         "config's stated [reduced] section)")
    try:
        experiment = load_experiment(args.name).protocol(reduced=args.reduced).restrict(args.datasets)
    except ValueError as err:
        raise ValueError(str(err)) from None
    configs = checked_runs(experiment, quick=args.quick, device=args.device)
    for cfg in configs:  # every config is checked before anything is written
        try:
            checks.check_run(cfg, cfg.validate())
        except ValueError as err:
            raise ValueError(f"{experiment.source}: run {_label(cfg)}: {err}") from None
    folder = sweep_dir(args.out, experiment.name, args.quick, args.reduced)
    from pyro_vae.runs.lock import exclusive

    with exclusive(folder, "--out"):  # before any write: a second invocation on this folder stops here
        return _reproduce(args, experiment, configs, folder)


def _reproduce(args: argparse.Namespace, experiment, configs: list, folder: Path) -> int:
    """``cmd_reproduce`` once its arguments are checked and the sweep folder is locked."""
    from pyro_vae.reproduce.sweep import run_sweep

    atomic_write_text(folder / "experiment.toml", experiment.source.read_text())
    from pyro_vae.reproduce.results import publish_results, sweep_record

    search = experiment.search_runs(quick=args.quick, device=args.device)
    record = sweep_record(experiment.name, quick=args.quick, source=str(experiment.source), configs=len(search),
                          command=["pyro-vae", *sys.argv[1:]] if sys.argv else None,
                          reductions=experiment.reductions)
    record["reduced"] = args.reduced
    record["datasets"] = args.datasets
    write_json(folder / "sweep.json", record)
    what = " (quick)" if args.quick else " (reduced protocol)" if args.reduced else ""
    if experiment.search_versions:
        print(f"{experiment.name}{what}: grid search on versions {experiment.search_versions}: {len(search)} runs, "
              f"then the selected points on the other versions → {folder}", flush=True)
    else:
        print(f"{experiment.name}{what}: {len(configs)} runs → {folder}", flush=True)
    sweep = dict(executor=args.executor, workers=args.workers, address=args.address, progress=not args.quiet,
                 threads=args.threads, group=not args.no_group)
    start = time.perf_counter()
    result = run_sweep(search, folder / "runs", **sweep)
    if experiment.search_versions:
        from pyro_vae.reproduce.report import select_runs

        chosen = {key: point for key, (point, _) in select_runs(experiment, folder / "runs", args.quick).items()}
        replicas = experiment.replicate_runs(chosen, quick=args.quick, device=args.device)
        print(f"selected on versions {experiment.search_versions}: " + "; ".join(
            f"{d}/{c}: {p}" for (d, c), p in chosen.items()) + f" → {len(replicas)} replicate runs", flush=True)
        second = run_sweep(replicas, folder / "runs", **sweep)
        result = type(result)(result.total + second.total, result.skipped + second.skipped, result.ran + second.ran,
                              result.failed + second.failed)
        record["configs"] = result.total
    seconds = time.perf_counter() - start
    write_json(folder / "sweep.json", {**record, "wall_seconds": round(seconds, 1), "ran": result.ran,
                                       "skipped": result.skipped, "failed": len(result.failed), "finished": utc_now()})
    print(f"ran {result.ran}, skipped {result.skipped} already finished, failed {len(result.failed)} "
          f"in {seconds:.0f} s", flush=True)
    for label, error in result.failed:
        print(f"  failed: {label}: {error}")
    print(write_report(experiment, folder, args.quick))
    figures = _write_figures(experiment, folder, args.quick) if not args.no_figures else []
    for path in figures:
        print(f"wrote {path}")
    if args.results:
        for path in publish_results(folder, args.results):
            print(f"wrote {path}")
    return 1 if result.failed else 0


def _write_figures(experiment, folder: Path, quick: bool) -> list[Path]:
    """The experiment's figure panels, when the plotting module is available."""
    try:
        from pyro_vae.reproduce.figures import experiment_figures
    except ImportError:
        return []
    return experiment_figures(experiment, folder, quick=quick)


def cmd_report(args: argparse.Namespace) -> int:
    from pyro_vae import checks

    folder = Path(args.folder)
    if not folder.is_dir():
        raise ValueError(f"folder {args.folder!r}: " + ("does not exist" if not folder.exists() else "is not a folder"))
    if args.results is not None:
        checks.output_dir("--results", args.results)
    if (folder / "sweep.json").is_file():
        from pyro_vae.reproduce.experiments import load_experiment

        try:
            meta = read_json(folder / "sweep.json")
        except (OSError, ValueError) as err:
            raise ValueError(f"{str(folder / 'sweep.json')!r} is unreadable: not valid JSON ({err})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("experiment"), str):
            raise ValueError(f"{str(folder / 'sweep.json')!r} is garbled: expected an object with \"experiment\"")
        try:
            experiment = load_experiment(folder / "experiment.toml")
        except ValueError:
            experiment = load_experiment(meta["experiment"])
        experiment = experiment.protocol(reduced=bool(meta.get("reduced"))).restrict(meta.get("datasets"))
        checks.output_dir("folder", folder)
        print(write_report(experiment, folder, bool(meta.get("quick"))))
        if args.results:
            from pyro_vae.reproduce.results import publish_results

            if not args.no_figures:
                _write_figures(experiment, folder, bool(meta.get("quick")))
            for path in publish_results(folder, args.results):
                print(f"wrote {path}")
        return 0
    runs = folder / "runs" if (folder / "runs" / "index.sqlite").is_file() else folder
    if not (runs / "index.sqlite").is_file():
        raise ValueError(f"{str(folder)!r}: neither a sweep folder (sweep.json) nor a runs folder (index.sqlite)")
    from pyro_vae.reproduce.report import generic_rows

    checks.output_dir("folder", folder)
    rows = generic_rows(runs)
    lines = ["| data set | method | options | runs | test log-lik | smooth kNN |", "|---|---|---|---|---|---|"]
    for r in rows:
        def cell(key):
            mean, std = r[key + "_mean"], r[key + "_std"]
            return "—" if mean is None else f"{mean:.3f} ± {std:.3f}"
        lines.append(f"| {r['dataset']} | {r['method']} | {r['options']} | {r['runs']} | {cell('test_loglik')} | {cell('smooth_knn')} |")
    markdown = "\n".join(lines) + "\n"
    atomic_write_text(folder / "report.md", markdown)
    print(markdown)
    return 0


def add_parsers(sub) -> None:
    p = add_command(sub, "experiments", "list the experiment configs (one per table or figure)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_experiments)

    p = add_command(sub, "reproduce", "run an experiment's sweep and write its table beside the paper's")
    p.add_argument("name", help="an experiment name (see `pyro-vae experiments`) or a .toml path")
    p.add_argument("--quick", action="store_true", help="shrunken protocol: minutes on a 2-core CPU")
    p.add_argument("--reduced", action="store_true",
                   help="the config's stated [reduced] protocol (e.g. select-then-replicate), its reductions "
                        "listed in the report and provenance.json")
    p.add_argument("--datasets", type=comma_list, default=None, metavar="A,B",
                   help="only these of the protocol's data sets (listed among the report's reductions)")
    p.add_argument("--executor", default="local", choices=("local", "ray"),
                   help="local (this process, or a process pool with --workers > 1) or ray")
    p.add_argument("--workers", type=positive_int, default=default_workers(),
                   help="parallel groups of runs (process pool or Ray tasks); the cores available here")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads per worker (1 avoids oversubscribing the cores)")
    p.add_argument("--no-group", action="store_true",
                   help="train every run alone instead of grouping runs that differ only in data version, seed, LIN's T and R or β")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local instance)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: the config's)")
    p.add_argument("--out", default="reproductions", help="folder of sweeps (created if missing)")
    p.add_argument("--no-figures", action="store_true", help="skip the figure panels")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="also publish the report, panels and provenance.json to DIR (e.g. experiments/results/NAME)")
    p.set_defaults(func=cmd_reproduce, flag_names=flags_of(p))

    p = add_command(sub, "report", "write report.md/report.csv for a sweep or runs folder")
    p.add_argument("folder", help="a sweep folder (with sweep.json) or a runs folder (with index.sqlite)")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="also redraw the panels and publish report, panels and provenance.json to DIR")
    p.add_argument("--no-figures", action="store_true", help="with --results: publish without redrawing the panels")
    p.set_defaults(func=cmd_report, flag_names=flags_of(p))
