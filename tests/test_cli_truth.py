"""pyro-vae posterior / decompose: JSON contracts, flags, plots and errors."""

import json

import pytest

from pyro_vae.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_posterior_quadrature_bimodal_absolute_value(capsys, tmp_path):
    png = tmp_path / "post.png"
    code, out, _ = _run(capsys, "posterior", "absolute_value", "--x", "0.8,0.8", "--method", "quadrature",
                        "--json", "--plot", str(png))
    assert code == 0
    summary = json.loads(out)
    assert summary["method"] == "quadrature"
    [point] = summary["points"]
    # two symmetric modes at ±z*: the mean sits between them, the sd is the modes' distance
    assert abs(point["mean"][0]) < 1e-6 and point["sd"][0] > 1.0
    assert point["ok"] is True and point["r_hat"] is None and point["ess_bulk"] is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_posterior_nuts_short_single_chain_is_flagged(capsys):
    code, out, _ = _run(capsys, "posterior", "circle", "--x=-1,0", "--chains", "1", "--warmup", "30",
                        "--samples", "30", "--json")
    assert code == 0
    [point] = json.loads(out)["points"]
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
