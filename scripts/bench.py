r"""Benchmarks of jaxcalc's calculus and trainers; writes BENCHMARKS.json and prints a table.

    python scripts/bench.py [--quick] [--only c,d,f] [--json PATH]

Letters follow the project's benchmark table:

* ``c`` — ``derivatives.hvp`` against ``jax.grad`` on float32 tanh MLPs of about 1e4, 1e5 and
  1e6 parameters (MSE on a batch of 128). Target: HVP time ≤ 2 × gradient time.
* ``d`` — the dense Hessian of an 8→256→1 tanh MLP (n = 2561, 256 samples, float64, MSE):
  ``derivatives.hessian_matrix`` against ``torch.func.hessian`` of the same loss of the flat
  parameter vector and against the central finite-difference Hessian from exact gradients
  (``finite_diff.hessian``), plus a sweep of ``chunk_size``. Targets: ≥ 3 × faster than
  torch.func, faster than finite differences; the three must agree.
* ``f`` — per-step time of every trainer relative to ``sgd`` on the same model and batch, and the
  first-step (trace + compile + one step) time, on a 64→32→10 tanh MLP (softmax cross-entropy,
  digits-shaped data, full batch 512) and on ``models.cnn(10)`` (8×8×1 inputs, batch 64; only
  first-order and matrix-free second-order trainers). Step 2 must not trace again.

Timing rules: everything timed is ``jax.jit``-ed with its data passed as arguments (so XLA cannot
fold it into constants); for ``c``/``d`` the ahead-of-time ``lower().compile()`` time is reported
as ``compile_s``; every timed call is followed by ``jax.block_until_ready``; a warm-up call and a
calibration call precede the timed runs; each sample repeats a call ``repeats`` times (so that a
sample lasts at least ``min_sample_s``) and the statistics are the median and interquartile range
of ``runs`` samples (≥ 20; ``--quick``: tiny sizes, 3 runs, a subset of the trainers: a smoke
test that makes no timing claims). Every ratio is a ratio
of two medians measured in the same process with the cases interleaved run by run (the order
alternates), so slow drifts of the machine's load hit both sides alike.

torch is optional: without it the torch rows are marked ``skipped`` with a note.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import jax

jax.config.update("jax_enable_x64", True)  # benchmark d and f run in float64; c asks for float32

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from jaxcalc import derivatives, finite_diff, losses, models, trainers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "BENCHMARKS.json"
BENCHMARKS = ("c", "d", "f")
SEED = 0

log = logging.getLogger("bench")


# ----------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes and timing settings of one run (``FULL`` or ``QUICK``)."""

    runs: int
    warmups: int                  # untimed calls after the first (compiling) one
    min_sample_s: float           # a timed sample repeats a call until it lasts about this long
    max_repeats: int
    c_sizes: Sequence[int]        # target parameter counts of the MLPs of benchmark c
    c_batch: int
    c_features: int
    c_outputs: int
    d_sizes: Sequence[int]        # MLP widths of benchmark d
    d_samples: int
    d_chunks: Sequence[int]       # chunk_size values swept (the default chunk is always added)
    d_sweep_f_mlp: bool           # sweep chunk_size on benchmark f's MLP too
    f_mlp_sizes: Sequence[int]
    f_mlp_batch: int
    f_mlp_trainers: Sequence[str]
    f_cnn_batch: int
    f_cnn_trainers: Sequence[str]
    f_dense_parts: bool           # time the pieces of the dense second-order steps


FULL = Config(runs=20, warmups=1, min_sample_s=0.02, max_repeats=1000,
              c_sizes=(10_000, 100_000, 1_000_000), c_batch=128, c_features=64, c_outputs=10,
              d_sizes=(8, 256, 1), d_samples=256, d_chunks=(8, 16, 32, 64, 256),
              d_sweep_f_mlp=True,
              f_mlp_sizes=(64, 32, 10), f_mlp_batch=512,
              f_mlp_trainers=("sgd", "sgd_momentum", "rmsprop", "adam", "natgrad_empirical_dense",
                              "natgrad_true_dense", "natgrad_true_cg", "newton_dense", "newton_cg",
                              "newton_gauss_newton_dense"),
              f_cnn_batch=64,
              f_cnn_trainers=("sgd", "sgd_momentum", "rmsprop", "adam", "natgrad_true_cg",
                              "newton_cg"),
              f_dense_parts=True)
QUICK = Config(runs=3, warmups=0, min_sample_s=0.0, max_repeats=1,
               c_sizes=(1_000,), c_batch=16, c_features=16, c_outputs=4,
               d_sizes=(4, 16, 1), d_samples=32, d_chunks=(97,), d_sweep_f_mlp=False,
               f_mlp_sizes=(64, 4, 10), f_mlp_batch=32,
               f_mlp_trainers=("sgd", "adam", "natgrad_empirical_dense", "newton_cg"),
               f_cnn_batch=8, f_cnn_trainers=("sgd",), f_dense_parts=False)


# ----------------------------------------------------------------------------- timing


@dataclasses.dataclass
class Case:
    """One timed thing: ``call()`` runs it once, returning what to block on (torch: ``None``)."""

    name: str
    call: Callable[[], Any]


def _wait(out: Any) -> None:
    if out is not None:
        jax.block_until_ready(out)


def _time_call(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    _wait(call())
    return time.perf_counter() - start


def _stats(samples: Sequence[float], repeats: int) -> Dict[str, Any]:
    a = np.asarray(samples, np.float64)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median_s": float(med), "iqr_s": float(q3 - q1), "q1_s": float(q1), "q3_s": float(q3),
            "min_s": float(a.min()), "runs": int(a.size), "repeats": int(repeats),
            "samples_s": [float(s) for s in a]}


def measure(cases: Sequence[Case], cfg: Config) -> Dict[str, Dict[str, Any]]:
    """Median/IQR per case over ``cfg.runs`` samples, the cases interleaved within every run.

    Each case is called ``cfg.warmups`` more times to warm up (the first call, where compilation
    happens, is the caller's) and once to calibrate its repeats per sample. Odd runs go through
    the cases in reverse order, so no case always runs right after the same neighbour.
    """
    repeats = {}
    for case in cases:
        for _ in range(cfg.warmups):
            _time_call(case.call)
        once = _time_call(case.call)
        wanted = math.ceil(cfg.min_sample_s / max(once, 1e-9))
        repeats[case.name] = int(min(cfg.max_repeats, max(1, wanted)))
    samples: Dict[str, List[float]] = {case.name: [] for case in cases}
    load_start = os.getloadavg()[0]
    for run in range(cfg.runs):
        for case in (cases if run % 2 == 0 else list(reversed(cases))):
            k = repeats[case.name]
            start = time.perf_counter()
            for _ in range(k):
                _wait(case.call())
            samples[case.name].append((time.perf_counter() - start) / k)
    load = [load_start, os.getloadavg()[0]]  # 1-minute load average before and after the runs
    return {name: {**_stats(s, repeats[name]), "load_1min": load} for name, s in samples.items()}


def compile_aot(fn: Callable, *args) -> tuple[Any, float, float | None]:
    """``(jitted, compile_s, flops)``: AOT ``lower().compile()`` time and XLA's FLOP estimate.

    The flop count is XLA's cost analysis of the optimized executable (loop bodies are counted
    once, so it is only quoted for loop-free programs).
    """
    jitted = jax.jit(fn)
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - start
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost["flops"]) if cost and "flops" in cost else None
    except Exception:  # cost analysis is best effort; not every backend provides it
        flops = None
    _wait(compiled(*args))  # run the executable once; later calls use ``jitted``'s cache
    return jitted, compile_s, flops


# ----------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> List[str]:
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def core_count() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(torch_version: str | None) -> Dict[str, Any]:
    """CPU, cores, versions, backend and device of this process."""
    device = jax.devices()[0]
    return {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": core_count(),
        "os_cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax_version": jax.__version__,
        "jaxlib_version": _jaxlib_version(),
        "numpy_version": np.__version__,
        "optax_version": optax.__version__,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "gpu_available": any(d.platform == "gpu" for d in jax.devices()),
        "torch_version": torch_version,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "git_commit": _git_commit(),
    }


def _jaxlib_version() -> str:
    import jaxlib
    return getattr(jaxlib, "__version__", "unknown")


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _torch_version() -> str | None:
    """torch's installed version (without importing it), or ``None``."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch():
    """The torch module with its threads set to the core count, or ``None`` if not importable."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(core_count())
    return torch


# ----------------------------------------------------------------------------- rows


def _row(bench: str, name: str, stats: Dict[str, Any] | None, **extra) -> Dict[str, Any]:
    row = {"bench": bench, "name": name, "skipped": stats is None}
    if stats is not None:
        row.update(stats)
    row.update(extra)
    return row


def _met(quick: bool, ok: bool) -> bool | None:
    """A target verdict; ``None`` in --quick mode, which makes no timing claims."""
    return None if quick else bool(ok)


def _mlp_width(target: int, features: int, outputs: int) -> int:
    """Width ``h`` of a ``features → h → h → outputs`` MLP with about ``target`` parameters."""
    b = features + outputs + 2  # h² + (features + outputs + 2) h + outputs = target
    return max(1, round((-b + math.sqrt(b * b + 4 * max(target - outputs, 1))) / 2))


def _param_count(params) -> int:
    return int(ravel_pytree(params)[0].size)


# ----------------------------------------------------------------------------- c: HVP vs grad


def bench_c(cfg: Config, quick: bool) -> Dict[str, Any]:
    """HVP (forward-over-reverse, ``derivatives.hvp``) vs gradient on float32 tanh MLPs."""
    target = 2.0
    rows = []
    key = jax.random.PRNGKey(SEED)
    for size in cfg.c_sizes:
        width = _mlp_width(size, cfg.c_features, cfg.c_outputs)
        sizes = (cfg.c_features, width, width, cfg.c_outputs)
        model = models.mlp(sizes, "tanh", dtype=jnp.float32)
        k_init, k_x, k_y, k_v, key = jax.random.split(key, 5)
        _, params = model.init(k_init, (-1, cfg.c_features))
        x = jax.random.normal(k_x, (cfg.c_batch, cfg.c_features), jnp.float32)
        y = jax.random.normal(k_y, (cfg.c_batch, cfg.c_outputs), jnp.float32)
        flat, unravel = ravel_pytree(params)
        v = unravel(jax.random.normal(k_v, flat.shape, jnp.float32))
        n = int(flat.size)
        log.info("c: MLP %s, n = %d", "-".join(map(str, sizes)), n)

        def loss(p, x, y):
            return losses.mse(model.apply(p, x), y)

        def grad_fn(p, x, y):
            return jax.grad(loss)(p, x, y)

        def hvp_fn(p, v, x, y):
            return derivatives.hvp(lambda q: loss(q, x, y), p, v)

        def hvp_rev_fn(p, v, x, y):  # reverse-over-forward, a diagnostic of the library's choice
            directional = lambda q: jax.jvp(lambda r: loss(r, x, y), (q,), (v,))[1]
            return jax.grad(directional)(p)

        g_jit, g_compile, g_flops = compile_aot(grad_fn, params, x, y)
        h_jit, h_compile, h_flops = compile_aot(hvp_fn, params, v, x, y)
        r_jit, r_compile, r_flops = compile_aot(hvp_rev_fn, params, v, x, y)
        stats = measure([Case("grad", lambda: g_jit(params, x, y)),
                         Case("hvp", lambda: h_jit(params, v, x, y)),
                         Case("hvp_rev_over_fwd", lambda: r_jit(params, v, x, y))], cfg)
        common = {"model": "mlp " + "-".join(map(str, sizes)) + " tanh", "params": n,
                  "batch": cfg.c_batch, "dtype": "float32", "loss": "mse"}
        g_med = stats["grad"]["median_s"]
        ratio = stats["hvp"]["median_s"] / g_med
        rows.append(_row("c", f"grad n={n}", stats["grad"], compile_s=g_compile, xla_flops=g_flops,
                         **common))
        rows.append(_row("c", f"hvp n={n}", stats["hvp"], compile_s=h_compile, xla_flops=h_flops,
                         baseline="grad", ratio=ratio,
                         flops_ratio=(h_flops / g_flops) if h_flops and g_flops else None,
                         target=f"hvp/grad <= {target}", met=_met(quick, ratio <= target),
                         **common))
        rows.append(_row("c", f"hvp_rev_over_fwd n={n}", stats["hvp_rev_over_fwd"],
                         compile_s=r_compile, xla_flops=r_flops, baseline="grad",
                         ratio=stats["hvp_rev_over_fwd"]["median_s"] / g_med,
                         flops_ratio=(r_flops / g_flops) if r_flops and g_flops else None,
                         diagnostic=True, **common))
    return {"title": "HVP (forward-over-reverse) vs gradient, float32 tanh MLPs, MSE",
            "target": f"hvp median <= {target} x grad median", "rows": rows}


# ----------------------------------------------------------------------------- d: dense Hessian


def _torch_hessian_case(torch, params, x, y, n_hidden_layers: int):
    """``Case`` for ``torch.func.hessian`` of the same MSE as a function of the flat params.

    The flat vector is in ``ravel_pytree`` order, so the result is comparable entry by entry.
    """
    flat, _ = ravel_pytree(params)
    layout, offset = {}, 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        size = int(np.prod(leaf.shape, dtype=int))
        layout[jax.tree_util.keystr(path)] = (offset, tuple(leaf.shape))
        offset += size
    theta = torch.from_numpy(np.array(flat, np.float64))
    xt = torch.from_numpy(np.array(x, np.float64))
    yt = torch.from_numpy(np.array(y, np.float64))

    def piece(t, name):
        start, shape = layout[name]
        return t[start:start + int(np.prod(shape, dtype=int))].reshape(shape)

    def loss(t):
        h = xt
        for i in range(n_hidden_layers + 1):
            h = h @ piece(t, f"['dense{i}']['w']") + piece(t, f"['dense{i}']['b']")
            if i < n_hidden_layers:
                h = torch.tanh(h)
        return ((h - yt) ** 2).mean()

    hessian = torch.func.hessian(loss)
    result = {}

    def call():
        result["H"] = hessian(theta)
        return None  # eager CPU torch has finished when it returns

    return Case("torch.func.hessian", call), result


def hessian_default_chunk(n: int) -> int:
    """The chunk ``hessian_matrix`` uses when ``chunk_size=None``, for ``n`` parameters."""
    default = getattr(derivatives, "_HESSIAN_CHUNK", getattr(derivatives, "_DEFAULT_CHUNK", n))
    return max(1, min(n, int(default)))


def _chunk_sweep(loss, params, args, chunk_sizes, cfg: Config, common: Dict):
    """Rows and ``{chunk: stats}`` of ``hessian_matrix`` over ``chunk_sizes`` (and the default),
    interleaved; each row's ratio is its median over the default chunk's median."""
    n = _param_count(params)
    default = hessian_default_chunk(n)
    chunks = sorted({min(int(c), n) for c in chunk_sizes} | {default})
    log.info("d: chunk sweep on %s, n = %d: %s", common["model"], n, chunks)
    compiled = {c: compile_aot(lambda p, *a, c=c: derivatives.hessian_matrix(
        lambda q: loss(q, *a), p, chunk_size=c), params, *args) for c in chunks}
    stats = measure([Case(f"chunk={c}", lambda c=c: compiled[c][0](params, *args))
                     for c in chunks], cfg)
    sweep = {c: stats[f"chunk={c}"] for c in chunks}
    rows = [_row("d", f"hessian_matrix chunk_size={c} ({common['model']})", sweep[c],
                 compile_s=compiled[c][1], chunk_size=c, default=c == default, sweep=True,
                 baseline=f"chunk_size={default} (default)",
                 ratio=sweep[c]["median_s"] / sweep[default]["median_s"], **common)
            for c in chunks]
    return rows, sweep


def bench_d(cfg: Config, quick: bool, torch) -> Dict[str, Any]:
    """Dense Hessian: ``hessian_matrix`` (chunk sweep) vs ``torch.func.hessian`` vs FD."""
    sizes = tuple(cfg.d_sizes)
    model = models.mlp(sizes, "tanh", dtype=jnp.float64)
    k_init, k_x, k_a = jax.random.split(jax.random.PRNGKey(SEED + 1), 3)
    _, params = model.init(k_init, (-1, sizes[0]))
    x = jax.random.normal(k_x, (cfg.d_samples, sizes[0]), jnp.float64)
    y = jnp.sin(x @ jax.random.normal(k_a, (sizes[0], sizes[-1]), jnp.float64))
    n = _param_count(params)
    default_chunk = hessian_default_chunk(n)
    log.info("d: MLP %s, n = %d", "-".join(map(str, sizes)), n)
    common = {"model": "mlp " + "-".join(map(str, sizes)) + " tanh", "params": n,
              "samples": cfg.d_samples, "dtype": "float64", "loss": "mse"}

    def loss(p, x, y):
        return losses.mse(model.apply(p, x), y)

    def fd(p, x, y):
        return finite_diff.hessian(lambda q: loss(q, x, y), p, method="central", source="grad")

    # 1) chunk sweeps of hessian_matrix: this model, and the MLP of benchmark f (cross-entropy)
    rows, sweep = _chunk_sweep(loss, params, (x, y), cfg.d_chunks, cfg, common)
    best = min(sweep, key=lambda c: sweep[c]["median_s"])
    f_sweep = None
    if cfg.d_sweep_f_mlp:
        xf, yf, source = _digits(cfg.f_mlp_batch)
        f_sizes = tuple(cfg.f_mlp_sizes)
        f_model = models.mlp(f_sizes, "tanh", dtype=jnp.float64)
        _, f_params = f_model.init(jax.random.PRNGKey(SEED + 2), (-1, f_sizes[0]))
        f_loss = lambda p, x, y: losses.softmax_cross_entropy(f_model.apply(p, x), y)
        f_common = {"model": "mlp " + "-".join(map(str, f_sizes)) + " tanh",
                    "params": _param_count(f_params), "samples": cfg.f_mlp_batch,
                    "dtype": "float64", "loss": "softmax_cross_entropy", "data": source}
        f_rows, f_sweep = _chunk_sweep(f_loss, f_params, (jnp.asarray(xf), jnp.asarray(yf)),
                                       cfg.d_chunks, cfg, f_common)
        rows += f_rows

    # 2) the comparison: default hessian_matrix, torch.func.hessian and FD, interleaved
    exact = lambda p, x, y: derivatives.hessian_matrix(lambda q: loss(q, x, y), p)
    h_jit, h_compile, _ = compile_aot(exact, params, x, y)
    fd_jit, fd_compile, _ = compile_aot(fd, params, x, y)
    cases = [Case("hessian_matrix", lambda: h_jit(params, x, y)),
             Case("fd", lambda: fd_jit(params, x, y))]
    torch_result = None
    if torch is not None:
        torch_case, torch_result = _torch_hessian_case(torch, params, x, y, len(sizes) - 2)
        start = time.perf_counter()
        torch_case.call()
        torch_first = time.perf_counter() - start
        cases.append(torch_case)
    stats = measure(cases, cfg)
    h_med = stats["hessian_matrix"]["median_s"]
    H = np.asarray(h_jit(params, x, y))
    H_fd = np.asarray(fd_jit(params, x, y))
    scale = float(np.max(np.abs(H)))
    fd_diff = float(np.max(np.abs(H - H_fd)))
    rows.append(_row("d", "jaxcalc hessian_matrix (default chunk)", stats["hessian_matrix"],
                     compile_s=h_compile, chunk_size=default_chunk, **common))
    fd_speedup = stats["fd"]["median_s"] / h_med
    rows.append(_row("d", "finite_diff.hessian (central, from grads)", stats["fd"],
                     compile_s=fd_compile, baseline="hessian_matrix",
                     ratio=stats["fd"]["median_s"] / h_med, speedup_of_hessian_matrix=fd_speedup,
                     max_abs_diff_vs_hessian_matrix=fd_diff,
                     target="hessian_matrix faster than FD", met=_met(quick, fd_speedup > 1.0),
                     **common))
    agreement = {"max_abs_H": scale, "fd_vs_jax_max_abs_diff": fd_diff}
    if torch is not None:
        H_torch = torch_result["H"].detach().numpy()
        torch_diff = float(np.max(np.abs(H - H_torch)))
        agreement["torch_vs_jax_max_abs_diff"] = torch_diff
        agreement["torch_vs_fd_max_abs_diff"] = float(np.max(np.abs(H_torch - H_fd)))
        speedup = stats["torch.func.hessian"]["median_s"] / h_med
        rows.append(_row("d", "torch.func.hessian (flat params)", stats["torch.func.hessian"],
                         first_call_s=torch_first, baseline="hessian_matrix",
                         ratio=speedup, speedup_of_hessian_matrix=speedup,
                         max_abs_diff_vs_hessian_matrix=torch_diff,
                         torch_threads=torch.get_num_threads(),
                         target="hessian_matrix >= 3x faster than torch.func",
                         met=_met(quick, speedup >= 3.0), **common))
    else:
        rows.append(_row("d", "torch.func.hessian (flat params)", None,
                         note="skipped: torch is not importable (pip install torch)", **common))
    return {"title": "Dense Hessian of an MLP: hessian_matrix vs torch.func.hessian vs FD",
            "target": ">= 3x faster than torch.func.hessian; faster than finite differences",
            "default_chunk_size": default_chunk, "best_chunk_size": best,
            "best_vs_default": sweep[best]["median_s"] / sweep[default_chunk]["median_s"],
            "f_mlp_best_chunk_size": (min(f_sweep, key=lambda c: f_sweep[c]["median_s"])
                                      if f_sweep else None),
            "agreement": agreement, "rows": rows}


# ----------------------------------------------------------------------------- f: trainers


def _digits(batch: int):
    """``(x, y, source)``: the first ``batch`` 8×8 digits as ``(batch, 64)`` in [0, 1] and labels.

    ``sklearn.datasets.load_digits`` when importable, else synthetic data of the same shape
    (1797, 64), pixel values 0..16 and 10 classes from a fixed random linear teacher.
    """
    try:
        from sklearn.datasets import load_digits
        data = load_digits()
        x, y, source = data.data / 16.0, data.target, "sklearn.datasets.load_digits"
    except ImportError:
        rng = np.random.default_rng(SEED)
        x = rng.integers(0, 17, size=(1797, 64)) / 16.0
        y = np.argmax(x @ rng.normal(size=(64, 10)), axis=1)
        source = "synthetic (1797, 64) in [0, 1], 10 classes (sklearn not importable)"
    return x[:batch].astype(np.float64), y[:batch].astype(np.int32), source


NATGRAD_LR = 0.1
NATGRAD_DAMPING = 1e-2  # natural_gradient's default 1e-4 diverges on the CNN at this rate

# name -> (constructor arguments as recorded in the JSON, factory(loss_fn, apply_fn, ce))
TRAINERS = {
    "sgd": ("sgd(lr=0.1)", lambda loss, apply, ce: trainers.sgd(loss, 0.1)),
    "sgd_momentum": ("sgd(lr=0.1, momentum=0.9)",
                     lambda loss, apply, ce: trainers.sgd(loss, 0.1, momentum=0.9)),
    "rmsprop": ("rmsprop(lr=1e-3)", lambda loss, apply, ce: trainers.rmsprop(loss, 1e-3)),
    "adam": ("from_optax(optax.adam(1e-3))",
             lambda loss, apply, ce: trainers.from_optax(loss, optax.adam(1e-3))),
    "natgrad_empirical_dense": (
        f"natural_gradient(lr={NATGRAD_LR}, damping={NATGRAD_DAMPING}, fisher='empirical', "
        "solver='dense')",
        lambda loss, apply, ce: trainers.natural_gradient(
            loss, NATGRAD_LR, damping=NATGRAD_DAMPING, fisher="empirical", solver="dense")),
    "natgrad_true_dense": (
        f"natural_gradient(lr={NATGRAD_LR}, damping={NATGRAD_DAMPING}, fisher='true', "
        "solver='dense', likelihood='categorical')",
        lambda loss, apply, ce: trainers.natural_gradient(
            loss, NATGRAD_LR, damping=NATGRAD_DAMPING, fisher="true", solver="dense",
            apply_fn=apply, likelihood="categorical")),
    "natgrad_true_cg": (
        f"natural_gradient(lr={NATGRAD_LR}, damping={NATGRAD_DAMPING}, fisher='true', "
        "solver='cg', likelihood='categorical', cg_maxiter=50)",
        lambda loss, apply, ce: trainers.natural_gradient(
            loss, NATGRAD_LR, damping=NATGRAD_DAMPING, fisher="true", solver="cg",
            apply_fn=apply, likelihood="categorical")),
    "newton_dense": ("newton(solver='dense') (damping 0, Armijo line search)",
                     lambda loss, apply, ce: trainers.newton(loss, solver="dense")),
    "newton_cg": ("newton(solver='cg', cg_maxiter=50) (damping 0, Armijo line search)",
                  lambda loss, apply, ce: trainers.newton(loss, solver="cg")),
    "newton_gauss_newton_dense": (
        "newton(solver='dense', curvature='gauss_newton') (damping 0, Armijo line search)",
        lambda loss, apply, ce: trainers.newton(loss, solver="dense", curvature="gauss_newton",
                                                apply_fn=apply, loss_of_output=ce)),
}


def _trainer_zoo(loss_fn, apply_fn, names: Sequence[str]) -> Dict[str, trainers.Trainer]:
    """The trainers of benchmark f by name (hyperparameters as a user would start with)."""
    ce = lambda out, y: losses.softmax_cross_entropy(out, y)
    zoo = {name: TRAINERS[name][1](loss_fn, apply_fn, ce) for name in names}
    zoo.setdefault("sgd", TRAINERS["sgd"][1](loss_fn, apply_fn, ce))
    return zoo


class _Chain:
    """A training loop of one jitted trainer: every call takes one step from the last state.

    ``traces`` counts how often ``jax.jit`` traced the step (a Python side effect at trace time).
    """

    def __init__(self, trainer: trainers.Trainer, params, batch):
        self.traces = 0

        def counted(p, s, b):
            self.traces += 1
            return trainer.step(p, s, b)

        self.step = jax.jit(counted)
        self.params, self.state, self.batch = params, trainer.init(params), batch
        self.steps = 0
        self.dampings: List[Any] = []
        self.metrics = None

    def __call__(self):
        self.params, self.state, self.metrics = self.step(self.params, self.state, self.batch)
        self.steps += 1
        if "damping" in self.metrics:
            self.dampings.append(self.metrics["damping"])
        return self.params


def _bench_trainers(model_name: str, trainer_names: Sequence[str], loss_fn, apply_fn, params,
                    batch, cfg: Config, quick: bool, common: Dict[str, Any]) -> List[Dict]:
    rows = []
    zoo = _trainer_zoo(loss_fn, apply_fn, trainer_names)
    for name in trainer_names:
        chain = _Chain(zoo[name], params, batch)
        start = time.perf_counter()
        _wait(chain())
        first_step = time.perf_counter() - start
        _wait(chain())  # step 2, from step 1's params and state: must reuse the executable
        traces_after_step2 = chain.traces
        log.info("f: %s %s first step %.2fs, traces after step 2: %d", model_name, name,
                 first_step, traces_after_step2)
        if name == "sgd":
            stats = measure([Case(name, chain)], cfg)
            s, baseline = stats[name], stats[name]
        else:
            sgd_chain = _Chain(zoo["sgd"], params, batch)
            _wait(sgd_chain())
            stats = measure([Case("sgd", sgd_chain), Case(name, chain)], cfg)
            s, baseline = stats[name], stats["sgd"]
        configured = None
        if chain.dampings:
            configured = float(zoo[name].init(params)["damping"])
            used = np.asarray([float(d) for d in chain.dampings])
            raised = float(np.mean(used > configured))
        final_loss = float(chain.metrics["loss"])
        rows.append(_row(
            "f", f"{model_name} {name}", s, trainer=name, model_name=model_name,
            hyperparameters=TRAINERS[name][0],
            first_step_s=first_step, traces_after_step2=traces_after_step2,
            retraced=traces_after_step2 != 1, baseline="sgd (interleaved)",
            baseline_median_s=baseline["median_s"], ratio=s["median_s"] / baseline["median_s"],
            steps_taken=chain.steps, final_loss=final_loss,
            damping_raised_fraction=raised if configured is not None else None, **common))
        if traces_after_step2 != 1:
            log.error("f: %s %s traced %d times by step 2", model_name, name, traces_after_step2)
    return rows


def _dense_parts(loss_fn, apply_fn, params, batch, cfg: Config, common: Dict) -> List[Dict]:
    """Diagnostic rows: the pieces of the dense second-order steps, timed interleaved.

    The n×n curvature builders of the trainers and the dense linear algebra of
    ``damped_solve`` (a Cholesky factorization; ``eigvalsh`` when the Cholesky solve fails).
    """
    ce = lambda out, y: losses.softmax_cross_entropy(out, y)
    builders = {
        "hessian_matrix": lambda p, b: derivatives.hessian_matrix(lambda q: loss_fn(q, b), p),
        "ggn_matrix": lambda p, b: derivatives.ggn_matrix(apply_fn, ce, p, b[0], b[1]),
        "fisher_matrix": lambda p, b: derivatives.fisher_matrix(apply_fn, p, b[0], "categorical"),
        "empirical_fisher_matrix": lambda p, b: derivatives.empirical_fisher_matrix(loss_fn, p, b),
    }
    jitted = {name: compile_aot(fn, params, batch) for name, fn in builders.items()}
    spd = jitted["fisher_matrix"][0](params, batch)
    spd = spd + NATGRAD_DAMPING * jnp.eye(spd.shape[0], dtype=spd.dtype)
    jitted["cholesky"] = compile_aot(jnp.linalg.cholesky, spd)
    jitted["eigvalsh"] = compile_aot(jnp.linalg.eigvalsh, spd)
    args = {name: (params, batch) for name in builders}
    args.update(cholesky=(spd,), eigvalsh=(spd,))
    stats = measure([Case(name, lambda name=name: jitted[name][0](*args[name]))
                     for name in jitted], cfg)
    return [_row("f", f"mlp part: {name}", stats[name], compile_s=jitted[name][1],
                 model_name="mlp", diagnostic=True, **common) for name in jitted]


def bench_f(cfg: Config, quick: bool) -> Dict[str, Any]:
    """Per-step time of every trainer relative to sgd, first-step time, no retrace at step 2."""
    x, y, source = _digits(cfg.f_mlp_batch)
    sizes = tuple(cfg.f_mlp_sizes)
    mlp = models.mlp(sizes, "tanh", dtype=jnp.float64)
    _, mlp_params = mlp.init(jax.random.PRNGKey(SEED + 2), (-1, sizes[0]))
    mlp_loss = lambda p, b: losses.softmax_cross_entropy(mlp.apply(p, b[0]), b[1])
    mlp_batch = (jnp.asarray(x), jnp.asarray(y))
    n_mlp = _param_count(mlp_params)
    log.info("f: MLP %s, n = %d, data: %s", "-".join(map(str, sizes)), n_mlp, source)
    rows = _bench_trainers(
        "mlp", tuple(cfg.f_mlp_trainers), mlp_loss, mlp.apply, mlp_params, mlp_batch, cfg, quick,
        {"model": "mlp " + "-".join(map(str, sizes)) + " tanh", "params": n_mlp,
         "batch": cfg.f_mlp_batch, "dtype": "float64", "loss": "softmax_cross_entropy",
         "data": source})
    if cfg.f_dense_parts:
        rows += _dense_parts(mlp_loss, mlp.apply, mlp_params, mlp_batch, cfg,
                             {"model": "mlp " + "-".join(map(str, sizes)) + " tanh",
                              "params": n_mlp, "batch": cfg.f_mlp_batch, "dtype": "float64"})

    xc, yc, source_c = _digits(cfg.f_cnn_batch)
    cnn = models.cnn(10, dtype=jnp.float64)
    _, cnn_params = cnn.init(jax.random.PRNGKey(SEED + 3), (-1, 8, 8, 1))
    cnn_loss = lambda p, b: losses.softmax_cross_entropy(cnn.apply(p, b[0]), b[1])
    cnn_batch = (jnp.asarray(xc.reshape(-1, 8, 8, 1)), jnp.asarray(yc))
    n_cnn = _param_count(cnn_params)
    log.info("f: CNN, n = %d", n_cnn)
    rows += _bench_trainers(
        "cnn", tuple(cfg.f_cnn_trainers), cnn_loss, cnn.apply, cnn_params, cnn_batch, cfg, quick,
        {"model": "models.cnn(10) on (N, 8, 8, 1)", "params": n_cnn, "batch": cfg.f_cnn_batch,
         "dtype": "float64", "loss": "softmax_cross_entropy", "data": source_c})
    return {"title": "Trainer step time relative to sgd (jax.jit(trainer.step))",
            "target": "none (reported); step 2 must not retrace",
            "no_retrace": all(r["traces_after_step2"] == 1 for r in rows if "trainer" in r),
            "rows": rows}


# ----------------------------------------------------------------------------- report


def _fmt_s(s: float | None) -> str:
    if s is None or not np.isfinite(s):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def format_table(report: Dict[str, Any]) -> str:
    """A plain-text table of every row of ``report``."""
    lines = []
    header = f"{'bench':<5} {'case':<48} {'median':>10} {'IQR':>10} {'compile/1st':>11} " \
             f"{'ratio':>8}  target"
    for letter, bench in report["benchmarks"].items():
        lines += ["", f"[{letter}] {bench['title']}", header, "-" * len(header)]
        for r in bench["rows"]:
            if r["skipped"]:
                lines.append(f"{letter:<5} {r['name']:<48} {r.get('note', 'skipped')}")
                continue
            first = r.get("compile_s", r.get("first_step_s", r.get("first_call_s")))
            ratio = f"{r['ratio']:.3g}" if r.get("ratio") is not None else "-"
            verdict = ""
            if "target" in r:
                met = r.get("met")
                verdict = f"{r['target']}: " + ("n/a (quick)" if met is None
                                                else "met" if met else "NOT met")
            lines.append(f"{letter:<5} {r['name']:<48} {_fmt_s(r['median_s']):>10} "
                         f"{_fmt_s(r['iqr_s']):>10} {_fmt_s(first):>11} {ratio:>8}  {verdict}")
        if "agreement" in bench:
            lines.append("      agreement: " + ", ".join(f"{k} = {v:.3g}"
                                                         for k, v in bench["agreement"].items()))
    return "\n".join(lines)


def _parse_only(text: str | None) -> List[str]:
    if text is None:
        return list(BENCHMARKS)
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [c for c in chosen if c not in BENCHMARKS]
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(f"--only takes a comma-separated subset of "
                                         f"{','.join(BENCHMARKS)}, got {text!r}")
    return [c for c in BENCHMARKS if c in chosen]


SAME_MACHINE_KEYS = ("cpu_model", "cores", "jax_version", "jaxlib_version", "backend",
                     "torch_version")


def _previous(path: Path, report: Dict[str, Any], only: Sequence[str]) -> Dict[str, Any]:
    """Benchmarks of an earlier run in ``path`` to keep beside a ``--only`` run.

    Kept only when they came from the same mode (--quick or not) on the same machine and
    versions; every kept benchmark carries its own command, start time and load averages.
    """
    if set(only) == set(BENCHMARKS) or not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    same = old.get("quick") == report["quick"] and all(
        old.get("machine", {}).get(k) == report["machine"][k] for k in SAME_MACHINE_KEYS)
    if not same:
        log.warning("not keeping the benchmarks in %s: another mode, machine or version", path)
        return {}
    return {k: v for k, v in old.get("benchmarks", {}).items() if k not in only}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, 3 runs: a smoke test, no timing claims")
    parser.add_argument("--only", default=None,
                        help="comma-separated subset of c,d,f; the other benchmarks already in "
                             "the JSON (same mode, machine and versions) are kept")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the JSON")
    args = parser.parse_args(argv)
    try:
        only = _parse_only(args.only)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    cfg = QUICK if args.quick else FULL
    torch = _torch() if "d" in only else None
    started = time.time()
    command = " ".join(["python scripts/bench.py",
                        *(argv if argv is not None else sys.argv[1:])]).strip()
    report: Dict[str, Any] = {
        "command": command,
        "quick": args.quick,
        "timing_claims": not args.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": machine_info(_torch_version()),
        "settings": {"runs": cfg.runs, "min_sample_s": cfg.min_sample_s,
                     "statistic": "median and IQR of per-call times; ratios of medians of "
                                  "cases interleaved in one process"},
        "load_average_start": list(os.getloadavg()),
        "benchmarks": {},
    }
    if "d" in only and torch is None:
        report["notes"] = ["torch is not importable: the torch.func.hessian row is skipped"]
    path = Path(args.json)
    kept = _previous(path, report, only)
    runners = {"c": lambda: bench_c(cfg, args.quick), "d": lambda: bench_d(cfg, args.quick, torch),
               "f": lambda: bench_f(cfg, args.quick)}
    for letter in only:
        t0, load = time.perf_counter(), os.getloadavg()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        report["benchmarks"][letter] = runners[letter]()
        report["benchmarks"][letter].update(command=command, started=stamp,
                                            wall_s=time.perf_counter() - t0,
                                            load_average_start=list(load),
                                            load_average_end=list(os.getloadavg()))
    report["load_average_end"] = list(os.getloadavg())
    report["wall_s"] = time.time() - started
    report["benchmarks"] = {k: report["benchmarks"].get(k, kept.get(k)) for k in BENCHMARKS
                            if k in report["benchmarks"] or k in kept}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, path)
    print(format_table(report))
    print(f"\nwrote {path} in {report['wall_s']:.1f} s"
          + (f"; kept {', '.join(sorted(kept))} from the earlier run" if kept else "")
          + (" (--quick: smoke test, no timing claims)" if args.quick else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
