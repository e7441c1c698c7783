"""Bad-input audit of jaxcalc.activations and jaxcalc.losses (issue #8): one test per row of the
table in docs/errors.md (section "Activations and losses").

Every bad input must raise ``ValueError``/``TypeError`` at trace time with a message that starts
with the function's name and names the argument, the expected value and what was given; the
tests check the type, the function and argument names and the "got ..." part, eagerly and (where
the input is a valid JAX argument) under ``jax.jit``. Rows that are not errors (integer input is
promoted, NaN propagates, ...) assert the documented behaviour instead.

Conventions the rows rely on (also in the module docstrings):

* real input only: floating keeps its dtype, integer and bool are promoted to the default float
  (float64 here: conftest enables x64); complex and non-numeric input is a ``TypeError``;
* elementwise functions take any shape, 0-D and empty included;
* NaN in gives NaN out (only where it lands: the element, the softmax slice, the example).
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc import activations as act
from jaxcalc import losses

ELEMENTWISE = ["sigmoid", "sigmoid_derivative", "relu", "relu_derivative", "tanh",
               "tanh_derivative", "softplus", "softplus_derivative", "leaky_relu",
               "leaky_relu_derivative"]
LEAKY = ["leaky_relu", "leaky_relu_derivative"]
AXIS_FNS = ["softmax", "log_softmax"]
SOFTMAX_FNS = AXIS_FNS + ["softmax_jacobian"]
ALL_ACTIVATIONS = ELEMENTWISE + SOFTMAX_FNS
# (function, first argument, second argument) of the elementwise losses.
PAIR = [("mse", "pred", "target"), ("mse_grad", "pred", "target"),
        ("binary_cross_entropy", "probs", "targets"),
        ("binary_cross_entropy_with_logits", "logits", "targets"),
        ("binary_cross_entropy_with_logits_grad", "logits", "targets")]
PAIR_IDS = [p[0] for p in PAIR]
CE = ["softmax_cross_entropy", "softmax_cross_entropy_grad"]
ALL_LOSSES = PAIR_IDS + CE

NOT_REAL = [("str", "abc", r"got str"), ("none", None, r"got NoneType"),
            ("object", object(), r"got object"),
            ("str_array", np.array(["a", "b"]), r"got ndarray of dtype <U1")]
NOT_REAL_IDS = [n[0] for n in NOT_REAL]


def activation(name):
    return getattr(act, name)


def loss(name):
    return getattr(losses, name)


def raises(exc, fn_name, pattern, call, *args, jit=True, **kwargs):
    """``call(*args, **kwargs)`` raises ``exc`` with a message ``"<fn_name>: <pattern>"``, and
    so does ``jax.jit`` of it (positional arguments traced, keyword arguments bound as static
    Python values) unless ``jit=False``."""
    match = rf"^{re.escape(fn_name)}: {pattern}"
    with pytest.raises(exc, match=match):
        call(*args, **kwargs)
    if jit:
        with pytest.raises(exc, match=match):
            jax.jit(functools.partial(call, **kwargs))(*args)


def is_nan_exactly_where(out, nan_mask):
    out = np.asarray(out)
    return np.array_equal(np.isnan(out), np.broadcast_to(nan_mask, out.shape))


# ================================================================ activations: elementwise


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_any_rank_accepted(name):
    for shape in [(), (1, 2, 1, 2)]:
        assert activation(name)(jnp.full(shape, 0.5)).shape == shape
    assert jax.jit(activation(name))(0.5).shape == ()


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_empty_accepted(name):
    out = activation(name)(jnp.zeros((2, 0), jnp.float32))
    assert out.shape == (2, 0) and out.dtype == jnp.float32


@pytest.mark.parametrize("name", ALL_ACTIVATIONS)
@pytest.mark.parametrize("x", [np.array([1, 0, -2], np.int32), np.array([True, False, True]),
                               [1, 0, -2]], ids=["int32", "bool", "python_list"])
def test_activation_integer_bool_or_list_promoted_to_default_float(name, x):
    out = activation(name)(x)
    assert out.dtype == jnp.result_type(float) == jnp.float64
    np.testing.assert_allclose(out, activation(name)(np.asarray(x, np.float64)), rtol=1e-15)


@pytest.mark.parametrize("name", ALL_ACTIVATIONS)
def test_activation_complex_rejected(name):
    x = jnp.asarray([1.0 + 2.0j, 0.5])
    raises(TypeError, name, r"x must have a real dtype \(floating, integer or bool\), "
                            r"got complex128", activation(name), x)


@pytest.mark.parametrize("name", ALL_ACTIVATIONS)
@pytest.mark.parametrize("label,x,got", NOT_REAL, ids=NOT_REAL_IDS)
def test_activation_non_numeric_rejected(name, label, x, got):
    raises(TypeError, name, rf"x must be an array of real numbers, {got}", activation(name), x,
           jit=False)  # under jit, JAX rejects such an argument before the function runs


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_nan_propagates(name):
    x = jnp.asarray([[-1.0, np.nan], [0.0, 2.0]])
    assert is_nan_exactly_where(activation(name)(x), np.isnan(np.asarray(x)))
    assert is_nan_exactly_where(jax.jit(activation(name))(x), np.isnan(np.asarray(x)))


@pytest.mark.parametrize("name", LEAKY)
@pytest.mark.parametrize("slope", [jnp.ones(3) * 0.1, np.full((1,), 0.1), [0.1, 0.2]],
                         ids=["shape_3", "shape_1", "list"])
def test_leaky_relu_non_scalar_slope_rejected(name, slope):
    shape = re.escape(str(np.shape(slope)))
    raises(ValueError, name, rf"negative_slope must be 0-D \(a scalar\), got shape {shape}",
           activation(name), jnp.ones(3), slope)


@pytest.mark.parametrize("name", LEAKY)
@pytest.mark.parametrize("slope,pattern", [
    (0.1j, r"negative_slope must have a real dtype .*got complex128"),
    ("0.1", r"negative_slope must be an array of real numbers, got str"),
], ids=["complex", "str"])
def test_leaky_relu_non_real_slope_rejected(name, slope, pattern):
    raises(TypeError, name, pattern, activation(name), jnp.ones(3), negative_slope=slope)


@pytest.mark.parametrize("name", LEAKY)
def test_leaky_relu_slope_cast_to_dtype_of_x(name):
    x = jnp.asarray([-1.0, 2.0], jnp.float32)
    assert activation(name)(x, jnp.float64(0.1)).dtype == jnp.float32
    assert jax.jit(activation(name))(x, jnp.float64(0.1)).dtype == jnp.float32  # traced slope


@pytest.mark.parametrize("name", LEAKY)
def test_leaky_relu_nan_slope_propagates_where_used(name):
    x = jnp.asarray([-1.0, 0.0, 2.0])
    assert is_nan_exactly_where(activation(name)(x, np.nan), [True, True, False])


# ================================================================ activations: softmax family


@pytest.mark.parametrize("name", SOFTMAX_FNS)
def test_softmax_scalar_rejected(name):
    raises(ValueError, name, r"x must be at least 1-D \(it is normalized along axis -1\), "
                             r"got shape \(\)", activation(name), jnp.float64(1.0))


@pytest.mark.parametrize("name", SOFTMAX_FNS)
@pytest.mark.parametrize("shape", [(0,), (2, 0)], ids=str)
def test_softmax_empty_axis_rejected(name, shape):
    raises(ValueError, name, rf"x must have at least one entry along axis -1, got shape "
                             rf"{re.escape(str(shape))}", activation(name), jnp.zeros(shape))


@pytest.mark.parametrize("name", SOFTMAX_FNS)
def test_softmax_empty_batch_accepted(name):
    out = activation(name)(jnp.zeros((0, 3)))
    assert out.shape[:2] == (0, 3)


@pytest.mark.parametrize("name", AXIS_FNS)
@pytest.mark.parametrize("axis", [2, -3], ids=["axis_2", "axis_-3"])
def test_softmax_axis_out_of_range_rejected(name, axis):
    raises(ValueError, name, rf"axis must be in \[-2, 2\) for x of shape \(2, 3\), got {axis}",
           activation(name), jnp.zeros((2, 3)), axis=axis)


@pytest.mark.parametrize("name", AXIS_FNS)
@pytest.mark.parametrize("axis,got", [(1.0, "float 1.0"), ("1", "str '1'"), (None, "NoneType None"),
                                      ((0, 1), r"tuple \(0, 1\)"), (True, "bool True")],
                         ids=["float", "str", "none", "tuple", "bool"])
def test_softmax_axis_not_an_int_rejected(name, axis, got):
    raises(TypeError, name, rf"axis must be an int, got {got}", activation(name),
           jnp.zeros((2, 3)), axis=axis)


@pytest.mark.parametrize("name", SOFTMAX_FNS)
def test_softmax_nan_propagates_within_its_slice(name):
    x = jnp.asarray([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]])
    out = activation(name)(x)
    nan_row = np.asarray([[True], [False]]).reshape((2,) + (1,) * (out.ndim - 1))
    assert is_nan_exactly_where(out, nan_row)


@pytest.mark.parametrize("name", AXIS_FNS)
def test_softmax_all_minus_inf_slice_is_nan_others_finite(name):
    x = jnp.asarray([[-np.inf, -np.inf], [0.0, -np.inf]])
    out = np.asarray(activation(name)(x))
    assert np.all(np.isnan(out[0]))
    expected = [1.0, 0.0] if name == "softmax" else [0.0, -np.inf]
    np.testing.assert_array_equal(out[1], expected)


# ================================================================ losses: elementwise pairs


@pytest.mark.parametrize("name,first,second", PAIR, ids=PAIR_IDS)
@pytest.mark.parametrize("shapes", [((3, 4), (3, 1)), ((3,), (1, 3)), ((3,), (4,)),
                                    ((2, 2), ()), ((), (1,))], ids=str)
def test_pair_loss_mismatched_shapes_rejected(name, first, second, shapes):
    a, b = jnp.full(shapes[0], 0.5), jnp.full(shapes[1], 0.5)
    want, got = (re.escape(str(s)) for s in shapes)
    raises(ValueError, name, rf"{second} must have shape {want} \(the shape of {first}\), "
                             rf"got shape {got}", loss(name), a, b)


@pytest.mark.parametrize("name,first,second", PAIR, ids=PAIR_IDS)
def test_pair_loss_any_rank_accepted(name, first, second):
    for shape in [(), (1, 2, 1, 2)]:
        out = loss(name)(jnp.full(shape, 0.5), jnp.full(shape, 0.25), reduction="none")
        assert out.shape == shape


@pytest.mark.parametrize("name,first,second", PAIR, ids=PAIR_IDS)
def test_pair_loss_empty_with_mean_rejected(name, first, second):
    raises(ValueError, name, rf"{first} must not be empty for reduction='mean' \(a mean over no "
                             rf"terms is undefined\), got shape \(0, 2\)",
           loss(name), jnp.zeros((0, 2)), jnp.zeros((0, 2)))


@pytest.mark.parametrize("name,first,second", PAIR, ids=PAIR_IDS)
def test_pair_loss_empty_with_sum_or_none_accepted(name, first, second):
    a = b = jnp.zeros((0, 2))
    assert loss(name)(a, b, reduction="none").shape == (0, 2)
    summed = loss(name)(a, b, reduction="sum")
    if name.endswith("_grad"):
        assert summed.shape == (0, 2)
    else:
        assert summed.shape == () and float(summed) == 0.0


@pytest.mark.parametrize("name,first,second", PAIR, ids=PAIR_IDS)
@pytest.mark.parametrize("a_dtype,b_dtype,expected", [
    (np.int32, np.int32, jnp.float64), (np.bool_, np.bool_, jnp.float64),
    (jnp.float32, np.int64, jnp.float32), (jnp.float32, np.bool_, jnp.float32),
    (np.int32, jnp.float32, jnp.float32), (jnp.float32, jnp.float64, jnp.float64),
], ids=["int-int", "bool-bool", "f32-int", "f32-bool", "int-f32", "f32-f64"])
def test_pair_loss_integer_bool_and_mixed_dtypes_promoted(name, first, second, a_dtype,
                                                          b_dtype, expected):
    a, b = jnp.asarray([1, 0, 1], a_dtype), jnp.asarray([0, 1, 1], b_dtype)
    assert jax.eval_shape(loss(name), a, b).dtype == expected  # as traced under jit
    if a_dtype == np.int32 and b_dtype == np.int32:
        assert loss(name)(a, b).dtype == expected


@pytest.mark.parametrize("name,first,second", PAIR, ids=PAIR_IDS)
@pytest.mark.parametrize("which", [0, 1], ids=["first", "second"])
def test_pair_loss_complex_rejected(name, first, second, which):
    args = [jnp.asarray([0.5, 0.25]), jnp.asarray([0.5, 0.25])]
    args[which] = args[which].astype(jnp.complex128)
    raises(TypeError, name, rf"{(first, second)[which]} must have a real dtype "
                            r"\(floating, integer or bool\), got complex128", loss(name), *args)


@pytest.mark.parametrize("name,first,second", PAIR, ids=PAIR_IDS)
@pytest.mark.parametrize("which", [0, 1], ids=["first", "second"])
@pytest.mark.parametrize("label,bad,got", NOT_REAL, ids=NOT_REAL_IDS)
def test_pair_loss_non_numeric_rejected(name, first, second, which, label, bad, got):
    args = [jnp.asarray([0.5, 0.25]), jnp.asarray([0.5, 0.25])]
    args[which] = bad
    raises(TypeError, name, rf"{(first, second)[which]} must be an array of real numbers, {got}",
           loss(name), *args, jit=False)


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("reduction", ["avg", None, "Mean"], ids=["avg", "none_object", "Mean"])
def test_loss_unknown_reduction_rejected(name, reduction):
    a = jnp.zeros((2, 3))
    b = jnp.asarray([0, 1]) if name in CE else jnp.zeros((2, 3))
    raises(ValueError, name, rf"reduction must be one of \['mean', 'sum', 'none'\], "
                             rf"got {re.escape(repr(reduction))}", loss(name), a, b,
           reduction=reduction)


@pytest.mark.parametrize("name,first,second", PAIR, ids=PAIR_IDS)
@pytest.mark.parametrize("which", [0, 1], ids=["first", "second"])
def test_pair_loss_nan_propagates(name, first, second, which):
    args = [jnp.asarray([0.5, 0.25, 0.75]), jnp.asarray([0.0, 1.0, 0.5])]
    args[which] = args[which].at[1].set(np.nan)
    nan_element = [False, True, False]
    assert is_nan_exactly_where(loss(name)(*args, reduction="none"), nan_element)
    mean = loss(name)(*args, reduction="mean")
    assert is_nan_exactly_where(mean, nan_element if name.endswith("_grad") else True)


def test_bce_probabilities_outside_unit_interval_are_clipped_not_rejected():
    probs = jnp.asarray([-0.5, 1.5])
    targets = jnp.asarray([0.0, 1.0])
    clipped = jnp.asarray([0.0, 1.0])
    out = losses.binary_cross_entropy(probs, targets, reduction="none")
    np.testing.assert_array_equal(out, losses.binary_cross_entropy(clipped, targets, "none"))
    assert np.all(np.isfinite(out))


# ================================================================ losses: softmax cross-entropy


@pytest.mark.parametrize("name", CE)
@pytest.mark.parametrize("shape", [(3,), (2, 4, 3), ()], ids=str)
def test_cross_entropy_logits_not_2d_rejected(name, shape):
    raises(ValueError, name, rf"logits must be 2-D \(N, C\), got shape {re.escape(str(shape))}",
           loss(name), jnp.zeros(shape), jnp.zeros(2, jnp.int32))


@pytest.mark.parametrize("name", CE)
@pytest.mark.parametrize("labels", [np.zeros(2, np.int32), np.zeros((2, 0))], ids=["ids", "rows"])
def test_cross_entropy_no_classes_rejected(name, labels):
    raises(ValueError, name, r"logits must have at least one class, C >= 1, got shape \(2, 0\)",
           loss(name), jnp.zeros((2, 0)), jnp.asarray(labels))


@pytest.mark.parametrize("name", CE)
def test_cross_entropy_empty_batch_with_mean_rejected(name):
    raises(ValueError, name, r"logits must not be empty for reduction='mean' .*got shape \(0, 3\)",
           loss(name), jnp.zeros((0, 3)), jnp.zeros(0, jnp.int32))


@pytest.mark.parametrize("name", CE)
def test_cross_entropy_empty_batch_with_sum_accepted(name):
    out = loss(name)(jnp.zeros((0, 3)), jnp.zeros(0, jnp.int32), reduction="sum")
    assert out.shape == ((0, 3) if name.endswith("_grad") else ())
    assert np.all(np.asarray(out) == 0)


@pytest.mark.parametrize("name", CE)
@pytest.mark.parametrize("labels,pattern", [
    (np.zeros((4, 1), np.int32), r"labels must be 1-D \(N,\) of integer class ids .*"
                                 r"got shape \(4, 1\)"),
    (np.zeros((4, 3), np.int32), r"labels must be 1-D \(N,\) of integer class ids \(pass one-hot "
                                 r"rows as a floating \(N, C\) array\), got shape \(4, 3\)"),
    (np.zeros(5, np.int32), r"labels must have shape \(4,\) \(N,\) of integer class ids.*"
                            r"got shape \(5,\)"),
], ids=["ids_column", "int_one_hot", "ids_length"])
def test_cross_entropy_integer_labels_wrong_shape_rejected(name, labels, pattern):
    raises(ValueError, name, pattern, loss(name), jnp.zeros((4, 3)), jnp.asarray(labels))


@pytest.mark.parametrize("name", CE)
@pytest.mark.parametrize("labels,got", [
    (np.zeros((4, 4)), r"\(4, 4\)"), (np.zeros((5, 3)), r"\(5, 3\)"),
    (np.zeros(4), r"\(4,\)"), (np.zeros(4, bool), r"\(4,\)"),
], ids=["rows_width", "rows_count", "float_ids", "bool_ids"])
def test_cross_entropy_floating_labels_wrong_shape_rejected(name, labels, got):
    raises(ValueError, name, r"labels must have shape \(4, 3\) \(N, C\) of one-hot or probability "
                             rf"rows \(class ids need an integer dtype\), got shape {got}",
           loss(name), jnp.zeros((4, 3)), jnp.asarray(labels))


@pytest.mark.parametrize("name", CE)
@pytest.mark.parametrize("ids", [[0, 3], [-1, 0]], ids=["too_large", "negative"])
def test_cross_entropy_class_ids_out_of_range_rejected_when_concrete(name, ids):
    raises(ValueError, name, r"labels must be class ids in \[0, 3\) for logits of shape \(2, 3\), "
                             rf"got out-of-range values \[{ids[0] if ids[0] else ids[1]}\]",
           loss(name), jnp.zeros((2, 3)), jnp.asarray(ids), jit=False)
    # Under jit the ids are traced and cannot be checked: the example's target row is all zero.
    per_example = jax.jit(loss(name), static_argnames="reduction")(
        jnp.zeros((2, 3)), jnp.asarray(ids), reduction="none")
    bad = 1 if ids[0] == 0 else 0
    np.testing.assert_array_equal(np.asarray(per_example)[bad], 0.0)


@pytest.mark.parametrize("name", CE)
def test_cross_entropy_integer_and_bool_inputs_promoted(name):
    fn, z = loss(name), jnp.zeros((2, 3))
    ids, bool_rows = jnp.asarray([0, 2], jnp.uint8), jnp.asarray([[1, 0, 0], [0, 0, 1]], bool)
    assert jax.eval_shape(fn, z.astype(jnp.int32), ids).dtype == jnp.float64
    assert jax.eval_shape(fn, z.astype(jnp.float32), ids).dtype == jnp.float32
    assert jax.eval_shape(fn, z.astype(jnp.float32), bool_rows).dtype == jnp.float32
    assert jax.eval_shape(fn, z.astype(jnp.float32), jnp.eye(2, 3)).dtype == jnp.float64
    np.testing.assert_allclose(fn(z, bool_rows), fn(z, ids), rtol=1e-15)


@pytest.mark.parametrize("name", CE)
@pytest.mark.parametrize("arg", ["logits", "labels"])
def test_cross_entropy_complex_rejected(name, arg):
    logits, labels = jnp.zeros((2, 3)), jnp.eye(2, 3)
    if arg == "logits":
        logits = logits.astype(jnp.complex128)
    else:
        labels = labels.astype(jnp.complex128)
    raises(TypeError, name, rf"{arg} must have a real dtype \(floating, integer or bool\), "
                            r"got complex128", loss(name), logits, labels)


@pytest.mark.parametrize("name", CE)
@pytest.mark.parametrize("arg", ["logits", "labels"])
@pytest.mark.parametrize("label,bad,got", NOT_REAL, ids=NOT_REAL_IDS)
def test_cross_entropy_non_numeric_rejected(name, arg, label, bad, got):
    args = {"logits": jnp.zeros((2, 3)), "labels": jnp.asarray([0, 1])}
    args[arg] = bad
    raises(TypeError, name, rf"{arg} must be an array of real numbers, {got}", loss(name),
           args["logits"], args["labels"], jit=False)


@pytest.mark.parametrize("name", CE)
@pytest.mark.parametrize("where", ["logits", "label_rows"])
def test_cross_entropy_nan_propagates_to_its_example(name, where):
    logits, rows = jnp.zeros((3, 2)), jnp.eye(3, 2)
    if where == "logits":
        logits = logits.at[1, 0].set(np.nan)
    else:
        rows = rows.at[1, 1].set(np.nan)
    out = loss(name)(logits, rows, reduction="none")
    nan_example = np.asarray([False, True, False]).reshape((3,) + (1,) * (out.ndim - 1))
    assert is_nan_exactly_where(out, nan_example)


@pytest.mark.parametrize("name", CE)
def test_cross_entropy_minus_inf_logit_with_zero_target_is_finite(name):
    """0 log 0 = 0: a masked class (-inf logit, target 0) adds nothing; was NaN before #8."""
    logits = jnp.asarray([[0.0, -np.inf, 1.0], [-np.inf, 2.0, 2.0]])
    rows = jnp.asarray([[0.25, 0.0, 0.75], [0.0, 1.0, 0.0]])
    out = loss(name)(logits, rows, reduction="none")
    assert np.all(np.isfinite(out))
    grad = jax.jit(jax.grad(losses.softmax_cross_entropy))(logits, rows)
    assert np.all(np.isfinite(grad)) and grad[0, 1] == grad[1, 0] == 0.0
    unmasked = losses.softmax_cross_entropy(jnp.asarray([[0.0, 1.0]]), jnp.asarray([[0.25, 0.75]]),
                                            reduction="none")
    if name == "softmax_cross_entropy":
        np.testing.assert_allclose(out[0], unmasked[0], rtol=1e-15)


def test_cross_entropy_minus_inf_logit_with_positive_target_is_inf():
    """The math is infinite there: the loss says so rather than hiding it."""
    out = losses.softmax_cross_entropy(jnp.asarray([[0.0, -np.inf]]), jnp.asarray([1]))
    assert out == np.inf


def test_bce_with_logits_infinite_logit_with_matching_target_is_finite():
    """The limits z -> +inf, t = 1 and z -> -inf, t = 0 have loss 0 and gradient 0 (was NaN)."""
    z, t = jnp.asarray([np.inf, -np.inf]), jnp.asarray([1.0, 0.0])
    out = losses.binary_cross_entropy_with_logits(z, t, reduction="none")
    np.testing.assert_array_equal(out, [0.0, 0.0])
    grad = jax.jit(jax.grad(losses.binary_cross_entropy_with_logits))(z, t)
    np.testing.assert_array_equal(grad, [0.0, 0.0])
    np.testing.assert_array_equal(losses.binary_cross_entropy_with_logits_grad(z, t), [0.0, 0.0])
    wrong = losses.binary_cross_entropy_with_logits(z, 1 - t, reduction="none")
    np.testing.assert_array_equal(wrong, [np.inf, np.inf])  # confidently wrong: infinite loss
