"""examples/: a Student-t guide through Python, the CLI (restarts, fresh-process evaluate / posterior /
decompose), a sweep config and its report — at tiny sizes."""

import json
import math
from pathlib import Path

import pytest

from pyro_vae.cli import main

from posterior.test_posterior_run import ROOT, run_cli

SPEC = "examples.student_t_guide:StudentTGuide"


@pytest.mark.slow
def test_the_student_t_example_from_python():
    from examples.student_t_guide import main as example

    out = example(["--epochs", "1", "--restarts", "2", "--eval-samples", "50"])
    assert out["best_restart"] in (0, 1) and len(set(out["val_objective_per_restart"])) == 2
    assert out["proposal"].startswith("guide as it is") and out["mutual_info_method"] == "monte_carlo"
    assert math.isfinite(out["test_loglik"]) and out["df"] > 1


@pytest.mark.slow
def test_the_student_t_example_from_the_command_line(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "figure8", "--guide", SPEC, "--restarts", "3", "--epochs", "1", "--batch-size", "500",
                 "--hidden", "8", "--eval-samples", "50", "--out", str(runs), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    run, m = summary["run_dir"], summary["metrics"]
    assert json.loads((Path(run) / "config.json").read_text())["guide"] == SPEC
    assert len(set(m["val_objective_per_restart"])) == 3, "three independent restarts"
    assert m["mutual_info_method"] == "monte_carlo" and m["test_loglik_proposal"].startswith("guide as it is")

    # every later command rebuilds the guide from config.json in a fresh process
    evaluated = run_cli("evaluate", run, "--json", "--eval-samples", "50")
    assert evaluated.returncode == 0, evaluated.stderr
    assert abs(json.loads(evaluated.stdout)["metrics"]["test_loglik"] - m["test_loglik"]) < 1e-6
    posterior = run_cli("posterior", "figure8", "--run", run, "--x", "0.5,0.3", "--method", "quadrature", "--json",
                        "--save-idata", str(tmp_path / "post.nc"))
    assert posterior.returncode == 0, posterior.stderr
    [point] = json.loads(posterior.stdout)["points"]
    guide = point["guide"]
    assert guide["label"] == f"q(z|x): guide {SPEC}" and guide["moments"] == "monte_carlo"
    for role in ("model", "truth"):
        kl = guide[f"kl_to_{role}"]
        assert kl["kl_q_p_method"] == "monte_carlo" and kl["kl_q_p"] > -4 * kl["kl_q_p_se"] and kl["kl_p_q"] >= 0
    import arviz as az

    idata = az.from_netcdf(str(tmp_path / "post.nc"))
    assert set(idata.posterior.data_vars) == {"z_truth", "z_model", "z_guide"}
    decomposed = run_cli("decompose", "figure8", "--run", run, "--json")
    assert decomposed.returncode == 0, decomposed.stderr
    parts = json.loads(decomposed.stdout)
    assert abs(-parts["elbo"] - (parts["data_entropy"] + parts["mleo"] + parts["pmo"])) < 1e-6


@pytest.mark.slow
def test_the_student_t_example_sweep(tmp_path, capsys):
    config = ROOT / "examples" / "student_t_sweep.toml"
    assert main(["reproduce", str(config), "--quick", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "student_t_example-quick"
    report = (folder / "report.md").read_text()
    for column in ("vae, mean-field q", "vae, Student-t q", "iwae, Student-t q"):
        assert column in report
    capsys.readouterr()
    assert main(["report", str(folder)]) == 0
    configs = [json.loads(p.read_text()) for p in (folder / "runs").glob("*/config.json")]
    assert sorted(c["guide"] for c in configs) == ["examples.student_t_guide:StudentTGuide"] * 2 + ["mean_field"]
