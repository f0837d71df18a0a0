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

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
np = pytest.importorskip("numpy")

from _family_table import ROWS, T5_LENGTH, pipeline  # noqa: E402

from promptweights.compare import Axis, compare, first_image  # noqa: E402
from promptweights.diffusers import from_infotext  # noqa: E402
from promptweights.errors import (  # noqa: E402
    CompareError,
    PromptweightsWarning,
    UnreproducibleError,
)
from promptweights.infotext import FAMILY_KEY, SEQUENCE_KEY, read_image  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


# --- compare and from_infotext ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ROWS))
def test_every_compare_cell_reruns_bit_for_bit_from_its_infotext(name: str, tmp_path: Path) -> None:
    pipe, row = pipeline(name), ROWS[name]
    result = compare(
        pipe,
        "a (red:{0.5,1.5}) cat",
        [Axis("seed", (1, 2))],
        negative_prompt="blue dog",
        steps=2,
        cfg=2.0,
        height=row.size,
        width=row.size,
        out_dir=tmp_path,
        progress=False,
        exact=True,
        max_sequence_length=T5_LENGTH,
        pipeline_options=row.call,
    )
    assert len(result.cells) == 4
    assert not np.array_equal(result.images[0], result.images[1])  # the weight shows
    for cell, image in zip(result.cells, result.images, strict=True):
        path = tmp_path / "cells" / f"{cell.index:03d}.png"
        params = read_image(path)
        assert params.written[FAMILY_KEY] == name
        assert params.written[SEQUENCE_KEY] == str(T5_LENGTH)
        assert (params.prompt, params.negative_prompt) == (cell.prompt, "blue dog")
        kwargs = from_infotext(pipe, str(path), exact=True)
        assert kwargs["max_sequence_length"] == T5_LENGTH
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
