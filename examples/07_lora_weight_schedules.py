"""LoRA weights that change while sampling
=========================================

loractl's ``<lora:name:weight@step,...>`` schedules, read as the A1111 extension reads them and
applied at run time: the UNet weight through ``pipe.set_adapters`` at each step, the text-encoder
weight by encoding the prompt once per distinct weight and switching at the steps where it
changes. A tiny random SD1.5-shaped pipeline and a random LoRA stand in for real ones, so this runs
offline in seconds; with a real model only the loading changes.
Run: ``python examples/07_lora_weight_schedules.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from diffusers import StableDiffusionPipeline as SD15
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

import promptweights.diffusers as pwd
from promptweights.cli import explain

PROMPT = "a cat on a mat <lora:ink:te=0@0,1@2:unet=0@0,1@0.5>"
STEPS = 6


def pipeline() -> Any:
    torch.manual_seed(0)
    letters = [chr(c) for c in range(97, 123)]  # words are spelled letter by letter
    tokens = ["!", "<|startoftext|>", "<|endoftext|>", *letters, *(t + "</w>" for t in letters)]
    tok = CLIPTokenizer({t: i for i, t in enumerate(tokens)}, [], pad_token="<|endoftext|>")
    config = CLIPTextConfig(
        vocab_size=len(tokens), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, bos_token_id=1, eos_token_id=2, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    small = {"block_out_channels": (4, 8), "norm_num_groups": 2}
    unet = UNet2DConditionModel(
        **small, layers_per_block=1, sample_size=8, cross_attention_dim=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )  # fmt: skip
    vae = AutoencoderKL(**small, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2)  # fmt: skip
    return SD15(
        unet=unet, vae=vae, tokenizer=tok, text_encoder=CLIPTextModel(config).eval(),
        scheduler=EulerDiscreteScheduler(steps_offset=1), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def write_random_lora(folder: Path, name: str) -> None:
    """A LoRA file as a trainer would save it, with random weights (rank 2, alpha 2)."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    donor = pipeline()
    layers = {"r": 2, "lora_alpha": 2, "init_lora_weights": False}
    inject_adapter_in_model(LoraConfig(**layers, target_modules=["to_q", "to_v"]), donor.unet)
    te = LoraConfig(**layers, target_modules=["q_proj", "v_proj"])
    inject_adapter_in_model(te, donor.text_encoder)
    SD15.save_lora_weights(
        folder,
        unet_lora_layers=get_peft_model_state_dict(donor.unet),
        text_encoder_lora_layers=get_peft_model_state_dict(donor.text_encoder),
        weight_name=f"{name}.safetensors",
    )


def main() -> None:
    # 1. The language side: what each sampler call gets, no model needed.
    table = explain(PROMPT, steps=STEPS).split("\n\n")
    print(next(block for block in table if block.startswith("LoRA weights per sampler call")))

    # 2. At run time: record the UNet adapter scale and the conditioning at every call.
    pipe = pipeline()
    with tempfile.TemporaryDirectory() as folder:
        write_random_lora(Path(folder), "ink")
        cond = pwd.encode(pipe, PROMPT, "blurry", steps=STEPS, lora_dir=folder)
    layer = next(m for n, m in pipe.unet.named_modules() if n.endswith("attn2.to_q"))
    seen: list[tuple[float, torch.Tensor]] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        states = kwargs["encoder_hidden_states"]
        seen.append((float(layer.scaling["pw_ink"]), states[states.shape[0] // 2 :].clone()))

    handle = pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        pipe(**cond.pipeline_kwargs(), height=16, width=16, output_type="pt")
    finally:
        handle.remove()
    print("\ncall  unet scale  conditioning")
    for call, (scale, states) in enumerate(seen):
        changed = call > 0 and not torch.equal(states, seen[call - 1][1])
        print(f"{call:>4}  {scale:>10g}  {'re-encoded (te weight changed)' if changed else ''}")


if __name__ == "__main__":
    main()
