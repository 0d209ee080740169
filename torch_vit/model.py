"""The seed's fully-convolutional ViT in PyTorch: its module and parameter names, its maths, and
the same constructor arguments as ``numpy_vit.model``, so the two read side by side and a state
dict moves between them unchanged.

Shapes: B batch, C channels (= embedding_dim), H x W the patch grid (the image is H*p x W*p, p the
patch size), N = H * W, hc = head_channels, heads = C // hc.
"""

import torch
import torch.nn.functional as F
from torch import nn

from numpy_vit.model import _pair, _positive


class Embedding(nn.Module):
    """(B, in_channels, H*p, W*p) -> patch -> (B, embedding_dim, H, W) -> + pos_embedding (1, C, H, W)"""

    def __init__(self, embedding_dim, num_patches, reduced_size, in_channels, patch_size):
        super().__init__()
        h, w = _pair(reduced_size, "reduced_size")
        if num_patches != h * w:
            raise ValueError(f"num_patches: expected reduced_size H*W = {h * w}, got {num_patches}")
        self.patch = nn.Conv2d(in_channels, embedding_dim, patch_size, stride=patch_size)
        self.pos_embedding = nn.Parameter(torch.randn(1, embedding_dim, h, w))

    def forward(self, x):
        x = self.patch(x)  # (B, C, H, W)
        return x + self.pos_embedding


class MhSelfAttention(nn.Module):
    """Attention between channels: softmax(q @ k^T * scale, dim=-2) @ v, per head (the seed's maths)."""

    def __init__(self, in_channels, out_channels=512, head_channels=8):
        super().__init__()
        if out_channels % head_channels:
            raise ValueError(f"MhSelfAttention: out_channels {out_channels} must be divisible by "
                             f"head_channels, got head_channels {head_channels}")
        self.head_channels = head_channels
        self.heads = out_channels // head_channels
        self.scale = head_channels ** -0.5

        self.k = nn.Conv2d(in_channels, out_channels, 1)
        self.q = nn.Conv2d(in_channels, out_channels, 1)
        self.v = nn.Conv2d(in_channels, out_channels, 1)
        self.unify_heads = nn.Conv2d(out_channels, out_channels, 1)

    def forward(self, x):
        """Every head at once, on (B, N, C) views of the channels-last k, q, v: one (C, C) product of all channel
        pairs, whose (hc, hc) diagonal blocks are the heads' q @ k^T (the seed's per-head ``attend``), the pairs of
        two different heads masked to -inf, so that the softmax gives them exactly 0 and each head's columns sum
        to one over its own query channels. The same maths as the seed's per-head form, which views k, q, v as
        (B, heads, hc, N): for channels-last maps those views make torch copy every operand of its batched
        products, where these (B, N, C) views are free (benchmarks/train_throughput.py measures the step)."""
        b, _, h, w = x.shape
        keys = tokens(self.k(x))  # (B, N, C)
        queries = tokens(self.q(x))
        values = tokens(self.v(x))

        head = torch.arange(keys.shape[-1], device=x.device) // self.head_channels  # the head of each channel
        attend = queries.transpose(1, 2) @ keys * self.scale  # (B, C, C): query channel i, key channel j
        attend = attend.masked_fill(head[:, None] != head[None, :], float("-inf"))  # only pairs within a head
        attention = F.softmax(attend, dim=-2)  # softmax along the query channels (of each head)

        out = values @ attention.transpose(1, 2)  # (B, N, C): out[..., i] = sum_j attention[i, j] values[..., j]
        out = out.view(b, h, w, -1).permute(0, 3, 1, 2)  # (B, out_channels, H, W), channels-last
        return self.unify_heads(out)


def tokens(x):
    """(B, C, H, W) -> (B, N, C), N = H * W: a view when x is channels-last (a copy otherwise)."""
    b, c = x.shape[:2]
    return x.permute(0, 2, 3, 1).reshape(b, -1, c)


class FeedForward(nn.Module):
    """(B, in, H, W) -> net.0 -> (B, 4*out, H, W) -> GELU -> net.2 -> (B, out, H, W)"""

    def __init__(self, in_channels, out_channels, expansion=4, approximate="none"):
        super().__init__()
        hidden = expansion * out_channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.GELU(approximate=approximate),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def forward(self, x):
        x = self.net[0](x)  # (B, 4*out, H, W)
        x = channels_elementwise(self.net[1], x)  # GELU
        return self.net[2](x)  # (B, out, H, W)


def channels_elementwise(fn, x):
    """An elementwise ``fn`` (GELU) of (B, C, H, W), applied to its (B, H, W, C) view: the same map, but for a
    channels-last x that view is contiguous, and torch's GELU runs much faster on it (forward and
    backward, measured in benchmarks/train_throughput.py) than on the channels-last strides themselves."""
    return fn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def channels_layer_norm(norm, x):
    """LayerNorm over the channels of (B, C, H, W) at every position. The seed writes
    ``norm(x.transpose(1, -1)).transpose(-1, 1)``; permuting to (B, H, W, C) instead is the same map
    (each position is normalised on its own, whatever the order of the positions), and for a
    channels-last x the permuted view is contiguous, so LayerNorm runs on it without a copy."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


class PreNormChannels(nn.Module):
    """fn(LayerNorm over channels(x))."""

    def __init__(self, channels, fn):
        super().__init__()
        self.lnorm = nn.LayerNorm(channels)
        self.fn = fn

    def forward(self, x):
        return self.fn(channels_layer_norm(self.lnorm, x))


class Transformer(nn.Module):
    """depth blocks of ``x = attn(x) + x; x = ff(x) + x``."""

    def __init__(self, depth, head_channels, in_channels, out_channels, approximate="none"):
        super().__init__()
        if out_channels != in_channels:
            raise ValueError(f"Transformer: the residual needs out_channels == in_channels, "
                             f"got {out_channels} and {in_channels}")
        self.layers = nn.ModuleList([
            nn.ModuleList([
                PreNormChannels(in_channels, MhSelfAttention(in_channels, out_channels, head_channels)),
                PreNormChannels(out_channels, FeedForward(out_channels, out_channels, 4, approximate)),
            ])
            for _ in range(depth)
        ])

    def forward(self, x):
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x


class ViT(nn.Module):
    """(B, in_channels, H*p, W*p) -> embedding -> transformer -> norm over channels -> mlp_head -> (B, num_classes)"""

    def __init__(self, image_size, patch_size, in_channels, embedding_dim, depth, head_channels,
                 num_classes=10, *, approximate="none"):
        super().__init__()
        image_size = _pair(image_size, "image_size")
        patch_size = _positive("patch_size", patch_size)
        if image_size[0] % patch_size or image_size[1] % patch_size:
            raise ValueError(f"image_size {image_size} must be divisible by patch_size, "
                             f"got patch_size {patch_size}")
        if embedding_dim % head_channels:
            raise ValueError(f"embedding_dim {embedding_dim} must be divisible by head_channels, "
                             f"got head_channels {head_channels}")
        self.config = dict(image_size=image_size, patch_size=patch_size, in_channels=in_channels,
                           embedding_dim=embedding_dim, depth=depth, head_channels=head_channels,
                           num_classes=num_classes, approximate=approximate)
        reduced_size = (image_size[0] // patch_size, image_size[1] // patch_size)
        num_patches = reduced_size[0] * reduced_size[1]

        self.embedding = Embedding(embedding_dim, num_patches, reduced_size, in_channels, patch_size)
        self.transformer = Transformer(depth, head_channels, embedding_dim, embedding_dim, approximate)
        self.norm = nn.LayerNorm(embedding_dim)
        self.mlp_head = nn.Sequential(
            nn.GELU(approximate=approximate),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(embedding_dim, num_classes),
        )

    def forward(self, x):
        c, size = self.config["in_channels"], self.config["image_size"]
        if x.dim() != 4 or x.shape[1] != c or tuple(x.shape[2:]) != size:
            raise ValueError(f"ViT: expected input (B, {c}, {size[0]}, {size[1]}), got {tuple(x.shape)}")
        x = self.embedding(x)  # (B, C, H, W)
        x = self.transformer(x)  # (B, C, H, W)
        x = channels_layer_norm(self.norm, x)  # (B, C, H, W)
        # in torch's default layout: the pooling's backward hands GELU's backward an NCHW gradient, and GELU's
        # backward is many times slower on a channels-last input with an NCHW gradient than on two of one layout
        return self.mlp_head(x.contiguous())  # (B, num_classes)
