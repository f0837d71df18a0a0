"""Per-image overhead of promptweights in a full diffusers run (issue 4's GPU measurement).

Run from the repository root on a machine with a GPU::

    python -m benchmarks.pipeline                 # SD1.5-shaped, random weights, 512², 20 steps
    python -m benchmarks.pipeline --tiny --device cpu   # a seconds-long smoke run of this script

An SD1.5-shaped pipeline (UNet 320/640/1280/1280, CLIP-L 12×768, VAE 128/256/512/512) is built
from configs with random weights (``torch.manual_seed(0)``), so no download is needed. Each round
times, with the device synchronised:

* ``plain``: ``pipe(prompt=..., negative_prompt=...)`` — the pipeline encodes the plain prompt;
* ``weighted``: ``promptweights.diffusers.encode`` of a long weighted prompt with an edit, then
  ``pipe(**cond.pipeline_kwargs())`` (the encode is inside the timing).

Overhead = (weighted − plain) / plain, on the median of the rounds, and the median time of the
``encode`` call alone. ``benchmarks/gpu.sh`` runs it and writes ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

import promptweights.diffusers as pwd

PLAIN = "a photo of a red fox sitting in the snow, mountains, sunset"
WEIGHTED = (
    "a photo of a (red fox:1.3) sitting in the [snow:grass:0.5], ((mountains)), [blurry], "
    + ", ".join(f"detail {i}" for i in range(30))
    + " BREAK (sunset:1.2)"
)
NEGATIVE = "lowres, bad anatomy"


def sd15_pipeline(tiny: bool, device: str, dtype: torch.dtype) -> Any:
    """An SD1.5-shaped pipeline with random weights (``tiny``: diffusers' dummy sizes)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from diffusers import UNet2DConditionModel as UNet
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests._tiny_models import SHARED_TOKENIZER, real_clip_tokenizer, tiny_clip_tokenizer

    torch.manual_seed(0)
    real = (SHARED_TOKENIZER / "vocab.json").is_file()
    tok = real_clip_tokenizer() if real else tiny_clip_tokenizer()
    width, channels = (32, (4, 8)) if tiny else (768, (320, 640, 1280, 1280))
    text = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2 if tiny else 12,
        num_attention_heads=4 if tiny else 12,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    down = ("CrossAttnDownBlock2D",) * (len(channels) - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(channels) - 1)
    unet = UNet(
        block_out_channels=channels,
        layers_per_block=1 if tiny else 2,
        cross_attention_dim=width,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=2 if tiny else 32,
        attention_head_dim=2 if tiny else 8,
    )
    vae_channels = (4, 8) if tiny else (128, 256, 512, 512)
    vae = AutoencoderKL(
        block_out_channels=vae_channels,
        down_block_types=("DownEncoderBlock2D",) * len(vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(vae_channels),
        latent_channels=4,
        norm_num_groups=2 if tiny else 32,
        layers_per_block=1 if tiny else 2,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(text).eval(),
        tokenizer=tok,
        unet=unet,
        scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipe.to(device, dtype)


def main(argv: list[str] | None = None) -> None:
    """Time plain and weighted runs and print the overhead."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--dtype",
        choices=["float16", "bfloat16", "float32"],
        help="the pipeline's dtype (default: float16 on cuda, float32 elsewhere)",
    )
    parser.add_argument("--exact", action="store_true", help="encode with exact=True")
    args = parser.parse_args(argv)
    default = "float16" if args.device.startswith("cuda") else "float32"
    dtype = getattr(torch, args.dtype or default)
    size = 32 if args.tiny else args.size
    pipe = sd15_pipeline(args.tiny, args.device, dtype)
    pipe.set_progress_bar_config(disable=True)
    options = {"num_inference_steps": args.steps, "height": size, "width": size}

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def plain() -> None:
        pipe(prompt=PLAIN, negative_prompt=NEGATIVE, output_type="latent", **options)

    def weighted() -> None:
        cond = pwd.encode(pipe, WEIGHTED, NEGATIVE, steps=args.steps, exact=args.exact)
        pipe(**{**options, **cond.pipeline_kwargs()}, output_type="latent")

    times: dict[str, list[float]] = {"plain": [], "weighted": []}
    for run in (plain, weighted):  # warm-up
        run()
    for _ in range(args.rounds):
        for name, run in (("plain", plain), ("weighted", weighted)):
            sync()
            start = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(f"device: {device}; {size}x{size}, {args.steps} steps, {dtype}, {args.rounds} rounds")
    for name, value in median.items():
        print(f"  {name:9s} {value * 1000:9.1f} ms/image (median)")
    overhead = (median["weighted"] - median["plain"]) / median["plain"]
    print(f"  overhead  {overhead:+.2%} (target < 1%)")
    encode_times = []
    for _ in range(args.rounds):
        sync()
        start = time.perf_counter()
        pwd.encode(pipe, WEIGHTED, NEGATIVE, steps=args.steps, exact=args.exact)
        sync()
        encode_times.append(time.perf_counter() - start)
    encoding = statistics.median(encode_times)
    print(f"  encode    {encoding * 1000:9.1f} ms (median; the weighted prompt alone)")


if __name__ == "__main__":
    main()
