"""Weighted spans: the ``(text, weight)`` list each dialect's emphasis rules give a text.

For ``"a1111"`` this is exactly A1111's ``parse_prompt_attention`` (a1111-behaviour.md §2.2, §3):
the same token order, the same float products (closing order, then open round brackets outermost
first, then open square ones), ``("BREAK", -1.0)`` markers and merging of exactly equal
neighbours. It runs on the text of one schedule variant, after scheduling, as A1111 does.

:func:`tree_spans` computes the same list from a parsed tree; a property test checks that both agree
on every well-formed prompt, which is what lets the regex pass here stand in for the grammar on the
hot path.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable

from ._lark import BRACE_WEIGHT, NOVELAI_SQUARE_WEIGHT, SQUARE_WEIGHT, comfy_float
from .errors import InvalidArgumentError, UnknownNameError
from .tree import DEFAULT_MAX_DEPTH, Alternation, Break, Edit, Emphasis, Node, Text

__all__ = ["DIALECTS", "tree_spans", "weighted_spans"]

DIALECTS = ("a1111", "comfy", "novelai")

ROUND_WEIGHT = 1.1
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
# NovelAI: {x} and [x]; escapes for the four brackets and the backslash.
_NOVELAI_TOKEN_RE = re.compile(r"\\[\\{}\[\]]|\\|[{\[]|[}\]]|[^\\{}\[\]]+")
_BREAK_RE = re.compile(r"\s*\bBREAK\b\s*")
_ESCAPE_RE = re.compile(r"\\([\\()\[\]])|\\")

_COMFY_OPEN = "\ue000"  # private-use stand-ins for \( and \), as ComfyUI's escape_important
_COMFY_CLOSE = "\ue001"


class _Spans:
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


def _stack_spans(
    text: str,
    tokens: re.Pattern[str],
    factors: dict[str, tuple[str, float]],
    *,
    breaks: bool,
    max_depth: int,
) -> tuple[tuple[str, float], ...]:
    """A1111's emphasis machine (§2.2): one stack per bracket kind, closing multiplies the range
    since its opener; open brackets apply at the end, kinds in ``factors`` order, outermost first.

    ``factors`` maps each closer to (its opener, its factor); an explicit weight (token group 1)
    closes a round bracket. An opener with ``max_depth`` brackets already open is text, and so is
    the closer that pops it.
    """
    spans = _Spans()
    stacks: dict[str, list[int]] = {opener: [] for opener, _ in factors.values()}
    depth = 0
    for match in tokens.finditer(text):
        token = match.group(0)
        first = token[0]
        if first in stacks:  # an opener
            if depth >= max_depth:
                stacks[first].append(_DEEP)
                spans.add(token, split_breaks=False)
            else:
                stacks[first].append(spans.start())
                depth += 1
            continue
        if first in factors:  # a closer
            opener, factor = factors[first]
            stack = stacks[opener]
            number = None
        elif first == ":" and match.lastindex:  # `:1.2)`, an explicit weight closing `(`
            stack = stacks["("]
            number = match.group(1)
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
        spans.multiply(start, factor if number is None else _explicit(spans, token, number))
    for opener, factor in factors.values():
        for start in stacks[opener]:
            if start != _DEEP:
                spans.multiply(start, factor)
    return spans.merged()


def _explicit(spans: _Spans, token: str, number: str) -> float:
    try:
        return float(number)
    except ValueError:
        # A1111 raises here (`(a:1.2.3)`); lenient: the weight stays text, like `(a:x)`.
        spans.add(token[:-1])
        return ROUND_WEIGHT


_A1111_FACTORS = {")": ("(", ROUND_WEIGHT), "]": ("[", SQUARE_WEIGHT)}
_NOVELAI_FACTORS = {"}": ("{", BRACE_WEIGHT), "]": ("[", NOVELAI_SQUARE_WEIGHT)}


def _a1111_spans(text: str, max_depth: int) -> tuple[tuple[str, float], ...]:
    return _stack_spans(text, _A1111_TOKEN_RE, _A1111_FACTORS, breaks=True, max_depth=max_depth)


def _novelai_spans(text: str, max_depth: int) -> tuple[tuple[str, float], ...]:
    return _stack_spans(
        text, _NOVELAI_TOKEN_RE, _NOVELAI_FACTORS, breaks=False, max_depth=max_depth
    )


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


def _comfy_spans(text: str, max_depth: int) -> tuple[tuple[str, float], ...]:
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
            inner_weight = weight * ROUND_WEIGHT
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


_SPANS = {"a1111": _a1111_spans, "comfy": _comfy_spans, "novelai": _novelai_spans}


@functools.lru_cache(maxsize=8192)
def _cached_spans(text: str, dialect: str, max_depth: int) -> tuple[tuple[str, float], ...]:
    try:
        spans = _SPANS[dialect]
    except KeyError:
        raise UnknownNameError("dialect", dialect, DIALECTS) from None
    return spans(text, max_depth)


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

    >>> weighted_spans("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    >>> weighted_spans("a BREAK [b]")
    [('a', 1.0), ('BREAK', -1.0), ('', 1.0), ('b', 0.9090909090909091)]
    """
    return list(_cached_spans(text, dialect, max_depth))


weighted_spans.cache_clear = _cached_spans.cache_clear  # type: ignore[attr-defined]


def unescape(text: str) -> str:
    """Resolve A1111 emphasis escapes in raw text: ``\\(`` → ``(``; a lone backslash is dropped."""
    return _ESCAPE_RE.sub(lambda m: m.group(1) or "", text) if "\\" in text else text


def tree_spans(nodes: Iterable[Node]) -> list[tuple[str, float]]:
    """Compute A1111's weighted spans from parsed nodes (one schedule variant, no edits).

    Weights multiply along the nesting path in A1111's order: closed brackets innermost first,
    then brackets left open, round before square, outermost first. For well-formed prompts this
    equals :func:`weighted_spans` of the rendered text. Edit and alternation nodes must be resolved
    first (:func:`promptweights.render.resolve_at`); they raise ``ValueError`` here.
    """
    spans = _Spans()
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
        elif isinstance(node, Emphasis):
            stack.append((iterator, len(path)))
            path.append(node)
            iterator = iter(node.children)
        elif isinstance(node, Edit | Alternation):
            raise InvalidArgumentError("resolve edits and alternations before computing spans")
    return list(spans.merged())


def _add_text(spans: _Spans, raw: str) -> None:
    # Escapes resolve to their own segments, as in the emphasis pass.
    pos = 0
    for match in _ESCAPE_RE.finditer(raw):
        if match.start() > pos:
            spans.add(raw[pos : match.start()], split_breaks=False)
        spans.add(match.group(1) or "", split_breaks=False)
        pos = match.end()
    if pos < len(raw) or not raw:
        spans.add(raw[pos:], split_breaks=False)


def _apply(spans: _Spans, start: int, path: list[Emphasis]) -> None:
    closed = [node.weight for node in reversed(path) if node.closed]
    open_round = [n.weight for n in path if not n.closed and n.kind != "square"]
    open_square = [n.weight for n in path if not n.closed and n.kind == "square"]
    for factor in (*closed, *open_round, *open_square):
        spans.multiply(start, factor)
