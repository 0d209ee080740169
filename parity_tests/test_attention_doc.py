"""docs/attention.md, formula by formula, and torch_vit/attention.py.

Everything numeric is float64 NumPy. Each backward formula of the doc is written out again here
(with einsum, independently of numpy_vit) and checked twice: against a centred finite difference
of the documented forward, and against MhSelfAttention.backward / LayerNorm.backward /
Conv2d.backward. The code lines the doc quotes must be in the source; the flop table's formulas
must give its numbers and the numbers must equal counts taken from the tensors' shapes.

Finite differences use h = 1e-6 and the normwise error of test_finite_differences.py:
|analytic_i - numeric_i| / max(max_j |analytic_j|, |numeric_i|, 1e-8) <= 1e-6.
"""

import copy
import math
import os
import pathlib
import re

import numpy as np
import pytest

import numpy_vit as nv
import numpy_vit.nn
from numpy_vit.nn import Conv2d, LayerNorm, softmax

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "attention.md"
SEED = dict(C=32, hc=8, heads=4, N=256, depth=4)
H = 1e-6
REL_TOL = 1e-6


def _fd_check(f, array, analytic, count=None, rng=None):
    """Centred differences of the scalar f() in the entries of ``array`` (all, or ``count`` drawn)."""
    flat = list(np.ndindex(array.shape))
    if count is not None and count < len(flat):
        rng = np.random.default_rng(0) if rng is None else rng
        flat = [flat[i] for i in rng.choice(len(flat), count, replace=False)]
    scale = float(np.abs(analytic).max())
    worst = 0.0
    for idx in flat:
        old = array[idx]
        array[idx] = old + H
        plus = f()
        array[idx] = old - H
        minus = f()
        array[idx] = old
        num = (plus - minus) / (2 * H)
        worst = max(worst, abs(analytic[idx] - num) / max(scale, abs(num), 1e-8))
    assert worst <= REL_TOL, f"finite difference error {worst:.2e}"


def _swap(a):
    return a.swapaxes(-2, -1)


def _per_head(m):
    """The doc's per-head tensors from the module's cache: k, q, v (B, heads, hc, N) from its (B, N, C) token
    views, and A (B, heads, hc, hc), the diagonal blocks of its all-heads (B, C, C) attention."""
    keys, queries, values, attention, _, _ = m._saved()
    b, n, _ = keys.shape

    def heads(t):
        return t.swapaxes(1, 2).reshape(b, m.heads, m.head_channels, n)
    return heads(keys), heads(queries), heads(values), attention


@pytest.fixture(scope="module")
def block():
    """A seed-sized MhSelfAttention (C 32, hc 8, 4 heads) on 2 images of 8x8, forward and backward
    run; with the cache, the upstream gradient and d out (after unify_heads.backward)."""
    rng = np.random.default_rng(0)
    m = nv.MhSelfAttention(32, 32, 8, dtype=np.float64, rng=1)
    x = rng.standard_normal((2, 32, 8, 8))
    y = m.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = m.backward(dy)
    grads = {k: v.copy() for k, v in m.grads.items()}
    keys, queries, values, attention = _per_head(m)
    # d out: the unify_heads conv backward, written out (W^T dy), viewed per head
    wu = m.unify_heads._params["weight"][:, :, 0, 0]
    dout = np.einsum("oc,bon->bcn", wu, dy.reshape(2, 32, -1)).reshape(values.shape)
    return dict(m=m, x=x, y=y, dy=dy, dx=dx, grads=grads, k=keys, q=queries, v=values, A=attention,
                dout=dout, s=m.scale)


# ----------------------------------------------------------------------------------------------
# forward


def test_doc_states_the_seed_shapes_and_scale():
    text = DOC.read_text()
    assert "C = 32, hc = 8, heads = 4, N = 16·16 = 256" in text
    m = nv.MhSelfAttention(32, 32, 8, dtype=np.float64, rng=0)
    assert m.heads == SEED["heads"] and m.head_channels == SEED["hc"]
    assert re.search(r"s = hc\*\*-0\.5 = 0\.3536", text) and abs(m.scale - 0.3536) < 5e-5
    m.forward(np.zeros((3, 32, 16, 16)))
    keys, queries, values, _, every_pair, _ = m._saved()  # the code's all-heads form
    assert keys.shape == queries.shape == values.shape == (3, 256, 32) and every_pair.shape == (3, 32, 32)
    k, q, v, A = _per_head(m)  # the doc's per-head form
    assert k.shape == q.shape == v.shape == (3, 4, 8, 256) and A.shape == (3, 4, 8, 8)


@pytest.mark.parity
def test_forward_formulas(block):
    """k, q, v = 1x1 convs viewed per head; P = q k^T; S = s P; A = softmax over axis -2."""
    m, x = block["m"], block["x"]
    xs = x.reshape(2, 32, -1)
    for name in "kqv":
        w, b = m._modules[name]._params["weight"][:, :, 0, 0], m._modules[name]._params["bias"]
        ref = (np.einsum("oc,bcn->bon", w, xs) + b[:, None]).reshape(2, 4, 8, -1)
        np.testing.assert_allclose(block[name], ref, rtol=0, atol=1e-12)
    P = np.einsum("bhin,bhjn->bhij", block["q"], block["k"])
    S = block["s"] * P
    A = np.exp(S) / np.exp(S).sum(axis=-2, keepdims=True)
    np.testing.assert_allclose(block["A"], A, rtol=0, atol=1e-14)
    np.testing.assert_allclose(softmax(S, axis=-2), A, rtol=0, atol=1e-14)  # max subtraction changes nothing


@pytest.mark.parity
def test_columns_sum_to_one_rows_do_not(block):
    A = block["A"]
    np.testing.assert_allclose(A.sum(axis=-2), 1.0, rtol=0, atol=1e-14)  # every column
    rows = A.sum(axis=-1)  # total weight each output channel receives
    assert np.abs(rows - 1).max() > 0.1  # rows in general do not sum to one ...
    assert (rows > 0).all() and (rows < SEED["hc"]).all()  # ... anywhere in (0, hc)
    np.testing.assert_allclose(rows.sum(axis=-1), SEED["hc"], rtol=1e-14)


@pytest.mark.parity
def test_out_is_A_v_and_equals_the_input_of_unify_heads(block):
    out = np.einsum("bhij,bhjn->bhin", block["A"], block["v"])
    before_unify = block["m"].unify_heads._saved()[0]  # Conv2d caches its input as rows (B*N, C_in)
    np.testing.assert_allclose(out.reshape(2, 32, -1).transpose(0, 2, 1).reshape(-1, 32), before_unify,
                               rtol=0, atol=1e-13)
    wu = block["m"].unify_heads._params
    y = np.einsum("oc,bcn->bon", wu["weight"][:, :, 0, 0], out.reshape(2, 32, -1)) + wu["bias"][:, None]
    np.testing.assert_allclose(y.reshape(block["y"].shape), block["y"], rtol=0, atol=1e-13)


@pytest.mark.parity
def test_columns_conserve_the_channel_sum(block):
    out = block["A"] @ block["v"]
    np.testing.assert_allclose(out.sum(axis=-2), block["v"].sum(axis=-2), rtol=0, atol=1e-12)


@pytest.mark.parity
def test_same_mix_at_every_position(block):
    A, v = block["A"], block["v"]
    cols = block["m"].unify_heads._saved()[0]  # (B*N, C): one row of channels per position
    out = cols.reshape(2, -1, 32).transpose(0, 2, 1).reshape(v.shape)
    for n in range(v.shape[-1]):
        np.testing.assert_allclose(out[..., n], np.einsum("bhij,bhj->bhi", A, v[..., n]), rtol=0, atol=1e-13)
    # per image the whole module is one 1x1 conv: y_n = Wu blockdiag(A) (Wv x_n + bv) + bu
    m, x = block["m"], block["x"]
    wv, bv = m.v._params["weight"][:, :, 0, 0], m.v._params["bias"]
    wu, bu = m.unify_heads._params["weight"][:, :, 0, 0], m.unify_heads._params["bias"]
    for b in range(2):
        mix = np.zeros((32, 32))
        for h in range(4):
            mix[8 * h:8 * h + 8, 8 * h:8 * h + 8] = A[b, h]
        y = wu @ (mix @ (wv @ x[b].reshape(32, -1) + bv[:, None])) + bu[:, None]
        np.testing.assert_allclose(y.reshape(block["y"][b].shape), block["y"][b], rtol=0, atol=1e-12)


@pytest.mark.parity
def test_permuting_positions_permutes_the_output(block):
    m, x = copy.deepcopy(block["m"]), block["x"]  # a copy: the fixture's cache is what other tests read
    perm = np.random.default_rng(3).permutation(64)
    xp = x.reshape(2, 32, 64)[..., perm].reshape(x.shape)
    yp = m.forward(xp)
    np.testing.assert_allclose(yp.reshape(2, 32, 64), block["y"].reshape(2, 32, 64)[..., perm], rtol=0, atol=1e-12)


@pytest.mark.parity
def test_attend_grows_with_N_tiling_multiplies_it_by_four():
    m = nv.MhSelfAttention(32, 32, 8, dtype=np.float64, rng=2)
    x = np.random.default_rng(4).standard_normal((1, 32, 8, 8))

    def attend(inp):
        m.forward(inp)
        k, q, *_ = _per_head(m)
        return q @ _swap(k) * m.scale

    np.testing.assert_allclose(attend(np.tile(x, (1, 1, 2, 2))), 4 * attend(x), rtol=1e-12, atol=1e-12)


def test_seed_model_starts_with_large_attend_and_peaked_columns():
    """The doc: at initialisation |S| is large on the seed model (here between 20 and 45 for N(0, 1) images), so the
    columns are peaked: every head's mean column entropy under half of log 8."""
    from torch_vit.attention import entropy

    m = nv.ViT(32, 2, 3, 32, 4, 8, dtype=np.float64, rng=0)
    for seed in range(3):
        m.forward(np.random.default_rng(seed).standard_normal((1, 3, 32, 32)))
        biggest = 0.0
        for attn, _ in m.transformer.layers:
            k, q, _, A = _per_head(attn.fn)
            biggest = max(biggest, float(np.abs(q @ _swap(k) * attn.fn.scale).max()))
            assert (entropy(A[0]) < 0.5 * math.log(8)).all()
        assert 20 < biggest < 45


# ----------------------------------------------------------------------------------------------
# backward, each formula: finite difference of the documented forward, and the module's own pieces


def _loss_of(block, A=None, v=None, S=None, P=None, q=None, k=None):
    """sum(out * d out) with out rebuilt from whichever intermediate is given (the doc's chain)."""
    v = block["v"] if v is None else v
    if A is None:
        if S is None:
            if P is None:
                q = block["q"] if q is None else q
                k = block["k"] if k is None else k
                P = np.einsum("bhin,bhjn->bhij", q, k)
            S = block["s"] * P
        A = softmax(S, axis=-2)
    return float(np.sum(np.einsum("bhij,bhjn->bhin", A, v) * block["dout"]))


def _doc_grads(block):
    """The doc's backward table, written out with einsum."""
    A, v, q, k, dout, s = (block[n] for n in ("A", "v", "q", "k", "dout", "s"))
    dA = np.einsum("bhin,bhjn->bhij", dout, v)  # dA = d out v^T
    dv = np.einsum("bhij,bhin->bhjn", A, dout)  # dv = A^T d out
    dS = A * (dA - (dA * A).sum(axis=-2, keepdims=True))  # sum over i, the softmax's axis
    dP = s * dS
    dq = np.einsum("bhij,bhjn->bhin", dP, k)  # dq = dP k
    dk = np.einsum("bhij,bhin->bhjn", dP, q)  # dk = dP^T q
    return dict(dA=dA, dv=dv, dS=dS, dP=dP, dq=dq, dk=dk)


@pytest.mark.parity
def test_dA_by_finite_differences(block):
    A = block["A"].copy()
    _fd_check(lambda: _loss_of(block, A=A), A, _doc_grads(block)["dA"])


@pytest.mark.parity
def test_dv_by_finite_differences(block):
    v = block["v"].copy()
    _fd_check(lambda: _loss_of(block, v=v), v, _doc_grads(block)["dv"], count=200)


@pytest.mark.parity
def test_dS_by_finite_differences(block):
    S = block["s"] * np.einsum("bhin,bhjn->bhij", block["q"], block["k"])
    _fd_check(lambda: _loss_of(block, S=S), S, _doc_grads(block)["dS"])


@pytest.mark.parity
def test_dP_is_scale_times_dS_by_finite_differences(block):
    P = np.einsum("bhin,bhjn->bhij", block["q"], block["k"])
    _fd_check(lambda: _loss_of(block, P=P), P, _doc_grads(block)["dP"])


@pytest.mark.parity
def test_dq_by_finite_differences(block):
    q = block["q"].copy()
    _fd_check(lambda: _loss_of(block, q=q), q, _doc_grads(block)["dq"], count=200)


@pytest.mark.parity
def test_dk_by_finite_differences(block):
    k = block["k"].copy()
    _fd_check(lambda: _loss_of(block, k=k), k, _doc_grads(block)["dk"], count=200)


@pytest.mark.parity
def test_softmax_jacobian_entry_by_entry():
    """da_i / dS_l = a_i (delta_il - a_l) for one column, by finite differences."""
    s = np.random.default_rng(5).standard_normal(8)
    a = softmax(s, axis=0)
    jac = np.diag(a) - np.outer(a, a)
    for l in range(8):
        e = np.zeros(8)
        e[l] = H
        num = (softmax(s + e, axis=0) - softmax(s - e, axis=0)) / (2 * H)
        np.testing.assert_allclose(num, jac[:, l], rtol=0, atol=1e-9)


@pytest.mark.parity
def test_softmax_backward_is_the_doc_formula_on_axis_minus_2(block):
    dA = _doc_grads(block)["dA"]
    np.testing.assert_allclose(nv.softmax_backward(dA, block["A"], axis=-2), _doc_grads(block)["dS"],
                               rtol=0, atol=1e-15)
    # and the axis matters: the row-wise formula is a different tensor
    assert np.abs(nv.softmax_backward(dA, block["A"], axis=-1) - _doc_grads(block)["dS"]).max() > 1e-3


@pytest.mark.parity
def test_doc_backward_reproduces_the_modules_dx_and_every_gradient(block):
    """From the cached k, q, v, A: the doc's formulas, then the three conv backwards (dx = W^T d
    summed over k, q, v; dW = sum dy x^T; db = sum dy), against MhSelfAttention.backward."""
    m, x, dy = block["m"], block["x"], block["dy"]
    g = _doc_grads(block)
    xs = x.reshape(2, 32, -1)
    dx = np.zeros_like(xs)
    mine = {}
    for name, d in (("k", g["dk"]), ("q", g["dq"]), ("v", g["dv"])):
        d = d.reshape(2, 32, -1)
        w = m._modules[name]._params["weight"][:, :, 0, 0]
        dx += np.einsum("oc,bon->bcn", w, d)
        mine[f"{name}.weight"] = np.einsum("bon,bcn->oc", d, xs)[:, :, None, None]
        mine[f"{name}.bias"] = d.sum(axis=(0, 2))
    out = (block["A"] @ block["v"]).reshape(2, 32, -1)
    mine["unify_heads.weight"] = np.einsum("bon,bcn->oc", dy.reshape(2, 32, -1), out)[:, :, None, None]
    mine["unify_heads.bias"] = dy.sum(axis=(0, 2, 3))
    np.testing.assert_allclose(dx.reshape(x.shape), block["dx"], rtol=0, atol=1e-12)
    assert set(mine) == set(block["grads"])
    for name, grad in block["grads"].items():
        np.testing.assert_allclose(mine[name], grad, rtol=0, atol=1e-11, err_msg=name)


@pytest.mark.parity
def test_modules_dx_by_finite_differences():
    m = nv.MhSelfAttention(32, 32, 8, dtype=np.float64, rng=6)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 32, 4, 4))
    dy = rng.standard_normal((2, 32, 4, 4))
    m.forward(x)
    dx = m.backward(dy)
    _fd_check(lambda: float(np.sum(m.forward(x) * dy)), x, dx, count=60)


@pytest.mark.parity
def test_conv_backward_formulas():
    """dx = W^T dy, dW = sum over b, n of dy x^T, db = sum dy: against Conv2d.backward and by FD."""
    conv = Conv2d(6, 5, 1, dtype=np.float64, rng=np.random.default_rng(8))
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 6, 3, 4))
    dy = rng.standard_normal((2, 5, 3, 4))
    conv.forward(x)
    dx = conv.backward(dy)
    w = conv._params["weight"]
    d, xs = dy.reshape(2, 5, -1), x.reshape(2, 6, -1)
    np.testing.assert_allclose(dx, np.einsum("oc,bon->bcn", w[:, :, 0, 0], d).reshape(x.shape), atol=1e-14)
    np.testing.assert_allclose(conv.grads["weight"][:, :, 0, 0], np.einsum("bon,bcn->oc", d, xs), atol=1e-13)
    np.testing.assert_allclose(conv.grads["bias"], d.sum(axis=(0, 2)), atol=1e-13)
    f = lambda: float(np.sum(conv.forward(x) * dy))  # noqa: E731
    _fd_check(f, x, dx)
    _fd_check(f, w, conv.grads["weight"].copy())
    _fd_check(f, conv._params["bias"], conv.grads["bias"].copy())


@pytest.mark.parity
def test_layernorm_formulas():
    """y = gamma (x - mu) r + beta over channels; dx = r (dxhat - mean dxhat - xhat mean(dxhat xhat))."""
    rng = np.random.default_rng(10)
    ln = LayerNorm(32, dtype=np.float64)
    ln._params["weight"] = rng.standard_normal(32)
    ln._params["bias"] = rng.standard_normal(32)
    x = 2 * rng.standard_normal((2, 32, 3, 5)) + 1
    dy = rng.standard_normal(x.shape)
    y = ln.forward(x)
    dx = ln.backward(dy)
    g, b = ln._params["weight"][:, None, None], ln._params["bias"][:, None, None]

    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    r = 1 / np.sqrt(var + 1e-5)
    xhat = (x - mu) * r
    np.testing.assert_allclose(y, g * xhat + b, rtol=0, atol=1e-13)
    dxhat = g * dy
    mine = r * (dxhat - dxhat.mean(axis=1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))
    np.testing.assert_allclose(dx, mine, rtol=0, atol=1e-13)
    np.testing.assert_allclose(ln.grads["weight"], (dy * xhat).sum(axis=(0, 2, 3)), atol=1e-12)
    np.testing.assert_allclose(ln.grads["bias"], dy.sum(axis=(0, 2, 3)), atol=1e-12)
    f = lambda: float(np.sum(ln.forward(x) * dy))  # noqa: E731
    _fd_check(f, x, dx)
    _fd_check(f, ln._params["weight"], ln.grads["weight"].copy())


# ----------------------------------------------------------------------------------------------
# the doc's text: quoted code, the flop table, linear cost


def _sources():
    return " ".join(re.sub(r"\s+", " ", (ROOT / p).read_text())
                    for p in ("numpy_vit/model.py", "numpy_vit/nn.py", "torch_vit/model.py", "torch_vit/attention.py"))


def test_every_quoted_name_and_code_line_is_in_the_source():
    text, src = DOC.read_text(), _sources()
    spans = re.findall(r"`([^`\n]+)`", text.split("```", 1)[0] + text.rsplit("```", 1)[1])
    assert len(spans) > 25
    words = set(re.findall(r"\w+", src))
    for span in spans:
        if re.fullmatch(r"[\w.-]+/[\w./-]+", span):
            assert (ROOT / span).exists(), span
        elif "." in span and re.fullmatch(r"[\w.]+", span):  # Class.method, quoted as is or found on the class
            head, *rest = span.split(".")
            owner = getattr(nv, head, None) or getattr(numpy_vit.nn, head, None)
            assert span in src or (owner is not None and _has(owner, rest)), span
        elif re.fullmatch(r"\w+", span):
            assert span in words, span
        else:
            assert re.sub(r"\s+", " ", span) in src, f"the doc quotes code not in the source: {span}"


def _has(owner, names):
    for name in names:
        if not hasattr(owner, name):
            return False
        owner = getattr(owner, name)
    return True


def _flop_table():
    text = DOC.read_text()
    block = text.split("<!-- flops:", 1)[1].split("```", 2)[1]
    rows = {}
    for line in block.strip().splitlines():
        m = re.fullmatch(r"(.+?)\s{2,}([\w*+ ]+?)\s+=\s+([\d,]+)", line.strip())
        assert m, f"unparsed flop line: {line!r}"
        rows[m.group(1)] = (m.group(2), int(m.group(3).replace(",", "")))
    return rows


def _macs(a, b):
    """Multiply-adds of a matmul (..., m, k) @ (..., k, n), from the shapes alone."""
    assert a[-1] == b[-2] and a[:-2] == b[:-2], (a, b)
    return math.prod(a[:-2]) * a[-2] * a[-1] * b[-1]


def _counts(h, w):
    """Multiply-adds from the tensors a seed-sized model builds on one h x w patch grid."""
    m = nv.ViT((2 * h, 2 * w), 2, 3, 32, 4, 8, dtype=np.float64, rng=0)
    m.forward(np.zeros((1, 3, 2 * h, 2 * w)))
    blocks = [attn.fn for attn, _ in m.transformer.layers]
    k, q, v, A = _per_head(blocks[0])
    sh = lambda a: a.shape  # noqa: E731
    T = lambda s: s[:-2] + (s[-1], s[-2])  # noqa: E731
    head = lambda s: s[2:]  # noqa: E731  (one head of one image)
    qk1, av1 = _macs(head(sh(q)), T(head(sh(k)))), _macs(head(sh(A)), head(sh(v)))
    both_block = _macs(sh(q)[1:], T(sh(k))[1:]) + _macs(sh(A)[1:], sh(v)[1:])
    both_all = sum(_macs(sh(hq), T(sh(hk))) + _macs(sh(hA), sh(hv)) for hk, hq, hv, hA in map(_per_head, blocks))
    # the code's products, all heads at once: queries^T @ keys (C, N) @ (N, C), values @ attention^T (N, C) @ (C, C)
    keys, queries, values, _, every_pair, _ = blocks[0]._saved()
    code_block = _macs(T(sh(queries))[1:], sh(keys)[1:]) + _macs(sh(values)[1:], T(sh(every_pair))[1:])
    # backward: dA = dout v^T, dv = A^T dout, dq = dP k, dk = dP^T q (dout has v's shape, dP A's)
    back1 = (_macs(head(sh(v)), T(head(sh(v)))) + _macs(T(head(sh(A))), head(sh(v)))
             + _macs(head(sh(A)), head(sh(k))) + _macs(T(head(sh(A))), head(sh(q))))
    # token attention on the same q, k, v taken as N tokens of hc features: (N, hc) @ (hc, N), (N, N) @ (N, hc)
    tq, tk, tv = T(sh(q)), T(sh(k)), T(sh(v))  # (1, heads, N, hc)
    tA = tq[:-1] + (tk[-2],)
    token1 = _macs(head(tq), T(head(tk))) + _macs(head(tA), head(tv))
    token_block = _macs(tq[1:], T(tk)[1:]) + _macs(tA[1:], tv[1:])
    cols = blocks[0].unify_heads._saved()[0].shape  # (N, C): one row of channels per position
    convs = sum(_macs(c._params["weight"].shape[:2], cols[::-1]) for c in (blocks[0].k, blocks[0].q, blocks[0].v,
                                                                            blocks[0].unify_heads))
    return {
        "q k^T, one head": qk1,
        "A v, one head": av1,
        "both products, one block": both_block,
        "both products, all blocks": both_all,
        "the code's all-heads products, one block": code_block,
        "backward products, one head": back1,
        "token attention both products, one head": token1,
        "token attention both products, one block": token_block,
        "k q v unify_heads convs, one block": convs,
    }


def test_flop_table_formulas_numbers_and_counts():
    table, counted = _flop_table(), _counts(16, 16)
    assert set(table) == set(counted)
    for label, (formula, number) in table.items():
        assert eval(formula, {"__builtins__": {}}, dict(SEED)) == number, label  # the formula gives the number
        assert counted[label] == number, f"{label}: doc {number}, counted from the shapes {counted[label]}"
    ratio = table["token attention both products, one block"][1] / table["both products, one block"][1]
    assert ratio == SEED["N"] / SEED["hc"] == 32  # "the ratio of the two is N / hc = 32"
    assert table["k q v unify_heads convs, one block"][1] == 8 * table["both products, one block"][1]  # "8x more"
    # "heads = 4 times the per-head count", "half of the convolutions' count"
    assert table["the code's all-heads products, one block"][1] == SEED["heads"] * table["both products, one block"][1]
    assert 2 * table["the code's all-heads products, one block"][1] == table["k q v unify_heads convs, one block"][1]


def test_cost_is_linear_in_N_for_channel_attention_and_quadratic_for_token_attention():
    sizes = [(4, 4), (8, 8), (16, 16), (32, 16)]
    counts = [_counts(h, w) for h, w in sizes]
    ns = [h * w for h, w in sizes]
    for c, n in zip(counts, ns):
        for label in ("q k^T, one head", "A v, one head", "both products, one block", "backward products, one head"):
            assert c[label] * ns[0] == counts[0][label] * n  # a constant per position: linear in N
        assert c["token attention both products, one block"] == 2 * SEED["heads"] * n * n * SEED["hc"]
    for a, b, na, nb in zip(counts, counts[1:], ns, ns[1:]):
        assert b["both products, one block"] * na == a["both products, one block"] * nb  # doubles with N
        assert b["token attention both products, one block"] * na * na == a["token attention both products, one block"] * nb * nb


# ----------------------------------------------------------------------------------------------
# torch_vit/attention.py


@pytest.fixture(scope="module")
def seed_pair():
    import torch_vit.model as tv
    from torch_vit.parity import to_torch

    out = {}
    for dt in (np.float64, np.float32):
        m = nv.ViT(32, 2, 3, 32, 4, 8, dtype=dt, rng=0)
        out[np.dtype(dt)] = (m, to_torch(m, tv.ViT(32, 2, 3, 32, 4, 8)))
    return out


@pytest.mark.parity
def test_attention_maps_are_softmax_of_q_k_from_each_blocks_input(seed_pair):
    """attention_maps against the doc's forward written out here with einsum: each block's input
    (the patch embedding by hand for block 0, the previous block's output after it), its channel
    LayerNorm, q and k by the 1x1 convs, A = softmax(s q k^T) over the query axis -2."""
    from torch_vit.attention import attention_maps

    m, _ = seed_pair[np.dtype(np.float64)]
    x = np.random.default_rng(11).standard_normal((1, 3, 32, 32))
    maps = attention_maps(m, x)
    assert len(maps) == 4 and all(a.shape == (4, 8, 8) for a in maps)
    patches = x.reshape(1, 3, 16, 2, 16, 2)  # (b, c, i, p, j, q): pixel (2i + p, 2j + q)
    emb = m.embedding._params
    w_patch, b_patch = m.embedding.patch._params["weight"], m.embedding.patch._params["bias"]
    h = np.einsum("bcipjq,ocpq->boij", patches, w_patch) + b_patch[:, None, None] + emb["pos_embedding"]
    inputs = [h] + m.transformer.block_outputs[:-1]
    for a, (attn, _), h in zip(maps, m.transformer.layers, inputs):
        ln = attn.lnorm._params
        mu, var = h.mean(axis=1, keepdims=True), h.var(axis=1, keepdims=True)
        xn = ((h - mu) / np.sqrt(var + 1e-5) * ln["weight"][:, None, None] + ln["bias"][:, None, None]).reshape(32, -1)
        q, k = ((attn.fn._modules[n]._params["weight"][:, :, 0, 0] @ xn + attn.fn._modules[n]._params["bias"][:, None])
                .reshape(4, 8, -1) for n in "qk")
        S = np.einsum("hin,hjn->hij", q, k) * 8 ** -0.5
        A = np.exp(S - S.max(axis=-2, keepdims=True))
        np.testing.assert_allclose(a, A / A.sum(axis=-2, keepdims=True), rtol=0, atol=1e-12)
        np.testing.assert_allclose(a.sum(axis=-2), 1.0, atol=1e-14)
    np.testing.assert_array_equal(attention_maps(m, x[0])[0], maps[0])  # (C, H, W) works too
    with pytest.raises(ValueError, match="one image"):
        attention_maps(m, np.zeros((2, 3, 32, 32)))


@pytest.mark.parity
@pytest.mark.parametrize("dtype, bound", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_maps_match_torch(seed_pair, dtype, bound):
    """float64: ~1e-15. float32: ~1e-6 at worst, not below: |attend| reaches ~30 at initialisation,
    where float32's spacing is 1.9e-6, so the rounding of attend alone moves A by up to ~5e-7."""
    from torch_vit.attention import check_against_torch

    m, t = seed_pair[np.dtype(dtype)]
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(dtype)
        assert check_against_torch(m, t, x) < bound


def test_entropy_uniform_one_hot_and_mixed():
    from torch_vit.attention import entropy

    hc = 8
    assert np.allclose(entropy(np.full((3, hc, hc), 1 / hc)), math.log(hc), atol=1e-15)
    one_hot = np.eye(hc)[np.random.default_rng(12).permutation(hc)]
    assert entropy(one_hot[None]).tolist() == [0.0]
    col = np.array([0.5, 0.25, 0.25, 0, 0, 0, 0, 0])
    mixed = np.tile(col[:, None], (1, hc))  # every column the same distribution
    assert abs(entropy(mixed) - 1.5 * math.log(2)) < 1e-15
    half = np.concatenate([np.full((hc, hc // 2), 1 / hc), np.eye(hc)[:, :hc // 2]], axis=1)
    assert abs(entropy(half) - math.log(hc) / 2) < 1e-15  # mean over columns


def test_positional_similarity_diagonal_symmetric_and_known_values():
    import torch

    from torch_vit.attention import positional_similarity

    pos = np.random.default_rng(13).standard_normal((1, 32, 5, 7))
    sim = positional_similarity(pos)
    assert sim.shape == (35, 35)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-15)
    np.testing.assert_array_equal(sim, sim.T)
    assert np.abs(sim).max() <= 1 + 1e-15
    i, j, a, b = 2, 3, 4, 1  # position (i, j) is row i*w + j
    u, v = pos[0, :, i, j], pos[0, :, a, b]
    assert abs(sim[i * 7 + j, a * 7 + b] - u @ v / np.linalg.norm(u) / np.linalg.norm(v)) < 1e-15
    np.testing.assert_allclose(positional_similarity(torch.from_numpy(pos)), sim, atol=1e-15)
    ortho = np.eye(4).reshape(4, 2, 2)  # four orthogonal positions
    np.testing.assert_allclose(positional_similarity(ortho), np.eye(4), atol=1e-15)


def _check_png(path, min_side=300):
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
        pixels = np.asarray(im.convert("L"), dtype=float)
    assert min_side <= w <= 4000 and min_side <= h <= 4000, (w, h)
    assert pixels.std() > 10  # not a blank canvas
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]  # no temp file left


def test_plot_attention_png(seed_pair, tmp_path):
    from torch_vit.attention import attention_maps, plot_attention

    m, _ = seed_pair[np.dtype(np.float64)]
    maps = attention_maps(m, np.random.default_rng(14).standard_normal((1, 3, 32, 32)))
    path = tmp_path / "sub" / "attention.png"
    plot_attention(maps, path, "seed model, random weights")
    _check_png(path, min_side=600)  # 4 x 4 heat maps
    plot_attention(maps[:1], path, "again")  # overwrites in place
    _check_png(path)


def test_plot_positional_similarity_png(seed_pair, tmp_path):
    from torch_vit.attention import plot_positional_similarity

    m, _ = seed_pair[np.dtype(np.float64)]
    path = tmp_path / "pos.png"
    plot_positional_similarity(m.embedding._params["pos_embedding"], path)  # 16x16, every 2nd shown
    _check_png(path, min_side=500)
    plot_positional_similarity(np.random.default_rng(15).standard_normal((1, 8, 3, 4)), path)
    _check_png(path, min_side=200)
