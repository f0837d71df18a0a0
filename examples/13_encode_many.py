"""Encode several conditionings at once
=====================================

An application that needs several conditionings of one pipeline (prompts, strategies, step counts:
a comparison, a batch of jobs) can encode them together: ``encode_many`` plans every row of every
request and runs each text encoder once for all of them. Each result equals ``encode`` of its
request alone up to the last bit of a batched matmul (``exact=True``: bit for bit). Embedded toy
model, offline. Run: ``python examples/13_encode_many.py``.
"""

from __future__ import annotations

import torch

import promptweights.toy as toy
from promptweights.diffusers import encode, encode_many

REQUESTS = [
    {"prompt": "a (red:1.3) circle, blue background", "strategy": "a1111"},
    {"prompt": "a (red:1.3) circle, blue background", "strategy": "compel"},
    {"prompt": "a [circle:square:0.5], (blue:0.7) background", "steps": 4},
    {"prompt": ["a red circle", "a green square"], "negative_prompt": "blurry"},
]


def main() -> None:
    pipe = toy.load_pipeline()
    passes = []
    hook = pipe.text_encoder.register_forward_pre_hook(lambda *_: passes.append(1))
    try:
        conds = encode_many(pipe, REQUESTS)
    finally:
        hook.remove()
    print(f"{len(conds)} conditionings, {len(passes)} text-encoder pass")
    for request, cond in zip(REQUESTS, conds, strict=True):
        alone = encode(pipe, **request)
        diff = float((cond.prompt_embeds - alone.prompt_embeds).abs().max())
        print(f"{str(request['prompt'])[:40]:40} {tuple(cond.prompt_embeds.shape)} |Δ| {diff:.1e}")
    image = pipe(**conds[2].pipeline_kwargs(), generator=torch.Generator().manual_seed(1))
    print("image", image.images[0].size)


if __name__ == "__main__":
    main()
