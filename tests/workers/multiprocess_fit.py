"""Subprocess worker: one process of a data-parallel ``fit`` across processes on 127.0.0.1.

    python tests/workers/multiprocess_fit.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR

Every process joins JAX's distributed runtime at ``127.0.0.1:PORT`` (CPU collectives over gloo),
builds the mesh over all processes' devices and trains on its own shard of the data
(``distributed.process_shard``): 3 SGD steps (batch 32 of 96 examples) and 3 Newton-CG steps
(full batch). Process 0 also trains single-process on the whole data set (its local device only)
and writes ``OUT_DIR/result.json`` with the largest parameter differences; every process writes
``OUT_DIR/process-I.json`` with what it saw.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from jaxcalc import distributed, losses, models, trainers  # noqa: E402
from jaxcalc.training import fit  # noqa: E402

N, D_IN, D_OUT = 96, 5, 2


def main():
    process_id, num_processes, port, out = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                            Path(sys.argv[4]))
    distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id,
                           initialization_timeout=60)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D_IN))
    y = np.tanh(x @ rng.normal(size=(D_IN, D_OUT))) + 0.1 * rng.normal(size=(N, D_OUT))
    model = models.mlp([D_IN, 8, D_OUT], "tanh", dtype=np.float64)
    _, params = model.init(jax.random.key(1))

    def loss_fn(p, batch):
        inputs, targets = batch
        return losses.mse(model.apply(p, inputs), targets)

    runs = {"sgd": (trainers.sgd(loss_fn, 0.1, momentum=0.9), dict(epochs=1, batch_size=32)),
            "newton_cg": (trainers.newton(loss_fn, damping=1e-1, solver="cg", cg_maxiter=20),
                          dict(epochs=3, batch_size=None))}
    mesh = distributed.data_mesh()
    shard = distributed.process_shard((x, y))
    seen = {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "global_devices": len(jax.devices()), "local_devices": jax.local_device_count(),
            "shard_rows": int(shard[0].shape[0])}
    result = {}
    for name, (trainer, kwargs) in runs.items():
        key = jax.random.key(2)
        ckpt = out / f"ckpt-{name}"
        p_dist, h_dist = fit(trainer, params, shard, key=key, mesh=mesh, progress=False,
                             checkpoint_dir=ckpt, **kwargs)
        if distributed.is_main_process():
            p_one, h_one = fit(trainer, params, (x, y), key=key, progress=False, **kwargs)
            pairs = zip(jax.tree_util.tree_leaves(p_one), jax.tree_util.tree_leaves(p_dist))
            result[name] = {
                "max_abs_param_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                                          for a, b in pairs),
                "max_abs_loss_diff": float(np.max(np.abs(h_one["loss"] - h_dist["loss"]))),
                "steps": int(len(h_dist["loss"]) * (N // kwargs["batch_size"]
                                                    if kwargs["batch_size"] else 1)),
                "loss_first": float(h_dist["loss"][0]), "loss_last": float(h_dist["loss"][-1]),
            }
    (out / f"process-{process_id}.json").write_text(json.dumps(seen))
    if distributed.is_main_process():
        (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
