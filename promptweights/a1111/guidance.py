"""A1111's CFG denoiser inside a diffusers pipeline's own guidance step (``from_infotext``).

A pipeline runs its UNet on ``[negative, positive]`` and guides with ``u + g · (c − u)``.
:class:`PipelineCFG` hooks the UNet (a forward pre-hook and a forward hook) so that the pipeline's
formula gives what A1111's ``CFGDenoiser`` gives (:mod:`promptweights.a1111.denoiser`):

* ``AND`` with weights: every part runs (A1111's ``[conds…, unconds]``, here the pipeline's
  negative first) and the UNet hands the pipeline ``[u, u + Σ w_j (c_j − u)]``, so that its
  guidance gives ``u + g · Σ w_j (c_j − u)``, A1111's combination on the noise prediction;
* "Skip Early CFG", NGMS and "NGMS all steps": on the calls A1111 skips the uncond
  (:func:`~promptweights.a1111.denoiser.skips_uncond`, read at the A1111 scheduler's call counter
  and σ), the negative rows do not run; the result ``t = c_1 + Σ w_j (c_j − c_1)`` (A1111's
  scale-1 combination around the first part) is handed over as ``[t, t]``, which the pipeline's
  guidance leaves as ``t``;
* a prompt and negative of different chunk counts (``lengths``; ``encode`` padded them to one
  length for the pipeline's single batch): by default (A1111's "Pad conds" off) the negative
  rows run in one UNet call and the positive rows in calls of ``2 · images`` rows, each at its
  own length (the hooks call the UNet's ``forward`` again for the further batches); with "Pad
  conds v0" (``pad_v0``) one call, the negative's last vector repeated up to the prompt's length
  or the negative cut to it (:func:`~promptweights.a1111.denoiser.pad_conds_v0`). A skipped
  uncond, or a call without guidance, runs the positive rows at their own length.

The pipeline combines noise predictions, A1111 denoised latents: the same up to float rounding.
The hooks stay on the UNet while the pipeline's scheduler is the :class:`A1111Scheduler` they
were made for, so that the same call can run again; once another scheduler is installed, or a
run's first UNet call gets other prompt embeddings than the call they were made for, they remove
themselves at that UNet call, doing nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from promptweights.errors import PromptweightsError

from .denoiser import pad_conds_v0, skips_uncond
from .scheduler import A1111Scheduler

__all__ = ["PipelineCFG"]


def _repeat(tensor: Tensor, times: int, like: Tensor) -> Tensor:
    return tensor.to(device=like.device, dtype=like.dtype).repeat_interleave(times, dim=0)


class PipelineCFG:
    """A1111's AND weights, Skip Early CFG and NGMS for one pipeline and A1111 scheduler.

    Args:
        pipe: the pipeline (its ``unet`` is hooked by :meth:`install`).
        scheduler: the A1111 scheduler the pipeline runs (its call counter and σ).
        cond: the :class:`~promptweights.diffusers.Conditioning` of the call.
        total_calls: the calls A1111 expects (steps, doubled for second-order samplers).
        s_min_uncond: NGMS (0: off).
        s_min_uncond_all: "NGMS all steps".
        skip_early_cfg: "Skip Early CFG" (0: off).
        lengths: the prompt's and negative's token lengths before padding
            (:func:`promptweights.a1111.run.unpadded_lengths`) to run them at; None: as the
            pipeline passes them (A1111's "Pad conds", or equal lengths).
        pad_v0: A1111's "Pad conds v0" for ``lengths``.
    """

    def __init__(
        self,
        pipe: Any,
        scheduler: A1111Scheduler,
        cond: Any,
        *,
        total_calls: int,
        s_min_uncond: float = 0.0,
        s_min_uncond_all: bool = False,
        skip_early_cfg: float = 0.0,
        lengths: tuple[int, int] | None = None,
        pad_v0: bool = False,
    ) -> None:
        self.pipe = pipe
        self.scheduler = scheduler
        self.timeline = cond._timeline
        self.composable = bool(cond.composable)
        self.total_calls = total_calls
        self.s_min_uncond = s_min_uncond
        self.s_min_uncond_all = s_min_uncond_all
        self.skip_early_cfg = skip_early_cfg
        self.lengths = lengths
        self.pad_v0 = pad_v0
        self.extra: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.handles: list[Any] = []
        self.pending: tuple[bool, int, Tensor] | None = None
        self.prompt_embeds: Tensor | None = None

    def install(self, prompt_embeds: Tensor | None = None) -> None:
        """Hook ``pipe.unet``; with ``prompt_embeds`` (the call's), a run whose first UNet call
        gets other embeddings is another prompt's: the hooks then remove themselves."""
        self.prompt_embeds = prompt_embeds
        unet = self.pipe.unet
        self.handles = [
            unet.register_forward_pre_hook(self.before, with_kwargs=True),
            unet.register_forward_hook(self.after, with_kwargs=True),
        ]

    def remove(self) -> None:
        """Unhook the UNet."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def skips(self) -> bool:
        """Whether A1111 skips the uncond at the scheduler's next call."""
        return skips_uncond(
            self.scheduler.call_index,
            self.total_calls,
            self.scheduler.call_sigma,
            s_min_uncond=self.s_min_uncond,
            s_min_uncond_all=self.s_min_uncond_all,
            skip_early_cfg=self.skip_early_cfg,
        )

    def before(
        self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Choose the rows of this call: the parts of every image, the uncond unless skipped."""
        self.pending = None
        self.extra = []
        if getattr(self.pipe, "scheduler", None) is not self.scheduler:
            self.remove()  # another scheduler runs now: this run is over
            return None
        sample = args[0] if args else kwargs["sample"]
        total = sample.shape[0]
        if self.scheduler.call_index == 0 and not self._own_run(kwargs, total):
            self.remove()  # the same scheduler runs another prompt: not this run's hooks
            return None
        skip = self.skips()
        if total % (2 * self.timeline.batch):
            if self.composable:
                raise PromptweightsError(
                    "AND needs classifier-free guidance (CFG scale > 1): the UNet got "
                    f"{total} rows for {self.timeline.batch} prompts"
                )
            return self._positive_only(kwargs, args)  # no guidance: nothing to skip
        if not self.composable and not skip and self.lengths is None:
            return None
        half = total // 2
        args, kwargs = _select(args, kwargs, self._rows(half, skip), total)
        self.pending = (skip, half, self._conditioning(kwargs, half, skip))
        if self.lengths is not None:
            args, kwargs = self._unpadded(args, kwargs, half, skip)
        return args, kwargs

    def _positive_only(
        self, kwargs: dict[str, Any], args: tuple[Any, ...]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """A call without guidance: the positive rows at their own length."""
        if self.lengths is None:
            return None
        hidden = kwargs["encoder_hidden_states"]
        return args, {**kwargs, "encoder_hidden_states": hidden[:, : self.lengths[0]]}

    def _unpadded(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], half: int, skip: bool
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The rows of :meth:`_rows` at their own lengths, as A1111 runs cond and uncond of
        different lengths: the first batch is returned, the further ones kept in ``extra``."""
        assert self.lengths is not None
        positive, negative = self.lengths
        hidden = kwargs["encoder_hidden_states"]
        if skip:
            return args, {**kwargs, "encoder_hidden_states": hidden[:, :positive]}
        uncond, cond = hidden[:half, :negative], hidden[half:, :positive]
        if self.pad_v0:
            cond, uncond = pad_conds_v0(cond, uncond)
            return args, {**kwargs, "encoder_hidden_states": torch.cat([uncond, cond])}
        total = hidden.shape[0]
        batches = [(torch.arange(half), uncond)]
        for start in range(half, total, 2 * half):  # A1111's cond batches: 2 · images rows
            end = min(start + 2 * half, total)
            batches.append((torch.arange(start, end), cond[start - half : end - half]))
        calls = []
        for rows, states in batches:
            a, k = _select(args, kwargs, rows, total)
            calls.append((a, {**k, "encoder_hidden_states": states}))
        self.extra = calls[1:]
        return calls[0]

    def _own_run(self, kwargs: dict[str, Any], total: int) -> bool:
        """Whether the first call's positive embeddings are those the hooks were made for."""
        if self.prompt_embeds is None:
            return True
        hidden = kwargs.get("encoder_hidden_states")
        if not isinstance(hidden, Tensor) or hidden.shape[1:] != self.prompt_embeds.shape[1:]:
            return False
        first = hidden[total // 2 if total > 1 else 0]
        return torch.equal(first, self.prompt_embeds[0].to(first))

    def _rows(self, half: int, skip: bool) -> Tensor:
        """Rows of the pipeline's batch to run: each part repeats the positive half."""
        parts = self.timeline.parts_per_image if self.composable else 1
        positive = torch.arange(half, 2 * half)
        pieces = ([] if skip else [torch.arange(half)]) + [positive] * parts
        return torch.cat(pieces)

    def _conditioning(self, kwargs: dict[str, Any], half: int, skip: bool) -> Tensor:
        """For AND, the encoder states (and SDXL's pooled vectors) of every part at this call, in
        the rows of :meth:`_rows`; the parts' weights ``(parts, half)``."""
        if not self.composable:
            return torch.ones(1, half)
        timeline = self.timeline
        k = self.scheduler.call_index
        lora = timeline.lora
        if lora is not None and lora.unet_changes and lora.unet_at(k) != lora.unet_at(k - 1):
            lora.apply(self.pipe, k)  # a LoRA's UNet weight at this call
        per_image = half // timeline.batch
        negative, negative_pooled = timeline.negative_at(k)
        hidden = kwargs["encoder_hidden_states"]
        states = [] if skip else [_repeat(negative, per_image, hidden)]
        pooled = [] if skip else [negative_pooled]
        weights = []
        for j in range(timeline.parts_per_image):
            c, p, w = timeline.positive_at(k, j)
            states.append(_repeat(c, per_image, hidden))
            pooled.append(p)
            weights.append(w.repeat_interleave(per_image))
        kwargs["encoder_hidden_states"] = torch.cat(states)
        added = kwargs.get("added_cond_kwargs")
        if added is not None and "text_embeds" in added and pooled[0] is not None:
            like = added["text_embeds"]
            vectors = [_repeat(v, per_image, like) for v in pooled if v is not None]
            kwargs["added_cond_kwargs"] = {**added, "text_embeds": torch.cat(vectors)}
        return torch.stack(weights)

    def after(self, module: Any, args: Any, kwargs: Any, output: Any) -> Any:
        """Hand the pipeline ``[u, u + Σ w (c − u)]``, or ``[t, t]`` on a skipped call."""
        if self.pending is None:
            return output
        skip, half, weights = self.pending
        self.pending = None
        out = _sample_of(output)
        if self.extra:  # the further batches of cond and uncond run apart
            calls, self.extra = self.extra, []
            out = torch.cat([out, *(_sample_of(module.forward(*a, **k)) for a, k in calls)])
        if not self.composable and not skip:
            return _with_sample(output, out)
        w = weights.to(device=out.device, dtype=out.dtype)
        w = w.reshape(*w.shape, *([1] * (out.ndim - 1)))
        if skip:
            conds = out.reshape(-1, half, *out.shape[1:])
            base = conds[0]
            result = base + (w * (conds - base)).sum(dim=0)
            result = torch.cat([result, result])
        else:
            uncond = out[:half]
            conds = out[half:].reshape(-1, half, *out.shape[1:])
            result = torch.cat([uncond, uncond + (w * (conds - uncond)).sum(dim=0)])
        return _with_sample(output, result)


def _sample_of(output: Any) -> Tensor:
    """The UNet's prediction, from a tuple (``return_dict=False``) or its output class."""
    sample: Tensor = output[0] if isinstance(output, tuple) else output.sample
    return sample


def _with_sample(output: Any, sample: Tensor) -> Any:
    """``output`` of the UNet with ``sample`` in place of its prediction."""
    if isinstance(output, tuple):
        return (sample, *output[1:])
    return type(output)(sample=sample)


def _select(
    args: tuple[Any, ...], kwargs: dict[str, Any], rows: Tensor, total: int
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Every batched tensor argument (leading size ``total``) at ``rows``."""

    def pick(value: Any) -> Any:
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == total:
            return value[rows.to(value.device)]
        return value

    new_args = tuple(pick(a) for a in args)
    new_kwargs = {}
    for key, value in kwargs.items():
        if isinstance(value, dict):
            new_kwargs[key] = {name: pick(v) for name, v in value.items()}
        else:
            new_kwargs[key] = pick(value)
    return new_args, new_kwargs
