"""``encode(..., dialect=...)``: prompts of other dialects, read through A1111's.

ComfyUI's and NovelAI's prompts, and compel's, are converted to A1111 text with
:func:`promptweights.convert` (the same weight per word), then encoded as A1111 prompts. compel's
operators map as follows:

* ``("a", "b").and(1, 0.5)`` is ``a AND b :0.5`` (composable diffusion, as the issue asks; compel
  2.x itself concatenates the parts' embeddings instead);
* ``withLora(name, w)`` is ``<lora:name:w>``;
* ``("a", "b").blend(0.3, 0.7)`` encodes each member and mixes the embeddings (and pooled
  vectors) with the weights, divided by their sum unless ``no_normalize`` — compel's
  ``apply_embedding_weights``. Members of different chunk counts (a prompt past 75 tokens beside
  a short one) are first padded as compel 2.5.1 pads them
  (``pad_conditioning_tensors_to_same_length``): the empty prompt's encoded window appended to
  the shorter ones. In a batch, each member's images are stacked as any batch is (A1111's rule:
  the last token vector repeated) before that; SD3's CLIP-then-T5 sequence cannot be padded so,
  and members of different lengths there are refused;
* ``x.swap(y)`` is cross-attention control, which diffusers pipelines do not expose: refused
  unless ``swap="edit"``, which writes the nearest A1111 prompt edit ``[x:y:t_start]`` (an
  approximation: compel keeps the original's attention maps instead of switching the text).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

import promptweights
from promptweights.dialects import get
from promptweights.errors import InvalidArgumentError, PromptSyntaxError, warn_or_raise
from promptweights.render import render_nodes
from promptweights.tree import Attention, Blend, Lora, Node, Swap

__all__ = ["SWAP_MODES", "encode_dialect"]

#: What ``encode(swap=...)`` accepts.
SWAP_MODES = ("refuse", "edit")

_PROMPT_ARGS = ("prompt_2", "negative_prompt_2", "prompt_3", "negative_prompt_3")


def _excerpt(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _to_a1111(text: str, dialect: str, swap: str, strict: bool) -> str:
    """One prompt in A1111's dialect; what cannot be expressed is an error or a warning."""
    if dialect == "compel":
        nodes = promptweights.parse(text, dialect="compel").parts[0].children
        swaps = [n for n in _walk(nodes) if isinstance(n, Swap)]
        if swaps and swap != "edit":
            raise InvalidArgumentError(
                f"the compel prompt {_excerpt(text)!r} uses .swap(): cross-attention control, "
                "which diffusers pipelines do not expose; pass swap='edit' to write it as the "
                "nearest A1111 prompt edit [original:replacement:t_start] (an approximation)"
            )
    result = promptweights.convert(text, dialect, "a1111")
    for diagnostic in result.diagnostics:
        if diagnostic.kind == "swap":
            continue  # asked for with swap="edit"
        if diagnostic.kind == "blend":
            raise InvalidArgumentError(
                f"{_excerpt(text)!r}: .blend() is only supported as the whole positive prompt"
            )
        error: PromptSyntaxError = diagnostic.to_error(text)
        warn_or_raise(
            f"{dialect} prompt read as A1111 text with a difference: {error}",
            strict=strict,
            stacklevel=5,
        )
    return result.text


def _walk(nodes: Sequence[Node]) -> list[Node]:
    out: list[Node] = []
    stack = list(nodes)
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, Attention):
            stack.extend(node.children)
        elif isinstance(node, Blend):
            stack.extend(node.members)
        elif isinstance(node, Swap):
            stack.extend((node.target, *node.replacement))
    return out


def _blend_members(text: str) -> tuple[list[str], list[float]] | None:
    """A compel blend prompt's members (as compel text, LoRA calls added) and their weights,
    normalised as compel does; None for a prompt without a blend."""
    nodes = promptweights.parse(text, dialect="compel").parts[0].children
    blend = next((n for n in nodes if isinstance(n, Blend)), None)
    if blend is None:
        return None
    loras = " ".join(
        n.source or f"withLora({n.name}, {n.weight!r})" for n in nodes if isinstance(n, Lora)
    )
    members = []
    for member in blend.members:
        assert isinstance(member, Attention)
        body = render_nodes(_member_nodes(member))
        members.append(f"{body} {loras}".strip())
    weights = list(blend.weights)
    if blend.normalize:
        total = sum(weights)
        weights = [w / total for w in weights]
    return members, weights


def _member_nodes(member: Attention) -> tuple[Node, ...]:
    if member.kind == "word":
        return member.children
    return member.children if member.weight == 1.0 else (member,)


def encode_dialect(
    encode: Callable[..., Any],
    pipe: Any,
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None,
    *,
    dialect: str,
    swap: str,
    options: dict[str, Any],
) -> Any:
    """:func:`~promptweights.diffusers.encode` of prompts in ``dialect`` (module docstring)."""
    if swap not in SWAP_MODES:
        raise InvalidArgumentError(f"swap must be one of {SWAP_MODES}, not {swap!r}")
    get(dialect)
    strict = bool(options.get("strict", False))

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            return _to_a1111(value, dialect, swap, strict)
        return [_to_a1111(v, dialect, swap, strict) for v in value]

    texts = [prompt] if isinstance(prompt, str) else list(prompt)
    blends = [_blend_members(t) if dialect == "compel" else None for t in texts]
    converted = {name: convert(options.get(name)) for name in _PROMPT_ARGS}
    options = {**options, **converted}
    negative = convert(negative_prompt)
    if not any(blends):
        positive = convert(prompt)
        return encode(pipe, positive, negative, dialect="a1111", **options)
    return _encode_blends(encode, pipe, texts, blends, negative, options, lambda t: convert(t))


def _encode_blends(
    encode: Callable[..., Any],
    pipe: Any,
    texts: list[str],
    blends: list[tuple[list[str], list[float]] | None],
    negative: Any,
    options: dict[str, Any],
    convert: Callable[[str], str],
) -> Any:
    """Encode each blend member as a batch of its own and mix the embeddings per image."""
    count = max(len(b[0]) for b in blends if b is not None)
    rows: list[list[str]] = [[] for _ in range(count)]
    weights = torch.zeros(count, len(texts), dtype=torch.float64)
    for image, (text, blend) in enumerate(zip(texts, blends, strict=True)):
        members, member_weights = blend if blend is not None else ([text], [1.0])
        for k in range(count):
            rows[k].append(convert(members[k] if k < len(members) else members[0]))
            if k < len(members):
                weights[k, image] = member_weights[k]
    conds = [encode(pipe, row, negative, dialect="a1111", **options) for row in rows]
    if any(c.edits or c.composable for c in conds):
        raise InvalidArgumentError(
            "the members of a .blend() cannot use prompt editing, alternation or AND"
        )
    embeds = [c.prompt_embeds for c in conds]
    # The longest member's conditioning: its negative is already as long as the blend will be.
    longest = max(range(count), key=lambda k: int(embeds[k].shape[1]))
    if any(e.shape != embeds[longest].shape for e in embeds):
        embeds = _pad_like_compel(encode, pipe, embeds, options)
    pooled = [c.pooled_prompt_embeds for c in conds]
    return _mixed(conds[longest], embeds, pooled, weights)


def _pad_like_compel(
    encode: Callable[..., Any], pipe: Any, embeds: list[torch.Tensor], options: dict[str, Any]
) -> list[torch.Tensor]:
    """The members' embeddings at one length, as compel 2.5.1 pads them before blending
    (``Compel.pad_conditioning_tensors_to_same_length``): the empty prompt's window (compel's
    ``empty_z``, ``[BOS, EOS, PAD…]`` encoded; A1111's empty chunk) appended to the shorter ones
    until they are as long as the longest. The empty prompt is encoded with the members' options
    (clip skip, strategy), without loading or switching LoRAs, so under the text encoder's state
    the members were encoded with.
    """
    quiet = {k: v for k, v in options.items() if k not in (*_PROMPT_ARGS, "lora_dir", "loras")}
    empty = encode(pipe, "", "", dialect="a1111", **quiet).prompt_embeds
    window = int(empty.shape[1])
    target = max(int(e.shape[1]) for e in embeds)
    padded = []
    for e in embeds:
        missing, rest = divmod(target - int(e.shape[1]), window)
        if rest or e.shape[2:] != empty.shape[2:]:  # not whole windows (SD3: CLIP, then T5)
            shapes = sorted({tuple(x.shape) for x in embeds})
            raise InvalidArgumentError(
                f"the members of a .blend() encode to different lengths {shapes}, which the "
                "empty prompt's window cannot pad: make them fit the same number of 75-token "
                "chunks"
            )
        pad = empty.to(device=e.device, dtype=e.dtype).expand(e.shape[0], -1, -1)
        padded.append(torch.cat([e, *([pad] * missing)], dim=1))
    return padded


def _mixed(
    first: Any,
    embeds_list: list[torch.Tensor],
    pooled_list: list[torch.Tensor | None],
    weights: torch.Tensor,
) -> Any:
    """``first`` with its positive embeddings (and pooled vectors) replaced by the mix."""

    def mix(tensors: list[torch.Tensor]) -> torch.Tensor:
        w = weights.to(device=tensors[0].device, dtype=tensors[0].dtype)
        shape = (w.shape[0], w.shape[1]) + (1,) * (tensors[0].ndim - 1)
        return (torch.stack(tensors) * w.reshape(shape)).sum(dim=0)

    embeds = mix(embeds_list)
    pooled = None
    if first.pooled_prompt_embeds is not None:
        pooled = mix([p for p in pooled_list if p is not None])
    timeline = first._timeline
    part_embeds = [[embeds[image : image + 1]] for image in range(embeds.shape[0])]
    part_pooled = [
        [None if pooled is None else pooled[image : image + 1]] for image in range(embeds.shape[0])
    ]
    timeline = dataclasses.replace(timeline, part_embeds=part_embeds, part_pooled=part_pooled)
    return dataclasses.replace(
        first, prompt_embeds=embeds, pooled_prompt_embeds=pooled, _timeline=timeline
    )
