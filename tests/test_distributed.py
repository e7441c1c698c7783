"""Scale-out: data-parallel ``fit`` on a mesh, multi-process runs, 1e6-parameter second-order steps.

The multi-device tests run in subprocesses: ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
must be set before JAX starts, and a multi-process runtime cannot be joined by a process whose
backend is already running. Each subprocess has a hard timeout and is killed with its peers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc import cli, distributed, losses, models, trainers
from jaxcalc.training import fit

WORKERS = Path(__file__).parent / "workers"
TIMEOUT_S = 240


def _env(**extra):
    env = dict(os.environ)
    for name in ("XLA_FLAGS", "JAX_PLATFORMS", distributed.ENV_COORDINATOR,
                 distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        env.pop(name, None)
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def _run_worker(args, env, timeout=TIMEOUT_S):
    proc = subprocess.run([sys.executable, *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- sharded fit


@pytest.fixture(scope="module")
def sharded_float64():
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    return _run_worker([WORKERS / "sharded_fit.py", "float64", "sgd", "natural_gradient_cg",
                        "newton_cg"], env)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sgd", "natural_gradient_cg", "newton_cg"])
def test_sharded_fit_matches_single_device_float64(sharded_float64, name):
    assert sharded_float64["devices"] == 4
    result = sharded_float64["results"][name]
    assert result["sharded_param_devices"] == 4 and result["sharded_param_replicated"]
    assert result["param_dtype"] == "float64"
    assert result["loss_last"] < result["loss_first"]  # it trained
    assert result["max_abs_param_diff"] <= 1e-9 * max(1.0, result["param_scale"])
    assert result["max_abs_loss_diff"] <= 1e-9
    assert result["max_abs_eval_loss_diff"] <= 1e-9
    assert result["max_abs_sharpness_diff"] <= 1e-9 * max(1.0, result["param_scale"])


@pytest.mark.slow
def test_sharded_fit_with_rows_the_devices_do_not_divide_matches(sharded_float64):
    """94 examples on 4 devices: the data stays replicated, the batches are still split."""
    assert sharded_float64["uneven_max_abs_param_diff"] <= 1e-9


@pytest.mark.slow
def test_fit_rejects_a_batch_the_devices_do_not_divide(sharded_float64):
    assert sharded_float64["batch_error"] == (
        "fit: batch_size must be a multiple of the 4 devices on the mesh's 'data' axis, got 6")


@pytest.mark.slow
def test_sharded_fit_matches_single_device_float32_first_order():
    env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = _run_worker([WORKERS / "sharded_fit.py", "float32", "sgd", "rmsprop"], env)
    for name, result in out["results"].items():
        assert result["param_dtype"] == "float32", name
        assert result["max_abs_param_diff"] <= 1e-6, (name, result)


@pytest.mark.slow
def test_two_processes_on_loopback_match_one_process(tmp_path):
    """Two processes joined over 127.0.0.1 take 3 data-parallel steps = one process's steps."""
    port = _free_loopback_port()
    env = _env()
    procs = [subprocess.Popen([sys.executable, str(WORKERS / "multiprocess_fit.py"), str(i), "2",
                               str(port), str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    finally:
        for p in procs:  # on a timeout (or any error) neither process outlives the test
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-4000:]
    seen = [json.loads((tmp_path / f"process-{i}.json").read_text()) for i in range(2)]
    assert [s["process_index"] for s in seen] == [0, 1]
    assert all(s["process_count"] == 2 and s["global_devices"] == 2 for s in seen)
    assert all(s["shard_rows"] == 48 for s in seen)  # each process loaded only its half
    result = json.loads((tmp_path / "result.json").read_text())
    for name in ("sgd", "newton_cg"):
        assert result[name]["steps"] == 3
        assert result[name]["max_abs_param_diff"] <= 1e-12, (name, result[name])
        assert result[name]["max_abs_loss_diff"] <= 1e-12, (name, result[name])
    assert result["newton_cg"]["loss_last"] < result["newton_cg"]["loss_first"]
    # only process 0 writes checkpoints; the folder holds exactly one
    assert sorted(p.name for p in (tmp_path / "ckpt-sgd").iterdir()) == ["checkpoint.pkl"]


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- in-process


def _regression_problem(n=24):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    y = x @ rng.normal(size=(3, 2))
    model = models.mlp([3, 4, 2], "tanh", dtype=np.float64)
    _, params = model.init(jax.random.key(0))

    def loss_fn(p, batch):
        return losses.mse(model.apply(p, batch[0]), batch[1])

    return params, loss_fn, (x, y)


def test_fit_on_a_one_device_mesh_is_bit_identical_to_no_mesh():
    params, loss_fn, data = _regression_problem()
    trainer = trainers.sgd(loss_fn, 0.1)
    kwargs = dict(epochs=2, batch_size=8, key=jax.random.key(3), progress=False)
    p0, h0 = fit(trainer, params, data, **kwargs)
    p1, h1 = fit(trainer, params, data, mesh=distributed.data_mesh(), **kwargs)
    for a, b in zip(jax.tree_util.tree_leaves(p0), jax.tree_util.tree_leaves(p1)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(h0["loss"], h1["loss"])


def test_fit_on_a_mesh_resumes_from_its_checkpoint(tmp_path):
    params, loss_fn, data = _regression_problem()
    trainer = trainers.sgd(loss_fn, 0.1)
    mesh = distributed.data_mesh()
    kwargs = dict(batch_size=8, key=jax.random.key(3), progress=False, mesh=mesh)
    full, _ = fit(trainer, params, data, epochs=3, **kwargs)
    fit(trainer, params, data, epochs=1, checkpoint_dir=tmp_path, **kwargs)
    resumed, history = fit(trainer, params, data, epochs=3, checkpoint_dir=tmp_path, **kwargs)
    assert list(history["epoch"]) == [0, 1, 2]
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fit_rejects_a_mesh_without_a_data_axis():
    params, loss_fn, data = _regression_problem()
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("model",))
    with pytest.raises(ValueError, match=r"fit: mesh must have an axis named 'data'.*'model'"):
        fit(trainers.sgd(loss_fn, 0.1), params, data, epochs=1, key=jax.random.key(0),
            mesh=mesh, progress=False)
    with pytest.raises(TypeError, match=r"fit: mesh must be a jax.sharding.Mesh.*list"):
        fit(trainers.sgd(loss_fn, 0.1), params, data, epochs=1, key=jax.random.key(0),
            mesh=jax.devices(), progress=False)


def test_data_mesh_spans_all_devices_on_axis_data():
    mesh = distributed.data_mesh()
    assert mesh.axis_names == ("data",)
    assert distributed.data_axis_size(mesh) == len(jax.devices())
    with pytest.raises(ValueError, match="data_mesh: devices must name at least one device"):
        distributed.data_mesh([])


def test_process_shard_gives_equal_contiguous_shares():
    x = np.arange(10)
    y = np.arange(10) * 2
    shards = [distributed.process_shard((x, y), process_index=i, process_count=3)
              for i in range(3)]
    np.testing.assert_array_equal(np.concatenate([s[0] for s in shards]), x[:9])
    np.testing.assert_array_equal(np.concatenate([s[1] for s in shards]), y[:9])
    assert {len(s[0]) for s in shards} == {3}
    with pytest.raises(ValueError, match=r"process_shard: need 0 <= process_index"):
        distributed.process_shard((x,), process_index=3, process_count=3)
    with pytest.raises(ValueError, match=r"process_shard: 2 examples cannot be split over 3"):
        distributed.process_shard((x[:2],), process_index=0, process_count=3)


def test_shard_batch_and_replicate_place_arrays_on_the_mesh():
    mesh = distributed.data_mesh()
    (x,) = distributed.shard_batch((np.ones((4, 3)),), mesh)
    assert x.shape == (4, 3) and x.sharding.spec == jax.sharding.PartitionSpec("data", None)
    tree = distributed.replicate({"w": np.ones(3), "key": jax.random.key(0)}, mesh)
    assert tree["w"].sharding.is_fully_replicated
    assert jax.dtypes.issubdtype(tree["key"].dtype, jax.dtypes.prng_key)
    with pytest.raises(ValueError, match=r"shard_batch: batch\[0\] must have a leading dim"):
        distributed.shard_batch((np.float64(1.0),), mesh)


def test_initialize_checks_its_arguments_before_joining(monkeypatch):
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    with pytest.raises(ValueError, match=r"initialize: process_id must be in \[0, 2\), got 2"):
        distributed.initialize("127.0.0.1:1", 2, 2)
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be an integer, got 'two'"):
        distributed.initialize("127.0.0.1:1")


def test_initialize_reads_the_environment(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setenv(distributed.ENV_COORDINATOR, "10.0.0.1:1234")
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "4")
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "3")
    assert distributed.initialize() is True
    assert calls[0]["coordinator_address"] == "10.0.0.1:1234"
    assert (calls[0]["num_processes"], calls[0]["process_id"]) == (4, 3)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    assert distributed.initialize() is False and len(calls) == 1


def test_cli_distributed_without_a_cluster_runs_single_process(tmp_path, capsys):
    code = cli.main(["run", "seeds", "--distributed", "--out", str(tmp_path)])
    assert code == 0
    err = capsys.readouterr().err
    assert "--distributed: no multi-process cluster found" in err
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["data_parallel"] is True


def test_cli_distributed_with_bad_flags_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    code = cli.main(["run", "seeds", "--distributed", "--num-processes", "2",
                     "--process-id", "5", "--out", str(tmp_path)])
    assert code == 2
    assert "process_id must be in [0, 2), got 5" in capsys.readouterr().err


# ----------------------------------------------------------------------------- big models


@pytest.fixture(scope="module")
def million_parameter_mlp():
    """A float32 1000→1000→10 tanh MLP: n = 1,011,010 parameters; 16 examples."""
    model = models.mlp([1000, 1000, 10], "tanh", dtype=jnp.float32)
    _, params = model.init(jax.random.key(0))
    n = sum(int(np.size(p)) for p in jax.tree_util.tree_leaves(params))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(16, 1000)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, size=16), jnp.int32)

    def loss_fn(p, batch):
        return losses.softmax_cross_entropy(model.apply(p, batch[0]), batch[1])

    return model, params, n, (x, y), loss_fn


@pytest.mark.slow
@pytest.mark.parametrize("which", ["newton_cg", "natural_gradient_cg"])
def test_matrix_free_step_on_a_million_parameters_stays_far_below_n_squared(
        million_parameter_mlp, which):
    model, params, n, batch, loss_fn = million_parameter_mlp
    assert n > 1_000_000
    if which == "newton_cg":
        trainer = trainers.newton(loss_fn, damping=1.0, solver="cg", cg_maxiter=5)
    else:
        trainer = trainers.natural_gradient(loss_fn, 0.5, damping=1e-2, fisher="true",
                                            solver="cg", cg_maxiter=5, apply_fn=model.apply,
                                            likelihood="categorical")
    state = trainer.init(params)
    compiled = jax.jit(trainer.step).lower(params, state, batch).compile()
    memory = compiled.memory_analysis()
    total = (memory.temp_size_in_bytes + memory.argument_size_in_bytes
             + memory.output_size_in_bytes)
    # n² float32 would be 4 TB; the step's whole footprint is a few dozen vectors of n floats
    assert total < 64 * n * 4, total
    new_params, _, metrics = compiled(params, state, batch)
    assert np.isfinite(float(metrics["loss"]))
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree_util.tree_leaves(new_params))
    assert float(loss_fn(new_params, batch)) < float(metrics["loss"])
