"""Property-based tests (hypothesis) of jaxcalc.layers, rnn, signal and models (issue #8).

Inputs are small arrays whose entries mix ordinary values with the hard ones: ``±1e4``,
``±1e-30``, ``±0``, subnormals (``1e-40`` in float32, ``1e-310`` in float64) and ``±1``, in
float32 and float64. For every public layer, cell and signal function the properties are:
values and gradients are finite (the math is finite on all of these inputs), the output dtype
follows the inputs', and the closed form (a NumPy reference, a linear map's adjoint, the
batch-norm input gradient, Parseval's identity) equals what JAX computes and differentiates.

Tolerances are forward-error bounds, not guesses: a sum of ``n`` products ``a_i b_i`` computed
in a dtype with machine epsilon ``eps`` is within ``γ_n Σ|a_i b_i|`` (``γ_n ≈ n eps / 2``;
Higham, *Accuracy and Stability of Numerical Algorithms*, 2002, §3.1) of the exact sum, for any
summation order. ``_bound`` doubles that (the float64 reference has its own round-off) and adds
``n · tiny`` per sum, because XLA on CPU flushes subnormals to zero (the references flush their
inputs the same way, ``_daz``).

Each property is written once (``check_*``) and run twice: a fast test with the default
hypothesis profile (``ci``, 25 examples) and a ``@pytest.mark.thorough`` twin with many more
(``pytest -m thorough``; 4,400 examples over this file). Shapes come from short fixed lists and
the jitted functions are module-level, so each (function, shape, dtype) compiles once per
session however many examples run.
"""

import functools

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcalc import layers, models, rnn, signal

DTYPES = (np.float32, np.float64)
SUBNORMAL = {np.float32: 1e-40, np.float64: 1e-310}
THOROUGH = 500  # examples per thorough twin (8 × 500 + 2 × 200 = 4,400 in all)


# ----------------------------------------------------------------------------- strategies


def _specials(dtype):
    values = [0.0, -0.0, 1.0, -1.0, 1e4, -1e4, 1e-30, -1e-30, SUBNORMAL[dtype],
              -SUBNORMAL[dtype]]
    return [float(dtype(v)) for v in values]  # exactly representable in dtype


def values(dtype, shape, *, bound=1e4):
    """Arrays of ``shape`` mixing the special values with uniform floats in ``[-bound, bound]``."""
    width = 32 if dtype == np.float32 else 64
    elements = st.one_of(st.sampled_from(_specials(dtype)),
                         st.floats(-bound, bound, allow_nan=False, width=width))
    return hnp.arrays(dtype, shape, elements=elements)


def _daz(a):
    """Subnormals flushed to zero, as XLA's CPU kernels do, then float64 for the reference."""
    a = np.asarray(a)
    return np.where(np.abs(a) < np.finfo(a.dtype).tiny, 0, a).astype(np.float64)


def _bound(dtype, n_terms, scale):
    """Round-off bound of a float sum of ``n_terms`` terms whose absolute values sum to
    ``scale`` (see the module docstring): ``2 n eps scale + 2 n tiny``."""
    fi = np.finfo(dtype)
    return 2 * n_terms * fi.eps * np.asarray(scale) + 2 * n_terms * fi.tiny


def assert_within(got, want, bound, what=""):
    """``|got - want| <= bound + tiny`` elementwise: any result below ``finfo(got).tiny`` may
    have been flushed to 0 (a bound built from tiny values can itself underflow to 0)."""
    tiny = np.finfo(np.asarray(got).dtype).tiny
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got - want)
    assert np.all(err <= bound + tiny), (what, float(np.max(err - bound - tiny)), got, want)


def assert_finite_with_dtype(tree, dtype, what=""):
    for leaf in jax.tree_util.tree_leaves(tree):
        assert leaf.dtype == dtype, (what, leaf.dtype, dtype)
        assert np.all(np.isfinite(np.asarray(leaf))), (what, leaf)


def twice(check, strategy, examples=THOROUGH):
    """A fast test (default profile) and its ``thorough`` twin, both running ``check``."""
    fast = given(strategy)(check)
    thorough = pytest.mark.thorough(settings(max_examples=examples)(given(strategy)(check)))
    return fast, thorough


# ----------------------------------------------------------------------------- dense

DENSE_SHAPES = [((4, 3), 2), ((2, 2, 3), 1), ((3,), 2)]  # (x shape, out_features)


@jax.jit
def _dense_vjp(x, w, b, ct):
    y, vjp = jax.vjp(lambda x, w, b: layers.dense({"w": w, "b": b}, x), x, w, b)
    return y, vjp(ct)


@st.composite
def dense_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    x_shape, out = draw(st.sampled_from(DENSE_SHAPES))
    n_in = x_shape[-1]
    return (draw(values(dtype, x_shape)), draw(values(dtype, (n_in, out))),
            draw(values(dtype, (out,))), draw(values(dtype, x_shape[:-1] + (out,))))


def check_dense(case):
    """``y = x W + b`` and its VJP ``(ct Wᵀ, xᵀ ct, Σ ct)`` against NumPy; finite; dtype."""
    x, w, b, ct = case
    dtype = x.dtype.type
    y, (gx, gw, gb) = _dense_vjp(x, w, b, ct)
    assert_finite_with_dtype((y, gx, gw, gb), dtype, "dense")
    X, W, B, C = map(_daz, (x, w, b, ct))
    n_in, batch = W.shape[0], max(int(np.prod(X.shape[:-1])), 1)
    assert_within(y, X @ W + B, _bound(dtype, n_in + 1, np.abs(X) @ np.abs(W) + np.abs(B)), "y")
    assert_within(gx, C @ W.T, _bound(dtype, W.shape[1], np.abs(C) @ np.abs(W).T), "grad x")
    X2, C2 = X.reshape(-1, n_in), C.reshape(-1, W.shape[1])
    assert_within(gw, X2.T @ C2, _bound(dtype, batch, np.abs(X2).T @ np.abs(C2)), "grad w")
    assert_within(gb, C2.sum(0), _bound(dtype, batch, np.abs(C2).sum(0)), "grad b")


test_dense_property, test_dense_property_thorough = twice(check_dense, dense_cases())


# ----------------------------------------------------------------------------- conv2d

CONV_CONFIGS = [
    # x shape, kernel shape, stride, padding
    ((1, 4, 4, 2), (2, 2, 2, 3), 1, 0),
    ((2, 5, 4, 1), (3, 2, 1, 2), (2, 1), "SAME"),
    ((1, 3, 3, 2), (2, 2, 2, 1), 2, 1),
]


@functools.partial(jax.jit, static_argnames=("stride", "padding"))
def _conv_vjp(x, k, b, ct, *, stride, padding):
    conv = lambda x, k, b: layers.conv2d(x, k, b, stride=stride, padding=padding)
    y, vjp = jax.vjp(conv, x, k, b)
    return y, vjp(ct)


def _conv_ref(x, k, stride, padding):
    """NumPy cross-correlation: pad, take strided (KH, KW) windows, contract with the kernel."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    kh, kw = k.shape[:2]
    if padding == "SAME":
        pads = []
        for n, kk, s in zip(x.shape[1:3], (kh, kw), (sh, sw)):
            total = max((-(-n // s) - 1) * s + kk - n, 0)
            pads.append((total // 2, total - total // 2))
    else:
        p = (padding, padding) if isinstance(padding, int) else padding
        pads = [(p[0], p[0]), (p[1], p[1])]
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    return np.einsum("nijckl,klco->nijo", win, k)


@st.composite
def conv_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    x_shape, k_shape, stride, padding = draw(st.sampled_from(CONV_CONFIGS))
    x, k = draw(values(dtype, x_shape)), draw(values(dtype, k_shape))
    b = draw(values(dtype, k_shape[3:]))
    out_shape = _conv_ref(np.zeros(x_shape), np.zeros(k_shape), stride, padding).shape
    return x, k, b, draw(values(dtype, out_shape)), stride, padding


def check_conv2d(case):
    """``conv2d`` against a NumPy cross-correlation; its VJP against the adjoint identities
    ``<y - b, ct> = <x, ∂x> = <K, ∂K>`` and ``∂b = Σ ct``; finite; dtype."""
    x, k, b, ct, stride, padding = case
    dtype = x.dtype.type
    y, (gx, gk, gb) = _conv_vjp(x, k, b, ct, stride=stride, padding=padding)
    assert_finite_with_dtype((y, gx, gk, gb), dtype, "conv2d")
    X, Kr, B, C = map(_daz, (x, k, b, ct))
    n = int(np.prod(k.shape[:3]))
    scale = _conv_ref(np.abs(X), np.abs(Kr), stride, padding)
    assert_within(y, _conv_ref(X, Kr, stride, padding) + B, _bound(dtype, n + 1, scale + abs(B)))
    inner = np.sum((np.asarray(y, np.float64) - B) * C)
    # <x, ∂x> and <K, ∂K> are sums of the same n·size(y) products as <y - b, ct>, regrouped.
    total = np.sum((scale + np.abs(B)) * np.abs(C))
    terms = n * C.size
    # Underflow: an entry of ∂x (a sum of K.size products) flushed to 0 loses <= K.size·tiny,
    # then weighted by |x|; likewise ∂K (C.size products) by |K| and y by |ct|.
    tiny = np.finfo(dtype).tiny
    flushed = tiny * (Kr.size * np.abs(X).sum() + C.size * np.abs(Kr).sum()
                      + (n + 1) * np.abs(C).sum())
    for g, a in ((gx, X), (gk, Kr)):
        assert_within(np.sum(np.asarray(g, np.float64) * a), inner,
                      _bound(dtype, terms, total) * 2 + 2 * flushed, "adjoint")
    assert_within(gb, C.sum((0, 1, 2)), _bound(dtype, C.size, np.abs(C).sum((0, 1, 2))), "∂b")


test_conv2d_property, test_conv2d_property_thorough = twice(check_conv2d, conv_cases())


# ----------------------------------------------------------------------------- pooling

POOL_CONFIGS = [((1, 4, 4, 2), 2, None), ((2, 5, 5, 1), 3, 1), ((1, 4, 5, 2), (2, 3), (1, 2))]


@functools.partial(jax.jit, static_argnames=("kind", "window", "stride"))
def _pool_vjp(x, ct, *, kind, window, stride):
    pool = {"max": layers.max_pool2d, "avg": layers.avg_pool2d}[kind]
    y, vjp = jax.vjp(lambda x: pool(x, window, stride), x)
    return y, vjp(ct)[0]


def _windows(x, window, stride):
    wh, ww = (window, window) if isinstance(window, int) else window
    sh, sw = (wh, ww) if stride is None else ((stride, stride) if isinstance(stride, int)
                                              else stride)
    win = np.lib.stride_tricks.sliding_window_view(x, (wh, ww), axis=(1, 2))
    return win[:, ::sh, ::sw]  # (N, H_out, W_out, C, wh, ww)


@st.composite
def pool_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["max", "avg"]))
    x_shape, window, stride = draw(st.sampled_from(POOL_CONFIGS))
    x = draw(values(dtype, x_shape))
    out_shape = _windows(np.zeros(x_shape), window, stride).shape[:4]
    return kind, x, draw(values(dtype, out_shape)), window, stride


def check_pool(case):
    """Max pooling equals the NumPy window max exactly (up to flushed subnormals) and satisfies Euler's identity
    ``<y, ct> = <x, ∂x>`` (it is positively homogeneous, also with ties); average pooling
    equals the NumPy window mean and ``<y, ct> = <x, ∂x>`` (it is linear); finite; dtype."""
    kind, x, ct, window, stride = case
    dtype = x.dtype.type
    y, gx = _pool_vjp(x, ct, kind=kind, window=window, stride=stride)
    assert_finite_with_dtype((y, gx), dtype, kind)
    X, C = _daz(x), _daz(ct)
    win = _windows(X, window, stride)
    size = win.shape[-1] * win.shape[-2]
    if kind == "max":
        assert_within(y, win.max(axis=(-2, -1)), np.finfo(dtype).tiny, "max")
        scale, terms = np.sum(np.abs(win.max(axis=(-2, -1))) * np.abs(C)), C.size
    else:
        mean_scale = np.abs(win).mean(axis=(-2, -1))
        assert_within(y, win.mean(axis=(-2, -1)), _bound(dtype, size + 1, mean_scale), "mean")
        scale, terms = np.sum(mean_scale * np.abs(C)), C.size * (size + 1)
    inner = np.sum(np.asarray(y, np.float64) * C)
    # Underflow: an entry of ∂x (at most `size` contributions ct/size) flushed to 0 loses
    # <= size·tiny, then weighted by |x|; an entry of y loses <= (size + 1)·tiny, weighted by |ct|.
    flushed = np.finfo(dtype).tiny * (size * np.abs(X).sum() + (size + 1) * np.abs(C).sum())
    assert_within(np.sum(np.asarray(gx, np.float64) * X), inner,
                  2 * _bound(dtype, terms, scale) + 2 * flushed, "adjoint")


test_pool_property, test_pool_property_thorough = twice(check_pool, pool_cases())


# ----------------------------------------------------------------------------- flatten


@jax.jit
def _flatten_vjp(x, ct):
    y, vjp = jax.vjp(layers.flatten, x)
    return y, vjp(ct)[0]


@st.composite
def flatten_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.sampled_from([(2, 3), (1, 2, 2, 3), (3,)]))
    size = int(np.prod(shape[1:]))
    return draw(values(dtype, shape)), draw(values(dtype, (shape[0], size)))


def check_flatten(case):
    """``flatten`` is a reshape: exact values, exact (reshaped) cotangent, dtype kept."""
    x, ct = case
    y, gx = _flatten_vjp(x, ct)
    assert y.dtype == gx.dtype == x.dtype
    # No arithmetic, so no flushing either: subnormals come through bit for bit.
    np.testing.assert_array_equal(np.asarray(y), x.reshape(x.shape[0], -1))
    np.testing.assert_array_equal(np.asarray(gx), ct.reshape(x.shape))


test_flatten_property, test_flatten_property_thorough = twice(check_flatten, flatten_cases(),
                                                              examples=200)


# ----------------------------------------------------------------------------- batch norm

BN_SHAPES = [(4, 3), (2, 2, 2, 2), (2, 1)]
BN_EPS = 1e-5


@jax.jit
def _batch_norm_all(x, gamma, beta, rm, rv, dy):
    """Train mode: output, statistics, VJP and the closed-form input gradient; eval mode:
    output and VJP."""
    def train(x, gamma, beta):
        return layers.batch_norm(x, gamma, beta, rm, rv, train=True, eps=BN_EPS)

    def evaluate(x, gamma, beta):
        return layers.batch_norm(x, gamma, beta, rm, rv, train=False, eps=BN_EPS)[0]

    (y, stats), vjp = jax.vjp(train, x, gamma, beta)
    grads = vjp((dy, jax.tree_util.tree_map(jnp.zeros_like, stats)))
    closed = layers.batch_norm_input_grad(x, gamma, dy, eps=BN_EPS)
    y_eval, vjp_eval = jax.vjp(evaluate, x, gamma, beta)
    return (y, stats, grads, closed), (y_eval, vjp_eval(dy))


@st.composite
def bn_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.sampled_from(BN_SHAPES))
    c = shape[-1]
    x, dy = draw(values(dtype, shape)), draw(values(dtype, shape))
    gamma, beta, rm = (draw(values(dtype, (c,))) for _ in range(3))
    rv = np.abs(draw(values(dtype, (c,))))  # a variance is >= 0
    return x, gamma, beta, rm, rv, dy


def _normalized_ref(X):
    """``(x - μ)/σ`` and ``σ`` per channel in extended precision, from exact differences to
    the first entry (a channel with a spread of 1e-12 around 1e4 is still resolved)."""
    X = X.astype(np.longdouble)
    axes = tuple(range(X.ndim - 1))
    d = X - X.reshape(-1, X.shape[-1])[0]
    centered = d - d.mean(axis=axes)
    sigma = np.sqrt(np.mean(centered ** 2, axis=axes) + BN_EPS)
    return centered / sigma, sigma


def check_batch_norm(case):
    """Train and eval mode: outputs, running statistics and gradients finite, dtype kept;
    the train-mode output equals ``γ x̂ + β`` computed in extended precision (also for a
    channel whose spread is tiny against its offset); ``batch_norm_input_grad`` equals the
    autodiff VJP of train-mode ``batch_norm``."""
    x, gamma, beta, rm, rv, dy = case
    dtype = x.dtype.type
    (y, stats, grads, closed), evaluated = _batch_norm_all(x, gamma, beta, rm, rv, dy)
    assert_finite_with_dtype((y, stats, grads, closed), dtype, "batch_norm train")
    assert_finite_with_dtype(evaluated, dtype, "batch_norm eval")
    X, G, B, D = _daz(x), _daz(gamma), _daz(beta), _daz(dy)
    axes = tuple(range(x.ndim - 1))
    m = int(np.prod(x.shape[:-1]))
    x_hat, sigma = _normalized_ref(X)
    sigma = sigma.astype(np.float64)
    # x - μ is accurate to O(m eps) times the spread, σ to O(m eps) relative, |x̂| <= sqrt(m).
    # Underflow: an intermediate flushed to 0 (<= tiny per term of an m-term sum) is then
    # multiplied by at most |γ|, 1/σ and |dy|, and in autodiff's backward pass by 2|x - μ|
    # (∂σ²/∂x): e.g. float32, σ = 4e3, dy = 1e-30 makes ∂L/∂σ² ~ 1e-38, and autodiff's ∂x is
    # then 25% off where the closed form is exact. It matters only near the bottom of the range.
    tiny, max_dy = np.finfo(dtype).tiny, np.max(np.abs(D), axis=axes)
    spread = np.max(np.abs(X - X.mean(axis=axes)), axis=axes)
    floor = 8 * m * tiny * (1 + np.abs(G)) * (1 + 1 / sigma)
    assert_within(y, np.asarray(G * x_hat + B, np.float64),
                  _bound(dtype, 4 * m, np.abs(G) * (1 + np.sqrt(m))) + _bound(dtype, 1, np.abs(B))
                  + floor, "y")
    # The closed form and autodiff differ only by round-off: both are γ/σ times O(m)-term sums
    # of |dy| and |dy x̂|.
    scale = np.abs(G) / sigma * max_dy * (1 + np.sqrt(m))
    assert_within(closed, np.asarray(grads[0]), _bound(dtype, 4 * m, scale)
                  + floor * (1 + max_dy) * (1 + 2 * spread), "closed form")


test_batch_norm_property, test_batch_norm_property_thorough = twice(check_batch_norm,
                                                                    bn_cases())


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_channel_far_from_zero(dtype):
    """Regression (found by ``check_batch_norm``): the plain mean of 8 copies of 6554.2285 in
    float32 is one ulp off, so ``x - μ`` was ±4.9e-4 and a constant channel normalized to
    0.15 instead of 0, and a spread of 0.01 around it to errors of 0.03. Now exact / 1e-7."""
    x = np.full((2, 2, 2, 2), 6554.2285, dtype)
    x[..., 1] += np.linspace(0.0, 0.01, 8).reshape(2, 2, 2).astype(dtype)
    ones, zeros = np.ones(2, dtype), np.zeros(2, dtype)
    y = _batch_norm_all(x, ones, zeros, zeros, ones, np.ones_like(x))[0][0]
    np.testing.assert_array_equal(np.asarray(y[..., 0]), 0)
    x_hat, _ = _normalized_ref(x.astype(np.float64))
    assert_within(y[..., 1], x_hat[..., 1].astype(np.float64), _bound(dtype, 4 * 8, 1 + 8 ** 0.5))


# ----------------------------------------------------------------------------- rnn cells

CELLS = {"rnn": (rnn.rnn_cell, 1), "lstm": (rnn.lstm_cell, 4), "gru": (rnn.gru_cell, 3)}
CELL_SHAPES = [(2, 3, 2), (1, 1, 3)]  # (batch, features, hidden)


def _cell_params(name, features, hidden, seed, dtype, factor=1.0):
    """Params in ``init_<name>_cell``'s layout and scale, ``U(-1/√H, 1/√H)``, times ``factor``;
    drawn with NumPy (no JAX work per example)."""
    gates = CELLS[name][1]
    shapes = {"w_x": (features, gates * hidden), "w_h": (hidden, gates * hidden)}
    shapes.update({"b_x": (3 * hidden,), "b_h": (3 * hidden,)} if name == "gru"
                  else {"b": (gates * hidden,)})
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(hidden)
    return {k: (factor * rng.uniform(-bound, bound, shape)).astype(dtype)
            for k, shape in shapes.items()}


@jax.jit
def _cells_vjp(cases):
    """Every cell at once (one compile per shape and dtype): ``{name: (out, vjp(ct))}``."""
    results = {}
    for name, (params, carry, x, ct) in cases.items():
        out, vjp = jax.vjp(CELLS[name][0], params, carry, x)
        results[name] = out, vjp(jax.tree_util.tree_map(lambda o: ct.astype(o.dtype), out))
    return results


def _sigmoid(a):
    return 0.5 * (1 + np.tanh(0.5 * a))  # no overflow at ±1e8


def _cell_ref(name, p, carry, x):
    """The cell equations (Elman / PyTorch LSTM, GRU) in float64 NumPy, and for each gate its
    pre-activation scale ``|x||W_x| + |h||W_h| + |b|`` (what bounds its round-off)."""
    absx = lambda *terms: sum(np.abs(a) @ np.abs(w) for a, w in terms)
    if name == "rnn":
        h = carry
        a = x @ p["w_x"] + h @ p["w_h"] + p["b"]
        return np.tanh(a), absx((x, p["w_x"]), (h, p["w_h"])) + np.abs(p["b"])
    if name == "lstm":
        h, c = carry
        a = x @ p["w_x"] + h @ p["w_h"] + p["b"]
        i, f, g, o = np.split(a, 4, axis=-1)
        c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        return (_sigmoid(o) * np.tanh(c_new), c_new), (
            absx((x, p["w_x"]), (h, p["w_h"])) + np.abs(p["b"]))
    h = carry
    ax, ah = x @ p["w_x"] + p["b_x"], h @ p["w_h"] + p["b_h"]
    (xr, xz, xn), (hr, hz, hn) = np.split(ax, 3, axis=-1), np.split(ah, 3, axis=-1)
    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    return (1 - z) * n + z * h, (absx((x, p["w_x"])) + np.abs(p["b_x"])
                                 + absx((h, p["w_h"])) + np.abs(p["b_h"]))


@st.composite
def cell_cases(draw):
    """One draw: a dtype, a shape, and for each cell its params, carry, input and cotangent."""
    dtype = draw(st.sampled_from(DTYPES))
    batch, features, hidden = draw(st.sampled_from(CELL_SHAPES))
    cases = {}
    for name in CELLS:
        # Weights: init's scale times a drawn factor, so gates range from linear (1e-30) to
        # saturated (1e2); inputs and states take the extreme values.
        factor = draw(st.sampled_from([1.0, 1e-30, 1e2, -3.0]))
        params = _cell_params(name, features, hidden, draw(st.integers(0, 2 ** 16)), dtype,
                              factor)
        h = draw(values(dtype, (batch, hidden)))
        carry = (h, draw(values(dtype, (batch, hidden)))) if name == "lstm" else h
        cases[name] = (params, carry, draw(values(dtype, (batch, features))),
                       draw(values(dtype, (batch, hidden))))
    return cases


def check_cells(cases):
    """One step of each cell: the equations in NumPy within a first-order round-off bound
    (each gate's pre-activation is off by at most its sum bound; the gates are 1-Lipschitz and
    multiply values of size at most ``1 + |c| + |h|``); values and VJP finite; dtype kept; and
    the ranges the equations guarantee (``|h'| <= 1`` for Elman and LSTM,
    ``|h'| <= max(1, |h|)`` for the GRU's convex combination)."""
    results = _cells_vjp(cases)
    for name, (params, carry, x, _) in cases.items():
        out, grads = results[name]
        dtype = x.dtype.type
        assert_finite_with_dtype((out, grads), dtype, name)
        P = jax.tree_util.tree_map(_daz, params)
        ref, gate_scale = _cell_ref(name, P, jax.tree_util.tree_map(_daz, carry), _daz(x))
        h_abs = np.abs(_daz(carry[0] if name == "lstm" else carry))
        size = 1 + h_abs.max(-1, keepdims=True)
        if name == "lstm":
            size = size + np.abs(_daz(carry[1])).max(-1, keepdims=True)
        n_terms = x.shape[-1] + h_abs.shape[-1] + 2
        tol = 4 * _bound(dtype, n_terms, 1 + gate_scale.max(-1, keepdims=True)) * size
        for got, want in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref)):
            assert_within(got, want, tol, name)
        h_new = np.asarray(jax.tree_util.tree_leaves(out)[0], np.float64)
        limit = 1.0 if name != "gru" else np.maximum(1.0, h_abs.max(-1, keepdims=True))
        assert np.all(np.abs(h_new) <= limit * (1 + np.finfo(dtype).eps)), (name, h_new)


test_cells_property, test_cells_property_thorough = twice(check_cells, cell_cases())

UNROLL_SHAPE = (2, 3, 2, 2)  # (batch, time, features, hidden)


@jax.jit
def _unroll_and_bptt(cases):
    """For every cell: ``unroll``'s hidden states, the same states from a Python loop of cell
    steps (static T), and the BPTT gradients of ``sum(hs)``."""
    results = {}
    for name, (params, h0, xs) in cases.items():
        cell = CELLS[name][0]
        loss = lambda params, h0, xs, cell=cell: jnp.sum(rnn.unroll(cell, params, h0, xs)[1])
        steps, carry = [], h0
        for t in range(xs.shape[1]):
            carry = cell(params, carry, xs[:, t])
            steps.append(carry[0] if name == "lstm" else carry)
        results[name] = (rnn.unroll(cell, params, h0, xs)[1], jnp.stack(steps, axis=1),
                         jax.grad(loss, argnums=(0, 1, 2))(params, h0, xs))
    return results


@st.composite
def unroll_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    batch, time, features, hidden = UNROLL_SHAPE
    cases = {}
    for name in CELLS:
        params = _cell_params(name, features, hidden, draw(st.integers(0, 2 ** 16)), dtype)
        h0 = draw(values(dtype, (batch, hidden)))
        if name == "lstm":
            h0 = (h0, draw(values(dtype, (batch, hidden))))
        cases[name] = params, h0, draw(values(dtype, (batch, time, features)))
    return cases


def check_unroll(cases):
    """``unroll`` is the step-by-step application of the cell (same ops, so equal to a few
    ulps), and backpropagation through time gives finite gradients in the inputs' dtype."""
    for name, (hs, steps, grads) in _unroll_and_bptt(cases).items():
        dtype = cases[name][2].dtype.type
        assert_finite_with_dtype((hs, grads), dtype, name)
        eps = np.finfo(dtype).eps
        np.testing.assert_allclose(np.asarray(hs), np.asarray(steps), rtol=8 * eps, atol=8 * eps)


test_unroll_property, test_unroll_property_thorough = twice(check_unroll, unroll_cases())


# ----------------------------------------------------------------------------- signal

SIGNAL_SHAPES = [(8,), (2, 7), (1, 6)]


@jax.jit
def _signal_all(x):
    def energy(x):  # Parseval: the one-sided power spectrum's weighted sum is Σ x²
        p = signal.power_spectrum(x)
        n = x.shape[-1]
        w = jnp.full(p.shape[-1], 2.0, p.dtype).at[0].set(1.0)
        if n % 2 == 0:
            w = w.at[-1].set(1.0)
        return jnp.sum(p * w)

    features = lambda x: signal.fourier_features(x, x.shape[-1] // 2 + 1)
    return (signal.fourier_transform(x), signal.power_spectrum(x), features(x), energy(x),
            jax.grad(energy)(x), jax.grad(lambda x: jnp.sum(features(x)))(x))


@st.composite
def signal_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    return draw(values(dtype, draw(st.sampled_from(SIGNAL_SHAPES))))


def check_signal(x):
    """DFT, power spectrum and amplitude features against NumPy's FFT within the DFT's
    round-off bound (each bin is a sum of ``n`` terms of size ``|x_t|``; the FFT's own error is
    smaller); Parseval's identity and its gradient ``2x``; everything finite; dtypes follow."""
    dtype = x.dtype.type
    complex_dtype = np.complex64 if dtype == np.float32 else np.complex128
    fft, power, feats, energy, g_energy, g_feats = _signal_all(x)
    assert fft.dtype == complex_dtype
    assert_finite_with_dtype((power, feats, energy, g_energy, g_feats), dtype, "signal")
    assert np.all(np.isfinite(np.asarray(fft)))
    X = _daz(x)
    n = x.shape[-1]
    l1 = np.abs(X).sum(-1, keepdims=True)
    # 4 log2(n) + 4: butterfly depth and twiddle-factor round-off, on top of the sum bound.
    depth = 4 * np.log2(n) + 4
    ref = np.fft.fft(X, axis=-1)
    tol = depth * _bound(dtype, n, l1)
    assert_within(np.real(fft), ref.real, tol, "fft re")
    assert_within(np.imag(fft), ref.imag, tol, "fft im")
    r = np.fft.rfft(X, axis=-1)
    assert_within(feats, np.abs(r) / n, tol / n, "features")
    assert_within(power, np.abs(r) ** 2 / n, 3 * tol * (l1 + tol) / n, "power")
    sq = np.sum(X ** 2, axis=-1)
    assert_within(energy, np.sum(sq), 3 * depth * _bound(dtype, n, np.sum(l1 ** 2)) / n
                  + 3 * np.sum(tol * (l1 + tol)), "Parseval")
    assert_within(g_energy, 2 * X, 4 * depth * _bound(dtype, n, l1), "∇ energy = 2x")


test_signal_property, test_signal_property_thorough = twice(check_signal, signal_cases())


@st.composite
def scaled_signal_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    width = 32 if dtype == np.float32 else 64
    magnitudes = st.floats(float(dtype(1e-3)), 1e4, width=width)
    x = draw(hnp.arrays(dtype, (2, 6), elements=st.tuples(magnitudes, st.booleans()).map(
        lambda t: -t[0] if t[1] else t[0])))
    exponent = {np.float32: 100, np.float64: 600}[dtype]
    return x, draw(st.sampled_from([-exponent, exponent]))


def check_features_scale(case):
    """Amplitude features are absolutely homogeneous, ``f(2^k x) = 2^k f(x)``, even where
    ``|X_k|²`` would under- or overflow (2^±100 in float32, 2^±600 in float64): the modulus is
    computed without squaring. Powers of two scale exactly, so equal to a few ulps."""
    x, k = case
    scaled = (x * np.asarray(2.0, x.dtype) ** k).astype(x.dtype)
    f, fs = _features_pair(x, scaled)
    assert fs.dtype == x.dtype and np.all(np.isfinite(np.asarray(fs)))
    # atol: a bin that is pure round-off residue may underflow (flush) at 2^-100 / 2^-600.
    np.testing.assert_allclose(np.asarray(fs, np.float64), np.asarray(f, np.float64) * 2.0 ** k,
                               rtol=8 * np.finfo(x.dtype).eps, atol=4 * np.finfo(x.dtype).tiny)


@jax.jit
def _features_pair(x, scaled):
    return signal.fourier_features(x, 4), signal.fourier_features(scaled, 4)


test_features_scale_property, test_features_scale_property_thorough = twice(
    check_features_scale, scaled_signal_cases(), examples=200)


# ----------------------------------------------------------------------------- models

MODEL_CASES = {
    "mlp-tanh": (lambda dt: models.mlp([3, 4, 2], "tanh", dtype=dt), (2, 3)),
    "mlp-relu": (lambda dt: models.mlp([3, 4, 2], "relu", final_activation="sigmoid",
                                       dtype=dt), (2, 3)),
    "small-cnn": (lambda dt: models.serial(
        models.Conv2D(2, 3, padding="SAME", dtype=dt), models.Activation("relu"),
        models.MaxPool2D(2), models.Conv2D(2, 2, dtype=dt), models.AvgPool2D(1),
        models.Flatten(), models.Dense(2, dtype=dt)), (1, 4, 4, 1)),
    **{f"rnn_regressor-{c}": (lambda dt, c=c: models.rnn_regressor(2, cell=c, dtype=dt),
                              (2, 3, 2)) for c in ("rnn", "lstm", "gru")},
    "two_layer_sigmoid": (lambda dt: models.two_layer_sigmoid(3, 2, 1), (2, 3)),
}
_MODELS = {}


def _models(dtype):
    """Every model, its initial params (cast to ``dtype``) and one jitted function giving
    each model's output and its gradients (params and input) of ``sum(y²)``; built once."""
    if dtype not in _MODELS:
        nets, params = {}, {}
        rng = np.random.default_rng(0)
        for name, (build, x_shape) in MODEL_CASES.items():
            nets[name] = build(dtype)
            # init's shapes (traced, not run: no compile), filled with N(0, 0.5²) in NumPy.
            shape = (-1,) + x_shape[1:]
            _, shapes = jax.eval_shape(lambda key, net=nets[name], shape=shape: net.init(
                key, shape), jax.random.PRNGKey(0))
            params[name] = jax.tree_util.tree_map(
                lambda a: (0.5 * rng.standard_normal(a.shape)).astype(dtype), shapes)

        @jax.jit
        def values_and_grads(params, xs):
            out = {}
            for name, net in nets.items():
                loss = lambda p, x, net=net: jnp.sum(net.apply(p, x) ** 2)
                out[name] = (net.apply(params[name], xs[name]),
                             jax.grad(loss, argnums=(0, 1))(params[name], xs[name]))
            return out

        _MODELS[dtype] = params, values_and_grads
    return _MODELS[dtype]


@st.composite
def model_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    return {name: draw(values(dtype, x_shape)) for name, (_, x_shape) in MODEL_CASES.items()}


def check_models(xs):
    """Every model: outputs and gradients (params and input) finite for the extreme inputs,
    in the inputs' dtype."""
    dtype = next(iter(xs.values())).dtype.type
    params, values_and_grads = _models(dtype)
    for name, (y, grads) in values_and_grads(params, xs).items():
        assert y.shape[0] == xs[name].shape[0]
        assert_finite_with_dtype((y, grads), dtype, name)


test_models_property, test_models_property_thorough = twice(check_models, model_cases())
