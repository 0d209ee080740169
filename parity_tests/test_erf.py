"""numpy_vit.erf is accurate to double precision (a few ulp of math.erf), in float64 and float32."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_vit import erf


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
