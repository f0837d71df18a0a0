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
    before = pipe.scheduler
    settings = {"Steps": 2, "Sampler": "Euler", "CFG scale": 1, "Seed": 1, "RNG": "CPU"}
    no_uncond = GenerationParameters.from_settings("a AND b:0.5", "c", settings)
    with pytest.raises(UnsupportedPipelineError, match="CFG scale 1"):
        from_infotext(pipe, no_uncond)
    assert pipe.scheduler is before
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
    ("Euler a", {"SGM noise multiplier": "True"}, "a red cat"),
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
    """NGMS, NGMS all steps, Skip Early CFG, AND with weights (and the SGM noise multiplier)
    in the pipeline's own loop:
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
        hooked = bool(extra.keys() & {"NGMS", "Skip Early CFG"}) or " AND " in prompt
        assert len(pipe.unet._forward_pre_hooks) == hooks + hooked  # stays for another run
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
        sgm_noise_multiplier=settings.sgm_noise_multiplier,
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


# Keys A1111 v1.10.1 itself writes (modules/processing.py, sd_samplers_*.py, sd_schedulers via
# get_sigmas, extra networks, refiner), transcribed from its sources, with the reason a txt2img
# re-run with the same model cannot match them (None: it reproduces them or they change nothing).
A1111_KEYS: dict[str, str | None] = {
    "Schedule type": None,
    "Image CFG scale": "InstructPix2Pix",
    "Face restoration": "face restoration",
    "Model hash": None,
    "Model": None,
    "FP8 weight": "float8",
    "Cache FP16 weight for LoRA": None,
    "VAE hash": None,
    "VAE": None,
    "Denoising strength": "img2img",
    "Conditional mask weight": "inpainting model",
    "Clip skip": None,
    "Token merging ratio": "token merging",
    "Init image hash": "img2img",
    "Tiling": "tiling",
    "Hires upscale": "hires",
    "Hires resize": "hires",
    "Hires steps": "hires",
    "Hires upscaler": "hires",
    "Hires checkpoint": None,  # comes with Hires upscale/resize, listed for them
    "Hires sampler": None,
    "Hires schedule type": None,
    "Hires prompt": None,
    "Hires negative prompt": None,
    "Lora hashes": None,
    "TI hashes": None,
    "Emphasis": None,
    "Eta": None,
    "Eta DDIM": None,
    "Sigma churn": None,
    "Sigma tmin": None,
    "Sigma tmax": None,
    "Sigma noise": None,
    "Old prompt editing timelines": None,
    "Pad conds": None,
    "Pad conds v0": None,
    "Downcast alphas_cumprod": "downcast",
    "NGMS": None,
    "NGMS all steps": None,
    "Skip Early CFG": None,
    "Discard penultimate sigma": None,
    "Schedule max sigma": None,
    "Schedule min sigma": None,
    "Schedule rho": None,
    "Beta schedule alpha": None,
    "Beta schedule beta": None,
    "SGM noise multiplier": None,
    "Refiner": "refiner",
    "Refiner switch at": None,
    "Hypernet": "hypernetworks",
    "Mask mode": "inpainting",
    "Mask blur": "inpainting",
    "Masked content": "inpainting",
    "Inpaint area": "inpainting",
    "Masked area padding": "inpainting",
    "Noise multiplier": "img2img",
    "Extra noise": "img2img",
    "VAE Encoder": "VAE encoder",
    "VAE Decoder": "VAE decoder",
    "Version": None,
}


def test_plan_knows_every_key_a1111_writes() -> None:
    """Each of A1111's own keys is either reproduced (absent from the list) or listed with its
    own reason, never as an unknown extension's setting; extensions' keys are listed as such."""
    from promptweights.a1111.plan import unreproducible

    values = dict.fromkeys(A1111_KEYS, "2")
    values |= {"Hires resize": "64x64", "Mask mode": "Inpaint not masked", "RNG": "CPU"}
    values["ENSD"] = "31337"  # written: the eta and churn noise follow it
    values |= {"ADetailer model": "face_yolov8n.pt", "ControlNet 0": "Module: canny"}
    params = _infotext("Euler", **values)
    listed = dict(unreproducible(params))
    for key, reason in A1111_KEYS.items():
        if reason is None:
            assert key not in listed, (key, listed.get(key))
        else:
            assert key in listed, key
            assert reason.casefold() in listed[key].casefold(), (key, listed[key])
            assert "an extension's" not in listed[key]
    for key in ("ADetailer model", "ControlNet 0"):
        assert "an extension's" in listed[key]


def test_readme_path_a_png_with_and_and_ngms(pipe: Any, tmp_path: Any) -> None:
    """The README's call on a PNG whose infotext holds AND weights and NGMS: the pipeline's
    final latents equal run.sample's."""
    from PIL import Image

    from promptweights.diffusers import from_infotext, plan_rerun
    from promptweights.infotext import save_image

    prompt = "a red cat AND a dog:0.7"
    text = (
        f"{prompt}\nNegative prompt: blurry\nSteps: 2, Sampler: Euler, CFG scale: 5, Seed: 3, "
        "Size: 16x16, RNG: CPU, NGMS: 20, NGMS all steps: True"
    )
    png = tmp_path / "a1111.png"
    save_image(Image.new("RGB", (16, 16)), png, text)
    assert plan_rerun(str(png)).warnings() == []
    saved = pipe.scheduler
    hooks = len(pipe.unet._forward_pre_hooks)
    try:
        kwargs = from_infotext(pipe, str(png))
        ours = pipe(**kwargs, output_type="latent").images
        assert len(pipe.unet._forward_pre_hooks) == hooks + 1
        # the same A1111 scheduler on another prompt: the hooks see other embeddings and go
        other = {**kwargs, "prompt_embeds": kwargs["prompt_embeds"] + 1.0}
        pipe(**other, output_type="latent")
        assert len(pipe.unet._forward_pre_hooks) == hooks
    finally:
        pipe.scheduler = saved
    cond = encode(pipe, prompt, "blurry", steps=2)
    seeds = Seeds((3,), source="CPU")
    kw: dict[str, Any] = {"sampler": "Euler", "steps": 2, "cfg_scale": 5.0, "width": 16}
    loop = sample(pipe, cond, seeds, height=16, s_min_uncond=20.0, s_min_uncond_all=True, **kw)
    assert (ours - loop).abs().max().item() <= 1e-5 * loop.abs().max().item()
    guided = sample(pipe, cond, seeds, height=16, **kw)
    assert (guided - loop).abs().max().item() > 1e-2  # every call skipped the uncond


LONG = " ".join(["cat"] * 100)  # two 75-token chunks on the tiny tokenizer


def _pipeline_and_loop(
    pipe: Any,
    prompt: str,
    negative: str,
    extra: dict[str, object],
    cfg_scale: float = 5.0,
    **kw: Any,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The pipeline call for an infotext and run.sample for its settings (2 Euler steps): the
    latents after each step equal within 1e-5 of their largest value (the pipeline guides the
    noise prediction, A1111 the denoised latents: float rounding); both final latents."""
    import warnings

    from promptweights.diffusers import from_infotext
    from promptweights.errors import PromptweightsWarning

    settings = {**_settings(), "CFG scale": cfg_scale, **extra}
    saved = pipe.scheduler
    calls: list[torch.Tensor] = []

    def keep(p: Any, i: int, t: Any, step: dict[str, Any]) -> dict[str, Any]:
        calls.append(step["latents"].clone())
        return {}

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PromptweightsWarning)
            kwargs = from_infotext(
                pipe, GenerationParameters.from_settings(prompt, negative, settings)
            )
        pipe(**kwargs, output_type="latent", callback_on_step_end=keep)
    finally:
        pipe.scheduler = saved
    cond = encode(pipe, prompt, negative, steps=2)
    loop: list[torch.Tensor] = []
    sample(
        pipe,
        cond,
        Seeds((1,), source="CPU"),
        sampler="Euler",
        steps=2,
        cfg_scale=cfg_scale,
        width=16,
        height=16,
        on_step=lambda step: loop.append(step.x.clone()),
        **kw,
    )
    assert len(calls) == len(loop) == 2
    for step, (a, b) in enumerate(zip(calls, loop, strict=True)):
        diff = (a.float() - b).abs().max().item()
        assert diff <= 1e-5 * b.abs().max().item(), f"step {step}: max difference {diff}"
    return calls[-1], loop[-1], kwargs


@pytest.mark.parametrize(
    ("extra", "kw"),
    [
        ({}, {}),
        ({"Pad conds": "True"}, {"pad_conds": True}),
        ({"Pad conds v0": "True"}, {"pad_conds_v0": True}),
    ],
    ids=["apart", "pad-conds", "pad-conds-v0"],
)
@pytest.mark.parametrize(
    ("prompt", "negative"), [(LONG, "blurry"), ("a red cat", LONG)], ids=["long-prompt", "long-neg"]
)
def test_unpadded_conds_in_the_pipeline(
    pipe: Any, prompt: str, negative: str, extra: dict[str, object], kw: dict[str, Any]
) -> None:
    """A prompt and negative of different chunk counts: the pipeline call runs them as A1111
    does by default (apart, each at its own length), or as "Pad conds" / "Pad conds v0" pad
    them, without a warning; its latents after each step equal run.sample's (checked against
    the reference in tests/test_a1111_sampling.py), up to the guidance formula's rounding."""
    ours, _, kwargs = _pipeline_and_loop(pipe, prompt, negative, extra, **kw)
    assert kwargs["prompt_embeds"].shape == kwargs["negative_prompt_embeds"].shape
    if "Pad conds" not in extra:  # the padded run is another image
        assert (_padded_loop(pipe, prompt, negative) - ours).abs().max().item() > 1e-3


def test_unpadded_conds_with_and_ngms_and_editing(pipe: Any) -> None:
    """AND (three parts, one of two chunks: the cond rows run in UNet calls of two rows and of
    one) with an edit, then NGMS on odd calls (call 1 skips the uncond): the pipeline call
    equals run.sample step by step."""
    prompt = f"a [red:blue:0.5] cat AND {LONG}:0.5 AND a cow:-0.3"
    plain, _, _ = _pipeline_and_loop(pipe, prompt, "blurry", {})
    ngms, _, _ = _pipeline_and_loop(pipe, prompt, "blurry", {"NGMS": 20}, s_min_uncond=20.0)
    assert (plain - ngms).abs().max().item() > 1e-3


def test_unpadded_conds_without_guidance(pipe: Any) -> None:
    """At CFG scale 1 the pipeline runs the prompt alone: at its own length, as A1111's
    ``u + 1 · (c − u)`` gives it."""
    ours, _, _ = _pipeline_and_loop(pipe, "a red cat", LONG, {}, cfg_scale=1.0)
    padded = _padded_loop(pipe, "a red cat", LONG, cfg_scale=1.0)
    assert (padded - ours).abs().max().item() > 1e-3


def _padded_loop(pipe: Any, prompt: str, negative: str, cfg_scale: float = 5.0) -> torch.Tensor:
    """run.sample's final latents with cond and uncond padded (A1111's "Pad conds")."""
    cond = encode(pipe, prompt, negative, steps=2)
    kw: dict[str, Any] = {"sampler": "Euler", "steps": 2, "width": 16, "height": 16}
    seeds = Seeds((1,), source="CPU")
    return sample(pipe, cond, seeds, cfg_scale=cfg_scale, pad_conds=True, **kw)


def _settings() -> dict[str, object]:
    return {"Steps": 2, "Sampler": "Euler", "CFG scale": 5, "Seed": 1, "RNG": "CPU"} | {
        "Size-1": 16,
        "Size-2": 16,
    }


def test_unpadded_conds_on_sdxl() -> None:
    """SDXL: the UNet runs the one-chunk negative and the two-chunk prompt in calls of their own,
    each with its own rows of the pipeline's pooled and size conditioning."""
    from _tiny_pipelines import tiny_sdxl

    from promptweights.diffusers import from_infotext

    xl = tiny_sdxl()
    xl.set_progress_bar_config(disable=True)
    forward = xl.unet.forward
    calls: list[tuple[int, int, int]] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        hidden = kwargs["encoder_hidden_states"]
        text = kwargs["added_cond_kwargs"]["text_embeds"]
        calls.append((hidden.shape[0], hidden.shape[1], text.shape[0]))
        return forward(*args, **kwargs)

    xl.unet.forward = recording
    params = GenerationParameters.from_settings(LONG, "blurry", {**_settings(), "Size-1": 32})
    kwargs = from_infotext(xl, params)
    assert kwargs["prompt_embeds"].shape[1] == 154
    xl(**kwargs, output_type="latent")
    assert calls == [(1, 77, 1), (1, 154, 1)] * 2
