"""Experiment configs: one TOML file per table or figure of the papers, expanded into runs.

A config names the data sets and data versions (seeds), the methods with their
hyper-parameter grids, the shared training protocol, the selection rule, the metrics to
report, the paper's reported values, what ``--quick`` shrinks, and optionally a stated
``[reduced]`` protocol (``--reduced``) for a sweep that does not fit the machine at the paper's:
smaller grids or fewer epochs, each reduction listed, and *select-then-replicate* — the grid
searched on ``search_versions`` only, then every other data version run at the selected point.
See ``experiments/README.md`` for the format and the list.

>>> exp = load_experiment("004_table2")                       # doctest: +SKIP
>>> [cfg.method for cfg in exp.runs(quick=True)]              # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

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
    reduced: dict[str, Any] = field(default_factory=dict)  # the [reduced] section, as parsed
    search_versions: list[int] = field(default_factory=list)  # select-then-replicate: the grid's versions
    reductions: list[str] = field(default_factory=list)  # what this protocol changes against the paper's
    select_fallback: list[str] = field(default_factory=list)  # metrics that select where select_metric has no value

    def protocol(self, reduced: bool = False) -> "Experiment":
        """This experiment at the paper's protocol (itself) or at its stated ``[reduced]`` one.

        The reduced protocol replaces data versions and training settings, narrows method grids
        (``grid.LABEL = {key = [...]}``), may select grid points by another metric
        (``select = {metric, mode}``) and may search the grid on ``search_versions`` only
        (select-then-replicate: :meth:`search_runs`, then :meth:`replicate_runs`).
        """
        if not reduced:
            return self
        if not self.reduced:
            raise ValueError(f"{self.source}: --reduced: this experiment has no [reduced] section")
        r = self.reduced
        methods = [dataclasses.replace(m, grid={**m.grid, **r.get("grid", {}).get(m.column, {})}) for m in self.methods]
        select = r.get("select", {})
        return dataclasses.replace(
            self, datasets=r.get("datasets", self.datasets), versions=r.get("versions", self.versions),
            train={**self.train, **r.get("train", {})}, select_metric=select.get("metric", self.select_metric),
            select_mode=select.get("mode", self.select_mode),
            select_fallback=list(select.get("fallback", self.select_fallback)),
            methods=methods, search_versions=r.get("search_versions", []), reductions=list(r["reductions"]))

    def restrict(self, datasets: Sequence[str] | None, flag: str = "--datasets") -> "Experiment":
        """This protocol on a subset of its data sets (``None``: all of them), the restriction
        listed among its reductions. A name outside the protocol's data sets is a ValueError
        naming ``flag``."""
        if datasets is None:
            return self
        unknown = [d for d in datasets if d not in self.datasets]
        if not datasets or unknown:
            raise ValueError(f"{flag} {','.join(datasets)!r}: {unknown[0] if unknown else 'empty'} is not a data set of "
                             f"this protocol; expected a comma-separated subset of {self.datasets}")
        if set(datasets) == set(self.datasets):
            return self
        kept = [d for d in self.datasets if d in datasets]
        line = f"the data sets {', '.join(kept)} only ({flag}; this protocol has {', '.join(self.datasets)})"
        return dataclasses.replace(self, datasets=kept, reductions=[*self.reductions, line])

    def search_runs(self, quick: bool = False, device: str | None = None, overrides: dict | None = None) -> list:
        """The runs of the grid search: every grid point on ``search_versions`` (all runs without them)."""
        return [cfg for _, _, cfg in self.labelled_runs(quick, device, overrides)
                if not self.search_versions or _version(cfg) in self.search_versions]

    def replicate_runs(self, selected: dict[tuple[str, str], str], quick: bool = False, device: str | None = None,
                       overrides: dict | None = None) -> list:
        """Select-then-replicate's second step: the selected point of each (data set, column) on the
        versions outside ``search_versions``. ``selected`` maps ``(dataset, column)`` to the point's
        label (as :func:`pyro_vae.reproduce.report.select_runs` gives it)."""
        if not self.search_versions:
            return []
        out = []
        for spec, point, cfg in self.labelled_runs(quick, device, overrides):
            if _version(cfg) in self.search_versions:
                continue
            if selected.get((cfg.dataset, self.column_of(spec, point))) == point_label(point, spec.grid):
                out.append(cfg)
        return out

    def planned_runs(self, quick: bool = False) -> int:
        """How many runs the sweep makes: all of them, or under select-then-replicate the grid search
        plus one selected point per (data set, column) on every other version."""
        labelled = self.labelled_runs(quick)
        if not self.search_versions:
            return len(labelled)
        cells = {(cfg.dataset, self.column_of(spec, point)) for spec, point, cfg in labelled}
        others = {_version(cfg) for _, _, cfg in labelled} - set(self.search_versions)
        return len(self.search_runs(quick)) + len(cells) * len(others)

    def column_of(self, spec: MethodSpec, point: dict) -> str:
        """The report column of a method's grid point (split by ``report.split_by``)."""
        split = {k: v for k, v in point.items() if k in self.split_by}
        return spec.column + (f" [{point_label(split, split)}]" if split else "")

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
                    if not isinstance(fields["hidden"], list):
                        raise ValueError(f"hidden={fields['hidden']!r} should be a list of layer widths, e.g. [50, 50]")
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


def point_label(point: dict, keys) -> str:
    """A grid point as the reports name it, e.g. ``"alpha=0.1,gamma=1.0"`` (``"-"`` for none)."""
    return ",".join(f"{k}={point[k]}" for k in sorted(keys) if k in point) or "-"


def data_version(config: dict) -> Any:
    """A run config's data version (as a dict): the split of a UCI table, else the data seed."""
    return config.get("split") if config.get("dataset") in UCI_SETS else config.get("data_seed", config.get("split"))


def _version(cfg) -> Any:
    return data_version(cfg.to_dict())


def _require(table: dict, key: str, kind: type, where: str):
    if key not in table:
        raise ValueError(f"{where}: missing key {key!r}")
    return _typed(table, key, kind, where, None)


def _typed(table: dict, key: str, kind: type | tuple, where: str, default):
    """``table[key]`` (or ``default``), which must be a ``kind``; bools are not numbers."""
    value = table.get(key, default)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if value is default and default is not None:
        return value
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join({dict: "table", list: "list", str: "string", int: "integer"}.get(k, k.__name__) for k in kinds)
        raise ValueError(f"{where}: {key}={value!r} should be a {names}")
    return value


def _list_of(table: dict, key: str, kind: type, where: str, default=None, *, low: int | None = None) -> list:
    values = _require(table, key, list, where) if default is None else _typed(table, key, list, where, default)
    for i, v in enumerate(values):
        if not isinstance(v, kind) or isinstance(v, bool) or (low is not None and v < low):
            what = {str: "a string", int: "an integer" + (f" ≥ {low}" if low is not None else "")}[kind]
            raise ValueError(f"{where}: {key}[{i}]={v!r} should be {what}")
    return values


def parse_experiment(data: dict, source: Path) -> Experiment:
    """Validate a loaded TOML table; every error is one line naming the file and the key."""
    where = str(source)
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a TOML table at the top")
    kind = _typed(data, "kind", str, where, "unsupervised")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind={kind!r}, expected one of {KINDS}")
    fields_allowed = M2_FIELDS if kind == "m2" else RUN_FIELDS
    data_table = _require(data, "data", dict, where)
    datasets = _list_of(data_table, "datasets", str, where + " [data]")
    versions = _list_of(data_table, "versions", int, where + " [data]", low=0)
    if not datasets or not versions:
        raise ValueError(f"{where} [data]: datasets and versions must not be empty")
    methods = []
    method_list = _require(data, "methods", list, where)
    if not method_list:
        raise ValueError(f"{where}: methods must not be empty")
    for i, m in enumerate(method_list):
        at = f"{where} methods[{i}]"
        if not isinstance(m, dict):
            raise ValueError(f"{at}: expected a table ([[methods]]), found {m!r}")
        name = _require(m, "name", str, at)
        grid = _typed(m, "grid", dict, f"{at} ({name})", {})
        if not all(isinstance(v, list) and v for v in grid.values()):
            raise ValueError(f"{at} ({name}): every grid entry must be a non-empty list")
        methods.append(MethodSpec(name, grid, _typed(m, "fixed", dict, f"{at} ({name})", {}),
                                  _typed(m, "label", str, f"{at} ({name})", "")))
    select = _typed(data, "select", dict, where, {})
    mode = _typed(select, "mode", str, where + " [select]", "max")
    if mode not in ("max", "min"):
        raise ValueError(f"{where}: select.mode={mode!r}, expected 'max' or 'min'")
    train = _typed(data, "train", dict, where, {})
    unknown = sorted(set(train) - fields_allowed)
    if unknown:
        raise ValueError(f"{where}: train.{unknown[0]} is not a run setting; expected some of {sorted(fields_allowed)}")
    report = _typed(data, "report", dict, where, {})
    quick = _typed(data, "quick", dict, where, {})
    if "versions" in quick and not _list_of(quick, "versions", int, where + " [quick]", [], low=0):
        raise ValueError(f"{where} [quick]: versions=[] would run nothing; list at least one version or leave it out "
                         f"(default: the first of [data] versions)")
    quick_train = _typed(quick, "train", dict, where + " [quick]", {})
    unknown = sorted(set(quick_train) - fields_allowed)
    if unknown:
        raise ValueError(f"{where}: quick.train.{unknown[0]} is not a run setting")
    if _typed(quick, "grid", str, where + " [quick]", "first") not in ("first", "all"):
        raise ValueError(f"{where}: quick.grid={quick['grid']!r}, expected 'first' or 'all'")
    reduced = _parse_reduced(data, where, fields_allowed, datasets, versions, methods)
    return Experiment(
        name=_require(data, "name", str, where),
        title=_typed(data, "title", str, where, ""),
        paper=_typed(data, "paper", str, where, ""),
        reference=_typed(data, "reference", str, where, ""),
        kind=kind,
        datasets=datasets,
        versions=versions,
        train=train,
        methods=methods,
        select_metric=_typed(select, "metric", str, where + " [select]", "val_objective"),
        select_mode=mode,
        select_fallback=_list_of(select, "fallback", str, where + " [select]", []),
        metrics=_list_of(report, "metrics", str, where + " [report]", ["test_loglik"]),
        split_by=_list_of(report, "split_by", str, where + " [report]", []),
        paper_values=_typed(data, "paper_values", dict, where, {}),
        quick=quick,
        notes=_typed(data, "notes", str, where, ""),
        figures=_typed(data, "figures", dict, where, {}),
        source=source,
        reduced=reduced,
    )


def _parse_reduced(data: dict, where: str, fields_allowed: set, datasets: list[str], versions: list[int],
                   methods: list[MethodSpec]) -> dict:
    """The ``[reduced]`` section, checked: every key names what it changes, every reduction is stated."""
    at = where + " [reduced]"
    reduced = _typed(data, "reduced", dict, where, {})
    if not reduced:
        return {}
    unknown = sorted(set(reduced) - {"reductions", "datasets", "versions", "train", "grid", "search_versions", "select"})
    if unknown:
        raise ValueError(f"{at}: {unknown[0]!r} is not a key; expected reductions, datasets, versions, train, grid, "
                         "search_versions, select")
    select = _typed(reduced, "select", dict, at, {})
    if set(select) - {"metric", "mode", "fallback"}:
        raise ValueError(f"{at}: select.{sorted(set(select) - {'metric', 'mode', 'fallback'})[0]} is not a key; "
                         "expected metric, mode, fallback")
    if not isinstance(select.get("metric", ""), str) or select.get("mode", "min") not in ("min", "max"):
        raise ValueError(f"{at}: select = {select!r}: metric must be a metric name and mode 'min' or 'max'")
    _list_of(select, "fallback", str, at + " select", [])
    if not _list_of(reduced, "reductions", str, at):
        raise ValueError(f"{at}: reductions must list what the protocol changes against the paper's")
    run_versions = _list_of(reduced, "versions", int, at, versions, low=0)
    subset = _list_of(reduced, "datasets", str, at, datasets)
    if not subset or any(d not in datasets for d in subset):
        raise ValueError(f"{at}: datasets={subset} must be a non-empty subset of {datasets}")
    unknown = sorted(set(_typed(reduced, "train", dict, at, {})) - fields_allowed)
    if unknown:
        raise ValueError(f"{at}: train.{unknown[0]} is not a run setting")
    labels = {m.column: m for m in methods}
    for label, grid in _typed(reduced, "grid", dict, at, {}).items():
        if label not in labels:
            raise ValueError(f"{at}: grid.{label} names no method; expected one of {sorted(labels)}")
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise ValueError(f"{at}: grid.{label} must be a table of non-empty lists")
    search = _list_of(reduced, "search_versions", int, at, [], low=0)
    if any(v not in run_versions for v in search):
        raise ValueError(f"{at}: search_versions={search} must be among the versions {run_versions}")
    return reduced


def checked_runs(experiment: Experiment, quick: bool = False, device: str | None = None) -> list:
    """Every run of the sweep, each validated: a ValueError names the file, the run and the setting.

    Returns the configs (RunConfig or M2Config) in sweep order.
    """
    from pyro_vae.reproduce.sweep import _label

    try:
        configs = experiment.runs(quick=quick, device=device)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{experiment.source}: {err}") from None
    for cfg in configs:
        try:
            cfg.validate()
        except (TypeError, ValueError) as err:
            if str(err).startswith("device=") and device is not None:
                raise ValueError(f"--device {device!r}: {str(err).partition(': ')[2]}") from None
            try:
                label = _label(cfg)
            except Exception:
                label = str(cfg.dataset)
            raise ValueError(f"{experiment.source}: run {label}: {err}") from None
    return configs


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
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from None
    return parse_experiment(data, path)
