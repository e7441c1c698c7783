"""Models as stax-style ``(init, apply)`` pairs with dict parameters.

The contract (as ``jax.example_libraries.stax``):

* ``init(key, input_shape) -> (output_shape, params)``; ``input_shape`` may use ``-1`` for the
  batch axis. ``params`` is a dict of arrays (nested for ``serial``: one entry per layer that
  has parameters, named ``dense0``, ``conv1``, ...).
* ``apply(params, x) -> y``, pure and ``jax.jit``-able.

``apply`` checks ``params`` at trace time against what ``init`` builds: a missing, extra or
reshaped leaf raises ``ValueError`` naming the layer and the entry (``serial: params is missing
the entries ['dense1']``, ``Dense(3): params['w'] must have shape (in_features, 3)``), the
expected and the given. Models are real-valued networks: complex ``x`` raises
``TypeError``; integer ``x`` is promoted to the parameters' dtype. NaN is not an error: it
propagates to the outputs it feeds.

Layer constructors (``Dense``, ``Conv2D``, ``MaxPool2D``, ``AvgPool2D``, ``Flatten``,
``Activation``) are combined with ``serial``. The standard models of the seed notes are built on
them: ``mlp``, ``two_layer_sigmoid`` (seed 000), ``cnn`` (seed 002's conv32-pool-conv64-pool-
dense128 network) and ``rnn_regressor`` (seed 002's BPTT time-series network).
"""

from __future__ import annotations

import numbers
from typing import Callable, Mapping, NamedTuple, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxcalc import activations, layers, rnn
from jaxcalc._types import Array, Params, PRNGKey, Shape
from jaxcalc._validate import check_float_dtype, check_ndim, check_real_dtype


class Model(NamedTuple):
    """An ``(init, apply)`` pair; unpacks as a tuple, like stax's layers."""

    init: Callable[[PRNGKey, Shape], Tuple[Shape, Params]]
    apply: Callable[[Params, Array], Array]


_ACTIVATIONS = {
    "sigmoid": activations.sigmoid,
    "tanh": activations.tanh,
    "relu": activations.relu,
    "softplus": activations.softplus,
    "leaky_relu": activations.leaky_relu,
    "identity": lambda x: x,
}

ActivationLike = Union[str, Callable[[Array], Array]]


def get_activation(activation: ActivationLike) -> Callable[[Array], Array]:
    """An activation function by name (``"sigmoid"``, ``"tanh"``, ``"relu"``, ...) or as given."""
    if callable(activation):
        return activation
    if not isinstance(activation, str) or activation not in _ACTIVATIONS:
        raise ValueError(f"get_activation: activation must be a callable or one of "
                         f"{sorted(_ACTIVATIONS)}, got {activation!r}")
    return _ACTIVATIONS[activation]


# ----------------------------------------------------------------------------- checks


def _check_input_shape(fn: str, input_shape, ndim: int | None = None, layout: str = "") -> Shape:
    """``input_shape`` as a tuple of ints (``-1`` allowed for the batch axis), of length ``ndim``
    (or at least 1 when ``ndim`` is None); else TypeError (not ints) or ValueError (length)."""
    if not isinstance(input_shape, (tuple, list)) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in input_shape):
        raise TypeError(f"{fn}: input_shape must be a tuple of ints{' ' + layout if layout else ''}"
                        f", got {input_shape!r}")
    if (len(input_shape) != ndim) if ndim is not None else (len(input_shape) < 1):
        want = f"{ndim}-D {layout}" if ndim is not None else "at least 1-D (..., features)"
        raise ValueError(f"{fn}: input_shape must be {want}, got {tuple(input_shape)}")
    return tuple(int(d) for d in input_shape)


def _check_params(fn: str, params, expected: Mapping[str, tuple], name: str = "params") -> None:
    """Raise ValueError unless ``params`` is a dict with exactly ``expected``'s keys and each
    leaf has the expected shape (a ``str`` entry, e.g. ``"C_in"``, matches any size; a ``None``
    shape is not checked)."""
    if not isinstance(params, Mapping) or set(params) != set(expected):
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(f"{fn}: {name} must be a dict with keys {sorted(expected)} (from init), "
                         f"got {got}")
    for key, want in expected.items():
        if want is None:
            continue
        got = np.shape(params[key])
        if len(got) != len(want) or any(isinstance(w, int) and w != g for w, g in zip(want, got)):
            shown = "(" + ", ".join(map(str, want)) + ("," if len(want) == 1 else "") + ")"
            raise ValueError(f"{fn}: {name}[{key!r}] must have shape {shown}, got {got}")


def _check_real_input(fn: str, x, name: str = "x") -> Array:
    """``x`` as an array; TypeError unless real (models are real-valued networks)."""
    x = jnp.asarray(x)
    check_real_dtype(fn, name, x, "float, int or bool")
    return x


def _check_no_params(fn: str, params) -> None:
    """Raise ValueError unless a parameterless layer got empty params (``{}``)."""
    if jax.tree_util.tree_leaves(params):
        raise ValueError(f"{fn}: params must be empty ({{}}; this layer has no parameters), got "
                         f"{jax.tree_util.tree_structure(params)}")


# ----------------------------------------------------------------------------- layers


def Dense(out_features: int, *, init: str = "glorot", use_bias: bool = True, dtype=None) -> Model:
    """Dense layer ``x @ w + b`` on ``(..., in)``; params ``{"w", "b"}`` (``{"w"}`` without bias)."""

    expected = {"w": ("in_features", out_features)}
    if use_bias:
        expected["b"] = (out_features,)

    def init_fn(key, input_shape):
        input_shape = _check_input_shape("Dense", input_shape)
        params = layers.init_dense(key, input_shape[-1], out_features, init=init, dtype=dtype)
        if not use_bias:
            params = {"w": params["w"]}
        return input_shape[:-1] + (out_features,), params

    def apply_fn(params, x):
        _check_params(f"Dense({out_features})", params, expected)
        x = _check_real_input(f"Dense({out_features})", x)
        if use_bias:
            return layers.dense(params, x)
        return layers.dense({"w": params["w"], "b": jnp.zeros((), params["w"].dtype)}, x)

    return Model(init_fn, apply_fn)


def Conv2D(filters: int, kernel_size: Union[int, Tuple[int, int]] = 3, *, stride=1, padding=0,
           dtype=None) -> Model:
    """Convolution on NHWC input; params ``{"w": (KH, KW, C_in, filters), "b": (filters,)}`` (He init)."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    check_float_dtype("Conv2D", dtype, allow_none=True)
    expected = {"w": (kh, kw, "C_in", filters), "b": (filters,)}

    def init_fn(key, input_shape):
        input_shape = _check_input_shape("Conv2D", input_shape, 4, "(N, H, W, C_in)")
        c_in = input_shape[3]
        dt = dtype or jnp.result_type(float)
        fan_in = kh * kw * c_in
        w = jnp.sqrt(2.0 / fan_in).astype(dt) * jax.random.normal(key, (kh, kw, c_in, filters), dt)
        params = {"w": w, "b": jnp.zeros((filters,), dt)}
        probe = jax.eval_shape(lambda a: layers.conv2d(a, params["w"], params["b"], stride=stride,
                                                       padding=padding),
                               jax.ShapeDtypeStruct((1,) + tuple(input_shape[1:]), dt))
        return (input_shape[0],) + probe.shape[1:], params

    def apply_fn(params, x):
        _check_params(f"Conv2D({filters})", params, expected)
        x = _check_real_input(f"Conv2D({filters})", x)
        return layers.conv2d(x, params["w"], params["b"], stride=stride, padding=padding)

    return Model(init_fn, apply_fn)


def _pool(name: str, fn, window, stride) -> Model:
    def init_fn(key, input_shape):
        input_shape = _check_input_shape(name, input_shape, 4, "(N, H, W, C)")
        probe = jax.eval_shape(lambda a: fn(a, window, stride),
                               jax.ShapeDtypeStruct((1,) + tuple(input_shape[1:]), jnp.float32))
        return (input_shape[0],) + probe.shape[1:], {}

    def apply_fn(params, x):
        _check_no_params(name, params)
        return fn(x, window, stride)

    return Model(init_fn, apply_fn)


def MaxPool2D(window=2, stride=None) -> Model:
    """Max pooling on NHWC input (no parameters)."""
    return _pool("MaxPool2D", layers.max_pool2d, window, stride)


def AvgPool2D(window=2, stride=None) -> Model:
    """Average pooling on NHWC input (no parameters)."""
    return _pool("AvgPool2D", layers.avg_pool2d, window, stride)


def Flatten() -> Model:
    """``(N, ...) -> (N, prod(...))`` (no parameters)."""

    def init_fn(key, input_shape):
        input_shape = _check_input_shape("Flatten", input_shape)
        size = 1
        for d in input_shape[1:]:
            size *= d
        return (input_shape[0], size), {}

    def apply_fn(params, x):
        _check_no_params("Flatten", params)
        return layers.flatten(x)

    return Model(init_fn, apply_fn)


def Activation(activation: ActivationLike) -> Model:
    """Elementwise activation layer (no parameters)."""
    fn = get_activation(activation)

    def apply_fn(params, x):
        _check_no_params("Activation", params)
        return fn(x)

    return Model(lambda key, input_shape: (_check_input_shape("Activation", input_shape), {}),
                 apply_fn)


def serial(*models: Model, names: Sequence[str] | None = None) -> Model:
    """Compose models left to right. Params: ``{name: params}`` for each model with parameters.

    Names default to the layer kind and a per-kind counter (``dense0``, ``conv0``, ``dense1``);
    pass ``names`` to choose them.
    """
    for i, m in enumerate(models):
        if not (isinstance(m, tuple) and len(m) == 2 and all(map(callable, m))):
            raise TypeError(f"serial: models[{i}] must be an (init, apply) pair (a Model, e.g. "
                            f"Dense(3)), got {m!r}")
    if names is None:
        names, counts = [], {}
        for m in models:
            kind = _kind(m)
            names.append(f"{kind}{counts.get(kind, 0)}")
            counts[kind] = counts.get(kind, 0) + 1
    if len(names) != len(models) or len(set(names)) != len(names):
        raise ValueError(f"serial: names must be {len(models)} distinct strings, got {names!r}")
    names = list(names)
    with_params = [n for n, m in zip(names, models) if _kind(m) != "layer"]

    def init_fn(key, input_shape):
        params = {}
        shape = tuple(input_shape)
        for name, m, k in zip(names, models, jax.random.split(key, len(models))):
            shape, p = m.init(k, shape)
            if jax.tree_util.tree_leaves(p):
                params[name] = p
        return shape, params

    def apply_fn(params, x):
        if not isinstance(params, Mapping):
            raise ValueError(f"serial: params must be a dict {{layer name: params}} (from init), "
                             f"got {type(params).__name__}")
        unknown = [k for k in params if k not in names]
        if unknown:
            raise ValueError(f"serial: params has entries {unknown} that name no layer; the "
                             f"layers are {names}")
        missing = [n for n in with_params if n not in params]
        if missing:
            raise ValueError(f"serial: params is missing the entries {missing} (layers with "
                             f"parameters); got entries {list(params)}")
        for name, m in zip(names, models):
            x = m.apply(params.get(name, {}), x)
        return x

    return Model(init_fn, apply_fn)


def _kind(m: Model) -> str:
    qual = getattr(m.apply, "__qualname__", "")
    for prefix, kind in (("Dense", "dense"), ("Conv2D", "conv")):
        if qual.startswith(prefix):
            return kind
    return "layer"


# ----------------------------------------------------------------------------- models


def mlp(sizes: Sequence[int], activation: ActivationLike = "tanh", *,
        final_activation: ActivationLike | None = None, init: str | None = None,
        dtype=None) -> Model:
    """Multi-layer perceptron ``sizes[0] → sizes[1] → … → sizes[-1]``.

    ``activation`` between layers, ``final_activation`` (default none: logits / regression
    output) after the last. Weights use He init for ReLU-like activations, Glorot otherwise.
    ``init(key, input_shape=None)`` defaults ``input_shape`` to ``(-1, sizes[0])``.
    Params: ``{"dense0": {"w", "b"}, ..., "dense{L-1}": ...}``.
    """
    if not isinstance(sizes, (list, tuple)) or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes):
        raise TypeError(f"mlp: sizes must be a list of ints (layer widths), got {sizes!r}")
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"mlp: sizes must list >= 2 positive layer widths, got {sizes}")
    if init is None:
        init = "he" if activation in ("relu", "leaky_relu") else "glorot"
    act = get_activation(activation)
    parts = []
    for i, width in enumerate(sizes[1:]):
        parts.append(Dense(width, init=init, dtype=dtype))
        if i < len(sizes) - 2:
            parts.append(Activation(act))
    if final_activation is not None:
        parts.append(Activation(final_activation))
    net = serial(*parts)

    def init_fn(key, input_shape=None):
        input_shape = ((-1, sizes[0]) if input_shape is None
                       else _check_input_shape("mlp", input_shape))
        if input_shape[-1] != sizes[0]:
            raise ValueError(f"mlp: input_shape must end in sizes[0] = {sizes[0]}, got {input_shape}")
        return net.init(key, input_shape)

    return Model(init_fn, net.apply)


def two_layer_sigmoid(input_size: int, hidden_size: int, output_size: int = 1) -> Model:
    """Seed 000's network: ``σ(σ(X W1) W2)``, no biases, ``W ~ N(0, 1)`` like the seed.

    Params: ``{"W1": (input_size, hidden_size), "W2": (hidden_size, output_size)}``.
    Its hand-written backprop equals ``jax.grad`` of ``0.5 · sum((A2 - y)²)``; the seed trains
    on ``mean`` squared error, whose gradient is that times ``2 / y.size`` (the seed's
    "missing mean factor"; see ``experiments/seeds.py``).
    """

    expected = {"W1": (input_size, hidden_size), "W2": (hidden_size, output_size)}

    def init_fn(key, input_shape=None):
        input_shape = ((-1, input_size) if input_shape is None
                       else _check_input_shape("two_layer_sigmoid", input_shape))
        if input_shape[-1] != input_size:
            raise ValueError(f"two_layer_sigmoid: input_shape must end in {input_size}, got {input_shape}")
        k1, k2 = jax.random.split(key)
        dt = jnp.result_type(float)
        return input_shape[:-1] + (output_size,), {
            "W1": jax.random.normal(k1, (input_size, hidden_size), dt),
            "W2": jax.random.normal(k2, (hidden_size, output_size), dt)}

    def apply_fn(params, x):
        _check_params("two_layer_sigmoid", params, expected)
        x = _check_real_input("two_layer_sigmoid", x)
        if x.ndim < 1 or x.shape[-1] != input_size:
            raise ValueError(f"two_layer_sigmoid: x must have shape (..., {input_size}) "
                             f"(input_size), got {tuple(x.shape)}")
        return activations.sigmoid(activations.sigmoid(x @ params["W1"]) @ params["W2"])

    return Model(init_fn, apply_fn)


def cnn(num_classes: int = 10, *, conv_padding="SAME", dtype=None) -> Model:
    """Seed 002's CNN: conv 32 3×3 ReLU → max-pool 2 → conv 64 3×3 ReLU → max-pool 2 → dense 128
    ReLU → dense ``num_classes``. Returns logits. Input NHWC, e.g. ``(N, 8, 8, 1)`` digits or
    ``(N, 28, 28, 1)``. ``conv_padding`` ``"SAME"`` keeps 8×8 digits large enough for two pools
    (``0`` = the seed loop's unpadded convolution).

    Params: ``{"conv0", "conv1", "dense0", "dense1"}``, each ``{"w", "b"}``.
    """
    return serial(
        Conv2D(32, 3, padding=conv_padding, dtype=dtype), Activation("relu"), MaxPool2D(2),
        Conv2D(64, 3, padding=conv_padding, dtype=dtype), Activation("relu"), MaxPool2D(2),
        Flatten(), Dense(128, init="he", dtype=dtype), Activation("relu"),
        Dense(num_classes, dtype=dtype))


def rnn_regressor(hidden: int, out_features: int = 1, *, cell: str = "rnn", dtype=None) -> Model:
    """Many-to-one recurrent regressor: unroll ``cell`` over ``(batch, time, features)``, then a
    dense read-out of the last hidden state → ``(batch, out_features)``.

    ``cell`` in {"rnn", "lstm", "gru"}. Params: ``{"cell": cell params, "readout": {"w", "b"}}``.
    """
    cells = {"rnn": (rnn.init_rnn_cell, rnn.rnn_cell), "lstm": (rnn.init_lstm_cell, rnn.lstm_cell),
             "gru": (rnn.init_gru_cell, rnn.gru_cell)}
    if cell not in cells:
        raise ValueError(f"rnn_regressor: cell must be one of {sorted(cells)}, got {cell!r}")
    init_cell, cell_fn = cells[cell]
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    biases = ("b_x", "b_h") if cell == "gru" else ("b",)
    readout = {"w": (hidden, out_features), "b": (out_features,)}

    def init_fn(key, input_shape):
        input_shape = _check_input_shape("rnn_regressor", input_shape, 3,
                                         "(batch, time, features)")
        kc, kr = jax.random.split(key)
        params = {"cell": init_cell(kc, input_shape[2], hidden, dtype=dtype),
                  "readout": layers.init_dense(kr, hidden, out_features, dtype=dtype)}
        return (input_shape[0], out_features), params

    def apply_fn(params, xs):
        xs = _check_real_input("rnn_regressor", xs, "xs")
        check_ndim("rnn_regressor", "xs", xs, 3, "(batch, time, features)")
        _check_params("rnn_regressor", params, {"cell": None, "readout": None})
        _check_params("rnn_regressor", params["cell"],
                      {"w_x": ("in_features", gates * hidden), "w_h": (hidden, gates * hidden)}
                      | {b: (gates * hidden,) for b in biases}, name="params['cell']")
        _check_params("rnn_regressor", params["readout"], readout, name="params['readout']")
        dt = params["readout"]["w"].dtype
        h0 = jnp.zeros((xs.shape[0], hidden), dt)
        if cell == "lstm":
            h0 = (h0, h0)
        h_last, _ = rnn.unroll(cell_fn, params["cell"], h0, xs)
        h_last = h_last[0] if isinstance(h_last, tuple) else h_last
        return layers.dense(params["readout"], h_last)

    return Model(init_fn, apply_fn)


__all__ = [
    "Model",
    "get_activation",
    "Dense",
    "Conv2D",
    "MaxPool2D",
    "AvgPool2D",
    "Flatten",
    "Activation",
    "serial",
    "mlp",
    "two_layer_sigmoid",
    "cnn",
    "rnn_regressor",
]
