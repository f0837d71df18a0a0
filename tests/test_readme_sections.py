"""The README's sections on issue 14's syntaxes: each one's runnable example prints what its
comments say (the LoRA schedule section's example is run by tests/test_lora_schedules.py)."""

from __future__ import annotations

import contextlib
import io
import itertools
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _example(heading: str) -> str:
    section = README.split(f"\n{heading}\n", 1)[1].split("\n##", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize(
    "heading",
    [
        "### NovelAI V4 numeric weights",
        "### Dynamic prompts and wildcards",
        '### compel\'s syntax (`dialect="compel"`)',
        "### Converting between dialects (`promptweights.convert`)",
    ],
)
def test_the_readme_example_prints_what_its_comments_say(heading: str) -> None:
    code = _example(heading)
    # Each `# …` line right after a print() is what it prints (a trailing "  (…)" explains it).
    lines = code.splitlines()
    said = [
        after.removeprefix("# ").split("  (")[0].rstrip()
        for line, after in itertools.pairwise(lines)
        if line.startswith("print(") and after.startswith("# ")
    ]
    assert said, heading
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().splitlines() == said
