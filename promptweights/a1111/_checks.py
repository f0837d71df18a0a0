"""Argument checks shared by :mod:`promptweights.a1111.rng` and :mod:`.brownian`.

Each returns the checked value or raises one of our errors, naming the argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import torch

from promptweights.a1111.philox import check_seed
from promptweights.errors import ArgumentTypeError, InvalidArgumentError, UnknownNameError

Source = Literal["CPU", "GPU", "NV"]
#: The noise sources, as A1111's infotext ``RNG`` names them.
SOURCES: tuple[Source, ...] = ("CPU", "GPU", "NV")
DeviceLike = str | torch.device


def source_name(source: object) -> Source:
    """``source`` as one of :data:`SOURCES` (case-insensitive), or UnknownNameError."""
    if isinstance(source, str) and source.upper() in SOURCES:
        return cast(Source, source.upper())
    raise UnknownNameError("noise source", source, SOURCES)


def torch_device(device: object) -> torch.device:
    """``device`` as a ``torch.device``."""
    if not isinstance(device, str | torch.device):
        raise ArgumentTypeError(f"device must be a str or torch.device, got {device!r}")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise InvalidArgumentError(f"device {device!r} is not a torch device: {exc}") from exc


def integer(value: object, name: str) -> int:
    """``value`` if it is an ``int`` (not a ``bool``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an integer, got {value!r}")
    return value


def seed_list(seeds: object, name: str) -> tuple[int, ...]:
    """``seeds`` as a tuple of seeds in ``[0, 2**64)``."""
    if isinstance(seeds, int | str | bytes) or not isinstance(seeds, Sequence):
        raise ArgumentTypeError(f"{name} must be a sequence of integers, got {seeds!r}")
    return tuple(check_seed(seed, name) for seed in seeds)
