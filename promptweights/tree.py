"""The parsed prompt: frozen, slotted dataclasses holding tuples.

A :class:`Prompt` is what :func:`promptweights.parse` returns. It keeps the text lossless: every
node holds the source it came from (escapes as written, the exact weight text), so
:func:`promptweights.render` gives back the prompt as typed, comments included. Nodes form a closed
union, :data:`Node`, meant for ``match``::

    >>> from promptweights import parse
    >>> p = parse("a (cat:1.2) [dog:fox:5]")
    >>> p.parts[0].children
    (Text(text='a '), Emphasis(children=(Text(text='cat'),), weight=1.2, kind='round', \
weight_text=':1.2', closed=True, absolute=False), Text(text=' '), \
Edit(before=(Text(text='dog'),), after=(Text(text='fox'),), when=5.0, when_text='5'))

Nesting is capped (:data:`promptweights.DEFAULT_MAX_DEPTH`); brackets nested deeper stay text, with
a diagnostic, so equality, hashing and ``repr`` of any tree stay within Python's recursion limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from .errors import Diagnostic

#: How deep brackets may nest; deeper ones stay text (with a ``too-deep`` diagnostic), in the tree
#: and in :func:`promptweights.weighted_spans` alike. A1111 has no cap, but its weights there are
#: meaningless (1.1**150 ≈ 1.6e6) and evaluating them exactly costs depth × length.
DEFAULT_MAX_DEPTH = 150

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "Alternation",
    "Attention",
    "Blend",
    "Break",
    "Conjunction",
    "Edit",
    "Emphasis",
    "EncoderSection",
    "ExtraNetwork",
    "Lora",
    "Node",
    "PerEncoder",
    "Prompt",
    "SubPrompt",
    "Swap",
    "Text",
]


@dataclass(frozen=True, slots=True)
class Text:
    """Literal text, as written (escapes such as ``\\(`` are kept raw)."""

    text: str


@dataclass(frozen=True, slots=True)
class Break:
    """``BREAK``: start a new 75-token chunk; ``source`` is the keyword and the spaces it eats."""

    source: str = " BREAK "


@dataclass(frozen=True, slots=True)
class Emphasis:
    """A bracketed span whose weight is multiplied (or, in ComfyUI, replaced).

    Attributes:
        children: the nodes inside the brackets.
        weight: the factor this bracket applies: 1.1 for ``(x)``, 1/1.1 for ``[x]``, the number for
            ``(x:1.3)``, 1.05 / 1/1.05 for NovelAI's ``{x}`` / ``[x]``, the number for NovelAI's
            ``1.5::x::``.
        kind: ``"round"``, ``"square"``, ``"brace"`` or ``"weight"`` (NovelAI's ``1.5::x::``):
            which brackets were used.
        weight_text: the explicit weight as written, colon and spaces included (``":1.3"``), or
            ``None``; for ``"weight"``, the opener with its ``::`` (``"1.5::"``).
        closed: ``False`` for a bracket left open; A1111 applies it to the end of the text.
        absolute: ``True`` where the weight replaces the enclosing weight (ComfyUI's ``(x:n)``).
    """

    children: tuple[Node, ...]
    weight: float
    kind: Literal["round", "square", "brace", "weight"] = "round"
    weight_text: str | None = None
    closed: bool = True
    absolute: bool = False


@dataclass(frozen=True, slots=True)
class Edit:
    """Prompt editing ``[before:after:when]``: ``before`` until step ``when``, then ``after``.

    ``before`` is ``None`` for the two-part form ``[after:when]`` (nothing, then ``after``).
    ``when`` is the number as a float; ``when_text`` is it as written, spaces included. A
    ``when`` written with a decimal point is a fraction of the steps, without one an absolute
    step (a1111-behaviour.md §4.2).
    """

    before: tuple[Node, ...] | None
    after: tuple[Node, ...]
    when: float
    when_text: str


@dataclass(frozen=True, slots=True)
class Alternation:
    """Alternation ``[a|b|c]``: one option per sampling step, cycling; options may be empty."""

    options: tuple[tuple[Node, ...], ...]


@dataclass(frozen=True, slots=True)
class EncoderSection:
    """One section of a :class:`PerEncoder` block: ``clip_l: a red cat``.

    Attributes:
        name: the encoder it goes to, as written without the spaces around it (``"clip_l"``);
            ``""`` for a section without a ``name:`` (a ``bad-encoders`` diagnostic).
        head: the text before the section's content as written: spaces, name and colon
            (``" t5:"``); ``""`` for a section without a name.
        children: the section's content, parsed like any text.
    """

    name: str
    head: str
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class PerEncoder:
    """Per-encoder prompts ``TE(clip_l: a cat; t5: a (red:1.2) cat)``: each text encoder reads the
    sections that name it, where the block stands, and nothing of the others
    (:func:`promptweights.route`). promptweights' own syntax (A1111 reads ``TE`` and a round
    bracket); the sections are separated by ``;``.

    Attributes:
        sections: the sections, in order.
        closed: ``False`` for a block whose ``)`` is missing.
    """

    sections: tuple[EncoderSection, ...]
    closed: bool = True


# --- compel's constructs (dialect="compel"; grammar/compel.lark) ---------------------------


@dataclass(frozen=True, slots=True)
class Attention:
    """compel's weighted term: ``(x)1.3``, ``(x)++``, ``"x"-``, ``word+``, ``x.attend(0.5)``.

    Also the unweighted group ``(x)`` and quoted ``"x"`` (``weight`` 1, ``weight_text`` empty).

    Attributes:
        children: the nodes of the term (a ``"word"`` holds one :class:`Text`).
        weight: the factor: 1.1 per ``+``, 0.9 per ``-``, or the number.
        kind: ``"round"`` (``(x)``), ``"quote"`` (``"x"``) or ``"word"`` (a bare word).
        weight_text: what follows the term, as written (``"1.3"``, ``"++"``,
            ``".attend(0.5)"``), or ``""``.
    """

    children: tuple[Node, ...]
    weight: float = 1.0
    kind: Literal["round", "quote", "word"] = "round"
    weight_text: str = ""


@dataclass(frozen=True, slots=True)
class Swap:
    """compel's cross-attention swap ``target.swap(replacement, t_start=0.2)``.

    Attributes:
        target: the term swapped out (an :class:`Attention`).
        replacement: the nodes swapped in.
        options: the ``key=value`` options as written after the replacement (compel's
            defaults: ``s_start=0``, ``s_end=0``, ``t_start=0.2``, ``t_end=1``).
        between: the text between the target and the replacement: ``".swap("``, spaces
            included.
        tail: the text after the replacement: the options, spaces and ``")"``.
    """

    target: Node
    replacement: tuple[Node, ...]
    options: tuple[tuple[str, str], ...] = ()
    between: str = ".swap("
    tail: str = ")"


@dataclass(frozen=True, slots=True)
class Lora:
    """compel's ``withLora(name, 0.8)`` (or ``useLora``): a LoRA at that weight.

    ``source`` is the call as written.
    """

    name: str
    weight: float = 1.0
    source: str = ""


@dataclass(frozen=True, slots=True)
class Blend:
    """compel's ``("a", "b").blend(0.3, 0.7)``: a weighted blend of the members' conditionings.

    Attributes:
        members: one :class:`Attention` per member (``"round"``, ``"quote"`` or ``"word"``).
        weights: one per member (1 each when none are given).
        normalize: ``False`` with ``no_normalize``: the weights are used as given, not divided by
            their sum.
        frame: the text around the members, as written: ``frame[0]`` before the first,
            ``frame[i]`` between member ``i - 1`` and ``i``, ``frame[-1]`` after the last
            (``").blend(0.3, 0.7)"``).
    """

    members: tuple[Node, ...]
    weights: tuple[float, ...]
    normalize: bool = True
    frame: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Conjunction:
    """compel's ``("a", "b").and(1, 0.5)``: the members as AND parts with those weights.

    ``members``, ``weights`` and ``frame`` as in :class:`Blend`.
    """

    members: tuple[Node, ...]
    weights: tuple[float, ...]
    frame: tuple[str, ...] = ()


Node: TypeAlias = (
    Text
    | Break
    | Emphasis
    | Edit
    | Alternation
    | PerEncoder
    | Attention
    | Swap
    | Lora
    | Blend
    | Conjunction
)


@dataclass(frozen=True, slots=True)
class SubPrompt:
    """One ``AND`` part of a prompt (the whole prompt when it has no ``AND``).

    Attributes:
        children: the parsed text of this part.
        weight: the composable-diffusion weight (``a AND b:0.5`` gives 0.5 to the second part).
        weight_text: the raw tail after the text: trailing spaces and the ``:w`` weight, if any.
    """

    children: tuple[Node, ...]
    weight: float = 1.0
    weight_text: str = ""


@dataclass(frozen=True, slots=True)
class ExtraNetwork:
    """An extra-network tag such as ``<lora:name:0.8>``, cut out of the prompt text.

    Attributes:
        kind: the tag type (``lora``, ``lyco``, ``hypernet`` or any word).
        name: the first positional argument (the network's name).
        te_weight: text-encoder multiplier (second positional or ``te=``; default 1.0).
        unet_weight: UNet multiplier (third positional or ``unet=``; default ``te_weight``).
        args: every ``:``-separated argument as written, name included.
        source: the whole tag as written (not compared).
        pos: its offset in the comment-stripped prompt (not compared).
    """

    kind: str
    name: str
    te_weight: float = 1.0
    unet_weight: float = 1.0
    args: tuple[str, ...] = ()
    source: str = field(default="", compare=False)
    pos: int = field(default=-1, compare=False)

    @property
    def named(self) -> dict[str, str]:
        """Arguments written as ``key=value`` (exactly one ``=``), as A1111 reads them."""
        pairs = (arg.split("=") for arg in self.args)
        return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}

    @property
    def positional(self) -> tuple[str, ...]:
        """Arguments that are not ``key=value``; the first is the name."""
        return tuple(arg for arg in self.args if len(arg.split("=")) != 2)


@dataclass(frozen=True, slots=True)
class Prompt:
    """A parsed prompt.

    Attributes:
        parts: the ``AND`` sub-prompts, in order (one when the prompt has no ``AND``).
        networks: extra-network tags, in order of appearance.
        dialect: the dialect it was parsed with.
        diagnostics: what lenient parsing tolerated (not compared).
        commented: for a text with ``#`` comments, the text without them (as A1111 reads it) and
            the text as typed, so that :func:`promptweights.render` gives the comments back
            while the tree is unchanged; None otherwise (not compared, not shown).
    """

    parts: tuple[SubPrompt, ...]
    networks: tuple[ExtraNetwork, ...] = ()
    dialect: str = "a1111"
    diagnostics: tuple[Diagnostic, ...] = field(default=(), compare=False)
    commented: tuple[str, str] | None = field(default=None, compare=False, repr=False)
