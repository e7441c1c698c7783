"""The README's quickstart runs as written, and its two commands are the ones CI uses."""

import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
CI = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_quickstart_and_training_example_run(capsys):
    quickstart, train, scale_out = _blocks("python")
    namespace = {}
    exec(compile(quickstart, "README.md quickstart", "exec"), namespace)
    exec(compile(train, "README.md training example", "exec"), namespace)
    ng_history = namespace["history"]
    exec(compile(scale_out, "README.md scaling-out example", "exec"), namespace)
    out = capsys.readouterr().out
    assert "0.2350037122015945" in out
    assert "largest Hessian eigenvalues" in out
    ng_losses = ng_history["loss"]  # the natural-gradient run
    assert ng_losses[-1] < 0.75 * ng_losses[0]
    assert all(b <= a for a, b in zip(ng_losses, ng_losses[1:]))  # full batch + LM: monotone
    assert "Newton loss per epoch" in out
    dp_losses = namespace["history"]["loss"]
    assert "data-parallel loss per epoch" in out and dp_losses[-1] < dp_losses[0]


def test_ci_runs_the_readme_test_command():
    commands = [b.strip() for b in _blocks("bash")]
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in CI
    assert any("jaxcalc run" in c for c in commands)
