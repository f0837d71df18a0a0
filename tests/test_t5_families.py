"""The T5 families (SD3, Flux.1, Chroma, PixArt, Wan): spans to tokens through ``offset_mapping``,
bit-for-bit parity with each pipeline's own ``encode_prompt``, the direction weights move the
conditioning, per-encoder prompts, weighting off, long prompts and ``BREAK``, and the refusal of
pipelines whose text encoder is not supported.

Every expected tensor comes from the pipeline's own ``encode_prompt`` or from the tokenizer; every
tiny pipeline is built once per module.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from _tiny_models import tiny_t5_tokenizer

import promptweights
from promptweights.errors import (
    InvalidArgumentError,
    PromptweightsError,
    PromptweightsWarning,
    UnreproducibleError,
    UnsupportedPipelineError,
)
from promptweights.tokens import layout_for, span_owners, tokenize

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from _rows import label  # noqa: E402
from _tiny_pipelines import (  # noqa: E402
    tiny_chroma,
    tiny_flux,
    tiny_pixart,
    tiny_sd3,
    tiny_wan,
)

from promptweights.diffusers import encode, family_of  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

L = 16  # max_sequence_length of every tiny pipeline here (the tiny T5 tokenizer's length)
PROMPT = "a red cat on a mat"
NEGATIVE = "blue dog"


# --- tokens: spans through offset_mapping (no model) ---------------------------------------------


def test_a_plain_text_gives_the_tokenizers_own_ids() -> None:
    tok = tiny_t5_tokenizer()
    layout = layout_for(tok, joined=True)
    for text in ("a red cat on a mat", "a cat, dog", "", "redsky house,hill"):
        (chunk,) = tokenize(tok, [(text, 1.0)], layout=layout).chunks
        expected = tok([text], padding="max_length", max_length=16)["input_ids"][0]
        assert list(chunk.ids) == expected


def test_weights_reach_the_tokens_of_their_span() -> None:
    tok = tiny_t5_tokenizer()
    layout = layout_for(tok, joined=True)
    spans = promptweights.weighted_spans("a (cat:1.5) on [mat]")
    (chunk,) = tokenize(tok, spans, layout=layout).chunks
    # The joined text is tokenised as the pipeline would tokenise "a cat on mat".
    expected = tok(["a cat on mat"], padding="max_length", max_length=16)["input_ids"][0]
    assert list(chunk.ids) == expected
    tokens = tok.convert_ids_to_tokens(list(chunk.ids[: chunk.size]))
    by_token = dict(zip(tokens, chunk.weights[: chunk.size], strict=True))
    assert by_token == {"▁a": 1.0, "▁cat": 1.5, "▁on": 1.0, "▁mat": pytest.approx(1 / 1.1)}
    assert chunk.weights[chunk.size :] == (1.0,) * (16 - chunk.size)  # EOS and padding
    assert chunk.fragments[chunk.size :] == (-1,) * (16 - chunk.size)


def test_a_token_across_spans_takes_the_span_of_most_of_its_letters() -> None:
    # "▁cat" covers "ca" of the first span and "t" of the second: the first span's.
    tok = tiny_t5_tokenizer()
    (chunk,) = tokenize(
        tok, [("a ca", 1.0), ("t", 2.0)], layout=layout_for(tok, joined=True)
    ).chunks
    assert tok.convert_ids_to_tokens(list(chunk.ids[:2])) == ["▁a", "▁cat"]
    assert chunk.weights[:2] == (1.0, 1.0)
    # Its leading space does not count: "a " then "(cat:2)" gives the whole word weight 2.
    text = "a (cat:2)"
    layout = layout_for(tok, joined=True)
    (chunk,) = tokenize(tok, promptweights.weighted_spans(text), layout=layout).chunks
    assert chunk.weights[:2] == (1.0, 2.0)
    assert span_owners([(0, 0), (0, 1)], [0], "a") == [0, 0]


def test_break_on_one_window_is_dropped_and_counted_and_starts_a_window_when_chunked() -> None:
    tok = tiny_t5_tokenizer()
    spans = promptweights.weighted_spans("a cat BREAK dog")
    one = tokenize(tok, spans, layout=layout_for(tok, joined=True))
    assert one.breaks_ignored == 1
    expected = tok(["a cat dog"], padding="max_length", max_length=16)["input_ids"][0]
    assert list(one.chunks[0].ids) == expected
    chunked = tokenize(tok, spans, layout=layout_for(tok, joined=True, chunked=True))
    assert chunked.breaks_ignored == 0
    assert [tok.convert_ids_to_tokens(list(c.ids[: c.size])) for c in chunked.chunks] == [
        ["▁a", "▁cat"],
        ["▁dog"],
    ]


def test_text_past_the_window_is_counted() -> None:
    tok = tiny_t5_tokenizer()
    text = "a cat " * 10  # 20 tokens; 15 fit before the EOS
    assert len(tok([text], add_special_tokens=False)["input_ids"][0]) == 20
    result = tokenize(tok, [(text, 1.0)], layout=layout_for(tok, joined=True))
    assert (result.truncated, result.chunks[0].size) == (5, 15)
    chunked = tokenize(tok, [(text, 1.0)], layout=layout_for(tok, joined=True, chunked=True))
    assert [c.size for c in chunked.chunks] == [15, 5]
    assert chunked.truncated == 0


def test_the_wan_and_pixart_clean_ups_keep_each_span_its_weight() -> None:
    tok = tiny_t5_tokenizer()
    spans = promptweights.weighted_spans("  a \n (cat:1.5)   &amp;  dog ")
    (chunk,) = tokenize(tok, spans, layout=layout_for(tok, joined=True, clean="wan")).chunks
    expected = tok(["a cat & dog"], padding="max_length", max_length=16)["input_ids"][0]
    assert list(chunk.ids) == expected
    assert chunk.weights[:2] == (1.0, 1.5)
    spans = promptweights.weighted_spans(" A (RED:0.5) Cat ")
    layout = layout_for(tok, joined=True, clean="lower-strip")
    (chunk,) = tokenize(tok, spans, layout=layout).chunks
    expected = tok(["a red cat"], padding="max_length", max_length=16)["input_ids"][0]
    assert list(chunk.ids) == expected
    assert chunk.weights[:3] == (1.0, 0.5, 1.0)


# --- tiny pipelines, one each per module ----------------------------------------------------------


@pytest.fixture(scope="module")
def pipes() -> dict[str, Any]:
    """The pipelines the parity and direction tests share, built once (lazily)."""
    return {}


BUILDERS: dict[str, Callable[[], Any]] = {
    "sd3": tiny_sd3,
    "sd3-inpaint": lambda: tiny_sd3(variant="Inpaint"),
    "flux": tiny_flux,
    "flux-kontext": lambda: tiny_flux(variant="Kontext"),
    "flux-fill": lambda: tiny_flux(variant="Fill", in_channels=12),
    "flux-inpaint": lambda: tiny_flux(variant="Inpaint"),
    "chroma": tiny_chroma,
    "chroma-img2img": lambda: tiny_chroma("Img2Img"),
    "pixart": tiny_pixart,
    "wan": tiny_wan,
    "wan-i2v": lambda: tiny_wan(i2v=True),
}


def get(pipes: dict[str, Any], name: str) -> Any:
    if name not in pipes:
        pipes[name] = BUILDERS[name]()
    return pipes[name]


def reference(pipe: Any, prompt: str, negative: str) -> dict[str, Any]:
    """What the pipeline's own ``encode_prompt`` gives, by the keyword its ``__call__`` takes."""
    family = family_of(pipe)
    with torch.no_grad():
        if family == "sd3":
            pe, ne, pp, npp = pipe.encode_prompt(
                prompt,
                prompt,
                prompt,
                device="cpu",
                negative_prompt=negative,
                max_sequence_length=L,
            )
            return {
                "prompt_embeds": pe,
                "negative_prompt_embeds": ne,
                "pooled_prompt_embeds": pp,
                "negative_pooled_prompt_embeds": npp,
            }
        if family == "flux":
            pe, pp, _ = pipe.encode_prompt(prompt, prompt, device="cpu", max_sequence_length=L)
            out = {"prompt_embeds": pe, "pooled_prompt_embeds": pp}
            if "negative_prompt_embeds" in inspect.signature(type(pipe).__call__).parameters:
                ne, npp, _ = pipe.encode_prompt(
                    negative, negative, device="cpu", max_sequence_length=L
                )
                out |= {"negative_prompt_embeds": ne, "negative_pooled_prompt_embeds": npp}
            return out
        if family == "chroma":
            pe, _, pm, ne, _, nm = pipe.encode_prompt(
                prompt, negative, device="cpu", max_sequence_length=L
            )
            return {
                "prompt_embeds": pe,
                "prompt_attention_mask": pm,
                "negative_prompt_embeds": ne,
                "negative_prompt_attention_mask": nm,
            }
        if family == "pixart":
            pe, pm, ne, nm = pipe.encode_prompt(
                prompt, True, negative, device="cpu", clean_caption=False, max_sequence_length=L
            )
            return {
                "prompt_embeds": pe,
                "prompt_attention_mask": pm,
                "negative_prompt_embeds": ne,
                "negative_prompt_attention_mask": nm,
            }
        if type(pipe).__name__ != "WanPipeline":
            # WanImageToVideoPipeline's own clean-up calls ftfy even where it is not installed;
            # its text encoding is WanPipeline's, so that runs on the same components.
            from diffusers import WanPipeline

            pipe = WanPipeline(
                **{k: pipe.components[k] for k in ("tokenizer", "text_encoder", "vae")},
                scheduler=pipe.scheduler,
                transformer=pipe.transformer,
            )
        pe, ne = pipe.encode_prompt(
            prompt,
            negative,
            do_classifier_free_guidance=True,
            device="cpu",
            max_sequence_length=L,
        )
        return {"prompt_embeds": pe, "negative_prompt_embeds": ne}


def sample(pipe: Any, kwargs: dict[str, Any]) -> Any:
    """Two steps on the tiny pipeline, with the inputs its class needs."""
    name = type(pipe).__name__
    image = torch.rand(1, 3, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:] = 1.0
    extra: dict[str, Any] = {"height": 8, "width": 8, "max_sequence_length": L}
    if "Inpaint" in name or "Fill" in name:
        extra |= {"image": image, "mask_image": mask}
    if "Img2Img" in name or "Inpaint" in name:
        extra |= {"image": image, "strength": 0.9}
    if "Kontext" in name:
        extra |= {"image": image, "_auto_resize": False, "max_area": 64}
    if name.startswith("PixArt"):
        extra["use_resolution_binning"] = False
    if name.startswith("Wan"):
        extra |= {"height": 16, "width": 16, "num_frames": 5}
    if name == "WanImageToVideoPipeline":
        from PIL import Image

        extra["image"] = Image.new("RGB", (16, 16))
    return pipe(
        **kwargs,
        **extra,
        num_inference_steps=2,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
    )


@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_plain_prompt_is_the_pipelines_own_bit_for_bit_and_samples(
    pipes: dict[str, Any], name: str
) -> None:
    pipe = get(pipes, name)
    prompt = "  a red cat   &amp; a mat " if name == "wan" else PROMPT  # Wan's clean-up too
    negative = "" if name == "flux-fill" else NEGATIVE
    cond = encode(pipe, prompt, negative, max_sequence_length=L, exact=True)
    kwargs = cond.pipeline_kwargs()
    expected = reference(pipe, prompt, negative)
    given = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    assert sorted(given) == sorted(expected)
    for key, tensor in expected.items():
        assert given[key].dtype == tensor.dtype, key
        assert given[key].shape == tensor.shape, key
        assert torch.equal(given[key], tensor), key
    sample(pipe, kwargs)


def t5_part(pipe: Any, embeds: Any) -> Any:
    """The T5 positions of a conditioning (SD3 puts CLIP's 77 before them)."""
    return embeds[0, 77:] if family_of(pipe) == "sd3" else embeds[0]


FAMILIES_T5 = ["sd3", "flux", "chroma", "pixart", "wan"]


@pytest.mark.parametrize("name", FAMILIES_T5)
@pytest.mark.parametrize("strategy", ["a1111", "comfy"])
def test_up_and_down_weighting_move_the_span_as_the_strategy_says(
    pipes: dict[str, Any], name: str, strategy: str
) -> None:
    pipe = get(pipes, name)
    # "▁cat" is the 3rd token of "a red cat on a mat" for the tiny T5 tokenizer.
    cat = 2

    def t5(prompt: str) -> Any:
        cond = encode(pipe, prompt, max_sequence_length=L, exact=True, strategy=strategy)
        return t5_part(pipe, cond.prompt_embeds).float()

    plain = t5(PROMPT)
    up = t5("a red (cat:1.5) on a mat")
    down = t5("a red (cat:0.5) on a mat")
    if strategy == "comfy":
        # ComfyUI's lerp: the span moves away from / toward the empty prompt's encoding, by w.
        empty = t5("")
        for weighted, w in ((up, 1.5), (down, 0.5)):
            torch.testing.assert_close(weighted[cat] - empty[cat], w * (plain[cat] - empty[cat]))
            others = [j for j in range(plain.shape[0]) if j != cat]
            assert torch.equal(weighted[others], plain[others])
    else:
        # A1111/Forge: the span scaled by w, then the whole window by one factor (mean restore).
        def relative(x: Any) -> float:
            others = torch.cat([x[:cat], x[cat + 1 : 6]])
            return float(x[cat].norm() / others.norm(dim=-1).mean())

        assert relative(up) > relative(plain) > relative(down)
        cos = torch.nn.functional.cosine_similarity
        assert float(cos(up[cat], plain[cat], dim=0)) == pytest.approx(1.0, abs=1e-5)
        assert float(cos(down[cat], plain[cat], dim=0)) == pytest.approx(1.0, abs=1e-5)
    if name == "wan":  # zeros past the text stay zeros
        assert not up[8:].any()


# --- per-encoder prompts, weighting off ----------------------------------------------------------


def test_flux_prompt_2_goes_to_t5_with_its_own_weights(pipes: dict[str, Any]) -> None:
    pipe = get(pipes, "flux")
    both = encode(pipe, PROMPT, prompt_2="a red (cat:1.5) on a mat", max_sequence_length=L)
    plain = encode(pipe, PROMPT, max_sequence_length=L)
    weighted = encode(pipe, "a red (cat:1.5) on a mat", max_sequence_length=L)
    assert torch.equal(both.pooled_prompt_embeds, plain.pooled_prompt_embeds)
    assert torch.equal(both.prompt_embeds, weighted.prompt_embeds)
    assert not torch.equal(both.prompt_embeds, plain.prompt_embeds)


def test_sd3_prompt_3_is_t5s_and_weights_differ_per_encoder(pipes: dict[str, Any]) -> None:
    pipe = get(pipes, "sd3")
    cond = encode(
        pipe, "a (red:1.4) cat", prompt_3="a red (cat:0.6)", max_sequence_length=L, exact=True
    )
    clip_weighted = encode(pipe, "a (red:1.4) cat", max_sequence_length=L, exact=True)
    t5_weighted = encode(pipe, "a red (cat:0.6)", max_sequence_length=L, exact=True)
    assert torch.equal(cond.prompt_embeds[:, :77], clip_weighted.prompt_embeds[:, :77])
    assert torch.equal(cond.prompt_embeds[:, 77:], t5_weighted.prompt_embeds[:, 77:])


@pytest.mark.parametrize("name", ["chroma", "pixart", "wan"])
def test_one_tower_families_take_no_prompt_2(pipes: dict[str, Any], name: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"take no prompt_2.*read prompt"):
        encode(get(pipes, name), PROMPT, prompt_2="a dog")


def test_weights_only_flux_clip_l_reads_are_dropped_with_a_reason(pipes: dict[str, Any]) -> None:
    pipe = get(pipes, "flux")
    with pytest.warns(PromptweightsWarning, match="dropped on text_encoder: only its pooled"):
        encode(pipe, "a (red:1.5) cat", prompt_2="a red cat", max_sequence_length=L)
    with pytest.raises(UnreproducibleError, match="dropped on text_encoder"):
        encode(pipe, "a (red:1.5) cat", prompt_2="a red cat", max_sequence_length=L, strict=True)
    # The same weighted text on T5 as well: the weights are applied there, nothing to say.
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptweightsWarning)
        encode(pipe, "a (red:1.5) cat", max_sequence_length=L, strict=True)


# --- long prompts and BREAK ----------------------------------------------------------------------

LONG = "a red cat on a mat, " * 4  # 28 tokens: 13 past the 15 that fit before the EOS


def test_long_t5_text_is_truncated_with_the_count_dropped(pipes: dict[str, Any]) -> None:
    pipe = get(pipes, "flux")
    ids = tiny_t5_tokenizer()([LONG], add_special_tokens=False)["input_ids"][0]
    dropped = len(ids) - (L - 1)
    with pytest.warns(PromptweightsWarning, match=f"{dropped} tokens of .* were dropped"):
        cond = encode(pipe, LONG, max_sequence_length=L, exact=True)
    expected = reference(pipe, LONG, "")["prompt_embeds"]
    assert torch.equal(cond.prompt_embeds, expected)
    with pytest.raises(UnreproducibleError, match="long_prompts='chunk'"):
        encode(pipe, LONG, max_sequence_length=L, strict=True)


@pytest.mark.parametrize("name", ["flux", "chroma", "sd3"])
def test_chunked_t5_takes_more_windows(pipes: dict[str, Any], name: str) -> None:
    pipe = get(pipes, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptweightsWarning)
        cond = encode(pipe, LONG, "dog", max_sequence_length=L, long_prompts="chunk")
    t5 = t5_part(pipe, cond.prompt_embeds)
    assert t5.shape[0] == 2 * L
    assert cond.negative_prompt_embeds.shape == cond.prompt_embeds.shape
    if name == "chroma":
        # Each window masked as the tokenizer masks it, plus Chroma's one padding position.
        mask = cond.prompt_attention_mask[0]
        assert mask.tolist() == [1.0] * 16 + [1.0] * 15 + [0.0]  # 15+EOS; 13+EOS+1 pad
        negative = cond.negative_prompt_attention_mask[0]
        assert negative.tolist() == [1.0] * 3 + [0.0] * 13 + [1.0] * 2 + [0.0] * 14
    sample(pipe, cond.pipeline_kwargs())


def test_break_starts_a_t5_window_only_when_chunked(pipes: dict[str, Any]) -> None:
    pipe = get(pipes, "flux")
    with pytest.warns(PromptweightsWarning, match="BREAK ignored 1 time"):
        one = encode(pipe, "a cat BREAK dog", max_sequence_length=L, exact=True)
    assert torch.equal(one.prompt_embeds, reference(pipe, "a cat dog", "")["prompt_embeds"])
    two = encode(pipe, "a cat BREAK dog", max_sequence_length=L, long_prompts="chunk", exact=True)
    first = reference(pipe, "a cat", "")["prompt_embeds"]
    second = reference(pipe, "dog", "")["prompt_embeds"]
    assert torch.equal(two.prompt_embeds, torch.cat([first, second], dim=1))


def test_wan_reads_one_window(pipes: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError, match=r"Wan 2\.x takes long_prompts=\['truncate'\]"):
        encode(get(pipes, "wan"), PROMPT, long_prompts="chunk")


# --- negatives, editing, refusals ----------------------------------------------------------------


def test_flux_fill_drops_a_negative_it_cannot_take(pipes: dict[str, Any]) -> None:
    pipe = get(pipes, "flux-fill")
    with pytest.warns(PromptweightsWarning, match="takes no negative prompt"):
        cond = encode(pipe, PROMPT, NEGATIVE, max_sequence_length=L)
    assert "negative_prompt_embeds" not in cond.pipeline_kwargs()


def test_wan_editing_swaps_the_negative_as_a_tensor_of_its_own(pipes: dict[str, Any]) -> None:
    pipe = get(pipes, "wan")
    cond = encode(pipe, "a [cat:dog:1] on a mat", "[blue:red:1]", steps=3, max_sequence_length=L)
    kwargs = cond.pipeline_kwargs()
    assert kwargs["callback_on_step_end_tensor_inputs"] == [
        "prompt_embeds",
        "negative_prompt_embeds",
    ]
    red = encode(pipe, "a dog on a mat", "red", max_sequence_length=L).negative_prompt_embeds
    seen: list[Any] = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["encoder_hidden_states"].clone()), with_kwargs=True
    )
    try:
        with cond.attach(pipe):
            pipe(
                **kwargs,
                height=16,
                width=16,
                num_frames=5,
                output_type="latent",
                max_sequence_length=L,
            )
    finally:
        handle.remove()
    # Calls alternate cond, uncond; the last uncond call reads the edited negative. The schedule
    # encodes cat, dog, blue and red in one batch, red here two rows: equal up to the batched
    # GEMM's last bits, against 2.1 between the red and blue negatives.
    torch.testing.assert_close(seen[-1], red, rtol=1e-5, atol=1e-5)


def test_pixart_editing_switches_in_the_denoiser_hook(pipes: dict[str, Any]) -> None:
    # PixArt's __call__ takes no callback_on_step_end: the conditioning switches in attach's hook.
    pipe = get(pipes, "pixart")
    cond = encode(pipe, "a [cat:dog:1] on a mat", NEGATIVE, steps=3, max_sequence_length=L)
    with pytest.raises(PromptweightsError, match=r"no callback_on_step_end.*attach"):
        cond.pipeline_kwargs()
    options = {
        name: encode(pipe, f"a {name} on a mat", NEGATIVE, max_sequence_length=L).prompt_embeds
        for name in ("cat", "dog")
    }
    seen: list[Any] = []
    with cond.attach(pipe):
        handle = pipe.transformer.register_forward_pre_hook(
            lambda m, a, kw: seen.append(kw["encoder_hidden_states"][1:].clone()),
            with_kwargs=True,
        )
        try:
            kwargs = cond.pipeline_kwargs()
            assert "callback_on_step_end" not in kwargs
            pipe(
                **kwargs,
                height=8,
                width=8,
                output_type="latent",
                max_sequence_length=L,
                use_resolution_binning=False,
            )
        finally:
            handle.remove()
    # The schedule encodes cat and dog in one batch, the options one prompt each: equal up to the
    # batched GEMM's last bits, against 2.6 between cat and dog.
    labels = [label(s, options, tol=1e-5) for s in seen]
    assert labels == ["cat", "cat", "dog"]
    assert not pipe.transformer._forward_pre_hooks


def test_an_unsupported_text_encoder_names_the_closest_family_and_why() -> None:
    class GemmaForCausalLM:
        pass

    class Flux2Pipeline:
        components: ClassVar[dict[str, object]] = {
            "text_encoder": GemmaForCausalLM(),
            "tokenizer": object(),
            "transformer": object(),
            "vae": object(),
            "scheduler": object(),
        }

    with pytest.raises(UnsupportedPipelineError) as caught:
        encode(Flux2Pipeline(), PROMPT)
    message = str(caught.value)
    assert "closest is Flux.2 ('flux2')" in message
    assert "text_encoder is a GemmaForCausalLM" in message


def test_the_readme_table_has_every_family_and_policy() -> None:
    from pathlib import Path

    from promptweights.diffusers.families import RECORDS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Model families and their weighting", 1)[1].split("\n### ", 1)[0]
    rows = [row for row in section.splitlines() if row.startswith("| ")]
    for record in RECORDS:
        if record.title:
            assert any(row.startswith(f"| {record.title}") for row in rows), record.title
        for tower in record.towers:
            policy = tower.weighting
            default = "off" if not policy.weighted else f"`{policy.default}`"
            assert any(
                row.startswith(f"| {record.title or 'SDXL'}") and f"| {default} |" in row
                for row in rows
            ), (record.name, tower.component)


def test_and_on_pixart_runs_every_part_with_its_mask(pipes: dict[str, Any]) -> None:
    pipe = get(pipes, "pixart")
    cond = encode(pipe, "a red cat AND a blue dog:0.5", NEGATIVE, max_sequence_length=L)
    seen: list[tuple[int, int]] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        seen.append(
            (kwargs["encoder_hidden_states"].shape[0], kwargs["encoder_attention_mask"].shape[0])
        )

    with cond.attach(pipe):
        # Registered after the AND hook, so it sees [uncond, cond 1, cond 2] and their masks.
        handle = pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
        try:
            sample(pipe, cond.pipeline_kwargs())
        finally:
            handle.remove()
    assert seen == [(3, 3), (3, 3)]
    assert not pipe.transformer._forward_pre_hooks


def test_literal_syntax_reaches_every_flux_encoder_alike(pipes: dict[str, Any]) -> None:
    # strategy="none": brackets are text on T5 and on the CLIP-L whose weighting is off.
    pipe = get(pipes, "flux")
    literal = encode(pipe, "a (red) cat", max_sequence_length=L, strategy="none", exact=True)
    expected = reference(pipe, "a (red) cat", "")
    assert torch.equal(literal.pooled_prompt_embeds, expected["pooled_prompt_embeds"])
    assert torch.equal(literal.prompt_embeds, expected["prompt_embeds"])
