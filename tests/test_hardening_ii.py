"""Hardening II (issue 12): caps that fire before the work, no silent non-finite conditioning,
output length capped, and a command line that neither clobbers files nor prints tracebacks.

The pipeline-state items (a failed ``encode`` restores everything) are in ``tests/test_state.py``,
the LoRA and textual-inversion file items in ``tests/test_network_files.py``. Memory bounds are
checked in a subprocess under ``RLIMIT_AS`` (the old code needed gigabytes there), never by timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import promptweights as pw
from promptweights.errors import LimitExceededError

ROOT = Path(__file__).resolve().parents[1]

resource = pytest.importorskip("resource")  # POSIX only


def _run_limited(code: str, megabytes: int = 2048, timeout: int = 300) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter whose address space is capped at ``megabytes``; the code
    prints one JSON object on its last line, which is returned."""
    script = (
        "import resource, json, sys\n"
        f"limit = {megabytes} * 2**20\n"
        "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n" + textwrap.dedent(code)
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- 1. caps that fire before the work ---------------------------------------------------------


def test_schedule_caps_fire_before_the_steps_are_built() -> None:
    # [a|b] at 10**8 steps built a 10**8-entry range (8.8 GB) before refusing; at 2*10**9 the
    # process was killed. Under a 512 MB address space both must refuse with the count.
    result = _run_limited(
        """
        import promptweights as pw
        out = {}
        for text, steps, kwargs in [
            ("[a|b]", 10**8, {}),
            ("[a|b]", 2 * 10**9, {}),
            ("x [a|b]", 2 * 10**9, {"hires_steps": 2 * 10**9}),
            ("[a|b]", 2 * 10**9, {"max_variants": 4 * 10**9, "max_chars": 10}),
        ]:
            key = f"{text} {steps} {sorted(kwargs)}"
            try:
                pw.schedules(text, steps, **kwargs)
                out[key] = "returned"
            except pw.LimitExceededError as error:
                out[key] = str(error)
        print(json.dumps(out))
        """,
        megabytes=512,
    )
    assert "100000000 entries" in str(result["[a|b] 100000000 []"])
    assert "2000000000 entries" in str(result["[a|b] 2000000000 []"])
    assert "2000000000 entries" in str(result["x [a|b] 2000000000 ['hires_steps']"])
    assert "2000000000 texts" in str(result["[a|b] 2000000000 ['max_chars', 'max_variants']"])


def test_schedule_counts_match_the_entries_they_stand_for() -> None:
    # The count the caps use equals the number of entries, with and without alternation.
    for text in ["[a|b]", "[a:b:3] [c:d:0.5]", "[a|b] [c:d:7]", "plain", "[a:b:0]"]:
        for steps in (-2, 0, 1, 2, 7, 30):
            entries = pw.schedules(text, steps, max_variants=10_000)
            pw.schedules.cache_clear()  # type: ignore[attr-defined]
            if len(entries) > 1:
                with pytest.raises(LimitExceededError, match=f"{len(entries)} entries"):
                    pw.schedules(text, steps, max_variants=len(entries) - 1)


def test_encode_compare_and_explain_refuse_huge_steps_without_allocating() -> None:
    result = _run_limited(
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


def test_compare_caps_the_steps_before_any_model() -> None:
    from promptweights.compare import MAX_STEPS, Axis, plan_grid

    plan_grid("a", steps=MAX_STEPS)
    with pytest.raises(LimitExceededError, match="MAX_STEPS"):
        plan_grid("a", steps=MAX_STEPS + 1)
    with pytest.raises(LimitExceededError, match="MAX_STEPS"):
        plan_grid("a", [Axis("steps", (2, 2 * 10**9))])


# --- 3. output length is capped ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pipe() -> object:
    from _tiny_models import tiny_clip_model, tiny_clip_tokenizer, tiny_sd_pipeline

    tokenizer = tiny_clip_tokenizer()
    return tiny_sd_pipeline(tokenizer, tiny_clip_model(tokenizer))


def _counting_encoder(pipe: object) -> tuple[object, list[int]]:
    from promptweights.encoders import TextEncoder

    encoder = TextEncoder.clip(pipe.text_encoder, pipe.tokenizer)  # type: ignore[attr-defined]
    calls: list[int] = []
    encoder.model.register_forward_pre_hook(lambda *_: calls.append(1))
    return encoder, calls


def test_output_tokens_are_capped_after_repetition_before_encoding(tiny_pipe: object) -> None:
    from promptweights.builder import build
    from promptweights.diffusers import encode

    # One unique row, but 100,000 windows of output (1.6 million tokens).
    text = " BREAK ".join(["red"] * 100_000)
    encoder, calls = _counting_encoder(tiny_pipe)
    with pytest.raises(LimitExceededError, match="max_output_tokens"):
        build(encoder, [[text]])  # type: ignore[arg-type]
    assert calls == []
    with pytest.raises(LimitExceededError, match="max_output_tokens"):
        encode(tiny_pipe, text)
    # The boundary, exactly: 2 texts × 3 windows of 77 tokens.
    groups = [["a BREAK b BREAK c", "d"]]
    assert build(encoder, groups, max_output_tokens=6 * 77).chunks == 3  # type: ignore[arg-type]
    with pytest.raises(LimitExceededError, match="max_output_tokens"):
        build(encoder, groups, max_output_tokens=6 * 77 - 1)  # type: ignore[arg-type]


def test_strategy_extras_count_towards_the_output_cap(tiny_pipe: object) -> None:
    from promptweights.builder import build

    encoder, calls = _counting_encoder(tiny_pipe)
    text = "[a] " * 40  # 40 down-weighted spans in one chunk
    with pytest.raises(LimitExceededError, match="masked"):
        build(encoder, [[text]], strategy="compel", max_output_tokens=20 * 77)  # type: ignore[arg-type]
    levels = " ".join(f"(x:{i / 100})" for i in range(1, 41))  # 40 distinct weights below 1
    with pytest.raises(LimitExceededError, match="levels"):
        build(encoder, [[levels]], strategy="down-weight", max_output_tokens=20 * 77)  # type: ignore[arg-type]
    assert calls == []
    build(encoder, [[text]], strategy="compel", max_output_tokens=41 * 77)  # type: ignore[arg-type]


def test_output_tokens_is_a_positive_int_limit() -> None:
    assert pw.Limits().output_tokens == 524_288
    with pytest.raises(ValueError, match="output_tokens"):
        pw.Limits(output_tokens=0)


# --- 2. no silent non-finite conditioning --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("a (red:" + "3" + "0" * 37 + ") cat", "red"),  # 3e37: finite, but z·w overflows float32
        ("a ((red:1" + "0" * 13 + "):1" + "0" * 13 + ") cat", "red"),  # 1e13 · 1e13 = 1e26
        ("x, " * 50 + "(blue:-1" + "0" * 30 + ")", "blue"),
    ],
)
def test_weights_past_the_bound_raise_with_the_position(
    tiny_pipe: object, text: str, span: str
) -> None:
    from promptweights.builder import build

    encoder, calls = _counting_encoder(tiny_pipe)
    with pytest.raises(pw.InvalidWeightError, match="MAX_WEIGHT") as raised:
        build(encoder, [[text]])  # type: ignore[arg-type]
    assert raised.value.source == text
    assert raised.value.pos == text.index(span)
    assert f"column {text.index(span) + 1}" in str(raised.value)
    assert calls == []


def test_weights_users_write_stay_finite(tiny_pipe: object) -> None:
    import torch

    from promptweights.builder import build

    encoder, _ = _counting_encoder(tiny_pipe)
    deep = "(" * 9 + "(red:100)" + ":100)" * 9  # ±100 nested ten deep: 1e20
    negative = "(" * 9 + "(red:-100)" + ":100)" * 9
    assert pw.weighted_spans(deep)[0][1] == pytest.approx(1e20)
    for strategy in ("a1111", "a1111-no-norm", "comfy", "compel", "down-weight", "comfy++"):
        result = build(encoder, [[deep, negative]], strategy=strategy)  # type: ignore[arg-type]
        assert bool(torch.isfinite(result.groups[0].embeds).all()), strategy


def test_no_non_finite_conditioning_is_ever_returned(tiny_pipe: object) -> None:
    import torch

    from promptweights.builder import build

    encoder, _ = _counting_encoder(tiny_pipe)

    def overflowing(z: torch.Tensor, w: torch.Tensor, extras: object) -> torch.Tensor:
        return z * w.unsqueeze(-1) * 1e30

    def nan(z: torch.Tensor, w: torch.Tensor, extras: object) -> torch.Tensor:
        return z * float("nan")

    text = "a (red:1" + "0" * 20 + ") cat"
    with pytest.raises(pw.InvalidWeightError, match="not finite") as raised:
        build(encoder, [[text]], strategy=overflowing)  # type: ignore[arg-type]
    assert raised.value.pos == text.index("red")
    with pytest.raises(pw.InvalidWeightError, match="not finite"):
        build(encoder, [["a cat"]], strategy=nan)  # type: ignore[arg-type]


def test_weight_errors_pickle_with_their_position() -> None:
    import pickle

    error = pw.InvalidWeightError("too big", source="a (b:9)", pos=3)
    again = pickle.loads(pickle.dumps(error))
    assert (again.message, again.source, again.pos) == ("too big", "a (b:9)", 3)
    assert str(again) == str(error)


# --- 6. the command line does not clobber files; 7. one line and exit 2, before any model -------


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


@pytest.fixture(scope="module")
def toy_pipe() -> object:
    import torch

    from promptweights import toy

    torch.manual_seed(0)
    return toy.load_pipeline("cpu")


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


def test_compare_checks_the_size_before_running(toy_pipe: object) -> None:
    from promptweights.compare import MAX_SIZE, compare
    from promptweights.errors import CompareError

    with pytest.raises(LimitExceededError, match="MAX_SIZE"):
        compare(toy_pipe, "a", height=MAX_SIZE + 8, progress=False)
    with pytest.raises(CompareError, match="multiple of 8"):
        compare(toy_pipe, "a", width=12, progress=False)


# --- 2 (adapter). AND weights, LoRA multipliers and files in the model's dtype ------------------


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
    ("prompt", "at"),
    [
        ("a cat, (red:1" + "0" * 30 + ") hat", "red"),
        ("a cat // a comment\n[[(red:1" + "0" * 30 + ")]] hat", "red"),
        ("a cat AND a dog:1" + "0" * 400, ":1"),
        ("a cat AND a dog:1" + "0" * 30, ":1"),
    ],
)
def test_encode_refuses_weights_past_the_bound_with_the_position(
    sd1: object, prompt: str, at: str
) -> None:
    from promptweights.diffusers import encode

    with pytest.raises(pw.InvalidWeightError, match="MAX_WEIGHT") as raised:
        encode(sd1, prompt)
    assert raised.value.source is not None
    assert raised.value.pos is not None
    assert raised.value.source[raised.value.pos :].startswith(at)


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


@pytest.mark.parametrize("kind", ["lora", "ti"])
def test_files_are_checked_in_the_models_dtype(
    sd1: object, lora_dir: Path, tmp_path: Path, kind: str
) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from promptweights.diffusers import encode, load_textual_inversion

    if kind == "lora":
        weights = load_file(str(lora_dir / "ink.safetensors"))
        key = next(iter(sorted(weights)))
        weights[key] = weights[key].double()
        weights[key][0] = 1e39  # finite in float64, infinite in the float32 model
        save_file(weights, str(tmp_path / "big.safetensors"))
        with pytest.raises(pw.NetworkFileError, match=f"{key!r}.*past the range of float32"):
            encode(sd1, "a <lora:big:1>", lora_dir=tmp_path)
    else:
        width = sd1.text_encoder.get_input_embeddings().embedding_dim  # type: ignore[attr-defined]
        vectors = torch.zeros(1, width, dtype=torch.float64)
        vectors[0, 0] = -1e39
        save_file({"emb_params": vectors}, str(tmp_path / "bigvec.safetensors"))
        with pytest.raises(pw.NetworkFileError, match="past the range of float32"):
            load_textual_inversion(sd1, tmp_path / "bigvec.safetensors")


# --- 5. textual inversion does not hijack words --------------------------------------------------


@pytest.mark.parametrize("token", ["red", "Red", "cat", "a"])
def test_textual_inversion_refuses_a_word_of_the_vocabulary(tmp_path: Path, token: str) -> None:
    import torch
    from _tiny_pipelines import tiny_sd1
    from safetensors.torch import save_file

    from promptweights.diffusers import load_textual_inversion

    pipe = tiny_sd1()
    assert "red</w>" in pipe.tokenizer.get_vocab()
    assert "red" not in pipe.tokenizer.get_vocab()  # only the word-final form is stored
    before = pipe.tokenizer("a red cat").input_ids
    width = pipe.text_encoder.get_input_embeddings().embedding_dim
    save_file({"emb_params": torch.ones(1, width)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(pw.NetworkFileError, match="already has the token"):
        load_textual_inversion(pipe, tmp_path / "x.safetensors", token=token)
    assert pipe.tokenizer("a red cat").input_ids == before
    assert load_textual_inversion(pipe, tmp_path / "x.safetensors", token="reddish-emb")


def test_real_clip_words_collide_in_either_form() -> None:
    from _tiny_models import SHARED_TOKENIZER

    if not (SHARED_TOKENIZER / "vocab.json").is_file():
        pytest.skip("../shared/clip-tokenizer is absent (a user's clone)")
    from promptweights.diffusers.textual_inversion import _collides

    vocab = json.loads((SHARED_TOKENIZER / "vocab.json").read_text(encoding="utf-8"))
    for word in ("red", "masterpiece", "blurry", "hands", "Hands"):
        assert _collides(word, vocab), word
    assert not _collides("my-embedding-xyzzy", vocab)


# --- 9. the LoRA folder ---------------------------------------------------------------------------


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


# --- found by the command-line fuzz --------------------------------------------------------------


def test_a_clip_skip_past_the_layers_is_an_error_not_an_index_error(sd1: object) -> None:
    from promptweights.diffusers import encode

    encode(sd1, "a cat", clip_skip=1)
    with pytest.raises(pw.InvalidArgumentError, match="past the 3 layers"):
        encode(sd1, "a cat", clip_skip=999)


def test_the_cli_turns_running_out_of_memory_into_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import promptweights.cli as cli

    def exhausted(*args: object, **kwargs: object) -> str:
        raise MemoryError

    monkeypatch.setattr(cli, "explain", exhausted)
    code, err = _cli(["explain", "a"], capsys)
    _one_line(code, err, "out of memory")
