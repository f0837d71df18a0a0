"""SANA-WM: its Gemma 2 encoding (the chi prompt before the positive, SANA's window and selection)
bit for bit as the pipeline's own ``encode_prompt``, handed over as ``(B, 1, L, D)``; two sampling
steps equal the pipeline's own run; weights move the user's text only."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from _tiny_sana_wm import tiny_sana_wm  # noqa: E402

from promptweights.diffusers import encode, family_of  # noqa: E402
from promptweights.errors import PromptweightsError  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

PROMPT = "a red cat on a mat"
NEGATIVE = "blue dog"
L = 16  # max_sequence_length: past the chi prompt, the user's tokens


def _reference(pipe: Any, prompt: str, negative: str) -> tuple[Any, ...]:
    from diffusers.pipelines.sana_wm.pipeline_sana_wm import DEFAULT_CHI_PROMPT

    with torch.no_grad():
        return pipe.encode_prompt(  # type: ignore[no-any-return]
            prompt, negative, device="cpu", max_sequence_length=L, chi_prompt=DEFAULT_CHI_PROMPT
        )


@pytest.mark.parametrize("prompt", [PROMPT, "a", ""], ids=["prompt", "one-word", "empty"])
def test_parity_with_encode_prompt(prompt: str) -> None:
    pipe = tiny_sana_wm()
    assert family_of(pipe) == "sana-wm"
    kwargs = encode(pipe, prompt, NEGATIVE, max_sequence_length=L, exact=True).pipeline_kwargs()
    positive, mask, negative, negative_mask = _reference(pipe, prompt, NEGATIVE)
    assert positive.shape[:2] == (1, 1)
    assert torch.equal(kwargs["prompt_embeds"], positive)
    assert torch.equal(kwargs["prompt_attention_mask"], mask)
    assert torch.equal(kwargs["negative_prompt_embeds"], negative)
    assert torch.equal(kwargs["negative_prompt_attention_mask"], negative_mask)
    assert kwargs["prompt"] is None  # required by __call__: None beside the embeds


def _run(pipe: Any, **kwargs: Any) -> Any:
    import numpy as np
    from PIL import Image

    frame = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype("uint8"))
    return pipe(
        frame,
        action="w-8",
        intrinsics=[32.0, 32.0, 32.0, 32.0],
        height=64,
        width=64,
        num_frames=9,
        max_sequence_length=L,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).frames


def test_two_steps_through_the_pipeline_match_its_own_run() -> None:
    pipe = tiny_sana_wm()
    cond = encode(pipe, PROMPT, NEGATIVE, steps=2, max_sequence_length=L, exact=True)
    ours = _run(pipe, **cond.pipeline_kwargs())
    theirs = _run(pipe, prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=2)
    assert torch.equal(ours, theirs)
    weighted = encode(pipe, "a (red:1.6) cat on a mat", NEGATIVE, steps=2, max_sequence_length=L)
    moved = _run(pipe, **weighted.pipeline_kwargs())
    assert torch.isfinite(moved).all()
    assert not torch.equal(moved, theirs)


def test_weights_move_the_users_text_only() -> None:
    pipe = tiny_sana_wm()
    plain = encode(pipe, PROMPT, max_sequence_length=L, exact=True).prompt_embeds
    ones = encode(pipe, "a (red:1.0) cat on a mat", max_sequence_length=L, exact=True)
    assert torch.equal(ones.prompt_embeds, plain)
    up = encode(pipe, "a (red:1.5) cat on a mat", max_sequence_length=L, exact=True).prompt_embeds
    down = encode(pipe, "a (red:0.5) cat on a mat", max_sequence_length=L, exact=True)
    moved = (up - plain).abs().amax(dim=-1)[0]
    assert moved.any()
    # The kept window is the BOS, then the last L - 1 positions: the chi prompt's end, the
    # user's text, the padding. Before "red" nothing moves (causal; BOS included).
    first = int(moved.nonzero()[0])
    assert first > 0
    assert torch.equal(down.prompt_embeds[0, :first], plain[0, :first])
    assert not torch.equal(down.prompt_embeds, plain)


def _calls(pipe: Any, cond: Any) -> list[tuple[Any, Any, Any]]:
    """Every transformer call of a run inside ``cond.attach``: the text (third positional
    argument), its ``mask=`` and the prediction (after attach's own hooks)."""
    seen: list[tuple[Any, Any, Any]] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        prediction = output[0] if isinstance(output, tuple) else output.sample
        seen.append((args[2].clone(), kwargs["mask"].clone(), prediction.clone()))

    with cond.attach(pipe):
        handle = pipe.transformer.register_forward_hook(record, with_kwargs=True)
        try:
            _run(pipe, guidance_scale=2.0, **cond.pipeline_kwargs())
        finally:
            handle.remove()
    return seen


def _encode(pipe: Any, prompt: str, negative: str, steps: int) -> Any:
    return encode(pipe, prompt, negative, steps=steps, max_sequence_length=L, exact=True)


@pytest.mark.parametrize(
    ("prompt", "negative"),
    [
        ("a [cat:big brown dog:1] on a mat", "[blue:deep red:1] sky"),
        ("a [cat|big brown dog] on a mat", "[blue|deep red] sky"),
    ],
    ids=["edit", "alternate"],
)
def test_each_call_gets_its_steps_text_and_mask_as_a_plain_run_of_it(
    prompt: str, negative: str
) -> None:
    pipe = tiny_sana_wm()
    cat = _calls(pipe, _encode(pipe, "a cat on a mat", "blue sky", 1))
    dog = _calls(pipe, _encode(pipe, "a big brown dog on a mat", "deep red sky", 1))
    assert not torch.equal(cat[0][1], dog[0][1])  # the texts' masks differ
    seen = _calls(pipe, _encode(pipe, prompt, negative, 3))
    assert len(seen) == 3  # one [negative, positive] call per step
    # A1111's run-time lookup: call k takes the first entry ending at or after k.
    for step, alone in enumerate([cat, cat, dog]):
        assert torch.equal(seen[step][0], alone[0][0]), step
        assert torch.equal(seen[step][1], alone[0][1]), step
    with pytest.raises(PromptweightsError, match="attach"):
        _encode(pipe, prompt, negative, 3).pipeline_kwargs()


def test_and_combines_the_parts_as_a1111_in_the_one_batch() -> None:
    pipe = tiny_sana_wm()
    combined = _calls(pipe, _encode(pipe, "a red cat AND a blue dog:0.5", "green", 2))
    # A1111 splits at AND keeping the space after it: the parts are "a red cat", " a blue dog".
    parts = [_calls(pipe, _encode(pipe, text, "green", 2)) for text in ("a red cat", " a blue dog")]
    uncond, first = parts[0][0][2].chunk(2)
    second = parts[1][0][2].chunk(2)[1]
    expected = uncond + (first - uncond) + 0.5 * (second - uncond)
    got_uncond, got = combined[0][2].chunk(2)
    # The transformer runs 3 rows here, 2 per part: equal up to its batches' last-bit rounding
    # (2.7e-5 under a simulated one-ulp rounding of every Linear), against 0.14 for the part's
    # weight 0.5 and 0.07 between the parts.
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_uncond, uncond, rtol=1e-4, atol=1e-4)
    assert combined[0][0].shape[0] == 3  # the negative, then both parts, in one call
