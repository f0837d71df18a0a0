"""Arguments of the wrong type or out of range: our own errors, naming the argument, from every
public language function in every dialect (issue 12 item 10)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import promptweights as pw

BAD_TEXTS = [None, b"a (b)", 1, 1.5, ["a"], {"a": 1}, ("a",)]

# name → call(text, dialect); functions without a dialect ignore it.
CALLS: dict[str, Callable[[object, str], object]] = {
    "parse": lambda text, dialect: pw.parse(text, dialect=dialect),  # type: ignore[arg-type]
    "parse-strict": lambda text, dialect: pw.parse(text, dialect=dialect, strict=True),  # type: ignore[arg-type]
    "weighted_spans": lambda text, dialect: pw.weighted_spans(text, dialect=dialect),  # type: ignore[arg-type]
    "schedules": lambda text, _: pw.schedules(text, 20),  # type: ignore[arg-type]
    "split_and": lambda text, _: pw.split_and(text),  # type: ignore[arg-type]
    "extra_networks": lambda text, _: pw.extra_networks(text),  # type: ignore[arg-type]
    "strip_comments": lambda text, _: pw.strip_comments(text),  # type: ignore[arg-type]
    "render": lambda text, _: pw.render(text),  # type: ignore[arg-type]
    "convert": lambda text, dialect: pw.convert(text, dialect, "a1111"),  # type: ignore[arg-type]
    "route": lambda text, _: pw.route(text, ["clip_l", "t5"]),  # type: ignore[arg-type]
}


def test_every_public_language_function_is_covered() -> None:
    functions = {
        name
        for name in pw.__all__
        if callable(getattr(pw, name)) and not isinstance(getattr(pw, name), type)
    }
    assert functions == {name.split("-")[0] for name in CALLS}


@pytest.mark.parametrize("dialect", pw.DIALECTS)
@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("bad", BAD_TEXTS, ids=lambda value: type(value).__name__)
def test_a_text_that_is_not_a_str_raises_argument_type_error(
    name: str, dialect: str, bad: object
) -> None:
    with pytest.raises(pw.ArgumentTypeError, match=r"must be a (str|Prompt), not"):
        CALLS[name](bad, dialect)


@pytest.mark.parametrize("function", [pw.parse, pw.weighted_spans])
@pytest.mark.parametrize("bad", [None, 1, b"a1111", ["a1111"]], ids=repr)
def test_a_dialect_that_is_not_a_str_raises_argument_type_error(
    function: Callable[..., object], bad: object
) -> None:
    with pytest.raises(pw.ArgumentTypeError, match="dialect must be a str"):
        function("(a)", dialect=bad)


@pytest.mark.parametrize("function", [pw.parse, pw.weighted_spans])
@pytest.mark.parametrize("dialect", pw.DIALECTS)
def test_max_depth_must_be_a_non_negative_int(
    function: Callable[..., object], dialect: str
) -> None:
    for bad in ("1", None, 1.0, True):
        with pytest.raises(pw.ArgumentTypeError, match="max_depth must be an int"):
            function("((a))", dialect=dialect, max_depth=bad)
    with pytest.raises(pw.InvalidArgumentError, match="max_depth must be at least 0"):
        function("((a))", dialect=dialect, max_depth=-1)
    # Any integer type is read as the int it holds.
    assert function("((a))", dialect=dialect, max_depth=np.int64(1)) == function(
        "((a))", dialect=dialect, max_depth=1
    )


@pytest.mark.parametrize(
    ("keyword", "bad"),
    [("steps", "10"), ("steps", 2.5), ("steps", None), ("hires_steps", "5"), ("max_variants", 1.0)],
)
def test_schedules_numbers_must_be_ints(keyword: str, bad: object) -> None:
    arguments: dict[str, object] = {"steps": 10, keyword: bad}
    with pytest.raises(pw.ArgumentTypeError, match=f"{keyword} must be an int"):
        pw.schedules("a [b|c]", **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize("keyword", ["max_variants", "max_chars"])
def test_schedules_limits_below_one_are_refused(keyword: str) -> None:
    with pytest.raises(pw.InvalidArgumentError, match=f"{keyword} must be at least 1"):
        pw.schedules("a [b|c]", 10, **{keyword: 0})


@pytest.mark.parametrize("max_parts", [0, -1])
def test_split_and_refuses_max_parts_below_one(max_parts: int) -> None:
    # max_parts=-1 used to raise IndexError.
    with pytest.raises(pw.InvalidArgumentError, match="max_parts must be at least 1"):
        pw.split_and("a AND b", max_parts=max_parts)
    assert pw.split_and("a AND b", max_parts=np.int64(2)) == [("a", 1.0), (" b", 1.0)]


def test_str_subclasses_are_read_as_their_text() -> None:
    class Tagged(str):
        pass

    assert pw.weighted_spans(Tagged("(a)")) == [("a", 1.1)]
    assert pw.parse(Tagged("(a)")) == pw.parse("(a)")
