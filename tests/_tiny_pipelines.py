"""Tiny diffusers pipelines of every family, built from configs in code (no downloads).

Sizes follow diffusers' own ``get_dummy_components``; every builder seeds ``torch.manual_seed(0)``
so two calls give identical weights. Text towers and tokenizers come from ``_tiny_models``.
"""

from __future__ import annotations

from typing import Any

from _tiny_models import (
    tiny_clip_model,
    tiny_clip_tokenizer,
    tiny_sd_pipeline,
    tiny_t5_model,
    tiny_t5_tokenizer,
    tiny_umt5_model,
)

__all__ = [
    "tiny_chroma",
    "tiny_flux",
    "tiny_pixart",
    "tiny_sd1",
    "tiny_sd1_sd15_schedule",
    "tiny_sd2",
    "tiny_sd3",
    "tiny_sdxl",
    "tiny_sdxl_refiner",
    "tiny_wan",
]


def tiny_sd1(img2img: bool = False) -> Any:
    """SD 1.x: CLIP-L pads with EOS."""
    tok = tiny_clip_tokenizer()
    pipe = tiny_sd_pipeline(tok, tiny_clip_model(tok))
    return _img2img(pipe) if img2img else pipe


def tiny_sd1_sd15_schedule() -> Any:
    """The tiny SD 1.x pipeline with SD 1.5's noise schedule (σ from 0.029 to 14.6, as A1111's
    model has it), progress bar off: the A1111 sampling tests' model."""
    from diffusers import EulerDiscreteScheduler

    pipe = tiny_sd1()
    pipe.scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sd2(img2img: bool = False) -> Any:
    """SD 2.x: OpenCLIP-H pads with ``!`` (id 0); diffusers' checkpoint already dropped its last
    layer, so the tower's last layer is A1111's "penultimate"."""
    tok = tiny_clip_tokenizer(pad="!")
    pipe = tiny_sd_pipeline(tok, tiny_clip_model(tok))
    return _img2img(pipe) if img2img else pipe


def _img2img(pipe: Any) -> Any:
    from diffusers import StableDiffusionImg2ImgPipeline

    return StableDiffusionImg2ImgPipeline(**pipe.components)


def _sdxl_unet(cross_attention_dim: int, pooled_dim: int, time_ids: int = 6) -> Any:
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=time_ids * 8 + pooled_dim,
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=2,
    )


def _vae(latent_channels: int = 4, flat: bool = False) -> Any:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    if flat:  # SD3/Flux: one block, no quant convs (diffusers' dummy components)
        return AutoencoderKL(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            block_out_channels=(4,),
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=1,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5035,
        )
    return AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=latent_channels,
        norm_num_groups=2,
    )


def tiny_sdxl(img2img: bool = False) -> Any:
    """SDXL base: CLIP-L (pads with EOS) + OpenCLIP-G with projection (pads with ``!``)."""
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
    )

    tok, tok_2 = tiny_clip_tokenizer(), tiny_clip_tokenizer(pad="!")
    te = tiny_clip_model(tok)
    te_2 = tiny_clip_model(tok_2, projection=True, layers=4)
    cls = StableDiffusionXLImg2ImgPipeline if img2img else StableDiffusionXLPipeline
    return cls(
        vae=_vae(),
        text_encoder=te,
        text_encoder_2=te_2,
        tokenizer=tok,
        tokenizer_2=tok_2,
        unet=_sdxl_unet(64, 16),
        scheduler=EulerDiscreteScheduler(timestep_spacing="leading", steps_offset=1),
    )


def tiny_sdxl_refiner() -> Any:
    """The SDXL refiner: OpenCLIP-G only, aesthetic-score time ids."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline

    tok_2 = tiny_clip_tokenizer(pad="!")
    te_2 = tiny_clip_model(tok_2, projection=True, layers=4)
    return StableDiffusionXLImg2ImgPipeline(
        vae=_vae(),
        text_encoder=None,
        text_encoder_2=te_2,
        tokenizer=None,
        tokenizer_2=tok_2,
        unet=_sdxl_unet(32, 16, time_ids=5),
        scheduler=EulerDiscreteScheduler(timestep_spacing="leading", steps_offset=1),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )


def tiny_sd3(t5: bool = True, img2img: bool = False, variant: str = "") -> Any:
    """SD3: CLIP-L and CLIP-G (16 wide each, with projection) and optionally T5 (32 wide)."""
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Img2ImgPipeline,
        StableDiffusion3Pipeline,
    )

    tok, tok_2 = tiny_clip_tokenizer(), tiny_clip_tokenizer(pad="!")
    te = tiny_clip_model(tok, projection=True, width=16)
    te_2 = tiny_clip_model(tok_2, projection=True, width=16)
    tok_3 = tiny_t5_tokenizer() if t5 else None
    te_3 = tiny_t5_model(tok_3) if t5 else None
    latents = 16 if variant == "Inpaint" else 4  # SD3's inpainting wants SD3's 16 channels
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=latents,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        out_channels=latents,
    )
    cls = StableDiffusion3Img2ImgPipeline if img2img else StableDiffusion3Pipeline
    if variant:  # "Inpaint": another class over the same components
        import diffusers

        cls = getattr(diffusers, f"StableDiffusion3{variant}Pipeline")
    return cls(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(latent_channels=latents, flat=True),
        text_encoder=te,
        tokenizer=tok,
        text_encoder_2=te_2,
        tokenizer_2=tok_2,
        text_encoder_3=te_3,
        tokenizer_3=tok_3,
    )


def tiny_flux(img2img: bool = False, variant: str = "", in_channels: int = 4) -> Any:
    """Flux.1: CLIP-L (pooled only) and T5; ``variant`` names another Flux class over the same
    components (``"Kontext"``, ``"Inpaint"``, ``"Fill"``: give Fill ``in_channels=4 + 4·4``, its
    image and mask latents)."""
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxImg2ImgPipeline,
        FluxPipeline,
        FluxTransformer2DModel,
    )

    tok = tiny_clip_tokenizer()
    te = tiny_clip_model(tok)
    tok_2 = tiny_t5_tokenizer()
    te_2 = tiny_t5_model(tok_2)
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
        in_channels=in_channels,
        out_channels=4,
    )
    cls = FluxImg2ImgPipeline if img2img else FluxPipeline
    if variant:
        import diffusers

        cls = getattr(diffusers, f"Flux{variant}Pipeline")
    return cls(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(latent_channels=1, flat=True),
        text_encoder=te,
        tokenizer=tok,
        text_encoder_2=te_2,
        tokenizer_2=tok_2,
    )


def tiny_chroma(variant: str = "") -> Any:
    """Chroma: one T5, run with its attention mask (diffusers' dummy-component sizes)."""
    import diffusers
    import torch

    tok = tiny_t5_tokenizer()
    te = tiny_t5_model(tok)
    torch.manual_seed(0)
    transformer = diffusers.ChromaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=[4, 4, 8],
        approximator_hidden_dim=32,
        approximator_layers=1,
        approximator_num_channels=16,
    )
    cls = getattr(diffusers, f"Chroma{variant}Pipeline")
    return cls(
        transformer=transformer,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
        vae=_vae(latent_channels=1, flat=True),
        text_encoder=te,
        tokenizer=tok,
    )


def tiny_pixart() -> Any:
    """PixArt-Σ: one T5 with its attention mask; captions lower-cased."""
    import diffusers
    import torch

    tok = tiny_t5_tokenizer()
    te = tiny_t5_model(tok)
    torch.manual_seed(0)
    transformer = diffusers.PixArtTransformer2DModel(
        sample_size=8,
        num_layers=1,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=16,
        out_channels=8,
        norm_num_groups=2,
    )
    return diffusers.PixArtSigmaPipeline(
        tokenizer=tok,
        text_encoder=te,
        vae=_vae(),
        transformer=transformer,
        scheduler=diffusers.DDIMScheduler(),
    )


def tiny_wan(i2v: bool = False) -> Any:
    """Wan 2.1: umT5 (zeros past the text); ``i2v`` adds the CLIP image encoder of image to
    video."""
    import diffusers
    import torch

    tok = tiny_t5_tokenizer()
    te = tiny_umt5_model(tok)
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    torch.manual_seed(0)
    transformer = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=36 if i2v else 16,
        out_channels=16,
        text_dim=32,
        freq_dim=32,
        ffn_dim=32,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=4 if i2v else None,
    )
    parts: dict[str, Any] = {
        "transformer": transformer,
        "vae": vae,
        "scheduler": diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0),
        "text_encoder": te,
        "tokenizer": tok,
    }
    if not i2v:
        return diffusers.WanPipeline(**parts)
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=4,
        projection_dim=4,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        intermediate_size=16,
        patch_size=4,
    )
    parts["image_encoder"] = CLIPVisionModelWithProjection(config).eval()
    parts["image_processor"] = CLIPImageProcessor(crop_size=16, size=16)
    return diffusers.WanImageToVideoPipeline(**parts)
