"""Every example script runs (offline, quickly) so that none of them can rot."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_examples_are_listed_in_the_readme() -> None:
    readme = (EXAMPLES[0].parent / "README.md").read_text(encoding="utf-8")
    for example in EXAMPLES:
        assert example.name in readme


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out.strip()
