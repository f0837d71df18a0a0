"""``promptweights.diffusers.encode_many`` and the comparison grid that uses it (issue 16).

Several conditionings of one pipeline go through one forward pass per text encoder; each equals
``encode`` of its request alone within 1e-5 relative (float32), and bit for bit in the exact mode
(one row per pass on both sides: the same batch composition). Passes are counted with forward
pre-hooks on the text towers, as ``tests/test_diffusers.py`` counts them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from _passes import Passes  # noqa: E402
from _tiny_pipelines import tiny_sd1, tiny_sdxl  # noqa: E402

from promptweights import Limits  # noqa: E402
from promptweights.compare import Axis, compare  # noqa: E402
from promptweights.diffusers import encode, encode_many  # noqa: E402
from promptweights.errors import (  # noqa: E402
    InvalidArgumentError,
    LimitExceededError,
    UnknownNameError,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

# Distinct conditionings: strategies that need extra rows (compel's masked rows, comfy's empty
# window), a list of prompts, an edited prompt with its schedule, a long prompt, an empty negative.
REQUESTS: list[dict[str, Any]] = [
    {"prompt": "a (red:1.3) cat, [blue] sky", "negative_prompt": "dog", "strategy": "a1111"},
    {"prompt": "a (red:1.3) cat, [blue] sky", "negative_prompt": "dog", "strategy": "compel"},
    {"prompt": "a (red:0.6) cat", "negative_prompt": "", "strategy": "comfy"},
    {"prompt": ["a cat", "(a dog:1.2)"], "negative_prompt": ["x", "y"], "normalization": "mean"},
    {"prompt": "a [cat:dog:0.5] on a (mat:0.8)", "steps": 4, "strategy": "down-weight"},
    {"prompt": "a (cat:1.3) on a mat, " * 12, "negative_prompt": "blurry"},
]


def tensors(cond: Any) -> list[Any]:
    """Every tensor of a conditioning, over its whole schedule."""
    timeline = cond._timeline
    out = []
    for image in timeline.part_embeds:
        out += image
    out += [p for image in timeline.part_pooled for p in image if p is not None]
    out += list(timeline.negative_embeds)
    out += [p for p in timeline.negative_pooled if p is not None]
    return out


def assert_close(a: Any, b: Any) -> None:
    ta, tb = tensors(a), tensors(b)
    assert len(ta) == len(tb)
    for x, y in zip(ta, tb, strict=True):
        assert x.shape == y.shape
        # 1e-5 relative to the tensor's scale (elementwise, a value near 0 has no relative error):
        # one pass against several, whose last bits a CPU may round differently (1.8e-6 on the
        # SDXL towers under PROMPTWEIGHTS_BATCH_ROUNDING=1); other requests differ by >= 0.3.
        scale = float(y.abs().max())
        assert float((x - y).abs().max()) <= 1e-5 * max(scale, 1.0)


def assert_same(a: Any, b: Any) -> None:
    ta, tb = tensors(a), tensors(b)
    assert len(ta) == len(tb)
    for x, y in zip(ta, tb, strict=True):
        assert torch.equal(x, y)


@pytest.fixture(scope="module")
def sd1() -> Any:
    pipe = tiny_sd1()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_every_request_in_one_pass_equal_to_encode_alone(sd1: Any) -> None:
    passes = Passes(sd1)
    try:
        encode(sd1, "warm the empty-window cache")
        passes.take()
        many = encode_many(sd1, REQUESTS)
        assert [calls for calls, _ in passes.take()] == [1]
        alone = [encode(sd1, **request) for request in REQUESTS]
        single = passes.take()
        assert single[0][0] == len(REQUESTS)
    finally:
        passes.close()
    assert len(many) == len(REQUESTS)
    for ours, theirs in zip(many, alone, strict=True):
        assert ours.steps == theirs.steps
        assert ours.pipeline_kwargs().keys() == theirs.pipeline_kwargs().keys()
        assert_close(ours, theirs)
    assert encode_many(sd1, []) == []


def test_exact_mode_is_bit_for_bit_encode_alone(sd1: Any) -> None:
    many = encode_many(sd1, REQUESTS, exact=True)
    for ours, request in zip(many, REQUESTS, strict=True):
        assert_same(ours, encode(sd1, **request, exact=True))


def test_two_towers_one_pass_each() -> None:
    sdxl = tiny_sdxl()
    passes = Passes(sdxl)
    requests = [
        {"prompt": "a (red:1.2) cat", "negative_prompt": "dog", "strategy": s}
        for s in ("a1111", "compel", "comfy")
    ]
    requests.append({"prompt": "a cat", "prompt_2": "(a dog:0.7)", "negative_prompt": ""})
    try:
        many = encode_many(sdxl, requests)
        assert [calls for calls, _ in passes.take()] == [1, 1]
    finally:
        passes.close()
    for ours, request in zip(many, requests, strict=True):
        assert_close(ours, encode(sdxl, **request))


def test_passes_split_only_where_the_row_limit_requires(sd1: Any) -> None:
    words = ("dog", "mat", "sky", "house", "hill")
    requests = [{"prompt": f"a (cat:1.2) {word}", "negative_prompt": "x"} for word in words]
    encode(sd1, "warm", "")
    alone = [encode(sd1, **request) for request in requests]
    passes = Passes(sd1)
    try:
        # 5 prompts and one shared negative: 6 rows; 4 a pass gives two passes, each within it.
        many = encode_many(sd1, requests, limits=Limits(rows=4))
        counted = passes.take()
        assert counted == [(2, 6 + 1)]  # the negative is needed in both passes
        encode_many(sd1, requests, limits=Limits(rows=6))
        assert passes.take() == [(1, 6)]
    finally:
        passes.close()
    for ours, theirs in zip(many, alone, strict=True):
        assert_close(ours, theirs)
    # A request that alone needs more rows than the limit fails as encode does, before any pass.
    long = {"prompt": "a " * 80 + "b", "negative_prompt": "x"}  # 2 chunks and x (pad cached)
    with pytest.raises(LimitExceededError, match="max_rows"):
        encode_many(sd1, [requests[0], long], limits=Limits(rows=2))


def test_clip_skips_run_one_pass_each(sd1: Any) -> None:
    requests = [{"prompt": "a (red:1.2) cat", "clip_skip": skip} for skip in (None, 1, None)]
    passes = Passes(sd1)
    try:
        many = encode_many(sd1, requests)
        assert passes.take()[0][0] == 2
    finally:
        passes.close()
    for ours, request in zip(many, requests, strict=True):
        assert_close(ours, encode(sd1, **request))


def test_bad_requests_fail_before_anything_runs(sd1: Any, tmp_path: Path) -> None:
    passes = Passes(sd1)
    try:
        with pytest.raises(InvalidArgumentError, match="unknown keys"):
            encode_many(sd1, [{"prompt": "a", "guidance": 3}])
        with pytest.raises(InvalidArgumentError, match="prompt"):
            encode_many(sd1, [{"negative_prompt": "a"}])
        with pytest.raises(UnknownNameError):
            encode_many(sd1, [{"prompt": "a"}, {"prompt": "b", "strategy": "nope"}])
        with pytest.raises(InvalidArgumentError, match="same <lora"):
            encode_many(sd1, [{"prompt": "<lora:a:1> x"}, {"prompt": "y"}], lora_dir=tmp_path)
        assert passes.take() == [(0, 0)]
    finally:
        passes.close()


def test_a_grid_encodes_its_conditionings_in_one_pass(sd1: Any) -> None:
    axes = [Axis("strategy", ("a1111", "compel", "comfy"))]
    passes = Passes(sd1)
    try:
        result = compare(
            sd1, "a (red:{0.5,1.5}) cat", axes, steps=2, cfg=5.0, progress=False, seed=1
        )
        # Six weighted conditionings and the two unweighted references: one pass.
        assert result.encoded == 8
        assert passes.take()[0][0] == 1
    finally:
        passes.close()
    # The same cells with the conditionings encoded one call each give the same images.
    calls: list[str] = []

    def one_by_one(pipe: Any, prompt: str, negative: str, **options: Any) -> Any:
        from promptweights.compare import _adapter_encode

        calls.append(prompt)
        return _adapter_encode(pipe, prompt, negative, **options)

    again = compare(
        sd1, "a (red:{0.5,1.5}) cat", axes, steps=2, cfg=5.0, progress=False, seed=1,
        encode=one_by_one,
    )  # fmt: skip
    assert len(calls) == 8
    for ours, theirs in zip(result.images, again.images, strict=True):
        assert abs(ours - theirs).max() < 1e-4
