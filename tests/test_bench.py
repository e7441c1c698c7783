"""scripts/bench.py: the --quick smoke run writes a complete, well-formed BENCHMARKS.json."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
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


LETTERS = ["a", "b", "c", "d", "e", "f", "g"]


@pytest.mark.parametrize("letter", LETTERS)
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
    for letter in LETTERS:
        assert f"[{letter}]" in stdout  # the table is printed


def _rows(report, letter):
    return {r["name"]: r for r in report["benchmarks"][letter]["rows"]}


def test_quick_run_a_compares_conv_and_cnn_step_with_torch(quick_report):
    report, _ = quick_report
    rows = _rows(report, "a")
    for name in ("conv2d+relu fwd+bwd jaxcalc", "conv2d+relu fwd+bwd lax.conv (before)",
                 "cnn sgd step jaxcalc (jit(trainer.step))"):
        assert not rows[name]["skipped"], name
    assert rows["cnn sgd step jaxcalc (jit(trainer.step))"]["traces_after_all_steps"] == 1
    agreement = report["benchmarks"]["a"]["agreement"]
    # im2col conv2d and XLA's convolution compute the same values and gradients (float32)
    assert agreement["xla_conv_vs_jaxcalc_rel_diff"] < 1e-5
    if not rows["conv2d+relu fwd+bwd torch"]["skipped"]:  # the same math as torch
        assert agreement["torch_vs_jaxcalc_rel_diff"] < 1e-5
        assert agreement["torch_vs_jaxcalc_step1_loss_rel_diff"] < 1e-5
        # ... and the copy of the parameters is what makes it agree: the unpermuted control
        # (NHWC flatten order fed to NCHW's) computes another loss
        assert agreement["control_unpermuted_dense0_loss_rel_diff"] > 1e-4
        assert rows["conv2d+relu fwd+bwd jaxcalc"]["baseline"] == "torch"


def test_quick_run_b_matches_the_seed_loops(quick_report):
    report, _ = quick_report
    bench = report["benchmarks"]["b"]
    for key, value in bench["agreement"].items():
        assert value < (1e-5 if "conv" in key else 1e-12), (key, value)
    speedups = [r for r in bench["rows"] if r["name"].split()[1] == "jaxcalc"]
    assert len(speedups) == 4 and all(_positive(r["speedup"]) for r in speedups)
    assert sum("target" in r for r in speedups) == 2  # only the seed-002 layer case is a claim


def test_quick_run_e_counts_hvps_and_converges(quick_report):
    report, _ = quick_report
    bench = report["benchmarks"]["e"]
    rows = bench["rows"]
    default = rows[0]
    n = default["params"]
    assert default["hvps"] == min(n, 40)  # one HVP per Lanczos step, counted in the loss
    assert default["rel_error"] < 1e-3
    # the reference (ARPACK to 1e-12) and a long Lanczos run agree
    assert bench["reference"]["lanczos_vs_arpack_rel_diff"] < 1e-8
    assert bench["hvps_to_tol"] is not None and 1 <= bench["hvps_to_tol"] <= default["hvps"]
    fewest = rows[1]
    assert fewest["hvps"] == bench["hvps_to_tol"] and fewest["rel_error"] <= 1e-3
    errors = bench["rel_error_by_hvps"]
    assert errors[bench["hvps_to_tol"] - 1] <= 1e-3
    assert bench["hvps_to_tol"] == 1 or errors[bench["hvps_to_tol"] - 2] > 1e-3
    arpack = [r for r in rows if r["name"].startswith("scipy eigsh")][0]
    assert arpack["hvps"] >= 1 and arpack["rel_error"] < 1e-2


def test_quick_run_g_measures_fit_and_torch_epochs(quick_report):
    report, _ = quick_report
    rows = _rows(report, "g")
    ours = rows["fit cnn_digits jaxcalc (epoch = one lax.scan)"]
    assert _positive(ours["examples_per_s"]) and math.isfinite(ours["final_epoch_loss"])
    assert ours["examples_per_epoch"] == ours["steps_per_epoch"] * ours["batch"]
    torch_row = rows["torch loop (index tensors, torch.optim.Adam)"]
    if not torch_row["skipped"]:
        assert math.isfinite(torch_row["final_epoch_loss"])
        assert ours["ratio"] == pytest.approx(ours["examples_per_s"]
                                              / torch_row["examples_per_s"])


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
    assert bench._parse_only(None) == LETTERS
    assert bench._parse_only("f, c") == ["c", "f"]
    assert bench._parse_only("g,a") == ["a", "g"]


@pytest.mark.parametrize("only", ["c,x", "", "cd", "h"])
def test_only_rejects_unknown_benchmarks(tmp_path, capsys, only):
    bench = _load_script()
    out = tmp_path / "b.json"
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--only", only, "--json", str(out)])
    assert exit_info.value.code == 2
    assert "--only" in capsys.readouterr().err
    assert not out.exists()


def _fake_report(bench, quick=False, cpu="cpu A", letters=tuple(LETTERS)):
    machine = {k: 1 for k in bench.SAME_MACHINE_KEYS}
    machine["cpu_model"] = cpu
    return {"quick": quick, "machine": machine,
            "benchmarks": {k: {"rows": [], "command": f"old {k}"} for k in letters}}


def test_only_keeps_the_other_benchmarks_of_the_same_machine(tmp_path):
    bench = _load_script()
    path = tmp_path / "b.json"
    path.write_text(json.dumps(_fake_report(bench)))
    kept = bench._previous(path, _fake_report(bench, letters=()), ["d"])
    assert sorted(kept) == ["a", "b", "c", "e", "f", "g"] and kept["c"]["command"] == "old c"
    # a full run keeps nothing; nor does another machine, another mode or no file
    assert bench._previous(path, _fake_report(bench, letters=()), LETTERS) == {}
    assert bench._previous(path, _fake_report(bench, cpu="cpu B", letters=()), ["d"]) == {}
    assert bench._previous(path, _fake_report(bench, quick=True, letters=()), ["d"]) == {}
    assert bench._previous(tmp_path / "none.json", _fake_report(bench), ["d"]) == {}


def test_seed_loops_reproduce_the_seed_notes():
    """The copied loops give the outputs printed in seed 001 (and fail on a wrong kernel)."""
    bench = _load_script()
    image = np.arange(1, 17).reshape(4, 4)
    kernel = np.array([[-1, -1], [1, 1]])
    np.testing.assert_array_equal(bench.convolution2D(image, kernel), np.full((3, 3), 8.0))
    assert not np.array_equal(bench.convolution2D(image, kernel.T), np.full((3, 3), 8.0))
    np.testing.assert_array_equal(bench.max_pooling2D(image), [[6.0, 8.0], [14.0, 16.0]])


def test_top_ritz_values_of_a_diagonal_operator():
    """T of Lanczos on diag(1..4) from e_1 + ... : the last Ritz value is the top eigenvalue."""
    bench = _load_script()
    a = np.diag([1.0, 2.0, 3.0, 4.0])
    q = np.ones(4) / 2.0
    alphas, betas, q_prev, beta = [], [], np.zeros(4), 0.0
    for _ in range(4):  # plain three-term Lanczos, exact in 4 steps
        w = a @ q
        alpha = q @ w
        w = w - alpha * q - beta * q_prev
        beta = np.linalg.norm(w)
        alphas.append(alpha)
        betas.append(beta)
        q_prev, q = q, w / beta if beta > 1e-12 else w
    top = bench._top_ritz_values(np.array(alphas), np.array(betas))
    assert top.shape == (4,)
    assert top[0] == pytest.approx(2.5)  # the Rayleigh quotient of the start vector
    assert top[-1] == pytest.approx(4.0, rel=1e-12)
    assert np.all(np.diff(top) >= -1e-12)  # Ritz values rise monotonically (interlacing)
