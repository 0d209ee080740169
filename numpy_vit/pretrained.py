"""What ships inside the package, so that a learner needs no data set, no network and no torch: the default
recipe's trained weights (float32 .npz, with a JSON of how they were made) and ten CIFAR-10 test images, one per
class.

    m = numpy_vit.pretrained()                      # numpy_vit.ViT with the trained weights
    images, labels, class_names = numpy_vit.sample_images()
    logits = m.forward(numpy_vit.normalize(images)) # (10, 10)

`benchmarks/bundle_pretrained.py` writes these files from a checkpoint and its run record.
"""

import json
import pathlib

import numpy as np

from .io import load_npz
from .model import ViT

DATA = pathlib.Path(__file__).resolve().parent / "data"
WEIGHTS = DATA / "pretrained_default.npz"
INFO = DATA / "pretrained_default.json"
SAMPLES = DATA / "sample_images.npz"


def pretrained_info():
    """The bundled weights' record: `command`, `recipe`, `data`, `test_acc`, `model` (the ViT's arguments),
    `mean` and `std` (the normalisation it was trained with), and where it came from."""
    return json.loads(INFO.read_text())


def pretrained_config():
    """The ViT arguments of the bundled weights (the same for numpy_vit.ViT and torch_vit.ViT)."""
    config = dict(pretrained_info()["model"])
    config["image_size"] = tuple(config["image_size"])
    return config


def pretrained(dtype=np.float32):
    """A numpy_vit.ViT holding the bundled default-recipe weights, in ``dtype`` (float32 or float64)."""
    return ViT(**pretrained_config(), dtype=dtype).load_state_dict(load_npz(WEIGHTS))


def sample_images():
    """(images (10, 3, 32, 32) uint8, labels (10,) int64, class_names list of 10 str): the first test image of
    each class of CIFAR-10 (JPEG q75 copy), in class order."""
    with np.load(SAMPLES) as d:
        return d["images"].copy(), d["labels"].astype(np.int64), [str(c) for c in d["class_names"]]


def normalize(images, dtype=np.float32):
    """uint8 images (B, 3, H, W) -> (images / 255 - mean) / std in ``dtype``, with the mean and std the bundled
    weights were trained with: what the model expects, as torch_vit's training and evaluation compute it."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"normalize: expected uint8 images of shape (B, 3, H, W), got {images.dtype} "
                         f"{images.shape}")
    info = pretrained_info()
    mean = np.asarray(info["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(info["std"], dtype=np.float32).reshape(1, 3, 1, 1)
    # torchvision's order, in float32: div(255), sub(mean), div(std)
    return ((images.astype(np.float32) / np.float32(255) - mean) / std).astype(dtype)
