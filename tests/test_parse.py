"""The tree: shapes, lossless rendering, lenient diagnostics, strict errors, dialects, depth cap.

Also hostile input (issue 8): pathological prompts neither crash nor lose text, the prompt length
is capped, and time and memory grow linearly from 100 kB to 1 MB (a ratio, never a time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import pickle
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from _fuzz_harness import FUZZ

import promptweights as pw
from promptweights import Alternation, Break, Edit, Emphasis, SubPrompt, Text, infotext
from promptweights.errors import (
    DIAGNOSTICS,
    LimitExceededError,
    PromptSyntaxError,
    PromptweightsError,
)
from promptweights.parsing import parse_nodes
from promptweights.render import render_nodes
from promptweights.spans import tree_spans

DATA = Path(__file__).parent / "data" / "a1111"
PARITY_INPUTS = sorted(
    {case[0] for case in json.loads((DATA / "spans.json").read_text())["cases"]}
    | {case[0] for case in json.loads((DATA / "schedules.json").read_text())["cases"]}
    | {case[0] for case in json.loads((DATA / "and.json").read_text())["cases"]}
)
SQ = 1 / 1.1


def children(text: str, **kwargs: object) -> tuple:
    prompt = pw.parse(text, **kwargs)  # type: ignore[arg-type]
    assert len(prompt.parts) == 1
    return prompt.parts[0].children


# --- shapes -------------------------------------------------------------------------------------


def test_emphasis_shapes() -> None:
    assert children("a (b) [c] (d:1.3)") == (
        Text("a "),
        Emphasis((Text("b"),), 1.1, "round"),
        Text(" "),
        Emphasis((Text("c"),), SQ, "square"),
        Text(" "),
        Emphasis((Text("d"),), 1.3, "round", ":1.3"),
    )


def test_nested_emphasis_keeps_each_factor() -> None:
    assert children("((a:1.3))") == (
        Emphasis((Emphasis((Text("a"),), 1.3, "round", ":1.3"),), 1.1, "round"),
    )


def test_edit_forms() -> None:
    assert children("[a:b:5]") == (Edit((Text("a"),), (Text("b"),), 5.0, "5"),)
    assert children("[b:0.5]") == (Edit(None, (Text("b"),), 0.5, "0.5"),)
    assert children("[a::5]") == (Edit((Text("a"),), (), 5.0, "5"),)
    assert children("[a:b: 5 ]") == (Edit((Text("a"),), (Text("b"),), 5.0, " 5 "),)


def test_alternation_with_empty_options() -> None:
    assert children("[fe|]male") == (Alternation(((Text("fe"),), ())), Text("male"))
    assert children("[a||b]") == (Alternation(((Text("a"),), (), (Text("b"),))),)


def test_nesting_of_all_constructs() -> None:
    assert children("([a|b]:1.2) [(x:2):[y|z]:0.5]") == (
        Emphasis((Alternation(((Text("a"),), (Text("b"),))),), 1.2, "round", ":1.2"),
        Text(" "),
        Edit(
            (Emphasis((Text("x"),), 2.0, "round", ":2"),),
            (Alternation(((Text("y"),), (Text("z"),))),),
            0.5,
            "0.5",
        ),
    )


def test_break_is_a_node() -> None:
    assert children("a BREAK b") == (Text("a"), Break(" BREAK "), Text("b"))


def test_and_parts_networks_and_comments() -> None:
    prompt = pw.parse("a <lora:ink:0.8:0.5> AND b:0.5 # note\n")
    assert prompt.parts == (
        SubPrompt((Text("a"),), 1.0, "  "),
        SubPrompt((Text(" b"),), 0.5, ":0.5 \n"),
    )
    (net,) = prompt.networks
    assert (net.kind, net.name, net.te_weight, net.unet_weight) == ("lora", "ink", 0.8, 0.5)


def test_failed_scheduling_turns_edits_into_emphasis() -> None:
    # One stray pipe switches off editing for the whole prompt (a1111-behaviour.md §2.1).
    assert children("a|b [c:d:3]") == (
        Text("a|b "),
        Emphasis((Text("c:d:3"),), SQ, "square"),
    )


def test_escapes_stay_raw_in_the_tree() -> None:
    assert children(r"\(a\) \[b:c:3]") == (Text(r"\(a\) \[b:c:3]"),)
    text = r"\(a\) \[b:c:3]"
    assert pw.render(pw.parse(text)) == text


# --- lossless rendering -----------------------------------------------------------------------


@pytest.mark.parametrize("text", PARITY_INPUTS, ids=repr)
def test_render_gives_the_text_back(text: str) -> None:
    prompt = pw.parse(text)
    assert pw.render(prompt) == text
    assert pw.parse(pw.render(prompt)) == prompt


def test_render_gives_comments_back() -> None:
    text = "a (b) # c\n<lora:x:1> [d:e:2] AND f #g"
    prompt = pw.parse(text)
    assert pw.render(prompt) == text
    assert prompt == pw.parse(pw.strip_comments(text))  # comments are not part of the tree
    assert pw.render(pw.parse("a #")) == "a #"


def test_a_changed_tree_renders_without_the_comments() -> None:
    prompt = pw.parse("a (b) # c\nd")
    changed = dataclasses.replace(prompt, parts=pw.parse("x").parts)
    assert pw.render(changed) == "x"


def test_render_of_a_built_tree() -> None:
    prompt = pw.Prompt(
        (SubPrompt((Text("a "), Emphasis((Text("b"),), 1.1, "round"))),),
        (pw.ExtraNetwork("lora", "x", 0.5, 0.5, ("x", "0.5")),),
    )
    assert pw.render(prompt) == "a (b)<lora:x:0.5>"


# --- tree spans agree with A1111's emphasis pass ------------------------------------------------


WELL_FORMED = [
    text for text in PARITY_INPUTS if not pw.parse(text).diagnostics and "AND" not in text
]


def test_most_parity_inputs_are_well_formed() -> None:
    assert len(WELL_FORMED) > 60


@pytest.mark.parametrize("text", WELL_FORMED, ids=repr)
def test_tree_spans_equal_weighted_spans_when_well_formed(text: str) -> None:
    for step, variant in pw.schedules(text, 10):
        nodes, diagnostics = parse_nodes(variant, dialect="a1111", max_depth=pw.DEFAULT_MAX_DEPTH)
        assert not diagnostics
        assert tree_spans(nodes) == pw.weighted_spans(variant), (step, variant)


def test_render_at_step_picks_branches() -> None:
    nodes = children("[a|b] [c:d:2]")
    assert render_nodes(nodes, step=1, step_of=lambda e: 2) == "a c"
    assert render_nodes(nodes, step=3, step_of=lambda e: 2) == "a d"


# --- lenient and strict -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "example"),
    [(kind, example) for kind, (_, examples) in DIAGNOSTICS.items() for example in examples],
)
def test_every_diagnostic_is_reported_and_strict_raises(kind: str, example: str) -> None:
    prompt = pw.parse(example)
    assert kind in {d.kind for d in prompt.diagnostics}
    with pytest.raises(pw.PromptSyntaxError) as info:
        pw.parse(example, strict=True)
    assert info.value.kind in {d.kind for d in prompt.diagnostics}
    assert 0 <= info.value.pos <= len(example)


@pytest.mark.parametrize(
    "text", ["a (b) c", "[a:b:5] (c:1.2)", "a AND b:2", "[x|y] BREAK z", "\\(a\\)", ""]
)
def test_clean_prompts_have_no_diagnostics(text: str) -> None:
    assert pw.parse(text, strict=True).diagnostics == ()


def test_strict_error_points_into_the_original_text() -> None:
    text = "# comment\n<lora:x:1> ok AND a (b"
    with pytest.raises(pw.PromptSyntaxError) as info:
        pw.parse(text, strict=True)
    error = info.value
    assert text[error.pos] == "("
    assert (error.line, error.column) == (2, text.index("(") - text.index("\n"))
    assert str(error).splitlines()[-1].strip() == "^"
    assert "line 2, column" in str(error)
    assert pickle.loads(pickle.dumps(error)).pos == error.pos


def test_stray_closer_position() -> None:
    with pytest.raises(pw.PromptSyntaxError) as info:
        pw.parse("a b) c", strict=True)
    assert (info.value.kind, info.value.pos) == ("stray-closer", 3)


@pytest.mark.parametrize(
    "text",
    [
        "\x00\x01(\x02",
        "\ud800 (a",
        "a\u200b(b:1.2)",
        "(a:1e309)",
        "(a:-0)",
        "(a:nan)",
        "[a:b:1e999]",
        "[a:b:-1e999]",
        "<lora:x:inf>",
        "<lora:x:nan:1e999>",
        ")(][}{|:\\",
        "[[[[::::||||]]]]",
        "AND AND AND",
        "BREAK(BREAK[BREAK",
        "#" * 50,
        "<:>",
        "<a:>>",
    ],
)
def test_lenient_never_raises(text: str) -> None:
    for dialect in pw.DIALECTS:
        prompt = pw.parse(text, dialect=dialect)
        assert pw.parse(pw.render(prompt), dialect=dialect) == prompt
        pw.weighted_spans(text, dialect=dialect)
    pw.schedules(text, 20)
    pw.split_and(text)
    pw.extra_networks(text)


def test_huge_edit_steps_clamp_instead_of_overflowing() -> None:
    assert pw.schedules("[a:b:1e999]", 10) == [(10, "a")]
    assert pw.schedules("[a:b:-1e999]", 10) == [(10, "b")]


def test_unknown_dialect_lists_the_known_ones() -> None:
    with pytest.raises(pw.UnknownNameError, match="a1111, comfy, novelai"):
        pw.parse("a", dialect="sdnext")
    with pytest.raises(TypeError):
        pw.parse(b"a")  # type: ignore[arg-type]


# --- depth cap ----------------------------------------------------------------------------------


@pytest.mark.parametrize("opener", ["(", "[", "[a|", "[a:", "([", "{"])
def test_deep_nesting_is_capped_and_safe(opener: str) -> None:
    closer = {"(": ")", "[": "]", "[a|": "]", "[a:": ":5]", "([": "])", "{": "}"}[opener]
    dialect = "novelai" if opener == "{" else "a1111"
    text = opener * 10_000 + "x" + closer * 10_000
    prompt = pw.parse(text, dialect=dialect)
    assert pw.render(prompt) == text
    assert "too-deep" in {d.kind for d in prompt.diagnostics}
    pw.parse.cache_clear()  # a fresh, equal tree: == and hash walk the full depth
    again = pw.parse(text, dialect=dialect)
    assert again == prompt
    assert hash(again) == hash(prompt)
    assert repr(again) == repr(prompt)
    with pytest.raises(pw.PromptSyntaxError):
        pw.parse(text, dialect=dialect, strict=True)


def test_depth_cap_is_configurable() -> None:
    assert pw.parse("((a))", max_depth=1).diagnostics[0].kind == "too-deep"
    assert pw.parse("((a))", max_depth=2).diagnostics == ()


# --- dialects -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # weighting-strategies.md §1.3 table
        ("a ((cat:1.5)) on a mat", [("a ", 1.0), ("cat", 1.5), (" on a mat", 1.0)]),
        ("a ((cat):1.5) on a mat", [("a ", 1.0), ("cat", 1.65), (" on a mat", 1.0)]),
        ("(a (b:0.5) c:1.2)", [("a ", 1.2), ("b", 0.5), (" c", 1.2)]),
        ("a [cat] on a mat", [("a [cat] on a mat", 1.0)]),
        ("a (cat on a mat", [("a ", 1.0), ("(cat on a mat", 1.0)]),
        ("(artist:name:1.2)", [("artist:name", 1.2)]),
        ("a (cat:-1) dog", [("a ", 1.0), ("cat", -1.0), (" dog", 1.0)]),
        ("(cat:0)", [("cat", 0.0)]),
        ("\\(a\\) (b)", [("(a) ", 1.0), ("b", 1.1)]),
    ],
)
def test_comfy_spans(text: str, expected: list) -> None:
    got = pw.weighted_spans(text, dialect="comfy")
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], rel=1e-12)


def test_comfy_tree_marks_absolute_weights() -> None:
    (node,) = children("((cat:1.5))", dialect="comfy")
    assert isinstance(node, Emphasis)
    assert node.weight == 1.1
    assert node.children == (Emphasis((Text("cat"),), 1.5, "round", ":1.5", True, True),)
    assert children("[a] {b}", dialect="comfy") == (Text("[a] {b}"),)


@pytest.mark.parametrize(
    ("text", "weight"),
    [("{word}", 1.05), ("{{word}}", 1.1025), ("[word]", 0.952), ("[[word]]", 0.907)],
)
def test_novelai_weights(text: str, weight: float) -> None:
    ((segment, got),) = pw.weighted_spans(text, dialect="novelai")
    assert segment == "word"
    assert got == pytest.approx(weight, abs=5e-4)


def test_novelai_round_brackets_are_text() -> None:
    assert pw.weighted_spans("(a:1.5) {b}", dialect="novelai") == [
        ("(a:1.5) ", 1.0),
        ("b", 1.05),
    ]
    assert children("{a}", dialect="novelai") == (Emphasis((Text("a"),), 1.05, "brace"),)


# --- pathological input: nothing crashes, nothing is lost --------------------------------------

MB = 1_000_000


N = 10_000


PATHOLOGICAL: dict[str, tuple[str, str]] = {
    # name: (text, dialect)
    "round-10k": ("(" * N + "a" + ")" * N, "a1111"),
    "square-10k": ("[" * N + "a" + "]" * N, "a1111"),
    "brace-10k": ("{" * N + "a" + "}" * N, "novelai"),
    "comfy-round-10k": ("(" * N + "a" + ")" * N, "comfy"),
    "open-round-10k": ("(" * N, "a1111"),
    "open-square-10k": ("[" * N, "a1111"),
    "closers-10k": (")]}" * N, "a1111"),
    "text-at-every-level-10k": ("(a" * N + ")" * N, "a1111"),
    "comfy-text-at-every-level-10k": ("(a:1.1" * N + ")" * N, "comfy"),
    "alternations-10k": ("[a|" * N, "a1111"),
    "alternations-closed-10k": ("[a|" * N + "b" + "]" * N, "a1111"),
    "edits-3000": ("[a:" * 3000 + "b" + ":0.5]" * 3000, "a1111"),
    "edits-3000-absolute": ("[a:" * 3000 + "b" + ":3]" * 3000, "a1111"),
    "explicit-weights-10k": ("(a:1.1)" * N, "a1111"),
    "one-megabyte": (
        ("masterpiece, (best quality:1.2), [blurry], [cat:dog:0.5] <lora:x:0.5> BREAK " * 20_000)[
            :MB
        ],
        "a1111",
    ),
    "control-characters": ("".join(map(chr, range(32))) + "\x7f(a:1.2)\x00[b|c]\r\n\x0b", "a1111"),
    "lone-surrogates": ("\ud800(a:1.1)\udfff [b:c:0.5] \udc80 AND d:0.5", "a1111"),
    "zero-width": (
        "\u200b(\u200ba\u200b:1.2)\u200bBREAK\u200b[\u200b|\u200b]\ufeff\u2060",
        "a1111",
    ),
    "weights": (
        " ".join(
            f"(a:{w}) [a:b:{w}] AND c:{w}"
            for w in ("1e309", "-0", ".5", "1.", "nan", "inf", "-inf", "9" * 400, "+1", "١٫٥")
        ),
        "a1111",
    ),
}


def _only_documented(call: Callable[[], object]) -> None:
    with contextlib.suppress(PromptweightsError):  # documented: our own types, with a message
        call()


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_input_neither_crashes_nor_loses_text(name: str) -> None:
    text, dialect = PATHOLOGICAL[name]
    tree = pw.parse(text, dialect=dialect)
    # Nothing lost: the tree gives the text back (comments aside).
    assert pw.render(tree) == (pw.strip_comments(text) if dialect == "a1111" else text)
    _only_documented(lambda: pw.parse(text, dialect=dialect, strict=True))
    for each in pw.DIALECTS:
        spans = pw.weighted_spans(text, dialect=each)
        assert all(isinstance(s, str) and isinstance(w, float) for s, w in spans)
    for steps in (0, 1, 20, 150):
        _only_documented(lambda steps=steps: pw.schedules(text, steps))
        _only_documented(lambda steps=steps: pw.schedules(text, steps, hires_steps=steps + 5))
    _only_documented(lambda: pw.split_and(text))
    pw.extra_networks(text)
    _only_documented(lambda: infotext.parse(text))
    if len(text) < 100_000:  # the toy tokenizer is a slow (Python) one
        FUZZ.check(
            (b"\x00\x14\x00" if dialect == "a1111" else b"\x01\x14\x00")
            + text[:5000].encode("utf-8", "surrogatepass")
        )


def test_deep_brackets_raise_in_strict_mode_with_the_position() -> None:
    text = "(" * 200 + "a" + ")" * 200
    with pytest.raises(PromptSyntaxError) as raised:
        pw.parse(text, strict=True)
    assert raised.value.pos == pw.DEFAULT_MAX_DEPTH  # the first opener past the cap
    assert "too-deep" in {d.kind for d in pw.parse(text).diagnostics}


def test_prompt_length_is_capped() -> None:
    pw.parse("a" * pw.MAX_PROMPT_CHARS)
    with pytest.raises(LimitExceededError, match="exceeds the limit"):
        pw.parse("a" * (pw.MAX_PROMPT_CHARS + 1))


# --- time and memory grow linearly -------------------------------------------------------------


def _language(text: str, dialect: str) -> None:
    pw.parse(text, dialect=dialect)
    pw.weighted_spans(text, dialect=dialect)
    if dialect == "a1111":
        pw.schedules(text, 20, max_chars=sys.maxsize)
        pw.split_and(text, max_parts=sys.maxsize)
        pw.extra_networks(text)


def _clear() -> None:
    for function in (pw.parse, pw.weighted_spans, pw.schedules):
        function.cache_clear()  # type: ignore[attr-defined]


def _cpu_time(text: str, dialect: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        _clear()
        gc.collect()
        start = time.process_time()
        _language(text, dialect)
        best = min(best, time.process_time() - start)
    return best


GROWTH_UNITS = {
    "round": ("(", "a1111"),
    "square": ("[", "a1111"),
    "brace": ("{", "novelai"),
    "comfy": ("(a", "comfy"),
    "text-at-every-level": ("(a", "a1111"),
    "alternation": ("[a|", "a1111"),
    "edit": ("[a:", "a1111"),
    "mixed": ("a (b:1.2), [c:d:0.5] <lora:x:0.5> BREAK ", "a1111"),
}


def _sized(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


@pytest.mark.parametrize("name", sorted(GROWTH_UNITS))
def test_time_from_100kb_to_1mb_grows_linearly(name: str) -> None:
    # A growth ratio, not an absolute time: 10x the text takes about 10x the CPU time here
    # (11-14x measured); quadratic code takes 100x.
    unit, dialect = GROWTH_UNITS[name]
    ratio = _cpu_time(_sized(unit, MB), dialect, 1) / _cpu_time(_sized(unit, MB // 10), dialect, 2)
    assert ratio < 30, f"10x longer text took {ratio:.0f}x the CPU time"


def _memory_text(name: str, size: int) -> tuple[str, str]:
    if name == "pipes":  # one alternation of empty options, `[|||…]`
        return "[" + "|" * (size - 2) + "]", "a1111"
    unit, dialect = GROWTH_UNITS[name]
    return _sized(unit, size), dialect


@pytest.mark.parametrize("name", ["round", "pipes", "mixed"])
def test_memory_from_100kb_to_1mb_grows_linearly(name: str) -> None:
    peaks = []
    for size in (MB // 10, MB):
        _clear()
        text, dialect = _memory_text(name, size)
        tracemalloc.start()
        try:
            _language(text, dialect)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    _clear()
    assert peaks[1] / peaks[0] < 15
    # SECURITY.md: at most about 250 bytes per character. Measured (Python 3.11): 229 for
    # brackets, 182 for `[|||…]` (326 before the scheduling scanner kept bare indices), 81 mixed.
    assert peaks[1] < 250 * MB
