"""Metrics of the papers, as pure functions of samples, densities and models.

Inputs may be NumPy arrays or torch tensors.
"""

from .smooth_knn import SmoothKNNResult, smooth_knn_marginals, smooth_knn_statistic, smooth_knn_test

__all__ = [
    "SmoothKNNResult",
    "smooth_knn_marginals",
    "smooth_knn_statistic",
    "smooth_knn_test",
]
