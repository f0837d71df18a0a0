"""A1111's noise levels: the model's σ table, the σ schedule a sampler runs, DDIM's timesteps.

A1111 wraps the model in k-diffusion's ``CompVisDenoiser``: its σ table is
``sqrt((1 - ᾱ) / ᾱ)`` in float32, with ᾱ computed the way the original Stable Diffusion code does
(betas in float64, cumulative product in float64, stored as float32), and σ ↔ timestep maps
interpolate in log σ. The schedule formulas themselves are
:func:`promptweights.samplers.schedule_sigmas`; this module computes them as k-diffusion does
(float32, its order of operations), adds what A1111's ``get_sigmas`` does around them (the
sampler's default schedule, "discard penultimate sigma") and DDIM's timesteps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from promptweights.errors import InvalidArgumentError, UnknownNameError
from promptweights.samplers import SamplerChoice

__all__ = [
    "alphas_cumprod",
    "ddim_timesteps",
    "model_sigmas",
    "sampler_sigmas",
    "sigma_to_t",
    "t_to_sigma",
]


def alphas_cumprod(scheduler_config: Mapping[str, Any]) -> Tensor:
    """ᾱ for each training timestep as A1111's model holds it (float32).

    ``scaled_linear`` (Stable Diffusion's "linear" in its own code) and ``linear`` betas are
    computed in float64 and the product taken in float64, then stored as float32, as the original
    code does; other schedules are not known here.

    Args:
        scheduler_config: a diffusers scheduler's config (``beta_start``, ``beta_end``,
            ``beta_schedule``, ``num_train_timesteps``, or ``trained_betas``).

    Raises:
        UnknownNameError: a ``beta_schedule`` other than those two.
    """
    n = int(scheduler_config.get("num_train_timesteps", 1000))
    trained = scheduler_config.get("trained_betas")
    start = float(scheduler_config.get("beta_start", 0.00085))
    end = float(scheduler_config.get("beta_end", 0.012))
    kind = scheduler_config.get("beta_schedule", "scaled_linear")
    if trained is not None:
        betas = torch.tensor(trained, dtype=torch.float64)
    elif kind == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    elif kind == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float64)
    else:
        raise UnknownNameError("beta schedule", str(kind), ("scaled_linear", "linear"))
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


def model_sigmas(alphas: Tensor) -> Tensor:
    """k-diffusion's σ table: ``((1 - ᾱ) / ᾱ) ** 0.5``, ascending, in ᾱ's dtype."""
    result: Tensor = ((1 - alphas) / alphas) ** 0.5
    return result


def sigma_to_t(sigma: Tensor, sigmas: Tensor) -> Tensor:
    """The fractional timestep of ``sigma``: k-diffusion's ``sigma_to_t`` (log-σ interpolation,
    clamped to the table)."""
    log_sigmas = sigmas.log()
    log_sigma = sigma.log()
    dists = log_sigma - log_sigmas[:, None]
    low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
    low_value, high_value = log_sigmas[low], log_sigmas[low + 1]
    w = ((low_value - log_sigma) / (low_value - high_value)).clamp(0, 1)
    return ((1 - w) * low + w * (low + 1)).view(sigma.shape)


def t_to_sigma(t: Tensor, sigmas: Tensor) -> Tensor:
    """σ at fractional timesteps: k-diffusion's ``t_to_sigma`` (log-σ interpolation)."""
    t = t.float()
    log_sigmas = sigmas.log()
    low, high, w = t.floor().long(), t.ceil().long(), t.frac()
    result: Tensor = ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()
    return result


def _zero_ended(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _computed(name: str, n: int, sigmas: Tensor) -> Tensor:
    """The schedules of :func:`promptweights.samplers.schedule_sigmas`, in float32 and in
    k-diffusion's order of operations: one unit in the last place of σ moves the UNet's
    timestep near t = 999 by more than float32 resolves, so the formulas are not enough."""
    sigma_min, sigma_max = sigmas[0].item(), sigmas[-1].item()
    if name == "karras":
        rho = 7.0
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        return _zero_ended((hi + torch.linspace(0, 1, n) * (lo - hi)) ** rho)
    if name == "exponential":
        return _zero_ended(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())
    if name == "polyexponential":
        ramp = torch.linspace(1, 0, n) ** 1.0
        span = math.log(sigma_max) - math.log(sigma_min)
        return _zero_ended(torch.exp(ramp * span + math.log(sigma_min)))
    if name == "uniform":
        return _zero_ended(t_to_sigma(torch.linspace(len(sigmas) - 1, 0, n), sigmas))
    start = sigma_to_t(torch.tensor(sigma_max), sigmas)  # sgm_uniform
    end = sigma_to_t(torch.tensor(sigma_min), sigmas)
    values = [float(t_to_sigma(t, sigmas)) for t in torch.linspace(start, end, n + 1)[:-1]]
    return torch.tensor([*values, 0.0], dtype=torch.float32)


def sampler_sigmas(
    choice: SamplerChoice, steps: int, sigmas: Tensor, *, discard_penultimate: bool = False
) -> Tensor:
    """The σ schedule A1111 runs ``choice`` on: ``steps`` values then 0 (float32).

    As A1111's ``KDiffusionSampler.get_sigmas``: the "Automatic" schedule is the sampler's default
    (the model's own Uniform schedule for samplers without one); with ``discard_penultimate``
    (DPM2, DPM2 a, or the infotext's ``Discard penultimate sigma: True``) ``steps + 1`` values are
    computed and the second-to-last dropped. The formulas are those of
    :func:`promptweights.samplers.schedule_sigmas`.

    Args:
        choice: from :func:`promptweights.samplers.resolve`.
        steps: the number of steps.
        sigmas: the model's σ table (:func:`model_sigmas`, float32, ascending).
        discard_penultimate: drop the second-to-last σ.

    Raises:
        UnknownNameError: a schedule not computed here (``Align Your Steps``, ``Beta``…).
        InvalidArgumentError: a sampler with its own timesteps (DDIM, PLMS…).

    >>> from promptweights.samplers import resolve
    >>> table = model_sigmas(alphas_cumprod({}))
    >>> [round(s, 4) for s in sampler_sigmas(resolve("Euler", "Karras"), 2, table).tolist()]
    [14.6146, 0.0292, 0.0]
    """
    name = choice.schedule_name
    if name is None:
        raise InvalidArgumentError(f"{choice.sampler} runs on timesteps, not a σ schedule")
    if steps < 1:
        raise InvalidArgumentError(f"steps must be at least 1, not {steps}")
    if name not in _SCHEDULES:
        raise UnknownNameError(
            "schedule type A1111 sampling runs here", choice.schedule or name, _SCHEDULE_LABELS
        )
    n = steps + 1 if discard_penultimate else steps
    result = _computed(name, n, sigmas.float().cpu())
    if discard_penultimate:
        result = torch.cat([result[:-2], result[-1:]])
    return result


_SCHEDULES = ("uniform", "karras", "exponential", "polyexponential", "sgm_uniform")
_SCHEDULE_LABELS = ("Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform")


def ddim_timesteps(steps: int, *, discard_penultimate: bool = False) -> Tensor:
    """A1111's timesteps for DDIM and PLMS: ``range(0, 1000, 1000 // steps) + 1``, clipped to
    999. The samplers make ``len - 1`` calls (3 for 4 steps: 1000 is a multiple of 4).

    >>> ddim_timesteps(3).tolist()
    [1, 334, 667, 999]
    >>> ddim_timesteps(4).tolist()
    [1, 251, 501, 751]
    """
    if steps < 1:
        raise InvalidArgumentError(f"steps must be at least 1, not {steps}")
    n = steps + 1 if discard_penultimate else steps
    return torch.clip(torch.arange(0, 1000, max(1000 // n, 1)) + 1, 0, 999)
