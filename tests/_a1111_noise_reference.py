"""A second reading of A1111's noise, written from the descriptions, never importing promptweights.

Sources of the rules below (A1111 v1.10.1): the webui wiki's "Features" page (Variations, Seed
resize) and the settings' help for "Eta noise seed delta" and "Random number generator source",
read together with what ``modules/rng.py`` and ``modules/processing.py`` are documented to do:

* image ``i`` of a job has seed ``Seed + i`` (``Seed`` for all when a variation strength is set) and
  variation seed ``Variation seed + i``;
* an image's noise is the first normal draw of a generator seeded with its seed;
* a variation mixes the seed's and the variation seed's noise spherically by the strength, the
  cosine taken along the latent's height, per channel and column; near-parallel noise (mean cosine
  above 0.9995) is mixed linearly instead, as ``low * strength + high * (1 - strength)``;
* "Seed resize from W×H" draws those noises at ``(C, H//8, W//8)`` and puts them in the centre of
  the image's own first draw; a larger old size is cut by the same number of pixels on both sides
  (the offset rounded towards minus infinity, so an odd difference leaves the last row or column
  alone);
* the step noise of ancestral samplers continues the image's generators, or, with a non-zero ENSD,
  comes from fresh generators seeded with ``seed + ENSD``;
* the ``NV`` source is Philox4x32-10 (Salmon et al. 2011) keyed with the seed's two 32-bit halves,
  element ``i`` of draw ``k`` at counter ``(k, 0, i, 0)``, and cuRAND's Box–Muller on the first
  two output words (the sine branch).

Everything here is scalar or loop-shaped on purpose: it shares no code with the library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox_block(counter: Sequence[int], key: Sequence[int], rounds: int = 10) -> list[int]:
    """One Philox4x32 block, one word at a time, from the paper's round function."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(rounds):
        if r > 0:
            k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
        p0, p1 = M0 * c0, M1 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK, (p0 >> 32) ^ c3 ^ k1, p0 & MASK
    return [c0, c1, c2, c3]


def nv_numbers(seed: int, draw: int, count: int) -> list[float]:
    """The ``NV`` source's draw number ``draw`` (0-based) of ``count`` numbers after seeding."""
    key = (seed & MASK, seed >> 32)
    numbers = []
    for index in range(count):
        x, y, _, _ = philox_block((draw, 0, index, 0), key)
        u = (x + 0.5) * 2.0**-32  # in (0, 1]
        v = (y + 0.5) * 2.0**-32 * 2 * math.pi
        numbers.append(math.sqrt(-2 * math.log(u)) * math.sin(v))
    return numbers


class ReferenceStream:
    """A seeded normal stream of one source: successive draws of a given shape."""

    def __init__(self, seed: int, source: str) -> None:
        self.seed, self.source, self.draws = seed, source, 0
        self.torch_generator = torch.Generator().manual_seed(seed) if source == "CPU" else None

    def draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        if self.torch_generator is not None:
            return torch.randn(shape, generator=self.torch_generator)
        count = math.prod(shape)
        values = nv_numbers(self.seed, self.draws, count)
        self.draws += 1
        return torch.tensor(values, dtype=torch.float64).reshape(shape).float()


def mix(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """The variation mix of two ``(C, H, W)`` noises, column by column."""
    channels, _, width = low.shape
    cosines = torch.empty(channels, width, dtype=torch.float64)
    for c in range(channels):
        for w in range(width):
            a, b = low[c, :, w].double(), high[c, :, w].double()
            cosines[c, w] = torch.dot(a / a.norm(), b / b.norm())
    if cosines.mean() > 0.9995:
        return low * strength + high * (1 - strength)
    out = torch.empty_like(low, dtype=torch.float64)
    for c in range(channels):
        for w in range(width):
            angle = math.acos(min(1.0, max(-1.0, float(cosines[c, w]))))
            weight_low = math.sin((1 - strength) * angle) / math.sin(angle)
            weight_high = math.sin(strength * angle) / math.sin(angle)
            out[c, :, w] = weight_low * low[c, :, w].double() + weight_high * high[c, :, w].double()
    return out.float()


def _span(size: int, old: int) -> tuple[int, int, int]:
    """(target start, source start, length) along one axis for centring ``old`` in ``size``."""
    offset = (size - old) // 2  # rounded towards minus infinity
    if offset >= 0:
        return offset, 0, old
    return 0, -offset, old + 2 * offset


def centre(target: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``old`` put in the middle of ``target``, pixel by pixel."""
    out = target.clone()
    ty, sy, h = _span(target.shape[1], old.shape[1])
    tx, sx, w = _span(target.shape[2], old.shape[2])
    for y in range(h):
        for x in range(w):
            out[:, ty + y, tx + x] = old[:, sy + y, sx + x]
    return out


def reference_noise(
    shape: tuple[int, int, int],
    seeds: Sequence[int],
    *,
    subseeds: Sequence[int] = (),
    strength: float = 0.0,
    resize_from: tuple[int, int] | None = None,  # (height, width) in pixels
    source: str = "CPU",
    ensd: int = 0,
    steps: int = 0,
) -> list[torch.Tensor]:
    """The initial noise, then ``steps`` step noises, each ``(batch, C, H, W)``."""
    old_shape = (
        shape if resize_from is None else (shape[0], resize_from[0] // 8, resize_from[1] // 8)
    )
    streams, initial = [], []
    for i, seed in enumerate(seeds):
        own = ReferenceStream(seed, source)
        if old_shape == shape:
            noise = own.draw(shape)
        else:
            noise = ReferenceStream(seed, source).draw(old_shape)
        if strength != 0:
            variation = ReferenceStream(subseeds[i] if i < len(subseeds) else 0, source)
            noise = mix(strength, noise, variation.draw(old_shape))
        if old_shape != shape:
            noise = centre(own.draw(shape), noise)
        initial.append(noise)
        streams.append(ReferenceStream(seed + ensd, source) if ensd else own)
    steps_noise = [torch.stack([stream.draw(shape) for stream in streams]) for _ in range(steps)]
    return [torch.stack(initial), *steps_noise]


def job_seeds(seed: int, subseed: int, count: int, strength: float) -> tuple[list[int], list[int]]:
    """Seeds and variation seeds of a job's ``count`` images."""
    if strength == 0:
        return [seed + i for i in range(count)], [subseed + i for i in range(count)]
    return [seed] * count, [subseed + i for i in range(count)]
