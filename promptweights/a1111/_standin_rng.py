"""Stand-in for ``promptweights.a1111.rng`` (being written in parallel): A1111's CPU noise only.

Same interface as the agreed ``ImageRNG`` and ``brownian_noise_sampler``; replaced by the real
module once it lands. Source ``"CPU"`` only.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor


def _randn(seed: int, shape: Sequence[int], generator: torch.Generator | None = None) -> Tensor:
    if generator is None:
        generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator)


def _slerp(val: float, low: Tensor, high: Tensor) -> Tensor:
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (
        torch.sin(val * omega) / so
    ).unsqueeze(1) * high


class ImageRNG:
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
        device: Any = "cpu",
        eta_noise_seed_delta: int = 0,
    ) -> None:
        if source != "CPU" or seed_resize_from_h > 0 or seed_resize_from_w > 0:
            raise NotImplementedError("the stand-in RNG has the CPU source only")
        self.shape = tuple(int(s) for s in shape)
        self.seeds = list(seeds)
        self.subseeds = list(subseeds)
        self.subseed_strength = subseed_strength
        self.device = device
        self.ensd = eta_noise_seed_delta
        self.generators = [torch.Generator("cpu").manual_seed(int(s)) for s in self.seeds]
        self.is_first = True

    def first(self) -> Tensor:
        xs = []
        for i, (seed, generator) in enumerate(zip(self.seeds, self.generators, strict=True)):
            sub = None
            if self.subseeds and self.subseed_strength != 0:
                subseed = self.subseeds[i] if i < len(self.subseeds) else 0
                sub = _randn(subseed, self.shape)
            noise = _randn(seed, self.shape, generator)
            if sub is not None:
                noise = _slerp(self.subseed_strength, noise, sub)
            xs.append(noise)
        if self.ensd:
            self.generators = [
                torch.Generator("cpu").manual_seed(int(s) + self.ensd) for s in self.seeds
            ]
        return torch.stack(xs).to(self.device)

    def next(self) -> Tensor:
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators]).to(
            self.device
        )


@contextlib.contextmanager
def _seeded_torchsde() -> Iterator[None]:
    brownian_interval: Any = importlib.import_module("torchsde._brownian.brownian_interval")

    original = brownian_interval._randn

    def randn(size: Any, dtype: Any, device: Any, seed: int) -> Tensor:
        return _randn(seed, size).to(device=device, dtype=dtype)

    brownian_interval._randn = randn
    try:
        yield
    finally:
        brownian_interval._randn = original


class _Brownian:
    def __init__(self, x: Tensor, sigma_min: Tensor, sigma_max: Tensor, seeds: Sequence[int]):
        torchsde = importlib.import_module("torchsde")

        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        w0 = torch.zeros_like(x[0])
        with _seeded_torchsde():
            self.trees = [torchsde.BrownianTree(t0, w0, t1, entropy=s) for s in seeds]

    def __call__(self, sigma: Tensor, sigma_next: Tensor) -> Tensor:
        a, b = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        lo, hi, sign = (a, b, 1) if a < b else (b, a, -1)
        with _seeded_torchsde():
            w = torch.stack([tree(lo, hi) for tree in self.trees]) * sign
        return w / (b - a).abs().sqrt()


def brownian_noise_sampler(
    x: Tensor, sigma_min: Tensor, sigma_max: Tensor, seeds: Sequence[int], **_: Any
) -> Any:
    return _Brownian(x, sigma_min, sigma_max, seeds)
