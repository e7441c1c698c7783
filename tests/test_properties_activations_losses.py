"""Property-based tests (hypothesis) for every activation and loss (issue #8, reliability).

Inputs are random shapes (rank 0-3 where the function allows it, sizes 1-3) filled with values
that include ±1e4, ±1e-30, ±0, ±1, subnormals (1e-310 in float64, 1e-40 in float32) and ordinary
floats, in float32 and float64, run with and without ``jax.jit``. Softmax-family inputs also get
``-inf`` logits (masked classes), and the bounded functions ``±inf``. Each property checks:

* output dtype == input dtype, output shape as documented;
* values and ``jax.grad`` gradients are finite wherever the math is finite;
* closed-form derivatives equal autodiff (``vmap(grad)`` elementwise, ``jax.jacobian`` for the
  softmax Jacobian, ``jax.grad`` of the reduced loss for every ``*_grad``);
* values equal a float64 NumPy/SciPy reference where a simple accurate one exists.

Each property is written once as a plain ``check_*`` function and exposed twice: a fast test that
runs under the default ``ci`` hypothesis profile, and a ``@pytest.mark.thorough`` variant with many
more examples (``pytest -m thorough``; together well over 4,000 examples).

Tolerances, in units of ``eps = finfo(dtype).eps`` and ``tiny = finfo(dtype).tiny`` (the smallest
normal number), checked as ``|closed - reference| <= rtol * |reference| + atol``:

* ``tiny`` in every ``atol``: XLA on CPU flushes subnormal results to zero, so any quantity that
  is subnormal in exact arithmetic may come back as 0 (an absolute error below ``tiny``).
* Closed-form derivative vs autodiff, elementwise: both evaluate the same formula up to the order
  of operations, so ``rtol = 4 eps`` and ``atol = 4 eps`` (all these derivatives are at most 1
  in magnitude, and ``1 - s`` or ``1 - t`` terms carry absolute, not relative, rounding errors).
  Exception: ``jax.grad(softplus)`` is ``exp(x - softplus(x))``, whose exponent carries the
  rounding of ``softplus(x)``, up to ``ulp(x) / 2``. That is an absolute error of at most
  ``~|x| eps / 2`` in a value near 1, and it matters only while ``e^{-|x|} > |x| eps / 2``, i.e.
  ``|x| < 34`` in float64 (``< 14`` in float32): at most ~17 eps (measured: 16 eps in float64,
  4.5 eps in float32 over 2e5 samples), so ``atol = 32 eps``.
* Softmax Jacobians and cross-entropy gradients: entries are differences of O(1) products
  (``s_i (δ_ij - s_j)``, ``s Σy - y``), so they carry absolute rounding errors of a few eps
  times the largest term: ``rtol = 8 eps``, ``atol = 8 eps * max(1, Σ_c y_c) / divisor``
  (divisor = N or M for ``"mean"``; measured at most 4 eps). The elementwise losses' gradients
  likewise: ``rtol = 8 eps``, ``atol = 8 eps / divisor`` (measured ≤ 0.6 eps; mse: exact).
* Values vs float64 references: ``rtol = 8 eps`` (measured ≤ 3.5 eps for tanh, sigmoid, softplus),
  plus ``M eps`` for a mean or sum over M terms. (This found XLA's float64 ``log1p`` 129 ulps off
  on (-0.414, -0.293), jax-ml/jax#39707; ``binary_cross_entropy`` now avoids it.)

Speed: the fast tests draw shapes from a small fixed pool (ranks 0, 1, 3) because without jit
every new shape compiles every primitive again; the thorough tests draw any shape.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxcalc import activations as act
from jaxcalc import losses

DTYPES = [jnp.float32, jnp.float64]
REDUCTIONS = ("mean", "sum", "none")
SUBNORMAL = {jnp.float32: 1e-40, jnp.float64: 1e-310}
MAX_DIM, MAX_RANK = 3, 3
PAD = MAX_DIM ** MAX_RANK  # every array drawn here has at most 27 elements

# Examples per thorough test (times the number of parametrized cases): 4,500 in all (the
# issue's 10,000 over all files; this file's share is >= 4,000).
THOROUGH_ELEMENTWISE = 350  # x 6 functions = 2,100
THOROUGH_SOFTMAX = 600
THOROUGH_PAIR_LOSS = 400  # x 3 losses = 1,200
THOROUGH_CROSS_ENTROPY = 600


def eps(dtype):
    return float(np.finfo(dtype).eps)


def tiny(dtype):
    return float(np.finfo(dtype).tiny)


def maybe_jit(fn, use_jit, **static):
    """``fn`` itself, or ``jax.jit(fn)`` with the named keyword arguments static (cached)."""
    return _jitted(fn, tuple(sorted(static))) if use_jit else fn


@functools.lru_cache(maxsize=None)
def _jitted(fn, static_argnames):
    return jax.jit(fn, static_argnames=static_argnames)


def assert_close(actual, expected, rtol, atol, what):
    """``|actual - expected| <= rtol |expected| + atol`` elementwise, compared in float64."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def assert_finite(x, what):
    assert np.all(np.isfinite(np.asarray(x))), f"{what} is not finite: {x}"


# ---------------------------------------------------------------- strategies


def special_values(dtype, infinities=False):
    """The values the issue names, signed; ``±inf`` only where the property allows them."""
    sub = SUBNORMAL[dtype]
    values = [0.0, -0.0, 1.0, -1.0, 1e4, -1e4, 1e-30, -1e-30, sub, -sub]
    return values + ([np.inf, -np.inf] if infinities else [])


def reals(dtype, infinities=False):
    return st.one_of(st.sampled_from(special_values(dtype, infinities)),
                     st.floats(-40.0, 40.0),  # where the functions bend
                     st.floats(-1e4, 1e4))


def unit_interval(dtype):
    """[0, 1] with its edges, tiny positives and values next to 1."""
    sub = SUBNORMAL[dtype]
    return st.one_of(st.sampled_from([0.0, 1.0, 0.5, 1e-30, sub, 1.0 - eps(dtype)]),
                     st.floats(0.0, 1.0))


# The fast tests draw shapes from a fixed pool (ranks 0, 1, 3, a singleton axis): without
# jit every new shape costs a compile of every primitive (~0.1-0.5 s of CPU per function), which
# a 25-example run cannot amortize. The thorough tests draw any shape of rank 0-3, sizes 1-3.
SHAPE_POOL = [(), (3,), (2, 1, 3)]


def shapes(thorough, min_rank=0):
    if thorough:
        return st.lists(st.integers(1, MAX_DIM), min_size=min_rank,
                        max_size=MAX_RANK).map(tuple)
    return st.sampled_from([s for s in SHAPE_POOL if len(s) >= min_rank])


def draw_array(data, dtype, shape, elements):
    values = data.draw(hnp.arrays(np.float64, shape, elements=elements))
    return jnp.asarray(values, dtype=dtype)


def draw_mask(data, shape, axis):
    """A boolean ``-inf`` mask leaving at least one entry unmasked in every slice along ``axis``."""
    mask = data.draw(hnp.arrays(np.bool_, shape, elements=st.booleans()))
    full = np.all(mask, axis=axis, keepdims=True)
    first = np.zeros(shape, dtype=bool)
    np.put_along_axis(first, np.zeros_like(full, dtype=np.intp), True, axis=axis)
    return mask & ~(full & first)


# ---------------------------------------------------------------- references (jitted, cached)


@functools.lru_cache(maxsize=None)
def _padded_vmap_grad(fn):
    return jax.jit(jax.vmap(jax.grad(fn)))


def elementwise_grad(fn, x):
    """``d fn(x_i) / d x_i`` by ``vmap(grad)`` over a flat copy padded to PAD (one compile per
    dtype, whatever the shape)."""
    flat = np.zeros(PAD, dtype=x.dtype)
    flat[:x.size] = np.asarray(x).ravel()
    return np.asarray(_padded_vmap_grad(fn)(flat))[:x.size].reshape(x.shape)


@functools.lru_cache(maxsize=None)
def _row_jacobian(fn):
    return jax.jit(jax.vmap(jax.jacrev(fn)))


def row_jacobians(fn, rows):
    """``jax.jacobian`` (reverse mode) of ``fn`` for every row of ``rows`` (R, C), R <= PAD.

    Reverse mode on purpose: on jax 0.10.2 CPU, ``jit(vmap(jacfwd(exp(x - logsumexp(x)))))`` is
    miscompiled for large batches (~2^15 float32 elements); padding keeps the batch at 27 rows.
    """
    padded = np.zeros((PAD, rows.shape[1]), dtype=rows.dtype)
    padded[:rows.shape[0]] = np.asarray(rows)
    return np.asarray(_row_jacobian(fn)(padded))[:rows.shape[0]]


@functools.lru_cache(maxsize=None)
def all_reductions(fn, use_jit):
    """``(a, b) -> {reduction: fn(a, b, reduction)}``; one compile per shape under jit."""
    every = lambda a, b: {r: fn(a, b, reduction=r) for r in REDUCTIONS}
    return jax.jit(every) if use_jit else every


@functools.lru_cache(maxsize=None)
def autodiff_loss_grads(loss):
    """``(a, b) -> {reduction: jax.grad of the loss (summed for "none") w.r.t. a}``, jitted."""
    return jax.jit(lambda a, b: {r: jax.grad(lambda a: jnp.sum(loss(a, b, reduction=r)))(a)
                                 for r in REDUCTIONS})


def reduce64(terms, reduction):
    terms = np.asarray(terms, dtype=np.float64)
    return {"mean": np.mean, "sum": np.sum, "none": lambda t: t}[reduction](terms)


# ---------------------------------------------------------------- elementwise activations

def _leaky_ref(slope):
    return lambda x: np.where(x > 0, x, np.float64(slope) * x)


# name: (function, closed-form derivative, float64 reference(x, dtype), bounded, derivative atol
# in eps). "bounded" functions stay finite at ±inf, so ±inf joins their inputs.
ELEMENTWISE = {
    "sigmoid": (act.sigmoid, act.sigmoid_derivative, scipy.special.expit, True, 4),
    "tanh": (act.tanh, act.tanh_derivative, np.tanh, True, 4),
    "softplus": (act.softplus, act.softplus_derivative, lambda x: np.logaddexp(x, 0.0), False,
                 32),
    "relu": (act.relu, act.relu_derivative, lambda x: np.maximum(x, 0.0), False, 4),
    "leaky_relu": (act.leaky_relu, act.leaky_relu_derivative, None, False, 4),
    "leaky_relu_-0.5": (functools.partial(act.leaky_relu, negative_slope=-0.5),
                        functools.partial(act.leaky_relu_derivative, negative_slope=-0.5), None,
                        False, 4),
}
LEAKY_SLOPES = {"leaky_relu": 0.01, "leaky_relu_-0.5": -0.5}


def check_elementwise(name, f, df, ref, dtype, x, use_jit, derivative_atol=4):
    """Values (vs float64 ``ref``), closed-form ``df`` vs vmap(grad(f)), finiteness, dtypes."""
    value, closed = maybe_jit(f, use_jit)(x), maybe_jit(df, use_jit)(x)
    for out, what in ((value, name), (closed, name + "_derivative")):
        assert out.dtype == dtype and out.shape == x.shape, (what, out.dtype, out.shape)
    finite_in = np.isfinite(np.asarray(x))
    assert_finite(np.asarray(value)[finite_in], f"{name}(x)")
    assert_finite(closed, f"{name}_derivative(x)")
    assert_close(value, ref(np.asarray(x, dtype=np.float64)), 8 * eps(dtype), tiny(dtype),
                 f"{name} vs float64 reference")
    auto = elementwise_grad(f, x)
    assert auto.dtype == dtype
    assert_finite(auto, f"jax.grad({name})")
    assert_close(closed, auto, 4 * eps(dtype), derivative_atol * eps(dtype) + tiny(dtype),
                 f"{name}_derivative vs vmap(grad({name}))")
    assert_finite(elementwise_grad(df, x), f"jax.grad({name}_derivative)")


def draw_dtype(data):
    return data.draw(st.sampled_from(DTYPES), label="dtype")


def _elementwise_example(name, data, thorough=False):
    dtype = draw_dtype(data)
    f, df, ref, bounded, derivative_atol = ELEMENTWISE[name]
    if ref is None:  # leaky ReLU: the slope as the function uses it, rounded to dtype
        ref = _leaky_ref(np.asarray(LEAKY_SLOPES[name], dtype=dtype))
    x = draw_array(data, dtype, data.draw(shapes(thorough)), reals(dtype, infinities=bounded))
    check_elementwise(name, f, df, ref, dtype, x, data.draw(st.booleans(), label="use_jit"),
                      derivative_atol)


@pytest.mark.parametrize("name", list(ELEMENTWISE))
@given(data=st.data())
def test_elementwise_activation_properties(name, data):
    _elementwise_example(name, data)


@pytest.mark.thorough
@pytest.mark.parametrize("name", list(ELEMENTWISE))
@settings(max_examples=THOROUGH_ELEMENTWISE)
@given(data=st.data())
def test_elementwise_activation_properties_thorough(name, data):
    _elementwise_example(name, data, thorough=True)


# ---------------------------------------------------------------- softmax, log_softmax, Jacobian


def check_softmax_family(dtype, x, axis, use_jit):
    """softmax/log_softmax along ``axis`` and softmax_jacobian, including ``-inf`` logits."""
    s = maybe_jit(act.softmax, use_jit, axis=axis)(x, axis=axis)
    log_s = maybe_jit(act.log_softmax, use_jit, axis=axis)(x, axis=axis)
    for out in (s, log_s):
        assert out.dtype == dtype and out.shape == x.shape
    c = x.shape[axis]
    s_np, log_np, x_np = (np.asarray(a, dtype=np.float64) for a in (s, log_s, x))
    assert_finite(s_np, "softmax")
    assert np.all((s_np >= 0) & (s_np <= 1))
    assert_close(s_np.sum(axis=axis), 1.0, 0, 2 * (c + 1) * eps(dtype), "softmax sums to 1")
    masked = np.isneginf(x_np)
    assert_finite(log_np[~masked], "log_softmax at finite logits")
    assert np.all(np.isneginf(log_np[masked])) and np.all(log_np[~masked] <= 0)
    assert np.all(s_np[masked] == 0)
    assert_close(np.exp(log_np), s_np, 2 * eps(dtype), tiny(dtype), "exp(log_softmax) = softmax")

    # Jacobians, along the last axis of x with ``axis`` moved there (same softmax, same values).
    moved = jnp.moveaxis(x, axis, -1)
    rows = np.asarray(moved).reshape(-1, c)
    jac = maybe_jit(act.softmax_jacobian, use_jit)(moved)
    assert jac.dtype == dtype and jac.shape == moved.shape + (c,)
    jac = np.asarray(jac).reshape(-1, c, c)
    auto = row_jacobians(act.softmax, rows)
    assert_finite(jac, "softmax_jacobian")
    assert_finite(auto, "jax.jacobian(softmax)")
    tol = dict(rtol=8 * eps(dtype), atol=8 * eps(dtype) + tiny(dtype))
    assert_close(jac, auto, what="softmax_jacobian vs jax.jacobian(softmax)", **tol)
    s_rows = np.moveaxis(s_np, axis, -1).reshape(-1, c)
    log_auto = row_jacobians(act.log_softmax, rows)
    assert_finite(log_auto, "jax.jacobian(log_softmax)")
    assert_close(np.eye(c) - s_rows[:, None, :], log_auto,
                 what="I - 1 s^T vs jax.jacobian(log_softmax)", **tol)


def _softmax_example(data, thorough=False):
    dtype = draw_dtype(data)
    shape = data.draw(shapes(thorough, min_rank=1))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = np.asarray(draw_array(data, dtype, shape, reals(dtype)))
    if data.draw(st.booleans(), label="mask some logits with -inf"):
        x = np.where(draw_mask(data, shape, axis), -np.inf, x)
    check_softmax_family(dtype, jnp.asarray(x, dtype=dtype), axis, data.draw(st.booleans()))


@given(data=st.data())
def test_softmax_family_properties(data):
    _softmax_example(data)


@pytest.mark.thorough
@settings(max_examples=THOROUGH_SOFTMAX)
@given(data=st.data())
def test_softmax_family_properties_thorough(data):
    _softmax_example(data, thorough=True)


# ---------------------------------------------------------------- elementwise losses


def _mse_ref(pred, target, dtype):
    return (pred - target) ** 2


def _bce_ref(probs, targets, dtype):
    e = max(losses.BCE_EPSILON, eps(dtype))
    p = np.clip(probs, e, 1 - e)
    return -(targets * np.log(p) + (1 - targets) * np.log1p(-p))


# name: (loss, closed-form gradient or None, float64 elementwise reference or None)
PAIR_LOSSES = {
    "mse": (losses.mse, losses.mse_grad, _mse_ref),
    "binary_cross_entropy": (losses.binary_cross_entropy, None, _bce_ref),
    "binary_cross_entropy_with_logits": (losses.binary_cross_entropy_with_logits,
                                         losses.binary_cross_entropy_with_logits_grad, None),
}


def check_pair_loss(name, loss, grad, ref, dtype, first, second, use_jit):
    """For every reduction: value (finite, >= 0, vs ``ref``), jax.grad finite, ``grad`` vs
    jax.grad. ``grad`` and ``ref`` may be None (no closed form / no simple reference)."""
    values = all_reductions(loss, use_jit)(first, second)
    autos = autodiff_loss_grads(loss)(first, second)
    closeds = all_reductions(grad, use_jit)(first, second) if grad is not None else None
    for reduction in REDUCTIONS:
        value, auto = values[reduction], autos[reduction]
        where = f"{name}, reduction={reduction}"
        assert value.dtype == dtype, (where, value.dtype)
        assert value.shape == (first.shape if reduction == "none" else ()), where
        assert_finite(value, where)
        assert np.all(np.asarray(value) >= 0), (where, value)
        if ref is not None:
            expected = reduce64(ref(np.asarray(first, np.float64), np.asarray(second, np.float64),
                                    dtype), reduction)
            assert_close(value, expected, (8 + first.size) * eps(dtype), tiny(dtype),
                         f"{where}: vs float64 reference")
        assert auto.dtype == dtype and auto.shape == first.shape, where
        assert_finite(auto, f"jax.grad({where})")
        if closeds is None:
            continue
        closed = closeds[reduction]
        assert closed.dtype == dtype and closed.shape == first.shape, where
        assert_finite(closed, f"{where}: closed-form gradient")
        divisor = first.size if reduction == "mean" else 1
        assert_close(closed, auto, 8 * eps(dtype), 8 * eps(dtype) / divisor + tiny(dtype),
                     f"{where}: closed-form gradient vs jax.grad")


def _pair_loss_example(name, data, thorough=False):
    dtype = draw_dtype(data)
    shape = data.draw(shapes(thorough))
    if name == "mse":
        first = draw_array(data, dtype, shape, reals(dtype))
        second = draw_array(data, dtype, shape, reals(dtype))
    elif name == "binary_cross_entropy":
        first = draw_array(data, dtype, shape, unit_interval(dtype))
        second = draw_array(data, dtype, shape, unit_interval(dtype))
    else:  # logits with ±inf where the target is the matching hard label (finite limit)
        z = np.asarray(draw_array(data, dtype, shape, reals(dtype, infinities=True)))
        t = np.asarray(draw_array(data, dtype, shape, unit_interval(dtype)))
        t = np.where(z == np.inf, 1.0, np.where(z == -np.inf, 0.0, t))
        first, second = jnp.asarray(z, dtype=dtype), jnp.asarray(t, dtype=dtype)
    check_pair_loss(name, *PAIR_LOSSES[name], dtype, first, second,
                    data.draw(st.booleans(), label="use_jit"))


@pytest.mark.parametrize("name", list(PAIR_LOSSES))
@given(data=st.data())
def test_elementwise_loss_properties(name, data):
    _pair_loss_example(name, data)


@pytest.mark.thorough
@pytest.mark.parametrize("name", list(PAIR_LOSSES))
@settings(max_examples=THOROUGH_PAIR_LOSS)
@given(data=st.data())
def test_elementwise_loss_properties_thorough(name, data):
    _pair_loss_example(name, data, thorough=True)


# ---------------------------------------------------------------- softmax cross-entropy


def _cross_entropy_ref(logits, rows):
    """Per-example -Σ_c y_c log softmax(z)_c in float64, over the unmasked classes only, with
    the row max subtracted first (else ``max + log Σ`` rounds at the scale of the logits)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(rows, dtype=np.float64)
    masked = np.isneginf(z)
    shifted = z - np.max(z, axis=-1, keepdims=True)
    log_p = shifted - scipy.special.logsumexp(shifted, axis=-1, keepdims=True)
    return -np.sum(np.where(masked, 0.0, y * np.where(masked, 0.0, log_p)), axis=-1)


def check_softmax_cross_entropy(dtype, logits, labels, rows, use_jit):
    """For every reduction: value (finite, >= 0, vs reference), jax.grad finite, the closed-form
    gradient vs jax.grad. ``labels`` is what the loss gets (ids or rows), ``rows`` the same as
    float64 target rows."""
    n = logits.shape[0]
    values = all_reductions(losses.softmax_cross_entropy, use_jit)(logits, labels)
    closeds = all_reductions(losses.softmax_cross_entropy_grad, use_jit)(logits, labels)
    autos = autodiff_loss_grads(losses.softmax_cross_entropy)(logits, labels)
    scale = max(1.0, float(np.max(rows.sum(axis=-1))))  # the largest term in a gradient row
    per_example = _cross_entropy_ref(logits, rows)
    for reduction in REDUCTIONS:
        value, closed, auto = values[reduction], closeds[reduction], autos[reduction]
        where = f"softmax_cross_entropy, reduction={reduction}"
        assert value.dtype == dtype and value.shape == ((n,) if reduction == "none" else ())
        assert_finite(value, where)
        assert np.all(np.asarray(value) >= 0), (where, value)
        assert_close(value, reduce64(per_example, reduction), (8 + n) * eps(dtype),
                     8 * eps(dtype) * scale, f"{where}: vs float64 reference")
        for g, what in ((auto, "jax.grad"), (closed, "closed-form gradient")):
            assert g.dtype == dtype and g.shape == logits.shape, (where, what)
            assert_finite(g, f"{where}: {what}")
        divisor = n if reduction == "mean" else 1
        assert_close(closed, auto, 8 * eps(dtype), 8 * eps(dtype) * scale / divisor + tiny(dtype),
                     f"{where}: closed-form gradient vs jax.grad")


CE_SHAPE_POOL = [(1, 1), (2, 3)]


def _cross_entropy_example(data, thorough=False):
    dtype = draw_dtype(data)
    if thorough:
        n, c = data.draw(st.integers(1, 3), label="N"), data.draw(st.integers(1, 4), label="C")
    else:
        n, c = data.draw(st.sampled_from(CE_SHAPE_POOL), label="(N, C)")
    z = np.asarray(draw_array(data, dtype, (n, c), reals(dtype)))
    if data.draw(st.booleans(), label="mask some logits with -inf"):
        z = np.where(draw_mask(data, (n, c), -1), -np.inf, z)
    unmasked = [np.flatnonzero(~np.isneginf(row)).tolist() for row in z]
    kind = data.draw(st.sampled_from(["ids", "one_hot", "soft"]), label="labels")
    if kind == "soft":  # nonnegative rows, zero at masked classes, not always normalized
        rows = np.asarray(draw_array(data, jnp.float64, (n, c), unit_interval(dtype)))
        rows = np.where(np.isneginf(z), 0.0, rows)
        if data.draw(st.booleans(), label="normalize rows"):
            sums = rows.sum(axis=-1, keepdims=True)
            rows = np.where(sums > 0, rows / np.where(sums > 0, sums, 1.0), rows)
        rows = np.asarray(rows, dtype=dtype)
        labels = jnp.asarray(rows)
    else:
        ids = np.asarray([data.draw(st.sampled_from(u)) for u in unmasked])
        rows = np.eye(c, dtype=dtype)[ids]
        labels = jnp.asarray(ids) if kind == "ids" else jnp.asarray(rows)
    check_softmax_cross_entropy(dtype, jnp.asarray(z, dtype=dtype), labels,
                                np.asarray(rows, dtype=np.float64),
                                data.draw(st.booleans(), label="use_jit"))


@given(data=st.data())
def test_softmax_cross_entropy_properties(data):
    _cross_entropy_example(data)


@pytest.mark.thorough
@settings(max_examples=THOROUGH_CROSS_ENTROPY)
@given(data=st.data())
def test_softmax_cross_entropy_properties_thorough(data):
    _cross_entropy_example(data, thorough=True)


# ---------------------------------------------------------------- the checks can fail


def test_elementwise_check_rejects_a_wrong_derivative():
    """σ offered as its own derivative must fail the closed-form-vs-autodiff comparison."""
    x = jnp.asarray([0.5, -2.0])
    with pytest.raises(AssertionError, match="vs vmap"):
        check_elementwise("sigmoid", act.sigmoid, act.sigmoid, scipy.special.expit, jnp.float64,
                          x, False)


def test_elementwise_check_rejects_a_wrong_value_nan_or_dtype():
    relu_ref = lambda x: np.maximum(x, 0.0)
    x = jnp.asarray([1.0, 2.0])
    with pytest.raises(AssertionError, match="float64 reference"):
        check_elementwise("relu", act.leaky_relu, act.relu_derivative, lambda x: x + 1e-9,
                          jnp.float64, x, False)
    nan_derivative = lambda x: jnp.log(act.relu_derivative(x) - 1.0)
    with pytest.raises(AssertionError, match="not finite"):
        check_elementwise("relu", act.relu, nan_derivative, relu_ref, jnp.float64, x, False)
    f64_derivative = lambda x: act.relu_derivative(x).astype(jnp.float64)
    with pytest.raises(AssertionError, match="relu_derivative"):
        check_elementwise("relu", act.relu, f64_derivative, relu_ref, jnp.float32,
                          x.astype(jnp.float32), False)


def test_cross_entropy_check_rejects_a_gradient_without_the_mean(monkeypatch):
    logits = jnp.asarray([[0.3, -1.0, 2.0], [1.0, 1.0, -np.inf]])
    labels = jnp.asarray([2, 0])
    rows = np.eye(3)[[2, 0]]
    check_softmax_cross_entropy(jnp.float64, logits, labels, rows, False)  # passes
    right = losses.softmax_cross_entropy_grad
    monkeypatch.setattr(losses, "softmax_cross_entropy_grad",
                        lambda z, y, reduction: right(z, y, reduction="sum"))
    with pytest.raises(AssertionError, match="reduction=mean: closed-form gradient"):
        check_softmax_cross_entropy(jnp.float64, logits, labels, rows, False)


def test_pair_loss_check_rejects_a_gradient_without_the_mean():
    z, t = jnp.asarray([30.0, -2.0, 0.0]), jnp.asarray([1.0, 0.3, 0.5])
    loss, grad, _ = PAIR_LOSSES["binary_cross_entropy_with_logits"]
    check_pair_loss("bce", loss, grad, None, jnp.float64, z, t, False)  # passes
    seed_style = lambda z, t, reduction: jax.nn.sigmoid(z) - t  # σ(z) - t, no 1/M
    with pytest.raises(AssertionError, match="reduction=mean: closed-form gradient"):
        check_pair_loss("bce", loss, seed_style, None, jnp.float64, z, t, False)


def test_pair_loss_check_rejects_a_wrong_value():
    p, t = jnp.asarray([0.2, 0.9]), jnp.asarray([0.0, 1.0])
    loss, _, ref = PAIR_LOSSES["binary_cross_entropy"]
    no_clip = lambda p, t, dtype: -(t * np.log(p) + (1 - t) * np.log1p(-p)) * 1.001
    with pytest.raises(AssertionError, match="vs float64 reference"):
        check_pair_loss("bce", loss, None, no_clip, jnp.float64, p, t, False)


def test_softmax_check_rejects_a_wrong_jacobian(monkeypatch):
    x = jnp.asarray([[0.3, -1.0, 2.0]])
    check_softmax_family(jnp.float64, x, -1, False)  # passes
    monkeypatch.setattr(act, "softmax_jacobian",
                        lambda x: jax.vmap(jnp.diag)(act.softmax(x)))  # diag(s) without -s sᵀ
    with pytest.raises(AssertionError, match="softmax_jacobian vs"):
        check_softmax_family(jnp.float64, x, -1, False)


def test_tolerances_are_tight_enough_to_see_one_part_in_a_million():
    """The loosest closed-form tolerance (32 eps absolute) still rejects a 1e-6 relative error."""
    x = jnp.asarray([-3.0, 0.5, 2.0])
    auto = elementwise_grad(act.softplus, x)
    with pytest.raises(AssertionError):
        assert_close(auto * (1 + 1e-6), auto, 4 * eps(jnp.float64), 32 * eps(jnp.float64), "")
