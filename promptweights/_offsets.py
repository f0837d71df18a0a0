"""Character offsets of a text's tokens, for fast and slow (SentencePiece) tokenizers alike.

Weighted spans reach the tokens of a text tokenised whole through each token's character offsets
(:func:`promptweights.tokens.span_owners`). A fast tokenizer gives them (``offset_mapping``); a
slow SentencePiece tokenizer (ChatGLM3's, Kolors' text encoder) has none, so they are found here
by aligning its pieces with the text: SentencePiece's normaliser (NFKC, whitespace runs folded to
one ``▁``, a ``▁`` put in front) only rewrites characters, so the non-space characters of the
pieces, in order, are the NFKC forms of the text's non-space characters. A piece takes the
characters it matched (its ``▁`` is not counted: :func:`span_owners` does not count spaces
either); a piece of ``▁`` alone gets an empty offset, which ``span_owners`` gives its neighbour's
span. Byte-fallback pieces (``<0xE4>``) take the character their bytes belong to. A tokenizer whose
pieces cannot be aligned (a normaliser that drops or reorders characters) is refused, never
weighted at a guess.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from promptweights.errors import InvalidArgumentError

__all__ = ["piece_offsets", "token_offsets"]

_SPACE = "\u2581"  # SentencePiece's "▁"
_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_offsets(
    tokenizer: Any, texts: Sequence[str]
) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """The ids of each text tokenised whole (no special tokens) and each id's ``(start, end)``.

    Args:
        tokenizer: a fast Hugging Face tokenizer, or a slow one whose tokens are SentencePiece
            pieces (``tokenizer.tokenize`` returns ``▁``-marked pieces: ChatGLM's, T5's, Llama's).
        texts: the texts.

    Returns:
        Per text, its ids and one offset per id.

    Raises:
        InvalidArgumentError: a slow tokenizer whose pieces do not align with the text.
    """
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(
            list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [
            ([int(i) for i in ids], [(int(a), int(b)) for a, b in offsets])
            for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
        ]
    out = []
    for text in texts:
        pieces = [str(p) for p in tokenizer.tokenize(text)] if text else []
        ids = [int(i) for i in tokenizer.convert_tokens_to_ids(pieces)]
        offsets = piece_offsets(text, pieces)
        if offsets is None:
            excerpt = text if len(text) <= 40 else text[:37] + "..."
            raise InvalidArgumentError(
                f"{type(tokenizer).__name__} is a slow tokenizer whose pieces do not line up "
                f"with the text {excerpt!r}, so weights cannot be mapped to its tokens; use its "
                "fast tokenizer (offset_mapping) or write the prompt without weights"
            )
        out.append((ids, offsets))
    return out


def piece_offsets(text: str, pieces: Sequence[str]) -> list[tuple[int, int]] | None:
    """Align SentencePiece pieces with the text they came from.

    Args:
        text: the text as given to the tokenizer.
        pieces: its pieces, ``▁`` for a space.

    Returns:
        One ``(start, end)`` per piece (its non-space characters in ``text``; empty for a piece
        with none), or ``None`` when the pieces are not the text's characters in order.

    >>> piece_offsets("a red  cat", ["▁a", "▁re", "d", "▁", "cat"])
    [(0, 1), (2, 4), (4, 5), (7, 7), (7, 10)]
    """
    stream = _normalised(text)  # (character, index in text), spaces left out
    at = 0  # position in stream
    pending: list[int] = []  # bytes of a character spelled by byte-fallback pieces
    out: list[tuple[int, int]] = []
    for piece in pieces:
        byte = _BYTE.fullmatch(piece)
        if byte is not None:
            if at >= len(stream):
                return None
            pending.append(int(byte.group(1), 16))
            source = stream[at][1]
            out.append((source, source + 1))
            width = len(text[source].encode("utf-8", "surrogatepass"))
            if len(pending) >= width:
                pending = []
                at = _next_char(stream, at)
            continue
        start = end = None
        for char in piece.replace(_SPACE, ""):
            if at >= len(stream) or stream[at][0] != char:
                return None
            index = stream[at][1]
            start = index if start is None else start
            end = index + 1
            at += 1
        if start is None or end is None:
            next_index = stream[at][1] if at < len(stream) else len(text)
            out.append((next_index, next_index))
        else:
            out.append((start, end))
    return out if at == len(stream) and not pending else None


def _normalised(text: str) -> list[tuple[str, int]]:
    """The NFKC characters of ``text`` that are not spaces, each with its source index."""
    return [
        (out, index)
        for index, char in enumerate(text)
        for out in unicodedata.normalize("NFKC", char)
        if not out.isspace()
    ]


def _next_char(stream: list[tuple[str, int]], at: int) -> int:
    """The stream position after every normalised character of the source character at ``at``."""
    source = stream[at][1]
    while at < len(stream) and stream[at][1] == source:
        at += 1
    return at
