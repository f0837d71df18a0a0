"""compel's prompt language (``dialect="compel"``): the tree builder, flattening and spans.

``grammar/compel.lark`` lexes the text and groups its round brackets; :class:`CompelBuilder` then
reads each level of items in the order of alternatives of compel 2.5.1's pyparsing grammar
(``compel/prompt_parser.py``, ``build_parser_syntax``), so that every prompt gets compel's
reading, malformed ones included:

* the top level is compel's ``prompt``: swap, lora, attention, quoted, bracketed, else a *free
  word* (everything up to the next space, brackets included, as text);
* inside a bracket or a quoted string it is ``fragment_including_commas_or_periods``: no free
  words, a ``,`` or ``.`` is a fragment of its own, and anything else makes the whole bracket (or
  string) text at the top level, as in compel;
* ``(...).blend(...)`` and ``(...).and(...)`` are read only as the whole prompt (with
  ``withLora`` calls around a blend), as in compel.

Each level is matched as a string in which a bracket group is one character (``_GROUP``) and a
quoted string another (``_QUOTED``), with the space compel inserts after a comma (it rewrites
``,x`` to ``, x`` first) as a zero-width character.

Every regex a level is read with is built from compel.lark's terminals when the dialect is first
used (:func:`_p`), so the syntax is written once, and nothing is compiled at import.

The fast path (the end of this module) reads the prompts most people write (words, commas,
``(groups)`` with a weight after them, ``withLora(...)`` and ``("a", "b").and(...)``) straight
off the text: :meth:`CompelBuilder.shortcut` gives the builder's exact tree and diagnostics and
:func:`compel_spans` the spans without a tree, each returning None, for the builder to read the
prompt, wherever it does not apply. ``tests/test_compel_fastpath.py`` proves both equal to the
builder's reading of the Lark parse.

:func:`flatten` turns a tree into compel's flattened conjunction (``PromptParser.flatten``): the
fragments of each part, fused where neighbours weigh the same, with the LoRAs; ``compel_spans``
is what :func:`promptweights.weighted_spans` gives for ``dialect="compel"``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ._lark import (
    _STATE,
    TreeBuilder,
    _brackets,
    _diagnose,
    _FastToken,
    _pos,
    balance,
    excluded_chars,
    fast_lexer,
    structure_lexer,
    terminal_patterns,
)
from .errors import Diagnostic
from .tree import Attention, Blend, Conjunction, Lora, Node, Swap, Text

if TYPE_CHECKING:
    from .dialects import Dialect

__all__ = [
    "SWAP_DEFAULTS",
    "CompelBuilder",
    "Flat",
    "FlatPart",
    "FlatSwap",
    "compel_spans",
    "flatten",
]

_GROUP = "\ufdd0"  # a closed bracket group, in a level's matching string
_QUOTED = "\ufdd1"  # a quoted string
_PLACEHOLDERS = _GROUP + _QUOTED

#: compel's defaults for a swap's options (CrossAttentionControlSubstitute).
SWAP_DEFAULTS = {"s_start": 0.0, "s_end": 0.0, "t_start": 0.2, "t_end": 1.0}


class _Patterns:
    """The regexes a level is read with, each built from compel.lark's terminals (the one place
    the syntax is written) when the dialect is first used: ``G`` stands for a group's
    placeholder, which no word character matches. (A plain class: a dataclass this size costs
    milliseconds to create at import.)"""

    __slots__ = (
        "attend",
        "attend_arg",
        "comma",
        "dot_next",
        "fast_combine",
        "fast_fragment_items",
        "fast_fragment_special",
        "fast_fragment_words",
        "fast_separator",
        "fast_sign",
        "fast_top_items",
        "free",
        "lora",
        "lora_arg",
        "lora_call",
        "misplaced",
        "operator",
        "option",
        "punct",
        "signs",
        "space",
        "structure",
        "suffix",
        "swap",
        "word",
    )

    space: re.Pattern[str]  # SPACE, optional
    free: re.Pattern[str]  # compel's free_word: up to the next SPACE
    word: re.Pattern[str]  # SYNTAX_WORD
    punct: re.Pattern[str]  # PUNCT
    suffix: re.Pattern[str]  # WEIGHT_SUFFIX
    signs: re.Pattern[str]  # SIGNS
    attend: re.Pattern[str]  # ATTEND G
    swap: re.Pattern[str]  # SWAP G
    lora: re.Pattern[str]  # LORA_CALL G
    lora_call: re.Pattern[str]  # LORA_CALL
    operator: re.Pattern[str]  # COMBINE G
    attend_arg: re.Pattern[str]  # SIGNS | NUMBER
    lora_arg: re.Pattern[str]  # KEYWORD [, NUMBER]
    option: re.Pattern[str]  # KEYWORD = (NUMBER | KEYWORD) | NUMBER | KEYWORD
    misplaced: re.Pattern[str]  # COMBINE | SWAP | ATTEND, in a free word
    dot_next: re.Pattern[str]  # the start of an operator after a word
    comma: re.Pattern[str]  # compel's `,(\S)` → `, \1` rewrite
    # the fast path (the end of this module)
    structure: re.Pattern[str]  # the structure lexer (brackets, quotes, escapes)
    fast_sign: re.Pattern[str]  # a top-level word followed by a sign
    fast_fragment_items: re.Pattern[str]
    fast_fragment_words: re.Pattern[str]
    # a character that is neither a space, a comma nor one a word is made of by itself
    fast_fragment_special: re.Pattern[str]
    fast_top_items: re.Pattern[str]
    fast_combine: re.Pattern[str]
    fast_separator: re.Pattern[str]


@functools.cache
def _p() -> _Patterns:
    from .dialects import COMPEL

    t = terminal_patterns(COMPEL)
    sp = f"(?:{t['SPACE']})?"
    # A word never runs into a placeholder: add them to the word's excluded characters.
    word = t["SYNTAX_WORD"].replace("[^", "[^" + _PLACEHOLDERS)
    number, keyword = t["NUMBER"], t["KEYWORD"]
    combine = t["COMBINE"]
    patterns = _Patterns()
    for name, value in {
        "space": re.compile(sp),
        "free": re.compile(r"\S+"),  # what SPACE does not match
        "word": re.compile(word),
        "punct": re.compile(t["PUNCT"]),
        "suffix": re.compile(t["WEIGHT_SUFFIX"]),
        "signs": re.compile(t["SIGNS"]),
        "attend": re.compile(f"{sp}{t['ATTEND']}{sp}{_GROUP}"),
        "swap": re.compile(f"{sp}{t['SWAP']}{sp}{_GROUP}"),
        "lora": re.compile(f"(?:{t['LORA_CALL']}){sp}{_GROUP}"),
        "lora_call": re.compile(t["LORA_CALL"]),
        "operator": re.compile(f"{sp}{combine}{sp}{_GROUP}"),
        "attend_arg": re.compile(f"{sp}({t['SIGNS']}|{number}){sp}"),
        "lora_arg": re.compile(f"{sp}({keyword}){sp}(?:,{sp}({number}){sp})?"),
        "option": re.compile(
            f"{sp}(?:({keyword}){sp}={sp}({number}|{keyword})|({number})|({keyword})){sp}"
        ),
        "misplaced": re.compile(f"(?:{combine}|{t['SWAP']}|{t['ATTEND']})\\b"),
        "dot_next": re.compile(f"{sp}(?=\\.)"),  # a dot: maybe an operator
        "comma": re.compile(r",(\S)"),
        "structure": structure_lexer(COMPEL, _RUNS, _INSIDE).pattern,
        # a top-level word followed by a sign (atomic: the lookahead keeps the whole word)
        "fast_sign": re.compile(rf"(?:^|(?<=\s)|(?<=\x00))(?=({word}))\1[+\-]"),
        "fast_fragment_items": re.compile(f"{t['SPACE']}|{word}|,"),
        "fast_fragment_words": re.compile(f"{word}|,"),
        "fast_fragment_special": re.compile(
            "[" + "".join(map(re.escape, sorted((excluded_chars(word) - {","}) | {"\\"}))) + "]"
        ),
        "fast_top_items": re.compile(r"\s+|[^\s\x00]+"),
        "fast_combine": re.compile(f"{sp}{combine}{sp}"),
        "fast_separator": re.compile(f"{sp},{sp}"),
    }.items():
        setattr(patterns, name, value)
    return patterns


def _plain_word(level: _Level, i: int, end: int | None) -> int:
    """Where a word at ``i`` ends if it can start no construct (no suffix, no ``.swap`` or
    ``.attend`` after it, not a ``withLora``), else -1: the common case, read without trying
    every alternative. ``end``: the free word's end at the top level (None inside a group)."""
    s = level.s
    match = _p().word.match(s, i)
    if match is None:
        return -1
    j = match.end()
    if j < len(s) and s[j] in "+-.":
        return -1
    if _p().lora_call.match(s, i) is not None or _p().dot_next.match(s, j) is not None:
        return -1
    if end is None:
        return j
    if end == j:
        return end
    rest = s[j:end]
    if "." in rest or _GROUP in rest or _QUOTED in rest:
        return -1
    return end


def _number(text: str) -> float:
    return float(text)


def _suffix_weight(text: str) -> float:
    """compel's weight of a suffix: 1.1 per ``+``, 0.9 per ``-``, else the number."""
    if text[0] == "+":
        return float(pow(1.1, len(text)))
    if text[0] == "-" and text.strip("-") == "":
        return float(pow(0.9, len(text)))
    return _number(text)


# --- the groups the grammar's `round` rule builds ---------------------------------------------


class _Group:
    """A bracket and its items; what it means is decided by the level that holds it."""

    __slots__ = ("closer", "inner", "items", "opener")

    def __init__(self, opener: Any, items: list[Any], closer: Any) -> None:
        self.opener = opener
        self.items = items
        self.closer = closer
        self.inner: _Result | bool | None = False  # memo of the bracketed reading; False: none

    @property
    def closed(self) -> bool:
        return not self.closer.type.startswith("UNCLOSED_")

    @property
    def start(self) -> int:
        return _pos(self.opener)


@dataclass(slots=True)
class _Result:
    nodes: list[Node]
    diagnostics: list[Diagnostic] = field(default_factory=list)
    end: int = 0  # where the reading stopped, in the level's string


@dataclass(slots=True)
class _Ctx:
    """The text a level's positions point into, and where it sits in the prompt."""

    src: str
    base: int  # the prompt position of src[0]


def _end_of(item: Any) -> int:
    """The position after ``item`` in the text it was lexed from."""
    while isinstance(item, _Group):
        if item.closed:
            return _pos(item.closer) + 1
        if not item.items:
            return item.start + 1
        item = item.items[-1]
    return _pos(item) + len(str(item))


# --- a level: its items as one string to match on ---------------------------------------------


class _Level:
    """One level's items: ``s`` to match on, ``at[i]`` the position in ``ctx.src`` of ``s[i]``
    (for an inserted space, that of the next character), ``objs[i]`` the group or quoted token
    a placeholder stands for."""

    __slots__ = ("at", "ctx", "diagnostics", "end", "objs", "s")

    def __init__(self, ctx: _Ctx, items: Sequence[Any], end: int) -> None:
        self.ctx = ctx
        self.end = end
        self.diagnostics: list[Diagnostic] = []
        parts: list[str] = []
        self.at: list[int] = []
        self.objs: list[Any] = []
        self._add(items, parts, deep_seen=False)
        self.s = "".join(parts)
        if "," in self.s:
            self._comma_spaces()

    def _add(self, items: Iterable[Any], parts: list[str], *, deep_seen: bool) -> None:
        for item in items:
            if isinstance(item, _Group):
                if item.closed:
                    parts.append(_GROUP)
                    self.at.append(item.start)
                    self.objs.append(item)
                    continue
                self._diagnose("unclosed", "'(' is never closed: compel reads it as text", item)
                self._text("(", item.start, parts)
                self._add(item.items, parts, deep_seen=deep_seen)
                continue
            kind = item.type
            if kind == "QUOTED":
                parts.append(_QUOTED)
                self.at.append(_pos(item))
                self.objs.append(item)
                continue
            if kind == "STRAY":
                self._diagnose("stray-closer", "')' closes nothing: compel reads it as text", item)
            elif kind == "QUOTE":
                self._diagnose(
                    "unclosed-quote", "'\"' is never closed: compel reads it as text", item
                )
            elif kind == "DEEP" and not deep_seen:
                deep_seen = True
                self._diagnose(
                    "too-deep", "brackets nested past the depth cap are kept as text", item
                )
            self._text(str(item), _pos(item), parts)

    def _text(self, text: str, start: int, parts: list[str]) -> None:
        if _GROUP in text or _QUOTED in text:
            text = text.replace(_GROUP, "\ufffd").replace(_QUOTED, "\ufffd")
        parts.append(text)
        self.at.extend(range(start, start + len(text)))
        self.objs.extend([None] * len(text))

    def _diagnose(self, kind: str, message: str, token: Any) -> None:
        pos = token.start if isinstance(token, _Group) else _pos(token)
        self.diagnostics.append(Diagnostic(kind, message, self.ctx.base + pos))

    def _comma_spaces(self) -> None:
        """compel's ``re.sub(r',(\\S)', r', \\1', prompt)``: a zero-width space after such a
        comma."""
        cuts = [m.start() + 1 for m in _p().comma.finditer(self.s)]
        if not cuts:
            return
        s, at, objs = self.s, self.at, self.objs
        new_s: list[str] = []
        new_at: list[int] = []
        new_objs: list[Any] = []
        last = 0
        for cut in cuts:
            new_s += [s[last:cut], " "]
            new_at += at[last:cut]
            new_at.append(at[cut])
            new_objs += objs[last:cut]
            new_objs.append(None)
            last = cut
        new_s.append(s[last:])
        new_at += at[last:]
        new_objs += objs[last:]
        self.s, self.at, self.objs = "".join(new_s), new_at, new_objs

    def pos(self, i: int) -> int:
        """The source position of ``s[i]`` (the level's end for ``i == len(s)``)."""
        return self.at[i] if i < len(self.at) else self.end

    def raw(self, i: int, j: int) -> str:
        """The text as written of ``s[i:j]``."""
        return self.ctx.src[self.pos(i) : self.pos(j)]

    def prompt_pos(self, i: int) -> int:
        return self.ctx.base + self.pos(i)

    def expand(self, k: int) -> None:
        """Replace the group or quoted string at ``k`` by its characters (a free word runs into
        it, so compel reads it as text from here)."""
        obj = self.objs[k]
        if isinstance(obj, _Group):
            inner = _Level(self.ctx, obj.items, _pos(obj.closer))
            s = "(" + inner.s + ")"
            at = [obj.start, *inner.at, _pos(obj.closer)]
            objs = [None, *inner.objs, None]
            self.diagnostics += inner.diagnostics
        else:
            text = str(obj)
            s, at, objs = text, list(range(_pos(obj), _pos(obj) + len(text))), [None] * len(text)
        if _GROUP in s or _QUOTED in s:
            s = s.replace(_GROUP, "\ufffd").replace(_QUOTED, "\ufffd")
        self.s = self.s[:k] + s + self.s[k + 1 :]
        self.at[k : k + 1] = at
        self.objs[k : k + 1] = objs


# --- reading a level ----------------------------------------------------------------------------


def _text_nodes(level: _Level, i: int, j: int) -> list[Node]:
    return [Text(level.raw(i, j))] if j > i else []


def _skip(level: _Level, i: int, nodes: list[Node]) -> int:
    """Skip spaces from ``i``, keeping them as text."""
    j = _p().space.match(level.s, i).end()  # type: ignore[union-attr]
    if j > i:
        raw = level.raw(i, j)
        if raw:
            nodes.append(Text(raw))
    return j


def _group_inner(group: _Group, ctx: _Ctx) -> _Result | None:
    """compel's ``parenthesized_fragment``: the group's items as fragments, or None."""
    if group.inner is False:
        level = _Level(ctx, group.items, _pos(group.closer))
        group.inner = _fragments(level, 0, commas=True)
    return group.inner  # type: ignore[return-value]


def _quoted_level(token: Any, ctx: _Ctx) -> _Level:
    text = str(token)[1:-1]
    items = _lex(text)
    return _Level(_Ctx(text, ctx.base + _pos(token) + 1), items, len(text))


def _quoted_inner(token: Any, ctx: _Ctx) -> _Result | None:
    """compel's ``quoted_fragment``: the string's text read as fragments, or None."""
    level = _quoted_level(token, ctx)
    result = _fragments(level, 0, commas=True)
    if result is not None:
        result.diagnostics[:0] = level.diagnostics
    return result


def _target(level: _Level, i: int) -> tuple[Attention, int, list[Diagnostic]] | None:
    """compel's ``potential_operator_target``: quoted, bracketed or a bare word."""
    s = level.s
    if i >= len(s):
        return None
    obj = level.objs[i]
    if obj is not None:
        if isinstance(obj, _Group):
            inner = _group_inner(obj, level.ctx)
            kind = "round"
        else:
            inner = _quoted_inner(obj, level.ctx)
            kind = "quote"
        if inner is None:
            return None
        return Attention(tuple(inner.nodes), 1.0, kind), i + 1, list(inner.diagnostics)  # type: ignore[arg-type]
    match = _p().word.match(s, i)
    if match is None:
        return None
    j = match.end()
    return Attention((Text(level.raw(i, j)),), 1.0, "word"), j, []


def _attention(level: _Level, i: int) -> tuple[Node, int, list[Diagnostic]] | None:
    """``target.attend(w)`` or ``(x)w`` / ``"x"w`` / ``word+`` (no space before the suffix)."""
    found = _target(level, i)
    if found is None:
        return None
    target, j, diagnostics = found
    s = level.s
    explicit = _p().attend.match(s, j)
    if explicit is not None:
        group = level.objs[explicit.end() - 1]
        arg = _p().attend_arg.fullmatch(_raw_inner(group, level.ctx))
        if arg is not None and not _has_groups(group):
            weight = _suffix_weight(arg.group(1))
            end = explicit.end()
            node = Attention(target.children, weight, target.kind, level.raw(j, end))
            return node, end, diagnostics
    pattern = _p().signs if target.kind == "word" else _p().suffix
    suffix = pattern.match(s, j)
    if suffix is None or (j < len(s) and level.objs[j] is not None):
        return None
    end = suffix.end()
    node = Attention(target.children, _suffix_weight(s[j:end]), target.kind, level.raw(j, end))
    return node, end, diagnostics


def _has_groups(group: _Group) -> bool:
    return any(isinstance(item, _Group) or item.type == "QUOTED" for item in group.items)


def _raw_inner(group: _Group, ctx: _Ctx) -> str:
    return ctx.src[group.start + 1 : _pos(group.closer)]


def _lora(level: _Level, i: int) -> tuple[Node, int, list[Diagnostic]] | None:
    """``withLora(name, 0.8)`` / ``useLora(name)``."""
    match = _p().lora.match(level.s, i)
    if match is None:
        return None
    group = level.objs[match.end() - 1]
    if _has_groups(group):
        return None
    arg = _p().lora_arg.fullmatch(_raw_inner(group, level.ctx))
    if arg is None:
        return None
    weight = 1.0 if arg.group(2) is None else _number(arg.group(2))
    end = match.end()
    return Lora(arg.group(1), weight, level.raw(i, end)), end, []


def _swap(level: _Level, i: int) -> tuple[Node, int, list[Diagnostic]] | None:
    """``target.swap(replacement[, key=value, ...])``."""
    found = _target(level, i)
    if found is None:
        return None
    target, j, diagnostics = found
    match = _p().swap.match(level.s, j)
    if match is None:
        return None
    group = level.objs[match.end() - 1]
    inner = _Level(level.ctx, group.items, _pos(group.closer))
    replaced = _fragments(inner, 0, commas=False)
    if replaced is None:
        return None
    tail_text = inner.raw(replaced.end, len(inner.s))
    options = _options(tail_text, leading_comma=True)
    if options is None:
        return None
    end = match.end()
    node = Swap(
        target,
        tuple(replaced.nodes),
        tuple(_swap_options(options)),
        level.raw(j, end - 1) + "(",
        tail_text + ")",
    )
    return node, end, diagnostics + replaced.diagnostics


def _swap_options(options: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(key, value) for key, value in options if value != ""]


def _options(text: str, *, leading_comma: bool) -> list[tuple[str, str]] | None:
    """compel's operator options ``1, 0.5, no_normalize`` / ``, t_start=0.1``: (key, value)
    pairs; a bare number or keyword is ``(it, "")``. None where compel's grammar fails."""
    if not text.strip():
        return []
    if leading_comma:
        stripped = text.lstrip()
        if not stripped.startswith(","):
            return None
        text = stripped[1:]
        if not text.strip():
            return []
    out: list[tuple[str, str]] = []
    for piece in text.split(","):
        match = _p().option.fullmatch(piece)
        if match is None:
            return None
        key, value, number, keyword = match.groups()
        if key is not None:
            out.append((key, value))
        else:
            out.append((number if number is not None else keyword, ""))
    return out


def _unit(
    level: _Level, i: int, order: str
) -> tuple[Node | list[Node], int, list[Diagnostic]] | None:
    """The first construct at ``i`` of those named in ``order`` (one letter each: s swap,
    l lora, a attention, q quoted, p bracketed, w word, c comma or period)."""
    s, objs = level.s, level.objs
    for letter in order:
        if letter == "s":
            found = _swap(level, i)
        elif letter == "l":
            found = _lora(level, i)
        elif letter == "a":
            found = _attention(level, i)
        elif letter in "qp":
            obj = objs[i]
            wanted = _QUOTED if letter == "q" else _GROUP
            if obj is None or s[i] != wanted:
                continue
            inner = _quoted_inner(obj, level.ctx) if letter == "q" else _group_inner(obj, level.ctx)
            if inner is None:
                continue
            kind = "quote" if letter == "q" else "round"
            found = Attention(tuple(inner.nodes), 1.0, kind), i + 1, list(inner.diagnostics)  # type: ignore[arg-type]
        elif letter == "w":
            match = _p().word.match(s, i)
            found = None if match is None else (Text(level.raw(i, match.end())), match.end(), [])
        else:
            match = _p().punct.match(s, i)
            found = None if match is None else (Text(level.raw(i, match.end())), match.end(), [])
        if found is not None:
            return found
    return None


def _fragments(level: _Level, i: int, *, commas: bool) -> _Result | None:
    """compel's ``fragment_including_commas_or_periods`` (``commas``) or
    ``fragment_excluding_commas``: every item must be read, or None."""
    nodes: list[Node] = []
    diagnostics: list[Diagnostic] = []
    s = level.s
    order = "laspqwc" if commas else "laspqw"
    while True:
        i = _skip(level, i, nodes)
        if i >= len(s):
            break
        if level.objs[i] is None:
            j = _plain_word(level, i, None)
            if j > i:
                nodes.append(Text(level.raw(i, j)))
                i = j
                continue
        found = _unit(level, i, order)
        if found is None:
            if commas:
                return None
            break  # the options of a swap follow
        node, i, found_diagnostics = found
        nodes.append(node)  # type: ignore[arg-type]
        diagnostics += found_diagnostics
    if level.diagnostics:
        return None  # an unclosed bracket, a stray closer or a lone quote: not a group
    return _Result(nodes, diagnostics, i)


def _prompt(level: _Level, i: int) -> _Result:
    """compel's ``prompt``: never fails, a free word takes whatever nothing else reads."""
    nodes: list[Node] = []
    diagnostics: list[Diagnostic] = []
    while True:
        i = _skip(level, i, nodes)
        if i >= len(level.s):
            break
        if level.objs[i] is None:
            end = _p().free.match(level.s, i).end()  # type: ignore[union-attr]
            j = _plain_word(level, i, end)
            if j > i:
                nodes.append(Text(level.raw(i, j)))
                i = j
                continue
        found = _unit(level, i, "slaqp")
        if found is not None:
            node, i, found_diagnostics = found
            nodes.append(node)  # type: ignore[arg-type]
            diagnostics += found_diagnostics
            continue
        i = _free_word(level, i, nodes, diagnostics)
    return _Result(nodes, level.diagnostics + diagnostics)


def _free_word(level: _Level, i: int, nodes: list[Node], diagnostics: list[Diagnostic]) -> int:
    """compel's ``free_word``: everything up to the next space, as text."""
    while True:
        end = _p().free.match(level.s, i).end()  # type: ignore[union-attr]
        inside = next((k for k in range(i, end) if level.objs[k] is not None), None)
        if inside is None:
            break
        obj = level.objs[inside]
        if isinstance(obj, _Group) and inside == i:
            diagnostics.append(
                Diagnostic(
                    "bad-group",
                    "compel cannot read this bracket as a group and reads it as text",
                    level.prompt_pos(i),
                )
            )
        elif not isinstance(obj, _Group) and inside == i:
            diagnostics.append(
                Diagnostic(
                    "bad-quote",
                    "compel cannot read this quoted text and reads it as text",
                    level.prompt_pos(i),
                )
            )
        level.expand(inside)
    word = level.raw(i, end)
    misplaced = _p().misplaced.search(word)
    if misplaced is not None:
        diagnostics.append(
            Diagnostic(
                "misplaced-operator",
                f"compel reads {misplaced.group(0)!r} here as text: .blend() and .and() must "
                'be the whole prompt, .swap() and .attend() follow a word, (group) or "quote"',
                level.prompt_pos(i) + misplaced.start(),
            )
        )
    nodes.append(Text(word))
    return end


# --- the whole prompt: conjunction, blend, or a prompt ------------------------------------------


def _members(level: _Level, group: _Group) -> tuple[list[Node], list[str], list[Diagnostic]] | None:
    """The members of ``(a, "b", (c))``: targets or quoted prompts, comma-separated."""
    inner = _Level(level.ctx, group.items, _pos(group.closer))
    s = inner.s
    members: list[Node] = []
    frame: list[str] = []
    diagnostics: list[Diagnostic] = []
    i = _p().space.match(s, 0).end()  # type: ignore[union-attr]
    mark = 0
    while True:
        found = _target(inner, i)
        if found is None and i < len(s) and s[i] == _QUOTED:
            quoted = _quoted_level(inner.objs[i], inner.ctx)
            result = _prompt(quoted, 0)
            found = (Attention(tuple(result.nodes), 1.0, "quote"), i + 1, result.diagnostics)
        if found is None:
            return None
        node, j, found_diagnostics = found
        frame.append(inner.raw(mark, i))
        members.append(node)
        diagnostics += found_diagnostics
        k = _p().space.match(s, j).end()  # type: ignore[union-attr]
        if k >= len(s):
            frame.append(inner.raw(j, k))
            return members, frame, diagnostics
        if s[k] != "," or inner.objs[k] is not None:
            return None
        mark = j
        i = _p().space.match(s, k + 1).end()  # type: ignore[union-attr]


def _operator(level: _Level, i: int) -> tuple[Node, int, list[Diagnostic]] | None:
    """``(members).blend(args)`` or ``(members).and(args)`` at ``i``."""
    s = level.s
    if i >= len(s) or s[i] != _GROUP:
        return None
    match = _p().operator.match(s, i + 1)
    if match is None:
        return None
    found = _members(level, level.objs[i])
    if found is None:
        return None
    members, frame, diagnostics = found
    args_group = level.objs[match.end() - 1]
    if _has_groups(args_group):
        return None
    options = _options(_raw_inner(args_group, level.ctx), leading_comma=False)
    if options is None:
        return None
    end = match.end()
    frame[0] = "(" + frame[0]
    frame[-1] = frame[-1] + ")" + level.raw(i + 1, end)
    name = match.group(1)
    pos = level.prompt_pos(i)
    if name == "blend":
        normalize = True
        if options and options[-1][0] == "no_normalize":
            normalize = False
            options = options[:-1]
        weights = _weights(options, len(members), pos, diagnostics, "blend")
        for member in members:
            if any(isinstance(n, Swap) for n in _walk([member])):
                diagnostics.append(
                    Diagnostic("swap-in-blend", "compel refuses .swap() inside a blend", pos)
                )
        return Blend(tuple(members), weights, normalize, tuple(frame)), end, diagnostics
    weights = _weights(options, len(members), pos, diagnostics, "and")
    return Conjunction(tuple(members), weights, tuple(frame)), end, diagnostics


def _weights(
    options: list[tuple[str, str]], count: int, pos: int, diagnostics: list[Diagnostic], name: str
) -> tuple[float, ...]:
    """The weights of a blend or conjunction; lenient: 1 for each missing one, extras dropped."""
    if not options:
        return (1.0,) * count
    weights: list[float] = []
    for key, value in options:
        try:
            weights.append(float(key) if not value else float("nan"))
        except ValueError:
            weights.append(float("nan"))
        if weights[-1] != weights[-1]:
            diagnostics.append(
                Diagnostic("bad-weight", f"{key!r} is not a weight (compel fails here)", pos)
            )
            weights[-1] = 1.0
    if len(weights) != count:
        diagnostics.append(
            Diagnostic(
                "bad-weights",
                f".{name}() has {len(weights)} weights for {count} prompts (compel raises here)",
                pos,
            )
        )
        weights = (weights + [1.0] * count)[:count]
    return tuple(weights)


def _whole(level: _Level) -> _Result:
    """compel's ``conjunction``: an explicit ``.and()``, else loras, a blend or a prompt."""
    nodes: list[Node] = []
    i = _skip(level, 0, nodes)
    found = _operator(level, i)
    if found is not None and isinstance(found[0], Conjunction):
        node, j, diagnostics = found
        nodes.append(node)
        if j < len(level.s):
            rest = level.raw(j, len(level.s))
            nodes.append(Text(rest))
            if rest.strip():
                diagnostics.append(
                    Diagnostic(
                        "ignored-text",
                        "compel ignores the text after .and(...)",
                        level.prompt_pos(j),
                    )
                )
        return _Result(nodes, level.diagnostics + diagnostics)
    blend = _blend_prompt(level, i, nodes)
    if blend is not None:
        return blend
    result = _prompt(level, i)
    if found is not None:  # a blend with more than loras after it
        result.diagnostics.append(
            Diagnostic(
                "bad-blend",
                ".blend(...) must be the whole prompt, withLora(...) calls aside (compel raises "
                "here); read as text",
                level.prompt_pos(i),
            )
        )
    return _Result(nodes + result.nodes, result.diagnostics)


def _blend_prompt(level: _Level, i: int, nodes: list[Node]) -> _Result | None:
    """``withLora(..) (a, b).blend(..) withLora(..)``: loras around a blend, nothing else."""
    out = list(nodes)
    diagnostics: list[Diagnostic] = []
    blend_seen = False
    while i < len(level.s):
        found = _lora(level, i)
        if found is None and not blend_seen:
            found = _operator(level, i)
            if found is None or not isinstance(found[0], Blend):
                return None
            blend_seen = True
        if found is None:
            return None
        node, i, found_diagnostics = found
        out.append(node)
        diagnostics += found_diagnostics
        i = _skip(level, i, out)
    if not blend_seen:
        return None
    return _Result(out, level.diagnostics + diagnostics)


# --- lexing a quoted string's text ----------------------------------------------------------------


def _lex(text: str) -> list[Any]:
    """A quoted string's text as items (tokens and groups), with the grammar's own terminals."""
    from .dialects import COMPEL

    lexer = fast_lexer(COMPEL)
    brackets = _brackets(COMPEL)
    tokens = (
        _FastToken(m.lastgroup or "", m.group(), m.start()) for m in lexer.pattern.finditer(text)
    )
    stack: list[list[Any]] = [[]]
    for token in balance(tokens, brackets, _STATE.get().max_depth, _FastToken.borrow):
        kind = token.type
        if kind in brackets.openers:
            stack.append([token])
        elif kind in brackets.rules:
            children = stack.pop()
            stack[-1].append(_Group(children[0], children[1:], token))
        else:
            stack[-1].append(token)
    return stack[0]


class CompelBuilder(TreeBuilder):
    """compel: the grammar's groups, read level by level in compel's order (module docstring)."""

    def round(self, children: list[Any]) -> _Group:  # type: ignore[override]
        opener, *items, closer = children
        return _Group(opener, items, closer)

    def shortcut(
        self, text: str, max_depth: int
    ) -> tuple[tuple[Node, ...], list[Diagnostic]] | None:
        """The fast path (see the end of this module), where it applies."""
        return fast_nodes(text, max_depth)

    def start(self, children: list[Any]) -> tuple[Node, ...]:
        src = "".join(_raw_item(item) for item in children)
        level = _Level(_Ctx(src, 0), children, len(src))
        result = _whole(level)
        for d in result.diagnostics:
            _diagnose(d.kind, d.message, d.pos)
        return tuple(result.nodes)


def _raw_item(item: Any) -> str:
    if not isinstance(item, _Group):
        return str(item)
    return str(item.opener) + "".join(_raw_item(i) for i in item.items) + str(item.closer)


# --- flattening ---------------------------------------------------------------------------------


def _walk(nodes: Iterable[Node]) -> Iterable[Node]:
    for node in nodes:
        yield node
        if isinstance(node, Attention):
            yield from _walk(node.children)
        elif isinstance(node, Swap):
            yield from _walk((node.target, *node.replacement))
        elif isinstance(node, Blend | Conjunction):
            yield from _walk(node.members)


Fragment = tuple[str, float]


@dataclass(frozen=True, slots=True)
class FlatSwap:
    """A swap in a flattened prompt: the original's and the replacement's fragments."""

    original: tuple[Fragment, ...]
    replacement: tuple[Fragment, ...]
    options: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class FlatPart:
    """One part of compel's flattened conjunction: a prompt, or a blend of prompts.

    ``prompts`` holds one prompt (a sequence of fragments and swaps) for a plain part, one per
    member for a blend; ``blend`` is None for a plain part, else (weights, normalize).
    """

    prompts: tuple[tuple[Fragment | FlatSwap, ...], ...]
    weight: float = 1.0
    blend: tuple[tuple[float, ...], bool] | None = None


@dataclass(frozen=True, slots=True)
class Flat:
    """compel's flattened conjunction: its parts and the LoRAs ``(name, weight)``."""

    parts: tuple[FlatPart, ...]
    loras: tuple[tuple[str, float], ...]


def _unescape(text: str) -> str:
    if "\\" in text:
        return text.replace("\\(", "(").replace("\\)", ")").replace('\\"', '"')
    return text


def _flat(
    nodes: Iterable[Node], scale: float, out: list[Any], loras: list[tuple[str, float]]
) -> None:
    for node in nodes:
        if isinstance(node, Text):
            out.extend((_unescape(word), 1.0 * scale) for word in node.text.split())
        elif isinstance(node, Attention):
            if node.kind == "quote" and not any(
                not isinstance(c, Text) or c.text.strip() for c in node.children
            ):
                out.append(("", 1.0 * (scale * node.weight)))  # compel: Fragment('')
                continue
            _flat(node.children, scale * node.weight, out, loras)
        elif isinstance(node, Lora):
            loras.append((node.name, node.weight))
        elif isinstance(node, Swap):
            original: list[Any] = []
            replacement: list[Any] = []
            _flat((node.target,), scale, original, loras)
            _flat(node.replacement, scale, replacement, loras)
            options = tuple((k, float(v)) for k, v in node.options if _is_number(v))
            out.append(FlatSwap(tuple(_fuse(original)), tuple(_fuse(replacement)), options))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _fuse(items: Sequence[Any]) -> list[Any]:
    """compel's fuse_fragments: neighbours of equal weight joined with one space."""
    out: list[Any] = []
    for item in items:
        if (
            out
            and not isinstance(item, FlatSwap)
            and not isinstance(out[-1], FlatSwap)
            and out[-1][1] == item[1]
        ):
            out[-1] = (out[-1][0] + " " + item[0], item[1])
            continue
        out.append(item)
    return out


def flatten(nodes: Sequence[Node]) -> Flat:
    """compel's ``PromptParser.flatten`` of a parsed compel prompt (one sub-prompt's nodes)."""
    loras: list[tuple[str, float]] = []
    parts: list[FlatPart] = []
    loose: list[Node] = []
    for node in nodes:
        if isinstance(node, Conjunction):
            for member, weight in zip(node.members, node.weights, strict=True):
                fragments: list[Any] = []
                _flat((member,), 1.0, fragments, loras)
                if fragments:
                    parts.append(FlatPart((tuple(_fuse(fragments)),), weight))
            return Flat(tuple(parts), tuple(loras))
        if isinstance(node, Blend):
            prompts = []
            for member in node.members:
                fragments = []
                _flat((member,), 1.0, fragments, loras)
                prompts.append(tuple(_fuse(fragments)))
            parts.append(FlatPart(tuple(prompts), 1.0, (node.weights, node.normalize)))
        else:
            loose.append(node)
    if not parts:
        fragments = []
        _flat(loose, 1.0, fragments, loras)
        if fragments:
            parts.append(FlatPart((tuple(_fuse(fragments)),)))
        elif all(isinstance(n, Text) for n in loose):  # compel: '' for a blank prompt
            parts.append(FlatPart(((("", 1.0),),)))
    else:
        _flat([n for n in loose if isinstance(n, Lora)], 1.0, [], loras)
    return Flat(tuple(parts), tuple(loras))


def spans_of(flat: Flat) -> tuple[tuple[str, float], ...]:
    """The weighted spans of a flattened prompt: every part's fragments in order (a swap gives
    its original's), members of a blend one after another; ``(("", 1.0),)`` when empty."""
    out: list[tuple[str, float]] = []
    for part in flat.parts:
        for prompt in part.prompts:
            for item in prompt:
                if isinstance(item, FlatSwap):
                    out.extend(item.original)
                else:
                    out.append(item)
    return tuple(out) or (("", 1.0),)


def compel_spans(dialect: Dialect, text: str, max_depth: int) -> tuple[tuple[str, float], ...]:
    """compel's flattened fragments of ``text`` (see :func:`spans_of`): by the fast path where it
    applies, else from the parsed tree."""
    from ._lark import parse_nodes

    fast = fast_spans(text, max_depth)
    if fast is not None:
        return fast
    nodes, _ = parse_nodes(text, dialect=dialect, max_depth=max_depth)
    return spans_of(flatten(nodes))


# --- the fast path ------------------------------------------------------------------------------
#
# Most prompts are words, commas, `(groups)` with a weight after them, `withLora(...)` calls and
# maybe one `("a", "b").and(...)`. For those, the tree and the spans are read straight off the
# text: the structure lexer (the grammar's terminals but WORD and SPACE, which the regex engine
# skips in C) finds the brackets and quoted strings, and each stretch of words between them is
# checked and split with the patterns above (never by one regex over a whole stretch, which could
# backtrack). :func:`fast_nodes` builds a plan, then the builder's exact nodes; :func:`fast_spans`
# reads most prompts in one pass without a tree (:func:`_flat_spans`), else from the plan. Anything
# else (an operator, a sign after a word, a quote or bracket compel reads otherwise, ...) gives
# None, and the builder reads the prompt; tests/test_compel_fastpath.py proves both equal to the
# Lark parse on generated, hostile and corpus prompts.

_RUNS = frozenset({"WORD", "SPACE"})  # the terminals a run is made of
_INSIDE = frozenset({"ESCAPED"})  # how a WORD holds a bracket or a quote
_FAST_MAX_NESTING = 64  # deeper: the builder (its recursion is what the depth cap bounds)


class _FGroup:
    __slots__ = ("end", "items", "start")

    def __init__(self, start: int, items: list[Any], end: int) -> None:
        self.start = start
        self.items = items  # runs (str), _FGroup and _FQuoted
        self.end = end  # the closer's position


class _FQuoted:
    __slots__ = ("start", "text")

    def __init__(self, start: int, text: str) -> None:
        self.start = start
        self.text = text  # with its quotes


def _scan(text: str, max_depth: int) -> list[Any] | None:
    """The text's runs, quoted strings and groups; None where the builder must read it (a lone
    quote, a closer without an opener, an opener never closed or past the depth cap)."""
    stack: list[list[Any]] = [[]]
    starts: list[int] = []
    cap = min(max_depth, _FAST_MAX_NESTING)
    last = 0  # where the current run starts
    for match in _p().structure.finditer(text):
        kind = match.lastgroup
        if kind == "ESCAPED":
            continue  # part of a word
        at = match.start()
        if at > last:
            stack[-1].append(text[last:at])
        last = match.end()
        if kind == "LPAR":
            if len(starts) >= cap:
                return None
            starts.append(at)
            stack.append([])
        elif kind == "RPAR":
            if not starts:
                return None
            items = stack.pop()
            stack[-1].append(_FGroup(starts.pop(), items, at))
        elif kind == "QUOTED":
            stack[-1].append(_FQuoted(at, match.group()))
        else:
            return None
    if starts:
        return None
    if last < len(text):
        stack[0].append(text[last:])
    return stack[0]


# A plan is a list of entries: (_TOP, run) top-level text, (_FRAGMENT, run) text inside a group
# or a quoted string, (_GROUP_ENTRY, plan, weight, weight text), (_LORA_ENTRY, node) and
# (_CONJUNCTION, ...) (see :func:`_fast_conjunction`).
_TOP, _FRAGMENT, _GROUP_ENTRY, _LORA_ENTRY, _CONJUNCTION = range(5)


def _fast_fragments(items: list[Any], plan: list[Any]) -> bool:
    """compel's fragments (inside a group or quoted string) into ``plan``; False: not simple."""
    p = _p()
    weight_next = False
    for item in items:
        if isinstance(item, str):
            run = item
            if weight_next:
                run = _fast_weight(run, plan)
            if _fragment_items(run) is None or p.lora_call.search(run) is not None:
                return False
            if run:
                plan.append((_FRAGMENT, run))
            weight_next = False
        elif isinstance(item, _FGroup):
            inner: list[Any] = []
            if not _fast_fragments(item.items, inner):
                return False
            plan.append((_GROUP_ENTRY, inner, 1.0, ""))
            weight_next = True
        else:
            return False
    return True


def _fragment_items(run: str) -> list[str] | None:
    """The spaces, words and commas ``run`` is made of inside a group; None where it holds
    anything else. (Matched one by one, never by one regex over the run: that can backtrack.)"""
    items: list[str] = _p().fast_fragment_items.findall(run)
    if sum(map(len, items)) != len(run):
        return None
    return items


def _fragment_words(run: str) -> list[str] | None:
    """The words and commas of ``run`` inside a group, one each; None where it holds anything
    else."""
    if _p().fast_fragment_special.search(run) is None:  # spaces, commas and word characters
        return run.replace(",", " , ").split()
    items = _fragment_items(run)
    return None if items is None else " ".join(items).split()


def _fast_weight(run: str, plan: list[Any]) -> str:
    """The weight right after the group last planned, if ``run`` starts with one; the rest."""
    suffix = _p().suffix.match(run)
    if suffix is None:
        return run
    text = suffix.group()
    plan[-1] = (_GROUP_ENTRY, plan[-1][1], _suffix_weight(text), text)
    return run[suffix.end() :]


def _fast_top(items: list[Any], text: str) -> list[Any] | None:
    """compel's top level (free words, weighted groups, LoRA calls) as a plan, or None."""
    p = _p()
    plan: list[Any] = []
    weight_next = False
    for k, item in enumerate(items):
        if isinstance(item, _FGroup):
            inner: list[Any] = []
            if not _fast_fragments(item.items, inner):
                return None
            plan.append((_GROUP_ENTRY, inner, 1.0, ""))
            weight_next = True
            continue
        if not isinstance(item, str):
            return None
        run = _fast_weight(item, plan) if weight_next else item
        weight_next = False
        after = items[k + 1] if k + 1 < len(items) else None
        lora = None
        if isinstance(after, _FGroup):
            before = _before_group(run, after, text)
            if before is None:
                return None
            run, lora = before
            if lora is not None:
                items[k + 1] = ""  # read: the run after the call follows
        elif "," in run and p.comma.search(run) is not None:
            run = p.comma.sub(",\x00\\1", run)
        if _maybe_more_than_text(run):
            return None
        if run:
            plan.append((_TOP, run))
        if lora is not None:
            plan.append((_LORA_ENTRY, lora))
    return plan


def _before_group(run: str, group: _FGroup, text: str) -> tuple[str, Lora | None] | None:
    """A top-level run before a group: the run and, where it ends with ``withLora``, the call;
    None where a free word runs into the group."""
    # compel's `,x` → `, x` rewrite puts a space before the group after a comma
    if "," in run and _p().comma.search(run + "(") is not None:
        run = _p().comma.sub(",\x00\\1", run + "(")[:-1]
    tail = _last_chunk(run)
    if tail and _p().lora_call.fullmatch(tail) is not None:
        lora = _fast_lora(tail, group, text)
        if lora is None:
            return None
        return run[: len(run) - len(tail)], lora
    if run and not run[-1].isspace() and run[-1] != "\x00":
        return None
    return run, None


def _last_chunk(run: str) -> str:
    """The free word ``run`` ends with ("" where it ends with a space)."""
    if not run or run[-1].isspace():
        return ""
    return run.rsplit(None, 1)[-1].rpartition("\x00")[2]


def _maybe_more_than_text(run: str) -> bool:
    """Whether compel might read something in a top-level run as more than text: a dot (an
    operator), a LoRA call, a word followed by a sign."""
    p = _p()
    if "." in run or p.lora_call.search(run) is not None:
        return True
    return ("+" in run or "-" in run) and p.fast_sign.search(run) is not None


def _fast_lora(name: str, group: _FGroup, text: str) -> Lora | None:
    """``withLora(name, w)``: the call ``name`` and its group; None where compel reads it
    otherwise."""
    if any(not isinstance(item, str) for item in group.items):
        return None
    arg = _p().lora_arg.fullmatch("".join(group.items))
    if arg is None:
        return None
    weight = 1.0 if arg.group(2) is None else _number(arg.group(2))
    return Lora(arg.group(1), weight, name + text[group.start : group.end + 1])


def _conjunction_shape(
    items: list[Any],
) -> tuple[str, _FGroup, _FGroup, list[Any], list[_FQuoted]] | None:
    """``("a", "b").and(1, 0.5)`` first in a prompt's items: the space before it, the members'
    group, the arguments' group, the options and the quoted members; None where it is not one
    (or not one with quoted members only)."""
    p = _p()
    lead = ""
    if items and isinstance(items[0], str):
        lead, items = items[0], items[1:]
        if lead.strip():
            return None
    if len(items) < 3 or not isinstance(items[0], _FGroup) or not isinstance(items[1], str):
        return None
    group, between, args = items[0], items[1], items[2]
    combine = p.fast_combine.fullmatch(between)
    if combine is None or combine.group(1) == "blend" or not isinstance(args, _FGroup):
        return None
    if any(not isinstance(item, str) for item in args.items):
        return None
    options = _options("".join(args.items), leading_comma=False)
    if options is None:
        return None
    quoted: list[_FQuoted] = []
    expect_member = True
    for item in group.items:
        if isinstance(item, _FQuoted) and expect_member:
            quoted.append(item)
            expect_member = False
        elif isinstance(item, str) and not expect_member and p.fast_separator.fullmatch(item):
            expect_member = True
        elif not isinstance(item, str) or item.strip():
            return None
    if expect_member:
        return None
    return lead, group, args, options, quoted


def _fast_conjunction(items: list[Any], text: str, max_depth: int) -> list[Any] | None:
    """``("a", "b").and(1, 0.5)`` (and what follows it) as a plan: (_CONJUNCTION, leading
    space, member plans, frame, weights, diagnostics, rest); None where it is not one."""
    shape = _conjunction_shape(items)
    if shape is None:
        return None
    lead, group, args, options, quoted = shape
    plans: list[list[Any]] = []
    frame: list[str] = []
    mark = group.start + 1
    for member in quoted:
        inner = member.text[1:-1]
        scanned = _scan(inner, max_depth) if inner.strip() else None
        plan: list[Any] = []
        if scanned is None or not _fast_fragments(scanned, plan):
            return None
        plans.append(plan)
        frame.append(text[mark : member.start])
        mark = member.start + len(member.text)
    frame[0] = "(" + frame[0]
    frame.append(text[mark : group.end] + ")" + text[group.end + 1 : args.end + 1])
    diagnostics: list[Diagnostic] = []
    weights = _weights(options, len(plans), group.start, diagnostics, "and")
    rest = text[args.end + 1 :]
    if rest.strip():
        diagnostics.append(
            Diagnostic("ignored-text", "compel ignores the text after .and(...)", args.end + 1)
        )
    return [(_CONJUNCTION, lead, plans, tuple(frame), weights, diagnostics, rest)]


def _fast_plan(text: str, max_depth: int) -> list[Any] | None:
    if "\x00" in text or _GROUP in text or _QUOTED in text:
        return None
    items = _scan(text, max_depth)
    if items is None:
        return None
    if "." in text:
        conjunction = _fast_conjunction(items, text, max_depth)
        if conjunction is not None:
            return conjunction
    return _fast_top(items, text)


def _plan_nodes(plan: list[Any]) -> list[Node]:
    p = _p()
    out: list[Node] = []
    for entry in plan:
        kind = entry[0]
        if kind == _TOP:
            out.extend(map(Text, p.fast_top_items.findall(entry[1])))
        elif kind == _FRAGMENT:
            out.extend(map(Text, p.fast_fragment_items.findall(entry[1])))
        elif kind == _GROUP_ENTRY:
            out.append(Attention(tuple(_plan_nodes(entry[1])), entry[2], "round", entry[3]))
        elif kind == _LORA_ENTRY:
            out.append(entry[1])
        else:
            _, lead, plans, frame, weights, _, rest = entry
            if lead:
                out.append(Text(lead))
            members = tuple(Attention(tuple(_plan_nodes(m)), 1.0, "quote") for m in plans)
            out.append(Conjunction(members, weights, frame))
            if rest:
                out.append(Text(rest))
    return out


def _plan_spans(plan: list[Any], scale: float, out: list[list[Any]]) -> None:
    p = _p()
    for entry in plan:
        kind = entry[0]
        if kind == _TOP:
            words = entry[1].replace("\x00", " ").split()
        elif kind == _FRAGMENT:
            words = p.fast_fragment_words.findall(entry[1])
        elif kind == _GROUP_ENTRY:
            _plan_spans(entry[1], scale * entry[2], out)
            continue
        elif kind == _LORA_ENTRY:
            continue
        else:
            for member in entry[2]:  # each part fused on its own
                part: list[list[Any]] = []
                _plan_spans(member, 1.0, part)
                out.extend(part)
            continue
        if words:
            weight = 1.0 * scale
            if out and out[-1][1] == weight:
                out[-1][0].extend(words)
            else:
                out.append([words, weight])


def fast_nodes(text: str, max_depth: int) -> tuple[tuple[Node, ...], list[Diagnostic]] | None:
    """The builder's nodes and diagnostics of ``text``, read by the fast path; None where it
    does not apply."""
    plan = _fast_plan(text, max_depth)
    if plan is None:
        return None
    diagnostics = plan[0][5] if plan and plan[0][0] == _CONJUNCTION else []
    return tuple(_plan_nodes(plan)), sorted(diagnostics, key=lambda d: d.pos)


def fast_spans(text: str, max_depth: int) -> tuple[tuple[str, float], ...] | None:
    """:func:`compel_spans` of ``text`` by the fast path; None where it does not apply."""
    if "\x00" in text or _GROUP in text or _QUOTED in text:
        return None
    flat = _flat_spans(text, max_depth)
    if flat is not None:
        return flat
    plan = _fast_plan(text, max_depth)
    if plan is None:
        return None
    out: list[list[Any]] = []
    _plan_spans(plan, 1.0, out)
    if not out:
        return (("", 1.0),)
    return tuple((_unescape(" ".join(words)), weight) for words, weight in out)


def _flat_spans(text: str, max_depth: int) -> tuple[tuple[str, float], ...] | None:
    """:func:`fast_spans` in one pass for prompts with no group inside a group, no quoted string
    and no operator but ``("a", "b").and(...)`` (most prompts): the rules of :func:`_fast_top`
    and :func:`_fast_fragments`, without a plan."""
    if max_depth < 1:
        return None
    segments = _flat_segments(text, fragment=False)
    if segments is None:
        items = _scan(text, max_depth)
        shape = None if items is None else _conjunction_shape(items)
        if shape is None:
            return None
        segments = []
        for quoted in shape[-1]:
            inner = quoted.text[1:-1]
            part = _flat_segments(inner, fragment=True) if inner.strip() else None
            if part is None:
                return None
            segments += part  # each part fused on its own
    if not segments:
        return (("", 1.0),)
    if "\\" not in text:
        return tuple((" ".join(words), weight) for words, weight in segments)
    return tuple((_unescape(" ".join(words)), weight) for words, weight in segments)


def _flat_segments(text: str, *, fragment: bool) -> list[tuple[list[str], float]] | None:
    """The fused fragments of a prompt (``fragment``: of a quoted string's text) as
    ``(words, weight)``; None where :func:`_flat_spans` does not apply."""
    p = _p()
    loras = p.lora_call.search(text) is not None
    if fragment and loras:
        return None
    segments: list[tuple[list[str], float]] = []
    pending: list[str] | None = None  # the words of the group just closed, before its weight
    lora = False  # the group open is a LoRA call
    opened = False
    last = 0
    for match in p.structure.finditer(text):
        kind = match.lastgroup
        if kind == "ESCAPED":
            continue
        run = text[last : match.start()]
        last = match.end()
        if kind == "RPAR" and opened:
            opened = False
            closed = _flat_closed(run, lora=lora, loras=loras)
            if closed is False:
                return None
            pending = closed
            continue
        if kind != "LPAR" or opened:
            return None
        if pending is not None:
            run = _flat_weight(run, pending, segments)
            pending = None
        read = _flat_run(run, fragment=fragment, loras=loras, before_group=True)
        if read is None:
            return None
        words, lora = read
        _flat_add(words, 1.0, segments)
        opened = True
    if opened:
        return None
    run = text[last:]
    if pending is not None:
        run = _flat_weight(run, pending, segments)
    read = _flat_run(run, fragment=fragment, loras=loras, before_group=False)
    if read is None:
        return None
    _flat_add(read[0], 1.0, segments)
    return segments


def _flat_closed(run: str, *, lora: bool, loras: bool) -> list[str] | Literal[False] | None:
    """The words of a group just closed (None for a LoRA call's: no weight follows it); False
    where it is not simple."""
    p = _p()
    if lora:
        return None if p.lora_arg.fullmatch(run) is not None else False
    if loras and p.lora_call.search(run) is not None:
        return False
    words = _fragment_words(run)
    return False if words is None else words


def _flat_run(
    run: str, *, fragment: bool, loras: bool, before_group: bool
) -> tuple[list[str], bool] | None:
    """A run outside groups: its words and whether it ends with a LoRA call's name; None where
    compel might read more than text in it."""
    if fragment:
        words = _fragment_words(run)
        return None if words is None else (words, False)
    p = _p()
    if "," in run and (run[-1] == "," or p.comma.search(run) is not None):
        # compel's `,x` → `, x` rewrite: before a group, a comma at the end gets its space too
        run = (
            p.comma.sub(",\x00\\1", run + "(")[:-1]
            if before_group
            else p.comma.sub(",\x00\\1", run)
        )
    lora = False
    if before_group and run and not run[-1].isspace() and run[-1] != "\x00":
        tail = _last_chunk(run)
        if not loras or p.lora_call.fullmatch(tail) is None:
            return None  # a free word runs into the group
        lora = True
        run = run[: len(run) - len(tail)]
    if "." in run or (loras and p.lora_call.search(run) is not None):
        return None
    if ("+" in run or "-" in run) and p.fast_sign.search(run) is not None:
        return None
    return (run.replace("\x00", " ").split() if "\x00" in run else run.split()), lora


def _flat_weight(run: str, words: list[str], segments: list[tuple[list[str], float]]) -> str:
    """Add a closed group's ``words`` with the weight ``run`` starts with; the rest of it."""
    suffix = _p().suffix.match(run)
    if suffix is None:
        _flat_add(words, 1.0, segments)
        return run
    _flat_add(words, 1.0 * _suffix_weight(suffix.group()), segments)
    return run[suffix.end() :]


def _flat_add(words: list[str], weight: float, segments: list[tuple[list[str], float]]) -> None:
    if not words:
        return
    if segments and segments[-1][1] == weight:
        segments[-1][0].extend(words)
    else:
        segments.append((words, weight))
