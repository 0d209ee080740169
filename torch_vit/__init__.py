"""torch_vit: the seed's fully-convolutional ViT in PyTorch, with the seed's module and parameter
names, so that its checkpoints load with strict=True and its state dict moves to numpy_vit as is."""

from .checkpoint import export_npz, import_npz, load_checkpoint, pretrained, save_checkpoint
from .model import Embedding, FeedForward, MhSelfAttention, PreNormChannels, Transformer, ViT

__all__ = ["Embedding", "FeedForward", "MhSelfAttention", "PreNormChannels", "Transformer", "ViT",
           "export_npz", "import_npz", "load_checkpoint", "pretrained", "save_checkpoint"]
