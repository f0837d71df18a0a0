"""Pipelines in half precision, and text encoders under accelerate's offload hooks or elsewhere.

Tiny pipelines of every family (``_tiny_pipelines``) run on ``PROMPTWEIGHTS_TEST_DEVICE`` (``cpu``
by default; ``benchmarks/gpu.sh`` sets ``cuda``) in bfloat16 and float16, and are compared with the
same pipeline in float32 on the CPU: within a few units in the last place of the half type, for
every strategy. Weights as large as users write them never turn into inf or NaN. On the CPU, the
offload tests use ``accelerate.cpu_offload`` (weights on ``meta`` between calls, moved in for each
forward); on an accelerator they use the pipelines' own ``enable_model_cpu_offload`` and put the
text encoders on the CPU while the denoiser runs on the device.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _tiny_pipelines import tiny_flux, tiny_sd1, tiny_sd3, tiny_sdxl, tiny_sdxl_refiner

from promptweights.diffusers import Conditioning, encode
from promptweights.errors import InvalidWeightError
from promptweights.strategies import STRATEGIES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("one_torch_thread"),
    # PROMPT's BREAK cuts the CLIP windows; on a T5 tower (SD3, Flux) it is ignored with a
    # diagnostic, which these tests of precision and placement expect and do not check.
    pytest.mark.filterwarnings("ignore:BREAK ignored:promptweights.errors.PromptweightsWarning"),
    # PROMPT's edit changes Flux's pooled CLIP vector, which its step callback cannot swap
    # outside `attach` (tests/test_every_family.py checks that): the warning is expected here.
    pytest.mark.filterwarnings("ignore:the edit changes:promptweights.errors.PromptweightsWarning"),
]

#: The device the half-precision and placement tests run on.
DEVICE = torch.device(os.environ.get("PROMPTWEIGHTS_TEST_DEVICE", "cpu"))
ACCELERATOR = DEVICE.type != "cpu"

ALL_FAMILIES: dict[str, Callable[[], Any]] = {
    "sd": tiny_sd1,
    "sdxl": tiny_sdxl,
    "sdxl-refiner": tiny_sdxl_refiner,
    "sd3": tiny_sd3,
    "flux": tiny_flux,
}
#: ``PROMPTWEIGHTS_TEST_FAMILIES=sd,flux`` runs only those (``benchmarks/gpu.sh --dry-run``).
_CHOSEN = os.environ.get("PROMPTWEIGHTS_TEST_FAMILIES", "")
FAMILIES = {
    name: factory
    for name, factory in ALL_FAMILIES.items()
    if not _CHOSEN or name in _CHOSEN.split(",")
}
HALF = [torch.bfloat16, torch.float16]
PROMPT = "a (red cat:1.3) on [a mat], (dog:0.4) [sky:hill:0.5] BREAK (house:1.2)"
NEGATIVE = "(blue:0.7) dog"
STEPS = 2


def embeds(cond: Conditioning) -> list[Any]:
    return [
        cond.prompt_embeds,
        cond.negative_prompt_embeds,
        cond.pooled_prompt_embeds,
        cond.negative_pooled_prompt_embeds,
    ]


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def reference(family: str) -> dict[str, Conditioning]:
    """Every strategy's conditioning from the float32 pipeline on the CPU."""
    pipe = FAMILIES[family]()
    return {name: encode(pipe, PROMPT, NEGATIVE, strategy=name, steps=STEPS) for name in STRATEGIES}


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_precision_equals_float32_for_every_strategy(
    family: str, reference: dict[str, Conditioning], dtype: torch.dtype
) -> None:
    pipe = FAMILIES[family]().to(DEVICE, dtype)
    # A few units in the last place of the half type through the tiny towers (whose weights are
    # rounded to it too); the weighting itself runs in float32.
    tolerance = 8 * torch.finfo(dtype).eps
    for name, expected in reference.items():
        cond = encode(pipe, PROMPT, NEGATIVE, strategy=name, steps=STEPS)
        for ours, theirs in zip(embeds(cond), embeds(expected), strict=True):
            assert (ours is None) == (theirs is None), name
            if ours is None:
                continue
            assert ours.dtype == dtype, name
            assert ours.device.type == DEVICE.type, name
            torch.testing.assert_close(
                ours.float().cpu(), theirs, rtol=tolerance, atol=tolerance, msg=name
            )
        # Every schedule entry, not only the first.
        for k in range(STEPS):
            for tensor in cond.at_call(k).values():
                assert tensor is None or tensor.dtype == dtype


# (x:100) nested ten deep: A1111 multiplies the weights of nested brackets.
DEEP = "(" * 10 + "red" + ":100)" * 10
LARGE = ["(" * 10 + "(red:100)" + ")" * 10 + " cat", "a (cat:-100) dog", f"a {DEEP} cat"]


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_large_weights_never_overflow(family: str, dtype: torch.dtype) -> None:
    pipe = FAMILIES[family]().to(DEVICE, dtype)
    for name in STRATEGIES:
        for prompt in LARGE:
            try:
                cond = encode(pipe, prompt, NEGATIVE, strategy=name)
            except InvalidWeightError:
                assert prompt != LARGE[0], "a weight of 259 is one users write"
                continue  # beyond the documented bound on effective weights: refused
            for tensor in embeds(cond):
                assert tensor is None or torch.isfinite(tensor).all(), (name, prompt)


def _latents(pipe: Any, cond: Conditioning) -> Any:
    size = 32 if "transformer" in pipe.components else 64
    generator = torch.Generator("cpu").manual_seed(0)
    extra: dict[str, Any] = {}
    if cond.family == "sdxl-refiner":  # image to image only
        image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        extra = {"image": image, "strength": 1.0}
    return pipe(
        **cond.pipeline_kwargs(),  # holds num_inference_steps (encoded with steps=STEPS)
        height=size,
        width=size,
        generator=generator,
        output_type="latent",
        **extra,
    ).images


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_a_half_precision_pipeline_samples_finite_latents(family: str, dtype: torch.dtype) -> None:
    pipe = FAMILIES[family]().to(DEVICE, dtype)
    pipe.set_progress_bar_config(disable=True)
    cond = encode(pipe, PROMPT, NEGATIVE, steps=STEPS)
    assert torch.isfinite(_latents(pipe, cond).float()).all()


def _text_encoders(pipe: Any) -> list[Any]:
    names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    return [pipe.components[n] for n in names if pipe.components.get(n) is not None]


def test_offloaded_pipelines_give_the_same_conditioning(family: str) -> None:
    plain = FAMILIES[family]().to(DEVICE)
    offloaded = FAMILIES[family]()
    if ACCELERATOR:
        offloaded.enable_model_cpu_offload(device=DEVICE)
    else:
        # accelerate's hooks on every component: weights on meta between calls, moved in per
        # call. (The pipelines' enable_sequential_cpu_offload does this too, but its buffer
        # offload fails on this CPU stack: torch 2.13, accelerate, transformers 5.)
        import accelerate

        for component in offloaded.components.values():
            if isinstance(component, torch.nn.Module):
                accelerate.cpu_offload(component, execution_device=DEVICE)
        assert all(m.device.type == "meta" for m in _text_encoders(offloaded))
        assert offloaded._execution_device.type == DEVICE.type
    for name in ("a1111", "compel", "comfy++"):
        for exact in (True, False):
            options = {"strategy": name, "steps": STEPS, "exact": exact}
            ours = encode(offloaded, PROMPT, NEGATIVE, **options)
            theirs = encode(plain, PROMPT, NEGATIVE, **options)
            for a, b in zip(embeds(ours), embeds(theirs), strict=True):
                assert (a is None) == (b is None)
                if a is not None:
                    assert a.device.type == DEVICE.type
                    # The offloaded towers' empty window comes from another batch (their cache
                    # misses): equal up to last-bit rounding carried through the tower.
                    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    plain.set_progress_bar_config(disable=True)
    offloaded.set_progress_bar_config(disable=True)
    cond = encode(offloaded, PROMPT, NEGATIVE, steps=STEPS)
    # Conditionings equal within 1e-5 (the offloaded encoders' empty window comes from another
    # batch), through two denoiser steps.
    torch.testing.assert_close(
        _latents(offloaded, cond),
        _latents(plain, encode(plain, PROMPT, NEGATIVE, steps=STEPS)),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.skipif(not ACCELERATOR, reason="needs a second device (PROMPTWEIGHTS_TEST_DEVICE)")
def test_text_encoders_on_the_cpu_and_the_denoiser_on_the_device(family: str) -> None:
    pipe = FAMILIES[family]().to(DEVICE)
    for model in _text_encoders(pipe):
        model.to("cpu")
    pipe.set_progress_bar_config(disable=True)
    reference = FAMILIES[family]().to(DEVICE)
    cond = encode(pipe, PROMPT, NEGATIVE, steps=STEPS)
    expected = encode(reference, PROMPT, NEGATIVE, steps=STEPS)
    for a, b in zip(embeds(cond), embeds(expected), strict=True):
        if a is not None:
            assert a.device.type == DEVICE.type
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(_latents(pipe, cond)).all()
