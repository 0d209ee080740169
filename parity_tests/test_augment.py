"""torch_vit.augment against torchvision: each batched step equals torchvision's definition applied to
each image alone with the parameters the step drew; the drawn parameters follow torchvision's
distributions; batches are reproducible from the generator and parameters are drawn per image."""

import math
import platform

import pytest
import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import autoaugment
from torchvision.transforms import functional as F1
from torchvision.transforms.v2 import functional as TF

from torch_vit import augment as A

SIGMAS = 5  # distribution checks: |observed - expected| < 5 standard deviations


def make_images(n=48, size=32, seed=0):
    """uint8 (n, 3, size, size): half smooth (upsampled noise, like photos), half white noise."""
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, size // 4, size // 4, generator=g) * 255,
                                             size=size, mode="bicubic", align_corners=False)
    x = smooth.round().clamp(0, 255).to(torch.uint8)
    x[n // 2:] = torch.randint(0, 256, (n - n // 2, 3, size, size), generator=g, dtype=torch.uint8)
    return x


def gen(seed):
    return torch.Generator().manual_seed(seed)


def within(count, n, p):
    """count of n Bernoulli(p) draws is within SIGMAS standard deviations of n p."""
    return abs(count - n * p) < SIGMAS * math.sqrt(n * p * (1 - p))


def native_uint8_resize():
    """Whether torchvision's resize of a uint8 CPU tensor uses torch's native uint8 kernel (two
    rounded passes, like PIL) rather than a float resize with one rounding (its rule)."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64")


# --------------------------------------------------------------------------------- equality

@pytest.mark.parametrize("scale,ratio", [((0.75, 1.0), (1.0, 1.0)), ((0.08, 1.0), (3 / 4, 4 / 3))])
def test_crop_equals_torchvision_and_pil(scale, ratio):
    """Exact against PIL (what the seed ran) and torchvision's uint8 CPU kernel (both resize
    horizontally, round to uint8, then vertically); within 1 grey level of torchvision's float path
    (one rounding), which is what torchvision runs on CUDA."""
    x = make_images()
    out, (i, j, h, w) = A.random_resized_crop(x, 32, scale, ratio, gen(1), return_params=True)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    boxes = [(int(i[k]), int(j[k]), int(h[k]), int(w[k])) for k in range(len(x))]
    assert len(set(boxes)) > len(x) // 2
    pil = torch.stack([F1.pil_to_tensor(F1.resized_crop(F1.to_pil_image(x[k]), *boxes[k], [32, 32],
                                                        InterpolationMode.BILINEAR)) for k in range(len(x))])
    assert torch.equal(out, pil)
    tv = torch.stack([TF.resized_crop(x[k], *boxes[k], [32, 32], InterpolationMode.BILINEAR, antialias=True)
                      for k in range(len(x))])
    if native_uint8_resize():
        assert torch.equal(out, tv)
    assert (out.int() - tv.int()).abs().max() <= 1
    tv_float = torch.stack([TF.resized_crop(x[k].float(), *boxes[k], [32, 32], InterpolationMode.BILINEAR,
                                            antialias=True) for k in range(len(x))]).round().to(torch.uint8)
    assert (out.int() - tv_float.int()).abs().max() <= 1


def test_crop_downsampling_within_one_grey_level():
    """Downsampling (crop larger than the output) uses the widened antialias filter; its weights are
    not dyadic, so the fixed-point kernels may round the other way: within 1 grey level."""
    x = make_images(16, 64, seed=3)
    out, (i, j, h, w) = A.random_resized_crop(x, 24, (0.3, 1.0), (3 / 4, 4 / 3), gen(2), return_params=True)
    assert out.shape == (16, 3, 24, 24)
    for k in range(16):
        ref = TF.resized_crop(x[k], int(i[k]), int(j[k]), int(h[k]), int(w[k]), [24, 24], antialias=True)
        diff = (out[k].int() - ref.int()).abs()
        assert diff.max() <= 1 and diff.float().mean() < 0.05


def test_flip_equals_torchvision():
    x = make_images()
    out, flip = A.horizontal_flip(x, 0.5, gen(3), return_params=True)
    assert 0 < flip.sum() < len(x)
    for k in range(len(x)):
        assert torch.equal(out[k], TF.horizontal_flip(x[k]) if flip[k] else x[k])


@pytest.mark.parametrize("padding,height,width", [(0, 32, 32), (2, 32, 32), (4, 24, 40)])
def test_pad_crop_equals_torchvision(padding, height, width):
    """RandomCrop((H, W), padding) is pad with zeros, then crop at the drawn offsets (v2's definition)."""
    x = make_images(24, 40)[:, :, :height, :width]
    out, (i, j) = A.pad_crop(x, padding, gen(4), return_params=True)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for k in range(len(x)):
        assert torch.equal(out[k], TF.crop(TF.pad(x[k], [padding]), int(i[k]), int(j[k]), height, width))


@pytest.mark.parametrize("height,width", [(32, 32), (24, 40)])
def test_rand_augment_table_is_torchvision(height, width):
    ours = A.rand_augment_space(31, height, width)
    theirs = T.RandAugment()._augmentation_space(31, (height, width))
    assert list(ours) == list(theirs) == list(A.RAND_AUGMENT_OPS)
    for name, (mags, signed) in theirs.items():
        assert ours[name][1] == signed
        expected = [float(v) for v in mags] if mags.ndim else []
        assert list(ours[name][0]) == expected, name


@pytest.fixture
def apply_op_v2(monkeypatch):
    """torchvision's own _apply_op (its magnitude conventions: atan for shears, int() for
    translations and posterize bits, center [0, 0] for shears) running the v2 functional kernels."""
    monkeypatch.setattr(autoaugment, "F", TF)
    return autoaugment._apply_op


@pytest.mark.parametrize("op", range(len(A.RAND_AUGMENT_OPS)), ids=list(A.RAND_AUGMENT_OPS))
@pytest.mark.parametrize("negative", [False, True], ids=["plus", "minus"])
def test_rand_augment_op_equals_torchvision(op, negative, apply_op_v2):
    """Batched (one sub-batch call) == torchvision's _apply_op on each image alone, magnitude 8 of
    31, with the v2 functional kernels: exact."""
    x = make_images(12)
    name = A.RAND_AUGMENT_OPS[op]
    ops = torch.full((len(x), 1), op)
    neg = torch.full((len(x), 1), negative)
    out = A.apply_rand_augment(x, ops, neg, 8)
    mags, signed = T.RandAugment()._augmentation_space(31, (32, 32))[name]
    m = float(mags[8].item()) if mags.ndim > 0 else 0.0
    if signed and negative:
        m = -m
    ref = torch.stack([apply_op_v2(x[k], name, m, InterpolationMode.NEAREST, None) for k in range(len(x))])
    assert torch.equal(out, ref)
    if name != "Identity":
        assert not torch.equal(out, x)


def test_rand_augment_v1_kernels_within_one_grey_level():
    """The seed's RandAugment (torchvision v1 tensor kernels) on each image: within 1 grey level."""
    x = make_images(12)
    space = T.RandAugment()._augmentation_space(31, (32, 32))
    for op, name in enumerate(A.RAND_AUGMENT_OPS):
        for negative in (False, True):
            out = A.apply_rand_augment(x, torch.full((12, 1), op), torch.full((12, 1), negative), 8)
            mags, signed = space[name]
            m = (float(mags[8]) if mags.ndim else 0.0) * (-1.0 if signed and negative else 1.0)
            ref = torch.stack([autoaugment._apply_op(x[k], name, m, InterpolationMode.NEAREST, None)
                               for k in range(12)])
            assert (out.int() - ref.int()).abs().max() <= 1, name


def test_rand_augment_mixed_batch_equals_per_image(apply_op_v2):
    """Two ops per image, drawn per image: the grouped application equals each image's own sequence."""
    x = make_images(40)
    out, (ops, neg) = A.rand_augment(x, 2, 8, gen(4), return_params=True)
    space = T.RandAugment()._augmentation_space(31, (32, 32))
    for k in range(len(x)):
        img = x[k]
        for r in range(2):
            name = A.RAND_AUGMENT_OPS[int(ops[k, r])]
            mags, signed = space[name]
            m = float(mags[8].item()) if mags.ndim > 0 else 0.0
            if signed and neg[k, r]:
                m = -m
            img = apply_op_v2(img, name, m, InterpolationMode.NEAREST, None)
        assert torch.equal(out[k], img), k


JITTER_FNS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)


@pytest.mark.parametrize("strength", [0.1, 0.6])
def test_color_jitter_equals_torchvision(strength):
    """Per-image factors and order == F.adjust_brightness/contrast/saturation in that order on each
    image alone, exactly (including torchvision's fused multiply-add in its blend)."""
    x = make_images(60)
    out, (factors, order) = A.color_jitter(x, strength, strength, strength, gen(5), return_params=True)
    for k in range(len(x)):
        img = x[k]
        for op in order[k].tolist():
            img = JITTER_FNS[op](img, float(factors[k, op]))
        assert torch.equal(out[k], img), k


def test_color_jitter_single_op_and_off():
    x = make_images()
    out, (factors, _) = A.color_jitter(x, 0.0, (0.5, 1.5), 0, gen(6), return_params=True)
    assert torch.all(factors[:, 0] == 1) and torch.all(factors[:, 2] == 1)
    for k in range(len(x)):
        assert torch.equal(out[k], TF.adjust_contrast(x[k], float(factors[k, 1])))
    assert torch.equal(A.color_jitter(x, 0, 0, 0, gen(6)), x)


def test_normalize_equals_totensor_normalize():
    x = make_images()
    ref = torch.stack([F1.normalize(F1.to_tensor(F1.to_pil_image(x[k])), A.CIFAR10_MEAN, A.CIFAR10_STD)
                       for k in range(len(x))])
    for out in (A.normalize(x, A.CIFAR10_MEAN, A.CIFAR10_STD), A.eval_transform(x), A.Augment().eval(x)):
        assert out.dtype == torch.float32 and torch.equal(out, ref)


@pytest.mark.parametrize("value", [0.0, (0.5, -1.0, 2.0)])
def test_erasing_equals_torchvision(value):
    x = A.normalize(make_images(64))
    out, (erased, i, j, h, w) = A.random_erasing(x, 0.5, (0.02, 0.33), (0.3, 3.3), value, gen(7), return_params=True)
    assert 10 < erased.sum() < 54
    v = torch.tensor(value if isinstance(value, tuple) else [value])[:, None, None]
    for k in range(len(x)):
        ref = TF.erase(x[k], int(i[k]), int(j[k]), int(h[k]), int(w[k]), v) if erased[k] else x[k]
        assert torch.equal(out[k], ref), k


# ----------------------------------------------------------------------------- distributions

def test_crop_distribution_matches_torchvision():
    """Square boxes; side s = round(sqrt(1024 U)), U uniform on [0.75, 1], so P(s) is the share of
    [768, 1024] between (s - 1/2)^2 and (s + 1/2)^2; positions uniform over the valid range; and
    torchvision's own get_params gives the same frequencies."""
    n = 20000
    i, j, h, w = A.sample_crop_params(n, 32, 32, (0.75, 1.0), (1.0, 1.0), gen(10))
    assert torch.equal(h, w)
    area = (h * w).double() / 1024
    assert area.min() >= 0.75 and area.max() <= 1.0
    expected = {s: (min((s + 0.5) ** 2, 1024) - max((s - 0.5) ** 2, 768)) / 256 for s in range(28, 33)}
    assert abs(sum(expected.values()) - 1) < 1e-12
    torch.manual_seed(0)
    tv = [T.RandomResizedCrop.get_params(torch.empty(3, 32, 32), [0.75, 1.0], [1.0, 1.0]) for _ in range(3000)]
    tv_h = torch.tensor([b[2] for b in tv])
    for s, p in expected.items():
        assert within(int((h == s).sum()), n, p), s
        assert within(int((tv_h == s).sum()), len(tv), p), s
    assert torch.all((i >= 0) & (j >= 0) & (i + h <= 32) & (j + w <= 32))
    assert torch.all(i[h == 32] == 0)
    for s in range(28, 32):  # given the side, each offset is equally likely
        sel = h == s
        for pos in (i[sel], j[sel]):
            counts = torch.bincount(pos, minlength=33 - s)
            assert len(counts) == 33 - s
            assert all(within(int(c), int(sel.sum()), 1 / (33 - s)) for c in counts), (s, counts)


def test_crop_fallback_is_torchvision_central_crop():
    """No attempt fits: torchvision's central-crop fallback, for both sides of the ratio range."""
    for height, width in ((20, 60), (60, 20), (30, 30)):
        ref = T.RandomResizedCrop.get_params(torch.empty(1, height, width), [2.0, 3.0], [3 / 4, 4 / 3])
        i, j, h, w = A.sample_crop_params(5, height, width, (2.0, 3.0), (3 / 4, 4 / 3), gen(11))
        for k in range(5):
            assert (int(i[k]), int(j[k]), int(h[k]), int(w[k])) == ref


def test_wide_crop_distribution_matches_torchvision():
    """The default RandomResizedCrop (scale (0.08, 1), ratio (3/4, 4/3)) on a 24x40 image: mean box
    area and mean log aspect match torchvision's get_params within 5 sigma; every box fits."""
    n, m = 20000, 3000
    i, j, h, w = A.sample_crop_params(n, 24, 40, (0.08, 1.0), (3 / 4, 4 / 3), gen(12))
    assert torch.all((h > 0) & (w > 0) & (i + h <= 24) & (j + w <= 40) & (i >= 0) & (j >= 0))
    torch.manual_seed(1)
    tv = torch.tensor([T.RandomResizedCrop.get_params(torch.empty(3, 24, 40), [0.08, 1.0], [3 / 4, 4 / 3])
                       for _ in range(m)]).double()
    ours = torch.stack([i, j, h, w], 1).double()
    for stat in (lambda b: b[:, 2] * b[:, 3] / 960, lambda b: torch.log(b[:, 3] / b[:, 2]),
                 lambda b: b[:, 0], lambda b: b[:, 1]):
        a, b = stat(ours), stat(tv)
        se = math.sqrt(a.var() / n + b.var() / m)
        assert abs(a.mean() - b.mean()) < SIGMAS * se


def test_flip_rate():
    n = 20000
    flips = A.sample_flip_params(n, 0.5, gen(13))
    assert within(int(flips.sum()), n, 0.5)
    assert not A.sample_flip_params(100, 0.0, gen(13)).any() and A.sample_flip_params(100, 1.0, gen(13)).all()


def test_pad_crop_offsets_are_uniform_like_torchvision():
    """RandomCrop.get_params draws top and left uniform on {0, ..., 2 * padding}, independently."""
    n, padding = 20000, 2
    i, j = A.sample_pad_crop_params(n, padding, gen(14))
    for v in range(2 * padding + 1):
        assert within(int((i == v).sum()), n, 1 / 5) and within(int((j == v).sum()), n, 1 / 5)
        assert within(int(((i == v) & (j == 0)).sum()), n, 1 / 25)
    assert i.min() == 0 and i.max() == 2 * padding
    tv = torch.tensor([T.RandomCrop.get_params(torch.zeros(3, 32, 32), (28, 28))[0] for _ in range(5000)])
    assert set(tv.tolist()) == set(range(5))  # torchvision's own draw has the same support


def test_rand_augment_op_and_sign_frequencies():
    n = 14000
    ops, neg = A.sample_rand_augment_params(n, 1, gen(14))
    counts = torch.bincount(ops[:, 0], minlength=14)
    assert len(counts) == 14
    assert all(within(int(c), n, 1 / 14) for c in counts), counts
    for op in range(14):
        sel = ops[:, 0] == op
        assert within(int(neg[sel, 0].sum()), int(sel.sum()), 0.5), op
    ops2, _ = A.sample_rand_augment_params(n, 2, gen(15))  # rounds drawn independently
    assert within(int((ops2[:, 0] == ops2[:, 1]).sum()), n, 1 / 14)


def test_color_jitter_factor_and_order_distribution():
    n = 12000
    factors, order = A.sample_color_jitter_params(n, 0.1, 0.1, 0.1, gen(16))
    assert factors.dtype == torch.float32 and factors.shape == (n, 3)
    assert factors.min() >= 0.9 and factors.max() <= 1.1
    for c in range(3):
        counts = torch.histc(factors[:, c], bins=10, min=0.9, max=1.1)
        assert all(within(int(k), n, 0.1) for k in counts), (c, counts)
    assert torch.equal(order.sort(1).values, torch.arange(3).expand(n, 3))
    perms = order[:, 0] * 9 + order[:, 1] * 3 + order[:, 2]
    counts = torch.bincount(perms, minlength=27)
    assert int((counts > 0).sum()) == 6
    assert all(within(int(k), n, 1 / 6) for k in counts[counts > 0]), counts
    # the three factors are drawn independently of each other
    f = factors.double() - 1
    assert abs(float((f[:, 0] * f[:, 1]).mean())) < SIGMAS * (0.1 ** 2 / 3) / math.sqrt(n)


def test_erasing_distribution_matches_torchvision():
    """Rate p (a box always fits here within 10 attempts); h = round(sqrt(A r)), w = round(sqrt(A/r))
    with A/1024 in [0.02, 0.33] and r in [0.3, 3.3], so (h -+ 1/2)(w -+ 1/2) bracket such an A and
    (h -+ 1/2)/(w +- 1/2) such an r; means match torchvision's get_params within 5 sigma."""
    n, m = 40000, 4000
    erased, i, j, h, w = A.sample_erasing_params(n, 32, 32, 0.25, (0.02, 0.33), (0.3, 3.3), gen(17))
    assert within(int(erased.sum()), n, 0.25)
    i, j, h, w = (t[erased].double() for t in (i, j, h, w))
    assert torch.all((h >= 1) & (w >= 1) & (h < 32) & (w < 32) & (i >= 0) & (j >= 0) & (i + h <= 32) & (j + w <= 32))
    assert torch.all((h - 0.5) * (w - 0.5) <= 0.33 * 1024) and torch.all((h + 0.5) * (w + 0.5) >= 0.02 * 1024)
    assert torch.all((h - 0.5) / (w + 0.5) <= 3.3) and torch.all((h + 0.5) / (w - 0.5) >= 0.3)
    frac = h * w / 1024
    assert frac.min() < 0.03 and frac.max() > 0.3
    torch.manual_seed(2)
    tv = torch.tensor([T.RandomErasing.get_params(torch.empty(3, 32, 32), (0.02, 0.33), (0.3, 3.3), [0.0])[:4]
                       for _ in range(m)]).double()
    ours = torch.stack([i, j, h, w], 1)
    for stat in (lambda b: b[:, 2] * b[:, 3] / 1024, lambda b: torch.log(b[:, 2] / b[:, 3]),
                 lambda b: b[:, 0], lambda b: b[:, 1]):
        a, b = stat(ours), stat(tv)
        assert abs(a.mean() - b.mean()) < SIGMAS * math.sqrt(a.var() / len(a) + b.var() / len(b))


def test_erasing_gives_up_like_torchvision():
    """No attempt fits (every box as large as the image): nothing is erased, as torchvision returns
    the image unchanged."""
    erased, *_ = A.sample_erasing_params(100, 8, 8, 1.0, (1.0, 1.0), (1.0, 1.0), gen(18))
    assert not erased.any()


# ---------------------------------------------------------------- reproducibility, independence

def test_same_seed_same_batch_and_state_restore():
    x = make_images(32)
    aug = A.Augment.seed_recipe()
    a = aug(x, gen(42))
    assert torch.equal(a, aug(x, gen(42)))
    assert not torch.equal(a, aug(x, gen(43)))
    g = gen(7)
    aug(x, g)
    state = g.get_state()
    nxt = aug(x, g)
    assert not torch.equal(nxt, aug(x, g))
    g2 = torch.Generator()
    g2.set_state(state.clone())
    assert torch.equal(nxt, aug(x, g2))
    g.set_state(state)
    assert torch.equal(nxt, aug(x, g))


def test_global_rng_untouched():
    x = make_images(16)
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    A.Augment.seed_recipe()(x, gen(1))
    assert torch.equal(torch.rand(4), expected)


def test_parameters_are_per_image():
    """A batch of one image repeated: the images get different boxes, flips, ops, factors, erasing."""
    n = 64
    x = make_images(1).expand(n, -1, -1, -1).contiguous()
    _, (i, j, h, w) = A.random_resized_crop(x, 32, (0.75, 1.0), (1.0, 1.0), gen(20), return_params=True)
    assert len({(int(a), int(b), int(c)) for a, b, c in zip(i, j, h)}) > 15  # of the 55 possible boxes
    _, flip = A.horizontal_flip(x, 0.5, gen(21), return_params=True)
    assert 0 < flip.sum() < n
    out, (ops, _) = A.rand_augment(x, 1, 8, gen(22), return_params=True)
    assert len(set(ops[:, 0].tolist())) >= 10
    _, (factors, order) = A.color_jitter(x, 0.1, 0.1, 0.1, gen(23), return_params=True)
    assert len(set(factors[:, 0].tolist())) == n and len({tuple(o) for o in order.tolist()}) == 6
    _, (erased, *_) = A.random_erasing(A.normalize(x), 0.5, generator=gen(24), return_params=True)
    assert 0 < erased.sum() < n
    batch = A.Augment.seed_recipe()(x, gen(25))
    assert len({bytes(b.numpy().tobytes()) for b in batch}) == n


# --------------------------------------------------------------------- dtype, shape, range, API

def test_pipeline_dtype_shape_range():
    x = make_images(20)
    aug = A.Augment.seed_recipe()
    out = aug(x, gen(30))
    assert out.dtype == torch.float32 and out.shape == (20, 3, 32, 32) and torch.isfinite(out).all()
    mean = torch.tensor(A.CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(A.CIFAR10_STD).view(1, 3, 1, 1)
    assert torch.all(out >= -mean / std - 1e-6) and torch.all(out <= (1 - mean) / std + 1e-6)
    g = gen(31)
    for step in (lambda v: A.random_resized_crop(v, 32, (0.75, 1.0), (1.0, 1.0), g),
                 lambda v: A.horizontal_flip(v, 0.5, g), lambda v: A.rand_augment(v, 1, 8, g),
                 lambda v: A.color_jitter(v, 0.1, 0.1, 0.1, g)):
        y = step(x)
        assert y.dtype == torch.uint8 and y.shape == x.shape
    big = make_images(4, 40)
    assert aug(big, g).shape == (4, 3, 32, 32)
    assert A.Augment(crop_scale=(0.5, 1.0), size=24)(x, g).shape == (20, 3, 24, 24)
    assert A.Augment(crop_scale=(0.5, 1.0), size=(24, 20))(x, g).shape == (20, 3, 24, 20)
    assert A.Augment(flip=0.5, size=(16, 16))(make_images(4, 16), g).shape == (4, 3, 16, 16)
    assert A.Augment.seed_recipe()(x[:0], g).shape == (0, 3, 32, 32)


def test_augment_config_and_disabled_steps():
    aug = A.Augment.seed_recipe()
    assert aug.config == {"crop_scale": (0.75, 1.0), "crop_ratio": (1.0, 1.0), "pad_crop": 0, "flip": 0.5,
                          "randaugment": (1, 8),
                          "color_jitter": (0.1, 0.1, 0.1), "erasing": 0.25, "mean": A.CIFAR10_MEAN,
                          "std": A.CIFAR10_STD, "size": 32}
    assert A.Augment(**aug.config).config == aug.config
    x = make_images(8)
    assert torch.equal(A.Augment()(x, gen(0)), A.eval_transform(x))
    with pytest.raises(TypeError):
        aug(x.float(), gen(0))
    with pytest.raises(ValueError):
        A.Augment()(make_images(2, 40), gen(0))
    with pytest.raises(ValueError):
        A.Augment(flip=1.5)
    with pytest.raises(ValueError, match="pad_crop: expected a padding in pixels, an int >= 0, got -1"):
        A.Augment(pad_crop=-1)
    with pytest.raises(ValueError, match="pad_crop: expected a padding in pixels, an int >= 0, got -1"):
        A.sample_pad_crop_params(4, -1)
    with pytest.raises(TypeError):
        A.random_erasing(x, 0.5, generator=gen(0))


def test_pipeline_is_the_steps_in_order():
    """Augment.seed_recipe() == the six steps called in the seed's order with the same generator."""
    x = make_images(24)
    a = A.Augment.seed_recipe()(x, gen(50))
    g = gen(50)
    y = A.random_resized_crop(x, 32, (0.75, 1.0), (1.0, 1.0), g)
    y = A.horizontal_flip(y, 0.5, g)
    y = A.rand_augment(y, 1, 8, g)
    y = A.color_jitter(y, 0.1, 0.1, 0.1, g)
    y = A.normalize(y, A.CIFAR10_MEAN, A.CIFAR10_STD)
    y = A.random_erasing(y, 0.25, (0.02, 0.33), (0.3, 3.3), 0, g)
    assert torch.equal(a, y)


def test_pipeline_with_pad_crop_is_the_steps_in_order():
    """The padded crop comes after the resized crop and before the flip."""
    x = make_images(24)
    a = A.Augment(crop_scale=(0.85, 1.0), pad_crop=2, flip=0.5)(x, gen(51))
    g = gen(51)
    y = A.random_resized_crop(x, 32, (0.85, 1.0), (1.0, 1.0), g)
    y = A.pad_crop(y, 2, g)
    y = A.horizontal_flip(y, 0.5, g)
    assert torch.equal(a, A.normalize(y, A.CIFAR10_MEAN, A.CIFAR10_STD))
    assert not torch.equal(a, A.Augment(crop_scale=(0.85, 1.0), flip=0.5)(x, gen(51)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    """On CUDA with the same CPU generator: the same parameters, so the same batch (the uint8 steps
    were bit-identical on an H200; the float division of normalize may differ in the last bit)."""
    x = make_images(64)
    aug = A.Augment.seed_recipe()
    cpu = aug(x, gen(60))
    cuda = aug(x.cuda(), gen(60))
    assert cuda.device.type == "cuda" and cuda.dtype == torch.float32
    diff = (cuda.cpu() - cpu).abs()
    assert float((diff > 1e-5).float().mean()) < 0.01
    g = gen(61)
    out, params = A.random_resized_crop(x.cuda(), 32, (0.75, 1.0), (1.0, 1.0), g, return_params=True)
    assert torch.equal(out.cpu(), A.resized_crop(x, *params, 32))
    out, (f, o) = A.color_jitter(x.cuda(), 0.4, 0.4, 0.4, g, return_params=True)
    assert torch.equal(out.cpu(), A.apply_color_jitter(x, f, o))
    xn = A.normalize(x)
    out, params = A.random_erasing(xn.cuda(), 0.5, generator=g, return_params=True)
    assert torch.equal(out.cpu(), A.erase(xn, *params))
