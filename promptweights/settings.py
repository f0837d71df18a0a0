"""Clip skip has one convention inside promptweights: A1111's "Clip skip N" (1: the last layer).

Infotexts, :func:`promptweights.compare.compare` and :class:`promptweights.encoders.TextEncoder`
take it so. Only the diffusers-facing surfaces that mirror a pipeline's own ``clip_skip`` argument
(``promptweights.diffusers.encode(clip_skip=)``, ``Rerun.clip_skip``, the ``encode`` section of
``infotext --to-diffusers``) use the pipelines' convention, ``N - 1`` with ``None`` for the last
layer; :func:`pipeline_clip_skip` and :func:`a1111_clip_skip` are the only places that convert
between the two.

It sits in the language layer (it loads no model library), so the command line and ``compare``
use it without importing the adapter.
"""

from __future__ import annotations

__all__ = ["a1111_clip_skip", "pipeline_clip_skip"]


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
