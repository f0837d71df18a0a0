"""The diffusers adapter on tiny pipelines of every family (no downloads, 2–10 tiny steps).

Expected values come from the pipelines themselves (``encode_prompt`` under ``torch.no_grad()``,
as their ``__call__`` runs it), from what the denoiser receives while sampling, and from A1111's
formulas written out in the test (a1111-behaviour.md §4.5, §6.2).
"""

from __future__ import annotations

import inspect
import typing
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from _passes import Passes
from _rows import label
from _tiny_pipelines import (
    tiny_flux,
    tiny_sd1,
    tiny_sd2,
    tiny_sd3,
    tiny_sdxl,
    tiny_sdxl_refiner,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import promptweights as pw
from promptweights.diffusers import Conditioning, family_of
from promptweights.diffusers import encode as _encode
from promptweights.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    InvalidWeightError,
    LimitExceededError,
    NetworkFileError,
    PromptweightsError,
    PromptweightsWarning,
    UnknownNameError,
    UnreproducibleError,
    UnsupportedPipelineError,
)
from promptweights.testing import bracket_soup, prompts

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

PROMPT = "a red cat on a mat"
NEGATIVE = "blue dog"
LONG = "a (cat:1.3) on a mat, " * 26 + "[red sky]"  # three chunks, weighted


def encode(pipe: Any, *args: Any, **kwargs: Any) -> Conditioning:
    """``promptweights.diffusers.encode`` in its exact mode (one row per forward pass) unless a
    test says otherwise: this module compares with the pipelines' own one-text calls, and between
    requests of different rows, bit for bit, which a batched pass may round otherwise."""
    kwargs.setdefault("exact", True)
    return _encode(pipe, *args, **kwargs)


@pytest.fixture(scope="module")
def sd1() -> Any:
    return tiny_sd1()


@pytest.fixture(scope="module")
def sdxl() -> Any:
    return tiny_sdxl()


def reference(pipe: Any, prompt: str, negative: str | None, **kwargs: Any) -> tuple[Any, ...]:
    """The pipeline's own encode_prompt, run as its __call__ runs it (under no_grad)."""
    with torch.no_grad():
        if family_of(pipe) == "sd":
            out: tuple[Any, ...] = pipe.encode_prompt(prompt, "cpu", 1, True, negative, **kwargs)
            return out
        if family_of(pipe) == "flux":
            pos = pipe.encode_prompt(prompt, prompt, device="cpu", **kwargs)
            neg = pipe.encode_prompt(negative, negative, device="cpu", **kwargs)
            return pos[0], neg[0], pos[1], neg[1]
        if family_of(pipe) == "sd3":
            out = pipe.encode_prompt(
                prompt, prompt, prompt, device="cpu", negative_prompt=negative, **kwargs
            )
            return out
        out = pipe.encode_prompt(prompt, device="cpu", negative_prompt=negative, **kwargs)
        return out


def embeds(cond: Conditioning) -> tuple[Any, ...]:
    return (
        cond.prompt_embeds,
        cond.negative_prompt_embeds,
        cond.pooled_prompt_embeds,
        cond.negative_pooled_prompt_embeds,
    )


def assert_same(actual: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
    for a, e in zip(actual, expected, strict=True):
        if e is None:
            assert a is None
        else:
            assert a is not None
            assert a.shape == e.shape
            assert torch.equal(a, e)


def record_conditioning(pipe: Any) -> tuple[list[Any], Any]:
    """Record ``encoder_hidden_states`` of every denoiser call; returns (records, hook handle)."""
    seen: list[Any] = []
    denoiser = getattr(pipe, "unet", None) or pipe.transformer

    def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        seen.append(kwargs["encoder_hidden_states"].clone())

    return seen, denoiser.register_forward_pre_hook(hook, with_kwargs=True)


def run(pipe: Any, cond: Conditioning, steps: int = 2, **kwargs: Any) -> Any:
    size = 8 if family_of(pipe) in ("sd3", "flux") else 16
    options: dict[str, Any] = {"height": size, "width": size, "output_type": "pt"}
    options.update(kwargs)
    with cond.attach(pipe):
        return pipe(
            **{"num_inference_steps": steps, **cond.pipeline_kwargs()},
            generator=torch.Generator().manual_seed(0),
            **options,
        ).images


# --- a plain prompt equals the pipeline's own encode_prompt, every family ------------------------


@pytest.mark.parametrize("negative", [NEGATIVE, ""])
def test_sd1_plain_prompt_is_bit_identical(sd1: Any, negative: str) -> None:
    cond = encode(sd1, PROMPT, negative)
    assert_same(embeds(cond), (*reference(sd1, PROMPT, negative), None, None))
    assert cond.family == "sd"
    assert "callback_on_step_end" not in cond.pipeline_kwargs()


def test_sd1_clip_skip_is_the_pipelines(sd1: Any) -> None:
    # diffusers' clip_skip=1 (A1111's "Clip skip 2"): hidden_states[-2], then the final layer norm.
    cond = encode(sd1, PROMPT, NEGATIVE, clip_skip=1)
    model = sd1.text_encoder
    expected = []
    for text in (PROMPT, NEGATIVE):
        ids = sd1.tokenizer(text, padding="max_length", max_length=77).input_ids
        with torch.no_grad():
            hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-2]
            expected.append(model.final_layer_norm(hidden))
    assert torch.equal(cond.prompt_embeds, expected[0])
    assert torch.equal(cond.negative_prompt_embeds, expected[1])


def test_sd2_pads_with_its_own_pad_id_and_is_bit_identical() -> None:
    pipe = tiny_sd2()
    assert pipe.tokenizer.pad_token_id == 0  # OpenCLIP's "!"
    cond = encode(pipe, PROMPT, NEGATIVE)
    assert_same(embeds(cond), (*reference(pipe, PROMPT, NEGATIVE), None, None))


def test_sdxl_plain_prompt_is_bit_identical(sdxl: Any) -> None:
    cond = encode(sdxl, PROMPT, NEGATIVE)
    assert_same(embeds(cond), reference(sdxl, PROMPT, NEGATIVE))


def test_sdxl_empty_negative_is_zeros_as_diffusers(sdxl: Any) -> None:
    cond = encode(sdxl, PROMPT)
    assert_same(embeds(cond), reference(sdxl, PROMPT, None))
    assert not cond.negative_prompt_embeds.any()
    assert not cond.negative_pooled_prompt_embeds.any()
    # A LoRA tag alone is still an empty negative (tags are removed first).
    again = encode(sdxl, PROMPT, "<lora:x:1>")
    assert not again.negative_prompt_embeds.any()


def test_sdxl_refiner_uses_encoder_2_only() -> None:
    pipe = tiny_sdxl_refiner()
    cond = encode(pipe, PROMPT, NEGATIVE)
    assert cond.family == "sdxl-refiner"
    assert cond.prompt_embeds.shape == (1, 77, 32)
    assert_same(embeds(cond), reference(pipe, PROMPT, NEGATIVE))
    image = torch.rand(1, 3, 16, 16)
    assert run(pipe, cond, image=image, strength=0.9).shape == (1, 3, 16, 16)


def test_sdxl_prompt_2_goes_to_encoder_2(sdxl: Any) -> None:
    cond = encode(sdxl, PROMPT, NEGATIVE, prompt_2="house on a hill", negative_prompt_2="sky")
    with torch.no_grad():
        expected = sdxl.encode_prompt(
            PROMPT,
            "house on a hill",
            device="cpu",
            negative_prompt=NEGATIVE,
            negative_prompt_2="sky",
        )
    assert_same(embeds(cond), expected)


def test_sdxl_prompt_2_of_another_length_is_aligned(sdxl: Any) -> None:
    cond = encode(sdxl, PROMPT, prompt_2=LONG)
    assert cond.prompt_embeds.shape == (1, 3 * 77, 64)
    assert cond.negative_prompt_embeds.shape == (1, 3 * 77, 64)


@pytest.mark.parametrize("t5", [True, False])
def test_sd3_plain_prompt_is_bit_identical(t5: bool) -> None:
    pipe = tiny_sd3(t5=t5)
    cond = encode(pipe, PROMPT, NEGATIVE, max_sequence_length=16)
    assert_same(embeds(cond), reference(pipe, PROMPT, NEGATIVE, max_sequence_length=16))
    assert run(pipe, cond).shape == (1, 3, 8, 8)


def test_flux_plain_prompt_is_bit_identical() -> None:
    pipe = tiny_flux()
    cond = encode(pipe, PROMPT, NEGATIVE, max_sequence_length=16)
    assert_same(embeds(cond), reference(pipe, PROMPT, NEGATIVE, max_sequence_length=16))
    assert run(pipe, cond, max_sequence_length=16, true_cfg_scale=2.0).shape == (1, 3, 8, 8)
    # No negative: none returned, so the pipeline runs without true CFG, as with diffusers.
    plain = encode(pipe, PROMPT, max_sequence_length=16)
    assert plain.negative_prompt_embeds is None
    assert "negative_prompt_embeds" not in plain.pipeline_kwargs()


def test_unknown_pipeline_is_refused() -> None:
    with pytest.raises(UnsupportedPipelineError, match=r"supports SD 1\.x"):
        encode(object(), PROMPT)


# --- lengths, batches, dtypes, autograd --------------------------------------------------------


@pytest.mark.parametrize("negative", ["", "dog", None])
def test_long_weighted_prompt_with_short_negative_runs(sd1: Any, negative: str | None) -> None:
    cond = encode(sd1, LONG, negative)
    assert cond.prompt_embeds.shape == cond.negative_prompt_embeds.shape == (1, 3 * 77, 32)
    assert run(sd1, cond).shape == (1, 3, 16, 16)


def test_sdxl_long_weighted_prompt_with_missing_negative_runs(sdxl: Any) -> None:
    cond = encode(sdxl, LONG)
    assert cond.prompt_embeds.shape == cond.negative_prompt_embeds.shape == (1, 3 * 77, 64)
    assert run(sdxl, cond).shape == (1, 3, 16, 16)


def test_batch_of_prompts_and_negatives(sd1: Any) -> None:
    cond = encode(sd1, [PROMPT, LONG], ["dog", ""])
    assert cond.prompt_embeds.shape == (2, 3 * 77, 32)
    assert torch.equal(cond.prompt_embeds[0, :77], encode(sd1, PROMPT).prompt_embeds[0])
    with pytest.raises(ValueError, match="2 prompts"):
        encode(sd1, [PROMPT, LONG], ["dog", "", "sky"])
    images = run(sd1, cond, num_images_per_prompt=2)
    assert images.shape == (4, 3, 16, 16)


def test_no_autograd_graph(sd1: Any) -> None:
    cond = encode(sd1, "a (cat:1.4) [on a mat]", "dog")
    for tensor in (cond.prompt_embeds, cond.negative_prompt_embeds):
        assert not tensor.requires_grad
        assert tensor.grad_fn is None
        assert not tensor.is_inference()


def test_bfloat16_pipeline() -> None:
    pipe = tiny_sd1().to(torch.bfloat16)
    cond = encode(pipe, "a (cat:1.2) on a mat", "dog")
    assert cond.prompt_embeds.dtype == torch.bfloat16
    plain = encode(pipe, PROMPT, NEGATIVE)
    assert_same(embeds(plain), (*reference(pipe, PROMPT, NEGATIVE), None, None))
    assert run(pipe, cond).shape == (1, 3, 16, 16)


def test_float16_text_encoder() -> None:
    pipe = tiny_sdxl()
    pipe.text_encoder.to(torch.float16)
    pipe.text_encoder_2.to(torch.float16)
    cond = encode(pipe, PROMPT, NEGATIVE)
    assert cond.prompt_embeds.dtype == torch.float16
    assert_same(embeds(cond), reference(pipe, PROMPT, NEGATIVE))


# --- prompt editing and alternation at run time ------------------------------------------------


def conds_seen(pipe: Any, cond: Conditioning, steps: int, **kwargs: Any) -> list[Any]:
    """The positive conditioning the denoiser got at each call."""
    seen, handle = record_conditioning(pipe)
    try:
        run(pipe, cond, steps=steps, **kwargs)
    finally:
        handle.remove()
    return [s[s.shape[0] // 2 :] for s in seen]  # the cond half of [uncond, cond]


def labels(seen: list[Any], options: dict[str, Any]) -> str:
    return " ".join(label(s, options) or "?" for s in seen)


def test_edit_switches_after_call_when_0_based(sd1: Any) -> None:
    cond = encode(sd1, "[cat:dog:5]", steps=10)
    assert cond.edits
    kwargs = cond.pipeline_kwargs()
    assert kwargs["callback_on_step_end_tensor_inputs"] == ["prompt_embeds"]
    options = {"cat": encode(sd1, "cat").prompt_embeds, "dog": encode(sd1, "dog").prompt_embeds}
    seen = conds_seen(sd1, cond, 10)
    # a1111-behaviour.md §4.5: `from` is used for t + 1 = 6 calls.
    assert labels(seen, options) == "cat cat cat cat cat cat dog dog dog dog"


def test_alternation_runs_a_a_b_a_b(sd1: Any) -> None:
    cond = encode(sd1, "[cat|dog]", steps=6)
    options = {"cat": encode(sd1, "cat").prompt_embeds, "dog": encode(sd1, "dog").prompt_embeds}
    assert labels(conds_seen(sd1, cond, 6), options) == "cat cat dog cat dog cat"


def test_editing_in_the_negative_prompt(sd1: Any) -> None:
    cond = encode(sd1, "cat", "[dog::2]", steps=4)
    seen, handle = record_conditioning(sd1)
    try:
        run(sd1, cond, steps=4)
    finally:
        handle.remove()
    dog = encode(sd1, "dog").prompt_embeds
    empty = encode(sd1, "").prompt_embeds
    negatives = [
        "dog" if torch.equal(s[:1], dog) else "" if torch.equal(s[:1], empty) else "?" for s in seen
    ]
    assert negatives == ["dog", "dog", "dog", ""]


def test_second_order_scheduler_doubles_the_schedule() -> None:
    from diffusers import HeunDiscreteScheduler

    pipe = tiny_sd1()
    pipe.scheduler = HeunDiscreteScheduler.from_config(pipe.scheduler.config)
    cond = encode(pipe, "[cat:dog:2]", steps=3)
    assert cond.steps == 6
    options = {"cat": encode(pipe, "cat").prompt_embeds, "dog": encode(pipe, "dog").prompt_embeds}
    # Heun makes 2·3 − 1 = 5 model calls; A1111 counts every call (§4.4).
    assert labels(conds_seen(pipe, cond, 3), options) == "cat cat cat dog dog"


def test_img2img_keeps_the_full_schedule() -> None:
    pipe = tiny_sd1(img2img=True)
    cond = encode(pipe, "[cat:dog:2]", steps=10)
    options = {"cat": encode(pipe, "cat").prompt_embeds, "dog": encode(pipe, "dog").prompt_embeds}
    seen = conds_seen(pipe, cond, 10, image=torch.rand(1, 3, 16, 16), strength=0.5)
    assert labels(seen, options) == "cat cat cat dog dog"


def test_sdxl_editing_swaps_pooled_too(sdxl: Any) -> None:
    cond = encode(sdxl, "[cat|dog] on a mat", NEGATIVE, steps=3)
    kwargs = cond.pipeline_kwargs()
    assert kwargs["callback_on_step_end_tensor_inputs"] == ["prompt_embeds", "add_text_embeds"]
    pooled: list[Any] = []

    def hook(module: Any, args: Any, kw: dict[str, Any]) -> None:
        pooled.append(kw["added_cond_kwargs"]["text_embeds"][1:].clone())

    handle = sdxl.unet.register_forward_pre_hook(hook, with_kwargs=True)
    seen, handle_2 = record_conditioning(sdxl)
    try:
        run(sdxl, cond, steps=3)
    finally:
        handle.remove()
        handle_2.remove()
    cat = encode(sdxl, "cat on a mat", NEGATIVE)
    dog = encode(sdxl, "dog on a mat", NEGATIVE)
    options = {"cat": cat.prompt_embeds, "dog": dog.prompt_embeds}
    assert labels([s[1:] for s in seen], options) == "cat cat dog"
    pooled_options = {"cat": cat.pooled_prompt_embeds, "dog": dog.pooled_prompt_embeds}
    assert labels(pooled, pooled_options) == "cat cat dog"


def test_editing_needs_steps(sd1: Any) -> None:
    with pytest.raises(ValueError, match="steps="):
        encode(sd1, "[cat:dog:5]")
    # A schedule that never switches needs none.
    assert not encode(sd1, "[cat:dog:0]").edits


# --- AND ----------------------------------------------------------------------------------------


def test_and_needs_attach(sd1: Any) -> None:
    cond = encode(sd1, "cat AND dog:0.5", "sky")
    assert cond.composable
    with pytest.raises(PromptweightsError, match="attach"):
        cond.pipeline_kwargs()


def test_and_is_a1111s_formula(sd1: Any) -> None:
    cond = encode(sd1, "cat AND dog:0.5 AND red sky:-0.25", "blue")
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(500)
    g = 7.5

    def denoise(c: Any) -> Any:
        with torch.no_grad():
            return sd1.unet(x, t, encoder_hidden_states=c).sample

    u = denoise(cond.negative_prompt_embeds)
    parts = [("cat", 1.0), (" dog", 0.5), (" red sky", -0.25)]
    expected = u + sum(w * g * (denoise(encode(sd1, p).prompt_embeds) - u) for p, w in parts)
    state = {k: v.clone() for k, v in sd1.unet.state_dict().items()}
    with cond.attach(sd1), torch.no_grad():
        kwargs = cond.pipeline_kwargs()
        batch = torch.cat([kwargs["negative_prompt_embeds"], kwargs["prompt_embeds"]])
        out = sd1.unet(torch.cat([x, x]), t, encoder_hidden_states=batch, return_dict=False)[0]
    uncond, text = out.chunk(2)
    guided = uncond + g * (text - uncond)  # what the pipeline does with the two halves
    torch.testing.assert_close(guided, expected, rtol=1e-5, atol=1e-5)
    # The pipeline is untouched afterwards: no hooks, same weights, same output.
    assert not sd1.unet._forward_pre_hooks
    assert not sd1.unet._forward_hooks
    for k, v in sd1.unet.state_dict().items():
        assert torch.equal(v, state[k])
    assert torch.equal(denoise(cond.negative_prompt_embeds), u)


def test_and_end_to_end_with_editing(sd1: Any) -> None:
    before = run(sd1, encode(sd1, PROMPT))
    cond = encode(sd1, "[cat:dog:1] AND house:0.7", "sky", steps=3)
    with cond.attach(sd1):
        seen, handle = record_conditioning(sd1)  # registered after the AND hook: sees its batch
        try:
            image = sd1(
                **cond.pipeline_kwargs(),  # num_inference_steps=3
                height=16,
                width=16,
                output_type="pt",
            ).images
        finally:
            handle.remove()
    assert image.shape == (1, 3, 16, 16)
    # Each call ran [uncond, part 1, part 2]; part 1 switched after call 1.
    cat, dog = encode(sd1, "cat").prompt_embeds, encode(sd1, "dog").prompt_embeds
    assert [s.shape[0] for s in seen] == [3, 3, 3]
    assert labels([s[1:2] for s in seen], {"cat": cat, "dog": dog}) == "cat cat dog"
    assert all(torch.equal(s[2:], encode(sd1, " house").prompt_embeds) for s in seen)
    assert torch.equal(run(sd1, encode(sd1, PROMPT)), before)
    assert not sd1.unet._forward_pre_hooks


def test_and_single_part_weight_uses_the_hook(sd1: Any) -> None:
    cond = encode(sd1, "cat:0.5")
    assert cond.composable
    assert run(sd1, cond).shape == (1, 3, 16, 16)


def test_sdxl_and_end_to_end(sdxl: Any) -> None:
    cond = encode(sdxl, ["cat AND dog:0.5", "house"], NEGATIVE)
    assert run(sdxl, cond, num_images_per_prompt=2).shape == (4, 3, 16, 16)
    assert not sdxl.unet._forward_pre_hooks
    assert not sdxl.unet._forward_hooks


def test_and_needs_guidance(sd1: Any) -> None:
    cond = encode(sd1, "cat AND dog")
    with pytest.raises(PromptweightsError, match="guidance_scale"):
        run(sd1, cond, guidance_scale=1.0)
    assert not sd1.unet._forward_pre_hooks


# --- LoRA ---------------------------------------------------------------------------------------


def write_lora(folder: Path, name: str, text_encoder: bool = True) -> Path:
    """Train nothing: a random LoRA for the tiny SD1 pipeline, saved as .safetensors."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipe = tiny_sd1()
    torch.manual_seed(1)
    config = LoraConfig(
        r=2,
        lora_alpha=2,
        init_lora_weights=False,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
    )
    # peft's own injection: transformers 5.24's add_adapter wants peft >= 0.22 (not released).
    inject_adapter_in_model(config, pipe.unet)
    te_layers = None
    if text_encoder:
        te_config = LoraConfig(
            r=2,
            lora_alpha=2,
            init_lora_weights=False,
            target_modules=["q_proj", "k_proj", "v_proj", "out_proj"],
        )
        inject_adapter_in_model(te_config, pipe.text_encoder)
        te_layers = get_peft_model_state_dict(pipe.text_encoder)
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=get_peft_model_state_dict(pipe.unet),
        text_encoder_lora_layers=te_layers,
        weight_name=f"{name}.safetensors",
        safe_serialization=True,
    )
    return folder / f"{name}.safetensors"


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    write_lora(folder, "ink")
    (folder / "sub").mkdir()
    write_lora(folder / "sub", "paper", text_encoder=False)
    return folder


def test_lora_tag_is_loaded_at_its_weights(lora_dir: Path) -> None:
    pipe = tiny_sd1()
    plain = encode(pipe, "a cat")
    cond = encode(pipe, "a cat <lora:ink:0.5:0.25>", lora_dir=lora_dir)
    assert [n.name for n in cond.networks] == ["ink"]
    assert pipe.get_list_adapters() == {"unet": ["pw_ink"], "text_encoder": ["pw_ink"]}
    assert not torch.equal(cond.prompt_embeds, plain.prompt_embeds)
    # Same as loading it by hand at te 0.5 / unet 0.25.
    other = tiny_sd1()
    other.load_lora_weights(str(lora_dir / "ink.safetensors"), adapter_name="x")
    other.set_adapters(["x"], adapter_weights=[{"text_encoder": 0.5, "unet": 0.25}])
    assert torch.equal(cond.prompt_embeds, reference(other, "a cat", "")[0])
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        ours = pipe.unet(x, 10, encoder_hidden_states=plain.prompt_embeds).sample
        theirs = other.unet(x, 10, encoder_hidden_states=plain.prompt_embeds).sample
    assert torch.equal(ours, theirs)
    assert run(pipe, cond).shape == (1, 3, 16, 16)
    # A later prompt without the tag switches it off (A1111 activates per generation).
    again = encode(pipe, "a cat", lora_dir=lora_dir)
    assert torch.equal(again.prompt_embeds, plain.prompt_embeds)


def test_lora_from_a_mapping_and_a_subfolder(lora_dir: Path) -> None:
    pipe = tiny_sd1()
    cond = encode(
        pipe,
        "a cat <lora:paper:1> <lora:inky:0.5>",
        lora_dir=lora_dir,
        loras={"inky": lora_dir / "ink.safetensors"},
    )
    assert sorted(pipe.get_list_adapters()["unet"]) == ["pw_inky", "pw_paper"]
    assert cond.prompt_embeds.shape == (1, 77, 32)


def test_unknown_lora_suggests_close_ones_and_changes_nothing(lora_dir: Path) -> None:
    pipe = tiny_sd1()
    with pytest.raises(UnknownNameError, match="did you mean 'ink'"):
        encode(pipe, "a cat <lora:inks:1>", lora_dir=lora_dir)
    assert not hasattr(pipe.unet, "peft_config")


def test_only_safetensors_are_loaded(tmp_path: Path) -> None:
    pickled = tmp_path / "evil.ckpt"
    pickled.write_bytes(b"not loaded")
    pipe = tiny_sd1()
    with pytest.raises(NetworkFileError, match=r"only \.safetensors"):
        encode(pipe, "a cat <lora:evil:1>", loras={"evil": pickled})
    # A folder's pickles are not even listed.
    with pytest.raises(UnknownNameError, match=r"\(0 LoRAs known\)$"):
        encode(pipe, "a cat <lora:evil:1>", lora_dir=tmp_path)


def test_failed_encode_leaves_the_pipeline_as_it_was(lora_dir: Path) -> None:
    pipe = tiny_sd1()
    state = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}

    def broken(z: Any, w: Any, extras: Any) -> Any:
        raise RuntimeError("strategy failed")

    with pytest.raises(RuntimeError, match="strategy failed"):
        encode(pipe, "a cat <lora:ink:1>", lora_dir=lora_dir, strategy=broken)
    assert not any(pipe.get_list_adapters().values())
    assert pipe.text_encoder.state_dict().keys() == state.keys()
    for k, v in pipe.text_encoder.state_dict().items():
        assert torch.equal(v, state[k])
    with pytest.raises(UnknownNameError):
        encode(pipe, "a cat", strategy="a1112")


def test_lora_tags_are_removed_without_lora_dir(sd1: Any) -> None:
    with pytest.warns(PromptweightsWarning, match="not applied"):
        cond = encode(sd1, "a cat <lora:ink:1>")
    assert torch.equal(cond.prompt_embeds, encode(sd1, "a cat ").prompt_embeds)
    assert cond.networks[0].name == "ink"


# --- textual inversion --------------------------------------------------------------------------


def test_textual_inversion_inside_weighted_spans() -> None:
    pipe = tiny_sd1()
    vectors = torch.randn(3, 32, generator=torch.Generator().manual_seed(2))
    pipe.load_textual_inversion({"<emb>": vectors}, token="<emb>")
    plain = encode(pipe, "a <emb> cat", strategy="a1111-no-norm")
    # diffusers' own encode_prompt expands <emb> to its three tokens too.
    assert torch.equal(plain.prompt_embeds, reference(pipe, "a <emb> cat", "")[0])
    weighted = encode(pipe, "a (<emb>:1.2) cat", strategy="a1111-no-norm")
    positions = slice(2, 5)  # BOS, "a", then the three vectors
    torch.testing.assert_close(
        weighted.prompt_embeds[0, positions], plain.prompt_embeds[0, positions] * 1.2
    )
    assert torch.equal(weighted.prompt_embeds[0, 5:], plain.prompt_embeds[0, 5:])


def test_textual_inversion_is_never_split_across_chunks() -> None:
    pipe = tiny_sd1()
    pipe.load_textual_inversion({"<emb>": torch.randn(3, 32)}, token="<emb>")
    ids = pipe.tokenizer.convert_tokens_to_ids(["<emb>", "<emb>_1", "<emb>_2"])
    cond = encode(pipe, "a " * 73 + "<emb>")
    assert cond.prompt_embeds.shape == (1, 154, 32)
    # 73 + 3 > 75: all three vectors start chunk 2, which is then exactly "<emb>" alone.
    alone = encode(pipe, "<emb>").prompt_embeds
    assert torch.equal(cond.prompt_embeds[:, 77:], alone)
    assert torch.equal(cond.prompt_embeds[:, :77], encode(pipe, "a " * 73).prompt_embeds)
    assert len(ids) == 3


def test_sdxl_textual_inversion_in_both_encoders() -> None:
    pipe = tiny_sdxl()
    generator = torch.Generator().manual_seed(3)
    for encoder, tokenizer in ((pipe.text_encoder, pipe.tokenizer),
                               (pipe.text_encoder_2, pipe.tokenizer_2)):  # fmt: skip
        vectors = torch.randn(2, 32, generator=generator)
        pipe.load_textual_inversion(
            {"<emb>": vectors}, token="<emb>", text_encoder=encoder, tokenizer=tokenizer
        )
    plain = encode(pipe, "a <emb> cat", NEGATIVE)
    assert_same(embeds(plain), reference(pipe, "a <emb> cat", NEGATIVE))
    weighted = encode(pipe, "a (<emb>:1.3) cat", NEGATIVE, strategy="a1111-no-norm")
    torch.testing.assert_close(weighted.prompt_embeds[0, 2:4], plain.prompt_embeds[0, 2:4] * 1.3)
    assert torch.equal(weighted.pooled_prompt_embeds, plain.pooled_prompt_embeds)


def test_hires_pass_schedule(sd1: Any) -> None:
    # a1111-behaviour.md §4.2: in the hires pass (new timelines) `[a:b:1.5]` switches half-way.
    cond = encode(sd1, "[cat:dog:1.5]", steps=20, hires_steps=4)
    assert cond.steps == 4
    options = {"cat": encode(sd1, "cat").prompt_embeds, "dog": encode(sd1, "dog").prompt_embeds}
    labels_at = labels([cond.at_call(k)["prompt_embeds"] for k in range(4)], options)
    assert labels_at == "cat cat cat dog"


# --- img2img of every family --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "size"),
    [
        (lambda: tiny_sd1(img2img=True), 16),
        (lambda: tiny_sdxl(img2img=True), 16),
        (lambda: tiny_sd3(img2img=True), 8),
        (lambda: tiny_flux(img2img=True), 8),
    ],
    ids=["sd", "sdxl", "sd3", "flux"],
)
def test_img2img_takes_the_same_kwargs(make: Any, size: int) -> None:
    pipe = make()
    extra = {"max_sequence_length": 16} if family_of(pipe) in ("sd3", "flux") else {}
    cond = encode(pipe, "a [cat|dog] (on a mat:1.2)", NEGATIVE, steps=4, **extra)
    image = torch.rand(1, 3, size, size)
    out = run(pipe, cond, steps=4, image=image, strength=0.75, height=size, width=size, **extra)
    assert out.shape == (1, 3, size, size)


# --- SD3 and Flux: editing and AND --------------------------------------------------------------


def test_sd3_editing_and_and() -> None:
    pipe = tiny_sd3()
    cond = encode(pipe, "[cat|dog] on a mat", NEGATIVE, steps=3, max_sequence_length=16)
    assert cond.pipeline_kwargs()["callback_on_step_end_tensor_inputs"] == [
        "prompt_embeds",
        "pooled_prompt_embeds",
    ]
    cat = encode(pipe, "cat on a mat", NEGATIVE, max_sequence_length=16).prompt_embeds
    dog = encode(pipe, "dog on a mat", NEGATIVE, max_sequence_length=16).prompt_embeds
    seen = conds_seen(pipe, cond, 3)
    assert labels(seen, {"cat": cat, "dog": dog}) == "cat cat dog"
    both = encode(pipe, "cat AND dog:0.5", NEGATIVE, max_sequence_length=16)
    with both.attach(pipe):
        recorded, handle = record_conditioning(pipe)
        try:
            out = pipe(
                **both.pipeline_kwargs(), num_inference_steps=2, height=8, width=8, output_type="pt"
            ).images
        finally:
            handle.remove()
    assert out.shape == (1, 3, 8, 8)
    assert [r.shape[0] for r in recorded] == [3, 3]
    assert not pipe.transformer._forward_pre_hooks


def test_flux_editing_swaps_the_t5_sequence() -> None:
    pipe = tiny_flux()
    cond = encode(pipe, "a [cat:dog:1] on a mat", steps=3, max_sequence_length=16)
    # CLIP-L reads the edit too: its pooled vector switches only inside attach (said once here).
    with pytest.warns(PromptweightsWarning, match="pooled vector"):
        kwargs = cond.pipeline_kwargs()
    assert kwargs["callback_on_step_end_tensor_inputs"] == ["prompt_embeds"]
    options = {
        name: encode(pipe, f"a {name} on a mat", max_sequence_length=16).prompt_embeds
        for name in ("cat", "dog")
    }
    seen, handle = record_conditioning(pipe)
    try:
        run(pipe, cond, steps=3, max_sequence_length=16)  # inside attach: no warning
    finally:
        handle.remove()
    assert labels(seen, options) == "cat cat dog"
    # AND on Flux (no batched guidance) runs: tests/test_every_family.py checks what it computes.


def test_model_cpu_offload() -> None:
    # CPU only here: accelerate's offload hooks with the CPU as the execution device. (A real GPU
    # run with text encoders on other devices is not covered by this suite.)
    pipe = tiny_sdxl()
    expected = encode(pipe, LONG, "dog")
    pipe.enable_model_cpu_offload(device="cpu")
    cond = encode(pipe, LONG, "dog")
    assert_same(embeds(cond), embeds(expected))
    assert run(pipe, cond).shape == (1, 3, 16, 16)


def test_a_users_callback_runs_after_the_swap(sd1: Any) -> None:
    steps_seen: list[int] = []

    def mine(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        assert "latents" in kwargs
        steps_seen.append(i)
        return {}

    cond = encode(sd1, "[cat:dog:1]", steps=3)
    kwargs = cond.pipeline_kwargs(mine)
    assert kwargs["callback_on_step_end_tensor_inputs"] == ["prompt_embeds", "latents"]
    assert kwargs["num_inference_steps"] == 3
    sd1(**kwargs, height=16, width=16, output_type="pt")
    assert steps_seen == [0, 1, 2]
    plain = encode(sd1, "cat").pipeline_kwargs(mine)
    assert plain["callback_on_step_end"] is mine


# --- one batched pass per text encoder, at A1111's row minimum -----------------------------------


def test_rows_are_the_a1111_minimum_in_one_pass_per_encoder() -> None:
    pipe = tiny_sd1()
    two = "a " * 80 + "b"  # two different chunks (LONG repeats itself: identical rows are shared)
    passes = Passes(pipe)
    try:
        # One chunk each: 2 rows, as encode_prompt; no empty prompt where nothing is padded.
        _encode(pipe, PROMPT, NEGATIVE)
        assert passes.take() == [(1, 2)]
        # Two chunks and one: the negative is padded with the empty window, encoded once...
        _encode(pipe, two, NEGATIVE)
        assert passes.take() == [(1, 2 + 1 + 1)]
        # ... and cached from then on: the chunks of prompt and negative, A1111's minimum.
        _encode(pipe, two, NEGATIVE)
        assert passes.take() == [(1, 2 + 1)]
        # A list of prompts and every schedule entry: still one pass.
        _encode(pipe, [two, "[cat:dog:2]"], ["sky", ""], steps=4)
        assert passes.take() == [(1, 2 + 2 + 1)]  # "" is the cached empty window
        # The exact mode: one pass per row, the same rows, and its own one-row empty window.
        _encode(pipe, two, NEGATIVE, exact=True)
        assert passes.take() == [(3 + 1, 3 + 1)]
        _encode(pipe, two, NEGATIVE, exact=True)
        assert passes.take() == [(3, 3)]
    finally:
        passes.close()


def test_sdxl_encodes_each_tower_once_and_equals_the_exact_mode(sdxl: Any) -> None:
    passes = Passes(sdxl)
    try:
        batched = _encode(sdxl, "a (cat:1.2) [dog|house]", [NEGATIVE], steps=4, strategy="compel")
        assert [calls for calls, _ in passes.take()] == [1, 1]
    finally:
        passes.close()
    exact = _encode(
        sdxl, "a (cat:1.2) [dog|house]", NEGATIVE, steps=4, strategy="compel", exact=True
    )
    for a, b in zip(embeds(batched), embeds(exact), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # The former option name still works: batch_rows=False is exact=True.
    rows = _encode(
        sdxl, "a (cat:1.2) [dog|house]", NEGATIVE, steps=4, strategy="compel", batch_rows=False
    )
    assert_same(embeds(rows), embeds(exact))


def test_a_plain_prompt_in_the_default_mode_equals_encode_prompt_to_1e6(sd1: Any) -> None:
    cond = _encode(sd1, [PROMPT, "house on a hill"], [NEGATIVE, ""])
    for image, (prompt, negative) in enumerate([(PROMPT, NEGATIVE), ("house on a hill", "")]):
        expected = reference(sd1, prompt, negative)
        torch.testing.assert_close(cond.prompt_embeds[image], expected[0][0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(
            cond.negative_prompt_embeds[image], expected[1][0], rtol=1e-6, atol=1e-6
        )


def test_loading_a_lora_or_an_embedding_never_serves_a_stale_empty_window(
    lora_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    from promptweights.diffusers import load_textual_inversion
    from promptweights.encoders import TextEncoder

    pipe = tiny_sd1()
    empty_window = slice(77, 2 * 77)  # the negative's padding: "dog" is one chunk, LONG three

    def padding(cond: Conditioning) -> Any:
        return cond.negative_prompt_embeds[0, empty_window]

    def fresh(pipe: Any) -> Any:
        return reference(pipe, "", "")[0][0]

    plain = encode(pipe, LONG, "dog")
    assert torch.equal(padding(plain), fresh(pipe))
    with_lora = encode(pipe, LONG + " <lora:ink:1>", "dog", lora_dir=lora_dir)
    assert torch.equal(padding(with_lora), fresh(pipe))  # the LoRA's own empty window
    assert not torch.equal(padding(with_lora), padding(plain))
    without = encode(pipe, LONG, "dog", lora_dir=lora_dir)  # no tag: the LoRA is switched off
    assert torch.equal(padding(without), padding(plain))
    path = tmp_path / "myemb.safetensors"  # "emb" is a word of the tiny vocabulary
    save_file({"emb_params": torch.randn(2, 32, generator=torch.Generator().manual_seed(4))}, path)
    load_textual_inversion(pipe, path)
    assert (
        TextEncoder.clip(pipe.text_encoder, pipe.tokenizer, rows_per_call=1).cached_empty() is None
    )
    assert torch.equal(padding(encode(pipe, LONG, "dog")), fresh(pipe))


def test_the_steps_are_in_the_kwargs_and_the_callback_checks_them(sd1: Any) -> None:
    cond = encode(sd1, "[cat:dog:1]", steps=3)
    kwargs = cond.pipeline_kwargs()
    assert kwargs["num_inference_steps"] == 3
    kwargs["num_inference_steps"] = 5  # [cat:dog:1] would switch at the wrong call
    with pytest.raises(InvalidArgumentError, match=r"steps=3 .* num_inference_steps=5"):
        sd1(**kwargs, height=16, width=16, output_type="pt")


def test_extra_networks_that_are_not_loaded_say_so(sd1: Any) -> None:
    with pytest.warns(PromptweightsWarning, match=r"<lora:ink:0.5>.*lora_dir="):
        encode(sd1, "a cat <lora:ink:0.5>")
    with pytest.raises(UnreproducibleError, match=r"<lora:ink:0\.5>"):
        encode(sd1, "a cat <lora:ink:0.5>", strict=True)
    with pytest.warns(PromptweightsWarning, match="<hypernet:x:1>"):
        encode(sd1, "a cat <hypernet:x:1>")


def test_a_strategy_of_the_wrong_shape_names_the_signature(sd1: Any) -> None:
    def two_arguments(z: Any, w: Any) -> Any:
        return z

    def returns_nothing(z: Any, w: Any, extras: Any) -> None:
        return None

    with pytest.raises(ArgumentTypeError, match=r"strategy\(z, w, extras\).*\(z, w\)"):
        encode(sd1, "(cat:1.2)", strategy=two_arguments)
    with pytest.raises(InvalidArgumentError, match=r"returned NoneType.*strategy\(z, w, extras\)"):
        encode(sd1, "(cat:1.2)", strategy=returns_nothing)


def test_the_documented_strategy_callable_runs(sd1: Any) -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "strategies.md").read_text("utf-8")
    example = doc.split("```python\n")[-1].split("```")[0]
    space: dict[str, Any] = {"pipe": sd1}
    exec(compile(example, "docs/strategies.md", "exec"), space)
    cond = space["cond"]
    plain = encode(sd1, "a red circle", strategy="a1111-no-norm")
    assert cond.prompt_embeds.shape == plain.prompt_embeds.shape
    assert not torch.equal(cond.prompt_embeds, plain.prompt_embeds)


def test_unknown_option(sd1: Any) -> None:
    with pytest.raises(ValueError, match="unknown options"):
        encode(sd1, "cat", stepz=3)


def test_every_option_is_a_typed_keyword_only_parameter() -> None:
    # The type checker sees every option; unknown keywords are typed NoReturn, so it sees those.
    parameters = inspect.signature(_encode).parameters.values()
    options = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    expected = {"prompt_2", "negative_prompt_2", "prompt_3", "negative_prompt_3", "normalization"}
    expected |= {"prompt_4", "negative_prompt_4"}
    expected |= {"comma_backtrack", "second_order", "hires_steps", "old_timelines", "loras"}
    expected |= {
        "max_sequence_length",
        "long_prompts",
        "dialect",
        "swap",
        "lora_dir",
        "batch_rows",
        "exact",
        "limits",
        "strategy",
        "steps",
        "strict",
        "image",  # the input image Qwen-Image Edit's and Z-Image Omni's encode_prompt read
    }
    assert expected | {"clip_skip"} == options
    hints = typing.get_type_hints(_encode)
    assert all(name in hints for name in options)
    rest = [p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    assert rest == ["unknown"]
    assert hints["unknown"] is typing.NoReturn


def test_and_parts_of_different_lengths_repeat_the_last_vector(sd1: Any) -> None:
    # a1111-behaviour.md §6.3: AND parts are stacked by repeating the shorter one's last vector;
    # cond and uncond are then padded with empty chunks ("Pad conds").
    cond = encode(sd1, LONG + " AND cat", "dog")
    with cond.attach(sd1):
        seen, handle = record_conditioning(sd1)
        try:
            sd1(**cond.pipeline_kwargs(), num_inference_steps=1, height=16, width=16)
        finally:
            handle.remove()
    (batch,) = seen
    uncond, long_part, cat_part = batch
    assert long_part.shape == (3 * 77, 32)
    assert torch.equal(long_part, encode(sd1, LONG).prompt_embeds[0])
    assert torch.equal(cat_part[:77], encode(sd1, " cat").prompt_embeds[0])
    assert torch.equal(cat_part[77:], cat_part[76:77].expand(2 * 77, -1))
    empty = encode(sd1, "").prompt_embeds[0]
    assert torch.equal(uncond[:77], encode(sd1, "dog").prompt_embeds[0])
    assert torch.equal(uncond[77:154], empty)
    assert torch.equal(uncond[154:], empty)


def test_sdxl_pooled_comes_from_chunk_0_of_the_stripped_prompt(sdxl: Any) -> None:
    plain = encode(sdxl, "a red cat on a mat")
    weighted = encode(sdxl, "a (red:1.5) [cat] on a mat")
    assert torch.equal(weighted.pooled_prompt_embeds, plain.pooled_prompt_embeds)
    long = encode(sdxl, "a red cat on a mat BREAK " + LONG)
    assert long.prompt_embeds.shape[1] > 77
    assert torch.equal(long.pooled_prompt_embeds, plain.pooled_prompt_embeds)


# --- properties -----------------------------------------------------------------------------------


def _no_lone_surrogates(text: str) -> bool:
    # Text decoded from UTF-8 never holds them; the tokenizer rejects them (reported to the owner).
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=st.one_of(prompts(), bracket_soup(max_size=40)).filter(_no_lone_surrogates),
    negative=st.one_of(st.just(""), prompts()).filter(_no_lone_surrogates),
    steps=st.integers(1, 8),
)
def test_any_prompt_gives_aligned_conditioning(
    sd1: Any, prompt: str, negative: str, steps: int
) -> None:
    import promptweights as pw

    try:
        with warnings.catch_warnings():  # generated prompts hold <lora:…> tags: not loaded here
            warnings.simplefilter("ignore", PromptweightsWarning)
            cond = encode(sd1, prompt, negative, steps=steps)
    except InvalidWeightError:  # `(x:1e400)`-sized weights overflow to inf: refused on purpose
        return
    length = cond.prompt_embeds.shape[1]
    assert length % 77 == 0
    assert cond.negative_prompt_embeds.shape == cond.prompt_embeds.shape
    text = pw.extra_networks(pw.strip_comments(prompt))[0]
    texts = [part for part, _ in pw.split_and(text)]
    texts.append(pw.extra_networks(pw.strip_comments(negative))[0])
    edits = any(len(pw.schedules(t, steps)) > 1 for t in texts)
    assert cond.edits == edits
    for k in range(steps):
        at = cond.at_call(k)
        assert at["prompt_embeds"].shape == at["negative_prompt_embeds"].shape == (1, length, 32)


# --- limits, weight bounds and clip skip -------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "limits", "message"),
    [
        ({"prompt": "a" * 11}, {"prompt_chars": 10}, "prompt has 11 characters"),
        ({"prompt": "a", "negative_prompt": "b" * 11}, {"prompt_chars": 10}, "negative_prompt"),
        ({"prompt": ["a", "b" * 11]}, {"prompt_chars": 10}, r"prompt\[1\] has 11"),
        ({"prompt": "a AND b AND c"}, {"and_parts": 2}, "3 AND parts"),
        ({"prompt": "[a|b]", "steps": 10}, {"variants": 9}, "10 entries"),
        ({"prompt": "a " * 100}, {"rows": 1}, "rows"),  # 2 chunks (the empty one is cached)
    ],
)
def test_encode_enforces_its_limits(
    tiny_pipe: object, kwargs: dict[str, object], limits: dict[str, int], message: str
) -> None:
    from promptweights.diffusers import encode

    with pytest.raises(LimitExceededError, match=message):
        encode(tiny_pipe, **kwargs, limits=pw.Limits(**limits))  # type: ignore[arg-type]
    encode(tiny_pipe, **kwargs)  # within the default limits


def test_encode_refuses_a_limits_of_the_wrong_type(tiny_pipe: object) -> None:
    from promptweights.diffusers import encode

    with pytest.raises(TypeError, match="Limits"):
        encode(tiny_pipe, "a", limits={"rows": 3})


@pytest.mark.parametrize(
    ("prompt", "at"),
    [
        ("a cat, (red:1" + "0" * 30 + ") hat", "red"),
        ("a cat // a comment\n[[(red:1" + "0" * 30 + ")]] hat", "red"),
        ("a cat AND a dog:1" + "0" * 400, ":1"),
        ("a cat AND a dog:1" + "0" * 30, ":1"),
    ],
)
def test_encode_refuses_weights_past_the_bound_with_the_position(
    sd1: object, prompt: str, at: str
) -> None:
    from promptweights.diffusers import encode

    with pytest.raises(pw.InvalidWeightError, match="MAX_WEIGHT") as raised:
        encode(sd1, prompt)
    assert raised.value.source is not None
    assert raised.value.pos is not None
    assert raised.value.source[raised.value.pos :].startswith(at)


def test_a_clip_skip_past_the_layers_is_an_error_not_an_index_error(sd1: object) -> None:
    from promptweights.diffusers import encode

    encode(sd1, "a cat", clip_skip=1)
    with pytest.raises(pw.InvalidArgumentError, match="past the 3 layers"):
        encode(sd1, "a cat", clip_skip=999)
