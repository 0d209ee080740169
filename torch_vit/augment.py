"""Batched, per-image training augmentation: the seed's torchvision recipe on whole uint8 batches.

The seed augmented one PIL image at a time in worker processes. Here the training set is one uint8
tensor (N, 3, H, W) and every step works on a batch (B, C, H, W) on the model's device (CPU or CUDA),
while each image still gets its OWN random parameters (torchvision.transforms.v2 applied to a batch
would draw one set for the whole batch). Each step is split in two:

* ``sample_*_params``: draw the per-image parameters on the CPU from a ``torch.Generator``, with the
  distribution of the torchvision transform (same attempts, rounding and fallbacks), and
* ``apply_*`` / ``resized_crop`` / ``erase``: apply given parameters to the batch, either with
  torchvision.transforms.v2.functional on sub-batches that share parameters (RandAugment: one call
  per op and sign) or with vectorized torch code where parameters differ per image (crop boxes,
  jitter factors, erasing rectangles), written to reproduce torchvision's arithmetic.

The random stream is not the one a per-image torchvision loop would consume (draws are batched),
but the distribution is, and a batch is a function of the generator state alone: the same seed or a
restored ``generator.get_state()`` gives the same batch. The number of draws per call depends only on
the batch size, never on the images or on earlier draws.

``Augment.seed_recipe()`` is the seed's pipeline: RandomResizedCrop(32, scale=(0.75, 1), ratio=(1, 1)),
RandomHorizontalFlip(0.5), RandAugment(1, 8), ColorJitter(0.1, 0.1, 0.1), ToTensor + Normalize,
RandomErasing(0.25).
"""

import math
from functools import lru_cache

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "RAND_AUGMENT_OPS", "Augment", "apply_color_jitter",
           "apply_rand_augment", "color_jitter", "erase", "eval_transform", "horizontal_flip",
           "normalize", "pad_crop", "rand_augment", "rand_augment_space", "random_erasing", "random_resized_crop",
           "resized_crop", "sample_color_jitter_params", "sample_crop_params", "sample_erasing_params",
           "sample_flip_params", "sample_pad_crop_params", "sample_rand_augment_params"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)

# torchvision's RandAugment._augmentation_space, in its order (the op index drawn is into this list).
RAND_AUGMENT_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
                    "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
JITTER_OPS = ("brightness", "contrast", "saturation")


# ----------------------------------------------------------------------------------------- helpers

def _check_images(x, name, kind="uint8"):
    """A (B, C, H, W) batch of ``kind`` "uint8", "float" or "any" dtype, or one-line errors."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a (B, C, H, W) tensor, got {got}")
    if kind == "uint8" and x.dtype != torch.uint8:
        raise TypeError(f"{name}: expected a uint8 batch, got {x.dtype}")
    if kind == "float" and not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point batch, got {x.dtype}")


def _check_generator(generator):
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"augment: the generator must be on the CPU, got {generator.device}")


def _pair(v, name):
    if v is None or len(v) != 2 or not v[0] <= v[1]:
        raise ValueError(f"{name}: expected (min, max) with min <= max, got {v}")
    return float(v[0]), float(v[1])


def _padding(v, name):
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{name}: expected a padding in pixels, an int >= 0, got {v!r}")
    return v


def _randint_below(high, generator):
    """One integer uniform on [0, high) per entry of the int64 tensor ``high`` (>= 1)."""
    u = torch.rand(high.shape, dtype=torch.float64, generator=generator)
    return torch.minimum((u * high).floor().long(), high - 1)


def _first_valid(ok, *values):
    """For each row, the values at the first True column of ``ok`` (column 0 where none is)."""
    first = ok.to(torch.uint8).argmax(1, keepdim=True)
    return [v.gather(1, first).squeeze(1) for v in values]


def _box_attempts(n, height, width, scale, ratio, attempts, generator):
    """torchvision's attempt draws: area = H*W*U(scale), aspect = exp(U(log ratio)), in float32 as
    torchvision draws them, then the size arithmetic in float64 as its Python code does it.
    Returns (sqrt(area * aspect), sqrt(area / aspect)) rounded half to even, (n, attempts) each."""
    lo, hi = _pair(scale, "scale")
    r0, r1 = _pair(ratio, "ratio")
    log_ratio = torch.log(torch.tensor((r0, r1)))
    area = height * width * torch.empty(n, attempts).uniform_(lo, hi, generator=generator).double()
    aspect = torch.exp(torch.empty(n, attempts).uniform_(float(log_ratio[0]), float(log_ratio[1]),
                                                         generator=generator)).double()
    return torch.sqrt(area * aspect).round().long(), torch.sqrt(area / aspect).round().long()


# ------------------------------------------------------------------------ 1. RandomResizedCrop

def sample_crop_params(n, height, width, scale, ratio, generator=None, attempts=10):
    """Per-image boxes of RandomResizedCrop.get_params (v1): up to ``attempts`` draws of area and
    aspect, the first that fits is kept, else the central-crop fallback. Returns int64 (n,) tensors
    (top i, left j, height h, width w) on the CPU."""
    _check_generator(generator)
    w, h = _box_attempts(n, height, width, scale, ratio, attempts, generator)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    h, w = _first_valid(ok, h, w)
    found = ok.any(1)
    # the fallback, computed as torchvision does
    r0, r1 = _pair(ratio, "ratio")
    in_ratio = float(width) / float(height)
    if in_ratio < r0:
        fw, fh = width, int(round(width / r0))
    elif in_ratio > r1:
        fw, fh = int(round(height * r1)), height
    else:
        fw, fh = width, height
    h = torch.where(found, h, torch.full_like(h, fh))
    w = torch.where(found, w, torch.full_like(w, fw))
    i = _randint_below(height - h + 1, generator)
    j = _randint_below(width - w + 1, generator)
    i = torch.where(found, i, torch.full_like(i, (height - fh) // 2))
    j = torch.where(found, j, torch.full_like(j, (width - fw) // 2))
    return i, j, h, w


def _resize_taps(start, length, in_size, out_size):
    """Taps of torch's (and PIL's) antialiased bilinear resize of the crop [start, start + length)
    of an axis of ``in_size`` pixels to ``out_size``, per image: (index, weight), (n, out_size, K)
    int64 and float32, where K is the widest window in the batch (2 when upsampling). The triangle
    filter is widened by the scale when downsampling and renormalised over the window inside the
    crop; padding taps have weight 0. Computed on the CPU in float64 as torch computes them."""
    start = start.to(torch.float64)[:, None, None]
    length = length.to(torch.float64)[:, None, None]
    scale = length / out_size
    support = torch.where(scale >= 1, scale, torch.ones_like(scale))
    invscale = torch.where(scale >= 1, 1.0 / scale, torch.ones_like(scale))
    center = scale * (torch.arange(out_size, dtype=torch.float64)[None, :, None] + 0.5)
    xmin = (center - support + 0.5).floor().clamp(min=0)
    xsize = torch.minimum((center + support + 0.5).floor(), length) - xmin
    k = torch.arange(int(xsize.max()), dtype=torch.float64)
    wts = (1.0 - ((k + xmin - center + 0.5) * invscale).abs()).clamp(min=0.0) * (k < xsize)
    wts = wts / wts.sum(-1, keepdim=True)
    index = (start + torch.minimum(xmin + k, length - 1)).long()
    return index, wts.to(torch.float32)


def _resize_rows(x, index, wts):
    """One separable pass of ``resized_crop`` along dim 1 of float x (B, L, R): output row s of
    image b is sum_t wts[b, s, t] * x[b, index[b, s, t]] (taps added in order). -> (B, S, R).
    Rows are gathered whole (index_select), which is what makes the pass fast."""
    b, length, rest = x.shape
    s, k = wts.shape[1:]
    rows = (index + torch.arange(b, device=x.device).view(b, 1, 1) * length).transpose(1, 2).reshape(-1)
    taps = x.reshape(b * length, rest).index_select(0, rows).view(b, k, s, rest)
    wts = wts.transpose(1, 2).reshape(b, k, s, 1)
    out = taps[:, 0] * wts[:, 0]
    for t in range(1, k):
        out.addcmul_(taps[:, t], wts[:, t])
    return out


def resized_crop(x, i, j, h, w, size):
    """Crop box (i[k], j[k], h[k], w[k]) of image k and resize it to ``size`` (int or (sh, sw)),
    bilinear with antialias, for the whole batch at once (per-image taps, gathered).
    x: (B, C, H, W) uint8 -> (B, C, sh, sw) uint8; i, j, h, w: int64 (B,) on the CPU.

    Like PIL (the seed resized PIL images) and torchvision's native uint8 CPU kernel, it resizes
    horizontally, rounds half up to uint8, then vertically and rounds again; when upsampling (the
    seed's case) the weights are dyadic, so the sums are exact and the result equals both. On CUDA
    torchvision resizes in float with one rounding: at most 1 grey level from this."""
    _check_images(x, "resized_crop")
    sh, sw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    b, c, height, width = x.shape
    if b == 0:
        return x.new_empty((0, c, sh, sw))
    iy, wy = (t.to(x.device) for t in _resize_taps(torch.as_tensor(i), torch.as_tensor(h), height, sh))
    ix, wx = (t.to(x.device) for t in _resize_taps(torch.as_tensor(j), torch.as_tensor(w), width, sw))
    cols = x.permute(0, 3, 1, 2).to(torch.float32).contiguous().view(b, width, c * height)  # (B, W, C*H)
    out = _resize_rows(cols, ix, wx).add_(0.5).floor_().clamp_(0, 255)            # (B, sw, C*H)
    rows = out.view(b, sw, c, height).permute(0, 3, 2, 1).reshape(b, height, c * sw)  # (B, H, C*sw)
    out = _resize_rows(rows, iy, wy).add_(0.5).floor_().clamp_(0, 255)            # (B, sh, C*sw)
    return out.view(b, sh, c, sw).permute(0, 2, 1, 3).to(torch.uint8, memory_format=torch.contiguous_format)


def random_resized_crop(x, size, scale, ratio, generator=None, return_params=False):
    """RandomResizedCrop(size, scale, ratio) (bilinear, antialias) with a box per image. x: (B, C, H, W)
    uint8 -> (B, C, size, size) uint8 (size an int or (sh, sw)); with ``return_params`` also
    (i, j, h, w), int64 (B,) each."""
    _check_images(x, "random_resized_crop")
    params = sample_crop_params(x.shape[0], x.shape[2], x.shape[3], scale, ratio, generator)
    out = resized_crop(x, *params, size)
    return (out, params) if return_params else out


# ------------------------------------------------------------------ 1b. RandomCrop with padding

def sample_pad_crop_params(n, padding, generator=None):
    """Per-image offsets of RandomCrop(size=(H, W), padding) into the padded image: top i and left j,
    each uniform on {0, ..., 2 * padding} as RandomCrop.get_params draws them. int64 (n,) each, on the CPU."""
    _check_generator(generator)
    high = torch.full((n,), 2 * _padding(padding, "pad_crop") + 1, dtype=torch.int64)
    return _randint_below(high, generator), _randint_below(high, generator)


def pad_crop(x, padding, generator=None, return_params=False):
    """RandomCrop(size=(H, W), padding, fill=0) per image: the image shifted by up to ``padding`` pixels
    each way, zeros where the shift uncovers. x: (B, C, H, W) -> same shape and dtype; with
    ``return_params`` also (i, j), the offsets into the padded image."""
    _check_images(x, "pad_crop", "any")
    b, c, h, w = x.shape
    i, j = sample_pad_crop_params(b, padding, generator)  # checks the padding
    padded = torch.nn.functional.pad(x, (padding,) * 4)  # (B, C, H + 2p, W + 2p)
    rows = (i[:, None] + torch.arange(h)).to(x.device)  # (B, H)
    cols = (j[:, None] + torch.arange(w)).to(x.device)  # (B, W)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))  # (B, C, H, W + 2p)
    out = out.gather(3, cols[:, None, None, :].expand(b, c, h, w))  # (B, C, H, W)
    return (out, (i, j)) if return_params else out


# ---------------------------------------------------------------------- 2. RandomHorizontalFlip

def sample_flip_params(n, p, generator=None):
    """(n,) bool on the CPU: True where the image is flipped (``rand < p``, as torchvision)."""
    _check_generator(generator)
    return torch.rand(n, generator=generator) < p


def horizontal_flip(x, p, generator=None, return_params=False):
    """RandomHorizontalFlip(p) per image. x: (B, C, H, W) -> same shape and dtype."""
    _check_images(x, "horizontal_flip", "any")
    flip = sample_flip_params(x.shape[0], p, generator)
    out = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    return (out, flip) if return_params else out


# ------------------------------------------------------------------------------ 3. RandAugment

@lru_cache(maxsize=32)
def rand_augment_space(num_bins, height, width):
    """{op name: (magnitudes as Python floats, signed)}: torchvision's RandAugment._augmentation_space
    (same float32 linspaces, so the same magnitudes to the last bit); () for magnitude-free ops."""
    def floats(t):
        return tuple(float(v) for v in t)
    return {
        "Identity": ((), False),
        "ShearX": (floats(torch.linspace(0.0, 0.3, num_bins)), True),
        "ShearY": (floats(torch.linspace(0.0, 0.3, num_bins)), True),
        "TranslateX": (floats(torch.linspace(0.0, 150.0 / 331.0 * width, num_bins)), True),
        "TranslateY": (floats(torch.linspace(0.0, 150.0 / 331.0 * height, num_bins)), True),
        "Rotate": (floats(torch.linspace(0.0, 30.0, num_bins)), True),
        "Brightness": (floats(torch.linspace(0.0, 0.9, num_bins)), True),
        "Color": (floats(torch.linspace(0.0, 0.9, num_bins)), True),
        "Contrast": (floats(torch.linspace(0.0, 0.9, num_bins)), True),
        "Sharpness": (floats(torch.linspace(0.0, 0.9, num_bins)), True),
        "Posterize": (floats(8 - (torch.arange(num_bins) / ((num_bins - 1) / 4)).round().int()), False),
        "Solarize": (floats(torch.linspace(255.0, 0.0, num_bins)), False),
        "AutoContrast": ((), False),
        "Equalize": ((), False),
    }


def rand_augment_op(img, op_name, magnitude):
    """torchvision's autoaugment._apply_op (NEAREST, fill 0) with the v2 functional kernels, which
    accept a batch: every image of ``img`` (..., C, H, W) gets the same op and signed magnitude."""
    nearest = InterpolationMode.NEAREST
    if op_name == "ShearX":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(magnitude)), 0.0],
                         interpolation=nearest, fill=None, center=[0, 0])
    if op_name == "ShearY":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(magnitude))],
                         interpolation=nearest, fill=None, center=[0, 0])
    if op_name == "TranslateX":
        return TF.affine(img, angle=0.0, translate=[int(magnitude), 0], scale=1.0, interpolation=nearest,
                         shear=[0.0, 0.0], fill=None)
    if op_name == "TranslateY":
        return TF.affine(img, angle=0.0, translate=[0, int(magnitude)], scale=1.0, interpolation=nearest,
                         shear=[0.0, 0.0], fill=None)
    if op_name == "Rotate":
        return TF.rotate(img, magnitude, interpolation=nearest, fill=None)
    if op_name == "Brightness":
        return TF.adjust_brightness(img, 1.0 + magnitude)
    if op_name == "Color":
        return TF.adjust_saturation(img, 1.0 + magnitude)
    if op_name == "Contrast":
        return TF.adjust_contrast(img, 1.0 + magnitude)
    if op_name == "Sharpness":
        return TF.adjust_sharpness(img, 1.0 + magnitude)
    if op_name == "Posterize":
        return TF.posterize(img, int(magnitude))
    if op_name == "Solarize":
        return TF.solarize(img, magnitude)
    if op_name == "AutoContrast":
        return TF.autocontrast(img)
    if op_name == "Equalize":
        return TF.equalize(img)
    if op_name == "Identity":
        return img
    raise ValueError(f"rand_augment: unknown op {op_name!r}")


def sample_rand_augment_params(n, num_ops, generator=None):
    """(ops, negative): int64 (n, num_ops) op indices into RAND_AUGMENT_OPS, uniform; bool
    (n, num_ops), True where a signed op's magnitude is negated (probability 1/2, ignored for
    unsigned ops). On the CPU."""
    _check_generator(generator)
    ops = torch.randint(len(RAND_AUGMENT_OPS), (n, num_ops), generator=generator)
    negative = torch.randint(2, (n, num_ops), generator=generator).bool()
    return ops, negative


def apply_rand_augment(x, ops, negative, magnitude, num_magnitude_bins=31):
    """Apply the drawn ops (ops[k, r] is image k's r-th op) in rounds r; within a round, one v2
    functional call per (op, sign) on the sub-batch that drew it. x: (B, C, H, W) uint8 -> same."""
    _check_images(x, "rand_augment")
    space = rand_augment_space(num_magnitude_bins, x.shape[2], x.shape[3])
    if not 0 <= magnitude < num_magnitude_bins:
        raise ValueError(f"rand_augment: magnitude {magnitude} outside [0, {num_magnitude_bins})")
    out = x.clone()
    for r in range(ops.shape[1]):
        for k, name in enumerate(RAND_AUGMENT_OPS):
            magnitudes, signed = space[name]
            if name == "Identity":
                continue
            chosen = ops[:, r] == k
            mag = magnitudes[magnitude] if magnitudes else 0.0
            groups = ((chosen & ~negative[:, r], mag), (chosen & negative[:, r], -mag)) if signed else ((chosen, mag),)
            for sel, m in groups:
                idx = sel.nonzero().squeeze(1)
                if idx.numel():
                    idx = idx.to(x.device)
                    out.index_copy_(0, idx, rand_augment_op(out.index_select(0, idx), name, m))
    return out


def rand_augment(x, num_ops, magnitude, generator=None, num_magnitude_bins=31, return_params=False):
    """RandAugment(num_ops, magnitude, num_magnitude_bins) (NEAREST, fill 0) with an op and a sign
    drawn per image. x: (B, C, H, W) uint8 -> same; with ``return_params`` also (ops, negative)."""
    _check_images(x, "rand_augment")
    params = sample_rand_augment_params(x.shape[0], num_ops, generator)
    out = apply_rand_augment(x, *params, magnitude, num_magnitude_bins)
    return (out, params) if return_params else out


# ------------------------------------------------------------------------------ 4. ColorJitter

def _jitter_range(v, name):
    """ColorJitter._check_input: a number v gives [max(0, 1 - v), 1 + v]; (min, max) as is; None
    where the op is off (0 or (1, 1))."""
    if v is None:
        return None
    if isinstance(v, (int, float)):
        if v < 0:
            raise ValueError(f"color_jitter: {name} must be non-negative, got {v}")
        v = (max(0.0, 1.0 - v), 1.0 + v)
    lo, hi = _pair(v, f"color_jitter {name}")
    if lo < 0:
        raise ValueError(f"color_jitter: {name} range must be non-negative, got {v}")
    return None if lo == hi == 1.0 else (lo, hi)


def sample_color_jitter_params(n, brightness, contrast, saturation, generator=None):
    """(factors, order): float32 (n, 3) brightness/contrast/saturation factors, each uniform on its
    ColorJitter range (1.0 where that op is off), and int64 (n, 3) a uniform random permutation of
    (0 brightness, 1 contrast, 2 saturation) per image, the order they are applied in. CPU."""
    _check_generator(generator)
    ranges = [_jitter_range(v, name) for v, name in zip((brightness, contrast, saturation), JITTER_OPS)]
    order = torch.rand(n, 3, generator=generator).argsort(1)
    u = torch.empty(n, 3)
    for c, rng in enumerate(ranges):
        u[:, c].uniform_(*(rng or (0.0, 1.0)), generator=generator)
        if rng is None:
            u[:, c] = 1.0
    return u, order


def _blend(img, other, ratio):
    """v2 ``_blend`` on uint8 with a per-image ratio (n, 1, 1, 1) float32: img * r + other * (1 - r)
    where torchvision computes ``img.mul(r).add_(other, alpha=1 - r)``, i.e. a fused multiply-add with
    alpha = float32(1 - r in double); emulated in float64 (exact product), then clamp and truncate."""
    alpha = (1.0 - ratio.double()).float().double()
    scaled = img.to(torch.float32).mul(ratio).double()
    return scaled.add_(other.double() * alpha).to(torch.float32).clamp_(0, 255).to(torch.uint8)


def _grey(img):
    """floor of v2 rgb_to_grayscale (0.2989 r + 0.587 g + 0.114 b), as float32, (n, 1, H, W)."""
    return TF.rgb_to_grayscale(img, num_output_channels=1).to(torch.float32)


def _jitter_op(img, op, factor):
    if op == 0:   # v2 adjust_brightness: img.mul(f).clamp_(0, 255).to(uint8)
        return img.to(torch.float32).mul(factor).clamp_(0, 255).to(torch.uint8)
    if img.shape[1] == 1:  # grey images: contrast blends with the mean of the image itself
        if op == 2:
            return img
        return _blend(img, img.to(torch.float32).mean(dim=(-3, -2, -1), keepdim=True), factor)
    grey = _grey(img)
    if op == 1:   # v2 adjust_contrast: blend with the mean of the floored grey image
        return _blend(img, torch.mean(grey, dim=(-3, -2, -1), keepdim=True), factor)
    return _blend(img, grey, factor)   # v2 adjust_saturation: blend with the floored grey image


def apply_color_jitter(x, factors, order, enabled=(True, True, True)):
    """Apply brightness/contrast/saturation with per-image ``factors`` (B, 3) in per-image ``order``
    (B, 3): at step s, image k applies op order[k, s] with factor factors[k, order[k, s]], with
    torchvision v2's uint8 arithmetic (each op truncates back to uint8). x: (B, C, H, W) uint8."""
    _check_images(x, "color_jitter")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"color_jitter: expected 1 or 3 channels, got {x.shape[1]}")
    out = x.clone()
    factors = factors.to(torch.float32)
    for s in range(order.shape[1]):
        for op in range(3):
            if not enabled[op]:
                continue
            idx = (order[:, s] == op).nonzero().squeeze(1)
            if idx.numel():
                f = factors[idx, op].to(x.device)[:, None, None, None]
                idx = idx.to(x.device)
                out.index_copy_(0, idx, _jitter_op(out.index_select(0, idx), op, f))
    return out


def color_jitter(x, brightness, contrast, saturation, generator=None, return_params=False):
    """ColorJitter(brightness, contrast, saturation) with factors and order drawn per image.
    x: (B, C, H, W) uint8 -> same; with ``return_params`` also (factors, order)."""
    _check_images(x, "color_jitter")
    enabled = tuple(_jitter_range(v, n) is not None for v, n in zip((brightness, contrast, saturation), JITTER_OPS))
    params = sample_color_jitter_params(x.shape[0], brightness, contrast, saturation, generator)
    out = apply_color_jitter(x, *params, enabled=enabled)
    return (out, params) if return_params else out


# ------------------------------------------------------------------------ 5. ToTensor+Normalize

def normalize(x, mean=CIFAR10_MEAN, std=CIFAR10_STD):
    """ToTensor then Normalize: uint8 (B, C, H, W) -> float32 (x / 255 - mean) / std, with
    torchvision's operations in its order (``div(255)``, ``sub_(mean)``, ``div_(std)``)."""
    _check_images(x, "normalize")
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return x.to(torch.float32).div(255).sub_(mean).div_(std)


def eval_transform(x, mean=CIFAR10_MEAN, std=CIFAR10_STD):
    """The evaluation transform: normalize only. uint8 (B, C, H, W) -> float32 (B, C, H, W)."""
    return normalize(x, mean, std)


# ----------------------------------------------------------------------------- 6. RandomErasing

def sample_erasing_params(n, height, width, p, scale, ratio, generator=None, attempts=10):
    """Per-image RandomErasing: ``rand < p`` decides, then RandomErasing.get_params: up to
    ``attempts`` draws of area fraction U(scale) and aspect exp(U(log ratio)), h = round(sqrt(a*r)),
    w = round(sqrt(a/r)), the first with h < H and w < W is kept (none: the image is left alone),
    i, j uniform. Returns (erased bool, i, j, h, w) (n,) on the CPU; boxes of unerased rows are 0."""
    _check_generator(generator)
    if not 0 <= p <= 1:
        raise ValueError(f"random_erasing: p must be in [0, 1], got {p}")
    if not 0 <= scale[0] <= scale[1] <= 1:
        raise ValueError(f"random_erasing: scale must lie in [0, 1], got {scale}")
    apply = torch.rand(n, generator=generator) < p
    h, w = _box_attempts(n, height, width, scale, ratio, attempts, generator)
    ok = (h < height) & (w < width)
    h, w = _first_valid(ok, h, w)
    apply = apply & ok.any(1)
    h, w = torch.where(apply, h, 0), torch.where(apply, w, 0)
    i = _randint_below(height - h + 1, generator)
    j = _randint_below(width - w + 1, generator)
    return apply, torch.where(apply, i, 0), torch.where(apply, j, 0), h, w


def erase(x, apply, i, j, h, w, value=0.0):
    """Set the box (i, j, h, w) of each image where ``apply`` to ``value`` (a number or one per
    channel), as F.erase. x: (B, C, H, W) -> same shape and dtype."""
    _, c, height, width = x.shape
    dev = x.device
    apply, i, j, h, w = (t.to(dev) for t in (apply, i, j, h, w))
    rows = torch.arange(height, device=dev)
    cols = torch.arange(width, device=dev)
    in_rows = (rows >= i[:, None]) & (rows < (i + h)[:, None])          # (B, H)
    in_cols = (cols >= j[:, None]) & (cols < (j + w)[:, None])          # (B, W)
    mask = (apply[:, None, None] & in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)
    v = torch.as_tensor(value, dtype=x.dtype, device=dev)
    if v.ndim:
        if v.numel() not in (1, c):
            raise ValueError(f"random_erasing: value needs 1 or {c} entries, got {v.numel()}")
        v = v.view(1, -1, 1, 1)
    return torch.where(mask, v, x)


def random_erasing(x, p, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0, generator=None, return_params=False):
    """RandomErasing(p, scale, ratio, value) with a decision and a box per image. x: (B, C, H, W)
    float (normalized) -> same; with ``return_params`` also (erased, i, j, h, w)."""
    _check_images(x, "random_erasing", "float")
    if isinstance(value, str):
        raise ValueError("random_erasing: value='random' is not supported; give a number or one per channel")
    params = sample_erasing_params(x.shape[0], x.shape[2], x.shape[3], p, scale, ratio, generator)
    out = erase(x, *params, value=value)
    return (out, params) if return_params else out


# ---------------------------------------------------------------------------------- pipeline

class Augment:
    """The training pipeline: resized crop, padded crop (a shift), flip, RandAugment, color jitter (uint8),
    then normalize, then erasing (float), each step with per-image parameters; a disabled step (None or 0)
    is skipped.

    ``Augment(**config)`` with config keys crop_scale, crop_ratio, pad_crop, flip, randaugment,
    color_jitter, erasing, mean, std, size (an int or (height, width); ``config`` gives them back).
    ``aug(x_uint8, generator)``: (B, 3, H, W) uint8 -> (B, 3, size, size) float32, normalized."""

    def __init__(self, crop_scale=None, flip=0.0, randaugment=None, color_jitter=None, erasing=0.0,
                 mean=CIFAR10_MEAN, std=CIFAR10_STD, size=32, crop_ratio=(1.0, 1.0), pad_crop=0):
        self.crop_scale = None if crop_scale is None else _pair(crop_scale, "crop_scale")
        self.crop_ratio = _pair(crop_ratio, "crop_ratio")
        self.pad_crop = _padding(pad_crop, "Augment: pad_crop")
        self.flip = float(flip or 0.0)
        self.randaugment = None if randaugment is None else (int(randaugment[0]), int(randaugment[1]))
        self.color_jitter = None if color_jitter is None else tuple(float(v) for v in color_jitter)
        self.erasing = float(erasing or 0.0)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.size = int(size) if isinstance(size, int) else tuple(int(v) for v in size)
        if isinstance(self.size, tuple) and len(self.size) != 2:
            raise ValueError(f"Augment: size is an int or (height, width), got {size}")
        if not 0 <= self.flip <= 1 or not 0 <= self.erasing <= 1:
            raise ValueError(f"Augment: flip and erasing are probabilities, got {self.flip} and {self.erasing}")
        if self.color_jitter is not None and len(self.color_jitter) != 3:
            raise ValueError(f"Augment: color_jitter is (brightness, contrast, saturation), got {color_jitter}")
        if self.randaugment is not None and not (self.randaugment[0] >= 0 and 0 <= self.randaugment[1] < 31):
            raise ValueError(f"Augment: randaugment is (num_ops >= 0, magnitude in [0, 31)), got {randaugment}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"Augment: mean and std need one entry per channel and std > 0, got {mean}, {std}")

    @classmethod
    def seed_recipe(cls, mean=CIFAR10_MEAN, std=CIFAR10_STD, size=32):
        """The seed's pipeline: RandomResizedCrop(32, (0.75, 1), (1, 1)), flip 0.5, RandAugment(1, 8),
        ColorJitter(0.1, 0.1, 0.1), ToTensor + Normalize(CIFAR-10), RandomErasing(0.25)."""
        return cls(crop_scale=(0.75, 1.0), flip=0.5, randaugment=(1, 8), color_jitter=(0.1, 0.1, 0.1),
                   erasing=0.25, mean=mean, std=std, size=size)

    @property
    def config(self):
        """The constructor's arguments as a plain dict (``Augment(**aug.config)`` rebuilds it)."""
        return {"crop_scale": self.crop_scale, "crop_ratio": self.crop_ratio, "pad_crop": self.pad_crop,
                "flip": self.flip, "randaugment": self.randaugment, "color_jitter": self.color_jitter,
                "erasing": self.erasing, "mean": self.mean, "std": self.std, "size": self.size}

    @property
    def _size_hw(self):
        return (self.size, self.size) if isinstance(self.size, int) else self.size

    def __repr__(self):
        return "Augment(" + ", ".join(f"{k}={v!r}" for k, v in self.config.items()) + ")"

    def __call__(self, x, generator=None):
        """x: (B, C, H, W) uint8 on any device; generator: a CPU torch.Generator (None: torch's global
        one). Returns the augmented, normalized float32 batch (B, C, size, size) on x's device."""
        _check_images(x, "Augment")
        _check_generator(generator)
        if self.crop_scale is not None:
            x = random_resized_crop(x, self.size, self.crop_scale, self.crop_ratio, generator)
        elif tuple(x.shape[2:]) != self._size_hw:
            raise ValueError(f"Augment: images are {tuple(x.shape[2:])} but size is {self.size} "
                             "and no crop resizes them")
        if self.pad_crop > 0:
            x = pad_crop(x, self.pad_crop, generator)
        if self.flip > 0:
            x = horizontal_flip(x, self.flip, generator)
        if self.randaugment is not None:
            x = rand_augment(x, *self.randaugment, generator)
        if self.color_jitter is not None:
            x = color_jitter(x, *self.color_jitter, generator)
        x = normalize(x, self.mean, self.std)
        if self.erasing > 0:
            x = random_erasing(x, self.erasing, generator=generator)
        return x

    def eval(self, x):
        """The evaluation transform with this pipeline's mean and std (normalize only)."""
        return normalize(x, self.mean, self.std)
