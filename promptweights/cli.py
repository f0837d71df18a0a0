"""The ``promptweights`` command line: ``explain``, ``compare`` and ``infotext``.

``explain`` needs only the language layer. ``compare`` runs a grid (:mod:`promptweights.compare`)
on a diffusers pipeline: ``--model`` (a local diffusers folder or a hub id) or, without it, the
embedded toy model (:mod:`promptweights.toy`), so a new user sees real output offline.
``infotext`` prints an image's (or a text's) generation parameters as JSON, and with
``--to-diffusers`` the scheduler and keyword arguments they map to. torch, diffusers and Pillow are
imported only inside the subcommands that need them. ``accelerate launch --multi_gpu
--num_processes N -m promptweights compare …`` shards a grid (each process on its own device).

Every error the library raises on purpose, a model that cannot be loaded, a write that fails and
running out of memory become one line on stderr and exit code 2. ``compare`` checks its output
folder (empty unless ``--overwrite``, writable), ``--device``, ``--size``,
``--max-sequence-length`` and ``--pipeline-option`` before loading a model, and each pipeline
option against the loaded pipeline's call. ``explain`` reads ``TE(name: …)`` blocks per encoder.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import _lark
from ._emphasis import BREAK_MARKER
from .dialects import A1111
from .errors import (
    Diagnostic,
    InvalidArgumentError,
    LimitExceededError,
    PromptSyntaxError,
    PromptweightsError,
)
from .limits import DEFAULT_LIMITS
from .lora_schedules import lora_schedules, lora_weights, weights_per_call
from .parsing import parse
from .render import StepOf, render_nodes
from .routing import Piece, blocks, route_offsets, source_offset
from .schedules import edit_step
from .spans import weighted_spans
from .toy import DEFAULT_GUIDANCE as TOY_GUIDANCE
from .toy import DEFAULT_STEPS as TOY_STEPS
from .tree import (
    DEFAULT_MAX_DEPTH,
    Alternation,
    Edit,
    Emphasis,
    ExtraNetwork,
    Node,
    Prompt,
)

__all__ = ["explain", "infotext_json", "main"]


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return [row.rstrip() for row in out]


def explain(
    text: str,
    *,
    steps: int = 20,
    dialect: str = "a1111",
    tokenizer: Any = None,
    encoders: Sequence[str] | None = None,
) -> str:
    """Describe how ``text`` is read: networks, AND parts, the schedule and weighted spans.

    The schedule is shown in sampler calls, numbered from 0 as A1111's denoiser counts them: at
    call ``k`` it uses the first schedule entry whose end step is ``>= k``, so ``[cat:dog:0.5]``
    over 4 steps shows cat at calls 0-2 and dog at call 3 (a1111-behaviour.md §4.5; a
    second-order sampler makes twice as many calls per step: pass ``steps`` doubled). Each
    edit and alternation is listed once with what it shows at which calls; spans (and tokens)
    are listed once per distinct text. ``BREAK`` is shown as the chunk boundary it is.

    When a LoRA tag has a loractl weight schedule (``<lora:x:0@0,1@0.5>``,
    :mod:`promptweights.lora_schedules`), a table gives every LoRA's text-encoder and UNet weight
    at each call (of a first-order sampler's first pass: call ``k`` reads step ``max(k - 1, 0)``).

    With a Hugging Face ``tokenizer``, each distinct text also lists its tokens: chunk,
    position in the chunk, token, weight and the span it starts (A1111's chunking, §7).

    A prompt with ``TE(name: …; …)`` blocks (:mod:`promptweights.routing`, a1111 dialect) is
    explained per encoder: each name's routed text, then its AND parts, schedule and spans as
    above (tokens under the first name only, whose tokenizer the model's ``tokenizer`` is).
    Diagnostics found in an encoder's text are given at their offset in ``text``, with the
    encoder's name. A block that cannot be routed (a section without a name, a name not in
    ``encoders``) is a ``bad-encoders`` diagnostic, and the prompt is explained unrouted.

    Args:
        text: the prompt.
        steps: the number of sampler calls (the sampling steps of a first-order sampler).
        dialect: ``"a1111"``, ``"comfy"`` or ``"novelai"``.
        tokenizer: a Hugging Face tokenizer, to list tokens.
        encoders: the pipeline's encoder names, in order
            (:func:`promptweights.diffusers.encoder_names`); default: the names the blocks
            use, in order of appearance.

    Returns:
        The description, several lines.

    Raises:
        LimitExceededError: a schedule with more entries than the default limit allows.

    >>> print(explain("a (cat:1.2) [dog:fox:0.5] <lora:ink:0.8>", steps=10))
    prompt: 'a (cat:1.2) [dog:fox:0.5] <lora:ink:0.8>'
    <BLANKLINE>
    extra networks (encode(..., lora_dir=DIR) loads LoRAs; otherwise ignored, with a warning)
    kind  name  te   unet
    ----  ----  ---  ----
    lora  ink   0.8  0.8
    <BLANKLINE>
    part 1 of 1, AND weight 1
    10 sampler calls, numbered from 0
    edit or alternation  shows
    -------------------  --------------------------------------
    [dog:fox:0.5]        'dog' at calls 0-5; 'fox' at calls 6-9
    calls  segment  weight
    -----  -------  ------
    0-5    'a '     1
           'cat'    1.2
           ' dog'   1
    6-9    'a '     1
           'cat'    1.2
           ' fox'   1
    """
    prompt = parse(text, dialect=dialect)
    lines = [f"prompt: {text!r}"]
    if prompt.networks:
        rows = [(n.kind, n.name, *_weight_cells(n)) for n in prompt.networks]
        lines += ["", _NETWORKS_NOTE, *_table(rows, ("kind", "name", "te", "unet"))]
        lines += _lora_lines(text, steps)
    routed, problem = _routed(text, dialect, encoders)
    found = prompt.diagnostics if routed is None else _whole_block_diagnostics(text)
    diagnostics: list[tuple[int | None, str, str]] = [(d.pos, d.kind, d.message) for d in found]
    if problem is not None and not any(d[:2] == (problem.pos, problem.kind) for d in diagnostics):
        diagnostics.append((problem.pos, problem.kind, problem.message))
    if routed is None:
        lines += _part_lines(prompt, steps, dialect, tokenizer)
    for index, (name, (own, pieces)) in enumerate((routed or {}).items()):
        lines += ["", f"encoder {name} reads {own!r}"]
        read = parse(own, dialect=dialect)
        lines += _part_lines(read, steps, dialect, tokenizer if index == 0 else None)
        for d in read.diagnostics:
            pos = source_offset(pieces, d.pos)
            if pos is None or not any(seen[:2] == (pos, d.kind) for seen in diagnostics):
                diagnostics.append((pos, d.kind, f"{d.message} (in {name}'s text)"))
    if diagnostics:
        lines += ["", "diagnostics (strict mode raises on these)"]
        for pos, kind, message in diagnostics:
            where = "offset ?" if pos is None else f"offset {pos}"
            lines.append(f"  {where}: {kind}: {message}")
    return "\n".join(lines)


def _routed(
    text: str, dialect: str, encoders: Sequence[str] | None
) -> tuple[dict[str, tuple[str, tuple[Piece, ...]]] | None, PromptSyntaxError | None]:
    """Each encoder's text and its pieces, None without ``TE(`` blocks (only the a1111 dialect
    has them); a block that cannot be routed is returned as the error, not raised."""
    if dialect != "a1111" or not blocks(text):
        return None, None
    names = list(encoders) if encoders else []
    if not names:
        for _, block in blocks(text):
            names += [s.name for s in block.sections if s.name and s.name not in names]
    try:
        return route_offsets(text, names), None
    except PromptSyntaxError as error:
        return None, error


def _strict_check(text: str, dialect: str, encoders: Sequence[str] | None) -> None:
    """Raise at the first diagnostic ``explain`` would list (``--strict``), with its position
    in ``text``; a prompt with blocks is checked as routed, each encoder's text in turn."""
    lora_schedules(text, strict=True)  # the position of a bad entry
    routed, problem = _routed(text, dialect, encoders)
    if problem is not None:
        raise problem
    if routed is None:
        parse(text, dialect=dialect, strict=True)
        return
    for d in _whole_block_diagnostics(text):
        raise PromptSyntaxError(d.message, source=text, pos=d.pos, kind=d.kind)
    for name, (own, pieces) in routed.items():
        for d in parse(own, dialect=dialect).diagnostics:
            pos = source_offset(pieces, d.pos)
            message = f"{d.message} (in {name}'s text)"
            if pos is None:
                raise PromptSyntaxError(message, source=own, pos=d.pos, kind=d.kind)
            raise PromptSyntaxError(message, source=text, pos=pos, kind=d.kind)


def _whole_block_diagnostics(text: str) -> list[Diagnostic]:
    """The syntax diagnostics of ``text`` read with its blocks whole, as ``route`` reads them
    (``parse`` splits at ``AND`` first, which cuts a block holding ``AND`` in two)."""
    return list(_lark.parse_nodes(text, dialect=A1111, max_depth=DEFAULT_MAX_DEPTH)[1])


def _part_lines(prompt: Prompt, steps: int, dialect: str, tokenizer: Any) -> list[str]:
    """Each AND part of ``prompt``: its schedule, spans per distinct text and tokens."""
    lines: list[str] = []
    for number, part in enumerate(prompt.parts, 1):
        lines += ["", f"part {number} of {len(prompt.parts)}, AND weight {part.weight:g}"]
        lines += [f"{steps} sampler call{'s' if steps > 1 else ''}, numbered from 0"]
        timeline = _Timeline(part.children, steps)
        lines += timeline.changes()
        groups = timeline.groups(dialect)
        span_rows: list[tuple[str, ...]] = []
        for calls, spans in groups:
            for i, row in enumerate(_span_rows(spans)):
                span_rows.append((_calls_text(calls, word=False) if i == 0 else "", *row))
        lines += _table(span_rows, ("calls", "segment", "weight"))
        if tokenizer is not None:
            for calls, spans in groups:
                heading = f"tokens at {_calls_text(calls)}" if len(groups) > 1 else "tokens"
                lines += ["", heading, *_tokens(tokenizer, spans)]
    return lines


def _weight_cells(network: ExtraNetwork) -> tuple[str, str]:
    """A tag's te and unet multipliers as shown: a loractl schedule as its sorted points."""
    if network.kind in ("lora", "lyco"):
        weights = lora_weights(network)
        if weights.scheduled:
            return str(weights.te), str(weights.unet)
    return f"{network.te_weight:g}", f"{network.unet_weight:g}"


def _lora_lines(text: str, steps: int) -> list[str]:
    """The te and unet weight of every LoRA tag per sampler call, when one has a loractl
    schedule (:mod:`promptweights.lora_schedules`; a first-order sampler's first pass)."""
    loras = lora_schedules(text)
    if not any(lora.scheduled for lora in loras):
        return []
    header = ["calls"]
    for lora in loras:
        header += [f"{lora.name} te", f"{lora.name} unet"]
    groups: list[tuple[range, tuple[float, ...]]] = []
    for call, (te, unet) in enumerate(weights_per_call(loras, steps)):
        values = tuple(v for pair in zip(te, unet, strict=True) for v in pair)
        if groups and groups[-1][1] == values:
            groups[-1] = (range(groups[-1][0].start, call + 1), values)
        else:
            groups.append((range(call, call + 1), values))
    rows = [(_calls_text([calls], word=False), *(f"{v:g}" for v in vs)) for calls, vs in groups]
    note = "LoRA weights per sampler call (loractl: call k reads step max(k - 1, 0))"
    return ["", note, *_table(rows, tuple(header))]


_NETWORKS_NOTE = (
    "extra networks (encode(..., lora_dir=DIR) loads LoRAs; otherwise ignored, with a warning)"
)
_BREAK_ROW = ("BREAK", "(a new chunk starts)")


class _Timeline:
    """One AND part's schedule, from its tree: which text each sampler call sees (§4.3, §4.5).

    The schedule's entries end at the steps where an edit switches (``edit_step``), at every step
    when anything alternates, and at the last step; call ``k`` (from 0) uses the first entry
    ending at or after ``k``, so an entry ending at ``e`` after one ending at ``d`` serves calls
    ``d+1 … e`` (none at all when ``d`` is the last call). Edits and alternations are found and
    resolved in the tree itself.
    """

    def __init__(self, nodes: Sequence[Node], steps: int) -> None:
        self.nodes = tuple(nodes)
        self.steps = steps
        self.found = list(_scheduled(self.nodes))
        ends = {steps}
        if any(isinstance(node, Alternation) for _, node in self.found):
            # Every step is an entry: counted before the range is built (issue 12, item 1).
            self._check_entries(steps)
            ends.update(range(1, steps + 1))
        else:
            edits = [node for _, node in self.found if isinstance(node, Edit)]
            ends.update(s for s in map(self.step_of, edits) if s >= 1)
        self._check_entries(len(ends))
        #: (end step, the calls it serves), for the entries some call uses.
        self.entries: list[tuple[int, range]] = []
        start = 0
        for end in sorted(ends):
            calls = range(start, min(end, steps - 1) + 1)
            if calls:
                self.entries.append((end, calls))
            start = end + 1

    def _check_entries(self, entries: int) -> None:
        if entries > DEFAULT_LIMITS.variants:
            raise LimitExceededError(
                f"the prompt's schedule has {entries} entries over {self.steps} steps; the limit "
                f"is {DEFAULT_LIMITS.variants} (max_variants)"
            )

    def step_of(self, edit: Edit) -> int:
        return edit_step(edit, self.steps)

    def changes(self) -> list[str]:
        """One row per edit and alternation: what it shows at which calls."""
        if not self.found:
            return []
        rows = []
        for path, node in self.found:
            shown: dict[str, list[range]] = {}
            branches = set()
            for end, calls in self.entries:
                choice = _choice(self.nodes, path, end, self.step_of)
                if choice is not None:
                    branches.add(choice[0])
                    shown.setdefault(choice[1], []).append(calls)
            where = [f"{text!r} at {_calls_text(calls)}" for text, calls in shown.items()]
            if shown and isinstance(node, Edit):
                # `[a:b:0.99]` never reaches b: worth saying (a1111-behaviour.md §4.5).
                for branch, nodes in enumerate((node.before or (), node.after)):
                    if branch not in branches:
                        where.append(f"{render_nodes(nodes)!r} never")
            rows.append((render_nodes((node,)), "; ".join(where) or "never shown"))
        return _table(rows, ("edit or alternation", "shows"))

    def groups(self, dialect: str) -> list[tuple[list[range], list[tuple[str, float]]]]:
        """The calls that see each distinct text, with its weighted spans, in order of use.

        The spans are the emphasis pass over the text of the entry, as A1111 runs it: the tree's
        own spans (:func:`~promptweights.spans.tree_spans`) can differ from it once edits are
        resolved, in the spaces a ``BREAK`` eats next to an edit, for one.
        """
        out: dict[tuple[tuple[str, float], ...], list[range]] = {}
        for end, calls in self.entries:
            variant = render_nodes(self.nodes, step=end, step_of=self.step_of)
            out.setdefault(tuple(weighted_spans(variant, dialect=dialect)), []).append(calls)
        return [(calls, list(spans)) for spans, calls in out.items()]


def _scheduled(
    nodes: Sequence[Node], path: tuple[int, ...] = ()
) -> Iterator[tuple[tuple[int, ...], Edit | Alternation]]:
    """Every edit and alternation in the tree, in text order, with its path: the child index at
    each level, plus the branch (an edit's 0 before, 1 after; an alternation's option) below one.
    Nesting is capped (``DEFAULT_MAX_DEPTH``), so the recursion is bounded."""
    for i, node in enumerate(nodes):
        here = (*path, i)
        if isinstance(node, Emphasis):
            yield from _scheduled(node.children, here)
        elif isinstance(node, Edit):
            yield here, node
            yield from _scheduled(node.before or (), (*here, 0))
            yield from _scheduled(node.after, (*here, 1))
        elif isinstance(node, Alternation):
            yield here, node
            for j, option in enumerate(node.options):
                yield from _scheduled(option, (*here, j))


def _branch(node: Edit | Alternation, end: int, step_of: StepOf) -> int:
    """The branch ``node`` shows in the schedule entry ending at ``end`` (§4.2, §4.3)."""
    if isinstance(node, Edit):
        return 0 if end <= step_of(node) else 1
    return (end - 1) % len(node.options)


def _branch_nodes(node: Edit | Alternation, branch: int) -> tuple[Node, ...]:
    if isinstance(node, Edit):
        return (node.before or ()) if branch == 0 else node.after
    return node.options[branch]


def _choice(
    nodes: Sequence[Node], path: tuple[int, ...], end: int, step_of: StepOf
) -> tuple[int, str] | None:
    """The branch the edit or alternation at ``path`` shows in the entry ending at ``end``, and
    its text; None when an edit or alternation around it hides it then."""
    children: Sequence[Node] = nodes
    i = 0
    while True:
        node = children[path[i]]
        if isinstance(node, Emphasis):
            children, i = node.children, i + 1
            continue
        assert isinstance(node, Edit | Alternation)  # a path only leads through these
        branch = _branch(node, end, step_of)
        if i == len(path) - 1:
            return branch, render_nodes(_branch_nodes(node, branch), step=end, step_of=step_of)
        if path[i + 1] != branch:
            return None
        children, i = _branch_nodes(node, branch), i + 2


def _calls_text(calls: Sequence[range], *, word: bool = True) -> str:
    """``call 3``, ``calls 0-2``, ``calls 0-1, 3, 5, …, 19``: the calls of some ranges, adjacent
    ones joined, long progressions of single calls (an alternation's every n-th) shortened;
    ``word=False`` leaves out ``call(s)``."""
    runs: list[list[int]] = []
    for r in calls:
        if runs and runs[-1][1] + 1 == r.start:
            runs[-1][1] = r.stop - 1
        else:
            runs.append([r.start, r.stop - 1])
    parts = []
    i = 0
    while i < len(runs):
        first, last = runs[i]
        if first != last:
            parts.append(f"{first}-{last}")
            i += 1
            continue
        j = i + 1  # a progression of single calls: runs[i:j]
        while j < len(runs) and runs[j][0] == runs[j][1]:
            if j - i >= 2 and runs[j][0] - runs[j - 1][0] != runs[i + 1][0] - runs[i][0]:
                break
            j += 1
        if j - i >= 5:
            parts.append(f"{first}, {runs[i + 1][0]}, …, {runs[j - 1][0]}")
        else:
            parts += [str(run[0]) for run in runs[i:j]]
        i = j
    text = ", ".join(parts)
    if not word:
        return text
    return f"call {text}" if sum(len(r) for r in calls) == 1 else f"calls {text}"


def _span_rows(spans: Sequence[tuple[str, float]]) -> list[tuple[str, str]]:
    """Rows of segment and weight; ``BREAK`` as the chunk boundary it is, without the empty
    segments A1111's parser leaves around it."""
    rows = []
    for segment, weight in spans:
        if (segment, weight) == BREAK_MARKER:
            rows.append(_BREAK_ROW)
        elif segment:
            rows.append((repr(segment), f"{weight:.6g}"))
    return rows or [("''", "1")]


def _tokens(tokenizer: Any, spans: Sequence[tuple[str, float]]) -> list[str]:
    from .tokens import tokenize

    prompt = tokenize(tokenizer, spans)
    rows = []
    last_fragment = -1
    for number, chunk in enumerate(prompt.chunks, 1):
        names = tokenizer.convert_ids_to_tokens(list(chunk.ids))
        first = True
        for position, (name, weight, fragment) in enumerate(
            zip(names, chunk.weights, chunk.fragments, strict=True)
        ):
            if fragment < 0:
                continue
            # The span's text once, on its first token; the chunk once, on its first row.
            span = repr(spans[fragment][0]) if fragment != last_fragment else ""
            rows.append(
                (str(number) if first else "", str(position), str(name), f"{weight:.6g}", span)
            )
            first = False
            last_fragment = fragment
        if first:  # an empty chunk (BREAK at the start, or twice in a row)
            rows.append((str(number), "", "(empty)", "", ""))
    return _table(rows, ("chunk", "pos", "token", "weight", "span"))


def _load_tokenizer(model: str) -> Any:
    """The tokenizer of a diffusers model folder or hub id (``toy``: the embedded toy model)."""
    _quiet_libraries(with_diffusers=False)
    from transformers import AutoTokenizer

    loader: Any = AutoTokenizer
    if model == "toy":
        from . import toy

        with toy.model_path() as path:
            return loader.from_pretrained(str(path), subfolder="tokenizer")
    folder = _model_folder(model)
    try:
        return loader.from_pretrained(str(folder) if folder else model, subfolder="tokenizer")
    except (OSError, ValueError) as error:
        raise PromptweightsError(
            f"cannot load the tokenizer of {model!r}: {_first(error)}"
        ) from None


def _first(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _model_folder(model: str) -> Path | None:
    """The local folder ``model`` names, None for a hub id; an error for a missing folder."""
    folder = Path(model).expanduser()
    if folder.exists():
        return folder
    if model.startswith(("/", ".", "~")) or model.count("/") > 1:
        raise PromptweightsError(f"no model folder at {model!r}")
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptweights",
        description="A1111 prompt syntax as exact text-encoder conditioning for diffusers.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    explain_cmd = commands.add_parser(
        "explain", help="show how a prompt is parsed: spans, schedule, AND parts, networks"
    )
    explain_cmd.add_argument("prompt")
    explain_cmd.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    explain_cmd.add_argument("--dialect", default="a1111", help="a1111, comfy or novelai")
    explain_cmd.add_argument("--strict", action="store_true", help="fail on suspicious syntax")
    explain_cmd.add_argument(
        "--model", help="also list tokens with this model's tokenizer (folder, hub id or 'toy')"
    )
    explain_cmd.add_argument(
        "--encoders",
        help="the model's encoder names for TE(name: …) blocks, in order, e.g. clip_l,t5 "
        "(default: the names the blocks use)",
    )

    compare_cmd = commands.add_parser(
        "compare",
        help="a grid of images on fixed seeds: strategies, a weight sweep, samplers, CFG…",
        description=(
            "Each option given with more than one comma-separated value becomes an axis of the "
            "grid (at most three: columns, rows, panels, in the order of the options below); "
            "one value fixes the setting. A sweep can also be written in the prompt: "
            "'(smile:{0..1.5:0.25})'."
        ),
    )
    compare_cmd.add_argument("prompt")
    compare_cmd.add_argument(
        "--out", required=True, type=Path, help="output folder (empty, or with --overwrite)"
    )
    compare_cmd.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an output folder that already holds files",
    )
    compare_cmd.add_argument("--negative", default="", help="negative prompt")
    compare_cmd.add_argument("--sweep", help="SPAN=VALUES, e.g. 'smile=0:1.5:0.25' or 'cat=0,1'")
    compare_cmd.add_argument(
        "--expand",
        action="store_true",
        help="read the prompt as dynamic prompts ('{red|blue} cat', '__name__'): "
        "one column per variant",
    )
    compare_cmd.add_argument(
        "--wildcards", type=Path, help="folder of wildcard .txt files for --expand"
    )
    compare_cmd.add_argument("--strategies", default="a1111", help="e.g. a1111,comfy,compel")
    compare_cmd.add_argument("--seeds", default="0", help="e.g. 1,2,3 (default 0)")
    compare_cmd.add_argument(
        "--samplers", help="A1111 names, e.g. 'Euler a,DPM++ 2M Karras' (default: the model's)"
    )
    compare_cmd.add_argument(
        "--cfg", help=f"guidance scales (default: {TOY_GUIDANCE:g} toy, 7 other models)"
    )
    compare_cmd.add_argument(
        "--steps", help=f"sampling steps (default: {TOY_STEPS} toy, 20 other models)"
    )
    compare_cmd.add_argument("--clip-skip", default="1", help="A1111 clip skip, e.g. 1,2")
    compare_cmd.add_argument("--normalizations", default="none", help="e.g. none,mean,length")
    compare_cmd.add_argument(
        "--size", help="WIDTHxHEIGHT, multiples of 8, at most 4096 (default: the model's)"
    )
    compare_cmd.add_argument("--model", help="local diffusers folder or hub id (default: toy)")
    compare_cmd.add_argument(
        "--device",
        default="auto",
        help="torch device (default: this process's accelerate device, else cpu)",
    )
    compare_cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    compare_cmd.add_argument(
        "--exact",
        action="store_true",
        help="encode each conditioning alone: bit for bit as from_infotext(..., exact=True)",
    )
    compare_cmd.add_argument(
        "--max-sequence-length",
        help="the T5/LLM text window of the families that have one (default: the pipeline's own)",
    )
    compare_cmd.add_argument(
        "--pipeline-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another keyword argument of every pipeline call, e.g. num_frames=5 or "
        "use_resolution_binning=false (repeatable; values read as int, float, true/false, "
        "none, else text)",
    )

    info_cmd = commands.add_parser(
        "infotext", help="print the generation parameters of an image (or text) as JSON"
    )
    info_cmd.add_argument("file", help="PNG, JPEG or WebP image, a text file, or - for stdin")
    info_cmd.add_argument(
        "--to-diffusers",
        action="store_true",
        help="print the diffusers scheduler and keyword arguments instead",
    )
    return parser


# --- compare ------------------------------------------------------------------------------------


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _ints(option: str, text: str) -> list[int]:
    try:
        return [int(item) for item in _split_list(text)]
    except ValueError:
        raise PromptweightsError(f"{option} takes integers, e.g. 1,2; not {text!r}") from None


def _floats(option: str, text: str) -> list[float]:
    try:
        return [float(item) for item in _split_list(text)]
    except ValueError:
        raise PromptweightsError(f"{option} takes numbers, e.g. 4,7.5; not {text!r}") from None


#: Pipeline arguments ``compare`` sets itself, and the option that sets each (None: compare).
_OWN_ARGUMENTS = {
    "num_inference_steps": "--steps",
    "guidance_scale": "--cfg",
    "height": "--size",
    "width": "--size",
    "max_sequence_length": "--max-sequence-length",
    "generator": "--seeds",
    "latents": "--seeds",
    "sigmas": "--samplers",
    "output_type": None,
    "callback_on_step_end": None,
    "callback_on_step_end_tensor_inputs": None,
}


def _pipeline_options(given: Sequence[str]) -> dict[str, Any]:
    """``--pipeline-option KEY=VALUE`` pairs: each value an int, a float, ``true``/``false``,
    ``none`` or else the text itself; a bad one names the option and which one it is."""
    options: dict[str, Any] = {}
    for number, item in enumerate(given, 1):
        flag = f"--pipeline-option {item!r} (option {number} of {len(given)})"
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key.isidentifier() or not key.isascii():
            raise InvalidArgumentError(f"{flag}: write KEY=VALUE, e.g. num_frames=5")
        if key in options:
            raise InvalidArgumentError(f"{flag}: {key} is given twice")
        if key.startswith(("prompt", "negative_prompt", "pooled_prompt", "negative_pooled")):
            raise InvalidArgumentError(f"{flag}: compare encodes the prompts itself")
        if key in _OWN_ARGUMENTS:
            instead = _OWN_ARGUMENTS[key]
            use = f"use {instead}" if instead else "compare sets it"
            raise InvalidArgumentError(f"{flag}: {key} is compare's own argument ({use})")
        options[key] = _option_value(flag, value.strip())
    return options


def _option_value(flag: str, text: str) -> Any:
    """The value of a ``--pipeline-option``: int, finite float, bool, None or str."""
    words = {"true": True, "false": False, "none": None}
    if text.lower() in words:
        return words[text.lower()]
    if text.lstrip("+-").isascii() and text.lstrip("+-").isdigit():
        if len(text) > 18:
            raise InvalidArgumentError(f"{flag}: the integer {text} is too large")
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        raise InvalidArgumentError(f"{flag}: {text!r} is not a finite number")
    return number


def _check_pipeline_options(pipe: Any, options: dict[str, Any]) -> None:
    """Every option is a named keyword argument of ``pipe``'s call (the ``**kwargs`` of
    diffusers' pipelines take only deprecated callbacks, and drop anything else unread)."""
    import inspect

    try:
        parameters = inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):  # no signature to read: the call will say
        return
    for number, key in enumerate(options, 1):
        if key not in parameters:
            raise InvalidArgumentError(
                f"--pipeline-option {key}=… (option {number} of {len(options)}): "
                f"{type(pipe).__name__} takes no argument {key!r}"
            )


def _size(text: str | None) -> tuple[int | None, int | None]:
    from .compare import MAX_SIZE

    if text is None:
        return None, None
    width, x, height = text.lower().partition("x")
    if not (x and _short_number(width) and _short_number(height)):
        raise PromptweightsError(f"--size takes WIDTHxHEIGHT, e.g. 512x768; not {text!r}")
    if int(width) % 8 or int(height) % 8 or not int(width) or not int(height):
        raise PromptweightsError(f"--size {text!r}: width and height must be multiples of 8")
    if int(width) > MAX_SIZE or int(height) > MAX_SIZE:
        raise PromptweightsError(f"--size {text!r}: at most {MAX_SIZE} pixels per side")
    return int(width), int(height)


def _short_number(text: str) -> bool:
    """ASCII digits, few enough for ``int`` (it refuses 4,300 digits and more)."""
    return text.isascii() and text.isdigit() and len(text) <= 6


def _check_device(device: str) -> str:
    """The device, checked before any model work: known to torch and present on this machine."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as error:
        raise PromptweightsError(f"--device {device!r}: {_first(error)}") from None
    if parsed.type == "cpu":
        return device
    if parsed.type == "mps":
        backend = getattr(torch.backends, "mps", None)
        available, count = bool(backend and backend.is_available()), 1
    else:
        module = getattr(torch, parsed.type, None)
        is_available = getattr(module, "is_available", None)
        available = bool(callable(is_available) and is_available())
        device_count = getattr(module, "device_count", None)
        count = int(device_count()) if available and callable(device_count) else 1
    if not available:
        raise PromptweightsError(f"--device {device!r}: no {parsed.type} device on this machine")
    if parsed.index is not None and parsed.index >= count:
        raise PromptweightsError(
            f"--device {device!r}: this machine has {count} {parsed.type} device(s)"
        )
    return device


def _quiet_libraries(*, with_diffusers: bool = True) -> None:
    """Keep the libraries' loading bars and import notices off a command's output."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    libraries: list[Any] = [transformers]
    if with_diffusers:
        import diffusers

        libraries.append(diffusers)
    for library in libraries:
        library.utils.logging.disable_progress_bar()


def _load_pipeline(model: str | None, device: str) -> Any:
    """The toy pipeline, or ``model`` from a local folder or the hub; errors as one line."""
    _quiet_libraries()
    if model is None:
        from . import toy

        with toy.model_path() as path:
            if not (path / "model_index.json").is_file():
                raise PromptweightsError("the embedded toy model is not installed; pass --model")
        return toy.load_pipeline(device)
    folder = _model_folder(model)
    from diffusers import DiffusionPipeline

    loader: Any = DiffusionPipeline
    try:
        pipe = loader.from_pretrained(str(folder) if folder else model)
    except (OSError, ValueError, ImportError) as error:
        raise PromptweightsError(f"cannot load model {model!r}: {_first(error)}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _compare(args: argparse.Namespace) -> None:
    from .compare import Axis, parse_sweep, plan_grid

    toy = args.model is None
    values: dict[str, list[Any]] = {
        "strategy": _split_list(args.strategies),
        "seed": _ints("--seeds", args.seeds),
        "sampler": _split_list(args.samplers) if args.samplers else [None],
        "cfg": _floats("--cfg", args.cfg) if args.cfg else [TOY_GUIDANCE if toy else 7.0],
        "steps": _ints("--steps", args.steps) if args.steps else [TOY_STEPS if toy else 20],
        "clip_skip": _ints("--clip-skip", args.clip_skip),
        "normalization": _split_list(args.normalizations),
    }
    axes = [parse_sweep(args.sweep)] if args.sweep else []
    fixed: dict[str, Any] = {}
    for name, given in values.items():
        if not given:
            raise PromptweightsError(f"no value given for {name}")
        if len(given) > 1:
            axes.append(Axis(name, tuple(given)))
        else:
            fixed[name] = given[0]
            Axis(name, (given[0],))  # the same checks as an axis's values
    width, height = _size(args.size)
    args.pipeline_options = _pipeline_options(args.pipeline_option)
    args.max_length = None
    if args.max_sequence_length is not None:
        if not _short_number(args.max_sequence_length) or not int(args.max_sequence_length):
            raise InvalidArgumentError(
                f"--max-sequence-length takes a whole number of tokens (at least 1), "
                f"not {args.max_sequence_length!r}"
            )
        args.max_length = int(args.max_sequence_length)
    # Everything that can fail without a model fails before one is loaded.
    expansion = {"expand": args.expand, "wildcards": args.wildcards}
    plan_grid(args.prompt, axes, negative_prompt=args.negative, **expansion, **fixed)
    from .compare import check_out_dir, process_state

    state = process_state()
    device = args.device
    if device == "auto":
        device = str(state.device) if state is not None else "cpu"
    _check_device(device)
    if state is None or state.is_main_process:
        check_out_dir(args.out, overwrite=args.overwrite)
    pipe = _load_pipeline(args.model, device)
    _check_pipeline_options(pipe, args.pipeline_options)
    try:
        result = _run_compare(args, pipe, axes, fixed, width, height)
    except (ValueError, ImportError) as error:  # the pipeline's checks, a scheduler's extras
        if isinstance(error, PromptweightsError):
            raise
        raise PromptweightsError(f"the pipeline refused the settings: {_first(error)}") from None
    _print_compare(result)


def _run_compare(
    args: argparse.Namespace,
    pipe: Any,
    axes: list[Any],
    fixed: dict[str, Any],
    width: int | None,
    height: int | None,
) -> Any:
    from .compare import compare

    return compare(
        pipe,
        args.prompt,
        axes,
        negative_prompt=args.negative,
        height=height,
        width=width,
        out_dir=args.out,
        overwrite=args.overwrite,
        model_name=args.model or "promptweights-toy",
        progress=not args.quiet,
        expand=args.expand,
        wildcards=args.wildcards,
        exact=args.exact,
        max_sequence_length=args.max_length,
        pipeline_options=args.pipeline_options,
        **fixed,
    )


def _print_compare(result: Any) -> None:
    if not result.files:  # not the main process of a sharded run
        return
    print(f"{len(result.cells)} cells on {', '.join(a.name for a in result.axes) or 'no axis'}")
    rows = []
    for record, cell in zip(result.metrics, result.cells, strict=True):
        labels = [a.labels()[i] for a, i in zip(result.axes, cell.position, strict=True)]
        rows.append(
            (
                record["file"],
                ", ".join(labels),
                f"{record['cosine_distance']:.4g}",
                f"{record['pixel_distance']:.4g}",
                f"cells/{record['baseline']:03d}.png",
            )
        )
    # The pixel distance is to the seed's first cell (every other axis at its first value), not
    # to an unweighted image: the column says which cell.
    header = ("cell", "settings", "cos dist to unweighted", "pixel dist", "to cell")
    print("\n".join(_table(rows, header)))
    for kind in ("grid", "json", "csv", "gif"):
        if kind in result.files:
            print(f"{kind}: {result.files[kind]}")


# --- infotext -----------------------------------------------------------------------------------

_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8", b"RIFF")


def _read_infotext(source: str) -> Any:
    from . import infotext

    limit = infotext.MAX_IMAGE_BYTES
    if source == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        try:
            with Path(source).open("rb") as handle:
                data = handle.read(limit + 1)
        except OSError as error:
            raise PromptweightsError(f"cannot read {source!r}: {error.strerror}") from None
    if len(data) > limit:
        raise PromptweightsError(f"{source!r} is larger than {limit} bytes")
    if data.startswith(_IMAGE_MAGIC):
        return infotext.read_image(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PromptweightsError(f"{source!r} is neither an image nor UTF-8 text") from None
    return infotext.parse(text.strip())


def infotext_json(params: Any, *, to_diffusers: bool = False) -> dict[str, Any]:
    """What ``promptweights infotext`` prints, as a dict.

    Args:
        params: a :class:`promptweights.infotext.GenerationParameters`.
        to_diffusers: give the diffusers scheduler (class and config), the keyword arguments
            of :func:`promptweights.diffusers.encode` and of the pipeline call, and under
            ``warnings`` what a re-run would not reproduce (a hires-fix pass, extra networks
            without ``lora_dir``…) instead.

    Returns:
        A JSON-ready dict.

    Raises:
        UnknownNameError: with ``to_diffusers``, an unknown sampler or schedule type.

    >>> from promptweights.infotext import parse
    >>> text = "a cat\\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 5, Clip skip: 2"
    >>> info = infotext_json(parse(text), to_diffusers=True)
    >>> info["scheduler"]["class"], info["encode"]["clip_skip"], info["pipeline"]["guidance_scale"]
    ('DPMSolverMultistepScheduler', 1, 7.0)
    """
    if not to_diffusers:
        return {
            "prompt": params.prompt,
            "negative_prompt": params.negative_prompt,
            "parameters": dict(params.pairs),
            "steps": params.steps,
            "sampler": params.sampler,
            "schedule_type": params.schedule_type,
            "cfg_scale": params.cfg_scale,
            "seed": params.seed,
            "width": params.width,
            "height": params.height,
            "clip_skip": params.clip_skip,
            "model": params.model,
            "diagnostics": [
                {"kind": d.kind, "message": d.message, "pos": d.pos} for d in params.diagnostics
            ],
        }
    from . import infotext
    from .networks import extra_networks
    from .settings import run_settings

    settings = run_settings(params)
    warnings = infotext.unreproducible(params)
    tags = [n.source for n in extra_networks(params.prompt)[1]]
    if tags:
        warnings.append(
            f"extra networks {', '.join(tags)}: applied only by encode(..., lora_dir=DIR) "
            "(LoRA tags); otherwise ignored, with a warning"
        )
    encode: dict[str, Any] = {
        "prompt": settings.prompt,
        "negative_prompt": settings.negative_prompt,
        "strategy": settings.strategy,
        "normalization": "none" if settings.normalization is None else settings.normalization,
        "clip_skip": settings.pipeline_clip_skip,
        "steps": settings.steps,
    }
    pipeline = {
        "num_inference_steps": settings.steps,
        "guidance_scale": settings.cfg_scale,
        "width": params.width,
        "height": params.height,
        "generator": None
        if settings.seed is None
        else f"torch.Generator('cpu').manual_seed({settings.seed})",
    }
    own = params.written.get(infotext.SCHEDULER_KEY)
    if own and not params.sampler:
        # Made by `compare` with the model's own scheduler: a re-run keeps the pipeline's.
        encode["second_order"] = None
        return {
            "scheduler": {"class": own, "model_default": True},
            "encode": encode,
            "pipeline": pipeline,
            "warnings": warnings,
        }
    choice = params.sampler_choice()
    encode["second_order"] = choice.second_order
    return {
        "scheduler": {
            "sampler": choice.sampler,
            "schedule": choice.schedule,
            "class": choice.scheduler_class,
            "config": dict(choice.config),
            "explicit_sigmas": choice.explicit_sigmas,
            "exact": choice.exact,
            "reason": choice.reason,
            "notes": list(choice.notes)
            + ([] if params.sampler else ["no Sampler in the text: A1111 reads it as DPM++ 2M"]),
        },
        "encode": encode,
        "pipeline": pipeline,
        "warnings": warnings,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "explain":
            if args.steps < 1:
                raise PromptweightsError(f"--steps must be at least 1, not {args.steps}")
            encoders = _split_list(args.encoders) if args.encoders else None
            if args.strict:
                _strict_check(args.prompt, args.dialect, encoders)
            tokenizer = _load_tokenizer(args.model) if args.model else None
            text = explain(
                args.prompt,
                steps=args.steps,
                dialect=args.dialect,
                tokenizer=tokenizer,
                encoders=encoders,
            )
            print(text)
        elif args.command == "compare":
            _compare(args)
        elif args.command == "infotext":
            params = _read_infotext(args.file)
            info = infotext_json(params, to_diffusers=args.to_diffusers)
            print(json.dumps(info, indent=2, ensure_ascii=False))
    except PromptweightsError as error:
        message = str(error).splitlines()[0]
        print(f"promptweights: error: {message}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            "promptweights: error: out of memory (lower the size, steps or grid)", file=sys.stderr
        )
        return 2
    return 0
