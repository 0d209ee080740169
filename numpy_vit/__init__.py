"""numpy_vit: the seed's fully-convolutional ViT in NumPy alone, forward and hand-derived backward.

    m = ViT(32, 2, 3, 32, 4, 8, dtype=np.float64)
    logits = m.forward(x)                       # x: (B, 3, 32, 32)
    loss, dlogits = cross_entropy(logits, labels)
    dx = m.backward(dlogits)                    # m.grads[name] for every parameter

    m = pretrained()                            # the default recipe's trained weights, bundled
    images, labels, class_names = sample_images()   # ten CIFAR-10 test images, uint8
    logits = m.forward(normalize(images))

This package imports NumPy only, never torch.
"""

from .erf import erf
from .gradcam import grad_cam
from .io import check_state_dict, infer_config, load_npz, save_npz
from .loss import cross_entropy, log_softmax
from .model import Embedding, FeedForward, MhSelfAttention, PreNormChannels, Transformer, ViT, seed_config
from .nn import GELU, Conv2d, LayerNorm, Linear, Module, softmax, softmax_backward
from .pretrained import normalize, pretrained, pretrained_info, sample_images

__all__ = [
    "Conv2d", "Embedding", "FeedForward", "GELU", "LayerNorm", "Linear", "MhSelfAttention", "Module",
    "PreNormChannels", "Transformer", "ViT", "check_state_dict", "cross_entropy", "erf", "grad_cam",
    "infer_config", "load_npz", "log_softmax", "normalize", "pretrained", "pretrained_info", "sample_images",
    "save_npz", "seed_config", "softmax", "softmax_backward",
]
