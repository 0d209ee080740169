"""Centred finite-difference checks of every hand-written NumPy backward, in float64, without torch.

For a part with output y = forward(x) and a random upstream gradient g (not ones, so that a
transposed or mis-summed gradient cannot hide behind symmetry), the scalar checked is

    f(theta) = sum(forward(x) * g),

and for the whole ViT it is the cross-entropy loss itself. Each coordinate theta_i checked (the
input's and every parameter's, up to ``MAX_COORDS`` per tensor, drawn at random) is perturbed in
place by +-h, h = 1e-6, and

    numeric_i = sum((forward(theta + h e_i) - forward(theta - h e_i)) * g) / (2 h)

(CS231n's ``eval_numerical_gradient_array``) is compared with the analytic gradient from
``backward(g)`` (the returned input gradient, and ``part.grads[name]`` for the parameters) by

    err_i = |analytic_i - numeric_i| / max(max_j |analytic_j|, |numeric_i|, 1e-8),

j running over the whole tensor: a normwise (infinity-norm) relative error, reported at the
coordinate where it is largest. A plain per-coordinate relative error is not usable: the rounding
of f itself puts an absolute noise of about eps |f| / h ~ 4e-10 on every numeric derivative (it
scales as 1/h, measured), which is a relative error of 1e-5 on the entries near 1e-5 that many
tensors have.

Bound: ``REL_TOL = 1e-6`` for every part and tensor. Measured (float64, h = 1e-6, numpy 2.4; the
seeds in this file and 30 other seed sets): the largest err over all single parts and the
cross-entropy is 1.0e-8; over the whole ViT with its loss, whose gradients are small (~1e-3) next
to the loss (~2.4), it is 2.8e-7 (transformer.layers.0.1.lnorm.weight). Truncation (h^2 f'''/6)
is far below either. Any real mistake in a backward (a wrong sign, a transposed matrix, a missing
term, the softmax on the wrong axis) gives errors of order 1e-2 or more; the last test shows that
the checker catches a transposed weight gradient. Every parameter of every part is checked: a test
also fails if ``part.grads`` misses a parameter, has an extra entry, or one of the wrong shape, if
backward changes its upstream gradient in place, or if a gradient is not finite.
"""

import math

import numpy as np
import pytest

import numpy_vit
from numpy_vit.nn import GELU, Conv2d, LayerNorm, Linear

pytestmark = pytest.mark.parity

H = 1e-6
REL_TOL = 1e-6
FLOOR = 1e-8
MAX_COORDS = 20
DT = np.float64
WORST = {}  # tensor label -> largest relative error seen (for measuring the bound)


def _errors(a, n, scale):
    """Per checked coordinate: |a_i - n_i| / max(scale, |n_i|, FLOOR), scale = max |analytic| over
    the whole tensor (so the largest of them is a normwise, infinity-norm relative error)."""
    return np.abs(a - n) / np.maximum(np.maximum(scale, np.abs(n)), FLOOR)


def _coords(shape, rng, k=MAX_COORDS):
    """Up to k distinct multi-indices of an array of ``shape``, drawn at random."""
    size = int(np.prod(shape))
    flat = rng.choice(size, size=min(k, size), replace=False)
    return [np.unravel_index(int(i), shape) for i in flat]


def check_part(part, x, rng):
    """Check d sum(part.forward(x) * g) / d (x, every parameter) against part.backward(g), g random.

    Returns the largest error measure over the tensors."""
    forward = part.forward
    y = forward(x)
    g = rng.standard_normal(y.shape)
    g_copy = g.copy()
    x_copy = x.copy()
    dx = part.backward(g)
    assert np.array_equal(g, g_copy), "backward modified its upstream gradient in place"
    assert np.array_equal(x, x_copy), "forward/backward modified the input in place"
    params = dict(part.named_parameters())
    grads = {k: np.array(v, copy=True) for k, v in part.grads.items()}
    assert sorted(grads) == sorted(params), (f"grads keys {sorted(grads)} != parameter names {sorted(params)}")

    # CS231n's form: the difference of the two outputs, dotted with g (less cancellation than
    # differencing the two sums).
    def f_pair(arr, idx):
        old = arr[idx]
        arr[idx] = old + H
        yp = forward(x).copy()
        arr[idx] = old - H
        ym = forward(x).copy()
        arr[idx] = old
        return np.sum((yp - ym) * g) / (2 * H)

    worst = _check_array(f"{type(part).__name__} input", x, dx, f_pair, rng)
    for name, arr in params.items():
        worst = max(worst, _check_array(f"{type(part).__name__} parameter {name!r}", arr, grads[name], f_pair, rng))
    return worst


def _check_array(label, arr, analytic, f_pair, rng, k=MAX_COORDS):
    """Compare analytic[idx] with the centred difference f_pair(arr, idx) at up to k random
    coordinates of ``arr``; raise naming the tensor and the worst index. Returns the error measure."""
    assert analytic is not None, f"{label}: no gradient returned"
    assert analytic.shape == arr.shape, f"{label}: gradient shape {analytic.shape} != tensor shape {arr.shape}"
    assert np.all(np.isfinite(analytic)), f"{label}: non-finite gradient"
    idxs = _coords(arr.shape, rng, k)
    a = np.array([float(analytic[idx]) for idx in idxs])
    n = np.array([float(f_pair(arr, idx)) for idx in idxs])
    scale = float(np.abs(analytic).max())
    err = _errors(a, n, scale)
    worst = int(np.argmax(err))
    WORST[label] = max(WORST.get(label, 0.0), float(err[worst]))
    assert err[worst] <= REL_TOL, (
        f"{label} index {tuple(int(i) for i in idxs[worst])}: analytic {a[worst]:.12g} vs numeric "
        f"{n[worst]:.12g}, error {err[worst]:.3g} > {REL_TOL:g} (relative to the largest analytic "
        f"gradient entry of the tensor, {scale:.3g})")
    return float(err[worst])


def _randomize_norms(part, rng):
    """LayerNorm weight/bias start at ones/zeros; give them random values so their gradients and
    the weight's effect on the input gradient are exercised."""
    for _, module in part.named_modules():
        if isinstance(module, LayerNorm):
            w, b = module._params["weight"], module._params["bias"]
            w[...] = rng.uniform(0.5, 1.5, w.shape) * rng.choice([-1.0, 1.0], w.shape)
            b[...] = rng.standard_normal(b.shape) * 0.5


# The erf evaluation switches rational approximation at |x / sqrt 2| = 0.46875 and 4: keep the
# sample points of GELU at least 1e-3 away from those switch points (there is no kink, only a
# change of formula, but a centred difference straddling one would test the formulas' agreement).
_ERF_SWITCHES = np.array([0.46875, 4.0]) * math.sqrt(2.0)


def _gelu_input(rng, shape):
    x = rng.uniform(-4.0, 4.0, shape)
    while True:
        near = np.min(np.abs(np.abs(x)[..., None] - _ERF_SWITCHES), axis=-1) < 1e-3
        if not near.any():
            return x
        x[near] = rng.uniform(-4.0, 4.0, int(near.sum()))


def _make_cases():
    """name -> builder(rng) -> (part, float64 input x)."""
    cases = {}

    def conv(k):
        def build(rng):
            part = Conv2d(3, 4, k, dtype=DT, rng=rng)
            return part, rng.standard_normal((2, 3, 2 * k, 3 * k))
        return build

    cases["Conv2d-kernel1"] = conv(1)
    cases["Conv2d-kernel2"] = conv(2)

    def layernorm(rng):
        part = LayerNorm(5, dtype=DT)
        _randomize_norms(part, rng)
        return part, rng.standard_normal((2, 5, 3, 4)) * 2.0 + 0.5

    cases["LayerNorm"] = layernorm

    def gelu(approx):
        def build(rng):
            return GELU(approx), _gelu_input(rng, (2, 3, 4, 5))
        return build

    cases["GELU-none"] = gelu("none")
    cases["GELU-tanh"] = gelu("tanh")

    def linear(rng):
        return Linear(5, 4, dtype=DT, rng=rng), rng.standard_normal((3, 5))

    cases["Linear"] = linear

    def embedding(rng):
        part = numpy_vit.Embedding(6, 6, (2, 3), 3, 2, dtype=DT, rng=rng)
        return part, rng.standard_normal((2, 3, 4, 6))

    cases["Embedding"] = embedding

    def attention(c_in, c_out, hc):
        def build(rng):
            part = numpy_vit.MhSelfAttention(c_in, c_out, hc, dtype=DT, rng=rng)
            return part, rng.standard_normal((2, c_in, 3, 4))
        return build

    cases["MhSelfAttention-3heads"] = attention(6, 6, 2)
    cases["MhSelfAttention-1head-hc==channels"] = attention(4, 4, 4)
    cases["MhSelfAttention-in!=out"] = attention(5, 6, 3)

    def feedforward(c_in, c_out, approx):
        def build(rng):
            part = numpy_vit.FeedForward(c_in, c_out, 4, approx, dtype=DT, rng=rng)
            return part, rng.standard_normal((2, c_in, 3, 2))
        return build

    cases["FeedForward-none"] = feedforward(4, 4, "none")
    cases["FeedForward-tanh"] = feedforward(4, 4, "tanh")
    cases["FeedForward-in!=out"] = feedforward(3, 5, "none")

    def prenorm(kind):
        def build(rng):
            if kind == "attention":
                fn = numpy_vit.MhSelfAttention(6, 6, 3, dtype=DT, rng=rng)
            else:
                fn = numpy_vit.FeedForward(6, 6, 4, "none", dtype=DT, rng=rng)
            part = numpy_vit.PreNormChannels(6, fn)
            _randomize_norms(part, rng)
            return part, rng.standard_normal((2, 6, 2, 3)) * 1.5 - 0.3
        return build

    cases["PreNormChannels-MhSelfAttention"] = prenorm("attention")
    cases["PreNormChannels-FeedForward"] = prenorm("feedforward")

    def transformer(approx):
        def build(rng):
            part = numpy_vit.Transformer(2, 4, 8, 8, approx, dtype=DT, rng=rng)
            _randomize_norms(part, rng)
            return part, rng.standard_normal((2, 8, 2, 3))
        return build

    cases["Transformer-depth2"] = transformer("none")
    cases["Transformer-depth2-tanh"] = transformer("tanh")
    return cases


CASES = _make_cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_matches_finite_differences(name):
    rng = np.random.default_rng(sorted(CASES).index(name) + 1000)
    part, x = CASES[name](rng)
    for _, p in part.named_parameters():
        assert p.dtype == DT
    check_part(part, x, rng)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_vit_with_cross_entropy_matches_finite_differences(label_smoothing, approximate):
    """The whole model, loss included: d CE(ViT(x), y) / d (x, every parameter), on a non-square
    image (8 x 12, patch 2: a 4 x 6 grid), 8 channels in 2 heads of 4, depth 2, a batch of 3."""
    rng = np.random.default_rng(7 + int(label_smoothing * 10) + (approximate == "tanh"))
    model = numpy_vit.ViT((8, 12), 2, 3, 8, 2, 4, num_classes=10, approximate=approximate, dtype=DT, rng=rng)
    _randomize_norms(model, rng)
    x = rng.standard_normal((3, 3, 8, 12))
    labels = np.array([1, 7, 3])

    loss, dlogits = numpy_vit.cross_entropy(model.forward(x), labels, label_smoothing)
    dx = model.backward(dlogits)
    params = dict(model.named_parameters())
    grads = {k: np.array(v, copy=True) for k, v in model.grads.items()}
    assert sorted(grads) == sorted(params)

    def f_pair(arr, idx):
        old = arr[idx]
        arr[idx] = old + H
        fp = float(numpy_vit.cross_entropy(model.forward(x), labels, label_smoothing)[0])
        arr[idx] = old - H
        fm = float(numpy_vit.cross_entropy(model.forward(x), labels, label_smoothing)[0])
        arr[idx] = old
        return (fp - fm) / (2 * H)

    _check_array("ViT input", x, dx, f_pair, rng)
    for name, arr in params.items():
        _check_array(f"ViT parameter {name!r}", arr, grads[name], f_pair, rng)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
def test_cross_entropy_gradient_matches_finite_differences(label_smoothing):
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((4, 7)) * 3.0
    labels = np.array([0, 6, 3, 3])
    loss, dlogits = numpy_vit.cross_entropy(logits, labels, label_smoothing)
    assert dlogits.shape == logits.shape

    def f_pair(arr, idx):
        old = arr[idx]
        arr[idx] = old + H
        fp = float(numpy_vit.cross_entropy(arr, labels, label_smoothing)[0])
        arr[idx] = old - H
        fm = float(numpy_vit.cross_entropy(arr, labels, label_smoothing)[0])
        arr[idx] = old
        return (fp - fm) / (2 * H)

    _check_array("cross_entropy logits", logits, dlogits, f_pair, rng, k=logits.size)  # all 28


def test_helper_detects_a_wrong_gradient():
    """The checker itself must fail on a wrong backward: a Linear whose weight gradient is
    transposed-and-scaled is caught, naming the tensor."""
    rng = np.random.default_rng(3)
    part = Linear(4, 4, dtype=DT, rng=rng)
    x = rng.standard_normal((3, 4))
    original = part.backward

    def bad_backward(dout):
        dx = original(dout)
        part._grads["weight"] = part._grads["weight"].T.copy()
        return dx

    part.backward = bad_backward
    with pytest.raises(AssertionError, match="parameter 'weight'"):
        check_part(part, x, rng)
