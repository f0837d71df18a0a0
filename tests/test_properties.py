"""Properties of the whole prompt language, driven by the strategies of ``promptweights.testing``.

Example tests first (the strategies' own contract, and the two reference models below checked
against the real A1111 outputs quoted in a1111-behaviour.md §3.2, §3.4, §4.2 and §4.3), then the
properties of issue 2: render/parse round trip (and render giving the text back), never raising on
hostile text, span weight = product along the nesting path (all three dialects), schedules covering
exactly ``steps`` and following the editing/alternation structure, strict mode raising only
``PromptSyntaxError``, agreement with A1111's regex parser on any text, and parse time growing
linearly with the prompt.
"""

from __future__ import annotations

import gc
import itertools
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import promptweights
from benchmarks._a1111_reference import parse_prompt_attention
from promptweights.errors import PromptSyntaxError
from promptweights.testing import DIALECTS, bracket_soup, prompts, trees, weights

# ---------------------------------------------------------------------------------------------
# A reference model of each dialect's emphasis pass over a *structure* we generate, so expected
# weights never come from the code under test (a1111-behaviour.md §2.2, §3.1, §3.4;
# weighting-strategies.md §1.2 NovelAI, §1.3 ComfyUI).

_BREAK_RE = re.compile(r"\s*\bBREAK\b\s*")
_FACTORS = {
    ("a1111", "round"): 1.1,
    ("a1111", "square"): 1 / 1.1,  # A1111 multiplies by this constant, never divides (§12 trap 8)
    ("novelai", "brace"): 1.05,
    ("novelai", "square"): 1 / 1.05,
    ("comfy", "round"): 1.1,
}
_BRACKETS = {"round": ("(", ")"), "square": ("[", "]"), "brace": ("{", "}")}


@dataclass(frozen=True)
class Plain:
    text: str


@dataclass(frozen=True)
class Escape:
    char: str  # the character after the backslash


@dataclass(frozen=True)
class Keyword:
    source: str  # "BREAK" with or without spaces around it


@dataclass(frozen=True)
class Group:
    kind: str  # "round", "square" or "brace"
    weight: str | None  # the literal of (x:w), with its spaces
    children: tuple[Plain | Escape | Keyword | Group, ...]


Item = Plain | Escape | Keyword | Group


def source_of(items: tuple[Item, ...]) -> str:
    out = []
    for item in items:
        if isinstance(item, Plain):
            out.append(item.text)
        elif isinstance(item, Escape):
            out.append("\\" + item.char)
        elif isinstance(item, Keyword):
            out.append(item.source)
        else:
            opener, closer = _BRACKETS[item.kind]
            weight = "" if item.weight is None else ":" + item.weight
            out.append(opener + source_of(item.children) + weight + closer)
    return "".join(out)


def _emit_bottom_up(items: tuple[Item, ...], dialect: str, out: list[list[object]]) -> None:
    """A1111 and NovelAI: every closing bracket multiplies what it encloses, innermost first."""
    run: list[str] = []

    def flush() -> None:
        # A1111's text token is a run of characters other than \ ( ) [ ] : (§2.2 token 8); BREAK
        # is split out of each such run on its own.
        if run:
            for i, piece in enumerate(_BREAK_RE.split("".join(run))):
                if i > 0:
                    out.append(["BREAK", -1.0])
                out.append([piece, 1.0])
            run.clear()

    for item in items:
        if isinstance(item, Plain):
            run.append(item.text)
        elif isinstance(item, Keyword):
            run.append(item.source)
        elif isinstance(item, Escape):
            flush()
            out.append([item.char, 1.0])
        else:
            flush()
            start = len(out)
            _emit_bottom_up(item.children, dialect, out)
            factor = _FACTORS[dialect, item.kind] if item.weight is None else float(item.weight)
            for entry in out[start:]:
                entry[1] = float(entry[1]) * factor  # type: ignore[arg-type]
    flush()


def _emit_top_down(items: tuple[Item, ...], weight: float, out: list[list[object]]) -> None:
    """ComfyUI: ``(x)`` multiplies the enclosing weight by 1.1, ``(x:n)`` replaces it by n."""
    for item in items:
        if isinstance(item, Plain | Keyword):
            out.append([item.text if isinstance(item, Plain) else item.source, weight])
        elif isinstance(item, Escape):
            out.append([item.char, weight])
        elif item.weight is None:
            _emit_top_down(item.children, weight * 1.1, out)
        else:
            _emit_top_down(item.children, float(item.weight), out)


def _merged(entries: list[list[object]]) -> list[tuple[str, float]]:
    """A1111's final pass: neighbours with exactly equal weights are concatenated."""
    if not entries:
        entries = [["", 1.0]]
    merged: list[list[object]] = [list(entries[0])]
    for text, weight in entries[1:]:
        if merged[-1][1] == weight:
            merged[-1][0] = str(merged[-1][0]) + str(text)
        else:
            merged.append([text, weight])
    return [(str(text), float(weight)) for text, weight in merged]  # type: ignore[arg-type]


def expected_spans(items: tuple[Item, ...], dialect: str = "a1111") -> list[tuple[str, float]]:
    """The weight of every piece of text: the product (ComfyUI: the fold) along its path."""
    out: list[list[object]] = []
    if dialect == "comfy":
        _emit_top_down(items, 1.0, out)
    else:
        _emit_bottom_up(items, dialect, out)
    return _merged(out)


def normalised(spans: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Merged equal neighbours and no empty pieces: ComfyUI's segmentation is not A1111's."""
    return _merged([[text, weight] for text, weight in spans if text])


_LOWER_WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,.-'éß猫", min_size=1, max_size=6)


def emphasis_items(dialect: str = "a1111") -> st.SearchStrategy[Item]:
    """Structures of plain text, escapes, BREAK and brackets in ``dialect``."""
    if dialect == "novelai":
        words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,.-():|", min_size=1, max_size=6)
        base = st.one_of(st.builds(Plain, words), st.builds(Escape, st.sampled_from("{}[]\\")))
        kinds = [("brace", False), ("square", False)]
    elif dialect == "comfy":
        embeddings = st.sampled_from(("embedding:easynegative", "embedding:bad-hands-5"))
        base = st.one_of(
            st.builds(Plain, _LOWER_WORDS | embeddings), st.builds(Escape, st.sampled_from("()"))
        )
        kinds = [("round", False), ("round", True)]
    else:
        base = st.one_of(
            st.builds(Plain, _LOWER_WORDS),
            st.builds(Escape, st.sampled_from("()[]\\")),
            st.builds(Keyword, st.sampled_from((" BREAK ", "BREAK", "\nBREAK ", " BREAK"))),
        )
        kinds = [("round", False), ("round", True), ("square", False)]
    explicit = st.builds(
        "{}{}{}".format,
        st.sampled_from(("", " ")),
        weights(min_value=-10, max_value=10, allow_unicode_digits=True),
        st.sampled_from(("", " ")),
    )

    def extend(children: st.SearchStrategy[Item]) -> st.SearchStrategy[Item]:
        kids = st.lists(children, min_size=1, max_size=4).map(tuple)
        return st.one_of(
            [
                st.builds(Group, st.just(kind), explicit if weighted else st.none(), kids)
                for kind, weighted in kinds
            ]
        )

    return st.recursive(base, extend, max_leaves=16)


def as_tuples(spans: list[tuple[str, float]] | list[list[object]]) -> list[tuple[object, object]]:
    return [(text, weight) for text, weight in spans]


# ---------------------------------------------------------------------------------------------
# A reference model of A1111's scheduling (a1111-behaviour.md §4.2, §4.3) over generated editing
# and alternation structures: which step each edit switches at, the set of boundaries, and the
# text rendered "as at" each boundary, emphasis brackets kept verbatim.


@dataclass(frozen=True)
class EditNode:
    before: tuple[SchedItem, ...] | None  # None: the two-part form [after:when]
    after: tuple[SchedItem, ...]
    when: str  # the NUMBER token as written
    spaces: tuple[str, str]  # whitespace around it, which A1111 drops


@dataclass(frozen=True)
class AltNode:
    options: tuple[tuple[SchedItem, ...], ...]


@dataclass(frozen=True)
class Verbatim:
    opener: str  # "(" or "[": emphasis, kept as text by the scheduler
    closer: str  # ")", ":1.2)" or "]"
    children: tuple[SchedItem, ...]


SchedItem = Plain | Escape | EditNode | AltNode | Verbatim


def sched_source(
    items: tuple[SchedItem, ...],
    step: int | None = None,
    switch: Callable[[EditNode], int] | None = None,
) -> str:
    """The prompt text (``step`` None), or the text A1111 renders at boundary ``step``, where
    ``switch`` gives the last step at which an edit still shows its first part."""
    out: list[str] = []
    for item in items:
        if isinstance(item, Plain):
            out.append(item.text)
        elif isinstance(item, Escape):
            out.append("\\" + item.char)  # the scheduler keeps escapes raw (§1)
        elif isinstance(item, Verbatim):
            out.append(item.opener + sched_source(item.children, step, switch) + item.closer)
        elif isinstance(item, AltNode):
            if step is None:
                out.append("[" + "|".join(sched_source(o) for o in item.options) + "]")
            else:
                option = item.options[(step - 1) % len(item.options)]
                out.append(sched_source(option, step, switch))
        elif step is None:
            when = item.spaces[0] + item.when + item.spaces[1]
            after = sched_source(item.after)
            if item.before is None:
                out.append(f"[{after}:{when}]")
            else:
                out.append(f"[{sched_source(item.before)}:{after}:{when}]")
        else:
            assert switch is not None
            chosen = item.before if step <= switch(item) else item.after
            out.append(sched_source(chosen or (), step, switch))
    return "".join(out)


def expected_switch(
    steps: int, hires_steps: int | None, old_timelines: bool
) -> tuple[int, Callable[[EditNode], int]]:
    """The schedule's length, and the step at which an edit switches."""
    if hires_steps is None or old_timelines:
        length, int_offset, fraction_offset = steps, 0, 0.0
    else:  # the hires pass counts from the end of the first pass (§4.2)
        length, int_offset, fraction_offset = hires_steps, steps, 1.0

    def switch(edit: EditNode) -> int:
        value = float(edit.when)
        if old_timelines:
            value = value * length if value < 1 else value
        elif "." in edit.when:
            value = (value - fraction_offset) * length
        else:
            value = value - int_offset
        return min(length, int(value))

    return length, switch


def expected_schedule(
    items: tuple[SchedItem, ...], steps: int, hires_steps: int | None, old_timelines: bool
) -> list[tuple[int, str]]:
    length, switch = expected_switch(steps, hires_steps, old_timelines)
    boundaries = {length}
    alternates = False

    def visit(nodes: tuple[SchedItem, ...]) -> None:
        nonlocal alternates
        for node in nodes:
            if isinstance(node, EditNode):
                if switch(node) >= 1:
                    boundaries.add(switch(node))
                visit(node.before or ())
                visit(node.after)
            elif isinstance(node, AltNode):
                alternates = True
                for option in node.options:
                    visit(option)
            elif isinstance(node, Verbatim):
                visit(node.children)

    visit(items)
    if alternates:
        boundaries.update(range(1, length + 1))
    return [(step, sched_source(items, step, switch)) for step in sorted(boundaries)]


def _whens() -> st.SearchStrategy[str]:
    digits = st.text(alphabet="0123456789", min_size=1, max_size=2)
    return st.one_of(
        st.integers(min_value=0, max_value=60).map(str),
        st.builds("0.{}".format, digits),
        st.builds(".{}".format, digits),
        st.builds("{}.{}".format, st.integers(min_value=0, max_value=3), digits),
        st.sampled_from(("5.", "1.0", "+3", "-1", "1e1", "5e-1", "1.5e0", "05", "2E1")),
    )


@st.composite
def edit_nodes(
    draw: st.DrawFn,
    children: st.SearchStrategy[SchedItem],
    spaces: st.SearchStrategy[tuple[str, str]],
) -> EditNode:
    """``[from:to:when]``, ``[to:when]``, ``[from::when]`` and ``[:to:when]``."""
    maybe_empty = st.lists(children, max_size=3).map(tuple)
    before = draw(st.none() | maybe_empty)
    after = draw(maybe_empty if before is not None else st.lists(children, min_size=1, max_size=3))
    return EditNode(before, tuple(after), draw(_whens()), draw(spaces))


def schedule_items() -> st.SearchStrategy[SchedItem]:
    """Structures of text, escapes, emphasis, editing and alternation, nested."""
    base = st.one_of(st.builds(Plain, _LOWER_WORDS), st.builds(Escape, st.sampled_from("()[]\\")))
    spaces = st.tuples(st.sampled_from(("", " ")), st.sampled_from(("", " ", "\n")))

    def extend(children: st.SearchStrategy[SchedItem]) -> st.SearchStrategy[SchedItem]:
        seq = st.lists(children, min_size=1, max_size=3).map(tuple)
        maybe_empty = st.lists(children, max_size=3).map(tuple)
        closers = st.sampled_from((")", ":1.2)", ": 0.5 )"))
        return st.one_of(
            edit_nodes(children, spaces),
            st.builds(AltNode, st.lists(maybe_empty, min_size=2, max_size=4).map(tuple)),
            st.builds(Verbatim, st.just("("), closers, seq),
            st.builds(Verbatim, st.just("["), st.just("]"), seq),
        )

    return st.recursive(base, extend, max_leaves=12)


# ---------------------------------------------------------------------------------------------
# Example tests: the strategies' own contract.


def first_example_of(strategy: st.SearchStrategy[object]) -> None:
    @settings(max_examples=1, database=None)
    @given(strategy)
    def draw(_: object) -> None:
        pass

    draw()


@pytest.mark.parametrize(
    "strategy",
    [
        pytest.param(lambda: weights(min_value=2, max_value=1), id="weights-inverted"),
        pytest.param(lambda: weights(min_value=float("inf")), id="weights-inf"),
        pytest.param(lambda: weights(max_value="1"), id="weights-str"),  # type: ignore[arg-type]
        pytest.param(lambda: weights(allow_unicode_digits=1), id="weights-flag"),  # type: ignore[arg-type]
        pytest.param(lambda: prompts(dialect="sdxl"), id="prompts-dialect"),
        pytest.param(lambda: trees(dialect="A1111"), id="trees-dialect"),
        pytest.param(lambda: bracket_soup(max_size=-1), id="soup-negative"),
        pytest.param(lambda: bracket_soup(min_size=5, max_size=2), id="soup-inverted"),
        pytest.param(lambda: bracket_soup(max_size=2.5), id="soup-float"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_raise_invalid_argument_when_drawn(
    strategy: Callable[[], st.SearchStrategy[object]],
) -> None:
    built = strategy()  # building never raises: validation is deferred to the first draw
    with pytest.raises(InvalidArgument):
        first_example_of(built)


def test_import_promptweights_does_not_import_hypothesis() -> None:
    code = "import sys, promptweights; print('hypothesis' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "False"


def test_testing_module_imports_first_in_a_fresh_interpreter() -> None:
    # Hypothesis runs our entry-point hook while it is itself being imported by this module.
    code = "import promptweights.testing as t; print(t.prompts(dialect='comfy'))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "deferred(prompts(dialect='comfy'))"


def test_setup_hook_registers_prompt_trees() -> None:
    from promptweights.testing import _hypothesis_setup_hook
    from promptweights.tree import Prompt

    _hypothesis_setup_hook()

    @settings(max_examples=5, database=None)
    @given(st.from_type(Prompt))
    def check(prompt: Prompt) -> None:
        assert isinstance(prompt, Prompt)

    check()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("((a))", [("a", 1.2100000000000002)]),
        ("[[a]]", [("a", 0.8264462809917354)]),
        ("((a:2):3)", [("a", 6.0)]),
        ("[(a:1.21)]", [("a", 1.0999999999999999)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        ("\\\\(a)", [("\\", 1.0), ("a", 1.1)]),
        ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
        ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),
        ("(BREAK:-1)", [("", -1.0), ("BREAK", 1.0), ("", -1.0)]),
        ("a BREAK BREAK b", [("a", 1.0), ("BREAK", -1.0), ("", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ],
)
def test_reference_model_matches_a1111_examples(
    text: str, expected: list[tuple[str, float]]
) -> None:
    # The model is only trustworthy if it reproduces the real function's published outputs.
    items = _structure_of(text)
    assert source_of(items) == text
    assert expected_spans(items) == expected


def _structure_of(text: str) -> tuple[Item, ...]:
    """Hand-built structures for the examples above (a tiny recursive-descent reader)."""

    def read(pos: int, closer: str | None) -> tuple[tuple[Item, ...], int, str | None]:
        items: list[Item] = []
        while pos < len(text):
            ch = text[pos]
            if ch == "\\":
                items.append(Escape(text[pos + 1]))
                pos += 2
            elif ch in "([":
                children, pos, weight = read(pos + 1, ")" if ch == "(" else "]")
                items.append(Group("round" if ch == "(" else "square", weight, children))
            elif closer is not None and ch == ":":
                end = text.index(closer, pos)
                return tuple(items), end + 1, text[pos + 1 : end]
            elif ch == closer:
                return tuple(items), pos + 1, None
            else:
                match = re.match(r"BREAK|[^\\()\[\]:B]+|B", text[pos:])
                assert match is not None
                token = match.group()
                items.append(Keyword(token) if token == "BREAK" else Plain(token))
                pos += len(token)
        return tuple(items), pos, None

    return read(0, None)[0]


def _edit(before: str | None, after: str, when: str) -> EditNode:
    return EditNode(
        None if before is None else (Plain(before),) if before else (),
        (Plain(after),),
        when,
        ("", ""),
    )


@pytest.mark.parametrize(
    ("items", "steps", "hires", "old", "expected"),
    [
        ((_edit("a", "b", "5"),), 10, None, False, [(5, "a"), (10, "b")]),
        ((_edit("a", "b", ".5"),), 10, None, False, [(5, "a"), (10, "b")]),
        ((_edit("a", "b", "5."),), 10, None, False, [(10, "a")]),
        ((_edit("a", "b", "1e1"),), 10, None, False, [(10, "a")]),
        ((_edit("a", "b", "0.25"),), 10, None, False, [(2, "a"), (10, "b")]),
        ((_edit("a", "b", "5e-1"),), 10, None, False, [(10, "b")]),
        ((_edit(None, "a", "5"),), 10, None, False, [(5, ""), (10, "a")]),
        ((_edit("a", "b ", "5"),), 10, None, False, [(5, "a"), (10, "b ")]),
        (
            (
                Plain("a"),
                EditNode((Plain("b"),), (_edit("c", "d", "2"),), "1", ("", "")),
                Plain("e"),
            ),
            10,
            None,
            False,
            [(1, "abe"), (2, "ace"), (10, "ade")],
        ),
        (
            (EditNode((Plain("a"),), (_edit("b", "c", "3"),), "6", ("", "")),),
            10,
            None,
            False,
            [(3, "a"), (6, "a"), (10, "c")],
        ),
        (
            (AltNode(((Plain("a"),), (AltNode(((Plain("b"),), (Plain("c"),))),))),),
            4,
            None,
            False,
            [(1, "a"), (2, "c"), (3, "a"), (4, "c")],
        ),
        (
            (AltNode(((Plain("a"),), (_edit("b", "c", "3"),))),),
            6,
            None,
            False,
            [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "a"), (6, "c")],
        ),
        (
            (Verbatim("(", ":1.2)", (_edit("c", "d", "3"),)),),
            10,
            None,
            False,
            [(3, "(c:1.2)"), (10, "(d:1.2)")],
        ),
        ((_edit("a", "b", "1.0"),), 10, None, True, [(1, "a"), (10, "b")]),
        ((_edit("a", "b", "5"),), 20, 10, False, [(10, "b")]),
        ((_edit("a", "b", "1.5"),), 20, 10, False, [(5, "a"), (10, "b")]),
        ((_edit("a", "b", "25"),), 20, 10, False, [(5, "a"), (10, "b")]),
        ((_edit("a", "b", "0.5"),), 20, 10, True, [(10, "a"), (20, "b")]),
    ],
)
def test_schedule_model_matches_a1111_examples(
    items: tuple[SchedItem, ...],
    steps: int,
    hires: int | None,
    old: bool,
    expected: list[tuple[int, str]],
) -> None:
    # The outputs of the real function listed in a1111-behaviour.md §4.2 and §4.3.
    assert expected_schedule(items, steps, hires, old) == expected


def test_deep_nesting_neither_raises_nor_recurses() -> None:
    for text in ("(" * 20_000 + "a" + ")" * 20_000, "[" * 20_000, "a:1)" * 5_000):
        tree = promptweights.parse(text)
        assert promptweights.parse(promptweights.render(tree)) == tree
        promptweights.weighted_spans(text)
        promptweights.schedules(text, 20)


# ---------------------------------------------------------------------------------------------
# Properties of the strategies.


@given(weights(min_value=-3, max_value=7.5, allow_unicode_digits=True))
def test_weights_are_a1111_weight_literals(literal: str) -> None:
    assert re.fullmatch(r"[+-]?[.\d]+", literal)
    assert -3 <= float(literal) <= 7.5


@given(weights())
def test_weights_are_ascii_by_default_and_valid_and_weights(literal: str) -> None:
    assert re.fullmatch(r"[+-]?(?:[0-9]+\.?|[0-9]*\.[0-9]+)", literal)  # §2.3 AND weight


@given(bracket_soup(min_size=3, max_size=20))
def test_bracket_soup_respects_sizes(text: str) -> None:
    assert 3 <= len(text) <= 20


# ---------------------------------------------------------------------------------------------
# Properties of the language.


@pytest.mark.parametrize("dialect", DIALECTS)
@given(data=st.data())
def test_render_parse_round_trip(dialect: str, data: st.DataObject) -> None:
    tree = data.draw(trees(dialect=dialect))
    assert promptweights.parse(promptweights.render(tree), dialect=dialect) == tree


@pytest.mark.parametrize("dialect", DIALECTS)
@given(data=st.data())
def test_render_parse_round_trip_on_soup(dialect: str, data: st.DataObject) -> None:
    # render's contract holds for every tree, also the ones lenient parsing builds from junk.
    tree = promptweights.parse(data.draw(bracket_soup(max_size=60)), dialect=dialect)
    assert promptweights.parse(promptweights.render(tree), dialect=dialect) == tree


@pytest.mark.parametrize("dialect", DIALECTS)
@given(data=st.data())
def test_valid_prompts_parse_strictly_without_diagnostics(
    dialect: str, data: st.DataObject
) -> None:
    text = data.draw(prompts(dialect=dialect))
    assert promptweights.parse(text, dialect=dialect).diagnostics == ()
    promptweights.parse(text, dialect=dialect, strict=True)


@pytest.mark.parametrize("dialect", DIALECTS)
@given(data=st.data())
def test_lenient_parse_never_raises(dialect: str, data: st.DataObject) -> None:
    text = data.draw(bracket_soup(max_size=120))
    tree = promptweights.parse(text, dialect=dialect)
    assert isinstance(promptweights.render(tree), str)


@given(bracket_soup(max_size=120), st.integers(min_value=1, max_value=60))
def test_public_functions_never_raise(text: str, steps: int) -> None:
    spans = promptweights.weighted_spans(text)
    assert all(isinstance(s, str) and isinstance(w, float | int) for s, w in spans)
    assert promptweights.schedules(text, steps)
    assert promptweights.schedules(text, steps, hires_steps=steps + 3)
    assert promptweights.schedules(text, steps, old_timelines=True)
    assert promptweights.split_and(text)
    stripped, networks = promptweights.extra_networks(text)
    assert isinstance(stripped, str)
    assert isinstance(networks, list)


@pytest.mark.parametrize("dialect", DIALECTS)
@given(data=st.data())
def test_strict_mode_raises_only_prompt_syntax_error(dialect: str, data: st.DataObject) -> None:
    text = data.draw(st.one_of(bracket_soup(max_size=120), prompts(dialect=dialect)))
    lenient = promptweights.parse(text, dialect=dialect)
    if not lenient.diagnostics:
        assert promptweights.parse(text, dialect=dialect, strict=True) == lenient
        return
    # Lenient mode never tolerates silently: what it reports, strict mode refuses, and with
    # nothing but a PromptSyntaxError (any other exception fails this test).
    with pytest.raises(PromptSyntaxError) as raised:
        promptweights.parse(text, dialect=dialect, strict=True)
    error = raised.value
    assert error.source == text
    assert 0 <= error.pos <= len(text)
    assert (error.line, error.column) >= (1, 1)
    assert str(error)


@given(emphasis_items().map(lambda item: (item,)) | st.lists(emphasis_items()).map(tuple))
def test_span_weight_is_the_product_along_the_nesting_path(items: tuple[Item, ...]) -> None:
    text = source_of(items)
    assert as_tuples(promptweights.weighted_spans(text)) == expected_spans(items)


@pytest.mark.parametrize("dialect", ["novelai", "comfy"])
@given(data=st.data())
def test_span_weight_follows_the_nesting_path_in_other_dialects(
    dialect: str, data: st.DataObject
) -> None:
    items = tuple(data.draw(st.lists(emphasis_items(dialect), min_size=1)))
    spans = promptweights.weighted_spans(source_of(items), dialect=dialect)
    assert normalised(spans) == normalised(expected_spans(items, dialect))


@given(st.one_of(bracket_soup(max_size=120), prompts(dialect="a1111")))
def test_weighted_spans_equal_a1111_on_any_text(text: str) -> None:
    # Differential: the regex re-implementation in benchmarks/ follows §2.2 line by line.
    try:
        expected = parse_prompt_attention(text)
    except ValueError:  # A1111 raises on (a:1.2.3); lenient mode keeps the text instead
        return
    assert _comparable(promptweights.weighted_spans(text)) == _comparable(expected)


def _comparable(spans: list[tuple[str, float]] | list[list[str | float]]) -> list[tuple[str, str]]:
    # repr keeps -0.0 apart from 0.0 and makes nan equal to itself.
    return [(str(text), repr(float(weight))) for text, weight in spans]


_STEP_CASES = st.one_of(prompts(dialect="a1111"), bracket_soup(max_size=80))


@given(
    _STEP_CASES,
    st.integers(min_value=1, max_value=150),
    st.none() | st.integers(min_value=1, max_value=60),
    st.booleans(),
)
def test_schedules_cover_exactly_the_steps(
    text: str, steps: int, hires_steps: int | None, old_timelines: bool
) -> None:
    result = promptweights.schedules(
        text, steps, hires_steps=hires_steps, old_timelines=old_timelines
    )
    # A1111 schedules the hires pass over hires_steps, except with old timelines (§4.2).
    length = steps if hires_steps is None or old_timelines else hires_steps
    ends = [end for end, _ in result]
    assert ends[-1] == length
    assert all(end >= 1 for end in ends)
    assert all(a < b for a, b in itertools.pairwise(ends))
    assert all(isinstance(scheduled, str) for _, scheduled in result)


@given(
    st.lists(schedule_items(), min_size=1, max_size=4).map(tuple),
    st.integers(min_value=1, max_value=40),
    st.none() | st.integers(min_value=1, max_value=30),
    st.booleans(),
)
def test_schedules_follow_the_editing_and_alternation_structure(
    items: tuple[SchedItem, ...], steps: int, hires_steps: int | None, old_timelines: bool
) -> None:
    text = sched_source(items)
    expected = expected_schedule(items, steps, hires_steps, old_timelines)
    actual = promptweights.schedules(
        text, steps, hires_steps=hires_steps, old_timelines=old_timelines
    )
    assert [tuple(entry) for entry in actual] == expected


@pytest.mark.parametrize("dialect", DIALECTS)
@given(data=st.data())
def test_render_gives_back_the_text(dialect: str, data: st.DataObject) -> None:
    text = data.draw(st.one_of(prompts(dialect=dialect), bracket_soup(max_size=80)))
    prompt = promptweights.parse(text, dialect=dialect)
    assert promptweights.render(prompt) == text
    # Only the A1111 dialect has comments (a1111-behaviour.md §1 step 2): not in the tree.
    uncommented = promptweights.strip_comments(text) if dialect == "a1111" else text
    assert promptweights.parse(uncommented, dialect=dialect) == prompt


@given(st.one_of(prompts(dialect="a1111"), bracket_soup(max_size=80)))
def test_parse_agrees_with_extra_networks_and_split_and(text: str) -> None:
    # parse follows A1111's order: comments, extra networks, AND (a1111-behaviour.md §1).
    tree = promptweights.parse(text)
    body, networks = promptweights.extra_networks(promptweights.strip_comments(text))
    assert list(tree.networks) == networks
    assert [part.weight for part in tree.parts] == [w for _, w in promptweights.split_and(body)]


def _clear_caches() -> None:
    for function in (
        promptweights.parse,
        promptweights.weighted_spans,
        promptweights.schedules,
        promptweights.split_and,
        promptweights.extra_networks,
    ):
        clear = getattr(function, "cache_clear", None)
        if clear is not None:
            clear()


def _best_time(function: Callable[[str], object], text: str, repeat: int) -> float:
    """Least CPU time of ``repeat`` cold calls: CPU time, unlike wall time, ignores the other
    processes of a shared runner; the collector is off, as in ``timeit``."""
    best = float("inf")
    for _ in range(repeat):
        _clear_caches()
        gc.collect()
        gc.disable()
        try:
            start = time.process_time()
            function(text)
            best = min(best, time.process_time() - start)
        finally:
            gc.enable()
    return best


def _repeat_to(text: str, size: int) -> str:
    return (text * (size // len(text) + 1))[:size]


@pytest.mark.parametrize(
    "function",
    [
        pytest.param(promptweights.parse, id="parse"),
        pytest.param(promptweights.weighted_spans, id="weighted_spans"),
        pytest.param(lambda text: promptweights.schedules(text, 20), id="schedules"),
    ],
)
@settings(max_examples=3, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(prompts(dialect="a1111"), bracket_soup(min_size=1, max_size=60)))
@example(unit=")")  # stray closers: each is its own token, and all of them merge into one span
@example(unit="a:")  # colons outside brackets, likewise
@example(unit="masterpiece, (best quality:1.2), [blurry], [a:b:0.5], ")
def test_time_grows_linearly_with_length(function: Callable[[str], object], unit: str) -> None:
    # A growth ratio, not an absolute time: 100x the text may take at most 160x the CPU time.
    # Linear code measures 30-100x here (fixed costs weigh more in the small text), quadratic code
    # 200x and more. The sizes are the smallest where a quadratic term shows reliably; 1 MB is
    # timed by benchmarks/parse.py.
    small, large = 2_000, 200_000
    ratio = _best_time(function, _repeat_to(unit, large), 3) / max(
        _best_time(function, _repeat_to(unit, small), 5), 1e-5
    )
    assert ratio < 1.6 * large / small, f"100x longer text took {ratio:.0f}x the CPU time"


@settings(max_examples=300)
@given(st.text(alphabet="<>:ab_( ", max_size=40))
def test_network_tags_are_found_as_a1111s_regex_finds_them(text: str) -> None:
    # networks finds tags in linear time by bounding each search by the next ">"; the spans must
    # be exactly those of A1111's own pattern, written out here.
    from promptweights.networks import _network_matches

    a1111 = re.compile(r"<(\w+):([^>]+)>")
    assert [m.span() for m in _network_matches(text)] == [m.span() for m in a1111.finditer(text)]
