"""The atheris harness ``tools/fuzz_atheris.py``, loaded once as a module (``tools/`` is not a
package); ``FUZZ.check`` runs every reader of untrusted text on some bytes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _harness() -> ModuleType:
    path = ROOT / "tools" / "fuzz_atheris.py"
    spec = importlib.util.spec_from_file_location("_fuzz_atheris", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FUZZ = _harness()
