"""The shipped toy pipeline: loads offline, draws what the caption says, and prompt weights matter.

Images are classified with plain pixel rules: the background is the median of the border pixels,
the shape is the pixels far from it, its colour is the palette colour nearest to their median, its
class is the circle/square/triangle template (fitted to the shape's bounding box) with the best
IoU. Captions come from combinations held out of training (``held_out`` in
``tools/train_toy.py``); seeds are fixed.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
np = pytest.importorskip("numpy")

import promptweights.toy as toy  # noqa: E402
from promptweights.builder import build  # noqa: E402

pytestmark = pytest.mark.slow

STEPS = 12


def _train_toy() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "tools" / "train_toy.py"
    spec = importlib.util.spec_from_file_location("_train_toy", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_train_toy", module)
    spec.loader.exec_module(module)
    return module


T = _train_toy()
PALETTE = {**T.COLOURS, **T.NEUTRALS}
NAMES = list(PALETTE)
RGB = np.array([PALETTE[n] for n in NAMES], dtype=np.float32)
SHAPE_COLOURS = np.array([T.COLOURS[n] for n in T.COLOURS], dtype=np.float32)


@pytest.fixture(scope="module")
def pipe() -> Any:
    """The shipped pipeline on one thread."""
    torch.set_num_threads(1)
    return toy.load_pipeline()


def shape_mask(image: Any) -> Any:
    """Pixels far from the background (the border's median colour); ``None`` when there are none."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    background = np.median(border, axis=0)
    dist = np.linalg.norm(image - background, axis=-1)
    if dist.max() < 0.2:
        return None
    mask = dist > 0.5 * dist.max()
    return mask if mask.sum() >= 4 else None


def shape_colour(image: Any) -> str | None:
    """The shape colour (nearest of the six) of the median shape pixel."""
    mask = shape_mask(image)
    if mask is None:
        return None
    median = np.median(image[mask], axis=0)
    return list(T.COLOURS)[int(np.linalg.norm(SHAPE_COLOURS - median, axis=-1).argmin())]


def shape_class(image: Any) -> str | None:
    """Circle, square or triangle: the template inscribed in the bounding box with the best IoU."""
    mask = shape_mask(image)
    if mask is None:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    hy, hx = (y1 - y0) / 2, (x1 - x0) / 2
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]] + 0.5
    dy, dx = (yy - cy) / hy, (xx - cx) / hx
    templates = {
        "circle": dx**2 + dy**2 <= 1,
        "square": (np.abs(dx) <= 1) & (np.abs(dy) <= 1),
        "triangle": (np.abs(dy) <= 1) & (np.abs(dx) <= (dy + 1) / 2),
    }
    ious = {k: (t & mask).sum() / (t | mask).sum() for k, t in templates.items()}
    return max(ious, key=lambda k: ious[k])


def colour_share(images: Any, name: str) -> float:
    """Share of pixels, over all images, whose nearest palette colour is ``name``."""
    dist = np.linalg.norm(images[..., None, :] - RGB, axis=-1)
    return float((dist.argmin(axis=-1) == NAMES.index(name)).mean())


def generate_many(pipe: Any, prompts: list[str], seeds: list[int]) -> Any:
    """One image per (prompt, seed), all in one batched pipeline call."""
    result = build(toy.text_encoder(pipe), [[p] for p in prompts] + [[""]])
    positive = torch.cat([g.embeds for g in result.groups[:-1]])
    negative = result.groups[-1].embeds.expand(len(prompts), -1, -1)
    out = pipe(
        prompt_embeds=positive,
        negative_prompt_embeds=negative,
        num_inference_steps=STEPS,
        guidance_scale=toy.DEFAULT_GUIDANCE,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        output_type="np",
    )
    return out.images


def held_out_captions() -> list[tuple[str, str, str]]:
    """Every held-out (colour, shape, background) triple."""
    return [
        (c, s, b)
        for c in T.COLOURS
        for s in T.SHAPES
        for b in T.BACKGROUNDS
        if b != c and T.held_out(c, s, b)
    ]


def test_classifier_reads_the_training_renders() -> None:
    """The pixel rules recover colour and shape of clean renders (a check on the test itself)."""
    scenes, _ = T.sample_scenes(torch.Generator().manual_seed(7), 60)
    images = T.render(scenes).permute(0, 2, 3, 1).numpy()
    assert all(shape_colour(im) == s.colour for im, s in zip(images, scenes, strict=True))
    shapes = [shape_class(im) == s.shape for im, s in zip(images, scenes, strict=True)]
    assert np.mean(shapes) >= 0.95


def test_loads_offline_as_a_standard_pipeline(pipe: Any) -> None:
    """A ``StableDiffusionPipeline`` from package data; the builder's unweighted embeddings are
    exactly the pipeline's own."""
    from diffusers import StableDiffusionPipeline

    assert isinstance(pipe, StableDiffusionPipeline)
    text = "a red circle, blue background"
    own, own_negative = pipe.encode_prompt(text, "cpu", 1, True, "")
    result = build(toy.text_encoder(pipe), [[text], [""]])
    assert torch.equal(result.groups[0].embeds, own)
    assert torch.equal(result.groups[1].embeds, own_negative)


def test_held_out_captions_draw_the_right_colour_and_shape(pipe: Any) -> None:
    """Colour right in ≥ 90% of images, shape in ≥ 75%, on captions never seen in training."""
    triples = held_out_captions()
    prompts = [f"a {c} {s}, {b} background" for c, s, b in triples]
    images = generate_many(pipe, prompts, list(range(len(prompts))))
    colours = [shape_colour(im) == c for im, (c, _, _) in zip(images, triples, strict=True)]
    shapes = [shape_class(im) == s for im, (_, s, _) in zip(images, triples, strict=True)]
    assert np.mean(colours) >= 0.90, (np.mean(colours), prompts)
    assert np.mean(shapes) >= 0.75, (np.mean(shapes), prompts)


@pytest.mark.parametrize("strategy", ["a1111", "comfy"])
@pytest.mark.parametrize("first_seed", [0, 100])
def test_red_share_rises_with_the_weight_of_red(pipe: Any, strategy: str, first_seed: int) -> None:
    """``a (red:w) circle, blue background``: more red pixels as w goes 0.6 → 1.0 → 1.4.

    Two seed sets, so that a model or scheduler tuned on one set cannot pass by chance.
    """
    seeds = list(range(first_seed, first_seed + 8))
    shares = [
        colour_share(
            toy.generate(
                pipe, f"a (red:{w}) circle, blue background", seeds=seeds, strategy=strategy
            ),
            "red",
        )
        for w in (0.6, 1.0, 1.4)
    ]
    assert shares[0] < shares[1] < shares[2], shares


@pytest.fixture(scope="module")
def edit_position(pipe: Any) -> Callable[[str], float]:
    """Where ``a [red:green:<switch>] circle`` ends on the red → green segment (0 red, 1 green).

    The mean colour of the circle (over seeds) is projected onto the segment between the mean
    colours drawn for ``a red circle`` and ``a green circle`` (drawn once for the module).
    """
    seeds = list(range(6))

    def mean_colour(prompt: str) -> Any:
        images = toy.generate(pipe, prompt, seeds=seeds)
        return np.mean([image[shape_mask(image)].mean(axis=0) for image in images], axis=0)

    red = mean_colour("a red circle, blue background")
    green = mean_colour("a green circle, blue background")

    @functools.cache
    def position(switch: str) -> float:
        mixed = mean_colour(f"a [red:green:{switch}] circle, blue background")
        return float(np.dot(mixed - red, green - red) / np.dot(green - red, green - red))

    return position


def test_prompt_editing_at_half_ends_between_the_two_colours(
    edit_position: Callable[[str], float],
) -> None:
    """``a [red:green:0.5] circle`` ends clearly between red and green (15% to 85% of the way)."""
    assert 0.15 < edit_position("0.5") < 0.85


def test_the_later_the_edit_the_redder_the_circle(edit_position: Callable[[str], float]) -> None:
    """Switching from red to green at 0.3, 0.5, 0.7 of the steps ends ever closer to red, and each
    step of 0.2 moves the result by at least a tenth of the way."""
    early, half, late = (edit_position(s) for s in ("0.3", "0.5", "0.7"))
    assert early - half > 0.1, (early, half, late)
    assert half - late > 0.1, (early, half, late)


def test_generation_is_fast(pipe: Any) -> None:
    """One image at 20 steps with guidance in ≤ 2 s on one CPU thread (best of two, warm)."""
    toy.generate(pipe, "a small green square", seeds=[0], steps=2)
    timings = []
    for _ in range(2):
        start = time.perf_counter()
        toy.generate(pipe, "a small green square", seeds=[0], steps=20)
        timings.append(time.perf_counter() - start)
    assert min(timings) <= 2.0, timings
