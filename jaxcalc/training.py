"""``fit``: the training loop around a ``Trainer`` — batches, history, checkpoints, progress.

Each epoch is one jit-compiled ``lax.scan`` over its mini-batches (no Python loop per step, no
retrace between epochs: every epoch has the same shapes; the ``N mod batch_size`` examples left
over after shuffling are dropped that epoch). ``key`` is split once into a shuffle stream and a
sharpness-probe stream; the shuffle of epoch ``e`` uses ``jax.random.fold_in(shuffle_key, e)``,
so a run resumed from a checkpoint replays exactly the batches of an uninterrupted one and
reaches bit-identical parameters on the same machine.

Data parallelism: with ``mesh=`` (``jaxcalc.distributed.data_mesh()``) the same epoch program
runs with every batch sharded along the mesh axis ``"data"`` and the parameters and trainer state
replicated; XLA partitions the per-example work and inserts the reductions, so the result equals
the single-device run up to the order of floating-point sums. Across processes, each passes its
own shard of ``train_data`` and only process 0 writes checkpoints.

Checkpoints (``checkpoint_dir/checkpoint.pkl``) hold params, trainer state, key, epoch and history
as NumPy arrays, written atomically (temp file, fsync, rename): a crash at any moment leaves the
previous checkpoint intact. Nothing is written before the first good epoch. An epoch is good when
every pre-step loss and the parameters after every step are finite; an epoch that is not is
discarded whole (its parameters never reach the history, a callback or a checkpoint).
"""

from __future__ import annotations

import functools
import logging
import math
import operator
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxcalc import distributed
from jaxcalc._types import Batch, LossFn, Params, PRNGKey, PyTree
from jaxcalc._validate import check_batch, check_key
from jaxcalc.trainers import Trainer

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pkl"
CHECKPOINT_FORMAT = 1

History = Dict[str, np.ndarray]
Callback = Callable[[int, Params, PyTree, Dict[str, float]], Any]


def fit(trainer: Trainer, params: Params, train_data: Batch, *, epochs: int,
        batch_size: int | None = None, key: PRNGKey, eval_data: Batch | None = None,
        eval_fn: Callable[[Params, Batch], Any] | None = None,
        checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 1,
        track_sharpness_every: int | None = None, loss_fn: LossFn | None = None,
        progress: bool = True, callbacks: Sequence[Callback] = (),
        mesh: Mesh | None = None) -> Tuple[Params, History]:
    """Train ``params`` with ``trainer`` for ``epochs`` epochs; returns ``(params, history)``.

    Args:
      trainer: a ``Trainer`` (``jaxcalc.trainers``).
      params: initial parameters (ignored when resuming from a checkpoint).
      train_data: tuple of arrays with a common leading axis N, e.g. ``(inputs, targets)``.
      epochs: total number of epochs (a resumed run continues up to this number; a checkpoint
        already at or past it is returned as it is).
      batch_size: examples per step; ``None`` (or ≥ N) = full batch, no shuffling. Otherwise
        each epoch takes ``N // batch_size`` steps on a fresh permutation and the
        ``N mod batch_size`` examples left over are dropped for that epoch.
      key: PRNG key for the shuffles and the sharpness probes (replaced by the checkpoint's
        key when resuming).
      eval_data, eval_fn: after each epoch ``eval_fn(params, eval_data)`` → a scalar (recorded as
        ``"eval_loss"``) or a dict of scalars (recorded as ``"eval_<name>"``).
      checkpoint_dir: where to write and resume from ``checkpoint.pkl``.
      checkpoint_every: save every this many epochs (and after the last, after a callback
        stop, and for the last good epoch before a ``FloatingPointError``).
      track_sharpness_every: record ``"sharpness"``, the top Hessian eigenvalue of
        ``loss_fn(params, train_data)`` on the whole ``train_data`` (Lanczos on HVPs), after
        epoch 0 and after every epoch ``e`` with ``(e + 1) % track_sharpness_every == 0``;
        needs ``loss_fn``.
      loss_fn: ``loss_fn(params, batch) -> scalar``, only used for the sharpness.
      progress: show a tqdm progress bar with the loss.
      callbacks: ``callback(epoch, params, state, row)`` after each epoch (``row``: that epoch's
        history entries as floats); returning ``True`` stops training after that epoch.
      mesh: a ``jax.sharding.Mesh`` with an axis ``"data"`` (``distributed.data_mesh()``): shard
        every batch along it and replicate params and state. ``batch_size`` (or N, full batch)
        must then be a multiple of the axis size. With several processes, ``train_data`` is this
        process's shard (equal sizes everywhere; ``distributed.process_shard``), ``eval_data``
        the same on every process, and only process 0 writes the checkpoint, which every
        process reads when resuming (put ``checkpoint_dir`` on a shared filesystem). Within one
        process, an N that the devices do not divide keeps the data replicated on each device
        (only the batches are split).

    Returns:
      ``(params, history)``; ``history`` maps ``"epoch"``, ``"loss"`` (mean pre-step training
      loss of the epoch), the trainer's other metrics (epoch means), ``"wall_time"`` (seconds
      since the start of this call, cumulative over resumed runs), eval entries and
      ``"sharpness"`` (NaN at untracked epochs) to per-epoch NumPy arrays.

    Raises:
      FloatingPointError: on a NaN/Inf loss (or NaN/Inf parameters after a step), naming the
        epoch and step. That epoch is discarded; the checkpoint on disk is the last good
        epoch's (written now if ``checkpoint_every`` had skipped it), and nothing is written
        when no epoch was good.
      ValueError, TypeError: on bad arguments, naming the argument; ValueError also when the
        checkpoint in ``checkpoint_dir`` was written for another N or ``batch_size``.
    """
    if not (callable(getattr(trainer, "init", None)) and callable(getattr(trainer, "step", None))):
        raise TypeError("fit: trainer must be a Trainer (init, step) from jaxcalc.trainers, got "
                        f"{type(trainer).__name__}")
    train_data, n = check_batch("fit", train_data, "train_data")
    check_key("fit", "key", key)
    if callable(callbacks) or not all(callable(c) for c in callbacks):
        raise TypeError("fit: callbacks must be callables callback(epoch, params, state, row) "
                        f"in a sequence, got {callbacks!r}")
    if checkpoint_dir is not None and os.path.exists(checkpoint_dir) \
            and not os.path.isdir(checkpoint_dir):
        raise ValueError(f"fit: checkpoint_dir must be a directory, got the file {checkpoint_dir}")
    epochs = _check_int("fit", "epochs", epochs, 0)
    if mesh is not None:
        distributed.check_mesh("fit", mesh)
        n *= jax.process_count()  # every process passes an equal share
    if n < 1:
        raise ValueError("fit: train_data must hold at least one example, got leading dimension 0")
    if batch_size is not None:
        batch_size = _check_int("fit", "batch_size", batch_size, 1, "or None for full batch")
    full_batch = batch_size is None or batch_size >= n
    bs = n if full_batch else batch_size
    steps_per_epoch = n // bs
    checkpoint_every = _check_int("fit", "checkpoint_every", checkpoint_every, 1)
    if track_sharpness_every is not None:
        track_sharpness_every = _check_int("fit", "track_sharpness_every", track_sharpness_every,
                                           1, "or None")
        if loss_fn is None:
            raise ValueError("fit: track_sharpness_every needs loss_fn (the loss whose Hessian "
                             "to probe), got loss_fn=None")
    if eval_fn is not None and eval_data is None:
        raise ValueError("fit: eval_fn needs eval_data, got eval_data=None")
    if mesh is not None and bs % (devices := distributed.data_axis_size(mesh)):
        what = "N (full batch)" if full_batch else "batch_size"
        raise ValueError(f"fit: {what} must be a multiple of the {devices} devices on the "
                         f"mesh's 'data' axis, got {bs}")

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    run_signature = {"n": n, "batch_size": bs, "steps_per_epoch": steps_per_epoch}
    start_epoch, rows, elapsed_before = 0, [], 0.0
    state = None
    if ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        _check_resume(ckpt_path, ckpt.get("run"), run_signature)
        params, state, key = ckpt["params"], ckpt["state"], ckpt["key"]
        start_epoch, rows = int(ckpt["epoch"]), list(ckpt["rows"])
        elapsed_before = float(rows[-1]["wall_time"]) if rows else 0.0
        logger.info("fit: resuming from %s at epoch %d", ckpt_path, start_epoch)
    if mesh is not None:
        params = distributed.replicate(params, mesh)
    if state is None:
        state = trainer.init(params)
    saved_epoch = start_epoch  # the epoch the checkpoint on disk holds (0: none, or untrained)
    shuffle_key, probe_key = jax.random.split(key)

    if mesh is None:
        data = tuple(jnp.asarray(a) for a in train_data)
        place = lambda tree: tree  # noqa: E731
    else:
        data = _place_data(train_data, mesh)
        place = functools.partial(distributed.replicate, mesh=mesh)
        state, shuffle_key, probe_key = place((state, shuffle_key, probe_key))
        if eval_data is not None:
            eval_data = place(tuple(eval_data))
    run_epoch = _cached(_jit_epoch, trainer, steps_per_epoch, bs, not full_batch, mesh)
    evaluate = _cached(jax.jit, eval_fn) if eval_fn is not None else None
    sharpness_fn = _cached(_jit_sharpness, loss_fn) if track_sharpness_every is not None else None
    writes = mesh is None or distributed.is_main_process()
    if writes and ckpt_path is not None:
        _remove_stale_temp_files(ckpt_path)

    def save(epochs_done):
        nonlocal saved_epoch
        if writes:
            save_checkpoint(ckpt_path, params=params, state=state, key=key, epoch=epochs_done,
                            rows=rows, run=run_signature)
        saved_epoch = epochs_done

    bar = _progress(progress, epochs, start_epoch)
    t0 = time.perf_counter()
    stop = False
    try:
        for epoch in range(start_epoch, epochs):
            new_params, new_state, metrics, finite = run_epoch(
                params, state, data, shuffle_key, place(np.int32(epoch)))
            if "loss" not in metrics:
                raise ValueError("fit: trainer.step must return metrics with a 'loss' entry, got "
                                 f"{sorted(metrics)}")
            losses = np.asarray(metrics["loss"])
            bad = np.flatnonzero(~(np.isfinite(losses) & np.asarray(finite)))
            if bad.size:
                step = int(bad[0])
                if ckpt_path is not None and epoch > saved_epoch:
                    save(epoch)  # the last good epoch, which checkpoint_every had skipped
                what = (f"non-finite loss {losses[step]}" if not np.isfinite(losses[step])
                        else "non-finite parameters after the update")
                where = (f"; last good checkpoint (after {saved_epoch} epochs): {ckpt_path}"
                         if ckpt_path is not None and saved_epoch > 0 else "")
                raise FloatingPointError(f"fit: {what} at epoch {epoch}, step {step}{where}")
            params, state = new_params, new_state
            row = {"epoch": epoch}
            row.update({k: float(np.mean(np.asarray(v))) for k, v in metrics.items()})
            if evaluate is not None:
                row.update(_eval_entries(evaluate(params, eval_data)))
            if sharpness_fn is not None:
                tracked = (epoch + 1) % track_sharpness_every == 0 or epoch == 0
                row["sharpness"] = (float(sharpness_fn(params, data, probe_key,
                                                       place(np.int32(epoch))))
                                    if tracked else math.nan)
            row["wall_time"] = elapsed_before + time.perf_counter() - t0
            rows.append(row)
            for callback in callbacks:
                stop = bool(callback(epoch, params, state, dict(row))) or stop
            last = epoch + 1 == epochs or stop
            if ckpt_path is not None and ((epoch + 1) % checkpoint_every == 0 or last):
                save(epoch + 1)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.4g}")
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    return params, _history(rows)


def _check_resume(path: Path, saved: Mapping[str, int] | None,
                  current: Mapping[str, int]) -> None:
    """ValueError if the checkpoint was written for other data sizes than this call's."""
    if not saved:  # written by save_checkpoint directly, without a run signature
        return
    differ = {k: (saved[k], current[k]) for k in current if k in saved and saved[k] != current[k]}
    if differ:
        what = ", ".join(f"{k}={old} (now {new})" for k, (old, new) in differ.items())
        raise ValueError(f"fit: the checkpoint {path} was written for {what}; resuming would "
                         f"replay different batches. Pass the same train_data and batch_size, "
                         f"or a new checkpoint_dir")


def _check_int(fn: str, name: str, value, low: int, alternative: str = "") -> int:
    """Return ``value`` as an ``int``; TypeError unless integral, ValueError unless ``>= low``."""
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or number < low:
        hint = f" {alternative}" if alternative else ""
        raise ValueError(f"{fn}: {name} must be an integer >= {low}{hint}, got {value!r}")
    return number


def _all_finite(tree: PyTree) -> jax.Array:
    """``True`` iff every floating leaf of ``tree`` is free of NaN and Inf."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _place_data(train_data: Batch, mesh: Mesh) -> Batch:
    """``train_data`` (this process's share) as global arrays on ``mesh``, split along "data".

    Within one process, rows that the devices do not divide evenly keep the data replicated
    (each device holds all of it; the batches are still split inside the epoch).
    """
    rows = np.shape(train_data[0])[0]
    local = distributed.local_data_devices(mesh)
    if rows % local == 0:
        return distributed.shard_batch(train_data, mesh)
    if jax.process_count() > 1:
        raise ValueError(f"fit: each process's train_data must have a multiple of its {local} "
                         f"devices on the mesh's 'data' axis as leading dimension, got {rows}")
    logger.info("fit: %d examples do not split over %d devices; keeping the data replicated",
                rows, local)
    return distributed.replicate(tuple(train_data), mesh)


def _epoch_fn(trainer: Trainer, steps: int, batch_size: int, shuffle: bool,
              mesh: Mesh | None = None):
    """``(params, state, data, key, epoch) -> (params, state, metrics, finite)``: one epoch.

    The epoch's batches are a ``lax.scan`` over the permutation drawn with
    ``fold_in(key, epoch)``. ``metrics`` are the trainer's metrics stacked over the ``steps``
    steps; ``finite`` is a ``(steps,)`` bool array, ``True`` where the parameters after that step
    are all finite. With a ``mesh``, each batch is constrained to be split along "data" and the
    parameters and state after each step to be replicated.
    """
    if mesh is None:
        split = keep = lambda tree: tree  # noqa: E731
    else:
        split = functools.partial(_constrain, sharding=lambda x: distributed.batch_sharding(
            mesh, x.ndim, leading=1))
        keep = functools.partial(_constrain, sharding=lambda x: distributed.replicated(mesh))

    def epoch(params, state, data, key, epoch_index):
        if shuffle:
            perm = jax.random.permutation(jax.random.fold_in(key, epoch_index),
                                          data[0].shape[0])[: steps * batch_size]
            batches = tuple(a[perm].reshape((steps, batch_size) + a.shape[1:]) for a in data)
        else:
            batches = tuple(a[None] for a in data)
        batches = split(batches)

        def body(carry, batch):
            p, s = carry
            p, s, m = trainer.step(p, s, batch)
            p, s = keep((p, s))
            return (p, s), (m, _all_finite(p))

        (params, state), (metrics, finite) = jax.lax.scan(body, (params, state), batches)
        return params, state, metrics, finite

    return epoch


def _constrain(tree: PyTree, sharding: Callable[[jax.Array], Any]) -> PyTree:
    """``with_sharding_constraint`` on every array leaf (typed PRNG keys left to propagation)."""
    def leaf(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x
        return jax.lax.with_sharding_constraint(x, sharding(x))

    return jax.tree_util.tree_map(leaf, tree)


def _jit_epoch(trainer: Trainer, steps: int, batch_size: int, shuffle: bool,
               mesh: Mesh | None = None):
    """The jitted epoch function (see ``_epoch_fn``)."""
    return jax.jit(_epoch_fn(trainer, steps, batch_size, shuffle, mesh))


def _jit_sharpness(loss_fn: LossFn):
    """Jitted ``(params, data, key, epoch) -> λ_max`` of the Hessian of ``loss_fn(·, data)``."""
    from jaxcalc import spectrum

    def sharpness(params, data, key, epoch_index):
        values, _ = spectrum.top_eigenvalues(lambda p: loss_fn(p, data), params, k=1,
                                             key=jax.random.fold_in(key, epoch_index))
        return values[0]

    return jax.jit(sharpness)


# Jitted functions are kept per (trainer or function, static sizes) so that calling ``fit`` again
# with the same trainer — resuming, or training on in a loop — reuses the compiled epoch instead
# of tracing and compiling it anew. A few entries only: each holds its trainer (and what it closes
# over) alive.
_JIT_CACHE_SIZE = 8


@functools.lru_cache(maxsize=_JIT_CACHE_SIZE)
def _cached_call(builder, *args):
    return builder(*args)


def _cached(builder, *args):
    """``builder(*args)``, memoized when the arguments are hashable (trainers, functions, ints)."""
    try:
        hash(args)
    except TypeError:  # an unhashable trainer or function: build it for this call only
        return builder(*args)
    return _cached_call(builder, *args)


def _eval_entries(value) -> Dict[str, float]:
    """History entries from ``eval_fn``'s value: ``eval_loss`` or ``eval_<name>`` per dict key."""
    entries = dict(value) if isinstance(value, Mapping) else {"loss": value}
    for name, v in entries.items():
        if np.shape(v) != ():
            raise ValueError(f"fit: eval_fn must return a scalar or a dict of scalars, got shape "
                             f"{np.shape(v)} for {name!r}")
    return {f"eval_{k}": float(v) for k, v in entries.items()}


def _history(rows) -> History:
    keys = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    return {k: np.asarray([row.get(k, math.nan) for row in rows]) for k in keys}


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=int(total), initial=int(initial), desc="fit", unit="epoch", leave=False)


# ----------------------------------------------------------------------------- checkpoints


def _to_host(tree: PyTree) -> PyTree:
    def leaf(x):
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return {"__prng_key__": np.asarray(jax.random.key_data(x)),
                    "impl": str(jax.random.key_impl(x))}
        return np.asarray(x) if isinstance(x, (jax.Array, np.ndarray, np.generic)) else x

    return jax.tree_util.tree_map(leaf, tree)


def _to_device(tree: PyTree) -> PyTree:
    def is_key(x):
        return isinstance(x, dict) and "__prng_key__" in x

    def leaf(x):
        if is_key(x):
            return jax.random.wrap_key_data(jnp.asarray(x["__prng_key__"]), impl=x["impl"])
        return jnp.asarray(x) if isinstance(x, (np.ndarray, np.generic)) else x

    return jax.tree_util.tree_map(leaf, tree, is_leaf=is_key)


def save_checkpoint(path: str | os.PathLike, *, params: Params, state: PyTree, key: PRNGKey,
                    epoch: int, rows: Sequence[Dict[str, float]],
                    run: Mapping[str, int] | None = None) -> None:
    """Write a checkpoint atomically: a temp file in the same folder, fsync, then rename.

    ``run`` records what the epochs meant (``fit`` stores ``n``, ``batch_size`` and
    ``steps_per_epoch``) so that a resume on different data is refused instead of silently
    training a different run.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "epoch": int(epoch), "params": _to_host(params),
               "state": _to_host(state), "key": _to_host(key), "rows": list(rows),
               "run": dict(run) if run is not None else None}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _remove_stale_temp_files(path: Path) -> None:
    """Delete the temp files of saves that a killed process left half-written next to ``path``."""
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            try:
                tmp.unlink()
            except OSError:  # another process removed it first
                pass


def load_checkpoint(path: str | os.PathLike) -> Dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; arrays come back as JAX arrays."""
    with open(path, "rb") as fh:
        payload = pickle.load(fh)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"load_checkpoint: {path} has format {payload.get('format')!r}, "
                         f"expected {CHECKPOINT_FORMAT}")
    for name in ("params", "state", "key"):
        payload[name] = _to_device(payload[name])
    return payload


__all__ = ["fit", "save_checkpoint", "load_checkpoint", "CHECKPOINT_NAME"]
