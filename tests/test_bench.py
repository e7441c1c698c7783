"""scripts/bench.py: the --quick smoke run writes a complete, well-formed BENCHMARKS.json."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "bench.py"
MACHINE_KEYS = ("cpu_model", "cores", "jax_version", "jaxlib_version", "backend", "device_kind",
                "torch_version")


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """Run the quick benchmark once in a subprocess; return its JSON and stdout."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(path.read_text()), proc.stdout


def test_quick_run_records_the_machine(quick_report):
    report, _ = quick_report
    machine = report["machine"]
    for key in MACHINE_KEYS:
        assert key in machine, key
    assert machine["cores"] >= 1
    assert machine["backend"] == "cpu" or machine["gpu_available"]
    assert machine["cpu_model"] and machine["jax_version"]
    assert report["quick"] is True and report["timing_claims"] is False


@pytest.mark.parametrize("letter", ["c", "d", "f"])
def test_quick_run_has_finite_positive_timings(quick_report, letter):
    report, _ = quick_report
    rows = report["benchmarks"][letter]["rows"]
    measured = [r for r in rows if not r["skipped"]]
    assert measured, f"benchmark {letter} has no measured rows"
    for r in rows:
        if r["skipped"]:  # only the optional torch anchor may be skipped, and it says why
            assert "torch" in r["name"] and "torch" in r["note"], r
            continue
        for key in ("median_s", "iqr_s", "min_s"):
            assert math.isfinite(r[key]) and r[key] >= 0, (r["name"], key, r[key])
        assert _positive(r["median_s"]), r["name"]
        assert r["runs"] == 3 and len(r["samples_s"]) == 3
        first = r.get("compile_s", r.get("first_step_s", r.get("first_call_s")))
        assert _positive(first), (r["name"], first)
        if "ratio" in r:
            assert _positive(r["ratio"]), r["name"]
        if "met" in r:  # --quick makes no timing claims
            assert r["met"] is None


def test_quick_run_covers_each_benchmark(quick_report):
    report, stdout = quick_report
    bench = report["benchmarks"]
    assert {r["name"].split()[0] for r in bench["c"]["rows"]} == {"grad", "hvp", "hvp_rev_over_fwd"}
    names = [r["name"] for r in bench["d"]["rows"]]
    assert any(n.startswith("finite_diff.hessian") for n in names)
    assert any(n.startswith("torch.func.hessian") for n in names)
    assert sum(r.get("sweep", False) for r in bench["d"]["rows"]) >= 2
    # the three Hessians agree (float64; FD central from exact gradients)
    agreement = bench["d"]["agreement"]
    assert agreement["fd_vs_jax_max_abs_diff"] < 1e-6 * max(1.0, agreement["max_abs_H"])
    if "torch_vs_jax_max_abs_diff" in agreement:
        assert agreement["torch_vs_jax_max_abs_diff"] < 1e-10 * max(1.0, agreement["max_abs_H"])
    f_rows = [r for r in bench["f"]["rows"] if "trainer" in r]
    assert {r["model_name"] for r in f_rows} == {"mlp", "cnn"}
    assert all(r["traces_after_step2"] == 1 for r in f_rows)  # step 2 reuses the executable
    assert bench["f"]["no_retrace"] is True
    assert all(math.isfinite(r["final_loss"]) for r in f_rows)
    for letter in ("c", "d", "f"):
        assert f"[{letter}]" in stdout  # the table is printed


def _load_script():
    """scripts/bench.py as a module (it is a script, not part of the package)."""
    name = "jaxcalc_bench_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_only_selects_in_canonical_order():
    bench = _load_script()
    assert bench._parse_only(None) == ["c", "d", "f"]
    assert bench._parse_only("f, c") == ["c", "f"]


@pytest.mark.parametrize("only", ["c,x", "", "cd"])
def test_only_rejects_unknown_benchmarks(tmp_path, capsys, only):
    bench = _load_script()
    out = tmp_path / "b.json"
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--only", only, "--json", str(out)])
    assert exit_info.value.code == 2
    assert "--only" in capsys.readouterr().err
    assert not out.exists()


def _fake_report(bench, quick=False, cpu="cpu A", letters=("c", "d", "f")):
    machine = {k: 1 for k in bench.SAME_MACHINE_KEYS}
    machine["cpu_model"] = cpu
    return {"quick": quick, "machine": machine,
            "benchmarks": {k: {"rows": [], "command": f"old {k}"} for k in letters}}


def test_only_keeps_the_other_benchmarks_of_the_same_machine(tmp_path):
    bench = _load_script()
    path = tmp_path / "b.json"
    path.write_text(json.dumps(_fake_report(bench)))
    kept = bench._previous(path, _fake_report(bench, letters=()), ["d"])
    assert sorted(kept) == ["c", "f"] and kept["c"]["command"] == "old c"
    # a full run keeps nothing; nor does another machine, another mode or no file
    assert bench._previous(path, _fake_report(bench, letters=()), ["c", "d", "f"]) == {}
    assert bench._previous(path, _fake_report(bench, cpu="cpu B", letters=()), ["d"]) == {}
    assert bench._previous(path, _fake_report(bench, quick=True, letters=()), ["d"]) == {}
    assert bench._previous(tmp_path / "none.json", _fake_report(bench), ["d"]) == {}
