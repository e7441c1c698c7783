"""Subprocess worker for the fault and determinism tests (not a test module: no ``test_`` prefix).

Two commands::

    python tests/_kill_worker.py train CHECKPOINT_DIR
        Run ``fit`` on the problem below with ``checkpoint_every=1``, resuming from
        CHECKPOINT_DIR when it holds a checkpoint. Prints ``ready`` once imports and setup are
        done (just before ``fit``), ``epoch E`` from a callback at the end of every epoch (before
        that epoch's checkpoint is written), and at the end one JSON line with the seconds from
        the start of the process to ``ready``. ``tests/test_faults.py`` kills it with SIGKILL
        at random moments.

    python tests/_kill_worker.py dtypes
        Print one JSON line with the dtypes of params, trainer state and metrics after steps of
        sgd, natural_gradient and newton, and of ``fit``'s params and history, for float32 and
        float64 params and data (``tests/test_determinism.py`` runs it with JAX_ENABLE_X64=0
        and =1).

x64 follows the environment (JAX_ENABLE_X64); the parent sets it. The parent also imports this
module to build the very same problem in-process (``problem()``), so that a run resumed there
can be compared bit for bit with one trained here.
"""

from __future__ import annotations

import functools
import json
import sys
import time

START = time.perf_counter()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxcalc import models, trainers  # noqa: E402
from jaxcalc.training import fit  # noqa: E402

EPOCHS = 40
BATCH = 4
NUM_EXAMPLES = 12  # 3 steps per epoch
NET = models.mlp([2, 3, 1], "tanh")


def mse(params, batch):
    return jnp.mean((NET.apply(params, batch[0]) - batch[1]) ** 2)


@functools.lru_cache(maxsize=None)
def problem():
    """``(trainer, params, data, key)`` of the SIGKILL run: a 2-3-1 tanh MLP, SGD + momentum.

    Data and parameters come from NumPy (the model's ``init`` only gives the shapes, abstractly),
    so the setup compiles nothing and takes as long with a cold compile cache as with a warm one.
    Cached so that the parent's in-process resumes share one trainer and so one compiled epoch.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_EXAMPLES, 2))
    data = (x, np.sin(x[:, :1]) + 0.5 * x[:, 1:])
    shapes = jax.eval_shape(lambda k: NET.init(k, (-1, 2))[1], jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(lambda s: 0.5 * rng.normal(size=s.shape), shapes)
    return trainers.sgd(mse, 0.1, momentum=0.9), params, data, jax.random.PRNGKey(2)


def train(checkpoint_dir: str) -> None:
    trainer, params, data, key = problem()
    ready = time.perf_counter()
    print("ready", flush=True)
    announce = lambda epoch, *_: print(f"epoch {epoch}", flush=True)  # noqa: E731
    fit(trainer, params, data, epochs=EPOCHS, batch_size=BATCH, key=key,
        checkpoint_dir=checkpoint_dir, checkpoint_every=1, progress=False, callbacks=[announce])
    print(json.dumps({"startup_s": ready - START}), flush=True)


def _dtype_name(x) -> str:
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return "key"
    return str(x.dtype)


def _dtypes(tree) -> list:
    return sorted({_dtype_name(x) for x in jax.tree_util.tree_leaves(tree)})


def _steps(trainer, steps):
    """``(params, batch) -> (params, state, metrics)`` after ``steps`` steps in a ``lax.scan``:
    a step that changed the dtype of params or state would fail its carry check at trace time."""

    def go(params, batch):
        def body(carry, _):
            p, s, _ = trainer.step(*carry, batch)
            return (p, s), None

        (p, s), _ = jax.lax.scan(body, (params, trainer.init(params)), None, length=steps)
        return p, s, trainer.step(p, s, batch)[2]

    return go


def dtypes() -> None:
    """Print ``{"x64": bool, "<params>/<data>": {trainer: {part: dtypes}}}`` as one JSON line.

    Cases: float32 params and data; float32 params with float64 (NumPy) data; float64 params and
    data, which under x64 off JAX turns into float32 (as it does every float64 input). The
    trainers' dtypes come from ``jax.eval_shape`` of three steps (a trace: exact dtypes, no
    compile); ``fit`` (sgd only: the epoch compiles) adds its parameters and history.
    """
    rng = np.random.default_rng(1)
    out = {"x64": bool(jax.config.jax_enable_x64)}
    shapes = jax.eval_shape(lambda k: NET.init(k, (-1, 2))[1], jax.random.PRNGKey(0))
    made = {
        "sgd": trainers.sgd(mse, 0.1, momentum=0.9),
        "natural_gradient": trainers.natural_gradient(
            mse, 0.1, damping=1e-2, fisher="mc", apply_fn=NET.apply, likelihood="gaussian",
            key=jax.random.key(3)),
        "newton": trainers.newton(mse, damping=1e-2, adapt_damping=True),
        "newton_cg": trainers.newton(mse, solver="cg"),
    }
    for param_dtype, data_dtype in [("float32", "float32"), ("float32", "float64"),
                                    ("float64", "float64")]:
        x = rng.normal(size=(8, 2)).astype(data_dtype)
        data = (x, np.tanh(x[:, :1]))
        params = jax.tree_util.tree_map(
            lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), param_dtype), shapes)
        case = out[f"{param_dtype}/{data_dtype}"] = {}
        for name, trainer in made.items():
            p, state, metrics = jax.eval_shape(_steps(trainer, 3), params, data)
            case[name] = {"params": _dtypes(p), "state": _dtypes(state),
                          "metrics": {k: _dtype_name(v) for k, v in metrics.items()}}
        fitted, history = fit(made["sgd"], params, data, epochs=2, batch_size=4,
                              key=jax.random.PRNGKey(0), progress=False)
        case["fit"] = {"params": _dtypes(fitted),
                       "history": sorted({str(v.dtype) for k, v in history.items()
                                          if k != "epoch"})}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "train":
        train(sys.argv[2])
    elif command == "dtypes":
        dtypes()
    else:
        raise SystemExit(f"_kill_worker.py: unknown command {command!r} (train, dtypes)")
