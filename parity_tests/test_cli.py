"""``convvit check``: the table, the exit status, the options, and one-line errors (status 2).

The commands run in this process (torch_vit.cli.main, see conftest.py); one test runs a bad command
in a fresh interpreter, for the contract only a real process shows: exit status 2, one line on
stderr, no traceback."""

import pytest
import torch
from conftest import convvit, convvit_process, usage_error

import torch_vit
from torch_vit import cli


def test_check_seed_config_passes():
    r = convvit("check")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "convvit check: ViT((32, 32), 2, 3, 32, 4, 8, 10), 59,818 parameters" in out  # seed_config()
    assert "all " in out and "checks passed" in out
    for name in ("logits", "loss", "input grad", "embedding.pos_embedding", "transformer.layers.3.1.fn.net.2.bias",
                 "mlp_head.3.weight"):
        assert out.count(f"  {name} ") == 2, name  # one row in float64, one in float32
    assert "FAIL" not in out
    assert out.count("finite differences") == 1


def test_check_options_and_checkpoint(tmp_path):
    t = torch_vit.ViT((12, 8), 4, 1, 12, 2, 3, num_classes=4)
    torch_vit.save_checkpoint(t, tmp_path / "c.pt")
    r = convvit("check", "--checkpoint", str(tmp_path / "c.pt"), "--batch", "3", "--label-smoothing", "0.1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ViT((12, 8), 4, 1, 12, 2, 3, 4)" in r.stdout and "checkpoint" in r.stdout
    r = convvit("check", "--image-size", "16x12", "--patch-size", "4", "--dim", "8", "--depth", "1",
            "--head-channels", "8", "--batch", "1", "--seed", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ViT((16, 12), 4, 3, 8, 1, 8, 10)" in r.stdout


@pytest.mark.parity
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
    assert expected in usage_error(*args)


def test_bad_input_in_a_real_process_is_status_2_one_line_no_traceback():
    """``python -m torch_vit.cli``, as a user runs it, on input that fails deep in a training run
    (train -> the NumPy backend, after the imports and the data): exit status 2, one line on stderr
    and nothing else there (no warning from an import, no traceback)."""
    r = convvit_process("train", "--no-progress", "--epochs", "1", "--backend", "numpy", "--device", "cuda",
                        timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr == "convvit: error: --backend numpy runs on the CPU, got --device cuda\n", r.stderr


def test_non_finite_checkpoint_is_status_2(tmp_path):
    t = torch_vit.ViT(8, 2, 3, 8, 1, 4)
    sd = t.state_dict()
    sd["embedding.pos_embedding"][0, 0, 0, 0] = float("inf")
    torch.save(sd, tmp_path / "inf.pt")
    line = usage_error("check", "--checkpoint", str(tmp_path / "inf.pt"), "--head-channels", "4")
    assert "expected finite weights, got NaN or inf in embedding.pos_embedding" in line
