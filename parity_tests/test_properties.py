"""Properties the NumPy model must have whatever its weights, in float64, NumPy only (no torch).

(a) attention is a softmax over the query-channel axis (-2): every column of every head's
    (hc x hc) attention matrix sums to one, rows in general do not;
(b) LayerNorm over channels normalises every position: zero mean, variance v / (v + eps);
(c) without the positional map every part is equivariant to permutations of the H*W positions,
    and the Embedding, whose pos_embedding is position-dependent, is not;
(d) the ViT treats the images of a batch independently (forward);
(e) and so does its backward: image i's input gradient depends on dlogits[i] only;
(f) GELU is elementwise whatever the memory layout of its input and upstream gradient;
(g) sum_cols, the bias gradients' column sum, is accurate whatever the number of rows.
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import numpy_vit
from numpy_vit.erf import SLICE
from numpy_vit.nn import GELU, LayerNorm

pytestmark = pytest.mark.parity

DT = np.float64

seeds = st.integers(0, 2 ** 32 - 1)
batches = st.integers(1, 3)
heads_st = st.integers(1, 3)
head_channels_st = st.integers(1, 8)
sides = st.integers(1, 5)


# ---------------------------------------------------------------------------------------------
# (a) attention columns sum to one

def _softmax_cols(a):
    e = np.exp(a - a.max(axis=-2, keepdims=True))
    return e / e.sum(axis=-2, keepdims=True)


def _conv1x1(conv, x):
    """An independent 1x1 convolution: einsum over channels plus bias."""
    w, b = conv._params["weight"], conv._params["bias"]
    return np.einsum("oi,bihw->bohw", w[:, :, 0, 0], x) + b[None, :, None, None]


def _attention_check(b, heads, hc, h, w, c_in, seed):
    rng = np.random.default_rng(seed)
    c = heads * hc
    att = numpy_vit.MhSelfAttention(c_in, c, hc, dtype=DT, rng=rng)
    x = rng.standard_normal((b, c_in, h, w))
    y = att.forward(x)
    keys, queries, values, attention, every_pair, shape = att._cache
    assert shape == (b, h, w)
    n = h * w
    assert attention.shape == (b, heads, hc, hc) and every_pair.shape == (b, c, c)

    # the cached k, q, v are the 1x1 convolutions of x, as (B, N, C) token views
    for conv, cached in ((att.k, keys), (att.q, queries), (att.v, values)):
        np.testing.assert_allclose(cached, _conv1x1(conv, x).reshape(b, c, n).transpose(0, 2, 1), rtol=0, atol=1e-12)

    def per_head(t):  # (B, N, C) -> (B, heads, hc, N)
        return t.transpose(0, 2, 1).reshape(b, heads, hc, n)
    # the cached attention of each head is softmax(q k^T / sqrt(hc)) over axis -2, recomputed independently
    attend = np.einsum("bgin,bgjn->bgij", per_head(queries), per_head(keys)) / np.sqrt(hc)
    np.testing.assert_allclose(attention, _softmax_cols(attend), rtol=0, atol=1e-12)
    # it is the diagonal (hc, hc) blocks of the all-heads matrix, whose every other entry (a pair of
    # channels of two different heads, masked to -inf before the softmax) is exactly 0
    head = np.arange(c) // hc
    for g in range(heads):
        np.testing.assert_array_equal(every_pair[:, g * hc:(g + 1) * hc, g * hc:(g + 1) * hc], attention[:, g])
    assert (every_pair[:, head[:, None] != head[None, :]] == 0).all()
    # and it is the one the output was made with
    mixed = np.einsum("bgij,bgjn->bgin", attention, per_head(values)).reshape(b, c, h, w)
    np.testing.assert_allclose(y, _conv1x1(att.unify_heads, mixed), rtol=0, atol=1e-12)

    col_sums = attention.sum(axis=-2)  # (B, heads, hc): sum over the query channel i
    np.testing.assert_allclose(col_sums, 1.0, rtol=0, atol=1e-12,
                               err_msg="attention columns (sum over axis -2) must sum to one")
    return attention


@given(b=batches, heads=heads_st, hc=head_channels_st, h=sides, w=sides, extra_in=st.integers(0, 3), seed=seeds)
def test_attention_columns_sum_to_one(b, heads, hc, h, w, extra_in, seed):
    attention = _attention_check(b, heads, hc, h, w, heads * hc + extra_in, seed)
    if hc >= 2:
        # rows sum to one only by accident: with hc columns summing to one the rows average one,
        # but they spread around it (by 1e-3 or more for weights at their initialisation)
        row_sums = attention.sum(axis=-1)
        assert np.abs(row_sums - 1.0).max() > 1e-8, "attention rows sum to one: softmax over the wrong axis?"


def test_attention_heads_of_one_channel_mix_nothing_and_pass_no_gradient_to_q_and_k():
    """hc = 1: every pair of channels but the diagonal is masked, so each column's softmax has one entry,
    attention is the identity, out = values, and the masked pairs' gradients (exactly 0) leave q and k none."""
    rng = np.random.default_rng(1)
    att = numpy_vit.MhSelfAttention(5, 6, 1, dtype=DT, rng=rng)
    x = rng.standard_normal((2, 5, 3, 4))
    y = att.forward(x)
    every_pair = att._cache[4]
    np.testing.assert_array_equal(every_pair, np.broadcast_to(np.eye(6), (2, 6, 6)))
    np.testing.assert_allclose(y, _conv1x1(att.unify_heads, _conv1x1(att.v, x)), rtol=0, atol=1e-12)
    att.backward(rng.standard_normal(y.shape))
    for name in ("k.weight", "k.bias", "q.weight", "q.bias"):
        assert (att.grads[name] == 0).all(), name
    assert np.abs(att.grads["v.weight"]).max() > 0.1


def test_attention_rows_do_not_sum_to_one():
    """Fixed case that separates axis -2 from axis -1: columns are one, rows clearly are not."""
    attention = _attention_check(2, 2, 4, 3, 5, 8, seed=0)
    row_sums = attention.sum(axis=-1)
    assert np.abs(row_sums - 1.0).max() > 1e-2, row_sums


# ---------------------------------------------------------------------------------------------
# (b) LayerNorm over channels

EPS = 1e-5


def _assert_normalised(z, x, eps):
    """z = (x - mean_c x) / sqrt(var_c x + eps) at every (b, h, w): mean 0, variance v / (v + eps)."""
    v = x.var(axis=1)  # (B, H, W), biased, as LayerNorm uses
    mean = z.mean(axis=1)
    var = z.var(axis=1)
    scale = np.abs(x - x.mean(axis=1, keepdims=True)).max() / np.sqrt(v.min() + eps)
    np.testing.assert_allclose(mean, 0.0, rtol=0, atol=1e-13 * max(scale, 1.0))
    np.testing.assert_allclose(var, v / (v + eps), rtol=1e-10, atol=1e-13)
    # so the variance is one up to eps / (v + eps): with v > 1e-3 here, within 1e-2 of one
    assert np.all(np.abs(var - 1.0) <= eps / (v + eps) * (1 + 1e-9) + 1e-13)


@given(b=batches, c=st.integers(2, 8), h=sides, w=sides, offset=st.floats(-10, 10), spread=st.floats(0.5, 5.0),
       affine=st.booleans(), seed=seeds)
def test_layernorm_normalises_every_position(b, c, h, w, offset, spread, affine, seed):
    rng = np.random.default_rng(seed)
    x = offset + spread * rng.standard_normal((b, c, h, w))
    assume(x.var(axis=1).min() > 1e-3)  # v well above eps: v / (v + eps) is then a sharp target
    ln = LayerNorm(c, dtype=DT)
    weight, bias = ln._params["weight"], ln._params["bias"]
    if affine:
        weight[...] = rng.uniform(0.5, 2.0, c) * rng.choice([-1.0, 1.0], c)
        bias[...] = rng.standard_normal(c)
    else:
        assert np.array_equal(weight, np.ones(c)) and np.array_equal(bias, np.zeros(c))
    y = ln.forward(x)
    z = (y - bias[:, None, None]) / weight[:, None, None]
    _assert_normalised(z, x, EPS)


def test_layernorm_eps_enters_the_variance():
    """A position with small variance v gets variance v / (v + eps), visibly below one."""
    rng = np.random.default_rng(5)
    x = 1e-3 * rng.standard_normal((1, 6, 2, 2))  # v ~ 1e-6, so v / (v + eps) ~ 0.09
    y = LayerNorm(6, dtype=DT).forward(x)
    v = x.var(axis=1)
    np.testing.assert_allclose(y.var(axis=1), v / (v + EPS), rtol=1e-10)
    assert y.var(axis=1).max() < 0.5


# ---------------------------------------------------------------------------------------------
# (c) permutation equivariance of the position-wise parts

def _permute_positions(x, perm):
    b, c, h, w = x.shape
    return x.reshape(b, c, h * w)[:, :, perm].reshape(b, c, h, w)


def _build_part(kind, c, hc, rng):
    if kind == "MhSelfAttention":
        return numpy_vit.MhSelfAttention(c, c, hc, dtype=DT, rng=rng)
    if kind == "FeedForward":
        return numpy_vit.FeedForward(c, c, 4, "none", dtype=DT, rng=rng)
    if kind == "PreNormChannels(MhSelfAttention)":
        part = numpy_vit.PreNormChannels(c, numpy_vit.MhSelfAttention(c, c, hc, dtype=DT, rng=rng))
        part.lnorm._params["weight"][...] = rng.uniform(0.5, 1.5, c)
        part.lnorm._params["bias"][...] = rng.standard_normal(c)
        return part
    if kind == "Transformer":
        return numpy_vit.Transformer(2, hc, c, c, "tanh", dtype=DT, rng=rng)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["MhSelfAttention", "FeedForward", "PreNormChannels(MhSelfAttention)", "Transformer"])
@given(data=st.data(), b=batches, heads=heads_st, hc=head_channels_st, h=sides, w=sides, seed=seeds)
def test_positionwise_parts_are_permutation_equivariant(kind, data, b, heads, hc, h, w, seed):
    perm = np.array(data.draw(st.permutations(range(h * w)), label="perm"), dtype=np.intp)
    rng = np.random.default_rng(seed)
    c = heads * hc
    part = _build_part(kind, c, hc, rng)
    x = rng.standard_normal((b, c, h, w))
    y = part.forward(x).copy()
    y_of_permuted = part.forward(_permute_positions(x, perm))
    np.testing.assert_allclose(y_of_permuted, _permute_positions(y, perm), rtol=0, atol=1e-12,
                               err_msg=f"{kind} is not equivariant to permuting the positions by {perm}")


def _permute_patches(img, perm, p):
    """Permute the p x p patches of an image (B, C, H*p, W*p) as the positions of the patch grid."""
    b, c, hp, wp = img.shape
    h, w = hp // p, wp // p
    patches = img.reshape(b, c, h, p, w, p).transpose(0, 1, 2, 4, 3, 5).reshape(b, c, h * w, p, p)
    patches = patches[:, :, perm]
    return patches.reshape(b, c, h, w, p, p).transpose(0, 1, 2, 4, 3, 5).reshape(b, c, hp, wp)


@given(data=st.data(), b=batches, h=sides, w=sides, p=st.integers(1, 3), seed=seeds)
def test_embedding_is_not_permutation_equivariant(data, b, h, w, p, seed):
    assume(h * w >= 2)
    perm = np.array(data.draw(st.permutations(range(h * w)), label="perm"), dtype=np.intp)
    assume(not np.array_equal(perm, np.arange(h * w)))
    rng = np.random.default_rng(seed)
    c = 4
    emb = numpy_vit.Embedding(c, h * w, (h, w), 3, p, dtype=DT, rng=rng)
    pos = emb._params["pos_embedding"]
    assert np.abs(pos).max() > 0
    img = rng.standard_normal((b, 3, h * p, w * p))
    y = emb.forward(img).copy()
    y_of_permuted = emb.forward(_permute_patches(img, perm, p))
    # the patch convolution alone moves with the patches (so the permutation is the right one) ...
    np.testing.assert_allclose(y_of_permuted - pos, _permute_positions(y - pos, perm), rtol=0, atol=1e-12)
    # ... and the positional map, which stays put, breaks equivariance by pos - permuted pos
    gap = np.abs(y_of_permuted - _permute_positions(y, perm)).max()
    expected_gap = np.abs(pos - _permute_positions(pos, perm)).max()
    assert gap > 1e-6 and np.isclose(gap, expected_gap, rtol=1e-9, atol=1e-12), (gap, expected_gap)


# ---------------------------------------------------------------------------------------------
# (d), (e) the images of a batch are independent

def _vit(seed=0):
    return numpy_vit.ViT((8, 12), 2, 3, 8, 2, 4, num_classes=10, dtype=DT, rng=seed)


def test_vit_logits_do_not_depend_on_the_rest_of_the_batch():
    rng = np.random.default_rng(1)
    model = _vit()
    x = rng.standard_normal((5, 3, 8, 12))
    logits = model.forward(x).copy()
    for i in range(5):
        alone = model.forward(x[i:i + 1].copy())
        np.testing.assert_allclose(logits[i:i + 1], alone, rtol=0, atol=1e-13,
                                   err_msg=f"image {i}: logits in a batch of 5 differ from alone")
    x2 = x.copy()
    x2[2] = rng.standard_normal((3, 8, 12))
    logits2 = model.forward(x2)
    others = [0, 1, 3, 4]
    np.testing.assert_allclose(logits2[others], logits[others], rtol=0, atol=1e-13,
                               err_msg="changing image 2 changed the logits of other images")
    assert np.abs(logits2[2] - logits[2]).max() > 1e-6, "changing image 2 left its own logits unchanged"


def test_vit_input_gradient_of_an_image_depends_on_its_own_dlogits_only():
    rng = np.random.default_rng(2)
    model = _vit(3)
    x = rng.standard_normal((5, 3, 8, 12))
    dlogits = rng.standard_normal((5, 10))
    model.forward(x)
    dx_full = model.backward(dlogits).copy()

    zeroed = [1, 3]
    d = dlogits.copy()
    d[zeroed] = 0.0
    model.forward(x)
    dx = model.backward(d).copy()
    assert np.all(dx[zeroed] == 0.0), "a zero dlogits row must give a zero input gradient"
    kept = [0, 2, 4]
    np.testing.assert_allclose(dx[kept], dx_full[kept], rtol=0, atol=1e-13)
    assert np.abs(dx_full[zeroed]).max() > 1e-6

    # each image's gradient in the batch equals its gradient computed alone
    for i in range(5):
        model.forward(x[i:i + 1].copy())
        alone = model.backward(dlogits[i:i + 1].copy())
        np.testing.assert_allclose(dx_full[i:i + 1], alone, rtol=0, atol=1e-13,
                                   err_msg=f"image {i}: input gradient in the batch differs from alone")


# ---------------------------------------------------------------------------------------------
# (f) GELU whatever the layout: it works on 1-D views of the memory, slice by slice


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_is_the_same_map_in_every_layout(dtype, approximate):
    """Channels-last (a conv's output), C order, a strided slice, reversed channels, and an upstream gradient of
    another layout: bit for bit the values and gradients of the C-ordered computation, over more than one
    slice of SLICE elements (the last one partial); a dense input's layout is kept."""
    rng = np.random.default_rng(0)
    shape = (3, 5, 2 * (SLICE // 40) + 7, 4)  # > 2 * SLICE elements
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    g = GELU(approximate)
    y_ref, dx_ref = g.forward(x).copy(), g.backward(dout).copy()
    channels_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    wide = np.zeros(shape[:3] + (2 * shape[3],), dtype)
    wide[..., ::2] = x
    layouts = {"channels-last": channels_last, "C order": x, "strided slice": wide[..., ::2],
               "reversed channels": x[:, ::-1].copy()[:, ::-1]}
    for name, xin in layouts.items():
        for dname, d in (("C", dout), ("channels-last", np.ascontiguousarray(dout.transpose(0, 2, 3, 1))
                                        .transpose(0, 3, 1, 2))):
            y = g.forward(xin)
            np.testing.assert_array_equal(y, y_ref, err_msg=f"forward, {name}")
            np.testing.assert_array_equal(g.backward(d), dx_ref, err_msg=f"backward, {name}, dout {dname}")
            if xin.flags.c_contiguous or xin is channels_last:
                assert y.strides == xin.strides, name


@pytest.mark.parametrize("m", [1, 7, 255, 256, 257, 2 * 256 + 100, 12_495, 12_544])
def test_sum_cols_is_the_column_sum_in_blocks_of_256_rows_whatever_the_row_count(m):
    """A bias gradient's sum over B*N rows: the blocks' partial sums keep float32's error several times below
    one running sum's (12,495 rows, a count that 256 does not divide, as well as 12,544 rows)."""
    from numpy_vit.nn import sum_cols

    x = np.random.default_rng(m).standard_normal((m, 32)).astype(np.float32) + np.float32(100)
    exact = x.astype(np.float64).sum(axis=0)
    got = sum_cols(x)
    assert got.shape == (32,) and got.dtype == np.float32
    np.testing.assert_allclose(got, exact, rtol=1e-6)
    if m >= 12_000:  # float32's running sum over as many rows is off by several times more
        assert np.abs(got - exact).max() * 4 < np.abs(np.cumsum(x, axis=0, dtype=np.float32)[-1] - exact).max()
