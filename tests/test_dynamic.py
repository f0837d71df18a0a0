"""``promptweights.dynamic``: dynamic prompts and wildcards, expanded before a dialect's parser.

Parity cases are transcribed from dynamicprompts' syntax guide (tests/data/dynamic/syntax.json);
the properties use the ``dynamic_prompts`` strategy and hostile text.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import promptweights as pw
from promptweights import _lark
from promptweights.dynamic import Wildcards, count, expand
from promptweights.testing import bracket_soup, dynamic_prompts

CASES = json.loads((Path(__file__).parent / "data" / "dynamic" / "syntax.json").read_text("utf-8"))


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda case: case["template"])
def test_expansion_follows_the_dynamicprompts_syntax_guide(case: dict) -> None:
    got = expand(case["template"], wildcards=case.get("wildcards"))
    if "equals" in case:
        assert got == case["equals"]
    if "set" in case:
        assert sorted(got) == sorted(case["set"])
    for prompt in case.get("contains", ()):
        assert prompt in got
    for prompt in case.get("excludes", ()):
        assert prompt not in got
    if "same_as" in case:
        assert got == expand(case["same_as"])
    assert len(got) == len(set(got))


def test_weights_set_how_often_random_mode_draws_each_option() -> None:
    # SYNTAX.md: `{0.5::summer|0.1::autumn|0.3::winter|0.1::spring}`; weights are relative.
    draws = expand(
        "{0.5::summer|0.1::autumn|0.3::winter|0.1::spring}",
        mode="random",
        seed=7,
        count=4000,
        limit=4000,
    )
    shares = {name: n / len(draws) for name, n in Counter(draws).items()}
    for name, share in {"summer": 0.5, "autumn": 0.1, "winter": 0.3, "spring": 0.1}.items():
        assert abs(shares[name] - share) < 0.03


def test_random_mode_is_reproducible_from_the_seed() -> None:
    template = "a {red|green|blue} {1-2$$cat|dog|fox} __place__"
    wildcards = {"place": ["park", "{old|new} town"]}
    first = expand(template, mode="random", seed=42, count=20, wildcards=wildcards)
    assert first == expand(template, mode="random", seed=42, count=20, wildcards=wildcards)
    assert first != expand(template, mode="random", seed=43, count=20, wildcards=wildcards)
    assert set(first) <= set(expand(template, wildcards=wildcards))


def test_wildcards_from_a_folder_of_text_files(tmp_path: Path) -> None:
    (tmp_path / "artists").mkdir()
    (tmp_path / "season.txt").write_text("# seasons\nsummer\n\n  {autumn|fall}  \n", "utf-8")
    (tmp_path / "artists" / "dutch.txt").write_text("Piet Mondrian\n__season__ light\n", "utf-8")
    (tmp_path / "notes.md").write_text("not a wildcard\n", "utf-8")
    assert Wildcards(tmp_path).names == ("artists/dutch", "season")
    assert expand("__season__", wildcards=tmp_path) == ["summer", "autumn", "fall"]
    assert expand("by __artists/*__", wildcards=str(tmp_path)) == [
        "by Piet Mondrian",
        "by summer light",
        "by autumn light",
        "by fall light",
    ]


def test_square_brackets_are_never_touched() -> None:
    # `|` inside [...] is A1111's alternation, never a variant separator (sd-dynamic-prompts #1).
    assert expand("{[cat|dog]|fox} [a:b:5]") == ["[cat|dog] [a:b:5]", "fox [a:b:5]"]
    assert expand("[{red|blue} cat|dog]") == ["[red cat|dog]", "[blue cat|dog]"]
    assert expand("a|b [c|d]") == ["a|b [c|d]"]


def test_novelai_braces_stay_emphasis_and_variants_are_reported_as_clashes() -> None:
    assert expand("{masterpiece}, {{cat}}", dialect="novelai") == ["{masterpiece}, {{cat}}"]
    with pytest.warns(pw.PromptweightsWarning, match="column 5"):
        assert expand("a, {{red|blue} cat}", dialect="novelai") == ["a, {red cat}", "a, {blue cat}"]
    with pytest.raises(pw.PromptSyntaxError) as raised:
        expand("a, {{red|blue} cat}", dialect="novelai", strict=True)
    assert (raised.value.kind, raised.value.pos, raised.value.column) == ("dynamic-clash", 4, 5)
    # In A1111 mode the same braces are a one-option variant: dynamicprompts' reading.
    assert expand("{masterpiece}") == ["masterpiece"]


@pytest.mark.parametrize(
    ("text", "kind", "pos"),
    [
        ("a {b|c", "unclosed", 2),
        ("a} b", "stray-closer", 1),
        ("x __nope__", "unknown-wildcard", 2),
    ],
)
def test_strict_mode_raises_with_the_position(text: str, kind: str, pos: int) -> None:
    with pytest.raises(pw.PromptSyntaxError) as raised:
        expand(text, strict=True)
    assert (raised.value.kind, raised.value.pos) == (kind, pos)
    with pytest.warns(pw.PromptweightsWarning):
        assert expand(text) == [text]  # lenient: kept as text


def test_problems_inside_a_wildcard_point_at_the_wildcard() -> None:
    with pytest.raises(pw.PromptSyntaxError) as raised:
        expand("a, __w__", wildcards={"w": ["{x|y"]}, strict=True)
    assert (raised.value.kind, raised.value.pos) == ("unclosed", 3)


def test_caps_raise_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    from promptweights import dynamic

    def no_work(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("a prompt was made before the caps were checked")

    # What makes prompts (combinatorial and random mode) must never run when a cap is exceeded.
    monkeypatch.setattr(dynamic._Combinations, "sequence", no_work)
    monkeypatch.setattr(dynamic, "_draw", no_work)
    huge = " ".join("{" + "|".join("abcdefghij") + "}" for _ in range(30))  # 10**30 prompts
    assert count(huge) == 2**63  # counts saturate
    assert count(" ".join("{" + "|".join("abcdefghij") + "}" for _ in range(10))) == 10**10
    with pytest.raises(pw.LimitExceededError, match="limit of 1000"):
        expand(huge)
    with pytest.raises(pw.LimitExceededError, match="limit of 10"):
        expand("{a|b}", mode="random", count=11, limit=10)
    with pytest.raises(pw.LimitExceededError, match="max_chars"):
        expand("{" + "x" * 1000 + "|y}", max_chars=1500)
    chain = {f"w{i}": [f"__w{i + 1}__"] for i in range(12)} | {"w12": ["end"]}
    with pytest.raises(pw.LimitExceededError, match="max_depth=10"):
        expand("__w0__ {a|b}", wildcards=chain)
    with pytest.raises(pw.LimitExceededError, match="include themselves"):
        expand("__a__", wildcards={"a": ["__b__"], "b": ["x", "__a__"]}, mode="random")


def test_counting_stays_cheap_on_huge_templates() -> None:
    start = time.process_time()
    assert count("{2-$$" + "|".join(["a"] * 100_000) + "}") == 2**63  # saturates
    assert count("{a|b}" * 20_000) == 2**63
    assert time.process_time() - start < 10
    with pytest.raises(pw.LimitExceededError):  # 2**63 prompts still exceed max_chars
        expand("{a|b}" * 20_000, limit=10**30)


def test_braces_nested_past_the_cap_are_text() -> None:
    from promptweights.dynamic import MAX_NESTING

    deep = "{" * (MAX_NESTING + 5) + "x|y" + "}" * (MAX_NESTING + 5)
    with pytest.warns(pw.PromptweightsWarning, match="nested past"):
        got = expand(deep)
    # The pipe belongs to the innermost brace that is still a variant.
    assert got == ["{" * 5 + "x", "y" + "}" * 5]


def test_repeated_values_in_one_pick_differ_between_the_modes() -> None:
    # dynamicprompts' CombinatorialSampler dedupes the values of a pick and keeps a pick only if
    # it still has `bound` values; its RandomSampler chooses distinct options (without
    # replacement) and joins their values as they are (samplers/combinatorial.py, random.py).
    assert expand("{2$$a|a}") == []
    assert expand("{2$$a|a}", mode="random", seed=1, count=2) == ["a, a", "a, a"]
    assert expand("{2$$a|a|b}") == ["a, b", "b, a"]
    assert "a, a" in expand("{2$$a|a|b}", mode="random", seed=1, count=6)
    assert expand("{a|a} x") == ["a x"]
    assert count("{2$$a|a}") == 2  # count is an upper bound


def test_novelai_braces_keep_their_numeric_weight_sections() -> None:
    assert expand("{1.5::rain::}, {{night}}", dialect="novelai") == ["{1.5::rain::}, {{night}}"]


def test_wildcard_recursion_is_capped() -> None:
    with pytest.raises(pw.LimitExceededError, match="include themselves: __a__ → __b__ → __a__"):
        expand("__a__", wildcards={"a": ["__b__"], "b": ["x", "__a__"]})
    chain = {f"w{i}": [f"__w{i + 1}__"] for i in range(12)} | {"w12": ["end"]}
    with pytest.raises(pw.LimitExceededError, match="max_depth=10"):
        expand("__w0__", wildcards=chain)
    assert expand("__w0__", wildcards=chain, max_depth=13) == ["end"]
    assert expand("__w3__", wildcards=chain) == ["end"]  # 10 levels: within the cap
    with pytest.raises(pw.LimitExceededError):  # a cached wildcard reused deeper is rechecked
        expand("__w3__ __w0__", wildcards=chain)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: expand("a", mode="cyclical"), pw.UnknownNameError),
        (lambda: expand("a", limit=0), pw.InvalidArgumentError),
        (lambda: expand("a", seed="1"), pw.ArgumentTypeError),  # type: ignore[arg-type]
        (lambda: expand(b"a"), pw.ArgumentTypeError),  # type: ignore[arg-type]
        (lambda: expand("a", wildcards=3), pw.ArgumentTypeError),  # type: ignore[arg-type]
        (lambda: expand("a", wildcards={"w": [1]}), pw.ArgumentTypeError),
        (lambda: expand("a", dialect="x"), pw.UnknownNameError),
        (lambda: expand("a", wildcards="/nonexistent/folder"), pw.InvalidArgumentError),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error):
        call()


# ---------------------------------------------------------------------------------------------
# Properties

_WILDCARDS = {"animal": ["cat", "{old|young} dog"], "a/b": ["x", "y z"], "place": ["park"]}


@settings(max_examples=60, deadline=None)
@given(dynamic_prompts(wildcards=tuple(_WILDCARDS)))
def test_every_template_expands_cleanly_to_prompts_a1111_parses(template: str) -> None:
    assert _lark.file_accepts("dynamic.lark", template)  # the grammar is the syntax
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prompts = expand(template, wildcards=_WILDCARDS, strict=True, limit=10**6)
    most = count(template, wildcards=_WILDCARDS)
    assert len(prompts) <= most
    assert len(prompts) == len(set(prompts))
    for prompt in prompts[:50]:
        pw.parse(prompt, strict=True)
        assert prompt.count("[") == prompt.count("]")  # brackets are never cut
    drawn = expand(template, wildcards=_WILDCARDS, mode="random", seed=3, count=5)
    if len(prompts) == most:
        # Nothing was deduplicated, so no pick can repeat a value: random mode draws from the
        # combinatorial list. (Where options repeat a value, the two modes differ as they do in
        # dynamicprompts: test_repeated_values_in_one_pick_differ_between_the_modes.)
        assert prompts
        assert set(drawn) <= set(prompts)


@settings(max_examples=150, deadline=None)
@given(bracket_soup(max_size=80) | st.text(alphabet="{}|$-_:[]\\ab12.", max_size=40))
def test_lenient_expansion_never_raises(text: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expand(text, wildcards={"a": ["{b|c}"]}, limit=10**6, max_chars=10**8)
            expand(text, dialect="novelai", mode="random", seed=0, limit=10**6)
        except pw.LimitExceededError:  # a short text can still ask for too many prompts
            return
    position = -1
    try:
        expand(text, wildcards={"a": ["x"]}, strict=True, limit=10**6, max_chars=10**8)
    except pw.PromptSyntaxError as error:  # strict mode raises nothing else
        position = error.pos
    assert -1 <= position <= len(text)


# ---------------------------------------------------------------------------------------------
# compare: an expansion as an axis, one column per variant


def test_plan_grid_takes_an_expansion_as_the_first_axis() -> None:
    from promptweights.compare import Axis, plan_grid

    axes, cells = plan_grid(
        "a (cat:{0,1}) __colour__", [Axis("seed", (1, 2))], expand=True,
        wildcards={"colour": ["red", "blue"]},
    )  # fmt: skip
    assert [axis.name for axis in axes] == ["prompt", "weight", "seed"]
    assert axes[0].labels() == ["a (cat:w) red", "a (cat:w) blue"]
    assert [(cell.prompt, cell.seed) for cell in cells[:4]] == [
        ("a (cat:0) red", 1),
        ("a (cat:0) blue", 1),
        ("a (cat:1) red", 1),
        ("a (cat:1) blue", 1),
    ]
    assert Axis.expansion("{a|b} x").values == ("a x", "b x")
    with pytest.raises(pw.LimitExceededError):
        plan_grid("{a|b|c|d|e|f|g|h|i|j}" * 4, expand=True)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--expand", "--wildcards", "/no/such/folder"], ["is not a folder"]),
        (["--expand", "--strategies", "a1111,comfy", "--seeds", "1,2", "--cfg", "1,2"], ["three"]),
    ],
)
def test_compare_cli_expand_errors(
    argv: list[str], words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from promptweights.cli import main

    code = main(["compare", "a {red|blue} cat", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    for word in words:
        assert word in err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_compare_cli_expand_on_the_toy_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("diffusers")
    toy = pytest.importorskip("promptweights.toy")
    with toy.model_path() as path:
        if not (path / "model_index.json").is_file():
            pytest.skip("the toy model is not built")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "shape.txt").write_text("circle\nsquare\n", "utf-8")
    from promptweights.cli import main

    out_dir = tmp_path / "out"
    argv = ["compare", "a {red|blue} __shape__", "--out", str(out_dir), "--expand"]
    argv += ["--wildcards", str(tmp_path / "w"), "--steps", "1", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "4 cells on prompt" in out
    metrics = json.loads((out_dir / "metrics.json").read_text("utf-8"))
    assert [cell["prompt"] for cell in metrics["cells"]] == [
        "a red circle",
        "a red square",
        "a blue circle",
        "a blue square",
    ]


def test_the_benchmark_counts_variants_per_second() -> None:
    from benchmarks import parse as bench

    rows = bench.expand_rows(repeat=1)
    assert len(rows) == len(bench.EXPANSIONS)
    assert "100,000 prompts" in rows[0].label
    assert all(row.ratio and row.ratio > 0 for row in rows)
