"""Shared pytest set-up: Hypothesis profiles, and the repository root on ``sys.path``.

``ci`` is bounded so that the whole suite stays within minutes on a 2-core runner; ``dev`` looks a
little harder. ``ci`` is loaded when the ``CI`` environment variable is set, ``dev`` otherwise;
``HYPOTHESIS_PROFILE`` names one explicitly. Deadlines are off in both: the runners are shared, and
speed is measured by ``benchmarks/parse.py``, not by tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
