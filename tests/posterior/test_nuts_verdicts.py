"""A NUTS reference that fails its diagnostics cannot be missed: digits, banner, JSON, hatched panel."""

import torch

from pyro_vae.datasets import get_dataset
from pyro_vae.posterior.nuts import NUTSResult, check_diagnostics, format_against


def test_printed_values_keep_enough_digits_to_agree_with_the_threshold():
    assert format_against(1.01002, 1.01) == "1.01002"
    assert format_against(1.0099999, 1.01) == "1.0099999"
    assert format_against(1.745, 1.01) == "1.745"
    assert format_against(399.99, 400) == "399.99"
    assert format_against(float("nan"), 1.01) == "nan"
    diag = {"num_chains": 4, "r_hat": [1.01002], "ess_bulk": [900.0], "ess_tail": [900.0], "divergences": 0}
    ok, reasons, _ = check_diagnostics(diag)
    assert not ok and reasons == ["R-hat 1.01002 > 1.01"]


def _result(ok: bool, reasons: list) -> NUTSResult:
    samples = torch.randn(4, 50, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    diagnostics = {"r_hat": [1.745 if not ok else 1.001], "ess_bulk": [6.0 if not ok else 900.0],
                   "ess_tail": [9.0], "divergences": 0, "num_chains": 4, "num_samples": 50,
                   "thresholds": {"max_rhat": 1.01, "min_ess_bulk": 400.0, "min_ess_tail": 400.0}}
    return NUTSResult(samples, None, ok, reasons, diagnostics, {})


def test_a_failed_reference_is_printed_unmissably(capsys, monkeypatch):
    import pyro_vae.posterior.nuts as nuts

    failed = _result(False, ["R-hat 1.745 > 1.01", "ess bulk 6 < 400"])
    monkeypatch.setattr(nuts, "nuts_posteriors", lambda *a, **k: [_result(True, []), failed])
    from pyro_vae.cli import main

    assert main(["posterior", "figure8", "--x", "0.3,0.1", "--x", "-0.5,0.3"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("x=0.3,0.1: ") and lines[0].endswith(" ok") and "R-hat 1.001 ≤ 1.01" in lines[0]
    assert lines[1].startswith("!!! FAILED REFERENCE x=-0.5,0.3: R-hat 1.745 > 1.01; ess bulk 6 < 400")
    assert "R-hat 1.745 > 1.01, bulk ESS 6 < 400" in lines[2]
    assert err.count("\n") == 1 and "1 of 2 reference posterior(s) FAILED" in err
    assert main(["posterior", "figure8", "--x", "0.3,0.1", "--x", "-0.5,0.3", "--json"]) == 0
    point = __import__("json").loads(capsys.readouterr().out)["points"][1]
    assert point["ok"] is False and point["reasons"] == ["R-hat 1.745 > 1.01", "ess bulk 6 < 400"]


def test_a_failed_reference_is_hatched_and_labelled_in_the_panel():
    from pyro_vae.plots import posterior_panel

    x = torch.tensor([[0.3, 0.1], [-0.5, 0.3]])
    fig = posterior_panel(get_dataset("figure8"), x, method="nuts",
                          nuts=[_result(True, []), _result(False, ["R-hat 1.745 > 1.01"])])
    good, bad = fig.axes[0], fig.axes[1]
    assert "NOT OK" in bad.get_title() and "NOT OK" not in good.get_title()
    assert any("FAILED DIAGNOSTICS" in t.get_text() and "R-hat 1.745" in t.get_text() for t in bad.texts)
    assert any(p.get_hatch() == "///" for p in bad.patches) and not any(p.get_hatch() for p in good.patches)
    import matplotlib.pyplot as plt

    plt.close(fig)
