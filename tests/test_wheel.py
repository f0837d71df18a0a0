"""The wheel ships the grammars: build it, install it into a clean venv, parse from elsewhere."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import lark
import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import promptweights as pw, sys
assert "site-packages" in pw.__file__ and "{root}" not in pw.__file__, pw.__file__
assert pw.schedules("a [b:c:0.5]", 10) == [(5, "a b"), (10, "a c")]
for dialect in pw.DIALECTS:
    pw.parse("(a:1.2) [b] {{c}}", dialect=dialect)
print("ok", pw.__version__)
"""


@pytest.mark.slow
def test_wheel_parses_from_any_directory(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("promptweights-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for grammar in ("common", "a1111", "comfy", "novelai"):
        assert f"promptweights/grammar/{grammar}.lark" in names
    assert "promptweights/py.typed" in names
    assert "promptweights/diffusers/__init__.py" in names  # sub-packages are listed by hand
    assert "promptweights/a1111/philox.py" in names

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    # lark comes from this interpreter's site-packages through a path entry, so the test needs no
    # network; a plain path line does not run that directory's .pth files (no editable finder).
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "lark_path.pth").write_text(str(Path(lark.__file__).parents[1]) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run(
        [str(python), "-c", CHECK.format(root=ROOT)],
        cwd=elsewhere,
        check=True,
        capture_output=True,
        text=True,
    )
    assert out.stdout.startswith("ok")


def test_a_source_checkout_without_install_says_to_install_it(tmp_path: Path) -> None:
    # A copy of the checkout on sys.path, and only lark besides: -S skips site-packages and its
    # .pth files, so no installed or editable promptweights can answer instead.
    checkout = tmp_path / "checkout"
    for folder in ("promptweights", "grammar"):
        shutil.copytree(ROOT / folder, checkout / folder, ignore=shutil.ignore_patterns("toy"))
    paths = [str(checkout), str(Path(lark.__file__).parents[1])]
    code = f"import sys; sys.path[:0] = {paths!r}; import promptweights"
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=False
    )
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: promptweights.grammar is missing"), out.stderr
    assert "pip install -e ." in last
