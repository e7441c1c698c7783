r"""Exact derivative operators over parameter pytrees: HVPs, Hessians, Jacobians, GGN, Fisher.

Matrix-free products come first (``hvp``, ``ggn_vp``, ``fisher_vp``, ``empirical_fisher_vp``);
dense matrices (``hessian_matrix``, ``ggn_matrix``, ...) are built from batched products in
chunks and are laid out in ``jax.flatten_util.ravel_pytree`` order.

Conventions:

* ``params`` is any pytree of floating arrays; ``v`` has its structure and leaf shapes and is
  cast to the params' leaf dtypes.
* ``apply_fn(params, inputs)`` returns the model outputs with a leading example axis ``N``.
* Curvature of the model's predictive distribution (``fisher_*``) is averaged over the ``N``
  examples, :math:`F = \frac1N \sum_i J_i^\top \Lambda_i J_i`, matching a loss that is a mean
  over the batch.
* Nothing here calls ``jax.jit``; every function is traceable, so jit the caller.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxcalc._types import Array, Batch, Params, PRNGKey, PyTree
from jaxcalc._validate import (abstract_call, check_batch, check_callable, check_choice,
                               check_floating, check_floating_leaves, check_key, check_ndim,
                               check_positive, check_same_structure, check_scalar_function,
                               check_scalar_value, describe)

LIKELIHOODS = ("categorical", "bernoulli", "gaussian")
_DEFAULT_CHUNK = 256  # basis vectors per batched product when building a dense matrix
# hessian_matrix's default chunk: on CPU 16 ran 1.3-1.9x faster than 256 and within 7% of the
# best chunk size on the MLPs measured (BENCHMARKS.md, benchmark d).
_HESSIAN_CHUNK = 16


# ----------------------------------------------------------------------------- checks & helpers


def _tangent(fn: str, params: Params, v: PyTree) -> PyTree:
    """``v`` checked against ``params`` (structure, leaf shapes, a real dtype) and cast to its
    leaf dtypes; a complex ``v`` is refused, not silently cut to its real part."""
    check_same_structure(fn, "params", params, "v", v)
    for path, leaf in jax.tree_util.tree_leaves_with_path(v):
        dtype = jnp.result_type(leaf)
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise TypeError(f"{fn}: v{jax.tree_util.keystr(path)} must have a real (floating or "
                            f"integer) dtype, like params, got {dtype}")
    return jax.tree_util.tree_map(lambda p, t: jnp.asarray(t, jnp.asarray(p).dtype), params, v)


def _chunk(fn: str, chunk_size: int | None, n: int) -> int:
    """Basis vectors per batch: ``min(n, 256)`` by default, never more than ``n``."""
    if chunk_size is None:
        return max(1, min(n, _DEFAULT_CHUNK))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise TypeError(f"{fn}: chunk_size must be a positive int or None, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"{fn}: chunk_size must be >= 1, got {chunk_size!r}")
    return max(1, min(n, int(chunk_size)))


def _dense(fn: str, matvec: Callable[[PyTree], PyTree], params: Params,
           chunk_size: int | None) -> Array:
    r"""Dense symmetric ``(n, n)`` matrix of the linear map ``matvec`` in ``ravel_pytree`` order.

    Column ``i`` is ``matvec(e_i)``, with ``e_i`` built from its index inside the map: one
    ``vmap`` over all ``n`` when ``chunk_size >= n``, else a ``lax.map`` with
    ``batch_size=chunk_size``, so memory is the result plus one chunk of products (no ``n × n``
    identity). The result is symmetrized, which only removes round-off asymmetry for the
    symmetric operators used here.
    """
    flat, unravel = ravel_pytree(params)
    n = flat.shape[0]
    chunk = _chunk(fn, chunk_size, n)
    if n == 0:
        return jnp.zeros((0, 0), flat.dtype)

    def column(i):
        e = (jnp.arange(n) == i).astype(flat.dtype)
        return ravel_pytree(matvec(unravel(e)))[0]

    index = jnp.arange(n)
    cols = jax.vmap(column)(index) if chunk == n else lax.map(column, index, batch_size=chunk)
    return 0.5 * (cols + cols.T)


def _linearized_model(apply_fn, params, inputs):
    """``(outputs, J·, Jᵀ·)`` from one forward pass: ``jax.linearize`` and its transpose."""
    out, jvp_fn = jax.linearize(lambda p: apply_fn(p, inputs), params)
    transpose = jax.linear_transpose(jvp_fn, params)
    return out, jvp_fn, lambda u: transpose(u)[0]


def _example_loss(fn: str, loss_fn, params: Params, batch: Batch):
    """``(θ, example) ↦ loss_fn(θ, example as a batch of one)``, for ``vmap`` over ``batch``."""
    check_callable(fn, "loss_fn", loss_fn, "loss_fn(params, batch) -> scalar")
    check_floating_leaves(fn, "params", params)
    batch = check_batch(fn, batch)[0]
    whole = abstract_call(fn, "loss_fn(params, batch)", loss_fn, (params, batch),
                           ("params", "batch"))
    check_scalar_value(fn, "loss_fn", whole)
    first_example = lambda p, b: loss_fn(p, jax.tree_util.tree_map(lambda a: a[:1], b))
    first = abstract_call(fn, "loss_fn(params, batch[:1])", first_example, (params, batch),
                           ("params", "batch"))
    check_scalar_value(fn, "loss_fn on a batch of one example", first)
    return lambda p, example: loss_fn(p, jax.tree_util.tree_map(lambda a: a[None], example))


def _model_outputs(fn: str, apply_fn, params: Params, inputs: PyTree):
    """``jax.eval_shape`` of ``apply_fn(params, inputs)``, checked to be floating array(s)."""
    check_callable(fn, "apply_fn", apply_fn, "apply_fn(params, inputs) -> outputs")
    out = abstract_call(fn, "apply_fn(params, inputs)", apply_fn, (params, inputs),
                         ("params", "inputs"))
    check_floating_leaves(fn, "apply_fn(params, inputs)", out)
    return out


def _check_likelihood_outputs(fn: str, likelihood: str, out) -> None:
    """Output-shape contract of each likelihood (on ``jax.eval_shape`` of ``apply_fn``)."""
    check_choice(fn, "likelihood", likelihood, LIKELIHOODS)
    name = "apply_fn(params, inputs)"
    if not jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(out)):
        raise ValueError(f"{fn}: {name} must return one array for likelihood {likelihood!r}, "
                         f"got {describe(out)}")
    check_floating(fn, name, out)
    if likelihood == "categorical":
        check_ndim(fn, name, out, 2, "(N, C) logits for likelihood 'categorical'")
    elif likelihood == "bernoulli":
        check_ndim(fn, name, out, (1, 2), "(N,) or (N, 1) logits for likelihood 'bernoulli'")
        if out.ndim == 2 and out.shape[1] != 1:
            raise ValueError(f"{fn}: {name} must be (N,) or (N, 1) logits for likelihood "
                             f"'bernoulli', got shape {tuple(out.shape)}")
    else:
        if out.ndim < 1:
            raise ValueError(f"{fn}: {name} must have a leading example axis (N, ...) for "
                             f"likelihood 'gaussian', got shape {tuple(out.shape)}")


def _output_fisher_vp(likelihood: str, out: Array) -> Callable[[Array], Array]:
    r"""``u ↦ Λ u`` per example, Λ the Fisher of the output distribution at outputs ``out``.

    categorical: :math:`\Lambda = \mathrm{diag}(p) - p p^\top`, ``p = softmax(logits)``;
    bernoulli: :math:`\Lambda = p(1-p) = \sigma(z)\sigma(-z)`; gaussian (unit variance): ``Λ = I``.
    """
    if likelihood == "categorical":
        p = jax.nn.softmax(out, axis=-1)
        return lambda u: p * u - p * jnp.sum(p * u, axis=-1, keepdims=True)
    if likelihood == "bernoulli":
        curvature = jax.nn.sigmoid(out) * jax.nn.sigmoid(-out)
        return lambda u: curvature * u
    return lambda u: u


def _nll(likelihood: str, out: Array, y: Array) -> Array:
    r"""Per-example :math:`-\log p(y \mid \text{out})` up to constants, shape ``(N,)``."""
    if likelihood == "categorical":
        return -jnp.take_along_axis(jax.nn.log_softmax(out, axis=-1), y[:, None], axis=-1)[:, 0]
    if likelihood == "bernoulli":
        per = jax.nn.softplus(out) - y * out  # = -[y log σ(z) + (1 - y) log σ(-z)]
    else:
        per = 0.5 * jnp.square(y - out)
    return jnp.sum(per.reshape(per.shape[0], -1), axis=-1)


def _sample_labels(likelihood: str, out: Array, key: PRNGKey, num_samples: int) -> Array:
    """``num_samples`` draws of ``y ~ p(y | out)`` per example, stacked on a new leading axis.

    categorical: class indices ``(S, N)``; bernoulli: 0/1 in ``out``'s dtype, ``(S,) + out.shape``;
    gaussian: ``out + ε``, ``ε ~ N(0, I)``. (The tests call it to reproduce the draws.)
    """
    if likelihood == "categorical":
        return jax.random.categorical(key, out, axis=-1, shape=(num_samples,) + out.shape[:-1])
    if likelihood == "bernoulli":
        return jax.random.bernoulli(key, jax.nn.sigmoid(out),
                                    (num_samples,) + out.shape).astype(out.dtype)
    return out + jax.random.normal(key, (num_samples,) + out.shape, out.dtype)


def _mc_output_fisher_vp(likelihood: str, out: Array, key: PRNGKey,
                         num_samples: int) -> Callable[[Array], Array]:
    r"""``u ↦ Λ̂ u`` per example, :math:`\hat\Lambda_i = \frac1S \sum_s r_{si} r_{si}^\top`, with
    :math:`r_{si} = \nabla_{o_i} [-\log p(y_{si} \mid o_i)]` for sampled labels ``y``."""
    ys = _sample_labels(likelihood, out, key, num_samples)
    residual = jax.vmap(lambda y: jax.grad(lambda o: jnp.sum(_nll(likelihood, o, y)))(out))(ys)
    n = out.shape[0]
    r = residual.reshape(num_samples, n, -1)

    def apply(u):
        proj = jnp.einsum("snd,nd->sn", r, u.reshape(n, -1))
        return (jnp.einsum("sn,snd->nd", proj, r) / num_samples).reshape(out.shape)

    return apply


# ----------------------------------------------------------------------------- Hessian, Jacobian


def hvp(f: Callable[[Params], Array], params: Params, v: PyTree) -> PyTree:
    r"""Hessian-vector product :math:`\nabla^2 f(\theta)\, v`, forward-over-reverse.

    .. math::
        \nabla^2 f(\theta)\, v = \tfrac{d}{d\epsilon} \nabla f(\theta + \epsilon v)|_{\epsilon=0}

    Costs about two gradient evaluations and no ``n × n`` memory (Pearlmutter, "Fast exact
    multiplication by the Hessian", 1994).

    Args:
      f: scalar function of ``params``.
      params: pytree of floating arrays.
      v: pytree with the same structure and leaf shapes as ``params`` (cast to its dtypes).

    Returns:
      A pytree like ``params``.
    """
    check_floating_leaves("hvp", "params", params)
    v = _tangent("hvp", params, v)
    check_scalar_function("hvp", f, params)
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


def hessian_matrix(f: Callable[[Params], Array], params: Params, *,
                   chunk_size: int | None = None) -> Array:
    r"""Dense Hessian :math:`\nabla^2 f(\theta)` of shape ``(n, n)`` in ``ravel_pytree`` order.

    ``hvp`` (forward-over-reverse) is applied to the standard basis ``chunk_size`` columns at a
    time (a ``vmap`` of ``chunk_size`` HVPs per step of a ``lax.map``; the gradient's primal pass
    runs once per chunk), so peak memory is the ``n × n`` result plus ``chunk_size`` HVPs — not
    the ``jacfwd(jacrev)`` intermediates that blow up on large models (jax#787). The result is
    symmetrized, :math:`(H + H^\top)/2`, which removes round-off asymmetry only.

    The default chunk is small because it measured faster: on CPU, 16 columns per batch ran
    1.3-1.9x faster than 256 on the MLPs of BENCHMARKS.md (benchmark d), within 7% of the best
    chunk; the primal pass it repeats per chunk is cheap next to ``chunk_size`` HVPs.

    Args:
      f: scalar function of ``params``.
      params: pytree of floating arrays with ``n`` elements in total.
      chunk_size: columns per batch; default ``min(n, 16)``; values above ``n`` act as ``n``.

    Returns:
      ``(n, n)`` array in the params' (promoted) dtype.
    """
    check_floating_leaves("hessian_matrix", "params", params)
    check_scalar_function("hessian_matrix", f, params)
    grad_f = jax.grad(f)
    hvp_fn = lambda t: jax.jvp(grad_f, (params,), (t,))[1]
    chunk_size = _HESSIAN_CHUNK if chunk_size is None else chunk_size
    return _dense("hessian_matrix", hvp_fn, params, chunk_size)


def jacobian_matrix(fn: Callable[[Params], PyTree], params: Params) -> Array:
    r"""Dense Jacobian :math:`\partial\, \mathrm{vec}(fn(\theta)) / \partial\theta`, ``(m, n)``.

    Rows follow the raveled output (``ravel_pytree`` of whatever ``fn`` returns: an array of any
    shape, or a pytree of arrays), columns the ``ravel_pytree`` order of ``params``. Forward mode
    (``n`` JVPs) when ``n <= m``, reverse mode (``m`` VJPs) otherwise.

    Args:
      fn: function of ``params`` returning floating array(s) with ``m`` elements in total.
      params: pytree of floating arrays with ``n`` elements in total.

    Returns:
      ``(m, n)`` array.
    """
    check_floating_leaves("jacobian_matrix", "params", params)
    check_callable("jacobian_matrix", "fn", fn, "fn(params) -> array(s)")
    out = abstract_call("jacobian_matrix", "fn(params)", fn, (params,), ("params",))
    check_floating_leaves("jacobian_matrix", "fn(params)", out)
    out_leaves = jax.tree_util.tree_leaves(out)
    flat, unravel = ravel_pytree(params)
    m, n = sum(int(np.prod(leaf.shape)) for leaf in out_leaves), flat.shape[0]
    flat_fn = lambda x: ravel_pytree(fn(unravel(x)))[0]
    jac = jax.jacfwd if n <= m else jax.jacrev
    return jac(flat_fn)(flat)


# ----------------------------------------------------------------------------- Gauss-Newton


def _ggn_operator(fn: str, apply_fn, loss_of_output, params, inputs, targets):
    """``v ↦ Jᵀ H_ℓ J v``: the model linearized once, the loss HVP forward-over-reverse."""
    check_floating_leaves(fn, "params", params)
    out_shape = _model_outputs(fn, apply_fn, params, inputs)
    check_callable(fn, "loss_of_output", loss_of_output,
                    "loss_of_output(outputs, targets) -> scalar")
    loss = abstract_call(fn, "loss_of_output(outputs, targets)", loss_of_output,
                          (out_shape, targets), ("outputs", "targets"))
    check_scalar_value(fn, "loss_of_output", loss)
    out, jvp_fn, vjp_fn = _linearized_model(apply_fn, params, inputs)
    loss_grad = jax.grad(lambda o: loss_of_output(o, targets))
    loss_hvp = lambda u: jax.jvp(loss_grad, (out,), (u,))[1]
    return lambda v: vjp_fn(loss_hvp(jvp_fn(v)))


def ggn_vp(apply_fn: Callable[[Params, PyTree], Array],
           loss_of_output: Callable[[Array, PyTree], Array], params: Params, inputs: PyTree,
           targets: PyTree, v: PyTree) -> PyTree:
    r"""Generalized Gauss-Newton product :math:`G v = J^\top H_\ell J v`, matrix-free.

    :math:`J = \partial\, \text{apply\_fn}(\theta, x) / \partial\theta` and
    :math:`H_\ell = \nabla^2_{o}\, \ell(o, y)` at :math:`o = \text{apply\_fn}(\theta, x)`:
    a JVP through the model, an HVP of the loss in output space, a VJP back (Schraudolph, "Fast
    curvature matrix-vector products for second-order gradient descent", 2002). ``G`` equals the
    Hessian of :math:`\ell(\text{apply\_fn}(\theta, x), y)` without the term in the model's second
    derivatives, so it is PSD whenever ℓ is convex in the outputs.

    Args:
      apply_fn: ``apply_fn(params, inputs) -> outputs`` (any shape).
      loss_of_output: ``loss_of_output(outputs, targets) -> scalar``, e.g. a mean over the batch.
      params: pytree of floating arrays.
      inputs: model inputs.
      targets: second argument of ``loss_of_output``.
      v: pytree like ``params``.

    Returns:
      A pytree like ``params``.
    """
    v = _tangent("ggn_vp", params, v)
    return _ggn_operator("ggn_vp", apply_fn, loss_of_output, params, inputs, targets)(v)


def ggn_matrix(apply_fn: Callable[[Params, PyTree], Array],
               loss_of_output: Callable[[Array, PyTree], Array], params: Params,
               inputs: PyTree, targets: PyTree, *, chunk_size: int | None = None) -> Array:
    r"""Dense GGN :math:`J^\top H_\ell J`, ``(n, n)`` in ``ravel_pytree`` order, from batched
    ``ggn_vp`` products (``chunk_size`` columns at a time, default ``min(n, 256)``).

    Args and semantics as ``ggn_vp``.

    Returns:
      ``(n, n)`` symmetric array.
    """
    op = _ggn_operator("ggn_matrix", apply_fn, loss_of_output, params, inputs, targets)
    return _dense("ggn_matrix", op, params, chunk_size)


# ----------------------------------------------------------------------------- Fisher


def _fisher_operator(fn: str, apply_fn, params, inputs, likelihood, output_fisher):
    """``v ↦ (1/N) Jᵀ Λ J v``, ``output_fisher(outputs)`` giving ``u ↦ Λ u`` in output space."""
    check_floating_leaves(fn, "params", params)
    _check_likelihood_outputs(fn, likelihood, _model_outputs(fn, apply_fn, params, inputs))
    out, jvp_fn, vjp_fn = _linearized_model(apply_fn, params, inputs)
    lam = output_fisher(out)
    num_examples = out.shape[0]
    return lambda v: vjp_fn(lam(jvp_fn(v)) / num_examples)


def fisher_vp(apply_fn: Callable[[Params, PyTree], Array], params: Params, inputs: PyTree,
              likelihood: str, v: PyTree) -> PyTree:
    r"""True Fisher product :math:`F v`, averaged over the ``N`` examples, matrix-free.

    .. math::
        F = \frac1N \sum_i J_i^\top \Lambda_i J_i, \qquad
        \Lambda_i = \mathbb{E}_{y \sim p(y \mid o_i)}\big[\nabla_{o_i}\log p\,
        \nabla_{o_i}\log p^\top\big]

    with :math:`o_i` the model output for example ``i``. ``likelihood``:

    * ``"categorical"``: logits ``(N, C)``, :math:`\Lambda = \mathrm{diag}(p) - pp^\top`;
    * ``"bernoulli"``: logits ``(N,)`` or ``(N, 1)``, :math:`\Lambda = p(1 - p)`;
    * ``"gaussian"``: means ``(N, ...)`` with unit variance, :math:`\Lambda = I`.

    For these (canonical-link) likelihoods ``F`` equals the GGN of the mean negative
    log-likelihood (Martens, "New insights and perspectives on the natural gradient method", 2020).

    Args:
      apply_fn: ``apply_fn(params, inputs) -> outputs`` as above.
      params: pytree of floating arrays.
      inputs: model inputs with ``N`` examples.
      likelihood: one of ``"categorical"``, ``"bernoulli"``, ``"gaussian"``.
      v: pytree like ``params``.

    Returns:
      A pytree like ``params``.
    """
    v = _tangent("fisher_vp", params, v)
    output_fisher = lambda out: _output_fisher_vp(likelihood, out)
    return _fisher_operator("fisher_vp", apply_fn, params, inputs, likelihood, output_fisher)(v)


def fisher_matrix(apply_fn: Callable[[Params, PyTree], Array], params: Params, inputs: PyTree,
                  likelihood: str, *, chunk_size: int | None = None) -> Array:
    r"""Dense true Fisher :math:`\frac1N \sum_i J_i^\top \Lambda_i J_i`, ``(n, n)`` in
    ``ravel_pytree`` order, from batched ``fisher_vp`` products.

    Args and semantics as ``fisher_vp``; ``chunk_size`` as in ``hessian_matrix``.

    Returns:
      ``(n, n)`` symmetric PSD array.
    """
    output_fisher = lambda out: _output_fisher_vp(likelihood, out)
    op = _fisher_operator("fisher_matrix", apply_fn, params, inputs, likelihood, output_fisher)
    return _dense("fisher_matrix", op, params, chunk_size)


def mc_fisher_matrix(apply_fn: Callable[[Params, PyTree], Array], params: Params,
                     inputs: PyTree, likelihood: str, key: PRNGKey, num_samples: int, *,
                     chunk_size: int | None = None) -> Array:
    r"""Monte Carlo Fisher: the mean of :math:`g g^\top` over sampled labels.

    For each example ``i`` draw ``num_samples`` labels :math:`y_{si} \sim p(y \mid o_i)` from the
    model itself and let :math:`g_{si} = \nabla_\theta[-\log p(y_{si} \mid o_i(\theta))]`, the
    gradient for that single example, :math:`o_i` the ``i``-th output of
    ``apply_fn(params, inputs)`` (the same as a batch-of-one forward pass unless the model mixes
    examples, e.g. batch norm). Then

    .. math::
        \hat F = \frac{1}{NS} \sum_{s,i} g_{si} g_{si}^\top
               = \frac1N \sum_i J_i^\top \hat\Lambda_i J_i, \qquad
        \hat\Lambda_i = \frac1S \sum_s r_{si} r_{si}^\top,

    because :math:`g_{si} = J_i^\top r_{si}` with :math:`r_{si}` the output-space gradient of the
    negative log-likelihood. It is computed in the second form: the samples cost output-space work
    only, and the model is linearized once. :math:`\mathbb{E}[\hat F] = F` (``fisher_matrix``),
    with error :math:`O(1/\sqrt{S N})` (Martens & Grosse, "Optimizing neural networks with
    Kronecker-factored approximate curvature", 2015).

    Args:
      apply_fn, params, inputs, likelihood: as in ``fisher_vp``.
      key: PRNG key for the labels.
      num_samples: labels ``S`` drawn per example, a positive int.
      chunk_size: as in ``hessian_matrix``.

    Returns:
      ``(n, n)`` symmetric PSD array.
    """
    fn = "mc_fisher_matrix"
    op = _mc_fisher_operator(fn, apply_fn, params, inputs, likelihood, key, num_samples)
    return _dense(fn, op, params, chunk_size)


def _mc_fisher_operator(fn: str, apply_fn, params, inputs, likelihood, key, num_samples):
    """``v ↦ F̂ v`` for the Monte Carlo Fisher, after checking ``num_samples``."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise TypeError(f"{fn}: num_samples must be a positive int, got {num_samples!r}")
    check_positive(fn, "num_samples", num_samples)
    check_key(fn, "key", key)
    output_fisher = lambda out: _mc_output_fisher_vp(likelihood, out, key, int(num_samples))
    return _fisher_operator(fn, apply_fn, params, inputs, likelihood, output_fisher)


def mc_fisher_vp(apply_fn: Callable[[Params, PyTree], Array], params: Params, inputs: PyTree,
                 likelihood: str, key: PRNGKey, num_samples: int, v: PyTree) -> PyTree:
    r"""Monte Carlo Fisher product :math:`\hat F v`, matrix-free; the product of
    ``mc_fisher_matrix`` with the same ``key`` and ``num_samples``, without forming it.

    Args:
      apply_fn, params, inputs, likelihood, key, num_samples: as in ``mc_fisher_matrix``.
      v: pytree like ``params``.

    Returns:
      A pytree like ``params``.
    """
    fn = "mc_fisher_vp"
    v = _tangent(fn, params, v)
    return _mc_fisher_operator(fn, apply_fn, params, inputs, likelihood, key, num_samples)(v)


def empirical_fisher_vp(loss_fn: Callable[[Params, Batch], Array], params: Params,
                        batch: Batch, v: PyTree) -> PyTree:
    r"""Empirical Fisher product :math:`\frac1N \sum_i g_i (g_i^\top v)`, matrix-free.

    :math:`g_i = \nabla_\theta\, \text{loss\_fn}(\theta, \text{example}_i)`, where example ``i``
    is passed as a batch of size one (every array of ``batch`` sliced ``a[i:i+1]``, leading axis
    kept), so a loss that is a mean over its batch works unchanged (a model that mixes examples,
    such as train-mode batch norm, sees a batch of one here). The per-example losses are
    linearized once; :math:`g_i^\top v` for all ``i`` is one JVP and the weighted sum of the
    :math:`g_i` one VJP. Unlike the true Fisher it uses the observed targets, not the model's
    (Kunstner, Hennig & Balles, "Limitations of the empirical Fisher approximation", 2019).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: pytree of floating arrays.
      batch: tuple (or list) of arrays sharing the leading example axis ``N``.
      v: pytree like ``params``.

    Returns:
      A pytree like ``params``.
    """
    fn = "empirical_fisher_vp"
    v = _tangent(fn, params, v)
    example_loss = _example_loss(fn, loss_fn, params, batch)
    losses = lambda p: jax.vmap(example_loss, in_axes=(None, 0))(p, batch)  # (N,)
    per_example, jvp_fn = jax.linearize(losses, params)
    projections = jvp_fn(v)  # (g_i · v)_i
    transpose = jax.linear_transpose(jvp_fn, params)
    return transpose(projections / per_example.shape[0])[0]


def empirical_fisher_matrix(loss_fn: Callable[[Params, Batch], Array], params: Params,
                            batch: Batch) -> Array:
    r"""Dense empirical Fisher :math:`\frac1N \sum_i g_i g_i^\top = G^\top G / N`, ``(n, n)``.

    ``G`` is the ``(N, n)`` matrix of per-example gradients, ``vmap`` of ``grad`` over the
    examples, each passed as a batch of size one (see ``empirical_fisher_vp``): ``N`` gradients
    of one example each, not a Jacobian of all ``N`` losses (which costs ``O(N²)``).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: pytree of floating arrays with ``n`` elements.
      batch: tuple (or list) of arrays sharing the leading example axis ``N``.

    Returns:
      ``(n, n)`` symmetric PSD array in ``ravel_pytree`` order.
    """
    fn = "empirical_fisher_matrix"
    example_loss = _example_loss(fn, loss_fn, params, batch)
    per_example_grad = lambda example: ravel_pytree(jax.grad(example_loss)(params, example))[0]
    grads = jax.vmap(per_example_grad)(batch)  # (N, n)
    gram = grads.T @ grads / grads.shape[0]
    return 0.5 * (gram + gram.T)


__all__ = [
    "LIKELIHOODS",
    "hvp",
    "hessian_matrix",
    "jacobian_matrix",
    "ggn_vp",
    "ggn_matrix",
    "fisher_vp",
    "fisher_matrix",
    "mc_fisher_matrix",
    "mc_fisher_vp",
    "empirical_fisher_vp",
    "empirical_fisher_matrix",
]
