"""Shared pytest set-up: Hypothesis profiles, the repository root on ``sys.path``, and the
``one_torch_thread`` fixture.

``ci`` is bounded so that the whole suite stays within minutes on a 2-core runner; ``dev`` looks a
little harder. ``ci`` is loaded when the ``CI`` environment variable is set, ``dev`` otherwise;
``HYPOTHESIS_PROFILE`` names one explicitly. Deadlines are off in both: the runners are shared, and
speed is measured by ``benchmarks/parse.py``, not by tests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# The benchmarks (and their A1111 reference parser) are not installed with the package; tests
# import them from the checkout, also when pytest is started as `pytest` rather than `python -m`.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

settings.register_profile("ci", max_examples=60, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run a module's tiny models on one torch thread: the machine is shared, and tiny models run
    fastest (and most reproducibly) that way. Use with ``pytest.mark.usefixtures``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
