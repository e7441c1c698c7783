"""Tests of ``jaxcalc.training.fit``: resume bit-identity, NaN stops, atomic checkpoints, shuffling,
history entries, sharpness, callbacks, compile-once, progress bar and argument checks.

Every model is tiny (a 2-3-1 tanh MLP, N = 12 examples) and the trainers are module-level
objects, so ``fit``'s per-trainer compile cache is shared between tests.
"""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxcalc import models, trainers
from jaxcalc.trainers import Trainer
from jaxcalc.training import CHECKPOINT_NAME, fit, load_checkpoint, save_checkpoint

from _trees import assert_histories_equal, assert_trees_identical, host_leaves

N = 12
BATCH = 5  # 2 steps per epoch, 2 examples dropped per epoch
EPOCHS = 4
KEY = jax.random.PRNGKey(2)

NET = models.mlp([2, 3, 1], "tanh")


def make_data(dtype=jnp.float64):
    """``(x, y, idx)``: inputs (N, 2), targets (N, 1) and each example's index (N,)."""
    x = jax.random.normal(jax.random.PRNGKey(1), (N, 2), dtype)
    return x, jnp.sin(x[:, :1]) + 0.5 * x[:, 1:], jnp.arange(N, dtype=jnp.int32)


def make_params(dtype=jnp.float64):
    params = NET.init(jax.random.PRNGKey(0))[1]
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), params)


def mse(params, batch):
    """Mean squared error of the MLP on ``batch = (x, y, ...)`` (extra arrays ignored)."""
    return jnp.mean((NET.apply(params, batch[0]) - batch[1]) ** 2)


DATA = make_data()
P0 = make_params()

TRAINERS = {
    "sgd_momentum": trainers.sgd(mse, 0.1, momentum=0.9),
    "rmsprop": trainers.rmsprop(mse, 0.01),
    "newton": trainers.newton(mse, damping=1e-3),
    # Monte Carlo Fisher: the state carries a (typed) key that changes every step.
    "natural_gradient": trainers.natural_gradient(
        mse, 0.1, damping=1e-2, fisher="mc", apply_fn=NET.apply, likelihood="gaussian",
        adapt_damping=True, key=jax.random.key(7)),
}
SGD = TRAINERS["sgd_momentum"]


# ----------------------------------------------------------------------------- helpers


def stop_at(epoch):
    return lambda e, params, state, row: e == epoch


class Crash(Exception):
    pass


def crash_at(epoch):
    def callback(e, params, state, row):
        if e == epoch:
            raise Crash(f"simulated crash at epoch {e}")
    return callback


def capture_states(store):
    def callback(e, params, state, row):
        store[e] = (params, state, row)
    return callback


def order_probe(max_steps, width):
    """A trainer that leaves params alone and records each step's example indices in its state."""

    def init(params):
        return {"t": jnp.zeros((), jnp.int32),
                "order": jnp.full((max_steps, width), -1, jnp.int32)}

    def step(params, state, batch):
        order = state["order"].at[state["t"]].set(batch[-1].astype(jnp.int32))
        metrics = {"loss": params["w"] * jnp.mean(batch[0]), "grad_norm": jnp.zeros(())}
        return params, {"t": state["t"] + 1, "order": order}, metrics

    return Trainer(init, step)


PROBE_PARAMS = {"w": jnp.ones(())}
PROBE = order_probe(3 * (N // BATCH), BATCH)


def batch_order(key, *, trainer=PROBE, batch_size=BATCH, epochs=3, with_history=False):
    """``(epochs, steps, batch_size)`` indices of the examples of every step of ``fit``."""
    store = {}
    _, hist = fit(trainer, PROBE_PARAMS, DATA, epochs=epochs, batch_size=batch_size, key=key,
                  progress=False, callbacks=[capture_states(store)])
    order = np.asarray(store[epochs - 1][1]["order"])
    order = order.reshape(epochs, -1, order.shape[-1])
    return (order, hist) if with_history else order


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize("batch_size", [BATCH, None], ids=["minibatch", "fullbatch"])
@pytest.mark.parametrize("name", list(TRAINERS))
def test_resume_is_bit_identical(tmp_path, name, batch_size):
    trainer = TRAINERS[name]
    final = {}
    ref_params, ref_hist = fit(trainer, P0, DATA, epochs=EPOCHS, batch_size=batch_size, key=KEY,
                               progress=False, callbacks=[capture_states(final)])
    # Interrupted after epochs 1 and 3; resumed calls get other params and key, which the
    # checkpoint must override.
    other_key = jax.random.PRNGKey(99)
    other_params = jax.tree_util.tree_map(lambda a: a + 1.0, P0)
    resumed = {}
    kwargs = dict(epochs=EPOCHS, batch_size=batch_size, checkpoint_dir=tmp_path, progress=False)
    _, h = fit(trainer, P0, DATA, key=KEY, callbacks=[stop_at(0)], **kwargs)
    assert len(h["epoch"]) == 1 and load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 1
    _, h = fit(trainer, other_params, DATA, key=other_key, callbacks=[stop_at(2)], **kwargs)
    assert list(h["epoch"]) == [0, 1, 2]
    params, hist = fit(trainer, other_params, DATA, key=other_key,
                       callbacks=[capture_states(resumed)], **kwargs)

    assert_trees_identical(params, ref_params)
    assert_trees_identical(resumed[EPOCHS - 1][1], final[EPOCHS - 1][1])  # trainer state
    assert_histories_equal(hist, ref_hist)
    assert np.all(np.diff(hist["wall_time"]) > 0)
    assert set(resumed) == {3}  # the resumed call ran only the missing epoch


@pytest.mark.parametrize("change", ["batch_size", "train_data"])
def test_resume_on_other_data_or_batch_size_is_refused(tmp_path, change):
    """A checkpoint remembers N and batch_size: resuming with others would be another run."""
    kwargs = dict(epochs=EPOCHS, batch_size=BATCH, key=KEY, checkpoint_dir=tmp_path,
                  progress=False)
    fit(SGD, P0, DATA, callbacks=[stop_at(0)], **kwargs)
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()
    if change == "batch_size":
        kwargs["batch_size"], data = BATCH + 1, DATA
        match = r"written for batch_size=5 \(now 6\)"
    else:
        data = tuple(a[:-1] for a in DATA)
        match = r"written for n=12 \(now 11\)"
    with pytest.raises(ValueError, match=match):
        fit(SGD, P0, data, **kwargs)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before  # the checkpoint is untouched
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["run"] == {
        "n": N, "batch_size": BATCH, "steps_per_epoch": N // BATCH}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_resume_after_crash_replays_unsaved_epochs(tmp_path, dtype):
    """checkpoint_every=2 and a crash during epoch 2: the resume starts from epoch 2 again."""
    data, p0 = make_data(dtype), make_params(dtype)
    key = jax.random.key(3)  # a typed key must survive the checkpoint too
    kwargs = dict(epochs=5, batch_size=BATCH, progress=False)
    ref_params, ref_hist = fit(SGD, p0, data, key=key, **kwargs)
    assert all(a.dtype == dtype for a in host_leaves(ref_params))

    with pytest.raises(Crash):
        fit(SGD, p0, data, key=key, checkpoint_dir=tmp_path, checkpoint_every=2,
            callbacks=[crash_at(2)], **kwargs)
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 2
    params, hist = fit(SGD, p0, data, key=jax.random.key(4), checkpoint_dir=tmp_path,
                       checkpoint_every=2, **kwargs)
    assert_trees_identical(params, ref_params)
    assert_histories_equal(hist, ref_hist)
    # A finished run called again trains no further and returns the checkpoint as it is.
    again, hist_again = fit(SGD, p0, data, key=key, checkpoint_dir=tmp_path, **kwargs)
    assert_trees_identical(again, ref_params)
    assert_histories_equal(hist_again, ref_hist)


def test_checkpoint_roundtrip_keeps_values_dtypes_and_keys(tmp_path):
    params = {"w": np.arange(3, dtype=np.float32), "b": jnp.ones((2, 2), jnp.float64)}
    state = (SGD.init(P0), {"key": jax.random.key(5), "raw": jax.random.PRNGKey(6),
                            "count": jnp.array(3, jnp.int32), "name": "sgd"})
    rows = [{"epoch": 0, "loss": 1.5, "wall_time": 0.25}]
    path = tmp_path / "sub" / CHECKPOINT_NAME
    save_checkpoint(path, params=params, state=state, key=jax.random.key(8), epoch=1, rows=rows)
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and ckpt["rows"] == rows
    assert_trees_identical(ckpt["params"], params)
    assert_trees_identical(ckpt["state"], state)
    assert jnp.issubdtype(ckpt["state"][1]["key"].dtype, jax.dtypes.prng_key)
    assert np.array_equal(jax.random.key_data(ckpt["key"]), jax.random.key_data(jax.random.key(8)))
    assert os.listdir(path.parent) == [CHECKPOINT_NAME]


def test_load_checkpoint_rejects_other_formats(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    path.write_bytes(pickle.dumps({"format": 999}))
    with pytest.raises(ValueError, match="load_checkpoint: .*format 999"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- atomic writes


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    kwargs = dict(batch_size=BATCH, key=KEY, checkpoint_dir=tmp_path, progress=False)
    params2, _ = fit(SGD, P0, DATA, epochs=2, **kwargs)

    def broken_dump(obj, fh, protocol=None):
        fh.write(pickle.dumps(obj, protocol)[:40])  # half a pickle on disk, then the crash
        raise OSError("simulated disk full")

    monkeypatch.setattr(pickle, "dump", broken_dump)
    with pytest.raises(OSError, match="simulated disk full"):
        fit(SGD, P0, DATA, epochs=EPOCHS, **kwargs)
    monkeypatch.undo()

    assert os.listdir(tmp_path) == [CHECKPOINT_NAME]  # no temp file left behind
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ckpt["epoch"] == 2
    assert_trees_identical(ckpt["params"], params2)
    params4, _ = fit(SGD, P0, DATA, epochs=EPOCHS, **kwargs)  # resumes from the intact one
    ref4, _ = fit(SGD, P0, DATA, epochs=EPOCHS, batch_size=BATCH, key=KEY, progress=False)
    assert_trees_identical(params4, ref4)


# ----------------------------------------------------------------------------- non-finite stops


def first_epoch_and_step_seen(order):
    """``{example: (epoch, step)}`` of each example's first appearance in ``order``."""
    seen = {}
    for e, s, i in zip(*np.nonzero(order >= 0)):
        seen.setdefault(int(order[e, s, i]), (int(e), int(s)))
    return seen


@pytest.mark.parametrize("checkpoint_every", [1, 3])
def test_nan_row_stops_at_its_first_batch(tmp_path, checkpoint_every):
    seen = first_epoch_and_step_seen(batch_order(KEY))
    row, (epoch, step) = max(seen.items(), key=lambda item: item[1])
    assert epoch >= 1  # the two examples dropped in epoch 0 first appear later
    x, y, idx = DATA
    bad_data = (x.at[row, 0].set(jnp.nan), y, idx)

    with pytest.raises(FloatingPointError, match=rf"non-finite loss nan at epoch {epoch}, "
                                                 rf"step {step}; last good checkpoint"):
        fit(SGD, P0, bad_data, epochs=3, batch_size=BATCH, key=KEY, checkpoint_dir=tmp_path,
            checkpoint_every=checkpoint_every, progress=False)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    good, good_hist = fit(SGD, P0, bad_data, epochs=epoch, batch_size=BATCH, key=KEY,
                          progress=False)
    assert ckpt["epoch"] == epoch
    assert_trees_identical(ckpt["params"], good)
    assert [r["loss"] for r in ckpt["rows"]] == list(good_hist["loss"])
    assert os.listdir(tmp_path) == [CHECKPOINT_NAME]


def test_nan_in_first_epoch_writes_nothing(tmp_path):
    x, y, idx = DATA
    bad_data = (x.at[3, 1].set(jnp.inf), y, idx)
    with pytest.raises(FloatingPointError, match=r"at epoch 0, step 0$"):
        fit(SGD, P0, bad_data, epochs=3, key=KEY, checkpoint_dir=tmp_path, progress=False)
    assert os.listdir(tmp_path) == []
    fresh = tmp_path / "never_created"
    with pytest.raises(FloatingPointError):
        fit(SGD, P0, bad_data, epochs=3, key=KEY, checkpoint_dir=fresh, progress=False)
    assert not fresh.exists()


def linear_loss(params, batch):
    return jnp.mean(params["w"] * batch[0][:, 0])


def test_parameters_overflowing_with_a_finite_loss_stop_too(tmp_path):
    """w ← w − 1e308: w₁ = −1e308 is finite, w₂ = −inf although the loss at w₁ is finite.

    Without the parameter check epoch 1 would pass and its infinite parameters would be
    checkpointed as good.
    """
    huge = trainers.sgd(linear_loss, 1e308)
    data = (jnp.ones((1, 1)),)  # N = 1: a mean over more rows would itself overflow
    with pytest.raises(FloatingPointError,
                       match=r"non-finite parameters after the update at epoch 1, step 0"):
        fit(huge, {"w": jnp.zeros(())}, data, epochs=3, key=KEY, checkpoint_dir=tmp_path,
            progress=False)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ckpt["epoch"] == 1 and float(ckpt["params"]["w"]) == -1e308


# ----------------------------------------------------------------------------- shuffling


def test_shuffle_is_deterministic_per_key_and_differs_across_keys_and_epochs():
    order, hist = batch_order(KEY, with_history=True)
    assert np.array_equal(order, batch_order(KEY))
    assert not np.array_equal(order, batch_order(jax.random.PRNGKey(3)))
    steps = N // BATCH
    for epoch in order:
        used = epoch.ravel()
        assert epoch.shape == (steps, BATCH)
        assert len(set(used)) == steps * BATCH  # no example twice in an epoch
        assert set(used) <= set(range(N))  # N mod batch_size = 2 examples dropped
    assert not np.array_equal(order[0], order[1])  # reshuffled every epoch
    # "loss" is the epoch mean of the per-step losses (the probe's: the mean of the batch's x).
    x = np.asarray(DATA[0])
    np.testing.assert_allclose(hist["loss"], x[order].mean(axis=(2, 3)).mean(axis=1), rtol=1e-12)


@pytest.mark.parametrize("batch_size", [None, N, N + 5])
def test_full_batch_when_batch_size_is_none_or_at_least_n(batch_size):
    probe = order_probe(3, N)
    order, hist = batch_order(KEY, trainer=probe, batch_size=batch_size, with_history=True)
    assert order.shape == (3, 1, N)
    assert np.array_equal(order, np.broadcast_to(np.arange(N), (3, 1, N)))
    np.testing.assert_allclose(hist["loss"], np.full(3, np.mean(np.asarray(DATA[0]))), rtol=1e-12)


# ----------------------------------------------------------------------------- history


def test_history_eval_scalar_and_wall_time():
    eval_data = make_data()[:2]
    store = {}
    _, hist = fit(SGD, P0, DATA, epochs=3, batch_size=BATCH, key=KEY, eval_data=eval_data,
                  eval_fn=mse, progress=False, callbacks=[capture_states(store)])
    assert set(hist) == {"epoch", "loss", "grad_norm", "eval_loss", "wall_time"}
    assert np.array_equal(hist["epoch"], np.arange(3))
    for e in range(3):
        np.testing.assert_allclose(hist["eval_loss"][e], mse(store[e][0], eval_data), rtol=1e-12)
    assert hist["wall_time"][0] > 0 and np.all(np.diff(hist["wall_time"]) > 0)


def test_history_eval_dict_entries():
    def metrics(params, batch):
        err = NET.apply(params, batch[0]) - batch[1]
        return {"mse": jnp.mean(err ** 2), "mae": jnp.mean(jnp.abs(err))}

    store = {}
    _, hist = fit(SGD, P0, DATA, epochs=2, batch_size=BATCH, key=KEY, eval_data=DATA,
                  eval_fn=metrics, progress=False, callbacks=[capture_states(store)])
    assert {"eval_mse", "eval_mae"} <= set(hist) and "eval_loss" not in hist
    for e in range(2):
        expected = metrics(store[e][0], DATA)
        np.testing.assert_allclose(hist["eval_mae"][e], expected["mae"], rtol=1e-12)
        np.testing.assert_allclose(hist["eval_mse"][e], expected["mse"], rtol=1e-12)


def test_sharpness_is_the_top_hessian_eigenvalue_on_the_full_data():
    store = {}
    _, hist = fit(SGD, P0, DATA, epochs=5, batch_size=BATCH, key=KEY, track_sharpness_every=2,
                  loss_fn=mse, progress=False, callbacks=[capture_states(store)])
    tracked = {0, 1, 3}  # after epoch 0, then every 2nd epoch
    unravel = ravel_pytree(P0)[1]
    hessian = jax.jit(jax.hessian(lambda v: mse(unravel(v), DATA)))  # dense, on all N examples
    for e in range(5):
        if e not in tracked:
            assert np.isnan(hist["sharpness"][e])
            continue
        expected = np.linalg.eigvalsh(np.asarray(hessian(ravel_pytree(store[e][0])[0])))[-1]
        np.testing.assert_allclose(hist["sharpness"][e], expected, rtol=1e-6)


# ----------------------------------------------------------------------------- callbacks


def test_callbacks_receive_epoch_params_state_row_and_can_stop(tmp_path):
    calls = []

    def record(epoch, params, state, row):
        calls.append((epoch, params, state, row))

    params, hist = fit(SGD, P0, DATA, epochs=EPOCHS, batch_size=BATCH, key=KEY,
                       checkpoint_dir=tmp_path, checkpoint_every=10, progress=False,
                       callbacks=[stop_at(1), record])
    assert [c[0] for c in calls] == [0, 1]  # every callback runs, also on the stopping epoch
    assert len(hist["epoch"]) == 2
    epoch, last_params, state, row = calls[-1]
    assert_trees_identical(last_params, params)
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(SGD.init(P0))
    assert set(row) == set(hist) and all(isinstance(v, (int, float)) for v in row.values())
    assert row["loss"] == hist["loss"][1]
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)  # saved on the stop, not at epoch 10
    assert ckpt["epoch"] == 2
    assert_trees_identical(ckpt["params"], params)


# ----------------------------------------------------------------------------- tracing


def test_epoch_compiles_once():
    traces = {"loss": 0, "eval": 0}

    def counted_loss(params, batch):
        traces["loss"] += 1
        return mse(params, batch)

    def counted_eval(params, batch):
        traces["eval"] += 1
        return mse(params, batch)

    trainer = trainers.sgd(counted_loss, 0.05)
    per_epoch = []
    fit(trainer, P0, DATA, epochs=EPOCHS, batch_size=BATCH, key=KEY, eval_data=DATA,
        eval_fn=counted_eval, progress=False,
        callbacks=[lambda *args: per_epoch.append(dict(traces))])
    assert per_epoch[0]["loss"] > 0 and per_epoch[0]["eval"] == 1
    assert all(counts == per_epoch[0] for counts in per_epoch)  # no trace after epoch 0
    fit(trainer, P0, DATA, epochs=2, batch_size=BATCH, key=KEY, eval_data=DATA,
        eval_fn=counted_eval, progress=False)
    assert traces == per_epoch[0]  # a second call with the same trainer reuses the compile


# ----------------------------------------------------------------------------- progress, input


def test_progress_bar_shows_the_loss(capsys):
    _, hist = fit(SGD, P0, DATA, epochs=2, batch_size=BATCH, key=KEY, progress=True)
    err = capsys.readouterr().err
    assert "fit" in err and "loss=" in err
    assert len(hist["loss"]) == 2


def test_zero_epochs_trains_nothing_and_writes_nothing(tmp_path):
    params, hist = fit(SGD, P0, DATA, epochs=0, key=KEY, checkpoint_dir=tmp_path, progress=False)
    assert params is P0 and hist == {}
    assert os.listdir(tmp_path) == []


X, Y, _ = DATA


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(epochs=-1), ValueError, "fit: epochs must be an integer >= 0, got -1"),
    (dict(epochs=2.5), TypeError, "fit: epochs must be an integer"),
    (dict(batch_size=0), ValueError, "fit: batch_size must be an integer >= 1"),
    (dict(train_data=(X[:11], Y)), ValueError,
     r"fit: train_data arrays must share a leading dimension N, "
     r"got shapes \[\(11, 2\), \(12, 1\)\]"),
    (dict(train_data=X), ValueError, "fit: train_data must be a non-empty tuple"),
    (dict(train_data=(X[:0], Y[:0])), ValueError, "fit: train_data must hold at least one"),
    (dict(checkpoint_every=0), ValueError, "fit: checkpoint_every must be an integer >= 1"),
    (dict(track_sharpness_every=2), ValueError, "fit: track_sharpness_every needs loss_fn"),
    (dict(track_sharpness_every=0, loss_fn=mse), ValueError,
     "fit: track_sharpness_every must be an integer >= 1"),
    (dict(eval_fn=mse), ValueError, "fit: eval_fn needs eval_data"),
    (dict(eval_fn=lambda p, b: NET.apply(p, b[0]), eval_data=DATA), ValueError,
     r"fit: eval_fn must return a scalar or a dict of scalars, got shape \(12, 1\)"),
])
def test_bad_input_names_the_argument(tmp_path, kwargs, error, match):
    args = dict(train_data=DATA, epochs=1, batch_size=BATCH, key=KEY, progress=False,
                checkpoint_dir=tmp_path) | kwargs
    train_data = args.pop("train_data")
    with pytest.raises(error, match=match):
        fit(SGD, P0, train_data, **args)
    assert os.listdir(tmp_path) == []
