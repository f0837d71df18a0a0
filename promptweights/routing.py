"""Per-encoder prompts written inline: ``TE(clip_l: a photo of a cat; t5: a (red:1.2) cat)``.

A model with several text encoders (SDXL, SD3, Flux, HiDream…) can read a different prompt in
each; diffusers takes them as ``prompt``, ``prompt_2``, ``prompt_3``. A UI has one text box, so
the a1111 dialect has a block for it (``grammar/a1111.lark``, rule ``encoders``; promptweights'
own syntax, not A1111's):

* ``TE(`` opens the block where no letter, digit or ``_`` precedes the ``T`` (``CUTE(x)`` is
  text and emphasis; write ``TE\\(`` for A1111's reading); ``)`` closes it.
* ``;`` separates its sections; each is ``name: text``, the name an identifier, the text
  anything the prompt language allows (weights, editing, ``BREAK``, ``AND``, extra networks).
* Each encoder reads the prompt with every block replaced by the text of the sections that name
  it, in order, and nothing for a block that does not name it. Text outside the blocks goes to
  every encoder. Weights may differ per encoder: each section is weighted where it lands.

The encoder names are each family's (:func:`promptweights.diffusers.encoder_names`): ``clip`` on
SD 1.x/2.x; ``clip_l`` and ``clip_g`` on SDXL; ``clip_l``, ``clip_g`` and ``t5`` on SD3;
``clip_l`` and ``t5`` on Flux.1; ``t5`` on Chroma, PixArt and Wan. A name the family lacks, a
section without a name and a block inside a block are errors with their position.

>>> route("best quality, TE(clip_l: a cat; t5: a (red:1.2) cat on a mat)", ["clip_l", "t5"])
{'clip_l': 'best quality,  a cat', 't5': 'best quality,  a (red:1.2) cat on a mat'}
>>> route("a cat", ["clip_l", "t5"]) is None
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from . import _lark
from ._arguments import check_text
from .dialects import A1111
from .errors import PromptSyntaxError
from .render import render_nodes
from .tree import DEFAULT_MAX_DEPTH, Alternation, Edit, Emphasis, Node, PerEncoder

__all__ = ["OPENER", "blocks", "route", "route_offsets"]

#: What starts a per-encoder block (the grammar's ``TE_OPEN`` terminal, without its lookbehind).
OPENER = "TE("


def blocks(text: str) -> list[tuple[int, PerEncoder]]:
    """Every ``TE(…)`` block of ``text`` with its offset, outermost first in text order (blocks
    inside blocks follow their block)."""
    if OPENER not in text:
        return []
    nodes, _ = _lark.parse_nodes(text, dialect=A1111, max_depth=DEFAULT_MAX_DEPTH)
    found: list[tuple[int, PerEncoder]] = []
    cursor = 0
    for node in _walk(nodes):
        written = render_nodes((node,))
        pos = text.find(written, cursor)
        found.append((pos, node))
        cursor = pos + len(OPENER)
    return found


def _walk(nodes: Sequence[Node]) -> list[PerEncoder]:
    """The PerEncoder nodes under ``nodes``, in text order (pre-order)."""
    out: list[PerEncoder] = []
    stack: list[Node] = list(reversed(nodes))
    while stack:
        node = stack.pop()
        if isinstance(node, PerEncoder):
            out.append(node)
            children = [c for s in node.sections for c in s.children]
        elif isinstance(node, Emphasis):
            children = list(node.children)
        elif isinstance(node, Edit):
            children = [*(node.before or ()), *node.after]
        elif isinstance(node, Alternation):
            children = [c for option in node.options for c in option]
        else:
            continue
        stack.extend(reversed(children))
    return out


def _check(text: str, found: list[tuple[int, PerEncoder]], names: Sequence[str]) -> None:
    """Raise at the first section without a known name, or block inside a block."""
    ends: list[int] = []
    for pos, block in found:
        if any(pos < end for end in ends):
            raise PromptSyntaxError(
                "a TE( block inside another TE( block", source=text, pos=pos, kind="bad-encoders"
            )
        ends.append(pos + len(render_nodes((block,))))
        offset = pos + len(OPENER)
        seen: set[str] = set()
        for i, section in enumerate(block.sections):
            offset += 1 if i else 0  # the ";"
            where = offset + len(section.head) - len(section.head.lstrip())
            if not section.name:
                raise PromptSyntaxError(
                    "a TE( section without a name: write name: text "
                    f"({'; '.join(f'{n}: …' for n in names)})",
                    source=text,
                    pos=where,
                    kind="bad-encoders",
                )
            if section.name not in names:
                raise PromptSyntaxError(
                    f"unknown text encoder {section.name!r} in TE(: this pipeline's are "
                    f"{', '.join(names)}",
                    source=text,
                    pos=where,
                    kind="bad-encoders",
                )
            if section.name in seen:
                raise PromptSyntaxError(
                    f"text encoder {section.name!r} named twice in one TE( block",
                    source=text,
                    pos=where,
                    kind="bad-encoders",
                )
            seen.add(section.name)
            offset += len(section.head) + len(render_nodes(section.children))


def _pick(nodes: Sequence[Node], name: str) -> tuple[Node, ...]:
    """``nodes`` with every block replaced by the children of its sections named ``name``."""
    out: list[Node] = []
    for node in nodes:
        if isinstance(node, PerEncoder):
            for section in node.sections:
                if section.name == name:
                    out.extend(_pick(section.children, name))
        elif isinstance(node, Emphasis):
            out.append(dataclasses.replace(node, children=_pick(node.children, name)))
        elif isinstance(node, Edit):
            before = None if node.before is None else _pick(node.before, name)
            out.append(dataclasses.replace(node, before=before, after=_pick(node.after, name)))
        elif isinstance(node, Alternation):
            options = tuple(_pick(option, name) for option in node.options)
            out.append(dataclasses.replace(node, options=options))
        else:
            out.append(node)
    return tuple(out)


def route(text: str, names: Sequence[str]) -> dict[str, str] | None:
    """Each encoder's prompt from one prompt with ``TE(…)`` blocks (see the module docstring).

    Args:
        text: the prompt (a1111 dialect).
        names: the encoders' names, in order (:func:`promptweights.diffusers.encoder_names`).

    Returns:
        Each name's text, in the order of ``names``; ``None`` when ``text`` holds no block.

    Raises:
        PromptSyntaxError: a section without a name, a name not in ``names``, a name twice in
            one block, or a block inside a block (kind ``bad-encoders``, with the position).
        ArgumentTypeError: ``text`` is not a str.
    """
    text = check_text(text, "text")
    found = blocks(text)
    if not found:
        return None
    _check(text, found, names)
    nodes, _ = _lark.parse_nodes(text, dialect=A1111, max_depth=DEFAULT_MAX_DEPTH)
    return {name: render_nodes(_pick(nodes, name)) for name in names}


#: One piece of a routed text: (offset in the routed text, offset in the prompt, length).
Piece = tuple[int, int, int]


def route_offsets(text: str, names: Sequence[str]) -> dict[str, tuple[str, tuple[Piece, ...]]]:
    """Each encoder's text, as :func:`route` gives it, with where its characters come from.

    Every routed text is pieces of ``text``: what lies outside the blocks and the text of the
    sections that name the encoder. Each piece is ``(routed offset, offset in text, length)``,
    so that a position found in an encoder's text (a diagnostic's) can be shown in the prompt.
    A text with no block gives each name ``text`` itself as one piece.

    Raises:
        PromptSyntaxError: as :func:`route`.
        ArgumentTypeError: ``text`` is not a str.

    >>> route_offsets("a TE(x: b; y: cc) d", ["x", "y"])["y"]
    ('a  cc d', ((0, 0, 2), (2, 13, 3), (5, 17, 2)))
    """
    text = check_text(text, "text")
    routed = route(text, names)
    if routed is None:
        return {name: (text, ((0, 0, len(text)),)) for name in names}
    sources: dict[str, list[tuple[int, int]]] = {name: [] for name in names}
    cursor = 0
    for pos, block in blocks(text):
        for name in names:
            sources[name].append((cursor, pos - cursor))
        offset = pos + len(OPENER)
        for i, section in enumerate(block.sections):
            offset += 1 if i else 0  # the ";"
            start = offset + len(section.head)
            offset = start + len(render_nodes(section.children))
            sources[section.name].append((start, offset - start))
        cursor = pos + len(render_nodes((block,)))
    out: dict[str, tuple[str, tuple[Piece, ...]]] = {}
    for name in names:
        pieces: list[Piece] = []
        at = 0
        for start, length in [*sources[name], (cursor, len(text) - cursor)]:
            if length > 0:
                pieces.append((at, start, length))
                at += length
        joined = "".join(text[start : start + length] for _, start, length in pieces)
        # The pieces are the routed text whenever rendering gives back the source (it does
        # for every closed block); otherwise the text is one piece at the block's place.
        out[name] = (routed[name], tuple(pieces) if joined == routed[name] else ())
    return out


def source_offset(pieces: Sequence[Piece], pos: int) -> int | None:
    """The offset in the prompt of position ``pos`` of a routed text (:func:`route_offsets`);
    None when the pieces are unknown. A position at a piece's end maps to that end."""
    for at, start, length in pieces:
        if at <= pos < at + length:
            return start + pos - at
    if pieces:
        at, start, length = pieces[-1]
        if pos == at + length:
            return start + length
    return None
