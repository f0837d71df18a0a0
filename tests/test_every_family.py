"""Every family's tiny pipeline alike (rows of tests/_family_table.py): a compare grid re-runs
bit for bit from each cell's infotext; prompt editing switches the conditioning at the right
step; AND combines the parts' predictions with their weights.

Every expected value is computed here, independently of the code under test: the re-run's image
is compared with the grid's, an edited run with runs of its two prompts, AND with the weighted
sum of the parts' own predictions.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
np = pytest.importorskip("numpy")

from _family_table import CLASSES, LLM_ROWS, ROWS, T5_LENGTH, family, pipeline, row  # noqa: E402

from promptweights.compare import Axis, compare, first_image  # noqa: E402
from promptweights.diffusers import (  # noqa: E402
    encode,
    encode_many,
    encoder_names,
    from_infotext,
)
from promptweights.diffusers.families import family_record  # noqa: E402
from promptweights.errors import (  # noqa: E402
    CompareError,
    InvalidArgumentError,
    InvalidWeightError,
    PromptSyntaxError,
    PromptweightsWarning,
    UnreproducibleError,
    UnsupportedPipelineError,
)
from promptweights.infotext import FAMILY_KEY, SEQUENCE_KEY, read_image  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


# --- compare and from_infotext ------------------------------------------------------------------


#: Every family's tiny pipeline: the T5 families' and the decoder-LLM families'.
FAMILIES = [*ROWS, *LLM_ROWS]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_compare_cell_reruns_bit_for_bit_from_its_infotext(name: str, tmp_path: Path) -> None:
    pipe, row = pipeline(name), globals()["row"](name)
    negative = "blue dog" if row.negatives else ""
    result = compare(
        pipe,
        "a (red:{0.5,1.5}) cat",
        negative_prompt=negative,
        seed=1,
        steps=2,
        cfg=2.0,
        height=row.size,
        width=row.size,
        out_dir=tmp_path,
        progress=False,
        exact=True,
        max_sequence_length=row.length,
        pipeline_options=row.call,
    )
    assert len(result.cells) == 2
    assert not np.array_equal(result.images[0], result.images[1])  # the weight shows
    for cell, image in zip(result.cells, result.images, strict=True):
        path = tmp_path / "cells" / f"{cell.index:03d}.png"
        params = read_image(path)
        assert params.written[FAMILY_KEY] == name
        assert params.written[SEQUENCE_KEY] == str(row.length)
        assert (params.prompt, params.negative_prompt) == (cell.prompt, negative)
        kwargs = from_infotext(pipe, str(path), exact=True)
        assert kwargs["max_sequence_length"] == row.length
        again = first_image(pipe(**kwargs, **row.call, output_type="np"))
        assert np.array_equal(np.asarray(again, dtype=np.float32), image), cell


def test_a_rerun_on_another_family_warns(tmp_path: Path) -> None:
    flux = pipeline("flux")
    compare(flux, "a cat", steps=2, out_dir=tmp_path, progress=False, max_sequence_length=T5_LENGTH)
    path = str(tmp_path / "cells" / "000.png")
    with pytest.warns(PromptweightsWarning, match=r"made with a 'flux' pipeline.*'chroma'"):
        from_infotext(pipeline("chroma"), path)
    with pytest.raises(UnreproducibleError, match="made with a 'flux' pipeline"):
        from_infotext(pipeline("chroma"), path, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptweightsWarning)
        from_infotext(flux, path)


def test_a1111_samplers_are_refused_on_flow_matching_pipelines() -> None:
    with pytest.raises(CompareError, match=r"'Euler'.*FlowMatchEulerDiscreteScheduler"):
        compare(pipeline("flux"), "a cat", [Axis("sampler", (None, "Euler"))], progress=False)


# --- prompt editing, alternation and AND --------------------------------------------------------

#: Families whose pipelines batch [uncond, cond] in one transformer call (the others call the
#: transformer for cond, then uncond, at the same timestep): from the records.
BATCHED = tuple(n for n in (*ROWS, *CLASSES) if family_record(family(n)).batched_guidance)
#: Every family's pipeline and the other classes whose transformer inputs differ.
EVERY = [*ROWS, *CLASSES]


def run(name: str, cond: Any, steps: int, record: Any = None, before: Any = None) -> None:
    """Sample ``steps`` steps inside ``cond.attach``; ``before`` is a pre-hook registered before
    attach's (it sees the pipeline's own inputs), ``record`` a forward hook registered after
    (it sees attach's inputs and result)."""
    pipe, options = pipeline(name), row(name)
    transformer = pipe.transformer
    handles = []
    if before is not None:
        handles.append(transformer.register_forward_pre_hook(before, with_kwargs=True))
    try:
        with cond.attach(pipe):
            if record is not None:
                handles.append(transformer.register_forward_hook(record, with_kwargs=True))
            pipe(
                **cond.pipeline_kwargs(),
                **options.call,
                **options.guided,
                height=options.size,
                width=options.size,
                guidance_scale=2.0,
                output_type="latent",
                max_sequence_length=T5_LENGTH,
                generator=torch.Generator().manual_seed(0),
            )
    finally:
        for handle in handles:
            handle.remove()
    assert not transformer._forward_pre_hooks
    assert not transformer._forward_hooks


def cond_and_uncond(name: str, calls: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    """Per step, the (cond, uncond) transformer inputs ``calls`` recorded (each a dict of the
    call's keywords): the halves of one batch, or the step's first and second call."""
    if name in BATCHED:
        out = []
        for kwargs in calls:
            half = kwargs["encoder_hidden_states"].shape[0] // 2
            cond = {k: v[half:] if _rows(v, 2 * half) else v for k, v in kwargs.items()}
            uncond = {k: v[:half] if _rows(v, 2 * half) else v for k, v in kwargs.items()}
            out.append((cond, uncond))
        return out
    steps: list[list[dict[str, Any]]] = []
    for kwargs in calls:
        if not steps or not torch.equal(steps[-1][0]["timestep"], kwargs["timestep"]):
            steps.append([])
        steps[-1].append(kwargs)
    return [(step[0], step[1] if len(step) > 1 else None) for step in steps]


def _rows(value: Any, rows: int) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == rows


def _clone(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def plain(name: str, prompt: str, negative: str) -> Any:
    negative = negative if row(name).negatives else ""
    return encode(pipeline(name), prompt, negative, max_sequence_length=T5_LENGTH, exact=True)


@pytest.mark.parametrize("name", EVERY)
@pytest.mark.parametrize(
    ("prompt", "negative", "steps", "expected"),
    [
        # A1111's run-time lookup: call k takes the first entry ending at or after k, so step 1's
        # text also conditions the second call (a1111-behaviour.md §4.5).
        ("a [cat:dog:1] on a mat", "[blue:red:1] sky", 3, ["cat", "cat", "dog"]),
        ("a [cat|dog] on a mat", "[blue|red] sky", 4, ["cat", "cat", "dog", "cat"]),
    ],
)
def test_editing_switches_the_conditioning_at_its_step(
    name: str, prompt: str, negative: str, steps: int, expected: list[str]
) -> None:
    negative = negative if row(name).negatives else ""
    cond = encode(
        pipeline(name), prompt, negative, steps=steps, max_sequence_length=T5_LENGTH, exact=True
    )
    # Each prompt alone, as the edited run must see it at each step.
    alone = {
        word: plain(name, f"a {word} on a mat", f"{colour} sky")
        for word, colour in (("cat", "blue"), ("dog", "red"))
    }
    calls: list[dict[str, Any]] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        calls.append(_clone(kwargs))

    run(name, cond, steps, record=record)
    seen = cond_and_uncond(name, calls)
    assert len(seen) == steps
    for (c, u), word in zip(seen, expected, strict=True):
        want = alone[word]
        assert torch.equal(c["encoder_hidden_states"], want.prompt_embeds), word
        if want.pooled_prompt_embeds is not None:  # SD3 and Flux: CLIP's pooled vector too
            assert torch.equal(c["pooled_projections"], want.pooled_prompt_embeds), word
        if not row(name).negatives:
            assert u is None  # no true CFG: cond calls only
            continue
        assert u is not None
        assert torch.equal(u["encoder_hidden_states"], want.negative_prompt_embeds), word
        if want.pooled_prompt_embeds is not None:
            assert torch.equal(u["pooled_projections"], want.negative_pooled_prompt_embeds)


#: Where each family with a T5 mask hands it to its transformer (text positions first): a
#: batched [uncond, cond] call takes PixArt's cross-attention mask, a separate call Chroma's.
MASKS = {
    n: "encoder_attention_mask" if n in BATCHED else "attention_mask"
    for n in EVERY
    if family_record(family(n)).attention_mask
}


@pytest.mark.parametrize("name", list(MASKS))
def test_each_call_is_masked_as_its_own_text(name: str) -> None:
    # The texts of the schedule differ in length: each call's mask is its text's alone.
    cond = encode(
        pipeline(name),
        "a [cat:big brown dog:1] on a mat",
        "[blue:deep red:1] sky",
        steps=3,
        max_sequence_length=T5_LENGTH,
    )
    alone = {
        "cat": plain(name, "a cat on a mat", "blue sky"),
        "dog": plain(name, "a big brown dog on a mat", "deep red sky"),
    }
    assert not torch.equal(alone["cat"].prompt_attention_mask, alone["dog"].prompt_attention_mask)
    calls: list[dict[str, Any]] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        calls.append(_clone(kwargs))

    run(name, cond, 3, record=record)
    for (c, u), word in zip(cond_and_uncond(name, calls), ["cat", "cat", "dog"], strict=True):
        want = alone[word]
        assert u is not None
        for got, mask in (
            (c, want.prompt_attention_mask),
            (u, want.negative_prompt_attention_mask),
        ):
            assert torch.equal(
                got[MASKS[name]][:, : mask.shape[1]], mask.to(got[MASKS[name]].dtype)
            )


def _prediction(output: Any) -> Any:
    return output[0] if isinstance(output, tuple) else output.sample


@pytest.mark.parametrize("name", EVERY)
def test_and_combines_the_parts_predictions_with_their_weights(name: str) -> None:
    pipe = pipeline(name)
    negative = "green" if row(name).negatives else ""
    cond = encode(
        pipe, "a red cat AND a blue dog:0.5", negative, max_sequence_length=T5_LENGTH, exact=True
    )
    parts = [plain(name, text, "green") for text in ("a red cat", "a blue dog")]
    weights = [1.0, 0.5]
    given: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    results: list[Any] = []

    def before(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        given.append((tuple(a.detach().clone() for a in args), _clone(kwargs)))

    def record(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        results.append(_prediction(output).detach().clone())

    run(name, cond, 2, record=record, before=before)
    # The first call, recomputed here from the pipeline's own inputs and each part alone.
    (args, kwargs), result = given[0], results[0]

    def predict(part: Any) -> Any:
        inputs = dict(kwargs)
        if name in MASKS:  # each part masked as its own text
            negative_mask, mask = part.negative_prompt_attention_mask, part.prompt_attention_mask
            masks = torch.cat([negative_mask, mask]) if name in BATCHED else mask
            inputs[MASKS[name]] = inputs[MASKS[name]].clone()
            inputs[MASKS[name]][:, : masks.shape[1]] = masks
        if name in BATCHED:  # [uncond, part]: the negative is the same in every part's batch
            inputs["encoder_hidden_states"] = torch.cat(
                [part.negative_prompt_embeds, part.prompt_embeds]
            )
            if part.pooled_prompt_embeds is not None:
                inputs["pooled_projections"] = torch.cat(
                    [part.negative_pooled_prompt_embeds, part.pooled_prompt_embeds]
                )
        else:
            inputs["encoder_hidden_states"] = part.prompt_embeds
            if part.pooled_prompt_embeds is not None:
                inputs["pooled_projections"] = part.pooled_prompt_embeds
        with torch.no_grad():
            return _prediction(pipe.transformer(*args, **inputs))

    predictions = [predict(part) for part in parts]
    if name in BATCHED:
        # A1111: uncond + Σ w (cond_j − uncond), in the cond half.
        uncond = predictions[0][:1]
        combined = uncond + sum(
            w * (p[1:] - uncond) for w, p in zip(weights, predictions, strict=True)
        )
        expected = torch.cat([uncond, combined])
    else:
        # The cond call: the parts' weighted mean.
        expected = sum(w * p for w, p in zip(weights, predictions, strict=True)) / sum(weights)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in ROWS if n not in BATCHED])
def test_and_weights_summing_to_zero_are_refused_where_parts_are_averaged(name: str) -> None:
    cond = encode(pipeline(name), "a cat AND a dog:-1", max_sequence_length=T5_LENGTH)
    with pytest.raises(InvalidWeightError, match="sum to 0"), cond.attach(pipeline(name)):
        pass


# --- per-encoder prompts inline -----------------------------------------------------------------


def _arguments(name: str) -> dict[str, str]:
    """Each encoder's argument: the family's tower reading it (``prompt``, ``prompt_2``…)."""
    out = {}
    for tower in family_record(name).towers:
        out[tower.label] = "prompt" if tower.prompt == 1 else f"prompt_{tower.prompt}"
    return out


@pytest.mark.parametrize("name", FAMILIES)
def test_a_te_block_equals_the_prompt_arguments(name: str) -> None:
    pipe = pipeline(name)
    length = row(name).length
    arguments = _arguments(name)
    assert encoder_names(pipe) == tuple(arguments)
    # Flux: CLIP-L unweighted; HiDream: CLIP-L, CLIP-G, T5, Llama.
    words = ["a cow on a mat", "a (red:1.3) cat", "a [blue] dog", "a (red:0.7) mat"]
    texts = dict(zip(arguments, words, strict=False))
    for tower in family_record(family(name)).towers:  # weights no pooled vector takes
        if tower.policy == "pooled-only":
            texts[tower.label] = "a cow on a mat"
    block = "TE(" + "; ".join(f"{label}: {text}" for label, text in texts.items()) + ")"
    inline = encode(
        pipe,
        f"best, {block}",
        "TE(t5: ugly)" if "t5" in texts else "",
        exact=True,
        max_sequence_length=length,
    )
    given = {"prompt": "", "negative_prompt": ""}
    for label, text in texts.items():
        given[arguments[label]] = f"best,  {text}"
        given["negative_" + arguments[label]] = " ugly" if label == "t5" else ""
    prompt, negative = given.pop("prompt"), given.pop("negative_prompt")
    separate = encode(pipe, prompt, negative, exact=True, max_sequence_length=length, **given)
    for key in ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds"):
        a, b = getattr(inline, key), getattr(separate, key)
        assert (a is None and b is None) or torch.equal(a, b), key


@pytest.mark.parametrize("name", FAMILIES)
def test_a_te_block_naming_another_familys_encoder_is_an_error(name: str) -> None:
    pipe = pipeline(name)
    with pytest.raises(PromptSyntaxError, match=r"'clip_x'.*are " + ", ".join(encoder_names(pipe))):
        encode(pipe, "a, TE(clip_x: cat)")
    first = encoder_names(pipe)[-1]
    with pytest.raises(InvalidArgumentError, match=r"TE.*prompt_2"):
        encode(pipe, f"TE({first}: cat)", prompt_2="dog")


def test_encode_many_and_compare_route_blocks_too(tmp_path: Path) -> None:
    pipe = pipeline("flux")
    text = "TE(clip_l: a photo; t5: a (red:1.5) cat)"
    (many,) = encode_many(pipe, [{"prompt": text}], exact=True, max_sequence_length=T5_LENGTH)
    one = encode(
        pipe, " a photo", prompt_2=" a (red:1.5) cat", exact=True, max_sequence_length=T5_LENGTH
    )
    assert torch.equal(many.prompt_embeds, one.prompt_embeds)
    assert torch.equal(many.pooled_prompt_embeds, one.pooled_prompt_embeds)
    # The block travels in the cell's infotext and re-runs to the same image.
    result = compare(
        pipe,
        text,
        steps=2,
        out_dir=tmp_path,
        progress=False,
        exact=True,
        max_sequence_length=T5_LENGTH,
    )
    path = tmp_path / "cells" / "000.png"
    assert read_image(path).prompt == text
    again = first_image(pipe(**from_infotext(pipe, str(path), exact=True), output_type="np"))
    assert np.array_equal(np.asarray(again, dtype=np.float32), result.images[0])


def test_a_transformer_taking_its_text_otherwise_is_refused_clearly() -> None:
    from promptweights.diffusers._separate import SeparateHook

    cond = encode(pipeline("flux"), "a cat AND a dog", max_sequence_length=T5_LENGTH)
    hook = SeparateHook(cond._timeline)
    with pytest.raises(UnsupportedPipelineError, match="encoder_hidden_states"):
        hook.before(object(), (), {"encoder_hidden_states_t5": torch.zeros(1, 2, 3)})
