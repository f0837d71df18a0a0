"""The Brownian noise of A1111's SDE samplers (DPM++ SDE, DPM++ 2M SDE, DPM++ 3M SDE).

A1111 v1.10.1 (``Sampler.create_noise_sampler`` in ``modules/sd_samplers_common.py``) hands these
samplers k-diffusion's ``BrownianTreeNoiseSampler`` built from the scaled initial latent, the
schedule's smallest non-zero and largest sigma (:func:`sigma_bounds`) and the batch's seeds —
``Seed`` plus the batch position, without ENSD, whatever the noise-source setting. k-diffusion makes
one ``torchsde.BrownianTree`` per image with ``entropy=seed``, so an image's noise does not depend
on its batch (the reason A1111 does it), and the noise for a step from ``sigma`` to ``sigma_next``
is the tree's increment divided by ``sqrt(|sigma_next - sigma|)``.

The tree draws its numbers with torch's generator on the latent's device: an image A1111 made on an
NVIDIA GPU has CUDA's numbers in it. ``device="NV"`` computes those numbers on any machine: every
draw of the tree is the first draw of a freshly seeded generator, which is what A1111's NV source
(:mod:`promptweights.a1111.philox`) reproduces. torchsde has no hook for this, so while such a tree
draws, torchsde's module-level draw function defers to Philox on that thread only (installed once,
it leaves every other use of torchsde as it was).
"""

from __future__ import annotations

import importlib
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from promptweights.a1111 import philox
from promptweights.a1111._checks import DeviceLike, seed_list, source_name, torch_device
from promptweights.errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["BrownianNoiseSampler", "brownian_noise_sampler", "sigma_bounds"]

NoiseSampler = Callable[[float | torch.Tensor, float | torch.Tensor], torch.Tensor]

_NV = "NV"
_nv_state = threading.local()
_install_lock = threading.Lock()


def sigma_bounds(sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Brownian tree's span A1111 uses: the smallest non-zero sigma and the largest sigma.

    Raises:
        InvalidArgumentError: no sigma is above 0.
    """
    positive = sigmas[sigmas > 0]
    if positive.numel() == 0:
        raise InvalidArgumentError("sigmas must hold a value above 0")
    return positive.min(), sigmas.max()


def _torchsde() -> Any:
    try:
        import torchsde
    except ImportError as exc:
        raise ImportError(
            "A1111's Brownian noise (DPM++ SDE, DPM++ 2M SDE) needs torchsde: "
            "pip install 'promptweights[a1111]'"
        ) from exc
    return torchsde


def _install_nv_draws() -> None:
    """Make torchsde's draw function defer to Philox on threads inside :func:`_nv_draws`."""
    module = importlib.import_module("torchsde._brownian.brownian_interval")
    with _install_lock:
        original = getattr(module, "_randn", None)
        if getattr(original, "promptweights_nv", False):
            return
        if original is None:
            raise ImportError(
                "device='NV' needs torchsde's draw function _randn (torchsde 0.2.x): "
                "pip install 'promptweights[a1111]'"
            )

        def randn(size: Sequence[int], dtype: torch.dtype, device: Any, seed: int) -> torch.Tensor:
            if getattr(_nv_state, "active", False):
                return philox.Generator(int(seed)).randn(tuple(size)).to(device, dtype)
            return original(size, dtype, device, seed)  # type: ignore[no-any-return]

        randn.promptweights_nv = True  # type: ignore[attr-defined]
        setattr(module, "_randn", randn)  # noqa: B010 - a module attribute, set on purpose


@contextmanager
def _nv_draws() -> Iterator[None]:
    _nv_state.active = True
    try:
        yield
    finally:
        _nv_state.active = False


def _ordered(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(a, b, 1)`` if ``a < b``, else ``(b, a, -1)`` (ties count as reversed, as k-diffusion)."""
    return (a, b, 1) if a < b else (b, a, -1)


class BrownianNoiseSampler:
    """Brownian-tree noise for a batch, one tree per image, as A1111 gives k-diffusion.

    Build it with :func:`brownian_noise_sampler`; call it with ``(sigma, sigma_next)`` to get the
    normalised Brownian increment ``(W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|)`` of
    every image, stacked like ``x``: the same call as k-diffusion's ``BrownianTreeNoiseSampler``.
    """

    def __init__(
        self,
        x: torch.Tensor,
        sigma_min: torch.Tensor,
        sigma_max: torch.Tensor,
        seeds: Sequence[int],
        device: torch.device | str | None = None,
    ) -> None:
        torchsde = _torchsde()
        self._nv = device == _NV
        if self._nv:
            _install_nv_draws()
        t0, t1, self._sign = _ordered(torch.as_tensor(sigma_min), torch.as_tensor(sigma_max))
        # The trees draw where w0 lies: x's device, as in A1111, unless told otherwise.
        w0 = torch.zeros_like(x[0], device="cpu" if self._nv else device)
        self._device = x.device
        with self._drawing():
            self._trees = tuple(torchsde.BrownianTree(t0, w0, t1, entropy=seed) for seed in seeds)

    def _drawing(self) -> Any:
        return _nv_draws() if self._nv else nullcontext()

    def __call__(
        self, sigma: float | torch.Tensor, sigma_next: float | torch.Tensor
    ) -> torch.Tensor:
        """The noise for the step from ``sigma`` to ``sigma_next``, shaped like ``x``."""
        start, end = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        low, high, sign = _ordered(start, end)
        with warnings.catch_warnings(), self._drawing():
            # torchsde rounds the tree's ends to its tolerance, so a float32 sigma_max lies just
            # past the end: it warns and clamps, in A1111 too. The clamp is what we reproduce.
            warnings.filterwarnings("ignore", "Should have t[ab]", UserWarning)
            increments = torch.stack([tree(low, high) for tree in self._trees])
        increments = increments.to(self._device) * (self._sign * sign)
        return increments / (end - start).abs().sqrt().to(self._device)


def _draw_device(device: object, x: torch.Tensor) -> torch.device | str | None:
    if device is None:
        return None
    if isinstance(device, str) and device.upper() == _NV:
        if x.dtype == torch.float64:
            raise InvalidArgumentError(
                "device='NV' reproduces CUDA's float32 draws; x is float64 (use float32)"
            )
        return _NV
    return torch_device(device)


def brownian_noise_sampler(
    x: torch.Tensor,
    sigma_min: float | torch.Tensor,
    sigma_max: float | torch.Tensor,
    seeds: Sequence[int],
    *,
    device: DeviceLike | None = None,
    source: str | None = None,
) -> NoiseSampler:
    """The Brownian noise A1111 passes to DPM++ SDE / 2M SDE / 3M SDE as ``noise_sampler``.

    Args:
        x: the batch's latent ``(batch, C, H, W)``: the noise has its shape, dtype and device.
        sigma_min: the smallest non-zero sigma of the schedule (see :func:`sigma_bounds`).
        sigma_max: the largest sigma.
        seeds: one seed per image, in ``[0, 2**64)``: ``Seed`` plus the batch position.
        device: whose numbers the trees draw: by default torch's generator on ``x``'s device, as
            in A1111; ``"cpu"`` or ``"cuda"`` to name one (an image A1111 made on a CPU, sampled
            here on a GPU); ``"NV"`` for CUDA's numbers computed on the CPU (an image A1111 made
            on an NVIDIA GPU, sampled here without one; float32 latents; exact up to float32
            rounding while an image's latent has no more numbers than the GPU had resident threads,
            e.g. 4×64×64 or 4×128×128 on any recent card). The noise comes back on ``x``'s device.
        source: the infotext's ``RNG``, checked but without effect: A1111's Brownian noise does not
            depend on its noise-source setting (accepted so that one set of noise settings can be
            passed everywhere).

    Raises:
        ImportError: torchsde is missing (extra ``a1111``).
        ArgumentTypeError: ``x`` is not a tensor, a seed not an integer.
        InvalidArgumentError: a seed out of range, ``len(seeds) != x.shape[0]``, equal sigmas,
            ``device="NV"`` with a float64 ``x``.
        UnknownNameError: an unknown ``source``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ArgumentTypeError(f"x must be a batched latent tensor, got {type(x).__name__}")
    checked = seed_list(seeds, "seeds")
    if len(checked) != x.shape[0]:
        raise InvalidArgumentError(
            f"brownian_noise_sampler needs one seed per image: {len(checked)} seeds "
            f"for a batch of {x.shape[0]}"
        )
    low, high = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
    if low.numel() != 1 or high.numel() != 1 or not bool(low != high):
        raise InvalidArgumentError(
            "sigma_min and sigma_max must be two different numbers, "
            f"got {sigma_min!r} and {sigma_max!r}"
        )
    if source is not None:
        source_name(source)
    return BrownianNoiseSampler(x, low, high, checked, _draw_device(device, x))
