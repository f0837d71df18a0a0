"""Tiny pipelines of the Gemma 2, ChatGLM3 and Llama-3.1 families (Lumina 2, SANA, Kolors,
HiDream-I1), built offline from small configs; every tokenizer is built in code.

* Gemma: a fast ``GemmaTokenizer`` (BPE over single characters, with merges for a few words, so
  that any ASCII text, the pipelines' system prompts included, tokenises).
* ChatGLM3: diffusers' own slow ``ChatGLMTokenizer`` over a SentencePiece model trained here, in
  memory, on a few lines (needs ``sentencepiece``; :func:`tiny_chatglm_tokenizer` raises
  ``ImportError`` without it, so the Kolors tests skip).
* Llama-3.1: a byte-level BPE ``PreTrainedTokenizerFast`` with ``<|begin_of_text|>`` and the EOS as
  padding, as HiDream's model card sets it.

Sizes follow diffusers' own ``get_dummy_components``; every builder seeds ``torch.manual_seed(0)``
so two calls give identical weights. Each builder returns a new pipeline: tests share them through
module fixtures.
"""

from __future__ import annotations

import functools
import string
from typing import Any

from _tiny_models import tiny_clip_model, tiny_clip_tokenizer, tiny_t5_model, tiny_t5_tokenizer
from _tiny_pipelines import _vae

__all__ = [
    "GEMMA_WORDS",
    "tiny_chatglm_tokenizer",
    "tiny_gemma_tokenizer",
    "tiny_hidream",
    "tiny_kolors",
    "tiny_llama_tokenizer",
    "tiny_lumina2",
    "tiny_sana",
]

#: Words the tiny Gemma and Llama tokenizers know whole (a leading space included).
GEMMA_WORDS = ("a", "cat", "dog", "red", "blue", "mat", "on", "sky", "the", "house", "hill")

_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>")


def tiny_gemma_tokenizer(padding_side: str = "left") -> Any:
    """A fast Gemma tokenizer: ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2 (added in front), every
    printable ASCII character, and ``▁word`` for :data:`GEMMA_WORDS`; pads on the left as
    ``GemmaTokenizer`` does unless told otherwise (SANA sets ``"right"`` itself)."""
    from transformers import GemmaTokenizer

    chars = ["▁", "\n", *(c for c in string.printable if not c.isspace())]
    vocab = {token: i for i, token in enumerate((*_SPECIALS, *chars))}
    merges = []
    for word in (*GEMMA_WORDS, *_template_words()):
        if "▁" + word in vocab:
            continue
        piece = "▁"
        for char in word:
            merges.append((piece, char))
            piece += char
            vocab.setdefault(piece, len(vocab))
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    tokenizer.padding_side = padding_side
    return tokenizer


@functools.cache
def _template_words() -> tuple[str, ...]:
    """The words of SANA's default complex human instruction, so that the tiny tokenizer reads
    it in a few hundred tokens rather than letter by letter."""
    import inspect
    import re

    from diffusers import SanaPipeline

    default = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"]
    words = re.findall(r"[a-z]+", " ".join(default.default).lower())
    return tuple(dict.fromkeys(w for w in words if len(w) > 1))


def _gemma2(tokenizer: Any, width: int = 8, layers: int = 2) -> Any:
    import torch
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation="eager",
    )
    return Gemma2Model(config).eval()


def tiny_lumina2() -> Any:
    """Lumina 2: Gemma 2 (8 wide, 2 layers; the pipeline reads the penultimate hidden state)."""
    import diffusers
    import torch

    tok = tiny_gemma_tokenizer()
    te = _gemma2(tok)
    torch.manual_seed(0)
    transformer = diffusers.Lumina2Transformer2DModel(
        sample_size=4,
        patch_size=2,
        in_channels=4,
        hidden_size=8,
        num_layers=1,
        num_refiner_layers=1,
        num_attention_heads=1,
        num_kv_heads=1,
        multiple_of=16,
        ffn_dim_multiplier=None,
        norm_eps=1e-5,
        scaling_factor=1.0,
        axes_dim_rope=(4, 2, 2),
        cap_feat_dim=8,
    )
    return diffusers.Lumina2Pipeline(
        transformer=transformer.eval(),
        vae=_vae(flat=True),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
        text_encoder=te,
        tokenizer=tok,
    )


def _dc_vae() -> Any:
    import diffusers
    import torch

    torch.manual_seed(0)
    return diffusers.AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)),
        decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=(1, 1),
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )


def tiny_sana(variant: str = "") -> Any:
    """SANA: Gemma 2 (last hidden state), right padding; ``variant`` ``""``, ``"PAG"``,
    ``"Sprint"`` or ``"SprintImg2Img"`` (their transformer takes the guidance embedding, the SCM
    scheduler)."""
    import diffusers
    import torch

    tok = tiny_gemma_tokenizer()
    te = _gemma2(tok)
    sprint = variant.startswith("Sprint")
    torch.manual_seed(0)
    extra: dict[str, Any] = {"guidance_embeds": True, "qk_norm": "rms_norm_across_heads"}
    transformer = diffusers.SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=32,
        **(extra if sprint else {}),
    )
    parts: dict[str, Any] = {
        "transformer": transformer,
        "vae": _dc_vae(),
        "text_encoder": te,
        "tokenizer": tok,
    }
    if sprint or variant == "SprintImg2Img":
        cls = getattr(diffusers, f"Sana{variant}Pipeline")
        return cls(**parts, scheduler=diffusers.SCMScheduler())
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0)
    if variant == "PAG":
        return diffusers.SanaPAGPipeline(
            **parts, scheduler=scheduler, pag_applied_layers=["transformer_blocks.0"]
        )
    return diffusers.SanaPipeline(**parts, scheduler=scheduler)


_SP_LINES = (
    "a red cat on a mat",
    "a blue dog under the sky",
    "the house on the hill, a cat and a dog",
    "red blue green cat dog mat sky house hill",
)


@functools.cache
def _sentencepiece_model() -> str:
    """A tiny SentencePiece (unigram) model trained in memory, written once to a temp file (the
    ChatGLM tokenizer reads a path); unk 0, bos 1, eos 2 as ChatGLM3's."""
    import io
    import tempfile
    from pathlib import Path

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_SP_LINES * 10),
        model_writer=model,
        vocab_size=60,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path = Path(tempfile.mkdtemp(prefix="pw-chatglm-")) / "tokenizer.model"
    path.write_bytes(model.getvalue())
    return str(path)


def tiny_chatglm_tokenizer() -> Any:
    """diffusers' slow ``ChatGLMTokenizer`` (``[gMASK] sop`` prefix, left padding with unk 0)
    over a tiny trained SentencePiece model. Raises ``ImportError`` without sentencepiece."""
    import sentencepiece  # noqa: F401  (the tokenizer's own check would raise later)
    from diffusers.pipelines.kolors import ChatGLMTokenizer

    return ChatGLMTokenizer(vocab_file=_sentencepiece_model())


def _chatglm(tokenizer: Any) -> Any:
    import torch
    from diffusers.pipelines.kolors import ChatGLMModel
    from diffusers.pipelines.kolors.text_encoder import ChatGLMConfig

    torch.manual_seed(0)
    config = ChatGLMConfig(
        num_layers=2,
        padded_vocab_size=tokenizer.vocab_size,
        hidden_size=8,
        ffn_hidden_size=16,
        kv_channels=4,
        num_attention_heads=2,
        seq_length=256,
        multi_query_attention=True,
        multi_query_group_num=1,
        add_qkv_bias=True,
        original_rope=True,  # ChatGLM3-6B's config.json sets it; the class has no default
    )
    model = ChatGLMModel(config).eval()
    # ChatGLM leaves its weights to from_pretrained (torch.empty, no _init_weights): set them.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.3 if param.ndim == 1 else 1.0 / param.shape[-1] ** 0.5)
    return model


def tiny_kolors(variant: str = "") -> Any:
    """Kolors: ChatGLM3 (8 wide; penultimate hidden state, pooled from the last layer's last
    position) into an SDXL-style UNet; ``variant`` ``""``, ``"Img2Img"`` or ``"PAG"``."""
    import diffusers
    import torch

    tok = tiny_chatglm_tokenizer()
    te = _chatglm(tok)
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
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
        projection_class_embeddings_input_dim=6 * 8 + 8,
        cross_attention_dim=8,
        norm_num_groups=2,
    )
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
    )
    scheduler = diffusers.EulerDiscreteScheduler(timestep_spacing="leading", steps_offset=1)
    parts = {"unet": unet, "vae": vae, "scheduler": scheduler, "text_encoder": te, "tokenizer": tok}
    cls = getattr(diffusers, f"Kolors{variant}Pipeline")
    extra = {"pag_applied_layers": ["mid"]} if variant == "PAG" else {}
    return cls(**parts, image_encoder=None, feature_extractor=None, **extra)


def tiny_llama_tokenizer() -> Any:
    """A byte-level BPE tokenizer as Llama 3's: ``<|begin_of_text|>`` added in front, no EOS
    added, the EOS ``<|eot_id|>`` used as padding (right), 16 tokens long."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: i for i, char in enumerate(sorted(alphabet))}
    merges = []
    for word in GEMMA_WORDS:
        piece = "Ġ"
        for char in word:
            merges.append((piece, char))
            piece += char
            vocab.setdefault(piece, len(vocab))
    bos, eos = "<|begin_of_text|>", "<|eot_id|>"
    vocab[bos], vocab[eos] = len(vocab), len(vocab) + 1
    backend = Tokenizer(BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, vocab[bos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=eos,
        model_max_length=16,
        padding_side="right",
    )


def _llama(tokenizer: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).eval()


def tiny_hidream() -> Any:
    """HiDream-I1: CLIP-L and CLIP-G (pooled only), T5 (32 wide) and Llama-3.1 (16 wide, every
    layer's hidden state; the transformer reads layers 0 and 1)."""
    import diffusers
    import torch

    tok, tok_2 = tiny_clip_tokenizer(), tiny_clip_tokenizer(pad="!")
    tok_3 = tiny_t5_tokenizer()
    tok_4 = tiny_llama_tokenizer()
    torch.manual_seed(0)
    transformer = diffusers.HiDreamImageTransformer2DModel(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_channels=[32, 16],
        text_emb_dim=32,
        num_routed_experts=4,
        num_activated_experts=2,
        axes_dims_rope=(4, 2, 2),
        max_resolution=(32, 32),
        llama_layers=(0, 1),
    ).eval()
    return diffusers.HiDreamImagePipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
        vae=_vae(flat=True),
        text_encoder=tiny_clip_model(tok, projection=True, layers=2, width=16, positions=128),
        tokenizer=tok,
        text_encoder_2=tiny_clip_model(tok_2, projection=True, layers=2, width=16, positions=128),
        tokenizer_2=tok_2,
        text_encoder_3=tiny_t5_model(tok_3),
        tokenizer_3=tok_3,
        text_encoder_4=_llama(tok_4),
        tokenizer_4=tok_4,
        transformer=transformer,
    )
