""":func:`encode_many`: several conditionings of one pipeline, every row in one pass per encoder.

A comparison grid (``promptweights.compare``), or an application that conditions the same pipeline
on several prompts with different strategies, normalisations or step counts, needs several
:class:`~promptweights.diffusers.Conditioning` at once. Calling :func:`encode` for each runs every
text encoder once per call; :func:`encode_many` plans every row of every request first
(:func:`promptweights.builder.plan` with one builder request per conditioning, rows that several
need planned once) and runs one forward pass per text encoder for all of them. Each result equals
:func:`encode` of that request alone up to the last-bit rounding of a different batch (a few 1e-6
relative in float32); with ``exact=True`` (one row per pass) it equals ``encode(…, exact=True)``
bit for bit.

More than one pass per text encoder runs only where it must:

* requests at different clip skips read different hidden states: one pass per clip skip;
* a pass of more than ``limits.rows`` rows is split into several, each within the limit (a request
  that alone needs more raises :class:`~promptweights.errors.LimitExceededError`, as
  :func:`encode` does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promptweights
from promptweights.builder import BuildResult, Plan, Request, plan
from promptweights.errors import ArgumentTypeError, InvalidArgumentError, LimitExceededError
from promptweights.limits import DEFAULT_LIMITS, Limits
from promptweights.settings import a1111_clip_skip
from promptweights.strategies import get_normalization, get_strategy
from promptweights.tree import ExtraNetwork

from . import _llm, _towers
from .conditioning import Conditioning
from .encode import (
    _assemble,
    _check_networks,
    _conditioning,
    _plan_all,
    _planned_parts,
    _prepare,
    _Slot,
    _slot_groups,
    _slots,
    _Texts,
    _Timing,
)
from .families import Family, record_of
from .lora import _apply_loras, _lora_run, _plan_loras

__all__ = ["REQUEST_KEYS", "encode_many"]

#: The keys a request of :func:`encode_many` may hold: :func:`encode`'s arguments that differ from
#: one conditioning to the next (``prompt`` is required).
REQUEST_KEYS = (
    "prompt",
    "negative_prompt",
    "prompt_2",
    "negative_prompt_2",
    "prompt_3",
    "negative_prompt_3",
    "prompt_4",
    "negative_prompt_4",
    "strategy",
    "normalization",
    "clip_skip",
    "steps",
    "second_order",
    "hires_steps",
    "old_timelines",
)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One request, its texts worked out (nothing encoded)."""

    strategy: Any
    normalization: Any
    clip: int  # A1111's clip skip
    timing: _Timing
    texts: _Texts
    pass_steps: int | None
    networks: tuple[ExtraNetwork, ...]  # the first prompt's tags
    steps: int | None

    @property
    def all_parts(self) -> list[Any]:
        return [p for image in self.texts.parts for p in image] + self.texts.negatives


def _prepare_request(pipe: Any, request: Mapping[str, Any], limits: Limits) -> _Prepared:
    if not isinstance(request, Mapping):
        raise ArgumentTypeError(
            f"each request is a mapping of encode's arguments, not {type(request).__name__}"
        )
    unknown = sorted(set(request) - set(REQUEST_KEYS))
    if unknown or "prompt" not in request:
        what = f"unknown keys {unknown}" if unknown else "no 'prompt'"
        raise InvalidArgumentError(f"a request has {what}; known: {list(REQUEST_KEYS)}")
    strategy = request.get("strategy")  # None: each text encoder's policy default
    normalization = request.get("normalization", "none")
    if strategy is not None:
        get_strategy(strategy)
    get_normalization(normalization)
    steps = request.get("steps")
    hires_steps = request.get("hires_steps")
    timing = _Timing.of(
        pipe,
        steps,
        request.get("second_order"),
        hires_steps,
        bool(request.get("old_timelines", False)),
        limits,
    )
    # TE(clip_l: …; t5: …) blocks: each encoder's text under the argument it reads.
    request = _towers.route_inline(record_of(pipe), {"negative_prompt": "", **request})
    texts = _prepare(
        request["prompt"],
        request["negative_prompt"],
        tuple(request.get(f"prompt_{n}") for n in (2, 3, 4)),
        tuple(request.get(f"negative_prompt_{n}") for n in (2, 3, 4)),
        timing,
    )
    return _Prepared(
        strategy,
        normalization,
        a1111_clip_skip(request.get("clip_skip")),
        timing,
        texts,
        steps if hires_steps is None else int(hires_steps),
        tuple(promptweights.extra_networks(texts.first_text)[1]),
        steps,
    )


def encode_many(
    pipe: Any,
    requests: Sequence[Mapping[str, Any]],
    *,
    comma_backtrack: int = 20,
    max_sequence_length: int | None = None,
    lora_dir: str | Path | None = None,
    loras: Mapping[str, str | Path] | None = None,
    exact: bool = False,
    limits: Limits = DEFAULT_LIMITS,
    strict: bool = False,
    image: Any = None,
) -> list[Conditioning]:
    """Encode several conditionings for one pipeline in one forward pass per text encoder.

    Args:
        pipe: a pipeline :func:`encode` takes.
        requests: one mapping per conditioning, of :func:`encode`'s per-call arguments
            (:data:`REQUEST_KEYS`: ``prompt``, required, a string or one per image;
            ``negative_prompt``, ``prompt_2``…, ``strategy``, ``normalization``, ``clip_skip``,
            ``steps``, ``second_order``, ``hires_steps``, ``old_timelines``), each defaulting as in
            :func:`encode`.
        comma_backtrack: as for :func:`encode`, for every request.
        max_sequence_length: as for :func:`encode`, for every request.
        lora_dir: as for :func:`encode`; the LoRA tags are loaded once, so every request's first
            prompt must hold the same tags.
        loras: as for :func:`encode`.
        exact: one row per forward pass: each result is bit for bit ``encode(…, exact=True)`` of
            its request alone. ``False`` (the default): one pass per text encoder for every row of
            every request (see the module docstring for when it is more).
        limits: as for :func:`encode`; ``limits.rows`` bounds each pass.
        strict: as for :func:`encode`.
        image: as for :func:`encode` (the input image Qwen-Image Edit, Edit Inpaint and Edit
            Plus read, Z-Image Omni counts), one for every request: its vision tokens are
            computed once and shared by every row.

    Returns:
        One :class:`Conditioning` per request, in order; each equals :func:`encode` of its request
        alone up to a few 1e-6 relative in float32 (bit for bit with ``exact=True``).

    Raises:
        InvalidArgumentError: a request that is not a mapping of :data:`REQUEST_KEYS` with a
            prompt; requests whose first prompts hold different LoRA tags while LoRAs are loaded.
        Others: as :func:`encode` raises for a request, before any model work.

    >>> import promptweights.diffusers as pd
    >>> pd.encode_many  # doctest: +ELLIPSIS
    <function encode_many at ...>
    """
    family = record_of(pipe)
    _llm.check_image(pipe, [tower.llm for tower in family.towers], image)
    if not isinstance(limits, Limits):
        raise ArgumentTypeError(
            f"limits must be a promptweights.Limits, not {type(limits).__name__}"
        )
    if isinstance(requests, Mapping | str):
        raise ArgumentTypeError("requests is a sequence of mappings (one per conditioning)")
    loading = lora_dir is not None or loras is not None
    prepared = [_prepare_request(pipe, request, limits) for request in requests]
    for one in prepared:
        _check_networks(one.texts.networks, one.networks, strict=strict, loading=loading)
    if not prepared:
        return []
    lora_plan = None
    if loading:
        _same_loras(prepared)
        first = prepared[0]
        source = first.texts.first_text
        _no_lora_schedule(first, strict, limits)
        lora_plan = _plan_loras(pipe, first.networks, lora_dir, loras, source=source)
    # Plan every request on every text encoder (one set of slots per clip skip), check the limits.
    by_clip: dict[int, list[int]] = {}
    for i, one in enumerate(prepared):
        by_clip.setdefault(one.clip, []).append(i)
    work = []
    for clip, members in by_clip.items():
        slots = _slots(pipe, family, clip, max_sequence_length, bool(exact), image=image)
        group = [prepared[i] for i in members]
        _diagnose(pipe, family, slots, group, int(comma_backtrack), limits, strict)
        lora = lora_plan is not None
        passes = _plan_passes(pipe, family, slots, group, int(comma_backtrack), limits, lora)
        work.append(_Work(members, slots, passes))
    # LoRA (undone on failure), then the passes.
    undo = _apply_loras(pipe, lora_plan) if lora_plan is not None else None
    t5_length = int(max_sequence_length or family.window(pipe) or 0)
    try:
        out: dict[int, Conditioning] = {}
        for item in work:
            out.update(_run(pipe, family, item, prepared, limits.rows, t5_length))
    except BaseException:
        if undo is not None:
            undo()
        raise
    return [out[i] for i in range(len(prepared))]


@dataclass(frozen=True, slots=True)
class _Work:
    """The requests at one clip skip, their text encoders and, per encoder, the passes to run:
    (plan, which of the members it builds, whether it needs the empty window)."""

    members: list[int]
    slots: list[_Slot]
    passes: list[list[tuple[Plan, list[int], bool]]]


def _run(
    pipe: Any,
    family: Family,
    work: _Work,
    prepared: Sequence[_Prepared],
    max_rows: int,
    t5_length: int,
) -> dict[int, Conditioning]:
    """Run the passes of one :class:`_Work` and assemble each member's conditioning."""
    results: list[list[BuildResult]] = [[] for _ in work.members]  # [member][slot]
    for slot_passes in work.passes:
        for prepared_pass, which, empty in slot_passes:
            done = prepared_pass.run(empty=empty, max_rows=max_rows)
            for j, result in zip(which, done, strict=True):
                results[j].append(result)
    out = {}
    for j, i in enumerate(work.members):
        one = prepared[i]
        parts, negatives = one.texts.parts, one.texts.negatives
        timeline = _assemble(
            pipe, family, work.slots, parts, negatives, results[j], t5_length=t5_length
        )
        out[i] = _conditioning(family, one.timing, one.texts.networks, timeline, one.pass_steps)
    return out


def _no_lora_schedule(first: _Prepared, strict: bool, limits: Limits) -> None:
    """LoRA weight schedules (``<lora:x:0@0,1@0.5>``) re-encode per weight set: ``encode`` only."""
    steps, timing = first.steps, first.timing
    run = _lora_run(
        first.networks,
        steps=first.pass_steps,
        order=1 if steps is None or timing.steps is None else timing.steps // steps,
        hires=timing.hires_steps is not None,
        calls=timing.length,
        strict=strict,
        source=first.texts.first_text,
        max_sets=limits.variants,
    )
    if run is not None:
        raise InvalidArgumentError(
            "encode_many does not run LoRA weight schedules (<lora:name:0@0,1@0.5>): use encode"
        )


def _diagnose(
    pipe: Any,
    family: Family,
    slots: list[_Slot],
    group: Sequence[_Prepared],
    comma_backtrack: int,
    limits: Limits,
    strict: bool,
) -> None:
    """What each request's towers drop of its prompts, warned (or raised) as :func:`encode` does."""
    described = [(s.encoder, s.prompt, s.policy, s.component) for s in slots]
    for one in group:
        planned, diagnosed = _planned_parts(pipe, family, slots, one.texts)
        plans = _plan_all(
            slots,
            planned,
            strategy=one.strategy,
            normalization=one.normalization,
            comma_backtrack=comma_backtrack,
            max_output_tokens=limits.output_tokens,
            positives=len(one.all_parts) - len(one.texts.negatives),
        )
        _towers.diagnose(family, described, plans, diagnosed, strict=strict)
        _towers.check_negative(pipe, one.texts.negatives, strict=strict)


def _same_loras(prepared: Sequence[_Prepared]) -> None:
    """LoRA tags load once for all requests: every first prompt must hold the same ones."""
    written = [
        sorted((n.kind, n.name, repr(n.args)) for n in p.networks if n.kind in ("lora", "lyco"))
        for p in prepared
    ]
    if any(tags != written[0] for tags in written[1:]):
        raise InvalidArgumentError(
            "encode_many loads LoRA tags once for every request: their first prompts must hold "
            "the same <lora:…> tags (call encode_many once per set of tags)"
        )


def _plan_passes(
    pipe: Any,
    family: Family,
    slots: list[_Slot],
    group: Sequence[_Prepared],
    comma_backtrack: int,
    limits: Limits,
    lora: bool,
) -> list[list[tuple[Plan, list[int], bool]]]:
    """Per slot, the passes to run: (plan, which members it builds, whether it needs the empty
    window). One pass per slot unless ``limits.rows`` splits it; every limit checked here."""
    # An unused negative is planned as stand-ins that cost no row (as in encode).
    planned = [_planned_parts(pipe, family, slots, one.texts)[0] for one in group]
    requests = [
        [
            Request(
                _slot_groups(slot, parts, len(parts) - len(one.texts.negatives)),
                slot.policy.strategy(one.strategy),
                one.normalization,
                equal_length=False,
            )
            for one, parts in zip(group, planned, strict=True)
        ]
        for slot in slots
    ]
    combined = [
        plan(
            slot.encoder,
            requests[s],
            comma_backtrack=comma_backtrack,
            max_output_tokens=limits.output_tokens,
        )
        for s, slot in enumerate(slots)
    ]
    encoders = [slot.encoder for slot in slots]
    needed: list[list[bool]] = []  # [member][slot]
    for j, one in enumerate(group):
        positives = len(one.all_parts) - len(one.texts.negatives)
        chunks = [prepared.chunks[j] for prepared in combined]
        needed.append(list(family.padding_empties(encoders, chunks, positives)))
    # A LoRA clears the empty-window cache: count as it will stand then.
    cached = False if lora else None
    passes = []
    for s, slot in enumerate(slots):
        empty = [needed[j][s] for j in range(len(group))]
        try:
            combined[s].check_rows(limits.rows, empty=any(empty), cached=cached)
            passes.append([(combined[s], list(range(len(group))), any(empty))])
        except LimitExceededError:
            packs = _packs(slot, requests[s], empty, comma_backtrack, limits, cached)
            passes.append(packs)
    return passes


def _packs(
    slot: _Slot,
    requests: list[Request],
    empty: list[bool],
    comma_backtrack: int,
    limits: Limits,
    cached: bool | None,
) -> list[tuple[Plan, list[int], bool]]:
    """Split requests into passes of at most ``limits.rows`` rows, in order (first fit)."""
    encoder = slot.encoder
    empty_row = (encoder.empty_ids(), None)
    in_cache = encoder.cached_empty() is not None if cached is None else cached

    def prepare(which: list[int]) -> Plan:
        return plan(
            encoder,
            [requests[j] for j in which],
            comma_backtrack=comma_backtrack,
            max_output_tokens=limits.output_tokens,
        )

    groups: list[list[int]] = []
    current: list[int] = []
    union: set[Any] = set()
    for j in range(len(requests)):
        alone = prepare([j])
        alone.check_rows(limits.rows, empty=empty[j], cached=cached)  # too big alone: raise
        merged = union | alone.row_set(empty=empty[j])
        if current and len(merged) - (in_cache and empty_row in merged) > limits.rows:
            groups.append(current)
            current, merged = [], set(alone.row_set(empty=empty[j]))
        current.append(j)
        union = merged
    groups.append(current)
    packs = []
    for which in groups:
        needs_empty = any(empty[j] for j in which)
        prepared = prepare(which)
        prepared.check_rows(limits.rows, empty=needs_empty, cached=cached)
        packs.append((prepared, which, needs_empty))
    return packs
