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
# A sub-package's modules belong to the sub-package's layer (``diffusers/encode.py``: "diffusers").
LAYERS = [
    {
        "errors",
        "_arguments",
        "limits",
        "tree",
        "_lark",
        "_emphasis",
        "dialects",
        "_compel",
        "convert",
        "_editing",
        "dynamic",
        "spans",
        "render",
        "routing",
        "schedules",
        "networks",
        "lora_schedules",
        "parsing",
        "infotext",
        "infotext_codec",
        "samplers",
        "settings",
        "__init__",
    },
    {"tokens", "_offsets"},
    {"strategies"},
    {"builder", "encoders"},
    {"diffusers", "a1111"},
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


def _modules() -> list[Path]:
    """Every module of the package, sub-packages (``diffusers/``, ``toy/``) included."""
    return sorted(PACKAGE.rglob("*.py"))


def _dotted(path: Path) -> str:
    """``promptweights.diffusers.encode`` for ``diffusers/encode.py``; packages by their name."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top(dotted: str) -> str:
    """The part of ``promptweights`` a module belongs to: ``diffusers`` for its sub-modules too."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(dotted: str) -> bool:
    base = PACKAGE.parent.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path, source: str | None = None) -> set[str]:
    """The ``promptweights`` modules ``path`` imports, as dotted names, relative imports resolved.

    ``from X import name`` counts as importing ``X.name`` when that is a module, else ``X``.
    """
    text = path.read_text(encoding="utf-8") if source is None else source
    package = _dotted(path) if path.name == "__init__.py" else _dotted(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                found.add(candidate if _is_module(candidate) else module)
    return {name for name in found if name.split(".")[0] == "promptweights"}


def _violations(path: Path, source: str | None = None) -> list[str]:
    layer = _layer(_top(_dotted(path)))
    return [
        f"{_dotted(path)} (layer {layer}) imports {imported} (layer {_layer(_top(imported))})"
        for imported in sorted(_imports(path, source))
        if _layer(_top(imported)) > layer
    ]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_lower_layers_import_no_higher_one(path: Path) -> None:
    assert _violations(path) == []


def test_every_module_has_a_layer() -> None:
    unplaced = [_dotted(p) for p in _modules() if _layer(_top(_dotted(p))) == len(LAYERS)]
    assert unplaced == []


def test_sub_package_imports_are_resolved_and_checked() -> None:
    """The check sees relative and absolute imports inside sub-packages, in functions too."""
    source = (
        "from ..builder import build\n"
        "from .families import family_of\n"
        "from . import lora\n"
        "def f():\n"
        "    from ..compare import compare\n"
        "    from .. import cli\n"
        "    import promptweights.toy\n"
        "    from promptweights.testing import prompts\n"
    )
    path = PACKAGE / "diffusers" / "encode.py"
    assert _imports(path, source) == {
        "promptweights.builder",
        "promptweights.diffusers.families",
        "promptweights.diffusers.lora",
        "promptweights.compare",
        "promptweights.cli",
        "promptweights.toy",
        "promptweights.testing",
    }
    assert len(_violations(path, source)) == 4
    # The tools layer may import the adapter: toy/ is a tool.
    assert _violations(PACKAGE / "toy" / "__init__.py", "from ..diffusers import encode\n") == []
    assert _violations(PACKAGE / "builder.py", "from .diffusers.encode import encode\n") == [
        "promptweights.builder (layer 3) imports promptweights.diffusers.encode (layer 4)"
    ]


def test_only_one_module_imports_lark() -> None:
    importers = [
        p.relative_to(PACKAGE).as_posix()
        for p in _modules()
        if "lark" in {m.split(".")[0] for m in _top_imports(p)}
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
