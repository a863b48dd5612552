"""The run store: a SQLite index plus one folder per run, each result stored with how it was made.

>>> store = RunStore("runs")                                   # doctest: +SKIP
>>> with store.start(config) as run:                           # doctest: +SKIP
...     run.write_history(rows); run.save_params(state); run.finish(metrics)
>>> store.finished(config).metrics                             # doctest: +SKIP
"""

from pyro_vae.runs.index import INDEX_NAME, STATUSES, RunIndexError, RunRecord
from pyro_vae.runs.load import LoadedRun, RunDirError, evaluable_config, load_run, update_metrics
from pyro_vae.provenance import provenance_record
from pyro_vae.runs.store import Run, RunStore, config_hash

__all__ = [
    "INDEX_NAME",
    "STATUSES",
    "LoadedRun",
    "Run",
    "RunDirError",
    "RunIndexError",
    "RunRecord",
    "RunStore",
    "config_hash",
    "evaluable_config",
    "load_run",
    "provenance_record",
    "update_metrics",
]
