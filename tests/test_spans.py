"""`weighted_spans` in the ComfyUI and NovelAI dialects: equal to the tools, one pass over text.

A1111's emphasis pass has its own parity data and differential tests (``test_parity.py``,
``test_properties.py``).
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from _comfy_reference import comfy_token_weights
from hypothesis import given
from hypothesis import strategies as st

import promptweights as pw
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
