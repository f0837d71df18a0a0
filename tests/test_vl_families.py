"""The Qwen-Image pipelines whose prompt encoding reads the input image (Edit, Edit Inpaint, Edit
Plus) and Layered: bit-for-bit parity with each pipeline's own ``encode_prompt`` and its own run,
weights on the user's text only (never the vision tokens), one vision pass per request.

The expected encodings are the pipelines' own (``encode_prompt`` on the image as their
``__call__`` resizes it), or the model run directly on a masked row: never our output.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from _tiny_llm import tiny_qwen_tokenizer  # noqa: E402
from _tiny_vl import (  # noqa: E402
    tiny_image,
    tiny_qwen_image_edit,
    tiny_qwen_image_layered,
    tiny_vl_processor,
    tiny_z_image_omni,
)

from promptweights.diffusers import encode, family_of  # noqa: E402
from promptweights.encoders import TextEncoder  # noqa: E402
from promptweights.errors import InvalidArgumentError, UnsupportedPipelineError  # noqa: E402
from promptweights.tokens import tokenize  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

PROMPT = "a red cat on a mat"
NEGATIVE = "blue dog"
#: (variant, images): Edit Plus with one image and with two.
CASES = [("", 1), ("Inpaint", 1), ("Plus", 1), ("Plus", 2)]
IDS = ["Edit", "EditInpaint", "EditPlus-1", "EditPlus-2"]


def _images(count: int) -> list[Any]:
    return [tiny_image(64 + 16 * i, 48, seed=i) for i in range(count)]


def _argument(variant: str, images: list[Any]) -> Any:
    return images if variant == "Plus" and len(images) > 1 else images[0]


def _resized(pipe: Any, variant: str, images: list[Any]) -> Any:
    """The images as the pipeline's ``__call__`` hands them to ``encode_prompt``: diffusers'
    ``calculate_dimensions`` (width sqrt(area·ratio), sides rounded to multiples of 32) at 1024²
    pixels, 384² for Edit Plus, written out here from its source."""
    area = 384 * 384 if variant == "Plus" else 1024 * 1024
    out = []
    for image in images:
        ratio = image.size[0] / image.size[1]
        width = math.sqrt(area * ratio)
        height = width / ratio
        w, h = round(width / 32) * 32, round(height / 32) * 32
        out.append(pipe.image_processor.resize(image, h, w))
    return out if variant == "Plus" else out[0]


def _reference(pipe: Any, prompt: str, image: Any) -> tuple[Any, Any]:
    with torch.no_grad():
        return pipe.encode_prompt(prompt, image=image)  # type: ignore[no-any-return]


def _mask_agrees(ours: Any, theirs: Any) -> bool:
    # The pipelines return no mask where every position is text; ours is then all ones.
    return bool(ours.all()) if theirs is None else bool(torch.equal(ours, theirs))


@pytest.mark.parametrize(("variant", "count"), CASES, ids=IDS)
def test_parity_with_encode_prompt_on_the_same_image(variant: str, count: int) -> None:
    pipe = tiny_qwen_image_edit(variant)
    assert family_of(pipe) == ("qwen-image-edit-plus" if variant == "Plus" else "qwen-image-edit")
    images = _images(count)
    cond = encode(pipe, PROMPT, NEGATIVE, image=_argument(variant, images), exact=True)
    kwargs = cond.pipeline_kwargs()
    resized = _resized(pipe, variant, images)
    positive, mask = _reference(pipe, PROMPT, resized)
    negative, negative_mask = _reference(pipe, NEGATIVE, resized)
    assert torch.equal(kwargs["prompt_embeds"], positive)
    assert _mask_agrees(kwargs["prompt_embeds_mask"], mask)
    assert torch.equal(kwargs["negative_prompt_embeds"], negative)
    assert _mask_agrees(kwargs["negative_prompt_embeds_mask"], negative_mask)
    # The vision tokens (at least one per image) and their markers are in the encoding.
    text = len(tiny_qwen_tokenizer()(PROMPT)["input_ids"])
    assert positive.shape[1] >= text + 3 * count


@pytest.mark.parametrize(
    "variant", ["", "Inpaint", "Plus"], ids=["Edit", "EditInpaint", "EditPlus"]
)
def test_two_steps_through_the_pipeline_match_its_own_run(variant: str) -> None:
    import PIL.Image

    pipe = tiny_qwen_image_edit(variant)
    image = tiny_image()
    options: dict[str, Any] = {"image": image, "true_cfg_scale": 2.0, "output_type": "latent"}
    if variant == "Inpaint":
        options["mask_image"] = PIL.Image.new("L", image.size, 255)

    def run(**kwargs: Any) -> Any:
        generator = torch.Generator().manual_seed(0)
        return pipe(**kwargs, **options, generator=generator).images

    cond = encode(pipe, PROMPT, NEGATIVE, image=image, steps=2, exact=True)
    ours = run(**cond.pipeline_kwargs())
    theirs = run(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=2)
    assert torch.equal(ours, theirs)
    weighted = encode(pipe, "a (red:1.6) cat on a mat", NEGATIVE, image=image, steps=2)
    moved = run(**weighted.pipeline_kwargs())
    assert torch.isfinite(moved).all()
    assert not torch.equal(moved, theirs)


def _encoder(pipe: Any, image: Any) -> TextEncoder:
    from promptweights.diffusers.families import record_of

    record = record_of(pipe)
    encoder = record.towers[0].text_encoder(
        pipe, TextEncoder, 1, None, record.window(pipe), image=image
    )
    assert encoder is not None
    return encoder


@pytest.mark.parametrize("variant", ["", "Plus"], ids=["Edit", "EditPlus"])
def test_vision_tokens_and_the_template_are_never_weighted(variant: str) -> None:
    pipe = tiny_qwen_image_edit(variant)
    images = _images(2 if variant else 1)
    encoder = _encoder(pipe, _argument(variant, images))
    tok = tiny_qwen_tokenizer()
    spans = [("a ", 1.0), ("red cat", 1.5), (" on a mat", 0.5)]
    (chunk,) = tokenize(tok, spans, layout=encoder.window).chunks
    tokens = tok.convert_ids_to_tokens(list(chunk.ids[: chunk.size]))
    pads = [i for i, token in enumerate(tokens) if token == "<|image_pad|>"]
    # Expanded as the processor expands them, for the images as the pipeline resizes them.
    resized = _resized(pipe, variant, images)
    resized = resized if isinstance(resized, list) else [resized]
    text = ["<|image_pad|>" * len(resized)]
    expanded = tiny_vl_processor()(text=text, images=resized)["input_ids"][0]
    assert len(pads) == expanded.count(tok.convert_tokens_to_ids("<|image_pad|>")) >= len(images)
    markers = [i for i, t in enumerate(tokens) if t in ("<|vision_start|>", "<|vision_end|>")]
    assert len(markers) == 2 * len(images)
    for i in [*pads, *markers]:
        assert chunk.fragments[i] == -1
        assert chunk.weights[i] == 1.0
    weighted = [(t, w) for t, w in zip(tokens, chunk.weights, strict=False) if w != 1.0]
    assert weighted == [("Ġred", 1.5), ("Ġcat", 1.5), ("Ġon", 0.5), ("Ġa", 0.5), ("Ġmat", 0.5)]
    # Every template token (the system message, the markers, the assistant turn) is unweighted.
    first = tokens.index("Ġred") - 1  # "a"
    assert all(w == 1.0 for w in chunk.weights[:first])
    assert all(w == 1.0 for w in chunk.weights[tokens.index("Ġmat") + 1 : chunk.size])


def test_the_empty_prompt_is_the_template_around_no_text_with_the_image() -> None:
    """comfy and compel lerp from the empty prompt's encoding: on a vision-language template it
    is the pipeline's own window for ``""``, image placeholders expanded (a bare [BOS, EOS, PAD]
    row had none, while every whole row gets the image's features: transformers refused it)."""
    pipe = tiny_qwen_image_edit("")
    image = _images(1)[0]
    encoder = _encoder(pipe, image)
    text = [pipe.prompt_template_encode.format("")]
    expected = tiny_vl_processor()(text=text, images=[_resized(pipe, "", [image])])
    expected_ids = list(expected["input_ids"][0])
    empty = list(encoder.empty_ids())
    assert empty[: len(expected_ids)] == expected_ids
    assert all(i == encoder.window.pad for i in empty[len(expected_ids) :])


@pytest.mark.parametrize("variant", ["", "Plus"], ids=["Edit", "EditPlus"])
def test_every_strategy_encodes_on_the_edit_pipelines(variant: str) -> None:
    from promptweights.strategies import STRATEGIES

    pipe = tiny_qwen_image_edit(variant)
    image = _images(1)[0]
    plain = encode(pipe, "a red cat, mat", image=image, strategy="none").prompt_embeds
    for name in STRATEGIES:
        cond = encode(pipe, "a (red:1.4) cat, (mat:0.6)", image=image, strategy=name)
        if name != "none":  # which reads the brackets as text
            assert cond.prompt_embeds.shape == plain.shape, name
        assert torch.isfinite(cond.prompt_embeds).all(), name


def _masked_reference(pipe: Any, image: Any, hidden: int) -> Any:
    """The prompt encoded with window position ``hidden`` hidden from the attention mask, run on
    the model directly with the processor's image inputs, cut as the pipeline cuts it."""
    encoder = _encoder(pipe, image)
    (chunk,) = tokenize(encoder.tokenizer, [(PROMPT, 1.0)], layout=encoder.window).chunks
    ids = torch.tensor([chunk.ids[: chunk.size]])
    mask = torch.ones_like(ids)
    mask[0, hidden] = 0
    resized = _resized(pipe, "", [image])
    inputs = tiny_vl_processor()(text=["<|image_pad|>"], images=[resized], return_tensors="pt")
    with torch.no_grad():
        states = pipe.text_encoder(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
            output_hidden_states=True,
        ).hidden_states
    return states[-1][0, encoder.window.drop :]


def _plain(pipe: Any, prompt: str, image: Any, **options: Any) -> Any:
    return encode(pipe, prompt, image=image, **options).pipeline_kwargs()["prompt_embeds"][0]


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "batched"])
def test_span_weights_move_away_from_or_towards_the_span_masked_encoding(exact: bool) -> None:
    pipe = tiny_qwen_image_edit("")
    image = tiny_image()
    encoder = _encoder(pipe, image)
    tok = tiny_qwen_tokenizer()
    (chunk,) = tokenize(tok, [(PROMPT, 1.0)], layout=encoder.window).chunks
    red = tok.convert_ids_to_tokens(list(chunk.ids)).index("Ġred")
    z = _plain(pipe, PROMPT, image, exact=True)
    m = _masked_reference(pipe, image, red)
    assert z.shape == m.shape
    start = red - encoder.window.drop  # "red" in the output
    after = slice(start, None)
    distance = (z[after] - m[after]).norm()
    assert distance > 0
    for weight, closer in ((1.5, False), (0.5, True), (0.0, True)):
        weighted = _plain(pipe, f"a (red:{weight}) cat on a mat", image, exact=exact)
        moved = (weighted[after] - m[after]).norm()
        assert (moved < distance) == closer, weight
        # Before the span (the vision tokens, the template and "a"), nothing moves.
        torch.testing.assert_close(weighted[:start], z[:start], rtol=1e-6, atol=1e-7)
        # The lerp: z + (w − 1)(z − m) from the span on.
        torch.testing.assert_close(
            weighted[after], z[after] + (weight - 1) * (z[after] - m[after]), rtol=1e-4, atol=1e-5
        )
    ones = _plain(pipe, "a (red:1.0) cat on a mat", image, exact=True)
    assert torch.equal(ones, z)


def test_rope_deltas_left_by_a_generate_call_change_nothing() -> None:
    # Qwen2.5-VL keeps the rope_deltas of its last generate() (Layered's captioning calls it);
    # with a KV cache its forward would shift the masked rows' suffix positions by them.
    pipe = tiny_qwen_image_edit("")
    image = tiny_image()
    prompt = "a (red:1.5) cat on a (mat:0.5)"
    before = encode(pipe, prompt, image=image).prompt_embeds
    inner = pipe.text_encoder.model
    inner.rope_deltas = torch.tensor([[-3]])
    try:
        after = encode(pipe, prompt, image=image).prompt_embeds
    finally:
        stale = inner.rope_deltas
        inner.rope_deltas = None
    assert torch.equal(after, before)
    assert torch.equal(stale, torch.tensor([[-3]]))  # the model's state is put back


def test_the_image_is_read_once_per_request() -> None:
    pipe = tiny_qwen_image_edit("")
    calls: list[int] = []
    handle = pipe.text_encoder.model.visual.register_forward_hook(
        lambda *_: calls.append(1)  # type: ignore[arg-type]
    )
    try:
        for exact in (True, False):
            calls.clear()
            cond = encode(
                pipe,
                ["a (red:1.4) cat AND a [blue] dog", "(old:1.2) house"],
                "(tall:0.8) tree",
                image=tiny_image(),
                exact=exact,
            )
            assert cond.prompt_embeds is not None
            assert len(calls) == 1, exact
    finally:
        handle.remove()


def test_the_image_argument_is_checked() -> None:
    pipe = tiny_qwen_image_edit("")
    with pytest.raises(InvalidArgumentError, match="reads the input image"):
        encode(pipe, PROMPT)
    with pytest.raises(InvalidArgumentError, match="takes one input image, got 2"):
        encode(pipe, PROMPT, image=_images(2))
    with pytest.raises(InvalidArgumentError, match="must be a PIL image"):
        encode(pipe, PROMPT, image=torch.zeros(1, 3, 8, 8))
    with pytest.raises(InvalidArgumentError, match="image= is for pipelines"):
        encode(tiny_qwen_image_layered(), PROMPT, image=tiny_image())


def test_an_edit_pipeline_without_its_processor_is_refused_with_the_reason() -> None:
    components = dict(tiny_qwen_image_edit("").components)
    components["processor"] = None
    pipe = diffusers.QwenImageEditPipeline(**components)
    with pytest.raises(UnsupportedPipelineError) as caught:
        encode(pipe, PROMPT, image=tiny_image())
    message = str(caught.value)
    assert "closest is Qwen-Image Edit ('qwen-image-edit')" in message
    assert "processor is None" in message


@pytest.mark.parametrize("prompt", [PROMPT, ""], ids=["prompt", "empty"])
def test_layered_encodes_as_qwen_image_without_reading_the_image(prompt: str) -> None:
    pipe = tiny_qwen_image_layered()
    assert family_of(pipe) == "qwen-image-layered"
    kwargs = encode(pipe, prompt, NEGATIVE, exact=True).pipeline_kwargs()
    with torch.no_grad():
        positive, mask = pipe.encode_prompt(prompt, max_sequence_length=512)
        negative, _ = pipe.encode_prompt(NEGATIVE, max_sequence_length=512)
    assert torch.equal(kwargs["prompt_embeds"], positive)
    assert _mask_agrees(kwargs["prompt_embeds_mask"], mask)
    assert torch.equal(kwargs["negative_prompt_embeds"], negative)


def test_layered_two_steps_match_its_own_run() -> None:
    from PIL import Image

    pipe = tiny_qwen_image_layered()
    pixels = (torch.rand(48, 64, 4, generator=torch.Generator().manual_seed(0)) * 255).byte()
    image = Image.fromarray(pixels.numpy(), "RGBA")
    # output_type="latent" fails in diffusers 0.42.1's Layered pipeline: decoded frames, then.
    options: dict[str, Any] = {"image": image, "layers": 1, "true_cfg_scale": 2.0}

    def run(**kwargs: Any) -> Any:
        generator = torch.Generator().manual_seed(0)
        return pipe(**kwargs, **options, output_type="pt", generator=generator).images

    cond = encode(pipe, PROMPT, NEGATIVE, steps=2, exact=True)
    ours = run(**cond.pipeline_kwargs())
    theirs = run(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=2)
    assert len(ours) == len(theirs) == 1
    assert torch.equal(torch.as_tensor(ours[0]), torch.as_tensor(theirs[0]))
    weighted = encode(pipe, "a (red:1.6) cat on a mat", NEGATIVE, steps=2)
    moved = torch.as_tensor(run(**weighted.pipeline_kwargs())[0])
    assert not torch.equal(moved, torch.as_tensor(theirs[0]))


# --- Z-Image Omni: the conversation in segments, one vision slot per condition image ----------


def _omni_images(count: int) -> list[Any] | None:
    return [tiny_image(64, 64, seed=i) for i in range(count)] or None


@pytest.mark.parametrize("count", [0, 1, 2], ids=["no-image", "one-image", "two-images"])
def test_z_image_omni_parity_with_encode_prompt(count: int) -> None:
    pipe = tiny_z_image_omni()
    assert family_of(pipe) == "z-image-omni"
    cond = encode(pipe, PROMPT, NEGATIVE, image=_omni_images(count), exact=True)
    kwargs = cond.pipeline_kwargs()
    with torch.no_grad():
        positive, negative = pipe.encode_prompt(
            PROMPT, negative_prompt=NEGATIVE, num_condition_images=count
        )
    for ours, theirs in (
        (kwargs["prompt_embeds"], positive),
        (kwargs["negative_prompt_embeds"], negative),
    ):
        assert len(ours) == len(theirs) == 1
        assert len(ours[0]) == len(theirs[0]) == (1 if count == 0 else count + 2)
        assert all(torch.equal(a, b) for a, b in zip(ours[0], theirs[0], strict=True))


def test_z_image_omni_two_steps_match_its_own_run() -> None:
    pipe = tiny_z_image_omni()
    images = _omni_images(1)
    options: dict[str, Any] = {"height": 32, "width": 32, "guidance_scale": 2.0}

    def run(**kwargs: Any) -> Any:
        generator = torch.Generator().manual_seed(0)
        out = pipe(image=images, **kwargs, **options, output_type="latent", generator=generator)
        return out.images

    cond = encode(pipe, PROMPT, NEGATIVE, image=images, steps=2, exact=True)
    ours = run(**cond.pipeline_kwargs())
    theirs = run(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=2)
    assert torch.equal(ours, theirs)
    weighted = encode(pipe, "a (red:1.6) cat on a mat", NEGATIVE, image=images, steps=2)
    moved = run(**weighted.pipeline_kwargs())
    assert torch.isfinite(moved).all()
    assert not torch.equal(moved, theirs)


def test_z_image_omni_weights_move_the_prompts_segment_only() -> None:
    pipe = tiny_z_image_omni()
    images = _omni_images(1)

    def segments(prompt: str) -> list[Any]:
        kwargs = encode(pipe, prompt, image=images, exact=True).pipeline_kwargs()
        return list(kwargs["prompt_embeds"][0])

    plain = segments(PROMPT)
    assert all(
        torch.equal(a, b) for a, b in zip(segments("a (red:1.0) cat on a mat"), plain, strict=True)
    )
    up, down = segments("a (red:1.5) cat on a mat"), segments("a (red:0.5) cat on a mat")
    for weighted in (up, down):
        # The segments before and after the prompt's are the template's: never weighted.
        assert torch.equal(weighted[0], plain[0])
        assert torch.equal(weighted[2], plain[2])
        # In the prompt's segment, "<|vision_end|>" and "a" do not move; "red" on does.
        assert torch.equal(weighted[1][:2], plain[1][:2])
        assert not torch.equal(weighted[1][2:], plain[1][2:])
    # Up and down move to opposite sides of the plain encoding (span-lerp: z + (w − 1)(z − m)).
    torch.testing.assert_close(up[1] - plain[1], plain[1] - down[1], rtol=1e-4, atol=1e-6)


def test_z_image_omni_editing_and_and_are_refused() -> None:
    pipe = tiny_z_image_omni()
    images = _omni_images(1)
    cond = encode(pipe, "a [cat:dog:0.5] on a mat", image=images, steps=2)
    with pytest.raises(UnsupportedPipelineError, match="not supported on Z-Image Omni: its"):
        cond.pipeline_kwargs()
    anded = encode(pipe, "a cat AND a dog", image=images)
    with (
        pytest.raises(UnsupportedPipelineError, match="not supported on Z-Image Omni"),
        anded.attach(pipe),
    ):
        pass


def test_chunking_is_refused_with_each_familys_reason() -> None:
    cases = [
        (tiny_qwen_image_edit(""), {"image": tiny_image()}, "Qwen-Image Edit takes"),
        (tiny_qwen_image_edit("Plus"), {"image": tiny_image()}, "Qwen-Image Edit Plus takes"),
        (tiny_qwen_image_layered(), {}, "Qwen-Image Layered takes"),
        (tiny_z_image_omni(), {}, "Z-Image Omni takes"),
    ]
    for pipe, options, start in cases:
        with pytest.raises(InvalidArgumentError) as caught:
            encode(pipe, PROMPT, long_prompts="chunk", **options)
        message = str(caught.value)
        assert message.startswith(start)
        assert "T5 window" not in message  # the T5 families' reason is not theirs


# --- compare, from_infotext, attach_infotext and encode_many take the input image --------------


@pytest.mark.parametrize(("variant", "count"), [("", 1), ("Plus", 2)], ids=["Edit", "EditPlus-2"])
def test_compare_cells_rerun_bit_for_bit_from_their_infotext_with_the_image(
    variant: str, count: int, tmp_path: Any
) -> None:
    from promptweights.compare import compare, first_image
    from promptweights.diffusers import attach_infotext, from_infotext
    from promptweights.infotext import read_image

    pipe = tiny_qwen_image_edit(variant)
    image = _argument(variant, _images(count))
    result = compare(
        pipe,
        "a (red:{0.5,1.5}) cat",
        negative_prompt=NEGATIVE,
        seed=1,
        steps=2,
        cfg=2.0,
        height=64,  # the infotext's size: the re-run samples at it too
        width=64,
        out_dir=tmp_path,
        progress=False,
        exact=True,
        pipeline_options={"image": image, "true_cfg_scale": 2.0},
    )
    assert not np_equal(result.images[0], result.images[1])  # the weight shows
    for cell, picture in zip(result.cells, result.images, strict=True):
        path = str(tmp_path / "cells" / f"{cell.index:03d}.png")
        assert read_image(path).prompt == cell.prompt
        kwargs = from_infotext(pipe, path, exact=True, image=image)
        assert kwargs["image"] is image
        again = first_image(pipe(**kwargs, true_cfg_scale=2.0, output_type="np"))
        assert np_equal(again, picture), cell
    with attach_infotext(pipe, path, exact=True, image=image) as kwargs:
        again = first_image(pipe(**kwargs, true_cfg_scale=2.0, output_type="np"))
    assert np_equal(again, picture)


def np_equal(a: Any, b: Any) -> bool:
    import numpy as np

    return bool(np.array_equal(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)))


def test_encode_many_takes_the_image_and_equals_encode_bit_for_bit() -> None:
    from promptweights.diffusers import encode_many

    pipe = tiny_qwen_image_edit("Plus")
    image = _images(2)
    requests = [
        {"prompt": PROMPT, "negative_prompt": NEGATIVE},
        {"prompt": "a (red:1.4) cat", "normalization": "mean"},
    ]
    many = encode_many(pipe, requests, image=image, exact=True)
    resized = _resized(pipe, "Plus", image)
    # The unweighted request is the pipeline's own encoding of the same images.
    positive, _ = _reference(pipe, PROMPT, resized)
    assert torch.equal(many[0].pipeline_kwargs()["prompt_embeds"], positive)
    alone = encode(pipe, "a (red:1.4) cat", image=image, normalization="mean", exact=True)
    ours, theirs = many[1].pipeline_kwargs(), alone.pipeline_kwargs()
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert torch.equal(ours[key], value) if torch.is_tensor(value) else ours[key] == value
    with pytest.raises(InvalidArgumentError, match=r"pass encode\(\.\.\., image="):
        encode_many(pipe, requests)


def test_an_image_is_not_given_to_an_encoding_that_reads_none() -> None:
    from promptweights.diffusers.rerun import encoding_image

    image = tiny_image()
    assert encoding_image(tiny_qwen_image_edit(), image) is image
    assert encoding_image(tiny_qwen_image_edit(), None) is None
    assert encoding_image(tiny_qwen_image_layered(), image) is None


# --- prompt editing, alternation and AND on Qwen-Image Edit and Edit Plus ------------------------


def _edit_calls(pipe: Any, cond: Any, image: Any) -> list[tuple[list[Any], Any]]:
    """Every transformer call of a run inside ``cond.attach``: each row's text cut to its mask
    (ones then zeros; a mask of ones may be None) and the prediction."""
    calls: list[tuple[list[Any], Any]] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        embeds, mask = kwargs["encoder_hidden_states"], kwargs.get("encoder_hidden_states_mask")
        rows = []
        for i, row_embeds in enumerate(embeds):
            n = row_embeds.shape[0] if mask is None else int(mask[i].sum())
            assert mask is None or bool(mask[i][:n].all())
            rows.append(row_embeds[:n].detach().clone())
        prediction = output[0] if isinstance(output, tuple) else output.sample
        calls.append((rows, prediction.detach().clone()))

    with cond.attach(pipe):
        handle = pipe.transformer.register_forward_hook(record, with_kwargs=True)
        try:
            pipe(
                **cond.pipeline_kwargs(),
                image=image,
                true_cfg_scale=2.0,
                output_type="latent",
                generator=torch.Generator().manual_seed(0),
            )
        finally:
            handle.remove()
    return calls


def _same_rows(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("variant", "prompt", "negative", "steps", "expected"),
    [
        # A1111's run-time lookup: call k takes the first entry ending at or after k.
        ("", "a [cat:big brown dog:1] on a mat", "[blue:deep red:1] sky", 3, ["cat", "cat", "dog"]),
        ("Plus", "a [cat|big brown dog] on a mat", "[blue|deep red] sky", 3, ["cat", "cat", "dog"]),
    ],
    ids=["Edit-edit", "EditPlus-alternate"],
)
def test_each_edit_call_gets_its_steps_text_as_a_plain_run_of_it(
    variant: str, prompt: str, negative: str, steps: int, expected: list[str]
) -> None:
    pipe, image = tiny_qwen_image_edit(variant), tiny_image()

    def plain(animal: str, colour: str) -> list[tuple[list[Any], Any]]:
        text = f"a {animal} on a mat"
        return _edit_calls(
            pipe, encode(pipe, text, f"{colour} sky", image=image, exact=True, steps=1), image
        )

    alone = {"cat": plain("cat", "blue"), "dog": plain("big brown dog", "deep red")}
    assert len(alone["cat"]) == 2  # true CFG: the cond call, then the uncond call
    seen = _edit_calls(
        pipe, encode(pipe, prompt, negative, image=image, exact=True, steps=steps), image
    )
    assert len(seen) == 2 * steps
    for step, animal in enumerate(expected):
        for k in range(2):
            assert _same_rows(seen[2 * step + k][0], alone[animal][k][0]), (step, animal, k)


@pytest.mark.parametrize("variant", ["Plus"], ids=["EditPlus"])
def test_and_on_edit_is_the_weighted_mean_of_the_parts_cond_predictions(variant: str) -> None:
    pipe, image = tiny_qwen_image_edit(variant), tiny_image()

    def calls(prompt: str) -> list[tuple[list[Any], Any]]:
        return _edit_calls(
            pipe, encode(pipe, prompt, "green", image=image, exact=True, steps=2), image
        )

    combined = calls("a red cat AND a blue dog:0.5")
    # A1111 splits at AND keeping the space after it: the parts are "a red cat", " a blue dog".
    parts = [calls("a red cat"), calls(" a blue dog")]
    expected = (parts[0][0][1] + 0.5 * parts[1][0][1]) / 1.5  # ComfyUI's ConditioningCombine
    torch.testing.assert_close(combined[0][1], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(combined[1][1], parts[0][1][1], rtol=1e-5, atol=1e-5)


def test_z_image_omni_compare_cells_rerun_bit_for_bit_with_the_images(tmp_path: Any) -> None:
    from promptweights.compare import compare, first_image
    from promptweights.diffusers import from_infotext

    pipe, images = tiny_z_image_omni(), _omni_images(1)
    result = compare(
        pipe,
        "a (red:{0.5,1.5}) cat",
        negative_prompt=NEGATIVE,
        seed=1,
        steps=2,
        cfg=2.0,
        height=32,
        width=32,
        out_dir=tmp_path,
        progress=False,
        exact=True,
        pipeline_options={"image": images},
    )
    assert not np_equal(result.images[0], result.images[1])  # the weight shows
    for cell, picture in zip(result.cells, result.images, strict=True):
        path = str(tmp_path / "cells" / f"{cell.index:03d}.png")
        kwargs = from_infotext(pipe, path, exact=True, image=images)
        assert np_equal(first_image(pipe(**kwargs, output_type="np")), picture), cell
