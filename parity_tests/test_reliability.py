"""Runs that lose nothing (issue 17; docs/reliability.md): a folder holding a run is not written over
without --overwrite, and an --overwrite run leaves the old one intact until its first checkpoint; the --out
of evaluate, gradcam, attention and the benchmarks does not replace earlier results unless told to."""

import json
import math
import os

import pytest
from conftest import QUIET, TINY, convvit, usage_error

from torch_vit import data as data_mod
from torch_vit import train as train_mod
from torch_vit.train import make_config, train


def _tiny_run(out, overwrite=False, **settings):
    cfg = make_config("seed", **{**TINY, "epochs": 1, **settings})
    return train(cfg, data_mod.make_synthetic(128, 32, size=(16, 16)), str(out), overwrite=overwrite, **QUIET)


def _snapshot(folder):
    """{name: (bytes, mtime in ns)} of every file under ``folder``."""
    snap = {}
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                snap[os.path.relpath(path, folder)] = (fh.read(), os.stat(path).st_mtime_ns)
    return snap


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """A finished tiny run, with the pictures and report the CLI adds standing in as small files."""
    out = tmp_path_factory.mktemp("old") / "run"
    _tiny_run(out)
    for name in ("curves.png", "confusion.png", "report.json"):
        (out / name).write_text(f"old {name}")
    return out


@pytest.mark.parametrize("held", ["checkpoint.pt", "metrics.jsonl"])
def test_a_folder_holding_a_run_is_refused_and_untouched(old_run, tmp_path, held):
    out = tmp_path / "run"
    out.mkdir()
    (out / held).write_bytes((old_run / held).read_bytes())
    before = _snapshot(out)
    line = usage_error("train", "--data", "synthetic", "--epochs", "1", "--no-progress", "--out", out)
    assert f"--out {out}: expected a folder without a run, it holds one ({held})" in line
    assert "--resume to continue it, --overwrite to replace it" in line
    assert _snapshot(out) == before


def test_resume_and_overwrite_together_is_one_line(old_run):
    line = usage_error("train", "--no-progress", "--out", old_run, "--resume", "--overwrite")
    assert "--resume and --overwrite: expected one of them" in line


def test_overwrite_that_dies_before_its_first_checkpoint_leaves_the_old_run(old_run, monkeypatch):
    """The new run fails at its third step (before epoch 0's checkpoint): every old file as it was."""
    before = _snapshot(old_run)
    real, calls = train_mod.TorchBackend.step, []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the machine died")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(train_mod.TorchBackend, "step", failing)
    with pytest.raises(RuntimeError, match="the machine died"):
        _tiny_run(old_run, batch_size=32, seed=7, overwrite=True)
    assert len(calls) == 3
    assert _snapshot(old_run) == before


def test_overwrite_replaces_the_run(old_run, tmp_path):
    import json
    import shutil

    out = tmp_path / "run"
    shutil.copytree(old_run, out)
    _tiny_run(out, seed=7, overwrite=True)
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "config.json", "metrics.jsonl"]  # old pictures gone, no .old-*
    assert json.loads((out / "config.json").read_text())["seed"] == 7
    assert (out / "checkpoint.pt").read_bytes() != (old_run / "checkpoint.pt").read_bytes()


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_non_finite_loss_stops_the_run_in_one_line(tmp_path, backend):
    """--lr 1e30: the second step's loss is NaN; exit status 1, one line naming the epoch, the step and
    the learning rate, and nothing of the run written (no checkpoint.pt, no metrics.jsonl)."""
    r = convvit("train", "--data", "synthetic", "--epochs", "1", "--lr", "1e30", "--backend", backend,
                "--device", "cpu", "--no-progress", "--out", tmp_path / "run")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 200, r.stderr
    assert lines[0].startswith("convvit: error: stopped at epoch 0, step 1 of 32: loss nan")
    assert "likely cause: the learning rate (--lr 1e+30)" in lines[0]
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()
    # the folder held no run: the stop is recorded, and --resume says there is nothing to resume, and why
    stopped = json.loads((tmp_path / "run" / "stopped.json").read_text())
    assert (stopped["epoch"], stopped["step"], stopped["checkpoint"]) == (0, 1, False)
    line = usage_error("train", "--data", "synthetic", "--epochs", "1", "--lr", "1e30", "--backend", backend,
                       "--no-progress", "--out", tmp_path / "run", "--resume")
    assert line.endswith(f"found none (the run stopped before its first checkpoint, {tmp_path}/run/stopped.json "
                         "says why: start it again without --resume)"), line


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_stop_keeps_the_last_good_checkpoint_and_resume_says_why(tmp_path, monkeypatch, backend):
    """Epoch 1 at a learning rate of 1e30 (epoch 0 as scheduled): the run stops at epoch 1, step 1 (step 0 computes its loss before the huge update),
    checkpoint.pt and metrics.jsonl keep epoch 0, stopped.json says why; --resume with the same settings
    says in one line that it will stop again (and does), with a changed --lr it goes on and forgets the stop."""
    import json
    import shutil

    from torch_vit.checkpoint import load_checkpoint

    real_lr_at = train_mod.TrainConfig.lr_at
    monkeypatch.setattr(train_mod.TrainConfig, "lr_at", lambda self, t, lr=None: 1e30 if t > 1 else real_lr_at(self, t, lr))
    cfg = make_config("seed", **{**TINY, "epochs": 2, "batch_size": 32, "backend": backend})
    data = data_mod.make_synthetic(128, 32, size=(16, 16))
    out = tmp_path / "run"
    with pytest.raises(train_mod.NonFiniteLoss, match=r"^stopped at epoch 1, step 1 of 4: loss (nan|inf).*--lr 0\.01"):
        train(cfg, data, str(out), **QUIET)
    _, ckpt = load_checkpoint(str(out / "checkpoint.pt"))  # finite weights, or it raises
    assert ckpt["epoch"] == 0 and [r["epoch"] for r in ckpt["history"]] == [0]
    assert [json.loads(l)["epoch"] for l in (out / "metrics.jsonl").read_text().splitlines()] == [0]
    assert json.loads((out / "stopped.json").read_text())["epoch"] == 1

    shutil.copytree(out, tmp_path / "again")
    said = []
    with pytest.raises(train_mod.NonFiniteLoss, match="stopped at epoch 1, step 1"):
        train(cfg, data, str(tmp_path / "again"), resume=True, **dict(QUIET, log=said.append))
    assert said[1].startswith("warning: this run stopped at epoch 1, step 1") and "stop there again" in said[1]

    monkeypatch.setattr(train_mod.TrainConfig, "lr_at", real_lr_at)
    said = []
    _, history = train(train_mod.dataclasses.replace(cfg, lr=0.005), data, str(out), resume=True,
                       **dict(QUIET, log=said.append))
    assert "resuming with changed --lr 0.01 -> 0.005" in said[1]
    assert [r["epoch"] for r in history] == [0, 1] and not (out / "stopped.json").exists()


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_non_finite_update_in_an_epochs_last_step_stops_before_its_checkpoint(tmp_path, monkeypatch, recwarn,
                                                                                 backend):
    """One step per epoch, epoch 1's at a learning rate of 1e30: that step's own loss and gradient are finite, its
    update is not, and no later step of the epoch would show it. The test loss does: the run stops there, and
    checkpoint.pt and metrics.jsonl keep epoch 0 (a NaN test loss is not valid JSON); a lower --lr resumes."""
    from torch_vit.checkpoint import load_checkpoint

    real_lr_at = train_mod.TrainConfig.lr_at
    monkeypatch.setattr(train_mod.TrainConfig, "lr_at", lambda self, t, lr=None: 1e30 if t > 1 else real_lr_at(self, t, lr))
    cfg = make_config("seed", **{**TINY, "epochs": 2, "batch_size": 128, "backend": backend})
    data = data_mod.make_synthetic(128, 32, size=(16, 16))
    out = tmp_path / "run"
    with pytest.raises(train_mod.NonFiniteLoss, match=r"^stopped at epoch 1, step 0 of 1: test loss (nan|inf) after "
                                                      r"its update \(gradient norm [\d.e+-]+\), not finite; .*"
                                                      r"checkpoint.pt keeps epoch 0$") as info:
        train(cfg, data, str(out), **QUIET)
    assert len(str(info.value)) <= 200 - len("convvit: error: ")
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]  # the line is all the CLI prints
    _, ckpt = load_checkpoint(str(out / "checkpoint.pt"))  # finite weights, or it raises
    assert ckpt["epoch"] == 0 and [json.loads(l)["epoch"] for l in (out / "metrics.jsonl").read_text().splitlines()] == [0]
    assert json.loads((out / "stopped.json").read_text())["epoch"] == 1

    monkeypatch.setattr(train_mod.TrainConfig, "lr_at", real_lr_at)
    _, history = train(train_mod.dataclasses.replace(cfg, lr=0.005), data, str(out), resume=True, **QUIET)
    assert [r["epoch"] for r in history] == [0, 1] and all(math.isfinite(r["test_loss"]) for r in history)


def test_a_first_checkpoint_that_cannot_be_written_leaves_the_old_run(old_run, tmp_path, monkeypatch):
    """--overwrite, and the new run's first checkpoint fails to write (a full disk here): every old file as it was,
    nothing moved aside, nothing of the new run left."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(old_run, out)
    before = _snapshot(out)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_mod, "save_checkpoint", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _tiny_run(out, seed=7, overwrite=True)
    assert _snapshot(out) == before


def test_an_overwrite_run_that_stops_in_epoch_0_leaves_the_old_run_and_no_record(old_run, tmp_path):
    """A new run over an old one stops on a non-finite loss before its first checkpoint: the old run stays as it
    was, every file, and no stopped.json is written (--resume of the old run would take it for its own)."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(old_run, out)
    before = _snapshot(out)
    with pytest.raises(train_mod.NonFiniteLoss, match=r"^stopped at epoch 0, step 1 of 2: .*no checkpoint of this run"):
        _tiny_run(out, overwrite=True, lr=1e30)
    assert _snapshot(out) == before


def _refused(args, folder):
    """``convvit ARGS`` must refuse (exit 2, one line) and leave every file under ``folder`` as it was; the line."""
    before = _snapshot(folder)
    line = usage_error(*args)
    assert _snapshot(folder) == before
    return line


@pytest.mark.parametrize("command, held", [("evaluate", "report.json"), ("gradcam", "gradcam_3.png"),
                                           ("attention", "attention_3.png")])
def test_inspection_commands_refuse_to_replace_earlier_results(tmp_path, command, held):
    (tmp_path / held).write_text("earlier results")
    (tmp_path / "mine.txt").write_text("not theirs")
    args = (command, "--out", tmp_path, "--no-progress", *(["--index", "3"] if command == "attention" else []))
    line = _refused(args, tmp_path)
    assert line == f"convvit: error: --out {tmp_path}: expected no earlier results there, it holds {held}; " \
                   "--overwrite replaces them"


@pytest.mark.parametrize("command", ["evaluate", "attention"])
def test_overwrite_replaces_the_earlier_results(old_run, tmp_path, command):
    """--overwrite goes through (the tiny run's checkpoint on its synthetic data); attention's positional.png, a
    picture of the weights alone, is no earlier result that needs it."""
    held = "report.json" if command == "evaluate" else "attention_3.png"
    (tmp_path / held).write_text("earlier results")
    args = (command, "--checkpoint", old_run / "checkpoint.pt", "--data", "synthetic", "--no-progress", "--out", tmp_path)
    if command == "attention":
        (tmp_path / "positional.png").write_text("another checkpoint's")
        # no attention_9999.png: past the guard (positional.png does not count) to attention's own range check
        line = usage_error(*args, "--index", "9999")
        assert line.endswith("--index: expected 0 to 499, got 9999"), line
        args += ("--index", "3")
    r = convvit(*args, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / held).read_bytes() != b"earlier results"


BENCHMARKS = {"flip_tta": ["x.pt"], "float32_error": ["x.pt"], "parity_errors": [], "suite_time": [],
              "trajectory_drift": [], "train_throughput": [], "numpy_vs_torch": [], "profile_step": [],
              "profile_numpy": []}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_a_benchmark_refuses_to_replace_its_results_file(tmp_path, monkeypatch, capsys, name):
    """A benchmark's --out FILE that exists: exit 2 and one line naming it, before anything is measured, and the
    file as it was. (numpy_vs_torch and profile_numpy read their arguments on import: the test sets them;
    numpy_vs_torch's import sets the BLAS thread variables, which monkeypatch restores.)"""
    import importlib
    import sys

    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, os.environ.get(var, "1"))
    module = importlib.import_module(name)
    path = tmp_path / "results.json"
    path.write_text('{"earlier": 1}')
    argv = [*BENCHMARKS[name], "--out", str(path)]
    with pytest.raises(SystemExit) as info:
        if name in ("numpy_vs_torch", "profile_numpy"):
            monkeypatch.setattr(module, "ARGS", module._args(argv))
            module.main()
        else:
            module.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"error: --out {path}: expected a new file, it holds earlier results; "
                                             "--overwrite replaces it"), err
    assert path.read_text() == '{"earlier": 1}'
    monkeypatch.delitem(sys.modules, name)


def _damaged(folder, kind):
    """A file at ``folder`` that is no checkpoint of this project, of the given kind."""
    import numpy as np
    import torch

    import torch_vit

    torch.manual_seed(0)
    model = torch_vit.ViT(8, 2, 3, 8, 1, 4)
    good = folder / "good.pt"
    torch_vit.save_checkpoint(model, good)
    path = folder / (kind + (".npz" if kind.startswith("npz") else ".pt"))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:1000])
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint" * 50)
    elif kind == "text":
        path.write_text("hello world garbage\n")
    elif kind == "missing":
        path = folder / "nowhere.pt"
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "pickled":
        torch.save({"model": model.state_dict(), "extra": _NotATensor()}, path)
    elif kind == "other_model":
        torch.save({"model": {"fc.weight": torch.zeros(3, 3)}}, path)
    elif kind == "other_architecture":
        torch.save({"model": model.state_dict(), "config": dict(model.config, depth=3)}, path)
    elif kind == "npz_keys":
        np.savez(path, **{k.replace("mlp_head", "head"): v for k, v in state.items()})
    elif kind == "npz_shapes":
        np.savez(path, **dict(state, **{"mlp_head.3.bias": np.zeros(7, np.float32)}))
    return path


class _NotATensor:
    pass


@pytest.mark.parametrize("kind, expected", [
    ("truncated", "expected a complete torch checkpoint (a zip archive), got a truncated or damaged file"),
    ("garbage", "expected a torch checkpoint, got a file that is not one (Unsupported operand"),
    ("text", "expected a torch checkpoint, got a file that is not one ("),
    ("empty", "expected a torch checkpoint, got an empty file"),
    ("missing", "expected a checkpoint file, got no such file"),
    ("pickled", "expected tensors and plain values only (weights_only), got a pickled"),
    ("other_model", "expected a convvit ViT, got another model"),
    ("other_architecture", "state dict does not fit ViT: missing keys: transformer.layers.1."),
    ("npz_keys", "expected a convvit ViT, got another model (missing mlp_head"),
    ("npz_shapes", "shape mismatches: mlp_head.3.bias expected (10,) got (7,)"),
])
@pytest.mark.parametrize("command", ["evaluate", "check"])
def test_a_bad_checkpoint_is_one_short_line(tmp_path, kind, expected, command):
    path = _damaged(tmp_path, kind)
    line = usage_error(command, "--checkpoint", path, *(["--no-progress"] if command == "evaluate" else []))
    assert line.startswith(f"convvit: error: checkpoint {path}: ") and expected in line, line
    assert len(line) <= 200, line


@pytest.mark.parametrize("config, expected", [
    ('{"version": 2}', "config.json: expected version <= 1 (this convvit), got 2 (a newer convvit's run)"),
    ("{not json", "config.json: expected a JSON object, got an unreadable file (JSONDecodeError)"),
])
def test_resume_refuses_a_newer_or_unreadable_config(old_run, tmp_path, config, expected):
    import json
    import shutil

    assert json.loads((old_run / "config.json").read_text())["version"] == 1  # what train writes
    out = tmp_path / "run"
    shutil.copytree(old_run, out)
    (out / "config.json").write_text(config)
    line = usage_error("train", "--data", "synthetic", "--no-progress", "--out", out, "--resume")
    assert f"--resume: {out}/{expected}" in line and len(line) <= 200, line


def test_resume_refuses_an_unreadable_stop_record(old_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(old_run, out)
    (out / "stopped.json").write_text("{not json")
    line = usage_error("train", "--data", "synthetic", "--no-progress", "--out", out, "--resume")
    assert line.endswith(f"--resume: {out}/stopped.json: expected the record of a stopped run, got an unreadable "
                         "file (JSONDecodeError)") and len(line) <= 200, line
