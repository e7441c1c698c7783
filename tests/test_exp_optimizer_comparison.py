"""The optimizer_comparison study: results contract, plots, and what convexity makes certain."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import optimizer_comparison as oc
from jaxcalc import runner


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("optimizer_comparison")
    config = dict(oc.DEFAULT_CONFIG, **oc.QUICK_CONFIG, out_dir=str(out), quick=True,
                  progress=False)
    return oc.run(config), out


def test_results_contract(quick):
    results, _ = quick
    runs = results["runs"]
    assert list(runs) == oc.QUICK_CONFIG["tasks"]
    steps = oc.QUICK_CONFIG["digits_steps"]
    for task, by_trainer in runs.items():
        assert list(by_trainer) == list(oc.TRAINERS), task
        for trainer, r in by_trainer.items():
            for key in ("final_loss", "steps", "seconds", "train_accuracy", "loss", "time",
                        "learning_rate", "compile_seconds", "rejected_steps"):
                assert key in r, (task, trainer, key)
            assert r["steps"] == steps
            assert len(r["loss"]) == len(r["time"]) == steps + 1
            assert math.isfinite(r["final_loss"]), (task, trainer)
            assert r["loss"][-1] == r["final_loss"]
            assert np.all(np.isfinite(r["loss"]))
            assert r["time"][0] == 0.0 and np.all(np.diff(r["time"]) >= 0)
            assert r["seconds"] == r["time"][-1] > 0
            assert 0.0 <= r["train_accuracy"] <= 1.0
            assert 0 <= r["rejected_steps"] <= steps
    for r in runs["logreg_digits"].values():
        assert 0.0 <= r["test_accuracy"] <= 1.0
    # what the runner writes must be JSON
    json.dumps(runner.to_jsonable(results), allow_nan=False)


def test_newton_beats_sgd_on_the_convex_task(quick):
    logreg = quick[0]["runs"]["logreg_digits"]
    assert logreg["newton_dense"]["final_loss"] <= logreg["sgd"]["final_loss"]
    assert logreg["newton_cg"]["final_loss"] <= logreg["sgd"]["final_loss"]


def test_both_newtons_reach_the_same_minimum_of_the_convex_task(quick):
    # L2-regularized softmax regression is strictly convex: both Newton variants converge to its
    # unique minimizer within the quick run's 20 steps (quadratically / superlinearly).
    logreg = quick[0]["runs"]["logreg_digits"]
    dense, cg = logreg["newton_dense"]["final_loss"], logreg["newton_cg"]["final_loss"]
    assert abs(dense - cg) <= 1e-10 * dense
    assert all(r["final_loss"] >= dense - 1e-12 for r in logreg.values())


def test_plots_exist(quick):
    _, out = quick
    for name in ("loss_vs_step.png", "loss_vs_time.png", "logreg_suboptimality.png"):
        assert (out / name).stat().st_size > 10_000, name


def test_summary_lists_every_run(quick):
    text = oc.summarize(quick[0])
    for trainer in oc.TRAINERS:
        assert trainer in text
    assert "logreg_digits" in text and "final loss" in text


@pytest.mark.parametrize("trainer_name, lr, jit", [("momentum", 16.0, False),
                                                    ("natgrad_true", 1.0, True)])
def test_recorded_loss_curve_is_the_loss_at_each_iterate(trainer_name, lr, jit):
    # the curve holds L(θ_0), ..., L(θ_steps): re-run the same steps by hand (with and without
    # jax.jit) and compare; XOR also exercises the squared-error tasks' Gaussian Fisher
    with jax.enable_x64(True):
        task = oc.make_task("xor", oc.DEFAULT_CONFIG)
        trainer = oc.make_trainer(trainer_name, task, lr, oc.DEFAULT_CONFIG)
        recorded = oc.train(trainer, task, 4)
        step = jax.jit(trainer.step) if jit else trainer.step
        params, state = task.params, trainer.init(task.params)
        by_hand = [float(task.loss_fn(params, task.train))]
        for _ in range(4):
            params, state, _ = step(params, state, task.train)
            by_hand.append(float(task.loss_fn(params, task.train)))
    np.testing.assert_allclose(recorded["loss"], by_hand, rtol=1e-12, atol=0)
    assert recorded["loss"][0] > recorded["loss"][-1]


def test_two_spirals_are_balanced_and_deterministic():
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(3)
        points, labels = oc.two_spirals(key, 25, 0.05)
        again, _ = oc.two_spirals(key, 25, 0.05)
        clean, _ = oc.two_spirals(key, 25, 0.0)
    assert points.shape == (50, 2) and labels.shape == (50, 1)
    assert points.dtype == jnp.float64
    np.testing.assert_array_equal(points, again)
    assert float(jnp.sum(labels)) == 25.0
    # without jitter the second spiral is the first turned by π: points are negated
    np.testing.assert_allclose(clean[25:], -clean[:25], atol=1e-15)
    radius = jnp.linalg.norm(clean, axis=1)
    assert float(radius.min()) == pytest.approx(0.1) and float(radius.max()) == pytest.approx(1.0)


def test_spirals_task_has_a_bias_column():
    with jax.enable_x64(True):
        task = oc.make_task("spirals", dict(oc.DEFAULT_CONFIG, spiral_points=10))
    inputs, targets = task.train
    assert inputs.shape == (20, 3) and targets.shape == (20, 1)
    np.testing.assert_array_equal(inputs[:, 2], np.ones(20))
    assert task.params["W1"].shape == (3, oc.DEFAULT_CONFIG["spiral_hidden"])


def test_learning_rate_table_covers_every_pair():
    for task in oc.TASKS:
        assert set(oc.DEFAULT_CONFIG["learning_rates"][task]) == set(oc.TRAINERS), task
        assert all(lr > 0 for lr in oc.DEFAULT_CONFIG["learning_rates"][task].values())


@pytest.mark.parametrize("key, value", [("tasks", ["logreg_digits", "mnist"]),
                                        ("trainers", ["sgd", "adam"])])
def test_unknown_task_or_trainer_is_rejected_before_any_work(tmp_path, key, value):
    config = dict(oc.DEFAULT_CONFIG, out_dir=str(tmp_path), quick=True, **{key: value})
    with pytest.raises(ValueError, match=f"optimizer_comparison: unknown .*'{value[-1]}'"):
        oc.run(config)
    assert not list(tmp_path.iterdir())


def test_missing_learning_rate_is_rejected_before_any_work(tmp_path):
    rates = {"xor": {"sgd": 1.0}}
    config = dict(oc.DEFAULT_CONFIG, out_dir=str(tmp_path), tasks=["xor"],
                  trainers=["sgd", "newton_cg"], learning_rates=rates)
    with pytest.raises(ValueError, match=r"learning_rates has no entry for \['xor/newton_cg'\]"):
        oc.run(config)
    assert not list(tmp_path.iterdir())


def test_make_task_and_make_trainer_reject_unknown_names():
    with pytest.raises(ValueError, match="task must be one of"):
        oc.make_task("cifar", oc.DEFAULT_CONFIG, digits=((None, None), (None, None)))
    with jax.enable_x64(True):
        task = oc.make_task("xor", oc.DEFAULT_CONFIG)
    with pytest.raises(ValueError, match="trainer must be one of"):
        oc.make_trainer("lbfgs", task, 1.0, oc.DEFAULT_CONFIG)
