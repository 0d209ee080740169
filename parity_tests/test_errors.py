"""Bad input is refused with one clear line that says what was expected and what was given.

Each check matches the meaningful parts of the message (the expectation and the value given) and
that the message is a single line. NumPy only.
"""

import re

import numpy as np
import pytest

import numpy_vit
from numpy_vit.nn import GELU, Conv2d, LayerNorm, Linear

DT = np.float64


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert msg, "empty error message"
    assert "\n" not in msg, f"error message spans several lines: {msg!r}"
    return msg


@pytest.fixture(scope="module")
def model():
    return numpy_vit.ViT((8, 12), 2, 3, 8, 1, 4, num_classes=5, dtype=DT, rng=0)


# --------------------------------------------------------------------------------------------
# ViT.forward

@pytest.mark.parametrize("bad, exc, pattern", [
    (np.zeros((3, 8, 12)), ValueError, r"ViT: expected a 4-d input \(B, C, H, W\), got shape \(3, 8, 12\)"),
    (np.zeros((2, 4, 8, 12)), ValueError, r"ViT: expected 3 channels, got 4"),
    (np.zeros((2, 1, 8, 12)), ValueError, r"ViT: expected 3 channels, got 1"),
    (np.zeros((2, 3, 8, 8)), ValueError, r"ViT: expected spatial size \(8, 12\), got \(8, 8\)"),
    (np.zeros((2, 3, 12, 8)), ValueError, r"ViT: expected spatial size \(8, 12\), got \(12, 8\)"),
    (np.zeros((0, 3, 8, 12)), ValueError, r"ViT: expected a batch of at least 1, got shape \(0, 3, 8, 12\)"),
    (np.zeros((2, 3, 8, 12), dtype=np.float32), TypeError,
     r"ViT: expected an input of dtype float64 .*got float32"),
    (np.zeros((2, 3, 8, 12), dtype=np.int64), TypeError, r"ViT: expected an input of dtype float64 .*got int64"),
    (np.zeros((2, 3, 8, 12)).tolist(), TypeError, r"ViT: expected a NumPy array \(B, C, H, W\), got list"),
], ids=["3-d", "4-channels", "1-channel", "8x8", "transposed-size", "empty-batch", "float32-into-float64",
        "int64", "list"])
def test_vit_forward_rejects_bad_input(model, bad, exc, pattern):
    with pytest.raises(exc, match=pattern) as excinfo:
        model.forward(bad)
    _one_line(excinfo)


def test_float64_input_to_a_float32_model_is_refused():
    m = numpy_vit.ViT(8, 2, 3, 8, 1, 4, dtype=np.float32, rng=0)
    with pytest.raises(TypeError, match=r"expected an input of dtype float32 .*got float64") as excinfo:
        m.forward(np.zeros((1, 3, 8, 8)))
    _one_line(excinfo)


@pytest.mark.parametrize("part_factory, channels, name", [
    (lambda: numpy_vit.MhSelfAttention(8, 8, 4, dtype=DT, rng=0), 8, "MhSelfAttention"),
    (lambda: numpy_vit.FeedForward(8, 8, dtype=DT, rng=0), 8, "FeedForward"),
    (lambda: numpy_vit.Transformer(1, 4, 8, 8, dtype=DT, rng=0), 8, "Transformer"),
    (lambda: numpy_vit.PreNormChannels(8, numpy_vit.FeedForward(8, 8, dtype=DT, rng=0)), 8, "PreNormChannels"),
])
def test_parts_reject_wrong_channel_count(part_factory, channels, name):
    with pytest.raises(ValueError, match=rf"{name}: expected {channels} channels, got 5") as excinfo:
        part_factory().forward(np.zeros((1, 5, 2, 2)))
    _one_line(excinfo)


# --------------------------------------------------------------------------------------------
# constructors

@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(image_size=30, patch_size=4), ValueError,
     r"image_size \(30, 30\) must be divisible by patch_size, got patch_size 4"),
    (dict(image_size=(32, 30), patch_size=4), ValueError,
     r"image_size \(32, 30\) must be divisible by patch_size, got patch_size 4"),
    (dict(embedding_dim=30, head_channels=8), ValueError,
     r"embedding_dim 30 must be divisible by head_channels, got head_channels 8"),
    (dict(depth=0), ValueError, r"depth: expected a positive int, got 0"),
    (dict(dtype=np.int32), TypeError, r"dtype: expected float32 or float64, got int32"),
    (dict(image_size=(32,)), ValueError, r"image_size: expected a positive int or a pair \(H, W\) of them, got \(32,\)"),
    (dict(approximate="bogus"), ValueError, r"GELU approximate: expected 'none' or 'tanh', got 'bogus'"),
], ids=["30-patch-4", "32x30-patch-4", "dim-30-hc-8", "depth-0", "int32", "1-tuple-size", "approximate-bogus"])
def test_vit_constructor_rejects_bad_config(kwargs, exc, pattern):
    args = dict(image_size=32, patch_size=4, in_channels=3, embedding_dim=32, depth=1, head_channels=8)
    args.update(kwargs)
    dtype = args.pop("dtype", DT)
    approximate = args.pop("approximate", "none")
    with pytest.raises(exc, match=pattern) as excinfo:
        numpy_vit.ViT(**args, approximate=approximate, dtype=dtype, rng=0)
    _one_line(excinfo)


def test_attention_out_channels_must_be_divisible_by_head_channels():
    with pytest.raises(ValueError, match=r"out_channels 10 must be divisible by head_channels, "
                                         r"got head_channels 4") as excinfo:
        numpy_vit.MhSelfAttention(8, 10, 4, dtype=DT, rng=0)
    _one_line(excinfo)


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match=r"expected 'none' or 'tanh', got 'bogus'") as excinfo:
        GELU("bogus")
    _one_line(excinfo)


# --------------------------------------------------------------------------------------------
# load_state_dict

def _weights(m):
    return {k: v.copy() for k, v in m.named_parameters()}


def _assert_unchanged(m, before, x, y_before):
    after = _weights(m)
    assert sorted(after) == sorted(before)
    for k in before:
        assert np.array_equal(after[k], before[k]), f"{k} changed by a failed load"
    assert np.array_equal(m.forward(x), y_before), "the model's output changed after a failed load"


def _fresh():
    m = numpy_vit.ViT((8, 12), 2, 3, 8, 1, 4, num_classes=5, dtype=DT, rng=1)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 12))
    return m, x, m.forward(x).copy()


def test_load_state_dict_missing_keys_named_and_nothing_lost():
    m, x, y = _fresh()
    before = _weights(m)
    sd = {k: v + 1.0 for k, v in m.state_dict().items()}
    del sd["embedding.pos_embedding"]
    del sd["mlp_head.3.bias"]
    with pytest.raises(ValueError, match=r"missing keys: .*embedding\.pos_embedding") as excinfo:
        m.load_state_dict(sd)
    msg = _one_line(excinfo)
    assert "mlp_head.3.bias" in msg
    assert "unexpected" not in msg and "shape" not in msg
    _assert_unchanged(m, before, x, y)


def test_load_state_dict_unexpected_key_named_and_nothing_lost():
    m, x, y = _fresh()
    before = _weights(m)
    sd = {k: v + 1.0 for k, v in m.state_dict().items()}
    sd["extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"unexpected keys: extra\.weight") as excinfo:
        m.load_state_dict(sd)
    msg = _one_line(excinfo)
    assert "missing" not in msg
    _assert_unchanged(m, before, x, y)


def test_load_state_dict_misshaped_tensor_named_and_nothing_lost():
    m, x, y = _fresh()
    before = _weights(m)
    sd = {k: v + 1.0 for k, v in m.state_dict().items()}
    sd["mlp_head.3.weight"] = np.zeros((5, 9))
    with pytest.raises(ValueError, match=r"shape mismatches: mlp_head\.3\.weight expected \(5, 8\) got \(5, 9\)"
                       ) as excinfo:
        m.load_state_dict(sd)
    _one_line(excinfo)
    _assert_unchanged(m, before, x, y)


def test_load_state_dict_every_problem_in_one_line():
    m, x, y = _fresh()
    before = _weights(m)
    sd = m.state_dict()
    del sd["norm.weight"]
    sd["bogus"] = np.zeros(1)
    sd["norm.bias"] = np.zeros(7)
    sd["mlp_head.3.bias"] = np.zeros(5, dtype=np.int64)
    with pytest.raises(ValueError) as excinfo:
        m.load_state_dict(sd)
    msg = _one_line(excinfo)
    for part in ("ViT", "missing keys: norm.weight", "unexpected keys: bogus",
                 "norm.bias expected (8,) got (7,)", "mlp_head.3.bias (int64)"):
        assert part in msg, f"{part!r} not in {msg!r}"
    _assert_unchanged(m, before, x, y)


def test_load_state_dict_accepts_a_good_one():
    """The counterpart of the refusals: a complete, well-shaped dict is loaded (cast to float64)."""
    m, x, y = _fresh()
    sd = {k: (v * 0.5).astype(np.float32) for k, v in m.state_dict().items()}
    m.load_state_dict(sd)
    for k, v in m.named_parameters():
        assert v.dtype == DT and np.array_equal(v, sd[k].astype(DT)), k


@pytest.mark.parametrize("bad, given", [([("norm.weight", np.ones(8))], "list"), (None, "NoneType"),
                                        (np.ones(3), "ndarray")])
def test_load_state_dict_rejects_a_non_mapping(bad, given):
    m, x, y = _fresh()
    before = _weights(m)
    with pytest.raises(TypeError, match=rf"state dict: expected a mapping of name to array, got {given}") as excinfo:
        m.load_state_dict(bad)
    _one_line(excinfo)
    _assert_unchanged(m, before, x, y)


# --------------------------------------------------------------------------------------------
# cross_entropy

@pytest.mark.parametrize("labels, pattern", [
    (np.array([0, 5, 1]), r"expected labels in \[0, 5\), got values from 0 to 5"),
    (np.array([0, -1, 1]), r"expected labels in \[0, 5\), got values from -1 to 1"),
    (np.array([[0], [1], [2]]), r"expected integer labels of shape \(3,\), got shape \(3, 1\)"),
    (np.array([0, 1]), r"expected integer labels of shape \(3,\), got shape \(2,\)"),
    (np.array([0.0, 1.0, 2.0]), r"expected integer labels of shape \(3,\), got shape \(3,\), dtype float64"),
], ids=["label-5-of-5", "label-minus-1", "shape-3x1", "shape-2", "float-labels"])
def test_cross_entropy_rejects_bad_labels(labels, pattern):
    logits = np.zeros((3, 5))
    with pytest.raises(ValueError, match=r"cross_entropy: " + pattern) as excinfo:
        numpy_vit.cross_entropy(logits, labels)
    _one_line(excinfo)


@pytest.mark.parametrize("logits, pattern", [
    (np.zeros(5), r"expected float logits of shape \(B, K\), got shape \(5,\), dtype float64"),
    (np.zeros((3, 5), dtype=np.int64), r"expected float logits of shape \(B, K\), got shape \(3, 5\), dtype int64"),
    ([[0.0] * 5] * 3, r"expected float logits of shape \(B, K\), got list"),
], ids=["1-d", "int", "list"])
def test_cross_entropy_rejects_bad_logits(logits, pattern):
    with pytest.raises(ValueError, match=r"cross_entropy: " + pattern) as excinfo:
        numpy_vit.cross_entropy(logits, np.array([0, 1, 2]))
    _one_line(excinfo)


@pytest.mark.parametrize("eps", [-0.1, 1.5])
def test_cross_entropy_rejects_bad_label_smoothing(eps):
    with pytest.raises(ValueError, match=rf"expected label_smoothing in \[0, 1\], got {eps}") as excinfo:
        numpy_vit.cross_entropy(np.zeros((3, 5)), np.array([0, 1, 2]), eps)
    _one_line(excinfo)


# --------------------------------------------------------------------------------------------
# backward before forward

PARTS = {
    "Conv2d": lambda: Conv2d(3, 4, 2, dtype=DT, rng=np.random.default_rng(0)),
    "LayerNorm": lambda: LayerNorm(4, dtype=DT),
    "GELU": lambda: GELU("none"),
    "Linear": lambda: Linear(3, 4, dtype=DT, rng=np.random.default_rng(0)),
    "Embedding": lambda: numpy_vit.Embedding(8, 6, (2, 3), 3, 2, dtype=DT, rng=0),
    "MhSelfAttention": lambda: numpy_vit.MhSelfAttention(8, 8, 4, dtype=DT, rng=0),
    "FeedForward": lambda: numpy_vit.FeedForward(8, 8, dtype=DT, rng=0),
    "PreNormChannels": lambda: numpy_vit.PreNormChannels(8, numpy_vit.FeedForward(8, 8, dtype=DT, rng=0)),
    "Transformer": lambda: numpy_vit.Transformer(1, 4, 8, 8, dtype=DT, rng=0),
    "ViT": lambda: numpy_vit.ViT(8, 2, 3, 8, 1, 4, dtype=DT, rng=0),
}


@pytest.mark.parametrize("name", sorted(PARTS))
def test_backward_before_forward_is_a_runtime_error(name):
    part = PARTS[name]()
    with pytest.raises(RuntimeError, match=rf"{name}\.backward\(\) called before forward\(\)") as excinfo:
        part.backward(np.zeros((1, 8, 2, 3)))
    _one_line(excinfo)


# --------------------------------------------------------------------------------------------
# load_npz

def test_load_npz_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=r"no such \.npz file: .*nope\.npz") as excinfo:
        numpy_vit.load_npz(str(path))
    _one_line(excinfo)


def _valid_npz_bytes(tmp_path):
    p = tmp_path / "good.npz"
    numpy_vit.save_npz(str(p), {"a": np.arange(200.0), "b": np.ones((3, 4))})
    assert set(numpy_vit.load_npz(str(p))) == {"a", "b"}
    return p.read_bytes()


CORRUPTIONS = {
    "garbage-bytes": lambda good: bytes(np.random.default_rng(0).integers(0, 256, 256, dtype=np.uint8)),
    "empty": lambda good: b"",
    "truncated-npz": lambda good: good[: len(good) // 2],
    "zip-magic-then-garbage": lambda good: b"PK\x03\x04" + b"garbage" * 20,
    # one byte flipped inside the first member's data: the zip directory is intact, the CRC is not
    "flipped-byte-in-member": lambda good: good[: len(good) // 3] + bytes([good[len(good) // 3] ^ 0xFF])
    + good[len(good) // 3 + 1:],
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_load_npz_corrupt_file(tmp_path, kind):
    data = CORRUPTIONS[kind](_valid_npz_bytes(tmp_path))
    path = tmp_path / "bad.npz"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not a readable \.npz file") as excinfo:
        numpy_vit.load_npz(str(path))
    _one_line(excinfo)


@pytest.mark.parametrize("bad, given", [
    (np.zeros((2, 9)), r"got shape \(2, 9\), dtype float64"),
    (np.zeros((2, 10), np.float32), r"got shape \(2, 10\), dtype float32"),
    ([[0.0] * 10] * 2, "got list"),
])
def test_backward_rejects_a_mismatched_upstream_gradient(bad, given):
    m = numpy_vit.ViT(8, 2, 3, 8, 1, 4, dtype=np.float64, rng=0)
    m.forward(np.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"ViT.backward: expected an upstream gradient of shape \(2, 10\) "
                                         r"and dtype float64 \(the last forward's output\), " + given) as e:
        m.backward(bad)
    assert "\n" not in str(e.value)
    a = numpy_vit.MhSelfAttention(8, 8, 4, dtype=np.float64, rng=0)
    a.forward(np.zeros((1, 8, 2, 3)))
    with pytest.raises(ValueError, match=r"MhSelfAttention.backward: expected .* shape \(1, 8, 2, 3\)"):
        a.backward(np.zeros((1, 8, 3, 2)))
