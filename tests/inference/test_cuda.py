"""Training and evaluation on CUDA (skipped without a GPU)."""

import pytest
import torch

from common import requires_cuda
from guides.mean_field import MeanFieldGuide
from pyro_vae.inference import train
from pyro_vae.models import build_vae_model
from pyro_vae.pipeline import RunConfig, train_and_evaluate

pytestmark = [pytest.mark.cuda, requires_cuda]


def test_batched_training_stays_on_cuda():
    x = torch.randn(300, 2, device="cuda")
    model = build_vae_model(1, 2, 0.01, hidden=(16,), num_restarts=3).cuda()
    guide = MeanFieldGuide(2, 1, hidden=(16,), num_restarts=3).cuda()
    res = train(model, guide, x, epochs=2, batch_size=100, progress=False, objective="iwae", num_particles=5)
    assert all(p.is_cuda for p in model.parameters())
    assert torch.isfinite(res.val_objective).all()


def test_pipeline_on_cuda(tmp_path):
    out = train_and_evaluate(RunConfig("circle", epochs=1, device="cuda", eval_samples=100, hidden=(8,)), tmp_path, progress=False)
    assert out["metrics"]["test_loglik_exact"] is not None
