r"""Benchmarks of jaxcalc's calculus and trainers; writes BENCHMARKS.json and prints a table.

    python scripts/bench.py [--quick] [--only a,b,c,d,e,f,g] [--json PATH]

Letters follow the project's benchmark table:

* ``a`` — float32, against torch CPU (same math, NCHW, ``torch.set_num_threads`` = the cores JAX
  uses): ``layers.conv2d`` + ReLU forward and backward (value and gradient w.r.t. kernel and
  input) on 64×28×28×1 → 32 filters 3×3, and the jitted SGD step of seed 002's CNN
  (``models.cnn(10)``) on (64, 28, 28, 1) against the same network (copied parameters) and
  ``torch.optim.SGD``. Target: ≤ 1.0 × torch's time. "before" rows run the same with the old
  ``conv2d``/``max_pool2d`` bodies (XLA's convolution, ``reduce_window``).
* ``b`` — ``layers.conv2d`` and ``layers.max_pool2d`` (jitted) against the NumPy loops of seed
  001 (``convolution2D``, ``max_pooling2D``, copied below), applied per image and filter to seed
  002's first layer: 32 images 28×28, 32 filters 3×3, then 2×2 max pooling of the 26×26×32 maps.
  The loops take seconds, so they get ``b_loop_runs`` samples (interleaved with jaxcalc). Target:
  ≥ 1000 × faster. A single seed-001 call (one image, one kernel) is a diagnostic row.
* ``c`` — ``derivatives.hvp`` against ``jax.grad`` on float32 tanh MLPs of about 1e4, 1e5 and
  1e6 parameters (MSE on a batch of 128). Target: HVP time ≤ 2 × gradient time.
* ``d`` — the dense Hessian of an 8→256→1 tanh MLP (n = 2561, 256 samples, float64, MSE):
  ``derivatives.hessian_matrix`` against ``torch.func.hessian`` of the same loss of the flat
  parameter vector and against the central finite-difference Hessian from exact gradients
  (``finite_diff.hessian``), plus a sweep of ``chunk_size``. Targets: ≥ 3 × faster than
  torch.func, faster than finite differences; the three must agree.
* ``e`` — ``spectrum.top_eigenvalues`` k=1 of the Hessian of a 64→280→280→10 tanh MLP's
  cross-entropy (n = 99,690, 512 digits, float64): HVPs (counted by a callback in the loss) and
  seconds until the top eigenvalue is within 1e-3 relative of the reference (ARPACK to 1e-12,
  checked against a 120-step Lanczos run), for the default call and for the fewest Lanczos
  steps that reach 1e-3; ``scipy.sparse.linalg.eigsh`` at tol 1e-3 as the anchor. Target:
  ≤ 60 HVPs.
* ``f`` — per-step time of every trainer relative to ``sgd`` on the same model and batch, and the
  first-step (trace + compile + one step) time, on a 64→32→10 tanh MLP (softmax cross-entropy,
  digits-shaped data, full batch 512) and on ``models.cnn(10)`` (8×8×1 inputs, batch 64; only
  first-order and matrix-free second-order trainers). Step 2 must not trace again.
* ``g`` — ``jaxcalc.fit`` throughput (examples/s) on experiments/cnn_digits.py's setup (seed
  002's CNN on the 1347 training digits 8×8, Adam 1e-3, batch 32, float32) against the same
  network trained by a plain torch loop (a permutation per epoch, index tensors per batch,
  ``torch.optim.Adam``). Epoch times; each block's first epoch is left out (on the first ``fit``
  call it holds the compile, reported apart). Target: ≥ 1.0 × torch's examples/s.

Timing rules: everything timed is ``jax.jit``-ed with its data passed as arguments (so XLA cannot
fold it into constants); for ``a``–``e`` the ahead-of-time ``lower().compile()`` time is
reported as ``compile_s`` (the CNN step: ``first_step_s``, trace + compile + one step); every
timed call is followed by ``jax.block_until_ready``; a warm-up call and a calibration call
precede the timed runs; each sample repeats a call ``repeats`` times (so that a sample lasts at
least ``min_sample_s``) and the statistics are the median and interquartile range of ``runs``
samples (≥ 20; ``--quick``: tiny sizes, 3 runs, a subset of the trainers: a smoke test that
makes no timing claims). Every ratio is a ratio of two medians measured in the same process
with the cases interleaved run by run (the order alternates), so slow drifts of the machine's
load hit both sides alike. ``g`` interleaves whole blocks of epochs instead.

torch is optional: without it the torch rows are marked ``skipped`` with a note. torch's OpenMP
threads are set to sleep when idle (``OMP_WAIT_POLICY=PASSIVE``, unless already set), see
``TORCH_OMP_WAIT_POLICY``.
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
from jax import lax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from jaxcalc import (activations, derivatives, finite_diff, layers, losses, models,  # noqa: E402
                     spectrum, trainers)
from jaxcalc.training import fit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "BENCHMARKS.json"
BENCHMARKS = ("a", "b", "c", "d", "e", "f", "g")
TORCH_BENCHMARKS = ("a", "d", "g")  # benchmarks with torch anchors
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
    a_conv_input: Sequence[int]   # (N, H, W, C) of benchmark a's conv2d + ReLU
    a_conv_filters: int
    a_cnn_hw: int                 # the CNN's input is (a_cnn_batch, a_cnn_hw, a_cnn_hw, 1)
    a_cnn_batch: int
    b_batch: int                  # images (and b_filters filters) of the seed-002 layer case
    b_filters: int
    b_hw: int
    b_pool: int
    b_loop_runs: int              # samples of the (slow) NumPy loops, interleaved with jaxcalc
    e_sizes: Sequence[int]        # MLP of benchmark e
    e_batch: int
    e_curve_iters: int            # Lanczos steps of the convergence curve
    g_limit: int | None           # use only the first g_limit training digits (None: all)
    g_batch: int
    g_epochs: int                 # epochs per block and side (the first of each is excluded)
    g_before_epochs: int          # the same for the slow "before" (lax.conv) fit
    g_blocks: int
    before_variants: bool         # a, g: also run the CNN step and fit with the old lax.conv


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
              f_dense_parts=True,
              a_conv_input=(64, 28, 28, 1), a_conv_filters=32, a_cnn_hw=28, a_cnn_batch=64,
              b_batch=32, b_filters=32, b_hw=28, b_pool=2, b_loop_runs=5,
              e_sizes=(64, 280, 280, 10), e_batch=512, e_curve_iters=120,
              g_limit=None, g_batch=32, g_epochs=6, g_before_epochs=3, g_blocks=4,
              before_variants=True)
QUICK = Config(runs=3, warmups=0, min_sample_s=0.0, max_repeats=1,
               c_sizes=(1_000,), c_batch=16, c_features=16, c_outputs=4,
               d_sizes=(4, 16, 1), d_samples=32, d_chunks=(97,), d_sweep_f_mlp=False,
               f_mlp_sizes=(64, 4, 10), f_mlp_batch=32,
               f_mlp_trainers=("sgd", "adam", "natgrad_empirical_dense", "newton_cg"),
               f_cnn_batch=8, f_cnn_trainers=("sgd",), f_dense_parts=False,
               a_conv_input=(4, 8, 8, 1), a_conv_filters=4, a_cnn_hw=8, a_cnn_batch=4,
               b_batch=2, b_filters=2, b_hw=8, b_pool=2, b_loop_runs=3,
               e_sizes=(64, 8, 8, 10), e_batch=64, e_curve_iters=30,
               g_limit=128, g_batch=32, g_epochs=4, g_before_epochs=4, g_blocks=1,
               before_variants=False)


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


def lowered_flops(fn: Callable, *args) -> float | None:
    """XLA's FLOP estimate of ``fn``'s HLO before optimization (no compilation needed)."""
    try:
        cost = jax.jit(fn).lower(*args).cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"]) if cost and "flops" in cost else None
    except Exception:  # best effort, as in compile_aot
        return None


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
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
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


# torch's OpenMP threads spin-wait after each parallel region by default. Interleaved with JAX in
# one process (whose own thread pool needs the same cores), and with any other job on the shared
# cores, the spinning threads and the ones doing work take turns: a CNN step measured 0.29 s
# with the default policy against 0.04 s with PASSIVE (torch alone, one core busy elsewhere).
# Set before torch (and its OpenMP runtime) loads; an OMP_WAIT_POLICY already set is kept.
TORCH_OMP_WAIT_POLICY = "PASSIVE"


def _torch():
    """The torch module with its threads set to the core count, or ``None`` if not importable."""
    os.environ.setdefault("OMP_WAIT_POLICY", TORCH_OMP_WAIT_POLICY)
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
    # a comparison without its anchor (torch not installed) has no baseline and no ratio
    row.update({k: v for k, v in extra.items()
                if not (k in ("baseline", "ratio", "ratio_is") and v is None)})
    return row


def _met(quick: bool, ok: bool) -> bool | None:
    """A target verdict; ``None`` in --quick mode, which makes no timing claims."""
    return None if quick else bool(ok)


def _mlp_width(target: int, features: int, outputs: int) -> int:
    """Width ``h`` of a ``features → h → h → outputs`` MLP with about ``target`` parameters."""
    b = features + outputs + 2  # h² + (features + outputs + 2) h + outputs = target
    return max(1, round((-b + math.sqrt(b * b + 4 * max(target - outputs, 1))) / 2))


def _init_params(model: models.Model, seed: int, input_shape) -> Any:
    """``model.init(PRNGKey(seed), input_shape)[1]`` in one compiled program (eagerly, every
    random op of the initializers would be compiled on its own)."""
    return jax.jit(lambda key: model.init(key, tuple(input_shape))[1])(jax.random.PRNGKey(seed))


def _param_count(params) -> int:
    return int(ravel_pytree(params)[0].size)


# ----------------------------------------------------------------------------- a: conv, CNN, torch


def _xla_conv2d(x, kernel, bias=None, *, padding="VALID"):
    """``layers.conv2d``'s body before this benchmark: one ``lax.conv_general_dilated``.

    Kept here as the "before" row of benchmarks a and g (same math, stride 1, NHWC/HWIO).
    """
    y = lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y if bias is None else y + bias


def _xla_max_pool2d(x, window: int = 2):
    """``layers.max_pool2d``'s body before this benchmark: one ``lax.reduce_window``."""
    dims = (1, window, window, 1)
    return lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, dims, dims, "VALID")


def _cnn_apply_xla_conv(params, x):
    """``models.cnn(n)``'s apply as it was before this benchmark (the "before" rows): XLA's
    convolution (``_xla_conv2d``) and ``reduce_window`` max pooling (``_xla_max_pool2d``)."""
    h = x
    for name in ("conv0", "conv1"):
        conv = _xla_conv2d(h, params[name]["w"], params[name]["b"], padding="SAME")
        h = _xla_max_pool2d(activations.relu(conv), 2)
    h = activations.relu(layers.dense(params["dense0"], layers.flatten(h)))
    return layers.dense(params["dense1"], h)


def _torch_cnn(torch, params, hw: int, permute_dense0: bool = True):
    """A torch ``nn.Module`` computing ``models.cnn(n)`` (NCHW) with a copy of ``params``.

    Convolution kernels go from HWIO to OIHW; the first dense layer's rows are permuted from
    NHWC's flatten order (h, w, c) to NCHW's (c, h, w), so both networks compute the same
    function of the same image. ``permute_dense0=False`` copies them as they are: a control
    that must compute a different function.
    """
    nn = torch.nn
    side = hw // 4
    c1 = params["conv1"]["w"].shape[-1]

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv0 = nn.Conv2d(params["conv0"]["w"].shape[2], params["conv0"]["w"].shape[3],
                                   3, padding=1)
            self.conv1 = nn.Conv2d(params["conv1"]["w"].shape[2], c1, 3, padding=1)
            self.dense0 = nn.Linear(*params["dense0"]["w"].shape)
            self.dense1 = nn.Linear(*params["dense1"]["w"].shape)

        def forward(self, x):
            f = torch.nn.functional
            x = f.max_pool2d(torch.relu(self.conv0(x)), 2)
            x = f.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = torch.relu(self.dense0(x.flatten(1)))
            return self.dense1(x)

    net = CNN()
    w0 = np.asarray(params["dense0"]["w"])
    weights = {
        "conv0.weight": np.asarray(params["conv0"]["w"]).transpose(3, 2, 0, 1),
        "conv0.bias": np.asarray(params["conv0"]["b"]),
        "conv1.weight": np.asarray(params["conv1"]["w"]).transpose(3, 2, 0, 1),
        "conv1.bias": np.asarray(params["conv1"]["b"]),
        "dense0.weight": (w0.reshape(side, side, c1, -1).transpose(3, 2, 0, 1)
                          .reshape(w0.shape[1], -1) if permute_dense0 else w0.T),
        "dense0.bias": np.asarray(params["dense0"]["b"]),
        "dense1.weight": np.asarray(params["dense1"]["w"]).T,
        "dense1.bias": np.asarray(params["dense1"]["b"]),
    }
    net.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in weights.items()})
    return net


def _nchw(torch, x):
    return torch.from_numpy(np.array(np.asarray(x).transpose(0, 3, 1, 2), copy=True))


def _rel_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _bench_conv_layer(cfg: Config, quick: bool, torch) -> tuple[List[Dict], Dict[str, float]]:
    """conv2d + ReLU forward and backward (w.r.t. kernel and input), float32, vs torch."""
    n, h, w, c = cfg.a_conv_input
    k_x, k_k = jax.random.split(jax.random.PRNGKey(SEED + 4))
    x = jax.random.normal(k_x, (n, h, w, c), jnp.float32)
    kernel = jax.random.normal(k_k, (3, 3, c, cfg.a_conv_filters), jnp.float32) / 3.0
    common = {"model": f"conv2d {n}x{h}x{w}x{c} -> {cfg.a_conv_filters} filters 3x3 VALID + ReLU",
              "dtype": "float32", "loss": "sum of the ReLU output",
              "what": "value_and_grad w.r.t. kernel and input"}

    def jax_loss(kernel, x):
        return jnp.sum(activations.relu(layers.conv2d(x, kernel)))

    def xla_loss(kernel, x):
        return jnp.sum(activations.relu(_xla_conv2d(x, kernel)))

    grad_jaxcalc = lambda k, x: jax.value_and_grad(jax_loss, argnums=(0, 1))(k, x)
    grad_xla = lambda k, x: jax.value_and_grad(xla_loss, argnums=(0, 1))(k, x)
    j_jit, j_compile, j_flops = compile_aot(grad_jaxcalc, kernel, x)
    x_jit, x_compile, x_flops = compile_aot(grad_xla, kernel, x)
    cases = [Case("jaxcalc", lambda: j_jit(kernel, x)), Case("xla_conv", lambda: x_jit(kernel, x))]
    ours = j_jit(kernel, x)
    agreement = {"xla_conv_vs_jaxcalc_rel_diff": max(
        _rel_diff(a, b) for a, b in zip(jax.tree_util.tree_leaves(x_jit(kernel, x)),
                                        jax.tree_util.tree_leaves(ours)))}
    if torch is not None:
        xt = _nchw(torch, x).requires_grad_(True)
        kt = torch.from_numpy(np.ascontiguousarray(np.asarray(kernel).transpose(3, 2, 0, 1)))
        kt.requires_grad_(True)
        out = {}

        def torch_call():
            xt.grad, kt.grad = None, None
            value = torch.relu(torch.nn.functional.conv2d(xt, kt)).sum()
            value.backward()
            out["value"] = value
            return None

        start = time.perf_counter()
        torch_call()
        torch_first = time.perf_counter() - start
        agreement["torch_vs_jaxcalc_rel_diff"] = max(
            _rel_diff(out["value"].detach().numpy(), ours[0]),
            _rel_diff(kt.grad.numpy().transpose(2, 3, 1, 0), ours[1][0]),
            _rel_diff(xt.grad.numpy().transpose(0, 2, 3, 1), ours[1][1]))
        cases.append(Case("torch", torch_call))
    stats = measure(cases, cfg)
    rows = []
    torch_med = stats["torch"]["median_s"] if torch is not None else None
    ratio = stats["jaxcalc"]["median_s"] / torch_med if torch is not None else None
    rows.append(_row("a", "conv2d+relu fwd+bwd jaxcalc", stats["jaxcalc"], compile_s=j_compile,
                     xla_flops=j_flops, baseline="torch" if torch else None, ratio=ratio,
                     **({"target": "jaxcalc/torch <= 1.0", "met": _met(quick, ratio <= 1.0)}
                        if torch is not None else {}), **common))
    rows.append(_row("a", "conv2d+relu fwd+bwd lax.conv (before)", stats["xla_conv"],
                     compile_s=x_compile, xla_flops=x_flops, diagnostic=True,
                     baseline="torch" if torch else None,
                     ratio=stats["xla_conv"]["median_s"] / torch_med if torch else None, **common))
    if torch is not None:
        rows.append(_row("a", "conv2d+relu fwd+bwd torch", stats["torch"], first_call_s=torch_first,
                         torch_threads=torch.get_num_threads(), **common))
    else:
        rows.append(_row("a", "conv2d+relu fwd+bwd torch", None,
                         note="skipped: torch is not importable (pip install torch)", **common))
    return rows, agreement


class _TorchChain:
    """A torch SGD training loop on one batch: every call takes one step."""

    def __init__(self, torch, net, x, y, lr: float):
        self.torch, self.net, self.x, self.y = torch, net, x, y
        self.opt = torch.optim.SGD(net.parameters(), lr=lr)
        self.last_loss = None

    def __call__(self):
        self.opt.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.cross_entropy(self.net(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.last_loss = loss
        return None


A_SGD_LR = 0.01


def _bench_cnn_step(cfg: Config, quick: bool, torch) -> tuple[List[Dict], Dict[str, float]]:
    """The seed-002 CNN's jitted SGD step vs the same network and torch.optim.SGD."""
    hw, batch = cfg.a_cnn_hw, cfg.a_cnn_batch
    net = models.cnn(10, dtype=jnp.float32)
    params = _init_params(net, SEED + 5, (-1, hw, hw, 1))
    rng = np.random.default_rng(SEED + 5)
    x = jnp.asarray(rng.random((batch, hw, hw, 1), np.float32))
    y = jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))
    common = {"model": f"models.cnn(10) on ({batch}, {hw}, {hw}, 1), conv SAME",
              "params": _param_count(params), "batch": batch, "dtype": "float32",
              "loss": "softmax_cross_entropy", "optimizer": f"sgd(lr={A_SGD_LR})"}
    loss = lambda p, b: losses.softmax_cross_entropy(net.apply(p, b[0]), b[1])
    loss_xla = lambda p, b: losses.softmax_cross_entropy(_cnn_apply_xla_conv(p, b[0]), b[1])
    trainer = trainers.sgd(loss, A_SGD_LR)
    step_flops = lowered_flops(trainer.step, params, trainer.init(params), (x, y))
    chains = {"jaxcalc": _Chain(trainer, params, (x, y))}
    if cfg.before_variants:
        chains["xla_conv"] = _Chain(trainers.sgd(loss_xla, A_SGD_LR), params, (x, y))
    first = {}
    for name, chain in chains.items():
        start = time.perf_counter()
        _wait(chain())
        first[name] = time.perf_counter() - start
    agreement = {}
    if "xla_conv" in chains:
        agreement["xla_conv_vs_jaxcalc_loss_rel_diff"] = _rel_diff(
            chains["xla_conv"].metrics["loss"], chains["jaxcalc"].metrics["loss"])
    cases = [Case(name, chain) for name, chain in chains.items()]
    if torch is not None:
        tchain = _TorchChain(torch, _torch_cnn(torch, params, hw), _nchw(torch, x),
                             torch.from_numpy(np.asarray(y).astype(np.int64)), A_SGD_LR)
        start = time.perf_counter()
        tchain()
        first["torch"] = time.perf_counter() - start
        # both took one step from the same parameters: the losses before it must agree
        agreement["torch_vs_jaxcalc_step1_loss_rel_diff"] = _rel_diff(
            tchain.last_loss.detach().numpy(), chains["jaxcalc"].metrics["loss"])
        with torch.no_grad():  # the control: without the permutation the loss must differ
            naive = _torch_cnn(torch, params, hw, permute_dense0=False)(_nchw(torch, x))
            naive_loss = torch.nn.functional.cross_entropy(
                naive, torch.from_numpy(np.asarray(y).astype(np.int64)))
        agreement["control_unpermuted_dense0_loss_rel_diff"] = _rel_diff(
            naive_loss.numpy(), chains["jaxcalc"].metrics["loss"])
        cases.append(Case("torch", tchain))
    stats = measure(cases, cfg)
    torch_med = stats["torch"]["median_s"] if torch is not None else None
    rows = []
    for name, label in (("jaxcalc", "cnn sgd step jaxcalc (jit(trainer.step))"),
                        ("xla_conv", "cnn sgd step lax.conv+reduce_window (before)")):
        if name not in stats:
            continue
        s = stats[name]
        ratio = s["median_s"] / torch_med if torch is not None else None
        extra = {"first_step_s": first[name]}
        if name == "jaxcalc":
            extra.update(xla_flops_unoptimized_hlo=step_flops,
                         gflops_per_s=step_flops / s["median_s"] / 1e9 if step_flops else None)
            if torch is not None:
                extra.update(target="jaxcalc/torch <= 1.0", met=_met(quick, ratio <= 1.0))
        else:
            extra["diagnostic"] = True
        rows.append(_row("a", label, s, baseline="torch" if torch else None, ratio=ratio,
                         traces_after_all_steps=chains[name].traces, **extra, **common))
    if torch is not None:
        rows.append(_row("a", "cnn sgd step torch (torch.optim.SGD)", stats["torch"],
                         first_call_s=first["torch"], torch_threads=torch.get_num_threads(),
                         **common))
    else:
        rows.append(_row("a", "cnn sgd step torch (torch.optim.SGD)", None,
                         note="skipped: torch is not importable (pip install torch)", **common))
    return rows, agreement


def bench_a(cfg: Config, quick: bool, torch) -> Dict[str, Any]:
    """conv2d + ReLU forward/backward and the CNN's SGD step, jaxcalc vs torch CPU (float32)."""
    conv_rows, conv_agree = _bench_conv_layer(cfg, quick, torch)
    cnn_rows, cnn_agree = _bench_cnn_step(cfg, quick, torch)
    return {"title": "conv2d + ReLU fwd+bwd and the seed-002 CNN SGD step vs torch CPU (float32)",
            "target": "jaxcalc time <= 1.0 x torch time",
            "agreement": {**conv_agree, **cnn_agree}, "rows": conv_rows + cnn_rows}


# ----------------------------------------------------------------------------- b: seed loops


# The next two functions are copied unchanged from the seed notes
# /work/shared/seeds/001_5a6898f1e99e772d.txt ("3. Convolutional Layer" and "4. Pooling Layer"):
# the NumPy loops that layers.conv2d and layers.max_pool2d replace.
def convolution2D(image, kernel, stride=1, padding=0):
    # Add padding to the image
    image_padded = np.pad(image, padding, mode='constant')

    # Dimensions of the output feature map
    output_shape = ((image.shape[0] - kernel.shape[0] + 2 * padding) // stride + 1,
                    (image.shape[1] - kernel.shape[1] + 2 * padding) // stride + 1)

    # Initialize the output feature map
    feature_map = np.zeros(output_shape)

    # Apply the kernel to the image
    for i in range(0, output_shape[0]):
        for j in range(0, output_shape[1]):
            x_start = i * stride
            x_end = x_start + kernel.shape[0]
            y_start = j * stride
            y_end = y_start + kernel.shape[1]

            # Element-wise multiplication of the kernel and the image patch
            feature_map[i, j] = np.sum(image_padded[x_start:x_end, y_start:y_end] * kernel)

    return feature_map


def max_pooling2D(image, pool_size=2, stride=2):
    # Dimensions of the output
    output_shape = ((image.shape[0] - pool_size) // stride + 1,
                    (image.shape[1] - pool_size) // stride + 1)

    # Initialize the output
    pooled_output = np.zeros(output_shape)

    # Apply max pooling
    for i in range(0, output_shape[0]):
        for j in range(0, output_shape[1]):
            x_start = i * stride
            x_end = x_start + pool_size
            y_start = j * stride
            y_end = y_start + pool_size

            # Take the max value from the window
            pooled_output[i, j] = np.max(image[x_start:x_end, y_start:y_end])

    return pooled_output


def _seed_conv_batch(images: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """The seed's ``convolution2D`` over a batch and a filter bank: ``(N, H, W, 1)`` images,
    ``(KH, KW, 1, F)`` kernels -> ``(N, H_out, W_out, F)``, one call per (image, filter)."""
    return np.stack([np.stack([convolution2D(image[:, :, 0], kernels[:, :, 0, f])
                               for f in range(kernels.shape[3])], axis=-1) for image in images])


def _seed_pool_batch(maps: np.ndarray, window: int) -> np.ndarray:
    """The seed's ``max_pooling2D`` over ``(N, H, W, C)`` maps, one call per (image, channel)."""
    return np.stack([np.stack([max_pooling2D(m[:, :, c], window, window)
                               for c in range(maps.shape[3])], axis=-1) for m in maps])


def bench_b(cfg: Config, quick: bool) -> Dict[str, Any]:
    """``layers.conv2d`` / ``layers.max_pool2d`` (jitted) vs the seed's NumPy loops."""
    target = 1000.0
    loop_cfg = dataclasses.replace(cfg, runs=cfg.b_loop_runs, warmups=0)
    rows = []
    agreement = {}
    k_x, k_k = jax.random.split(jax.random.PRNGKey(SEED + 6))
    for label, batch, filters, claim in (
            ("seed-002 layer", cfg.b_batch, cfg.b_filters, True),
            ("seed-001 call", 1, 1, False)):
        hw = cfg.b_hw
        x = np.asarray(jax.random.uniform(k_x, (batch, hw, hw, 1), jnp.float32))
        kernel = np.asarray(jax.random.normal(k_k, (3, 3, 1, filters), jnp.float32))
        conv_jit, conv_compile, _ = compile_aot(layers.conv2d, x, kernel)
        maps = np.asarray(conv_jit(x, kernel))
        pool = lambda m: layers.max_pool2d(m, cfg.b_pool)
        pool_jit, pool_compile, _ = compile_aot(pool, maps)
        xj, kj, mj = jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(maps)
        start = time.perf_counter()
        loop_maps = _seed_conv_batch(x, kernel)
        loop_first = {"conv2d": time.perf_counter() - start}
        start = time.perf_counter()
        loop_pooled = _seed_pool_batch(maps, cfg.b_pool)
        loop_first["max_pool2d"] = time.perf_counter() - start
        agreement[f"{label} conv max abs diff"] = float(np.max(np.abs(loop_maps - maps)))
        agreement[f"{label} max_pool max abs diff"] = float(np.max(np.abs(
            loop_pooled - np.asarray(pool_jit(mj)))))
        conv_stats = measure([Case("loop", lambda: _seed_conv_batch(x, kernel)),
                              Case("jaxcalc", lambda: conv_jit(xj, kj))], loop_cfg)
        pool_stats = measure([Case("loop", lambda: _seed_pool_batch(maps, cfg.b_pool)),
                              Case("jaxcalc", lambda: pool_jit(mj))], loop_cfg)
        shape = (f"{batch}x{hw}x{hw}x1 -> {filters} filters 3x3 VALID; max-pool {cfg.b_pool}x"
                 f"{cfg.b_pool} of the {maps.shape[1]}x{maps.shape[2]}x{filters} maps")
        for what, stats, compile_s, calls in (
                ("conv2d", conv_stats, conv_compile, batch * filters),
                ("max_pool2d", pool_stats, pool_compile, batch * filters)):
            speedup = stats["loop"]["median_s"] / stats["jaxcalc"]["median_s"]
            extra = ({"target": f"speedup >= {target:g}x", "met": _met(quick, speedup >= target)}
                     if claim else {"diagnostic": True})
            common = {"case": label, "shape": shape, "dtype": "float32",
                      "seed_calls_per_run": calls}
            rows.append(_row("b", f"{what} seed loop ({label})", stats["loop"],
                             first_call_s=loop_first[what], **common))
            rows.append(_row("b", f"{what} jaxcalc ({label})", stats["jaxcalc"],
                             compile_s=compile_s, baseline="seed loop", ratio=speedup,
                             speedup=speedup, **extra, **common))
    return {"title": "layers.conv2d / max_pool2d (jit) vs the seed notes' NumPy loops (float32)",
            "target": f">= {target:g}x faster", "loop_runs": cfg.b_loop_runs,
            "agreement": agreement, "rows": rows}


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


# ----------------------------------------------------------------------------- e: top eigenvalue


E_REL_TOL = 1e-3


def _top_ritz_values(alphas, betas) -> np.ndarray:
    """The largest Ritz value after each of m = 1..M Lanczos steps (of ``T[:m, :m]``)."""
    a, b = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    return np.array([np.linalg.eigvalsh(np.diag(a[:m]) + np.diag(b[:m - 1], 1)
                                        + np.diag(b[:m - 1], -1))[-1]
                     for m in range(1, a.size + 1)])


def _arpack_top(hvp_flat, n: int, v0: np.ndarray, tol: float) -> tuple[float, int]:
    """``(λ_max, HVPs)`` from ``scipy.sparse.linalg.eigsh`` (ARPACK) on a jitted flat HVP."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    count = [0]

    def matvec(v):
        count[0] += 1
        return np.asarray(hvp_flat(jnp.asarray(np.ravel(v))))

    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    value = eigsh(op, k=1, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
    return float(value[0]), count[0]


def bench_e(cfg: Config, quick: bool) -> Dict[str, Any]:
    """``spectrum.top_eigenvalues`` k=1: HVPs and seconds to 1e-3 relative of a reference."""
    target = 60
    x, y, source = _digits(cfg.e_batch)
    sizes = tuple(cfg.e_sizes)
    model = models.mlp(sizes, "tanh", dtype=jnp.float64)
    params = _init_params(model, SEED + 7, (-1, sizes[0]))
    xb, yb = jnp.asarray(x), jnp.asarray(y)
    key = jax.random.PRNGKey(SEED + 8)
    flat, unravel = ravel_pytree(params)
    n = int(flat.size)
    log.info("e: MLP %s, n = %d", "-".join(map(str, sizes)), n)
    common = {"model": "mlp " + "-".join(map(str, sizes)) + " tanh", "params": n,
              "batch": cfg.e_batch, "dtype": "float64", "loss": "softmax_cross_entropy",
              "data": source}

    def loss(p, x, y):
        return losses.softmax_cross_entropy(model.apply(p, x), y)

    def top(p, x, y, key, num_iters=None, f=loss):
        return spectrum.top_eigenvalues(lambda q: f(q, x, y), p, 1, key=key, num_iters=num_iters)

    def hvp_fn(p, v, x, y):
        return derivatives.hvp(lambda q: loss(q, x, y), p, v)

    def ritz_curve(p, x, y, key):
        op = lambda v: derivatives.hvp(lambda q: loss(q, x, y), p, v)
        matvec, dim, _ = spectrum.ravel_matvec(op, p)
        return spectrum.lanczos(matvec, dim, cfg.e_curve_iters, key)

    # the reference: ARPACK to 1e-12, from the start vector Lanczos uses; and a long Lanczos
    hvp_jit, hvp_compile, _ = compile_aot(hvp_fn, params, params, xb, yb)
    hvp_flat = lambda v: ravel_pytree(hvp_jit(params, unravel(v), xb, yb))[0]
    v0 = np.asarray(jax.random.normal(key, (n,), jnp.float64))
    lam_ref, ref_hvps = _arpack_top(hvp_flat, n, v0, 1e-12)
    curve = _top_ritz_values(*jax.jit(ritz_curve)(params, xb, yb, key))
    rel = np.abs(curve - lam_ref) / abs(lam_ref)
    reached = np.flatnonzero(rel <= E_REL_TOL)
    m_star = int(reached[0]) + 1 if reached.size else None

    # HVPs counted by a callback in the loss (it runs once per HVP), in an untimed run
    calls = [0]

    def counted_loss(p, x, y):
        jax.debug.callback(lambda: calls.__setitem__(0, calls[0] + 1))
        return loss(p, x, y)

    counted = jax.jit(lambda p, x, y, key: top(p, x, y, key, f=counted_loss))
    jax.block_until_ready(counted(params, xb, yb, key))
    default_hvps = calls[0]

    default_jit, default_compile, _ = compile_aot(top, params, xb, yb, key)
    cases = [Case("default", lambda: default_jit(params, xb, yb, key)),
             Case("hvp", lambda: hvp_jit(params, params, xb, yb))]
    default_value = float(default_jit(params, xb, yb, key)[0][0])
    if m_star is not None:
        star_jit, star_compile, _ = compile_aot(
            lambda p, x, y, key: top(p, x, y, key, num_iters=m_star), params, xb, yb, key)
        star_value = float(star_jit(params, xb, yb, key)[0][0])
        cases.append(Case("m_star", lambda: star_jit(params, xb, yb, key)))
    start = time.perf_counter()
    arpack_value, arpack_hvps = _arpack_top(hvp_flat, n, v0, E_REL_TOL)
    arpack_first = time.perf_counter() - start
    cases.append(Case("arpack", lambda: _arpack_top(hvp_flat, n, v0, E_REL_TOL)[0]))
    stats = measure(cases, cfg)

    rel_of = lambda value: abs(value - lam_ref) / abs(lam_ref)
    default_rel = rel_of(default_value)
    default_iters = spectrum._default_num_iters(n, 1)
    rows = [_row("e", f"top_eigenvalues k=1 default (num_iters={default_iters})",
                 stats["default"], compile_s=default_compile, hvps=default_hvps,
                 eigenvalue=default_value, rel_error=default_rel,
                 target=f"HVPs <= {target}, rel error <= {E_REL_TOL:g}",
                 met=_met(quick, default_hvps <= target and default_rel <= E_REL_TOL), **common)]
    if m_star is not None:
        rows.append(_row("e", f"top_eigenvalues k=1 num_iters={m_star} (fewest to 1e-3)",
                         stats["m_star"], compile_s=star_compile, hvps=m_star,
                         eigenvalue=star_value, rel_error=rel_of(star_value),
                         baseline="default", ratio=stats["m_star"]["median_s"]
                         / stats["default"]["median_s"], **common))
    rows.append(_row("e", "one hvp (jit)", stats["hvp"], compile_s=hvp_compile,
                     diagnostic=True, **common))
    rows.append(_row("e", f"scipy eigsh (ARPACK) tol={E_REL_TOL:g}", stats["arpack"],
                     first_call_s=arpack_first, hvps=arpack_hvps, eigenvalue=arpack_value,
                     rel_error=rel_of(arpack_value), baseline="default",
                     ratio=stats["arpack"]["median_s"] / stats["default"]["median_s"],
                     diagnostic=True, **common))
    return {"title": "spectrum.top_eigenvalues k=1 on an MLP loss: HVPs and seconds to 1e-3",
            "target": f"<= {target} HVPs to {E_REL_TOL:g} relative",
            "reference": {"eigenvalue": lam_ref, "method": "scipy eigsh (ARPACK) tol=1e-12",
                          "hvps": ref_hvps, "lanczos_iters": cfg.e_curve_iters,
                          "lanczos_top_ritz": float(curve[-1]),
                          "lanczos_vs_arpack_rel_diff": float(rel[-1])},
            "hvps_to_tol": m_star, "rel_error_by_hvps": [float(r) for r in rel],
            "agreement": {"lanczos_vs_arpack_rel_diff": float(rel[-1]),
                          "default_rel_error": default_rel},
            "rows": rows}


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


# ----------------------------------------------------------------------------- g: fit throughput


G_ADAM_LR = 1e-3


def _cnn_digits_train(limit: int | None):
    """``(x, y, source)``: the training split of experiments/cnn_digits.py ((1347, 8, 8, 1) in
    [0, 1], float32, int labels), or synthetic data of that shape when it cannot be loaded."""
    try:
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        from experiments import _common
        digits = _common.load_digits(dtype=np.float32)
        x, y = digits.x_train, digits.y_train
        source = "experiments._common.load_digits() training split (sklearn digits)"
    except ImportError:
        rng = np.random.default_rng(SEED)
        x = rng.integers(0, 17, size=(1347, 8, 8, 1)).astype(np.float32) / 16.0
        y = rng.integers(0, 10, size=1347).astype(np.int32)
        source = "synthetic (1347, 8, 8, 1) in [0, 1] (sklearn or experiments not importable)"
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y, source


class _TorchFit:
    """The torch counterpart of ``fit`` for the cnn_digits setup, without a DataLoader.

    Every epoch draws a permutation (``torch.randperm``), drops the ``N mod batch_size``
    examples left over (as ``fit`` does), and indexes the data tensors once per batch; Adam
    steps; the epoch's mean loss is read back at its end (as ``fit`` reads its metrics).
    """

    def __init__(self, torch, net, x, y, batch_size: int, lr: float):
        self.torch, self.net = torch, net
        self.x, self.y = _nchw(torch, x), torch.from_numpy(np.asarray(y).astype(np.int64))
        self.batch_size = batch_size
        self.steps = self.x.shape[0] // batch_size
        self.opt = torch.optim.Adam(net.parameters(), lr=lr)
        self.gen = torch.Generator().manual_seed(SEED)
        self.epoch_losses: List[float] = []

    def epoch(self) -> float:
        torch, bs = self.torch, self.batch_size
        perm = torch.randperm(self.x.shape[0], generator=self.gen)[: self.steps * bs]
        total = torch.zeros(())
        for s in range(self.steps):
            idx = perm[s * bs:(s + 1) * bs]
            self.opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(self.net(self.x[idx]), self.y[idx])
            loss.backward()
            self.opt.step()
            total += loss.detach()
        self.epoch_losses.append(float(total) / self.steps)
        return self.epoch_losses[-1]


def bench_g(cfg: Config, quick: bool, torch) -> Dict[str, Any]:
    """``jaxcalc.fit`` examples/s on the cnn_digits setup vs an equivalent torch loop.

    Runs ``g_blocks`` blocks, alternating which side goes first; in each block ``fit`` trains
    ``g_epochs`` epochs in one call (continuing from the last block's parameters), then torch
    trains as many. Each block's first epoch is excluded (on the very first ``fit`` call it
    holds the trace and compile, reported as ``first_call_s``); the statistics are over the
    remaining epoch times, from ``fit``'s ``history["wall_time"]`` and a clock around each
    torch epoch.
    """
    x, y, source = _cnn_digits_train(cfg.g_limit)
    bs = cfg.g_batch
    steps = x.shape[0] // bs
    net = models.cnn(10, conv_padding="SAME", dtype=jnp.float32)
    params0 = _init_params(net, SEED, (-1,) + x.shape[1:])
    loss = lambda p, b: losses.softmax_cross_entropy(net.apply(p, b[0]), b[1])
    loss_xla = lambda p, b: losses.softmax_cross_entropy(_cnn_apply_xla_conv(p, b[0]), b[1])
    sides = {"jaxcalc": trainers.from_optax(loss, optax.adam(G_ADAM_LR))}
    if cfg.before_variants:
        sides["xla_conv"] = trainers.from_optax(loss_xla, optax.adam(G_ADAM_LR))
    epochs = {"jaxcalc": cfg.g_epochs, "xla_conv": cfg.g_before_epochs}
    params = {name: params0 for name in sides}
    key = jax.random.PRNGKey(SEED + 9)
    samples: Dict[str, List[float]] = {name: [] for name in sides}
    first: Dict[str, float] = {}
    final_loss: Dict[str, float] = {}
    tfit = None
    if torch is not None:
        tfit = _TorchFit(torch, _torch_cnn(torch, params0, x.shape[1]), x, y, bs, G_ADAM_LR)
        samples["torch"] = []
    data = (jnp.asarray(x), jnp.asarray(y))
    load_start = os.getloadavg()[0]
    for block in range(cfg.g_blocks):
        order = list(samples)
        for name in (order if block % 2 == 0 else order[::-1]):
            if name == "torch":
                times = []
                for _ in range(cfg.g_epochs):
                    start = time.perf_counter()
                    final_loss[name] = tfit.epoch()
                    times.append(time.perf_counter() - start)
            else:
                params[name], history = fit(sides[name], params[name], data,
                                            epochs=epochs[name], batch_size=bs,
                                            key=jax.random.fold_in(key, block), progress=False)
                times = list(np.diff(np.concatenate([[0.0], history["wall_time"]])))
                final_loss[name] = float(history["loss"][-1])
            first.setdefault(name, times[0])
            samples[name] += times[1:]
    load = [load_start, os.getloadavg()[0]]
    stats = {name: {**_stats(s, 1), "load_1min": load} for name, s in samples.items()}
    per_epoch = steps * bs
    throughput = {name: per_epoch / s["median_s"] for name, s in stats.items()}
    common = {"model": "models.cnn(10, conv_padding='SAME') on (N, 8, 8, 1) digits",
              "params": _param_count(params0), "batch": bs, "dtype": "float32",
              "optimizer": f"adam(lr={G_ADAM_LR})", "examples_per_epoch": per_epoch,
              "steps_per_epoch": steps, "data": source}
    rows = []
    for name, label in (("jaxcalc", "fit cnn_digits jaxcalc (epoch = one lax.scan)"),
                        ("xla_conv", "fit cnn_digits lax.conv+reduce_window (before)")):
        if name not in stats:
            continue
        ratio = throughput[name] / throughput["torch"] if torch is not None else None
        extra = {}
        if name == "jaxcalc" and torch is not None:
            extra = {"target": "jaxcalc/torch examples/s >= 1.0", "met": _met(quick, ratio >= 1.0)}
        if name == "xla_conv":
            extra["diagnostic"] = True
        rows.append(_row("g", label, stats[name], first_call_s=first[name],
                         examples_per_s=throughput[name], ratio=ratio,
                         ratio_is="examples/s over torch's examples/s" if torch else None,
                         final_epoch_loss=final_loss[name], **extra, **common))
    if torch is not None:
        rows.append(_row("g", "torch loop (index tensors, torch.optim.Adam)", stats["torch"],
                         first_call_s=first["torch"], examples_per_s=throughput["torch"],
                         final_epoch_loss=final_loss["torch"],
                         torch_threads=torch.get_num_threads(), **common))
    else:
        rows.append(_row("g", "torch loop (index tensors, torch.optim.Adam)", None,
                         note="skipped: torch is not importable (pip install torch)", **common))
    return {"title": "fit throughput on cnn_digits (examples/s; epoch times, first epoch apart)",
            "target": "jaxcalc examples/s >= 1.0 x torch", "blocks": cfg.g_blocks,
            "epochs_per_block": cfg.g_epochs, "rows": rows}


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
                        help="comma-separated subset of a,b,c,d,e,f,g; the other benchmarks "
                             "already in the JSON (same mode, machine and versions) are kept")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="where to write the JSON")
    args = parser.parse_args(argv)
    try:
        only = _parse_only(args.only)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    cfg = QUICK if args.quick else FULL
    torch = _torch() if set(only) & set(TORCH_BENCHMARKS) else None
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
    if set(only) & set(TORCH_BENCHMARKS) and torch is None:
        report["notes"] = ["torch is not importable: the torch rows of a, d and g are skipped"]
    path = Path(args.json)
    kept = _previous(path, report, only)
    runners = {"a": lambda: bench_a(cfg, args.quick, torch), "b": lambda: bench_b(cfg, args.quick),
               "c": lambda: bench_c(cfg, args.quick), "d": lambda: bench_d(cfg, args.quick, torch),
               "e": lambda: bench_e(cfg, args.quick), "f": lambda: bench_f(cfg, args.quick),
               "g": lambda: bench_g(cfg, args.quick, torch)}
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
