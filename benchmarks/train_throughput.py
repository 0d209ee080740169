"""Training speed on this machine, every figure also a ratio against the plain seed model timed in the same run.

The reference is ``benchmarks/seed_model.py``: the seed's model re-typed (NCHW memory, eager, its
``transpose(1, -1)`` LayerNorm), stepped with the same optimiser as the step it is compared with (the recipe's:
AdamW, or Muon and AdamW as convvit train sets them up, Muon being the library's torch.optim.Muon;
``seed_step_adamw`` for the AdamW contenders of a Muon recipe), clip 1.0. Each round times
every contender once, one after the other, in a rotating order; a contender's ratio is the median over
the rounds of (the reference's time in that round) / (its own time in that round), so that the speed of
the machine, and any load on it, cancels out of the ratio. The absolute images per second (the median
time of each) are the machine's, and are given beside the ratios.

Contenders, at the recipe's batch size (--batch to change it), on the same augmented batches:
  step            convvit train's torch step (torch_vit/train.py TorchBackend: channels_last, the recipe's
                  optimiser), float32
  step_amp        the same with --amp (bfloat16 autocast), where the device has bfloat16 instructions
  step_adamw      the same float32 step with AdamW for every weight, when the recipe's optimiser is Muon
  step_amp_adamw  the same with --amp
  step_torch_muon, step_amp_torch_muon
                  step and step_amp with torch.optim.Muon, as the reference has it, instead of convvit's
                  BatchedMuon (the same update, its matrices of one shape orthogonalised together)
  step_numpy      the NumPy backend's step (--backend numpy), float32, on the CPU, timed in rounds of its own
                  with the reference, each followed by a pause: NumPy's BLAS threads spin on after its step and
                  slow whatever torch runs next on the same cores
  augment         the recipe's batched augmentation of a batch, which the loop runs before each step
and, with --candidates, changes that were measured and not kept:
  step_compile, step_amp_compile   the step with torch.compile of the model (its compile time beside)
  step_amp_foreach                 the --amp step with AdamW in foreach form (one op over all tensors)
  step_kqv, step_amp_kqv           the step with k, q and v as one convolution of their concatenated weights
                                   (``kqv_forward``), float32 and --amp
  step_split_heads, step_amp_split_heads
                                   the step with each head's products on its own channels of the (B, N, C)
                                   views (``split_heads_forward``), float32 and --amp
  step_linear, step_amp_linear     the step with every 1x1 convolution as F.linear on the (B, H, W, C) view
                                   (``linear_forward``), float32 and --amp
  step_q_grad, step_amp_q_grad     the step with q's gradient turned channels-last before q's convolution's
                                   backward (``ChannelsLastGrad``), float32 and --amp
  step_amp_norm_bf16               the --amp step with each attention's normalized input cast to bfloat16 once
                                   (``bf16_norm_forward``; its k, q and v gradients then add up in bfloat16)
  step_one_thread                  the --amp step (float32 without bfloat16) on one thread, the rest on all
and evaluation of 1,024 test images in batches of the recipe's test batch size, against the reference's:
  eval, eval_amp  torch_vit.train.predict, float32 and with --amp

    python benchmarks/train_throughput.py --recipe seed --out benchmarks/results/train_throughput.json --overwrite
    python benchmarks/train_throughput.py --recipe default --out benchmarks/results/train_throughput_default.json --overwrite
    python benchmarks/train_throughput.py --recipe default --candidates --out benchmarks/results/train_candidates.json --overwrite
"""

import argparse
import json
import os
import statistics
import sys
import time
import types

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from numpy_vit.io import check_new_file, write_json  # noqa: E402
from record_run import cpu_name  # noqa: E402
from seed_model import seed_vit  # noqa: E402
from torch_vit.augment import normalize  # noqa: E402
from torch_vit.data import make_synthetic  # noqa: E402
from torch_vit.model import MhSelfAttention, PreNormChannels, channels_layer_norm, tokens  # noqa: E402
from torch_vit.train import (NumpyBackend, TorchBackend, augmenter, bf16_supported, make_config,  # noqa: E402
                             muon_step, predict, torch_optimizers)


def kqv_forward(self, x):
    """MhSelfAttention.forward (torch_vit/model.py) with k, q and v as one 1x1 convolution of their weights
    concatenated, split into (B, N, C) views: the same maths and parameters, one product instead of three."""
    b, _, h, w = x.shape
    weight = torch.cat([self.k.weight, self.q.weight, self.v.weight])  # (3C, in, 1, 1)
    bias = torch.cat([self.k.bias, self.q.bias, self.v.bias])
    keys, queries, values = tokens(F.conv2d(x, weight, bias)).chunk(3, dim=-1)  # (B, N, C) each, views
    head = torch.arange(keys.shape[-1], device=x.device) // self.head_channels
    attend = queries.transpose(1, 2) @ keys * self.scale
    attend = attend.masked_fill(head[:, None] != head[None, :], float("-inf"))
    attention = F.softmax(attend, dim=-2)
    out = values @ attention.transpose(1, 2)
    out = out.view(b, h, w, -1).permute(0, 3, 1, 2)
    return self.unify_heads(out)


def split_heads_forward(self, x):
    """MhSelfAttention.forward (torch_vit/model.py) head by head, as the seed computes it: each head's (hc, hc)
    products on its own channels of the (B, N, C) views of k, q and v (strided views, no copies; ``split``, whose
    backward is one ``cat``), the heads' outputs put together by one ``cat``. A quarter of the all-heads product's
    work at 4 heads, in four times the calls, and no mask."""
    b, _, h, w = x.shape
    keys = tokens(self.k(x)).split(self.head_channels, dim=-1)  # heads x (B, N, hc)
    queries = tokens(self.q(x)).split(self.head_channels, dim=-1)
    values = tokens(self.v(x)).split(self.head_channels, dim=-1)
    outs = []
    for k, q, v in zip(keys, queries, values):
        attention = F.softmax(q.transpose(1, 2) @ k * self.scale, dim=-2)  # (B, hc, hc)
        outs.append(v @ attention.transpose(1, 2))  # (B, N, hc)
    out = torch.cat(outs, dim=-1).view(b, h, w, -1).permute(0, 3, 1, 2)  # (B, out_channels, H, W)
    return self.unify_heads(out)


def linear_forward(self, x):
    """nn.Conv2d.forward of a 1x1 convolution as F.linear on the (B, H, W, C) view of x, which is free when x is
    channels-last: the same maths and parameters, one matrix product instead of oneDNN's convolution."""
    out = F.linear(x.permute(0, 2, 3, 1), self.weight.view(self.out_channels, -1), self.bias)  # (B, H, W, out)
    return out.permute(0, 3, 1, 2)  # (B, out, H, W), channels-last


class ChannelsLastGrad(torch.autograd.Function):
    """The identity, whose backward hands on its gradient channels-last. The attention's batched product gives
    q's (B, C, H, W) output a gradient in torch's default layout (the bmm backward keeps none), and a 1x1
    convolution's backward is slower on that than on a channels-last one."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)  # no copy

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last)


def q_grad_forward(self, x):
    """nn.Conv2d.forward of the attention's q, then ``ChannelsLastGrad``."""
    return ChannelsLastGrad.apply(nn.Conv2d.forward(self, x))


def bf16_norm_forward(self, x):
    """PreNormChannels.forward with the normalized x cast to bfloat16 once, as autocast casts it for each of the
    attention's k, q and v convolutions: the same forward, but the three bfloat16 gradients reaching that one
    tensor are added up in bfloat16 (float32 when autocast casts each)."""
    return self.fn(channels_layer_norm(self.lnorm, x).to(torch.bfloat16))


def is_attention(module):
    return isinstance(module, MhSelfAttention)


def with_forward(forward, match, part=None):
    """A candidate's change of a TorchBackend: ``forward`` as the forward of every module of its model that
    ``match`` accepts (of that module's child ``part``, if given). Returns the function that changes a run."""
    def change(run):
        for module in list(run.model.modules()):
            if match(module):
                target = getattr(module, part) if part else module
                target.forward = types.MethodType(forward, target)
        return run
    return change


with_kqv = with_forward(kqv_forward, is_attention)
with_split_heads = with_forward(split_heads_forward, is_attention)
with_linear = with_forward(linear_forward, lambda m: isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1))
with_q_grad = with_forward(q_grad_forward, is_attention, part="q")
with_bf16_norm = with_forward(bf16_norm_forward, lambda m: isinstance(m, PreNormChannels) and is_attention(m.fn))


def seed_step(model, cfg):
    """The plain seed model's training step with ``cfg``'s optimiser set up as convvit train does (AdamW; or
    Muon for the blocks' 1x1-conv weights and AdamW for the rest), but with the library's torch.optim.Muon:
    forward, cross-entropy, backward, clip, the optimiser steps."""
    # the seed model has torch_vit's parameter names
    opt, muon, views = torch_optimizers(model, cfg, muon=getattr(torch.optim, "Muon", None))

    def step(xb, yb):
        loss = F.cross_entropy(model(xb), yb)
        model.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        if muon:
            muon_step(muon, views)
    return step


@torch.no_grad()
def seed_predict(model, x_uint8, cfg, device):
    model.eval()
    out = []
    for i in range(0, len(x_uint8), cfg.test_batch_size):
        out.append(model(normalize(x_uint8[i:i + cfg.test_batch_size].to(device), cfg.mean, cfg.std)).cpu())
    return torch.cat(out)


def measure(contenders, rounds, sync, warmup=2, settle=0.0):
    """{name: [seconds per round]}: every contender once per round, the order rotating from round to round;
    ``settle`` seconds of pause (untimed) after each, for the NumPy step, whose BLAS threads spin on after it and
    would slow whatever runs next on the same cores."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
            sync()
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            contenders[name]()
            sync()
            times[name].append(time.perf_counter() - t)
            time.sleep(settle)
    return times


def summarise(times, reference, images, references=None):
    """{name: {img_s, ratio}}: images per second at the median time, and the median of the per-round ratios
    reference time / own time; ``references`` names another reference for some contenders."""
    references = references or {}
    return {name: dict(img_s=round(images / statistics.median(t), 1),
                       ratio=round(statistics.median(r / s for r, s in zip(times[references.get(name, reference)], t)),
                                   3))
            for name, t in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="default", help="the recipe whose step, batch size and augmentations to time")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the recipe's)")
    ap.add_argument("--rounds", type=int, default=20, help="timed rounds (default 20)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-numpy", action="store_true", help="leave out the NumPy backend's step (the slowest)")
    ap.add_argument("--candidates", action="store_true", help="also time the changes measured and not kept (listed above)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    try:
        check_new_file(args.out, args.overwrite)  # before anything is measured
        cfg = make_config(args.recipe, **({"batch_size": args.batch} if args.batch else {}))
    except ValueError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    B = cfg.batch_size
    data = make_synthetic(4096, 1024, size=cfg.image_size)  # pixels do not change the speed
    x, y = data.train_x.to(device), data.train_y.to(device)
    g = torch.Generator().manual_seed(0)
    augment = augmenter(cfg)
    batches = []  # the same augmented batches for every contender, cycled
    for _ in range(8):
        i = torch.randint(0, len(x), (B,), generator=g).to(device)
        batches.append((augment(x[i], g), y[i]))

    def cycling(step):
        it = iter(range(10 ** 9))
        return lambda: step(*batches[next(it) % len(batches)])

    torch.manual_seed(cfg.seed)
    reference = seed_vit().to(device)
    lr = cfg.lr_at(1.0)
    train = {"seed_step": cycling(seed_step(reference, cfg))}
    references = {}  # contender -> its reference, when not seed_step
    if cfg.optimizer != "adamw":
        train["seed_step_adamw"] = cycling(seed_step(seed_vit().to(device), make_config(args.recipe, optimizer="adamw")))
        references = {"step_adamw": "seed_step_adamw", "step_amp_adamw": "seed_step_adamw"}
    runs = {"step": make_config(args.recipe, batch_size=B)}
    if bf16_supported(device):
        runs["step_amp"] = make_config(args.recipe, batch_size=B, amp=True)
    if cfg.optimizer != "adamw":
        runs["step_adamw"] = make_config(args.recipe, batch_size=B, optimizer="adamw")
        if bf16_supported(device):
            runs["step_amp_adamw"] = make_config(args.recipe, batch_size=B, optimizer="adamw", amp=True)
    backends = {}
    for name, c in runs.items():
        backends[name] = TorchBackend(c, device)
        train[name] = cycling(lambda xb, yb, run=backends[name]: run.step(xb, yb, lr))
    if cfg.optimizer == "muon":  # the same steps with the library's Muon, as the reference has it
        for name in [n for n in ("step", "step_amp") if n in runs]:
            run = TorchBackend(runs[name], device, muon=torch.optim.Muon)
            train[f"{name}_torch_muon"] = cycling(lambda xb, yb, run=run: run.step(xb, yb, lr))
    compile_s = {}
    if args.candidates:
        from torch._inductor import config as inductor_config

        inductor_config.force_disable_caches = True  # the compile time of a first run, not a cache's
        for name, amp in (("step_compile", False), ("step_amp_compile", True)):
            if amp and not bf16_supported(device):
                continue
            run = TorchBackend(make_config(args.recipe, batch_size=B, amp=amp), device)
            run.model = torch.compile(run.model)  # the same parameters, a compiled forward and backward
            t = time.perf_counter()
            run.step(*batches[0], lr)  # compiles
            sync()
            compile_s[name] = round(time.perf_counter() - t, 1)
            train[name] = cycling(lambda xb, yb, run=run: run.step(xb, yb, lr))
        if bf16_supported(device):
            run = TorchBackend(make_config(args.recipe, batch_size=B, amp=True), device)
            run.opt.defaults["foreach"] = True
            for group in run.opt.param_groups:
                group["foreach"] = True
            train["step_amp_foreach"] = cycling(lambda xb, yb, run=run: run.step(xb, yb, lr))
        for name, amp, change in (("step_kqv", False, with_kqv), ("step_amp_kqv", True, with_kqv),
                                  ("step_split_heads", False, with_split_heads),
                                  ("step_amp_split_heads", True, with_split_heads),
                                  ("step_linear", False, with_linear), ("step_amp_linear", True, with_linear),
                                  ("step_q_grad", False, with_q_grad), ("step_amp_q_grad", True, with_q_grad),
                                  ("step_amp_norm_bf16", True, with_bf16_norm)):
            if amp and not bf16_supported(device):
                continue
            run = change(TorchBackend(make_config(args.recipe, batch_size=B, amp=amp), device))
            train[name] = cycling(lambda xb, yb, run=run: run.step(xb, yb, lr))
        if device.type == "cpu" and torch.get_num_threads() > 1:  # does the step use the other cores?
            run = backends["step_amp" if "step_amp" in backends else "step"]
            threads = torch.get_num_threads()

            def one_thread(xb, yb, run=run):
                torch.set_num_threads(1)
                try:
                    run.step(xb, yb, lr)
                finally:
                    torch.set_num_threads(threads)
            train["step_one_thread"] = cycling(one_thread)
    numpy_block = {}
    if device.type == "cpu" and not args.no_numpy:  # in a block of its own, against the same reference
        numpy_run = NumpyBackend(make_config(args.recipe, batch_size=B, backend="numpy"), device)
        numpy_block = {"seed_step": train["seed_step"], "step_numpy": cycling(lambda xb, yb: numpy_run.step(xb, yb, lr))}
    train["augment"] = lambda: augment(x[torch.randint(0, len(x), (B,), generator=g).to(device)], g)

    test_x = data.test_x[:1024]
    evals = {"seed_eval": lambda: seed_predict(reference, test_x, cfg, device),
             "eval": lambda: predict(backends["step"].model, test_x, runs["step"], device)}
    if "step_amp" in backends:
        evals["eval_amp"] = lambda: predict(backends["step_amp"].model, test_x, runs["step_amp"], device)

    results = summarise(measure(train, args.rounds, sync), "seed_step", B, references)
    if numpy_block:
        rounds = max(5, args.rounds // 2)
        results["step_numpy"] = summarise(measure(numpy_block, rounds, sync, settle=0.3), "seed_step", B)["step_numpy"]
    results.update(summarise(measure(evals, max(3, args.rounds // 2), sync), "seed_eval", len(test_x)))
    machine = dict(cpu=cpu_name(), cores=os.cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__,
                   device=str(device), gpu=torch.cuda.get_device_name() if device.type == "cuda" else None,
                   bf16=bf16_supported(device))
    full = dict(recipe=args.recipe, batch=B, optimizer=cfg.optimizer, rounds=args.rounds,
                reference="benchmarks/seed_model.py: the plain seed model, NCHW, eager, the same optimiser, clip",
                machine=machine, results=results, **({"compile_s": compile_s} if compile_s else {}))
    print(json.dumps(full, indent=1))
    if args.out:
        write_json(args.out, full)


if __name__ == "__main__":
    main()
