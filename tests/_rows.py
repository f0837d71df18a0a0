"""Which of several expected conditionings a row the denoiser read is."""

from __future__ import annotations

from typing import Any

import torch


def label(row: Any, options: dict[str, Any], *, tol: float = 0.0) -> str | None:
    """The name of the first option ``row`` equals (bit for bit with ``tol=0``, else within
    ``tol`` absolute and relative, for rows encoded in another batch than the options), or None."""
    for name, expected in options.items():
        expected = expected.to(row.dtype)
        if torch.equal(row, expected) if tol == 0 else torch.allclose(row, expected, tol, tol):
            return name
    return None
