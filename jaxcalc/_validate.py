"""Trace-time argument checks that raise clear errors.

Every check runs on static information only (shapes, dtypes, pytree structure), so it works
under ``jax.jit`` and costs nothing at run time. Messages name the argument, what was expected
and what was given, e.g. ``conv2d: x must be 4-D (N, H, W, C_in), got shape (28, 28, 1)``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_ndim(fn: str, name: str, x, ndim: int | Sequence[int], layout: str = "") -> None:
    """Raise ValueError unless ``x.ndim`` is ``ndim`` (or one of several)."""
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    got = np.ndim(x)
    if got not in allowed:
        want = " or ".join(f"{n}-D" for n in allowed)
        hint = f" {layout}" if layout else ""
        raise ValueError(f"{fn}: {name} must be {want}{hint}, got shape {tuple(np.shape(x))}")


def check_floating(fn: str, name: str, x) -> None:
    """Raise TypeError unless ``x`` has a floating-point dtype."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{fn}: {name} must have a floating dtype, got {dtype}")


def check_same_structure(fn: str, name_a: str, a, name_b: str, b) -> None:
    """Raise ValueError unless pytrees ``a`` and ``b`` have the same structure and leaf shapes."""
    ta, tb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
    if ta != tb:
        raise ValueError(f"{fn}: {name_b} must have the same pytree structure as {name_a}; "
                         f"{name_a} is {ta}, {name_b} is {tb}")
    sa = [np.shape(x) for x in jax.tree_util.tree_leaves(a)]
    sb = [np.shape(x) for x in jax.tree_util.tree_leaves(b)]
    if sa != sb:
        raise ValueError(f"{fn}: {name_b} must have the same leaf shapes as {name_a}; "
                         f"{name_a} has {sa}, {name_b} has {sb}")


def check_scalar_output(fn: str, name: str, out) -> None:
    """Raise ValueError unless ``out`` (the value of a user function) is a scalar."""
    shape = np.shape(out)
    if shape != ():
        raise ValueError(f"{fn}: {name} must return a scalar, got an array of shape {shape}")


def check_choice(fn: str, name: str, value, choices: Sequence) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {list(choices)}, got {value!r}")


def check_positive(fn: str, name: str, value, *, allow_zero: bool = False) -> None:
    """Raise ValueError unless the Python number ``value`` is > 0 (or >= 0)."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{fn}: {name} must be {bound}, got {value!r}")


def check_shape(fn: str, name: str, x, shape: Sequence[int], layout: str = "") -> None:
    """Raise ValueError unless ``x.shape`` equals ``shape`` exactly (no broadcasting)."""
    want, got = tuple(shape), tuple(np.shape(x))
    if got != want:
        hint = f" {layout}" if layout else ""
        raise ValueError(f"{fn}: {name} must have shape {want}{hint}, got shape {got}")


def check_batch(fn: str, batch, name: str = "batch"):
    """Check ``batch`` is a non-empty tuple (or list) of arrays sharing a leading axis ``N``.

    Returns:
      ``(tuple(batch), N)``.
    """
    if not isinstance(batch, (tuple, list)) or len(batch) == 0:
        raise ValueError(f"{fn}: {name} must be a non-empty tuple of arrays (inputs, targets, ...) "
                         f"with a common leading axis N, got {type(batch).__name__}")
    shapes = [tuple(np.shape(a)) for a in batch]
    if any(len(s) == 0 for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise ValueError(f"{fn}: {name} arrays must share a leading dimension N, got shapes {shapes}")
    return tuple(batch), shapes[0][0]
