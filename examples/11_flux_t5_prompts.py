"""Flux.1 and the other T5 families
==================================

Flux reads ``prompt`` with CLIP-L (only its pooled vector) and ``prompt_2`` with T5; weights may
differ per encoder. T5 text past ``max_sequence_length`` is truncated with a warning that counts
the tokens dropped, or encoded in more windows with ``long_prompts="chunk"`` (``BREAK`` starts
one). A tiny random Flux-shaped pipeline stands in for a real one so that this runs offline in
seconds; SD3 (``prompt_3`` is its T5), Chroma, PixArt and Wan work the same way.
Run: ``python examples/11_flux_t5_prompts.py``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers import FluxTransformer2DModel as Transformer
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

import promptweights.diffusers as pwd

WORDS = ["a", "red", "cat", "on", "mat", "night", "sky", "photo", "of"]


def tiny_flux() -> Any:
    torch.manual_seed(0)
    clip_tokens = ["!", "<|startoftext|>", "<|endoftext|>", *(w + "</w>" for w in WORDS)]
    clip_tok = CLIPTokenizer({t: i for i, t in enumerate(clip_tokens)}, [], pad_token="!")
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tokens),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            bos_token_id=1,
            eos_token_id=2,
        )
    ).eval()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0), (",", -2.0)]
    t5_tok = T5Tokenizer(vocab=vocab + [("▁" + w, -1.0) for w in WORDS], extra_ids=0)
    t5 = T5EncoderModel(
        T5Config(vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
    ).eval()
    transformer = Transformer(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    vae = AutoencoderKL(
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    return FluxPipeline(
        FlowMatchEulerDiscreteScheduler(), vae, clip, clip_tok, t5, t5_tok, transformer
    )


def main() -> None:
    pipe = tiny_flux()
    # CLIP-L reads the plain prompt; T5 reads prompt_2 with its own weights.
    cond = pwd.encode(
        pipe, "a photo of a cat", prompt_2="a (red:1.3) cat on a [mat]", max_sequence_length=16
    )
    print(
        "T5 sequence:", tuple(cond.prompt_embeds.shape), "pooled:", cond.pooled_prompt_embeds.shape
    )
    long = "a red cat on a mat, " * 4 + "BREAK night sky"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pwd.encode(pipe, long, max_sequence_length=16)
    for warning in caught:
        print("warning:", warning.message)
    chunked = pwd.encode(pipe, long, max_sequence_length=16, long_prompts="chunk")
    print("chunked T5 windows:", chunked.prompt_embeds.shape[1] // 16)
    latents = pipe(
        **chunked.pipeline_kwargs(),
        num_inference_steps=2,
        height=8,
        width=8,
        max_sequence_length=16,
        output_type="latent",
    ).images
    print("two steps sampled:", tuple(latents.shape))


if __name__ == "__main__":
    main()
