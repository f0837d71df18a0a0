"""The :class:`Conditioning` that ``encode`` returns: its timeline, step callback and AND hook."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from promptweights.errors import (
    InvalidArgumentError,
    PromptweightsError,
    UnsupportedPipelineError,
    warn_or_raise,
)
from promptweights.tree import ExtraNetwork

from .families import Family
from .lora import _LoraRun


@dataclass(slots=True)
class _Part:
    """One AND part of one image: its weight and its schedule, one text per prompt slot."""

    weight: float
    ends: list[int]
    texts: list[tuple[str, ...]]  # [variant][slot prompt index 0..2]


def _index_at(ends: Sequence[int], k: int) -> int:
    """A1111's run-time lookup (§4.5): the first entry whose end is at or after call ``k``."""
    for index, end in enumerate(ends):
        if k <= end:
            return index
    return len(ends) - 1


@dataclass(slots=True)
class _Timeline:
    """Every encoded variant, and what the pipeline gets at each denoiser call."""

    family: Family
    batch: int
    parts: list[list[_Part]]  # [image][part]
    part_embeds: list[list[Tensor]]  # [image][part] (V, L, D)
    part_pooled: list[list[Tensor | None]]
    negative: list[_Part]  # [image], weight unused
    negative_embeds: list[Tensor]
    negative_pooled: list[Tensor | None]
    has_negative: bool = True
    swappable: tuple[str, ...] = ()  # the pipeline's _callback_tensor_inputs
    # LoRA weight schedules: with one, each part's stack holds its variants once per distinct
    # text-encoder weight set (set-major), and the step callback sets the UNet weights.
    lora: _LoraRun | None = None
    masks: tuple[Tensor, Tensor] | None = None  # T5 attention masks (B, L): positive, negative
    # The pipeline's __call__ parameters (None: unknown): a cleared argument it lacks is left out.
    parameters: frozenset[str] | None = None
    # Family.split's cutter: the pipeline takes the packed prompt_embeds as several tensors.
    split: Callable[[Tensor], dict[str, Tensor]] | None = None
    # Per group (AND parts image-major, then the negatives): (V, L) masks, one per schedule entry.
    variant_masks: list[Tensor] | None = None
    # Before A1111's "Pad conds" padding (set by encode for chunked CLIP towers; None: unknown):
    # the positives' length in tokens (AND parts stacked) and each negative's. The padded rows
    # hold these tokens first, then encoded empty windows.
    lengths: tuple[int, tuple[int, ...]] | None = None

    def _group_mask(self, group: int, part: _Part, k: int) -> Tensor:
        assert self.variant_masks is not None
        stack = self.variant_masks[group]
        return stack[self.variant(part, k) % stack.shape[0]]

    def mask_at(self, k: int, part: int = 0) -> Tensor | None:
        """``(B, L)`` the T5 mask of AND part ``part`` at call ``k`` (an image with fewer parts:
        its first part's), or None for a family without masks."""
        if self.variant_masks is None:
            return None
        rows, start = [], 0
        for image in self.parts:
            j = part if part < len(image) else 0
            rows.append(self._group_mask(start + j, image[j], k))
            start += len(image)
        return torch.stack(rows)

    def negative_mask_at(self, k: int) -> Tensor | None:
        """``(B, L)`` the negative's T5 mask at call ``k``, or None."""
        if self.variant_masks is None:
            return None
        start = sum(len(image) for image in self.parts)
        return torch.stack(
            [self._group_mask(start + i, part, k) for i, part in enumerate(self.negative)]
        )

    @property
    def mask_edits(self) -> bool:
        """Whether some text's mask changes during sampling (its schedule's texts differ in
        length)."""
        return self.variant_masks is not None and any(
            not all(torch.equal(stack[0], row) for row in stack[1:]) for stack in self.variant_masks
        )

    @property
    def edits(self) -> bool:
        variants = [p for image in self.parts for p in image] + self.negative
        te_changes = self.lora is not None and self.lora.te_changes
        return te_changes or any(len(p.ends) > 1 for p in variants)

    @property
    def pooled_edits(self) -> bool:
        """Whether some pooled vector changes during sampling (an edit that CLIP reads)."""
        stacks = [p for image in self.part_pooled for p in image] + self.negative_pooled
        return any(
            stack is not None and not all(torch.equal(stack[0], row) for row in stack[1:])
            for stack in stacks
        )

    @property
    def unet_changes(self) -> bool:
        """Whether a LoRA's UNet weight changes during the pass."""
        return self.lora is not None and self.lora.unet_changes

    def variant(self, part: _Part, k: int) -> int:
        """Which row of a part's stack call ``k`` uses: its schedule entry, under the
        text-encoder LoRA weights of call ``k``."""
        index = _index_at(part.ends, k)
        return index if self.lora is None else self.lora.te_key(k) * len(part.ends) + index

    @property
    def composable(self) -> bool:
        return any(len(image) > 1 or image[0].weight != 1.0 for image in self.parts)

    @property
    def parts_per_image(self) -> int:
        return max(len(image) for image in self.parts)

    def positive_at(self, k: int, part: int = 0) -> tuple[Tensor, Tensor | None, Tensor]:
        """Positive embeds, pooled (or None) and weights ``(B,)`` of AND part ``part`` at call k."""
        embeds, pooled, weights = [], [], []
        for image in range(self.batch):
            if part < len(self.parts[image]):
                p = self.parts[image][part]
                index = self.variant(p, k)
                embeds.append(self.part_embeds[image][part][index])
                pooled.append(self.part_pooled[image][part])
                pooled[-1] = None if pooled[-1] is None else pooled[-1][index]
                weights.append(p.weight)
            else:  # fewer AND parts than another image: a weight-0 copy of its first part
                p = self.parts[image][0]
                index = self.variant(p, k)
                embeds.append(self.part_embeds[image][0][index])
                first = self.part_pooled[image][0]
                pooled.append(None if first is None else first[index])
                weights.append(0.0)
        stacked_pooled = None if pooled[0] is None else torch.stack(pooled)  # type: ignore[arg-type]
        return torch.stack(embeds), stacked_pooled, torch.tensor(weights)

    def negative_at(self, k: int) -> tuple[Tensor, Tensor | None]:
        """Negative embeds and pooled (or None) at call ``k``."""
        embeds, pooled = [], []
        for image in range(self.batch):
            index = self.variant(self.negative[image], k)
            embeds.append(self.negative_embeds[image][index])
            p = self.negative_pooled[image]
            pooled.append(None if p is None else p[index])
        stacked_pooled = None if pooled[0] is None else torch.stack(pooled)  # type: ignore[arg-type]
        return torch.stack(embeds), stacked_pooled

    def key_at(self, k: int) -> tuple[int, ...]:
        """The variant indices in use at call ``k`` (equal keys: equal conditioning)."""
        keys = [self.variant(p, k) for image in self.parts for p in image]
        keys += [self.variant(p, k) for p in self.negative]
        return tuple(keys)


def _stack_timelines(timelines: Sequence[_Timeline], lora: _LoraRun | None) -> _Timeline:
    """One timeline from one encoding per text-encoder LoRA weight set (``lora.te_sets``, in
    order): each part's rows, set after set (see :meth:`_Timeline.variant`)."""
    first = timelines[0]
    if lora is None:
        return first

    def cat(tensors: Sequence[Tensor | None]) -> Tensor | None:
        return None if tensors[0] is None else torch.cat(list(tensors))  # type: ignore[arg-type]

    sizes = [range(len(image)) for image in first.parts]
    embeds = [
        [torch.cat([t.part_embeds[i][j] for t in timelines]) for j in parts]
        for i, parts in enumerate(sizes)
    ]
    pooled = [
        [cat([t.part_pooled[i][j] for t in timelines]) for j in parts]
        for i, parts in enumerate(sizes)
    ]
    negative = [torch.cat([t.negative_embeds[i] for t in timelines]) for i in range(first.batch)]
    negative_pooled = [cat([t.negative_pooled[i] for t in timelines]) for i in range(first.batch)]
    return dataclasses.replace(
        first,
        part_embeds=embeds,
        part_pooled=pooled,
        negative_embeds=negative,
        negative_pooled=negative_pooled,
        lora=lora,
    )


def _per_image(embeds: Tensor, mask: Tensor | None) -> list[Tensor]:
    """``(B, L, D)`` embeds as one ``(L_i, D)`` tensor per image, its masked positions only
    (the pipelines that take a list, Z-Image)."""
    if mask is None:
        return list(embeds)
    return [e[m.to(e.device).bool()] for e, m in zip(embeds, mask, strict=True)]


def _split(
    kwargs: dict[str, Any], split: Callable[[Tensor], dict[str, Tensor]] | None
) -> dict[str, Any]:
    """The packed ``prompt_embeds`` (and the negative's) as the tensors the pipeline takes
    (HiDream's ``prompt_embeds_t5`` and ``prompt_embeds_llama3``); as they are without ``split``."""
    if split is None:
        return kwargs
    for prefix in ("", "negative_"):
        packed = kwargs.pop(prefix + "prompt_embeds", None)
        if packed is not None:
            kwargs |= {prefix + name: part for name, part in split(packed).items()}
    return kwargs


def _repeat(tensor: Tensor, times: int, like: Tensor) -> Tensor:
    return tensor.to(device=like.device, dtype=like.dtype).repeat_interleave(times, dim=0)


@dataclass(eq=False)
class Conditioning:
    """Weighted conditioning for one pipeline call, and how to hand it to the pipeline.

    Attributes:
        prompt_embeds: ``(B, L, D)`` at the first denoiser call (AND part 1 for AND prompts).
        negative_prompt_embeds: ``(B, L, D)``, same length; ``None`` for Flux without a negative.
        pooled_prompt_embeds: ``(B, P)`` for SDXL, SD3 and Flux, else ``None``.
        negative_pooled_prompt_embeds: likewise.
        family: the pipeline family (see :func:`family_of`).
        steps: the schedule length used (``steps``, or ``hires_steps`` for a hires pass; doubled
            for second-order schedulers), or ``None`` when no ``steps`` were given.
        networks: every extra-network tag found in the prompts, in order.
        num_inference_steps: the ``steps`` given to ``encode`` (``hires_steps`` for a hires
            pass): what the pipeline must run with, so :meth:`pipeline_kwargs` passes it on.
        prompt_attention_mask: ``(B, L)`` the T5 attention mask Chroma and PixArt take with the
            embeds (for an image whose texts change during sampling, the union of theirs: the
            pipeline reads one mask for the whole run; inside :meth:`attach` the denoiser hook
            masks each call as its own text); else ``None``.
        negative_prompt_attention_mask: likewise for the negative.
        padded_conds: (set by ``encode``) some text was padded with encoded empty chunks to the
            length of the others (a prompt and negative of different chunk counts: A1111's "Pad
            conds"); the timeline keeps the lengths before it, from which
            :mod:`promptweights.a1111` runs them unpadded, as A1111 does by default.
    """

    prompt_embeds: Tensor
    negative_prompt_embeds: Tensor | None
    pooled_prompt_embeds: Tensor | None
    negative_pooled_prompt_embeds: Tensor | None
    family: str
    steps: int | None
    networks: tuple[ExtraNetwork, ...]
    _timeline: _Timeline = field(repr=False)
    _attached: int = field(default=0, repr=False)
    num_inference_steps: int | None = None
    prompt_attention_mask: Tensor | None = None
    negative_prompt_attention_mask: Tensor | None = None
    padded_conds: bool = False

    @property
    def edits(self) -> bool:
        """Whether the conditioning changes during sampling (prompt editing, alternation, or a
        LoRA text-encoder weight schedule)."""
        return self._timeline.edits

    @property
    def composable(self) -> bool:
        """Whether the prompt uses ``AND`` (or an AND weight) and so needs :meth:`attach`."""
        return self._timeline.composable

    @property
    def needs_attach(self) -> bool:
        """Whether the pipeline must run inside :meth:`attach`: the prompt uses ``AND``, or it
        edits on a family whose pipelines take no ``callback_on_step_end`` (PixArt), where the
        denoiser hook switches the conditioning instead."""
        family = self._timeline.family
        return self.composable or (self._timeline.edits and not family.step_callback)

    @property
    def _hook_switch(self) -> str:
        """What of an edit the step callback cannot swap (Flux's pooled vector, Chroma's, Flux's
        and Z-Image's negative, a mask that changes with the text: Chroma, PixArt, Qwen-Image,
        Lumina 2, SANA), ``""`` if nothing: :meth:`attach`'s hook switches it."""
        timeline = self._timeline
        family = timeline.family
        # Z-Image's per-image tensors are cut to each text by the step callback itself.
        mask_edits = timeline.mask_edits and not family.embeds_as_list
        if family.batched_guidance and not family.embeds_as_list:
            return "attention mask" if mask_edits else ""
        if family.step_pooled is None and timeline.pooled_edits:
            return "pooled vector"
        if mask_edits:
            return "attention mask"
        negative_edits = any(len(part.ends) > 1 for part in timeline.negative)
        if (
            negative_edits
            and timeline.has_negative
            and "negative_prompt_embeds" not in (family.step_tensors)
        ):
            return "negative prompt"
        return ""

    def at_call(self, k: int) -> dict[str, Tensor | None]:
        """The conditioning the denoiser gets at call ``k`` (0-based), without AND parts ≥ 2.

        Args:
            k: the denoiser call.

        Returns:
            ``prompt_embeds``, ``negative_prompt_embeds`` and the pooled vectors at that call.
        """
        positive, pooled, _ = self._timeline.positive_at(k)
        negative, negative_pooled = self._timeline.negative_at(k)
        return {
            "prompt_embeds": positive,
            "negative_prompt_embeds": negative if self._timeline.has_negative else None,
            "pooled_prompt_embeds": pooled,
            "negative_pooled_prompt_embeds": negative_pooled
            if self._timeline.has_negative
            else None,
        }

    def pipeline_kwargs(
        self,
        callback_on_step_end: Callable[..., dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
        num_images_per_prompt: int | None = None,
    ) -> dict[str, Any]:
        """The keyword arguments for ``pipe(**kwargs, ...)``.

        Holds the embeddings (only those the family takes), ``num_inference_steps`` when
        ``encode`` was given ``steps``, and, when the prompt edits or a LoRA weight schedule
        changes the UNet weight, ``callback_on_step_end`` with
        ``callback_on_step_end_tensor_inputs`` (it also sets the UNet adapter weights with
        ``pipe.set_adapters``). Do not pass those again to the pipeline (Python
        refuses a keyword given twice); to run your own step callback as well, give it here and
        it is chained after the one that swaps the conditioning::

            kwargs = cond.pipeline_kwargs(callback_on_step_end=my_callback)
            image = pipe(**kwargs).images[0]

        The swapping callback checks that the pipeline runs the number of steps the schedule
        was built for and raises :class:`~promptweights.errors.InvalidArgumentError` at the
        first step otherwise (``[a:b:0.5]`` would switch at the wrong step).

        Args:
            callback_on_step_end: your own step callback, if any; it runs after the one that
                swaps the conditioning and sees its result.
            callback_on_step_end_tensor_inputs: the tensors your callback needs (diffusers'
                default ``["latents"]`` when you pass a callback).
            num_images_per_prompt: images per prompt (videos on Wan). Give it here, not to the
                pipeline: diffusers' SD3, Flux.1, Chroma, Wan, Lumina 2 and Kolors pipelines
                do not repeat embeddings passed in (the run fails, or Flux.1 and Wan run every
                image on one broadcast text row), and Lumina 2, SANA and Qwen-Image pair a
                list's repeated embeds with masks in another order; there the keyword arguments
                hold the tensors repeated per image and the pipeline's count is 1, elsewhere
                they hold the count. Either way each image is conditioned on its own text.

        Returns:
            The keyword arguments.

        Raises:
            PromptweightsError: for an AND prompt outside ``with cond.attach(pipe):`` (or one
                that edits, on a family whose pipelines take no ``callback_on_step_end``).
        """
        self._refuse_runtime()
        self._check_attached()
        kwargs = self._tensor_kwargs()
        if num_images_per_prompt is not None:
            kwargs |= self._per_prompt(kwargs, num_images_per_prompt)
        inputs: list[str] = []
        if callback_on_step_end is not None:
            inputs = list(callback_on_step_end_tensor_inputs or ["latents"])
        if (self.edits or self._timeline.unet_changes) and not self.needs_attach:
            family = self._timeline.family
            if not family.step_callback:
                raise UnsupportedPipelineError(
                    f"{family.title} pipelines take no callback_on_step_end, so a LoRA weight "
                    "schedule cannot change the UNet weights during sampling"
                )
            switch = self._hook_switch
            if switch and not self._attached:
                warn_or_raise(
                    f"the edit changes {family.title}'s {switch}, which its "
                    "callback_on_step_end cannot swap: run the pipeline inside "
                    "`with cond.attach(pipe):` to switch it too (else it stays the first "
                    "schedule entry's)",
                    strict=False,
                    stacklevel=3,
                )
            callback = _StepCallback(
                self._timeline, callback_on_step_end, steps=self.num_inference_steps
            )
            kwargs["callback_on_step_end"] = callback
            extra = [name for name in inputs if name not in callback.tensor_inputs]
            kwargs["callback_on_step_end_tensor_inputs"] = callback.tensor_inputs + extra
        elif callback_on_step_end is not None:
            kwargs["callback_on_step_end"] = callback_on_step_end
            kwargs["callback_on_step_end_tensor_inputs"] = inputs
        return kwargs

    def _refuse_runtime(self) -> None:
        """Refuse editing, alternation and AND where the family says they cannot work."""
        family = self._timeline.family
        if family.runtime_refused and (self.edits or self.needs_attach):
            raise UnsupportedPipelineError(
                f"prompt editing, alternation and AND are not supported on {family.title}: "
                f"{family.runtime_refused}"
            )

    def _per_prompt(self, kwargs: dict[str, Any], count: int) -> dict[str, Any]:
        """The pipeline's images-per-prompt argument for ``count``, and the tensors repeated per
        image where the family's pipelines do not repeat embeddings passed in."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidArgumentError(
                f"num_images_per_prompt must be a positive integer, got {count!r}"
            )
        known = self._timeline.parameters
        name = "num_images_per_prompt"
        if known is not None and name not in known and "num_videos_per_prompt" in known:
            name = "num_videos_per_prompt"  # Wan
        if self._timeline.family.repeats_embeds:
            return {name: count}
        out: dict[str, Any] = {name: 1}
        for key, value in kwargs.items():
            if isinstance(value, Tensor):
                out[key] = value.repeat_interleave(count, dim=0)
        return out

    def _check_attached(self) -> None:
        if not self.needs_attach or self._attached:
            return
        if not self.composable:
            raise PromptweightsError(
                f"{self._timeline.family.title} pipelines take no callback_on_step_end: run "
                "the pipeline inside `with cond.attach(pipe):` so that prompt editing switches "
                "the conditioning in the denoiser"
            )
        raise PromptweightsError(
            "this prompt uses AND: run the pipeline inside `with cond.attach(pipe):` so that "
            "the parts are combined in the denoiser as A1111 does"
        )

    def _tensor_kwargs(self) -> dict[str, Any]:
        """The embeddings (and masks, steps) the family takes, as pipeline keywords."""
        kwargs: dict[str, Any] = {"prompt_embeds": self.prompt_embeds}
        known = self._timeline.parameters
        cleared = [n for n in self._timeline.family.cleared if known is None or n in known]
        kwargs |= dict.fromkeys(cleared)
        if self.num_inference_steps is not None:
            kwargs["num_inference_steps"] = self.num_inference_steps
        if self.negative_prompt_embeds is not None:
            kwargs["negative_prompt_embeds"] = self.negative_prompt_embeds
        if self.pooled_prompt_embeds is not None:
            kwargs["pooled_prompt_embeds"] = self.pooled_prompt_embeds
        if self.negative_pooled_prompt_embeds is not None:
            kwargs["negative_pooled_prompt_embeds"] = self.negative_pooled_prompt_embeds
        family = self._timeline.family
        name = family.mask_argument
        if self.prompt_attention_mask is not None and name:
            kwargs[name] = self.prompt_attention_mask
        negative_mask = self.negative_prompt_attention_mask
        if negative_mask is not None and name and self.negative_prompt_embeds is not None:
            kwargs["negative_" + name] = negative_mask
        if family.embeds_as_list:
            # Each image's tensor is its text at the first call, cut to that text's own length.
            own = self._timeline.mask_at(0), self._timeline.negative_mask_at(0)
            for key, mask in (
                ("prompt_embeds", self.prompt_attention_mask if own[0] is None else own[0]),
                (
                    "negative_prompt_embeds",
                    self.negative_prompt_attention_mask if own[1] is None else own[1],
                ),
            ):
                if kwargs.get(key) is not None:
                    kwargs[key] = _per_image(kwargs[key], mask)
        return _split(kwargs, self._timeline.split)

    @contextmanager
    def attach(self, pipe: Any) -> Iterator[Conditioning]:
        """Combine AND parts in ``pipe``'s denoiser for the duration of a ``with`` block.

        Registers a forward pre-hook and a forward hook on ``pipe.unet`` (or ``pipe.transformer``)
        and removes both on exit, whatever happens; for prompts without AND it does nothing (except
        where the step callback cannot switch an editing prompt's conditioning: PixArt, which takes
        no ``callback_on_step_end``, and Flux when the edit changes CLIP-L's pooled vector; the
        hook switches it at each call there).

        Where the pipeline batches ``[uncond, cond]`` (SD, SDXL, SD3, PixArt, SANA, SANA-WM, Kolors,
        HiDream-I1; Z-Image's lists ``[cond…, uncond…]``, :mod:`promptweights.diffusers._listed`)
        the parts are combined as A1111 does, ``uncond + Σ w_j (cond_j − uncond)``, which needs
        classifier-free guidance (``guidance_scale > 1``; Z-Image without it takes the weighted
        mean). Where it calls the transformer for cond and uncond apart (Flux.1, Chroma, Wan,
        Qwen-Image, Flux.2, Flux.2 Klein, Lumina 2) the cond call's prediction becomes the parts'
        weighted mean ``Σ w_j ε_j / Σ w_j`` (ComfyUI's ``ConditioningCombine``; A1111's where the
        weights sum to 1), with or without true guidance
        (:mod:`promptweights.diffusers._separate`). Each call's text is masked as that text
        alone where the family has masks (the pipeline reads one mask, the union of a
        schedule's texts), and an edit without guidance switches the cond rows alone.

        Args:
            pipe: the pipeline this conditioning was encoded for.

        Yields:
            This conditioning (``pipeline_kwargs()`` works inside the block).

        Raises:
            InvalidWeightError: AND weights that sum to 0 where the parts are averaged (no mean).
        """
        self._refuse_runtime()
        if not self.needs_attach and not self._hook_switch:
            self._attached += 1
            try:
                yield self
            finally:
                self._attached -= 1
            return
        family = self._timeline.family
        hook: Any
        if family.embeds_as_list:
            from ._listed import ListHook

            hook = ListHook(self._timeline, pipe)
        elif family.batched_guidance:
            # Editing without AND on a pipeline without step callbacks: the hook only switches.
            hook = _AndHook(self._timeline, pipe)
            if family.positional_text:
                hook = _Positional(hook)
        else:
            from ._separate import SeparateHook, check_weights

            check_weights(self._timeline)
            hook = SeparateHook(self._timeline, pipe)
        handles = []
        for name in (family.denoiser, *family.more_denoisers):
            denoiser = getattr(pipe, name, None)
            if denoiser is None:
                continue
            handles += [
                denoiser.register_forward_pre_hook(hook.before, with_kwargs=True),
                denoiser.register_forward_hook(hook.after, with_kwargs=True),
            ]
        self._attached += 1
        try:
            yield self
        finally:
            self._attached -= 1
            for handle in handles:
                handle.remove()
            if self._timeline.unet_changes and self._timeline.lora is not None:
                self._timeline.lora.apply(pipe, 0)  # the next run starts as this one did


class _StepCallback:
    """``callback_on_step_end``: after loop iteration ``i``, the conditioning of call ``i + 1``."""

    def __init__(
        self,
        timeline: _Timeline,
        then: Callable[..., dict[str, Any]] | None = None,
        *,
        steps: int | None = None,
    ) -> None:
        self.timeline = timeline
        self.then = then
        self.steps = steps
        self.tensor_inputs = list(timeline.family.step_tensors)
        if timeline.swappable:
            self.tensor_inputs = [n for n in self.tensor_inputs if n in timeline.swappable]

    def __call__(self, pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if i == 0:
            self.check_steps(pipe)
        out = self.swap(pipe, i, kwargs)
        self.set_lora(pipe, i)
        if self.then is not None:
            out.update(self.then(pipe, i, t, {**kwargs, **out}))
        return out

    def check_steps(self, pipe: Any) -> None:
        """The schedule was built for ``steps``: a pipeline running another count would switch
        at the wrong calls, so it stops here, at the first step."""
        running = getattr(getattr(pipe, "scheduler", None), "num_inference_steps", None)
        if self.steps is None or not isinstance(running, int) or running == self.steps:
            return
        raise InvalidArgumentError(
            f"the conditioning was encoded for steps={self.steps} but the pipeline runs "
            f"num_inference_steps={running}: prompt editing would switch at the wrong step; "
            "encode with the pipeline's steps, or pass **cond.pipeline_kwargs() (it holds "
            "num_inference_steps) without giving num_inference_steps again"
        )

    def set_lora(self, pipe: Any, i: int) -> None:
        """Give the adapters the UNet weights of call ``i + 1`` where they change; after the last
        call, those of call 0 again, so that the next run starts as this one did."""
        lora = self.timeline.lora
        if lora is None or not lora.unet_changes:
            return
        total = getattr(pipe, "num_timesteps", None)
        if not isinstance(total, int):
            timesteps = getattr(getattr(pipe, "scheduler", None), "timesteps", None)
            total = 0 if timesteps is None else len(timesteps)
        k = 0 if total and i + 1 >= total else i + 1
        if lora.unet_at(k) != lora.unet_at(i):
            lora.apply(pipe, k)

    def swap(self, pipe: Any, i: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The tensors to replace after loop iteration ``i`` (empty when nothing changes)."""
        timeline = self.timeline
        k = i + 1
        if timeline.key_at(k) == timeline.key_at(i):
            return {}
        positive, pooled, _ = timeline.positive_at(k)
        negative, negative_pooled = timeline.negative_at(k)
        family = timeline.family
        guided = family.batched_guidance and bool(getattr(pipe, "do_classifier_free_guidance", 0))
        out: dict[str, Any] = {}
        pairs: list[tuple[str, Tensor, Tensor | None]] = [("prompt_embeds", positive, negative)]
        if pooled is not None and family.step_pooled is not None:
            pairs.append((family.step_pooled, pooled, negative_pooled))
        if not guided and timeline.has_negative and "negative_prompt_embeds" in family.step_tensors:
            # The negative is a tensor of its own (Wan): swapped on its own.
            pairs.append(("negative_prompt_embeds", negative, None))
        if timeline.split is not None:
            out |= self._split_swap(kwargs, positive, negative, guided)
        for name, pos, neg in pairs:
            current = kwargs.get(name)
            if current is None:  # the pipeline does not let this tensor be swapped
                continue
            if isinstance(current, list):  # one tensor per image (Z-Image): positives only
                rows = _per_image(pos, timeline.mask_at(k))
                per_image = max(1, len(current) // len(rows))
                out[name] = [row for row in rows for _ in range(per_image)]
                continue
            # PAG (Kolors PAG, SANA PAG) batches a perturbed copy of the cond after it.
            pag = guided and bool(getattr(pipe, "do_perturbed_attention_guidance", False))
            halves = (2 if guided else 1) + pag
            per_image = current.shape[0] // (halves * timeline.batch)
            new = _repeat(pos, per_image, current)
            if guided:
                assert neg is not None
                new = torch.cat([_repeat(neg, per_image, current), new, *([new] if pag else [])])
            out[name] = new
        return out

    def _split_swap(
        self, kwargs: dict[str, Any], positive: Tensor, negative: Tensor, guided: bool
    ) -> dict[str, Tensor]:
        """HiDream: the packed conditioning of the next call cut into the tensors the pipeline
        holds (``prompt_embeds_t5`` ``(B, L, D)``, ``prompt_embeds_llama3`` ``(layers, B, L, D)``:
        rows on dim ``ndim - 3``), ``[negative, positive]`` where it batches them."""
        timeline = self.timeline
        assert timeline.split is not None
        halves = 2 if guided else 1
        per_image = 0
        for name, piece in timeline.split(positive).items():
            current = kwargs.get(name)
            if isinstance(current, Tensor):
                per_image = current.shape[piece.ndim - 3] // (halves * timeline.batch)
                break
        if not per_image:
            return {}
        packed = positive.repeat_interleave(per_image, 0)
        if guided:
            packed = torch.cat([negative.repeat_interleave(per_image, 0), packed])
        out = {}
        for name, piece in timeline.split(packed).items():
            current = kwargs.get(name)
            if isinstance(current, Tensor):
                out[name] = piece.to(device=current.device, dtype=current.dtype)
        return out


class _Positional:
    """:class:`_AndHook` on a denoiser that takes its text as its third positional argument and
    the text's mask as ``mask=`` (SANA-WM): the hook sees them as ``encoder_hidden_states`` and
    ``encoder_attention_mask``, and the denoiser gets what it switched back in their places."""

    def __init__(self, inner: _AndHook) -> None:
        self.inner = inner

    def before(
        self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if len(args) < 3 or not isinstance(args[2], Tensor):
            raise UnsupportedPipelineError(
                f"{type(module).__name__} is not called with its text third positionally as "
                "SANA-WM's transformer is: the AND and editing hook cannot hand it the "
                "conditioning"
            )
        named = dict(kwargs)
        named["encoder_hidden_states"] = args[2]
        if "mask" in named:
            named["encoder_attention_mask"] = named.pop("mask")
        rest, named = self.inner.before(module, (*args[:2], *args[3:]), named)
        out = list(rest)
        out.insert(2, named.pop("encoder_hidden_states"))
        if "encoder_attention_mask" in named:
            named["mask"] = named.pop("encoder_attention_mask")
        return tuple(out), named

    def after(self, module: Any, args: Any, kwargs: Any, output: Any) -> Any:
        return self.inner.after(module, args, kwargs, output)


class _AndHook:
    """Forward hooks that run every AND part and combine them as A1111's CFG denoiser does."""

    def __init__(self, timeline: _Timeline, pipe: Any = None) -> None:
        self.timeline = timeline
        self.pipe = pipe
        self.calls = 0
        self.pending: tuple[int, Tensor] | None = None

    def before(
        self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if getattr(self.pipe, "do_perturbed_attention_guidance", False):
            return self._perturbed(args, kwargs)
        return self._before(args, kwargs)

    def _before(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        timeline = self.timeline
        args, kwargs = list(args), dict(kwargs)  # type: ignore[assignment]
        sample_key = "sample" if "sample" in kwargs else "hidden_states"
        sample = args[0] if args else kwargs[sample_key]
        total = sample.shape[0]
        k, guided = self._count(total)
        if not guided and not timeline.composable and total % timeline.batch == 0:
            return self._unguided(args, kwargs, k, total)  # type: ignore[arg-type]
        if not guided:
            raise PromptweightsError(
                "AND needs classifier-free guidance (guidance_scale > 1): the denoiser got "
                f"{total} rows for {timeline.batch} prompts"
            )
        half = total // 2
        per_image = half // timeline.batch
        parts = timeline.parts_per_image
        negative, negative_pooled = timeline.negative_at(k)
        conds, pooleds, weights = [], [], []
        for j in range(parts):
            c, p, w = timeline.positive_at(k, j)
            conds.append(c)
            pooleds.append(p)
            weights.append(w.repeat_interleave(per_image))

        def expand(tensor: Any) -> Any:
            if isinstance(tensor, Tensor) and tensor.ndim > 0 and tensor.shape[0] == total:
                return torch.cat([tensor[:half]] + [tensor[half:]] * parts)
            return tensor

        texts = self._texts(kwargs, [negative, *conds], per_image)
        if args:
            args = [expand(args[0]), *(expand(a) for a in args[1:])]  # type: ignore[assignment]
        for key in list(kwargs):
            if key in texts:
                kwargs[key] = texts[key]
                continue
            if key == "added_cond_kwargs" and kwargs[key] is not None:
                added = {name: expand(value) for name, value in kwargs[key].items()}
                if negative_pooled is not None and "text_embeds" in added:
                    like = kwargs[key]["text_embeds"]
                    added["text_embeds"] = torch.cat(
                        [_repeat(negative_pooled, per_image, like)]
                        + [_repeat(p, per_image, like) for p in pooleds if p is not None]
                    )
                kwargs[key] = added
            elif key in ("pooled_projections", "pooled_embeds") and negative_pooled is not None:
                like = kwargs[key]
                kwargs[key] = torch.cat(
                    [_repeat(negative_pooled, per_image, like)]
                    + [_repeat(p, per_image, like) for p in pooleds if p is not None]
                )
            else:
                kwargs[key] = expand(kwargs[key])
        self._masks(kwargs, k, per_image)
        self.pending = (half, torch.stack(weights))
        return tuple(args), kwargs

    def _perturbed(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """A PAG pipeline (Kolors PAG, SANA PAG) batches ``[uncond, cond, perturbed cond]``: AND
        is refused there; an edit's texts are the step callback's, its masks are switched here
        (SANA PAG)."""
        timeline = self.timeline
        if timeline.composable:
            raise UnsupportedPipelineError(
                f"AND is not supported on {type(self.pipe).__name__} with perturbed-attention "
                "guidance: its batch holds a perturbed copy of the cond, which A1111's "
                "combination of AND parts has no place for (set pag_scale=0 to run AND)"
            )
        k = self._advance()
        self.pending = None
        value, mask = kwargs.get("encoder_attention_mask"), timeline.mask_at(k)
        if mask is None or not isinstance(value, Tensor):
            return args, kwargs
        guided = bool(getattr(self.pipe, "do_classifier_free_guidance", False))
        negative = timeline.negative_mask_at(k)
        masks = [negative, mask, mask] if guided and negative is not None else [mask, mask]
        per_image = value.shape[0] // (len(masks) * timeline.batch)
        rows = torch.cat([m.repeat_interleave(per_image, 0) for m in masks])
        kwargs = {**kwargs, "encoder_attention_mask": rows.to(value.device, value.dtype)}
        return args, kwargs

    def _advance(self) -> int:
        """Count the call (and give a LoRA's UNet weight of it, loractl); return its index."""
        k = self.calls
        self.calls += 1
        lora = self.timeline.lora
        if lora is not None and lora.unet_changes and lora.unet_at(k) != lora.unet_at(k - 1):
            lora.apply(self.pipe, k)
        return k

    def _count(self, total: int) -> tuple[int, bool]:
        """Count the call (and give a LoRA's UNet weight of it, loractl); return its index and
        whether it holds ``[uncond, cond]`` (``total`` rows)."""
        timeline = self.timeline
        k = self._advance()
        paired = total % (2 * timeline.batch) == 0
        return k, bool(getattr(self.pipe, "do_classifier_free_guidance", paired)) and paired

    def _unguided(
        self, args: list[Any], kwargs: dict[str, Any], k: int, total: int
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """An edit without classifier-free guidance (SANA Sprint, ``guidance_scale`` ≤ 1): every
        row is a cond row, given the text, pooled vector and mask of call ``k``."""
        timeline = self.timeline
        per_image = total // timeline.batch
        cond, pooled, _ = timeline.positive_at(k)
        kwargs |= self._texts(kwargs, [cond], per_image)
        if pooled is not None:
            for key in ("pooled_projections", "pooled_embeds"):
                if isinstance(kwargs.get(key), Tensor):
                    kwargs[key] = _repeat(pooled, per_image, kwargs[key])
            added = kwargs.get("added_cond_kwargs")
            if added is not None and "text_embeds" in added:
                like = added["text_embeds"]
                kwargs["added_cond_kwargs"] = added | {
                    "text_embeds": _repeat(pooled, per_image, like)
                }
        mask, value = timeline.mask_at(k), kwargs.get("encoder_attention_mask")
        if mask is not None and isinstance(value, Tensor):
            rows = mask.repeat_interleave(per_image, 0)
            kwargs["encoder_attention_mask"] = rows.to(device=value.device, dtype=value.dtype)
        self.pending = (total, torch.ones(1, total))  # the pipeline's own output
        return tuple(args), kwargs

    def _texts(
        self, kwargs: dict[str, Any], groups: list[Tensor], per_image: int
    ) -> dict[str, Tensor]:
        """The denoiser's text keywords for ``groups`` (``[uncond, part 1, part 2…]``):
        ``encoder_hidden_states``, or, where the family splits its text (HiDream), each split
        tensor under the denoiser's name for it (``prompt_embeds_t5`` as
        ``encoder_hidden_states_t5``; a layer stack ``(layers, B, L, D)`` has its rows on
        dim 1)."""
        split = self.timeline.split
        name = "encoder_hidden_states"
        if split is None:
            like = kwargs[name]
            return {name: torch.cat([_repeat(g, per_image, like) for g in groups])}
        packed = torch.cat([g.repeat_interleave(per_image, 0) for g in groups])
        out = {}
        for key, piece in split(packed).items():
            target = name + key.removeprefix("prompt_embeds")
            like = kwargs.get(target)
            if not isinstance(like, Tensor):
                raise UnsupportedPipelineError(
                    f"{self.timeline.family.title}'s denoiser was called without {target}=: the "
                    "AND and editing hook cannot hand it the conditioning"
                )
            out[target] = piece.to(device=like.device, dtype=like.dtype)
        return out

    def _masks(self, kwargs: dict[str, Any], k: int, per_image: int) -> None:
        """PixArt's ``encoder_attention_mask``: each row masked as its own text at call ``k``."""
        timeline = self.timeline
        value = kwargs.get("encoder_attention_mask")
        negative = timeline.negative_mask_at(k)
        if negative is None or not isinstance(value, Tensor):
            return
        masks = [negative] + [timeline.mask_at(k, j) for j in range(timeline.parts_per_image)]
        rows = torch.cat([m.repeat_interleave(per_image, 0) for m in masks])  # type: ignore[union-attr]
        kwargs["encoder_attention_mask"] = rows.to(device=value.device, dtype=value.dtype)

    def after(self, module: Any, args: Any, kwargs: Any, output: Any) -> Any:
        if self.pending is None:  # a PAG call, left as it is
            return output
        half, weights = self.pending
        self.pending = None
        out = output[0] if isinstance(output, tuple) else output.sample
        if self.timeline.parts_per_image == 1 and bool((weights == 1.0).all()):
            return output  # one part at weight 1 (editing only): the pipeline's own output
        uncond = out[:half]
        conds = out[half:].reshape(-1, *uncond.shape)
        w = weights.to(device=out.device, dtype=out.dtype).reshape(
            *weights.shape, *([1] * (uncond.ndim - 1))
        )
        combined = uncond + (w * (conds - uncond)).sum(dim=0)
        result = torch.cat([uncond, combined])
        if isinstance(output, tuple):
            return (result, *output[1:])
        return type(output)(sample=result)
