"""Bad-input audit of jaxcalc.layers, rnn, signal and models (issue #8).

Every public function × (wrong rank, wrong shape, wrong dtype, mismatched pytree, NaN input).
Each bad case must raise ``ValueError`` (bad shape, structure or value) or ``TypeError`` (bad
type or dtype) at trace time, with a message that names the function, the argument, what was
expected and what was given; array cases run eagerly and under ``jax.jit``. NaN is not an
error for these pure functions: NaN in gives NaN out exactly where the math says, and nowhere
else. docs/errors.md lists one row per test id here.

Dtype policy (tested here, described in docs/errors.md): integer and bool inputs are promoted
by the arithmetic (or to the default float where a float is needed); complex inputs are
computed in complex by the linear maps ``dense``, ``conv2d``, ``flatten`` and
``fourier_transform`` and rejected with ``TypeError`` by everything that needs an order or a
real value (pools, batch norm, RNN cells and ``unroll``, ``power_spectrum``,
``fourier_features``, models).
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc import layers, models, rnn, signal

KEY = jax.random.PRNGKey(0)
NAN = np.nan

# ----------------------------------------------------------------------------- small inputs

X2 = np.ones((4, 3))                                   # dense / batch-norm input (N, C)
DENSE = {"w": np.ones((3, 2)), "b": np.ones(2)}
X4 = np.ones((1, 4, 4, 2))                             # NHWC image
K = np.ones((2, 2, 2, 3))                              # HWIO kernel
C3 = np.ones(3)
H = np.zeros((4, 2))                                   # (batch, hidden)
XR = np.ones((4, 3))                                   # (batch, features)
XS = np.ones((4, 5, 3))                                # (batch, time, features)
SIG = np.ones((2, 6))                                  # signals (..., n)


def _np(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


RNN = _np(rnn.init_rnn_cell(KEY, 3, 2))
LSTM = _np(rnn.init_lstm_cell(KEY, 3, 2))
GRU = _np(rnn.init_gru_cell(KEY, 3, 2))
CELL = {"rnn": (rnn.rnn_cell, RNN), "lstm": (rnn.lstm_cell, LSTM), "gru": (rnn.gru_cell, GRU)}
CARRY = {"rnn": H, "lstm": (H, H), "gru": H}

MLP = models.mlp([3, 4, 2])
MLP_P = _np(MLP.init(KEY)[1])
CNN = models.serial(models.Conv2D(2, 3, padding="SAME"), models.Activation("relu"),
                    models.MaxPool2D(2), models.Flatten(), models.Dense(3))
CNN_P = _np(CNN.init(KEY, (-1, 4, 4, 1))[1])
X_IMG = np.ones((2, 4, 4, 1))
REG = models.rnn_regressor(2, cell="lstm")
REG_P = _np(REG.init(KEY, (-1, 5, 3))[1])
TLS = models.two_layer_sigmoid(3, 4, 2)
TLS_P = _np(TLS.init(KEY)[1])
SEED_CNN = models.cnn(3)
SEED_CNN_P = jax.tree_util.tree_map(  # init's shapes (traced only), zeros: no compile
    lambda s: np.zeros(s.shape), jax.eval_shape(lambda k: SEED_CNN.init(k, (-1, 8, 8, 1)), KEY)[1])


def _drop(d, key):
    return {k: v for k, v in d.items() if k != key}


def _with(d, **changes):
    return {**d, **changes}


class Case(NamedTuple):
    id: str
    fn: Callable
    args: tuple
    exc: type
    match: str


# ----------------------------------------------------------------------------- array cases
# fn(*args) with array/pytree args: each case runs eagerly and under jax.jit (the checks are
# on static information, so they fire while tracing).

ARRAY_CASES = [
    # --- layers.dense
    Case("dense-x-rank-0", layers.dense, (DENSE, np.float64(1.0)), ValueError,
         r"dense: x must have shape \(\.\.\., 3\) .* got \(\)"),
    Case("dense-x-wrong-features", layers.dense, (DENSE, np.ones((4, 5))), ValueError,
         r"dense: x must have shape \(\.\.\., 3\) to match params\['w'\].*got \(4, 5\)"),
    Case("dense-w-rank-1", layers.dense, (_with(DENSE, w=np.ones(3)), X2), ValueError,
         r"dense: params\['w'\] must be 2-D \(in_features, out_features\), got shape \(3,\)"),
    Case("dense-b-wrong-shape", layers.dense, (_with(DENSE, b=np.ones(3)), X2), ValueError,
         r"dense: params\['b'\] must have shape \(2,\) .* got \(3,\)"),
    Case("dense-params-missing-b", layers.dense, (_drop(DENSE, "b"), X2), ValueError,
         r"dense: params must be a dict with keys \['b', 'w'\].*got \['w'\]"),
    Case("dense-params-extra-leaf", layers.dense, (_with(DENSE, c=np.ones(2)), X2), ValueError,
         r"dense: params must be a dict with keys \['b', 'w'\].*got \['b', 'c', 'w'\]"),
    Case("dense-params-list", layers.dense, ([DENSE["w"], DENSE["b"]], X2), ValueError,
         r"dense: params must be a dict with keys .* got list"),
    # --- layers.conv2d
    Case("conv2d-x-rank-3", layers.conv2d, (X4[0], K), ValueError,
         r"conv2d: x must be 4-D \(N, H, W, C_in\), got shape \(4, 4, 2\)"),
    Case("conv2d-kernel-rank-3", layers.conv2d, (X4, K[0]), ValueError,
         r"conv2d: kernel must be 4-D \(KH, KW, C_in, C_out\), got shape \(2, 2, 3\)"),
    Case("conv2d-kernel-c-in-mismatch", layers.conv2d, (X4, np.ones((2, 2, 3, 3))), ValueError,
         r"conv2d: kernel must have shape \(KH, KW, 2, C_out\).*got kernel shape \(2, 2, 3, 3\)"),
    Case("conv2d-kernel-larger-than-input", layers.conv2d, (X4, np.ones((5, 2, 2, 3))),
         ValueError, r"conv2d: kernel spatial size \(KH, KW\) = \(5, 2\) must fit .* \(4, 4\)"),
    Case("conv2d-bias-wrong-shape", layers.conv2d, (X4, K, np.ones(2)), ValueError,
         r"conv2d: bias must have shape \(3,\) \(C_out\), got \(2,\)"),
    # --- layers.max_pool2d / avg_pool2d
    Case("max_pool2d-x-rank-3", layers.max_pool2d, (X4[0],), ValueError,
         r"max_pool2d: x must be 4-D \(N, H, W, C\), got shape \(4, 4, 2\)"),
    Case("max_pool2d-window-too-large", lambda x: layers.max_pool2d(x, 5), (X4,), ValueError,
         r"max_pool2d: window \(5, 5\) must fit in the input's spatial shape .* \(4, 4\)"),
    Case("max_pool2d-complex", layers.max_pool2d, (X4 + 1j,), TypeError,
         r"max_pool2d: x must be real .* got dtype complex128"),
    Case("avg_pool2d-x-rank-5", layers.avg_pool2d, (X4[None],), ValueError,
         r"avg_pool2d: x must be 4-D \(N, H, W, C\), got shape \(1, 1, 4, 4, 2\)"),
    Case("avg_pool2d-window-too-large", lambda x: layers.avg_pool2d(x, (2, 5)), (X4,),
         ValueError, r"avg_pool2d: window \(2, 5\) must fit .* \(4, 4\)"),
    Case("avg_pool2d-complex", layers.avg_pool2d, (X4 + 1j,), TypeError,
         r"avg_pool2d: x must be real .* got dtype complex128"),
    # --- layers.flatten
    Case("flatten-x-rank-0", layers.flatten, (np.float64(1.0),), ValueError,
         r"flatten: x must have a leading batch axis, got shape \(\)"),
    # --- layers.batch_norm
    Case("batch_norm-x-rank-1", lambda x, *a: layers.batch_norm(x, *a, train=True),
         (C3, C3, C3, C3, C3), ValueError,
         r"batch_norm: x must be at least 2-D \(N, C\) or \(N, H, W, C\), got shape \(3,\)"),
    Case("batch_norm-gamma-wrong-shape", lambda x, *a: layers.batch_norm(x, *a, train=True),
         (X2, np.ones(4), C3, C3, C3), ValueError,
         r"batch_norm: gamma must have shape \(3,\) .* got \(4,\)"),
    Case("batch_norm-beta-wrong-shape", lambda x, *a: layers.batch_norm(x, *a, train=True),
         (X2, C3, np.ones(4), C3, C3), ValueError,
         r"batch_norm: beta must have shape \(3,\) .* got \(4,\)"),
    Case("batch_norm-running_mean-rank-2", lambda x, *a: layers.batch_norm(x, *a, train=False),
         (X2, C3, C3, C3[None], C3), ValueError,
         r"batch_norm: running_mean must have shape \(3,\) .* got \(1, 3\)"),
    Case("batch_norm-running_var-wrong-shape",
         lambda x, *a: layers.batch_norm(x, *a, train=False), (X2, C3, C3, C3, np.ones(2)),
         ValueError, r"batch_norm: running_var must have shape \(3,\) .* got \(2,\)"),
    Case("batch_norm-x-complex", lambda x, *a: layers.batch_norm(x, *a, train=True),
         (X2 + 1j, C3, C3, C3, C3), TypeError,
         r"batch_norm: x must be real .* got dtype complex128"),
    Case("batch_norm-gamma-complex", lambda x, *a: layers.batch_norm(x, *a, train=True),
         (X2, C3 + 1j, C3, C3, C3), TypeError,
         r"batch_norm: gamma must be real .* got dtype complex128"),
    Case("batch_norm-one-value-per-channel", lambda x, *a: layers.batch_norm(x, *a, train=True),
         (X2[:1], C3, C3, C3, C3), ValueError,
         r"batch_norm: train mode needs more than one value per channel .* got x shape \(1, 3\)"),
    # --- layers.batch_norm_input_grad
    Case("batch_norm_input_grad-x-rank-1", layers.batch_norm_input_grad, (C3, C3, C3),
         ValueError, r"batch_norm_input_grad: x must be at least 2-D .* got shape \(3,\)"),
    Case("batch_norm_input_grad-gamma-wrong-shape", layers.batch_norm_input_grad,
         (X2, np.ones(4), X2), ValueError,
         r"batch_norm_input_grad: gamma must have shape \(3,\) .* got \(4,\)"),
    Case("batch_norm_input_grad-dy-wrong-shape", layers.batch_norm_input_grad,
         (X2, C3, np.ones((4, 4))), ValueError,
         r"batch_norm_input_grad: dy must have x's shape \(4, 3\), got \(4, 4\)"),
    Case("batch_norm_input_grad-dy-complex", layers.batch_norm_input_grad, (X2, C3, X2 + 1j),
         TypeError, r"batch_norm_input_grad: dy must be real .* got dtype complex128"),
    # --- rnn cells
    *[Case(f"{name}_cell-params-missing-leaf", fn, (_drop(p, "w_h"), CARRY[name], XR),
           ValueError, rf"{name}_cell: params must be a dict with keys \['w_x', 'w_h', .*\] "
                       rf"\(from init_{name}_cell\), got \[")
      for name, (fn, p) in CELL.items()],
    *[Case(f"{name}_cell-params-extra-leaf", fn, (_with(p, extra=np.ones(2)), CARRY[name], XR),
           ValueError, rf"{name}_cell: params must be a dict with keys .* got \[.*'extra'")
      for name, (fn, p) in CELL.items()],
    *[Case(f"{name}_cell-params-reshaped-bias", fn,
           (_with(p, **{b: p[b][None]}), CARRY[name], XR), ValueError,
           rf"{name}_cell: params\['{b}'\] must have shape \({g * 2},\) .* got shape "
           rf"\(1, {g * 2}\)")
      for (name, (fn, p)), b, g in zip(CELL.items(), ["b", "b", "b_h"], [1, 4, 3])],
    *[Case(f"{name}_cell-params-reshaped-w_x", fn,
           (_with(p, w_x=p["w_x"].reshape(-1)), CARRY[name], XR), ValueError,
           rf"{name}_cell: params\['w_x'\] must have shape \(in_features, {g * 2}\) .* got "
           rf"shape \({g * 6},\)")
      for (name, (fn, p)), g in zip(CELL.items(), [1, 4, 3])],
    *[Case(f"{name}_cell-params-reshaped-w_h", fn,
           (_with(p, w_h=p["w_h"].reshape(-1)), CARRY[name], XR), ValueError,
           rf"{name}_cell: params\['w_h'\] must have shape \(H, {'' if g == 1 else f'{g}·'}H\) "
           rf".* got shape \({g * 4},\)")
      for (name, (fn, p)), g in zip(CELL.items(), [1, 4, 3])],
    Case("rnn_cell-params-list", rnn.rnn_cell, (list(RNN.values()), H, XR), ValueError,
         r"rnn_cell: params must be a dict with keys .* got a list of length 3"),
    Case("rnn_cell-x-rank-3", rnn.rnn_cell, (RNN, H, XS), ValueError,
         r"rnn_cell: x must be 1-D or 2-D \(batch, 3\), got shape \(4, 5, 3\)"),
    Case("gru_cell-x-wrong-features", rnn.gru_cell, (GRU, H, np.ones((4, 2))), ValueError,
         r"gru_cell: x must have 3 features .* got shape \(4, 2\)"),
    Case("gru_cell-h-wrong-units", rnn.gru_cell, (GRU, np.zeros((4, 3)), XR), ValueError,
         r"gru_cell: h must have 2 units .* got shape \(4, 3\)"),
    Case("rnn_cell-h-x-batch-mismatch", rnn.rnn_cell, (RNN, np.zeros((3, 2)), XR), ValueError,
         r"rnn_cell: h and x must have the same batch shape, got h \(3, 2\) and x \(4, 3\)"),
    Case("rnn_cell-h-is-a-pair", rnn.rnn_cell, (RNN, (H, H), XR), ValueError,
         r"rnn_cell: h must be an array \(batch, 2\), got a tuple of length 2"),
    Case("rnn_cell-x-complex", rnn.rnn_cell, (RNN, H, XR + 1j), TypeError,
         r"rnn_cell: x must be real, got dtype complex128"),
    Case("gru_cell-params-complex", rnn.gru_cell, (_with(GRU, w_h=GRU["w_h"] + 0j), H, XR),
         TypeError, r"gru_cell: params\['w_h'\] must be real, got dtype complex128"),
    Case("lstm_cell-carry-not-a-pair", rnn.lstm_cell, (LSTM, H, XR), ValueError,
         r"lstm_cell: carry must be a pair \(h, c\) .* got an array of shape \(4, 2\)"),
    Case("lstm_cell-c-wrong-shape", rnn.lstm_cell, (LSTM, (H, np.zeros((4, 3))), XR),
         ValueError, r"lstm_cell: c \(carry\[1\]\) must have the shape of h \(4, 2\), got an "
                     r"array of shape \(4, 3\)"),
    Case("lstm_cell-c-complex", rnn.lstm_cell, (LSTM, (H, H + 0j), XR), TypeError,
         r"lstm_cell: c \(carry\[1\]\) must be real, got dtype complex128"),
    # --- rnn.unroll
    Case("unroll-xs-rank-2", lambda *a: rnn.unroll(rnn.rnn_cell, *a), (RNN, H, XR), ValueError,
         r"unroll: xs must be 3-D \(batch, time, features\), got shape \(4, 3\)"),
    Case("unroll-h0-batch-mismatch", lambda *a: rnn.unroll(rnn.rnn_cell, *a),
         (RNN, np.zeros((3, 2)), XS), ValueError,
         r"unroll: h0 must be \(batch, hidden\) .* batch = 4 .* got an array of shape \(3, 2\)"),
    Case("unroll-xs-wrong-features", lambda *a: rnn.unroll(rnn.rnn_cell, *a),
         (RNN, H, np.ones((4, 5, 2))), ValueError,
         r"unroll: xs must have 3 features .* got shape \(4, 5, 2\)"),
    Case("unroll-params-reshaped-leaf", lambda *a: rnn.unroll(rnn.lstm_cell, *a),
         (_with(LSTM, b=LSTM["b"][:4]), (H, H), XS), ValueError,
         r"lstm_cell: params\['b'\] must have shape \(8,\) .* got shape \(4,\)"),
    Case("unroll-lstm-h0-not-a-pair", lambda *a: rnn.unroll(rnn.lstm_cell, *a), (LSTM, H, XS),
         ValueError, r"lstm_cell: carry must be a pair \(h, c\)"),
    Case("unroll-integer-everything", lambda *a: rnn.unroll(rnn.rnn_cell, *a),
         (jax.tree_util.tree_map(lambda a: a.astype(np.int32), RNN), H.astype(np.int32),
          XS.astype(np.int32)), TypeError,
         r"unroll: params, h0 and xs \(promoted together\) must have a floating dtype, got int"),
    Case("unroll-xs-complex", lambda *a: rnn.unroll(rnn.rnn_cell, *a), (RNN, H, XS + 1j),
         TypeError, r"unroll: params, h0 and xs .* must have a floating dtype, got complex128"),
    # --- signal
    *[Case(f"{fn.__name__}-x-rank-0", fn, (np.float64(1.0),), ValueError,
           rf"{fn.__name__}: x must have at least 1 dimension \(\.\.\., n\), got shape \(\)")
      for fn in (signal.fourier_transform, signal.power_spectrum)],
    Case("fourier_features-x-rank-0", lambda x: signal.fourier_features(x, 1), (np.float64(1),),
         ValueError, r"fourier_features: x must have at least 1 dimension .* got shape \(\)"),
    *[Case(f"{fn.__name__}-axis-out-of-range", lambda x, fn=fn: fn(x, axis=2), (SIG,),
           ValueError, rf"{fn.__name__}: axis must be in \[-2, 2\) for x of shape \(2, 6\), "
                       rf"got 2")
      for fn in (signal.fourier_transform, signal.power_spectrum)],
    *[Case(f"{fn.__name__}-empty-signal", fn, (np.ones((2, 0)),), ValueError,
           rf"{fn.__name__}: x must have at least one sample along axis 1, got shape \(2, 0\)")
      for fn in (signal.fourier_transform, signal.power_spectrum)],
    Case("fourier_features-too-many-features", lambda x: signal.fourier_features(x, 5), (SIG,),
         ValueError, r"fourier_features: n_features must be in \[1, n // 2 \+ 1\] = \[1, 4\] .*"
                     r"got 5"),
    Case("fourier_features-empty-signal", lambda x: signal.fourier_features(x, 1),
         (np.ones((2, 0)),), ValueError,
         r"fourier_features: x must have at least one sample on its last axis, got shape"),
    Case("power_spectrum-complex", signal.power_spectrum, (SIG + 1j,), TypeError,
         r"power_spectrum: x must be real \(a real signal\), got dtype complex128"),
    Case("fourier_features-complex", lambda x: signal.fourier_features(x, 2), (SIG + 1j,),
         TypeError, r"fourier_features: x must be real \(a real signal\), got dtype complex128"),
    # --- models: apply
    Case("mlp-apply-params-not-a-dict", MLP.apply, (list(MLP_P.values()), XR), ValueError,
         r"serial: params must be a dict \{layer name: params\} \(from init\), got list"),
    Case("mlp-apply-params-missing-layer", MLP.apply, (_drop(MLP_P, "dense1"), XR), ValueError,
         r"serial: params is missing the entries \['dense1'\] .* got entries \['dense0'\]"),
    Case("mlp-apply-params-extra-layer", MLP.apply, (_with(MLP_P, dense9=MLP_P["dense0"]), XR),
         ValueError, r"serial: params has entries \['dense9'\] that name no layer; the layers "
                     r"are \['dense0', 'layer0', 'dense1'\]"),
    Case("mlp-apply-params-missing-leaf", MLP.apply,
         (_with(MLP_P, dense0=_drop(MLP_P["dense0"], "b")), XR), ValueError,
         r"Dense\(4\): params must be a dict with keys \['b', 'w'\] \(from init\), got \['w'\]"),
    Case("mlp-apply-params-extra-leaf", MLP.apply,
         (_with(MLP_P, dense0=_with(MLP_P["dense0"], c=np.ones(4))), XR), ValueError,
         r"Dense\(4\): params must be a dict with keys \['b', 'w'\] .* got \['b', 'c', 'w'\]"),
    Case("mlp-apply-params-reshaped-leaf", MLP.apply,
         (_with(MLP_P, dense1=_with(MLP_P["dense1"], w=MLP_P["dense1"]["w"].reshape(2, 4))),
          XR), ValueError, r"Dense\(2\): params\['w'\] must have shape \(in_features, 2\), "
                           r"got \(2, 4\)"),
    Case("mlp-apply-x-wrong-features", MLP.apply, (MLP_P, np.ones((4, 5))), ValueError,
         r"dense: x must have shape \(\.\.\., 3\) to match params\['w'\] .* got \(4, 5\)"),
    Case("mlp-apply-x-complex", MLP.apply, (MLP_P, XR + 1j), TypeError,
         r"Dense\(4\): x must be real .* got dtype complex128"),
    Case("serial-cnn-apply-x-rank-3", CNN.apply, (CNN_P, X_IMG[0]), ValueError,
         r"conv2d: x must be 4-D \(N, H, W, C_in\), got shape \(4, 4, 1\)"),
    Case("serial-cnn-apply-params-reshaped-leaf", CNN.apply,
         (_with(CNN_P, conv0=_with(CNN_P["conv0"], w=CNN_P["conv0"]["w"].reshape(3, 3, 2, 1))),
          X_IMG), ValueError,
         r"Conv2D\(2\): params\['w'\] must have shape \(3, 3, C_in, 2\), got \(3, 3, 2, 1\)"),
    Case("serial-cnn-apply-params-missing-leaf", CNN.apply,
         (_with(CNN_P, conv0=_drop(CNN_P["conv0"], "b")), X_IMG), ValueError,
         r"Conv2D\(2\): params must be a dict with keys \['b', 'w'\] .* got \['w'\]"),
    Case("serial-cnn-apply-params-for-a-pool", CNN.apply, (_with(CNN_P, layer1={"w": np.ones(2)}),
                                                    X_IMG), ValueError,
         r"MaxPool2D: params must be empty .* got PyTreeDef\(\{'w': \*\}\)"),
    Case("cnn-apply-x-rank-3", SEED_CNN.apply, (SEED_CNN_P, np.ones((8, 8, 1))), ValueError,
         r"conv2d: x must be 4-D \(N, H, W, C_in\), got shape \(8, 8, 1\)"),
    Case("cnn-apply-params-missing-layer", SEED_CNN.apply,
         (_drop(SEED_CNN_P, "dense1"), np.ones((2, 8, 8, 1))), ValueError,
         r"serial: params is missing the entries \['dense1'\] .* got entries \['conv0', "
         r"'conv1', 'dense0'\]"),
    Case("cnn-apply-x-complex", SEED_CNN.apply, (SEED_CNN_P, np.ones((2, 8, 8, 1)) + 1j),
         TypeError, r"Conv2D\(32\): x must be real .* got dtype complex128"),
    Case("flatten-layer-apply-params-not-empty", models.Flatten().apply, ({"w": C3}, X4),
         ValueError, r"Flatten: params must be empty"),
    Case("activation-layer-apply-params-not-empty", models.Activation("relu").apply,
         ({"w": C3}, X2), ValueError, r"Activation: params must be empty"),
    Case("avgpool-layer-apply-params-not-empty", models.AvgPool2D(2).apply, ([C3], X4),
         ValueError, r"AvgPool2D: params must be empty"),
    Case("Dense-apply-params-reshaped-bias", models.Dense(2).apply,
         (_with(DENSE, b=np.ones((1, 2))), X2), ValueError,
         r"Dense\(2\): params\['b'\] must have shape \(2,\), got \(1, 2\)"),
    Case("Dense-no-bias-apply-params-extra-leaf", models.Dense(2, use_bias=False).apply,
         (DENSE, X2), ValueError,
         r"Dense\(2\): params must be a dict with keys \['w'\] .* got \['b', 'w'\]"),
    Case("rnn_regressor-apply-xs-rank-2", REG.apply, (REG_P, XR), ValueError,
         r"rnn_regressor: xs must be 3-D \(batch, time, features\), got shape \(4, 3\)"),
    Case("rnn_regressor-apply-xs-wrong-features", REG.apply, (REG_P, np.ones((4, 5, 2))),
         ValueError, r"unroll: xs must have 3 features .* got shape \(4, 5, 2\)"),
    Case("rnn_regressor-apply-xs-complex", REG.apply, (REG_P, XS + 1j), TypeError,
         r"rnn_regressor: xs must be real .* got dtype complex128"),
    Case("rnn_regressor-apply-params-missing-entry", REG.apply, (_drop(REG_P, "readout"), XS),
         ValueError, r"rnn_regressor: params must be a dict with keys \['cell', 'readout'\] "
                     r"\(from init\), got \['cell'\]"),
    Case("rnn_regressor-apply-params-extra-entry", REG.apply, (_with(REG_P, h0=H), XS),
         ValueError, r"rnn_regressor: params must be a dict with keys .* got \['cell', 'h0', "
                     r"'readout'\]"),
    Case("rnn_regressor-apply-cell-extra-leaf", REG.apply,
         (_with(REG_P, cell=_with(REG_P["cell"], c0=H)), XS), ValueError,
         r"rnn_regressor: params\['cell'\] must be a dict with keys \['b', 'w_h', 'w_x'\] "
         r"\(from init\), got \['b', 'c0', 'w_h', 'w_x'\]"),
    Case("rnn_regressor-apply-cell-reshaped-leaf", REG.apply,
         (_with(REG_P, cell=_with(REG_P["cell"], b=REG_P["cell"]["b"][None])), XS), ValueError,
         r"rnn_regressor: params\['cell'\]\['b'\] must have shape \(8,\), got \(1, 8\)"),
    Case("rnn_regressor-apply-readout-reshaped-leaf", REG.apply,
         (_with(REG_P, readout=_with(REG_P["readout"], w=REG_P["readout"]["w"].T)), XS),
         ValueError, r"rnn_regressor: params\['readout'\]\['w'\] must have shape \(2, 1\), "
                     r"got \(1, 2\)"),
    Case("two_layer_sigmoid-apply-params-missing-leaf", TLS.apply, (_drop(TLS_P, "W2"), XR),
         ValueError, r"two_layer_sigmoid: params must be a dict with keys \['W1', 'W2'\] "
                     r"\(from init\), got \['W1'\]"),
    Case("two_layer_sigmoid-apply-params-extra-leaf", TLS.apply, (_with(TLS_P, b=C3), XR),
         ValueError, r"two_layer_sigmoid: params must be a dict .* got \['W1', 'W2', 'b'\]"),
    Case("two_layer_sigmoid-apply-params-reshaped-leaf", TLS.apply,
         (_with(TLS_P, W2=TLS_P["W2"].reshape(2, 4)), XR), ValueError,
         r"two_layer_sigmoid: params\['W2'\] must have shape \(4, 2\), got \(2, 4\)"),
    Case("two_layer_sigmoid-apply-x-rank-0", TLS.apply, (TLS_P, np.float64(1.0)), ValueError,
         r"two_layer_sigmoid: x must have shape \(\.\.\., 3\) \(input_size\), got \(\)"),
    Case("two_layer_sigmoid-apply-x-wrong-features", TLS.apply, (TLS_P, np.ones((4, 5))),
         ValueError, r"two_layer_sigmoid: x must have shape \(\.\.\., 3\) .* got \(4, 5\)"),
    Case("two_layer_sigmoid-apply-x-complex", TLS.apply, (TLS_P, XR + 1j), TypeError,
         r"two_layer_sigmoid: x must be real .* got dtype complex128"),
]

# ----------------------------------------------------------------------------- static cases
# Arguments that are Python values (sizes, shapes, dtypes, names, flags): no jit variant.

STATIC_CASES = [
    # --- layers
    Case("init_dense-in_features-float", lambda: layers.init_dense(KEY, 2.5, 3), (), TypeError,
         r"init_dense: in_features must be an int, got 2.5"),
    Case("init_dense-out_features-zero", lambda: layers.init_dense(KEY, 2, 0), (), ValueError,
         r"init_dense: in_features and out_features must be >= 1, got 2 and 0"),
    Case("init_dense-integer-dtype", lambda: layers.init_dense(KEY, 2, 3, dtype=jnp.int32), (),
         TypeError, r"init_dense: dtype must be a floating dtype .* got .*int32"),
    Case("init_dense-unknown-init", lambda: layers.init_dense(KEY, 2, 3, init="xavier"), (),
         ValueError, r"init_dense: init must be one of \['glorot', 'he', 'lecun'\], got 'xavier'"),
    Case("conv2d-stride-float", lambda: layers.conv2d(X4, K, stride=1.5), (), TypeError,
         r"conv2d: stride must be an int or a pair of ints \(h, w\), got 1.5"),
    Case("conv2d-stride-zero", lambda: layers.conv2d(X4, K, stride=0), (), ValueError,
         r"conv2d: stride must be >= 1, got 0"),
    Case("conv2d-padding-unknown", lambda: layers.conv2d(X4, K, padding="FULL"), (), ValueError,
         r"conv2d: padding must be an int, a pair of ints \(p_h, p_w\), 'SAME' or 'VALID', "
         r"got 'FULL'"),
    Case("conv2d-padding-negative", lambda: layers.conv2d(X4, K, padding=(1, -1)), (),
         ValueError, r"conv2d: padding must be >= 0, got \(1, -1\)"),
    Case("max_pool2d-window-float", lambda: layers.max_pool2d(X4, 2.0), (), TypeError,
         r"max_pool2d: window must be an int or a pair of ints \(h, w\), got 2.0"),
    Case("avg_pool2d-stride-zero", lambda: layers.avg_pool2d(X4, 2, 0), (), ValueError,
         r"avg_pool2d: stride must be >= 1, got 0"),
    Case("batch_norm-train-not-bool", lambda: layers.batch_norm(X2, C3, C3, C3, C3, train="yes"),
         (), TypeError, r"batch_norm: train must be a static Python bool, got 'yes'"),
    Case("batch_norm-momentum-out-of-range",
         lambda: layers.batch_norm(X2, C3, C3, C3, C3, train=True, momentum=1.5), (), ValueError,
         r"batch_norm: momentum must be in \[0, 1\], got 1.5"),
    Case("batch_norm-eps-zero", lambda: layers.batch_norm(X2, C3, C3, C3, C3, train=True, eps=0.0),
         (), ValueError, r"batch_norm: eps must be > 0, got 0.0"),
    Case("batch_norm_input_grad-eps-negative",
         lambda: layers.batch_norm_input_grad(X2, C3, X2, eps=-1.0), (), ValueError,
         r"batch_norm_input_grad: eps must be > 0, got -1.0"),
    # --- rnn
    *[Case(f"{init.__name__}-in_features-float", lambda init=init: init(KEY, 2.5, 3), (),
           TypeError, rf"{init.__name__}: in_features must be an int, got 2.5")
      for init in (rnn.init_rnn_cell, rnn.init_lstm_cell, rnn.init_gru_cell)],
    Case("init_rnn_cell-hidden-zero", lambda: rnn.init_rnn_cell(KEY, 2, 0), (), ValueError,
         r"init_rnn_cell: hidden must be > 0, got 0"),
    Case("init_lstm_cell-integer-dtype", lambda: rnn.init_lstm_cell(KEY, 2, 3, dtype=jnp.int32),
         (), TypeError, r"init_lstm_cell: dtype must be a floating dtype .* got .*int32"),
    Case("unroll-cell-not-callable", lambda: rnn.unroll("rnn", RNN, H, XS), (), TypeError,
         r"unroll: cell must be a function cell\(params, carry, x_t\) -> carry .* got a str"),
    # --- signal
    Case("fourier_transform-axis-float", lambda: signal.fourier_transform(SIG, axis=1.0), (),
         TypeError, r"fourier_transform: axis must be an int, got 1.0"),
    Case("power_spectrum-axis-bool", lambda: signal.power_spectrum(SIG, axis=True), (),
         TypeError, r"power_spectrum: axis must be an int, got True"),
    Case("fourier_features-n_features-float", lambda: signal.fourier_features(SIG, 2.0), (),
         TypeError, r"fourier_features: n_features must be an int, got 2.0"),
    Case("fourier_features-n_features-zero", lambda: signal.fourier_features(SIG, 0), (),
         ValueError, r"fourier_features: n_features must be in \[1, n // 2 \+ 1\] .* got 0"),
    # --- models: constructors and init
    Case("get_activation-unknown-name", lambda: models.get_activation("swish"), (), ValueError,
         r"get_activation: activation must be a callable or one of \[.*\], got 'swish'"),
    Case("mlp-sizes-not-a-list", lambda: models.mlp(3), (), TypeError,
         r"mlp: sizes must be a list of ints \(layer widths\), got 3"),
    Case("mlp-sizes-too-short", lambda: models.mlp([3]), (), ValueError,
         r"mlp: sizes must list >= 2 positive layer widths, got \[3\]"),
    Case("mlp-init-input_shape-not-a-tuple", lambda: MLP.init(KEY, 3), (), TypeError,
         r"mlp: input_shape must be a tuple of ints, got 3"),
    Case("mlp-init-input_shape-wrong-features", lambda: MLP.init(KEY, (-1, 5)), (), ValueError,
         r"mlp: input_shape must end in sizes\[0\] = 3, got \(-1, 5\)"),
    Case("Dense-init-input_shape-rank-0", lambda: models.Dense(3).init(KEY, ()), (), ValueError,
         r"Dense: input_shape must be at least 1-D \(\.\.\., features\), got \(\)"),
    Case("Conv2D-init-input_shape-rank-3", lambda: models.Conv2D(2).init(KEY, (4, 4, 1)), (),
         ValueError, r"Conv2D: input_shape must be 4-D \(N, H, W, C_in\), got \(4, 4, 1\)"),
    Case("Conv2D-integer-dtype", lambda: models.Conv2D(2, dtype=jnp.int32), (), TypeError,
         r"Conv2D: dtype must be a floating dtype .* got .*int32"),
    Case("MaxPool2D-init-input_shape-rank-3", lambda: models.MaxPool2D(2).init(KEY, (4, 4, 1)),
         (), ValueError, r"MaxPool2D: input_shape must be 4-D \(N, H, W, C\), got \(4, 4, 1\)"),
    Case("Flatten-init-input_shape-floats", lambda: models.Flatten().init(KEY, (2.0, 3.0)), (),
         TypeError, r"Flatten: input_shape must be a tuple of ints, got \(2.0, 3.0\)"),
    Case("serial-model-not-a-pair", lambda: models.serial(models.Dense(2), 3), (), TypeError,
         r"serial: models\[1\] must be an \(init, apply\) pair .* got 3"),
    Case("serial-duplicate-names", lambda: models.serial(models.Dense(2), models.Dense(2),
                                                         names=["a", "a"]), (),
         ValueError, r"serial: names must be 2 distinct strings, got \['a', 'a'\]"),
    Case("two_layer_sigmoid-init-input_shape-wrong-features",
         lambda: TLS.init(KEY, (-1, 5)), (), ValueError,
         r"two_layer_sigmoid: input_shape must end in 3, got \(-1, 5\)"),
    Case("cnn-init-input_shape-rank-3", lambda: models.cnn(3).init(KEY, (8, 8, 1)), (),
         ValueError, r"Conv2D: input_shape must be 4-D \(N, H, W, C_in\), got \(8, 8, 1\)"),
    Case("rnn_regressor-unknown-cell", lambda: models.rnn_regressor(2, cell="elman"), (),
         ValueError, r"rnn_regressor: cell must be one of \['gru', 'lstm', 'rnn'\], got 'elman'"),
    Case("rnn_regressor-init-input_shape-rank-2", lambda: REG.init(KEY, (5, 3)), (),
         ValueError, r"rnn_regressor: input_shape must be 3-D \(batch, time, features\), "
                     r"got \(5, 3\)"),
]


def _ids(cases):
    return [c.id for c in cases]


def test_case_ids_are_unique():
    ids = _ids(ARRAY_CASES) + _ids(STATIC_CASES) + _ids(NAN_CASES) + _ids(DTYPE_CASES)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("case", ARRAY_CASES, ids=_ids(ARRAY_CASES))
def test_bad_array_input(case, use_jit):
    fn = jax.jit(case.fn) if use_jit else case.fn
    with pytest.raises(case.exc, match=case.match):
        fn(*case.args)


@pytest.mark.parametrize("case", STATIC_CASES, ids=_ids(STATIC_CASES))
def test_bad_static_input(case):
    with pytest.raises(case.exc, match=case.match):
        case.fn()


# ----------------------------------------------------------------------------- NaN input
# (id, fn, args with one NaN, mask of the outputs the NaN reaches). The NaN goes in at index 0
# of the first array argument (row 0, first pixel/sample); ``reach(out)`` says which entries of
# the (first) output must be NaN; all the others must stay finite.


def _row0(out):
    mask = np.zeros(np.shape(out), bool)
    mask[0] = True
    return mask


def _channel0(out):
    mask = np.zeros(np.shape(out), bool)
    mask[..., 0] = True
    return mask


def _first(out):
    mask = np.zeros(np.shape(out), bool)
    mask[(0,) * mask.ndim] = True
    return mask


def _row0_all_signals(out):  # a NaN sample spreads over every bin of its own signal
    return _row0(out)


def _first_pixel(out):  # every output channel of the first pixel of the first image
    mask = np.zeros(np.shape(out), bool)
    mask[0, 0, 0, :] = True
    return mask


def _nan_at_first(a):
    a = np.array(a, np.float64)
    a[(0,) * a.ndim] = NAN
    return a


class NanCase(NamedTuple):
    id: str
    fn: Callable
    args: tuple
    reach: Callable


def _first_output(fn):
    return lambda *a: jax.tree_util.tree_leaves(fn(*a))[0]


NAN_CASES = [
    NanCase("dense-nan-x", lambda x, p: layers.dense(p, x), (X2, DENSE), _row0),
    NanCase("conv2d-nan-x", lambda x, k: layers.conv2d(x, k), (X4, K), _first_pixel),
    NanCase("max_pool2d-nan-x", lambda x: layers.max_pool2d(x, 2), (X4,), _first),
    NanCase("avg_pool2d-nan-x", lambda x: layers.avg_pool2d(x, 2), (X4,), _first),
    NanCase("flatten-nan-x", layers.flatten, (X4,), _first),
    NanCase("batch_norm-train-nan-x",
            lambda x, *a: layers.batch_norm(x, *a, train=True)[0], (X2, C3, C3, C3, C3),
            _channel0),
    NanCase("batch_norm-train-nan-x-running-stats",
            lambda x, *a: layers.batch_norm(x, *a, train=True)[1][0], (X2, C3, C3, C3, C3),
            _first),
    NanCase("batch_norm-eval-nan-x",
            lambda x, *a: layers.batch_norm(x, *a, train=False)[0], (X2, C3, C3, C3, C3),
            _first),
    NanCase("batch_norm_input_grad-nan-x", layers.batch_norm_input_grad, (X2, C3, X2),
            _channel0),
    *[NanCase(f"{name}_cell-nan-x", _first_output(lambda x, p, h, fn=fn: fn(p, h, x)),
              (XR, p, CARRY[name]), _row0) for name, (fn, p) in CELL.items()],
    *[NanCase(f"unroll-{name}-nan-xs", lambda x, p, h, fn=fn: rnn.unroll(fn, p, h, x)[1],
              (XS, p, CARRY[name]), _row0) for name, (fn, p) in CELL.items()],
    NanCase("fourier_transform-nan-x", signal.fourier_transform, (SIG,), _row0_all_signals),
    NanCase("power_spectrum-nan-x", signal.power_spectrum, (SIG,), _row0_all_signals),
    NanCase("fourier_features-nan-x", lambda x: signal.fourier_features(x, 3), (SIG,),
            _row0_all_signals),
    NanCase("mlp-apply-nan-x", lambda x, p: MLP.apply(p, x), (XR, MLP_P), _row0),
    NanCase("serial-cnn-apply-nan-x", lambda x, p: CNN.apply(p, x), (X_IMG, CNN_P), _row0),
    NanCase("rnn_regressor-apply-nan-xs", lambda x, p: REG.apply(p, x), (XS, REG_P), _row0),
    NanCase("two_layer_sigmoid-apply-nan-x", lambda x, p: TLS.apply(p, x), (XR, TLS_P), _row0),
]


@pytest.mark.parametrize("case", NAN_CASES, ids=_ids(NAN_CASES))
def test_nan_input_propagates(case):
    args = (_nan_at_first(case.args[0]),) + case.args[1:]
    out = np.asarray(jax.jit(case.fn)(*args))
    reach = np.broadcast_to(case.reach(out), out.shape)
    assert reach.any(), "the test must expect some NaN"
    np.testing.assert_array_equal(np.isnan(out), reach)


# ----------------------------------------------------------------------------- accepted dtypes
# Not errors, by design: integer and bool inputs are promoted, and the linear maps keep complex.
# (id, fn, args, expected output dtype)


class DtypeCase(NamedTuple):
    id: str
    fn: Callable
    args: tuple
    dtype: type


I32 = np.int32
DTYPE_CASES = [
    DtypeCase("dense-int-x", lambda x, p: layers.dense(p, x), (X2.astype(I32), DENSE),
              np.float64),
    DtypeCase("dense-int-everything", lambda x, p: layers.dense(p, x),
              (X2.astype(I32), _np(jax.tree_util.tree_map(lambda a: a.astype(I32), DENSE))), I32),
    DtypeCase("dense-complex-x", lambda x, p: layers.dense(p, x), (X2 + 1j, DENSE),
              np.complex128),
    DtypeCase("conv2d-int-everything", layers.conv2d, (X4.astype(I32), K.astype(I32)), I32),
    DtypeCase("conv2d-complex-x", layers.conv2d, (X4 + 1j, K), np.complex128),
    DtypeCase("max_pool2d-int-x", layers.max_pool2d, (X4.astype(I32),), I32),
    DtypeCase("max_pool2d-bool-x", layers.max_pool2d, (X4 > 0,), np.bool_),
    DtypeCase("avg_pool2d-int-x", layers.avg_pool2d, (X4.astype(I32),), np.float64),
    DtypeCase("avg_pool2d-bool-x", layers.avg_pool2d, (X4 > 0,), np.float64),
    DtypeCase("flatten-complex-x", layers.flatten, (X4 + 1j,), np.complex128),
    DtypeCase("batch_norm-int-x", lambda x, *a: layers.batch_norm(x, *a, train=True)[0],
              (X2.astype(I32), C3, C3, C3, C3), np.float64),
    DtypeCase("batch_norm_input_grad-int-x", layers.batch_norm_input_grad,
              (X2.astype(I32), C3, X2), np.float64),
    DtypeCase("rnn_cell-int-x", lambda x, p, h: rnn.rnn_cell(p, h, x), (XR.astype(I32), RNN, H),
              np.float64),
    DtypeCase("unroll-int-xs-float32-params", lambda x, p, h: rnn.unroll(rnn.gru_cell, p, h, x)[1],
              (XS.astype(I32), jax.tree_util.tree_map(lambda a: a.astype(np.float32), GRU),
               H.astype(np.float32)), np.float32),
    DtypeCase("fourier_transform-int-x", signal.fourier_transform, (SIG.astype(I32),),
              np.complex128),
    DtypeCase("power_spectrum-bool-x", signal.power_spectrum, (SIG > 0,), np.float64),
    DtypeCase("fourier_features-int-x", lambda x: signal.fourier_features(x, 2),
              (SIG.astype(I32),), np.float64),
    DtypeCase("mlp-apply-int-x", lambda x, p: MLP.apply(p, x), (XR.astype(I32), MLP_P),
              np.float64),
    DtypeCase("rnn_regressor-apply-int-xs", lambda x, p: REG.apply(p, x), (XS.astype(I32), REG_P),
              np.float64),
    DtypeCase("two_layer_sigmoid-apply-bool-x", lambda x, p: TLS.apply(p, x), (XR > 0, TLS_P),
              np.float64),
]


@pytest.mark.parametrize("case", DTYPE_CASES, ids=_ids(DTYPE_CASES))
def test_accepted_dtype(case):
    out = jax.jit(case.fn)(*case.args)
    assert out.dtype == case.dtype
    assert np.all(np.isfinite(np.asarray(out)))
