"""The ``Trainer`` contract and what every trainer shares: argument checks, loss and gradient."""

from __future__ import annotations

import operator
from typing import Any, Callable, Dict, Mapping, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

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
        Params and state keep their dtypes whatever the data's (float32 params stay float32
        under x64, also on float64 data); metrics are in the params' dtype, except ``"loss"``,
        which is what ``loss_fn`` returns.
    """

    init: Callable[[Params], PyTree]
    step: Callable[[Params, PyTree, Batch], Tuple[Params, PyTree, Metrics]]


def check_real(fn: str, name: str, value: Any) -> float:
    """``value`` as a Python float; TypeError unless a real number (not a bool or a string),
    ValueError unless it is a scalar."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__} "
                        f"{value!r}")
    if np.ndim(value) != 0:
        raise ValueError(f"{fn}: {name} must be a scalar, got shape {np.shape(value)}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__} "
                        f"{value!r}") from None


def check_int(fn: str, name: str, value: Any, low: int) -> int:
    """``value`` as an ``int``; TypeError unless integral (not a bool), ValueError if < ``low``."""
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be an integer, got {type(value).__name__} "
                        f"{value!r}") from None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be an integer, got the bool {value!r}")
    if number < low:
        raise ValueError(f"{fn}: {name} must be >= {low}, got {value!r}")
    return number


def check_flag(fn: str, name: str, value: Any) -> None:
    """Raise TypeError unless ``value`` is a bool (a truthy string is not a switch)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be True or False, got {type(value).__name__} "
                        f"{value!r}")


def check_learning_rate(fn: str, learning_rate: Any, *, allow_schedule: bool = True) -> None:
    """Raise unless a constant learning rate is finite and > 0.

    An optax schedule (a callable) is passed through when ``allow_schedule``; otherwise it is a
    TypeError (the second-order trainers keep no step count to evaluate it at).
    """
    if callable(learning_rate):
        if allow_schedule:
            return
        raise TypeError(f"{fn}: learning_rate must be a positive number, got the callable "
                        f"{learning_rate!r} (only the first-order trainers take schedules)")
    lr = check_real(fn, "learning_rate", learning_rate)
    if not (lr > 0 and np.isfinite(lr)):
        raise ValueError(f"{fn}: learning_rate must be > 0 and finite, got {learning_rate!r}")


def check_damping(fn: str, damping: Any) -> None:
    """Raise unless ``damping`` is a finite real number ``>= 0``."""
    lam = check_real(fn, "damping", damping)
    if not (lam >= 0 and np.isfinite(lam)):
        raise ValueError(f"{fn}: damping must be >= 0 and finite, got {damping!r}")


def check_params(fn: str, params: Params) -> None:
    """Raise TypeError unless ``params`` is a non-empty pytree of real floating-point arrays.

    ``jax.grad`` differentiates every leaf: an integer leaf (or no leaf at all) has no
    gradient to step along.
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    if not leaves:
        raise TypeError(f"{fn}: params must be a pytree of floating-point arrays, got {params!r}")
    for path, leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{fn}: params must hold only floating-point arrays, got dtype "
                            f"{dtype} at params{jax.tree_util.keystr(path)}")


def check_state(fn: str, state: Any, keys: Tuple[str, ...]) -> None:
    """Raise ValueError unless ``state`` is the dict with exactly ``keys`` that ``init`` returns."""
    if not isinstance(state, Mapping) or set(state) != set(keys):
        got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"{fn}: state must be the dict with keys {sorted(keys)} that init "
                         f"returns, got {got}")


def value_and_grad(fn: str, loss_fn: LossFn, params: Params, batch: Batch) -> Tuple[Array, Params]:
    """``(loss, grad)`` of ``loss_fn(params, batch)``; ValueError if the loss is not a scalar,
    TypeError if ``params`` are not all floating point (see ``check_params``)."""
    check_params(fn, params)
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
