"""Per-encoder prompts ``TE(clip_l: …; t5: …)``: the grammar rule, the tree, rendering, routing.

Parity cases (tests/data/a1111/encoders.json) are written by hand from the documented rules; the
properties draw prompts whose per-encoder texts the strategy works out from the pieces it drew.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import promptweights as pw
from promptweights.schedules import tree_schedules
from promptweights.testing import per_encoder_prompts

DATA = json.loads(
    (Path(__file__).parent / "data" / "a1111" / "encoders.json").read_text(encoding="utf-8")
)
NAMES = DATA["names"]


@pytest.mark.parametrize(("text", "expected"), DATA["cases"], ids=repr)
def test_each_encoder_reads_its_sections_where_the_block_stands(
    text: str, expected: dict[str, str]
) -> None:
    assert pw.route(text, NAMES) == expected


@pytest.mark.parametrize("text", DATA["not_blocks"], ids=repr)
def test_te_after_a_word_character_or_escaped_is_no_block(text: str) -> None:
    assert pw.route(text, NAMES) is None
    assert not any(isinstance(node, pw.PerEncoder) for node in pw.parse(text).parts[0].children)


@pytest.mark.parametrize(("text", "pos"), DATA["errors"], ids=repr)
def test_bad_blocks_are_errors_at_their_position(text: str, pos: int) -> None:
    with pytest.raises(pw.PromptSyntaxError) as caught:
        pw.route(text, NAMES)
    assert (caught.value.kind, caught.value.pos) == ("bad-encoders", pos)
    assert "^" in str(caught.value)


def test_an_unknown_name_lists_the_encoders() -> None:
    with pytest.raises(pw.PromptSyntaxError, match=r"'vae'.*are clip_l, t5"):
        pw.route("TE(vae: a)", ["clip_l", "t5"])


def test_the_tree_holds_the_sections_and_renders_back() -> None:
    text = "a, TE(clip_l: (cat:1.2); t5 : [a:b:3])"
    (part,) = pw.parse(text).parts
    block = part.children[1]
    assert isinstance(block, pw.PerEncoder)
    assert [(s.name, s.head) for s in block.sections] == [("clip_l", "clip_l:"), ("t5", " t5 :")]
    first, second = (s.children for s in block.sections)
    assert first == (pw.Text(" "), pw.Emphasis((pw.Text("cat"),), 1.2, weight_text=":1.2"))
    assert second == (pw.Text(" "), pw.Edit((pw.Text("a"),), (pw.Text("b"),), 3.0, "3"))
    assert pw.render(pw.parse(text)) == text


def test_a_block_is_text_and_emphasis_to_a1111s_schedules() -> None:
    # A1111 reads `TE(` as `TE` and a round bracket; editing inside a section is scheduled.
    assert pw.schedules("x TE(clip_l: [a:b:2]; t5: c)", 4) == [
        (2, "x TE(clip_l: a; t5: c)"),
        (4, "x TE(clip_l: b; t5: c)"),
    ]


def test_a_nameless_section_is_a_diagnostic() -> None:
    prompt = pw.parse("TE(a cat)")
    assert [d.kind for d in prompt.diagnostics] == ["bad-encoders"]
    with pytest.raises(pw.PromptSyntaxError, match="without a name"):
        pw.parse("TE(a cat)", strict=True)


@settings(max_examples=30)
@given(pair=per_encoder_prompts(("clip_l", "clip_g", "t5"), with_routes=True))
def test_routing_equals_the_drawn_pieces(pair: tuple[str, dict[str, str]]) -> None:
    text, routes = pair
    assert (pw.route(text, ["clip_l", "clip_g", "t5"]) or dict.fromkeys(routes, text)) == routes


@settings(max_examples=30)
@given(text=per_encoder_prompts())
def test_per_encoder_prompts_parse_strictly_and_render_back(text: str) -> None:
    assert pw.render(pw.parse(text, strict=True)) == text


@settings(max_examples=20)
@given(text=per_encoder_prompts(), steps=st.integers(1, 30))
def test_the_scheduling_scanner_equals_the_tree_on_blocks(text: str, steps: int) -> None:
    pw.schedules.cache_clear()
    assert pw.schedules(text, steps) == tree_schedules(text, steps)


def test_the_strategy_refuses_names_that_are_not_identifiers() -> None:
    from hypothesis.errors import InvalidArgument

    with pytest.raises(InvalidArgument):
        per_encoder_prompts(("clip l",))


@pytest.mark.parametrize("dialect", ["comfy", "novelai", "compel"])
def test_other_dialects_never_route(dialect: str) -> None:
    # TE( is a1111-dialect syntax: converted to A1111 text, the others' `TE(` is no block.
    for text in ("TE(clip_l: a; t5: b)", "x TE(t5: (cat:1.2))"):
        assert pw.route(pw.convert(text, dialect, "a1111").text, NAMES) is None


def test_converting_a_block_out_of_a1111_says_it_is_not_routed() -> None:
    result = pw.convert("x TE(clip_l: a; t5: b)", "a1111", "comfy")
    assert [(d.kind, d.pos) for d in result.diagnostics] == [("encoders", 2)]
