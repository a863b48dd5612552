"""Metrics of the papers, as pure functions of samples, densities and models.

Inputs may be NumPy arrays or torch tensors.
"""

from .mutual_info import mutual_info_gaussian_encoder, mutual_info_ksg, mutual_info_per_dim
from .normality import HenzeZirkler, henze_zirkler, henze_zirkler_penalty, henze_zirkler_torch
from .smooth_knn import SmoothKNNResult, smooth_knn_marginals, smooth_knn_statistic, smooth_knn_test

__all__ = [
    "HenzeZirkler",
    "SmoothKNNResult",
    "henze_zirkler",
    "henze_zirkler_penalty",
    "henze_zirkler_torch",
    "mutual_info_gaussian_encoder",
    "mutual_info_ksg",
    "mutual_info_per_dim",
    "smooth_knn_marginals",
    "smooth_knn_statistic",
    "smooth_knn_test",
]
