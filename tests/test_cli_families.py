"""The tool layer on every family: ``explain`` inside ``TE(…)`` blocks, and the ``compare``
command's options for the T5/LLM families (``--exact``, ``--max-sequence-length``,
``--pipeline-option``), through :func:`promptweights.cli.main`.

Expected outputs are written out by hand from the routing rules (README, "Per-encoder prompts
inline"); positions are found in the prompt text with ``str.index``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from promptweights.cli import explain, main
from promptweights.routing import route_offsets, source_offset
from promptweights.testing import per_encoder_prompts


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _section(out: str, name: str) -> str:
    """The lines ``explain`` prints for encoder ``name``, up to the next encoder or the
    diagnostics."""
    start = out.index(f"encoder {name} reads")
    ends = [out.find(mark, start + 1) for mark in ("\nencoder ", "\ndiagnostics")]
    ends = [end for end in ends if end > 0]
    return out[start : min(ends)] if ends else out[start:]


# --- explain inside TE( blocks ------------------------------------------------------------------


def test_explain_shows_each_encoders_text_schedule_and_spans(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = "best, TE(clip_l: a [cat:dog:0.5]; t5: a (ginger:1.3) cat BREAK on a mat)"
    code, out, _ = run(["explain", text, "--steps", "4"], capsys)
    assert code == 0
    clip = _section(out, "clip_l")
    assert clip.startswith("encoder clip_l reads 'best,  a [cat:dog:0.5]'")
    assert "'cat' at calls 0-2; 'dog' at call 3" in clip
    assert "'best,  a cat'" in clip
    assert "'best,  a dog'" in clip
    assert "ginger" not in clip
    t5 = _section(out, "t5")
    assert t5.startswith("encoder t5 reads 'best,  a (ginger:1.3) cat BREAK on a mat'")
    rows = [line.split() for line in t5.splitlines()]
    assert ["'ginger'", "1.3"] in rows
    assert ["BREAK", "(a", "new", "chunk", "starts)"] in rows
    assert "edit or alternation" not in t5  # the edit is clip_l's only
    assert "diagnostics" not in out


def test_explain_gives_an_encoders_diagnostic_at_its_place_in_the_prompt(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = "x TE(clip_l: a; t5: <lora:ink:abc> b) y"
    code, out, _ = run(["explain", text, "--steps", "2"], capsys)
    assert code == 0
    where = text.index("<lora")  # a bad-network diagnostic points at its tag
    expected = f"offset {where}: bad-network"
    assert expected in out
    assert "(in t5's text)" in out


def test_explain_reads_a_block_holding_and_whole(capsys: pytest.CaptureFixture[str]) -> None:
    # parse() splits at AND before brackets; route and explain read the block whole.
    code, out, _ = run(["explain", "TE(clip_l: a; t5: c AND d:0.5)", "--strict"], capsys)
    assert code == 0
    assert "part 1 of 1" in _section(out, "clip_l")
    t5 = _section(out, "t5")
    assert "part 1 of 2, AND weight 1" in t5
    assert "part 2 of 2, AND weight 0.5" in t5
    assert "never closed" not in out


def test_explain_keeps_the_unclosed_block_diagnostic_at_the_block(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = "a TE(clip_l: cat"
    code, out, _ = run(["explain", text, "--steps", "1"], capsys)
    assert code == 0
    assert "encoder clip_l reads 'a  cat'" in out
    assert f"offset {text.index('TE(')}: unclosed: 'TE(' is never closed" in out


def test_an_unroutable_block_is_a_diagnostic_and_the_prompt_is_explained_whole() -> None:
    text = "best, TE(a cat; t5: a dog)"
    out = explain(text, steps=1)
    assert "encoder " not in out
    assert "part 1 of 1" in out
    assert f"offset {text.index('a cat')}: bad-encoders" in out


def test_explain_with_the_models_encoder_names(capsys: pytest.CaptureFixture[str]) -> None:
    text = "best TE(t5: long) end"
    code, out, _ = run(["explain", text, "--encoders", "clip_l,t5", "--steps", "1"], capsys)
    assert code == 0
    assert "encoder clip_l reads 'best  end'" in out
    assert "encoder t5 reads 'best  long end'" in out
    code, _, err = run(["explain", text, "--encoders", "clip_l", "--strict"], capsys)
    assert code == 2
    assert "unknown text encoder 't5'" in err
    assert f"column {text.index('t5') + 1}" in err


def test_strict_explain_raises_at_an_encoders_diagnostic(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = "x TE(clip_l: a; t5: b ]) y"
    code, _, err = run(["explain", text, "--strict"], capsys)
    assert code == 2
    assert "closes nothing" in err
    assert f"column {text.index(']') + 1}" in err


def test_explain_without_blocks_is_unchanged() -> None:
    out = explain("TE\\(x) a", steps=1)
    assert "encoder " not in out


@settings(max_examples=40, deadline=None)
@given(per_encoder_prompts(("clip_l", "t5"), with_routes=True))
def test_route_offsets_pieces_are_the_prompts_characters(pair: tuple[str, dict[str, str]]) -> None:
    text, expected = pair
    routed = route_offsets(text, ["clip_l", "t5"])
    for name, (own, pieces) in routed.items():
        assert own == expected[name]
        assert pieces or not own, "a drawn prompt's routed text is made of its pieces"
        for at, start, length in pieces:
            assert own[at : at + length] == text[start : start + length]
        assert sum(length for _, _, length in pieces) == len(own)
        for pos in range(len(own)):
            where = source_offset(pieces, pos)
            assert where is not None
            assert text[where] == own[pos]


# --- compare's options for the T5/LLM families ---------------------------------------------------


def _png_pixels(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _quantised(image: Any) -> Any:
    """An image in [0, 1] as the 8 bits a PNG holds (the usual rounding, written out here)."""
    return (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_compare_command_on_wan_with_its_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("diffusers")
    from _tiny_pipelines import tiny_wan
    from diffusers import DiffusionPipeline

    from promptweights.compare import first_image
    from promptweights.diffusers import from_infotext
    from promptweights.infotext import FAMILY_KEY, SEQUENCE_KEY, read_image

    tiny_wan().save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    argv = ["compare", "a (red:1.4) cat", "--out", str(out), "--model", str(tmp_path / "model")]
    argv += ["--steps", "2", "--cfg", "2", "--seeds", "1", "--size", "16x16", "--quiet"]
    argv += ["--exact", "--max-sequence-length", "12", "--pipeline-option", "num_frames=5"]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert "1 cells on no axis" in stdout
    cell = out / "cells" / "000.png"
    params = read_image(cell)
    assert params.written[FAMILY_KEY] == "wan"
    assert params.written[SEQUENCE_KEY] == "12"
    pipe = DiffusionPipeline.from_pretrained(str(tmp_path / "model"))
    pipe.set_progress_bar_config(disable=True)
    kwargs = from_infotext(pipe, str(cell), exact=True)
    assert kwargs["max_sequence_length"] == 12
    again = first_image(pipe(**kwargs, num_frames=5, output_type="np"))
    assert np.array_equal(_quantised(np.asarray(again, dtype=np.float32)), _png_pixels(cell))


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["num_frames"], ["option 1 of 1", "KEY=VALUE"]),
        (["num_frames=5", "=3"], ["option 2 of 2", "KEY=VALUE"]),
        (["num_frames=5", "num_frames=6"], ["option 2 of 2", "given twice"]),
        (["guidance_scale=3"], ["compare's own argument", "--cfg"]),
        (["max_sequence_length=3"], ["--max-sequence-length"]),
        (["prompt_embeds=x"], ["encodes the prompts itself"]),
        (["strength=nan"], ["not a finite number"]),
        (["seedless=" + "9" * 40], ["too large"]),
    ],
)
def test_bad_pipeline_options_are_one_line_before_any_model(
    options: list[str], words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", "a cat", "--out", str(tmp_path / "out"), "--model", "/no/such/model"]
    for option in options:
        argv += ["--pipeline-option", option]
    code, _, err = run(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    for word in words:
        assert word in lines[0]
    assert "no model folder" not in err  # refused before the model


@pytest.mark.parametrize("value", ["0", "-3", "x", "1.5"])
def test_a_bad_max_sequence_length_is_refused(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", "a cat", "--out", str(tmp_path), "--max-sequence-length", value]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert "--max-sequence-length" in err


def test_pipeline_option_values_are_read_as_their_types() -> None:
    from promptweights.cli import _pipeline_options

    given = ["a=5", "b=-2", "c=0.25", "d=1e-3", "e=True", "f=false", "g=none", "h=dpm", "i="]
    assert _pipeline_options(given) == {
        "a": 5,
        "b": -2,
        "c": 0.25,
        "d": 0.001,
        "e": True,
        "f": False,
        "g": None,
        "h": "dpm",
        "i": "",
    }


@pytest.mark.slow
def test_an_option_the_pipeline_does_not_take_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", "a cat", "--out", str(tmp_path / "out"), "--steps", "1", "--quiet"]
    code, _, err = run([*argv, "--pipeline-option", "num_frames=5"], capsys)
    assert code == 2
    assert "takes no argument 'num_frames'" in err
    assert "option 1 of 1" in err


# --- long prompts on decoder-LLM towers ----------------------------------------------------------

_LLM_FAMILIES = ["qwen-image", "z-image", "flux2", "flux2-klein", "lumina2", "sana", "kolors"]


@pytest.mark.parametrize("name", [*_LLM_FAMILIES, "hidream"])
def test_chunking_an_llm_tower_is_refused_with_the_familys_reason(name: str) -> None:
    pytest.importorskip("torch")
    from promptweights.diffusers._towers import check_arguments
    from promptweights.diffusers.families import RECORDS
    from promptweights.errors import InvalidArgumentError

    (family,) = [record for record in RECORDS if record.name == name]
    assert "chunk" not in family.long_prompts
    check_arguments(family, {}, "truncate")
    with pytest.raises(InvalidArgumentError) as caught:
        check_arguments(family, {}, "chunk")
    message = str(caught.value)
    assert f"{family.title} takes long_prompts=['truncate']" in message
    assert "T5 window" not in message  # the T5 families' reason is not theirs
    assert "truncated" in message
