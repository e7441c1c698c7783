"""Subprocess worker: sharded vs single-device ``fit`` for each trainer; prints JSON.

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (the parent test sets it) so that
the CPU backend exposes four devices. For each trainer it trains the same model twice from the
same key — once on one device, once with ``mesh=data_mesh()`` — and reports the largest absolute
difference of the final parameters, of the loss, eval-loss and sharpness histories, and where
the parameters live.

    python tests/workers/sharded_fit.py DTYPE [TRAINER ...]
"""

from __future__ import annotations

import json
import sys

import jax

DTYPE = sys.argv[1] if len(sys.argv) > 1 else "float64"
jax.config.update("jax_enable_x64", DTYPE == "float64")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxcalc import distributed, losses, models, trainers  # noqa: E402
from jaxcalc.training import fit  # noqa: E402

N, D_IN, CLASSES = 96, 6, 3


def problem(dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D_IN)).astype(dtype)
    w = rng.normal(size=(D_IN, CLASSES))
    y = np.argmax(x.astype(np.float64) @ w + 0.5 * rng.normal(size=(N, CLASSES)), axis=1)
    model = models.mlp([D_IN, 8, CLASSES], "tanh", dtype=dtype)
    _, params = model.init(jax.random.key(1))

    def loss_fn(p, batch):
        inputs, targets = batch
        return losses.softmax_cross_entropy(model.apply(p, inputs), targets)

    return model, params, loss_fn, (x, y.astype(np.int32))


def make_trainer(name, model, loss_fn):
    if name == "sgd":
        return trainers.sgd(loss_fn, 0.3, momentum=0.9), 24
    if name == "rmsprop":
        return trainers.rmsprop(loss_fn, 1e-2), 24
    if name == "natural_gradient_cg":
        return trainers.natural_gradient(loss_fn, 0.5, damping=1e-2, fisher="true", solver="cg",
                                         apply_fn=model.apply,
                                         likelihood="categorical"), 48
    if name == "natural_gradient_dense":
        return trainers.natural_gradient(loss_fn, 0.5, damping=1e-2, solver="dense"), 48
    if name == "newton_cg":
        return trainers.newton(loss_fn, damping=1e-1, solver="cg", cg_maxiter=20), None
    if name == "newton_dense":
        return trainers.newton(loss_fn, damping=1e-1, solver="dense"), None
    raise SystemExit(f"unknown trainer {name}")


def main():
    names = sys.argv[2:] or ["sgd", "natural_gradient_cg", "newton_cg"]
    dtype = np.dtype(DTYPE)
    model, params, loss_fn, data = problem(dtype)
    mesh = distributed.data_mesh()
    out = {"devices": len(jax.devices()), "dtype": DTYPE, "results": {}}
    for name in names:
        trainer, batch_size = make_trainer(name, model, loss_fn)
        kwargs = dict(epochs=3, batch_size=batch_size, key=jax.random.key(2), progress=False,
                      eval_data=data, eval_fn=loss_fn, loss_fn=loss_fn, track_sharpness_every=2)
        p1, h1 = fit(trainer, params, data, **kwargs)
        p4, h4 = fit(trainer, params, data, mesh=mesh, **kwargs)
        diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                   for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p4)))
        scale = max(float(np.max(np.abs(np.asarray(a)))) for a in jax.tree_util.tree_leaves(p1))
        leaf = jax.tree_util.tree_leaves(p4)[0]
        out["results"][name] = {
            "max_abs_param_diff": diff,
            "param_scale": scale,
            "max_abs_loss_diff": float(np.max(np.abs(h1["loss"] - h4["loss"]))),
            "max_abs_eval_loss_diff": float(np.max(np.abs(h1["eval_loss"] - h4["eval_loss"]))),
            "max_abs_sharpness_diff": float(np.nanmax(np.abs(h1["sharpness"] - h4["sharpness"]))),
            "loss_first": float(h1["loss"][0]), "loss_last": float(h1["loss"][-1]),
            "sharded_param_devices": len(leaf.sharding.device_set),
            "sharded_param_replicated": bool(leaf.sharding.is_fully_replicated),
            "param_dtype": str(leaf.dtype),
        }
    trainer, _ = make_trainer("sgd", model, loss_fn)
    uneven = tuple(a[:N - 2] for a in data)  # 94 rows: the devices keep whole copies
    kwargs = dict(epochs=2, batch_size=24, key=jax.random.key(2), progress=False)
    p1, _ = fit(trainer, params, uneven, **kwargs)
    p4, _ = fit(trainer, params, uneven, mesh=mesh, **kwargs)
    out["uneven_max_abs_param_diff"] = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p4)))
    try:  # 6 examples per batch cannot be split over 4 devices
        fit(trainer, params, data, epochs=1, batch_size=6, key=jax.random.key(2), mesh=mesh,
            progress=False)
        out["batch_error"] = None
    except ValueError as exc:
        out["batch_error"] = str(exc)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
