"""``convvit train --backend numpy``: the NumPy model trained by numpy_vit.optim on the same batches as
torch learns the same (float64: the same accuracy to the printed digit), writes a checkpoint that
torch_vit loads with the same predictions, resumes exactly, and refuses what it cannot do in one line."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import QUIET, TINY, convvit, paired, usage_error

import numpy_vit
from torch_vit import data as data_mod
from torch_vit.checkpoint import load_checkpoint
from torch_vit.train import make_config, no_decay_names, predict, train


def _run(tmp_path, name, **settings):
    cfg = make_config("default", **{**TINY, "epochs": 4, "lr": 0.005, "seed": 3, "optimizer": "adamw", **settings})
    data = data_mod.make_synthetic(1024, 256, size=(16, 16))
    model, history = train(cfg, data, str(tmp_path / name), **QUIET)
    return cfg, data, model, history


@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory):
    """``_run(..., backend="numpy")`` (float32) made once for the tests that inspect it: (cfg, data,
    model, history, the run's folder)."""
    tmp = tmp_path_factory.mktemp("numpy_run")
    return (*_run(tmp, "numpy", backend="numpy"), tmp / "numpy")


@pytest.mark.parity
def test_float64_numpy_run_learns_what_torch_learns(tmp_path):
    """Same seed, same batches, float64 on both sides: the same history to the printed digit and
    the same final weights to 1e-9, well above chance."""
    _, _, t_model, t_hist = _run(tmp_path, "torch", dtype="float64")
    _, _, n_model, n_hist = _run(tmp_path, "numpy", dtype="float64", backend="numpy")
    assert n_hist[-1]["test_acc"] >= 0.5, n_hist  # chance is 0.1
    for a, b in zip(n_hist, t_hist, strict=True):
        assert f"{a['train_acc']:.4f} {a['test_acc']:.4f}" == f"{b['train_acc']:.4f} {b['test_acc']:.4f}"
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-9)
    for (name, a), b in paired(n_model.state_dict(), t_model.state_dict()):
        assert a.dtype == b.dtype == torch.float64, name
        assert (a - b).abs().max() <= 1e-9 * b.abs().max(), name


@pytest.mark.parity
def test_no_decay_is_the_same_on_both_backends_and_changes_the_run(tmp_path):
    """--no-decay norm,bias,pos: float64 torch (a second param group) and NumPy (skip_decay) end with
    the same weights, which differ from those of a run that decays everything."""
    skip = dict(epochs=1, weight_decay=0.5, no_decay=("norm", "bias", "pos"), dtype="float64")
    _, _, t_model, _ = _run(tmp_path, "torch", **skip)
    _, _, n_model, _ = _run(tmp_path, "numpy", backend="numpy", **skip)
    _, _, all_model, _ = _run(tmp_path, "all", **dict(skip, no_decay=()))
    t, n, d = t_model.state_dict(), n_model.state_dict(), all_model.state_dict()
    for name in t:
        assert (n[name] - t[name]).abs().max() <= 1e-9 * t[name].abs().max(), name
    skipped = no_decay_names(t_model, ("norm", "bias", "pos"))
    assert {"norm.weight", "embedding.pos_embedding", "transformer.layers.0.0.fn.k.bias"} <= skipped
    assert "transformer.layers.0.0.fn.k.weight" not in skipped
    assert not torch.allclose(t["norm.weight"], d["norm.weight"])


def test_no_decay_names_by_kind():
    from torch_vit.model import ViT
    model = ViT(**make_config("default").model_config())
    assert no_decay_names(model, ("pos",)) == {"embedding.pos_embedding"}
    norms = no_decay_names(model, ("norm",))
    assert len(norms) == 2 * 9 and all(n.endswith(("lnorm.weight", "lnorm.bias")) or n.startswith("norm.")
                                       for n in norms)  # 4 blocks x 2 + the final norm
    biases = no_decay_names(model, ("bias",))
    assert biases == {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    assert no_decay_names(model, ()) == set()


@pytest.mark.parity
def test_numpy_trained_checkpoint_gives_torch_the_same_predictions(numpy_run):
    cfg, data, _, history, out = numpy_run
    model, ckpt = load_checkpoint(str(out / "checkpoint.pt"))
    m = numpy_vit.ViT(**model.config).load_state_dict(ckpt["model"])  # the NumPy weights as trained
    t_logits = predict(model, data.test_x, cfg, torch.device("cpu"))
    n_pred = np.concatenate([m.forward(predict_input(data.test_x[i:i + 64], cfg)).argmax(1)
                             for i in range(0, len(data.test_x), 64)])
    assert np.array_equal(t_logits.argmax(1).numpy(), n_pred)
    torch_acc = (t_logits.argmax(1) == data.test_y).double().mean().item()
    assert torch_acc == history[-1]["test_acc"]  # the accuracy the NumPy run reported
    assert ckpt["train_config"]["backend"] == "numpy"


def predict_input(x_uint8, cfg):
    from torch_vit.augment import normalize
    return normalize(x_uint8, cfg.mean, cfg.std).numpy()


def test_numpy_resume_equals_straight_run(tmp_path):
    cfg = make_config("default", **dict(TINY, epochs=3, seed=5, backend="numpy"))
    data = data_mod.make_synthetic(192, 64, size=(16, 16))
    straight, _ = train(cfg, data, str(tmp_path / "a"), **QUIET)
    train(cfg, data, str(tmp_path / "b"), stop_after=1, **QUIET)
    resumed, history = train(cfg, data, str(tmp_path / "b"), resume=True, **QUIET)
    assert [r["epoch"] for r in history] == [0, 1, 2]
    for (k, v), w in paired(straight.state_dict(), resumed.state_dict()):
        assert torch.equal(v, w), k
    with pytest.raises(ValueError, match="other settings: backend"):
        train(dataclasses.replace(cfg, backend="torch"), data, str(tmp_path / "b"), resume=True, **QUIET)


def test_numpy_run_reports_its_speed(numpy_run):
    _, _, _, history, out = numpy_run
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert rows == json.loads(json.dumps(history))
    assert all(r["train_img_s"] > 0 and 0 < r["train_s"] <= r["time"] for r in rows)
    assert json.load(open(out / "config.json"))["backend"] == "numpy"


@pytest.mark.parametrize("args, expected", [
    (["--backend", "jax"], "--backend: expected one of torch, numpy, got 'jax'"),
    (["--dtype", "float16"], "--dtype: expected one of float32, float64, got 'float16'"),
    (["--backend", "numpy", "--device", "cuda"], "--backend numpy runs on the CPU, got --device cuda"),
    (["--backend", "numpy", "--amp"], "--amp: bfloat16 autocast is for the torch backend, not --backend numpy"),
])
def test_backend_bad_input_is_one_line(args, expected):
    assert expected in usage_error("train", "--no-progress", "--epochs", "1", *args)


def test_check_steps_prints_both_trajectories():
    r = convvit("check", "--steps", "3", "--batch", "2", "--dim", "8", "--depth", "1", "--image-size", "8",
            "--head-channels", "4")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "float64 training trajectory: 3 steps" in r.stdout and "float32 training trajectory: 3 steps" in r.stdout
    assert r.stdout.count("  pass: worst max rel") == 2


def test_check_steps_with_muon():
    r = convvit("check", "--steps", "2", "--batch", "2", "--dim", "8", "--depth", "1", "--image-size", "8",
            "--head-channels", "4", "--optimizer", "muon")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("training trajectory: 2 steps of Muon for the blocks' 1x1-conv weights") == 2, r.stdout
    assert r.stdout.count("  pass: worst max rel") == 2


def test_check_optimizer_without_steps_is_one_line():
    assert "--optimizer muon: it is the optimiser of the --steps trajectories" in usage_error("check", "--optimizer",
                                                                                               "muon")
