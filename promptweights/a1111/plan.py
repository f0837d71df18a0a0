"""What an infotext asks of A1111's sampling, and what a re-run here still cannot match.

:func:`read_settings` reads the seed and sampler settings A1111 writes (``Seed``, ``Variation
seed``, ``Seed resize from``, ``RNG``, ``ENSD``, ``Eta``, ``Eta DDIM``, ``Sigma churn``…,
``Discard penultimate sigma``, ``NGMS``, ``NGMS all steps``, ``Skip Early CFG``, ``Schedule min
sigma``, ``Schedule max sigma``, ``Schedule rho``, ``Beta schedule alpha``, ``Beta schedule
beta``, ``SGM noise multiplier``, ``Pad conds``, ``Pad conds v0``); :func:`unreproducible`
lists, one sentence per setting, what :func:`promptweights.diffusers.from_infotext` cannot
reproduce even with A1111's noise and samplers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from promptweights.samplers import SamplerChoice

from .run import Seeds
from .samplers import SAMPLERS, Options
from .schedules import SCHEDULE_LABELS, ScheduleOptions

__all__ = ["A1111Settings", "read_settings", "unreproducible", "unsupported_reason"]

#: Settings no re-run here reproduces, and why (A1111's infotext keys).
_NEVER: dict[str, str] = {
    "Hires upscale": "the hires-fix pass is not reproduced; the image is rendered at the first "
    "pass's size",
    "Hires resize": "the hires-fix pass is not reproduced",
    "Hires steps": "the hires-fix pass is not reproduced",
    "Hires upscaler": "the hires-fix pass is not reproduced",
    "Denoising strength": "img2img and hires passes are not reproduced (txt2img only)",
    "Face restoration": "face restoration is not reproduced",
    "Tiling": "tiling is not reproduced",
    "Token merging ratio": "token merging is not reproduced",
    "Hypernet": "hypernetworks are not loaded",
    "Downcast alphas_cumprod": "the model's ᾱ is not downcast to float16",
    "Refiner": "the refiner switch is not reproduced",
    "FP8 weight": "float8 UNet weights are not reproduced",
    "Image CFG scale": "InstructPix2Pix image guidance is not reproduced",
    "Conditional mask weight": "an inpainting model's image conditioning is not reproduced",
    "Init image hash": "img2img is not reproduced (txt2img only)",
    "Noise multiplier": "img2img is not reproduced (txt2img only)",
    "Extra noise": "img2img is not reproduced (txt2img only)",
    "Mask mode": "inpainting is not reproduced (txt2img only)",
    "Mask blur": "inpainting is not reproduced (txt2img only)",
    "Masked content": "inpainting is not reproduced (txt2img only)",
    "Inpaint area": "inpainting is not reproduced (txt2img only)",
    "Masked area padding": "inpainting is not reproduced (txt2img only)",
    "VAE Encoder": "A1111 encoded an image (img2img or hires fix) with an approximate VAE "
    "encoder; not reproduced",
    "VAE Decoder": "A1111 decoded with an approximate VAE decoder; the pipeline's VAE decodes here",
}
#: A1111 v1.10.1's own keys a re-run here reads or may leave aside (they change nothing in a
#: txt2img re-run with the same model), beside A1111_KEY_ORDER and the keys above.
_KNOWN = frozenset(
    {
        "Version",
        "User",
        "Emphasis",
        "Lora hashes",
        "TI hashes",
        "Eta",
        "Eta DDIM",
        "Sigma churn",
        "Sigma tmin",
        "Sigma tmax",
        "Sigma noise",
        "Discard penultimate sigma",
        "Pad conds",
        "Pad conds v0",
        "Old prompt editing timelines",
        "Hires prompt",
        "Hires negative prompt",
        "Hires sampler",
        "Hires schedule type",
        "Hires checkpoint",
        "Hires CFG Scale",
        "Hires upscale",
        "Token merging ratio hr",
        "Beta schedule alpha",
        "Beta schedule beta",
        "Schedule max sigma",
        "Schedule min sigma",
        "Schedule rho",
        "SGM noise multiplier",
        "Refiner switch at",
        "Refiner switch by sampling steps",
        "Hypernet strength",
        "Hypernet hash",
        "Token normalization",
    }
)
#: A1111's CFG denoiser settings: run.sample's CFGDenoiser and, in a pipeline call, the UNet
#: hooks of promptweights.a1111.guidance reproduce them.
_CFG = ("NGMS", "NGMS all steps", "Skip Early CFG")


@dataclass(frozen=True, slots=True)
class A1111Settings:
    """A1111's seed and sampler settings of one infotext (A1111's defaults where absent)."""

    seeds: Seeds
    options: Options
    discard_penultimate: bool = False
    s_min_uncond: float = 0.0
    s_min_uncond_all: bool = False
    skip_early_cfg: float = 0.0
    schedule: ScheduleOptions = field(default_factory=ScheduleOptions)
    sgm_noise_multiplier: bool = False
    pad_conds: bool = False
    pad_conds_v0: bool = False


def _float(settings: Mapping[str, str], key: str, default: float) -> float:
    try:
        value = float(settings.get(key, default))
    except ValueError:
        return default
    return value if math.isfinite(value) else default


def _int(settings: Mapping[str, str], key: str, default: int) -> int:
    try:
        return int(float(settings.get(key, default)))
    except (ValueError, OverflowError):
        return default


def read_settings(
    params: Any, choice: SamplerChoice | None = None, *, cuda: bool = False
) -> A1111Settings:
    """A1111's settings from parsed parameters (``GenerationParameters``).

    A1111 samples on an NVIDIA GPU as a rule: the SDE samplers' Brownian noise draws CUDA's
    numbers (``NV``, on any machine), and without CUDA here (``cuda`` False) the ``GPU`` noise
    source (A1111's default) draws with ``NV`` too, the CUDA generator's numbers computed on the
    CPU.

    >>> from promptweights.infotext import parse
    >>> s = read_settings(parse("a\\nSteps: 4, Sampler: Euler a, Seed: 5, ENSD: 31337, RNG: CPU"))
    >>> s.seeds.seeds, s.seeds.source, s.seeds.eta_noise_seed_delta
    ((5,), 'CPU', 31337)
    """
    settings: Mapping[str, str] = params.settings
    written: Mapping[str, str] = params.written
    seed = _int(settings, "Seed", 0)
    strength = _float(settings, "Variation seed strength", 0.0)
    subseeds = (
        (_int(settings, "Variation seed", 0),) if strength and "Variation seed" in written else ()
    )
    seeds = Seeds(
        (seed,),
        subseeds=subseeds,
        subseed_strength=strength if subseeds else 0.0,
        resize_from=(
            _int(settings, "Seed resize from-1", 0),
            _int(settings, "Seed resize from-2", 0),
        ),
        source=_source(settings.get("RNG", "GPU"), cuda),
        eta_noise_seed_delta=_int(settings, "ENSD", 0),
        brownian_device="NV",
    )
    ddim = choice is not None and choice.sampler == "DDIM"
    eta_key, eta_default = ("Eta DDIM", 0.0) if ddim else ("Eta", 1.0)
    options = Options(
        eta=_float(settings, eta_key, eta_default) if eta_key in written else None,
        s_noise=_float(settings, "Sigma noise", 1.0),
        s_churn=_float(settings, "Sigma churn", 0.0),
        s_tmin=_float(settings, "Sigma tmin", 0.0),
        s_tmax=_float(settings, "Sigma tmax", math.inf) or math.inf,
    )
    return A1111Settings(
        seeds,
        options,
        discard_penultimate=settings.get("Discard penultimate sigma") == "True",
        s_min_uncond=_float(settings, "NGMS", 0.0),
        s_min_uncond_all=settings.get("NGMS all steps") == "True",
        skip_early_cfg=_float(settings, "Skip Early CFG", 0.0),
        schedule=_schedule_options(settings),
        sgm_noise_multiplier=settings.get("SGM noise multiplier") == "True",
        pad_conds=settings.get("Pad conds") == "True",
        pad_conds_v0=settings.get("Pad conds v0") == "True",
    )


def _schedule_options(settings: Mapping[str, str]) -> ScheduleOptions:
    """The schedule settings A1111 writes when they differ from the model's (σ range, ρ) or
    when the Beta schedule runs (its alpha and beta)."""

    def positive(key: str) -> float | None:
        value = _float(settings, key, 0.0)
        return value if value > 0 else None

    return ScheduleOptions(
        sigma_min=positive("Schedule min sigma"),
        sigma_max=positive("Schedule max sigma"),
        rho=positive("Schedule rho"),
        beta_alpha=_float(settings, "Beta schedule alpha", 0.6),
        beta_beta=_float(settings, "Beta schedule beta", 0.6),
    )


def _unwritten_ensd(params: Any) -> list[tuple[str, str]]:
    """A1111 re-seeds every image's step noise with its ENSD setting but writes ``ENSD`` only for
    samplers flagged to use it: DDIM's eta noise and Karras' churn draw from the same generators,
    so with those the setting A1111 does not write matters."""
    settings: Mapping[str, str] = params.settings
    if "ENSD" in params.written:
        return []
    noisy = [
        key
        for key in ("Eta DDIM", "Sigma churn")
        if key in params.written and _float(settings, key, 0.0) != 0
    ]
    return [
        (
            key,
            f"{key}: {settings[key]}: this noise follows A1111's ENSD setting, which A1111 does "
            "not write for this sampler; the re-run assumes ENSD 0",
        )
        for key in noisy
    ]


def _known(key: str) -> bool:
    from promptweights.infotext import A1111_KEY_ORDER, SAMPLING_KEY, SCHEDULER_KEY, STRATEGY_KEY

    base = key[:-2] if key.endswith(("-1", "-2")) else key
    return (
        base in A1111_KEY_ORDER
        or base in _KNOWN
        or base in _NEVER
        or base in _CFG
        or base in (SAMPLING_KEY, SCHEDULER_KEY, STRATEGY_KEY)
    )


def _source(source: str, cuda: bool) -> str:
    return "NV" if source == "GPU" and not cuda else source


def unsupported_reason(choice: SamplerChoice) -> str | None:
    """Why A1111 sampling cannot run ``choice`` here, or None."""
    if choice.sampler not in SAMPLERS:
        return f"{choice.sampler} is not one of the samplers run here ({', '.join(SAMPLERS)})"
    if choice.schedule is not None and choice.schedule not in SCHEDULE_LABELS:
        labels = ", ".join(SCHEDULE_LABELS)
        return f"the {choice.schedule} schedule is not computed here ({labels})"
    return None


def unreproducible(
    params: Any, *, pipeline: bool = True, cuda: bool = False
) -> list[tuple[str, str]]:
    """``(key, sentence)`` for every setting of ``params`` a re-run with A1111's sampling cannot
    reproduce.

    Args:
        params: parsed parameters.
        pipeline: the re-run is a diffusers pipeline call (True) or
            :func:`promptweights.a1111.run.sample`; both reproduce the same settings (AND, NGMS
            and Skip Early CFG included), the argument is kept for callers that pass it.
        cuda: CUDA is available (A1111's default ``GPU`` source is torch's CUDA generator;
            without it ``NV`` stands in, see :func:`read_settings`).
    """
    from promptweights.infotext import unreproducible as diffusers_unreproducible

    written: Mapping[str, str] = params.written
    out = []
    hires = [s for s in diffusers_unreproducible(params) if s.startswith("Hires upscale ")]
    for key, why in _NEVER.items():
        if key in written or f"{key}-1" in written:
            sentence = hires[0] if key == "Hires upscale" and hires else f"{key}: {why}"
            out.append((key, sentence))
    out.extend(_unwritten_ensd(params))
    out.extend(
        (key, f"{key}: not a setting this re-run knows (an extension's?): not reproduced")
        for key in written
        if not _known(key)
    )
    source = params.settings.get("RNG", "GPU")
    if source not in ("CPU", "GPU", "NV"):
        out.append(("RNG", f"RNG: {source}: not one of A1111's noise sources (CPU, GPU, NV)"))
    elif source == "GPU" and not cuda:
        out.append(
            (
                "RNG",
                "RNG: GPU (A1111's default) without CUDA here: the NV source stands in for torch's "
                "CUDA generator; it gives the GPU's initial noise, the later (step) draws are not "
                "checked against a GPU",
            )
        )
    return out
