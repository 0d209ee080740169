"""State dicts in and out: checked loading, a plain ``.npz`` written atomically, and the model's
configuration read back from a state dict's shapes."""

import json
import os
import re
import tempfile
import zipfile

import numpy as np


def to_numpy(value):
    """An ndarray from an array-like; a torch tensor (any device) is detached and copied to the CPU
    without this module importing torch."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def check_state_dict(model, arrays_by_name):
    """Return {name: ndarray} if ``arrays_by_name`` has exactly the model's parameters, each of its
    shape and a floating dtype; otherwise raise one ValueError line naming every problem."""
    if not hasattr(arrays_by_name, "keys"):
        raise TypeError(f"state dict: expected a mapping of name to array, got {type(arrays_by_name).__name__}")
    expected = dict(model.named_parameters())
    given = {name: to_numpy(arrays_by_name[name]) for name in arrays_by_name.keys()}
    missing = [n for n in expected if n not in given]
    unexpected = [n for n in given if n not in expected]
    misshaped = [f"{n} expected {tuple(expected[n].shape)} got {tuple(given[n].shape)}"
                 for n in expected if n in given and given[n].shape != expected[n].shape]
    not_float = [f"{n} ({given[n].dtype})" for n in expected
                 if n in given and not np.issubdtype(given[n].dtype, np.floating)]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"shape mismatches: {'; '.join(misshaped)}")
    if not_float:
        problems.append(f"expected floating-point tensors, got: {', '.join(not_float)}")
    if problems:
        raise ValueError(f"state dict does not fit {type(model).__name__}: " + " | ".join(problems))
    return given


def atomic_write(path, write, binary=True, suffix=""):
    """Write ``path`` atomically: ``write(f)`` fills a temporary file in the same folder, which is
    flushed, fsynced, given a normal file's mode and only then renamed over ``path``; on any failure
    (an exception, Ctrl-C) the temporary file is removed and ``path`` is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates it 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj):
    """Write ``obj`` to ``path`` as indented JSON, atomically, making its folder first (the
    benchmarks' ``--out``)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1) + "\n"), binary=False)


def check_new_file(path, overwrite=False):
    """A one-line ValueError when ``path`` (a command's ``--out`` file of results, e.g. a benchmark's JSON)
    exists and ``overwrite`` is not set: earlier results are replaced only when asked. None passes."""
    if path and os.path.exists(path) and not overwrite:
        raise ValueError(f"--out {path}: expected a new file, it holds earlier results; --overwrite replaces it")


def save_npz(path, arrays_by_name):
    """Write {name: array} to ``path`` as a plain .npz, atomically."""
    arrays = {name: to_numpy(value) for name, value in arrays_by_name.items()}
    atomic_write(path, lambda f: np.savez(f, **arrays), suffix=".npz")


def load_npz(path):
    """{name: ndarray} from a .npz written by ``save_npz`` (or ``np.savez``)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"no such .npz file: {path}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    not_arrays = [name for name, value in arrays.items() if not isinstance(value, np.ndarray)]
    if not_arrays:
        raise ValueError(f"{path}: not a readable .npz file (entries that are not .npy arrays: {', '.join(not_arrays)})")
    return arrays


def infer_config(state_dict):
    """The ViT arguments that a seed state dict's shapes fix: image_size, patch_size, in_channels,
    embedding_dim, depth, num_classes. (head_channels leaves no trace in the shapes: pass it.)"""
    try:
        patch = state_dict["embedding.patch.weight"]  # (C, in, p, p)
        pos = state_dict["embedding.pos_embedding"]  # (1, C, H/p, W/p)
        head = state_dict["mlp_head.3.weight"]  # (K, C)
    except KeyError as e:
        raise ValueError(f"state dict: expected the seed's keys, missing {e.args[0]}") from None
    embedding_dim, in_channels, p, _ = tuple(patch.shape)
    blocks = {int(m.group(1)) for k in state_dict.keys() if (m := re.match(r"transformer\.layers\.(\d+)\.", k))}
    return dict(image_size=(pos.shape[2] * p, pos.shape[3] * p), patch_size=p, in_channels=in_channels,
                embedding_dim=embedding_dim, depth=len(blocks), num_classes=head.shape[0])
