"""Layers as pure functions: dense, 2-D convolution, pooling, flatten and batch normalization.

Conventions: images are NHWC ``(N, H, W, C)``, convolution kernels HWIO ``(KH, KW, C_in, C_out)``.
``conv2d`` is a cross-correlation (the kernel is not flipped), exactly like the seed notes'
``convolution2D`` loop and like every deep-learning framework. Shapes are checked at trace time
and bad ones raise ``ValueError`` naming the argument and the expected layout.
"""

from __future__ import annotations

from typing import Tuple, Union

import jax
import jax.numpy as jnp
from jax import lax

from jaxcalc._types import Array, ArrayLike, Params, PRNGKey
from jaxcalc._validate import check_ndim

IntOrPair = Union[int, Tuple[int, int]]
Padding = Union[int, Tuple[int, int], str]

_INITS = ("glorot", "he", "lecun")


def init_dense(key: PRNGKey, in_features: int, out_features: int, *, init: str = "glorot",
               dtype=None) -> Params:
    r"""Parameters ``{"w": (in_features, out_features), "b": (out_features,)}`` of a dense layer.

    ``w`` is drawn from a normal distribution with variance ``2 / (in + out)`` (``"glorot"``,
    Glorot & Bengio 2010), ``2 / in`` (``"he"``, He et al. 2015, for ReLU) or ``1 / in``
    (``"lecun"``); ``b`` is zero. ``dtype`` defaults to JAX's default float.
    """
    if init not in _INITS:
        raise ValueError(f"init_dense: init must be one of {list(_INITS)}, got {init!r}")
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
      params: ``{"w": (in, out), "b": (out,)}``.
      x: ``(..., in)``.

    Returns:
      ``(..., out)``.
    """
    x = jnp.asarray(x)
    w, b = params["w"], params["b"]
    if x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"dense: x must have shape (..., {w.shape[0]}) to match params['w'] of "
                         f"shape {tuple(w.shape)}, got {tuple(x.shape)}")
    return x @ w + b


def conv2d(x: ArrayLike, kernel: ArrayLike, bias: ArrayLike | None = None, *,
           stride: IntOrPair = 1, padding: Padding = 0) -> Array:
    r"""2-D cross-correlation of NHWC images with an HWIO kernel.

    .. math:: y[n, i, j, o] = b[o] + \sum_{k,l,c} x_p[n, i s_h + k, j s_w + l, c]\, K[k, l, c, o]

    where :math:`x_p` is ``x`` zero-padded. Output size per spatial axis:
    ``(H + 2p - KH) // s + 1`` (as the seed's ``convolution2D``).

    Args:
      x: ``(N, H, W, C_in)``.
      kernel: ``(KH, KW, C_in, C_out)``.
      bias: ``(C_out,)`` or None.
      stride: int or ``(s_h, s_w)``.
      padding: int, ``(p_h, p_w)`` (symmetric zero padding), ``"SAME"`` or ``"VALID"``.

    Returns:
      ``(N, H_out, W_out, C_out)``.
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    check_ndim("conv2d", "x", x, 4, "(N, H, W, C_in)")
    check_ndim("conv2d", "kernel", kernel, 4, "(KH, KW, C_in, C_out)")
    if kernel.shape[2] != x.shape[3]:
        raise ValueError(f"conv2d: kernel must have C_in = {x.shape[3]} (x's last axis) in shape "
                         f"(KH, KW, C_in, C_out), got kernel shape {tuple(kernel.shape)}")
    strides = _pair("conv2d", "stride", stride)
    pads = _padding("conv2d", padding)
    if not isinstance(pads, str):
        for axis, (size, k, (lo, hi)) in enumerate(zip(x.shape[1:3], kernel.shape[:2], pads)):
            if size + lo + hi < k:
                raise ValueError(f"conv2d: kernel {tuple(kernel.shape[:2])} is larger than the "
                                 f"padded input {tuple(x.shape[1:3])} + padding {padding}")
    elif pads == "VALID" and (x.shape[1] < kernel.shape[0] or x.shape[2] < kernel.shape[1]):
        raise ValueError(f"conv2d: kernel {tuple(kernel.shape[:2])} is larger than the input "
                         f"{tuple(x.shape[1:3])} with padding 'VALID'")
    y = lax.conv_general_dilated(x, kernel, window_strides=strides, padding=pads,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if bias is not None:
        bias = jnp.asarray(bias)
        if bias.shape != (kernel.shape[3],):
            raise ValueError(f"conv2d: bias must have shape ({kernel.shape[3]},) (C_out), got "
                             f"{tuple(bias.shape)}")
        y = y + bias
    return y


def max_pool2d(x: ArrayLike, window: IntOrPair = 2, stride: IntOrPair | None = None) -> Array:
    r"""Max pooling over ``window`` patches of NHWC images (no padding).

    Args:
      x: ``(N, H, W, C)``.
      window: int or ``(wh, ww)``.
      stride: int or pair; defaults to ``window`` (non-overlapping windows).

    Returns:
      ``(N, (H - wh) // sh + 1, (W - ww) // sw + 1, C)``.
    """
    x, dims, strides = _pool_args("max_pool2d", x, window, stride)
    init = jnp.array(-jnp.inf, x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else \
        jnp.array(jnp.iinfo(x.dtype).min, x.dtype)
    return lax.reduce_window(x, init, lax.max, dims, strides, "VALID")


def avg_pool2d(x: ArrayLike, window: IntOrPair = 2, stride: IntOrPair | None = None) -> Array:
    r"""Average pooling over ``window`` patches of NHWC images (no padding); shapes as ``max_pool2d``."""
    x, dims, strides = _pool_args("avg_pool2d", x, window, stride)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    total = lax.reduce_window(x, jnp.array(0, x.dtype), lax.add, dims, strides, "VALID")
    return total / (dims[1] * dims[2])


def flatten(x: ArrayLike) -> Array:
    """Flatten all axes but the leading batch axis: ``(N, ...) -> (N, prod(...))``."""
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"flatten: x must have a leading batch axis, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def _pair(fn: str, name: str, value: IntOrPair) -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{fn}: {name} must be >= 1, got {value!r}")
    return pair


def _padding(fn: str, padding: Padding):
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"{fn}: padding must be an int, a pair, 'SAME' or 'VALID', got {padding!r}")
        return padding.upper()
    if isinstance(padding, int) and not isinstance(padding, bool):
        ph = pw = padding
    elif isinstance(padding, (tuple, list)) and len(padding) == 2 and all(isinstance(p, int) for p in padding):
        ph, pw = padding
    else:
        raise TypeError(f"{fn}: padding must be an int, a pair, 'SAME' or 'VALID', got {padding!r}")
    if ph < 0 or pw < 0:
        raise ValueError(f"{fn}: padding must be >= 0, got {padding!r}")
    return ((ph, ph), (pw, pw))


def _pool_args(fn: str, x, window, stride):
    x = jnp.asarray(x)
    check_ndim(fn, "x", x, 4, "(N, H, W, C)")
    wh, ww = _pair(fn, "window", window)
    sh, sw = _pair(fn, "stride", window if stride is None else stride)
    if wh > x.shape[1] or ww > x.shape[2]:
        raise ValueError(f"{fn}: window {(wh, ww)} must fit in the input's spatial shape "
                         f"(H, W) = {tuple(x.shape[1:3])}")
    return x, (1, wh, ww, 1), (1, sh, sw, 1)


__all__ = [
    "init_dense",
    "dense",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "flatten",
]
