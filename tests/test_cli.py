"""The command line: ``explain``, ``compare`` and ``infotext``; errors are one line and exit 2.

Commands run in-process through :func:`promptweights.cli.main`; one subprocess checks
``python -m promptweights`` itself. ``compare`` runs with 2 steps on the toy model and on a tiny
random pipeline saved to a folder (``--model``). Arguments, devices and output folders are checked
before any model loads; ``compare`` never clobbers a folder or follows a symlink in it.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _limited import run_limited
from hypothesis import given
from hypothesis import strategies as st

import promptweights as pw
from promptweights.cli import _Timeline, main
from promptweights.testing import bracket_soup, prompts

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


# Expected outputs written by hand from A1111's rules (a1111-behaviour.md §4.2-4.5): at S steps,
# [a:b:w] switches after t = int(w·S) for a fraction; sampler call k (from 0) uses the first
# schedule entry ending at or after k, so `a` is seen at calls 0…t; an alternation's entry at
# step s shows option (s-1) mod n, and call 0 uses the entry of step 1.


def test_explain_counts_sampler_calls_from_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["explain", "a [cat:dog:0.5]", "--steps", "4"], capsys)
    assert code == 0
    # t = int(0.5 * 4) = 2: cat at calls 0, 1, 2; dog at call 3.
    assert out == (
        "prompt: 'a [cat:dog:0.5]'\n"
        "\n"
        "part 1 of 1, AND weight 1\n"
        "4 sampler calls, numbered from 0\n"
        "edit or alternation  shows\n"
        "-------------------  -----------------------------------\n"
        "[cat:dog:0.5]        'cat' at calls 0-2; 'dog' at call 3\n"
        "calls  segment  weight\n"
        "-----  -------  ------\n"
        "0-2    'a cat'  1\n"
        "3      'a dog'  1\n"
    )


def test_explain_says_when_an_edit_never_switches(capsys: pytest.CaptureFixture[str]) -> None:
    # t = int(0.99 * 10) = 9 = the last call: `b` is never used.
    code, out, _ = run(["explain", "[a:b:0.99]", "--steps", "10"], capsys)
    assert code == 0
    assert "[a:b:0.99]           'a' at calls 0-9; 'b' never\n" in out
    assert "0-9    'a'      1\n" in out
    assert "'b'" not in out.split("calls  segment")[1]


def test_explain_shows_an_alternation_once_with_its_choice_per_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(["explain", "a [cat|dog]", "--steps", "20"], capsys)
    assert code == 0
    # Entries at every step 1…20; call 0 and call 1 use step 1's (cat), call k > 1 step k's.
    choice = "[cat|dog]            'cat' at calls 0-1, 3, 5, …, 19; 'dog' at calls 2, 4, …, 18\n"
    assert choice in out
    assert out.endswith(
        "calls             segment  weight\n"
        "----------------  -------  ------\n"
        "0-1, 3, 5, …, 19  'a cat'  1\n"
        "2, 4, …, 18       'a dog'  1\n"
    )


def test_explain_shows_break_as_a_chunk_boundary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["explain", "a BREAK (b)", "--steps", "1"], capsys)
    assert code == 0
    assert out.endswith(
        "1 sampler call, numbered from 0\n"
        "calls  segment  weight\n"
        "-----  -------  --------------------\n"
        "0      'a'      1\n"
        "       BREAK    (a new chunk starts)\n"
        "       'b'      1.1\n"
    )
    assert "-1" not in out
    assert "''" not in out


def _a1111_calls(part: str, steps: int) -> list[list[tuple[str, float]]]:
    """The spans sampler call k sees, from A1111's functions: the first entry ending at >= k."""
    schedule = pw.schedules(part, steps)
    return [pw.weighted_spans(next(t for end, t in schedule if k <= end)) for k in range(steps)]


def _explained_calls(text: str, steps: int) -> list[list[list[tuple[str, float]]]]:
    prompt = pw.parse(text)
    out = []
    for part in prompt.parts:
        seen: dict[int, list[tuple[str, float]]] = {}
        for calls, spans in _Timeline(part.children, steps).groups("a1111"):
            for k in (k for r in calls for k in r):
                assert k not in seen
                seen[k] = spans
        out.append([seen[k] for k in range(steps)])
    return out


@given(text=prompts() | bracket_soup(max_size=60), steps=st.integers(1, 12))
def test_explain_walks_the_tree_to_what_a1111_uses_at_each_call(text: str, steps: int) -> None:
    body = pw.extra_networks(pw.strip_comments(text))[0]
    try:
        expected = [_a1111_calls(part, steps) for part, _ in pw.split_and(body)]
    except pw.LimitExceededError:
        return
    assert _explained_calls(text, steps) == expected


def test_explain_with_a_model_lists_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("transformers")
    from _tiny_models import tiny_clip_tokenizer

    tiny_clip_tokenizer().save_pretrained(tmp_path / "model")
    tiny_clip_tokenizer().save_pretrained(tmp_path / "model" / "tokenizer")
    argv = ["explain", "a (red blue cat:1.2) BREAK [dog:mat:1]", "--steps", "3"]
    code, out, err = run([*argv, "--model", str(tmp_path / "model")], capsys)
    assert code == 0, err
    # [dog:mat:1] at 3 steps: t = 1, dog at calls 0-1, mat at call 2; one token table each.
    assert out.endswith(
        "tokens at calls 0-1\n"
        "chunk  pos  token     weight  span\n"
        "-----  ---  --------  ------  --------------\n"
        "1      1    a</w>     1       'a '\n"
        "       2    red</w>   1.2     'red blue cat'\n"
        "       3    blue</w>  1.2\n"
        "       4    cat</w>   1.2\n"
        "2      1    dog</w>   1       'dog'\n"
        "\n"
        "tokens at call 2\n"
        "chunk  pos  token     weight  span\n"
        "-----  ---  --------  ------  --------------\n"
        "1      1    a</w>     1       'a '\n"
        "       2    red</w>   1.2     'red blue cat'\n"
        "       3    blue</w>  1.2\n"
        "       4    cat</w>   1.2\n"
        "2      1    mat</w>   1       'mat'\n"
    )
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


def test_infotext_to_diffusers_lists_what_a_rerun_would_not_do(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "a cat <lora:ink:0.8>\nSteps: 20, Sampler: Euler, Size: 512x512, Hires upscale: 2"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))
    code, out, _ = run(["infotext", "-", "--to-diffusers"], capsys)
    assert code == 0
    warnings = json.loads(out)["warnings"]
    assert len(warnings) == 2
    assert "Hires upscale 2" in warnings[0]
    assert "not 1024x1024" in warnings[0]
    assert "<lora:ink:0.8>" in warnings[1]
    assert "lora_dir" in warnings[1]


def test_infotext_of_a_cell_made_with_the_models_own_scheduler(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "a cat\nSteps: 4, Diffusers scheduler: DDIMScheduler, CFG scale: 3, Seed: 1"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))
    code, out, _ = run(["infotext", "-", "--to-diffusers"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["scheduler"] == {"class": "DDIMScheduler", "model_default": True}
    assert info["pipeline"]["num_inference_steps"] == 4
    assert info["warnings"] == []


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
        "comfy, compel, comfy++, down-weight, ignore, none, span-lerp"
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


# --- one line and exit 2, before any model; files are not clobbered ----------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["explain", "[a|b]", "--steps", "1000"],
        ["explain", "(a" * 10 + "(b:1.2.3)", "--strict"],
    ],
)
def test_cli_reports_errors_in_one_line_with_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from promptweights.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("promptweights: error:")


def test_encode_compare_and_explain_refuse_huge_steps_without_allocating() -> None:
    result = run_limited(
        """
        import contextlib, io, tempfile
        import promptweights as pw
        from promptweights.cli import main
        from promptweights.diffusers import encode
        from _tiny_models import tiny_clip_model, tiny_clip_tokenizer, tiny_sd_pipeline

        tokenizer = tiny_clip_tokenizer()
        pipe = tiny_sd_pipeline(tokenizer, tiny_clip_model(tokenizer))
        out = {}
        for steps in (10**8, 2 * 10**9):
            try:
                encode(pipe, "a [b|c]", steps=steps)
                out[f"encode {steps}"] = "returned"
            except pw.LimitExceededError as error:
                out[f"encode {steps}"] = str(error)
            for argv in (
                ["explain", "a [b|c]", "--steps", str(steps)],
                ["compare", "a [b|c]", "--out", tempfile.mkdtemp() + "/out", "--steps", str(steps)],
            ):
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    code = main(argv)
                out[f"{argv[0]} {steps}"] = [code, err.getvalue()]
        print(json.dumps(out))
        """,
        megabytes=3072,
    )
    for steps in (10**8, 2 * 10**9):
        assert "entries" in str(result[f"encode {steps}"])
        for command in ("explain", "compare"):
            pair = result[f"{command} {steps}"]
            assert isinstance(pair, list)
            code, err = pair
            assert code == 2, err
            assert err.count("\n") == 1
            assert err.startswith("promptweights: error:")


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from promptweights.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def _one_line(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert err.startswith("promptweights: error: ")
    for word in words:
        assert word in err, err


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command loads a model: its checks must come first."""
    import promptweights.cli as cli

    def refuse(*args: object) -> object:
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "_load_pipeline", refuse)


@pytest.fixture
def with_toy(monkeypatch: pytest.MonkeyPatch, toy_pipe: object) -> None:
    import promptweights.cli as cli

    monkeypatch.setattr(cli, "_load_pipeline", lambda model, device: toy_pipe)


FAST = ["--steps", "1", "--quiet"]


@pytest.mark.usefixtures("no_model")
def test_a_non_empty_output_folder_is_refused_before_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "grid.png").write_bytes(b"the user's own picture")
    code, err = _cli(["compare", "a", "--out", str(tmp_path), *FAST], capsys)
    _one_line(code, err, "not empty", "--overwrite")
    assert (tmp_path / "grid.png").read_bytes() == b"the user's own picture"


@pytest.mark.usefixtures("with_toy")
def test_overwrite_replaces_our_files_and_never_follows_symlinks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "grid.png").symlink_to(victim)
    (out / "metrics.json").symlink_to(tmp_path / "created-through-a-link.json")
    (out / "notes.txt").write_text("mine")
    code, err = _cli(["compare", "a", "--out", str(out), "--overwrite", *FAST], capsys)
    assert code == 0, err
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "created-through-a-link.json").exists()
    assert not (out / "grid.png").is_symlink()
    assert (out / "grid.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((out / "metrics.json").read_text())["cells"]
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]

    # A cells/ symlink to another folder is refused: nothing is written through it.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "cells").rename(tmp_path / "old-cells")
    (out / "cells").symlink_to(elsewhere, target_is_directory=True)
    code, err = _cli(["compare", "a", "--out", str(out), "--overwrite", *FAST], capsys)
    _one_line(code, err, "symlink")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.usefixtures("with_toy")
def test_a_full_disk_while_writing_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from promptweights import compare as compare_module

    def full_disk(path: Path, write: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(compare_module, "_atomic_write", full_disk)
    code, err = _cli(["compare", "a", "--out", str(tmp_path / "out"), *FAST], capsys)
    _one_line(code, err, "No space left on device")


@pytest.mark.usefixtures("no_model")
@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--device", "bogus"], ["--device 'bogus'"]),
        (["--device", "cuda:99"], ["--device 'cuda:99'"]),
        (["--device", "meta"], ["--device 'meta'"]),
        (["--size", "800000x800000"], ["at most 4096"]),
        (["--size", "4104x8"], ["at most 4096"]),
        (["--size", "9" * 5000 + "x8"], ["WIDTHxHEIGHT"]),
        (["--size", "٨x٨"], ["WIDTHxHEIGHT"]),  # Arabic-Indic digits pass str.isdigit
    ],
)
def test_device_and_size_are_checked_before_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]
) -> None:
    code, err = _cli(["compare", "a", "--out", str(tmp_path / "out"), *argv, *FAST], capsys)
    _one_line(code, err, *words)


@pytest.mark.usefixtures("no_model")
def test_cuda_without_cuda_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, err = _cli(["compare", "a", "--out", str(tmp_path / "o"), "--device", "cuda"], capsys)
    _one_line(code, err, "no cuda device")


@pytest.mark.usefixtures("no_model")
def test_bad_output_paths_are_one_line_before_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    code, err = _cli(["compare", "a", "--out", str(a_file), *FAST], capsys)
    _one_line(code, err, "is a file")
    code, err = _cli(["compare", "a", "--out", str(a_file / "under"), *FAST], capsys)
    _one_line(code, err, "cannot write")
    if Path("/proc/self").is_dir():
        code, err = _cli(["compare", "a", "--out", "/proc/promptweights-out", *FAST], capsys)
        _one_line(code, err, "cannot write")
        code, err = _cli(["compare", "a", "--out", "/proc/self", "--overwrite", *FAST], capsys)
        _one_line(code, err, "cannot write")


def test_the_cli_turns_running_out_of_memory_into_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import promptweights.cli as cli

    def exhausted(*args: object, **kwargs: object) -> str:
        raise MemoryError

    monkeypatch.setattr(cli, "explain", exhausted)
    code, err = _cli(["explain", "a"], capsys)
    _one_line(code, err, "out of memory")
