"""Trace-time argument checks that raise clear errors, shared by every module.

Every check runs on static information only (shapes, dtypes, pytree structure, Python values),
so it works under ``jax.jit`` and costs nothing at run time. Messages name the function, the
argument, what was expected and what was given, e.g.
``conv2d: x must be 4-D (N, H, W, C_in), got shape (28, 28, 1)``. The optional ``layout``,
``hint``, ``what`` and ``signature`` arguments describe the expected value in the caller's terms.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_REPR_CHARS = 80  # longest repr of a given value quoted in a message


def _given(value) -> str:
    """``str 'lsq'``: a value's type and repr (on one line, shortened), for "got ..." in a
    message."""
    text = " ".join(repr(value).split())
    if len(text) > _REPR_CHARS:
        text = text[:_REPR_CHARS - 3] + "..."
    return f"{type(value).__name__} {text}"


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


# ----------------------------------------------------------------------------- dtypes and arrays


def _is_real_dtype(dtype) -> bool:
    """Floating, integer or bool: not complex, not a PRNG key, string or object dtype."""
    return any(jnp.issubdtype(dtype, kind) for kind in (jnp.floating, jnp.integer, jnp.bool_))


def check_real_dtype(fn: str, name: str, x, hint: str = "") -> None:
    """Raise TypeError unless ``x`` has a real dtype (floating, integer or bool).

    ``hint`` is shown in parentheses after "real", e.g. ``"float, int or bool"``.
    """
    dtype = jnp.result_type(x)
    if not _is_real_dtype(dtype):
        shown = f" ({hint})" if hint else ""
        raise TypeError(f"{fn}: {name} must be real{shown}, got dtype {dtype}")


def as_real_array(fn: str, name: str, x):
    """``jnp.asarray(x)``, unconverted, if it has a real dtype (floating, integer or bool).

    Raises:
      TypeError: naming ``fn`` and ``name``, for non-numeric input (strings, None, objects),
        which ``jnp.asarray`` would reject with a message naming neither, and for complex or
        other non-real dtypes (PRNG keys, ...).
    """
    try:
        arr = jnp.asarray(x)
    except (TypeError, ValueError) as err:
        dtype = getattr(x, "dtype", None)
        given = f"{type(x).__name__}" + (f" of dtype {dtype}" if dtype is not None else "")
        raise TypeError(f"{fn}: {name} must be an array of real numbers, got {given}") from err
    if not _is_real_dtype(arr.dtype):
        raise TypeError(f"{fn}: {name} must have a real dtype (floating, integer or bool), "
                        f"got {arr.dtype}")
    return arr


def check_floating_leaves(fn: str, name: str, tree) -> None:
    """Raise TypeError unless every leaf of the pytree ``tree`` has a floating dtype.

    The message names the leaf by its path, e.g. ``hvp: params['b'] must have a floating dtype,
    got int32`` (``name`` alone for a single array).
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        check_floating(fn, f"{name}{jax.tree_util.keystr(path)}", leaf)


def check_float_dtype(fn: str, dtype, *, allow_none: bool = False):
    """The floating NumPy dtype named by ``dtype`` (a ``dtype=`` argument); TypeError otherwise.

    With ``allow_none``, ``None`` (the default float, chosen by the caller) is returned as is.
    """
    if dtype is None and allow_none:
        return None
    want = "a floating dtype" + (" (or None for the default float)" if allow_none else "")
    try:
        resolved = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"{fn}: dtype must be {want}, got {dtype!r}") from err
    if not jnp.issubdtype(resolved, jnp.floating):
        raise TypeError(f"{fn}: dtype must be {want}, got {resolved.name}")
    return resolved


# ----------------------------------------------------------------------------- Python numbers


def check_real_number(fn: str, name: str, value, what: str = "a real number") -> float:
    """``float(value)``; TypeError unless ``value`` is a real (non-bool) Python or NumPy number
    or a 0-D floating or integer array.

    The shape is the caller's to check first, with its own wording of ``what`` it wants; a
    traced value has no float and must be handled by the caller too.
    """
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        real = (int, float, np.integer, np.floating)
        ok = isinstance(value, real) and not isinstance(value, bool)
    else:
        ok = jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    if not ok:
        raise TypeError(f"{fn}: {name} must be {what}, got {value!r}")
    return float(value)


def check_finite(fn: str, name: str, value: float) -> None:
    """Raise ValueError unless the Python number ``value`` is finite (not inf, not NaN)."""
    if not math.isfinite(value):
        raise ValueError(f"{fn}: {name} must be finite, got {value}")


# ----------------------------------------------------------------------------- user functions


def check_callable(fn: str, name: str, value, signature: str = "") -> None:
    """Raise TypeError unless ``value`` is callable.

    ``signature`` says how it is called, e.g. ``"f(params) -> scalar"``: the message then reads
    ``hvp: f must be a callable f(params) -> scalar, got float 1.0``.
    """
    if not callable(value):
        want = f"a callable {signature}" if signature else "callable"
        raise TypeError(f"{fn}: {name} must be {want}, got {_given(value)}")


class _Spec(str):
    """A string that prints without quotes inside a pytree's repr."""

    __repr__ = str.__str__


def describe(x) -> str:
    """``float64[4, 1]`` for an array, the same per leaf for a pytree (cut at 200 characters)."""
    leaf = lambda a: _Spec(f"{jnp.result_type(a).name}{list(np.shape(a))}")
    if jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(x)):
        return leaf(x)
    text = str(jax.tree_util.tree_map(leaf, x))
    return text if len(text) <= 200 else text[:197] + "..."


def abstract_call(fn: str, call: str, g: Callable, args: tuple, names: tuple):
    """``jax.eval_shape(g, *args)``, with context on a user function's own error.

    A ValueError or TypeError raised while tracing ``g`` (e.g. an input of the wrong rank inside
    a model, targets of the wrong shape inside a loss) is raised again as ValueError/TypeError
    with ``fn``, the call and the shapes of its arguments in front of the original message; the
    original is kept as ``__cause__``. Nothing is compiled or run.
    """
    try:
        return jax.eval_shape(g, *args)
    except (ValueError, TypeError) as err:
        kind = ValueError if isinstance(err, ValueError) else TypeError
        given = ", ".join(f"{name}={describe(a)}" for name, a in zip(names, args))
        raise kind(f"{fn}: {call} raised {type(err).__name__} with {given}: {err}") from err


def check_scalar_value(fn: str, name: str, out) -> None:
    """ValueError unless ``out`` (``eval_shape`` of a user function) is one array of shape ``()``,
    TypeError unless it is floating (``jax.grad`` needs a real floating scalar)."""
    if not jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(out)):
        raise ValueError(f"{fn}: {name} must return a scalar array, got a "
                         f"{type(out).__name__}: {describe(out)}")
    check_scalar_output(fn, name, out)
    check_floating(fn, f"the value of {name}", out)


def check_scalar_function(fn: str, f: Callable, params) -> None:
    """Check that ``f`` is callable and ``f(params)`` a floating scalar, without running it."""
    check_callable(fn, "f", f, "f(params) -> scalar")
    check_scalar_value(fn, "f", abstract_call(fn, "f(params)", f, (params,), ("params",)))


# ----------------------------------------------------------------------------- PRNG keys


def check_key(fn: str, name: str, key) -> None:
    """Raise unless ``key`` is one PRNG key: a typed key of shape ``()`` (``jax.random.key``) or
    a raw ``uint32`` key of the default implementation's shape (``jax.random.PRNGKey``).

    Raises:
      ValueError: a batch of typed keys, or ``uint32`` data of another shape.
      TypeError: anything else (a seed, a float array, None, ...).
    """
    dtype = getattr(key, "dtype", None)
    shape = tuple(np.shape(key)) if dtype is not None else None
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ValueError(f"{fn}: {name} must be a single PRNG key of shape (), got an array "
                             f"of keys of shape {shape}")
        return
    raw = tuple(jax.eval_shape(lambda: jax.random.PRNGKey(0)).shape)
    want = f"a PRNG key (jax.random.key(seed), or jax.random.PRNGKey(seed): uint32{list(raw)})"
    if dtype is not None and dtype == np.uint32:
        if shape != raw:
            raise ValueError(f"{fn}: {name} must be {want}, got uint32 of shape {shape}")
        return
    given = type(key).__name__ if dtype is None else f"{jnp.dtype(dtype).name}{list(shape)}"
    raise TypeError(f"{fn}: {name} must be {want}, got {given}")
