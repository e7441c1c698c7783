"""Activation functions, each beside its closed-form derivative.

All functions are elementwise (except ``softmax``/``log_softmax``/``softmax_jacobian``, which act
on one axis), pure, ``jax.jit``-able and differentiable by ``jax.grad``. Derivatives are the
derivatives with respect to the *input* ``x``, evaluated elementwise, and a test holds each
against ``jax.grad`` and central finite differences.

Shapes and dtypes: every function takes an array of any shape and returns one of the same
shape (``softmax_jacobian`` adds a trailing axis). A floating input keeps its dtype (float32 in,
float32 out, even with ``jax_enable_x64``); integer input is computed in the default float dtype.

Numerics: ``sigmoid`` is ``lax.logistic`` (no overflow: exactly 0 and 1 at ∓1e4, finite
gradients); ``softplus`` is ``logaddexp(x, 0)``; ``log_softmax`` subtracts the max first, so it
is exact for logits of ±1e4.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxcalc._types import Array, ArrayLike


def sigmoid(x: ArrayLike) -> Array:
    r"""Logistic sigmoid :math:`\sigma(x) = 1 / (1 + e^{-x})`."""
    return lax.logistic(jnp.asarray(x, dtype=_float_dtype(x)))


def sigmoid_derivative(x: ArrayLike) -> Array:
    r""":math:`\sigma'(x) = \sigma(x)(1 - \sigma(x))`.

    In float64, ``sigmoid_derivative(0.5) = 0.2350037122015945`` (the seed's value).
    """
    s = sigmoid(x)
    return s * (1 - s)


def relu(x: ArrayLike) -> Array:
    r"""Rectified linear unit :math:`\max(0, x)`.

    Written with ``where`` rather than ``maximum`` so that ``jax.grad`` gives 0 at the kink
    (``maximum`` splits the tie and would give 0.5), agreeing with ``relu_derivative``.

    Reference: Nair & Hinton, "Rectified Linear Units Improve Restricted Boltzmann Machines", 2010.
    """
    x = jnp.asarray(x, dtype=_float_dtype(x))
    return jnp.where(x > 0, x, jnp.zeros_like(x))


def relu_derivative(x: ArrayLike) -> Array:
    r"""Heaviside step :math:`1[x > 0]`.

    By convention ``relu_derivative(0) = 0``, which is also what ``jax.grad(relu)(0.0)`` gives.
    """
    x = jnp.asarray(x, dtype=_float_dtype(x))
    return jnp.where(x > 0, jnp.ones_like(x), jnp.zeros_like(x))


def tanh(x: ArrayLike) -> Array:
    r"""Hyperbolic tangent."""
    return jnp.tanh(jnp.asarray(x, dtype=_float_dtype(x)))


def tanh_derivative(x: ArrayLike) -> Array:
    r""":math:`\tanh'(x) = 1 - \tanh^2(x)`."""
    t = tanh(x)
    return 1 - t * t


def softplus(x: ArrayLike) -> Array:
    r""":math:`\log(1 + e^{x})`, computed as ``logaddexp(x, 0)`` (no overflow).

    Reference: Dugas et al., "Incorporating Second-Order Functional Knowledge for Better Option
    Pricing", 2001.
    """
    x = jnp.asarray(x, dtype=_float_dtype(x))
    return jnp.logaddexp(x, jnp.zeros_like(x))


def softplus_derivative(x: ArrayLike) -> Array:
    r""":math:`\mathrm{softplus}'(x) = \sigma(x)`."""
    return sigmoid(x)


def leaky_relu(x: ArrayLike, negative_slope: float = 0.01) -> Array:
    r""":math:`x` for :math:`x > 0`, else :math:`\alpha x` with ``negative_slope`` α.

    Reference: Maas, Hannun & Ng, "Rectifier Nonlinearities Improve Neural Network Acoustic
    Models", 2013.
    """
    x = jnp.asarray(x, dtype=_float_dtype(x))
    return jnp.where(x > 0, x, negative_slope * x)


def leaky_relu_derivative(x: ArrayLike, negative_slope: float = 0.01) -> Array:
    r""":math:`1` for :math:`x > 0`, else α.

    So the derivative at 0 is α, matching ``jax.grad(leaky_relu)(0.0)``.
    """
    x = jnp.asarray(x, dtype=_float_dtype(x))
    return jnp.where(x > 0, jnp.ones_like(x), jnp.full_like(x, negative_slope))


def softmax(x: ArrayLike, axis: int = -1) -> Array:
    r""":math:`\mathrm{softmax}(x)_i = e^{x_i - m} / \sum_j e^{x_j - m}` with ``m = max(x)``.

    Normalized along ``axis``; computed as ``exp(log_softmax(x, axis))``.
    """
    return jnp.exp(log_softmax(x, axis=axis))


def log_softmax(x: ArrayLike, axis: int = -1) -> Array:
    r""":math:`x_i - \log\sum_j e^{x_j}`, with the max subtracted first (exact for logits ±1e4)."""
    x = jnp.asarray(x, dtype=_float_dtype(x))
    shifted = x - lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


def softmax_jacobian(x: ArrayLike) -> Array:
    r"""Jacobian of ``softmax`` over the last axis: :math:`J = \mathrm{diag}(s) - s s^\top`.

    Args:
      x: logits of shape ``(..., C)``.

    Returns:
      ``(..., C, C)`` with ``J[..., i, j] = ∂ s_i / ∂ x_j``.
    """
    s = softmax(x, axis=-1)
    return s[..., :, None] * jnp.eye(s.shape[-1], dtype=s.dtype) - s[..., :, None] * s[..., None, :]


def _float_dtype(*xs: ArrayLike):
    """The dtype to compute in: the inputs' promoted dtype if floating, else the default float."""
    dtype = jnp.result_type(*xs)
    if jnp.issubdtype(dtype, jnp.floating):
        return dtype
    return jnp.result_type(float)


__all__ = [
    "sigmoid",
    "sigmoid_derivative",
    "relu",
    "relu_derivative",
    "tanh",
    "tanh_derivative",
    "softplus",
    "softplus_derivative",
    "leaky_relu",
    "leaky_relu_derivative",
    "softmax",
    "log_softmax",
    "softmax_jacobian",
]
