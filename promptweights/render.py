"""Turn a tree back into text: the whole prompt, or one schedule variant of it."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .dialects import DIALECTS
from .errors import ArgumentTypeError
from .tree import (
    Alternation,
    Attention,
    Blend,
    Break,
    Conjunction,
    Edit,
    Emphasis,
    Lora,
    Node,
    PerEncoder,
    Prompt,
    Swap,
    Text,
)

__all__ = ["render", "render_nodes"]

# Emphasis.kind → its characters; a kind means the same brackets in every dialect that has it.
_BRACKETS = {
    bracket.kind: (bracket.opener, bracket.closer)
    for dialect in DIALECTS.values()
    for bracket in dialect.brackets
}

# Maps an Edit to the converted step it switches at (a1111-behaviour.md §4.2).
StepOf = Callable[[Edit], int]


def render_nodes(
    nodes: Iterable[Node], *, step: int | None = None, step_of: StepOf | None = None
) -> str:
    """Render nodes as text; with ``step``, render the schedule variant shown at that step.

    At a ``step``, an edit renders ``before`` while ``step <= step_of(edit)`` and ``after``
    afterwards, and an alternation renders option ``(step - 1) % n`` — A1111's rules, with the
    global step also inside nested alternations (§4.3). Everything else renders as written.
    """
    out: list[str] = []
    _render(nodes, out, step, step_of)
    return "".join(out)


def _render(
    nodes: Iterable[Node], out: list[str], step: int | None, step_of: StepOf | None
) -> None:
    for node in nodes:
        if isinstance(node, Text):
            out.append(node.text)
        elif isinstance(node, Break):
            out.append(node.source)
        elif isinstance(node, Emphasis):
            _render_emphasis(node, out, step, step_of)
        elif isinstance(node, Edit):
            _render_edit(node, out, step, step_of)
        elif isinstance(node, Alternation):
            _render_alternation(node, out, step, step_of)
        elif isinstance(node, PerEncoder):
            _render_encoders(node, out, step, step_of)
        else:
            _render_compel(node, out, step, step_of)


# compel's Attention.kind → the characters around the term.
_COMPEL_QUOTES = {"round": ("(", ")"), "quote": ('"', '"'), "word": ("", "")}


def _render_compel(node: Node, out: list[str], step: int | None, step_of: StepOf | None) -> None:
    """compel's constructs (grammar/compel.lark), as written."""
    if isinstance(node, Attention):
        opener, closer = _COMPEL_QUOTES[node.kind]
        out.append(opener)
        _render(node.children, out, step, step_of)
        out.append(closer + node.weight_text)
    elif isinstance(node, Swap):
        _render((node.target,), out, step, step_of)
        out.append(node.between)
        _render(node.replacement, out, step, step_of)
        out.append(node.tail)
    elif isinstance(node, Lora):
        out.append(node.source or f"withLora({node.name}, {node.weight!r})")
    elif isinstance(node, Blend | Conjunction):
        frame = node.frame or _default_frame(node)
        for i, member in enumerate(node.members):
            out.append(frame[i])
            _render((member,), out, step, step_of)
        out.append(frame[-1])


def _default_frame(node: Blend | Conjunction) -> tuple[str, ...]:
    """The text around the members of a node built without one: ``(a, b).blend(0.3, 0.7)``."""
    name = "blend" if isinstance(node, Blend) else "and"
    args = ", ".join(repr(w) for w in node.weights)
    if isinstance(node, Blend) and not node.normalize:
        args += ", no_normalize"
    return ("(", *[", "] * (len(node.members) - 1), f").{name}({args})")


def _render_emphasis(
    node: Emphasis, out: list[str], step: int | None, step_of: StepOf | None
) -> None:
    opener, closer = _BRACKETS[node.kind]
    leading = not opener  # NovelAI's `1.5::x::`: the weight text is the opener
    out.append(node.weight_text or "" if leading else opener)
    _render(node.children, out, step, step_of)
    if node.weight_text is not None and not leading:
        out.append(node.weight_text)
    if node.closed:
        out.append(closer)


def _render_encoders(
    node: PerEncoder, out: list[str], step: int | None, step_of: StepOf | None
) -> None:
    """``TE(name: text; name: text)`` as written (:func:`promptweights.route` picks sections)."""
    out.append("TE(")
    for i, section in enumerate(node.sections):
        if i:
            out.append(";")
        out.append(section.head)
        _render(section.children, out, step, step_of)
    if node.closed:
        out.append(")")


def _render_edit(node: Edit, out: list[str], step: int | None, step_of: StepOf | None) -> None:
    if step is None or step_of is None:
        out.append("[")
        if node.before is not None:
            _render(node.before, out, step, step_of)
            out.append(":")
        _render(node.after, out, step, step_of)
        out.append(f":{node.when_text}]")
    elif step <= step_of(node):
        _render(node.before or (), out, step, step_of)
    else:
        _render(node.after, out, step, step_of)


def _render_alternation(
    node: Alternation, out: list[str], step: int | None, step_of: StepOf | None
) -> None:
    if step is None:
        out.append("[")
        for i, option in enumerate(node.options):
            if i:
                out.append("|")
            _render(option, out, step, step_of)
        out.append("]")
    else:
        _render(node.options[(step - 1) % len(node.options)], out, step, step_of)


def render(prompt: Prompt) -> str:
    """Return the text of ``prompt``, such that ``parse(render(p)) == p``.

    Parsing is lossless, so this gives back the text that was parsed. Extra-network tags are put
    back where they stood. ``#`` comments are not part of the tree (A1111 drops each with its
    line end, keeping one newline); a parsed prompt remembers them, and gets them back as long
    as its tree renders to the text it was parsed from. A tree changed since renders without.

    >>> from promptweights import parse
    >>> render(parse("a (cat:1.2) <lora:x:0.5> AND [dog:fox:5] :0.5 # note"))
    'a (cat:1.2) <lora:x:0.5> AND [dog:fox:5] :0.5 # note'
    >>> from dataclasses import replace
    >>> render(replace(parse("a # note"), networks=parse("<lora:x:1>").networks))
    '<lora:x:1>a \\n'
    """
    if not isinstance(prompt, Prompt):
        raise ArgumentTypeError(f"prompt must be a Prompt, not {type(prompt).__name__}")
    text = "AND".join(render_nodes(part.children) + part.weight_text for part in prompt.parts)
    for network in sorted(prompt.networks, key=lambda n: (n.pos < 0, n.pos)):
        source = network.source or f"<{network.kind}:{':'.join(network.args or (network.name,))}>"
        pos = network.pos if 0 <= network.pos <= len(text) else len(text)
        text = text[:pos] + source + text[pos:]
    if prompt.commented is not None and prompt.commented[0] == text:
        return prompt.commented[1]
    return text
