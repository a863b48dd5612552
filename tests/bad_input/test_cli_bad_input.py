"""Every bad command line: exit code 2, ONE line on stderr naming the flag and the value, nothing written.

Each case runs ``pyro_vae.cli.main`` in-process with the working directory in a fresh tmp folder,
which is snapshotted (every path, size and modification time) after the case's set-up and
compared afterwards. ``{tmp}`` in an argument is that folder.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from pyro_vae.cli import main

TOML_OK = """
name = "bad"
[data]
datasets = ["circle"]
versions = [0]
[train]
epochs = 1
eval_samples = 50
hidden = [8]
[[methods]]
name = "vae"
"""


# ------------------------------------------------------------------------------------ set-ups
def _fake_run(tmp, *, status="finished"):
    from pyro_vae.pipeline import RunConfig, build_model_and_guide
    from pyro_vae.run_steps import params_state
    from pyro_vae.runs import RunStore

    config = RunConfig("circle", hidden=(4,), epochs=1, eval_samples=10).resolved()
    model, guide = build_model_and_guide(config, config.validate(), None)
    run = RunStore(tmp / "runs").start(config.to_dict())
    run.save_params(params_state(model, guide))
    if status == "failed":
        run.fail("TrainingError: loss is nan at step 3")
    else:
        run.finish({"test_loglik": -1.0})
    return run.run_dir


def _setup_run(variant):
    def setup(tmp):
        run_dir = _fake_run(tmp, status="failed" if variant == "failed" else "finished")
        if variant == "params":
            (run_dir / "params.pt").write_bytes(b"PK\x03\x04 truncated")
        elif variant == "unsafe":
            torch.save({"obj": _Unsafe()}, run_dir / "params.pt")
        elif variant == "config":
            (run_dir / "config.json").write_text('{"dataset": ')
        elif variant == "metrics":
            (run_dir / "metrics.json").write_text("{broken")
        elif variant == "unknown_key":
            cfg = json.loads((run_dir / "config.json").read_text())
            (run_dir / "config.json").write_text(json.dumps({**cfg, "colour": "red"}))
        return {"run": str(run_dir)}

    return setup


class _Unsafe:
    pass


def _write(name, text):
    def setup(tmp):
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
        return {}

    return setup


def _mkdir(name):
    def setup(tmp):
        (tmp / name).mkdir(parents=True)
        return {}

    return setup


def _readonly(tmp):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    return {}


def _busy(tmp):
    """ok.toml, and its sweep folder locked as if another ``reproduce`` were running in it (until exit)."""
    import atexit

    from pyro_vae.runs.lock import exclusive

    (tmp / "ok.toml").write_text(TOML_OK)
    lock = exclusive(tmp / "out" / "bad", "--out")
    lock.__enter__()
    atexit.register(lock.__exit__, None, None, None)
    return {}


SETUPS = {
    "busy": _busy,
    "file": _write("afile", "x"),
    "dir_csv": _mkdir("d.csv"),
    "empty": _mkdir("empty"),
    "readonly": _readonly,
    "bad_index": _write("runs/index.sqlite", b"not a database" * 200),
    "bad_toml": _write("bad.toml", "name = \n[[["),
    "toml_epochs0": _write("e0.toml", TOML_OK.replace("epochs = 1", "epochs = 0")),
    "toml_methods": _write("m.toml", 'methods = "vae"\n' + TOML_OK.replace('[[methods]]\nname = "vae"', "")),
    "toml_versions": _write("v.toml", TOML_OK.replace("versions = [0]", 'versions = ["zero"]')),
    "toml_quick_versions": _write("q.toml", TOML_OK + "[quick]\nversions = []\n"),
    "toml_option": _write("o.toml", TOML_OK.replace('name = "vae"', 'name = "lin"\nfixed = { threshold = -1 }')),
    "toml_hidden": _write("h.toml", TOML_OK.replace("hidden = [8]", "hidden = 8")),
    "bad_sweep": _write("sweep/sweep.json", "{oops"),
    "run_params": _setup_run("params"),
    "run_unsafe": _setup_run("unsafe"),
    "run_config": _setup_run("config"),
    "run_metrics": _setup_run("metrics"),
    "run_unknown_key": _setup_run("unknown_key"),
    "run_failed": _setup_run("failed"),
}

# (id, argv, what stderr must name, set-up)
CASES = [
    # sample
    ("sample-n-huge", "sample figure8 -n 100000000000 --out x.csv", ["-n 100000000000", "needs about"], None),
    ("sample-n-zero", "sample figure8 -n 0 --out x.csv", ["-n", "'0'"], None),
    ("sample-n-negative", "sample figure8 -n -5 --out x.csv", ["-n", "'-5'"], None),
    ("sample-n-float", "sample figure8 -n 1e3 --out x.csv", ["-n", "'1e3'"], None),
    ("sample-out-proc", "sample figure8 -n 5 --out /proc/x.csv", ["--out", "'/proc/x.csv'"], None),
    ("sample-out-proc-deep", "sample figure8 -n 5 --out /proc/a/b/x.csv", ["--out", "/proc/a"], None),
    ("sample-out-sys", "sample figure8 -n 5 --out /sys/x.csv", ["--out", "'/sys/x.csv'"], None),
    ("sample-out-empty", ["sample", "figure8", "-n", "5", "--out", ""], ["--out", "''"], None),
    ("sample-out-blank", ["sample", "figure8", "-n", "5", "--out", "   "], ["--out", "'   '"], None),
    ("sample-out-extension", "sample figure8 -n 5 --out x.txt", ["--out", "'x.txt'", ".npz"], None),
    ("sample-out-below-file", "sample figure8 -n 5 --out afile/x.csv", ["--out", "afile", "not a folder"], "file"),
    ("sample-out-is-dir", "sample figure8 -n 5 --out d.csv", ["--out", "'d.csv'", "is a folder"], "dir_csv"),
    ("sample-out-readonly", "sample figure8 -n 5 --out ro/x.csv", ["--out", "ro/x.csv"], "readonly"),
    ("sample-unknown-set", "sample nope -n 5 --out x.csv", ["dataset 'nope'"], None),
    ("sample-real-data", "sample titanic -n 5 --out x.csv", ["dataset 'titanic'"], None),
    ("sample-data-option-range", "sample case1 -n 5 --out x.csv --data-option theta=5", ["--data-option", "theta=5"], None),
    ("sample-data-option-no-eq", "sample case1 -n 5 --out x.csv --data-option theta", ["--data-option", "'theta'"], None),
    ("sample-data-option-unknown", "sample figure8 -n 5 --out x.csv --data-option foo=1", ["--data-option", "foo=1"], None),
    ("sample-data-option-empty-value", "sample case1 -n 5 --out x.csv --data-option theta=", ["--data-option", "'theta='"], None),
    ("sample-data-option-bad-key", "sample case1 -n 5 --out x.csv --data-option 1x=2", ["--data-option", "'1x=2'"], None),
    ("sample-seed-negative", "sample figure8 -n 5 --out x.csv --seed -1", ["--seed", "'-1'"], None),
    ("sample-seed-huge", "sample figure8 -n 5 --out x.csv --seed 99999999999999999999999", ["--seed", "99999999999999999999999"], None),
    ("sample-missing-n", "sample figure8 --out x.csv", ["-n"], None),
    # train
    ("train-epochs-huge", "train figure8 --epochs 1000000000000", ["--epochs 1000000000000", "needs about"], None),
    ("train-epochs-float", "train figure8 --epochs 1e3", ["--epochs", "'1e3'"], None),
    ("train-epochs-zero", "train figure8 --epochs 0", ["--epochs", "'0'"], None),
    ("train-lin-threshold-negative", "train figure8 --method lin --option threshold=-1", ["--option threshold=-1"], None),
    ("train-lin-threshold-nan", "train figure8 --method lin --option threshold=NaN", ["--option threshold=nan"], None),
    ("train-lin-threshold-inf", "train figure8 --method lin --option threshold=Infinity", ["--option threshold=inf"], None),
    ("train-lin-threshold-text", "train figure8 --method lin --option threshold=small", ["--option threshold='small'"], None),
    ("train-lin-window-zero", "train figure8 --method lin --option window=0", ["--option window=0"], None),
    ("train-option-no-eq", "train figure8 --method lin --option threshold", ["--option", "'threshold'"], None),
    ("train-option-twice", "train figure8 --method lin --option window=2 --option window=3", ["--option window", "twice"], None),
    ("train-option-unknown", "train figure8 --method lin --option bogus=1", ["--option bogus=1"], None),
    ("train-option-for-vae", "train figure8 --option threshold=0.1", ["--option threshold=0.1", "'vae'"], None),
    ("train-segments-fraction", "train figure8 --method lin_segments --option encoder_fraction=1.5", ["--option encoder_fraction=1.5"], None),
    ("train-libi-eps", "train figure8 --method libi --option eps_hz=-1", ["--option eps_hz=-1"], None),
    ("train-out-empty", ["train", "figure8", "--out", ""], ["--out", "''"], None),
    ("train-out-proc", "train figure8 --out /proc/runs", ["--out", "'/proc/runs'"], None),
    ("train-out-file", "train figure8 --out afile", ["--out", "'afile'", "not a folder"], "file"),
    ("train-out-readonly", "train figure8 --out ro/runs", ["--out", "'ro/runs'"], "readonly"),
    ("train-lr-inf", "train figure8 --lr inf", ["--lr", "'inf'"], None),
    ("train-lr-nan", "train figure8 --lr nan", ["--lr", "'nan'"], None),
    ("train-lr-zero", "train figure8 --lr 0", ["--lr", "'0'"], None),
    ("train-lr-negative-exp", "train figure8 --lr -1e-3", ["--lr", "'-1e-3'"], None),
    ("train-beta-zero", "train figure8 --method beta --beta 0", ["--beta", "'0'"], None),
    ("train-anneal-negative", "train figure8 --anneal-epochs -1", ["--anneal-epochs", "'-1'"], None),
    ("train-batch-too-big", "train figure8 --batch-size 5001", ["--batch-size 5001", "5000 training points"], None),
    ("train-restarts-zero", "train figure8 --restarts 0", ["--restarts", "'0'"], None),
    ("train-particles-zero", "train figure8 --particles 0", ["--particles", "'0'"], None),
    ("train-particles-huge", "train figure8 --method iwae --particles 1000000000", ["--particles 1000000000", "needs about"], None),
    ("train-hidden-huge", "train figure8 --hidden 100000000", ["--hidden 100000000", "needs about"], None),
    ("train-hidden-zero", "train figure8 --hidden 50 0", ["--hidden", "'0'"], None),
    ("train-eval-samples-huge", "train figure8 --eval-samples 100000000", ["--eval-samples 100000000", "needs about"], None),
    ("train-method-unknown", "train figure8 --method gan", ["--method 'gan'"], None),
    ("train-dataset-unknown", "train nope", ["dataset 'nope'"], None),
    ("train-semi-supervised", "train discrete_semicircle", ["'discrete_semicircle'", "M2"], None),
    ("train-device", "train figure8 --device tpu", ["--device 'tpu'"], None),
    ("train-device-index", "train figure8 --device cuda:7", ["--device 'cuda:7'"], None),
    ("train-decoder-choice", "train figure8 --decoder foo", ["--decoder", "'foo'"], None),
    ("train-family-latent-dim", "train linear_jte --decoder family --latent-dim 3", ["--latent-dim 3"], None),
    ("train-no-family", "train figure8 --decoder family", ["--decoder 'family'"], None),
    ("train-noise-choice", "train figure8 --noise loud", ["--noise", "'loud'"], None),
    ("train-init-latent-dim", "train figure8 --init gt --latent-dim 2", ["--init 'gt'"], None),
    ("train-guide-unknown", "train figure8 --guide nope", ["--guide 'nope'"], None),
    ("train-posthoc-flow", "train figure8 --guide flow --noise posthoc", ["--noise 'posthoc'"], None),
    ("train-seed-negative", "train figure8 --seed -1", ["--seed", "'-1'"], None),
    ("train-data-seed-negative", "train figure8 --data-seed -3", ["--data-seed", "'-3'"], None),
    ("train-latent-dim-zero", "train figure8 --latent-dim 0", ["--latent-dim", "'0'"], None),
    ("train-unknown-flag", "train figure8 --bogus", ["--bogus"], None),
    ("train-data-option-range", "train case1 --data-option theta=5", ["--data-option", "theta=5"], None),
    ("train-deprecated-param", "train case1 --param theta=5", ["--data-option", "theta=5"], None),
    ("train-m2-route-unlabelled", "train figure8 --method m2", ["dataset 'figure8'"], None),
    # train-m2
    ("m2-lin-threshold", "train-m2 discrete_semicircle --method lin --option threshold=-1", ["--option threshold=-1"], None),
    ("m2-lin-unknown-option", "train-m2 discrete_semicircle --method lin --option max_inner_steps=3", ["--option max_inner_steps=3"], None),
    ("m2-option-for-vae", "train-m2 discrete_semicircle --option window=3", ["--option window=3"], None),
    ("m2-method", "train-m2 discrete_semicircle --method renyi", ["--method 'renyi'"], None),
    ("m2-noise-zero", "train-m2 discrete_semicircle --noise 0", ["--noise '0'"], None),
    ("m2-noise-learned", "train-m2 discrete_semicircle --noise learned", ["--noise 'learned'"], None),
    ("m2-labelled-fraction", "train-m2 discrete_semicircle --labelled-fraction 1.5", ["--labelled-fraction", "'1.5'"], None),
    ("m2-unlabelled-set", "train-m2 figure8", ["dataset 'figure8'", "no labels"], None),
    ("m2-uci-split", "train-m2 titanic --split 5", ["--split 5"], None),
    ("m2-epochs-huge", "train-m2 discrete_semicircle --epochs 1000000000000", ["--epochs 1000000000000", "needs about"], None),
    ("m2-out-proc", "train-m2 discrete_semicircle --out /proc/m2", ["--out", "'/proc/m2'"], None),
    ("m2-z-encoder", "train-m2 discrete_semicircle --z-encoder z", ["--z-encoder 'z'"], None),
    ("m2-guide-for-continuous", "train-m2 continuous_semicircle --guide enum", ["--guide 'enum'"], None),
    ("m2-straight-through", "train-m2 discrete_semicircle --straight-through", ["--straight-through True"], None),
    # posterior and decompose
    ("posterior-x-count", "posterior figure8 --x -0.5", ["--x", "'-0.5'"], None),
    ("posterior-x-nan", "posterior figure8 --x 1,nan", ["--x", "'1,nan'"], None),
    ("posterior-x-overflow", "posterior figure8 --x 1e999,0", ["--x", "'1e999,0'"], None),
    ("posterior-x-empty-part", "posterior figure8 --x 0,,0", ["--x", "'0,,0'"], None),
    ("posterior-x-words", "posterior figure8 --x one,two", ["--x", "'one,two'"], None),
    ("posterior-x-missing", "posterior figure8", ["--x"], None),
    ("posterior-plot-extension", "posterior figure8 --x 0,0 --plot a.txt", ["--plot", "'a.txt'"], None),
    ("posterior-plot-proc", "posterior figure8 --x 0,0 --plot /proc/p.png", ["--plot", "'/proc/p.png'"], None),
    ("posterior-chains-zero", "posterior figure8 --x 0,0 --chains 0", ["--chains", "'0'"], None),
    ("posterior-warmup-negative", "posterior figure8 --x 0,0 --warmup -1", ["--warmup", "'-1'"], None),
    ("posterior-method", "posterior figure8 --x 0,0 --method mcmc", ["--method", "'mcmc'"], None),
    ("posterior-run-not-a-run", "posterior figure8 --x 0,0 --run empty", ["'empty'", "config.json is missing"], "empty"),
    ("posterior-labelled-set", "posterior discrete_semicircle --x 0,0", ["dataset 'discrete_semicircle'"], None),
    ("posterior-run-missing", "posterior figure8 --x 0,0 --run gone", ["'gone'"], None),
    ("decompose-unknown-set", "decompose nope", ["dataset 'nope'"], None),
    ("decompose-restarts-zero", "decompose figure8 --restarts 0", ["--restarts", "'0'"], None),
    # evaluate: missing and corrupt run folders
    ("evaluate-missing", "evaluate gone", ["'gone'", "does not exist"], None),
    ("evaluate-empty-dir", "evaluate empty", ["'empty'", "config.json is missing"], "empty"),
    ("evaluate-corrupt-params", "evaluate {run}", ["params.pt", "not a PyTorch parameters file"], "run_params"),
    ("evaluate-unsafe-params", "evaluate {run}", ["params.pt", "Python objects"], "run_unsafe"),
    ("evaluate-corrupt-config", "evaluate {run}", ["config.json", "not valid JSON"], "run_config"),
    ("evaluate-corrupt-metrics", "evaluate {run}", ["metrics.json", "not valid JSON"], "run_metrics"),
    ("evaluate-unknown-config-key", "evaluate {run}", ["config.json", "'colour'"], "run_unknown_key"),
    ("evaluate-failed-run", "evaluate {run}", ["failed", "TrainingError: loss is nan at step 3"], "run_failed"),
    ("evaluate-eval-samples-zero", "evaluate gone --eval-samples 0", ["--eval-samples", "'0'"], None),
    ("evaluate-eval-samples-huge", "evaluate gone --eval-samples 1000000000000", ["--eval-samples 1000000000000"], None),
    # runs
    ("runs-missing", "runs gone", ["'gone'", "does not exist"], None),
    ("runs-file", "runs afile", ["'afile'", "not a folder"], "file"),
    ("runs-not-a-runs-folder", "runs empty", ["'empty'", "index.sqlite"], "empty"),
    ("runs-corrupt-index", "runs runs", ["index.sqlite", "not a readable run index"], "bad_index"),
    # reproduce and report
    ("reproduce-unknown", "reproduce nope", ["'nope'"], None),
    ("reproduce-bad-toml", "reproduce bad.toml", ["bad.toml", "not valid TOML"], "bad_toml"),
    ("reproduce-toml-epochs", "reproduce e0.toml", ["e0.toml", "epochs=0"], "toml_epochs0"),
    ("reproduce-toml-methods", "reproduce m.toml", ["m.toml", "methods="], "toml_methods"),
    ("reproduce-toml-versions", "reproduce v.toml", ["v.toml", "versions[0]='zero'"], "toml_versions"),
    ("reproduce-toml-quick-versions", "reproduce q.toml --quick", ["q.toml", "[quick]", "versions=[]"], "toml_quick_versions"),
    ("reproduce-toml-option", "reproduce o.toml", ["o.toml", "threshold=-1"], "toml_option"),
    ("reproduce-toml-hidden", "reproduce h.toml", ["h.toml", "hidden"], "toml_hidden"),
    ("reproduce-workers-zero", "reproduce 004_table2 --quick --workers 0", ["--workers", "'0'"], None),
    ("reproduce-executor", "reproduce 004_table2 --quick --executor slurm", ["--executor", "'slurm'"], None),
    ("reproduce-out-proc", "reproduce 004_table2 --quick --out /proc/rep", ["--out", "'/proc/rep'"], None),
    ("reproduce-device", "reproduce 004_table2 --quick --device tpu", ["--device 'tpu'"], None),
    ("reproduce-busy-out", "reproduce ok.toml --out out --quiet", ["--out=", "a sweep is already running", "pid"], "busy"),
    ("report-missing", "report gone", ["'gone'", "does not exist"], None),
    ("report-not-a-sweep", "report empty", ["'empty'", "neither"], "empty"),
    ("report-corrupt-sweep-json", "report sweep", ["sweep.json", "not valid JSON"], "bad_sweep"),
    # the command itself
    ("unknown-command", "bogus", ["'bogus'"], None),
    ("no-command", "", ["COMMAND"], None),
]


def snapshot(root) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def test_the_suite_counts_at_least_sixty_distinct_bad_inputs():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 60
    argvs = [(str(c[1]), c[3]) for c in CASES]
    assert len(argvs) == len(set(argvs))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    name, argv, needles, setup = case
    monkeypatch.chdir(tmp_path)
    values = {"tmp": str(tmp_path)}
    if setup:
        values.update(SETUPS[setup](tmp_path))
    argv = [a.format(**values) for a in (argv.split() if isinstance(argv, str) else argv)]
    capsys.readouterr()
    before = snapshot(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("pyro-vae"), err
    for needle in needles:
        assert needle in err, (needle, err)
    assert "Traceback" not in err and out == ""
    assert snapshot(tmp_path) == before, f"{name} wrote into {tmp_path}"
