"""Recurrent cells (Elman RNN, LSTM, GRU) and their unroll through ``lax.scan``.

A *cell* is a pure function ``cell(params, carry, x_t) -> carry``: for the Elman RNN and the GRU
the carry is the hidden state ``h`` of shape ``(batch, hidden)``; for the LSTM it is the pair
``(h, c)``. ``unroll`` scans a cell over the time axis of ``xs`` ``(batch, time, features)``, so
backpropagation through time (BPTT) is just ``jax.grad`` of a loss of its output.

Gate layouts follow PyTorch (``torch.nn.LSTMCell``: gates i, f, g, o; ``torch.nn.GRUCell``:
r, z, n with separate input and hidden biases), so weights can be compared one-to-one.
Initialisation is PyTorch's ``U(-1/√H, 1/√H)``, except that the LSTM forget-gate bias starts
at 1 (Jozefowicz et al., 2015).
"""

from __future__ import annotations

from typing import Callable, Tuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxcalc._types import Array, ArrayLike, Params, PRNGKey, PyTree
from jaxcalc._validate import check_ndim
from jaxcalc.activations import sigmoid

Cell = Callable[[Params, PyTree, Array], PyTree]


def _uniform(key: PRNGKey, shape, hidden: int, dtype) -> Array:
    bound = 1.0 / jnp.sqrt(hidden)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def init_rnn_cell(key: PRNGKey, in_features: int, hidden: int, *, dtype=None) -> Params:
    """``{"w_x": (in_features, hidden), "w_h": (hidden, hidden), "b": (hidden,)}``."""
    dtype = dtype or jnp.result_type(float)
    kx, kh, kb = jax.random.split(key, 3)
    return {"w_x": _uniform(kx, (in_features, hidden), hidden, dtype),
            "w_h": _uniform(kh, (hidden, hidden), hidden, dtype),
            "b": _uniform(kb, (hidden,), hidden, dtype)}


def rnn_cell(params: Params, h: Array, x: Array) -> Array:
    r"""Elman cell :math:`h' = \tanh(x W_x + h W_h + b)`.

    Args:
      params: from ``init_rnn_cell``.
      h: ``(batch, hidden)``.
      x: ``(batch, in_features)``.

    Returns:
      ``(batch, hidden)``.
    """
    return jnp.tanh(x @ params["w_x"] + h @ params["w_h"] + params["b"])


def init_lstm_cell(key: PRNGKey, in_features: int, hidden: int, *, dtype=None) -> Params:
    """``{"w_x": (in, 4H), "w_h": (H, 4H), "b": (4H,)}``, gates ordered i, f, g, o; forget bias 1."""
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
      params: from ``init_lstm_cell``.
      carry: ``(h, c)``, each ``(batch, hidden)``.
      x: ``(batch, in_features)``.

    Returns:
      ``(h', c')``.
    """
    h, c = carry
    i, f, g, o = jnp.split(x @ params["w_x"] + h @ params["w_h"] + params["b"], 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
    h = sigmoid(o) * jnp.tanh(c)
    return h, c


def init_gru_cell(key: PRNGKey, in_features: int, hidden: int, *, dtype=None) -> Params:
    """``{"w_x": (in, 3H), "w_h": (H, 3H), "b_x": (3H,), "b_h": (3H,)}``, gates ordered r, z, n."""
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
    """
    xr, xz, xn = jnp.split(x @ params["w_x"] + params["b_x"], 3, axis=-1)
    hr, hz, hn = jnp.split(h @ params["w_h"] + params["b_h"], 3, axis=-1)
    r = sigmoid(xr + hr)
    z = sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def unroll(cell: Cell, params: Params, h0: PyTree, xs: ArrayLike) -> Tuple[PyTree, Array]:
    """Run ``cell`` over the time axis of ``xs`` with ``lax.scan``.

    Args:
      cell: ``rnn_cell``, ``gru_cell``, ``lstm_cell`` or any ``cell(params, carry, x_t) -> carry``.
      params: the cell's parameters.
      h0: initial carry: ``(batch, hidden)``, or ``(h0, c0)`` for the LSTM.
      xs: ``(batch, time, features)``.

    Returns:
      ``(h_last, hs)``: the final carry (same structure as ``h0``) and the hidden states
      ``hs`` of shape ``(batch, time, hidden)`` (for an LSTM, its ``h`` part).
    """
    xs = jnp.asarray(xs)
    check_ndim("unroll", "xs", xs, 3, "(batch, time, features)")
    h_first = h0[0] if isinstance(h0, tuple) else h0
    if jnp.ndim(h_first) != 2 or h_first.shape[0] != xs.shape[0]:
        raise ValueError(f"unroll: h0 must be (batch, hidden) with batch = {xs.shape[0]} "
                         f"(xs's first axis), got shape {tuple(jnp.shape(h_first))}")

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
