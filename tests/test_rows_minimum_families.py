"""Rows at the minimum on the families whose negative goes unused (issue 16 item 1).

Flux.1 and Flux.2 without a negative, Qwen-Image's (and Qwen-Image Edit's) empty negative (no
true CFG), SDXL's empty negative under ``force_zeros_for_empty_prompt`` and a pipeline that takes
or uses no negative at all (Flux Fill, a step-distilled Flux.2 Klein): the negative's encoding is
never passed on, so it costs no encoder row. Counted by
forward-hook counters on the tiny pipelines from a cold empty-prompt cache; outputs are checked
bit for bit against the pipeline's own ``encode_prompt`` in the exact mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from _tiny_llm import tiny_flux2, tiny_qwen_image  # noqa: E402
from _tiny_pipelines import tiny_flux, tiny_sdxl  # noqa: E402

from promptweights.diffusers import encode  # noqa: E402
from promptweights.encoders import forget  # noqa: E402
from promptweights.errors import PromptweightsWarning  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOWERS = ("text_encoder", "text_encoder_2")


class Rows:
    """Rows through each text encoder of ``pipe`` (a forward pre-hook on each, on its
    ``text_model`` where it has one: CLIP with projection runs that)."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.models = [getattr(pipe, n) for n in TOWERS if getattr(pipe, n, None) is not None]
        self.rows = [0] * len(self.models)
        self.handles = [
            getattr(m, "text_model", m).register_forward_pre_hook(self._hook(i), with_kwargs=True)
            for i, m in enumerate(self.models)
        ]

    def _hook(self, i: int) -> Any:
        def count(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                ids = kwargs["inputs_embeds"]
            self.rows[i] += int(ids.shape[0])

        return count

    def cold(self) -> None:
        """Forget every cached empty-prompt window, as in a fresh process."""
        for model in self.models:
            forget(model)

    def take(self) -> list[int]:
        out, self.rows = self.rows, [0] * len(self.models)
        return out

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.fixture(scope="module")
def flux() -> Any:
    return tiny_flux()


@pytest.fixture(scope="module")
def sdxl() -> Any:
    return tiny_sdxl()


def _counted(pipe: Any) -> Iterator[Rows]:
    rows = Rows(pipe)
    rows.cold()
    try:
        yield rows
    finally:
        rows.close()


@pytest.fixture
def flux_rows(flux: Any) -> Iterator[Rows]:
    yield from _counted(flux)


@pytest.fixture
def sdxl_rows(sdxl: Any) -> Iterator[Rows]:
    yield from _counted(sdxl)


def test_flux_without_a_negative_encodes_the_prompt_rows_only(flux: Any, flux_rows: Rows) -> None:
    # One row per tower, as FluxPipeline.encode_prompt: no empty negative through T5 or CLIP.
    cond = encode(flux, "a (red:1.2) cat")
    assert flux_rows.take() == [1, 1]
    assert cond.negative_prompt_embeds is None
    assert cond.negative_pooled_prompt_embeds is None
    # A list: its distinct prompts, nothing more.
    encode(flux, ["a red cat", "a blue dog", "a red cat"])
    assert flux_rows.take() == [2, 2]
    # A negative that is used (true CFG) is encoded: prompt and negative rows.
    cond = encode(flux, "a red cat", "blurry")
    assert flux_rows.take() == [2, 2]
    assert cond.negative_prompt_embeds is not None


def test_flux_prompt_without_a_negative_equals_encode_prompt_bit_for_bit(
    flux: Any, flux_rows: Rows
) -> None:
    cond = encode(flux, "a red cat on a mat", exact=True)
    assert flux_rows.take() == [1, 1]
    with torch.no_grad():
        embeds, pooled, _ = flux.encode_prompt("a red cat on a mat", None, device="cpu")
    assert torch.equal(cond.prompt_embeds, embeds)
    assert torch.equal(cond.pooled_prompt_embeds, pooled)


def test_flux_fill_drops_a_negative_without_encoding_it() -> None:
    pipe = tiny_flux(variant="Fill", in_channels=4 + 4 * 4)
    rows = Rows(pipe)
    rows.cold()
    try:
        with pytest.warns(PromptweightsWarning, match="takes no negative prompt"):
            cond = encode(pipe, "a red cat", "blurry, (ugly:1.3)", exact=True)
        assert rows.take() == [1, 1]
    finally:
        rows.close()
    assert cond.negative_prompt_embeds is None
    with torch.no_grad():
        embeds, pooled, _ = pipe.encode_prompt("a red cat", None, device="cpu")
    assert torch.equal(cond.prompt_embeds, embeds)
    assert torch.equal(cond.pooled_prompt_embeds, pooled)


def test_sdxl_zeroed_empty_negative_costs_no_row(sdxl: Any, sdxl_rows: Rows) -> None:
    assert sdxl.config.force_zeros_for_empty_prompt
    cond = encode(sdxl, "a red cat", exact=True)
    # diffusers zeroes the empty negative without encoding it: one row per tower, as here.
    assert sdxl_rows.take() == [1, 1]
    with torch.no_grad():
        want = sdxl.encode_prompt("a red cat", device="cpu", do_classifier_free_guidance=True)
    got = (
        cond.prompt_embeds,
        cond.negative_prompt_embeds,
        cond.pooled_prompt_embeds,
        cond.negative_pooled_prompt_embeds,
    )
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    assert not cond.negative_prompt_embeds.any()


def test_sdxl_two_chunk_prompt_needs_no_empty_window_for_a_zeroed_negative(
    sdxl: Any, sdxl_rows: Rows
) -> None:
    two = "a " * 80 + "b"  # two different chunks
    cond = encode(sdxl, two)
    # Its two chunks per tower; the zeroed negative pads with no encoded empty window.
    assert sdxl_rows.take() == [2, 2]
    assert cond.negative_prompt_embeds is not None
    assert cond.negative_prompt_embeds.shape == cond.prompt_embeds.shape == (1, 154, 64)
    assert not cond.negative_prompt_embeds.any()
    assert not cond.negative_pooled_prompt_embeds.any()
    assert cond.padded_conds is False
    # For A1111's unpadded re-runs the zeroed negative keeps an empty text's length: one window.
    assert cond._timeline.lengths == (154, (77,))
    # A negative that is written is encoded, and the shorter one padded with the empty window.
    encode(sdxl, two, "blurry")
    assert sdxl_rows.take() == [2 + 1 + 1, 2 + 1 + 1]


@pytest.mark.parametrize("build", [tiny_qwen_image, tiny_flux2], ids=["qwen-image", "flux2"])
def test_llm_families_without_a_negative_encode_the_prompt_rows_only(build: Any) -> None:
    pipe = build()
    rows = Rows(pipe)
    rows.cold()
    try:
        cond = encode(pipe, "a red cat", exact=True)
        assert rows.take() == [1]
        assert cond.negative_prompt_embeds is None
        assert cond.negative_prompt_attention_mask is None
        cond_2 = encode(pipe, ["a red cat", "a (blue:1.2) dog"])
        # Two rows, and the weighted span's extra row (span-lerp's masked encoding).
        assert rows.take() == [3]
        assert cond_2.negative_prompt_embeds is None
    finally:
        rows.close()
    with torch.no_grad():
        want = pipe.encode_prompt("a red cat", device="cpu")[0]
    assert torch.equal(cond.prompt_embeds, want)


def test_encode_many_plans_no_row_for_unused_negatives(flux: Any, flux_rows: Rows) -> None:
    from promptweights.diffusers import encode_many

    conds = encode_many(flux, [{"prompt": "a red cat"}, {"prompt": "a (blue:1.1) dog"}])
    assert flux_rows.take() == [2, 2]
    assert [c.negative_prompt_embeds for c in conds] == [None, None]
    with torch.no_grad():
        embeds, pooled, _ = flux.encode_prompt("a red cat", None, device="cpu")
    # One batched pass against the pipeline's one-row pass: equal within float32 rounding.
    torch.testing.assert_close(conds[0].prompt_embeds, embeds, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(conds[0].pooled_prompt_embeds, pooled, rtol=1e-6, atol=1e-6)


def test_a_step_distilled_klein_encodes_no_negative() -> None:
    pipe = tiny_flux2("Klein")
    rows = Rows(pipe)
    rows.cold()
    try:
        # Not distilled: true CFG on the empty negative, which is encoded as the pipeline does.
        assert encode(pipe, "a red cat").negative_prompt_embeds is not None
        assert rows.take() == [2]
        # Step-distilled (diffusers ignores the negative there): the prompt's row only.
        pipe.register_to_config(is_distilled=True)
        cond = encode(pipe, "a red cat", exact=True)
        assert rows.take() == [1]
        assert cond.negative_prompt_embeds is None
        with pytest.warns(PromptweightsWarning, match="takes no negative prompt"):
            assert encode(pipe, "a red cat", "blurry").negative_prompt_embeds is None
        assert rows.take() == [1]
    finally:
        rows.close()
    with torch.no_grad():
        want = pipe.encode_prompt("a red cat", device="cpu")[0]
    assert torch.equal(cond.prompt_embeds, want)


def test_qwen_image_edit_without_a_negative_encodes_the_prompt_with_its_image_only() -> None:
    from _tiny_vl import tiny_image, tiny_qwen_image_edit

    pipe = tiny_qwen_image_edit()
    image = tiny_image(64, 48, seed=0)
    rows = Rows(pipe)
    rows.cold()
    try:
        cond = encode(pipe, "a red cat on a mat", image=image, exact=True)
        assert rows.take() == [1]
        assert cond.negative_prompt_embeds is None
        guided = encode(pipe, "a red cat on a mat", "blue dog", image=image, exact=True)
        assert rows.take() == [2]  # a negative that is used: its row too
    finally:
        rows.close()
    # One row per pass on both sides: the prompt's encoding does not depend on the negative's.
    assert torch.equal(cond.prompt_embeds, guided.prompt_embeds)
    assert torch.equal(cond.prompt_attention_mask, guided.prompt_attention_mask)
