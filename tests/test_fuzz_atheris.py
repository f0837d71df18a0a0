"""The atheris harness ``tools/fuzz_atheris.py``, run without atheris: its seeds, Hypothesis-drawn
bytes, and a check that it lets an undocumented exception through."""

from __future__ import annotations

import contextlib

import pytest
from _fuzz_harness import FUZZ
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptweights.errors import PromptweightsError
from promptweights.testing import bracket_soup


def test_fuzz_harness_seeds_pass() -> None:
    for seed in FUZZ.SEEDS:
        FUZZ.check(seed)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(min_size=3, max_size=200)
    | st.builds(
        lambda head, text: head + text.encode("utf-8", "surrogatepass"),
        st.binary(min_size=3, max_size=3),
        bracket_soup(max_size=120),
    )
)
def test_fuzz_harness_finds_nothing(data: bytes) -> None:
    with contextlib.suppress(PromptweightsError):
        FUZZ.check(data)


def test_fuzz_harness_reports_what_escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    # The harness must be able to fail: an undocumented exception goes through.
    def broken(text: str, **kwargs: object) -> None:
        raise KeyError(text)

    monkeypatch.setattr(FUZZ.pw, "extra_networks", broken)
    with pytest.raises(KeyError):
        FUZZ.check(b"\x00\x14\x00a")
