"""``promptweights.Limits``: every cap is a positive int, and the defaults."""

from __future__ import annotations

import pytest

import promptweights as pw


@pytest.mark.parametrize(
    "field", ["prompt_chars", "variants", "schedule_chars", "and_parts", "rows"]
)
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_limits_must_be_positive_ints(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        pw.Limits(**{field: value})  # type: ignore[arg-type]


def test_output_tokens_is_a_positive_int_limit() -> None:
    assert pw.Limits().output_tokens == 524_288
    with pytest.raises(ValueError, match="output_tokens"):
        pw.Limits(output_tokens=0)
