"""Training speed on this machine, every figure also a ratio against the plain seed model timed in the same run.

The reference is ``benchmarks/seed_model.py``: the seed's model re-typed (NCHW memory, eager, its
``transpose(1, -1)`` LayerNorm) with the seed's optimiser step (AdamW, clip 1.0). Each round times
every contender once, one after the other, in a rotating order; a contender's ratio is the median over
the rounds of (the reference's time in that round) / (its own time in that round), so that the speed of
the machine, and any load on it, cancels out of the ratio. The absolute images per second (the median
time of each) are the machine's, and are given beside the ratios.

Contenders, at the recipe's batch size (--batch to change it), on the same augmented batches:
  step            convvit train's torch step (torch_vit/train.py TorchBackend: channels_last, the recipe's
                  optimiser), float32
  step_amp        the same with --amp (bfloat16 autocast), where the device has bfloat16 instructions
  step_adamw      the same float32 step with AdamW for every weight, when the recipe's optimiser is Muon
  step_numpy      the NumPy backend's step (--backend numpy), float32, on the CPU
  augment         the recipe's batched augmentation of a batch, which the loop runs before each step
and, with --candidates, changes that were measured and not kept:
  step_compile, step_amp_compile   the step with torch.compile of the model (its compile time beside)
  step_amp_foreach                 the --amp step with AdamW in foreach form (one op over all tensors)
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

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from numpy_vit.io import check_new_file, write_json  # noqa: E402
from record_run import cpu_name  # noqa: E402
from seed_model import seed_vit  # noqa: E402
from torch_vit.augment import normalize  # noqa: E402
from torch_vit.data import make_synthetic  # noqa: E402
from torch_vit.train import NumpyBackend, TorchBackend, augmenter, bf16_supported, make_config, predict  # noqa: E402


def seed_step(model, opt, cfg):
    """The seed's training step: forward, cross-entropy, backward, clip 1.0, AdamW."""
    def step(xb, yb):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
    return step


@torch.no_grad()
def seed_predict(model, x_uint8, cfg, device):
    model.eval()
    out = []
    for i in range(0, len(x_uint8), cfg.test_batch_size):
        out.append(model(normalize(x_uint8[i:i + cfg.test_batch_size].to(device), cfg.mean, cfg.std)).cpu())
    return torch.cat(out)


def measure(contenders, rounds, sync, warmup=2):
    """{name: [seconds per round]}: every contender once per round, the order rotating from round to round."""
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
    return times


def summarise(times, reference, images):
    """{name: {img_s, ratio}}: images per second at the median time, and the median of the per-round ratios
    reference time / own time."""
    ref = times[reference]
    return {name: dict(img_s=round(images / statistics.median(t), 1),
                       ratio=round(statistics.median(r / s for r, s in zip(ref, t)), 3))
            for name, t in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="default", help="the recipe whose step, batch size and augmentations to time")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the recipe's)")
    ap.add_argument("--rounds", type=int, default=20, help="timed rounds (default 20)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-numpy", action="store_true", help="leave out the NumPy backend's step (the slowest)")
    ap.add_argument("--candidates", action="store_true", help="also time torch.compile and foreach steps")
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
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=0.01)
    lr = cfg.lr_at(1.0)
    train = {"seed_step": cycling(seed_step(reference, ref_opt, cfg))}
    runs = {"step": make_config(args.recipe, batch_size=B)}
    if bf16_supported(device):
        runs["step_amp"] = make_config(args.recipe, batch_size=B, amp=True)
    if cfg.optimizer != "adamw":
        runs["step_adamw"] = make_config(args.recipe, batch_size=B, optimizer="adamw")
    backends = {}
    for name, c in runs.items():
        backends[name] = TorchBackend(c, device)
        train[name] = cycling(lambda xb, yb, run=backends[name]: run.step(xb, yb, lr))
    compile_s = {}
    if args.candidates:
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
    if device.type == "cpu" and not args.no_numpy:
        numpy_run = NumpyBackend(make_config(args.recipe, batch_size=B, backend="numpy"), device)
        train["step_numpy"] = cycling(lambda xb, yb: numpy_run.step(xb, yb, lr))
    train["augment"] = lambda: augment(x[torch.randint(0, len(x), (B,), generator=g).to(device)], g)

    test_x = data.test_x[:1024]
    evals = {"seed_eval": lambda: seed_predict(reference, test_x, cfg, device),
             "eval": lambda: predict(backends["step"].model, test_x, runs["step"], device)}
    if "step_amp" in backends:
        evals["eval_amp"] = lambda: predict(backends["step_amp"].model, test_x, runs["step_amp"], device)

    results = summarise(measure(train, args.rounds, sync), "seed_step", B)
    results.update(summarise(measure(evals, max(3, args.rounds // 2), sync), "seed_eval", len(test_x)))
    machine = dict(cpu=cpu_name(), cores=os.cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__,
                   device=str(device), gpu=torch.cuda.get_device_name() if device.type == "cuda" else None,
                   bf16=bf16_supported(device))
    full = dict(recipe=args.recipe, batch=B, optimizer=cfg.optimizer, rounds=args.rounds,
                reference="benchmarks/seed_model.py: the plain seed model, NCHW, eager, AdamW + clip",
                machine=machine, results=results, **({"compile_s": compile_s} if compile_s else {}))
    print(json.dumps(full, indent=1))
    if args.out:
        write_json(args.out, full)


if __name__ == "__main__":
    main()
