"""Tiny tokenizers and text encoders built in code (no downloads), shared by the model tests.

The tiny CLIP tokenizer knows single letters (so ``a`` and ``b`` are one token each, as in the
reference tables of ``a1111-behaviour.md`` §7), a handful of whole words, ``,``, ``,,`` and ``+``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

SHARED_TOKENIZER = Path(__file__).resolve().parents[1].parent / "shared" / "clip-tokenizer"

#: Marks a test that needs the real CLIP vocabulary beside the repository.
needs_real_tokenizer = pytest.mark.skipif(
    not (SHARED_TOKENIZER / "vocab.json").is_file(),
    reason="../shared/clip-tokenizer is absent (a user's clone)",
)

WORDS = ("cat", "dog", "break", "on", "mat", "red", "blue", "sky", "emb", "tok", "house", "hill")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    tokens = ["!", "<|startoftext|>", "<|endoftext|>"]
    tokens += list(LETTERS) + [c + "</w>" for c in LETTERS]
    tokens += [",", ",</w>", ",,</w>", "+</w>", ".</w>", "(</w>", ")</w>", ":</w>", "1</w>"]
    merges = [(",", ",</w>")]
    for word in WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        left = parts[0]
        for right in parts[1:]:
            merges.append((left, right))
            left = left + right
            tokens.append(left)
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def tiny_clip_tokenizer(pad: str = "<|endoftext|>") -> Any:
    """A CLIP tokenizer over a tiny vocabulary; ``pad="!"`` gives OpenCLIP-G's padding."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad, model_max_length=77)


def real_clip_tokenizer(pad: str = "<|endoftext|>") -> Any:
    """The real CLIP BPE tokenizer from ``../shared/clip-tokenizer`` (callers skip when absent)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(
        str(SHARED_TOKENIZER / "vocab.json"),
        str(SHARED_TOKENIZER / "merges.txt"),
        model_max_length=77,
        pad_token=pad,
    )


def tiny_t5_tokenizer() -> Any:
    """A T5 (Unigram) tokenizer over a tiny vocabulary: pad 0, EOS 1, no BOS."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [("▁" + c, -1.0) for c in LETTERS] + [(c, -2.0) for c in LETTERS + ",+!"]
    vocab += [("▁" + w, -0.5) for w in WORDS]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=16)


def tiny_clip_model(
    tokenizer: Any,
    *,
    projection: bool = False,
    layers: int = 3,
    width: int = 32,
    positions: int = 77,
) -> Any:
    """A CLIP text tower with random weights (``torch.manual_seed(0)``) sized for ``tokenizer``
    (``positions``: HiDream's long CLIP-L/G take 128)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=37,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=positions,
        projection_dim=16,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    model = cls(config).eval()
    # Real CLIP towers have a learned final-norm bias, so chunk means are far from 0; a fresh
    # LayerNorm (bias 0) would make A1111's mean restore divide ~0 by ~0.
    tower = getattr(model, "text_model", model)
    with torch.no_grad():
        tower.final_layer_norm.bias.normal_(0.3, 0.5)
    return model


def tiny_t5_model(tokenizer: Any) -> Any:
    """A T5 encoder with random weights (``torch.manual_seed(0)``)."""
    from transformers import T5Config, T5EncoderModel

    return _tiny_t5(tokenizer, T5Config, T5EncoderModel)


def tiny_umt5_model(tokenizer: Any) -> Any:
    """A umT5 encoder (Wan's; one relative-position bias per layer) with random weights."""
    from transformers import UMT5Config, UMT5EncoderModel

    return _tiny_t5(tokenizer, UMT5Config, UMT5EncoderModel)


def _tiny_t5(tokenizer: Any, config_class: Any, model_class: Any) -> Any:
    """A two-layer encoder of a T5 kind, seeded with ``torch.manual_seed(0)``."""
    import torch

    torch.manual_seed(0)
    config = config_class(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=0,
    )
    return model_class(config).eval()


def tiny_sd_pipeline(tokenizer: Any, text_encoder: Any) -> Any:
    """A StableDiffusionPipeline from tiny random components (diffusers' dummy-component sizes)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_encoder.config.hidden_size,
        norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
