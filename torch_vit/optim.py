"""torch.optim.Muon's update, with the matrices of one shape orthogonalised together.

``torch.optim.Muon`` runs its Newton-Schulz iteration one matrix at a time, in Python: for this model's 24
small matrices (32 x 32, 128 x 32, 32 x 128) that is 360 tiny products a step, and their calls cost more
than their arithmetic. ``BatchedMuon`` stacks the matrices of each shape and runs the same iteration as
batched products (3 x 15 calls), with the same steps in the same order and the same bfloat16 arithmetic.
Its state (one ``momentum_buffer`` per parameter) and parameter groups are Muon's, so checkpoints move
between the two unchanged. parity_tests/test_muon.py checks it against torch.optim.Muon step for step.
"""

import math

import torch


class BatchedMuon(torch.optim.Muon):
    """torch.optim.Muon (same arguments, state and maths), its Newton-Schulz iteration batched per shape:

        buf = lerp(buf, g, 1 - momentum)
        u = lerp(g, buf, momentum) if nesterov else buf
        X = bfloat16(u), transposed if tall;  X /= max(|X|_F, eps)
        ns_steps times:  A = X X^T;  X = a X + (b A + c A A) X
        p *= 1 - lr * weight_decay;  p -= adjust_lr(lr, shape) * X (transposed back)
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
            bufs = [self.state[p]["momentum_buffer"] for p in params]
            lr = group["lr"].item() if torch.is_tensor(group["lr"]) else group["lr"]
            momentum = group["momentum"]

            torch._foreach_lerp_(bufs, grads, 1 - momentum)
            updates = torch._foreach_lerp(grads, bufs, momentum) if group["nesterov"] else bufs
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])

            same = {}  # (shape, dtype, device) -> indices of the matrices of that kind
            for i, p in enumerate(params):
                same.setdefault((p.shape, p.dtype, p.device), []).append(i)
            for (shape, dtype, _), index in same.items():
                ortho = orthogonalise(torch.stack([updates[i] for i in index]), group["ns_coefficients"],
                                      group["ns_steps"], group["eps"]).to(dtype)  # (n, out, in)
                torch._foreach_add_([params[i] for i in index], list(ortho.unbind(0)),
                                    alpha=-adjusted_lr(lr, group["adjust_lr_fn"], shape))
        return loss


def adjusted_lr(lr, adjust_lr_fn, shape):
    """torch.optim.Muon's learning rate for an (A, B) matrix: lr * sqrt(max(1, A / B)) ("original", the default),
    lr * 0.2 * sqrt(max(A, B)) ("match_rms_adamw": an update of about AdamW's RMS), lr * sqrt(A / B)
    ("spectral_unclamped")."""
    a, b = shape[:2]
    ratio = {None: math.sqrt(max(1, a / b)), "original": math.sqrt(max(1, a / b)),
             "match_rms_adamw": 0.2 * math.sqrt(max(a, b)), "spectral_unclamped": math.sqrt(a / b)}
    return lr * ratio.get(adjust_lr_fn, 1.0)


def orthogonalise(g, coefficients, steps, eps):
    """torch.optim.Muon's Newton-Schulz iteration (``_zeropower_via_newtonschulz``) for a stack (n, rows, cols)
    of matrices, each on its own: bfloat16, wide (transposed if tall), divided by its Frobenius norm, then
    ``steps`` times X = a X + (b A + c A A) X with A = X X^T. Returns bfloat16 (n, rows, cols)."""
    a, b, c = coefficients
    tall = g.shape[1] > g.shape[2]
    x = g.bfloat16()
    if tall:
        x = x.mT  # (n, cols, rows)
    x = x / torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT  # (n, r, r)
        gram_update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A A
        x = torch.baddbmm(x, gram_update, x, beta=a)  # a X + (b A + c A A) X
    return x.mT if tall else x
