"""Optimisers, gradient clipping and the learning-rate schedule, each as torch defines it, so that a
NumPy training run follows torch's step for step (``convvit check --steps N``).

Every optimiser holds the model's parameter dict by name and updates the arrays in place from a
gradient dict of the same names (``model.grads``), in the order of torch's own single-tensor code.
"""

import math

import numpy as np


class AdamW:
    """torch.optim.AdamW (amsgrad=False, maximize=False), its single-tensor update:

        p *= 1 - lr * weight_decay
        m = lerp(m, g, 1 - beta1)                 (torch's lerp_: m + (1 - beta1) * (g - m))
        v = beta2 * v + (1 - beta2) * g * g
        p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    ``skip_decay``: names of parameters left undecayed (torch: a second param group with weight_decay 0).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, skip_decay=()):
        self.params = params  # {name: ndarray}, updated in place
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        unknown = set(skip_decay) - set(params)
        if unknown:
            raise ValueError(f"AdamW: skip_decay names parameters it was not given: {', '.join(sorted(unknown))}")
        self.skip_decay = frozenset(skip_decay)
        self.state = {name: dict(step=0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
                      for name, p in params.items()}

    def step(self, grads):
        beta1, beta2 = self.betas
        for name, p in self.params.items():
            g, s = grads[name], self.state[name]
            s["step"] += 1
            t = s["step"]
            if name not in self.skip_decay:
                p *= 1 - self.lr * self.weight_decay
            m, v = s["exp_avg"], s["exp_avg_sq"]
            m += (1 - beta1) * (g - m)
            v *= beta2
            v += (1 - beta2) * (g * g)
            step_size = self.lr / (1 - beta1 ** t)
            denom = np.sqrt(v) / math.sqrt(1 - beta2 ** t) + self.eps
            p -= step_size * (m / denom)

    def state_dict(self):
        return dict(lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay,
                    state={k: {kk: (vv.copy() if isinstance(vv, np.ndarray) else vv) for kk, vv in s.items()}
                           for k, s in self.state.items()})

    def load_state_dict(self, d):
        self.lr, self.betas, self.eps, self.weight_decay = d["lr"], tuple(d["betas"]), d["eps"], d["weight_decay"]
        for k, s in d["state"].items():
            self.state[k] = dict(step=int(s["step"]), exp_avg=np.array(s["exp_avg"], dtype=self.params[k].dtype),
                                 exp_avg_sq=np.array(s["exp_avg_sq"], dtype=self.params[k].dtype))


class SGD:
    """torch.optim.SGD with momentum (dampening, nesterov, L2 weight decay as torch adds it to the gradient):

        d = g + weight_decay * p
        buf = d at the first step, else momentum * buf + (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
        p -= lr * d
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening 0, as in torch")
        self.params = params
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, nesterov
        self.buffers = {}

    def step(self, grads):
        for name, p in self.params.items():
            d = grads[name]
            if self.weight_decay:
                d = d + self.weight_decay * p
            if self.momentum:
                buf = self.buffers.get(name)
                if buf is None:
                    buf = self.buffers[name] = d.copy()
                else:
                    buf *= self.momentum
                    buf += (1 - self.dampening) * d
                d = d + self.momentum * buf if self.nesterov else buf
            p -= self.lr * d


def zeropower_via_newtonschulz(g, coefficients=(3.4445, -4.7750, 2.0315), steps=5, eps=1e-7):
    """torch.optim.Muon's orthogonalisation of a matrix G = U S V^T into about U V^T (singular values
    brought into roughly [0.7, 1.2], not exactly 1): X = G / max(|G|_F, eps), wide (transposed if tall);
    then ``steps`` times A = X X^T, X = a X + (b A + c A A) X. In G's dtype: torch works in bfloat16,
    which NumPy does not have."""
    a, b, c = coefficients
    tall = g.shape[0] > g.shape[1]
    x = g.T if tall else g
    x = x / max(np.sqrt(np.sum(x * x)), eps)
    for _ in range(steps):
        gram = x @ x.T  # (rows, rows)
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


class Muon:
    """torch.optim.Muon (Nesterov, adjust_lr_fn="match_rms_adamw") for matrices given as arrays whose
    first axis is the output (a 1x1 convolution's (out, in, 1, 1) weight: the matrix (out, in)):

        buf = lerp(buf, g, 1 - momentum)          (torch's lerp_: buf + (1 - momentum) * (g - buf))
        u = lerp(g, buf, momentum)                (Nesterov)
        p *= 1 - lr * weight_decay
        p -= lr * 0.2 * sqrt(max(out, in)) * NS(u)   (NS: zeropower_via_newtonschulz; the factor makes
                                                      the update's RMS about AdamW's, 0.2 lr)
    """

    def __init__(self, params, lr=1e-3, momentum=0.95, weight_decay=0.1):
        self.params = params  # {name: ndarray}, updated in place
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.state = {name: dict(momentum_buffer=np.zeros(p.shape, p.dtype)) for name, p in params.items()}

    def step(self, grads):
        mu = self.momentum
        for name, p in self.params.items():
            shape = (p.shape[0], p.size // p.shape[0])
            g, buf = grads[name].reshape(shape), self.state[name]["momentum_buffer"].reshape(shape)  # views
            buf += (1 - mu) * (g - buf)
            update = zeropower_via_newtonschulz(g + mu * (buf - g))
            p *= 1 - self.lr * self.weight_decay
            p -= (self.lr * 0.2 * math.sqrt(max(shape))) * update.reshape(p.shape)

    def state_dict(self):
        return dict(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                    state={k: {"momentum_buffer": s["momentum_buffer"].copy()} for k, s in self.state.items()})

    def load_state_dict(self, d):
        self.lr, self.momentum, self.weight_decay = d["lr"], d["momentum"], d["weight_decay"]
        for k, s in d["state"].items():
            self.state[k] = dict(momentum_buffer=np.array(s["momentum_buffer"], dtype=self.params[k].dtype))


def clip_grad_norm(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_ (L2): scale every gradient, in place, by
    min(1, max_norm / (total_norm + 1e-6)), total_norm the L2 norm of all of them together.
    Returns total_norm (before clipping), as torch does."""
    norms = [np.sqrt(np.sum(g * g)) for g in grads.values()]
    total = np.sqrt(np.sum(np.square(norms)))
    coef = min(max_norm / (total + 1e-6), 1.0)
    for g in grads.values():
        g *= coef
    return total


def piecewise_linear(t, points, values):
    """The seed's schedule: np.interp(t, points, values), t = epoch + (step + 1) / steps_per_epoch,
    e.g. points [0, E*2//5, E*4//5, E], values [0, lr, lr/20, 0]."""
    return float(np.interp(t, points, values))
