"""``convvit train --optimizer muon``: torch.optim.Muon updates the transformer blocks' 1x1-conv weights
(through 2D views of them) exactly as it updates the same matrices on their own, AdamW the rest, and a
resumed run ends with the weights of a straight one."""

import copy

import pytest
import torch
import torch.nn.functional as F

from torch_vit import data as data_mod
from torch_vit.model import ViT
from torch_vit.train import TorchBackend, make_config, muon_names, train

from test_train import TINY, cli

QUIET = dict(progress=False, log=lambda *a: None, device="cpu")

pytestmark = pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")


def test_muon_names_are_the_blocks_1x1_conv_weights():
    model = ViT(image_size=(32, 32), patch_size=2, in_channels=3, embedding_dim=32, depth=4, head_channels=8,
                num_classes=10)
    names = muon_names(model)
    per_block = {"0.fn.k", "0.fn.q", "0.fn.v", "0.fn.unify_heads", "1.fn.net.0", "1.fn.net.2"}
    assert names == {f"transformer.layers.{i}.{m}.weight" for i in range(4) for m in per_block}
    shapes = dict(model.named_parameters())
    assert sum(shapes[n].numel() for n in names) == 4 * (4 * 32 * 32 + 2 * 32 * 128)


def test_one_step_is_muon_on_the_matrices_and_adamw_on_the_rest():
    """One step of the backend against the same step done by hand: the gradients clipped, torch.optim.Muon
    on a 2D copy of each 1x1 conv weight, torch.optim.AdamW on every other parameter."""
    cfg = make_config("default", **TINY, optimizer="muon", lr=0.02, weight_decay=0.1, clip=0.5)
    run = TorchBackend(cfg, torch.device("cpu"))
    ref = copy.deepcopy(run.model)
    initial = {n: p.detach().clone() for n, p in ref.named_parameters()}
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
    for _ in range(2):  # the second step uses Muon's momentum and AdamW's moments
        run.step(x, y, lr=0.02)

    hidden = muon_names(ref)
    matrices = {n: torch.nn.Parameter(p.detach().reshape(p.shape[0], -1).clone())
                for n, p in ref.named_parameters() if n in hidden}
    rest = [p for n, p in ref.named_parameters() if n not in hidden]
    muon = torch.optim.Muon(list(matrices.values()), lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW(rest, lr=0.02, weight_decay=0.1)
    for _ in range(2):
        ref.zero_grad()
        F.cross_entropy(ref(x.contiguous(memory_format=torch.channels_last)), y).backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        for n, p in ref.named_parameters():
            if n in hidden:
                matrices[n].grad = p.grad.reshape(matrices[n].shape)
        muon.step()
        adamw.step()
        with torch.no_grad():
            for n, p in ref.named_parameters():
                if n in hidden:
                    p.copy_(matrices[n].view(p.shape))

    got = dict(run.model.named_parameters())
    for n, p in ref.named_parameters():
        assert torch.allclose(got[n], p, rtol=1e-5, atol=1e-7), n
        assert not torch.allclose(p, initial[n]), n  # every parameter moved: the comparison is not of the start


def test_resume_with_muon_equals_a_straight_run(tmp_path):
    cfg = make_config("default", **{**TINY, "epochs": 2, "seed": 2, "optimizer": "muon"})
    data = data_mod.make_synthetic(256, 64, size=(16, 16))
    straight, _ = train(cfg, data, str(tmp_path / "a"), **QUIET)
    train(cfg, data, str(tmp_path / "b"), stop_after=1, **QUIET)
    resumed, history = train(cfg, data, str(tmp_path / "b"), resume=True, **QUIET)
    assert [r["epoch"] for r in history] == [0, 1]
    for (k, v), w in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, w), k
    ckpt = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert set(ckpt["optimizer"]) == {"adamw", "muon"} and ckpt["train_config"]["optimizer"] == "muon"


def test_muon_changes_the_run(tmp_path):
    data = data_mod.make_synthetic(256, 64, size=(16, 16))
    a, _ = train(make_config("default", **TINY, epochs=1), data, str(tmp_path / "a"), **QUIET)
    b, _ = train(make_config("default", **TINY, epochs=1, optimizer="muon"), data, str(tmp_path / "b"), **QUIET)
    name = sorted(muon_names(a))[0]
    assert not torch.allclose(a.state_dict()[name], b.state_dict()[name])


@pytest.mark.parametrize("args, expected", [
    (["--optimizer", "sgd"], "--optimizer: expected one of adamw, muon, got 'sgd'"),
    (["--optimizer", "muon", "--backend", "numpy"], "--optimizer muon: for the torch backend; --backend numpy has "
                                                    "AdamW only"),
])
def test_bad_optimizer_is_one_line(args, expected):
    r = cli("train", "--no-progress", "--epochs", "1", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], r.stderr
