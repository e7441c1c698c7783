"""Loss functions, each beside its closed-form gradient with respect to the prediction.

Every loss takes ``reduction="mean" | "sum" | "none"``:

- ``mse``, ``binary_cross_entropy``, ``binary_cross_entropy_with_logits`` are *elementwise*:
  ``"none"`` returns the per-element losses (same shape as the prediction), ``"mean"`` their
  mean over all elements, ``"sum"`` their sum. For 1-D inputs of N examples this is the mean
  over examples; for ``(N, K)`` multi-output inputs it is the mean over examples of the mean
  over the K outputs (as ``np.mean((y_true - y_pred) ** 2)`` in the seeds).
- ``softmax_cross_entropy`` is *per example*: ``"none"`` returns shape ``(N,)``, ``"mean"`` the
  mean over the N examples, ``"sum"`` their sum.

Each ``*_grad`` takes the same arguments and returns the gradient of the reduced loss with respect
to the prediction/logits, with the prediction's shape. For ``"none"`` the loss is not a scalar;
since each loss term depends only on its own element (or row), the Jacobian is (block-)diagonal
and ``*_grad`` returns its diagonal (blocks), ``∂ℓ_i / ∂pred_i``, which equals the gradient of
the ``"sum"`` loss.

No broadcasting: prediction and target shapes must match exactly, and wrong shapes raise a
``ValueError`` at trace time naming the function, the argument and the expected shape. Inputs
follow ``jaxcalc.activations``: real arrays (or NumPy arrays, scalars, lists); integer and bool
inputs are promoted to the default float, mixed inputs follow JAX's type promotion (float32 with
integer stays float32, float32 with float64 gives float64); complex or non-numeric inputs raise a
``TypeError`` naming the argument. ``reduction="mean"`` of an empty input raises a ``ValueError``
(a mean over no terms is undefined); ``"sum"`` gives 0 and ``"none"`` an empty array. NaN in
gives NaN out (for ``"none"``, in the affected elements or rows only).

Relation to the seed's ``LossFunctions`` (seed 002): its ``mse`` is ``mse(..., "mean")``, and its
gradient ``2 * (y_pred - y_true) / y_true.shape[0]`` equals ``mse_grad`` for 1-D inputs only
(for ``(N, K)`` inputs it is K times the gradient of its own loss). Its ``cross_entropy`` is
``-mean(y_true * log(y_pred))`` over all ``N * C`` elements of probability rows, so for
``y_pred = softmax(logits)`` it is ``softmax_cross_entropy(logits, y_true) / C`` (up to its clip
at 1e-15).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcalc._types import Array, ArrayLike
from jaxcalc._validate import as_real_array, check_choice, check_ndim, check_shape
from jaxcalc.activations import _float_dtype, _log_softmax

REDUCTIONS = ("mean", "sum", "none")
BCE_EPSILON = 1e-15  # the seed's probability clip; raised to finfo(dtype).eps where coarser.


def mse(pred: ArrayLike, target: ArrayLike, reduction: str = "mean") -> Array:
    r"""Mean squared error :math:`\frac{1}{M}\sum_i (\hat y_i - y_i)^2` over all M elements.

    Args:
      pred: predictions, any shape.
      target: targets, the same shape as ``pred`` (no broadcasting).
      reduction: ``"mean"`` over all elements, ``"sum"``, or ``"none"`` (elementwise squared
        error, the shape of ``pred``).

    Returns:
      A scalar for ``"mean"``/``"sum"``, else an array shaped like ``pred``.
    """
    check_choice("mse", "reduction", reduction, REDUCTIONS)
    pred, target = _matching_pair("mse", "pred", pred, "target", target, reduction)
    return _reduce(jnp.square(pred - target), reduction)


def mse_grad(pred: ArrayLike, target: ArrayLike, reduction: str = "mean") -> Array:
    r""":math:`\partial\,\mathrm{mse} / \partial \hat y = 2(\hat y - y) / M` (M = ``pred.size``).

    For ``"sum"`` and ``"none"`` the factor ``1/M`` is dropped.

    Args:
      pred, target, reduction: as in ``mse``.

    Returns:
      An array shaped like ``pred``.
    """
    check_choice("mse_grad", "reduction", reduction, REDUCTIONS)
    pred, target = _matching_pair("mse_grad", "pred", pred, "target", target, reduction)
    return 2 * (pred - target) / _grad_divisor(pred.size, reduction)


def binary_cross_entropy(probs: ArrayLike, targets: ArrayLike, reduction: str = "mean") -> Array:
    r"""Binary cross-entropy on probabilities, :math:`-[t \log p + (1 - t) \log(1 - p)]`.

    ``p`` is clipped to ``[eps, 1 - eps]`` to keep the logs finite, as the seed does with
    ``eps = 1e-15``. In float32 ``1 - 1e-15`` rounds to 1 and ``log(1 - p)`` would be
    ``-inf``, so ``eps = max(1e-15, finfo(dtype).eps)`` (1e-15 in float64, about 1.2e-7 in
    float32). The clip zeroes the gradient where ``p`` lies outside ``[eps, 1 - eps]``. Prefer
    ``binary_cross_entropy_with_logits`` when logits are at hand: it needs no clip.

    Args:
      probs: predicted probabilities in [0, 1], any shape.
      targets: targets in [0, 1] (hard or soft labels), the same shape as ``probs``.
      reduction: ``"mean"`` over all elements, ``"sum"``, or ``"none"`` (elementwise).

    Returns:
      A scalar for ``"mean"``/``"sum"``, else an array shaped like ``probs``.
    """
    check_choice("binary_cross_entropy", "reduction", reduction, REDUCTIONS)
    probs, targets = _matching_pair("binary_cross_entropy", "probs", probs, "targets", targets,
                                    reduction)
    eps = max(BCE_EPSILON, float(jnp.finfo(probs.dtype).eps))
    p = jnp.clip(probs, eps, 1 - eps)
    losses = -(targets * jnp.log(p) + (1 - targets) * _log_one_minus(p))
    return _reduce(losses, reduction)


def binary_cross_entropy_with_logits(logits: ArrayLike, targets: ArrayLike,
                                     reduction: str = "mean") -> Array:
    r"""Binary cross-entropy of :math:`\sigma(z)` from logits ``z``, without overflow.

    .. math:: \ell(z, t) = \max(z, 0) - z t + \log(1 + e^{-|z|}),

    the stable form that equals :math:`-[t \log\sigma(z) + (1 - t)\log(1 - \sigma(z))]` without
    overflow and is finite (as are its gradients) for logits of ±1e4 in float32 and float64.

    It is evaluated branchwise, :math:`z(1 - t) + \log(1 + e^{-z})` for :math:`z \ge 0` and
    :math:`\log(1 + e^{z}) - z t` for :math:`z < 0` (double ``where``, so the unused branch never
    sees an overflowing argument). Then ``jax.grad`` is exactly :math:`\sigma(0) - t` at ``z = 0``
    without relying on the subgradient conventions of ``max``/``abs`` (in JAX ``|z|'(0) = 1``),
    and a confident correct logit (``z = 30, t = 1``) gets its loss :math:`\log(1 + e^{-z})` and
    gradient :math:`-\sigma(-z)` to full relative precision, where the ``max`` form cancels O(1)
    terms in the gradient. Infinite logits with the matching hard target (``z = +inf, t = 1`` or
    ``z = -inf, t = 0``) get their limit, loss 0 and gradient 0, not ``inf * 0 = nan``.

    Args:
      logits: real-valued scores ``z``, any shape.
      targets: targets in [0, 1], the same shape as ``logits``.
      reduction: ``"mean"`` over all elements, ``"sum"``, or ``"none"`` (elementwise).

    Returns:
      A scalar for ``"mean"``/``"sum"``, else an array shaped like ``logits``.
    """
    fn = "binary_cross_entropy_with_logits"
    check_choice(fn, "reduction", reduction, REDUCTIONS)
    z, t = _matching_pair(fn, "logits", logits, "targets", targets, reduction)
    pos = z >= 0
    z_pos, z_neg = jnp.where(pos, z, 0), jnp.where(pos, 0, z)
    losses = jnp.where(pos, _limit_product(z_pos, 1 - t) + jnp.log1p(jnp.exp(-z_pos)),
                       jnp.log1p(jnp.exp(z_neg)) - _limit_product(z_neg, t))
    return _reduce(losses, reduction)


def binary_cross_entropy_with_logits_grad(logits: ArrayLike, targets: ArrayLike,
                                          reduction: str = "mean") -> Array:
    r""":math:`\partial \ell / \partial z = (\sigma(z) - t) / M` (M = ``logits.size``).

    Evaluated as :math:`(1 - t) - \sigma(-z)` for :math:`z \ge 0` (same value, no cancellation
    of O(1) terms when ``t = 1``). For ``"sum"`` and ``"none"`` the factor ``1/M`` is dropped.

    Args:
      logits, targets, reduction: as in ``binary_cross_entropy_with_logits``.

    Returns:
      An array shaped like ``logits``.
    """
    fn = "binary_cross_entropy_with_logits_grad"
    check_choice(fn, "reduction", reduction, REDUCTIONS)
    z, t = _matching_pair(fn, "logits", logits, "targets", targets, reduction)
    g = jnp.where(z >= 0, (1 - t) - lax.logistic(-z), lax.logistic(z) - t)
    return g / _grad_divisor(z.size, reduction)


def softmax_cross_entropy(logits: ArrayLike, labels: ArrayLike, reduction: str = "mean") -> Array:
    r"""Categorical cross-entropy of ``softmax(logits)`` against class labels, per example.

    .. math:: \ell_n = -\sum_c y_{nc} \log \mathrm{softmax}(z_n)_c

    Computed with ``log_softmax`` (max subtracted first), so it is exact for logits of ±1e4.
    A class with target 0 contributes nothing (:math:`0 \log 0 = 0`), even when its logit is
    ``-inf`` (a masked class): loss and gradients stay finite; a row needs one finite logit.
    Only 2-D logits ``(N, C)`` with ``C >= 1`` are accepted; reshape sequences ``(N, T, C)`` to
    ``(N * T, C)``.

    Args:
      logits: ``(N, C)`` scores.
      labels: either integer class ids of shape ``(N,)`` with values in ``[0, C)``, or floating
        one-hot / probability rows of shape ``(N, C)``. Ids out of range raise a ``ValueError``
        when ``labels`` is concrete; under ``jax.jit`` (a traced ``labels``) they cannot be
        checked and such an example gets an all-zero target row, i.e. loss 0.
      reduction: ``"mean"`` over the N examples, ``"sum"``, or ``"none"`` (shape ``(N,)``).

    Returns:
      A scalar for ``"mean"``/``"sum"``, else an ``(N,)`` array.
    """
    check_choice("softmax_cross_entropy", "reduction", reduction, REDUCTIONS)
    z, y = _class_targets("softmax_cross_entropy", logits, labels, reduction)
    log_p = _log_softmax(z, -1)
    # 0 · log 0 = 0 for masked classes (double where: no inf * 0 in the gradient either).
    zero_term = (y == 0) & jnp.isneginf(log_p)
    terms = jnp.where(zero_term, 0, y * jnp.where(zero_term, 0, log_p))
    return _reduce(-jnp.sum(terms, axis=-1), reduction)


def softmax_cross_entropy_grad(logits: ArrayLike, labels: ArrayLike,
                               reduction: str = "mean") -> Array:
    r""":math:`\partial \ell / \partial z_n = (\mathrm{softmax}(z_n) - y_n) / N`.

    For rows ``y_n`` that do not sum to 1 the exact gradient,
    :math:`(\mathrm{softmax}(z_n) \sum_c y_{nc} - y_n) / N`, is returned. For ``"sum"`` and
    ``"none"`` the factor ``1/N`` is dropped.

    Args:
      logits, labels, reduction: as in ``softmax_cross_entropy``.

    Returns:
      An ``(N, C)`` array.
    """
    fn = "softmax_cross_entropy_grad"
    check_choice(fn, "reduction", reduction, REDUCTIONS)
    z, y = _class_targets(fn, logits, labels, reduction)
    g = jnp.exp(_log_softmax(z, -1)) * jnp.sum(y, axis=-1, keepdims=True) - y
    return g / _grad_divisor(z.shape[0], reduction)


def _matching_pair(fn: str, name_a: str, a: ArrayLike, name_b: str, b: ArrayLike,
                   reduction: str):
    """``a`` and ``b`` as arrays of their common floating dtype; their shapes must be equal."""
    a, b = as_real_array(fn, name_a, a), as_real_array(fn, name_b, b)
    check_shape(fn, name_b, b, a.shape, f"(the shape of {name_a})")
    _check_nonempty_mean(fn, name_a, a, reduction)
    dtype = _float_dtype(a, b)
    return a.astype(dtype), b.astype(dtype)


def _class_targets(fn: str, logits: ArrayLike, labels: ArrayLike, reduction: str):
    """``(N, C)`` logits and ``(N, C)`` target rows from integer ids or rows; see the losses."""
    logits, labels = as_real_array(fn, "logits", logits), as_real_array(fn, "labels", labels)
    check_ndim(fn, "logits", logits, 2, "(N, C)")
    n, c = logits.shape
    if c == 0:
        raise ValueError(f"{fn}: logits must have at least one class, C >= 1, got shape {(n, c)}")
    _check_nonempty_mean(fn, "logits", logits, reduction)
    if jnp.issubdtype(labels.dtype, jnp.integer):
        layout = "(N,) of integer class ids (pass one-hot rows as a floating (N, C) array)"
        check_ndim(fn, "labels", labels, 1, layout)
        check_shape(fn, "labels", labels, (n,), layout)
        if not isinstance(labels, jax.core.Tracer):
            ids = np.asarray(labels)
            bad = ids[(ids < 0) | (ids >= c)]
            if bad.size:
                raise ValueError(f"{fn}: labels must be class ids in [0, {c}) for logits of shape "
                                 f"{(n, c)}, got out-of-range values {np.unique(bad)[:5].tolist()}")
        dtype = _float_dtype(logits)
        return logits.astype(dtype), jax.nn.one_hot(labels, c, dtype=dtype)
    check_shape(fn, "labels", labels, (n, c),
                "(N, C) of one-hot or probability rows (class ids need an integer dtype)")
    dtype = _float_dtype(logits, labels)
    return logits.astype(dtype), labels.astype(dtype)


def _check_nonempty_mean(fn: str, name: str, x: Array, reduction: str) -> None:
    """Raise ValueError if ``reduction="mean"`` would average over no terms (empty ``x``)."""
    if reduction == "mean" and x.size == 0:
        raise ValueError(f"{fn}: {name} must not be empty for reduction='mean' (a mean over no "
                         f"terms is undefined), got shape {tuple(x.shape)}")


def _log_one_minus(p: Array) -> Array:
    r""":math:`\log(1 - p)` for ``p`` in [0, 1], to a few ulps.

    ``log1p(-p)`` for small ``p`` (where ``1 - p`` would round away ``p``), ``log(1 - p)`` from
    ``p = 1/4`` on, where ``1 - p`` rounds by at most ``eps/4``. Not ``log1p`` throughout: XLA's
    float64 ``log1p`` on CPU is off by up to 129 ulps for arguments in (-0.414, -0.293)
    (jax-ml/jax#39707; fix proposed in openxla/xla#46765).
    """
    return jnp.where(p < 0.25, jnp.log1p(-p), jnp.log(1 - p))


def _limit_product(z: Array, w: Array) -> Array:
    """``z * w``, but 0 where ``z`` is infinite and ``w`` is 0 (the loss's limit, not NaN).

    Double ``where``: the masked product never sees ``inf``, so its gradient is 0, not NaN.
    """
    limit = jnp.isinf(z) & (w == 0)
    return jnp.where(limit, 0, jnp.where(limit, 0, z) * w)


def _reduce(losses: Array, reduction: str) -> Array:
    """Mean or sum over all elements of ``losses``, or ``losses`` itself for ``"none"``."""
    if reduction == "mean":
        return jnp.mean(losses)
    if reduction == "sum":
        return jnp.sum(losses)
    return losses


def _grad_divisor(count: int, reduction: str) -> int:
    """What the reduction divides each term's gradient by: ``count`` for ``"mean"``, else 1."""
    return count if reduction == "mean" else 1


__all__ = [
    "REDUCTIONS",
    "mse",
    "mse_grad",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "softmax_cross_entropy",
    "softmax_cross_entropy_grad",
]
