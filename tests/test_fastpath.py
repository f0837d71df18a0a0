"""The fast path equals the Lark parse: same tree, same diagnostics, on every input.

``parse_nodes(engine="fast")`` feeds the grammar's tokens to the grammar's callbacks without lark's
LALR machinery (house rule 7); these tests are what allows it to stand in for the Lark parser.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import promptweights as pw
from benchmarks.corpus import generate
from promptweights import _editing, _lark, dialects
from promptweights.parsing import parse_nodes
from promptweights.testing import bracket_soup, per_encoder_prompts, prompts


def _both(text: str, dialect: str, max_depth: int = pw.DEFAULT_MAX_DEPTH) -> None:
    for schedule in (True, False):
        lark = parse_nodes(
            text, dialect=dialect, max_depth=max_depth, schedule=schedule, engine="lark"
        )
        fast = parse_nodes(text, dialect=dialect, max_depth=max_depth, schedule=schedule)
        assert fast == lark


@pytest.mark.parametrize("dialect", pw.DIALECTS)
def test_every_grammar_terminal_has_a_counterpart_in_the_fast_path(dialect: str) -> None:
    record = dialects.get(dialect)
    grammar = _lark.grammar(record)
    defined = {terminal.name for terminal in grammar.terminals}
    used = {s.name for rule in grammar.rules for s in rule.expansion if s.is_term}
    # The fast lexer matches exactly the grammar's terminals.
    assert set(_lark.fast_lexer(record).kinds) - {""} == defined
    # A rule of several symbols that starts with a terminal is a bracket: the record's table must
    # know it, or the fast path would read its opener as text.
    brackets = _lark._brackets(record)
    starts = {
        (rule.origin.name, rule.expansion[0].name)
        for rule in grammar.rules
        if len(rule.expansion) > 1 and rule.expansion[0].is_term
    }
    assert starts == {(brackets.opener_rules[opener], opener) for opener in brackets.openers}
    # Each closer reduces a rule the postlexer knows (`(` and `TE(` share `)`).
    assert {closer for closer, _ in brackets.openers.values()} <= set(brackets.rules)
    # The declared terminals (no pattern) are exactly the ones the balancing postlexer emits.
    unclosed = {name for _, name in brackets.openers.values()}
    assert used - defined == {"STRAY", "DEEP"} | unclosed


def test_the_scheduling_scanner_knows_every_a1111_terminal() -> None:
    grammar = _lark.grammar(dialects.A1111)
    assert set(_editing.TERMINALS) == {terminal.name for terminal in grammar.terminals}


@pytest.mark.parametrize("dialect", pw.DIALECTS)
@given(data=st.data())
def test_fast_path_equals_lark_on_valid_prompts(dialect: str, data: st.DataObject) -> None:
    _both(data.draw(prompts(dialect=dialect)), dialect)


@given(text=per_encoder_prompts())
def test_fast_path_equals_lark_on_per_encoder_blocks(text: str) -> None:
    _both(text, "a1111")
    _both(text.replace(")", "", 1), "a1111")  # a block or bracket left open


@pytest.mark.parametrize("dialect", pw.DIALECTS)
@given(text=bracket_soup(max_size=200))
def test_fast_path_equals_lark_on_bracket_soup(dialect: str, text: str) -> None:
    _both(text, dialect)


@given(text=bracket_soup(max_size=60), max_depth=st.integers(0, 4))
def test_fast_path_equals_lark_at_small_depth_caps(text: str, max_depth: int) -> None:
    _both("((" + text + "[[", "a1111", max_depth)


def test_fast_path_equals_lark_on_the_benchmark_corpus() -> None:
    for text in generate(200):
        for dialect in pw.DIALECTS:
            _both(text, dialect)
