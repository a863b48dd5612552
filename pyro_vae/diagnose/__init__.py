"""004 §9 (and 000's PMO) as checks on a user's data and model: verdicts with their evidence.

>>> from pyro_vae.diagnose import diagnose
>>> report = diagnose(model, guide, x_heldout, x_train=x_train)   # any Pyro model + guide
>>> print(report.text())

The command line: ``pyro-vae fit-data FILE`` (train a VAE on your data, stored as a run) and
``pyro-vae diagnose RUN [--data FILE] [--latent-dims 1,2,3] [--json] [--plot FILE.png]``.
Modules: :mod:`.probe` (reading any model and guide), :mod:`.marginal` (log p_θ(x)),
:mod:`.posterior`, :mod:`.noise`, :mod:`.latent` (the statistics), :mod:`.checks` (thresholds,
sections, verdicts, advice), :mod:`.report`, :mod:`.api` (``diagnose``), :mod:`.data` and
:mod:`.fit` (runs and files for the command line).
"""

from pyro_vae.diagnose.api import CHECKS, diagnose
from pyro_vae.diagnose.checks import Thresholds
from pyro_vae.diagnose.report import Check, Report

__all__ = ["CHECKS", "Check", "Report", "Thresholds", "diagnose"]
