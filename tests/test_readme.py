"""The README's quickstart runs as written, and its two commands are the ones CI uses."""

import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
CI = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_quickstart_runs(capsys):
    (code,) = _blocks("python")
    exec(compile(code, "README.md quickstart", "exec"), {})
    out = capsys.readouterr().out
    assert "0.2350037122015945" in out
    assert "largest Hessian eigenvalues" in out


def test_ci_runs_the_readme_test_command():
    commands = [b.strip() for b in _blocks("bash")]
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in CI
    assert any("jaxcalc run" in c for c in commands)
