"""Guides by name, import path and entry point (guides.registry): what resolves and what is refused."""

import sys
import textwrap

import pytest
import torch

from guides.flow import FlowGuide
from guides.mean_field import MeanFieldGuide
from guides.registry import (
    ENTRY_POINT_GROUP, build_guide, canonical_spec, guide_names, register_guide, resolve_guide,
)
from guides.restarts import RestartBatch
from pyro_vae.pipeline import RunConfig


def test_builtins_resolve_through_their_import_paths():
    assert resolve_guide("mean_field") is MeanFieldGuide
    assert resolve_guide("flow") is FlowGuide
    assert resolve_guide("guides.flow:FlowGuide") is FlowGuide
    g = build_guide("mean_field", 2, 1, hidden=(8,), num_restarts=3)  # takes num_restarts: batches itself
    assert isinstance(g, MeanFieldGuide) and g.num_restarts == 3
    assert isinstance(build_guide("mean_field", 2, 1, hidden=(8,)), MeanFieldGuide)


def test_import_path_of_a_guide_written_for_one_run():
    from examples.student_t_guide import StudentTGuide

    assert resolve_guide("examples.student_t_guide:StudentTGuide") is StudentTGuide
    assert isinstance(build_guide("examples.student_t_guide:StudentTGuide", 2, 1), StudentTGuide)
    batch = build_guide("examples.student_t_guide:StudentTGuide", 2, 1, hidden=(8,), num_restarts=2)
    assert isinstance(batch, RestartBatch) and all(isinstance(g, StudentTGuide) for g in batch.copies)


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("student_t", "expected a built-in guide ['flow', 'mean_field']"),
        ("no_such_module_xyz:Guide", "cannot import module 'no_such_module_xyz'"),
        ("examples.student_t_guide:Nope", "module 'examples.student_t_guide' has no attribute 'Nope'"),
        ("examples.student_t_guide:", "or an import path 'package.module:ClassOrFactory'"),
        ("user_guides:SHARED", "is a Linear object: expected a guide class or factory"),
    ],
)
def test_bad_specs_name_the_spec_and_what_is_allowed(spec, needle):
    with pytest.raises(ValueError, match="guide=") as err:
        resolve_guide(spec)
    assert needle in str(err.value)


def test_a_factory_with_another_signature_is_reported():
    """A guide function given where a factory is expected: one error naming the call and the contract."""
    with pytest.raises(ValueError, match=r"calling it as \(obs_dim=2, latent_dim=1\) failed.*\(obs_dim, latent_dim\)"):
        build_guide("user_guides:function_guide", 2, 1)


def test_run_config_checks_the_guide_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="guide='nope:Guide': cannot import module 'nope'"):
        RunConfig(dataset="figure8", guide="nope:Guide").validate()
    with pytest.raises(ValueError, match="init='gt' copies the mean-field"):
        RunConfig(dataset="figure8", guide="examples.student_t_guide:StudentTGuide", init="gt").validate()


def test_a_module_that_fails_on_import_is_reported(tmp_path, monkeypatch):
    (tmp_path / "broken_guides_mod.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="importing module 'broken_guides_mod' failed: RuntimeError: boom"):
        resolve_guide("broken_guides_mod:G")


def test_a_module_in_the_current_folder_is_found(tmp_path, monkeypatch):
    (tmp_path / "cwd_guides_mod.py").write_text(textwrap.dedent("""
        from user_guides import LinearGuide as Guide
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "cwd_guides_mod", raising=False)
    from user_guides import LinearGuide

    assert resolve_guide("cwd_guides_mod:Guide") is LinearGuide


def test_an_installed_package_registers_guides_by_entry_point(tmp_path, monkeypatch):
    info = tmp_path / "my_guides_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-guides-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nstudent_t = examples.student_t_guide:StudentTGuide\nmean_field = user_guides:LinearGuide\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from examples.student_t_guide import StudentTGuide

    assert resolve_guide("student_t") is StudentTGuide
    names = guide_names()
    assert names["student_t"] == "examples.student_t_guide:StudentTGuide"
    assert names["mean_field"] == "guides.mean_field:MeanFieldGuide", "an entry point cannot shadow a built-in"
    assert resolve_guide("mean_field") is MeanFieldGuide
    assert canonical_spec("student_t") == "student_t"  # later processes resolve the name again


def test_in_process_registrations_are_stored_by_import_path():
    from user_guides import LinearGuide

    register_guide("linear_for_test", LinearGuide)
    assert canonical_spec("linear_for_test") == "user_guides:LinearGuide"
    assert RunConfig(dataset="figure8", guide="linear_for_test").resolved().guide == "user_guides:LinearGuide"
    register_guide("lambda_for_test", lambda obs_dim, latent_dim: LinearGuide(obs_dim, latent_dim))
    with pytest.raises(ValueError, match="registered in this process only"):
        canonical_spec("lambda_for_test")
    with pytest.raises(ValueError, match="a built-in guide has that name"):
        register_guide("flow", LinearGuide)


def test_a_factory_that_takes_num_restarts_must_batch():
    def liar(obs_dim, latent_dim, num_restarts=None):
        from user_guides import LinearGuide

        return LinearGuide(obs_dim, latent_dim)

    register_guide("liar_for_test", liar)
    with pytest.raises(ValueError, match="takes num_restarts but returned a guide with num_restarts=None"):
        build_guide("liar_for_test", 2, 1, num_restarts=2)
    assert torch.is_tensor(build_guide("liar_for_test", 2, 1).net.weight)
