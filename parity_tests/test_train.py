"""convvit train and evaluate: learning on synthetic data, exact resume after a kill, atomic and
checked checkpoints, the image-folder loader, the outputs, and one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import EMA_CLI_ARGS, QUIET, TINY, convvit, paired, usage_error

import torch_vit
from torch_vit import data as data_mod
from torch_vit.cli import load_for_inspection
from torch_vit.train import make_config, predict, train


def test_synthetic_run_learns(tmp_path):
    """Four epochs of the seed architecture on the synthetic data: far above the 10% of chance."""
    cfg = make_config("default", epochs=4, lr=0.005, randaugment=None, erasing=0.0, seed=0)
    data = data_mod.make_synthetic(1500, 500)
    _, history = train(cfg, data, str(tmp_path), **QUIET)
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    assert history[-1]["test_acc"] >= 0.5, history
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_resume_equals_straight_run_in_process(tmp_path):
    data = data_mod.make_synthetic(300, 100, size=(16, 16))
    cfg = make_config("seed", epochs=3, **TINY)
    straight, _ = train(cfg, data, str(tmp_path / "a"), **QUIET)
    train(cfg, data, str(tmp_path / "b"), stop_after=1, **QUIET)
    assert len(open(tmp_path / "b" / "metrics.jsonl").readlines()) == 1
    resumed, history = train(cfg, data, str(tmp_path / "b"), resume=True, **QUIET)
    assert [r["epoch"] for r in history] == [0, 1, 2]
    for (k, v), w in paired(straight.state_dict(), resumed.state_dict()):
        assert torch.equal(v, w), k


def _full_pipe():
    """(read end, write end) of a pipe with no room left: a process whose stdout is its write end blocks
    at its first write (until the read end is drained, which the test never does)."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    for chunk in (b"x" * 65536, b"x"):  # whole pages, then a byte at a time into the last one
        try:
            while True:
                os.write(w, chunk)
        except BlockingIOError:
            pass
    os.set_blocking(w, True)
    return r, w


def test_resume_after_sigkill_gives_the_same_weights(ema_cli_run, tmp_path):
    """A real convvit train process (the session run's settings, conftest.EMA_CLI_ARGS) killed with
    SIGKILL after epoch 0, then --resume: the same weights (the average and the trained ones), bit for
    bit, and the same metrics as the session's uninterrupted run. The kill cannot come too late: the
    process writes to stdout through a pipe the test has filled, unbuffered, so it blocks at its first
    line, epoch 0's, printed after checkpoint.pt and metrics.jsonl are written, and stays there."""
    straight, _, _ = ema_cli_run
    out = tmp_path / "b"
    # unbuffered, so that epoch 0's line is written when printed; torch's threads as in the straight run
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(torch.get_num_threads()))
    read_end, write_end = _full_pipe()
    try:
        with open(tmp_path / "stderr.txt", "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "torch_vit.cli", *EMA_CLI_ARGS, "--out", str(out)],
                                    stdout=write_end, stderr=err, env=env)
        os.close(write_end)
        deadline = time.monotonic() + 600
        metrics = out / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            assert proc.poll() is None, f"exit {proc.returncode}: " + (tmp_path / "stderr.txt").read_text()
            assert time.monotonic() < deadline, "no epoch finished in 600 s"
            time.sleep(0.05)
        assert proc.poll() is None, "the process went past its blocked write"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        os.close(read_end)
    assert len(metrics.read_text().splitlines()) == 1  # killed after epoch 0, before epoch 1 ended
    resumed = convvit(*EMA_CLI_ARGS, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} after epoch 0" in resumed.stdout
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(out / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for part in ("model", "train_model"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    rows_a, rows_b = ([json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()] for d in (straight, out))
    for key in ("test_acc", "test_loss", "ema_test_acc", "train_loss"):
        assert [r[key] for r in rows_a] == [r[key] for r in rows_b], key


def test_outputs_and_evaluate_and_check(ema_cli_run):
    """The session's convvit train run (conftest.EMA_CLI_ARGS, with --ema): a line per epoch, metrics.jsonl,
    config.json with the settings given, the two pictures, report.json on every test image; the
    epoch's test accuracy is the trained weights' (kept as train_model), the report's the result's;
    convvit evaluate finds the report's accuracy again and convvit check passes on the checkpoint."""
    out, r, ev = ema_cli_run
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("ViT: Epoch:")]
    assert len(lines) == 2 and all("| Train Acc: " in l and ", Test Acc: " in l and ", Time: " in l and ", lr: " in l
                                   for l in lines)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all({"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "time"} <= set(r) for r in rows)
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 2 and config["recipe"] == "default" and config["data"] == "synthetic"
    assert config["betas"] == [0.85, 0.99] and config["no_decay"] == ["norm", "pos"] and config["pad_crop"] == 2
    for png in ("curves.png", "confusion.png"):
        from PIL import Image
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
    report = json.loads((out / "report.json").read_text())
    assert report["numpy_same_class"] == report["test_images"] == 500
    assert len(report["per_class_acc"]) == 10 and np.array(report["confusion"]).sum() == 500
    assert abs(report["test_acc"] - rows[-1]["ema_test_acc"]) < 1e-6  # the result: the average (test_ema.py)
    model, cfg, data = load_for_inspection(str(out / "checkpoint.pt"), progress=False)
    model.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["train_model"])
    model.to(memory_format=torch.channels_last)  # as in training
    logits = predict(model, data.test_x, cfg, torch.device("cpu"))
    assert (logits.argmax(1) == data.test_y).double().mean().item() == rows[-1]["test_acc"]
    assert ev.returncode == 0, ev.stderr
    assert json.loads((out / "ev" / "report.json").read_text())["test_acc"] == report["test_acc"]
    check = convvit("check", "--checkpoint", out / "checkpoint.pt", "--batch", "2")
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_resume_from_a_damaged_checkpoint_is_one_line(tmp_path, damage):
    out = tmp_path / "run"
    cfg = make_config("seed", epochs=1, **TINY)
    train(cfg, data_mod.make_synthetic(100, 50, size=(16, 16)), str(out), **QUIET)
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000] if damage == "truncated" else b"not a checkpoint" * 50)
    assert "torch checkpoint" in usage_error("train", "--data", "synthetic", "--out", out, "--resume",
                                                            "--no-progress")


def test_imagefolder_loader_reads_a_small_folder(tmp_path):
    from PIL import Image

    colours = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    for split, n in (("train", 3), ("test", 2)):
        for c, rgb in colours.items():
            (tmp_path / "ds" / split / c).mkdir(parents=True)
            for i in range(n):
                size = (40, 30) if i % 2 else (32, 32)  # any size: resized to the model's
                Image.new("RGB", size, rgb).save(tmp_path / "ds" / split / c / f"{i}.png")
            (tmp_path / "ds" / split / c / "notes.txt").write_text("not an image")
    d = data_mod.load(f"imagefolder:{tmp_path / 'ds'}", (32, 32), cache_dir=str(tmp_path / "cache"), progress=False)
    assert d.classes == ["cat", "dog"]
    assert d.train_x.shape == (6, 3, 32, 32) and d.train_x.dtype == torch.uint8 and d.test_x.shape == (4, 3, 32, 32)
    assert d.train_y.tolist() == [0, 0, 0, 1, 1, 1] and d.test_y.tolist() == [0, 0, 1, 1]
    assert torch.all(d.train_x[0, 0] == 255) and torch.all(d.train_x[0, 2] == 0) and torch.all(d.train_x[4, 2] == 255)
    assert len(os.listdir(tmp_path / "cache")) == 1
    again = data_mod.load(f"imagefolder:{tmp_path / 'ds'}", (32, 32), cache_dir=str(tmp_path / "cache"), progress=False)
    assert torch.equal(again.train_x, d.train_x)


def _image_folder(root, classes, n_train, n_test):
    """root/{train,test}/<class>/<i>.png: 32x32 images of one colour per class and index."""
    from PIL import Image

    for split, n in (("train", n_train), ("test", n_test)):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (80 * k % 256, 40 * i % 256, 255 - 80 * k % 256)).save(root / split / c / f"{i}.png")
    return root


def test_a_folder_of_three_classes_trains_a_head_of_three(tmp_path):
    """convvit train sizes the head to the data's classes (10 was fixed: a 3-class folder trained a 10-way head
    and failed in the report, a 12-class one in its first step); train() itself refuses a mismatch in one line."""
    _image_folder(tmp_path / "ds", ("a", "b", "c"), 8, 4)
    out = tmp_path / "run"
    r = convvit("train", "--data", f"imagefolder:{tmp_path / 'ds'}", "--cache-dir", tmp_path / "cache", "--epochs", "1",
                "--no-progress", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((out / "config.json").read_text())["num_classes"] == 3
    model, _ = torch_vit.load_checkpoint(str(out / "checkpoint.pt"))
    assert model.mlp_head[3].out_features == 3 and (out / "report.json").exists()
    with pytest.raises(ValueError, match=r"^data: expected 10 classes \(the model's num_classes\), got 3 "):
        train(make_config("default", **TINY), data_mod.load(f"imagefolder:{tmp_path / 'ds'}", (16, 16),
                                                            cache_dir=str(tmp_path / "cache"), progress=False),
              str(tmp_path / "api"), **QUIET)


@pytest.mark.parametrize("args, expected", [
    (["--data", "imagefolder:/nonexistent"], "imagefolder: expected a folder /nonexistent/train"),
    (["--data", "mnist"], "--data: expected cifar10, imagefolder:PATH or synthetic, got 'mnist'"),
    (["--recipe", "fast"], "--recipe: expected one of seed, default, got 'fast'"),
    (["--randaugment", "1"], "expected 2 comma-separated numbers or 'none', got '1'"),
    (["--no-decay", "norms"], "--no-decay: expected kinds among norm, bias, pos, got 'norms'"),
    (["--no-decay", "norm,"], "--no-decay: expected kinds among norm, bias, pos, got ''"),
    (["--randaugment", "1.5,9"], "expected 2 comma-separated numbers or 'none', got '1.5,9'"),
    (["--crop-scale", "0.5,inf"], "expected 2 comma-separated numbers or 'none', got '0.5,inf'"),
    (["--betas", "0.9,1"], "expected two comma-separated numbers in [0, 1), got '0.9,1'"),
    (["--betas", "nan,0.9"], "expected two comma-separated numbers in [0, 1), got 'nan,0.9'"),
    (["--pad-crop", "-2"], "--pad-crop: expected an integer >= 0, got '-2'"),
    (["--resume", "--out", "/nonexistent/run"], "--resume: expected /nonexistent/run/checkpoint.pt, found none"),
])
def test_train_bad_input_is_one_line(args, expected):
    assert expected in usage_error("train", "--no-progress", *args)


@pytest.mark.parametrize("args, expected", [
    (["--crop-scale=-1,0.5"], "--crop-scale: expected LO,HI with 0 < LO <= HI <= 1 (shares of the image's area), "
                              "got -1,0.5"),
    (["--crop-scale", "0.5,2"], "--crop-scale: expected LO,HI with 0 < LO <= HI <= 1"),
    (["--crop-scale", "0.9,0.5"], "--crop-scale: expected LO,HI with 0 < LO <= HI <= 1"),
    (["--pad-crop", "32"], "--pad-crop: expected 0 to 31 pixels (less than the image), got 32"),
    (["--randaugment", "1,31"], "--randaugment: expected OPS,MAGNITUDE with OPS >= 0 and MAGNITUDE 0 to 30, got 1,31"),
    (["--color-jitter=-0.1,0,0"], "--color-jitter: expected B,C,S each >= 0, got -0.1,0,0"),
    (["--seed", "20000000000000"], "--seed: expected an integer from 0 to 2**32 - 1, got 20000000000000"),
    (["--lr", "1e39"], "--lr: expected a learning rate from 0 to 3.4e+38 (float32's largest), got 1e+39"),
    (["--device", "gpu"], "argument --device: expected cpu, cuda or cuda:N, got 'gpu'"),
])
def test_train_settings_out_of_range_are_one_line_before_any_folder_is_made(tmp_path, args, expected):
    """Each was accepted (and trained on black or off-frame images), or failed later with a traceback or a line
    that did not name its flag, after making the --out folder."""
    line = usage_error("train", "--data", "synthetic", "--no-progress", "--out", tmp_path / "run", *args)
    assert expected in line, line
    assert not (tmp_path / "run").exists()


def test_out_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "run").write_text("not a folder")
    line = usage_error("train", "--data", "synthetic", "--no-progress", "--out", tmp_path / "run")
    assert line == f"convvit: error: --out {tmp_path / 'run'}: expected a folder (new or holding a run), got a file"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the line on a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line(tmp_path):
    line = usage_error("train", "--data", "synthetic", "--no-progress", "--device", "cuda", "--out", tmp_path / "run")
    assert line == "convvit: error: --device cuda: expected a CUDA device, this machine has none"
    assert not (tmp_path / "run").exists()


def test_the_inspection_commands_take_no_device():
    """They run on the CPU; --device was accepted and ignored."""
    assert "unrecognized arguments: --device cpu" in usage_error("evaluate", "--device", "cpu")


def test_a_cache_folder_that_cannot_be_written_is_a_warning(tmp_path, capsys):
    _image_folder(tmp_path / "ds", ("a", "b"), 1, 1)
    (tmp_path / "file").write_text("a file where the cache folder would be")
    d = data_mod.load(f"imagefolder:{tmp_path / 'ds'}", (8, 8), cache_dir=str(tmp_path / "file"), progress=False)
    assert d.train_x.shape == (2, 3, 8, 8)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: --cache-dir {tmp_path / 'file'}: expected a folder"), err


def test_cifar10_missing_and_no_download_names_the_folder(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(data_mod.DataError, match=f"CIFAR-10: expected the files under {tmp_path}/cifar-10-batches-py "
                                                 "or a download; the download failed"):
        data_mod.load("cifar10", data_dir=str(tmp_path))
