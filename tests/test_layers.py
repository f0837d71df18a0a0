"""Layering: the language layer loads no model libraries, and lower layers import no higher one."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "promptweights"
HEAVY = ("torch", "transformers", "diffusers", "hypothesis", "PIL", "accelerate", "safetensors")

# Layers, lowest first (house-style.md §11). A module may import modules of its own layer or below.
LAYERS = [
    {
        "errors",
        "limits",
        "tree",
        "_lark",
        "_editing",
        "spans",
        "render",
        "schedules",
        "networks",
        "parsing",
        "infotext",
        "samplers",
        "__init__",
    },
    {"tokens"},
    {"strategies"},
    {"builder", "encoders"},
    {"diffusers"},
    {"compare", "cli", "__main__", "testing", "toy"},
]


def _layer(module: str) -> int:
    for index, names in enumerate(LAYERS):
        if module in names:
            return index
    return len(LAYERS)


def test_import_loads_no_heavy_library() -> None:
    code = (
        "import sys, promptweights as pw\n"
        "pw.parse('a (b:1.2) [c:d:3] <lora:x:1> AND e'); pw.weighted_spans('(a)')\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("promptweights."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_lower_layers_import_no_higher_one(path: Path) -> None:
    layer = _layer(path.stem)
    for imported in _imports(path):
        assert _layer(imported) <= layer, f"{path.stem} (layer {layer}) imports {imported}"


def test_only_one_module_imports_lark() -> None:
    importers = [
        p.name for p in PACKAGE.glob("*.py") if "lark" in {m.split(".")[0] for m in _top_imports(p)}
    ]
    assert importers == ["_lark.py"]


def _top_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names
