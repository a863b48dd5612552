import os
import sys

import pyro
from hypothesis import settings as _hypothesis_settings
import pytest
import torch

# Property tests draw their examples from a fixed seed (derandomize): every run, here and in CI, checks the same
# inputs, so a failure reproduces and a green suite stays green; new examples come from changing the strategies.
_hypothesis_settings.register_profile("seeded", derandomize=True)
_hypothesis_settings.load_profile("seeded")

sys.path.insert(0, os.path.dirname(__file__))  # tests/common.py

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _pyro_state():
    """Each test starts seeded, with an empty param store and Pyro validation on."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()
