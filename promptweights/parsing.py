"""``parse``: the whole prompt language, in A1111's order of operations (a1111-behaviour.md §1).

Comments are stripped, extra-network tags cut out, the text split at ``AND``, and each part parsed
by the dialect's Lark grammar. Lenient mode (the default) never raises on a ``str``: what A1111
would silently reinterpret or reject is kept as text and reported in ``Prompt.diagnostics``;
``strict=True`` raises the first of them as a :class:`~promptweights.errors.PromptSyntaxError`
pointing into the original text.
"""

from __future__ import annotations

import functools

from . import _lark
from ._arguments import check_int, check_text
from .dialects import DIALECTS, Dialect, get
from .errors import Diagnostic, LimitExceededError
from .limits import MAX_PROMPT_CHARS
from .networks import extra_networks_with_map, strip_comments_with_map
from .schedules import split_and_with_tails
from .tree import DEFAULT_MAX_DEPTH, Node, Prompt, SubPrompt

__all__ = ["MAX_PROMPT_CHARS", "parse", "parse_nodes"]


def parse(
    text: str, *, dialect: str = "a1111", strict: bool = False, max_depth: int = DEFAULT_MAX_DEPTH
) -> Prompt:
    """Parse a prompt into a :class:`~promptweights.tree.Prompt` tree.

    Args:
        text: the prompt as the user typed it.
        dialect: ``"a1111"`` (comments, extra networks, AND, editing, alternation, emphasis,
            BREAK), ``"comfy"`` (ComfyUI: round brackets only, explicit weights replace) or
            ``"novelai"`` (``{x}`` ×1.05, ``[x]`` ÷1.05).
        strict: raise instead of tolerating input A1111 would silently reinterpret: unbalanced
            brackets, malformed weights, non-numeric edit steps, a stray ``|``…
        max_depth: brackets nested deeper than this stay text (with a diagnostic).

    Returns:
        The tree; ``render(parse(text))`` gives ``text`` back, comments included.

    Raises:
        PromptSyntaxError: in strict mode, at the first problem, with its position.
        UnknownNameError: for an unknown dialect.
        ArgumentTypeError: ``text`` is not a ``str``, ``dialect`` not a ``str`` or ``max_depth``
            not an ``int``.
        InvalidArgumentError: a negative ``max_depth``.
        LimitExceededError: for a text longer than :data:`MAX_PROMPT_CHARS`.

    >>> parse("(a:1.5) AND b:0.5").parts[1]
    SubPrompt(children=(Text(text=' b'),), weight=0.5, weight_text=':0.5')
    >>> parse("a (b", strict=True)
    Traceback (most recent call last):
      ...
    promptweights.errors.PromptSyntaxError: '(' is never closed at line 1, column 3
      a (b
        ^
    """
    if type(text) is not str:
        text = check_text(text, "prompt")
    record = DIALECTS.get(dialect) if type(dialect) is str else None
    if record is None:
        record = get(dialect)  # raises: not a str, or not a dialect
    if type(max_depth) is not int or max_depth < 0:
        max_depth = check_int(max_depth, "max_depth", minimum=0)
    if len(text) > MAX_PROMPT_CHARS:
        raise LimitExceededError(
            f"prompt of {len(text)} characters exceeds the limit of {MAX_PROMPT_CHARS}"
        )
    prompt = _parse(text, record, max_depth)
    if strict and prompt.diagnostics:
        raise prompt.diagnostics[0].to_error(text)
    return prompt


def parse_nodes(
    text: str, *, dialect: str, max_depth: int, schedule: bool = True, engine: str = "fast"
) -> tuple[tuple[Node, ...], list[Diagnostic]]:
    """One sub-prompt's nodes and diagnostics, by dialect name (see :func:`_lark.parse_nodes`);
    ``engine="lark"`` runs lark's LALR parser instead of the fast path."""
    return _lark.parse_nodes(
        text, dialect=get(dialect), max_depth=max_depth, schedule=schedule, engine=engine
    )


@functools.lru_cache(maxsize=1024)
def _parse(text: str, dialect: Dialect, max_depth: int) -> Prompt:
    if not dialect.outer_passes:
        nodes, found_here = _lark.parse_nodes(text, dialect=dialect, max_depth=max_depth)
        return Prompt((SubPrompt(nodes),), (), dialect.name, tuple(found_here))

    uncommented, comment_map = strip_comments_with_map(text)
    body, found, network_map = extra_networks_with_map(uncommented)
    diagnostics: list[Diagnostic] = []
    for network, problem in found:
        if problem is not None:
            diagnostics.append(Diagnostic("bad-network", problem, comment_map(network.pos)))

    parts = []
    offset = 0
    for piece_text, weight, tail in split_and_with_tails(body):
        nodes, part_diagnostics = _lark.parse_nodes(
            piece_text, dialect=dialect, max_depth=max_depth
        )
        parts.append(SubPrompt(nodes, weight, tail))
        for d in part_diagnostics:
            pos = comment_map(network_map(offset + d.pos))
            diagnostics.append(Diagnostic(d.kind, d.message, pos))
        offset += len(piece_text) + len(tail) + len("AND")
    diagnostics.sort(key=lambda d: d.pos)
    networks = tuple(network for network, _ in found)
    commented = (uncommented, text) if uncommented != text else None
    return Prompt(tuple(parts), networks, dialect.name, tuple(diagnostics), commented)


parse.cache_clear = _parse.cache_clear  # type: ignore[attr-defined]
