"""Metrics of the papers, as pure functions of samples, densities and models.

Inputs may be NumPy arrays or torch tensors.
"""

from .aggregate import AggregatePosterior, aggregate_posterior
from .mutual_info import mutual_info_gaussian_encoder, mutual_info_ksg, mutual_info_per_dim
from .noise import elbo_noise_var, optimal_noise_var
from .normality import HenzeZirkler, henze_zirkler, henze_zirkler_penalty, henze_zirkler_torch
from .smooth_knn import SmoothKNNResult, smooth_knn_marginals, smooth_knn_statistic, smooth_knn_test

__all__ = [
    "AggregatePosterior",
    "HenzeZirkler",
    "SmoothKNNResult",
    "aggregate_posterior",
    "elbo_noise_var",
    "henze_zirkler",
    "henze_zirkler_penalty",
    "henze_zirkler_torch",
    "mutual_info_gaussian_encoder",
    "mutual_info_ksg",
    "mutual_info_per_dim",
    "optimal_noise_var",
    "smooth_knn_marginals",
    "smooth_knn_statistic",
    "smooth_knn_test",
]
