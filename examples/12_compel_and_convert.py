"""compel's syntax, and converting prompts between dialects
===========================================================

``dialect="compel"`` reads compel 2.5.1's syntax exactly as compel's own parser does; the weighted
spans are compel's flattened fragments. ``promptweights.convert`` writes a prompt in another
dialect with the same weight per word (NovelAI's V4 numeric weights where braces cannot hit it), and
reports what the target cannot express, each at its position in the source (``kind@pos``).
Run: ``python examples/12_compel_and_convert.py``.
"""

from __future__ import annotations

import promptweights as pw

COMPEL = 'a (red cat)1.2 on a mat-- "in winter".swap(in summer) withLora(ink_style, 0.8)'
A1111 = "(masterpiece:1.2), ((red hair)), [blurry], a [cat:dog:0.5] AND sunset:0.5"


def main() -> None:
    print("compel spans:", pw.weighted_spans(COMPEL, dialect="compel"))
    for node in pw.parse(COMPEL, dialect="compel").parts[0].children:
        if not isinstance(node, pw.Text):
            print("  node:", type(node).__name__)
    for source, text in (("compel", COMPEL), ("a1111", A1111)):
        for target in pw.DIALECTS:
            if target == source:
                continue
            result = pw.convert(text, source, target)
            kinds = ", ".join(f"{d.kind}@{d.pos}" for d in result.diagnostics) or "exact"
            print(f"{source} -> {target}: {result.text!r} ({kinds})")


if __name__ == "__main__":
    main()
