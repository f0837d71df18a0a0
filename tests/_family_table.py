"""One row per model family's tiny pipeline, for the tests that run every family alike
(tests/test_every_family.py): encode, sample two steps, edit, AND, compare and re-run.

A family joins those tests by adding a row here: its builder from ``_tiny_pipelines`` (or its
own ``_tiny_*`` module), the image size its tiny pipeline samples at, and the pipeline-call
options it needs beyond the conditioning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from _tiny_pipelines import tiny_chroma, tiny_flux, tiny_pixart, tiny_sd3, tiny_wan

__all__ = ["CLASSES", "ROWS", "T5_LENGTH", "Row", "family", "pipeline", "row"]

#: ``max_sequence_length`` of every tiny T5 pipeline (the tiny T5 tokenizer's length).
T5_LENGTH = 16


@dataclass(frozen=True)
class Row:
    """A family's tiny pipeline and how to run it.

    Attributes:
        build: makes the pipeline (seeded: two calls give identical weights).
        size: height and width it samples at.
        call: more keyword arguments of every pipeline call (frames, resolution binning…).
        guided: what else turns true classifier-free guidance on, beside ``guidance_scale``
            (Flux.1's ``true_cfg_scale``).
        family: the family's name where the row's key is not it (another pipeline class).
        negatives: whether the pipeline takes a negative prompt (Flux Fill does not).
    """

    build: Callable[[], Any]
    size: int = 8
    call: dict[str, Any] = field(default_factory=dict)
    guided: dict[str, Any] = field(default_factory=dict)
    family: str = ""
    negatives: bool = True


#: Every T5 family's tiny pipeline, by the name :func:`promptweights.diffusers.family_of` gives.
ROWS: dict[str, Row] = {
    "sd3": Row(tiny_sd3),
    "flux": Row(tiny_flux, guided={"true_cfg_scale": 2.0}),
    "chroma": Row(tiny_chroma),
    "pixart": Row(tiny_pixart, call={"use_resolution_binning": False}),
    "wan": Row(tiny_wan, size=16, call={"num_frames": 5}),
}


def _image() -> Any:
    import torch

    return torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _mask() -> Any:
    import torch

    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:] = 1.0
    return mask


#: Other pipeline classes of a family, whose transformer inputs differ (Kontext appends the image's
#: tokens to the sequence, Fill its latents to the channels): AND and editing run on them too.
CLASSES: dict[str, Row] = {
    "flux-kontext": Row(
        lambda: tiny_flux(variant="Kontext"),
        call={"image": _image(), "_auto_resize": False, "max_area": 64},
        guided={"true_cfg_scale": 2.0},
        family="flux",
    ),
    "flux-fill": Row(
        lambda: tiny_flux(variant="Fill", in_channels=12),
        call={"image": _image(), "mask_image": _mask()},
        family="flux",
        negatives=False,
    ),
}

_BUILT: dict[str, Any] = {}


def row(name: str) -> Row:
    """The row of a family (:data:`ROWS`) or pipeline class (:data:`CLASSES`)."""
    return ROWS[name] if name in ROWS else CLASSES[name]


def family(name: str) -> str:
    """The family of a row."""
    return row(name).family or name


def pipeline(name: str) -> Any:
    """The row's pipeline, built once per test session (progress bar off)."""
    if name not in _BUILT:
        pipe = row(name).build()
        pipe.set_progress_bar_config(disable=True)
        _BUILT[name] = pipe
    return _BUILT[name]
