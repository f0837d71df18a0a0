"""The Flux row of the encoding benchmark (issue 17): a T5-XXL-shaped encoder, promptweights
``a1111`` against sd_embed's ``get_weighted_text_embeddings_flux1``.

Run from the repository root (``python -m benchmarks.encode --t5 xxl`` runs the same)::

    python -m benchmarks.flux_t5 --t5 xxl     # 24 layers, width 4096: ~10 GB in bfloat16
    python -m benchmarks.flux_t5 --t5 small   # 2 layers, width 64 (the smoke test)

The models have random weights (``torch.manual_seed(0)``): a T5 v1.1 encoder shaped as Flux's
``text_encoder_2`` (T5-XXL: ``d_model`` 4096, ``d_ff`` 10240, 64 heads of 64, 24 layers,
gated-GELU) and an SD1.5-shaped CLIP-L for the pooled vector, both in bfloat16 by default: the
T5 is 4.8 B parameters, 19 GB in float32, which does not fit beside other work on a 24 GB machine
(bfloat16 is also what Flux pipelines run in). The weights are created in bfloat16 on the meta
device and initialised in place: float32 copies never exist.

Tokenizers: the real CLIP BPE from ``../shared/clip-tokenizer`` when present, and a T5
(SentencePiece Unigram) tokenizer over the same word pieces (``▁word`` for each of CLIP's whole
words, so about as many tokens per word as T5's own); without the shared files, character-level
vocabularies for both.

Prompts: the positive prompts of ``benchmarks/encode.py``'s sets (Flux.1-dev has no negative
prompt), in the pipeline's T5 window (``max_sequence_length`` 512, Flux.1-dev's). Methods:

* ``encode_prompt``: ``FluxPipeline.encode_prompt`` on the raw text, one prompt per call (no
  weights: the pipeline's own cost of the same window);
* ``sd_embed flux1``: :func:`sd_embed_flux1`, an independent re-implementation of sd_embed's
  ``get_weighted_text_embeddings_flux1`` from its documented behaviour (``peer-libraries.md``
  §4.3 and §5): one prompt per call, each weighted fragment tokenised for T5 *with* special tokens
  (an EOS after every fragment), no padding to 512, one un-chunked T5 pass, then a raw multiply;
  CLIP-L pooled = mean of the pooled outputs of every 77-token chunk (one pass each);
* promptweights ``a1111``: ``promptweights.diffusers.encode(pipe, prompt)`` per prompt, and once
  for the list of every prompt (``one list``), each run from a cold empty-prompt cache;
* the equal-work rows, ``window per prompt``: ``encode_prompt`` and promptweights ``a1111`` with
  the pipeline's own ``max_sequence_length`` set, per prompt, to the smallest window that holds
  its text (:func:`smallest_window`: the T5 tokens of the prompt's text without its weighting
  syntax, EOS included), the value a user would pass to run the text's own tokens, as sd_embed
  does, with an output that is still exactly the pipeline's for that window (``encode_prompt``
  gets the same texts without their weights).

A forward-hook counter counts T5 passes, rows and positions, and CLIP passes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from benchmarks._a1111_reference import parse_prompt_attention

#: T5 v1.1 shapes: Flux's text_encoder_2 (T5-XXL) and a small one for the smoke test.
T5_SHAPES: dict[str, dict[str, int]] = {
    "xxl": {"d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24},
    "small": {"d_model": 64, "d_ff": 160, "d_kv": 16, "num_heads": 4, "num_layers": 2},
}

#: Flux.1-dev's T5 window (``FluxPipeline``'s ``max_sequence_length`` default).
FLUX_DEV_WINDOW = 512


def make_t5_tokenizer(clip_tokenizer: Any, length: int = FLUX_DEV_WINDOW) -> Any:
    """A T5 Unigram tokenizer (pad 0, EOS 1, no BOS) over the CLIP tokenizer's word pieces.

    Every piece scores the same, so a word becomes the fewest pieces: whole words where CLIP has
    them (``▁word``), else a word-initial piece and continuations, as SentencePiece splits them.
    """
    from transformers import T5Tokenizer

    pieces: dict[str, float] = {}
    for token in clip_tokenizer.get_vocab():
        if token.startswith("<|"):
            continue
        word = token.removesuffix("</w>")
        pieces.setdefault("▁" + word, -1.0)
        pieces.setdefault(word, -1.0)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0), *pieces.items()]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=length)


def make_t5_model(vocab_size: int, shape: str, dtype: torch.dtype, device: str = "cpu") -> Any:
    """A T5 v1.1 encoder of ``T5_SHAPES[shape]`` with random weights, created in ``dtype``.

    The modules are built on the meta device with ``dtype`` as the default, given storage with
    ``to_empty`` and initialised by transformers' own T5 initialisation, in place: no float32 copy
    of the weights is ever made.
    """
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        feed_forward_proj="gated-gelu",  # T5 v1.1, as Flux's text_encoder_2
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        **T5_SHAPES[shape],
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = T5EncoderModel(config)
    finally:
        torch.set_default_dtype(previous)
    model = model.to_empty(device=device)
    torch.manual_seed(0)
    with torch.no_grad():
        model.apply(model._init_weights)
    return model.eval()


def make_flux_pipeline(tokenizer: Any, clip: Any, tokenizer_2: Any, t5: Any) -> Any:
    """A ``FluxPipeline`` around the two text encoders, with a tiny transformer and VAE (only the
    text encoders run here)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )

    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=t5.config.d_model,
        pooled_projection_dim=clip.config.hidden_size,
        axes_dims_rope=[4, 4, 8],
    )
    vae = AutoencoderKL(
        block_out_channels=(4,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=1,
        norm_num_groups=2,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=clip,
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


# --- sd_embed's Flux function, re-implemented ----------------------------------------------------


def sd_embed_fragments(text: str) -> list[tuple[str, float]]:
    """A1111's emphasis parse, as sd_embed runs it (an empty prompt becomes the word "empty";
    ``BREAK`` stays a fragment of weight -1, as in sd_embed)."""
    return [(str(t), float(w)) for t, w in parse_prompt_attention(text or "empty")]


def sd_embed_t5_tokens(tokenizer: Any, text: str) -> tuple[list[int], list[float]]:
    """Each fragment tokenised with special tokens (so each ends with EOS), concatenated."""
    ids: list[int] = []
    weights: list[float] = []
    for fragment, weight in sd_embed_fragments(text):
        tokens = tokenizer(fragment, truncation=False, add_special_tokens=True).input_ids
        ids += tokens
        weights += [weight] * len(tokens)
    return ids, weights


def sd_embed_clip_chunks(tokenizer: Any, text: str) -> list[list[int]]:
    """The CLIP ids of every fragment without BOS/EOS, cut every 75 into ``[BOS] 75 [EOS]`` rows;
    the last one filled with EOS to 77 (``pad_last_block=True``)."""
    ids: list[int] = []
    for fragment, _ in sd_embed_fragments(text):
        ids += tokenizer(fragment, truncation=False).input_ids[1:-1]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    rows = [[bos, *ids[i : i + 75], eos] for i in range(0, len(ids) - len(ids) % 75, 75)]
    rest = ids[len(ids) - len(ids) % 75 :]
    if rest:
        rows.append([bos, *rest, *[eos] * (75 - len(rest)), eos])
    return rows


def sd_embed_flux1(pipe: Any, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """sd_embed's ``get_weighted_text_embeddings_flux1(pipe, prompt)``: ``(t5 embeds, pooled)``.

    CLIP-L runs once per 77-token chunk and the pooled vector is their mean; T5 runs once on the
    whole token list (no padding, no truncation, no mask), then each position is multiplied by its
    weight.
    """
    device = pipe.text_encoder.device
    pooled = []
    for row in sd_embed_clip_chunks(pipe.tokenizer, prompt):
        with torch.no_grad():
            out = pipe.text_encoder(torch.tensor([row], device=device), output_hidden_states=False)
        pooled.append(out.pooler_output.squeeze(0))
    mean = torch.stack(pooled).mean(dim=0, keepdim=True).to(pipe.text_encoder.dtype)
    ids, weights = sd_embed_t5_tokens(pipe.tokenizer_2, prompt)
    with torch.no_grad():
        z = pipe.text_encoder_2(torch.tensor([ids], device=pipe.text_encoder_2.device))[0]
    scale = torch.tensor(weights, dtype=z.dtype, device=z.device)
    return z * scale.reshape(1, -1, 1), mean


def smallest_window(pipe: Any, prompt: str) -> int:
    """The smallest ``max_sequence_length`` that holds ``prompt`` on ``pipe``'s T5: the tokens of
    its text without the weighting syntax (``promptweights.weighted_spans``; ``BREAK`` dropped, as
    on an unchunked T5), with the EOS; what a user passes to encode no padding."""
    return len(pipe.tokenizer_2(plain_text(prompt), truncation=False).input_ids)


def plain_text(prompt: str) -> str:
    """``prompt``'s text without its weighting syntax and ``BREAK`` s."""
    from promptweights import weighted_spans

    return "".join(t for t, w in weighted_spans(prompt) if w != -1)


# --- measuring -----------------------------------------------------------------------------------


class T5Counter:
    """Forward-hook counts: T5 passes (through its first block), rows and positions; CLIP passes."""

    def __init__(self, t5: Any, clip: Any) -> None:
        self.passes = self.rows = self.positions = self.clip_passes = 0
        self.device: torch.device = t5.device
        t5.register_forward_pre_hook(self._rows, with_kwargs=True)
        t5.encoder.block[0].register_forward_pre_hook(self._block, with_kwargs=True)
        clip.register_forward_pre_hook(self._clip)

    def _rows(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.rows += int(ids.shape[0])

    def _block(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        self.passes += 1
        self.positions += hidden.numel() // hidden.shape[-1]

    def _clip(self, module: Any, args: tuple[Any, ...]) -> None:
        self.clip_passes += 1

    def reset(self) -> None:
        self.passes = self.rows = self.positions = self.clip_passes = 0


Row = tuple[str, float, int, int, int, int]


def measure(label: str, fn: Callable[[], Any], counter: T5Counter, repeat: int) -> tuple[Row, Any]:
    """Best-of-``repeat`` wall time of ``fn`` and its per-run counts."""
    best, result = float("inf"), None
    counter.reset()
    device = counter.device
    for _ in range(repeat):
        _synchronize(device)
        start = time.perf_counter()
        result = fn()
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    counts = [
        c // repeat for c in (counter.passes, counter.rows, counter.positions, counter.clip_passes)
    ]
    return (label, best, *counts), result  # type: ignore[return-value]


def run_table(pipe: Any, prompts: Sequence[str], repeat: int, window: int) -> list[Row]:
    """Time every method on ``prompts`` and print the table and the target's ratio."""
    from promptweights.diffusers import encode
    from promptweights.encoders import forget

    counter = T5Counter(pipe.text_encoder_2, pipe.text_encoder)
    device = pipe.text_encoder_2.device

    def cold() -> None:  # every run pays for its empty window, as a first call does
        forget(pipe.text_encoder)
        forget(pipe.text_encoder_2)

    def ours(batch: Sequence[str] | str) -> Any:
        return encode(pipe, batch, max_sequence_length=window)

    def plain() -> list[Any]:
        # As the pipeline's __call__ runs it: FluxPipeline.encode_prompt is not no_grad itself.
        with torch.no_grad():
            return [
                pipe.encode_prompt(p, None, device=device, max_sequence_length=window)
                for p in prompts
            ]

    def ours_each() -> list[Any]:
        cold()
        return [ours(p) for p in prompts]

    def ours_list() -> Any:
        cold()
        return ours(list(prompts))

    fitted = [min(window, smallest_window(pipe, p)) for p in prompts]

    texts = [plain_text(p) for p in prompts]

    def plain_fitted() -> list[Any]:  # the same texts without their weights, the same windows
        with torch.no_grad():
            return [
                pipe.encode_prompt(t, None, device=device, max_sequence_length=n)
                for t, n in zip(texts, fitted, strict=True)
            ]

    def ours_fitted() -> list[Any]:
        cold()
        return [
            encode(pipe, p, max_sequence_length=n) for p, n in zip(prompts, fitted, strict=True)
        ]

    methods: list[tuple[str, Callable[[], Any]]] = [
        ("encode_prompt (no weights)", plain),
        ("sd_embed flux1 (re-implemented)", lambda: [sd_embed_flux1(pipe, p) for p in prompts]),
        ("promptweights a1111", ours_each),
        ("promptweights a1111, one list", ours_list),
        ("encode_prompt, window per prompt", plain_fitted),
        (FITTED, ours_fitted),
    ]
    rows = [measure(label, fn, counter, repeat)[0] for label, fn in methods]
    print_table(rows)
    lengths = [len(sd_embed_t5_tokens(pipe.tokenizer_2, p)[0]) for p in prompts]
    print(
        f"sd_embed's T5 sequences: {min(lengths)}–{max(lengths)} tokens "
        f"({sum(lengths)} in all) against the pipeline's {window}-token window per prompt; "
        f"the smallest windows that hold each text: {min(fitted)}–{max(fitted)} "
        f"({sum(fitted)} in all)"
    )
    return rows


#: The equal-work row: ``max_sequence_length`` per prompt, :func:`smallest_window`.
FITTED = "promptweights a1111, window per prompt"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def print_table(rows: list[Row]) -> None:
    theirs = rows[1][1]
    head = f"{'method':38} {'wall s':>8} {'T5 passes':>9} {'T5 rows':>7} {'T5 pos':>7} {'CLIP':>5}"
    print(f"{head} {'vs sd_embed':>11}")
    for label, seconds, passes, nrows, positions, clip in rows:
        print(
            f"{label:38} {seconds:8.2f} {passes:9d} {nrows:7d} {positions:7d} {clip:5d} "
            f"{theirs / seconds:10.2f}×"
        )
    times = {row[0]: row for row in rows}
    for label in ("promptweights a1111", "promptweights a1111, one list", FITTED):
        ours = times[label]
        print(
            f"{label} vs sd_embed flux1: {theirs / ours[1]:.2f}× faster (target ≥ 1.3×), "
            f"T5 passes {ours[2]} vs {rows[1][2]}, positions {ours[4]} vs {rows[1][4]}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    from benchmarks.encode import SETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--t5", choices=sorted(T5_SHAPES), default="xxl", help="T5 shape")
    parser.add_argument(
        "--set", choices=[*SETS, "all"], default="mixed", help="whose positives (default: mixed)"
    )
    parser.add_argument("--pairs", type=int, default=0, help="only the first N prompts")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per method")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--window", type=int, default=FLUX_DEV_WINDOW, help="T5 window (512)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    args = parser.parse_args(argv)
    run(args)


def run(args: argparse.Namespace) -> None:
    """Build the models and print the Flux table (``args``: t5, set, pairs, repeat, threads,
    dtype, window, device)."""
    from benchmarks.encode import SETS, make_model, make_tokenizer

    device = getattr(args, "device", "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    names = list(SETS) if args.set == "all" else [args.set]
    prompts = [p for name in names for p, _ in SETS[name]][: args.pairs or None]
    tokenizer = make_tokenizer()
    tokenizer_2 = make_t5_tokenizer(tokenizer, args.window)
    start = time.perf_counter()
    t5 = make_t5_model(len(tokenizer_2), args.t5, dtype, device)
    _synchronize(t5.device)
    built = time.perf_counter() - start
    clip = make_model(len(tokenizer), tiny=args.t5 == "small").to(device, dtype)
    pipe = make_flux_pipeline(tokenizer, clip, tokenizer_2, t5).to(device)
    if device.startswith("cuda"):
        device = f"{device} ({torch.cuda.get_device_name()})"
    params = sum(p.numel() for p in t5.parameters()) / 1e9
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}; T5 '{args.t5}' "
        f"({t5.config.num_layers} layers, width {t5.config.d_model}, {params:.2f} B parameters, "
        f"{args.dtype}, built in {built:.0f} s), CLIP-L-shaped pooled tower, {args.dtype}"
    )
    print(f"## Flux.1-dev: {len(prompts)} prompts of set {args.set!r}, T5 window {args.window}\n")
    with torch.no_grad():  # warm-up: one short and one full-window pass
        t5(torch.ones(1, 8, dtype=torch.long, device=t5.device))
        pipe.encode_prompt("warm-up", None, max_sequence_length=args.window)
    run_table(pipe, prompts, args.repeat, args.window)


if __name__ == "__main__":
    main()
