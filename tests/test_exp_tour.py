"""The main job: `jaxcalc run tour` (quick subset here; the full tour is timed by hand)."""

import json

from experiments import tour
from jaxcalc import cli, runner


def test_quick_tour_writes_every_study_and_an_index(tmp_path, capsys):
    out = tmp_path / "tour"
    assert cli.main(["run", "tour", "--quick", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["passed"] is True
    assert list(results["studies"]) == tour.QUICK_CONFIG["studies"]
    index = (out / "index.md").read_text()
    for name, study in results["studies"].items():
        study_dir = out / name
        assert (study_dir / "config.json").exists() and (study_dir / "results.json").exists()
        assert study["plots"], name
        for plot in study["plots"]:
            assert (study_dir / plot).stat().st_size > 5_000
            assert f"({name}/{plot})" in index
        assert f"## {name}" in index
    assert "index.md" in capsys.readouterr().out


def test_tour_covers_every_study_and_rejects_unknown_ones(tmp_path, capsys):
    studies = set(runner.experiment_names()) - {"tour"}
    assert set(tour.FLAGSHIP) == studies
    assert cli.main(["run", "tour", "--out", str(tmp_path / "t"), "--set",
                     'studies=["seeds", "no_such_study"]']) == 2
    assert "no_such_study" in capsys.readouterr().err
