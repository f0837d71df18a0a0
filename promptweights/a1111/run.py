"""Run a diffusers pipeline's UNet the way A1111 samples: noise, sampler, CFG denoiser.

:func:`sample` takes a :class:`~promptweights.diffusers.Conditioning` (from
:func:`promptweights.diffusers.encode`) and returns the final latents, as A1111's
``processing.py`` orders it: the initial noise is the first draw of A1111's ``ImageRNG``
(seeds, variation seeds, seed resize), scaled by the first σ for k-diffusion samplers; the
ancestral samplers draw their per-step noise from the same ``ImageRNG`` (ENSD re-seeds it after
the first draw), the SDE samplers from a Brownian tree seeded per image; the model is k-diffusion's
``CompVisDenoiser`` (ε or v prediction, fractional timesteps) under :class:`CFGDenoiser`.

A prompt and negative of different chunk counts (over 75 tokens on one side) run as A1111 runs
them: by default each at its own length in its own model calls (:func:`timeline_conds` with
``unpadded``: ``encode`` padded them to one length for a pipeline's single batch, and the rows
are cut back), padded with encoded empty chunks with ``pad_conds`` (A1111's "Pad conds"), or with
the negative's last vector repeated or cut with ``pad_conds_v0`` ("Pad conds v0").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from promptweights.errors import UnsupportedPipelineError
from promptweights.samplers import SamplerChoice, resolve

from . import schedules
from .denoiser import CFGDenoiser, Conds
from .samplers import SAMPLERS, NoiseFn, Options, SamplerSpec, Step, drive
from .scheduler import initial_scale

__all__ = [
    "KDiffusionModel",
    "Seeds",
    "TimestepModel",
    "decode",
    "sample",
    "timeline_conds",
    "unpadded_lengths",
]


def rng_sources() -> tuple[str, ...]:
    """The ``RNG`` sources that draw A1111's numbers here: ``GPU`` (torch's CUDA generator) only
    with CUDA."""
    return ("CPU", "GPU", "NV") if torch.cuda.is_available() else ("CPU", "NV")


@dataclass(frozen=True, slots=True)
class Seeds:
    """A1111's seed settings for one batch (one seed per image).

    Attributes:
        seeds: ``Seed``, ``Seed + 1``… one per image.
        subseeds: ``Variation seed`` per image (empty: none).
        subseed_strength: ``Variation seed strength``.
        resize_from: ``Seed resize from`` as (width, height) in pixels; (0, 0) for none.
        source: ``RNG``: ``"GPU"`` (A1111's default; needs CUDA), ``"CPU"`` or ``"NV"``.
        eta_noise_seed_delta: ``ENSD``.
        brownian_device: whose numbers the SDE samplers' Brownian trees draw (see
            :func:`promptweights.a1111.brownian.brownian_noise_sampler`): None for the latents'
            device, as A1111 does; ``"NV"`` for an NVIDIA GPU's numbers on any machine.
    """

    seeds: tuple[int, ...]
    subseeds: tuple[int, ...] = ()
    subseed_strength: float = 0.0
    resize_from: tuple[int, int] = (0, 0)
    source: str = "GPU"
    eta_noise_seed_delta: int = 0
    brownian_device: str | None = None

    def image_rng(self, shape: Sequence[int], device: Any) -> Any:
        """A1111's ``ImageRNG`` (:class:`promptweights.a1111.rng.ImageRNG`) for latents of
        ``shape`` (C, H, W) per image."""
        from .rng import ImageRNG

        return ImageRNG(
            shape,
            self.seeds,
            subseeds=self.subseeds,
            subseed_strength=self.subseed_strength,
            seed_resize_from_h=self.resize_from[1],
            seed_resize_from_w=self.resize_from[0],
            source=self.source,
            device=device,
            ensd=self.eta_noise_seed_delta,
        )

    def brownian(self, x: Tensor, sigmas: Tensor) -> NoiseFn:
        """A1111's Brownian-tree noise for the SDE samplers (σ range: the schedule's)."""
        from .brownian import brownian_noise_sampler, sigma_bounds

        lo, hi = sigma_bounds(sigmas)
        noise: NoiseFn = brownian_noise_sampler(x, lo, hi, self.seeds, device=self.brownian_device)
        return noise


class KDiffusionModel:
    """k-diffusion's ``CompVisDenoiser`` (or ``CompVisVDenoiser``) around a diffusers UNet."""

    def __init__(self, unet: Any, alphas_cumprod: Tensor, prediction_type: str = "epsilon"):
        if prediction_type not in ("epsilon", "v_prediction"):
            raise UnsupportedPipelineError(f"prediction type {prediction_type!r} is not supported")
        self.unet = unet
        self.sigmas = schedules.model_sigmas(alphas_cumprod)
        self.v = prediction_type == "v_prediction"

    def __call__(self, x: Tensor, sigma: Tensor, cond: Tensor) -> Tensor:
        """Denoised latents: ``x + ε · (−σ)`` (v prediction: k-diffusion's v scalings)."""
        shape = (-1, *([1] * (x.ndim - 1)))
        s = sigma.view(shape)
        c_in = 1 / (s**2 + 1) ** 0.5
        t = schedules.sigma_to_t(sigma, self.sigmas.to(sigma.device))
        dtype = self.unet.dtype
        out: Tensor = self.unet(
            (x * c_in).to(dtype), t, encoder_hidden_states=cond.to(dtype)
        ).sample
        out = out.to(x.dtype)
        result: Tensor
        if self.v:
            result = x * (1 / (s**2 + 1)) + out * (-s / (s**2 + 1) ** 0.5)
        else:
            result = x + out * (-s)
        return result


class TimestepModel:
    """A1111's ``CompVisTimestepsDenoiser``: the UNet's noise prediction at integer timesteps."""

    def __init__(self, unet: Any, alphas_cumprod: Tensor, prediction_type: str = "epsilon"):
        self.unet = unet
        self.alphas = alphas_cumprod
        self.v = prediction_type == "v_prediction"

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """The noise prediction at timesteps ``t`` (from v for v-prediction models)."""
        dtype = self.unet.dtype
        out: Tensor = self.unet(x.to(dtype), t, encoder_hidden_states=cond.to(dtype)).sample
        out = out.to(x.dtype)
        if not self.v:
            return out
        a = self.alphas.to(x.device)[t.to(torch.long)].view(-1, *([1] * (x.ndim - 1)))
        eps: Tensor = a.sqrt() * out + (1 - a).sqrt() * x
        return eps


def unpadded_lengths(timeline: Any) -> tuple[int, int] | None:
    """The token lengths ``(positive, negative)`` a conditioning's timeline had before ``encode``
    padded them to one length (A1111's "Pad conds"), or None when they are equal or unknown.

    The positive length is that of the longest AND part (A1111 stacks the parts by repeating
    their last vectors); negatives of different lengths within one batch keep the longest one's.
    """
    lengths = getattr(timeline, "lengths", None)
    if lengths is None or not lengths[1]:
        return None
    positive, negative = lengths[0], max(lengths[1])
    return None if positive == negative else (positive, negative)


def timeline_conds(cond: Any, *, unpadded: bool = False) -> Callable[[int], Conds]:
    """The per-call :class:`Conds` of a :class:`~promptweights.diffusers.Conditioning`: every
    AND part of every image with its weight, prompt editing resolved at the call; with
    ``unpadded``, the cond and uncond rows at their own lengths (:func:`unpadded_lengths`)."""
    from promptweights.diffusers.conditioning import _index_at

    timeline = cond._timeline
    lengths = unpadded_lengths(timeline) if unpadded else None
    if timeline.part_pooled and any(p is not None for im in timeline.part_pooled for p in im):
        raise UnsupportedPipelineError(
            "A1111 sampling here supports SD 1.x/2.x conditioning (no pooled vectors)"
        )

    def at(k: int) -> Conds:
        rows: list[Tensor] = []
        parts: list[list[tuple[int, float]]] = []
        for image, image_parts in enumerate(timeline.parts):
            pairs = []
            for j, part in enumerate(image_parts):
                pairs.append((len(rows), float(part.weight)))
                rows.append(timeline.part_embeds[image][j][_index_at(part.ends, k)])
            parts.append(pairs)
        unconds = [
            timeline.negative_embeds[i][_index_at(n.ends, k)]
            for i, n in enumerate(timeline.negative)
        ]
        tensor, uncond = torch.stack(rows), torch.stack(unconds)
        if lengths is not None:
            tensor, uncond = tensor[:, : lengths[0]], uncond[:, : lengths[1]]
        return Conds(parts, tensor, uncond)

    return at


def _latent_shape(pipe: Any, width: int, height: int) -> tuple[tuple[int, int, int], int]:
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    channels = int(pipe.unet.config.in_channels)
    return (channels, height // factor, width // factor), factor


def sample(
    pipe: Any,
    cond: Any,
    seeds: Seeds,
    *,
    sampler: str | SamplerChoice = "DPM++ 2M",
    steps: int = 20,
    cfg_scale: float = 7.0,
    width: int = 512,
    height: int = 512,
    options: Options | None = None,
    discard_penultimate: bool = False,
    s_min_uncond: float = 0.0,
    s_min_uncond_all: bool = False,
    skip_early_cfg: float = 0.0,
    on_step: Callable[[Step], None] | None = None,
    schedule: schedules.ScheduleOptions | None = None,
    sgm_noise_multiplier: bool = False,
    pad_conds: bool = False,
    pad_conds_v0: bool = False,
) -> Tensor:
    """Sample latents for ``cond`` as A1111 v1.10.1 does (txt2img, first pass).

    Args:
        pipe: an SD 1.x/2.x diffusers pipeline (its ``unet`` and scheduler config are used).
        cond: from :func:`promptweights.diffusers.encode` (``steps`` as here; doubled schedule for
            second-order samplers), one image per seed. A prompt and negative of different
            chunk counts run unpadded, as A1111 runs them by default.
        seeds: the seed settings.
        sampler: A1111's sampler name (``"DPM++ 2M Karras"``…) or a resolved choice.
        steps: sampling steps.
        cfg_scale: CFG scale.
        width: image width (latents are ``width // vae_scale_factor`` wide).
        height: image height.
        options: eta, s_noise, churn…
        discard_penultimate: A1111's "Discard penultimate sigma" for any sampler.
        s_min_uncond: NGMS.
        s_min_uncond_all: "NGMS all steps".
        skip_early_cfg: "Skip Early CFG".
        on_step: called with the latents after each sampler step.
        schedule: the σ schedule's settings (:class:`~promptweights.a1111.schedules.
            ScheduleOptions`; by default SD 1.5's Align Your Steps table, the model's σ range).
        sgm_noise_multiplier: A1111's "SGM noise multiplier" (initial noise times
            ``sqrt(1 + σ₀²)`` rather than σ₀; k-diffusion samplers).
        pad_conds: A1111's "Pad conds": a prompt and negative of different chunk counts are
            padded with encoded empty chunks to one length (one batch) rather than run apart.
        pad_conds_v0: A1111's "Pad conds v0" (wins over ``pad_conds``): the negative's last
            vector repeated up to the prompt's length, or the negative cut to it.

    Returns:
        The final latents ``(B, C, H, W)`` (float32), before the VAE.

    Raises:
        UnsupportedPipelineError: a sampler or schedule not run here.
    """
    choice = resolve(sampler) if isinstance(sampler, str) else sampler
    spec = SAMPLERS.get(choice.sampler)
    if spec is None:
        raise UnsupportedPipelineError(f"A1111 sampling does not run {choice.sampler} here")
    options = options or Options()
    if spec.solver_type is not None:
        options = Options(**{**_as_dict(options), "solver_type": spec.solver_type})
    unet = pipe.unet
    device = unet.device
    config = pipe.scheduler.config
    alphas = schedules.alphas_cumprod(config)
    prediction = str(config.get("prediction_type", "epsilon"))
    shape, _ = _latent_shape(pipe, width, height)
    if len(seeds.seeds) != cond._timeline.batch:
        raise UnsupportedPipelineError("give one seed per image of the conditioning")
    rng = seeds.image_rng(shape, device)
    x = rng.next().to(torch.float32)
    discard = discard_penultimate or spec.discard_penultimate
    calls = 2 * steps if choice.second_order else steps
    common = {
        "total_calls": calls,
        "s_min_uncond": s_min_uncond,
        "s_min_uncond_all": s_min_uncond_all,
        "skip_early_cfg": skip_early_cfg,
        "pad_v0": pad_conds_v0,
    }
    conds = timeline_conds(cond, unpadded=pad_conds_v0 or not pad_conds)
    with torch.no_grad():
        if spec.k_sampler is not None:
            model = KDiffusionModel(unet, alphas.to(device), prediction)
            denoiser = CFGDenoiser(model, conds, cfg_scale, **common)  # type: ignore[arg-type]
            sigmas = schedules.sampler_sigmas(
                choice, steps, model.sigmas.cpu(), discard_penultimate=discard, options=schedule
            ).to(device)
            x = x * initial_scale(sigmas, sgm_noise_multiplier)
            noise = _noise(spec, seeds, rng, x, sigmas, options)
            return drive(spec.run(x, sigmas, options, noise), denoiser, on_step)
        timesteps = schedules.ddim_timesteps(steps, discard_penultimate=discard).to(device)
        t_model = TimestepModel(unet, alphas.to(device), prediction)
        denoiser = CFGDenoiser(t_model, conds, cfg_scale, **common)  # type: ignore[arg-type]
        noise = _noise(spec, seeds, rng, x, timesteps, options)
        run = spec.run_timesteps(x, timesteps, alphas.to(device), options, noise)
        return drive(run, denoiser, on_step)


def _as_dict(options: Options) -> dict[str, Any]:
    return {name: getattr(options, name) for name in Options.__slots__}


def _noise(
    spec: SamplerSpec, seeds: Seeds, rng: Any, x: Tensor, sigmas: Tensor, options: Options
) -> NoiseFn | None:
    if spec.noise == "brownian":
        return seeds.brownian(x, sigmas)
    if spec.noise:
        return lambda sigma, sigma_next: rng.next().to(x)
    return None


def decode(pipe: Any, latents: Tensor, output_type: str = "pil") -> Any:
    """The pipeline's VAE decode of ``latents`` into images (PIL by default)."""
    vae = pipe.vae
    with torch.no_grad():
        image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(image, output_type=output_type)
