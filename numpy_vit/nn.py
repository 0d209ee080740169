"""The building blocks, each a forward and its hand-derived backward, in NumPy.

Every layer is a ``Module`` that holds its parameters under torch's local names (``weight``,
``bias``), remembers what its backward needs during ``forward``, and in ``backward(dout)`` returns
the gradient of its input and stores the gradient of each parameter in ``_grads`` under the same
name. Containers (``Sequential``, ``ModuleList``) name their children ``0``, ``1``, ... exactly as
torch does, so that the dotted names of a model's parameters are the keys of its torch state dict.

Shapes: B batch, C channels, H x W a feature map, N = H * W positions.
"""

import math

import numpy as np

from .erf import SLICE, _erf, _erfc_single

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _as_float_dtype(dtype):
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


class Module:
    """Base of every layer: parameters, children, state dict and gradients by dotted name."""

    def __init__(self):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_grads", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_cache", None)

    def __setattr__(self, name, value):
        if isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def _saved(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        return self._cache

    def _remember(self, out):
        """Note the output's shape and dtype, so that backward can check its upstream gradient."""
        object.__setattr__(self, "_out_spec", (out.shape, out.dtype))
        return out

    def _check_dout(self, dout):
        """One clear line unless dout matches the last forward's output in shape and dtype."""
        self._saved()
        shape, dtype = self._out_spec
        if not isinstance(dout, np.ndarray) or dout.shape != shape or dout.dtype != dtype:
            got = f"shape {dout.shape}, dtype {dout.dtype}" if isinstance(dout, np.ndarray) else type(dout).__name__
            raise ValueError(f"{type(self).__name__}.backward: expected an upstream gradient of shape {shape} "
                             f"and dtype {dtype} (the last forward's output), got {got}")

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}{name}.")

    def named_parameters(self):
        """(dotted name, ndarray) for every parameter, in torch's state-dict order."""
        for prefix, module in self.named_modules():
            for name, value in module._params.items():
                yield prefix + name, value

    def state_dict(self):
        """{seed state-dict name: copy of the parameter}."""
        return {name: value.copy() for name, value in self.named_parameters()}

    @property
    def grads(self):
        """{seed state-dict name: gradient from the last ``backward`` call}."""
        out = {}
        for prefix, module in self.named_modules():
            for name, value in module._grads.items():
                out[prefix + name] = value
        return out

    @property
    def dtype(self):
        for _, value in self.named_parameters():
            return value.dtype
        return None  # no parameters (GELU, pooling, flatten): any float dtype passes through

    def load_state_dict(self, arrays_by_name):
        """Copy arrays (any mapping of name to array-like, a torch state dict included) into the
        parameters, cast to the model's dtype. Every parameter must be given, with its shape, and
        nothing else; otherwise a ValueError names the missing, unexpected and misshaped tensors."""
        from .io import check_state_dict  # keeps the import graph acyclic

        arrays = check_state_dict(self, arrays_by_name)
        for prefix, module in self.named_modules():
            for name in module._params:
                module._params[name] = np.array(arrays[prefix + name], dtype=module._params[name].dtype)
        return self

    def num_parameters(self):
        return sum(value.size for _, value in self.named_parameters())


class Sequential(Module):
    """Children named 0, 1, ...; forward in order, backward in reverse."""

    def __init__(self, *modules):
        super().__init__()
        self.items = list(modules)
        for i, m in enumerate(modules):
            self._modules[str(i)] = m

    def __getitem__(self, i):
        return self.items[i]

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def forward(self, x):
        for m in self.items:
            x = m.forward(x)
        return x

    def backward(self, dout):
        for m in reversed(self.items):
            dout = m.backward(dout)
        return dout


class ModuleList(Sequential):
    """Children named 0, 1, ..., given as one iterable, as to torch's nn.ModuleList; the owner calls them
    (no forward or backward of its own)."""

    def __init__(self, modules=()):
        super().__init__(*modules)

    def forward(self, x):
        raise TypeError("ModuleList has no forward or backward; its owner calls the children")

    backward = forward


def _uniform(rng, bound, shape, dtype):
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def rows(x):
    """(B, C, H, W) -> (B*H*W, C): one row of channels per position. A view, no copy, when x's memory
    is channels-last, as every Conv2d output is."""
    return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])


def maps(x_rows, shape):
    """The inverse of ``rows``: (B*H*W, C) -> (B, C, H, W), a channels-last view."""
    B, C, H, W = shape
    return x_rows.reshape(B, H, W, C).transpose(0, 3, 1, 2)


def mean_rows(x_rows):
    """(M, C) -> (M,): the mean of each row, its sum as a matrix-vector product (NumPy's reductions
    over short rows are ten times slower) divided by C (a product with a rounded 1/C would add an
    error that the nearly cancelling gradients downstream magnify)."""
    return (x_rows @ np.ones(x_rows.shape[1], x_rows.dtype)) / x_rows.shape[1]


def sum_cols(x_rows, block=256):
    """(M, C) -> (C,): the sum of each column, as vector-matrix products over blocks of ``block`` rows
    (the last one shorter when block does not divide M), then the sum of the blocks' sums: as fast as
    one product and, in float32, several times more accurate than one long running sum (a bias
    gradient can be a sum that nearly cancels)."""
    m = x_rows.shape[0]
    full = m - m % block
    total = (np.ones(block, x_rows.dtype) @ x_rows[:full].reshape(full // block, block, x_rows.shape[1])).sum(axis=0)
    if full < m:
        total += np.ones(m - full, x_rows.dtype) @ x_rows[full:]
    return total


class Conv2d(Module):
    """A convolution whose kernel equals its stride and has no padding: the 1x1 convolutions of the
    attention and the MLP (kernel_size=1) and the patch embedding (kernel_size=patch size).
    Non-overlapping windows make it one matrix product: each output position sees one patch.
    weight (C_out, C_in, p, p), bias (C_out,). Initialised as torch does (uniform, bound 1/sqrt(fan_in)).

    Memory layout: the output is an ordinary (B, C_out, h, w) array whose memory is channels-last
    (B, h, w, C_out), as torch's ``channels_last`` format. Then every position's channels are one row
    of a (B*h*w, C) matrix, so forward and both gradients are single matrix products with no copy, and
    the next 1x1 convolution reads its input as such a matrix for free. Values do not depend on the
    layout; any (B, C, H, W) input works.
    """

    def __init__(self, in_channels, out_channels, kernel_size=1, *, dtype=np.float32, rng=None):
        super().__init__()
        rng = np.random.default_rng() if rng is None else rng
        p = kernel_size
        bound = 1.0 / math.sqrt(in_channels * p * p)
        self.kernel_size = p
        self._params["weight"] = _uniform(rng, bound, (out_channels, in_channels, p, p), dtype)
        self._params["bias"] = _uniform(rng, bound, (out_channels,), dtype)

    def forward(self, x):
        weight, bias = self._params["weight"], self._params["bias"]
        c_out, p = weight.shape[0], self.kernel_size
        B, C, H, W = x.shape
        h, w = H // p, W // p
        if p == 1:
            cols = rows(x)  # (B*N, C_in)
        else:
            cols = (x.reshape(B, C, h, p, w, p)
                    .transpose(0, 2, 4, 1, 3, 5)  # (B, h, w, C_in, p, p)
                    .reshape(B * h * w, C * p * p))  # (B*N, C_in*p*p), one patch per row
        out = cols @ weight.reshape(c_out, -1).T  # (B*N, C_out)
        out += bias
        self._cache = (cols, x.shape)
        return maps(out, (B, c_out, h, w))  # (B, C_out, h, w), channels-last

    def backward(self, dout):
        cols, x_shape = self._saved()
        weight, p = self._params["weight"], self.kernel_size
        c_out = weight.shape[0]
        B, C, H, W = x_shape
        d = rows(dout)  # (B*N, C_out)
        # the forward was out = cols @ W^T + bias, W the weight as (C_out, C_in*p*p)
        self._grads["weight"] = (d.T @ cols).reshape(weight.shape)  # d^T cols: (C_out, C_in*p*p) -> (C_out, C_in, p, p)
        self._grads["bias"] = sum_cols(d)  # (C_out,): the bias was added to every row
        dcols = d @ weight.reshape(c_out, -1)  # d W: (B*N, C_in*p*p)
        # the windows do not overlap, so each entry of cols came from one pixel: a reshape puts it back, no sums
        if p == 1:
            return maps(dcols, x_shape)  # (B, C_in, H, W), channels-last
        return (dcols.reshape(B, H // p, W // p, C, p, p)
                .transpose(0, 3, 1, 4, 2, 5)  # (B, C_in, h, p, w, p)
                .reshape(x_shape))


class LayerNorm(Module):
    """LayerNorm over the channel axis of an NCHW map: what the seed gets from
    ``x.transpose(1, -1)``, ``nn.LayerNorm(C)``, ``transpose(-1, 1)`` (torch_vit's
    ``channels_layer_norm``). The work is done on the
    (B*H*W, C) matrix of ``rows(x)``, normalising each row. Biased variance, eps inside the square
    root, as torch. weight and bias: (C,)."""

    def __init__(self, channels, eps=1e-5, *, dtype=np.float32):
        super().__init__()
        self.eps = eps
        self._params["weight"] = np.ones(channels, dtype=dtype)
        self._params["bias"] = np.zeros(channels, dtype=dtype)

    def forward(self, x):
        g, b = self._params["weight"], self._params["bias"]
        xr = rows(x)  # (M, C), M = B*H*W
        xc = xr - mean_rows(xr)[:, None]
        var = mean_rows(xc * xc)[:, None]  # (M, 1), biased, as torch
        rstd = 1.0 / np.sqrt(var + self.eps)
        xhat = xc * rstd  # (M, C): zero mean, unit variance over C
        self._cache = (xhat, rstd, x.shape)
        return maps(xhat * g + b, x.shape)  # (B, C, H, W), channels-last

    def backward(self, dout):
        xhat, rstd, shape = self._saved()
        g = self._params["weight"]
        d = rows(dout)  # (M, C)
        self._grads["weight"] = sum_cols(d * xhat)
        self._grads["bias"] = sum_cols(d)
        dxhat = d * g
        # xhat = (x - mean) * rstd: each x of a row moves the row's mean and variance too, not only its own xhat.
        # Through the mean: minus the row mean of dxhat; through the variance: minus xhat times the row mean of
        # dxhat * xhat; both scaled by rstd.
        dx = rstd * (dxhat - mean_rows(dxhat)[:, None] - xhat * mean_rows(dxhat * xhat)[:, None])
        return maps(dx, shape)


_SQRT1_2 = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_KAPPA = 0.044715


def _in_layout(a, like):
    """a, or a copy of it with like's strides: two arrays of one layout flatten to 1-D views in the same order."""
    if a.strides == like.strides:
        return a
    out = np.empty_like(like)
    out[...] = a
    return out


def _flat(*arrays):
    """1-D views, in memory order, of dense arrays of one layout (e.g. channels-last maps), no copy."""
    return [a.ravel(order="K") for a in arrays]


def _slices(n):
    """Slices of a 1-D array of n elements, erf.SLICE each, so that elementwise work stays in the CPU's cache."""
    return [slice(i, min(i + SLICE, n)) for i in range(0, n, SLICE)]


class GELU(Module):
    """torch.nn.GELU. approximate='none': x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (the seed's);
    approximate='tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    Phi(x), the normal CDF: in float64, 0.5 (1 + erf(x / sqrt 2)) with Cody's erf, as torch writes it;
    in float32, 0.5 erfc(-x / sqrt 2) with ``erfc_single``, exact to float32's own precision
    (numpy_vit/erf.py). Elementwise, so the work runs on 1-D views of x's memory (a channels-last
    map as it lies), in slices that stay in the CPU's cache. The float32 erf form works in place (``out=``):
    its forward in three scratch arrays of one slice that the module keeps, its backward in one of them; float64
    and the tanh form use temporaries."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate: expected 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self._work = {}  # dtype -> three arrays of SLICE elements, kept between calls

    def _scratch(self, dtype, s):
        """Three scratch arrays the length of slice s. Kept, not allocated at every call: memory of that size
        freed and allocated again at every call costs page faults, more than the arithmetic they serve."""
        work = self._work.get(dtype)
        if work is None:
            work = self._work[dtype] = [np.empty(SLICE, dtype) for _ in range(3)]
        return [w[:s.stop - s.start] for w in work]

    def _gate(self, x, out, work):
        """Phi(x) (approximate='none') or tanh(sqrt(2/pi) (x + 0.044715 x^3)) ('tanh'), into out."""
        if self.approximate == "none":
            if x.dtype == np.float32:
                u = np.multiply(x, np.float32(-_SQRT1_2), out=work[0])  # -x / sqrt 2
                gate = _erfc_single(u, out=out, work=work[1:])
                gate *= 0.5  # Phi(x) = 0.5 erfc(-x / sqrt 2)
                return gate
            out[...] = 0.5 * (1.0 + _erf(x * _SQRT1_2))
            return out
        out[...] = np.tanh(_SQRT_2_OVER_PI * (x + _KAPPA * (x * x * x)))
        return out

    def forward(self, x):
        out = np.empty_like(x)  # in x's layout
        x = _in_layout(x, out)  # x itself unless it is not dense
        gate = np.empty_like(out)
        xf, gf, of = _flat(x, gate, out)
        for s in _slices(xf.size):
            self._gate(xf[s], gf[s], self._scratch(x.dtype, s))
            if self.approximate == "none":
                np.multiply(xf[s], gf[s], out=of[s])  # x Phi(x)
            else:
                of[s] = 0.5 * xf[s] * (1.0 + gf[s])
        self._cache = (x, gate)
        return out

    def backward(self, dout):
        x, gate = self._saved()
        dx = np.empty_like(x)
        xf, gf, df, dxf = _flat(x, gate, _in_layout(dout, x), dx)
        for s in _slices(xf.size):
            xs, gs = xf[s], gf[s]
            if self.approximate == "none":
                pdf = self._scratch(x.dtype, s)[0]
                np.multiply(xs, -0.5, out=pdf)
                pdf *= xs
                np.exp(pdf, out=pdf)
                pdf *= _INV_SQRT_2PI  # phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
                pdf *= xs
                pdf += gs
                np.multiply(df[s], pdf, out=dxf[s])  # d/dx x Phi(x) = Phi(x) + x phi(x)
            else:
                # t = tanh(u), u = sqrt(2/pi) (x + k x^3), du/dx = sqrt(2/pi) (1 + 3 k x^2)
                du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _KAPPA * xs * xs)
                dxf[s] = df[s] * (0.5 * (1.0 + gs) + 0.5 * xs * (1.0 - gs * gs) * du)
        return dx


class AdaptiveAvgPool2d(Module):
    """Output size 1 only, as the seed uses it: the mean over H and W. (B, C, H, W) -> (B, C, 1, 1)."""

    def __init__(self, output_size=1):
        super().__init__()
        if output_size not in (1, (1, 1)):
            raise ValueError(f"AdaptiveAvgPool2d: only output_size 1 is implemented, got {output_size!r}")

    def forward(self, x):
        self._cache = x.shape
        return x.mean(axis=(2, 3), keepdims=True)

    def backward(self, dout):
        B, C, H, W = self._saved()
        return np.broadcast_to(dout / (H * W), (B, C, H, W)).copy()


class Flatten(Module):
    """(B, C, 1, 1) -> (B, C)."""

    def forward(self, x):
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self._saved())


class Linear(Module):
    """y = x W^T + b. weight (out, in), bias (out,), torch's initialisation."""

    def __init__(self, in_features, out_features, *, dtype=np.float32, rng=None):
        super().__init__()
        rng = np.random.default_rng() if rng is None else rng
        bound = 1.0 / math.sqrt(in_features)
        self._params["weight"] = _uniform(rng, bound, (out_features, in_features), dtype)
        self._params["bias"] = _uniform(rng, bound, (out_features,), dtype)

    def forward(self, x):
        self._cache = x
        return x @ self._params["weight"].T + self._params["bias"]

    def backward(self, dout):
        x = self._saved()
        self._grads["weight"] = dout.T @ x
        self._grads["bias"] = dout.sum(axis=0)
        return dout @ self._params["weight"]


def softmax(x, axis):
    """Numerically stable softmax along ``axis``."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(dy, y, axis):
    """Gradient of the input of a softmax along ``axis``, given its output y and upstream dy: with
    dy_i/dx_j = y_i (delta_ij - y_j), dx_j = sum_i dy_i y_i (delta_ij - y_j) = y_j (dy_j - sum_i dy_i y_i)."""
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))
