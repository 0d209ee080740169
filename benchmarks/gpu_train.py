"""The default recipe's whole run on one GPU: the data kept on the device, no host synchronisation inside an epoch.

convvit train's loop (torch_vit/train.py ``_train``) draws each batch's augmentation on the CPU and copies its
parameters to the device every step (blocking copies: the host waits for the device there), and launches every
kernel of the step from Python; on a GPU, a step of this small model costs far more in launches than in arithmetic.
Here the same run is laid out for the device, with the same pieces:

* the data: the uint8 train and test images go to the device once;
* the batches: at each epoch's start the epoch's random draws are made on the CPU from the same generator, in the
  same order, as ``_train`` makes them (torch_vit.augment's sample_crop_params and sample_flip_params, batch by
  batch), and the whole epoch is augmented at once on the device with torch_vit.augment's resized_crop, the flip
  and normalize: image for image the batches of ``convvit train`` with the same seed;
* the step: TorchBackend's (torch_vit.model.ViT in channels_last, torch_optimizers' AdamW and Muon, clip,
  --amp's bfloat16 autocast), run at learning rate 1, after which every weight moves by its optimiser's scheduled
  rate times that step: w = w0 + lr * (w1 - w0). Both optimisers' updates are linear in the learning rate (decoupled
  weight decay; moments and momentum that do not depend on it), so this is their step at lr, up to float rounding,
  with the rate read from a device tensor instead of a Python float that a captured graph would freeze;
* on CUDA the step on a full batch is captured once as a CUDA graph (after warm-up steps whose effect is undone:
  weights copied back, optimiser state zeroed as when new) and replayed, reading its batch and rate at a step
  counter held on the device; the epoch's last, partial batch runs eagerly. Loss, correct answers and non-finite
  steps add up on the device and are read at the epoch's end, where the host waits for the device (once to time the
  epoch, then in the evaluation);
* --compile: torch.compile of the model for the graphed step (compiled during the warm-up, whose time is recorded
  as compile_s); the partial batch and the evaluation use the eager model on the same weights.

The wall time runs from the decoded data on the host to the last epoch's test accuracy, and is split into the data's
copy to the device, the set-up, the warm-up (and compile), the graph capture, the epochs' training and their
evaluation.

    python benchmarks/gpu_train.py --out benchmarks/results/gpu_train.json
    python benchmarks/gpu_train.py --amp --compile --out benchmarks/results/gpu_train_amp_compile.json
    python benchmarks/gpu_train.py --device cpu --data synthetic --epochs 1 --out /tmp/gpu_train.json  # a check
"""

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from numpy_vit.io import check_new_file, write_json  # noqa: E402
from record_run import cpu_name  # noqa: E402
from torch_vit import data as data_module  # noqa: E402
from torch_vit.augment import normalize, resized_crop, sample_crop_params, sample_flip_params  # noqa: E402
from torch_vit.train import (TorchBackend, _epoch_generator, augmenter, evaluate_logits, make_config,  # noqa: E402
                             muon_names, predict)

GOAL_S = 60.0  # issue 18: the default recipe's 24 epochs on one H200, end to end
AUGMENT_CHUNK = 8192  # images augmented in one go on the device (memory: about 100 KB each for the resize)


def check_recipe(cfg):
    """The augmentation this script lays out on the device is the default recipe's: a resized crop and a flip."""
    extra = [k for k in ("pad_crop", "randaugment", "color_jitter", "erasing", "ema") if getattr(cfg, k)]
    if extra:
        raise ValueError(f"gpu_train: expected a recipe with a resized crop and a flip only (the default), "
                         f"got {', '.join(f'{k}={getattr(cfg, k)}' for k in extra)}")
    if cfg.dtype != "float32":
        raise ValueError(f"gpu_train: expected --dtype float32, got {cfg.dtype}")


# ---------------------------------------------------------------------------------------------- the batches

def epoch_draws(cfg, n, epoch, image_hw):
    """The random draws of one epoch of ``_train`` for ``n`` training images, made as it makes them: the epoch's
    generator, the permutation, then for each batch in turn the crop boxes and the flips. Returns (perm, (i, j, h,
    w), flip), all (n,) on the CPU, in the order the images are stepped on."""
    aug = augmenter(cfg)
    g = _epoch_generator(cfg.seed, epoch)
    perm = torch.randperm(n, generator=g)
    boxes, flips = [], []
    for start in range(0, n, cfg.batch_size):
        b = min(cfg.batch_size, n - start)
        boxes.append(sample_crop_params(b, *image_hw, aug.crop_scale, aug.crop_ratio, g) if aug.crop_scale
                     else None)
        flips.append(sample_flip_params(b, aug.flip, g) if aug.flip > 0 else torch.zeros(b, dtype=torch.bool))
    crop = tuple(torch.cat(t) for t in zip(*boxes)) if aug.crop_scale else None
    return perm, crop, torch.cat(flips)


def augment_epoch(train_x, draws, aug, out=None, chunk=AUGMENT_CHUNK, normalized=True):
    """The epoch's augmented, normalized images in step order, computed on train_x's device (uint8 (N, C, H, W)):
    image k is train_x[perm[k]] cropped to its box and resized, flipped where drawn, normalized. Written into
    ``out`` (float32 (N, C, size, size)) when given. ``normalized=False``: the uint8 images before normalize. Chunks
    of the epoch give the same images as its batches: resized_crop works image by image (a chunk's wider filter
    window only adds taps of weight 0)."""
    perm, crop, flip = draws
    device = train_x.device
    h, w = aug._size_hw
    if out is None:
        out = torch.empty((len(perm), train_x.shape[1], h, w), device=device,
                          dtype=torch.float32 if normalized else torch.uint8)
    for start in range(0, len(perm), chunk):
        stop = min(start + chunk, len(perm))
        x = train_x.index_select(0, perm[start:stop].to(device))
        if crop is not None:
            x = resized_crop(x, *(t[start:stop] for t in crop), aug.size)
        x = torch.where(flip[start:stop].to(device)[:, None, None, None], x.flip(-1), x)
        out[start:stop] = normalize(x, aug.mean, aug.std) if normalized else x
    return out


def augment_matches_cpu(train_x, draws, aug, count=1024):
    """The largest difference, in grey levels, between the first ``count`` images of the epoch cropped, resized and
    flipped on train_x's device and on the CPU from the same draws, before normalize (0: the same images).
    normalize is left out: on CUDA torch divides by the number 255 as a product with 1/255, which is one float32
    step away from the CPU's quotient for about half the grey levels."""
    perm, crop, flip = draws
    first = (perm[:count], None if crop is None else tuple(t[:count] for t in crop), flip[:count])
    on_device = augment_epoch(train_x, first, aug, normalized=False).cpu()
    on_cpu = augment_epoch(train_x.cpu(), first, aug, normalized=False)
    return int((on_device.int() - on_cpu.int()).abs().max())


# ------------------------------------------------------------------------------------------------- the step

class DeviceLoop:
    """An epoch's steps as device work alone, on buffers that keep their addresses (a captured graph reads them):
    x, y (the epoch's batches, in order), lrs (steps, 2) (AdamW's and Muon's rates per step), k (the next step),
    loss_sum, correct, bad (non-finite steps) summed over the epoch."""

    def __init__(self, run, n, image_shape):
        cfg, device = run.cfg, run.device
        self.run, self.cfg, self.n, self.batch = run, cfg, n, cfg.batch_size
        self.steps, self.full = math.ceil(n / cfg.batch_size), n // cfg.batch_size
        self.x = torch.empty((n,) + tuple(image_shape), device=device)
        self.y = torch.empty(n, dtype=torch.int64, device=device)
        self.lrs = torch.zeros((self.steps, 2), device=device)
        self.k = torch.zeros((), dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.bad = torch.zeros((), dtype=torch.int64, device=device)
        self.rows = torch.arange(self.batch, device=device)
        hidden = muon_names(run.model) if run.muon else set()
        named = list(run.model.named_parameters())
        # (AdamW's weights, Muon's weights): lrs[:, 0] and lrs[:, 1] scale their steps
        self.groups = ([p for n_, p in named if n_ not in hidden], [p for n_, p in named if n_ in hidden])
        self.before = tuple([torch.empty_like(p) for p in group] for group in self.groups)
        self.eager_model = self.full_model = run.model
        self.graph = None

    def start_epoch(self, x, y, lrs):
        """The epoch's batches (x may be the buffer itself) and rates; zeroes the counter and the sums."""
        if x is not self.x:
            self.x.copy_(x)
        self.y.copy_(y)
        self.lrs.copy_(torch.as_tensor(lrs, dtype=self.lrs.dtype))
        for t in (self.k, self.loss_sum, self.correct, self.bad):
            t.zero_()

    def _step(self, model, xb, yb, lr):
        """TorchBackend's step at learning rate 1, then w = w0 + lr * (w1 - w0) for each optimiser's weights."""
        with torch.no_grad():
            for group, before in zip(self.groups, self.before):
                if group:
                    torch._foreach_copy_(before, group)
        self.run.model = model
        try:
            loss_b, correct_b = self.run.step(xb, yb, 1.0, 1.0)
        finally:
            self.run.model = self.eager_model
        with torch.no_grad():
            for group, before, rate in zip(self.groups, self.before, lr.unbind()):
                if group:
                    moved = torch._foreach_sub(group, before)  # the step at lr 1
                    torch._foreach_mul_(moved, rate)
                    torch._foreach_add_(moved, before)
                    torch._foreach_copy_(group, moved)
            self.loss_sum += loss_b.to(torch.float64)
            self.correct += correct_b
            self.bad += (~torch.isfinite(loss_b) | ~torch.isfinite(self.run.grad_norm)).to(torch.int64)

    def full_step(self):
        """The step on full batch k (read from the device), then k += 1: the graph's body."""
        rows = self.rows + self.k * self.batch
        self._step(self.full_model, self.x.index_select(0, rows), self.y.index_select(0, rows),
                   self.lrs.index_select(0, self.k.view(1)).squeeze(0))
        self.k += 1

    def last_step(self):
        """The epoch's last, partial batch (eager)."""
        start = self.full * self.batch
        self._step(self.eager_model, self.x[start:], self.y[start:], self.lrs[self.steps - 1])

    def epoch(self):
        """Queue the epoch's steps; nothing here waits for the device."""
        for _ in range(self.full):
            if self.graph is not None:
                self.graph.replay()
            else:
                self.full_step()
        if self.n % self.batch:
            self.last_step()

    def warm_up(self, steps=3, capture=False):
        """Run ``steps`` full steps (torch.compile compiles here; CUDA's lazy set-ups happen), capture the full step
        as a CUDA graph if asked, then undo it all: weights copied back, optimiser state zeroed (the value AdamW's
        and Muon's state starts from), counter and sums zeroed. Returns (warm-up seconds, capture seconds)."""
        saved = [(t, t.detach().clone()) for t in list(self.run.model.parameters()) + list(self.run.model.buffers())]
        cuda = self.run.device.type == "cuda"
        started = time.perf_counter()
        side = torch.cuda.Stream() if cuda else None
        if cuda:
            side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side) if cuda else contextlib.nullcontext():
            for _ in range(min(steps, self.full)):  # the epoch's full batches, no further
                self.full_step()
        if cuda:
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
        warm = time.perf_counter() - started
        started = time.perf_counter()
        if capture:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.full_step()
            torch.cuda.synchronize()
        captured = time.perf_counter() - started
        with torch.no_grad():
            for t, copy in saved:
                t.copy_(copy)
            for opt in (self.run.opt, self.run.muon):
                for state in (opt.state.values() if opt else ()):
                    for value in state.values():
                        if torch.is_tensor(value):
                            value.zero_()
            for t in (self.k, self.loss_sum, self.correct, self.bad):
                t.zero_()
        return warm, captured


def make_capturable(run):
    """AdamW keeps its step count on the device and computes its bias corrections there (capturable), so that a
    captured step does not freeze them; the same maths. Set before its first step, which makes its state."""
    for group in run.opt.param_groups:
        group["capturable"] = True


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------------- the run

def machine_info(device):
    info = dict(device=str(device), gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                cpu=cpu_name(), cores=os.cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__,
                cuda=torch.version.cuda if device.type == "cuda" else None)
    if device.type == "cuda":
        info.update(tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32,
                    cudnn_benchmark=torch.backends.cudnn.benchmark)
    return info


def train(cfg, data, device, graph=True, compile_model=False, eval_batch=1000, log=print):
    """The run, from the decoded data on the host to the last epoch's test accuracy. Returns the results dict."""
    check_recipe(cfg)
    timings = {}
    started = time.perf_counter()
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    test_x = data.test_x.to(device)
    sync(device)
    timings["data_to_device_s"] = time.perf_counter() - started

    mark = time.perf_counter()
    run = TorchBackend(cfg, device)
    if device.type == "cuda":
        make_capturable(run)
    aug = augmenter(cfg)
    n, image_hw = len(train_x), tuple(train_x.shape[2:])
    loop = DeviceLoop(run, n, (train_x.shape[1],) + aug._size_hw)
    steps = loop.steps

    def prepare(epoch, draws):
        """The epoch's batches, labels and rates into the loop's buffers (queued on the device)."""
        augment_epoch(train_x, draws, aug, out=loop.x)
        ts = [epoch + (s + 1) / steps for s in range(steps)]
        loop.start_epoch(loop.x, train_y.index_select(0, draws[0].to(device)),
                         [[cfg.lr_at(t), cfg.muon_lr_at(t)] for t in ts])

    draws = epoch_draws(cfg, n, 0, image_hw)
    augment_check = augment_matches_cpu(train_x, draws, aug) if device.type != "cpu" else None
    prepare(0, draws)  # epoch 0's batches, which the warm-up steps on too
    sync(device)
    timings["setup_s"] = time.perf_counter() - mark

    if compile_model:
        loop.full_model = torch.compile(run.model)
    warm, captured = (loop.warm_up(capture=graph and device.type == "cuda") if loop.full else (0.0, 0.0))
    timings["compile_s" if compile_model else "warm_up_s"] = warm
    timings["capture_s"] = captured
    timings["train_s"] = timings["eval_s"] = 0.0
    log(f"set up in {time.perf_counter() - started:.1f} s ({'compiled, ' if compile_model else ''}"
        f"{'graph' if loop.graph is not None else 'eager'}; warm-up {warm:.1f} s, capture {captured:.2f} s)")

    history = []
    for epoch in range(cfg.epochs):
        mark = time.perf_counter()
        if epoch:
            prepare(epoch, draws)
        loop.epoch()  # queued; the host goes on to the next epoch's draws while the device steps
        if epoch + 1 < cfg.epochs:
            draws = epoch_draws(cfg, n, epoch + 1, image_hw)
        sync(device)
        train_s = time.perf_counter() - mark
        loss_sum, correct, bad = loop.loss_sum.item(), int(loop.correct), int(loop.bad)
        if bad:
            raise FloatingPointError(f"epoch {epoch}: {bad} of {steps} steps had a non-finite loss or gradient norm "
                                     f"(--lr {cfg.lr:g})")
        mark = time.perf_counter()
        test = evaluate_logits(predict(run.model, test_x, cfg, device, batch_size=eval_batch), data.test_y)
        eval_s = time.perf_counter() - mark
        timings["train_s"] += train_s
        timings["eval_s"] += eval_s
        row = dict(epoch=epoch, train_loss=loss_sum / n, train_acc=correct / n, **test, lr=cfg.lr_at(epoch + 1),
                   train_s=round(train_s, 3), eval_s=round(eval_s, 3), train_img_s=round(n / train_s))
        history.append(row)
        log(f"epoch {epoch:2d} | train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | test acc "
            f"{row['test_acc']:.4f} | {train_s:.2f} s + eval {eval_s:.2f} s")
    wall = time.perf_counter() - started
    timings = {k: round(v, 3) for k, v in timings.items()}
    timings["rest_s"] = round(wall - sum(timings.values()), 3)
    return dict(wall_s=round(wall, 2), wall_without_compile_s=round(wall - timings.get("compile_s", 0.0), 2),
                split=timings, steps_per_epoch=steps, graph=loop.graph is not None,
                augment_device_vs_cpu_grey_levels=augment_check,
                test_acc=round(100 * history[-1]["test_acc"], 2), history=history)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a small check")
    ap.add_argument("--epochs", type=int, default=None, help="epochs (default: the recipe's, 24)")
    ap.add_argument("--data", default="imagefolder:../cifar10-jpeg", help="imagefolder:PATH (default "
                    "imagefolder:../cifar10-jpeg) or synthetic (a small generated set, for checks)")
    ap.add_argument("--cache-dir", default=None, help="where the decoded image folder is cached")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast of the forward")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (its time recorded apart)")
    ap.add_argument("--no-graph", action="store_true", help="no CUDA graph: every step launched from Python")
    ap.add_argument("--eval-batch", type=int, default=1000, help="test images per evaluation batch (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/gpu_train.json", help="results JSON")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    try:
        check_new_file(args.out, args.overwrite)  # before anything runs
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: expected a CUDA device, this machine has none "
                             "(--device cpu runs a small check)")
        if args.epochs is not None and args.epochs < 1:
            raise ValueError(f"--epochs: expected at least 1, got {args.epochs}")
        overrides = dict(seed=args.seed, amp=args.amp, data=args.data)
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        cfg = make_config("default", **overrides)
        check_recipe(cfg)
        started = time.perf_counter()
        data = data_module.load(args.data, cfg.image_size, cache_dir=args.cache_dir, progress=False)
        decode_s = time.perf_counter() - started
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        result = train(cfg, data, device, graph=not args.no_graph, compile_model=args.compile,
                       eval_batch=args.eval_batch)
    except ValueError as e:  # bad input, data.DataError, --amp without bfloat16
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    except FloatingPointError as e:
        ap.exit(1, f"{ap.prog}: stopped: {e}\n")
    full = dict(command="python benchmarks/gpu_train.py " + " ".join(sys.argv[1:] if argv is None else argv),
                recipe=cfg.recipe, epochs=cfg.epochs, amp=cfg.amp, compile=args.compile, eval_batch=args.eval_batch,
                machine=machine_info(device),
                data=dict(source=data.source, train=len(data.train_x), test=len(data.test_x),
                          decode_s=round(decode_s, 2)),
                goal=dict(wall_s=GOAL_S, met=result["wall_s"] <= GOAL_S) if device.type == "cuda" else None,
                **result, config=json.loads(json.dumps(dataclasses.asdict(cfg), default=list)))
    print(json.dumps({k: v for k, v in full.items() if k not in ("history", "config")}, indent=1))
    if args.out:
        write_json(args.out, full)
    return full


if __name__ == "__main__":
    main()
