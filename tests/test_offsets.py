"""Token offsets for slow SentencePiece tokenizers (ChatGLM3's): pieces aligned with the text, so
weighted spans reach their tokens as through a fast tokenizer's ``offset_mapping``."""

from __future__ import annotations

import pytest

import promptweights
from promptweights._offsets import piece_offsets, token_offsets
from promptweights.errors import InvalidArgumentError
from promptweights.tokens import layout_for, tokenize


def test_pieces_take_their_non_space_characters() -> None:
    # "▁a" is the "a" at 0; "▁re" + "d" split "red"; a lone "▁" gets an empty offset.
    pieces = ["▁a", "▁re", "d", "▁", "cat"]
    assert piece_offsets("a red  cat", pieces) == [(0, 1), (2, 4), (4, 5), (7, 7), (7, 10)]


def test_leading_and_folded_whitespace_and_nfkc_are_aligned() -> None:
    # SentencePiece drops the leading spaces, folds runs, and NFKC maps "ﬁ" to "fi".
    assert piece_offsets("  ﬁne\tday ", ["▁fi", "ne", "▁day"]) == [(2, 3), (3, 5), (6, 9)]


def test_byte_fallback_pieces_take_their_character() -> None:
    # "é" is two UTF-8 bytes: both pieces point at it.
    assert piece_offsets("aé", ["▁a", "<0xC3>", "<0xA9>"]) == [(0, 1), (1, 2), (1, 2)]


@pytest.mark.parametrize(
    "pieces",
    [["▁a", "▁cat"], ["▁a", "▁red", "▁cat", "▁dog"], ["▁b", "▁red", "▁cat"], ["▁a", "<0xC3>"]],
)
def test_pieces_that_are_not_the_text_are_refused(pieces: list[str]) -> None:
    assert piece_offsets("a red cat", pieces) is None


class _Slow:
    """A slow tokenizer whose pieces drop a character: refused with our own error."""

    is_fast = False

    def tokenize(self, text: str) -> list[str]:
        return ["▁" + text[1:]]

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        return [7] * len(tokens)


def test_a_slow_tokenizer_that_does_not_align_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="do not line up"):
        token_offsets(_Slow(), ["a cat"])


def test_chatglm_weights_reach_the_pieces_of_their_span() -> None:
    pytest.importorskip("sentencepiece")
    pytest.importorskip("diffusers")
    from _tiny_llm2 import tiny_chatglm_tokenizer

    tok = tiny_chatglm_tokenizer()
    text = "a red cat, on a mat"
    ((ids, offsets),) = token_offsets(tok, [text])
    assert ids == tok([text], add_special_tokens=False)["input_ids"][0]
    pieces = tok.convert_ids_to_tokens(ids)
    # Each piece's characters, read back through its offsets, are the piece without its "▁".
    assert [text[a:b] for a, b in offsets] == [p.replace("▁", "") for p in pieces]
    # The tiny model's pieces, as its own tokenizer gives them.
    assert pieces == ["▁a", "▁", "re", "d", "▁", "c", "at", ",", "▁", "o", "n", "▁a", "▁mat"]
    layout = layout_for(tok, joined=True, length=24)
    spans = promptweights.weighted_spans("a (red:1.5) cat, [on] a mat")
    (chunk,) = tokenize(tok, spans, layout=layout).chunks
    assert list(chunk.ids[: chunk.size]) == ids
    down = pytest.approx(1 / 1.1)
    # "▁" before "re" has no character: it takes the next piece's span ("red").
    expected = [1.0, 1.5, 1.5, 1.5, 1.0, 1.0, 1.0, 1.0, down, down, down, 1.0, 1.0]
    assert list(chunk.weights[: chunk.size]) == expected
