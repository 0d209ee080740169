"""A vectorized error function accurate to double precision, in NumPy alone.

NumPy has no ``erf``, and the seed's GELU is the exact form ``0.5 * x * (1 + erf(x / sqrt(2)))``.
A 1e-7 approximation (Abramowitz and Stegun 7.1.26) would cap the float64 parity with torch at
about 1e-7, so this evaluates W. J. Cody's rational Chebyshev approximations ("Rational Chebyshev
approximations for the error function", Math. Comp. 23, 1969, pp. 631-638), the ones behind
SPECFUN's CALERF, on three intervals of |x|:

    |x| <= 0.46875        erf(x)  = x * P1(x^2) / Q1(x^2)
    0.46875 < |x| <= 4    erfc(x) = exp(-x^2) * P2(x) / Q2(x)
    |x| > 4               erfc(x) = exp(-x^2) / x * (1/sqrt(pi) + R(1/x^2))

``exp(-x^2)`` is split as ``exp(-s^2) * exp(-(x - s)(x + s))`` with ``s = trunc(16 x) / 16`` so that
the rounding of ``x^2`` is not amplified, as Cody does. The two common branches are evaluated on
every element, with |x| clipped into their intervals, and blended by a 0/1 mask: boolean gathers and
scatters, and ``np.where`` on random signs, cost more than the arithmetic they save. Only the far
tail (|x| > 4, rare) is gathered. Long arrays go through in slices that stay in the CPU's cache.
``parity_tests/test_erf.py`` holds it to within a few ulp of ``math.erf`` over the whole line.

``erfc_single`` is the complementary function to single precision only (relative error under
1.2e-7), from the Chebyshev fit in Numerical Recipes (Press et al., 2nd ed., section 6.2, ``erfcc``):

    erfc(z) = t exp(-z^2 + P(t)),  t = 1 / (1 + z / 2),  P a polynomial of degree 9,  z >= 0
    erfc(-z) = 2 - erfc(z)

It is one polynomial and one exp, several times cheaper than ``erf``, and is what the float32 GELU
uses. Evaluated in float32, rounding adds a few ulps (relative error 4.3e-7 near 0, 1.5e-6 at |x| = 4,
``parity_tests/test_erf.py``).
"""

import numpy as np

# Coefficients of Cody (1969), as printed in SPECFUN's CALERF.
_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03, 1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
      2.84423683343917062e03)
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
      2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
      1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
      3.43936767414372164e03, 1.23033935480374942e03)
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
      6.05183413124413191e-2, 2.33520497626869185e-3)
_SQRPI = 5.6418958354775628695e-1  # 1 / sqrt(pi)
_THRESH = 0.46875
_XBIG = 26.543  # erfc(x) underflows to 0 in float64 beyond this


def _exp_minus_square(y):
    """exp(-y^2) for y >= 0, with y^2 split to keep its rounding out of the result."""
    s = np.trunc(y * 16.0) / 16.0
    return np.exp(-s * s) * np.exp(-(y - s) * (y + s))


def _erfc_mid(y):
    """erfc(y) for 0.46875 < y <= 4."""
    num = _C[8] * y
    den = y.copy()
    for i in range(7):
        num += _C[i]
        num *= y
        den += _D[i]
        den *= y
    num += _C[7]
    den += _D[7]
    num /= den
    return _exp_minus_square(y) * num


def _erfc_tail(y):
    """erfc(y) for 4 < y < 26.543."""
    ysq = 1.0 / (y * y)
    num = _P[5] * ysq
    den = ysq.copy()
    for i in range(4):
        num += _P[i]
        num *= ysq
        den += _Q[i]
        den *= ysq
    r = ysq * (num + _P[4]) / (den + _Q[4])
    return _exp_minus_square(y) * (_SQRPI - r) / y


# Elements per slice of a long array: the dozen temporaries of one slice stay in a 2 MB L2 cache.
SLICE = 1 << 15


def _erf(x):
    """erf of every element of x, without slicing (see erf)."""
    y = np.abs(x)
    xs = np.clip(x, -_THRESH, _THRESH)  # |x| <= 0.46875: erf = x P1(x^2) / Q1(x^2)
    ysq = xs * xs
    num = _A[4] * ysq
    den = ysq.copy()
    for i in range(3):
        num += _A[i]
        num *= ysq
        den += _B[i]
        den *= ysq
    small = xs * (num + _A[3]) / (den + _B[3])

    erfc = _erfc_mid(np.clip(y, _THRESH, 4.0))
    beyond = y > 4.0  # rare: the tail is computed on those elements only
    if beyond.any():
        if x.dtype == np.float64:
            erfc[beyond] = _erfc_tail(np.minimum(y[beyond], _XBIG))
        else:  # in float32, erfc(y > 4) < 1.6e-8 rounds 1 - erfc to 1
            erfc[beyond] = 0.0
    big = (0.5 - erfc) + 0.5  # NaN stays NaN: clip carries it through
    np.copysign(big, x, out=big)
    inside = (y <= _THRESH).astype(x.dtype)  # a 0/1 blend: np.where mispredicts on random signs
    return small * inside + big * (1.0 - inside)


def _sliced(fn, x):
    """fn applied to a contiguous copy of x in slices of SLICE elements, reshaped like x."""
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    for i in range(0, flat.size, SLICE):
        out[i:i + SLICE] = fn(flat[i:i + SLICE])
    return out.reshape(x.shape)


def _check_float(x, name):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
    return x


def erf(x):
    """The error function, elementwise, in the dtype of ``x`` (float32 or float64).

    Args:
        x: ndarray of floats, any shape.
    Returns:
        ndarray of the same shape and dtype; NaN stays NaN, erf(+-inf) = +-1.
    """
    return _sliced(_erf, _check_float(x, "erf"))


# Numerical Recipes' erfcc: P(t) = sum_k _NR[k] t^k
_NR = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398,
       1.48851587, -0.82215223, 0.17087277)


def _erfc_single(x, out=None, work=None):
    """erfc of every element of x to single precision, without slicing (see erfc_single).

    out: an array like x for the result; work: two more like it for the temporaries. With both given, nothing
    is allocated: a fresh temporary per step would cost more than its arithmetic (glibc hands memory of a
    cache-sized slice back to the system when it is freed, and the next one faults its pages in again)."""
    out = np.empty_like(x) if out is None else out
    t, w = (np.empty_like(x), np.empty_like(x)) if work is None else work
    np.abs(x, out=t)
    t *= 0.5
    t += 1.0
    np.divide(1.0, t, out=t)  # t = 1 / (1 + z / 2), z = |x|
    poly = np.multiply(t, _NR[9], out=out)
    for c in _NR[8:0:-1]:
        poly += c
        poly *= t
    poly += _NR[0]
    poly -= np.multiply(x, x, out=w)  # - z^2
    r = np.exp(poly, out=out)
    r *= t  # erfc(|x|)
    # erfc(-z) = 2 - erfc(z), without a branch per element: r + (x < 0) (2 - 2 r)
    np.multiply(r, -2.0, out=t)
    t += 2.0
    t *= np.less(x, 0, out=w)
    r += t
    return r


def erfc_single(x):
    """The complementary error function 1 - erf(x), elementwise, to single precision: relative error
    under 1.2e-7 (the fit's) plus the rounding of the dtype of ``x`` (a few float32 ulps). NaN stays
    NaN."""
    return _sliced(_erfc_single, _check_float(x, "erfc_single"))
