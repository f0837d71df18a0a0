"""Re-running an A1111 infotext: :func:`plan_rerun` reads it, :func:`from_infotext` runs it;
:func:`attach_infotext` runs it with the denoiser hooks AND (and PixArt's editing) need."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from promptweights.errors import InvalidArgumentError, UnsupportedPipelineError, warn_or_raise
from promptweights.infotext import (
    SAMPLING_KEY,
    SCHEDULER_KEY,
    UNSUPPORTED_SETTINGS,
    unreproducible,
)
from promptweights.settings import run_settings
from promptweights.strategies import get_normalization, get_strategy

from . import _llm
from .conditioning import Conditioning
from .encode import encode
from .families import record_of


@dataclass(frozen=True)
class Rerun:
    """What :func:`plan_rerun` reads from an infotext, before any model is touched.

    Attributes:
        params: the parsed parameters.
        sampler: the resolved sampler (diffusers scheduler class and config).
        steps: sampling steps (A1111's default 20 when missing).
        strategy: the weighting strategy (``Emphasis`` mode or ``Prompt weighting``).
        clip_skip: the pipelines' ``clip_skip`` (A1111's "Clip skip N" is ``N - 1``; None for 1;
            see :mod:`promptweights.settings`).
        unsupported: settings present in the text that diffusers cannot reproduce.
        scheduler: for an image made with the model's own diffusers scheduler (the text names
            its class under ``Diffusers scheduler`` and has no ``Sampler``): that class name;
            ``sampler`` is then None and the pipeline keeps its scheduler.
        normalization: the token normalisation (``Token normalization``, default ``"none"``).
        match: ``"a1111"`` (A1111's noise, samplers and σ schedules,
            :mod:`promptweights.a1111`) or ``"diffusers"`` (a diffusers scheduler, torch's
            generator).
        a1111: A1111's seed and sampler settings (:class:`promptweights.a1111.plan.A1111Settings`)
            when ``match`` is ``"a1111"``.
        reasons: with ``match="a1111"``, one sentence per unsupported setting (``warnings``).
    """

    params: Any
    sampler: Any
    steps: int
    strategy: str
    clip_skip: int | None
    unsupported: tuple[str, ...]
    scheduler: str | None = None
    normalization: str = "none"
    match: str = "diffusers"
    a1111: Any = None
    reasons: tuple[str, ...] = ()

    def warnings(self) -> list[str]:
        """What :func:`from_infotext` cannot do as the text says, one sentence each
        (:func:`promptweights.infotext.unreproducible`; with ``match="a1111"``,
        :func:`promptweights.a1111.plan.unreproducible`)."""
        if self.match == "a1111":
            return list(self.reasons)
        return unreproducible(self.params)


def _is_image_path(text: str) -> bool:
    if "\n" in text or Path(text).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        return False
    try:
        return Path(text).is_file()
    except OSError:  # e.g. a one-line infotext too long to be a file name
        return False


def _read(source: Any) -> Any:
    from promptweights import infotext

    if isinstance(source, infotext.GenerationParameters):
        return source
    if isinstance(source, str) and not _is_image_path(source):
        return infotext.parse(source)
    return infotext.read_image(source)


def _match(params: Any, match: str | None, own: str | None) -> str:
    if match not in (None, "a1111", "diffusers"):
        raise InvalidArgumentError(f"match must be 'a1111' or 'diffusers', not {match!r}")
    if match is not None:
        return match
    # Images promptweights sampled with a diffusers scheduler say so; A1111's do not.
    if own or params.written.get(SAMPLING_KEY) == "diffusers":
        return "diffusers"
    return "a1111"


def plan_rerun(source: Any, *, a1111_fallback: bool = False, match: str | None = None) -> Rerun:
    """Read an infotext and resolve what re-running it needs.

    Args:
        source: a :class:`~promptweights.infotext.GenerationParameters`, infotext as a ``str``,
            or an image (path, bytes or binary file) holding one.
        a1111_fallback: read an unknown sampler as DPM++ 2M, as A1111 silently does.
        match: ``"a1111"``: A1111's noise, samplers and schedules (:mod:`promptweights.a1111`);
            ``"diffusers"``: a diffusers scheduler and torch's generator. None (default):
            ``"a1111"``, except for an image promptweights sampled with a diffusers scheduler
            (``Sampling: diffusers`` or ``Diffusers scheduler`` in its text).

    Returns:
        The plan; ``unsupported`` and :meth:`Rerun.warnings` list precisely what still cannot
        match (hires fix, img2img, a refiner, an extension's settings, a noise source not
        available here…).

    Raises:
        InfotextError: unreadable text or image.
        UnknownNameError: an unknown sampler (without the fallback) or strategy.
        UnsupportedPipelineError: a sampler or schedule that cannot be run (with the reason).
        InvalidArgumentError: an unknown ``match``.
    """
    params = _read(source)
    written = params.written
    own = written.get(SCHEDULER_KEY) if "Sampler" not in written else None
    match = _match(params, match, own)
    choice = None if own else params.sampler_choice(a1111_fallback=a1111_fallback)
    a1111 = None
    reasons: tuple[str, ...] = ()
    if match == "a1111":
        a1111, unsupported, reasons = _a1111_plan(params, choice)
    else:
        if choice is not None and choice.scheduler_class is None:
            raise UnsupportedPipelineError(
                f"no diffusers scheduler for {choice.sampler}: {choice.reason}"
            )
        unsupported = tuple(key for key in UNSUPPORTED_SETTINGS if key in written)
        if params.settings.get("RNG", "GPU") not in ("GPU", "CPU"):
            unsupported += (f"RNG: {params.settings['RNG']}",)
    settings = run_settings(params)
    get_strategy(settings.strategy)  # unknown names fail here, before any model work
    normalization = settings.normalization or "none"
    get_normalization(normalization)
    return Rerun(
        params,
        choice,
        settings.steps or 20,
        settings.strategy,
        settings.pipeline_clip_skip,
        unsupported,
        own,
        normalization,
        match,
        a1111,
        reasons,
    )


def _a1111_plan(params: Any, choice: Any) -> tuple[Any, tuple[str, ...], tuple[str, ...]]:
    """A1111's settings, the unsupported keys and their sentences."""
    from promptweights.a1111 import plan

    if choice is None:
        raise UnsupportedPipelineError("A1111 sampling needs the infotext's Sampler")
    reason = plan.unsupported_reason(choice)
    if reason is not None:
        raise UnsupportedPipelineError(f"A1111 sampling cannot run {choice.sampler}: {reason}")
    pairs = plan.unreproducible(params, cuda=torch.cuda.is_available())
    keys = tuple(key for key, _ in pairs)
    settings = plan.read_settings(params, choice, cuda=torch.cuda.is_available())
    return settings, keys, tuple(s for _, s in pairs)


def from_infotext(
    pipe: Any,
    source: Any,
    *,
    match: str | None = None,
    a1111_fallback: bool = False,
    strict: bool = False,
    image: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """Configure ``pipe``'s scheduler for an A1111 infotext and return the call's arguments.

    The prompt and negative are encoded with :func:`encode` (the ``Emphasis`` mode picks the
    strategy, ``Clip skip`` the layer, ``Old prompt editing timelines`` the timeline); steps, CFG
    scale and size become the call's arguments. The sampling depends on ``match``:

    * ``"a1111"`` (the default for A1111's images): A1111's own sampling, so that the image
      re-runs to the same picture with the same model. The pipeline's scheduler becomes a
      :class:`promptweights.a1111.scheduler.A1111Scheduler` running A1111's sampler (k-diffusion's
      update rules, A1111's σ schedule, its DDIM/PLMS) and the call gets ``latents``: A1111's
      initial noise for ``Seed``, ``Variation seed``, ``Seed resize from`` and ``RNG``; the
      per-step noise follows ``ENSD``, ``Eta``, ``Sigma churn``… The pipeline combines cond and
      uncond on the noise prediction, A1111 on the denoised latents: equal up to float rounding.
      ``AND`` with weights, ``NGMS``, ``NGMS all steps`` and ``Skip Early CFG`` are A1111's
      too, and so is a prompt and negative of different chunk counts: ``encode`` pads them to
      one length for the pipeline's single batch, and, unless the text says ``Pad conds: True``
      (A1111's padding with empty chunks, which the pipeline then runs as is), the UNet runs
      them at their own lengths in separate calls as A1111 does by default, or as ``Pad conds
      v0: True`` pads them. Hooks on the UNet
      (:class:`promptweights.a1111.guidance.PipelineCFG`) run every AND part, leave out the
      uncond on the calls A1111 skips it and split the unpadded rows; they stay on the UNet
      while this A1111 scheduler is the
      pipeline's (so the call can run again) and remove themselves once another one is, or once
      a run starts with other prompt embeddings.
    * ``"diffusers"`` (and images promptweights sampled with a diffusers scheduler): the sampler
      and schedule type pick and configure the diffusers scheduler (explicit ``sigmas`` where the
      schedule is not a diffusers option) and the seed becomes a CPU ``torch.Generator``; an A1111
      seed then gives a different picture than in A1111. An image ``promptweights compare`` made
      with the model's own scheduler names it under ``Diffusers scheduler`` instead of
      ``Sampler``: the pipeline's scheduler is then kept.

    The same infotext on the same device and model gives the same image (and the same torch thread
    count: float sums may round otherwise). What cannot be reproduced (hires fix, a
    refiner…) is listed by :func:`plan_rerun` and never dropped silently: each is a
    :class:`~promptweights.errors.PromptweightsWarning`, or with ``strict=True`` an
    :class:`~promptweights.errors.UnreproducibleError` before any model work.

    Args:
        pipe: a pipeline :func:`encode` supports (``match="a1111"``: a UNet pipeline, SD 1.x/2.x
            or SDXL).
        source: parameters, infotext, or an image holding one (PNG, JPEG, WebP).
        match: ``"a1111"`` or ``"diffusers"``; None picks as :func:`plan_rerun` says.
        a1111_fallback: read an unknown sampler as DPM++ 2M, as A1111 does.
        strict: raise instead of warning about what cannot be reproduced (and pass
            ``strict`` on to :func:`encode`, for extra-network tags it cannot load).
        image: the pipeline's input image (Qwen-Image Edit, Edit Inpaint, Edit Plus, Z-Image
            Omni, or any image-to-image pipeline), as for the pipeline's own call: the infotext
            does not hold it, so give it again. It is passed to :func:`encode` where the
            family's prompt encoding takes it (:func:`encoding_image`) and returned as the
            call's ``image``.
        **options: passed on to :func:`encode` (``lora_dir``, ``exact``…).

    Returns:
        Keyword arguments for ``pipe(**kwargs)`` (with ``image`` when given). The pipeline's
        scheduler is replaced only once everything else succeeded.

    Raises:
        UnsupportedPipelineError: a sampler without a diffusers scheduler, or, with
            ``match="diffusers"``, a prompt that needs the denoiser hooks (AND; editing on
            PixArt): run it with :func:`attach_infotext`.
        UnreproducibleError: with ``strict``, a setting that cannot be reproduced.
        InvalidArgumentError: ``image`` with A1111's sampling (text-to-image passes only).
    """
    plan = plan_rerun(source, a1111_fallback=a1111_fallback, match=match)
    if plan.match == "a1111":
        _check_a1111_pipeline(pipe)
        if image is not None:
            raise InvalidArgumentError(
                "A1111 sampling re-runs text-to-image passes: image= is for match='diffusers'"
            )
    for message in plan.warnings():
        warn_or_raise(message, strict=strict)
    if plan.match == "a1111":
        return _a1111_kwargs(pipe, plan, strict, options)
    options = _with_image(pipe, options, image)
    kwargs, cond, scheduler = _diffusers_kwargs(pipe, plan, strict, options, hooked=False)
    kwargs = {**cond.pipeline_kwargs(), **kwargs}
    if image is not None:
        kwargs["image"] = image
    pipe.scheduler = scheduler
    return kwargs


def encoding_image(pipe: Any, image: Any) -> Any:
    """``image`` where ``pipe``'s prompt encoding takes the input image (Qwen-Image Edit, Edit
    Inpaint, Edit Plus read it, Z-Image Omni counts it), else None: what :func:`encode` gets of
    a pipeline call's ``image`` (an image-to-image pipeline's encoding reads none)."""
    if image is None:
        return None
    return image if _llm.takes_image([t.llm for t in record_of(pipe).towers]) else None


def _with_image(pipe: Any, options: dict[str, Any], image: Any) -> dict[str, Any]:
    """:func:`encode`'s options with ``image`` where the family's encoding takes it."""
    taken = encoding_image(pipe, image)
    return options if taken is None else {**options, "image": taken}


@contextmanager
def attach_infotext(
    pipe: Any,
    source: Any,
    *,
    match: str | None = None,
    a1111_fallback: bool = False,
    strict: bool = False,
    image: Any = None,
    **options: Any,
) -> Iterator[dict[str, Any]]:
    """:func:`from_infotext` for every prompt, with the denoiser hooks it may need on ``pipe``.

    ``with attach_infotext(pipe, png) as kwargs: image = pipe(**kwargs).images[0]`` re-runs
    what :func:`from_infotext` refuses with ``match="diffusers"``: ``AND`` (every family) and
    prompt editing on a pipeline without ``callback_on_step_end`` (PixArt) or that the step
    callback cannot fully switch (Flux's pooled vector). Inside the block the conditioning's
    hooks sit on ``pipe``'s denoiser (:meth:`Conditioning.attach`); they are removed on exit,
    whatever happens, so call the pipeline inside the block. Every other prompt gives the
    same arguments as :func:`from_infotext`, with nothing attached; with ``match="a1111"``
    the arguments are :func:`from_infotext`'s (its A1111 hooks follow the scheduler, as there).

    Args:
        pipe, source, match, a1111_fallback, strict, image, options: as :func:`from_infotext`.

    Yields:
        Keyword arguments for ``pipe(**kwargs)``.

    Raises:
        As :func:`from_infotext`, without the refusal of AND; ``InvalidWeightError`` for AND
        weights summing to 0 on Flux, Chroma or Wan (no mean), on entering the block.
    """
    plan = plan_rerun(source, a1111_fallback=a1111_fallback, match=match)
    if plan.match == "a1111":
        yield from_infotext(
            pipe,
            source,
            match=match,
            a1111_fallback=a1111_fallback,
            strict=strict,
            image=image,
            **options,
        )
        return
    for message in plan.warnings():
        # warn_or_raise, this generator, contextlib's __enter__, then the caller's `with`.
        warn_or_raise(message, strict=strict, stacklevel=4)
    options = _with_image(pipe, options, image)
    kwargs, cond, scheduler = _diffusers_kwargs(pipe, plan, strict, options, hooked=True)
    if image is not None:
        kwargs["image"] = image
    with cond.attach(pipe):
        kwargs = {**cond.pipeline_kwargs(), **kwargs}
        pipe.scheduler = scheduler
        yield kwargs


def _diffusers_kwargs(
    pipe: Any, plan: Rerun, strict: bool, options: dict[str, Any], *, hooked: bool
) -> tuple[dict[str, Any], Conditioning, Any]:
    """For ``match="diffusers"``: the call's arguments beside the conditioning's own
    (``cond.pipeline_kwargs()``, which a hooked conditioning gives only while attached), the
    conditioning and the scheduler to install. Without ``hooked``, a conditioning that needs
    the denoiser hooks is refused."""
    from promptweights.samplers import model_sigmas, schedule_sigmas

    settings = run_settings(plan.params)
    options = _family_options(pipe, plan.params, strict, options)
    scheduler, second_order = _scheduler(pipe, plan, strict)
    cond = _encode(pipe, plan, second_order, strict, options)
    if cond.needs_attach and not hooked:
        raise UnsupportedPipelineError(
            "the prompt uses AND (or edits, on a pipeline without callback_on_step_end): run "
            "the pipeline inside `with promptweights.diffusers.attach_infotext(pipe, source) as "
            "kwargs:` (or encode it and run inside `with cond.attach(pipe):`)"
        )
    kwargs: dict[str, Any] = {"num_inference_steps": plan.steps}
    if "max_sequence_length" in options:
        kwargs["max_sequence_length"] = options["max_sequence_length"]
    if settings.cfg_scale is not None:
        kwargs["guidance_scale"] = settings.cfg_scale
    if settings.width and settings.height:
        kwargs["width"], kwargs["height"] = settings.width, settings.height
    if settings.seed is not None:
        kwargs["generator"] = torch.Generator("cpu").manual_seed(settings.seed)
    choice = plan.sampler
    if choice is not None and choice.explicit_sigmas and choice.schedule_name is not None:
        sigmas = model_sigmas(scheduler.alphas_cumprod)
        kwargs["sigmas"] = schedule_sigmas(choice.schedule_name, plan.steps, sigmas)
    return kwargs, cond, scheduler


def _family_options(
    pipe: Any, params: Any, strict: bool, options: dict[str, Any]
) -> dict[str, Any]:
    """What the infotext says of the family: ``Model family`` (another family's pipeline cannot
    give the same image: a warning, an error when strict) and ``Max sequence length`` (the T5
    window, passed to :func:`encode` and the pipeline unless ``options`` names one)."""
    from promptweights.infotext import FAMILY_KEY, SEQUENCE_KEY

    from .families import family_of

    written = params.written
    family = written.get(FAMILY_KEY)
    if family is not None and family != family_of(pipe):
        warn_or_raise(
            f"the image was made with a {family!r} pipeline; {type(pipe).__name__} is a "
            f"{family_of(pipe)!r} pipeline and gives another image",
            strict=strict,
            stacklevel=4,
        )
    length = written.get(SEQUENCE_KEY)
    if length is None or "max_sequence_length" in options:
        return options
    if not length.isdigit() or not 0 < int(length) <= 1 << 16:
        raise InvalidArgumentError(f"{SEQUENCE_KEY}: {length!r} is not a token count")
    return {**options, "max_sequence_length": int(length)}


def _scheduler(pipe: Any, plan: Rerun, strict: bool) -> tuple[Any, bool]:
    """The scheduler a re-run uses, and whether it is second-order (not installed yet)."""
    from promptweights.samplers import build_scheduler

    if plan.sampler is None:  # the model's own scheduler, named
        scheduler = pipe.scheduler
        if type(scheduler).__name__ != plan.scheduler:
            warn_or_raise(
                f"the image was made with the model's own {plan.scheduler}; this pipeline's "
                f"scheduler is {type(scheduler).__name__}, kept",
                strict=strict,
                stacklevel=4,
            )
        return scheduler, getattr(scheduler, "order", 1) == 2
    return build_scheduler(plan.sampler, pipe.scheduler.config), plan.sampler.second_order


def _check_a1111_pipeline(pipe: Any) -> None:
    import inspect

    config = getattr(getattr(pipe, "scheduler", None), "config", {})
    if getattr(pipe, "unet", None) is None or "beta_start" not in config:
        raise UnsupportedPipelineError(
            "A1111 sampling needs a UNet pipeline with a discrete DDPM noise schedule (SD 1.x, "
            "2.x, SDXL); use match='diffusers'"
        )
    if "image" in inspect.signature(pipe.__call__).parameters:
        raise UnsupportedPipelineError(
            "A1111 sampling re-runs text-to-image passes; for an image-to-image pipeline use "
            "match='diffusers'"
        )


def _encode(
    pipe: Any, plan: Rerun, second_order: bool, strict: bool, options: dict[str, Any]
) -> Conditioning:
    """The infotext's prompts encoded with its settings (both re-run paths)."""
    settings = run_settings(plan.params)
    return encode(
        pipe,
        settings.prompt,
        settings.negative_prompt,
        strategy=plan.strategy,
        clip_skip=plan.clip_skip,
        steps=plan.steps,
        second_order=second_order,
        old_timelines=settings.old_timelines,
        **{"normalization": plan.normalization, "strict": strict, **options},
    )


def _a1111_guidance(pipe: Any, scheduler: Any, cond: Conditioning, plan: Rerun) -> Any:
    """The UNet hooks that give the pipeline's guidance step A1111's AND, NGMS, Skip Early CFG
    and unpadded cond and uncond (:class:`promptweights.a1111.guidance.PipelineCFG`), or None
    when the call needs none."""
    from promptweights.a1111.guidance import PipelineCFG
    from promptweights.a1111.run import unpadded_lengths

    a1111 = plan.a1111
    padded = a1111.pad_conds and not a1111.pad_conds_v0  # A1111 padded as encode does
    lengths = None if padded else unpadded_lengths(cond._timeline)
    cfg_options = a1111.s_min_uncond > 0 or a1111.skip_early_cfg != 0
    if not (cond.composable or cfg_options or lengths is not None):
        return None
    cfg_scale = run_settings(plan.params).cfg_scale
    if cond.composable and cfg_scale is not None and cfg_scale <= 1:
        raise UnsupportedPipelineError(
            f"AND with CFG scale {cfg_scale:g}: a pipeline call at that scale runs no uncond, "
            "which A1111 combines the AND parts around; promptweights.a1111.run.sample does"
        )
    return PipelineCFG(
        pipe,
        scheduler,
        cond,
        total_calls=2 * plan.steps if plan.sampler.second_order else plan.steps,
        s_min_uncond=a1111.s_min_uncond,
        s_min_uncond_all=a1111.s_min_uncond_all,
        skip_early_cfg=a1111.skip_early_cfg,
        lengths=lengths,
        pad_v0=a1111.pad_conds_v0,
    )


def _a1111_kwargs(pipe: Any, plan: Rerun, strict: bool, options: dict[str, Any]) -> dict[str, Any]:
    """The pipeline call for A1111's sampling; installs the A1111 scheduler last."""
    from promptweights.a1111.scheduler import A1111Scheduler

    settings = run_settings(plan.params)
    a1111 = plan.a1111
    cond = _encode(pipe, plan, plan.sampler.second_order, strict, options)
    padded = a1111.pad_conds and not a1111.pad_conds_v0
    if cond.padded_conds and not padded and cond._timeline.lengths is None:
        # encode knows no unpadded lengths for these text encoders: the rows stay padded
        warn_or_raise(
            "the prompt and negative have different chunk counts: A1111 ran them unpadded (the "
            "infotext has no 'Pad conds: True'), the pipeline call pads them with empty chunks "
            "to one length (its single batch needs it): the image differs",
            strict=strict,
        )
    width, height = settings.width or 512, settings.height or 512
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    shape = (int(pipe.unet.config.in_channels), height // factor, width // factor)
    device = pipe.unet.device
    rng = a1111.seeds.image_rng(shape, device)
    latents = rng.next()
    config = getattr(pipe.scheduler, "config", {})
    scheduler = A1111Scheduler(
        plan.sampler,
        plan.steps,
        config,
        rng,
        brownian=a1111.seeds.brownian,
        options=a1111.options,
        discard_penultimate=a1111.discard_penultimate,
        # A1111's Align Your Steps picks its table by the model's architecture.
        schedule=replace(a1111.schedule, sdxl=cond.family.startswith("sdxl")),
        sgm_noise_multiplier=a1111.sgm_noise_multiplier,
    )
    guidance = _a1111_guidance(pipe, scheduler, cond, plan)
    # With AND the hooks give the UNet every part at every call (prompt editing included).
    kwargs: dict[str, Any] = cond._tensor_kwargs() if cond.composable else cond.pipeline_kwargs()
    kwargs["num_inference_steps"] = plan.steps
    if settings.cfg_scale is not None:
        kwargs["guidance_scale"] = settings.cfg_scale
    kwargs["width"], kwargs["height"] = width, height
    kwargs["latents"] = latents.to(device=device, dtype=pipe.unet.dtype)
    pipe.scheduler = scheduler
    if guidance is not None:
        guidance.install(kwargs["prompt_embeds"])
    return kwargs
