"""from_infotext and plan_rerun with A1111's sampling (issue 18, part 4), without k-diffusion.

tests/test_a1111_sampling.py checks promptweights.a1111.run.sample step by step against
k-diffusion; here the pipeline path (A1111Scheduler inside the pipeline's own loop) is checked
against run.sample, and plan_rerun's list of what still cannot match.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _tiny_pipelines import tiny_sd1_sd15_schedule

from promptweights.a1111.run import Seeds, sample
from promptweights.a1111.samplers import Options, Step
from promptweights.diffusers import encode
from promptweights.infotext import GenerationParameters


@pytest.fixture(scope="module")
def pipe() -> Any:
    return tiny_sd1_sd15_schedule()


def _infotext(sampler: str, **extra: object) -> Any:
    settings = {"Steps": 3, "Sampler": sampler, "CFG scale": 5, "Seed": 21, "Size-1": 16}
    settings.update({"Size-2": 16, "RNG": "CPU", **extra})
    return GenerationParameters.from_settings("a red cat", "blurry", settings)


def _encode(pipe: Any, steps: int, second_order: bool = False) -> Any:
    return encode(
        pipe, ["a [red:blue:0.5] cat"] * 2, ["blurry"] * 2, steps=steps, second_order=second_order
    )


def _final(pipe: Any, cond: Any, sampler: str, **kw: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []

    def keep(step: Step) -> None:
        out.append(step.x.clone())

    sample(
        pipe,
        cond,
        Seeds((8, 9), source="CPU"),
        sampler=sampler,
        steps=3,
        cfg_scale=5.0,
        width=16,
        height=16,
        on_step=keep,
        **kw,
    )
    return out


def test_options_reach_the_sampler(pipe: Any) -> None:
    """Sigma churn draws from the image RNG each step and moves the result."""
    cond = _encode(pipe, 3)
    calm = _final(pipe, cond, "Euler")
    churned = _final(pipe, cond, "Euler", options=Options(s_churn=1.0))
    assert (calm[-1] - churned[-1]).abs().max() > 1e-3


@pytest.mark.parametrize("sampler", ["DPM++ SDE", "DDIM", "PLMS"])
def test_from_infotext_matches_the_a1111_loop(pipe: Any, sampler: str) -> None:
    """DDIM and PLMS in the pipeline's loop; the SDE samplers' Brownian noise with CUDA's numbers
    (NV), A1111's on an NVIDIA GPU: the pipeline call equals run.sample (checked step by step
    against the reference above) up to the guidance formula's rounding."""
    from promptweights.diffusers import from_infotext

    saved = pipe.scheduler
    try:
        kwargs = from_infotext(pipe, _infotext(sampler))
        ours = pipe(**kwargs, output_type="latent").images
    finally:
        pipe.scheduler = saved
    cond = encode(pipe, "a red cat", "blurry", steps=3)
    seeds = Seeds((21,), source="CPU", brownian_device="NV")
    loop = sample(pipe, cond, seeds, sampler=sampler, steps=3, cfg_scale=5.0, width=16, height=16)
    assert (ours - loop).abs().max().item() <= 5e-5 * loop.abs().max().item()


def test_plan_lists_what_a1111_sampling_still_cannot_match() -> None:
    from promptweights.diffusers import plan_rerun

    params = _infotext(
        "Euler a",
        **{
            "Hires upscale": 2,
            "NGMS": 2.0,
            "Skip Early CFG": 0.2,
            "Seed resize from": "64x64",
            "ENSD": 31337,
            "ControlNet 0": "Module: canny",
        },
    )
    plan = plan_rerun(params)
    assert plan.match == "a1111"
    assert plan.unsupported == ("Hires upscale", "NGMS", "Skip Early CFG", "ControlNet 0")
    assert plan.a1111.seeds.resize_from == (64, 64)
    assert plan.a1111.seeds.eta_noise_seed_delta == 31337
    assert any("guidance step cannot skip the uncond" in w for w in plan.warnings())
    assert plan.a1111.seeds.seeds == (21,)
    assert plan.a1111.skip_early_cfg == 0.2
    assert plan_rerun(params, match="diffusers").match == "diffusers"
    ddim = plan_rerun(_infotext("DDIM", **{"Eta DDIM": 0.5}))
    assert ddim.unsupported == ("Eta DDIM",)  # its noise follows an ENSD A1111 does not write
    assert ddim.a1111.options.eta == 0.5


def test_from_infotext_on_sdxl_starts_from_a1111_noise_and_reruns() -> None:
    """SDXL: the pipeline brings its pooled and size conditioning; the sampling is A1111's."""
    from _tiny_pipelines import tiny_sdxl

    from promptweights.a1111.rng import ImageRNG
    from promptweights.a1111.scheduler import A1111Scheduler
    from promptweights.diffusers import from_infotext

    xl = tiny_sdxl()
    xl.set_progress_bar_config(disable=True)
    params = _infotext("DPM++ 2M", **{"Size-1": 32, "Size-2": 32})
    runs = []
    for _ in range(2):  # the second run reads the model's betas from the A1111 scheduler
        kwargs = from_infotext(xl, params)
        assert isinstance(xl.scheduler, A1111Scheduler)
        expected = ImageRNG((4, 16, 16), [21], source="CPU").first()
        assert torch.equal(kwargs["latents"], expected)
        runs.append(xl(**kwargs, output_type="latent").images)
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], kwargs["latents"] * xl.scheduler.init_noise_sigma)


def test_a1111_sampling_refuses_what_it_cannot_run(pipe: Any) -> None:
    from _tiny_pipelines import tiny_sd1

    from promptweights.diffusers import from_infotext, plan_rerun
    from promptweights.errors import UnsupportedPipelineError

    with pytest.raises(UnsupportedPipelineError, match="Restart"):
        plan_rerun(_infotext("Restart"))
    with pytest.raises(UnsupportedPipelineError, match="LCM"):
        plan_rerun(_infotext("LCM", **{"Schedule type": "Align Your Steps"}))
    img2img = tiny_sd1(img2img=True)
    before = img2img.scheduler
    with pytest.raises(UnsupportedPipelineError, match="image-to-image"):
        from_infotext(img2img, _infotext("Euler"))
    assert img2img.scheduler is before
