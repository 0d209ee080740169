"""``convvit train --optimizer muon``: torch.optim.Muon updates the transformer blocks' 1x1-conv weights
(through 2D views of them) exactly as it updates the same matrices on their own, AdamW the rest, and a
resumed run ends with the weights of a straight one. numpy_vit.optim.Muon is its twin: its Newton-Schulz
map is a polynomial of G's singular values with G's singular vectors, and its step is torch's to 1e-12 in
float64 once torch's bfloat16 cast in that map is patched out (``exact_torch_muon``), and within a few
percent of the update with it."""

import contextlib
import copy

import numpy as np

import pytest
import torch
import torch.nn.functional as F
from conftest import QUIET, TINY, paired, usage_error

from torch_vit import data as data_mod
from torch_vit.model import ViT
from torch_vit.optim import BatchedMuon
from numpy_vit.optim import Muon, zeropower_via_newtonschulz
from torch_vit.train import NumpyBackend, TorchBackend, make_config, muon_names, train
from torch_vit.trajectory import newton_schulz_in_weights_dtype


def test_muon_names_are_the_blocks_1x1_conv_weights():
    model = ViT(image_size=(32, 32), patch_size=2, in_channels=3, embedding_dim=32, depth=4, head_channels=8,
                num_classes=10)
    names = muon_names(model)
    per_block = {"0.fn.k", "0.fn.q", "0.fn.v", "0.fn.unify_heads", "1.fn.net.0", "1.fn.net.2"}
    assert names == {f"transformer.layers.{i}.{m}.weight" for i in range(4) for m in per_block}
    shapes = dict(model.named_parameters())
    assert sum(shapes[n].numel() for n in names) == 4 * (4 * 32 * 32 + 2 * 32 * 128)


@pytest.mark.parametrize("muon", [{}, dict(muon_lr=0.05, muon_momentum=0.8)])
def test_one_step_is_muon_on_the_matrices_and_adamw_on_the_rest(muon):
    """One step of the backend against the same step done by hand: the gradients clipped, torch.optim.Muon
    on a 2D copy of each 1x1 conv weight (at --muon-lr, --muon-momentum when given), torch.optim.AdamW on
    every other parameter."""
    cfg = make_config("default", **TINY, optimizer="muon", lr=0.02, weight_decay=0.1, clip=0.5, **muon)
    muon_lr, momentum = muon.get("muon_lr", 0.02), muon.get("muon_momentum", 0.95)
    run = TorchBackend(cfg, torch.device("cpu"))
    ref = copy.deepcopy(run.model)
    initial = {n: p.detach().clone() for n, p in ref.named_parameters()}
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 10, (8,), generator=g)
    for _ in range(2):  # the second step uses Muon's momentum and AdamW's moments
        run.step(x, y, lr=0.02, muon_lr=cfg.muon_lr)

    hidden = muon_names(ref)
    matrices = {n: torch.nn.Parameter(p.detach().reshape(p.shape[0], -1).clone())
                for n, p in ref.named_parameters() if n in hidden}
    rest = [p for n, p in ref.named_parameters() if n not in hidden]
    muon = torch.optim.Muon(list(matrices.values()), lr=muon_lr, momentum=momentum, weight_decay=0.1,
                            adjust_lr_fn="match_rms_adamw")
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


def _muon_pair(settings, dtype, seed=0):
    """(BatchedMuon, torch.optim.Muon, their params) from the same start: matrices of four shapes, two of most."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(32, 32), (128, 32), (32, 128), (32, 32), (128, 32), (5, 3)]
    start = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    a, b = ([torch.nn.Parameter(w.clone()) for w in start] for _ in range(2))
    return BatchedMuon(a, **settings), torch.optim.Muon(b, **settings), a, b, start


def _torch_muon_has(adjust_lr_fn):
    try:
        torch.optim.Muon([torch.nn.Parameter(torch.zeros(2, 2))], adjust_lr_fn=adjust_lr_fn)
        return True
    except ValueError:
        return False


@pytest.mark.parity
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("settings", [
    dict(lr=0.02, weight_decay=0.07, adjust_lr_fn="match_rms_adamw"),
    dict(lr=0.05, momentum=0.5, nesterov=False),
    dict(lr=0.01, ns_steps=3, adjust_lr_fn="original"),
    pytest.param(dict(lr=0.01, adjust_lr_fn="spectral_unclamped"), marks=pytest.mark.skipif(
        not _torch_muon_has("spectral_unclamped"),
        reason=f"torch {torch.__version__}'s Muon has no adjust_lr_fn='spectral_unclamped' (torch 2.14 has)"))])
def test_batched_muon_is_torch_muon(settings, dtype):
    """BatchedMuon (convvit train's Muon) against torch.optim.Muon, four steps on the same gradients, of
    matrices square, tall, wide, two of a shape and one alone: the same weights (to 1e-6 of the steps' size;
    measured: equal), and a state dict that either loads and continues from."""
    batched, torch_muon, a, b, start = _muon_pair(settings, dtype)
    g = torch.Generator().manual_seed(1)
    for step in range(4):
        grads = [torch.randn(w.shape, generator=g, dtype=dtype) for w in start]
        for p, q, grad in zip(a, b, grads):
            p.grad, q.grad = grad.clone(), grad.clone()
        if step == 2:  # swap states: each continues from the other's
            state_a, state_b = copy.deepcopy(batched.state_dict()), copy.deepcopy(torch_muon.state_dict())
            batched.load_state_dict(state_b)
            torch_muon.load_state_dict(state_a)
        batched.step()
        torch_muon.step()
    for p, q, w in zip(a, b, start):
        moved = (q - w).abs().max()
        assert moved > 0
        assert (p - q).abs().max() <= 1e-6 * moved, p.shape


def test_the_training_step_uses_batched_muon():
    cfg = make_config("default", **TINY, optimizer="muon")
    assert type(TorchBackend(cfg, torch.device("cpu")).muon) is BatchedMuon


@pytest.mark.parity
@pytest.mark.parametrize("shape", [(32, 32), (32, 128), (128, 32), (5, 3)])
def test_newton_schulz_keeps_the_singular_vectors(shape):
    """NS(G) = U p(S) V^T for G = U S V^T: in U, V's basis it is diagonal (float64: to 1e-12), with the
    values the quintic leaves, between 0.6 and 1.25 here (about 1: an orthogonalisation)."""
    g = np.random.default_rng(0).standard_normal(shape)
    u, s, vt = np.linalg.svd(g, full_matrices=False)
    d = u.T @ zeropower_via_newtonschulz(g) @ vt.T  # (k, k)
    off = d - np.diag(np.diag(d))
    assert np.abs(off).max() <= 1e-12 * np.abs(d).max()
    assert 0.6 <= np.diag(d).min() and np.diag(d).max() <= 1.25, np.diag(d)


@pytest.fixture
def exact_torch_muon():
    """torch.optim.Muon orthogonalises ``grad.bfloat16()``; with that cast made a copy it works in the
    gradient's own dtype, as numpy_vit's Muon does."""
    with newton_schulz_in_weights_dtype():
        yield


def _three_muon_steps():
    """The weights after three steps of each Muon from the same start on the same float64 gradients,
    for a (32, 128) and a (64, 32, 1, 1) weight; and the start."""
    rng = np.random.default_rng(1)
    start = {"a": rng.standard_normal((32, 128)), "b": rng.standard_normal((64, 32, 1, 1))}
    grads = [{k: rng.standard_normal(v.shape) for k, v in start.items()} for _ in range(3)]
    params = {k: v.copy() for k, v in start.items()}
    opt = Muon(params, lr=0.01, weight_decay=0.1)
    torch_params = {k: torch.nn.Parameter(torch.tensor(v).reshape(v.shape[0], -1)) for k, v in start.items()}
    torch_opt = torch.optim.Muon(list(torch_params.values()), lr=0.01, weight_decay=0.1,
                                 adjust_lr_fn="match_rms_adamw")
    for g in grads:
        opt.step(g)
        for k, p in torch_params.items():
            p.grad = torch.tensor(g[k]).reshape(p.shape)
        torch_opt.step()
    return params, {k: p.detach().numpy().reshape(start[k].shape) for k, p in torch_params.items()}, start


@pytest.mark.parity
def test_numpy_muon_is_torch_muon_in_float64(exact_torch_muon):
    got, expected, start = _three_muon_steps()
    for k in start:
        assert np.abs(got[k] - expected[k]).max() <= 1e-12 * np.abs(expected[k] - start[k]).max(), k


@pytest.mark.parity
def test_numpy_muon_is_torch_muon_up_to_its_bfloat16():
    """torch as it is, orthogonalising in bfloat16 (8 bits of mantissa): the steps agree within 2% of
    their size on these random gradients."""
    got, expected, start = _three_muon_steps()
    for k in start:
        moved = expected[k] - start[k]
        assert np.abs((got[k] - start[k]) - moved).max() <= 0.02 * np.abs(moved).max(), k


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_resume_with_muon_equals_a_straight_run(tmp_path, backend):
    cfg = make_config("default", **{**TINY, "epochs": 2, "seed": 2, "optimizer": "muon", "backend": backend})
    data = data_mod.make_synthetic(256, 64, size=(16, 16))
    straight, _ = train(cfg, data, str(tmp_path / "a"), **QUIET)
    train(cfg, data, str(tmp_path / "b"), stop_after=1, **QUIET)
    resumed, history = train(cfg, data, str(tmp_path / "b"), resume=True, **QUIET)
    assert [r["epoch"] for r in history] == [0, 1]
    for (k, v), w in paired(straight.state_dict(), resumed.state_dict()):
        assert torch.equal(v, w), k
    ckpt = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert set(ckpt["optimizer"]) == {"adamw", "muon"} and ckpt["train_config"]["optimizer"] == "muon"


def test_muon_changes_the_run(tmp_path):
    data = data_mod.make_synthetic(256, 64, size=(16, 16))
    a, _ = train(make_config("default", **TINY, epochs=1, optimizer="adamw"), data, str(tmp_path / "a"), **QUIET)
    b, _ = train(make_config("default", **TINY, epochs=1, optimizer="muon"), data, str(tmp_path / "b"), **QUIET)
    assert make_config("default").optimizer == "muon" and make_config("seed").optimizer == "adamw"
    name = sorted(muon_names(a))[0]
    assert not torch.allclose(a.state_dict()[name], b.state_dict()[name])


@pytest.mark.parity
@pytest.mark.parametrize("exact, muon", [(True, {}), (False, {}), (True, dict(muon_lr=0.03, muon_momentum=0.5))])
def test_numpy_backend_step_is_the_torch_backends(exact, muon):
    """Float64 steps of each backend from the same weights on the same batch: after two steps (the second
    uses the momentum) every parameter equal to 1e-12 with torch's bfloat16 cast patched out; as torch is,
    after one step, the Muon ones within 10% of the update (measured: up to 7.4%, the real gradients being
    far from full rank) and the rest still to 1e-12 (a second step would start from different weights)."""
    settings = dict(TINY, optimizer="muon", dtype="float64", **muon)
    t_run = TorchBackend(make_config("default", **settings), torch.device("cpu"))
    n_run = NumpyBackend(make_config("default", **settings, backend="numpy"), torch.device("cpu"))
    start = {k: v.clone() for k, v in t_run.model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g)
    with newton_schulz_in_weights_dtype() if exact else contextlib.nullcontext():
        for _ in range(2 if exact else 1):
            t_run.step(x, y, lr=0.01, muon_lr=muon.get("muon_lr"))
            n_run.step(x, y, lr=0.01, muon_lr=muon.get("muon_lr"))
    t, n = t_run.model.state_dict(), n_run.model.state_dict()
    for name, w in t.items():
        moved = (w - start[name]).numpy()
        bound = 0.1 if name in n_run.hidden and not exact else 1e-12
        assert np.abs(n[name] - start[name].numpy() - moved).max() <= bound * np.abs(moved).max(), name


def test_bad_optimizer_is_one_line():
    line = usage_error("train", "--no-progress", "--epochs", "1", "--optimizer", "sgd")
    assert "--optimizer: expected one of adamw, muon, got 'sgd'" in line


@pytest.mark.parity
def test_float64_numpy_muon_run_learns_what_torch_muon_learns(tmp_path, exact_torch_muon):
    """Four epochs of a small model on the synthetic data, float64, same seed and batches, torch's bfloat16
    cast patched out: the same history to the printed digit and the same weights to 1e-9, above chance."""
    runs = {}
    for backend in ("torch", "numpy"):
        cfg = make_config("default", **{**TINY, "epochs": 4, "lr": 0.005, "seed": 3, "optimizer": "muon",
                                        "dtype": "float64", "backend": backend})
        runs[backend] = train(cfg, data_mod.make_synthetic(1024, 256, size=(16, 16)), str(tmp_path / backend),
                              **QUIET)
    (t_model, t_hist), (n_model, n_hist) = runs["torch"], runs["numpy"]
    assert n_hist[-1]["test_acc"] >= 0.5, n_hist  # chance is 0.1
    for a, b in zip(n_hist, t_hist, strict=True):
        assert f"{a['train_acc']:.4f} {a['test_acc']:.4f}" == f"{b['train_acc']:.4f} {b['test_acc']:.4f}"
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-9)
    for (name, a), b in paired(n_model.state_dict(), t_model.state_dict()):
        assert (a - b).abs().max() <= 1e-9 * b.abs().max(), name


# The default recipe's schedule over 5 epochs of 2 steps, peaking at 0.01, written out: linear from 0 to the
# peak at epoch 2 (its fixed warm-up), to 0.05 of it at the knee (epoch 4 = 5 * 4 // 5), to 0 at the end;
# one rate per step, at t = epoch + (step + 1) / 2.
SCHEDULE_AT_001 = [0.0025, 0.005, 0.0075, 0.01, 0.007625, 0.00525, 0.002875, 0.0005, 0.00025, 0.0]
SCHEDULE_AT_003 = [0.0075, 0.015, 0.0225, 0.03, 0.022875, 0.01575, 0.008625, 0.0015, 0.00075, 0.0]


def test_muon_lr_follows_the_schedule_at_its_own_peak(tmp_path, monkeypatch):
    """--muon-lr: the training loop gives Muon the recipe's schedule peaking at that rate, AdamW the one
    peaking at --lr; without it, Muon gets AdamW's rate. The rates expected are written out above."""
    seen = []
    step = TorchBackend.step

    def recording(self, xb, yb, lr, muon_lr=None):
        seen.append((lr, muon_lr))
        return step(self, xb, yb, lr, muon_lr)

    monkeypatch.setattr(TorchBackend, "step", recording)
    data = data_mod.make_synthetic(128, 32, size=(16, 16))
    for muon_lr, expected in ((0.03, SCHEDULE_AT_003), (None, SCHEDULE_AT_001)):
        seen.clear()
        cfg = make_config("default", **TINY, epochs=5, lr=0.01, muon_lr=muon_lr, optimizer="muon")
        train(cfg, data, str(tmp_path / str(muon_lr)), **QUIET)
        assert [lr for lr, _ in seen] == pytest.approx(SCHEDULE_AT_001, rel=1e-12, abs=1e-15)
        assert [m for _, m in seen] == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("args, message", [
    (["--recipe", "seed", "--muon-lr", "0.02"], "--muon-lr: applies to --optimizer muon, got --optimizer adamw "
                                                "(--recipe seed)"),
    (["--optimizer", "adamw", "--muon-momentum", "0.9"], "--muon-momentum: applies to --optimizer muon, got "
                                                         "--optimizer adamw (--recipe default)"),
    (["--muon-momentum", "1"], "argument --muon-momentum: expected a momentum in [0, 1), got '1'"),
    (["--muon-lr", "-0.1"], "argument --muon-lr: expected a finite number >= 0, got '-0.1'"),
])
def test_bad_muon_settings_are_one_line(args, message):
    assert message in usage_error("train", "--no-progress", "--epochs", "1", *args)


@pytest.mark.parametrize("key, value, message", [
    ("muon_lr", -0.1, "--muon-lr: expected a finite learning rate >= 0, got -0.1"),
    ("muon_lr", float("inf"), "--muon-lr: expected a finite learning rate >= 0, got inf"),
    ("muon_lr", "0.02", "--muon-lr: expected a finite learning rate >= 0, got '0.02'"),
    ("muon_momentum", 1.0, "--muon-momentum: expected a momentum in [0, 1), got 1.0"),
    ("muon_momentum", True, "--muon-momentum: expected a momentum in [0, 1), got True"),
    ("muon_momentum", None, "--muon-momentum: expected a momentum in [0, 1), got None"),
])
def test_make_config_refuses_bad_muon_settings(key, value, message):
    """Callers of the API bypass argparse: make_config checks the values itself (muon_lr=None is --lr's)."""
    with pytest.raises(ValueError) as e:
        make_config("default", **{key: value})
    assert str(e.value) == message
    assert make_config("default", muon_lr=None).muon_lr is None
