"""Shared prefixes: rows started from another row's cached keys and values equal the full forward.

CLIP's text tower is causal, so a row equal to its parent up to position ``p`` (ids and attention
mask) has the parent's hidden states there; ``TextEncoder.encode_from_prefixes`` runs only the rest.
The reference here is the plain forward of every row (``TextEncoder.encode``) on tiny towers built
from configs: SD 1.x (clip skip 1 and 2, pooled), SDXL's CLIP-L and OpenCLIP-G (projection, ``!``
padding), sliced passes, and a tower that is not CLIP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from _tiny_models import (
    needs_real_tokenizer,
    real_clip_tokenizer,
    tiny_clip_model,
    tiny_clip_tokenizer,
    tiny_t5_model,
    tiny_t5_tokenizer,
)

from promptweights.builder import build
from promptweights.encoders import TextEncoder

TEXTS = ["a cat on a mat, red sky", "blue dog house on a hill", "red"]


# Tiny towers run fastest, and steadiest on a shared machine, on one thread.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def g_tok() -> Any:
    return tiny_clip_tokenizer(pad="!")


@pytest.fixture(scope="module")
def g_model(g_tok: Any) -> Any:
    return tiny_clip_model(g_tok, projection=True, layers=4)


def rows(tok: Any) -> tuple[torch.Tensor, torch.Tensor, list[int | None]]:
    """Three chunk rows and six derived ones: masked spans, substituted tokens, both."""
    base = tok(TEXTS, padding="max_length", max_length=77)["input_ids"]
    ids = torch.tensor([base[0], base[1], base[2]] + [base[0]] * 3 + [base[1]] * 2 + [base[2]])
    mask = torch.ones_like(ids)
    mask[3, 3:5] = 0  # a masked span (compel)
    mask[4, 7] = 0  # a later one
    ids[5, 2] = ids[5, 6] = tok.convert_tokens_to_ids("+</w>")  # substituted words (ADV)
    mask[6, 1] = 0  # right after BOS
    ids[7, 9] = tok.convert_tokens_to_ids("+</w>")
    mask[7, 4] = 0
    mask[8, 1] = 0  # the one-word text
    parents: list[int | None] = [None, None, None, 0, 0, 0, 1, 1, 2]
    return ids, mask, parents


ON = {"share_prefixes": True}
ENCODERS: dict[str, Callable[[Any, Any, Any, Any], TextEncoder]] = {
    "sd": lambda m, t, gm, gt: TextEncoder.clip(m, t, **ON),
    "sd-clip-skip-2": lambda m, t, gm, gt: TextEncoder.clip(m, t, clip_skip=2, **ON),
    "sd-pooled": lambda m, t, gm, gt: TextEncoder.clip(m, t, pooled=True, **ON),
    "sd-skip-all": lambda m, t, gm, gt: TextEncoder(m, t, layer=-4, final_layer_norm=False, **ON),
    "sd-rows-per-call-2": lambda m, t, gm, gt: TextEncoder.clip(m, t, rows_per_call=2, **ON),
    "sdxl-clip-l": lambda m, t, gm, gt: TextEncoder.sdxl(m, t, **ON),
    "sdxl-clip-g": lambda m, t, gm, gt: TextEncoder.sdxl(gm, gt, pooled=True, **ON),
    "sdxl-clip-g-skip-2-per-row": lambda m, t, gm, gt: TextEncoder.sdxl(
        gm, gt, clip_skip=2, pooled=True, rows_per_call=1, **ON
    ),
}


@pytest.mark.parametrize("name", list(ENCODERS))
def test_prefixed_rows_equal_the_full_forward(
    name: str, model: Any, tok: Any, g_model: Any, g_tok: Any
) -> None:
    encoder = ENCODERS[name](model, tok, g_model, g_tok)
    ids, mask, parents = rows(g_tok if encoder.model is g_model else tok)
    prefixes = encoder.shared_prefixes(ids, mask, parents)
    assert [p is not None for p in prefixes] == [i >= 3 for i in range(len(parents))]
    z, pooled = encoder.encode_from_prefixes(ids, mask, prefixes)
    expected, expected_pooled = encoder.encode(ids, mask)
    assert z.dtype == expected.dtype
    torch.testing.assert_close(z, expected, rtol=0, atol=1e-5)
    # The chunk rows themselves ran through encode, bit for bit.
    assert torch.equal(z[:3], encoder.encode(ids[:3], mask[:3])[0])
    if encoder.pooled:
        assert pooled is not None
        assert expected_pooled is not None
        torch.testing.assert_close(pooled, expected_pooled, rtol=0, atol=1e-5)
    else:
        assert pooled is None
    tower = getattr(encoder.model, "text_model", encoder.model)
    assert all(not layer.self_attn.k_proj._forward_hooks for layer in tower.encoder.layers)


def test_shared_prefixes_stop_at_the_first_difference(model: Any, tok: Any) -> None:
    ids, mask, parents = rows(tok)
    encoder = TextEncoder.clip(model, tok, share_prefixes=True)
    prefixes = encoder.shared_prefixes(ids, mask, parents)
    assert prefixes == [None, None, None, (0, 3), (0, 7), (0, 2), (1, 1), (1, 4), (2, 1)]
    # Without a mask, only the ids count; a row equal to its parent keeps its last position.
    unmasked = encoder.shared_prefixes(ids, None, parents)
    assert unmasked[3] == (0, 76)
    assert unmasked[5] == (0, 2)
    # A parent must run in full itself, and a row cannot be its own parent.
    assert encoder.shared_prefixes(ids[:3], None, [None, 0, 1])[2] is None
    assert encoder.shared_prefixes(ids[:1], None, [0]) == [None]


def test_by_default_prefixes_are_shared_where_they_save_half_a_window(model: Any, tok: Any) -> None:
    ids, mask, parents = rows(tok)
    # These rows share 3 + 7 + 2 + 1 + 4 + 1 = 18 positions: not worth a second pass.
    assert TextEncoder.clip(model, tok).shared_prefixes(ids, mask, parents) == [None] * 9
    assert (
        TextEncoder.clip(model, tok, share_prefixes=False).shared_prefixes(ids, None, parents)
        == [None] * 9
    )
    # 76 + 2 positions (a row with no mask shares everything but its last position with its
    # parent) are.
    prefixes = TextEncoder.clip(model, tok).shared_prefixes(ids[:6], None, parents[:6])
    assert prefixes == [None, None, None, (0, 76), (0, 76), (0, 2)]


def test_pooled_position_is_always_computed(model: Any, tok: Any) -> None:
    ids, _, _ = rows(tok)
    parents: list[int | None] = [None, 0]
    pair = ids[[0, 0]]
    assert TextEncoder.clip(model, tok, **ON).shared_prefixes(pair, None, parents)[1] == (0, 76)
    pooled = TextEncoder.clip(model, tok, pooled=True, **ON)
    prefixes = pooled.shared_prefixes(pair, None, parents)
    # The tiny config keeps eos_token_id 2, so CLIPTextModel pools at the highest id (the legacy
    # rule); with a newer config, at the first end token.
    assert prefixes[1] == (0, int(pair[1].argmax()))
    assert 0 < int(pair[1].argmax()) < 76
    z, vectors = pooled.encode_from_prefixes(pair, None, prefixes)
    assert vectors is not None
    torch.testing.assert_close(vectors[1], vectors[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(z[1], z[0], rtol=0, atol=1e-5)


@needs_real_tokenizer
@pytest.mark.parametrize("projection", [False, True])
def test_real_tokenizer_pools_at_the_first_end_token(projection: bool) -> None:
    tok = real_clip_tokenizer(pad="!" if projection else "<|endoftext|>")
    model = tiny_clip_model(tok, projection=projection, layers=2)
    encoder = TextEncoder.clip(model, tok, pooled=True, **ON)
    text = "a photo of a red fox in the snow, trees"
    (base,) = tok([text], padding="max_length", max_length=77)["input_ids"]
    ids = torch.tensor([base] * 4)
    mask = torch.ones_like(ids)
    mask[1, 5:7] = 0
    mask[2, 9] = 0
    end = base.index(tok.eos_token_id)
    prefixes = encoder.shared_prefixes(ids, mask, [None, 0, 0, 0])
    assert prefixes == [None, (0, 5), (0, 9), (0, end)]
    z, pooled = encoder.encode_from_prefixes(ids, mask, prefixes)
    expected, expected_pooled = encoder.encode(ids, mask)
    torch.testing.assert_close(z, expected, rtol=0, atol=1e-5)
    assert pooled is not None
    assert expected_pooled is not None
    torch.testing.assert_close(pooled, expected_pooled, rtol=0, atol=1e-5)


def test_wrong_prefixes_are_refused(model: Any, tok: Any) -> None:
    ids, mask, _ = rows(tok)
    encoder = TextEncoder.clip(model, tok)  # a prefix is used when given, whatever the policy
    with pytest.raises(ValueError, match="does not share"):
        encoder.encode_from_prefixes(ids[:2], None, [None, (0, 5)])
    with pytest.raises(ValueError, match="does not share"):
        encoder.encode_from_prefixes(ids[[0, 3]], mask[[0, 3]], [None, (0, 5)])
    with pytest.raises(ValueError, match="parent without one"):
        encoder.encode_from_prefixes(ids[[0, 3]], mask[[0, 3]], [(1, 2), (0, 2)])
    with pytest.raises(ValueError, match="parent without one"):
        encoder.encode_from_prefixes(ids[[0, 3]], mask[[0, 3]], [None, (0, 77)])


def test_t5_runs_every_row_in_full() -> None:
    tok = tiny_t5_tokenizer()
    encoder = TextEncoder.t5(tiny_t5_model(tok), tok)
    ids = torch.tensor(tok(["a cat", "a cat"], padding="max_length", max_length=16)["input_ids"])
    mask = torch.ones_like(ids)
    mask[1, 1] = 0
    # T5 is bidirectional: nothing is shared, and a prefix is refused.
    assert encoder.shared_prefixes(ids, mask, [None, 0]) == [None, None]
    with pytest.raises(ValueError, match="CLIP"):
        encoder.encode_from_prefixes(ids, mask, [None, (0, 1)])
    result = build(encoder, [["a (cat:0.5) dog"]], strategy="compel")
    assert (result.rows, result.encoder_calls) == (3, 1)  # chunk, masked row, empty prompt


class OneRowPerCall(TextEncoder):
    """Like the diffusers adapter's encoder: one forward pass per row."""

    def encode(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        parts = [
            TextEncoder.encode(
                self, ids[i : i + 1], None if attention_mask is None else attention_mask[i : i + 1]
            )
            for i in range(ids.shape[0])
        ]
        z = torch.cat([p[0] for p in parts])
        pooled = [p[1] for p in parts if p[1] is not None]
        return z, torch.cat(pooled) if pooled else None


class NotTheTower(TextEncoder):
    """An encode that does not run the tower's modules: the hooks see nothing."""

    def encode(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return ids.float().unsqueeze(-1).expand(*ids.shape, 32).clone(), None


def test_an_overridden_encode_still_gets_prefixes_or_full_rows(model: Any, tok: Any) -> None:
    ids, mask, parents = rows(tok)
    plain = TextEncoder.clip(model, tok)
    expected, _ = plain.encode(ids, mask)
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        per_row = OneRowPerCall(model, tok, share_prefixes=True)
        z, _ = per_row.encode_from_prefixes(ids, mask, per_row.shared_prefixes(ids, mask, parents))
    finally:
        handle.remove()
    assert len(calls) == 3  # the chunk rows, one call each; the others from their prefixes
    torch.testing.assert_close(z, expected, rtol=0, atol=1e-5)
    # Nothing captured: every row comes from encode.
    other = NotTheTower(model, tok, share_prefixes=True)
    z, _ = other.encode_from_prefixes(ids, mask, other.shared_prefixes(ids, mask, parents))
    assert torch.equal(z, other.encode(ids, mask)[0])


@pytest.mark.parametrize("name", ["compel", "comfy++", "down-weight"])
def test_strategies_with_extra_rows_equal_full_rows(name: str, model: Any, tok: Any) -> None:
    long = "a cat on a mat, " * 14
    texts = [
        [f"a (red cat:1.3) on [a mat], (dog:0) (sky:0.5) {long} (house:0.4) hill", "a cat"],
        ["(blue:0.7) sky BREAK (hill:0.2)"],
    ]
    # The down-weighted house sits late in a long chunk: the default shares prefixes here.
    TextEncoder.clip(model, tok).clear_cache()
    result = build(TextEncoder.clip(model, tok), texts, strategy=name)
    assert result.encoder_calls == 2
    TextEncoder.clip(model, tok).clear_cache()
    full = build(TextEncoder.clip(model, tok, share_prefixes=False), texts, strategy=name)
    assert full.encoder_calls == 1
    assert full.rows == result.rows
    for a, b in zip(result.groups, full.groups, strict=True):
        torch.testing.assert_close(a.embeds, b.embeds, rtol=0, atol=1e-5)


def test_half_precision_keeps_the_dtype(tok: Any) -> None:
    model = tiny_clip_model(tok).to(torch.bfloat16)
    encoder = TextEncoder.clip(model, tok, **ON)
    ids, mask, parents = rows(tok)
    z, _ = encoder.encode_from_prefixes(ids, mask, encoder.shared_prefixes(ids, mask, parents))
    expected, _ = encoder.encode(ids, mask)
    assert z.dtype == torch.bfloat16
    torch.testing.assert_close(z.float(), expected.float(), rtol=0, atol=0.1)
