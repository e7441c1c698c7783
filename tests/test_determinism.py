"""Determinism: the same key gives the same training, bit for bit; dtypes follow the inputs.

* ``fit`` twice with the same key (sgd, natural_gradient with a Monte Carlo Fisher, newton):
  identical params, trainer state and history (``np.array_equal``), also with the trainer built
  and compiled afresh; another key gives another run (the check can fail).
* x64 off and on (a subprocess each, ``tests/_kill_worker.py dtypes``): params and trainer
  state keep the params' dtype, the loss follows the data, ``fit``'s history is float64 NumPy.

Across processes: ``tests/test_faults.py``'s SIGKILL test resumes runs of a worker process in
the test process and requires bit-identical params.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc import models, trainers
from jaxcalc.training import fit

from _trees import host_leaves, trees_identical

NET = models.mlp([2, 3, 1], "tanh")
N, BATCH, EPOCHS = 12, 5, 3
KEY = jax.random.PRNGKey(5)
WORKER = Path(__file__).with_name("_kill_worker.py")


def _data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, 2))
    return jnp.asarray(x), jnp.asarray(np.sin(x[:, :1]) + 0.5 * x[:, 1:])


DATA = _data()
P0 = NET.init(jax.random.PRNGKey(0), (-1, 2))[1]


def mse(params, batch):
    return jnp.mean((NET.apply(params, batch[0]) - batch[1]) ** 2)


def make_trainer(name):
    if name == "sgd":
        return trainers.sgd(mse, 0.1, momentum=0.9)
    if name == "natural_gradient":  # the state carries a typed key, split every step
        return trainers.natural_gradient(mse, 0.1, damping=1e-2, fisher="mc", apply_fn=NET.apply,
                                         likelihood="gaussian", key=jax.random.key(7))
    return trainers.newton(mse, damping=1e-3)


TRAINERS = {name: make_trainer(name) for name in ("sgd", "natural_gradient", "newton")}


def train(trainer, key=KEY):
    """``(params, final trainer state, history without the wall clock)``."""
    store = {}
    params, hist = fit(trainer, P0, DATA, epochs=EPOCHS, batch_size=BATCH, key=key,
                       progress=False, callbacks=[lambda e, p, s, row: store.update(state=s)])
    return params, store["state"], {k: v for k, v in hist.items() if k != "wall_time"}


@pytest.mark.parametrize("name", list(TRAINERS))
def test_same_key_gives_bit_identical_training(name):
    first = train(TRAINERS[name])
    again = train(TRAINERS[name])  # the same compiled epoch, run again
    assert trees_identical(first, again)
    assert all(np.all(np.isfinite(leaf)) for leaf in host_leaves(first[0]))
    assert len(first[2]["loss"]) == EPOCHS


def test_a_freshly_built_and_compiled_trainer_trains_bit_identically():
    """Natural gradient with a Monte Carlo Fisher (the most random of the trainers): a second
    trainer object is traced and compiled anew, and still gives the same bits."""
    assert trees_identical(train(TRAINERS["natural_gradient"]),
                     train(make_trainer("natural_gradient")))


@pytest.mark.parametrize("name", ["sgd", "natural_gradient"])
def test_another_key_gives_another_training(name):
    """The failing case of the checks above: another ``fit`` key reshuffles the batches (and
    for natural gradient the trainer's state key, unchanged, then draws labels for other
    batches)."""
    params, _, hist = train(TRAINERS[name])
    other_params, _, other_hist = train(TRAINERS[name], key=jax.random.PRNGKey(6))
    assert not trees_identical(params, other_params)
    assert not np.array_equal(hist["loss"], other_hist["loss"])


# ----------------------------------------------------------------------------- x64 on / off


@pytest.fixture(scope="module", params=["0", "1"], ids=["x64_off", "x64_on"])
def worker_dtypes(request):
    """``(x64, dtypes)``: what the worker reports under ``JAX_ENABLE_X64=0`` or ``=1``."""
    env = dict(os.environ, JAX_ENABLE_X64=request.param, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(WORKER), "dtypes"], capture_output=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    report = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert report.pop("x64") == (request.param == "1")
    return request.param == "1", report


def test_dtypes_follow_the_inputs_with_x64_on_and_off(worker_dtypes):
    """Params and trainer state keep the params' dtype through steps and ``fit``; metrics are
    in that dtype, but for the loss, which is in the data's (JAX's promotion of ``loss_fn``).
    With x64 off every float64 input (params or NumPy data) becomes float32, so everything is
    float32. ``fit``'s history is float64 NumPy (Python floats) in every case."""
    x64, report = worker_dtypes
    assert set(report) == {"float32/float32", "float32/float64", "float64/float64"}
    for case, results in report.items():
        param_dtype, data_dtype = case.split("/")
        if not x64:
            param_dtype = data_dtype = "float32"
        assert set(results) == {"sgd", "natural_gradient", "newton", "newton_cg", "fit"}
        for name, got in results.items():
            if name == "fit":
                assert got == {"params": [param_dtype], "history": ["float64"]}, case
                continue
            assert got["params"] == [param_dtype], (case, name)
            state = sorted({param_dtype} | ({"key"} if name == "natural_gradient" else set()))
            assert got["state"] == state, (case, name, got["state"])
            for metric, dtype in got["metrics"].items():
                want = "int32" if metric == "cg_iters" else (
                    data_dtype if metric == "loss" else param_dtype)
                assert dtype == want, (case, name, metric, dtype)
