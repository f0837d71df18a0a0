"""NovelAI V4 numeric weights (``1.5::x::``, ``-1::x::``) beside ``{x}`` and ``[x]``.

Parity cases are transcribed from NovelAI's published syntax (tests/data/novelai/spans.json);
the properties check weights against a reference model of a *structure* we generate (the product
of the factors along the nesting path), lenient parsing never raising, and strict mode pointing
at the problem.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import promptweights as pw
from promptweights.spans import tree_spans
from promptweights.testing import bracket_soup, prompts, weights

DATA = json.loads((Path(__file__).parent / "data" / "novelai" / "spans.json").read_text("utf-8"))


def _check(prompt: str, expected: list, tolerance: float) -> None:
    got = pw.weighted_spans(prompt, dialect="novelai")
    assert [text for text, _ in got] == [text for text, _ in expected]
    for (_, weight), (_, want) in zip(got, expected, strict=True):
        assert weight == pytest.approx(want, abs=tolerance)


@pytest.mark.parametrize(("prompt", "expected"), DATA["cases"], ids=repr)
def test_weights_equal_novelai_documentation(prompt: str, expected: list) -> None:
    _check(prompt, expected, DATA["tolerance"])


@pytest.mark.parametrize(("prompt", "expected"), DATA["loose_cases"], ids=repr)
def test_weights_equal_novelai_documentation_rounded(prompt: str, expected: list) -> None:
    _check(prompt, expected, DATA["loose_tolerance"])


# ---------------------------------------------------------------------------------------------
# The rules where NovelAI's documents are silent, as docs/novelai.md states them.


def test_numeric_weights_multiply_with_braces_inside_and_outside() -> None:
    assert pw.weighted_spans("1.5::{a}::", dialect="novelai") == [("a", 1.5 * 1.05)]
    assert pw.weighted_spans("{1.5::a::}", dialect="novelai") == [("a", 1.5 * 1.05)]
    assert pw.weighted_spans("[2::a::]", dialect="novelai") == [("a", 2 * (1 / 1.05))]


def test_the_next_double_colon_ends_the_section_and_sections_nest() -> None:
    assert pw.weighted_spans("x, 2::a, 3::b:: c:: d", dialect="novelai") == [
        ("x, ", 1.0),
        ("a, ", 2.0),
        ("b", 6.0),
        (" c", 2.0),
        (" d", 1.0),
    ]


def test_single_colons_round_brackets_and_pipes_stay_text() -> None:
    assert pw.weighted_spans("artist:name, (a:1.5) a|b", dialect="novelai") == [
        ("artist:name, (a:1.5) a|b", 1.0)
    ]


def test_unclosed_section_weighs_the_rest_and_is_reported() -> None:
    assert pw.weighted_spans("a, 1.5::b, c", dialect="novelai") == [("a, ", 1.0), ("b, c", 1.5)]
    prompt = pw.parse("a, 1.5::b, c", dialect="novelai")
    assert [(d.kind, d.pos) for d in prompt.diagnostics] == [("unclosed", 3)]


def test_tree_holds_the_weight_as_written() -> None:
    (node,) = pw.parse("-0.5::feet::", dialect="novelai").parts[0].children
    assert node == pw.Emphasis((pw.Text("feet"),), -0.5, "weight", "-0.5::", True)
    assert pw.render(pw.parse("a 1.5::b::", dialect="novelai")) == "a 1.5::b::"


@pytest.mark.parametrize(
    ("text", "kind", "pos"),
    [
        ("a, 1.5::b", "unclosed", 3),
        ("a:: b", "stray-closer", 1),
        ("a, {b 2::c} d::", "unclosed", 3),  # `}` cannot close `{` across an open section
    ],
)
def test_strict_mode_points_at_the_problem(text: str, kind: str, pos: int) -> None:
    with pytest.raises(pw.PromptSyntaxError) as raised:
        pw.parse(text, dialect="novelai", strict=True)
    assert (raised.value.kind, raised.value.pos) == (kind, pos)
    assert raised.value.column == pos + 1


def test_other_dialects_read_numeric_weights_as_text() -> None:
    assert pw.weighted_spans("1.5::a::", dialect="a1111") == [("1.5::a::", 1.0)]
    assert pw.weighted_spans("1.5::a::", dialect="comfy") == [("1.5::a::", 1.0)]


# ---------------------------------------------------------------------------------------------
# Properties: a reference model of the structure, independent of the code under test.

# No digits, dots or signs (a word before a weight would become part of its number), no colons.
_WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,'()|", min_size=1, max_size=6)
_FACTORS = {"brace": 1.05, "square": 1 / 1.05}


@dataclass(frozen=True)
class Group:
    kind: str  # "brace", "square" or "weight"
    number: str | None  # the literal of a weight
    children: tuple[str | Group, ...]


def _source(items: tuple[str | Group, ...]) -> str:
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif item.kind == "weight":
            out.append(f"{item.number}::{_source(item.children)}::")
        else:
            opener, closer = ("{", "}") if item.kind == "brace" else ("[", "]")
            out.append(opener + _source(item.children) + closer)
    return "".join(out)


def _expected(items: tuple[str | Group, ...], weight: float, out: list[tuple[str, float]]) -> None:
    for item in items:
        if isinstance(item, str):
            out.append((item, weight))
        else:
            factor = float(item.number) if item.kind == "weight" else _FACTORS[item.kind]
            _expected(item.children, weight * factor, out)


def _groups() -> st.SearchStrategy[Group]:
    def extend(children: st.SearchStrategy[str | Group]) -> st.SearchStrategy[str | Group]:
        kids = st.lists(children, min_size=1, max_size=3).map(tuple)
        numbers = weights(min_value=-10, max_value=10).filter(lambda w: "e" not in w)
        return st.one_of(
            st.builds(Group, st.sampled_from(["brace", "square"]), st.none(), kids),
            st.builds(Group, st.just("weight"), numbers, kids),
        )

    return st.recursive(_WORDS, extend, max_leaves=10)  # type: ignore[return-value]


def _merged(spans: list[tuple[str, float]]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for text, weight in spans:
        if not text:
            continue
        if out and math.isclose(out[-1][1], weight, rel_tol=1e-12, abs_tol=1e-300):
            out[-1] = (out[-1][0] + text, out[-1][1])
        else:
            out.append((text, weight))
    return out


@settings(max_examples=150)
@given(st.lists(_groups(), min_size=1, max_size=4).map(tuple))
def test_weight_is_the_product_along_the_nesting_path(items: tuple[str | Group, ...]) -> None:
    text = _source(items)
    expected: list[tuple[str, float]] = []
    _expected(items, 1.0, expected)
    got = _merged(pw.weighted_spans(text, dialect="novelai"))
    want = _merged(expected)
    assert [t for t, _ in got] == [t for t, _ in want]
    for (_, weight), (_, target) in zip(got, want, strict=True):
        assert weight == pytest.approx(target, rel=1e-9, abs=1e-12)
    assert not pw.parse(text, dialect="novelai").diagnostics


@settings(max_examples=100)
@given(prompts(dialect="novelai"))
def test_tree_spans_equal_weighted_spans_on_valid_prompts(text: str) -> None:
    prompt = pw.parse(text, dialect="novelai", strict=True)
    assert pw.parse(pw.render(prompt), dialect="novelai") == prompt
    assert _merged(tree_spans(prompt.parts[0].children)) == _merged(
        pw.weighted_spans(text, dialect="novelai")
    )


@settings(max_examples=150)
@given(bracket_soup(max_size=120) | st.text(alphabet="0123456789.+-:{}[]\\ a", max_size=40))
def test_lenient_parsing_never_raises_and_strict_raises_only_syntax_errors(text: str) -> None:
    prompt = pw.parse(text, dialect="novelai")
    pw.weighted_spans(text, dialect="novelai")
    assert pw.render(prompt) == text
    if prompt.diagnostics:
        with pytest.raises(pw.PromptSyntaxError) as raised:
            pw.parse(text, dialect="novelai", strict=True)
        assert 0 <= raised.value.pos <= len(text)


def test_the_benchmark_times_novelai_next_to_a1111() -> None:
    from benchmarks import parse as bench
    from benchmarks.corpus import generate

    texts = generate(5)
    converted = bench.novelai_corpus(texts)
    assert any("::" in text for text in converted)
    assert all("(" not in text.replace("\\(", "") for text in converted)
    rows = bench.dialect_rows(texts, repeat=1)
    assert [row.label for row in rows] == [
        "`weighted_spans` a1111",
        "`weighted_spans` novelai",
        "`weighted_spans` compel",
        "`parse()` a1111",
        "`parse()` novelai",
        "`parse()` compel",
    ]
    assert rows[0].ratio == rows[3].ratio == 1.0
