"""NumPy against torch autograd, part by part and for the whole model with its loss: the forward
output and every gradient (input and each parameter, by state-dict name) on the same weights, with
a random upstream gradient, in float64 (bound 1e-10 relative) and float32 (bound 1e-3 relative);
see torch_vit/parity.py for the error measure and the one floor.

Hypothesis draws the configuration (batch from 1, one head or several, head_channels equal to the
channels, 1x1 and non-square maps, patch sizes 1 to 3) and the values: a log-uniform scale on the
input and, for the "large" draws, on the q/k and MLP weights, so that the channel softmax and the
GELU saturate. Channel LayerNorms see at least 4 channels: over 1 or 2 channels a LayerNorm's output
is constant (0, or +-1), every gradient through it is rounding noise or eps-sized on both sides,
and test_degenerate_layernorm_channels checks that case on its own terms.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import numpy_vit as nv
import torch_vit.model as tv
from torch_vit.parity import BOUNDS, assert_rows, model_rows, part_rows, to_torch

pytestmark = pytest.mark.parity

DTYPES = [np.float64, np.float32]


@st.composite
def configs(draw, min_channels=1):
    """head_channels, heads, channels, batch, H, W (the patch grid), patch size."""
    hc = draw(st.sampled_from([1, 2, 4, 8]))
    heads = draw(st.integers(1, 3))
    if hc * heads < min_channels:
        hc = max(hc, -(-min_channels // heads))
    return dict(hc=hc, heads=heads, C=hc * heads, B=draw(st.integers(1, 3)),
                H=draw(st.integers(1, 5)), W=draw(st.integers(1, 5)), p=draw(st.integers(1, 3)))


def _values(rng, shape, scale, dtype):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _scale_weights(np_part, factor, names=("k.weight", "q.weight", "net.0.weight")):
    """Multiply the q/k (and first MLP) weights by ``factor``: large attend logits, saturated GELU."""
    for prefix, module in np_part.named_modules():
        for name in list(module._params):
            if any((prefix + name).endswith(n) for n in names):
                module._params[name] = module._params[name] * np.asarray(factor, module._params[name].dtype)


def _check_part(np_part, torch_part, x_shape, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    to_torch(np_part, torch_part)
    x = _values(rng, x_shape, scale, dtype)
    dout = _values(rng, np_part.forward(x).shape, 1.0, dtype)
    rows = part_rows(np_part, torch_part, x, dout)
    assert all(np.isfinite(r.max_abs) for r in rows), "NaN or inf in " + str([r.name for r in rows])
    assert_rows(rows)


scales = st.sampled_from([0.1, 1.0, 3.0])


@pytest.mark.parametrize("dtype", DTYPES)
@given(cfg=configs(), scale=scales, seed=st.integers(0, 2**32 - 1))
def test_embedding(dtype, cfg, scale, seed):
    c = cfg
    rng = np.random.default_rng(seed)
    _check_part(nv.Embedding(c["C"], c["H"] * c["W"], (c["H"], c["W"]), 3, c["p"], dtype=dtype, rng=rng),
                tv.Embedding(c["C"], c["H"] * c["W"], (c["H"], c["W"]), 3, c["p"]),
                (c["B"], 3, c["H"] * c["p"], c["W"] * c["p"]), scale, dtype, seed)


@pytest.mark.parametrize("dtype", DTYPES)
@given(cfg=configs(), scale=scales, large=st.sampled_from([1.0, 4.0]), seed=st.integers(0, 2**32 - 1))
def test_attention(dtype, cfg, scale, large, seed):
    c = cfg
    part = nv.MhSelfAttention(c["C"], c["C"], c["hc"], dtype=dtype, rng=seed)
    _scale_weights(part, large)
    _check_part(part, tv.MhSelfAttention(c["C"], c["C"], c["hc"]), (c["B"], c["C"], c["H"], c["W"]),
                scale, dtype, seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads, hc", [(4, 1), (1, 8), (16, 2)])
def test_attention_at_the_edges_of_the_head_mask(dtype, heads, hc):
    """Both sides mask the pairs of two different heads of their (C, C) product: heads of one channel (every
    pair but the diagonal masked), one head of every channel (nothing masked), and many small heads."""
    c = heads * hc
    part = nv.MhSelfAttention(c, c, hc, dtype=dtype, rng=hc)
    _check_part(part, tv.MhSelfAttention(c, c, hc), (2, c, 3, 5), 1.0, dtype, seed=heads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@given(cfg=configs(), scale=st.sampled_from([0.1, 1.0, 10.0, 100.0]), seed=st.integers(0, 2**32 - 1))
def test_feed_forward(dtype, approximate, cfg, scale, seed):
    c = cfg
    _check_part(nv.FeedForward(c["C"], c["C"], 4, approximate, dtype=dtype, rng=seed),
                tv.FeedForward(c["C"], c["C"], 4, approximate), (c["B"], c["C"], c["H"], c["W"]),
                scale, dtype, seed)


@pytest.mark.parametrize("dtype", DTYPES)
@given(cfg=configs(min_channels=4), scale=st.sampled_from([0.1, 1.0, 100.0]),
       large=st.sampled_from([1.0, 4.0]), seed=st.integers(0, 2**32 - 1))
def test_prenorm_attention(dtype, cfg, scale, large, seed):
    c = cfg
    attn = nv.MhSelfAttention(c["C"], c["C"], c["hc"], dtype=dtype, rng=seed)
    _scale_weights(attn, large)
    _check_part(nv.PreNormChannels(c["C"], attn),
                tv.PreNormChannels(c["C"], tv.MhSelfAttention(c["C"], c["C"], c["hc"])),
                (c["B"], c["C"], c["H"], c["W"]), scale, dtype, seed)


@pytest.mark.parametrize("dtype", DTYPES)
@given(cfg=configs(min_channels=4), scale=st.sampled_from([0.1, 1.0, 100.0]),
       large=st.sampled_from([1.0, 4.0]), seed=st.integers(0, 2**32 - 1))
def test_transformer(dtype, cfg, scale, large, seed):
    c = cfg
    part = nv.Transformer(2, c["hc"], c["C"], c["C"], dtype=dtype, rng=seed)
    _scale_weights(part, large)
    _check_part(part, tv.Transformer(2, c["hc"], c["C"], c["C"]), (c["B"], c["C"], c["H"], c["W"]),
                scale, dtype, seed)


@pytest.mark.parametrize("dtype", DTYPES)
@given(cfg=configs(min_channels=4), depth=st.integers(1, 2), num_classes=st.integers(2, 12),
       label_smoothing=st.sampled_from([0.0, 0.1]), scale=st.sampled_from([0.1, 1.0, 100.0]),
       large=st.sampled_from([1.0, 4.0]), seed=st.integers(0, 2**32 - 1))
def test_vit_with_loss(dtype, cfg, depth, num_classes, label_smoothing, scale, large, seed):
    c = cfg
    size = (c["H"] * c["p"], c["W"] * c["p"])
    rng = np.random.default_rng(seed)
    m = nv.ViT(size, c["p"], 3, c["C"], depth, c["hc"], num_classes, dtype=dtype, rng=rng)
    _scale_weights(m, large)
    t = to_torch(m, tv.ViT(size, c["p"], 3, c["C"], depth, c["hc"], num_classes))
    x = _values(rng, (c["B"], 3) + size, scale, dtype)
    labels = rng.integers(0, num_classes, c["B"])
    assert_rows(model_rows(m, t, x, labels, label_smoothing))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_seed_model(dtype, label_smoothing):
    """The seed configuration itself, batch 8: all 71 parameter gradients, the input gradient, the logits and the loss."""
    rng = np.random.default_rng(0)
    m = nv.ViT(32, 2, 3, 32, 4, 8, dtype=dtype, rng=rng)
    t = to_torch(m, tv.ViT(32, 2, 3, 32, 4, 8))
    x = _values(rng, (8, 3, 32, 32), 1.0, dtype)
    rows = model_rows(m, t, x, rng.integers(0, 10, 8), label_smoothing)
    assert len(rows) == 3 + len(m.state_dict())
    assert_rows(rows)
    assert max(r.max_rel for r in rows) <= BOUNDS[np.dtype(dtype)]


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_saturation(approximate, dtype):
    """GELU and its derivative on a grid out to +-1e4: finite, and equal to torch's elementwise.
    Both sides compute 0.5 x (1 + erf(x / sqrt 2)) (and its tanh twin) by the same formula, where the
    last bit of erf or tanh near -1 (NumPy's and torch's round differently there) is multiplied by
    |x| / 2 in the value and by up to about 25 in the derivative (0.5 x (1 - tanh^2) du/dx at
    x = -7.5): hence 16 eps absolute for the value and 64 eps for the derivative."""
    x = np.concatenate([np.linspace(-12, 12, 4801), np.geomspace(12, 1e4, 200), -np.geomspace(12, 1e4, 200)])
    x = x.astype(dtype)
    g = nv.GELU(approximate)
    y, dy = g.forward(x), g.backward(np.ones_like(x))
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = torch.nn.functional.gelu(xt, approximate=approximate)
    (dyt,) = torch.autograd.grad(yt.sum(), xt)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dy))
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=4 * eps, atol=16 * eps)
    np.testing.assert_allclose(dy, dyt.numpy(), rtol=4 * eps, atol=64 * eps)


def test_degenerate_layernorm_channels():
    """A channel LayerNorm over one channel outputs its bias whatever the input (x - mean = 0): every
    gradient that passes through it is zero, exactly on the NumPy side and to rounding on torch's,
    while the gradients of the head still agree to the bound. Over two channels its output is +-1
    up to eps, the gradients through it are eps-sized, and float64 still agrees to the bound."""
    rng = np.random.default_rng(1)
    m = nv.ViT(4, 1, 3, 1, 1, 1, 3, dtype=np.float64, rng=rng)
    t = to_torch(m, tv.ViT(4, 1, 3, 1, 1, 1, 3))
    rows = model_rows(m, t, rng.standard_normal((2, 3, 4, 4)), np.array([0, 2]))
    through_norm = [r for r in rows if r.name.startswith(("embedding", "transformer", "input"))
                    or r.name == "norm.weight"]
    assert_rows([r for r in rows if r not in through_norm])
    big = max(r.scale for r in rows)
    for r in through_norm:
        assert r.scale <= 1e-12 * big and r.max_abs <= 1e-12 * big, r.message()

    m = nv.ViT(4, 1, 3, 2, 1, 2, 3, dtype=np.float64, rng=rng)
    t = to_torch(m, tv.ViT(4, 1, 3, 2, 1, 2, 3))
    assert_rows(model_rows(m, t, rng.standard_normal((2, 3, 4, 4)), np.array([0, 2])))


# ------------------------------------------------------------------------------------------------
# the comparison itself: names and bounds


class _Renamed:
    """A NumPy model whose gradients are named otherwise than torch's parameters: ``norm.weight``
    renamed ``norm.gain`` ("renamed"), or an extra ``norm.gain`` beside it ("extra")."""

    def __init__(self, model, how):
        self.model, self.how, self.dtype = model, how, model.dtype

    def forward(self, x):
        return self.model.forward(x)

    def backward(self, dy):
        return self.model.backward(dy)

    @property
    def grads(self):
        grads = dict(self.model.grads)
        grads["norm.gain"] = grads.pop("norm.weight") if self.how == "renamed" else grads["norm.weight"]
        return grads


@pytest.mark.parametrize("how", ["renamed", "extra"])
def test_model_rows_needs_the_same_names_on_both_sides(how):
    """A gradient under another name, or one more gradient than torch has parameters: model_rows
    refuses, naming the names that differ, rather than comparing what it can."""
    m = nv.ViT(8, 2, 3, 8, 1, 4, dtype=np.float64, rng=0)
    t = to_torch(m, tv.ViT(8, 2, 3, 8, 1, 4))
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    assert_rows(model_rows(m, t, x, np.array([1, 2])))  # as they are: the same names, all within the bound
    expected = ["norm.gain", "norm.weight"] if how == "renamed" else ["norm.gain"]
    with pytest.raises(AssertionError) as e:
        model_rows(_Renamed(m, how), t, x, np.array([1, 2]))
    assert str(e.value) == f"gradients by name differ between numpy and torch: {expected}"


class _ViTInFloat32(tv.ViT):
    """A torch ViT in float32 that takes a float64 input and casts it down first."""

    def forward(self, x):
        return super().forward(x.float())


class _FeedForwardInFloat32(tv.FeedForward):
    """A torch FeedForward that computes in float32 between a float64 input and a float64 output."""

    def forward(self, x):
        return super().forward(x.float()).double()


def test_model_rows_holds_the_bound_of_the_dtype_asked_for():
    """A float64 NumPy model against a torch twin that computes in float32: every row is held to
    float64's bound (1e-10), not to float32's (1e-3) where torch's tensors are float32, and so the
    logits and the gradients fail it."""
    m = nv.ViT(8, 2, 3, 8, 1, 4, dtype=np.float64, rng=0)
    t = to_torch(m, _ViTInFloat32(8, 2, 3, 8, 1, 4)).float()
    rows = model_rows(m, t, np.random.default_rng(0).standard_normal((2, 3, 8, 8)), np.array([1, 2]))
    assert {r.bound for r in rows} == {BOUNDS[np.dtype(np.float64)]}
    failed = {r.name for r in rows if not r.ok}
    assert {"logits", "mlp_head.3.weight", "transformer.layers.0.0.fn.q.weight"} <= failed


def test_part_rows_holds_the_bound_of_the_dtype_asked_for():
    """The same for a part: a float64 FeedForward against a torch one computing in float32 inside."""
    part = nv.FeedForward(8, 8, 4, dtype=np.float64, rng=0)
    t = to_torch(part, _FeedForwardInFloat32(8, 8, 4)).float()
    rng = np.random.default_rng(0)
    rows = part_rows(part, t, rng.standard_normal((2, 8, 3, 3)), rng.standard_normal((2, 8, 3, 3)))
    assert {r.bound for r in rows} == {BOUNDS[np.dtype(np.float64)]}
    assert {"output", "net.0.weight", "net.2.weight"} <= {r.name for r in rows if not r.ok}
