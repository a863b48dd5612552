"""Registry, shapes, determinism, splits, the Pyro model and gradients, for every data set."""

from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from common import assert_close, requires_cuda

from pyro_vae.datasets import Dataset, Splits, dataset_names, dataset_table, get_dataset

ALL = [
    "figure8", "circle", "absolute_value", "clusters", "spiral_dots", "figure8_5d", "clusters_5d",
    "variant1", "variant2", "variant3", "floor",
    "linear_jte", "cubic_jte", "gaussian", "mobius", "case1", "case2",
    "discrete_semicircle", "continuous_semicircle",
]
SEMI = {"discrete_semicircle", "continuous_semicircle"}
UCI = ["diabetic_retinopathy", "contraceptive", "titanic"]  # real tables: tests/m2/test_uci_loaders.py
# (K, D, prior, paper σ², per-dimension variance of x|z) with default parameters.
SPEC = {
    "figure8": (1, 2, "normal", 0.02, 0.02),
    "circle": (1, 2, "normal", 0.01, 0.01),
    "absolute_value": (1, 2, "normal", 0.01, 0.01),
    "clusters": (1, 2, "normal", 0.2, 0.2),
    "spiral_dots": (1, 2, "normal", 0.01, 0.01),
    "figure8_5d": (1, 5, "normal", 0.02, 0.02),
    "clusters_5d": (1, 5, "normal", 0.2, 0.2),
    "variant1": (1, 1, "uniform", 1e-3, 1e-3),
    "variant2": (1, 1, "uniform", 1e-3, 1e-3),
    "variant3": (1, 1, "uniform", 1e-3, 1e-3),
    "floor": (1, 1, "normal", 0.01, 0.01),
    "linear_jte": (2, 2, "normal", 0.01, 0.004),
    "cubic_jte": (2, 2, "normal", 0.01, 0.004),
    "gaussian": (2, 4, "normal", 1e-6, 1e-6),
    "mobius": (2, 2, "normal", 1e-5, 1e-5),
    "case1": (1, 1, "normal", 1.0, 1.0 - 0.81),
    "case2": (2, 2, "normal", 0.01, 0.004),
    "discrete_semicircle": (1, 2, "normal", 0.01, 0.01),
    "continuous_semicircle": (1, 2, "normal", 0.01, 0.01),
}
SIZES_004, SIZES_000 = (5000, 2000, 2000), (500, 500, 500)
FROM_000 = {"linear_jte", "cubic_jte", "gaussian", "mobius", "case1", "case2"}


def test_names_are_the_papers_sets():
    assert dataset_names() == ALL + UCI


def test_unknown_name_lists_allowed():
    with pytest.raises(ValueError, match=r"name='figure_8'.*'figure8'.*'case2'"):
        get_dataset("figure_8")


def test_unknown_parameter_is_named():
    with pytest.raises(ValueError, match=r"no parameter 'thetaa'.*'theta'"):
        get_dataset("case1", thetaa=0.1)
    with pytest.raises(ValueError, match="surrogate=True"):
        get_dataset("linear_jte", surrogate=True)
    assert get_dataset("linear_jte", surrogate=False).name == "linear_jte"


@pytest.mark.parametrize("theta, sigma2", [(-0.1, 1.0), (1.0, 1.0), (0.1, 0.01), (float("nan"), 1.0), ("a", 1.0)])
def test_case1_theta_outside_range(theta, sigma2):
    with pytest.raises(ValueError, match=r"theta=.*\[0, (1|0\.1)\)"):
        get_dataset("case1", theta=theta, sigma2=sigma2)


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("case1", {"sigma2": 0.0}, r"sigma2=0\.0.*\(0, inf\)"),
        ("case2", {"b_diag": (0.006, 0.01)}, r"b_diag\[1\]=0\.01.*\[0, 0\.01\)"),
        ("case2", {"b_diag": (0.006,)}, r"b_diag=.*2 numbers"),
        ("variant1", {"noise_var": -1.0}, r"noise_var=-1\.0"),
        ("floor", {"noise_var": 0}, r"noise_var=0"),
        ("discrete_semicircle", {"labelled_fraction": 1.5}, r"labelled_fraction=1\.5.*\[0, 1\]"),
        ("circle", {"surrogate_max_steps": 0}, r"surrogate_max_steps=0"),
    ],
)
def test_bad_parameters(name, params, match):
    with pytest.raises(ValueError, match=match):
        get_dataset(name, **params)


def test_case1_edges_accepted():
    assert get_dataset("case1", theta=0.0).obs_noise_var().item() == pytest.approx(1.0)
    assert get_dataset("case1", theta=0.05, sigma2=0.01).obs_noise_var().item() == pytest.approx(0.0075)


def test_table_rows():
    rows = dataset_table()
    assert [r["name"] for r in rows] == ALL + UCI
    for row in rows[: len(ALL)]:
        assert set(row) == {"name", "latent_dim", "obs_dim", "noise_var", "prior", "conditions", "paper"}
        k, d, prior, sigma2, _ = SPEC[row["name"]]
        assert (row["latent_dim"], row["obs_dim"], row["prior"]) == (k, d, prior)
        assert row["noise_var"] == pytest.approx(sigma2)
        assert row["paper"][:3] in {"000", "004"}
        assert row["conditions"] in {"1 and 2", "1 only", "2 only", "neither", "n/a"}


@pytest.mark.parametrize("name", ALL)
def test_attributes_and_noise(name):
    ds = get_dataset(name)
    assert isinstance(ds, Dataset) and ds.name == name
    k, d, prior, sigma2, obs_var = SPEC[name]
    assert (ds.latent_dim, ds.obs_dim, ds.prior) == (k, d, prior)
    assert ds.noise_var == pytest.approx(sigma2)
    assert ds.sizes == (SIZES_000 if name in FROM_000 else SIZES_004)
    v = ds.obs_noise_var()
    assert v.shape == (d,) and v.dtype == torch.float32
    assert_close(v, torch.full((d,), obs_var), rtol=1e-6, msg=name)
    assert ds.obs_noise_var(dtype=torch.float64).dtype == torch.float64
    p = ds.prior_distribution(torch.zeros((), dtype=torch.float64))
    assert p.event_shape == (k,) and p.batch_shape == () and p.sample().dtype == torch.float64


@pytest.mark.parametrize("name", ALL)
def test_sample_shapes_and_determinism(name):
    ds = get_dataset(name)
    k, d = ds.latent_dim, ds.obs_dim
    a, b, c = ds.sample(64, seed=3), ds.sample(64, seed=3), ds.sample(64, seed=4)
    assert len(a) == (3 if name in SEMI else 2)
    x, z = a[0], a[1]
    assert x.shape == (64, d) and z.shape == (64, k)
    assert all(t.dtype == torch.float32 for t in a) and torch.isfinite(x).all()
    for s, t in zip(a, b):
        assert torch.equal(s, t)
    assert not torch.equal(a[0], c[0])
    # sampling does not touch the global RNG
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    ds.sample(8, seed=0)
    assert torch.equal(torch.rand(1), before)


@pytest.mark.parametrize("name", ALL)
def test_splits(name):
    ds = get_dataset(name)
    s, again, other = ds.splits(seed=0), ds.splits(seed=0), ds.splits(seed=1)
    assert isinstance(s, Splits)
    for part, size in zip(s, ds.sizes):
        assert part.x.shape == (size, ds.obs_dim) and part.z.shape == (size, ds.latent_dim)
    assert torch.equal(s.test.x, again.test.x) and not torch.equal(s.train.x, other.train.x)
    assert not torch.equal(s.train.x[: ds.sizes[2]], s.test.x)


@pytest.mark.parametrize("name", ALL)
def test_model_trace_and_log_prob(name):
    ds = get_dataset(name)
    data = ds.sample(50, seed=1)
    x = data[0]
    kwargs = {"y": data[2]} if name in SEMI else {}
    tr = poutine.trace(ds.model).get_trace(x, **kwargs)
    sites = ["z", "y", "x"] if name in SEMI else ["z", "x"]
    for site in sites:
        node = tr.nodes[site]
        assert [f.name for f in node["cond_indep_stack"]] == ["data"], site
    assert tr.nodes["x"]["is_observed"] and not tr.nodes["z"]["is_observed"]
    assert torch.equal(tr.nodes["x"]["value"], x)
    z = tr.nodes["z"]["value"]
    assert z.shape == (50, ds.latent_dim)
    # hand-computed log-densities
    if ds.prior == "uniform":
        log_pz = torch.zeros(())
    else:
        log_pz = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum()
    var = torch.tensor(SPEC[name][4])
    loc = ds.f(z, data[2]) if name in SEMI else ds.f(z)
    log_px = (-0.5 * (x - loc) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)).sum()
    log_py = torch.zeros(())
    if name == "discrete_semicircle":
        log_py = torch.tensor(50 * math.log(0.5))
    elif name == "continuous_semicircle":
        log_py = (-0.5 * data[2] ** 2 - 0.5 * math.log(2 * math.pi)).sum()
    assert_close(tr.log_prob_sum(), log_pz + log_px + log_py, rtol=1e-5, atol=1e-3, msg=name)


@pytest.mark.parametrize("name", ALL)
def test_model_generates_without_data(name):
    ds = get_dataset(name)
    pyro.set_rng_seed(1)
    tr = poutine.trace(ds.model).get_trace(n=7)
    assert tr.nodes["x"]["value"].shape == (7, ds.obs_dim)
    assert not tr.nodes["x"]["is_observed"]
    with pytest.raises(ValueError, match="model"):
        ds.model()


@pytest.mark.parametrize("name", ALL)
def test_f_batches_and_gradients(name):
    ds = get_dataset(name)
    gen = torch.Generator().manual_seed(0)
    z = (torch.rand(3, 4, ds.latent_dim, generator=gen) if ds.prior == "uniform"
         else torch.randn(3, 4, ds.latent_dim, generator=gen)).requires_grad_(True)
    args = (torch.randn(3, 4, 1, generator=gen),) if name == "continuous_semicircle" else ()
    if name == "discrete_semicircle":
        args = (torch.nn.functional.one_hot(torch.randint(2, (3, 4), generator=gen), 2).float(),)
    out = ds.f(z, *args)
    assert out.shape == (3, 4, ds.obs_dim)
    flat = ds.f(z.detach().reshape(12, ds.latent_dim), *(a.reshape(12, -1) for a in args))
    assert_close(out.detach().reshape(12, -1), flat, rtol=1e-6, atol=1e-7, msg=name)
    (grad,) = torch.autograd.grad(out.sum(), z)
    assert torch.isfinite(grad).all()
    if name == "floor":
        assert (grad == 0).all()  # a step function: zero gradient almost everywhere
    else:
        assert grad.abs().sum() > 0
    assert ds.f(z.detach().double(), *(a.double() for a in args)).dtype == torch.float64


def test_gradient_matches_finite_differences():
    ds = get_dataset("figure8")
    z = torch.tensor([[0.3]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ds.f, (z,))


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", ALL)
def test_cuda_matches_cpu(name):
    ds = get_dataset(name)
    cpu, gpu = ds.sample(20, seed=0), ds.sample(20, seed=0, device="cuda")
    for a, b in zip(cpu, gpu):
        assert b.device.type == "cuda" and torch.equal(a, b.cpu())
    kwargs = {"y": gpu[2]} if name in SEMI else {}
    tr = poutine.trace(ds.model).get_trace(gpu[0], **kwargs)
    assert tr.nodes["z"]["value"].device.type == "cuda" and torch.isfinite(tr.log_prob_sum())
    assert ds.splits(seed=0, device="cuda").val.x.device.type == "cuda"
    fam = ds.decoder_family(num_restarts=2)
    if fam is not None:
        fam = fam.cuda()
        assert fam(gpu[1]).shape == (2, 20, ds.obs_dim) and fam.noise_var().device.type == "cuda"
