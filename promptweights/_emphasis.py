"""The emphasis passes: each dialect's ``(text, weight)`` list, as its own tool computes it.

* A1111's ``parse_prompt_attention`` (a1111-behaviour.md §2.2, §3) and NovelAI's emphasis
  (weighting-strategies.md §1.2) are one stack machine, :func:`stack_spans`, driven by a dialect's
  bracket table; the token regexes are the tools' own (A1111's ``re_attention``), which is a
  different tokenisation from the scheduling grammar in ``grammar/a1111.lark``.
* ComfyUI's ``token_weights`` (weighting-strategies.md §1.3) is :func:`comfy_spans`.

:mod:`promptweights.dialects` names the function of each dialect, and
:func:`promptweights.weighted_spans` looks it up there.
"""

from __future__ import annotations

import bisect
import functools
import re
from typing import TYPE_CHECKING

from ._lark import comfy_float

if TYPE_CHECKING:
    from .dialects import Dialect

__all__ = ["BREAK_MARKER", "ESCAPE_RE", "Spans", "a1111_spans", "comfy_spans", "novelai_spans"]

BREAK_MARKER = ("BREAK", -1.0)

# A1111's emphasis tokens, in the order they are tried (a1111-behaviour.md §2.2).
_A1111_TOKEN_RE = re.compile(
    r"""
      \\[\\()\[\]]              # escape: a literal character
    | \\                        # a lone backslash: dropped
    | [(\[]                     # open
    | :\s*([+-]?[.\d]+)\s*\)    # explicit weight closing a round bracket
    | [)\]]                     # close
    | [^\\()\[\]:]+             # text
    | :                         # text
    """,
    re.VERBOSE,
)
# NovelAI: {x} and [x]; escapes for the four brackets and the backslash; V4's `1.5::x::`, whose
# opener carries its weight (group 1) and ends at the next `::` (grammar/novelai.lark).
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_NOVELAI_TOKEN_RE = re.compile(
    rf"\\[\\{{}}\[\]]|\\|[{{\[]|[}}\]]|({_NUMBER})::|::|:"
    # Text; the lookahead runs only at characters that can start a number.
    rf"|(?:[^\\{{}}\[\]:0-9+\-.]+|(?!{_NUMBER}::)[0-9+\-.])+"
)
_WEIGHT_END = "::"
_BREAK_RE = re.compile(r"\s*\bBREAK\b\s*")
ESCAPE_RE = re.compile(r"\\([\\()\[\]])|\\")

_COMFY_OPEN = "\ue000"  # private-use stand-ins for \( and \), as ComfyUI's escape_important
_COMFY_CLOSE = "\ue001"


class Spans:
    """Spans with A1111's range multiplication; text added between two bracket events joins the
    last span at once (it gets the same products), so the work is depth × spans, not × tokens."""

    __slots__ = ("_open", "joined", "texts", "weights")

    def __init__(self) -> None:
        self.texts: list[str] = []  # each span's first segment
        self.joined: dict[int, list[str]] = {}  # span → all its segments, where it has several
        self.weights: list[float] = []
        self._open = False  # whether the next segment may join the last span

    def _append(self, text: str) -> None:
        if self._open:
            last = len(self.texts) - 1
            pieces = self.joined.get(last)
            if pieces is None:
                self.joined[last] = [self.texts[last], text]
            else:
                pieces.append(text)
        else:
            self.texts.append(text)
            self.weights.append(1.0)
            self._open = True

    def add(self, text: str, *, split_breaks: bool = True) -> None:
        if split_breaks and "BREAK" in text:
            for i, piece in enumerate(_BREAK_RE.split(text)):
                if i:
                    self.add_break()
                self._append(piece)
        elif self._open:
            self._append(text)
        else:  # the common case, inline
            self.texts.append(text)
            self.weights.append(1.0)
            self._open = True

    def add_break(self) -> None:
        self.texts.append(BREAK_MARKER[0])
        self.weights.append(BREAK_MARKER[1])
        self._open = False

    def start(self) -> int:
        """The index of the next span (an opener's position): the next text starts a span."""
        self._open = False
        return len(self.texts)

    def multiply(self, start: int, factor: float) -> None:
        self._open = False
        weights = self.weights
        for i in range(start, len(weights)):
            weights[i] *= factor

    def merged(self) -> tuple[tuple[str, float], ...]:
        if not self.texts:
            return (("", 1.0),)
        # Collect the segments of each merged span and join once: `+=` in a loop is quadratic.
        joined = self.joined
        out: list[tuple[list[str], float]] = []
        for i, (text, weight) in enumerate(zip(self.texts, self.weights, strict=True)):
            pieces = joined.get(i) if joined else None
            if weight != weight:  # NaN: A1111 never merges it, not even inside a span
                out.extend(([piece], weight) for piece in pieces or [text])
            elif out and out[-1][1] == weight:
                if pieces is None:
                    out[-1][0].append(text)
                else:
                    out[-1][0].extend(pieces)
            else:
                out.append(([text] if pieces is None else pieces, weight))
        return tuple(("".join(pieces), weight) for pieces, weight in out)


_DEEP = -1  # a stack entry for an opener past the depth cap: it and its closer are text


def stack_spans(
    text: str, tokens: re.Pattern[str], dialect: Dialect, max_depth: int
) -> tuple[tuple[str, float], ...]:
    """A1111's emphasis machine (§2.2): one stack per bracket kind, closing multiplies the range
    since its opener; open brackets apply at the end, kinds in the order of the dialect's bracket
    table, outermost first.

    An explicit weight (token group 1) closes a round bracket. An opener with ``max_depth``
    brackets already open is text, and so is the closer that pops it.
    """
    factors = _closers(dialect)
    breaks = dialect.breaks
    spans = Spans()
    stacks: dict[str, list[int]] = {opener: [] for opener, _ in factors.values()}
    # NovelAI's `1.5::x::`: each open section's start and factor (the number of its opener).
    weighted: list[tuple[int, float]] = []
    has_weights = _WEIGHT_END in stacks
    depth = 0
    for match in tokens.finditer(text):
        token = match.group(0)
        first = token[0]
        if first in stacks:  # an opener
            depth = _open(spans, stacks[first], token, depth, max_depth)
            continue
        if first in factors:  # a closer
            opener, factor = factors[first]
            stack = stacks[opener]
            number = None
        elif first == ":" and match.lastindex:  # `:1.2)`, an explicit weight closing `(`
            stack = stacks["("]
            number = match.group(1)
        elif has_weights and (match.lastindex or token == _WEIGHT_END):
            depth = _weight_token(spans, weighted, match, depth, max_depth)
            continue
        elif first == "\\":
            spans.add(token[1:], split_breaks=False)
            continue
        else:
            spans.add(token, split_breaks=breaks)
            continue
        if not stack:  # closes nothing: text
            spans.add(token, split_breaks=breaks)
            continue
        start = stack.pop()
        if start == _DEEP:
            spans.add(token, split_breaks=False)
            continue
        depth -= 1
        if number is not None:  # the fallback is what `(` weighs
            factor = _explicit(spans, token, number, factors[")"][1])
        spans.multiply(start, factor)
    _apply_unclosed(spans, stacks, factors)
    for start, factor in weighted:  # sections left open apply to the rest, outermost first
        if start != _DEEP:
            spans.multiply(start, factor)
    return spans.merged()


def _open(spans: Spans, stack: list[int], token: str, depth: int, cap: int) -> int:
    """Push an opener (text past the depth cap); return the new depth."""
    if depth >= cap:
        stack.append(_DEEP)
        spans.add(token, split_breaks=False)
        return depth
    stack.append(spans.start())
    return depth + 1


def _weight_token(
    spans: Spans, weighted: list[tuple[int, float]], match: re.Match[str], depth: int, cap: int
) -> int:
    """NovelAI's ``1.5::`` (it opens a section weighing the number) or ``::`` (it closes the
    innermost open one; text where none is open); returns the new depth."""
    token = match.group(0)
    if match.lastindex:  # an opener
        if depth >= cap:
            weighted.append((_DEEP, 1.0))
            spans.add(token, split_breaks=False)
            return depth
        weighted.append((spans.start(), float(match.group(1))))
        return depth + 1
    if not weighted:
        spans.add(token, split_breaks=False)
        return depth
    start, factor = weighted.pop()
    if start == _DEEP:
        spans.add(token, split_breaks=False)
        return depth
    spans.multiply(start, factor)
    return depth - 1


def _apply_unclosed(
    spans: Spans, stacks: dict[str, list[int]], factors: dict[str, tuple[str, float]]
) -> None:
    """Brackets still open at the end apply to the rest, kinds in the bracket table's order."""
    for opener, factor in factors.values():
        if opener == _WEIGHT_END:
            continue  # NovelAI's sections carry their own factors (stack_spans applies them)
        for start in stacks[opener]:
            if start != _DEEP:
                spans.multiply(start, factor)


@functools.cache
def _closers(dialect: Dialect) -> dict[str, tuple[str, float]]:
    """Each closer of the dialect → (its opener, its factor), in the bracket table's order."""
    return {
        bracket.closer if bracket.terminal is None else _WEIGHT_END: (
            bracket.opener or _WEIGHT_END,
            bracket.factor,
        )
        for bracket in dialect.brackets
    }


def _explicit(spans: Spans, token: str, number: str, round_factor: float) -> float:
    try:
        return float(number)
    except ValueError:
        # A1111 raises here (`(a:1.2.3)`); lenient: the weight stays text, like `(a:x)`.
        spans.add(token[:-1])
        return round_factor


def a1111_spans(dialect: Dialect, text: str, max_depth: int) -> tuple[tuple[str, float], ...]:
    """A1111's ``parse_prompt_attention`` (a1111-behaviour.md §2.2), with the depth cap."""
    return stack_spans(text, _A1111_TOKEN_RE, dialect, max_depth)


def novelai_spans(dialect: Dialect, text: str, max_depth: int) -> tuple[tuple[str, float], ...]:
    """NovelAI's ``{x}`` ×1.05 and ``[x]`` ÷1.05, nesting multiplies (weighting-strategies.md
    §1.2), with the depth cap."""
    return stack_spans(text, _NOVELAI_TOKEN_RE, dialect, max_depth)


_PAREN_RE = re.compile(r"[()]")


class _ComfyText:
    """The escaped text and its round brackets, matched once: ``pos`` of each bracket, whether it
    opens, and the index of its partner (-1 for none; a closer with nothing open has none)."""

    __slots__ = ("mate", "opens", "pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = [match.start() for match in _PAREN_RE.finditer(text)]
        self.opens = [text[p] == "(" for p in self.pos]
        self.mate = [-1] * len(self.pos)
        stack: list[int] = []
        for k, opens in enumerate(self.opens):
            if opens:
                stack.append(k)
            elif stack:
                partner = stack.pop()
                self.mate[k] = partner
                self.mate[partner] = k

    def bracket_at(self, start: int) -> int:
        """The index of the first bracket at or after character ``start``."""
        return bisect.bisect_left(self.pos, start)


def comfy_spans(dialect: Dialect, text: str, max_depth: int) -> tuple[tuple[str, float], ...]:
    """ComfyUI's ``token_weights`` (weighting-strategies.md §1.3) in one pass; a group with
    ``max_depth`` weighed groups around it stays text, brackets included.

    ComfyUI splits a text at its top-level brackets (``parse_parentheses``) and calls itself on
    the inside of each weighed ``(...)`` group, which splits the same characters again at every
    level. Here the brackets are matched once (:class:`_ComfyText`) and each level walks only its
    own brackets, jumping over the groups inside it, so every bracket is visited once: the same
    pieces, in the same order, from the same float operations. ComfyUI's quirks stay: a closer
    with nothing open sends the level below zero, and brackets are text until it is back at zero;
    a group left open at the end of a level is weighed when its last character is ``)``.
    """
    escaped = _ComfyText(text.replace("\\)", _COMFY_CLOSE).replace("\\(", _COMFY_OPEN))
    chars, pos, opens, mate = escaped.text, escaped.pos, escaped.opens, escaped.mate
    count = len(pos)
    factor = dialect.factor("round")
    out: list[tuple[str, float]] = []
    # One frame per level being walked: (next character, next bracket, end, weight, depth,
    # how far below zero ComfyUI's level is).
    frames: list[tuple[int, int, int, float, int, int]] = [(0, 0, len(chars), 1.0, 0, 0)]
    while frames:
        cur, k, end, weight, depth, below = frames[-1]
        while k < count and pos[k] < end:
            if below or not opens[k]:  # a bracket inside text (ComfyUI's level is below zero)
                below += -1 if opens[k] else 1
                k += 1
                continue
            at = pos[k]
            if cur < at:
                out.append((chars[cur:at], weight))
            partner = mate[k]
            if partner != -1 and pos[partner] < end:
                stop, last, after = pos[partner] + 1, partner, partner + 1
            else:  # open to the end of this level
                stop, last, after = end, escaped.bracket_at(end) - 1, count
            if stop - at < 2 or chars[stop - 1] != ")" or depth >= max_depth:
                out.append((chars[at:stop], weight))  # not weighed: text, brackets and all
                cur, k = stop, after
                continue
            inner_start, inner_end = at + 1, stop - 1
            inner_weight = weight * factor
            # ComfyUI tries float() after the inner text's last colon; past a bracket that fails,
            # so only the run after the last bracket inside can hold the weight.
            run_start = max(inner_start, pos[last - 1] + 1)
            cut = chars.rfind(":", run_start, inner_end)
            if cut > inner_start:  # a colon first in the group is text
                number = comfy_float(chars[cut + 1 : inner_end])
                if number is not None:
                    inner_weight, inner_end = number, cut
            frames[-1] = (stop, after, end, weight, depth, below)
            frames.append((inner_start, k + 1, inner_end, inner_weight, depth + 1, 0))
            break
        else:
            if cur < end:
                out.append((chars[cur:end], weight))
            frames.pop()
    return tuple((_comfy_unescape(piece), weight) for piece, weight in out)


def _comfy_unescape(piece: str) -> str:
    if _COMFY_OPEN in piece or _COMFY_CLOSE in piece:
        return piece.replace(_COMFY_OPEN, "(").replace(_COMFY_CLOSE, ")")
    return piece
