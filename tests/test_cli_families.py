"""The tool layer on every family: ``explain`` inside ``TE(…)`` blocks, and the ``compare``
command's options for the T5/LLM families (``--exact``, ``--max-sequence-length``,
``--pipeline-option``), through :func:`promptweights.cli.main`.

Expected outputs are written out by hand from the routing rules (README, "Per-encoder prompts
inline"); positions are found in the prompt text with ``str.index``.
"""

from __future__ import annotations

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
