"""The edge_of_stability study: results contract, sharpness measurements, plots."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import _common
from experiments import edge_of_stability as eos
from jaxcalc import derivatives, losses, models, runner


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("edge_of_stability")
    config = dict(eos.DEFAULT_CONFIG, **eos.QUICK_CONFIG, out_dir=str(out), quick=True,
                  progress=False)
    return eos.run(config), out


def test_results_contract(quick):
    results, _ = quick
    lrs = eos.QUICK_CONFIG["learning_rates"]
    assert results["learning_rates"] == lrs
    for key in ("final_sharpness", "ratio_to_2_over_lr", "tail_mean_sharpness",
                "initial_sharpness", "max_sharpness", "final_loss", "first_step_at_edge"):
        assert len(results[key]) == len(lrs), key
    for key in ("final_sharpness", "ratio_to_2_over_lr", "final_loss"):
        assert all(math.isfinite(v) for v in results[key]), key
    assert all(r > 0 for r in results["ratio_to_2_over_lr"])
    for lr, tail, ratio in zip(lrs, results["tail_mean_sharpness"], results["ratio_to_2_over_lr"]):
        assert ratio == pytest.approx(tail * lr / 2.0, rel=1e-14)
    json.dumps(runner.to_jsonable(results), allow_nan=False)


def test_sharpness_measured_at_the_expected_points(quick):
    results, _ = quick
    steps, every = eos.QUICK_CONFIG["steps"], eos.QUICK_CONFIG["sharpness_every"]
    expected = list(range(0, steps + 1, every))  # before the first step and after each chunk
    assert results["num_measurements"] == len(expected) == 6
    for run in results["runs"]:
        assert run["sharpness_steps"] == expected
        assert len(run["sharpness"]) == len(expected)
        assert len(run["loss"]) == steps + 1
        assert np.all(np.isfinite(run["sharpness"])) and np.all(np.isfinite(run["loss"]))
        assert run["sharpness"][-1] == results["final_sharpness"][results["runs"].index(run)]


def test_every_run_starts_from_the_same_point_and_sharpens(quick):
    results, _ = quick
    first = [run["sharpness"][0] for run in results["runs"]]
    assert first[0] == pytest.approx(first[1], rel=1e-10)  # same init, Lanczos key per index
    assert len({run["loss"][0] for run in results["runs"]}) == 1
    # the small read-out init starts the network flat: sharpness rises (progressive sharpening)
    for s0, smax in zip(results["initial_sharpness"], results["max_sharpness"]):
        assert smax > 1.2 * s0


def test_plots_exist(quick):
    _, out = quick
    for name in ("sharpness.png", "loss.png"):
        assert (out / name).stat().st_size > 10_000, name


def test_summary_mentions_each_learning_rate(quick):
    text = eos.summarize(quick[0])
    assert "tail/(2/lr)" in text and "6 measurements" in text
    for lr in eos.QUICK_CONFIG["learning_rates"]:
        assert f"{lr:g}" in text


def test_lanczos_sharpness_equals_the_dense_hessian_eigenvalue(tmp_path):
    # a net small enough (64 → 3 → 10, 235 parameters) for the dense Hessian
    config = dict(eos.DEFAULT_CONFIG, learning_rates=[0.5], steps=10, sharpness_every=10,
                  num_examples=40, hidden=3, lanczos_iters=60, out_dir=str(tmp_path),
                  progress=False)
    results = eos.run(config)
    with jax.enable_x64(True):
        digits = _common.load_digits(dtype=np.float64)
        x = jnp.asarray(digits.flat()[0][:40])
        y = jax.nn.one_hot(jnp.asarray(digits.y_train[:40]), 10, dtype=jnp.float64)
        net = models.mlp([64, 3, 10], "tanh", dtype=jnp.float64)
        init_key, _ = jax.random.split(jax.random.PRNGKey(config["seed"]))
        params = eos._scaled_readout(net.init(init_key)[1], config["readout_scale"])
        loss = lambda p: losses.mse(net.apply(p, x), y)
        dense = jax.jit(lambda p: derivatives.hessian_matrix(loss, p))
        hessian = dense(params)
        top = float(jnp.linalg.eigvalsh(hessian)[-1])
        top_unscaled = float(jnp.linalg.eigvalsh(dense(net.init(init_key)[1]))[-1])
    assert results["num_params"] == hessian.shape[0] == 64 * 3 + 3 + 3 * 10 + 10
    assert results["initial_sharpness"][0] == pytest.approx(top, rel=1e-9)
    # a real check: the plain Glorot init (read-out not scaled) has a different sharpness
    assert results["initial_sharpness"][0] != pytest.approx(top_unscaled, rel=0.1)


def test_scaled_readout_scales_only_the_last_layer():
    params = {"dense0": {"w": jnp.ones((2, 3)), "b": jnp.ones(3)},
              "dense1": {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}}
    scaled = eos._scaled_readout(params, 0.1)
    np.testing.assert_array_equal(scaled["dense0"]["w"], params["dense0"]["w"])
    np.testing.assert_allclose(scaled["dense1"]["w"], 0.1 * np.ones((3, 4)))
    np.testing.assert_allclose(scaled["dense1"]["b"], 0.1 * np.ones(4))


def test_tail_mean_averages_the_last_fraction():
    steps = [0, 20, 40, 60, 80, 100]
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 7.0]
    assert eos._tail_mean(steps, values, 100, 0.2) == 6.0    # steps 80 and 100
    assert eos._tail_mean(steps, values, 100, 1.0) == pytest.approx(22.0 / 6)
    assert eos._tail_mean(steps, values, 100, 0.2) != np.mean(values)


@pytest.mark.parametrize("override, match", [
    ({"steps": 30, "sharpness_every": 20}, "steps must be a positive multiple of sharpness_every"),
    ({"steps": 0}, "steps must be a positive multiple"),
    ({"tail_fraction": 0.0}, "tail_fraction must be in"),
])
def test_bad_configuration_is_rejected_before_any_work(tmp_path, override, match):
    config = dict(eos.DEFAULT_CONFIG, **override, out_dir=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match=f"edge_of_stability: {match}"):
        eos.run(config)
    assert not list(tmp_path.iterdir())
