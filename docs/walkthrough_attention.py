# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Walkthrough: one channel attention of the trained model, forward and backward
#
# This follows one `MhSelfAttention` of the bundled trained model on one sample image, step by
# step, next to [attention.md](attention.md), which derives every formula used here. You know token
# attention (softmax(Q K^T / sqrt(d)) V over N tokens); this one attends **channel to channel**:
# per head, an hc x hc matrix computed from the whole image. That per-head view is the maths, and
# what this walkthrough computes step by step; the module's code runs every head at once, as one
# C x C matrix whose pairs of channels of two different heads are masked ("All heads at once: what
# the code runs" shows the two agree).
#
# Run it as a script, `python docs/walkthrough_attention.py` (figures go to a temporary folder
# whose path is printed), or as a notebook: `pip install -e ".[notebook]"`, then
# `jupytext --to ipynb docs/walkthrough_attention.py` and open `docs/walkthrough_attention.ipynb`
# in Jupyter. `parity_tests/test_walkthrough.py` runs it both ways, and once with torch blocked.
#
# **With and without PyTorch.** With torch, every intermediate is also computed by torch with
# `retain_grad()` and compared, forward and backward, one `cmp` row per tensor, and the exercise is
# graded against torch autograd. Without torch (numpy_vit alone), the torch rows are left out; the
# rows against numpy_vit's own module and every centred finite-difference check still run, and the
# exercise is graded against finite differences. Nothing else changes.
#
# Every comparison is float64. A `cmp` row is *close* when
# `np.allclose(mine, reference, rtol=1e-10, atol=1e-12)`; *exact* means bit-identical. A
# finite-difference row uses centred differences with h = 1e-6 and passes when the worst
# |analytic - numeric| / max(max |analytic|, |numeric|, 1e-8) is at most 1e-6.

# %%
import math
import os
import sys
import tempfile
import time
from typing import NamedTuple

import numpy as np

try:
    import numpy_vit as nv
except ImportError:  # a notebook opened in docs/ without `pip install -e .`
    sys.path.insert(0, os.path.abspath(".."))
    import numpy_vit as nv
from numpy_vit.gradcheck import numerical_derivative

try:
    import torch
    import torch.nn.functional as F

    import torch_vit
    from torch_vit.model import channels_layer_norm
    HAVE_TORCH = True
except ImportError as e:
    HAVE_TORCH = False
    print(f"torch: not available ({e}); NumPy-only path: references are numpy_vit's module and "
          "finite differences")

IN_NOTEBOOK = "ipykernel" in sys.modules
try:
    import matplotlib
    if not IN_NOTEBOOK:
        matplotlib.use("Agg")  # as a script: write PNG files, never open a window
    import matplotlib.pyplot as plt
    HAVE_MPL = True
except ImportError:
    HAVE_MPL = False
    print("matplotlib: not available; the figures are skipped")

FIGURES = os.environ.get("WALKTHROUGH_FIGURES") or tempfile.mkdtemp(prefix="walkthrough_attention_")
RTOL, ATOL = 1e-10, 1e-12  # float64 comparisons (cmp)
FD_H, FD_BOUND = 1e-6, 1e-6  # finite differences
ROWS = []  # (kind, name, ok): every check this file makes


def show(fig, name):
    """Inline in a notebook; as a script (or under MPLBACKEND=Agg), a PNG under FIGURES: nothing blocks."""
    if IN_NOTEBOOK and matplotlib.get_backend().lower() != "agg":
        plt.show()
    else:
        path = os.path.join(FIGURES, name + ".png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        print(f"figure: {path}")


def cmp(name, mine, ref, against):
    """One row: my NumPy tensor against a reference (a torch tensor, or an array), float64."""
    if HAVE_TORCH and isinstance(ref, torch.Tensor):
        ref = ref.detach().numpy()
    ref = np.asarray(ref)
    shape_ok = mine.shape == ref.shape
    exact = bool(shape_ok and np.array_equal(mine, ref))
    close = bool(shape_ok and np.allclose(mine, ref, rtol=RTOL, atol=ATOL))
    diff = float(np.abs(mine - ref).max()) if shape_ok else float("nan")
    print(f"cmp {name:<16} vs {against:<8} shape {'ok' if shape_ok else 'WRONG':<5} "
          f"exact {exact!s:<5}  close {close!s:<5}  max abs diff {diff:.1e}")
    ROWS.append(("cmp", name, close))
    return close


def fd_errors(f, array, analytic, entries):
    """Centred finite differences of the scalar f() in the given entries of ``array`` (perturbed in
    place and restored): the worst normwise error and where it is."""
    scale = float(np.abs(analytic).max())
    worst, where = 0.0, None
    for idx in entries:
        num = numerical_derivative(f, array, idx, FD_H)
        err = abs(analytic[idx] - num) / max(scale, abs(num), 1e-8)
        if err >= worst:
            worst, where = err, idx
    return worst, where


def pick(shape, count, rng, also=()):
    """``count`` distinct random indices of an array of ``shape`` (all when it has fewer), plus ``also``."""
    size = math.prod(shape)
    flat = range(size) if size <= count else rng.choice(size, count, replace=False)
    chosen = {tuple(int(j) for j in np.unravel_index(int(i), shape)) for i in flat}
    return sorted(chosen | {tuple(int(j) for j in a) for a in also})


def fd_row(name, f, array, analytic, count=None, rng=None):
    """One row: the analytic gradient ``analytic`` of f() w.r.t. ``array`` against centred differences."""
    rng = np.random.default_rng(0) if rng is None else rng
    biggest = np.unravel_index(int(np.abs(analytic).argmax()), analytic.shape)
    entries = pick(array.shape, count or array.size, rng, also=[biggest])
    worst, where = fd_errors(f, array, analytic, entries)
    ok = worst <= FD_BOUND
    print(f"fd  {name:<16} {len(entries):4d} entries  worst rel err {worst:.1e} at {where}  "
          f"(bound {FD_BOUND:.0e})  {'ok' if ok else 'FAIL'}")
    ROWS.append(("fd", name, ok))
    return ok


print(f"numpy {np.__version__}" + (f", torch {torch.__version__}" if HAVE_TORCH else ", no torch"))

# %% [markdown]
# ## The model, the image, the block
#
# `numpy_vit.pretrained(dtype=np.float64)` is the default recipe's trained model (weights bundled in
# the package); `pretrained_info()` says how they were made. Each of the 4 transformer blocks is
#
#     x = attn(x) + x        attn = PreNormChannels(lnorm, fn=MhSelfAttention)
#     x = ff(x) + x          ff   = PreNormChannels(lnorm, fn=FeedForward)
#
# so the attention sees `lnorm(x)`, the block's input normalised over the C channels at every
# position, and its output is added back to x (the residual). We take block `BLOCK`'s input by
# running the embedding and the blocks before it, in NumPy and in torch.

# %%
BLOCK, IMAGE = 1, 0  # the second block, the first sample image

m = nv.pretrained(dtype=np.float64)
info = nv.pretrained_info()
images, labels, class_names = nv.sample_images()
x_images = nv.normalize(images, np.float64)  # (10, 3, 32, 32): the model's input
print(f"weights: run {info.get('run')!r}, recipe {info.get('recipe')!r}, test accuracy {info.get('test_acc')}")
print(f"image {IMAGE}: {class_names[labels[IMAGE]]}, input {x_images[IMAGE:IMAGE + 1].shape}")


def block_input(model, x, block):
    """The input of transformer block ``block`` (NumPy): the embedding, then the blocks before it."""
    h = model.embedding.forward(x)  # (B, C, H, W)
    for attn, ff in list(model.transformer.layers)[:block]:
        h = attn.forward(h) + h
        h = ff.forward(h) + h
    return np.ascontiguousarray(h)


x_block = block_input(m, x_images[IMAGE:IMAGE + 1], BLOCK)  # (1, 32, 16, 16)
pre = m.transformer.layers[BLOCK][0]  # PreNormChannels
att = pre.fn  # MhSelfAttention
params = att.state_dict()  # {"k.weight": (C, C, 1, 1), "k.bias": (C,), ..., "unify_heads.bias"}
W = {n: params[f"{n}.weight"][:, :, 0, 0] for n in ("k", "q", "v", "unify_heads")}  # (C_out, C_in)
bias = {n: params[f"{n}.bias"] for n in ("k", "q", "v", "unify_heads")}
gamma, beta, eps = pre.lnorm._params["weight"], pre.lnorm._params["bias"], pre.lnorm.eps
B, C, H, Wd = x_block.shape
N, heads, hc, scale = H * Wd, att.heads, att.head_channels, att.scale
print(f"block {BLOCK}: x {x_block.shape}, C = {C}, N = {N}, heads = {heads}, hc = {hc}, scale = {scale:.4f}")

if HAVE_TORCH:
    tm = torch_vit.pretrained().double()  # the same weights in torch, float64
    t_pre = tm.transformer.layers[BLOCK][0]
    t_att = t_pre.fn
    with torch.no_grad():
        h = tm.embedding(torch.from_numpy(x_images[IMAGE:IMAGE + 1]))
        for t_attn, t_ff in list(tm.transformer.layers)[:BLOCK]:
            h = t_attn(h) + h
            h = t_ff(h) + h
    cmp("block input", x_block, h, "torch")

# %% [markdown]
# ## Forward, step by step
#
# Written out with the module's own weights: the pre-norm LayerNorm, then the three 1x1 convs (one
# (C, C) matrix at every position), split into heads, then the hc x hc product, its scale, the
# softmax over the **query** axis (-2), the mix, and `unify_heads`. Then the same in torch with
# `retain_grad()` on every intermediate. P, the unscaled product, is kept as its own tensor so that
# its gradient can be seen too: the module computes `attend` = S = P * scale in one line.

# %%
def layer_norm(x):
    """LayerNorm over the channels at every position: (B, C, H, W) -> (B, C, H, W)."""
    mu = x.mean(axis=1, keepdims=True)  # (B, 1, H, W): one mean per position
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)  # biased, as torch
    r = 1 / np.sqrt(var + eps)  # (B, 1, H, W)
    xhat = (x - mu) * r  # (B, C, H, W): zero mean, unit variance over C
    return gamma[:, None, None] * xhat + beta[:, None, None], xhat, r


def conv1x1(name, x):
    """W x + b at every position: (B, C_in, N) -> (B, C_out, N)."""
    return np.einsum("oc,bcn->bon", W[name], x) + bias[name][:, None]


def softmax_query_axis(S):
    """Softmax over axis -2 (the query channels i): every column of the result sums to 1."""
    e = np.exp(S - S.max(axis=-2, keepdims=True))
    return e / e.sum(axis=-2, keepdims=True)


def heads_of(t):
    return t.reshape(B, heads, hc, N)  # (B, C, N) -> (B, heads, hc, N)


def per_head(module):
    """What an MhSelfAttention cached, in this walkthrough's per-head form: its keys, queries, values are
    (B, N, C) token views -> (B, heads, hc, N); its 4th entry is already each head's (hc, hc) block of A."""
    keys, queries, values, attention, _, _ = module._saved()
    b = keys.shape[0]
    return [t.swapaxes(1, 2).reshape(b, heads, hc, -1) for t in (keys, queries, values)] + [attention]


x_ln, xhat, r = layer_norm(x_block)  # (B, C, H, W)
xs = x_ln.reshape(B, C, N)  # (B, C, N)
k = heads_of(conv1x1("k", xs))  # (B, heads, hc, N)
q = heads_of(conv1x1("q", xs))  # (B, heads, hc, N)
v = heads_of(conv1x1("v", xs))  # (B, heads, hc, N)
P = q @ k.swapaxes(-2, -1)  # (B, heads, hc, hc): P_ij = sum_n q_in k_jn
S = P * scale  # (B, heads, hc, hc): the module's `attend`
A = softmax_query_axis(S)  # (B, heads, hc, hc): the module's `attention`
out = A @ v  # (B, heads, hc, N): out_in = sum_j A_ij v_jn
y = conv1x1("unify_heads", out.reshape(B, C, N)).reshape(B, C, H, Wd)  # (B, C, H, W)

# the library's own forward of the same block (PreNormChannels: lnorm, then MhSelfAttention), and what
# MhSelfAttention cached for its backward
y_lib = pre.forward(x_block)
k_lib, q_lib, v_lib, A_lib = per_head(att)
x_ln_lib = pre.lnorm.forward(x_block)  # the LayerNorm alone (same input: its cache is unchanged)
for name, mine, ref in (("x_ln", x_ln, x_ln_lib), ("k", k, k_lib), ("q", q, q_lib), ("v", v, v_lib),
                        ("attention", A, A_lib), ("y (output)", y, y_lib)):
    cmp(name, mine, ref, "numpy_vit")

# %%
if HAVE_TORCH:
    xt = torch.from_numpy(x_block).requires_grad_()  # (B, C, H, W), a leaf
    x_ln_t = channels_layer_norm(t_pre.lnorm, xt)
    kt = t_att.k(x_ln_t).reshape(B, heads, hc, N)  # (B, heads, hc, N)
    qt = t_att.q(x_ln_t).reshape(B, heads, hc, N)
    vt = t_att.v(x_ln_t).reshape(B, heads, hc, N)
    Pt = qt @ kt.transpose(-2, -1)  # (B, heads, hc, hc)
    St = Pt * t_att.scale  # attend
    At = F.softmax(St, dim=-2)  # attention
    out_t = At @ vt  # (B, heads, hc, N)
    yt = t_att.unify_heads(out_t.reshape(B, C, H, Wd))  # (B, C, H, W)
    for t in (x_ln_t, kt, qt, vt, Pt, St, At, out_t, yt):
        t.retain_grad()
    with torch.no_grad():
        cmp("y (module)", y, t_pre(xt), "torch")  # the torch module itself, not the steps
    for name, mine, t in (("x_ln", x_ln, x_ln_t), ("k", k, kt), ("q", q, qt), ("v", v, vt), ("P", P, Pt),
                          ("attend S", S, St), ("attention A", A, At), ("out", out, out_t), ("y (output)", y, yt)):
        cmp(name, mine, t, "torch")

# %% [markdown]
# ## Backward, step by step
#
# `dy` is the gradient of the loss with respect to **the attention module's output** y. The block
# adds y to its input x (x' = x + y), so dy is also the gradient at x', and the residual passes dy
# straight on to x as well; here we follow the other branch, back through the module and the
# pre-norm LayerNorm to x ("dx (attn branch)"). dy is drawn at random, not ones: a sum of ones
# hides errors that cancel. Then, the table of attention.md line by line:

# %%
rng = np.random.default_rng(0)
dy = rng.standard_normal(y.shape)  # (B, C, H, W)

dout = heads_of(np.einsum("oc,bon->bcn", W["unify_heads"], dy.reshape(B, C, N)))  # (B, heads, hc, N)
dattention = dout @ v.swapaxes(-2, -1)  # dA = d out v^T          (B, heads, hc, hc)
dv = A.swapaxes(-2, -1) @ dout  # dv = A^T d out                  (B, heads, hc, N)
dS = A * (dattention - (dattention * A).sum(axis=-2, keepdims=True))  # softmax backward, axis -2
dP = dS * scale  # the code's `dattend`: the gradient of the UNSCALED P (B, heads, hc, hc)
dq = dP @ k  # (B, heads, hc, N)
dk = dP.swapaxes(-2, -1) @ q  # (B, heads, hc, N)
dx_ln = sum(np.einsum("oc,bon->bcn", W[n], d.reshape(B, C, N)) for n, d in (("k", dk), ("q", dq), ("v", dv)))
dx_ln = dx_ln.reshape(B, C, H, Wd)  # x_ln feeds all three convs: their three dx add up
dxhat = gamma[:, None, None] * dx_ln  # LayerNorm backward (attention.md derives it)
dx_block = r * (dxhat - dxhat.mean(axis=1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))

cmp("dx (attn branch)", dx_block, pre.backward(dy), "numpy_vit")  # PreNormChannels.backward
cmp("dattend (code)", dP, nv.softmax_backward(dattention, A, axis=-2) * scale, "numpy_vit")  # its line
if HAVE_TORCH:
    yt.backward(torch.from_numpy(dy))
    for name, mine, t in (("d out", dout, out_t), ("dattention dA", dattention, At), ("dattend dS", dS, St),
                          ("dP", dP, Pt), ("dq", dq, qt), ("dk", dk, kt), ("dv", dv, vt), ("dx_ln", dx_ln, x_ln_t),
                          ("dx (attn branch)", dx_block, xt)):
        cmp(name, mine, t.grad, "torch")

# %% [markdown]
# ## All heads at once: what the code runs
#
# `MhSelfAttention.forward` (numpy_vit and torch_vit alike) does not split k, q, v into heads. It
# takes them as (B, N, C) token views of its channels-last 1x1 convs (free, where the per-head
# (B, heads, hc, N) views above would copy), and forms every pair of channels at once:
# `attend = queries.swapaxes(1, 2) @ keys * self.scale`, (B, C, C). Its (hc, hc) diagonal blocks are
# the heads' S; every other entry pairs two channels of different heads, and is set to -inf, so the
# column softmax gives it exactly 0 and each column sums to one over its own head. Then
# `out = values @ attention.swapaxes(1, 2)` is the per-head A v (transposed: (B, N, C)). In the
# backward, the masked entries' dS is exactly 0 too (dS = A * (...) and A is 0 there), so dq and dk
# are the per-head ones. Below, the module's cached (C, C) attention against the per-head A, and its
# dattend, from the module's own lines, against dP.

# %%
keys_c, queries_c, values_c, _, attention_c, _ = att._saved()  # (B, N, C) views and the (B, C, C) attention
head = np.arange(C) // hc  # the head of each channel
other = head[:, None] != head[None, :]  # (C, C): pairs of two different heads
S_code = queries_c.swapaxes(1, 2) @ keys_c * scale  # (B, C, C), before the mask
blocks = lambda t: np.stack([t[:, g * hc:(g + 1) * hc, g * hc:(g + 1) * hc] for g in range(heads)], 1)  # noqa: E731
cmp("S blocks (code)", S, blocks(S_code), "numpy_vit")  # (B, heads, hc, hc)
cmp("A blocks (code)", A, blocks(attention_c), "numpy_vit")
print(f"attention between two heads: {int(other.sum())} entries per image, all exactly 0: "
      f"{bool((attention_c[:, other] == 0).all())}")
assert (attention_c[:, other] == 0).all()
dout_c = dout.reshape(B, C, N).swapaxes(1, 2)  # d out as the code holds it, (B, N, C)
dattention_c = dout_c.swapaxes(1, 2) @ values_c  # (B, C, C)
dattend_c = nv.softmax_backward(dattention_c, attention_c, axis=-2) * scale  # the module's dattend
cmp("dattend blocks", dP, blocks(dattend_c), "numpy_vit")
print(f"dattend between two heads: all exactly 0: {bool((dattend_c[:, other] == 0).all())}")
assert (dattend_c[:, other] == 0).all()

# %% [markdown]
# ## `attend` is S, but `dattend` is dP
#
# In `MhSelfAttention.forward`, `attend` is S = P * scale (P = q k^T). In its backward,
# `dattend = softmax_backward(dattention, attention, axis=-2) * self.scale` is **not** dL/dS: the
# softmax backward gives dS, and the `* self.scale` turns it into dP = scale * dS, the gradient
# of the unscaled product, which is what dq = dP k and dk = dP^T q need. Finite differences
# settle it: perturb one entry of S (everything else fixed) and the loss moves by dS, not dP.

# %%
def loss_from(P_=None, S_=None, A_=None, q_=None, k_=None, v_=None, x_=None):
    """L = sum(dy * y), y rebuilt from whichever intermediate is given, the rest as in the forward."""
    if x_ is not None:
        xs_ = layer_norm(x_)[0].reshape(B, C, N)
        k_, q_, v_ = (heads_of(conv1x1(n, xs_)) for n in ("k", "q", "v"))
    q_, k_, v_ = (q if q_ is None else q_), (k if k_ is None else k_), (v if v_ is None else v_)
    if A_ is None:
        if S_ is None:
            S_ = (q_ @ k_.swapaxes(-2, -1) if P_ is None else P_) * scale
        A_ = softmax_query_axis(S_)
    y_ = conv1x1("unify_heads", (A_ @ v_).reshape(B, C, N))
    return float(np.sum(dy.reshape(B, C, N) * y_))


S_probe = S.copy()
print("   entry of S      finite diff       dS (dL/dS)      dP = dS*scale (code's dattend)")
for idx in [(0, 0, 0, 0), (0, 1, 2, 5), np.unravel_index(int(np.abs(dS).argmax()), dS.shape)]:
    idx = tuple(int(i) for i in idx)
    num = numerical_derivative(lambda: loss_from(S_=S_probe), S_probe, idx, FD_H)
    print(f"   {str(idx):<14} {num:+.9e}  {dS[idx]:+.9e}  {dP[idx]:+.9e}")
fd_row("dS (vary S)", lambda: loss_from(S_=S_probe), S_probe, dS)  # every entry: differences in S give dS
P_probe = P.copy()
fd_row("dattend (dP)", lambda: loss_from(P_=P_probe), P_probe, dP)  # and differences in P give dP = scale * dS

# %% [markdown]
# ## Every gradient by finite differences (the reference without torch)
#
# Each analytic gradient against centred differences of L = sum(dy * y) rebuilt from that tensor:
# every entry of the small hc x hc ones, 200 random entries (and the largest) of the big ones.
# (dS and dattend = dP were checked in the cell above.) These rows are the whole check when torch
# is absent; with torch they add an independent one.

# %%
fd_rng = np.random.default_rng(1)
A_probe, q_probe, k_probe, v_probe, x_probe = A.copy(), q.copy(), k.copy(), v.copy(), x_block.copy()
fd_row("dattention", lambda: loss_from(A_=A_probe), A_probe, dattention)
fd_row("dq", lambda: loss_from(q_=q_probe), q_probe, dq, 200, fd_rng)
fd_row("dk", lambda: loss_from(k_=k_probe), k_probe, dk, 200, fd_rng)
fd_row("dv", lambda: loss_from(v_=v_probe), v_probe, dv, 200, fd_rng)
fd_row("dx (attn branch)", lambda: loss_from(x_=x_probe), x_probe, dx_block, 200, fd_rng)

# %% [markdown]
# ## Why the softmax runs over the query axis
#
# Token attention normalises each **row** of its N x N matrix: query token i takes a weighted
# average of the value tokens. The seed model normalises over axis -2 instead, the transpose:
# each **column** j (a key/value channel) hands out one unit of weight over the output channels i.
# It is the seed's choice and the model is trained with it; this walkthrough keeps it. The
# consequence: an output channel receives a total weight sum_j A_ij anywhere in (0, hc), so
# out_i is a weighted *sum* of value channels, not an average, while the channel sum is conserved
# (sum_i out_in = sum_j v_jn at every position).

# %%
h0 = A[0, 0]  # (hc, hc): head 0 of block BLOCK on this image
np.set_printoptions(precision=3, suppress=True, linewidth=120)
print(f"A, head 0 (row i = query/output channel, column j = key/value channel):\n{h0}")
print(f"column sums: {h0.sum(axis=0)}")
print(f"row sums:    {h0.sum(axis=1)}")
col_sums, row_sums = A.sum(axis=-2), A.sum(axis=-1)  # every head
print(f"all {heads} heads: column sums in [{col_sums.min():.15f}, {col_sums.max():.15f}]; "
      f"row sums from {row_sums.min():.3g} to {row_sums.max():.3g} (hc = {hc})")
conserved = np.abs(out.sum(axis=-2) - v.sum(axis=-2)).max()
print(f"channel sum conserved: max |sum_i out_in - sum_j v_jn| = {conserved:.1e}")
assert np.allclose(col_sums, 1, rtol=0, atol=1e-13) and not np.allclose(row_sums, 1, atol=1e-3)
ROWS.append(("prop", "columns sum to 1, rows do not", True))

# %% [markdown]
# ## Permuting the positions
#
# A has no position index: P sums over all N positions, so shuffling them changes nothing in A,
# and out[:, n] = A v[:, n] is the same 1x1 mix at every position: the output is shuffled the same
# way. (Where a patch is comes only from the positional embedding added before the blocks.)

# %%
def attention_forward(x):
    """The module's forward on the LayerNorm'd input (B, C, H, W): (y, A)."""
    xs_ = x.reshape(B, C, N)
    k_, q_, v_ = (heads_of(conv1x1(n, xs_)) for n in ("k", "q", "v"))
    A_ = softmax_query_axis(q_ @ k_.swapaxes(-2, -1) * scale)
    return conv1x1("unify_heads", (A_ @ v_).reshape(B, C, N)).reshape(B, C, H, Wd), A_


perm = np.random.default_rng(2).permutation(N)
y_perm, A_perm = attention_forward(x_ln.reshape(B, C, N)[..., perm].reshape(B, C, H, Wd))
d_out = np.abs(y_perm.reshape(B, C, N) - y.reshape(B, C, N)[..., perm]).max()
d_att = np.abs(A_perm - A).max()
print(f"permuted input: max |y(perm x) - perm y(x)| = {d_out:.1e}, max |A(perm x) - A(x)| = {d_att:.1e}")
print("(not 0 only because the sum over n is taken in another order)")
assert d_out < 1e-10 and d_att < 1e-12
ROWS.append(("prop", "permutation equivariance", True))

# %% [markdown]
# ## Cost: linear in N, against token attention's quadratic
#
# Per head, the two products q k^T and A v cost hc * hc * N multiply-adds each, 2 hc^2 N in all;
# token attention's (N x N) products cost 2 N^2 hc. Below, the counts, then one head of each
# timed in NumPy (float32, hc = 8, best of a few runs) on growing N. At small N the channel
# version's time is mostly call overhead, so its measured growth lags its count; the last rows
# time it alone at larger N, where it grows like N (token attention's N x N matrix would need
# 1 GiB at N = 16384 and 16 GiB at N = 65536).

# %%
def channel_head(q_, k_, v_):  # q_, k_, v_: (hc, N)
    S_ = q_ @ k_.T * hc ** -0.5  # (hc, hc)
    e = np.exp(S_ - S_.max(axis=0, keepdims=True))
    return (e / e.sum(axis=0, keepdims=True)) @ v_  # (hc, N)


def token_head(q_, k_, v_):  # the same tensors read as N tokens of hc features
    S_ = q_.T @ k_ * hc ** -0.5  # (N, N)
    e = np.exp(S_ - S_.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)) @ v_.T  # (N, hc)


def best_time(fn, budget=0.03):
    """The fastest of as many calls as fit in ``budget`` seconds (at least one)."""
    times, end = [], time.perf_counter() + budget
    while not times or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


t_rng = np.random.default_rng(3)
print(f"{'N':>6} {'channel MACs':>13} {'token MACs':>14} {'ratio':>6} {'channel time':>13} {'token time':>11}")
previous = None
for n in (64, 256, 1024, 4096, 16384, 65536):
    qkv = [t_rng.standard_normal((hc, n)).astype(np.float32) for _ in range(3)]
    macs_c, macs_t = 2 * hc * hc * n, 2 * n * n * hc
    tc = best_time(lambda: channel_head(*qkv))
    tt = best_time(lambda: token_head(*qkv)) if n <= 4096 else None
    growth = "" if previous is None else f"   x{tc / previous[0]:.1f}" + (
        f" / x{tt / previous[1]:.1f}" if tt is not None else "") + " for N x 4"
    token = f"{tt * 1e3:>8.2f} ms" if tt is not None else f"{'-':>11}"
    print(f"{n:>6} {macs_c:>13,} {macs_t:>14,} {macs_t // macs_c:>6} {tc * 1e6:>10.0f} us {token}{growth}")
    previous = (tc, tt)
print("counts: x4 N gives x4 channel MACs and x16 token MACs; their ratio is N / hc")

# %% [markdown]
# ## A knob: sharper columns, less gradient through the softmax
#
# Scale q's conv weights and bias by a factor f: q, P and S are multiplied by f (f = 0 makes every
# column uniform) and the columns of A sharpen towards one-hot as f grows. The softmax Jacobian of a
# column, a_i (delta_il - a_l), goes to zero with them, so the fraction of the upstream gradient the
# softmax lets through, |dS| / |dA| (Frobenius norms), goes to zero as the mean column entropy does
# (log hc is uniform, 0 one-hot; just off uniform it may first rise a little), and dq = dP k with
# it. |dk| need not fall as fast: dk = dP^T q, and this knob multiplies q by f too. dv = A^T d out does not go through the softmax at all. So a model whose
# columns start peaked (large |S| at initialisation, next cell) gives its q and k convs less
# gradient; how much less, read off the |dS|/|dA| column at the entropy the next cell measures.

# %%
def column_entropy(A_):
    """Mean over columns of each column's entropy, in nats, per head: (..., hc, hc) -> (...)."""
    return -(A_ * np.log(np.maximum(A_, 1e-300))).sum(axis=-2).mean(axis=-1)


print(f"{'f':>4} {'max |S|':>8} {'mean col entropy':>17} {'|dS|/|dA|':>10} {'|dq|':>9} {'|dk|':>9} {'|dv|':>9}")
knob = []
dA_f = dout @ v.swapaxes(-2, -1)  # dA does not depend on A
for f in (0, 0.5, 1, 2, 4, 8):
    A_f = softmax_query_axis(f * S)  # q -> f q multiplies S by f
    dS_f = A_f * (dA_f - (dA_f * A_f).sum(axis=-2, keepdims=True))
    dq_f, dk_f = (dS_f * scale) @ k, (dS_f * scale).swapaxes(-2, -1) @ (f * q)
    dv_f = A_f.swapaxes(-2, -1) @ dout
    ent, passed = float(column_entropy(A_f).mean()), np.linalg.norm(dS_f) / np.linalg.norm(dA_f)
    knob.append(ent)
    print(f"{f:>4} {np.abs(f * S).max():>8.1f} {ent:>17.3f} {passed:>10.4f} {np.linalg.norm(dq_f):>9.2e} "
          f"{np.linalg.norm(dk_f):>9.2e} {np.linalg.norm(dv_f):>9.2e}")
# the entropy of softmax(f s) never increases with f >= 0 (its derivative in f is -f Var(s))
assert abs(knob[0] - math.log(hc)) < 1e-12 and all(b <= a + 1e-12 for a, b in zip(knob, knob[1:]))

# %% [markdown]
# The same measurements on the sample images, trained weights against a fresh initialisation
# (`numpy_vit.ViT(..., rng=0)`, drawn as torch initialises): the largest |S| and each block's mean column
# entropy (over heads and images). attention.md refers to this cell for the figures at
# initialisation. Last, the scale of P: tiling the input 2 x 2 (4N positions, the same values)
# multiplies P by exactly 4 in exact arithmetic; in float64 the sums are taken in another order.

# %%
def saturation(model):
    model.forward(x_images)  # all 10 sample images
    for i, (attn, _) in enumerate(model.transformer.layers):
        k_, q_, _, A_ = per_head(attn.fn)
        S_ = q_ @ k_.swapaxes(-2, -1) * attn.fn.scale
        yield i, float(np.abs(S_).max()), float(column_entropy(A_).mean())


config = dict(info["model"], image_size=tuple(info["model"]["image_size"]))
for label, model in (("trained", m), ("initialisation", nv.ViT(**config, dtype=np.float64, rng=0))):
    for i, s_max, ent in saturation(model):
        print(f"{label:>14} block {i}: max |S| = {s_max:6.1f}, mean column entropy {ent:.2f} nats "
              f"(uniform log {hc} = {math.log(hc):.2f})")

x4 = np.tile(x_ln, (1, 1, 2, 2)).reshape(B, C, 4 * N)  # (B, C, 2H, 2W) -> (B, C, 4N)
k4, q4 = (conv1x1(n, x4).reshape(B, heads, hc, 4 * N) for n in ("k", "q"))
tiling = np.abs(q4 @ k4.swapaxes(-2, -1) - 4 * P).max() / np.abs(P).max()
print(f"tiling 2x2: max |P(tiled) - 4 P| / max |P| = {tiling:.1e}")
assert tiling < 1e-12

# %% [markdown]
# ## Exercise: the backward, yourself
#
# Write
#
# 1. `softmax_backward_query_axis(dy, y)`: given y = softmax(S) over axis -2 and dy = dL/dy, return
#    dL/dS (same shape (B, heads, hc, hc));
# 2. `attention_backward(dout, q, k, v, A, scale)`: from d out (B, heads, hc, N) to (dq, dk, dv),
#    calling your softmax backward.
#
# The grader compares your dS (from `softmax_backward_query_axis(dA, A)` with the reference dA),
# dq, dk and dv with a reference: torch autograd when torch is present, else centred finite
# differences (every entry of dS, 100 random entries of each of dq, dk, dv). Per tensor it prints
# PASS, or FAIL with the index of the largest difference and its size relative to the largest
# reference entry; it returns a `Grade` whose `passed` is True only if every tensor passed.
#
# Below is a first attempt with a classic bug. Read the grader's report before the solution.

# %%
class Grade(NamedTuple):
    passed: bool
    rows: list  # (tensor, passed, index of the largest difference, relative difference)


if HAVE_TORCH:
    REFERENCE = "torch autograd"
    grade_inputs = dict(dout=out_t.grad.numpy(), dA=At.grad.numpy())
    grade_ref = {"dS": St.grad.numpy(), "dq": qt.grad.numpy(), "dk": kt.grad.numpy(), "dv": vt.grad.numpy()}
    GRADE_TOL = 1e-9
else:
    REFERENCE = "centred finite differences"
    grade_inputs = dict(dout=dout, dA=dattention)
    grade_ref = None  # finite differences at random entries, computed in grade()
    GRADE_TOL = FD_BOUND


def _fd_reference(name, shape, rng):
    """Finite-difference entries of the gradient ``name`` (dS, dq, dk, dv): {index: value}."""
    dA_, dout_ = grade_inputs["dA"], grade_inputs["dout"]
    arrays = dict(S=S.copy(), q=q.copy(), k=k.copy(), v=v.copy())
    if name == "dS":  # L_A(S) = sum(dA * softmax(S)): the softmax backward alone
        f = lambda: float(np.sum(dA_ * softmax_query_axis(arrays["S"])))  # noqa: E731
    else:  # L(q, k, v) = sum(d out * out)
        f = lambda: float(np.sum(dout_ * (softmax_query_axis(  # noqa: E731
            arrays["q"] @ arrays["k"].swapaxes(-2, -1) * scale) @ arrays["v"])))
    entries = pick(shape, 10 ** 9 if name == "dS" else 100, rng)
    return {idx: numerical_derivative(f, arrays[name[1:]], idx, FD_H) for idx in entries}


def grade(verbose=True):
    """Run the learner's two functions and compare with the reference, tensor by tensor."""
    dS_mine = softmax_backward_query_axis(grade_inputs["dA"], A)
    dq_mine, dk_mine, dv_mine = attention_backward(grade_inputs["dout"], q, k, v, A, scale)
    mine = {"dS": dS_mine, "dq": dq_mine, "dk": dk_mine, "dv": dv_mine}
    rows, rng = [], np.random.default_rng(4)
    for name, t in mine.items():
        t = np.asarray(t)
        expected = A.shape if name == "dS" else q.shape
        if t.shape != expected:
            rows.append((name, False, None, float("inf")))
            print(f"grader  {name:<3} FAIL  shape {t.shape}, expected {expected}")
            continue
        if grade_ref is not None:
            ref = grade_ref[name]
            diff = np.abs(t - ref)
            where = tuple(int(i) for i in np.unravel_index(int(diff.argmax()), diff.shape))
            rel = float(diff[where] / max(np.abs(ref).max(), 1e-300))
            ref_at = ref[where]
        else:
            ref_entries = _fd_reference(name, t.shape, rng)
            scale_ref = max(abs(val) for val in ref_entries.values())
            where = max(ref_entries, key=lambda i: abs(t[i] - ref_entries[i]))
            where = tuple(int(i) for i in where)
            rel = float(abs(t[where] - ref_entries[where]) / max(scale_ref, 1e-300))
            ref_at = ref_entries[where]
        ok = rel <= GRADE_TOL
        rows.append((name, ok, where, rel))
        if verbose:
            detail = (f"largest difference at {where}: yours {t[where]:+.3e}, reference {ref_at:+.3e}, "
                      f"|diff| = {rel:.2e} of max |reference|")
            print(f"grader  {name:<3} {'PASS' if ok else 'FAIL'}  {detail}")
    return Grade(all(row[1] for row in rows), rows)


def attention_backward(dout, q, k, v, A, scale):
    """d out (B, heads, hc, N) -> (dq, dk, dv), each (B, heads, hc, N)."""
    dA = dout @ v.swapaxes(-2, -1)  # (B, heads, hc, hc)
    dv = A.swapaxes(-2, -1) @ dout
    dP = softmax_backward_query_axis(dA, A) * scale  # dS, then dP = scale * dS
    return dP @ k, dP.swapaxes(-2, -1) @ q, dv


def softmax_backward_query_axis(dy, y):
    """First attempt: the token-attention habit, the sum over the LAST axis."""
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))


print(f"reference: {REFERENCE}; a tensor passes when |yours - reference| <= {GRADE_TOL:.0e} * max |reference|")
wrong = grade()
print("grader: FAIL (wrong version, as expected)" if not wrong.passed
      else "grader: PASS (unexpected: the wrong version passed, so the grader is broken)")
assert not wrong.passed

# %% [markdown]
# dv passes (it never goes through the softmax) and dS, dq, dk fail together: the bug is in the
# softmax backward, and dq, dk inherit it. The sum in y * (dy - sum(dy * y)) must run over the
# axis the forward normalised, -2 (one sum per column: attention.md shows why the Jacobian splits
# column by column). Your turn: write it below, then run the cell.

# %%
def softmax_backward_query_axis(dy, y):  # noqa: F811  (the solution replaces the first attempt)
    """dL/dS for y = softmax(S, axis=-2): per column j, y_ij (dy_ij - sum_i' dy_i'j y_i'j)."""
    return y * (dy - (dy * y).sum(axis=-2, keepdims=True))


right = grade()
print("grader: PASS" if right.passed else "grader: FAIL")
assert right.passed

# %% [markdown]
# ## The trained model's attention maps
#
# Block `BLOCK`'s hc x hc matrix of each head for every sample image (rows: query channel i,
# columns: key channel j; every column sums to 1). The title gives each head's mean column entropy.

# %%
m.forward(x_images)  # all 10 images; each MhSelfAttention caches its attention
A_all = att._saved()[3]  # (10, heads, hc, hc): each head's block of the module's (C, C) attention
predicted = None
if HAVE_MPL:
    fig, axes = plt.subplots(heads + 1, len(images), figsize=(1.3 * len(images), 1.4 * (heads + 1)))
    for b in range(len(images)):
        axes[0, b].imshow(images[b].transpose(1, 2, 0))
        axes[0, b].set_title(class_names[labels[b]], fontsize=7)
        for hh in range(heads):
            axes[hh + 1, b].imshow(A_all[b, hh], vmin=0, vmax=1, cmap="viridis")
            axes[hh + 1, b].set_title(f"head {hh}, H={column_entropy(A_all[b, hh]):.2f}", fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"block {BLOCK}: attention A[i, j] per head (softmax over i)", fontsize=9)
    fig.tight_layout()
    show(fig, "attention_maps")
ents = column_entropy(A_all)  # (10, heads)
print(f"mean column entropy per head over the 10 images: {np.round(ents.mean(axis=0), 2)} nats")

# %% [markdown]
# ## GradCAM on the sample images
#
# `numpy_vit.grad_cam` (NumPy only, the same maps as pytorch-grad-cam's `GradCAM`; the parity tests
# check that) for each image's true class, at the last block's output.

# %%
cams, extras = nv.grad_cam(m, x_images, labels, return_raw=True)  # (10, 32, 32) in [0, 1]
predicted = extras["logits"].argmax(axis=1)
print("true:     ", " ".join(f"{class_names[c][:5]:>5}" for c in labels))
print("predicted:", " ".join(f"{class_names[c][:5]:>5}" for c in predicted))
print(f"{int((predicted == labels).sum())} of {len(labels)} correct; blank maps (all evidence <= 0): "
      f"{int(extras['zero'].sum())}")
if HAVE_MPL:
    fig, axes = plt.subplots(2, len(images), figsize=(1.3 * len(images), 3.0))
    for b in range(len(images)):
        axes[0, b].imshow(images[b].transpose(1, 2, 0))
        axes[0, b].set_title(f"{class_names[labels[b]]}\npred {class_names[predicted[b]]}", fontsize=6)
        axes[1, b].imshow(images[b].transpose(1, 2, 0))
        axes[1, b].imshow(cams[b], cmap="jet", alpha=0.5, vmin=0, vmax=1)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("GradCAM for the true class (last block)", fontsize=9)
    fig.tight_layout()
    show(fig, "gradcam")

# %% [markdown]
# ## Summary
#
# One line per kind of check; any failure above has already stopped the run (as a script) or
# printed a `False`/`FAIL`.

# %%
for kind in ("cmp", "fd", "prop"):
    rows_k = [row for row in ROWS if row[0] == kind]
    print(f"summary {kind}: {sum(ok for _, _, ok in rows_k)} of {len(rows_k)} ok")
failed = [name for _, name, ok in ROWS if not ok]
print(f"walkthrough: {'all checks passed' if not failed else 'FAILED: ' + ', '.join(failed)}"
      f" ({'with' if HAVE_TORCH else 'without'} torch)")
assert not failed, f"failed checks: {failed}"
