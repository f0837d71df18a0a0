"""Run by ``accelerate launch`` from ``test_compare.py``: one small grid, sharded in processes."""

from __future__ import annotations

import sys

import torch
from _tiny_pipelines import tiny_sd1

from promptweights.compare import Axis, compare

PROMPT = "a (red:{0.5,1.5}) cat"
AXES = (Axis("seed", (1, 2)),)
SETTINGS = {"steps": 2, "cfg": 5.0, "sampler": "Euler", "progress": False}


def main(out: str) -> None:
    """Run the grid into ``out``; print which cells this process drew."""
    torch.set_num_threads(1)
    pipe = tiny_sd1()
    pipe.set_progress_bar_config(disable=True)
    result = compare(pipe, PROMPT, AXES, out_dir=out, **SETTINGS)  # type: ignore[arg-type]
    print(f"cells={len(result.cells)} ran={list(result.ran)} encoded={result.encoded}")


if __name__ == "__main__":
    main(sys.argv[1])
