"""A1111's own noise and sampling, for diffusers: the same image as in AUTOMATIC1111's webui.

Importing it loads torch (``import promptweights`` does not). Its modules:

* :mod:`promptweights.a1111.rng`: seeds, variation seeds, "Seed resize from", the CPU/GPU/NV
  noise sources and ENSD, as A1111 v1.10.1 draws them;
* :mod:`promptweights.a1111.brownian`: the SDE samplers' seeded Brownian noise (extra ``a1111``);
* :mod:`promptweights.a1111.philox`: the ``NV`` source, Philox4x32-10 with cuRAND's Box–Muller;
* :mod:`promptweights.a1111.samplers`: k-diffusion's samplers and A1111's DDIM/PLMS, step by step;
* :mod:`promptweights.a1111.schedules`: the model's σ table, every σ schedule type of A1111
  v1.10.1, DDIM timesteps;
* :mod:`promptweights.a1111.denoiser`: A1111's CFG denoiser (AND weights, NGMS, Skip Early CFG);
* :mod:`promptweights.a1111.guidance`: the same CFG options inside a pipeline's own guidance step
  (UNet hooks :func:`promptweights.diffusers.from_infotext` installs);
* :mod:`promptweights.a1111.run`: :func:`~promptweights.a1111.run.sample`, A1111's sampling loop
  on a diffusers UNet;
* :mod:`promptweights.a1111.scheduler`: the same samplers as a scheduler inside a pipeline's loop
  (what :func:`promptweights.diffusers.from_infotext` installs);
* :mod:`promptweights.a1111.plan`: an infotext's A1111 settings and what still cannot match.
"""

from __future__ import annotations

from . import brownian, denoiser, guidance, philox, plan, rng, run, samplers, scheduler, schedules
from .denoiser import CFGDenoiser
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
from .run import Seeds, sample
from .scheduler import A1111Scheduler

__all__ = [
    "SOURCES",
    "A1111Scheduler",
    "CFGDenoiser",
    "ImageRNG",
    "Seeds",
    "batch_seeds",
    "brownian",
    "brownian_noise_sampler",
    "create_generator",
    "denoiser",
    "guidance",
    "philox",
    "plan",
    "randn",
    "randn_without_seed",
    "rng",
    "run",
    "sample",
    "samplers",
    "scheduler",
    "schedules",
    "sigma_bounds",
    "slerp",
]
