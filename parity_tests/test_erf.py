"""numpy_vit.erf is accurate to double precision (a few ulp of math.erf), in float64 and float32;
erfc_single, the float32 GELU's, to single precision (relative error under 1.2e-7 plus rounding)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_vit import erf
from numpy_vit.erf import SLICE, erfc_single

pytestmark = pytest.mark.parity


def _ulps(mine, exact):
    return np.abs(mine - exact) / np.spacing(np.maximum(np.abs(exact), np.finfo(np.float64).tiny))


def test_dense_grid_within_4_ulp():
    x = np.concatenate([np.linspace(-30, 30, 600_001), np.geomspace(1e-300, 30, 20_000),
                        -np.geomspace(1e-300, 30, 20_000), [0.0, -0.0, 0.46875, 4.0, 26.543]])
    exact = np.array([math.erf(v) for v in x])
    assert _ulps(erf(x), exact).max() <= 4


@given(st.floats(-40, 40, allow_nan=False))
def test_any_double(v):
    assert _ulps(erf(np.array([v])), np.array([math.erf(v)]))[0] <= 4


def test_branch_edges_and_specials():
    """Both sides of each interval edge of Cody's approximation, and inf, -inf, NaN, signed zero."""
    edges = np.array([0.46875, 4.0, 26.543])
    x = np.concatenate([np.nextafter(edges, 0), edges, np.nextafter(edges, 100)])
    x = np.concatenate([x, -x])
    assert _ulps(erf(x), np.array([math.erf(v) for v in x])).max() <= 4
    out = erf(np.array([np.inf, -np.inf, np.nan, -0.0]))
    assert out[0] == 1 and out[1] == -1 and np.isnan(out[2]) and out[3] == 0 and np.signbit(out[3])


def test_float32_stays_float32_and_accurate():
    x = np.linspace(-10, 10, 100_001).astype(np.float32)
    y = erf(x)
    assert y.dtype == np.float32
    exact = np.array([math.erf(float(v)) for v in x])
    assert np.abs(y - exact).max() <= 2 * np.finfo(np.float32).eps


def test_not_a_1e7_approximation():
    """Abramowitz-Stegun 7.1.26 (1.5e-7) would fail here: the error must be at the 1e-16 level."""
    x = np.linspace(-3, 3, 10_001)
    assert np.abs(erf(x) - np.array([math.erf(v) for v in x])).max() < 1e-15


def test_rejects_integers():
    with pytest.raises(TypeError, match="expected a floating-point array, got dtype int64"):
        erf(np.arange(3, dtype=np.int64))


def test_long_arrays_go_through_in_slices_with_the_same_values():
    """More elements than one slice, in an odd shape and a non-contiguous view: the same values as
    element by element."""
    x = np.linspace(-6, 6, 3 * SLICE + 7).reshape(-1, 1)[::-1]
    y = erf(x)
    assert y.shape == x.shape
    assert _ulps(y.ravel(), np.array([math.erf(v) for v in x.ravel()])).max() <= 4


def test_erfc_single_relative_error_in_float64():
    """The Numerical Recipes fit evaluated in float64: relative error under 1.2e-7 against
    math.erfc wherever erfc is a normal float32 number, tails included."""
    x = np.linspace(-9, 9.1, 400_001)
    exact = np.array([math.erfc(v) for v in x])
    assert (np.abs(erfc_single(x) - exact) / exact).max() < 1.2e-7


def test_erfc_single_in_float32_is_float32_accurate():
    """In float32 the rounding of the ten-term polynomial adds a few ulps (measured 4.3e-7 relative
    for |x| <= 1, 3.6 ulps of 1) and the rounding of z^2 inside exp(-z^2 + P(t)) about z^2 more
    (measured 1.5e-6 at |x| <= 4, where erfc is still above 1e-8); NaN stays NaN."""
    x = np.linspace(-4, 4, 80_001).astype(np.float32)
    y = erfc_single(x)
    assert y.dtype == np.float32
    rel = np.abs(y - np.array([math.erfc(float(v)) for v in x])) / np.array([math.erfc(float(v)) for v in x])
    assert rel[np.abs(x) <= 1].max() < 5e-7
    assert rel.max() < 2e-6
    assert np.isnan(erfc_single(np.array([np.nan], np.float32)))[0]
