"""The scheduling pass alone: prompt editing and alternation without building the whole tree.

:func:`promptweights.schedules` needs only which square brackets are edits or alternations
(a1111-behaviour.md §2.1) and the raw text around them; building the full tree
(:mod:`promptweights._lark`) for that costs several times more. This scanner applies the same rules
to the same tokens and keeps everything else as raw strings. ``tests/test_editing.py`` proves on
generated, hostile and corpus prompts that it gives the same schedules as the tree.

The rules, as the tree builder applies them (see :mod:`promptweights._lark`):

* brackets are balanced first: a closer without an opener is text (and poisons its bracket), an
  opener nested past the depth cap is text with its closer, an opener never closed is unclosed;
* ``[...]`` is an alternation when it is closed, well formed and has only ``|`` separators at its
  level; an edit when it has one or two ``:`` and the last part is a single number token; else it
  is text, well formed only without separators;
* ``(...)`` is well formed when closed with at most one ``:`` and nothing ill formed inside;
* a ``|`` left outside an alternation, or a backslash before a newline or at the end, makes the
  whole scheduling parse fail: the text is then used unchanged.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from ._lark import _WHEN_RE, fast_lexer, merged_strings
from .dialects import A1111

__all__ = ["EditPiece", "Pieces", "render_pieces", "scan"]

_ESCAPE, _BACKSLASH, _OPEN, _CLOSE, _COLON, _PIPE, _TEXT = range(1, 8)
#: What the scanner does with each terminal of grammar/a1111.lark.
TERMINALS = {
    "ESCAPE": _ESCAPE,
    "BACKSLASH": _BACKSLASH,
    "LPAR": _OPEN,
    "LSQB": _OPEN,
    "RPAR": _CLOSE,
    "RSQB": _CLOSE,
    "COLON": _COLON,
    "PIPE": _PIPE,
    "TEXT": _TEXT,
    # promptweights' per-encoder block `TE(`: to A1111 the text `TE` and a round bracket.
    "TE_OPEN": _OPEN,
}
# The text an opener puts before its bracket (`TE(` is `TE` and `(` to A1111).
_PREFIX = {"TE(": ("TE",)}


@functools.cache
def _lexer() -> tuple[re.Pattern[str], tuple[int, ...]]:
    """The a1111 grammar's terminals (its fast lexer) and the scanner's code for each group."""
    lexer = fast_lexer(A1111)
    return lexer.pattern, tuple(TERMINALS[kind] if kind else 0 for kind in lexer.kinds)


@dataclass(frozen=True, slots=True, eq=False)
class EditPiece:
    """``[before:after:when]`` as pieces; ``before`` is None for ``[after:when]``."""

    before: list[Piece] | None
    after: list[Piece]
    when: float
    when_text: str


@dataclass(frozen=True, slots=True, eq=False)
class AlternationPiece:
    """``[a|b|c]`` with each option as pieces."""

    options: list[list[Piece]]


Piece = str | EditPiece | AlternationPiece
Pieces = list[Piece]


class _Frame:
    # Items are the bracket's tokens and reduced sub-brackets, one each; a separator is the index
    # of its item (which says ":" or "|"). Bare indices, not (index, kind) tuples: `[|||…]`
    # holds one per character.
    __slots__ = ("closer", "deep", "items", "ok", "separators")

    def __init__(self, closer: str, deep: bool) -> None:
        self.closer = closer
        self.deep = deep
        self.items: list[Piece] = []
        self.ok = True  # nothing ill formed directly inside
        self.separators: list[int] = []


def _join(items: list[Piece], start: int = 0, stop: int | None = None) -> Pieces:
    return merged_strings(items[start:stop])


def scan(text: str, max_depth: int) -> Pieces | None:
    """Return ``text`` as pieces (raw strings, edits, alternations), or ``None`` when A1111's
    scheduling parse fails as a whole."""
    top = _Frame("", False)
    stack = [top]
    depth = 0
    failed = False
    pattern, codes = _lexer()
    for match in pattern.finditer(text):
        group = codes[match.lastindex or 0]
        token = match.group()
        frame = stack[-1]
        if group == _TEXT:
            frame.items.append(token)
        elif group == _OPEN:
            frame.items.extend(_PREFIX.get(token, ()))
            deep = depth >= max_depth
            child = _Frame("]" if token == "[" else ")", deep)
            if deep:
                frame.items.append(token[-1])
                # A deep bracket is text: its content and separators go on into the lists of
                # the bracket it sits in (sharing them keeps 10,000 deep brackets linear).
                child.items = frame.items
                child.separators = frame.separators
            else:
                depth += 1
            stack.append(child)
        elif group == _CLOSE:
            if frame.closer != token:  # the top frame's closer is "": it matches none
                frame.items.append(token)  # stray closer: text, and ill formed
                frame.ok = False
            elif frame.deep:
                stack.pop()
                frame.items.append(token)
                # Fold the deep frame's flag into the real bracket it sits in.
                parent = stack[-1]
                parent.ok = parent.ok and frame.ok
            else:
                stack.pop()
                depth -= 1
                failed = _close(frame, stack[-1], closed=True) or failed
        elif group in (_COLON, _PIPE):
            frame.separators.append(len(frame.items))
            frame.items.append(token)
        else:
            frame.items.append(token)
            if group == _BACKSLASH:
                failed = True
                frame.ok = False
    failed = _close_unclosed(stack) or failed
    return None if failed or any(top.items[i] == "|" for i in top.separators) else _join(top.items)


def _close_unclosed(stack: list[_Frame]) -> bool:
    """Reduce the brackets still open at the end; return True if the scheduling parse fails."""
    failed = False
    while len(stack) > 1:
        frame = stack.pop()
        if not frame.deep:
            failed = _close(frame, stack[-1], closed=False) or failed
        else:
            parent = stack[-1]
            parent.ok = parent.ok and frame.ok
    return failed


def _close(frame: _Frame, parent: _Frame, *, closed: bool) -> bool:
    """Reduce a bracket into its parent; return True if the scheduling parse fails."""
    items = frame.items
    kinds = {items[i] for i in frame.separators}
    well_formed = closed and frame.ok
    if frame.closer == "]" and well_formed and kinds:
        node = _edit_or_alternation(items, frame.separators, kinds)
        if node is not None:
            parent.items.append(node)
            return False
    opener, closer = ("(", ")") if frame.closer == ")" else ("[", "]")
    body = _join(items)
    pieces: Pieces = [opener, *body, closer] if closed else [opener, *body]
    if all(isinstance(p, str) for p in pieces):
        parent.items.append("".join(pieces))  # type: ignore[arg-type]
    else:
        parent.items.extend(pieces)
    colons = sum(items[i] == ":" for i in frame.separators)
    if frame.closer == ")":
        ok = well_formed and colons <= 1 and "|" not in kinds
    else:
        ok = well_formed and not kinds
    parent.ok = parent.ok and ok
    return "|" in kinds


def _edit_or_alternation(
    items: list[Piece], separators: list[int], kinds: set[Piece]
) -> Piece | None:
    if kinds == {"|"}:
        options = []
        start = 0
        for index in separators:
            options.append(_join(items, start, index))
            start = index + 1
        options.append(_join(items, start))
        return AlternationPiece(options)
    if kinds != {":"} or len(separators) > 2:
        return None
    # The step is the whole last part, one TEXT token. A str item that reads as a number is one:
    # the other str items are escapes, brackets kept as text and stray or deep brackets, which
    # all hold a bracket or a backslash.
    if separators[-1] != len(items) - 2:
        return None
    when_text = items[-1]
    if not isinstance(when_text, str):
        return None
    match = _WHEN_RE.fullmatch(when_text)
    if match is None:
        return None
    first = separators[0]
    before = _join(items, 0, first) if len(separators) == 2 else None
    after = (
        _join(items, first + 1, separators[-1]) if len(separators) == 2 else _join(items, 0, first)
    )
    return EditPiece(before, after, float(match.group(1)), when_text)


def walk(pieces: Pieces) -> list[EditPiece | AlternationPiece]:
    """Every edit and alternation in ``pieces``, nested ones included."""
    found: list[EditPiece | AlternationPiece] = []
    stack = [pieces]
    while stack:
        for piece in stack.pop():
            if isinstance(piece, EditPiece):
                found.append(piece)
                stack.append(piece.after)
                if piece.before is not None:
                    stack.append(piece.before)
            elif isinstance(piece, AlternationPiece):
                found.append(piece)
                stack.extend(piece.options)
    return found


def render_pieces(pieces: Pieces, step: int, step_of: Callable[[EditPiece], int]) -> str:
    """The text shown at ``step`` (A1111's rules: §4.3)."""
    out: list[str] = []
    _render(pieces, step, step_of, out)
    return "".join(out)


def _render(pieces: Pieces, step: int, step_of: Callable[[EditPiece], int], out: list[str]) -> None:
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
        elif isinstance(piece, EditPiece):
            if step <= step_of(piece):
                _render(piece.before or [], step, step_of, out)
            else:
                _render(piece.after, step, step_of, out)
        else:
            _render(piece.options[(step - 1) % len(piece.options)], step, step_of, out)
