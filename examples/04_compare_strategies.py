"""Compare weighting strategies on fixed seeds
============================================

The A1111 X/Y/Z plot for diffusers: one weight swept in the prompt (``{0..1.5:0.75}``) against
three weighting strategies on a fixed seed, with the embedded toy model (a 32×32 shape drawer, so
this runs offline in seconds). Every cell starts from the seed's latents and each distinct
conditioning is encoded once (add ``Axis("seed", (1, 2))`` for a third axis). The folder gets a
labelled ``grid.png``, every cell as a PNG with its infotext, ``metrics.json``/``.csv`` and
``sweep.gif``. The same grid from the shell:
``promptweights compare "a (red:1.2) circle" --sweep red=0.5:1.5:0.5 --strategies
a1111,comfy,compel --seeds 1,2 --out DIR``. Run: ``python examples/04_compare_strategies.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import promptweights.toy as toy
from promptweights.compare import Axis, compare

PROMPT = "a (red:{0..1.5:0.75}) circle, blue background"


def main(out: Path | None = None) -> None:
    out = out or Path(tempfile.gettempdir()) / "promptweights-04-compare"
    pipe = toy.load_pipeline()
    axes = [Axis("strategy", ("a1111", "comfy", "compel"))]
    # overwrite=True: the example owns this folder, and a second run replaces its files.
    result = compare(
        pipe, PROMPT, axes, seed=7, steps=6, cfg=4.0, out_dir=out, overwrite=True, progress=False
    )
    print(f"{len(result.cells)} cells, {result.encoded} conditionings encoded")
    print("cell  prompt                                strategy  cos.dist  pixel.dist")
    for m in result.metrics:
        line = f"{m['index']:>4}  {m['prompt']:<36}  {m['strategy']:<8}"
        print(f"{line}  {m['cosine_distance']:8.4f}  {m['pixel_distance']:10.4f}")
    for kind in ("grid", "json", "csv", "gif"):
        print(f"{kind}: {result.files[kind]}")


if __name__ == "__main__":
    main()
