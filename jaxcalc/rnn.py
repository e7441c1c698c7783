"""Recurrent cells (Elman RNN, LSTM, GRU) and their unroll through ``lax.scan``.

A *cell* is a pure function ``cell(params, carry, x_t) -> carry``: for the Elman RNN and the GRU
the carry is the hidden state ``h`` of shape ``(batch, hidden)``; for the LSTM it is the pair
``(h, c)``. ``unroll`` scans a cell over the time axis of ``xs`` ``(batch, time, features)``, so
backpropagation through time (BPTT) is just ``jax.grad`` of a loss of its output.

Gate layouts follow PyTorch (``torch.nn.LSTMCell``: gates i, f, g, o; ``torch.nn.GRUCell``:
r, z, n with separate input and hidden biases), so weights can be compared one-to-one.
Initialisation is PyTorch's ``U(-1/√H, 1/√H)``, except that the LSTM forget-gate bias starts
at 1 (Jozefowicz et al., 2015).

Shapes are checked at trace time: a cell raises ``ValueError`` when ``params`` does not have
exactly its ``init_*`` keys and shapes (a missing, extra or reshaped leaf), when ``x``'s last axis
is not the number of rows of ``params["w_x"]``, when ``h`` does not match ``params["w_h"]``, or
(LSTM) when the carry is not an ``(h, c)`` pair; ``unroll`` checks ``xs`` and ``h0`` against each
other. Complex inputs raise ``TypeError``; integer ones are promoted by the arithmetic. NaN is not
an error: it propagates to every later hidden state of its batch row.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcalc._types import Array, ArrayLike, Params, PRNGKey, PyTree
from jaxcalc._validate import (check_float_dtype, check_floating, check_ndim, check_positive,
                               check_real_dtype)
from jaxcalc.activations import sigmoid

Cell = Callable[[Params, PyTree, Array], PyTree]


def _uniform(key: PRNGKey, shape, hidden: int, dtype) -> Array:
    """PyTorch's recurrent initialisation ``U(-1/√hidden, 1/√hidden)``."""
    bound = 1.0 / math.sqrt(hidden)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _check_sizes(fn: str, in_features: int, hidden: int, dtype) -> None:
    for name, value in (("in_features", in_features), ("hidden", hidden)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"{fn}: {name} must be an int, got {value!r}")
        check_positive(fn, name, value)
    check_float_dtype(fn, dtype, allow_none=True)


def _describe(value) -> str:
    """A short description of an argument for error messages (never touches traced values)."""
    if hasattr(value, "shape"):
        return f"an array of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"


def _check_cell_params(fn: str, params: Params, biases: Sequence[str], gates: int) -> None:
    """Exactly the keys ``w_x``, ``w_h`` and ``biases``, with shapes ``(in, G·H)``, ``(H, G·H)``
    and ``(G·H,)`` for ``G = gates``, and real dtypes; else ValueError/TypeError."""
    keys = ("w_x", "w_h", *biases)
    if not isinstance(params, Mapping) or set(params) != set(keys):
        got = sorted(params) if isinstance(params, Mapping) else _describe(params)
        raise ValueError(f"{fn}: params must be a dict with keys {list(keys)} (from init_{fn}), "
                         f"got {got}")
    w_h = params["w_h"]
    hidden = np.shape(w_h)[0] if np.ndim(w_h) == 2 else -1
    gh = f"{gates}·H" if gates > 1 else "H"
    if np.shape(w_h) != (hidden, gates * hidden):
        raise ValueError(f"{fn}: params['w_h'] must have shape (H, {gh}) (from init_{fn}), got "
                         f"shape {np.shape(w_h)}")
    where = (f"H = {hidden} from params['w_h']" if gates == 1
             else f"{gh} = {gates * hidden} with H = {hidden} from params['w_h']")
    w_x = params["w_x"]
    if np.ndim(w_x) != 2 or np.shape(w_x)[1] != gates * hidden:
        raise ValueError(f"{fn}: params['w_x'] must have shape (in_features, {gates * hidden}) "
                         f"({where}), got shape {np.shape(w_x)}")
    for name in biases:
        if np.shape(params[name]) != (gates * hidden,):
            raise ValueError(f"{fn}: params[{name!r}] must have shape ({gates * hidden},) "
                             f"({where}), got shape {np.shape(params[name])}")
    for name in keys:
        check_real_dtype(fn, f"params[{name!r}]", params[name])


def _check_cell_inputs(fn: str, params: Params, biases: Sequence[str], gates: int, h, x) -> None:
    """Trace-time checks shared by the cells: params, ``x`` vs ``w_x``, ``h`` vs ``w_h``."""
    _check_cell_params(fn, params, biases, gates)
    in_features, hidden = np.shape(params["w_x"])[0], np.shape(params["w_h"])[0]
    if not hasattr(h, "shape"):
        raise ValueError(f"{fn}: h must be an array (batch, {hidden}), got {_describe(h)}")
    check_real_dtype(fn, "x", x)
    check_real_dtype(fn, "h", h)
    check_ndim(fn, "x", x, (1, 2), f"(batch, {in_features})")
    check_ndim(fn, "h", h, (1, 2), f"(batch, {hidden})")
    if x.shape[-1] != in_features:
        raise ValueError(f"{fn}: x must have {in_features} features (rows of params['w_x'] of "
                         f"shape {np.shape(params['w_x'])}) on its last axis, got shape "
                         f"{tuple(x.shape)}")
    if h.shape[-1] != hidden:
        raise ValueError(f"{fn}: h must have {hidden} units (rows of params['w_h'] of shape "
                         f"{np.shape(params['w_h'])}) on its last axis, got shape "
                         f"{tuple(h.shape)}")
    if h.shape[:-1] != x.shape[:-1]:
        raise ValueError(f"{fn}: h and x must have the same batch shape, got h {tuple(h.shape)} "
                         f"and x {tuple(x.shape)}")


def init_rnn_cell(key: PRNGKey, in_features: int, hidden: int, *, dtype=None) -> Params:
    """Elman-cell parameters ``{"w_x": (in_features, hidden), "w_h": (hidden, hidden),
    "b": (hidden,)}``, each ``U(-1/√hidden, 1/√hidden)``; ``dtype`` defaults to JAX's float."""
    _check_sizes("init_rnn_cell", in_features, hidden, dtype)
    dtype = dtype or jnp.result_type(float)
    kx, kh, kb = jax.random.split(key, 3)
    return {"w_x": _uniform(kx, (in_features, hidden), hidden, dtype),
            "w_h": _uniform(kh, (hidden, hidden), hidden, dtype),
            "b": _uniform(kb, (hidden,), hidden, dtype)}


def rnn_cell(params: Params, h: Array, x: Array) -> Array:
    r"""Elman cell :math:`h' = \tanh(x W_x + h W_h + b)` (Elman, 1990).

    Args:
      params: ``{"w_x": (in_features, hidden), "w_h": (hidden, hidden), "b": (hidden,)}``.
      h: ``(batch, hidden)`` (or unbatched ``(hidden,)``).
      x: ``(batch, in_features)`` (or unbatched ``(in_features,)``).

    Returns:
      ``(batch, hidden)``, in the promoted dtype of ``params``, ``h`` and ``x``.
    """
    x = jnp.asarray(x)
    _check_cell_inputs("rnn_cell", params, ("b",), 1, h, x)
    return jnp.tanh(x @ params["w_x"] + h @ params["w_h"] + params["b"])


def init_lstm_cell(key: PRNGKey, in_features: int, hidden: int, *, dtype=None) -> Params:
    """LSTM parameters ``{"w_x": (in, 4H), "w_h": (H, 4H), "b": (4H,)}``, gates ordered
    i, f, g, o; ``U(-1/√H, 1/√H)`` except the forget-gate bias, which starts at 1."""
    _check_sizes("init_lstm_cell", in_features, hidden, dtype)
    dtype = dtype or jnp.result_type(float)
    kx, kh, kb = jax.random.split(key, 3)
    b = _uniform(kb, (4 * hidden,), hidden, dtype).at[hidden:2 * hidden].set(1.0)
    return {"w_x": _uniform(kx, (in_features, 4 * hidden), hidden, dtype),
            "w_h": _uniform(kh, (hidden, 4 * hidden), hidden, dtype),
            "b": b}


def lstm_cell(params: Params, carry: Tuple[Array, Array], x: Array) -> Tuple[Array, Array]:
    r"""LSTM cell (Hochreiter & Schmidhuber, 1997), PyTorch gate layout.

    .. math::
       [i, f, g, o] = x W_x + h W_h + b, \quad
       c' = \sigma(f) c + \sigma(i) \tanh(g), \quad h' = \sigma(o) \tanh(c')

    Args:
      params: ``{"w_x": (in_features, 4H), "w_h": (H, 4H), "b": (4H,)}`` from ``init_lstm_cell``.
      carry: the pair ``(h, c)``, each ``(batch, H)``.
      x: ``(batch, in_features)``.

    Returns:
      The new pair ``(h', c')`` (always a tuple), each ``(batch, H)``.
    """
    if not isinstance(carry, (tuple, list)) or len(carry) != 2:
        raise ValueError(f"lstm_cell: carry must be a pair (h, c) of (batch, hidden) arrays, "
                         f"got {_describe(carry)}")
    h, c = carry
    x = jnp.asarray(x)
    _check_cell_inputs("lstm_cell", params, ("b",), 4, h, x)
    if not hasattr(c, "shape") or c.shape != h.shape:
        raise ValueError(f"lstm_cell: c (carry[1]) must have the shape of h {tuple(h.shape)}, "
                         f"got {_describe(c)}")
    check_real_dtype("lstm_cell", "c (carry[1])", c)
    i, f, g, o = jnp.split(x @ params["w_x"] + h @ params["w_h"] + params["b"], 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
    h = sigmoid(o) * jnp.tanh(c)
    return h, c


def init_gru_cell(key: PRNGKey, in_features: int, hidden: int, *, dtype=None) -> Params:
    """GRU parameters ``{"w_x": (in, 3H), "w_h": (H, 3H), "b_x": (3H,), "b_h": (3H,)}``, gates
    ordered r, z, n, each ``U(-1/√H, 1/√H)``."""
    _check_sizes("init_gru_cell", in_features, hidden, dtype)
    dtype = dtype or jnp.result_type(float)
    kx, kh, kbx, kbh = jax.random.split(key, 4)
    return {"w_x": _uniform(kx, (in_features, 3 * hidden), hidden, dtype),
            "w_h": _uniform(kh, (hidden, 3 * hidden), hidden, dtype),
            "b_x": _uniform(kbx, (3 * hidden,), hidden, dtype),
            "b_h": _uniform(kbh, (3 * hidden,), hidden, dtype)}


def gru_cell(params: Params, h: Array, x: Array) -> Array:
    r"""GRU cell (Cho et al., 2014), PyTorch layout.

    .. math::
       r = \sigma(x W_{xr} + b_{xr} + h W_{hr} + b_{hr}),\;
       z = \sigma(x W_{xz} + b_{xz} + h W_{hz} + b_{hz}),\;
       n = \tanh(x W_{xn} + b_{xn} + r (h W_{hn} + b_{hn})),\;
       h' = (1 - z) n + z h

    Args:
      params: ``{"w_x": (in_features, 3H), "w_h": (H, 3H), "b_x": (3H,), "b_h": (3H,)}``.
      h: ``(batch, H)``.
      x: ``(batch, in_features)``.

    Returns:
      ``(batch, H)``.
    """
    x = jnp.asarray(x)
    _check_cell_inputs("gru_cell", params, ("b_x", "b_h"), 3, h, x)
    xr, xz, xn = jnp.split(x @ params["w_x"] + params["b_x"], 3, axis=-1)
    hr, hz, hn = jnp.split(h @ params["w_h"] + params["b_h"], 3, axis=-1)
    r = sigmoid(xr + hr)
    z = sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def unroll(cell: Cell, params: Params, h0: PyTree, xs: ArrayLike) -> Tuple[PyTree, Array]:
    r"""Run ``cell`` over the time axis of ``xs`` with ``lax.scan``:
    :math:`h_t = \mathrm{cell}(\theta, h_{t-1}, x_t)`, :math:`t = 1..T`.

    Differentiating a loss of the result with ``jax.grad`` is backpropagation through time
    (Werbos, 1990). ``h0`` and ``xs`` are cast to the promoted dtype of ``params``, ``h0`` and
    ``xs``, so the scan carry keeps one dtype (float32 stays float32).

    Args:
      cell: ``rnn_cell``, ``gru_cell``, ``lstm_cell`` or any ``cell(params, carry, x_t) -> carry``.
      params: the cell's parameters.
      h0: initial carry: ``(batch, hidden)``, or the pair ``(h0, c0)`` for the LSTM.
      xs: ``(batch, time, features)`` — time is the second axis.

    Returns:
      ``(h_last, hs)``: the final carry (same structure as ``h0``) and the hidden states
      ``hs`` of shape ``(batch, time, hidden)`` (for an LSTM, its ``h`` part).
    """
    if not callable(cell):
        raise TypeError(f"unroll: cell must be a function cell(params, carry, x_t) -> carry "
                        f"(e.g. rnn_cell), got {_describe(cell)}")
    xs = jnp.asarray(xs)
    check_ndim("unroll", "xs", xs, 3, "(batch, time, features)")
    if isinstance(h0, list):
        h0 = tuple(h0)
    batch = xs.shape[0]
    for leaf in jax.tree_util.tree_leaves(h0):
        if jnp.ndim(leaf) != 2 or jnp.shape(leaf)[0] != batch:
            raise ValueError(f"unroll: h0 must be (batch, hidden) (or a pair of them for the "
                             f"LSTM) with batch = {batch} (xs's first axis), got "
                             f"{_describe(jnp.asarray(leaf))}")
    if (isinstance(params, Mapping) and np.ndim(params.get("w_x")) == 2
            and xs.shape[2] != np.shape(params["w_x"])[0]):
        raise ValueError(f"unroll: xs must have {np.shape(params['w_x'])[0]} features (rows of "
                         f"params['w_x'] of shape {np.shape(params['w_x'])}) on its last axis, "
                         f"got shape {tuple(xs.shape)}")
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params), *jax.tree_util.tree_leaves(h0),
                            xs)
    check_floating("unroll", "params, h0 and xs (promoted together)", dtype)
    h0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), h0)
    xs = xs.astype(dtype)

    def step(carry, x_t):
        carry = cell(params, carry, x_t)
        return carry, (carry[0] if isinstance(carry, tuple) else carry)

    h_last, hs = lax.scan(step, h0, jnp.swapaxes(xs, 0, 1))
    return h_last, jnp.swapaxes(hs, 0, 1)


__all__ = [
    "init_rnn_cell",
    "rnn_cell",
    "init_lstm_cell",
    "lstm_cell",
    "init_gru_cell",
    "gru_cell",
    "unroll",
]
