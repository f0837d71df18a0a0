"""The comparison harness: sweeps, axes, one grid on a tiny random SD pipeline, and sharding.

The pipeline is ``tiny_sd1`` (random weights, 2 steps), so pictures are noise: the tests check
what is held fixed (latents per seed, encodings per conditioning), what is written (grid, cells
with infotext, metrics, GIF), and that a grid sharded over two processes equals one run alone.
Steps and size are capped before anything runs, and a failed write leaves the old files whole.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import promptweights as pw
from promptweights.compare import (
    WEIGHT_SLOT,
    Axis,
    find_prompt_sweep,
    parse_sweep,
    parse_values,
    sweep_template,
)
from promptweights.errors import CompareError, LimitExceededError, UnknownNameError
from promptweights.testing import bracket_soup, prompts, weights

TESTS = Path(__file__).resolve().parent

# --- sweeps and axes (no torch) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("0:1.5:0.25", (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)),
        ("0..1:0.5", (0.0, 0.5, 1.0)),
        ("0.5:1", (0.5, 0.75, 1.0)),  # default step 0.25
        ("0:0.3:0.1", (0.0, 0.1, 0.2, 0.3)),  # no float drift
        ("1.2", (1.2,)),
        ("-1, 0,2", (-1.0, 0.0, 2.0)),
        ("1:1:0.1", (1.0,)),
    ],
)
def test_parse_values(text: str, values: tuple[float, ...]) -> None:
    assert parse_values(text) == values


@pytest.mark.parametrize("text", ["", "a", "0:1:0", "0:1:-1", "1:0:0.1", "0,,1", "0:1:x", "inf"])
def test_parse_values_refuses(text: str) -> None:
    with pytest.raises(CompareError):
        parse_values(text)


def test_parse_values_caps_the_count() -> None:
    with pytest.raises(LimitExceededError):
        parse_values("0:1000:1")


def test_parse_sweep() -> None:
    axis = parse_sweep("red hair=0.5,1")
    assert axis == Axis("weight", (0.5, 1.0), span="red hair")
    assert axis.labels() == ["red hair=0.5", "red hair=1"]
    for bad in ("0:1", "=0:1", "smile=", "smile=x"):
        with pytest.raises(CompareError):
            parse_sweep(bad)


@pytest.mark.parametrize(
    ("prompt", "span", "template"),
    [
        ("a (smile:1.2), eyes", "smile", "a (smile:W), eyes"),
        ("a ( smile : .5 ), eyes", "smile", "a ( smile : W ), eyes"),
        ("a smile, smiles", "smile", "a (smile:W), smiles"),
        ("smiles, a smile", "smile", "smiles, a (smile:W)"),
        ("((red hair)) x", "red hair", "(((red hair:W))) x"),
    ],
)
def test_sweep_template(prompt: str, span: str, template: str) -> None:
    assert sweep_template(prompt, span).replace(WEIGHT_SLOT, "W") == template


def test_sweep_template_needs_the_span() -> None:
    with pytest.raises(CompareError, match="not in the prompt"):
        sweep_template("a smiles", "smile")


def test_find_prompt_sweep() -> None:
    found = find_prompt_sweep("a (smile:{0,1}) face {not a sweep}")
    assert found is not None
    template, axis = found
    assert template == f"a (smile:{WEIGHT_SLOT}) face {{not a sweep}}"
    assert axis == Axis("weight", (0.0, 1.0), span="smile")
    assert find_prompt_sweep("a {b} c") is None
    with pytest.raises(CompareError, match="one weight"):
        find_prompt_sweep("(a:{0,1}) (b:{0,1})")


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("colour", (1,)),
        ("seed", ()),
        ("seed", (1.5,)),
        ("seed", (-1,)),
        ("steps", (0,)),
        ("clip_skip", (True,)),
        ("cfg", (float("nan"),)),
        ("strategy", (3,)),
        ("sampler", (3,)),
    ],
)
def test_axis_refuses(name: str, values: tuple[Any, ...]) -> None:
    with pytest.raises(CompareError):
        Axis(name, values)


def test_axis_labels() -> None:
    assert Axis("cfg", (3, 7.5)).labels() == ["CFG 3", "CFG 7.5"]
    assert Axis("sampler", ("Euler a", None)).labels() == ["sampler Euler a", "sampler default"]
    assert Axis("clip_skip", (1, 2)).labels() == ["clip skip 1", "clip skip 2"]


# --- grids on a tiny pipeline ---------------------------------------------------------------

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("PIL")
np = pytest.importorskip("numpy")

from _tiny_pipelines import tiny_sd1  # noqa: E402
from PIL import Image  # noqa: E402

from promptweights.compare import _adapter_encode, compare  # noqa: E402
from promptweights.infotext import read_image  # noqa: E402

FAST = {"steps": 2, "cfg": 5.0, "progress": False}


@pytest.fixture(scope="module")
def pipe() -> Any:
    torch.set_num_threads(1)
    pipe = tiny_sd1()
    pipe.set_progress_bar_config(disable=True)
    return pipe


class CountingEncode:
    """Stands in for the encoder function and counts the conditionings asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, pipe: Any, prompt: str, negative: str, **options: Any) -> Any:
        self.calls.append((prompt, str(options["strategy"])))
        return _adapter_encode(pipe, prompt, negative, **options)


@pytest.mark.slow
def test_grid_files_metrics_and_infotext(pipe: Any, tmp_path: Path) -> None:
    result = compare(
        pipe,
        "a (red:{0..1:0.5}) cat",
        [Axis("strategy", ("a1111", "comfy"))],
        negative_prompt="blue dog",
        seed=3,
        sampler="Euler",
        out_dir=tmp_path,
        model_name="tiny",
        **FAST,  # type: ignore[arg-type]
    )
    assert [axis.name for axis in result.axes] == ["weight", "strategy"]
    assert len(result.cells) == 6
    assert [cell.prompt for cell in result.cells[:3]] == [
        "a (red:0) cat",
        "a (red:0.5) cat",
        "a (red:1) cat",
    ]
    # Files: grid, one PNG per cell with its infotext, metrics, GIF.
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == result.grid.size
        assert grid.width > 3 * 128
        assert grid.height > 2 * 128
    params = read_image(tmp_path / "cells" / "004.png")
    assert params.prompt == "a (red:0.5) cat"
    assert params.negative_prompt == "blue dog"
    assert (params.steps, params.sampler, params.cfg_scale, params.seed) == (2, "Euler", 5.0, 3)
    assert (params.width, params.height, params.model) == (16, 16, "tiny")
    assert params.settings["Prompt weighting"] == "comfy"
    assert "Prompt weighting" not in read_image(tmp_path / "cells" / "001.png").settings
    summary = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert summary["axes"][0] == {"name": "weight", "span": "red", "values": [0.0, 0.5, 1.0]}
    cells = summary["cells"]
    assert [c["strategy"] for c in cells] == ["a1111"] * 3 + ["comfy"] * 3
    assert cells[0]["pixel_distance"] == 0.0
    assert all(c["baseline"] == 0 for c in cells)
    assert cells[1]["pixel_distance"] > 0
    # Weight 1 is the unweighted prompt (up to the mean restoration's rounding); 0 is far off.
    assert cells[2]["cosine_distance"] < 1e-5
    assert cells[0]["cosine_distance"] > 1e-4
    with (tmp_path / "metrics.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    assert rows[4]["weight"] == "0.5"
    assert float(rows[4]["pixel_distance"]) == pytest.approx(cells[4]["pixel_distance"])
    with Image.open(tmp_path / "sweep.gif") as gif:
        assert gif.n_frames == 3


@pytest.mark.slow
def test_same_seed_same_latents_and_one_encoding_each(
    pipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Any, Any]] = []
    original = type(pipe).__call__

    def recording(self: Any, **kwargs: Any) -> Any:
        seen.append((kwargs["latents"].clone(), type(self.scheduler).__name__))
        return original(self, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", recording)
    counting = CountingEncode()
    axes = [
        Axis("sampler", (None, "Euler", "DPM++ 2M")),
        Axis("seed", (1, 2)),
        Axis("strategy", ("a1111", "compel")),
    ]
    result = compare(pipe, "a (red:1.3) cat", axes, encode=counting, **FAST)  # type: ignore[arg-type]
    assert len(seen) == 12
    by_seed: dict[int, list[Any]] = {}
    for cell, (latents, _) in zip(result.cells, seen, strict=True):
        by_seed.setdefault(cell.seed, []).append(latents)
    for group in by_seed.values():
        assert all(torch.equal(group[0], latents) for latents in group)
    assert not torch.equal(by_seed[1][0], by_seed[2][0])
    assert {name for _, name in seen} == {
        "DDIMScheduler",
        "EulerDiscreteScheduler",
        "DPMSolverMultistepScheduler",
    }
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"  # restored
    # Two strategies and the unweighted reference: three encodings for twelve cells.
    assert sorted(counting.calls) == [
        ("a (red:1.3) cat", "a1111"),
        ("a (red:1.3) cat", "compel"),
        ("a (red:1.3) cat", "ignore"),
    ]
    assert result.encoded == 3


@pytest.mark.slow
def test_a_callable_strategy_is_named_by_its_function(pipe: Any, tmp_path: Path) -> None:
    from promptweights.strategies import comfy

    def halfway(z: Any, w: Any, extras: Any) -> Any:
        return (z + comfy(z, w, extras)) / 2

    axes = [Axis("strategy", ("a1111", halfway))]
    result = compare(pipe, "a (red:1.4) cat", axes, out_dir=tmp_path, **FAST)  # type: ignore[arg-type]
    assert [m["strategy"] for m in result.metrics] == ["a1111", "halfway"]
    assert result.axes[0].labels() == ["strategy a1111", "strategy halfway"]
    assert read_image(tmp_path / "cells" / "001.png").settings["Prompt weighting"] == "halfway"
    summary = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert summary["axes"][0]["values"] == ["a1111", "halfway"]


@pytest.mark.slow
def test_sdxl_with_and_and_a_clip_skip_axis() -> None:
    from _tiny_pipelines import tiny_sdxl

    sdxl = tiny_sdxl()
    sdxl.set_progress_bar_config(disable=True)
    axes = [Axis("clip_skip", (1, 2))]
    result = compare(sdxl, "a (red:{0.5,1.5}) cat AND blue sky", axes, sampler="Euler", **FAST)  # type: ignore[arg-type]
    assert len(result.images) == 4
    assert all(image.shape == (16, 16, 3) for image in result.images)
    assert result.metrics[2]["pixel_distance"] > 0  # clip skip changes the picture
    assert not any(hook for hook in sdxl.unet._forward_hooks.values())  # AND hooks removed


@pytest.mark.slow
def test_editing_prompts_are_keyed_by_their_schedule(pipe: Any) -> None:
    counting = CountingEncode()
    compare(pipe, "a [cat:dog:0.5]", [Axis("steps", (2, 3))], encode=counting, progress=False)
    assert len(counting.calls) == 4  # each step count has its own switching step


@pytest.mark.slow
def test_bad_grids_fail_before_anything_runs(pipe: Any) -> None:
    counting = CountingEncode()
    with pytest.raises(UnknownNameError, match="strategy"):
        compare(pipe, "a", [Axis("strategy", ("a1111", "nope"))], encode=counting)
    with pytest.raises(UnknownNameError, match="sampler"):
        compare(pipe, "a", [Axis("sampler", ("Euler z",))], encode=counting)
    with pytest.raises(CompareError, match="no diffusers scheduler"):
        compare(pipe, "a", [Axis("sampler", ("DPM fast",))], encode=counting)
    with pytest.raises(UnknownNameError, match="normalization"):
        compare(pipe, "a", normalization="nope", encode=counting)
    four = [Axis("seed", (1,)), Axis("cfg", (1,)), Axis("steps", (1,)), Axis("sampler", (None,))]
    with pytest.raises(CompareError, match="at most three"):
        compare(pipe, "a", four, encode=counting)
    with pytest.raises(CompareError, match="more than once"):
        compare(pipe, "a", [Axis("seed", (1,)), Axis("seed", (2,))], encode=counting)
    with pytest.raises(CompareError, match="weight axis"):
        compare(pipe, "(a:{0,1})", [Axis.sweep("a", "0,1")], encode=counting)
    with pytest.raises(CompareError, match="not in the prompt"):
        compare(pipe, "a cat", [Axis.sweep("dog", "0,1")], encode=counting)
    with pytest.raises(LimitExceededError):
        compare(pipe, "a", [Axis("seed", tuple(range(33))), Axis("cfg", tuple(range(32)))])
    assert counting.calls == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.slow
def test_sharded_grid_equals_one_process(pipe: Any, tmp_path: Path) -> None:
    import _compare_shard as shard

    alone = compare(pipe, shard.PROMPT, shard.AXES, **shard.SETTINGS)  # type: ignore[arg-type]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]),
    }
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # torchrun-style launch; on a machine without GPUs, gloo on the CPU
        "--num_processes=2",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        f"--main_process_port={free_port()}",  # other suites on the machine may hold 29500
        str(TESTS / "_compare_shard.py"),
        str(tmp_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = sorted(re.findall(r"cells=\d+ ran=\[[\d, ]*\] encoded=\d+", done.stdout))
    assert reports == ["cells=4 ran=[0, 1] encoded=4", "cells=4 ran=[2, 3] encoded=4"], done.stdout
    summary = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert summary["cells"] == json.loads(json.dumps(alone.metrics))
    with Image.open(tmp_path / "grid.png") as grid:
        assert np.array_equal(np.asarray(grid), np.asarray(alone.grid))


# --- properties (promptweights.testing) -----------------------------------------------------


@given(st.integers(-20, 20), st.integers(1, 8), st.sampled_from([0.05, 0.1, 0.25, 0.5]), st.data())
def test_ranges_are_inclusive_and_evenly_spaced(
    start: int, count: int, step: float, data: st.DataObject
) -> None:
    low = start * step
    high = low + (count - 1) * step
    spelled = data.draw(
        st.sampled_from([f"{low:g}:{high:g}:{step:g}", f"{low:g}..{high:g}:{step:g}"])
    )
    values = parse_values(spelled)
    assert len(values) == count
    assert values[0] == pytest.approx(low)
    assert values[-1] == pytest.approx(high)
    assert all(b - a == pytest.approx(step) for a, b in itertools.pairwise(values))


@given(prompts(), weights(min_value=-5, max_value=5))
def test_a_swept_span_gets_exactly_its_weight(prompt: str, literal: str) -> None:
    template = sweep_template("zqx, " + prompt, "zqx")
    spans = pw.weighted_spans(template.replace(WEIGHT_SLOT, literal))
    if float(literal) != 1.0:
        assert spans[0] == ("zqx", float(literal))
    else:
        assert spans[0][0].startswith("zqx")


@given(prompts(), weights(min_value=0, max_value=3))
def test_an_explicit_weight_is_replaced_in_place(prompt: str, literal: str) -> None:
    text = f"(zqx:{literal}) {prompt}"
    template = sweep_template(text, "zqx")
    assert template.replace(WEIGHT_SLOT, literal) == text
    assert template.count(WEIGHT_SLOT) == 1


@given(bracket_soup(max_size=60))
def test_finding_sweeps_never_crashes(text: str) -> None:
    try:
        found = find_prompt_sweep(text)
    except (CompareError, LimitExceededError):
        return
    if found is not None:
        template, axis = found
        assert template.count(WEIGHT_SLOT) == 1
        assert axis.name == "weight"
        assert len(axis.labels()) == len(axis.values)


@pytest.mark.slow
def test_a_small_model_runs_on_one_thread(pipe: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def recording(pipe: Any, prompt: str, negative: str, **options: Any) -> Any:
        seen.append(torch.get_num_threads())
        return _adapter_encode(pipe, prompt, negative, **options)

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    try:
        compare(pipe, "a cat", encode=recording, **FAST)  # type: ignore[arg-type]
        assert set(seen) == {1}
        assert torch.get_num_threads() == 2  # restored
        seen.clear()
        compare(pipe, "a dog", encode=recording, threads=2, **FAST)  # type: ignore[arg-type]
        assert set(seen) == {2}
        seen.clear()
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice stands
        compare(pipe, "a cow", encode=recording, **FAST)  # type: ignore[arg-type]
        assert set(seen) == {2}
    finally:
        torch.set_num_threads(1)


# --- every cell re-runs from its infotext -------------------------------------------------------


@pytest.mark.slow
def test_every_cell_reruns_bit_for_bit_from_its_infotext(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from promptweights import toy
    from promptweights.cli import main
    from promptweights.compare import settings_from_infotext
    from promptweights.diffusers import from_infotext

    torch.set_num_threads(1)
    toy_pipe = toy.load_pipeline()
    prompt = "a (red:{0.5,1.5}) [circle:square:0.5], blue background"
    axes = [Axis("sampler", (None, "Euler a"))]  # the model's own scheduler, and a noisy one
    result = compare(
        toy_pipe, prompt, axes, steps=4, cfg=1.5, seed=5, out_dir=tmp_path, progress=False
    )
    assert type(toy_pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    for cell, image in zip(result.cells, result.images, strict=True):
        path = tmp_path / "cells" / f"{cell.index:03d}.png"
        params = read_image(path)
        if cell.sampler is None:
            assert params.settings["Diffusers scheduler"] == "DPMSolverMultistepScheduler"
            assert "Sampler" not in params.written
        else:
            assert (params.sampler, params.schedule_type) == ("Euler a", "Automatic")
        # 1. from_infotext on a freshly loaded model.
        fresh = toy.load_pipeline()
        kwargs = from_infotext(fresh, str(path))
        again = fresh(**kwargs, output_type="np").images[0]
        assert np.array_equal(again, image), cell
        # 2. The command line, with the settings the infotext holds.
        settings = settings_from_infotext(params)
        out = tmp_path / f"rerun{cell.index}"
        argv = ["compare", settings["prompt"], "--out", str(out), "--quiet"]
        argv += ["--seeds", str(settings["seed"]), "--steps", str(settings["steps"])]
        argv += ["--cfg", repr(settings["cfg"]), "--strategies", settings["strategy"]]
        argv += ["--clip-skip", str(settings["clip_skip"]), "--negative", ""]
        if settings.get("sampler"):
            argv += ["--samplers", settings["sampler"]]
        assert main(argv) == 0, capsys.readouterr().err
        with Image.open(out / "cells" / "000.png") as rerun, Image.open(path) as original:
            assert np.array_equal(np.asarray(rerun), np.asarray(original)), cell


# --- caps and atomic files ---------------------------------------------------------------------


def test_compare_caps_the_steps_before_any_model() -> None:
    from promptweights.compare import MAX_STEPS, Axis, plan_grid

    plan_grid("a", steps=MAX_STEPS)
    with pytest.raises(LimitExceededError, match="MAX_STEPS"):
        plan_grid("a", steps=MAX_STEPS + 1)
    with pytest.raises(LimitExceededError, match="MAX_STEPS"):
        plan_grid("a", [Axis("steps", (2, 2 * 10**9))])


def test_files_are_written_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toy_pipe: object
) -> None:
    import errno

    from promptweights import compare as compare_module
    from promptweights.errors import CompareError

    out = tmp_path / "out"
    compare_module.compare(toy_pipe, "a", out_dir=out, steps=1, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    calls = []

    def full_disk(handle: object, *args: object, **kwargs: object) -> None:
        calls.append(1)
        handle.write(b"half a file")  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(
        compare_module, "_save_png", lambda picture, params, handle: full_disk(handle)
    )
    with pytest.raises(CompareError, match="No space left on device"):
        compare_module.compare(toy_pipe, "a", out_dir=out, steps=1, progress=False, overwrite=True)
    assert calls
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_compare_checks_the_size_before_running(toy_pipe: object) -> None:
    from promptweights.compare import MAX_SIZE, compare
    from promptweights.errors import CompareError

    with pytest.raises(LimitExceededError, match="MAX_SIZE"):
        compare(toy_pipe, "a", height=MAX_SIZE + 8, progress=False)
    with pytest.raises(CompareError, match="multiple of 8"):
        compare(toy_pipe, "a", width=12, progress=False)
