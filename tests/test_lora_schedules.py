"""LoRA weight schedules (issue 14, part 5): loractl's ``<lora:name:0@0,1@0.5>``.

Parity data come from loractl's own tests and README (tests/data/loractl/loractl.json). The
run-time tests use the tiny SD1 pipeline and a LoRA whose ``lora_alpha`` equals its rank, so peft's
``scaling`` of an adapted layer is the adapter weight ``set_adapters`` gave it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import promptweights
from promptweights.cli import explain
from promptweights.errors import PromptSyntaxError
from promptweights.lora_schedules import (
    LoraWeights,
    WeightSchedule,
    lora_schedules,
    lora_step,
    lora_weights,
    weight_schedule,
    weights_per_call,
)

DATA = json.loads((Path(__file__).parent / "data" / "loractl" / "loractl.json").read_text())


def as_loractl(schedule: WeightSchedule) -> Any:
    """A schedule the way loractl returns it: a plain number or [[weights], [steps]]."""
    if schedule.steps is None:
        return schedule.weights[0]
    return [list(schedule.weights), list(schedule.steps)]


def all_four(weights: LoraWeights) -> dict[str, Any]:
    return {
        "te": as_loractl(weights.te),
        "unet": as_loractl(weights.unet),
        "hrte": as_loractl(weights.hires_te),
        "hrunet": as_loractl(weights.hires_unet),
    }


# --- parity with loractl's tests and README ---------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), DATA["sorted_positions"])
def test_points_are_read_and_sorted_as_loractl_does(text: str, expected: Any) -> None:
    assert as_loractl(weight_schedule(text, strict=True)) == expected


@pytest.mark.parametrize(("text", "step", "steps", "expected"), DATA["calculate_weight"])
def test_weight_at_a_step_as_loractl_computes_it(
    text: str, step: int, steps: int, expected: float
) -> None:
    assert weight_schedule(text).at(step, steps) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("args", "expected"), DATA["params_to_weights"])
def test_tag_arguments_cascade_as_loractl_reads_them(args: str, expected: dict[str, Any]) -> None:
    (weights,) = lora_schedules(f"<lora:{args}>", strict=True)
    assert weights.name == "loraname"
    assert all_four(weights) == expected


@pytest.mark.parametrize(("tag", "expected"), DATA["readme_tags"])
def test_readme_tags(tag: str, expected: dict[str, Any]) -> None:
    (weights,) = lora_schedules(f"a cat {tag}, best quality", strict=True)
    assert all_four(weights) == expected


@pytest.mark.parametrize(("text", "steps", "expected"), DATA["readme_behaviour"])
def test_readme_behaviour(text: str, steps: int, expected: list[list[float]]) -> None:
    schedule = weight_schedule(text, strict=True)
    assert [[step, schedule.at(step, steps)] for step, _ in expected] == expected


# --- the step each model call sees --------------------------------------------------------------


def test_calls_see_the_step_a1111s_callback_set() -> None:
    # Hand-derived: the callback after step i's first call sets sampling_step = i.
    assert [lora_step(k) for k in range(6)] == [0, 0, 1, 2, 3, 4]
    assert [lora_step(k, 2) for k in range(7)] == [0, 0, 0, 1, 1, 2, 2]


def test_per_call_weights_of_te_and_unet_schedules() -> None:
    loras = lora_schedules("<lora:a:te=0@2,1@3:unet=0@0,1@1> <lora:b:0.5>")
    table = weights_per_call(loras, 6)
    # unet: fractions of 6 - 2 = 4 steps; te: absolute steps 2 -> 3.
    assert [unet for _, unet in table] == [
        (0.0, 0.5),
        (0.0, 0.5),
        (0.25, 0.5),
        (0.5, 0.5),
        (0.75, 0.5),
        (1.0, 0.5),
    ]
    assert [te for te, _ in table] == [(0.0, 0.5)] * 4 + [(1.0, 0.5)] * 2
    hires = weights_per_call(lora_schedules("<lora:a:0@0,1@1:hr=0.25>"), 3, hires=True)
    assert hires == [((0.25,), (0.25,))] * 3


def test_points_at_one_step_make_a_jump_the_last_written_wins() -> None:
    schedule = weight_schedule("0@5,1@5")
    assert [schedule.at(s, 20) for s in (4, 5, 6)] == [0.0, 1.0, 1.0]
    assert weight_schedule("1@5,0@5").at(5, 20) == 0.0


def test_few_steps_never_divide_by_zero() -> None:
    schedule = weight_schedule("0@0,1@1")
    assert [schedule.at(0, n) for n in (1, 2, 3)] == [0.0, 0.0, 0.0]
    assert schedule.at(1, 3) == 1.0


def test_a_plain_number_first_ignores_the_rest_and_says_so() -> None:
    assert weight_schedule("0.5,1@1") == WeightSchedule((0.5,))
    diagnostics = promptweights.parse("a <lora:x:0.5,1@1>").diagnostics
    assert [d.kind for d in diagnostics] == ["bad-network"]
    # A later entry without a step is at step 1, as in loractl.
    assert weight_schedule("0@0,1").steps == (0.0, 1.0)


def test_the_tag_reports_its_weight_at_step_0() -> None:
    _, (tag,) = promptweights.extra_networks("<lora:x:0.25@0.5,1@1:unet=1@0,0@10>")
    assert (tag.te_weight, tag.unet_weight) == (0.25, 1.0)
    assert promptweights.parse("<lora:x:0@0,1@0.5>").diagnostics == ()


# --- strict errors with positions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "at"),
    [
        ("a cat <lora:ink:0@0,oops@1>", "oops@1"),
        ("a cat <lora:ink:te=0@0,1@1:unet=1@0,,0@1>", ",0@1>"),
        ("a cat <lora:ink:0@0,1@2@3>", "1@2@3"),
        ("a cat <lora:ink:1:unet=0@0, 1@nan>", "1@nan"),
        ("# note\na cat <lora:ink:hr=x@0>", "x@0"),
    ],
)
def test_strict_errors_point_at_the_bad_entry(text: str, at: str) -> None:
    with pytest.raises(PromptSyntaxError) as caught:
        lora_schedules(text, strict=True)
    assert caught.value.kind == "bad-network"
    assert caught.value.pos == text.index(at)
    assert "^" in str(caught.value)
    lenient = lora_schedules(text)  # lenient: the entry is left out, nothing raised
    assert len(lenient) == 1
    with pytest.raises(PromptSyntaxError):
        promptweights.parse(text, strict=True)


def test_strict_error_of_one_tag_points_into_the_tag_or_the_source() -> None:
    _, (tag,) = promptweights.extra_networks("a <lora:ink:0@0,x>")
    with pytest.raises(PromptSyntaxError) as caught:
        lora_weights(tag, strict=True)
    assert (caught.value.source, caught.value.pos) == ("<lora:ink:0@0,x>", 14)
    with pytest.raises(PromptSyntaxError) as caught:
        lora_weights(tag, strict=True, source="a <lora:ink:0@0,x>")
    assert caught.value.pos == 16
    with pytest.raises(PromptSyntaxError) as caught:
        weight_schedule("1@0;;", strict=True)
    assert caught.value.pos == 4


# --- properties ---------------------------------------------------------------------------------

_NUMBER = st.one_of(
    st.floats(-3, 3, allow_nan=False).map(lambda x: f"{x:g}"),
    st.integers(-2, 40).map(str),
    st.sampled_from(["", " ", "x", "nan", "inf", "1e400", ".5", "1_0", "-0"]),
)
_ENTRY = st.one_of(
    st.tuples(_NUMBER, _NUMBER).map("@".join),
    _NUMBER,
    st.lists(_NUMBER, min_size=3, max_size=3).map("@".join),
)
_MULTIPLIER = st.lists(_ENTRY, min_size=1, max_size=5).flatmap(
    lambda entries: st.lists(
        st.sampled_from([",", ";"]), min_size=len(entries) - 1, max_size=len(entries) - 1
    ).map(lambda seps: entries[0] + "".join(s + e for s, e in zip(seps, entries[1:], strict=True)))
)
_ARGUMENT = st.one_of(
    _MULTIPLIER,
    st.tuples(st.sampled_from(["te", "unet", "hr", "hrte", "hrunet", "dyn", "x"]), _MULTIPLIER).map(
        "=".join
    ),
)
_TAG = st.lists(_ARGUMENT, max_size=4).map(lambda args: "<lora:" + ":".join(["n", *args]) + ">")


@settings(max_examples=200, deadline=None)
@given(_MULTIPLIER, st.integers(0, 60), st.integers(1, 60))
@example("0@0,1@0.5", 9, 20)
def test_lenient_reading_never_raises_and_stays_within_the_points(
    text: str, step: int, steps: int
) -> None:
    schedule = weight_schedule(text)
    value = schedule.at(step, steps)
    finite = [w for w in schedule.weights if math.isfinite(w)]
    if len(finite) == len(schedule.weights):
        assert min(finite) - 1e-9 <= value <= max(finite) + 1e-9
    try:
        strict = weight_schedule(text, strict=True)
    except PromptSyntaxError as error:
        assert 0 <= error.pos <= len(text)
    else:
        assert repr(strict) == repr(schedule)  # NaN weights compare by their text


@settings(max_examples=100, deadline=None)
@given(st.lists(_TAG, max_size=3), st.integers(1, 40), st.sampled_from([1, 2]), st.booleans())
def test_lenient_tags_never_raise(tags: list[str], steps: int, order: int, hires: bool) -> None:
    text = "a cat " + " ".join(tags)
    loras = lora_schedules(text)
    assert len(loras) == len(tags)
    table = weights_per_call(loras, steps, order=order, hires=hires)
    assert len(table) == steps * order
    promptweights.parse(text)
    explain(text, steps=steps)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-2, 2, allow_nan=False), st.integers(0, 12)), min_size=1, max_size=5
    ),
    st.floats(0, 14, allow_nan=False),
)
def test_interpolation_equals_numpy_interp(points: list[tuple[float, int]], x: float) -> None:
    np = pytest.importorskip("numpy")
    # Absolute steps (the largest > 1) so that `at` interpolates at the step it is given.
    points = [*points, (0.5, 13)]
    text = ",".join(f"{w!r}@{s}" for w, s in points)
    schedule = weight_schedule(text, strict=True)
    ordered = sorted(points, key=lambda p: p[1])
    expected = np.interp(x, [s for _, s in ordered], [w for w, _ in ordered])
    from promptweights.lora_schedules import _interp

    assert schedule.steps is not None
    assert _interp(x, schedule.steps, schedule.weights) == pytest.approx(float(expected), abs=1e-9)
