"""The decoder-LLM families (Qwen-Image, Z-Image): templated windows, bit-for-bit parity with each
pipeline's own ``encode_prompt``, the direction span weights move the conditioning, negatives and
true CFG, long prompts, two sampling steps, the KV-cache prefixes, and refused pipelines.

Every expected tensor comes from the pipeline's own ``encode_prompt`` (or from the text model run
directly); every tiny pipeline is built once per module.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import promptweights
from promptweights.errors import PromptweightsWarning, UnsupportedPipelineError

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from _tiny_llm import (  # noqa: E402
    QWEN_IMAGE_SYSTEM,
    tiny_flux2,
    tiny_qwen3_model,
    tiny_qwen25vl_model,
    tiny_qwen_image,
    tiny_qwen_tokenizer,
    tiny_z_image,
)

from promptweights.diffusers import encode, family_of  # noqa: E402
from promptweights.encoders import TextEncoder  # noqa: E402
from promptweights.tokens import layout_for, tokenize  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

PROMPT = "a red cat on a mat"
NEGATIVE = "blue dog"
QWEN_TEMPLATE = (
    "<|im_start|>system\n" + QWEN_IMAGE_SYSTEM + "<|im_end|>\n<|im_start|>user\n",
    "<|im_end|>\n<|im_start|>assistant\n",
)


# --- tokens: the template around the text, spans through offset_mapping -------------------------


def test_the_tiny_tokenizer_gives_the_qwen_image_prefix_its_34_tokens() -> None:
    # QwenImagePipeline drops prompt_template_encode_start_idx = 34 tokens: the system prefix as
    # the real Qwen2.5-VL tokenizer tokenises it. The tiny tokenizer is built to match.
    tok = tiny_qwen_tokenizer()
    assert len(tok(QWEN_TEMPLATE[0])["input_ids"]) == 34
    assert tiny_qwen_image().prompt_template_encode_start_idx == 34


def test_a_templated_window_is_the_pipelines_ids_and_only_the_text_is_weighted() -> None:
    tok = tiny_qwen_tokenizer()
    layout = layout_for(tok, length=64, template=QWEN_TEMPLATE)
    spans = promptweights.weighted_spans("a (red cat:1.5) on [a mat]")
    (chunk,) = tokenize(tok, spans, layout=layout).chunks
    text = QWEN_TEMPLATE[0] + "a red cat on a mat" + QWEN_TEMPLATE[1]
    expected = tok([text], padding="max_length", max_length=64)["input_ids"][0]
    assert list(chunk.ids) == expected
    assert chunk.size == len(tok([text])["input_ids"][0])
    tokens = tok.convert_ids_to_tokens(list(chunk.ids))
    weighted = [(t, round(w, 6)) for t, w in zip(tokens, chunk.weights, strict=True) if w != 1.0]
    low = round(1 / 1.1, 6)
    assert weighted == [("Ġred", 1.5), ("Ġcat", 1.5), ("Ġa", low), ("Ġmat", low)]
    # Template tokens (system prompt, <|im_start|>, user, assistant…) and padding: span -1.
    text_positions = [i for i, f in enumerate(chunk.fragments) if f >= 0]
    assert [tokens[i] for i in text_positions] == ["a", "Ġred", "Ġcat", "Ġon", "Ġa", "Ġmat"]
    assert text_positions == list(range(34, 40))


_WORDS = st.sampled_from(["a", "red", "cat", "on", "mat", "sky", "blue", "dog", ",", "zq"])
_SPAN_TEXT = st.lists(_WORDS, min_size=1, max_size=4).map(" ".join)
_SPANS = st.lists(
    st.tuples(_SPAN_TEXT, st.sampled_from([1.0, 0.5, 1.3, 2.0])), min_size=1, max_size=4
)


@settings(max_examples=30, deadline=None)
@given(spans=_SPANS)
def test_a_templated_window_weights_exactly_the_texts_tokens(
    spans: list[tuple[str, float]],
) -> None:
    tok = tiny_qwen_tokenizer()
    spans = [(text + " ", weight) for text, weight in spans]
    layout = layout_for(tok, length=96, template=QWEN_TEMPLATE)
    (chunk,) = tokenize(tok, spans, layout=layout).chunks
    text = "".join(t for t, _ in spans)
    full = QWEN_TEMPLATE[0] + text + QWEN_TEMPLATE[1]
    encoded = tok([full], return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"][0], encoded["offset_mapping"][0]
    # The pipeline's own ids, then padding.
    assert list(chunk.ids) == ids + [tok.pad_token_id] * (96 - len(ids))
    begin, end = len(QWEN_TEMPLATE[0]), len(QWEN_TEMPLATE[0]) + len(text)
    starts = [begin + sum(len(t) for t, _ in spans[:k]) for k in range(len(spans) + 1)]
    for (start, stop), fragment, weight in zip(
        offsets, chunk.fragments, chunk.weights, strict=False
    ):
        # Its letters decide; a token of spaces only, its spaces; a special token has none.
        letters = [at for at in range(start, stop) if not full[at].isspace()]
        letters = letters or list(range(start, stop))
        if not letters or letters[0] < begin or letters[-1] >= end:
            assert fragment == -1  # template tokens
            assert weight == 1.0
            continue
        # A text token takes the span holding its letters (the words never straddle spans here).
        owner = max(k for k in range(len(spans)) if starts[k] <= letters[0])
        assert fragment == owner
        assert weight == spans[owner][1]


def test_text_past_the_truncation_or_the_kept_positions_is_counted() -> None:
    tok = tiny_qwen_tokenizer()
    words = " ".join(["cat"] * 30)
    n = len(tok(words)["input_ids"])
    cut = layout_for(tok, length=40, template=QWEN_TEMPLATE)
    assert tokenize(tok, [(words, 1.0)], layout=cut).truncated == n - (40 - 34)
    kept = layout_for(tok, length=100, template=QWEN_TEMPLATE, drop=34, keep=8)
    assert tokenize(tok, [(words, 1.0)], layout=kept).truncated == n - 8
    whole = layout_for(tok, length=100, template=QWEN_TEMPLATE, drop=34, keep=None)
    assert tokenize(tok, [(words, 1.0)], layout=whole).truncated == 0


# --- the KV cache: rows derived from a row run their suffix only -------------------------------


@pytest.mark.parametrize("trim", [True, False], ids=["trim", "window"])
@pytest.mark.parametrize(
    "build", [tiny_qwen3_model, tiny_qwen25vl_model], ids=["qwen3", "qwen25vl"]
)
def test_rows_from_the_kv_cache_equal_the_full_forward(
    build: Callable[[], Any], trim: bool
) -> None:
    tok = tiny_qwen_tokenizer()
    model = build()
    encoder = TextEncoder.llm(
        model, tok, template=QWEN_TEMPLATE, max_length=48, layers=(-1, -2), trim=trim
    )
    text = QWEN_TEMPLATE[0] + PROMPT + QWEN_TEMPLATE[1]
    ids = torch.tensor(tok([text] * 3, padding="max_length", max_length=48)["input_ids"])
    mask = torch.ones_like(ids)
    mask[1, 35:37] = 0  # "red cat" hidden
    mask[2, 38:39] = 0  # "a" hidden
    prefixes = encoder.shared_prefixes(ids, mask, [None, 0, 0])
    assert prefixes == [None, (0, 35), (0, 38)]
    full, _ = encoder.encode(ids, mask)
    cached, _ = encoder.encode_from_prefixes(ids, mask, prefixes)
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-5)
    assert not torch.allclose(full[1], full[0])  # the hidden span changed the row
    # The states are the decoder's own, two layers side by side.
    reference = getattr(model, "model", model)(
        input_ids=ids[:1, : int((ids[0] != tok.pad_token_id).sum())], output_hidden_states=True
    ).hidden_states
    n = reference[-1].shape[1]
    torch.testing.assert_close(full[0, :n, :32], reference[-1][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(full[0, :n, 32:], reference[-2][0], rtol=0, atol=1e-6)


# --- the pipelines ----------------------------------------------------------------------------

#: Every Qwen-Image and Z-Image pipeline class that takes a prompt (diffusers 0.42.1), by the
#: part of its name after the family's.
VARIANTS = ("", "Img2Img", "Inpaint", "ControlNet", "ControlNetInpaint")


def _with_controlnet(build: Callable[[str], Any], variant: str) -> Any:
    """A pipeline of the family; a ControlNet variant with a tiny ControlNet (Z-Image's shares
    the transformer's embedders) or none (Qwen-Image's: the text path needs none)."""
    if "ControlNet" not in variant:
        return build(variant)
    base = build("")
    cls = getattr(diffusers, type(base).__name__.replace("Pipeline", f"{variant}Pipeline"))
    controlnet = None
    if isinstance(base, diffusers.ZImagePipeline):
        torch.manual_seed(0)
        controlnet = diffusers.ZImageControlNetModel(
            control_layers_places=[0],
            control_in_dim=33 if "Inpaint" in variant else 16,
            dim=32,
            n_refiner_layers=1,
            n_heads=2,
            n_kv_heads=2,
        )
    return cls(**base.components, controlnet=controlnet)


@pytest.fixture(scope="module")
def pipes() -> dict[str, Any]:
    return {
        "qwen-image": tiny_qwen_image(),
        "z-image": tiny_z_image(),
        "flux2": tiny_flux2(),
        "flux2-klein": tiny_flux2("Klein"),
    }


def _reference(pipe: Any, prompt: str, negative: str | None, **options: Any) -> tuple[Any, ...]:
    """The pipeline's own encodings: positive, its mask, negative, its mask (Z-Image: lists)."""
    with torch.no_grad():
        if family_of(pipe).startswith("flux2"):
            return pipe.encode_prompt(prompt, **options)[0], None, None, None
        if family_of(pipe) == "z-image":
            positive, negatives = pipe.encode_prompt(prompt, negative_prompt=negative, **options)
            return positive, None, negatives, None
        positive, mask = pipe.encode_prompt(prompt, **options)
        if negative is None:
            return positive, mask, None, None
        negative_embeds, negative_mask = pipe.encode_prompt(negative, **options)
        return positive, mask, negative_embeds, negative_mask


def _ours(cond: Any) -> tuple[Any, ...]:
    kwargs = cond.pipeline_kwargs()
    return (
        kwargs["prompt_embeds"],
        kwargs.get("prompt_embeds_mask"),
        kwargs.get("negative_prompt_embeds"),
        kwargs.get("negative_prompt_embeds_mask"),
    )


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, list):
        return len(ours) == len(theirs) and all(
            torch.equal(a, b) for a, b in zip(ours, theirs, strict=True)
        )
    return bool(torch.equal(ours, theirs))


def _mask_agrees(ours: Any, theirs: Any) -> bool:
    # The pipelines return no mask where every position is text; ours is then all ones.
    return bool(ours.all()) if theirs is None else bool(torch.equal(ours, theirs))


CASES = [(v, PROMPT) for v in VARIANTS] + [("", "a"), ("", "")]
IDS = [f"{v or 'T2I'}-{p or 'empty'}" for v, p in CASES]


@pytest.mark.parametrize(("variant", "prompt"), CASES, ids=IDS)
def test_qwen_image_parity_with_encode_prompt(variant: str, prompt: str) -> None:
    pipe = _with_controlnet(tiny_qwen_image, variant)
    assert family_of(pipe) == "qwen-image"
    cond = encode(pipe, prompt, NEGATIVE, exact=True)
    positive, mask, negative, negative_mask = _reference(
        pipe, prompt, NEGATIVE, max_sequence_length=512
    )
    ours = _ours(cond)
    assert _same(ours[0], positive)
    assert _mask_agrees(ours[1], mask)
    assert _same(ours[2], negative)
    assert _mask_agrees(ours[3], negative_mask)
    assert cond.prompt_embeds.shape[1] == len(tiny_qwen_tokenizer()(prompt)["input_ids"]) + 5


@pytest.mark.parametrize(("variant", "prompt"), CASES, ids=IDS)
def test_z_image_parity_with_encode_prompt(variant: str, prompt: str) -> None:
    pipe = _with_controlnet(tiny_z_image, variant)
    assert family_of(pipe) == "z-image"
    cond = encode(pipe, prompt, NEGATIVE, exact=True)
    positive, _, negative, _ = _reference(pipe, prompt, NEGATIVE, max_sequence_length=512)
    ours = _ours(cond)
    assert _same(ours[0], positive)
    assert _same(ours[2], negative)
    # Z-Image's empty negative is the pipeline's: "" encoded.
    empty = _ours(encode(pipe, prompt, exact=True))[2]
    assert _same(empty, _reference(pipe, prompt, None, max_sequence_length=512)[2])


def test_a_batch_of_prompts_is_padded_and_masked_as_the_pipeline_pads_it(
    pipes: dict[str, Any],
) -> None:
    pipe = pipes["qwen-image"]
    prompts = [PROMPT, "a cat"]
    cond = encode(pipe, prompts, [NEGATIVE, ""], exact=True)
    positive, mask = pipe.encode_prompt(prompts, max_sequence_length=512)
    ours = _ours(cond)
    # The pipeline runs both texts in one padded batch: equal up to batch rounding.
    torch.testing.assert_close(ours[0], positive, rtol=1e-6, atol=1e-6)
    assert torch.equal(ours[1], mask)
    assert ours[1].tolist()[1] == [1] * 7 + [0] * 4


def test_an_unweighted_prompt_is_unchanged_by_weights_of_one(pipes: dict[str, Any]) -> None:
    for pipe in pipes.values():
        plain = _ours(encode(pipe, PROMPT, exact=True, max_sequence_length=48))[0]
        ones = _ours(encode(pipe, "a (red:1.0) cat on a mat", exact=True, max_sequence_length=48))[
            0
        ]
        assert _same(ones, plain)


def _masked_reference(pipe: Any, text_positions: range, **options: Any) -> Any:
    """The text encoded with ``text_positions`` of the window hidden from the attention mask, cut
    as the pipeline cuts it: the anchor span-lerp moves from (computed with the model directly)."""
    encoder = _encoder_of(pipe, **options)
    (chunk,) = tokenize(encoder.tokenizer, [(PROMPT, 1.0)], layout=encoder.window).chunks
    ids = torch.tensor([chunk.ids[: chunk.size]])
    mask = torch.ones_like(ids)
    mask[0, list(text_positions)] = 0
    model = getattr(pipe.text_encoder, "model", pipe.text_encoder)
    if not encoder.trim:  # Z-Image and Flux.2 run the whole padded window
        ids = torch.tensor([chunk.ids])
        mask = torch.cat([mask, torch.zeros(1, len(chunk.ids) - chunk.size, dtype=torch.long)], 1)
    with torch.no_grad():
        states = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    z = torch.cat([states[layer] for layer in encoder.layers], dim=-1)[0]
    if family_of(pipe).startswith("flux2"):
        return z  # the whole window
    return z[encoder.window.drop : chunk.size]


def _encoder_of(pipe: Any, max_sequence_length: int | None = None) -> TextEncoder:
    from promptweights.diffusers.families import record_of

    record = record_of(pipe)
    encoder = record.towers[0].text_encoder(
        pipe, TextEncoder, 1, max_sequence_length, record.window(pipe)
    )
    assert encoder is not None
    return encoder


def _plain(pipe: Any, prompt: str, **options: Any) -> Any:
    embeds = _ours(encode(pipe, prompt, exact=True, **options))[0]
    return embeds[0]  # the one image's (L, D), from a batch or a list


@pytest.mark.parametrize("family", ["qwen-image", "z-image", "flux2", "flux2-klein"])
def test_span_weights_move_away_from_or_towards_the_span_masked_encoding(
    pipes: dict[str, Any], family: str
) -> None:
    pipe = pipes[family]
    options = {"max_sequence_length": 48} if family.startswith("flux2") else {}
    z = _plain(pipe, PROMPT, **options)
    encoder = _encoder_of(pipe, **options)
    assert encoder.window.template is not None
    start = len(encoder.tokenizer(encoder.window.template[0])["input_ids"]) - encoder.window.drop
    # "red" is the second text token: positions start+1 of the output, start+1+drop of the window.
    red = range(start + 1 + encoder.window.drop, start + 2 + encoder.window.drop)
    m = _masked_reference(pipe, red, **options)
    assert z.shape == m.shape
    after = slice(start + 1, None)
    distance = (z[after] - m[after]).norm()
    assert distance > 0
    for weight, closer in ((1.5, False), (0.5, True), (0.0, True)):
        weighted = _plain(pipe, f"a (red:{weight}) cat on a mat", **options)
        moved = (weighted[after] - m[after]).norm()
        assert (moved < distance) == closer, weight
        # Before the span (the template and "a"), nothing moves.
        assert torch.equal(weighted[: start + 1], z[: start + 1])
        # The lerp: z + (w − 1)(z − m) after the span.
        torch.testing.assert_close(
            weighted[after], z[after] + (weight - 1) * (z[after] - m[after]), rtol=1e-4, atol=1e-5
        )


def test_qwen_image_has_true_cfg_only_with_a_negative(pipes: dict[str, Any]) -> None:
    pipe = pipes["qwen-image"]
    without = encode(pipe, PROMPT).pipeline_kwargs()
    assert "negative_prompt_embeds" not in without  # as diffusers: no negative, no true CFG
    spaced = encode(pipe, PROMPT, " ", exact=True).pipeline_kwargs()
    assert torch.equal(spaced["negative_prompt_embeds"], pipe.encode_prompt(" ")[0])


@pytest.mark.parametrize("family", ["z-image", "flux2-klein"])
def test_long_prompts_on_a_padded_window_are_truncated_as_the_pipeline_truncates_them(
    pipes: dict[str, Any], family: str
) -> None:
    pipe = pipes[family]
    long = " ".join(["red cat"] * 20)
    # The window holds the template's opening, then as much text as fits; its closing is cut.
    opening = len(tiny_qwen_tokenizer()(_encoder_of(pipe, 24).window.template[0])["input_ids"])
    dropped = len(tiny_qwen_tokenizer()(long)["input_ids"]) - (24 - opening)
    with pytest.warns(PromptweightsWarning, match=rf"{dropped} tokens of .* past the 24-token"):
        cond = encode(pipe, long, exact=True, max_sequence_length=24)
    reference = _reference(pipe, long, None, max_sequence_length=24)[0]
    ours = _ours(cond)[0]
    assert _same(ours, reference)


def test_long_prompts_are_cut_where_the_pipeline_cuts_them_with_a_diagnostic(
    pipes: dict[str, Any],
) -> None:
    pipe = pipes["qwen-image"]
    long = " ".join(["red cat"] * 10)
    dropped = len(tiny_qwen_tokenizer()(long)["input_ids"]) - 6
    with pytest.warns(PromptweightsWarning, match=rf"{dropped} tokens of .* past the 6 positions"):
        cond = encode(pipe, long, exact=True, max_sequence_length=6)
    reference, _ = pipe.encode_prompt(long, max_sequence_length=6)
    assert torch.equal(_ours(cond)[0], reference)
    with pytest.warns(PromptweightsWarning, match="BREAK ignored 1 time"):
        broken = encode(pipe, "a red cat BREAK on a mat", exact=True)
    assert torch.equal(_ours(broken)[0], pipe.encode_prompt("a red cat on a mat")[0])


@pytest.mark.parametrize("family", ["qwen-image", "z-image"])
@pytest.mark.parametrize("variant", ["", "Img2Img", "Inpaint"], ids=["T2I", "Img2Img", "Inpaint"])
def test_two_steps_through_the_pipeline_match_its_own_encoding(family: str, variant: str) -> None:
    import PIL.Image

    build = tiny_qwen_image if family == "qwen-image" else tiny_z_image
    pipe = build(variant)
    options: dict[str, Any] = {"height": 32, "width": 32, "output_type": "latent"}
    options |= {"true_cfg_scale": 2.0} if family == "qwen-image" else {"guidance_scale": 2.0}
    if variant:
        options["image"] = PIL.Image.new("RGB", (32, 32), (120, 30, 200))
        options["strength"] = 1.0
    if variant == "Inpaint":
        options["mask_image"] = PIL.Image.new("L", (32, 32), 255)

    def run(**kwargs: Any) -> Any:
        generator = torch.Generator().manual_seed(0)
        return pipe(**kwargs, **options, generator=generator).images

    cond = encode(pipe, PROMPT, NEGATIVE, steps=2, exact=True)
    ours = run(**cond.pipeline_kwargs())
    theirs = run(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=2)
    assert torch.equal(ours, theirs)
    weighted = run(**encode(pipe, "a (red:1.6) cat on a mat", NEGATIVE, steps=2).pipeline_kwargs())
    assert torch.isfinite(weighted).all()
    assert not torch.equal(weighted, theirs)


# --- refused pipelines -------------------------------------------------------------------------


def test_qwen_image_edit_without_its_processor_is_refused_with_the_reason(
    pipes: dict[str, Any],
) -> None:
    # With its processor, Qwen-Image Edit is covered (tests/test_vl_families.py).
    components = pipes["qwen-image"].components
    edit = diffusers.QwenImageEditPipeline(**components, processor=None)
    with pytest.raises(UnsupportedPipelineError) as caught:
        encode(edit, PROMPT)
    message = str(caught.value)
    assert "closest is Qwen-Image Edit ('qwen-image-edit')" in message
    assert "its processor is None" in message


def test_image_placeholders_in_an_edit_template_are_never_weighted(pipes: dict[str, Any]) -> None:
    # What can be covered of Qwen-Image Edit without its processor (Qwen2_5_VLProcessor needs a
    # video processor, which needs torchvision, not installed here): its template, with the image
    # placeholder expanded as the processor expands it (here to 4 positions), takes weights on
    # the user's text only.
    edit = diffusers.QwenImageEditPipeline(**pipes["qwen-image"].components, processor=None)
    before, after = edit.prompt_template_encode.split("{}")
    before = before.replace("<|image_pad|>", "<|image_pad|>" * 4)
    tok = tiny_qwen_tokenizer()
    layout = layout_for(tok, length=400, template=(before, after))
    (chunk,) = tokenize(tok, promptweights.weighted_spans("(a red cat:1.5)"), layout=layout).chunks
    tokens = tok.convert_ids_to_tokens(list(chunk.ids))
    pads = [i for i, token in enumerate(tokens) if token == "<|image_pad|>"]
    assert len(pads) == 4
    for i in [*pads, tokens.index("<|vision_start|>"), tokens.index("<|vision_end|>")]:
        assert chunk.fragments[i] == -1
        assert chunk.weights[i] == 1.0
    assert [t for t, w in zip(tokens, chunk.weights, strict=True) if w != 1.0] == [
        "a",
        "Ġred",
        "Ġcat",
    ]


def test_an_unsupported_llm_names_the_closest_family_and_its_class(pipes: dict[str, Any]) -> None:
    from transformers import GPT2Config, GPT2Model

    components = dict(pipes["qwen-image"].components)
    components["text_encoder"] = GPT2Model(
        GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=len(tiny_qwen_tokenizer()))
    )
    pipe = diffusers.QwenImagePipeline(**components)
    with pytest.raises(UnsupportedPipelineError) as caught:
        encode(pipe, PROMPT)
    message = str(caught.value)
    assert "closest is Qwen-Image ('qwen-image')" in message
    assert "text_encoder is a GPT2Model" in message


def test_a_weighted_prompt_within_the_window_gives_no_diagnostic(pipes: dict[str, Any]) -> None:
    for name, pipe in pipes.items():
        negative = "" if name == "flux2" else NEGATIVE  # Flux.2 takes none
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            encode(pipe, "a (red:1.3) cat", negative, strict=True, max_sequence_length=48)


# --- Flux.2 and Flux.2 Klein ---------------------------------------------------------------------

FLUX2_VARIANTS = ("", "Klein", "KleinInpaint", "KleinKV")


@pytest.mark.parametrize("klein", FLUX2_VARIANTS, ids=[k or "Flux2" for k in FLUX2_VARIANTS])
def test_flux2_parity_with_encode_prompt(klein: str) -> None:
    pipe = tiny_flux2(klein)
    assert family_of(pipe) == ("flux2-klein" if klein else "flux2")
    for prompt in (PROMPT, ""):
        cond = encode(pipe, prompt, exact=True, max_sequence_length=48)
        reference, _ = pipe.encode_prompt(prompt, max_sequence_length=48)
        assert torch.equal(cond.prompt_embeds, reference)
        kwargs = cond.pipeline_kwargs()
        if klein in ("Klein", "KleinInpaint"):
            # The pipeline's own negative for true CFG is "" encoded; a negative prompt is ours.
            assert torch.equal(
                kwargs["negative_prompt_embeds"], pipe.encode_prompt("", max_sequence_length=48)[0]
            )
        else:  # guidance-distilled: no negative at all
            assert "negative_prompt_embeds" not in kwargs
    if klein != "Klein":
        return
    # The pipeline's default window (512), three hidden states side by side.
    default = encode(pipe, PROMPT, exact=True)
    assert torch.equal(default.prompt_embeds, pipe.encode_prompt(PROMPT)[0])
    assert default.prompt_embeds.shape == (1, 512, 48)


def test_a_negative_prompt_on_flux2_is_dropped_with_a_diagnostic(pipes: dict[str, Any]) -> None:
    with pytest.warns(PromptweightsWarning, match="takes no negative prompt"):
        encode(pipes["flux2"], PROMPT, NEGATIVE, max_sequence_length=48)
    klein = encode(pipes["flux2-klein"], PROMPT, NEGATIVE, exact=True, max_sequence_length=48)
    reference = pipes["flux2-klein"].encode_prompt(NEGATIVE, max_sequence_length=48)[0]
    assert torch.equal(klein.pipeline_kwargs()["negative_prompt_embeds"], reference)


@pytest.mark.parametrize("family", ["flux2", "flux2-klein"])
def test_two_flux2_steps_match_its_own_encoding(pipes: dict[str, Any], family: str) -> None:
    pipe = pipes[family]
    options: dict[str, Any] = {"height": 32, "width": 32, "output_type": "latent"}
    options |= {"max_sequence_length": 48, "guidance_scale": 2.0}

    def run(**kwargs: Any) -> Any:
        generator = torch.Generator().manual_seed(0)
        return pipe(**kwargs, **options, generator=generator).images

    cond = encode(pipe, PROMPT, steps=2, exact=True, max_sequence_length=48)
    theirs = run(prompt=PROMPT, num_inference_steps=2)
    assert torch.equal(run(**cond.pipeline_kwargs()), theirs)
    weighted = encode(pipe, "a (red:1.6) cat on a mat", steps=2, max_sequence_length=48)
    assert not torch.equal(run(**weighted.pipeline_kwargs()), theirs)


@pytest.mark.parametrize("family", ["qwen-image", "z-image"])
def test_prompt_editing_switches_the_text_at_its_step(pipes: dict[str, Any], family: str) -> None:
    pipe = pipes[family]
    seen: list[Any] = []
    key = "encoder_hidden_states" if family == "qwen-image" else "cap_feats"

    def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        texts = kwargs[key] if key in kwargs else args[2]
        seen.append(texts[0].clone())

    cond = encode(pipe, "a [red:blue:0.5] cat", steps=4, exact=True)
    handle = pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        pipe(**cond.pipeline_kwargs(), height=32, width=32, output_type="latent")
    finally:
        handle.remove()
    red = _plain(pipe, "a red cat")
    blue = _plain(pipe, "a blue cat")
    # A1111's schedule for 4 steps and 0.5: "red" for calls 0-2, "blue" for call 3.
    assert [torch.equal(s[: red.shape[0]], red) for s in seen] == [True, True, True, False]
    assert torch.equal(seen[3][: blue.shape[0]], blue)


def test_the_batched_mode_equals_the_exact_mode_up_to_rounding(pipes: dict[str, Any]) -> None:
    prompts = ["a (red:1.4) cat on a mat", "a [blue] dog"]
    for name in ("qwen-image", "z-image", "flux2-klein"):
        pipe = pipes[name]
        exact = _ours(encode(pipe, prompts, [NEGATIVE, " "], exact=True, max_sequence_length=48))
        batched = _ours(encode(pipe, prompts, [NEGATIVE, " "], max_sequence_length=48))
        for ours, theirs in zip(batched, exact, strict=True):
            if theirs is None:
                assert ours is None
                continue
            for a, b in zip(ours, theirs, strict=True):  # per image (Z-Image: a list)
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_span_lerp_rows_run_from_the_kv_cache() -> None:
    from promptweights.builder import build

    encoder = TextEncoder.llm(
        tiny_qwen3_model(), tiny_qwen_tokenizer(), template=QWEN_TEMPLATE, max_length=48
    )
    result = build(encoder, [["a (red:1.5) cat (on:0.5) a mat"]], strategy="span-lerp")
    # The text, and one row per weighted span with that span masked out.
    assert result.rows == 3
    # One pass for the text, keeping its KV cache, and one suffix pass per span.
    assert result.encoder_calls == 1 + 2
    encoder.share_prefixes = False
    full = build(encoder, [["a (red:1.5) cat (on:0.5) a mat"]], strategy="span-lerp")
    assert full.encoder_calls == 1
    torch.testing.assert_close(result.groups[0].embeds, full.groups[0].embeds, rtol=0, atol=1e-5)
