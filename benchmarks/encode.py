"""Encoding benchmark: promptweights' one batched pass against how peers encode weighted prompts.

Run from the repository root::

    python -m benchmarks.encode                   # a timing table for each set of prompt pairs
    python -m benchmarks.encode --memory          # also peak resident memory, one process each
    python -m benchmarks.encode --device cuda     # the same on a GPU
    python -m benchmarks.encode --t5 xxl          # the Flux table instead: T5-XXL-shaped, bf16

An SD1.5-shaped CLIP-L text tower (12 layers, width 768) with random weights
(``torch.manual_seed(0)``) gives the real cost of a pass without a download; the tokenizer is the
real CLIP BPE from ``../shared/clip-tokenizer`` when present. Two sets of prompt pairs: ``mixed``
(weights of every kind, few below 1) and ``downweights`` (long prompts with two or three words
weighted below 1, as compel's users write them). For each pair it runs:

* ``encode_prompt``: the pipeline's own ``StableDiffusionPipeline.encode_prompt`` on the raw text
  (no weighting, truncated at 77 tokens: the floor, not a competitor);
* ``per-chunk loop``: what sd_embed's ``get_weighted_text_embeddings_sd15`` does — one encoder call
  per 77-token chunk, positive and negative separately, then multiply;
* ``compel 2.5.1``: ``EmbeddingsProvider`` (``truncate=False``) on the same weighted fragments;
* promptweights ``build`` with the ``a1111``, ``a1111-no-norm`` and ``compel`` strategies, one
  pass per pair; and ``a1111`` and ``compel`` with every pair in one pass (``one list``), as
  ``promptweights.diffusers.encode(pipe, [p1, p2…], [n1, n2…])`` runs a list of prompts.

Columns: wall time, passes through the encoder layers (``calls``), rows run in full through the
model (77-token sequences), ``pos/77``: every position run through the layers, in rows of 77 (a
masked re-encoding that promptweights starts from its chunk's cached prefix runs only its suffix, in
a second pass), and for promptweights the share of the time spent in the weighting arithmetic. The
``compel`` strategy's output is compared with compel's where compel chunks like A1111 (prompts of
at most 75 tokens). Under each table: the equal-output bound of the ``compel`` strategy
(:func:`equal_output_bound`: one timed pass over exactly the positions compel's output depends on)
and our ``compel`` over it; the speed-up over compel 2.5.1 and the most that equal output allows;
compel 2.5.1 over our ``a1111`` (the chunk rows alone: printed as the bound before, but less work
than compel's output needs); and whether the one batched pass gives the unweighted texts
bit-identical to ``encode_prompt``.

``--t5 xxl`` (or ``small``) prints the Flux table of :mod:`benchmarks.flux_t5` instead: a
T5-XXL-shaped ``text_encoder_2`` in bfloat16, promptweights ``a1111`` against sd_embed's
``get_weighted_text_embeddings_flux1``, with T5 passes counted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import promptweights
from promptweights.builder import BuildResult, Request, build, build_many
from promptweights.encoders import TextEncoder
from promptweights.tokens import empty_chunk, equalize, tokenize

SHARED_TOKENIZER = Path(__file__).resolve().parents[1].parent / "shared" / "clip-tokenizer"

_SUBJECT = (
    "a portrait of a young woman with long flowing red hair, wearing an ornate golden dress, "
    "standing in a sunlit meadow full of wildflowers, soft rim lighting, "
)
_STYLE = (
    "highly detailed, intricate, sharp focus, octane render, trending on artstation, "
    "by greg rutkowski and alphonse mucha, cinematic composition, volumetric light, 8k, "
)
_NEGATIVE_LONG = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, "
    "cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, "
    "username, blurry, artist name, deformed, disfigured, mutated hands, poorly drawn face, "
    "extra limbs, ugly, duplicate, morbid, mutilated, out of frame, bad proportions, "
    "cloned face, gross proportions, malformed limbs, missing arms, missing legs, fused fingers"
)

PAIRS: list[tuple[str, str]] = [
    ("a (red:1.3) fox in the [snow], (masterpiece:1.2)", "blurry, (lowres:1.4)"),
    ("a cat sitting on a (wooden:0.8) table, (sunlight:1.1), photo", ""),
    (
        f"(masterpiece:1.2), best quality, {_SUBJECT}{_STYLE}",
        "(worst quality:1.4), " + _NEGATIVE_LONG,
    ),
    (
        f"{_SUBJECT}(dramatic clouds:1.3) BREAK {_STYLE}(film grain:0.7)",
        "(blurry:1.2), [watermark], text",
    ),
    ("a castle on a hill, ((epic)), [[fog]], (river:0.5), sunset", "ugly, (deformed:1.3)"),
    (_SUBJECT * 3 + _STYLE + "(bokeh:1.2)", _NEGATIVE_LONG),
    ("(cyberpunk city:1.2) at night, neon signs, rain, (reflections:1.1)", "(daylight:1.3), sun"),
    (f"{_STYLE}{_SUBJECT}{_STYLE}(oil painting:1.4)", "(photo:1.2), " + _NEGATIVE_LONG),
    ("still life of (apples:1.2) and (pears:0.6) in a bowl", "(bananas:0.5), plastic"),
    ("an astronaut riding a horse on mars, (highly detailed:1.1)", ""),
]

# Prompts as people who use compel (InvokeAI) write them: long, with two or three down-weighted
# words in the positive and often one in the negative. On these compel encodes ~2.8 times the rows
# a per-chunk loop does (the premise: "compel spends ~3x sd_embed's time"), because it
# re-encodes every chunk of the prompt for every word weighted below 1.
DOWNWEIGHT_PAIRS = [
    (
        "masterpiece, best quality, 1girl, solo, long silver hair, (freckles:0.6), blue eyes, "
        "looking at viewer, smile, school uniform, cherry blossoms, bokeh, depth of field, "
        "soft lighting, (detailed face:1.2), wind, petals falling, spring afternoon, park bench, "
        "(lens flare:0.5), sharp focus, highly detailed skin, film grain",
        "(worst quality:1.4), (low quality:1.4), lowres, (monochrome:0.8), bad anatomy, "
        "bad hands, text, watermark",
    ),
    (
        "a cozy reading nook by a rain-streaked window, (warm lamp light:1.2), "
        "stacks of old books, a sleeping ginger cat on a knitted blanket, "
        "(steam rising from a teacup:0.7), "
        "wooden shelves, potted ferns, reflections, dusk, muted colours, "
        "shallow depth of field, 35mm photo, kodak portra 400, soft grain BREAK "
        "interior design magazine, editorial photography, (people:0.3), calm atmosphere, "
        "vignette, high dynamic range, natural textures",
        "(blurry:1.2), oversaturated, cartoon, painting, illustration, lowres, "
        "jpeg artifacts, [text], watermark, signature, deformed",
    ),
    (
        "epic fantasy landscape, towering crystal mountains, a winding river of light, "
        "ancient ruins overgrown with moss, floating islands, (dragons in the distance:0.6), "
        "golden hour, volumetric fog, god rays, birds, lush valley, waterfalls, "
        "(matte painting:1.3), by greg rutkowski, artstation, concept art, ultra wide shot, "
        "intricate details, 8k, cinematic composition, dramatic sky, "
        "storm clouds gathering on the horizon, (rainbow:0.5), reflections in the water, "
        "tiny travellers on a stone bridge, lanterns, snow on the peaks, highly detailed",
        "(worst quality:1.3), lowres, blurry, (people:0.7), modern buildings, cars, text, "
        "watermark, frame, border, oversharpened, noise, chromatic aberration",
    ),
    (
        "product photo of a luxury wristwatch on black marble, (gold accents:1.1), "
        "[water droplets], studio lighting, softbox reflections, soft shadow, macro lens, "
        "(background:0.5), sharp focus, commercial photography, high contrast, minimal",
        "(fingerprints:1.2), dust, scratches, (blurry:1.1), text, logo, cheap plastic",
    ),
    (
        "portrait of an old fisherman, weathered face, deep wrinkles, (grey beard:1.1), "
        "knitted wool hat, (sea spray:0.6), harbour at dawn, fishing boats, seagulls, "
        "rim light, bokeh, 85mm, f/1.8, national geographic, documentary style, "
        "(smile:0.4), kind eyes, rough hands holding a rope, overcast sky, cold colour grading, "
        "film grain, ultra detailed skin texture, photorealistic, award winning photo",
        "(worst quality:1.4), (low quality:1.4), cartoon, anime, 3d render, (makeup:0.6), "
        "smooth skin, plastic, doll, deformed hands, extra fingers, lowres, watermark",
    ),
    (
        "isometric diorama of a tiny cyberpunk noodle shop, (neon signs:1.2), rain, puddles, "
        "steam, a robot chef, (customers:0.6), hanging lanterns, cables and pipes, "
        "graffiti, octane render, tilt shift, soft shadows, pastel palette, "
        "clutter, blender, 3d, cute, highly detailed BREAK night, wet reflections, "
        "(fog:0.6), warm and cold lighting contrast, trash bags, stickers on the walls",
        "(blurry:1.2), lowres, photo, realistic, dark, grainy, text, watermark",
    ),
    (
        "(watercolor:1.2) illustration of a fox in a snowy birch forest, red scarf, "
        "[footprints], loose brush strokes, (paper texture:0.7), soft light, winter morning, "
        "children's book style, whimsical, muted blues and warm orange, snowflakes, "
        "white space, delicate ink lines",
        "(photo:1.3), 3d, dark, harsh shadows, lowres, text, signature, watermark",
    ),
    (
        "a bustling medieval market square at noon, merchants selling fruit and spices, "
        "(colourful awnings:1.2), cobblestone street, a bard playing a lute, children "
        "chasing pigeons, horse cart, timber framed houses, flower boxes, banners, "
        "bright sunlight, crisp shadows, (crowd:0.5), highly detailed, digital painting, "
        "trending on artstation, by craig mullins, warm palette, lively atmosphere BREAK "
        "foreground: baskets of apples and pears, background: a cathedral tower, "
        "(scaffolding:0.6), blue sky with small clouds, distant mountains",
        "(worst quality:1.3), lowres, blurry, modern clothes, cars, power lines, "
        "(deformed faces:1.2), text, watermark, (oversaturated:0.7)",
    ),
]

SETS: dict[str, list[tuple[str, str]]] = {"mixed": PAIRS, "downweights": DOWNWEIGHT_PAIRS}


def make_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    if (SHARED_TOKENIZER / "vocab.json").is_file():
        return CLIPTokenizer(
            str(SHARED_TOKENIZER / "vocab.json"),
            str(SHARED_TOKENIZER / "merges.txt"),
            model_max_length=77,
            pad_token="<|endoftext|>",
        )
    # Without the shared files: a character-level CLIP vocabulary (more tokens per word, same cost).
    chars = [chr(c) for c in range(33, 127)]
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *[c + "</w>" for c in chars]]
    vocab = {t: i for i, t in enumerate(tokens)}
    print("note: ../shared/clip-tokenizer absent, using a character-level vocabulary")
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def make_model(vocab_size: int, tiny: bool = False) -> Any:
    """The SD1.5-shaped CLIP-L tower; ``tiny``: 2 layers of width 64 (smoke tests)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    width, layers = (64, 2) if tiny else (768, 12)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=width // 64,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    model = CLIPTextModel(config).eval()
    with torch.no_grad():
        getattr(model, "text_model", model).final_layer_norm.bias.normal_(0.3, 0.5)
    return model


def make_pipeline(tokenizer: Any, text_encoder: Any) -> Any:
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_encoder.config.hidden_size,
        norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 8),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


class Counter:
    """Counts, with pre-hooks, rows through the model's forward and passes and positions through
    the first layer (a suffix pass runs the layers without the model's forward)."""

    def __init__(self, module: Any) -> None:
        self.calls = 0
        self.rows = 0
        self.positions = 0
        module.register_forward_pre_hook(self._hook, with_kwargs=True)
        tower = getattr(module, "text_model", module)
        tower.encoder.layers[0].layer_norm1.register_forward_pre_hook(self._layer)

    def _hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.rows += int(ids.shape[0])

    def _layer(self, module: Any, args: tuple[Any, ...]) -> None:
        self.calls += 1
        self.positions += args[0].numel() // args[0].shape[-1]

    def reset(self) -> None:
        self.calls = self.rows = self.positions = 0


def fragments(text: str) -> tuple[list[str], list[float]]:
    spans = [
        (t, w) for t, w in promptweights.weighted_spans(text) if not (t == "BREAK" and w == -1)
    ]
    return [t for t, _ in spans] or [""], [w for _, w in spans] or [1.0]


# --- the methods -------------------------------------------------------------------------------


def run_encode_prompt(pipe: Any, pairs: list[tuple[str, str]]) -> list[Any]:
    device = pipe.text_encoder.device
    # As the pipeline's __call__ runs it (encode_prompt itself would record an autograd graph).
    with torch.no_grad():
        return [pipe.encode_prompt(p, device, 1, True, n) for p, n in pairs]


def run_per_chunk_loop(tokenizer: Any, model: Any, pairs: list[tuple[str, str]]) -> list[Any]:
    """sd_embed-style: one call per chunk and per text, then multiply by the weights."""
    out = []
    for p, n in pairs:
        pos, neg = equalize(
            tokenize(tokenizer, promptweights.weighted_spans(p)),
            tokenize(tokenizer, promptweights.weighted_spans(n)),
        )
        embeds = []
        for prompt in (pos, neg):
            chunks = []
            for chunk in prompt.chunks:
                ids = torch.tensor([chunk.ids], device=model.device)
                with torch.no_grad():
                    z = model(ids)[0]
                weights = torch.tensor(chunk.weights, device=z.device, dtype=z.dtype)
                chunks.append(z * weights.reshape(1, -1, 1))
            embeds.append(torch.cat(chunks, dim=1))
        out.append(embeds)
    return out


def run_compel(tokenizer: Any, model: Any, pairs: list[tuple[str, str]]) -> list[Any]:
    from compel.embeddings_provider import EmbeddingsProvider

    provider = EmbeddingsProvider(tokenizer, model, truncate=False)
    out = []
    for p, n in pairs:
        embeds = []
        for text in (p, n):
            frags, weights = fragments(text)
            with torch.no_grad():
                embeds.append(
                    provider.get_embeddings_for_weighted_prompt_fragments(
                        [frags], [weights], device=model.device
                    )
                )
        out.append(embeds)
    return out


def run_promptweights(encoder: TextEncoder, pairs: list[tuple[str, str]], strategy: str) -> Any:
    results = [build(encoder, [[p], [n]], strategy=strategy) for p, n in pairs]
    return results


def run_promptweights_list(
    encoder: TextEncoder, pairs: list[tuple[str, str]], strategy: str
) -> tuple[BuildResult, ...]:
    """All pairs as one request of 2·N groups, as ``encode`` runs a list of prompts."""
    groups = [[text] for pair in pairs for text in pair]
    return build_many(encoder, [Request(groups, strategy)])


def weighting_seconds(encoder: TextEncoder, pairs: list[tuple[str, str]], strategy: str) -> float:
    """Best-of-10 time of the builder's weighting stage per pair, summed over the pairs.

    The encoder is swapped for one that returns random states at once, and torch runs on one thread
    meanwhile, so that the time is the arithmetic alone: on a loaded machine every multi-threaded
    tensor operation can stall for a scheduler time slice, whatever its size.
    """

    def instant(ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        # Masked rows come from here too: the prefix hooks see no pass and fall back to encode.
        width = encoder.model.config.hidden_size
        return torch.randn(ids.shape[0], ids.shape[1], width, device=ids.device) + 0.3, None

    encoder.encode = instant  # type: ignore[method-assign]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return sum(
            min(build(encoder, [[p], [n]], strategy=strategy).seconds["weight"] for _ in range(10))
            for p, n in pairs
        )
    finally:
        torch.set_num_threads(threads)
        del encoder.encode
        encoder.clear_cache()


def outside_tower_seconds(
    encoder: TextEncoder, pairs: list[tuple[str, str]], strategy: str
) -> float:
    """Best-of-10 time of a whole ``build`` call per pair with the tower's forward made instant,
    summed over the pairs: the per-call cost outside the tower's arithmetic (tokenising, planning,
    span mapping, tensor building, caches, weighting), on one thread as ``weighting_seconds``.

    The empty prompt's cache is cleared before each call, so every call pays for its lookups. With
    an instant tower the masked rows run through ``encode`` rather than from their chunk's cached
    prefix (the prefix hooks see no pass), so the prefix cache's own handling is not in this time.
    """

    def instant(ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        width = encoder.model.config.hidden_size
        return torch.randn(ids.shape[0], ids.shape[1], width, device=ids.device) + 0.3, None

    def once(p: str, n: str) -> float:
        encoder.clear_cache()
        start = time.perf_counter()
        build(encoder, [[p], [n]], strategy=strategy)
        return time.perf_counter() - start

    encoder.encode = instant  # type: ignore[method-assign]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return sum(min(once(p, n) for _ in range(10)) for p, n in pairs)
    finally:
        torch.set_num_threads(threads)
        del encoder.encode
        encoder.clear_cache()


def timed(fn: Callable[[], Any], repeat: int, device: torch.device) -> tuple[float, Any]:
    best = float("inf")
    result = None
    for _ in range(repeat):
        _synchronize(device)
        start = time.perf_counter()
        result = fn()
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unweighted_bit_identity(pipe: Any, encoder: TextEncoder, pairs: list[tuple[str, str]]) -> str:
    """How many unweighted texts of at most 75 tokens come out of the one batched ``a1111`` pass
    bit-identical to the pipeline's ``encode_prompt`` (which encodes one text per call)."""
    same = total = 0
    for pair in pairs:
        plain = ["".join(t for t, w in promptweights.weighted_spans(x) if w != -1) for x in pair]
        if any(len(tokenize(encoder.tokenizer, [(x, 1.0)]).chunks) > 1 for x in plain):
            continue
        expected = pipe.encode_prompt(plain[0], encoder.device, 1, True, plain[1])
        result = build(encoder, [[plain[0]], [plain[1]]], strategy="a1111")
        for ours, theirs in zip(result.groups, expected, strict=True):
            total += 1
            same += bool(torch.equal(ours.embeds, theirs))
    return f"{same}/{total}"


Row = tuple[str, float, int, int, float, str]


@dataclass(frozen=True)
class Bound:
    """The equal-output bound of the ``compel`` strategy on one set (:func:`equal_output_bound`).

    Attributes:
        per_pair: seconds, one pass per pair (as the per-pair rows run);
        one_list: seconds, one pass for every pair (as the ``one list`` rows run);
        positions: the positions compel's output depends on, in rows of 77.
    """

    per_pair: float
    one_list: float
    positions: float


def equal_output_bound(
    encoder: TextEncoder, counter: Counter, pairs: list[tuple[str, str]], repeat: int
) -> Bound:
    """The least encoder work that yields compel's exact output, timed.

    compel's output depends on every chunk row, the empty prompt where a weight or padding uses it,
    and, for each word weighted below 1, its masked re-encoding from that word on (the positions
    before it equal the chunk's: the tower is causal). The ``compel`` strategy is run once per pair
    with every masked row started from its chunk's prefix (``share_prefixes=True``) to count those
    positions ``P``; the bound is then one batched pass of the tower over ``k = ⌈P/77⌉`` rows of 77,
    best of ``repeat``, scaled by ``P / 77k`` (the cost of a pass is linear in its positions, less
    than one row apart): per pair for the per-pair rows, and once over every pair for ``one list``.
    """
    per_pair: list[int] = []
    sharing = encoder.share_prefixes
    encoder.share_prefixes = True
    encoder.clear_cache()
    try:
        for p, n in pairs:
            counter.reset()
            build(encoder, [[p], [n]], strategy="compel")
            per_pair.append(counter.positions)
    finally:
        encoder.share_prefixes = sharing
        encoder.clear_cache()
    row = empty_chunk(encoder.window).ids
    seconds: dict[int, float] = {}

    def one_pass(positions: int) -> float:
        k = -(-positions // len(row))
        if k not in seconds:
            ids = torch.tensor([row] * k, device=encoder.device)
            seconds[k] = timed(lambda: encoder.encode(ids), repeat, encoder.device)[0]
        return seconds[k] * positions / (len(row) * k)

    total = sum(per_pair)
    return Bound(sum(one_pass(p) for p in per_pair), one_pass(total), total / len(row))


def print_table(rows: list[Row], *, compel_ran: bool, bound: Bound) -> None:
    """Print one set's table, then the ratios of the targets."""
    loop_time = rows[1][1]
    head = f"{'method':36} {'wall s':>8} {'calls':>6} {'rows':>5} {'pos/77':>7} {'vs loop':>8}"
    print(f"{head}  notes")
    for label, seconds, calls, nrows, positions, note in rows:
        print(
            f"{label:36} {seconds:8.2f} {calls:6d} {nrows:5d} {positions:7.1f} "
            f"{loop_time / seconds:7.2f}×  {note}"
        )
    times = {label: seconds for label, seconds, *_ in rows}
    ours, ours_list = times["promptweights compel"], times["promptweights compel, one list"]
    print(
        f"\nequal-output bound (compel's exact output): {bound.per_pair:.2f} s per pair, "
        f"{bound.one_list:.2f} s as one list: one pass over exactly the positions compel's output "
        f"depends on, {bound.positions:.1f} rows of 77 (every chunk row, the empty prompt where "
        "used, each masked row from its word on)"
    )
    print(
        f"promptweights compel / bound: {ours / bound.per_pair:.2f}× per pair, "
        f"{ours_list / bound.one_list:.2f}× as one list (target ≤ 1.15×)"
    )
    if compel_ran:
        theirs = times["compel 2.5.1"]
        print(f"compel 2.5.1 vs per-chunk loop: {theirs / loop_time:.2f}× the time")
        print(
            f"promptweights compel vs compel 2.5.1: {theirs / ours:.2f}× faster (target ≥ 1.5×); "
            f"the most equal output allows: {theirs / bound.per_pair:.2f}× "
            "(compel 2.5.1 / equal-output bound)"
        )
        print(
            f"compel 2.5.1 / promptweights a1111: {theirs / times['promptweights a1111']:.2f}× "
            "(printed as the bound before: the chunk rows alone, less work than compel's output "
            "needs, so no method with compel's output can reach it)"
        )


def run_set(
    name: str,
    pairs: list[tuple[str, str]],
    pipe: Any,
    encoder: TextEncoder,
    counter: Counter,
    args: argparse.Namespace,
) -> list[Row]:
    """Time every method on one set of prompt pairs and print its table."""
    tokenizer, model = encoder.tokenizer, encoder.model
    device = encoder.device
    chunks = [
        [
            len(t.chunks)
            for t in (tokenize(tokenizer, promptweights.weighted_spans(x)) for x in pair)
        ]
        for pair in pairs
    ]
    downweighted = sum(
        1 for pair in pairs for x in pair for _, w in promptweights.weighted_spans(x) if 0 <= w < 1
    )
    # The empty window pads a shorter text of a pair; it is encoded once (then cached).
    padded = any(a != b for a, b in chunks)
    minimum = sum(a + b for a, b in chunks) + padded
    print(f"## set '{name}': {len(pairs)} prompt pairs")
    print(f"chunks (positive, negative): {chunks}; words weighted below 1: {downweighted}")
    empty = ", plus the empty chunk once" if padded else ""
    print(f"A1111 minimum rows: {minimum} (chunks of positive + negative{empty})\n")

    rows: list[Row] = []

    def measure(label: str, fn: Callable[[], Any]) -> Any:
        counter.reset()
        seconds, result = timed(fn, args.repeat, device)
        per_run = (counter.calls // args.repeat, counter.rows // args.repeat)
        rows.append((label, seconds, *per_run, counter.positions / args.repeat / 77, ""))
        return result

    measure("encode_prompt (no weights, ≤77)", lambda: run_encode_prompt(pipe, pairs))
    measure("per-chunk loop (sd_embed-like)", lambda: run_per_chunk_loop(tokenizer, model, pairs))
    compel_out = None
    if not args.skip_compel:
        compel_out = measure("compel 2.5.1", lambda: run_compel(tokenizer, model, pairs))
    for strategy in ("a1111", "a1111-no-norm", "compel"):

        def run(strategy: str = strategy) -> Any:
            encoder.clear_cache()  # every run pays for its one empty chunk
            return run_promptweights(encoder, pairs, strategy)

        results = measure(f"promptweights {strategy}", run)
        encode = sum(r.seconds["encode"] for r in results)
        weight = sum(r.seconds["weight"] for r in results)
        arithmetic = weighting_seconds(encoder, pairs, strategy)
        note = (
            f"weighting {100 * weight / encode:.2f}% of encoder time in this run, "
            f"{100 * arithmetic / encode:.3f}% best-of-10 on one thread; outside the tower "
            f"{1000 * outside_tower_seconds(encoder, pairs, strategy) / len(pairs):.2f} ms a call"
        )
        if strategy == "compel" and compel_out is not None:
            diffs = [
                float((ours.embeds - theirs).abs().max())
                for result, pair_out, pair_chunks in zip(results, compel_out, chunks, strict=True)
                if max(pair_chunks) == 1
                for ours, theirs in zip(result.groups, pair_out, strict=True)
            ]
            if diffs:
                note += f"; max |Δ| vs compel {max(diffs):.1e} on {len(diffs)} texts ≤75 tokens"
        rows[-1] = (*rows[-1][:5], note)
    for strategy in ("a1111", "compel"):

        def run_list(strategy: str = strategy) -> Any:
            encoder.clear_cache()
            return run_promptweights_list(encoder, pairs, strategy)

        measure(f"promptweights {strategy}, one list", run_list)
        rows[-1] = (*rows[-1][:5], "every pair in one pass: encode(pipe, [p1, p2…], [n1, n2…])")

    bound = equal_output_bound(encoder, counter, pairs, args.repeat)
    print_table(rows, compel_ran=compel_out is not None, bound=bound)
    identical = unweighted_bit_identity(pipe, encoder, pairs)
    print(f"unweighted texts ≤75 tokens bit-identical to encode_prompt, one pass: {identical}")
    print()
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--set",
        choices=[*SETS, "all"],
        default=None,
        help="which prompt pairs (default: all; with --t5: mixed)",
    )
    parser.add_argument("--pairs", type=int, default=0, help="only the first N pairs of each set")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per method")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default=None,
        help="the text model's dtype (default: float32; with --t5: bfloat16)",
    )
    parser.add_argument(
        "--t5",
        choices=["xxl", "small"],
        default="",
        help="run the Flux table instead: T5-XXL-shaped (~10 GB in bfloat16) or small "
        "(benchmarks/flux_t5.py)",
    )
    parser.add_argument("--window", type=int, default=512, help="with --t5: the T5 window")
    parser.add_argument("--skip-compel", action="store_true", help="leave compel out (slow)")
    parser.add_argument("--memory", action="store_true", help="measure peak memory too")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke tests
    parser.add_argument("--memory-child", default="", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.t5:
        from benchmarks import flux_t5

        args.set = args.set or "mixed"
        args.dtype = args.dtype or "bfloat16"
        flux_t5.run(args)
        return
    args.set = args.set or "all"
    args.dtype = args.dtype or "float32"
    if args.threads:
        torch.set_num_threads(args.threads)
    sets = SETS if args.set == "all" else {args.set: SETS[args.set]}
    sets = {name: pairs[: args.pairs or None] for name, pairs in sets.items()}
    first_set, first_pairs = next(iter(sets.items()))  # what --memory measures

    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer), tiny=args.tiny).to(args.device, getattr(torch, args.dtype))
    pipe = make_pipeline(tokenizer, model)
    encoder = TextEncoder.clip(model, tokenizer)
    counter = Counter(model)
    with torch.no_grad():
        model(torch.tensor([empty_chunk(encoder.window).ids], device=model.device))  # warm-up
    for strategy in ("a1111", "a1111-no-norm", "compel"):
        build(encoder, [["a (b:1.1) [c]"], ["d"]], strategy=strategy)  # warm-up

    if args.memory_child:
        memory_child(args.memory_child, pipe, tokenizer, model, encoder, first_pairs)
        return

    device = args.device
    if device.startswith("cuda"):
        device = f"{device} ({torch.cuda.get_device_name()})"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, {args.dtype}\n")
    for name, pairs in sets.items():
        run_set(name, pairs, pipe, encoder, counter, args)

    if args.memory:
        what = "GPU memory allocated" if args.device.startswith("cuda") else "resident memory"
        print(
            f"peak {what} on set '{first_set}' (one subprocess per method; "
            "the model is ~470 MiB of it in float32):"
        )
        peaks = {}
        for method in ("encode_prompt", "promptweights-a1111"):
            command = [sys.executable, "-m", "benchmarks.encode", "--set", first_set]
            command += ["--pairs", str(len(first_pairs)), "--memory-child", method]
            command += ["--device", args.device, "--dtype", args.dtype]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            peak, rise = map(float, out.stdout.strip().splitlines()[-1].split())
            peaks[method] = (peak, rise)
            print(f"  {method:24} peak {peak:8.1f} MiB, rise while encoding {rise:6.1f} MiB")
        ratio = peaks["promptweights-a1111"][0] / peaks["encode_prompt"][0]
        print(f"  ratio promptweights / one-text-per-call: {ratio:.3f}")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_child(
    method: str, pipe: Any, tokenizer: Any, model: Any, encoder: TextEncoder, pairs: Any
) -> None:
    """Encode the rows once with ``method``; print peak RSS and its rise above the start, in MiB."""
    cuda = model.device.type == "cuda"
    if cuda:  # the device's allocator, not the process's resident memory
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated() // 1024
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        start = _status_kib("VmRSS")
    if method == "encode_prompt":
        # The rows the builder encodes, one text per call as the pipeline does.
        for p, n in pairs:
            for text in (p, n):
                for chunk in tokenize(tokenizer, promptweights.weighted_spans(text)).chunks:
                    with torch.no_grad():
                        model(torch.tensor([chunk.ids], device=model.device))
    else:
        encoder.clear_cache()
        run_promptweights(encoder, pairs, "a1111")
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() // 1024
    else:
        peak = _status_kib("VmHWM")
    print(peak / 1024, (peak - start) / 1024)


if __name__ == "__main__":
    main()
