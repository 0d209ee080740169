"""Trajectory parity: N steps of NumPy training against N steps of torch training from the same
initial weights on the same batches (AdamW, or Muon for the blocks' 1x1-conv weights and AdamW for the
rest; global-norm clipping, the seed's piecewise-linear schedule stepped per batch, label smoothing),
compared after every step: the loss, and every weight by name. A failure names the first step and the
first tensor where the two part."""

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import numpy_vit
from numpy_vit.optim import AdamW, Muon, clip_grad_norm, piecewise_linear

from .checkpoint import numpy_twin
from .model import ViT
from .parity import TORCH_DTYPE, compare
from .train import TrainConfig, muon_names, muon_step, torch_muon

# Bounds held after every step (README, "Training the NumPy model"): relative to each tensor's
# largest entry, as in torch_vit.parity.
TRAJECTORY_BOUNDS = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-3}


@dataclass
class Trajectory:
    losses: list  # (numpy loss, torch loss) per step
    worst: list  # per step, the worst max_rel over the loss and all weights after that step
    first_failure: str  # "" when every step stayed within the bound

    @property
    def ok(self):
        return not self.first_failure


@contextlib.contextmanager
def newton_schulz_in_weights_dtype():
    """For its duration, torch.optim.Muon's Newton-Schulz map runs in the gradient's own dtype, as
    numpy_vit.optim.Muon's does: torch orthogonalises ``grad.bfloat16()``, and here that cast is a copy.
    (With the cast, one step's Muon update differs from the float64 one by up to about 7%.)"""
    cast = torch.Tensor.bfloat16
    torch.Tensor.bfloat16 = lambda self, *args, **kwargs: self.clone()
    try:
        yield
    finally:
        torch.Tensor.bfloat16 = cast


def run_trajectory(config, steps=100, dtype=np.float64, seed=0, batch=8, lr=0.01, weight_decay=0.01,
                   betas=(0.9, 0.999), clip=1.0, label_smoothing=0.0, steps_per_epoch=391, epochs=25,
                   state=None, progress=None, optimizer="adamw", muon_momentum=0.95):
    """Train both models ``steps`` steps on random N(0, 1) batches with random labels, from the
    torch initialisation of ``seed``. The learning rate follows the seed's schedule stepped per
    batch, np.interp(t, [0, E*2//5, E*4//5, E], [0, lr, lr/20, 0]) at t = (step + 1) / steps_per_epoch,
    E = epochs: by default the first steps of the seed's own run (391 batches of 128 per epoch, 25
    epochs, AdamW lr 0.01 and weight decay 0.01, clipping at 1). ``optimizer="muon"``: torch.optim.Muon
    (with ``newton_schulz_in_weights_dtype``) and numpy_vit's Muon for the blocks' 1x1-conv weights,
    AdamW for the rest, as ``convvit train --optimizer muon`` splits them. ``state``: start from these
    weights (a seed state dict) instead. ``progress(step, worst)`` is called after every step when given."""
    if optimizer not in ("adamw", "muon"):
        raise ValueError(f"optimizer: expected adamw or muon, got {optimizer!r}")
    dtype = np.dtype(dtype)
    bound = TRAJECTORY_BOUNDS[dtype]
    torch.manual_seed(seed)
    t = ViT(**config)
    if state is not None:
        t.load_state_dict(state)
    t = t.to(TORCH_DTYPE[dtype])
    m = numpy_twin(t, dtype)
    hidden = muon_names(t) if optimizer == "muon" else set()
    opt_t = torch.optim.AdamW([p for n, p in t.named_parameters() if n not in hidden], lr=lr, betas=betas,
                              weight_decay=weight_decay)
    opt_n = AdamW({n: p for n, p in m.named_parameters() if n not in hidden}, lr=lr, betas=betas,
                  weight_decay=weight_decay)
    opts_n, opts_t = [opt_n], [opt_t]  # each side's optimisers; torch's Muon steps through muon_step
    if hidden:
        muon_t, views = torch_muon(t, lr, weight_decay, muon_momentum)
        opts_t.append(muon_t)
        opts_n.append(Muon({n: p for n, p in m.named_parameters() if n in hidden}, lr=lr, momentum=muon_momentum,
                           weight_decay=weight_decay))
    points, values = TrainConfig(epochs=epochs, lr=lr).schedule()  # the seed's shape
    rng = np.random.default_rng(seed)
    h, w = m.image_size
    losses, worst, first_failure = [], [], ""
    with newton_schulz_in_weights_dtype() if hidden else contextlib.nullcontext():
        for step in range(steps):
            x = rng.standard_normal((batch, m.config["in_channels"], h, w)).astype(dtype)
            y = rng.integers(0, m.config["num_classes"], batch)
            step_lr = piecewise_linear((step + 1) / steps_per_epoch, points, values)
            for opt in opts_n:
                opt.lr = step_lr
            for group in (g for opt in opts_t for g in opt.param_groups):
                group["lr"] = step_lr

            logits = m.forward(x)
            loss_n, dlogits = numpy_vit.cross_entropy(logits, y, label_smoothing)
            m.backward(dlogits)
            grads = m.grads
            clip_grad_norm(grads, clip)
            for opt in opts_n:
                opt.step(grads)

            loss_t = F.cross_entropy(t(torch.from_numpy(x)), torch.from_numpy(y), label_smoothing=label_smoothing)
            t.zero_grad()  # every parameter, Muon's too
            loss_t.backward()
            torch.nn.utils.clip_grad_norm_(t.parameters(), clip)
            opt_t.step()
            if hidden:
                muon_step(muon_t, views)

            losses.append((float(loss_n), loss_t.item()))
            rows = [compare("loss", loss_n, loss_t.detach())]
            rows += [compare(name, m_p, t_p.detach()) for (name, m_p), t_p
                     in zip(m.named_parameters(), t.parameters())]
            for r in rows:
                r.bound = bound
            worst.append(max(r.max_rel for r in rows))
            bad = [r for r in rows if not r.max_rel <= bound]
            if bad and not first_failure:
                first_failure = f"step {step}: " + bad[0].message()
            if progress is not None:
                progress(step, worst[-1])
    return Trajectory(losses, worst, first_failure)
