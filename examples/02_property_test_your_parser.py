"""Property-test your own prompt parser
======================================

``promptweights.testing`` holds Hypothesis strategies for A1111 prompts, weights and hostile
"bracket soup". Point them at any parser: here a ten-line regex parser of ``(text:weight)`` is
checked for never crashing, for reading every weight literal as A1111 does, and against A1111's
own reading (``promptweights.weighted_spans``) — Hypothesis finds and shrinks the smallest prompt
on which the two disagree. Run: ``python examples/02_property_test_your_parser.py``.
"""

from __future__ import annotations

import re

from hypothesis import find as find_example
from hypothesis import given, settings

import promptweights as pw
from promptweights.testing import bracket_soup, prompts, weights

SPAN = re.compile(r"\(([^():]+):([-+]?[.0-9]+)\)|([^()]+)")
QUICK = settings(max_examples=40, database=None, derandomize=True)


def regex_spans(text: str) -> list[tuple[str, float]]:
    """The parser under test: ``(text:weight)`` and plain text, nothing else."""
    spans: list[tuple[str, float]] = []
    for match in SPAN.finditer(text):
        span = (match[1], float(match[2])) if match[1] is not None else (match[3], 1.0)
        if spans and spans[-1][1] == span[1]:  # merge neighbours of equal weight, as A1111 does
            span = (spans.pop()[0] + span[0], span[1])
        spans.append(span)
    return spans


@QUICK
@given(bracket_soup(max_size=40))
def test_never_crashes(text: str) -> None:
    assert isinstance(regex_spans(text), list)


@QUICK
@given(weights(min_value=-10, max_value=10))
def test_reads_weights_like_a1111(literal: str) -> None:
    text = f"a (cat:{literal})"
    assert regex_spans(text) == pw.weighted_spans(text)


def disagrees_with_a1111(text: str) -> bool:
    return regex_spans(text) != pw.weighted_spans(text)


if __name__ == "__main__":
    test_never_crashes()
    test_reads_weights_like_a1111()
    print("regex parser: never crashes, reads weights like A1111")
    smallest = find_example(prompts(), disagrees_with_a1111, settings=QUICK)
    print(f"smallest prompt where it differs from A1111: {smallest!r}")
    print(f"  regex parser: {regex_spans(smallest)}")
    print(f"  A1111:        {pw.weighted_spans(smallest)}")
