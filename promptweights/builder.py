"""The conditioning builder: every row of a request planned first, then one batched encoder call.

One request is a list of *groups*; a group is the texts A1111 encodes together (the schedule
variants of one prompt, or just the prompt), e.g. ``[[prompt], [negative]]`` or
``[[variant_1, variant_2], [negative]]``. For one :class:`~promptweights.encoders.TextEncoder`:

1. every text is turned into weighted spans (``promptweights.weighted_spans``, unless the
   strategy reads syntax literally) and chunked (``promptweights.tokens``); the texts of a group are
   padded to the same number of chunks with empty chunks (A1111 §7);
2. the token normalisation rewrites the weights;
3. every row is planned: the chunks, and every extra encoding the strategy declared in its
   :class:`~promptweights.strategies.Needs`; identical rows are encoded once. The empty window is
   planned only where it is used (padding, or a strategy that declares ``Needs.empty``) and only
   when the encoder's cross-call cache does not hold it (``promptweights.encoders``); a text that
   is the empty window (an empty negative) is served from that cache too. So the rows encoded are
   A1111's minimum: the chunks of every text, plus the empty window once per model;
4. the encoder runs once, with all rows batched, under ``torch.no_grad()``; on a causal CLIP
   tower, masked and substituted rows that share enough of their chunk's prefix run only their
   suffix, in a second pass, from the chunk's cached keys and values
   (:meth:`~promptweights.encoders.TextEncoder.encode_from_prefixes`);
5. each group's strategy runs in float32 (batching changes no number: the strategy sees only its
   group), the result goes back to the encoder's dtype (saturating at float16's and bfloat16's
   largest values, :func:`to_dtype`), and every group is padded with empty-prompt chunks to the
   longest group, so positive and negative always have the same length.

**Batched or exact.** A batch of rows may round differently in the last bit from one row at a time
(PyTorch promises no batch-invariant kernels; a CPU's vector width decides), so a batched result
equals the one-text result up to ~1e-6 relative in float32. An encoder with ``rows_per_call=1``
runs one row per pass and gives bit for bit what a pipeline's ``encode_prompt`` gives.

:func:`build` builds one request. :func:`build_many` builds several requests (different strategies
or normalisations: a comparison grid) in the same single pass; :func:`plan` and :meth:`Plan.run`
split the two halves for a caller that must look at the chunk counts before encoding (the diffusers
adapter pads across text encoders). The diffusers adapter calls them once per text encoder
(CLIP-L, OpenCLIP-G with pooled output, T5) with the same groups.
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
    STRATEGY_SIGNATURE,
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
    equalize,
    span_position,
    tokenize_many,
)

__all__ = [
    "BuildResult",
    "GroupEncoding",
    "Plan",
    "Request",
    "TextInput",
    "build",
    "build_many",
    "plan",
    "to_dtype",
]

#: A text to encode: a prompt string (parsed with ``promptweights.weighted_spans``) or spans.
TextInput = str | Sequence[Span]

# A planned row: token ids and the attention mask (None = attend everywhere).
_Row = tuple[tuple[int, ...], tuple[int, ...] | None]


@dataclass(frozen=True, slots=True)
class GroupEncoding:
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
    """What :func:`build` returns (one per request with :func:`build_many`).

    Attributes:
        groups: one :class:`GroupEncoding` per input group, all with the same number of chunks.
        encoder_calls: forward passes run: 1, or more with ``TextEncoder.rows_per_call`` or a
            second pass for shared prefixes. With :func:`build_many`, the passes shared by all its
            requests.
        rows: rows encoded in that pass (after de-duplication and the empty-prompt cache), shared
            like ``encoder_calls``.
        chunks: chunks of the longest group (every group's, with ``equal_length``).
        seconds: wall time of the stages: ``"tokenize"`` (parse, chunk, plan), ``"encode"`` (the
            encoder pass) and ``"weight"`` (strategies, padding, dtype casts).
        empty: the empty window's encoding ``(T, D)`` in the encoder's dtype, when the request
            used it or it was cached (``None`` otherwise).
    """

    groups: tuple[GroupEncoding, ...]
    encoder_calls: int
    rows: int
    chunks: int
    seconds: dict[str, float]
    empty: Tensor | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """One conditioning request for :func:`plan` and :func:`build_many`.

    Attributes:
        groups: lists of texts encoded together (see :func:`build`).
        strategy: a name from ``promptweights.strategies.STRATEGIES`` or a strategy callable.
        normalization: ``"none"``, ``"mean"``, ``"length"``, ``"length+mean"`` or a callable.
        equal_length: pad every group with empty-prompt chunks to the longest one.
    """

    groups: Sequence[Sequence[TextInput]]
    strategy: str | Strategy = "a1111"
    normalization: str | Normalization = "none"
    equal_length: bool = True


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


@dataclass(slots=True)
class _RequestPlan:
    strategy: Strategy
    needs: Needs
    equal_length: bool
    groups: list[_GroupPlan]
    texts: Sequence[Sequence[TextInput]]  # as given, per group
    spans: list[list[Span]]  # every text's spans, flat

    @property
    def chunks(self) -> int:
        return max(len(g.prompts[0].chunks) for g in self.groups)

    @property
    def padded(self) -> bool:
        chunks = self.chunks
        return self.equal_length and any(len(g.prompts[0].chunks) < chunks for g in self.groups)


class Plan:
    """Every row of some requests on one encoder, planned and not yet encoded.

    :func:`plan` returns it; :meth:`run` encodes every row in one batched pass and weights each
    request. In between, :attr:`chunks` tells a caller that pads across encoders (the diffusers
    adapter: cond and uncond, SDXL's two towers) whether it will need the empty window.
    """

    def __init__(
        self, encoder: TextEncoder, planner: _Planner, requests: list[_RequestPlan], started: float
    ) -> None:
        self.encoder = encoder
        self._planner = planner
        self._requests = requests
        self._started = started
        self._planned = time.perf_counter()

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        """Per request, the chunks of each group (before any padding)."""
        return tuple(tuple(len(g.prompts[0].chunks) for g in r.groups) for r in self._requests)

    @property
    def prompts(self) -> tuple[tuple[tuple[TokenizedPrompt, ...], ...], ...]:
        """Per request, per group, the texts as tokenised (truncation and dropped ``BREAK``s)."""
        return tuple(tuple(g.prompts for g in r.groups) for r in self._requests)

    def row_set(self, *, empty: bool = False) -> frozenset[_Row]:
        """Every distinct row :meth:`run` needs, as ``(ids, mask)`` pairs: the planned rows, and
        the empty window where the plan uses it (``empty`` as for :meth:`run`), cached or not.

        A caller that packs several plans' requests into passes of at most ``max_rows`` rows
        counts the union of their row sets (less the empty window where it is cached).
        """
        rows = set(self._planner.index)
        if empty or any(r.needs.empty or r.padded for r in self._requests):
            rows.add((self.encoder.empty_ids(), None))
        return frozenset(rows)

    def check_rows(self, max_rows: int, *, empty: bool = False, cached: bool | None = None) -> int:
        """The rows :meth:`run` will encode; raise before any work if they pass ``max_rows``.

        Args:
            max_rows: the most rows to encode.
            empty: as for :meth:`run`.
            cached: whether the empty window will come from the cache (``None``: as it stands
                now). The diffusers adapter asks with ``cached=False`` before it loads a LoRA,
                which clears the cache, so that the limit fires before the pipeline is touched.

        Raises:
            LimitExceededError: the pass needs more than ``max_rows`` rows.
        """
        index = self._planner.index
        empty_row = (self.encoder.empty_ids(), None)
        if cached is None:
            cached = self.encoder.cached_empty() is not None
        needed = empty or any(r.needs.empty or r.padded for r in self._requests)
        rows = len(index) + (not cached and needed and empty_row not in index)
        rows -= cached and empty_row in index
        if rows > max_rows:
            raise LimitExceededError(
                f"this request needs {rows} text-encoder rows of {self.encoder.window.length} "
                f"tokens (chunks × schedule variants × extra encodings); the limit is {max_rows} "
                "(max_rows)"
            )
        return int(rows)

    def run(
        self, *, empty: bool = False, max_rows: int = DEFAULT_LIMITS.rows
    ) -> tuple[BuildResult, ...]:
        """Encode every planned row in one pass per encoder and weight each request.

        Args:
            empty: also make the empty window's encoding available (``BuildResult.empty``), for a
                caller that pads; it is taken from the cache when there, else encoded in the pass.
            max_rows: the most rows to encode; checked before the encoder runs.

        Returns:
            One :class:`BuildResult` per request, in order.

        Raises:
            LimitExceededError: the pass needs more than ``max_rows`` rows.
        """
        encoder, planner = self.encoder, self._planner
        empty_ids = encoder.empty_ids()
        needed = empty or any(r.needs.empty or r.padded for r in self._requests)
        cached = encoder.cached_empty()
        if cached is None and needed:
            planner.add(empty_ids)
        empty_row = planner.index.get((empty_ids, None))
        # A text that is the empty window (an empty negative) is served from the cache too.
        known = {empty_row: cached} if cached is not None and empty_row is not None else {}
        todo = self.check_rows(max_rows, empty=empty, cached=cached is not None)
        planned = time.perf_counter()
        z_all, pooled_all, calls = _run(encoder, planner, known)
        encoded = time.perf_counter()
        if cached is None and empty_row is not None:
            # Requested, or encoded anyway for an empty text: cache it for the next request.
            cached = (z_all[empty_row], None if pooled_all is None else pooled_all[empty_row])
            encoder.store_empty(*cached)
        e = None if cached is None else cached[0]

        out = []
        for request in self._requests:
            weighting = time.perf_counter()
            results = []
            chunks = request.chunks
            start = 0
            for group, plan in zip(request.texts, request.groups, strict=True):
                embeds = _apply(plan, request.strategy, z_all, e, encoder.dtype)
                if not bool(torch.isfinite(embeds).all()):
                    spans = request.spans[start : start + len(group)]
                    raise _not_finite(plan, group, spans, z_all, embeds.dtype)
                start += len(group)
                missing = chunks - embeds.shape[1] if request.equal_length else 0
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
                            "the text encoder's pooled output is not finite (before any "
                            "weighting): check the model, LoRA multipliers and "
                            "textual-inversion vectors"
                        )
                results.append(GroupEncoding(embeds.reshape(v, k * t, d), pooled, plan.prompts))
            seconds = {
                "tokenize": planned - self._started,
                "encode": encoded - planned,
                "weight": time.perf_counter() - weighting,
            }
            out.append(BuildResult(tuple(results), calls, todo, chunks, seconds, e))
        return tuple(out)


def plan(
    encoder: TextEncoder,
    requests: Sequence[Request],
    *,
    comma_backtrack: int = 20,
    textual_inversions: Iterable[TextualInversion] | None = None,
    max_output_tokens: int = DEFAULT_LIMITS.output_tokens,
) -> Plan:
    """Tokenise and plan every row of some requests on one encoder (nothing is encoded yet).

    Args:
        encoder: the text tower to run.
        requests: the requests; rows that several of them need are planned once.
        comma_backtrack: A1111's ``comma_padding_backtrack`` (20; 0 switches it off).
        textual_inversions: embeddings to match; defaults to those that diffusers'
            ``load_textual_inversion`` added to the tokenizer.
        max_output_tokens: per request, the most token positions to return or hand the strategy
            (see :func:`build`).

    Returns:
        The :class:`Plan`; :meth:`Plan.run` encodes it.

    Raises:
        InvalidWeightError: a weight is NaN or infinite.
        UnknownNameError: an unknown strategy or normalisation name.
        InvalidArgumentError: no request, a request without groups, or a group without texts.
    """
    started = time.perf_counter()
    if not requests:
        raise InvalidArgumentError("plan needs at least one request")
    layout = encoder.window
    if textual_inversions is None:
        textual_inversions = diffusers_textual_inversions(encoder.tokenizer)
    inversions = list(textual_inversions)
    planner = _Planner()
    planned: list[_RequestPlan] = []
    for request in requests:
        strategy_fn = get_strategy(request.strategy)
        normalize = get_normalization(request.normalization)
        needs = needs_of(strategy_fn)
        groups = request.groups
        if not groups or any(len(group) == 0 for group in groups):
            raise InvalidArgumentError(
                "build needs at least one group, and every group at least one text"
            )
        flat = [_spans(text, needs.syntax) for group in groups for text in group]
        budget = _Budget(max_output_tokens, layout.length)
        try:
            tokenized = tokenize_many(
                encoder.tokenizer,
                flat,
                layout=layout,
                comma_backtrack=comma_backtrack,
                textual_inversions=inversions,
                max_chunks=budget.windows,
            )
        except LimitExceededError:
            raise budget.error("one text alone") from None
        # The output, before any row is planned: every text at the longest group's chunk count.
        longest = max(len(prompt.chunks) for prompt in tokenized)
        budget.take(len(flat) * longest, "the texts")
        plans: list[_GroupPlan] = []
        start = 0
        for group in groups:
            prompts = equalize(*tokenized[start : start + len(group)])
            start += len(group)
            plans.append(
                _plan_group(prompts, normalize, needs, planner, encoder.mask_token, budget)
            )
        planned.append(_RequestPlan(strategy_fn, needs, request.equal_length, plans, groups, flat))
    return Plan(encoder, planner, planned, started)


def build_many(
    encoder: TextEncoder,
    requests: Sequence[Request],
    *,
    comma_backtrack: int = 20,
    textual_inversions: Iterable[TextualInversion] | None = None,
    max_rows: int = DEFAULT_LIMITS.rows,
    max_output_tokens: int = DEFAULT_LIMITS.output_tokens,
) -> tuple[BuildResult, ...]:
    """Build several requests (strategies, normalisations) with one batched encoder pass.

    Args:
        encoder: the text tower to run.
        requests: the requests; rows that several of them need are encoded once.
        comma_backtrack: A1111's ``comma_padding_backtrack`` (20; 0 switches it off).
        textual_inversions: embeddings to match (default: the tokenizer's diffusers ones).
        max_rows: the most rows of the whole pass; checked before the encoder runs.
        max_output_tokens: per request, the most token positions (see :func:`build`).

    Returns:
        One :class:`BuildResult` per request, in order; each is what :func:`build` of that request
        alone gives, up to the last-bit rounding of a different batch.

    Raises:
        InvalidWeightError: a weight is NaN or infinite.
        UnknownNameError: an unknown strategy or normalisation name.
        LimitExceededError: the pass needs more than ``max_rows`` rows.
    """
    prepared = plan(
        encoder,
        requests,
        comma_backtrack=comma_backtrack,
        textual_inversions=textual_inversions,
        max_output_tokens=max_output_tokens,
    )
    return prepared.run(max_rows=max_rows)


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
        One :class:`GroupEncoding` per group, plus pass and row counts.

    Raises:
        InvalidWeightError: a weight is NaN, infinite or past
            :data:`~promptweights.limits.MAX_WEIGHT` (the error gives its position in the text),
            or the conditioning came out non-finite (in float32 or the encoder's dtype): nothing
            non-finite is ever returned.
        UnknownNameError: an unknown strategy or normalisation name.
        LimitExceededError: the request needs more than ``max_rows`` rows or
            ``max_output_tokens`` tokens.
    """
    request = Request(groups, strategy, normalization, equal_length)
    (result,) = build_many(
        encoder,
        [request],
        comma_backtrack=comma_backtrack,
        textual_inversions=textual_inversions,
        max_rows=max_rows,
        max_output_tokens=max_output_tokens,
    )
    return result


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
        if needs.masked_fragments or needs.masked_weighted:
            # compel masks the spans below 1; the decoder-LLM lerp every weighted span.
            masked = {
                f: wf
                for f, wf in per_fragment.items()
                if wf < 1.0 or (needs.masked_weighted and wf != 1.0)
            }
            budget.take(len(chunks) * len(masked), "masked")
            entries = []
            for f, wf in sorted(masked.items()):
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


def _run(
    encoder: TextEncoder, planner: _Planner, known: dict[int, tuple[Tensor, Tensor | None]]
) -> tuple[Tensor, Tensor | None, int]:
    """Encode every planned row not in ``known`` (row -> cached encoding) in one pass."""
    keys = list(planner.index)
    todo = [row for row in range(len(keys)) if row not in known]
    if not keys:
        return torch.empty(0), None, 0
    if not todo:
        z_known = torch.stack([known[row][0] for row in range(len(keys))])
        pooled_rows = [known[row][1] for row in range(len(keys))]
        return z_known, _stack_pooled(pooled_rows), 0
    ids = torch.tensor([keys[row][0] for row in todo], dtype=torch.long)
    mask = None
    if any(keys[row][1] is not None for row in todo):
        mask = torch.tensor(
            [keys[row][1] or (1,) * len(keys[row][0]) for row in todo], dtype=torch.long
        )
    # Masked and substituted rows share their chunk's prefix up to the first hidden or replaced
    # token: on a causal tower only their suffix runs, from the chunk's cached keys and values.
    position = {row: i for i, row in enumerate(todo)}
    parents = [position.get(planner.parent.get(row, -1)) for row in todo]
    derived = any(parent is not None for parent in parents)
    prefixes = encoder.shared_prefixes(ids, mask, parents) if derived else []
    prefixed = sum(p is not None for p in prefixes)
    if prefixed:
        z, pooled = encoder.encode_from_prefixes(ids, mask, prefixes)
    else:
        z, pooled = encoder.encode(ids, mask)
    parents_used = len({p[0] for p in prefixes if p is not None})
    calls = encoder.calls_for(len(todo), prefixed, parents_used)
    if not known:
        return z, pooled, calls
    z_all = z.new_empty((len(keys), *z.shape[1:]))
    z_all[todo] = z
    pooled_all = None if pooled is None else pooled.new_empty((len(keys), *pooled.shape[1:]))
    if pooled_all is not None:
        assert pooled is not None
        pooled_all[todo] = pooled
    for row, (z_row, pooled_row) in known.items():
        z_all[row] = z_row.to(z_all.device, z_all.dtype)
        if pooled_all is not None and pooled_row is not None:
            pooled_all[row] = pooled_row.to(pooled_all.device, pooled_all.dtype)
    return z_all, pooled_all, calls


def _stack_pooled(rows: list[Tensor | None]) -> Tensor | None:
    present = [row for row in rows if row is not None]
    return torch.stack(present) if len(present) == len(rows) and rows else None


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
    if not isinstance(out, Tensor) or out.shape != z.shape:
        got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise InvalidArgumentError(
            f"the strategy {getattr(strategy, '__name__', strategy)!r} returned {got}; a strategy "
            f"is called as {STRATEGY_SIGNATURE} and returns a tensor shaped like z "
            f"{tuple(z.shape)}"
        )
    return to_dtype(out, dtype)


def to_dtype(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast float32 weighting results to the encoder's dtype, saturating at its largest values.

    float16 holds at most 65504: a weight users may write (up to the bound of
    ``promptweights.limits``) times an encoder state can pass it. The arithmetic runs in float32
    (up to ~3.4e38), and a value beyond the target's range becomes its largest finite value of that
    sign instead of ``inf`` (which turns into NaN in the attention that reads it). Finite values
    within the range cast exactly as ``Tensor.to`` casts them.

    Args:
        x: the weighting result.
        dtype: the encoder's dtype.

    Returns:
        ``x`` in ``dtype``.
    """
    if x.dtype == dtype:
        return x
    if dtype.is_floating_point and torch.finfo(dtype).max < torch.finfo(x.dtype).max:
        bound = torch.finfo(dtype).max
        x = x.clamp(-bound, bound)
    return x.to(dtype)
