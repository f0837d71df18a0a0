""":func:`encode`: prompts in, a :class:`Conditioning` out, every schedule entry encoded first."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import torch
from torch import Tensor

import promptweights
from promptweights.builder import BuildResult, Plan, Request, plan
from promptweights.encoders import TextEncoder
from promptweights.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    InvalidWeightError,
    LimitExceededError,
    warn_or_raise,
)
from promptweights.limits import DEFAULT_LIMITS, MAX_WEIGHT, Limits
from promptweights.schedules import split_and_with_tails
from promptweights.settings import a1111_clip_skip
from promptweights.strategies import (
    Normalization,
    Policy,
    Strategy,
    get_normalization,
    get_strategy,
)
from promptweights.tokens import check_weights, span_position
from promptweights.tree import ExtraNetwork

from . import _llm, _towers
from .conditioning import Conditioning, _Part, _stack_timelines, _Timeline
from .families import Encoded, Family, record_of
from .lora import _apply_loras, _lora_run, _plan_loras

# The schedule length used to find out whether a prompt edits at all when no steps are given.
_PROBE_STEPS = 1000


@dataclass(frozen=True, slots=True)
class _Slot:
    """One text encoder of a family, which prompt (1, 2 or 3) it reads, and its policy.

    A tower whose pipeline writes its template around the positive prompt only (Lumina 2, SANA)
    has two slots: ``reads="positive"`` (the template) and ``reads="negative"`` (none); each
    plans the other's groups as empty texts, and :func:`_paired` joins their results.
    """

    encoder: TextEncoder
    prompt: int
    policy: Policy
    component: str
    reads: Literal["all", "positive", "negative"] = "all"
    negative: TextEncoder | None = None


def _slots(
    pipe: Any,
    family: Family,
    clip_skip: int,
    max_sequence_length: int | None,
    exact: bool,
    chunked: bool = False,
    image: Any = None,
) -> list[_Slot]:
    slots = []
    for tower in family.towers:
        encoder = tower.text_encoder(
            pipe,
            TextEncoder,
            clip_skip,
            max_sequence_length,
            family.window(pipe),
            chunked,
            image=image,
        )
        if encoder is None:
            continue
        if exact:
            # One row per forward pass, as the pipelines' own encode_prompt runs them.
            encoder.rows_per_call = 1
        slot = _Slot(encoder, tower.prompt, tower.weighting, tower.component)
        if tower.llm is None or not tower.llm.plain_negative:
            slots.append(slot)
            continue
        negative = tower.text_encoder(
            pipe, TextEncoder, clip_skip, max_sequence_length, family.window(pipe), negative=True
        )
        assert negative is not None
        negative.rows_per_call = encoder.rows_per_call
        slots.append(dataclasses.replace(slot, reads="positive", negative=negative))
        slots.append(dataclasses.replace(slot, encoder=negative, reads="negative"))
    return slots


def _paired(
    slots: Sequence[_Slot], results: Sequence[BuildResult], positives: int
) -> tuple[list[_Slot], list[BuildResult]]:
    """One slot and result per tower: a positive-only slot's groups of the positives joined
    with the following negative-only slot's groups of the negatives."""
    out_slots: list[_Slot] = []
    out_results: list[BuildResult] = []
    for slot, result in zip(slots, results, strict=True):
        if slot.reads != "negative":
            out_slots.append(slot)
            out_results.append(result)
            continue
        joined = out_results[-1].groups[:positives] + result.groups[positives:]
        out_results[-1] = dataclasses.replace(out_results[-1], groups=joined)
    return out_slots, out_results


@dataclass(frozen=True, slots=True)
class _Timing:
    """How prompts are expanded into schedules (a1111-behaviour.md §4.4).

    ``steps`` is A1111's schedule length: the pipeline's steps, doubled for a second-order
    sampler, as is the hires pass's ``hires_steps``; ``None``: no steps given.
    """

    steps: int | None
    hires_steps: int | None
    old_timelines: bool
    limits: Limits

    @classmethod
    def of(
        cls,
        pipe: Any,
        steps: int | None,
        second_order: bool | None,
        hires_steps: int | None,
        old_timelines: bool,
        limits: Limits,
    ) -> _Timing:
        """The timing of an :func:`encode` call (``second_order`` from the scheduler if None)."""
        if steps is None:
            return cls(None, hires_steps, old_timelines, limits)
        if second_order is None:
            second_order = getattr(getattr(pipe, "scheduler", None), "order", 1) == 2
        factor = 2 if second_order else 1
        hires = None if hires_steps is None else hires_steps * factor
        return cls(steps * factor, hires, old_timelines, limits)

    @property
    def length(self) -> int | None:
        """The schedule length the run-time switching counts calls against."""
        if self.steps is None or self.hires_steps is None or self.old_timelines:
            return self.steps
        return int(self.hires_steps)

    def schedule(self, text: str) -> list[tuple[int, str]]:
        """``text``'s schedule; without steps, its one entry (editing then is an error)."""
        if self.steps is None:
            return [(0, _only_entry(text))]
        return promptweights.schedules(
            text,
            self.steps,
            hires_steps=self.hires_steps,
            old_timelines=self.old_timelines,
            max_variants=self.limits.variants,
            max_chars=self.limits.schedule_chars,
        )


def _only_entry(text: str) -> str:
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
    return probe[0][1]


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


def _validate_all(
    parts: list[list[_Part]],
    negatives: list[_Part],
    given: Sequence[list[str] | None],
    given_negatives: Sequence[list[str] | None],
) -> None:
    """:func:`_validate` every text of every schedule, pointing into the prompt it came from.

    ``given``: the prompts per slot (``prompt``, ``prompt_2``, ``prompt_3``; ``None`` where a slot
    reads ``prompt``), likewise ``given_negatives``.
    """
    for image, image_parts in enumerate(parts):
        for texts, checked in ((given, image_parts), (given_negatives, [negatives[image]])):
            for part in checked:
                for variant in part.texts:
                    for slot, text in enumerate(variant):
                        _validate(text, (texts[slot] or texts[0] or [""])[image])


@dataclass(frozen=True, slots=True)
class _Texts:
    """The text side of one :func:`encode` call, worked out before the pipeline is touched."""

    parts: list[list[_Part]]  # [image][AND part]
    negatives: list[_Part]  # [image]
    networks: tuple[ExtraNetwork, ...]  # every tag of every prompt, in order
    first_text: str  # the first prompt without comments: where its LoRA tags are


def _prepare(
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None,
    extra_prompts: Sequence[str | Sequence[str] | None],
    extra_negatives: Sequence[str | Sequence[str] | None],
    timing: _Timing,
) -> _Texts:
    """Comments, networks, AND, schedules and the weight check of every text (§1's order).

    ``extra_prompts`` and ``extra_negatives`` are ``prompt_2``, ``prompt_3`` (and ``prompt_4``,
    HiDream's) and their negatives.
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise InvalidArgumentError("no prompt given")
    batch = len(prompts)
    negatives = _as_list(negative_prompt if negative_prompt is not None else "", batch, "negative")
    assert negatives is not None
    names = [f"prompt_{n}" for n in range(2, 2 + len(extra_prompts))]
    extras = [_as_list(e, batch, name) for e, name in zip(extra_prompts, names, strict=True)]
    extra_negs = [
        _as_list(e, batch, "negative_" + name)
        for e, name in zip(extra_negatives, names, strict=True)
    ]
    given: dict[str, list[str] | None] = {"prompt": prompts, "negative_prompt": negatives}
    given |= dict(zip(names, extras, strict=True))
    given |= {"negative_" + name: e for name, e in zip(names, extra_negs, strict=True)}
    _check_lengths(given, timing.limits.prompt_chars)
    networks: list[ExtraNetwork] = []
    parts: list[list[_Part]] = []
    negative_parts: list[_Part] = []
    for image in range(batch):
        others = [None if e is None else e[image] for e in extras]
        image_parts, found = _positive_parts(prompts[image], others, timing)
        networks += found
        parts.append(image_parts)
        other_negatives = [None if e is None else e[image] for e in extra_negs]
        negative_parts.append(_negative_part(negatives[image], other_negatives, timing))
    _validate_all(parts, negative_parts, [prompts, *extras], [negatives, *extra_negs])
    first_text = promptweights.strip_comments(prompts[0])
    return _Texts(parts, negative_parts, tuple(networks), first_text)


def _positive_parts(
    prompt: str, others: Sequence[str | None], timing: _Timing
) -> tuple[list[_Part], list[ExtraNetwork]]:
    """One image's AND parts (``others``: its ``prompt_2``/``prompt_3``) and its tags."""
    main, networks = _clean(prompt)
    networks = list(networks)
    other_parts: list[list[tuple[str, float]] | None] = []
    for other in others:
        if other is None:
            other_parts.append(None)
        else:
            text, found = _clean(other)
            networks += found
            other_parts.append(promptweights.split_and(text, max_parts=timing.limits.and_parts))
    main_parts = promptweights.split_and(main, max_parts=timing.limits.and_parts)
    _check_and_weights(main)
    parts = []
    for j, (text, weight) in enumerate(main_parts):
        texts = [text] + [_matching(split, j, len(main_parts), text) for split in other_parts]
        ends, variants = _merge([timing.schedule(t) for t in texts])
        parts.append(_Part(weight, ends, variants))
    return parts, networks


def _matching(split: list[tuple[str, float]] | None, j: int, count: int, main: str) -> str:
    """The text of a ``prompt_2``/``prompt_3`` that goes with AND part ``j`` of ``count``."""
    if split is None:
        return main
    if len(split) == count:
        return split[j][0]
    if len(split) == 1:
        return split[0][0]
    raise InvalidArgumentError(
        "prompt_2/prompt_3/prompt_4 must have one AND part or as many as prompt"
    )


def _negative_part(negative: str, others: Sequence[str | None], timing: _Timing) -> _Part:
    """One image's negative (never split at AND), with its ``negative_prompt_2``/``_3``."""
    texts = [_clean(negative)[0]]
    texts += [texts[0] if other is None else _clean(other)[0] for other in others]
    ends, variants = _merge([timing.schedule(t) for t in texts])
    return _Part(1.0, ends, variants)


def _reject(unknown: Mapping[str, object]) -> NoReturn:
    parameters = inspect.signature(encode).parameters.values()
    known = sorted(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)
    raise InvalidArgumentError(f"unknown options {sorted(unknown)}; known: {known}")


def encode(
    pipe: Any,
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None = "",
    *,
    strategy: str | Strategy | None = None,
    clip_skip: int | None = None,
    steps: int | None = None,
    prompt_2: str | Sequence[str] | None = None,
    negative_prompt_2: str | Sequence[str] | None = None,
    prompt_3: str | Sequence[str] | None = None,
    negative_prompt_3: str | Sequence[str] | None = None,
    prompt_4: str | Sequence[str] | None = None,
    negative_prompt_4: str | Sequence[str] | None = None,
    normalization: str | Normalization = "none",
    comma_backtrack: int = 20,
    second_order: bool | None = None,
    hires_steps: int | None = None,
    old_timelines: bool = False,
    max_sequence_length: int | None = None,
    long_prompts: Literal["truncate", "chunk"] = "truncate",
    lora_dir: str | Path | None = None,
    loras: Mapping[str, str | Path] | None = None,
    batch_rows: bool | None = None,
    exact: bool | None = None,
    limits: Limits = DEFAULT_LIMITS,
    strict: bool = False,
    dialect: str = "a1111",
    swap: str = "refuse",
    image: Any = None,
    **unknown: NoReturn,
) -> Conditioning:
    """Encode an A1111 prompt for a diffusers pipeline.

    Args:
        pipe: an SD 1.x/2.x, SDXL (base or refiner), SD3/3.5 or Flux.1 pipeline (text to image
            or image to image).
        prompt: the prompt, or one per image. ``TE(clip_l: …; t5: …)`` blocks route parts of it
            to named text encoders (:mod:`promptweights.routing`; not with ``prompt_2`` or
            ``prompt_3``); the negative prompt may hold them too.
        negative_prompt: the negative prompt (never split at AND), one for all or one per image.
        strategy: a weighting strategy name from ``promptweights.strategies.STRATEGIES`` or a
            callable; ``None`` (the default): each text encoder's policy default (``"a1111"`` on
            CLIP and T5, ``"span-lerp"`` on a decoder LLM).
        clip_skip: the pipeline's ``clip_skip`` (A1111's "Clip skip N" is ``N - 1``).
        steps: the pipeline's ``num_inference_steps``; needed when the prompt edits or alternates.
        prompt_2: the second text encoder's prompt (SDXL, SD3, Flux's T5); default ``prompt``.
        negative_prompt_2: its negative; default ``negative_prompt``.
        prompt_3: SD3's T5 prompt (HiDream's T5); default ``prompt``.
        negative_prompt_3: its negative; default ``negative_prompt``.
        prompt_4: HiDream's Llama-3.1 prompt; default ``prompt``.
        negative_prompt_4: its negative; default ``negative_prompt``.
        normalization: a token normalisation name (or callable).
        comma_backtrack: A1111's comma look-back when a chunk fills (20).
        second_order: a second-order sampler (default: ``scheduler.order == 2``).
        hires_steps: A1111's hires-pass steps (its schedule option).
        old_timelines: A1111's "Old prompt editing timelines".
        max_sequence_length: the T5 window (default: the pipeline's own, SD3 256, Flux 512); on a
            decoder LLM, the pipeline's (Qwen-Image cuts its encoding there, Z-Image and Flux.2
            pad and truncate the templated text to it).
        long_prompts: T5 text past the window: ``"truncate"`` (diffusers' behaviour, with a
            diagnostic giving the tokens dropped) or ``"chunk"`` (more windows, ``BREAK`` starts
            one) where the family's denoiser takes them (SD3, Flux, Chroma, PixArt).
        lora_dir: a folder of ``.safetensors`` LoRAs, named by file stem.
        loras: LoRA name → path.
        exact: ``False`` (the default): every row of every image, schedule entry and extra
            encoding in one forward pass per text encoder, equal to one-text calls up to ~1e-6
            relative in float32; ``True``: one forward pass per row, bit for bit what the
            pipeline's own ``encode_prompt`` gives for a plain prompt.
        batch_rows: the former name of ``not exact``; ``exact`` wins when both are given.
        limits: a :class:`~promptweights.Limits` (prompt length, schedule entries, AND parts,
            encoder rows, output tokens).
        strict: raise :class:`~promptweights.errors.UnreproducibleError` where lenient mode
            (the default) warns with a :class:`~promptweights.errors.PromptweightsWarning`.
        dialect: the prompts' dialect: ``"a1111"`` (the default), ``"comfy"``, ``"novelai"``
            or ``"compel"``; the others are converted to A1111 text with
            :func:`promptweights.convert` (see :mod:`promptweights.diffusers.dialects`:
            compel's ``.blend()`` mixes the members' embeddings, ``.and()`` is AND,
            ``withLora()`` a LoRA tag).
        swap: what compel's ``.swap()`` does: ``"refuse"`` (an error: diffusers pipelines have
            no cross-attention control) or ``"edit"``: the nearest A1111 prompt edit
            ``[original:replacement:t_start]``, an approximation.
        image: the input image the pipeline's own ``encode_prompt`` reads (Qwen-Image Edit and
            Edit Inpaint: one PIL image; Edit Plus: one or a list), as passed to the pipeline:
            resized as the pipeline resizes it and read once by the vision tower for every row
            of the call; its vision tokens are never weighted. Only for those pipelines.
        **unknown: none; an unknown keyword raises :class:`InvalidArgumentError`.

    Nothing in the prompt is dropped silently: ``<lora:…>`` tags without ``lora_dir``/``loras``,
    tags of a kind that is not loaded here (``<hypernet:…>``) and tags in prompts after the first
    (only the first prompt's LoRAs are loaded, for the whole batch) are each a
    :class:`~promptweights.errors.PromptweightsWarning`, an error with ``strict=True``.

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
    if unknown:
        _reject(unknown)
    if dialect != "a1111" or swap != "refuse":
        options = dict(locals())
        for name in ("pipe", "prompt", "negative_prompt", "dialect", "swap", "unknown"):
            options.pop(name)
        from .dialects import encode_dialect

        return encode_dialect(  # type: ignore[no-any-return]
            encode, pipe, prompt, negative_prompt, dialect=dialect, swap=swap, options=options
        )
    family = record_of(pipe)
    _llm.check_image(pipe, [tower.llm for tower in family.towers], image)
    extra = {"prompt_2": prompt_2, "negative_prompt_2": negative_prompt_2}
    extra |= {"prompt_3": prompt_3, "negative_prompt_3": negative_prompt_3}
    extra |= {"prompt_4": prompt_4, "negative_prompt_4": negative_prompt_4}
    # TE(clip_l: …; t5: …) blocks: each encoder's text under the argument it reads.
    routed = _towers.route_inline(
        family, {"prompt": prompt, "negative_prompt": negative_prompt, **extra}
    )
    prompt, negative_prompt = routed["prompt"], routed["negative_prompt"]
    extra = {key: routed.get(key) for key in extra}
    _towers.check_arguments(family, extra, long_prompts)
    # Unknown names fail here, before anything is loaded.
    if strategy is not None:
        get_strategy(strategy)
    get_normalization(normalization)
    if not isinstance(limits, Limits):
        raise ArgumentTypeError(
            f"limits must be a promptweights.Limits, not {type(limits).__name__}"
        )
    timing = _Timing.of(pipe, steps, second_order, hires_steps, bool(old_timelines), limits)
    # What the pipeline must run with: the hires pass runs its own steps (§4.2).
    pass_steps = steps if hires_steps is None else int(hires_steps)
    # 1. Text only: comments, networks, AND, schedules, weight check. Nothing touched yet.
    texts = _prepare(
        prompt,
        negative_prompt,
        tuple(extra[f"prompt_{n}"] for n in (2, 3, 4)),
        tuple(extra[f"negative_prompt_{n}"] for n in (2, 3, 4)),
        timing,
    )
    first_networks = promptweights.extra_networks(texts.first_text)[1]
    _check_networks(
        texts.networks,
        first_networks,
        strict=strict,
        loading=lora_dir is not None or loras is not None,
    )
    # loractl schedules (<lora:x:0@0,1@0.5>): the weights of every call of this pass.
    lora_run = (
        None
        if lora_dir is None and loras is None
        else _lora_run(
            first_networks,
            steps=pass_steps,
            order=1 if steps is None or timing.steps is None else timing.steps // steps,
            hires=hires_steps is not None,
            calls=timing.length,
            strict=strict,
            source=texts.first_text,
            max_sets=limits.variants,
        )
    )
    lora_plan = _plan_loras(pipe, first_networks, lora_dir, loras, source=texts.first_text)
    if exact is None:
        exact = batch_rows is not None and not batch_rows
    slots = _slots(
        pipe,
        family,
        a1111_clip_skip(clip_skip),
        max_sequence_length,
        bool(exact),
        chunked=long_prompts == "chunk",
        image=image,
    )
    # 2. Plan every row (tokens, the output-token and row limits) before anything is touched.
    all_parts, diagnosed = _planned_parts(pipe, family, slots, texts)
    plans = _plan_all(
        slots,
        all_parts,
        strategy=strategy,
        normalization=normalization,
        comma_backtrack=int(comma_backtrack),
        max_output_tokens=limits.output_tokens,
        positives=len(all_parts) - len(texts.negatives),
    )
    described = [(s.encoder, s.prompt, s.policy, s.component) for s in slots]
    _towers.diagnose(family, described, plans, diagnosed, strict=strict)
    _towers.check_negative(pipe, texts.negatives, strict=strict)
    positives = len(all_parts) - len(texts.negatives)
    needed = family.padding_empties(
        [s.encoder for s in slots], [p.chunks[0] for p in plans], positives
    )
    for prepared, empty in zip(plans, needed, strict=True):
        # A LoRA clears the empty-window cache: count as it will stand then.
        prepared.check_rows(limits.rows, empty=empty, cached=False if lora_plan else None)
    # 3. LoRA (undone on failure), then one batched pass per text encoder.
    undo = _apply_loras(pipe, lora_plan) if lora_plan is not None else None
    try:
        timelines = [
            _encode_all(
                pipe,
                family,
                slots,
                texts.parts,
                texts.negatives,
                plans,
                needed,
                t5_length=int(max_sequence_length or family.window(pipe) or 0),
                max_rows=limits.rows,
            )
            # Once per distinct text-encoder weight set of a LoRA schedule (once without one).
            for _ in (lora_run.te_runs(pipe) if lora_run else [None])
        ]
        timeline = _stack_timelines(timelines, lora_run)
    except BaseException:
        if undo is not None:
            undo()
        raise
    cond = _conditioning(family, timing, texts.networks, timeline, pass_steps)
    cond.padded_conds = any(needed)  # empty chunks padded some text (A1111's "Pad conds")
    return cond


def _conditioning(
    family: Family,
    timing: _Timing,
    networks: tuple[ExtraNetwork, ...],
    timeline: _Timeline,
    pass_steps: int | None,
) -> Conditioning:
    positive, pooled, _ = timeline.positive_at(0)
    negative, negative_pooled = timeline.negative_at(0)
    masks = timeline.masks
    return Conditioning(
        prompt_embeds=positive,
        negative_prompt_embeds=negative if timeline.has_negative else None,
        pooled_prompt_embeds=pooled,
        negative_pooled_prompt_embeds=negative_pooled if timeline.has_negative else None,
        family=family.name,
        steps=timing.length,
        networks=networks,
        _timeline=timeline,
        num_inference_steps=pass_steps,
        prompt_attention_mask=None if masks is None else masks[0],
        negative_prompt_attention_mask=None
        if masks is None or not timeline.has_negative
        else masks[1],
    )


def _planned_parts(
    pipe: Any, family: Family, slots: Sequence[_Slot], texts: _Texts
) -> tuple[list[_Part], list[_Part]]:
    """The parts to plan (every AND part, then the negatives) and those to diagnose: an unused
    negative (:func:`_negative_unused`) is planned as stand-ins that cost no row, and not
    diagnosed."""
    positives = [p for image in texts.parts for p in image]
    if _negative_unused(pipe, family, slots, texts.negatives):
        return positives + _stand_ins(texts.parts, texts.negatives), positives
    return positives + texts.negatives, positives + texts.negatives


def _negative_unused(
    pipe: Any, family: Family, slots: Sequence[_Slot], negatives: Sequence[_Part]
) -> bool:
    """Whether the negatives' encodings never reach the pipeline: an empty negative that the
    family omits (Flux.1, Flux.2, Qwen-Image) or replaces by zeros (SDXL, Kolors with
    ``force_zeros_for_empty_prompt``), or any negative of a pipeline that takes none (Flux Fill).
    Not for towers that template the negative apart (their rows would differ)."""
    if any(slot.reads != "all" for slot in slots):
        return False
    if not _towers.takes_negative(pipe):
        return True
    if any(text for part in negatives for variant in part.texts for text in variant):
        return False
    return family.empty_negative == "omitted" or (
        family.empty_negative == "zeros" and _force_zeros(pipe)
    )


def _stand_ins(parts: Sequence[Sequence[_Part]], negatives: Sequence[_Part]) -> list[_Part]:
    """Negatives to plan in place of unused ones: per prompt slot, the longest positive text
    (its first schedule entry), whose rows the positives already encode, so that the stand-ins
    cost no encoder row and pad to the positives' length (their values are never used)."""
    firsts = [part.texts[0] for image in parts for part in image]
    text = tuple(max((t[i] for t in firsts), key=len) for i in range(len(firsts[0])))
    return [dataclasses.replace(n, texts=[text] * len(n.texts)) for n in negatives]


def _plan_all(
    slots: list[_Slot],
    all_parts: list[_Part],
    *,
    strategy: str | Strategy | None,
    normalization: str | Normalization,
    comma_backtrack: int,
    max_output_tokens: int,
    positives: int | None = None,
) -> list[Plan]:
    """One :class:`~promptweights.builder.Plan` per text encoder: every row, nothing encoded.

    ``positives``: how many of ``all_parts`` are positive (the rest negatives); a slot that reads
    only one side plans the other side's groups as empty texts (one row, whose result is not
    used). ``None``: every part is read by every slot.
    """
    plans = []
    for slot in slots:
        groups = _slot_groups(slot, all_parts, positives)
        request = Request(groups, slot.policy.strategy(strategy), normalization, equal_length=False)
        plans.append(
            plan(
                slot.encoder,
                [request],
                comma_backtrack=comma_backtrack,
                max_output_tokens=max_output_tokens,
            )
        )
    return plans


def _slot_groups(slot: _Slot, all_parts: Sequence[_Part], positives: int | None) -> list[list[str]]:
    """The texts ``slot`` encodes, per group (empty for the groups of the side it does not read)."""
    groups: list[list[str]] = [[v[slot.prompt - 1] for v in p.texts] for p in all_parts]
    if slot.reads != "all" and positives is not None:
        others = range(positives, len(groups)) if slot.reads == "positive" else range(positives)
        for g in others:
            groups[g] = [""] * len(groups[g])
    return groups


_LORA_KINDS = ("lora", "lyco")


def _check_networks(
    networks: Sequence[ExtraNetwork],
    first: Sequence[ExtraNetwork],
    *,
    strict: bool,
    loading: bool,
) -> None:
    """Say which extra-network tags are not applied (a warning, or an error when strict)."""
    loras = [n for n in networks if n.kind in _LORA_KINDS]
    if loras and not loading:
        _not_applied(
            "LoRA tags",
            loras,
            "pass lora_dir= (a folder of .safetensors files) or loras= to load them",
            strict,
        )
    elif loading:
        # Compared as written: a NaN multiplier never equals itself.
        written = {(n.kind, n.name, n.args) for n in first}
        later = [n for n in loras if (n.kind, n.name, n.args) not in written]
        if later:
            _not_applied(
                "LoRA tags",
                later,
                "only the first prompt's tags are loaded, for every image of the batch",
                strict,
            )
    others = [n for n in networks if n.kind not in _LORA_KINDS]
    if others:
        _not_applied("extra networks", others, "only <lora:…> and <lyco:…> tags are loaded", strict)


def _not_applied(what: str, networks: Sequence[ExtraNetwork], why: str, strict: bool) -> None:
    """One warning (an error when strict) naming the tags as the user wrote them."""
    tags = ", ".join(sorted({n.source or f"<{n.kind}:{n.name}>" for n in networks}))
    # stacklevel 5: this helper, _check_networks, encode, then the user's call.
    warn_or_raise(f"{what} not applied: {tags}; {why}", strict=strict, stacklevel=5)


def _encode_all(
    pipe: Any,
    family: Family,
    slots: list[_Slot],
    parts: list[list[_Part]],
    negatives: list[_Part],
    plans: list[Plan],
    needed: Sequence[bool],
    *,
    t5_length: int,
    max_rows: int,
) -> _Timeline:
    results = []
    for prepared, empty in zip(plans, needed, strict=True):
        (result,) = prepared.run(empty=empty, max_rows=max_rows)
        results.append(result)
    return _assemble(pipe, family, slots, parts, negatives, results, t5_length=t5_length)


def _assemble(
    pipe: Any,
    family: Family,
    slots: list[_Slot],
    parts: list[list[_Part]],
    negatives: list[_Part],
    results: Sequence[BuildResult],
    *,
    t5_length: int,
) -> _Timeline:
    """The timeline of one call from its build result on each text encoder (one per slot)."""
    all_parts = [p for image in parts for p in image] + negatives
    positives = len(all_parts) - len(negatives)
    slots, joined = _paired(slots, results, positives)
    results = joined
    device = _execution_device(pipe)
    encoded: list[list[tuple[Tensor, Tensor | None]]] = []  # [slot][group] (embeds, pooled)
    empties: list[Tensor | None] = []
    for result in results:
        # Text encoders may sit on different devices (offload, multi-GPU): gather first.
        encoded.append(
            [
                (g.embeds.to(device), None if g.pooled is None else g.pooled.to(device))
                for g in result.groups
            ]
        )
        empties.append(None if result.empty is None else result.empty.to(device))
    lengths = _unpadded_lengths([slot.encoder for slot in slots], encoded, positives)
    if lengths is not None and _negative_unused(pipe, family, slots, negatives):
        # Planned as stand-ins (SDXL's zeroed empty negative): its own length is one window.
        lengths = (lengths[0], tuple(slots[0].encoder.window.length for _ in negatives))
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
    template = family.towers[-1].llm
    per_variant = None
    if template is not None and len(family.towers) == 1:
        # A decoder LLM: the text's positions only (per pipeline), and their masks.
        assembled, masks, per_variant = _llm.shape(
            template,
            slots[-1].encoder,
            [g.prompts for g in results[-1].groups],
            assembled,
            [len(image) for image in parts],
            negative=slots[-1].negative,
            length=t5_length,
        )
    else:
        mask_groups = [g.prompts for g in results[-1].groups]
        mask_type = _towers.mask_dtype(family, assembled[0][0])
        masks = _towers.attention_masks(
            family,
            slots[-1].encoder,  # the families with masks have one tower, T5
            mask_groups,
            [len(image) for image in parts],
            assembled[0][0].shape[1],
            mask_type,
            device,
        )
        per_variant = _towers.variant_masks(
            family, slots[-1].encoder, mask_groups, assembled[0][0].shape[1], mask_type, device
        )
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
    if has_negative and not _towers.takes_negative(pipe):
        has_negative = False
    if not has_negative:  # never passed (and possibly planned from stand-ins): zeros
        negative_embeds = [torch.zeros_like(e) for e in negative_embeds]
        negative_pooled = [None if p is None else torch.zeros_like(p) for p in negative_pooled]
    part_embeds: list[list[Tensor]] = []
    part_pooled: list[list[Tensor | None]] = []
    index = 0
    for image in parts:
        part_embeds.append([assembled[index + j][0] for j in range(len(image))])
        part_pooled.append([assembled[index + j][1] for j in range(len(image))])
        index += len(image)
    split = None if family.split is None else family.split(pipe, t5_length)
    if slots[-1].encoder.companions is not None:  # Z-Image Omni: a list of segments per image
        split = _llm.segment_lists(slots[-1].encoder)
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
        masks=masks,
        parameters=_call_parameters(pipe),
        split=split,
        variant_masks=per_variant,
        lengths=lengths,
    )


def _unpadded_lengths(
    encoders: Sequence[TextEncoder],
    encoded: Sequence[Sequence[tuple[Tensor, Tensor | None]]],
    positives: int,
) -> tuple[int, tuple[int, ...]] | None:
    """Before A1111's "Pad conds" padding: the positives' length once stacked (the longest AND
    part) and each negative's, in tokens; None unless every tower is a chunked CLIP window (SD
    1.x/2.x, SDXL), whose padding only appends windows at the end."""
    if not all(e.window.chunked and e.window.bos is not None for e in encoders):
        return None
    groups = [max(int(tower[g][0].shape[1]) for tower in encoded) for g in range(len(encoded[0]))]
    return max(groups[:positives]), tuple(groups[positives:])


def _call_parameters(pipe: Any) -> frozenset[str] | None:
    """The names ``pipe``'s ``__call__`` takes (``None``: it takes ``**kwargs`` or is opaque)."""
    try:
        parameters = inspect.signature(type(pipe).__call__).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return frozenset(parameters)


def _force_zeros(pipe: Any) -> bool:
    config = getattr(pipe, "config", {})
    return bool(config.get("force_zeros_for_empty_prompt", True))


def _execution_device(pipe: Any) -> torch.device:
    device = getattr(pipe, "_execution_device", None)
    return torch.device(device) if device is not None else torch.device("cpu")
