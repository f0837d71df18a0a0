"""One reading of an infotext's settings and one clip-skip convention (promptweights.settings)."""

from __future__ import annotations

import pytest

from promptweights.cli import infotext_json
from promptweights.infotext import parse
from promptweights.settings import a1111_clip_skip, pipeline_clip_skip, run_settings

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


READ = [
    BODY,
    BODY + ", Schedule type: Karras, Size: 64x32, Clip skip: 2, Token normalization: mean",
    "x\nSteps: 20, Emphasis: No norm, Old prompt editing timelines: True, Size: 0x32",
    "no settings at all",
]


@pytest.mark.parametrize("text", READ)
def test_compare_the_cli_and_the_rerun_read_the_same_settings(text: str) -> None:
    pytest.importorskip("diffusers")
    from promptweights.compare import settings_from_infotext
    from promptweights.diffusers import plan_rerun

    params = parse(text)
    settings = run_settings(params)
    cell = settings_from_infotext(params)
    cli = infotext_json(params, to_diffusers=True)
    plan = plan_rerun(params, a1111_fallback=True)
    assert cell["strategy"] == cli["encode"]["strategy"] == plan.strategy == settings.strategy
    assert cell["clip_skip"] == settings.clip_skip
    assert cli["encode"]["clip_skip"] == plan.clip_skip == pipeline_clip_skip(settings.clip_skip)
    assert cli["encode"]["normalization"] == cell.get("normalization", "none")
    assert cell.get("steps") == cli["encode"]["steps"] == settings.steps
    assert plan.steps == (settings.steps or 20)
    assert cell.get("cfg") == cli["pipeline"]["guidance_scale"] == settings.cfg_scale
    assert cell.get("seed") == settings.seed
    assert (cell.get("width"), cell.get("height")) == (settings.width, settings.height)


def test_run_settings_reads_what_a1111_writes() -> None:
    text = (
        "a (cat:1.2)\nNegative prompt: ugly\nSteps: 9, Sampler: DPM++ 2M, Schedule type: Karras, "
        "CFG scale: 4.5, Seed: 7, Size: 64x32, Clip skip: 2, Emphasis: No norm, "
        "Old prompt editing timelines: True"
    )
    settings = run_settings(parse(text))
    assert (settings.prompt, settings.negative_prompt) == ("a (cat:1.2)", "ugly")
    assert (settings.steps, settings.sampler, settings.cfg_scale) == (9, "DPM++ 2M Karras", 4.5)
    assert (settings.seed, settings.width, settings.height) == (7, 64, 32)
    assert (settings.clip_skip, settings.pipeline_clip_skip) == (2, 1)
    assert settings.strategy == "a1111-no-norm"
    assert settings.normalization is None
    assert settings.old_timelines is True
    bare = run_settings(parse("a cat\nSize: 0x32"))
    assert (bare.steps, bare.sampler, bare.cfg_scale, bare.seed) == (None, None, None, None)
    assert (bare.width, bare.height, bare.clip_skip, bare.old_timelines) == (None, None, 1, False)
