"""Re-running an A1111 infotext: :func:`plan_rerun` reads it, :func:`from_infotext` runs it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from promptweights.errors import UnsupportedPipelineError, warn_or_raise
from promptweights.infotext import SCHEDULER_KEY, UNSUPPORTED_SETTINGS, unreproducible
from promptweights.settings import run_settings
from promptweights.strategies import get_normalization, get_strategy

from .encode import encode


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
    """

    params: Any
    sampler: Any
    steps: int
    strategy: str
    clip_skip: int | None
    unsupported: tuple[str, ...]
    scheduler: str | None = None
    normalization: str = "none"

    def warnings(self) -> list[str]:
        """What :func:`from_infotext` cannot do as the text says, one sentence each
        (:func:`promptweights.infotext.unreproducible`)."""
        return unreproducible(self.params)


def _is_image_path(text: str) -> bool:
    if "\n" in text or Path(text).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        return False
    try:
        return Path(text).is_file()
    except OSError:  # e.g. a one-line infotext too long to be a file name
        return False


def plan_rerun(source: Any, *, a1111_fallback: bool = False) -> Rerun:
    """Read an infotext and resolve what re-running it needs.

    Args:
        source: a :class:`~promptweights.infotext.GenerationParameters`, infotext as a ``str``,
            or an image (path, bytes or binary file) holding one.
        a1111_fallback: read an unknown sampler as DPM++ 2M, as A1111 silently does.

    Returns:
        The plan.

    Raises:
        InfotextError: unreadable text or image.
        UnknownNameError: an unknown sampler (without the fallback) or strategy.
        UnsupportedPipelineError: a sampler diffusers has no scheduler for (with the reason).
    """
    from promptweights import infotext

    if isinstance(source, infotext.GenerationParameters):
        params = source
    elif isinstance(source, str) and not _is_image_path(source):
        params = infotext.parse(source)
    else:
        params = infotext.read_image(source)
    written = params.written
    own = written.get(SCHEDULER_KEY) if "Sampler" not in written else None
    choice = None if own else params.sampler_choice(a1111_fallback=a1111_fallback)
    if choice is not None and choice.scheduler_class is None:
        raise UnsupportedPipelineError(
            f"no diffusers scheduler for {choice.sampler}: {choice.reason}"
        )
    settings = run_settings(params)
    get_strategy(settings.strategy)  # unknown names fail here, before any model work
    unsupported = tuple(key for key in UNSUPPORTED_SETTINGS if key in written)
    if params.settings.get("RNG", "GPU") not in ("GPU", "CPU"):
        unsupported += (f"RNG: {params.settings['RNG']}",)
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
    )


def from_infotext(
    pipe: Any, source: Any, *, a1111_fallback: bool = False, strict: bool = False, **options: Any
) -> dict[str, Any]:
    """Configure ``pipe``'s scheduler for an A1111 infotext and return the call's arguments.

    The prompt and negative are encoded with :func:`encode` (the ``Emphasis`` mode picks the
    strategy, ``Clip skip`` the layer, ``Old prompt editing timelines`` the timeline), the sampler
    and schedule type pick and configure the diffusers scheduler (explicit ``sigmas`` where the
    schedule is not a diffusers option), and steps, CFG scale, size and seed (a CPU
    ``torch.Generator``) become the call's arguments. The same infotext on the same device and
    model gives the same image (and the same torch thread count: float sums may round otherwise).
    Settings diffusers cannot reproduce (hires fix, variation seeds, ENSD…) are listed by
    :func:`plan_rerun` and are never dropped silently: each is a
    :class:`~promptweights.errors.PromptweightsWarning`, or with ``strict=True`` an
    :class:`~promptweights.errors.UnreproducibleError` before any model work. A1111's own noise
    generator differs from torch's, so an A1111 seed gives a different picture than in A1111.
    An image ``promptweights compare`` made with the model's own scheduler names it under
    ``Diffusers scheduler`` instead of ``Sampler``: the pipeline's scheduler is then kept.

    Args:
        pipe: a pipeline :func:`encode` supports.
        source: parameters, infotext, or an image holding one (PNG, JPEG, WebP).
        a1111_fallback: read an unknown sampler as DPM++ 2M, as A1111 does.
        strict: raise instead of warning about what cannot be reproduced (and pass
            ``strict`` on to :func:`encode`, for extra-network tags it cannot load).
        **options: passed on to :func:`encode` (``lora_dir``, ``exact``…).

    Returns:
        Keyword arguments for ``pipe(**kwargs)``. The pipeline's scheduler is replaced only once
        everything else succeeded.

    Raises:
        UnsupportedPipelineError: a sampler without a diffusers scheduler, or an AND prompt (use
            :func:`encode` and ``with cond.attach(pipe):``).
        UnreproducibleError: with ``strict``, a setting that cannot be reproduced.
    """
    from promptweights.samplers import model_sigmas, schedule_sigmas

    plan = plan_rerun(source, a1111_fallback=a1111_fallback)
    settings = run_settings(plan.params)
    for message in plan.warnings():
        warn_or_raise(message, strict=strict)
    scheduler, second_order = _scheduler(pipe, plan, strict)
    cond = encode(
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
    if cond.composable:
        raise UnsupportedPipelineError(
            "the prompt uses AND: encode it with promptweights.diffusers.encode and run the "
            "pipeline inside `with cond.attach(pipe):`"
        )
    kwargs = cond.pipeline_kwargs()
    kwargs["num_inference_steps"] = plan.steps
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
    pipe.scheduler = scheduler
    return kwargs


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
