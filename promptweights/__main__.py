"""``python -m promptweights``: the command line (see :mod:`promptweights.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
