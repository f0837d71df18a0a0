"""A1111's classifier-free guidance denoiser (``sd_samplers_cfg_denoiser.CFGDenoiser``).

At each call the positive rows (every ``AND`` part of every image) and the negative rows run
through the model; the results combine per image as

    denoised_i = u_i + Σ_j  w_j · scale · (c_j − u_i)

(unnormalised AND weights). As A1111 v1.10.1 does it:

* cond and uncond of equal length run as one batch ``[c…, u…]``; of different lengths (a prompt
  or negative over 75 tokens), by default (A1111's "Pad conds" off) the conds run in batches of
  ``2 · images`` and the unconds separately, each at its own length; ``empty_chunk`` (A1111's
  "Pad conds") pads the shorter with encoded empty-prompt chunks instead, and ``pad_v0`` ("Pad
  conds v0", which wins over it) repeats the negative's last vector up to the prompt's length or
  truncates the negative to it (:func:`pad_conds_v0`);
* ``skip_early_cfg`` ("Skip Early CFG") skips the uncond while ``call / total_calls`` is at most
  that fraction, and ``s_min_uncond`` ("NGMS") on odd calls (every call with
  ``s_min_uncond_all``, "NGMS all steps") while σ is below it; a skipped uncond is replaced by
  the first cond of each image, and the parts combine with scale 1;
* the call counter starts at 0 and counts every model call (second-order samplers call twice per
  step), which is also the counter prompt editing reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CFGDenoiser", "Conds", "pad_conds_v0", "skips_uncond"]

#: ``model(x, sigma, cond)``: the wrapped UNet; one σ (or timestep) per row.
Model = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True, slots=True)
class Conds:
    """The conditioning at one call.

    Attributes:
        parts: for each image, its ``(row of tensor, weight)`` pairs (AND parts).
        tensor: every positive row ``(N, L, D)``, image by image.
        uncond: one negative row per image ``(B, L', D)``.
    """

    parts: list[list[tuple[int, float]]]
    tensor: Tensor
    uncond: Tensor


def skips_uncond(
    call: int,
    total_calls: int,
    sigma: float,
    *,
    s_min_uncond: float = 0.0,
    s_min_uncond_all: bool = False,
    skip_early_cfg: float = 0.0,
) -> bool:
    """Whether A1111's denoiser skips the uncond at ``call`` (0-based) of ``total_calls``: "Skip
    Early CFG" while ``call / total_calls`` is at most its fraction; else NGMS on odd calls (every
    call with "NGMS all steps") while ``sigma`` (the timestep, for DDIM and PLMS) is below it.

    >>> skips_uncond(1, 4, 0.5, s_min_uncond=1.0), skips_uncond(2, 4, 0.5, s_min_uncond=1.0)
    (True, False)
    >>> skips_uncond(1, 4, 9.0, skip_early_cfg=0.25), skips_uncond(2, 4, 9.0, skip_early_cfg=0.25)
    (True, False)
    """
    if skip_early_cfg != 0 and call / total_calls <= skip_early_cfg:
        return True
    odd = call % 2 == 1 or s_min_uncond_all
    return odd and s_min_uncond > 0 and sigma < s_min_uncond


def _pad(tensor: Tensor, repeats: int, empty: Tensor) -> Tensor:
    return torch.cat([tensor, empty.repeat((tensor.shape[0], repeats, 1))], dim=1)


def pad_conds_v0(tensor: Tensor, uncond: Tensor) -> tuple[Tensor, Tensor]:
    """A1111's "Pad conds v0": the uncond ``(B, L', D)`` made as long as the cond ``(N, L, D)``,
    by repeating its last vector when shorter or truncating it when longer; the cond unchanged.

    >>> c, u = pad_conds_v0(torch.zeros(1, 4, 1), torch.arange(2.0).reshape(1, 2, 1))
    >>> u.flatten().tolist(), pad_conds_v0(c[:, :1], u)[1].flatten().tolist()
    ([0.0, 1.0, 1.0, 1.0], [0.0])
    """
    length = tensor.shape[1]
    if uncond.shape[1] < length:
        last = uncond[:, -1:].expand(-1, length - uncond.shape[1], -1)
        return tensor, torch.cat([uncond, last], dim=1)
    return tensor, uncond[:, :length]


class CFGDenoiser:
    """Classifier-free guidance as A1111 combines it; call it as ``denoiser(x, sigma)``.

    Args:
        model: the wrapped UNet, ``model(x, sigma, cond)``.
        conds_at: the :class:`Conds` at call ``k`` (0-based; prompt editing switches here).
        cond_scale: the CFG scale.
        total_calls: the calls A1111 expects (steps, doubled for second-order samplers); "Skip
            Early CFG" compares ``call / total_calls`` with its fraction.
        s_min_uncond: NGMS (0: off).
        s_min_uncond_all: NGMS on every call, not only odd ones.
        skip_early_cfg: Skip Early CFG fraction (0: off).
        empty_chunk: the encoded empty prompt ``(1, window, D)``; with it, cond and uncond of
            different lengths are padded (A1111's "Pad conds").
        pad_v0: A1111's "Pad conds v0" (:func:`pad_conds_v0`; before ``empty_chunk``).
    """

    def __init__(
        self,
        model: Model,
        conds_at: Callable[[int], Conds],
        cond_scale: float,
        *,
        total_calls: int,
        s_min_uncond: float = 0.0,
        s_min_uncond_all: bool = False,
        skip_early_cfg: float = 0.0,
        empty_chunk: Tensor | None = None,
        pad_v0: bool = False,
    ) -> None:
        self.model = model
        self.conds_at = conds_at
        self.cond_scale = cond_scale
        self.total_calls = total_calls
        self.s_min_uncond = s_min_uncond
        self.s_min_uncond_all = s_min_uncond_all
        self.skip_early_cfg = skip_early_cfg
        self.empty_chunk = empty_chunk
        self.pad_v0 = pad_v0
        self.step = 0

    def skips_uncond(self, sigma: Tensor) -> bool:
        """Whether this call skips the uncond (Skip Early CFG, then NGMS)."""
        return skips_uncond(
            self.step,
            self.total_calls,
            float(sigma[0]),
            s_min_uncond=self.s_min_uncond,
            s_min_uncond_all=self.s_min_uncond_all,
            skip_early_cfg=self.skip_early_cfg,
        )

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The guided prediction at ``x``, ``sigma`` (one σ per image); counts the call."""
        conds = self.conds_at(self.step)
        batch = len(conds.parts)
        repeats = [len(p) for p in conds.parts]
        rows = [i for i, n in enumerate(repeats) for _ in range(n)]
        x_in = torch.cat([x[rows], x])
        sigma_in = torch.cat([sigma[rows], sigma])
        skip = self.skips_uncond(sigma)
        if skip:
            x_in, sigma_in = x_in[:-batch], sigma_in[:-batch]
        tensor, uncond = conds.tensor, conds.uncond
        if self.pad_v0 and tensor.shape[1] != uncond.shape[1]:
            tensor, uncond = pad_conds_v0(tensor, uncond)
        elif self.empty_chunk is not None and tensor.shape[1] != uncond.shape[1]:
            tensor, uncond = self._pad(tensor, uncond)
        if skip:
            out = self.model(x_in, sigma_in, tensor)
            firsts = [p[0][0] for p in conds.parts]
            out = torch.cat([out, out[firsts]])
        elif tensor.shape[1] == uncond.shape[1]:
            out = self.model(x_in, sigma_in, torch.cat([tensor, uncond]))
        else:
            out = torch.zeros_like(x_in)
            n = tensor.shape[0]
            for a in range(0, n, 2 * batch):
                b = min(a + 2 * batch, n)
                out[a:b] = self.model(x_in[a:b], sigma_in[a:b], tensor[a:b])
            out[-batch:] = self.model(x_in[-batch:], sigma_in[-batch:], uncond)
        self.step += 1
        return self.combine(out, conds.parts, 1.0 if skip else self.cond_scale)

    def _pad(self, tensor: Tensor, uncond: Tensor) -> tuple[Tensor, Tensor]:
        assert self.empty_chunk is not None
        empty = self.empty_chunk.to(tensor)
        repeats = (tensor.shape[1] - uncond.shape[1]) // empty.shape[1]
        if repeats < 0:
            return _pad(tensor, -repeats, empty), uncond
        if repeats > 0:
            return tensor, _pad(uncond, repeats, empty)
        return tensor, uncond

    @staticmethod
    def combine(out: Tensor, parts: list[list[tuple[int, float]]], scale: float) -> Tensor:
        """``u_i + Σ_j w_j · scale · (c_j − u_i)``; the unconds are the last rows of ``out``."""
        uncond = out[-len(parts) :]
        denoised = uncond.clone()
        for i, image in enumerate(parts):
            for row, weight in image:
                denoised[i] += (out[row] - uncond[i]) * (weight * scale)
        return denoised
