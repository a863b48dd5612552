"""LiBI against the VAE at 000's full-batch protocol on LinearJTE and CubicJTE (000 Table 1).

``run`` trains one configuration with the command line a user types,
``pyro-vae train DATASET --method {libi,vae} --epochs E --batch-size 500 --lr 0.01 --restarts 2
--seed S``, reloads the selected restart and appends one JSON line to ``--record`` with

* ``mleo``: KL(p_data ‖ p_θ) — closed form for LinearJTE (000 App. C.2); for CubicJTE the mean of
  ``log p_data(x) − log p_θ(x)`` over the 500 test points, both by the quadrature of
  :mod:`pyro_vae.metrics.cholesky_quadrature` (the pipeline's z-space grid does not converge
  on CubicJTE);
* ``test_ll_exact``: the mean exact ``log p_θ(x)`` on the test points (closed form /
  that quadrature) and ``true_ll`` the truth's;
* the pipeline's own metrics (``test_loglik``: importance sampling, Eq. 48 of 000;
  ``smooth_knn``), the wall and CPU seconds and the load average.

``table`` prints mean ± standard error over the seeds of every (data set, method).

Usage::

    python bench/libi_vs_vae.py run --dataset linear_jte --method libi --seed 0 --record out.jsonl
    python bench/libi_vs_vae.py table out.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import tempfile
import time
from collections import defaultdict

import torch

from pyro_vae.cli.main import main as cli_main
from pyro_vae.metrics.cholesky_quadrature import family_log_marginal
from pyro_vae.metrics.linear_gaussian import linear_gaussian_params, mleo
from pyro_vae.pipeline import load_trained

PAPER = {  # 000 Table 1, Test-LL mean ± std over data sets
    ("linear_jte", "libi"): "-2.99 ± 0.03", ("linear_jte", "vae"): "-3.15 ± 0.04",
    ("cubic_jte", "libi"): "-8.90 ± 3.98", ("cubic_jte", "vae"): "-5.85 ± 0.63",
}


def run(args) -> None:
    runs = args.runs or tempfile.mkdtemp(prefix="libi_vs_vae_")
    argv = ["train", args.dataset, "--method", args.method, "--epochs", str(args.epochs), "--batch-size", "500",
            "--lr", "0.01", "--restarts", "2", "--seed", str(args.seed), "--out", runs, "--json", "--quiet"]
    argv += [item for kv in args.option for item in ("--option", kv)]
    start, cpu = time.time(), time.process_time()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(argv)
    wall, cpu = time.time() - start, time.process_time() - cpu
    row = {"dataset": args.dataset, "method": args.method, "seed": args.seed, "epochs": args.epochs,
           "argv": "pyro-vae " + " ".join(argv), "exit": code, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
           "load": os.getloadavg()}
    if code == 0:
        summary = json.loads(out.getvalue())
        _, ds, model, _, metrics = load_trained(summary["run_dir"])
        x = ds.splits(0).test.x
        truth = ds.marginal()
        if truth is not None:
            params = linear_gaussian_params(model)
            kl = float(mleo(params, truth.loc, truth.covariance_matrix))
            cov = params.W @ params.W.T + torch.diag(params.psi)
            ll = torch.distributions.MultivariateNormal(params.b, cov).log_prob(x.double())
            true_ll = truth.log_prob(x.double())
            change = 0.0
        else:
            fit, ref = family_log_marginal(model, x), family_log_marginal(ds, x)
            ll, true_ll = fit.log_marginal, ref.log_marginal
            kl = float((true_ll - ll).mean())
            change = max(fit.max_change, ref.max_change)
        row.update({"mleo": kl, "test_ll_exact": float(ll.mean()), "true_ll": float(true_ll.mean()),
                    "quadrature_change": change, "test_loglik_is": metrics.get("test_loglik"),
                    "pipeline_mleo": metrics.get("mleo"), "smooth_knn": metrics.get("smooth_knn"),
                    "run_dir": summary["run_dir"]})
    else:
        row["error"] = out.getvalue()[-2000:]
    with open(args.record, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def _mean_se(values: list[float]) -> str:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return f"{mean:.4g}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return f"{mean:.4g} ± {sd / math.sqrt(n):.2g}"


def table(args) -> None:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for line in open(args.record):
        row = json.loads(line)
        groups[(row["dataset"], row["method"], row["epochs"])].append(row)
    print("| data set | method | epochs | seeds | failed | MLEO (nats) | exact test LL | truth's test LL | IS test LL "
          "| smooth kNN | 000 Table 1 Test-LL |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (dataset, method, epochs), rows in sorted(groups.items()):
        ok = [r for r in rows if r["exit"] == 0]
        cells = [_mean_se([r[k] for r in ok]) if ok else "-" for k in
                 ("mleo", "test_ll_exact", "true_ll", "test_loglik_is", "smooth_knn")]
        seeds = ",".join(str(r["seed"]) for r in rows)
        print(f"| {dataset} | {method} | {epochs} | {seeds} | {len(rows) - len(ok)} | " + " | ".join(cells)
              + f" | {PAPER.get((dataset, method), '-')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("run")
    p.add_argument("--dataset", required=True, choices=("linear_jte", "cubic_jte"))
    p.add_argument("--method", required=True, choices=("libi", "vae"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2000)
    p.add_argument("--option", action="append", default=[], help="KEY=VALUE passed as --option")
    p.add_argument("--runs", default=None, help="run store folder (default: a temporary one)")
    p.add_argument("--record", required=True)
    t = sub.add_parser("table")
    t.add_argument("record")
    args = parser.parse_args()
    torch.set_num_threads(1)
    (run if args.mode == "run" else table)(args)


if __name__ == "__main__":
    main()
