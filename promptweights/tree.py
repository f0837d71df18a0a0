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
    "Break",
    "Edit",
    "Emphasis",
    "ExtraNetwork",
    "Node",
    "Prompt",
    "SubPrompt",
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


Node: TypeAlias = Text | Break | Emphasis | Edit | Alternation


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
