"""Weights move between the two models through a plain .npz and torch checkpoints, atomically,
and a broken or foreign file gives one clear line."""

import json
import os

import numpy as np
import pytest
import torch

import numpy_vit as nv
import torch_vit


def _same(a, b):
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_npz_round_trip_torch_to_numpy_to_torch(tmp_path):
    t = torch_vit.ViT((16, 12), 2, 3, 8, 2, 4, num_classes=5)
    torch_vit.export_npz(t, tmp_path / "w.npz")
    arrays = nv.load_npz(tmp_path / "w.npz")
    _same(arrays, {k: v.numpy() for k, v in t.state_dict().items()})
    n = nv.ViT((16, 12), 2, 3, 8, 2, 4, 5, dtype=np.float32, rng=1).load_state_dict(arrays)
    nv.save_npz(tmp_path / "n.npz", n.state_dict())
    t2 = torch_vit.import_npz(torch_vit.ViT((16, 12), 2, 3, 8, 2, 4, num_classes=5), tmp_path / "n.npz")
    _same({k: v.numpy() for k, v in t2.state_dict().items()}, {k: v.numpy() for k, v in t.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 12)).astype(np.float32)
    np.testing.assert_allclose(n.forward(x), t(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_npz_is_plain(tmp_path):
    """np.load reads it with no pickle, and its keys are the seed's state-dict names."""
    n = nv.ViT(8, 2, 3, 8, 1, 4, rng=0)
    nv.save_npz(tmp_path / "w.npz", n.state_dict())
    with np.load(tmp_path / "w.npz", allow_pickle=False) as z:
        assert sorted(z.files) == sorted(n.state_dict())


def test_import_npz_mismatch_is_one_line(tmp_path):
    nv.save_npz(tmp_path / "small.npz", nv.ViT(8, 2, 3, 8, 1, 4, rng=0).state_dict())
    t = torch_vit.ViT(8, 2, 3, 8, 2, 4)
    before = {k: v.clone() for k, v in t.state_dict().items()}
    with pytest.raises(ValueError) as e:
        torch_vit.import_npz(t, tmp_path / "small.npz")
    msg = str(e.value)
    assert "\n" not in msg and "missing keys: transformer.layers.1.0.lnorm.weight" in msg
    for k, v in t.state_dict().items():
        assert torch.equal(v, before[k])


def test_save_npz_is_atomic(tmp_path, monkeypatch):
    """A write that dies half way leaves the old file whole and no temporary file behind."""
    path = tmp_path / "w.npz"
    nv.save_npz(path, {"a": np.arange(3.0)})

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        nv.save_npz(path, {"a": np.zeros(5)})
    np.testing.assert_array_equal(nv.load_npz(path)["a"], np.arange(3.0))
    assert os.listdir(tmp_path) == ["w.npz"]


def test_write_json_makes_the_folder_and_keeps_the_old_file_on_failure(tmp_path):
    """The benchmarks' --out: a folder that does not exist yet is made; an object JSON cannot write
    leaves the earlier file whole and no temporary file behind."""
    path = tmp_path / "new" / "r.json"
    nv.io.write_json(path, {"a": [1, 2.5]})
    assert json.loads(path.read_text()) == {"a": [1, 2.5]}
    with pytest.raises(TypeError):
        nv.io.write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": [1, 2.5]}
    assert os.listdir(path.parent) == ["r.json"]


def test_checkpoint_round_trip_keeps_config(tmp_path):
    t = torch_vit.ViT((16, 8), 4, 1, 12, 3, 3, num_classes=4, approximate="tanh")
    torch_vit.save_checkpoint(t, tmp_path / "c.pt", epoch=7)
    loaded, ckpt = torch_vit.load_checkpoint(str(tmp_path / "c.pt"))
    assert loaded.config == t.config and ckpt["epoch"] == 7
    _same({k: v.numpy() for k, v in loaded.state_dict().items()}, {k: v.numpy() for k, v in t.state_dict().items()})


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not a dict", "nan", "wrong shape", "missing"])
def test_bad_checkpoint_is_one_line(tmp_path, damage):
    path = tmp_path / "c.pt"
    t = torch_vit.ViT(8, 2, 3, 8, 1, 4)
    torch_vit.save_checkpoint(t, path)
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        expected = "expected a complete torch checkpoint"
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
        expected = "expected a torch checkpoint, got a file that is not one"
    elif damage == "not a dict":
        torch.save([1, 2, 3], path)
        expected = "expected a dict"
    elif damage == "nan":
        sd = t.state_dict()
        sd["norm.weight"][0] = float("nan")
        torch.save(sd, path)
        expected = "expected finite weights, got NaN or inf in norm.weight"
    elif damage == "wrong shape":
        sd = t.state_dict()
        sd["transformer.layers.0.0.fn.k.weight"] = torch.zeros(8, 4, 1, 1)
        torch.save(sd, path)
        expected = r"shape mismatches: transformer.layers.0.0.fn.k.weight expected \(8, 8, 1, 1\) got \(8, 4, 1, 1\)"
    else:
        path = tmp_path / "nowhere.pt"
        expected = "no such file"
    with pytest.raises(ValueError, match=expected) as e:
        torch_vit.load_checkpoint(str(path))
    assert "\n" not in str(e.value)


def test_a_checkpoint_it_may_not_read_is_one_line(tmp_path, monkeypatch):
    """Root reads any file, so the refusal is torch.load's, as an unprivileged user would meet it."""
    path = tmp_path / "c.pt"
    torch_vit.save_checkpoint(torch_vit.ViT(8, 2, 3, 8, 1, 8), path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(ValueError, match=f"^checkpoint {path}: expected a file this user may read, got permission "
                                         "denied$"):
        torch_vit.load_checkpoint(str(path))


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    """A checkpoint write killed half way (here: torch.save writes part of the file, then dies)
    leaves the previous checkpoint whole and loadable, and no temporary file behind."""
    path = tmp_path / "c.pt"
    t = torch_vit.ViT(8, 2, 3, 8, 1, 4)
    torch_vit.save_checkpoint(t, path, epoch=0)
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        torch_vit.save_checkpoint(torch_vit.ViT(8, 2, 3, 8, 1, 4), path, epoch=1)
    monkeypatch.setattr(torch, "save", real_save)
    _, ckpt = torch_vit.load_checkpoint(str(path))
    assert ckpt["epoch"] == 0
    assert os.listdir(tmp_path) == ["c.pt"]
