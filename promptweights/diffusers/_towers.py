"""What :func:`~promptweights.diffusers.encode` checks and adds per text tower, from the records.

* which prompt arguments a family reads (``prompt_2`` on Flux, ``prompt_3`` on SD3; none on
  Chroma, PixArt or Wan), and whether it tolerates ``long_prompts="chunk"``;
* the diagnostics of the T5 towers: text past the window (truncated, with the count of tokens
  dropped), ``BREAK`` where it cannot start a window, and weights written for a tower whose
  weighting is off (:class:`~promptweights.strategies.Policy`);
* the attention masks that Chroma and PixArt take with their T5 embeds;
* inline per-encoder prompts: ``TE(clip_l: …; t5: …)`` blocks routed to ``prompt_2``/``prompt_3``
  (:func:`route_inline`, :mod:`promptweights.routing`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from promptweights.builder import Plan
from promptweights.encoders import TextEncoder
from promptweights.errors import InvalidArgumentError, warn_or_raise
from promptweights.strategies import Policy
from promptweights.tokens import TokenizedPrompt

from .conditioning import _Part
from .families import Family

#: ``encode``'s ``long_prompts`` values.
LONG_PROMPTS = ("truncate", "chunk")

#: The per-encoder arguments a ``TE(…)`` block stands in for.
_EXTRA = tuple(f"{side}prompt_{n}" for n in (2, 3, 4) for side in ("", "negative_"))


def route_inline(family: Family, texts: Mapping[str, Any]) -> dict[str, Any]:
    """Resolve ``TE(name: …)`` blocks into the prompt arguments the family's towers read.

    Args:
        family: the pipeline's record (its towers' names and prompt numbers).
        texts: ``prompt``, ``negative_prompt``, ``prompt_2``… as given (a str, one per image, or
            None).

    Returns:
        ``texts`` unchanged when no prompt holds a block; else ``prompt`` and ``negative_prompt``
        with each tower's text under the argument it reads (``prompt_2`` for Flux's T5…).

    Raises:
        InvalidArgumentError: blocks and ``prompt_2``/``prompt_3`` (or their negatives) given
            together; two towers reading one argument but named apart in a block.
        PromptSyntaxError: as :func:`promptweights.route` raises.
    """
    from promptweights.routing import OPENER

    def listed(value: Any) -> list[Any]:
        return [value] if isinstance(value, str) else list(value or ())

    main = ("prompt", "negative_prompt")
    if not any(isinstance(t, str) and OPENER in t for key in main for t in listed(texts.get(key))):
        return dict(texts)
    given = [key for key in _EXTRA if texts.get(key) is not None]
    if given:
        raise InvalidArgumentError(
            f"the prompt routes text to encoders with TE(…) and {given[0]} is given too: use one "
            "or the other"
        )
    names = [tower.label for tower in family.towers]
    out = dict(texts)
    for key in main:
        value = texts.get(key)
        if value is None:
            continue
        per_image = [_route_one(family, text, names) for text in listed(value)]
        for number in sorted({tower.prompt for tower in family.towers}):
            name = key if number == 1 else f"{key}_{number}"
            routed = [image[number] for image in per_image]
            out[name] = routed[0] if isinstance(value, str) else routed
    return out


def _route_one(family: Family, text: Any, names: list[str]) -> dict[int, Any]:
    """One text's prompt per prompt number (the text itself where it holds no block)."""
    from promptweights.routing import route

    routed = route(text, names) if isinstance(text, str) else None
    by_number: dict[int, Any] = {}
    for tower in family.towers:
        mine = text if routed is None else routed[tower.label]
        if by_number.setdefault(tower.prompt, mine) != mine:
            raise InvalidArgumentError(
                f"{tower.label} reads the same prompt argument as another encoder of "
                f"{family.title}: route the same text to both"
            )
    return by_number


def check_arguments(family: Family, given: Mapping[str, object], long_prompts: str) -> None:
    """Refuse prompt arguments the family does not read, and a ``long_prompts`` it does not take.

    Args:
        family: the pipeline's record.
        given: ``prompt_2``, ``negative_prompt_2``, ``prompt_3``, ``negative_prompt_3`` as passed.
        long_prompts: ``"truncate"`` or ``"chunk"``.

    Raises:
        InvalidArgumentError: naming the arguments the family reads, or its long-prompt modes.
    """
    reads = family.prompt_arguments
    said = ", ".join(reads) + ("" if reads == ("prompt",) else " (each defaults to prompt)")
    for name, value in given.items():
        if value is None:
            continue
        if name.removeprefix("negative_") not in reads:
            raise InvalidArgumentError(
                f"{family.title or family.name} pipelines take no {name}: their text encoders "
                f"read {said}"
            )
    if long_prompts not in LONG_PROMPTS:
        raise InvalidArgumentError(
            f"long_prompts must be one of {list(LONG_PROMPTS)}, got {long_prompts!r}"
        )
    if long_prompts not in family.long_prompts:
        reason = _NO_CHUNKS.get(family.name) or (
            "its denoiser reads one T5 window of max_sequence_length tokens"
        )
        raise InvalidArgumentError(
            f"{family.title} takes long_prompts={list(family.long_prompts)}: {reason}, so text "
            "past max_sequence_length is truncated (with a diagnostic giving the tokens dropped)"
        )


#: Why a decoder-LLM family takes no ``long_prompts="chunk"`` (README, "Decoder-LLM text
#: encoders", Long prompts; the T5 families' reason is the default message).
_NO_CHUNKS = {
    "qwen-image": (
        "its transformer takes a longer masked text sequence, but only as far as its text RoPE "
        "table reaches (4096 positions after the image's) and the pipeline caps "
        "max_sequence_length at 1024; chunking a chat-templated LLM text is not implemented"
    ),
    "z-image": (
        "its transformer takes one text tensor of any length per image, but text positions "
        "share its first RoPE axis (1024 positions) with the image; chunking a chat-templated "
        "LLM text is not implemented"
    ),
    "flux2": "its transformer reads the whole padded window of max_sequence_length positions",
    "flux2-klein": "its transformer reads the whole padded window of max_sequence_length positions",
    "lumina2": "its transformer reads the whole padded window of max_sequence_length positions",
    "sana": "its transformer reads the padded window the pipeline selects (its select_index)",
    "kolors": "ChatGLM3's window is left-padded to max_sequence_length (256) and read whole",
    "hidream": "its transformer reads T5's and Llama's padded windows of max_sequence_length",
    "qwen-image-edit": (
        "its transformer's text RoPE limits are Qwen-Image's, and its encoding holds the "
        "image's vision tokens before the text; chunking a templated LLM text is not implemented"
    ),
    "qwen-image-edit-plus": (
        "its transformer's text RoPE limits are Qwen-Image's, and its encoding holds the "
        "images' vision tokens before the text; chunking a templated LLM text is not implemented"
    ),
    "qwen-image-layered": (
        "its prompt encoding and transformer limits are Qwen-Image's; chunking a chat-templated "
        "LLM text is not implemented"
    ),
    "z-image-omni": "its segments are each one padded window of max_sequence_length positions",
    "sana-wm": "its transformer reads the padded window the pipeline selects (its select_index)",
}


def diagnose(
    family: Family,
    slots: Sequence[tuple[TextEncoder, int, Policy, str]],
    plans: Sequence[Plan],
    parts: Sequence[_Part],
    *,
    strict: bool,
) -> None:
    """Warn (raise when ``strict``) about what a tower drops of the prompts.

    Args:
        family: the pipeline's record.
        slots: per present tower, ``(encoder, prompt number, policy, component name)``.
        plans: per tower, its plan (one request whose groups are ``parts``).
        parts: every AND part and negative, in the plans' group order (or the first groups':
            the others, stand-ins for an unused negative, are not diagnosed).
        strict: raise :class:`~promptweights.errors.UnreproducibleError` instead of warning.
    """
    messages: list[str] = []
    weighted = [s for s in slots if s[2].weighted]
    for (encoder, prompt, policy, component), prepared in zip(slots, plans, strict=True):
        (groups,) = prepared.prompts
        truncated: list[tuple[int, str]] = []
        breaks = 0
        dropped_weights: list[str] = []
        for part, texts in zip(parts, groups[: len(parts)], strict=True):
            for variant, tokenized in zip(part.texts, texts, strict=True):
                text = variant[prompt - 1]
                if tokenized.truncated:
                    truncated.append((tokenized.truncated, text))
                breaks += tokenized.breaks_ignored
                if (
                    not policy.weighted
                    and any(c.weighted for c in tokenized.chunks)
                    and not any(variant[other[1] - 1] == text for other in weighted)
                ):
                    dropped_weights.append(text)
        messages += _tower_messages(
            family, encoder, component, truncated, breaks, policy, dropped_weights
        )
    for message in messages:
        # stacklevel 4: this function, encode, then the user's call.
        warn_or_raise(message, strict=strict, stacklevel=4)


def _excerpt(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _tower_messages(
    family: Family,
    encoder: TextEncoder,
    component: str,
    truncated: list[tuple[int, str]],
    breaks: int,
    policy: Policy,
    dropped_weights: list[str],
) -> list[str]:
    window = encoder.window.length
    chunk = "chunk" in family.long_prompts
    messages = []
    if truncated:
        most, text = max(truncated, key=lambda item: item[0])
        advice = (
            "pass long_prompts='chunk' to encode it in more windows, or shorten it"
            if chunk
            else f"{family.title} reads one window, so shorten it"
        )
        where = f"the {window}-token window of {component}"
        if encoder.window.keep is not None:
            where = f"the {encoder.window.keep} positions the pipeline keeps of {component}"
        messages.append(
            f"{most} tokens of {_excerpt(text)} are past {where} (max_sequence_length) and were "
            f"dropped, as the pipeline drops them ({len(truncated)} text(s) truncated); {advice}"
        )
    if breaks:
        advice = (
            "with long_prompts='chunk' BREAK starts a new window"
            if chunk
            else f"{family.title} reads one window"
        )
        window_kind = "an LLM's text" if encoder.is_llm else "a T5 window"
        messages.append(
            f"BREAK ignored {breaks} time(s) on {component}: {window_kind} is not cut at BREAK "
            f"unless the prompt is chunked; {advice}"
        )
    if dropped_weights:
        messages.append(
            f"prompt weights in {_excerpt(dropped_weights[0])} are dropped on {component}: "
            f"{policy.off}"
        )
    return messages


def attention_masks(
    family: Family,
    encoder: TextEncoder,
    groups: Sequence[Sequence[TokenizedPrompt]],
    images: Sequence[int],
    length: int,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor] | None:
    """The T5 attention masks the pipeline takes with the embeds, per image: positive, negative.

    Every window of a text is masked as the tokenizer masks it (its text and EOS, plus one
    padding position for ``"text+1"``); the empty windows that pad a conditioning to ``length``
    as an empty text. The pipeline reads one mask for the whole run, so an image whose schedule
    or AND parts hold texts of different lengths gets the union of their masks.

    Args:
        family: the pipeline's record (``attention_mask``).
        encoder: its T5 tower.
        groups: that tower's texts as tokenised, per group: the images' AND parts, then one
            negative each (a build result's groups).
        images: the AND parts of each image.
        length: the conditioning's length after padding.
        dtype: the mask's dtype as the pipeline returns it.
        device: where the masks go.

    Returns:
        ``(B, length)`` positive and negative masks, or ``None`` for a family without masks.
    """
    if not family.attention_mask:
        return None
    masks = [_text_masks(family, encoder, texts, length).any(dim=0) for texts in groups]
    positive, start = [], 0
    for count in images:
        positive.append(torch.stack(masks[start : start + count]).any(dim=0))
        start += count
    negative = masks[start:]
    return (
        torch.stack(positive).to(device=device, dtype=dtype),
        torch.stack(negative).to(device=device, dtype=dtype),
    )


def _text_masks(
    family: Family, encoder: TextEncoder, texts: Sequence[TokenizedPrompt], length: int
) -> Tensor:
    """``(V, length)`` bool: each text's windows masked as the tokenizer masks them, empty
    windows past its own as an empty text."""
    extra = 1 if family.attention_mask == "text+1" else 0
    window = encoder.window.length
    masks = torch.zeros(len(texts), length, dtype=torch.bool)
    for v, tokenized in enumerate(texts):
        sizes = [c.size for c in tokenized.chunks]
        sizes += [0] * (length // window - len(sizes))
        for k, size in enumerate(sizes):
            masks[v, k * window : k * window + min(size + 1 + extra, window)] = True
    return masks


def variant_masks(
    family: Family,
    encoder: TextEncoder,
    groups: Sequence[Sequence[TokenizedPrompt]],
    length: int,
    dtype: torch.dtype,
    device: torch.device,
) -> list[Tensor] | None:
    """Per group (as :func:`attention_masks` takes them), the ``(V, length)`` mask of each of
    its schedule entries: what the denoiser hook gives the transformer at each call, so that an
    edited or AND prompt is masked as each text alone (the pipeline itself reads one mask)."""
    if not family.attention_mask:
        return None
    return [
        _text_masks(family, encoder, texts, length).to(device=device, dtype=dtype)
        for texts in groups
    ]


def mask_dtype(family: Family, embeds: Tensor) -> torch.dtype:
    """The dtype the pipeline's ``encode_prompt`` gives its mask: the tokenizer's int64 (PixArt),
    or the embeds' dtype (Chroma builds its mask in it)."""
    return embeds.dtype if family.attention_mask == "text+1" else torch.long


def takes_negative(pipe: Any) -> bool:
    """Whether ``pipe``'s ``__call__`` takes ``negative_prompt_embeds`` (Flux Fill does not: it
    has no true classifier-free guidance) and uses it (a step-distilled Flux.2 Klein, config
    ``is_distilled``, ignores it)."""
    config = getattr(pipe, "config", None)
    if isinstance(config, Mapping) and config.get("is_distilled") is True:
        return False
    try:
        parameters = inspect.signature(type(pipe).__call__).parameters
    except (TypeError, ValueError):
        return True
    return "negative_prompt_embeds" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def check_negative(pipe: Any, negatives: Sequence[_Part], *, strict: bool) -> None:
    """A negative prompt for a pipeline that takes none is dropped: say so (raise when strict)."""
    empty = all(not text for part in negatives for variant in part.texts for text in variant)
    if empty or takes_negative(pipe):
        return
    warn_or_raise(
        f"{type(pipe).__name__} takes no negative prompt (no true classifier-free guidance): "
        "the negative prompt is dropped",
        strict=strict,
        stacklevel=4,
    )
