"""SIGINT and SIGTERM during training (issue 17; docs/reliability.md): the run writes a checkpoint of where it
is, says in one line how to resume, exits 130 or 143, and --resume ends with the weights of an uninterrupted
run, bit for bit, on both backends. Real signals: to a real `convvit train` process, stopped after a step
drawn at random (seeded) by the hidden hook torch_vit.train.WAIT_AT; and, in this process, from inside a step."""

import json
import os
import random
import shlex
import signal
import subprocess
import sys

import pytest
import torch
from conftest import QUIET, TINY, convvit, paired

from torch_vit import data as data_mod
from torch_vit import train as train_mod
from torch_vit.train import Interrupted, make_config, train

STEPS = 5  # per epoch: 80 training images in batches of 16


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """An image folder of 10 classes, 8 training and 2 test images each (random pixels), and its cache folder:
    the smallest data `convvit train` takes, so that a real process trains in a second."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny_folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 2)):
        for c in range(10):
            (root / "ds" / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    root / "ds" / split / f"c{c}" / f"{i}.png")
    return root


def _train_args(folder, backend):
    """The default recipe (Muon) with a moving average, 2 epochs of STEPS steps."""
    return ("train", "--data", f"imagefolder:{folder / 'ds'}", "--cache-dir", folder / "cache", "--epochs", "2",
            "--batch-size", "16", "--ema", "0.9", "--backend", backend, "--no-progress", "--device", "cpu")


_straight = {}


def _straight_run(folder, backend):
    """The uninterrupted run of a backend (in this process, at its thread count), once per module."""
    if backend not in _straight:
        out = folder / f"straight-{backend}"
        r = convvit(*_train_args(folder, backend), "--out", out)
        assert r.returncode == 0, r.stderr
        _straight[backend] = out
    return _straight[backend]


def _same_weights(a, b):
    """checkpoint.pt of two runs: the same epoch, and max |difference| 0 in every tensor of the result (the
    moving average) and of the trained weights."""
    ca, cb = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (a, b))
    assert ca["epoch"] == cb["epoch"] and "mid_epoch" not in ca and "mid_epoch" not in cb
    for part in ("model", "train_model"):
        assert ca[part].keys() == cb[part].keys()
        for k in ca[part]:
            assert (ca[part][k] - cb[part][k]).abs().max().item() == 0, (part, k)


@pytest.mark.parametrize("backend, sig", [("torch", "SIGINT"), ("numpy", "SIGTERM")])
def test_a_signal_at_a_random_step_then_resume_gives_the_same_weights(tiny_folder, tmp_path, backend, sig):
    """A real `convvit train` waits after a step drawn at random (seeded) until the test sends it a real signal;
    it exits 128 + the signal's number with one line naming the checkpoint and the command that resumes; that
    command, run, ends with the uninterrupted run's weights to the bit and the same metrics."""
    straight, sig = _straight_run(tiny_folder, backend), getattr(signal, sig)
    epoch, step = random.Random(f"{backend}-{sig.name}").choice([(e, s) for e in (0, 1) for s in range(STEPS - 1)])
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(torch.get_num_threads()),
               **{train_mod.WAIT_AT: f"{epoch},{step}"})
    proc = subprocess.Popen([sys.executable, "-m", "torch_vit.cli", *map(str, _train_args(tiny_folder, backend)),
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:  # epoch 0's line first when the wait is in epoch 1
            if line.startswith("waiting at"):
                break
        assert line == f"waiting at epoch {epoch}, step {step}\n", line
        os.kill(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, stderr
    lines = stderr.strip().splitlines()
    ckpt = out / "checkpoint.pt"
    assert len(lines) == 1 and lines[0].startswith(
        f"convvit: interrupted by {sig.name}; {ckpt} holds the run after {step + 1} of {STEPS} steps of epoch "
        f"{epoch}; resume with: convvit train "), stderr
    saved = torch.load(ckpt, weights_only=True)
    assert (saved["mid_epoch"]["epoch"], saved["mid_epoch"]["step"], saved["epoch"]) == (epoch, step + 1, epoch - 1)
    assert [json.loads(l)["epoch"] for l in (out / "metrics.jsonl").read_text().splitlines()] == list(range(epoch))

    command = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert command[0] == "convvit" and command[-3:] == ["--resume", "--out", str(out)]
    resumed = convvit(*command[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} in epoch {epoch}, after {step + 1} of {STEPS} steps" in resumed.stdout
    _same_weights(straight, out)
    rows = [[json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()] for d in (straight, out)]
    for key in ("train_loss", "train_acc", "test_loss", "ema_test_acc", "lr"):
        assert [r[key] for r in rows[0]] == [r[key] for r in rows[1]], key


def _signal_at(monkeypatch, calls, sig, backend="torch"):
    """Make the backend's step number ``calls`` (1, 2, ...) of this process send ``sig`` to this process."""
    cls = train_mod.NumpyBackend if backend == "numpy" else train_mod.TorchBackend
    real, count = cls.step, []

    def step(self, *args, **kwargs):
        count.append(1)
        if len(count) == calls:
            os.kill(os.getpid(), sig)  # handled by train's handler: the flag is set, the step goes on
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "step", step)
    return count


def _tiny(**settings):
    return make_config("seed", **{**TINY, "epochs": 2, "batch_size": 32, "ema": 0.9, **settings})


DATA = data_mod.make_synthetic(128, 32, size=(16, 16))  # 4 steps of 32 per epoch


@pytest.mark.parametrize("backend, sig", [("torch", "SIGTERM"), ("numpy", "SIGINT")])
def test_a_signal_in_epoch_0_of_an_overwrite_run_is_its_first_checkpoint(tmp_path, monkeypatch, backend, sig):
    """In this process (the other signal for each backend): a new --overwrite run interrupted at its third step
    moves the old run aside and writes its own config.json, checkpoint.pt and an empty metrics.jsonl; the old
    handlers are back; --resume with other data is refused in one line, with the same data it gives the weights of
    an uninterrupted run, bit for bit."""
    cfg, sig = _tiny(backend=backend, seed=3), getattr(signal, sig)
    straight, _ = train(cfg, DATA, str(tmp_path / "straight"), **QUIET)
    out = tmp_path / "run"
    train(_tiny(backend=backend), DATA, str(out), **QUIET)  # the old run, another seed
    (out / "curves.png").write_text("old picture")
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    count = _signal_at(monkeypatch, 3, sig, backend)
    with pytest.raises(Interrupted) as info:
        train(cfg, DATA, str(out), overwrite=True, **QUIET)
    assert len(count) == 3 and info.value.status == 128 + sig
    assert str(info.value) == f"interrupted by {sig.name}; {out}/checkpoint.pt holds the run after 3 of 4 steps of epoch 0"
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "config.json", "metrics.jsonl"]  # the old run gone, no .old-*
    assert json.loads((out / "config.json").read_text())["seed"] == 3 and (out / "metrics.jsonl").read_text() == ""
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"checkpoint.pt stopped in an epoch of 128 training images, got data of 96$"):
        train(cfg, data_mod.make_synthetic(96, 32, size=(16, 16)), str(out), resume=True, **QUIET)
    resumed, history = train(cfg, DATA, str(out), resume=True, **QUIET)
    assert [r["epoch"] for r in history] == [0, 1]
    for (k, v), w in paired(straight.state_dict(), resumed.state_dict()):
        assert torch.equal(v, w), k


def test_a_signal_in_the_last_step_of_an_epoch_keeps_that_epoch(tmp_path, monkeypatch):
    """SIGINT during epoch 0's last step: the epoch is finished, evaluated and checkpointed (no mid-epoch part),
    then the run stops; --resume continues after epoch 0 as before."""
    _signal_at(monkeypatch, 4, signal.SIGINT)
    out = tmp_path / "run"
    with pytest.raises(Interrupted, match=r"holds the run after epoch 0$"):
        train(_tiny(), DATA, str(out), **QUIET)
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 0 and "mid_epoch" not in saved
    assert [json.loads(l)["epoch"] for l in (out / "metrics.jsonl").read_text().splitlines()] == [0]
    monkeypatch.undo()
    said = []
    train(_tiny(), DATA, str(out), resume=True, **dict(QUIET, log=said.append))
    assert said[0] == f"resuming {out} after epoch 0"


def test_ctrl_c_outside_the_training_loop_is_one_line_and_130(tmp_path, monkeypatch):
    """Ctrl-C while a command loads its data or writes its report (outside train()'s handlers): exit 130 and one
    line, no traceback; the run's files written so far stay whole (atomic writes)."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_mod, "load", interrupted)
    r = convvit("train", "--epochs", "1", "--no-progress", "--out", tmp_path / "run")
    assert r.returncode == 130 and r.stderr.strip().splitlines() == ["convvit: interrupted"], r
    assert not (tmp_path / "run").exists()
