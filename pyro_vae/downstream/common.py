"""Shared by the downstream-task experiments: training through the run store, provenance."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["train_or_reuse", "provenance", "finish_provenance", "start_experiment"]


def train_or_reuse(fields: dict[str, Any], runs: Path, *, progress: bool = False) -> tuple[Path, dict]:
    """The finished run of ``RunConfig(**fields)`` in ``runs``, training it if there is none."""
    from pyro_vae.pipeline import RunConfig, train_and_evaluate
    from pyro_vae.runs import RunStore

    fields = dict(fields)
    if "hidden" in fields:
        fields["hidden"] = tuple(fields["hidden"])
    config = RunConfig(**fields)
    config.validate()
    done = RunStore(runs).finished(config.resolved().to_dict())
    if done is not None:
        return Path(done.run_dir), {"run_dir": str(done.run_dir), "reused_run": True, "config": config.to_dict()}
    summary = train_and_evaluate(config, runs, progress=progress)
    return Path(summary["run_dir"]), {"run_dir": summary["run_dir"], "reused_run": False, "config": config.to_dict()}


def provenance(argv: list[str], module: str, cfg: dict) -> dict:
    """The start of an experiment's provenance record: command, commit, versions, machine, config."""
    from pyro_vae.provenance import git_commit, machine_record, package_versions, utc_now

    return {"command": " ".join([Path(sys.executable).name, "-m", module, *argv]), "commit": git_commit(),
            "versions": package_versions(), "machine_start": machine_record(), "start_time": utc_now(), "config": cfg}


def start_experiment(module: str, argv: list[str] | None) -> tuple[Any, dict, dict]:
    """Parse ``CONFIG --runs DIR --out DIR [--quick]``, read the TOML config, pin one torch thread
    and begin the provenance record: ``(args, cfg, record)``."""
    import argparse
    import tomllib

    import torch

    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    parser.add_argument("config")
    parser.add_argument("--runs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)
    return args, cfg, provenance(argv if argv is not None else sys.argv[1:], module, cfg)


def finish_provenance(record: dict) -> dict:
    from pyro_vae.provenance import machine_record, utc_now

    return {**record, "end_time": utc_now(), "machine_end": machine_record()}
