"""Tiny image-reading Qwen-Image pipelines (Edit, Edit Inpaint, Edit Plus), built in code.

They share ``tests/_tiny_llm.py``'s tokenizer and Qwen2.5-VL (its vision tower included) and add
a ``Qwen2VLProcessor`` built offline on transformers' PIL image processor (torchvision is not
installed: no video processor, whose class check is skipped for ``None``). The processor
resizes every image to 56×56 pixels: four vision tokens. The pipelines resize their input to
about 1024² pixels before the VAE reads it: the VAE here downsamples 32 times (no residual
blocks, 4 channels: a fraction of a second at that size), so that the latents stay 32×32.
Each pipeline is built once per test session.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from _tiny_llm import _flow_scheduler, tiny_qwen25vl_model, tiny_qwen_tokenizer


@cache
def tiny_vl_processor() -> Any:
    """A Qwen2-VL processor over the tiny tokenizer: 56×56-pixel images, four vision tokens."""
    from transformers import Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    class OfflineProcessor(Qwen2VLProcessor):  # type: ignore[misc]
        """No video processor: its class needs torchvision, which is not installed."""

        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument is None and argument_name == "video_processor":
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    images = Qwen2VLImageProcessorPil(
        min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    return OfflineProcessor(
        image_processor=images, tokenizer=tiny_qwen_tokenizer(), video_processor=None
    )


def _components() -> dict[str, Any]:
    import torch
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel

    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=32,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(
        base_dim=4,
        z_dim=4,
        dim_mult=[1, 1, 1, 1, 1, 1],
        num_res_blocks=0,
        temperal_downsample=[False] * 5,
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    return {
        "scheduler": _flow_scheduler(),
        "vae": vae,
        "text_encoder": tiny_qwen25vl_model(),
        "tokenizer": tiny_qwen_tokenizer(),
        "processor": tiny_vl_processor(),
        "transformer": transformer,
    }


@cache
def tiny_qwen_image_edit(variant: str = "") -> Any:
    """Qwen-Image Edit (``variant``: ``""``, ``"Plus"``, ``"Inpaint"``). Its template's dropped
    prefix (64 tokens with the real tokenizer: the system message and ``<|im_start|>user\\n``) is
    set to the same text's length in the tiny tokenizer."""
    import diffusers

    pipe = getattr(diffusers, f"QwenImageEdit{variant}Pipeline")(**_components())
    prefix = pipe.prompt_template_encode.split("<|im_start|>user\n")[0] + "<|im_start|>user\n"
    pipe.prompt_template_encode_start_idx = len(tiny_qwen_tokenizer()(prefix)["input_ids"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_image(width: int = 64, height: int = 48, seed: int = 0) -> Any:
    """A small random RGB PIL image."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@cache
def tiny_qwen_image_layered() -> Any:
    """Qwen-Image Layered: an RGBA VAE (8 latent channels, so that a 4-channel image is not
    taken for latents), a transformer with the layered 3-D rope, and a copy of the Qwen2.5-VL
    whose generation stops at its first token (the pipeline captions its image whenever no
    prompt is given, even beside ``prompt_embeds``: one token keeps that cheap)."""
    import copy

    import diffusers
    import torch

    parts = _components()
    torch.manual_seed(0)
    parts["vae"] = diffusers.AutoencoderKLQwenImage(
        base_dim=4,
        z_dim=8,
        dim_mult=[1, 1, 1, 1, 1, 1],
        num_res_blocks=0,
        temperal_downsample=[False] * 5,
        input_channels=4,
        latents_mean=[0.0] * 8,
        latents_std=[1.0] * 8,
    )
    torch.manual_seed(0)
    parts["transformer"] = diffusers.QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=32,
        out_channels=8,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=32,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
        use_layer3d_rope=True,
        use_additional_t_cond=True,
    )
    text_encoder = copy.deepcopy(parts["text_encoder"])
    vocabulary = int(text_encoder.config.text_config.vocab_size)
    text_encoder.generation_config.eos_token_id = list(range(vocabulary))
    parts["text_encoder"] = text_encoder
    pipe = diffusers.QwenImageLayeredPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@cache
def tiny_z_image_omni() -> Any:
    """Z-Image Omni: ``_tiny_llm``'s Qwen3 and tokenizer, a tiny SigLIP 2 (16 wide, 16-pixel
    patches, transformers' PIL image processor) and a transformer taking its features; the VAE
    in bfloat16, as the pipeline casts the condition images to bfloat16 for it."""
    import diffusers
    import torch
    from _tiny_llm import tiny_qwen3_model
    from transformers import Siglip2VisionConfig, Siglip2VisionModel
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        Siglip2ImageProcessorPil,
    )

    torch.manual_seed(0)
    transformer = diffusers.ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=32,
        siglip_feat_dim=16,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=32,
        sample_size=32,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    ).to(torch.bfloat16)
    torch.manual_seed(0)
    siglip = Siglip2VisionModel(
        Siglip2VisionConfig(
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_patches=16,
            patch_size=16,
        )
    ).eval()
    pipe = diffusers.ZImageOmniPipeline(
        scheduler=_flow_scheduler(),
        vae=vae,
        text_encoder=tiny_qwen3_model(),
        tokenizer=tiny_qwen_tokenizer(),
        transformer=transformer,
        siglip=siglip,
        siglip_processor=Siglip2ImageProcessorPil(max_num_patches=16, patch_size=16),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
