"""Dynamic prompts and wildcards: ``{a|b}``, ``{2$$a|b|c}``, ``__name__``, expanded to prompts.

The syntax is the one of the dynamicprompts library (adieyal/dynamicprompts, docs/SYNTAX.md), used
by sd-dynamic-prompts in A1111, by ComfyUI nodes and by sdnext; ``grammar/dynamic.lark`` is the
one place it is written (the scanner here uses that grammar's terminals):

* ``{a|b|c}``: one of the options; ``{2::a|b}``: weights (relative, 1 when omitted), used when
  drawing at random;
* ``{2$$a|b|c}``: two distinct options joined by ``", "``; ``{1-3$$ and $$a|b|c}``: one to three,
  joined by ``" and "``; ``{-2$$…}`` is ``{1-2$$…}``, ``{2-$$…}`` goes up to every option, and
  asking for more options than there are gives them all;
* ``__name__``: one value of a wildcard, from a folder of ``.txt`` files (one value per line,
  ``#`` lines are comments; ``sub/name`` for ``sub/name.txt``) or a ``dict``; values may hold
  variants and other wildcards; ``__colours*__`` takes the values of every matching name (``*``
  within a path segment, ``**`` across them); ``{2$$__name__}`` picks two distinct values.

Expansion runs *before* a dialect's parser, and never touches square brackets: a ``|`` inside
``[...]`` is A1111's alternation, never a variant separator, and the brackets stay as written.
NovelAI's ``{x}`` is emphasis: with ``dialect="novelai"``, braces without ``|`` or ``$$`` stay
emphasis (their contents are still expanded), and each variant is reported as a clash with its
position, since NovelAI would read its braces as emphasis.

Not supported (kept as text): variables ``${x=…}``, parameterised templates
``__name(x=y)__``, sampler prefixes ``{~…}`` / ``__@name__``, comments and YAML/JSON wildcard
files.

>>> expand("a {red|blue} {cat|dog}")
['a red cat', 'a red dog', 'a blue cat', 'a blue dog']
>>> expand("{2$$ and $$x|y}")
['x and y', 'y and x']
>>> expand("__animal__ at [day|night]", wildcards={"animal": ["cat", "{old|young} dog"]})
['cat at [day|night]', 'old dog at [day|night]', 'young dog at [day|night]']
"""

from __future__ import annotations

import itertools
import math
import os
import random
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union, cast

from . import _lark
from ._arguments import check_int, check_text
from .errors import (
    ArgumentTypeError,
    Diagnostic,
    InvalidArgumentError,
    LimitExceededError,
    PromptweightsWarning,
    UnknownNameError,
)
from .limits import MAX_PROMPT_CHARS

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_MAX_DEPTH",
    "MAX_CHARS",
    "MAX_NESTING",
    "MAX_WILDCARD_FILE_CHARS",
    "MODES",
    "Wildcards",
    "count",
    "expand",
]

#: Most prompts one :func:`expand` call may give (its ``limit``).
DEFAULT_LIMIT = 1000
#: How deep wildcards may nest (a wildcard whose values use a wildcard is depth 2).
DEFAULT_MAX_DEPTH = 10
#: Most characters all the prompts of one call may add up to.
MAX_CHARS = 16_000_000
#: Largest wildcard file read (characters).
MAX_WILDCARD_FILE_CHARS = 4_194_304
#: How deep braces may nest in one template or wildcard value; deeper ones are text (with a
#: ``too-deep`` diagnostic), so that expansion stays within Python's recursion limit.
MAX_NESTING = 20
#: Counts saturate here: a template that would give more prompts counts as this many.
_COUNT_CAP = 2**63
#: The modes of :func:`expand`.
MODES = ("combinatorial", "random")

_GRAMMAR = "dynamic.lark"
_RANGE_RE = re.compile(r"([0-9]*)(-?)([0-9]*)\$\$(?:(.*)\$\$)?", re.DOTALL)
_DEFAULT_SEPARATOR = ", "


# --- the parsed template ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class _Variant:
    """``{…|…}``: options (each a sequence), their weights, how many to pick and the joiner."""

    options: tuple[tuple[_Node, ...], ...]
    weights: tuple[float, ...]
    low: int
    high: int | None  # None: every option
    separator: str
    pos: int


@dataclass(frozen=True, slots=True, eq=False)
class _Wildcard:
    name: str
    pos: int


_Node = Union[str, _Variant, _Wildcard]  # noqa: UP007 (a runtime alias)


@dataclass(slots=True)
class _Frame:
    """An open ``{``: its options so far, their weights and the square brackets open in it."""

    pos: int
    range_text: str | None = None
    options: list[list[_Node]] = field(default_factory=lambda: [[]])
    weights: list[float] = field(default_factory=lambda: [1.0])
    weight_texts: list[str] = field(default_factory=lambda: [""])  # as written, for text
    squares: int = 0


def _range(text: str, pos: int) -> tuple[int, int | None, str]:
    match = _RANGE_RE.fullmatch(text)
    if match is None:  # pragma: no cover - the terminal only matches ranges
        raise InvalidArgumentError(f"bad range {text!r} at {pos}")
    low_text, dash, high_text, separator = match.groups()
    low = int(low_text) if low_text else 1
    high: int | None = int(high_text) if high_text else (None if dash else low)
    return low, high, _DEFAULT_SEPARATOR if separator is None else separator


class _Parser:
    """Tokens of ``grammar/dynamic.lark`` → nodes, in one pass with a stack of open braces."""

    def __init__(self, text: str, novelai: bool, offset: int | None) -> None:
        self.text = text
        self.novelai = novelai
        self.offset = offset  # where problems are reported: None for the text itself
        self.diagnostics: list[Diagnostic] = []
        self.stack: list[_Frame] = []
        self.top: list[_Node] = []
        self.deep = 0  # braces open past MAX_NESTING (text)

    def _report(self, kind: str, message: str, pos: int) -> None:
        self.diagnostics.append(
            Diagnostic(kind, message, pos if self.offset is None else self.offset)
        )

    def _parts(self) -> list[_Node]:
        return self.stack[-1].options[-1] if self.stack else self.top

    def parse(self) -> tuple[_Node, ...]:
        lexer = _lark.file_lexer(_GRAMMAR)
        for match in lexer.pattern.finditer(self.text):
            self._token(lexer.kinds[match.lastindex or 0], match.group(), match.start())
        while self.stack:
            frame = self.stack.pop()
            self._report("unclosed", "'{' is never closed; it is kept as text", frame.pos)
            self._parts().extend(self._as_text(frame))
        return tuple(_merged(self.top))

    def _token(self, kind: str, value: str, pos: int) -> None:
        frame = self.stack[-1] if self.stack else None
        if kind in ("LBRACE", "RBRACE") and (self.deep or len(self.stack) >= MAX_NESTING):
            self._too_deep(kind, value, pos)
        elif kind == "LBRACE":
            self.stack.append(_Frame(pos))
        elif kind == "RBRACE":
            self._close(pos) if frame is not None else self._stray(value, pos)
        elif kind == "PIPE" and frame is not None and frame.squares == 0:
            frame.options.append([])
            frame.weights.append(1.0)
            frame.weight_texts.append("")
        elif kind == "LSQB" and frame is not None:
            frame.squares += 1
            self._parts().append(value)
        elif kind == "RSQB" and frame is not None:
            frame.squares = max(0, frame.squares - 1)
            self._parts().append(value)
        elif kind == "RANGE" and frame is not None and self._at_start(frame, first=True):
            frame.range_text = value
        elif kind == "OPTION_WEIGHT" and frame is not None and self._at_start(frame):
            frame.weights[-1] = float(value[:-2])
            frame.weight_texts[-1] = value
        elif kind == "WILDCARD":
            self._parts().append(_Wildcard(value[2:-2], pos))
        else:
            self._parts().append(value)

    @staticmethod
    def _at_start(frame: _Frame, *, first: bool = False) -> bool:
        """Whether nothing was read yet in the current option (and it is the first one)."""
        fresh = not frame.options[-1] and not frame.weight_texts[-1]
        return fresh and (not first or (len(frame.options) == 1 and frame.range_text is None))

    def _too_deep(self, kind: str, value: str, pos: int) -> None:
        if kind == "LBRACE":
            if not self.deep:
                self._report("too-deep", f"braces nested past {MAX_NESTING} are text", pos)
            self.deep += 1
        elif self.deep:
            self.deep -= 1
        else:  # the closer of the innermost brace that is not too deep
            self._close(pos)
            return
        self._parts().append(value)

    def _stray(self, value: str, pos: int) -> None:
        self._report("stray-closer", "'}' closes nothing; it is kept as text", pos)
        self.top.append(value)

    def _close(self, pos: int) -> None:
        frame = self.stack.pop()
        parts = self._parts()
        if self.novelai and frame.range_text is None and len(frame.options) == 1:
            # NovelAI emphasis, not a variant (`{1.5::x::}` keeps its weight section)
            parts.extend(["{", frame.weight_texts[0], *frame.options[0], "}"])
            return
        if self.novelai:
            self._report(
                "dynamic-clash",
                "'{' opens a dynamic-prompts variant here; NovelAI reads {…} as emphasis ×1.05",
                frame.pos,
            )
        low, high, separator = (
            (1, 1, "") if frame.range_text is None else _range(frame.range_text, pos)
        )
        options = tuple(tuple(_merged(option)) for option in frame.options)
        parts.append(_Variant(options, tuple(frame.weights), low, high, separator, frame.pos))

    def _as_text(self, frame: _Frame) -> list[_Node]:
        """An unclosed brace: its text as written, wildcards and inner variants still active."""
        out: list[_Node] = ["{", frame.range_text or ""]
        for i, (option, weight) in enumerate(zip(frame.options, frame.weight_texts, strict=True)):
            if i:
                out.append("|")
            out.append(weight)
            out.extend(option)
        return out


def _merged(parts: Sequence[_Node]) -> list[_Node]:
    out: list[_Node] = []
    run: list[str] = []
    for part in parts:
        if isinstance(part, str):
            run.append(part)
            continue
        if run:
            out.append("".join(run))
            run = []
        out.append(part)
    if run and (joined := "".join(run)):
        out.append(joined)
    return out


# --- wildcards ----------------------------------------------------------------------------------

WildcardSource = Union["Wildcards", Mapping[str, object], str, os.PathLike[str]]


class Wildcards:
    """Named lists of values: from a folder of ``.txt`` files, or a ``dict``.

    A folder's ``sub/name.txt`` is the wildcard ``sub/name``; each non-empty line not starting
    with ``#`` is a value (stripped). A ``dict`` maps names to a list of values, one value (a
    ``str``) or a nested ``dict`` (``{"artists": {"dutch": [...]}}`` is ``artists/dutch``).
    Files are read when first used.

    >>> Wildcards({"colours": {"cold": ["blue"], "warm": ["red", "gold"]}}).values("colours/*")
    ('blue', 'red', 'gold')
    """

    def __init__(self, source: Mapping[str, object] | str | os.PathLike[str]) -> None:
        self._values: dict[str, tuple[str, ...]] = {}
        self._files: dict[str, Path] = {}
        if isinstance(source, Mapping):
            self._flatten(source, "")
        elif isinstance(source, str | os.PathLike):
            folder = Path(source)
            if not folder.is_dir():
                raise InvalidArgumentError(f"wildcards folder {str(folder)!r} is not a folder")
            for path in sorted(folder.rglob("*.txt")):
                if path.is_file():
                    self._files[path.relative_to(folder).with_suffix("").as_posix()] = path
        else:
            raise ArgumentTypeError(
                f"wildcards must be a folder, a dict or Wildcards, not {type(source).__name__}"
            )
        self.names = tuple(sorted({*self._values, *self._files}))

    def _flatten(self, mapping: Mapping[str, object], prefix: str) -> None:
        for key, value in mapping.items():
            if not isinstance(key, str):
                raise ArgumentTypeError(f"wildcard names must be str, not {type(key).__name__}")
            name = prefix + key
            if isinstance(value, str):
                self._values[name] = (value,)
            elif isinstance(value, Mapping):
                self._flatten(value, name + "/")
            elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
                self._values[name] = tuple(value)
            else:
                raise ArgumentTypeError(
                    f"wildcard {name!r} must be a str, a list of str or a dict of them"
                )

    def _read(self, name: str) -> tuple[str, ...]:
        if name not in self._values:
            path = self._files[name]
            if path.stat().st_size > MAX_WILDCARD_FILE_CHARS * 4:
                raise LimitExceededError(f"wildcard file {str(path)!r} is too large")
            text = path.read_text(encoding="utf-8", errors="replace")
            if len(text) > MAX_WILDCARD_FILE_CHARS:
                raise LimitExceededError(
                    f"wildcard file {str(path)!r} has {len(text)} characters; "
                    f"at most {MAX_WILDCARD_FILE_CHARS}"
                )
            lines = (line.strip() for line in text.splitlines())
            self._values[name] = tuple(line for line in lines if line and not line.startswith("#"))
        return self._values[name]

    def matches(self, pattern: str) -> list[str]:
        """The names ``pattern`` names: itself, or every match of its ``*`` / ``**`` / ``?``."""
        if not any(char in pattern for char in "*?"):
            return [pattern] if pattern in self.names else []
        regex = _glob(pattern)
        return [name for name in self.names if regex.fullmatch(name)]

    def values(self, pattern: str) -> tuple[str, ...]:
        """The values of every name ``pattern`` matches, in name order; empty if none."""
        return tuple(value for name in self.matches(pattern) for value in self._read(name))


def _glob(pattern: str) -> re.Pattern[str]:
    special = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    out = [special.get(piece, re.escape(piece)) for piece in re.split(r"(\*\*|\*|\?)", pattern)]
    return re.compile("".join(out), re.DOTALL)


def _wildcards(source: WildcardSource | None) -> Wildcards:
    if source is None:
        return Wildcards({})
    if isinstance(source, Wildcards):
        return source
    return Wildcards(source)


# --- resolution: wildcards become variants over their values --------------------------------


class _Resolver:
    """Parses the template and every wildcard value it reaches, once each, depth-capped."""

    def __init__(self, wildcards: Wildcards, novelai: bool, max_depth: int) -> None:
        self.wildcards = wildcards
        self.novelai = novelai
        self.max_depth = max_depth
        self.diagnostics: list[Diagnostic] = []
        self.done: dict[str, tuple[tuple[_Node, ...], ...] | None] = {}
        self.active: list[str] = []  # the wildcards being resolved, outermost first
        self.heights: dict[str, int] = {}  # how deep each resolved wildcard nests, itself included
        self.below: list[int] = [0]  # the deepest nesting met inside each level being resolved

    def _check_depth(self, name: str, height: int) -> None:
        if len(self.active) + height > self.max_depth:
            through = " → ".join(f"__{n}__" for n in [*self.active, name])
            raise LimitExceededError(
                f"wildcards nest deeper than max_depth={self.max_depth}: {through}"
            )

    def template(self, text: str, at: int | None) -> tuple[_Node, ...]:
        parser = _Parser(text, self.novelai, at)
        nodes = parser.parse()
        self.diagnostics.extend(parser.diagnostics)
        return tuple(self._node(node, at) for node in nodes)

    def _node(self, node: _Node, at: int | None) -> _Node:
        if isinstance(node, str):
            return node
        if isinstance(node, _Wildcard):
            values = self._values(node, at)
            if values is None:
                return f"__{node.name}__"
            return _Variant(values, (1.0,) * len(values), 1, 1, "", node.pos)
        if len(node.options) == 1 and len(node.options[0]) == 1:  # {2$$__name__}
            (only,) = node.options[0]
            if isinstance(only, _Wildcard):
                values = self._values(only, at)
                if values is not None:
                    weights = (1.0,) * len(values)
                    return _Variant(values, weights, node.low, node.high, node.separator, node.pos)
        options = tuple(tuple(self._node(n, at) for n in option) for option in node.options)
        return _Variant(options, node.weights, node.low, node.high, node.separator, node.pos)

    def _values(self, wildcard: _Wildcard, at: int | None) -> tuple[tuple[_Node, ...], ...] | None:
        name = wildcard.name
        where = wildcard.pos if at is None else at
        if name in self.active:
            chain = " → ".join(f"__{n}__" for n in [*self.active, name])
            raise LimitExceededError(f"wildcards include themselves: {chain}")
        if name not in self.done:
            self._check_depth(name, 1)
            texts = self.wildcards.values(name)
            self.active.append(name)
            self.below.append(0)
            try:
                self.done[name] = tuple(self.template(t, where) for t in texts) or None
            finally:
                self.active.pop()
                self.heights[name] = 1 + self.below.pop()
        self._check_depth(name, self.heights[name])
        self.below[-1] = max(self.below[-1], self.heights[name])
        values = self.done[name]
        if values is None:
            self.diagnostics.append(
                Diagnostic("unknown-wildcard", f"no wildcard named __{name}__; kept as text", where)
            )
        return values


# --- counting (before any work) -------------------------------------------------------------


def _bounds(variant: _Variant) -> tuple[int, int]:
    """How many options a variant picks, at least and at most, clipped to what it has."""
    n = len(variant.options)
    high = n if variant.high is None else min(variant.high, n)
    return min(variant.low, high), high


class _Sizes:
    """Upper bounds of each node's prompt count and longest prompt, memoised (wildcards are
    shared between the places that use them)."""

    def __init__(self) -> None:
        self.memo: dict[int, tuple[int, int]] = {}

    def sequence(self, nodes: Sequence[_Node]) -> tuple[int, int]:
        total, longest = 1, 0
        for node in nodes:
            count, width = self.node(node)
            total = min(total * count, _COUNT_CAP)
            longest += width
        return total, longest

    def node(self, node: _Node) -> tuple[int, int]:
        if isinstance(node, str):
            return 1, len(node)
        assert isinstance(node, _Variant)
        key = id(node)
        if key not in self.memo:
            self.memo[key] = self._variant(node)
        return self.memo[key]

    def _variant(self, node: _Variant) -> tuple[int, int]:
        sizes = [self.sequence(option) for option in node.options]
        low, high = _bounds(node)
        widths = sorted((width for _, width in sizes), reverse=True)
        longest = sum(widths[:high]) + len(node.separator) * max(high - 1, 0)
        if _picks_reach_cap(len(sizes), high):  # every option gives at least one prompt
            return _COUNT_CAP, longest
        # Ordered picks of k distinct options: k! × the k-th elementary symmetric polynomial.
        elementary = [1] + [0] * high
        for count, _ in sizes:
            for k in range(high, 0, -1):
                elementary[k] = min(elementary[k] + elementary[k - 1] * count, _COUNT_CAP)
        total = sum(math.factorial(k) * elementary[k] for k in range(low, high + 1))
        return min(total, _COUNT_CAP), longest


def _picks_reach_cap(n: int, k: int) -> bool:
    """Whether the ordered picks of ``k`` of ``n`` options reach the count cap (a few steps)."""
    product = 1
    for i in range(k):
        product *= n - i
        if product >= _COUNT_CAP:
            return True
    return False


# --- generation ---------------------------------------------------------------------------------


class _Combinations:
    """Every prompt, in dynamicprompts' order: the last variant varies fastest."""

    def __init__(self) -> None:
        self.memo: dict[int, list[str]] = {}

    def sequence(self, nodes: Sequence[_Node]) -> list[str]:
        lists: list[list[str]] = []
        for node in nodes:
            values = [node] if isinstance(node, str) else self.variant(cast(_Variant, node))
            if len(values) == 1 and lists and len(lists[-1]) == 1:
                lists[-1] = [lists[-1][0] + values[0]]
            else:
                lists.append(values)
        if not lists:
            return [""]
        if len(lists) == 1:
            return lists[0]
        return ["".join(parts) for parts in itertools.product(*lists)]

    def variant(self, node: _Variant) -> list[str]:
        key = id(node)
        if key not in self.memo:
            self.memo[key] = self._variant(node)
        return self.memo[key]

    def _variant(self, node: _Variant) -> list[str]:
        options = [self.sequence(option) for option in node.options]
        low, high = _bounds(node)
        if low == high == 1:
            return list(dict.fromkeys(itertools.chain.from_iterable(options)))
        out: dict[str, None] = {}
        for k in range(low, high + 1):
            for picked in itertools.permutations(range(len(options)), k):
                for parts in itertools.product(*(options[i] for i in picked)):
                    if len(set(parts)) == k:  # no value twice, as dynamicprompts
                        out[node.separator.join(parts)] = None
        return list(out)


def _draw(nodes: Sequence[_Node], rng: random.Random) -> str:
    # Resolution leaves text and variants only (wildcards became variants over their values).
    return "".join(
        node if isinstance(node, str) else _draw_variant(cast(_Variant, node), rng)
        for node in nodes
    )


def _draw_variant(node: _Variant, rng: random.Random) -> str:
    low, high = _bounds(node)
    k = rng.randint(low, high) if high > low else high
    left = list(range(len(node.options)))
    picked: list[int] = []
    for _ in range(k):
        weights = [node.weights[i] for i in left]
        if sum(weights) > 0:
            index = rng.choices(range(len(left)), weights)[0]
        else:
            index = rng.randrange(len(left))
        picked.append(left.pop(index))
    return node.separator.join(_draw(node.options[i], rng) for i in picked)


# --- the public functions ---------------------------------------------------------------------


def _plan(
    text: object,
    wildcards: WildcardSource | None,
    dialect: object,
    strict: object,
    max_depth: object,
) -> tuple[tuple[_Node, ...], list[Diagnostic], str]:
    text = check_text(text, "text")
    if not isinstance(dialect, str):
        raise ArgumentTypeError(f"dialect must be a str, not {type(dialect).__name__}")
    from .dialects import get

    get(dialect)  # raises for an unknown dialect
    if not isinstance(strict, bool):
        raise ArgumentTypeError(f"strict must be True or False, not {strict!r}")
    depth = check_int(max_depth, "max_depth", minimum=0)
    if len(text) > MAX_PROMPT_CHARS:
        raise LimitExceededError(
            f"template of {len(text)} characters exceeds the limit of {MAX_PROMPT_CHARS}"
        )
    resolver = _Resolver(_wildcards(wildcards), dialect == "novelai", depth)
    nodes = resolver.template(text, None)
    diagnostics = sorted(resolver.diagnostics, key=lambda d: d.pos)
    if strict and diagnostics:
        raise diagnostics[0].to_error(text)
    return nodes, diagnostics, text


def count(
    text: str,
    *,
    wildcards: WildcardSource | None = None,
    dialect: str = "a1111",
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> int:
    """How many prompts ``expand(text)`` gives at most in combinatorial mode (values that
    repeat inside one ``{2$$…}`` pick are dropped there, so it can give fewer).

    >>> count("{a|b} {2$$x|y|z}")
    12
    """
    nodes, _, _ = _plan(text, wildcards, dialect, False, max_depth)
    return _Sizes().sequence(nodes)[0]


def expand(
    text: str,
    *,
    mode: str = "combinatorial",
    seed: int | None = None,
    wildcards: WildcardSource | None = None,
    limit: int = DEFAULT_LIMIT,
    count: int = 1,
    dialect: str = "a1111",
    strict: bool = False,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_chars: int = MAX_CHARS,
) -> list[str]:
    """Expand the variants and wildcards of ``text`` into prompts.

    Args:
        text: the template.
        mode: ``"combinatorial"``: every prompt, the last variant varying fastest (weights are
            not used); ``"random"``: ``count`` prompts drawn with the weights.
        seed: the seed of random mode (an ``int``); the same seed gives the same prompts. None
            draws a fresh one.
        wildcards: a folder of ``.txt`` files, a ``dict`` of names to values, or
            :class:`Wildcards`.
        limit: the most prompts the call may give. Combinatorial mode counts them before
            making any; random mode checks ``count``.
        count: how many prompts random mode draws.
        dialect: the dialect the prompts are for. ``"novelai"``: ``{x}`` without ``|`` or
            ``$$`` stays NovelAI emphasis, and each variant is a clash (diagnostic
            ``dynamic-clash``). Square brackets are never touched, in every dialect.
        strict: raise the first problem as a :class:`~promptweights.errors.PromptSyntaxError`
            (with its position) instead of keeping it as text with a warning: an unclosed ``{``,
            a ``}`` closing nothing, an unknown wildcard, a clash in NovelAI mode, braces
            nested past :data:`MAX_NESTING`.
        max_depth: how deep wildcards may nest.
        max_chars: the most characters all prompts may add up to (checked on an upper bound,
            before any work).

    Returns:
        The prompts, a new list.

    Raises:
        LimitExceededError: more prompts than ``limit``, more characters than ``max_chars``,
            wildcards nested past ``max_depth`` or including themselves, a template longer
            than :data:`~promptweights.limits.MAX_PROMPT_CHARS`; all before any prompt is made.
        PromptSyntaxError: in strict mode, at the first problem.
        InvalidArgumentError: an unknown mode, a ``limit`` or ``count`` below 1.
        ArgumentTypeError: arguments of the wrong type.
        UnknownNameError: an unknown dialect.

    In lenient mode (the default) a problem never raises: it is kept as text and reported with
    a :class:`~promptweights.errors.PromptweightsWarning` naming its position.

    >>> expand("{2::red|blue} cat", mode="random", seed=1, count=3)
    ['red cat', 'blue cat', 'blue cat']
    """
    if mode not in MODES:
        raise UnknownNameError("expansion mode", mode, MODES)
    limit = check_int(limit, "limit", minimum=1)
    count = check_int(count, "count", minimum=1)
    max_chars = check_int(max_chars, "max_chars", minimum=1)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ArgumentTypeError(f"seed must be an int or None, not {type(seed).__name__}")
    nodes, diagnostics, text = _plan(text, wildcards, dialect, strict, max_depth)
    total, longest = _Sizes().sequence(nodes)
    made = total if mode == "combinatorial" else count
    if made > limit:
        raise LimitExceededError(f"{made} prompts exceed the limit of {limit}")
    if made * longest > max_chars:
        raise LimitExceededError(
            f"{made} prompts of up to {longest} characters exceed max_chars={max_chars}"
        )
    if diagnostics:
        _warn(diagnostics, text)
    if mode == "combinatorial":
        return _Combinations().sequence(nodes)
    rng = random.Random(seed)
    return [_draw(nodes, rng) for _ in range(count)]


def _warn(diagnostics: list[Diagnostic], text: str) -> None:
    from .errors import line_and_column

    shown = "; ".join(
        "{} at line {}, column {}".format(d.message, *line_and_column(text, d.pos))
        for d in diagnostics[:5]
    )
    more = f" (and {len(diagnostics) - 5} more)" if len(diagnostics) > 5 else ""
    warnings.warn(f"expand: {shown}{more}", PromptweightsWarning, stacklevel=3)
