"""Running experiments: configuration, output folders, results and summaries.

An experiment is a module ``experiments/NAME.py`` (found by scanning the package; modules
named ``_*`` are helpers, not experiments) that defines

* ``DESCRIPTION`` — one line shown by ``jaxcalc list``;
* ``DEFAULT_CONFIG`` — a dict of every setting with its default (its types are the types
  ``--set key=value`` accepts);
* ``QUICK_CONFIG`` — overrides applied by ``--quick`` (a smoke run that finishes fast);
* ``run(config) -> dict`` — does the work; ``config["out_dir"]`` is the folder for plots;
* ``main()`` — ``return experiment_main(__name__)``, so ``python experiments/NAME.py`` takes the
  same flags as ``jaxcalc run NAME``;
* optionally ``summarize(results) -> str`` — the short table printed at the end,
  ``exit_status(results) -> int`` — the command's exit code (default: 1 when the results say
  ``"passed": False``, else 0; see ``exit_status`` below), and ``ORDER`` — an int
  that places it in ``jaxcalc list`` (default 100).

``run_experiment`` writes ``config.json`` and ``results.json`` (and the experiment's PNGs) to
``results/NAME/<timestamp>/`` or ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import math
import os
import pkgutil
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import jax
import numpy as np

from jaxcalc import distributed


def experiment_names() -> Tuple[str, ...]:
    """Every module of the ``experiments`` package that is not private (``_*``), ordered by its
    ``ORDER`` attribute (default 100) and then by name — the order ``jaxcalc list`` shows."""
    _ensure_experiments_importable()
    package = importlib.import_module("experiments")
    names = [m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")]
    return tuple(sorted(names, key=lambda name: (_order(name), name)))


def _order(name: str) -> int:
    """A study's ``ORDER``; one that fails to import sorts last (its own run reports why), so a
    broken study never hides the others."""
    try:
        return getattr(importlib.import_module(f"experiments.{name}"), "ORDER", 100)
    except Exception:  # noqa: BLE001 - any import-time failure of one study
        return 10**6


class ConfigError(ValueError):
    """A bad ``--set`` (unknown key or a value of the wrong type); the CLI exits with status 2."""


class UnknownExperimentError(KeyError):
    """An experiment name that is not registered; the CLI exits with status 2."""


def load_experiment(name: str) -> ModuleType:
    """Import ``experiments.NAME``; raise ``UnknownExperimentError`` listing the valid names."""
    names = experiment_names()
    if name not in names:
        raise UnknownExperimentError(f"unknown experiment {name!r}; available: {', '.join(names)}")
    return importlib.import_module(f"experiments.{name}")


def _ensure_experiments_importable() -> None:
    """Make the repository's ``experiments`` package importable from a checkout or an install."""
    try:
        importlib.import_module("experiments")
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def describe_experiments() -> List[Tuple[str, str]]:
    """``[(name, one-line description), ...]`` for every registered experiment."""
    rows = []
    for name in experiment_names():
        try:
            rows.append((name, load_experiment(name).DESCRIPTION))
        except Exception as exc:  # noqa: BLE001 - show the others, and why this one failed
            rows.append((name, f"(cannot be imported: {type(exc).__name__}: {exc})"))
    return rows


def parse_value(key: str, text: str, default: Any) -> Any:
    """Parse ``text`` as the type of ``default``; raise ``ConfigError`` naming ``key`` otherwise."""
    kind = type(default)
    try:
        if isinstance(default, bool):
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, str) or default is None:
            return text
        if isinstance(default, (list, tuple, dict)):
            value = json.loads(text)
            if not isinstance(value, (list, dict)) or isinstance(value, dict) != isinstance(default, dict):
                raise ValueError(text)
            return type(default)(value) if isinstance(default, tuple) else value
    except (ValueError, json.JSONDecodeError):
        shown = "JSON list" if isinstance(default, (list, tuple)) else (
            "JSON object" if isinstance(default, dict) else kind.__name__)
        raise ConfigError(f"--set {key}: expected a value of type {shown} "
                          f"(default {default!r}), got {text!r}") from None
    raise ConfigError(f"--set {key}: settings of type {kind.__name__} cannot be set from the "
                      "command line")


def build_config(module: ModuleType, *, quick: bool = False, overrides: Iterable[str] = (),
                 base: Mapping[str, Any] | None = None) -> Dict[str, Any]:
    """Defaults, then ``QUICK_CONFIG`` if ``quick``, then each ``key=value`` of ``overrides``
    (or ``base`` in place of the first two)."""
    if base is not None:
        config = dict(base)
    else:
        config = dict(module.DEFAULT_CONFIG)
        if quick:
            config.update(getattr(module, "QUICK_CONFIG", {}))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in module.DEFAULT_CONFIG:
            raise ConfigError(f"--set {key}: unknown key; valid keys: "
                              f"{', '.join(sorted(module.DEFAULT_CONFIG))}")
        config[key] = parse_value(key, text, module.DEFAULT_CONFIG[key])
    config["quick"] = bool(quick)
    return config


def prepare_out_dir(name: str, out: str | os.PathLike | None = None) -> Path:
    """Create (and probe-write) the output folder before any work starts.

    ``out`` None → ``results/NAME/<YYYYmmdd-HHMMSS>`` under the current directory (a suffix is
    added if it exists). Raises ``OSError`` with a clear message if it cannot be written.
    """
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path("results") / name / stamp
        path, i = base, 1
        while path.exists():
            path, i = Path(f"{base}-{i}"), i + 1
    else:
        path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-", delete=True):
            pass
    except OSError as exc:
        raise OSError(f"output folder {str(path)!r} is not writable: {exc.strerror or exc}") from exc
    return path


def to_jsonable(obj: Any) -> Any:
    """Convert arrays, NumPy/JAX scalars and tuples to JSON types; non-finite floats to strings."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        arr = np.asarray(obj)
        if arr.ndim == 0:
            return to_jsonable(arr.item())
        return to_jsonable(arr.tolist())
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else str(value)
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def run_experiment(name: str, *, out: str | os.PathLike | None = None, quick: bool = False,
                   overrides: Sequence[str] = (),
                   settings: Mapping[str, Any] | None = None,
                   data_parallel: bool = False) -> Tuple[Dict[str, Any], Path]:
    """Run experiment ``name``: write ``config.json``, call ``run``, write ``results.json``.

    ``overrides`` are ``key=value`` strings (the CLI's ``--set``); ``settings`` are already typed
    values applied before them (how ``tour`` configures each study). ``data_parallel`` sets
    ``config["data_parallel"]``: studies that train with ``fit`` then pass it
    ``mesh=distributed.data_mesh()`` and this process's shard of the data. Returns
    ``(results, out_dir)``. Configuration and output-folder errors are raised before the
    experiment does any work.
    """
    module = load_experiment(name)
    config = build_config(module, quick=quick)
    for key, value in (settings or {}).items():
        if key not in module.DEFAULT_CONFIG:
            raise ConfigError(f"{name}: unknown setting {key!r}; valid keys: "
                              f"{', '.join(sorted(module.DEFAULT_CONFIG))}")
        config[key] = value
    config = build_config(module, quick=quick, overrides=overrides, base=config)
    config["data_parallel"] = bool(data_parallel)
    out_dir = prepare_out_dir(name, out)
    config["out_dir"] = str(out_dir)
    write_json(out_dir / "config.json", config)
    results = module.run(config)
    write_json(out_dir / "results.json", results)
    return results, out_dir


def summarize(module: ModuleType, results: Mapping[str, Any]) -> str:
    """The experiment's own summary, or its top-level scalar results as ``key  value`` lines."""
    if hasattr(module, "summarize"):
        return module.summarize(results)
    lines = [f"{k:<28} {v}" for k, v in results.items() if isinstance(v, (int, float, str, bool))]
    return "\n".join(lines)


def exit_status(module: ModuleType, results: Mapping[str, Any]) -> int:
    """The command's exit code: the study's own ``exit_status(results)`` if it defines one, else 1
    when ``results["passed"]`` is ``False`` (a study that checks something and failed), else 0."""
    own = getattr(module, "exit_status", None)
    if own is not None:
        return int(own(results))
    return 1 if results.get("passed") is False else 0


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags shared by ``jaxcalc run NAME`` and ``python experiments/NAME.py``."""
    parser.add_argument("--out", default=None,
                        help="output folder (default: results/NAME/<timestamp>/)")
    parser.add_argument("--quick", action="store_true",
                        help="small smoke-test configuration (well under a minute on a CPU)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config entry (repeatable)")
    group = parser.add_argument_group(
        "scale-out", "data-parallel training over every device of every process (jax.sharding); "
        "with several processes, start one per host with the same flags and its own --process-id")
    group.add_argument("--distributed", action="store_true",
                       help="call jax.distributed.initialize (from the flags below, else "
                       f"{distributed.ENV_COORDINATOR}/{distributed.ENV_NUM_PROCESSES}/"
                       f"{distributed.ENV_PROCESS_ID}, else cluster auto-detection: SLURM, "
                       "Open MPI, Cloud TPU) and shard each batch over all devices")
    group.add_argument("--coordinator-address", default=None, metavar="HOST:PORT",
                       help="address of process 0's coordinator service")
    group.add_argument("--num-processes", type=int, default=None, metavar="N")
    group.add_argument("--process-id", type=int, default=None, metavar="I")


def start_distributed(args: argparse.Namespace) -> bool:
    """For ``--distributed``: initialise JAX's multi-process runtime when there is one to join.

    With no coordinator given (flag or environment) and no cluster that JAX can detect, the run
    stays a single process, still data-parallel over its local devices; a line on stderr says so.
    Returns ``True`` when this is the main process (the one that writes the results).
    """
    explicit = (args.coordinator_address or args.num_processes is not None
                or args.process_id is not None
                or any(os.environ.get(v) for v in (distributed.ENV_COORDINATOR,
                                                   distributed.ENV_NUM_PROCESSES,
                                                   distributed.ENV_PROCESS_ID)))
    try:
        distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    except (ValueError, RuntimeError) as exc:
        if explicit:
            raise
        print(f"jaxcalc: --distributed: no multi-process cluster found ({exc}); running as one "
              f"process, data-parallel over its {jax.local_device_count()} device(s)",
              file=sys.stderr)
    return distributed.is_main_process()


def run_and_report(name: str, args: argparse.Namespace) -> int:
    """Run, print the summary and where the results are; map bad input to exit status 2.

    With ``--distributed`` every process runs the study; only process 0 writes the results
    folder and prints the summary (the others write to a temporary folder they delete).
    """
    data_parallel = bool(getattr(args, "distributed", False))
    out, scratch = args.out, None
    if data_parallel:
        try:
            main_process = start_distributed(args)
        except (ValueError, RuntimeError) as exc:
            print(f"jaxcalc: error: --distributed: {exc}", file=sys.stderr)
            return 2
        if not main_process:
            out = scratch = tempfile.mkdtemp(prefix=f"jaxcalc-{name}-p{jax.process_index()}-")
    try:
        results, out_dir = run_experiment(name, out=out, quick=args.quick,
                                          overrides=args.overrides, data_parallel=data_parallel)
    except (UnknownExperimentError, ConfigError) as exc:
        print(f"jaxcalc: error: {exc.args[0]}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"jaxcalc: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    module = load_experiment(name)
    if scratch is not None:
        return exit_status(module, results)
    text = summarize(module, results)
    if text:
        print(text)
    print(f"\nresults written to {out_dir}/")
    return exit_status(module, results)


def experiment_main(module_name: str, argv: Sequence[str] | None = None) -> int:
    """``main()`` for ``python experiments/NAME.py [--out DIR] [--quick] [--set k=v ...]``."""
    module = sys.modules[module_name]
    name = Path(module.__file__).stem
    parser = argparse.ArgumentParser(prog=f"python experiments/{name}.py",
                                     description=module.DESCRIPTION)
    add_run_arguments(parser)
    return run_and_report(name, parser.parse_args(argv))


__all__ = [
    "experiment_names",
    "ConfigError",
    "UnknownExperimentError",
    "load_experiment",
    "describe_experiments",
    "parse_value",
    "build_config",
    "prepare_out_dir",
    "to_jsonable",
    "write_json",
    "run_experiment",
    "summarize",
    "exit_status",
    "add_run_arguments",
    "run_and_report",
    "experiment_main",
]
