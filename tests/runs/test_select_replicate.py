"""A stated reduced protocol (``[reduced]``, ``--reduced``) and select-then-replicate sweeps."""

import json
import textwrap

import pytest

from pyro_vae.cli.main import main
from pyro_vae.reproduce.experiments import load_experiment, point_label
from pyro_vae.reproduce.report import select_runs
from pyro_vae.runs import RunStore

TINY = textwrap.dedent(
    """
    name = "tiny_replicate"
    title = "select on version 0, replicate on 1 and 2"
    paper = "004"
    reference = "test"
    [data]
    datasets = ["circle", "figure8"]
    versions = [0, 1, 2, 3]
    [train]
    restarts = 1
    epochs = 1
    eval_samples = 50
    hidden = [8]
    [[methods]]
    name = "iwae"
    label = "IWAE"
    grid = { particles = [2, 3, 4] }
    [select]
    metric = "val_objective"
    [report]
    metrics = ["test_loglik"]
    [reduced]
    reductions = ["the grid searched on version 0 only", "versions 0-2 (paper: 0-3)", "S in {2, 3}", "circle only"]
    datasets = ["circle"]
    versions = [0, 1, 2]
    search_versions = [0]
    grid.IWAE = { particles = [2, 3] }
    """
)


def write(tmp_path, text: str):
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


@pytest.fixture
def tiny(tmp_path):
    return load_experiment(write(tmp_path, TINY))


def test_the_paper_protocol_ignores_the_reduced_section(tiny):
    assert tiny.protocol(reduced=False) is tiny
    assert len(tiny.runs()) == 2 * 4 * 3 and tiny.search_runs() == tiny.runs() and tiny.planned_runs() == 24


def test_reduced_protocol_narrows_the_grid_and_searches_on_version_0(tiny):
    reduced = tiny.protocol(reduced=True)
    assert reduced.reductions[:3] == ["the grid searched on version 0 only", "versions 0-2 (paper: 0-3)", "S in {2, 3}"]
    assert reduced.datasets == ["circle"]
    search = reduced.search_runs()
    assert sorted((c.particles, c.data_seed) for c in search) == [(2, 0), (3, 0)]
    # one selected point per (data set, column) on the 2 other versions
    assert reduced.planned_runs() == 2 + 2
    replicas = reduced.replicate_runs({("circle", "IWAE"): "particles=3"})
    assert sorted((c.particles, c.data_seed) for c in replicas) == [(3, 1), (3, 2)]
    assert reduced.replicate_runs({("circle", "IWAE"): "particles=9"}) == []


@pytest.mark.parametrize("section, message", [
    ('[reduced]\nversions = [0]\n', "reductions"),
    ('[reduced]\nreductions = []\n', "reductions must list"),
    ('[reduced]\nreductions = ["x"]\nsearch_versions = [5]\n', r"search_versions=\[5\] must be among"),
    ('[reduced]\nreductions = ["x"]\ngrid.VAE = { particles = [2] }\n', "grid.VAE names no method"),
    ('[reduced]\nreductions = ["x"]\ngrid.IWAE = { particles = [] }\n', "non-empty lists"),
    ('[reduced]\nreductions = ["x"]\ntrain = { epoch = 3 }\n', "train.epoch is not a run setting"),
    ('[reduced]\nreductions = ["x"]\nsearch = [0]\n', "'search' is not a key"),
    ('[reduced]\nreductions = ["x"]\ndatasets = ["moons"]\n', r"datasets=\['moons'\] must be a non-empty subset"),
    ('[reduced]\nreductions = ["x"]\nselect = { metric = "m", order = "min" }\n', "select.order is not a key"),
    ('[reduced]\nreductions = ["x"]\nselect = { metric = "m", mode = "low" }\n', "mode 'min' or 'max'"),
    ('[reduced]\nreductions = ["x"]\nselect = { metric = "m", fallback = "n" }\n', "fallback"),
])
def test_a_bad_reduced_section_is_one_clear_error(tmp_path, section, message):
    text = TINY.split("[reduced]")[0] + section
    with pytest.raises(ValueError, match=message):
        load_experiment(write(tmp_path, text))


def test_reduced_needs_a_reduced_section(tmp_path, capsys):
    text = TINY.split("[reduced]")[0]
    path = write(tmp_path, text)
    assert main(["reproduce", str(path), "--reduced", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "has no [reduced] section" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_quick_and_reduced_together_are_refused(tiny, tmp_path, capsys):
    assert main(["reproduce", str(tiny.source), "--reduced", "--quick", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "--quick and --reduced" in capsys.readouterr().err


def test_select_then_replicate_end_to_end(tiny, tmp_path, capsys):
    """The sweep searches the grid on version 0, selects by the rule on version 0's runs only,
    runs the selected point on the other versions, and states every reduction."""
    out, results = tmp_path / "out", tmp_path / "results"
    code = main(["reproduce", str(tiny.source), "--reduced", "--out", str(out), "--workers", "1", "--quiet",
                 "--no-figures", "--results", str(results)])
    assert code == 0
    folder = out / "tiny_replicate-reduced"
    records = RunStore(folder / "runs").list(status="finished")
    seen = sorted((r.config["options"].get("particles", r.config["particles"]), r.config["data_seed"])
                  for r in records)
    # the winner on version 0 by the validation objective, recomputed here from the store
    v0 = {r.config["particles"]: r.metrics["val_objective"] for r in records if r.config["data_seed"] == 0}
    winner = max(v0, key=v0.get)
    assert seen == sorted([(2, 0), (3, 0), (winner, 1), (winner, 2)])
    reduced = tiny.protocol(reduced=True)
    point, selected = select_runs(reduced, folder / "runs")[("circle", "IWAE")]
    assert point == point_label({"particles": winner}, ["particles"]) and len(selected) == 3
    report = (results / "report.md").read_text()
    assert "**Protocol reductions:** the grid searched on version 0 only" in report and "n=3" in report
    provenance = json.loads((results / "provenance.json").read_text())
    assert provenance["protocol"] == "reduced" and len(provenance["reductions"]) == 4
    assert provenance["runs"]["configs"] == 4 and provenance["runs"]["finished"] == 4
    # `pyro-vae report` on the folder rebuilds the same table (it reads the protocol from sweep.json)
    (folder / "report.md").unlink()
    assert main(["report", str(folder)]) == 0
    assert (folder / "report.md").read_text() == (results / "report.md").read_text()
    # a second call resumes: nothing runs again
    capsys.readouterr()
    assert main(["reproduce", str(tiny.source), "--reduced", "--out", str(out), "--workers", "1", "--quiet",
                 "--no-figures"]) == 0
    assert "ran 0, skipped 4" in capsys.readouterr().out


def test_reduced_select_replaces_the_selection_rule(tmp_path):
    text = TINY.replace('grid.IWAE = { particles = [2, 3] }', 'grid.IWAE = { particles = [2, 3] }\nselect = { metric = "test_loglik", mode = "min" }')
    exp = load_experiment(write(tmp_path, text))
    assert (exp.select_metric, exp.select_mode) == ("val_objective", "max")
    reduced = exp.protocol(reduced=True)
    assert (reduced.select_metric, reduced.select_mode) == ("test_loglik", "min")


def test_datasets_restricts_the_protocol_and_lists_it(tiny):
    paper = tiny.restrict(["figure8"])
    assert paper.datasets == ["figure8"] and {c.dataset for c in paper.runs()} == {"figure8"}
    assert paper.reductions == ["the data sets figure8 only (--datasets; this protocol has circle, figure8)"]
    assert tiny.restrict(None) is tiny and tiny.restrict(["figure8", "circle"]) is tiny  # all of them: no reduction
    with pytest.raises(ValueError, match=r"--datasets 'figure8,moons': moons is not a data set of this protocol"):
        tiny.restrict(["figure8", "moons"])
    with pytest.raises(ValueError, match="figure8 is not a data set"):
        tiny.protocol(reduced=True).restrict(["figure8"])  # the reduced protocol has circle only


def test_datasets_flag_runs_the_subset_and_report_keeps_it(tmp_path, capsys):
    text = TINY.split("[reduced]")[0].replace("versions = [0, 1, 2, 3]", "versions = [0]").replace(
        "grid = { particles = [2, 3, 4] }", "grid = { particles = [2] }")
    path, out = write(tmp_path, text), tmp_path / "out"
    assert main(["reproduce", str(path), "--datasets", "moons", "--out", str(out), "--quiet"]) == 2
    assert "--datasets 'moons'" in capsys.readouterr().err and not out.exists()  # refused before any write
    assert main(["reproduce", str(path), "--datasets", "figure8", "--out", str(out), "--workers", "1", "--quiet",
                 "--no-figures", "--results", str(tmp_path / "results")]) == 0
    folder = out / "tiny_replicate"
    assert [r.config["dataset"] for r in RunStore(folder / "runs").list(status="finished")] == ["figure8"]
    provenance = json.loads((tmp_path / "results" / "provenance.json").read_text())
    assert provenance["protocol"] == "reduced" and "figure8 only (--datasets" in provenance["reductions"][0]
    report = (folder / "report.md").read_text()
    assert "| figure8 |" in report and "| circle |" not in report
    (folder / "report.md").unlink()
    assert main(["report", str(folder)]) == 0
    assert (folder / "report.md").read_text() == report


def test_fallback_metric_selects_where_the_first_has_no_value(tiny, tmp_path):
    """``select.fallback``: a cell in which no point has the selection metric is selected by the
    first fallback metric some point has; a point without the metric loses to one with it."""
    from dataclasses import replace

    from pyro_vae.reproduce.experiments import resolved

    exp = replace(tiny.protocol(reduced=True), select_metric="exact", select_fallback=["is"], select_mode="max")

    def selected(values, folder, experiment=exp):
        store = RunStore(tmp_path / folder)
        for cfg in experiment.search_runs():
            with store.start(resolved(cfg).to_dict()) as run:
                run.finish(values[cfg.particles])
        return select_runs(experiment, tmp_path / folder)[("circle", "IWAE")][0]

    assert selected({2: {"is": 1.0}, 3: {"is": 2.0}}, "a") == "particles=3"  # no "exact": "is" decides
    assert selected({2: {"is": 1.0}, 3: {"is": 2.0}}, "b", replace(exp, select_mode="min")) == "particles=2"
    assert selected({2: {"exact": -5.0, "is": 1.0}, 3: {"is": 2.0}}, "c") == "particles=2"  # "exact" decides
    with pytest.warns(RuntimeWarning, match="no run has exact or none"):
        selected({2: {"is": 1.0}, 3: {"is": 2.0}}, "d", replace(exp, select_fallback=["none"]))
