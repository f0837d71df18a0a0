"""The fast path equals the Lark parse: same tree, same diagnostics, on every input.

``parse_nodes(engine="fast")`` feeds the grammar's tokens to the grammar's callbacks without lark's
LALR machinery (house rule 7); these tests are what allows it to stand in for the Lark parser.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import promptweights as pw
from promptweights._lark import parse_nodes
from promptweights.testing import bracket_soup, prompts

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.corpus import generate


def _both(text: str, dialect: str, max_depth: int = pw.DEFAULT_MAX_DEPTH) -> None:
    for schedule in (True, False):
        lark = parse_nodes(
            text, dialect=dialect, max_depth=max_depth, schedule=schedule, engine="lark"
        )
        fast = parse_nodes(text, dialect=dialect, max_depth=max_depth, schedule=schedule)
        assert fast == lark


@pytest.mark.parametrize("dialect", pw.DIALECTS)
@given(data=st.data())
def test_fast_path_equals_lark_on_valid_prompts(dialect: str, data: st.DataObject) -> None:
    _both(data.draw(prompts(dialect=dialect)), dialect)


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
