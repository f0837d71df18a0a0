"""Parse speed of the prompt language on a realistic corpus, next to A1111's regex parser.

Run from the repository root::

    python -m benchmarks.parse            # full run, about a minute
    python -m benchmarks.parse --quick    # fewer prompts and repeats, smaller linearity sizes

Prints a markdown table of µs per prompt over the corpus of :mod:`benchmarks.corpus` for:

* A1111's ``parse_prompt_attention`` (regex + stacks, re-implemented in ``_a1111_reference.py``),
  the baseline every ratio refers to;
* ``weighted_spans`` alone (the same job);
* the "whole language" of issue 2: ``schedules(text, 20)`` and ``weighted_spans`` of every
  scheduled text;
* the full A1111 pipeline: ``extra_networks`` → ``split_and`` → ``schedules(part, 20)`` →
  ``weighted_spans``;
* ``parse()``, the typed tree.

Each is timed cold (every cache of the public functions cleared before each run, so no prompt is a
hit) and cached (the same run again). The best of ``--repeat`` runs is reported, in CPU time of the
process (``--wall`` for wall-clock time), so that other jobs on a shared machine do not count. A
linearity table times one large prompt (100 kB and 1 MB by default) for each function, and a
nesting table times ``weighted_spans`` of each dialect on brackets nested as deep as the text allows
(half openers, half closers: ``(`` for a1111 and comfy, ``{`` for novelai), next to a1111.

A dialect table times the corpus written in each other dialect (:func:`novelai_corpus`: the same
prompts with ``(x:1.2)`` as ``1.2::x::`` and ``(x)`` as ``{x}``; compel: the prompts written by
``promptweights.convert``) next to a1111 on the original, per prompt; an expansion table gives
:func:`promptweights.dynamic.expand`'s variants per second in combinatorial mode.
"""

from __future__ import annotations

import argparse
import gc
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import promptweights
from benchmarks._a1111_reference import parse_prompt_attention
from benchmarks.corpus import generate, stats

__all__ = [
    "BENCHMARKS",
    "Row",
    "clear_caches",
    "corpus_rows",
    "dialect_rows",
    "expand_rows",
    "linearity_rows",
    "main",
    "markdown",
    "nesting_rows",
    "novelai_corpus",
    "time_per_item",
]

STEPS = 20

#: The clock measurements use: CPU time of this process by default, so that the other jobs of a
#: shared machine do not count; ``--wall`` switches to wall-clock time.
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


def clear_caches() -> None:
    """Clear the LRU cache of every public function that has one."""
    for name in promptweights.__all__:
        clear = getattr(getattr(promptweights, name), "cache_clear", None)
        if callable(clear):
            clear()


def reference_spans(text: str) -> object:
    """A1111's own emphasis pass (the baseline)."""
    return parse_prompt_attention(text)


def spans_only(text: str) -> object:
    """``weighted_spans`` alone."""
    return promptweights.weighted_spans(text)


def _schedules(text: str) -> list[tuple[int, str]]:
    # The linearity rows run the language on 1 MB texts: measure them, past the request caps.
    return promptweights.schedules(text, STEPS, max_variants=sys.maxsize, max_chars=sys.maxsize)


def whole_language(text: str) -> object:
    """``schedules(text, 20)``, then ``weighted_spans`` of every scheduled text."""
    return [promptweights.weighted_spans(t) for _, t in _schedules(text)]


def a1111_pipeline(text: str) -> object:
    """A1111's order: extra networks, AND, scheduling, emphasis (a1111-behaviour.md §1)."""
    body, _ = promptweights.extra_networks(text)
    return [
        [promptweights.weighted_spans(t) for _, t in _schedules(part)]
        for part, _ in promptweights.split_and(body, max_parts=sys.maxsize)
    ]


def tree(text: str) -> object:
    """``parse()``: the typed tree."""
    return promptweights.parse(text)


def whole_language_lark(text: str) -> object:
    """The whole language with schedules read off the tree that Lark's LALR parser builds
    (the reference path the fast paths are proven equal to)."""
    from promptweights.schedules import tree_schedules

    return [promptweights.weighted_spans(t) for _, t in tree_schedules(text, STEPS, engine="lark")]


#: (label, function) in table order; the first is the baseline of every ratio.
BENCHMARKS: tuple[tuple[str, Callable[[str], object]], ...] = (
    ("A1111 `parse_prompt_attention` (regex, reference)", reference_spans),
    ("`weighted_spans`", spans_only),
    ("`schedules(text, 20)` + `weighted_spans` of each (whole language)", whole_language),
    ("`extra_networks` → `split_and` → `schedules` → `weighted_spans`", a1111_pipeline),
    ("`parse()`", tree),
    ("whole language, schedules from the Lark LALR tree (no fast path)", whole_language_lark),
)


@dataclass(frozen=True)
class Row:
    """One line of a table: a label, µs per item and the ratio to the baseline row."""

    label: str
    micros: float
    ratio: float | None = None


def time_per_item(
    function: Callable[[str], object],
    texts: Iterable[str],
    *,
    repeat: int,
    cached: bool,
    clock: str = "cpu",
) -> float:
    """Best over ``repeat`` runs of the mean µs per text; cold runs clear the caches first.

    The garbage collector is off while a run is timed, as in :mod:`timeit`.
    """
    now = CLOCKS[clock]
    items = list(texts)
    best = float("inf")
    if cached:
        clear_caches()
        for text in items:  # warm every cache once
            function(text)
    for _ in range(repeat):
        if not cached:
            clear_caches()
        gc.collect()
        gc.disable()
        try:
            start = now()
            for text in items:
                function(text)
            best = min(best, now() - start)
        finally:
            gc.enable()
    return best / max(len(items), 1) * 1e6


def corpus_rows(texts: list[str], *, repeat: int, clock: str = "cpu") -> list[Row]:
    """Cold and cached µs per prompt of every benchmark over ``texts``."""
    rows: list[Row] = []
    baseline = 0.0
    for index, (label, function) in enumerate(BENCHMARKS):
        cold = time_per_item(function, texts, repeat=repeat, cached=False, clock=clock)
        if index == 0:
            baseline = cold
            rows.append(Row(label, cold, 1.0))
            continue
        warm = time_per_item(function, texts, repeat=repeat, cached=True, clock=clock)
        rows.append(Row(label, cold, cold / baseline))
        rows.append(Row(label + ", cached", warm, warm / baseline))
    return rows


def big_prompt(texts: list[str], size: int) -> str:
    """Corpus prompts without AND joined by ``", "`` up to ``size`` characters."""
    pool = [t for t in texts if " AND " not in t and "#" not in t] or ["a (b:1.2) [c]"]
    parts: list[str] = []
    total = 0
    i = 0
    while total < size:
        piece = pool[i % len(pool)]
        parts.append(piece)
        total += len(piece) + 2
        i += 1
    return ", ".join(parts)[:size]


def linearity_rows(
    texts: list[str], sizes: tuple[int, ...], *, repeat: int = 1, clock: str = "cpu"
) -> list[Row]:
    """Time of one prompt of each size, per function; the ratio is to the smallest size."""
    rows: list[Row] = []
    prompts = {size: big_prompt(texts, size) for size in sizes}
    for label, function in BENCHMARKS:
        first = 0.0
        for size in sizes:
            micros = time_per_item(
                function, [prompts[size]], repeat=repeat, cached=False, clock=clock
            )
            first = first or micros
            rows.append(Row(f"{label} — {_size_label(size)}", micros, micros / first))
    return rows


#: (dialect, opener, closer) of the nesting table; the first is the baseline of its ratios.
NESTING: tuple[tuple[str, str, str], ...] = (
    ("a1111", "(", ")"),
    ("comfy", "(", ")"),
    ("novelai", "{", "}"),
)


def nesting_rows(sizes: tuple[int, ...], *, repeat: int = 1, clock: str = "cpu") -> list[Row]:
    """``weighted_spans`` of ``size`` characters of nested brackets per dialect; the ratio is to
    a1111 at the same size."""
    rows: list[Row] = []
    for size in sizes:
        baseline = 0.0
        for dialect, opener, closer in NESTING:
            text = opener * (size // 2) + closer * (size - size // 2)

            def spans(text: str, dialect: str = dialect) -> object:
                return promptweights.weighted_spans(text, dialect=dialect)

            micros = time_per_item(spans, [text], repeat=repeat, cached=False, clock=clock)
            baseline = baseline or micros
            label = f"`weighted_spans` {dialect}, `{opener * 2}…{closer * 2}` — {_size_label(size)}"
            rows.append(Row(label, micros, micros / baseline))
    return rows


_WEIGHTED_RE = re.compile(r"\(([^():\[\]\\]*):\s*([0-9]*\.?[0-9]+)\s*\)")
_NETWORK_RE = re.compile(r"<[^<>]*>|\bAND\b|\bBREAK\b")


def novelai_corpus(texts: list[str]) -> list[str]:
    """The corpus in NovelAI's syntax: ``(x:1.2)`` → ``1.2::x::``, ``(x)`` → ``{x}``; extra
    networks, ``AND`` and ``BREAK`` (which NovelAI does not have) dropped."""
    out = []
    for text in texts:
        text = _NETWORK_RE.sub("", text)
        text = _WEIGHTED_RE.sub(lambda m: f"{m.group(2)}::{m.group(1)}::", text)
        out.append(re.sub(r"(?<!\\)\(", "{", re.sub(r"(?<!\\)\)", "}", text)))
    return out


def dialect_rows(texts: list[str], *, repeat: int, clock: str = "cpu") -> list[Row]:
    """µs per prompt of ``weighted_spans`` and ``parse()`` in each dialect's version of the
    corpus, cold; the ratio is to a1111 on the original corpus."""
    corpora = {
        "a1111": texts,
        "novelai": novelai_corpus(texts),
        # compel: the corpus written by promptweights.convert (same weight per word).
        "compel": [promptweights.convert(t, "a1111", "compel").text for t in texts],
    }
    rows: list[Row] = []
    for label, call in (
        ("`weighted_spans`", promptweights.weighted_spans),
        ("`parse()`", promptweights.parse),
    ):
        baseline = 0.0
        for dialect, items in corpora.items():

            def run(text: str, call: Callable[..., object] = call, d: str = dialect) -> object:
                return call(text, dialect=d)

            micros = time_per_item(run, items, repeat=repeat, cached=False, clock=clock)
            baseline = baseline or micros
            rows.append(Row(f"{label} {dialect}", micros, micros / baseline))
    return rows


#: (label, template, wildcards) of the expansion table.
EXPANSIONS: tuple[tuple[str, str, dict[str, list[str]] | None], ...] = (
    (
        "5 variants × 10 options",
        "a photo, "
        + ", ".join("{" + "|".join(f"w{i}{j}" for j in range(10)) + "}" for i in range(5)),
        None,
    ),
    (
        "wildcards, nested, `{2$$…}`",
        "__subject__, {2$$ and $$__colour__}, [day|night], __style__",
        {
            "subject": [f"{{old|young}} {animal}" for animal in ("cat", "dog", "fox", "owl")],
            "colour": ["red", "blue", "green", "gold", "silver", "black", "white", "pink"],
            "style": [f"by artist{i}" for i in range(16)] + ["__colour__ ink"],
        },
    ),
)


def expand_rows(*, repeat: int, clock: str = "cpu") -> list[Row]:
    """Combinatorial ``expand``: µs per prompt, and variants per second in the ratio column."""
    from promptweights.dynamic import expand

    rows = []
    now = CLOCKS[clock]
    for label, template, wildcards in EXPANSIONS:
        best = float("inf")
        made = 0
        for _ in range(repeat):
            gc.collect()
            start = now()
            made = len(expand(template, wildcards=wildcards, limit=10**7, max_chars=10**9))
            best = min(best, now() - start)
        rows.append(Row(f"`expand` — {label}: {made:,} prompts", best / made * 1e6, made / best))
    return rows


def _size_label(size: int) -> str:
    if size >= 1_000_000:
        return f"{size / 1_000_000:g} MB"
    if size >= 1_000:
        return f"{size / 1_000:g} kB"
    return f"{size} B"


def markdown(rows: list[Row], *, unit: str, ratio_header: str) -> str:
    """A markdown table of ``rows``."""
    lines = [f"| measurement | {unit} | {ratio_header} |", "|---|---:|---:|"]
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}×"
        lines.append(f"| {row.label} | {row.micros:,.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=600, help="corpus size (≥ 500 by default)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (best kept)")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[100_000, 1_000_000],
        help="characters of the linearity prompts",
    )
    parser.add_argument("--quick", action="store_true", help="100 prompts, 2 repeats, 10/100 kB")
    parser.add_argument("--wall", action="store_true", help="wall-clock instead of CPU time")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.repeat, args.sizes = 100, 2, [10_000, 100_000]

    clock = "wall" if args.wall else "cpu"
    texts = generate(args.prompts)
    info = stats(texts)
    print(
        f"Corpus: {info['prompts']:.0f} prompts, {info['mean_chars']:.0f} characters on average "
        f"({info['min_chars']:.0f}–{info['max_chars']:.0f}); python {sys.version.split()[0]}; "
        f"{'wall-clock' if args.wall else 'CPU'} time, best of {args.repeat} runs.\n"
    )
    rows = corpus_rows(texts, repeat=args.repeat, clock=clock)
    print(markdown(rows, unit="µs/prompt", ratio_header="× A1111 regex"))
    print()
    lines = linearity_rows(texts, tuple(args.sizes), clock=clock)
    print(markdown(lines, unit="µs (one prompt)", ratio_header="× smallest size"))
    print()
    nested = nesting_rows(tuple(args.sizes), clock=clock)
    print(markdown(nested, unit="µs (one prompt)", ratio_header="× a1111"))
    print()
    by_dialect = dialect_rows(texts, repeat=args.repeat, clock=clock)
    print(markdown(by_dialect, unit="µs/prompt", ratio_header="× a1111"))
    print()
    expansions = expand_rows(repeat=args.repeat, clock=clock)
    print("| measurement | µs/prompt | variants/s |\n|---|---:|---:|")
    for row in expansions:
        print(f"| {row.label} | {row.micros:,.2f} | {row.ratio or 0:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
