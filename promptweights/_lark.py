"""The only module that imports lark: builds the LALR parsers and turns their output into the tree.

Each dialect (:mod:`promptweights.dialects`) has a grammar file in ``promptweights.grammar``, the
one place its syntax is written: the fast path's lexer is built from the grammar's own terminals
when a dialect is first used, and the bracket terminals are found by their characters. Three
things make the grammars LALR(1) and fast, and keep them total (every string parses):

* a postlexer (:class:`_Balancer`) matches brackets before the parser sees them: a closer without
  an opener becomes a ``STRAY`` text token, an opener nested deeper than the depth cap becomes a
  ``DEEP`` text token (with its closer), and every opener left open at the end gets an empty
  ``UNCLOSED_*`` closer. The grammar therefore only ever sees balanced brackets;
* what a colon or a pipe inside ``[...]`` means (editing, alternation, or text) is decided in the
  transformer, following A1111's scheduling grammar (a1111-behaviour.md §2.1);
* the transformer runs inline (``transformer=``), so nesting depth never touches the Python stack.

Nothing from lark leaves this module: callers get tuples of :mod:`promptweights.tree` nodes and a
list of :class:`~promptweights.errors.Diagnostic`.

The fast path (:func:`parse_nodes` with ``engine="fast"``) implements the same grammar without
lark's LALR machinery. After balancing, every grammar reduces to::

    start:   _item*
    <kind>:  OPENER _item* (CLOSER | UNCLOSED_CLOSER)     for each bracket of the dialect
    _item:   <any terminal but the brackets> | <kind>

so an opener starts a child list, its closer hands the list to the rule's callback, and ``start``
takes the top level; the terminals are the grammar's, matched in lark's order. Before that, a
dialect's tree builder may read the text its own faster way (:meth:`TreeBuilder.shortcut`, compel's
common prompts), from the grammar's terminals too: :func:`terminal_patterns` gives every named
terminal, those no rule uses included, and :func:`structure_lexer` the terminals that are not plain
text, so that the regex engine skips words and spaces in C.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
from collections.abc import Collection, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from lark import Lark, Token, Transformer

from .errors import Diagnostic, PromptweightsError
from .tree import Alternation, Break, Edit, Emphasis, EncoderSection, Node, PerEncoder, Text

if TYPE_CHECKING:
    from .dialects import Dialect

__all__ = [
    "GLOBAL_FAILURES",
    "ComfyBuilder",
    "FastLexer",
    "NovelAIBuilder",
    "TreeBuilder",
    "excluded_chars",
    "fast_lexer",
    "file_accepts",
    "file_lexer",
    "grammar",
    "merged_strings",
    "parse_nodes",
    "structure_lexer",
    "terminal_patterns",
]

GRAMMAR_PACKAGE = "promptweights.grammar"
if importlib.util.find_spec(GRAMMAR_PACKAGE) is None:
    # The grammar files ship as a package of their own (pyproject.toml's package-dir): a source
    # checkout on sys.path has no `promptweights.grammar` until it is installed.
    raise ImportError(
        f"{GRAMMAR_PACKAGE} is missing: install promptweights (in a source checkout: "
        "pip install -e .) instead of importing it from the source tree"
    )

# A1111's scheduling parse fails as a whole on these, which switches off editing and alternation
# for the whole sub-prompt (a1111-behaviour.md §2.1).
GLOBAL_FAILURES = frozenset({"stray-pipe", "trailing-backslash"})

# `when` of an edit: lark's SIGNED_NUMBER, ASCII digits, with the whitespace around it (§2.1).
_WHEN_RE = re.compile(
    r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?))\s*"
)
# The emphasis pass's explicit weight `:1.3)`: any Unicode digits and dots (§2.2 token 5).
_ATTENTION_WEIGHT_RE = re.compile(r":\s*([+-]?[.\d]+)\s*")
_BREAK_SPLIT_RE = re.compile(r"(\s*\bBREAK\b\s*)")


@dataclass(frozen=True, slots=True)
class _ParseState:
    diagnostics: list[Diagnostic]
    schedule: bool
    max_depth: int


_STATE: ContextVar[_ParseState] = ContextVar("promptweights_parse_state")


def _pos(token: Any) -> int:
    return int(token.start_pos or 0)


def _diagnose(kind: str, message: str, pos: int) -> None:
    _STATE.get().diagnostics.append(Diagnostic(kind, message, pos))


@dataclass(frozen=True, slots=True)
class _Brackets:
    """A dialect's bracket terminals, named as its grammar names them."""

    openers: dict[str, tuple[str, str]]  # opener → (closer, the empty closer of an unclosed one)
    closers: frozenset[str]
    rules: dict[str, str]  # closer or unclosed closer → the grammar rule (the Emphasis kind)
    #: opener → the grammar rule it starts (two openers may share a closer: `(` and `TE(`)
    opener_rules: dict[str, str]


class _Balancer:
    """Postlexer that hands the parser balanced brackets (see the module docstring)."""

    def __init__(self, brackets: _Brackets) -> None:
        self.brackets = brackets
        # The contextual lexer only looks for terminals the parser accepts next; a closer that
        # closes nothing must still be lexed, so that it can be turned into STRAY text here.
        self.always_accept = (*brackets.openers, *brackets.closers)

    def process(self, stream: Iterator[Any]) -> Iterator[Any]:
        """Lark's postlex hook: balance a stream of lark tokens."""
        return balance(stream, self.brackets, _STATE.get().max_depth, Token.new_borrow_pos)


def balance(stream: Iterator[Any], brackets: _Brackets, max_depth: int, make: Any) -> Iterator[Any]:
    """Yield ``stream`` with brackets balanced; ``make(type, value, token)`` retypes a token."""
    openers, closers = brackets.openers, brackets.closers
    # Each entry: (closer type, unclosed type, opener token, nested past the cap).
    stack: list[tuple[str, str, Any, bool]] = []
    depth = 0
    for token in stream:
        kind = token.type
        if kind in openers:
            closer, unclosed = openers[kind]
            deep = depth >= max_depth
            stack.append((closer, unclosed, token, deep))
            if deep:
                yield make("DEEP", str(token), token)
            else:
                depth += 1
                yield token
        elif kind in closers:
            if stack and stack[-1][0] == kind:
                deep = stack.pop()[3]
                if deep:
                    yield make("DEEP", str(token), token)
                else:
                    depth -= 1
                    yield token
            else:
                yield make("STRAY", str(token), token)
        else:
            yield token
    while stack:
        _, unclosed, opener, deep = stack.pop()
        if not deep:
            yield make(unclosed, "", opener)


def _closed(closer: Any) -> bool:
    return not closer.type.startswith("UNCLOSED_")


@dataclass(frozen=True, slots=True)
class _Sub:
    """A bracket's node plus whether A1111's scheduling grammar accepts it (§2.1)."""

    node: Node
    ok: bool


_Piece = str | Node
_P = TypeVar("_P")


def merged_strings(seq: Sequence[_P]) -> list[_P]:
    """Join runs of adjacent strings (once, in linear time: ``+=`` in a loop is quadratic)."""
    out: list[_P] = []
    run: list[str] = []
    for piece in seq:
        if isinstance(piece, str):
            run.append(piece)
            continue
        if run:
            out.append("".join(run))  # type: ignore[arg-type]
            run = []
        out.append(piece)
    if run:
        out.append("".join(run))  # type: ignore[arg-type]
    return out


class TreeBuilder(Transformer[Token, tuple[Node, ...]]):
    """Inline LALR transformer: bracket rules → tree nodes (A1111 dialect).

    A rule named after a bracket kind (``round``, ``square``, ``brace``) gets the bracket's
    children; weights come from the dialect's bracket table.
    """

    def __init__(self, dialect: Dialect) -> None:
        super().__init__()
        self.split_breaks = dialect.breaks
        self.factors = {bracket.kind: bracket.factor for bracket in dialect.brackets}

    def shortcut(
        self, text: str, max_depth: int
    ) -> tuple[tuple[Node, ...], list[Diagnostic]] | None:
        """A dialect's own fast reading of ``text`` (nodes, diagnostics sorted by position), tried
        by the fast path before the grammar's tokens; None where it does not apply (here: never
        applies)."""
        return None

    def _nodes(self, seq: Sequence[_Piece]) -> tuple[Node, ...]:
        out: list[Node] = []
        for piece in merged_strings(list(seq)):
            if not isinstance(piece, str):
                out.append(piece)
            elif self.split_breaks and "BREAK" in piece:
                for i, chunk in enumerate(_BREAK_SPLIT_RE.split(piece)):
                    if i % 2:
                        out.append(Break(chunk))
                    elif chunk:
                        out.append(Text(chunk))
            elif piece:
                out.append(Text(piece))
        return tuple(out)

    def _token(self, token: Token, seq: list[_Piece], deep_seen: bool) -> tuple[bool, bool]:
        """Add a token's text to ``seq``; return whether it keeps the bracket well formed, and
        whether a too-deep bracket has been reported at this level (once per level is enough)."""
        kind = token.type
        seq.append(str(token))
        if kind == "STRAY":
            _diagnose("stray-closer", f"{str(token)!r} closes nothing", _pos(token))
            return False, deep_seen
        if kind == "BACKSLASH":
            _diagnose(
                "trailing-backslash",
                "a backslash at the end of a line escapes nothing",
                _pos(token),
            )
            return False, deep_seen
        if kind == "DEEP" and not deep_seen:
            deep_seen = True
            _diagnose(
                "too-deep", "brackets nested past the depth cap are kept as text", _pos(token)
            )
        if kind == "PIPE":
            _diagnose(
                "stray-pipe",
                "'|' outside an alternation [a|b] switches off prompt editing for the whole prompt",
                _pos(token),
            )
            return False, deep_seen
        return True, deep_seen

    def _collect(self, items: list[Any]) -> tuple[list[_Piece], bool, int]:
        """The pieces of a rule's items, whether all are well formed, and the colon count."""
        seq: list[_Piece] = []
        ok = True
        colons = 0
        deep_seen = False
        for item in items:
            if isinstance(item, _Sub):
                seq.append(item.node)
                ok = ok and item.ok
            else:
                colons += item.type == "COLON"
                well_formed, deep_seen = self._token(item, seq, deep_seen)
                ok = well_formed and ok
        return seq, ok, colons

    def start(self, children: list[Any]) -> tuple[Node, ...]:
        return self._nodes(self._collect(children)[0])

    def _unclosed(self, opener: Token) -> None:
        _diagnose("unclosed", f"{str(opener)!r} is never closed", _pos(opener))

    def round(self, children: list[Any]) -> _Sub:
        opener, *items, closer = children
        closed = _closed(closer)
        seq, ok, colons = self._collect(items)
        ok = ok and closed
        weight, weight_text = self.factors["round"], None
        seq = merged_strings(seq)
        if closed and seq and isinstance(seq[-1], str):
            weight, weight_text, seq[-1] = self._explicit_weight(seq[-1], closer)
        if not closed:
            self._unclosed(opener)
        node = Emphasis(self._nodes(seq), weight, "round", weight_text, closed)
        return _Sub(node, ok and colons <= 1)

    def _explicit_weight(self, tail: str, closer: Token) -> tuple[float, str | None, str]:
        """Split ``text:1.3`` into weight, weight text and text, as A1111's emphasis pass does."""
        cut = tail.rfind(":")
        match = _ATTENTION_WEIGHT_RE.fullmatch(tail, cut) if cut >= 0 else None
        if match is None:
            return self.factors["round"], None, tail
        try:
            weight = float(match.group(1))
        except ValueError:
            _diagnose(
                "bad-weight",
                f"{match.group(1)!r} is not a number (A1111 fails here)",
                _pos(closer) - len(tail) + cut,
            )
            return self.factors["round"], None, tail
        return weight, tail[cut:], tail[:cut]

    def square(self, children: list[Any]) -> _Sub:
        opener, *items, closer = children
        closed = _closed(closer)
        parts, separators, items_ok, deep_seen = self._square_parts(items)
        ok = closed and items_ok
        state = _STATE.get()
        kinds = {token.type for token in separators}
        if state.schedule and ok and kinds == {"PIPE"}:
            return _Sub(Alternation(tuple(self._part(part) for part in parts)), True)
        if state.schedule and ok and kinds == {"COLON"} and len(separators) <= 2:
            edit = self._edit(parts)
            if edit is not None:
                return _Sub(edit, True)
        # Plain de-emphasis; colons and pipes are text.
        seq: list[_Piece] = []
        for item in items:
            if isinstance(item, _Sub):
                seq.append(item.node)
            elif item.type == "COLON":
                seq.append(str(item))
            else:
                well_formed, deep_seen = self._token(item, seq, deep_seen)
                ok = well_formed and ok
        if not closed:
            self._unclosed(opener)
        elif "COLON" in kinds and state.schedule:
            _diagnose(
                "bad-edit",
                "not a prompt edit [from:to:when] (the step must be a number, "
                "with one or two colons); A1111 reads it as de-emphasised text",
                _pos(opener),
            )
        # A1111 multiplies by 1/1.1; it never divides (a1111-behaviour.md §12 trap 8).
        node = Emphasis(self._nodes(seq), self.factors["square"], "square", None, closed)
        return _Sub(node, ok and not separators)

    def _square_parts(self, items: list[Any]) -> tuple[list[list[Any]], list[Token], bool, bool]:
        """Split ``[...]``'s items at its colons and pipes.

        Returns the parts, the separators, whether every item is well formed, and whether a
        too-deep bracket was seen.
        """
        ok = True
        parts: list[list[Any]] = [[]]
        separators: list[Token] = []
        deep_seen = False
        for item in items:
            if isinstance(item, _Sub):
                ok = ok and item.ok
            elif item.type in ("COLON", "PIPE"):
                separators.append(item)
                parts.append([])
                continue
            elif item.type in ("STRAY", "BACKSLASH"):
                ok = False
            elif item.type == "DEEP":
                deep_seen = self._token(item, [], deep_seen)[1]
            parts[-1].append(item)
        return parts, separators, ok, deep_seen

    def _part(self, items: list[Any]) -> tuple[Node, ...]:
        return self._nodes([item.node if isinstance(item, _Sub) else str(item) for item in items])

    def _edit(self, parts: list[list[Any]]) -> Edit | None:
        last = parts[-1]
        if len(last) != 1 or isinstance(last[0], _Sub) or last[0].type != "TEXT":
            return None
        when_text = str(last[0])
        match = _WHEN_RE.fullmatch(when_text)
        if match is None:
            return None
        when = float(match.group(1))
        before = self._part(parts[0]) if len(parts) == 3 else None
        return Edit(before, self._part(parts[-2]), when, when_text)

    def encoders(self, children: list[Any]) -> _Sub:
        """``TE(name: text; name: text)``: the sections, split at the ``;`` of this level."""
        opener, *items, closer = children
        closed = _closed(closer)
        sections: list[EncoderSection] = []
        ok, colons = closed, 0
        for piece in _split_sections(items):
            section, section_ok, section_colons = self._section(piece, _pos(opener))
            sections.append(section)
            ok, colons = ok and section_ok, colons + section_colons
        if not closed:
            self._unclosed(opener)
        # To A1111's scheduling grammar the block is a round bracket (§2.1).
        return _Sub(PerEncoder(tuple(sections), closed), ok and colons <= 1)

    def _section(self, items: list[Any], block: int) -> tuple[EncoderSection, bool, int]:
        """One section: its name (before the first colon), head and content."""
        cut = next(
            (
                i
                for i, item in enumerate(items)
                if not isinstance(item, _Sub) and item.type == "COLON"
            ),
            None,
        )
        head = None if cut is None else "".join(str(item) for item in items[:cut])
        named = (
            head is not None
            and all(not isinstance(item, _Sub) and item.type == "TEXT" for item in items[:cut])
            and _SECTION_NAME_RE.fullmatch(head) is not None
        )
        if not named:
            where = _pos(items[0]) if items and not isinstance(items[0], _Sub) else block
            _diagnose(
                "bad-encoders",
                "a TE( section without a name: write name: text (clip_l: a cat; t5: a dog)",
                where,
            )
            seq, ok, colons = self._collect(items)
            return EncoderSection("", "", self._nodes(seq)), ok, colons
        assert cut is not None
        assert head is not None
        seq, ok, colons = self._collect(items[cut + 1 :])
        return EncoderSection(head.strip(), head + ":", self._nodes(seq)), ok, colons + 1


# A section's name: an identifier, with spaces around it.
_SECTION_NAME_RE = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*")


def _split_sections(items: list[Any]) -> list[list[Any]]:
    """A ``TE(…)`` block's items cut at each ``;`` of its own TEXT tokens (nested brackets and
    escapes such as ``\\;`` keep theirs)."""
    sections: list[list[Any]] = [[]]
    for item in items:
        if isinstance(item, _Sub) or item.type != "TEXT" or ";" not in str(item):
            sections[-1].append(item)
            continue
        text, start = str(item), _pos(item)
        offset = 0
        for i, piece in enumerate(text.split(";")):
            if i:
                sections.append([])
            if piece:
                sections[-1].append(_FastToken("TEXT", piece, start + offset))
            offset += len(piece) + 1
    return sections


class NovelAIBuilder(TreeBuilder):
    """NovelAI: ``{x}`` and ``[x]``, each its dialect's factor, and V4's ``1.5::x::``, whose
    factor is the number written; no editing."""

    def weight(self, children: list[Any]) -> _Sub:
        opener, *items, closer = children
        seq = self._collect(items)[0]
        closed = _closed(closer)
        if not closed:
            self._unclosed(opener)
        text = str(opener)
        node = Emphasis(self._nodes(seq), float(text[:-2]), "weight", text, closed)
        return _Sub(node, True)

    def brace(self, children: list[Any]) -> _Sub:
        return self._simple(children, "brace")

    def square(self, children: list[Any]) -> _Sub:
        return self._simple(children, "square")

    def _simple(self, children: list[Any], kind: Any) -> _Sub:
        opener, *items, closer = children
        seq = self._collect(items)[0]
        closed = _closed(closer)
        weight = self.factors[kind]
        if not closed:
            self._unclosed(opener)
        return _Sub(Emphasis(self._nodes(seq), weight, kind, None, closed), True)


class ComfyBuilder(TreeBuilder):
    """ComfyUI: round brackets only; ``(x:n)`` sets the weight to exactly ``n``."""

    def round(self, children: list[Any]) -> _Sub:
        opener, *items, closer = children
        closed = _closed(closer)
        seq = self._collect(items)[0]
        weight, weight_text, absolute = self.factors["round"], None, False
        if not closed:
            self._unclosed(opener)
        elif (seq := merged_strings(seq)) and isinstance(seq[-1], str):
            tail = seq[-1]
            cut = tail.rfind(":")
            # ComfyUI ignores a colon at the very start of the bracket (`xx > 0`).
            if cut >= 0 and not (cut == 0 and len(seq) == 1):
                number = comfy_float(tail[cut + 1 :])
                if number is not None:
                    weight, weight_text, absolute = number, tail[cut:], True
                    seq[-1] = tail[:cut]
        return _Sub(
            Emphasis(self._nodes(seq), weight, "round", weight_text, closed, absolute), True
        )


def comfy_float(text: str) -> float | None:
    """Python's ``float()`` as ComfyUI applies it to everything after the last colon
    (weighting-strategies.md §1.3); ``None`` where it fails."""
    try:
        return float(text)
    except ValueError:
        return None


# --- the grammar, loaded once per dialect ----------------------------------------------------


@functools.cache
def grammar(dialect: Dialect) -> Lark:
    """The dialect's grammar as lark loads it (an LALR parser without callbacks): its terminals
    are what the fast path and the bracket table are derived from."""
    return Lark.open_from_package(
        GRAMMAR_PACKAGE, dialect.grammar, parser="lalr", lexer="basic", cache=False
    )


def _literal_terminal(dialect: Dialect, char: str) -> str:
    """The name of the grammar terminal that is exactly ``char``."""
    for terminal in grammar(dialect).terminals:
        if terminal.pattern.type == "str" and terminal.pattern.value == char:
            return str(terminal.name)
    raise PromptweightsError(f"grammar {dialect.grammar} has no terminal {char!r}")


@functools.cache
def _brackets(dialect: Dialect) -> _Brackets:
    openers: dict[str, tuple[str, str]] = {}
    rules: dict[str, str] = {}
    opener_rules: dict[str, str] = {}
    for bracket in (*dialect.brackets, *dialect.groups):
        opener = bracket.terminal or _literal_terminal(dialect, bracket.opener)
        closer = _literal_terminal(dialect, bracket.closer)
        unclosed = "UNCLOSED_" + closer  # the grammar %declares it; the postlexer emits it
        openers[opener] = (closer, unclosed)
        rules.setdefault(closer, bracket.kind)
        rules.setdefault(unclosed, bracket.kind)
        opener_rules[opener] = bracket.kind
    closers = frozenset(closer for closer, _ in openers.values())
    return _Brackets(openers, closers, rules, opener_rules)


@functools.cache
def _parser(dialect: Dialect) -> Lark:
    return Lark.open_from_package(
        GRAMMAR_PACKAGE,
        dialect.grammar,
        parser="lalr",  # LALR only: linear time, no ambiguity to resolve
        lexer="contextual",
        transformer=dialect.builder(dialect),  # inline: no lark Tree, no recursion on depth
        postlex=_Balancer(_brackets(dialect)),
        propagate_positions=False,
        maybe_placeholders=False,
        cache=False,
    )


# --- the fast path ----------------------------------------------------------------------------


class _FastToken:
    """What the fast path hands the tree builder instead of a lark ``Token``."""

    __slots__ = ("start_pos", "type", "value")

    def __init__(self, kind: str, value: str, start_pos: int) -> None:
        self.type = kind
        self.value = value
        self.start_pos = start_pos

    def __str__(self) -> str:
        return self.value

    @classmethod
    def borrow(cls, kind: str, value: str, token: _FastToken) -> _FastToken:
        return cls(kind, value, _pos(token))


@dataclass(frozen=True, slots=True)
class FastLexer:
    """The grammar's terminals as one regex: group ``i`` of ``pattern`` is terminal ``kinds[i]``."""

    pattern: re.Pattern[str]
    kinds: tuple[str, ...]  # "" for groups that are not a terminal


def _lark_order(terminal: Any) -> tuple[int, int, int, str]:
    # The order lark's lexers try terminals in (lark/lexer.py, BasicLexer): a regex alternation
    # takes the first alternative that matches, so this is what makes both engines agree where
    # terminals overlap (ESCAPE `\x` before BACKSLASH `\`).
    pattern = terminal.pattern
    return (-terminal.priority, -pattern.max_width, -len(pattern.value), terminal.name)


@functools.cache
def fast_lexer(dialect: Dialect) -> FastLexer:
    """The dialect's terminals, read from its grammar, as one regex in lark's matching order."""
    return _lexer(grammar(dialect).terminals)


def _lexer(terminals: Collection[Any]) -> FastLexer:
    ordered = sorted(terminals, key=_lark_order)
    pattern = re.compile("|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in ordered))
    kinds = [""] * (pattern.groups + 1)  # a terminal's own groups, if any, stay unnamed
    for name, index in pattern.groupindex.items():
        kinds[index] = name
    return FastLexer(pattern, tuple(kinds))


@functools.cache
def terminal_patterns(dialect: Dialect) -> dict[str, str]:
    """Every named terminal of the dialect's grammar as a regex source, those no rule uses
    included (compel.lark names the pieces its tree builder reads inside a level)."""
    loaded = grammar(dialect).grammar
    names = {name for name, _ in loaded.term_defs}
    terminals, _, _ = loaded.compile(["start"], names)
    return {str(t.name): t.pattern.to_regexp() for t in terminals}


@functools.cache
def structure_lexer(dialect: Dialect, runs: frozenset[str], inside: frozenset[str]) -> FastLexer:
    """The terminals that are not ``runs`` (compel: brackets and quotes), plus the named pieces
    ``inside`` by which a run terminal holds their characters (compel: ``ESCAPED``), as one regex
    in lark's order: the text between two matches that are not ``inside`` ones is a stretch of run
    tokens, found by C's search instead of token by token. Exact where a run terminal holds a
    character that starts another terminal only through an ``inside`` piece;
    tests/test_compel_fastpath.py checks it against :func:`fast_lexer`."""
    patterns = terminal_patterns(dialect)
    ordered = sorted(grammar(dialect).terminals, key=_lark_order)
    parts = [f"(?P<{name}>{patterns[name]})" for name in sorted(inside)]
    parts += [f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in ordered if t.name not in runs]
    source = "|".join(parts)
    firsts = _first_chars(source)
    if firsts is not None:  # lets the regex engine skip the text between matches in C
        source = f"(?=[{''.join(re.escape(c) for c in sorted(firsts))}])(?:{source})"
    pattern = re.compile(source)
    kinds = [""] * (pattern.groups + 1)
    for name, index in pattern.groupindex.items():
        kinds[index] = name
    return FastLexer(pattern, tuple(kinds))


def excluded_chars(source: str) -> set[str]:
    """The characters ``source``'s negated classes (``[^...]``) list by name (not categories
    such as ``\\s``): what a pattern made of such classes never matches."""
    out: set[str] = set()
    stack = [list(_sre_parse().parse(source))]
    while stack:
        for op, arg in stack.pop():
            name = str(op)
            if name == "IN" and arg and str(arg[0][0]) == "NEGATE":
                out |= {chr(value) for kind, value in arg[1:] if str(kind) == "LITERAL"}
            elif name in ("SUBPATTERN", "ASSERT", "ASSERT_NOT"):
                stack.append(list(arg[-1]))
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                stack.append(list(arg[2]))
            elif name == "BRANCH":
                stack.extend(list(branch) for branch in arg[1])
    return out


def _sre_parse() -> Any:
    if sys.version_info >= (3, 11):
        from re import _parser as sre_parse
    else:  # pragma: no cover - Python 3.10
        import sre_parse
    return sre_parse


def _first_chars(source: str) -> set[str] | None:
    """The characters a match of ``source`` can start with; None where that is not a plain set
    of characters (then no prefix is added)."""
    return _firsts(list(_sre_parse().parse(source)))


def _firsts(items: list[Any]) -> set[str] | None:
    if not items:
        return None
    op, arg = items[0]
    name = str(op)
    if name == "LITERAL":
        return {chr(arg)}
    if name == "SUBPATTERN":
        return _firsts(list(arg[-1]))
    if name == "BRANCH":
        out: set[str] = set()
        for branch in arg[1]:
            found = _firsts(list(branch))
            if found is None:
                return None
            out |= found
        return out
    if name == "IN":
        chars: set[str] = set()
        for kind, value in arg:
            if str(kind) != "LITERAL":
                return None
            chars.add(chr(value))
        return chars
    return None


# --- grammars of syntaxes that are not dialects (grammar/dynamic.lark) -----------------------


@functools.cache
def _grammar_file(name: str) -> Lark:
    return Lark.open_from_package(GRAMMAR_PACKAGE, name, parser="lalr", lexer="contextual")


@functools.cache
def file_lexer(name: str) -> FastLexer:
    """The terminals of the grammar file ``name`` as one regex, in lark's matching order."""
    return _lexer(_grammar_file(name).terminals)


def file_accepts(name: str, text: str) -> bool:
    """Whether the LALR parser of the grammar file ``name`` accepts ``text`` (for tests)."""
    try:
        _grammar_file(name).parse(text)
    except Exception:  # lark's parse errors: the text is not a sentence
        return False
    return True


@functools.cache
def _fast_builder(dialect: Dialect) -> TreeBuilder:
    return dialect.builder(dialect)


def _fast_parse(text: str, dialect: Dialect, max_depth: int) -> tuple[Node, ...]:
    """The same tree as the lark parser, without lark's per-token machinery.

    The token stream is the grammar's (same terminals, same order); after balancing, the
    grammar's rules reduce to: an opener starts a child list, its closer hands the list to the
    rule's callback (``round``/``square``/``brace``), ``start`` takes the top level.
    """
    builder = _fast_builder(dialect)
    brackets = _brackets(dialect)
    openers, rules, opener_rules = brackets.openers, brackets.rules, brackets.opener_rules
    tokens = (
        _FastToken(m.lastgroup or "", m.group(), m.start())
        for m in fast_lexer(dialect).pattern.finditer(text)
    )
    stack: list[list[Any]] = [[]]
    for token in balance(tokens, brackets, max_depth, _FastToken.borrow):
        kind = token.type
        if kind in openers:
            stack.append([token])
        elif kind in rules:
            children = stack.pop()
            children.append(token)
            rule = opener_rules[children[0].type]  # the opener's: `(` and `TE(` share `)`
            stack[-1].append(getattr(builder, rule)(children))
        else:
            stack[-1].append(token)
    return builder.start(stack[0])


def parse_nodes(
    text: str, *, dialect: Dialect, max_depth: int, schedule: bool = True, engine: str = "fast"
) -> tuple[tuple[Node, ...], list[Diagnostic]]:
    """Parse one sub-prompt (no AND, comments or networks) into nodes and diagnostics.

    With ``schedule`` false, or when A1111's scheduling parse would fail as a whole (a stray
    ``|``, a trailing backslash), editing and alternation brackets are read as de-emphasis.
    ``engine="lark"`` runs the LALR parser of the grammar file; ``"fast"`` (the default) feeds
    the same tokens to the same callbacks without lark, which is 2-4x faster and proven equal
    by a differential property test.
    """
    if engine == "lark":
        parser = _parser(dialect)

        def run() -> tuple[Node, ...]:
            return parser.parse(text)  # type: ignore[return-value]
    else:
        quick = _fast_builder(dialect).shortcut(text, max_depth)
        if quick is not None:
            return quick

        def run() -> tuple[Node, ...]:
            return _fast_parse(text, dialect, max_depth)

    state = _ParseState([], schedule, max_depth)
    reset = _STATE.set(state)
    try:
        nodes = run()
        if schedule and any(d.kind in GLOBAL_FAILURES for d in state.diagnostics):
            _STATE.set(_ParseState([], False, max_depth))
            nodes = run()
    except PromptweightsError:
        raise
    except Exception as error:  # pragma: no cover - the grammar is total; this is a bug guard
        raise PromptweightsError(f"internal parser error on {text[:40]!r}: {error}") from error
    finally:
        _STATE.reset(reset)
    return nodes, sorted(state.diagnostics, key=lambda d: d.pos)
