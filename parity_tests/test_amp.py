"""--amp: bfloat16 autocast of the forward, on CUDA or on a CPU with bfloat16 instructions (AVX-512 BF16
or AMX), where benchmarks/train_throughput.py measures it; float32 weights, optimiser and checks. The training
test runs on any CPU: where --amp is refused (bfloat16 emulated, slower), it lets the run through."""

import dataclasses

import pytest
import torch
from conftest import QUIET, TINY

from torch_vit import data as data_mod
from torch_vit import train as train_mod
from torch_vit.train import TorchBackend, make_config, train

CPU = torch.device("cpu")


def test_amp_on_the_cpu_trains_in_bfloat16(tmp_path, monkeypatch):
    if not train_mod.bf16_supported(CPU):  # --amp refuses such a CPU (slow there), but autocast still runs: same maths
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    cfg = make_config("default", epochs=3, lr=0.005, amp=True, **TINY)
    run = TorchBackend(cfg, CPU)
    seen = []
    hook = run.model.transformer.layers[0][1].fn.net[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    data = data_mod.make_synthetic(1500, 500, size=cfg.image_size)
    x = train_mod.normalize(data.train_x[:64], cfg.mean, cfg.std)
    run.step(x, data.train_y[:64], 0.01)
    hook.remove()
    assert seen == [torch.bfloat16]  # the convolutions ran in bfloat16 ...
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # ... on float32 weights
    # it learns as the float32 run of the same seed does, and is not that run (the casts change the rounding)
    _, amp = train(cfg, data, str(tmp_path / "amp"), **QUIET)
    _, fp32 = train(dataclasses.replace(cfg, amp=False), data, str(tmp_path / "fp32"), **QUIET)
    assert amp[-1]["test_acc"] > 0.5 and abs(amp[-1]["test_acc"] - fp32[-1]["test_acc"]) <= 0.05, (amp, fp32)
    assert amp[0]["train_loss"] != fp32[0]["train_loss"]


def test_amp_refused_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with pytest.raises(ValueError, match=r"^--amp: expected CUDA or a CPU with bfloat16 instructions .* got cpu"):
        TorchBackend(make_config("seed", amp=True, **TINY), CPU)
