"""Training of torch_vit on in-memory uint8 tensors with batched augmentation, and evaluation.

One run writes into --out: config.json (every setting), metrics.jsonl (one JSON object per epoch),
checkpoint.pt (model, optimizer and history after the last finished epoch, written atomically), and
at the end curves.png, confusion.png and report.json (test accuracy per class, confusion matrix, and
how many test images the NumPy model classifies as torch does). --resume continues from
checkpoint.pt: every epoch draws its batches and augmentations from a generator seeded by
(seed, epoch), so a resumed run ends with the same weights as an uninterrupted one. SIGINT (Ctrl-C) or
SIGTERM during training ends the run after the current step with a checkpoint of where it is (mid-epoch:
the step and the epoch generator's state too), from which --resume continues to the same weights. With --ema, a
moving average of the weights is updated after every step and evaluated beside them every epoch; it
is the run's result (checkpoint.pt's model, the report), the trained weights kept for --resume.
"""

import contextlib
import copy
import dataclasses
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import numpy_vit
from numpy_vit.io import atomic_write, write_json
from numpy_vit.optim import AdamW, Muon, clip_grad_norm

from .augment import CIFAR10_MEAN, CIFAR10_STD, Augment, normalize
from .checkpoint import CONFIG_KEYS, load_checkpoint, numpy_twin, save_checkpoint
from .model import ViT


@dataclass
class TrainConfig:
    """Every setting of a run. The recipes below fill these; any flag overrides one."""
    # model (the seed's architecture by default)
    image_size: tuple = (32, 32)
    patch_size: int = 2
    in_channels: int = 3
    embedding_dim: int = 32
    depth: int = 4
    head_channels: int = 8
    num_classes: int = 10
    # optimisation
    epochs: int = 24
    batch_size: int = 128
    test_batch_size: int = 64
    optimizer: str = "adamw"  # adamw | muon: torch.optim.Muon for the blocks' 1x1-conv weights, AdamW for the rest
    lr: float = 0.01
    muon_lr: float = None  # Muon's peak learning rate, on the same schedule (None: lr)
    muon_momentum: float = 0.95
    weight_decay: float = 0.01
    no_decay: tuple = ()  # parameters AdamW does not decay, by kind: "norm" (LayerNorm), "bias", "pos"
    betas: tuple = (0.9, 0.999)
    label_smoothing: float = 0.0
    clip: float = 1.0
    ema: float = 0.0  # decay of an exponential moving average of the weights, updated every step (0: none)
    # piecewise-linear learning rate, stepped every batch: np.interp(t, [0, peak, knee, epochs],
    # [0, lr, lr * knee_lr, 0]), t = epoch + (step + 1) / steps; peak, knee default to the seed's
    # epochs * 2 // 5 and epochs * 4 // 5 (a peak or knee past the end is moved back to it)
    peak_epoch: float = None
    knee_epoch: float = None
    knee_lr: float = 0.05
    # augmentation, in the seed's order (None or 0: off)
    crop_scale: tuple = (0.75, 1.0)
    pad_crop: int = 0  # RandomCrop(size, padding=pad_crop): a shift of up to that many pixels
    flip: float = 0.5
    randaugment: tuple = (1, 8)
    color_jitter: tuple = (0.1, 0.1, 0.1)
    erasing: float = 0.25
    mean: tuple = CIFAR10_MEAN
    std: tuple = CIFAR10_STD
    # run
    seed: int = 0
    recipe: str = "default"
    data: str = "synthetic"
    amp: bool = False  # bfloat16 autocast of the forward (CUDA, or a CPU with bfloat16 instructions); float32 weights
    backend: str = "torch"  # torch: torch_vit; numpy: numpy_vit's forward, backward and AdamW on the CPU
    dtype: str = "float32"  # of the weights and the arithmetic (float64 for exact comparisons)

    def schedule(self, lr=None):
        """(epochs, learning rates) of the piecewise-linear schedule peaking at ``lr`` (default self.lr)."""
        lr = self.lr if lr is None else lr
        peak = self.epochs * 2 // 5 if self.peak_epoch is None else self.peak_epoch
        knee = self.epochs * 4 // 5 if self.knee_epoch is None else self.knee_epoch
        peak = min(peak, self.epochs)  # a short run (--epochs 1) of a recipe with a fixed warm-up
        knee = min(max(knee, peak), self.epochs)
        return [0, peak, knee, self.epochs], [0, lr, lr * self.knee_lr, 0]

    def lr_at(self, t, lr=None):
        xp, fp = self.schedule(lr)
        return float(np.interp(t, xp, fp))

    def muon_lr_at(self, t):
        """Muon's learning rate at t: the same schedule, peaking at muon_lr (at lr when that is None)."""
        return self.lr_at(t, self.muon_lr)

    def model_config(self):
        return {k: getattr(self, k) for k in CONFIG_KEYS if hasattr(self, k)}


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # for checkpoints older than a setting


# The seed's run, setting for setting (../shared/seed/RECIPE.md), and the best recipe found for the
# same architecture in 24 epochs (README, "Training").
RECIPES = {
    "seed": dict(epochs=25, batch_size=128, test_batch_size=64, optimizer="adamw", lr=0.01, weight_decay=0.01,
                 label_smoothing=0.0, clip=1.0, ema=0.0, knee_lr=0.05, crop_scale=(0.75, 1.0), pad_crop=0, flip=0.5,
                 randaugment=(1, 8), color_jitter=(0.1, 0.1, 0.1), erasing=0.25),
    "default": dict(epochs=24, batch_size=64, test_batch_size=64, optimizer="muon", lr=0.01, weight_decay=0.07,
                    label_smoothing=0.0, clip=1.0, ema=0.0, peak_epoch=2.0, knee_lr=0.05, crop_scale=(0.85, 1.0),
                    pad_crop=0, flip=0.5, randaugment=None, color_jitter=None, erasing=0.0),
}


BACKENDS = ("torch", "numpy")
OPTIMIZERS = ("adamw", "muon")
NO_DECAY_KINDS = ("norm", "bias", "pos")
DTYPES = {"float32": (torch.float32, np.float32), "float64": (torch.float64, np.float64)}


FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # a larger --lr overflows the float32 optimiser state


def make_config(recipe="default", **overrides):
    if recipe not in RECIPES:
        raise ValueError(f"--recipe: expected one of {', '.join(RECIPES)}, got {recipe!r}")
    if overrides.get("backend", "torch") not in BACKENDS:
        raise ValueError(f"--backend: expected one of {', '.join(BACKENDS)}, got {overrides['backend']!r}")
    if overrides.get("optimizer", "adamw") not in OPTIMIZERS:
        raise ValueError(f"--optimizer: expected one of {', '.join(OPTIMIZERS)}, got {overrides['optimizer']!r}")
    if overrides.get("dtype", "float32") not in DTYPES:
        raise ValueError(f"--dtype: expected one of {', '.join(DTYPES)}, got {overrides['dtype']!r}")
    bad = [k for k in overrides.get("no_decay", ()) if k not in NO_DECAY_KINDS]
    if bad:
        raise ValueError(f"--no-decay: expected kinds among {', '.join(NO_DECAY_KINDS)}, "
                         f"got {', '.join(map(repr, bad))}")
    muon_settings = [k for k in ("muon_lr", "muon_momentum") if k in overrides]
    optimizer = overrides.get("optimizer", RECIPES[recipe]["optimizer"])
    if muon_settings and optimizer != "muon":
        raise ValueError(f"--{muon_settings[0].replace('_', '-')}: applies to --optimizer muon, "
                         f"got --optimizer {optimizer} (--recipe {recipe})")
    _check_number(overrides, "muon_lr", "a finite learning rate >= 0", lambda v: 0 <= v < math.inf, optional=True)
    _check_number(overrides, "muon_momentum", "a momentum in [0, 1)", lambda v: 0 <= v < 1)
    _check_number(overrides, "ema", "a decay in [0, 1)", lambda v: 0 <= v < 1)
    _check_number(overrides, "lr", f"a learning rate from 0 to {FLOAT32_MAX:.2g} (float32's largest)",
                  lambda v: 0 <= v <= FLOAT32_MAX)
    _check_number(overrides, "seed", "an integer from 0 to 2**32 - 1",
                  lambda v: float(v).is_integer() and 0 <= v < 2**32)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    settings = dict(RECIPES[recipe], recipe=recipe)
    settings.update(overrides)
    cfg = TrainConfig(**settings)
    if isinstance(cfg.image_size, int):
        cfg.image_size = (cfg.image_size, cfg.image_size)
    _check_augmentation(cfg)
    return cfg


def _check_augmentation(cfg):
    """The augmentation settings, each checked against its flag's range (a one-line error naming the flag), before
    any data is read or any folder made."""
    if cfg.crop_scale is not None and not 0 < cfg.crop_scale[0] <= cfg.crop_scale[1] <= 1:
        raise ValueError(f"--crop-scale: expected LO,HI with 0 < LO <= HI <= 1 (shares of the image's area), "
                         f"got {','.join(f'{v:g}' for v in cfg.crop_scale)}")
    if not 0 <= cfg.pad_crop < min(cfg.image_size):
        raise ValueError(f"--pad-crop: expected 0 to {min(cfg.image_size) - 1} pixels (less than the image), "
                         f"got {cfg.pad_crop}")
    if cfg.randaugment is not None and not (cfg.randaugment[0] >= 0 and 0 <= cfg.randaugment[1] <= 30):
        raise ValueError(f"--randaugment: expected OPS,MAGNITUDE with OPS >= 0 and MAGNITUDE 0 to 30, "
                         f"got {','.join(str(v) for v in cfg.randaugment)}")
    if cfg.color_jitter is not None and min(cfg.color_jitter) < 0:
        raise ValueError(f"--color-jitter: expected B,C,S each >= 0, got {','.join(f'{v:g}' for v in cfg.color_jitter)}")


def _check_number(overrides, key, what, ok, optional=False):
    """A given setting must be a number (not a bool) for which ``ok`` holds (or None when ``optional``),
    else a one-line error naming its flag. API callers reach make_config without argparse's checks."""
    if key not in overrides or (optional and overrides[key] is None):
        return
    value = overrides[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        raise ValueError(f"--{key.replace('_', '-')}: expected {what}, got {value!r}")


def augmenter(cfg):
    h, w = cfg.image_size
    if h != w:
        raise ValueError(f"training augments square images, got image_size {tuple(cfg.image_size)}")
    return Augment(crop_scale=cfg.crop_scale, pad_crop=cfg.pad_crop, flip=cfg.flip, randaugment=cfg.randaugment,
                   color_jitter=cfg.color_jitter, erasing=cfg.erasing, mean=cfg.mean, std=cfg.std, size=h)


def no_decay_names(model, kinds):
    """Names of the parameters of a torch_vit ``model`` that AdamW leaves undecayed: those of its
    LayerNorms ("norm"), every bias ("bias"), the positional embedding ("pos")."""
    names = set()
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(prefix=module_name, recurse=False):
            if (("norm" in kinds and isinstance(module, torch.nn.LayerNorm))
                    or ("bias" in kinds and name.endswith("bias"))
                    or ("pos" in kinds and name.endswith("pos_embedding"))):
                names.add(name)
    return names


def muon_names(model):
    """Names of the parameters of a torch_vit ``model`` that --optimizer muon gives to Muon: the weights
    of the 1x1 convolutions in the transformer blocks (q, k, v, unify_heads, the MLP's two), matrices
    (out, in) in all but shape. The patch embedding, positional embedding, norms, biases and the head
    stay with AdamW, as Muon's authors advise for a network's first and last layers."""
    return {name for name, p in model.named_parameters()
            if name.startswith("transformer.") and p.ndim == 4 and p.shape[2:] == (1, 1)}


def torch_muon(model, lr, weight_decay, momentum, muon=None):
    """Muon for the ``muon_names`` weights of a torch_vit ``model``, and [(weight, view)]: Muon takes 2D
    parameters, so it gets (out, in) views sharing each 1x1 conv weight's storage (its in-place update is the
    conv's); ``muon_step`` sets their grads from the conv's before each step. ``muon``: the class, by default
    torch_vit.optim.BatchedMuon (torch.optim.Muon's update, the matrices of one shape orthogonalised together);
    torch.optim.Muon itself takes the same arguments and state."""
    if not hasattr(torch.optim, "Muon"):
        raise ValueError(f"--optimizer muon: expected torch >= 2.9 (torch.optim.Muon), got {torch.__version__}")
    from .optim import BatchedMuon  # subclasses torch.optim.Muon, so only after the check above

    hidden = muon_names(model)
    views = [(p, torch.nn.Parameter(p.data.view(p.shape[0], -1))) for n, p in model.named_parameters() if n in hidden]
    muon = (muon or BatchedMuon)([v for _, v in views], lr=lr, weight_decay=weight_decay, momentum=momentum,
                                 adjust_lr_fn="match_rms_adamw")  # so AdamW's lr and decay carry over
    return muon, views


def torch_optimizers(model, cfg, muon=None):
    """(AdamW, Muon or None, Muon's views) for the parameters of a model with torch_vit's names, as ``cfg`` sets
    them: with --optimizer muon, Muon (of class ``muon``, see ``torch_muon``) takes the ``muon_names`` weights and
    AdamW the rest; --no-decay puts the kinds it names in a second AdamW group without decay (one group
    otherwise, as before the setting existed)."""
    params = list(model.named_parameters())
    opt_muon, views = None, []
    if cfg.optimizer == "muon":
        opt_muon, views = torch_muon(model, cfg.lr, cfg.weight_decay, cfg.muon_momentum, muon)
        hidden = muon_names(model)
        params = [(n, p) for n, p in params if n not in hidden]
    if cfg.no_decay:
        skip = no_decay_names(model, cfg.no_decay)
        groups = [{"params": [p for n, p in params if n not in skip]},
                  {"params": [p for n, p in params if n in skip], "weight_decay": 0.0}]
    else:
        groups = [p for _, p in params]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay), opt_muon, views


def muon_step(muon, views):
    for p, view in views:
        view.grad = p.grad.view(view.shape)
    muon.step()


def _write_atomic(path, text):
    atomic_write(path, lambda f: f.write(text), binary=False)


def ema_decay(decay, t):
    """The moving average's decay after step t (0, 1, ...): ``decay``, but less over the first steps,
    min(decay, (1 + t) / (10 + t)) as in TensorFlow's ExponentialMovingAverage with num_updates, so that
    the initial weights are soon forgotten."""
    return min(decay, (1 + t) / (10 + t))


def _epoch_generator(seed, epoch):
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


@torch.no_grad()
def predict(model, x_uint8, cfg, device, batch_size=None):
    """(logits (N, K) on the CPU, float32 unless cfg.dtype is float64) of the model on uint8 images,
    normalized as in training."""
    model.eval()
    batch_size = batch_size or cfg.test_batch_size
    dtype = DTYPES[cfg.dtype][0]
    out = []
    for i in range(0, len(x_uint8), batch_size):
        xb = normalize(x_uint8[i:i + batch_size].to(device), cfg.mean, cfg.std).to(dtype)
        xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            out.append(model(xb).to(dtype).cpu())
    return torch.cat(out)


def evaluate_logits(logits, labels):
    """Test loss and accuracy from logits, as in the per-epoch line and metrics.jsonl."""
    loss = F.cross_entropy(logits, labels).item()
    return dict(test_loss=loss, test_acc=(logits.argmax(1) == labels).double().mean().item())


def bf16_supported(device):
    """Whether bfloat16 autocast pays on ``device``: CUDA, or a CPU whose oneDNN has bfloat16 kernels
    (AVX-512 BF16 or AMX); elsewhere it would emulate bfloat16 and run slower than float32."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def check_amp(device):
    if not bf16_supported(device):
        raise ValueError(f"--amp: expected CUDA or a CPU with bfloat16 instructions (AVX-512 BF16 or AMX), "
                         f"got {device} without them")


class TorchBackend:
    """torch_vit in channels_last memory, torch.optim.AdamW (and Muon: BatchedMuon, or the class ``muon``),
    clip_grad_norm_, autocast when asked."""

    def __init__(self, cfg, device, muon=None):
        self.cfg, self.device, self.dtype = cfg, device, DTYPES[cfg.dtype][0]
        if cfg.amp:
            check_amp(device)
        torch.manual_seed(cfg.seed)
        self.model = ViT(**cfg.model_config()).to(device, self.dtype, memory_format=torch.channels_last)
        self.opt, self.muon, self.muon_views = torch_optimizers(self.model, cfg, muon)
        self.ema_model = copy.deepcopy(self.model) if cfg.ema else None  # the weights' moving average

    def step(self, xb, yb, lr, muon_lr=None):
        """One training step on a normalized batch at learning rate ``lr`` (Muon's: ``muon_lr``, default
        ``lr``); returns (loss * batch, correct), as tensors."""
        cfg = self.cfg
        xb = xb.to(self.dtype).contiguous(memory_format=torch.channels_last)
        for group in self.opt.param_groups:
            group["lr"] = lr
        for group in self.muon.param_groups if self.muon else []:
            group["lr"] = lr if muon_lr is None else muon_lr
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            logits = self.model(xb)
            loss = F.cross_entropy(logits.to(self.dtype), yb, label_smoothing=cfg.label_smoothing)
        self.model.zero_grad(set_to_none=True)  # every parameter, Muon's too
        loss.backward()
        if cfg.clip:
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
        else:
            self.grad_norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in self.model.parameters() if p.grad is not None]))
        self.opt.step()
        if self.muon:
            muon_step(self.muon, self.muon_views)
        return loss.detach() * len(yb), (logits.argmax(1) == yb).sum()

    @torch.no_grad()
    def update_ema(self, decay):
        for a, w in zip(self.ema_model.parameters(), self.model.parameters()):
            a.lerp_(w, 1 - decay)  # a += (1 - decay) * (w - a)

    def test_logits(self, data, ema=False):
        return predict(self.ema_model if ema else self.model, data.test_x, self.cfg, self.device)

    def torch_model(self, ema=False):
        return self.ema_model if ema else self.model

    def optimizer_state(self):
        if self.muon:
            return {"adamw": self.opt.state_dict(), "muon": self.muon.state_dict()}
        return self.opt.state_dict()

    def load(self, ckpt):
        self.model.load_state_dict(ckpt.get("train_model", ckpt["model"]))
        if self.muon:
            self.opt.load_state_dict(ckpt["optimizer"]["adamw"])
            self.muon.load_state_dict(ckpt["optimizer"]["muon"])
        else:
            self.opt.load_state_dict(ckpt["optimizer"])
        if self.ema_model is not None:
            self.ema_model.load_state_dict(ckpt["model"])


class NumpyBackend:
    """numpy_vit's forward and hand-written backward, numpy_vit.optim's AdamW (and Muon) and clipping, on the CPU.
    The initial weights are the torch backend's for the same seed, and the batches are the same."""

    def __init__(self, cfg, device):
        if device.type != "cpu":
            raise ValueError(f"--backend numpy runs on the CPU, got --device {device}")
        if cfg.amp:
            raise ValueError("--amp: bfloat16 autocast is for the torch backend, not --backend numpy")
        self.cfg, self.np_dtype = cfg, DTYPES[cfg.dtype][1]
        torch.manual_seed(cfg.seed)
        twin = ViT(**cfg.model_config())
        self.skip_decay = no_decay_names(twin, cfg.no_decay)
        self.hidden = muon_names(twin) if cfg.optimizer == "muon" else set()
        self.model = numpy_twin(twin, self.np_dtype)
        self.opt, self.muon = self._optimizers()
        self.ema_model = numpy_twin(twin, self.np_dtype) if cfg.ema else None  # the weights' moving average

    def _optimizers(self):
        """(AdamW, Muon or None) over the model's arrays, split as the torch backend splits them."""
        cfg, params = self.cfg, dict(self.model.named_parameters())
        adamw = AdamW({n: p for n, p in params.items() if n not in self.hidden}, lr=cfg.lr, betas=cfg.betas,
                      weight_decay=cfg.weight_decay, skip_decay=self.skip_decay)
        muon = Muon({n: p for n, p in params.items() if n in self.hidden}, lr=cfg.lr, momentum=cfg.muon_momentum,
                    weight_decay=cfg.weight_decay) if self.hidden else None
        return adamw, muon

    def step(self, xb, yb, lr, muon_lr=None):
        x, y = xb.numpy().astype(self.np_dtype), yb.numpy()
        with np.errstate(over="ignore", invalid="ignore"):  # diverging weights: the loop's check says so in one line
            return self._step(x, y, lr, muon_lr)

    def _step(self, x, y, lr, muon_lr):
        cfg = self.cfg
        logits = self.model.forward(x)  # (B, K)
        if not np.isfinite(logits).all():  # cross_entropy refuses such logits: the loss is not finite, no update
            self.grad_norm = torch.tensor(math.nan, dtype=torch.float64)
            return torch.tensor(math.nan, dtype=torch.float64), torch.tensor(0)
        loss, dlogits = numpy_vit.cross_entropy(logits, y, cfg.label_smoothing)
        self.model.backward(dlogits)
        grads = self.model.grads
        if cfg.clip:
            norm = clip_grad_norm(grads, cfg.clip)
        else:
            norm = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
        self.grad_norm = torch.tensor(float(norm), dtype=torch.float64)
        self.opt.lr = lr
        self.opt.step(grads)
        if self.muon:
            self.muon.lr = lr if muon_lr is None else muon_lr
            self.muon.step(grads)
        correct = int((logits.argmax(1) == y).sum())
        return torch.tensor(float(loss) * len(y), dtype=torch.float64), torch.tensor(correct)

    def update_ema(self, decay):
        for (_, a), (_, w) in zip(self.ema_model.named_parameters(), self.model.named_parameters()):
            a += (1 - decay) * (w - a)

    def test_logits(self, data, ema=False):
        cfg, out = self.cfg, []
        model = self.ema_model if ema else self.model
        for i in range(0, len(data.test_x), cfg.test_batch_size):
            xb = normalize(data.test_x[i:i + cfg.test_batch_size], cfg.mean, cfg.std).numpy()
            with np.errstate(over="ignore", invalid="ignore"):  # diverged weights: the loop's check says so in one line
                out.append(torch.from_numpy(model.forward(xb.astype(self.np_dtype))))
        return torch.cat(out)

    def torch_model(self, ema=False):
        """A torch_vit holding the current weights (or their moving average) in the run's dtype, for
        checkpoints and reports."""
        model = ViT(**self.cfg.model_config()).to(DTYPES[self.cfg.dtype][0])
        weights = (self.ema_model if ema else self.model).state_dict()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})  # state_dict() copies
        return model

    def optimizer_state(self):
        """AdamW's state (and Muon's) with its arrays as tensors, which a weights-only torch.load reads back."""
        if self.muon:
            return {"adamw": _map_arrays(self.opt.state_dict(), np.ndarray, torch.from_numpy),
                    "muon": _map_arrays(self.muon.state_dict(), np.ndarray, torch.from_numpy)}
        return _map_arrays(self.opt.state_dict(), np.ndarray, torch.from_numpy)

    def load(self, ckpt):
        self.model.load_state_dict(ckpt.get("train_model", ckpt["model"]))
        self.opt, self.muon = self._optimizers()  # over the loaded arrays
        to_numpy = lambda state: _map_arrays(state, torch.Tensor, lambda t: t.numpy())  # noqa: E731
        if self.muon:
            self.opt.load_state_dict(to_numpy(ckpt["optimizer"]["adamw"]))
            self.muon.load_state_dict(to_numpy(ckpt["optimizer"]["muon"]))
        else:
            self.opt.load_state_dict(to_numpy(ckpt["optimizer"]))
        if self.ema_model is not None:
            self.ema_model.load_state_dict(ckpt["model"])


def _map_arrays(opt_state, kind, convert):
    """A copy of a numpy_vit.optim state dict with every per-parameter value of type ``kind`` converted."""
    state = {k: {kk: convert(vv) if isinstance(vv, kind) else vv for kk, vv in s.items()}
             for k, s in opt_state["state"].items()}
    return dict(opt_state, state=state)


class NonFiniteLoss(RuntimeError):
    """A training step gave a NaN or infinite loss or gradient norm: the run stopped (exit status 1 in the CLI)."""


CONFIG_VERSION = 1  # of config.json's layout; --resume refuses a larger one
STOPPED = "stopped.json"  # in the run folder: why the run stopped (a non-finite step), for --resume to say
REMEDIES = ("lr", "muon_lr", "clip")  # settings a stopped run may be resumed with changed


# What a run (train, then the CLI's pictures and report) writes into its folder: the files --overwrite replaces.
RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "config.json", "stopped.json", "curves.png", "confusion.png",
             "report.json")


def files_in(out, names):
    """Those of ``names`` that exist in the folder ``out``, in order."""
    return [f for f in names if os.path.exists(os.path.join(out, f))]


def check_out(out, resume=False, overwrite=False):
    """A one-line ValueError unless ``out`` may take this run: a folder holding a run (checkpoint.pt or
    metrics.jsonl) needs ``resume`` (continue it) or ``overwrite`` (replace it), never both."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite: expected one of them (continue the run or replace it), got both")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out}: expected a folder (new or holding a run), got a file")
    held = files_in(out, ("checkpoint.pt", "metrics.jsonl"))
    if held and not resume and not overwrite:
        raise ValueError(f"--out {out}: expected a folder without a run, it holds one ({', '.join(held)}); "
                         f"--resume to continue it, --overwrite to replace it")


def _move_aside(out):
    """Move the run files already in ``out`` into out/.old-<time>-<pid>/ (renames, nothing copied); returns
    that folder, or None when there were none."""
    old = files_in(out, RUN_FILES)
    if not old:
        return None
    aside = os.path.join(out, f".old-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.makedirs(aside)
    for f in old:
        os.replace(os.path.join(out, f), os.path.join(aside, f))
    return aside


class Interrupted(Exception):
    """SIGINT or SIGTERM during ``train``: the run wrote a checkpoint of where it was (``where``) and stopped. The
    CLI exits with ``status``, 128 + the signal's number (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum, checkpoint, where):
        self.signum, self.checkpoint, self.where = signum, checkpoint, where
        self.status = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; {checkpoint} holds the run {where}")


# A hidden hook for the tests (parity_tests/test_signals.py): CONVVIT_TEST_WAIT_AT="EPOCH,STEP" makes the loop, after
# that step, print "waiting at epoch EPOCH, step STEP" and wait (up to 60 s) for a signal, so that a test can
# interrupt a real process after a step of its choosing. Unset, it costs one dict lookup per run.
WAIT_AT = "CONVVIT_TEST_WAIT_AT"


@contextlib.contextmanager
def _signals_caught(caught):
    """While the block runs, SIGINT and SIGTERM only append their number to ``caught`` (the training loop looks at
    it before every step); the old handlers come back at its end. Outside the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def train(cfg, data, out, resume=False, device=None, progress=True, log=print, stop_after=None, overwrite=False):
    """Train, writing everything into ``out``; returns (torch model, history). ``stop_after``: end
    after that many epochs of this call (a test's stand-in for a kill).

    A folder holding a run needs ``resume`` or ``overwrite`` (``check_out``). A new run leaves whatever
    is in ``out`` as it was until its first checkpoint: that is written as checkpoint.pt.new, then the old run's
    files are moved into out/.old-<time>-<pid>/, the new checkpoint.pt, config.json and metrics.jsonl put in place,
    and that folder removed; a run that dies before its first checkpoint is written leaves the old one intact.

    SIGINT or SIGTERM (handled only while this runs): the current step finishes, checkpoint.pt gets the run as it
    is (weights, optimiser and moving-average state, the epoch, the step, the epoch generator's state and the
    epoch's running sums), and ``Interrupted`` is raised; --resume continues from that step to the weights an
    uninterrupted run ends with, bit for bit. metrics.jsonl lists finished epochs only."""
    check_out(out, resume, overwrite)
    caught = []
    with _signals_caught(caught):
        return _train(cfg, data, out, resume, device, progress, log, stop_after, caught)


def _train(cfg, data, out, resume, device, progress, log, stop_after, caught):
    from tqdm import tqdm

    device = torch.device(device or ("cuda" if torch.cuda.is_available() and cfg.backend == "torch" else "cpu"))
    if device.type == "cuda" and cfg.backend == "torch" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: expected a CUDA device, this machine has none")
    if cfg.amp and cfg.dtype != "float32":
        raise ValueError(f"--amp: bfloat16 autocast needs --dtype float32, got {cfg.dtype}")
    if len(data.classes) != cfg.num_classes:
        raise ValueError(f"data: expected {cfg.num_classes} classes (the model's num_classes), "
                         f"got {len(data.classes)} ({data.source})")
    run = (NumpyBackend if cfg.backend == "numpy" else TorchBackend)(cfg, device)
    os.makedirs(out, exist_ok=True)
    ckpt_path = os.path.join(out, "checkpoint.pt")
    history, start, fresh, remedied, mid = [], 0, True, [], None
    kept = None  # what checkpoint.pt holds of this run, for the line of a stop
    if resume and os.path.exists(ckpt_path):
        history, start, mid, kept, remedied = _resume_from(ckpt_path, cfg, run, out, data, log)
        fresh = False
    config_text = json.dumps(dict(dataclasses.asdict(cfg), version=CONFIG_VERSION, data_source=data.source, classes=data.classes,
                                  device=str(device), torch=torch.__version__, threads=torch.get_num_threads()),
                             indent=1, default=list) + "\n"
    if not fresh:
        _write_atomic(os.path.join(out, "config.json"), config_text)

    def save(epoch, mid_epoch=None):
        """checkpoint.pt after ``epoch`` (the last finished one), or in the middle of the next (``mid_epoch``), then
        metrics.jsonl (finished epochs only). The checkpoint first: metrics.jsonl never lists an epoch that --resume
        cannot find. Its model is the run's result, the moving average with --ema (the trained weights then go
        under train_model). A new run's first checkpoint (at an epoch's end or on an interrupt) is where the old
        run in ``out`` (if any) makes way."""
        nonlocal fresh
        extra = dict(train_model=run.torch_model().state_dict()) if cfg.ema else {}
        if mid_epoch is not None:
            extra["mid_epoch"] = mid_epoch
        # a new run's first checkpoint is written under another name before the old run moves aside: if writing it
        # fails (a full disk, a kill), the old run stays as it was
        target = ckpt_path + ".new" if fresh else ckpt_path
        save_checkpoint(run.torch_model(ema=bool(cfg.ema)), target, optimizer=run.optimizer_state(), epoch=epoch,
                        history=history, train_config=dataclasses.asdict(cfg), classes=data.classes,
                        norm=(cfg.mean, cfg.std), **extra)
        aside = None
        if fresh:
            aside = _move_aside(out)
            os.replace(target, ckpt_path)
            _write_atomic(os.path.join(out, "config.json"), config_text)
            fresh = False
        _write_atomic(os.path.join(out, "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in history))
        if aside:
            shutil.rmtree(aside)
        # a stopped run resumed past its stop, or with settings changed (the stop's warning no longer holds)
        if (mid_epoch is None or remedied) and os.path.exists(os.path.join(out, STOPPED)):
            os.unlink(os.path.join(out, STOPPED))

    augment = augmenter(cfg)
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    n = len(train_x)
    steps = math.ceil(n / cfg.batch_size)
    done = 0
    wait_at = os.environ.get(WAIT_AT)
    # the first non-finite step of an epoch, tracked on the device and looked at every step on the CPU, every
    # 50 steps on CUDA (no synchronisation per step); nothing of such a step reaches checkpoint.pt or metrics.jsonl
    check_every = 1 if device.type == "cpu" else 50
    for epoch in range(start, cfg.epochs):
        started = time.perf_counter()
        first_bad = torch.full((), -1, device=device, dtype=torch.int64)
        bad_values = torch.zeros(2, device=device, dtype=torch.float64)
        g = _epoch_generator(cfg.seed, epoch)
        perm = torch.randperm(n, generator=g).to(device)
        seen, first_step = 0, 0
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct_t = torch.zeros((), device=device, dtype=torch.int64)
        if mid is not None:  # resumed in the middle of this epoch: the generator and the sums as they were
            g.set_state(mid["generator"])
            first_step, seen, started = mid["step"], mid["seen"], started - mid["train_time"]
            loss_sum.fill_(mid["loss_sum"])
            correct_t.fill_(mid["correct"])
            first_bad.fill_(mid["first_bad"])
            bad_values.copy_(torch.tensor(mid["bad_values"], dtype=torch.float64))
            mid = None
        bar = tqdm(total=n, initial=seen, desc=f"epoch {epoch} ({cfg.backend})", unit="img", unit_scale=True,
                   leave=False, disable=not progress, mininterval=1)

        def stop_if_bad():
            if first_bad.item() >= 0:
                bar.close()
                _stop(cfg, out, epoch, int(first_bad), steps, bad_values.tolist(), kept, record=not fresh)

        for step in range(first_step, steps):
            if caught:  # SIGINT or SIGTERM during the last step (or before the first): the run as it is, then out
                bar.close()
                stop_if_bad()  # a non-finite step not looked at yet (CUDA) stops the run instead
                save(epoch - 1, dict(epoch=epoch, step=step, steps=steps, images=n, generator=g.get_state(),
                                     loss_sum=loss_sum.item(), correct=int(correct_t), seen=seen,
                                     train_time=time.perf_counter() - started, first_bad=int(first_bad),
                                     bad_values=bad_values.tolist()))
                raise Interrupted(caught[0], ckpt_path, f"after {step} of {steps} steps of epoch {epoch}")
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            xb = augment(train_x[idx], g)  # the same batches on both backends for the same seed
            yb = train_y[idx]
            t = epoch + (step + 1) / steps
            lr = cfg.lr_at(t)
            loss_b, correct_b = run.step(xb, yb, lr, cfg.muon_lr_at(t))
            values = torch.stack([loss_b.to(device, torch.float64) / len(idx), run.grad_norm.to(device, torch.float64)])
            new_bad = (first_bad < 0) & ~torch.isfinite(values).all()
            first_bad = torch.where(new_bad, step, first_bad)
            bad_values = torch.where(new_bad, values, bad_values)
            if step % check_every == check_every - 1 or step == steps - 1:
                stop_if_bad()
            if cfg.ema:
                run.update_ema(ema_decay(cfg.ema, epoch * steps + step))
            loss_sum += loss_b.to(device)
            correct_t += correct_b.to(device)
            seen += len(idx)
            bar.update(len(idx))
            if wait_at and wait_at == f"{epoch},{step}":
                _wait_for_a_signal(caught, epoch, step)
        bar.close()
        train_time = time.perf_counter() - started
        test = evaluate_logits(run.test_logits(data), data.test_y)
        if not math.isfinite(test["test_loss"]):  # the epoch's last update, which no later step's loss has checked
            _stop(cfg, out, epoch, steps - 1, steps, (test["test_loss"], run.grad_norm.item()), kept,
                  record=not fresh, after=True)
        if cfg.ema:
            ema = evaluate_logits(run.test_logits(data, ema=True), data.test_y)
            test.update(ema_test_loss=ema["test_loss"], ema_test_acc=ema["test_acc"])
        row = dict(epoch=epoch, train_loss=loss_sum.item() / seen, train_acc=int(correct_t) / seen, **test,
                   lr=lr, time=time.perf_counter() - started, train_s=train_time, train_img_s=seen / train_time)
        history.append(row)
        save(epoch)
        kept = f"checkpoint.pt keeps epoch {epoch}"
        ema_acc = f"EMA Test Acc: {row['ema_test_acc']:.4f}, " if cfg.ema else ""
        log(f"ViT: Epoch: {epoch} | Train Acc: {row['train_acc']:.4f}, Test Acc: {row['test_acc']:.4f}, {ema_acc}"
            f"Time: {row['time']:.1f}, lr: {lr:.6f}")
        if caught:  # during the epoch's last step or its evaluation: its checkpoint is the place to resume
            raise Interrupted(caught[0], ckpt_path, f"after epoch {epoch}")
        done += 1
        if stop_after is not None and done >= stop_after and epoch + 1 < cfg.epochs:
            break
    return run.torch_model(ema=bool(cfg.ema)), history


def _resume_from(ckpt_path, cfg, run, out, data, log):
    """--resume: checkpoint.pt of the run in ``out`` loaded into ``run``, after checking that it was written with
    these settings (or with ones a stop's remedy changed) and, when it was written in the middle of an epoch, on data
    of the same size. Returns (history, the epoch to start at, the mid-epoch state or None, what checkpoint.pt keeps
    (for the line of a stop), the settings changed as a stop's remedy)."""
    _check_config_version(os.path.join(out, "config.json"))
    _, ckpt = load_checkpoint(ckpt_path)
    saved = ckpt.get("train_config", {})
    mismatched = [k for k, v in dataclasses.asdict(cfg).items() if _plain(saved.get(k, _DEFAULTS[k])) != _plain(v)]
    stopped = _read_stopped(out)
    remedied = [k for k in mismatched if k in REMEDIES] if stopped else []
    mismatched = [k for k in mismatched if k not in remedied]
    if mismatched:
        raise ValueError(f"--resume: {ckpt_path} was written with other settings: {', '.join(mismatched)}")
    run.load(ckpt)
    history, mid = list(ckpt["history"]), ckpt.get("mid_epoch")
    if mid is None:  # written at the end of an epoch (every checkpoint before the mid-epoch ones)
        start, kept = ckpt["epoch"] + 1, f"checkpoint.pt keeps epoch {ckpt['epoch']}"
        log(f"resuming {out} after epoch {ckpt['epoch']}")
    else:  # written on an interrupt: continue at its step
        if mid["images"] != len(data.train_x):
            raise ValueError(f"--resume: {ckpt_path} stopped in an epoch of {mid['images']} training images, "
                             f"got data of {len(data.train_x)}")
        start, kept = mid["epoch"], f"checkpoint.pt keeps epoch {mid['epoch']} after {mid['step']} steps"
        log(f"resuming {out} in epoch {mid['epoch']}, after {mid['step']} of {mid['steps']} steps")
    if stopped and remedied:
        log(f"this run stopped at epoch {stopped['epoch']}, step {stopped['step']} (loss {stopped['loss']}, "
            f"gradient norm {stopped['grad_norm']}); resuming with changed "
            + ", ".join(f"--{k.replace('_', '-')} {_plain(saved.get(k, _DEFAULTS[k]))} -> {_plain(getattr(cfg, k))}"
                        for k in remedied))
    elif stopped:
        log(f"warning: this run stopped at epoch {stopped['epoch']}, step {stopped['step']} (loss "
            f"{stopped['loss']}, gradient norm {stopped['grad_norm']}) at --lr {cfg.lr:g}; with the same settings "
            f"it will stop there again: give a lower --lr (or --clip)")
    return history, start, mid, kept, remedied


def _wait_for_a_signal(caught, epoch, step):
    """The WAIT_AT test hook: say where the loop is, then wait (up to 60 s) until a signal has been caught."""
    print(f"waiting at epoch {epoch}, step {step}", flush=True)
    deadline = time.monotonic() + 60
    while not caught and time.monotonic() < deadline:
        time.sleep(0.005)


def _stop(cfg, out, epoch, step, steps, values, kept, record, after=False):
    """Raise NonFiniteLoss for the first non-finite step (epoch, step), naming the likely cause and what
    checkpoint.pt keeps of this run (``kept``; None: nothing). ``after``: the step's own loss and gradient were
    finite, its update was not (the epoch's last step: the test loss shows it; values are that loss and the step's
    gradient norm). The stop is recorded in out/stopped.json, for
    --resume to say, when ``record`` (checkpoint.pt is this run's) or when ``out`` holds no other run's files: a
    new run that stops before its first checkpoint leaves an old run in ``out`` as it was, and writes no record
    that --resume of that old run would take for its own."""
    loss, norm = (str(v) for v in values)
    what = (f"test loss {loss} after its update (gradient norm {float(norm):.3g})" if after
            else f"loss {loss}, gradient norm {norm}")
    reason = (f"stopped at epoch {epoch}, step {step} of {steps}: {what}, not finite; "
              f"likely cause: the learning rate (--lr {cfg.lr:g}), lower it; "
              f"{kept or 'no checkpoint of this run was written'}")
    if record or not files_in(out, [f for f in RUN_FILES if f != STOPPED]):
        write_json(os.path.join(out, STOPPED), dict(epoch=epoch, step=step, loss=loss, grad_norm=norm, lr=cfg.lr,
                                                    muon_lr=cfg.muon_lr, clip=cfg.clip, reason=reason,
                                                    checkpoint=kept is not None))
    raise NonFiniteLoss(reason)


def _read_stopped(out):
    """The stop recorded in out/stopped.json, or None."""
    path = os.path.join(out, STOPPED)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            stopped = json.load(f)
        return {k: stopped[k] for k in ("epoch", "step", "loss", "grad_norm")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--resume: {path}: expected the record of a stopped run, got an unreadable file "
                         f"({type(e).__name__})") from None


def _check_config_version(path):
    """--resume: a one-line ValueError for a config.json that is unreadable or from a newer convvit."""
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            version = json.load(f).get("version", 0)
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"--resume: {path}: expected a JSON object, got an unreadable file ({type(e).__name__})") from None
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise ValueError(f"--resume: {path}: expected version <= {CONFIG_VERSION} (this convvit), got {version!r} "
                         "(a newer convvit's run)")


def _plain(v):
    """Compare settings across JSON/torch round trips: tuples and lists alike."""
    return json.loads(json.dumps(v, default=list))
