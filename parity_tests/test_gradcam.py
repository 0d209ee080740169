"""Grad-CAM from scratch in NumPy (numpy_vit.gradcam) against pytorch-grad-cam's GradCAM on the
same weights and images (torch_vit.gradcam), and the helpers around them.

Bounds held (NumPy model float64 or float32, torch model float32, maps in [0, 1]):
    raw map (after ReLU, before any scaling):  max |numpy - library| <= RAW_REL[dtype] * max |library|
    final (B, H, W) maps:                      max |numpy - library| <= CAM_ABS[dtype]
    the library's scaling given the library's own raw map: bit for bit (numpy's scale_cam_image and
    resize_bilinear against scale_cam_image and cv2.resize through IPP, the wheel's default)
Measured over 96 images of each kind, all five layers, true and predicted class: at most 1.4e-6
of an image's own raw maximum and 1.4e-6 absolute on the final maps, float64 and float32 NumPy
alike (the float32 torch side's rounding dominates); the bound leaves a margin of about 7.

The exact check at the head: for A = GELU(norm(x)), the input of the global average pool, and
S = logits[b, t] = mean_ij sum_c W[t, c] A[c, i, j] + bias[t], dS/dA[c, i, j] = W[t, c] / (h * w)
at every position; so GradCAM's weights are W[t] / (h * w) and its raw map is ReLU(CAM) / (h * w),
CAM = sum_c W[t, c] A_c (Zhou et al. 2016), whose mean plus bias[t] is the logit itself.
"""

import numpy as np
import pytest
import torch

import cv2  # noqa: E402  (grad-cam, a dependency of the torch extra, brings it)
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.image import scale_cam_image as library_scale_cam_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

import numpy_vit as nv  # noqa: E402
import torch_vit.model as tv  # noqa: E402
from torch_vit.checkpoint import numpy_twin  # noqa: E402
from numpy_vit.gradcam import resize_bilinear, scale_cam_image  # noqa: E402
from torch_vit.augment import normalize  # noqa: E402
from torch_vit.data import make_synthetic  # noqa: E402
from torch_vit.gradcam import METHODS, find_images, target_module, torch_grad_cam  # noqa: E402

CONFIG = (16, 2, 3, 16, 2, 8)  # image 16, patch 2 (8 x 8 grid), 16 channels, depth 2, 2 heads, 10 classes
RAW_REL = {np.float64: 1e-5, np.float32: 1e-5}
CAM_ABS = {np.float64: 1e-5, np.float32: 1e-5}
LAYERS = [None, "embedding", "transformer.layers.0", "mlp_head.0"]


@pytest.fixture(scope="module")
def data():
    return make_synthetic(256, 96, size=(16, 16), seed=7)


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    return tv.ViT(*CONFIG).eval()


@pytest.fixture(scope="module")
def trained_model(data):
    """A tiny model after 40 Adam steps on the synthetic data: right on some images, wrong on others."""
    torch.manual_seed(1)
    model = tv.ViT(*CONFIG)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(2)
    for _ in range(40):
        idx = torch.randint(0, len(data.train_y), (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(normalize(data.train_x[idx])), data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _images(data, batch, offset=0):
    return normalize(data.test_x[offset:offset + batch]), data.test_y[offset:offset + batch].numpy()


# ------------------------------------------------------------------ NumPy grad_cam == pytorch-grad-cam

@pytest.mark.parity
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("target", ["true", "predicted"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("weights", ["random", "trained"])
def test_numpy_grad_cam_equals_library(weights, layer, batch, target, dtype, data, random_model, trained_model):
    model = random_model if weights == "random" else trained_model
    x, labels = _images(data, batch, offset=5)
    with torch.no_grad():
        predicted = model(x).argmax(-1).numpy()
    classes = labels if target == "true" else predicted

    lib, lib_extras = torch_grad_cam(model, x, classes, layer=layer, return_raw=True)
    mine, extras = nv.grad_cam(numpy_twin(model, dtype), x.numpy().astype(dtype), classes, layer=layer,
                               return_raw=True)

    assert mine.shape == lib.shape == (batch, 16, 16) and mine.dtype == lib.dtype == np.float32
    assert extras["raw"].shape == lib_extras["raw"].shape == (batch, 8, 8)
    scale = np.abs(lib_extras["raw"]).max()
    raw_err = np.abs(extras["raw"] - lib_extras["raw"]).max()
    assert raw_err <= RAW_REL[dtype] * scale, f"raw map: {raw_err:.3e} of max {scale:.3e}"
    cam_err = np.abs(mine - lib).max()
    assert cam_err <= CAM_ABS[dtype], f"final maps differ by {cam_err:.3e}"
    assert np.all((mine >= 0) & (mine <= 1))
    np.testing.assert_array_equal(extras["zero"], lib_extras["zero"])
    # the activations and gradients themselves, as the library hooked them
    for key in ("activations", "gradients"):
        ref = lib_extras[key]
        assert np.abs(extras[key] - ref).max() <= RAW_REL[dtype] * np.abs(ref).max(), key


@pytest.mark.parity
@pytest.mark.parametrize("layer", LAYERS)
def test_scaling_is_the_library_bit_for_bit(layer, data, trained_model):
    """Given the library's own raw map, numpy's scale_cam_image twice (per layer with the resize,
    then aggregate_multi_layers' rescale) reproduces the library's output exactly."""
    x, labels = _images(data, 3)
    lib, extras = torch_grad_cam(trained_model, x, labels, layer=layer, return_raw=True)
    ours = scale_cam_image(np.maximum(scale_cam_image(extras["raw"], (16, 16)), 0))
    if cv2.ipp.useIPP():
        np.testing.assert_array_equal(ours, lib)
    else:  # cv2's own kernel: a few float32 ulps
        np.testing.assert_allclose(ours, lib, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(scale_cam_image(extras["raw"]), library_scale_cam_image(extras["raw"]))


@pytest.mark.parity
def test_raw_equals_the_library_internals(random_model, data):
    """The library's raw map, recomputed from its hooked activations and gradients by its own
    GradCAM.get_cam_image, is what torch_grad_cam reports (and what numpy is compared with)."""
    x, labels = _images(data, 3)
    targets = [ClassifierOutputTarget(int(c)) for c in labels]
    with GradCAM(model=random_model, target_layers=[random_model.transformer]) as cam:
        cam(input_tensor=x, targets=targets)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = np.maximum(cam.get_cam_image(x, random_model.transformer, targets, acts, grads), 0)
    _, extras = torch_grad_cam(random_model, x, labels, return_raw=True)
    np.testing.assert_array_equal(extras["raw"], raw)
    np.testing.assert_array_equal(
        raw, np.maximum((grads.mean(axis=(2, 3))[:, :, None, None] * acts).sum(axis=1), 0))


# -------------------------------------------------------------------- the exact check at the head

@pytest.mark.parity
def test_numpy_head_gradient_is_the_class_activation_map(trained_model, data):
    x, labels = _images(data, 3)
    m = numpy_twin(trained_model, np.float64)
    cams, e = nv.grad_cam(m, x.numpy().astype(np.float64), labels, layer="mlp_head.0", return_raw=True)
    W, bias = m.mlp_head[3]._params["weight"], m.mlp_head[3]._params["bias"]
    A = e["activations"]
    hw = A.shape[2] * A.shape[3]
    # A is GELU(norm(transformer output))
    np.testing.assert_allclose(A, nv.GELU().forward(m.norm.forward(m.transformer.block_outputs[-1])),
                               rtol=0, atol=1e-14)
    # dS/dA = W[t] / (h w) at every position
    np.testing.assert_array_equal(e["gradients"], np.broadcast_to(W[labels][:, :, None, None] / hw, A.shape))
    np.testing.assert_allclose(e["weights"], W[labels] / hw, rtol=1e-14, atol=0)
    cam = np.einsum("bc,bcij->bij", W[labels], A)  # Zhou et al.'s CAM
    np.testing.assert_allclose(e["raw"], np.maximum(cam, 0) / hw, rtol=1e-12, atol=1e-15)
    # the CAM's mean plus the bias is the target logit
    np.testing.assert_allclose(cam.mean(axis=(1, 2)) + bias[labels], e["logits"][np.arange(3), labels],
                               rtol=1e-12, atol=1e-12)
    # 1 / (h w) cancels in the scaling: the maps are the scaled, resized ReLU(CAM)
    np.testing.assert_allclose(cams, scale_cam_image(np.maximum(scale_cam_image(np.maximum(cam, 0), (16, 16)), 0)),
                               rtol=0, atol=1e-6)


@pytest.mark.parity
def test_torch_head_gradient_is_the_class_activation_map(trained_model, data):
    x, labels = _images(data, 3)
    cams, e = torch_grad_cam(trained_model, x, labels, layer="mlp_head.0", return_raw=True)
    W = trained_model.mlp_head[3].weight.detach().numpy()
    bias = trained_model.mlp_head[3].bias.detach().numpy()
    A = e["activations"]
    hw = A.shape[2] * A.shape[3]
    np.testing.assert_allclose(e["gradients"], np.broadcast_to(W[labels][:, :, None, None] / hw, A.shape),
                               rtol=1e-6, atol=0)
    cam = np.einsum("bc,bcij->bij", W[labels].astype(np.float64), A.astype(np.float64))
    scale = np.abs(cam).max() / hw
    assert np.abs(e["raw"] - np.maximum(cam, 0) / hw).max() <= 1e-5 * scale
    np.testing.assert_allclose(cam.mean(axis=(1, 2)) + bias[labels], e["logits"][np.arange(3), labels],
                               rtol=1e-5, atol=1e-5)
    ref = scale_cam_image(np.maximum(scale_cam_image(np.maximum(cam, 0), (16, 16)), 0))
    assert np.abs(cams - ref).max() <= 1e-5


# --------------------------------------------------------------- blank maps: all-zero and constant

def _blank_model(sign, gain):
    """A model whose head sees A = GELU(gain * xhat + 4) > 0 everywhere, and whose class-0 weight
    row is ``sign`` * 1: every position's evidence for class 0 is then < 0 (sign -1: an all-zero
    ReLU map) or, with gain 0, the same positive number (a constant map)."""
    torch.manual_seed(3)
    model = tv.ViT(*CONFIG).eval()
    with torch.no_grad():
        model.norm.weight.fill_(gain)
        model.norm.bias.fill_(4.0)
        model.mlp_head[3].weight[0] = sign
    return model


@pytest.mark.parity
@pytest.mark.parametrize("case", ["zero", "flat"])
def test_blank_maps_are_zero_and_flagged(case, data):
    model = _blank_model(-1.0, 0.1) if case == "zero" else _blank_model(1.0, 0.0)
    x, _ = _images(data, 2)
    classes = [0, 0]
    lib, le = torch_grad_cam(model, x, classes, layer="mlp_head.0", return_raw=True)
    mine, e = nv.grad_cam(numpy_twin(model, np.float64), x.numpy().astype(np.float64), classes,
                          layer="mlp_head.0", return_raw=True)
    # the library turns both into all-zero maps, not NaN: (0 - 0) / (1e-7 + 0) = 0
    assert np.array_equal(lib, np.zeros_like(lib)) and np.array_equal(mine, np.zeros_like(mine))
    assert e["zero"].tolist() == le["zero"].tolist() == [case == "zero"] * 2
    assert e["flat"].tolist() == le["flat"].tolist() == [True, True]
    if case == "flat":
        assert (e["raw"] > 0).all() and (le["raw"] > 0).all()
    np.testing.assert_array_equal(library_scale_cam_image(np.zeros((1, 4, 4), np.float32), (8, 8)),
                                  scale_cam_image(np.zeros((1, 4, 4), np.float32), (8, 8)))


# ----------------------------------------------------------------------------- the bilinear resize

RESIZE_SHAPES = [(8, 8, 16, 16), (16, 16, 32, 32), (8, 8, 32, 32), (16, 16, 224, 224), (3, 5, 7, 11),
                 (2, 2, 4, 4), (7, 9, 100, 50), (5, 4, 5, 4), (4, 4, 33, 12)]


@pytest.mark.parity
@pytest.mark.parametrize("shape", RESIZE_SHAPES)
def test_resize_matches_cv2(shape):
    h, w, H, W = shape
    rng = np.random.default_rng(h * 1000 + W)
    maps = [rng.standard_normal((h, w)).astype(np.float32), rng.uniform(0, 1, (h, w)).astype(np.float32)]
    ipp = cv2.ipp.useIPP()
    try:
        for img in maps:
            mine = resize_bilinear(img, (H, W))
            assert mine.shape == (H, W) and mine.dtype == np.float32
            if ipp:  # the wheel's default kernel, reproduced bit for bit
                np.testing.assert_array_equal(mine, cv2.resize(img, (W, H)))
            cv2.ipp.setUseIPP(False)  # cv2's own kernel: (1 - t) a + t b, a few ulps away
            np.testing.assert_allclose(mine, cv2.resize(img, (W, H)), rtol=0, atol=1e-6 * max(1, np.abs(img).max()))
            cv2.ipp.setUseIPP(ipp)
            # float64 is interpolated in float64, the same map to float32 rounding
            np.testing.assert_allclose(resize_bilinear(img.astype(np.float64), (H, W)), mine, rtol=0, atol=1e-6)
    finally:
        cv2.ipp.setUseIPP(ipp)


@pytest.mark.parity
@pytest.mark.parametrize("shape", [(1, 1, 4, 6), (1, 5, 3, 9), (4, 1, 8, 2)])
def test_resize_thin_maps_within_ulps(shape):
    """cv2 runs its own kernel for a one-row or one-column map: agreement to float32 rounding."""
    h, w, H, W = shape
    img = np.random.default_rng(0).uniform(0, 1, (h, w)).astype(np.float32)
    np.testing.assert_allclose(resize_bilinear(img, (H, W)), cv2.resize(img, (W, H)), rtol=0, atol=1e-6)


def test_resize_refuses_downsampling():
    with pytest.raises(ValueError, match="upsampling only"):
        resize_bilinear(np.zeros((8, 8), np.float32), (4, 8))


# ------------------------------------------------------------------------------- the tap and hooks

def test_tap_leaves_the_model_unchanged_and_sees_the_whole_gradient(trained_model, data):
    """torch_grad_cam at block 0 restores the train/eval mode and leaves no hook or module behind; its
    activations and gradients are block 0's output and dS/d(output) by autograd on a hand-run forward.
    The shared model goes back to eval mode with no gradients however the test ends."""
    model = trained_model
    keys = list(model.state_dict())
    modules = [name for name, _ in model.named_modules()]
    x, labels = _images(data, 2)
    try:
        model.train()
        _, e = torch_grad_cam(model, x, labels, layer="transformer.layers.0", return_raw=True)
        assert model.training, "the train/eval mode is restored"
        model.eval()
        assert list(model.state_dict()) == keys and [n for n, _ in model.named_modules()] == modules
        assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())

        # dS/d(block 0 output) by autograd on a hand-run forward, residual branch included
        h = model.embedding(x)
        attn, ff = model.transformer.layers[0]
        h = attn(h) + h
        block0 = ff(h) + h
        block0.retain_grad()
        out = block0
        for attn, ff in model.transformer.layers[1:]:
            out = attn(out) + out
            out = ff(out) + out
        logits = model.mlp_head(model.norm(out.transpose(1, -1)).transpose(-1, 1))
        logits[torch.arange(2), torch.as_tensor(labels)].sum().backward()
        np.testing.assert_allclose(e["activations"], block0.detach().numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(e["gradients"], block0.grad.numpy(), rtol=1e-5, atol=1e-8)
    finally:
        model.eval()
        model.zero_grad()


def test_tap_hook_removed_after_an_error(random_model, data):
    x, _ = _images(data, 1)
    with pytest.raises(RuntimeError):
        with target_module(random_model, "transformer.layers.0") as tap:
            assert random_model.transformer.layers[1][0]._forward_pre_hooks
            assert isinstance(tap, torch.nn.Identity)
            raise RuntimeError("boom")
    assert not random_model.transformer.layers[1][0]._forward_pre_hooks


def test_numpy_taps_are_removed(data):
    torch.manual_seed(0)
    m = numpy_twin(tv.ViT(*CONFIG), np.float64)
    x = normalize(data.test_x[:2]).numpy().astype(np.float64)
    before = m.forward(x)
    for layer in LAYERS + ["transformer", "transformer.layers.1"]:
        nv.grad_cam(m, x, [1, 2], layer=layer)
        for part in (m.embedding, m.transformer, m.mlp_head[0]):
            assert "forward" not in vars(part) and "backward" not in vars(part)
        assert m.transformer.record_block_grads is False and m.transformer.block_grads is None
    np.testing.assert_array_equal(m.forward(x), before)
    # block_outputs[-1] is the transformer's output; "transformer.layers.{depth-1}" is "transformer"
    a = nv.grad_cam(m, x, [1, 2], layer="transformer")
    b = nv.grad_cam(m, x, [1, 2], layer="transformer.layers.1")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs(method, random_model, data):
    x, labels = _images(data, 2)
    cams = torch_grad_cam(random_model, x, labels, layer="transformer.layers.0", method=method)
    assert cams.shape == (2, 16, 16) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in random_model.modules())


# ------------------------------------------------------------------------------------ find_images

def _reference_predictions(model, data):
    with torch.no_grad():
        probs = torch.softmax(model(normalize(data.test_x)), dim=-1)
    conf, pred = probs.max(dim=-1)
    return pred.numpy(), conf.numpy(), data.test_y.numpy()


@pytest.mark.parametrize("correct", [False, True])
def test_find_images_first_n_in_order(correct, trained_model, data):
    pred, conf, y = _reference_predictions(trained_model, data)
    pool = np.flatnonzero((pred == y) == correct)
    assert 5 <= len(pool) <= len(y) - 5, "the trained model should get some right and some wrong"
    found = find_images(trained_model, data.test_x, data.test_y, n=5, correct=correct, batch_size=7)
    np.testing.assert_array_equal(found.indices, pool[:5])
    np.testing.assert_array_equal(found.predicted, pred[pool[:5]])
    np.testing.assert_allclose(found.confidence, conf[pool[:5]], rtol=1e-6)
    np.testing.assert_array_equal(found.labels, y[pool[:5]])
    assert ((found.predicted == found.labels) == correct).all()
    # more than there are: all of them
    everything = find_images(trained_model, data.test_x, data.test_y, n=10_000, correct=correct, batch_size=32)
    np.testing.assert_array_equal(everything.indices, pool)


@pytest.mark.parametrize("correct", [False, True])
def test_find_images_per_class(correct, trained_model, data):
    """per_class=K: the first K of each true class, class by class, whatever n says."""
    pred, conf, y = _reference_predictions(trained_model, data)
    pool = np.flatnonzero((pred == y) == correct)
    want = np.concatenate([pool[y[pool] == c][:2] for c in np.unique(y[pool])])
    assert len(np.unique(y[pool])) > 1 and len(want) > 2
    found = find_images(trained_model, data.test_x, data.test_y, n=1, correct=correct, per_class=2, batch_size=7)
    np.testing.assert_array_equal(found.indices, want)
    np.testing.assert_array_equal(found.predicted, pred[want])
    np.testing.assert_allclose(found.confidence, conf[want], rtol=1e-6)
    np.testing.assert_array_equal(found.labels, y[want])
    for bad in (dict(per_class=0), dict(per_class=1.5), dict(per_class=1, indices=[0])):
        with pytest.raises(ValueError, match="per_class"):
            find_images(trained_model, data.test_x, data.test_y, **bad)


def test_find_images_explicit_indices(trained_model, data):
    pred, conf, y = _reference_predictions(trained_model, data)
    idx = [17, 3, 50, 3]
    found = find_images(trained_model, data.test_x.numpy(), y, indices=idx, batch_size=3)
    np.testing.assert_array_equal(found.indices, idx)
    np.testing.assert_array_equal(found.predicted, pred[idx])
    np.testing.assert_allclose(found.confidence, conf[idx], rtol=1e-6)
    with pytest.raises(ValueError, match="indices"):
        find_images(trained_model, data.test_x, y, indices=[len(y)])


# -------------------------------------------------------------------------------------- bad input

def test_unknown_layer_is_one_line_listing_the_valid_names(random_model, data):
    x, labels = _images(data, 1)
    m = numpy_twin(random_model, np.float64)
    for call in (lambda: nv.grad_cam(m, x.numpy().astype(np.float64), labels, layer="transformer.layers.2"),
                 lambda: torch_grad_cam(random_model, x, labels, layer="transformer.layers.2"),
                 lambda: nv.grad_cam(m, x.numpy().astype(np.float64), labels, layer="norm")):
        with pytest.raises(ValueError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg
        for name in ("embedding", "transformer.layers.0", "transformer.layers.1", "mlp_head.0"):
            assert name in msg


@pytest.mark.parametrize("classes", [[10], [-1], [1, 2], [1.5]])
def test_bad_target_classes(classes, random_model, data):
    x, _ = _images(data, 1)
    m = numpy_twin(random_model, np.float64)
    with pytest.raises(ValueError, match="target_classes"):
        nv.grad_cam(m, x.numpy().astype(np.float64), classes)
    with pytest.raises(ValueError, match="target_classes"):
        torch_grad_cam(random_model, x, classes)


def test_bad_images(random_model):
    m = numpy_twin(random_model, np.float64)
    for shape in [(1, 3, 8, 8), (1, 1, 16, 16), (3, 16, 16), (0, 3, 16, 16)]:
        with pytest.raises(ValueError, match="images"):
            nv.grad_cam(m, np.zeros(shape), [0] * (shape[0] if len(shape) == 4 else 1))
        with pytest.raises(ValueError, match="images"):
            torch_grad_cam(random_model, torch.zeros(shape), None)
    with pytest.raises(TypeError, match="dtype"):
        nv.grad_cam(m, np.zeros((1, 3, 16, 16), np.float32), [0])
    with pytest.raises(ValueError, match="method"):
        torch_grad_cam(random_model, torch.zeros(1, 3, 16, 16), [0], method="gradcam+++")
