"""Rerun an image from its infotext
=================================

Every image promptweights saves carries A1111's "parameters" text. Read it back, turn sampler,
steps, CFG, seed, clip skip and weighting strategy into a diffusers scheduler and the pipeline's
keyword arguments, and plain diffusers calls give the same picture (embedded toy model, offline).
From the shell: ``promptweights infotext IMAGE.png --to-diffusers``.
Run: ``python examples/05_rerun_infotext.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import promptweights.toy as toy
from promptweights import infotext
from promptweights.compare import compare, settings_from_infotext
from promptweights.diffusers import encode
from promptweights.samplers import build_scheduler


def main(out: Path | None = None) -> None:
    out = out or Path(tempfile.gettempdir()) / "promptweights-05-rerun"
    pipe = toy.load_pipeline()
    # 1. An image saved with its infotext (a one-cell comparison grid).
    prompt = "a (green:1.3) square, [orange] background"
    settings = {"strategy": "comfy", "sampler": "Euler", "seed": 42, "steps": 8, "cfg": 4.0}
    compare(pipe, prompt, out_dir=out, overwrite=True, progress=False, **settings)
    path = out / "cells" / "000.png"
    # 2. Read the text back and map it to a diffusers scheduler and keyword arguments.
    params = infotext.read_image(path)
    print(infotext.format(params))
    options = {
        "strategy": settings_from_infotext(params)["strategy"],  # from "Prompt weighting"
        "clip_skip": params.clip_skip - 1 or None,  # A1111's "Clip skip 1" is the last layer
        "steps": params.steps,
    }
    pipe.scheduler = build_scheduler(params.sampler_choice(), pipe.scheduler.config)
    cond = encode(pipe, params.prompt, params.negative_prompt, **options)
    # 3. Run the pipeline: the seed's CPU generator draws the same initial latents.
    again = pipe(
        **cond.pipeline_kwargs(),  # embeddings and num_inference_steps
        guidance_scale=params.cfg_scale,
        generator=torch.Generator("cpu").manual_seed(params.seed),
        output_type="np",
    ).images[0]
    with Image.open(path) as png:
        saved = np.asarray(png, dtype=np.float32) / 255
    difference = float(np.abs(saved - again).max())
    print(f"rerun of {path.name} from its infotext: largest pixel difference {difference:.4f}")
    assert difference <= 1 / 255 + 1e-6  # the saved PNG is rounded to 8 bits


if __name__ == "__main__":
    main()
