"""A diffusers-compatible scheduler that runs A1111's samplers inside a pipeline's own loop.

The pipeline calls ``set_timesteps``, multiplies its initial latents by ``init_noise_sigma``,
and at every loop iteration runs the UNet on ``scale_model_input(latents)`` at ``timesteps[i]``,
combines cond and uncond with its guidance scale and calls ``step``. :class:`A1111Scheduler` lists
*every model call* of the A1111 sampler as a timestep (second-order samplers call twice per step,
so ``timesteps`` is longer than the step count, as with diffusers' Heun), passes the UNet
k-diffusion's input scaling and fractional timesteps, turns each guided noise prediction into the
denoised latents k-diffusion's samplers take, and draws the per-step noise from A1111's
``ImageRNG`` (or the Brownian tree of the SDE samplers). The pipeline's guidance formula acts on
the noise prediction; A1111 combines the denoised latents, which is the same up to float rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from promptweights.errors import InvalidArgumentError
from promptweights.samplers import SamplerChoice

from . import schedules
from .samplers import SAMPLERS, Call, NoiseFn, Options, SamplerGen, SamplerSpec

__all__ = ["A1111Scheduler", "A1111SchedulerOutput", "initial_scale"]


@dataclass
class A1111SchedulerOutput:
    """What ``step`` returns with ``return_dict=True`` (diffusers' ``prev_sample``)."""

    prev_sample: Tensor


def initial_scale(sigmas: Tensor, sgm_noise_multiplier: bool = False) -> Tensor:
    """What A1111 multiplies the initial noise by: σ₀, or ``sqrt(1 + σ₀²)`` with its "SGM noise
    multiplier" (float32, as A1111 computes it)."""
    if sgm_noise_multiplier:
        return torch.sqrt(1.0 + sigmas[0] ** 2.0)
    return sigmas[0]


def _zero_noise(sigma: Tensor, sigma_next: Tensor) -> Tensor:
    return torch.zeros(())


class A1111Scheduler:
    """Runs an A1111 sampler step by step for a diffusers pipeline.

    Args:
        choice: the sampler and schedule (:func:`promptweights.samplers.resolve`).
        steps: the sampling steps (the pipeline must run this many: ``num_inference_steps``).
        config: the model's scheduler config (betas, prediction type); kept as ``config``.
        rng: A1111's ``ImageRNG`` whose first draw gave the initial latents; the ancestral
            samplers' per-step noise is its next draws.
        brownian: for the SDE samplers, ``brownian(x, sigmas)`` makes the Brownian-tree noise.
        options: eta, s_noise, churn…
        discard_penultimate: "Discard penultimate sigma" for any sampler.
        schedule: the σ schedule's settings (model kind for Align Your Steps, σ range, ρ, Beta's
            alpha and beta).
        sgm_noise_multiplier: A1111's "SGM noise multiplier": the initial noise is scaled by
            ``sqrt(1 + σ₀²)`` instead of σ₀ (k-diffusion samplers).
    """

    order = 1

    def __init__(
        self,
        choice: SamplerChoice,
        steps: int,
        config: Mapping[str, Any],
        rng: Any,
        *,
        brownian: Any = None,
        options: Options | None = None,
        discard_penultimate: bool = False,
        schedule: schedules.ScheduleOptions | None = None,
        sgm_noise_multiplier: bool = False,
    ) -> None:
        spec = SAMPLERS.get(choice.sampler)
        if spec is None:
            raise InvalidArgumentError(f"A1111 sampling does not run {choice.sampler} here")
        self.spec: SamplerSpec = spec
        self.choice = choice
        self.num_inference_steps = steps
        self.config = dict(config)
        self.alphas_cumprod = schedules.alphas_cumprod(self.config)
        self.sigma_table = schedules.model_sigmas(self.alphas_cumprod)
        self.v = self.config.get("prediction_type", "epsilon") == "v_prediction"
        self.rng = rng
        self.brownian = brownian
        options = options or Options()
        if spec.solver_type is not None:
            fields = {name: getattr(options, name) for name in Options.__slots__}
            options = Options(**{**fields, "solver_type": spec.solver_type})
        self.options = options
        self.discard = discard_penultimate or spec.discard_penultimate
        self.schedule = schedule or schedules.ScheduleOptions()
        self.grid = self._grid()
        calls = self._calls()
        self.call_sigmas = calls
        self.init_noise_sigma: Tensor | float = (
            initial_scale(self.grid, sgm_noise_multiplier) if self.is_k else 1.0
        )
        self.timesteps = self._model_times(calls)
        self._generator: SamplerGen | None = None
        self._pending: Call | None = None
        self._index = 0

    @property
    def is_k(self) -> bool:
        """A k-diffusion sampler (σ grid), not DDIM/PLMS (timesteps)."""
        return self.spec.k_sampler is not None

    def _grid(self) -> Tensor:
        if self.is_k:
            return schedules.sampler_sigmas(
                self.choice,
                self.num_inference_steps,
                self.sigma_table,
                discard_penultimate=self.discard,
                options=self.schedule,
            )
        return schedules.ddim_timesteps(self.num_inference_steps, discard_penultimate=self.discard)

    def _start(self, x: Tensor, noise: NoiseFn | None) -> SamplerGen:
        if self.is_k:
            return self.spec.run(x, self.grid, self.options, noise)
        return self.spec.run_timesteps(x, self.grid, self.alphas_cumprod, self.options, noise)

    def _calls(self) -> list[Tensor]:
        """σ (or timestep) of every model call: a dry run; the calls depend on the grid only."""
        x = torch.zeros(1)
        generator = self._start(x, _zero_noise)
        calls: list[Tensor] = []
        answer: Tensor | None = None
        try:
            while True:
                event = generator.send(answer)
                if isinstance(event, Call):
                    calls.append(event.sigma.reshape(()))
                    answer = torch.zeros(1)
                else:
                    answer = None
        except StopIteration:
            return calls

    def _model_times(self, calls: list[Tensor]) -> Tensor:
        stacked = torch.stack(calls).float()
        if self.is_k:
            return schedules.sigma_to_t(stacked, self.sigma_table)
        return stacked

    def set_timesteps(self, num_inference_steps: int, device: Any = None, **_: Any) -> None:
        """Restart at the first call; the step count must be the one this scheduler was made
        for (A1111's schedule, and prompt editing, depend on it)."""
        if num_inference_steps != self.num_inference_steps:
            raise InvalidArgumentError(
                f"this A1111 scheduler was set up for {self.num_inference_steps} steps, not "
                f"{num_inference_steps}"
            )
        self.timesteps = self.timesteps.to(device)
        self._generator = None
        self._pending = None
        self._index = 0

    @property
    def call_index(self) -> int:
        """The model call the pipeline makes next (0-based; A1111's denoiser step counter)."""
        return self._index

    @property
    def call_sigma(self) -> float:
        """σ of the next model call (its timestep for DDIM and PLMS), as A1111's denoiser sees
        it."""
        return float(self._sigma())

    def _sigma(self) -> Tensor:
        return self.call_sigmas[min(self._index, len(self.call_sigmas) - 1)]

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        """k-diffusion's ``c_in = 1 / sqrt(σ² + 1)`` (DDIM and PLMS: unscaled)."""
        if not self.is_k:
            return sample
        sigma = self._sigma().to(sample.device)
        scaled: Tensor = sample * (1 / (sigma**2 + 1) ** 0.5)
        return scaled

    def _answer(self, model_output: Tensor, call: Call) -> Tensor:
        out = model_output.to(torch.float32)
        if not self.is_k:
            if not self.v:
                return out
            t = int(call.sigma)
            a = self.alphas_cumprod[t].to(out.device)
            eps: Tensor = a.sqrt() * out + (1 - a).sqrt() * call.x
            return eps
        sigma = call.sigma.to(out.device)
        if self.v:
            v_out: Tensor = call.x * (1 / (sigma**2 + 1)) + out * (-sigma / (sigma**2 + 1) ** 0.5)
            return v_out
        denoised: Tensor = call.x + out * (-sigma)
        return denoised

    def _noise(self, x: Tensor) -> NoiseFn | None:
        if self.spec.noise == "brownian":
            noise: NoiseFn = self.brownian(x, self.grid.to(x.device))
            return noise
        if self.spec.noise:
            rng = self.rng
            return lambda sigma, sigma_next: rng.next().to(x)
        return None

    def step(
        self,
        model_output: Tensor,
        timestep: Any,
        sample: Tensor,
        return_dict: bool = True,
        **_: Any,
    ) -> Any:
        """Give the sampler the guided prediction of this call; return the latents of the next
        call (or the final latents after the last)."""
        if self._generator is None:
            x = sample.to(torch.float32)
            self.grid = self.grid.to(x.device)
            self._generator = self._start(x, self._noise(x))
            self._pending = self._advance(None)
        call = self._pending
        if call is None:
            raise InvalidArgumentError("the A1111 sampler has already finished")
        result = self._advance(self._answer(model_output, call))
        self._index += 1
        if isinstance(result, Call):
            self._pending = result
            prev = result.x
        else:
            self._pending = None
            prev = result
        prev = prev.to(sample.dtype)
        return A1111SchedulerOutput(prev) if return_dict else (prev,)

    def _advance(self, answer: Tensor | None) -> Any:
        """Send ``answer``; return the next :class:`Call`, or the final latents."""
        assert self._generator is not None
        try:
            event = self._generator.send(answer)
            while not isinstance(event, Call):
                event = self._generator.send(None)
        except StopIteration as stop:
            return stop.value
        return event

    def __len__(self) -> int:
        return len(self.call_sigmas)
