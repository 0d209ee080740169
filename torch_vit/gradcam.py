"""Class activation maps for the torch ViT through pytorch-grad-cam (``pip install grad-cam``), and
a finder for the images worth looking at (misclassified or correctly classified ones).

    cams = torch_grad_cam(model, images, targets)                        # (B, H, W) in [0, 1]
    cams = torch_grad_cam(model, images, targets, layer="transformer.layers.0", method="gradcam++")
    found = find_images(model, data.test_x, data.test_y, n=10)          # the first 10 wrong ones
    found.indices, found.predicted, found.confidence

Target layers (the same names as ``numpy_vit.grad_cam``):
    None or "transformer"      model.transformer (its output = the last block's output)
    "embedding"                model.embedding (patch conv + positional map)
    "transformer.layers.{i}"   the output of block i. For i < depth - 1 no module outputs it (the
                               residual sum is computed inside Transformer.forward), so a temporary
                               tap, an ``nn.Identity`` outside the module tree, is fed by a forward
                               pre-hook on ``transformer.layers[i + 1][0]`` (the next block's
                               attention PreNorm); the library hooks the tap. Identity returns the
                               very tensor it is given, which the next block's residual also reads,
                               so the gradient the library records is the whole dS/d(block output).
    "mlp_head.0"               the head's GELU, the input of the global average pool (there GradCAM
                               is ReLU(CAM) / (h * w), Zhou et al.'s CAM for the class)

The state dict and module tree are never changed; the pre-hook is removed when the call ends.
"""

import contextlib
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from numpy_vit.gradcam import check_targets as np_check_targets
from numpy_vit.gradcam import resolve_layer

from .augment import CIFAR10_MEAN, CIFAR10_STD, normalize

# --method name -> pytorch_grad_cam class name (resolved when used, so that torch_vit imports
# without the library). Methods that need more than (model, target_layers) are left out:
# AblationCAM (an ablation layer per architecture), FullGrad (every bias), FinerCAM, ShapleyCAM.
METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "gradcamelementwise": "GradCAMElementWise",
    "scorecam": "ScoreCAM",
    "kpcacam": "KPCA_CAM",
}


def _cam_class(method):
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}; got {method!r}")
    import pytorch_grad_cam

    return getattr(pytorch_grad_cam, METHODS[method])


@contextlib.contextmanager
def target_module(model, layer=None):
    """Yield the module whose output is ``layer``'s activation (a tap for an inner block's output),
    removing the tap's pre-hook on exit."""
    layer = resolve_layer(model, layer)
    if layer == "embedding":
        yield model.embedding
        return
    if layer == "mlp_head.0":
        yield model.mlp_head[0]
        return
    depth = len(model.transformer.layers)
    i = depth - 1 if layer == "transformer" else int(layer.rsplit(".", 1)[1])
    if i == depth - 1:
        yield model.transformer
        return
    tap = nn.Identity()  # not assigned to the model: no new module, no new state-dict name

    def feed_tap(module, args):
        return (tap(args[0]),) + tuple(args[1:])  # tap's output (the same tensor) goes on downstream

    handle = model.transformer.layers[i + 1][0].register_forward_pre_hook(feed_tap)
    try:
        yield tap
    finally:
        handle.remove()


def _check_images(model, images):
    c, (H, W) = model.config["in_channels"], model.config["image_size"]
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (c, H, W) \
            or images.shape[0] < 1 or not images.is_floating_point():
        what = (f"{images.dtype} of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor)
                else type(images).__name__)
        raise ValueError(f"grad_cam images: expected a float tensor (B, {c}, {H}, {W}) with B >= 1 "
                         f"(normalised as for inference), got {what}")
    p = next(model.parameters())
    return images.to(device=p.device, dtype=p.dtype)


def check_targets(target_classes, batch, num_classes):
    """numpy_vit.gradcam.check_targets as a list of ints, tensors accepted. (pytorch-grad-cam's
    context manager swallows an IndexError, so a bad class must not reach it.)"""
    if isinstance(target_classes, torch.Tensor):
        target_classes = target_classes.cpu().numpy()
    return [int(v) for v in np_check_targets(target_classes, batch, num_classes)]


def torch_grad_cam(model, images, target_classes, layer=None, method="gradcam", return_raw=False,
                   aug_smooth=False, eigen_smooth=False):
    """pytorch-grad-cam's maps (B, H, W) float32 in [0, 1] for ``ClassifierOutputTarget(c)`` per image.

    Args:
        model: a torch_vit.ViT (its train/eval mode is restored afterwards; the library sets eval).
        images: (B, C, H, W) float tensor or ndarray, normalised as for inference.
        target_classes: B ints (or one int) in [0, num_classes), or None for each image's predicted class.
        layer: see the module docstring; unknown names raise one ValueError line listing the valid ones.
        method: a key of METHODS (gradcam, gradcam++, eigencam, scorecam, xgradcam, layercam, ...).
        return_raw: also return ``extras``: raw (B, h, w), the library's own ``get_cam_image`` output
            after its ReLU, before any scaling; activations and gradients (B, C, h, w) as the library
            captured them (gradients None for gradient-free methods); zero (B,) bool, the raw map is
            all zero (the output map is then blank: the library scales 0 to 0); flat (B,) bool, the
            raw map is constant (also blanked by the min-max scaling); logits (B, num_classes).
    """
    images = _check_images(model, images)
    targets_list = None
    if target_classes is not None:
        targets_list = check_targets(target_classes, images.shape[0], model.config["num_classes"])
    if return_raw and aug_smooth:
        raise ValueError("torch_grad_cam: return_raw needs aug_smooth=False (one forward per call)")
    cam_class = _cam_class(method)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = None if targets_list is None else [ClassifierOutputTarget(c) for c in targets_list]
    was_training = model.training
    cams, raw, acts, grads, logits = None, [], None, None, None
    try:
        with target_module(model, layer) as module, cam_class(model=model, target_layers=[module]) as cam:
            if return_raw:
                get_cam_image = cam.get_cam_image

                def recording(*args, **kwargs):  # the library's unscaled map, as it computes it
                    out = get_cam_image(*args, **kwargs)
                    raw.append(out)
                    return out

                cam.get_cam_image = recording
            cams = cam(input_tensor=images, targets=targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
            if return_raw:
                ag = cam.activations_and_grads
                acts = ag.activations[0].numpy() if ag.activations else None
                grads = ag.gradients[0].numpy() if ag.gradients else None
                logits = cam.outputs.detach().cpu().numpy()
    finally:
        model.train(was_training)
    if cams is None:  # the library's __exit__ returns True on an IndexError: never a silent None
        raise RuntimeError("pytorch-grad-cam swallowed an IndexError; no maps were computed")
    if not return_raw:
        return cams
    raw = np.maximum(raw[0], 0)
    extras = dict(raw=raw, activations=acts, gradients=grads, logits=logits,
                  zero=~raw.any(axis=(1, 2)), flat=raw.max(axis=(1, 2)) == raw.min(axis=(1, 2)),
                  layer=resolve_layer(model, layer))
    return cams, extras


class Found(NamedTuple):
    """What ``find_images`` returns: image indices, predicted classes, softmax confidence of the
    prediction (all numpy, same length), and the labels of those images."""
    indices: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    labels: np.ndarray


def find_images(model, images_uint8, labels, n=10, correct=False, indices=None, per_class=None,
                mean=CIFAR10_MEAN, std=CIFAR10_STD, batch_size=256):
    """The first ``n`` images (in index order) that ``model`` gets wrong (``correct=True``: right),
    or, with ``per_class=K``, the first K such images of each true class, class by class (n then
    unused; a test split ordered by class, as an image folder's is, otherwise gives n images of its
    first class), or, with ``indices``, exactly those images in that order (n, per_class and correct
    then unused).

    images_uint8: (N, C, H, W) uint8 tensor or ndarray (torch_vit.data's layout), normalised here
    with ``mean``/``std`` as at evaluation. labels: (N,) ints. Inference runs in eval mode, in
    batches of ``batch_size``, without gradients, and (but for per_class) stops once n images are
    found; the model's mode is restored. Returns a Found(indices, predicted, confidence, labels);
    fewer rows than asked for if the data runs out.
    """
    x = torch.as_tensor(images_uint8)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if x.dim() != 4 or x.dtype != torch.uint8:
        raise ValueError(f"find_images: expected uint8 images (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
        raise ValueError(f"find_images: expected {x.shape[0]} integer labels, got {y.dtype} {y.shape}")
    if indices is not None:
        order = np.asarray(indices, dtype=np.int64).reshape(-1)
        if ((order < 0) | (order >= x.shape[0])).any():
            raise ValueError(f"find_images: indices must lie in [0, {x.shape[0]}), got {order.tolist()}")
    else:
        order = np.arange(x.shape[0])
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"find_images: n must be an int >= 0, got {n!r}")
    if per_class is not None:
        if indices is not None:
            raise ValueError("find_images: expected per_class or indices, got both")
        if not isinstance(per_class, (int, np.integer)) or per_class < 1:
            raise ValueError(f"find_images: per_class must be an int >= 1, got {per_class!r}")
    search_all = indices is not None or per_class is not None
    device = next(model.parameters()).device
    was_training = model.training
    keep_idx, keep_pred, keep_conf = [], [], []
    found = 0
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                if not search_all and found >= n:
                    break
                idx = order[start:start + batch_size]
                batch = normalize(x[torch.from_numpy(idx)].to(device), mean, std)
                probs = torch.softmax(model(batch).float(), dim=-1)
                conf, pred = probs.max(dim=-1)
                pred, conf = pred.cpu().numpy(), conf.cpu().numpy()
                sel = np.ones(len(idx), bool) if indices is not None else (pred == y[idx]) == bool(correct)
                keep_idx.append(idx[sel])
                keep_pred.append(pred[sel])
                keep_conf.append(conf[sel])
                found += int(sel.sum())
    finally:
        model.train(was_training)
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))
    idx, pred, conf = cat(keep_idx, np.int64), cat(keep_pred, np.int64), cat(keep_conf, np.float32)
    if per_class is not None:  # the first per_class of each class, class by class
        keep = np.concatenate([np.flatnonzero(y[idx] == c)[:per_class] for c in np.unique(y[idx])] or
                              [np.zeros(0, np.int64)])
        idx, pred, conf = idx[keep], pred[keep], conf[keep]
    elif indices is None:
        idx, pred, conf = idx[:n], pred[:n], conf[:n]
    return Found(idx, pred, conf, y[idx].astype(np.int64))
