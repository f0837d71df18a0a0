"""``convert``: a prompt from one dialect to another, with the same effective weight per word.

A prompt is read into its parts (``AND`` / ``.and()``), each a list of weighted spans as its own
dialect computes them, with ``BREAK`` markers, and its LoRAs; each part is then written in the
target dialect by that target's :class:`Writer`, a record of how it spells a weight, escapes its
syntax characters and which constructs it has. What a target cannot express (A1111's prompt
editing in compel, ``AND`` in ComfyUI, a weight that is not a power of 1.05 in NovelAI…) is kept
as close as the target allows and reported as a :class:`~promptweights.errors.Diagnostic`, whose
``pos`` points into the source text.

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

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from ._arguments import check_text
from .dialects import get
from .errors import Diagnostic, UnknownNameError
from .networks import extra_networks, strip_comments
from .parsing import parse
from .render import render_nodes
from .routing import OPENER
from .schedules import schedules, split_and
from .spans import weighted_spans
from .tree import Alternation, Blend, Conjunction, Edit, Node, PerEncoder

__all__ = ["WRITERS", "Conversion", "Writer", "convert"]

Span = tuple[str, float]
_BREAK = ("BREAK", -1.0)
_WORD_RE = re.compile(r"\w+|[^\w\s]")
_TOLERANCE = 1e-6


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
class _Part:
    """One AND part of the source: its weight and spans (``("BREAK", -1.0)`` for BREAK)."""

    spans: list[Span]
    weight: float = 1.0
    swaps: list[tuple[list[Span], list[Span], float]] = field(default_factory=list)


@dataclass(slots=True)
class _Read:
    parts: list[_Part]
    loras: list[tuple[str, float, float]]  # name, text-encoder and UNet weight
    diagnostics: list[Diagnostic]


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


def _novelai_weight(text: str, weight: float) -> str | None:
    if weight <= 0:
        return None
    n = round(math.log(weight) / math.log(1.05))
    if n == 0 or abs(n) > 100:
        return None
    opener, closer = ("{", "}") if n > 0 else ("[", "]")
    return opener * abs(n) + text + closer * abs(n)


@dataclass(frozen=True, slots=True)
class Writer:
    """How a target dialect writes a prompt (one record per dialect in :data:`WRITERS`).

    Attributes:
        escape: the characters written with a backslash before them in plain text.
        weight: ``(escaped text, weight) -> text`` for a weight other than 1, or None where the
            target cannot write that weight (an approximation may still be returned, see
            ``nearest``).
        nearest: whether ``weight`` may round (NovelAI's powers of 1.05): the result is then
            checked and reported ``inexact`` where it differs.
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
    body, networks = extra_networks(strip_comments(text))
    loras = [(n.name, n.te_weight, n.unet_weight) for n in networks if n.kind in ("lora", "lyco")]
    diagnostics = [
        _diagnostic("network", f"{n.source!r} is not a LoRA: left out", n.pos)
        for n in networks
        if n.kind not in ("lora", "lyco")
    ]
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
                body.find(OPENER),
            )
        )
    for (part_text, weight), part in zip(split_and(body), prompt.parts, strict=True):
        scheduled = [n for n in _walk(part.children) if isinstance(n, Edit | Alternation)]
        if scheduled:
            what = "prompt editing" if isinstance(scheduled[0], Edit) else "alternation"
            diagnostics.append(
                _diagnostic(
                    "schedule",
                    f"{what} changes the prompt during sampling: written as its first step",
                    body.find(render_nodes([scheduled[0]])),
                )
            )
            part_text = schedules(part_text, 100, max_variants=1000)[0][1]
        parts.append(_Part(list(weighted_spans(part_text)), weight))
    return _Read(parts, loras, diagnostics)


def _walk(nodes: tuple[Node, ...]) -> list[Node]:
    out: list[Node] = []
    stack = list(reversed(nodes))
    while stack:
        node = stack.pop()
        out.append(node)
        children = getattr(node, "children", None)
        if isinstance(children, tuple):
            stack.extend(reversed(children))
    return out


def _read_compel(text: str) -> _Read:
    from ._compel import FlatSwap, flatten

    prompt = parse(text, dialect="compel")
    nodes = prompt.parts[0].children
    flat = flatten(nodes)
    diagnostics: list[Diagnostic] = []
    parts = []
    for part in flat.parts:
        if part.blend is not None:
            where = next((i for i, n in enumerate(nodes) if isinstance(n, Blend)), 0)
            diagnostics.append(
                _diagnostic(
                    "blend",
                    ".blend() mixes conditionings, which the target cannot write: "
                    "written as its first prompt",
                    len(render_nodes(nodes[:where])),
                )
            )
        spans: list[Span] = []
        swaps = []
        for item in part.prompts[0]:
            if isinstance(item, FlatSwap):
                when = dict(item.options).get("t_start", 0.2)
                swaps.append((list(item.original), list(item.replacement), when))
                spans += [(f"\x00swap{len(swaps) - 1}", 0.0)]
            else:  # compel's fragments are words apart: keep a space between them
                spans.append((" " + item[0], item[1]) if spans else item)
        parts.append(_Part(spans, part.weight, swaps))
    loras = [(name, weight, weight) for name, weight in flat.loras]
    if any(isinstance(n, Conjunction) for n in nodes) and not parts:
        parts.append(_Part([("", 1.0)]))
    return _Read(parts or [_Part([("", 1.0)])], loras, diagnostics)


def _read(text: str, source: str) -> _Read:
    if source == "a1111":
        return _read_a1111(text)
    if source == "compel":
        return _read_compel(text)
    return _Read([_Part(list(weighted_spans(text, dialect=source)))], [], [])


# --- writing the target --------------------------------------------------------------------------


def _written_weight(written: str, target: str) -> float | None:
    """The weight ``target`` gives a span written alone (one weighted span), or None."""
    spans = [w for t, w in weighted_spans(written, dialect=target) if t.strip()]
    return spans[0] if len(set(spans)) == 1 else None


def _write_spans(
    spans: list[Span], writer: Writer, diagnostics: list[Diagnostic], target: str
) -> str:
    out: list[str] = []
    for text, weight in spans:
        if (text, weight) == _BREAK:
            if writer.breaks is None:
                diagnostics.append(_diagnostic("break", "the target has no BREAK: left out", 0))
                out.append(", ")
            else:
                out.append(writer.breaks)
            continue
        if not text:
            continue
        escaped = _escape(text, writer.escape)
        if weight == 1.0:
            out.append(escaped)
            continue
        written = writer.weight(_pad(escaped), weight) if math.isfinite(weight) else None
        if written is None:
            diagnostics.append(
                _diagnostic("weight", f"the target cannot write the weight {weight!r}", 0)
            )
            out.append(escaped)
        else:
            if writer.nearest:
                got = _written_weight(written, target)
                if got is None or not abs(got - weight) <= _TOLERANCE:
                    diagnostics.append(
                        _diagnostic(
                            "weight", f"the target writes the weight {weight!r} as {got!r}", 0
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
        return _write_spans(part.spans, writer, diagnostics, target)
    pieces: list[str] = []
    run: list[Span] = []
    for span in part.spans:
        if not span[0].startswith("\x00swap"):
            run.append(span)
            continue
        pieces.append(_write_spans(run, writer, diagnostics, target))
        run = []
        original, replacement, when = part.swaps[int(span[0][5:])]
        before = _write_spans(original, writer, diagnostics, target)
        if writer.edit is None:
            diagnostics.append(
                _diagnostic(
                    "swap", ".swap() has no equivalent in the target: written as its original", 0
                )
            )
            pieces.append(_space_before(pieces, before))
        else:
            after = _write_spans(replacement, writer, diagnostics, target)
            diagnostics.append(
                _diagnostic(
                    "swap",
                    ".swap() (cross-attention control) written as the nearest prompt edit "
                    f"[original:replacement:{when}], an approximation",
                    0,
                )
            )
            pieces.append(_space_before(pieces, writer.edit(before, after, when)))
    pieces.append(_space_before(pieces, _write_spans(run, writer, diagnostics, target)))
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
                    "and", "the target has no AND: the parts are written one after another", 0
                )
            )
            text = ", ".join(part.strip() for part in parts)
        else:
            text = writer.conjunction(parts, weights)
    else:
        text = parts[0]
    tags = []
    for name, te, unet in read.loras:
        tag = writer.lora(name, te, unet) if writer.lora is not None else None
        if tag is None:
            diagnostics.append(
                _diagnostic("lora", f"the target cannot write the LoRA {name!r} ({te}, {unet})", 0)
            )
        else:
            tags.append(tag)
    if tags:
        text = " ".join([text, *tags]) if text else " ".join(tags)
    return text, diagnostics


# --- checking ------------------------------------------------------------------------------------


def weighted_words(text: str, dialect: str) -> list[tuple[float, list[tuple[str, float]]]]:
    """Each AND part's weight and ``(word, weight)`` list: words and single punctuation marks
    of the part's weighted spans (a scheduled part: its first step; compel: its fragments)."""
    read = _read(text, dialect)
    out = []
    for part in read.parts:
        words = []
        for span_text, weight in part.spans:
            if (span_text, weight) == _BREAK:
                continue
            if span_text.startswith("\x00swap"):
                original = part.swaps[int(span_text[5:])][0]
                words += [(w, wt) for t, wt in original for w in _WORD_RE.findall(t)]
                continue
            words += [(word, weight) for word in _WORD_RE.findall(span_text)]
        out.append((part.weight, words))
    return out


def _same(
    a: list[tuple[float, list[tuple[str, float]]]], b: list[tuple[float, list[tuple[str, float]]]]
) -> bool:
    if len(a) != len(b):
        return False
    for (wa, words_a), (wb, words_b) in zip(a, b, strict=True):
        if abs(wa - wb) > _TOLERANCE or len(words_a) != len(words_b):
            return False
        for (ta, xa), (tb, xb) in zip(words_a, words_b, strict=True):
            if ta != tb or not abs(xa - xb) <= _TOLERANCE:
                return False
    return True


def convert(text: str, source: str, target: str, *, strict: bool = False) -> Conversion:
    """Write ``text``, a prompt in the ``source`` dialect, in the ``target`` dialect.

    The dialects are ``"a1111"``, ``"comfy"``, ``"novelai"`` and ``"compel"``. Each word keeps its
    effective weight (A1111's and compel's products of nested brackets, ComfyUI's absolute
    weights, NovelAI's powers of 1.05); ``AND`` parts and their weights, ``BREAK`` and LoRA tags
    are carried over where the target has them (``withLora`` in compel, ``<lora:…>`` in A1111).

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
        compel, not a power of 1.05 in NovelAI: the nearest power), a LoRA tag the target cannot
        hold, and ``inexact`` wherever reading the result back gives a word another weight.

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
    if not diagnostics and not _same(
        weighted_words(text, source_dialect), weighted_words(written, target_dialect)
    ):
        diagnostics.append(
            _diagnostic(
                "inexact",
                f"the {target_dialect} text does not give every word the source's weight",
                0,
            )
        )
    result = Conversion(written, tuple(sorted(diagnostics, key=lambda d: d.pos)))
    if strict and result.diagnostics:
        raise result.diagnostics[0].to_error(text)
    return result
