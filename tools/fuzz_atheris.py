"""Coverage-guided fuzzing of everything that reads untrusted text, with atheris (run locally).

Usage, from the repository root::

    pip install atheris
    python tools/fuzz_atheris.py -max_total_time=600 -rss_limit_mb=4096 build/fuzz-corpus

Each input is split into a few control bytes (dialect, steps, hires steps) and the text: the rest
of the bytes decoded as UTF-8 with ``surrogateescape``, so invalid bytes arrive as lone surrogates.
:func:`check` feeds the text to ``parse`` (every dialect, lenient and strict), ``render``,
``weighted_spans`` (every dialect), ``schedules`` (plain, hires, old timelines), ``split_and``,
``extra_networks``, ``strip_comments``, the token/chunk builder (the toy model's CLIP tokenizer)
and ``infotext.parse``. Anything but a :class:`promptweights.PromptweightsError` escaping is a
finding: atheris stops and writes the input to ``crash-*``.

``tests/test_fuzz_atheris.py`` runs :func:`check` on a seed corpus and on Hypothesis-drawn bytes, so
the harness itself is exercised by the suite without atheris installed.
"""

from __future__ import annotations

import contextlib
import sys
from functools import cache
from pathlib import Path
from typing import Any

import promptweights as pw
from promptweights import infotext
from promptweights.errors import LimitExceededError, PromptSyntaxError, PromptweightsError

#: Inputs atheris starts from (also checked by the test suite).
SEEDS: tuple[bytes, ...] = (
    b"\x00\x14\x00masterpiece, (best quality:1.2), [blurry], [cat:dog:0.5], BREAK, a AND b:0.5",
    b"\x01\x14\x00((a:1.2) b:0.5) \\(x\\) (c:.5) (d:1.) (e:-0)",
    b"\x02\x14\x00{{a}} [b] \\{c\\}",
    b"\x00\x3c\x1e[a|b|] [[x:y:3]:z:0.9] <lora:n:0.8:0.2> <hypernet:h> # comment\nnext",
    b"\x00\x05\x00" + b"[a|" * 300 + b"(" * 300,
    b"\x00\x05\x00" + b"(a:" + b"9" * 400 + b") \xff\xfe\xed\xa0\x80 \xe2\x80\x8b",
    b"\x00\x14\x00a cat\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a, Size: 512x512",
)


@cache
def _tokenizer() -> Any:
    from transformers import CLIPTokenizer

    from promptweights.toy import model_path

    with model_path() as root:
        return CLIPTokenizer.from_pretrained(root / "tokenizer")


def check(data: bytes, *, tokens: bool = True) -> None:
    """Run every reader of untrusted text on ``data``; raise if anything undocumented escapes."""
    if len(data) < 3:
        return
    dialect = pw.DIALECTS[data[0] % len(pw.DIALECTS)]
    steps = data[1]  # 0..255, 0 included: schedules must take any count
    hires = data[2] or None
    text = data[3:].decode("utf-8", "surrogateescape")

    tree = pw.parse(text, dialect=dialect)
    rendered = pw.render(tree)
    if pw.parse(rendered, dialect=dialect) != tree:
        raise AssertionError(f"render/parse round trip changed the tree of {text!r}")
    try:
        pw.parse(text, dialect=dialect, strict=True)
    except PromptSyntaxError as error:
        if not 0 <= error.pos <= len(text):
            raise AssertionError(f"error position {error.pos} outside the text") from error
    spans = pw.weighted_spans(text, dialect=dialect)
    try:
        for variant in (
            pw.schedules(text, steps),
            pw.schedules(text, steps, hires_steps=hires),
            pw.schedules(text, steps, old_timelines=True),
        ):
            for _, variant_text in variant:
                pw.weighted_spans(variant_text)
        pw.split_and(text)
    except LimitExceededError:
        pass
    pw.extra_networks(text)
    pw.strip_comments(text)
    if tokens:
        from promptweights.tokens import tokenize_many

        # InvalidWeightError (a NaN or infinite weight) is refused with a message.
        with contextlib.suppress(PromptweightsError):
            tokenize_many(_tokenizer(), [spans, [(text, 1.0)]])
    with contextlib.suppress(PromptweightsError):
        infotext.parse(text)


def _one_input(data: bytes) -> None:
    with contextlib.suppress(PromptweightsError):  # documented: every public error
        check(data)


def main() -> None:
    """Fuzz until atheris stops (``-max_total_time``, ``-runs``) or finds a crash."""
    import atheris

    corpora = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
    for corpus in corpora:
        if not corpus.exists():
            corpus.mkdir(parents=True)
            for i, seed in enumerate(SEEDS):
                (corpus / f"seed-{i}").write_bytes(seed)
    _tokenizer()  # load transformers before instrumenting, so that coverage is ours
    atheris.instrument_all()
    atheris.Setup(sys.argv, _one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
