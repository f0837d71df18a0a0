"""Weighted spans: the ``(text, weight)`` list each dialect's emphasis rules give a text.

For ``"a1111"`` this is exactly A1111's ``parse_prompt_attention`` (a1111-behaviour.md §2.2, §3):
the same token order, the same float products (closing order, then open round brackets outermost
first, then open square ones), ``("BREAK", -1.0)`` markers and merging of exactly equal
neighbours. It runs on the text of one schedule variant, after scheduling, as A1111 does. Each
dialect's pass is in :mod:`promptweights._emphasis`, and its record in
:mod:`promptweights.dialects` names it.

:func:`tree_spans` computes the same list from a parsed tree; a property test checks that both agree
on every well-formed prompt, which is what lets the regex pass stand in for the grammar on the hot
path.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from ._arguments import check_int, check_text
from ._emphasis import ESCAPE_RE, Spans
from .dialects import DIALECTS as RECORDS
from .dialects import NAMES, get
from .errors import InvalidArgumentError
from .tree import DEFAULT_MAX_DEPTH, Attention, Break, Emphasis, Node, Text

__all__ = ["DIALECTS", "tree_spans", "weighted_spans"]

#: The dialect names (the records are in :mod:`promptweights.dialects`).
DIALECTS = NAMES


@functools.lru_cache(maxsize=8192)
def _cached_spans(text: str, dialect: str, max_depth: int) -> tuple[tuple[str, float], ...]:
    record = RECORDS.get(dialect) or get(dialect)  # get() raises for an unknown name
    return record.spans(record, text, max_depth)


def weighted_spans(
    text: str, *, dialect: str = "a1111", max_depth: int = DEFAULT_MAX_DEPTH
) -> list[tuple[str, float]]:
    """Split ``text`` into ``(segment, weight)`` pairs by the dialect's emphasis rules.

    For ``"a1111"`` (the default) the result equals A1111's ``parse_prompt_attention(text)``,
    floats included, with ``("BREAK", -1.0)`` where ``BREAK`` starts a new chunk. Run it on the
    text of one schedule variant (see :func:`promptweights.schedules`): editing and alternation
    brackets are not resolved here, exactly as in A1111. Two deliberate differences: where A1111
    raises on a malformed weight (``(a:1.2.3)``), the weight is kept as text; and brackets nested
    deeper than ``max_depth`` are text, as in :func:`promptweights.parse`, so that the time stays
    linear in the length of any text (A1111 multiplies depth × length floats; its weights there
    are ≥ 1.1**150 anyway).

    Args:
        text: the prompt text (one AND part, one schedule variant).
        dialect: ``"a1111"``, ``"comfy"`` (ComfyUI's ``token_weights``) or ``"novelai"``.
        max_depth: how many brackets may be open around a bracket that still weighs.

    Returns:
        A new list of ``(segment, weight)`` tuples.

    Raises:
        UnknownNameError: for an unknown dialect.
        ArgumentTypeError: ``text`` or ``dialect`` is not a ``str``, or ``max_depth`` not an
            ``int``.
        InvalidArgumentError: a negative ``max_depth``.

    >>> weighted_spans("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    >>> weighted_spans("a BREAK [b]")
    [('a', 1.0), ('BREAK', -1.0), ('', 1.0), ('b', 0.9090909090909091)]
    """
    if (
        type(text) is not str
        or type(dialect) is not str
        or type(max_depth) is not int
        or max_depth < 0
    ):  # the checks, only where one can fail: this runs for every cached lookup too
        text = check_text(text, "text")
        get(dialect)  # before the cache: an unhashable dialect must not reach it
        max_depth = check_int(max_depth, "max_depth", minimum=0)
    return list(_cached_spans(text, dialect, max_depth))


weighted_spans.cache_clear = _cached_spans.cache_clear  # type: ignore[attr-defined]


def tree_spans(nodes: Iterable[Node]) -> list[tuple[str, float]]:
    """Compute A1111's weighted spans from parsed nodes (one schedule variant, no edits).

    Weights multiply along the nesting path in A1111's order: closed brackets innermost first,
    then brackets left open, round before square, outermost first. For well-formed prompts this
    equals :func:`weighted_spans` of the rendered text. Run it on one schedule variant (parse a text
    from :func:`promptweights.schedules`, or one rendered by
    :func:`promptweights.render.render_nodes` with ``step=``): edit and alternation nodes raise
    :class:`~promptweights.errors.InvalidArgumentError` here.
    """
    spans = Spans()
    # Each stack entry: (iterator over nodes, the factors path down to here).
    path: list[Emphasis] = []
    stack: list[tuple[Iterable[Node], int]] = []
    iterator = iter(nodes)
    while True:
        node = next(iterator, None)
        if node is None:
            if not stack:
                break
            iterator, depth = stack.pop()  # type: ignore[assignment]
            del path[depth:]
            continue
        if isinstance(node, Text):
            start = spans.start()
            _add_text(spans, node.text)
            _apply(spans, start, path)
        elif isinstance(node, Break):
            # A1111 splits a text run at BREAK and keeps the (maybe empty) pieces on both sides.
            start = spans.start()
            spans.add("", split_breaks=False)
            spans.add_break()
            spans.add("", split_breaks=False)
            _apply(spans, start, path)
        elif isinstance(node, Emphasis | Attention):
            stack.append((iterator, len(path)))
            # compel's weighted term multiplies like a closed bracket.
            path.append(node if isinstance(node, Emphasis) else Emphasis((), node.weight))
            iterator = iter(node.children)
        else:
            raise InvalidArgumentError(
                "resolve edits, alternations and compel's operators before computing spans"
            )
    return list(spans.merged())


def _add_text(spans: Spans, raw: str) -> None:
    # Escapes resolve to their own segments, as in the emphasis pass.
    pos = 0
    for match in ESCAPE_RE.finditer(raw):
        if match.start() > pos:
            spans.add(raw[pos : match.start()], split_breaks=False)
        spans.add(match.group(1) or "", split_breaks=False)
        pos = match.end()
    if pos < len(raw) or not raw:
        spans.add(raw[pos:], split_breaks=False)


def _apply(spans: Spans, start: int, path: list[Emphasis]) -> None:
    closed = [node.weight for node in reversed(path) if node.closed]
    open_round = [n.weight for n in path if not n.closed and n.kind != "square"]
    open_square = [n.weight for n in path if not n.closed and n.kind == "square"]
    for factor in (*closed, *open_round, *open_square):
        spans.multiply(start, factor)
