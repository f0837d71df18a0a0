"""A1111's own noise and sampling, for diffusers: the same image as in AUTOMATIC1111's webui.

Importing it loads torch (``import promptweights`` does not). Its modules:

* :mod:`promptweights.a1111.rng`: seeds, variation seeds, "Seed resize from", the CPU/GPU/NV
  noise sources and ENSD, as A1111 v1.10.1 draws them;
* :mod:`promptweights.a1111.brownian`: the SDE samplers' seeded Brownian noise (extra ``a1111``);
* :mod:`promptweights.a1111.philox`: the ``NV`` source, Philox4x32-10 with cuRAND's Box–Muller.
"""

from __future__ import annotations

from . import brownian, philox, rng
from .rng import (
    SOURCES,
    ImageRNG,
    batch_seeds,
    brownian_noise_sampler,
    create_generator,
    randn,
    randn_without_seed,
    sigma_bounds,
    slerp,
)

__all__ = [
    "SOURCES",
    "ImageRNG",
    "batch_seeds",
    "brownian",
    "brownian_noise_sampler",
    "create_generator",
    "philox",
    "randn",
    "randn_without_seed",
    "rng",
    "sigma_bounds",
    "slerp",
]
