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
    _read,
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
    problems = _read(text).problems
    if problems:
        with pytest.raises(PromptSyntaxError) as caught:
            weight_schedule(text, strict=True)
        assert caught.value.pos == problems[0][0]
        assert 0 <= caught.value.pos <= len(text)
    else:
        strict = weight_schedule(text, strict=True)
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


# --- at run time, on the tiny SD1 pipeline ------------------------------------------------------


@pytest.fixture(scope="module")
def ink_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_diffusers import write_lora

    folder = tmp_path_factory.mktemp("loractl")
    write_lora(folder, "ink")
    return folder


@pytest.fixture(scope="module")
def sd1() -> Any:
    from _tiny_pipelines import tiny_sd1

    return tiny_sd1()


def _lora_layer(pipe: Any) -> Any:
    return next(m for n, m in pipe.unet.named_modules() if n.endswith("attn1.to_q"))


def scales_seen(pipe: Any, cond: Any, steps: int) -> list[float]:
    """The adapter's UNet scale at each denoiser call of a run with ``cond``."""
    import torch

    layer = _lora_layer(pipe)
    seen: list[float] = []
    with cond.attach(pipe):  # the recorder runs after the AND hook, if any
        handle = pipe.unet.register_forward_pre_hook(
            lambda module, args: seen.append(float(layer.scaling["pw_ink"]))
        )
        try:
            pipe(
                **cond.pipeline_kwargs(),
                height=16,
                width=16,
                output_type="pt",
                generator=torch.Generator().manual_seed(0),
            )
        finally:
            handle.remove()
    assert len(seen) == steps
    return seen


def _encode(pipe: Any, prompt: str, ink_dir: Path, **kwargs: Any) -> Any:
    from promptweights.diffusers import encode

    return encode(pipe, prompt, "sky", lora_dir=ink_dir, exact=True, **kwargs)


def _which(seen: list[Any], options: dict[str, Any]) -> str:
    import torch

    names = []
    for s in seen:
        found = [n for n, e in options.items() if torch.allclose(s, e, rtol=0, atol=1e-6)]
        names.append(found[0] if len(found) == 1 else "?")
    return " ".join(names)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_unet_weight_follows_the_schedule_at_each_call(sd1: Any, ink_dir: Path) -> None:
    # te fixed at 1: one encoding, the step callback sets the UNet weight. Calls see steps
    # 0, 0, 1, 2, 3, 4 (A1111's callback); fractions are of 6 - 2 = 4 steps.
    cond = _encode(sd1, "a cat <lora:ink:1:0@0,1@0.5>", ink_dir, steps=6)
    assert not cond.edits
    assert "callback_on_step_end" in cond.pipeline_kwargs()
    assert scales_seen(sd1, cond, 6) == [0.0, 0.0, 0.5, 1.0, 1.0, 1.0]
    # Absolute steps, linear between them; a second run starts over (the run ends at call 0's).
    cond = _encode(sd1, "a cat <lora:ink:1:0@0,1@4>", ink_dir, steps=6)
    assert scales_seen(sd1, cond, 6) == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0]
    assert scales_seen(sd1, cond, 6) == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0]
    # AND prompts: the AND hook sets it per call instead of the callback.
    cond = _encode(sd1, "a cat AND a dog:0.5 <lora:ink:1:0@2,1@3>", ink_dir, steps=5)
    assert scales_seen(sd1, cond, 5) == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert float(_lora_layer(sd1).scaling["pw_ink"]) == 0.0


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_te_schedule_re_encodes_exactly_where_the_te_weight_changes(
    sd1: Any, ink_dir: Path
) -> None:
    from test_diffusers import conds_seen

    fixed = {
        name: _encode(sd1, f"a {animal} <lora:ink:{te}:0.5>", ink_dir).prompt_embeds
        for name, animal, te in [
            ("cat0", "cat", 0),
            ("cat1", "cat", 1),
            ("dog0", "dog", 0),
            ("dog1", "dog", 1),
        ]
    }
    # te: absolute steps 2 -> 3, so calls 0-3 (steps 0, 0, 1, 2) at 0 and calls 4-5 at 1; the
    # edit [cat:dog:2] shows cat at calls 0-2.
    cond = _encode(sd1, "a [cat:dog:2] <lora:ink:te=0@2,1@3:unet=0.5>", ink_dir, steps=6)
    assert cond.edits
    assert cond._timeline.lora is not None
    assert len(cond._timeline.lora.te_sets) == 2  # two encodings, not one per call
    expected = "cat0 cat0 cat0 dog0 dog1 dog1"
    assert _which([cond.at_call(k)["prompt_embeds"] for k in range(6)], fixed) == expected
    assert _which(conds_seen(sd1, cond, 6), fixed) == expected
    assert scales_seen(sd1, cond, 6) == [0.5] * 6


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_schedules_need_steps_and_finite_weights(sd1: Any, ink_dir: Path) -> None:
    from promptweights.errors import (
        InvalidArgumentError,
        InvalidWeightError,
        PromptweightsWarning,
    )

    with pytest.raises(InvalidArgumentError, match="steps="):
        _encode(sd1, "a cat <lora:ink:0@0,1@1>", ink_dir)
    prompt = "a cat <lora:ink:1:0@0,1e9@1>"
    with pytest.raises(InvalidWeightError) as caught:
        _encode(sd1, prompt, ink_dir, steps=4)
    assert caught.value.pos == prompt.index("<lora")
    prompt = "a cat <lora:ink:1:0@0,x@1,1@2>"
    with pytest.raises(PromptSyntaxError) as syntax:
        _encode(sd1, prompt, ink_dir, steps=4, strict=True)
    assert syntax.value.pos == prompt.index("x@1")
    with pytest.warns(PromptweightsWarning, match="left out"):
        cond = _encode(sd1, prompt, ink_dir, steps=4)
    assert scales_seen(sd1, cond, 4) == [0.0, 0.0, 0.5, 1.0]


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_hires_pass_uses_the_hr_weights(sd1: Any, ink_dir: Path) -> None:
    import torch

    ours = _encode(sd1, "a cat <lora:ink:0.5:hr=1>", ink_dir, steps=4, hires_steps=3)
    plain = _encode(sd1, "a cat <lora:ink:1>", ink_dir, steps=3)
    torch.testing.assert_close(ours.prompt_embeds, plain.prompt_embeds, rtol=0, atol=1e-6)
    first = _encode(sd1, "a cat <lora:ink:0.5:hr=1>", ink_dir, steps=4)
    assert not torch.allclose(first.prompt_embeds, plain.prompt_embeds)


# --- explain ------------------------------------------------------------------------------------


def test_explain_lists_the_weights_per_call() -> None:
    text = "a cat <lora:ink:0@0,1@0.5> <lora:b:0.7:unet=1@0,0@5>"
    out = explain(text, steps=6)
    lines = out.splitlines()
    start = lines.index("calls  ink te  ink unet  b te  b unet")
    # Hand-computed: calls see steps 0, 0, 1, 2, 3, 4; ink's fractions are of 4 steps, b's unet
    # falls by 0.2 a step.
    rows = [line.split() for line in lines[start + 2 : start + 7]]
    assert rows == [
        ["0-1", "0", "0", "0.7", "1"],
        ["2", "0.5", "0.5", "0.7", "0.8"],
        ["3", "1", "1", "0.7", "0.6"],
        ["4", "1", "1", "0.7", "0.4"],
        ["5", "1", "1", "0.7", "0.2"],
    ]
    assert "lora  ink   0@0,1@0.5  0@0,1@0.5" in out
    assert "per sampler call" not in explain("a cat <lora:ink:0.5>", steps=6)


def test_cli_strict_points_at_the_bad_entry(capsys: pytest.CaptureFixture[str]) -> None:
    from promptweights.cli import main

    assert main(["explain", "a <lora:ink:0@0,x@1>", "--strict"]) == 2
    assert "column 17" in capsys.readouterr().err
    assert main(["explain", "a <lora:ink:0@0,1@1>", "--steps", "4"]) == 0
    assert "0-1    0       0" in capsys.readouterr().out


def test_the_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## LoRA weight schedules (loractl)", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "2 (0.5, 1.0) (0.5, 0.8)"  # as its comment says


_FINITE = st.floats(-2, 2, allow_nan=False).map(lambda x: f"{x:.3g}")
_POINT = st.one_of(
    st.tuples(_FINITE, st.sampled_from(["0", "0.5", "1", "2", "5", "x", ""])).map("@".join),
    st.sampled_from(["", "oops", "1@2@3"]),
)
_SCHEDULE = st.lists(_POINT, min_size=1, max_size=3).map(",".join)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@settings(max_examples=6, deadline=None)
@given(
    te=_SCHEDULE,
    unet=_SCHEDULE,
    edit=st.booleans(),
    steps=st.integers(1, 5),
)
def test_lenient_encode_and_run_never_raise(
    sd1: Any, ink_dir: Path, te: str, unet: str, edit: bool, steps: int
) -> None:
    import warnings

    from promptweights.errors import PromptweightsWarning

    prompt = f"a {'[cat:dog:2]' if edit else 'cat'} <lora:ink:te={te}:unet={unet}>"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptweightsWarning)
        cond = _encode(sd1, prompt, ink_dir, steps=steps)
    expected = [
        lora.at(lora_step(k), steps)[1] for lora in lora_schedules(prompt) for k in range(steps)
    ]
    assert scales_seen(sd1, cond, steps) == pytest.approx(expected, abs=1e-6)
