"""Decoder-LLM text encoders (Qwen2.5-VL, Qwen3, Mistral, Llama, Gemma…) as the pipelines run them.

A :class:`Template` in a tower's record says, as data, what the pipeline's ``encode_prompt`` does:

* the text around the user's prompt: a ``"{}"`` template the pipeline holds in an attribute
  (Qwen-Image's ``prompt_template_encode``), or the tokenizer's chat template over the
  conversation the pipeline writes (Z-Image, Flux.2: a user message, an optional system message,
  ``apply_chat_template`` options such as ``enable_thinking``);
* the template tokens it drops from the front (``prompt_template_encode_start_idx``), the
  tokenizer's truncation length, and whether the encoding is cut at ``max_sequence_length``;
* which hidden states it reads (the last, ``hidden_states[-2]``, or several stacked on the
  channels as Flux.2 does);
* how it pads: to the longest text of the batch (one text: no padding; the LLM runs on the
  text only) or to ``max_length`` (the LLM runs on the whole window, padding masked), and what
  it hands the denoiser: the text's positions only (``"valid"``, with a mask per image) or the
  whole window.

:func:`text_encoder` builds the tower's :class:`~promptweights.encoders.TextEncoder` from it;
:func:`shape` cuts the built rows to what the pipeline hands its denoiser, and gives the masks.

**Input images** (Qwen-Image Edit, Edit Inpaint, Edit Plus: ``Template.processor``). Their
``encode_prompt`` runs the pipeline's processor on the templated text and the input image (resized
first, as their ``__call__`` resizes it) and Qwen2.5-VL on both. :func:`vision` makes the same
processor call once per request, expands the template's ``<|image_pad|>`` placeholders as the
processor does (one per vision token) and runs the vision tower once (``get_image_features``);
every forward pass of the encoder then gets those features as ``mm_encoder_outputs`` (and the
``image_grid_thw`` the pipeline passes), one copy per row, so that an unweighted row equals the
pipeline's bit for bit without reading the image again. The placeholders are template text: never
weighted. Rows continued from a cached prefix (``span-lerp``'s masked rows) need no image input:
their suffix starts in the user's text, after the image. Position ids stay the 1-D ones the
pipeline's call gives (it passes no ``mm_token_type_ids``, so the multimodal rope index is unused).

**Segments** (Z-Image Omni: ``Template.segments``). Its conversation is cut at each condition
image's vision slot into segments encoded as rows of one batch; only the prompt's segment holds
user text. The encoder is that segment's; the other segments ride along as
``TextEncoder.companions`` (each row runs in the pipeline's batch), and :func:`segment_lists`
puts their states around the prompt's in the lists the pipeline takes.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from promptweights.encoders import TextEncoder, execution_device, text_mask
from promptweights.errors import InvalidArgumentError, UnsupportedPipelineError
from promptweights.tokens import TokenizedPrompt

# Stands for the user's text while a chat template is rendered; split out afterwards.
_SENTINEL = "\u2063PROMPTWEIGHTS\u2063"


@dataclass(frozen=True, slots=True)
class Segments:
    """Z-Image Omni's conversation, cut into segments at each condition image's vision slot;
    each segment is tokenised and encoded as a row of its own, in one batch, and the pipeline
    takes the segments' states as a list.

    Attributes:
        plain: the text around the prompt without condition images (one segment).
        first: the segment before the first image.
        between: the segment between two images.
        prompt: the text around the prompt, after the last image.
        last: the segment after the prompt's.
    """

    plain: tuple[str, str]
    first: str
    between: str
    prompt: tuple[str, str]
    last: str

    def around(self, images: int) -> tuple[list[str], tuple[str, str], list[str]]:
        """The segments before the prompt's, the text around the prompt, the segments after."""
        if images == 0:
            return [], self.plain, []
        return [self.first] + [self.between] * (images - 1), self.prompt, [self.last]


@dataclass(frozen=True, slots=True)
class Template:
    """How a pipeline feeds a decoder LLM and reads it back (a :class:`Tower`'s ``llm``).

    Attributes:
        attribute: the pipeline attribute holding a ``"{}"`` template of the whole input
            (Qwen-Image's ``prompt_template_encode``); ``""``: the tokenizer's chat template.
        system: the pipeline attribute holding a system message put before the user's (Flux.2's
            ``system_message``); ``""``: none.
        parts: message content as a list of text parts (``[{"type": "text", "text": …}]``).
        options: keyword arguments of the pipeline's ``apply_chat_template`` call
            (``add_generation_prompt``, ``enable_thinking``).
        drop: the pipeline attribute holding how many template tokens it drops from the front
            of the encoding (``prompt_template_encode_start_idx``); ``""``: none.
        length: the pipeline attribute holding the tokenizer's truncation length before the
            dropped tokens (Qwen-Image's ``tokenizer_max_length``); ``""``: the truncation
            length is ``max_sequence_length``.
        cut: the encoding, after the drop, is cut at ``max_sequence_length`` (Qwen-Image).
        layers: the hidden states read (``hidden_states`` indices), concatenated on channels.
        layers_argument: a ``__call__`` argument whose default gives ``layers`` (Flux.2's
            ``text_encoder_out_layers``); ``""``: ``layers``.
        padding: ``"longest"``: the pipeline pads a batch to its longest text, so one text runs
            unpadded; ``"max_length"``: every text runs in the whole window, padding masked.
        output: ``"valid"``: the denoiser gets the text's positions only (after the drop), a
            batch padded with zeros and masked; ``"window"``: the whole window.
        specials: the pipeline tokenises with the tokenizer's own special tokens (a BOS the
            tokenizer adds rather than the template).
        preamble: the pipeline attribute holding text put before the prompt, followed by
            ``preamble_end`` (Lumina 2: ``system_prompt`` and ``" <Prompt Start> "``); no chat
            template then.
        preamble_end: the literal text between the preamble and the prompt.
        instruction: a ``__call__`` argument whose default, a list of lines joined with
            newlines, goes before the prompt (SANA's ``complex_human_instruction``); the window
            then grows by the instruction's tokens less two (SANA's ``max_length_all``) and the
            positive is cut to its first and last ``max_sequence_length - 1`` positions.
        instruction_constant: the constant of the pipeline's module that gives the instruction
            where the argument's default is ``None`` (SANA-WM's ``DEFAULT_CHI_PROMPT``, used for
            ``chi_prompt=None``).
        plain_negative: the pipeline writes the template around the positive prompt only: the
            negative is tokenised alone (with the tokenizer's special tokens), in a window of
            ``max_sequence_length``, and handed over whole (Lumina 2, SANA).
        padding_side: where the padding goes: ``"right"``, or ``"tokenizer"`` (the tokenizer's
            own ``padding_side`` at encode time: Lumina 2 sets it to ``"right"`` when built, and
            a user who changes it changes what the pipeline encodes, so it is read, not assumed).
        clean: the pipeline's text clean-up (``promptweights.tokens.CLEANERS``: SANA lower-cases
            and strips the prompt).
        bare: no template at all: the prompt alone, with the tokenizer's special tokens
            (HiDream's Llama-3.1).
        every_layer: read every layer's output (``hidden_states[1:]``), side by side on the
            channels (HiDream stacks them).
        attentions: the pipeline asks the model for its attention weights (HiDream), which
            selects transformers' eager attention: run so, for the same bits.
        processor: the pipeline attribute holding the processor its ``encode_prompt`` runs on
            the text and the input image (Qwen-Image Edit's ``processor``): the template holds
            the image's placeholder (``<|image_pad|>``), which the processor repeats once per
            vision token; ``""``: the prompt encoding reads no image.
        picture: text put before the prompt for each input image, ``{}`` its number from 1
            (Qwen-Image Edit Plus: ``"Picture 1: <|vision_start|><|image_pad|><|vision_end|>"``);
            ``""``: the template's own placeholder takes the one image.
        image_area: the area (pixels) the pipeline resizes each input image to before its
            prompt encoding, keeping the aspect ratio, sides rounded to multiples of 32
            (Qwen-Image Edit 1024², Edit Plus 384²).
        segments: the conversation as separately encoded segments around one vision slot per
            condition image (Z-Image Omni: only the number of images is read, from ``image=``);
            ``None``: one text.
    """

    attribute: str = ""
    system: str = ""
    parts: bool = False
    options: tuple[tuple[str, object], ...] = ()
    drop: str = ""
    length: str = ""
    cut: bool = False
    layers: tuple[int, ...] = (-1,)
    layers_argument: str = ""
    padding: Literal["longest", "max_length"] = "longest"
    output: Literal["valid", "window"] = "valid"
    specials: bool = False
    preamble: str = ""
    preamble_end: str = ""
    instruction: str = ""
    instruction_constant: str = ""
    plain_negative: bool = False
    padding_side: Literal["right", "tokenizer"] = "right"
    clean: str = ""
    bare: bool = False
    every_layer: bool = False
    attentions: bool = False
    processor: str = ""
    picture: str = ""
    image_area: int = 0
    segments: Segments | None = None


def _instruction(pipe: Any, template: Template) -> str:
    """SANA's complex human instruction: the ``__call__`` default's lines, joined (SANA-WM:
    its module's constant, where the argument's default is ``None``)."""
    default = _call_default(pipe, template.instruction)
    if default is None and template.instruction_constant:
        module = sys.modules.get(type(pipe).__module__)
        default = getattr(module, template.instruction_constant, None)
    if not isinstance(default, (list, tuple)) or not default:
        return ""
    return "\n".join(str(line) for line in default)


def template_text(pipe: Any, tokenizer: Any, template: Template) -> tuple[str, str]:
    """The text before and after the user's prompt, as the pipeline writes it.

    Raises:
        UnsupportedPipelineError: the template does not hold the prompt exactly once.
    """
    if template.bare:
        pieces = ["", ""]
    elif template.preamble:
        pieces = [str(getattr(pipe, template.preamble)) + template.preamble_end, ""]
    elif template.instruction:
        pieces = [_instruction(pipe, template), ""]
    elif template.attribute:
        text = str(getattr(pipe, template.attribute))
        pieces = text.split("{}")
    else:
        content: object = _SENTINEL
        if template.parts:
            content = [{"type": "text", "text": _SENTINEL}]
        messages: list[dict[str, object]] = [{"role": "user", "content": content}]
        if template.system:
            system: object = str(getattr(pipe, template.system))
            if template.parts:
                system = [{"type": "text", "text": system}]
            messages.insert(0, {"role": "system", "content": system})
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, **dict(template.options))
        if isinstance(rendered, list):
            rendered = rendered[0]
        pieces = str(rendered).split(_SENTINEL)
    if len(pieces) != 2:
        raise UnsupportedPipelineError(
            f"{type(pipe).__name__}'s prompt template does not hold the prompt exactly once: its "
            "text cannot be mapped to the encoder's tokens"
        )
    return pieces[0], pieces[1]


@dataclass(eq=False)
class Vision:
    """The input images of one request, read once by a vision-language text model.

    Attributes:
        before: the text before the prompt, every image placeholder repeated once per vision
            token, as the processor writes it.
        tokens: the vision tokens of all images.
        grid: the processor's ``image_grid_thw`` ``(images, 3)``.
        pixels: the processor's ``pixel_values``.
        model: the vision-language model.
    """

    before: str
    tokens: int
    grid: Tensor
    pixels: Tensor
    model: Any
    _features: Any = None

    @property
    def features(self) -> Any:
        """The vision tower's output (``get_image_features``): one pass, at the first use (so
        under the LoRA ``encode`` loads before it encodes the rows)."""
        if self._features is None:
            device = execution_device(self.model)
            with torch.no_grad():
                self._features = self.model.get_image_features(
                    pixel_values=self.pixels.to(device),
                    image_grid_thw=self.grid.to(device),
                    return_dict=True,
                )
        return self._features

    def inputs(self, rows: int) -> dict[str, Any]:
        """The forward arguments of a pass over ``rows`` rows, each holding every image once."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        features = self.features
        # transformers splits the pooled output per image: a tuple where a tensor is typed.
        pooled: Any = tuple(features.pooler_output) * rows
        image = BaseModelOutputWithPooling(
            last_hidden_state=features.last_hidden_state, pooler_output=pooled
        )
        grid = self.grid.to(execution_device(self.model)).repeat(rows, 1)
        return {"image_grid_thw": grid, "mm_encoder_outputs": {"image": image}}


def takes_image(templates: Sequence[Template | None]) -> bool:
    """Whether a family's prompt encoding takes the pipeline's input image: reads it (Qwen-Image
    Edit, Edit Inpaint, Edit Plus) or counts it (Z-Image Omni)."""
    return any(t is not None and (t.processor or t.segments is not None) for t in templates)


def check_image(pipe: Any, templates: Sequence[Template | None], image: Any) -> None:
    """Refuse ``image=`` for a pipeline whose prompt encoding reads no image, and its absence
    where it reads one.

    Raises:
        InvalidArgumentError: as said, naming the pipeline.
    """
    reads = any(t is not None and t.processor for t in templates)
    counts = any(t is not None and t.segments is not None for t in templates)
    if image is not None and not (reads or counts):
        raise InvalidArgumentError(
            f"image= is for pipelines whose prompt encoding reads the input image (Qwen-Image "
            f"Edit, Edit Inpaint, Edit Plus) or counts them (Z-Image Omni); "
            f"{type(pipe).__name__}'s does not: pass the image to the pipeline only"
        )
    if image is None and reads:
        raise InvalidArgumentError(
            f"{type(pipe).__name__} reads the input image in its prompt encoding: pass "
            "encode(..., image=…), the image the pipeline gets"
        )


def _side(area: int, ratio: float) -> tuple[int, int]:
    """diffusers' ``calculate_dimensions``: width and height of ``area`` pixels at ``ratio``
    (width / height), each rounded to a multiple of 32."""
    width = math.sqrt(area * ratio)
    height = width / ratio
    return round(width / 32) * 32, round(height / 32) * 32


def prompt_images(pipe: Any, template: Template, image: Any) -> list[Any]:
    """The images as the pipeline hands them to its ``encode_prompt``: resized to the
    template's area by the pipeline's own ``image_processor``.

    Raises:
        InvalidArgumentError: no image, or not a PIL image (a list only where the pipeline takes
            several).
    """
    name = type(pipe).__name__
    if image is None:
        raise InvalidArgumentError(
            f"{name} reads the input image in its prompt encoding: pass encode(..., image=…), "
            "the image the pipeline gets"
        )
    images = list(image) if isinstance(image, (list, tuple)) else [image]
    if not images or (len(images) > 1 and not template.picture):
        raise InvalidArgumentError(f"{name} takes one input image, got {len(images)}")
    for item in images:
        size = getattr(item, "size", None)
        if not (isinstance(size, tuple) and len(size) == 2):
            raise InvalidArgumentError(
                f"image must be a PIL image (as {name} reads its size), not {type(item).__name__}"
            )
    out = []
    for item in images:
        width, height = _side(template.image_area, item.size[0] / item.size[1])
        out.append(pipe.image_processor.resize(item, height, width))
    return out


def vision(pipe: Any, template: Template, model: Any, before: str, image: Any) -> Vision:
    """The images of one request: the processor's call as the pipeline makes it (its text
    without the prompt), the placeholders expanded as it expands them; the vision tower runs
    once, when the first row is encoded."""
    images = prompt_images(pipe, template, image)
    processor = getattr(pipe, template.processor)
    if template.picture:
        before += "".join(template.picture.format(i + 1) for i in range(len(images)))
    token = str(getattr(processor, "image_token", "<|image_pad|>"))
    if before.count(token) != len(images):
        raise UnsupportedPipelineError(
            f"{type(pipe).__name__}'s prompt template holds {before.count(token)} image "
            f"placeholders ({token}) for {len(images)} images"
        )
    inputs = processor(text=[before], images=images, padding=True, return_tensors="pt")
    grid = inputs["image_grid_thw"]
    merge = int(getattr(processor.image_processor, "merge_size", 2))
    counts = [int(g.prod()) // merge**2 for g in grid]
    pieces = before.split(token)
    expanded = pieces[0]
    for count, piece in zip(counts, pieces[1:], strict=True):
        expanded += token * count + piece
    return Vision(expanded, sum(counts), grid, inputs["pixel_values"], model)


def _call_default(pipe: Any, name: str) -> object:
    try:
        parameters = inspect.signature(type(pipe).__call__).parameters
    except (TypeError, ValueError):
        return None
    given = parameters.get(name)
    return None if given is None else given.default


def text_encoder(
    pipe: Any,
    template: Template,
    model: Any,
    tokenizer: Any,
    max_sequence_length: int,
    *,
    layers: Sequence[int] | None = None,
    negative: bool = False,
    image: Any = None,
) -> TextEncoder:
    """The decoder-LLM :class:`TextEncoder` of a tower, from its :class:`Template`.

    Args:
        pipe: the pipeline.
        template: the tower's template record.
        model: the text model.
        tokenizer: its tokenizer (a fast one, or a processor wrapping one).
        max_sequence_length: the pipeline's ``max_sequence_length``.
        layers: the hidden states to read, when the caller overrides the record's.
        negative: the negative's encoder of a template with ``plain_negative`` (no template).
        image: the input image(s) of a template with a ``processor`` (the pipeline's
            ``image``): read once here (:func:`vision`), their placeholders expanded in the
            template; the window grows by their vision tokens.
    """
    fast = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
    if template.segments is not None:
        return _segmented(template, template.segments, model, fast, max_sequence_length, image)
    before, after = ("", "") if negative else template_text(pipe, tokenizer, template)
    seen = None
    if template.processor:
        seen = vision(pipe, template, model, before, image)
        before = seen.before
    drop = int(getattr(pipe, template.drop)) if template.drop else 0
    length = max_sequence_length
    if template.length:
        length = int(getattr(pipe, template.length)) + drop
    if seen is not None:
        length += seen.tokens
    if template.instruction and not negative:
        # SANA: num_chi_prompt_tokens + max_sequence_length - 2 (the instruction's BOS counted).
        length += len(fast(before)["input_ids"]) - 2
    side = getattr(fast, "padding_side", "right") if template.padding_side == "tokenizer" else ""
    if layers is None and template.every_layer:
        config: Any = getattr(model, "config", None)
        config = getattr(config, "text_config", config)
        layers = tuple(range(1, int(getattr(config, "num_hidden_layers", 0)) + 1))
    if layers is None:
        layers = template.layers
        if template.layers_argument:
            default = _call_default(pipe, template.layers_argument)
            if isinstance(default, (tuple, list)) and default:
                layers = tuple(int(k) for k in default)
    encoder = TextEncoder.llm(
        model,
        fast,
        template=(before, after),
        max_length=length,
        layers=layers,
        trim=template.padding == "longest",
        drop=drop,
        keep=max_sequence_length if template.cut else None,
        specials=template.specials,
        pad_left=side == "left",
        clean=template.clean,
    )
    encoder.attentions = template.attentions
    if seen is not None:
        encoder.inputs = seen.inputs
    return encoder


def _segmented(
    template: Template,
    segments: Segments,
    model: Any,
    tokenizer: Any,
    max_sequence_length: int,
    image: Any,
) -> TextEncoder:
    """Z-Image Omni's encoder: the prompt's segment, run in a batch with the other segments
    (``TextEncoder.companions``), as the pipeline batches them."""
    count = 0 if image is None else len(image) if isinstance(image, (list, tuple)) else 1
    before, around, after = segments.around(count)
    encoder = TextEncoder.llm(
        model,
        tokenizer,
        template=around,
        max_length=max_sequence_length,
        layers=template.layers,
        trim=False,
    )
    encoder.share_prefixes = False  # every row in the segments' batch, the masked ones too
    rows = torch.zeros(0, max_sequence_length, dtype=torch.long)  # no image: the prompt alone
    if before or after:
        rows = tokenizer(
            before + after,
            padding="max_length",
            max_length=max_sequence_length,
            truncation=True,
            return_tensors="pt",
        )["input_ids"]
    encoder.companions = (rows, len(before))
    return encoder


def segment_lists(encoder: TextEncoder) -> Callable[[Any], dict[str, Any]]:
    """Z-Image Omni's ``prompt_embeds``: per image, the segments' states (their text positions)
    with the prompt's in its place, from a list of the prompt's states per image."""
    assert encoder.companions is not None, "an encoder from _segmented"
    assert encoder.companion_states is not None, "set by its first row"
    rows, at = encoder.companions
    shown = text_mask(rows, encoder.window.pad).bool()
    states = encoder.companion_states
    fixed = [states[k][shown[k].to(states.device)] for k in range(states.shape[0])]

    def wrap(per_image: Any) -> dict[str, Any]:
        return {"prompt_embeds": [[*fixed[:at], own, *fixed[at:]] for own in per_image]}

    return wrap


def _positions(encoder: TextEncoder, prompt: TokenizedPrompt, output: str) -> tuple[int, int]:
    """The window positions the pipeline hands its denoiser for one text: ``[start, end)``."""
    layout = encoder.window
    if output == "window":
        return 0, layout.length
    (chunk,) = prompt.chunks
    end = chunk.size if layout.keep is None else min(chunk.size, layout.drop + layout.keep)
    return layout.drop, max(end, layout.drop)


def shape(
    template: Template,
    encoder: TextEncoder,
    prompts: Sequence[Sequence[TokenizedPrompt]],
    assembled: list[tuple[Tensor, Tensor | None]],
    images: Sequence[int],
    *,
    negative: TextEncoder | None = None,
    length: int = 0,
) -> tuple[list[tuple[Tensor, Tensor | None]], tuple[Tensor, Tensor] | None, list[Tensor] | None]:
    """Cut each group's rows to what the pipeline hands its denoiser, and the masks.

    Every positive text (every image, AND part and schedule variant) gets the length of the
    longest positive one, every negative that of the longest negative, padded with zeros, as the
    pipeline pads a batch; the mask of an image is the union of its texts' positions (the
    pipeline reads one mask for the whole run), and each text keeps its own mask as well (the
    denoiser hook masks each call as its own text, and Z-Image's per-image tensors are cut to
    it).

    Args:
        template: the tower's template record.
        encoder: the tower.
        prompts: per group, the texts as tokenised.
        assembled: per group, ``(embeds (V, T, D), pooled)`` from the family's layout.
        images: the AND parts of each image (the groups are the parts, then one negative each).
        negative: the negatives' tower when it is not ``encoder`` (``Template.plain_negative``).
        length: the pipeline's ``max_sequence_length`` (SANA's selection keeps ``length - 1``
            positions after the first).

    Returns:
        The cut groups, and ``(positive (B, L), negative (B, L'))`` int64 masks for the
        ``"valid"`` output; for the whole window, the tokenizer's masks where the pipeline hands
        them over (``plain_negative``: Lumina 2, SANA), else ``None``; and per group the
        ``(V, L)`` mask of each of its texts where there are masks (else ``None``).
    """
    if template.output == "window" and template.plain_negative:
        encoders = (encoder, negative or encoder)
        return _windows(template, encoders, prompts, assembled, images, length)
    spans = [[_positions(encoder, p, template.output) for p in group] for group in prompts]
    positives = sum(images)
    lengths = [max((e - s for s, e in group), default=0) for group in spans]
    longest = [max(lengths[:positives], default=0), max(lengths[positives:], default=0)]
    out: list[tuple[Tensor, Tensor | None]] = []
    masks: list[Tensor] = []
    own: list[Tensor] = []
    for g, ((embeds, pooled), group) in enumerate(zip(assembled, spans, strict=True)):
        size = longest[g >= positives]
        rows = []
        each = torch.zeros(len(group), size, dtype=torch.long)
        for v, (start, end) in enumerate(group):
            row = embeds[v, start:end]
            pad = row.new_zeros(size - row.shape[0], row.shape[1])
            rows.append(torch.cat([row, pad]))
            each[v, : end - start] = 1
        out.append((torch.stack(rows), pooled))
        masks.append(each.amax(dim=0))
        own.append(each.to(embeds.device))
    if template.output == "window":
        return out, None, None
    positive, start = [], 0
    for count in images:
        positive.append(torch.stack(masks[start : start + count]).amax(dim=0))
        start += count
    device = out[0][0].device
    negatives = masks[positives:]
    return (
        out,
        (
            torch.stack(positive).to(device),
            torch.stack(negatives).to(device) if negatives else torch.zeros(0, longest[1]),
        ),
        own,
    )


def _windows(
    template: Template,
    encoders: tuple[TextEncoder, TextEncoder],
    prompts: Sequence[Sequence[TokenizedPrompt]],
    assembled: list[tuple[Tensor, Tensor | None]],
    images: Sequence[int],
    length: int,
) -> tuple[list[tuple[Tensor, Tensor | None]], tuple[Tensor, Tensor], list[Tensor]]:
    """The whole windows and the tokenizer's masks of each (1 on the text, its template and its
    special tokens; 0 on the padding, on either side), the union over an image's texts, and
    each text's own (per group, ``(V, L)``). SANA's
    positive windows are cut to the first position and the last ``length - 1`` (its
    ``select_index``), masks likewise."""
    positives = sum(images)
    out: list[tuple[Tensor, Tensor | None]] = []
    masks: list[Tensor] = []
    own: list[Tensor] = []
    for g, ((embeds, pooled), group) in enumerate(zip(assembled, prompts, strict=True)):
        layout = encoders[g >= positives].window
        ids = torch.tensor([p.chunks[0].ids for p in group])
        mask = text_mask(ids, layout.pad, left=layout.pad_left)
        if template.instruction and g < positives:
            index = [0, *range(layout.length - (length - 1), layout.length)]
            embeds, mask = embeds[:, index], mask[:, index]
        out.append((embeds, pooled))
        masks.append(mask.amax(dim=0))
        own.append(mask.to(embeds.device))
    positive, start = [], 0
    for count in images:
        positive.append(torch.stack(masks[start : start + count]).amax(dim=0))
        start += count
    device = out[0][0].device
    union = (torch.stack(positive).to(device), torch.stack(masks[positives:]).to(device))
    return out, union, own
