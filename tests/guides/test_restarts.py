"""Any single guide as R independent restarts (guides.restarts), and what is refused."""

import copy

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import Adam

from common import assert_close
from guides.registry import build_guide
from guides.restarts import RestartBatch, batch_restarts
from pyro_vae.inference import train
from pyro_vae.inference.objectives import bound
from pyro_vae.models import build_vae_model
from pyro_vae.nets import select_restart

STUDENT_T = "examples.student_t_guide:StudentTGuide"


def _data(n=120, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g)
    return torch.cat([torch.cos(2 * z), torch.sin(3 * z)], -1) + 0.1 * torch.randn(n, 2, generator=g)


def _flat(module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


@pytest.mark.parametrize("objective,particles", [("elbo", 1), ("iwae", 3)])
def test_restarts_of_a_user_guide_are_independent_and_each_equals_its_single_run(objective, particles):
    """A guide named by import path, batched over 3 restarts: restart r follows exactly the single run
    of copy r (same initialisation, minibatches and random stream), and the restarts differ."""
    x = _data()
    torch.manual_seed(0)
    model = build_vae_model(1, 2, 0.05, hidden=(16,), num_restarts=3)
    guide = build_guide(STUDENT_T, 2, 1, hidden=(16,), num_restarts=3)
    assert isinstance(guide, RestartBatch) and guide.num_restarts == 3
    initial = [(select_restart(model, r), select_restart(guide, r)) for r in range(3)]
    kw = dict(objective=objective, num_particles=particles, epochs=2, batch_size=40, seed=7, progress=False, lr=3e-3)
    batched = train(model, guide, x, x[:60], **kw)
    starts = [_flat(g) for _, g in initial]
    ends = [_flat(select_restart(guide, r)) for r in range(3)]
    for r in range(3):
        for s in range(r):
            assert not torch.allclose(starts[r], starts[s]), "restarts start from different parameters"
            assert not torch.allclose(ends[r], ends[s]), "and end at different ones"
        single_model, single_copy = copy.deepcopy(initial[r])
        single_guide = RestartBatch([single_copy], restart_ids=[r])
        single = train(single_model, single_guide, x, x[:60], **kw)
        assert_close(_flat(single_guide.copies[0]), ends[r], rtol=1e-4, atol=1e-6, msg=f"restart {r}: guide")
        assert_close(_flat(single_model), _flat(select_restart(model, r)), rtol=1e-4, atol=1e-6,
                     msg=f"restart {r}: model")
        assert_close(single.val_objective[0], batched.val_objective[r], rtol=1e-4, msg=f"restart {r}: validation")
        assert not torch.allclose(starts[r], ends[r]), "training moved the guide"


def test_restart_batch_scores_each_restart_with_its_own_copy():
    """The stacked site's log-density is copy r's at restart r's draw (vectorised particles included)."""
    x = _data(10)
    torch.manual_seed(1)
    guide = batch_restarts(__import__("user_guides").LinearGuide, 3, 2, 1)
    with pyro.plate("particles", 4, dim=-3):
        tr = pyro.poutine.trace(guide).get_trace(x)
    site = tr.nodes["z"]
    assert site["value"].shape == (4, 3, 10, 1) and site["fn"].batch_shape == (4, 3, 10)
    frames = {f.name: f.dim for f in site["cond_indep_stack"]}
    assert frames == {"particles": -3, "restarts": -2, "data": -1}
    lp = site["fn"].log_prob(site["value"])
    for r, copy_r in enumerate(guide.copies):
        q = copy_r.net(x)
        ref = pyro.distributions.Normal(q[:, :1], torch.nn.functional.softplus(q[:, 1:]) + 1e-3).log_prob(
            site["value"][:, r]).sum(-1)
        assert_close(lp[:, r], ref, rtol=1e-6, atol=1e-6, msg=f"restart {r}")


def test_restarts_draw_independent_noise_and_leave_the_global_stream_alone():
    from user_guides import LinearGuide

    x = _data(50)
    torch.manual_seed(4)
    one = LinearGuide(2, 1)
    guide = RestartBatch([one, copy.deepcopy(one)])  # identical copies: only their streams differ
    pyro.set_rng_seed(5)
    z = guide(x)
    after_batch = torch.rand(())
    assert z.shape == (2, 50, 1) and not torch.allclose(z[0], z[1])
    pyro.set_rng_seed(5)
    again = guide(x)
    assert torch.equal(z, again), "the same seed gives the same draws"
    assert torch.equal(after_batch, torch.rand(())), "one global draw per call, whatever R and the guide draw"


def test_pyromodule_copies_keep_their_own_parameters():
    """PyroParams of one class would share the global param store by name; each copy keeps its own."""
    from user_guides import PyroGuide

    x = _data()
    torch.manual_seed(2)
    model = build_vae_model(1, 2, 0.05, hidden=(8,), num_restarts=3)
    guide = build_guide("user_guides:PyroGuide", 2, 1, num_restarts=3)
    before = [_flat(g) for g in guide.copies]
    assert not torch.allclose(before[0], before[1])
    train(model, guide, x, epochs=2, batch_size=40, progress=False, lr=1e-2)
    after = [_flat(g) for g in guide.copies]
    assert all(not torch.allclose(a, b) for a, b in zip(before, after))
    assert not torch.allclose(after[0], after[1]) and not torch.allclose(after[1], after[2])
    stored = list(pyro.get_param_store().keys())
    assert all(n.startswith("model$$$") for n in stored), f"the guide used the global param store: {stored}"
    single = build_guide("user_guides:PyroGuide", 2, 1)
    assert isinstance(single.guide, PyroGuide)  # wrapped to run with module-local parameters


def test_pyro_svi_trains_every_copy():
    """The copies' pyro.param sites are renamed per restart, so Pyro's own SVI optimises all of them."""
    x = _data()
    torch.manual_seed(3)
    model = build_vae_model(1, 2, 0.05, hidden=(8,), num_restarts=2)
    guide = batch_restarts(__import__("user_guides").LinearGuide, 2, 2, 1)
    before = [_flat(g) for g in guide.copies]
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=2))
    for _ in range(5):
        svi.step(x)
    names = set(pyro.get_param_store().keys())
    assert any(n.startswith("restart0/") for n in names) and any(n.startswith("restart1/") for n in names), names
    for b, g in zip(before, guide.copies):
        assert not torch.allclose(b, _flat(g))


def test_a_guide_shared_by_restarts_is_refused():
    from user_guides import LinearGuide

    x = _data()
    model = build_vae_model(1, 2, 0.05, hidden=(8,), num_restarts=3)
    with pytest.raises(ValueError, match="site 'z' is outside the plate 'restarts'.*batch_restarts"):
        train(model, LinearGuide(2, 1), x, epochs=1, batch_size=40, progress=False)
    before = _flat(model)
    with pytest.raises(ValueError, match="one guide would be shared by all 3 restarts"):
        train(model, LinearGuide(2, 1), x, epochs=1, batch_size=40, progress=False)
    assert torch.equal(before, _flat(model)), "refused before any work"


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("user_guides:function_factory", "not a torch.nn.Module: its pyro.param statements live in Pyro's global"),
        ("user_guides:same_module_factory", "returned the same LinearGuide object more than once"),
        ("user_guides:SharedLayerGuide", "share the parameter 'net.weight'"),
    ],
)
def test_guides_that_cannot_be_batched_are_refused(spec, needle):
    with pytest.raises(ValueError, match=needle):
        build_guide(spec, 2, 1, num_restarts=3)


def test_a_function_guide_is_refused_even_alone():
    with pytest.raises(ValueError, match="not a torch.nn.Module"):
        build_guide("user_guides:function_factory", 2, 1)


def test_autoguides_are_refused_with_what_to_use():
    model = build_vae_model(1, 2, 0.05, hidden=(8,))
    with pytest.raises(ValueError, match="AutoNormal is a Pyro AutoGuide.*amortised.*mean_field"):
        build_guide("pyro.infer.autoguide:AutoNormal", 2, 1)
    with pytest.raises(ValueError, match="AutoDiagonalNormal is a Pyro AutoGuide"):
        batch_restarts(pyro.infer.autoguide.AutoDiagonalNormal, 2, model)
    with pytest.raises(ValueError, match="not an amortised q\\(z \\| x\\)"):
        train(model, AutoNormal(model), _data(), epochs=1, batch_size=40, progress=False)


def test_identical_initialisations_are_warned_about():
    from user_guides import LinearGuide

    def zeros(obs_dim, latent_dim):
        g = LinearGuide(obs_dim, latent_dim)
        torch.nn.init.zeros_(g.net.weight), torch.nn.init.zeros_(g.net.bias)
        return g

    with pytest.warns(RuntimeWarning, match="start from identical parameters"):
        batch_restarts(zeros, 2, 2, 1)


def test_bound_of_a_restart_batch_has_one_row_per_restart():
    x = _data(12)
    model = build_vae_model(1, 2, 0.05, hidden=(8,), num_restarts=4)
    guide = build_guide(STUDENT_T, 2, 1, num_restarts=4)
    assert bound(model, guide, x, kind="iwae", num_particles=5).shape == (4, 12)


@pytest.mark.slow
def test_a_group_of_runs_trains_a_user_guide(tmp_path):
    """Runs grouped in one vectorised loop (data versions stacked by restart): each copy sees its own rows."""
    from pyro_vae.pipeline import RunConfig
    from pyro_vae.reproduce.groups import train_group
    from pyro_vae.runs import load_run

    configs = [RunConfig(dataset="circle", guide=STUDENT_T, restarts=2, epochs=1, eval_samples=50, hidden=(8,),
                         batch_size=500, data_seed=v) for v in (0, 1)]
    summaries = train_group(configs, tmp_path, progress=False)
    for summary in summaries:
        loaded = load_run(summary["run_dir"])
        assert loaded.metrics["group_size"] == 2 and loaded.config["guide"] == STUDENT_T
        assert len(set(loaded.metrics["val_objective_per_restart"])) == 2
