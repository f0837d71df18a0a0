"""A deterministic corpus of realistic A1111 prompts for the parse benchmark.

:func:`generate` writes prompts the way people share them on civitai: quality tags up front,
``(masterpiece:1.2)`` and ``((best quality))`` emphasis, ``[blurry]`` de-emphasis, danbooru tags
with escaped brackets (``lucy \\(cyberpunk\\)``), artists, LoRA tags ``<lora:x:0.7>``, some prompt
editing ``[a:b:0.5]``, a few alternations ``[a|b]``, ``BREAK``, ``AND``, NovelAI-style ``{braces}``
(about 12% of prompts in the wild) and negative prompts. Lengths run from 50 to 1500 characters,
about 300 on average. The same seed always gives the same corpus, so numbers are comparable
between runs and machines.

Run ``python -m benchmarks.corpus`` to print statistics and a few samples.
"""

from __future__ import annotations

import random

__all__ = ["DEFAULT_SEED", "DEFAULT_SIZE", "generate", "stats"]

DEFAULT_SEED = 20240727  # the release date of A1111 v1.10.1
DEFAULT_SIZE = 600

QUALITY = (
    "masterpiece",
    "best quality",
    "high quality",
    "ultra detailed",
    "highres",
    "absurdres",
    "8k",
    "4k",
    "extremely detailed CG unity 8k wallpaper",
    "official art",
    "score_9",
    "score_8_up",
    "score_7_up",
    "photorealistic",
    "raw photo",
    "intricate details",
    "sharp focus",
    "hdr",
)
SUBJECTS = (
    "1girl",
    "1boy",
    "solo",
    "2girls",
    "a beautiful woman",
    "portrait of an old man",
    "a knight in shining armor",
    "cyberpunk city at night",
    "a cozy cabin in the woods",
    "cute cat",
    "dragon",
    "lucy \\(cyberpunk\\)",
    "hatsune miku",
    "astronaut riding a horse",
    "fantasy landscape",
    "mecha",
    "elf",
    "witch",
)
DETAILS = (
    "long hair",
    "short hair",
    "blonde hair",
    "silver hair",
    "blue eyes",
    "red eyes",
    "smile",
    "looking at viewer",
    "upper body",
    "full body",
    "white dress",
    "school uniform",
    "hoodie",
    "armor",
    "outdoors",
    "indoors",
    "sunset",
    "night sky",
    "city lights",
    "cherry blossoms",
    "rain",
    "snow",
    "forest",
    "beach",
    "depth of field",
    "bokeh",
    "cinematic lighting",
    "volumetric lighting",
    "rim lighting",
    "soft lighting",
    "dramatic shadows",
    "film grain",
    "detailed face",
    "detailed eyes",
    "wind",
    "floating hair",
    "holding sword",
    "dynamic pose",
    "from side",
    "from below",
    "wide shot",
    "close-up",
    "bangs",
    "hair ornament",
    "jewelry",
    "earrings",
    "sitting",
    "standing",
    "rule of thirds",
)
ARTISTS = (
    "by greg rutkowski",
    "by alphonse mucha",
    "by artgerm",
    "by wlop",
    "by makoto shinkai",
    "studio ghibli",
    "by ilya kuvshinov",
    "by krenz cushart",
    "by rossdraws",
    "trending on artstation",
    "by james jean",
    "by hayao miyazaki",
)
NEGATIVE = (
    "worst quality",
    "low quality",
    "normal quality",
    "lowres",
    "bad anatomy",
    "bad hands",
    "extra fingers",
    "missing fingers",
    "blurry",
    "jpeg artifacts",
    "watermark",
    "signature",
    "text",
    "username",
    "cropped",
    "out of frame",
    "deformed",
    "ugly",
    "mutated hands",
    "poorly drawn face",
    "easynegative",
    "bad-hands-5",
    "ng_deepnegative_v1_75t",
    "monochrome",
    "greyscale",
)
LORAS = (
    "add_detail",
    "more_details",
    "epiNoiseoffset_v2",
    "LowRA",
    "detail_tweaker",
    "film_grain_v1",
    "GoodHands-beta2",
    "animeoutlineV4_16",
    "flat2",
    "koreanDollLikeness_v15",
    "hipoly_3dcg_v7",
    "Pixel_Art_XL",
)
WEIGHTS = ("1.1", "1.2", "1.3", "1.4", "1.5", "0.8", "0.9", "0.7", "1.15", "1.05", "1.25")
EDIT_WHENS = ("0.2", "0.3", "0.5", "0.6", "0.7", ".4", "5", "8", "10", "12", "15")


def _decorate(tag: str, rng: random.Random, *, braces: bool) -> str:
    """One tag, usually plain, sometimes with the emphasis people actually write."""
    roll = rng.random()
    if braces:  # NovelAI habits pasted into A1111
        if roll < 0.18:
            return "{" + tag + "}"
        if roll < 0.26:
            return "{{" + tag + "}}"
        if roll < 0.30:
            return "{{{" + tag + "}}}"
        if roll < 0.34:
            return "[" + tag + "]"
        return tag
    if roll < 0.14:
        return f"({tag}:{rng.choice(WEIGHTS)})"
    if roll < 0.22:
        return f"({tag})"
    if roll < 0.26:
        return f"(({tag}))"
    if roll < 0.28:
        return f"((({tag})))"
    if roll < 0.32:
        return f"[{tag}]"
    return tag


def _edit(rng: random.Random) -> str:
    a, b = rng.sample(DETAILS, 2)
    form = rng.random()
    when = rng.choice(EDIT_WHENS)
    if form < 0.6:
        return f"[{a}:{b}:{when}]"
    if form < 0.8:
        return f"[{a}:{when}]"
    return f"[{a}::{when}]"


def _alternation(rng: random.Random) -> str:
    options = rng.sample(DETAILS, rng.choice((2, 2, 3)))
    if rng.random() < 0.2:
        options.append("")
    return "[" + "|".join(options) + "]"


def _lora(rng: random.Random) -> str:
    name = rng.choice(LORAS)
    weight = rng.choice(("0.4", "0.5", "0.6", "0.7", "0.8", "1", "1.0", "0.65"))
    if rng.random() < 0.1:
        return f"<lora:{name}:{weight}:0.5>"
    return f"<lora:{name}:{weight}>"


def _length_target(rng: random.Random) -> int:
    # Log-normal around 210 characters, clipped to 50..1500: mean about 300, a long tail, and a
    # few of the very long prompts some people paste.
    if rng.random() < 0.02:
        return rng.randint(900, 1450)
    return max(50, min(1500, int(rng.lognormvariate(5.35, 0.55))))


def _tags(rng: random.Random, target: int, *, negative: bool, braces: bool) -> list[str]:
    tags: list[str] = []
    size = 0
    pool: tuple[str, ...]
    if negative:
        pool = NEGATIVE + DETAILS[:10]
        if rng.random() < 0.7:
            first, second = rng.sample(NEGATIVE, 2)
            tags.append(f"({first}, {second}:{rng.choice(('1.3', '1.4', '2'))})")
    else:
        tags.extend(
            _decorate(tag, rng, braces=braces) for tag in rng.sample(QUALITY, rng.randint(1, 4))
        )
        tags.append(rng.choice(SUBJECTS))
        pool = DETAILS + DETAILS + ARTISTS + QUALITY
    while size < target:
        roll = rng.random()
        if not negative and not braces and roll < 0.012:
            tag = _edit(rng)
        elif not negative and not braces and roll < 0.015:
            tag = _alternation(rng)
        elif not negative and roll < 0.035:
            tag = _lora(rng)
        else:
            tag = _decorate(rng.choice(pool), rng, braces=braces)
        tags.append(tag)
        size += len(tag) + 2
    return tags


def _prompt(rng: random.Random) -> str:
    target = _length_target(rng)
    kind = rng.random()
    negative = kind < 0.2
    braces = 0.2 <= kind < 0.32
    tags = _tags(rng, target, negative=negative, braces=braces)
    if not negative and not braces and rng.random() < 0.12 and len(tags) > 6:
        # BREAK between the subject and the scene, sometimes on its own line.
        cut = rng.randint(3, len(tags) - 2)
        tags.insert(cut, rng.choice(("BREAK", "\nBREAK\n")))
    text = ", ".join(tags).replace(", \nBREAK\n, ", "\nBREAK\n").replace(", BREAK, ", " BREAK ")
    if not negative and rng.random() < 0.04:
        other = ", ".join(_tags(rng, rng.randint(40, 160), negative=False, braces=False))
        weight = rng.choice(("", "", " :0.8", ":1.2", " :0.5"))
        text = f"{text} AND {other}{weight}"
    if rng.random() < 0.01:
        text = f"# {rng.choice(SUBJECTS)} test\n{text}"
    return text[:1500]


def generate(size: int = DEFAULT_SIZE, *, seed: int = DEFAULT_SEED) -> list[str]:
    """Return ``size`` distinct realistic prompts; the same seed gives the same list."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < size:
        text = _prompt(rng)
        if text not in seen and len(text) >= 50:
            seen.add(text)
            out.append(text)
    return out


def stats(prompts: list[str]) -> dict[str, float]:
    """Count, mean/min/max length and the share of prompts using each construct."""
    n = len(prompts)

    def share(predicate: str) -> float:
        return sum(predicate in p for p in prompts) / n

    return {
        "prompts": n,
        "mean_chars": sum(map(len, prompts)) / n,
        "min_chars": min(map(len, prompts)),
        "max_chars": max(map(len, prompts)),
        "lora": share("<lora:"),
        "braces": share("{"),
        "break": share("BREAK"),
        "and": share(" AND "),
        "alternation": sum("|" in p for p in prompts) / n,
    }


if __name__ == "__main__":
    corpus = generate()
    for key, value in stats(corpus).items():
        print(f"{key:12} {value:.3f}" if isinstance(value, float) else f"{key:12} {value}")
    for sample in corpus[:5]:
        print("---")
        print(sample)
