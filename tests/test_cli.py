"""The command line: ``explain``, ``compare`` and ``infotext``; errors are one line and exit 2.

Commands run in-process through :func:`promptweights.cli.main`; one subprocess checks
``python -m promptweights`` itself. ``compare`` runs with 2 steps on the toy model and on a tiny
random pipeline saved to a folder (``--model``).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from promptweights.cli import main

ROOT = Path(__file__).resolve().parents[1]
INFOTEXT = "a (cat:1.2)\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("promptweights: error: ")
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0]


def test_explain_is_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["explain", "a (cat:1.2)", "--steps", "4"], capsys)
    assert code == 0
    assert "'cat'    1.2" in out


def test_explain_with_a_model_lists_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("transformers")
    from _tiny_models import tiny_clip_tokenizer

    tiny_clip_tokenizer().save_pretrained(tmp_path / "model" / "tokenizer")
    argv = ["explain", "a (cat:1.2) BREAK [dog:mat:1]", "--steps", "2"]
    code, out, err = run([*argv, "--model", str(tmp_path / "model")], capsys)
    assert code == 0, err
    assert "tokens at step 1" in out
    assert "tokens at step 2" in out
    assert "1      2    cat</w>  1.2     'cat'" in out
    assert "2      1    dog</w>  1       'dog'" in out  # BREAK starts chunk 2
    code, _, err = run([*argv, "--model", str(tmp_path / "missing")], capsys)
    assert_one_line_error(code, err, "no model folder")


# --- infotext -----------------------------------------------------------------------------------


def test_infotext_of_text_on_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(INFOTEXT.encode("utf-8")))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, out, _ = run(["infotext", "-"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["prompt"] == "a (cat:1.2)"
    assert info["negative_prompt"] == "dog"
    assert info["parameters"] == {
        "Steps": "20",
        "Sampler": "Euler a",
        "CFG scale": "7",
        "Seed": "5",
    }
    assert (info["steps"], info["sampler"], info["cfg_scale"], info["seed"]) == (
        20,
        "Euler a",
        7,
        5,
    )
    assert info["clip_skip"] == 1


def test_infotext_of_a_png_to_diffusers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image_module = pytest.importorskip("PIL.Image")
    from promptweights.infotext import save_image

    path = tmp_path / "a.png"
    save_image(image_module.new("RGB", (8, 8)), path, INFOTEXT + ", Clip skip: 2")
    code, out, _ = run(["infotext", str(path), "--to-diffusers"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["scheduler"]["class"] == "EulerAncestralDiscreteScheduler"
    assert info["scheduler"]["config"]["timestep_spacing"] == "linspace"
    assert info["encode"]["clip_skip"] == 1  # A1111's Clip skip 2
    assert info["encode"]["strategy"] == "a1111"  # weights in the prompt: Emphasis Original
    assert info["pipeline"]["num_inference_steps"] == 20
    assert info["pipeline"]["guidance_scale"] == 7.0
    assert "manual_seed(5)" in info["pipeline"]["generator"]


def test_infotext_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(["infotext", str(tmp_path / "missing.png")], capsys)
    assert_one_line_error(code, err, "cannot read")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, _, err = run(["infotext", str(broken)], capsys)
    assert_one_line_error(code, err, "not an image")
    binary = tmp_path / "binary.bin"
    binary.write_bytes(b"\xff\xfe\xfa")
    code, _, err = run(["infotext", str(binary)], capsys)
    assert_one_line_error(code, err, "neither an image nor UTF-8 text")
    monkeypatch.setattr(
        sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a\nSampler: Nope, Steps: 2, Seed: 1"))
    )
    code, _, err = run(["infotext", "-", "--to-diffusers"], capsys)
    assert_one_line_error(code, err, "unknown sampler 'Nope'")


# --- compare: errors before any model is loaded --------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--strategies", "a1111,nope"], ["unknown strategy 'nope'", "comfy"]),
        (["--sweep", "cat"], ["bad sweep"]),
        (["--sweep", "cat=0:1:0"], ["step must be a positive number"]),
        (["--sweep", "dog=0,1"], ["not in the prompt"]),
        (["--seeds", "1,x"], ["--seeds takes integers"]),
        (["--cfg", "high"], ["--cfg takes numbers"]),
        (["--steps", "0"], ["must be at least 1"]),
        (["--size", "512"], ["WIDTHxHEIGHT"]),
        (["--size", "500x512"], ["multiples of 8"]),
        (["--samplers", "Euler,Nope"], ["unknown sampler 'Nope'"]),
        (["--samplers", "DPM fast"], ["no diffusers scheduler"]),
        (["--normalizations", "none,odd"], ["unknown normalization 'odd'"]),
        (
            ["--seeds", "1,2", "--cfg", "1,2", "--steps", "1,2", "--strategies", "a1111,comfy"],
            ["at most three axes"],
        ),
        (["--model", "/no/such/model"], ["no model folder"]),
    ],
)
def test_compare_errors(
    argv: list[str], words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["compare", "a (cat:1.2)", "--out", str(tmp_path), *argv], capsys)
    assert_one_line_error(code, err, *words)
    assert not any(tmp_path.iterdir())


def test_python_dash_m_gives_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "promptweights", "compare", "a", "--out", "x", "--strategies", "?"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "promptweights: error: unknown strategy '?'; known: a1111, a1111-no-norm, lpw, lerp-eos, "
        "comfy, compel, comfy++, down-weight, ignore, none"
    ]


def test_the_cli_module_imports_no_heavy_packages() -> None:
    code = (
        "import sys, promptweights.cli; "
        "print(sorted(m for m in ('torch', 'diffusers', 'PIL', 'accelerate') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "[]"


# --- compare: real runs ---------------------------------------------------------------------------


@pytest.mark.slow
def test_compare_on_the_toy_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("diffusers")
    toy = pytest.importorskip("promptweights.toy")
    with toy.model_path() as path:
        if not (path / "model_index.json").is_file():
            pytest.skip("the toy model is not built")
    argv = ["compare", "a (red:1.2) circle, blue background", "--out", str(tmp_path)]
    argv += ["--strategies", "a1111,comfy", "--sweep", "red=0.5,1.5", "--steps", "2", "--quiet"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "4 cells on weight, strategy" in out
    assert "cells/003.png  red=1.5, strategy comfy" in out
    for name in ("grid.png", "metrics.json", "metrics.csv", "sweep.gif", "cells/003.png"):
        assert (tmp_path / name).is_file()
    from promptweights.infotext import read_image

    params = read_image(tmp_path / "cells" / "003.png")
    assert params.prompt == "a (red:1.5) circle, blue background"
    assert (params.steps, params.cfg_scale, params.seed, params.model) == (
        2,
        1.5,  # the toy model's guidance (toy.DEFAULT_GUIDANCE)
        0,
        "promptweights-toy",
    )


@pytest.mark.slow
def test_compare_with_a_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("diffusers")
    from _tiny_pipelines import tiny_sd1

    tiny_sd1().save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    argv = ["compare", "a (red:1.2) cat", "--out", str(out), "--model", str(tmp_path / "model")]
    argv += ["--seeds", "1,2", "--samplers", "Euler", "--steps", "2", "--cfg", "3", "--quiet"]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert "2 cells on seed" in stdout
    summary: dict[str, Any] = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert [cell["seed"] for cell in summary["cells"]] == [1, 2]
    assert {cell["sampler"] for cell in summary["cells"]} == {"Euler"}
    assert not (out / "sweep.gif").exists()
