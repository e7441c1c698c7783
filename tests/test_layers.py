"""Tests for jaxcalc.layers: NumPy loop references (from the seed notes), finite differences,
PyTorch batch-norm semantics, trace-time errors and extreme inputs.

References are plain NumPy loops in float64, generalized from the seed's ``convolution2D`` and
``max_pooling2D`` to batch, channels, pair strides and paddings.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxcalc import layers

DTYPES = [jnp.float32, jnp.float64]
# Layer output vs float64 NumPy reference (values O(1), sums of <= 50 products).
TOL = {np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5),
       np.dtype(np.float64): dict(rtol=1e-12, atol=1e-12)}
# jax.grad vs central finite differences, float64, step FD_STEP.
FD_STEP = 1e-5
FD_TOL = dict(rtol=1e-7, atol=1e-8)


# ----------------------------------------------------------------------------- NumPy references


def _np_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _np_pads(padding, in_hw, k_hw, strides):
    """Per-axis (lo, hi) zero padding, with XLA's/TF's rule for 'SAME' (extra at the end)."""
    if padding == "VALID":
        return ((0, 0), (0, 0))
    if padding == "SAME":
        pads = []
        for n, k, s in zip(in_hw, k_hw, strides):
            out = -(-n // s)
            total = max((out - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    ph, pw = _np_pair(padding)
    return ((ph, ph), (pw, pw))


def conv2d_ref(x, kernel, bias=None, stride=1, padding=0):
    """The seed's ``convolution2D`` loop over output pixels, for NHWC batches and HWIO kernels."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    sh, sw = _np_pair(stride)
    kh, kw = kernel.shape[:2]
    (pt, pb), (pl, pr) = _np_pads(padding, x.shape[1:3], (kh, kw), (sh, sw))
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), mode="constant")
    out_h, out_w = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :]
            out[:, i, j, :] = np.einsum("nklc,klco->no", patch, kernel)
    return out if bias is None else out + np.asarray(bias, np.float64)


def pool2d_ref(x, window, stride, reduce):
    """The seed's ``max_pooling2D`` loop (``reduce=np.max``) for NHWC batches; no padding."""
    x = np.asarray(x, np.float64)
    wh, ww = _np_pair(window)
    sh, sw = _np_pair(window if stride is None else stride)
    out_h, out_w = (x.shape[1] - wh) // sh + 1, (x.shape[2] - ww) // sw + 1
    out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            out[:, i, j, :] = reduce(x[:, i * sh:i * sh + wh, j * sw:j * sw + ww, :], axis=(1, 2))
    return out


def batch_norm_ref(x, gamma, beta, running_mean, running_var, train, momentum, eps):
    """PyTorch ``BatchNorm`` semantics in NumPy: biased var to normalize, unbiased to track."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    if train:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        new_mean = (1 - momentum) * running_mean + momentum * mean
        new_var = (1 - momentum) * running_var + momentum * x.var(axis=axes, ddof=1)
    else:
        mean, var = running_mean, running_var
        new_mean, new_var = running_mean, running_var
    y = gamma * (x - mean) / np.sqrt(var + eps) + beta
    return y, (new_mean, new_var)


def seed_batch_norm_backward(x, gamma, gradient, eps):
    """The seed's ``BatchNormalization.backward`` (train mode, (N, C) input), verbatim math."""
    m = x.shape[0]
    mu, var = np.mean(x, axis=0), np.var(x, axis=0)
    x_mu = x - mu
    d_xnorm = gradient * gamma
    d_var = np.sum(d_xnorm * x_mu * -0.5 * (var + eps) ** (-3 / 2), axis=0)
    d_mu = np.sum(d_xnorm * -1 / np.sqrt(var + eps), axis=0)
    return d_xnorm / np.sqrt(var + eps) + 2 * d_var * x_mu / m + d_mu / m


# ----------------------------------------------------------------------------- helpers


def _rand(seed, shape, dtype=jnp.float64, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def _tie_free(seed, shape):
    """Distinct values in [-1, 1) with gaps 2/size >> FD_STEP, so max-pool argmaxes are stable."""
    size = int(np.prod(shape))
    perm = np.random.default_rng(seed).permutation(size)
    return (2.0 * perm / size - 1.0).reshape(shape)


def fd_grad(f, x, h=FD_STEP):
    """Central finite differences of scalar ``f`` at ``x`` in every coordinate (one vmap)."""
    x = jnp.asarray(x)
    basis = jnp.eye(x.size, dtype=x.dtype).reshape((x.size,) + x.shape)
    diffs = jax.vmap(lambda e: (f(x + h * e) - f(x - h * e)) / (2 * h))(basis)
    return diffs.reshape(x.shape)


def _both(fn, *args):
    """``fn(*args)`` without and with ``jax.jit``; asserts the two agree to round-off."""
    eager, jitted = fn(*args), jax.jit(fn)(*args)
    dtype = np.dtype(jnp.result_type(eager))
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), **TOL[dtype])
    assert jitted.shape == eager.shape and jitted.dtype == eager.dtype
    return eager, jitted


# ----------------------------------------------------------------------------- seed numbers

SEED_IMAGE = np.arange(1, 17).reshape(4, 4)
SEED_KERNEL = np.array([[-1, -1], [1, 1]])


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.float32, jnp.float64])
def test_seed_convolution_and_max_pooling(dtype):
    x = jnp.asarray(SEED_IMAGE[None, :, :, None], dtype)
    k = jnp.asarray(SEED_KERNEL[:, :, None, None], dtype)
    conv = layers.conv2d(x, k)
    assert conv.shape == (1, 3, 3, 1)
    np.testing.assert_array_equal(np.asarray(conv)[0, :, :, 0], np.full((3, 3), 8))
    np.testing.assert_array_equal(conv2d_ref(SEED_IMAGE[None, :, :, None],
                                             SEED_KERNEL[:, :, None, None])[0, :, :, 0],
                                  np.full((3, 3), 8.0))
    pooled = layers.max_pool2d(x, 2, 2)
    np.testing.assert_array_equal(np.asarray(pooled)[0, :, :, 0], [[6, 8], [14, 16]])


# ----------------------------------------------------------------------------- conv2d

CONV_CASES = [
    # x shape, kernel shape, stride, padding, bias
    ((2, 5, 5, 1), (3, 3, 1, 2), 1, 0, False),
    ((2, 5, 5, 2), (3, 3, 2, 3), 2, 1, True),          # stride 2, padding 1
    ((1, 6, 7, 3), (2, 3, 3, 2), (2, 1), (1, 0), True),  # non-square, pair stride/padding
    ((1, 5, 6, 2), (3, 2, 2, 4), (1, 2), (0, 2), False),
    ((2, 6, 5, 2), (3, 3, 2, 2), 2, "SAME", True),
    ((1, 7, 6, 1), (2, 3, 1, 3), (2, 3), "same", False),  # odd SAME padding totals
    ((2, 6, 5, 2), (3, 2, 2, 2), (2, 1), "VALID", True),
    ((1, 4, 4, 3), (4, 4, 3, 2), 1, 0, True),            # kernel as large as the input
    ((1, 3, 3, 1), (4, 4, 1, 1), 1, 1, False),           # larger than x, fits after padding
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape,k_shape,stride,padding,use_bias", CONV_CASES)
def test_conv2d_matches_numpy_loop(x_shape, k_shape, stride, padding, use_bias, dtype):
    x, k = _rand(0, x_shape, dtype), _rand(1, k_shape, dtype)
    b = _rand(2, (k_shape[3],), dtype) if use_bias else None
    fn = lambda x, k: layers.conv2d(x, k, b, stride=stride, padding=padding)
    eager, _ = _both(fn, x, k)
    expected = conv2d_ref(x, k, b, stride, padding.upper() if isinstance(padding, str) else padding)
    assert eager.shape == expected.shape
    assert eager.dtype == dtype
    np.testing.assert_allclose(np.asarray(eager), expected, **TOL[np.dtype(dtype)])


def test_conv2d_same_keeps_ceil_size_and_promotes_dtypes():
    x = _rand(0, (1, 5, 7, 2), jnp.float32)
    k = _rand(1, (3, 3, 2, 1), jnp.float64)
    y = layers.conv2d(x, k, stride=2, padding="SAME")
    assert y.shape == (1, 3, 4, 1)
    assert y.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(y), conv2d_ref(x, k, None, 2, "SAME"), rtol=1e-12,
                               atol=1e-12)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(st.integers(1, 2), st.integers(2, 6), st.integers(2, 6), st.integers(1, 3),
       st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2),
       st.integers(1, 2), st.sampled_from([0, 1, (0, 2), "SAME", "VALID"]))
def test_conv2d_random_configs_match_numpy_loop(n, h, w, c_in, c_out, kh, kw, sh, sw, padding):
    x, k = _rand(n + h, (n, h, w, c_in)), _rand(kh + kw, (kh, kw, c_in, c_out))
    ph, pw = (0, 0) if isinstance(padding, str) else _np_pair(padding)
    if padding != "SAME" and (h + 2 * ph < kh or w + 2 * pw < kw):
        with pytest.raises(ValueError, match="conv2d: kernel spatial size"):
            layers.conv2d(x, k, stride=(sh, sw), padding=padding)
        return
    y = layers.conv2d(x, k, stride=(sh, sw), padding=padding)
    np.testing.assert_allclose(np.asarray(y), conv2d_ref(x, k, None, (sh, sw), padding),
                               rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- pooling

POOL_CASES = [
    # x shape, window, stride
    ((2, 4, 4, 3), 2, None),
    ((1, 5, 7, 2), (2, 3), None),       # non-square, trailing rows/cols dropped
    ((2, 5, 5, 1), 3, 1),               # overlapping
    ((1, 6, 5, 2), (3, 2), (2, 1)),     # overlapping, pair window/stride
    ((1, 4, 4, 1), 4, None),            # window as large as the input
    ((1, 5, 6, 2), 2, 3),               # stride > window (gaps)
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape,window,stride", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_matches_numpy_loop(kind, x_shape, window, stride, dtype):
    pool, reduce = {"max": (layers.max_pool2d, np.max), "avg": (layers.avg_pool2d, np.mean)}[kind]
    x = _rand(3, x_shape, dtype)
    eager, _ = _both(lambda x: pool(x, window, stride), x)
    expected = pool2d_ref(x, window, stride, reduce)
    assert eager.shape == expected.shape
    assert eager.dtype == dtype
    np.testing.assert_allclose(np.asarray(eager), expected, **TOL[np.dtype(dtype)])


def test_avg_pool2d_of_integers_is_float_mean():
    x = jnp.asarray(SEED_IMAGE[None, :, :, None], jnp.int32)
    y = layers.avg_pool2d(x, 2)
    assert jnp.issubdtype(y.dtype, jnp.floating)
    np.testing.assert_array_equal(np.asarray(y)[0, :, :, 0], [[3.5, 5.5], [11.5, 13.5]])


# ----------------------------------------------------------------------------- dense / flatten


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape", [(3,), (4, 3), (2, 4, 3)])
def test_dense_matches_numpy(x_shape, dtype):
    params = {"w": _rand(4, (3, 2), dtype), "b": _rand(5, (2,), dtype)}
    x = _rand(6, x_shape, dtype)
    eager, _ = _both(layers.dense, params, x)
    expected = np.asarray(x, np.float64) @ params["w"].astype(np.float64) + params["b"]
    assert eager.shape == x_shape[:-1] + (2,) and eager.dtype == dtype
    np.testing.assert_allclose(np.asarray(eager), expected, **TOL[np.dtype(dtype)])
    # A scalar bias broadcasts (models.Dense(use_bias=False) passes b = 0).
    no_bias = layers.dense({"w": params["w"], "b": jnp.zeros((), dtype)}, x)
    np.testing.assert_allclose(np.asarray(no_bias), expected - params["b"],
                               **TOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("init,var", [("glorot", 2 / 7), ("he", 2 / 3), ("lecun", 1 / 3)])
def test_init_dense_shapes_dtype_and_scale(init, var, dtype):
    params = layers.init_dense(jax.random.PRNGKey(0), 3, 4, init=init, dtype=dtype)
    assert params["w"].shape == (3, 4) and params["b"].shape == (4,)
    assert params["w"].dtype == dtype and params["b"].dtype == dtype
    np.testing.assert_array_equal(np.asarray(params["b"]), 0)
    expected = np.sqrt(var) * np.asarray(jax.random.normal(jax.random.PRNGKey(0), (3, 4), dtype))
    np.testing.assert_allclose(np.asarray(params["w"]), expected, **TOL[np.dtype(dtype)])


def test_flatten_keeps_batch_axis():
    x = jnp.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(np.asarray(layers.flatten(x)),
                                  np.arange(2 * 3 * 4 * 5.0).reshape(2, 60))
    with pytest.raises(ValueError, match=r"flatten: x must have a leading batch axis, got shape"):
        layers.flatten(jnp.float64(1.0))


# ----------------------------------------------------------------------------- batch norm

BN_SHAPES = [(5, 3), (2, 3, 2, 4)]  # (N, C) and NHWC


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("train,momentum", [(True, 0.1), (True, 0.0), (True, 1.0), (False, 0.1)])
def test_batch_norm_matches_pytorch_semantics(train, momentum, shape, dtype):
    c = shape[-1]
    x = _rand(7, shape, dtype, scale=2.0) + 0.5
    gamma, beta = _rand(8, (c,), dtype) + 1.0, _rand(9, (c,), dtype)
    running_mean = _rand(10, (c,), dtype)
    running_var = np.abs(_rand(11, (c,), dtype)) + 0.5
    eps = 1e-3
    fn = lambda x, g, b, rm, rv: layers.batch_norm(x, g, b, rm, rv, train=train,
                                                   momentum=momentum, eps=eps)
    args = (x, gamma, beta, running_mean, running_var)
    (y, (rm, rv)), (yj, (rmj, rvj)) = fn(*args), jax.jit(fn)(*args)
    y_ref, (rm_ref, rv_ref) = batch_norm_ref(*args, train, momentum, eps)
    tol = TOL[np.dtype(dtype)]
    for got, want in [(y, y_ref), (rm, rm_ref), (rv, rv_ref), (yj, y_ref), (rmj, rm_ref),
                      (rvj, rv_ref)]:
        assert got.shape == np.shape(want) and got.dtype == dtype
        np.testing.assert_allclose(np.asarray(got), want, **tol)
    if not train:
        np.testing.assert_array_equal(np.asarray(rm), running_mean)
        np.testing.assert_array_equal(np.asarray(rv), running_var)


def test_batch_norm_hand_computed_numbers():
    # One channel, x = [1, 3]: mean 2, biased var 1 (normalize), unbiased var 2 (track).
    x = jnp.array([[1.0], [3.0]])
    y, (rm, rv) = layers.batch_norm(x, jnp.ones(1), jnp.zeros(1), jnp.zeros(1), jnp.ones(1),
                                    train=True, eps=1e-5)
    np.testing.assert_allclose(np.asarray(y)[:, 0], [-1 / np.sqrt(1 + 1e-5), 1 / np.sqrt(1 + 1e-5)],
                               rtol=1e-14)
    np.testing.assert_allclose(np.asarray(rm), [0.9 * 0 + 0.1 * 2], rtol=1e-14)
    np.testing.assert_allclose(np.asarray(rv), [0.9 * 1 + 0.1 * 2], rtol=1e-14)
    y_eval, _ = layers.batch_norm(x, jnp.full(1, 2.0), jnp.full(1, 1.0), rm, rv, train=False,
                                  eps=1e-5)
    np.testing.assert_allclose(np.asarray(y_eval)[:, 0],
                               2 * (np.array([1.0, 3.0]) - 0.2) / np.sqrt(1.1 + 1e-5) + 1,
                               rtol=1e-14)


def test_batch_norm_running_stats_keep_dtype_through_scan():
    # float64 activations, float32 running buffers: the carry's dtype must not change.
    xs = _rand(12, (4, 6, 2))
    gamma, beta = jnp.ones(2), jnp.zeros(2)

    def step(stats, x):
        y, stats = layers.batch_norm(x, gamma, beta, *stats, train=True, momentum=0.5)
        return stats, y

    init = (jnp.zeros(2, jnp.float32), jnp.ones(2, jnp.float32))
    (rm, rv), ys = jax.lax.scan(step, init, xs)
    assert rm.dtype == rv.dtype == jnp.float32 and ys.shape == xs.shape
    rm_ref, rv_ref = np.zeros(2), np.ones(2)
    for x in xs:
        _, (rm_ref, rv_ref) = batch_norm_ref(x, 1.0, 0.0, rm_ref, rv_ref, True, 0.5, 1e-5)
    np.testing.assert_allclose(np.asarray(rm), rm_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(rv), rv_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_input_grad_matches_vjp(shape, dtype):
    c = shape[-1]
    x = _rand(13, shape, dtype, scale=3.0) - 1.0
    gamma, beta = _rand(14, (c,), dtype) + 1.0, _rand(15, (c,), dtype)
    dy = _rand(16, shape, dtype)
    eps = 1e-5
    forward = lambda x: layers.batch_norm(x, gamma, beta, jnp.zeros(c, dtype), jnp.ones(c, dtype),
                                          train=True, eps=eps)[0]
    (expected,) = jax.jit(lambda x, dy: jax.vjp(forward, x)[1](dy))(x, dy)
    closed, _ = _both(lambda x, dy: layers.batch_norm_input_grad(x, gamma, dy, eps=eps), x, dy)
    assert closed.shape == shape and closed.dtype == dtype
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == jnp.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(closed), np.asarray(expected), **tol)


def test_batch_norm_input_grad_matches_seed_backward():
    x, gamma, dy = _rand(17, (6, 3), scale=2.0), _rand(18, (3,)) + 1.0, _rand(19, (6, 3))
    for eps in (1e-8, 1e-5):  # the seed uses eps = 1e-8
        np.testing.assert_allclose(np.asarray(layers.batch_norm_input_grad(x, gamma, dy, eps=eps)),
                                   seed_batch_norm_backward(x, gamma, dy, eps), rtol=1e-10,
                                   atol=1e-12)
    # ... and the seed's formula is not trivially satisfied: a wrong dy gives a different dx.
    wrong = layers.batch_norm_input_grad(x, gamma, dy + _rand(20, (6, 3)))
    assert not np.allclose(np.asarray(wrong), seed_batch_norm_backward(x, gamma, dy, 1e-5))


# ----------------------------------------------------------------------------- gradients vs FD


def _check_fd(loss, *args):
    """``jax.grad`` of ``loss`` w.r.t. every argument vs central finite differences (one jit)."""
    args = tuple(jnp.asarray(a, jnp.float64) for a in args)

    @jax.jit
    def grads_and_fds(*args):
        grads = jax.grad(loss, argnums=tuple(range(len(args))))(*args)
        fds = tuple(fd_grad(lambda a, i=i: loss(*args[:i], a, *args[i + 1:]), args[i])
                    for i in range(len(args)))
        return grads, fds

    for g, fd in zip(*grads_and_fds(*args)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(fd), **FD_TOL)
        assert np.any(np.asarray(g) != 0)


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), ((2, 1), "SAME")])
def test_conv2d_gradients_match_finite_differences(stride, padding):
    x, k, b = _rand(21, (1, 5, 4, 2)), _rand(22, (3, 2, 2, 2)), _rand(23, (2,))
    out_shape = layers.conv2d(x, k, b, stride=stride, padding=padding).shape
    c = _rand(24, out_shape)

    def loss(x, k, b):
        y = layers.conv2d(x, k, b, stride=stride, padding=padding)
        return jnp.sum(c * y + 0.25 * y ** 2)

    _check_fd(loss, x, k, b)


@pytest.mark.parametrize("window,stride", [(2, None), (3, 1), ((2, 3), (1, 2))])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_gradients_match_finite_differences(kind, window, stride):
    pool = {"max": layers.max_pool2d, "avg": layers.avg_pool2d}[kind]
    x = jnp.asarray(_tie_free(25, (2, 5, 5, 2)))
    c = _rand(26, pool(x, window, stride).shape)
    _check_fd(lambda x: jnp.sum(c * pool(x, window, stride) + pool(x, window, stride) ** 2), x)


@pytest.mark.parametrize("pool", [layers.max_pool2d, layers.avg_pool2d])
def test_pool_is_differentiable_twice_under_jit(pool):
    # Regression: a jnp identity value is staged under jit, reduce_window then took its generic
    # (not reverse-differentiable) form and jax.jit(jax.grad(...)) raised.
    x = jnp.asarray(_tie_free(27, (1, 4, 4, 1)))
    f = lambda x: jnp.sum(pool(x, 2) ** 3)
    g_eager, g_jit = jax.grad(f)(x), jax.jit(jax.grad(f))(x)
    np.testing.assert_allclose(np.asarray(g_jit), np.asarray(g_eager), rtol=1e-12)
    hvp = jax.jit(lambda x, v: jax.jvp(jax.grad(f), (x,), (v,))[1])(x, jnp.ones_like(x))
    assert hvp.shape == x.shape and np.any(np.asarray(hvp) != 0)


def test_max_pool2d_gradient_goes_to_the_window_max():
    x = jnp.asarray(SEED_IMAGE[None, :, :, None], jnp.float64)
    g = jax.grad(lambda x: jnp.sum(layers.max_pool2d(x, 2)))(x)
    expected = np.zeros((4, 4))
    expected[[1, 1, 3, 3], [1, 3, 1, 3]] = 1.0
    np.testing.assert_array_equal(np.asarray(g)[0, :, :, 0], expected)


def test_dense_gradients_match_finite_differences():
    x, w, b = _rand(27, (4, 3)), _rand(28, (3, 2)), _rand(29, (2,))
    c = _rand(30, (4, 2))
    loss = lambda x, w, b: jnp.sum(c * jnp.tanh(layers.dense({"w": w, "b": b}, x)))
    _check_fd(loss, x, w, b)


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_gradients_match_finite_differences(shape, train):
    ch = shape[-1]
    x = _rand(31, shape, scale=2.0)
    gamma, beta = _rand(32, (ch,)) + 1.0, _rand(33, (ch,))
    rm, rv = _rand(34, (ch,)), np.abs(_rand(35, (ch,))) + 0.5
    c = _rand(36, shape)

    def loss(x, gamma, beta):
        y, (new_mean, new_var) = layers.batch_norm(x, gamma, beta, rm, rv, train=train)
        return jnp.sum(c * y + 0.1 * y ** 3) + jnp.sum(new_mean + new_var)

    _check_fd(loss, x, gamma, beta)


# ----------------------------------------------------------------------------- extreme inputs


def _extreme(seed, shape, dtype):
    signs = np.where(np.random.default_rng(seed).random(shape) < 0.5, -1.0, 1.0)
    return (1e4 * signs * (1 + 0.01 * np.random.default_rng(seed + 1).random(shape))).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_finite_outputs_and_gradients_for_extreme_inputs(dtype):
    x = _extreme(40, (2, 4, 4, 2), dtype)
    k, b = _rand(41, (2, 2, 2, 3), dtype), _rand(42, (3,), dtype)
    gamma, beta = jnp.ones(2, dtype), jnp.zeros(2, dtype)
    rm, rv = jnp.zeros(2, dtype), jnp.ones(2, dtype)
    w = _rand(43, (2, 3), dtype)
    fns = {
        "conv2d": lambda x, p: layers.conv2d(x, p, b, stride=1, padding=1),
        "max_pool2d": lambda x, p: layers.max_pool2d(x * p[0, 0, 0, 0], 2),
        "avg_pool2d": lambda x, p: layers.avg_pool2d(x * p[0, 0, 0, 0], (2, 3), 1),
        "dense": lambda x, p: layers.dense({"w": w * p[0, 0, 0, 0], "b": b}, x),
        "batch_norm_train": lambda x, p: layers.batch_norm(x, gamma * p[0, 0, 0, 0], beta, rm, rv,
                                                           train=True)[0],
        "batch_norm_eval": lambda x, p: layers.batch_norm(x, gamma * p[0, 0, 0, 0], beta, rm, rv,
                                                          train=False)[0],
    }

    @jax.jit
    def outputs_and_grads(x, k):
        grad = jax.grad(lambda x, p, fn: jnp.mean(fn(x, p) ** 2), argnums=(0, 1))
        return {name: (fn(x, k),) + grad(x, k, fn) for name, fn in fns.items()}

    for name, arrays in outputs_and_grads(x, k).items():
        for what, arr in zip(["output", "grad x", "grad params"], arrays):
            assert arr.dtype == dtype, (name, what)
            assert np.all(np.isfinite(np.asarray(arr))), (name, what)
        assert np.any(np.asarray(arrays[1]) != 0), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_constant_channel_has_finite_gradients(dtype):
    x = jnp.ones((4, 2), dtype).at[:, 1].set(jnp.arange(4, dtype=dtype))  # channel 0 constant
    gamma, beta = jnp.ones(2, dtype), jnp.zeros(2, dtype)

    def loss(x, gamma):
        rm, rv = jnp.zeros(2, dtype), jnp.ones(2, dtype)
        y, _ = layers.batch_norm(x, gamma, beta, rm, rv, train=True)
        return jnp.sum(jnp.arange(8, dtype=dtype).reshape(4, 2) * y)

    gx, gg = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, gamma)
    assert np.all(np.isfinite(np.asarray(gx))) and np.all(np.isfinite(np.asarray(gg)))
    np.testing.assert_allclose(np.asarray(gx), np.asarray(layers.batch_norm_input_grad(
        x, gamma, jnp.arange(8, dtype=dtype).reshape(4, 2))), **TOL[np.dtype(dtype)])


# ----------------------------------------------------------------------------- bad input

X4 = np.zeros((1, 4, 4, 2))
K = np.zeros((2, 2, 2, 3))
BN_X = np.zeros((5, 3))
C3 = np.ones(3)
C4 = np.ones(4)

BAD_INPUTS = [
    # (fn, array args, static kwargs, exception, message regex)
    (layers.conv2d, (np.zeros((4, 4, 2)), K), {}, ValueError,
     r"conv2d: x must be 4-D \(N, H, W, C_in\), got shape \(4, 4, 2\)"),
    (layers.conv2d, (X4, np.zeros((2, 2, 2))), {}, ValueError,
     r"conv2d: kernel must be 4-D \(KH, KW, C_in, C_out\), got shape \(2, 2, 2\)"),
    (layers.conv2d, (X4, np.zeros((2, 2, 3, 3))), {}, ValueError,
     r"conv2d: kernel must have shape \(KH, KW, 2, C_out\) .* got kernel shape \(2, 2, 3, 3\)"),
    (layers.conv2d, (X4, np.zeros((5, 2, 2, 3))), {}, ValueError,
     r"conv2d: kernel spatial size \(KH, KW\) = \(5, 2\) must fit in the padded input "
     r".* = \(4, 4\)"),
    (layers.conv2d, (X4, np.zeros((2, 5, 2, 3))), {"padding": "VALID"}, ValueError,
     r"conv2d: kernel spatial size \(KH, KW\) = \(2, 5\) must fit"),
    (layers.conv2d, (X4, K, np.zeros(2)), {}, ValueError,
     r"conv2d: bias must have shape \(3,\) \(C_out\), got \(2,\)"),
    (layers.conv2d, (X4, K, np.zeros((1, 3))), {}, ValueError,
     r"conv2d: bias must have shape \(3,\) \(C_out\), got \(1, 3\)"),
    (layers.conv2d, (X4, K), {"stride": 1.5}, TypeError,
     r"conv2d: stride must be an int or a pair of ints \(h, w\), got 1.5"),
    (layers.conv2d, (X4, K), {"stride": (1, 2, 3)}, TypeError, r"conv2d: stride must be an int"),
    (layers.conv2d, (X4, K), {"stride": True}, TypeError, r"conv2d: stride must be an int"),
    (layers.conv2d, (X4, K), {"stride": 0}, ValueError, r"conv2d: stride must be >= 1, got 0"),
    (layers.conv2d, (X4, K), {"padding": 1.0}, TypeError,
     r"conv2d: padding must be an int, a pair of ints \(p_h, p_w\), 'SAME' or 'VALID', got 1.0"),
    (layers.conv2d, (X4, K), {"padding": (1,)}, TypeError, r"conv2d: padding must be an int"),
    (layers.conv2d, (X4, K), {"padding": "FULL"}, ValueError,
     r"conv2d: padding must be .* got 'FULL'"),
    (layers.conv2d, (X4, K), {"padding": (1, -1)}, ValueError, r"conv2d: padding must be >= 0"),
    (layers.max_pool2d, (X4,), {"window": 5}, ValueError,
     r"max_pool2d: window \(5, 5\) must fit in the input's spatial shape \(H, W\) = \(4, 4\)"),
    (layers.avg_pool2d, (X4,), {"window": (2, 5)}, ValueError,
     r"avg_pool2d: window \(2, 5\) must fit in the input's spatial shape \(H, W\) = \(4, 4\)"),
    (layers.max_pool2d, (np.zeros((4, 4, 2)),), {}, ValueError,
     r"max_pool2d: x must be 4-D \(N, H, W, C\), got shape \(4, 4, 2\)"),
    (layers.max_pool2d, (X4,), {"stride": "2"}, TypeError,
     r"max_pool2d: stride must be an int or a pair of ints"),
    (layers.avg_pool2d, (X4,), {"window": 0}, ValueError, r"avg_pool2d: window must be >= 1"),
    (layers.dense, ({"w": np.zeros((4, 2)), "b": np.zeros(2)}, np.zeros((5, 3))), {}, ValueError,
     r"dense: x must have shape \(\.\.\., 4\) to match params\['w'\] of shape \(4, 2\), "
     r"got \(5, 3\)"),
    (layers.dense, ({"w": np.zeros((3, 2)), "b": np.zeros(3)}, np.zeros((5, 3))), {}, ValueError,
     r"dense: params\['b'\] must have shape \(2,\) \(out_features\) or be a scalar, got \(3,\)"),
    (layers.dense, ({"w": np.zeros(3), "b": np.zeros(())}, np.zeros((5, 3))), {}, ValueError,
     r"dense: params\['w'\] must be 2-D \(in_features, out_features\), got shape \(3,\)"),
    (layers.batch_norm, (BN_X, C4, C3, C3, C3), {"train": True}, ValueError,
     r"batch_norm: gamma must have shape \(3,\) \(C, x's last axis; x shape \(5, 3\)\), "
     r"got \(4,\)"),
    (layers.batch_norm, (BN_X, C3, C4, C3, C3), {"train": True}, ValueError,
     r"batch_norm: beta must have shape \(3,\)"),
    (layers.batch_norm, (BN_X, C3, C3, C3[None], C3), {"train": False}, ValueError,
     r"batch_norm: running_mean must have shape \(3,\) .* got \(1, 3\)"),
    (layers.batch_norm, (BN_X, C3, C3, C3, C4), {"train": False}, ValueError,
     r"batch_norm: running_var must have shape \(3,\)"),
    (layers.batch_norm, (np.zeros(3), C3, C3, C3, C3), {"train": True}, ValueError,
     r"batch_norm: x must be at least 2-D \(N, C\) or \(N, H, W, C\), got shape \(3,\)"),
    (layers.batch_norm, (np.zeros((1, 3)), C3, C3, C3, C3), {"train": True}, ValueError,
     r"batch_norm: train mode needs more than one value per channel"),
    (layers.batch_norm, (BN_X, C3, C3, C3, C3), {"train": "yes"}, TypeError,
     r"batch_norm: train must be a static Python bool, got 'yes'"),
    (layers.batch_norm, (BN_X, C3, C3, C3, C3), {"train": True, "momentum": 1.5}, ValueError,
     r"batch_norm: momentum must be in \[0, 1\], got 1.5"),
    (layers.batch_norm, (BN_X, C3, C3, C3, C3), {"train": True, "eps": 0.0}, ValueError,
     r"batch_norm: eps must be > 0, got 0.0"),
    (layers.batch_norm_input_grad, (BN_X, C3, np.zeros((5, 4))), {}, ValueError,
     r"batch_norm_input_grad: dy must have x's shape \(5, 3\), got \(5, 4\)"),
    (layers.batch_norm_input_grad, (BN_X, C4, BN_X), {}, ValueError,
     r"batch_norm_input_grad: gamma must have shape \(3,\)"),
]


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("fn,args,kwargs,exc,match", BAD_INPUTS)
def test_bad_input_raises_clear_error_at_trace_time(fn, args, kwargs, exc, match, use_jit):
    call = lambda *a: fn(*a, **kwargs)
    if use_jit:
        call = jax.jit(call)
    with pytest.raises(exc, match=match):
        call(*args)


def test_traced_train_flag_is_rejected_under_jit():
    fn = jax.jit(lambda x, t: layers.batch_norm(x, C3, C3, C3, C3, train=t))
    with pytest.raises(TypeError, match="batch_norm: train must be a static Python bool"):
        fn(BN_X, True)


def test_numpy_integer_strides_and_paddings_are_accepted():
    x, k = _rand(50, (1, 5, 5, 2)), _rand(51, (3, 3, 2, 1))
    y = layers.conv2d(x, k, stride=np.int64(2), padding=(np.int32(1), 0))
    np.testing.assert_allclose(np.asarray(y), conv2d_ref(x, k, None, 2, (1, 0)), rtol=1e-12,
                               atol=1e-12)
    assert layers.max_pool2d(x, np.int64(2)).shape == (1, 2, 2, 2)
