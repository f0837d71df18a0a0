"""Hostile LoRA and textual-inversion files (issue 8, "Files"): ``.safetensors`` only, every tensor
checked against the encoder before the pipeline is touched, clear errors naming the file and key.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny_pipelines import tiny_sd1, tiny_sdxl, tiny_sdxl_refiner
from safetensors.torch import load_file, save_file
from test_diffusers import reference, write_lora

import promptweights as pw
from promptweights.diffusers import Conditioning, load_textual_inversion
from promptweights.diffusers import encode as _encode
from promptweights.errors import NetworkFileError


def encode(pipe: Any, *args: Any, **kwargs: Any) -> Conditioning:
    """``promptweights.diffusers.encode`` in its exact mode (one row per forward pass) unless a
    test says otherwise: this module compares with the pipelines' own one-text calls, and between
    requests of different rows, bit for bit, which a batched pass may round otherwise."""
    kwargs.setdefault("exact", True)
    return _encode(pipe, *args, **kwargs)


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def sd1() -> Any:
    return tiny_sd1()


@pytest.fixture(scope="module")
def ink(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The tensors of a valid SD1 LoRA (peft keys, UNet and text encoder)."""
    return load_file(str(write_lora(tmp_path_factory.mktemp("ink"), "ink")))


def _first(weights: dict[str, torch.Tensor], start: str, end: str) -> str:
    return next(k for k in weights if k.startswith(start) and k.endswith(end))


# --- LoRA -----------------------------------------------------------------------------------------


def test_kohya_lora_is_read_as_diffusers_reads_it(
    sd1: Any, ink: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    from diffusers.utils import convert_state_dict_to_kohya

    kohya = convert_state_dict_to_kohya(dict(ink))  # lora_unet_*/lora_te*_*, integer alphas
    assert any(k.startswith("lora_unet_") for k in kohya)
    save_file(kohya, str(tmp_path / "kohya.safetensors"))
    save_file(ink, str(tmp_path / "peft.safetensors"))
    ours = encode(tiny_sd1(), "a cat <lora:kohya:0.7>", lora_dir=tmp_path)
    theirs = encode(tiny_sd1(), "a cat <lora:peft:0.7>", lora_dir=tmp_path)
    torch.testing.assert_close(ours.prompt_embeds, theirs.prompt_embeds)
    # A wrong rank in a kohya file is reported under the file's own key and diffusers' name.
    key = _first(kohya, "lora_unet_", "to_k.lora_up.weight")
    kohya[key] = torch.randn(kohya[key].shape[0], 3)
    save_file(kohya, str(tmp_path / "bad.safetensors"))
    pipe = tiny_sd1()
    with pytest.raises(NetworkFileError) as caught:
        encode(pipe, "a cat <lora:bad:1>", lora_dir=tmp_path)
    message = str(caught.value)
    assert "bad.safetensors" in message
    assert repr(key) in message
    assert "to_k.lora_B.weight" in message
    assert "has shape (8, 3)" in message
    assert "needs (8, 2)" in message
    assert not hasattr(pipe.unet, "peft_config")


def _wider(weights: dict[str, torch.Tensor]) -> str:
    key = _first(weights, "unet.", "lora_A.weight")
    weights[key] = torch.randn(2, weights[key].shape[1] + 3)
    return key


def _nan(weights: dict[str, torch.Tensor]) -> str:
    key = _first(weights, "text_encoder.", "lora_B.weight")
    weights[key] = weights[key].clone()
    weights[key][0, 0] = float("nan")
    return key


def _inf(weights: dict[str, torch.Tensor]) -> str:
    key = _first(weights, "unet.", "lora_B.weight")
    weights[key] = torch.full_like(weights[key], float("inf"))
    return key


def _integers(weights: dict[str, torch.Tensor]) -> str:
    key = _first(weights, "unet.", "lora_A.weight")
    weights[key] = weights[key].to(torch.int32)
    return key


def _no_module(weights: dict[str, torch.Tensor]) -> str:
    weights["unet.mid_block.nothing.to_q.lora_A.weight"] = torch.randn(2, 8)
    weights["unet.mid_block.nothing.to_q.lora_B.weight"] = torch.randn(8, 2)
    return "unet.mid_block.nothing.to_q.lora_A.weight"


def _no_component(weights: dict[str, torch.Tensor]) -> str:
    key = "text_encoder_2.encoder.layers.0.self_attn.q_proj.lora_A.weight"
    weights[key] = torch.randn(2, 32)
    return key


def _no_partner(weights: dict[str, torch.Tensor]) -> str:
    key = _first(weights, "unet.", "lora_A.weight")
    del weights[key.replace("lora_A", "lora_B")]
    return key


def _not_lora(weights: dict[str, torch.Tensor]) -> str:
    weights["unet.conv_in.weight"] = torch.randn(4, 4, 3, 3)
    return "unet.conv_in.weight"


def _conv_kernel(weights: dict[str, torch.Tensor]) -> str:
    # conv_in is a 3×3 Conv2d 4→4: a LoRA down weight must be (r, 4, 3, 3).
    weights["unet.conv_in.lora_A.weight"] = torch.randn(2, 4, 1, 1)
    weights["unet.conv_in.lora_B.weight"] = torch.randn(4, 2, 1, 1)
    return "unet.conv_in.lora_A.weight"


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        (_wider, r"has shape \(2, 11\) but unet\..*to_\w+ \(Linear 8→8\) needs \(2, 8\)"),
        (_nan, "holds NaN or infinite values"),
        (_inf, "holds NaN or infinite values"),
        (_integers, "is torch.int32; weights must be floating point"),
        (_no_module, "targets unet.mid_block.nothing.to_q, which this pipeline does not have"),
        (_no_component, "targets 'text_encoder_2', which StableDiffusionPipeline does not load"),
        (_no_partner, "has no matching 'lora_B.weight'"),
        (_not_lora, "is not a LoRA weight"),
        (_conv_kernel, r"Conv2d 4→4, kernel 3×3\) needs \(2, 4, 3, 3\)"),
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else "message",
)
def test_lora_tensors_are_checked_before_the_pipeline_is_touched(
    ink: dict[str, torch.Tensor],
    tmp_path: Path,
    break_it: Callable[[dict[str, torch.Tensor]], str],
    expected: str,
) -> None:
    weights = dict(ink)
    key = break_it(weights)
    save_file(weights, str(tmp_path / "hostile.safetensors"))
    pipe = tiny_sd1()
    modules = [type(m) for m in pipe.unet.modules()]
    with pytest.raises(NetworkFileError, match=expected) as caught:
        encode(pipe, "a cat <lora:hostile:1>", lora_dir=tmp_path)
    assert "LoRA 'hostile' (" in str(caught.value)
    assert "hostile.safetensors" in str(caught.value)
    assert key in str(caught.value)
    assert not hasattr(pipe.unet, "peft_config")
    assert not hasattr(pipe.text_encoder, "peft_config")
    assert modules == [type(m) for m in pipe.unet.modules()]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is not a readable .safetensors file"),
        (b"\x80\x04\x95 a pickle, not safetensors", "is not a readable .safetensors file"),
        (None, "is not a readable .safetensors file"),  # truncated
    ],
    ids=["empty", "pickle", "truncated"],
)
def test_unreadable_lora_files_are_refused(
    ink: dict[str, torch.Tensor], tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "odd.safetensors"
    if content is None:
        save_file(ink, str(path))
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    pipe = tiny_sd1()
    with pytest.raises(NetworkFileError, match=expected) as caught:
        encode(pipe, "a cat <lora:odd:1>", lora_dir=tmp_path)
    assert "odd.safetensors" in str(caught.value)
    assert not hasattr(pipe.unet, "peft_config")


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".bin"])
def test_only_safetensors_loras(sd1: Any, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"evil{suffix}"
    path.write_bytes(b"never read")
    with pytest.raises(NetworkFileError, match=r"only \.safetensors files are loaded"):
        encode(sd1, "a cat <lora:evil:1>", loras={"evil": path})


# --- textual inversion ----------------------------------------------------------------------------


def _embedding_state(encoder: Any) -> tuple[Any, ...]:
    weight = encoder.get_input_embeddings().weight
    return weight.detach().clone(), encoder.config.vocab_size


def _tokenizer_state(tokenizer: Any) -> tuple[Any, ...]:
    return len(tokenizer), dict(tokenizer.get_added_vocab()), tokenizer.get_vocab()


def _assert_unchanged(pipe: Any, before: list[tuple[Any, ...]]) -> None:
    after = _ti_state(pipe)
    for (emb, vocab, *tok), (emb2, vocab2, *tok2) in zip(before, after, strict=True):
        assert emb.shape == emb2.shape
        assert torch.equal(emb, emb2)
        assert vocab == vocab2
        assert tok == tok2


def _ti_state(pipe: Any) -> list[tuple[Any, ...]]:
    pairs = [("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")]
    return [
        _embedding_state(getattr(pipe, e)) + _tokenizer_state(getattr(pipe, t))
        for e, t in pairs
        if getattr(pipe, e, None) is not None
    ]


def test_textual_inversion_file_is_used_inside_weighted_spans(tmp_path: Path) -> None:
    vectors = torch.randn(3, 32, generator=torch.Generator().manual_seed(5))
    path = tmp_path / "mytoken.safetensors"
    save_file({"emb_params": vectors}, str(path))
    pipe = tiny_sd1()
    assert load_textual_inversion(pipe, path) == "mytoken"
    plain = encode(pipe, "a mytoken cat", strategy="a1111-no-norm")
    # Exactly what diffusers' own loader and encode_prompt give for the same vectors.
    other = tiny_sd1()
    other.load_textual_inversion({"mytoken": vectors}, token="mytoken")
    assert torch.equal(plain.prompt_embeds, reference(other, "a mytoken cat", "")[0])
    weighted = encode(pipe, "a (mytoken:1.2) cat", strategy="a1111-no-norm")
    assert not torch.equal(weighted.prompt_embeds, plain.prompt_embeds)
    positions = slice(2, 5)  # BOS, "a", then the three vectors
    torch.testing.assert_close(
        weighted.prompt_embeds[0, positions], plain.prompt_embeds[0, positions] * 1.2
    )
    assert torch.equal(weighted.prompt_embeds[0, 5:], plain.prompt_embeds[0, 5:])
    assert not torch.equal(
        plain.prompt_embeds, encode(pipe, "a cat cat", strategy="a1111-no-norm").prompt_embeds
    )


def test_textual_inversion_token_and_single_vector(sd1: Any, tmp_path: Path) -> None:
    path = tmp_path / "whatever.safetensors"
    save_file({"<x>": torch.randn(32)}, str(path))  # diffusers' one-key file, one (width,) vector
    pipe = tiny_sd1()
    assert load_textual_inversion(pipe, path, token="onevec") == "onevec"
    assert "onevec" in pipe.tokenizer.get_added_vocab()
    assert "onevec_1" not in pipe.tokenizer.get_added_vocab()
    assert encode(pipe, "a (onevec:0.5)").prompt_embeds.shape == (1, 77, 32)


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file(tensors, str(path))
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


TI_FAILURES: list[tuple[str, Callable[[Path], Path], str]] = [
    (
        "wrong width",
        lambda d: _save(d / "wide.safetensors", {"emb_params": torch.randn(2, 768)}),
        r"wide\.safetensors'\): tensor 'emb_params' has shape \(2, 768\) but text_encoder takes "
        r"vectors of width 32: expected \(2, 32\)",
    ),
    (
        "pickle suffix",
        lambda d: _save(d / "emb.safetensors", {"emb_params": torch.randn(2, 32)}).rename(
            d / "emb.pt"
        ),
        r"emb\.pt'\): only \.safetensors files are loaded",
    ),
    (
        "corrupt",
        lambda d: _write(d / "bad.safetensors", b"\x12\x00\x00\x00garbage"),
        r"bad\.safetensors'\) is not a readable \.safetensors file",
    ),
    (
        "truncated",
        lambda d: _write(
            d / "cut.safetensors",
            _save(d / "full.safetensors", {"emb_params": torch.randn(2, 32)}).read_bytes()[:-9],
        ),
        r"cut\.safetensors'\) is not a readable \.safetensors file",
    ),
    (
        "NaN",
        lambda d: _save(d / "nan.safetensors", {"emb_params": torch.tensor([[float("nan")] * 32])}),
        "tensor 'emb_params' holds NaN or infinite values",
    ),
    (
        "integers",
        lambda d: _save(
            d / "int.safetensors", {"emb_params": torch.ones(2, 32, dtype=torch.int64)}
        ),
        "tensor 'emb_params' is torch.int64; weights must be floating point",
    ),
    (
        "three dimensions",
        lambda d: _save(d / "cube.safetensors", {"emb_params": torch.randn(1, 2, 32)}),
        r"tensor 'emb_params' has shape \(1, 2, 32\); expected \(vectors, width\)",
    ),
    (
        "no vectors",
        lambda d: _save(d / "empty.safetensors", {"emb_params": torch.randn(0, 32)}),
        "has 0 vectors; an embedding has 1 to 75",
    ),
    (
        "too many vectors",
        lambda d: _save(d / "long.safetensors", {"emb_params": torch.randn(76, 32)}),
        "has 76 vectors; an embedding has 1 to 75",
    ),
    (
        "SDXL file",
        lambda d: _save(
            d / "xl.safetensors", {"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 32)}
        ),
        "is an SDXL embedding",
    ),
    (
        "several tensors",
        lambda d: _save(d / "many.safetensors", {"a": torch.randn(2, 32), "b": torch.randn(2, 32)}),
        r"holds the tensors \['a', 'b'\]",
    ),
    (
        "token taken",
        lambda d: _save(d / "taken.safetensors", {"emb_params": torch.randn(2, 32)}),
        "already has the token 'taken'",
    ),
]


@pytest.mark.parametrize(
    ("make", "expected"), [pytest.param(m, e, id=i) for i, m, e in TI_FAILURES]
)
def test_bad_textual_inversion_files_change_nothing(
    tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    pipe = tiny_sd1()
    path = make(tmp_path)
    if path.stem == "taken":
        load_textual_inversion(pipe, path)
    before = _ti_state(pipe)
    with pytest.raises(NetworkFileError, match=expected) as caught:
        load_textual_inversion(pipe, path)
    assert str(path) in str(caught.value)
    _assert_unchanged(pipe, before)


def test_sdxl_textual_inversion_pair(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(7)
    pair = {"clip_l": torch.randn(2, 32, generator=generator)}
    pair["clip_g"] = torch.randn(2, 32, generator=generator)
    path = _save(tmp_path / "xlemb.safetensors", pair)
    pipe = tiny_sdxl()
    with pytest.raises(NetworkFileError, match="an SDXL pipeline needs 'clip_l' and 'clip_g'"):
        load_textual_inversion(
            pipe, _save(tmp_path / "one.safetensors", {"emb_params": torch.randn(2, 32)})
        )
    uneven = {"clip_l": torch.randn(2, 32), "clip_g": torch.randn(3, 32)}
    with pytest.raises(NetworkFileError, match="'clip_l' has 2 vectors but 'clip_g' has 3"):
        load_textual_inversion(pipe, _save(tmp_path / "uneven.safetensors", uneven))
    load_textual_inversion(pipe, path)
    for tokenizer in (pipe.tokenizer, pipe.tokenizer_2):
        assert {"xlemb", "xlemb_1"} <= set(tokenizer.get_added_vocab())
    other = tiny_sdxl()
    pairs = [("clip_l", other.text_encoder, other.tokenizer)]
    pairs.append(("clip_g", other.text_encoder_2, other.tokenizer_2))
    for part, encoder, tokenizer in pairs:
        other.load_textual_inversion(
            {"xlemb": pair[part]}, token="xlemb", text_encoder=encoder, tokenizer=tokenizer
        )
    ours = encode(pipe, "a xlemb cat", "blue dog")
    assert torch.equal(ours.prompt_embeds, reference(other, "a xlemb cat", "blue dog")[0])
    assert torch.equal(ours.pooled_prompt_embeds, reference(other, "a xlemb cat", "blue dog")[2])


def test_sdxl_textual_inversion_is_rolled_back_when_the_second_encoder_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _save(
        tmp_path / "half.safetensors", {"clip_l": torch.randn(3, 32), "clip_g": torch.randn(3, 32)}
    )
    pipe = tiny_sdxl()
    before = _ti_state(pipe)
    load = pipe.load_textual_inversion
    calls: list[Any] = []

    def flaky(*args: Any, **kwargs: Any) -> None:
        calls.append(kwargs["tokenizer"])
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        load(*args, **kwargs)

    monkeypatch.setattr(pipe, "load_textual_inversion", flaky)
    with pytest.raises(NetworkFileError, match=r"half\.safetensors.*could not register it"):
        load_textual_inversion(pipe, path)
    assert calls == [pipe.tokenizer, pipe.tokenizer_2]
    _assert_unchanged(pipe, before)
    assert encode(pipe, "a half cat").prompt_embeds.shape == (1, 77, 64)
    # An interrupt is rolled back too, and stays an interrupt.
    calls.clear()

    def interrupted(*args: Any, **kwargs: Any) -> None:
        load(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipe, "load_textual_inversion", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_textual_inversion(pipe, path)
    _assert_unchanged(pipe, before)


def test_sdxl_refiner_takes_clip_g(tmp_path: Path) -> None:
    path = _save(
        tmp_path / "refi.safetensors", {"clip_l": torch.randn(1, 32), "clip_g": torch.randn(1, 32)}
    )
    pipe = tiny_sdxl_refiner()
    load_textual_inversion(pipe, path)
    assert "refi" in pipe.tokenizer_2.get_added_vocab()


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_diffusers import write_lora

    folder = tmp_path_factory.mktemp("loras")
    write_lora(folder, "ink")
    return folder


@pytest.mark.parametrize("kind", ["lora", "ti"])
def test_files_are_checked_in_the_models_dtype(
    sd1: object, lora_dir: Path, tmp_path: Path, kind: str
) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from promptweights.diffusers import encode, load_textual_inversion

    if kind == "lora":
        weights = load_file(str(lora_dir / "ink.safetensors"))
        key = next(iter(sorted(weights)))
        weights[key] = weights[key].double()
        weights[key][0] = 1e39  # finite in float64, infinite in the float32 model
        save_file(weights, str(tmp_path / "big.safetensors"))
        with pytest.raises(pw.NetworkFileError, match=f"{key!r}.*past the range of float32"):
            encode(sd1, "a <lora:big:1>", lora_dir=tmp_path)
    else:
        width = sd1.text_encoder.get_input_embeddings().embedding_dim  # type: ignore[attr-defined]
        vectors = torch.zeros(1, width, dtype=torch.float64)
        vectors[0, 0] = -1e39
        save_file({"emb_params": vectors}, str(tmp_path / "bigvec.safetensors"))
        with pytest.raises(pw.NetworkFileError, match="past the range of float32"):
            load_textual_inversion(sd1, tmp_path / "bigvec.safetensors")
