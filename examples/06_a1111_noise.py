"""A1111's noise for a diffusers pipeline
=======================================

An A1111 infotext names the noise of its image: ``Seed``, ``Variation seed`` and its strength,
``Seed resize from``, ``ENSD`` and ``RNG`` (CPU, GPU or NV). ``promptweights.a1111.rng`` draws that
noise as A1111 v1.10.1 does, for a whole batch: the initial latent, then the step noise an
ancestral sampler adds. The NV source reproduces an NVIDIA GPU's numbers on any CPU. Here the
noise starts the toy pipeline (offline), and each image of a batch is the image made alone.
Run: ``python examples/06_a1111_noise.py``.
"""

from __future__ import annotations

import torch

import promptweights.toy as toy
from promptweights.a1111.rng import ImageRNG, batch_seeds


def main() -> None:
    pipe = toy.load_pipeline()
    latent = (
        pipe.unet.config.in_channels,
        32 // pipe.vae_scale_factor,
        32 // pipe.vae_scale_factor,
    )
    # "Seed: 965400086, Variation seed: 7, Variation seed strength: 0.3, ENSD: 31337, RNG: NV",
    # batch size 2: both images share the seed, their variation seeds are 7 and 8.
    seeds, subseeds = batch_seeds(965400086, 2, subseed=7, subseed_strength=0.3)
    print("seeds", seeds, "variation seeds", subseeds)
    rng = ImageRNG(latent, seeds, subseeds=subseeds, subseed_strength=0.3, source="NV", ensd=31337)
    initial = rng.next()  # A1111 asks for the initial noise first
    step_noise = rng.next()  # then once per ancestral step (from seed + ENSD)
    print("initial noise", tuple(initial.shape), "first step noise", tuple(step_noise.shape))

    second_alone = ImageRNG(
        latent, [seeds[1]], subseeds=[subseeds[1]], subseed_strength=0.3, source="NV"
    )
    assert torch.equal(second_alone.first()[0], initial[1])
    print("image 2 of the batch starts from the same noise as when made alone")

    images = pipe(
        ["a red circle", "a blue square"],
        num_inference_steps=4,
        height=32,
        width=32,
        latents=initial,
        output_type="np",
    ).images
    print("images", images.shape)


if __name__ == "__main__":
    main()
