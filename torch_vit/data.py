"""Training data as tensors in memory: one uint8 tensor (N, 3, H, W) and one int64 label tensor per
split, from torchvision's CIFAR-10, from an image folder (decoded once, then cached), or generated.

    --data cifar10                torchvision's CIFAR10 under --data-dir (downloaded if the network allows)
    --data imagefolder:PATH       PATH/train/<class>/* and PATH/test/<class>/*, any size, resized
    --data synthetic              a small generated dataset that the model can learn (offline smoke runs)
"""

import hashlib
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch

from numpy_vit.io import atomic_write


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """A data source that cannot be read: one line saying what was expected and what was found."""


@dataclass
class Data:
    train_x: torch.Tensor  # (N, 3, H, W) uint8
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list
    source: str


def load(spec, size=(32, 32), data_dir="data", cache_dir=None, progress=True, synthetic_size=(2000, 500)):
    """A Data from a --data spec: 'cifar10', 'imagefolder:PATH' or 'synthetic'."""
    if spec == "cifar10":
        return load_cifar10(data_dir)
    if spec.startswith("imagefolder:"):
        return load_imagefolder(spec.split(":", 1)[1], size, cache_dir, progress)
    if spec == "synthetic":
        return make_synthetic(*synthetic_size, size=size)
    raise DataError(f"--data: expected cifar10, imagefolder:PATH or synthetic, got {spec!r}")


def load_cifar10(data_dir):
    import torchvision

    splits = []
    for train in (True, False):
        try:
            ds = torchvision.datasets.CIFAR10(data_dir, train=train, download=True)
        except Exception as e:  # no network, a broken archive, a read-only folder
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"CIFAR-10: expected the files under {os.path.abspath(data_dir)}/cifar-10-batches-py "
                            f"or a download; the download failed ({reason})") from None
        splits.append((torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                       torch.tensor(ds.targets, dtype=torch.int64)))
    (tx, ty), (vx, vy) = splits
    return Data(tx, ty, vx, vy, list(ds.classes), f"cifar10:{os.path.abspath(data_dir)}")


def _list_split(root, split):
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise DataError(f"imagefolder: expected a folder {folder} with one subfolder per class")
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    files = [(os.path.join(folder, c, f), i) for i, c in enumerate(classes)
             for f in sorted(os.listdir(os.path.join(folder, c))) if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not files:
        raise DataError(f"imagefolder: expected images in {folder}/<class>/, found none")
    return classes, files


def _decode(files, size, progress, desc):
    from PIL import Image
    from tqdm import tqdm

    h, w = size
    out = np.empty((len(files), h, w, 3), np.uint8)
    for k, (path, _) in enumerate(tqdm(files, desc=desc, unit="img", disable=not progress, mininterval=1)):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (w, h):
                    im = im.resize((w, h), Image.BILINEAR)
                out[k] = np.asarray(im)
        except OSError as e:
            raise DataError(f"imagefolder: cannot decode {path} ({e})") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), torch.tensor([c for _, c in files])


def load_imagefolder(root, size=(32, 32), cache_dir=None, progress=True):
    """Decode every image of root/train and root/test once, resized to ``size``, and cache the
    tensors (keyed by the folder, its file list and sizes, and the image size) for later runs."""
    root = os.path.abspath(root)
    (classes, train_files), (test_classes, test_files) = _list_split(root, "train"), _list_split(root, "test")
    if classes != test_classes:
        raise DataError(f"imagefolder: expected the same classes in train and test, got {classes} and {test_classes}")
    h, w = size
    key = hashlib.sha256(repr((root, h, w, [(p, os.path.getsize(p), c) for p, c in train_files + test_files]))
                         .encode()).hexdigest()[:16]
    cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "convvit")
    cache = os.path.join(cache_dir, f"imagefolder-{h}x{w}-{key}.pt")
    if os.path.exists(cache):
        try:
            d = torch.load(cache, weights_only=True)
            return Data(d["train_x"], d["train_y"], d["test_x"], d["test_y"], classes, f"imagefolder:{root}")
        except Exception:
            pass  # a broken cache is rebuilt below
    tx, ty = _decode(train_files, size, progress, "decoding train")
    vx, vy = _decode(test_files, size, progress, "decoding test")
    try:
        os.makedirs(cache_dir, exist_ok=True)
        atomic_write(cache, lambda f: torch.save(dict(train_x=tx, train_y=ty, test_x=vx, test_y=vy), f))
    except OSError as e:  # the images are decoded: a cache that cannot be written costs the next run the decoding only
        print(f"warning: --cache-dir {cache_dir}: expected a folder to write the decoded images to, got "
              f"{e.strerror or type(e).__name__}; not cached", file=sys.stderr)
    return Data(tx, ty, vx, vy, classes, f"imagefolder:{root}")


def sample_data():
    """The ten sample images that ship with numpy_vit (the first CIFAR-10 test image of each class) as a
    Data whose test split they are; its train split is empty."""
    from numpy_vit import sample_images

    images, labels, classes = sample_images()
    empty = torch.zeros((0,) + images.shape[1:], dtype=torch.uint8)
    return Data(empty, torch.zeros(0, dtype=torch.int64), torch.from_numpy(images), torch.from_numpy(labels),
                classes, "samples")


def make_synthetic(n_train=2000, n_test=500, size=(32, 32), num_classes=10, seed=1234):
    """Images a small model can learn but not trivially: each class has its own colour and its own
    stripe orientation and frequency, drawn under noise, a random phase and random brightness."""
    g = np.random.default_rng(seed)
    h, w = size
    colours = g.uniform(0.2, 0.8, (num_classes, 3))
    angles = np.linspace(0, np.pi, num_classes, endpoint=False)
    freqs = 2 * np.pi * g.uniform(2, 5, num_classes) / max(h, w)
    yy, xx = np.mgrid[0:h, 0:w]

    def split(n, rng):
        y = rng.integers(0, num_classes, n)
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        proj = xx * np.cos(angles[y])[:, None, None] + yy * np.sin(angles[y])[:, None, None]
        stripes = 0.5 + 0.5 * np.sin(proj * freqs[y][:, None, None] + phase)  # (n, H, W)
        img = colours[y][:, :, None, None] * (0.5 + stripes[:, None]) * rng.uniform(0.7, 1.3, (n, 1, 1, 1))
        img = img + rng.normal(0, 0.15, img.shape)
        return (torch.from_numpy((np.clip(img, 0, 1) * 255).round().astype(np.uint8)),
                torch.from_numpy(y.astype(np.int64)))

    tx, ty = split(n_train, g)
    vx, vy = split(n_test, g)
    return Data(tx, ty, vx, vy, [f"class{i}" for i in range(num_classes)], "synthetic")
