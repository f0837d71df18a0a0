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
from promptweights.errors import UnsupportedPipelineError  # noqa: E402

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


def test_editing_and_and_are_refused_clearly() -> None:
    pipe = tiny_sana_wm()
    cond = encode(pipe, "a [cat:dog:0.5] on a mat", steps=2, max_sequence_length=L)
    with pytest.raises(UnsupportedPipelineError, match="not supported on SANA-WM: its step"):
        cond.pipeline_kwargs()
    anded = encode(pipe, "a cat AND a dog", max_sequence_length=L)
    with pytest.raises(UnsupportedPipelineError, match="not supported on SANA-WM"):
        anded.pipeline_kwargs()
    with (
        pytest.raises(UnsupportedPipelineError, match="not supported on SANA-WM"),
        anded.attach(pipe),
    ):
        pass
