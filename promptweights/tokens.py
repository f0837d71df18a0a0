"""Tokenisation and A1111 75-token chunking of weighted spans, against any Hugging Face tokenizer.

The layer between the language (``weighted_spans``) and the tensors: it turns A1111's list of
``(text, weight)`` spans into rows of token ids with one weight per position, exactly as A1111's
``sd_hijack_clip`` does (``a1111-behaviour.md`` §7 and §9.2):

* every span is tokenised on its own, without special tokens;
* chunks hold 75 content tokens between BOS and EOS and are padded with the tokenizer's own pad id
  (CLIP-L pads with EOS, OpenCLIP-G with ``!``); nothing is hard-coded;
* when a chunk is full and a comma was seen within the last ``comma_backtrack`` (20) tokens, the
  text after the comma moves to the next chunk;
* the marker ``("BREAK", -1.0)`` closes the chunk (the weight must be exactly ``-1.0``);
* multi-vector textual-inversion placeholders are never split across chunks.

Tokenizers without a BOS token (T5) are not chunked: one window of the tokenizer's length, EOS once
after the text, then padding; longer text is truncated, as diffusers does.

**Joined layouts** (``Layout.joined``, what the diffusers adapter uses for T5 and umT5): the spans
are joined into the text the pipeline would tokenise, the text is tokenised once with a fast
tokenizer's ``offset_mapping`` (a slow SentencePiece tokenizer's pieces aligned with the text,
:mod:`promptweights._offsets`), and each token takes the weight of the span its characters come
from. A plain prompt therefore gives exactly the pipeline's ids, whatever the tokenizer (BPE or
SentencePiece), with no per-model rule. See :func:`span_owners` for a token that straddles spans.

Nothing here imports torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from promptweights._offsets import token_offsets
from promptweights.errors import InvalidArgumentError, InvalidWeightError, LimitExceededError
from promptweights.limits import MAX_WEIGHT

__all__ = [
    "BREAK",
    "Chunk",
    "Layout",
    "Span",
    "TextualInversion",
    "TokenizedPrompt",
    "Tokenizer",
    "check_weights",
    "diffusers_textual_inversions",
    "empty_chunk",
    "equalize",
    "layout_for",
    "span_owners",
    "span_position",
    "tokenize",
    "tokenize_many",
]

#: One weighted span, as ``promptweights.weighted_spans`` returns it.
Span = tuple[str, float]

#: The text of A1111's BREAK marker; it is a break only with a weight of exactly ``-1.0``.
BREAK = "BREAK"

#: Default chunk length for tokenizers that do not state a sensible ``model_max_length``.
_CLIP_LENGTH = 77
_T5_LENGTH = 512


class Tokenizer(Protocol):
    """What promptweights needs from a tokenizer: any Hugging Face tokenizer, slow or fast, fits."""

    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    model_max_length: int

    def __call__(self, text: list[str], **kwargs: Any) -> Mapping[str, Any]:
        """Tokenise a batch of texts; ``input_ids`` holds one list of ids per text."""
        ...


@dataclass(frozen=True, slots=True)
class Layout:
    """How one text-encoder window is laid out.

    Attributes:
        length: positions per window (77 for CLIP, the tokenizer's maximum for T5).
        bos: id put before the content, or ``None`` (T5).
        eos: id put right after the content, or ``None``.
        pad: id of every position after the first EOS.
        chunked: ``True`` to split long text into windows (CLIP), ``False`` to truncate (T5).
        comma: id of the single-comma token that comma back-tracking looks for, or ``None``.
        joined: tokenise each text whole and give tokens their span's weight through the fast
            tokenizer's ``offset_mapping`` (T5/umT5), instead of tokenising span by span (A1111's
            CLIP rule). ``chunked`` then cuts windows of ``capacity`` tokens (no comma
            back-tracking) and ``BREAK`` starts one; without ``chunked``, ``BREAK`` is dropped and
            counted in :attr:`TokenizedPrompt.breaks_ignored`.
        clean: the pipeline's own text clean-up, applied span by span before tokenising
            (a name of :data:`CLEANERS`: ``""`` none, ``"lower-strip"`` PixArt, ``"wan"`` Wan's
            ``prompt_clean``).
        template: a decoder LLM's chat template around the user's text, as ``(before, after)``
            (``None``: no template). A templated layout is joined and not chunked: the window is
            ``before + text + after`` tokenised whole, cut at ``length`` tokens (the pipeline's
            truncation), then padded with ``pad``; its tokens from ``before`` and ``after`` (and
            special tokens the tokenizer adds) have span ``-1`` and are never weighted.
        drop: templated only: template tokens the pipeline drops from the front of the encoding
            (Qwen-Image's ``prompt_template_encode_start_idx``).
        keep: templated only: positions the pipeline keeps after ``drop`` (its
            ``max_sequence_length`` where it cuts the encoding; ``None``: all).
        specials: templated only: tokenise with the tokenizer's own special tokens (a BOS the
            tokenizer adds), as a pipeline that calls ``tokenizer(text)`` gets them.
        pad_left: put the padding before the content, as a tokenizer with
            ``padding_side="left"`` does (ChatGLM3's, Gemma's): ``[PAD…] [BOS] content [EOS]``.
        prefix: ids the tokenizer puts before the content besides a BOS (ChatGLM3's
            ``[gMASK] sop``); never weighted.
    """

    length: int
    bos: int | None
    eos: int | None
    pad: int
    chunked: bool = True
    comma: int | None = None
    joined: bool = False
    clean: str = ""
    template: tuple[str, str] | None = None
    drop: int = 0
    keep: int | None = None
    specials: bool = False
    pad_left: bool = False
    prefix: tuple[int, ...] = ()

    @property
    def capacity(self) -> int:
        """Content tokens per window: 75 for CLIP, ``length - 1`` for T5.

        >>> Layout(length=77, bos=49406, eos=49407, pad=49407).capacity
        75
        """
        specials = (self.bos is not None) + (self.eos is not None) + len(self.prefix)
        return self.length - specials


@dataclass(frozen=True, slots=True)
class TextualInversion:
    """A textual-inversion embedding as the chunker sees it.

    Attributes:
        name: the name users type in prompts.
        trigger: the token ids the name tokenises to (what is matched in the text).
        vectors: the placeholder ids put in its place, one per embedding vector; the text encoder's
            embedding table holds the learned vectors at these ids (diffusers' convention).
    """

    name: str
    trigger: tuple[int, ...]
    vectors: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Chunk:
    """One text-encoder window.

    Attributes:
        ids: token ids, ``layout.length`` of them: ``[BOS] content [EOS] PAD…``.
        weights: one weight per position; BOS, EOS and padding have weight 1.0.
        fragments: for every position the index of the span it came from, ``-1`` for BOS/EOS/PAD.
        size: number of content tokens.
    """

    ids: tuple[int, ...]
    weights: tuple[float, ...]
    fragments: tuple[int, ...]
    size: int

    @property
    def weighted(self) -> bool:
        """Whether any position has a weight other than 1."""
        return any(w != 1.0 for w in self.weights)


@dataclass(frozen=True, slots=True)
class TokenizedPrompt:
    """A text turned into windows.

    Attributes:
        chunks: the windows, at least one.
        token_count: what A1111's token counter shows (75 per closed chunk + the last chunk's size).
        truncated: content tokens dropped because the layout is not chunked (T5).
        layout: the layout the chunks follow.
        breaks_ignored: ``BREAK`` markers dropped because the layout is joined and not chunked.
    """

    chunks: tuple[Chunk, ...]
    token_count: int
    layout: Layout
    truncated: int = 0
    breaks_ignored: int = 0


def layout_for(
    tokenizer: Tokenizer,
    *,
    length: int | None = None,
    chunked: bool | None = None,
    joined: bool = False,
    clean: str = "",
    template: tuple[str, str] | None = None,
    drop: int = 0,
    keep: int | None = None,
    specials: bool = False,
) -> Layout:
    """Return the window layout of ``tokenizer``.

    A tokenizer with a BOS token (CLIP) gets 77-position chunks; one without (T5) gets a single
    window of its ``model_max_length`` (pass ``length`` to choose another, e.g. 256 for SD3).

    Args:
        tokenizer: a Hugging Face tokenizer.
        length: positions per window; defaults to the tokenizer's ``model_max_length``.
        chunked: force chunking on or off instead of deciding from the BOS token.
        joined: tokenise texts whole and map spans through offsets (see :class:`Layout`).
        clean: the pipeline's text clean-up, a name of :data:`CLEANERS`.
        template: a decoder LLM's ``(before, after)`` around the text: a joined, unchunked window
            without BOS/EOS of its own (the template holds them); see :class:`Layout`.
        drop: template tokens the pipeline drops from the front (see :class:`Layout`).
        keep: positions the pipeline keeps after ``drop`` (see :class:`Layout`).
        specials: tokenise a templated text with the tokenizer's special tokens.

    Returns:
        The layout, with pad id and comma id read from the tokenizer.
    """
    bos = tokenizer.bos_token_id
    eos = tokenizer.eos_token_id
    if template is not None:
        bos, eos, chunked, joined = None, None, False, True
    is_chunked = bos is not None if chunked is None else chunked
    if length is None:
        max_length = int(tokenizer.model_max_length)
        default = _CLIP_LENGTH if is_chunked else _T5_LENGTH
        length = max_length if 0 < max_length <= 100_000 else default
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = eos if eos is not None else 0
    comma_ids = tokenizer([","], add_special_tokens=False)["input_ids"][0]
    comma = int(comma_ids[0]) if len(comma_ids) == 1 else None
    if clean not in CLEANERS:
        raise InvalidArgumentError(f"unknown text clean-up {clean!r}; known: {sorted(CLEANERS)}")
    return Layout(
        length=length,
        bos=bos,
        eos=eos,
        pad=pad,
        chunked=is_chunked,
        comma=comma,
        joined=joined,
        clean=clean,
        template=template,
        drop=drop,
        keep=keep,
        specials=specials,
    )


def diffusers_textual_inversions(tokenizer: Tokenizer) -> tuple[TextualInversion, ...]:
    """Return the textual inversions diffusers' ``load_textual_inversion`` added to ``tokenizer``.

    diffusers adds one token per vector (``name``, ``name_1``, ``name_2``…) and rewrites prompts
    itself; promptweights matches ``name`` and inserts all of them, never split across chunks.

    Args:
        tokenizer: a Hugging Face tokenizer with ``get_added_vocab``.

    Returns:
        One :class:`TextualInversion` per added name.
    """
    get_added_vocab = getattr(tokenizer, "get_added_vocab", None)
    if get_added_vocab is None:
        return ()
    added: dict[str, int] = dict(get_added_vocab())
    special = set(getattr(tokenizer, "all_special_ids", ()))
    result = []
    for name, first in added.items():
        if first in special or _is_vector_suffix(name, added):
            continue
        vectors = [first]
        while f"{name}_{len(vectors)}" in added:
            vectors.append(added[f"{name}_{len(vectors)}"])
        trigger = tokenizer([name], add_special_tokens=False)["input_ids"][0]
        result.append(TextualInversion(name, tuple(trigger), tuple(vectors)))
    return tuple(result)


def _is_vector_suffix(name: str, added: Mapping[str, int]) -> bool:
    base, sep, number = name.rpartition("_")
    return bool(sep) and number.isdigit() and base in added


def check_weights(spans: Iterable[Span], *, source: str | None = None) -> None:
    """Raise :class:`InvalidWeightError` if a span weight is NaN, infinite, or larger than
    :data:`~promptweights.limits.MAX_WEIGHT` in absolute value.

    Args:
        spans: weighted spans.
        source: the text the spans were read from; the error then gives the span's position in
            it, with a caret excerpt.

    Raises:
        InvalidWeightError: naming the first bad span.

    >>> check_weights([("a ", 1.0), ("cat", 0.0), ("dog", -1.5), ("fox", 1e20)])
    >>> check_weights([("a ", 1.0), ("cat", float("nan"))])
    Traceback (most recent call last):
    ...
    promptweights.errors.InvalidWeightError: prompt weight nan of 'cat' is not a finite number; ...
    """
    spans = list(spans)
    for index, (text, weight) in enumerate(spans):
        if math.isfinite(weight) and abs(weight) <= MAX_WEIGHT:
            continue
        what = (
            "is not a finite number; weights must be finite"
            if not math.isfinite(weight)
            else f"is past the bound of ±{MAX_WEIGHT:g} (promptweights.limits.MAX_WEIGHT); "
            "nested weights multiply"
        )
        raise InvalidWeightError(
            f"prompt weight {weight!r} of {_excerpt(text)} {what} "
            "(0 and negative weights are allowed)",
            source=source,
            pos=None if source is None else span_position(source, spans, index),
        )


def _excerpt(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")


_WORD_RE = re.compile(r"[^\s()\[\]{}\\:|]+")


def span_position(source: str, spans: Sequence[Span], index: int) -> int | None:
    """Where span ``index`` of ``spans`` starts in ``source``, the text they were read from.

    Spans hold text without brackets, escapes and weights, so each is found by its first word,
    searching forward from where the one before it was found. Returns None when a span cannot be
    found (an empty span, or a text the spans were not read from).

    >>> span_position("a (red:1.5) cat", [("a ", 1.0), ("red", 1.5), (" cat", 1.0)], 1)
    3
    """
    cursor = 0
    found: int | None = None
    for text, _ in spans[: index + 1]:
        word = _WORD_RE.search(text)
        if word is None:
            found = None
            continue
        at = source.find(word.group(), cursor)
        if at < 0:
            found = None
            continue
        found = at
        cursor = at + len(word.group())
    return found


def tokenize(
    tokenizer: Tokenizer,
    spans: Sequence[Span],
    *,
    layout: Layout | None = None,
    comma_backtrack: int = 20,
    textual_inversions: Iterable[TextualInversion] = (),
    max_chunks: int | None = None,
) -> TokenizedPrompt:
    """Tokenise weighted spans and cut them into windows as A1111 does.

    Args:
        tokenizer: a Hugging Face tokenizer (slow or fast, CLIP or T5).
        spans: A1111 weighted spans, e.g. ``[("a ", 1.0), ("cat", 1.1)]``; ``("BREAK", -1.0)``
            starts a new chunk.
        layout: window layout; defaults to :func:`layout_for` the tokenizer.
        comma_backtrack: A1111's ``comma_padding_backtrack`` (0 switches it off).
        textual_inversions: embeddings to match in the text.
        max_chunks: the most windows the text may fill (None: no cap).

    Returns:
        The chunks with per-position weights and span indices.

    Raises:
        InvalidWeightError: if a weight is NaN or infinite.
        LimitExceededError: the text needs more than ``max_chunks`` windows; raised as the
            window past the cap opens, so memory stays bounded by the cap.
    """
    return tokenize_many(
        tokenizer,
        [spans],
        layout=layout,
        comma_backtrack=comma_backtrack,
        textual_inversions=textual_inversions,
        max_chunks=max_chunks,
    )[0]


def tokenize_many(
    tokenizer: Tokenizer,
    texts: Sequence[Sequence[Span]],
    *,
    layout: Layout | None = None,
    comma_backtrack: int = 20,
    textual_inversions: Iterable[TextualInversion] = (),
    max_chunks: int | None = None,
) -> list[TokenizedPrompt]:
    """Like :func:`tokenize` for many span lists, with one tokenizer call for all of them.

    Args:
        tokenizer: a Hugging Face tokenizer.
        texts: one span list per text.
        layout: window layout; defaults to :func:`layout_for` the tokenizer.
        comma_backtrack: A1111's ``comma_padding_backtrack``.
        textual_inversions: embeddings to match in the text.
        max_chunks: the most windows each text may fill (None: no cap).

    Returns:
        One :class:`TokenizedPrompt` per span list, in order.

    Raises:
        InvalidWeightError: if a weight is NaN or infinite.
        LimitExceededError: a text needs more than ``max_chunks`` windows.

    Lone surrogates in the text are tokenized as U+FFFD (the replacement character).
    """
    for spans in texts:
        check_weights(spans)
    if not 0 <= comma_backtrack < 75:
        raise InvalidArgumentError(f"comma_backtrack must be in 0..74, got {comma_backtrack}")
    if layout is None:
        layout = layout_for(tokenizer)
    if layout.joined:
        return [_joined(tokenizer, spans, layout, max_chunks) for spans in texts]
    lookup = _ti_lookup(textual_inversions)
    flat = [_encodable(text) for spans in texts for text, _ in spans]
    ids: list[list[int]] = (
        # verbose=False: long text is what chunking is for, not worth the "longer than" warning.
        [
            list(map(int, row))
            for row in tokenizer(flat, add_special_tokens=False, verbose=False)["input_ids"]
        ]
        if flat
        else []
    )
    result = []
    start = 0
    for spans in texts:
        pieces = ids[start : start + len(spans)]
        start += len(spans)
        if layout.chunked:
            result.append(_chunk(spans, pieces, layout, comma_backtrack, lookup, max_chunks))
        else:
            result.append(_window(spans, pieces, layout, lookup))
    return result


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _encodable(text: str) -> str:
    """Lone surrogates (from text decoded with ``surrogateescape``; UTF-8 cannot carry them)
    become U+FFFD, which tokenizers take; A1111's tokenizer raises ``UnicodeEncodeError``."""
    return _SURROGATE_RE.sub("\ufffd", text) if _SURROGATE_RE.search(text) else text


def _ti_lookup(
    textual_inversions: Iterable[TextualInversion],
) -> dict[int, list[TextualInversion]]:
    lookup: dict[int, list[TextualInversion]] = {}
    for ti in textual_inversions:
        if ti.trigger and ti.vectors:
            lookup.setdefault(ti.trigger[0], []).append(ti)
    for candidates in lookup.values():
        # A1111 tries the longest name first (§9.2).
        candidates.sort(key=lambda ti: len(ti.trigger), reverse=True)
    return lookup


def _find_ti(
    tokens: list[int], position: int, lookup: Mapping[int, list[TextualInversion]]
) -> TextualInversion | None:
    for ti in lookup.get(tokens[position], ()):
        if tuple(tokens[position : position + len(ti.trigger)]) == ti.trigger:
            return ti
    return None


def _is_break(text: str, weight: float) -> bool:
    return text == BREAK and weight == -1.0


@dataclass(slots=True)
class _Open:
    """The chunk being filled."""

    ids: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    fragments: list[int] = field(default_factory=list)


def _close(current: _Open, layout: Layout) -> Chunk:
    size = len(current.ids)
    pad = layout.capacity - size
    ids: list[int] = []
    weights: list[float] = []
    fragments: list[int] = []
    if layout.bos is not None:
        ids.append(layout.bos)
        weights.append(1.0)
        fragments.append(-1)
    ids += layout.prefix
    weights += [1.0] * len(layout.prefix)
    fragments += [-1] * len(layout.prefix)
    ids += current.ids
    weights += current.weights
    fragments += current.fragments
    if layout.eos is not None:
        ids.append(layout.eos)
        weights.append(1.0)
        fragments.append(-1)
    if layout.pad_left:
        ids = [layout.pad] * pad + ids
        weights = [1.0] * pad + weights
        fragments = [-1] * pad + fragments
    else:
        ids += [layout.pad] * pad
        weights += [1.0] * pad
        fragments += [-1] * pad
    return Chunk(tuple(ids), tuple(weights), tuple(fragments), size)


def _chunk(
    spans: Sequence[Span],
    pieces: list[list[int]],
    layout: Layout,
    comma_backtrack: int,
    lookup: Mapping[int, list[TextualInversion]],
    max_chunks: int | None = None,
) -> TokenizedPrompt:
    # A transcription of A1111's FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line (§7 step 2).
    capacity = layout.capacity
    chunks: list[Chunk] = []
    current = _Open()
    last_comma = -1
    token_count = 0

    def next_chunk(is_last: bool = False) -> None:
        nonlocal current, last_comma, token_count
        if max_chunks is not None and len(chunks) >= max_chunks:
            raise LimitExceededError(
                f"a text needs more than {max_chunks} windows of {layout.length} tokens "
                f"(BREAK and every {capacity} tokens start one); the limit is {max_chunks} "
                "(max_chunks)"
            )
        token_count += len(current.ids) if is_last else capacity
        chunks.append(_close(current, layout))
        current = _Open()
        last_comma = -1

    for index, ((text, weight), tokens) in enumerate(zip(spans, pieces, strict=True)):
        if _is_break(text, weight):
            next_chunk()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == layout.comma:
                last_comma = len(current.ids)
            elif (
                comma_backtrack != 0
                and len(current.ids) == capacity
                and last_comma != -1
                and len(current.ids) - last_comma <= comma_backtrack
            ):
                cut = last_comma + 1
                moved = _Open(current.ids[cut:], current.weights[cut:], current.fragments[cut:])
                del current.ids[cut:], current.weights[cut:], current.fragments[cut:]
                next_chunk()
                current = moved
            if len(current.ids) == capacity:
                next_chunk()
            ti = _find_ti(tokens, position, lookup) if lookup else None
            if ti is None:
                current.ids.append(token)
                current.weights.append(weight)
                current.fragments.append(index)
                position += 1
                continue
            if len(current.ids) + len(ti.vectors) > capacity:
                next_chunk()
            current.ids += ti.vectors
            current.weights += [weight] * len(ti.vectors)
            current.fragments += [index] * len(ti.vectors)
            position += len(ti.trigger)
    if current.ids or not chunks:
        next_chunk(is_last=True)
    return TokenizedPrompt(tuple(chunks), token_count, layout)


def _window(
    spans: Sequence[Span],
    pieces: list[list[int]],
    layout: Layout,
    lookup: Mapping[int, list[TextualInversion]],
) -> TokenizedPrompt:
    # T5-style: one window, EOS once after the text; BREAK means nothing without chunks (dropped).
    # Text past the window is cut, as diffusers does, but never inside a textual-inversion run.
    current = _Open()
    total = 0
    for index, ((text, weight), tokens) in enumerate(zip(spans, pieces, strict=True)):
        if _is_break(text, weight):
            continue
        position = 0
        while position < len(tokens):
            ti = _find_ti(tokens, position, lookup) if lookup else None
            atom = [tokens[position]] if ti is None else list(ti.vectors)
            position += 1 if ti is None else len(ti.trigger)
            total += len(atom)
            if len(current.ids) + len(atom) > layout.capacity:
                continue
            current.ids += atom
            current.weights += [weight] * len(atom)
            current.fragments += [index] * len(atom)
    kept = len(current.ids)
    return TokenizedPrompt((_close(current, layout),), kept, layout, truncated=total - kept)


def empty_chunk(layout: Layout) -> Chunk:
    """Return the window of the empty prompt: ``[BOS, EOS, PAD…]``, every weight 1."""
    return _close(_Open(), layout)


def equalize(*prompts: TokenizedPrompt) -> tuple[TokenizedPrompt, ...]:
    """Pad prompts with empty chunks so that all have the same number of chunks.

    This is what A1111 does for the texts of one batch (§7) and for cond/uncond of different lengths
    (its "pad prompt/negative prompt" option), and what diffusers pipelines need.

    Args:
        *prompts: tokenised prompts with the same layout.

    Returns:
        The prompts, the shorter ones extended with :func:`empty_chunk` windows.

    Raises:
        ValueError: if the prompts have different layouts.
    """
    if not prompts:
        return ()
    layouts = {p.layout for p in prompts}
    if len(layouts) != 1:
        raise InvalidArgumentError("cannot equalise prompts tokenised with different layouts")
    count = max(len(p.chunks) for p in prompts)
    empty = empty_chunk(prompts[0].layout)
    return tuple(
        TokenizedPrompt(
            p.chunks + (empty,) * (count - len(p.chunks)),
            p.token_count,
            p.layout,
            p.truncated,
            p.breaks_ignored,
        )
        for p in prompts
    )


# --- joined layouts (T5, umT5): one text, spans mapped through offset_mapping ------------------


def _lower(text: str) -> str:
    return text.lower()


def _wan_basic(text: str) -> str:
    """Wan's ``basic_clean`` without its final strip (done on the joined text): ftfy when
    installed, as diffusers does, then HTML entities unescaped twice."""
    import html

    try:
        import ftfy  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        pass
    else:
        text = str(ftfy.fix_text(text))
    return html.unescape(html.unescape(text))


#: Text clean-ups of pipelines, by name: ``(per span, collapse whitespace runs, strip)``.
CLEANERS: dict[str, tuple[Any, bool, bool]] = {
    "": (None, False, False),
    # PixArt's _text_preprocessing with clean_caption off: lower().strip().
    "lower-strip": (_lower, False, True),
    # Wan's prompt_clean: basic_clean, then whitespace runs to one space, stripped.
    "wan": (_wan_basic, True, True),
}


def _clean_spans(text_spans: Sequence[tuple[str, int]], clean: str) -> tuple[str, list[int]]:
    """The joined text of ``(text, span index)`` pieces after the clean-up, with the span index of
    every character (per-span steps run on each piece; whitespace steps on the joined text)."""
    per_span, collapse, strip = CLEANERS[clean]
    chars: list[str] = []
    owners: list[int] = []
    for text, index in text_spans:
        text = _encodable(per_span(text) if per_span is not None else text)
        chars += text
        owners += [index] * len(text)
    if collapse:
        kept_chars: list[str] = []
        kept_owners: list[int] = []
        for char, owner in zip(chars, owners, strict=True):
            if char.isspace():
                if kept_chars and kept_chars[-1] == " ":
                    continue
                char = " "
            kept_chars.append(char)
            kept_owners.append(owner)
        chars, owners = kept_chars, kept_owners
    if strip:
        start, end = 0, len(chars)
        while start < end and chars[start].isspace():
            start += 1
        while end > start and chars[end - 1].isspace():
            end -= 1
        chars, owners = chars[start:end], owners[start:end]
    return "".join(chars), owners


def span_owners(offsets: Sequence[tuple[int, int]], owners: Sequence[int], text: str) -> list[int]:
    """The span each token comes from, given its character offsets in the joined ``text``.

    A token takes the span that holds most of its non-space characters (the earliest on a tie):
    a SentencePiece ``▁word`` whose space belongs to the span before is still the word's. A token
    of spaces only takes the span of its characters; a token without characters (an empty offset)
    takes its neighbour's, the next one's first.

    Args:
        offsets: ``(start, end)`` per token, as a fast tokenizer's ``offset_mapping`` gives them.
        owners: the span index of every character of ``text``.
        text: the text that was tokenised.

    Returns:
        One span index per token (``-1`` only when ``text`` is empty).

    >>> span_owners([(0, 1), (1, 5), (6, 9)], [0, 0, 1, 1, 1, 2, 2, 2, 2], "a cat dog")
    [0, 1, 2]
    """
    found: list[int | None] = []
    for start, end in offsets:
        start, end = max(0, start), min(end, len(owners))
        if start >= end:
            found.append(None)
            continue
        counts: dict[int, int] = {}
        for at in range(start, end):
            if not text[at].isspace():
                counts[owners[at]] = counts.get(owners[at], 0) + 1
        if not counts:
            for at in range(start, end):
                counts[owners[at]] = counts.get(owners[at], 0) + 1
        best = max(counts.values())
        found.append(min(owner for owner, count in counts.items() if count == best))
    result: list[int] = []
    fallback = owners[-1] if owners else -1
    for i, owner in enumerate(found):
        if owner is None:
            later = next((o for o in found[i + 1 :] if o is not None), None)
            owner = later if later is not None else (result[-1] if result else fallback)
        result.append(owner)
    return result


def _segments(spans: Sequence[Span], layout: Layout) -> tuple[list[tuple[str, list[int]]], int]:
    """The cleaned texts of a joined layout (one per ``BREAK`` when chunked, else one), with the
    span index of each character, and the count of ``BREAK`` markers."""
    segments: list[list[tuple[str, int]]] = [[]]
    breaks = 0
    pending = False  # a dropped BREAK still separates the words around it
    for index, (text, weight) in enumerate(spans):
        if _is_break(text, weight):
            breaks += 1
            if layout.chunked:
                segments.append([])
            else:
                pending = True
            continue
        segment = segments[-1]
        if pending and text and segment and not (text[0].isspace() or _ends_in_space(segment)):
            text = " " + text
        pending = pending and not text
        segment.append((text, index))
    return [_clean_spans(segment, layout.clean) for segment in segments], breaks


def _need_fast(tokenizer: Tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidArgumentError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: mapping weighted spans to its "
            "tokens needs offset_mapping (load the tokenizer with use_fast=True)"
        )


def _joined(
    tokenizer: Tokenizer, spans: Sequence[Span], layout: Layout, max_chunks: int | None
) -> TokenizedPrompt:
    """One text on a joined layout: segments (split at ``BREAK`` when chunked) tokenised whole."""
    cleaned, breaks = _segments(spans, layout)
    if layout.template is not None:
        _need_fast(tokenizer)
        return _templated(tokenizer, cleaned[0], [w for _, w in spans], layout, breaks)
    texts = [text for text, _ in cleaned]
    # A fast tokenizer's offset_mapping, or a slow SentencePiece one's pieces aligned.
    encoded = token_offsets(tokenizer, texts)
    weights = [w for _, w in spans]
    pieces: list[list[tuple[int, int]]] = []  # per segment: (id, span index)
    for (text, owners), (ids, offsets) in zip(cleaned, encoded, strict=True):
        found = span_owners(offsets, owners, text)
        pieces.append([(t, o) for t, o in zip(ids, found, strict=True)])
    if not layout.chunked:
        tokens = pieces[0]
        kept = tokens[: layout.capacity]
        chunk = _close(_from_pieces(kept, weights), layout)
        return TokenizedPrompt(
            (chunk,), len(kept), layout, truncated=len(tokens) - len(kept), breaks_ignored=breaks
        )
    chunks: list[Chunk] = []
    for tokens in pieces:
        for at in range(0, max(len(tokens), 1), layout.capacity):
            if max_chunks is not None and len(chunks) >= max_chunks:
                raise LimitExceededError(
                    f"a text needs more than {max_chunks} windows of {layout.length} tokens "
                    f"(BREAK and every {layout.capacity} tokens start one); the limit is "
                    f"{max_chunks} (max_chunks)"
                )
            part = tokens[at : at + layout.capacity]
            chunks.append(_close(_from_pieces(part, weights), layout))
    count = sum(len(tokens) for tokens in pieces)
    return TokenizedPrompt(tuple(chunks), count, layout)


def _templated(
    tokenizer: Tokenizer,
    cleaned: tuple[str, list[int]],
    weights: Sequence[float],
    layout: Layout,
    breaks: int,
) -> TokenizedPrompt:
    """A decoder LLM's window: ``before + text + after`` tokenised whole, as the pipeline does.

    Template characters have span ``-1``; a token takes the span of most of its characters
    (:func:`span_owners`), so a token holding as many template characters as text characters, or
    a special token without characters, is the template's and never weighted. The window is cut
    at ``layout.length`` tokens; text tokens past it, or past ``drop + keep``, are counted in
    ``truncated`` (the pipeline drops them).
    """
    assert layout.template is not None
    before, after = layout.template
    text, owners = cleaned
    full = before + text + after
    every = [-1] * len(before) + owners + [-1] * len(after)
    encoded = tokenizer(
        [full], add_special_tokens=layout.specials, return_offsets_mapping=True, verbose=False
    )
    offsets = [tuple(o) for o in encoded["offset_mapping"][0]]
    found = span_owners(offsets, every, full) if full else [-1] * len(offsets)
    found = [o if start < end else -1 for o, (start, end) in zip(found, offsets, strict=True)]
    tokens = [(int(t), o) for t, o in zip(encoded["input_ids"][0], found, strict=True)]
    kept = tokens[: layout.length]
    read = len(kept) if layout.keep is None else min(len(kept), layout.drop + layout.keep)
    dropped = sum(o >= 0 for _, o in tokens[read:])
    counted = sum(o >= 0 for _, o in tokens[:read])
    chunk = _close(_from_pieces(kept, weights), layout)
    return TokenizedPrompt((chunk,), counted, layout, truncated=dropped, breaks_ignored=breaks)


def _ends_in_space(segment: list[tuple[str, int]]) -> bool:
    last = next((text for text, _ in reversed(segment) if text), "")
    return not last or last[-1].isspace()


def _from_pieces(tokens: Sequence[tuple[int, int]], weights: Sequence[float]) -> _Open:
    return _Open(
        [t for t, _ in tokens],
        [weights[o] if o >= 0 else 1.0 for _, o in tokens],
        [o for _, o in tokens],
    )
