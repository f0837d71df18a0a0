"""A tiny SANA-WM pipeline (camera-controlled video from a first frame), built offline: the tiny
Gemma 2 and tokenizer of ``tests/_tiny_llm2.py``, a one-layer ``SanaWMTransformer3DModel`` 32
wide and a two-level LTX-2 video VAE (8 times smaller spatially, 4 in time). Built once per test
session; a 64×64 first frame and 9 frames (3 latent frames) sample two steps in about a second.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from _tiny_llm2 import _gemma2, tiny_gemma_tokenizer


@cache
def tiny_sana_wm() -> Any:
    """SANA-WM with random weights; its caption features are the tiny Gemma 2's 8 channels."""
    import diffusers
    import torch

    tokenizer = tiny_gemma_tokenizer()
    text_encoder = _gemma2(tokenizer)
    torch.manual_seed(0)
    transformer = diffusers.SanaWMTransformer3DModel(
        in_channels=8,
        num_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        linear_head_dim=16,
        softmax_every_n=1,
        chunk_plucker_channels=24,  # 6 Plücker channels × the VAE's 2×2 patch
        chunk_plucker_post_attn_blocks=1,
        caption_channels=8,
        image_size=64,
        mixed_precision="fp32",
    )
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLLTX2Video(
        latent_channels=8,
        block_out_channels=(8, 8),
        down_block_types=("LTX2VideoDownBlock3D",) * 2,
        decoder_block_out_channels=(8,),
        layers_per_block=(1, 1, 1),
        decoder_layers_per_block=(1, 1),
        spatio_temporal_scaling=(True, True),
        decoder_spatio_temporal_scaling=(True,),
        decoder_inject_noise=(False, False),
        downsample_type=("spatial", "spatiotemporal"),
        upsample_type=("spatiotemporal",),
        upsample_residual=(True,),
        upsample_factor=(2,),
        patch_size=2,
        patch_size_t=1,
    )
    pipe = diffusers.SanaWMPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
