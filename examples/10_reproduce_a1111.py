"""Reproduce an A1111 image
=========================

``from_infotext`` re-runs an A1111 infotext with A1111's own noise and samplers: the seed's CPU
noise (``RNG: CPU``), ``ENSD``, Euler a's per-step noise and A1111's σ schedule, inside the
pipeline's own loop. ``docs/a1111-toy.png`` was sampled with ``promptweights.a1111.run.sample`` (a
loop that does what A1111's ``processing.py`` does, checked step by step against k-diffusion in
``tests/test_a1111_sampling.py``) on the embedded toy model; this script re-runs it from the text
in the PNG and compares the pixels (embedded toy model, offline).
Run: ``python examples/10_reproduce_a1111.py`` (``--make`` writes the PNG again).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

import promptweights.toy as toy
from promptweights import infotext
from promptweights.diffusers import encode, from_infotext

PNG = Path(__file__).resolve().parents[1] / "docs" / "a1111-toy.png"
TEXT = (
    "a red circle, blue background\n"
    "Negative prompt: green\n"
    "Steps: 12, Sampler: Euler a, Schedule type: Automatic, CFG scale: 1.5, Seed: 1234, "
    "Size: 32x32, ENSD: 31337, RNG: CPU"
)


def make(path: Path = PNG) -> None:
    """Sample the image as A1111 would, and save it with its infotext."""
    from promptweights.a1111.run import Seeds, decode, sample

    pipe = toy.load_pipeline()
    params = infotext.parse(TEXT)
    cond = encode(pipe, params.prompt, params.negative_prompt, steps=12)
    seeds = Seeds((1234,), source="CPU", eta_noise_seed_delta=31337)
    latents = sample(
        pipe, cond, seeds, sampler="Euler a", steps=12, cfg_scale=1.5, width=32, height=32
    )
    infotext.save_image(decode(pipe, latents)[0], path, params)


def main() -> None:
    pipe = toy.load_pipeline()
    kwargs = from_infotext(pipe, str(PNG))  # A1111's sampling: the default
    again = pipe(**kwargs, output_type="np").images[0]
    with Image.open(PNG) as png:
        saved = np.asarray(png.convert("RGB"), dtype=np.float32) / 255
    difference = float(np.abs(saved - again).max())
    print(infotext.read_image(PNG).settings["Sampler"], type(pipe.scheduler).__name__)
    print(f"re-run of {PNG.name}: largest pixel difference {difference:.4f}")
    assert difference <= 1 / 255 + 1e-6  # the PNG holds 8-bit pixels


if __name__ == "__main__":
    if "--make" in sys.argv[1:]:
        make()
    main()
