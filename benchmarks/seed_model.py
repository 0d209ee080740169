"""The plain seed model, re-typed from the seed design (../shared/seed/seed-design.md, RECIPE.md):
NCHW memory, eager PyTorch, the seed's ``transpose(1, -1)`` LayerNorm, no fused anything. It is the
reference that ``train_throughput.py`` measures convvit's training step against, alternating step by
step in one run, so that a speed-up is a ratio any machine reproduces.

Its state-dict keys are the seed's, the same as torch_vit.model.ViT's, so one state dict loads into
both (``parity_tests/test_seed_model.py`` checks that they compute the same function).
"""

import torch
import torch.nn.functional as F
from torch import nn


class Embedding(nn.Module):
    def __init__(self, embedding_dim, num_patches, reduced_size, in_channels, patch_size):
        super().__init__()
        self.patch = nn.Conv2d(in_channels, embedding_dim, patch_size, stride=patch_size)
        self.pos_embedding = nn.Parameter(torch.randn(1, embedding_dim, reduced_size, reduced_size))

    def forward(self, x):
        return self.patch(x) + self.pos_embedding


class MhSelfAttention(nn.Module):
    def __init__(self, in_channels, out_channels=512, head_channels=8):
        super().__init__()
        self.head_channels = head_channels
        self.heads = out_channels // head_channels
        self.scale = head_channels ** -0.5
        self.k = nn.Conv2d(in_channels, out_channels, 1)
        self.q = nn.Conv2d(in_channels, out_channels, 1)
        self.v = nn.Conv2d(in_channels, out_channels, 1)
        self.unify_heads = nn.Conv2d(out_channels, out_channels, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        keys = self.k(x).view(b, self.heads, self.head_channels, -1)
        queries = self.q(x).view(b, self.heads, self.head_channels, -1)
        values = self.v(x).view(b, self.heads, self.head_channels, -1)
        attend = queries @ keys.transpose(-2, -1) * self.scale
        attention = F.softmax(attend, dim=-2)
        out = attention @ values
        out = out.view(b, -1, h, w)
        return self.unify_heads(out)


class FeedForward(nn.Module):
    def __init__(self, in_channels, out_channels, expansion=4):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, expansion * out_channels, 1), nn.GELU(),
                                 nn.Conv2d(expansion * out_channels, out_channels, 1))

    def forward(self, x):
        return self.net(x)


class PreNormChannels(nn.Module):
    def __init__(self, channels, fn):
        super().__init__()
        self.lnorm = nn.LayerNorm(channels)
        self.fn = fn

    def forward(self, x):
        x = x.transpose(1, -1)
        x = self.lnorm(x)
        x = x.transpose(-1, 1)
        return self.fn(x)


class Transformer(nn.Module):
    def __init__(self, depth, head_channels, in_channels, out_channels):
        super().__init__()
        self.layers = nn.ModuleList([
            nn.ModuleList([PreNormChannels(in_channels, MhSelfAttention(in_channels, out_channels, head_channels)),
                           PreNormChannels(out_channels, FeedForward(out_channels, out_channels))])
            for _ in range(depth)])

    def forward(self, x):
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x


class ViT(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embedding_dim, depth, head_channels):
        super().__init__()
        reduced_size = image_size // patch_size
        num_patches = (image_size * image_size) // (patch_size * patch_size)
        self.embedding = Embedding(embedding_dim, num_patches, reduced_size, in_channels, patch_size)
        self.transformer = Transformer(depth, head_channels, embedding_dim, embedding_dim)
        self.norm = nn.LayerNorm(embedding_dim)
        self.mlp_head = nn.Sequential(nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(embedding_dim, 10))

    def forward(self, x):
        x = self.embedding(x)
        x = self.transformer(x)
        x = x.transpose(1, -1)
        x = self.norm(x)
        x = x.transpose(-1, 1)
        return self.mlp_head(x)


def seed_vit():
    """The seed's model: ViT(image_size=32, patch_size=2, in_channels=3, embedding_dim=32, depth=4, head_channels=8)."""
    return ViT(image_size=32, patch_size=2, in_channels=3, embedding_dim=32, depth=4, head_channels=8)
