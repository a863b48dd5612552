"""Experiment configs: one TOML file per table or figure of the papers, expanded into runs.

A config names the data sets and data versions (seeds), the methods with their
hyper-parameter grids, the shared training protocol, the selection rule, the metrics to
report, the paper's reported values, and what ``--quick`` shrinks. See
``experiments/README.md`` for the format and the list.

>>> exp = load_experiment("004_table2")                       # doctest: +SKIP
>>> [cfg.method for cfg in exp.runs(quick=True)]              # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from pyro_vae.pipeline import RunConfig
from pyro_vae.pipeline_m2 import M2Config

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
KINDS = ("unsupervised", "m2")
UCI_SETS = ("diabetic_retinopathy", "contraceptive", "titanic")
RUN_FIELDS = {f.name for f in dataclasses.fields(RunConfig)}
M2_FIELDS = {f.name for f in dataclasses.fields(M2Config)}


def resolved(cfg):
    """What the run store hashes: a RunConfig with its method's options completed; an M2Config as is."""
    return cfg.resolved() if hasattr(cfg, "resolved") else cfg


@dataclass
class MethodSpec:
    name: str
    grid: dict[str, list] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # the column in the report (default: the method's name)

    @property
    def column(self) -> str:
        return self.label or self.name

    def points(self, quick: bool) -> list[dict]:
        keys = sorted(self.grid)
        combos = [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]
        combos = combos or [{}]
        return combos[:1] if quick else combos


@dataclass
class Experiment:
    """A parsed experiment config (see the module docstring)."""

    name: str
    title: str
    paper: str
    reference: str
    kind: str
    datasets: list[str]
    versions: list[int]
    train: dict[str, Any]
    methods: list[MethodSpec]
    select_metric: str
    select_mode: str
    metrics: list[str]
    split_by: list[str]
    paper_values: dict[str, dict[str, dict[str, list[float]]]]
    quick: dict[str, Any]
    notes: str
    figures: dict[str, Any]
    source: Path

    def runs(self, quick: bool = False, device: str | None = None, overrides: dict | None = None) -> list[RunConfig]:
        """Every run of the sweep: data version × data set × method × grid point."""
        return [cfg for _, _, cfg in self.labelled_runs(quick, device, overrides)]

    def labelled_runs(
        self, quick: bool = False, device: str | None = None, overrides: dict | None = None
    ) -> list[tuple[MethodSpec, dict, RunConfig]]:
        """``(method spec, grid point, config)`` for every run of the sweep.

        ``overrides`` (run settings) win over everything, e.g. tiny sizes for a smoke test.
        """
        fields_allowed = M2_FIELDS if self.kind == "m2" else RUN_FIELDS
        versions = self.quick.get("versions", self.versions[:1]) if quick else self.versions
        train = {**self.train, **(self.quick.get("train", {}) if quick else {})}
        if device is not None:
            train["device"] = device
        out = []
        for version, dataset, method in itertools.product(versions, self.datasets, self.methods):
            for point in method.points(quick and self.quick.get("grid", "first") == "first"):
                fields = {**train, **method.fixed, **{k: v for k, v in point.items() if k in fields_allowed}}
                options = {k: v for k, v in {**method.fixed, **point}.items() if k not in fields_allowed}
                fields = {k: v for k, v in fields.items() if k in fields_allowed}
                if "hidden" in fields:
                    fields["hidden"] = tuple(fields["hidden"])
                if quick and fields.get("anneal_epochs") and "epochs" in self.train:
                    # keep the protocol's shape: the warm-up takes the same fraction of training
                    ratio = fields.get("epochs", self.train["epochs"]) / self.train["epochs"]
                    fields["anneal_epochs"] = max(1, round(fields["anneal_epochs"] * ratio))
                fields.update({k: v for k, v in (overrides or {}).items() if k in fields_allowed})
                if self.kind == "m2":
                    if options:
                        raise ValueError(f"{self.source}: {sorted(options)[0]!r} is not an M2 run setting")
                    version_field = {"split": version} if dataset in UCI_SETS else {"data_seed": version}
                    cfg = M2Config(dataset=dataset, **version_field, **fields)
                else:
                    cfg = RunConfig(dataset=dataset, method=method.name, data_seed=version, options=options, **fields)
                out.append((method, point, cfg))
        return out


def _require(table: dict, key: str, kind: type, where: str):
    if key not in table:
        raise ValueError(f"{where}: missing key {key!r}")
    value = table[key]
    if not isinstance(value, kind):
        raise ValueError(f"{where}: {key}={value!r} should be a {kind.__name__}")
    return value


def parse_experiment(data: dict, source: Path) -> Experiment:
    """Validate a loaded TOML table; every error names the file and the key."""
    where = str(source)
    kind = data.get("kind", "unsupervised")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind={kind!r}, expected one of {KINDS}")
    data_table = _require(data, "data", dict, where)
    methods = []
    for i, m in enumerate(_require(data, "methods", list, where)):
        name = _require(m, "name", str, f"{where} methods[{i}]")
        grid = m.get("grid", {})
        if not all(isinstance(v, list) and v for v in grid.values()):
            raise ValueError(f"{where} methods[{i}] ({name}): every grid entry must be a non-empty list")
        methods.append(MethodSpec(name, grid, m.get("fixed", {}), m.get("label", "")))
    select = data.get("select", {})
    mode = select.get("mode", "max")
    if mode not in ("max", "min"):
        raise ValueError(f"{where}: select.mode={mode!r}, expected 'max' or 'min'")
    unknown = sorted(set(data.get("train", {})) - (M2_FIELDS if kind == "m2" else RUN_FIELDS))
    if unknown:
        raise ValueError(f"{where}: train.{unknown[0]} is not a run setting; expected some of {sorted(RUN_FIELDS)}")
    return Experiment(
        name=_require(data, "name", str, where),
        title=data.get("title", ""),
        paper=data.get("paper", ""),
        reference=data.get("reference", ""),
        kind=kind,
        datasets=_require(data_table, "datasets", list, where + " [data]"),
        versions=_require(data_table, "versions", list, where + " [data]"),
        train=data.get("train", {}),
        methods=methods,
        select_metric=select.get("metric", "val_objective"),
        select_mode=mode,
        metrics=data.get("report", {}).get("metrics", ["test_loglik"]),
        split_by=data.get("report", {}).get("split_by", []),
        paper_values=data.get("paper_values", {}),
        quick=data.get("quick", {}),
        notes=data.get("notes", ""),
        figures=data.get("figures", {}),
        source=source,
    )


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml"))


def load_experiment(name_or_path: str | Path) -> Experiment:
    """An experiment by name (``experiments/NAME.toml``) or by path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = EXPERIMENTS_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ValueError(f"experiment {str(name_or_path)!r}: no such config; expected one of {experiment_names()} or a .toml path")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from None
    return parse_experiment(data, path)
