"""What an infotext asks a re-run for, read once: :func:`run_settings` and the clip-skip rule.

:func:`promptweights.diffusers.plan_rerun` and :func:`~promptweights.diffusers.from_infotext`,
:func:`promptweights.compare.settings_from_infotext` and ``promptweights infotext
--to-diffusers`` all read an infotext's settings through :func:`run_settings`; each then applies
its own defaults for what the text leaves out (the re-run takes A1111's 20 steps and DPM++ 2M,
``compare`` its own arguments' defaults).

Clip skip has one convention inside promptweights: A1111's "Clip skip N" (1: the last layer,
2: the penultimate one), as infotexts, :func:`promptweights.compare.compare` and
:class:`promptweights.encoders.TextEncoder` take it. Only the diffusers-facing surfaces that
mirror a pipeline's own ``clip_skip`` argument (``promptweights.diffusers.encode(clip_skip=)``,
``Rerun.clip_skip``, the ``encode`` section of ``infotext --to-diffusers``) use the pipelines'
convention, ``N - 1`` with ``None`` for the last layer; :func:`pipeline_clip_skip` and
:func:`a1111_clip_skip` are the only places that convert between the two.

It sits in the language layer (it reads parameters, loads no model library), so the command line
and ``compare`` use it without importing the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RunSettings", "a1111_clip_skip", "pipeline_clip_skip", "run_settings"]


def pipeline_clip_skip(clip_skip: int) -> int | None:
    """A1111's "Clip skip N" as the pipelines' ``clip_skip`` argument.

    >>> pipeline_clip_skip(1), pipeline_clip_skip(2), pipeline_clip_skip(0)
    (None, 1, None)
    """
    return clip_skip - 1 if clip_skip > 1 else None


def a1111_clip_skip(clip_skip: int | None) -> int:
    """The pipelines' ``clip_skip`` argument (``None`` or 0: the last layer) as A1111's "Clip skip".

    >>> a1111_clip_skip(None), a1111_clip_skip(1)
    (1, 2)
    """
    return 1 + (clip_skip or 0)


@dataclass(frozen=True)
class RunSettings:
    """The settings of one infotext a re-run uses; ``None`` where the text does not hold them.

    Attributes:
        prompt: the prompt.
        negative_prompt: the negative prompt.
        strategy: the weighting strategy (``Prompt weighting``, else the ``Emphasis`` mode's).
        normalization: ``Token normalization`` as written by promptweights.
        clip_skip: A1111's ``Clip skip`` (1 when absent).
        steps: ``Steps``.
        sampler: ``Sampler``, with a ``Schedule type`` other than Automatic appended.
        cfg_scale: ``CFG scale``.
        seed: ``Seed``.
        width: the width, when ``Size`` gives both sides.
        height: the height, when ``Size`` gives both sides.
        old_timelines: ``Old prompt editing timelines: True``.
    """

    prompt: str
    negative_prompt: str
    strategy: str
    normalization: str | None
    clip_skip: int
    steps: int | None
    sampler: str | None
    cfg_scale: float | None
    seed: int | None
    width: int | None
    height: int | None
    old_timelines: bool

    @property
    def pipeline_clip_skip(self) -> int | None:
        """:attr:`clip_skip` as the pipelines' ``clip_skip`` argument."""
        return pipeline_clip_skip(self.clip_skip)


def run_settings(params: Any) -> RunSettings:
    """Read the settings a re-run uses from parsed parameters.

    Args:
        params: a :class:`promptweights.infotext.GenerationParameters`.

    Returns:
        The settings.

    >>> from promptweights.infotext import parse
    >>> text = "a cat\\nSteps: 9, Sampler: Euler, Schedule type: Karras, Clip skip: 2, Size: 8x16"
    >>> settings = run_settings(parse(text))
    >>> settings.sampler, settings.clip_skip, settings.pipeline_clip_skip, settings.width
    ('Euler Karras', 2, 1, 8)
    """
    sampler = None
    if params.sampler:
        schedule = params.schedule_type
        sampler = (
            params.sampler if schedule in ("", "Automatic") else f"{params.sampler} {schedule}"
        )
    sized = bool(params.width and params.height)
    return RunSettings(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        strategy=params.strategy,
        normalization=params.written.get("Token normalization"),
        clip_skip=params.clip_skip,
        steps=params.steps,
        sampler=sampler,
        cfg_scale=params.cfg_scale,
        seed=params.seed,
        width=params.width if sized else None,
        height=params.height if sized else None,
        old_timelines=params.settings.get("Old prompt editing timelines") == "True",
    )
