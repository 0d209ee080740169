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
