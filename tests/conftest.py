import os
import sys

import pyro
import pytest
import torch

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
