"""`weighted_spans` in the ComfyUI and NovelAI dialects: equal to the tools, one pass over text.

A1111's emphasis pass has its own parity data and differential tests (``test_parity.py``,
``test_properties.py``); here, its depth cap: brackets past it weigh as A1111 weighs them escaped.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from _comfy_reference import comfy_token_weights
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import promptweights as pw
from benchmarks._a1111_reference import _TOKEN, parse_prompt_attention
from promptweights.testing import bracket_soup, prompts

# Dense in what ComfyUI's splitting reacts to: brackets, colons, numbers, escapes.
COMFY_TEXT = st.text(alphabet="((()))::ab1.5-e\\ [", max_size=40)
DEPTHS = st.sampled_from((0, 1, 2, 3, pw.DEFAULT_MAX_DEPTH))


def _comfy(text: str, max_depth: int) -> list[tuple[str, float]]:
    pw.weighted_spans.cache_clear()  # type: ignore[attr-defined]
    return pw.weighted_spans(text, dialect="comfy", max_depth=max_depth)


@pytest.mark.parametrize(
    "text",
    [
        "a)(b)",  # a closer with nothing open: ComfyUI's level goes below zero
        "a)((b))",
        ")((a))",
        "((a)",  # left open, but its last character is `)`: ComfyUI weighs it
        "(((a))",
        "(a(b:1.5)",  # ... and takes a colon inside the group left open as its weight
        "(a (b:0.5) c:1.2)",
        "(:1.2)",  # a colon first in the group is text
        "(a:1.2)(b:x)()",
        "\\(a\\) (b\\):2)",
    ],
)
def test_comfy_spans_follow_comfyui_quirks(text: str) -> None:
    for max_depth in (0, 1, 2, pw.DEFAULT_MAX_DEPTH):
        assert _comfy(text, max_depth) == comfy_token_weights(text, max_depth)


@pytest.mark.parametrize("dialect", ["comfy", "novelai", "a1111"])
def test_memory_does_not_grow_with_the_depth_cap(dialect: str) -> None:
    # Work proportional to depth × length shows as memory too: ComfyUI's recursion holds one copy
    # of the inner text per level (6x the memory at the default cap, measured on the old code). A
    # memory ratio, not a time: one pass uses the same memory whatever the cap.
    opener, closer = ("{", "}") if dialect == "novelai" else ("(", ")")
    text = opener * 10_000 + closer * 10_000
    peaks = []
    for max_depth in (1, pw.DEFAULT_MAX_DEPTH):
        pw.weighted_spans.cache_clear()  # type: ignore[attr-defined]
        gc.collect()
        tracemalloc.start()
        try:
            pw.weighted_spans(text, dialect=dialect, max_depth=max_depth)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] / peaks[0] < 2


@given(text=COMFY_TEXT, max_depth=DEPTHS)
def test_comfy_spans_equal_comfyui_on_dense_text(text: str, max_depth: int) -> None:
    assert _comfy(text, max_depth) == comfy_token_weights(text, max_depth)


def _no_stand_ins(text: str) -> bool:
    # Each tool picks its own stand-ins for escaped brackets; a text holding them differs.
    return not any(char in text for char in "\0\ue000\ue001")


@given(
    text=st.one_of(bracket_soup(max_size=80), prompts(dialect="comfy")).filter(_no_stand_ins),
    max_depth=DEPTHS,
)
def test_comfy_spans_equal_comfyui_on_any_text(text: str, max_depth: int) -> None:
    assert _comfy(text, max_depth) == comfy_token_weights(text, max_depth)


# --- the emphasis pass's depth cap -------------------------------------------------------------


def _escape_deep(text: str, max_depth: int) -> str:
    """Written from the rule: an opener with ``max_depth`` real brackets open around it is text,
    and so is the closer that would close it; escaping both makes A1111 read them as text."""
    out = []
    stacks: dict[str, list[bool]] = {"(": [], "[": []}
    depth = 0
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        opener = "(" if token == ")" or match.group(1) is not None else "[" if token == "]" else ""
        if token in stacks:
            deep = depth >= max_depth
            stacks[token].append(deep)
            depth += not deep
            out.append("\\" + token if deep else token)
        elif opener and stacks[opener]:
            deep = stacks[opener].pop()
            depth -= not deep
            out.append(token[:-1] + "\\" + token[-1] if deep else token)
        else:
            out.append(token)
    return "".join(out)


def _comparable(spans: list[tuple[str, float]] | list[list[str | float]]) -> list[tuple[str, str]]:
    return [(str(text), repr(float(weight))) for text, weight in spans]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(text=bracket_soup(max_size=80), max_depth=st.integers(0, 4))
def test_brackets_past_the_cap_weigh_as_escaped_text(text: str, max_depth: int) -> None:
    text = "((" + text + "[["
    try:
        expected = parse_prompt_attention(_escape_deep(text, max_depth))
    except ValueError:  # A1111 raises on (a:1.2.3); lenient mode keeps the text instead
        return
    got = pw.weighted_spans(text, max_depth=max_depth)
    assert _comparable(got) == _comparable(expected)


def test_depth_cap_is_far_beyond_real_prompts() -> None:
    text = "(" * pw.DEFAULT_MAX_DEPTH + "a" + ")" * pw.DEFAULT_MAX_DEPTH
    assert _comparable(pw.weighted_spans(text)) == _comparable(parse_prompt_attention(text))
    # One more level: the innermost bracket is text, weighted by the 150 around it.
    deeper = "(" + text + ")"
    capped = "(" * pw.DEFAULT_MAX_DEPTH + "\\(a\\)" + ")" * pw.DEFAULT_MAX_DEPTH
    assert _comparable(pw.weighted_spans(deeper)) == _comparable(parse_prompt_attention(capped))
    assert pw.weighted_spans(deeper)[0][0] == "(a)"


def test_nan_weights_are_never_merged_as_in_a1111() -> None:
    # ((a\(b:0):9...9): 0 × inf = NaN for every segment inside; A1111 merges equal neighbours
    # only, and NaN equals nothing.
    text = "((a\\(b:0):" + "9" * 400 + ")"
    assert _comparable(pw.weighted_spans(text)) == _comparable(parse_prompt_attention(text))
    assert len(pw.weighted_spans(text)) == 3


def test_comfy_groups_past_the_cap_are_text() -> None:
    assert pw.weighted_spans("((a))", dialect="comfy", max_depth=1) == [("(a)", 1.1)]
    assert pw.weighted_spans("((a))", dialect="comfy", max_depth=2) == [("a", 1.1 * 1.1)]
