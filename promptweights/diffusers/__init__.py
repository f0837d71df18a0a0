"""The diffusers adapter: an A1111 prompt in, the keyword arguments of a diffusers pipeline out.

:func:`encode` reads an A1111 prompt (weights, ``BREAK``, prompt editing ``[a:b:when]``,
alternation ``[a|b]``, ``AND``, ``<lora:…>`` tags, textual-inversion names) and returns a
:class:`Conditioning` whose :meth:`~Conditioning.pipeline_kwargs` go straight into the pipeline::

    cond = promptweights.diffusers.encode(pipe, "a (red:1.2) [cat:dog:0.5]", "blurry", steps=20)
    image = pipe(**cond.pipeline_kwargs()).images[0]  # num_inference_steps=20 is in there

Families: SD 1.x/2.x, SDXL (base and refiner), SD3/3.5 (with or without T5) and Flux.1, text to
image and image to image; the T5 families (Chroma, PixArt, Wan) and the decoder-LLM families
(Qwen-Image, Qwen-Image Edit/Edit Plus with ``image=``, Z-Image, Z-Image Omni, Flux.2,
Flux.2 Klein, Lumina 2, SANA, SANA-WM, Kolors' ChatGLM3 and HiDream-I1's Llama-3.1 beside its
CLIP and T5: :mod:`~promptweights.diffusers._llm`). What A1111
does and where it is done here:

* **Order of operations** (a1111-behaviour.md §1): comments and extra-network tags are removed
  first, then the positive prompt is split at ``AND``, then every part and the negative prompt are
  expanded into their schedules, then weighted and chunked by :func:`promptweights.builder.build`.
  Every text of every schedule is encoded up front in one batched pass per text encoder; nothing is
  encoded while sampling.
* **Prompt editing and alternation at run time** (§4.4–4.5): the conditioning at denoiser call ``k``
  (0-based) is the first schedule entry with ``k <= end``. :meth:`~Conditioning.pipeline_kwargs`
  adds a ``callback_on_step_end`` that, at the end of loop iteration ``i``, swaps in the
  conditioning of call ``i + 1``. diffusers runs one denoiser call per loop iteration, also for
  second-order schedulers (whose timestep list is doubled), so ``i`` counts model calls exactly as
  A1111's ``k`` does; for those schedulers (``scheduler.order == 2``) the schedule length is
  ``2 · steps`` as in A1111. img2img keeps the full-length schedule and starts at ``k = 0``.
* **AND** (§6): ``denoised = u + Σ wᵢ · cfg · (cᵢ − u)``. A pipeline can only run one positive per
  image, so this needs the denoiser call itself: :meth:`Conditioning.attach` is a context manager
  that registers a forward pre-hook and a forward hook on ``pipe.unet`` (or ``pipe.transformer``)
  and removes them on exit. The pre-hook turns the ``[uncond, cond]`` batch into
  ``[uncond, cond₁ … condⱼ]``; the forward hook returns ``[u, u + Σ wᵢ (cᵢ − u)]``, which the
  pipeline's own guidance formula turns into A1111's. No pipeline attribute is replaced and the
  module is exactly as before after the ``with`` block. The hook counts denoiser calls itself, so
  editing inside AND parts switches at the same calls.
* **Chunks and padding** (§6.3, §7, §9): positive and negative always have the same length.
  Positive conds of different lengths (AND parts, images of a batch) are stacked by repeating the
  last token vector, as A1111 stacks them; cond and uncond are then padded with encoded empty-prompt
  chunks (A1111's "Pad conds": a pipeline runs both in one batch; the lengths before this
  padding are kept, and ``promptweights.a1111`` runs them unpadded as A1111 does by default).
  SDXL's pooled vector comes from
  chunk 0 of the syntax-stripped text; an SDXL negative that is empty for every image is all
  zeros when the pipeline's ``force_zeros_for_empty_prompt`` is set (diffusers' and A1111's rule).
* **LoRA** (§8): tags are always removed from the text. When ``lora_dir=`` or ``loras=`` is given,
  the tags of the first prompt are loaded from ``.safetensors`` files only (never pickles) with
  diffusers' ``load_lora_weights`` as adapters named ``pw_<name>`` and activated with
  ``set_adapters`` at the tag's text-encoder and UNet multipliers; the active adapter set then is
  exactly the tagged one. Unknown names raise :class:`~promptweights.errors.UnknownNameError`
  listing the names available. Before anything is loaded every file is read and checked: tensors
  floating point and finite, keys read as diffusers reads them (kohya ``lora_unet_*`` too), every
  targeted module present, down/up shapes matching its in/out features (conv kernels) and each
  other's rank; a bad file raises :class:`~promptweights.errors.NetworkFileError` naming the file,
  the key, and the expected and found shapes. A failure after loading puts the pipeline back
  exactly as it was (modules, hooks, adapters and their weights).
* **LoRA weight schedules** (loractl's ``<lora:name:0@0,1@0.5>``,
  :mod:`promptweights.lora_schedules`): the weights of every denoiser call of the pass are worked
  out before anything is loaded (call ``k`` reads the step ``max((k - 1) // order, 0)`` that
  A1111's sampler callback last set; fractions are of ``steps - 2``, or of ``hires_steps`` minus 2
  in a hires pass, which uses the ``hr`` weights). Text-encoder weights change the conditioning:
  the calls fall into runs of equal text-encoder weights, the prompts are encoded once under each
  distinct weight set (``set_adapters``, every text of every schedule, as above), and the timeline
  picks, at call ``k``, the schedule entry of call ``k`` in the encoding of call ``k``'s weight set,
  so the step callback swaps conditioning exactly where an edit or a text-encoder weight changes.
  UNet weights are set with ``set_adapters`` by that same callback after iteration ``i`` for call
  ``i + 1`` where they change (by the AND hook before call ``k`` for AND prompts), and put back
  to call 0's after the last call, so the next run with the same keyword arguments starts alike.
  Fractions are always of the ``steps`` (or ``hires_steps``) given to :func:`encode`: in an
  img2img pass A1111 counts the steps that pass runs instead, so there they can come out earlier.
* **Textual inversion** (§9.2): embeddings loaded with :func:`load_textual_inversion` (A1111
  ``.safetensors`` files, checked before the pipeline is touched) or with diffusers' own
  ``load_textual_inversion`` are matched by name in the text, inside weighted spans too
  (``(emb:1.2)`` scales all its vectors), and never split across chunks.

**Batching and exactness.** By default every row a call needs (every chunk of every image of a
list of prompts, every schedule entry, every masked or substituted row) goes through one forward
pass per text encoder, at A1111's row minimum: the chunks of prompts and negatives, plus the empty
window once per model where padding uses it (cached across calls, invalidated by any change of
the weights; every LoRA or embedding this package loads or unloads drops it too). A batch may round
the last bit differently from one text at a time (equal to ~1e-6 relative in float32);
``exact=True`` runs one row per pass and gives bit for bit what the pipeline's own
``encode_prompt`` gives for a plain prompt. All rows are encoded before sampling.
:func:`encode_many` (:mod:`~promptweights.diffusers.many`) encodes several conditionings (one
mapping of :func:`encode`'s arguments each: other prompts, strategies, normalisations, step
counts) with one pass per text encoder for all their rows, as ``compare`` does for a grid.

**Precision and placement.** In float16/bfloat16 pipelines the weighting runs in float32 and the
result comes back in the pipeline's dtype, saturated at its largest finite value (never inf). Text
encoders run where they are (their device, or the execution device of accelerate's offload hooks:
``enable_model_cpu_offload``, ``enable_sequential_cpu_offload``); the results go to the
pipeline's ``_execution_device``.

Clip skip follows the pipelines' own ``clip_skip`` argument (``None`` or 0: the family default;
A1111's "Clip skip N" is ``clip_skip=N - 1``; :mod:`promptweights.settings` converts). Nothing
here changes the pipeline unless LoRA tags are loaded; a failed call leaves it as it was.

The package: :mod:`~promptweights.diffusers.families` (one record per family, and
:func:`family_of`), :mod:`~promptweights.diffusers.encode` (:func:`encode`),
:mod:`~promptweights.diffusers.conditioning` (:class:`Conditioning`, its timeline, the step
callback and the AND hook), :mod:`~promptweights.diffusers.lora`,
:mod:`~promptweights.diffusers.textual_inversion` and :mod:`~promptweights.diffusers.rerun`
(:func:`plan_rerun`, :func:`from_infotext`). Its modules sit in the adapter layer: they import the
language layer, ``tokens``, ``strategies``, ``builder`` and ``encoders``, never the tools.

Adding a family
---------------
A family is one :class:`~promptweights.diffusers.families.Family` record in ``families.RECORDS``;
nothing else in the package branches on family names. The record states:

* which pipelines it covers: ``pipelines`` (the diffusers class names), and the rule
  :func:`family_of` applies to a pipeline's ``components`` (``denoiser``, ``needs``, ``loaded``,
  ``unloaded``, ``lacks``, ``class_prefix``), which must not match another family's pipelines;
* its text encoders (``towers``): the pipeline attributes of each model and tokenizer, its kind
  (``"clip"``, ``"sdxl"`` or ``"t5"``), which prompt it reads (1 ``prompt``, 2 ``prompt_2``,
  3 ``prompt_3``), whether its pooled output is kept, whether ``clip_skip`` applies, whether the
  pipeline may lack it, which part of a textual-inversion file it takes, its weighting ``policy``
  (``promptweights.strategies.POLICIES``: a default, alternatives, or weighting off with a
  reason) and, for T5, how the pipeline runs it (``mask_padding``, ``zero_padding``, ``clean``);
  for a decoder LLM (kind ``"llm"``) its :class:`~promptweights.diffusers._llm.Template` and the
  text-model classes it runs (``models``);
* ``layout``: a small function that lays one prompt's tower outputs out as the denoiser takes
  them, the pooled source included; ``padding`` (A1111's stacking and "Pad conds" for chunked
  CLIP towers: :func:`~promptweights.diffusers.families.pad_like_a1111`); ``sequence_length``
  (the T5 window when ``max_sequence_length`` is not given and the pipeline's ``__call__`` has no
  default for it); ``attention_mask`` (the T5 mask the pipeline takes with the embeds),
  ``long_prompts`` (whether ``"chunk"`` is tolerated) and ``cleared`` (arguments passed as
  ``None``);
* what an empty negative becomes (``empty_negative``; zeroed or omitted, it is never encoded),
  whether guidance runs ``[uncond, cond]`` in one batch (``batched_guidance``: else AND takes
  the parts' weighted mean on the cond call, :mod:`promptweights.diffusers._separate`; a
  transformer taking lists, Z-Image's: :mod:`promptweights.diffusers._listed`), and the tensors
  the step callback swaps
  (``step_tensors``, ``step_pooled``); the name of the mask argument (``mask_argument``),
  whether the pipeline takes one tensor per image (``embeds_as_list``), and the pipeline classes
  named like the family's that it refuses, with the reason (``refused``).

Name each tower (``Tower.name``: what a ``TE(name: …)`` block calls it,
:mod:`promptweights.routing`). Then add a ``tiny_<family>()`` builder to
``tests/_tiny_pipelines.py``, its row to ``tests/_family_table.py`` (editing, AND, compare and
re-runs on its tiny pipeline; an LLM family's to ``LLM_ROWS``, which
``tests/test_llm_editing.py`` also runs), add it to the pipelines ``tests/test_families.py``
checks (each is covered by exactly one record, each listed class fits its record's rule), and a
test in ``tests/test_diffusers.py`` (CLIP families) or ``tests/test_t5_families.py`` (T5
families) or ``tests/test_llm_families.py`` (decoder LLMs, tiny models in
``tests/_tiny_llm.py``) that a plain prompt gives exactly what the pipeline's own
``encode_prompt`` gives; and its row in the README's table of families.
"""

from __future__ import annotations

from promptweights.infotext import UNSUPPORTED_SETTINGS

from .conditioning import Conditioning
from .encode import encode
from .families import FAMILIES, encoder_names, family_of
from .many import encode_many
from .rerun import Rerun, attach_infotext, from_infotext, plan_rerun
from .textual_inversion import load_textual_inversion

__all__ = [
    "FAMILIES",
    "UNSUPPORTED_SETTINGS",
    "Conditioning",
    "Rerun",
    "attach_infotext",
    "encode",
    "encode_many",
    "encoder_names",
    "family_of",
    "from_infotext",
    "load_textual_inversion",
    "plan_rerun",
]
