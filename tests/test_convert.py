"""promptweights.convert: the same effective weight per word in every dialect, or a diagnostic."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import promptweights as pw
from promptweights import _compel
from promptweights.testing import bracket_soup, prompts

DIALECTS = ("a1111", "comfy", "novelai", "compel")
PAIRS = list(itertools.permutations(DIALECTS, 2))
_WORD = re.compile(r"\w+|[^\w\s]")


def _words(spans: list[tuple[str, float]]) -> list[tuple[str, float]]:
    return [
        (w, weight)
        for text, weight in spans
        if (text, weight) != ("BREAK", -1.0)
        for w in _WORD.findall(text)
    ]


def _parts(text: str, dialect: str) -> list[tuple[float, list[tuple[str, float]]]]:
    """Each AND part's weight and its words' weights, from the public functions only."""
    if dialect == "compel":
        flat = _compel.flatten(pw.parse(text, dialect="compel").parts[0].children)
        out = []
        for part in flat.parts:
            spans = []
            for item in part.prompts[0]:
                spans += item.original if isinstance(item, _compel.FlatSwap) else [item]
            out.append((part.weight, _words(spans)))
        return out or [(1.0, [])]
    if dialect == "a1111":
        body, _ = pw.extra_networks(pw.strip_comments(text))
        return [(w, _words(pw.weighted_spans(part))) for part, w in pw.split_and(body)]
    return [(1.0, _words(pw.weighted_spans(text, dialect=dialect)))]


def _assert_same(source: str, source_dialect: str, target: str, target_dialect: str) -> None:
    expected = _parts(source, source_dialect)
    got = _parts(target, target_dialect)
    assert len(got) == len(expected)
    for (wa, a), (wb, b) in zip(expected, got, strict=True):
        assert wa == pytest.approx(wb, abs=1e-6)
        assert [w for w, _ in a] == [w for w, _ in b]
        assert [x for _, x in a] == pytest.approx([x for _, x in b], abs=1e-6)


@pytest.mark.parametrize(("source", "target"), PAIRS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_converted_words_weigh_the_same_wherever_no_diagnostic(
    source: str, target: str, data: st.DataObject
) -> None:
    text = data.draw(prompts(dialect=source))
    result = pw.convert(text, source, target)
    assert isinstance(result.text, str)
    if not result.diagnostics:
        _assert_same(text, source, result.text, target)


@pytest.mark.parametrize(("source", "target"), PAIRS)
@settings(max_examples=10, deadline=None)
@given(text=bracket_soup(max_size=60))
def test_convert_never_raises_in_lenient_mode(source: str, target: str, text: str) -> None:
    result = pw.convert(text, source, target)
    assert isinstance(result.text, str)
    assert all(0 <= d.pos <= len(text) for d in result.diagnostics)


@pytest.mark.parametrize(
    ("text", "source", "target", "expected"),
    [
        ("a (red:1.2) cat", "a1111", "compel", "a (red)1.2 cat"),
        ("a ((b)) [c]", "a1111", "compel", "a (b)1.2100000000000002 (c)0.9090909090909091"),
        ("a (red)1.2 cat++", "compel", "a1111", "a (red:1.2) (cat:1.2100000000000002)"),
        ("(a:1.3) (b (c:0.5))", "comfy", "a1111", "(a:1.3) (b:1.1) (c:0.5)"),
        ("{a} [[b]] c", "novelai", "a1111", "(a:1.05) (b:0.9070294784580498) c"),
        ("(a:1.05) b", "a1111", "novelai", "{a} b"),
        # NovelAI V4 numeric weights wherever up to five braces cannot hit the weight
        ("(a:1.2)", "a1111", "novelai", "1.2::a::"),
        ("(a:-1) b", "a1111", "novelai", "-1::a:: b"),
        ("((a)) [b]", "a1111", "novelai", "1.21::a:: 0.90909090909::b::"),
        ("(a:1.1025) [[[c]]]", "a1111", "novelai", "{{a}} 0.751314800902::c::"),
        ("(b 9:0.5) (c\\::0.5)", "a1111", "novelai", "0.5::b 9 :: 0.5::c: ::"),
        ("(a:2) (b (c:-0.5))", "comfy", "novelai", "2::a:: 1.1::b:: -0.5::c::"),
        ("a++ (b)0.5 c-", "compel", "novelai", "1.21::a:: 0.5::b:: 0.9::c::"),
        ("-1::a:: {b} 2::c 3::d::::", "novelai", "a1111", "(a:-1.0) (b:1.05) (c:2.0) (d:6.0)"),
        ("-1::a:: [b]", "novelai", "comfy", "(a:-1.0) (b:0.9523809523809523)"),
        ("2.5::a::", "novelai", "compel", "(a)2.5"),
        (
            "a AND b:0.5 <lora:x:0.8>",
            "a1111",
            "compel",
            '("a", " b").and(1.0, 0.5) withLora(x, 0.8)',
        ),
        ('("a cat", "dog").and(1, 0.5)', "compel", "a1111", "a cat AND dog :0.5"),
        ("withLora(x, 0.7) a", "compel", "a1111", "a <lora:x:0.7>"),
        ("a \\(b\\) (c:1.1)", "a1111", "compel", "a \\(b\\) (c)1.1"),
        ("a (b:1.2)", "a1111", "a1111", "a (b:1.2)"),
    ],
)
def test_exact_conversions(text: str, source: str, target: str, expected: str) -> None:
    result = pw.convert(text, source, target)
    assert (result.text, result.diagnostics) == (expected, ())
    _assert_same(text, source, result.text, target)


@pytest.mark.parametrize(
    ("text", "source", "target", "kinds"),
    [
        ("a [cat:dog:0.5]", "a1111", "compel", ["schedule"]),
        ("a [cat|dog]", "a1111", "novelai", ["schedule"]),
        ("a AND b", "a1111", "comfy", ["and"]),
        ("a BREAK b", "a1111", "compel", ["break"]),
        ("a <lora:x:0.5>", "a1111", "novelai", ["lora"]),
        ("a <lora:x:0.5:1>", "a1111", "compel", ["lora"]),
        ("(a:-1)", "a1111", "compel", ["weight"]),
        ("(a::b:1.2)", "a1111", "novelai", ["weight"]),  # a section cannot hold "::"
        ('("a", "b").blend(0.3, 0.7)', "compel", "a1111", ["blend"]),
        ("a cat.swap(dog)", "compel", "a1111", ["swap"]),
        ("a cat.swap(dog)", "compel", "comfy", ["swap"]),
        ("a+ b", "a1111", "compel", ["inexact"]),
    ],
)
def test_what_the_target_cannot_express_is_reported(
    text: str, source: str, target: str, kinds: list[str]
) -> None:
    result = pw.convert(text, source, target)
    assert [d.kind for d in result.diagnostics] == kinds
    with pytest.raises(pw.PromptSyntaxError):
        pw.convert(text, source, target, strict=True)


def test_a_swap_becomes_the_nearest_prompt_edit_in_a1111() -> None:
    result = pw.convert("a cat.swap(dog, t_start=0.4) x", "compel", "a1111")
    assert result.text == "a [cat:dog:0.4] x"


def test_bad_arguments() -> None:
    with pytest.raises(pw.UnknownNameError):
        pw.convert("a", "a1111", "midjourney")
    with pytest.raises(pw.ArgumentTypeError):
        pw.convert(b"a", "a1111", "compel")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "source", "target", "kind", "construct"),
    [
        # (the construct is the text the diagnostic must point at: its first occurrence)
        ("a, (b [cat:dog:0.5])", "a1111", "compel", "schedule", "[cat:dog"),
        ("x # note\n<lora:q:1> a [cat|dog]", "a1111", "compel", "schedule", "[cat|dog]"),
        ("a <hypernet:h:1> b", "a1111", "compel", "network", "<hypernet"),
        ("# c\na <hypernet:h:1> b", "a1111", "compel", "network", "<hypernet"),
        ('withLora(x, 1) ("a", "b").blend(0.3, 0.7)', "compel", "a1111", "blend", '("a"'),
        ("a, b BREAK c", "a1111", "compel", "break", "BREAK"),
        ("# c\na BREAK (c:1.2)", "a1111", "novelai", "break", "BREAK"),
        ("a (b:-1)", "a1111", "compel", "weight", "b:"),
        ("# c\nx <lora:y:1> a (b:-1)", "a1111", "compel", "weight", "b:"),
        ("x 1.5::a:: -1::b::", "novelai", "compel", "weight", "b:"),
        ("(a::b:1.2)", "a1111", "novelai", "weight", "a::"),
        ("a cat.swap(dog)", "compel", "comfy", "swap", "cat"),
        ("a (big cat).swap(dog, t_start=0.4)", "compel", "a1111", "swap", "big"),
        ("a AND b", "a1111", "comfy", "and", "AND"),
        ("# c\na, b :0.5", "a1111", "comfy", "and", ":0.5"),
        ('("a", "b").and(1, 0.5)', "compel", "novelai", "and", ".and("),
        ("a <lora:x:0.5>", "a1111", "novelai", "lora", "<lora"),
        ("# c\na, b <lora:x:0.5:1>", "a1111", "compel", "lora", "<lora"),
        ("a b withLora(x, 0.5)", "compel", "comfy", "lora", "withLora"),
        ("x, y a+ b", "a1111", "compel", "inexact", "a+"),
    ],
)
def test_each_diagnostic_points_at_its_construct(
    text: str, source: str, target: str, kind: str, construct: str
) -> None:
    (diagnostic,) = [d for d in pw.convert(text, source, target).diagnostics if d.kind == kind]
    assert diagnostic.pos == text.index(construct)
    with pytest.raises(pw.PromptSyntaxError) as raised:
        pw.convert(text, source, target, strict=True)
    if raised.value.kind == kind:  # the first diagnostic in source order is raised
        assert raised.value.pos == text.index(construct)
        assert str(raised.value).endswith("^")
        line, column = raised.value.line, raised.value.column
        assert text.splitlines()[line - 1][column - 1 :].startswith(construct[:1])


@pytest.mark.parametrize("source", ["a1111", "comfy", "compel"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_novelai_writes_every_finite_weight(source: str, data: st.DataObject) -> None:
    text = data.draw(prompts(dialect=source))
    result = pw.convert(text, source, "novelai")
    for diagnostic in result.diagnostics:
        assert diagnostic.kind not in ("inexact", "weight") or (
            diagnostic.kind == "weight"
            and ("inf" in diagnostic.message or "nan" in diagnostic.message or "::" in text)
        ), diagnostic


# --- parity: prompts the tools' own documents call equivalent -----------------------------------

EQUIVALENCES = json.loads(
    (Path(__file__).parent / "data" / "convert" / "equivalences.json").read_text("utf-8")
)["cases"]


def _documented(case: dict[str, Any]) -> list[tuple[float, list[tuple[str, float]]]]:
    if "parts" in case:
        return [(w, [(t, x) for t, x in words]) for w, words in case["parts"]]
    return [(1.0, [(t, x) for t, x in case["words"]])]


def _assert_documented(text: str, dialect: str, case: dict[str, Any]) -> None:
    got = _parts(text, dialect)
    want = _documented(case)
    tolerance = case["tolerance"]
    assert len(got) == len(want), (text, dialect)
    for (wa, a), (wb, b) in zip(got, want, strict=True):
        assert wa == pytest.approx(wb, abs=tolerance)
        assert [w for w, _ in a] == [w for w, _ in b], (text, dialect)
        assert [x for _, x in a] == pytest.approx([x for _, x in b], abs=tolerance), (text, dialect)


@pytest.mark.parametrize("case", EQUIVALENCES, ids=lambda case: next(iter(case["texts"].values())))
def test_documented_equivalents_convert_to_the_documented_weights(case: dict[str, Any]) -> None:
    refused = case.get("refused", {})
    for source, text in case["texts"].items():
        _assert_documented(text, source, case)  # the reading itself, as the documents say
        for target in DIALECTS:
            result = pw.convert(text, source, target)
            if target in refused:
                assert [d.kind for d in result.diagnostics] == [refused[target]]
                continue
            assert result.diagnostics == (), (source, target)
            _assert_documented(result.text, target, case)
