"""A1111's noise: seeds, variation seeds, "Seed resize from", the CPU/GPU/NV sources, ENSD.

This is the noise AUTOMATIC1111's stable-diffusion-webui v1.10.1 feeds its samplers (its
``modules/rng.py``, ``modules/processing.py`` and ``modules/sd_samplers_common.py``), rebuilt so
that a diffusers pipeline can start from the same latent and add the same step noise:

* **Seeds of a batch.** Image ``i`` of a job (batch count × batch size images) gets the seed
  ``Seed + i``, or ``Seed`` for every image when a variation seed is used (strength ≠ 0); its
  variation seed is ``Variation seed + i`` (:func:`batch_seeds`). A batch of one job iteration
  is the slice ``[n·batch_size, (n+1)·batch_size)`` of those lists.
* **Initial noise** (:meth:`ImageRNG.first`): per image, the first draw of a generator seeded
  with the image's seed, shaped like the latent ``(C, H/8, W/8)``. With a variation seed, it is
  :func:`slerp` ``(strength, noise, variation noise)``. With "Seed resize from ``w×h``" the seed's
  noise (and the variation noise) are drawn at ``(C, h//8, w//8)`` instead and pasted, centred
  (cropped when larger), into the image's own first draw at the latent size.
* **Step noise** (:meth:`ImageRNG.next`): A1111 replaces k-diffusion's ``torch.randn_like`` so that
  every draw of an ancestral sampler (Euler a, DPM2 a, DPM++ 2S a, DPM fast/adaptive, and Euler,
  Heun, DPM2 with ``s_churn > 0``) comes from per-image generators: one ``(C, H, W)`` draw per image
  per call, the batch stacked. Those generators are the initial noise's own, continuing after its
  draw — unless **ENSD** (Settings → "Eta noise seed delta", infotext ``ENSD``) is non-zero: then
  right after the initial noise every image's generator is replaced by a fresh one seeded with
  ``seed + ENSD``. (A1111 reseeds whatever the sampler; it writes ``ENSD`` into the infotext only
  for samplers that draw step noise.)
* **Sources** (Settings "Random number generator source", infotext ``RNG``, absent = ``GPU``):
  ``CPU`` is torch's CPU generator, ``GPU`` torch's CUDA generator (A1111 falls back to the CPU
  generator on Apple's ``mps``), ``NV`` the Philox generator of :mod:`promptweights.a1111.philox`,
  which gives on any machine the first draw that ``GPU`` gives on an NVIDIA card.
* **Brownian noise** (:func:`brownian_noise_sampler`, from :mod:`promptweights.a1111.brownian`):
  DPM++ SDE and DPM++ 2M SDE (and 3M SDE) draw their noise from one ``torchsde.BrownianTree`` per
  image, seeded with the image's seed (not with ENSD, and not from the noise source), spanning the
  smallest non-zero and the largest sigma of the schedule (:func:`sigma_bounds`). It draws with the
  latent's device's generator, as A1111 does; ``device="NV"`` gives CUDA's numbers on any machine.

Everything returns float32 tensors (A1111's default dtype), stacked as ``(batch, C, H, W)``.

>>> rng = ImageRNG((4, 8, 8), [1, 2], source="NV", ensd=31337)
>>> initial, step = rng.first(), rng.next()
>>> tuple(initial.shape), bool(torch.equal(step[0], randn(1 + 31337, (4, 8, 8), source="NV")))
((2, 4, 8, 8), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch

from promptweights.a1111 import philox
from promptweights.a1111._checks import (
    SOURCES,
    DeviceLike,
    Source,
    integer,
    seed_list,
    source_name,
    torch_device,
)
from promptweights.a1111.brownian import BrownianNoiseSampler, brownian_noise_sampler, sigma_bounds
from promptweights.a1111.philox import check_seed
from promptweights.errors import ArgumentTypeError, DeviceUnavailableError, InvalidArgumentError

__all__ = [
    "SOURCES",
    "BrownianNoiseSampler",
    "Generator",
    "ImageRNG",
    "Source",
    "batch_seeds",
    "brownian_noise_sampler",
    "create_generator",
    "randn",
    "randn_without_seed",
    "sigma_bounds",
    "slerp",
]

#: A generator of any source: torch's (``CPU``, ``GPU``) or the Philox one (``NV``).
Generator = torch.Generator | philox.Generator

# "Seed resize from" is given in pixels; A1111 divides by 8 whatever the model's latent scale.
_RESIZE_SCALE = 8
# Above this mean cosine A1111 interpolates linearly (and swaps the ends, see slerp).
_SLERP_LINEAR_ABOVE = 0.9995


def _generator_device(source: Source, device: torch.device) -> torch.device:
    """Where A1111 draws: the CPU, or the CUDA device (``GPU``, except on ``mps``)."""
    if source != "GPU" or device.type == "mps":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "the 'GPU' noise source is torch's CUDA generator, and CUDA is not available here; "
            "source='NV' gives the same initial noise on the CPU"
        )
    return device if device.type == "cuda" else torch.device("cuda")


def create_generator(seed: int, source: str = "CPU", device: DeviceLike = "cpu") -> Generator:
    """A fresh generator of ``source`` seeded with ``seed``, as A1111's ``create_generator``.

    Args:
        seed: an integer in ``[0, 2**64)``.
        source: ``"CPU"``, ``"GPU"`` or ``"NV"`` (see :data:`SOURCES`).
        device: the device the noise is for; with ``"GPU"`` a CUDA device draws there.

    Raises:
        ArgumentTypeError: ``seed`` is not an integer, ``device`` not a device.
        InvalidArgumentError: ``seed`` outside ``[0, 2**64)``, an unknown device.
        UnknownNameError: an unknown ``source``.
        DeviceUnavailableError: ``"GPU"`` without CUDA.
    """
    value = check_seed(seed)
    kind = source_name(source)
    if kind == "NV":
        return philox.Generator(value)
    return torch.Generator(_generator_device(kind, torch_device(device))).manual_seed(value)


def randn_without_seed(
    shape: Sequence[int], generator: Generator, device: DeviceLike | None = None
) -> torch.Tensor:
    """The next float32 draw of ``shape`` from ``generator`` (A1111's ``randn_without_seed``).

    Args:
        shape: the sizes.
        generator: from :func:`create_generator` (a ``torch.Generator`` or a Philox one).
        device: where to put the result; by default where it was drawn.

    Raises:
        ArgumentTypeError: ``generator`` of another type, ``shape`` not a sequence.
        InvalidArgumentError: a negative size.
    """
    sizes = philox.check_shape(shape)
    if isinstance(generator, philox.Generator):
        noise = generator.randn(sizes)
    elif isinstance(generator, torch.Generator):
        noise = torch.randn(
            sizes, generator=generator, device=generator.device, dtype=torch.float32
        )
    else:
        raise ArgumentTypeError(
            f"generator must be a torch.Generator or a philox.Generator, got {generator!r}"
        )
    return noise if device is None else noise.to(torch_device(device))


def randn(
    seed: int, shape: Sequence[int], source: str = "CPU", device: DeviceLike = "cpu"
) -> torch.Tensor:
    """The first float32 draw of ``shape`` after seeding ``source`` with ``seed``, on ``device``.

    This is A1111's ``randn(seed, shape)``: what every seed's noise starts from.

    >>> seeded = torch.Generator().manual_seed(7)
    >>> bool(torch.equal(randn(7, (2, 3)), torch.randn(2, 3, generator=seeded)))
    True

    Raises:
        The errors of :func:`create_generator` and :func:`randn_without_seed`.
    """
    return randn_without_seed(shape, create_generator(seed, source, device), device)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's spherical interpolation of variation-seed noise, its quirks kept.

    The cosines are taken along dimension 1 (for one image's ``(C, H, W)`` noise: down each column
    of each channel), and every column is interpolated on its own great circle by ``val`` from
    ``low`` (0) to ``high`` (1). When the mean cosine exceeds 0.9995, A1111 returns
    ``low·val + high·(1 - val)`` instead: linear, with the ends the other way round.

    Args:
        val: the variation strength.
        low: the seed's noise.
        high: the variation seed's noise, of the same shape (at least two dimensions).

    Raises:
        InvalidArgumentError: shapes that differ or have fewer than two dimensions.
    """
    if low.shape != high.shape or low.dim() < 2:
        raise InvalidArgumentError(
            f"slerp needs two tensors of one shape with at least two dimensions, "
            f"got {tuple(low.shape)} and {tuple(high.shape)}"
        )
    cosine = (low / low.norm(dim=1, keepdim=True) * (high / high.norm(dim=1, keepdim=True))).sum(1)
    if cosine.mean() > _SLERP_LINEAR_ABOVE:
        return low * val + high * (1 - val)
    angle = torch.acos(cosine)
    sine = torch.sin(angle)
    weight_low = (torch.sin((1.0 - val) * angle) / sine).unsqueeze(1)
    weight_high = (torch.sin(val * angle) / sine).unsqueeze(1)
    return weight_low * low + weight_high * high


def batch_seeds(
    seed: int, count: int, *, subseed: int = 0, subseed_strength: float = 0.0
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The seeds and variation seeds of a job's ``count`` images (A1111's ``all_seeds``).

    Image ``i`` gets ``seed + i``, or ``seed`` when ``subseed_strength`` is not 0, and the
    variation seed ``subseed + i``. An A1111 infotext names the seeds of its own image, so to
    redo image ``i`` of a batch alone, pass its ``Seed`` and ``Variation seed`` with ``count=1``.

    >>> batch_seeds(100, 3)
    ((100, 101, 102), (0, 1, 2))
    >>> batch_seeds(100, 2, subseed=7, subseed_strength=0.5)
    ((100, 100), (7, 8))

    Raises:
        ArgumentTypeError, InvalidArgumentError: a seed or count of the wrong type or range.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InvalidArgumentError(f"count must be a non-negative integer, got {count!r}")
    strength = _strength(subseed_strength)
    step = 1 if strength == 0 else 0
    seeds = tuple(check_seed(check_seed(seed) + step * i) for i in range(count))
    subseeds = tuple(
        check_seed(check_seed(subseed, "subseed") + i, "subseed") for i in range(count)
    )
    return seeds, subseeds


def _strength(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ArgumentTypeError(f"subseed_strength must be a number, got {value!r}")
    if not math.isfinite(value):
        raise InvalidArgumentError(f"subseed_strength must be finite, got {value!r}")
    return float(value)


def _latent_shape(shape: object) -> tuple[int, int, int]:
    sizes = philox.check_shape(cast(Sequence[int], shape))
    if len(sizes) != 3 or 0 in sizes:
        raise InvalidArgumentError(
            f"shape must be one image's latent shape (C, H, W) of positive sizes, got {shape!r}"
        )
    return sizes[0], sizes[1], sizes[2]


def _paste_centred(target: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``noise`` centred on ``target`` (both ``(C, H, W)``), cropped where it is larger."""
    _, height, width = target.shape
    _, small_height, small_width = noise.shape
    dx, dy = (width - small_width) // 2, (height - small_height) // 2
    w = small_width if dx >= 0 else small_width + 2 * dx
    h = small_height if dy >= 0 else small_height + 2 * dy
    tx, ty, sx, sy = max(dx, 0), max(dy, 0), max(-dx, 0), max(-dy, 0)
    target[:, ty : ty + h, tx : tx + w] = noise[:, sy : sy + h, sx : sx + w]
    return target


class ImageRNG:
    """The noise of one batch as A1111 draws it: initial noise, then per-step noise.

    Args:
        shape: one image's latent shape ``(C, H, W)`` (``(4, height // 8, width // 8)`` for SD).
        seeds: one seed per image of the batch (see :func:`batch_seeds`).
        subseeds: the variation seeds, one per image; images past its end use 0, as in A1111.
        subseed_strength: "Variation seed strength"; 0 draws no variation noise at all.
        seed_resize_from_h: "Seed resize from" height in pixels; ``<= 0`` (either one) is off.
        seed_resize_from_w: "Seed resize from" width in pixels.
        source: ``"CPU"``, ``"GPU"`` or ``"NV"`` (A1111's ``RNG``; its default is ``"GPU"``).
        device: where the returned noise goes (and where ``"GPU"`` draws, if it is CUDA).
        ensd: "Eta noise seed delta": if not 0, step noise comes from ``seed + ensd``.
        eta_noise_seed_delta: the same under A1111's setting name (give one of the two).

    Raises:
        ArgumentTypeError: arguments of the wrong type.
        InvalidArgumentError: a bad shape, a seed (or ``seed + ensd``) outside ``[0, 2**64)``, a
            non-finite strength, a non-zero strength without ``subseeds``.
        UnknownNameError: an unknown source.
        DeviceUnavailableError: ``"GPU"`` without CUDA.
    """

    def __init__(
        self,
        shape: Sequence[int],
        seeds: Sequence[int],
        *,
        subseeds: Sequence[int] = (),
        subseed_strength: float = 0.0,
        seed_resize_from_h: int = 0,
        seed_resize_from_w: int = 0,
        source: str = "CPU",
        device: DeviceLike = "cpu",
        ensd: int = 0,
        eta_noise_seed_delta: int | None = None,
    ) -> None:
        self.shape = _latent_shape(shape)
        self.seeds = seed_list(seeds, "seeds")
        if not self.seeds:
            raise InvalidArgumentError("seeds must name at least one seed (one per image)")
        self.subseeds = seed_list(subseeds, "subseeds")
        self.subseed_strength = _strength(subseed_strength)
        if self.subseed_strength != 0 and not self.subseeds:
            raise InvalidArgumentError("a non-zero subseed_strength needs subseeds")
        self.seed_resize_from_h = integer(seed_resize_from_h, "seed_resize_from_h")
        self.seed_resize_from_w = integer(seed_resize_from_w, "seed_resize_from_w")
        self.source: Source = source_name(source)
        self.device = torch_device(device)
        self.ensd = integer(ensd, "ensd")
        if eta_noise_seed_delta is not None:
            alias = integer(eta_noise_seed_delta, "eta_noise_seed_delta")
            if self.ensd not in (0, alias):
                raise InvalidArgumentError(
                    f"ensd={self.ensd} and eta_noise_seed_delta={alias} disagree; give one of them"
                )
            self.ensd = alias
        for seed in self.seeds:
            check_seed(seed + self.ensd, "seed + ensd")
        _generator_device(self.source, self.device)  # fail now, not at the first draw
        self._step_generators: list[Generator] | None = None

    def _generator(self, seed: int) -> Generator:
        return create_generator(seed, self.source, self.device)

    def _draw(self, generator: Generator, shape: Sequence[int]) -> torch.Tensor:
        # A1111 moves every draw to the model's device at once: the slerp and the paste run there.
        return randn_without_seed(shape, generator, self.device)

    def _noise_shape(self) -> tuple[int, int, int]:
        if self.seed_resize_from_h <= 0 or self.seed_resize_from_w <= 0:
            return self.shape
        return (
            self.shape[0],
            self.seed_resize_from_h // _RESIZE_SCALE,
            self.seed_resize_from_w // _RESIZE_SCALE,
        )

    def _image_noise(self, index: int, generator: Generator) -> torch.Tensor:
        """Image ``index``'s initial noise; ``generator`` is its own, freshly seeded."""
        seed, noise_shape = self.seeds[index], self._noise_shape()
        resized = noise_shape != self.shape
        noise = self._draw(self._generator(seed) if resized else generator, noise_shape)
        if self.subseed_strength != 0:
            subseed = self.subseeds[index] if index < len(self.subseeds) else 0
            variation = self._draw(self._generator(subseed), noise_shape)
            noise = slerp(self.subseed_strength, noise, variation)
        if resized:
            noise = _paste_centred(self._draw(generator, self.shape), noise)
        return noise

    def first(self) -> torch.Tensor:
        """The initial noise, ``(batch, C, H, W)`` float32, and (re)start the step noise.

        Calling it again starts over from the seeds. (A1111 calls it through the first
        :meth:`next`; :meth:`next` after :meth:`first` gives the first step noise.)
        """
        generators = [self._generator(seed) for seed in self.seeds]
        noise = torch.stack([self._image_noise(i, g) for i, g in enumerate(generators)])
        if self.ensd:
            generators = [self._generator(seed + self.ensd) for seed in self.seeds]
        self._step_generators = generators
        return noise

    def next(self) -> torch.Tensor:
        """The next noise: the initial noise on the first call, then one step noise per call.

        This is what A1111 hands k-diffusion for each ``torch.randn_like`` of a sampler.
        """
        if self._step_generators is None:
            return self.first()
        return torch.stack([self._draw(g, self.shape) for g in self._step_generators])
