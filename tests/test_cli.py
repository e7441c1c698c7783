"""The experiment runner and the ``jaxcalc`` command: listing, running, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxcalc import cli, runner

REPO = Path(__file__).resolve().parent.parent


def test_list_prints_every_experiment(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in runner.experiment_names():
        assert name in out
    assert "seed" in out  # the description of `seeds`


def test_unknown_experiment_exits_2_with_the_names(capsys):
    assert cli.main(["run", "no_such_study"]) == 2
    err = capsys.readouterr().err
    assert "no_such_study" in err and "seeds" in err


def test_set_unknown_key_exits_2_naming_it(tmp_path, capsys):
    assert cli.main(["run", "seeds", "--out", str(tmp_path), "--set", "bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "valid keys" in err
    assert not (tmp_path / "results.json").exists()


def test_set_wrong_type_exits_2_naming_key_and_type(tmp_path, capsys):
    assert cli.main(["run", "seeds", "--out", str(tmp_path), "--set", "linreg_epochs=many"]) == 2
    err = capsys.readouterr().err
    assert "linreg_epochs" in err and "int" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root can write anywhere; covered by the file-as-folder case")
def test_unwritable_out_is_a_clear_error(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    assert cli.main(["run", "seeds", "--out", str(locked / "sub")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_out_that_is_a_file_is_a_clear_error_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["run", "seeds", "--out", str(blocker / "sub")]) == 2
    assert "not writable" in capsys.readouterr().err


@pytest.mark.parametrize("text,default,expected", [
    ("3", 1, 3), ("0.5", 1.0, 0.5), ("true", False, True), ("off", True, False),
    ("abc", "x", "abc"), ("[1, 2]", [0], [1, 2]),
])
def test_parse_value_follows_the_default_type(text, default, expected):
    assert runner.parse_value("k", text, default) == expected


@pytest.mark.parametrize("text,default", [("1.5", 1), ("maybe", True), ("{}", [1]), ("x", 2.0)])
def test_parse_value_rejects_the_wrong_type(text, default):
    with pytest.raises(runner.ConfigError, match="--set k"):
        runner.parse_value("k", text, default)


def test_to_jsonable_handles_arrays_and_non_finite():
    import numpy as np
    import jax.numpy as jnp
    out = runner.to_jsonable({"a": jnp.arange(3), "b": np.float32(np.inf), "c": (1, np.int64(2))})
    assert out == {"a": [0, 1, 2], "b": "inf", "c": [1, 2]}
    json.dumps(out)


def test_run_writes_config_results_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", "seeds", "--quick", "--out", str(out), "--set", "linreg_epochs=5"]) == 0
    config = json.loads((out / "config.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert config["linreg_epochs"] == 5 and config["quick"] is True
    assert results["passed"] is True
    assert (out / "activations.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "all reproduced" in printed and str(out) in printed


def test_default_out_dir_is_results_name_timestamp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = runner.prepare_out_dir("seeds")
    second = runner.prepare_out_dir("seeds")
    assert first.parent == Path("results") / "seeds" and first != second


def test_console_script_and_python_script_entry_points(tmp_path):
    """`jaxcalc list` as installed, and `python experiments/seeds.py` with the same flags."""
    exe = Path(sys.executable).with_name("jaxcalc")
    if exe.exists():
        listed = subprocess.run([str(exe), "list"], capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0 and "seeds" in listed.stdout
    bad = subprocess.run([sys.executable, str(REPO / "experiments" / "seeds.py"), "--out",
                          str(tmp_path / "o"), "--set", "nope=1"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_a_broken_study_does_not_hide_the_others(tmp_path, monkeypatch, capsys):
    """A study that fails to import is listed with its error, sorts last, and the rest still run.
    The broken module lives in a temp folder added to the package path of this process only."""
    import experiments
    extra = tmp_path / "more_studies"
    extra.mkdir()
    (extra / "zz_broken_for_test.py").write_text("raise RuntimeError('half-written study')\n")
    monkeypatch.setattr(experiments, "__path__", list(experiments.__path__) + [str(extra)])
    monkeypatch.delitem(sys.modules, "experiments.zz_broken_for_test", raising=False)
    names = runner.experiment_names()
    assert names[-1] == "zz_broken_for_test" and "seeds" in names
    assert cli.main(["list"]) == 0
    assert "cannot be imported: RuntimeError: half-written study" in capsys.readouterr().out
    assert cli.main(["run", "seeds", "--out", str(tmp_path / "o"), "--set", "plots=false"]) == 0


def test_exit_status_defaults_to_the_passed_flag():
    """Studies without their own exit_status exit 1 exactly when results say passed: False."""
    import types
    bare = types.SimpleNamespace()
    assert runner.exit_status(bare, {"passed": True}) == 0
    assert runner.exit_status(bare, {"passed": False}) == 1
    assert runner.exit_status(bare, {"accuracy": 0.5}) == 0  # nothing checked: success
    own = types.SimpleNamespace(exit_status=lambda results: 3)
    assert runner.exit_status(own, {"passed": True}) == 3
    from experiments import seeds
    assert not hasattr(seeds, "exit_status") and runner.exit_status(seeds, {"passed": False}) == 1
