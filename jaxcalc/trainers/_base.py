"""The ``Trainer`` contract and what every trainer shares: argument checks, loss and gradient."""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcalc import _validate
from jaxcalc._types import Array, Batch, LossFn, Params, PyTree

Metrics = Dict[str, Array]


class Trainer(NamedTuple):
    """A training algorithm as a pair of pure functions (like an optax ``GradientTransformation``).

    Attributes:
      init: ``init(params) -> state``.
      step: ``step(params, state, batch) -> (params, state, metrics)``. ``batch`` is a tuple of
        arrays with a common leading batch axis; ``metrics`` is a dict of scalars with at least
        ``"loss"`` (the loss *before* the step) and ``"grad_norm"``; second-order trainers add
        ``"damping"`` and ``"step_size"``. ``step`` is ``jax.jit``-able and does not retrace
        after its first call (hyperparameters are closed over, state shapes and dtypes fixed).
    """

    init: Callable[[Params], PyTree]
    step: Callable[[Params, PyTree, Batch], Tuple[Params, PyTree, Metrics]]


def check_learning_rate(fn: str, learning_rate: Any, *, allow_schedule: bool = True) -> None:
    """Raise ValueError unless a constant learning rate is > 0.

    An optax schedule (a callable) is passed through when ``allow_schedule``; otherwise it is a
    TypeError (the second-order trainers keep no step count to evaluate it at).
    """
    if callable(learning_rate):
        if allow_schedule:
            return
        raise TypeError(f"{fn}: learning_rate must be a positive number, got the callable "
                        f"{learning_rate!r} (only the first-order trainers take schedules)")
    if not np.isscalar(learning_rate) and np.ndim(learning_rate) != 0:
        raise ValueError(f"{fn}: learning_rate must be a positive scalar or an optax schedule, "
                         f"got shape {np.shape(learning_rate)}")
    if not float(learning_rate) > 0:
        raise ValueError(f"{fn}: learning_rate must be > 0, got {learning_rate!r}")


def check_damping(fn: str, damping: Any) -> None:
    """Raise ValueError unless ``damping >= 0``."""
    if not float(damping) >= 0:
        raise ValueError(f"{fn}: damping must be >= 0, got {damping!r}")


def check_batch(fn: str, batch: Any) -> Batch:
    """Check ``batch`` is a non-empty tuple of arrays that agree on the leading dimension."""
    return _validate.check_batch(fn, batch)[0]


def value_and_grad(fn: str, loss_fn: LossFn, params: Params, batch: Batch) -> Tuple[Array, Params]:
    """``(loss, grad)`` of ``loss_fn(params, batch)``; ValueError if the loss is not a scalar."""
    out = jax.eval_shape(loss_fn, params, batch)
    if getattr(out, "shape", None) != ():
        raise ValueError(f"{fn}: loss_fn must return a scalar (the mean loss over the batch), "
                         f"got shape {getattr(out, 'shape', type(out).__name__)}")
    return jax.value_and_grad(loss_fn)(params, batch)


def float_dtype(fn: str, params: Params):
    """The floating dtype of the parameters (their first floating leaf)."""
    for leaf in jax.tree_util.tree_leaves(params):
        if jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            return jnp.result_type(leaf)
    raise TypeError(f"{fn}: params must contain at least one floating-point array, got {params!r}")


def grad_norm(grads: Params) -> Array:
    """Global L2 norm of a gradient pytree."""
    return optax.tree_utils.tree_norm(grads)
