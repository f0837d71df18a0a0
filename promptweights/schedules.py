"""Prompt editing and alternation over the sampling steps, and the AND split.

:func:`schedules` equals A1111's ``get_learned_conditioning_prompt_schedules([text], steps,
hires_steps, old_timelines)[0]`` (a1111-behaviour.md §4); :func:`split_and` equals the AND split of
``get_multicond_prompt_list`` (§6.1).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from typing import Protocol

from ._arguments import check_int, check_text
from ._editing import EditPiece, render_pieces, scan, walk
from ._lark import GLOBAL_FAILURES, parse_nodes
from .dialects import A1111
from .errors import LimitExceededError
from .limits import DEFAULT_LIMITS
from .render import render_nodes
from .tree import DEFAULT_MAX_DEPTH, Alternation, Edit, Emphasis, Node, PerEncoder

__all__ = ["DEFAULT_MAX_DEPTH", "edit_step", "schedules", "split_and"]

_AND_RE = re.compile(r"\bAND\b")
# The `:w` tail of an AND part; `\d` is Unicode as in A1111 (§2.3).
_AND_WEIGHT_RE = re.compile(r"\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+))\s*$")


class _When(Protocol):
    @property
    def when(self) -> float: ...
    @property
    def when_text(self) -> str: ...


def edit_step(
    edit: _When,
    steps: int,
    *,
    base_steps: int = 0,
    hires: bool = False,
    old_timelines: bool = False,
) -> int:
    """Return the step after which ``edit`` switches from ``before`` to ``after`` (§4.2).

    A ``when`` with a decimal point is a fraction of ``steps``, without one an absolute step; the
    result is truncated toward zero and capped at ``steps``. In the hires pass (new timelines)
    fractions count from 1.0 and absolute steps from ``base_steps``. With ``old_timelines``,
    values below 1 are fractions whatever their spelling.
    """
    value = edit.when
    if old_timelines:
        value = value * steps if value < 1 else value
    elif "." in edit.when_text:
        value = (value - (1.0 if hires else 0.0)) * steps
    else:
        value = value - (base_steps if hires else 0)
    if not math.isfinite(value):
        # A1111 overflows in int() here (`[a:b:1e999]`); the limit is what the user meant.
        return steps if value > 0 else 0
    return min(steps, int(value))


def _walk(nodes: Iterable[Node]) -> Iterable[Node]:
    stack = [iter(nodes)]
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
            continue
        yield node
        if isinstance(node, Emphasis):
            stack.append(iter(node.children))
        elif isinstance(node, Edit):
            stack.append(iter((*(node.before or ()), *node.after)))
        elif isinstance(node, Alternation):
            stack.append(iter([child for option in node.options for child in option]))
        elif isinstance(node, PerEncoder):  # TE(…): edits inside its sections count too
            stack.append(iter([child for s in node.sections for child in s.children]))


def _boundaries(total: int, switches: Iterable[int], alternates: bool) -> list[int]:
    """The steps a schedule has entries for (§4.3): the end, every switch at step 1 or later,
    and every step when anything alternates."""
    steps = {total, *(switch for switch in switches if switch >= 1)}
    if alternates:
        steps.update(range(1, total + 1))
    return sorted(steps)


def _entry_count(total: int, switches: Iterable[int], alternates: bool) -> int:
    """How many entries :func:`_boundaries` gives, computed without building them: alternation
    makes one per step (a switch can only fall on a step in ``1..total``)."""
    if alternates and total >= 1:
        return total
    return len({total, *(switch for switch in switches if switch >= 1)})


def _timeline(steps: int, hires_steps: int | None, old_timelines: bool) -> tuple[int, bool]:
    """The schedule length and whether the hires-pass offsets apply (§4.2)."""
    hires = hires_steps is not None and not old_timelines
    return (hires_steps if hires and hires_steps is not None else steps), hires


@functools.lru_cache(maxsize=4096)
def _cached_schedules(
    text: str,
    steps: int,
    hires_steps: int | None,
    old_timelines: bool,
    max_variants: int,
    max_chars: int,
) -> tuple[tuple[int, str], ...]:
    total, hires = _timeline(steps, hires_steps, old_timelines)
    if "[" not in text:
        return ((total, text),)  # nothing can be scheduled without a square bracket
    pieces = scan(text, DEFAULT_MAX_DEPTH)
    if pieces is None:
        return ((total, text),)

    @functools.cache
    def step_of(edit: EditPiece) -> int:
        return edit_step(edit, total, base_steps=steps, hires=hires, old_timelines=old_timelines)

    found = walk(pieces)
    edits = [node for node in found if isinstance(node, EditPiece)]
    alternates = len(edits) < len(found)
    switches = [step_of(edit) for edit in edits]
    # Both caps are checked on the count, before any entry exists: `[a|b]` over 10**9 steps
    # refuses at once instead of building a billion-step range first.
    count = _entry_count(total, switches, alternates)
    if count > max_variants:
        why = "alternation changes it at every step" if alternates else "every edit adds one"
        raise LimitExceededError(
            f"the prompt's schedule has {count} entries over {total} steps ({why}); "
            f"the limit is {max_variants} (max_variants)"
        )
    if count * len(text) > max_chars:
        raise LimitExceededError(
            f"the prompt's schedule would render {count} texts of up to {len(text)} "
            f"characters; the limit is {max_chars} characters in all (max_chars)"
        )
    boundaries = _boundaries(total, switches, alternates)
    return tuple((boundary, render_pieces(pieces, boundary, step_of)) for boundary in boundaries)


def tree_schedules(
    text: str,
    steps: int,
    *,
    hires_steps: int | None = None,
    old_timelines: bool = False,
    engine: str = "fast",
) -> list[tuple[int, str]]:
    """:func:`schedules` computed from the parsed tree (the reference for the fast scanner);
    ``engine="lark"`` builds the tree with Lark's LALR parser."""
    total, hires = _timeline(steps, hires_steps, old_timelines)
    nodes, diagnostics = parse_nodes(
        text, dialect=A1111, max_depth=DEFAULT_MAX_DEPTH, engine=engine
    )
    if any(d.kind in GLOBAL_FAILURES for d in diagnostics):
        return [(total, text)]

    def step_of(edit: Edit) -> int:
        return edit_step(edit, total, base_steps=steps, hires=hires, old_timelines=old_timelines)

    found = list(_walk(nodes))
    edits = [node for node in found if isinstance(node, Edit)]
    alternates = any(isinstance(node, Alternation) for node in found)
    return [
        (boundary, render_nodes(nodes, step=boundary, step_of=step_of))
        for boundary in _boundaries(total, map(step_of, edits), alternates)
    ]


def schedules(
    text: str,
    steps: int,
    *,
    hires_steps: int | None = None,
    old_timelines: bool = False,
    max_variants: int = DEFAULT_LIMITS.variants,
    max_chars: int = DEFAULT_LIMITS.schedule_chars,
) -> list[tuple[int, str]]:
    """Expand prompt editing and alternation into ``(end_at_step, text)`` pairs.

    Equal to A1111's ``get_learned_conditioning_prompt_schedules([text], steps, hires_steps,
    old_timelines)[0]``. The text at entry ``i`` is used by the sampler for calls ``k`` with
    ``k <= end_at_step`` (0-based ``k``, first matching entry), see a1111-behaviour.md §4.5.
    Pass one AND part (see :func:`split_and`) with extra networks and comments already removed,
    as A1111 does.

    Args:
        text: the prompt text.
        steps: the number of sampling steps (doubled by the caller for second-order samplers).
        hires_steps: steps of the hires-fix pass, to get that pass's schedule.
        old_timelines: A1111's "Old prompt editing timelines" setting.
        max_variants: the most entries the schedule may have (see :mod:`promptweights.limits`).
        max_chars: the most characters the schedule's texts may add up to (entries × length).

    Returns:
        A new list of ``(end_at_step, text)``; the last entry ends at the schedule length.

    Raises:
        LimitExceededError: the schedule would have more than ``max_variants`` entries or
            ``max_chars`` characters.
        ArgumentTypeError: ``text`` is not a ``str``, or a number of steps or a limit not an
            ``int``.
        InvalidArgumentError: a limit below 1.

    >>> schedules("a [cat:dog:0.5]", 10)
    [(5, 'a cat'), (10, 'a dog')]
    >>> schedules("[fe|]male", 4)
    [(1, 'female'), (2, 'male'), (3, 'female'), (4, 'male')]
    """
    if not (
        type(text) is str
        and type(steps) is int
        and (hires_steps is None or type(hires_steps) is int)
        and type(max_variants) is int
        and type(max_chars) is int
        and max_variants >= 1
        and max_chars >= 1
    ):  # the checks, only where one can fail: this runs for every cached lookup too
        text = check_text(text, "text")
        steps = check_int(steps, "steps")
        if hires_steps is not None:
            hires_steps = check_int(hires_steps, "hires_steps")
        max_variants = check_int(max_variants, "max_variants", minimum=1)
        max_chars = check_int(max_chars, "max_chars", minimum=1)
    return list(_cached_schedules(text, steps, hires_steps, old_timelines, max_variants, max_chars))


schedules.cache_clear = _cached_schedules.cache_clear  # type: ignore[attr-defined]


def split_and_with_tails(text: str) -> list[tuple[str, float, str]]:
    """Like :func:`split_and`, also returning each part's raw tail (spaces and ``:w``)."""
    parts = []
    for piece in _AND_RE.split(text):
        match = _AND_WEIGHT_RE.search(piece)
        if match is not None:
            parts.append((piece[: match.start()], float(match.group(1)), piece[match.start() :]))
        else:
            body = piece.rstrip()
            parts.append((body, 1.0, piece[len(body) :]))
    return parts


def split_and(text: str, *, max_parts: int = DEFAULT_LIMITS.and_parts) -> list[tuple[str, float]]:
    """Split a positive prompt at ``AND`` into ``(sub_prompt, weight)`` pairs (§6.1).

    ``AND`` is case-sensitive with word boundaries; a trailing ``:w`` sets the part's weight
    (default 1.0); trailing spaces are dropped, leading ones kept. More than ``max_parts`` parts
    raise :class:`~promptweights.errors.LimitExceededError` (each part costs a UNet pass per step);
    a ``max_parts`` below 1 raises :class:`~promptweights.errors.InvalidArgumentError`, and a
    ``text`` that is not a ``str`` :class:`~promptweights.errors.ArgumentTypeError`.

    >>> split_and("a cat AND a dog:0.5")
    [('a cat', 1.0), (' a dog', 0.5)]
    """
    if type(text) is not str:
        text = check_text(text, "text")
    if type(max_parts) is not int or max_parts < 1:
        max_parts = check_int(max_parts, "max_parts", minimum=1)
    separators = [match.start() for match in _AND_RE.finditer(text)]
    if len(separators) >= max_parts:
        raise LimitExceededError(
            f"the prompt has {len(separators) + 1} AND parts; the limit is {max_parts} "
            f"(max_parts): the AND at character {separators[max_parts - 1]} starts one too many"
        )
    return [(body, weight) for body, weight, _ in split_and_with_tails(text)]
