"""Tiny decoder-LLM text encoders and their fast tokenizers, built in code (no downloads).

The tokenizer is a byte-level BPE (as Qwen's and Mistral's are) trained in a few milliseconds on
the pipelines' template texts (Flux.2's system message too) and the test words, so that every
template word is one token: the
Qwen-Image system prefix is 34 tokens, as with the real Qwen2.5-VL tokenizer
(``prompt_template_encode_start_idx``). Its chat template writes the Qwen3 conversation format.
Every builder seeds ``torch.manual_seed(0)``; each is built once per test session.
"""

from __future__ import annotations

from functools import cache
from typing import Any

#: Qwen-Image's system prompt (``QwenImagePipeline.prompt_template_encode``).
QWEN_IMAGE_SYSTEM = (
    "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:"
)
SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<think>",
    "</think>",
)
WORDS = "a red cat on a mat blue dog sky house hill tall green tree under big small old"

#: The Qwen3 chat format for the conversations the pipelines write (a user message, optionally
#: a system message; content a string or a list of text parts).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}{{ part['text'] }}{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif -%}{%- endif -%}"
)


@cache
def tiny_qwen_tokenizer() -> Any:
    """A Qwen2 fast tokenizer over a tiny byte-level BPE vocabulary, with the chat template."""
    from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    corpus = [QWEN_IMAGE_SYSTEM, SYSTEM_MESSAGE, "system", "user", "assistant"]
    corpus += [" system user assistant"]
    corpus += [WORDS, WORDS.replace(" ", ", ")]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus * 20, trainer)
    tokenizer = Qwen2Tokenizer(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=131072,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _text_config(tokenizer: Any) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
    }


@cache
def tiny_qwen3_model() -> Any:
    """A Qwen3 base model (Z-Image's ``text_encoder``), random weights."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    config = Qwen3Config(**_text_config(tiny_qwen_tokenizer()), head_dim=8)
    return Qwen3Model(config).eval()


@cache
def tiny_qwen25vl_model() -> Any:
    """A Qwen2.5-VL (Qwen-Image's ``text_encoder``) with a tiny vision tower, random weights."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = tiny_qwen_tokenizer()
    torch.manual_seed(0)
    text = _text_config(tokenizer) | {"rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]}}
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "fullatt_block_indexes": [0],
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _flow_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler()


def tiny_qwen_image(variant: str = "") -> Any:
    """Qwen-Image (``variant``: ``""``, ``"Img2Img"``, ``"Inpaint"``): Qwen2.5-VL, a tiny
    transformer (joint attention 32 wide) and a tiny Qwen-Image VAE (diffusers' test sizes)."""
    import diffusers
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
        base_dim=24,
        z_dim=4,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    cls = getattr(diffusers, f"QwenImage{variant}Pipeline")
    pipe = cls(
        scheduler=_flow_scheduler(),
        vae=vae,
        text_encoder=tiny_qwen25vl_model(),
        tokenizer=tiny_qwen_tokenizer(),
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_z_image(variant: str = "") -> Any:
    """Z-Image (``variant``: ``""``, ``"Img2Img"``, ``"Inpaint"``): Qwen3, a tiny transformer
    (caption features 32 wide) and a tiny VAE (diffusers' test sizes)."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, ZImageTransformer2DModel

    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
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
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
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
    )
    cls = getattr(diffusers, f"ZImage{variant}Pipeline")
    pipe = cls(
        scheduler=_flow_scheduler(),
        vae=vae,
        text_encoder=tiny_qwen3_model(),
        tokenizer=tiny_qwen_tokenizer(),
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@cache
def tiny_qwen3_deep_lm() -> Any:
    """A Qwen3 causal LM 27 layers deep (Flux.2 Klein reads ``hidden_states`` 9, 18 and 27)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    text = _text_config(tiny_qwen_tokenizer()) | {"hidden_size": 16, "num_hidden_layers": 27}
    return Qwen3ForCausalLM(Qwen3Config(**text, head_dim=4)).eval()


@cache
def tiny_mistral3_model() -> Any:
    """A Mistral 3 (Flux.2's ``text_encoder``) 30 layers deep (it reads ``hidden_states`` 10, 20
    and 30) with a tiny Pixtral vision tower, random weights."""
    import torch
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tokenizer = tiny_qwen_tokenizer()
    torch.manual_seed(0)
    text = _text_config(tokenizer) | {"hidden_size": 16, "num_hidden_layers": 30, "head_dim": 4}
    config = Mistral3Config(
        text_config={"model_type": "mistral", **text},
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "head_dim": 8,
            "image_size": 28,
            "patch_size": 14,
        },
        image_token_index=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        spatial_merge_size=2,
    )
    return Mistral3ForConditionalGeneration(config).eval()


def tiny_flux2(klein: str = "") -> Any:
    """Flux.2 (``klein=""``: Mistral 3) or Flux.2 Klein (``klein``: ``"Klein"``,
    ``"KleinInpaint"``, ``"KleinKV"``: Qwen3), a tiny transformer reading three stacked 16-wide
    hidden states, and a tiny Flux.2 VAE. The tokenizer is the tiny Qwen one for both (its chat
    template writes the system message and text parts Flux.2 sends)."""
    import diffusers
    import torch
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    torch.manual_seed(0)
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=48,
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=not klein,
    )
    torch.manual_seed(0)
    vae = AutoencoderKLFlux2(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=32,
    )
    cls = getattr(diffusers, f"Flux2{klein}Pipeline")
    text_encoder = tiny_qwen3_deep_lm() if klein else tiny_mistral3_model()
    pipe = cls(
        scheduler=_flow_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_qwen_tokenizer(),
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
