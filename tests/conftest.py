"""Shared pytest set-up: Hypothesis profiles.

``ci`` is bounded so that the whole suite stays within minutes on a 2-core runner; ``dev`` looks a
little harder. ``ci`` is loaded when the ``CI`` environment variable is set, ``dev`` otherwise;
``HYPOTHESIS_PROFILE`` names one explicitly. Deadlines are off in both: the runners are shared, and
speed is measured by ``benchmarks/parse.py``, not by tests.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))
