"""LoRA tags and the LoRA folder (``promptweights.diffusers.lora``): multipliers checked with their
position, symlinks out of the folder not followed, close-name hints, and a cached folder scan.

The files themselves are checked in ``test_network_files.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import promptweights as pw

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def sd1() -> object:
    from _tiny_pipelines import tiny_sd1

    return tiny_sd1()


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_diffusers import write_lora

    folder = tmp_path_factory.mktemp("loras")
    write_lora(folder, "ink")
    return folder


@pytest.mark.parametrize(
    "tag", ["<lora:ink:nan>", "<lora:ink:inf>", "<lora:ink:1e308>", "<lora:ink:1:te=nan>"]
)
def test_lora_multipliers_are_checked_with_the_position(
    sd1: object, lora_dir: Path, tag: str
) -> None:
    from promptweights.diffusers import encode

    prompt = "a cat, " + tag
    with pytest.raises(pw.InvalidWeightError, match="MAX_MULTIPLIER") as raised:
        encode(sd1, prompt, lora_dir=lora_dir)
    assert raised.value.pos == prompt.index("<lora")
    encode(sd1, "a cat, <lora:ink:-1000:te=1000>", lora_dir=lora_dir)  # the bound itself


def _plan(pipe: object, folder: Path, prompt: str) -> object:
    from promptweights.diffusers.lora import _plan_loras

    return _plan_loras(pipe, pw.extra_networks(prompt)[1], folder, None)


def test_lora_symlinks_out_of_the_folder_are_not_followed(
    sd1: object, lora_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "loras"
    (folder / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.safetensors").write_bytes((lora_dir / "ink.safetensors").read_bytes())
    (folder / "ink.safetensors").write_bytes((lora_dir / "ink.safetensors").read_bytes())
    (folder / "secret.safetensors").symlink_to(outside / "secret.safetensors")
    (folder / "alias.safetensors").symlink_to(folder / "ink.safetensors")  # inside: fine
    (folder / "sub" / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(pw.NetworkFileError, match="symlink to a file outside"):
        _plan(sd1, folder, "<lora:secret:1>")
    assert _plan(sd1, folder, "<lora:alias:1>") is not None
    with pytest.raises(pw.UnknownNameError):
        _plan(sd1, outside.parent / "loras" / "sub", "<lora:secret:1>")


def test_unknown_lora_suggests_close_names_only(sd1: object, tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"style_{i:02d}.safetensors").write_bytes(b"")
    (tmp_path / "inkwash.safetensors").write_bytes(b"")
    with pytest.raises(pw.UnknownNameError) as raised:
        _plan(sd1, tmp_path, "<lora:inkwsh:1>")
    message = str(raised.value)
    assert "'inkwash'" in message
    assert "style_" not in message
    assert "31 LoRAs" in message
    with pytest.raises(pw.UnknownNameError) as raised:
        _plan(sd1, tmp_path, "<lora:style_1:1>")
    assert str(raised.value).count("style_") <= 5 + 1  # five suggestions and the name itself
    with pytest.raises(pw.UnknownNameError, match="no name is close"):
        _plan(sd1, tmp_path, "<lora:zzzzzzzz:1>")


def test_lora_folder_scan_is_cached_until_a_folder_changes(
    sd1: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typing import Any

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.safetensors").write_bytes(b"")
    walks: list[object] = []
    real_walk = os.walk

    def counting_walk(*args: Any, **kwargs: Any) -> Any:
        walks.append(args[0])
        return real_walk(*args, **kwargs)

    monkeypatch.setattr(os, "walk", counting_walk)
    for _ in range(3):
        with pytest.raises(pw.UnknownNameError):
            _plan(sd1, tmp_path, "<lora:b:1>")
    assert len(walks) == 1
    (tmp_path / "sub" / "b.safetensors").write_bytes(b"")  # a change one folder down
    with pytest.raises(pw.NetworkFileError):  # found now: an empty file is not readable
        _plan(sd1, tmp_path, "<lora:b:1>")
    assert len(walks) == 2
