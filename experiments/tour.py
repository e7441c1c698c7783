"""A guided tour: the flagship studies in one run, one results folder a newcomer reads first.

Runs each study with its ``TOUR_CONFIG`` (a configuration chosen to show its point in seconds;
the study's ``QUICK_CONFIG`` when it has none) into ``<out>/<study>/`` — each with its own
``config.json``, ``results.json`` and plots — and writes ``<out>/index.md``: every study's
summary table with links to its figures. Takes about 2–3 minutes on a 2-core CPU; ``--quick``
runs a two-study subset in seconds.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from experiments import _common
from jaxcalc import runner
from jaxcalc.runner import experiment_main

ORDER = 0
DESCRIPTION = "the main job: every flagship study in ~3 minutes, with an index of results and plots"
FLAGSHIP = ["seeds", "derivative_audit", "activation_calculus", "hessian_vs_fd",
            "optimizer_comparison", "cnn_digits", "rnn_timeseries", "edge_of_stability",
            "fourier_features"]
DEFAULT_CONFIG: Dict[str, Any] = {"studies": FLAGSHIP, "progress": True}
QUICK_CONFIG: Dict[str, Any] = {"studies": ["seeds", "activation_calculus"]}


def run(config: Dict[str, Any]) -> Dict[str, Any]:
    available = runner.experiment_names()
    unknown = [s for s in config["studies"] if s not in available or s == "tour"]
    if unknown:
        raise runner.ConfigError(f"tour: unknown studies {unknown}; available: "
                                 f"{', '.join(n for n in available if n != 'tour')}")
    out_dir = Path(config["out_dir"])
    studies: Dict[str, Any] = {}
    start = time.perf_counter()
    for name in _common.progress(config["studies"], desc="tour", enabled=config["progress"]):
        module = runner.load_experiment(name)
        settings = getattr(module, "TOUR_CONFIG", None)
        t0 = time.perf_counter()
        results, study_dir = runner.run_experiment(name, out=out_dir / name, quick=settings is None,
                                                   settings=settings)
        status = runner.exit_status(module, results)
        studies[name] = {"seconds": time.perf_counter() - t0, "out_dir": str(study_dir),
                         "passed": status == 0, "description": module.DESCRIPTION,
                         "summary": runner.summarize(module, results),
                         "plots": sorted(p.name for p in study_dir.glob("*.png"))}
    total = time.perf_counter() - start
    _write_index(out_dir, studies, total)
    return {"passed": all(s["passed"] for s in studies.values()), "total_seconds": total,
            "studies": studies, "index": str(out_dir / "index.md")}


def _write_index(out_dir: Path, studies: Dict[str, Any], total: float) -> None:
    lines: List[str] = ["# jaxcalc tour", "",
                        f"{len(studies)} studies in {total:.0f} s. Each folder holds the study's "
                        "config.json, results.json and plots; `jaxcalc run NAME` runs the full "
                        "version of any of them.", ""]
    for name, s in studies.items():
        lines += [f"## {name}", "", s["description"], "",
                  f"{'passed' if s['passed'] else 'FAILED'} in {s['seconds']:.1f} s — "
                  f"[{name}/]({name}/)", "", "```", s["summary"], "```", ""]
        lines += [f"![{p}]({name}/{p})" for p in s["plots"]] + [""]
    (out_dir / "index.md").write_text("\n".join(lines))


def summarize(results: Dict[str, Any]) -> str:
    rows = [[name, "ok" if s["passed"] else "FAILED", f"{s['seconds']:.1f}", len(s["plots"]),
             s["out_dir"]] for name, s in results["studies"].items()]
    table = _common.format_table(["study", "status", "seconds", "plots", "folder"], rows)
    return f"{table}\n\ntotal {results['total_seconds']:.0f} s — start with {results['index']}"


def main() -> int:
    return experiment_main(__name__)


if __name__ == "__main__":
    sys.exit(main())
