"""Training: the SVI loop and the variational objectives."""

from pyro_vae.inference.objectives import VariationalObjective, bound, log_weights
from pyro_vae.inference.svi import TrainingError, TrainResult, resolve_device, train, validation_objective

__all__ = [
    "TrainResult",
    "TrainingError",
    "VariationalObjective",
    "bound",
    "log_weights",
    "resolve_device",
    "train",
    "validation_objective",
]
from pyro_vae.inference import lagging as _lagging  # noqa: E402,F401  registers --method lin, lin_segments
from pyro_vae.inference import libi as _libi  # noqa: E402,F401  registers --method libi
