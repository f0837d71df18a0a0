"""A second reading of A1111 v1.10.1's σ schedules (modules/sd_schedulers.py), for the tests.

Written from A1111's description of each schedule, independently of promptweights.a1111.schedules:
numpy for what A1111 computes with numpy (Align Your Steps' log-linear interpolation, Beta's ramp),
torch float32 where A1111 uses torch, k-diffusion's CompVisDenoiser (its σ table, ``sigma_to_t``,
``t_to_sigma``, ``get_sigmas``) wherever A1111 asks the model wrapper, and a quantile function
passed in for Beta (scipy's ``beta.ppf``, as A1111 calls it, or a closed form).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

# NVIDIA's Align Your Steps tables as printed in A1111's sd_schedulers.py (transcribed).
AYS_SD15 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
AYS_SDXL = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]


def align_your_steps(n: int, sdxl: bool) -> torch.Tensor:
    table = list(AYS_SDXL if sdxl else AYS_SD15)
    if n == len(table):
        return torch.FloatTensor([*table, 0.0])
    xs = np.linspace(0, 1, len(table))
    ys = np.log(np.array(table)[::-1])
    interpolated = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1].copy()
    return torch.FloatTensor(np.append(interpolated, [0.0]))


def kl_optimal(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    low = torch.arctan(torch.tensor(sigma_min))
    high = torch.arctan(torch.tensor(sigma_max))
    i = torch.arange(n + 1)
    return torch.tan(i / n * low + (1.0 - i / n) * high)


def simple(n: int, wrap: Any) -> torch.Tensor:
    stride = len(wrap.sigmas) / n
    return torch.FloatTensor([float(wrap.sigmas[-(1 + int(x * stride))]) for x in range(n)] + [0.0])


def normal(n: int, wrap: Any, sigma_min: float, sigma_max: float, sgm: bool) -> torch.Tensor:
    start = wrap.sigma_to_t(torch.tensor(sigma_max))
    end = wrap.sigma_to_t(torch.tensor(sigma_min))
    ts = torch.linspace(start, end, n + 1)[:-1] if sgm else torch.linspace(start, end, n)
    return torch.FloatTensor([float(wrap.t_to_sigma(t)) for t in ts] + [0.0])


def ddim(n: int, wrap: Any) -> torch.Tensor:
    stride = max(len(wrap.sigmas) // n, 1)
    out = []
    x = 1
    while x < len(wrap.sigmas):
        out.append(float(wrap.sigmas[x]))
        x += stride
    return torch.FloatTensor([*out[::-1], 0.0])


def beta(n: int, sigma_min: float, sigma_max: float, ppf: Callable[[float], float]) -> torch.Tensor:
    ts = 1 - np.linspace(0, 1, n)
    return torch.FloatTensor([sigma_min + ppf(t) * (sigma_max - sigma_min) for t in ts] + [0.0])


def a1111_sigmas(
    schedule: str,
    n: int,
    wrap: Any,
    sampling: Any,
    *,
    sdxl: bool = False,
    ppf: Callable[[float], float] | None = None,
) -> torch.Tensor:
    """A1111's ``get_sigmas`` body for one schedule (without "discard penultimate")."""
    lo, hi = wrap.sigmas[0].item(), wrap.sigmas[-1].item()
    if schedule == "uniform":
        return wrap.get_sigmas(n)
    if schedule in ("karras", "exponential", "polyexponential"):
        return getattr(sampling, f"get_sigmas_{schedule}")(n=n, sigma_min=lo, sigma_max=hi)
    if schedule in ("sgm_uniform", "normal"):
        return normal(n, wrap, lo, hi, sgm=schedule == "sgm_uniform")
    if schedule == "align_your_steps":
        return align_your_steps(n, sdxl)
    if schedule == "kl_optimal":
        return kl_optimal(n, lo, hi)
    if schedule == "simple":
        return simple(n, wrap)
    if schedule == "ddim":
        return ddim(n, wrap)
    assert schedule == "beta"
    assert ppf is not None
    return beta(n, lo, hi, ppf)
