"""A1111's noise levels: the model's σ table, the σ schedule a sampler runs, DDIM's timesteps.

A1111 wraps the model in k-diffusion's ``CompVisDenoiser``: its σ table is
``sqrt((1 - ᾱ) / ᾱ)`` in float32, with ᾱ computed the way the original Stable Diffusion code does
(betas in float64, cumulative product in float64, stored as float32), and σ ↔ timestep maps
interpolate in log σ. :func:`sampler_sigmas` computes every schedule type of A1111 v1.10.1
(``sd_schedulers.py``: Uniform, Karras, Exponential, Polyexponential, SGM Uniform, KL Optimal,
Align Your Steps, Simple, Normal, DDIM, Beta) as A1111 and k-diffusion do (float32 torch, or
float64 where A1111 uses numpy, in their order of operations), with what A1111's ``get_sigmas``
does around them (the sampler's default schedule, "discard penultimate sigma", the σ range and ρ
settings); :func:`ddim_timesteps` gives the DDIM and PLMS samplers' timesteps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from promptweights.errors import InvalidArgumentError, UnknownNameError
from promptweights.samplers import SamplerChoice

__all__ = [
    "AYS_SD15",
    "AYS_SDXL",
    "SCHEDULES",
    "SCHEDULE_LABELS",
    "ScheduleOptions",
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


@dataclass(frozen=True, slots=True)
class ScheduleOptions:
    """The settings A1111's σ schedules read beside the step count.

    Attributes:
        sdxl: the model is SDXL (Align Your Steps then uses NVIDIA's SDXL table; every other
            model, SD 2.x included, gets the SD 1.5 table, as in A1111).
        sigma_min: ``Schedule min sigma`` (None: the model's σmin).
        sigma_max: ``Schedule max sigma`` (None: the model's σmax).
        rho: ``Schedule rho`` for Karras and Polyexponential (None: their 7 and 1).
        beta_alpha: ``Beta schedule alpha`` (A1111's default 0.6).
        beta_beta: ``Beta schedule beta`` (A1111's default 0.6).
    """

    sdxl: bool = False
    sigma_min: float | None = None
    sigma_max: float | None = None
    rho: float | None = None
    beta_alpha: float = 0.6
    beta_beta: float = 0.6


#: NVIDIA's 10-step Align Your Steps σ tables, as A1111 v1.10.1 holds them (sd_schedulers.py).
AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


def _unit_ramp(n: int) -> list[float]:
    """numpy's ``linspace(0, 1, n)``: ``i · (1 / (n − 1))``, the last exactly 1."""
    if n == 1:
        return [0.0]
    step = 1.0 / (n - 1)
    return [i * step for i in range(n - 1)] + [1.0]


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    """numpy's ``interp`` (piecewise linear, ``xs`` ascending) at one point."""
    if x >= xs[-1]:
        return ys[-1]
    j = max(i for i in range(len(xs)) if xs[i] <= x)
    slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
    return slope * (x - xs[j]) + ys[j]


def _align_your_steps(n: int, sdxl: bool) -> Tensor:
    """A1111's Align Your Steps: the 11-value table as is for ``n == 11``, else interpolated
    linearly in log σ (float64) to ``n`` values; then 0."""
    table = AYS_SDXL if sdxl else AYS_SD15
    if n == len(table):
        values = list(table)
    else:
        xs = _unit_ramp(len(table))
        ys = [math.log(s) for s in reversed(table)]
        values = [math.exp(_interp(x, xs, ys)) for x in _unit_ramp(n)][::-1]
    return torch.tensor([*values, 0.0], dtype=torch.float32)


def _simple(n: int, sigmas: Tensor) -> Tensor:
    """A1111's Simple: every ``len / n``-th σ of the table, from the top; then 0."""
    stride = len(sigmas) / n
    values = [float(sigmas[-(1 + int(i * stride))]) for i in range(n)]
    return torch.tensor([*values, 0.0], dtype=torch.float32)


def _ddim_uniform(n: int, sigmas: Tensor) -> Tensor:
    """A1111's DDIM schedule: the table's σ at t = 1, 1 + s, 1 + 2s… (s = ``len // n``) below
    ``len``, descending; then 0. Not always ``n`` values (7 steps give 8)."""
    stride = max(len(sigmas) // n, 1)
    values = [float(sigmas[t]) for t in range(1, len(sigmas), stride)][::-1]
    return torch.tensor([*values, 0.0], dtype=torch.float32)


def _normal(n: int, sigmas: Tensor, lo: float, hi: float, *, sgm: bool) -> Tensor:
    """A1111's Normal (``n`` timesteps from t(σmax) to t(σmin)) and SGM Uniform (``n + 1``, the
    last dropped), σ by log-σ interpolation; then 0."""
    start = sigma_to_t(torch.tensor(hi), sigmas)
    end = sigma_to_t(torch.tensor(lo), sigmas)
    times = torch.linspace(start, end, n + 1)[:-1] if sgm else torch.linspace(start, end, n)
    values = [float(t_to_sigma(t, sigmas)) for t in times]
    return torch.tensor([*values, 0.0], dtype=torch.float32)


def _kl_optimal(n: int, lo: float, hi: float) -> Tensor:
    """A1111's KL Optimal: ``tan`` of ``n + 1`` values from ``atan σmax`` to ``atan σmin``
    (float32). A1111 appends no 0: the last σ is σmin, so the samplers stop at σmin."""
    alpha_min = torch.atan(torch.tensor(lo))
    alpha_max = torch.atan(torch.tensor(hi))
    fraction = torch.arange(n + 1) / n
    return torch.tan(fraction * alpha_min + (1.0 - fraction) * alpha_max)


def _beta(n: int, lo: float, hi: float, alpha: float, beta: float) -> Tensor:
    """A1111's Beta: σmin + ppf(1 − r) · (σmax − σmin) for r = linspace(0, 1, n), in float64
    (Beta(alpha, beta) quantiles, :func:`promptweights.a1111._beta.beta_ppf`); then 0."""
    from ._beta import beta_ppf

    values = [lo + beta_ppf(1.0 - r, alpha, beta) * (hi - lo) for r in _unit_ramp(n)]
    return torch.tensor([*values, 0.0], dtype=torch.float32)


def _computed(name: str, n: int, sigmas: Tensor, options: ScheduleOptions) -> Tensor:
    """A1111's schedules in float32 and in k-diffusion's (or A1111's) order of operations: one
    unit in the last place of σ moves the UNet's timestep near t = 999 by more than float32
    resolves, so the formulas of :func:`promptweights.samplers.schedule_sigmas` are not enough."""
    lo = sigmas[0].item() if options.sigma_min is None else options.sigma_min
    hi = sigmas[-1].item() if options.sigma_max is None else options.sigma_max
    if name == "karras":
        rho = 7.0 if options.rho is None else options.rho
        lo_r, hi_r = lo ** (1 / rho), hi ** (1 / rho)
        return _zero_ended((hi_r + torch.linspace(0, 1, n) * (lo_r - hi_r)) ** rho)
    if name == "exponential":
        return _zero_ended(torch.linspace(math.log(hi), math.log(lo), n).exp())
    if name == "polyexponential":
        ramp = torch.linspace(1, 0, n) ** (1.0 if options.rho is None else options.rho)
        return _zero_ended(torch.exp(ramp * (math.log(hi) - math.log(lo)) + math.log(lo)))
    if name == "uniform":
        return _zero_ended(t_to_sigma(torch.linspace(len(sigmas) - 1, 0, n), sigmas))
    if name in ("sgm_uniform", "normal"):
        return _normal(n, sigmas, lo, hi, sgm=name == "sgm_uniform")
    if name == "align_your_steps":
        return _align_your_steps(n, options.sdxl)
    if name == "simple":
        return _simple(n, sigmas)
    if name == "ddim":
        return _ddim_uniform(n, sigmas)
    if name == "kl_optimal":
        return _kl_optimal(n, lo, hi)
    return _beta(n, lo, hi, options.beta_alpha, options.beta_beta)


def sampler_sigmas(
    choice: SamplerChoice,
    steps: int,
    sigmas: Tensor,
    *,
    discard_penultimate: bool = False,
    options: ScheduleOptions | None = None,
) -> Tensor:
    """The σ schedule A1111 runs ``choice`` on: ``steps`` values then 0 (float32).

    As A1111's ``KDiffusionSampler.get_sigmas``: the "Automatic" schedule is the sampler's default
    (the model's own Uniform schedule for samplers without one); with ``discard_penultimate``
    (DPM2, DPM2 a, or the infotext's ``Discard penultimate sigma: True``) ``steps + 1`` values are
    computed and the second-to-last dropped. Every schedule type of A1111 v1.10.1 is computed, with
    its quirks: DDIM's may have more values than ``steps`` (the table's stride), KL Optimal ends at
    σmin instead of 0, Align Your Steps ignores the σ range.

    Args:
        choice: from :func:`promptweights.samplers.resolve`.
        steps: the number of steps.
        sigmas: the model's σ table (:func:`model_sigmas`, float32, ascending).
        discard_penultimate: drop the second-to-last σ.
        options: the model kind and the schedule settings (:class:`ScheduleOptions`).

    Raises:
        UnknownNameError: a schedule A1111 does not have.
        InvalidArgumentError: a sampler with its own timesteps (DDIM, PLMS…).

    >>> from promptweights.samplers import resolve
    >>> table = model_sigmas(alphas_cumprod({}))
    >>> [round(s, 4) for s in sampler_sigmas(resolve("Euler", "Karras"), 2, table).tolist()]
    [14.6146, 0.0292, 0.0]
    >>> ays = sampler_sigmas(resolve("Euler", "Align Your Steps"), 3, table)
    >>> [round(s, 3) for s in ays.tolist()]
    [14.615, 1.396, 0.029, 0.0]
    """
    name = choice.schedule_name
    if name is None:
        raise InvalidArgumentError(f"{choice.sampler} runs on timesteps, not a σ schedule")
    if steps < 1:
        raise InvalidArgumentError(f"steps must be at least 1, not {steps}")
    if name not in SCHEDULES:
        raise UnknownNameError(
            "schedule type A1111 sampling runs here", choice.schedule or name, SCHEDULE_LABELS
        )
    n = steps + 1 if discard_penultimate else steps
    result = _computed(name, n, sigmas.float().cpu(), options or ScheduleOptions())
    if discard_penultimate:
        result = torch.cat([result[:-2], result[-1:]])
    return result


#: The σ schedules computed here (A1111's internal names), and their labels.
SCHEDULES = (
    "uniform",
    "karras",
    "exponential",
    "polyexponential",
    "sgm_uniform",
    "kl_optimal",
    "align_your_steps",
    "simple",
    "normal",
    "ddim",
    "beta",
)
SCHEDULE_LABELS = (
    "Uniform",
    "Karras",
    "Exponential",
    "Polyexponential",
    "SGM Uniform",
    "KL Optimal",
    "Align Your Steps",
    "Simple",
    "Normal",
    "DDIM",
    "Beta",
)


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
