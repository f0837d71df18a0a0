"""Extra-network tags ``<lora:name:0.8>`` and ``#`` comments: cut out of the text before parsing.

Both are plain text substitutions in A1111, run before AND, scheduling and emphasis
(a1111-behaviour.md §1, §8). Each function here also returns an :class:`OffsetMap`, so positions in
the cleaned text can be reported in the user's original text.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ._arguments import check_text
from .lora_schedules import read_multiplier
from .tree import ExtraNetwork

__all__ = ["OffsetMap", "extra_networks", "strip_comments"]

_NETWORK_RE = re.compile(r"<(\w+):([^>]+)>")
# A line that is only a comment collapses; a comment after text ends the line (§1 step 2).
_LINE_COMMENT_RE = re.compile(r"(^|\n)#[^\n]*(\n|$)")
_TAIL_COMMENT_RE = re.compile(r"#[^\n]*(\n|$)")


@dataclass(frozen=True, slots=True)
class OffsetMap:
    """Maps offsets in a rewritten text back to the text it was made from."""

    new_starts: tuple[int, ...] = (0,)
    old_starts: tuple[int, ...] = (0,)

    def __call__(self, pos: int) -> int:
        """Return the offset in the original text of offset ``pos`` in the rewritten one."""
        i = bisect.bisect_right(self.new_starts, pos) - 1
        return self.old_starts[i] + (pos - self.new_starts[i])

    def then(self, earlier: OffsetMap | _Chain) -> _Chain:
        """Compose: positions go through ``self`` first, then through ``earlier``."""
        return _Chain((self, earlier))


@dataclass(frozen=True, slots=True)
class _Chain:
    maps: tuple[OffsetMap | _Chain, ...]

    def __call__(self, pos: int) -> int:
        for offsets in self.maps:
            pos = offsets(pos)
        return pos

    def then(self, earlier: OffsetMap | _Chain) -> _Chain:
        return _Chain((self, earlier))


def _network_matches(text: str) -> Iterator[re.Match[str]]:
    """``_NETWORK_RE.finditer(text)``, in linear time.

    The regex engine retries every ``<`` up to the end of the text when no ``>`` follows (quadratic
    on ``<lora:(`` repeated). A tag starting before the next ``>`` ends at it (``[^>]`` cannot
    cross it), so each search is bounded by the next ``>``, and none is made once none is left.
    """
    pos = 0
    while (start := text.find("<", pos)) >= 0:
        end = text.find(">", start)
        if end < 0:
            return
        match = _NETWORK_RE.search(text, start, end + 1)
        if match is None:
            pos = end + 1
            continue
        yield match
        pos = match.end()


def _substitute(
    text: str, pattern: re.Pattern[str], replacement: str
) -> tuple[str, OffsetMap, list[re.Match[str]]]:
    out: list[str] = []
    new_starts = [0]
    old_starts = [0]
    matches = []
    pos = new = 0
    found = _network_matches(text) if pattern is _NETWORK_RE else pattern.finditer(text)
    for match in found:
        matches.append(match)
        out.append(text[pos : match.start()])
        new += match.start() - pos
        if replacement:
            new_starts.append(new)
            old_starts.append(match.start())
            out.append(replacement)
            new += len(replacement)
        new_starts.append(new)
        old_starts.append(match.end())
        pos = match.end()
    out.append(text[pos:])
    return "".join(out), OffsetMap(tuple(new_starts), tuple(old_starts)), matches


def strip_comments_with_map(text: str) -> tuple[str, OffsetMap | _Chain]:
    """:func:`strip_comments`, also returning the offset map back to ``text``."""
    if "#" not in text:
        return text, OffsetMap()
    first, first_map, _ = _substitute(text, _LINE_COMMENT_RE, "\n")
    second, second_map, _ = _substitute(first, _TAIL_COMMENT_RE, "\n")
    return second, second_map.then(first_map)


def strip_comments(text: str) -> str:
    """Remove ``#`` comments as A1111 does: from ``#`` to the end of its line, newline included,
    replaced by one newline; there is no escape for ``#`` (§1 step 2).

    >>> strip_comments("a#b\\n#x\\nc")
    'a\\nc'
    """
    if type(text) is not str:
        text = check_text(text, "text")
    return strip_comments_with_map(text)[0]


def make_network(
    kind: str, arguments: str, *, source: str = "", pos: int = -1
) -> tuple[ExtraNetwork, str | None]:
    """Build an :class:`ExtraNetwork` from a tag's parts; also return a problem, if any.

    A1111's LoRA rules (§8): positional ``name[:te[:unet[:dyn]]]``, named ``te=``, ``unet=``,
    ``dyn=`` override; te defaults to 1.0, unet to te; numbers are read with ``float()``. Where
    A1111 would fail on a multiplier that is not a number, the default is used and the problem
    returned. A loractl weight schedule (``0@0,1@0.5``, :mod:`promptweights.lora_schedules`)
    gives its weight at step 0; a bad entry in one is a problem too.
    """
    args = tuple(arguments.split(":"))
    probe = ExtraNetwork(kind, "", args=args)
    named = probe.named
    positional = probe.positional
    name = positional[0] if positional else named.get("name", "")
    problem = None
    te_text = named.get("te", positional[1] if len(positional) > 1 else None)
    te, problem = _multiplier(te_text, 1.0, problem)
    unet_text = named.get("unet", positional[2] if len(positional) > 2 else None)
    unet, problem = _multiplier(unet_text, te, problem)
    for key in ("hr", "hrte", "hrunet"):  # loractl's hires-pass weights: checked, not used here
        if named.get(key):
            problem = _multiplier(named[key], 1.0, problem)[1]
    if not positional:
        problem = problem or f"tag <{kind}:{arguments}> has no name"
    network = ExtraNetwork(kind, name, te, unet, args, source=source, pos=pos)
    return network, problem


def _multiplier(text: str | None, default: float, problem: str | None) -> tuple[float, str | None]:
    if text is None:
        return default, problem
    try:
        return float(text), problem
    except ValueError:
        pass
    initial, schedule_problem = read_multiplier(text)  # a loractl schedule, if it is one
    if initial is not None or schedule_problem is not None:
        return (default if initial is None else initial), problem or schedule_problem
    return default, problem or f"multiplier {text!r} is not a number (A1111 fails here)"


def extra_networks_with_map(
    text: str,
) -> tuple[str, list[tuple[ExtraNetwork, str | None]], OffsetMap]:
    """:func:`extra_networks`, also returning each tag's problem and the offset map."""
    if "<" not in text:
        return text, [], OffsetMap()
    stripped, offsets, matches = _substitute(text, _NETWORK_RE, "")
    found = [
        make_network(m.group(1), m.group(2), source=m.group(0), pos=m.start()) for m in matches
    ]
    return stripped, found, offsets


def extra_networks(text: str) -> tuple[str, list[ExtraNetwork]]:
    """Cut every ``<type:args>`` tag out of ``text``, as A1111 does, whatever the type (§8).

    Returns:
        The text without the tags (the spaces around them stay) and the tags, in order.

    >>> text, nets = extra_networks("a cat <lora:ink:0.8> on a mat")
    >>> text, nets[0].name, nets[0].te_weight, nets[0].unet_weight
    ('a cat  on a mat', 'ink', 0.8, 0.8)
    """
    if type(text) is not str:
        text = check_text(text, "text")
    stripped, found, _ = extra_networks_with_map(text)
    return stripped, [network for network, _ in found]
