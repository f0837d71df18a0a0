"""The scheduling scanner equals schedules computed from the parsed tree, on every input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import promptweights as pw
from benchmarks.corpus import generate
from promptweights.schedules import tree_schedules
from promptweights.testing import bracket_soup, prompts

TIMELINES = st.tuples(st.integers(1, 40), st.none() | st.integers(1, 30), st.booleans())


def _same(text: str, steps: int, hires: int | None, old: bool) -> None:
    pw.schedules.cache_clear()
    fast = pw.schedules(text, steps, hires_steps=hires, old_timelines=old)
    assert fast == tree_schedules(text, steps, hires_steps=hires, old_timelines=old)


@given(data=st.data(), timeline=TIMELINES)
def test_scanner_equals_tree_on_valid_prompts(data: st.DataObject, timeline: tuple) -> None:
    text = data.draw(prompts())
    for part, _ in pw.split_and(pw.extra_networks(pw.strip_comments(text))[0]):
        _same(part, *timeline)


@given(text=bracket_soup(max_size=120), timeline=TIMELINES)
def test_scanner_equals_tree_on_bracket_soup(text: str, timeline: tuple) -> None:
    _same("[" + text, *timeline)
    _same(text, *timeline)


@given(text=st.text(alphabet="[]():|\\ab5.", max_size=40), timeline=TIMELINES)
def test_scanner_equals_tree_on_dense_syntax(text: str, timeline: tuple) -> None:
    _same(text, *timeline)


@pytest.mark.parametrize(
    "text",
    [
        "[a:" * 200 + "b" + ":5]" * 200,
        "[a|" * 200 + "]" * 200,
        "(" * 149 + "[a|b]" + ")" * 149,
        "(" * 150 + "[a|b]" + ")" * 150,
        "[" * 160 + "x|y" + "]" * 160,
        "(" * 155 + "[a:b:3]" + ")" * 155 + "[c|d]",
    ],
)
def test_scanner_equals_tree_at_the_depth_cap(text: str) -> None:
    _same(text, 20, None, False)


def test_scanner_equals_tree_on_the_benchmark_corpus() -> None:
    for text in generate(300):
        for part, _ in pw.split_and(pw.extra_networks(text)[0]):
            _same(part, 20, None, False)
            _same(part, 20, 10, False)
