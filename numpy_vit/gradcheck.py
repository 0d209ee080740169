"""Centred finite differences, NumPy only: the check of a hand-derived backward that needs no torch.
(CS231n's eval_numerical_gradient_array, one coordinate at a time.)"""



def numerical_derivative(f, array, index, h=1e-6):
    """(f() with array[index] + h  -  f() with array[index] - h) / 2h, restoring array[index].

    Args:
        f: a function of no arguments returning a scalar; it must read ``array`` (in place).
        array: the float64 ndarray to perturb (a parameter or the input).
        index: a tuple index into ``array``.
    """
    old = array[index]
    array[index] = old + h
    plus = float(f())
    array[index] = old - h
    minus = float(f())
    array[index] = old
    return (plus - minus) / (2.0 * h)


def fd_agrees(analytic, numeric, rel=1e-5, abs_=1e-8):
    """The finite-difference bound: |analytic - numeric| <= rel * max(|analytic|, |numeric|) + abs_.
    With h = 1e-6 in float64 the centred difference carries about eps * |f| / h ~ 1e-10 of rounding
    and h^2 |f'''| ~ 1e-12 of truncation, so these leave a wide margin and still catch a wrong term."""
    return abs(analytic - numeric) <= rel * max(abs(analytic), abs(numeric)) + abs_
