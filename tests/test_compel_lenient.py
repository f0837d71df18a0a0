"""dialect="compel" in lenient mode: reading any text never raises (issue 14 part 1's property);
what lenient mode reports, strict mode raises as a PromptSyntaxError pointing into the text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import promptweights as pw
from promptweights.testing import bracket_soup, prompts

# compel's own syntax characters and operator names, so that drawn text hits its constructs.
_COMPEL_SOUP = st.lists(
    st.sampled_from(
        [
            '"',
            "(",
            ")",
            "+",
            "-",
            "1.3",
            ".",
            ",",
            " ",
            "a",
            "\\",
            ".blend(",
            ".and(",
            ".swap(",
            ".attend(",
            "withLora(",
            "no_normalize",
            "t_start=",
            "=",
            "0.5",
        ]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=80, deadline=None)
@given(st.one_of(_COMPEL_SOUP, bracket_soup(max_size=80), prompts(dialect="compel")))
def test_compel_reading_never_raises_in_lenient_mode(text: str) -> None:
    prompt = pw.parse(text, dialect="compel")
    spans = pw.weighted_spans(text, dialect="compel")
    assert all(isinstance(t, str) and isinstance(w, float | int) for t, w in spans)
    assert pw.render(prompt) == text
    if prompt.diagnostics:
        with pytest.raises(pw.PromptSyntaxError) as raised:
            pw.parse(text, dialect="compel", strict=True)
        assert 0 <= raised.value.pos <= len(text)
        assert str(raised.value).endswith("^")
