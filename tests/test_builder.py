"""The conditioning builder on tiny random text towers (no downloads).

Expected values come from elsewhere: diffusers' own ``encode_prompt`` (or the model called the way
diffusers calls it), the independent A1111 re-implementation in ``_a1111_reference.py``, and
compel 2.5.1 itself. Caps (rows, output tokens) fire before encoding, and weights past
``MAX_WEIGHT`` or conditioning that is not finite raise with the position.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _a1111_reference import reference_encode
from _tiny_models import (
    needs_real_tokenizer,
    real_clip_tokenizer,
    tiny_clip_model,
    tiny_clip_tokenizer,
    tiny_sd_pipeline,
    tiny_t5_model,
    tiny_t5_tokenizer,
)

import promptweights as pw
from promptweights.builder import Request, build, build_many, plan
from promptweights.encoders import TextEncoder
from promptweights.errors import (
    InvalidWeightError,
    LimitExceededError,
    PromptweightsError,
    UnknownNameError,
)
from promptweights.strategies import STRATEGIES, Extras, Needs, needs_of

Spans = list[tuple[str, float]]
BRK = ("BREAK", -1.0)


# Tiny towers run fastest, and steadiest on a shared machine, on one thread.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe(tok: Any, model: Any) -> Any:
    return tiny_sd_pipeline(tok, model)


def encode_prompt(pipe: Any, prompt: str, negative: str, clip_skip: int | None = None) -> Any:
    return pipe.encode_prompt(prompt, "cpu", 1, True, negative, clip_skip=clip_skip)


# --- no weights, ≤ 75 tokens: bit for bit what the pipeline's encode_prompt gives -----------------


@pytest.mark.parametrize("name", list(STRATEGIES))
@pytest.mark.parametrize(
    ("prompt", "negative"),
    [("a cat on a mat, red sky", "dog"), ("house on a hill", ""), ("", "blue")],
)
def test_no_weights_equals_encode_prompt_bit_for_bit(
    pipe: Any, model: Any, tok: Any, name: str, prompt: str, negative: str
) -> None:
    expected_pos, expected_neg = encode_prompt(pipe, prompt, negative)
    # One row per forward pass, as the pipeline calls the model: bit for bit on any CPU.
    encoder = TextEncoder.clip(model, tok, rows_per_call=1)
    single = build(encoder, [[prompt], [negative]], strategy=name)
    pos, neg = single.groups
    assert torch.equal(pos.embeds, expected_pos)
    assert torch.equal(neg.embeds, expected_neg)
    assert single.encoder_calls == single.rows
    # All rows in one pass: equal up to the last bit that batched kernels may round differently
    # (PyTorch promises no batch invariance; this tower's odd MLP width of 37 leaves a scalar
    # tail in the activation at batch size 1 that the vectorised path rounds otherwise on AVX2).
    # A few ulps through two layers and a layer norm exceed 1e-6: to 1e-5.
    batched = build(TextEncoder.clip(model, tok), [[prompt], [negative]], strategy=name)
    assert batched.encoder_calls == 1
    for ours, expected in zip(batched.groups, (expected_pos, expected_neg), strict=True):
        torch.testing.assert_close(ours.embeds, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_clip_skip_on_positive_and_negative(
    pipe: Any, model: Any, tok: Any, clip_skip: int
) -> None:
    # diffusers' clip_skip=k (A1111's k+1): hidden_states[-(k+1)], then the final layer norm. (The
    # pipeline's own clip_skip path reads text_encoder.text_model, gone in transformers 5, so the
    # call is written out here the way diffusers 0.42 makes it.)
    expected = []
    for text in ("red cat", "blue dog"):
        ids = torch.tensor([encoder_ids(tok, text)])
        with torch.no_grad():
            hidden = model(ids, output_hidden_states=True).hidden_states[-(clip_skip + 1)]
            expected.append(model.final_layer_norm(hidden))
    # One row per pass, as the reference calls the model: the same batch composition both sides.
    encoder = TextEncoder.clip(model, tok, clip_skip=clip_skip + 1, rows_per_call=1)
    pos, neg = build(encoder, [["red cat"], ["blue dog"]]).groups
    assert torch.equal(pos.embeds, expected[0])
    assert torch.equal(neg.embeds, expected[1])
    plain_pos, _ = encode_prompt(pipe, "red cat", "blue dog")
    assert not torch.equal(pos.embeds, plain_pos)


def test_ignore_and_none_read_syntax_differently(pipe: Any, model: Any, tok: Any) -> None:
    encoder = TextEncoder.clip(model, tok)
    (ignored,) = build(encoder, [["(cat:1.5) dog"]], strategy="ignore").groups
    assert torch.equal(ignored.embeds, encode_prompt(pipe, "cat dog", "")[0])
    (literal,) = build(encoder, [["(cat:1.5) dog"]], strategy="none").groups
    assert torch.equal(literal.embeds, encode_prompt(pipe, "(cat:1.5) dog", "")[0])


# --- A1111 parity: chunk boundaries, BREAK, commas, TI, schedule coupling -------------------------

LONG = "a cat on a mat, " * 14 + "red sky"
A1111_CASES: list[list[Spans]] = [
    [[("a ", 1.0), ("cat", 1.5), (" on a mat", 1.0)]],
    [[("a ", 1.0), ("house", 1.573), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55)]],
    [[(LONG, 1.0), ("blue dog", 1.3), (", " + LONG, 0.8)]],
    [[("a " * 60 + ", ", 1.0), ("b " * 20, 1.2)]],
    [[("red cat", 1.2), BRK, ("blue dog", 0.7), BRK, ("", 1.0), BRK, ("sky", 1.1)]],
    [[("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]],
    [[("cat", 0.0), (" dog", -1.0), (" sky", 2.0)]],
    # schedule variants of one prompt, encoded together (different chunk counts: padding coupled)
    [[("a ", 1.0), ("cat", 1.5), (" on a mat", 1.0)], [("a dog on a mat", 1.0)]],
    [[(LONG, 1.0), ("red", 1.4)], [("house on a ", 1.0), ("hill", 0.6)]],
]


@pytest.mark.parametrize("texts", A1111_CASES)
@pytest.mark.parametrize("normalize", [True, False])
def test_a1111_equals_reference(model: Any, tok: Any, texts: list[Spans], normalize: bool) -> None:
    expected = reference_encode(model, tok, texts, normalize=normalize)
    strategy = "a1111" if normalize else "a1111-no-norm"
    (group,) = build(TextEncoder.clip(model, tok), [texts], strategy=strategy).groups
    # The emphasis arithmetic is the same, operation for operation; the encoder batches differ
    # (one call per chunk index there, every row at once here), which some CPU kernels round
    # differently in the last bit (a few ulps through the tower: 2e-6 seen): equal to 1e-5.
    torch.testing.assert_close(group.embeds, expected, rtol=1e-5, atol=1e-5)


def test_a1111_textual_inversion_equals_reference() -> None:
    tok = tiny_clip_tokenizer()
    tok.add_tokens(["<emb>", "<emb>_1", "<emb>_2"])
    model = tiny_clip_model(tok)
    vectors = tok.convert_tokens_to_ids(["<emb>", "<emb>_1", "<emb>_2"])
    texts: list[Spans] = [[("a " * 73, 1.0), ("<emb>", 1.2), (" cat", 1.0)]]
    expected = reference_encode(model, tok, texts, embeddings={"<emb>": vectors})
    (group,) = build(TextEncoder.clip(model, tok), [texts]).groups
    assert group.embeds.shape == (1, 154, 32)
    assert group.prompts[0].chunks[1].ids[1:4] == tuple(vectors)
    # One call per chunk index there, both chunks at once here: see test_a1111_equals_reference.
    torch.testing.assert_close(group.embeds, expected, rtol=1e-5, atol=1e-5)


@needs_real_tokenizer
def test_a1111_real_tokenizer_equals_reference() -> None:
    import promptweights

    tok = real_clip_tokenizer()
    model = tiny_clip_model(tok, layers=2)
    prompt = (
        "masterpiece, (best quality:1.2), a red fox sitting in the snow, [blurry], "
        + ", ".join(f"detail {i}" for i in range(30))
        + " BREAK (sunset:1.3), mountains"
    )
    spans = promptweights.weighted_spans(prompt)
    expected = reference_encode(model, tok, [spans])
    (group,) = build(TextEncoder.clip(model, tok), [[prompt]]).groups
    assert group.embeds.shape[1] == expected.shape[1] > 77
    # One call per chunk index there, every chunk at once here: see test_a1111_equals_reference.
    torch.testing.assert_close(group.embeds, expected, rtol=1e-5, atol=1e-5)


# --- compel 2.5.1 ---------------------------------------------------------------------------------

COMPEL_CASES: list[Spans] = [
    [("a ", 1.0), ("cat", 1.5), (" on a mat", 1.0)],
    [("a ", 1.0), ("red cat", 0.5), (" on a ", 1.0), ("mat", 1.2)],
    [("house on a ", 1.0), ("hill", 0.8), (", ", 1.0), ("blue sky", 0.3), (" dog", 1.0)],
    [("cat", 0.0), (" dog", 1.0)],
    [("red", 1.0), ("sky", 0.9), ("house", 1.1)],
]


def compel_reference(tok: Any, model: Any, spans: Spans) -> Any:
    from compel.embeddings_provider import EmbeddingsProvider

    provider = EmbeddingsProvider(tok, model, truncate=True)
    fragments = [t for t, _ in spans]
    weights = [w for _, w in spans]
    with torch.no_grad():
        return provider.get_embeddings_for_weighted_prompt_fragments([fragments], [weights])


@pytest.mark.parametrize("spans", COMPEL_CASES)
def test_compel_equals_compel(model: Any, tok: Any, spans: Spans) -> None:
    expected = compel_reference(tok, model, spans)
    (group,) = build(TextEncoder.clip(model, tok), [[spans]], strategy="compel").groups
    torch.testing.assert_close(group.embeds, expected, rtol=0, atol=1e-5)


@needs_real_tokenizer
def test_compel_equals_compel_real_tokenizer() -> None:
    tok = real_clip_tokenizer()
    model = tiny_clip_model(tok, layers=2)
    spans: Spans = [
        ("a photo of a ", 1.0),
        ("red fox", 1.3),
        (" in the ", 1.0),
        ("snow", 0.5),
        (", ", 1.0),
        ("trees", 0.2),
    ]
    expected = compel_reference(tok, model, spans)
    (group,) = build(TextEncoder.clip(model, tok), [[spans]], strategy="compel").groups
    torch.testing.assert_close(group.embeds, expected, rtol=0, atol=1e-5)


# --- rows, passes, cache, de-duplication ----------------------------------------------------------


class RowCounter:
    """Counts the rows (77-token windows) that go through a text model's forward, with a hook."""

    def __init__(self, model: Any) -> None:
        self.rows = 0
        self.handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.rows += int(ids.shape[0])

    def take(self) -> int:
        rows, self.rows = self.rows, 0
        return rows

    def __enter__(self) -> RowCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def test_rows_are_the_a1111_minimum_and_the_empty_prompt_is_cached(model: Any, tok: Any) -> None:
    encoder = TextEncoder.clip(model, tok)
    encoder.clear_cache()
    long_prompt = [(LONG, 1.0), ("cat", 1.3)]  # 2 chunks
    with RowCounter(model) as counter:
        # One chunk each: no padding, so no empty window (what encode_prompt needs: 2 rows).
        assert build(encoder, [["red cat"], ["blue dog"]]).rows == counter.take() == 2
        result = build(encoder, [[long_prompt], ["(dog:1.2)"]])
        assert (result.encoder_calls, result.chunks) == (1, 2)
        # Chunks of positive + negative, plus the empty window that pads the negative, once.
        assert result.rows == counter.take() == 2 + 1 + 1
        pos, neg = result.groups
        assert pos.embeds.shape == neg.embeds.shape == (1, 154, 32)
        # The negative's second chunk is the empty window, now cached for this model.
        (empty,) = build(encoder, [[""]], strategy="a1111-no-norm").groups
        assert counter.take() == 0
        assert torch.equal(neg.embeds[:, 77:], empty.embeds)
        # A1111's minimum from now on, also for a new TextEncoder of the same model.
        again = build(TextEncoder.clip(model, tok), [[long_prompt], ["(dog:1.2)"]])
        assert again.rows == counter.take() == 3
        for a, b in zip(again.groups, result.groups, strict=True):
            # A 3-row pass against a 4-row one: equal up to last-bit rounding.
            torch.testing.assert_close(a.embeds, b.embeds, rtol=1e-6, atol=1e-6)
        # An empty negative is the cached window: the prompt's chunks alone.
        assert build(encoder, [[long_prompt], [""]]).rows == counter.take() == 2
        encoder.clear_cache()
        assert build(encoder, [[long_prompt], ["(dog:1.2)"]]).rows == counter.take() == 4


def test_exact_mode_caches_its_own_one_row_empty_window(model: Any, tok: Any) -> None:
    TextEncoder.clip(model, tok).clear_cache()
    build(TextEncoder.clip(model, tok), [[[(LONG, 1.0), ("cat", 1.3)]], ["dog"]])  # batched entry
    exact = TextEncoder.clip(model, tok, rows_per_call=1)
    assert exact.cached_empty() is None  # a batched entry is never served to the exact mode
    (empty,) = build(exact, [[""]], strategy="none").groups
    ids = torch.tensor([encoder_ids(tok, "")])
    with torch.no_grad():
        assert torch.equal(empty.embeds, model(ids).last_hidden_state)
    cached = exact.cached_empty()
    assert cached is not None
    assert torch.equal(cached[0], empty.embeds[0])


def test_the_cache_is_keyed_on_what_the_empty_window_depends_on(tok: Any) -> None:
    model = tiny_clip_model(tok)
    build(TextEncoder.clip(model, tok), [["a"], [LONG]])
    assert TextEncoder.clip(model, tok).cached_empty() is not None
    assert TextEncoder.clip(model, tok, clip_skip=2).cached_empty() is None
    assert TextEncoder.sdxl(model, tok).cached_empty() is None
    assert TextEncoder.clip(model, tok, pooled=True).cached_empty() is None
    assert TextEncoder.clip(model, tiny_clip_tokenizer(pad="!")).cached_empty() is None
    model.to(torch.bfloat16)
    assert TextEncoder.clip(model, tok).cached_empty() is None


def _stale(model: Any, tok: Any, change: Any) -> None:
    """After ``change(model)``, a padded negative holds the new weights' empty window."""
    encoder = TextEncoder.clip(model, tok, rows_per_call=1)
    build(encoder, [[LONG], ["dog"]])
    assert encoder.cached_empty() is not None
    change(model)
    assert encoder.cached_empty() is None
    neg = build(encoder, [[LONG], ["dog"]]).groups[1].embeds
    ids = torch.tensor([encoder_ids(tok, "")])
    with torch.no_grad():
        fresh = model(ids).last_hidden_state
    assert torch.equal(neg[:, 77:], fresh)


def test_an_in_place_weight_change_never_serves_a_stale_empty_window(tok: Any) -> None:
    def shift(model: Any) -> None:
        with torch.no_grad():
            model.final_layer_norm.bias.add_(0.5)

    _stale(tiny_clip_model(tok), tok, shift)


def test_a_replaced_parameter_never_serves_a_stale_empty_window(tok: Any) -> None:
    def replace(model: Any) -> None:
        norm = model.final_layer_norm
        norm.weight = torch.nn.Parameter(norm.weight.detach() * 2)

    def replace_data(model: Any) -> None:
        norm = model.final_layer_norm
        norm.bias.data = norm.bias.detach() - 1

    _stale(tiny_clip_model(tok), tok, replace)
    _stale(tiny_clip_model(tok), tok, replace_data)


def test_a_new_embedding_row_never_serves_a_stale_empty_window(tok: Any) -> None:
    # What loading a textual inversion does: more token rows, a new embedding matrix.
    def resize(model: Any) -> None:
        model.resize_token_embeddings(model.get_input_embeddings().weight.shape[0] + 1)
        with torch.no_grad():
            model.get_input_embeddings().weight.mul_(1.5)

    _stale(tiny_clip_model(tok), tok, resize)


def test_a_lora_adapter_and_its_scale_never_serve_a_stale_empty_window(tok: Any) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    model = tiny_clip_model(tok)
    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)

    def inject(model: Any) -> None:
        inject_adapter_in_model(config, model)

    def rescale(model: Any) -> None:
        for module in model.modules():
            scaling = getattr(module, "scaling", None)
            if isinstance(scaling, dict):
                scaling["default"] = scaling["default"] * 3

    _stale(model, tok, inject)
    _stale(model, tok, rescale)


def test_the_cache_never_keeps_a_model_alive(tok: Any) -> None:
    import gc
    import weakref

    model = tiny_clip_model(tok)
    build(TextEncoder.clip(model, tok), [["a"], [LONG]])
    assert TextEncoder.clip(model, tok).cached_empty() is not None
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_several_requests_share_one_pass(model: Any, tok: Any) -> None:
    texts = [["a (red cat:1.3) on a mat, (sky:0.5)"], ["(dog:1.2)"]]
    requests = [
        Request(texts, strategy)
        for strategy in ("a1111", "compel", "down-weight", "comfy", "comfy++")
    ]
    encoder = TextEncoder.clip(model, tok, share_prefixes=False)
    with RowCounter(model) as counter:
        together = build_many(encoder, requests)
        rows = counter.take()
        assert {(r.encoder_calls, r.rows) for r in together} == {(1, rows)}
        alone = [build(encoder, r.groups, strategy=r.strategy) for r in requests]
        assert sum(r.rows for r in alone) == counter.take() > rows
    for a, b in zip(together, alone, strict=True):
        for x, y in zip(a.groups, b.groups, strict=True):
            torch.testing.assert_close(x.embeds, y.embeds, rtol=1e-6, atol=1e-6)


def test_a_plan_tells_the_chunks_before_encoding(model: Any, tok: Any) -> None:
    prepared = plan(TextEncoder.clip(model, tok), [Request([[LONG, "a"], ["b"]]), Request([["c"]])])
    assert prepared.chunks == ((2, 1), (1,))
    TextEncoder.clip(model, tok).clear_cache()
    first, second = prepared.run(empty=True)
    assert first.empty is not None
    assert first.empty.shape == (77, 32)
    # LONG's two chunks, "a" and its padding chunk (the empty window, which run(empty=True) then
    # needs to encode no more), "b", "c".
    assert first.rows == 2 + 2 + 1 + 1
    assert second.groups[0].embeds.shape == (1, 77, 32)


def test_rows_per_call_splits_the_pass_and_changes_no_number(
    pipe: Any, model: Any, tok: Any
) -> None:
    texts = [["a cat on a mat, red sky", "house on a hill"], ["dog"], [LONG]]
    TextEncoder.clip(model, tok).clear_cache()
    batched = build(TextEncoder.clip(model, tok), texts, strategy="a1111-no-norm")
    single = build(TextEncoder.clip(model, tok, rows_per_call=1), texts, strategy="a1111-no-norm")
    # Each mode encodes its own empty window (an exact entry is never a batched one).
    assert single.encoder_calls == single.rows == batched.rows == 6
    for a, b in zip(single.groups, batched.groups, strict=True):
        torch.testing.assert_close(a.embeds, b.embeds, rtol=1e-6, atol=1e-6)
    # One row per call is what the pipeline does: bit-identical whatever the kernels.
    expected, _ = encode_prompt(pipe, "a cat on a mat, red sky", "")
    assert torch.equal(single.groups[0].embeds[:1, :77], expected)
    with pytest.raises(ValueError, match="rows_per_call"):
        TextEncoder.clip(model, tok).__class__(model, tok, rows_per_call=0)


def test_identical_rows_are_encoded_once(model: Any, tok: Any) -> None:
    encoder = TextEncoder.clip(model, tok)
    result = build(encoder, [["red cat"], ["red cat"]], strategy="a1111-no-norm")
    assert result.rows == 1
    assert torch.equal(result.groups[0].embeds, result.groups[1].embeds)
    # Weights do not change the token row: one row for both texts.
    result = build(encoder, [["red cat"], ["(red:1.5) cat"]], strategy="a1111-no-norm")
    assert result.rows == 1
    assert not torch.equal(result.groups[0].embeds, result.groups[1].embeds)


def test_compel_plans_masked_rows_only_where_they_differ(model: Any, tok: Any) -> None:
    encoder = TextEncoder.clip(model, tok)
    encoder.clear_cache()
    spans: Spans = [(LONG, 1.0), ("cat", 0.5)]  # the down-weighted fragment is in chunk 2 only
    result = build(encoder, [[spans]], strategy="compel")
    assert result.rows == 2 + 1 + 1  # two chunks, the empty prompt, one masked chunk


def test_schedule_variants_are_one_group(model: Any, tok: Any) -> None:
    encoder = TextEncoder.clip(model, tok)
    variants = ["a (cat:1.5) on a mat", "a dog on a mat"]
    (group,) = build(encoder, [variants]).groups
    assert group.embeds.shape == (2, 77, 32)
    alone = [build(encoder, [[v]]).groups[0].embeds[0] for v in variants]
    # A1111's Original mean is shared by texts encoded together (a1111-behaviour.md §9.1).
    assert not torch.equal(group.embeds[0], alone[0])
    # ... and a text with no weights among them is rescaled too.
    assert not torch.equal(group.embeds[1], alone[1])


@pytest.mark.parametrize("name", list(STRATEGIES))
@pytest.mark.parametrize("normalization", ["none", "mean", "length", "length+mean"])
def test_every_strategy_and_normalisation_runs(
    model: Any, tok: Any, name: str, normalization: str
) -> None:
    encoder = TextEncoder.clip(model, tok)
    prompt = "a (red cat:1.3) on [a mat], (dog:0) (sky:-0.5) (house:0.4)"
    result = build(encoder, [[prompt, "a cat"], [""]], strategy=name, normalization=normalization)
    pos, neg = result.groups
    assert pos.embeds.shape == (2, 77, 32)
    assert neg.embeds.shape == (1, 77, 32)
    assert torch.isfinite(pos.embeds).all()
    # Masked and substituted rows started from their chunk's cached prefix (a second pass) give
    # the same conditioning as every row run in full (one pass).
    encoder = TextEncoder.clip(model, tok, share_prefixes=False)
    full = build(encoder, [[prompt, "a cat"], [""]], strategy=name, normalization=normalization)
    assert full.encoder_calls == 1
    encoder = TextEncoder.clip(model, tok, share_prefixes=True)
    shared = build(encoder, [[prompt, "a cat"], [""]], strategy=name, normalization=normalization)
    needs = needs_of(STRATEGIES[name])
    extra = needs.masked_fragments or needs.substituted_levels or needs.substituted_groups
    extra = extra or needs.masked_weighted
    assert shared.encoder_calls == (2 if extra else 1)
    for a, b in zip(shared.groups, full.groups, strict=True):
        torch.testing.assert_close(a.embeds, b.embeds, rtol=0, atol=1e-5)


def test_comfy_plus_plus_and_down_weight_rows(model: Any, tok: Any) -> None:
    encoder = TextEncoder.clip(model, tok)
    encoder.clear_cache()
    spans: Spans = [("a ", 1.0), ("cat", 1.5), (" dog", 0.5), (" sky", 0.25)]
    # comfy++: base + 2 cumulative levels (0.25; 0.25 and 0.5) + 1 up-weighted group (+ empty).
    assert build(encoder, [[spans]], strategy="comfy++").rows == 1 + 2 + 1
    # down-weight: levels below the top weight 1.5: 0.25, 0.5 and 1.0.
    assert build(encoder, [[spans]], strategy="down-weight").rows == 1 + 3


# --- weights: NaN/inf rejected, 0 and negative fine -----------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_rejected(model: Any, tok: Any, bad: float) -> None:
    encoder = TextEncoder.clip(model, tok)
    with pytest.raises(InvalidWeightError, match="not a finite number") as info:
        build(encoder, [[[("a ", 1.0), ("cat", bad)]]])
    assert isinstance(info.value, PromptweightsError)


def test_zero_and_negative_weights(model: Any, tok: Any) -> None:
    encoder = TextEncoder.clip(model, tok)
    spans: Spans = [("red ", 0.0), ("cat", -1.0)]
    (plain,) = build(encoder, [["red cat"]], strategy="a1111-no-norm").groups
    (group,) = build(encoder, [[spans]], strategy="a1111-no-norm").groups
    assert torch.equal(group.embeds[0, 1], torch.zeros(32))
    assert torch.equal(group.embeds[0, 2], -plain.embeds[0, 2])
    # Weight 0 under comfy is the empty window's vector; one row per pass on both sides.
    exact = TextEncoder.clip(model, tok, rows_per_call=1)
    (comfy,) = build(exact, [[spans]], strategy="comfy").groups
    (empty,) = build(exact, [[""]], strategy="none").groups
    assert torch.equal(comfy.embeds[0, 1], empty.embeds[0, 1])


def test_unknown_strategy(model: Any, tok: Any) -> None:
    with pytest.raises(UnknownNameError, match="known: a1111"):
        build(TextEncoder.clip(model, tok), [["cat"]], strategy="a1112")


def test_callable_strategy(model: Any, tok: Any) -> None:
    def halve(z: Any, w: Any, extras: Any) -> Any:
        return z / 2

    encoder = TextEncoder.clip(model, tok)
    (group,) = build(encoder, [["cat"]], strategy=halve).groups
    (plain,) = build(encoder, [["cat"]], strategy="none").groups
    assert torch.equal(group.embeds, plain.embeds / 2)


def test_callable_strategy_declares_its_needs(model: Any, tok: Any) -> None:
    seen: list[Any] = []

    def spy(z: Any, w: Any, extras: Extras) -> Any:
        seen.append(extras.empty)
        return z

    spy.needs = Needs(empty=True)  # type: ignore[attr-defined]
    encoder = TextEncoder.clip(model, tok, rows_per_call=1)
    encoder.clear_cache()
    result = build(encoder, [["red cat"]], strategy=spy)
    assert result.rows == 2  # the prompt and the empty prompt
    ids = torch.tensor([encoder_ids(tok, "")])
    with torch.no_grad():
        assert torch.equal(seen[0], model(ids).last_hidden_state[0])


# --- dtype, SDXL's pooled tower, T5 ---------------------------------------------------------------


def test_runs_in_the_encoders_dtype_weights_in_float32(tok: Any) -> None:
    model = tiny_clip_model(tok).to(torch.bfloat16)
    encoder = TextEncoder.clip(model, tok)
    (group,) = build(encoder, [[[("red ", 1.0), ("cat", 1.1)]]], strategy="a1111-no-norm").groups
    assert group.embeds.dtype == torch.bfloat16
    ids = torch.tensor([encoder_ids(tok, "red cat")])
    with torch.no_grad():
        z = model(input_ids=ids).last_hidden_state
    w = torch.ones(77)
    w[2] = 1.1
    expected = (z.float() * w[:, None]).to(torch.bfloat16)
    assert torch.equal(group.embeds, expected)


HALF = [torch.bfloat16, torch.float16]


@pytest.fixture(scope="module")
def half_models(tok: Any) -> dict[torch.dtype, Any]:
    return {dtype: tiny_clip_model(tok).to(dtype) for dtype in HALF}


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_half_precision_equals_float32_within_the_dtypes_tolerance(
    tok: Any, model: Any, half_models: dict[torch.dtype, Any], name: str, dtype: torch.dtype
) -> None:
    prompt = "a (red cat:1.3) on [a mat], (dog:0) (sky:-0.5) (house:0.4) BREAK hill"
    texts = [[prompt, "a cat"], ["blue"]]
    reference = build(TextEncoder.clip(model, tok), texts, strategy=name)
    half = build(TextEncoder.clip(half_models[dtype], tok), texts, strategy=name)
    # A few units in the last place of the half type, through the whole tower (whose weights are
    # rounded to it too); the weighting itself runs in float32.
    tolerance = 8 * torch.finfo(dtype).eps
    for ours, expected in zip(half.groups, reference.groups, strict=True):
        assert ours.embeds.dtype == dtype
        torch.testing.assert_close(
            ours.embeds.float(), expected.embeds, rtol=tolerance, atol=tolerance
        )


# (x:100) nested ten deep: A1111 multiplies the weights of nested brackets.
DEEP = "(" * 10 + "red" + ":100)" * 10
DEEP_PARENS = "(" * 10 + "(red:100)" + ")" * 10


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_large_weights_never_overflow_half_precision(
    tok: Any, half_models: dict[torch.dtype, Any], name: str, dtype: torch.dtype
) -> None:
    encoder = TextEncoder.clip(half_models[dtype], tok)
    weights = (100 * 1.1**10, -(100 * 1.1**10), 1e4, -1e4)
    groups: list[list[Any]] = [
        [[("a ", 1.0), ("red cat", w), (" on a mat", 0.5), (" dog", 1.2)]] for w in weights
    ]
    for group in build(encoder, [*groups, ["sky"]], strategy=name).groups:
        assert torch.isfinite(group.embeds).all()
    texts = [DEEP_PARENS, f"a {DEEP} cat", f"a (cat:-100) {DEEP}"]
    try:
        result = build(encoder, [[text] for text in texts], strategy=name)
    except InvalidWeightError:
        # Beyond the documented bound on effective weights: refused, never computed.
        result = build(encoder, [[DEEP_PARENS]], strategy=name)
    for group in result.groups:
        assert torch.isfinite(group.embeds).all()


def test_the_cast_saturates_at_the_half_types_largest_values() -> None:
    from promptweights.builder import to_dtype

    x = torch.tensor([1e20, -1e20, 70000.0, 1.0 / 3.0, float("nan")])
    half = to_dtype(x, torch.float16)
    assert half[:3].tolist() == [65504.0, -65504.0, 65504.0]
    assert half[3] == x[3].to(torch.float16)
    assert half[4].isnan()
    # bfloat16 has float32's exponent, not quite its largest values.
    top = torch.tensor([3.4e38])
    assert top.to(torch.bfloat16).isinf().all()
    assert to_dtype(top, torch.bfloat16)[0] == torch.finfo(torch.bfloat16).max
    assert to_dtype(x, torch.float32) is x


def encoder_ids(tok: Any, text: str) -> list[int]:
    ids: list[int] = tok(text, padding="max_length", max_length=77, truncation=True).input_ids
    return ids


def test_sdxl_openclip_tower_with_pooled_output() -> None:
    tok = tiny_clip_tokenizer(pad="!")
    model = tiny_clip_model(tok, projection=True)
    encoder = TextEncoder.sdxl(model, tok, pooled=True, rows_per_call=1)  # as diffusers calls it
    prompt = "a red cat on a mat"
    # What diffusers' StableDiffusionXLPipeline.encode_prompt does with text_encoder_2.
    ids = torch.tensor([encoder_ids(tok, prompt)])
    assert ids[0, -1] == 0  # OpenCLIP pads with "!"
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    pos, neg = build(encoder, [[prompt], [LONG]]).groups
    assert pos.embeds.shape == (1, 154, 32)  # padded to the negative's two chunks
    assert torch.equal(pos.embeds[:, :77], out.hidden_states[-2])
    assert pos.pooled is not None
    assert torch.equal(pos.pooled, out[0])
    # Pooled comes from the first chunk only (A1111), and is never weighted.
    assert neg.pooled is not None
    assert neg.pooled.shape == (1, 16)
    (weighted,) = build(encoder, [["a (red:1.5) cat on a mat"]]).groups
    assert torch.equal(weighted.pooled, pos.pooled)


def test_t5_window_equals_the_diffusers_call() -> None:
    tok = tiny_t5_tokenizer()
    model = tiny_t5_model(tok)
    encoder = TextEncoder.t5(model, tok, max_length=12, rows_per_call=1)  # as diffusers calls it
    prompt = "a red cat"
    # What diffusers' SD3/Flux _get_t5_prompt_embeds does.
    ids = tok(prompt, padding="max_length", max_length=12, truncation=True).input_ids
    with torch.no_grad():
        expected = model(torch.tensor([ids]))[0]
    pos, neg = build(encoder, [[prompt], [""]]).groups
    assert torch.equal(pos.embeds, expected)
    assert neg.embeds.shape == (1, 12, 32)
    (weighted,) = build(encoder, [["a (red:2) cat"]], strategy="a1111-no-norm").groups
    red = len(tok("a", add_special_tokens=False).input_ids)
    torch.testing.assert_close(weighted.embeds[0, red], expected[0, red] * 2)


# --- caps: rows and output tokens, counted before encoding -------------------------------------


def test_build_refuses_more_rows_than_the_cap_before_encoding(tiny_pipe: object) -> None:
    from promptweights.builder import build
    from promptweights.encoders import TextEncoder

    encoder = TextEncoder.clip(tiny_pipe.text_encoder, tiny_pipe.tokenizer)  # type: ignore[attr-defined]
    groups = [["a " * 100, "[b] " * 200], ["c"]]  # 2 + 3 chunks, and the cached empty one
    rows = build(encoder, groups).rows
    encoder.clear_cache()
    assert build(encoder, groups, max_rows=rows).rows == rows
    encoder.clear_cache()
    calls = []
    forward = encoder.model.forward
    encoder.model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)  # type: ignore[method-assign]
    try:
        with pytest.raises(LimitExceededError, match=f"needs {rows} text-encoder rows"):
            build(encoder, groups, max_rows=rows - 1)
    finally:
        del encoder.model.forward
    assert calls == []


def _counting_encoder(pipe: object) -> tuple[object, list[int]]:
    from promptweights.encoders import TextEncoder

    encoder = TextEncoder.clip(pipe.text_encoder, pipe.tokenizer)  # type: ignore[attr-defined]
    calls: list[int] = []
    encoder.model.register_forward_pre_hook(lambda *_: calls.append(1))
    return encoder, calls


def test_output_tokens_are_capped_after_repetition_before_encoding(tiny_pipe: object) -> None:
    from promptweights.builder import build
    from promptweights.diffusers import encode

    # One unique row, but 100,000 windows of output (1.6 million tokens).
    text = " BREAK ".join(["red"] * 100_000)
    encoder, calls = _counting_encoder(tiny_pipe)
    with pytest.raises(LimitExceededError, match="max_output_tokens"):
        build(encoder, [[text]])  # type: ignore[arg-type]
    assert calls == []
    with pytest.raises(LimitExceededError, match="max_output_tokens"):
        encode(tiny_pipe, text)
    # The boundary, exactly: 2 texts × 3 windows of 77 tokens.
    groups = [["a BREAK b BREAK c", "d"]]
    assert build(encoder, groups, max_output_tokens=6 * 77).chunks == 3  # type: ignore[arg-type]
    with pytest.raises(LimitExceededError, match="max_output_tokens"):
        build(encoder, groups, max_output_tokens=6 * 77 - 1)  # type: ignore[arg-type]


def test_strategy_extras_count_towards_the_output_cap(tiny_pipe: object) -> None:
    from promptweights.builder import build

    encoder, calls = _counting_encoder(tiny_pipe)
    text = "[a] " * 40  # 40 down-weighted spans in one chunk
    with pytest.raises(LimitExceededError, match="masked"):
        build(encoder, [[text]], strategy="compel", max_output_tokens=20 * 77)  # type: ignore[arg-type]
    levels = " ".join(f"(x:{i / 100})" for i in range(1, 41))  # 40 distinct weights below 1
    with pytest.raises(LimitExceededError, match="levels"):
        build(encoder, [[levels]], strategy="down-weight", max_output_tokens=20 * 77)  # type: ignore[arg-type]
    assert calls == []
    build(encoder, [[text]], strategy="compel", max_output_tokens=41 * 77)  # type: ignore[arg-type]


# --- no silent non-finite conditioning ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("a (red:" + "3" + "0" * 37 + ") cat", "red"),  # 3e37: finite, but z·w overflows float32
        ("a ((red:1" + "0" * 13 + "):1" + "0" * 13 + ") cat", "red"),  # 1e13 · 1e13 = 1e26
        ("x, " * 50 + "(blue:-1" + "0" * 30 + ")", "blue"),
    ],
)
def test_weights_past_the_bound_raise_with_the_position(
    tiny_pipe: object, text: str, span: str
) -> None:
    from promptweights.builder import build

    encoder, calls = _counting_encoder(tiny_pipe)
    with pytest.raises(pw.InvalidWeightError, match="MAX_WEIGHT") as raised:
        build(encoder, [[text]])  # type: ignore[arg-type]
    assert raised.value.source == text
    assert raised.value.pos == text.index(span)
    assert f"column {text.index(span) + 1}" in str(raised.value)
    assert calls == []


def test_weights_users_write_stay_finite(tiny_pipe: object) -> None:
    import torch

    from promptweights.builder import build

    encoder, _ = _counting_encoder(tiny_pipe)
    deep = "(" * 9 + "(red:100)" + ":100)" * 9  # ±100 nested ten deep: 1e20
    negative = "(" * 9 + "(red:-100)" + ":100)" * 9
    assert pw.weighted_spans(deep)[0][1] == pytest.approx(1e20)
    for strategy in ("a1111", "a1111-no-norm", "comfy", "compel", "down-weight", "comfy++"):
        result = build(encoder, [[deep, negative]], strategy=strategy)  # type: ignore[arg-type]
        assert bool(torch.isfinite(result.groups[0].embeds).all()), strategy


def test_no_non_finite_conditioning_is_ever_returned(tiny_pipe: object) -> None:
    from promptweights.builder import build

    encoder, _ = _counting_encoder(tiny_pipe)

    def overflowing(z: torch.Tensor, w: torch.Tensor, extras: object) -> torch.Tensor:
        return z * w.unsqueeze(-1) * 1e30

    def nan(z: torch.Tensor, w: torch.Tensor, extras: object) -> torch.Tensor:
        return z * float("nan")

    text = "a (red:1" + "0" * 20 + ") cat"
    with pytest.raises(pw.InvalidWeightError, match="not finite") as raised:
        build(encoder, [[text]], strategy=overflowing)  # type: ignore[arg-type]
    assert raised.value.pos == text.index("red")
    with pytest.raises(pw.InvalidWeightError, match="not finite"):
        build(encoder, [["a cat"]], strategy=nan)  # type: ignore[arg-type]
