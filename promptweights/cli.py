"""The ``promptweights`` command line: ``explain`` (and more subcommands as they land).

Every error the library raises on purpose becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import PromptweightsError
from .parsing import parse
from .render import render_nodes
from .schedules import schedules
from .spans import weighted_spans

__all__ = ["explain", "main"]


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return [row.rstrip() for row in out]


def explain(text: str, *, steps: int = 20, dialect: str = "a1111") -> str:
    """Describe how ``text`` is read: networks, AND parts, the schedule and weighted spans.

    >>> print(explain("a (cat:1.2) [dog:fox:0.5] <lora:ink:0.8>", steps=10))
    ... # doctest: +NORMALIZE_WHITESPACE
    prompt: 'a (cat:1.2) [dog:fox:0.5] <lora:ink:0.8>'
    <BLANKLINE>
    extra networks
    kind  name  te   unet
    ----  ----  ---  ----
    lora  ink   0.8  0.8
    <BLANKLINE>
    part 1 of 1, AND weight 1.0
    steps  text               segment  weight
    -----  -----------------  -------  ------
    1-5    'a (cat:1.2) dog'  'a '     1
                              'cat'    1.2
                              ' dog'   1
    6-10   'a (cat:1.2) fox'  'a '     1
                              'cat'    1.2
                              ' fox'   1
    """
    prompt = parse(text, dialect=dialect)
    lines = [f"prompt: {text!r}"]
    if prompt.networks:
        rows = [(n.kind, n.name, f"{n.te_weight:g}", f"{n.unet_weight:g}") for n in prompt.networks]
        lines += ["", "extra networks", *_table(rows, ("kind", "name", "te", "unet"))]
    for number, part in enumerate(prompt.parts, 1):
        lines += ["", f"part {number} of {len(prompt.parts)}, AND weight {part.weight}"]
        part_text = render_nodes(part.children)
        variants = schedules(part_text, steps) if dialect == "a1111" else [(steps, part_text)]
        rows = []
        start = 1
        for end, variant in variants:
            label = f"{start}-{end}" if end > start else f"{end}"
            for i, (segment, weight) in enumerate(weighted_spans(variant, dialect=dialect)):
                rows.append(
                    (
                        label if i == 0 else "",
                        repr(variant) if i == 0 else "",
                        repr(segment),
                        f"{weight:.6g}",
                    )
                )
            start = end + 1
        lines += _table(rows, ("steps", "text", "segment", "weight"))
    if prompt.diagnostics:
        lines += ["", "diagnostics (strict mode raises on these)"]
        lines += [f"  offset {d.pos}: {d.kind}: {d.message}" for d in prompt.diagnostics]
    return "\n".join(lines)


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "explain":
            if args.steps < 1:
                raise PromptweightsError(f"--steps must be at least 1, not {args.steps}")
            if args.strict:
                parse(args.prompt, dialect=args.dialect, strict=True)
            print(explain(args.prompt, steps=args.steps, dialect=args.dialect))
    except PromptweightsError as error:
        message = str(error).splitlines()[0]
        print(f"promptweights: error: {message}", file=sys.stderr)
        return 2
    return 0
