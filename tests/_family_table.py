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

from _tiny_llm import tiny_flux2, tiny_qwen_image, tiny_z_image
from _tiny_llm2 import tiny_hidream, tiny_kolors, tiny_lumina2, tiny_sana
from _tiny_pipelines import tiny_chroma, tiny_flux, tiny_pixart, tiny_sd3, tiny_wan

__all__ = [
    "CLASSES",
    "LLM_CLASSES",
    "LLM_ROWS",
    "ROWS",
    "T5_LENGTH",
    "Row",
    "family",
    "pipeline",
    "row",
]

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
        length: the ``max_sequence_length`` of every call (long enough for the test prompts
            past an LLM family's template: Flux.2's system message, Lumina 2's system prompt).
        needs: a module the builder imports that a plain clone may lack (the test skips).
    """

    build: Callable[[], Any]
    size: int = 8
    call: dict[str, Any] = field(default_factory=dict)
    guided: dict[str, Any] = field(default_factory=dict)
    family: str = ""
    negatives: bool = True
    length: int = T5_LENGTH
    needs: str = ""


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


def _lumina2() -> Any:
    """Lumina 2 with the scale factor of its tiny VAE (1: it does not downsample; the pipeline
    assumes 8), so that a cell's image has the size it was asked for and re-runs at it."""
    pipe = tiny_lumina2()
    pipe.vae_scale_factor = 1
    return pipe


#: Every decoder-LLM family's tiny pipeline (tests/_tiny_llm.py, tests/_tiny_llm2.py): encode,
#: two steps, compare and re-runs, editing, AND (tests/test_every_family.py and
#: tests/test_llm_editing.py).
LLM_ROWS: dict[str, Row] = {
    "qwen-image": Row(tiny_qwen_image, size=32, length=32),
    "z-image": Row(tiny_z_image, size=32, length=32),
    "flux2": Row(tiny_flux2, size=16, length=64, negatives=False),
    "flux2-klein": Row(lambda: tiny_flux2("Klein"), size=16, length=32),
    "lumina2": Row(_lumina2, size=16, length=128),
    "sana": Row(tiny_sana, size=32, call={"use_resolution_binning": False}, length=32),
    "kolors": Row(tiny_kolors, size=16, length=32, needs="sentencepiece"),
    "hidream": Row(tiny_hidream, size=16),
}

#: Other pipeline classes of the LLM families whose denoiser batch differs: PAG batches
#: ``[uncond, cond, perturbed cond]`` (editing runs there; AND is refused).
LLM_CLASSES: dict[str, Row] = {
    "kolors-pag": Row(
        lambda: tiny_kolors("PAG"), size=16, length=32, needs="sentencepiece", family="kolors"
    ),
    "sana-pag": Row(
        lambda: tiny_sana("PAG"),
        size=32,
        call={"use_resolution_binning": False},
        length=32,
        family="sana",
    ),
}

_BUILT: dict[str, Any] = {}


def row(name: str) -> Row:
    """The row of a family (:data:`ROWS`) or pipeline class (:data:`CLASSES`)."""
    for table in (ROWS, LLM_ROWS, LLM_CLASSES):
        if name in table:
            return table[name]
    return CLASSES[name]


def family(name: str) -> str:
    """The family of a row."""
    return row(name).family or name


def pipeline(name: str) -> Any:
    """The row's pipeline, built once per test session (progress bar off)."""
    if name not in _BUILT:
        if row(name).needs:
            import pytest

            pytest.importorskip(row(name).needs)
        pipe = row(name).build()
        pipe.set_progress_bar_config(disable=True)
        _BUILT[name] = pipe
    return _BUILT[name]
