"""A second reading of how A1111 v1.10.1 samples, for tests/test_a1111_sampling.py.

Built independently of promptweights.a1111: k-diffusion's own sampling.py and external.py (the
PyPI package, loaded file by file because its package __init__ imports training code), driven the
way A1111's ``sd_samplers_kdiffusion`` / ``sd_samplers_common`` / ``sd_samplers_cfg_denoiser``
drive them, A1111's DDIM/PLMS loops and its published seed rules (``modules/rng.py``: one
generator per image, CPU or NV (``rng_philox.py``; the Philox block function is
tests/_a1111_noise_reference.py's, from the paper), variation seeds by slerp, ENSD re-seeding
after the first draw, the Brownian tree's ``_randn`` replaced by per-seed CPU noise), written out
here a second time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch


def load_k_diffusion() -> tuple[Any, Any]:
    """k-diffusion's ``sampling`` and ``external`` modules, without its package ``__init__``."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        raise ImportError("k-diffusion is not installed")
    if not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    name = "_kdiffusion_reference"
    if name in sys.modules:
        package = sys.modules[name]
        return package.sampling, package.external
    package = types.ModuleType(name)
    package.__path__ = [str(root)]
    utils = types.ModuleType(f"{name}.utils")

    def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims  # type: ignore[attr-defined]
    sys.modules[name] = package
    sys.modules[f"{name}.utils"] = utils
    package.utils = utils  # type: ignore[attr-defined]
    for sub in ("sampling", "external"):
        sub_spec = importlib.util.spec_from_file_location(f"{name}.{sub}", root / f"{sub}.py")
        assert sub_spec is not None
        assert sub_spec.loader is not None
        module = importlib.util.module_from_spec(sub_spec)
        sys.modules[f"{name}.{sub}"] = module
        sub_spec.loader.exec_module(module)
        setattr(package, sub, module)
    return package.sampling, package.external


# --- A1111's seed rules (modules/rng.py), CPU source ---------------------------------------------


def _slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    low_n = low / torch.norm(low, dim=1, keepdim=True)
    high_n = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_n * high_n).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    a = (torch.sin((1.0 - val) * omega) / so).unsqueeze(1)
    b = (torch.sin(val * omega) / so).unsqueeze(1)
    return a * low + b * high


def _nv_numbers_a1111(seed: int, draw: int, count: int) -> list[float]:
    """The NV source's draw ``draw`` after seeding: Philox4x32-10 (counter ``(draw, 0, i, 0)``,
    key = the seed's two words, tests/_a1111_noise_reference.py's block function from the paper)
    and A1111's ``box_muller``: cuRAND's 2**-32 and 2**-32·2π as float32 literals
    (``2.3283064e-10``, ``2.3283064e-10 * 6.2831855``), float64 arithmetic, float32 result."""
    from _a1111_noise_reference import philox_block

    inv = float(np.float32(2.3283064e-10))
    inv_2pi = float(np.float32(2.3283064e-10 * 6.2831855))
    key = (seed & 0xFFFFFFFF, seed >> 32)
    out = []
    for index in range(count):
        x, y, _, _ = philox_block((draw, 0, index, 0), key)
        u = x * inv + inv / 2
        v = y * inv_2pi + inv_2pi / 2
        out.append(float(np.float32(np.sqrt(-2.0 * np.log(u)) * np.sin(v))))
    return out


class _Stream:
    """One seeded generator of a source: torch's CPU generator, or NV's numbered draws."""

    def __init__(self, seed: int, source: str):
        self.seed, self.source, self.draws = seed, source, 0
        self.cpu = torch.Generator("cpu").manual_seed(seed) if source == "CPU" else None

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        if self.cpu is not None:
            return torch.randn(shape, generator=self.cpu)
        values = _nv_numbers_a1111(self.seed, self.draws, int(np.prod(shape)))
        self.draws += 1
        return torch.tensor(values, dtype=torch.float32).reshape(shape)


class ReferenceRNG:
    """One generator per image (CPU or NV); the first draw may be slerped with the variation
    seed's; with ENSD every generator is re-seeded with ``seed + ENSD`` after the first draw."""

    def __init__(
        self,
        shape: tuple[int, ...],
        seeds: list[int],
        subseeds: list[int],
        strength: float,
        ensd: int,
        source: str = "CPU",
    ):
        self.shape, self.seeds, self.subseeds = shape, seeds, subseeds
        self.strength, self.ensd, self.source = strength, ensd, source
        self.streams = [_Stream(s, source) for s in seeds]
        self.drawn = False

    def next(self) -> torch.Tensor:
        if not self.drawn:
            self.drawn = True
            out = []
            for i, stream in enumerate(self.streams):
                noise = stream.randn(self.shape)
                if self.subseeds and self.strength:
                    variation = _Stream(self.subseeds[i], self.source).randn(self.shape)
                    noise = _slerp(self.strength, noise, variation)
                out.append(noise)
            if self.ensd:
                self.streams = [_Stream(s + self.ensd, self.source) for s in self.seeds]
            return torch.stack(out)
        return torch.stack([stream.randn(self.shape) for stream in self.streams])


class TorchHijack:
    """A1111 replaces ``k_diffusion.sampling.torch`` so that ``randn_like`` is ``rng.next()``."""

    def __init__(self, rng: ReferenceRNG):
        self.rng = rng

    def __getattr__(self, item: str) -> Any:
        if item == "randn_like":
            return lambda x: self.rng.next()
        return getattr(torch, item)


@contextlib.contextmanager
def a1111_torchsde() -> Iterator[None]:
    """A1111's ``replace_torchsde_browinan``: the tree's noise is CPU ``randn`` seeded per call."""
    from torchsde._brownian import brownian_interval

    saved = brownian_interval._randn

    def randn(size: Any, dtype: Any, device: Any, seed: int) -> torch.Tensor:
        g = torch.Generator("cpu").manual_seed(int(seed))
        return torch.randn(size, generator=g).to(device=device, dtype=dtype)

    brownian_interval._randn = randn
    try:
        yield
    finally:
        brownian_interval._randn = saved


# --- the model, A1111's way ------------------------------------------------------------------


def ldm_alphas_cumprod(config: Any) -> torch.Tensor:
    """ldm's ``register_schedule``: betas in float64, cumprod in numpy float64, stored float32."""
    n = config.num_train_timesteps
    if config.beta_schedule == "scaled_linear":
        betas = np.linspace(config.beta_start**0.5, config.beta_end**0.5, n, dtype=np.float64) ** 2
    else:
        betas = np.linspace(config.beta_start, config.beta_end, n, dtype=np.float64)
    return torch.tensor(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)


class CompVisModel:
    """What k-diffusion's CompVisDenoiser wraps: ``alphas_cumprod`` and ``apply_model``."""

    def __init__(self, unet: Any, alphas_cumprod: torch.Tensor):
        self.unet = unet
        self.alphas_cumprod = alphas_cumprod

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=cond).sample


class ReferenceCFG:
    """A1111's CFGDenoiser with batch_cond_uncond on: [conds, unconds] in one batch, combined
    ``u + Σ w·scale·(c − u)``; Skip Early CFG and NGMS replace the uncond with the first cond.

    Cond and uncond of different lengths (``sd_samplers_cfg_denoiser.py``): with ``pad="v0"``
    ("Pad conds v0") the uncond's last vector is repeated up to the cond's length, or the uncond
    cut to it; with ``pad="empty"`` ("Pad conds") the shorter side gets ``empty`` (the encoded
    empty prompt, one window) repeated; otherwise they run apart: the conds in slices of
    ``2 · batch`` rows, then the unconds (not at all when skipped).
    """

    def __init__(
        self,
        inner: Any,
        conds_at: Any,
        scale: float,
        total: int,
        *,
        pad: str = "",
        empty: torch.Tensor | None = None,
        **opts: float,
    ):
        self.inner, self.conds_at, self.scale, self.total = inner, conds_at, scale, total
        self.skip_early = opts.get("skip_early_cfg", 0.0)
        self.s_min_uncond = opts.get("s_min_uncond", 0.0)
        self.pad, self.empty = pad, empty
        self.step = 0

    def _padded(self, tensor: torch.Tensor, uncond: torch.Tensor) -> Any:
        if tensor.shape[1] == uncond.shape[1]:
            return tensor, uncond
        if self.pad == "v0":
            if uncond.shape[1] < tensor.shape[1]:
                last = uncond[:, -1:].repeat([1, tensor.shape[1] - uncond.shape[1], 1])
                return tensor, torch.hstack([uncond, last])
            return tensor, uncond[:, : tensor.shape[1]]
        if self.pad == "empty":
            assert self.empty is not None
            repeats = (tensor.shape[1] - uncond.shape[1]) // self.empty.shape[1]
            if repeats < 0:
                extra = self.empty.repeat((tensor.shape[0], -repeats, 1))
                return torch.cat([tensor, extra], axis=1), uncond
            extra = self.empty.repeat((uncond.shape[0], repeats, 1))
            return tensor, torch.cat([uncond, extra], axis=1)
        return tensor, uncond

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        conds_list, tensor, uncond = self.conds_at(self.step)
        batch = len(conds_list)
        x_in = torch.cat([torch.stack([x[i] for _ in c]) for i, c in enumerate(conds_list)] + [x])
        s_in = torch.cat(
            [torch.stack([sigma[i] for _ in c]) for i, c in enumerate(conds_list)] + [sigma]
        )
        skip = self.skip_early != 0 and self.step / self.total <= self.skip_early
        if not skip and self.step % 2 and self.s_min_uncond > 0 and sigma[0] < self.s_min_uncond:
            skip = True
        tensor, uncond = self._padded(tensor, uncond)
        if skip:
            out = self.inner(x_in[:-batch], s_in[:-batch], cond=tensor)
            out = torch.cat([out, torch.cat([out[c[0][0] : c[0][0] + 1] for c in conds_list])])
        elif tensor.shape[1] == uncond.shape[1]:
            out = self.inner(x_in, s_in, cond=torch.cat([tensor, uncond]))
        else:
            out = torch.zeros_like(x_in)
            for a in range(0, tensor.shape[0], 2 * batch):
                b = min(a + 2 * batch, tensor.shape[0])
                out[a:b] = self.inner(x_in[a:b], s_in[a:b], cond=tensor[a:b])
            out[-batch:] = self.inner(x_in[-batch:], s_in[-batch:], cond=uncond)
        scale = 1.0 if skip else self.scale
        u = out[-batch:]
        denoised = torch.clone(u)
        for i, c in enumerate(conds_list):
            for index, weight in c:
                denoised[i] += (out[index] - u[i]) * (weight * scale)
        self.step += 1
        return denoised


# --- A1111's timestep samplers (sd_samplers_timesteps_impl), written again -----------------------


def reference_ddim(
    model: Any, x: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, eta: float
) -> list[torch.Tensor]:
    alphas = alphas_cumprod[timesteps]
    prev_idx = torch.cat([timesteps[:1] * 0, timesteps[:-1]])
    alphas_prev = alphas_cumprod[prev_idx].double()
    sigmas = eta * torch.sqrt(
        (1 - alphas_prev) / (1 - alphas.double()) * (1 - alphas.double() / alphas_prev)
    )
    out = []
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].float().repeat(x.shape[0]))
        a_t = float(alphas[index])
        a_prev = float(alphas_prev[index])
        sigma_t = float(sigmas[index])
        pred_x0 = (x - float(torch.sqrt(1 - alphas[index])) * e_t) / a_t**0.5
        dir_xt = (1.0 - a_prev - sigma_t**2) ** 0.5 * e_t
        noise = sigma_t * torch.randn_like(x) if sigma_t else 0.0
        x = a_prev**0.5 * pred_x0 + dir_xt + noise
        out.append(x)
    return out


def reference_plms(
    model: Any, x: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
) -> list[torch.Tensor]:
    alphas = alphas_cumprod[timesteps]
    prev_idx = torch.cat([timesteps[:1] * 0, timesteps[:-1]])
    alphas_prev = alphas_cumprod[prev_idx].double()

    def x_prev(x: torch.Tensor, e: torch.Tensor, index: int) -> torch.Tensor:
        a_t, a_prev = float(alphas[index]), float(alphas_prev[index])
        pred_x0 = (x - float(torch.sqrt(1 - alphas[index])) * e) / a_t**0.5
        return a_prev**0.5 * pred_x0 + (1.0 - a_prev) ** 0.5 * e

    old: list[torch.Tensor] = []
    out = []
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        t = timesteps[index].float().repeat(x.shape[0])
        e_t = model(x, t)
        if not old:
            t_next = timesteps[max(index - 1, 0)].float().repeat(x.shape[0])
            e_next = model(x_prev(x, e_t, index), t_next)
            e_prime = (e_t + e_next) / 2
        elif len(old) == 1:
            e_prime = (3 * e_t - old[-1]) / 2
        elif len(old) == 2:
            e_prime = (23 * e_t - 16 * old[-1] + 5 * old[-2]) / 12
        else:
            e_prime = (55 * e_t - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
        x = x_prev(x, e_prime, index)
        old.append(e_t)
        if len(old) >= 4:
            old.pop(0)
        out.append(x)
    return out
