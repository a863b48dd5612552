"""pyro-vae posterior / decompose: JSON contracts, flags, plots and errors."""

import json

import pytest

from pyro_vae.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_posterior_quadrature_bimodal_absolute_value(capsys, tmp_path):
    png, nc = tmp_path / "post.png", tmp_path / "post.nc"
    code, out, _ = _run(capsys, "posterior", "absolute_value", "--x", "0.8,0.8", "--method", "quadrature",
                        "--json", "--plot", str(png), "--samples", "50", "--save-idata", str(nc))
    assert code == 0
    summary = json.loads(out)
    assert summary["method"] == "quadrature" and summary["wrote"] == [str(png), str(nc)]
    [point] = summary["points"]
    truth = point["truth"]
    assert truth["label"] == "true model: absolute_value" and truth["method"] == "quadrature"
    # two symmetric modes at ±z*: the mean sits between them, the sd is the modes' distance
    assert abs(truth["mean"][0]) < 1e-6 and truth["sd"][0] > 1.0
    assert truth["ok"] is True and truth["r_hat"] is None and truth["ess_bulk"] is None
    assert "model" not in point and "guide" not in point
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import arviz as az

    idata = az.from_netcdf(str(nc))
    assert idata.posterior["z_truth"].shape == (4, 50, 1, 1)  # chains × draws × points × K (grid draws)
    assert json.loads(idata.posterior.attrs["summary"])["points"][0]["truth"]["mean"] == truth["mean"]


def test_posterior_text_shows_what_json_shows(capsys):
    argv = ["posterior", "circle", "--x=-1,0", "--method", "quadrature"]
    code, text, _ = _run(capsys, *argv)
    code_json, out, _ = _run(capsys, *argv, "--json")
    assert code == code_json == 0
    truth = json.loads(out)["points"][0]["truth"]
    for key, value in truth.items():
        assert f"{key}: " in text, key
        if isinstance(value, str):
            assert value in text
    assert f"{truth['log_marginal']:.6g}" in text


def test_posterior_nuts_short_single_chain_is_flagged(capsys):
    code, out, _ = _run(capsys, "posterior", "circle", "--x=-1,0", "--chains", "1", "--warmup", "30",
                        "--samples", "30", "--json")
    assert code == 0
    [point] = json.loads(out)["points"]
    point = point["truth"]
    assert point["ok"] is False and point["reasons"]
    assert point["ess_bulk"] is not None  # (R-hat is undefined, null, for one chain)
    assert any("chain" in r for r in point["reasons"])


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["posterior", "circle", "--x", "1,2,3"], "--x '1,2,3'"),
        (["posterior", "circle", "--x", "a,b"], "--x 'a,b'"),
        (["posterior", "circle", "--x", "1,0", "--method", "mcmc"], "--method: invalid choice: 'mcmc'"),
        (["posterior", "circle", "--x", "1,0", "--plot", "p.pdf"], "--plot 'p.pdf'"),
        (["posterior", "circle", "--x", "1,0", "--save-idata", "p.json"], "--save-idata 'p.json'"),
        (["posterior", "circle"], "--x"),
        (["posterior", "circle", "--x", "1,0", "--run", "/nonexistent/run"], "/nonexistent/run"),
    ],
)
def test_posterior_bad_input(capsys, argv, needle):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and needle in err


def test_decompose_linear_jte_closed_form_matches_the_paper(capsys):
    code, out, _ = _run(capsys, "decompose", "linear_jte", "--json")
    parts = json.loads(out)
    assert code == 0
    assert parts["mleo"] == 0.0
    assert abs(parts["pmo"] - 0.532) < 5e-4  # 000 Section 1 / 004 Section 5.2: L(θ_GT, φ_GT) = 0.532
    assert abs(-parts["elbo"] - (parts["data_entropy"] + parts["pmo"])) < 1e-9
