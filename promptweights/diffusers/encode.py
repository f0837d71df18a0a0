""":func:`encode`: prompts in, a :class:`Conditioning` out, every schedule entry encoded first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import promptweights
from promptweights.builder import build
from promptweights.encoders import TextEncoder
from promptweights.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    InvalidWeightError,
    LimitExceededError,
)
from promptweights.limits import DEFAULT_LIMITS, MAX_WEIGHT, Limits
from promptweights.schedules import split_and_with_tails
from promptweights.settings import a1111_clip_skip
from promptweights.strategies import Normalization, Strategy, get_normalization, get_strategy
from promptweights.tokens import check_weights, span_position
from promptweights.tree import ExtraNetwork

from .conditioning import Conditioning, _Part, _Timeline
from .families import Encoded, Family, record_of
from .lora import _apply_loras, _plan_loras

# The schedule length used to find out whether a prompt edits at all when no steps are given.
_PROBE_STEPS = 1000


class _RowEncoder(TextEncoder):
    """A :class:`TextEncoder` that runs its rows one forward pass each.

    On CPU a batched matmul can round differently from diffusers' one-text calls in the last bit;
    one pass per row keeps a plain prompt bit-identical to the pipeline's own ``encode_prompt``.
    Rows are still planned, de-duplicated and cached by the builder, and all of them are encoded
    before sampling starts.
    """

    def encode(
        self, ids: Tensor, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Encode each row on its own and stack the results (see :meth:`TextEncoder.encode`)."""
        rows = [
            TextEncoder.encode(
                self, ids[i : i + 1], None if attention_mask is None else attention_mask[i : i + 1]
            )
            for i in range(ids.shape[0])
        ]
        z = torch.cat([r[0] for r in rows])
        pooled = [r[1] for r in rows]
        return z, None if pooled[0] is None else torch.cat(pooled)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _Slot:
    """One text encoder of a family and which prompt (1, 2 or 3) it reads."""

    encoder: TextEncoder
    prompt: int


def _slots(
    pipe: Any,
    family: Family,
    clip_skip: int,
    max_sequence_length: int | None,
    batch_rows: bool,
) -> list[_Slot]:
    enc = TextEncoder if batch_rows else _RowEncoder
    slots = []
    for tower in family.towers:
        encoder = tower.text_encoder(
            pipe, enc, clip_skip, max_sequence_length, family.sequence_length
        )
        if encoder is not None:
            slots.append(_Slot(encoder, tower.prompt))
    return slots


def _schedule(text: str, steps: int | None, options: Mapping[str, Any]) -> list[tuple[int, str]]:
    limits: Limits = options.get("limits", DEFAULT_LIMITS)
    if steps is None:
        try:
            # One entry is all a prompt without editing has; more is all we need to know.
            probe = promptweights.schedules(
                text, _PROBE_STEPS, max_variants=1, max_chars=max(len(text), 1)
            )
        except LimitExceededError:
            excerpt = text if len(text) <= 60 else text[:57] + "..."
            raise InvalidArgumentError(
                f"the prompt {excerpt!r} uses prompt editing or alternation: pass steps= (the "
                "pipeline's num_inference_steps) so that the switching steps are known"
            ) from None
        return [(0, probe[0][1])]
    return promptweights.schedules(
        text,
        steps,
        hires_steps=options.get("hires_steps"),
        old_timelines=bool(options.get("old_timelines", False)),
        max_variants=limits.variants,
        max_chars=limits.schedule_chars,
    )


def _merge(schedules: Sequence[list[tuple[int, str]]]) -> tuple[list[int], list[tuple[str, ...]]]:
    """Join the schedules of the texts one image feeds to different encoders (prompt, prompt_2)."""
    ends = sorted({end for schedule in schedules for end, _ in schedule})
    texts = [tuple(_lookup_text(schedule, end) for schedule in schedules) for end in ends]
    return ends, texts


def _lookup_text(schedule: list[tuple[int, str]], step: int) -> str:
    for end, text in schedule:
        if step <= end:
            return text
    return schedule[-1][1]


def _clean(text: str) -> tuple[str, list[ExtraNetwork]]:
    text = promptweights.strip_comments(text)
    return promptweights.extra_networks(text)


def _as_list(value: str | Sequence[str] | None, batch: int, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value] * batch
    values = list(value)
    if len(values) != batch:
        raise InvalidArgumentError(f"{what} has {len(values)} entries for {batch} prompts")
    return values


def _check_lengths(texts: Mapping[str, list[str] | None], limit: int) -> None:
    for name, values in texts.items():
        for i, text in enumerate(values or ()):
            if not isinstance(text, str):
                raise ArgumentTypeError(f"{name} must be str, not {type(text).__name__}")
            if len(text) > limit:
                which = name if len(values or ()) == 1 else f"{name}[{i}]"
                raise LimitExceededError(
                    f"{which} has {len(text)} characters; the limit is {limit} (prompt_chars)"
                )


def _validate(text: str, source: str) -> None:
    """Run the span parser early so that a bad weight fails before the pipeline is touched; the
    error points into ``source``, the prompt as the user wrote it."""
    spans = promptweights.weighted_spans(text)
    try:
        check_weights(spans)
    except InvalidWeightError as error:
        index = next(i for i, (_, w) in enumerate(spans) if not abs(w) <= MAX_WEIGHT)
        pos = span_position(source, spans, index)
        raise InvalidWeightError(
            error.message, source=None if pos is None else source, pos=pos
        ) from None


def _check_and_weights(text: str) -> None:
    """``a AND b:w``: each part's weight must be finite and within ``MAX_WEIGHT`` too."""
    start = 0
    for body, weight, tail in split_and_with_tails(text):
        if not abs(weight) <= MAX_WEIGHT:
            raise InvalidWeightError(
                f"AND weight {weight!r} is not a finite number within ±{MAX_WEIGHT:g} "
                "(promptweights.limits.MAX_WEIGHT)",
                source=text,
                pos=start + len(body) + max(tail.find(":"), 0),
            )
        start += len(body) + len(tail) + len("AND")


def encode(
    pipe: Any,
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None = "",
    *,
    strategy: str | Strategy = "a1111",
    clip_skip: int | None = None,
    steps: int | None = None,
    **options: Any,
) -> Conditioning:
    """Encode an A1111 prompt for a diffusers pipeline.

    Args:
        pipe: an SD 1.x/2.x, SDXL (base or refiner), SD3/3.5 or Flux.1 pipeline (text to image
            or image to image).
        prompt: the prompt, or one per image.
        negative_prompt: the negative prompt (never split at AND), one for all or one per image.
        strategy: a weighting strategy name from ``promptweights.strategies.STRATEGIES`` or a
            callable.
        clip_skip: the pipeline's ``clip_skip`` (A1111's "Clip skip N" is ``N - 1``).
        steps: the pipeline's ``num_inference_steps``; needed when the prompt edits or alternates.
        **options: ``prompt_2``, ``negative_prompt_2`` (SDXL, SD3, Flux's T5), ``prompt_3``,
            ``negative_prompt_3`` (SD3's T5); ``normalization`` (token normalisation name);
            ``comma_backtrack`` (20); ``second_order`` (default: ``scheduler.order == 2``);
            ``hires_steps`` and ``old_timelines`` (A1111's schedule options);
            ``max_sequence_length`` (T5 window: SD3 256, Flux 512); ``lora_dir`` (a folder of
            ``.safetensors`` LoRAs, named by file stem) and ``loras`` (name → path);
            ``batch_rows`` (``False``: one forward pass per encoded row, bit-identical to the
            pipeline's one-text calls; ``True``: one pass for all rows of an encoder, faster on a
            GPU, may differ in the last bit); ``limits`` (a :class:`~promptweights.Limits`:
            prompt length, schedule entries, AND parts, encoder rows, output tokens).

    Returns:
        The :class:`Conditioning`; pass ``cond.pipeline_kwargs()`` to the pipeline, inside
        ``with cond.attach(pipe):`` when the prompt uses AND.

    Raises:
        UnknownNameError: an unknown strategy, normalisation or LoRA name.
        NetworkFileError: a LoRA file that is missing, not ``.safetensors``, unreadable, or whose
            tensors do not fit the pipeline (the message names the file and key).
        UnsupportedPipelineError: a pipeline family this adapter does not know.
        LimitExceededError: a prompt, schedule, AND split, row count or output length past
            ``limits``.
        InvalidWeightError: a prompt weight, ``AND`` weight or LoRA multiplier that is not finite
            or past its bound (``promptweights.limits.MAX_WEIGHT``, ``MAX_MULTIPLIER``), with its
            position in the prompt; or conditioning that would not be finite.
        ValueError: editing without ``steps``, batch sizes that do not match, unknown options.
    """
    known = {
        "prompt_2",
        "negative_prompt_2",
        "prompt_3",
        "negative_prompt_3",
        "normalization",
        "comma_backtrack",
        "second_order",
        "hires_steps",
        "old_timelines",
        "max_sequence_length",
        "lora_dir",
        "loras",
        "batch_rows",
        "limits",
    }
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidArgumentError(f"unknown options {unknown}; known: {sorted(known)}")
    family = record_of(pipe)
    # Unknown names fail here, before anything is loaded.
    get_strategy(strategy)
    get_normalization(options.get("normalization", "none"))

    limits = options.get("limits", DEFAULT_LIMITS)
    if not isinstance(limits, Limits):
        raise ArgumentTypeError(
            f"limits must be a promptweights.Limits, not {type(limits).__name__}"
        )
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise InvalidArgumentError("no prompt given")
    batch = len(prompts)
    negatives = _as_list(negative_prompt if negative_prompt is not None else "", batch, "negative")
    assert negatives is not None
    extra_prompts = [
        _as_list(options.get("prompt_2"), batch, "prompt_2"),
        _as_list(options.get("prompt_3"), batch, "prompt_3"),
    ]
    extra_negatives = [
        _as_list(options.get("negative_prompt_2"), batch, "negative_prompt_2"),
        _as_list(options.get("negative_prompt_3"), batch, "negative_prompt_3"),
    ]
    schedule_steps = steps
    if steps is not None:
        second_order = options.get("second_order")
        if second_order is None:
            second_order = getattr(getattr(pipe, "scheduler", None), "order", 1) == 2
        schedule_steps = steps * (2 if second_order else 1)
        if options.get("hires_steps") is not None:
            # A second-order sampler doubles the hires pass's schedule too (§4.4).
            options = {
                **options,
                "hires_steps": options["hires_steps"] * (2 if second_order else 1),
            }

    # 1. Text only: comments, networks, AND, schedules, weight check. Nothing touched yet.
    _check_lengths(
        {
            "prompt": prompts,
            "negative_prompt": negatives,
            "prompt_2": extra_prompts[0],
            "prompt_3": extra_prompts[1],
            "negative_prompt_2": extra_negatives[0],
            "negative_prompt_3": extra_negatives[1],
        },
        limits.prompt_chars,
    )
    networks: list[ExtraNetwork] = []
    parts: list[list[_Part]] = []
    negative_parts: list[_Part] = []
    for image in range(batch):
        main, found = _clean(prompts[image])
        networks += found
        others: list[list[tuple[str, float]] | None] = []
        for extra in extra_prompts:
            if extra is None:
                others.append(None)
            else:
                text, found = _clean(extra[image])
                networks += found
                others.append(promptweights.split_and(text, max_parts=limits.and_parts))
        main_parts = promptweights.split_and(main, max_parts=limits.and_parts)
        _check_and_weights(main)
        image_parts = []
        for j, (text, weight) in enumerate(main_parts):
            texts = [text]
            for other in others:
                if other is None:
                    texts.append(text)
                elif len(other) == len(main_parts):
                    texts.append(other[j][0])
                elif len(other) == 1:
                    texts.append(other[0][0])
                else:
                    raise InvalidArgumentError(
                        "prompt_2/prompt_3 must have one AND part or as many as prompt"
                    )
            ends, variants = _merge([_schedule(t, schedule_steps, options) for t in texts])
            image_parts.append(_Part(weight, ends, variants))
        parts.append(image_parts)
        negative_texts = [_clean(negatives[image])[0]]
        for extra_neg in extra_negatives:
            negative_texts.append(
                negative_texts[0] if extra_neg is None else _clean(extra_neg[image])[0]
            )
        ends, variants = _merge([_schedule(t, schedule_steps, options) for t in negative_texts])
        negative_parts.append(_Part(1.0, ends, variants))
    for image in range(batch):
        for given, image_parts in (
            ((prompts, *extra_prompts), parts[image]),
            ((negatives, *extra_negatives), [negative_parts[image]]),
        ):
            for part in image_parts:
                for variant in part.texts:
                    for slot, text in enumerate(variant):
                        source = (given[slot] or given[0])[image]  # type: ignore[index]
                        _validate(text, source)
    first_text = promptweights.strip_comments(prompts[0])
    lora_plan = _plan_loras(
        pipe,
        promptweights.extra_networks(first_text)[1],
        options.get("lora_dir"),
        options.get("loras"),
        source=first_text,
    )
    slots = _slots(
        pipe,
        family,
        a1111_clip_skip(clip_skip),
        options.get("max_sequence_length"),
        bool(options.get("batch_rows", False)),
    )

    # 2. LoRA (undone on failure), then one batched pass per text encoder.
    undo = _apply_loras(pipe, lora_plan) if lora_plan is not None else None
    try:
        timeline = _encode_all(
            pipe,
            family,
            slots,
            parts,
            negative_parts,
            strategy=strategy,
            normalization=options.get("normalization", "none"),
            comma_backtrack=int(options.get("comma_backtrack", 20)),
            t5_length=int(options.get("max_sequence_length") or family.sequence_length or 0),
            max_rows=limits.rows,
            max_output_tokens=limits.output_tokens,
        )
    except BaseException:
        if undo is not None:
            undo()
        raise
    positive, pooled, _ = timeline.positive_at(0)
    negative, negative_pooled = timeline.negative_at(0)
    return Conditioning(
        prompt_embeds=positive,
        negative_prompt_embeds=negative if timeline.has_negative else None,
        pooled_prompt_embeds=pooled,
        negative_pooled_prompt_embeds=negative_pooled if timeline.has_negative else None,
        family=family.name,
        steps=_schedule_length(schedule_steps, options),
        networks=tuple(networks),
        _timeline=timeline,
    )


def _schedule_length(steps: int | None, options: Mapping[str, Any]) -> int | None:
    hires = options.get("hires_steps")
    if steps is None or hires is None or options.get("old_timelines"):
        return steps
    return int(hires)


def _encode_all(
    pipe: Any,
    family: Family,
    slots: list[_Slot],
    parts: list[list[_Part]],
    negatives: list[_Part],
    *,
    strategy: str | Strategy,
    normalization: str | Normalization,
    comma_backtrack: int,
    t5_length: int,
    max_rows: int,
    max_output_tokens: int,
) -> _Timeline:
    all_parts = [p for image in parts for p in image] + negatives
    positives = len(all_parts) - len(negatives)
    device = _execution_device(pipe)
    encoded: list[list[tuple[Tensor, Tensor | None]]] = []  # [slot][group] (embeds, pooled)
    empties: list[Tensor] = []
    for slot in slots:
        groups: list[list[str]] = [[v[slot.prompt - 1] for v in p.texts] for p in all_parts]
        groups.append([""])  # the empty prompt's window, for padding
        result = build(
            slot.encoder,
            groups,
            strategy=strategy,
            normalization=normalization,
            comma_backtrack=comma_backtrack,
            equal_length=False,
            max_rows=max_rows,
            max_output_tokens=max_output_tokens,
        )
        cached = slot.encoder.cached_empty()
        empty = cached[0] if cached is not None else result.groups[-1].embeds[0]
        # Text encoders may sit on different devices (offload, multi-GPU): gather first.
        encoded.append(
            [
                (g.embeds.to(device), None if g.pooled is None else g.pooled.to(device))
                for g in result.groups[:-1]
            ]
        )
        empties.append(empty.to(device))
    family.padding([slot.encoder for slot in slots], encoded, empties, positives)
    with torch.no_grad():
        assembled = [
            family.layout(pipe, [Encoded(*tower[g]) for tower in encoded], t5_length)
            for g in range(len(all_parts))
        ]
        assembled = [
            (e.to(device).clone(), None if p is None else p.to(device).clone())
            for e, p in assembled
        ]
    n_pos = len(all_parts) - len(negatives)
    has_negative = True
    negative_embeds = [e for e, _ in assembled[n_pos:]]
    negative_pooled = [p for _, p in assembled[n_pos:]]
    empty_negative = all(all(not t for t in v) for n in negatives for v in n.texts)
    if empty_negative and family.empty_negative == "zeros" and _force_zeros(pipe):
        negative_embeds = [torch.zeros_like(e) for e in negative_embeds]
        negative_pooled = [None if p is None else torch.zeros_like(p) for p in negative_pooled]
    if empty_negative and family.empty_negative == "omitted":
        has_negative = False
    part_embeds: list[list[Tensor]] = []
    part_pooled: list[list[Tensor | None]] = []
    index = 0
    for image in parts:
        part_embeds.append([assembled[index + j][0] for j in range(len(image))])
        part_pooled.append([assembled[index + j][1] for j in range(len(image))])
        index += len(image)
    return _Timeline(
        family,
        len(parts),
        parts,
        part_embeds,
        part_pooled,
        negatives,
        negative_embeds,
        negative_pooled,
        has_negative,
        tuple(getattr(pipe, "_callback_tensor_inputs", ())),
    )


def _force_zeros(pipe: Any) -> bool:
    config = getattr(pipe, "config", {})
    return bool(config.get("force_zeros_for_empty_prompt", True))


def _execution_device(pipe: Any) -> torch.device:
    device = getattr(pipe, "_execution_device", None)
    return torch.device(device) if device is not None else torch.device("cpu")
