"""AND and run-time switching on families whose pipelines call the transformer once per
conditioning (Flux.1, Chroma, Wan, Qwen-Image, Flux.2, Flux.2 Klein, Lumina 2): the cond call,
then, with true classifier-free guidance, the uncond call, at the same timestep.

:meth:`Conditioning.attach <promptweights.diffusers.Conditioning.attach>` registers
:class:`SeparateHook` on such a family's transformer. At each call it tells the step (a new
timestep value starts one) and whether the call is the step's first (cond) or second (uncond),
and hands the transformer that call's conditioning: the embeds and pooled vector of the step's
schedule entry (prompt editing and alternation, the pooled vector included, which Flux's step
callback cannot swap) and, for an AND prompt, every part at once. Each call's text is masked as
that text alone, under the keyword the transformer takes its mask by (Chroma's
``attention_mask``, Qwen-Image's ``encoder_hidden_states_mask``, Lumina 2's
``encoder_attention_mask``): the pipeline reads one mask per run, the union of a schedule's texts
(Qwen-Image pads every text of an image to the longest).

What AND means without a batched ``[uncond, cond]`` (weighting-strategies.md, composable
diffusion): the cond call's prediction becomes the weighted mean of the parts' predictions,
``Σ w_j ε_j / Σ w_j``, as ComfyUI's ``ConditioningCombine`` computes it (``calc_cond_batch``
sums each cond's output times its strength and divides by the summed strengths). Where the
weights sum to 1 this is exactly A1111's ``uncond + Σ w_j (cond_j − uncond)`` that the
pipeline's guidance then scales; without true guidance (Flux.1 dev, guidance-distilled) it is the
only combination there is. Weights that sum to 0 have no mean and are refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from promptweights.errors import InvalidWeightError, PromptweightsError, UnsupportedPipelineError

from .conditioning import _repeat, _Timeline

__all__ = ["SeparateHook", "check_weights"]

# The transformer keywords that carry the text conditioning and the pooled vector.
_TEXT = "encoder_hidden_states"
_POOLED = "pooled_projections"
#: The keywords that carry the text's attention mask, text positions first: Chroma's
#: ``attention_mask`` (then the image's), Qwen-Image's ``encoder_hidden_states_mask`` and Lumina
#: 2's ``encoder_attention_mask`` (the text's only).
_MASKS = ("attention_mask", "encoder_hidden_states_mask", "encoder_attention_mask")


def put_text_mask(value: Tensor, rows: Tensor) -> Tensor:
    """``value`` (a transformer's attention mask, its text positions first) with the text
    positions replaced by ``rows`` (one T5 mask per row)."""
    out = value.clone()
    out[:, : rows.shape[1]] = rows.to(device=out.device, dtype=out.dtype)
    return out


def _set_mask(kwargs: dict[str, Any], rows: Tensor | None, text: Tensor) -> None:
    """Mask the call's text as ``rows`` (one mask per row of ``text``) under whichever mask
    keyword the transformer was called with. Qwen-Image's pipeline passes ``None`` for a mask
    of ones: one is made where ``rows`` masks something, else ``None`` stays."""
    if rows is None:
        return
    for key in _MASKS:
        if key not in kwargs:
            continue
        value = kwargs[key]
        if isinstance(value, Tensor):
            kwargs[key] = put_text_mask(value, rows)
        elif value is None and key == "encoder_hidden_states_mask" and not bool(rows.all()):
            kwargs[key] = rows.to(device=text.device, dtype=torch.long)
        return


def check_weights(timeline: _Timeline) -> None:
    """Refuse AND weights whose sum is 0 for an image: their weighted mean does not exist."""
    for image, parts in enumerate(timeline.parts):
        total = sum(part.weight for part in parts)
        if len(parts) > 1 and total == 0:
            raise InvalidWeightError(
                f"the AND weights of prompt {image} sum to 0: on a pipeline that runs cond and "
                "uncond apart, AND takes their weighted mean, which needs a nonzero sum"
            )


class SeparateHook:
    """Forward hooks for one run (see the module docstring)."""

    def __init__(self, timeline: _Timeline, pipe: Any = None) -> None:
        self.timeline = timeline
        self.pipe = pipe
        self.step = -1
        self.timestep: Tensor | None = None
        self.calls_this_step = 0
        self.pending: Tensor | None = None  # the AND weights (parts, rows) of the running call

    def _advance(self, kwargs: dict[str, Any]) -> bool:
        """Count the call; return whether it is its step's cond call (the first)."""
        timestep = kwargs.get("timestep")
        if not isinstance(timestep, Tensor):
            raise PromptweightsError(
                "the transformer was called without a timestep keyword: this pipeline does not "
                "call it as Flux, Chroma and Wan do"
            )
        if self.timestep is None or not torch.equal(timestep, self.timestep):
            self.step += 1
            self.timestep = timestep.detach().clone()
            self.calls_this_step = 0
            lora = self.timeline.lora
            k = self.step
            if lora is not None and lora.unet_changes and lora.unet_at(k) != lora.unet_at(k - 1):
                lora.apply(self.pipe, k)
        self.calls_this_step += 1
        return self.calls_this_step == 1

    def before(
        self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kwargs = dict(kwargs)
        if not isinstance(kwargs.get(_TEXT), Tensor):
            raise UnsupportedPipelineError(
                f"{type(module).__name__} is not called with its text as {_TEXT}=: the AND and "
                "editing hook of promptweights.diffusers cannot hand it the conditioning"
            )
        cond = self._advance(kwargs)
        timeline, k = self.timeline, self.step
        hidden = kwargs[_TEXT]
        per_image = hidden.shape[0] // timeline.batch
        if not cond:
            negative, negative_pooled = timeline.negative_at(k)
            kwargs[_TEXT] = _repeat(negative, per_image, hidden)
            if negative_pooled is not None and kwargs.get(_POOLED) is not None:
                kwargs[_POOLED] = _repeat(negative_pooled, per_image, kwargs[_POOLED])
            mask = timeline.negative_mask_at(k)
            _set_mask(
                kwargs, None if mask is None else mask.repeat_interleave(per_image, 0), hidden
            )
            self.pending = None
            return args, kwargs
        parts = timeline.parts_per_image
        embeds, pooleds, weights = [], [], []
        for j in range(parts):
            e, p, w = timeline.positive_at(k, j)
            embeds.append(_repeat(e, per_image, hidden))
            pooleds.append(p)
            weights.append(w.repeat_interleave(per_image))
        rows = hidden.shape[0]
        for key, value in list(kwargs.items()):
            if key == _POOLED and value is not None and pooleds[0] is not None:
                kwargs[key] = torch.cat([_repeat(p, per_image, value) for p in pooleds])  # type: ignore[arg-type]
            elif (
                key != _TEXT and isinstance(value, Tensor) and value.ndim and value.shape[0] == rows
            ):
                kwargs[key] = torch.cat([value] * parts)
        kwargs[_TEXT] = torch.cat(embeds)
        masks = [timeline.mask_at(k, j) for j in range(parts)]
        if masks[0] is not None:
            rows_ = torch.cat([m.repeat_interleave(per_image, 0) for m in masks])  # type: ignore[union-attr]
            _set_mask(kwargs, rows_, kwargs[_TEXT])
        args = tuple(
            torch.cat([a] * parts) if isinstance(a, Tensor) and a.ndim and a.shape[0] == rows else a
            for a in args
        )
        self.pending = torch.stack(weights) if parts > 1 else None
        return tuple(args), kwargs

    def after(self, module: Any, args: Any, kwargs: Any, output: Any) -> Any:
        weights, self.pending = self.pending, None
        if weights is None:
            return output
        out = output[0] if isinstance(output, tuple) else output.sample
        parts, rows = weights.shape
        preds = out.reshape(parts, rows, *out.shape[1:])
        w = weights.to(device=out.device, dtype=torch.float32)
        w = (w / w.sum(dim=0)).reshape(parts, rows, *([1] * (out.ndim - 1)))
        combined = (w * preds.float()).sum(dim=0).to(out.dtype)
        if isinstance(output, tuple):
            return (combined, *output[1:])
        return type(output)(sample=combined)
