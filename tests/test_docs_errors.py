"""docs/errors.md stays true: every test it names exists, and every module has its section."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "errors.md").read_text()
TESTS = {p.name: p.read_text() for p in (ROOT / "tests").glob("test_*.py")}


def test_every_test_named_in_errors_md_exists():
    named = set(re.findall(r"`(?:(?:tests/)?(test_\w+\.py)::)?(test_\w+)", DOC))
    assert len(named) > 50  # the tables are there and were parsed
    everywhere = "\n".join(TESTS.values())
    missing = sorted(f"{f}::{n}" if f else n for f, n in named
                     if not re.search(rf"^def {n}\b", TESTS.get(f, "") if f else everywhere,
                                      flags=re.M))
    assert not missing, f"docs/errors.md names tests that do not exist: {missing}"


def test_errors_md_covers_every_public_module():
    for module in ("activations", "losses", "layers", "rnn", "signal", "models", "derivatives",
                   "finite_diff", "spectrum", "trainers", "fit", "distributed"):
        assert re.search(rf"^## .*{module}", DOC, flags=re.M | re.I), module
