"""Text towers as the builder runs them: which hidden state, clip skip, pooled output, caching.

A :class:`TextEncoder` pairs a Hugging Face text model (``CLIPTextModel``,
``CLIPTextModelWithProjection`` or ``T5EncoderModel``) with its tokenizer and says which hidden
state the pipeline conditions on:

* SD 1.x/2.x: the last layer after the final layer norm; A1111's clip skip ``N`` takes hidden state
  ``-N`` and re-applies the final layer norm (``a1111-behaviour.md`` §9.1).
  diffusers' ``clip_skip=k`` is A1111's ``N = k + 1``.
* SDXL (both towers): hidden state ``-2`` without the final layer norm; CLIP-G also gives the
  pooled (projected) vector.
* T5: the last hidden state, one window of the tokenizer's length.

It runs rows of token ids under ``torch.no_grad()`` (not ``inference_mode``: accelerate's offload
hooks create parameters during the forward) in the model's own dtype and device.

**The empty-prompt cache.** The empty window (BOS, EOS, padding) pads shorter conditionings and is
``e`` for the strategies that need it; A1111 encodes it once per model. Here it is cached across
calls and across :class:`TextEncoder` objects, per text model, in a
:class:`weakref.WeakKeyDictionary`: the cache never keeps a model (or its pipeline) alive. An entry
is keyed on the hidden state (layer, final layer norm), the window, the dtype, the device, whether
the pooled vector is kept and whether it came from a one-row pass (``rows_per_call=1``, the exact
mode, which never reads a batched entry). It is served only while the weights are the ones it was
encoded with: the same parameter objects, each with the same storage and the same in-place version
counter (``Tensor._version``: ``p.copy_()``, ``p.mul_()``…), and the same peft adapter state
(active adapters, scales, merged, disabled). Loading or unloading a LoRA or a textual inversion
(new parameters, resized embeddings, new scales) therefore misses the cache. One change is
invisible: an in-place write through ``param.data`` (which bypasses the version counter); call
:meth:`TextEncoder.clear_cache` after one (the diffusers adapter does after everything it loads).
Offload hooks that move the weights between calls (accelerate's, diffusers' CPU offload) change
their storage, so there the cache misses and the empty window costs one row where it is used.

**Placement.** Rows run on :attr:`TextEncoder.device`: the model's device, or the execution device
of accelerate's offload hooks (:func:`execution_device`), whose weights rest on the CPU or on
``meta`` between calls. Results stay on that device; the diffusers adapter moves them to the
pipeline's execution device.

**Shared prefixes.** CLIP's text transformer is causal: position ``j`` sees tokens ``0…j`` only.
A row that starts like another row (same ids, same attention mask) up to position ``p`` therefore
has the same hidden states, every layer's keys and values included, at positions ``0…p−1``: compel's
masked re-encodings (the chunk again, one span hidden from the attention mask) and ADV's substituted
rows share their chunk's prefix up to the first hidden or replaced token. :meth:`TextEncoder.encode`
takes, per row, an optional ``(parent, p)``: the parent rows run through the model as usual while
forward hooks keep their keys and values at positions ``< p``, and the other rows run only their
suffix (positions ``p…T−1``, all rows' suffixes packed together for the linear layers) through the
tower's own modules, attending to the parent's cached keys and values. The result equals the full
forward up to float rounding (``tests/test_encoders.py`` checks it against the plain forward).
A second pass costs a stream of every weight whatever its length, so by default this is done only
on CPU where the rows share at least half a window of positions in all (``share_prefixes``). Towers
other than CLIP (T5 is bidirectional) run every row in full, except decoder LLMs
(:meth:`TextEncoder.llm`), which are causal too: a derived row runs its suffix from the model's
own KV cache of the shared prefix.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from promptweights.errors import InvalidArgumentError
from promptweights.tokens import Layout, empty_chunk, layout_for, tokenize

__all__ = ["TextEncoder", "execution_device", "forget", "text_mask"]


@dataclass(eq=False)
class TextEncoder:
    """A text tower, its tokenizer and the hidden state the pipeline conditions on.

    Attributes:
        model: a ``CLIPTextModel``, ``CLIPTextModelWithProjection`` or ``T5EncoderModel``, or a
            decoder LLM (:meth:`llm`).
        tokenizer: its Hugging Face tokenizer.
        layer: index into ``hidden_states``; ``-1`` is the last layer.
        final_layer_norm: re-apply the final layer norm to ``hidden_states[layer]`` (CLIP only; the
            last layer of CLIP and T5 is always normalised).
        pooled: also return the pooled vector (``text_embeds`` of a projection model, else
            ``pooler_output``) of each text's first chunk, unweighted.
        layout: window layout; defaults to the tokenizer's (77-token CLIP chunks, one T5 window).
        rows_per_call: at most this many rows per forward pass; ``None`` runs every row of a
            request in one pass. ``1`` makes every row bit-identical to a one-text call on any
            hardware: batched matmuls are usually, not always, bit-identical row by row (on this
            project's CPU an SD1.5 CLIP-L is, for batches of 1 to 8; a 32-wide toy tower is not for
            batches of 5 and 8).
        share_prefixes: start masked and substituted rows from their chunk's cached prefix (causal
            CLIP towers only). ``None`` (the default) does so where it pays for its second pass: on
            CPU, when the rows of a request share at least half a window of positions in all (a
            pass streams every weight once, whatever its length; on a GPU a pass is bound by kernel
            launches, so it never pays there); with ``rows_per_call=1``, each row that shares at
            least half a window, whatever the other rows. ``True``: whenever a prefix is shared;
            ``False``: never.
        mask_padding: hide the padding after the text from the attention (the attention mask
            the tokenizer gives: every position up to the last one that is not the pad id), as
            Chroma, PixArt and Wan run their T5; combined with any mask a row brings.
        zero_padding: set the outputs at those hidden positions to zero, as Wan does.
        layers: a decoder LLM's hidden states, concatenated on the channels in this order (Flux.2
            stacks three); indices into ``hidden_states`` (``-1`` the last, ``-2`` the one before,
            ``10`` the output of the 10th layer). Empty: ``layer``. Only on a templated layout.
        attentions: a decoder LLM run asking for its attention weights, as HiDream's pipeline
            runs Llama-3.1 (transformers then takes the eager attention path, whose rounding the
            exact mode follows).
        trim: a decoder LLM run on each row's tokens only (the pipeline pads a batch to its
            longest text, one text: not at all), outputs past the text zero; ``False``: on the
            whole window with the padding masked (the pipeline pads to ``max_length``).
        inputs: a decoder LLM's further forward arguments for a pass over ``n`` whole rows (a
            vision-language model's image features, computed once, for rows whose template holds
            the image's placeholder tokens: ``promptweights.diffusers._llm``); a row continued
            from a cached prefix gets none (its suffix holds no image token). An encoder with
            ``inputs`` keeps no empty-prompt cache (the encoding depends on the image).
        companions: a decoder LLM's fixed rows ``(k, T)`` that the pipeline encodes in the
            same batch as the text's row, and the row's index among them (Z-Image Omni's
            template segments): each row runs in that batch, as the pipeline's call runs it,
            and :attr:`companion_states` keeps their states ``(k, T, D)`` (the same in every
            such batch: a batch of one shape computes each row alike). No empty-prompt cache
            either (its batch is not a one-row pass).
    """

    model: Any
    tokenizer: Any
    layer: int = -1
    final_layer_norm: bool = True
    pooled: bool = False
    layout: Layout | None = None
    rows_per_call: int | None = None
    share_prefixes: bool | None = None
    mask_padding: bool = False
    zero_padding: bool = False
    layers: tuple[int, ...] = ()
    trim: bool = False
    attentions: bool = False
    inputs: Callable[[int], dict[str, Any]] | None = field(default=None, repr=False)
    companions: tuple[Tensor, int] | None = field(default=None, repr=False)
    companion_states: Tensor | None = field(default=None, repr=False)
    _mask_token: int | None = field(default=None, repr=False)
    _empty_ids: tuple[int, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.layout is None:
            self.layout = layout_for(self.tokenizer)
        if self.layers and (self.layout is None or self.layout.template is None):
            raise InvalidArgumentError("layers= is for a decoder LLM (a templated layout)")
        if self.layer >= 0:
            raise InvalidArgumentError(
                f"layer counts from the end and must be negative, got {self.layer}"
            )
        layers = getattr(getattr(self.model, "config", None), "num_hidden_layers", None)
        if isinstance(layers, int) and self.layer < -(layers + 1):
            # hidden_states holds the embeddings and one state per layer: clip skip too large.
            raise InvalidArgumentError(
                f"layer {self.layer} (clip skip {-self.layer}) is past the {layers} layers of "
                f"{type(self.model).__name__}"
            )
        if self.rows_per_call is not None and self.rows_per_call < 1:
            raise InvalidArgumentError(
                f"rows_per_call must be at least 1, got {self.rows_per_call}"
            )

    @classmethod
    def clip(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        clip_skip: int = 1,
        pooled: bool = False,
        rows_per_call: int | None = None,
        share_prefixes: bool | None = None,
    ) -> TextEncoder:
        """SD 1.x/2.x CLIP with A1111's clip skip (1 = last layer; N: hidden state −N + final LN).

        Args:
            model: the CLIP text model.
            tokenizer: its tokenizer.
            clip_skip: A1111's "Clip skip" (diffusers' ``clip_skip=k`` is ``k + 1`` here).
            pooled: also return the pooled vector.
            rows_per_call: at most this many rows per forward pass (``None``: all at once).
            share_prefixes: start masked and substituted rows from their chunk's cached prefix
                (``None``: where it pays; see the class).

        Returns:
            The encoder.
        """
        if clip_skip < 1:
            raise InvalidArgumentError(f"clip_skip counts from 1 (the last layer), got {clip_skip}")
        return cls(
            model,
            tokenizer,
            layer=-clip_skip,
            final_layer_norm=True,
            pooled=pooled,
            rows_per_call=rows_per_call,
            share_prefixes=share_prefixes,
        )

    @classmethod
    def sdxl(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        clip_skip: int = 1,
        pooled: bool = False,
        rows_per_call: int | None = None,
        share_prefixes: bool | None = None,
    ) -> TextEncoder:
        """An SDXL tower: hidden state ``-(clip_skip + 1)`` without the final LN, as diffusers does.

        Args:
            model: ``text_encoder`` (CLIP-L) or ``text_encoder_2`` (OpenCLIP-G, with projection).
            tokenizer: its tokenizer (``tokenizer_2`` pads with ``!``).
            clip_skip: 1 is diffusers' default (the penultimate layer).
            pooled: ``True`` for ``text_encoder_2``, whose projected pooled vector SDXL uses.
            rows_per_call: at most this many rows per forward pass (``None``: all at once).
            share_prefixes: start masked and substituted rows from their chunk's cached prefix
                (``None``: where it pays; see the class).

        Returns:
            The encoder.
        """
        if clip_skip < 1:
            raise InvalidArgumentError(f"clip_skip counts from 1, got {clip_skip}")
        return cls(
            model,
            tokenizer,
            layer=-(clip_skip + 1),
            final_layer_norm=False,
            pooled=pooled,
            rows_per_call=rows_per_call,
            share_prefixes=share_prefixes,
        )

    @classmethod
    def t5(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        rows_per_call: int | None = None,
        chunked: bool = False,
        mask_padding: bool = False,
        zero_padding: bool = False,
        clean: str = "",
    ) -> TextEncoder:
        """A T5 (or umT5) encoder: windows of ``max_length`` tokens (SD3: 256, Flux: 512), EOS once.

        With a fast tokenizer the text is tokenised whole and spans are mapped to tokens through
        its ``offset_mapping`` (``Layout.joined``); a slow one tokenises span by span.

        Args:
            model: a ``T5EncoderModel`` or ``UMT5EncoderModel``.
            tokenizer: its tokenizer.
            max_length: window length; defaults to the tokenizer's ``model_max_length``.
            rows_per_call: at most this many rows per forward pass (``None``: all at once).
            chunked: cut long text into several windows (``BREAK`` starts one) instead of
                truncating it.
            mask_padding: hide the padding from the attention (Chroma, PixArt, Wan).
            zero_padding: zero the outputs at the padding (Wan).
            clean: the pipeline's text clean-up (``promptweights.tokens.CLEANERS``).

        Returns:
            The encoder.
        """
        joined = bool(getattr(tokenizer, "is_fast", False))
        layout = layout_for(
            tokenizer, length=max_length, chunked=chunked, joined=joined, clean=clean
        )
        return cls(
            model,
            tokenizer,
            layer=-1,
            final_layer_norm=False,
            layout=layout,
            rows_per_call=rows_per_call,
            mask_padding=mask_padding,
            zero_padding=zero_padding,
        )

    @classmethod
    def llm(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        template: tuple[str, str],
        max_length: int,
        layers: Sequence[int] = (-1,),
        trim: bool = True,
        drop: int = 0,
        keep: int | None = None,
        specials: bool = False,
        rows_per_call: int | None = None,
        pad_left: bool = False,
        clean: str = "",
    ) -> TextEncoder:
        """A decoder LLM text encoder (Qwen2.5-VL, Qwen3, Mistral, Llama, Gemma…) with its template.

        The user's text goes between ``template[0]`` and ``template[1]``; the whole is tokenised
        as the pipeline tokenises it (a fast tokenizer: spans reach tokens through
        ``offset_mapping``), cut at ``max_length`` and padded with the tokenizer's pad id, which
        the attention never sees. Rows derived from a row (a span hidden from the attention
        mask) run from the row's keys and values up to the span (the model's KV cache).

        Args:
            model: the text model (a ``…ForCausalLM``/``…ForConditionalGeneration`` or its base
                model), run through its own forward (offload hooks included); a language-model
                head computes one position's logits, never read.
            tokenizer: its fast tokenizer.
            template: the text before and after the user's text.
            max_length: the pipeline's truncation length (template included).
            layers: the hidden states read, concatenated on the channels (``hidden_states``
                indices).
            trim: run each row on its tokens only (``False``: the whole padded window).
            drop: template tokens the pipeline drops from the front (see ``Layout``).
            keep: positions the pipeline keeps after them (see ``Layout``).
            specials: tokenise with the tokenizer's own special tokens.
            rows_per_call: at most this many rows per forward pass (``None``: all at once).
            pad_left: pad on the left, as a tokenizer with ``padding_side="left"`` does (the
                whole window runs: ``trim`` is for right padding only).
            clean: the pipeline's text clean-up (``promptweights.tokens.CLEANERS``).

        Returns:
            The encoder.
        """
        layout = layout_for(
            tokenizer,
            length=max_length,
            template=template,
            drop=drop,
            keep=keep,
            specials=specials,
            clean=clean,
        )
        layout = replace(layout, pad_left=pad_left)
        return cls(
            model,
            tokenizer,
            layer=-1,
            final_layer_norm=False,
            layout=layout,
            rows_per_call=rows_per_call,
            mask_padding=True,
            layers=tuple(layers),
            trim=trim,
        )

    @classmethod
    def chatglm(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int = 256,
        layer: int = -2,
        pooled: bool = True,
        rows_per_call: int | None = None,
    ) -> TextEncoder:
        """ChatGLM3 as Kolors runs it: ``[gMASK] sop`` and the text in one window of
        ``max_length`` tokens, padded on the left (masked), ``hidden_states[layer]``, and the
        pooled vector from the last layer's last position.

        The tokenizer is diffusers' slow SentencePiece ``ChatGLMTokenizer``: the text is
        tokenised whole and spans reach its tokens through its pieces aligned with the text
        (:mod:`promptweights._offsets`); the two prefix tokens are never weighted.

        Args:
            model: diffusers' ``ChatGLMModel``.
            tokenizer: its ``ChatGLMTokenizer``.
            max_length: the window (Kolors' ``max_sequence_length``, 256).
            layer: the hidden state read (Kolors: the penultimate).
            pooled: also return the pooled vector.
            rows_per_call: at most this many rows per forward pass (``None``: all at once).

        Returns:
            The encoder.
        """
        prefix = [int(i) for i in tokenizer.build_inputs_with_special_tokens([])]
        layout = layout_for(tokenizer, length=max_length, chunked=False, joined=True)
        layout = replace(layout, bos=None, eos=None, prefix=tuple(prefix), pad_left=True)
        return cls(
            model,
            tokenizer,
            layer=layer,
            final_layer_norm=False,
            pooled=pooled,
            layout=layout,
            rows_per_call=rows_per_call,
            share_prefixes=False,
            mask_padding=True,
        )

    @property
    def is_llm(self) -> bool:
        """Whether this is a decoder LLM with a template (:meth:`llm`)."""
        return self.window.template is not None

    @property
    def window(self) -> Layout:
        """The window layout (always set after construction)."""
        assert self.layout is not None
        return self.layout

    @property
    def device(self) -> torch.device:
        """Where the model runs: its device, or the execution device of accelerate's hooks.

        Under ``enable_model_cpu_offload``, ``enable_sequential_cpu_offload`` or
        ``accelerate.cpu_offload`` the weights rest on the CPU (or ``meta``) between calls, and
        the hooks move them, and the inputs, to the execution device for each forward.
        """
        return execution_device(self.model)

    @property
    def dtype(self) -> torch.dtype:
        """The model's dtype."""
        dtype: torch.dtype = self.model.dtype
        return dtype

    def empty_ids(self) -> tuple[int, ...]:
        """The ids of the empty prompt's window: ``[BOS, EOS, PAD…]``; on a templated layout
        (a decoder LLM) the template around an empty text, as the pipeline encodes ``""`` (the
        image's placeholders included on a vision-language template, whose features every
        whole row is given)."""
        if self.window.template is None:
            return empty_chunk(self.window).ids
        if self._empty_ids is None:
            self._empty_ids = tokenize(self.tokenizer, (), layout=self.window).chunks[0].ids
        return self._empty_ids

    @property
    def mask_token(self) -> int:
        """The token ADV substitutes for masked words: ``+`` (id 266 in CLIP's vocabulary)."""
        if self._mask_token is None:
            ids = self.tokenizer(["+"], add_special_tokens=False)["input_ids"][0]
            self._mask_token = int(ids[0]) if ids else self.window.pad
        return self._mask_token

    def cache_key(self) -> tuple[object, ...]:
        """What the cached empty-prompt encoding depends on besides the model and its weights."""
        exact = self.rows_per_call == 1
        return (self.window, self.layer, self.final_layer_norm, self.device, self.dtype), (
            self.pooled,
            exact,
            self.mask_padding,
            self.zero_padding,
            self.layers,
            self.trim,
        )

    def cached_empty(self) -> tuple[Tensor, Tensor | None] | None:
        """The cached encoding of the empty window and its pooled vector, if still valid."""
        if self.inputs is not None or self.companions is not None:
            return None
        try:
            entries = _EMPTY.get(self.model)
        except TypeError:
            return None
        entry = None if entries is None else entries.get(self.cache_key())
        if entry is None or not entry.matches(self.model):
            return None
        return entry.z, entry.pooled

    def store_empty(self, z: Tensor, pooled: Tensor | None) -> None:
        """Cache the encoding of the empty window for this model's current weights."""
        if self.inputs is not None or self.companions is not None:
            return
        try:
            entries = _EMPTY.setdefault(self.model, {})
        except TypeError:  # a model that cannot be weakly referenced is not cached
            return
        entries[self.cache_key()] = _CacheEntry.of(self.model, z, pooled)

    def clear_cache(self) -> None:
        """Forget every cached empty-prompt encoding of this model (see the module docstring)."""
        forget(self.model)

    def encode(
        self, ids: Tensor, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Run the tower on a batch of rows: once, or in slices of ``rows_per_call``.

        Args:
            ids: int64 ``(N, T)`` token ids.
            attention_mask: ``(N, T)`` with 0 at positions to hide, or ``None``.

        Returns:
            The hidden states ``(N, T, D)`` and, when ``pooled``, the pooled vectors ``(N, P)``;
            both in the model's dtype.
        """
        step = self.rows_per_call
        if step is None or ids.shape[0] <= step:
            return self._forward(ids, attention_mask)
        parts = [
            self._forward(
                ids[i : i + step], None if attention_mask is None else attention_mask[i : i + step]
            )
            for i in range(0, ids.shape[0], step)
        ]
        z = torch.cat([part[0] for part in parts])
        pooled = [part[1] for part in parts if part[1] is not None]
        return z, torch.cat(pooled) if pooled else None

    def shared_prefixes(
        self, ids: Tensor, attention_mask: Tensor | None, parents: Sequence[int | None]
    ) -> list[tuple[int, int] | None]:
        """For rows derived from other rows, how much of the parent each one can start from.

        Args:
            ids: int64 ``(N, T)`` token ids.
            attention_mask: ``(N, T)`` with 0 at positions to hide, or ``None``.
            parents: per row, the row it was derived from (``None``: it has none). Only a row with
                no parent of its own can be a parent.

        Returns:
            Per row, ``(parent, p)`` where the row equals its parent (ids and mask) at positions
            ``0…p−1`` with ``1 ≤ p < T`` (and, with ``pooled``, ``p`` at most the pooled position),
            else ``None``; ``None`` everywhere on a tower that is not a causal CLIP tower, or where
            ``share_prefixes`` says it does not pay.
        """
        n, t = ids.shape
        out: list[tuple[int, int] | None] = [None] * n
        if len(parents) != n:
            raise InvalidArgumentError(f"parents has {len(parents)} entries for {n} rows")
        pairs = [
            (i, j)
            for i, j in enumerate(parents)
            if j is not None and j != i and 0 <= j < n and parents[j] is None
        ]
        tower = None
        if pairs and self.share_prefixes is not False:
            tower = _decoder(self.model) if self.is_llm else self._causal_tower()
        if tower is None:
            return out
        child = torch.tensor([i for i, _ in pairs])
        parent = torch.tensor([j for _, j in pairs])
        ids = ids.cpu()
        same = ids[child] == ids[parent]
        if attention_mask is not None:
            visible = attention_mask.cpu() != 0
            same &= visible[child] == visible[parent]
        # The leading run of equal positions: cumulative product of the match flags, summed.
        shared = same.long().cumprod(dim=1).sum(dim=1).clamp(max=t - 1)
        if self.pooled:
            shared = torch.minimum(shared, _pool_positions(tower, ids[child]))
        worth = self._worth(shared, t)
        if worth is None:
            return out
        shared = worth
        for (i, j), p in zip(pairs, shared.tolist(), strict=True):
            if p >= 1:
                out[i] = (j, int(p))
        return out

    def _worth(self, shared: Tensor, t: int) -> Tensor | None:
        """The shared lengths worth starting from (0 where not), ``None`` when none is, as
        ``share_prefixes`` decides (see the class)."""
        if self.share_prefixes is not None:
            return shared
        if self.device.type != "cpu":
            # On an accelerator a pass streams every weight once, whatever its length: one
            # batched pass beats a pass per derived row for prompt-sized texts.
            return None
        if self.is_llm:
            # A decoder LLM on the CPU: a pass costs its tokens' arithmetic, and templates share
            # long prefixes, so every derived row starts from the cache.
            return shared
        if self.rows_per_call == 1:
            # One row per pass: each suffix pays for itself when it skips half a window, and
            # whether a row starts from its prefix never depends on the other rows of the call
            # (so the exact mode gives a row the same bits in any batch).
            return torch.where(shared >= t // 2, shared, 0)
        return None if int(shared.sum()) < t // 2 else shared

    def encode_from_prefixes(
        self,
        ids: Tensor,
        attention_mask: Tensor | None,
        prefixes: Sequence[tuple[int, int] | None],
    ) -> tuple[Tensor, Tensor | None]:
        """Like :meth:`encode`, starting some rows from another row's cached prefix.

        The rows without a prefix run through :meth:`encode` (one pass, or ``rows_per_call``
        slices) while forward hooks keep their keys and values where another row reads them; then
        the other rows' suffixes run in a second pass (sliced by ``rows_per_call`` too). Equal to
        :meth:`encode` of all rows up to float rounding.

        Args:
            ids: int64 ``(N, T)`` token ids.
            attention_mask: ``(N, T)`` with 0 at positions to hide, or ``None``.
            prefixes: per row, ``None`` (run in full) or ``(parent, p)`` as
                :meth:`shared_prefixes` returns: the row's first ``p`` positions are the parent's.

        Returns:
            As :meth:`encode`.

        Raises:
            ValueError: ``prefixes`` that the rows do not share, or on a tower that is not CLIP's.
        """
        if all(p is None for p in prefixes):
            return self.encode(ids, attention_mask)
        if self.is_llm:
            _check_prefixes(ids, attention_mask, prefixes)
            return self._llm_from_prefixes(ids, attention_mask, prefixes), None
        tower = self._causal_tower()
        if tower is None:
            raise InvalidArgumentError(
                "only a CLIP text tower (causal) can start rows from a shared prefix"
            )
        _check_prefixes(ids, attention_mask, prefixes)
        n = ids.shape[0]
        roots = [i for i, p in enumerate(prefixes) if p is None]
        # Suffixes of similar length side by side (fewer padded queries with rows_per_call).
        children = sorted(
            (i for i, p in enumerate(prefixes) if p is not None), key=_start(prefixes)
        )
        keep: dict[int, int] = {}
        for i in children:
            j, p = _known(prefixes[i])
            keep[j] = max(keep.get(j, 0), p)
        parents = sorted(keep)  # the order of the key/value cache: the roots' order
        where = {j: r for r, j in enumerate(roots)}
        selected, depth = self._depths(tower)
        capture = _Capture(tower, depth, max(keep.values()), [where[j] for j in parents])
        root_mask = None if attention_mask is None else attention_mask[roots]
        with capture:
            z_root, pooled_root = self.encode(ids[roots], root_mask)
        cache = capture.cache(len(roots))

        with torch.no_grad():
            z, pooled = _scatter(roots, z_root, pooled_root, n)
            if cache is None:
                # The hooks saw something else than one pass over the roots (an encode that does
                # not run the tower's own modules): run the other rows in full.
                child_mask = None if attention_mask is None else attention_mask[children]
                z_rest, pooled_rest = self.encode(ids[children], child_mask)
                _scatter(children, z_rest, pooled_rest, n, (z, pooled))
                return z, pooled
            keys, values = cache
            bank = {j: b for b, j in enumerate(parents)}
            prefix_z = z_root[torch.tensor([where[j] for j in parents], device=z.device)]
            visible = (
                torch.ones(ids.shape, dtype=torch.bool)
                if attention_mask is None
                else attention_mask.cpu() != 0
            )
            step = self.rows_per_call or len(children)
            for k in range(0, len(children), step):
                part = children[k : k + step]
                suffix = _Suffix(
                    tower,
                    ids[part].to(z.device),
                    visible[part].to(z.device),
                    [_known(prefixes[i])[1] for i in part],
                    [bank[_known(prefixes[i])[0]] for i in part],
                )
                z_part, last = suffix.run(keys, values, prefix_z, selected, depth, self._norm)
                vectors = None
                if pooled is not None:
                    rows = suffix.rows_at(_pool_positions(tower, ids[part]))
                    vectors = tower.final_layer_norm(last.index_select(0, rows))
                    if getattr(self.model, "text_projection", None) is not None:
                        vectors = self._project(vectors)
                _scatter(part, z_part, vectors, n, (z, pooled))
        return z, pooled

    def calls_for(self, rows: int, prefixed: int = 0, parents: int = 0) -> int:
        """How many forward passes run for ``rows`` rows, ``prefixed`` of them from a prefix.

        :meth:`encode` runs ``rows`` rows; :meth:`encode_from_prefixes` runs the other rows first,
        then the ``prefixed`` rows' suffixes in a second pass. On a decoder LLM, each of the
        ``parents`` rows that others start from runs on its own (keeping its KV cache), and each
        suffix runs on its own.
        """
        if rows == 0:
            return 0
        if self.is_llm and prefixed:
            rest = rows - prefixed - parents
            step = self.rows_per_call or max(rest, 1)
            return -(-rest // step) + parents + prefixed
        if self.rows_per_call is None:
            return 2 if prefixed else 1
        step = self.rows_per_call
        return -(-(rows - prefixed) // step) + -(-prefixed // step)

    def _forward(self, ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        text = None
        if self.mask_padding or self.zero_padding:
            text = text_mask(ids, self.window.pad, left=self.window.pad_left)
            if self.mask_padding:
                attention_mask = text if attention_mask is None else attention_mask * text
        if self.is_llm:
            return self._run_llm(ids, attention_mask), None
        z, pooled = self._run_tower(ids, attention_mask)
        if self.zero_padding and text is not None:
            shown = text.to(z.device).unsqueeze(-1) != 0
            z = torch.where(shown, z, torch.zeros((), dtype=z.dtype, device=z.device))
        return z, pooled

    def _run_tower(
        self, ids: Tensor, attention_mask: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        if _is_chatglm(self.model):
            return self._run_chatglm(ids, attention_mask)
        hidden = self.layer != -1
        projection = getattr(self.model, "text_projection", None) if self.pooled else None
        # A projection model is run through its tower so that the projection can be applied one
        # row at a time: a batched matmul of a few rows may round differently from diffusers'
        # one-text calls, and the pooled vector must be bit-identical.
        tower = self.model if projection is None else self.model.text_model
        with torch.no_grad():
            out = tower(
                input_ids=ids.to(self.device),
                attention_mask=None if attention_mask is None else attention_mask.to(self.device),
                output_hidden_states=hidden,
                return_dict=True,
            )
            z: Tensor = out.hidden_states[self.layer] if hidden else out.last_hidden_state
            if hidden and self.final_layer_norm:
                # transformers 5 put final_layer_norm on CLIPTextModel itself, 4.x on .text_model.
                norm_owner = getattr(tower, "text_model", tower)
                z = norm_owner.final_layer_norm(z)
            pooled: Tensor | None = None
            if projection is not None:
                pooled = self._project(out.pooler_output)
            elif self.pooled:
                pooled = out.pooler_output
        return z, pooled

    def _states(self, out: Any) -> Tensor:
        """The hidden states a decoder LLM's pipeline reads, concatenated on the channels."""
        layers = self.layers or (self.layer,)
        states = [out.hidden_states[k] for k in layers]
        return states[0] if len(states) == 1 else torch.cat(states, dim=-1)

    def _run_llm(self, ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """A decoder LLM on rows of a templated window (``attention_mask`` already holds the
        padding): on the text only (``trim``, outputs zero after it) or on the whole window."""
        if self.companions is not None:
            return self._run_with_companions(ids, attention_mask)
        return self._run_rows(ids, attention_mask)

    def _run_with_companions(self, ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Each row in a batch with :attr:`companions`, at their index (see there)."""
        assert self.companions is not None
        rows, at = self.companions
        text = text_mask(rows, self.window.pad, left=self.window.pad_left)
        out = []
        for i in range(ids.shape[0]):
            mask = None if attention_mask is None else attention_mask[i : i + 1]
            row_mask = text_mask(ids[i : i + 1], self.window.pad) if mask is None else mask
            batch = torch.cat([rows[:at], ids[i : i + 1], rows[at:]])
            masks = torch.cat([text[:at], row_mask.to(text.dtype), text[at:]])
            z = self._run_rows(batch, masks)
            self.companion_states = torch.cat([z[:at], z[at + 1 :]])
            out.append(z[at : at + 1])
        return torch.cat(out)

    def _run_rows(self, ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        t = ids.shape[1]
        end = t
        if self.trim and not self.window.pad_left:
            end = max(1, int(text_mask(ids, self.window.pad).sum(dim=1).max()))
        mask = None if attention_mask is None else attention_mask[:, :end].to(self.device)
        extra: dict[str, Any] = {"output_attentions": True} if self.attentions else {}
        if self.inputs is not None:
            extra |= self.inputs(ids.shape[0])
        with torch.no_grad():
            out = _decoder(self.model)(
                input_ids=ids[:, :end].to(self.device),
                attention_mask=mask,
                output_hidden_states=True,
                use_cache=False,
                return_dict=True,
                **extra,
                **_head_options(self.model),
            )
            z = self._states(out)
            if end < t:
                z = torch.cat([z, z.new_zeros(z.shape[0], t - end, z.shape[2])], dim=1)
        return z

    def _llm_from_prefixes(
        self,
        ids: Tensor,
        attention_mask: Tensor | None,
        prefixes: Sequence[tuple[int, int] | None],
    ) -> Tensor:
        """:meth:`encode_from_prefixes` on a decoder LLM: every row that others start from runs on
        its own, keeping the model's KV cache; each row derived from it runs only its suffix from
        that cache (cut to their shared prefix); the other rows run as usual."""
        n, t = ids.shape
        children: dict[int, list[int]] = {}
        for i, prefix in enumerate(prefixes):
            if prefix is not None:
                children.setdefault(prefix[0], []).append(i)
        rest = [i for i, p in enumerate(prefixes) if p is None and i not in children]
        left = self.window.pad_left
        text = text_mask(ids, self.window.pad, left=left)
        shown = text if attention_mask is None else attention_mask * text
        ends = text.sum(dim=1).tolist() if self.trim and not left else [t] * n
        z = None
        if rest:
            z_rest, _ = self.encode(
                ids[rest], None if attention_mask is None else attention_mask[rest]
            )
            z, _ = _scatter(rest, z_rest, None, n)
        with torch.no_grad(), _fresh_rope(self.model):
            for j, rows in children.items():
                end = max(int(ends[j]), 1)
                state, cache = self._llm_pass(ids[j : j + 1, :end], shown[j : j + 1, :end])
                if z is None:
                    z = state.new_zeros(n, t, state.shape[-1])
                z[j] = 0  # rows scattered into new_empty: the positions past the text too
                z[j, :end] = state[0].to(z.dtype)
                for i in rows:
                    p = _known(prefixes[i])[1]
                    row_end = max(int(ends[i]), p + 1)
                    state, _ = self._llm_pass(
                        ids[i : i + 1, p:row_end], shown[i : i + 1, :row_end], _cut(cache, p, end)
                    )
                    z[i] = z[j]
                    z[i, p:row_end] = state[0].to(z.dtype)
                    if self.trim and not left:
                        z[i, row_end:] = 0
        assert z is not None
        return z

    def _llm_pass(self, ids: Tensor, mask: Tensor, cache: Any = None) -> tuple[Tensor, Any]:
        """One row of a decoder LLM through its forward, keeping the KV cache; with ``cache``, the
        row continues the cached positions (``mask`` covers them too)."""
        decoder = _decoder(self.model)
        given = {} if cache is None else {_cache_argument(decoder): cache}
        if self.attentions:
            given["output_attentions"] = True
        if cache is None and self.inputs is not None:
            given |= self.inputs(ids.shape[0])
        out = decoder(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            use_cache=True,
            output_hidden_states=True,
            return_dict=True,
            **given,
            **_head_options(decoder),
        )
        return self._states(out), _cache_of(out)

    def _run_chatglm(
        self, ids: Tensor, attention_mask: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """ChatGLM3 (diffusers' ``ChatGLMModel``, Kolors) as Kolors' ``encode_prompt`` runs it.

        Positions count from the first token after the left padding (the tokenizer's
        ``position_ids``: 0 on the padding), so a row hiding a span from ``attention_mask`` keeps
        every token's position. Its hidden states are ``(T, N, D)``: the conditioning is
        ``hidden_states[layer]`` turned to ``(N, T, D)``; the pooled vector is the last layer's
        state (before the final norm) at the last position.
        """
        device = self.device
        text = text_mask(ids, self.window.pad, left=self.window.pad_left)
        positions = (text.cumsum(dim=-1) - 1).clamp(min=0)
        with torch.no_grad():
            out = self.model(
                input_ids=ids.to(device),
                attention_mask=None if attention_mask is None else attention_mask.to(device),
                position_ids=positions.to(device),
                output_hidden_states=True,
                return_dict=True,
            )
            z = out.hidden_states[self.layer].permute(1, 0, 2).clone()
            pooled = out.hidden_states[-1][-1, :, :].clone() if self.pooled else None
        return z, pooled

    def _project(self, rows: Tensor) -> Tensor:
        projection = self.model.text_projection
        return torch.cat([projection(rows[i : i + 1]) for i in range(rows.shape[0])])

    def _causal_tower(self) -> Any | None:
        """The CLIP text transformer whose modules a suffix pass runs, or ``None``."""
        tower = getattr(self.model, "text_model", self.model)
        if not any(c.__name__ in _CLIP_TOWERS for c in type(tower).__mro__):
            return None
        try:
            layers = list(tower.encoder.layers)
            embeddings = tower.embeddings
            parts = [tower.final_layer_norm, embeddings.token_embedding]
            parts.append(embeddings.position_embedding)
            for layer in layers:
                attn = layer.self_attn
                parts += [layer.layer_norm1, layer.layer_norm2, layer.mlp, attn.num_heads]
                parts += [attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj]
        except AttributeError:
            return None
        if tower.training or not -len(layers) - 1 <= self.layer <= -1:
            return None
        return tower

    def _depths(self, tower: Any) -> tuple[int, int]:
        """Layers to run for the conditioning hidden state, and in all (the pooled needs all)."""
        count = len(tower.encoder.layers)
        selected = count + 1 + self.layer
        return selected, count if self.pooled else selected

    @property
    def _norm(self) -> bool:
        return self.final_layer_norm or self.layer == -1


@contextmanager
def _fresh_rope(model: Any) -> Iterator[None]:
    """Run a multimodal-rope model (Qwen2.5-VL) without the ``rope_deltas`` its last
    ``generate`` left on it (Qwen-Image Layered's captioning calls it): with a KV cache its
    forward would shift the suffix's positions by them. They are put back afterwards."""
    modules = getattr(model, "modules", None)
    every = list(modules()) if callable(modules) else []
    held = [m for m in every if getattr(m, "rope_deltas", None) is not None]
    saved = [m.rope_deltas for m in held]
    for module in held:
        module.rope_deltas = None
    try:
        yield
    finally:
        for module, deltas in zip(held, saved, strict=True):
            module.rope_deltas = deltas


def _decoder(model: Any) -> Any:
    """What runs a decoder LLM: the model itself, through its own forward (so that accelerate's
    offload hooks on it move its weights), its language-model head asked for one position only
    (:func:`_head_options`)."""
    return model


def _head_options(model: Any) -> dict[str, Any]:
    """``logits_to_keep=1`` for a model with a language-model head that takes it: the hidden
    states are the decoder's either way, and the head's logits are never read."""
    import inspect

    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}


def _cut(cache: Any, keep: int, length: int) -> Any:
    """A copy of a KV cache of ``length`` positions holding the first ``keep`` only."""
    import copy

    own = copy.deepcopy(cache)
    if keep < length:
        own.crop(keep - length)  # a negative count: the tokens removed (transformers 4 and 5)
    return own


def _cache_argument(decoder: Any) -> str:
    """The keyword a decoder takes its KV cache by: ``cache`` (transformers 5.2x), else
    ``past_key_values``."""
    import inspect

    try:
        parameters = inspect.signature(decoder.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


def _cache_of(out: Any) -> Any:
    """The KV cache a decoder's output holds."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _is_chatglm(model: Any) -> bool:
    """Whether ``model`` is diffusers' ChatGLM3 (Kolors' text encoder), run its own way."""
    return any(c.__name__ == "ChatGLMModel" for c in type(model).__mro__)


def execution_device(model: Any) -> torch.device:
    """The device a text model computes on, as diffusers' ``_execution_device`` finds it.

    Args:
        model: a text model, possibly with accelerate's offload hooks (``_hf_hook``).

    Returns:
        The first ``execution_device`` among the model's hooks when it has any, else its device.
    """
    if getattr(model, "_hf_hook", None) is not None and isinstance(model, torch.nn.Module):
        for module in model.modules():
            device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
            if device is not None:
                return torch.device(device)
    return torch.device(model.device)


def text_mask(ids: Tensor, pad: int, *, left: bool = False) -> Tensor:
    """The attention mask a tokenizer gives a padded row: 1 up to the last id that is not ``pad``
    (``left``: from the first one, for a row padded on the left).

    Args:
        ids: int64 ``(N, T)`` token ids.
        pad: the pad id.
        left: the padding is before the text (``padding_side="left"``).

    Returns:
        int64 ``(N, T)``: 1 on the text and its BOS/EOS, 0 on the padding.
    """
    shown = (ids != pad).long()
    if left:
        # Position j is text when some position at or before it is not padding.
        return shown.cummax(dim=-1).values
    # Position j is text when some position at or after it is not padding.
    return shown.flip(-1).cummax(dim=-1).values.flip(-1)


def forget(model: Any) -> None:
    """Drop every cached empty-prompt encoding of ``model`` (after an invisible weight change).

    Args:
        model: a text model that a :class:`TextEncoder` ran.
    """
    _EMPTY.pop(model, None)


@dataclass(frozen=True, eq=False)
class _CacheEntry:
    """A cached empty window, with the state of the weights it was encoded with."""

    z: Tensor
    pooled: Tensor | None
    params: tuple[weakref.ref[Tensor], ...]
    versions: tuple[tuple[int, int], ...]
    adapters: tuple[object, ...]

    @classmethod
    def of(cls, model: Any, z: Tensor, pooled: Tensor | None) -> _CacheEntry:
        tensors = _tensors(model)
        return cls(
            z,
            pooled,
            tuple(weakref.ref(t) for t in tensors),
            _versions(tensors),
            _adapter_state(model),
        )

    def matches(self, model: Any) -> bool:
        """Whether ``model`` still has the weights this entry was encoded with."""
        tensors = _tensors(model)
        if len(tensors) != len(self.params):
            return False
        if any(ref() is not t for ref, t in zip(self.params, tensors, strict=True)):
            return False
        return _versions(tensors) == self.versions and _adapter_state(model) == self.adapters


def _tensors(model: Any) -> list[Tensor]:
    """Every parameter and buffer of a model (an object without them has none)."""
    if not isinstance(model, torch.nn.Module):
        return []
    return [*model.parameters(), *model.buffers()]


def _versions(tensors: Sequence[Tensor]) -> tuple[tuple[int, int], ...]:
    # _version counts in-place writes (not those through .data); the storage pointer catches a
    # replaced .data.
    return tuple((_version(t), t.data_ptr()) for t in tensors)


def _version(tensor: Tensor) -> int:
    try:
        return int(tensor._version)
    except RuntimeError:  # an inference tensor has no version counter: it cannot change in place
        return -1


def _adapter_state(model: Any) -> tuple[object, ...]:
    """peft's per-layer adapter state: scales live in plain attributes, not in parameters."""
    if not isinstance(model, torch.nn.Module):
        return ()
    state: list[object] = []
    for name, module in model.named_modules():
        scaling = getattr(module, "scaling", None)
        if not isinstance(scaling, dict):
            continue
        state.append(
            (
                name,
                tuple(sorted(scaling.items())),
                tuple(getattr(module, "active_adapters", ()) or ()),
                bool(getattr(module, "disable_adapters", False)),
                tuple(getattr(module, "merged_adapters", ()) or ()),
            )
        )
    return tuple(state)


# The empty-window cache: text model (weakly) -> cache key -> entry. Entries hold tensors and weak
# references only, so a cached model can still be collected.
_EMPTY: weakref.WeakKeyDictionary[Any, dict[tuple[object, ...], _CacheEntry]] = (
    weakref.WeakKeyDictionary()
)


# transformers 5's CLIPTextModel is the tower itself; 4.x's wraps a CLIPTextTransformer.
_CLIP_TOWERS = frozenset({"CLIPTextModel", "CLIPTextTransformer"})


def _known(prefix: tuple[int, int] | None) -> tuple[int, int]:
    assert prefix is not None
    return prefix


def _start(prefixes: Sequence[tuple[int, int] | None]) -> Callable[[int], int]:
    return lambda row: _known(prefixes[row])[1]


def _check_prefixes(
    ids: Tensor, attention_mask: Tensor | None, prefixes: Sequence[tuple[int, int] | None]
) -> None:
    n, t = ids.shape
    if len(prefixes) != n:
        raise InvalidArgumentError(f"prefixes has {len(prefixes)} entries for {n} rows")
    for i, prefix in enumerate(prefixes):
        if prefix is None:
            continue
        j, p = prefix
        if not (0 <= j < n and prefixes[j] is None and 1 <= p < t):
            raise InvalidArgumentError(
                f"row {i}: prefix {prefix} needs a parent without one and 1 ≤ p < {t}"
            )
        same = bool((ids[i, :p] == ids[j, :p]).all())
        if attention_mask is not None:
            shown = attention_mask[[i, j], :p] != 0
            same = same and bool((shown[0] == shown[1]).all())
        if not same:
            raise InvalidArgumentError(
                f"row {i} does not share its first {p} positions with row {j}"
            )


def _scatter(
    rows: list[int],
    z: Tensor,
    pooled: Tensor | None,
    n: int,
    into: tuple[Tensor, Tensor | None] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Write ``z`` and ``pooled`` to rows ``rows`` of ``into`` (new ``n``-row tensors if none)."""
    if into is None:
        out_pooled = None if pooled is None else pooled.new_empty((n, pooled.shape[-1]))
        into = (z.new_empty((n, *z.shape[1:])), out_pooled)
    index = torch.tensor(rows, device=z.device)
    into[0].index_copy_(0, index, z)
    if into[1] is not None and pooled is not None:
        into[1].index_copy_(0, index.to(pooled.device), pooled)
    return into


def _pool_positions(tower: Any, ids: Tensor) -> Tensor:
    """Where the pooled vector is read, per row, as CLIPTextModel picks it."""
    eos = getattr(tower, "eos_token_id", getattr(tower.config, "eos_token_id", None))
    if eos is None:
        return torch.zeros(ids.shape[0], dtype=torch.long)  # nothing is shared before position 0
    if eos == 2:
        # Checkpoints from before transformers PR #24773: the highest id (the end token).
        return ids.argmax(dim=-1)
    return (ids == int(eos)).int().argmax(dim=-1)


class _Capture:
    """Forward hooks that keep some rows' keys and values (positions ``< span``) during a pass.

    Rows are counted as the projections see them, so the pass may run in slices or one row per
    call (``rows_per_call``, or an :meth:`TextEncoder.encode` overridden to do so).
    """

    def __init__(self, tower: Any, depth: int, span: int, rows: list[int]) -> None:
        self.modules = [
            module
            for layer in list(tower.encoder.layers)[:depth]
            for module in (layer.self_attn.k_proj, layer.self_attn.v_proj)
        ]
        self.span = span
        self.rows = rows
        self.seen = [0] * len(self.modules)
        self.kept: list[list[Tensor]] = [[] for _ in self.modules]
        self.handles: list[Any] = []

    def __enter__(self) -> _Capture:
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.modules)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _hook(self, number: int) -> Callable[[Any, Any, Tensor], None]:
        def hook(module: Any, args: Any, output: Tensor) -> None:
            first = self.seen[number]
            self.seen[number] += output.shape[0]
            inside = [r - first for r in self.rows if first <= r < self.seen[number]]
            if inside:
                index = torch.tensor(inside, device=output.device)
                self.kept[number].append(output[:, : self.span].index_select(0, index))

        return hook

    def cache(self, rows: int) -> tuple[list[Tensor], list[Tensor]] | None:
        """Per layer, the kept keys and values ``(P·span, D)`` in row order; ``None`` unless the
        hooks saw exactly one pass over ``rows`` rows."""
        if any(seen != rows for seen in self.seen):
            return None
        flat = []
        for parts in self.kept:
            kept = torch.cat(parts)
            if kept.shape[0] != len(self.rows):
                return None
            flat.append(kept.reshape(-1, kept.shape[-1]))
        return flat[0::2], flat[1::2]


class _Suffix:
    """Positions ``start…T−1`` of rows whose earlier positions are another row's (causal CLIP).

    The suffixes of all rows are packed into one ``(N, D)`` matrix for the per-token modules (layer
    norms, projections, MLP); attention lays them out again as ``(C, H, S, hd)`` queries, ``S`` the
    longest suffix, against ``(C, H, T, hd)`` keys and values: the parent's cached ones before
    ``start``, the row's own after.
    """

    def __init__(
        self, tower: Any, ids: Tensor, visible: Tensor, starts: list[int], banks: list[int]
    ) -> None:
        self.tower = tower
        c, t = ids.shape
        device = ids.device
        self.t = t
        lengths = torch.tensor([t - s for s in starts], device=device)
        start = torch.tensor(starts, device=device).unsqueeze(1)
        bank = torch.tensor(banks, device=device).unsqueeze(1)
        offset = (torch.cumsum(lengths, 0) - lengths).unsqueeze(1)
        self.offset = offset.squeeze(1)
        self.start = start.squeeze(1)
        self.n = int(lengths.sum())
        self.s = int(lengths.max())
        positions = torch.arange(t, device=device).unsqueeze(0)
        tail = positions >= start
        self.tokens = ids[tail]  # packed, row-major: row by row, positions in order
        self.positions = positions.expand(c, t)[tail]
        self.layout = (start, bank, offset, positions)
        query = torch.arange(self.s, device=device).unsqueeze(0)
        real = query < lengths.unsqueeze(1)
        self.q_index = torch.where(real, offset + query, self.n).reshape(-1)
        self.q_real = real.reshape(-1).nonzero().squeeze(1)
        absolute = (start + query).unsqueeze(-1)  # (C, S, 1)
        allowed = (positions.unsqueeze(0) <= absolute) & visible.unsqueeze(1)
        self.allowed = allowed.unsqueeze(1)  # (C, 1, S, T)
        self.c = c

    def _gather(self, span: int, banks: int) -> Tensor:
        """Index ``(C·T)`` into ``cat([parents' rows, packed suffixes])``: before a row's start,
        its parent's (bank ``b``, position ``j`` → ``b·span + j``); after, its own packed row."""
        start, bank, offset, positions = self.layout
        cached = bank * span + positions
        own = banks * span + offset + positions - start
        return torch.where(positions < start, cached, own).reshape(-1)

    def rows_at(self, positions: Tensor) -> Tensor:
        """Packed row of each row's position ``positions[c]`` (at or after its start)."""
        positions = positions.to(self.offset.device)
        return self.offset + positions - self.start

    def run(
        self,
        keys: list[Tensor],
        values: list[Tensor],
        prefix_z: Tensor,
        selected: int,
        depth: int,
        norm: bool,
    ) -> tuple[Tensor, Tensor]:
        """The rows' conditioning ``(C, T, D)`` and the packed state after ``depth`` layers.

        Args:
            keys: per layer, the parents' cached keys ``(P·span, D)``.
            values: the same for values.
            prefix_z: the parents' conditioning ``(P, T, D)``, copied before each row's start.
            selected: layers to run for the conditioning hidden state (``hidden_states[selected]``).
            depth: layers to run in all (≥ ``selected``).
            norm: apply the final layer norm to the selected hidden state.
        """
        tower = self.tower
        embeddings = tower.embeddings
        x = embeddings.token_embedding(self.tokens) + embeddings.position_embedding(self.positions)
        z = x
        banks, width = prefix_z.shape[0], x.shape[-1]
        span = keys[0].shape[0] // banks if keys else 0
        kv_index = self._gather(span, banks) if keys else None
        for number, layer in enumerate(list(tower.encoder.layers)[:depth]):
            assert kv_index is not None
            attn = layer.self_attn
            heads = int(attn.num_heads)
            head = width // heads
            h = layer.layer_norm1(x)
            q = attn.q_proj(h)
            k = torch.cat([keys[number], attn.k_proj(h)]).index_select(0, kv_index)
            v = torch.cat([values[number], attn.v_proj(h)]).index_select(0, kv_index)
            q = torch.cat([q, q.new_zeros(1, width)]).index_select(0, self.q_index)
            out = torch.nn.functional.scaled_dot_product_attention(
                q.view(self.c, self.s, heads, head).transpose(1, 2),
                k.view(self.c, self.t, heads, head).transpose(1, 2),
                v.view(self.c, self.t, heads, head).transpose(1, 2),
                attn_mask=self.allowed,
                scale=float(getattr(attn, "scale", head**-0.5)),
            )
            out = out.transpose(1, 2).reshape(self.c * self.s, width).index_select(0, self.q_real)
            x = x + attn.out_proj(out)
            x = x + layer.mlp(layer.layer_norm2(x))
            if number + 1 == selected:
                z = x
        if norm:
            z = tower.final_layer_norm(z)
        flat = torch.cat([prefix_z.reshape(-1, width), z]).index_select(
            0, self._gather(self.t, banks)
        )
        return flat.view(self.c, self.t, width), x
