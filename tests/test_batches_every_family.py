"""Batches on every family's tiny pipeline (rows of tests/_family_table.py): two images per
prompt and lists of prompts (the diffusers batch convention) run, and equal the pipeline's own
run from the same texts.

The expected images are the pipeline's own (``pipe(prompt=..., num_images_per_prompt=2)``): with
``exact=True`` each text is encoded alone, as the pipeline encodes one prompt, so two images per
prompt match bit for bit; a list is encoded by the pipeline in one batch, so it matches within
1e-5 relative (a batch's last-bit rounding, carried through the denoiser and the VAE). A weighted
prompt and an edit, which the pipeline cannot run, repeated per image must equal the list of that
prompt twice (the same batch in the denoiser: bit for bit).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from _family_table import CLASSES, LLM_CLASSES, LLM_ROWS, ROWS, Row  # noqa: E402
from _family_table import pipeline as table_pipeline  # noqa: E402
from _family_table import row as table_row  # noqa: E402
from _tiny_pipelines import tiny_sd1, tiny_sdxl  # noqa: E402

from promptweights.diffusers import encode  # noqa: E402
from promptweights.diffusers.families import family_record  # noqa: E402
from promptweights.errors import InvalidArgumentError  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

#: The CLIP families, beside the table's rows.
CLIP_ROWS = {"sd": Row(tiny_sd1, size=16), "sdxl": Row(tiny_sdxl, size=16)}
EVERY = [*CLIP_ROWS, *ROWS, *CLASSES, *LLM_ROWS, *LLM_CLASSES]
_BUILT: dict[str, Any] = {}


def row(name: str) -> Row:
    return CLIP_ROWS[name] if name in CLIP_ROWS else table_row(name)


def pipeline(name: str) -> Any:
    """The row's pipeline, built once per session."""
    if name not in CLIP_ROWS:
        return table_pipeline(name)
    if name not in _BUILT:
        _BUILT[name] = CLIP_ROWS[name].build()
        _BUILT[name].set_progress_bar_config(disable=True)
    return _BUILT[name]


#: Tuples: pipelines template a list of prompts in place (Z-Image, Flux.2), so each call gets a
#: fresh list.
PROMPTS = ("a red cat", "a green cow on a mat")
NEGATIVES = ("blue dog", "ugly")


def _parameters(name: str) -> Any:
    return inspect.signature(type(pipeline(name)).__call__).parameters


def _count(name: str) -> str:
    """The pipeline's images-per-prompt argument (Wan's is per video)."""
    return (
        "num_videos_per_prompt"
        if "num_videos_per_prompt" in _parameters(name)
        else ("num_images_per_prompt")
    )


def _negatives(name: str, texts: Sequence[str]) -> list[str] | None:
    """The negatives the pipeline takes as text (Flux.2 and Flux Fill none; Flux.2 Klein only
    as embeddings)."""
    if not row(name).negatives or "negative_prompt" not in _parameters(name):
        return None
    return list(texts)


def _run(name: str, **kwargs: Any) -> Any:
    r, pipe = row(name), pipeline(name)
    kwargs.setdefault("num_inference_steps", 2)
    with _small(pipe, r.size):
        return pipe(
            **kwargs,
            **r.call,
            **r.guided,
            height=r.size,
            width=r.size,
            guidance_scale=2.0,
            **({"max_sequence_length": r.length} if name not in CLIP_ROWS else {}),
            output_type="latent",
            return_dict=False,
            generator=torch.Generator().manual_seed(0),
        )[0]


@contextmanager
def _small(pipe: Any, size: int) -> Iterator[None]:
    """HiDream scales every image to the area of its ``default_sample_size`` (128 latents a
    side): for these runs, the row's size instead (restored after)."""
    if not type(pipe).__name__.startswith("HiDream"):
        yield
        return
    default = pipe.default_sample_size
    pipe.default_sample_size = size // pipe.vae_scale_factor
    try:
        yield
    finally:
        pipe.default_sample_size = default


def _encode(name: str, prompt: Any, negative: Any, **kwargs: Any) -> Any:
    # Kolors' __call__ does not pass max_sequence_length on to its encode_prompt (256 there).
    kolors = pipeline(name).__class__.__name__.startswith("Kolors")
    length = {} if kolors or name in CLIP_ROWS else {"max_sequence_length": row(name).length}
    return encode(
        pipeline(name), prompt, "" if negative is None else negative, exact=True, **length, **kwargs
    )


def _close(got: Any, want: Any) -> None:
    """Within 1e-5 relative to the output's scale (float32; different batch compositions: the
    text encoder's last-bit rounding goes through the whole run, 3.9e-6 on PixArt under a
    simulated one-ulp rounding of every Linear)."""
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("name", EVERY)
def test_two_images_per_prompt_equal_the_pipelines_own(name: str) -> None:
    negatives = _negatives(name, NEGATIVES)
    negative = None if negatives is None else negatives[0]
    own = (
        _run(name, prompt=PROMPTS[0], negative_prompt=negative, **{_count(name): 2})
        if (negative is not None)
        else _run(name, prompt=PROMPTS[0], **{_count(name): 2})
    )
    cond = _encode(name, PROMPTS[0], negative)
    ours = _run(name, **cond.pipeline_kwargs(num_images_per_prompt=2))
    assert ours.shape[0] == 2
    assert torch.equal(ours, own)
    if family_record(cond.family).repeats_embeds:  # the count may go to the pipeline as well
        assert torch.equal(_run(name, **cond.pipeline_kwargs(), **{_count(name): 2}), own)


@pytest.mark.parametrize("name", EVERY)
def test_lists_of_prompts_equal_the_pipelines_own(name: str) -> None:
    negatives = _negatives(name, NEGATIVES)
    for count in (1, 2):
        # Two images per prompt: the pipeline's own run of each text twice over (Lumina 2's own
        # num_images_per_prompt pairs a list's embeds with the masks in the wrong order).
        texts = {"prompt": [p for p in PROMPTS for _ in range(count)]}
        if negatives is not None:
            texts["negative_prompt"] = [n for n in negatives for _ in range(count)]
        own = _run(name, **texts)
        cond = _encode(name, list(PROMPTS), negatives)
        ours = _run(name, **cond.pipeline_kwargs(num_images_per_prompt=count))
        assert ours.shape[0] == 2 * count
        _close(ours, own)


@pytest.mark.parametrize("name", EVERY)
@pytest.mark.parametrize("prompt", ["a (red:1.4) cat, (mat:0.6)", "a [cat:green cow:0.5] on a mat"])
def test_weighted_and_edited_prompts_repeat_per_image_as_a_list_of_them(
    name: str, prompt: str
) -> None:
    negatives = _negatives(name, ["(blue:1.3) dog"])
    negative = None if negatives is None else negatives[0]
    steps = {"steps": 2} if "[" in prompt else {}
    twice = _encode(name, [prompt, prompt], None if negative is None else [negative] * 2, **steps)
    cond = _encode(name, prompt, negative, **steps)
    plain = _encode(name, "a red cat, mat", negative)
    with twice.attach(pipeline(name)):
        want = _run(name, **twice.pipeline_kwargs())
    with cond.attach(pipeline(name)):
        got = _run(name, **cond.pipeline_kwargs(num_images_per_prompt=2))
    assert got.shape[0] == 2
    assert torch.equal(got, want)
    assert not torch.equal(got, _run(name, **plain.pipeline_kwargs(num_images_per_prompt=2)))


@pytest.mark.parametrize("count", [0, -1, 1.5, True])
def test_a_count_that_is_not_a_positive_integer_is_an_error(count: Any) -> None:
    cond = _encode("flux", "a cat", None)
    with pytest.raises(InvalidArgumentError, match="num_images_per_prompt"):
        cond.pipeline_kwargs(num_images_per_prompt=count)


@pytest.mark.parametrize(
    "variant", ["", "Inpaint", "Plus"], ids=["Edit", "EditInpaint", "EditPlus"]
)
def test_qwen_image_edit_two_images_per_prompt_equal_its_own(variant: str) -> None:
    # Qwen-Image's record hands the tensors over repeated: its Edit pipelines with an image too.
    import PIL.Image
    from _tiny_vl import tiny_image, tiny_qwen_image_edit

    pipe = tiny_qwen_image_edit(variant)
    pipe.set_progress_bar_config(disable=True)
    image = tiny_image()
    options: dict[str, Any] = {"image": image, "true_cfg_scale": 2.0, "output_type": "latent"}
    if variant == "Inpaint":
        options["mask_image"] = PIL.Image.new("L", image.size, 255)

    def run(**kwargs: Any) -> Any:
        return pipe(**kwargs, **options, generator=torch.Generator().manual_seed(0)).images

    cond = encode(pipe, PROMPTS[0], NEGATIVES[0], image=image, steps=2, exact=True)
    ours = run(**cond.pipeline_kwargs(num_images_per_prompt=2))
    own = run(
        prompt=PROMPTS[0],
        negative_prompt=NEGATIVES[0],
        num_inference_steps=2,
        num_images_per_prompt=2,
    )
    assert ours.shape[0] == 2
    assert torch.equal(ours, own)
