"""The parse benchmark and its corpus still run (on a handful of prompts; no timing assertions)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from benchmarks import corpus
from benchmarks import parse as bench
from benchmarks._a1111_reference import parse_prompt_attention


def test_corpus_is_deterministic_and_realistic() -> None:
    first = corpus.generate(corpus.DEFAULT_SIZE)
    assert first == corpus.generate(corpus.DEFAULT_SIZE)
    assert corpus.generate(50, seed=1) != corpus.generate(50, seed=2)
    assert len(first) >= 500
    assert len(set(first)) == len(first)
    info = corpus.stats(first)
    assert info["min_chars"] >= 50
    assert info["max_chars"] <= 1500
    assert 250 <= info["mean_chars"] <= 350
    for construct in ("lora", "braces", "break", "and", "alternation"):
        assert info[construct] > 0, construct


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
        ("(a[b)c]", [["a", 1.1], ["b", 1.0], ["c", 0.9090909090909091]]),
        ("[(a])", [["a", 1.0]]),
        ("(((a:1.3))", [["a", 1.5730000000000004]]),
        ("\\a", [["a", 1.0]]),
        ("(a\\:1.5)", [["a", 1.5]]),
        ("(a:1e2)", [["a:1e2", 1.1]]),
        ("(a BREAK b)", [["a", 1.1], ["BREAK", -1.1], ["b", 1.1]]),
        ("", [["", 1.0]]),
    ],
)
def test_reference_parser_reproduces_a1111(text: str, expected: list[list[object]]) -> None:
    # Outputs of the real function, from a1111-behaviour.md §3.2 and §3.4.
    assert parse_prompt_attention(text) == expected


def test_reference_parser_raises_where_a1111_raises() -> None:
    with pytest.raises(ValueError, match="could not convert"):
        parse_prompt_attention("(a:1.2.3)")


def test_benchmark_functions_run_on_a_few_prompts() -> None:
    texts = corpus.generate(5)
    for _, function in bench.BENCHMARKS:
        for text in texts:
            function(text)
    rows = bench.corpus_rows(texts, repeat=1)
    assert rows[0].ratio == 1.0
    assert len(rows) == 2 * len(bench.BENCHMARKS) - 1
    lines = bench.linearity_rows(texts, (1_000, 3_000))
    assert len(lines) == 2 * len(bench.BENCHMARKS)
    table = bench.markdown(rows, unit="µs/prompt", ratio_header="× A1111 regex")
    assert table.count("\n") == len(rows) + 1


def test_big_prompt_has_the_requested_size() -> None:
    assert len(bench.big_prompt(corpus.generate(5), 12_345)) == 12_345


def test_main_prints_markdown_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--prompts", "5", "--repeat", "1", "--sizes", "500", "1000"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\| `parse\(\)` \| [\d,.]+ \| [\d.]+× \|$", out, re.MULTILINE)
    assert "— 1 kB" in out
    assert re.search(
        r"^\| `weighted_spans` novelai, `\{\{…\}\}` — 1 kB \| [\d,.]+ \| [\d.]+× \|$", out, re.M
    )


def test_nesting_rows_compare_each_dialect_to_a1111() -> None:
    rows = bench.nesting_rows((1_000, 2_000))
    assert len(rows) == 2 * len(bench.NESTING)
    assert [row.ratio for row in rows[:: len(bench.NESTING)]] == [1.0, 1.0]


def test_encode_benchmark_prints_a_table_per_set(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("compel")
    from benchmarks import encode

    encode.main(["--tiny", "--pairs", "2", "--threads", "1"])
    out = capsys.readouterr().out
    for name in encode.SETS:
        assert f"## set '{name}': 2 prompt pairs" in out
    labels = ("per-chunk loop (sd_embed-like)", "compel 2.5.1", "promptweights compel")
    for label in labels:
        rows = re.findall(rf"^{re.escape(label)} +[\d.]+ +\d+ +\d+ ", out, re.MULTILINE)
        assert len(rows) == len(encode.SETS), label
    # The equal-output bound counts more positions than the chunk rows (a1111) and no more than
    # the compel strategy computes; the former ratio is still printed, labelled as what it is.
    bounds = re.findall(r"as one list: one pass over .*?, ([\d.]+) rows of 77", out)
    assert len(bounds) == len(encode.SETS)
    for name, bound in zip(encode.SETS, bounds, strict=True):
        table = out.split(f"## set '{name}'")[1]
        pos = {
            label: float(
                re.search(rf"^{re.escape(label)} +[\d.]+ +\d+ +\d+ +([\d.]+)", table, re.M)[1]
            )  # type: ignore[index]
            for label in ("promptweights a1111", "promptweights compel")
        }
        assert pos["promptweights a1111"] <= float(bound) <= pos["promptweights compel"] + 0.05
    assert len(re.findall(r"promptweights compel / bound: [\d.]+× per pair, [\d.]+×", out)) == 2
    assert re.search(r"compel 2.5.1 / promptweights a1111: [\d.]+× \(printed as the bound", out)
    # Equal output: compel's own numbers, checked on the texts both chunk alike.
    deltas = [float(d) for d in re.findall(r"max \|Δ\| vs compel ([\d.e+-]+)", out)]
    assert deltas
    assert max(deltas) < 1e-5


def test_gpu_script_is_valid_bash_and_refuses_without_cuda() -> None:
    """``benchmarks/gpu.sh`` parses, and on a machine without CUDA says so and writes nothing
    (its ``--dry-run`` runs every step on the CPU; too slow for the suite)."""
    torch = pytest.importorskip("torch")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    if torch.cuda.is_available():
        return  # a real run takes minutes: benchmarks/gpu.sh itself
    results = script.parent / "RESULTS.md"
    before = results.read_bytes()
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert "torch with CUDA is not available" in done.stderr
    assert results.read_bytes() == before


@pytest.fixture(scope="module")
def small_flux() -> object:
    """The Flux benchmark's pipeline with its small T5 and tiny CLIP (bfloat16, as the row)."""
    torch = pytest.importorskip("torch")
    from benchmarks import encode, flux_t5

    tokenizer = encode.make_tokenizer()
    tokenizer_2 = flux_t5.make_t5_tokenizer(tokenizer)
    t5 = flux_t5.make_t5_model(len(tokenizer_2), "small", torch.bfloat16)
    clip = encode.make_model(len(tokenizer), tiny=True).to(torch.bfloat16)
    return flux_t5.make_flux_pipeline(tokenizer, clip, tokenizer_2, t5)


def test_flux_t5_model_is_built_in_bfloat16_with_the_requested_shape(small_flux: Any) -> None:
    torch = pytest.importorskip("torch")
    t5 = small_flux.text_encoder_2
    assert {p.dtype for p in t5.parameters()} == {torch.bfloat16}
    assert t5.config.num_layers == 2
    assert t5.config.is_gated_act
    assert not t5.training
    assert small_flux.tokenizer_2.pad_token_id == 0
    assert small_flux.tokenizer_2.eos_token_id == 1


def test_sd_embed_flux1_tokenises_each_fragment_with_its_own_eos(small_flux: Any) -> None:
    from benchmarks import flux_t5

    tok = small_flux.tokenizer_2
    # A1111's parse of "a (red:1.5) cat" is "a " 1.0, "red" 1.5, " cat" 1.0 (a1111-behaviour.md).
    parts = [tok(text).input_ids for text in ("a ", "red", " cat")]
    assert all(p[-1] == tok.eos_token_id for p in parts)
    ids, weights = flux_t5.sd_embed_t5_tokens(tok, "a (red:1.5) cat")
    assert ids == parts[0] + parts[1] + parts[2]
    assert weights == [1.0] * len(parts[0]) + [1.5] * len(parts[1]) + [1.0] * len(parts[2])
    # An empty prompt is the word "empty", as in sd_embed.
    assert flux_t5.sd_embed_t5_tokens(tok, "")[0] == tok("empty").input_ids


def test_sd_embed_flux1_multiplies_an_unpadded_t5_pass_and_means_the_chunk_pools(
    small_flux: Any,
) -> None:
    torch = pytest.importorskip("torch")
    from benchmarks import flux_t5

    pipe = small_flux
    prompt = "a (red:1.5) cat, " + "tree, " * 40  # 1 + 2 + 1 + 80 CLIP tokens: two chunks
    embeds, pooled = flux_t5.sd_embed_flux1(pipe, prompt)
    ids, weights = flux_t5.sd_embed_t5_tokens(pipe.tokenizer_2, prompt)
    assert embeds.shape[1] == len(ids) < 512  # no padding to the window
    with torch.no_grad():
        z = pipe.text_encoder_2(torch.tensor([ids]))[0]
    red = weights.index(1.5)
    assert torch.equal(embeds[0, red], z[0, red] * torch.tensor(1.5, dtype=z.dtype))
    assert torch.equal(embeds[0, 0], z[0, 0])
    clip_ids: list[int] = []
    for text in ("a ", "red", " cat, " + "tree, " * 40):
        clip_ids += pipe.tokenizer(text).input_ids[1:-1]
    # Two chunks with the real CLIP tokenizer; more with the character-level fallback vocabulary
    # of a clone without ../shared. Each chunk: BOS, up to 75 tokens, EOS-padded to 77.
    assert len(clip_ids) > 75
    bos, eos = pipe.tokenizer.bos_token_id, pipe.tokenizer.eos_token_id
    chunks = [clip_ids[k : k + 75] for k in range(0, len(clip_ids), 75)]
    rows = [[bos, *chunk, *[eos] * (75 - len(chunk)), eos] for chunk in chunks]
    with torch.no_grad():
        pools = [pipe.text_encoder(torch.tensor([r])).pooler_output[0].float() for r in rows]
    assert torch.allclose(pooled[0].float(), sum(pools) / len(pools), atol=1e-2)


def test_encode_benchmark_prints_the_flux_t5_table(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    from benchmarks import encode

    encode.main(["--t5", "small", "--pairs", "3", "--threads", "1"])
    out = capsys.readouterr().out
    assert "## Flux.1-dev: 3 prompts of set 'mixed', T5 window 512" in out
    counts = {
        label: tuple(int(n) for n in found.groups())
        for label in (
            "encode_prompt (no weights)",
            "sd_embed flux1 (re-implemented)",
            "promptweights a1111",
            "promptweights a1111, one list",
            "encode_prompt, window per prompt",
            "promptweights a1111, window per prompt",
        )
        if (found := re.search(rf"^{re.escape(label)} +[\d.]+ +(\d+) +(\d+) +(\d+) ", out, re.M))
    }
    assert len(counts) == 6
    assert counts["sd_embed flux1 (re-implemented)"][:2] == (3, 3)  # one pass per prompt
    assert counts["encode_prompt (no weights)"] == (3, 3, 3 * 512)
    # No empty negative through T5: one row per prompt, as encode_prompt (issue 16).
    assert counts["promptweights a1111"] == (3, 3, 3 * 512)
    assert counts["promptweights a1111, one list"] == (1, 3, 3 * 512)  # one T5 pass
    # The equal-work rows: the same smallest windows for both, far below 512.
    fitted = counts["promptweights a1111, window per prompt"]
    assert fitted == counts["encode_prompt, window per prompt"]
    assert fitted[:2] == (3, 3)
    assert fitted[2] < 3 * 512
    assert re.search(r"one list vs sd_embed flux1: [\d.]+× faster", out)
    assert re.search(r"window per prompt vs sd_embed flux1: [\d.]+× faster", out)


def test_smallest_window_holds_the_text_and_one_less_truncates(small_flux: Any) -> None:
    from benchmarks import flux_t5
    from promptweights.diffusers import encode
    from promptweights.errors import PromptweightsWarning

    prompt = "a (red:1.3) fox in the [snow], ((masterpiece))"
    # "a red fox in the snow, masterpiece": its T5 tokens and the EOS.
    want = len(small_flux.tokenizer_2("a red fox in the snow, masterpiece").input_ids)
    window = flux_t5.smallest_window(small_flux, prompt)
    assert window == want
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptweightsWarning)
        cond = encode(small_flux, prompt, max_sequence_length=window)
    assert cond.prompt_embeds.shape[1] == window
    with pytest.warns(PromptweightsWarning, match="1 token"):
        encode(small_flux, prompt, max_sequence_length=window - 1)
