"""The seed's fully-convolutional ViT in NumPy: the same modules, names and order of operations as
``torch_vit.model``, each with a hand-derived backward.

Every public part takes an NCHW array in the model's dtype. ``forward(x)`` returns its output and
remembers what backward needs; ``backward(dout)`` returns the gradient of the input and leaves each
parameter's gradient in ``part.grads`` under its seed state-dict name (relative to the part).

Shapes: B batch, C channels (= embedding_dim), H x W the patch grid (the image is H*p x W*p, p the
patch size), N = H * W, hc = head_channels, heads = C // hc.
"""

import numpy as np

from .nn import (GELU, AdaptiveAvgPool2d, Conv2d, Flatten, LayerNorm, Linear, Module, ModuleList,
                 Sequential, _as_float_dtype, softmax, softmax_backward)


def _pair(size, name):
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"{name}: expected a positive int or a pair (H, W) of them, got {size!r}")
    return int(size[0]), int(size[1])


def _positive(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def _rng(rng):
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    return rng


def check_input(x, part, channels, dtype, size=None):
    """Raise one clear line unless x is a (B, channels, H, W) ndarray of ``dtype`` (and (H, W) == size)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{part}: expected a NumPy array (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{part}: expected a 4-d input (B, C, H, W), got shape {x.shape}")
    if x.shape[0] < 1:
        raise ValueError(f"{part}: expected a batch of at least 1, got shape {x.shape}")
    if x.shape[1] != channels:
        raise ValueError(f"{part}: expected {channels} channels, got {x.shape[1]} (input shape {x.shape})")
    if size is not None and tuple(x.shape[2:]) != tuple(size):
        raise ValueError(f"{part}: expected spatial size {tuple(size)}, got {tuple(x.shape[2:])} "
                         f"(input shape {x.shape})")
    if x.dtype != dtype:
        raise TypeError(f"{part}: expected an input of dtype {dtype} (the parameters' dtype), got {x.dtype}")


class Embedding(Module):
    """Patch embedding by a convolution with kernel = stride = patch_size, plus a learnable
    positional map added position by position.

    (B, in_channels, H*p, W*p) -> patch -> (B, embedding_dim, H, W) -> + pos_embedding (1, embedding_dim, H, W)
    """

    def __init__(self, embedding_dim, num_patches, reduced_size, in_channels, patch_size, *,
                 dtype=np.float32, rng=None):
        super().__init__()
        dtype, rng = _as_float_dtype(dtype), _rng(rng)
        self.embedding_dim = _positive("embedding_dim", embedding_dim)
        self.in_channels = _positive("in_channels", in_channels)
        self.patch_size = _positive("patch_size", patch_size)
        self.reduced_size = _pair(reduced_size, "reduced_size")
        h, w = self.reduced_size
        if num_patches != h * w:
            raise ValueError(f"num_patches: expected reduced_size H*W = {h * w}, got {num_patches}")
        self.patch = Conv2d(in_channels, embedding_dim, patch_size, dtype=dtype, rng=rng)
        self._params["pos_embedding"] = rng.standard_normal((1, embedding_dim, h, w)).astype(dtype)

    def forward(self, x):
        p = self.patch_size
        check_input(x, "Embedding", self.in_channels, self.dtype,
                    (self.reduced_size[0] * p, self.reduced_size[1] * p))
        self._cache = True
        x = self.patch(x)  # (B, C, H, W), channels-last in memory (see Conv2d)
        x += self._params["pos_embedding"]  # in place, which keeps that layout
        return self._remember(x)

    def backward(self, dout):
        self._check_dout(dout)
        self._grads["pos_embedding"] = dout.sum(axis=0, keepdims=True)  # (1, C, H, W)
        return self.patch.backward(dout)


class MhSelfAttention(Module):
    """Multi-head self-attention between channels, built from 1x1 convolutions (the seed's).

    The seed's maths, per head: keys, queries, values are 1x1 convs of x viewed as (B, heads, hc, N),
    attend = queries @ keys^T * hc**-0.5 (B, heads, hc, hc), attention = softmax(attend, axis=-2)
    (over the query channels: each column sums to 1), out = attention @ values, then unify_heads.

    The code, as torch_vit's: every head at once, on (B, N, C) views of the channels-last k, q, v.
    attend = queries^T @ keys * scale            (B, C, C): every pair of channels; its (hc, hc)
                                                 diagonal blocks are the heads' attend
    pairs of two different heads set to -inf     so the softmax gives them exactly 0
    attention = softmax(attend, axis=-2)         each column sums to 1 over its own head's channels
    out = values @ attention^T                   (B, N, C), then unify_heads
    The same numbers as the per-head form, without its copies: per-head views of channels-last maps
    are not views, (B, N, C) ones are. The masked entries have probability 0, so their gradient is 0.
    """

    def __init__(self, in_channels, out_channels=512, head_channels=8, *, dtype=np.float32, rng=None):
        super().__init__()
        dtype, rng = _as_float_dtype(dtype), _rng(rng)
        self.in_channels = _positive("in_channels", in_channels)
        out_channels = _positive("out_channels", out_channels)
        self.head_channels = _positive("head_channels", head_channels)
        if out_channels % head_channels:
            raise ValueError(f"MhSelfAttention: out_channels {out_channels} must be divisible by "
                             f"head_channels, got head_channels {head_channels}")
        self.heads = out_channels // head_channels
        self.scale = head_channels ** -0.5

        self.k = Conv2d(in_channels, out_channels, 1, dtype=dtype, rng=rng)
        self.q = Conv2d(in_channels, out_channels, 1, dtype=dtype, rng=rng)
        self.v = Conv2d(in_channels, out_channels, 1, dtype=dtype, rng=rng)
        self.unify_heads = Conv2d(out_channels, out_channels, 1, dtype=dtype, rng=rng)

    def forward(self, x):
        check_input(x, "MhSelfAttention", self.in_channels, self.dtype)
        b, _, h, w = x.shape
        keys = tokens(self.k(x))  # (B, N, C)
        queries = tokens(self.q(x))
        values = tokens(self.v(x))

        head = np.arange(keys.shape[-1]) // self.head_channels  # the head of each channel
        attend = queries.swapaxes(1, 2) @ keys * self.scale  # (B, C, C): query channel i, key channel j
        np.copyto(attend, -np.inf, where=head[:, None] != head[None, :])  # only pairs within a head
        attention = softmax(attend, axis=-2)  # softmax along the query channels (of each head)

        out = values @ attention.swapaxes(1, 2)  # (B, N, C): out[..., i] = sum_j attention[i, j] values[..., j]
        # the 4th entry, each head's (hc, hc) block, is what torch_vit.attention reads
        self._cache = (keys, queries, values, head_blocks(attention, self.heads), attention, (b, h, w))
        out = out.reshape(b, h, w, -1).transpose(0, 3, 1, 2)  # (B, out_channels, H, W), channels-last
        return self._remember(self.unify_heads(out))

    def backward(self, dout):
        self._check_dout(dout)
        keys, queries, values, _, attention, (b, h, w) = self._saved()
        dout = tokens(self.unify_heads.backward(dout))  # (B, N, C)

        # out = values @ attention^T, so d attention = dout^T @ values and d values = dout @ attention
        dattention = dout.swapaxes(1, 2) @ values  # (B, C, C)
        dvalues = dout @ attention  # (B, N, C)
        # dL/dP for the unscaled P = queries^T keys (the forward's attend is S = P * scale): not dL/dS.
        # Masked pairs have attention 0, so softmax_backward gives them exactly 0.
        dattend = softmax_backward(dattention, attention, axis=-2) * self.scale
        # P = queries^T @ keys, so d queries = keys @ dP^T and d keys = queries @ dP
        dqueries = keys @ dattend.swapaxes(1, 2)  # (B, N, C)
        dkeys = queries @ dattend  # (B, N, C)

        shape = (b, h, w, -1)
        dx = self.k.backward(dkeys.reshape(shape).transpose(0, 3, 1, 2))  # (B, in_channels, H, W), channels-last
        dx += self.q.backward(dqueries.reshape(shape).transpose(0, 3, 1, 2))
        dx += self.v.backward(dvalues.reshape(shape).transpose(0, 3, 1, 2))
        return dx


def tokens(x):
    """(B, C, H, W) -> (B, N, C), N = H * W: a view when x is channels-last (a copy otherwise)."""
    b, c = x.shape[:2]
    return x.transpose(0, 2, 3, 1).reshape(b, -1, c)


def head_blocks(attention, heads):
    """(B, C, C) -> (B, heads, hc, hc): the diagonal (hc, hc) block of each head, the seed's per-head
    attention, as a read-only view (no copy)."""
    b, c, _ = attention.shape
    blocks = attention.reshape(b, heads, c // heads, heads, c // heads)  # (B, head of i, i, head of j, j)
    return np.diagonal(blocks, axis1=1, axis2=3).transpose(0, 3, 1, 2)  # (B, heads, hc, hc)


class FeedForward(Module):
    """The per-position MLP: 1x1 conv to expansion * out_channels, GELU, 1x1 conv back.

    (B, in, H, W) -> net.0 -> (B, 4*out, H, W) -> GELU -> net.2 -> (B, out, H, W)
    """

    def __init__(self, in_channels, out_channels, expansion=4, approximate="none", *,
                 dtype=np.float32, rng=None):
        super().__init__()
        dtype, rng = _as_float_dtype(dtype), _rng(rng)
        self.in_channels = _positive("in_channels", in_channels)
        hidden = _positive("expansion", expansion) * _positive("out_channels", out_channels)
        self.net = Sequential(
            Conv2d(in_channels, hidden, 1, dtype=dtype, rng=rng),
            GELU(approximate),
            Conv2d(hidden, out_channels, 1, dtype=dtype, rng=rng),
        )

    def forward(self, x):
        check_input(x, "FeedForward", self.in_channels, self.dtype)
        self._cache = True
        return self._remember(self.net(x))

    def backward(self, dout):
        self._check_dout(dout)
        return self.net.backward(dout)


class PreNormChannels(Module):
    """fn(LayerNorm over channels(x)); the residual is added by the Transformer."""

    def __init__(self, channels, fn, *, dtype=None):
        super().__init__()
        self.channels = _positive("channels", channels)
        dtype = fn.dtype if dtype is None else _as_float_dtype(dtype)
        self.lnorm = LayerNorm(channels, dtype=dtype)
        self.fn = fn

    def forward(self, x):
        check_input(x, "PreNormChannels", self.channels, self.dtype)
        self._cache = True
        return self._remember(self.fn(self.lnorm(x)))

    def backward(self, dout):
        self._check_dout(dout)
        return self.lnorm.backward(self.fn.backward(dout))


class Transformer(Module):
    """depth blocks, each ``x = attn(x) + x; x = ff(x) + x`` with pre-norm attention and MLP.
    layers.{i}.0 = PreNormChannels(MhSelfAttention), layers.{i}.1 = PreNormChannels(FeedForward).

    For attribution (numpy_vit.gradcam): ``forward`` leaves ``block_outputs[i]``, the x after block
    i's ``x = ff(x) + x``; with ``record_block_grads = True``, ``backward`` leaves ``block_grads[i]``,
    the gradient at that output (the residual's share included). Neither changes the maths."""

    def __init__(self, depth, head_channels, in_channels, out_channels, approximate="none", *,
                 dtype=np.float32, rng=None):
        super().__init__()
        dtype, rng = _as_float_dtype(dtype), _rng(rng)
        depth = _positive("depth", depth)
        self.in_channels = _positive("in_channels", in_channels)
        if out_channels != in_channels:
            raise ValueError(f"Transformer: the residual needs out_channels == in_channels, "
                             f"got {out_channels} and {in_channels}")
        self.layers = ModuleList([
            ModuleList([
                PreNormChannels(in_channels, MhSelfAttention(in_channels, out_channels, head_channels,
                                                             dtype=dtype, rng=rng)),
                PreNormChannels(out_channels, FeedForward(out_channels, out_channels, 4, approximate,
                                                          dtype=dtype, rng=rng)),
            ])
            for _ in range(depth)
        ])
        self.block_outputs = []  # block_outputs[i]: the output of block i, set by forward
        self.record_block_grads = False  # when True, backward fills block_grads
        self.block_grads = None  # block_grads[i]: the gradient at block_outputs[i]

    def forward(self, x):
        check_input(x, "Transformer", self.in_channels, self.dtype)
        self._cache = True
        self.block_outputs = []
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
            self.block_outputs.append(x)
        return self._remember(x)

    def backward(self, dout):
        self._check_dout(dout)
        grads = [None] * len(self.layers) if self.record_block_grads else None
        for i, (attn, ff) in reversed(list(enumerate(self.layers.items))):
            if grads is not None:
                grads[i] = dout  # the gradient at the output of block i
            dout = ff.backward(dout) + dout  # the residual carries dout past the block too
            dout = attn.backward(dout) + dout
        self.block_grads = grads
        return dout


def seed_config():
    """The seed's model, ViT(32, 2, 3, 32, 4, 8) with 59,818 parameters: its arguments as a new dict, the same
    for numpy_vit.ViT and torch_vit.ViT. ``convvit train`` and ``convvit check`` build it by default."""
    return dict(image_size=32, patch_size=2, in_channels=3, embedding_dim=32, depth=4, head_channels=8)


class ViT(Module):
    """The seed model: Embedding, Transformer, LayerNorm over channels, then the head
    GELU -> global average pool -> Flatten -> Linear(embedding_dim, num_classes).

    (B, in_channels, H*p, W*p) -> (B, C, H, W) -> ... -> (B, C, H, W) -> (B, num_classes)
    """

    def __init__(self, image_size, patch_size, in_channels, embedding_dim, depth, head_channels,
                 num_classes=10, *, approximate="none", dtype=np.float32, rng=None):
        super().__init__()
        dtype, rng = _as_float_dtype(dtype), _rng(rng)
        self.image_size = _pair(image_size, "image_size")
        patch_size = _positive("patch_size", patch_size)
        if self.image_size[0] % patch_size or self.image_size[1] % patch_size:
            raise ValueError(f"image_size {self.image_size} must be divisible by patch_size, "
                             f"got patch_size {patch_size}")
        embedding_dim = _positive("embedding_dim", embedding_dim)
        head_channels = _positive("head_channels", head_channels)
        if embedding_dim % head_channels:
            raise ValueError(f"embedding_dim {embedding_dim} must be divisible by head_channels, "
                             f"got head_channels {head_channels}")
        self.config = dict(image_size=self.image_size, patch_size=patch_size,
                           in_channels=_positive("in_channels", in_channels),
                           embedding_dim=embedding_dim, depth=_positive("depth", depth),
                           head_channels=head_channels,
                           num_classes=_positive("num_classes", num_classes), approximate=approximate)
        reduced_size = (self.image_size[0] // patch_size, self.image_size[1] // patch_size)
        num_patches = reduced_size[0] * reduced_size[1]

        self.embedding = Embedding(embedding_dim, num_patches, reduced_size, in_channels, patch_size,
                                   dtype=dtype, rng=rng)
        self.transformer = Transformer(depth, head_channels, embedding_dim, embedding_dim, approximate,
                                       dtype=dtype, rng=rng)
        self.norm = LayerNorm(embedding_dim, dtype=dtype)
        self.mlp_head = Sequential(
            GELU(approximate),
            AdaptiveAvgPool2d(1),
            Flatten(),
            Linear(embedding_dim, num_classes, dtype=dtype, rng=rng),
        )

    def forward(self, x):
        check_input(x, "ViT", self.config["in_channels"], self.dtype, self.image_size)
        self._cache = True
        x = self.embedding(x)  # (B, C, H, W)
        x = self.transformer(x)  # (B, C, H, W)
        x = self.norm(x)  # LayerNorm over the channels at every position
        return self._remember(self.mlp_head(x))  # (B, num_classes)

    def backward(self, dlogits):
        self._check_dout(dlogits)
        dx = self.mlp_head.backward(dlogits)
        dx = self.norm.backward(dx)
        dx = self.transformer.backward(dx)
        return self.embedding.backward(dx)
