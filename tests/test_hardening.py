"""Issue 8: hostile prompts. Pathological inputs, resource caps, the depth cap of the emphasis pass,
the atheris harness's checks, and one-line CLI errors.

Files (LoRA, textual inversion) are in ``test_network_files.py``; the pipeline left untouched by a
failed ``encode`` is in ``test_state.py``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import promptweights as pw
from benchmarks._a1111_reference import _TOKEN, parse_prompt_attention
from promptweights import infotext
from promptweights.errors import LimitExceededError, PromptSyntaxError, PromptweightsError
from promptweights.testing import bracket_soup

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000


def _harness() -> ModuleType:
    path = ROOT / "tools" / "fuzz_atheris.py"
    spec = importlib.util.spec_from_file_location("_fuzz_atheris", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FUZZ = _harness()

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


# --- time and memory grow linearly --------------------------------------------------------------


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


# --- the emphasis pass's depth cap ---------------------------------------------------------------


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


# --- resource caps -------------------------------------------------------------------------------


def test_schedule_variants_are_capped_and_configurable() -> None:
    assert len(pw.schedules("[a|b]", 512)) == 512  # the default cap, reached
    with pytest.raises(LimitExceededError, match=r"513 entries .* limit is 512"):
        pw.schedules("[a|b]", 513)
    assert len(pw.schedules("[a|b]", 1000, max_variants=1000)) == 1000
    edits = "".join(f"[x{i}:y:{i}]" for i in range(1, 11))
    with pytest.raises(LimitExceededError, match="every edit adds one"):
        pw.schedules(edits, 20, max_variants=5)


def test_schedule_characters_are_capped() -> None:
    text = "[a|b] " + "x" * 1000
    assert len(pw.schedules(text, 20, max_chars=20 * len(text))) == 20
    with pytest.raises(LimitExceededError, match="max_chars"):
        pw.schedules(text, 20, max_chars=20 * len(text) - 1)


def test_and_parts_are_capped_with_the_position() -> None:
    text = " AND ".join("p" * 64)
    assert len(pw.split_and(text)) == 64
    with pytest.raises(LimitExceededError, match="65 AND parts") as raised:
        pw.split_and(text + " AND q")
    assert f"character {text.rindex('AND') + 6}" in str(raised.value)
    assert len(pw.split_and(text + " AND q", max_parts=65)) == 65


def test_prompt_length_is_capped() -> None:
    pw.parse("a" * pw.MAX_PROMPT_CHARS)
    with pytest.raises(LimitExceededError, match="exceeds the limit"):
        pw.parse("a" * (pw.MAX_PROMPT_CHARS + 1))


@pytest.mark.parametrize(
    "field", ["prompt_chars", "variants", "schedule_chars", "and_parts", "rows"]
)
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_limits_must_be_positive_ints(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        pw.Limits(**{field: value})  # type: ignore[arg-type]


# --- the fuzz harness ----------------------------------------------------------------------------


def test_fuzz_harness_seeds_pass() -> None:
    for seed in FUZZ.SEEDS:
        FUZZ.check(seed)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(min_size=3, max_size=200)
    | st.builds(
        lambda head, text: head + text.encode("utf-8", "surrogatepass"),
        st.binary(min_size=3, max_size=3),
        bracket_soup(max_size=120),
    )
)
def test_fuzz_harness_finds_nothing(data: bytes) -> None:
    with contextlib.suppress(PromptweightsError):
        FUZZ.check(data)


def test_fuzz_harness_reports_what_escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    # The harness must be able to fail: an undocumented exception goes through.
    def broken(text: str, **kwargs: object) -> None:
        raise KeyError(text)

    monkeypatch.setattr(FUZZ.pw, "extra_networks", broken)
    with pytest.raises(KeyError):
        FUZZ.check(b"\x00\x14\x00a")


def test_lone_surrogates_tokenize_as_the_replacement_character() -> None:
    tokenizer = FUZZ._tokenizer()
    from promptweights.tokens import tokenize

    assert tokenize(tokenizer, [("red \udc80", 1.0)]) == tokenize(tokenizer, [("red \ufffd", 1.0)])


# --- caps in the builder and the adapter -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pipe() -> object:
    from _tiny_models import tiny_clip_model, tiny_clip_tokenizer, tiny_sd_pipeline

    tokenizer = tiny_clip_tokenizer()
    return tiny_sd_pipeline(tokenizer, tiny_clip_model(tokenizer))


def test_build_refuses_more_rows_than_the_cap_before_encoding(tiny_pipe: object) -> None:
    from promptweights.builder import build
    from promptweights.encoders import TextEncoder

    encoder = TextEncoder.clip(tiny_pipe.text_encoder, tiny_pipe.tokenizer)  # type: ignore[attr-defined]
    groups = [["a " * 100, "[b] " * 200], ["c"]]  # 2 + 3 chunks, and the cached empty one
    rows = build(encoder, groups).rows
    encoder.clear_cache()
    assert build(encoder, groups, max_rows=rows).rows == rows
    encoder.clear_cache()
    calls = []
    forward = encoder.model.forward
    encoder.model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)  # type: ignore[method-assign]
    try:
        with pytest.raises(LimitExceededError, match=f"needs {rows} text-encoder rows"):
            build(encoder, groups, max_rows=rows - 1)
    finally:
        del encoder.model.forward
    assert calls == []


@pytest.mark.parametrize(
    ("kwargs", "limits", "message"),
    [
        ({"prompt": "a" * 11}, {"prompt_chars": 10}, "prompt has 11 characters"),
        ({"prompt": "a", "negative_prompt": "b" * 11}, {"prompt_chars": 10}, "negative_prompt"),
        ({"prompt": ["a", "b" * 11]}, {"prompt_chars": 10}, r"prompt\[1\] has 11"),
        ({"prompt": "a AND b AND c"}, {"and_parts": 2}, "3 AND parts"),
        ({"prompt": "[a|b]", "steps": 10}, {"variants": 9}, "10 entries"),
        ({"prompt": "a " * 100}, {"rows": 1}, "rows"),  # 2 chunks (the empty one is cached)
    ],
)
def test_encode_enforces_its_limits(
    tiny_pipe: object, kwargs: dict[str, object], limits: dict[str, int], message: str
) -> None:
    from promptweights.diffusers import encode

    with pytest.raises(LimitExceededError, match=message):
        encode(tiny_pipe, **kwargs, limits=pw.Limits(**limits))  # type: ignore[arg-type]
    encode(tiny_pipe, **kwargs)  # within the default limits


def test_encode_refuses_a_limits_of_the_wrong_type(tiny_pipe: object) -> None:
    from promptweights.diffusers import encode

    with pytest.raises(TypeError, match="Limits"):
        encode(tiny_pipe, "a", limits={"rows": 3})


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["explain", "[a|b]", "--steps", "1000"],
        ["explain", "(a" * 10 + "(b:1.2.3)", "--strict"],
    ],
)
def test_cli_reports_errors_in_one_line_with_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from promptweights.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("promptweights: error:")
