"""Explain a prompt
================

What A1111 does with a prompt before any model sees it: extra networks are cut out, the text is
split at AND, prompt editing and alternation give one text per range of sampler calls, and each
text is split into weighted spans. A schedule entry ``(end, text)`` serves the sampler's calls
numbered from 0 up to ``end``, after the previous entry's (A1111 counts its calls from 0, so
``[cat:dog:0.5]`` at 10 steps shows cat to calls 0-5).
Run: ``python examples/01_explain_a_prompt.py``.
"""

from __future__ import annotations

import promptweights as pw

PROMPT = (
    "(masterpiece:1.2), ((red hair)), [blurry], a [cat:dog:0.5] on a [mat|rug] "
    "<lora:ink_style:0.8> BREAK night sky AND sunset:0.5"
)


def main(steps: int = 10) -> None:
    text, networks = pw.extra_networks(PROMPT)
    for network in networks:
        weights = f"te={network.te_weight} unet={network.unet_weight}"
        print(f"network {network.kind}:{network.name} {weights}")
    for sub_prompt, weight in pw.split_and(text):
        print(f"\nAND part {sub_prompt!r} weight {weight}")
        first = 0
        for end, variant in pw.schedules(sub_prompt, steps):
            last = min(end, steps - 1)
            if first > last:
                continue  # an entry ending at the last call: no call uses the next one
            spans = ", ".join(f"{t!r}:{w:.3g}" for t, w in pw.weighted_spans(variant))
            print(f"  calls {first}-{last}: {spans}")
            first = end + 1
    tree = pw.parse(PROMPT)
    assert pw.render(tree) == PROMPT  # the tree is lossless
    print("\ntree of the first part:", tree.parts[0].children[:3], "…")


if __name__ == "__main__":
    main()
