"""Fuzzing the command line's argument space: no argument list ends in a traceback (issue 12).

Hypothesis draws whole argument lists over every option of ``explain``, ``compare`` and
``infotext``: good values, values past every cap, malformed numbers, bad devices, sizes and output
paths. Each case runs ``promptweights.cli.main`` in its own interpreter under an address-space limit
(``RLIMIT_AS``, 4 GiB) and a time limit; it must exit 0, or 2 with ``promptweights: error:`` lines
(argparse's own usage errors also exit 2), and never print a traceback. The example count is small
(a case that passes every check runs the toy model), so it fits a 2-core CI run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("resource")  # POSIX only

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MEMORY = 4 * 2**30

_RUNNER = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))
from promptweights.cli import main
sys.exit(main(json.loads(sys.argv[1])))
"""

_NUMBERS = st.sampled_from(
    ["1", "2", "0", "-1", "2000000000", "1e308", "nan", "inf", "-inf", "1.5", "x", "", "9" * 5000]
)
_PROMPTS = st.one_of(
    st.sampled_from(
        [
            "a (red:1.2) circle",
            "[a|b] cat",
            "a [cat:dog:0.5]",
            "(smile:{0,1})",
            "a (red:1" + "0" * 30 + ")",
            " BREAK ".join(["red"] * 200),
            "a AND b:1" + "0" * 400,
            "<lora:x:nan> cat",
            "(" * 300 + "a",
        ]
    ),
    st.text(st.characters(codec="utf-8"), max_size=40),
)
_OUT = st.sampled_from(["fresh", "file", "proc", "under-file", "non-empty"])


def _out_path(kind: str, folder: Path) -> str:
    if kind == "file":
        return str(folder / "a-file")
    if kind == "proc":
        return "/proc/promptweights-fuzz"
    if kind == "under-file":
        return str(folder / "a-file" / "out")
    if kind == "non-empty":
        return str(folder)
    return str(folder / "out")


@st.composite
def argument_lists(draw: st.DrawFn) -> tuple[list[str], str, str]:
    command = draw(st.sampled_from(["explain", "compare", "infotext"]))
    if command == "explain":
        argv = ["explain", draw(_PROMPTS)]
        if draw(st.booleans()):
            argv += ["--steps", draw(_NUMBERS)]
        if draw(st.booleans()):
            argv += ["--dialect", draw(st.sampled_from(["a1111", "comfy", "novelai", "x"]))]
        if draw(st.booleans()):
            argv.append("--strict")
        if draw(st.booleans()):
            argv += ["--model", draw(st.sampled_from(["toy", "/nonexistent/model", "a/b/c"]))]
        return argv, "", "fresh"
    if command == "infotext":
        argv = ["infotext", draw(st.sampled_from(["-", "/nonexistent.png", "INFOTEXT"]))]
        if draw(st.booleans()):
            argv.append("--to-diffusers")
        text = draw(
            st.one_of(
                st.just("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1"),
                st.text(max_size=60),
            )
        )
        return argv, text, "fresh"
    out = draw(_OUT)
    argv = ["compare", draw(_PROMPTS), "--out", "OUT", "--quiet"]
    options = {
        "--negative": st.sampled_from(["", "blurry", "[a|b]"]),
        "--sweep": st.sampled_from(["red=0,1", "red=0:1:0.5", "nope=1", "red=0:1000:0.001", "x"]),
        "--strategies": st.sampled_from(["a1111", "a1111,comfy", "compel", "bogus", ","]),
        "--seeds": st.sampled_from(["0", "1,2", "-1", "99999999999999999999999", "x"]),
        "--samplers": st.sampled_from(["Euler", "DPM++ 2M Karras", "bogus"]),
        "--cfg": _NUMBERS,
        "--steps": st.sampled_from(["1", "2", "0", "-1", "2000000000", "1001", "x", "1,2"]),
        "--clip-skip": st.sampled_from(["1", "2", "0", "1000", "x"]),
        "--normalizations": st.sampled_from(["none", "mean", "bogus"]),
        "--size": st.sampled_from(["32x32", "800000x800000", "33x32", "x", "9" * 5000 + "x8"]),
        "--model": st.sampled_from(["/nonexistent/model", "not/a/hub/id"]),
        "--device": st.sampled_from(["cpu", "auto", "bogus", "cuda", "cuda:99", "meta"]),
    }
    for option, values in options.items():
        if draw(st.integers(0, 3)) == 0:
            argv += [option, draw(values)]
    if "--steps" not in argv:
        argv += ["--steps", "1"]  # a case that passes every check runs one step per cell
    if draw(st.booleans()):
        argv.append("--overwrite")
    return argv, "", out


def _run(argv: list[str], stdin: str, out: str, folder: Path) -> subprocess.CompletedProcess[str]:
    (folder / "a-file").write_text("x")
    (folder / "infotext.txt").write_text(stdin)
    argv = [
        _out_path(out, folder)
        if a == "OUT"
        else str(folder / "infotext.txt")
        if a == "INFOTEXT"
        else a
        for a in argv
    ]
    return subprocess.run(
        [sys.executable, "-c", _RUNNER.format(memory=MEMORY), json.dumps(argv)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        # No GPU: CUDA's start-up maps more address space than the limit allows.
        env={
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "CUDA_VISIBLE_DEVICES": "",
        },
    )


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=argument_lists())
@example(case=(["compare", "a", "--out", "OUT", "--size", "800000x800000"], "", "fresh"))
@example(case=(["compare", "a", "--out", "OUT", "--device", "bogus"], "", "fresh"))
@example(case=(["compare", "a", "--out", "OUT", "--steps", "1"], "", "file"))
@example(case=(["compare", "[a|b]", "--out", "OUT", "--steps", "2000000000"], "", "fresh"))
@example(case=(["explain", "[a|b]", "--steps", "2000000000"], "", "fresh"))
@example(
    case=(["compare", "a", "--out", "OUT", "--clip-skip", "1000", "--steps", "1"], "", "fresh")
)
def test_no_argument_list_ends_in_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[list[str], str, str]
) -> None:
    argv, stdin, out = case
    folder = tmp_path_factory.mktemp("fuzz")
    done = _run(argv, stdin, out, folder)
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    assert done.returncode in (0, 2), (done.returncode, done.stderr[-4000:])
    if done.returncode == 2 and "usage:" not in done.stderr:
        lines = done.stderr.strip().splitlines()
        assert lines, argv
        assert lines[-1].startswith("promptweights: error: "), done.stderr
