"""Metrics of the papers, as pure functions of samples, densities and models.

Inputs may be NumPy arrays or torch tensors.
"""

from .aggregate import AggregatePosterior, aggregate_posterior
from .loglik import LogLikEstimate, exact_log_likelihood, grid_log_likelihood, importance_log_likelihood, true_log_likelihood
from .guidelines import ClassOverlap, ResidualNormality, class_overlap, residual_normality
from .mutual_info import EncoderMutualInfo, mutual_info_encoder, mutual_info_gaussian_encoder, mutual_info_ksg, mutual_info_per_dim
from .noise import elbo_noise_var, optimal_noise_var
from .normality import HenzeZirkler, henze_zirkler, henze_zirkler_penalty, henze_zirkler_torch
from .smooth_knn import SmoothKNNResult, smooth_knn_marginals, smooth_knn_statistic, smooth_knn_test

__all__ = [
    "AggregatePosterior",
    "ClassOverlap",
    "HenzeZirkler",
    "LogLikEstimate",
    "ResidualNormality",
    "SmoothKNNResult",
    "aggregate_posterior",
    "class_overlap",
    "elbo_noise_var",
    "exact_log_likelihood",
    "grid_log_likelihood",
    "henze_zirkler",
    "henze_zirkler_penalty",
    "henze_zirkler_torch",
    "importance_log_likelihood",
    "EncoderMutualInfo",
    "mutual_info_encoder",
    "mutual_info_gaussian_encoder",
    "mutual_info_ksg",
    "mutual_info_per_dim",
    "optimal_noise_var",
    "residual_normality",
    "smooth_knn_marginals",
    "smooth_knn_statistic",
    "smooth_knn_test",
    "true_log_likelihood",
]
