"""LoRA weights that change during sampling: loractl's ``<lora:name:0@0,1@0.5>``.

loractl (the A1111 extension ``sd-webui-loractl``) lets each LoRA multiplier be a list of points
``weight@step`` instead of one number. What it does, from its README and its tests:

* A multiplier is a plain number (the same at every step) or points ``weight@step`` separated by
  ``,`` or ``;``. When the *first* entry has no ``@step`` the multiplier is that plain number and
  the other entries are ignored (a ``bad-network`` diagnostic here); a later entry without
  ``@step`` is a point at step 1.
* Points are sorted by step (a stable sort: of two points at the same step, the one written last
  holds from that step on, so ``0@5,1@5`` is a jump from 0 to 1 at step 5).
* When the largest step is at most 1 every step is a fraction of the pass; otherwise every step
  is an absolute step number (``0@0,1@0.5`` ramps over half the pass, ``0@5,1@6`` switches after
  step 5).
* Between two points the weight is interpolated linearly (numpy's ``interp``); before the first
  point it is the first weight, after the last the last weight.
* ``te=``, ``unet=`` (or the second and third positional arguments) are the text-encoder and UNet
  schedules; ``hr=`` sets both for the hires pass, ``hrte=``/``hrunet=`` override one of them.
  The UNet defaults to the text encoder's, ``hrunet`` to the UNet's, ``hrte`` to the text
  encoder's; the text encoder defaults to 1.

The step a schedule is read at is A1111's ``state.sampling_step``: the sampler's callback sets it
after the first model call of each step, and loractl reads it when a LoRA layer runs. So model
call ``k`` of a pass (from 0) sees step ``max((k - 1) // order, 0)`` (:func:`lora_step`; order 2
for Heun-like samplers, whose second call of a step comes after the callback), and a fraction is
of ``steps - 2``: the step the last call sees. With 2 steps or fewer every call sees step 0 (where
loractl would divide by zero or by a negative number).

Lenient mode (the default) never raises: an entry that is empty, not a number, with more than one
``@`` or a step that is not finite is left out, and a multiplier with no usable entry keeps its
default; each is a problem that ``strict=True`` raises as a
:class:`~promptweights.errors.PromptSyntaxError` pointing at the entry.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ._arguments import check_int, check_text
from .errors import LimitExceededError, PromptSyntaxError
from .tree import ExtraNetwork

__all__ = [
    "LoraWeights",
    "WeightSchedule",
    "lora_schedules",
    "lora_step",
    "lora_weights",
    "weight_schedule",
    "weights_per_call",
]

_SEPARATOR = re.compile(r"[,;]")
_SCHEDULE_CHARS = ("@", ",", ";")
#: The most calls :func:`weights_per_call` lists (a bound on the work a ``steps`` argument asks).
MAX_CALLS = 100_000
_LORA_KINDS = ("lora", "lyco")


@dataclass(frozen=True, slots=True)
class WeightSchedule:
    """One multiplier: a plain number, or loractl points.

    Attributes:
        weights: the weights of the points, sorted by step (one weight for a plain number).
        steps: the steps of the points, ascending; ``None`` for a plain number.
    """

    weights: tuple[float, ...]
    steps: tuple[float, ...] | None = None

    @property
    def constant(self) -> bool:
        """Whether the weight is the same at every step."""
        return self.steps is None or len(set(self.weights)) == 1

    @property
    def fractional(self) -> bool:
        """Whether the steps are fractions of the pass (the largest step is at most 1)."""
        return self.steps is not None and self.steps[-1] <= 1.0

    @property
    def initial(self) -> float:
        """The weight at step 0 (the same whatever the number of steps)."""
        return self.weights[0] if self.steps is None else _interp(0.0, self.steps, self.weights)

    def at(self, step: int, steps: int) -> float:
        """The weight at loractl step ``step`` of a pass of ``steps`` sampler steps.

        >>> weight_schedule("0@0,1@0.5").at(7, 16)
        1.0
        >>> weight_schedule("0.5@5,1.0@10").at(8, 30)
        0.8
        """
        if self.steps is None:
            return self.weights[0]
        x = float(step)
        if self.fractional:
            x = x / (steps - 2) if steps > 2 else (0.0 if step <= 0 else 1.0)
        return _interp(x, self.steps, self.weights)

    def __str__(self) -> str:
        if self.steps is None:
            return f"{self.weights[0]:g}"
        return ",".join(f"{w:g}@{s:g}" for w, s in zip(self.weights, self.steps, strict=True))


def _interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    """numpy's ``interp(x, xs, ys)`` for ascending ``xs``: at repeated steps the last one wins."""
    if x >= xs[-1]:
        return ys[-1]
    if x < xs[0]:
        return ys[0]
    j = bisect.bisect_right(xs, x) - 1
    if xs[j] == x:
        return ys[j]
    slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
    return slope * (x - xs[j]) + ys[j]


@dataclass(frozen=True, slots=True)
class _Read:
    """A multiplier as read: the schedule (None: no usable entry) and its problems, each with
    its offset in the multiplier's text."""

    schedule: WeightSchedule | None
    problems: tuple[tuple[int, str], ...]


def _read(text: str) -> _Read:
    """Read a multiplier the way loractl's ``sorted_positions`` does, leaving bad entries out."""
    problems: list[tuple[int, str]] = []
    points: list[tuple[float, float | None]] = []
    start = 0
    entries = []
    for match in _SEPARATOR.finditer(text):
        entries.append((start, text[start : match.start()]))
        start = match.end()
    entries.append((start, text[start:]))
    for offset, entry in entries:
        lead = len(entry) - len(entry.lstrip())
        pieces = entry.split("@")
        if not entry.strip():
            problems.append((offset, f"an empty entry in the LoRA weight {text!r}"))
            continue
        if len(pieces) > 2:
            problems.append(
                (offset + lead, f"{entry.strip()!r} has more than one '@' (write weight@step)")
            )
            continue
        try:
            numbers = [float(piece) for piece in pieces]
        except ValueError:
            problems.append(
                (offset + lead, f"LoRA weight entry {entry.strip()!r} is not weight@step numbers")
            )
            continue
        step = numbers[1] if len(numbers) == 2 else None
        if step is not None and not math.isfinite(step):
            problems.append((offset + lead, f"the step of {entry.strip()!r} is not finite"))
            continue
        points.append((numbers[0], step))
    if not points:
        if not problems:
            problems.append((0, f"LoRA weight {text!r} has no entry"))
        return _Read(None, tuple(problems))
    if points[0][1] is None:
        if len(points) > 1:
            problems.append(
                (0, f"LoRA weight {text!r} starts with a plain number: loractl ignores the rest")
            )
        return _Read(WeightSchedule((points[0][0],)), tuple(problems))
    # Sorted by step alone (a stable sort): points at one step keep their written order.
    ordered = sorted(((1.0 if s is None else s, w) for w, s in points), key=lambda p: p[0])
    steps = tuple(s for s, _ in ordered)
    weights = tuple(w for _, w in ordered)
    return _Read(WeightSchedule(weights, steps), tuple(problems))


def weight_schedule(text: str, *, default: float = 1.0, strict: bool = False) -> WeightSchedule:
    """Read one LoRA multiplier as loractl does: ``0.8``, or ``weight@step`` points.

    Args:
        text: the multiplier as written (``"0@0,1@0.5"``, ``"1@0;0.5@3;1@6"``, ``"0.7"``).
        default: what a multiplier with no usable entry becomes in lenient mode.
        strict: raise on any entry lenient mode leaves out.

    Returns:
        The schedule.

    Raises:
        PromptSyntaxError: with ``strict=True``, the first bad entry, with its position in
            ``text``.

    >>> weight_schedule("0.5@3,1@6,1@0")
    WeightSchedule(weights=(1.0, 0.5, 1.0), steps=(0.0, 3.0, 6.0))
    >>> weight_schedule("0@0,oops,1@1").steps  # lenient: the bad entry is left out
    (0.0, 1.0)
    """
    text = check_text(text, "text")
    read = _read(text)
    if strict and read.problems:
        offset, message = read.problems[0]
        raise PromptSyntaxError(message, source=text, pos=offset, kind="bad-network")
    return read.schedule or WeightSchedule((float(default),))


def read_multiplier(text: str) -> tuple[float | None, str | None]:
    """For :func:`promptweights.networks.make_network`: a multiplier that is not a plain float,
    read as a loractl schedule: its weight at step 0 (None if nothing is usable) and its first
    problem. ``(None, None)`` for a text that has no loractl syntax at all."""
    if not any(ch in text for ch in _SCHEDULE_CHARS):
        return None, None
    read = _read(text)
    first = read.problems[0][1] if read.problems else None
    return (None if read.schedule is None else read.schedule.initial), first


@dataclass(frozen=True, slots=True)
class LoraWeights:
    """The four schedules of one LoRA tag (loractl's ``params_to_weights``).

    Attributes:
        name: the LoRA's name.
        te: the text-encoder schedule of the first pass.
        unet: the UNet schedule of the first pass.
        hires_te: the text-encoder schedule of the hires pass.
        hires_unet: the UNet schedule of the hires pass.
        kind: the tag type (``lora`` or ``lyco``).
    """

    name: str
    te: WeightSchedule
    unet: WeightSchedule
    hires_te: WeightSchedule
    hires_unet: WeightSchedule
    kind: str = "lora"

    @property
    def scheduled(self) -> bool:
        """Whether any of its weights changes during a pass."""
        return not all(s.constant for s in (self.te, self.unet, self.hires_te, self.hires_unet))

    def at(self, step: int, steps: int, *, hires: bool = False) -> tuple[float, float]:
        """The text-encoder and UNet weights at loractl step ``step`` of ``steps``."""
        te, unet = (self.hires_te, self.hires_unet) if hires else (self.te, self.unet)
        return te.at(step, steps), unet.at(step, steps)


# Which argument each schedule comes from, and what it falls back to (loractl's cascade).
_KEYS = ("te", "unet", "hr", "hrte", "hrunet")


def _arguments(network: ExtraNetwork) -> dict[str, tuple[str, int]]:
    """The schedule arguments of a tag as written, each with its offset in the tag's text.

    Later arguments override earlier ones, named ones positional ones, as loractl reads them
    (an empty named value is ignored, as loractl's truthiness test does)."""
    found: dict[str, tuple[str, int]] = {}
    offset = len(network.kind) + 2  # "<kind:"
    positional = 0
    named: dict[str, tuple[str, int]] = {}
    for arg in network.args:
        pair = arg.split("=")
        if len(pair) == 2:
            if pair[0] in _KEYS and pair[1]:
                named[pair[0]] = (pair[1], offset + len(pair[0]) + 1)
        else:
            if positional in (1, 2):
                found[("te", "unet")[positional - 1]] = (arg, offset)
            positional += 1
        offset += len(arg) + 1
    found.update(named)
    return found


def _resolve(network: ExtraNetwork) -> tuple[LoraWeights, list[tuple[int, str]]]:
    """The tag's schedules and its problems (offsets in the tag's text)."""
    problems: list[tuple[int, str]] = []
    read: dict[str, WeightSchedule] = {}
    for key, (text, offset) in _arguments(network).items():
        result = _read(text)
        problems += [(offset + at, message) for at, message in result.problems]
        if result.schedule is not None:
            read[key] = result.schedule
    te = read.get("te", WeightSchedule((1.0,)))
    unet = read.get("unet", te)
    hires_unet = read.get("hrunet", read.get("hr", unet))
    hires_te = read.get("hrte", read.get("hr", te))
    problems.sort()
    return LoraWeights(network.name, te, unet, hires_te, hires_unet, network.kind), problems


def lora_weights(
    network: ExtraNetwork, *, strict: bool = False, source: str | None = None
) -> LoraWeights:
    """The schedules of one ``<lora:…>`` tag, as loractl reads its arguments.

    Args:
        network: the tag (from :func:`promptweights.extra_networks` or ``parse(...).networks``).
        strict: raise on an entry lenient mode leaves out.
        source: the text the tag was cut from (its ``pos`` is an offset in it), for the
            position of a strict error; without it the error points into the tag.

    Returns:
        Its :class:`LoraWeights`.

    Raises:
        PromptSyntaxError: with ``strict=True``, pointing at the bad entry.

    >>> from promptweights import extra_networks
    >>> tag = extra_networks("<lora:pixel:te=1:unet=0@0,1@1>")[1][0]
    >>> lora_weights(tag).unet
    WeightSchedule(weights=(0.0, 1.0), steps=(0.0, 1.0))
    """
    weights, problems = _resolve(network)
    if strict and problems:
        offset, message = problems[0]
        if source is not None and network.pos >= 0:
            raise PromptSyntaxError(
                message, source=source, pos=network.pos + offset, kind="bad-network"
            )
        tag = network.source or f"<{network.kind}:{':'.join(network.args)}>"
        raise PromptSyntaxError(message, source=tag, pos=offset, kind="bad-network")
    return weights


def lora_schedules(text: str, *, strict: bool = False) -> list[LoraWeights]:
    """The weight schedules of every ``<lora:…>`` and ``<lyco:…>`` tag in a prompt, in order.

    Comments are stripped first, as A1111 does. Tags that schedule nothing give plain-number
    schedules.

    Args:
        text: the prompt.
        strict: raise on any entry lenient mode leaves out.

    Returns:
        One :class:`LoraWeights` per tag.

    Raises:
        PromptSyntaxError: with ``strict=True``, at the bad entry's position in ``text``.

    >>> [str(w.unet) for w in lora_schedules("a cat <lora:ink:0@0,1@0.5> <lora:b:0.7>")]
    ['0@0,1@0.5', '0.7']
    """
    from .networks import extra_networks_with_map, strip_comments_with_map

    text = check_text(text, "text")
    uncommented, comment_map = strip_comments_with_map(text)
    _, found, _ = extra_networks_with_map(uncommented)
    out = []
    for network, _ in found:
        if network.kind not in _LORA_KINDS:
            continue
        weights, problems = _resolve(network)
        if strict and problems:
            offset, message = problems[0]
            pos = comment_map(network.pos + offset)
            raise PromptSyntaxError(message, source=text, pos=pos, kind="bad-network")
        out.append(weights)
    return out


def lora_step(call: int, order: int = 1) -> int:
    """The sampler step loractl reads at model call ``call`` of a pass (from 0).

    A1111's sampler callback sets ``state.sampling_step`` to ``i`` after the first model call of
    step ``i``; so with a first-order sampler calls 0 and 1 both see step 0, call ``k`` step
    ``k - 1``. With a second-order one (``order=2``) the second call of step ``i`` sees ``i``.

    >>> [lora_step(k) for k in range(5)]
    [0, 0, 1, 2, 3]
    >>> [lora_step(k, order=2) for k in range(6)]
    [0, 0, 0, 1, 1, 2]
    """
    return max((call - 1) // order, 0)


def weights_per_call(
    loras: Sequence[LoraWeights],
    steps: int,
    *,
    order: int = 1,
    hires: bool = False,
    calls: int | None = None,
) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """The text-encoder and UNet weight of every LoRA at every model call of a pass.

    Args:
        loras: the tags' schedules (:func:`lora_schedules`).
        steps: the pass's sampler steps (A1111's ``sampling_steps``: ``steps``, or the hires
            steps for a hires pass).
        order: 2 for a second-order sampler (two model calls per step).
        hires: use the hires-pass schedules (``hr=``, ``hrte=``, ``hrunet=``).
        calls: how many model calls to list (default ``steps * order``).

    Returns:
        Per call, ``(te weights, unet weights)``, one weight per tag in order.

    Raises:
        InvalidArgumentError: ``steps`` or ``calls`` below 1, ``order`` not 1 or 2.
        LimitExceededError: more than :data:`MAX_CALLS` calls.

    >>> loras = lora_schedules("<lora:a:1:0@0,1@4>")
    >>> [unet for _, unet in weights_per_call(loras, 6)]
    [(0.0,), (0.0,), (0.25,), (0.5,), (0.75,), (1.0,)]
    """
    steps = check_int(steps, "steps", minimum=1)
    order = check_int(order, "order", minimum=1)
    if order > 2:
        from .errors import InvalidArgumentError

        raise InvalidArgumentError(f"order must be 1 or 2, not {order}")
    calls = steps * order if calls is None else check_int(calls, "calls", minimum=1)
    if calls > MAX_CALLS:
        raise LimitExceededError(f"{calls} model calls; the limit is {MAX_CALLS}")
    out = []
    for call in range(calls):
        step = lora_step(call, order)
        pairs = [lora.at(step, steps, hires=hires) for lora in loras]
        out.append((tuple(te for te, _ in pairs), tuple(unet for _, unet in pairs)))
    return out
