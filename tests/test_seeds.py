"""The seed notes' printed numbers, reproduced by jaxcalc (issue [1/7])."""

import jax
import jax.numpy as jnp
import numpy as np

from experiments import seeds
from jaxcalc import activations, layers


def test_sigmoid_derivative_at_half_is_the_seed_value():
    assert float(activations.sigmoid_derivative(jnp.float64(0.5))) == 0.2350037122015945


def test_neuron_gradient_step_reproduces_printed_weights():
    x = jnp.array([0.5, 0.3, 0.1])
    params = {"w": jnp.array([0.4, 0.2, 0.6]), "b": jnp.float64(0.1)}
    loss = lambda p: (activations.sigmoid(x @ p["w"] + p["b"]) - 0.4) ** 2
    g = jax.grad(loss)(params)
    w = params["w"] - 0.1 * g["w"]
    b = params["b"] - 0.1 * g["b"]
    np.testing.assert_allclose(w, [0.39513082, 0.19707849, 0.59902616], atol=5e-9)
    np.testing.assert_allclose(b, 0.09026164910025532, rtol=0, atol=1e-16)


def test_conv_and_pool_of_the_seed_image():
    image = jnp.arange(1.0, 17.0).reshape(1, 4, 4, 1)
    kernel = jnp.array([[-1.0, -1.0], [1.0, 1.0]]).reshape(2, 2, 1, 1)
    np.testing.assert_array_equal(layers.conv2d(image, kernel)[0, ..., 0], np.full((3, 3), 8.0))
    np.testing.assert_array_equal(layers.max_pool2d(image, 2, 2)[0, ..., 0], [[6.0, 8.0], [14.0, 16.0]])


def test_seeds_experiment_every_row_passes(tmp_path):
    config = dict(seeds.DEFAULT_CONFIG, out_dir=str(tmp_path), plots=False)
    results = seeds.run(config)
    failed = [r["name"] for r in results["rows"] if not r["passed"]]
    assert results["passed"] and not failed, failed
    names = " ".join(r["name"] for r in results["rows"])
    for must in ["sigmoid_derivative(0.5)", "updated weights", "updated bias", "conv2d", "max_pool2d",
                 "chain rule", "two-layer backprop", "linreg"]:
        assert must in names
    # the rows really compare something: a wrong reference must fail
    bad = seeds._row("x", "test", 1.0, 1.0 + 1e-9, 1e-12)
    assert not bad["passed"]


def test_seed_two_layer_backprop_is_grad_of_half_sum_not_mean():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(6, 2)), rng.uniform(size=(6, 1))
    W1, W2 = rng.normal(size=(2, 3)), rng.normal(size=(3, 1))
    dW1, dW2 = seeds._seed_two_layer_grads(X, y, W1, W2)
    f = lambda W1_, W2_, red: red((jax.nn.sigmoid(jax.nn.sigmoid(X @ W1_) @ W2_) - y) ** 2)
    g_half = jax.grad(lambda a, b: 0.5 * f(a, b, jnp.sum), argnums=(0, 1))(W1, W2)
    g_mean = jax.grad(lambda a, b: f(a, b, jnp.mean), argnums=(0, 1))(W1, W2)
    np.testing.assert_allclose(g_half[0], dW1, rtol=1e-12)
    np.testing.assert_allclose(g_half[1], dW2, rtol=1e-12)
    assert not np.allclose(g_mean[0], dW1)  # the seed's gradient is NOT of its own mean loss
    np.testing.assert_allclose(g_mean[0] * y.size / 2, dW1, rtol=1e-12)
