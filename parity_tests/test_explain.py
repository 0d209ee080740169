"""convvit gradcam and convvit attention on a model and data the test makes: the pictures are real
PNGs, NumPy agrees with torch and pytorch-grad-cam, and bad input is one line (status 2)."""

import json
import re

import numpy as np
import pytest
from conftest import convvit, usage_error
from PIL import Image

import torch_vit
from torch_vit import data as data_mod
from torch_vit.attention import entropy
from torch_vit.explain import attention, gradcam
from torch_vit.train import make_config, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = make_config("default", epochs=1, seed=0)
    data = data_mod.make_synthetic(600, 200)
    model, _ = train(cfg, data, str(out), progress=False, log=lambda *a: None, device="cpu")
    return model, cfg, data, out


def _png(path, min_w, min_h):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= min_w and im.size[1] >= min_h, (path, im.size)


def test_gradcam_misclassified_and_correct(trained, tmp_path):
    model, cfg, data, _ = trained
    logs = []
    rows = gradcam(model, data, cfg, str(tmp_path), n=4, log=logs.append)
    assert len(rows) == 4 and all(r["label"] != r["pred"] for r in rows)
    assert [r["index"] for r in rows] == sorted(r["index"] for r in rows)
    assert all(r["cam_true"].shape == (32, 32) and 0 <= r["cam_true"].min() and r["cam_true"].max() <= 1 for r in rows)
    assert any("largest difference" in line for line in logs)
    _png(tmp_path / "gradcam.png", 600, 4 * 120)
    for r in rows:
        _png(tmp_path / f"gradcam_{r['index']}.png", 600, 150)
    right = gradcam(model, data, cfg, str(tmp_path / "ok"), n=2, correct=True, layer="transformer.layers.0",
                    log=lambda *a: None)
    assert len(right) == 2 and all(r["label"] == r["pred"] for r in right)
    chosen = gradcam(model, data, cfg, str(tmp_path / "idx"), indices=[5, 1], method="gradcam++", log=lambda *a: None)
    assert [r["index"] for r in chosen] == [5, 1]
    spread = gradcam(model, data, cfg, str(tmp_path / "spread"), per_class=1, log=lambda *a: None)
    labels = [r["label"] for r in spread]
    assert len(labels) > 1 and labels == sorted(set(labels)) and all(r["label"] != r["pred"] for r in spread)
    _png(tmp_path / "spread" / "gradcam.png", 600, len(spread) * 120)


def test_attention_command_pictures_and_entropy(trained, tmp_path):
    model, cfg, data, _ = trained
    logs = []
    maps = attention(model, data, cfg, str(tmp_path), index=7, log=logs.append)
    assert len(maps) == 4 and maps[0].shape == (4, 8, 8)
    rows = [line for line in logs if line.startswith("  block ")]
    assert len(rows) == 4
    for b, line in enumerate(rows):  # each head's mean column entropy, as printed, is that of its map
        printed = [float(e) for e in re.findall(r"head \d+ (\S+)", line)]
        assert printed == pytest.approx([float(e) for e in entropy(maps[b])], abs=0.0051), line
    assert float(logs[-1].split()[-1]) < 1e-5  # NumPy against torch
    _png(tmp_path / "attention_7.png", 500, 500)
    _png(tmp_path / "positional.png", 300, 300)


@pytest.mark.parametrize("args, expected", [
    (["gradcam", "--layer", "transformer.layers.9"], "grad_cam layer: expected None or one of embedding, "),
    (["gradcam", "--method", "magic"], "--method: expected one of gradcam"),
    (["attention", "--index", "100000", "--data", "synthetic"], "--index: expected 0 to 499, got 100000"),
    (["attention", "--index", "10"], "--index: expected 0 to 9, got 10"),  # the ten sample images
    (["gradcam", "--per-class", "0"], "--per-class: expected a positive integer, got '0'"),
    (["gradcam", "--per-class", "1", "--index", "3"], "--per-class and --index: expected one of them, got both"),
])
def test_bad_input_is_one_line(trained, args, expected):
    _, _, _, out = trained
    assert expected in usage_error(*args, "--checkpoint", out / "checkpoint.pt", "--no-progress", "--out", out / "x")


def test_checkpoint_of_another_shape_is_one_line(tmp_path):
    t = torch_vit.ViT(16, 2, 3, 16, 1, 8, num_classes=4)
    torch_vit.save_checkpoint(t, tmp_path / "c.pt")
    line = usage_error("gradcam", "--checkpoint", tmp_path / "c.pt", "--data", "synthetic", "--no-progress")
    assert "--data: the checkpoint has 4 classes, the data 10" in line


def test_without_checkpoint_and_data_the_commands_use_the_bundled_weights_and_samples(tmp_path):
    """gradcam and attention with neither --checkpoint nor --data: the weights and the ten sample images that
    ship with numpy_vit, each said in one line; gradcam picks exactly the samples the model gets wrong."""
    import numpy_vit

    images, labels, _ = numpy_vit.sample_images()
    wrong = np.flatnonzero(numpy_vit.pretrained().forward(numpy_vit.normalize(images)).argmax(1) != labels)
    r = convvit("gradcam", "--out", tmp_path / "g")
    assert r.returncode == 0, r.stderr
    assert "no --checkpoint: the default recipe's weights that ship with numpy_vit" in r.stdout
    assert "no --data: the ten sample images that ship with numpy_vit" in r.stdout
    assert f"on {len(wrong)} misclassified test images: {', '.join(map(str, wrong))};" in r.stdout
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == sorted(
        ["gradcam.png"] + [f"gradcam_{i}.png" for i in wrong])
    r = convvit("attention", "--index", "3", "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    assert "test image 3 (cat)" in r.stdout and "no --data: the ten sample images" in r.stdout
    _png(tmp_path / "a" / "attention_3.png", 500, 500)


def test_evaluate_without_checkpoint_evaluates_the_bundled_weights(tmp_path):
    r = convvit("evaluate", "--data", "synthetic", "--no-progress", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no --checkpoint: the default recipe's weights that ship with numpy_vit" in r.stdout
    assert json.loads((tmp_path / "report.json").read_text())["test_images"] == 500


def test_samples_for_a_checkpoint_of_another_size_is_one_line(tmp_path):
    torch_vit.save_checkpoint(torch_vit.ViT(16, 2, 3, 16, 1, 8), tmp_path / "c.pt")
    line = usage_error("attention", "--checkpoint", tmp_path / "c.pt", "--index", "0")
    assert "--data: the sample images are 32x32, the checkpoint takes 16x16; give --data SOURCE" in line
