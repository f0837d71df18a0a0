"""Decoder-LLM text encoders: Z-Image (and Qwen-Image, Flux.2)
=============================================================

Z-Image conditions on a Qwen3's hidden states, the prompt inside its chat template. ``encode``
writes the template as the pipeline does and weights only the prompt's tokens: with ``span-lerp``
(the default on LLM encoders) each weighted span moves every state after it towards (``w < 1``)
or away from (``w > 1``) the encoding with the span hidden from the attention mask. A tiny random
pipeline (a word-level tokenizer built in code) stands in for a real one so that this runs offline
in seconds; Qwen-Image, Flux.2 and Flux.2 Klein work the same way.
Run: ``python examples/14_llm_prompts.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline
from diffusers import ZImageTransformer2DModel as Transformer
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

import promptweights.diffusers as pwd

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|unk|>"]
WORDS = ["user", "assistant", "a", "red", "cat", "on", "mat", "night", "sky", "photo", "of", ","]
CHAT = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tiny_z_image() -> Any:
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|im_end|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS[1:3]})
    tokenizer.chat_template = CHAT
    torch.manual_seed(0)
    text_encoder = Qwen3Model(
        Qwen3Config(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            pad_token_id=0,
        )
    ).eval()
    transformer = Transformer(
        in_channels=16,
        dim=32,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=32,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )
    vae = AutoencoderKL(block_out_channels=(32,), latent_channels=16, norm_num_groups=32)
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> None:
    pipe = tiny_z_image()
    print("family:", pwd.family_of(pipe))

    # exact=True: bit for bit the pipeline's own encode_prompt (one tensor per image on Z-Image).
    plain = pwd.encode(pipe, "a photo of a red cat on a mat", exact=True)
    ours = plain.pipeline_kwargs()["prompt_embeds"][0]
    theirs = pipe.encode_prompt("a photo of a red cat on a mat", do_classifier_free_guidance=False)
    print("equal to encode_prompt:", torch.equal(ours, theirs[0][0]), tuple(ours.shape))

    # Weights act from the span on; the template before the prompt is never touched.
    for weight in (0.0, 0.5, 1.5):
        cond = pwd.encode(pipe, f"a photo of a (red:{weight}) cat on a mat", exact=True)
        moved = cond.pipeline_kwargs()["prompt_embeds"][0] - ours
        first = int(moved.abs().sum(dim=-1).nonzero()[0])
        print(f"red:{weight}: states move from position {first} on, by {moved.norm():.3f}")

    cond = pwd.encode(pipe, "a (red:1.3) cat, night sky", "photo", steps=2)
    latents = pipe(**cond.pipeline_kwargs(), height=32, width=32, output_type="latent").images
    print("sampled:", tuple(latents.shape))


if __name__ == "__main__":
    main()
