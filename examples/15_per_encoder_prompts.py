"""Per-encoder prompts inline: ``TE(clip_l: …; t5: …)``
=====================================================

One text box, several text encoders: a ``TE(…)`` block gives each encoder its own text (and its
own weights) where the block stands; text outside blocks goes to every encoder.
``promptweights.diffusers.encode`` routes the blocks into ``prompt``/``prompt_2``/``prompt_3`` by
the family's encoder names (``promptweights.diffusers.encoder_names(pipe)``); here
``promptweights.route`` shows what each encoder reads, without a model.
Run: ``python examples/15_per_encoder_prompts.py``.
"""

from __future__ import annotations

import promptweights as pw
from promptweights.render import render_nodes

FLUX = ("clip_l", "t5")  # encoder_names(pipe) of a Flux.1 pipeline
SD3 = ("clip_l", "clip_g", "t5")

prompt = "masterpiece, TE(clip_l: a cat; t5: a (ginger:1.3) cat asleep on a [red:blue:0.5] mat)"
print(prompt)
for name, text in (pw.route(prompt, FLUX) or {}).items():
    print(f"  {name:7} reads {text!r}")

# The block is part of the grammar: a PerEncoder node whose sections render back as written.
(block,) = [n for n in pw.parse(prompt).parts[0].children if isinstance(n, pw.PerEncoder)]
print([(section.name, render_nodes(section.children)) for section in block.sections])

# A block that does not name an encoder gives it nothing; SD3's CLIP-G reads only the outside.
print(pw.route("a photo, TE(clip_l: of a cat; t5: of a cat on a mat at dusk)", SD3))

# A name the family lacks is an error that points at it and lists the family's names.
try:
    pw.route("TE(clip_l: a cat; llm: a cat)", FLUX)
except pw.PromptSyntaxError as error:
    print(error)

# With a pipeline (not run here):
#   cond = promptweights.diffusers.encode(pipe, prompt)  # = encode(pipe, "masterpiece,  a cat",
#                                                        #   prompt_2="masterpiece,  a (ginger…")
