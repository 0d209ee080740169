"""Grad-CAM (Selvaraju et al. 2017) for the NumPy ViT, with its own forward and hand-derived
backward, reproducing pytorch-grad-cam's ``GradCAM`` step for step (NumPy only).

    cams = grad_cam(model, images, target_classes)                 # (B, H, W) in [0, 1]
    cams, extras = grad_cam(model, images, targets, layer="embedding", return_raw=True)
    extras["raw"]   # (B, h, w) ReLU(sum_c w_c A_c) before any scaling
    extras["zero"]  # (B,) bool: the ReLU map is all zero (all evidence negative): cams[b] is blank

For each image b with target class t = target_classes[b] and S = logits[b, t]:
    A = the activations (B, C, h, w) at ``layer``, G = dS/dA (backward from a one-hot dlogits)
    weights[b, c] = mean over (i, j) of G[b, c, i, j]
    raw[b] = ReLU(sum_c weights[b, c] * A[b, c])
then pytorch-grad-cam's scaling, twice as the library does it for one target layer:
    scale_cam_image(raw, (W, H)):  per image (m - min) / (1e-7 + max), then cv2.resize bilinear
    aggregate_multi_layers:        ReLU, mean over the one layer, scale_cam_image again (no resize)
The resize is ``resize_bilinear``, a NumPy copy of cv2.resize(..., INTER_LINEAR) for upsampling;
the maps come back float32, as the library's do. The second scaling is not a no-op: upsampling by an
even factor puts no output pixel on a source centre, so an interior peak is lowered (and a zero
raised) by the interpolation, and the rescale stretches the map back to [0, 1) (by up to 25% on
random 8 x 8 maps upsampled to 16 x 16).

An all-zero ReLU map comes out all zero, not NaN: (0 - 0) / (1e-7 + 0) = 0. So does a constant
map (min == max): it is blank too. ``extras["zero"]`` flags the first case, ``extras["flat"]`` both.

Layers (``layer=``):
    None or "transformer"      the output of the last transformer block (= model.transformer's output)
    "embedding"                model.embedding's output (patch conv + positional map)
    "transformer.layers.{i}"   the output of block i, the x after ``x = ff(x) + x``
    "mlp_head.0"               the output of the head's GELU, the input of the global average pool.
                               There dS/dA[c, i, j] = W[t, c] / (h * w) at every position (W the head
                               Linear's weight), so the raw map is ReLU(CAM) / (h * w) with
                               CAM = sum_c W[t, c] A_c, Zhou et al.'s class activation map.
"""

import numpy as np

from .model import ViT

__all__ = ["check_targets", "grad_cam", "layer_names", "resize_bilinear", "resolve_layer", "scale_cam_image"]


def layer_names(model):
    """The layer names ``grad_cam`` accepts for ``model``, in the model's order."""
    depth = len(model.transformer.layers)
    return (["embedding"] + [f"transformer.layers.{i}" for i in range(depth)]
            + ["transformer", "mlp_head.0"])


def resolve_layer(model, layer):
    """The canonical layer name (None -> "transformer"); anything unknown raises one ValueError line.
    Works for the torch twin too (it only reads ``model.transformer.layers``)."""
    if layer is None:
        return "transformer"
    valid = layer_names(model)
    if not isinstance(layer, str) or layer not in valid:
        raise ValueError(f"grad_cam layer: expected None or one of {', '.join(valid)}; got {layer!r}")
    return layer


def _axis_coefficients(src, dst):
    """Source indices s, s1 = s + 1 and the weight t of s1 for each of ``dst`` outputs along one
    axis, cv2's INTER_LINEAR mapping with half-pixel centres: fx = (d + 0.5) * src / dst - 0.5 (in
    double), s = floor(fx), t = fx - s rounded to float32; at the edges the index is clamped to
    [0, src - 1] with t = 0 (the edge value is repeated)."""
    fx = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    s = np.floor(fx).astype(np.int64)
    t = fx - s
    low = s < 0
    s[low], t[low] = 0, 0.0
    high = s >= src - 1
    s[high], t[high] = src - 1, 0.0
    return s, np.minimum(s + 1, src - 1), t.astype(np.float32)


def _lerp(a, b, t):
    """a + t * (b - a). float32: one rounding of t * (b - a) + a (a fused multiply-add, emulated
    in float64, where t * (b - a) is exact), with b - a rounded first, as cv2's IPP kernel does."""
    if a.dtype == np.float32:
        d = (b - a).astype(np.float64)
        return (t.astype(np.float64) * d + a).astype(np.float32)
    return a + t.astype(a.dtype) * (b - a)


def resize_bilinear(img, size):
    """cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR) for a 2-d map and H >= h, W >= w
    (upsampling, or the same size: a copy). ``size`` is (H, W), NumPy's order (cv2 takes (W, H)).

    Per axis the source coordinate of output d is (d + 0.5) * src / dst - 0.5 (half-pixel centres,
    align_corners=False), the two neighbours s = floor and s + 1 weighted 1 - t and t, clamped at
    the edges. A horizontal pass over the source rows, then a vertical pass over the two rows each
    output row needs, each a + t * (b - a) as one fused multiply-add in float32. That is what the
    x86 opencv-python wheels run (their IPP kernel, on by default), reproduced bit for bit for a
    float32 map of at least 2 x 2; cv2's own kernel (``cv2.ipp.setUseIPP(False)``, or a one-row or
    one-column map) computes (1 - t) a + t b and differs by a few float32 ulps (<= 3e-7 on [0, 1]).
    A float64 map is interpolated in float64. Downsampling is refused: there cv2 switches method
    (INTER_AREA for an exact factor 2), which this does not copy; grad_cam never downsamples.
    """
    img = np.asarray(img)
    if img.ndim != 2:
        raise ValueError(f"resize_bilinear: expected a 2-d map (h, w), got shape {img.shape}")
    h, w = img.shape
    H, W = int(size[0]), int(size[1])
    if H < h or W < w:
        raise ValueError(f"resize_bilinear: upsampling only, got {img.shape} -> {(H, W)}")
    if img.dtype not in (np.float32, np.float64):
        img = img.astype(np.float32)
    xs0, xs1, tx = _axis_coefficients(w, W)
    ys0, ys1, ty = _axis_coefficients(h, H)
    rows = _lerp(img[:, xs0], img[:, xs1], tx[None, :])  # (h, W): the horizontal pass
    return _lerp(rows[ys0], rows[ys1], ty[:, None])  # (H, W): the vertical pass


def scale_cam_image(cam, target_size=None):
    """pytorch-grad-cam's ``utils.image.scale_cam_image`` for (B, h, w) maps, step for step: per map
    ``m - min``, ``/ (1e-7 + max)`` (in the maps' dtype), then, if ``target_size`` = (H, W) is given,
    the map cast to float32 and resized (cv2.resize there, ``resize_bilinear`` here); the stack is
    returned as float32. An all-zero map stays all zero (0 / 1e-7), a constant map becomes zero."""
    out = []
    for m in cam:
        m = m - np.min(m)
        m = m / (1e-7 + np.max(m))
        if target_size is not None:
            m = resize_bilinear(np.float32(m), target_size)
        out.append(m)
    return np.float32(out)


def _check_inputs(model, images, target_classes):
    if not isinstance(model, ViT):
        raise TypeError(f"grad_cam: expected a numpy_vit.ViT, got {type(model).__name__}")
    c = model.config["in_channels"]
    H, W = model.image_size
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[1:] != (c, H, W) \
            or images.shape[0] < 1:
        shape = images.shape if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"grad_cam images: expected an array (B, {c}, {H}, {W}) with B >= 1, got {shape}")
    if images.dtype != model.dtype:
        raise TypeError(f"grad_cam images: expected dtype {model.dtype} (the model's), got {images.dtype}")
    return check_targets(target_classes, images.shape[0], model.config["num_classes"])


def check_targets(target_classes, batch, num_classes):
    """``batch`` class indices in [0, num_classes) as an int64 array (one int is repeated), else one
    ValueError line naming the bad ones. Both GradCAM sides check their targets with it."""
    targets = np.asarray(target_classes)
    if targets.ndim == 0:
        targets = np.full(batch, targets)
    if targets.shape != (batch,) or targets.dtype.kind not in "iu":
        raise ValueError(f"grad_cam target_classes: expected {batch} integer classes (one per "
                         f"image), got {targets.dtype} array of shape {targets.shape}")
    bad = (targets < 0) | (targets >= num_classes)
    if bad.any():
        raise ValueError(f"grad_cam target_classes: expected classes in [0, {num_classes}), got "
                         f"{targets[bad].tolist()} at images {np.flatnonzero(bad).tolist()}")
    return targets.astype(np.int64)


class _Tap:
    """Record a module's output in forward and the upstream gradient in backward, by shadowing its
    bound forward/backward with instance attributes (NumPy's counterpart of a torch hook); ``close``
    removes them. Used for the layers that are whole modules (embedding, transformer, mlp_head.0)."""

    def __init__(self, module):
        self.module, self.output, self.grad = module, None, None
        forward, backward = module.forward, module.backward

        def tapped_forward(x):
            self.output = forward(x)
            return self.output

        def tapped_backward(dout):
            self.grad = dout
            return backward(dout)

        object.__setattr__(module, "forward", tapped_forward)
        object.__setattr__(module, "backward", tapped_backward)

    def close(self):
        for name in ("forward", "backward"):
            self.module.__dict__.pop(name, None)


def grad_cam(model, images, target_classes, layer=None, return_raw=False):
    """Grad-CAM maps (B, H, W), float in [0, 1], H x W the image size, equal to pytorch-grad-cam's
    ``GradCAM`` for the same layer and ``ClassifierOutputTarget(target_classes[b])`` per image.

    Args:
        model: a numpy_vit.ViT. Its forward and backward are run once; ``model.grads`` are overwritten.
        images: (B, in_channels, H, W) array of the model's dtype (normalised as for inference).
        target_classes: B ints (or one int for all) in [0, num_classes).
        layer: None (the last block's output), "embedding", "transformer.layers.{i}", "transformer"
            or "mlp_head.0"; anything else raises one ValueError line naming the valid ones.
        return_raw: also return ``extras``, a dict:
            raw (B, h, w): ReLU(sum_c mean_ij(G)_c A_c), before scaling, in the model's dtype;
            weights (B, C): mean_ij(G); activations (B, C, h, w) and gradients (B, C, h, w);
            zero (B,) bool: raw is all zero (every position's evidence <= 0), so the map is blank;
            flat (B,) bool: raw is constant (zero included), so the min-max scaling blanks it;
            logits (B, num_classes); layer: the resolved layer name.

    Returns: cams, or (cams, extras) with ``return_raw``.
    """
    targets = _check_inputs(model, images, target_classes)
    layer = resolve_layer(model, layer)
    transformer = model.transformer

    tap = None
    if layer == "embedding":
        tap = _Tap(model.embedding)
    elif layer == "transformer":
        tap = _Tap(transformer)
    elif layer == "mlp_head.0":
        tap = _Tap(model.mlp_head[0])
    was_recording = transformer.record_block_grads
    try:
        transformer.record_block_grads = layer.startswith("transformer.layers.")
        logits = model.forward(images)
        dlogits = np.zeros_like(logits)
        dlogits[np.arange(len(targets)), targets] = 1  # d(sum_b logits[b, t_b]) / d logits
        model.backward(dlogits)
        if tap is not None:
            acts, grads = tap.output, tap.grad
        else:
            i = int(layer.rsplit(".", 1)[1])
            acts, grads = transformer.block_outputs[i], transformer.block_grads[i]
    finally:
        transformer.record_block_grads = was_recording
        if not was_recording:
            transformer.block_grads = None  # held only while asked for
        if tap is not None:
            tap.close()

    weights = grads.mean(axis=(2, 3))  # (B, C): GradCAM's get_cam_weights
    raw = np.maximum((weights[:, :, None, None] * acts).sum(axis=1), 0)  # (B, h, w)
    cams = scale_cam_image(raw, model.image_size)  # compute_cam_per_layer
    cams = scale_cam_image(np.maximum(cams, 0))  # aggregate_multi_layers over the one layer
    if not return_raw:
        return cams
    flat = raw.max(axis=(1, 2)) == raw.min(axis=(1, 2))
    extras = dict(raw=raw, weights=weights, activations=acts, gradients=grads,
                  zero=~raw.any(axis=(1, 2)), flat=flat, logits=logits, layer=layer)
    return cams, extras
