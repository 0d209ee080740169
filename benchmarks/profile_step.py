"""Where the training step's time goes: torch.profiler over convvit train's torch step (TorchBackend), float32
and with --amp (bfloat16 autocast) where the CPU has bfloat16 instructions, and over the plain seed model's
step (benchmarks/seed_model.py, with the recipe's optimiser) for comparison. Each op's share of the step's self
CPU time, the largest first.

    python benchmarks/profile_step.py --recipe default --out benchmarks/results/profile_step.json --overwrite
"""

import argparse
import json
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from numpy_vit.io import check_new_file, write_json  # noqa: E402
from record_run import cpu_name  # noqa: E402
from seed_model import seed_vit  # noqa: E402
from train_throughput import seed_step  # noqa: E402
from torch_vit.data import make_synthetic  # noqa: E402
from torch_vit.train import TorchBackend, augmenter, bf16_supported, make_config  # noqa: E402


def shares(step, steps, top):
    """[(op, share of self CPU time, ms per step)] of the ``top`` ops, and the step's profiled ms."""
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    rows = [dict(op=e.key, share=round(e.self_cpu_time_total / total, 4),
                 ms_per_step=round(e.self_cpu_time_total / 1e3 / steps, 2), calls_per_step=e.count // steps)
            for e in events[:top]]
    return dict(ms_per_step=round(total / 1e3 / steps, 1), ops=rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="seed")
    ap.add_argument("--steps", type=int, default=10, help="profiled steps (default 10)")
    ap.add_argument("--top", type=int, default=10, help="ops listed per step (default 10)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    try:
        check_new_file(args.out, args.overwrite)
        cfg = make_config(args.recipe)
    except ValueError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    cpu = torch.device("cpu")
    data = make_synthetic(cfg.batch_size, 8, size=cfg.image_size)
    g = torch.Generator().manual_seed(0)
    xb, yb = augmenter(cfg)(data.train_x, g), data.train_y
    torch.manual_seed(0)
    reference = seed_step(seed_vit(), cfg)  # with the recipe's optimiser, as in train_throughput.py
    steps = {"plain seed model": lambda: reference(xb, yb)}
    for name, amp in (("convvit, float32", False), ("convvit, --amp", True)):
        if amp and not bf16_supported(cpu):
            continue
        run = TorchBackend(make_config(args.recipe, amp=amp), cpu)
        steps[name] = lambda run=run: run.step(xb, yb, cfg.lr)
    result = dict(recipe=args.recipe, batch=cfg.batch_size, optimizer=cfg.optimizer, steps=args.steps,
                  machine=dict(cpu=cpu_name(), cores=os.cpu_count(), threads=torch.get_num_threads(),
                               torch=torch.__version__),
                  profiles={name: shares(step, args.steps, args.top) for name, step in steps.items()})
    print(json.dumps(result, indent=1))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
