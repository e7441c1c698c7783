"""Tests for jaxcalc.losses: values vs NumPy references and the seed, closed-form gradients vs
jax.grad and finite differences, reductions, extremes, dtypes and every input check."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcalc import losses
from jaxcalc._validate import check_shape
from jaxcalc.activations import sigmoid, softmax

DTYPES = [jnp.float32, jnp.float64]
TOL = {jnp.float32: dict(rtol=1e-5, atol=1e-6), jnp.float64: dict(rtol=1e-12, atol=1e-15)}
FD_STEP = 1e-5  # float64 central differences: truncation ~h² ≈ 1e-10, round-off ~eps/h ≈ 1e-11
FD_TOL = dict(rtol=1e-7, atol=1e-9)
REDUCTIONS = ["mean", "sum", "none"]
N, C = 4, 3


@pytest.fixture(params=[False, True], ids=["nojit", "jit"])
def maybe_jit(request):
    return jax.jit if request.param else (lambda f: f)


def _rng(seed=0):
    return np.random.default_rng(seed)


def regression_data(dtype, shape=(N, 2)):
    rng = _rng(1)
    return (jnp.asarray(rng.normal(size=shape), dtype=dtype),
            jnp.asarray(rng.normal(size=shape), dtype=dtype))


def binary_data(dtype, shape=(N, 2)):
    rng = _rng(2)
    logits = jnp.asarray(rng.normal(size=shape) * 3, dtype=dtype)
    targets = jnp.asarray(rng.uniform(size=shape), dtype=dtype)  # soft labels in [0, 1]
    return logits, targets


def class_data(dtype, one_hot=False, soft=False):
    rng = _rng(3)
    logits = jnp.asarray(rng.normal(size=(N, C)) * 2, dtype=dtype)
    ids = jnp.asarray(rng.integers(0, C, size=N))
    if soft:
        rows = rng.uniform(size=(N, C))
        return logits, jnp.asarray(rows / rows.sum(axis=1, keepdims=True), dtype=dtype)
    if one_hot:
        return logits, jax.nn.one_hot(ids, C, dtype=dtype)
    return logits, ids


# (name, loss, closed-form gradient, data(dtype)) for every loss with a *_grad.
GRAD_CASES = [
    ("mse", losses.mse, losses.mse_grad, regression_data),
    ("mse_1d", losses.mse, losses.mse_grad, functools.partial(regression_data, shape=(5,))),
    ("bce_logits", losses.binary_cross_entropy_with_logits,
     losses.binary_cross_entropy_with_logits_grad, binary_data),
    ("softmax_ce_ids", losses.softmax_cross_entropy, losses.softmax_cross_entropy_grad,
     class_data),
    ("softmax_ce_onehot", losses.softmax_cross_entropy, losses.softmax_cross_entropy_grad,
     functools.partial(class_data, one_hot=True)),
    ("softmax_ce_soft", losses.softmax_cross_entropy, losses.softmax_cross_entropy_grad,
     functools.partial(class_data, soft=True)),
]
GRAD_IDS = [c[0] for c in GRAD_CASES]


def all_reductions(fn):
    """``fn`` evaluated with every reduction, as one function (one compile under jit)."""
    return lambda *args: {r: fn(*args, reduction=r) for r in REDUCTIONS}


def scalar_loss(loss, target, reduction):
    """The loss as a scalar function of the prediction; "none" is summed (its grad's meaning)."""
    return lambda pred: jnp.sum(loss(pred, target, reduction=reduction))


@functools.lru_cache(maxsize=None)
def autodiff_grads(loss):
    """Reference ``(pred, target) -> {reduction: jax.grad(scalar loss)}``, jitted once per loss."""
    return jax.jit(lambda pred, target: {r: jax.grad(scalar_loss(loss, target, r))(pred)
                                         for r in REDUCTIONS})


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5,), (N, 2)])
def test_mse_matches_numpy(dtype, shape, maybe_jit):
    pred, target = regression_data(dtype, shape)
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    expected = {"mean": np.mean((t - p) ** 2), "sum": np.sum((t - p) ** 2), "none": (t - p) ** 2}
    outs = maybe_jit(all_reductions(losses.mse))(pred, target)
    for reduction, out in outs.items():
        assert out.dtype == dtype and out.shape == np.shape(expected[reduction])
        np.testing.assert_allclose(out, expected[reduction], **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_matches_numpy(dtype, maybe_jit):
    _, targets = binary_data(dtype)
    probs = jnp.asarray(_rng(4).uniform(0.01, 0.99, size=targets.shape), dtype=dtype)
    p, t = np.asarray(probs, np.float64), np.asarray(targets, np.float64)
    elementwise = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    expected = {"mean": elementwise.mean(), "sum": elementwise.sum(), "none": elementwise}
    outs = maybe_jit(all_reductions(losses.binary_cross_entropy))(probs, targets)
    for reduction, out in outs.items():
        assert out.dtype == dtype and out.shape == np.shape(expected[reduction])
        np.testing.assert_allclose(out, expected[reduction], **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_clip_is_dtype_aware(dtype):
    """p = 0 or 1 against the wrong label is clipped to eps = max(1e-15, finfo.eps), not -log 0."""
    eps = max(1e-15, float(np.finfo(dtype).eps))
    one_minus_eps = np.asarray(1 - eps, dtype=dtype)  # as rounded in the dtype: 1 - 9.99e-16 in f64
    probs = jnp.asarray([0.0, 1.0], dtype=dtype)
    targets = jnp.asarray([1.0, 0.0], dtype=dtype)
    out = losses.binary_cross_entropy(probs, targets, reduction="none")
    grad = autodiff_grads(losses.binary_cross_entropy)(probs, targets)["mean"]
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(grad))
    # float32: a naive 1 - 1e-15 rounds to 1 and the second entry would be inf.
    expected = [-np.log(eps), -np.log1p(-one_minus_eps.astype(np.float64))]
    np.testing.assert_allclose(out, expected, rtol=1e-6 if dtype == jnp.float32 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_equals_bce_on_sigmoid(dtype, maybe_jit):
    logits, targets = binary_data(dtype)
    outs = maybe_jit(all_reductions(losses.binary_cross_entropy_with_logits))(logits, targets)
    refs = all_reductions(losses.binary_cross_entropy)(sigmoid(logits), targets)
    for reduction, out in outs.items():
        assert out.dtype == dtype and out.shape == (() if reduction != "none" else logits.shape)
        np.testing.assert_allclose(out, refs[reduction], **TOL[dtype])


def test_bce_with_logits_full_precision_for_confident_logits():
    z = jnp.asarray([30.0, -30.0, 50.0])
    t = jnp.asarray([1.0, 0.0, 1.0])
    exact = np.log1p(np.exp(-np.abs(np.asarray(z))))  # log(1 + e^{-|z|}), tiny but exact
    np.testing.assert_allclose(losses.binary_cross_entropy_with_logits(z, t, "none"), exact,
                               rtol=1e-14)
    exact_grad = -np.exp(-30.0) / (1 + np.exp(-30.0))  # σ(30) - 1 = -σ(-30)
    np.testing.assert_allclose(losses.binary_cross_entropy_with_logits_grad(z, t, "none")[0],
                               exact_grad, rtol=1e-14)
    auto = autodiff_grads(losses.binary_cross_entropy_with_logits)(z, t)["mean"]
    np.testing.assert_allclose(auto[0], exact_grad / 3, rtol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_matches_numpy(dtype, maybe_jit):
    logits, ids = class_data(dtype)
    z = np.asarray(logits, np.float64)
    logp = z - z.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    per_example = -logp[np.arange(N), np.asarray(ids)]
    expected = {"mean": per_example.mean(), "sum": per_example.sum(), "none": per_example}
    fn = maybe_jit(all_reductions(losses.softmax_cross_entropy))
    outs_ids, outs_rows = fn(logits, ids), fn(logits, jax.nn.one_hot(ids, C, dtype=dtype))
    for reduction in REDUCTIONS:
        by_ids, by_rows = outs_ids[reduction], outs_rows[reduction]
        assert by_ids.dtype == by_rows.dtype == dtype
        assert by_ids.shape == np.shape(expected[reduction])
        np.testing.assert_allclose(by_ids, expected[reduction], **TOL[dtype])
        np.testing.assert_allclose(by_rows, by_ids, **TOL[dtype])


def test_reductions_are_consistent():
    logits, ids = class_data(jnp.float64)
    none = losses.softmax_cross_entropy(logits, ids, reduction="none")
    assert none.shape == (N,)
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, ids, "sum"), none.sum(),
                               rtol=1e-15)
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, ids), none.mean(), rtol=1e-15)


# ---------------------------------------------------------------- the seed's LossFunctions


def seed_mse(y_true, y_pred):
    """Seed 002, LossFunctions.mse."""
    loss = np.mean((y_true - y_pred) ** 2)
    gradient = 2 * (y_pred - y_true) / y_true.shape[0]
    return loss, gradient


def seed_cross_entropy(y_true, y_pred):
    """Seed 002, LossFunctions.cross_entropy (categorical, on probabilities)."""
    epsilon = 1e-15
    y_pred = np.clip(y_pred, epsilon, 1 - epsilon)
    loss = -np.mean(y_true * np.log(y_pred))
    gradient = -(y_true / y_pred) / y_true.shape[0]
    return loss, gradient


def test_seed_mse_and_its_gradient_for_1d_inputs():
    pred, target = regression_data(jnp.float64, shape=(7,))
    loss, grad = seed_mse(np.asarray(target), np.asarray(pred))
    np.testing.assert_allclose(losses.mse(pred, target), loss, rtol=1e-14)
    np.testing.assert_allclose(losses.mse_grad(pred, target), grad, rtol=1e-14)


def test_seed_mse_gradient_is_k_times_too_large_for_2d_inputs():
    """Documented relation: for (N, K) the seed divides by N, not N*K, so it is K x mse_grad."""
    pred, target = regression_data(jnp.float64, shape=(N, 3))
    loss, grad = seed_mse(np.asarray(target), np.asarray(pred))
    np.testing.assert_allclose(losses.mse(pred, target), loss, rtol=1e-14)
    np.testing.assert_allclose(grad, 3 * losses.mse_grad(pred, target), rtol=1e-14)
    assert not np.allclose(grad, losses.mse_grad(pred, target))


def test_seed_cross_entropy_is_softmax_cross_entropy_over_c():
    logits, onehot = class_data(jnp.float64, one_hot=True)
    seed_loss, _ = seed_cross_entropy(np.asarray(onehot), np.asarray(softmax(logits)))
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, onehot), C * seed_loss,
                               rtol=1e-13)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name,loss,grad,data", GRAD_CASES, ids=GRAD_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_closed_form_gradient_matches_jax_grad(name, loss, grad, data, dtype, maybe_jit):
    pred, target = data(dtype)
    closed = maybe_jit(all_reductions(grad))(pred, target)
    auto = autodiff_grads(loss)(pred, target)
    for reduction in REDUCTIONS:
        c, a = closed[reduction], auto[reduction]
        assert c.shape == pred.shape and c.dtype == a.dtype == dtype
        np.testing.assert_allclose(c, a, **TOL[dtype], err_msg=reduction)


@pytest.mark.parametrize("name,loss,grad,data", GRAD_CASES, ids=GRAD_IDS)
def test_gradients_match_central_differences(name, loss, grad, data):
    pred, target = data(jnp.float64)
    f = jax.vmap(scalar_loss(loss, target, "mean"))  # over the perturbed predictions
    steps = FD_STEP * np.eye(pred.size).reshape((pred.size,) + pred.shape)
    fd = ((f(pred + steps) - f(pred - steps)) / (2 * FD_STEP)).reshape(pred.shape)
    np.testing.assert_allclose(autodiff_grads(loss)(pred, target)["mean"], fd, **FD_TOL)
    np.testing.assert_allclose(grad(pred, target), fd, **FD_TOL)


def test_gradient_comparison_detects_a_wrong_gradient():
    """The seed's 2-D mse gradient (off by K) and σ(z) - t without 1/M must fail the checks."""
    pred, target = regression_data(jnp.float64, shape=(N, 3))
    auto = autodiff_grads(losses.mse)(pred, target)["mean"]
    assert not np.allclose(seed_mse(np.asarray(target), np.asarray(pred))[1], auto, **FD_TOL)
    logits, targets = binary_data(jnp.float64)
    auto = autodiff_grads(losses.binary_cross_entropy_with_logits)(logits, targets)["mean"]
    assert not np.allclose(sigmoid(logits) - targets, auto, **FD_TOL)


def test_bce_with_logits_gradient_at_zero_is_sigmoid_zero_minus_target():
    z = jnp.zeros(3)
    t = jnp.asarray([0.0, 0.3, 1.0])
    expected = np.asarray([0.5, 0.2, -0.5])
    auto = autodiff_grads(losses.binary_cross_entropy_with_logits)(z, t)["sum"]
    np.testing.assert_allclose(auto, expected, rtol=1e-15)
    np.testing.assert_allclose(losses.binary_cross_entropy_with_logits_grad(z, t, "sum"),
                               expected, rtol=1e-15)


# ---------------------------------------------------------------- extremes


@pytest.mark.parametrize("name,loss,grad,data", GRAD_CASES[2:], ids=GRAD_IDS[2:])
@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits_give_finite_losses_and_gradients(name, loss, grad, data, dtype):
    logits, target = data(dtype)
    extreme = jnp.asarray(np.resize([1e4, -1e4, 0.0, -1e4, 1e4], logits.size), dtype=dtype)
    extreme = extreme.reshape(logits.shape)
    values = all_reductions(loss)(extreme, target)
    closeds = all_reductions(grad)(extreme, target)
    autos = autodiff_grads(loss)(extreme, target)
    for reduction in REDUCTIONS:
        value, auto, closed = values[reduction], autos[reduction], closeds[reduction]
        assert value.dtype == auto.dtype == closed.dtype == dtype
        for a in (value, auto, closed):
            assert np.all(np.isfinite(a)), (reduction, a)
        np.testing.assert_allclose(closed, auto, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_values_are_exact(dtype):
    logits = jnp.asarray([[1e4, -1e4, 0.0]], dtype=dtype)
    ce = losses.softmax_cross_entropy
    assert float(ce(logits, jnp.asarray([0]))) == 0.0
    assert float(ce(logits, jnp.asarray([1]))) == 2e4
    assert float(ce(logits, jnp.asarray([2]))) == 1e4
    bce = losses.binary_cross_entropy_with_logits
    z = jnp.asarray([1e4, -1e4, 1e4, -1e4], dtype=dtype)
    t = jnp.asarray([1.0, 0.0, 0.0, 1.0], dtype=dtype)
    np.testing.assert_array_equal(bce(z, t, reduction="none"), [0.0, 0.0, 1e4, 1e4])


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_on_probabilities_finite_at_zero_and_one(dtype):
    probs = jnp.asarray([0.0, 1.0, 0.0, 1.0], dtype=dtype)
    targets = jnp.asarray([0.0, 1.0, 1.0, 0.0], dtype=dtype)
    outs = all_reductions(losses.binary_cross_entropy)(probs, targets)
    grads = autodiff_grads(losses.binary_cross_entropy)(probs, targets)
    for reduction in REDUCTIONS:
        out, g = outs[reduction], grads[reduction]
        assert out.dtype == g.dtype == dtype
        assert np.all(np.isfinite(out)) and np.all(np.isfinite(g))


# ---------------------------------------------------------------- dtypes


@pytest.mark.parametrize("fn", [losses.mse, losses.mse_grad, losses.binary_cross_entropy,
                                losses.binary_cross_entropy_with_logits,
                                losses.binary_cross_entropy_with_logits_grad],
                         ids=["mse", "mse_grad", "bce", "bce_logits", "bce_logits_grad"])
def test_float32_in_float32_out_with_x64_enabled(fn):
    a = jnp.asarray([[0.2, 0.7]], dtype=jnp.float32)
    b = jnp.asarray([[0.0, 1.0]], dtype=jnp.float32)
    assert fn(a, b).dtype == jnp.float32
    assert jax.eval_shape(fn, a, b).dtype == jnp.float32


@pytest.mark.parametrize("fn", [losses.softmax_cross_entropy, losses.softmax_cross_entropy_grad],
                         ids=["ce", "ce_grad"])
def test_float32_logits_with_integer_labels_stay_float32(fn):
    logits, ids = class_data(jnp.float32)
    assert fn(logits, ids).dtype == jnp.float32


# ---------------------------------------------------------------- bad input

# (function, its name, first argument, second argument) for the elementwise losses.
PAIR_CASES = [
    (losses.mse, "mse", "pred", "target"),
    (losses.mse_grad, "mse_grad", "pred", "target"),
    (losses.binary_cross_entropy, "binary_cross_entropy", "probs", "targets"),
    (losses.binary_cross_entropy_with_logits, "binary_cross_entropy_with_logits", "logits",
     "targets"),
    (losses.binary_cross_entropy_with_logits_grad, "binary_cross_entropy_with_logits_grad",
     "logits", "targets"),
]
PAIR_FNS = [c[0] for c in PAIR_CASES]
PAIR_IDS = [c[1] for c in PAIR_CASES]
CE_FNS = [losses.softmax_cross_entropy, losses.softmax_cross_entropy_grad]
CE_IDS = ["softmax_cross_entropy", "softmax_cross_entropy_grad"]


@pytest.mark.parametrize("fn,fn_name,first,second", PAIR_CASES, ids=PAIR_IDS)
@pytest.mark.parametrize("shapes", [((3, 4), (3, 1)), ((3,), (1, 3)), ((3,), (4,)), ((2, 2), ())])
def test_shape_mismatch_raises_instead_of_broadcasting(fn, fn_name, first, second, shapes):
    a, b = jnp.full(shapes[0], 0.5), jnp.full(shapes[1], 0.5)
    match = (rf"^{fn_name}: {second} must have shape {re.escape(str(shapes[0]))} "
             rf"\(the shape of {first}\), got shape {re.escape(str(shapes[1]))}")
    with pytest.raises(ValueError, match=match):
        fn(a, b)
    with pytest.raises(ValueError, match=match):
        jax.jit(fn)(a, b)


@pytest.mark.parametrize("fn", PAIR_FNS + CE_FNS, ids=PAIR_IDS + CE_IDS)
def test_unknown_reduction_raises(fn):
    a = jnp.zeros((2, 3))
    b = jnp.asarray([0, 1]) if fn in CE_FNS else jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"reduction must be one of \['mean', 'sum', 'none'\], "
                                         r"got 'avg'"):
        fn(a, b, reduction="avg")


@pytest.mark.parametrize("fn,fn_name", list(zip(CE_FNS, CE_IDS)), ids=CE_IDS)
@pytest.mark.parametrize("bad", [[0, 3, 1, 2], [0, -1, 1, 2]], ids=["too_large", "negative"])
def test_out_of_range_class_ids_raise_when_concrete(fn, fn_name, bad):
    logits = jnp.zeros((N, C))
    with pytest.raises(ValueError, match=rf"^{fn_name}: labels must be class ids in \[0, 3\)"):
        fn(logits, jnp.asarray(bad))
    with pytest.raises(ValueError, match="class ids"):
        fn(logits, np.asarray(bad))  # NumPy labels are concrete too


def test_out_of_range_class_ids_are_not_checked_under_jit():
    """Documented: traced ids are not checked; an out-of-range id gets an all-zero row (loss 0)."""
    logits, ids = class_data(jnp.float64)
    bad = ids.at[0].set(C)
    per_example = jax.jit(functools.partial(losses.softmax_cross_entropy, reduction="none"))(
        logits, bad)
    assert float(per_example[0]) == 0.0
    np.testing.assert_allclose(per_example[1:],
                               losses.softmax_cross_entropy(logits, ids, reduction="none")[1:],
                               rtol=1e-15)


@pytest.mark.parametrize("fn,fn_name", list(zip(CE_FNS, CE_IDS)), ids=CE_IDS)
@pytest.mark.parametrize("logits_shape,labels,match", [
    ((N, C), np.zeros((N, C + 1)), r"labels must have shape \(4, 3\) \(N, C\).*got shape \(4, 4\)"),
    ((N, C), np.zeros((N + 1, C)), r"labels must have shape \(4, 3\) \(N, C\).*got shape \(5, 3\)"),
    ((N, C), np.zeros((N, C), dtype=np.int32), r"labels must be 1-D \(N,\) of integer class ids"),
    ((N, C), np.zeros((N, 1), dtype=np.int32), r"labels must be 1-D \(N,\).*got shape \(4, 1\)"),
    ((N, C), np.zeros(N + 1, dtype=np.int32), r"labels must have shape \(4,\).*got shape \(5,\)"),
    ((N, C), np.zeros(N), r"labels must have shape \(4, 3\).*got shape \(4,\)"),
    ((C,), np.zeros(1, dtype=np.int32), r"logits must be 2-D \(N, C\), got shape \(3,\)"),
    ((2, N, C), np.zeros(2, dtype=np.int32), r"logits must be 2-D \(N, C\), got shape \(2, 4, 3\)"),
], ids=["onehot_width", "onehot_rows", "int_onehot", "int_column", "ids_length", "float_ids",
        "logits_1d", "logits_3d"])
def test_class_label_and_logit_shapes_are_checked(fn, fn_name, logits_shape, labels, match):
    logits = jnp.zeros(logits_shape)
    with pytest.raises(ValueError, match=rf"^{fn_name}: {match}"):
        fn(logits, jnp.asarray(labels))
    with pytest.raises(ValueError, match=rf"^{fn_name}: {match}"):
        jax.jit(fn)(logits, jnp.asarray(labels))


def test_check_shape_accepts_equal_and_rejects_other_shapes():
    check_shape("f", "x", jnp.zeros((2, 3)), (2, 3))
    with pytest.raises(ValueError, match=r"^f: x must have shape \(2, 3\) \(N, C\), got shape "
                                         r"\(3, 2\)$"):
        check_shape("f", "x", jnp.zeros((3, 2)), (2, 3), "(N, C)")


# ---------------------------------------------------------------- properties (hypothesis)

logit = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)
unit = st.floats(min_value=0.0, max_value=1.0)
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)


@PROPERTY_SETTINGS
@given(z=st.lists(logit, min_size=3, max_size=3), t=st.lists(unit, min_size=3, max_size=3))
def test_bce_with_logits_is_nonnegative_finite_and_symmetric(z, t):
    """ℓ(z, t) = ℓ(-z, 1 - t) (swap the classes), and ℓ ≥ the entropy lower bound ≥ 0."""
    z, t = jnp.asarray(z), jnp.asarray(t)
    f = functools.partial(losses.binary_cross_entropy_with_logits, reduction="none")
    out, swapped = f(z, t), f(-z, 1 - t)
    assert np.all(np.isfinite(out)) and np.all(out >= 0)
    np.testing.assert_allclose(out, swapped, rtol=1e-12, atol=1e-12)


@PROPERTY_SETTINGS
@given(z=st.lists(logit, min_size=C, max_size=C), label=st.integers(0, C - 1),
       shift=st.floats(min_value=-100.0, max_value=100.0))
def test_softmax_cross_entropy_nonnegative_and_shift_invariant(z, label, shift):
    logits = jnp.asarray([z])
    labels = jnp.asarray([label])
    out = losses.softmax_cross_entropy(logits, labels)
    assert np.isfinite(out) and out >= 0
    # Shifting all logits of a row leaves the loss unchanged, up to rounding of logits + shift.
    scale = float(jnp.max(jnp.abs(logits))) + abs(shift) + 1.0
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits + shift, labels), out,
                               rtol=0, atol=8 * np.finfo(np.float64).eps * scale)
