"""encode(dialect=...): compel's operators (and the other dialects) as conditioning, on a tiny
SD 1.x pipeline: expected values are encode()'s own A1111 path for the equivalent A1111 prompt and
compel's blend formula (weights over their sum) written out here."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _tiny_pipelines import tiny_sd1, tiny_sdxl

from promptweights.diffusers import encode
from promptweights.errors import InvalidArgumentError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def sd1() -> Any:
    return tiny_sd1()


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_compel_weights_encode_as_the_equivalent_a1111_prompt(sd1: Any) -> None:
    got = encode(sd1, "a (red cat)1.2 on a mat--", "blue dog-", dialect="compel")
    want = encode(sd1, "a (red cat:1.2) on a (mat:0.81)", "blue (dog:0.9)")
    _same(got.prompt_embeds, want.prompt_embeds)
    assert got.negative_prompt_embeds is not None
    assert want.negative_prompt_embeds is not None
    _same(got.negative_prompt_embeds, want.negative_prompt_embeds)


def test_compel_and_is_and(sd1: Any) -> None:
    got = encode(sd1, '("a cat", "a dog").and(1, 0.5)', dialect="compel")
    assert got.composable
    want = encode(sd1, "a cat AND a dog :0.5")
    for k in (0,):
        _same(got._timeline.positive_at(k, 1)[0], want._timeline.positive_at(k, 1)[0])
        assert got._timeline.positive_at(k, 1)[2].tolist() == [0.5]


@pytest.mark.parametrize("normalize", [True, False])
def test_compel_blend_mixes_the_members_conditionings(sd1: Any, normalize: bool) -> None:
    suffix = "" if normalize else ", no_normalize"
    got = encode(sd1, f'("a cat", "a (dog)1.3").blend(0.3, 0.9{suffix})', dialect="compel")
    cat = encode(sd1, "a cat").prompt_embeds
    dog = encode(sd1, "a (dog:1.3)").prompt_embeds
    total = 1.2 if normalize else 1.0
    _same(got.prompt_embeds, (0.3 * cat + 0.9 * dog) / total)
    _same(got.at_call(0)["prompt_embeds"], got.prompt_embeds)  # type: ignore[arg-type]


def test_compel_blend_in_a_batch_with_a_plain_prompt(sd1: Any) -> None:
    got = encode(sd1, ['("a cat", "a dog").blend(1, 1)', "a bird"], dialect="compel")
    cat, dog, bird = (encode(sd1, t).prompt_embeds[0] for t in ("a cat", "a dog", "a bird"))
    _same(got.prompt_embeds[0], (cat + dog) / 2)
    _same(got.prompt_embeds[1], bird)


def test_compel_swap_is_refused_unless_asked_for_as_an_edit(sd1: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=r"swap='edit'"):
        encode(sd1, "a cat.swap(dog)", dialect="compel", steps=10)
    got = encode(sd1, "a cat.swap(dog, t_start=0.5)", dialect="compel", swap="edit", steps=10)
    want = encode(sd1, "a [cat:dog:0.5]", steps=10)
    assert got.edits
    for k in (0, 9):
        _same(got.at_call(k)["prompt_embeds"], want.at_call(k)["prompt_embeds"])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="swap must be one of"):
        encode(sd1, "a", dialect="compel", swap="maybe")


def test_other_dialects_encode_through_a1111(sd1: Any) -> None:
    _same(
        encode(sd1, "{a} [cat]", dialect="novelai").prompt_embeds,
        encode(sd1, "(a:1.05) (cat:0.9523809523809523)").prompt_embeds,
    )
    _same(
        encode(sd1, "(a (cat:1.5))", dialect="comfy").prompt_embeds,
        encode(sd1, "(a:1.1) (cat:1.5)").prompt_embeds,
    )


@pytest.fixture(scope="module")
def sdxl() -> Any:
    return tiny_sdxl()


def test_compel_blend_mixes_pooled_vectors_on_sdxl(sdxl: Any) -> None:
    pipe = sdxl
    got = encode(pipe, '("a cat", "a dog").blend(1, 3)', dialect="compel")
    cat = encode(pipe, "a cat")
    dog = encode(pipe, "a dog")
    assert got.pooled_prompt_embeds is not None
    _same(got.pooled_prompt_embeds, (cat.pooled_prompt_embeds + 3 * dog.pooled_prompt_embeds) / 4)  # type: ignore[operator]


# --- .blend() of members with different chunk counts: padded as compel pads them ----------------

_LONG = " ".join(["a red cat on a mat"] * 16)  # 96 tokens: two 75-token chunks


def test_compel_blend_pads_the_shorter_member_with_the_empty_prompts_window(sd1: Any) -> None:
    """compel's rule written out: the shorter member's conditioning gets the empty prompt's
    window (``empty_z``: [BOS, EOS, PAD…] encoded) appended, then the weights over their sum."""
    got = encode(sd1, f'("a cat", "{_LONG}").blend(1, 3)', "ugly", dialect="compel")
    cat = encode(sd1, "a cat").prompt_embeds
    empty = encode(sd1, "").prompt_embeds
    long = encode(sd1, _LONG).prompt_embeds
    assert (cat.shape[1], empty.shape[1], long.shape[1]) == (77, 77, 154)
    _same(got.prompt_embeds, (torch.cat([cat, empty], dim=1) + 3 * long) / 4)
    assert got.negative_prompt_embeds is not None
    _same(got.negative_prompt_embeds, encode(sd1, _LONG, "ugly").negative_prompt_embeds)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "prompt",
    [
        f'("{_LONG}", "a cat").blend(1, 3)',
        f'("a cat", "{_LONG}", "a dog").blend(0.2, 0.5, 0.3, no_normalize)',
    ],
)
def test_compel_blend_of_long_and_short_members_equals_compel(sd1: Any, prompt: str) -> None:
    compel = pytest.importorskip("compel", reason="compel is not installed")
    reference = compel.Compel(
        tokenizer=sd1.tokenizer, text_encoder=sd1.text_encoder, truncate_long_prompts=False
    )
    with torch.no_grad():
        want = reference(prompt)
    got = encode(sd1, prompt, dialect="compel", strategy="compel")
    assert got.prompt_embeds.shape == want.shape == (1, 154, want.shape[2])
    _same(got.prompt_embeds, want)


def test_compel_with_lora_loads_the_lora_as_its_a1111_tag(tmp_path: Any) -> None:
    from test_diffusers import write_lora

    write_lora(tmp_path, "ink")
    pipe = tiny_sd1()  # its own: LoRAs stay loaded on the pipeline
    got = encode(pipe, "a cat withLora(ink, 0.5)", dialect="compel", lora_dir=tmp_path)
    layer = next(m for n, m in pipe.unet.named_modules() if n.endswith("attn1.to_q"))
    assert pipe.get_list_adapters() == {"unet": ["pw_ink"], "text_encoder": ["pw_ink"]}
    assert float(layer.scaling["pw_ink"]) == pytest.approx(0.5)
    want = encode(pipe, "a cat <lora:ink:0.5>", lora_dir=tmp_path)
    _same(got.prompt_embeds, want.prompt_embeds)


def test_compel_blend_pads_both_sdxl_towers_with_the_empty_prompts_window(sdxl: Any) -> None:
    got = encode(sdxl, f'("{_LONG}", "a cat").blend(1, 3)', dialect="compel")
    long = encode(sdxl, _LONG)
    cat = encode(sdxl, "a cat").prompt_embeds
    empty = encode(sdxl, "").prompt_embeds
    assert (cat.shape[1], long.prompt_embeds.shape[1]) == (77, 154)
    _same(got.prompt_embeds, (long.prompt_embeds + 3 * torch.cat([cat, empty], dim=1)) / 4)
    assert got.negative_prompt_embeds is not None
    assert got.negative_prompt_embeds.shape == got.prompt_embeds.shape
