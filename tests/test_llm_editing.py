"""Prompt editing, alternation and AND on the decoder-LLM families' tiny pipelines (the rows of
``LLM_ROWS`` in tests/_family_table.py): Qwen-Image, Z-Image, Flux.2, Flux.2 Klein, Lumina 2,
SANA, Kolors and HiDream-I1.

Every expected value is computed here, independently of the code under test: what the
transformer gets at each call of an edited run is compared with what it gets in a plain run of
each text alone, and an AND run's first prediction with the parts' own predictions in plain runs,
combined as the README says for the family's kind of guidance.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from _family_table import LLM_CLASSES, LLM_ROWS, family, pipeline, row  # noqa: E402

from promptweights.diffusers import encode, encoder_names  # noqa: E402
from promptweights.errors import (  # noqa: E402
    InvalidWeightError,
    PromptweightsWarning,
    UnsupportedPipelineError,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

LLM = list(LLM_ROWS)
#: The families whose pipelines call the transformer for cond and uncond apart (transcribed from
#: their __call__: Qwen-Image's true CFG, Flux.2's single call, Klein's and Lumina 2's two calls).
SEPARATE = ("qwen-image", "flux2", "flux2-klein", "lumina2")
#: Z-Image's one call per step holds lists: the positives, then the negatives.
COND_FIRST = ("z-image",)


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, list):
        return [_clone(v) for v in value]
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def _valid(embeds: Any, mask: Any) -> list[Any]:
    """Qwen-Image's text per row, cut to its mask (a mask of ones may be ``None``); the mask must
    be ones then zeros."""
    if mask is None:
        return list(embeds)
    out = []
    for row_embeds, row_mask in zip(embeds, mask, strict=True):
        n = int(row_mask.sum())
        assert bool(row_mask[:n].all()), row_mask
        out.append(row_embeds[:n])
    return out


def _texts(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The text conditioning of one transformer (or UNet) call, as the family hands it over."""
    name = family(name)
    if name == "z-image":
        return {"cap_feats": args[2] if len(args) > 2 else kwargs["cap_feats"]}
    if name == "qwen-image":
        mask = kwargs.get("encoder_hidden_states_mask")
        return {"text": _valid(kwargs["encoder_hidden_states"], mask)}
    if name == "hidream":
        keys = ("encoder_hidden_states_t5", "encoder_hidden_states_llama3", "pooled_embeds")
        return {k: kwargs[k] for k in keys}
    if name == "kolors":
        return {
            "encoder_hidden_states": kwargs["encoder_hidden_states"],
            "text_embeds": kwargs["added_cond_kwargs"]["text_embeds"],
        }
    keys = ("encoder_hidden_states", "encoder_attention_mask")
    return {k: kwargs[k] for k in keys if k in kwargs}


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(torch.equal(a, b))


def _denoiser(pipe: Any) -> Any:
    return pipe.unet if hasattr(pipe, "unet") else pipe.transformer


Hook = Callable[..., Any]


def _run(name: str, cond: Any, record: Hook, guidance: float = 2.0) -> None:
    """Sample inside ``cond.attach``; ``record`` is a forward hook registered after attach's (it
    sees attach's inputs and result)."""
    pipe, options = pipeline(name), row(name)
    denoiser = _denoiser(pipe)
    handles = []
    try:
        with cond.attach(pipe):
            handles.append(denoiser.register_forward_hook(record, with_kwargs=True))
            pipe(
                **cond.pipeline_kwargs(),
                **options.call,
                height=options.size,
                width=options.size,
                guidance_scale=guidance,
                output_type="latent",
                generator=torch.Generator().manual_seed(0),
            )
    finally:
        for handle in handles:
            handle.remove()
    assert not denoiser._forward_pre_hooks
    assert not denoiser._forward_hooks


def _encode(name: str, prompt: str, negative: str, steps: int) -> Any:
    negative = negative if row(name).negatives else ""
    return encode(
        pipeline(name),
        prompt,
        negative,
        steps=steps,
        max_sequence_length=row(name).length,
        exact=True,
    )


def _calls(name: str, cond: Any, guidance: float = 2.0) -> list[tuple[dict[str, Any], Any]]:
    """Every call's text conditioning and prediction."""
    calls: list[tuple[dict[str, Any], Any]] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        prediction = output[0] if isinstance(output, tuple) else output.sample
        calls.append((_clone(_texts(name, args, kwargs)), _clone(prediction)))

    _run(name, cond, record, guidance)
    return calls


@functools.cache
def _plain_texts(name: str, prompt: str, negative: str) -> list[dict[str, Any]]:
    """The text conditioning of each call of a one-step plain run (shared by the cases)."""
    return [t for t, _ in _calls(name, _encode(name, prompt, negative, 1))]


@pytest.mark.parametrize("name", [*LLM, *LLM_CLASSES])
@pytest.mark.parametrize(
    ("prompt", "negative", "steps", "expected"),
    [
        # A1111's run-time lookup: call k takes the first entry ending at or after k, so step 1's
        # text also conditions the second call (a1111-behaviour.md §4.5).
        ("a [cat:dog:1] on a mat", "[blue:red:1] sky", 3, ["cat", "cat", "dog"]),
        ("a [cat|dog] on a mat", "[blue|red] sky", 4, ["cat", "cat", "dog", "cat"]),
        # Texts of different lengths: each call has its own text's length and mask.
        (
            "a [cat:big brown dog:1] on a mat",
            "[blue:deep red:1] sky",
            3,
            ["cat", "cat", "big brown dog"],
        ),
    ],
    ids=["edit", "alternate", "lengths"],
)
def test_each_call_gets_its_steps_text_as_a_plain_run_of_it(
    name: str, prompt: str, negative: str, steps: int, expected: list[str]
) -> None:
    cond = _encode(name, prompt, negative, steps)
    colours = {"cat": "blue", "dog": "red", "big brown dog": "deep red"}
    alone = {
        animal: _plain_texts(name, f"a {animal} on a mat", f"{c} sky")
        for animal, c in colours.items()
        if animal in expected
    }
    per_step = len(alone["cat"])  # one call ([uncond, cond] or lists), or cond then uncond
    assert per_step == (2 if name in SEPARATE and row(name).negatives else 1)
    seen = [t for t, _ in _calls(name, cond)]
    assert len(seen) == steps * per_step
    for step, animal in enumerate(expected):
        got = seen[step * per_step : (step + 1) * per_step]
        assert all(_equal(g, w) for g, w in zip(got, alone[animal], strict=True)), (step, animal)


def _rows(prediction: Any) -> list[Any]:
    return list(prediction)


#: A1111 splits "a red cat AND a blue dog:0.5" into "a red cat" and " a blue dog" (its weight
#: regex eats the space before the colon, not the one after AND): an LLM reads that space.
TEXTS = ("a red cat", " a blue dog")


@pytest.mark.parametrize("name", LLM)
def test_and_combines_the_parts_predictions_as_the_family_guides(name: str) -> None:
    weights = [1.0, 0.5]
    cond = _encode(name, "a red cat AND a blue dog:0.5", "green", 2)
    combined = _calls(name, cond)
    parts = [_calls(name, _encode(name, text, "green", 2)) for text in TEXTS]
    if name in SEPARATE:
        # The cond call: the parts' weighted mean (ComfyUI's ConditioningCombine).
        expected = sum(w * p[0][1] for w, p in zip(weights, parts, strict=True)) / sum(weights)
        torch.testing.assert_close(combined[0][1], expected, rtol=1e-5, atol=1e-5)
        if row(name).negatives:  # the uncond call is the plain run's
            torch.testing.assert_close(combined[1][1], parts[0][1][1], rtol=1e-5, atol=1e-5)
        return
    # One batch: A1111's uncond + Σ w (cond_j − uncond) in the cond rows.
    outputs = [_rows(p[0][1]) for p in parts]
    cond_at, uncond_at = (0, 1) if name in COND_FIRST else (1, 0)
    uncond = outputs[0][uncond_at]
    expected = uncond + sum(
        w * (out[cond_at] - uncond) for w, out in zip(weights, outputs, strict=True)
    )
    got = _rows(combined[0][1])
    assert len(got) == 2
    torch.testing.assert_close(got[cond_at], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[uncond_at], uncond, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SEPARATE)
def test_and_weights_summing_to_zero_are_refused_where_parts_are_averaged(name: str) -> None:
    cond = _encode(name, "a cat AND a dog:-1", "green", 2)
    with pytest.raises(InvalidWeightError, match="sum to 0"), cond.attach(pipeline(name)):
        pass


def test_and_without_guidance_on_z_image_takes_the_parts_weighted_mean() -> None:
    # guidance_scale 0 (Z-Image guides from above 0): one list of positives, no uncond.
    cond = _encode("z-image", "a red cat AND a blue dog:0.5", "green", 2)
    (got,) = _calls("z-image", cond, guidance=0.0)[0][1]
    parts = [_calls("z-image", _encode("z-image", t, "green", 2), guidance=0.0) for t in TEXTS]
    expected = (parts[0][0][1][0] + 0.5 * parts[1][0][1][0]) / 1.5
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_an_edit_needing_the_hook_warns_outside_attach() -> None:
    cond = _encode("qwen-image", "a [cat:big brown dog:1] on a mat", "blue sky", 3)
    with pytest.warns(PromptweightsWarning, match="attention mask.*attach"):
        cond.pipeline_kwargs()


@pytest.mark.parametrize("name", list(LLM_CLASSES))
def test_and_is_refused_under_perturbed_attention_guidance(name: str) -> None:
    cond = _encode(name, "a red cat AND a blue dog:0.5", "green", 2)
    with pytest.raises(UnsupportedPipelineError, match="perturbed copy of the cond"):
        _calls(name, cond)


def test_and_on_a_z_image_controlnet_is_refused_with_the_reason() -> None:
    from promptweights.diffusers._listed import ListHook

    cond = _encode("z-image", "a cat AND a dog", "green", 2)
    hook = ListHook(cond._timeline)
    x = [torch.zeros(16, 1, 4, 4)]
    blocks = {0: torch.zeros(1, 2, 3)}
    with pytest.raises(UnsupportedPipelineError, match="ControlNet"):
        hook.before(
            object(),
            (x, torch.zeros(1), [torch.zeros(3, 32)]),
            {"controlnet_block_samples": blocks},
        )


#: The TE(name: …) names of each family's towers, as the README's table gives them.
NAMES = {
    "qwen-image": ("qwen",),
    "z-image": ("qwen",),
    "flux2": ("mistral",),
    "flux2-klein": ("qwen",),
    "lumina2": ("gemma",),
    "sana": ("gemma",),
    "kolors": ("glm",),
    "hidream": ("clip_l", "clip_g", "t5", "llama"),
}


@pytest.mark.parametrize("name", LLM)
def test_te_blocks_route_to_the_llm_towers_by_name(name: str) -> None:
    pipe = pipeline(name)
    assert encoder_names(pipe) == NAMES[name]
    llm = NAMES[name][-1]
    length = row(name).length
    text = "a (red:1.3) cat on a mat"
    inline = encode(pipe, f"TE({llm}: {text})", exact=True, max_sequence_length=length)
    # The block's text reaches that tower alone: the others read nothing.
    routed = f" {text}"  # a section keeps the space after its colon
    given = {"prompt": routed} if len(NAMES[name]) == 1 else {"prompt": "", "prompt_4": routed}
    separate = encode(pipe, **given, exact=True, max_sequence_length=length)
    assert torch.equal(inline.prompt_embeds, separate.prompt_embeds)
    other = encode(pipe, "a cat on a mat", exact=True, max_sequence_length=length)
    assert not torch.equal(inline.prompt_embeds, other.prompt_embeds)


@functools.cache
def _sana_sprint() -> Any:
    from _tiny_llm2 import tiny_sana

    pipe = tiny_sana("Sprint")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_an_edit_without_guidance_is_masked_per_call_too() -> None:
    # SANA Sprint has no classifier-free guidance: the hook switches the cond rows alone.
    pipe = _sana_sprint()
    seen: list[tuple[Any, Any]] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        seen.append(
            (_clone(kwargs["encoder_hidden_states"]), _clone(kwargs["encoder_attention_mask"]))
        )

    for prompt, steps in [
        ("a [cat:big brown dog:1] on a mat", 3),
        ("a cat on a mat", 1),
        ("a big brown dog on a mat", 1),
    ]:
        cond = encode(pipe, prompt, steps=steps, max_sequence_length=32, exact=True)
        with cond.attach(pipe):
            handle = pipe.transformer.register_forward_hook(record, with_kwargs=True)
            try:
                pipe(
                    **cond.pipeline_kwargs(),
                    height=32,
                    width=32,
                    use_resolution_binning=False,
                    intermediate_timesteps=None,
                    output_type="latent",
                    generator=torch.Generator().manual_seed(0),
                )
            finally:
                handle.remove()
    cat, dog = seen[3], seen[4]
    assert not torch.equal(cat[1], dog[1])  # the texts' masks differ
    assert [_equal(list(s), list(cat)) for s in seen[:3]] == [True, True, False]
    assert _equal(list(seen[2]), list(dog))
