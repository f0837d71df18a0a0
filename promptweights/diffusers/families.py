"""The pipeline families the adapter knows, and how a pipeline's family is found."""

from __future__ import annotations

from typing import Any

from promptweights.errors import (
    UnsupportedPipelineError,
)

#: Pipeline families this adapter knows, by the name :func:`family_of` returns.
FAMILIES = ("sd", "sdxl", "sdxl-refiner", "sd3", "flux")


def family_of(pipe: Any) -> str:
    """Return the family of a diffusers pipeline: one of :data:`FAMILIES`.

    Args:
        pipe: a diffusers pipeline.

    Returns:
        ``"sd"`` (SD 1.x/2.x), ``"sdxl"``, ``"sdxl-refiner"`` (OpenCLIP-G only), ``"sd3"`` or
        ``"flux"``.

    Raises:
        UnsupportedPipelineError: for any other pipeline.
    """
    components = getattr(pipe, "components", {})
    name = type(pipe).__name__
    if "transformer" in components and "text_encoder_3" in components:
        return "sd3"
    if "transformer" in components and name.startswith("Flux"):
        return "flux"
    if "unet" in components and "text_encoder_2" in components:
        return "sdxl" if components.get("text_encoder") is not None else "sdxl-refiner"
    if "unet" in components and components.get("text_encoder") is not None:
        return "sd"
    raise UnsupportedPipelineError(
        f"promptweights.diffusers does not know {name}; it supports SD 1.x/2.x, SDXL (base and "
        "refiner), SD3/3.5 and Flux.1 pipelines"
    )
