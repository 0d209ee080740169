"""Weights in and out of torch_vit: the plain ``.npz`` that numpy_vit reads, and torch checkpoints
(``{"model": state_dict, "config": ViT arguments}``, or a bare state dict), written atomically."""

import os
import re
import zipfile

import numpy as np
import torch

import numpy_vit
from numpy_vit.io import atomic_write, check_state_dict

from .model import ViT

CONFIG_KEYS = ("image_size", "patch_size", "in_channels", "embedding_dim", "depth", "head_channels",
               "num_classes", "approximate")


def export_npz(model, path):
    """Write the torch model's state dict to ``path`` as a plain .npz (names unchanged)."""
    numpy_vit.save_npz(path, {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})


def import_npz(model, path):
    """Load a .npz written by ``export_npz`` or ``numpy_vit.save_npz`` into the torch model, strictly;
    a mismatch raises one ValueError line naming the missing, unexpected and misshaped tensors."""
    arrays = check_state_dict(model, numpy_vit.load_npz(path))
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}, strict=True)
    return model


def pretrained():
    """The torch ViT holding the default recipe's trained weights that ship with numpy_vit
    (``numpy_vit.pretrained_info()`` says how they were made)."""
    from numpy_vit.pretrained import WEIGHTS, pretrained_config

    return import_npz(ViT(**pretrained_config()), WEIGHTS).eval()


def numpy_twin(model, dtype=np.float32):
    """The numpy_vit.ViT of the same configuration holding this torch model's weights, in ``dtype``."""
    twin = numpy_vit.ViT(**model.config, dtype=dtype)
    return twin.load_state_dict(model.state_dict())


def save_checkpoint(model, path, **extra):
    """torch.save ``{"model": state_dict, "config": model.config, **extra}`` atomically: into a
    temporary file beside ``path``, renamed over it only once complete."""
    state = {"model": model.state_dict(), "config": dict(model.config), **extra}
    atomic_write(path, lambda f: torch.save(state, f), suffix=".pt")


def load_checkpoint(path, head_channels=None):
    """(torch ViT with the checkpoint's weights, the loaded dict).

    Accepts ``{"model": state_dict, "config": {...}}`` (what ``save_checkpoint`` writes) or a bare
    seed state dict, whose configuration is read from its shapes; ``head_channels`` (which no shape
    records) then defaults to the seed's 8 unless given. Every failure is one ValueError line."""
    if not os.path.isfile(path):
        raise _unfit(path, "expected a checkpoint file, got no such file")
    if os.path.getsize(path) == 0:
        raise _unfit(path, "expected a torch checkpoint, got an empty file")
    try:
        if zipfile.is_zipfile(path) and _holds_only_npy(path):
            ckpt = {"model": {k: torch.from_numpy(v) for k, v in numpy_vit.load_npz(path).items()}}  # a plain .npz
        else:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types, with paragraphs, for a truncated or foreign file
        raise _unfit(path, _load_failure(e)) from None
    if not isinstance(ckpt, dict):
        raise _unfit(path, f"expected a dict (state dict or {{'model', 'config'}}), got {type(ckpt).__name__}")
    state = ckpt["model"] if "model" in ckpt else ckpt
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _unfit(path, "expected a state dict of tensors under 'model'")
    try:
        config = dict(numpy_vit.infer_config(state), head_channels=8)
    except ValueError as e:  # not the seed's architecture
        raise _unfit(path, "expected a convvit ViT, got another model ("
                     + str(e).replace("state dict: expected the seed's keys, ", "") + ")") from None
    if "model" in ckpt:
        config.update({k: v for k, v in ckpt.get("config", {}).items() if k in CONFIG_KEYS})
    if head_channels is not None:
        config["head_channels"] = head_channels
    if isinstance(config["image_size"], list):
        config["image_size"] = tuple(config["image_size"])
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise _unfit(path, f"expected finite weights, got NaN or inf in {', '.join(bad)}")
    try:
        model = ViT(**{k: config[k] for k in CONFIG_KEYS if k in config})
        check_state_dict(model, state)
    except (ValueError, TypeError) as e:  # a config that does not fit its weights
        raise _unfit(path, str(e)) from None
    model.load_state_dict(state, strict=True)
    return model, ckpt


def _holds_only_npy(path):
    """Whether the zip archive at ``path`` is a plain .npz (only .npy members), not a torch checkpoint."""
    with zipfile.ZipFile(path) as z:
        return all(n.endswith(".npy") for n in z.namelist())


def _unfit(path, what):
    """One ValueError line "checkpoint PATH: WHAT" (the convvit command cuts it to 200 characters)."""
    return ValueError(" ".join(f"checkpoint {path}: {what}".split()))


def _load_failure(e):
    """What torch.load's (long, many-line) failure means, in a few words."""
    text = str(e)
    if isinstance(e, PermissionError):
        return "expected a file this user may read, got permission denied"
    if "central directory" in text or "zip archive" in text or isinstance(e, (EOFError, OSError)):
        return "expected a complete torch checkpoint (a zip archive), got a truncated or damaged file"
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"expected tensors and plain values only (weights_only), got a pickled {found.group(1)}"
    found = re.search(r"Unsupported operand \S+|invalid load key[^\n.]*", text)
    if found or "Weights only load failed" in text:
        return f"expected a torch checkpoint, got a file that is not one ({found.group(0) if found else type(e).__name__})"
    lines = [line for line in text.splitlines() if line.strip()]
    return f"expected a torch checkpoint, got a file that is not one ({type(e).__name__}{': ' + lines[0][:80] if lines else ''})"

