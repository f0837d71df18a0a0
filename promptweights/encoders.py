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

It runs rows of token ids under ``torch.inference_mode()`` in the model's own dtype and device, and
caches the empty prompt's encoding (invalidate with :meth:`TextEncoder.clear_cache` after changing
the model's weights, e.g. loading a LoRA into the text encoder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from promptweights.tokens import Layout, layout_for

__all__ = ["TextEncoder"]


@dataclass(eq=False)
class TextEncoder:
    """A text tower, its tokenizer and the hidden state the pipeline conditions on.

    Attributes:
        model: a ``CLIPTextModel``, ``CLIPTextModelWithProjection`` or ``T5EncoderModel``.
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
    """

    model: Any
    tokenizer: Any
    layer: int = -1
    final_layer_norm: bool = True
    pooled: bool = False
    layout: Layout | None = None
    rows_per_call: int | None = None
    _empty: dict[tuple[object, ...], tuple[Tensor, Tensor | None]] = field(
        default_factory=dict, repr=False
    )
    _mask_token: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.layout is None:
            self.layout = layout_for(self.tokenizer)
        if self.layer >= 0:
            raise ValueError(f"layer counts from the end and must be negative, got {self.layer}")
        if self.rows_per_call is not None and self.rows_per_call < 1:
            raise ValueError(f"rows_per_call must be at least 1, got {self.rows_per_call}")

    @classmethod
    def clip(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        clip_skip: int = 1,
        pooled: bool = False,
        rows_per_call: int | None = None,
    ) -> TextEncoder:
        """SD 1.x/2.x CLIP with A1111's clip skip (1 = last layer; N: hidden state −N + final LN).

        Args:
            model: the CLIP text model.
            tokenizer: its tokenizer.
            clip_skip: A1111's "Clip skip" (diffusers' ``clip_skip=k`` is ``k + 1`` here).
            pooled: also return the pooled vector.
            rows_per_call: at most this many rows per forward pass (``None``: all at once).

        Returns:
            The encoder.
        """
        if clip_skip < 1:
            raise ValueError(f"clip_skip counts from 1 (the last layer), got {clip_skip}")
        return cls(
            model,
            tokenizer,
            layer=-clip_skip,
            final_layer_norm=True,
            pooled=pooled,
            rows_per_call=rows_per_call,
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
    ) -> TextEncoder:
        """An SDXL tower: hidden state ``-(clip_skip + 1)`` without the final LN, as diffusers does.

        Args:
            model: ``text_encoder`` (CLIP-L) or ``text_encoder_2`` (OpenCLIP-G, with projection).
            tokenizer: its tokenizer (``tokenizer_2`` pads with ``!``).
            clip_skip: 1 is diffusers' default (the penultimate layer).
            pooled: ``True`` for ``text_encoder_2``, whose projected pooled vector SDXL uses.
            rows_per_call: at most this many rows per forward pass (``None``: all at once).

        Returns:
            The encoder.
        """
        if clip_skip < 1:
            raise ValueError(f"clip_skip counts from 1, got {clip_skip}")
        return cls(
            model,
            tokenizer,
            layer=-(clip_skip + 1),
            final_layer_norm=False,
            pooled=pooled,
            rows_per_call=rows_per_call,
        )

    @classmethod
    def t5(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        rows_per_call: int | None = None,
    ) -> TextEncoder:
        """A T5 encoder: one window of ``max_length`` tokens (SD3: 256, Flux: 512), EOS once.

        Args:
            model: a ``T5EncoderModel``.
            tokenizer: its tokenizer.
            max_length: window length; defaults to the tokenizer's ``model_max_length``.
            rows_per_call: at most this many rows per forward pass (``None``: all at once).

        Returns:
            The encoder.
        """
        layout = layout_for(tokenizer, length=max_length, chunked=False)
        return cls(
            model,
            tokenizer,
            layer=-1,
            final_layer_norm=False,
            layout=layout,
            rows_per_call=rows_per_call,
        )

    @property
    def window(self) -> Layout:
        """The window layout (always set after construction)."""
        assert self.layout is not None
        return self.layout

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return torch.device(self.model.device)

    @property
    def dtype(self) -> torch.dtype:
        """The model's dtype."""
        dtype: torch.dtype = self.model.dtype
        return dtype

    @property
    def mask_token(self) -> int:
        """The token ADV substitutes for masked words: ``+`` (id 266 in CLIP's vocabulary)."""
        if self._mask_token is None:
            ids = self.tokenizer(["+"], add_special_tokens=False)["input_ids"][0]
            self._mask_token = int(ids[0]) if ids else self.window.pad
        return self._mask_token

    def cache_key(self) -> tuple[object, ...]:
        """What the cached empty-prompt encoding depends on besides the model weights."""
        return (self.window, self.layer, self.final_layer_norm, self.device, self.dtype)

    def cached_empty(self) -> tuple[Tensor, Tensor | None] | None:
        """The cached encoding of the empty window and its pooled vector, if any."""
        return self._empty.get(self.cache_key())

    def store_empty(self, z: Tensor, pooled: Tensor | None) -> None:
        """Cache the encoding of the empty window."""
        self._empty[self.cache_key()] = (z, pooled)

    def clear_cache(self) -> None:
        """Forget the cached empty-prompt encoding (call after changing the model's weights)."""
        self._empty.clear()

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

    def calls_for(self, rows: int) -> int:
        """How many forward passes :meth:`encode` runs for ``rows`` rows."""
        if rows == 0:
            return 0
        return 1 if self.rows_per_call is None else -(-rows // self.rows_per_call)

    def _forward(self, ids: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        hidden = self.layer != -1
        projection = getattr(self.model, "text_projection", None) if self.pooled else None
        # A projection model is run through its tower so that the projection can be applied one
        # row at a time: a batched matmul of a few rows may round differently from diffusers'
        # one-text calls, and the pooled vector must be bit-identical.
        tower = self.model if projection is None else self.model.text_model
        with torch.inference_mode():
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
                rows = out.pooler_output
                pooled = torch.cat([projection(rows[i : i + 1]) for i in range(rows.shape[0])])
            elif self.pooled:
                pooled = out.pooler_output
        return z, pooled
