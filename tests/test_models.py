"""Models: stax-style (init, apply) pairs, shapes, parameter layout, jit, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc import layers, models, rnn


def _init_apply(model, shape, key=0):
    out_shape, params = model.init(jax.random.PRNGKey(key), shape)
    x = jax.random.normal(jax.random.PRNGKey(key + 1), (2,) + tuple(shape[1:]))
    return out_shape, params, x


def test_mlp_shapes_layout_and_forward_formula():
    model = models.mlp([3, 5, 2], "tanh")
    out_shape, params, x = _init_apply(model, (-1, 3))
    assert out_shape == (-1, 2)
    assert set(params) == {"dense0", "dense1"}
    assert params["dense0"]["w"].shape == (3, 5) and params["dense1"]["b"].shape == (2,)
    expected = jnp.tanh(x @ params["dense0"]["w"] + params["dense0"]["b"]) @ params["dense1"]["w"] \
        + params["dense1"]["b"]
    np.testing.assert_allclose(model.apply(params, x), expected, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(model.apply)(params, x), expected, rtol=1e-12)


def test_mlp_default_input_shape_and_bad_sizes():
    out_shape, params = models.mlp([4, 1]).init(jax.random.PRNGKey(0))
    assert out_shape == (-1, 1)
    with pytest.raises(ValueError, match="sizes"):
        models.mlp([4])
    with pytest.raises(ValueError, match="input_shape"):
        models.mlp([4, 1]).init(jax.random.PRNGKey(0), (-1, 3))
    with pytest.raises(ValueError, match="activation"):
        models.mlp([2, 2], "swishy")


def test_cnn_is_the_seed_architecture():
    model = models.cnn(10)
    out_shape, params, x = _init_apply(model, (-1, 8, 8, 1))
    assert out_shape == (-1, 10)
    assert params["conv0"]["w"].shape == (3, 3, 1, 32)
    assert params["conv1"]["w"].shape == (3, 3, 32, 64)
    assert params["dense0"]["w"].shape == (2 * 2 * 64, 128)
    assert params["dense1"]["w"].shape == (128, 10)
    y = model.apply(params, x)
    assert y.shape == (2, 10) and bool(jnp.all(jnp.isfinite(y)))
    # by hand, layer by layer
    h = layers.max_pool2d(jax.nn.relu(layers.conv2d(x, params["conv0"]["w"], params["conv0"]["b"],
                                                    padding="SAME")))
    h = layers.max_pool2d(jax.nn.relu(layers.conv2d(h, params["conv1"]["w"], params["conv1"]["b"],
                                                    padding="SAME")))
    h = jax.nn.relu(layers.dense(params["dense0"], layers.flatten(h)))
    np.testing.assert_allclose(y, layers.dense(params["dense1"], h), rtol=1e-10, atol=1e-12)


def test_cnn_on_28x28_unpadded_like_the_seed_loop():
    out_shape, params = models.cnn(10, conv_padding=0).init(jax.random.PRNGKey(0), (-1, 28, 28, 1))
    assert out_shape == (-1, 10)
    assert params["dense0"]["w"].shape == (5 * 5 * 64, 128)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_rnn_regressor_is_many_to_one(cell):
    model = models.rnn_regressor(4, 2, cell=cell)
    out_shape, params, xs = _init_apply(model, (-1, 6, 3))
    assert out_shape == (-1, 2)
    y = model.apply(params, xs)
    assert y.shape == (2, 2)
    cell_fn = {"rnn": rnn.rnn_cell, "lstm": rnn.lstm_cell, "gru": rnn.gru_cell}[cell]
    h0 = jnp.zeros((2, 4))
    h_last, _ = rnn.unroll(cell_fn, params["cell"], (h0, h0) if cell == "lstm" else h0, xs)
    h_last = h_last[0] if cell == "lstm" else h_last
    np.testing.assert_allclose(y, layers.dense(params["readout"], h_last), rtol=1e-12)
    with pytest.raises(ValueError, match="cell"):
        models.rnn_regressor(4, cell="transformer")


def test_two_layer_sigmoid_matches_seed_forward():
    model = models.two_layer_sigmoid(2, 3, 1)
    _, p = model.init(jax.random.PRNGKey(0))
    X = np.array([[0.0, 1.0], [1.0, 1.0]])
    sig = lambda z: 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(model.apply(p, X), sig(sig(X @ np.asarray(p["W1"])) @ np.asarray(p["W2"])),
                               rtol=1e-14)


def test_serial_names_and_paramless_layers():
    net = models.serial(models.Dense(3), models.Activation("relu"), models.Dense(2),
                        names=["first", "act", "second"])
    _, params = net.init(jax.random.PRNGKey(0), (-1, 4))
    assert set(params) == {"first", "second"}
    with pytest.raises(ValueError, match="distinct"):
        models.serial(models.Dense(3), models.Dense(2), names=["a", "a"])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtype_follows_the_model(dtype):
    model = models.mlp([3, 4, 1], "sigmoid", dtype=dtype)
    _, params = model.init(jax.random.PRNGKey(0))
    assert all(leaf.dtype == dtype for leaf in jax.tree_util.tree_leaves(params))
    assert model.apply(params, jnp.ones((2, 3), dtype)).dtype == dtype


def test_model_gradients_match_finite_differences():
    model = models.mlp([2, 3, 1], "tanh")
    _, params = model.init(jax.random.PRNGKey(3))
    x = jax.random.normal(jax.random.PRNGKey(4), (5, 2))
    loss = lambda p: jnp.mean(model.apply(p, x) ** 2)
    g = jax.grad(loss)(params)
    h = 1e-6
    w = params["dense0"]["w"]
    for idx in [(0, 0), (1, 2)]:
        plus = dict(params, dense0=dict(params["dense0"], w=w.at[idx].add(h)))
        minus = dict(params, dense0=dict(params["dense0"], w=w.at[idx].add(-h)))
        fd = (loss(plus) - loss(minus)) / (2 * h)
        np.testing.assert_allclose(g["dense0"]["w"][idx], fd, rtol=1e-7, atol=1e-10)
