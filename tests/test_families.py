"""The family records of ``promptweights.diffusers.families``: each pipeline has exactly one.

Which family a tiny pipeline belongs to is written out here by hand; the other family tests
(``test_diffusers.py``) check what each family's record makes of a prompt.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from _tiny_llm import tiny_flux2, tiny_qwen_image, tiny_z_image
from _tiny_pipelines import (
    tiny_chroma,
    tiny_flux,
    tiny_pixart,
    tiny_sd1,
    tiny_sd2,
    tiny_sd3,
    tiny_sdxl,
    tiny_sdxl_refiner,
    tiny_wan,
)
from _tiny_sana_wm import tiny_sana_wm
from _tiny_vl import tiny_qwen_image_edit, tiny_qwen_image_layered, tiny_z_image_omni

from promptweights.diffusers import FAMILIES, family_of
from promptweights.diffusers.families import RECORDS, Family, family_record

diffusers = pytest.importorskip("diffusers")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

PIPELINES: list[tuple[str, Callable[[], Any]]] = [
    ("sd", tiny_sd1),
    ("sd", lambda: tiny_sd1(img2img=True)),
    ("sd", tiny_sd2),
    ("sdxl", tiny_sdxl),
    ("sdxl", lambda: tiny_sdxl(img2img=True)),
    ("sdxl-refiner", tiny_sdxl_refiner),
    ("sd3", tiny_sd3),
    ("sd3", lambda: tiny_sd3(t5=False)),
    ("flux", tiny_flux),
    ("flux", lambda: tiny_flux(variant="Kontext")),
    ("flux", lambda: tiny_flux(variant="Fill", in_channels=12)),
    ("sd3", lambda: tiny_sd3(variant="Inpaint")),
    ("chroma", tiny_chroma),
    ("chroma", lambda: tiny_chroma("Img2Img")),
    ("chroma", lambda: tiny_chroma("Inpaint")),
    ("pixart", tiny_pixart),
    ("wan", tiny_wan),
    ("qwen-image", tiny_qwen_image),
    ("qwen-image", lambda: tiny_qwen_image("Img2Img")),
    ("qwen-image", lambda: tiny_qwen_image("Inpaint")),
    ("qwen-image-edit", tiny_qwen_image_edit),
    ("qwen-image-edit", lambda: tiny_qwen_image_edit("Inpaint")),
    ("qwen-image-edit-plus", lambda: tiny_qwen_image_edit("Plus")),
    ("qwen-image-layered", tiny_qwen_image_layered),
    ("sana-wm", tiny_sana_wm),
    ("z-image-omni", tiny_z_image_omni),
    ("z-image", tiny_z_image),
    ("z-image", lambda: tiny_z_image("Img2Img")),
    ("z-image", lambda: tiny_z_image("Inpaint")),
    ("flux2", tiny_flux2),
    ("flux2-klein", lambda: tiny_flux2("Klein")),
    ("flux2-klein", lambda: tiny_flux2("KleinInpaint")),
    ("flux2-klein", lambda: tiny_flux2("KleinKV")),
    ("wan", lambda: tiny_wan(i2v=True)),
]


def test_families_are_the_records_in_order() -> None:
    assert FAMILIES == (
        "sd",
        "sdxl",
        "sdxl-refiner",
        "sd3",
        "flux",
        "chroma",
        "pixart",
        "wan",
        "qwen-image",
        "qwen-image-edit-plus",
        "qwen-image-edit",
        "qwen-image-layered",
        "z-image",
        "z-image-omni",
        "flux2",
        "flux2-klein",
        "kolors",
        "lumina2",
        "sana-wm",
        "sana",
        "hidream",
    )
    assert [family_record(name).name for name in FAMILIES] == list(FAMILIES)


@pytest.mark.parametrize(("family", "build"), PIPELINES, ids=[f for f, _ in PIPELINES])
def test_each_tiny_pipeline_is_covered_by_exactly_its_record(
    family: str, build: Callable[[], Any]
) -> None:
    pipe = build()
    assert [record.name for record in RECORDS if record.covers(pipe)] == [family]
    assert family_of(pipe) == family


@pytest.mark.parametrize(
    ("record", "name"),
    [(record, name) for record in RECORDS for name in record.pipelines],
    ids=[f"{record.name}-{name}" for record in RECORDS for name in record.pipelines],
)
def test_listed_pipeline_classes_fit_their_record(record: Family, name: str) -> None:
    """A class a record lists takes every component the record reads and none it lacks."""
    params = inspect.signature(getattr(diffusers, name).__init__).parameters
    assert name.startswith(record.class_prefix)
    for component in (record.denoiser, *record.needs, *record.loaded):
        assert component in params, f"{name} has no {component!r}"
    for tower in record.towers:
        assert tower.component in params, f"{name} has no {tower.component!r}"
        assert tower.tokenizer in params, f"{name} has no {tower.tokenizer!r}"
    for component in record.lacks:
        assert component not in params, f"{name} has {component!r}"


def test_only_families_with_a_ti_tower_take_embeddings() -> None:
    takes = {record.name for record in RECORDS if record.ti_towers}
    assert takes == {"sd", "sdxl", "sdxl-refiner"}
    parts = {record.name: [t.ti_part for t in record.ti_towers] for record in RECORDS}
    assert parts["sd"] == [""]
    assert parts["sdxl"] == ["clip_l", "clip_g"]
    assert parts["sdxl-refiner"] == ["clip_g"]
