"""One reading of an infotext's settings and one clip-skip convention (promptweights.settings)."""

from __future__ import annotations

import pytest

from promptweights.cli import infotext_json
from promptweights.infotext import parse
from promptweights.settings import a1111_clip_skip, pipeline_clip_skip

BODY = "a cat\nNegative prompt: ugly\nSteps: 9, Sampler: Euler, CFG scale: 4, Seed: 7"


@pytest.mark.parametrize(
    ("written", "pipeline"), [("", None), ("0", None), ("1", None), ("2", 1), ("12", 11)]
)
def test_every_reader_gives_the_same_pipeline_clip_skip(written: str, pipeline: int | None) -> None:
    pytest.importorskip("diffusers")
    from promptweights.diffusers import plan_rerun

    text = BODY + (f", Clip skip: {written}" if written else "")
    params = parse(text)
    assert plan_rerun(params).clip_skip == pipeline
    assert infotext_json(params, to_diffusers=True)["encode"]["clip_skip"] == pipeline


def test_the_two_conventions_convert_back_and_forth() -> None:
    for a1111 in range(1, 13):
        assert a1111_clip_skip(pipeline_clip_skip(a1111)) == a1111
    assert [a1111_clip_skip(n) for n in (None, 0, 1, 2)] == [1, 1, 2, 3]
