"""Layers as pure functions: dense, 2-D convolution, pooling, flatten and batch normalization.

Conventions: images are NHWC ``(N, H, W, C)``, convolution kernels HWIO ``(KH, KW, C_in, C_out)``.
``conv2d`` is a cross-correlation (the kernel is not flipped), exactly like the seed notes'
``convolution2D`` loop and like every deep-learning framework. ``batch_norm`` follows PyTorch's
``BatchNorm`` semantics and normalizes over every axis but the last (channels). Shapes, strides
and paddings are checked at trace time (so also under ``jax.jit``), and bad ones raise
``ValueError`` (bad values) or ``TypeError`` (bad types) naming the function, the argument, the
expected layout and what was given.
"""

from __future__ import annotations

import numbers
from typing import Mapping, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcalc._types import Array, ArrayLike, Params, PRNGKey
from jaxcalc._validate import check_float_dtype, check_ndim, check_positive, check_real_dtype

IntOrPair = Union[int, Tuple[int, int]]
Padding = Union[int, Tuple[int, int], str]

_INITS = ("glorot", "he", "lecun")
_REAL = "float, int or bool"  # the dtypes a pooling or normalization admits, in messages


def init_dense(key: PRNGKey, in_features: int, out_features: int, *, init: str = "glorot",
               dtype=None) -> Params:
    r"""Parameters ``{"w": (in_features, out_features), "b": (out_features,)}`` of a dense layer.

    ``w`` is drawn from a normal distribution with variance ``2 / (in + out)`` (``"glorot"``,
    Glorot & Bengio 2010), ``2 / in`` (``"he"``, He et al. 2015, for ReLU) or ``1 / in``
    (``"lecun"``); ``b`` is zero. ``dtype`` defaults to JAX's default float.
    """
    if init not in _INITS:
        raise ValueError(f"init_dense: init must be one of {list(_INITS)}, got {init!r}")
    for name, value in (("in_features", in_features), ("out_features", out_features)):
        if not _is_int(value):
            raise TypeError(f"init_dense: {name} must be an int, got {value!r}")
    check_float_dtype("init_dense", dtype, allow_none=True)
    if in_features < 1 or out_features < 1:
        raise ValueError(f"init_dense: in_features and out_features must be >= 1, got "
                         f"{in_features} and {out_features}")
    dtype = dtype or jnp.result_type(float)
    var = {"glorot": 2.0 / (in_features + out_features), "he": 2.0 / in_features,
           "lecun": 1.0 / in_features}[init]
    w = jnp.sqrt(var).astype(dtype) * jax.random.normal(key, (in_features, out_features), dtype)
    return {"w": w, "b": jnp.zeros((out_features,), dtype)}


def dense(params: Params, x: ArrayLike) -> Array:
    r"""Affine map :math:`y = x W + b`.

    Args:
      params: ``{"w": (in, out), "b": (out,)}``, exactly these keys; ``b`` may also be a scalar
        (broadcast).
      x: ``(..., in)``.

    Returns:
      ``(..., out)``, in the promoted dtype of ``x``, ``w`` and ``b`` (a linear map: complex
      input stays complex).
    """
    x = jnp.asarray(x)
    if not isinstance(params, Mapping) or set(params) != {"w", "b"}:
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(f"dense: params must be a dict with keys ['b', 'w'] "
                         f"({{'w': (in_features, out_features), 'b': (out_features,)}}), got {got}")
    w, b = jnp.asarray(params["w"]), jnp.asarray(params["b"])
    check_ndim("dense", "params['w']", w, 2, "(in_features, out_features)")
    if x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"dense: x must have shape (..., {w.shape[0]}) to match params['w'] of "
                         f"shape {tuple(w.shape)}, got {tuple(x.shape)}")
    if b.shape not in ((), (w.shape[1],)):
        raise ValueError(f"dense: params['b'] must have shape ({w.shape[1]},) (out_features) or "
                         f"be a scalar, got {tuple(b.shape)}")
    return x @ w + b


def conv2d(x: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None = None, *,
           stride: IntOrPair = 1, padding: Padding = 0) -> Array:
    r"""2-D cross-correlation of NHWC images with an HWIO kernel.

    .. math:: y[n, i, j, o] = b[o] + \sum_{k,l,c} x_p[n, i s_h + k, j s_w + l, c]\, K[k, l, c, o]

    where :math:`x_p` is ``x`` zero-padded. Output size per spatial axis:
    ``(H + 2p - KH) // s + 1`` (as the seed's ``convolution2D``); with ``"SAME"`` it is
    ``ceil(H / s)`` (the extra padding row/column, if any, goes at the bottom/right), with
    ``"VALID"`` it is ``(H - KH) // s + 1``. ``x`` and ``kernel`` are promoted to a common dtype.

    Args:
      x: ``(N, H, W, C_in)``.
      kernel: ``(KH, KW, C_in, C_out)``.
      bias: ``(C_out,)`` or None.
      stride: int or ``(s_h, s_w)``, each >= 1.
      padding: int, ``(p_h, p_w)`` (symmetric zero padding, each >= 0), ``"SAME"`` or ``"VALID"``.

    Returns:
      ``(N, H_out, W_out, C_out)``.
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    check_ndim("conv2d", "x", x, 4, "(N, H, W, C_in)")
    check_ndim("conv2d", "kernel", kernel, 4, "(KH, KW, C_in, C_out)")
    if kernel.shape[2] != x.shape[3]:
        raise ValueError(f"conv2d: kernel must have shape (KH, KW, {x.shape[3]}, C_out) with "
                         f"C_in = {x.shape[3]} (x's last axis), got kernel shape "
                         f"{tuple(kernel.shape)}")
    if bias is not None:
        bias = jnp.asarray(bias)
        if bias.shape != (kernel.shape[3],):
            raise ValueError(f"conv2d: bias must have shape ({kernel.shape[3]},) (C_out), got "
                             f"{tuple(bias.shape)}")
    strides = _pair("conv2d", "stride", stride)
    pads = _padding("conv2d", padding)
    if pads != "SAME":
        lo_hi = ((0, 0), (0, 0)) if pads == "VALID" else pads
        padded = tuple(size + lo + hi for size, (lo, hi) in zip(x.shape[1:3], lo_hi))
        if padded[0] < kernel.shape[0] or padded[1] < kernel.shape[1]:
            raise ValueError(f"conv2d: kernel spatial size (KH, KW) = {tuple(kernel.shape[:2])} "
                             f"must fit in the padded input (H + 2 p_h, W + 2 p_w) = {padded} "
                             f"(x shape {tuple(x.shape)}, padding {padding!r})")
    dtype = jnp.result_type(x, kernel)
    y = _conv2d_as_matmul(x.astype(dtype), kernel.astype(dtype), strides, pads)
    return y if bias is None else y + bias


def _conv2d_as_matmul(x: Array, kernel: Array, strides: Tuple[int, int], pads) -> Array:
    r"""``conv2d``'s cross-correlation as one matrix product of image patches (im2col).

    .. math:: y = P K, \quad P[(n, i, j), (k, l, c)] = x_p[n, i s_h + k, j s_w + l, c]

    ``P`` stacks the ``KH·KW`` strided slices of the padded input along the channel axis and
    ``K`` is the kernel reshaped to ``(KH·KW·C_in, C_out)``. The result equals
    ``lax.conv_general_dilated`` (up to the order of the float additions), and all its
    derivatives, forward and reverse, are slices, pads and matrix products. That matters
    inside ``lax.scan``/``while_loop`` bodies (training epochs, CG, Lanczos): XLA:CPU
    canonicalizes convolution layouts only in the entry computation, so there the
    convolutions that autodiff emits (kernel gradient, input gradient) miss the fast kernels;
    a scanned training step of seed 002's CNN was 7-30x slower that way (BENCHMARKS.md, a
    and g). ``P`` holds ``KH·KW`` copies of the input. ``pads``: ``"SAME"``, ``"VALID"`` or
    ``((lo_h, hi_h), (lo_w, hi_w))``.
    """
    kh, kw, c_in, c_out = kernel.shape
    sh, sw = strides
    if isinstance(pads, str):
        pads = lax.padtype_to_pads(x.shape[1:3], (kh, kw), strides, pads)
    x = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
    n, h, w, _ = x.shape
    h_out, w_out = (h - kh) // sh + 1, (w - kw) // sw + 1
    slices = [lax.slice(x, (0, k, l, 0), (n, k + sh * (h_out - 1) + 1, l + sw * (w_out - 1) + 1,
                                          c_in), (1, sh, sw, 1))
              for k in range(kh) for l in range(kw)]
    patches = slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)
    y = patches.reshape(-1, kh * kw * c_in) @ kernel.reshape(kh * kw * c_in, c_out)
    return y.reshape(n, h_out, w_out, c_out)


def max_pool2d(x: ArrayLike, window: IntOrPair = 2, stride: IntOrPair | None = None) -> Array:
    r"""Max pooling over ``window`` patches of NHWC images (no padding).

    .. math:: y[n, i, j, c] = \max_{0 \le k < w_h,\ 0 \le l < w_w} x[n, i s_h + k, j s_w + l, c]

    The gradient flows to the maximal entry of each window (as the seed's ``max_pooling2D``).

    Args:
      x: ``(N, H, W, C)``.
      window: int or ``(wh, ww)``, each >= 1 and at most ``(H, W)``.
      stride: int or pair; defaults to ``window`` (non-overlapping windows).

    Returns:
      ``(N, (H - wh) // sh + 1, (W - ww) // sw + 1, C)``.
    """
    x, dims, strides = _pool_args("max_pool2d", x, window, stride)
    if dims[1] * dims[2] <= _MAX_POOL_SLICES:
        return _max_pool_by_slices(x, dims[1:3], strides[1:3])
    if jnp.issubdtype(x.dtype, jnp.floating):
        lowest = -np.inf
    else:  # bool: max is logical or, identity False
        lowest = jnp.iinfo(x.dtype).min if jnp.issubdtype(x.dtype, jnp.integer) else False
    # The identity must be a concrete NumPy scalar, not a jnp array: under jit a jnp constant
    # is staged, reduce_window then falls back to its generic form, and reverse-mode fails.
    return lax.reduce_window(x, np.array(lowest, x.dtype), lax.max, dims, strides, "VALID")


# Windows of up to this many entries are pooled by ``_max_pool_by_slices``; larger ones (e.g. a
# global max) by ``lax.reduce_window``, whose program does not grow with the window.
_MAX_POOL_SLICES = 16


def _max_pool_by_slices(x: Array, window: Tuple[int, int], strides: Tuple[int, int]) -> Array:
    r"""``max_pool2d`` as a running maximum over the window's ``wh·ww`` strided slices of ``x``.

    .. math:: y \leftarrow \mathrm{where}(e_{kl} > y,\ e_{kl},\ y) \quad
              \text{for the slices } e_{kl} = x[:, k::s_h, l::s_w, :] \text{ in row-major order}

    Same values as ``lax.reduce_window`` with ``lax.max`` (NaN propagates), and the same
    gradient: it flows to the first maximal entry of each window, because only a strictly larger
    entry replaces the running maximum. The derivatives are selects and strided pads (XLA:CPU
    elementwise fusions); the gradient of ``reduce_window`` is a ``select_and_scatter``, which
    took about half of the seed CNN's step time on XLA:CPU (BENCHMARKS.md, a).
    """
    n, h, w, c = x.shape
    (wh, ww), (sh, sw) = window, strides
    h_out, w_out = (h - wh) // sh + 1, (w - ww) // sw + 1
    y = None
    for k in range(wh):
        for l in range(ww):
            e = lax.slice(x, (0, k, l, 0), (n, k + sh * (h_out - 1) + 1, l + sw * (w_out - 1) + 1,
                                            c), (1, sh, sw, 1))
            if y is None:
                y = e
                continue
            larger = e > y
            if jnp.issubdtype(x.dtype, jnp.inexact):
                larger = larger | jnp.isnan(e)
            y = jnp.where(larger, e, y)
    return y


def avg_pool2d(x: ArrayLike, window: IntOrPair = 2, stride: IntOrPair | None = None) -> Array:
    r"""Average pooling over ``window`` patches of NHWC images (no padding).

    .. math::
        y[n, i, j, c] = \frac{1}{w_h w_w} \sum_{k < w_h,\ l < w_w} x[n, i s_h + k, j s_w + l, c]

    Shapes as ``max_pool2d``; integer inputs are promoted to the default float dtype.
    """
    x, dims, strides = _pool_args("avg_pool2d", x, window, stride)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    total = lax.reduce_window(x, np.array(0, x.dtype), lax.add, dims, strides, "VALID")
    return total / (dims[1] * dims[2])


def flatten(x: ArrayLike) -> Array:
    """Flatten all axes but the leading batch axis: ``(N, ...) -> (N, prod(...))``."""
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"flatten: x must have a leading batch axis, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def batch_norm(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike, running_mean: ArrayLike,
               running_var: ArrayLike, *, train: bool, momentum: float = 0.1,
               eps: float = 1e-5) -> Tuple[Array, Tuple[Array, Array]]:
    r"""Batch normalization over every axis but the last, with PyTorch's ``BatchNorm`` semantics.

    .. math::
        y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta

    Train mode: :math:`\mu, \sigma^2` are the batch mean and *biased* batch variance per channel
    (over the ``m`` entries of all the other axes), and the running statistics are updated as
    ``running ← (1 − momentum) · running + momentum · batch_stat``, with the *unbiased* variance
    :math:`\sigma^2 m / (m - 1)`. Eval mode: :math:`\mu, \sigma^2` are the running statistics,
    which are returned unchanged. The new running statistics keep the running arrays' dtype, so
    they can be carried through ``lax.scan``. (Ioffe & Szegedy, 2015.)

    Args:
      x: ``(N, C)`` or ``(N, H, W, C)`` (any ``(..., C)`` with ndim >= 2), floating.
      gamma: scale, ``(C,)``.
      beta: shift, ``(C,)``.
      running_mean: ``(C,)``.
      running_var: ``(C,)``.
      train: static Python bool.
      momentum: weight of the batch statistic in the running update, in ``[0, 1]``.
      eps: added to the variance, > 0.

    Returns:
      ``(y, (new_running_mean, new_running_var))`` with ``y`` like ``x`` and the statistics
      ``(C,)``.
    """
    x = _as_float("batch_norm", x)
    gamma, beta, running_mean, running_var = _bn_channel_args(
        "batch_norm", x, gamma=gamma, beta=beta, running_mean=running_mean,
        running_var=running_var)
    if not isinstance(train, (bool, np.bool_)):
        raise TypeError(f"batch_norm: train must be a static Python bool, got {train!r}")
    if isinstance(momentum, numbers.Real) and not 0 <= momentum <= 1:
        raise ValueError(f"batch_norm: momentum must be in [0, 1], got {momentum!r}")
    if isinstance(eps, numbers.Real):
        check_positive("batch_norm", "eps", eps)
    if not train:
        y = gamma * (x - running_mean) * lax.rsqrt(running_var + eps) + beta
        return y, (running_mean, running_var)
    m = int(np.prod(x.shape[:-1]))
    if m < 2:
        raise ValueError(f"batch_norm: train mode needs more than one value per channel "
                         f"(prod of x.shape[:-1] >= 2) for the unbiased variance, got x shape "
                         f"{tuple(x.shape)}")
    mean, var, centered = _batch_stats(x)
    y = gamma * centered * lax.rsqrt(var + eps) + beta
    new_mean = (1 - momentum) * running_mean + momentum * mean
    new_var = (1 - momentum) * running_var + momentum * var * (m / (m - 1))
    return y, (new_mean.astype(running_mean.dtype), new_var.astype(running_var.dtype))


def batch_norm_input_grad(x: ArrayLike, gamma: ArrayLike, dy: ArrayLike,
                          eps: float = 1e-5) -> Array:
    r"""Closed-form input gradient :math:`\partial L/\partial x` of train-mode ``batch_norm``.

    With :math:`\hat x = (x - \mu)/\sigma`, :math:`\sigma = \sqrt{\sigma^2_B + \epsilon}` and ``m``
    entries per channel (``m = N`` for ``(N, C)`` input), the seed's
    ``BatchNormalization.backward``

    .. math::
        \partial x = \frac{\gamma\,\partial y}{\sigma} + \frac{2\,\partial\sigma^2 (x - \mu)}{m}
                     + \frac{\partial\mu}{m}, \quad
        \partial\sigma^2 = -\tfrac12 \sum \gamma\,\partial y\,(x - \mu)\,\sigma^{-3}, \quad
        \partial\mu = -\sum \gamma\,\partial y / \sigma

    simplifies to

    .. math::
        \partial x = \frac{\gamma}{m\,\sigma}\Big(m\,\partial y - \sum \partial y
                     - \hat x \sum \partial y\, \hat x\Big),

    sums over the normalized axes. It does not depend on ``beta`` or the running statistics.

    Args:
      x: ``(N, C)`` (or any ``(..., C)`` with ndim >= 2), the layer's input.
      gamma: ``(C,)``.
      dy: like ``x``, the gradient of the loss with respect to the layer's output.
      eps: as in ``batch_norm``.

    Returns:
      ``dx`` like ``x``.
    """
    x = _as_float("batch_norm_input_grad", x)
    (gamma,) = _bn_channel_args("batch_norm_input_grad", x, gamma=gamma)
    if isinstance(eps, numbers.Real):
        check_positive("batch_norm_input_grad", "eps", eps)
    dy = jnp.asarray(dy)
    if dy.shape != x.shape:
        raise ValueError(f"batch_norm_input_grad: dy must have x's shape {tuple(x.shape)}, got "
                         f"{tuple(dy.shape)}")
    check_real_dtype("batch_norm_input_grad", "dy", dy, _REAL)
    axes = tuple(range(x.ndim - 1))
    m = int(np.prod(x.shape[:-1]))
    if m < 1:
        raise ValueError(f"batch_norm_input_grad: x must have at least one value per channel "
                         f"(prod of x.shape[:-1] >= 1), got x shape {tuple(x.shape)}")
    _, var, centered = _batch_stats(x)
    inv_sigma = lax.rsqrt(var + eps)
    x_hat = centered * inv_sigma
    sum_dy = jnp.sum(dy, axis=axes)
    sum_dy_xhat = jnp.sum(dy * x_hat, axis=axes)
    return gamma * inv_sigma / m * (m * dy - sum_dy - x_hat * sum_dy_xhat)


def _batch_stats(x: Array) -> Tuple[Array, Array, Array]:
    r"""Per-channel mean, biased variance and centred input ``x - μ`` over every axis but the
    last, accurate also for channels whose spread is small against their offset.

    Shifted data (Chan, Golub & LeVeque, 1983): with ``K`` the first entry of each channel and
    ``d = x - K``, :math:`x - \mu = d - \operatorname{mean}(d)`, :math:`\sigma^2 =
    \operatorname{mean}((x - \mu)^2)` and :math:`\mu = K + \operatorname{mean}(d)`. The plain
    ``x - mean(x)`` carries the round-off of ``mean(x)`` and of ``μ`` itself, of order
    ``eps·|x|``: in float32 a channel equal to 6554.23 everywhere got ``x - μ = 5e-4`` and
    normalized to 0.15 instead of 0, and a spread of 0.01 around 6554 normalized with errors
    up to 0.03 (now 6e-8). Differences ``x - K`` within a factor 2 of each other are exact, so the centred input
    is exact for a constant channel and accurate to ``eps·spread`` otherwise. ``K`` is under
    ``stop_gradient``: the results do not depend on it, so derivatives of every order are
    those of the plain formulas.

    Returns:
      ``(mean, var, centered)``: ``(C,)``, ``(C,)`` and ``x``'s shape.
    """
    axes = tuple(range(x.ndim - 1))
    shift = lax.stop_gradient(x.reshape(-1, x.shape[-1])[0])
    d = x - shift
    d_mean = jnp.mean(d, axis=axes)
    centered = d - d_mean
    return shift + d_mean, jnp.mean(jnp.square(centered), axis=axes), centered


def _as_float(fn: str, x: ArrayLike) -> Array:
    """``x`` as a real array of ndim >= 2 with a floating dtype (integers -> default float)."""
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{fn}: x must be at least 2-D (N, C) or (N, H, W, C), got shape "
                         f"{tuple(x.shape)}")
    check_real_dtype(fn, "x", x, _REAL)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _bn_channel_args(fn: str, x: Array, **arrays) -> Tuple[Array, ...]:
    """Each of ``arrays`` as an array of shape ``(C,)``, ``C = x.shape[-1]``, else ValueError."""
    channels = x.shape[-1]
    out = []
    for name, value in arrays.items():
        value = jnp.asarray(value)
        if value.shape != (channels,):
            raise ValueError(f"{fn}: {name} must have shape ({channels},) (C, x's last axis; x "
                             f"shape {tuple(x.shape)}), got {tuple(value.shape)}")
        check_real_dtype(fn, name, value, _REAL)
        out.append(value)
    return tuple(out)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _pair(fn: str, name: str, value: IntOrPair) -> Tuple[int, int]:
    if _is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(map(_is_int, value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints (h, w), got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{fn}: {name} must be >= 1, got {value!r}")
    return pair


def _padding(fn: str, padding: Padding):
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"{fn}: padding must be an int, a pair of ints (p_h, p_w), 'SAME' or "
                             f"'VALID', got {padding!r}")
        return padding.upper()
    if _is_int(padding):
        ph = pw = int(padding)
    elif isinstance(padding, (tuple, list)) and len(padding) == 2 and all(map(_is_int, padding)):
        ph, pw = int(padding[0]), int(padding[1])
    else:
        raise TypeError(f"{fn}: padding must be an int, a pair of ints (p_h, p_w), 'SAME' or "
                        f"'VALID', got {padding!r}")
    if ph < 0 or pw < 0:
        raise ValueError(f"{fn}: padding must be >= 0, got {padding!r}")
    return ((ph, ph), (pw, pw))


def _pool_args(fn: str, x, window, stride):
    x = jnp.asarray(x)
    check_ndim(fn, "x", x, 4, "(N, H, W, C)")
    check_real_dtype(fn, "x", x, _REAL)
    wh, ww = _pair(fn, "window", window)
    sh, sw = _pair(fn, "stride", window if stride is None else stride)
    if wh > x.shape[1] or ww > x.shape[2]:
        raise ValueError(f"{fn}: window {(wh, ww)} must fit in the input's spatial shape "
                         f"(H, W) = {tuple(x.shape[1:3])} (x shape {tuple(x.shape)})")
    return x, (1, wh, ww, 1), (1, sh, sw, 1)


__all__ = [
    "init_dense",
    "dense",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "flatten",
    "batch_norm",
    "batch_norm_input_grad",
]
