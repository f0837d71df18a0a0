"""Use it in your pipeline
=======================

One call turns an A1111 prompt into the keyword arguments of a diffusers pipeline: weights, long
prompts with a short negative, prompt editing (swapped in while sampling) and AND (combined in the
denoiser inside ``with cond.attach(pipe):``). Tiny random SD1.5- and SDXL-shaped pipelines stand in
for real ones so that this runs offline in seconds; with a real model only the loading changes.
Run: ``python examples/03_use_in_your_pipeline.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from diffusers import StableDiffusionPipeline as SD15
from diffusers import StableDiffusionXLPipeline as SDXL
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

import promptweights.diffusers as pwd

PROMPT = "a (red:1.3) [cat:dog:0.5] on a mat, " * 8 + "BREAK night sky AND sunset:0.5"


def text_tower(pad: str, projection: bool = False) -> tuple[CLIPTokenizer, Any]:
    letters = [chr(c) for c in range(97, 123)] + [",", "(", ")", ":", "."]  # words are spelled
    tokens = ["!", "<|startoftext|>", "<|endoftext|>", *letters, *(t + "</w>" for t in letters)]
    tok = CLIPTokenizer({t: i for i, t in enumerate(tokens)}, [], pad_token=pad)
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": tok.pad_token_id}
    size = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2}
    config = CLIPTextConfig(
        vocab_size=len(tokens), **size, num_attention_heads=4, projection_dim=16, **ids
    )
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()
    # A real CLIP's final norm has a learned bias, so a chunk's mean is far from 0; a fresh one
    # (bias 0) leaves means of ~1e-8 and A1111's mean restore would divide rounding by rounding.
    with torch.no_grad():
        getattr(model, "text_model", model).final_layer_norm.bias.normal_(0.3, 0.5)
    return tok, model


def components(xl: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    small = {"block_out_channels": (4, 8), "norm_num_groups": 2}
    extra = {"addition_embed_type": "text_time", "addition_time_embed_dim": 8}
    unet = UNet2DConditionModel(
        **small, **(extra | {"projection_class_embeddings_input_dim": 64} if xl else {}),
        layers_per_block=1, sample_size=8, cross_attention_dim=64 if xl else 32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )  # fmt: skip
    vae = AutoencoderKL(**small, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2)  # fmt: skip
    tok, encoder = text_tower("<|endoftext|>")
    parts = {"unet": unet, "vae": vae, "tokenizer": tok, "text_encoder": encoder}
    if xl:  # OpenCLIP-G: pads with "!", gives the pooled vector
        parts["tokenizer_2"], parts["text_encoder_2"] = text_tower("!", projection=True)
    else:
        parts |= {"safety_checker": None, "feature_extractor": None}
    return parts | {"scheduler": EulerDiscreteScheduler(steps_offset=1)}


def main(steps: int = 4) -> None:
    sd15 = SD15(**components(xl=False), requires_safety_checker=False)
    for name, pipe in (("SD1.5", sd15), ("SDXL", SDXL(**components(xl=True)))):
        cond = pwd.encode(pipe, PROMPT, "blurry", steps=steps)  # a negative of any length
        shapes = f"{tuple(cond.prompt_embeds.shape)} / {tuple(cond.negative_prompt_embeds.shape)}"
        print(
            f"{name}: prompt / negative embeds {shapes}; edits {cond.edits}, AND {cond.composable}"
        )
        with cond.attach(pipe):  # hooks the denoiser for AND; removed again on exit
            kwargs = cond.pipeline_kwargs()  # embeddings, steps, callback_on_step_end for edits
            out = pipe(**kwargs, height=16, width=16, output_type="pt")
        print(f"  image {tuple(out.images.shape)}")


if __name__ == "__main__":
    main()
