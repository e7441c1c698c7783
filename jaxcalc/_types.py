"""Type aliases used across jaxcalc (one place, as in optax/equinox)."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Tuple

import jax

Array = jax.Array
ArrayLike = Any  # jax.typing.ArrayLike; kept loose for Python scalars and NumPy arrays.
PyTree = Any
Params = PyTree  # parameters: (nested) dicts of arrays
PRNGKey = jax.Array
Batch = Tuple[Array, ...]  # (inputs, targets, ...), every array with a leading batch axis
Shape = Tuple[int, ...]

InitFn = Callable[[PRNGKey, Shape], Tuple[Shape, Params]]
ApplyFn = Callable[..., Array]
LossFn = Callable[[Params, Batch], Array]
Config = Mapping[str, Any]

__all__ = [
    "Array",
    "ArrayLike",
    "PyTree",
    "Params",
    "PRNGKey",
    "Batch",
    "Shape",
    "InitFn",
    "ApplyFn",
    "LossFn",
    "Config",
]
