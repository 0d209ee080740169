"""The speed benchmarks' own workings. benchmarks/seed_model.py, the plain seed model that
benchmarks/train_throughput.py times convvit's step against, is the same function as torch_vit's ViT: the same
state-dict keys, and on one state dict the same logits and gradients (float64), so a ratio between their steps
compares two ways of computing one thing. And the ratio arithmetic of train_throughput.py (the median of
per-round ratios), and run_overhead.py's split of a run's wall time."""

import pytest
import torch
import torch.nn.functional as F
from conftest import load_benchmark

from numpy_vit import seed_config
from torch_vit.model import ViT

SEED = seed_config()


@pytest.mark.parity
@pytest.mark.parametrize("channels_last", [False, True])
def test_seed_model_is_torch_vit(channels_last):
    seed_model = load_benchmark("seed_model")
    torch.manual_seed(0)
    ref = seed_model.seed_vit().double()
    ours = ViT(**SEED).double()
    assert list(ref.state_dict()) == list(ours.state_dict())
    ours.load_state_dict(ref.state_dict())
    if channels_last:  # as convvit train runs it
        ours = ours.to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    y = torch.tensor([0, 3, 9, 3])
    logits = []
    for model in (ref, ours):
        xb = x.contiguous(memory_format=torch.channels_last) if model is ours and channels_last else x
        out = model(xb)
        F.cross_entropy(out, y).backward()
        logits.append(out.detach())
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-12, atol=1e-12)
    grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-10, atol=1e-12, msg=name)


def test_ratios_are_medians_of_per_round_ratios():
    tt = load_benchmark("train_throughput")
    times = {"seed_step": [1.0, 2.0, 1.0, 4.0, 1.0], "step": [0.5, 0.5, 0.25, 1.0, 1.0]}
    # per round: 2, 4, 4, 4, 1 -> median 4; the ratio of median times would be 1 / 0.5 = 2
    out = tt.summarise(times, "seed_step", images=64)
    assert out["step"] == dict(img_s=128.0, ratio=4.0)
    assert out["seed_step"] == dict(img_s=64.0, ratio=1.0)
    # a contender compared with another reference (the plain model with the contender's optimiser)
    times["seed_step_adamw"] = [0.5, 0.5, 0.5, 0.5, 0.5]
    out = tt.summarise(times, "seed_step", 64, {"step": "seed_step_adamw"})
    assert out["step"]["ratio"] == 1.0 and out["seed_step_adamw"]["ratio"] == 2.0


def test_rounds_rotate_the_order():
    tt = load_benchmark("train_throughput")
    calls = []
    contenders = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    times = tt.measure(contenders, rounds=3, sync=lambda: None, warmup=0)
    assert calls == list("abcbcacab")
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_run_overhead_splits_the_wall_time():
    ro = load_benchmark("run_overhead")
    metrics = [dict(train_s=90.0, time=100.0), dict(train_s=80.0, time=85.0)]
    out = ro.split(200.0, metrics, dict(numpy_check_seconds=5.0))
    assert out["train_loop_s"] == 170.0 and out["evaluation_s"] == 15.0 and out["numpy_check_s"] == 5.0
    assert out["rest_s"] == 10.0 and out["wall_over_train_loop"] == round(200 / 170, 3)
    assert out["train_loop_share"] == 0.85 and out["epochs"] == 2
    assert ro.run_folder(["convvit", "train", "--out", "runs/x"]) == "runs/x"
    assert ro.run_folder(["convvit", "train", "--out=runs/y"]) == "runs/y"
    assert ro.run_folder(["convvit", "train"]) == "runs/latest"


def test_run_overhead_refuses_before_running(tmp_path, capsys):
    ro = load_benchmark("run_overhead")
    held = tmp_path / "run_overhead.json"
    held.write_text('{"earlier": 1}')
    for argv, says in ((["--out", str(held), "--", "convvit", "train", "--out", str(tmp_path / "run")],
                        "expected a new file, it holds earlier results; --overwrite replaces it"),
                       (["--", "python", "-c", "print(1)"], "expected a command '-- convvit train ...', got python")):
        with pytest.raises(SystemExit) as info:
            ro.main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
    assert held.read_text() == '{"earlier": 1}' and not (tmp_path / "run").exists()


def test_kqv_candidate_is_the_same_attention():
    """train_throughput's candidate of k, q and v as one convolution computes what MhSelfAttention does, and
    the same gradients for its parameters."""
    tt = load_benchmark("train_throughput")
    from torch_vit.model import MhSelfAttention

    torch.manual_seed(0)
    att = MhSelfAttention(32, 32, 8).double().to(memory_format=torch.channels_last)
    x = torch.randn(2, 32, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    outs, grads = [], []
    for forward in (att.forward, tt.kqv_forward.__get__(att)):
        att.zero_grad()
        out = forward(x)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in att.named_parameters()})
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-10, atol=1e-12, msg=name)


def attention_block(seed=0):
    """One pre-norm attention block of the seed's size in float64, channels-last, and an input for it."""
    from torch_vit.model import MhSelfAttention, PreNormChannels

    torch.manual_seed(seed)
    block = PreNormChannels(32, MhSelfAttention(32, 32, 8)).double().to(memory_format=torch.channels_last)
    x = torch.randn(2, 32, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    return block, x


def outputs_and_grads(block, x, context=None):
    block.zero_grad()
    with context or torch.autocast("cpu", enabled=False):
        out = block(x)
    out.float().square().sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in block.named_parameters()}


@pytest.mark.parametrize("change", ["with_split_heads", "with_linear", "with_q_grad"])
def test_split_heads_linear_and_q_grad_candidates_are_the_same_block(change):
    """The candidates of the heads' products one head at a time, of 1x1 convolutions as F.linear and of q's
    gradient turned channels-last compute what the block computes, and the same gradients for its parameters
    (float64)."""
    tt = load_benchmark("train_throughput")
    block, x = attention_block()
    out, grads = outputs_and_grads(block, x)

    class Run:  # the part of a TorchBackend that the candidates change
        model = block
    getattr(tt, change)(Run)
    patched = [m for m in block.modules() if "forward" in vars(m)]
    assert len(patched) == (4 if change == "with_linear" else 1)  # k, q, v, unify_heads; or q; or the attention
    out2, grads2 = outputs_and_grads(block, x)
    torch.testing.assert_close(out2, out, rtol=1e-12, atol=1e-12)
    for name, g in grads.items():
        torch.testing.assert_close(grads2[name], g, rtol=1e-10, atol=1e-12, msg=name)
    if change == "with_q_grad":  # the gradient it hands on is channels-last, given one in torch's default layout
        t = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last).requires_grad_() * 1
        seen = []
        t.register_hook(seen.append)
        tt.ChannelsLastGrad.apply(t).backward(torch.randn(2, 3, 4, 5))
        assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()


def test_bf16_norm_candidate_changes_only_the_sum_of_gradients():
    """The candidate that casts an attention block's normalized input to bfloat16 once: under autocast, the same
    forward to the bit (autocast casts it for each convolution to the same values), and gradients that differ
    only by the bfloat16 rounding of adding up three."""
    tt = load_benchmark("train_throughput")
    block, x = attention_block()
    block, x = block.float(), x.float()
    amp = torch.autocast("cpu", dtype=torch.bfloat16)
    out, grads = outputs_and_grads(block, x, amp)

    class Run:
        model = block
    tt.with_bf16_norm(Run)
    out2, grads2 = outputs_and_grads(block, x, amp)
    assert torch.equal(out2, out)
    for name, g in grads.items():
        if name.startswith("fn."):  # the convolutions' weights see the same bfloat16 input and gradients
            assert torch.equal(grads2[name], g), name
        else:  # the LayerNorm's, behind the sum: a few bfloat16 steps (2^-8 of the value) apart
            assert not torch.equal(grads2[name], g), name
            torch.testing.assert_close(grads2[name], g, rtol=2e-2, atol=5e-3 * float(g.abs().max()), msg=name)


def test_profile_numpy_splits_the_whole_step():
    """profile_numpy.py's own times of the model's parts fit inside the step, every kind of part has its row, and
    the timers leave the model's results as they were."""
    pn = load_benchmark("profile_numpy")
    result = pn.profile(batch=2, dtype="float32", steps=2)
    parts = {p["part"]: p for p in result["parts"]}
    assert set(parts) == {"1x1 convolutions", "patch convolution", "LayerNorm", "GELU",
                          "attention's own work (products, mask, softmax)", "residual adds",
                          "positional embedding's add", "head's pooling, flatten and linear layer", "loss",
                          pn.REST}
    assert all(p["ms_per_step"] > 0 for p in parts.values() if p["part"] != pn.REST)
    # The rest is the step's wall time less every part's own time: a part's time counted twice (a child's
    # left inside its parent's own time) or a part timed outside the step would make it negative.
    assert 0 <= parts[pn.REST]["ms_per_step"] < result["ms_per_step"]

    import numpy as np
    from numpy_vit.model import ViT

    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    plain, timed = (ViT(**pn.SEED, rng=np.random.default_rng(0)) for _ in range(2))
    pn.Timers(timed)
    assert np.array_equal(plain(x), timed(x))
    dlogits = np.ones((2, 10), np.float32)
    assert np.array_equal(plain.backward(dlogits), timed.backward(dlogits))
