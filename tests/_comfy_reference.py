"""ComfyUI's prompt weighting, transcribed as its own code runs: recursive, re-splitting each level.

Written from weighting-strategies.md §1.3 (``comfy/sd1_clip.py``: ``escape_important``,
``parse_parentheses``, ``token_weights``, ``unescape_important``), with one addition: the depth cap
promptweights documents (a bracket with ``max_depth`` weighed brackets around it stays text). It
never imports the code under test; ``weighted_spans(dialect="comfy")`` is compared against it.
Its time is depth × length, so tests feed it short texts only.
"""

from __future__ import annotations

_CLOSE = "\0\1"  # ComfyUI's stand-ins for \) and \( while brackets are parsed
_OPEN = "\0\2"


def _escape_important(text: str) -> str:
    return text.replace("\\)", _CLOSE).replace("\\(", _OPEN)


def _unescape_important(text: str) -> str:
    return text.replace(_CLOSE, ")").replace(_OPEN, "(")


def _parse_parentheses(string: str) -> list[str]:
    result = []
    current_item = ""
    nesting_level = 0
    for char in string:
        if char == "(":
            if nesting_level == 0:
                if current_item:
                    result.append(current_item)
                current_item = "("
            else:
                current_item += char
            nesting_level += 1
        elif char == ")":
            nesting_level -= 1
            if nesting_level == 0:
                result.append(current_item + ")")
                current_item = ""
            else:
                current_item += char
        else:
            current_item += char
    if current_item:
        result.append(current_item)
    return result


def _token_weights(string: str, current_weight: float, depth: int, max_depth: int) -> list:
    out: list[tuple[str, float]] = []
    for x in _parse_parentheses(string):
        weight = current_weight
        if len(x) >= 2 and x[-1] == ")" and x[0] == "(" and depth < max_depth:
            x = x[1:-1]
            xx = x.rfind(":")
            weight *= 1.1
            if xx > 0:
                try:
                    weight = float(x[xx + 1 :])
                    x = x[:xx]
                except ValueError:
                    pass
            out += _token_weights(x, weight, depth + 1, max_depth)
        else:
            out += [(x, current_weight)]
    return out


def comfy_token_weights(text: str, max_depth: int = 150) -> list[tuple[str, float]]:
    """``(segment, weight)`` pairs as ComfyUI gives them, escapes resolved."""
    pairs = _token_weights(_escape_important(text), 1.0, 0, max_depth)
    return [(_unescape_important(segment), weight) for segment, weight in pairs]
