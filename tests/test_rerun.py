"""Re-running an image from its infotext (issue 5): scheduler, kwargs, and a bit-for-bit rerun."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_pipelines import tiny_sd1
from PIL import Image

from promptweights.diffusers import encode, from_infotext, plan_rerun
from promptweights.errors import (
    PromptweightsWarning,
    UnknownNameError,
    UnreproducibleError,
    UnsupportedPipelineError,
)
from promptweights.infotext import GenerationParameters, save_image

PROMPT = "a (red:1.3) [circle:square:0.5], [blue] background"


def _params(**settings: object) -> GenerationParameters:
    base = {"Steps": 4, "Sampler": "Euler", "CFG scale": 5, "Seed": 11, "Size-1": 32, "Size-2": 32}
    base.update(settings)
    return GenerationParameters.from_settings(PROMPT, "blurry", base)


def _image(pipe: object, **kwargs: object) -> np.ndarray:
    out = pipe(**kwargs, output_type="pil")  # type: ignore[operator]
    return np.asarray(out.images[0])


def test_plan_reads_sampler_strategy_clip_skip_and_unsupported() -> None:
    params = _params(**{"Clip skip": 2, "Emphasis": "No norm", "Hires upscale": 2})
    plan = plan_rerun(params, match="diffusers")
    assert plan.sampler.scheduler_class == "EulerDiscreteScheduler"
    assert (plan.steps, plan.strategy, plan.clip_skip) == (4, "a1111-no-norm", 1)
    assert plan.unsupported == ("Hires upscale",)


def test_unknown_or_unsupported_samplers_fail_before_any_model_work() -> None:
    with pytest.raises(UnknownNameError):
        plan_rerun(_params(Sampler="Nonsense"))
    with pytest.raises(UnsupportedPipelineError, match="DPM fast"):
        plan_rerun(_params(Sampler="DPM fast"))


def test_rerun_from_png_is_bit_for_bit(tmp_path: Path) -> None:
    pipe = tiny_sd1()
    params = _params()
    # The original run: promptweights conditioning, Euler, seed 11 on a CPU generator.
    from promptweights.samplers import build_scheduler

    pipe.scheduler = build_scheduler(params.sampler_choice(), pipe.scheduler.config)
    cond = encode(pipe, PROMPT, "blurry", steps=4)
    first = _image(
        pipe,
        **cond.pipeline_kwargs(),  # num_inference_steps=4
        guidance_scale=5.0,
        width=32,
        height=32,
        generator=torch.Generator("cpu").manual_seed(11),
    )
    path = tmp_path / "image.png"
    save_image(Image.fromarray(first), path, params)

    fresh = tiny_sd1()  # the same model, with its own default scheduler
    kwargs = from_infotext(fresh, str(path), match="diffusers")
    assert type(fresh.scheduler).__name__ == "EulerDiscreteScheduler"
    assert kwargs["num_inference_steps"] == 4
    assert kwargs["guidance_scale"] == 5.0
    assert "callback_on_step_end" in kwargs  # the edit switches at run time
    again = _image(fresh, **kwargs)
    assert np.array_equal(first, again)


def test_settings_that_cannot_be_reproduced_warn_or_raise() -> None:
    pipe = tiny_sd1()
    before = pipe.scheduler
    params = _params(**{"Hires upscale": 2})
    with pytest.raises(UnreproducibleError, match="not 64x64"):
        from_infotext(pipe, params, strict=True, match="diffusers")
    assert pipe.scheduler is before  # strict fails before anything is touched
    with pytest.warns(PromptweightsWarning, match="rendered at the first pass's 32x32, not 64x64"):
        kwargs = from_infotext(pipe, params, match="diffusers")
    assert (kwargs["width"], kwargs["height"]) == (32, 32)


def test_failed_rerun_leaves_the_scheduler_alone() -> None:
    pipe = tiny_sd1()
    before = pipe.scheduler
    with pytest.raises(UnsupportedPipelineError, match="AND"):
        from_infotext(
            pipe,
            GenerationParameters.from_settings(
                "a AND b", "", {"Steps": 4, "Sampler": "Euler", "CFG scale": 5, "Seed": 1}
            ),
            match="diffusers",
        )
    assert pipe.scheduler is before


def test_explicit_sigmas_for_schedules_diffusers_lacks() -> None:
    pipe = tiny_sd1()
    params = _params(Sampler="Euler", **{"Schedule type": "Polyexponential"})
    kwargs = from_infotext(pipe, params, match="diffusers")
    assert len(kwargs["sigmas"]) == 5  # steps + the final 0
