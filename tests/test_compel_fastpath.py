"""dialect="compel": the fast path equals the grammar's reading, tree, spans and diagnostics.

``parse_nodes(engine="fast")`` reads most compel prompts straight off the text
(promptweights/_compel.py, "the fast path"), and ``weighted_spans(dialect="compel")`` computes their
spans without a tree; ``engine="lark"`` runs lark's LALR parser with the tree builder, which reads
every prompt as compel does (tests/test_compel.py). These tests prove both equal on generated,
hostile and corpus prompts, in lenient and strict mode, and check that the fast path does apply
(else they would prove nothing).
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import promptweights as pw
from benchmarks.corpus import generate
from promptweights import _compel, _lark, dialects
from promptweights.errors import PromptSyntaxError
from promptweights.parsing import parse_nodes
from promptweights.testing import bracket_soup, prompts

DEPTH = pw.DEFAULT_MAX_DEPTH

# Pieces that are syntax in compel, or sit next to it: what a hostile compel prompt is made of.
_PIECES = (
    "a",
    "bc",
    "1girl",
    "close-up",
    "x_y",
    "{z}",
    " ",
    "  ",
    "\n",
    "\t",
    ",",
    ", ",
    ",,",
    ".",
    "(",
    ")",
    '"',
    '"q r"',
    "\\",
    "\\(",
    "\\)",
    '\\"',
    "\\,",
    "+",
    "++",
    "-",
    "--",
    "=",
    "1.2",
    "0.9",
    ".5",
    "3",
    "withLora",
    "useLora",
    "withLora(x, 0.5)",
    "withLora(y)",
    ".and",
    ".blend",
    ".add",
    ".swap",
    ".attend",
    '("a", "b")',
    '("a, (b)1.2", "c d").and(1, 0.5)',
    "(1, 0.5)",
    "no_normalize",
    "\x00",
    "\ufdd0",
    "\ufdd1",
)


def hostile() -> st.SearchStrategy[str]:
    """Text made of compel's syntax pieces in any order: mostly malformed."""
    return st.lists(st.sampled_from(_PIECES), max_size=30).map("".join)


def _corpus() -> list[str]:
    return [pw.convert(text, "a1111", "compel").text for text in generate(200)]


def _check(text: str, max_depth: int = DEPTH) -> bool:
    """Fast == lark for ``text``: nodes, diagnostics, spans, strict errors; whether the fast path
    applied."""
    lark = parse_nodes(text, dialect="compel", max_depth=max_depth, engine="lark")
    fast = parse_nodes(text, dialect="compel", max_depth=max_depth, engine="fast")
    assert fast == lark
    applied = _compel.fast_nodes(text, max_depth) is not None
    spans = _compel.fast_spans(text, max_depth)
    assert (spans is not None) == applied
    expected = _compel.spans_of(_compel.flatten(lark[0]))
    if spans is not None:
        assert spans == expected
    pw.weighted_spans.cache_clear()
    assert tuple(pw.weighted_spans(text, dialect="compel", max_depth=max_depth)) == expected
    _strict_same(text, lark[1], max_depth)
    return applied


def _strict_same(text: str, diagnostics: list[pw.Diagnostic], max_depth: int) -> None:
    pw.parse.cache_clear()
    if not diagnostics:
        assert pw.parse(text, dialect="compel", strict=True, max_depth=max_depth).diagnostics == ()
        return
    expected = diagnostics[0].to_error(text)
    with pytest.raises(PromptSyntaxError) as raised:
        pw.parse(text, dialect="compel", strict=True, max_depth=max_depth)
    assert str(raised.value) == str(expected)
    assert raised.value.pos == expected.pos


def test_the_structure_lexer_finds_the_tokens_the_grammar_lexer_finds() -> None:
    # The fast path skips WORD and SPACE tokens in C: it must see every other token the grammar's
    # lexer sees, where that lexer sees it, on text full of escapes, quotes and brackets.
    structure = _lark.structure_lexer(dialects.COMPEL, _compel._RUNS, _compel._INSIDE).pattern
    fine = _lark.fast_lexer(dialects.COMPEL).pattern
    for text in [*_corpus(), *(p * 3 for p in _PIECES), '\\\\("a\\"b" (\\)\\" "\n"']:
        want = [
            (m.lastgroup, m.start(), m.group())
            for m in fine.finditer(text)
            if m.lastgroup not in _compel._RUNS
        ]
        got = [
            (m.lastgroup, m.start(), m.group())
            for m in structure.finditer(text)
            if m.lastgroup not in _compel._INSIDE
        ]
        assert got == want, text


@given(text=hostile())
@settings(max_examples=300)
def test_the_structure_lexer_agrees_on_hostile_text(text: str) -> None:
    structure = _lark.structure_lexer(dialects.COMPEL, _compel._RUNS, _compel._INSIDE).pattern
    fine = _lark.fast_lexer(dialects.COMPEL).pattern
    want = [
        (m.lastgroup, m.start()) for m in fine.finditer(text) if m.lastgroup not in _compel._RUNS
    ]
    got = [
        (m.lastgroup, m.start())
        for m in structure.finditer(text)
        if m.lastgroup not in _compel._INSIDE
    ]
    assert got == want


def test_the_fast_path_equals_lark_on_the_benchmark_corpus() -> None:
    corpus = _corpus()
    applied = sum(_check(text) for text in corpus)
    # Nearly every corpus prompt takes the fast path, or the benchmark would not measure it.
    assert applied >= 0.95 * len(corpus)


@given(data=st.data())
@settings(max_examples=100)
def test_the_fast_path_equals_lark_on_generated_prompts(data: st.DataObject) -> None:
    _check(data.draw(prompts(dialect="compel")))


@given(text=hostile())
@settings(max_examples=300)
@example("(a)1.2, b,,(c) withLora(x, 0.5)")
@example("x,,(a)")
@example(",,,(a)")
@example("withLora (x)")
@example('("a", "b").and(1) rest')
@example('("a", "b").blend(1, 2)')
@example(' ("a" , "b").add(1, 2)')
@example("withLora(x, 0.5)++ a")  # no weight after a LoRA call: `++` is a word
@example("a withLora(x)1 b")
@example("(a)1.2 withLora(x)- (b)")
def test_the_fast_path_equals_lark_on_hostile_prompts(text: str) -> None:
    _check(text)


@given(text=bracket_soup(max_size=120))
@settings(max_examples=200)
def test_the_fast_path_equals_lark_on_bracket_soup(text: str) -> None:
    _check(text)


@given(text=hostile(), max_depth=st.integers(0, 3))
@settings(max_examples=150)
def test_the_fast_path_equals_lark_at_small_depth_caps(text: str, max_depth: int) -> None:
    _check("((" + text, max_depth)
    _check(text, max_depth)


@pytest.mark.parametrize(
    "text",
    [
        "a, (b c)1.3, d",
        "(a (b)1.2)0.9, c",
        "lucy \\(cyberpunk\\), x,y",
        "{{x}}, , (y)++ z withLora(name_1, 0.6)",
        '("a, (b)1.1", "c").and(1.0, 0.5)',
        '  ("a", "b").and(1.0, 0.5) withLora(q, 0.4)',
        "withLora(x, 0.5)++ a",
        "a,b,,c ,d",
        "(a)(b)-- (c)",
        "()",
        "",
    ],
)
def test_the_fast_path_applies_to_the_common_shapes(text: str) -> None:
    assert _check(text)


@pytest.mark.parametrize(
    "text",
    [
        "a+ b",  # a weighted word
        "a.swap(b)",
        "x(a)",  # a free word runs into the group
        '"a" b',  # a quoted term
        "(a",  # unclosed
        "a)",  # stray
        '("a", "b").blend(1, 2)',
        "withLora (x)",
        "x,,(a)",
    ],
)
def test_the_fast_path_hands_the_rest_to_the_builder(text: str) -> None:
    assert not _check(text)


def test_a_word_is_made_of_what_compels_non_syntax_word_takes() -> None:
    # compel 2.5.1's non_syntax_word stops at a space and at ( ) " , . + - = (see the comment in
    # grammar/compel.lark): the fast path's quick test for plain words is built from that class.
    word = _lark.terminal_patterns(dialects.COMPEL)["SYNTAX_WORD"]
    assert _lark.excluded_chars(word) == set('()",.+-=')


@given(run=hostile())
@settings(max_examples=300)
def test_the_quick_word_split_equals_the_tokenising_one(run: str) -> None:
    items = _compel._fragment_items(run)
    quick = _compel._fragment_words(run)
    assert quick == (None if items is None else [i for i in items if not i.isspace()])
