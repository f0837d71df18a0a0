"""The grammar files themselves: conflict-free LALR, and every sentence they generate parses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark

import promptweights as pw
from promptweights.parsing import parse_nodes

# What the postlexer emits for the declared terminals: text for STRAY/DEEP, nothing for UNCLOSED_*.
EXPLICIT = {
    "STRAY": st.sampled_from([")", "]", "}"]),
    "DEEP": st.sampled_from(["(", ")", "[", "]", "{", "}"]),
    "UNCLOSED_RPAR": st.just(""),
    "UNCLOSED_RSQB": st.just(""),
    "UNCLOSED_RBRACE": st.just(""),
    "UNCLOSED_WEIGHT_END": st.just(""),
}
ASCII = st.characters(codec="ascii")


def _grammar(dialect: str, **options: object) -> Lark:
    return Lark.open_from_package(
        "promptweights.grammar", f"{dialect}.lark", parser="lalr", **options
    )


@pytest.mark.parametrize("dialect", pw.DIALECTS)
def test_grammar_is_conflict_free_lalr(dialect: str) -> None:
    # strict=True turns shift/reduce conflicts and terminal collisions into errors.
    _grammar(dialect, strict=True)


@pytest.mark.parametrize("dialect", pw.DIALECTS)
@given(data=st.data())
def test_every_sentence_of_the_grammar_parses_and_round_trips(
    dialect: str, data: st.DataObject
) -> None:
    grammar = _grammar(dialect)
    used = {symbol.name for rule in grammar.rules for symbol in rule.expansion}
    explicit = {name: strategy for name, strategy in EXPLICIT.items() if name in used}
    text = data.draw(from_lark(grammar, explicit=explicit, alphabet=ASCII))
    for engine in ("fast", "lark"):
        parse_nodes(text, dialect=dialect, max_depth=pw.DEFAULT_MAX_DEPTH, engine=engine)
    prompt = pw.parse(text, dialect=dialect)
    assert pw.parse(pw.render(prompt), dialect=dialect) == prompt
