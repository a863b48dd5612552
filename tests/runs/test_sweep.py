"""Sweeps: expand a config, skip what is finished, survive a kill, report beside the paper."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pyro_vae.reproduce.experiments import load_experiment
from pyro_vae.reproduce.report import build_rows, to_csv, to_markdown
from pyro_vae.runs import RunStore
from pyro_vae.runs.lock import FolderBusyError, exclusive
from pyro_vae.reproduce.sweep import run_sweep, sweep_status

TINY = textwrap.dedent(
    """
    name = "tiny"
    title = "a tiny sweep"
    paper = "004"
    reference = "test"
    [data]
    datasets = ["circle"]
    versions = [0, 1]
    [train]
    restarts = 2
    epochs = 1
    eval_samples = 50
    hidden = [8]
    [[methods]]
    name = "vae"
    [[methods]]
    name = "iwae"
    grid = { particles = [2, 3] }
    [select]
    metric = "val_objective"
    [report]
    metrics = ["test_loglik", "smooth_knn"]
    [paper_values.test_loglik]
    circle = { vae = [-1.0, 0.5] }
    """
)


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return load_experiment(path)


def test_expansion_covers_versions_methods_and_grid(tiny):
    runs = tiny.runs()
    assert len(runs) == 2 * (1 + 2)
    assert {(c.method, c.options.get("particles", c.particles), c.data_seed) for c in runs} == {
        ("vae", 20, 0), ("vae", 20, 1), ("iwae", 2, 0), ("iwae", 3, 0), ("iwae", 2, 1), ("iwae", 3, 1)
    }


def test_sweep_skips_finished_runs_and_reports(tiny, tmp_path):
    runs_dir = tmp_path / "runs"
    first = run_sweep(tiny.runs(), runs_dir, progress=False)
    assert (first.total, first.skipped, first.ran, first.failed) == (6, 0, 6, [])
    again = run_sweep(tiny.runs(), runs_dir, progress=False)
    assert (again.skipped, again.ran) == (6, 0)
    assert len(RunStore(runs_dir).list()) == 6  # nothing repeated

    rows = build_rows(tiny, runs_dir)
    vae = next(r for r in rows if (r.method, r.metric) == ("vae", "test_loglik"))
    assert vae.versions == 2 and vae.paper_mean == -1.0
    assert vae.diff_in_paper_std == pytest.approx((vae.ours_mean + 1.0) / 0.5)
    iwae = [r for r in rows if r.method == "iwae"]
    assert {r.selected for r in iwae} <= {"particles=2", "particles=3"} and len({r.selected for r in iwae}) == 1
    md = to_markdown(tiny, rows)
    assert "| circle |" in md and "paper -1.000 ± 0.500" in md
    # a metric that some runs lack (e.g. an exact log-likelihood whose grid did not converge) counts only
    # the runs that have it, and the cell says so
    from pyro_vae.runs.load import update_metrics

    one = next(r for r in RunStore(runs_dir).list(status="finished") if r.config["method"] == "vae")
    update_metrics(one.run_dir, {"test_loglik": None})
    vae = next(r for r in build_rows(tiny, runs_dir) if (r.method, r.metric) == ("vae", "test_loglik"))
    assert (vae.versions, vae.runs) == (1, 2)
    assert "n=1 of 2 runs" in to_markdown(tiny, [vae])
    assert to_csv(tiny, rows).splitlines()[0].startswith("experiment,dataset,method,metric")

    from pyro_vae.reproduce.figures import experiment_figures

    written = experiment_figures(tiny, tmp_path)
    names = {p.name for p in written}
    assert {"circle_density.png", "circle_aggregate_posterior.png"} <= names
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)


@pytest.mark.slow
def test_sweep_with_a_process_pool(tiny, tmp_path):
    result = run_sweep(tiny.runs()[:2], tmp_path / "runs", workers=2, progress=False)
    assert result.ran == 2 and not result.failed
    assert sweep_status(tiny.runs()[:2], tmp_path / "runs")["finished"] == 2


@pytest.mark.slow
def test_killed_sweep_resumes_without_repeating(tiny, tmp_path):
    """Kill a sweep mid-way (SIGKILL), start it again: every run finished once, none repeated."""
    runs_dir = tmp_path / "runs"
    script = textwrap.dedent(
        f"""
        from pyro_vae.reproduce.experiments import load_experiment
        from pyro_vae.reproduce.sweep import run_sweep
        run_sweep(load_experiment({str(tiny.source)!r}).runs(), {str(runs_dir)!r}, progress=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if (runs_dir / "index.sqlite").exists() and len(RunStore(runs_dir).list(status="finished")) >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the first sweep did not finish two runs in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished_before = {r.config_hash for r in RunStore(runs_dir).list(status="finished")}
    assert 2 <= len(finished_before) < 6 or len(finished_before) == 6

    result = run_sweep(tiny.runs(), runs_dir, progress=False)
    assert result.skipped == len(finished_before) and result.ran == 6 - len(finished_before)
    records = RunStore(runs_dir).list(status="finished")
    hashes = [r.config_hash for r in records]
    assert len(hashes) == 6 == len(set(hashes))  # every config finished exactly once


def test_costly_groups_start_first(tiny, tmp_path):
    """Groups run longest first (LPT): IWAE S=3, then S=2, then the VAE (each grouped over 2 versions)."""
    order = []

    def execute(cfgs, root, threads):
        order.append({(c["method"], c["particles"] if c["method"] == "iwae" else None) for c in cfgs})
        return []

    result = run_sweep(tiny.runs(), tmp_path / "runs", progress=False, execute=execute)
    assert result.ran == 6 and not result.failed
    assert order == [{("iwae", 3)}, {("iwae", 2)}, {("vae", None)}]


def test_a_second_sweep_on_a_busy_folder_stops_before_any_work(tiny, tmp_path):
    """While a sweep holds the folder, another one raises at once, naming the folder and its holder."""
    runs_dir = tmp_path / "runs"
    calls = []

    def execute(cfgs, root, threads):
        calls.append(cfgs)
        return []

    with exclusive(runs_dir, "runs_dir"):
        with pytest.raises(FolderBusyError, match=rf"runs_dir='{runs_dir}': a sweep is already running .*pid {os.getpid()}"):
            run_sweep(tiny.runs(), runs_dir, progress=False, execute=execute)
    assert not calls and not (runs_dir / "index.sqlite").exists()
    assert run_sweep(tiny.runs(), runs_dir, progress=False, execute=execute).ran == 6  # free again


def test_the_sweep_lock_dies_with_its_holder(tmp_path):
    """A holder killed by SIGKILL leaves no lock behind: the kernel drops flock locks with the process."""
    script = textwrap.dedent(
        f"""
        import time
        from pyro_vae.runs.lock import exclusive
        with exclusive({str(tmp_path)!r}):
            print("locked", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(FolderBusyError, match=f"pid {proc.pid} on "):
            with exclusive(tmp_path):
                pass
    finally:
        proc.kill()
        proc.wait()
    with exclusive(tmp_path):  # taken at once
        pass


def test_a_sweep_into_a_file_names_it(tiny, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"runs_dir='.*afile': exists and is not a folder"):
        run_sweep(tiny.runs(), tmp_path / "afile", progress=False)
    assert (tmp_path / "afile").read_text() == "x"


def test_bad_sweep_arguments(tiny, tmp_path):
    with pytest.raises(ValueError, match="executor='slurm'"):
        run_sweep(tiny.runs(), tmp_path / "r", executor="slurm")
    with pytest.raises(ValueError, match="workers=0"):
        run_sweep(tiny.runs(), tmp_path / "r", workers=0)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_ray_executor(tiny, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'pyro-vae[ray]'")
    result = run_sweep(tiny.runs()[:2], tmp_path / "runs", executor="ray", workers=2, progress=False)
    assert result.ran == 2 and not result.failed
    assert len(RunStore(tmp_path / "runs").list(status="finished")) == 2


def test_paired_differences_pair_runs_by_data_version(tiny, tmp_path):
    from pyro_vae.reproduce.report import paired_differences

    run_sweep(tiny.runs(), tmp_path / "runs", progress=False)
    pairs = paired_differences(tiny, tmp_path / "runs")
    rows = build_rows(tiny, tmp_path / "runs")
    for p in pairs:
        assert p["versions"] == 2 and 0 <= p["a_lower_in"] <= 2
        a = next(r for r in rows if (r.dataset, r.method, r.metric) == (p["dataset"], p["a"], p["metric"]))
        b = next(r for r in rows if (r.dataset, r.method, r.metric) == (p["dataset"], p["b"], p["metric"]))
        assert abs(p["mean_diff"] - (a.ours_mean - b.ours_mean)) < 1e-9  # same versions: mean of differences
    assert {(p["a"], p["b"]) for p in pairs} == {("vae", "iwae")}
