"""Tokenisation and 75-token chunking (``promptweights.tokens``): a1111-behaviour.md §7 and §9.2.

Expected chunk sizes come from the table in §7 (results of A1111's real chunker), or from an
independent re-implementation of the rules written below from the same section.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest
from _a1111_reference import reference_chunks
from _fuzz_harness import FUZZ
from _tiny_models import (
    needs_real_tokenizer,
    real_clip_tokenizer,
    tiny_clip_tokenizer,
    tiny_t5_tokenizer,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from promptweights.errors import InvalidWeightError, PromptweightsError
from promptweights.tokens import (
    TextualInversion,
    diffusers_textual_inversions,
    empty_chunk,
    equalize,
    layout_for,
    tokenize,
    tokenize_many,
)

Spans = list[tuple[str, float]]
BRK = ("BREAK", -1.0)


@pytest.fixture(scope="module")
def clip() -> Any:
    return tiny_clip_tokenizer()


def sizes(tokenizer: Any, spans: Spans, **kwargs: Any) -> tuple[list[int], int]:
    result = tokenize(tokenizer, spans, **kwargs)
    return [c.size for c in result.chunks], result.token_count


# --- §7 table: results of A1111's real chunker ------------------------------------------------

A = "a " * 75


@pytest.mark.parametrize(
    ("spans", "backtrack", "expected_sizes", "expected_count"),
    [
        ([("", 1.0)], 20, [0], 0),
        ([("a " * 75, 1.0)], 20, [75], 75),
        ([("a " * 76, 1.0)], 20, [75, 1], 76),
        ([("a " * 60 + ", " + "b " * 20, 1.0)], 20, [61, 20], 95),
        ([("a " * 60 + ", " + "b " * 20, 1.0)], 0, [75, 6], 81),
        ([("a " * 55 + ", " + "b " * 25, 1.0)], 20, [56, 25], 100),
        ([("a " * 54 + ", " + "b " * 25, 1.0)], 20, [75, 5], 80),
        ([("a " * 75 + ", " + "b " * 3, 1.0)], 20, [75, 4], 79),
        ([("a " * 73 + ",, " + "b " * 5, 1.0)], 20, [75, 4], 79),
        ([("", 1.0), BRK, ("a", 1.0)], 20, [0, 1], 76),
        ([("a", 1.0), BRK, ("", 1.0)], 20, [1], 75),
        ([("a", 1.0), BRK, ("", 1.0), BRK, ("b", 1.0)], 20, [1, 0, 1], 151),
        ([("a " * 75, 1.0), BRK, ("b", 1.0)], 20, [75, 1], 76),
    ],
)
def test_a1111_chunk_table(
    clip: Any, spans: Spans, backtrack: int, expected_sizes: list[int], expected_count: int
) -> None:
    assert sizes(clip, spans, comma_backtrack=backtrack) == (expected_sizes, expected_count)


def test_break_inside_brackets_is_a_negative_word(clip: Any) -> None:
    # §3.4: "(a BREAK b)" gives BREAK weight -1.1, which is not a marker but the word "break".
    result = tokenize(clip, [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)])
    (chunk,) = result.chunks
    assert chunk.size == 3
    assert chunk.weights[1:4] == (1.1, -1.1, 1.1)
    assert chunk.ids[2] == clip.convert_tokens_to_ids("break</w>")


def test_chunk_layout_clip_l_pads_with_eos(clip: Any) -> None:
    (chunk,) = tokenize(clip, [("a ", 1.0), ("cat", 1.5)]).chunks
    bos, eos = clip.bos_token_id, clip.eos_token_id
    a, cat = clip.convert_tokens_to_ids(["a</w>", "cat</w>"])
    assert chunk.ids == (bos, a, cat, eos) + (eos,) * 73
    assert chunk.weights == (1.0, 1.0, 1.5) + (1.0,) * 74
    assert chunk.fragments == (-1, 0, 1) + (-1,) * 74


def test_chunk_layout_openclip_pads_with_its_own_pad_after_first_eos() -> None:
    tok = tiny_clip_tokenizer(pad="!")
    (chunk,) = tokenize(tok, [("a", 1.0)]).chunks
    assert tok.pad_token_id == 0
    head = (tok.bos_token_id, tok.convert_tokens_to_ids("a</w>"), tok.eos_token_id)
    assert chunk.ids == head + (0,) * 74


def test_chunks_are_always_77_long_with_bos_and_eos(clip: Any) -> None:
    result = tokenize(clip, [("a " * 160, 1.2)])
    assert [c.size for c in result.chunks] == [75, 75, 10]
    for chunk in result.chunks:
        assert len(chunk.ids) == len(chunk.weights) == len(chunk.fragments) == 77
        assert chunk.ids[0] == clip.bos_token_id
        assert chunk.ids[chunk.size + 1] == clip.eos_token_id
        assert chunk.weights[0] == chunk.weights[chunk.size + 1] == 1.0
        assert set(chunk.weights[1 : chunk.size + 1]) == {1.2}


def test_each_span_is_tokenised_on_its_own(clip: Any) -> None:
    # "ca" + "t" tokenised separately are two pieces, not the word "cat".
    (chunk,) = tokenize(clip, [("ca", 1.0), ("t", 1.1)]).chunks
    assert chunk.size == 3
    assert chunk.fragments[1:4] == (0, 0, 1)


def test_comma_moves_text_and_keeps_weights_and_fragments(clip: Any) -> None:
    spans: Spans = [("a " * 60 + ",", 1.0), (" b" * 20, 1.3)]
    first, second = tokenize(clip, spans).chunks
    assert (first.size, second.size) == (61, 20)
    assert first.ids[61] == clip.convert_tokens_to_ids(",</w>")
    assert second.weights[1:21] == (1.3,) * 20
    assert second.fragments[1:21] == (1,) * 20


def test_weights_zero_and_negative_are_kept(clip: Any) -> None:
    (chunk,) = tokenize(clip, [("a", 0.0), ("b", -0.5)]).chunks
    assert chunk.weights[1:3] == (0.0, -0.5)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_rejected(clip: Any, bad: float) -> None:
    with pytest.raises(InvalidWeightError, match="not a finite number") as info:
        tokenize(clip, [("a", 1.0), ("cat", bad)])
    assert isinstance(info.value, PromptweightsError)
    assert isinstance(info.value, ValueError)


def test_empty_chunk_and_equalize(clip: Any) -> None:
    short, long = tokenize_many(clip, [[("a", 1.0)], [("a " * 80, 1.0)]])
    eq_short, eq_long = equalize(short, long)
    assert len(eq_short.chunks) == len(eq_long.chunks) == 2
    assert eq_short.chunks[1] == empty_chunk(short.layout)
    assert eq_long == long
    empty = empty_chunk(short.layout)
    assert empty.ids == (clip.bos_token_id,) + (clip.eos_token_id,) * 76
    assert set(empty.weights) == {1.0}
    assert empty == tokenize(clip, [("", 1.0)]).chunks[0]


def test_equalize_rejects_mixed_layouts(clip: Any) -> None:
    a = tokenize(clip, [("a", 1.0)])
    b = tokenize(tiny_clip_tokenizer(pad="!"), [("a", 1.0)])
    with pytest.raises(ValueError, match="layouts"):
        equalize(a, b)


def test_backtrack_out_of_range_is_rejected(clip: Any) -> None:
    with pytest.raises(ValueError, match="comma_backtrack"):
        tokenize(clip, [("a", 1.0)], comma_backtrack=75)


# --- textual inversion (§9.2) ------------------------------------------------------------------


def test_textual_inversion_is_never_split(clip: Any) -> None:
    emb = clip.convert_tokens_to_ids("emb</w>")
    ti = TextualInversion("emb", (emb,), (900, 901, 902))
    first, second = tokenize(clip, [("a " * 73, 1.0), ("emb", 1.2)], textual_inversions=[ti]).chunks
    assert first.size == 73
    assert second.size == 3
    assert second.ids[1:4] == (900, 901, 902)
    assert second.weights[1:4] == (1.2, 1.2, 1.2)


def test_textual_inversion_fits_exactly(clip: Any) -> None:
    emb = clip.convert_tokens_to_ids("emb</w>")
    ti = TextualInversion("emb", (emb,), (900, 901))
    (chunk,) = tokenize(clip, [("a " * 73 + "emb", 1.0)], textual_inversions=[ti]).chunks
    assert chunk.size == 75
    assert chunk.ids[74:76] == (900, 901)


def test_textual_inversion_longest_name_wins_and_needs_whole_words(clip: Any) -> None:
    red, cat = clip.convert_tokens_to_ids(["red</w>", "cat</w>"])
    short = TextualInversion("red", (red,), (800,))
    long = TextualInversion("red cat", (red, cat), (900, 901))
    (chunk,) = tokenize(clip, [("red cat red", 1.0)], textual_inversions=[short, long]).chunks
    assert chunk.ids[1 : chunk.size + 1] == (900, 901, 800)
    # A name cut by an emphasis boundary does not match.
    (chunk,) = tokenize(clip, [("red", 1.0), ("cat", 1.1)], textual_inversions=[long]).chunks
    assert chunk.ids[1:3] == (red, cat)


def test_diffusers_textual_inversions_are_found() -> None:
    tok = tiny_clip_tokenizer()
    tok.add_tokens(["<emb>", "<emb>_1", "<emb>_2", "<one>"])
    found = {ti.name: ti for ti in diffusers_textual_inversions(tok)}
    assert set(found) == {"<emb>", "<one>"}
    ids = tok.convert_tokens_to_ids(["<emb>", "<emb>_1", "<emb>_2"])
    assert found["<emb>"].vectors == tuple(ids)
    assert found["<emb>"].trigger == (ids[0],)
    (chunk,) = tokenize(tok, [("a <emb> b", 1.0)], textual_inversions=found.values()).chunks
    assert chunk.ids[1:6] == (tok.convert_tokens_to_ids("a</w>"), *ids, chunk.ids[5])
    assert chunk.size == 5


# --- T5: no chunking, EOS once, its own length ---------------------------------------------------


def test_t5_is_one_window_with_eos_once() -> None:
    tok = tiny_t5_tokenizer()
    layout = layout_for(tok)
    assert (layout.length, layout.bos, layout.eos, layout.pad, layout.chunked) == (
        16,
        None,
        1,
        0,
        False,
    )
    result = tokenize(tok, [("a b", 1.0), ("c", 1.5), BRK, ("d", 1.0)])
    (chunk,) = result.chunks
    body = tok(["a b", "c", "d"], add_special_tokens=False)["input_ids"]
    content = tuple(body[0] + body[1] + body[2])
    assert chunk.ids == content + (1,) + (0,) * (15 - len(content))
    assert chunk.ids.count(1) == 1
    assert chunk.weights[: len(content)] == (1.0,) * len(body[0]) + (1.5,) * len(body[1]) + (
        1.0,
    ) * len(body[2])


def test_t5_truncates_to_its_length() -> None:
    tok = tiny_t5_tokenizer()
    result = tokenize(tok, [("a " * 20, 1.0)])
    (chunk,) = result.chunks
    assert chunk.size == 15
    assert result.truncated == 5
    assert chunk.ids[-1] == tok.eos_token_id
    result = tokenize(tok, [("a", 1.0)], layout=layout_for(tok, length=8))
    assert len(result.chunks[0].ids) == 8


# --- against an independent re-implementation of §7 (tests/_a1111_reference.py) ------------


WORD_POOL = ["a", "cat", "dog", ",", "red", "sky", "house", "on", "b", ",,"]


@st.composite
def span_lists(draw: Any) -> Spans:
    spans: Spans = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.integers(0, 6)) == 0:
            spans.append(BRK)
            continue
        words = draw(st.lists(st.sampled_from(WORD_POOL), max_size=60))
        weight = draw(st.sampled_from([1.0, 1.1, 0.5, 0.0, -1.0, 1.21, 2.0]))
        spans.append((" ".join(words), weight))
    return spans


@settings(max_examples=40, deadline=None)
@given(spans=span_lists(), backtrack=st.sampled_from([0, 5, 20]))
def test_matches_reference_chunker(clip: Any, spans: Spans, backtrack: int) -> None:
    result = tokenize(clip, spans, comma_backtrack=backtrack)
    ref_ids, ref_w = reference_chunks(clip, spans, backtrack)
    assert [list(c.ids) for c in result.chunks] == ref_ids
    assert [list(c.weights) for c in result.chunks] == ref_w


@needs_real_tokenizer
def test_real_tokenizer_reference_prompts() -> None:
    tok = real_clip_tokenizer()
    assert layout_for(tok).comma == 267
    long_prompt = ", ".join(["masterpiece", "best quality", "a red fox in the snow"] * 12)
    cases: list[Spans] = [
        [("(masterpiece:1.2)", 1.0)],
        [("a ", 1.0), ("house", 1.573), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55)],
        [(long_prompt, 1.0)],
        [(long_prompt, 1.0), BRK, ("sunset, ", 1.3), (long_prompt, 0.9)],
    ]
    for spans in cases:
        result = tokenize(tok, spans)
        ref_ids, ref_w = reference_chunks(tok, spans)
        assert [list(c.ids) for c in result.chunks] == ref_ids
        assert [list(c.weights) for c in result.chunks] == ref_w
    assert tokenize(tok, [("(masterpiece:1.2)", 1.0)]).chunks[0].ids[:9] == (
        49406,
        263,
        12066,
        281,
        272,
        269,
        273,
        264,
        49407,
    )


@needs_real_tokenizer
def test_real_tokenizer_openclip_padding() -> None:
    tok = real_clip_tokenizer(pad="!")
    (chunk,) = tokenize(tok, [("a cat", 1.0)]).chunks
    assert chunk.ids[:4] == (49406, 320, 2368, 49407)
    assert chunk.ids[4:] == (0,) * 73


def test_tokens_module_does_not_import_torch() -> None:
    import subprocess

    code = "import promptweights.tokens, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_lone_surrogates_tokenize_as_the_replacement_character() -> None:
    tokenizer = FUZZ._tokenizer()
    from promptweights.tokens import tokenize

    assert tokenize(tokenizer, [("red \udc80", 1.0)]) == tokenize(tokenizer, [("red \ufffd", 1.0)])
