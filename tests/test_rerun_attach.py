"""``attach_infotext``: re-running from an infotext what needs the denoiser hooks (``AND`` on
every family, prompt editing on PixArt), with ``match="diffusers"``.

Each case runs ``compare`` on a tiny pipeline with ``exact=True`` and re-runs a cell from its
PNG; the re-run must give the cell's image bit for bit (the same exact encoding on both sides),
while ``from_infotext`` keeps refusing the prompt.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from _family_table import ROWS, T5_LENGTH, pipeline  # noqa: E402

from promptweights.compare import compare, first_image  # noqa: E402
from promptweights.diffusers import attach_infotext, encode, from_infotext  # noqa: E402
from promptweights.errors import UnsupportedPipelineError  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

_SD1: dict[str, Any] = {}


def _sd1() -> Any:
    if "pipe" not in _SD1:
        from _tiny_pipelines import tiny_sd1

        pipe = tiny_sd1()
        pipe.set_progress_bar_config(disable=True)
        _SD1["pipe"] = pipe
    return _SD1["pipe"]


def _round_trip(
    pipe: Any, prompt: str, tmp_path: Path, size: int, call: dict[str, Any], **extra: Any
) -> None:
    result = compare(
        pipe,
        prompt,
        negative_prompt="blue",
        seed=3,
        steps=2,
        cfg=3.0,
        height=size,
        width=size,
        out_dir=tmp_path,
        progress=False,
        exact=True,
        pipeline_options=call,
        **extra,
    )
    cell = str(tmp_path / "cells" / "000.png")
    with pytest.raises(UnsupportedPipelineError, match="attach_infotext"):
        from_infotext(pipe, cell, exact=True)
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    hooks_before = (len(denoiser._forward_pre_hooks), len(denoiser._forward_hooks))
    with attach_infotext(pipe, cell, exact=True) as kwargs:
        again = first_image(pipe(**kwargs, **call, output_type="np"))
    assert np.array_equal(np.asarray(again, dtype=np.float32), result.images[0])
    # The hooks are gone after the block.
    assert (len(denoiser._forward_pre_hooks), len(denoiser._forward_hooks)) == hooks_before


def test_and_round_trips_on_sd1(tmp_path: Path) -> None:
    _round_trip(_sd1(), "a red cat AND a (green:1.3) dog:0.7", tmp_path, 32, {})


def test_and_round_trips_on_the_toy(toy_pipe: Any, tmp_path: Path) -> None:
    """The embedded toy (SD 1.x), with its own scheduler named in the cell's infotext."""
    toy_pipe.set_progress_bar_config(disable=True)
    _round_trip(toy_pipe, "a red cat AND a (green:1.3) dog:0.7", tmp_path, 64, {})


def test_and_round_trips_on_a_t5_family(tmp_path: Path) -> None:
    row = ROWS["chroma"]
    pipe = pipeline("chroma")
    _round_trip(
        pipe,
        "a red cat AND a (green:1.3) dog:0.5",
        tmp_path,
        row.size,
        row.call,
        max_sequence_length=T5_LENGTH,
    )


def test_an_edit_round_trips_on_pixart(tmp_path: Path) -> None:
    row = ROWS["pixart"]
    pipe = pipeline("pixart")
    _round_trip(
        pipe,
        "a [red:green:0.5] cat",
        tmp_path,
        row.size,
        row.call,
        max_sequence_length=T5_LENGTH,
    )


def test_the_and_parts_show_in_the_rerun(tmp_path: Path) -> None:
    """The attached re-run is not the first part alone: the second part changes the image."""
    pipe = _sd1()
    result = compare(
        pipe, "a red cat AND a green dog", seed=3, steps=2, cfg=3.0, height=32, width=32,
        out_dir=tmp_path, progress=False, exact=True,
    )  # fmt: skip
    alone = encode(pipe, "a red cat", steps=2, exact=True)
    generator = torch.Generator("cpu").manual_seed(3)
    kwargs = {"guidance_scale": 3.0, "height": 32, "width": 32}  # steps: the conditioning's
    first = first_image(pipe(**alone.pipeline_kwargs(), **kwargs, generator=generator,
                             output_type="np"))  # fmt: skip
    assert not np.array_equal(np.asarray(first, dtype=np.float32), result.images[0])


def test_a_prompt_without_hooks_gives_from_infotexts_arguments(tmp_path: Path) -> None:
    pipe = _sd1()
    compare(pipe, "a (red:1.2) cat", seed=1, steps=2, cfg=3.0, height=32, width=32,
            out_dir=tmp_path, progress=False, exact=True)  # fmt: skip
    cell = str(tmp_path / "cells" / "000.png")
    plain = from_infotext(pipe, cell, exact=True)
    with attach_infotext(pipe, cell, exact=True) as kwargs:
        assert sorted(kwargs) == sorted(plain)
        assert torch.equal(kwargs["prompt_embeds"], plain["prompt_embeds"])


def test_a_setting_that_cannot_be_reproduced_still_warns() -> None:
    pipe = _sd1()
    text = (
        "a cat AND a dog\nSteps: 2, Sampler: Euler, CFG scale: 3, Seed: 1, Size: 32x32, "
        "Hires upscale: 2"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with attach_infotext(pipe, text, match="diffusers") as kwargs:
            assert kwargs["num_inference_steps"] == 2
    assert any("ires" in str(w.message) for w in caught)
    assert any(w.filename == __file__ for w in caught)
