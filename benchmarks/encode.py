"""Encoding benchmark: promptweights' one batched pass against how peers encode weighted prompts.

Run from the repository root::

    python -m benchmarks.encode            # timing table
    python -m benchmarks.encode --memory   # also peak resident memory, one subprocess per method

An SD1.5-shaped CLIP-L text tower (12 layers, width 768) with random weights
(``torch.manual_seed(0)``) gives the real cost of a pass without a download; the tokenizer is the
real CLIP BPE from ``../shared/clip-tokenizer`` when present. For each prompt pair below it runs:

* ``encode_prompt``: the pipeline's own ``StableDiffusionPipeline.encode_prompt`` on the raw text
  (no weighting, truncated at 77 tokens: the floor, not a competitor);
* ``per-chunk loop``: what sd_embed's ``get_weighted_text_embeddings_sd15`` does — one encoder call
  per 77-token chunk, positive and negative separately, then multiply;
* ``compel 2.5.1``: ``EmbeddingsProvider`` (``truncate=False``) on the same weighted fragments;
* promptweights ``build`` with the ``a1111``, ``a1111-no-norm`` and ``compel`` strategies.

Columns: wall time, passes through the encoder layers (``calls``), rows run in full through the
model (77-token sequences), ``pos/77``: every position run through the layers, in rows of 77 (a
masked re-encoding that promptweights starts from its chunk's cached prefix runs only its suffix, in
a second pass), and for promptweights the share of the time spent in the weighting arithmetic. The
``compel`` strategy's output is compared with compel's where compel chunks like A1111 (prompts of
at most 75 tokens).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import promptweights
from promptweights.builder import build
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


def make_model(vocab_size: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
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
        cross_attention_dim=768,
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
    return [pipe.encode_prompt(p, "cpu", 1, True, n) for p, n in pairs]


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
                ids = torch.tensor([chunk.ids])
                with torch.no_grad():
                    z = model(ids)[0]
                chunks.append(z * torch.tensor(chunk.weights).reshape(1, -1, 1))
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
                    provider.get_embeddings_for_weighted_prompt_fragments([frags], [weights])
                )
        out.append(embeds)
    return out


def run_promptweights(encoder: TextEncoder, pairs: list[tuple[str, str]], strategy: str) -> Any:
    results = [build(encoder, [[p], [n]], strategy=strategy) for p, n in pairs]
    return results


def weighting_seconds(encoder: TextEncoder, pairs: list[tuple[str, str]], strategy: str) -> float:
    """Best-of-10 time of the builder's weighting stage per pair, summed over the pairs.

    The encoder is swapped for one that returns random states at once, and torch runs on one thread
    meanwhile, so that the time is the arithmetic alone: on a loaded machine every multi-threaded
    tensor operation can stall for a scheduler time slice, whatever its size.
    """

    def instant(ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        # Masked rows come from here too: the prefix hooks see no pass and fall back to encode.
        return torch.randn(ids.shape[0], ids.shape[1], 768) + 0.3, None

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


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=len(PAIRS), help="how many prompt pairs")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per method")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--skip-compel", action="store_true", help="leave compel out (slow)")
    parser.add_argument("--memory", action="store_true", help="measure peak memory too")
    parser.add_argument("--memory-child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = PAIRS[: args.pairs]

    tokenizer = make_tokenizer()
    model = make_model(len(tokenizer))
    pipe = make_pipeline(tokenizer, model)
    encoder = TextEncoder.clip(model, tokenizer)
    counter = Counter(model)
    with torch.no_grad():
        model(torch.tensor([empty_chunk(encoder.window).ids]))  # warm-up
    for strategy in ("a1111", "a1111-no-norm", "compel"):
        build(encoder, [["a (b:1.1) [c]"], ["d"]], strategy=strategy)  # warm-up

    if args.memory_child:
        memory_child(args.memory_child, pipe, tokenizer, model, encoder, pairs)
        return

    chunks = [
        [
            len(t.chunks)
            for t in (tokenize(tokenizer, promptweights.weighted_spans(x)) for x in pair)
        ]
        for pair in pairs
    ]
    minimum = sum(a + b for a, b in chunks) + 1
    print(
        f"{len(pairs)} prompt pairs, chunks (positive, negative): {chunks}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"A1111 minimum rows: {minimum} (chunks of positive + negative, plus one empty chunk)\n")

    rows: list[tuple[str, float, int, int, float, str]] = []

    def measure(name: str, fn: Callable[[], Any], note: str = "") -> Any:
        counter.reset()
        seconds, result = timed(fn, args.repeat)
        per_run = (counter.calls // args.repeat, counter.rows // args.repeat)
        rows.append((name, seconds, *per_run, counter.positions / args.repeat / 77, note))
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
            f"{100 * arithmetic / encode:.3f}% best-of-10 on one thread"
        )
        if strategy == "compel" and compel_out is not None:
            diffs = [
                float((ours.embeds - theirs).abs().max())
                for result, pair_out, pair_chunks in zip(results, compel_out, chunks, strict=True)
                if max(pair_chunks) == 1
                for ours, theirs in zip(result.groups, pair_out, strict=True)
            ]
            note += f"; max |Δ| vs compel {max(diffs):.1e} on {len(diffs)} texts ≤75 tokens"
        rows[-1] = (*rows[-1][:5], note)

    loop_time = rows[1][1]
    head = f"{'method':36} {'wall s':>8} {'calls':>6} {'rows':>5} {'pos/77':>7} {'vs loop':>8}"
    print(f"{head}  notes")
    for name, seconds, calls, nrows, positions, note in rows:
        print(
            f"{name:36} {seconds:8.2f} {calls:6d} {nrows:5d} {positions:7.1f} "
            f"{loop_time / seconds:7.2f}×  {note}"
        )
    if compel_out is not None:
        ours = next(r for r in rows if r[0] == "promptweights compel")[1]
        print(f"\npromptweights compel vs compel 2.5.1: {rows[2][1] / ours:.2f}× faster")

    if args.memory:
        print("\npeak resident memory (one subprocess per method; the model is ~470 MiB of it):")
        peaks = {}
        for method in ("encode_prompt", "promptweights-a1111"):
            command = [sys.executable, "-m", "benchmarks.encode", "--pairs", str(len(pairs))]
            out = subprocess.run(
                [*command, "--memory-child", method], capture_output=True, text=True, check=True
            )
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
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    start = _status_kib("VmRSS")
    if method == "encode_prompt":
        # The rows the builder encodes, one text per call as the pipeline does.
        for p, n in pairs:
            for text in (p, n):
                for chunk in tokenize(tokenizer, promptweights.weighted_spans(text)).chunks:
                    with torch.no_grad():
                        model(torch.tensor([chunk.ids]))
    else:
        run_promptweights(encoder, pairs, "a1111")
    peak = _status_kib("VmHWM")
    print(peak / 1024, (peak - start) / 1024)


if __name__ == "__main__":
    main()
