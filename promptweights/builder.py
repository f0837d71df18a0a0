"""The conditioning builder: every row of a request planned first, then one batched encoder call.

One request is a list of *groups*; a group is the texts A1111 encodes together (the schedule
variants of one prompt, or just the prompt), e.g. ``[[prompt], [negative]]`` or
``[[variant_1, variant_2], [negative]]``. For one :class:`~promptweights.encoders.TextEncoder`:

1. every text is turned into weighted spans (``promptweights.weighted_spans``, unless the
   strategy reads syntax literally) and chunked (``promptweights.tokens``); the texts of a group are
   padded to the same number of chunks with empty chunks (A1111 §7);
2. the token normalisation rewrites the weights;
3. every row is planned: the chunks, the empty prompt (once per encoder, then cached), and every
   extra encoding the strategy declared in its :class:`~promptweights.strategies.Needs`; identical
   rows are encoded once;
4. the encoder runs once, with all rows batched, under ``torch.inference_mode()``; on a causal CLIP
   tower, masked and substituted rows that share enough of their chunk's prefix run only their
   suffix, in a second pass, from the chunk's cached keys and values
   (:meth:`~promptweights.encoders.TextEncoder.encode_from_prefixes`);
5. each group's strategy runs in float32 (batching changes no number: the strategy sees only its
   group), the result goes back to the encoder's dtype, and every group is padded with empty-prompt
   chunks to the longest group, so positive and negative always have the same length.

The diffusers adapter calls :func:`build` once per text encoder (CLIP-L, OpenCLIP-G with pooled
output, T5) with the same groups.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from promptweights.encoders import TextEncoder
from promptweights.errors import InvalidArgumentError, InvalidWeightError, LimitExceededError
from promptweights.limits import DEFAULT_LIMITS
from promptweights.strategies import (
    Extras,
    Needs,
    Normalization,
    Strategy,
    get_normalization,
    get_strategy,
    needs_of,
)
from promptweights.tokens import (
    Chunk,
    Span,
    TextualInversion,
    TokenizedPrompt,
    check_weights,
    diffusers_textual_inversions,
    empty_chunk,
    equalize,
    span_position,
    tokenize_many,
)

__all__ = ["BuildResult", "Conditioning", "TextInput", "build"]

#: A text to encode: a prompt string (parsed with ``promptweights.weighted_spans``) or spans.
TextInput = str | Sequence[Span]

# A planned row: token ids and the attention mask (None = attend everywhere).
_Row = tuple[tuple[int, ...], tuple[int, ...] | None]


@dataclass(frozen=True, slots=True)
class Conditioning:
    """The conditioning of one group of texts on one encoder.

    Attributes:
        embeds: ``(V, K·T, D)`` in the encoder's dtype: one row per text of the group.
        pooled: ``(V, P)`` unweighted pooled vectors of each text's first chunk, when the encoder
            has ``pooled=True``.
        prompts: the tokenised texts as chunked (weights before normalisation).
    """

    embeds: Tensor
    pooled: Tensor | None
    prompts: tuple[TokenizedPrompt, ...]


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What :func:`build` returns.

    Attributes:
        groups: one :class:`Conditioning` per input group, all with the same number of chunks.
        encoder_calls: forward passes run: 1, or more with ``TextEncoder.rows_per_call``.
        rows: rows encoded in that pass (after de-duplication and the empty-prompt cache).
        chunks: chunks of the longest group (every group's, with ``equal_length``).
        seconds: wall time of the stages: ``"tokenize"`` (parse, chunk, plan), ``"encode"`` (the
            encoder pass) and ``"weight"`` (strategies, padding, dtype casts).
    """

    groups: tuple[Conditioning, ...]
    encoder_calls: int
    rows: int
    chunks: int
    seconds: dict[str, float]


def _spans(text: TextInput, syntax: bool) -> list[Span]:
    if not isinstance(text, str):
        spans = [(str(t), float(w)) for t, w in text]
        check_weights(spans)
        return spans
    if not syntax:
        return [(text, 1.0)]
    import promptweights

    spans = [(str(t), float(w)) for t, w in promptweights.weighted_spans(text)]
    check_weights(spans, source=text)
    return spans


class _Budget:
    """The token positions a build may materialise (``max_output_tokens``), spent in windows
    before each part is built: the output, then every extra encoding a strategy receives."""

    def __init__(self, tokens: int, window: int) -> None:
        self.tokens = tokens
        self.window = window
        self.windows = max(1, tokens // window)
        self.used = 0

    def take(self, windows: int, what: str) -> None:
        self.used += windows
        if self.used > self.windows:
            raise self.error(what)

    def error(self, what: str) -> LimitExceededError:
        return LimitExceededError(
            f"this request needs more than {self.tokens} tokens of conditioning ({what} past "
            f"{self.windows} windows of {self.window}: texts × chunks, padded to the longest, "
            f"plus one window per chunk for each extra encoding of the strategy); the limit is "
            f"{self.tokens} (max_output_tokens, Limits.output_tokens)"
        )


class _Planner:
    """Collects unique rows in order, and the chunk row each extra row was derived from."""

    def __init__(self) -> None:
        self.index: dict[_Row, int] = {}
        # Extra row (masked or substituted) -> its chunk's row: the encoder may start it from the
        # chunk's cached prefix (causal towers). A chunk row itself always runs in full.
        self.parent: dict[int, int] = {}

    def add(
        self, ids: tuple[int, ...], mask: tuple[int, ...] | None = None, base: int | None = None
    ) -> int:
        if mask is not None and all(mask):
            mask = None
        row = self.index.setdefault((ids, mask), len(self.index))
        if base is None:
            self.parent.pop(row, None)
        elif row != base and row == len(self.index) - 1 and base not in self.parent:
            self.parent.setdefault(row, base)
        return row


@dataclass(slots=True)
class _GroupPlan:
    prompts: tuple[TokenizedPrompt, ...]
    w: Tensor  # (V, K, T) float32, normalised
    fragments: Tensor  # (V, K, T) int64
    base: list[list[int]]  # [v][k] row index
    masked: list[list[tuple[int, float, list[int]]]]
    levels: list[list[tuple[float, list[int]]]]
    groups: list[list[tuple[int, list[int]]]]


def build(
    encoder: TextEncoder,
    groups: Sequence[Sequence[TextInput]],
    *,
    strategy: str | Strategy = "a1111",
    normalization: str | Normalization = "none",
    comma_backtrack: int = 20,
    textual_inversions: Iterable[TextualInversion] | None = None,
    equal_length: bool = True,
    max_rows: int = DEFAULT_LIMITS.rows,
    max_output_tokens: int = DEFAULT_LIMITS.output_tokens,
) -> BuildResult:
    """Build weighted conditioning for groups of texts with one batched encoder pass.

    Args:
        encoder: the text tower to run.
        groups: lists of texts encoded together (schedule variants of one prompt); a text is a
            prompt string (parsed with ``promptweights.weighted_spans``) or a weighted span list.
        strategy: a name from ``promptweights.strategies.STRATEGIES`` or a strategy callable.
        normalization: ``"none"``, ``"mean"``, ``"length"``, ``"length+mean"`` or a callable.
        comma_backtrack: A1111's ``comma_padding_backtrack`` (20; 0 switches it off).
        textual_inversions: embeddings to match; defaults to those that diffusers'
            ``load_textual_inversion`` added to the tokenizer.
        equal_length: pad every group with empty-prompt chunks to the longest one.
        max_rows: the most rows (token windows) to encode; checked before the encoder runs.
        max_output_tokens: the most token positions to return or hand the strategy (every
            text's chunks, each group counted at the longest group's length, plus one window per
            chunk for each extra encoding); checked on the chunk counts, before anything is
            encoded, and while chunking, so memory stays bounded by it.

    Returns:
        One :class:`Conditioning` per group, plus pass and row counts.

    Raises:
        InvalidWeightError: a weight is NaN, infinite or past
            :data:`~promptweights.limits.MAX_WEIGHT` (the error gives its position in the text),
            or the conditioning came out non-finite (in float32 or the encoder's dtype): nothing
            non-finite is ever returned.
        UnknownNameError: an unknown strategy or normalisation name.
        LimitExceededError: the request needs more than ``max_rows`` rows or
            ``max_output_tokens`` tokens.
    """
    started = time.perf_counter()
    strategy_fn = get_strategy(strategy)
    normalize = get_normalization(normalization)
    needs = needs_of(strategy_fn)
    if not groups or any(len(group) == 0 for group in groups):
        raise InvalidArgumentError(
            "build needs at least one group, and every group at least one text"
        )
    layout = encoder.window
    if textual_inversions is None:
        textual_inversions = diffusers_textual_inversions(encoder.tokenizer)
    flat = [_spans(text, needs.syntax) for group in groups for text in group]
    budget = _Budget(max_output_tokens, layout.length)
    try:
        tokenized = tokenize_many(
            encoder.tokenizer,
            flat,
            layout=layout,
            comma_backtrack=comma_backtrack,
            textual_inversions=textual_inversions,
            max_chunks=budget.windows,
        )
    except LimitExceededError:
        raise budget.error("one text alone") from None
    # The output, before any row is planned: every text at the longest group's chunk count.
    longest = max(len(prompt.chunks) for prompt in tokenized)
    budget.take(len(flat) * longest, "the texts")
    planner = _Planner()
    plans: list[_GroupPlan] = []
    start = 0
    for group in groups:
        prompts = equalize(*tokenized[start : start + len(group)])
        start += len(group)
        plans.append(_plan_group(prompts, normalize, needs, planner, encoder.mask_token, budget))
    chunks = max(len(p.prompts[0].chunks) for p in plans)
    padded = equal_length and any(len(p.prompts[0].chunks) < chunks for p in plans)

    empty_ids = empty_chunk(layout).ids
    cached = encoder.cached_empty()
    if cached is None and (needs.empty or padded):
        planner.add(empty_ids)
    if len(planner.index) > max_rows:
        raise LimitExceededError(
            f"this request needs {len(planner.index)} text-encoder rows of {layout.length} tokens "
            f"(chunks × schedule variants × extra encodings); the limit is {max_rows} (max_rows)"
        )
    planned = time.perf_counter()
    z_all, pooled_all, calls = _run(encoder, planner)
    encoded = time.perf_counter()
    rows = len(planner.index)
    empty_row = planner.index.get((empty_ids, None))
    if cached is None and empty_row is not None:
        # Requested, or encoded anyway for an empty text: cache it for the next request.
        cached = (z_all[empty_row], None if pooled_all is None else pooled_all[empty_row])
        encoder.store_empty(*cached)
    e = None if cached is None else cached[0]

    results = []
    start = 0
    for group, plan in zip(groups, plans, strict=True):
        embeds = _apply(plan, strategy_fn, z_all, e, encoder.dtype)
        if not bool(torch.isfinite(embeds).all()):
            raise _not_finite(plan, group, flat[start : start + len(group)], z_all, embeds.dtype)
        start += len(group)
        missing = chunks - embeds.shape[1] if equal_length else 0
        if missing:
            assert e is not None
            pad = e.to(embeds.dtype).expand(embeds.shape[0], missing, *e.shape)
            embeds = torch.cat([embeds, pad], dim=1)
        v, k, t, d = embeds.shape
        pooled = None
        if pooled_all is not None:
            pooled = torch.stack([pooled_all[row[0]] for row in plan.base])
            if not bool(torch.isfinite(pooled).all()):
                raise InvalidWeightError(
                    "the text encoder's pooled output is not finite (before any weighting): "
                    "check the model, LoRA multipliers and textual-inversion vectors"
                )
        results.append(Conditioning(embeds.reshape(v, k * t, d), pooled, plan.prompts))
    seconds = {
        "tokenize": planned - started,
        "encode": encoded - planned,
        "weight": time.perf_counter() - encoded,
    }
    return BuildResult(tuple(results), calls, rows, chunks, seconds)


def _not_finite(
    plan: _GroupPlan,
    texts: Sequence[TextInput],
    spans: Sequence[list[Span]],
    z_all: Tensor,
    dtype: torch.dtype,
) -> InvalidWeightError:
    """The error for a group whose conditioning came out NaN or infinite: the encoder itself, or
    the weighting (named by its largest weight, where it is in the text)."""
    rows = sorted({row for bases in plan.base for row in bases})
    if not bool(torch.isfinite(z_all[rows]).all()):
        return InvalidWeightError(
            "the text encoder's output is not finite (before any weighting): check the model, "
            "LoRA multipliers and textual-inversion vectors"
        )
    # The largest weight in absolute value (as the user wrote it, before normalisation).
    best: tuple[float, int, int] | None = None
    for v, prompt in enumerate(plan.prompts):
        for chunk in prompt.chunks:
            for weight, fragment in zip(chunk.weights, chunk.fragments, strict=True):
                if fragment >= 0 and (best is None or abs(weight) > best[0]):
                    best = (abs(weight), v, fragment)
    where = "in float32"
    if dtype != torch.float32:
        where = f"in float32 or in the model's {str(dtype).removeprefix('torch.')}"
    if best is None:
        return InvalidWeightError(f"the weighted conditioning is not finite {where}")
    _, v, fragment = best
    text, weight = spans[v][fragment]
    given = texts[v]
    source = given if isinstance(given, str) else None
    position = None if source is None else span_position(source, spans[v], fragment)
    return InvalidWeightError(
        f"the weighted conditioning is not finite {where}; the largest weight is {weight!r} "
        f"on {text[:40]!r}: lower it (nested weights multiply)",
        source=source if position is not None else None,
        pos=position,
    )


def _weights_of(prompts: Sequence[TokenizedPrompt]) -> tuple[Tensor, Tensor]:
    w = torch.tensor([[c.weights for c in p.chunks] for p in prompts], dtype=torch.float32)
    fragments = torch.tensor([[c.fragments for c in p.chunks] for p in prompts], dtype=torch.long)
    return w, fragments


def _fragment_weights(fragments: list[int], weights: list[float]) -> dict[int, float]:
    first: dict[int, float] = {}
    for f, w in zip(fragments, weights, strict=True):
        if f >= 0 and f not in first:
            first[f] = w
    return first


def _plan_group(
    prompts: tuple[TokenizedPrompt, ...],
    normalize: Normalization,
    needs: Needs,
    planner: _Planner,
    mask_token: int,
    budget: _Budget,
) -> _GroupPlan:
    w, fragments = _weights_of(prompts)
    w = normalize(w, fragments).to(torch.float32)
    plan = _GroupPlan(prompts, w, fragments, [], [], [], [])
    for v, prompt in enumerate(prompts):
        chunks: list[Chunk] = list(prompt.chunks)
        bases = [planner.add(c.ids) for c in chunks]
        plan.base.append(bases)
        flat_f = fragments[v].reshape(-1).tolist()
        flat_w = w[v].reshape(-1).tolist()
        per_fragment = _fragment_weights(flat_f, flat_w)
        if needs.masked_fragments:
            budget.take(len(chunks) * sum(wf < 1.0 for wf in per_fragment.values()), "masked")
            entries = []
            for f, wf in sorted(per_fragment.items()):
                if wf < 1.0:
                    rows = [
                        planner.add(c.ids, tuple(0 if g == f else 1 for g in c.fragments), b)
                        for c, b in zip(chunks, bases, strict=True)
                    ]
                    entries.append((f, wf, rows))
            plan.masked.append(entries)
        if needs.substituted_levels is not None:
            words = [x for f, x in zip(flat_f, flat_w, strict=True) if f >= 0]
            bound = 1.0 if needs.substituted_levels == "one" else max([1.0, *words])
            levels = sorted({x for x in words if x < bound})
            budget.take(len(chunks) * len(levels), "substituted levels")
            level_rows = []
            for u in levels:
                rows = []
                for k, c in enumerate(chunks):
                    wk = w[v, k].tolist()
                    ids = tuple(
                        mask_token if f >= 0 and x <= u else t
                        for t, f, x in zip(c.ids, c.fragments, wk, strict=True)
                    )
                    rows.append(planner.add(ids, base=bases[k]))
                level_rows.append((u, rows))
            plan.levels.append(level_rows)
        if needs.substituted_groups:
            budget.take(len(chunks) * sum(wf > 1.0 for wf in per_fragment.values()), "groups")
            entries_g = []
            for f, wf in sorted(per_fragment.items()):
                if wf > 1.0:
                    rows = [
                        planner.add(
                            tuple(
                                mask_token if g == f else t
                                for t, g in zip(c.ids, c.fragments, strict=True)
                            ),
                            base=b,
                        )
                        for c, b in zip(chunks, bases, strict=True)
                    ]
                    entries_g.append((f, rows))
            plan.groups.append(entries_g)
    return plan


def _run(encoder: TextEncoder, planner: _Planner) -> tuple[Tensor, Tensor | None, int]:
    keys = list(planner.index)
    if not keys:
        return torch.empty(0), None, 0
    ids = torch.tensor([k[0] for k in keys], dtype=torch.long)
    mask = None
    if any(k[1] is not None for k in keys):
        mask = torch.tensor(
            [k[1] if k[1] is not None else (1,) * len(k[0]) for k in keys], dtype=torch.long
        )
    # Masked and substituted rows share their chunk's prefix up to the first hidden or replaced
    # token: on a causal tower only their suffix runs, from the chunk's cached keys and values.
    parents = [planner.parent.get(row) for row in range(len(keys))]
    prefixes = encoder.shared_prefixes(ids, mask, parents) if planner.parent else []
    prefixed = sum(p is not None for p in prefixes)
    if prefixed:
        z, pooled = encoder.encode_from_prefixes(ids, mask, prefixes)
    else:
        z, pooled = encoder.encode(ids, mask)
    return z, pooled, encoder.calls_for(len(keys), prefixed)


def _apply(
    plan: _GroupPlan, strategy: Strategy, z_all: Tensor, e: Tensor | None, dtype: torch.dtype
) -> Tensor:
    def gather(rows: list[int]) -> Tensor:
        return z_all[rows].float()

    z = torch.stack([gather(rows) for rows in plan.base])
    extras = Extras(
        fragments=plan.fragments.to(z.device),
        empty=None if e is None else e.float(),
        masked=tuple(tuple((f, wf, gather(r)) for f, wf, r in m) for m in plan.masked),
        levels=tuple(tuple((u, gather(r)) for u, r in lv) for lv in plan.levels),
        groups=tuple(tuple((g, gather(r)) for g, r in gr) for gr in plan.groups),
    )
    out = strategy(z, plan.w.to(z.device), extras)
    return out.to(dtype)
