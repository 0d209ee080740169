"""Training throughput on this machine: the data pipeline alone (batched augmentation of in-memory
uint8 images), a full training step (augmentation + forward + backward + clip + the recipe's optimiser)
of ``convvit train``'s torch backend (channels_last memory) and of the NumPy backend (``--backend numpy``,
float32), the torch step with AdamW alone when the recipe's optimiser is Muon, the AdamW step in torch's
default contiguous layout, and evaluation, at batch 128 by default, for a recipe's augmentations.

    python benchmarks/train_throughput.py --recipe seed --out benchmarks/results/train_throughput.json
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from numpy_vit.io import check_new_file, write_json
from torch_vit.data import make_synthetic
from torch_vit.model import ViT
from torch_vit.train import NumpyBackend, TorchBackend, augmenter, make_config, predict


def timed(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    try:
        check_new_file(args.out, args.overwrite)  # before anything is measured
    except ValueError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    device = torch.device(args.device)
    cfg = make_config(args.recipe)
    data = make_synthetic(4096, 1024, size=cfg.image_size)  # pixels do not change the speed
    x, y = data.train_x.to(device), data.train_y.to(device)
    g = torch.Generator().manual_seed(0)
    augment = augmenter(cfg)
    B = args.batch
    idx = lambda: torch.randint(0, len(x), (B,), generator=g).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def pipeline():
        augment(x[idx()], g)
        sync()

    results = {}
    results["pipeline_img_s"] = B / timed(pipeline, args.repeats)
    steps = {"train_step_img_s": dict(backend="torch"), "train_step_img_s_numpy": dict(backend="numpy")}
    if cfg.optimizer != "adamw":
        steps["train_step_img_s_adamw"] = dict(backend="torch", optimizer="adamw")
    for key, settings in steps.items():  # the training loop's own step (torch_vit/train.py)
        if settings["backend"] == "numpy" and device.type != "cpu":
            continue  # the NumPy backend runs on the CPU only
        run = (TorchBackend if settings["backend"] == "torch" else NumpyBackend)(make_config(args.recipe, **settings),
                                                                                 device)

        def step():
            i = idx()
            run.step(augment(x[i], g), y[i], cfg.lr)
            sync()

        results[key] = B / timed(step, args.repeats if settings["backend"] == "torch" else max(3, args.repeats // 3))
    torch.manual_seed(0)
    model = ViT(**cfg.model_config()).to(device)  # torch's default contiguous layout, for comparison
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    def contiguous_step():
        i = idx()
        loss = F.cross_entropy(model(augment(x[i], g).contiguous()), y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sync()

    results["train_step_img_s_contiguous"] = B / timed(contiguous_step, args.repeats)
    t = time.perf_counter()
    predict(model.to(memory_format=torch.channels_last), data.test_x, cfg, device)
    results["eval_img_s"] = len(data.test_x) / (time.perf_counter() - t)
    machine = dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                   torch=torch.__version__, threads=torch.get_num_threads(), device=str(device),
                   gpu=torch.cuda.get_device_name() if device.type == "cuda" else None)
    full = dict(recipe=args.recipe, batch=B, machine=machine, **{k: round(v, 1) for k, v in results.items()})
    per_epoch = 50_000 / results["train_step_img_s"] + 10_000 / results["eval_img_s"]
    full["estimated_cifar10_epoch_s"] = round(per_epoch, 1)
    print(json.dumps(full, indent=1))
    if args.out:
        write_json(args.out, full)


if __name__ == "__main__":
    main()
