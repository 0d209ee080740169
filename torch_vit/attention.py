"""Looking inside the model: the channel-attention maps of every head of every block, how peaked
they are, and what the learned positional map encodes (docs/attention.md explains the maths).

    maps = attention_maps(np_model, image)          # [(heads, hc, hc)] per block, NumPy forward
    check_against_torch(np_model, torch_model, image)  # max |numpy - torch| over every map
    entropy(maps[0])                                # (heads,) nats; log(hc) is uniform
    plot_attention(maps, "attention.png", "one test image")
    plot_positional_similarity(np_model.embedding._params["pos_embedding"], "pos.png")

``attention[i, j]`` is the weight of key (value) channel j in query (output) channel i; the softmax
runs over i (axis -2), so every COLUMN sums to one. Pictures are written atomically with
matplotlib's Agg backend.
"""

import math

import numpy as np
import torch

from numpy_vit.model import MhSelfAttention as NpMhSelfAttention

from .model import MhSelfAttention as TorchMhSelfAttention
from .report import save_png


def _np_attention_modules(np_model):
    """The NumPy model's MhSelfAttention parts in block order (layers.0.0.fn, layers.1.0.fn, ...)."""
    mods = [m for _, m in np_model.named_modules() if isinstance(m, NpMhSelfAttention)]
    if not mods:
        raise ValueError(f"attention_maps: {type(np_model).__name__} has no MhSelfAttention")
    return mods


def _one_image(image, dtype=None):
    """image (1, C, H, W) or (C, H, W), ndarray or tensor -> (1, C, H, W) ndarray."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    x = np.asarray(image, dtype=dtype)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"attention maps: expected one image (1, C, H, W) or (C, H, W), got shape {x.shape}")
    return x


def attention_maps(np_model, image):
    """The channel-attention matrix of every head of every block, computed by the NumPy model.

    Runs ``np_model.forward`` on the one normalised image (which replaces whatever the model had
    cached for a backward) and reads each MhSelfAttention's cached per-head attention (the fourth entry of
    its ``_cache``: keys, queries, values, the heads' (hc, hc) blocks of attention, attention, (b, h, w)).

    Returns a list over blocks of float arrays (heads, hc, hc), in the model's dtype:
    ``maps[b][head, i, j]`` = weight of key channel j in query channel i; columns sum to one.
    """
    mods = _np_attention_modules(np_model)
    np_model.forward(_one_image(image, np_model.dtype))
    return [m._saved()[3][0].copy() for m in mods]


def torch_attention_maps(torch_model, image):
    """The same maps recomputed in torch: a forward hook on every MhSelfAttention takes the block's
    input and recomputes softmax(q k^T * scale, dim=-2) from the module's own k, q convs."""
    mods = [m for m in torch_model.modules() if isinstance(m, TorchMhSelfAttention)]
    if not mods:
        raise ValueError(f"torch_attention_maps: {type(torch_model).__name__} has no MhSelfAttention")
    param = next(torch_model.parameters())
    x = torch.from_numpy(np.ascontiguousarray(_one_image(image))).to(param.device, param.dtype)
    maps = []

    def hook(mod, inputs, _output):
        xin = inputs[0]
        b = xin.shape[0]
        keys = mod.k(xin).reshape(b, mod.heads, mod.head_channels, -1)  # (1, heads, hc, N)
        queries = mod.q(xin).reshape(b, mod.heads, mod.head_channels, -1)
        attend = queries @ keys.transpose(-2, -1) * mod.scale  # (1, heads, hc, hc)
        maps.append(torch.softmax(attend, dim=-2)[0].cpu().numpy())

    handles = [m.register_forward_hook(hook) for m in mods]
    try:
        with torch.no_grad():
            torch_model(x)
    finally:
        for h in handles:
            h.remove()
    return maps


def check_against_torch(np_model, torch_model, image):
    """Max |numpy map - torch map| over every head of every block, for the same image and weights
    (the torch model must hold the NumPy model's weights). About 1e-7 in float32, 1e-16 in float64."""
    mine = attention_maps(np_model, image)
    ref = torch_attention_maps(torch_model, image)
    if len(mine) != len(ref) or any(a.shape != b.shape for a, b in zip(mine, ref)):
        raise ValueError(f"check_against_torch: numpy maps {[a.shape for a in mine]} but torch maps "
                         f"{[b.shape for b in ref]}")
    return max(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) for a, b in zip(mine, ref))


def entropy(att):
    """Mean over columns of the entropy of each column, in nats, per head.

    att (..., hc, hc) with columns summing to one (softmax over axis -2) -> (...,): for
    (heads, hc, hc) one number per head. log(hc) for uniform columns (the maximum), 0 for one-hot
    columns; 0 log 0 counts as 0."""
    a = np.asarray(att, dtype=np.float64)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"entropy: expected (..., hc, hc), got shape {a.shape}")
    plogp = np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0)
    return -plogp.sum(axis=-2).mean(axis=-1)  # entropy of each column, then the mean over columns


def _savefig(fig, path):
    save_png(fig, path, dpi=100)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _ticks(n, most=8):
    return list(range(0, n, max(1, math.ceil(n / most))))


def plot_attention(maps, path, title=""):
    """One PNG of heat maps: rows = blocks, columns = heads, each hc x hc (query channel i down the
    rows, key channel j along the columns), one colour scale and colour bar for all, and each head's
    mean column entropy in its title."""
    maps = [np.asarray(m, dtype=np.float64) for m in maps]
    if not maps or any(m.ndim != 3 or m.shape != maps[0].shape or m.shape[1] != m.shape[2] for m in maps):
        raise ValueError(f"plot_attention: expected a list of equal (heads, hc, hc) arrays, got "
                         f"{[m.shape for m in maps]}")
    heads, hc = maps[0].shape[:2]
    vmax = max(float(m.max()) for m in maps)
    plt = _pyplot()
    fig, axes = plt.subplots(len(maps), heads, figsize=(2.6 * heads + 1.2, 2.6 * len(maps) + 0.6),
                             squeeze=False, constrained_layout=True)
    im = None
    for b, m in enumerate(maps):
        ent = entropy(m)
        for h in range(heads):
            ax = axes[b, h]
            im = ax.imshow(m[h], cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"block {b}, head {h}\nH = {ent[h]:.2f} nats", fontsize=8)
            ax.set_xticks(_ticks(hc))
            ax.set_yticks(_ticks(hc))
            ax.tick_params(labelsize=6)
            ax.set_xlabel("key channel j", fontsize=7)
            ax.set_ylabel("query channel i", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight (each column sums to 1)")
    head = f"{title}\n" if title else ""
    fig.suptitle(f"{head}channel attention, softmax over i; H = mean column entropy "
                 f"(uniform = log {hc} = {math.log(hc):.2f} nats)", fontsize=10)
    _savefig(fig, path)
    plt.close(fig)


def _pos_array(pos_embedding):
    if isinstance(pos_embedding, torch.Tensor):
        pos_embedding = pos_embedding.detach().cpu().numpy()
    p = np.asarray(pos_embedding, dtype=np.float64)
    if p.ndim == 4 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 3:
        raise ValueError(f"positional map: expected (1, C, h, w) or (C, h, w), got shape {p.shape}")
    return p


def positional_similarity(pos_embedding):
    """(h*w, h*w) cosine similarity between the C-vectors of every two positions of the learned
    positional map (1, C, h, w); position (i, j) is row i*w + j. A zero vector has similarity 0 to
    everything (itself included)."""
    p = _pos_array(pos_embedding)
    c = p.shape[0]
    vecs = p.reshape(c, -1).T  # (h*w, C)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    unit = vecs / np.where(norms > 0, norms, 1.0)
    sim = unit @ unit.T
    return (sim + sim.T) / 2  # exactly symmetric


def plot_positional_similarity(pos_embedding, path, step=None):
    """The standard ViT probe: a grid of small h x w maps, the one at grid cell (i, j) showing the
    cosine similarity of position (i, j) to every position. With ``step`` s (default 2 when h or w
    exceeds 8, else 1) only every s-th row and column get a map; the title says so."""
    p = _pos_array(pos_embedding)
    _, h, w = p.shape
    step = (2 if max(h, w) > 8 else 1) if step is None else int(step)
    if step < 1:
        raise ValueError(f"plot_positional_similarity: step must be >= 1, got {step}")
    sim = positional_similarity(p).reshape(h, w, h, w)
    rows, cols = list(range(0, h, step)), list(range(0, w, step))
    plt = _pyplot()
    size = 1.0 if len(rows) * len(cols) > 16 else 1.6
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(size * len(cols) + 1.5, size * len(rows) + 1.0),
                             squeeze=False, constrained_layout=True)
    im = None
    for a, i in enumerate(rows):
        for b, j in enumerate(cols):
            ax = axes[a, b]
            im = ax.imshow(sim[i, j], cmap="viridis", vmin=-1.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if b == 0:
                ax.set_ylabel(f"row {i}", fontsize=7)
            if a == 0:
                ax.set_title(f"col {j}", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.8, label="cosine similarity")
    ordinal = {2: "2nd", 3: "3rd"}.get(step, f"{step}th")
    shown = f"every {ordinal} row and column shown" if step > 1 else "every position shown"
    fig.suptitle(f"positional embedding: similarity of position (row, col) to all {h}x{w} positions\n"
                 f"({shown})", fontsize=10)
    _savefig(fig, path)
    plt.close(fig)
