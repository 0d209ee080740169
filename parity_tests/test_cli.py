"""``convvit check``: the table, the exit status, the options, and one-line errors (status 2)."""

import subprocess
import sys

import pytest
import torch

import torch_vit
from torch_vit import cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "torch_vit.cli", *args], capture_output=True, text=True, timeout=120)


def test_check_seed_config_passes():
    r = run("check")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "59,818 parameters" in out and "all " in out and "checks passed" in out
    for name in ("logits", "loss", "input grad", "embedding.pos_embedding", "transformer.layers.3.1.fn.net.2.bias",
                 "mlp_head.3.weight"):
        assert out.count(f"  {name} ") == 2, name  # one row in float64, one in float32
    assert "FAIL" not in out
    assert out.count("finite differences") == 1


def test_check_options_and_checkpoint(tmp_path):
    t = torch_vit.ViT((12, 8), 4, 1, 12, 2, 3, num_classes=4)
    torch_vit.save_checkpoint(t, tmp_path / "c.pt")
    r = run("check", "--checkpoint", str(tmp_path / "c.pt"), "--batch", "3", "--label-smoothing", "0.1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ViT((12, 8), 4, 1, 12, 2, 3, 4)" in r.stdout and "checkpoint" in r.stdout
    r = run("check", "--image-size", "16x12", "--patch-size", "4", "--dim", "8", "--depth", "1",
            "--head-channels", "8", "--batch", "1", "--seed", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ViT((16, 12), 4, 3, 8, 1, 8, 10)" in r.stdout


def test_check_fails_with_status_1_when_numpy_is_wrong(monkeypatch, capsys):
    """Break one line of the NumPy backward (the softmax gradient over the wrong axis): the check
    must see it, print FAIL on the affected rows and return 1."""
    import numpy_vit.model as model

    real = model.softmax_backward
    monkeypatch.setattr(model, "softmax_backward", lambda dy, y, axis: real(dy, y, axis=-1))
    args = cli.build_parser().parse_args(["check", "--dim", "8", "--depth", "1", "--image-size", "8",
                                          "--head-channels", "4", "--batch", "2"])
    assert cli.check(args) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "FAILED" in out
    assert any("fn.q.weight" in line and "FAIL" in line for line in out.splitlines())


@pytest.mark.parametrize("args, expected", [
    (["check", "--image-size", "30", "--patch-size", "4"], "image_size (30, 30) must be divisible by patch_size"),
    (["check", "--dim", "30"], "embedding_dim 30 must be divisible by head_channels"),
    (["check", "--batch", "0"], "expected a positive integer, got '0'"),
    (["check", "--label-smoothing", "nan"], "expected a finite number in [0, 1], got 'nan'"),
    (["check", "--image-size", "3x"], "expected N or HxW"),
    (["check", "--checkpoint", "/nonexistent/c.pt"], "no such file"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_status_2(args, expected):
    r = run(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convvit: error:") and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_non_finite_checkpoint_is_status_2(tmp_path):
    t = torch_vit.ViT(8, 2, 3, 8, 1, 4)
    sd = t.state_dict()
    sd["embedding.pos_embedding"][0, 0, 0, 0] = float("inf")
    torch.save(sd, tmp_path / "inf.pt")
    r = run("check", "--checkpoint", str(tmp_path / "inf.pt"), "--head-channels", "4")
    assert r.returncode == 2
    assert "expected finite weights, got NaN or inf in embedding.pos_embedding" in r.stderr
