"""``convvit train --ema DECAY``: a moving average of the weights, updated after every step, is the
average the formula says on both backends (float64: the same to 1e-9), evaluated beside the weights
every epoch, the run's result in checkpoint.pt and the report, and resumed exactly."""

import json

import pytest
import torch

from conftest import QUIET, TINY, paired, usage_error

from torch_vit import data as data_mod
from torch_vit.train import TorchBackend, ema_decay, make_config, train


def test_ema_decay_starts_low_and_reaches_the_decay():
    assert ema_decay(0.999, 0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ema_decay(0.999, 90) == pytest.approx(0.91)
    assert ema_decay(0.999, 10**6) == 0.999
    assert ema_decay(0.5, 0) == 0.1 and ema_decay(0.5, 10) == 0.5
    ds = [ema_decay(0.999, t) for t in range(20000)]
    assert all(a <= b for a, b in zip(ds, ds[1:]))


# min(0.3, (1 + t) / (10 + t)) for t = 0 ... 4, written out: 4/13 and 5/14 are above 0.3.
DECAYS_AT_03 = [1 / 10, 2 / 11, 3 / 12, 0.3, 0.3]


def _average(initial, weights, decays):
    """a_t = d_t * a_(t-1) + (1 - d_t) * w_t from a_(-1) = the initial weights."""
    average = {k: v.clone() for k, v in initial.items()}
    for w, d in zip(weights, decays):
        average = {k: d * average[k] + (1 - d) * w[k] for k in average}
    return average


def test_ema_model_is_the_moving_average_of_the_weights():
    """Five steps of the torch backend, each followed by update_ema with the decays written out above:
    its average equals a_t = d_t * a_(t-1) + (1 - d_t) * w_t computed here from the weights after each
    step, starting from the initial weights."""
    cfg = make_config("default", **TINY, ema=0.3, dtype="float64")
    run = TorchBackend(cfg, torch.device("cpu"))
    initial = {k: v.clone() for k, v in run.model.state_dict().items()}
    weights = []
    g = torch.Generator().manual_seed(0)
    for d in DECAYS_AT_03:
        x = torch.randn(8, 3, 16, 16, generator=g, dtype=torch.float64)
        y = torch.randint(0, 10, (8,), generator=g)
        run.step(x, y, lr=0.01)
        run.update_ema(d)
        weights.append({k: v.clone() for k, v in run.model.state_dict().items()})
    expected = _average(initial, weights, DECAYS_AT_03)
    average, final = run.ema_model.state_dict(), run.model.state_dict()
    for k, v in expected.items():
        assert (average[k] - v).abs().max() <= 1e-12 * v.abs().max(), k
    moved = [k for k in final if not torch.allclose(final[k], initial[k])]
    assert moved and all(not torch.allclose(average[k], final[k]) for k in moved)  # an average, not a copy


def test_training_updates_the_average_with_the_warm_up_decay(tmp_path, monkeypatch):
    """train() with --ema 0.3, float64, 2 epochs of 2 steps: after every step it updates the average with
    the decay of the step counted over the whole run (t = 0, 1, 2, 3: the first four written out above,
    not 1/10, 2/11 again in epoch 1), and the average it returns is the one computed here from the
    weights after each step."""
    decays, weights = [], []
    update = TorchBackend.update_ema

    def recording(self, decay):
        decays.append(decay)
        weights.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return update(self, decay)

    monkeypatch.setattr(TorchBackend, "update_ema", recording)
    cfg = make_config("default", **{**TINY, "epochs": 2, "ema": 0.3, "dtype": "float64"})
    initial = TorchBackend(cfg, torch.device("cpu")).model.state_dict()  # the run's start: the same seed
    model, _ = train(cfg, data_mod.make_synthetic(128, 32, size=(16, 16)), str(tmp_path), **QUIET)
    assert decays == pytest.approx(DECAYS_AT_03[:4], rel=1e-15)
    expected = _average(initial, weights, DECAYS_AT_03[:4])
    for k, v in model.state_dict().items():
        assert (v - expected[k]).abs().max() <= 1e-12 * expected[k].abs().max(), k


def _run(tmp_path, name, **settings):
    cfg = make_config("default", **{**TINY, "epochs": 2, "lr": 0.005, "seed": 3, "ema": 0.99, "optimizer": "adamw",
                                    **settings})
    data = data_mod.make_synthetic(512, 256, size=(16, 16))
    model, history = train(cfg, data, str(tmp_path / name), **QUIET)
    return model, history


@pytest.mark.parity
def test_float64_numpy_ema_is_torch_ema(tmp_path):
    """Same seed and batches in float64: the NumPy backend's average (the run's result) equals torch's,
    and both evaluate it to the same accuracy every epoch."""
    t_model, t_hist = _run(tmp_path, "torch", dtype="float64")
    n_model, n_hist = _run(tmp_path, "numpy", dtype="float64", backend="numpy")
    for a, b in zip(n_hist, t_hist, strict=True):
        assert f"{a['ema_test_acc']:.4f}" == f"{b['ema_test_acc']:.4f}"
        assert a["ema_test_loss"] == pytest.approx(b["ema_test_loss"], rel=1e-9)
    for (name, a), b in paired(n_model.state_dict(), t_model.state_dict()):
        assert (a - b).abs().max() <= 1e-9 * b.abs().max(), name
    ckpt = torch.load(tmp_path / "torch" / "checkpoint.pt", weights_only=True)
    for name, w in ckpt["train_model"].items():  # the result is the average, not the trained weights
        assert torch.equal(ckpt["model"][name], t_model.state_dict()[name]), name
    assert any(not torch.equal(ckpt["model"][n], w) for n, w in ckpt["train_model"].items())


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_resume_with_ema_equals_a_straight_run(tmp_path, backend):
    """Stopped after epoch 0 and resumed: the same average and trained weights, bit for bit."""
    cfg = make_config("default", **{**TINY, "epochs": 2, "seed": 1, "ema": 0.99, "backend": backend})
    data = data_mod.make_synthetic(256, 64, size=(16, 16))
    train(cfg, data, str(tmp_path / "a"), **QUIET)
    train(cfg, data, str(tmp_path / "b"), stop_after=1, **QUIET)
    _, history = train(cfg, data, str(tmp_path / "b"), resume=True, **QUIET)
    assert [r["epoch"] for r in history] == [0, 1]
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for part in ("model", "train_model"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert a["history"][-1]["ema_test_acc"] == b["history"][-1]["ema_test_acc"]


def test_cli_ema_run_reports_and_saves_the_average(ema_cli_run):
    """The session's convvit train --ema 0.99 run (conftest.py): the average's accuracy on every epoch's
    line and in metrics.jsonl, the decay in config.json, the report (and convvit evaluate) of the average."""
    out, r, ev = ema_cli_run
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("ViT: Epoch:")]
    assert len(lines) == 2 and all(", Test Acc: " in l and ", EMA Test Acc: " in l for l in lines)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert all({"test_acc", "ema_test_acc", "ema_test_loss"} <= set(row) for row in rows)
    assert json.loads((out / "config.json").read_text())["ema"] == 0.99
    report = json.loads((out / "report.json").read_text())
    assert abs(report["test_acc"] - rows[-1]["ema_test_acc"]) < 1e-6
    assert ev.returncode == 0, ev.stderr
    assert json.loads((out / "ev" / "report.json").read_text())["test_acc"] == report["test_acc"]


def test_without_ema_nothing_changes(tmp_path):
    cfg = make_config("seed", epochs=1, **TINY)
    assert cfg.ema == 0.0 and make_config("default").ema == 0.0
    train(cfg, data_mod.make_synthetic(128, 64, size=(16, 16)), str(tmp_path), **QUIET)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert "train_model" not in ckpt and "ema_test_acc" not in ckpt["history"][0]


@pytest.mark.parametrize("value", [1.0, -0.1, True, "0.9"])
def test_make_config_refuses_a_bad_decay(value):
    with pytest.raises(ValueError, match=f"--ema: expected a decay in \\[0, 1\\), got {value!r}"):
        make_config("default", ema=value)


@pytest.mark.parametrize("text", ["1", "-0.5", "nan", "x"])
def test_cli_refuses_a_bad_decay_in_one_line(text):
    assert f"--ema: expected a decay in [0, 1), got {text!r}" in usage_error("train", "--no-progress", "--ema", text)
