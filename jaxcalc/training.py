"""``fit``: the training loop around a ``Trainer`` — batches, history, checkpoints, progress.

Each epoch is one jit-compiled ``lax.scan`` over its mini-batches (no Python loop per step, no
retrace between epochs: every epoch has the same shapes; the ``N mod batch_size`` examples left
over after shuffling are dropped that epoch). ``key`` is split once into a shuffle stream and a
sharpness-probe stream; the shuffle of epoch ``e`` uses ``jax.random.fold_in(shuffle_key, e)``,
so a run resumed from a checkpoint replays exactly the batches of an uninterrupted one and
reaches bit-identical parameters on the same machine.

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

from jaxcalc._types import Batch, LossFn, Params, PRNGKey, PyTree
from jaxcalc._validate import check_batch
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
        progress: bool = True, callbacks: Sequence[Callback] = ()) -> Tuple[Params, History]:
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
      ValueError, TypeError: on bad arguments, naming the argument.
    """
    train_data, n = check_batch("fit", train_data, "train_data")
    epochs = _check_int("fit", "epochs", epochs, 0)
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

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    start_epoch, rows, elapsed_before = 0, [], 0.0
    state = None
    if ckpt_path is not None and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        params, state, key = ckpt["params"], ckpt["state"], ckpt["key"]
        start_epoch, rows = int(ckpt["epoch"]), list(ckpt["rows"])
        elapsed_before = float(rows[-1]["wall_time"]) if rows else 0.0
        logger.info("fit: resuming from %s at epoch %d", ckpt_path, start_epoch)
    if state is None:
        state = trainer.init(params)
    saved_epoch = start_epoch  # the epoch the checkpoint on disk holds (0: none, or untrained)
    shuffle_key, probe_key = jax.random.split(key)

    data = tuple(jnp.asarray(a) for a in train_data)
    run_epoch = _cached(_jit_epoch, trainer, steps_per_epoch, bs, not full_batch)
    evaluate = _cached(jax.jit, eval_fn) if eval_fn is not None else None
    sharpness_fn = _cached(_jit_sharpness, loss_fn) if track_sharpness_every is not None else None

    def save(epochs_done):
        nonlocal saved_epoch
        save_checkpoint(ckpt_path, params=params, state=state, key=key, epoch=epochs_done,
                        rows=rows)
        saved_epoch = epochs_done

    bar = _progress(progress, epochs, start_epoch)
    t0 = time.perf_counter()
    stop = False
    try:
        for epoch in range(start_epoch, epochs):
            new_params, new_state, metrics, finite = run_epoch(
                params, state, data, jax.random.fold_in(shuffle_key, epoch))
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
                row["sharpness"] = (float(sharpness_fn(params, data,
                                                       jax.random.fold_in(probe_key, epoch)))
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


def _epoch_fn(trainer: Trainer, steps: int, batch_size: int, shuffle: bool):
    """``(params, state, data, key) -> (params, state, metrics, finite)``: one epoch as a scan.

    ``metrics`` are the trainer's metrics stacked over the ``steps`` steps; ``finite`` is a
    ``(steps,)`` bool array, ``True`` where the parameters after that step are all finite.
    """

    def epoch(params, state, data, key):
        if shuffle:
            perm = jax.random.permutation(key, data[0].shape[0])[: steps * batch_size]
            batches = tuple(a[perm].reshape((steps, batch_size) + a.shape[1:]) for a in data)
        else:
            batches = tuple(a[None] for a in data)

        def body(carry, batch):
            p, s = carry
            p, s, m = trainer.step(p, s, batch)
            return (p, s), (m, _all_finite(p))

        (params, state), (metrics, finite) = jax.lax.scan(body, (params, state), batches)
        return params, state, metrics, finite

    return epoch


def _jit_epoch(trainer: Trainer, steps: int, batch_size: int, shuffle: bool):
    """The jitted epoch function (see ``_epoch_fn``)."""
    return jax.jit(_epoch_fn(trainer, steps, batch_size, shuffle))


def _jit_sharpness(loss_fn: LossFn):
    """Jitted ``(params, data, key) -> λ_max`` of the Hessian of ``loss_fn(·, data)``."""
    from jaxcalc import spectrum

    def sharpness(params, data, key):
        values, _ = spectrum.top_eigenvalues(lambda p: loss_fn(p, data), params, k=1, key=key)
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
                    epoch: int, rows: Sequence[Dict[str, float]]) -> None:
    """Write a checkpoint atomically: a temp file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "epoch": int(epoch), "params": _to_host(params),
               "state": _to_host(state), "key": _to_host(key), "rows": list(rows)}
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
