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
    assert plan.unsupported == ("Hires upscale", "ControlNet 0")  # NGMS, Skip Early CFG: run
    assert plan.a1111.seeds.resize_from == (64, 64)
    assert plan.a1111.seeds.eta_noise_seed_delta == 31337
    assert plan.a1111.s_min_uncond == 2.0
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


_CFG_CASES = [
    ("Euler", {"NGMS": 5.0}, "a red cat"),
    ("Euler a", {"NGMS": 2.0, "NGMS all steps": "True"}, "a red cat"),
    ("DPM++ 2M", {"Skip Early CFG": 0.4}, "a red cat"),
    ("Euler", {}, "a red cat AND a dog:0.6"),
    ("Heun", {"Skip Early CFG": 0.3, "NGMS": 3.0}, "a cat AND a [red:blue:0.5] dog:0.5"),
]


def _step_latents(latents: list[torch.Tensor], second_order: bool) -> list[torch.Tensor]:
    """The latents after each sampler step, from those after each model call: a second-order
    step (Heun) calls twice, its last step (to σ = 0) once."""
    if not second_order:
        return latents
    return [*latents[1:-1:2], latents[-1]]


@pytest.mark.parametrize(("sampler", "extra", "prompt"), _CFG_CASES)
def test_from_infotext_runs_a1111_cfg_options_in_the_pipeline(
    pipe: Any, sampler: str, extra: dict[str, Any], prompt: str
) -> None:
    """NGMS, NGMS all steps, Skip Early CFG and AND with weights in the pipeline's own loop:
    the latents after each step equal run.sample's (A1111's CFG denoiser, checked against the
    k-diffusion reference in test_a1111_sampling.py) within 1e-5, and differ from a run without
    the option."""
    from promptweights.a1111.plan import read_settings
    from promptweights.diffusers import from_infotext, plan_rerun

    steps = 3
    params = GenerationParameters.from_settings(
        prompt,
        "blurry",
        {"Steps": steps, "Sampler": sampler, "CFG scale": 5, "Seed": 21, "Size-1": 16}
        | {"Size-2": 16, "RNG": "CPU", **extra},
    )
    assert plan_rerun(params).unsupported == ()
    saved = pipe.scheduler
    calls: list[torch.Tensor] = []

    def keep(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        calls.append(kw["latents"].clone())
        return {}

    hooks = len(pipe.unet._forward_pre_hooks)
    try:
        kwargs = from_infotext(pipe, params)
        assert "callback_on_step_end" not in kwargs
        pipe(**kwargs, output_type="latent", callback_on_step_end=keep)
        assert len(pipe.unet._forward_pre_hooks) == hooks + 1  # stays for another run
    finally:
        pipe.scheduler = saved
    pipe.unet(  # under another scheduler the hooks remove themselves, doing nothing
        calls[0], torch.tensor(1), encoder_hidden_states=kwargs["prompt_embeds"]
    )
    assert len(pipe.unet._forward_pre_hooks) == hooks
    choice = plan_rerun(params).sampler
    settings = read_settings(params, choice)
    cond = encode(pipe, prompt, "blurry", steps=steps, second_order=choice.second_order)
    loop: list[torch.Tensor] = []
    common: dict[str, Any] = {"sampler": choice, "steps": steps, "cfg_scale": 5.0}
    common |= {"width": 16, "height": 16}
    seeds = Seeds((21,), source="CPU")
    sample(
        pipe,
        cond,
        seeds,
        on_step=lambda step: loop.append(step.x.clone()),
        s_min_uncond=settings.s_min_uncond,
        s_min_uncond_all=settings.s_min_uncond_all,
        skip_early_cfg=settings.skip_early_cfg,
        **common,
    )
    ours = _step_latents(calls, choice.second_order)
    assert len(ours) == len(loop) == steps
    for step, (a, b) in enumerate(zip(ours, loop, strict=True)):
        # the pipeline guides the noise prediction, A1111 the denoised latents: float rounding
        diff = (a.float() - b).abs().max().item()
        assert diff <= 1e-5 * b.abs().max().item(), f"step {step}: max difference {diff}"
    if extra:  # the options change the picture far beyond that rounding
        plain = sample(pipe, cond, seeds, **common)
        assert (plain - loop[-1]).abs().max().item() > 1e-2
