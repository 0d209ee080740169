"""The weights and sample images that ship inside numpy_vit: the record says how they were made and what they
reached, the NumPy and torch models built from them agree, normalize is the training's normalisation, and the
trained model classifies the sample images far above chance."""

import hashlib
import json
import pathlib

import numpy as np
import pytest
import torch

import numpy_vit
import torch_vit
from numpy_vit.pretrained import WEIGHTS
from torch_vit.augment import normalize as torch_normalize

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_the_record_names_the_run_and_matches_the_weights():
    info = numpy_vit.pretrained_info()
    assert info["sha256"] == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert info["recipe"] == "default" and "convvit train --data imagefolder:" in info["command"]
    run = json.loads((ROOT / info["record"] / "run.json").read_text())
    report = json.loads((ROOT / info["record"] / "report.json").read_text())
    assert info["test_acc"] == run["test_acc"] == round(100 * report["test_acc"], 2)
    assert info["test_acc"] >= 72.0  # the bar for the default recipe
    assert info["mean"] == info["train_config"]["mean"] and info["std"] == info["train_config"]["std"]
    assert WEIGHTS.stat().st_size < 300_000


def test_sample_images_are_one_uint8_image_per_class():
    images, labels, names = numpy_vit.sample_images()
    assert images.shape == (10, 3, 32, 32) and images.dtype == np.uint8
    assert labels.tolist() == list(range(10)) and names == CLASSES
    assert len({img.tobytes() for img in images}) == 10 and images.std() > 20  # ten different real pictures


def test_normalize_is_the_trainings_normalisation():
    images, _, _ = numpy_vit.sample_images()
    mine = numpy_vit.normalize(images)
    assert mine.dtype == np.float32
    info = numpy_vit.pretrained_info()
    np.testing.assert_array_equal(mine, torch_normalize(torch.from_numpy(images), info["mean"], info["std"]).numpy())
    # by hand: a white pixel in the red channel is (1 - 0.4914) / 0.2471
    white = np.full((1, 3, 1, 1), 255, np.uint8)
    assert numpy_vit.normalize(white, np.float64)[0, 0, 0, 0] == pytest.approx((1 - 0.4914) / 0.2471, rel=1e-6)


@pytest.mark.parametrize("bad, what", [(np.zeros((3, 32, 32), np.uint8), "(3, 32, 32)"),
                                       (np.zeros((1, 3, 8, 8), np.float32), "float32")])
def test_normalize_refuses_what_is_not_uint8_images(bad, what):
    with pytest.raises(ValueError, match=r"normalize: expected uint8 images of shape \(B, 3, H, W\), got .*"
                                         + what.replace("(", r"\(").replace(")", r"\)")):
        numpy_vit.normalize(bad)


@pytest.mark.parity
def test_numpy_and_torch_pretrained_agree_and_classify_the_samples():
    images, labels, _ = numpy_vit.sample_images()
    m64 = numpy_vit.pretrained(np.float64)
    t = torch_vit.pretrained().double()
    x = numpy_vit.normalize(images, np.float64)
    logits = m64.forward(x)
    with torch.no_grad():
        ref = t(torch.from_numpy(x)).numpy()
    assert np.abs(logits - ref).max() <= 1e-10 * np.abs(ref).max()
    logits32 = numpy_vit.pretrained().forward(numpy_vit.normalize(images))
    assert logits32.dtype == np.float32 and (logits32.argmax(1) == logits.argmax(1)).all()
    assert (logits.argmax(1) == labels).sum() >= 6  # chance is 1 in 10
