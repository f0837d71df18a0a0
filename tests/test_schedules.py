"""Caps of ``promptweights.schedules``: schedule entries and characters, counted before the steps
are built (also under an address-space limit), and ``split_and``'s AND parts."""

from __future__ import annotations

import pytest
from _limited import run_limited

import promptweights as pw
from promptweights.errors import LimitExceededError


def test_schedule_variants_are_capped_and_configurable() -> None:
    assert len(pw.schedules("[a|b]", 512)) == 512  # the default cap, reached
    with pytest.raises(LimitExceededError, match=r"513 entries .* limit is 512"):
        pw.schedules("[a|b]", 513)
    assert len(pw.schedules("[a|b]", 1000, max_variants=1000)) == 1000
    edits = "".join(f"[x{i}:y:{i}]" for i in range(1, 11))
    with pytest.raises(LimitExceededError, match="every edit adds one"):
        pw.schedules(edits, 20, max_variants=5)


def test_schedule_characters_are_capped() -> None:
    text = "[a|b] " + "x" * 1000
    assert len(pw.schedules(text, 20, max_chars=20 * len(text))) == 20
    with pytest.raises(LimitExceededError, match="max_chars"):
        pw.schedules(text, 20, max_chars=20 * len(text) - 1)


def test_schedule_caps_fire_before_the_steps_are_built() -> None:
    # [a|b] at 10**8 steps built a 10**8-entry range (8.8 GB) before refusing; at 2*10**9 the
    # process was killed. Under a 512 MB address space both must refuse with the count.
    result = run_limited(
        """
        import promptweights as pw
        out = {}
        for text, steps, kwargs in [
            ("[a|b]", 10**8, {}),
            ("[a|b]", 2 * 10**9, {}),
            ("x [a|b]", 2 * 10**9, {"hires_steps": 2 * 10**9}),
            ("[a|b]", 2 * 10**9, {"max_variants": 4 * 10**9, "max_chars": 10}),
        ]:
            key = f"{text} {steps} {sorted(kwargs)}"
            try:
                pw.schedules(text, steps, **kwargs)
                out[key] = "returned"
            except pw.LimitExceededError as error:
                out[key] = str(error)
        print(json.dumps(out))
        """,
        megabytes=512,
    )
    assert "100000000 entries" in str(result["[a|b] 100000000 []"])
    assert "2000000000 entries" in str(result["[a|b] 2000000000 []"])
    assert "2000000000 entries" in str(result["x [a|b] 2000000000 ['hires_steps']"])
    assert "2000000000 texts" in str(result["[a|b] 2000000000 ['max_chars', 'max_variants']"])


def test_schedule_counts_match_the_entries_they_stand_for() -> None:
    # The count the caps use equals the number of entries, with and without alternation.
    for text in ["[a|b]", "[a:b:3] [c:d:0.5]", "[a|b] [c:d:7]", "plain", "[a:b:0]"]:
        for steps in (-2, 0, 1, 2, 7, 30):
            entries = pw.schedules(text, steps, max_variants=10_000)
            pw.schedules.cache_clear()  # type: ignore[attr-defined]
            if len(entries) > 1:
                with pytest.raises(LimitExceededError, match=f"{len(entries)} entries"):
                    pw.schedules(text, steps, max_variants=len(entries) - 1)


def test_and_parts_are_capped_with_the_position() -> None:
    text = " AND ".join("p" * 64)
    assert len(pw.split_and(text)) == 64
    with pytest.raises(LimitExceededError, match="65 AND parts") as raised:
        pw.split_and(text + " AND q")
    assert f"character {text.rindex('AND') + 6}" in str(raised.value)
    assert len(pw.split_and(text + " AND q", max_parts=65)) == 65
