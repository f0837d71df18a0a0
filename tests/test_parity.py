"""A1111 parity: every case transcribed from the reference document, iterated by one test each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import promptweights as pw

DATA = Path(__file__).parent / "data" / "a1111"


def _load(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


SPANS = _load("spans.json")
SCHEDULES = _load("schedules.json")
AND = _load("and.json")
NETWORKS = _load("networks.json")


def _as_tuples(rows: list) -> list[tuple]:
    return [tuple(row) for row in rows]


@pytest.mark.parametrize(("prompt", "expected"), SPANS["cases"], ids=repr)
def test_weighted_spans_equal_a1111(prompt: str, expected: list) -> None:
    got = pw.weighted_spans(prompt)
    assert got == _as_tuples(expected)
    # Exact floats: compare the bit patterns, not just ==.
    assert [w.hex() for _, w in got] == [float(w).hex() for _, w in expected]


@pytest.mark.parametrize(("prompt", "expected"), SPANS["lenient"]["cases"], ids=repr)
def test_weighted_spans_keep_malformed_weights_as_text(prompt: str, expected: list) -> None:
    assert pw.weighted_spans(prompt) == _as_tuples(expected)


@pytest.mark.parametrize(
    ("prompt", "steps", "hires", "old", "expected"), SCHEDULES["cases"], ids=repr
)
def test_schedules_equal_a1111(
    prompt: str, steps: int, hires: int | None, old: bool, expected: list
) -> None:
    got = pw.schedules(prompt, steps, hires_steps=hires, old_timelines=old)
    assert got == _as_tuples(expected)


@pytest.mark.parametrize(("prompt", "expected"), AND["cases"], ids=repr)
def test_split_and_equals_a1111(prompt: str, expected: list) -> None:
    assert pw.split_and(prompt) == _as_tuples(expected)


@pytest.mark.parametrize(("prompt", "text", "expected"), NETWORKS["networks"], ids=repr)
def test_extra_networks_equal_a1111(prompt: str, text: str, expected: list) -> None:
    got_text, got = pw.extra_networks(prompt)
    assert got_text == text
    assert [(n.kind, n.name, n.te_weight, n.unet_weight, list(n.args)) for n in got] == [
        (*row[:4], row[4]) for row in expected
    ]


@pytest.mark.parametrize(("prompt", "expected"), NETWORKS["comments"], ids=repr)
def test_comments_stripped_as_a1111(prompt: str, expected: str) -> None:
    assert pw.strip_comments(prompt) == expected
