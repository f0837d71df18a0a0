"""A1111's samplers, step by step: k-diffusion's algorithms and A1111's DDIM and PLMS.

Each sampler is a generator. It yields :class:`Call` when it needs the model at ``(x, sigma)``
and is sent back the model's answer (the CFG-combined *denoised* latents for k-diffusion
samplers, the CFG-combined *noise prediction* for DDIM and PLMS, whose ``sigma`` is a timestep);
it yields :class:`Step` with the latents after each of its steps; it returns the final latents.
:func:`drive` runs one against a model function. Nothing here knows about UNets, prompts or
seeds: the per-step noise comes from a :data:`NoiseFn` (A1111's ``ImageRNG.next()`` for ancestral
samplers, a Brownian tree for the SDE ones), so the same code serves
:func:`promptweights.a1111.run.sample` and the diffusers scheduler
:class:`promptweights.a1111.scheduler.A1111Scheduler`.

The update rules are k-diffusion's (``sample_euler``, ``sample_dpmpp_3m_sde``…, as A1111 v1.10.1
calls them, with its options ``eta``, ``s_noise``, ``s_churn``/``s_tmin``/``s_tmax``) and
A1111's own ``sd_samplers_timesteps_impl`` for DDIM and PLMS; the code is written here.

>>> import torch
>>> sigmas = torch.tensor([2.0, 1.0, 0.0])
>>> drive(SAMPLERS["Euler"].run(torch.ones(1), sigmas, Options(), None), lambda x, s: x * 0)
tensor([0.])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "SAMPLERS",
    "Call",
    "NoiseFn",
    "Options",
    "SamplerSpec",
    "Step",
    "drive",
    "lms_coefficient",
]

#: ``noise(sigma, sigma_next)``: standard normal noise shaped like the latents.
NoiseFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True, slots=True)
class Call:
    """The sampler needs the model at ``x`` and ``sigma`` (a timestep for DDIM and PLMS)."""

    x: Tensor
    sigma: Tensor


@dataclass(frozen=True, slots=True)
class Step:
    """The latents after step ``index`` (0-based) of the sampler's own loop."""

    index: int
    x: Tensor


Event = Call | Step
SamplerGen = Generator[Event, Tensor | None, Tensor]


@dataclass(frozen=True, slots=True)
class Options:
    """A1111's sampler options (``Eta``, ``Sigma churn``…; A1111's defaults).

    ``eta`` None means the sampler's default: 1 for k-diffusion samplers, 0 for DDIM.
    """

    eta: float | None = None
    s_noise: float = 1.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    r: float = 0.5
    solver_type: str = "midpoint"


def drive(
    sampler: SamplerGen,
    model: Callable[[Tensor, Tensor], Tensor],
    on_step: Callable[[Step], None] | None = None,
) -> Tensor:
    """Run ``sampler`` with ``model(x, sigma)`` (``sigma`` one per row, as k-diffusion passes
    ``sigma * s_in``); ``on_step`` sees each :class:`Step`."""
    answer: Tensor | None = None
    try:
        while True:
            event = sampler.send(answer)
            if isinstance(event, Call):
                answer = model(event.x, event.sigma * event.x.new_ones([event.x.shape[0]]))
            else:
                answer = None
                if on_step is not None:
                    on_step(event)
    except StopIteration as stop:
        result: Tensor = stop.value
        return result


def _eta(options: Options, default: float = 1.0) -> float:
    return default if options.eta is None else options.eta


def _need(noise: NoiseFn | None) -> NoiseFn:
    if noise is None:
        raise ValueError("this sampler needs a noise function")
    return noise


def _ancestral(sigma: Tensor, sigma_to: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """k-diffusion's ``get_ancestral_step``: where to step down to, and how much noise to add."""
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    up = eta * (sigma_to**2 * (sigma**2 - sigma_to**2) / sigma**2) ** 0.5
    up = torch.minimum(sigma_to, up)
    return (sigma_to**2 - up**2) ** 0.5, up


def _churn(
    x: Tensor, sigmas: Tensor, i: int, options: Options, noise: NoiseFn | None
) -> tuple[Tensor, Tensor]:
    """Karras' churn (``s_churn``): raise σ a little and add matching noise. k-diffusion draws
    the noise at every step once churn is on (so A1111's noise sequence moves on every step)."""
    sigma = sigmas[i]
    steps = len(sigmas) - 1
    inside = options.s_tmin <= float(sigma) <= options.s_tmax
    gamma = min(options.s_churn / steps, 2**0.5 - 1) if inside else 0.0
    if options.s_churn <= 0:
        return x, sigma
    eps = _need(noise)(sigma, sigmas[i + 1]) * options.s_noise
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
    return x, sigma_hat


def _slope(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    return (x - denoised) / sigma


def euler(x: Tensor, sigmas: Tensor, options: Options, noise: NoiseFn | None) -> SamplerGen:
    """``sample_euler``."""
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, options, noise)
        denoised = yield Call(x, sigma_hat)
        assert denoised is not None
        x = x + _slope(x, sigma_hat, denoised) * (sigmas[i + 1] - sigma_hat)
        yield Step(i, x)
    return x


def euler_ancestral(
    x: Tensor, sigmas: Tensor, options: Options, noise: NoiseFn | None
) -> SamplerGen:
    """``sample_euler_ancestral``."""
    for i in range(len(sigmas) - 1):
        denoised = yield Call(x, sigmas[i])
        assert denoised is not None
        down, up = _ancestral(sigmas[i], sigmas[i + 1], _eta(options))
        x = x + _slope(x, sigmas[i], denoised) * (down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + _need(noise)(sigmas[i], sigmas[i + 1]) * options.s_noise * up
        yield Step(i, x)
    return x


def heun(x: Tensor, sigmas: Tensor, options: Options, noise: NoiseFn | None) -> SamplerGen:
    """``sample_heun``: the trapezoid rule, Euler on the last step."""
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, options, noise)
        denoised = yield Call(x, sigma_hat)
        assert denoised is not None
        d = _slope(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = yield Call(x_2, sigmas[i + 1])
            assert denoised_2 is not None
            x = x + (d + _slope(x_2, sigmas[i + 1], denoised_2)) / 2 * dt
        yield Step(i, x)
    return x


def _log_midpoint(a: Tensor, b: Tensor) -> Tensor:
    return a.log().lerp(b.log(), 0.5).exp()


def dpm_2(x: Tensor, sigmas: Tensor, options: Options, noise: NoiseFn | None) -> SamplerGen:
    """``sample_dpm_2``: a midpoint step at the geometric mean of σ."""
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, options, noise)
        denoised = yield Call(x, sigma_hat)
        assert denoised is not None
        d = _slope(x, sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            mid = _log_midpoint(sigma_hat, sigmas[i + 1])
            x_2 = x + d * (mid - sigma_hat)
            denoised_2 = yield Call(x_2, mid)
            assert denoised_2 is not None
            x = x + _slope(x_2, mid, denoised_2) * (sigmas[i + 1] - sigma_hat)
        yield Step(i, x)
    return x


def dpm_2_ancestral(
    x: Tensor, sigmas: Tensor, options: Options, noise: NoiseFn | None
) -> SamplerGen:
    """``sample_dpm_2_ancestral``."""
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        denoised = yield Call(x, sigma)
        assert denoised is not None
        down, up = _ancestral(sigma, sigmas[i + 1], _eta(options))
        d = _slope(x, sigma, denoised)
        if down == 0:
            x = x + d * (down - sigma)
        else:
            mid = _log_midpoint(sigma, down)
            x_2 = x + d * (mid - sigma)
            denoised_2 = yield Call(x_2, mid)
            assert denoised_2 is not None
            x = x + _slope(x_2, mid, denoised_2) * (down - sigma)
            x = x + _need(noise)(sigma, sigmas[i + 1]) * options.s_noise * up
        yield Step(i, x)
    return x


def lms_coefficient(order: int, t: list[float], i: int, j: int) -> float:
    """∫ from t[i] to t[i+1] of the Lagrange basis polynomial of node ``t[i-j]`` over the nodes
    ``t[i]…t[i-order+1]``, integrated exactly (k-diffusion integrates it numerically).

    >>> round(lms_coefficient(2, [3.0, 2.0, 1.0], 1, 0), 6)
    -1.5
    """
    nodes = [t[i - k] for k in range(order)]
    coeffs = [1.0]  # polynomial in tau, lowest degree first
    for k, node in enumerate(nodes):
        if k == j:
            continue
        scale = 1.0 / (nodes[j] - node)
        shifted = [0.0] * (len(coeffs) + 1)
        for power, c in enumerate(coeffs):
            shifted[power + 1] += c * scale
            shifted[power] -= c * node * scale
        coeffs = shifted

    def antiderivative(tau: float) -> float:
        return sum(c * tau ** (p + 1) / (p + 1) for p, c in enumerate(coeffs))

    return antiderivative(t[i + 1]) - antiderivative(t[i])


def lms(x: Tensor, sigmas: Tensor, options: Options, noise: NoiseFn | None) -> SamplerGen:
    """``sample_lms`` (order 4)."""
    t = [float(s) for s in sigmas]
    slopes: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = yield Call(x, sigmas[i])
        assert denoised is not None
        slopes = [*slopes[-3:], _slope(x, sigmas[i], denoised)]
        order = min(i + 1, 4)
        coeffs = [lms_coefficient(order, t, i, j) for j in range(order)]
        update = sum(
            (c * d for c, d in zip(coeffs, reversed(slopes), strict=False)), torch.zeros_like(x)
        )
        x = x + update
        yield Step(i, x)
    return x


def _t(sigma: Tensor) -> Tensor:
    return sigma.log().neg()


def _sigma(t: Tensor) -> Tensor:
    return t.neg().exp()


def dpmpp_2s_ancestral(
    x: Tensor, sigmas: Tensor, options: Options, noise: NoiseFn | None
) -> SamplerGen:
    """``sample_dpmpp_2s_ancestral``."""
    for i in range(len(sigmas) - 1):
        denoised = yield Call(x, sigmas[i])
        assert denoised is not None
        down, up = _ancestral(sigmas[i], sigmas[i + 1], _eta(options))
        if down == 0:
            x = x + _slope(x, sigmas[i], denoised) * (down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(down)
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (_sigma(s) / _sigma(t)) * x - (-h * 0.5).expm1() * denoised
            denoised_2 = yield Call(x_2, _sigma(s))
            assert denoised_2 is not None
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + _need(noise)(sigmas[i], sigmas[i + 1]) * options.s_noise * up
        yield Step(i, x)
    return x


def dpmpp_sde(x: Tensor, sigmas: Tensor, options: Options, noise: NoiseFn | None) -> SamplerGen:
    """``sample_dpmpp_sde`` (``r`` = ½), noise from a Brownian tree."""
    eta, r = _eta(options), options.r
    for i in range(len(sigmas) - 1):
        denoised = yield Call(x, sigmas[i])
        assert denoised is not None
        if sigmas[i + 1] == 0:
            x = x + _slope(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            yield Step(i, x)
            continue
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        down, up = _ancestral(_sigma(t), _sigma(s), eta)
        s_ = _t(down)
        x_2 = (_sigma(s_) / _sigma(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + _need(noise)(_sigma(t), _sigma(s)) * options.s_noise * up
        denoised_2 = yield Call(x_2, _sigma(s))
        assert denoised_2 is not None
        down, up = _ancestral(_sigma(t), _sigma(t_next), eta)
        t_next_ = _t(down)
        fac = 1 / (2 * r)
        mixed = (1 - fac) * denoised + fac * denoised_2
        x = (_sigma(t_next_) / _sigma(t)) * x - (t - t_next_).expm1() * mixed
        x = x + _need(noise)(_sigma(t), _sigma(t_next)) * options.s_noise * up
        yield Step(i, x)
    return x


def dpmpp_2m(x: Tensor, sigmas: Tensor, options: Options, noise: NoiseFn | None) -> SamplerGen:
    """``sample_dpmpp_2m``."""
    old: Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = yield Call(x, sigmas[i])
        assert denoised is not None
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        estimate = denoised
        if old is not None and sigmas[i + 1] != 0:
            r = (t - _t(sigmas[i - 1])) / h
            estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old
        x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * estimate
        old = denoised
        yield Step(i, x)
    return x


def dpmpp_2m_sde(x: Tensor, sigmas: Tensor, options: Options, noise: NoiseFn | None) -> SamplerGen:
    """``sample_dpmpp_2m_sde`` (``solver_type`` midpoint or heun), noise from a Brownian tree."""
    if options.solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', not {options.solver_type!r}")
    eta = _eta(options)
    old: Tensor | None = None
    h_last: Tensor | None = None
    for i in range(len(sigmas) - 1):
        denoised = yield Call(x, sigmas[i])
        assert denoised is not None
        h = h_last
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t(sigmas[i + 1]) - _t(sigmas[i])
            eta_h = eta * h
            decay = (-h - eta_h).expm1().neg()
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + decay * denoised
            if old is not None and h_last is not None:
                r = h_last / h
                if options.solver_type == "heun":
                    x = x + (decay / (-h - eta_h) + 1) * (1 / r) * (denoised - old)
                else:
                    x = x + 0.5 * decay * (1 / r) * (denoised - old)
            if eta:
                spread = (-2 * eta_h).expm1().neg().sqrt()
                step_noise = _need(noise)(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
                x = x + step_noise * spread * options.s_noise
        old, h_last = denoised, h
        yield Step(i, x)
    return x


def _third_order(
    x: Tensor,
    denoised: Tensor,
    history: list[Tensor],
    steps: list[Tensor],
    h: Tensor,
    h_eta: Tensor,
) -> Tensor:
    """DPM-Solver++(3M)'s correction from the last two denoised estimates (or one)."""
    phi_2 = h_eta.neg().expm1() / h_eta + 1
    if len(history) == 1:
        return x + phi_2 * ((denoised - history[0]) / (steps[0] / h))
    r0, r1 = steps[0] / h, steps[1] / h
    d1_0 = (denoised - history[0]) / r0
    d1_1 = (history[0] - history[1]) / r1
    d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi_3 = phi_2 / h_eta - 0.5
    result: Tensor = x + phi_2 * d1 - phi_3 * d2
    return result


def dpmpp_3m_sde(x: Tensor, sigmas: Tensor, options: Options, noise: NoiseFn | None) -> SamplerGen:
    """``sample_dpmpp_3m_sde``, noise from a Brownian tree."""
    eta = _eta(options)
    history: list[Tensor] = []  # the last two denoised estimates, newest first
    steps: list[Tensor] = []  # the last two log-σ steps, newest first
    h = torch.zeros(())
    for i in range(len(sigmas) - 1):
        denoised = yield Call(x, sigmas[i])
        assert denoised is not None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t(sigmas[i + 1]) - _t(sigmas[i])
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if history:
                x = _third_order(x, denoised, history, steps, h, h_eta)
            if eta:
                spread = (-2 * h * eta).expm1().neg().sqrt()
                step_noise = _need(noise)(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
                x = x + step_noise * spread * options.s_noise
        history = [denoised, *history[:1]]
        steps = [h, *steps[:1]]
        yield Step(i, x)
    return x


# --- A1111's timestep samplers: the model answers with the noise prediction ----------------------


def _timestep_tables(alphas_cumprod: Tensor, timesteps: Tensor) -> tuple[Tensor, Tensor]:
    """ᾱ at each timestep, and ᾱ at the timestep before it (index 0: ᾱ[0]) in float64."""
    alphas = alphas_cumprod[timesteps]
    previous = torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))
    return alphas, alphas_cumprod[previous].to(torch.float64)


def ddim(
    x: Tensor,
    timesteps: Tensor,
    alphas_cumprod: Tensor,
    options: Options,
    noise: NoiseFn | None,
) -> SamplerGen:
    """A1111's ``ddim``: ``len(timesteps) - 1`` calls, from the last timestep down to the second."""
    eta = _eta(options, default=0.0)
    alphas, alphas_prev = _timestep_tables(alphas_cumprod, timesteps)
    a64 = alphas.to(torch.float64)
    sigmas = eta * ((1 - alphas_prev) / (1 - a64) * (1 - a64 / alphas_prev)).sqrt()
    ones = x.new_ones([x.shape[0]]).view(-1, *([1] * (x.ndim - 1)))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        eps = yield Call(x, timesteps[index].to(x.dtype))
        assert eps is not None
        a_t = alphas[index].item() * ones
        a_prev = alphas_prev[index].item() * ones
        sigma_t = sigmas[index].item() * ones
        pred_x0 = (x - (1 - alphas[index]).sqrt().item() * ones * eps) / a_t.sqrt()
        direction = (1.0 - a_prev - sigma_t**2).sqrt() * eps
        x = a_prev.sqrt() * pred_x0 + direction
        if eta:
            x = x + sigma_t * _need(noise)(timesteps[index], timesteps[index - 1])
        yield Step(i, x)
    return x


def plms(
    x: Tensor,
    timesteps: Tensor,
    alphas_cumprod: Tensor,
    options: Options,
    noise: NoiseFn | None,
) -> SamplerGen:
    """A1111's ``plms``: a pseudo improved-Euler first step (two calls), then Adams–Bashforth
    of order 2, 3, 4 on the noise predictions."""
    alphas, alphas_prev = _timestep_tables(alphas_cumprod, timesteps)
    ones = x.new_ones([x.shape[0]]).view(-1, *([1] * (x.ndim - 1)))

    def advance(x: Tensor, eps: Tensor, index: int) -> Tensor:
        a_t = alphas[index].item() * ones
        a_prev = alphas_prev[index].item() * ones
        pred_x0 = (x - (1 - alphas[index]).sqrt().item() * ones * eps) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * eps

    history: list[Tensor] = []
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        eps = yield Call(x, timesteps[index].to(x.dtype))
        assert eps is not None
        if not history:
            x_next = advance(x, eps, index)
            eps_next = yield Call(x_next, timesteps[max(index - 1, 0)].to(x.dtype))
            assert eps_next is not None
            combined = (eps + eps_next) / 2
        elif len(history) == 1:
            combined = (3 * eps - history[-1]) / 2
        elif len(history) == 2:
            combined = (23 * eps - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            combined = (55 * eps - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
        x = advance(x, combined, index)
        history = [*history[-2:], eps]
        yield Step(i, x)
    return x


# --- the table ------------------------------------------------------------------------------------

KSampler = Callable[[Tensor, Tensor, Options, NoiseFn | None], SamplerGen]
TimestepSampler = Callable[[Tensor, Tensor, Tensor, Options, NoiseFn | None], SamplerGen]


@dataclass(frozen=True, slots=True)
class SamplerSpec:
    """How A1111 runs one sampler (``sd_samplers_kdiffusion`` / ``sd_samplers_timesteps``).

    Attributes:
        name: A1111's sampler name.
        k_sampler: the k-diffusion sampler, or None for a timestep sampler.
        timestep_sampler: DDIM / PLMS.
        noise: ``"ancestral"`` (A1111's ImageRNG, ENSD applies), ``"brownian"`` (a seeded Brownian
            tree per image), ``"churn"`` (only when ``s_churn`` > 0) or ``"eta"`` (DDIM, when
            ``eta`` > 0).
        discard_penultimate: A1111 computes ``steps + 1`` sigmas and drops the second-to-last.
        solver_type: for DPM++ 2M SDE Heun.
    """

    name: str
    k_sampler: KSampler | None = None
    timestep_sampler: TimestepSampler | None = None
    noise: str = ""
    discard_penultimate: bool = False
    solver_type: str | None = None
    extra: tuple[str, ...] = field(default=())

    def run(self, x: Tensor, sigmas: Tensor, options: Options, noise: NoiseFn | None) -> SamplerGen:
        """Start the k-diffusion sampler on ``x`` (already scaled by ``sigmas[0]``)."""
        if self.k_sampler is None:
            raise ValueError(f"{self.name} is a timestep sampler: use run_timesteps")
        return self.k_sampler(x, sigmas, options, noise)

    def run_timesteps(
        self,
        x: Tensor,
        timesteps: Tensor,
        alphas_cumprod: Tensor,
        options: Options,
        noise: NoiseFn | None,
    ) -> SamplerGen:
        """Start DDIM or PLMS on ``x`` (unscaled noise)."""
        if self.timestep_sampler is None:
            raise ValueError(f"{self.name} is a k-diffusion sampler: use run")
        return self.timestep_sampler(x, timesteps, alphas_cumprod, options, noise)


_CHURN = ("s_churn", "s_tmin", "s_tmax", "s_noise")

#: The samplers this module runs, by A1111 name.
SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        SamplerSpec("Euler", euler, noise="churn", extra=_CHURN),
        SamplerSpec("Euler a", euler_ancestral, noise="ancestral", extra=("eta", "s_noise")),
        SamplerSpec("LMS", lms),
        SamplerSpec("Heun", heun, noise="churn", extra=_CHURN),
        SamplerSpec("DPM2", dpm_2, noise="churn", discard_penultimate=True, extra=_CHURN),
        SamplerSpec(
            "DPM2 a",
            dpm_2_ancestral,
            noise="ancestral",
            discard_penultimate=True,
            extra=("s_noise",),
        ),
        SamplerSpec("DPM++ 2S a", dpmpp_2s_ancestral, noise="ancestral", extra=("eta", "s_noise")),
        SamplerSpec("DPM++ 2M", dpmpp_2m),
        SamplerSpec("DPM++ SDE", dpmpp_sde, noise="brownian", extra=("eta", "s_noise", "r")),
        SamplerSpec("DPM++ 2M SDE", dpmpp_2m_sde, noise="brownian", extra=("eta", "s_noise")),
        SamplerSpec(
            "DPM++ 2M SDE Heun",
            dpmpp_2m_sde,
            noise="brownian",
            solver_type="heun",
            extra=("eta", "s_noise"),
        ),
        SamplerSpec(
            "DPM++ 3M SDE",
            dpmpp_3m_sde,
            noise="brownian",
            discard_penultimate=True,
            extra=("eta", "s_noise"),
        ),
        SamplerSpec("DDIM", timestep_sampler=ddim, noise="eta", extra=("eta",)),
        SamplerSpec("PLMS", timestep_sampler=plms),
    )
}
