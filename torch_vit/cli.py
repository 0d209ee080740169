"""The ``convvit`` command. ``convvit check``: NumPy against torch autograd on the seed model (or
a checkpoint), tensor by tensor, in float64 and float32, plus finite-difference spot checks; exit
status 0 only if every check passes, 1 if one fails, 2 for bad input."""

import argparse
import dataclasses
import math
import os
import shlex
import sys
import time

import numpy as np
import torch

import numpy_vit
from numpy_vit.gradcheck import fd_agrees, numerical_derivative

from .checkpoint import load_checkpoint, numpy_twin, pretrained
from .model import ViT
from .parity import BOUNDS, model_rows, to_torch


class UsageError(Exception):
    """Bad input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _size(text):
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW of positive ints, got {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


def _int_at_least(lo, what):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = lo - 1
        if value < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")


def _float_in(lo, hi, what):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (lo <= value <= hi and math.isfinite(value)):  # NaN fails too
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


_fraction = _float_in(0.0, 1.0, "a finite number in [0, 1]")
_nonneg_float = _float_in(0.0, math.inf, "a finite number >= 0")
_decay = _float_in(0.0, math.nextafter(1.0, 0.0), "a decay in [0, 1)")
_momentum = _float_in(0.0, math.nextafter(1.0, 0.0), "a momentum in [0, 1)")


def _fd_rows(model, x, labels, label_smoothing, rng, count):
    """Finite-difference spot checks of the float64 NumPy model alone: ``count`` random coordinates
    of the input and of a spread of parameters. Returns (name, analytic, numeric, ok) tuples."""
    def loss():
        return numpy_vit.cross_entropy(model.forward(x), labels, label_smoothing)[0]

    logits = model.forward(x)
    _, dlogits = numpy_vit.cross_entropy(logits, labels, label_smoothing)
    grads = dict(model.grads)
    grads["input"] = model.backward(dlogits)
    grads.update(model.grads)
    params = dict(model.named_parameters())
    names = list(params)
    chosen = ["input"] + [names[i] for i in rng.choice(len(names), size=min(count, len(names)) - 1, replace=False)]
    rows = []
    for name in chosen:
        array = x if name == "input" else params[name]
        index = tuple(int(rng.integers(0, n)) for n in array.shape)
        numeric = numerical_derivative(loss, array, index)
        analytic = float(grads[name][index])
        rows.append((f"{name}{list(index)}", analytic, numeric, fd_agrees(analytic, numeric)))
    return rows


def check(args, out=None):
    """Run the check; return the exit status (0 all passed, 1 a check failed)."""
    out = sys.stdout if out is None else out
    started = time.perf_counter()
    if args.optimizer and not args.steps:
        raise UsageError(f"--optimizer {args.optimizer}: it is the optimiser of the --steps trajectories, and no "
                         "--steps N was given")
    if args.checkpoint:
        try:
            torch_model, _ = load_checkpoint(args.checkpoint, head_channels=args.head_channels)
        except ValueError as e:
            raise UsageError(str(e)) from None
        source = f"checkpoint {args.checkpoint}"
    else:
        torch.manual_seed(args.seed)
        try:
            torch_model = ViT(args.image_size, args.patch_size, args.in_channels, args.dim, args.depth,
                              args.head_channels or 8, args.num_classes)
        except (ValueError, TypeError) as e:
            raise UsageError(str(e)) from None
        source = f"random weights, --seed {args.seed}"
    torch_model.eval()
    config = torch_model.config
    rng = np.random.default_rng(args.seed)
    h, w = config["image_size"]
    x64 = rng.standard_normal((args.batch, config["in_channels"], h, w))
    labels = rng.integers(0, config["num_classes"], args.batch)
    n_params = sum(p.numel() for p in torch_model.parameters())
    arch = tuple(config[k] for k in ("image_size", "patch_size", "in_channels", "embedding_dim", "depth",
                                      "head_channels", "num_classes"))
    print(f"convvit check: ViT{arch}, {n_params:,} parameters, {source}; batch {args.batch} of N(0, 1) images, "
          f"label smoothing {args.label_smoothing}", file=out)

    failures = total = 0
    for dtype in (np.float64, np.float32):
        model = numpy_twin(torch_model, dtype)
        twin = to_torch(model, ViT(**config))
        rows = model_rows(model, twin, x64.astype(dtype), labels, args.label_smoothing)
        print(f"\n{np.dtype(dtype).name}: NumPy against torch autograd, pass when max rel <= "
              f"{BOUNDS[np.dtype(dtype)]:.0e}", file=out)
        print(f"  {'tensor':<44} {'shape':<16} {'max abs':>10} {'max rel':>10}  result", file=out)
        for r in rows:
            verdict = "pass" if r.ok else "FAIL"
            if r.ok and r.max_rel > r.bound:
                verdict = "pass (floor)"
            print(f"  {r.name:<44} {str(r.shape):<16} {r.max_abs:>10.2e} {r.max_rel:>10.2e}  {verdict}", file=out)
        failures += sum(not r.ok for r in rows)
        total += len(rows)

    model = numpy_twin(torch_model, np.float64)
    fd = _fd_rows(model, x64.copy(), labels, args.label_smoothing, rng, args.fd)
    print("\nfloat64 finite differences (NumPy only, centred, h = 1e-6), pass when "
          "|analytic - numeric| <= 1e-5 max(|a|, |n|) + 1e-8", file=out)
    for name, a, n, ok in fd:
        print(f"  {name:<52} analytic {a: .6e}  numeric {n: .6e}  {'pass' if ok else 'FAIL'}", file=out)
    failures += sum(not ok for *_, ok in fd)
    total += len(fd)

    if args.steps:
        for dtype in (np.float64, np.float32):
            failures += not _trajectory_check(torch_model, dtype, args, out)
            total += 1

    elapsed = time.perf_counter() - started
    if failures:
        print(f"\nFAILED: {failures} of {total} checks ({elapsed:.1f} s)", file=out)
        return 1
    print(f"\nall {total} checks passed ({elapsed:.1f} s)", file=out)
    return 0


def _trajectory_check(torch_model, dtype, args, out):
    """``--steps N``: N steps of NumPy training against torch training (torch_vit.trajectory),
    printed every N/10 steps; True when every step stays within the bound."""
    from tqdm import tqdm

    from .trajectory import TRAJECTORY_BOUNDS, run_trajectory

    dtype = np.dtype(dtype)
    every = max(1, args.steps // 10)
    optimizer = args.optimizer or "adamw"
    described = ("AdamW" if optimizer == "adamw" else
                 "Muon for the blocks' 1x1-conv weights (its Newton-Schulz map in the weights' dtype, not bfloat16) "
                 "and AdamW for the rest")
    print(f"\n{dtype.name} training trajectory: {args.steps} steps of {described} (lr 0.01, weight decay 0.01, clip "
          f"1, the seed's schedule at 391 steps per epoch), batch {args.batch} of N(0, 1) images, label smoothing "
          f"{args.label_smoothing}; pass when the loss and every weight stay within max rel "
          f"{TRAJECTORY_BOUNDS[dtype]:.0e} after every step", file=out)
    print(f"  {'step':>6} {'numpy loss':>22} {'torch loss':>22} {'worst max rel':>14}", file=out)
    with tqdm(total=args.steps, desc=f"{dtype.name} trajectory", unit="step", leave=False, file=sys.stderr) as bar:
        tr = run_trajectory(torch_model.config, steps=args.steps, dtype=dtype, seed=args.seed, batch=args.batch,
                            label_smoothing=args.label_smoothing, state=torch_model.state_dict(), optimizer=optimizer,
                            progress=lambda step, worst: bar.update())
    for step, (ln, lt) in enumerate(tr.losses):
        if step % every == 0 or step == args.steps - 1:
            print(f"  {step:>6} {ln:>22.15g} {lt:>22.15g} {tr.worst[step]:>14.2e}", file=out)
    if tr.ok:
        print(f"  pass: worst max rel {max(tr.worst):.2e} over {args.steps} steps", file=out)
    else:
        print(f"  FAIL: {tr.first_failure}", file=out)
    return tr.ok


def _numbers(text, kind, n, ok, expected):
    """``n`` comma-separated ``kind`` values each passing ``ok``, or argparse's error naming ``expected``."""
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n or not all(ok(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return values


def _tuple_or_none(kind, n):
    def parse(text):
        if text.lower() in ("none", "off"):
            return None
        return _numbers(text, kind, n, math.isfinite, f"{n} comma-separated numbers or 'none'")
    return parse


def _betas(text):
    return _numbers(text, float, 2, lambda v: 0.0 <= v < 1.0,  # NaN fails too
                    "two comma-separated numbers in [0, 1)")


def _kinds(text):
    """--no-decay: comma-separated parameter kinds, or 'none'."""
    return () if text.lower() in ("none", "off", "") else tuple(k.strip() for k in text.split(","))


def _device(text):
    """--device: a device torch names, of a type that training runs on."""
    try:
        kind = torch.device(text).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def _data_args(p, default="synthetic", default_text=None, device=False):
    p.add_argument("--data", default=default, metavar="SOURCE",
                   help="cifar10 | imagefolder:PATH | synthetic (default: " + (default_text or default) + ")")
    p.add_argument("--data-dir", default="data",
                   help="where --data cifar10 looks for or downloads CIFAR-10 (default ./data)")
    p.add_argument("--cache-dir", default=None, help="cache of decoded image folders (default ~/.cache/convvit)")
    if device:  # the inspection commands run on the CPU
        p.add_argument("--device", type=_device, default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_command(args):
    from . import data as data_mod
    from .report import plot_curves, write_report
    from .train import Interrupted, NonFiniteLoss, check_out, make_config, train

    try:
        check_out(args.out, args.resume, args.overwrite)  # before the data: a refusal costs nothing
    except ValueError as e:
        raise UsageError(str(e)) from None
    scalars = ("epochs", "batch_size", "test_batch_size", "optimizer", "lr", "muon_lr", "muon_momentum",
               "weight_decay", "no_decay", "betas", "label_smoothing", "clip", "ema", "peak_epoch", "knee_epoch",
               "knee_lr", "pad_crop", "flip", "erasing", "seed")
    overrides = {k: getattr(args, k) for k in scalars if getattr(args, k) is not None}
    overrides.update({k: getattr(args, k) for k in ("crop_scale", "randaugment", "color_jitter")
                      if hasattr(args, k)})  # given as 'none': that augmentation off
    try:
        cfg = make_config(args.recipe, data=args.data, amp=args.amp, backend=args.backend, dtype=args.dtype,
                          **overrides)
        data = data_mod.load(args.data, cfg.image_size, args.data_dir, args.cache_dir, not args.no_progress)
    except ValueError as e:
        raise UsageError(str(e)) from None
    cfg = dataclasses.replace(cfg, num_classes=len(data.classes))  # the head has one output per class of the data
    if args.resume and not os.path.exists(os.path.join(args.out, "checkpoint.pt")):
        stopped = os.path.join(args.out, "stopped.json")
        why = (f" (the run stopped before its first checkpoint, {stopped} says why: start it again without --resume)"
               if os.path.exists(stopped) else "")
        raise UsageError(f"--resume: expected {os.path.join(args.out, 'checkpoint.pt')}, found none{why}")
    try:
        model, history = train(cfg, data, args.out, resume=args.resume, device=args.device,
                               progress=not args.no_progress, overwrite=args.overwrite)
    except ValueError as e:
        raise UsageError(str(e)) from None
    except NonFiniteLoss as e:
        print(f"convvit: error: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:  # SIGINT or SIGTERM: one line saying how to go on, exit 130 or 143
        print(f"convvit: {e}; resume with: {resume_command(getattr(args, 'argv', None), args.out)}", file=sys.stderr)
        return e.status
    plot_curves(history, os.path.join(args.out, "curves.png"))
    write_report(model, data, cfg, args.out)
    print(f"wrote {args.out}: config.json, metrics.jsonl, checkpoint.pt, curves.png, confusion.png, report.json")
    return 0


def resume_command(argv, out):
    """The command that continues an interrupted ``convvit train ARGV``: the same words less --out, --resume and
    --overwrite, then ``--resume --out OUT``."""
    words, argv, skip = [], list(argv if argv is not None else ["train"]), False
    for w in argv:
        if skip:
            skip = False
        elif w == "--out":
            skip = True
        elif w not in ("--resume", "--overwrite") and not w.startswith("--out="):
            words.append(w)
    return "convvit " + shlex.join(words + ["--resume", "--out", str(out)])


def _guard_out(out, held, overwrite):
    """A command writing into ``out`` refuses (one line, exit 2, before anything is loaded or written) to replace
    the earlier results ``held`` (names in ``out`` that exist) unless ``overwrite``."""
    if held and not overwrite:
        raise UsageError(f"--out {out}: expected no earlier results there, it holds {', '.join(sorted(held))}; "
                         "--overwrite replaces them")


REPORT_FILES = ("report.json", "confusion.png")  # what convvit evaluate (and train's end) write


def evaluate_command(args):
    from .report import write_report
    from .train import files_in

    out = args.out or _beside_checkpoint(args.checkpoint, "")
    _guard_out(out, files_in(out, REPORT_FILES), args.overwrite)
    try:
        model, cfg, data = _load_for_inspection(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    os.makedirs(out, exist_ok=True)
    write_report(model, data, cfg, out)
    print(f"wrote {out}: confusion.png, report.json")
    return 0


PRETRAINED_OUT = os.path.join("runs", "pretrained")  # where the bundled weights' pictures and report go


def _beside_checkpoint(checkpoint, name):
    """The default --out: ``name`` beside the checkpoint, or under runs/pretrained for the bundled weights."""
    folder = os.path.dirname(os.path.abspath(checkpoint)) if checkpoint else PRETRAINED_OUT
    return os.path.join(folder, name) if name else folder


def _load_for_inspection(args, samples=False):
    return load_for_inspection(args.checkpoint, args.data, args.data_dir, args.cache_dir, not args.no_progress,
                               samples=samples)


def load_for_inspection(checkpoint=None, data_spec=None, data_dir="data", cache_dir=None, progress=True,
                        samples=False, log=print):
    """(torch model, train config, data) for a checkpoint, or for the weights that ship with numpy_vit when
    ``checkpoint`` is None. ``data_spec`` (a --data spec) defaults to the checkpoint's own data, or with
    ``samples`` to the ten sample images that ship with numpy_vit (saying so in one line)."""
    import dataclasses

    from numpy_vit import pretrained_info

    from . import data as data_mod
    from .train import TrainConfig

    if checkpoint is None:
        info = pretrained_info()
        model, train_config = pretrained(), info["train_config"]
        log(f"no --checkpoint: the default recipe's weights that ship with numpy_vit "
            f"({info['test_acc']:.2f}% on CIFAR-10, JPEG q75 copy)")
    else:
        model, ckpt = load_checkpoint(checkpoint)
        train_config = ckpt.get("train_config", {})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in train_config.items() if k in known})
    cfg.image_size = tuple(model.config["image_size"])
    if data_spec is None and samples:
        data = data_mod.sample_data()
        if tuple(data.test_x.shape[-2:]) != cfg.image_size:
            raise ValueError(f"--data: the sample images are {data.test_x.shape[-1]}x{data.test_x.shape[-2]}, "
                             f"the checkpoint takes {cfg.image_size[1]}x{cfg.image_size[0]}; give --data SOURCE")
        log("no --data: the ten sample images that ship with numpy_vit (the first CIFAR-10 test image of each "
            "class); --data SOURCE for a whole test set")
    else:
        data = data_mod.load(data_spec or cfg.data, cfg.image_size, data_dir, cache_dir, progress)
    if len(data.classes) != model.config["num_classes"]:
        raise ValueError(f"--data: the checkpoint has {model.config['num_classes']} classes, "
                         f"the data {len(data.classes)}")
    return model, cfg, data


def gradcam_command(args):
    from .explain import gradcam

    if args.per_class is not None and args.index is not None:
        raise UsageError("--per-class and --index: expected one of them, got both")
    out = args.out or _beside_checkpoint(args.checkpoint, "gradcam")
    # the grid gradcam.png is rewritten by every run: a folder holding it (or one image's) holds earlier results
    held = [f for f in (os.listdir(out) if os.path.isdir(out) else [])
            if f == "gradcam.png" or (f.startswith("gradcam_") and f.endswith(".png"))]
    _guard_out(out, held, args.overwrite)
    try:
        model, cfg, data = _load_for_inspection(args, samples=True)
        gradcam(model, data, cfg, out, n=args.n, correct=args.correct, indices=args.index, per_class=args.per_class,
                layer=args.layer, method=args.method)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {out}: gradcam.png and one gradcam_<index>.png per image")
    return 0


def attention_command(args):
    from .explain import attention
    from .train import files_in

    out = args.out or _beside_checkpoint(args.checkpoint, "attention")
    # the image's matrices; positional.png, a picture of the weights alone, is drawn again by every run
    _guard_out(out, files_in(out, [f"attention_{args.index}.png"]), args.overwrite)
    try:
        model, cfg, data = _load_for_inspection(args, samples=True)
        attention(model, data, cfg, out, args.index)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {out}: attention_{args.index}.png, positional.png")
    return 0


CHECKPOINT_HELP = "a torch checkpoint (default: the default recipe's weights that ship with numpy_vit)"
SAMPLES_TEXT = "the ten sample images that ship with numpy_vit, one CIFAR-10 test image per class"


def build_parser():
    parser = _Parser(prog="convvit", description="A fully-convolutional ViT in NumPy and PyTorch, proven equal.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("check", help="NumPy forward and backward against torch autograd, tensor by tensor",
                       description="Builds the model (the seed configuration by default) with random weights "
                                   "from --seed, or loads --checkpoint, runs forward and backward with the loss "
                                   "in NumPy and in torch in float64 and float32, and prints one row per tensor. "
                                   "Exit status 0 only if every check passes.")
    c.add_argument("--seed", type=int, default=0, help="seed of the weights, images and labels (default 0)")
    c.add_argument("--checkpoint", metavar="PATH", help="check a trained torch checkpoint instead of random weights")
    c.add_argument("--image-size", type=_size, default=32, metavar="N|HxW", help="default 32")
    c.add_argument("--patch-size", type=_positive_int, default=2, help="default 2")
    c.add_argument("--in-channels", type=_positive_int, default=3, help="default 3")
    c.add_argument("--dim", type=_positive_int, default=32, help="embedding_dim (default 32)")
    c.add_argument("--depth", type=_positive_int, default=4, help="default 4")
    c.add_argument("--head-channels", type=_positive_int, default=None,
                   help="default 8 (with --checkpoint: the checkpoint's own, else 8)")
    c.add_argument("--num-classes", type=_positive_int, default=10, help="default 10")
    c.add_argument("--batch", type=_positive_int, default=8, help="default 8")
    c.add_argument("--label-smoothing", type=_fraction, default=0.0, help="default 0")
    c.add_argument("--fd", type=_positive_int, default=6, help="finite-difference spot checks (default 6)")
    c.add_argument("--steps", type=_positive_int, default=None, metavar="N",
                   help="also train N steps in NumPy and in torch from the same weights on the same batches, "
                        "float64 and float32, and compare the loss and every weight after each step")
    c.add_argument("--optimizer", choices=("adamw", "muon"), default=None,
                   help="of the --steps trajectories: adamw (the seed's run; default) | muon (the default recipe's)")

    t = sub.add_parser("train",
                       help="train torch_vit (the seed architecture) on CIFAR-10, an image folder or synthetic data",
                       description="Trains with a recipe (--recipe seed: the seed's run, setting for setting; "
                                   "default: the best found for 24 epochs); every setting can be overridden.")
    _data_args(t, device=True)
    t.add_argument("--recipe", default="default", help="seed | default")
    t.add_argument("--out", default="runs/latest", help="output folder (default runs/latest)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (refused without this or --resume); its files stay as they "
                        "were until the new run's first checkpoint")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--epochs", type=_positive_int)
    t.add_argument("--batch-size", type=_positive_int)
    t.add_argument("--test-batch-size", type=_positive_int)
    t.add_argument("--optimizer", metavar="adamw|muon",
                   help="adamw (the seed recipe) | muon (the default): torch.optim.Muon (Nesterov, its update scaled "
                        "to AdamW's, so --lr and --weight-decay carry over) for the blocks' 1x1-conv weights, AdamW "
                        "for the rest; torch >= 2.9")
    t.add_argument("--lr", type=_nonneg_float, help="peak learning rate")
    t.add_argument("--muon-lr", type=_nonneg_float, metavar="LR",
                   help="Muon's peak learning rate, on the same schedule (default: --lr)")
    t.add_argument("--muon-momentum", type=_momentum, metavar="M", help="Muon's momentum (default 0.95)")
    t.add_argument("--weight-decay", type=_nonneg_float)
    t.add_argument("--no-decay", type=_kinds, metavar="KINDS|none",
                   help="parameters AdamW does not decay: comma-separated among norm (LayerNorm), bias, pos "
                        "(the positional embedding); default none")
    t.add_argument("--betas", type=_betas, metavar="B1,B2", help="AdamW's betas (default 0.9,0.999)")
    t.add_argument("--label-smoothing", type=_fraction)
    t.add_argument("--clip", type=_nonneg_float, help="global gradient-norm clip (0: none)")
    t.add_argument("--ema", type=_decay, metavar="DECAY",
                   help="keep an exponential moving average of the weights, updated every step with this decay "
                        "(e.g. 0.999; less over the first steps), evaluated beside them every epoch; it is the "
                        "run's result (0: none, the default)")
    t.add_argument("--peak-epoch", type=_nonneg_float, help="end of the linear warm-up (default epochs*2//5)")
    t.add_argument("--knee-epoch", type=_nonneg_float, help="end of the first decay (default epochs*4//5)")
    t.add_argument("--knee-lr", type=_fraction, help="learning rate at the knee, as a fraction of --lr")
    t.add_argument("--crop-scale", type=_tuple_or_none(float, 2), default=argparse.SUPPRESS, metavar="LO,HI|none")
    t.add_argument("--pad-crop", type=_nonneg_int, metavar="PIXELS",
                   help="RandomCrop with this zero padding (a shift of up to that many pixels); 0: off")
    t.add_argument("--flip", type=_fraction, help="horizontal flip probability")
    t.add_argument("--randaugment", type=_tuple_or_none(int, 2), default=argparse.SUPPRESS, metavar="OPS,MAGNITUDE|none")
    t.add_argument("--color-jitter", type=_tuple_or_none(float, 3), default=argparse.SUPPRESS, metavar="B,C,S|none")
    t.add_argument("--erasing", type=_fraction, help="random erasing probability")
    t.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA, or a CPU with AVX-512 BF16 or AMX)")
    t.add_argument("--backend", default="torch",
                   help="torch (default) | numpy: numpy_vit's forward, backward and optimisers (the recipe's AdamW or "
                        "Muon) on the CPU, same initial weights and batches as torch for the same --seed")
    t.add_argument("--dtype", default="float32", help="float32 (default) | float64, of weights and arithmetic")

    e = sub.add_parser("evaluate", help="test accuracy, per class, confusion matrix and NumPy agreement of a checkpoint")
    _data_args(e, default=None, default_text="the checkpoint's own")
    e.add_argument("--checkpoint", metavar="PATH", help=CHECKPOINT_HELP)
    e.add_argument("--out", default=None, help="where to write (default: the checkpoint's folder, or runs/pretrained)")
    e.add_argument("--overwrite", action="store_true",
                   help="replace report.json and confusion.png in --out (refused without this)")

    g = sub.add_parser("gradcam", help="GradCAM on misclassified test images, for the true and the predicted class")
    _data_args(g, default=None, default_text=SAMPLES_TEXT)
    g.add_argument("--checkpoint", metavar="PATH", help=CHECKPOINT_HELP)
    g.add_argument("--n", type=_positive_int, default=10, help="how many images (default 10)")
    g.add_argument("--per-class", type=_positive_int, default=None, metavar="K",
                   help="the first K of each true class instead of the first --n (an image folder's test split "
                        "is ordered by class)")
    g.add_argument("--correct", action="store_true", help="correctly classified images instead")
    g.add_argument("--index", type=int, nargs="+", default=None, help="these test images instead")
    g.add_argument("--layer", default=None,
                   help="embedding | transformer.layers.I | mlp_head.0 (default: the last block's output)")
    g.add_argument("--method", default="gradcam", help="a pytorch-grad-cam method: gradcam, gradcam++, eigencam, ...")
    g.add_argument("--out", default=None, help="default: gradcam/ beside the checkpoint, or runs/pretrained/gradcam")
    g.add_argument("--overwrite", action="store_true",
                   help="write into an --out that holds earlier GradCAM pictures (refused without this)")

    a = sub.add_parser("attention", help="the channel-attention matrices of a test image and the positional map")
    _data_args(a, default=None, default_text=SAMPLES_TEXT)
    a.add_argument("--checkpoint", metavar="PATH", help=CHECKPOINT_HELP)
    a.add_argument("--index", type=int, required=True, help="test image index")
    a.add_argument("--out", default=None,
                   help="default: attention/ beside the checkpoint, or runs/pretrained/attention")
    a.add_argument("--overwrite", action="store_true",
                   help="replace the image's attention_<index>.png in --out (refused without this)")
    return parser


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(map(str, argv)) if argv is not None else sys.argv[1:]  # for train's resume hint
        if args.command == "check":
            return check(args)
        if args.command == "train":
            return train_command(args)
        if args.command == "evaluate":
            return evaluate_command(args)
        if args.command == "gradcam":
            return gradcam_command(args)
        if args.command == "attention":
            return attention_command(args)
    except UsageError as e:
        line = f"convvit: error: {e}"
        if str(e).startswith("checkpoint ") and len(line) > 200:  # a bad checkpoint's list of names can run long
            line = line[:196] + " ..."
        print(line, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (loading data, the report, the pictures): files
        print("convvit: interrupted", file=sys.stderr)  # are written atomically, so each is whole or absent
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
