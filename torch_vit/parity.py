"""Parity of numpy_vit against torch autograd: run both on the same weights and inputs and compare
every output and every gradient by name. The parity suite and ``convvit check`` both use this.

Error measure, for a tensor ``mine`` (NumPy) against ``ref`` (torch):
    max_abs = max |mine - ref|
    max_rel = max_abs / max |ref|        (relative to the tensor's largest entry)
A tensor passes when max_rel <= ``rel``, the bound for its dtype in BOUNDS.

One floor: a gradient that saturation drives far below its neighbours (a softmax so peaked that
d attend is 1e-11 where the other gradients are 1) is computed by both sides as a difference of
O(1) terms, so both carry an absolute error of a few ulps of the O(1) terms and its own relative
error means nothing. Such a tensor passes when max_abs <= floor * G, G the largest |ref| among the
gradients of the same backward: floor 1e-13 (about 450 ulps of G) in float64, 1e-5 (about 80 ulps
of G) in float32.
"""

from dataclasses import dataclass

import numpy as np
import torch

import numpy_vit

# Bounds that the suite holds (README, "How the parity bounds were chosen"):
BOUNDS = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-3}
FLOORS = {np.dtype(np.float64): 1e-13, np.dtype(np.float32): 1e-5}

TORCH_DTYPE = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}


@dataclass
class Row:
    """One compared tensor."""
    name: str
    shape: tuple
    max_abs: float
    max_rel: float
    where: tuple
    mine: float
    ref: float
    scale: float  # max |ref|
    bound: float  # rel for the dtype
    dtype: np.dtype
    floor: float = 0.0  # absolute floor, set by ``finish`` from the other gradients

    @property
    def ok(self):
        return bool(np.isfinite(self.max_abs)) and (self.max_rel <= self.bound or self.max_abs <= self.floor)

    def message(self):
        return (f"{self.name} {self.shape}: max |numpy - torch| = {self.max_abs:.3e} at {self.where} "
                f"(numpy {self.mine:.17g}, torch {self.ref:.17g}); relative {self.max_rel:.3e}, "
                f"bound {self.bound:.0e}" + (f", floor {self.floor:.1e}" if self.floor else ""))


def compare(name, mine, ref, dtype=None):
    """A Row for ``mine`` (ndarray) against ``ref`` (tensor or ndarray), checked for shape first."""
    ref = ref.detach().cpu().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    mine = np.asarray(mine)
    if mine.shape != ref.shape:
        raise AssertionError(f"{name}: numpy shape {mine.shape} but torch shape {ref.shape}")
    dtype = np.dtype(dtype or ref.dtype)
    bound = BOUNDS[dtype]
    diff = np.abs(mine.astype(np.float64) - ref.astype(np.float64))
    if mine.size == 0:
        return Row(name, mine.shape, 0.0, 0.0, (), 0.0, 0.0, 0.0, bound, dtype)
    scale = float(np.abs(ref).max())
    if np.all(np.isfinite(diff)):
        where = np.unravel_index(np.argmax(diff), diff.shape)
        max_abs = float(diff[where])
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    else:  # a NaN or inf on either side fails, at the first such entry
        where = np.unravel_index(np.argmax(~np.isfinite(diff)), diff.shape)
        max_abs = max_rel = float("inf")
    return Row(name, mine.shape, max_abs, max_rel, tuple(int(i) for i in where),
               float(mine[where]), float(ref[where]), scale, bound, dtype)


def finish(rows, gradients):
    """Give the gradient rows (all but the first ``len(rows) - gradients``) their floor."""
    grads = rows[len(rows) - gradients:]
    largest = max((r.scale for r in grads), default=0.0)
    for r in grads:
        r.floor = FLOORS[r.dtype] * largest
    return rows


def assert_rows(rows):
    """Raise one AssertionError listing every row over its bound, worst first."""
    bad = sorted((r for r in rows if not r.ok), key=lambda r: -r.max_rel)
    if bad:
        raise AssertionError("; ".join(r.message() for r in bad))


def to_torch(np_module, torch_module):
    """Copy the NumPy module's parameters into the torch twin (same names) in the same dtype."""
    dtype = TORCH_DTYPE[np.dtype(np_module.dtype)]
    torch_module.to(dtype)
    torch_module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in np_module.state_dict().items()},
                                 strict=True)
    return torch_module


def _same_names(grads, names):
    """Raise unless the NumPy gradients and the torch parameters have the same names."""
    differ = set(grads) ^ set(names)
    if differ:
        raise AssertionError(f"gradients by name differ between numpy and torch: {sorted(differ)}")


def part_rows(np_part, torch_part, x, dout):
    """Forward both parts on x, backward with upstream gradient dout (NumPy side by hand, torch by
    autograd on sum(out * dout)); rows for the output, the input gradient and every parameter, each
    held to the bound of the NumPy part's dtype (the dtype asked for, whatever torch computed in)."""
    dtype = np.dtype(np_part.dtype)
    out = np_part.forward(x)
    dx = np_part.backward(dout)
    grads = np_part.grads

    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    out_t = torch_part(xt)
    names, params = zip(*torch_part.named_parameters())
    dxt, *dparams = torch.autograd.grad(out_t, (xt, *params), torch.from_numpy(dout.copy()))

    _same_names(grads, names)
    rows = [compare("output", out, out_t, dtype), compare("input grad", dx, dxt, dtype)]
    rows += [compare(n, grads[n], g, dtype) for n, g in zip(names, dparams)]
    return finish(rows, gradients=len(rows) - 1)


def model_rows(np_model, torch_model, x, labels, label_smoothing=0.0):
    """Whole model with its loss: rows for logits, loss, input gradient and every parameter gradient,
    each held to the bound of the NumPy model's dtype (the dtype asked for, whatever torch computed in);
    the two sides must have the same parameter names."""
    dtype = np.dtype(np_model.dtype)
    logits = np_model.forward(x)
    loss, dlogits = numpy_vit.cross_entropy(logits, labels, label_smoothing)
    dx = np_model.backward(dlogits)
    grads = np_model.grads

    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    logits_t = torch_model(xt)
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(np.asarray(labels, np.int64)),
                                               label_smoothing=label_smoothing)
    names, params = zip(*torch_model.named_parameters())
    dxt, *dparams = torch.autograd.grad(loss_t, (xt, *params))

    _same_names(grads, names)
    rows = [compare("logits", logits, logits_t, dtype), compare("loss", loss, loss_t, dtype),
            compare("input grad", dx, dxt, dtype)]
    rows += [compare(n, grads[n], g, dtype) for n, g in zip(names, dparams)]
    return finish(rows, gradients=len(rows) - 2)
