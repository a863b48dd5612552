"""Wall time of each metric at the papers' sizes: 2000 test points, 20 repeats of 100 vs 100.

Run: ``.venv/bin/python bench/metrics_cost.py [--threads N]``. Prints one line per metric
(best of ``--repeat`` runs after one warm-up call).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from pyro_vae import metrics


def _decoder(latent_dim: int, data_dim: int, seed: int) -> torch.nn.Module:
    """The papers' synthetic-data decoder: leaky-ReLU MLP, 3 hidden layers of 50 (004 App. D)."""
    torch.manual_seed(seed)
    layers, width = [], latent_dim
    for _ in range(3):
        layers += [torch.nn.Linear(width, 50), torch.nn.LeakyReLU()]
        width = 50
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, data_dim)).requires_grad_(False)


def _time(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    n = 2000
    test_x = rng.normal(size=(n, 2))
    model_x = rng.normal(size=(n, 2)) + 0.1
    loc = rng.normal(size=(n, 2))
    scale = rng.uniform(0.1, 1.0, size=(n, 2))
    f = _decoder(2, 2, seed=0)
    f1 = _decoder(1, 2, seed=1)
    x_t = torch.tensor(test_x, dtype=torch.float32)
    labels = (test_x[:, 0] > 0).astype(int)
    codes = torch.tensor(rng.normal(size=(100, 2)), requires_grad=True)

    def hz_torch_backward():
        stat, _ = metrics.henze_zirkler_torch(torch.tensor(test_x, requires_grad=True))
        stat.backward()

    def penalty_backward():
        metrics.henze_zirkler_penalty(codes).backward()

    cases = [
        ("smooth_knn_statistic 100 vs 100, k=1", lambda: metrics.smooth_knn_statistic(test_x[:100], model_x[:100])),
        ("smooth_knn_statistic 100 vs 100, k=3", lambda: metrics.smooth_knn_statistic(test_x[:100], model_x[:100], k=3)),
        ("smooth_knn_statistic 100 vs 100, k=10", lambda: metrics.smooth_knn_statistic(test_x[:100], model_x[:100], k=10)),
        ("smooth_knn_test 20 x (100 vs 100), k=1", lambda: metrics.smooth_knn_test(test_x, model_x, 100, 20)),
        ("smooth_knn_test 20 x (100 vs 100), k=3", lambda: metrics.smooth_knn_test(test_x, model_x, 100, 20, k=3)),
        ("henze_zirkler numpy, 2000 x 2", lambda: metrics.henze_zirkler(test_x)),
        ("henze_zirkler numpy, 2000 x 5", lambda: metrics.henze_zirkler(rng.normal(size=(n, 5)))),
        ("henze_zirkler_torch fwd+bwd, 2000 x 2", hz_torch_backward),
        ("henze_zirkler_penalty fwd+bwd, batch 100 x 2", penalty_backward),
        ("mutual_info_gaussian_encoder N=2000 K=2 S=10", lambda: metrics.mutual_info_gaussian_encoder(loc, scale)),
        ("mutual_info_ksg N=2000, x 2-D, z 2-D", lambda: metrics.mutual_info_ksg(test_x, loc)),
        ("mutual_info_per_dim N=2000, x 2-D, K=2", lambda: metrics.mutual_info_per_dim(test_x, loc)),
        ("optimal_noise_var N=2000 S=100 (MLP f)", lambda: metrics.optimal_noise_var(x_t, f, loc, scale, 100)),
        ("aggregate_posterior N=2000 K=2", lambda: metrics.aggregate_posterior(loc, scale)),
        ("residual_normality N=2000 D=2 K=1 (MLP f)", lambda: metrics.residual_normality(x_t, f1, 1)),
        ("class_overlap N=2000 D=2 (hidden=16)", lambda: metrics.class_overlap(test_x, labels)),
    ]
    print(
        f"pyro-vae metrics cost: torch {torch.__version__}, {args.threads} thread(s) of {os.cpu_count()} cores, "
        f"{platform.machine()}, load average {os.getloadavg()[0]:.1f}"
    )
    per_stat = None
    for name, fn in cases:
        seconds = _time(fn, 1 if "residual" in name or "class" in name else args.repeat)
        if name == "smooth_knn_statistic 100 vs 100, k=1":
            per_stat = seconds
        print(f"{name:48s} {seconds * 1e3:10.1f} ms")
    if per_stat is not None:
        print(f"{'(000 App. E: 20000 repeats at k=1, extrapolated)':48s} {per_stat * 20000:10.1f} s")


if __name__ == "__main__":
    main()
