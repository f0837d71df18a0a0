"""promptweights.a1111 samples as A1111 v1.10.1 does (issue 18, parts 2–3).

Each test runs promptweights.a1111.run.sample and a second reading of A1111's algorithm
(tests/_a1111_sampling_reference.py: k-diffusion from PyPI, A1111's seed rules) on the same tiny
SD1.5-shaped UNet or the toy model, and compares the latents after every step within 1e-5.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import torch

if importlib.util.find_spec("k_diffusion") is None:  # the package's __init__ imports too much
    pytest.skip("k-diffusion is not installed", allow_module_level=True)

from _a1111_sampling_reference import (
    CompVisModel,
    ReferenceCFG,
    ReferenceRNG,
    TorchHijack,
    a1111_torchsde,
    ldm_alphas_cumprod,
    load_k_diffusion,
    reference_ddim,
    reference_plms,
)
from _a1111_schedule_reference import a1111_sigmas
from _tiny_pipelines import tiny_sd1_sd15_schedule

from promptweights.a1111.run import Seeds, sample
from promptweights.a1111.samplers import Step
from promptweights.diffusers import encode

SAMPLING, EXTERNAL = load_k_diffusion()
TOLERANCE = 1e-5

# A1111's table: sampler → (k-diffusion function, default schedule, discard, brownian, extra).
K_SAMPLERS: dict[str, tuple[str, str, bool, bool, dict[str, Any]]] = {
    "Euler": ("sample_euler", "uniform", False, False, {}),
    "Euler a": ("sample_euler_ancestral", "uniform", False, False, {"eta": 1.0}),
    "LMS": ("sample_lms", "uniform", False, False, {}),
    "Heun": ("sample_heun", "uniform", False, False, {}),
    "DPM2": ("sample_dpm_2", "karras", True, False, {}),
    "DPM2 a": ("sample_dpm_2_ancestral", "karras", True, False, {"eta": 1.0}),
    "DPM++ 2S a": ("sample_dpmpp_2s_ancestral", "karras", False, False, {"eta": 1.0}),
    "DPM++ 2M": ("sample_dpmpp_2m", "karras", False, False, {}),
    "DPM++ SDE": ("sample_dpmpp_sde", "karras", False, True, {"eta": 1.0}),
    "DPM++ 2M SDE": ("sample_dpmpp_2m_sde", "exponential", False, True, {"eta": 1.0}),
    "DPM++ 3M SDE": ("sample_dpmpp_3m_sde", "exponential", True, True, {"eta": 1.0}),
    "DPM++ 2M SDE Heun": (
        "sample_dpmpp_2m_sde",
        "exponential",
        False,
        True,
        {"eta": 1.0, "solver_type": "heun"},
    ),
}


def _beta_ppf(q: float) -> float:
    """Beta(0.6, 0.6)'s quantile as A1111 computes it (scipy), for the Beta schedule."""
    stats = pytest.importorskip("scipy.stats")
    return float(stats.beta.ppf(q, 0.6, 0.6))


SECOND_ORDER = {"Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ SDE"}  # A1111's flags


@pytest.fixture(scope="module")
def pipe() -> Any:
    return tiny_sd1_sd15_schedule()


@pytest.fixture(scope="module")
def toy() -> Any:
    from promptweights.toy import load_pipeline

    return load_pipeline()


def _shape(pipe: Any, size: int) -> tuple[int, int, int]:
    return (
        pipe.unet.config.in_channels,
        size // pipe.vae_scale_factor,
        size // pipe.vae_scale_factor,
    )


def _conds_from(cond: Any) -> Any:
    """The reference's conds at call k, read from the conditioning's public per-call view and, for
    AND, from each image's parts."""
    timeline = cond._timeline

    def at(k: int) -> tuple[list[list[tuple[int, float]]], torch.Tensor, torch.Tensor]:
        rows, conds_list = [], []
        for image, parts in enumerate(timeline.parts):
            entry = []
            for j, part in enumerate(parts):
                entry.append((len(rows), part.weight))
                # A1111's run-time lookup: the first schedule entry whose end is >= call k.
                index = next((n for n, end in enumerate(part.ends) if k <= end), -1)
                rows.append(timeline.part_embeds[image][j][index])
            conds_list.append(entry)
        return conds_list, torch.stack(rows), cond.at_call(k)["negative_prompt_embeds"]

    return at


def _reference_k(
    pipe: Any,
    cond: Any,
    name: str,
    schedule: str | None,
    steps: int,
    seeds: list[int],
    size: int,
    *,
    subseeds: list[int] = (),  # type: ignore[assignment]
    strength: float = 0.0,
    ensd: int = 0,
    cfg: float = 5.0,
    source: str = "CPU",
    sgm: bool = False,
    pad: str = "",
    empty: torch.Tensor | None = None,
    **cfg_opts: float,
) -> list[torch.Tensor]:
    func, default, discard, brownian, extra = K_SAMPLERS[name]
    model = CompVisModel(pipe.unet, ldm_alphas_cumprod(pipe.scheduler.config))
    v = pipe.scheduler.config.get("prediction_type") == "v_prediction"
    wrap = (EXTERNAL.CompVisVDenoiser if v else EXTERNAL.CompVisDenoiser)(model)
    n = steps + 1 if discard else steps
    sigmas = a1111_sigmas(schedule or default, n, wrap, SAMPLING, ppf=_beta_ppf)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    rng = ReferenceRNG(_shape(pipe, size), seeds, list(subseeds), strength, ensd, source)
    # A1111's "SGM noise multiplier" scales the first noise by sqrt(1 + σ0²) instead of σ0
    x = rng.next() * (torch.sqrt(1.0 + sigmas[0] ** 2.0) if sgm else sigmas[0])
    total = 2 * steps if name in SECOND_ORDER else steps
    conds = cond if callable(cond) else _conds_from(cond)
    denoiser = ReferenceCFG(wrap, conds, cfg, total, pad=pad, empty=empty, **cfg_opts)
    SAMPLING.torch = TorchHijack(rng)
    latents: list[torch.Tensor] = []
    try:
        with torch.no_grad(), a1111_torchsde():
            if brownian:
                lo, hi = sigmas[sigmas > 0].min(), sigmas.max()
                extra = {
                    **extra,
                    "noise_sampler": SAMPLING.BrownianTreeNoiseSampler(x, lo, hi, seed=seeds),
                }
            final = getattr(SAMPLING, func)(
                denoiser,
                x,
                sigmas,
                callback=lambda d: latents.append(d["x"]),
                disable=True,
                **extra,
            )
    finally:
        SAMPLING.torch = torch
    return [*latents[1:], final]


def _ours(
    pipe: Any, cond: Any, sampler: Any, steps: int, seeds: list[int], size: int, **kw: Any
) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []

    def keep(step: Step) -> None:
        out.append(step.x.clone())

    final = sample(
        pipe,
        cond,
        Seeds(tuple(seeds), **kw.pop("seeds_kw", {})),
        sampler=sampler,
        steps=steps,
        width=size,
        height=size,
        on_step=keep,
        **kw,
    )
    assert torch.equal(final, out[-1])
    return out


def _assert_close(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        diff = (a - b).abs().max().item()
        assert diff <= TOLERANCE, f"step {step}: max difference {diff}"


def _encode(
    pipe: Any, sampler: str, steps: int, prompt: str = "a [red:blue:0.5] cat", batch: int = 2
) -> Any:
    return encode(
        pipe,
        [prompt] * batch,
        ["blurry"] * batch,
        steps=steps,
        second_order=sampler in SECOND_ORDER,
    )


_VARIANTS = [(name, False) for name in sorted(K_SAMPLERS)] + [
    (name, True) for name in sorted(K_SAMPLERS) if K_SAMPLERS[name][1] != "karras"
]  # "DPM2 Karras" is DPM2's default schedule: run once


@pytest.mark.parametrize(("sampler", "karras"), _VARIANTS)
def test_k_samplers_match_k_diffusion_per_step(pipe: Any, sampler: str, karras: bool) -> None:
    steps, seeds = (4 if sampler == "DPM++ 3M SDE" else 3), [11, 12]  # 3M: its third order too
    cond = _encode(pipe, sampler, steps)
    name = f"{sampler} Karras" if karras else sampler
    ours = _ours(pipe, cond, name, steps, seeds, 16, seeds_kw={"source": "CPU"}, cfg_scale=5.0)
    theirs = _reference_k(pipe, cond, sampler, "karras" if karras else None, steps, seeds, 16)
    _assert_close(ours, theirs)


# Schedules whose grid a sampler meets in its own way (Simple and Normal are plain σ lists:
# tests/test_a1111_schedules.py covers them).
_SCHEDULE_RUNS = [
    ("Align Your Steps", "Euler", 3),
    ("DDIM", "Euler", 7),  # the table's stride gives 8 σ steps for 7
    ("KL Optimal", "DPM++ 2M", 3),  # ends at σmin, not 0
    ("Beta", "DPM++ SDE", 3),
]


@pytest.mark.parametrize(("schedule", "sampler", "steps"), _SCHEDULE_RUNS)
def test_schedule_types_sample_as_a1111(pipe: Any, schedule: str, sampler: str, steps: int) -> None:
    """A1111 v1.10.1's further schedule types under a sampler, step by step."""
    from promptweights.samplers import resolve

    internal = resolve("Euler", schedule).schedule_name
    cond = _encode(pipe, sampler, steps)
    choice = resolve(sampler, schedule)
    ours = _ours(pipe, cond, choice, steps, [5, 6], 16, seeds_kw={"source": "CPU"}, cfg_scale=5.0)
    theirs = _reference_k(pipe, cond, sampler, internal, steps, [5, 6], 16)
    _assert_close(ours, theirs)


def test_sgm_noise_multiplier(pipe: Any) -> None:
    cond = _encode(pipe, "Euler a", 3)
    kw: dict[str, Any] = {"seeds_kw": {"source": "CPU"}, "cfg_scale": 5.0}
    ours = _ours(pipe, cond, "Euler a", 3, [7, 8], 16, sgm_noise_multiplier=True, **kw)
    _assert_close(ours, _reference_k(pipe, cond, "Euler a", None, 3, [7, 8], 16, sgm=True))
    plain = _reference_k(pipe, cond, "Euler a", None, 3, [7, 8], 16)
    assert (plain[-1] - ours[-1]).abs().max().item() > 1e-3


def test_v_prediction_model(pipe: Any) -> None:
    """SD 2.x-style v prediction: k-diffusion's CompVisVDenoiser scalings."""
    from diffusers import EulerDiscreteScheduler

    saved = pipe.scheduler
    pipe.scheduler = EulerDiscreteScheduler.from_config(
        saved.config, prediction_type="v_prediction"
    )
    try:
        cond = _encode(pipe, "DPM++ 2M", 3)
        kw = {"source": "CPU"}
        ours = _ours(pipe, cond, "DPM++ 2M", 3, [4, 5], 16, seeds_kw=kw, cfg_scale=5.0)
        theirs = _reference_k(pipe, cond, "DPM++ 2M", None, 3, [4, 5], 16)
    finally:
        pipe.scheduler = saved
    _assert_close(ours, theirs)


@pytest.mark.parametrize("sampler", ["DDIM", "PLMS"])
def test_timestep_samplers_match_a1111_loops(pipe: Any, sampler: str) -> None:
    steps, seeds = 3, [5, 6]
    cond = _encode(pipe, sampler, steps)
    ours = _ours(pipe, cond, sampler, steps, seeds, 16, seeds_kw={"source": "CPU"}, cfg_scale=5.0)
    alphas = ldm_alphas_cumprod(pipe.scheduler.config)
    model = CompVisModel(pipe.unet, alphas)
    total = 2 * steps if sampler in SECOND_ORDER else steps
    cfg = ReferenceCFG(
        lambda x, t, cond: model.apply_model(x, t, cond), _conds_from(cond), 5.0, total
    )
    rng = ReferenceRNG(_shape(pipe, 16), seeds, [], 0.0, 0)
    x = rng.next()
    timesteps = torch.clip(torch.arange(0, 1000, 1000 // steps) + 1, 0, 999)
    with torch.no_grad():
        if sampler == "DDIM":
            theirs = reference_ddim(cfg, x, timesteps, alphas, 0.0)
        else:
            theirs = reference_plms(cfg, x, timesteps, alphas)
    _assert_close(ours, theirs)


@pytest.mark.parametrize("source", ["CPU", "NV"])
@pytest.mark.parametrize(
    ("subseeds", "strength", "ensd"),
    [((), 0.0, 0), ((77, 78), 0.3, 0), ((), 0.0, 31337), ((9, 10), 0.6, 31337)],
)
def test_noise_sources_variation_seed_and_ensd(
    pipe: Any, source: str, subseeds: tuple[int, ...], strength: float, ensd: int
) -> None:
    steps, seeds = 3, [100, 101]
    cond = _encode(pipe, "Euler a", steps)
    kw = {
        "source": source,
        "subseeds": subseeds,
        "subseed_strength": strength,
        "eta_noise_seed_delta": ensd,
    }
    ours = _ours(pipe, cond, "Euler a", steps, seeds, 16, seeds_kw=kw, cfg_scale=5.0)
    theirs = _reference_k(
        pipe,
        cond,
        "Euler a",
        None,
        steps,
        seeds,
        16,
        subseeds=list(subseeds),
        strength=strength,
        ensd=ensd,
        source=source,
    )
    _assert_close(ours, theirs)


def test_and_weights_skip_early_cfg_and_ngms(pipe: Any) -> None:
    steps, seeds = 4, [3, 4]
    cond = encode(pipe, ["a cat AND a dog:0.5", "a cow"], ["blurry", "ugly"], steps=steps)
    opts = {"skip_early_cfg": 0.25, "s_min_uncond": 100.0}
    ours = _ours(
        pipe, cond, "Euler", steps, seeds, 16, seeds_kw={"source": "CPU"}, cfg_scale=5.0, **opts
    )
    theirs = _reference_k(pipe, cond, "Euler", None, steps, seeds, 16, **opts)
    _assert_close(ours, theirs)


# --- a prompt and negative of different chunk counts (A1111's "Pad conds" off, on, v0) ----------

LONG = " ".join(["cat"] * 100)  # two 75-token chunks on the tiny tokenizer
_PAD = {"": {}, "empty": {"pad_conds": True}, "v0": {"pad_conds_v0": True}}


def _apart(pipe: Any, prompts: list[str], negatives: list[str], steps: int, **kw: Any) -> Any:
    """The reference's conds at call k, each side encoded with an empty other side (a window
    long, never longer than either side: nothing is padded), as A1111 encodes the prompt and the
    negative apart; one row per text-encoder pass (``exact``), as ours, so that no batch
    composition rounds the embeddings apart."""
    empty = [""] * len(prompts)
    positive = _conds_from(encode(pipe, prompts, empty, steps=steps, exact=True, **kw))
    negative = _conds_from(encode(pipe, empty, negatives, steps=steps, exact=True, **kw))
    return lambda k: (*positive(k)[:2], negative(k)[2])


def _empty_prompt(pipe: Any) -> torch.Tensor:
    """A1111's ``cond_stage_model_empty_prompt``: the empty prompt, encoded (one window)."""
    embeds: torch.Tensor = encode(pipe, "", "", exact=True).prompt_embeds
    assert embeds.shape[1] == 77
    return embeds


@pytest.mark.parametrize("pad", ["", "empty", "v0"])
@pytest.mark.parametrize(
    ("prompt", "negative"), [(LONG, "blurry"), ("a red cat", LONG)], ids=["long-prompt", "long-neg"]
)
def test_cond_and_uncond_of_different_lengths(
    pipe: Any, prompt: str, negative: str, pad: str
) -> None:
    """A1111 v1.10.1 by default runs cond and uncond of different chunk counts apart, each at
    its own length; "Pad conds" pads the shorter with empty chunks, "Pad conds v0" repeats or
    cuts the negative: per step within 1e-5, batch 2 (the conds run as one slice of 2 rows)."""
    steps, seeds = 3, [31, 32]
    cond = encode(pipe, [prompt] * 2, [negative] * 2, steps=steps, exact=True)
    assert cond.prompt_embeds.shape[1] == cond.negative_prompt_embeds.shape[1] == 154
    kw: dict[str, Any] = {"seeds_kw": {"source": "CPU"}, "cfg_scale": 5.0, **_PAD[pad]}
    ours = _ours(pipe, cond, "Euler a", steps, seeds, 16, **kw)
    conds = _apart(pipe, [prompt] * 2, [negative] * 2, steps)
    assert conds(0)[1].shape[1] + conds(0)[2].shape[1] == 231  # 2 chunks and 1
    empty = _empty_prompt(pipe)
    theirs = _reference_k(pipe, conds, "Euler a", None, steps, seeds, 16, pad=pad, empty=empty)
    _assert_close(ours, theirs)
    if pad != "empty":  # running them padded gives another image
        padded_kw = {**kw, "pad_conds": True, "pad_conds_v0": False}
        padded = _ours(pipe, cond, "Euler a", steps, seeds, 16, **padded_kw)
        assert (padded[-1] - ours[-1]).abs().max().item() > 1e-3


def test_unpadded_and_editing_skip_early_cfg_and_ngms(pipe: Any) -> None:
    """Three AND parts (one of two chunks, one edited) per image, two images: six cond rows
    run in slices of four and two, the one-chunk negatives apart; Skip Early CFG and NGMS skip
    the uncond on some calls (the conds alone, at their own length)."""
    steps, seeds = 4, [3, 4]
    prompts = [f"a [red:blue:0.5] cat AND {LONG}:0.5 AND a cow:-0.3", "a cow AND a dog AND a cat"]
    negatives = ["blurry", "ugly"]
    cond = encode(pipe, prompts, negatives, steps=steps, exact=True)
    opts = {"skip_early_cfg": 0.25, "s_min_uncond": 100.0}
    kw: dict[str, Any] = {"seeds_kw": {"source": "CPU"}, "cfg_scale": 5.0, **opts}
    ours = _ours(pipe, cond, "Euler", steps, seeds, 16, **kw)
    conds = _apart(pipe, prompts, negatives, steps)
    assert conds(0)[1].shape[:2] == (6, 154)
    theirs = _reference_k(pipe, conds, "Euler", None, steps, seeds, 16, **opts)
    _assert_close(ours, theirs)


def test_timestep_sampler_unpadded(pipe: Any) -> None:
    """DDIM (A1111's timestep denoiser) with the negative longer than the prompt."""
    steps, seeds = 3, [5, 6]
    cond = encode(pipe, ["a red cat"] * 2, [LONG] * 2, steps=steps, exact=True)
    ours = _ours(pipe, cond, "DDIM", steps, seeds, 16, seeds_kw={"source": "CPU"}, cfg_scale=5.0)
    alphas = ldm_alphas_cumprod(pipe.scheduler.config)
    model = CompVisModel(pipe.unet, alphas)
    conds = _apart(pipe, ["a red cat"] * 2, [LONG] * 2, steps)
    cfg = ReferenceCFG(lambda x, t, cond: model.apply_model(x, t, cond), conds, 5.0, steps)
    x = ReferenceRNG(_shape(pipe, 16), seeds, [], 0.0, 0).next()
    timesteps = torch.clip(torch.arange(0, 1000, 1000 // steps) + 1, 0, 999)
    with torch.no_grad():
        theirs = reference_ddim(cfg, x, timesteps, alphas, 0.0)
    _assert_close(ours, theirs)


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M SDE", "DDIM"])
def test_toy_model_matches(toy: Any, sampler: str) -> None:
    steps, seeds = 3, [1, 2]
    cond = _encode(toy, sampler, steps, prompt="a red circle, blue background")
    ours = _ours(toy, cond, sampler, steps, seeds, 32, seeds_kw={"source": "CPU"}, cfg_scale=5.0)
    if sampler == "DDIM":
        alphas = ldm_alphas_cumprod(toy.scheduler.config)
        model = CompVisModel(toy.unet, alphas)
        cfg = ReferenceCFG(
            lambda x, t, cond: model.apply_model(x, t, cond), _conds_from(cond), 5.0, steps
        )
        x = ReferenceRNG(_shape(toy, 32), seeds, [], 0.0, 0).next()
        timesteps = torch.clip(torch.arange(0, 1000, 1000 // steps) + 1, 0, 999)
        with torch.no_grad():
            theirs = reference_ddim(cfg, x, timesteps, alphas, 0.0)
    else:
        theirs = _reference_k(toy, cond, sampler, None, steps, seeds, 32)
    _assert_close(ours, theirs)


# --- from_infotext: A1111's sampling inside the pipeline's own loop ------------------------------


def _infotext(sampler: str, **extra: object) -> Any:
    from promptweights.infotext import GenerationParameters

    settings = {"Steps": 3, "Sampler": sampler, "CFG scale": 5, "Seed": 21, "Size-1": 16}
    settings.update({"Size-2": 16, "RNG": "CPU", **extra})
    return GenerationParameters.from_settings("a red cat", "blurry", settings)


@pytest.mark.parametrize(
    ("sampler", "extra"),
    [
        ("Euler a", {"Variation seed": 5, "Variation seed strength": 0.4, "ENSD": 31337}),
        ("DPM++ 2M", {"Schedule type": "Karras"}),
        ("Heun", {}),
        ("DPM2 a", {"ENSD": 7}),
    ],
)
def test_from_infotext_runs_a1111_sampling_in_the_pipeline(
    pipe: Any, sampler: str, extra: dict[str, object]
) -> None:
    """The pipeline combines cond and uncond on the noise prediction, A1111 on the denoised
    latents: equal up to float rounding, hence a relative bound (5e-5 of the largest value) on
    the final latents; a wrong noise draw or step moves them by the order of the values."""
    from promptweights.a1111.scheduler import A1111Scheduler
    from promptweights.diffusers import from_infotext

    saved = pipe.scheduler
    try:
        kwargs = from_infotext(pipe, _infotext(sampler, **extra))
        assert isinstance(pipe.scheduler, A1111Scheduler)
        ours = pipe(**kwargs, output_type="latent").images
    finally:
        pipe.scheduler = saved
    embeds, negative = kwargs["prompt_embeds"], kwargs["negative_prompt_embeds"]
    schedule = "karras" if extra.get("Schedule type") == "Karras" else None
    theirs = _reference_k(
        pipe,
        lambda k: ([[(0, 1.0)]], embeds, negative),
        sampler,
        schedule,
        3,
        [21],
        16,
        subseeds=[int(extra.get("Variation seed", 0))] if "Variation seed" in extra else [],
        strength=float(extra.get("Variation seed strength", 0.0)),  # type: ignore[arg-type]
        ensd=int(extra.get("ENSD", 0)),  # type: ignore[call-overload]
    )
    scale = theirs[-1].abs().max().item()
    assert (ours - theirs[-1]).abs().max().item() <= 5e-5 * scale
