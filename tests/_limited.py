"""Code run in a fresh interpreter under an address-space limit (``RLIMIT_AS``): memory bounds
are checked this way (the old code needed gigabytes there), never by timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_limited(code: str, megabytes: int = 2048, timeout: int = 300) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter whose address space is capped at ``megabytes``; the code
    prints one JSON object on its last line, which is returned. Skips the calling test where there
    is no ``resource`` module (not POSIX)."""
    pytest.importorskip("resource")
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
