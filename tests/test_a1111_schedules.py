"""A1111 v1.10.1's σ schedule types (issue 18): every one computed as A1111 does.

promptweights.a1111.schedules.sampler_sigmas is compared with a second reading of A1111's
sd_schedulers.py (tests/_a1111_schedule_reference.py: numpy, torch and k-diffusion's
CompVisDenoiser) within 1e-6 relative, and with values transcribed from A1111's source or worked
out by hand. The Beta schedule's quantile function is checked against closed forms and, where scipy
is installed (A1111 calls scipy.stats.beta.ppf), against scipy.
"""

from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from _a1111_schedule_reference import AYS_SD15, AYS_SDXL, a1111_sigmas
from _a1111_schedule_reference import beta as reference_beta

from promptweights.a1111._beta import beta_cdf, beta_ppf
from promptweights.a1111.schedules import (
    ScheduleOptions,
    alphas_cumprod,
    model_sigmas,
    sampler_sigmas,
)
from promptweights.samplers import resolve

SD15 = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
NEW = ["Align Your Steps", "Simple", "Normal", "DDIM", "KL Optimal"]
OLD = ["Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform"]
INTERNAL = {
    "Align Your Steps": "align_your_steps",
    "Simple": "simple",
    "Normal": "normal",
    "DDIM": "ddim",
    "KL Optimal": "kl_optimal",
    "Uniform": "uniform",
    "Karras": "karras",
    "Exponential": "exponential",
    "Polyexponential": "polyexponential",
    "SGM Uniform": "sgm_uniform",
    "Beta": "beta",
}


@pytest.fixture(scope="module")
def table() -> torch.Tensor:
    return model_sigmas(alphas_cumprod(SD15))


@pytest.fixture(scope="module")
def kdiff() -> tuple[Any, Any]:
    """k-diffusion's sampling module and its CompVisDenoiser around ldm's ᾱ (SD 1.5 betas)."""
    if importlib.util.find_spec("k_diffusion") is None:
        pytest.skip("k-diffusion is not installed")
    from _a1111_sampling_reference import CompVisModel, ldm_alphas_cumprod, load_k_diffusion

    sampling, external = load_k_diffusion()
    config = SimpleNamespace(num_train_timesteps=1000, **SD15)
    return sampling, external.CompVisDenoiser(CompVisModel(None, ldm_alphas_cumprod(config)))


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.dtype == torch.float32
    assert ours.shape == theirs.shape, (ours.tolist(), theirs.tolist())
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("label", NEW + OLD)
@pytest.mark.parametrize("steps", [1, 3, 7, 11, 20])
@pytest.mark.parametrize("discard", [False, True])
def test_schedule_matches_a1111(
    table: torch.Tensor, kdiff: Any, label: str, steps: int, discard: bool
) -> None:
    """Each schedule type, with and without "discard penultimate sigma" (steps + 1 computed, the
    second-to-last dropped), as A1111's get_sigmas computes it."""
    sampling, wrap = kdiff
    n = steps + 1 if discard else steps
    theirs = a1111_sigmas(INTERNAL[label], n, wrap, sampling)
    if discard:
        theirs = torch.cat([theirs[:-2], theirs[-1:]])
    ours = sampler_sigmas(resolve("Euler", label), steps, table, discard_penultimate=discard)
    _close(ours, theirs)


@pytest.mark.parametrize("steps", [4, 11, 30])
def test_align_your_steps_picks_the_sdxl_table_for_sdxl(
    table: torch.Tensor, kdiff: Any, steps: int
) -> None:
    sampling, wrap = kdiff
    theirs = a1111_sigmas("align_your_steps", steps, wrap, sampling, sdxl=True)
    ours = sampler_sigmas(
        resolve("Euler", "Align Your Steps"), steps, table, options=ScheduleOptions(sdxl=True)
    )
    _close(ours, theirs)
    sd15 = sampler_sigmas(resolve("Euler", "Align Your Steps"), steps, table)
    assert not torch.equal(ours, sd15)


def test_transcribed_values(table: torch.Tensor) -> None:
    """Values read off A1111's source: AYS at 11 steps is NVIDIA's table as is; KL Optimal ends
    at σmin (A1111 appends no 0); DDIM's stride 1000 // 7 = 142 gives 8 σ for 7 steps, the first
    at t = 1 + 7·142 = 995; Simple's first σ is the table's top; Normal starts at σmax."""
    for sdxl, expected in ((False, AYS_SD15), (True, AYS_SDXL)):
        ays = sampler_sigmas(
            resolve("Euler", "Align Your Steps"), 11, table, options=ScheduleOptions(sdxl=sdxl)
        )
        assert ays.tolist() == torch.tensor([*expected, 0.0]).tolist()
    kl = sampler_sigmas(resolve("Euler", "KL Optimal"), 4, table)
    assert len(kl) == 5
    assert kl[0].item() == pytest.approx(14.6146, abs=1e-4)
    assert kl[-1].item() == pytest.approx(0.0292, abs=1e-4)
    # tan of the midpoint of atan(σmax) and atan(σmin), worked out by hand for 2 steps
    middle = math.tan((math.atan(14.614643) + math.atan(0.029168)) / 2)
    kl2 = sampler_sigmas(resolve("Euler", "KL Optimal"), 2, table)
    assert kl2[1].item() == pytest.approx(middle, rel=1e-5)
    ddim = sampler_sigmas(resolve("Euler", "DDIM"), 7, table)
    assert len(ddim) == 9
    assert ddim[0].item() == table[995].item()
    assert ddim[-2].item() == table[1].item()
    simple = sampler_sigmas(resolve("Euler", "Simple"), 4, table)
    rows = [-1, -251, -501, -751]  # stride 1000 / 4 from the top
    assert simple.tolist() == [*(table[i].item() for i in rows), 0.0]
    normal = sampler_sigmas(resolve("Euler", "Normal"), 5, table)
    assert normal[0].item() == pytest.approx(14.6146, abs=1e-4)
    assert normal[-2].item() == pytest.approx(0.0292, abs=1e-4)


def _scipy_ppf(alpha: float, beta: float) -> Any:
    stats = pytest.importorskip("scipy.stats")  # only this cross-check needs scipy
    return lambda q: float(stats.beta.ppf(q, alpha, beta))


@pytest.mark.parametrize(("alpha", "beta"), [(0.6, 0.6), (0.5, 2.0), (3.0, 0.7)])
@pytest.mark.parametrize("steps", [1, 2, 9, 30])
def test_beta_schedule_matches_scipy(table: torch.Tensor, alpha: float, beta: float, steps: int):
    lo, hi = table[0].item(), table[-1].item()
    theirs = reference_beta(steps, lo, hi, _scipy_ppf(alpha, beta))
    options = ScheduleOptions(beta_alpha=alpha, beta_beta=beta)
    _close(sampler_sigmas(resolve("Euler", "Beta"), steps, table, options=options), theirs)


def test_beta_schedule_hand_values(table: torch.Tensor) -> None:
    """Beta(½, ½) is the arcsine law, quantile sin²(πq/2); Beta(0.6, 0.6) is symmetric, so its
    median is ½ (3 steps: σmax, the middle of the range, σmin, then 0)."""
    lo, hi = table[0].item(), table[-1].item()
    arcsine = reference_beta(12, lo, hi, lambda q: math.sin(math.pi * q / 2) ** 2)
    options = ScheduleOptions(beta_alpha=0.5, beta_beta=0.5)
    _close(sampler_sigmas(resolve("Euler", "Beta"), 12, table, options=options), arcsine)
    three = sampler_sigmas(resolve("Euler", "Beta"), 3, table)
    expected = torch.tensor([hi, lo + 0.5 * (hi - lo), lo, 0.0], dtype=torch.float32)
    torch.testing.assert_close(three, expected, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("q", [1e-9, 1e-4, 0.01, 0.2, 0.5, 0.77, 0.999, 1 - 1e-9])
def test_beta_quantile_closed_forms(q: float) -> None:
    assert beta_ppf(q, 0.5, 0.5) == pytest.approx(math.sin(math.pi * q / 2) ** 2, rel=1e-12)
    assert beta_ppf(q, 2.5, 1.0) == pytest.approx(q ** (1 / 2.5), rel=1e-12)
    assert beta_ppf(q, 1.0, 0.3) == pytest.approx(1 - (1 - q) ** (1 / 0.3), rel=1e-9, abs=1e-15)
    x = math.sin(math.pi * q / 2) ** 2
    if x < 1.0:  # near q = 1, x rounds to 1
        assert beta_cdf(x, 0.5, 0.5) == pytest.approx(q, rel=1e-12)
    assert beta_ppf(0.0, 0.6, 0.6) == 0.0
    assert beta_ppf(1.0, 0.6, 0.6) == 1.0


def test_beta_quantile_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")  # only this cross-check needs scipy
    for alpha, beta in [(0.6, 0.6), (0.2, 0.9), (4.0, 4.0), (7.5, 0.35)]:
        for q in [1e-7, 1e-3, 0.05, 0.3, 0.5, 0.61, 0.9, 0.9999]:
            expected = float(stats.beta.ppf(q, alpha, beta))
            assert beta_ppf(q, alpha, beta) == pytest.approx(expected, rel=1e-10), (alpha, beta, q)


def test_schedule_settings_from_the_infotext() -> None:
    """A1111 writes Beta's alpha and beta, and a σ range or ρ that differs from the model's; the
    re-run reads them, and an infotext's schedule type resolves to the schedule computed here."""
    from promptweights.a1111.plan import read_settings, unreproducible
    from promptweights.infotext import parse

    text = (
        "a cat\nSteps: 4, Sampler: Euler, Schedule type: Beta, CFG scale: 5, Seed: 1, "
        "Size: 64x64, Beta schedule alpha: 0.5, Beta schedule beta: 0.7, Schedule rho: 5, "
        "Schedule min sigma: 0.1, Schedule max sigma: 10"
    )
    params = parse(text)
    choice = params.sampler_choice()
    assert choice.schedule == "Beta"
    assert choice.schedule_name == "beta"
    options = read_settings(params, choice).schedule
    assert options == ScheduleOptions(
        sigma_min=0.1, sigma_max=10.0, rho=5.0, beta_alpha=0.5, beta_beta=0.7
    )
    assert unreproducible(params) == [unreproducible(params)[-1]]  # only the RNG note remains
    assert unreproducible(params)[0][0] == "RNG"


def test_sigma_range_and_rho(table: torch.Tensor, kdiff: Any) -> None:
    """``Schedule min/max sigma`` replace the model's range for the schedules that take one,
    ``Schedule rho`` Karras' ρ (k-diffusion's functions with A1111's keyword arguments)."""
    sampling, wrap = kdiff
    options = ScheduleOptions(sigma_min=0.1, sigma_max=10.0, rho=5.0)
    karras = sampler_sigmas(resolve("Euler", "Karras"), 6, table, options=options)
    _close(karras, sampling.get_sigmas_karras(n=6, sigma_min=0.1, sigma_max=10.0, rho=5.0))
    poly = sampler_sigmas(resolve("Euler", "Polyexponential"), 6, table, options=options)
    _close(poly, sampling.get_sigmas_polyexponential(n=6, sigma_min=0.1, sigma_max=10.0, rho=5.0))
    exponential = sampler_sigmas(resolve("Euler", "Exponential"), 6, table, options=options)
    _close(exponential, sampling.get_sigmas_exponential(n=6, sigma_min=0.1, sigma_max=10.0))
    uniform = sampler_sigmas(resolve("Euler", "Uniform"), 6, table, options=options)
    _close(uniform, wrap.get_sigmas(6))  # A1111's Uniform ignores the range
