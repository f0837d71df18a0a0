"""AND and run-time switching on a transformer that takes lists, one tensor per image (Z-Image).

Z-Image's pipeline calls its transformer once per step as ``transformer(x, t, cap_feats)``:
``x`` the latents and ``cap_feats`` the texts, each a list of one tensor per image (a text cut to
its own length), ``t`` the timesteps. With classifier-free guidance the lists hold the positives,
then the negatives (``[cond…, uncond…]``, the latents repeated), and the pipeline combines the
two halves of the output list.

:class:`ListHook` hands each call its conditioning: every text of the step's schedule entry, cut
to that text's own length (prompt editing and alternation, the negative's included, which Z-Image's
step callback cannot swap), and, for an AND prompt, every part at once: the positive half is
repeated once per part and the prediction of the positive half becomes A1111's
``uncond + Σ w_j (cond_j − uncond)`` (one batch, as SD's). Without guidance (``guidance_scale``
0, or past the pipeline's CFG truncation) there is no uncond in the call: the prediction is then
the parts' weighted mean ``Σ w_j ε_j / Σ w_j``, as on the pipelines that call the transformer for
cond and uncond apart (:mod:`promptweights.diffusers._separate`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from promptweights.errors import InvalidWeightError, PromptweightsError, UnsupportedPipelineError

from .conditioning import _per_image, _Timeline

__all__ = ["ListHook"]

_NAMES = ("x", "t", "cap_feats")


def _guided(x: list[Tensor], pipe: Any) -> bool:
    """Whether the call holds an uncond half: the pipeline guides and the latents are the same
    list twice (Z-Image repeats them for ``[cond, uncond]``)."""
    if not bool(getattr(pipe, "do_classifier_free_guidance", True)) or len(x) % 2:
        return False
    half = len(x) // 2
    return all(torch.equal(x[j], x[j + half]) for j in range(half))


class ListHook:
    """Forward hooks for one run (see the module docstring)."""

    def __init__(self, timeline: _Timeline, pipe: Any = None) -> None:
        self.timeline = timeline
        self.pipe = pipe
        self.calls = 0
        self.pending: tuple[int, bool, Tensor] | None = None  # (half, guided, weights)

    def before(
        self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        given = dict(zip(_NAMES, args, strict=False))
        kwargs = {**kwargs, **given}
        if not all(isinstance(kwargs.get(name), list) for name in ("x", "cap_feats")):
            raise UnsupportedPipelineError(
                f"{type(module).__name__} is not called with lists x= and cap_feats= as Z-Image's "
                "transformer is: the AND and editing hook cannot hand it the conditioning"
            )
        timeline, k = self.timeline, self.calls
        self.calls += 1
        lora = timeline.lora
        if lora is not None and lora.unet_changes and lora.unet_at(k) != lora.unet_at(k - 1):
            lora.apply(self.pipe, k)  # a LoRA's transformer weight at this call (loractl)
        x: list[Tensor] = kwargs["x"]
        guided = _guided(x, self.pipe)
        half = len(x) // 2 if guided else len(x)
        if half % timeline.batch:
            raise PromptweightsError(
                f"the transformer got {len(x)} latents for {timeline.batch} prompts"
            )
        per_image = half // timeline.batch
        parts = timeline.parts_per_image
        if parts > 1 and kwargs.get("controlnet_block_samples") is not None:
            raise UnsupportedPipelineError(
                "AND is not supported on Z-Image ControlNet pipelines: the ControlNet's block "
                "samples are computed for one batch of texts, which AND would repeat per part"
            )

        def rows(embeds: Tensor, mask: Tensor | None) -> list[Tensor]:
            return [r for r in _per_image(embeds, mask) for _ in range(per_image)]

        texts: list[Tensor] = []
        weights = []
        for j in range(parts):
            embeds, _, w = timeline.positive_at(k, j)
            texts += rows(embeds, timeline.mask_at(k, j))
            weights.append(w.repeat_interleave(per_image))
        latents, steps = x[:half] * parts, [kwargs["t"][:half]] * parts
        if guided:
            negative, _ = timeline.negative_at(k)
            texts += rows(negative, timeline.negative_mask_at(k))
            latents, steps = latents + x[half:], [*steps, kwargs["t"][half:]]
        like = kwargs["cap_feats"][0]
        kwargs["cap_feats"] = [t.to(device=like.device, dtype=like.dtype) for t in texts]
        kwargs["x"], kwargs["t"] = latents, torch.cat(steps)
        stacked = torch.stack(weights)
        if parts > 1 and not guided and bool((stacked.sum(dim=0) == 0).any()):
            raise InvalidWeightError(
                "the AND weights of a prompt sum to 0: without classifier-free guidance AND takes "
                "the parts' weighted mean, which needs a nonzero sum"
            )
        self.pending = (half, guided, stacked) if parts > 1 else None
        return (), kwargs

    def after(self, module: Any, args: Any, kwargs: Any, output: Any) -> Any:
        pending, self.pending = self.pending, None
        if pending is None:
            return output
        half, guided, weights = pending
        out: list[Tensor] = output[0] if isinstance(output, tuple) else output.sample
        parts = weights.shape[0]
        combined = []
        for row in range(half):
            preds = torch.stack([out[j * half + row] for j in range(parts)]).float()
            w = weights[:, row].reshape(parts, *([1] * (preds.ndim - 1))).to(preds.device)
            if guided:
                uncond = out[parts * half + row].float()
                value = uncond + (w * (preds - uncond)).sum(dim=0)
            else:
                value = (w * preds).sum(dim=0) / w.sum()
            combined.append(value.to(out[row].dtype))
        result = combined + (list(out[parts * half :]) if guided else [])
        if isinstance(output, tuple):
            return (result, *output[1:])
        return type(output)(sample=result)
