"""``convert``: a prompt from one dialect to another, with the same effective weight per word.

A prompt is read into its parts (``AND`` / ``.and()``), each a list of weighted spans as its own
dialect computes them, with ``BREAK`` markers, and its LoRAs; each part is then written in the
target dialect by that target's :class:`Writer`, a record of how it spells a weight, escapes its
syntax characters and which constructs it has. What a target cannot express (A1111's prompt
editing in compel, ``AND`` in ComfyUI, a negative weight in compel…) is kept as close as the
target allows and reported as a :class:`~promptweights.errors.Diagnostic`, whose ``pos`` points
at the construct in the source text (the first word of a weighted span, the ``[`` of a prompt
edit, the ``AND``, the ``BREAK``, the tag, the ``.and(`` / ``.blend`` call; comments and extra
networks cut out before reading are counted back in), so ``strict=True`` raises a
:class:`~promptweights.errors.PromptSyntaxError` with a caret under it.

NovelAI is written as its users write it: ``{x}`` / ``[x]`` where up to five braces give the weight
(``(x:1.05)`` is ``{x}``, ``(x:1.1025)`` is ``{{x}}``), V4's numeric weights everywhere else
(``(x:1.2)`` is ``1.2::x::``, ``(x:-1)`` is ``-1::x::``), with the shortest decimal within 1e-12
of the weight (``((x))`` is ``1.21::x::``). A number or colon ending a section gets a space before
the closing ``::`` (``5 ::``), which would otherwise read it as an opener; only a text holding
``::`` itself, or a weight that is not finite, cannot be written.

Every conversion is checked: the result is read back in the target dialect and compared word by
word (words and single punctuation marks, as a tokenizer splits them) with the source; a weight
that differs by more than 1e-6 is reported as an ``inexact`` diagnostic. So wherever
:attr:`Conversion.diagnostics` is empty, the target text weighs every word as the source does.

>>> convert("a (red:1.2) cat", "a1111", "compel").text
'a (red)1.2 cat'
>>> convert("a (red)1.2 cat++", "compel", "a1111").text
'a (red:1.2) (cat:1.2100000000000002)'
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ._arguments import check_text
from .dialects import get
from .errors import Diagnostic, UnknownNameError
from .networks import extra_networks_with_map, strip_comments_with_map
from .parsing import parse
from .render import render_nodes
from .routing import OPENER
from .schedules import schedules, split_and_with_tails
from .spans import weighted_spans
from .tree import Alternation, Blend, Conjunction, Edit, Lora, Node, PerEncoder, Swap

__all__ = ["WRITERS", "Conversion", "Writer", "convert"]

Span = tuple[str, float]
_BREAK = ("BREAK", -1.0)
_TOLERANCE = 1e-6


@functools.cache
def _word_re() -> re.Pattern[str]:
    """Words and single punctuation marks, as a tokenizer splits them (compiled on first use,
    not at import)."""
    return re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True, slots=True)
class Conversion:
    """What :func:`convert` returns.

    Attributes:
        text: the prompt in the target dialect.
        diagnostics: one per construct the target cannot express exactly, ``pos`` in the source
            text; empty when every word weighs the same in both.
    """

    text: str
    diagnostics: tuple[Diagnostic, ...] = ()

    def __str__(self) -> str:
        return self.text


@dataclass(slots=True)
class _Swap:
    """A compel ``.swap()``: the original's and the replacement's spans, with their positions."""

    original: list[Span]
    original_at: list[int]
    replacement: list[Span]
    replacement_at: list[int]
    when: float


@dataclass(slots=True)
class _Part:
    """One AND part of the source: its weight and spans (``("BREAK", -1.0)`` for BREAK).

    ``at`` holds each span's position in the source text (its first word), ``pos`` the part's
    own (its ``AND``, or the weight of a lone weighted part).
    """

    spans: list[Span]
    weight: float = 1.0
    swaps: list[_Swap] = field(default_factory=list)
    at: list[int] = field(default_factory=list)
    pos: int = 0


@dataclass(slots=True)
class _Read:
    parts: list[_Part]
    loras: list[tuple[str, float, float, int]]  # name, text-encoder and UNet weight, position
    diagnostics: list[Diagnostic]


class _Locator:
    """Each span's position in the source: a forward search for its words.

    Spans come in source order (the words of a scheduled part's first step, of compel's
    fragments, appear in the source in the order they are read), so each word is looked for after
    the last one found. ``to_source`` maps offsets of ``text`` (comments and extra networks cut
    out) back to the user's text.
    """

    def __init__(self, text: str, to_source: Callable[[int], int] | None = None) -> None:
        self.text = text
        self.cursor = 0
        self.to_source = to_source or (lambda pos: pos)

    def locate(self, span_text: str) -> int:
        """The source position of the first word of ``span_text``; the cursor moves past it."""
        first = -1
        for word in _word_re().findall(span_text):
            found = self.text.find(word, self.cursor)
            if found < 0:
                continue
            if first < 0:
                first = found
            self.cursor = found + len(word)
        return self.to_source(self.cursor if first < 0 else first)

    def spans(self, spans: list[Span]) -> list[int]:
        return [self.locate(text) for text, _ in spans]


# --- writers: how each target spells things ------------------------------------------------------


def _plain_decimal(value: float) -> str:
    """``value`` with digits and a dot only, read back by ``float()`` as the same number."""
    text = repr(float(value))
    return format(Decimal(text), "f") if "e" in text or "E" in text else text


def _escape(text: str, chars: str) -> str:
    return "".join("\\" + c if c in chars else c for c in text)


def _a1111_weight(text: str, weight: float) -> str | None:
    return f"({text}:{_plain_decimal(weight)})"


def _comfy_weight(text: str, weight: float) -> str | None:
    return f"({text}:{weight!r})"


def _compel_weight(text: str, weight: float) -> str | None:
    if weight < 0:
        return None  # compel's numbers have no sign
    return f"({text}){_plain_decimal(weight)}"


def _short_decimal(value: float) -> str:
    """The shortest plain decimal within 1e-12 relative (at most 1e-9) of ``value``: ``1.21``
    for A1111's ``((x))`` (1.2100000000000002), ``2`` for 2.0 — as NovelAI users write weights."""
    for digits in range(1, 18):
        text = _plain_decimal(float(f"{value:.{digits}g}"))
        if abs(float(text) - value) <= 1e-12 * min(max(1.0, abs(value)), 1000.0):
            return text.removesuffix(".0")
    return _plain_decimal(value)


#: NovelAI's brace factor, and the most braces :func:`_novelai_weight` writes.
_BRACE, _MAX_BRACES = 1.05, 5


def _novelai_weight(text: str, weight: float) -> str | None:
    """``{x}``/``[x]`` where up to five of them give ``weight`` (to 1e-9 relative, the float
    products NovelAI computes), else V4's numeric ``weight::x::``, which writes any weight (to
    1e-12: :func:`_short_decimal`).

    A number or a colon at the end of a section would be read as an opener or as part of the
    closing ``::``, so a space ends such a text; a text holding ``::`` cannot be a section (None).
    """
    if weight > 0:
        n = round(math.log(weight) / math.log(_BRACE))
        if 0 < abs(n) <= _MAX_BRACES and math.isclose(_BRACE**n, weight, rel_tol=1e-9):
            opener, closer = ("{", "}") if n > 0 else ("[", "]")
            return opener * abs(n) + text + closer * abs(n)
    if "::" in text:
        return None
    number = _short_decimal(weight)
    if text[-1:].isdigit() or text[-1:] in ":.+-":
        text += " "
    return f"{number}::{text}::"


@dataclass(frozen=True, slots=True)
class Writer:
    """How a target dialect writes a prompt (one record per dialect in :data:`WRITERS`).

    Attributes:
        escape: the characters written with a backslash before them in plain text.
        weight: ``(escaped text, weight) -> text`` for a weight other than 1, or None where the
            target cannot write that weight (an approximation may still be returned, see
            ``nearest``).
        nearest: whether ``weight`` may round: the result is then read back and reported (a
            ``weight`` diagnostic) where it differs by more than 1e-6. NovelAI's writer keeps it
            on as a check, though its braces and numeric weights are exact.
        breaks: how ``BREAK`` is written, or None where the target has none.
        conjunction: ``(parts, weights) -> text`` for several AND parts, or None.
        lora: ``(name, te, unet) -> text`` for a LoRA tag, or None.
        edit: ``(before, after, when) -> text`` for a prompt edit, or None.
    """

    escape: str
    weight: Callable[[str, float], str | None]
    nearest: bool = False
    breaks: str | None = None
    conjunction: Callable[[list[str], list[float]], str] | None = None
    lora: Callable[[str, float, float], str | None] | None = None
    edit: Callable[[str, str, float], str] | None = None


def _a1111_and(parts: list[str], weights: list[float]) -> str:
    return " AND ".join(
        part if weight == 1.0 else f"{part} :{_plain_decimal(weight)}"
        for part, weight in zip(parts, weights, strict=True)
    )


def _a1111_lora(name: str, te: float, unet: float) -> str | None:
    if re.search(r"[<>:]", name):
        return None
    if te == unet:
        return f"<lora:{name}:{_plain_decimal(te)}>"
    return f"<lora:{name}:{_plain_decimal(te)}:{_plain_decimal(unet)}>"


def _compel_and(parts: list[str], weights: list[float]) -> str:
    quoted = ", ".join('"' + part.replace('"', '\\"') + '"' for part in parts)
    return f"({quoted}).and({', '.join(_plain_decimal(w) for w in weights)})"


def _compel_lora(name: str, te: float, unet: float) -> str | None:
    if te != unet or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        return None
    return f"withLora({name}, {_plain_decimal(te)})"


def _a1111_edit(before: str, after: str, when: float) -> str:
    return f"[{before}:{after}:{_plain_decimal(when)}]"


#: Each target dialect's :class:`Writer`.
WRITERS: dict[str, Writer] = {
    "a1111": Writer(
        escape="\\()[]|",
        weight=_a1111_weight,
        breaks=" BREAK ",
        conjunction=_a1111_and,
        lora=_a1111_lora,
        edit=_a1111_edit,
    ),
    "comfy": Writer(escape="()", weight=_comfy_weight),
    "novelai": Writer(escape="\\{}[]", weight=_novelai_weight, nearest=True),
    "compel": Writer(
        escape='()"', weight=_compel_weight, conjunction=_compel_and, lora=_compel_lora
    ),
}


# --- reading the source --------------------------------------------------------------------------


def _diagnostic(kind: str, message: str, pos: int) -> Diagnostic:
    return Diagnostic(kind, message, max(pos, 0))


def _read_a1111(text: str) -> _Read:
    prompt = parse(text)
    stripped, uncomment = strip_comments_with_map(text)
    body, found, unnet = extra_networks_with_map(stripped)

    def to_source(pos: int) -> int:
        return uncomment(unnet(pos))

    loras = []
    diagnostics = []
    for network, _ in found:
        where = uncomment(network.pos)
        if network.kind in ("lora", "lyco"):
            loras.append((network.name, network.te_weight, network.unet_weight, where))
        else:
            message = f"{network.source!r} is not a LoRA: left out"
            diagnostics.append(_diagnostic("network", message, where))
    locator = _Locator(body, to_source)
    parts = []
    if OPENER in body and any(
        isinstance(n, PerEncoder) for p in prompt.parts for n in _walk(p.children)
    ):
        diagnostics.append(
            _diagnostic(
                "encoders",
                "a TE( block routes text to text encoders, which the other dialects cannot "
                "write: read as A1111 reads it (TE and a round bracket); promptweights.route "
                "each encoder's text first",
                to_source(body.find(OPENER)),
            )
        )
    start = 0
    for (part_text, weight, tail), part in zip(
        split_and_with_tails(body), prompt.parts, strict=True
    ):
        # Part k > 0 starts after its "AND"; a lone part's weight is in its tail (" :0.5").
        pos = start - 3 if start else len(part_text) + max(tail.find(":"), 0)
        scheduled = [n for n in _walk(part.children) if isinstance(n, Edit | Alternation)]
        if scheduled:
            what = "prompt editing" if isinstance(scheduled[0], Edit) else "alternation"
            where = body.find(render_nodes([scheduled[0]]), start)
            diagnostics.append(
                _diagnostic(
                    "schedule",
                    f"{what} changes the prompt during sampling: written as its first step",
                    to_source(where if where >= 0 else start),
                )
            )
        step = schedules(part_text, 100, max_variants=1000)[0][1] if scheduled else part_text
        spans = list(weighted_spans(step))
        locator.cursor = start
        parts.append(_Part(spans, weight, at=locator.spans(spans), pos=to_source(pos)))
        start += len(part_text) + len(tail) + len("AND")
    return _Read(parts, loras, diagnostics)


def _walk(nodes: tuple[Node, ...]) -> list[Node]:
    """Every node under ``nodes``, in source order (compel's members, targets and
    replacements included)."""
    out: list[Node] = []
    stack = list(reversed(nodes))
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, Blend | Conjunction):
            stack.extend(reversed(node.members))
        elif isinstance(node, Swap):
            stack.extend(reversed((node.target, *node.replacement)))
        else:
            children = getattr(node, "children", None)
            if isinstance(children, tuple):
                stack.extend(reversed(children))
    return out


def _compel_nodes_at(
    text: str, nodes: tuple[Node, ...], loras: int
) -> tuple[dict[int, int], list[int]]:
    """Where each top-level blend or conjunction starts in ``text`` (by node index; ``render``
    gives compel's text back as written), and where each of the ``loras`` LoRA calls starts, in
    source order. Each is worked out only where the prompt has one."""
    starts = {}
    if any(isinstance(node, Blend | Conjunction) for node in nodes):
        offset = 0
        for k, node in enumerate(nodes):
            if isinstance(node, Blend | Conjunction):
                starts[k] = offset
            offset += len(render_nodes([node]))
    lora_at = []
    if loras:
        cursor = 0
        for node in _walk(nodes):
            if isinstance(node, Lora):
                found = text.find(node.source, cursor) if node.source else -1
                lora_at.append(max(found, 0))
                cursor = max(found, cursor)
    return starts, lora_at


def _compel_spans(items: tuple[Any, ...], locator: _Locator) -> _Part:
    """One flattened compel prompt as spans, a swap as a ``"\\x00swapN"`` marker."""
    from ._compel import FlatSwap

    part = _Part([])
    for item in items:
        if isinstance(item, FlatSwap):
            original, replacement = list(item.original), list(item.replacement)
            original_at = locator.spans(original)  # the original's words come first
            when = dict(item.options).get("t_start", 0.2)
            swap = _Swap(original, original_at, replacement, locator.spans(replacement), when)
            part.spans.append((f"\x00swap{len(part.swaps)}", 0.0))
            part.at.append(original_at[0] if original_at else locator.to_source(locator.cursor))
            part.swaps.append(swap)
        else:  # compel's fragments are words apart: keep a space between them
            part.at.append(locator.locate(item[0]))
            part.spans.append((" " + item[0], item[1]) if part.spans else item)
    return part


def _read_compel(text: str) -> _Read:
    from ._compel import flatten

    nodes = parse(text, dialect="compel").parts[0].children
    flat = flatten(nodes)
    starts, lora_at = _compel_nodes_at(text, nodes, len(flat.loras))
    diagnostics: list[Diagnostic] = []
    parts = []
    locator = _Locator(text)
    conjunction = 0
    for k, start in starts.items():
        node = nodes[k]
        if isinstance(node, Conjunction):  # point at ".and(" (the frame's last piece holds it)
            end = start + len(render_nodes([node]))
            conjunction = end - len(node.frame[-1]) + max(node.frame[-1].find(".and"), 0)
    for flat_part in flat.parts:
        if flat_part.blend is not None:
            where = next((at for k, at in starts.items() if isinstance(nodes[k], Blend)), 0)
            diagnostics.append(
                _diagnostic(
                    "blend",
                    ".blend() mixes conditionings, which the target cannot write: "
                    "written as its first prompt",
                    where,
                )
            )
        part = _compel_spans(flat_part.prompts[0], locator)
        part.weight, part.pos = flat_part.weight, conjunction
        parts.append(part)
    loras = [
        (name, weight, weight, lora_at[k] if k < len(lora_at) else 0)
        for k, (name, weight) in enumerate(flat.loras)
    ]
    if not parts:
        parts.append(_Part([("", 1.0)], at=[0], pos=conjunction))
    return _Read(parts, loras, diagnostics)


def _read(text: str, source: str) -> _Read:
    if source == "a1111":
        return _read_a1111(text)
    if source == "compel":
        return _read_compel(text)
    spans = list(weighted_spans(text, dialect=source))
    return _Read([_Part(spans, at=_Locator(text).spans(spans))], [], [])


# --- writing the target --------------------------------------------------------------------------


def _written_weight(written: str, target: str) -> float | None:
    """The weight ``target`` gives a span written alone (one weighted span), or None."""
    spans = [w for t, w in weighted_spans(written, dialect=target) if t.strip()]
    return spans[0] if len(set(spans)) == 1 else None


def _write_spans(
    spans: list[Span], at: list[int], writer: Writer, diagnostics: list[Diagnostic], target: str
) -> str:
    out: list[str] = []
    for (text, weight), pos in zip(spans, at, strict=True):
        if (text, weight) == _BREAK:
            if writer.breaks is None:
                diagnostics.append(_diagnostic("break", "the target has no BREAK: left out", pos))
                out.append(", ")
            else:
                out.append(writer.breaks)
            continue
        if not text:
            continue
        escaped = _escape(text, writer.escape)
        if weight == 1.0 or not text.strip():  # spaces alone weigh nothing: no token
            out.append(escaped)
            continue
        written = writer.weight(_pad(escaped), weight) if math.isfinite(weight) else None
        if written is None:
            diagnostics.append(
                _diagnostic("weight", f"the target cannot write the weight {weight!r}", pos)
            )
            out.append(escaped)
        else:
            if writer.nearest:
                got = _written_weight(written, target)
                if got is None or not abs(got - weight) <= _TOLERANCE:
                    diagnostics.append(
                        _diagnostic(
                            "weight", f"the target writes the weight {weight!r} as {got!r}", pos
                        )
                    )
            out.append(_spaced(text, written, out))
    return "".join(out)


def _pad(text: str) -> str:
    return text.strip() or text


def _spaced(text: str, written: str, out: list[str]) -> str:
    """Keep the spaces around a weighted span outside its brackets."""
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()) :]
    if out and not lead and out[-1] and not out[-1][-1].isspace() and text.strip():
        lead = " "
    return lead + written + trail


def _write_part(part: _Part, target: str, diagnostics: list[Diagnostic]) -> str:
    writer = WRITERS[target]
    if not part.swaps:
        return _write_spans(part.spans, part.at, writer, diagnostics, target)
    pieces: list[str] = []
    run: list[Span] = []
    run_at: list[int] = []
    for span, pos in zip(part.spans, part.at, strict=True):
        if not span[0].startswith("\x00swap"):
            run.append(span)
            run_at.append(pos)
            continue
        pieces.append(_write_spans(run, run_at, writer, diagnostics, target))
        run, run_at = [], []
        swap = part.swaps[int(span[0][5:])]
        before = _write_spans(swap.original, swap.original_at, writer, diagnostics, target)
        if writer.edit is None:
            diagnostics.append(
                _diagnostic(
                    "swap", ".swap() has no equivalent in the target: written as its original", pos
                )
            )
            pieces.append(_space_before(pieces, before))
        else:
            after = _write_spans(swap.replacement, swap.replacement_at, writer, diagnostics, target)
            diagnostics.append(
                _diagnostic(
                    "swap",
                    ".swap() (cross-attention control) written as the nearest prompt edit "
                    f"[original:replacement:{swap.when}], an approximation",
                    pos,
                )
            )
            pieces.append(_space_before(pieces, writer.edit(before, after, swap.when)))
    last = _write_spans(run, run_at, writer, diagnostics, target)
    pieces.append(_space_before(pieces, last))
    return "".join(pieces)


def _space_before(pieces: list[str], text: str) -> str:
    if pieces and pieces[-1] and text and not pieces[-1][-1].isspace() and not text[0].isspace():
        return " " + text
    return text


def _write(read: _Read, target: str) -> tuple[str, list[Diagnostic]]:
    writer = WRITERS[target]
    diagnostics = list(read.diagnostics)
    parts = [_write_part(part, target, diagnostics) for part in read.parts]
    weights = [part.weight for part in read.parts]
    if len(parts) > 1 or weights[0] != 1.0:
        if writer.conjunction is None:
            diagnostics.append(
                _diagnostic(
                    "and",
                    "the target has no AND: the parts are written one after another",
                    read.parts[1 if len(parts) > 1 else 0].pos,
                )
            )
            text = ", ".join(part.strip() for part in parts)
        else:
            text = writer.conjunction(parts, weights)
    else:
        text = parts[0]
    tags = []
    for name, te, unet, pos in read.loras:
        tag = writer.lora(name, te, unet) if writer.lora is not None else None
        if tag is None:
            message = f"the target cannot write the LoRA {name!r} ({te}, {unet})"
            diagnostics.append(_diagnostic("lora", message, pos))
        else:
            tags.append(tag)
    if tags:
        text = " ".join([text, *tags]) if text else " ".join(tags)
    return text, diagnostics


# --- checking ------------------------------------------------------------------------------------

#: One AND part as :func:`_words` gives it: its weight, position and ``(word, weight, position)``.
_Words = tuple[float, int, list[tuple[str, float, int]]]


def _words(read: _Read, text: str) -> list[_Words]:
    """Each AND part's words and single punctuation marks with their weights (a scheduled part:
    its first step; a swap: its original), each at its position in ``text``, the source (a
    forward search from its span's position)."""
    out = []
    for part in read.parts:
        words: list[tuple[str, float, int]] = []
        for (span_text, weight), pos in zip(part.spans, part.at, strict=True):
            if (span_text, weight) == _BREAK:
                continue
            if span_text.startswith("\x00swap"):
                swap = part.swaps[int(span_text[5:])]
                for (t, wt), p in zip(swap.original, swap.original_at, strict=True):
                    _add_words(words, t, wt, p, text)
                continue
            _add_words(words, span_text, weight, pos, text)
        out.append((part.weight, part.pos, words))
    return out


def _add_words(
    words: list[tuple[str, float, int]], span: str, weight: float, pos: int, text: str
) -> None:
    cursor = pos
    for word in _word_re().findall(span):
        found = text.find(word, cursor)
        words.append((word, weight, pos if found < 0 else found))
        cursor = cursor if found < 0 else found + len(word)


def weighted_words(text: str, dialect: str) -> list[tuple[float, list[tuple[str, float]]]]:
    """Each AND part's weight and ``(word, weight)`` list: words and single punctuation marks
    of the part's weighted spans (a scheduled part: its first step; compel: its fragments)."""
    return [
        (weight, [(w, x) for w, x, _ in words])
        for weight, _, words in _words(_read(text, dialect), text)
    ]


def _difference(source: list[_Words], target: list[_Words]) -> int | None:
    """The source position of the first part or word the target weighs otherwise; None where
    every part and word weighs the same (to 1e-6)."""
    for k, (weight, pos, words) in enumerate(source):
        if k >= len(target) or abs(weight - target[k][0]) > _TOLERANCE:
            return pos
        other = target[k][2]
        for i, (word, x, at) in enumerate(words):
            if i >= len(other) or other[i][0] != word or not abs(other[i][1] - x) <= _TOLERANCE:
                return at
        if len(other) > len(words):
            return words[-1][2] if words else pos
    if len(target) > len(source):
        return source[-1][1]
    return None


def convert(text: str, source: str, target: str, *, strict: bool = False) -> Conversion:
    """Write ``text``, a prompt in the ``source`` dialect, in the ``target`` dialect.

    The dialects are ``"a1111"``, ``"comfy"``, ``"novelai"`` and ``"compel"``. Each word keeps its
    effective weight (A1111's and compel's products of nested brackets, ComfyUI's absolute
    weights, NovelAI's braces and numeric weights); ``AND`` parts and their weights, ``BREAK`` and
    LoRA tags are carried over where the target has them (``withLora`` in compel, ``<lora:…>`` in
    A1111).

    Args:
        text: the prompt.
        source: its dialect.
        target: the dialect to write it in (the same as ``source``: ``text`` unchanged).
        strict: raise the first diagnostic as a
            :class:`~promptweights.errors.PromptSyntaxError` instead of returning it.

    Returns:
        A :class:`Conversion`: ``text`` in the target dialect and a diagnostic for each
        construct the target cannot express: prompt editing and alternation outside A1111 (the
        first step is written), ``.blend()`` outside compel (its first prompt), ``.swap()``
        (in A1111 the nearest prompt edit, an approximation; elsewhere its original), ``AND``
        and ``BREAK`` where the target has none, a weight the target cannot write (negative in
        compel, infinite anywhere, on a text holding ``::`` in NovelAI), a LoRA tag the target
        cannot hold, and ``inexact`` wherever reading the result back gives a word another
        weight. Each ``pos`` is the construct's position in ``text``.

    Raises:
        PromptSyntaxError: with ``strict=True``, for the first diagnostic.
        UnknownNameError: an unknown dialect.
        ArgumentTypeError: ``text`` or a dialect that is not a ``str``.
        LimitExceededError: a text past :data:`promptweights.MAX_PROMPT_CHARS`.

    >>> result = convert("[cat:dog:0.5] AND b", "a1111", "comfy")
    >>> result.text
    'cat, b'
    >>> [d.kind for d in result.diagnostics]
    ['schedule', 'and']
    """
    if type(text) is not str:
        text = check_text(text, "prompt")
    source_dialect, target_dialect = get(source).name, get(target).name
    for name in (source_dialect, target_dialect):
        if name not in WRITERS:  # a dialect added without a writer
            raise UnknownNameError("dialect with a converter", name, list(WRITERS))
    if source_dialect == target_dialect:
        return Conversion(text)
    parse(text, dialect=source_dialect)  # the length limit and argument checks
    read = _read(text, source_dialect)
    written, diagnostics = _write(read, target_dialect)
    if not diagnostics:
        where = _difference(_words(read, text), _words(_read(written, target_dialect), written))
        if where is not None:
            diagnostics.append(
                _diagnostic(
                    "inexact",
                    f"the {target_dialect} text does not give this word the source's weight",
                    where,
                )
            )
    result = Conversion(written, tuple(sorted(diagnostics, key=lambda d: d.pos)))
    if strict and result.diagnostics:
        raise result.diagnostics[0].to_error(text)
    return result
