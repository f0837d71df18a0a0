"""The pipeline families the adapter knows: one :class:`Family` record each.

A record says everything the rest of the package needs to know about a family: which pipelines it
covers (and how :func:`family_of` recognises them), its text encoders and which prompt argument
each reads, how their outputs are laid out for the denoiser (the pooled source included), how
chunked conds are padded, the T5 sequence length, what an empty negative becomes, which tensors
the step callback may swap, and which encoders take textual-inversion vectors. Nothing else in the
package branches on a family's name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from promptweights.encoders import TextEncoder
from promptweights.errors import UnsupportedPipelineError
from promptweights.strategies import POLICIES, Policy
from promptweights.tokens import layout_for

from ._llm import Segments, Template, text_encoder


@dataclass(frozen=True, slots=True)
class Encoded:
    """One group's output on one text encoder: ``(V, L, D)`` embeds and ``(V, P)`` pooled."""

    embeds: Tensor
    pooled: Tensor | None


@dataclass(frozen=True, slots=True)
class Tower:
    """One text encoder of a family.

    Attributes:
        component: the pipeline attribute holding the model (``"text_encoder_2"``).
        tokenizer: the pipeline attribute holding its tokenizer.
        kind: the :class:`~promptweights.encoders.TextEncoder` constructor: ``"clip"`` (SD's
            CLIP), ``"sdxl"`` (penultimate-layer CLIP), ``"t5"`` (a fixed T5 window), ``"llm"``
            (a decoder LLM with the pipeline's template, :attr:`llm`) or ``"chatglm"`` (Kolors'
            ChatGLM3: ``TextEncoder.chatglm``).
        prompt: the prompt it reads: 1 ``prompt``, 2 ``prompt_2``, 3 ``prompt_3``.
        pooled: whether its pooled output is kept.
        clip_skip: whether the pipeline's ``clip_skip`` applies to it.
        optional: whether the pipeline may hold ``None`` here (SD3 without T5).
        ti_part: which tensor of an embedding file it takes (``""``: the only one, ``"clip_l"``,
            ``"clip_g"``); ``None``: it takes no textual-inversion vectors.
        policy: its weighting policy, a name of :data:`promptweights.strategies.POLICIES`
            (``""``: the kind's, ``"clip"`` or ``"t5"``).
        mask_padding: T5 only: run with the padding hidden from the attention (Chroma, PixArt,
            Wan), as the pipeline does.
        zero_padding: T5 only: zero the outputs at the padding (Wan).
        clean: T5 only: the pipeline's text clean-up (``promptweights.tokens.CLEANERS``).
        llm: LLM only: how the pipeline writes the template and reads the hidden states
            (:class:`~promptweights.diffusers._llm.Template`).
        models: the text-model classes this tower runs (``()``: any): a pipeline holding
            another class is not of the family (its text encoder is not supported).
        window: CLIP only: one window of ``min(max_sequence_length, window)`` tokens, truncated
            rather than chunked (HiDream's long CLIP-L/G: 218); ``0``: 77-token chunks.
        capped: T5 and decoder LLMs: the window is at most the tokenizer's
            ``model_max_length`` (HiDream's ``min(max_sequence_length, model_max_length)``).
        name: what a ``TE(name: …)`` block calls it (:mod:`promptweights.routing`); ``""``: its
            component name.
    """

    component: str
    tokenizer: str
    kind: Literal["clip", "sdxl", "t5", "llm", "chatglm"]
    prompt: int
    pooled: bool = False
    clip_skip: bool = True
    optional: bool = False
    ti_part: str | None = None
    policy: str = ""
    mask_padding: bool = False
    zero_padding: bool = False
    clean: str = ""
    llm: Template | None = None
    models: tuple[str, ...] = ()
    window: int = 0
    capped: bool = False
    name: str = ""

    @property
    def label(self) -> str:
        """Its name in a ``TE(…)`` block: :attr:`name`, else the component's."""
        return self.name or self.component

    @property
    def weighting(self) -> Policy:
        """Its :class:`~promptweights.strategies.Policy`."""
        default = {"t5": "t5", "llm": "llm", "chatglm": "llm"}.get(self.kind, "clip")
        return POLICIES[self.policy or default]

    def runs(self, model: Any) -> bool:
        """Whether ``model`` is one of the text-model classes this tower runs."""
        names = {c.__name__ for c in type(model).__mro__}
        return not self.models or model is None or bool(names & set(self.models))

    def text_encoder(
        self,
        pipe: Any,
        cls: type[TextEncoder],
        clip_skip: int,
        max_sequence_length: int | None,
        default_length: int | None,
        chunked: bool = False,
        negative: bool = False,
        image: Any = None,
    ) -> TextEncoder | None:
        """This tower of ``pipe`` as a ``cls`` (``None`` for an optional tower the pipe lacks).

        ``clip_skip`` is A1111's "Clip skip N" (1: the last layer), as :class:`TextEncoder` takes
        it; a tower without ``clip_skip`` always reads the last layer its kind reads. ``chunked``:
        a T5 tower cuts long text into windows instead of truncating it. ``negative``: the
        negative's encoder of a decoder LLM whose template is the positive's only
        (``Template.plain_negative``). ``image``: the input image(s) a decoder LLM's template
        reads (``Template.processor``).
        """
        model = getattr(pipe, self.component)
        if model is None and self.optional:
            return None
        tokenizer = getattr(pipe, self.tokenizer)
        length = max_sequence_length or default_length
        if self.capped and length is not None:
            length = min(length, int(getattr(tokenizer, "model_max_length", length)))
        if self.kind == "chatglm":
            return cls.chatglm(model, tokenizer, max_length=length or 256, pooled=self.pooled)
        if self.kind == "llm":
            assert self.llm is not None, "an llm tower has a Template"
            assert length is not None, "an llm family has a sequence_length"
            return text_encoder(
                pipe, self.llm, model, tokenizer, length, negative=negative, image=image
            )
        if self.kind == "clip" and self.window:
            window = min(length or self.window, self.window)
            layout = layout_for(tokenizer, length=window, chunked=False)
            return cls(model, tokenizer, pooled=self.pooled, layout=layout)
        if self.kind == "t5":
            return cls.t5(
                model,
                tokenizer,
                max_length=length,
                chunked=chunked,
                mask_padding=self.mask_padding,
                zero_padding=self.zero_padding,
                clean=self.clean,
            )
        build = cls.clip if self.kind == "clip" else cls.sdxl
        return build(
            model, tokenizer, clip_skip=clip_skip if self.clip_skip else 1, pooled=self.pooled
        )


def _padded_together(encoders: Sequence[TextEncoder]) -> list[list[int]]:
    """The chunked encoders whose outputs get one length: same window, same kind (a CLIP window
    has a BOS, a T5 window none). SD3's chunked T5 is padded apart from its two CLIP towers."""
    together: dict[tuple[int, bool], list[int]] = {}
    for i, encoder in enumerate(encoders):
        if encoder.window.chunked:
            key = (encoder.window.length, encoder.window.bos is None)
            together.setdefault(key, []).append(i)
    return list(together.values())


def _stacks_by_repeating(encoder: TextEncoder) -> bool:
    """A1111 stacks positive CLIP conds by repeating the last vector; T5 windows (no BOS) are
    padded with empty windows only, so that their attention masks stay windows of text."""
    return encoder.window.bos is not None


def empties_for_a1111(
    encoders: Sequence[TextEncoder], chunks: Sequence[Sequence[int]], positives: int
) -> list[bool]:
    """Which encoders :func:`pad_like_a1111` will need the empty window of, from chunk counts.

    Args:
        encoders: the family's present text encoders.
        chunks: per encoder, the chunks of every group (positives first).
        positives: how many of the groups are positive.

    Returns:
        Per encoder, whether some group is padded with empty chunks: the builder then encodes
        the empty window in the same pass (or takes it from its cache), and only then.
    """
    needed = [False] * len(encoders)
    for together in _padded_together(encoders):
        target = max(c for i in together for c in chunks[i])
        for i in together:
            stacked = list(chunks[i])
            if _stacks_by_repeating(encoders[i]):
                longest = max(chunks[i][:positives])
                stacked = [longest if g < positives else c for g, c in enumerate(chunks[i])]
            needed[i] = any(c < target for c in stacked)
    return needed


#: ``layout(pipe, outputs, t5_length)``: one group's embeds and pooled vector from the outputs of
#: the family's present towers, in tower order.
Layout = Callable[[Any, Sequence[Encoded], int], tuple[Tensor, Tensor | None]]
#: ``pad(encoders, outputs, empties, positives)``: give the outputs the lengths one batch needs.
Padding = Callable[
    [Sequence[TextEncoder], list[list[tuple[Tensor, Tensor | None]]], Sequence[Tensor | None], int],
    None,
]
#: ``empties(encoders, chunks, positives)``: per encoder, whether ``padding`` will use its empty
#: window (``chunks``: per encoder, the chunks of every group, positives first).
PaddingEmpties = Callable[[Sequence[TextEncoder], Sequence[Sequence[int]], int], list[bool]]


@dataclass(frozen=True, slots=True)
class Family:
    """One pipeline family: what it covers, and how its prompts become the pipeline's tensors.

    Attributes:
        name: the name :func:`family_of` returns.
        title: how error messages name it (``""``: folded into another family's title).
        pipelines: the diffusers pipeline classes it covers.
        denoiser: the component the AND hook attaches to (``"unet"`` or ``"transformer"``); a
            pipeline of the family has it.
        needs: other components a pipeline of the family has (possibly ``None``).
        loaded: components it has and that are not ``None``.
        unloaded: components it lacks or that are ``None``.
        lacks: components it does not have.
        class_prefix: how its pipeline class names start.
        towers: its text encoders, in the order :attr:`layout` gets their outputs.
        layout: one group's embeds and pooled vector from the towers' outputs.
        padding: how chunked outputs get one length (A1111's stacking and "Pad conds").
        padding_empties: which encoders' empty windows ``padding`` will use, known from the chunk
            counts before anything is encoded (so the empty window is encoded only where used).
        sequence_length: the T5 window when ``max_sequence_length`` is not given.
        empty_negative: what a negative that is empty for every image becomes: ``"encoded"``
            (the empty text, encoded), ``"zeros"`` (all zeros when the pipeline's
            ``force_zeros_for_empty_prompt`` is set) or ``"omitted"`` (no negative at all).
            Zeroed or omitted, it costs no encoder row (nor does any negative of a pipeline that
            takes none): ``encode`` plans it as rows the prompts already have.
        batched_guidance: whether the denoiser runs ``[uncond, cond]`` in one batch (Z-Image:
            its lists ``[cond…, uncond…]``); else it runs cond and uncond as separate calls, and
            AND takes the parts' weighted mean there (:mod:`promptweights.diffusers._separate`).
        step_tensors: the tensors the step callback asks the pipeline for (with
            ``"negative_prompt_embeds"``: the negative is a tensor of its own, swapped apart).
        step_pooled: the pipeline's name for the pooled tensor the step callback swaps, if any.
        step_callback: whether the pipeline takes ``callback_on_step_end`` (prompt editing
            needs it).
        attention_mask: the T5 attention mask the pipeline takes with the embeds
            (``prompt_attention_mask``): ``""`` none, ``"text"`` the tokenizer's (PixArt),
            ``"text+1"`` the tokenizer's and one padding position more (Chroma).
        long_prompts: how text past the T5 window may be handled: ``"truncate"`` (diffusers'
            behaviour, with a diagnostic) and, where the denoiser takes a longer text sequence,
            ``"chunk"`` (more windows, ``BREAK`` starts one).
        cleared: pipeline arguments with a default that clashes with the embeds (PixArt's
            ``negative_prompt=""``): the keyword arguments pass them as ``None``.
        mask_argument: the pipeline's name for the attention mask it takes with the embeds
            (``"prompt_embeds_mask"`` on Qwen-Image; the negative's is ``negative_`` + it).
        embeds_as_list: the pipeline takes one ``(L_i, D)`` tensor per image, of its text's
            length, instead of a padded batch (Z-Image).
        refused: pipeline classes named like the family's that it does not cover, and why
            (:class:`~promptweights.errors.UnsupportedPipelineError` gives the reason).
        split: for a pipeline that takes its text as several tensors (HiDream's
            ``prompt_embeds_t5`` and ``prompt_embeds_llama3``), ``split(pipe, length)`` gives
            the function that cuts the layout's packed ``prompt_embeds`` into them, by name.
        more_denoisers: other components the AND hook attaches to as well, where present
            (Wan 2.2's low-noise ``transformer_2``).
        runtime_refused: why prompt editing, alternation and AND are refused on it (its text
            reaches the denoiser in a form the step callback and the hooks do not swap);
            ``""``: they work.
        repeats_embeds: whether the pipelines repeat embeddings passed in, and their masks, per
            image for ``num_images_per_prompt`` (diffusers' SD3, Flux.1, Chroma and Wan repeat
            only what they encode themselves, Lumina 2 not the negative, Kolors not the embeds;
            Lumina 2, SANA and Qwen-Image repeat a list's masks in the wrong order, ``[m1, m2,
            m1, m2]`` against embeds ``[e1, e1, e2, e2]``): where not,
            ``Conditioning.pipeline_kwargs(num_images_per_prompt=n)`` hands them over repeated.
        positional_text: the denoiser takes its text as its third positional argument and the
            text's mask as ``mask=`` (SANA-WM): :meth:`Conditioning.attach`'s hook switches
            them there.
    """

    name: str
    title: str
    pipelines: tuple[str, ...]
    denoiser: str
    towers: tuple[Tower, ...]
    layout: Layout
    padding: Padding
    step_tensors: tuple[str, ...]
    needs: tuple[str, ...] = ()
    loaded: tuple[str, ...] = ()
    unloaded: tuple[str, ...] = ()
    lacks: tuple[str, ...] = ()
    class_prefix: str = ""
    sequence_length: int | None = None
    empty_negative: Literal["encoded", "zeros", "omitted"] = "encoded"
    batched_guidance: bool = True
    step_pooled: str | None = None
    padding_empties: PaddingEmpties = empties_for_a1111
    step_callback: bool = True
    attention_mask: Literal["", "text", "text+1"] = ""
    long_prompts: tuple[str, ...] = ("truncate",)
    cleared: tuple[str, ...] = ()
    mask_argument: str = "prompt_attention_mask"
    embeds_as_list: bool = False
    refused: tuple[tuple[str, str], ...] = ()
    split: Callable[[Any, int], Callable[[Tensor], dict[str, Tensor]]] | None = None
    more_denoisers: tuple[str, ...] = ()
    runtime_refused: str = ""
    repeats_embeds: bool = True
    positional_text: bool = False

    def window(self, pipe: Any) -> int | None:
        """The T5 window when ``max_sequence_length`` is not given: the default of the pipeline's
        own ``max_sequence_length`` argument (PixArt-α 120, PixArt-Σ 300…), else the record's."""
        try:
            parameters = inspect.signature(type(pipe).__call__).parameters
        except (TypeError, ValueError):
            return self.sequence_length
        given = parameters.get("max_sequence_length")
        default = None if given is None else given.default
        if isinstance(default, int) and not isinstance(default, bool) and default > 0:
            return default
        return self.sequence_length

    @property
    def prompt_arguments(self) -> tuple[str, ...]:
        """The prompt arguments its towers read (``prompt``, ``prompt_2``, ``prompt_3``)."""
        numbers = sorted({tower.prompt for tower in self.towers})
        return tuple("prompt" if n == 1 else f"prompt_{n}" for n in numbers)

    def covers(self, pipe: Any) -> bool:
        """Whether ``pipe`` belongs to this family (its components and class name)."""
        components: Mapping[str, Any] = getattr(pipe, "components", {})
        return (
            self.denoiser in components
            and all(name in components for name in self.needs)
            and all(components.get(name) is not None for name in self.loaded)
            and all(components.get(name) is None for name in self.unloaded)
            and not any(name in components for name in self.lacks)
            and type(pipe).__name__.startswith(self.class_prefix)
            and all(tower.runs(components.get(tower.component)) for tower in self.towers)
            and type(pipe).__name__ not in dict(self.refused)
        )

    @property
    def ti_towers(self) -> tuple[Tower, ...]:
        """The towers that take textual-inversion vectors (none: the family takes no embeddings)."""
        return tuple(tower for tower in self.towers if tower.ti_part is not None)


# --- padding --------------------------------------------------------------------------------------


def pad_like_a1111(
    encoders: Sequence[TextEncoder],
    encoded: list[list[tuple[Tensor, Tensor | None]]],
    empties: Sequence[Tensor | None],
    positives: int,
) -> None:
    """Give every chunked group the same length, in place, the way A1111 stacks conds (§6.3).

    Positive conds (every AND part of every image) are stacked by repeating the last token vector
    of the shorter ones; cond and uncond of different lengths are then padded with encoded empty
    chunks (A1111's "Pad conds", which a pipeline's single batch needs). CLIP towers whose
    outputs are concatenated (SDXL, SD3; ``prompt_2``) get the same length too. Towers with a
    fixed window (T5) are left as they are; a chunked T5 (``long_prompts="chunk"``) is padded
    apart from the CLIP towers, with empty windows only.
    """
    for together in _padded_together(encoders):
        target = max(e.shape[1] for i in together for e, _ in encoded[i])
        for i in together:
            _pad_tower(encoders[i], encoded[i], empties[i], positives, target)


def _pad_tower(
    encoder: TextEncoder,
    outputs: list[tuple[Tensor, Tensor | None]],
    empty: Tensor | None,
    positives: int,
    target: int,
) -> None:
    window = encoder.window.length
    longest = max(e.shape[1] for e, _ in outputs[:positives])
    for g, (embeds, pooled) in enumerate(outputs):
        if g < positives and embeds.shape[1] < longest and _stacks_by_repeating(encoder):
            last = embeds[:, -1:].expand(-1, longest - embeds.shape[1], -1)
            embeds = torch.cat([embeds, last], dim=1)
        missing = (target - embeds.shape[1]) // window
        if missing:
            assert empty is not None, "empties_for_a1111 said no empty window is needed"
            pad = empty.to(embeds.dtype).repeat(missing, 1)
            embeds = torch.cat([embeds, pad.expand(embeds.shape[0], -1, -1)], dim=1)
        outputs[g] = (embeds, pooled)


# --- layouts: one group's embeds and pooled vector, as the family's denoiser takes them ----------


def _sd_layout(pipe: Any, towers: Sequence[Encoded], t5_length: int) -> tuple[Tensor, None]:
    return towers[0].embeds, None


def _sdxl_layout(
    pipe: Any, towers: Sequence[Encoded], t5_length: int
) -> tuple[Tensor, Tensor | None]:
    """CLIP-L and OpenCLIP-G side by side; the pooled vector is OpenCLIP-G's."""
    return torch.cat([towers[0].embeds, towers[1].embeds], dim=-1), towers[1].pooled


def _single_layout(
    pipe: Any, towers: Sequence[Encoded], t5_length: int
) -> tuple[Tensor, Tensor | None]:
    """One tower gives both (the SDXL refiner's OpenCLIP-G)."""
    return towers[0].embeds, towers[0].pooled


def _flux_layout(
    pipe: Any, towers: Sequence[Encoded], t5_length: int
) -> tuple[Tensor, Tensor | None]:
    """T5 gives the sequence, CLIP-L only the pooled vector."""
    return towers[1].embeds, towers[0].pooled


def _t5_layout(
    pipe: Any, towers: Sequence[Encoded], t5_length: int
) -> tuple[Tensor, Tensor | None]:
    """One T5 tower gives the sequence, and there is no pooled vector (Chroma, PixArt, Wan)."""
    return towers[0].embeds, None


def _sd3_layout(pipe: Any, towers: Sequence[Encoded], t5_length: int) -> tuple[Tensor, Tensor]:
    """[CLIP-L | CLIP-G] padded (or cut, as diffusers' F.pad does) to T5's width, then T5.

    Without T5 its part is zeros of ``t5_length`` tokens, as diffusers does.
    """
    clip = torch.cat([towers[0].embeds, towers[1].embeds], dim=-1)
    assert towers[0].pooled is not None
    assert towers[1].pooled is not None
    pooled = torch.cat([towers[0].pooled, towers[1].pooled], dim=-1)
    if len(towers) == 3:
        t5 = towers[2].embeds
    else:
        width = pipe.transformer.config.joint_attention_dim
        t5 = torch.zeros(clip.shape[0], t5_length, width, dtype=clip.dtype, device=clip.device)
    clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
    return torch.cat([clip, t5], dim=-2), pooled


def _hidream_layout(
    pipe: Any, towers: Sequence[Encoded], t5_length: int
) -> tuple[Tensor, Tensor | None]:
    """CLIP-L and CLIP-G give the pooled vector (side by side); T5's window and Llama's (every
    layer side by side on the channels) are packed in one tensor, one after the other on the
    sequence, zero-padded to the wider: :func:`_hidream_split` cuts them apart again."""
    assert towers[0].pooled is not None
    assert towers[1].pooled is not None
    pooled = torch.cat([towers[0].pooled, towers[1].pooled], dim=-1)
    t5, llama = towers[2].embeds, towers[3].embeds
    width = max(t5.shape[-1], llama.shape[-1])
    t5 = torch.nn.functional.pad(t5, (0, width - t5.shape[-1]))
    llama = torch.nn.functional.pad(llama, (0, width - llama.shape[-1]))
    return torch.cat([t5, llama], dim=-2), pooled


def _hidream_split(pipe: Any, t5_length: int) -> Callable[[Tensor], dict[str, Tensor]]:
    """Cut :func:`_hidream_layout`'s ``(B, L5 + L4, W)`` into ``prompt_embeds_t5`` ``(B, L5, D5)``
    and ``prompt_embeds_llama3`` ``(layers, B, L4, D4)``, as HiDream's ``encode_prompt`` gives
    them."""
    t5_width = int(pipe.text_encoder_3.config.d_model)
    t5_window = min(t5_length, int(pipe.tokenizer_3.model_max_length))
    config = pipe.text_encoder_4.config
    layers, width = int(config.num_hidden_layers), int(config.hidden_size)

    def split(packed: Tensor) -> dict[str, Tensor]:
        t5 = packed[:, :t5_window, :t5_width]
        llama = packed[:, t5_window:, : layers * width]
        llama = llama.reshape(llama.shape[0], llama.shape[1], layers, width).permute(2, 0, 1, 3)
        return {"prompt_embeds_t5": t5.contiguous(), "prompt_embeds_llama3": llama.contiguous()}

    return split


def _sana_wm_split(pipe: Any, t5_length: int) -> Callable[[Tensor], dict[str, Tensor]]:
    """SANA-WM's transformer takes its text as ``(B, 1, L, D)``: the embeds with a new axis."""

    def split(packed: Tensor) -> dict[str, Tensor]:
        return {"prompt_embeds": packed[:, None]}

    return split


# --- the records ----------------------------------------------------------------------------------


def _qwen_image_edit(
    name: str,
    title: str,
    pipelines: tuple[str, ...],
    template: Template,
    refused: tuple[tuple[str, str], ...] = (),
) -> Family:
    """A Qwen-Image pipeline with a ``processor`` (Edit, Edit Plus, Layered): Qwen-Image's
    record with another template, covering the class names that start as its first's."""
    prefix = pipelines[0].removesuffix("Pipeline")
    return Family(
        name=name,
        title=title,
        pipelines=pipelines,
        denoiser="transformer",
        loaded=("text_encoder", "processor"),
        lacks=("text_encoder_2",),
        class_prefix=prefix,
        towers=(
            Tower(
                "text_encoder", "tokenizer", "llm", 1, llm=template, models=_QWEN_VL, name="qwen"
            ),
        ),
        layout=_t5_layout,
        padding=pad_like_a1111,
        sequence_length=512,
        empty_negative="omitted",  # true CFG only with a negative prompt, as Qwen-Image
        batched_guidance=False,
        step_tensors=("prompt_embeds",),
        mask_argument="prompt_embeds_mask",
        refused=refused,
    )


#: The CLIP text models (SD's tower: Kolors has the same components with ChatGLM3 in its place).
_CLIP_MODELS = ("CLIPTextModel", "CLIPTextModelWithProjection")
_CLIP_L = Tower("text_encoder", "tokenizer", "sdxl", 1)
_CLIP_G = Tower(
    "text_encoder_2", "tokenizer_2", "sdxl", 2, pooled=True, ti_part="clip_g", name="clip_g"
)

#: Qwen-Image's Qwen2.5-VL: ``prompt_template_encode`` around the prompt, its first
#: ``prompt_template_encode_start_idx`` (34) tokens dropped, the tokenizer cut at
#: ``tokenizer_max_length`` (1024) plus those, the last hidden state of the text's tokens only
#: (a batch padded to its longest, masked), cut at ``max_sequence_length``.
_QWEN_IMAGE = Template(
    attribute="prompt_template_encode",
    drop="prompt_template_encode_start_idx",
    length="tokenizer_max_length",
    cut=True,
)
#: Qwen-Image Edit's Qwen2.5-VL: the same, its template holding the input image's placeholder,
#: which the ``processor`` expands to the image's vision tokens (the image resized to 1024² pixels
#: first); the first 64 tokens dropped, nothing truncated or cut (the processor call has no
#: length), so the encoding holds the vision tokens' states, then the text's.
_QWEN_IMAGE_EDIT = Template(
    attribute="prompt_template_encode",
    drop="prompt_template_encode_start_idx",
    length="tokenizer_max_length",
    processor="processor",
    image_area=1024 * 1024,
)
#: Qwen-Image Edit Plus: one ``Picture n: <|vision_start|><|image_pad|><|vision_end|>`` before
#: the prompt per input image (one image or a list), each resized to 384² pixels.
_QWEN_IMAGE_EDIT_PLUS = Template(
    attribute="prompt_template_encode",
    drop="prompt_template_encode_start_idx",
    length="tokenizer_max_length",
    processor="processor",
    picture="Picture {}: <|vision_start|><|image_pad|><|vision_end|>",
    image_area=384 * 384,
)
_QWEN_VL = ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLModel")
_QWEN_IMAGE_REFUSED = (
    (
        "QwenImage21Pipeline",
        "it encodes its prompt through a processor (no tokenizer component), which encode "
        "does not run yet",
    ),
)
#: Z-Image's Qwen3: the chat template over one user message (``enable_thinking=True``), padded
#: to ``max_sequence_length`` (512) and masked, ``hidden_states[-2]`` of the text's tokens, one
#: tensor per prompt.
_Z_IMAGE = Template(
    options=(("add_generation_prompt", True), ("enable_thinking", True)),
    layers=(-2,),
    padding="max_length",
)

#: Z-Image Omni's Qwen3: the conversation written out (no chat template) and cut into segments
#: at each condition image's vision slot; each segment padded to ``max_sequence_length`` and
#: encoded as a row of one batch, ``hidden_states[-2]`` of each segment's text positions.
_Z_IMAGE_OMNI = Template(
    layers=(-2,),
    padding="max_length",
    segments=Segments(
        plain=("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"),
        first="<|im_start|>user\n<|vision_start|>",
        between="<|vision_end|><|vision_start|>",
        prompt=("<|vision_end|>", "<|im_end|>\n<|im_start|>assistant\n<|vision_start|>"),
        last="<|vision_end|><|im_end|>",
    ),
)

#: Flux.2's Mistral 3: the chat template over its system message and the prompt (text parts),
#: padded to ``max_sequence_length`` (512) and masked, hidden states 10, 20 and 30
#: (``text_encoder_out_layers``) side by side on the channels, over the whole window.
_FLUX2 = Template(
    system="system_message",
    parts=True,
    options=(("add_generation_prompt", False),),
    layers=(10, 20, 30),
    layers_argument="text_encoder_out_layers",
    padding="max_length",
    output="window",
)
#: Flux.2 Klein's Qwen3: the chat template over the prompt (``enable_thinking=False``), padded to
#: ``max_sequence_length`` and masked, hidden states 9, 18 and 27 side by side.
_FLUX2_KLEIN = Template(
    options=(("add_generation_prompt", True), ("enable_thinking", False)),
    layers=(9, 18, 27),
    layers_argument="text_encoder_out_layers",
    padding="max_length",
    output="window",
)

#: Lumina 2's Gemma 2: ``system_prompt + " <Prompt Start> "`` before the positive prompt only,
#: the tokenizer's BOS, the window padded to ``max_sequence_length`` (256) on the tokenizer's side
#: (the pipeline sets it to the right) and masked, ``hidden_states[-2]`` of the whole window with
#: its mask; the negative alone, in the same window.
_LUMINA2 = Template(
    preamble="system_prompt",
    preamble_end=" <Prompt Start> ",
    layers=(-2,),
    padding="max_length",
    output="window",
    specials=True,
    plain_negative=True,
    padding_side="tokenizer",
)
#: SANA's Gemma 2: the complex human instruction (its ``__call__`` default) before the positive
#: prompt, lower-cased and stripped; the window grows by the instruction's tokens less two, is
#: padded on the right, and its BOS and last ``max_sequence_length - 1`` positions of the last
#: hidden state are kept; the negative alone, in a window of ``max_sequence_length``.
_SANA = Template(
    instruction="complex_human_instruction",
    padding="max_length",
    output="window",
    specials=True,
    plain_negative=True,
    clean="lower-strip",
)
#: SANA-WM's Gemma 2: SANA's, with its ``chi_prompt`` (``DEFAULT_CHI_PROMPT`` when ``None``) as
#: the instruction, the prompt as written (no clean-up), the tokenizer's padding put on the right
#: by the call; its transformer takes ``(B, 1, L, D)`` (:func:`_sana_wm_split`).
_SANA_WM = Template(
    instruction="chi_prompt",
    instruction_constant="DEFAULT_CHI_PROMPT",
    padding="max_length",
    output="window",
    specials=True,
    plain_negative=True,
)
_GEMMA2 = ("Gemma2Model", "Gemma2ForCausalLM")
#: HiDream's Llama-3.1: the prompt alone with the tokenizer's BOS, padded on the right to
#: ``min(max_sequence_length, model_max_length)`` and masked, every layer's output (stacked by
#: the pipeline; side by side on the channels here), the whole window.
_HIDREAM_LLAMA = Template(
    bare=True,
    specials=True,
    every_layer=True,
    padding="max_length",
    output="window",
    attentions=True,
)


def _hidream_clip(component: str, tokenizer: str, prompt: int, name: str) -> Tower:
    """HiDream's long CLIP-L/G: only the projected pooled vector, of one 218-token window."""
    return Tower(
        component,
        tokenizer,
        "clip",
        prompt,
        pooled=True,
        clip_skip=False,
        policy="pooled-only",
        window=218,
        models=("CLIPTextModelWithProjection",),
        name=name,
    )


#: Every family, in the order of :data:`FAMILIES`.
RECORDS: tuple[Family, ...] = (
    Family(
        name="sd",
        title="SD 1.x/2.x",
        pipelines=("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"),
        denoiser="unet",
        loaded=("text_encoder",),
        lacks=("text_encoder_2",),
        towers=(
            Tower(
                "text_encoder", "tokenizer", "clip", 1, ti_part="", models=_CLIP_MODELS, name="clip"
            ),
        ),
        layout=_sd_layout,
        padding=pad_like_a1111,
        step_tensors=("prompt_embeds",),
    ),
    Family(
        name="sdxl",
        title="SDXL (base and refiner)",
        pipelines=("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"),
        denoiser="unet",
        needs=("text_encoder_2",),
        loaded=("text_encoder",),
        towers=(
            Tower("text_encoder", "tokenizer", "sdxl", 1, ti_part="clip_l", name="clip_l"),
            _CLIP_G,
        ),
        layout=_sdxl_layout,
        padding=pad_like_a1111,
        empty_negative="zeros",
        step_tensors=("prompt_embeds", "add_text_embeds"),
        step_pooled="add_text_embeds",
    ),
    Family(
        name="sdxl-refiner",
        title="",
        pipelines=("StableDiffusionXLImg2ImgPipeline",),  # with text_encoder=None
        denoiser="unet",
        needs=("text_encoder_2",),
        unloaded=("text_encoder",),
        towers=(_CLIP_G,),
        layout=_single_layout,
        padding=pad_like_a1111,
        empty_negative="zeros",
        step_tensors=("prompt_embeds", "add_text_embeds"),
        step_pooled="add_text_embeds",
    ),
    Family(
        name="sd3",
        repeats_embeds=False,
        title="SD3/3.5",
        pipelines=(
            "StableDiffusion3Pipeline",
            "StableDiffusion3Img2ImgPipeline",
            "StableDiffusion3InpaintPipeline",
            "StableDiffusion3ControlNetPipeline",
            "StableDiffusion3ControlNetInpaintingPipeline",
            "StableDiffusion3PAGPipeline",
            "StableDiffusion3PAGImg2ImgPipeline",
        ),
        denoiser="transformer",
        needs=("text_encoder_3",),
        lacks=("text_encoder_4",),  # HiDream has a fourth
        towers=(
            Tower("text_encoder", "tokenizer", "sdxl", 1, pooled=True, name="clip_l"),
            Tower("text_encoder_2", "tokenizer_2", "sdxl", 2, pooled=True, name="clip_g"),
            Tower("text_encoder_3", "tokenizer_3", "t5", 3, optional=True, name="t5"),
        ),
        layout=_sd3_layout,
        padding=pad_like_a1111,
        sequence_length=256,
        step_tensors=("prompt_embeds", "pooled_prompt_embeds"),
        step_pooled="pooled_prompt_embeds",
        # The joint attention takes CLIP's 77·k tokens and any number of T5 windows.
        long_prompts=("truncate", "chunk"),
    ),
    Family(
        name="flux",
        repeats_embeds=False,
        title="Flux.1",
        pipelines=(
            "FluxPipeline",
            "FluxImg2ImgPipeline",
            "FluxInpaintPipeline",
            "FluxFillPipeline",
            "FluxKontextPipeline",
            "FluxKontextInpaintPipeline",
            "FluxControlPipeline",
            "FluxControlImg2ImgPipeline",
            "FluxControlInpaintPipeline",
            "FluxControlNetPipeline",
            "FluxControlNetImg2ImgPipeline",
            "FluxControlNetInpaintPipeline",
        ),
        denoiser="transformer",
        needs=("text_encoder_2",),  # Flux.2 has one (LLM) text encoder
        lacks=("text_encoder_3",),
        class_prefix="Flux",
        towers=(
            Tower(
                "text_encoder",
                "tokenizer",
                "clip",
                1,
                pooled=True,
                clip_skip=False,
                policy="pooled-only",
                name="clip_l",
            ),
            Tower("text_encoder_2", "tokenizer_2", "t5", 2, name="t5"),
        ),
        layout=_flux_layout,
        padding=pad_like_a1111,
        sequence_length=512,
        empty_negative="omitted",  # as diffusers: no negative, no true CFG
        batched_guidance=False,
        step_tensors=("prompt_embeds",),
        # Text tokens all get position 0 (txt_ids are zeros): any number of windows fits.
        long_prompts=("truncate", "chunk"),
    ),
    Family(
        name="chroma",
        repeats_embeds=False,
        title="Chroma",
        pipelines=("ChromaPipeline", "ChromaImg2ImgPipeline", "ChromaInpaintPipeline"),
        denoiser="transformer",
        loaded=("text_encoder",),
        lacks=("text_encoder_2",),
        class_prefix="Chroma",
        towers=(Tower("text_encoder", "tokenizer", "t5", 1, mask_padding=True, name="t5"),),
        layout=_t5_layout,
        padding=pad_like_a1111,
        sequence_length=512,
        batched_guidance=False,
        step_tensors=("prompt_embeds",),
        attention_mask="text+1",
        # The transformer reads the text through its mask: more windows fit as Flux's do.
        long_prompts=("truncate", "chunk"),
    ),
    Family(
        name="pixart",
        title="PixArt-α/Σ",
        pipelines=("PixArtSigmaPipeline", "PixArtSigmaPAGPipeline", "PixArtAlphaPipeline"),
        denoiser="transformer",
        loaded=("text_encoder",),
        lacks=("text_encoder_2",),
        class_prefix="PixArt",
        towers=(
            Tower(
                "text_encoder",
                "tokenizer",
                "t5",
                1,
                mask_padding=True,
                clean="lower-strip",
                name="t5",
            ),
        ),
        layout=_t5_layout,
        padding=pad_like_a1111,
        sequence_length=300,
        step_tensors=(),
        step_callback=False,  # its __call__ has only the old callback/callback_steps
        attention_mask="text",
        cleared=("negative_prompt",),
        # Cross-attention over the masked text: any number of windows fits.
        long_prompts=("truncate", "chunk"),
    ),
    Family(
        name="wan",
        repeats_embeds=False,
        title="Wan 2.x",
        pipelines=(
            "WanPipeline",
            "WanImageToVideoPipeline",
            "WanVideoToVideoPipeline",
            "WanVACEPipeline",
        ),
        denoiser="transformer",
        loaded=("text_encoder",),
        lacks=("text_encoder_2",),
        class_prefix="Wan",
        towers=(
            Tower(
                "text_encoder",
                "tokenizer",
                "t5",
                1,
                mask_padding=True,
                zero_padding=True,
                clean="wan",
                name="t5",
            ),
        ),
        layout=_t5_layout,
        padding=pad_like_a1111,
        sequence_length=512,
        batched_guidance=False,
        step_tensors=("prompt_embeds", "negative_prompt_embeds"),
        more_denoisers=("transformer_2",),
        # Wan always hands its transformer 512 positions, zero past the text: kept as trained.
    ),
    Family(
        name="qwen-image",
        repeats_embeds=False,
        title="Qwen-Image",
        pipelines=(
            "QwenImagePipeline",
            "QwenImageImg2ImgPipeline",
            "QwenImageInpaintPipeline",
            "QwenImageControlNetPipeline",
            "QwenImageControlNetInpaintPipeline",
        ),
        denoiser="transformer",
        loaded=("text_encoder",),
        lacks=("text_encoder_2", "processor"),
        class_prefix="QwenImage",
        towers=(
            Tower(
                "text_encoder",
                "tokenizer",
                "llm",
                1,
                llm=_QWEN_IMAGE,
                models=_QWEN_VL,
                name="qwen",
            ),
        ),
        layout=_t5_layout,
        padding=pad_like_a1111,
        sequence_length=512,
        # True CFG only with a negative prompt: encode's default "" passes none (" " is one).
        empty_negative="omitted",
        batched_guidance=False,
        step_tensors=("prompt_embeds",),
        mask_argument="prompt_embeds_mask",
        refused=_QWEN_IMAGE_REFUSED,
    ),
    _qwen_image_edit(
        "qwen-image-edit-plus",
        "Qwen-Image Edit Plus",
        ("QwenImageEditPlusPipeline",),
        _QWEN_IMAGE_EDIT_PLUS,
    ),
    _qwen_image_edit(
        "qwen-image-edit",
        "Qwen-Image Edit",
        ("QwenImageEditPipeline", "QwenImageEditInpaintPipeline"),
        _QWEN_IMAGE_EDIT,
        refused=(
            (
                "QwenImageEditPlusPipeline",
                "it writes a 'Picture n:' line per input image before the prompt: it is "
                "Qwen-Image Edit Plus ('qwen-image-edit-plus'), and that record does not cover it",
            ),
        ),
    ),
    # Layered reads its image only to caption it when no prompt is given: its prompt encoding
    # is Qwen-Image's (the processor is a component, but not read by encode_prompt).
    _qwen_image_edit(
        "qwen-image-layered", "Qwen-Image Layered", ("QwenImageLayeredPipeline",), _QWEN_IMAGE
    ),
    Family(
        name="z-image",
        title="Z-Image",
        pipelines=(
            "ZImagePipeline",
            "ZImageImg2ImgPipeline",
            "ZImageInpaintPipeline",
            "ZImageControlNetPipeline",
            "ZImageControlNetInpaintPipeline",
        ),
        denoiser="transformer",
        loaded=("text_encoder",),
        lacks=("text_encoder_2", "siglip"),
        class_prefix="ZImage",
        towers=(
            Tower(
                "text_encoder",
                "tokenizer",
                "llm",
                1,
                llm=_Z_IMAGE,
                models=("Qwen3Model", "Qwen3ForCausalLM"),
                name="qwen",
            ),
        ),
        layout=_t5_layout,
        padding=pad_like_a1111,
        sequence_length=512,
        # One transformer call per step, lists [cond…, uncond…] (promptweights.diffusers._listed).
        batched_guidance=True,
        step_tensors=("prompt_embeds",),
        mask_argument="",
        embeds_as_list=True,
    ),
    Family(
        name="z-image-omni",
        title="Z-Image Omni",
        pipelines=("ZImageOmniPipeline",),
        denoiser="transformer",
        loaded=("text_encoder", "siglip"),
        lacks=("text_encoder_2",),
        class_prefix="ZImageOmni",
        towers=(
            Tower(
                "text_encoder",
                "tokenizer",
                "llm",
                1,
                llm=_Z_IMAGE_OMNI,
                models=("Qwen3Model", "Qwen3ForCausalLM"),
                name="qwen",
            ),
        ),
        layout=_t5_layout,
        padding=pad_like_a1111,
        sequence_length=512,
        batched_guidance=False,
        step_tensors=(),
        runtime_refused=(
            "its prompt_embeds are lists of segments per image, in its step callback and in its "
            "transformer's cap_feats=, which neither the step callback nor the denoiser hooks swap"
        ),
        mask_argument="",
        embeds_as_list=True,
    ),
    Family(
        name="flux2",
        title="Flux.2",
        pipelines=("Flux2Pipeline",),
        denoiser="transformer",
        loaded=("text_encoder",),
        lacks=("text_encoder_2",),
        class_prefix="Flux2",
        towers=(
            Tower(
                "text_encoder",
                "tokenizer",
                "llm",
                1,
                llm=_FLUX2,
                models=("Mistral3ForConditionalGeneration", "Mistral3Model"),
                name="mistral",
            ),
        ),
        layout=_t5_layout,
        padding=pad_like_a1111,
        sequence_length=512,
        empty_negative="omitted",  # guidance-distilled: no negative, no true CFG
        batched_guidance=False,
        step_tensors=("prompt_embeds",),
        mask_argument="",
    ),
    Family(
        name="flux2-klein",
        title="Flux.2 Klein",
        pipelines=("Flux2KleinPipeline", "Flux2KleinInpaintPipeline", "Flux2KleinKVPipeline"),
        denoiser="transformer",
        loaded=("text_encoder",),
        lacks=("text_encoder_2",),
        class_prefix="Flux2Klein",
        towers=(
            Tower(
                "text_encoder",
                "tokenizer",
                "llm",
                1,
                llm=_FLUX2_KLEIN,
                models=("Qwen3ForCausalLM", "Qwen3Model"),
                name="qwen",
            ),
        ),
        layout=_t5_layout,
        padding=pad_like_a1111,
        sequence_length=512,
        batched_guidance=False,
        step_tensors=("prompt_embeds",),
        mask_argument="",
    ),
    Family(
        name="kolors",
        repeats_embeds=False,
        title="Kolors",
        pipelines=("KolorsPipeline", "KolorsImg2ImgPipeline", "KolorsPAGPipeline"),
        denoiser="unet",
        loaded=("text_encoder",),
        lacks=("text_encoder_2",),
        class_prefix="Kolors",
        # ChatGLM3 (diffusers' module): [gMASK] sop + text, left-padded to max_sequence_length
        # (256), hidden_states[-2]; the pooled vector is the last layer's last position, as
        # SDXL's OpenCLIP-G pooled vector feeds the UNet's added embeddings.
        towers=(
            Tower(
                "text_encoder",
                "tokenizer",
                "chatglm",
                1,
                pooled=True,
                clip_skip=False,
                models=("ChatGLMModel",),
                name="glm",
            ),
        ),
        layout=_single_layout,
        padding=pad_like_a1111,
        sequence_length=256,
        empty_negative="zeros",
        step_tensors=("prompt_embeds", "add_text_embeds"),
        step_pooled="add_text_embeds",
    ),
    Family(
        name="lumina2",
        repeats_embeds=False,
        title="Lumina 2",
        pipelines=("Lumina2Pipeline",),
        denoiser="transformer",
        loaded=("text_encoder",),
        lacks=("text_encoder_2",),
        class_prefix="Lumina2",
        towers=(
            Tower(
                "text_encoder", "tokenizer", "llm", 1, llm=_LUMINA2, models=_GEMMA2, name="gemma"
            ),
        ),
        layout=_t5_layout,
        padding=pad_like_a1111,
        sequence_length=256,
        batched_guidance=False,  # cond and uncond are two transformer calls
        step_tensors=("prompt_embeds",),
    ),
    Family(
        name="sana-wm",
        title="SANA-WM",
        pipelines=("SanaWMPipeline",),
        denoiser="transformer",
        loaded=("text_encoder",),
        lacks=("text_encoder_2",),
        class_prefix="SanaWM",
        towers=(
            Tower(
                "text_encoder", "tokenizer", "llm", 1, llm=_SANA_WM, models=_GEMMA2, name="gemma"
            ),
        ),
        layout=_t5_layout,
        padding=pad_like_a1111,
        sequence_length=300,
        # One transformer call per step on [negative, positive], the text third positionally
        # ((2, 1, L, D)) and its mask as mask=: editing and AND switch there, inside attach.
        batched_guidance=True,
        step_tensors=(),
        step_callback=False,
        positional_text=True,
        cleared=("prompt",),  # a required argument: None with the embeds
        split=_sana_wm_split,
    ),
    Family(
        name="sana",
        repeats_embeds=False,
        title="SANA",
        pipelines=(
            "SanaPipeline",
            "SanaPAGPipeline",
            "SanaControlNetPipeline",
            "SanaSprintPipeline",
            "SanaSprintImg2ImgPipeline",
            "SanaVideoPipeline",
            "SanaImageToVideoPipeline",
        ),
        denoiser="transformer",
        loaded=("text_encoder",),
        lacks=("text_encoder_2",),
        class_prefix="Sana",
        towers=(
            Tower("text_encoder", "tokenizer", "llm", 1, llm=_SANA, models=_GEMMA2, name="gemma"),
        ),
        layout=_t5_layout,
        padding=pad_like_a1111,
        sequence_length=300,
        step_tensors=("prompt_embeds",),
        cleared=("negative_prompt",),  # its negative_prompt="" clashes with the embeds
        refused=(
            (
                "SanaWMPipeline",
                "its transformer takes (B, 1, L, D) prompt embeddings: it is SANA-WM "
                "('sana-wm'), and that record does not cover it",
            ),
        ),
    ),
    Family(
        name="hidream",
        title="HiDream-I1",
        pipelines=("HiDreamImagePipeline",),
        denoiser="transformer",
        needs=("text_encoder_4",),
        class_prefix="HiDream",
        towers=(
            _hidream_clip("text_encoder", "tokenizer", 1, "clip_l"),
            _hidream_clip("text_encoder_2", "tokenizer_2", 2, "clip_g"),
            Tower(
                "text_encoder_3", "tokenizer_3", "t5", 3, mask_padding=True, capped=True, name="t5"
            ),
            Tower(
                "text_encoder_4",
                "tokenizer_4",
                "llm",
                4,
                llm=_HIDREAM_LLAMA,
                capped=True,
                models=("LlamaForCausalLM", "LlamaModel"),
                name="llama",
            ),
        ),
        layout=_hidream_layout,
        padding=pad_like_a1111,
        sequence_length=128,
        # One [uncond, cond] batch; its text is two tensors (encoder_hidden_states_t5/_llama3),
        # cut from the packed prompt_embeds by split, for the step callback and the AND hook.
        step_tensors=("prompt_embeds_t5", "prompt_embeds_llama3", "pooled_prompt_embeds"),
        step_pooled="pooled_prompt_embeds",
        split=_hidream_split,
    ),
)

#: Pipeline families this adapter knows, by the name :func:`family_of` returns.
FAMILIES = tuple(record.name for record in RECORDS)

_BY_NAME = {record.name: record for record in RECORDS}


def family_record(name: str) -> Family:
    """The record of the family called ``name`` (one of :data:`FAMILIES`)."""
    return _BY_NAME[name]


def record_of(pipe: Any) -> Family:
    """The record of ``pipe``'s family (see :func:`family_of`)."""
    for record in RECORDS:
        if record.covers(pipe):
            return record
    titles = [record.title for record in RECORDS if record.title]
    closest, reason = _closest(pipe)
    raise UnsupportedPipelineError(
        f"promptweights.diffusers does not know {type(pipe).__name__}; it supports "
        f"{', '.join(titles[:-1])} and {titles[-1]} pipelines. The closest is {closest.title} "
        f"({closest.name!r}): {reason}"
    )


#: The text-model classes the towers run (CLIP with or without projection, T5, umT5, and the
#: decoder LLMs of the LLM families).
SUPPORTED_TEXT_MODELS = frozenset(
    {"CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel", "UMT5EncoderModel"}
    | {model for record in RECORDS for tower in record.towers for model in tower.models}
)


def _common_start(a: str, b: str) -> int:
    """How many leading characters ``a`` and ``b`` share."""
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


def _closest(pipe: Any) -> tuple[Family, str]:
    """The titled family whose pipeline class names share the longest start with ``pipe``'s, and
    why ``pipe`` is not one of them (a text encoder that is not supported, or its components)."""
    name = type(pipe).__name__

    def shared(record: Family) -> int:
        return max(_common_start(name, cls) for cls in record.pipelines)

    titled = [record for record in RECORDS if record.title]
    closest = max(titled, key=shared)  # max keeps the first of equals
    listing = [record for record in titled if name in record.pipelines]
    if listing:  # the record that lists the class: why it does not cover this one
        closest = listing[0]
    for record in [] if listing else titled:
        refused = dict(record.refused)
        if name in refused:
            return record, refused[name]
    components: Mapping[str, Any] = getattr(pipe, "components", None) or {}
    encoders = {
        key: type(value).__name__
        for key, value in components.items()
        if key.startswith("text_encoder") and value is not None
    }
    unknown = {k: v for k, v in encoders.items() if v not in SUPPORTED_TEXT_MODELS}
    if unknown:
        listed = ", ".join(f"{key} is a {cls}" for key, cls in sorted(unknown.items()))
        return closest, (
            f"its text encoder is not supported ({listed}; supported: "
            f"{', '.join(sorted(SUPPORTED_TEXT_MODELS))})"
        )
    if not components:
        return closest, "it is not a diffusers pipeline (it has no components)"
    missing = [name for name in closest.loaded if name in components and components[name] is None]
    if missing:
        return closest, f"its {', '.join(missing)} is None, and that family's encoding reads it"
    towers = ", ".join(f"{t.component} ({t.kind})" for t in closest.towers)
    return closest, (
        f"its components ({', '.join(sorted(components))}) do not fit that family's "
        f"{closest.denoiser} and text encoders {towers}"
    )


def encoder_names(pipe: Any) -> tuple[str, ...]:
    """The names a ``TE(name: …)`` block gives ``pipe``'s text encoders, in tower order
    (:mod:`promptweights.routing`): ``("clip_l", "t5")`` for Flux.1.

    Raises:
        UnsupportedPipelineError: as :func:`family_of`.
    """
    return tuple(tower.label for tower in record_of(pipe).towers)


def family_of(pipe: Any) -> str:
    """Return the family of a diffusers pipeline: one of :data:`FAMILIES`.

    Args:
        pipe: a diffusers pipeline.

    Returns:
        ``"sd"`` (SD 1.x/2.x), ``"sdxl"``, ``"sdxl-refiner"`` (OpenCLIP-G only), ``"sd3"``,
        ``"flux"``, ``"chroma"``, ``"pixart"``, ``"wan"``, ``"qwen-image"``,
        ``"qwen-image-edit-plus"``, ``"qwen-image-edit"``, ``"qwen-image-layered"``, ``"z-image"``,
        ``"z-image-omni"``, ``"flux2"``, ``"flux2-klein"``, ``"kolors"``, ``"lumina2"``,
        ``"sana-wm"``, ``"sana"`` or ``"hidream"``.

    Raises:
        UnsupportedPipelineError: for any other pipeline; the message names the closest family
            and why the pipeline is not one of it.
    """
    return record_of(pipe).name
