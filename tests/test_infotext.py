from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptweights import infotext, infotext_codec
from promptweights.errors import InfotextError, InfotextLimitError, LimitExceededError
from promptweights.infotext import (
    A1111_KEY_ORDER,
    MAX_INFOTEXT_CHARS,
    GenerationParameters,
    parse,
    read_image,
    read_image_text,
    save_image,
)

DATA = json.loads(
    (Path(__file__).parent / "data" / "a1111" / "infotext.json").read_text(encoding="utf-8")
)

A1111_TEXT = DATA["read"][0]["infotext"]


def _a1111_value(value: object) -> str:
    # The reference prints A1111's own types; every setting here is a string.
    return str(value)


def _a1111_write(prompt: str, negative: str, params: dict[str, str | None]) -> str:
    """A1111's writer as a1111-behaviour.md §10.1 describes it (independent of promptweights)."""

    def quote(value: str) -> str:
        if "," not in value and ":" not in value and "\n" not in value:
            return value
        return json.dumps(value, ensure_ascii=False)

    line = ", ".join(
        k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None
    )
    negative_text = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{negative_text}\n{line}".strip()


# ---- parity with the reference's real examples ---------------------------------------------------


@pytest.mark.parametrize("case", DATA["read"], ids=lambda case: case["infotext"][:30])
def test_reads_like_a1111(case: dict[str, object]) -> None:
    params = parse(str(case["infotext"]))
    if "prompt" in case:
        assert params.prompt == case["prompt"]
    if "negative_prompt" in case:
        assert params.negative_prompt == case["negative_prompt"]
    for key, value in dict(case.get("settings", {})).items():  # type: ignore[call-overload]
        assert params.settings[key] == _a1111_value(value), key
    for key in case.get("absent", []):  # type: ignore[attr-defined]
        assert key not in params.settings


@pytest.mark.parametrize(("value", "written"), DATA["quote"])
def test_quotes_like_a1111(value: str, written: str) -> None:
    params = GenerationParameters("p", "", (("Steps", "1"), ("Model", value), ("Seed", "2")))
    assert infotext.format(params) == f"p\nSteps: 1, Model: {written}, Seed: 2"
    assert parse(infotext.format(params)) == params


def test_defaults_like_a1111() -> None:
    params = parse("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7")
    for key, value in DATA["defaults"]["values"].items():
        assert params.settings[key] == _a1111_value(value), key
    assert "Emphasis" not in params.settings  # no weights in "a cat"
    assert params.defaulted() == frozenset(DATA["defaults"]["values"])


def test_key_order_like_a1111() -> None:
    assert list(A1111_KEY_ORDER) == DATA["key_order"]["keys"]
    reversed_settings = dict.fromkeys(reversed([*DATA["key_order"]["keys"], "Extra"]), "1")
    reversed_settings = {"User": "me", "Version": "v1", **reversed_settings, "Other": "2"}
    params = GenerationParameters.from_settings("p", "", reversed_settings, a1111_rules=False)
    written = infotext.format(params)
    keys = [item.split(":")[0] for item in written.split("\n")[1].split(", ")]
    assert keys == [*DATA["key_order"]["keys"], "Extra", "Other", *DATA["key_order"]["last"]]


@pytest.mark.parametrize(
    "case", [c for c in DATA["read"] if "  " not in c["infotext"]], ids=lambda c: c["infotext"][:30]
)
def test_a1111_text_round_trips(case: dict[str, object]) -> None:
    text = str(case["infotext"])
    assert infotext.format(parse(text)) == text
    assert infotext.format(parse(text), keep_source=False) == text


# ---- reading ----------------------------------------------------------------------------------


def test_typed_accessors() -> None:
    text = (
        "a (cat:1.2) <lora:x:1>\nNegative prompt: bad\nSteps: 30, Sampler: DPM++ 2M, "
        "Schedule type: Karras, CFG scale: 6.5, Seed: 42, Size: 640x448, Model hash: 7f96a1a9ca, "
        "Model: anything, Denoising strength: 0.4, Clip skip: 2, Hires upscale: 2, "
        "Hires steps: 10, Hires upscaler: Latent, Hires resize: 1024x768, "
        'Lora hashes: "x: 0123456789ab, y z: ba9876543210", TI hashes: "emb: 99aa", '
        "Version: v1.10.1"
    )
    p = parse(text)
    assert (p.steps, p.sampler, p.schedule_type, p.cfg_scale, p.seed) == (
        30,
        "DPM++ 2M",
        "Karras",
        6.5,
        42,
    )
    assert (p.width, p.height, p.model_hash, p.model, p.clip_skip) == (
        640,
        448,
        "7f96a1a9ca",
        "anything",
        2,
    )
    assert (p.denoising_strength, p.version, p.emphasis) == (0.4, "v1.10.1", "Original")
    assert p.lora_hashes == {"x": "0123456789ab", "y z": "ba9876543210"}
    assert p.ti_hashes == {"emb": "99aa"}
    assert (p.hires_upscale, p.hires_steps, p.hires_upscaler, p.hires_size) == (
        2.0,
        10,
        "Latent",
        (1024, 768),
    )
    assert (p.hires_sampler, p.hires_schedule_type, p.hires_prompt) == (
        "Use same sampler",
        "Use same scheduler",
        "",
    )
    choice = p.sampler_choice()
    assert (choice.sampler, choice.schedule_type, choice.schedule) == (
        "DPM++ 2M",
        "Automatic",
        "Karras",
    )


def test_absent_values_are_none_or_defaults() -> None:
    p = parse("just a prompt")
    assert p.prompt == "just a prompt"
    assert (p.steps, p.sampler, p.seed, p.width, p.hires_size, p.version) == (None,) * 6
    assert (p.clip_skip, p.schedule_type, p.lora_hashes) == (1, "Automatic", {})
    assert p.sampler_choice().sampler == "DPM++ 2M"  # A1111's default


def test_malformed_numbers_raise_clearly() -> None:
    p = parse("x\nSteps: many, Sampler: Euler, Seed: -1.5")
    with pytest.raises(InfotextError, match="Steps: 'many' is not an integer"):
        _ = p.steps
    with pytest.raises(InfotextError, match="Seed"):
        _ = p.seed


def test_crlf_and_blank_lines() -> None:
    p = parse("\r\n\r\na\r\n\r\nb\r\nNegative prompt: c\r\nSteps: 1, Sampler: Euler, Seed: 2\r\n")
    assert (p.prompt, p.negative_prompt, p.steps) == ("a\n\nb", "c", 1)


def test_empty_and_whitespace_text() -> None:
    assert parse("") == GenerationParameters()
    assert parse(" \n\t ") == GenerationParameters()
    assert infotext.format(GenerationParameters()) == ""


def test_missing_prompt() -> None:
    p = parse("Negative prompt: bad\nSteps: 20, Sampler: Euler, CFG scale: 7")
    assert (p.prompt, p.negative_prompt, p.steps) == ("", "bad", 20)
    assert infotext.format(p) == "Negative prompt: bad\nSteps: 20, Sampler: Euler, CFG scale: 7"


def test_a_later_negative_prompt_line_is_text() -> None:
    p = parse("a\nNegative prompt: b\nNegative prompt: c\nSteps: 1, Sampler: Euler, Seed: 2")
    assert p.negative_prompt == "b\nNegative prompt: c"


def test_size_is_split_instead_of_kept() -> None:
    p = parse("x\nSteps: 1, Size: 512x768, Seed resize from: -1x-1, Hires resize: 0x0")
    assert (p.settings["Size-1"], p.settings["Size-2"]) == ("512", "768")
    assert "Size" not in p.settings
    assert p.settings["Seed resize from"] == "-1x-1"  # no match for ^\d+x\d+$
    assert p.hires_size is None
    assert p.written["Size"] == "512x768"


def test_hypernet_is_appended_to_the_effective_prompt() -> None:
    p = parse("a cat\nSteps: 20, Hypernet: anime, Hypernet strength: 0.5")
    assert p.prompt == "a cat"
    assert p.effective_prompt == "a cat<hypernet:anime:0.5>"
    default = parse("a cat\nSteps: 20, Hypernet: anime, Seed: 1")
    assert default.effective_prompt == "a cat<hypernet:anime:1.0>"
    assert infotext.format(p) == "a cat\nSteps: 20, Hypernet: anime, Hypernet strength: 0.5"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", False),
        ("a (cat)", True),
        ("a [cat]", True),
        ("a (cat:1)", False),
        ("a \\(cat\\)", False),
        ("a BREAK b", False),
        ("(a BREAK b:1)", False),
        ("a (cat:1.2.3)", True),
    ],
)
def test_emphasis_default_follows_weights(prompt: str, expected: bool) -> None:
    p = parse(f"{prompt}\nSteps: 20, Sampler: Euler, Seed: 1")
    assert ("Emphasis" in p.settings) is expected
    negative = parse(f"x\nNegative prompt: {prompt}\nSteps: 20, Sampler: Euler, Seed: 1")
    assert ("Emphasis" in negative.settings) is expected
    written = parse(f"{prompt}\nSteps: 20, Emphasis: No norm, Seed: 1")
    assert written.emphasis == "No norm"


@pytest.mark.parametrize(
    ("version", "sampler", "prompt", "refiner", "expected"),
    [
        ("v1.5.2", "Euler", "a [b:c:5]", False, {"Old prompt editing timelines", "Downcast"}),
        ("v1.5.2", "Euler", "a b", False, {"Downcast"}),
        ("v1.5.2", "DDIM", "a", False, {"Pad conds v0", "Downcast"}),
        ("v1.5.2", "PLMS", "a", False, {"Pad conds v0", "Downcast"}),
        ("v1.6.0", "DDIM", "a [b]", False, {"Downcast"}),
        ("v1.7.0", "Euler", "a", False, {"Downcast"}),
        ("v1.7.0-224-g1234abc", "Euler", "a", False, {"Downcast"}),
        ("v1.7.0-225-g1234abc", "Euler", "a", False, set()),
        ("v1.7.0-RC-5-gabc", "Euler", "a", False, {"Downcast"}),
        ("v1.7.0", "Euler", "a", True, {"Downcast", "Refiner"}),
        ("v1.8.0", "Euler", "a", True, set()),
        ("v1.10.1", "DDIM", "a [b]", True, set()),
        ("f2.0.1v1.10.1-previous-636-gb835f24a", "DDIM", "[a]", True, set()),
        ("garbage", "DDIM", "[a]", True, set()),
    ],
)
def test_version_back_compat(
    version: str, sampler: str, prompt: str, refiner: bool, expected: set[str]
) -> None:
    refiner_text = ", Refiner: sdxl_refiner" if refiner else ""
    p = parse(f"{prompt}\nSteps: 20, Sampler: {sampler}{refiner_text}, Version: {version}")
    keys = {
        "Old prompt editing timelines": "Old prompt editing timelines",
        "Pad conds v0": "Pad conds v0",
        "Downcast": "Downcast alphas_cumprod",
    }
    for short, key in keys.items():
        assert (p.settings.get(key) == "True") is (short in expected), key
    switch = p.settings["Refiner switch by sampling steps"]
    assert switch == ("True" if "Refiner" in expected else "False")


def test_legacy_sampler_names_get_a_note() -> None:
    old = parse("a\nSteps: 20, Sampler: DPM++ 2M, Version: v1.8.0").sampler_choice()
    assert old.schedule == "Karras"  # what A1111 1.10 does
    assert any("before v1.9.0" in note for note in old.notes)
    new = parse("a\nSteps: 20, Sampler: DPM++ 2M, Version: v1.9.0").sampler_choice()
    assert not any("before v1.9.0" in note for note in new.notes)


def test_unknown_sampler_in_infotext() -> None:
    p = parse("a\nSteps: 20, Sampler: euler a, Seed: 1")
    with pytest.raises(KeyError, match="euler a"):
        p.sampler_choice()
    assert p.sampler_choice(a1111_fallback=True).sampler == "DPM++ 2M"


# ---- odd and hostile input ----------------------------------------------------------------------


def test_bare_keys_and_empty_values_round_trip() -> None:
    text = "a\nSteps: 20, Tiling, Sampler: , Seed: 1, CFG scale: 7"
    p = parse(text)
    assert p.pairs == (
        ("Steps", "20"),
        ("Tiling", None),
        ("Sampler", ""),
        ("Seed", "1"),
        ("CFG scale", "7"),
    )
    assert "Tiling" not in p.settings
    assert "Sampler" not in p.settings
    assert {d.kind for d in p.diagnostics} == {"bare-key", "empty-value"}
    assert infotext.format(p) == text
    assert infotext.format(p, keep_source=False) == text
    with pytest.raises(InfotextError, match="Tiling"):
        parse(text, strict=True)


def test_stray_text_is_reported() -> None:
    p = parse("a\nSteps: 20, ???, Seed: 1, x: 2, CFG scale: 7")
    assert p.written == {"Steps": "20", "Seed": "1", "CFG scale": "7"}
    assert [d.kind for d in p.diagnostics] == ["ignored-text", "ignored-text"]


def test_quoted_values_that_fail_to_decode_stay_raw() -> None:
    p = parse('a\nSteps: 20, Model: "bad \\x", Seed: 1, Note: "', strict=False)
    assert p.settings["Model"] == '"bad \\x"'
    assert p.settings["Note"] == '"'


def test_size_limit() -> None:
    with pytest.raises(InfotextLimitError, match="exceeds the limit"):
        parse("a" * (MAX_INFOTEXT_CHARS + 1))
    assert issubclass(InfotextLimitError, LimitExceededError)
    assert issubclass(InfotextLimitError, InfotextError)


def test_not_a_string() -> None:
    with pytest.raises(InfotextError, match="must be a str"):
        parse(b"a")  # type: ignore[arg-type]


def test_long_lines_parse_in_linear_time() -> None:
    # A1111's regex is quadratic on long colon-free runs; ours is not.
    text = "word " * 150_000 + "\nSteps: 20, Sampler: Euler, Seed: 1"
    assert parse(text).steps == 20
    last_line = "a" * 200_000
    assert parse(last_line).prompt == last_line


def test_hostile_nesting_is_bounded() -> None:
    prompt = "(" * 40_000 + "a" + ")" * 40_000
    p = parse(prompt + "\nSteps: 1, Sampler: Euler, Seed: 1")
    assert p.settings["Emphasis"] == "Original"
    assert any(d.kind == "emphasis-check-skipped" for d in p.diagnostics)


def test_unrepresentable_text_gives_a_clear_error() -> None:
    with pytest.raises(InfotextError, match="cannot be represented"):
        parse("ab: 1, cd: 2, ef: 3\nNegative prompt:")


@pytest.mark.parametrize(
    ("prompt", "negative", "pairs", "message"),
    [
        ("a ", "", (), "whitespace"),
        ("\na", "", (), "empty line"),
        ("a\nNegative prompt: b", "", (), "Negative prompt"),
        ("a\n", "", (), "empty line"),
        ("a", "", (("Steps", "1"), ("Seed", "2")), "at least 3"),
        ("a", "", (("S", "1"), ("Seed", "2"), ("Model", "m")), "cannot be written"),
        ("a", "", (("Steps:", "1"), ("Seed", "2"), ("Model", "m")), "cannot be written"),
        ("a", "", (("Steps", 1), ("Seed", "2"), ("Model", "m")), "must be a str"),
        ("ab: 1, cd: 2, ef: 3", "", (), "parameter line"),
        ("a", "ab: 1, cd: 2, ef: 3", (), "parameter line"),
    ],
)
def test_constructor_refuses_what_no_infotext_can_say(
    prompt: str, negative: str, pairs: tuple[tuple[str, str], ...], message: str
) -> None:
    with pytest.raises(InfotextError, match=message):
        GenerationParameters(prompt, negative, pairs)


# ---- building and editing ---------------------------------------------------------------------


def test_from_settings_and_replace() -> None:
    p = GenerationParameters.from_settings(
        "a (cat)",
        "ugly",
        {"Seed": 5, "Steps": 20, "Sampler": "Euler a", "CFG scale": 7.5, "Size-1": 512,
         "Size-2": 768, "Clip skip": None, "Version": "v1.10.1", "Emphasis": "No norm"},
    )  # fmt: skip
    assert infotext.format(p) == (
        "a (cat)\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 5, "
        "Size: 512x768, Emphasis: No norm, Version: v1.10.1"
    )
    q = p.with_settings(Seed=6, Clip_skip=2, Emphasis=None, ENSD=31337)
    assert infotext.format(q) == (
        "a (cat)\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 6, "
        "Size: 512x768, Clip skip: 2, ENSD: 31337, Version: v1.10.1"
    )
    assert p.emphasis == "No norm"
    r = p.with_settings({"Lora hashes": "x: 1", "Hires resize-1": 0})
    assert r.written["Lora hashes"] == "x: 1"
    assert list(r.written)[-1] == "Version"


@pytest.mark.parametrize(
    ("settings", "kept"),
    [
        ({"Clip skip": 1, "RNG": "GPU", "Eta": 1.0}, []),
        ({"Clip skip": 2, "RNG": "CPU", "Eta": 0.5}, ["Clip skip", "RNG", "Eta"]),
        ({"Variation seed": 5, "Variation seed strength": 0}, []),
        (
            {"Variation seed": 5, "Variation seed strength": 0.3},
            ["Variation seed", "Variation seed strength"],
        ),
        ({"Emphasis": "Original"}, []),
        ({"Emphasis": "No norm"}, ["Emphasis"]),
        ({"Tiling": "Tiling"}, ["Tiling"]),
    ],
)
def test_from_settings_omits_like_a1111(
    settings: dict[str, str | int | float | bool | None], kept: list[str]
) -> None:
    base: dict[str, str | int | float | bool | None] = {"Steps": 20, "Sampler": "Euler", "Seed": 1}
    p = GenerationParameters.from_settings("a (b)", "", {**base, **settings})
    assert [k for k, _ in p.pairs if k not in base] == kept
    assert ("Tiling", None) in p.pairs or "Tiling" not in kept
    plain = GenerationParameters.from_settings(
        "a (b)",
        "",
        {**base, **settings},
        a1111_rules=False,
    )
    assert [k for k, _ in plain.pairs if k not in base] == list(settings)
    no_brackets = GenerationParameters.from_settings("a b", "", {**base, "Emphasis": "No norm"})
    assert "Emphasis" not in no_brackets.written


def test_edited_parameters_do_not_reuse_stale_source() -> None:
    p = parse("a\r\nSteps: 20,Sampler: Euler,Seed: 1")
    assert infotext.format(p) == "a\r\nSteps: 20,Sampler: Euler,Seed: 1"
    assert infotext.format(p.with_settings(Seed=2)) == "a\nSteps: 20, Sampler: Euler, Seed: 2"
    import dataclasses

    stale = dataclasses.replace(p, prompt="b")
    assert infotext.format(stale) == "b\nSteps: 20, Sampler: Euler, Seed: 1"


def test_parameters_are_frozen_and_hashable() -> None:
    p = parse(A1111_TEXT)
    assert hash(p) == hash(parse(A1111_TEXT))
    with pytest.raises(AttributeError):
        p.prompt = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.settings["Steps"] = "1"  # type: ignore[index]


# ---- images -----------------------------------------------------------------------------------


def _image() -> object:
    image_module = pytest.importorskip("PIL.Image")
    return image_module.new("RGB", (8, 8), (200, 40, 40))


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize(
    "text", [A1111_TEXT, "一只猫, (cat:1.2)\nSteps: 20, Sampler: Euler, Seed: 1"]
)
def test_image_round_trip(kind: str, text: str) -> None:
    image = _image()
    buffer = io.BytesIO()
    save_image(image, buffer, parse(text), format=kind)
    assert read_image_text(buffer.getvalue()) == text
    buffer.seek(0)
    assert read_image(buffer) == parse(text)


def test_image_paths(tmp_path: Path) -> None:
    image = _image()
    for name in ("a.png", "a.jpg", "a.webp"):
        save_image(image, tmp_path / name, A1111_TEXT)
        assert read_image(tmp_path / name).seed == 965400086


def test_image_size_cap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    monkeypatch.setattr(infotext, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(InfotextLimitError):
        read_image_text(b"x" * 11)
    (tmp_path / "big.png").write_bytes(b"x" * 11)
    with pytest.raises(InfotextLimitError):
        read_image(tmp_path / "big.png")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")


def test_images_without_parameters() -> None:
    image = _image()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # type: ignore[attr-defined]
    assert read_image_text(buffer.getvalue()) is None
    with pytest.raises(InfotextError, match="no generation parameters"):
        read_image(buffer.getvalue())
    with pytest.raises(InfotextError, match="not an image"):
        read_image_text(b"GIF89a broken")
    with pytest.raises(InfotextError, match="cannot store"):
        save_image(image, io.BytesIO(), "a", format="BMP")


@pytest.mark.parametrize(
    ("comment", "text"),
    [
        (b"UNICODE\x00" + "a, b: ü".encode("utf-16-be"), "a, b: ü"),
        (b"UNICODE\x00" + "a, b: ü".encode("utf-16-le"), "a, b: ü"),
        (b"UNICODE\x00" + "a, b: ü".encode("utf-16"), "a, b: ü"),
        (b"ASCII\x00\x00\x00a, b", "a, b"),
        (b"JIS\x00\x00\x00\x00\x00" + "猫, b".encode("shift_jis"), "猫, b"),
        (b"UNICODE\x00\xff\xfea\x00b", "a\ufffd"),
        (b"\x00" * 8 + "a, ü".encode(), "a, ü"),
    ],
)
def test_exif_user_comment_encodings(comment: bytes, text: str) -> None:
    image_module = pytest.importorskip("PIL.Image")
    exif = image_module.Exif()
    exif.get_ifd(0x8769)[0x9286] = comment
    buffer = io.BytesIO()
    _image().save(buffer, format="JPEG", exif=exif.tobytes())  # type: ignore[attr-defined]
    assert read_image_text(buffer.getvalue()) == text


# ---- properties -------------------------------------------------------------------------------

A1111_PAIR_RE = re.compile(r"\s*(\w[\w \-/]+):\s*(\"(?:\\.|[^\\\"])+\"|[^,]*)(?:,|$)")

_line_alphabet = st.sampled_from(list('ab Z_1٣é-/:,"\\ \t\u00a0x'))


@given(st.text(_line_alphabet, max_size=40))
def test_pair_scanner_equals_the_a1111_regex(line: str) -> None:
    ours = [(m.key, m.raw, m.start, m.end) for m in infotext_codec._scan_pairs(line)]
    theirs = [(*m.groups(), *m.span()) for m in A1111_PAIR_RE.finditer(line)]
    assert ours == theirs


_KEY_CHARS = st.sampled_from(list("abcXYZ_019é -/"))
_keys = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(list("aZ_9é")),
    st.text(_KEY_CHARS, min_size=1, max_size=12),
)
_bare_keys = _keys.map(str.strip).filter(
    lambda k: infotext_codec._BARE_KEY_RE.fullmatch(k) is not None
)
_values = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20
) | st.sampled_from(["512x768", '"a"', " lead", "trail ", "", "a, b", 'x "y", z', "1.5"])
_line_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\n\x00"), max_size=20
).map(str.strip)
_texts = st.lists(_line_text, max_size=3).map("\n".join)


@st.composite
def generation_parameters(draw: st.DrawFn) -> GenerationParameters:
    items = draw(
        st.lists(st.one_of(st.tuples(_keys, _values), st.tuples(_bare_keys, st.none())), max_size=8)
    )
    if sum(value is not None for _, value in items) < 3:
        items = []
    try:
        return GenerationParameters(draw(_texts), draw(_texts), tuple(items))
    except InfotextError:
        return GenerationParameters(draw(_line_text), "", tuple(items) if items else ())


@given(st.one_of(generation_parameters(), st.builds(GenerationParameters)))
def test_parse_inverts_format(params: GenerationParameters) -> None:
    text = infotext.format(params)
    assert parse(text) == params
    assert parse(text).settings == params.settings


@given(
    _texts,
    _texts,
    st.dictionaries(
        st.sampled_from([*A1111_KEY_ORDER[:10], "Lora hashes", "Hires prompt", "Version", "Zz"]),
        st.text(
            st.characters(exclude_categories=["Cs", "Zs", "Cc", "Zl", "Zp"]),
            min_size=1,
            max_size=12,
        )
        # A1111 writes a value without , : or newline unquoted, but reads one that starts with "
        # as a quoted string running to the next value's ": A1111 itself cannot read it back.
        .filter(lambda v: infotext_codec._decode(v) == v and not v.startswith('"')),
        min_size=3,
        max_size=6,
    ),
)
def test_format_inverts_parse_on_a1111_text(
    prompt: str, negative: str, settings: dict[str, str]
) -> None:
    text = _a1111_write(prompt, negative, dict(settings))
    params = parse(text)
    assert infotext.format(params) == text
    assert params.written == settings
    if not prompt.startswith("\n") and not negative.startswith("\n"):
        # Text whose prompts A1111 reads back unchanged: our writer is A1111's writer.
        assert (params.prompt, params.negative_prompt) == (prompt, negative)
        assert infotext.format(params, keep_source=False) == text


_PIECES = st.sampled_from(
    ["Negative prompt:", "Steps: 20", ", ", ": ", '"', "\\", "\n", "\r\n", " ", "\t", "ab", "(",
     "[", ")", "\u2028", "é", '"a, b"', "Tiling", "Size: 5x6", "Version: v1.5.0", "Hypernet: x",
     "Sampler: DDIM", "Refiner: r", "Key:"]
)  # fmt: skip


@given(
    st.text(max_size=60)
    | st.text(_line_alphabet, max_size=60).map(lambda s: s + "\nSteps: 1")
    | st.lists(_PIECES, max_size=25).map("".join)
)
def test_parse_never_crashes(text: str) -> None:
    error: InfotextError | None = None
    try:
        params = parse(text)
    except InfotextError as exc:
        error = exc
    if error is not None:
        assert "cannot be represented" in str(error)
        return
    assert infotext.format(params) == text.strip()
    assert parse(infotext.format(params, keep_source=False)) == params
    dict(params.settings)


@st.composite
def _damaged_images(draw: st.DrawFn) -> bytes:
    image_module = pytest.importorskip("PIL.Image")
    kind = draw(st.sampled_from(["PNG", "JPEG", "WEBP"]))
    buffer = io.BytesIO()
    save_image(image_module.new("RGB", (4, 4)), buffer, A1111_TEXT, format=kind)
    data = bytearray(buffer.getvalue())
    for _ in range(draw(st.integers(1, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


@given(_damaged_images())
def test_damaged_images_never_crash(data: bytes) -> None:
    try:
        text = read_image_text(data)
    except InfotextError:
        return
    assert text is None or isinstance(text, str)


def test_hires_sampler_choice() -> None:
    same = parse("x\nSteps: 20, Sampler: Euler a, Schedule type: Karras, Hires upscale: 2")
    assert same.hires_sampler_choice() == same.sampler_choice()
    own = parse(
        "x\nSteps: 20, Sampler: Euler a, Hires sampler: DPM++ 2M SDE, "
        "Hires schedule type: Karras, Hires upscale: 2"
    )
    choice = own.hires_sampler_choice()
    assert (choice.sampler, choice.schedule) == ("DPM++ 2M SDE", "Karras")


def test_parameters_pickle_and_copy() -> None:
    import copy
    import pickle

    p = parse(A1111_TEXT.replace("\n", "\r\n"))
    assert p.settings["Steps"] == "20"  # fills the cache
    for clone in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p), copy.copy(p)):
        assert clone == p
        assert clone.settings == p.settings
        assert infotext.format(clone) == infotext.format(p)
