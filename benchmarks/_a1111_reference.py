"""A1111's emphasis parser (``parse_prompt_attention``), re-implemented for side-by-side timing.

Written from the description in a1111-behaviour.md §2.2 (a regex tried left to right and two
bracket stacks), in the same style as the original: one regex over the text, lists of
``[text, weight]`` pairs, multiplication of index ranges and a merge pass that pops from the middle
of the list. It is the baseline of ``benchmarks/parse.py``; it is not used by the library.
"""

from __future__ import annotations

import re

# The alternatives in the order §2.2 lists them: escapes, lone backslash, openers, an explicit
# weight closing a round bracket, closers, a run of text, a colon.
_TOKEN = re.compile(
    r"""
    \\\( | \\\) | \\\[ | \\\] | \\\\
    | \\
    | \(
    | \[
    | :\s*([+-]?[.\d]+)\s*\)
    | \)
    | \]
    | [^\\()\[\]:]+
    | :
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)

ROUND = 1.1
SQUARE = 1 / 1.1


def _multiply_range(res: list[list[str | float]], start: int, factor: float) -> None:
    for entry in res[start:]:
        entry[1] = float(entry[1]) * factor


def parse_prompt_attention(text: str) -> list[list[str | float]]:
    """Return A1111's ``[[segment, weight], ...]`` for ``text`` (raises on ``(a:1.2.3)``)."""
    res: list[list[str | float]] = []
    round_stack: list[int] = []
    square_stack: list[int] = []

    for match in _TOKEN.finditer(text):
        token = match.group(0)
        weight = match.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])  # a lone backslash appends an empty segment
        elif token == "(":
            round_stack.append(len(res))
        elif token == "[":
            square_stack.append(len(res))
        elif weight is not None and round_stack:
            _multiply_range(res, round_stack.pop(), float(weight))
        elif token == ")" and round_stack:
            _multiply_range(res, round_stack.pop(), ROUND)
        elif token == "]" and square_stack:
            _multiply_range(res, square_stack.pop(), SQUARE)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i > 0:
                    res.append(["BREAK", -1.0])
                res.append([part, 1.0])

    return _finish(res, round_stack, square_stack)


def _finish(
    res: list[list[str | float]], round_stack: list[int], square_stack: list[int]
) -> list[list[str | float]]:
    """The end of the pass: brackets left open apply to the end of the text, an empty result
    becomes one empty segment, and neighbours of equal weight merge (popped from the middle)."""
    for start in round_stack:
        _multiply_range(res, start, ROUND)
    for start in square_stack:
        _multiply_range(res, start, SQUARE)

    if not res:
        res = [["", 1.0]]

    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] = str(res[i][0]) + str(res[i + 1][0])
            res.pop(i + 1)
        else:
            i += 1
    return res
