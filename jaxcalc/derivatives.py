"""Exact derivative operators over parameter pytrees: HVPs, Hessians, Jacobians, GGN, Fisher.

Matrix-free products come first (``hvp``, ``ggn_vp``, ``fisher_vp``, ``empirical_fisher_vp``);
dense matrices (``hessian_matrix``, ``ggn_matrix``, ...) are built from batched products in
chunks and are laid out in ``jax.flatten_util.ravel_pytree`` order.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxcalc._types import Array, Params, PyTree
from jaxcalc._validate import check_same_structure, check_scalar_output


def hvp(f: Callable[[Params], Array], params: Params, v: PyTree) -> PyTree:
    r"""Hessian-vector product :math:`\nabla^2 f(\theta)\, v`, forward-over-reverse.

    Costs about two gradient evaluations and no ``n × n`` memory.

    Args:
      f: scalar function of ``params``.
      params: pytree of floating arrays.
      v: pytree with the same structure and leaf shapes as ``params``.

    Returns:
      A pytree like ``params``.
    """
    check_same_structure("hvp", "params", params, "v", v)
    check_scalar_output("hvp", "f", jax.eval_shape(f, params))
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def hessian_matrix(f: Callable[[Params], Array], params: Params, *,
                   chunk_size: int | None = None) -> Array:
    r"""Dense Hessian :math:`\nabla^2 f(\theta)` of shape ``(n, n)`` in ``ravel_pytree`` order.

    Built from HVPs with the standard basis, ``chunk_size`` columns at a time (``vmap`` inside a
    ``lax.map``), so peak memory is the ``n × n`` result plus ``chunk_size`` gradients — not the
    ``jacfwd(jacrev)`` intermediates that blow up on large models (jax#787). The result is
    symmetrized, :math:`(H + H^\top)/2`, which removes round-off asymmetry only.

    Args:
      f: scalar function of ``params``.
      params: pytree of floating arrays with ``n`` elements in total.
      chunk_size: columns per batch; default ``min(n, 256)``.

    Returns:
      ``(n, n)`` array in the params' dtype.
    """
    check_scalar_output("hessian_matrix", "f", jax.eval_shape(f, params))
    flat, unravel = ravel_pytree(params)
    n = flat.shape[0]
    chunk = min(n, 256) if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"hessian_matrix: chunk_size must be >= 1, got {chunk_size}")
    grad_flat = lambda x: ravel_pytree(jax.grad(lambda p: f(unravel(p)))(x))[0]
    column = lambda e: jax.jvp(grad_flat, (flat,), (e,))[1]
    num_chunks = -(-n // chunk)
    eye = jnp.eye(num_chunks * chunk, n, dtype=flat.dtype).reshape(num_chunks, chunk, n)
    cols = lax.map(jax.vmap(column), eye).reshape(num_chunks * chunk, n)[:n]
    return 0.5 * (cols + cols.T)
