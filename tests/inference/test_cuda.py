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


def test_grouped_training_on_cuda_matches_the_cpu_selection_shape():
    from pyro_vae.inference.lagging import train_lagging

    xs = [torch.randn(200, 2, device="cuda") + v for v in range(3)]
    for fit, kw in ((train, dict(objective="iwae", num_particles=3)), (train_lagging, dict(max_inner_steps=3))):
        model = build_vae_model(1, 2, 0.01, hidden=(16,), num_restarts=6).cuda()
        guide = MeanFieldGuide(2, 1, hidden=(16,), num_restarts=6).cuda()
        res = fit(model, guide, xs, epochs=2, batch_size=50, seed=[0, 1, 2], group_restarts=[2, 2, 2],
                  progress=False, val_every=2, **kw)
        assert res.val_objective.shape == (6,) and torch.isfinite(res.val_objective).all()
        assert all(p.is_cuda for p in model.parameters())


def test_grouped_sweep_and_shared_artefacts_on_cuda(tmp_path):
    from pyro_vae.reproduce.groups import train_group

    configs = [RunConfig("circle", epochs=1, restarts=2, init="mixed", gt_fit_steps=300, device="cuda",
                         eval_samples=100, hidden=(8,), data_seed=v) for v in (0, 1)]
    out = train_group(configs, tmp_path, progress=False)
    assert [o["metrics"]["group_size"] for o in out] == [2, 2]
    assert all(o["metrics"]["test_loglik_exact"] is not None for o in out)
