"""Compare weighting strategies and settings on fixed seeds: an X/Y/Z grid for a diffusers pipeline.

A1111 users compare with the X/Y/Z plot script, or by fixing the seed and moving one weight. Here
:func:`compare` runs a grid over one to three :class:`Axis` (strategy, a weight sweep on one span,
seed, sampler, CFG scale, steps, clip skip, token normalisation), holding everything else fixed:

* cells with the same seed start from the same initial latents (drawn from a CPU
  ``torch.Generator`` seeded with it, whatever the sampler or device), and samplers that add
  noise draw it from a generator with the same seed;
* each distinct conditioning (prompt text, strategy, normalisation, clip skip, and the schedule
  length when the prompt edits) is encoded once, and cells that share it share the tensors; all of
  them (with the unweighted references of the metrics) are encoded up front, together, by
  :func:`promptweights.diffusers.encode_many`: one pass per text encoder (per clip skip);
* the output folder gets ``grid.png`` (row and column labels drawn on it; a third axis stacks
  labelled panels), ``cells/NNN.png`` with each cell's infotext embedded, ``metrics.json`` and
  ``metrics.csv`` (per cell: cosine distance of the conditioning to the unweighted prompt's; mean
  absolute pixel distance to its ``baseline`` cell, the cell with the same seed and every other
  axis at its first value — a first cell, not an image of the unweighted prompt), and
  ``sweep.gif`` when a weight is swept. The folder must be empty unless ``overwrite=True``
  (:func:`check_out_dir`, run before any model work); every file is written to a temporary name
  and renamed into place, and symlinks found in the folder are never followed;
* under ``accelerate launch`` the cells are split between processes with
  ``PartialState().split_between_processes`` and gathered into one grid; every cell runs alone
  with its own generator, so a sharded grid is identical to a single-process one.

A weight sweep is written in the prompt, ``(smile:{0..1.5:0.25})`` or ``(smile:{0,0.5,1})``, or
given as :meth:`Axis.sweep` / :func:`parse_sweep` (``"smile=0:1.5:0.25"``) on a span of the prompt.
This module imports torch, diffusers and Pillow when :func:`compare` runs; its helpers do not:

>>> parse_sweep("smile=0:1:0.25")
Axis(name='weight', values=(0.0, 0.25, 0.5, 0.75, 1.0), span='smile')
>>> sweep_template("a smile, (eyes:1.2)", "eyes").replace(WEIGHT_SLOT, "W")
'a smile, (eyes:W)'
>>> find_prompt_sweep("a (smile:{0..1:0.5}) face")
('a (smile:\\ue000) face', Axis(name='weight', values=(0.0, 0.5, 1.0), span='smile'))
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import itertools
import json
import math
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

from .errors import CompareError, LimitExceededError
from .infotext import (
    EMPHASIS_STRATEGIES,
    FAMILY_KEY,
    SAMPLING_KEY,
    SCHEDULER_KEY,
    SEQUENCE_KEY,
    STRATEGY_KEY,
)

__all__ = [
    "AXES",
    "MAX_CELLS",
    "MAX_SIZE",
    "MAX_STEPS",
    "SMALL_MODEL_PARAMETERS",
    "WEIGHT_SLOT",
    "Axis",
    "Cell",
    "CompareResult",
    "check_out_dir",
    "check_size",
    "compare",
    "draw_grid",
    "find_prompt_sweep",
    "parse_sweep",
    "parse_values",
    "plan_grid",
    "process_state",
    "settings_from_infotext",
    "sweep_template",
]

#: The axes a grid can have, in the order the command line stacks them (columns first).
AXES = (
    "weight",
    "strategy",
    "seed",
    "sampler",
    "cfg",
    "steps",
    "clip_skip",
    "normalization",
    "prompt",  # the prompts of a dynamic-prompts expansion (Axis.expansion, --expand)
)

#: Most cells one grid may have (a grid is a picture to look at, not a batch job).
MAX_CELLS = 1024

#: Most values one weight sweep may have.
MAX_SWEEP = 100

#: Largest image side (pixels) a grid may ask for: 4096 is past what any Stable Diffusion model
#: renders in one pass; ``--size 800000x800000`` would allocate terabytes.
MAX_SIZE = 4096

#: Most sampling steps one cell may run (A1111's slider stops at 150; a scheduler allocates its
#: timesteps up front, so ``--steps 2000000000`` would exhaust memory before the first step).
MAX_STEPS = 1000

#: Where a swept weight goes in a prompt template (a private-use character no prompt contains).
WEIGHT_SLOT = "\ue000"

_TITLES = {
    "strategy": "strategy",
    "seed": "seed",
    "sampler": "sampler",
    "cfg": "CFG",
    "steps": "steps",
    "clip_skip": "clip skip",
    "normalization": "norm",
    "prompt": "prompt",
}
# A1111's "Emphasis" setting for the strategies that are A1111's own (a1111-behaviour.md §9.1).
_EMPHASIS = {strategy: mode for mode, strategy in EMPHASIS_STRATEGIES.items()}
# Families whose infotext stays as A1111 writes it (A1111 runs them; no T5 window to name).
_CLIP_FAMILIES = ("sd", "sdxl", "sdxl-refiner")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)"
_BRACES_RE = re.compile(r"\{([^{}]*)\}")
_SPAN_BEFORE_RE = re.compile(r"\(([^():]*):$")


# --- axes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """One axis of a comparison grid: what varies and the values it takes.

    Attributes:
        name: one of :data:`AXES`.
        values: the values, in the order they are drawn: strategy names (or callables), weights,
            seeds, A1111 sampler names, CFG scales, step counts, A1111 clip skips (1 = none) or
            normalisation names.
        span: for ``"weight"``: the text whose weight is swept.

    A ``"prompt"`` axis holds whole prompts, one column each: :meth:`expansion` makes one from a
    dynamic-prompts template (``{red|blue} cat``, ``__wildcard__``).

    >>> Axis("seed", (1, 2)).labels()
    ['seed 1', 'seed 2']
    >>> Axis("colour", (1,))
    Traceback (most recent call last):
      ...
    promptweights.errors.CompareError: unknown axis 'colour'; known: weight, strategy, seed, ...
    """

    name: str
    values: tuple[Any, ...]
    span: str | None = None

    def __post_init__(self) -> None:
        if self.name not in AXES:
            raise CompareError(f"unknown axis {self.name!r}; known: {', '.join(AXES)}")
        object.__setattr__(self, "values", tuple(self.values))
        if not self.values:
            raise CompareError(f"the {self.name} axis has no values")
        for value in self.values:
            _check_value(self.name, value)
        if self.name == "weight":
            object.__setattr__(self, "values", tuple(float(v) for v in self.values))

    @classmethod
    def expansion(cls, template: str, **options: Any) -> Axis:
        """The prompts of a dynamic-prompts template, one per column: ``options`` go to
        :func:`promptweights.dynamic.expand` (``wildcards=``, ``mode=``, ``seed=``, ``count=``);
        ``limit`` is :data:`MAX_CELLS` unless given.

        >>> Axis.expansion("a {red|blue} cat").values
        ('a red cat', 'a blue cat')
        """
        from .dynamic import expand

        options.setdefault("limit", MAX_CELLS)
        return cls("prompt", tuple(expand(template, **options)))

    @classmethod
    def sweep(cls, span: str, values: Sequence[float] | str) -> Axis:
        """A weight sweep on ``span``: a list of weights or a range ``"start:stop:step"``.

        >>> Axis.sweep("smile", "0.5:1:0.5").values
        (0.5, 1.0)
        """
        if not span.strip():
            raise CompareError("a weight sweep needs the text whose weight it sweeps")
        numbers = parse_values(values) if isinstance(values, str) else tuple(values)
        return cls("weight", numbers, span=span.strip())

    @property
    def title(self) -> str:
        """How labels name the axis: the swept span, or a short name (``CFG``)."""
        if self.name == "weight":
            return self.span or "weight"
        return _TITLES[self.name]

    def labels(self) -> list[str]:
        """One label per value, as drawn on the grid."""
        if self.name == "weight":
            return [f"{self.title}={v:g}" for v in self.values]
        if self.name == "prompt":  # the prompt itself, shortened; a swept weight shows as "w"
            texts = [v.replace(WEIGHT_SLOT, "w") for v in self.values]
            return [t if len(t) <= 40 else t[:39] + "…" for t in texts]
        return [f"{self.title} {_value_text(v)}" for v in self.values]


def _value_text(value: Any) -> str:
    if value is None:
        return "default"
    if callable(value):
        return str(getattr(value, "__name__", value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _check_value(name: str, value: Any) -> None:
    def fail(what: str) -> CompareError:
        return CompareError(f"bad {name} value {value!r}: {what}")

    if name in ("seed", "steps", "clip_skip"):
        _check_integer(name, value, fail)
    elif name in ("weight", "cfg"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("must be a number")
        if not math.isfinite(value):
            raise fail("must be finite")
    elif name == "strategy":
        if not (isinstance(value, str) or callable(value)):
            raise fail("must be a name or a callable")
    elif name == "sampler":
        if value is not None and not isinstance(value, str):
            raise fail("must be an A1111 sampler name")
    elif not isinstance(value, str):  # normalization, prompt
        raise fail("must be a prompt (a str)" if name == "prompt" else "must be a name")


def _check_integer(name: str, value: Any, fail: Callable[[str], CompareError]) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail("must be an integer")
    if name == "seed" and not 0 <= value < 2**64:
        raise fail("must be in [0, 2**64)")
    if name in ("steps", "clip_skip") and value < 1:
        raise fail("must be at least 1")
    if name == "steps" and value > MAX_STEPS:
        raise LimitExceededError(f"bad steps value {value!r}: at most {MAX_STEPS} (MAX_STEPS)")


def parse_values(text: str) -> tuple[float, ...]:
    """Read weights: a list ``"0,0.5,1"`` or an inclusive range ``"0:1.5:0.25"``/``"0..1.5:0.25"``.

    Args:
        text: the values.

    Returns:
        The weights, in order (a range is rounded to 10 decimals, so ``0.1`` steps stay exact).

    Raises:
        CompareError: for text that is neither, a step that is not positive, or an empty range.
        LimitExceededError: for more than :data:`MAX_SWEEP` values.

    >>> parse_values("0..1:0.5"), parse_values("1, 2"), parse_values("0:0.3:0.1")
    ((0.0, 0.5, 1.0), (1.0, 2.0), (0.0, 0.1, 0.2, 0.3))
    """
    spec = text.strip()
    match = re.fullmatch(rf"({_NUMBER})\s*(?:\.\.|:)\s*({_NUMBER})(?:\s*:\s*({_NUMBER}))?", spec)
    if match:
        start, stop = float(match.group(1)), float(match.group(2))
        step = float(match.group(3)) if match.group(3) else 0.25
        if step <= 0 or not all(math.isfinite(x) for x in (start, stop, step)):
            raise CompareError(f"bad weight range {text!r}: the step must be a positive number")
        if stop < start:
            raise CompareError(f"bad weight range {text!r}: it ends before it starts")
        count = math.floor((stop - start) / step + 1e-9) + 1
        if count > MAX_SWEEP:
            raise LimitExceededError(
                f"weight range {text!r} has {count} values; at most {MAX_SWEEP}"
            )
        return tuple(round(start + i * step, 10) for i in range(count))
    items = [item.strip() for item in spec.split(",")]
    if not spec or not all(re.fullmatch(_NUMBER, item) for item in items):
        raise CompareError(
            f"bad weights {text!r}: give a list like '0,0.5,1' or a range like '0:1.5:0.25'"
        )
    if len(items) > MAX_SWEEP:
        raise LimitExceededError(f"{len(items)} weights; at most {MAX_SWEEP}")
    return tuple(float(item) for item in items)


def parse_sweep(text: str) -> Axis:
    """Read the command line's ``--sweep SPAN=VALUES`` (``"smile=0:1.5:0.25"``, ``"cat=0.5,1"``).

    Raises:
        CompareError: text without ``=``, an empty span, or values :func:`parse_values` refuses.
    """
    span, equals, values = text.rpartition("=")
    if not equals or not span.strip():
        raise CompareError(f"bad sweep {text!r}: write SPAN=VALUES, e.g. 'smile=0:1.5:0.25'")
    return Axis.sweep(span, parse_values(values))


def sweep_template(prompt: str, span: str) -> str:
    """The prompt with :data:`WEIGHT_SLOT` where the weight of ``span`` goes.

    ``(span:1.2)`` in the prompt has its number replaced; otherwise the first occurrence of
    ``span`` as whole words becomes ``(span:<slot>)`` (inside other brackets their factor still
    applies, as in A1111).

    Raises:
        CompareError: ``span`` is not in the prompt.
    """
    weighted = re.compile(rf"\(\s*{re.escape(span)}\s*:\s*({_NUMBER})\s*\)")
    found = weighted.search(prompt)
    if found:
        return prompt[: found.start(1)] + WEIGHT_SLOT + prompt[found.end(1) :]
    plain = re.compile(rf"(?<!\w){re.escape(span)}(?!\w)")
    found = plain.search(prompt)
    if found is None:
        raise CompareError(f"the swept text {span!r} is not in the prompt")
    return f"{prompt[: found.start()]}({span}:{WEIGHT_SLOT}){prompt[found.end() :]}"


def find_prompt_sweep(prompt: str) -> tuple[str, Axis] | None:
    """Find a weight sweep written in the prompt: ``(smile:{0..1.5:0.25})`` or ``{0,0.5,1}``.

    Returns:
        The template (:data:`WEIGHT_SLOT` in place of the braces) and the weight axis, or None
        when the prompt has no braces holding numbers.

    Raises:
        CompareError: for more than one sweep in the prompt.
    """
    found: list[tuple[re.Match[str], tuple[float, ...]]] = []
    for match in _BRACES_RE.finditer(prompt):
        inner = match.group(1)
        if not re.fullmatch(rf"\s*{_NUMBER}\s*(?:(?:\.\.)\s*{_NUMBER}.*|,.*)", inner):
            continue  # not a sweep: braces are plain text to A1111
        found.append((match, parse_values(inner)))
    if not found:
        return None
    if len(found) > 1:
        raise CompareError("a prompt can sweep one weight; it has more than one {…} sweep")
    match, values = found[0]
    template = prompt[: match.start()] + WEIGHT_SLOT + prompt[match.end() :]
    span = _SPAN_BEFORE_RE.search(prompt[: match.start()])
    return template, Axis("weight", values, span=span.group(1).strip() if span else None)


# --- cells ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One image of the grid and every setting it was made with.

    Attributes:
        index: its number, row-major (columns = axis 1, rows = axis 2, panels = axis 3).
        position: its index along each axis.
        prompt: the prompt, with the swept weight filled in.
        negative_prompt: the negative prompt.
        strategy: weighting strategy name (or callable).
        normalization: token normalisation name.
        seed: the seed of its initial latents and sampler noise.
        sampler: A1111 sampler name, or None for the pipeline's own scheduler.
        cfg: classifier-free guidance scale.
        steps: sampling steps.
        clip_skip: A1111's clip skip (1: the last layer).
        weight: the swept weight, if a weight is swept.
    """

    index: int
    position: tuple[int, ...]
    prompt: str
    negative_prompt: str
    strategy: Any
    normalization: str
    seed: int
    sampler: str | None
    cfg: float
    steps: int
    clip_skip: int
    weight: float | None = None

    @property
    def strategy_name(self) -> str:
        """The strategy's name (a callable's ``__name__``)."""
        return _value_text(self.strategy)


@dataclass
class CompareResult:
    """What :func:`compare` made.

    Attributes:
        axes: the grid's axes (columns, rows, panels).
        cells: every cell, by index.
        images: each cell's image, ``float32`` ``(H, W, 3)`` in ``[0, 1]``.
        metrics: one record per cell (what ``metrics.json`` holds under ``"cells"``).
        grid: the labelled grid, a ``PIL.Image.Image``.
        files: what was written, by kind (``grid``, ``json``, ``csv``, ``gif``, ``cells``); empty
            without ``out_dir`` and on processes other than the main one.
        encoded: how many conditionings this process encoded.
        ran: the indices of the cells this process ran (all of them without sharding).
    """

    axes: tuple[Axis, ...]
    cells: list[Cell]
    images: list[Any]
    metrics: list[dict[str, Any]]
    grid: Any
    files: dict[str, Any] = field(default_factory=dict)
    encoded: int = 0
    ran: tuple[int, ...] = ()


def _cells(
    prompt: str,
    axes: Sequence[Axis],
    template: str | None,
    fixed: dict[str, Any],
) -> list[Cell]:
    shape = [len(axis.values) for axis in axes]
    total = math.prod(shape)
    if total > MAX_CELLS:
        raise LimitExceededError(f"a grid of {total} cells; at most {MAX_CELLS}")
    cells = []
    # Row-major with the first axis fastest: itertools.product varies its last argument fastest.
    for index, reversed_position in enumerate(itertools.product(*(range(n) for n in shape[::-1]))):
        position = tuple(reversed_position[::-1])
        values = dict(fixed)
        for axis, i in zip(axes, position, strict=True):
            values[axis.name] = axis.values[i]
        weight = values.pop("weight", None)
        values["cfg"] = float(values["cfg"])
        text = values.pop("prompt", None)  # an expansion's variant, which holds the slot
        if text is None:
            text = prompt if template is None else template
        if weight is not None:
            text = text.replace(WEIGHT_SLOT, f"{weight:g}")
        cells.append(Cell(index, position, text, weight=weight, **values))
    return cells


def _baseline(cell: Cell, axes: Sequence[Axis]) -> int:
    """The cell with the same seed and every other axis at its first value."""
    shape = [len(axis.values) for axis in axes]
    position = [
        i if axis.name == "seed" else 0 for axis, i in zip(axes, cell.position, strict=True)
    ]
    index = 0
    for size, i in zip(shape[::-1], position[::-1], strict=True):
        index = index * size + i
    return index


# --- running ----------------------------------------------------------------------------------

#: ``encode(pipe, prompt, negative_prompt, *, strategy, normalization, clip_skip, steps,
#: second_order)`` returning an object with ``prompt_embeds``, ``pipeline_kwargs()`` and
#: ``attach(pipe)`` (a :class:`promptweights.diffusers.Conditioning`).
EncodeFunction = Callable[..., Any]


def _adapter_encode(
    pipe: Any,
    prompt: str,
    negative_prompt: str,
    *,
    strategy: Any,
    normalization: str,
    clip_skip: int,
    steps: int,
    second_order: bool,
    **options: Any,
) -> Any:
    from .diffusers import encode
    from .settings import pipeline_clip_skip

    return encode(
        pipe,
        prompt,
        negative_prompt,
        strategy=strategy,
        normalization=normalization,
        clip_skip=pipeline_clip_skip(clip_skip),
        steps=steps,
        second_order=second_order,
        **options,
    )


def _edits(text: str) -> bool:
    import promptweights

    try:
        return len(promptweights.schedules(text, 1000)) > 1
    except Exception:  # a text the schedule parser refuses fails later, with its own message
        return True


class _Runner:
    """Runs cells on one pipeline: conditioning cache, schedulers, latents per seed."""

    def __init__(
        self,
        pipe: Any,
        encode: EncodeFunction,
        height: int | None,
        width: int | None,
        call: _CallOptions | None = None,
    ):
        self.pipe = pipe
        self.encode_function = encode
        self.height = height
        self.width = width
        self.call = call or _CallOptions()
        self.conditionings: dict[tuple[Any, ...], Any] = {}
        self.schedulers: dict[str, Any] = {}
        self.original_scheduler: Any = getattr(pipe, "scheduler", None)

    def _choice(self, sampler: str) -> Any:
        from .samplers import resolve

        return resolve(sampler)

    def _request(
        self, cell: Cell, strategy: Any, normalization: str
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The cache key of a cell's conditioning and the encoder function's keyword arguments."""
        # Explicit, never read from pipe.scheduler, which may still be another cell's.
        if cell.sampler:
            second_order = bool(self._choice(cell.sampler).second_order)
        else:
            second_order = getattr(self.original_scheduler, "order", 1) == 2
        edits = _edits(cell.prompt) or _edits(cell.negative_prompt)
        schedule = (cell.steps, second_order) if edits else None
        key = (cell.prompt, cell.negative_prompt, strategy, normalization, cell.clip_skip, schedule)
        options = {
            "strategy": strategy,
            "normalization": normalization,
            "clip_skip": cell.clip_skip,
            "steps": cell.steps,
            "second_order": second_order,
        }
        options |= self.call.encode_options()
        return key, options

    def conditioning(self, cell: Cell, strategy: Any, normalization: str) -> Any:
        key, options = self._request(cell, strategy, normalization)
        if key not in self.conditionings:
            self.conditionings[key] = self.encode_function(
                self.pipe, cell.prompt, cell.negative_prompt, **options
            )
        return self.conditionings[key]

    def encode_all(self, cells: Sequence[Cell]) -> None:
        """Encode every distinct conditioning of ``cells`` (and their unweighted references) at
        once, with one pass per text encoder (:func:`promptweights.diffusers.encode_many`)."""
        from .diffusers import encode_many
        from .settings import pipeline_clip_skip

        wanted: dict[tuple[Any, ...], dict[str, Any]] = {}
        for cell in cells:
            for strategy, normalization in (
                (cell.strategy, cell.normalization),
                ("ignore", "none"),
            ):
                key, options = self._request(cell, strategy, normalization)
                if key not in self.conditionings and key not in wanted:
                    options["clip_skip"] = pipeline_clip_skip(cell.clip_skip)
                    prompts = {"prompt": cell.prompt, "negative_prompt": cell.negative_prompt}
                    wanted[key] = {**prompts, **options}
        if wanted:
            shared = ("exact", "max_sequence_length", "image")  # encode_many's own
            requests = [
                {k: v for k, v in options.items() if k not in shared} for options in wanted.values()
            ]
            done = encode_many(
                self.pipe,
                requests,
                exact=self.call.exact,
                max_sequence_length=self.call.max_sequence_length,
                image=self.call.image,
            )
            self.conditionings.update(zip(wanted, done, strict=True))

    def scheduler(self, sampler: str | None) -> tuple[Any, Any]:
        if sampler is None:
            return self.original_scheduler, None
        from .samplers import build_scheduler

        choice = self._choice(sampler)
        if sampler not in self.schedulers:
            self.schedulers[sampler] = build_scheduler(choice, self.original_scheduler.config)
        return self.schedulers[sampler], choice

    def latents(self, generator: Any) -> Any:
        """The initial latents for UNet pipelines (others draw from the generator), drawn from
        ``generator`` as the pipeline itself would draw them, so that a sampler adding noise
        continues from the same generator state as in a plain ``pipe(generator=…)`` call (and in
        :func:`promptweights.diffusers.from_infotext`)."""
        import torch

        unet = getattr(self.pipe, "unet", None)
        scale = getattr(self.pipe, "vae_scale_factor", None)
        if unet is None or not scale:
            return None
        height = self.height or unet.config.sample_size * scale
        width = self.width or unet.config.sample_size * scale
        shape = (1, unet.config.in_channels, height // scale, width // scale)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        return noise.to(device=unet.device, dtype=unet.dtype)

    def run(self, cell: Cell) -> Any:
        import numpy as np
        import torch

        from .samplers import model_sigmas, schedule_sigmas

        cond = self.conditioning(cell, cell.strategy, cell.normalization)
        scheduler, choice = self.scheduler(cell.sampler)
        self.pipe.scheduler = scheduler
        generator = torch.Generator("cpu").manual_seed(cell.seed)
        kwargs: dict[str, Any] = {
            "num_inference_steps": cell.steps,
            "guidance_scale": cell.cfg,
            "generator": generator,
            "output_type": "np",
        }
        latents = self.latents(generator)
        if latents is not None:
            kwargs["latents"] = latents
        if self.height:
            kwargs["height"] = self.height
        if self.width:
            kwargs["width"] = self.width
        kwargs |= self.call.pipeline_kwargs()
        if choice is not None and choice.explicit_sigmas and choice.schedule_name:
            sigmas = model_sigmas(scheduler.alphas_cumprod.tolist())
            kwargs["sigmas"] = schedule_sigmas(choice.schedule_name, cell.steps, sigmas)
        with cond.attach(self.pipe):
            # The cell's own steps win: a conditioning without edits is shared across steps.
            out = self.pipe(**{**cond.pipeline_kwargs(), **kwargs})
        image: Any = np.asarray(first_image(out), dtype=np.float32)
        return image

    def restore(self) -> None:
        if self.original_scheduler is not None:
            self.pipe.scheduler = self.original_scheduler


@dataclass(frozen=True)
class _CallOptions:
    """What every cell's encoding and pipeline call share beyond the axes (:func:`compare`'s
    ``exact``, ``max_sequence_length`` and ``pipeline_options``; ``image``: the options' input
    image where the family's prompt encoding takes it, for the encoding too)."""

    exact: bool = False
    max_sequence_length: int | None = None
    pipeline_options: tuple[tuple[str, Any], ...] = ()
    image: Any = None

    def encode_options(self) -> dict[str, Any]:
        """The encoder function's extra keyword arguments (only those set)."""
        options: dict[str, Any] = {}
        if self.exact:
            options["exact"] = True
        if self.max_sequence_length is not None:
            options["max_sequence_length"] = self.max_sequence_length
        if self.image is not None:
            options["image"] = self.image
        return options

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The pipeline call's extra keyword arguments."""
        kwargs = dict(self.pipeline_options)
        if self.max_sequence_length is not None:
            kwargs.setdefault("max_sequence_length", self.max_sequence_length)
        return kwargs


def _encoding_image(pipe: Any, image: Any) -> Any:
    """The pipeline call's ``image`` where the family's prompt encoding takes it too."""
    if image is None:
        return None
    from .diffusers.rerun import encoding_image
    from .errors import UnsupportedPipelineError

    try:
        return encoding_image(pipe, image)
    except UnsupportedPipelineError:  # a pipeline only a custom ``encode`` knows
        return None


def _check_samplers(pipe: Any, cells: Sequence[Cell]) -> None:
    """A1111's samplers run models with a discrete DDPM noise schedule (SD 1.x/2.x, SDXL); a
    flow-matching pipeline (SD3, Flux, Chroma, Wan) keeps its own scheduler."""
    config = getattr(getattr(pipe, "scheduler", None), "config", None)
    if config is None or "beta_start" in config:
        return
    named = sorted({cell.sampler for cell in cells if cell.sampler is not None})
    if named:
        raise CompareError(
            f"sampler {named[0]!r}: A1111's samplers need a model with a discrete DDPM noise "
            f"schedule; {type(pipe.scheduler).__name__} is not one, so this pipeline keeps its "
            "own scheduler (sampler=None)"
        )


def first_image(output: Any) -> Any:
    """The picture of a pipeline output: its first image, or a video pipeline's (Wan) first
    frame of its first video."""
    images = getattr(output, "images", None)
    if images is not None:
        return images[0]
    return output.frames[0][0]


def _check_names(axes: Sequence[Axis], fixed: dict[str, Any]) -> None:
    """Unknown strategy, normalisation or sampler names fail before anything runs."""
    from .samplers import resolve
    from .strategies import get_normalization, get_strategy

    def values(name: str) -> list[Any]:
        for axis in axes:
            if axis.name == name:
                return list(axis.values)
        return [fixed[name]]

    for strategy in values("strategy"):
        get_strategy(strategy)
    for normalization in values("normalization"):
        get_normalization(normalization)
    for sampler in values("sampler"):
        if sampler is not None:
            choice = resolve(sampler)
            if choice.scheduler_class is None:
                raise CompareError(f"no diffusers scheduler for {sampler!r}: {choice.reason}")


def _cosine_distance(a: Any, b: Any) -> float:
    import torch

    x = a.detach().float().cpu()
    y = b.detach().float().cpu()
    # "none" (literal syntax) can tokenize to another length than the unweighted prompt.
    length = min(x.shape[-2], y.shape[-2])
    x = x[..., :length, :].flatten()
    y = y[..., :length, :].flatten()
    cosine = torch.nn.functional.cosine_similarity(x, y, dim=0, eps=1e-12)
    return round(max(0.0, float(1.0 - cosine)), 8)  # rounding can give a cosine above 1


def process_state() -> Any:
    """accelerate's ``PartialState`` for this process, or None when accelerate is not installed.

    Without an accelerator, accelerate sets up its CPU (gloo) process group only when told it
    runs on the CPU; this does, so ``accelerate launch --multi_gpu --num_processes N`` shards a
    grid on a machine without GPUs too. ``state.device`` is the device this process should use.
    """
    try:
        from accelerate import PartialState
    except ImportError:  # pragma: no cover - accelerate is a diffusers companion
        return None
    import torch

    accelerator = getattr(torch, "accelerator", None)
    on_cpu = accelerator is None or not accelerator.is_available()
    return PartialState(cpu=on_cpu)


def _shard(indices: list[int]) -> tuple[list[int], Any]:
    """This process's share of ``indices`` and the accelerate state (None: one process)."""
    state = process_state()
    if state is None or state.num_processes == 1:
        return indices, None
    with state.split_between_processes(indices) as mine:
        return list(mine), state


def plan_grid(
    prompt: str,
    axes: Sequence[Axis] = (),
    *,
    negative_prompt: str = "",
    strategy: Any = "a1111",
    normalization: str = "none",
    seed: int = 0,
    sampler: str | None = None,
    cfg: float = 7.0,
    steps: int = 20,
    clip_skip: int = 1,
    expand: bool = False,
    wildcards: Any = None,
) -> tuple[list[Axis], list[Cell]]:
    """Check a grid and list its cells, without a model (:func:`compare` starts with this).

    Args:
        prompt: as for :func:`compare`.
        axes: as for :func:`compare`.
        negative_prompt: as for :func:`compare`.
        strategy: as for :func:`compare`.
        normalization: as for :func:`compare`.
        seed: as for :func:`compare`.
        sampler: as for :func:`compare`.
        cfg: as for :func:`compare`.
        steps: as for :func:`compare`.
        clip_skip: as for :func:`compare`.
        expand: as for :func:`compare`.
        wildcards: as for :func:`compare`.

    Returns:
        The axes (an expansion first, then a sweep written in the prompt) and the cells.

    Raises:
        CompareError: bad axes (more than three, repeated, a sweep in the prompt and another one,
            a swept span not in the prompt, a sampler diffusers has no scheduler for).
        UnknownNameError: an unknown strategy, normalisation or sampler.
        LimitExceededError: more than :data:`MAX_CELLS` cells.

    >>> axes, cells = plan_grid("a (cat:{0,1})", [Axis("seed", (1, 2))])
    >>> [(cell.prompt, cell.seed) for cell in cells]
    [('a (cat:0)', 1), ('a (cat:1)', 1), ('a (cat:0)', 2), ('a (cat:1)', 2)]
    """
    axes = list(axes)
    template: str | None = None
    in_prompt = find_prompt_sweep(prompt)
    weight_axes = [axis for axis in axes if axis.name == "weight"]
    if in_prompt is not None:
        if weight_axes:
            raise CompareError("the prompt holds a {…} sweep and a weight axis was given too")
        template, weight_axis = in_prompt
        axes.insert(0, weight_axis)
    elif weight_axes:
        assert weight_axes[0].span is not None
        template = sweep_template(prompt, weight_axes[0].span)
    if expand:  # after the sweep: its {0..1} braces are not a variant
        if any(axis.name == "prompt" for axis in axes):
            raise CompareError("expand=True and a prompt axis were both given")
        axes.insert(
            0, Axis.expansion(prompt if template is None else template, wildcards=wildcards)
        )
    names = [axis.name for axis in axes]
    if len(axes) > 3:
        raise CompareError(f"a grid has at most three axes, not {len(axes)} ({', '.join(names)})")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise CompareError(f"axis given more than once: {', '.join(repeated)}")
    fixed = {
        "negative_prompt": negative_prompt,
        "strategy": strategy,
        "normalization": normalization,
        "seed": seed,
        "sampler": sampler,
        "cfg": float(cfg),
        "steps": steps,
        "clip_skip": clip_skip,
    }
    for name in ("seed", "steps", "clip_skip", "cfg", "strategy", "sampler", "normalization"):
        _check_value(name, fixed[name])
    _check_names(axes, fixed)
    return axes, _cells(prompt, axes, template, fixed)


def compare(
    pipe: Any,
    prompt: str,
    axes: Sequence[Axis] = (),
    *,
    negative_prompt: str = "",
    strategy: Any = "a1111",
    normalization: str = "none",
    seed: int = 0,
    sampler: str | None = None,
    cfg: float = 7.0,
    steps: int = 20,
    clip_skip: int = 1,
    height: int | None = None,
    width: int | None = None,
    out_dir: str | Path | None = None,
    model_name: str | None = None,
    progress: bool = True,
    encode: EncodeFunction | None = None,
    overwrite: bool = False,
    threads: int | None = None,
    expand: bool = False,
    wildcards: Any = None,
    exact: bool = False,
    max_sequence_length: int | None = None,
    pipeline_options: dict[str, Any] | None = None,
) -> CompareResult:
    """Run a comparison grid on ``pipe``; write it to ``out_dir`` if given.

    Settings not on an axis stay fixed at the keyword arguments' values.

    Args:
        pipe: a diffusers pipeline ``promptweights.diffusers.encode`` knows (SD, SDXL…).
        prompt: the A1111 prompt; may hold one weight sweep ``(span:{0..1.5:0.25})``.
        axes: up to three axes: columns, rows, panels. A sweep in the prompt becomes the first.
        negative_prompt: the negative prompt (not swept).
        strategy: weighting strategy name or callable.
        normalization: token normalisation name.
        seed: the seed when seeds are not an axis.
        sampler: A1111 sampler name (``"Euler a"``, ``"DPM++ 2M Karras"``); None keeps the
            pipeline's scheduler.
        cfg: classifier-free guidance scale.
        steps: sampling steps.
        clip_skip: A1111's clip skip (1: last layer, 2: penultimate).
        height: image height (None: the model's default).
        width: image width.
        out_dir: folder for the grid, cells, metrics and GIF (created; it must be empty unless
            ``overwrite``); None writes nothing.
        model_name: written as ``Model`` in each cell's infotext.
        progress: show a tqdm progress bar on the main process.
        encode: replaces :func:`promptweights.diffusers.encode` (see :data:`EncodeFunction`),
            called once per distinct conditioning; without it every conditioning of the grid is
            encoded up front by :func:`promptweights.diffusers.encode_many`.
        overwrite: write into a folder that already holds files (ours are replaced, others
            left alone).
        threads: torch's CPU thread count while the grid runs (restored after). None: 1 for a
            model under :data:`SMALL_MODEL_PARAMETERS` on the CPU (the toy model: its layers are
            too small to split, and a second thread on a busy core stalls every layer), else
            torch's own setting; an ``OMP_NUM_THREADS`` in the environment is always respected.
        expand: read ``prompt`` as a dynamic-prompts template and make its prompts the first
            axis, one column per variant (:func:`promptweights.dynamic.expand`, combinatorial,
            at most :data:`MAX_CELLS`); a sweep written in the prompt is found first.
        wildcards: the wildcards of the expansion: a folder of ``.txt`` files or a ``dict``.
        exact: encode each conditioning with ``exact=True`` (one row per forward pass): bit for
            bit what :func:`promptweights.diffusers.from_infotext` gives with ``exact=True``
            (the default batches every conditioning, equal up to float rounding).
        max_sequence_length: the T5 window of the T5 families (default: the pipeline's own);
            written to each cell's infotext as ``Max sequence length``, which ``from_infotext``
            reads back.
        pipeline_options: more keyword arguments for every pipeline call (``num_frames`` for
            Wan, ``use_resolution_binning=False`` for a PixArt size without a bin, ``image`` for
            an image-to-image or edit pipeline). They are not written to the infotext: give them
            to the re-run's call again (``from_infotext(…, image=…)``). Where the family's prompt
            encoding takes the input image (Qwen-Image Edit, Edit Inpaint, Edit Plus, Z-Image
            Omni), ``image`` is given to the encoding too
            (:func:`promptweights.diffusers.rerun.encoding_image`).

    Returns:
        The :class:`CompareResult` (on every process, when sharded).

    Raises:
        CompareError: bad axes (more than three, repeated, a sweep in the prompt and another one);
            an output folder that is a file, not empty (without ``overwrite``), or cannot be
            written, checked before any cell runs; a write that fails (a full disk).
        UnknownNameError: an unknown strategy, normalisation or sampler.
        LimitExceededError: more than :data:`MAX_CELLS` cells, a side past :data:`MAX_SIZE`.
    """
    check_size(height, width)
    axes, cells = plan_grid(
        prompt,
        axes,
        negative_prompt=negative_prompt,
        strategy=strategy,
        normalization=normalization,
        seed=seed,
        sampler=sampler,
        cfg=cfg,
        steps=steps,
        clip_skip=clip_skip,
        expand=expand,
        wildcards=wildcards,
    )
    _check_samplers(pipe, cells)
    mine, state = _shard([cell.index for cell in cells])
    main = state is None or state.is_main_process
    if out_dir is not None and main:
        check_out_dir(out_dir, overwrite=overwrite)
    call = _CallOptions(
        bool(exact),
        max_sequence_length,
        tuple(sorted((pipeline_options or {}).items())),
        _encoding_image(pipe, (pipeline_options or {}).get("image")),
    )
    runner = _Runner(pipe, encode or _adapter_encode, height, width, call)
    done: list[tuple[int, Any, float]] = []
    from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]

    bar = tqdm(total=len(mine), desc="compare", unit="cell", disable=not (progress and main))
    restore_threads = _set_threads(pipe, threads)
    try:
        if encode is None:
            # Every distinct conditioning of this process's cells, one pass per text encoder.
            runner.encode_all([cells[index] for index in mine])
        for index in mine:
            cell = cells[index]
            image = runner.run(cell)
            cond = runner.conditioning(cell, cell.strategy, cell.normalization)
            plain = runner.conditioning(cell, "ignore", "none")
            done.append((index, image, _cosine_distance(cond.prompt_embeds, plain.prompt_embeds)))
            bar.update(1)
    finally:
        bar.close()
        runner.restore()
        restore_threads()
    if state is not None:
        from accelerate.utils import gather_object

        done = list(gather_object(done))
    done.sort(key=itemgetter(0))
    images = [image for _, image, _ in done]
    distances = [distance for _, _, distance in done]
    metrics = _metrics(cells, axes, images, distances)
    grid = draw_grid(images, axes)
    result = CompareResult(
        tuple(axes),
        cells,
        images,
        metrics,
        grid,
        encoded=len(runner.conditionings),
        ran=tuple(mine),
    )
    if out_dir is not None and main:
        scheduler = type(runner.original_scheduler).__name__
        written = _Written(model_name, scheduler, _family(pipe), max_sequence_length)
        try:
            result.files = _write(result, Path(out_dir), prompt, written)
        except OSError as error:
            raise CompareError(
                f"cannot write the grid to {str(out_dir)!r}: {_os_error(error)}"
            ) from None
    if state is not None:
        state.wait_for_everyone()
    return result


#: Below this many parameters (all of a pipeline's torch modules), :func:`compare` runs on one
#: CPU thread: the toy model has 2 M, the smallest real text-to-image models hundreds of millions.
SMALL_MODEL_PARAMETERS = 50_000_000


def _set_threads(pipe: Any, threads: int | None) -> Callable[[], None]:
    """Set torch's CPU thread count for the grid (see :func:`compare`); return the undo."""
    import os

    import torch

    before = torch.get_num_threads()
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS") or getattr(pipe, "device", None) != torch.device(
            "cpu"
        ):
            return lambda: None
        components = getattr(pipe, "components", None) or {}
        modules = [m for m in components.values() if isinstance(m, torch.nn.Module)]
        size = sum(p.numel() for m in modules for p in m.parameters())
        if not modules or size >= SMALL_MODEL_PARAMETERS:
            return lambda: None
        threads = 1
    if threads < 1:
        raise CompareError(f"threads must be at least 1, not {threads}")
    torch.set_num_threads(threads)
    return lambda: torch.set_num_threads(before)


def _metrics(
    cells: list[Cell], axes: Sequence[Axis], images: list[Any], distances: list[float]
) -> list[dict[str, Any]]:
    import numpy as np

    records = []
    for cell, image, distance in zip(cells, images, distances, strict=True):
        baseline = _baseline(cell, axes)
        pixel = float(np.abs(image - images[baseline]).mean())
        record: dict[str, Any] = {"index": cell.index, "position": list(cell.position)}
        for axis, i in zip(axes, cell.position, strict=True):
            value = axis.values[i]
            record[axis.name] = _value_text(value) if axis.name == "strategy" else value
        record.update(
            {
                "prompt": cell.prompt,
                "strategy": cell.strategy_name,
                "normalization": cell.normalization,
                "seed": cell.seed,
                "sampler": cell.sampler,
                "cfg": cell.cfg,
                "steps": cell.steps,
                "clip_skip": cell.clip_skip,
                "cosine_distance": distance,
                "baseline": baseline,
                "pixel_distance": round(pixel, 8),
                "file": f"cells/{cell.index:03d}.png",
            }
        )
        records.append(record)
    return records


# --- pictures and files -----------------------------------------------------------------------


def _to_pil(image: Any) -> Any:
    import numpy as np
    from PIL import Image

    pixels = (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return Image.fromarray(pixels)


def _font() -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # pragma: no cover - Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _text_size(draw: Any, text: str, font: Any) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def _scaled(image: Any, minimum: int = 128) -> Any:
    """Small images (the toy model's 32×32) are enlarged with nearest-neighbour to be seen."""
    from PIL import Image

    factor = max(1, math.ceil(minimum / max(1, min(image.size))))
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def draw_grid(images: Sequence[Any], axes: Sequence[Axis], *, pad: int = 6, gap: int = 4) -> Any:
    """Draw the labelled grid: columns are axis 1, rows axis 2, panels (stacked) axis 3.

    Args:
        images: one ``(H, W, 3)`` float image in ``[0, 1]`` per cell, by index.
        axes: the axes (none: one cell).
        pad: pixels around labels.
        gap: pixels between cells.

    Returns:
        A ``PIL.Image.Image``.
    """
    from PIL import Image, ImageDraw

    pictures = [_scaled(_to_pil(image)) for image in images]
    cell_w = max(p.width for p in pictures) + gap
    cell_h = max(p.height for p in pictures) + gap
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    columns = axes[0].labels() if len(axes) > 0 else [""]
    rows = axes[1].labels() if len(axes) > 1 else [""]
    panels = axes[2].labels() if len(axes) > 2 else [""]
    col_w = max(cell_w, *(_text_size(probe, t, font)[0] + 2 * pad for t in columns))
    row_label_w = max(_text_size(probe, t, font)[0] for t in rows) + 2 * pad if rows[0] else 0
    line_h = (
        max(_text_size(probe, t or "Ag", font)[1] for t in [*columns, *rows, *panels]) + 2 * pad
    )
    header_h = line_h if columns[0] else 0
    panel_title_h = line_h if panels[0] else 0
    panel_h = panel_title_h + header_h + len(rows) * cell_h
    grid = Image.new(
        "RGB", (row_label_w + len(columns) * col_w, len(panels) * panel_h), (255, 255, 255)
    )
    draw = ImageDraw.Draw(grid)
    per_panel = len(columns) * len(rows)
    for z, panel in enumerate(panels):
        top = z * panel_h
        if panel:
            draw.text((pad, top + pad), panel, fill=(0, 0, 0), font=font)
        for x, label in enumerate(columns):
            left = row_label_w + x * col_w
            draw.text((left + pad, top + panel_title_h + pad), label, fill=(0, 0, 0), font=font)
        for y, label in enumerate(rows):
            row_top = top + panel_title_h + header_h + y * cell_h
            if label:
                draw.text(
                    (pad, row_top + (cell_h - line_h) // 2 + pad), label, fill=(0, 0, 0), font=font
                )
            for x in range(len(columns)):
                picture = pictures[z * per_panel + y * len(columns) + x]
                left = row_label_w + x * col_w + (col_w - picture.width) // 2
                grid.paste(picture, (left, row_top))
    return grid


@dataclass(frozen=True)
class _Written:
    """What every cell's infotext holds besides the cell's own settings."""

    model_name: str | None
    scheduler: str | None  # the pipeline's own scheduler class
    family: str | None  # promptweights.diffusers.family_of(pipe), None for an unknown pipe
    max_sequence_length: int | None  # compare's, None: the pipeline's own default


def _family(pipe: Any) -> str | None:
    """The pipeline's family, or None where the adapter does not know it (a custom encoder)."""
    from .diffusers import family_of
    from .errors import UnsupportedPipelineError

    try:
        return family_of(pipe)
    except UnsupportedPipelineError:
        return None


def _infotext(cell: Cell, width: int, height: int, written: _Written) -> Any:
    """The cell's infotext: enough for :func:`promptweights.diffusers.from_infotext` and for
    :func:`settings_from_infotext` to redo it bit for bit on the same model, device and thread
    count. The sampler is written as A1111 writes it (``Sampler`` and ``Schedule type``); a cell
    made with the model's own scheduler names its class under :data:`SCHEDULER_KEY` instead.
    A T5 family's cell also names the family (:data:`FAMILY_KEY`) and, when ``compare`` was given
    one, the T5 window (:data:`SEQUENCE_KEY`)."""
    from .infotext import GenerationParameters

    model_name, scheduler = written.model_name, written.scheduler
    from .samplers import resolve

    cfg = f"{cell.cfg:g}"
    if float(cfg) != cell.cfg:  # `:g` keeps 6 digits; the rerun needs the exact scale
        cfg = repr(cell.cfg)
    settings: dict[str, Any] = {"Steps": cell.steps}
    if cell.sampler is not None:
        choice = resolve(cell.sampler)
        settings["Sampler"] = choice.sampler
        settings["Schedule type"] = choice.schedule_type
        settings[SAMPLING_KEY] = "diffusers"  # a diffusers scheduler, not A1111's sampling
    else:
        settings[SCHEDULER_KEY] = scheduler
    settings.update(
        {
            "CFG scale": cfg,
            "Seed": cell.seed,
            "Size-1": width,
            "Size-2": height,
            "Model": model_name,
            "Clip skip": cell.clip_skip,
        }
    )
    name = cell.strategy_name
    if name in _EMPHASIS:
        settings["Emphasis"] = _EMPHASIS[name]
    else:
        settings[STRATEGY_KEY] = name
    if cell.normalization != "none":
        settings["Token normalization"] = cell.normalization
    if written.family is not None and written.family not in _CLIP_FAMILIES:
        settings[FAMILY_KEY] = written.family
    if written.max_sequence_length is not None:
        settings[SEQUENCE_KEY] = written.max_sequence_length
    return GenerationParameters.from_settings(cell.prompt, cell.negative_prompt, settings)


def _write(result: CompareResult, out: Path, prompt: str, written: _Written) -> dict[str, Any]:
    cells = _directory(out / "cells")
    files: dict[str, Any] = {"cells": []}
    for cell, image in zip(result.cells, result.images, strict=True):
        path = cells / f"{cell.index:03d}.png"
        picture = _to_pil(image)
        params = _infotext(cell, picture.width, picture.height, written)
        _atomic_write(path, functools.partial(_save_png, picture, params))
        files["cells"].append(path)
    files["grid"] = out / "grid.png"
    _atomic_write(files["grid"], lambda handle: result.grid.save(handle, format="PNG"))
    summary = {
        "prompt": prompt,
        "axes": [
            {"name": a.name, "span": a.span, "values": [_json_value(v) for v in a.values]}
            for a in result.axes
        ],
        "cells": result.metrics,
    }
    files["json"] = out / "metrics.json"
    text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    _atomic_write(files["json"], lambda handle: handle.write(text.encode("utf-8")))
    files["csv"] = out / "metrics.csv"
    table = io.StringIO(newline="")
    columns = [key for key in result.metrics[0] if key != "position"]
    writer = csv.DictWriter(table, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result.metrics)
    _atomic_write(files["csv"], lambda handle: handle.write(table.getvalue().encode("utf-8")))
    if any(axis.name == "weight" for axis in result.axes):
        files["gif"] = out / "sweep.gif"
        _write_gif(result, files["gif"])
    return files


def _save_png(picture: Any, params: Any, handle: IO[bytes]) -> None:
    from .infotext import save_image

    save_image(picture, handle, params, format="PNG")


def check_out_dir(out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Check a grid's output folder before any model work, creating it if needed.

    Args:
        out_dir: the folder (a symlink that the caller named is followed; symlinks found inside
            it never are).
        overwrite: accept a folder that already holds files.

    Returns:
        The folder as a ``Path``.

    Raises:
        CompareError: it is a file, not empty (without ``overwrite``), cannot be created, or a
            file cannot be created in it (read-only, ``/proc``…).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CompareError(f"output folder {str(out)!r} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not overwrite and any(out.iterdir()):
            raise CompareError(
                f"output folder {str(out)!r} is not empty; pass --overwrite (overwrite=True) to "
                "replace the grid, metrics and cells in it"
            )
        # A real probe: access() says yes to root, and to /proc.
        handle, probe = tempfile.mkstemp(prefix=".promptweights-", dir=out)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise CompareError(
            f"cannot write to output folder {str(out)!r}: {_os_error(error)}"
        ) from None
    return out


def check_size(height: int | None, width: int | None) -> None:
    """Check an image size before any model work: positive multiples of 8, at most
    :data:`MAX_SIZE` per side (None: the model's default).

    Raises:
        CompareError: not a positive multiple of 8.
        LimitExceededError: a side past :data:`MAX_SIZE`.
    """
    for name, value in (("height", height), ("width", width)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 8 or value % 8:
            raise CompareError(f"bad {name} {value!r}: a positive multiple of 8")
        if value > MAX_SIZE:
            raise LimitExceededError(f"{name} {value} is past {MAX_SIZE} pixels (MAX_SIZE)")


def _os_error(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def _directory(path: Path) -> Path:
    """``path`` as a folder we may write into: created if missing, never a symlink."""
    if path.is_symlink():
        raise CompareError(f"{str(path)!r} is a symlink; promptweights never writes through one")
    path.mkdir(exist_ok=True)
    if path.is_symlink() or not path.is_dir():
        raise CompareError(f"{str(path)!r} is not a folder")
    return path


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through a new temporary file in its folder, then rename it into place.

    The temporary file is created exclusively and without following symlinks, and the rename
    replaces whatever ``path`` was (a symlink included) without following it, so a reader sees
    the old file or the new one, never half of it, and no file outside the folder is touched.
    """
    if path.parent.is_symlink():
        raise CompareError(
            f"{str(path.parent)!r} is a symlink; promptweights never writes through one"
        )
    flags = (
        os.O_WRONLY
        | os.O_CREAT
        | os.O_EXCL
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_BINARY", 0)
    )
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    handle = os.open(temporary, flags, 0o644)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _json_value(value: Any) -> Any:
    return _value_text(value) if callable(value) else value


def _write_gif(result: CompareResult, path: Path) -> None:
    """One frame per swept weight, captioned with it: the grid of the other axes at that weight.

    A one-axis sweep gives the cell itself in every frame, so the picture moves with the weight.
    """
    weight_axis = next(i for i, axis in enumerate(result.axes) if axis.name == "weight")
    others = [axis for i, axis in enumerate(result.axes) if i != weight_axis]
    frames = []
    for w in range(len(result.axes[weight_axis].values)):
        images = [
            image
            for cell, image in zip(result.cells, result.images, strict=True)
            if cell.position[weight_axis] == w
        ]
        frame = draw_grid(images, others) if others else _scaled(_to_pil(images[0]))
        frames.append(_caption(frame, result.axes[weight_axis].labels()[w]))
    _atomic_write(
        path,
        lambda handle: frames[0].save(
            handle, format="GIF", save_all=True, append_images=frames[1:], duration=500, loop=0
        ),
    )


def _caption(image: Any, text: str, pad: int = 6) -> Any:
    from PIL import Image, ImageDraw

    font = _font()
    draw = ImageDraw.Draw(image)
    height = _text_size(draw, text, font)[1] + 2 * pad
    framed = Image.new("RGB", (image.width, image.height + height), (255, 255, 255))
    framed.paste(image, (0, 0))
    ImageDraw.Draw(framed).text((pad, image.height + pad), text, fill=(0, 0, 0), font=font)
    return framed


def settings_from_infotext(params: Any) -> dict[str, Any]:
    """The :func:`compare` keyword arguments that redo the image a cell's infotext describes.

    Reads what :func:`compare` writes: ``Emphasis`` (A1111's name for the A1111 strategies) or
    ``Prompt weighting``, ``Token normalization``, ``Clip skip`` and the usual keys. A missing
    ``Sampler`` gives ``sampler=None`` (the pipeline's own scheduler), unlike A1111, which reads
    it as DPM++ 2M; a ``Schedule type`` other than Automatic is appended to the sampler name.

    Args:
        params: a :class:`promptweights.infotext.GenerationParameters`.

    Returns:
        ``prompt`` and the keyword arguments (``negative_prompt``, ``strategy``, ``seed``…);
        settings the text does not hold are left out, so :func:`compare`'s defaults apply.

    >>> from promptweights.infotext import parse
    >>> text = "a (cat:1.2)\\nSteps: 9, Sampler: Euler, Schedule type: Karras, CFG scale: 4"
    >>> settings = settings_from_infotext(parse(text + ", Seed: 7, Prompt weighting: comfy"))
    >>> for key, value in settings.items():
    ...     print(f"{key}={value!r}")
    prompt='a (cat:1.2)'
    negative_prompt=''
    strategy='comfy'
    clip_skip=1
    steps=9
    sampler='Euler Karras'
    cfg=4.0
    seed=7
    """
    from .settings import run_settings

    read = run_settings(params)
    settings: dict[str, Any] = {
        "prompt": read.prompt,
        "negative_prompt": read.negative_prompt,
        "strategy": read.strategy,
    }
    if read.normalization is not None:
        settings["normalization"] = read.normalization
    settings["clip_skip"] = read.clip_skip
    optional = {"steps": read.steps, "sampler": read.sampler, "cfg": read.cfg_scale}
    optional.update(seed=read.seed, width=read.width, height=read.height)
    settings.update((key, value) for key, value in optional.items() if value is not None)
    return settings
