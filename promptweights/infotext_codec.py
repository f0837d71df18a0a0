"""A1111 generation parameters ("infotext") as text: :func:`parse` and :func:`format`.

The codec half of :mod:`promptweights.infotext` (which re-exports every public name here, and adds
reading and writing image files): text ↔ :class:`GenerationParameters`, exactly as A1111's reader
and writer (a1111-behaviour.md §10). Import it from :mod:`promptweights.infotext`.

>>> p = parse("a cat\\nSteps: 20, Sampler: Euler a, CFG scale: 7, Size: 512x768")
>>> p.steps, p.width
(20, 512)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import Diagnostic, InfotextError, InfotextLimitError

if TYPE_CHECKING:
    from .samplers import SamplerChoice

__all__ = [
    "A1111_KEY_ORDER",
    "EMPHASIS_STRATEGIES",
    "FAMILY_KEY",
    "MAX_INFOTEXT_CHARS",
    "SAMPLING_KEY",
    "SCHEDULER_KEY",
    "SEQUENCE_KEY",
    "STRATEGY_KEY",
    "UNSUPPORTED_SETTINGS",
    "GenerationParameters",
    "Value",
    "format",
    "parse",
    "unreproducible",
]

#: Longest infotext :func:`parse` accepts, in characters; past it, :class:`InfotextLimitError`.
#: Real infotexts are a few kB; Pillow itself caps a PNG text chunk at 1 MiB.
MAX_INFOTEXT_CHARS = 1_000_000

#: The keys A1111 writes first, in its order (§10.1); other keys follow in insertion order, then
#: ``Version`` and ``User``. Used by :meth:`GenerationParameters.from_settings`.
A1111_KEY_ORDER: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "FP8 weight",
    "Cache FP16 weight for LoRA",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Token merging ratio hr",
    "Init image hash",
    "RNG",
    "Tiling",
)
_LAST_KEYS = ("Version", "User")

#: A1111's ``Emphasis`` modes and the promptweights strategies that compute them (§9.1).
EMPHASIS_STRATEGIES: dict[str, str] = {
    "Original": "a1111",
    "No norm": "a1111-no-norm",
    "Ignore": "ignore",
    "None": "none",
}
#: Settings an infotext may hold that :func:`promptweights.diffusers.from_infotext` cannot
#: reproduce in diffusers.
UNSUPPORTED_SETTINGS = (
    "Hires upscale",
    "Hires resize-1",
    "Hires steps",
    "Hires upscaler",
    "Variation seed",
    "Seed resize from-1",
    "Face restoration",
    "Tiling",
    "ENSD",
    "Eta",
    "Eta DDIM",
    "Token merging ratio",
    "NGMS",
    "Hypernet",
    "Pad conds",
    "Pad conds v0",
    "Downcast alphas_cumprod",
    "Refiner",
)

#: The key promptweights writes for a weighting strategy A1111 has no ``Emphasis`` mode for.
STRATEGY_KEY = "Prompt weighting"
#: The key promptweights writes, instead of ``Sampler``, for an image made with the model's own
#: diffusers scheduler (its class name): ``promptweights.diffusers.from_infotext`` then keeps the
#: pipeline's scheduler. A1111 ignores the key and reads the missing ``Sampler`` as DPM++ 2M.
SCHEDULER_KEY = "Diffusers scheduler"
#: The key promptweights writes (value ``diffusers``) for an image sampled with a diffusers
#: scheduler and torch's generator rather than A1111's noise and samplers:
#: ``promptweights.diffusers.from_infotext`` then re-runs it the diffusers way by default.
SAMPLING_KEY = "Sampling"
#: The key promptweights writes for an image of a family A1111 does not run (``flux``, ``sd3``…:
#: ``promptweights.diffusers.family_of``): ``from_infotext`` warns when the pipeline is another.
FAMILY_KEY = "Model family"
#: The key promptweights writes for the T5 window an image was encoded with, when it is not the
#: pipeline's default (``max_sequence_length``): ``from_infotext`` encodes and runs with it.
SEQUENCE_KEY = "Max sequence length"

_NEGATIVE_PREFIX = "Negative prompt:"
_WXH_RE = re.compile(r"^(\d+)x(\d+)$")  # `$` as in A1111: also before one trailing newline
_PAIR_KEY_RE = re.compile(r"\w[\w \-/]+")
_BARE_KEY_RE = re.compile(r"\w(?:[\w \-/]*[\w\-/])?")
_VERSION_RE = re.compile(
    r"v?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre>a|b|c|rc|alpha|beta|pre|preview)[-_.]?(?P<pre_n>\d+)?)?"
    r"(?:-(?P<post>\d+)|[-_.]?(?:post|rev|r)[-_.]?(?P<post_n>\d+)?)?",
    re.IGNORECASE,
)
# Longest prompt (plus negative) whose emphasis is checked exactly; the check is A1111's attention
# parser, which is quadratic on adversarial nesting.
_EMPHASIS_CHECK_CHARS = 10_000

# Defaults A1111's reader adds for missing keys (§10.2 step 5), as strings. A1111 stores some of
# them as int/bool (`0`, `32`, `False`); every value here is a string, so they are `str()`-ed.
_DEFAULTS: tuple[tuple[str, str], ...] = (
    ("Clip skip", "1"),
    ("Hires resize-1", "0"),
    ("Hires resize-2", "0"),
    ("Hires sampler", "Use same sampler"),
    ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", "original"),
    ("Inpaint area", "Whole picture"),
    ("Masked area padding", "32"),
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", "0"),
    ("Schedule min sigma", "0"),
    ("Schedule rho", "0"),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
    ("Refiner switch by sampling steps", "False"),
)

Value = str | int | float | bool | None


# --------------------------------------------------------------------------------------------------
# The parameter line: A1111's pair regex, scanned in linear time


@dataclass(frozen=True, slots=True)
class _Match:
    key: str
    raw: str
    start: int
    end: int


def _is_word(ch: str) -> bool:
    # Python's `\w` for str patterns.
    return ch.isalnum() or ch == "_"


def _in_key_class(ch: str) -> bool:
    # `[\w \-/]`
    return ch == " " or ch == "-" or ch == "/" or ch.isalnum() or ch == "_"


def _scan_quoted(line: str, pos: int) -> int:
    """End of `"(?:\\\\.|[^\\\\"])+"` followed by `,` or end of line at ``pos``, or -1."""
    n = len(line)
    if pos >= n or line[pos] != '"':
        return -1
    i = pos + 1
    count = 0
    while i < n:
        ch = line[i]
        if ch == "\\":
            if i + 1 < n and line[i + 1] != "\n":  # `.` does not match a newline
                i += 2
                count += 1
                continue
            return -1
        if ch == '"':
            break
        i += 1
        count += 1
    if i >= n or count == 0:
        return -1
    end = i + 1  # after the closing quote
    if end == n or line[end] == ",":
        return end
    return -1


def _scan_pairs(line: str) -> list[_Match]:
    r"""All matches of A1111's pair regex in ``line``, as :func:`re.findall` finds them.

    The regex (§10.2 step 3) is ``\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)``. Run by
    ``re`` it is quadratic on long runs of words without a colon; this scanner gives the same
    matches in linear time (a property test compares the two).
    """
    matches: list[_Match] = []
    n = len(line)
    pos = 0
    last_end = 0
    while pos < n:
        q = pos
        while q < n and line[q].isspace():
            q += 1
        if q >= n or not _is_word(line[q]):
            pos = q + 1
            continue
        r = q + 1
        while r < n and _in_key_class(line[r]):
            r += 1
        if r == q + 1 or r >= n or line[r] != ":":
            # Every start inside this run ends at the same non-colon character: skip the run.
            pos = max(r, q + 1)
            continue
        v = r + 1
        while v < n and line[v].isspace():
            v += 1
        end = _scan_quoted(line, v)
        if end != -1:
            raw = line[v:end]
        else:
            comma = line.find(",", v)
            end = n if comma == -1 else comma
            raw = line[v:end]
        # The match starts where the whitespace before the key does (`\s*`), not before the
        # previous match's end.
        start = q
        while start > last_end and line[start - 1].isspace():
            start -= 1
        pos = last_end = end + 1 if end < n else n
        matches.append(_Match(line[q:r], raw, start, pos))
    return matches


def _decode(raw: str) -> str:
    """A1111's unquoting: JSON-decode a value that starts and ends with ``"``, else keep it."""
    if len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"':
        try:
            value = json.loads(raw)
        except ValueError:
            return raw
        if isinstance(value, str):
            return value
    return raw


def _a1111_quote(value: str) -> str:
    """A1111's writer quoting: JSON (non-ASCII kept) iff the value has ``,``, ``:`` or a newline."""
    if "," in value or ":" in value or "\n" in value:
        return json.dumps(value, ensure_ascii=False)
    return value


def _encode(value: str, *, last: bool) -> str:
    """Write ``value`` so that A1111's reader gives it back.

    A1111's quoting (:func:`_a1111_quote`) first; a value it would write raw but read back
    differently (leading whitespace, trailing whitespace at the end of the line, text that looks
    JSON-quoted) is JSON-quoted as well. Text A1111 wrote never holds such a value unless A1111
    itself could not read it back.
    """
    if "," in value or ":" in value or "\n" in value:
        return _a1111_quote(value)
    if value and (value[0].isspace() or (last and value[-1].isspace()) or _decode(value) != value):
        return json.dumps(value, ensure_ascii=False)
    return value


# --------------------------------------------------------------------------------------------------
# Version back-compat (§10.2 step 6)


def _version_key(text: str | None) -> tuple[tuple[int, ...], tuple[int, int], int] | None:
    """A comparable key for an A1111 ``Version`` (``v1.7.0-225-gabc`` → 1.7.0.post225), or None.

    Like A1111, only the first two dash-separated parts count, read as a PEP 440 version
    (``-N`` is a post-release); text that is no version (Forge's ``f2.0.1v1.10.1-…``) gives None.
    """
    if not text:
        return None
    parts = text.split("-")
    if len(parts) > 2:
        text = "-".join(parts[:2])
    m = _VERSION_RE.fullmatch(text.strip())
    if m is None:
        return None
    release = [int(x) for x in m.group("release").split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    pre = (0, int(m.group("pre_n") or 0)) if m.group("pre") else (1, 0)
    post_text = m.group("post") or m.group("post_n")
    post = int(post_text) if post_text is not None else -1
    return tuple(release), pre, post


_VersionKey = tuple[tuple[int, ...], tuple[int, int], int]


def _release(text: str) -> _VersionKey:
    key = _version_key(text)
    if key is None:  # pragma: no cover - constants below
        raise AssertionError(text)
    return key


_V1_6_0 = _release("v1.6.0")
_V1_7_0_225 = _release("v1.7.0-225")
_V1_8_0 = _release("v1.8.0")
_V1_9_0 = _release("v1.9.0")


def _backcompat(res: dict[str, str], prompt: str) -> None:
    key = _version_key(res.get("Version"))
    if key is None:
        return
    if key < _V1_6_0 and "[" in prompt:
        res["Old prompt editing timelines"] = "True"
    if key < _V1_6_0 and res.get("Sampler", "") in ("DDIM", "PLMS"):
        res["Pad conds v0"] = "True"
    if key < _V1_7_0_225:
        res["Downcast alphas_cumprod"] = "True"
    if key < _V1_8_0 and res.get("Refiner"):
        res["Refiner switch by sampling steps"] = "True"


def _uses_emphasis(texts: Iterable[str], diagnostics: list[Diagnostic]) -> bool:
    """Whether A1111's attention parser gives any weight ≠ 1 for one of ``texts`` (§9.1)."""
    texts = [t for t in texts if t]
    total = sum(len(t) for t in texts)
    if total > _EMPHASIS_CHECK_CHARS:
        # The exact check is quadratic on adversarial input; past the cap a bracket counts.
        diagnostics.append(
            Diagnostic(
                "emphasis-check-skipped",
                f"prompts of {total} characters are not checked exactly for weights; "
                "'Emphasis: Original' assumed if they contain '(' or '['",
                0,
            )
        )
        return any("(" in t or "[" in t for t in texts)
    from .spans import weighted_spans  # language layer, no torch

    for text in texts:
        for segment, weight in weighted_spans(text):
            if weight != 1.0 and segment != "BREAK":
                return True
    return False


# --------------------------------------------------------------------------------------------------
# The value type


def _check_lines(name: str, text: str) -> None:
    for number, line in enumerate(text.split("\n"), 1):
        if line != line.strip():
            raise InfotextError(
                f"line {number} of the {name} starts or ends with whitespace, "
                "which A1111's reader strips"
            )


def _check_pairs(pairs: tuple[Any, ...]) -> None:
    """Pairs an infotext can hold: keys A1111 reads, ``str`` values, 3 or more of them (or none)."""
    values = 0
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise InfotextError(f"pairs must be (str, str | None) tuples, not {pair!r}")
        key, value = pair
        if value is None:
            if not _BARE_KEY_RE.fullmatch(key):
                raise InfotextError(f"bare key {key!r} cannot be written in an infotext")
            continue
        if not isinstance(value, str):
            raise InfotextError(f"value of {key!r} must be a str, not {type(value).__name__}")
        if not _PAIR_KEY_RE.fullmatch(key):
            raise InfotextError(
                f"key {key!r} cannot be written in an infotext: A1111 reads keys of two or "
                "more letters, digits, '_', ' ', '-' and '/' starting with a letter or digit"
            )
        values += 1
    if pairs and values < 3:
        raise InfotextError(
            f"a parameter line needs at least 3 'key: value' pairs, not {values}: "
            "A1111 reads a shorter last line as part of the prompt"
        )


def _check_texts(prompt: str, negative_prompt: str, has_pairs: bool) -> None:
    """A prompt and negative that A1111 reads back as written (no stray negative or pair line)."""
    _check_lines("prompt", prompt)
    _check_lines("negative prompt", negative_prompt)
    if prompt.startswith("\n") or negative_prompt.startswith("\n"):
        raise InfotextError("the prompt and negative prompt cannot start with an empty line")
    for line in prompt.split("\n"):
        if line.startswith(_NEGATIVE_PREFIX):
            raise InfotextError(f"no prompt line can start with {_NEGATIVE_PREFIX!r}")
    if has_pairs:
        return
    if (negative_prompt or prompt).endswith("\n"):
        raise InfotextError("without parameters, the text cannot end with an empty line")
    last = _format_body(prompt, negative_prompt).strip().rsplit("\n", 1)[-1]
    if len(_scan_pairs(last)) >= 3:
        raise InfotextError(
            "without parameters, the last line cannot hold 3 or more 'key: value' pairs: "
            "A1111 would read it as the parameter line"
        )


@dataclass(frozen=True)
class GenerationParameters:
    """One image's generation parameters, as written in its infotext.

    The fields hold what the text *says*; :attr:`settings` holds what A1111 *reads* from it
    (splits, defaults, back-compat), and the properties give typed values. Construct one with
    :func:`parse`, :meth:`from_settings` or directly; the constructor refuses a value that no
    infotext can express (so that ``parse(format(p)) == p`` always holds).

    Attributes:
        prompt: the prompt as A1111 reads it: multi-line allowed, each line stripped (the exact
            text is in :attr:`source`); a ``Hypernet`` tag A1111 appends when reading is not part
            of it, see :attr:`effective_prompt`.
        negative_prompt: the negative prompt likewise (``""`` when there is none).
        pairs: the parameter line, in order: ``(key, value)`` for ``key: value``; ``(key, "")``
            for ``key:`` with nothing after it (A1111's reader ignores it); ``(key, None)`` for a
            bare key without a colon (A1111 writes a setting whose value equals its key that way,
            and its reader ignores it). A line needs at least three ``key: value`` pairs, or none.
        diagnostics: what :func:`parse` tolerated (not part of equality).
        source: the text :func:`parse` read, kept when it differs from what :func:`format`
            writes (spacing, CRLF, whitespace A1111 strips), so that :func:`format` can give it
            back unchanged; not part of equality, and ignored once the fields say something else.

    >>> pairs = (("Steps", "20"), ("Sampler", "Euler"), ("Seed", "1"))
    >>> p = GenerationParameters("a cat", "", pairs)
    >>> p.settings["Steps"], p.settings["Clip skip"]
    ('20', '1')
    """

    prompt: str = ""
    negative_prompt: str = ""
    pairs: tuple[tuple[str, str | None], ...] = ()
    diagnostics: tuple[Diagnostic, ...] = field(default=(), compare=False, repr=False)
    source: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise InfotextError("prompt and negative_prompt must be str")
        if not isinstance(self.pairs, tuple):
            object.__setattr__(self, "pairs", tuple(tuple(p) for p in self.pairs))
        _check_pairs(self.pairs)
        _check_texts(self.prompt, self.negative_prompt, bool(self.pairs))

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    def from_settings(
        cls,
        prompt: str,
        negative_prompt: str = "",
        settings: Mapping[str, Value] | None = None,
        *,
        a1111_rules: bool = True,
    ) -> GenerationParameters:
        """Build parameters from a mapping, in A1111's key order (:data:`A1111_KEY_ORDER`).

        Values are written as A1111 writes them: ``None`` is left out, ``True``/``False``/numbers
        become ``str(value)``. ``Size`` may also be given as ``width``/``height`` under the keys
        ``"Size-1"``/``"Size-2"`` (likewise any ``<key>-1``/``<key>-2`` pair).

        With ``a1111_rules`` (the default) A1111's writer's omissions apply too (§10.1, §9.1,
        §11.1), so the text is what A1111 writes for the same generation: ``Clip skip`` only if
        > 1, ``RNG`` only if not ``GPU``, ``Variation seed``/``Variation seed strength`` only if
        the strength is not 0, ``Eta`` only if not 1, ``Emphasis`` only if not ``Original`` and a
        prompt contains ``(`` or ``[``, and a value equal to its key as the bare key (which
        A1111's reader then ignores).

        Args:
            prompt: the prompt.
            negative_prompt: the negative prompt.
            settings: key → value.
            a1111_rules: apply A1111's writer's omissions.

        Returns:
            The parameters.

        Raises:
            InfotextError: for a key or text no infotext can hold (fewer than 3 settings, too).

        >>> p = GenerationParameters.from_settings(
        ...     "a cat", "", {"Seed": 1, "Steps": 20, "Size-1": 512, "Size-2": 768, "Clip skip": 1}
        ... )
        >>> format(p)
        'a cat\\nSteps: 20, Seed: 1, Size: 512x768'
        """
        written: dict[str, str] = {}
        halves: dict[str, dict[str, str]] = {}
        for key, value in (settings or {}).items():
            if value is None:
                continue
            text = str(value)
            if key.endswith(("-1", "-2")) and key[:-2]:
                halves.setdefault(key[:-2], {})[key[-1]] = text
                continue
            written[key] = text
        for key, half in halves.items():
            if set(half) == {"1", "2"} and key not in written:
                written[key] = f"{half['1']}x{half['2']}"
            else:
                for number, text in half.items():
                    written[f"{key}-{number}"] = text
        if a1111_rules:
            _drop_like_a1111(written, prompt, negative_prompt)
        first = [k for k in A1111_KEY_ORDER if k in written]
        last = [k for k in _LAST_KEYS if k in written]
        middle = [k for k in written if k not in A1111_KEY_ORDER and k not in _LAST_KEYS]
        pairs = tuple(
            (k, None if a1111_rules and written[k] == k else written[k])
            for k in (*first, *middle, *last)
        )
        return cls(prompt, negative_prompt, pairs)

    def with_settings(
        self, settings: Mapping[str, Value] | None = None, /, **keywords: Value
    ) -> GenerationParameters:
        """Return a copy with settings changed, added or (value ``None``) removed.

        A key already written keeps its place; a new one goes to its place in A1111's order
        (:data:`A1111_KEY_ORDER`), other new keys before ``Version``/``User``. Keyword names
        use ``_`` for spaces (``CFG_scale=5``); keys that are no identifiers go in ``settings``.

        Args:
            settings: key → value.
            keywords: more settings, ``_`` standing for a space.

        Returns:
            The new parameters (written in A1111's canonical form by :func:`format`).

        >>> p = parse("a\\nSteps: 20, Sampler: Euler, Version: v1.10.1")
        >>> format(p.with_settings({"Hires upscaler": "Latent"}, Seed=7))
        'a\\nSteps: 20, Sampler: Euler, Seed: 7, Hires upscaler: Latent, Version: v1.10.1'
        """
        changes = dict(settings or {})
        changes.update({k.replace("_", " "): v for k, v in keywords.items()})
        pairs = list(self.pairs)
        for key, value in changes.items():
            index = next((i for i, (k, _) in enumerate(pairs) if k == key), None)
            if value is None:
                if index is not None:
                    del pairs[index]
                continue
            text = str(value)
            if index is not None:
                pairs[index] = (key, text)
                continue
            at = next((i for i, (k, _) in enumerate(pairs) if k in _LAST_KEYS), len(pairs))
            if key in A1111_KEY_ORDER:
                rank = A1111_KEY_ORDER.index(key)
                at = next(
                    (
                        i
                        for i, (k, _) in enumerate(pairs)
                        if k not in A1111_KEY_ORDER or A1111_KEY_ORDER.index(k) > rank
                    ),
                    at,
                )
            pairs.insert(at, (key, text))
        return GenerationParameters(self.prompt, self.negative_prompt, tuple(pairs))

    def __getstate__(self) -> dict[str, object]:
        # The cached reading holds a mappingproxy, which pickle and deepcopy cannot copy.
        return {k: v for k, v in self.__dict__.items() if k != "_read"}

    # ---- what A1111 reads ------------------------------------------------------------------

    @cached_property
    def _read(self) -> tuple[Mapping[str, str], str, tuple[Diagnostic, ...]]:
        return _read_settings(self)

    @property
    def settings(self) -> Mapping[str, str]:
        """Every setting as A1111's reader gives it (read-only; all values are strings).

        The written pairs (later ones win; ``WxH`` values become ``<key>-1``/``<key>-2`` *instead*
        of ``<key>``, as in A1111), then the defaults A1111 adds for missing keys, ``Emphasis:
        Original`` when a prompt uses weights, and the version back-compat keys (§10.2).
        """
        return self._read[0]

    @property
    def effective_prompt(self) -> str:
        """The prompt A1111 uses: :attr:`prompt` plus ``<hypernet:X:S>`` for an old ``Hypernet``."""
        return self._read[1]

    @property
    def written(self) -> dict[str, str]:
        """The ``key: value`` pairs as written (no defaults, no splits; later ones win)."""
        return {k: v for k, v in self.pairs if v is not None}

    def defaulted(self) -> frozenset[str]:
        """Keys in :attr:`settings` that the text does not hold (defaults, back-compat, splits).

        >>> sorted(parse("a\\nSteps: 20, Size: 5x6, Clip skip: 2").defaulted())[:4]
        ['FP8 weight', 'Hires checkpoint', 'Hires negative prompt', 'Hires prompt']
        """
        written = self.written
        return frozenset(k for k in self.settings if k not in written)

    # ---- typed accessors ---------------------------------------------------------------------

    def _typed(self, key: str, kind: type[int] | type[float]) -> Any:
        text = self.settings.get(key)
        if text is None:
            return None
        try:
            return kind(text.strip())
        except ValueError:
            raise InfotextError(
                f"{key}: {text!r} is not {'an integer' if kind is int else 'a number'}"
            ) from None

    @property
    def steps(self) -> int | None:
        """``Steps`` as an int (None if absent)."""
        return self._typed("Steps", int)  # type: ignore[no-any-return]

    @property
    def sampler(self) -> str | None:
        """``Sampler`` as written (may carry a legacy schedule suffix: ``DPM++ 2M Karras``)."""
        return self.settings.get("Sampler")

    @property
    def schedule_type(self) -> str:
        """``Schedule type`` (``"Automatic"`` when absent, as A1111 reads it)."""
        return self.settings.get("Schedule type", "Automatic")

    @property
    def cfg_scale(self) -> float | None:
        """``CFG scale`` as a float."""
        return self._typed("CFG scale", float)  # type: ignore[no-any-return]

    @property
    def seed(self) -> int | None:
        """``Seed`` as an int."""
        return self._typed("Seed", int)  # type: ignore[no-any-return]

    @property
    def width(self) -> int | None:
        """Width from ``Size: WxH``."""
        return self._typed("Size-1", int)  # type: ignore[no-any-return]

    @property
    def height(self) -> int | None:
        """Height from ``Size: WxH``."""
        return self._typed("Size-2", int)  # type: ignore[no-any-return]

    @property
    def model_hash(self) -> str | None:
        """``Model hash`` (10 hex digits; 8 for A1111's legacy hash)."""
        return self.settings.get("Model hash")

    @property
    def model(self) -> str | None:
        """``Model`` (checkpoint name)."""
        return self.settings.get("Model")

    @property
    def clip_skip(self) -> int:
        """``Clip skip`` (1 when absent)."""
        value = self._typed("Clip skip", int)
        return 1 if value is None else int(value)

    @property
    def emphasis(self) -> str | None:
        """``Emphasis`` mode (``"Original"`` is assumed by A1111 when a prompt uses weights)."""
        return self.settings.get("Emphasis")

    @property
    def strategy(self) -> str:
        """The weighting strategy to reproduce the image: ``Prompt weighting`` when present
        (written by promptweights), else the ``Emphasis`` mode's; A1111 reads an unknown or
        missing mode as ``Original``, i.e. ``"a1111"``.

        >>> parse("x\\nSteps: 20, Sampler: Euler, Emphasis: No norm").strategy
        'a1111-no-norm'
        """
        written = self.written.get(STRATEGY_KEY)
        if written:
            return written
        return EMPHASIS_STRATEGIES.get(self.emphasis or "Original", "a1111")

    @property
    def denoising_strength(self) -> float | None:
        """``Denoising strength`` (img2img, or the hires pass)."""
        return self._typed("Denoising strength", float)  # type: ignore[no-any-return]

    @property
    def version(self) -> str | None:
        """``Version`` of the writing A1111 (``v1.10.1``)."""
        return self.settings.get("Version")

    @property
    def lora_hashes(self) -> dict[str, str]:
        """``Lora hashes: "name: hash, …"`` as ``{name: hash}``."""
        return _name_hashes(self.settings.get("Lora hashes"))

    @property
    def ti_hashes(self) -> dict[str, str]:
        """``TI hashes: "name: hash, …"`` as ``{name: hash}``."""
        return _name_hashes(self.settings.get("TI hashes"))

    @property
    def hires_upscale(self) -> float | None:
        """``Hires upscale`` factor (None if there was no hires pass)."""
        return self._typed("Hires upscale", float)  # type: ignore[no-any-return]

    @property
    def hires_steps(self) -> int | None:
        """``Hires steps`` (A1111: 0 or absent means "same as Steps")."""
        return self._typed("Hires steps", int)  # type: ignore[no-any-return]

    @property
    def hires_upscaler(self) -> str | None:
        """``Hires upscaler`` name."""
        return self.settings.get("Hires upscaler")

    @property
    def hires_size(self) -> tuple[int, int] | None:
        """``Hires resize: WxH`` as ``(width, height)``; None when absent or ``0x0``."""
        width = self._typed("Hires resize-1", int) or 0
        height = self._typed("Hires resize-2", int) or 0
        return (width, height) if width or height else None

    @property
    def hires_sampler(self) -> str:
        """``Hires sampler`` (``"Use same sampler"`` when absent)."""
        return self.settings.get("Hires sampler", "Use same sampler")

    @property
    def hires_schedule_type(self) -> str:
        """``Hires schedule type`` (``"Use same scheduler"`` when absent)."""
        return self.settings.get("Hires schedule type", "Use same scheduler")

    @property
    def hires_prompt(self) -> str:
        """``Hires prompt`` (``""``: same as the prompt)."""
        return self.settings.get("Hires prompt", "")

    @property
    def hires_negative_prompt(self) -> str:
        """``Hires negative prompt`` (``""``: same as the negative prompt)."""
        return self.settings.get("Hires negative prompt", "")

    def sampler_choice(self, *, a1111_fallback: bool = False) -> SamplerChoice:
        """Resolve ``Sampler`` and ``Schedule type`` (:func:`promptweights.samplers.resolve`).

        A1111 reads the name case-sensitively and folds legacy suffixes (``DPM++ 2M Karras``);
        an infotext without ``Sampler`` means A1111's default, DPM++ 2M.

        Args:
            a1111_fallback: read an unknown sampler as DPM++ 2M, as A1111 silently does.

        Returns:
            The sampler choice.

        Raises:
            UnknownNameError: for an unknown sampler or schedule type (without the fallback).

        >>> parse("x\\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7").sampler_choice().schedule
        'Karras'
        """
        from .samplers import resolve

        choice = resolve(
            self.sampler or "DPM++ 2M",
            self.schedule_type,
            a1111_fallback=a1111_fallback,
            as_infotext=True,
        )
        key = _version_key(self.version)
        legacy = ("DPM++ 2M", "DPM++ SDE", "DPM++ 2S a", "DPM2", "DPM2 a", "DPM++ 2M SDE")
        if (
            key is not None
            and key < _V1_9_0
            and "Schedule type" in self.defaulted()
            and self.sampler in (*legacy, "DPM++ 3M SDE")
        ):
            choice = choice.with_note(
                f"written by {self.version}: before v1.9.0 {self.sampler!r} meant the Uniform "
                "schedule; A1111 v1.10 reads it as the sampler's default schedule (no back-compat)"
            )
        return choice

    def hires_sampler_choice(self, *, a1111_fallback: bool = False) -> SamplerChoice:
        """Resolve the hires pass's sampler (``Use same sampler``/``scheduler`` → the main one's).

        Args:
            a1111_fallback: read an unknown sampler as DPM++ 2M, as A1111 silently does.

        Returns:
            The sampler choice of the hires pass.

        Raises:
            UnknownNameError: for an unknown sampler or schedule type (without the fallback).

        >>> text = "x\\nSteps: 20, Sampler: Euler a, Hires sampler: DPM++ 2M, Hires upscale: 2"
        >>> parse(text).hires_sampler_choice().schedule
        'Karras'
        """
        from .samplers import resolve

        sampler = self.hires_sampler
        if sampler == "Use same sampler":
            sampler = self.sampler or "DPM++ 2M"
        schedule = self.hires_schedule_type
        if schedule == "Use same scheduler":
            schedule = self.schedule_type
        return resolve(sampler, schedule, a1111_fallback=a1111_fallback, as_infotext=True)


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def _drop_like_a1111(written: dict[str, str], prompt: str, negative_prompt: str) -> None:
    """Remove what A1111's writer leaves out (§10.1, §9.1, §11.1)."""
    clip_skip = _number(written.get("Clip skip"))
    if clip_skip is not None and clip_skip <= 1:
        del written["Clip skip"]
    if written.get("RNG") == "GPU":
        del written["RNG"]
    if _number(written.get("Variation seed strength")) in (None, 0.0):
        written.pop("Variation seed", None)
        written.pop("Variation seed strength", None)
    if _number(written.get("Eta")) == 1.0:
        del written["Eta"]
    emphasis = written.get("Emphasis")
    brackets = any(c in text for text in (prompt, negative_prompt) for c in "([")
    if emphasis is not None and (emphasis == "Original" or not brackets):
        del written["Emphasis"]


def _name_hashes(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if not text:
        return out
    for item in text.split(","):
        name, sep, digest = item.partition(":")
        if sep and name.strip():
            out[name.strip()] = digest.strip()
    return out


def _read_settings(
    params: GenerationParameters,
) -> tuple[Mapping[str, str], str, tuple[Diagnostic, ...]]:
    """A1111's reader after the text is split: pairs, splits, defaults, back-compat (§10.2)."""
    res: dict[str, str] = {}
    diagnostics: list[Diagnostic] = []
    for key, value in params.pairs:
        if not value:
            continue  # bare keys and empty values: A1111's reader skips them
        m = _WXH_RE.match(value)
        if m is not None:
            res[f"{key}-1"] = m.group(1)
            res[f"{key}-2"] = m.group(2)
        else:
            res[key] = value
    prompt = params.prompt
    for key, default in _DEFAULTS[:1]:
        res.setdefault(key, default)
    hypernet = res.get("Hypernet")
    if hypernet is not None:
        prompt += f"<hypernet:{hypernet}:{res.get('Hypernet strength', '1.0')}>"
    for key, default in _DEFAULTS[1:-1]:
        res.setdefault(key, default)
    if "Emphasis" not in res and _uses_emphasis((prompt, params.negative_prompt), diagnostics):
        res["Emphasis"] = "Original"
    key, default = _DEFAULTS[-1]
    res.setdefault(key, default)
    _backcompat(res, prompt)
    return MappingProxyType(res), prompt, tuple(diagnostics)


# --------------------------------------------------------------------------------------------------
# parse and format


def parse(text: str, *, strict: bool = False) -> GenerationParameters:
    r"""Read A1111 infotext as A1111's ``parse_generation_parameters`` does (§10.2).

    The last line is the parameter line only if it holds at least 3 ``key: value`` pairs; the
    lines before it up to one starting with ``Negative prompt:`` are the prompt, the rest the
    negative prompt (each line stripped; CRLF is fine). Quoted values are JSON-decoded.

    Args:
        text: the infotext.
        strict: raise on anything A1111 would silently skip (empty values, stray text in the
            parameter line) instead of recording it in ``diagnostics``.

    Returns:
        The parameters; :attr:`GenerationParameters.settings` has what A1111 reads.

    Raises:
        InfotextError: ``text`` is not a str, or (``strict``) something was skipped.
        InfotextLimitError: ``text`` is longer than :data:`MAX_INFOTEXT_CHARS`.

    >>> p = parse("girl\r\nNegative prompt: ugly\r\nSteps: 20, Sampler: Euler a, Size: 512x512")
    >>> p.prompt, p.negative_prompt, p.settings["Size-1"], "Size" in p.settings
    ('girl', 'ugly', '512', False)
    """
    if not isinstance(text, str):
        raise InfotextError(f"infotext must be a str, not {type(text).__name__}")
    if len(text) > MAX_INFOTEXT_CHARS:
        raise InfotextLimitError(
            f"infotext of {len(text)} characters exceeds the limit of {MAX_INFOTEXT_CHARS}"
        )
    prompt_lines, negative_lines, pairs, diagnostics = _split(text)
    params = _build(prompt_lines, negative_lines, pairs, diagnostics)
    diagnostics.extend(params._read[2])
    if strict and diagnostics:
        raise InfotextError(diagnostics[0].message)
    object.__setattr__(params, "diagnostics", tuple(diagnostics))
    stripped = text.strip()
    if _canonical(params) != stripped:
        object.__setattr__(params, "source", stripped)
    return params


def _split(
    text: str,
) -> tuple[list[str], list[str], list[tuple[str, str | None]], list[Diagnostic]]:
    """Steps 1-3 of A1111's reader: prompt lines, negative lines, parameter pairs."""
    stripped = text.strip()
    offset = len(text) - len(text.lstrip())
    *lines, last = stripped.split("\n")
    matches = _scan_pairs(last)
    diagnostics: list[Diagnostic] = []
    pairs: list[tuple[str, str | None]] = []
    if len(matches) >= 3:
        line_pos = offset + len(stripped) - len(last)
        pairs = _pairs_from_line(last, matches, line_pos, diagnostics)
    else:
        lines.append(last)
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for raw_line in lines:
        line = raw_line.strip()
        if not in_negative and line.startswith(_NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(_NEGATIVE_PREFIX) :].strip()
        target = negative_lines if in_negative else prompt_lines
        if target or line:  # A1111 drops empty lines before the first non-empty one
            target.append(line)
    if not pairs:
        # Only an empty `Negative prompt:` line can leave empty lines at the end; A1111 keeps them
        # in the prompt, but no infotext can say so, so they go (with a note).
        target = negative_lines or prompt_lines
        if target and not target[-1]:
            while target and not target[-1]:
                target.pop()
            diagnostics.append(
                Diagnostic("trailing-empty-lines", "empty lines at the end were dropped", 0)
            )
    return prompt_lines, negative_lines, pairs, diagnostics


def _build(
    prompt_lines: list[str],
    negative_lines: list[str],
    pairs: list[tuple[str, str | None]],
    diagnostics: list[Diagnostic],
) -> GenerationParameters:
    try:
        return GenerationParameters(
            "\n".join(prompt_lines), "\n".join(negative_lines), tuple(pairs)
        )
    except InfotextError as exc:
        raise InfotextError(f"infotext cannot be represented: {exc}") from None


def _pairs_from_line(
    line: str, matches: list[_Match], line_pos: int, diagnostics: list[Diagnostic]
) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    previous_end = 0
    for match in [*matches, None]:
        gap_end = len(line) if match is None else match.start
        gap = line[previous_end:gap_end]
        piece_pos = previous_end
        for piece in gap.split(","):
            item = piece.strip()
            if item:
                at = line_pos + piece_pos + piece.index(item[0])
                if _BARE_KEY_RE.fullmatch(item):
                    pairs.append((item, None))
                    diagnostics.append(
                        Diagnostic("bare-key", f"key {item!r} has no value; A1111 ignores it", at)
                    )
                else:
                    diagnostics.append(
                        Diagnostic("ignored-text", f"text {item!r} is no 'key: value' pair", at)
                    )
            piece_pos += len(piece) + 1
        if match is None:
            break
        # The regex's leading `\s*` may start the match inside the gap's whitespace.
        value = _decode(match.raw)
        if not match.raw:
            diagnostics.append(
                Diagnostic(
                    "empty-value",
                    f"key {match.key!r} has an empty value; A1111 ignores it",
                    line_pos + match.start,
                )
            )
        pairs.append((match.key, value))
        previous_end = match.end
    return pairs


def _format_body(prompt: str, negative_prompt: str) -> str:
    # Not stripped: A1111 strips the whole text once, parameter line included.
    if negative_prompt:
        return f"{prompt}\n{_NEGATIVE_PREFIX} {negative_prompt}"
    return prompt


def format(params: GenerationParameters, *, keep_source: bool = True) -> str:
    """Write parameters as A1111 writes infotext (§10.1): layout, key order as given, quoting.

    Parameters that :func:`parse` read from text and that still say the same come back as that
    text (stripped), byte for byte; otherwise, or with ``keep_source=False``, the text is
    A1111's canonical form: what A1111's own writer gives for the same values.

    Args:
        params: the parameters.
        keep_source: give back the parsed text where there is one.

    Returns:
        The text; ``parse(format(params)) == params``.

    Raises:
        InfotextLimitError: the text would exceed :data:`MAX_INFOTEXT_CHARS`.

    >>> format(parse('a\\nSteps: 20, Lora hashes: "x: 1, y: 2", Version: v1.10.1'))
    'a\\nSteps: 20, Lora hashes: "x: 1, y: 2", Version: v1.10.1'
    >>> p = parse("a \\r\\nSteps: 20,Sampler: Euler,Seed: 1")
    >>> format(p), format(p, keep_source=False)
    ('a \\r\\nSteps: 20,Sampler: Euler,Seed: 1', 'a\\nSteps: 20, Sampler: Euler, Seed: 1')
    """
    source = params.source
    if keep_source and source is not None:
        prompt_lines, negative_lines, pairs, _ = _split(source)
        same = (
            "\n".join(prompt_lines) == params.prompt
            and "\n".join(negative_lines) == params.negative_prompt
            and tuple(pairs) == params.pairs
        )
        if same:
            return source
    text = _canonical(params)
    if len(text) > MAX_INFOTEXT_CHARS:
        raise InfotextLimitError(
            f"infotext of {len(text)} characters exceeds the limit of {MAX_INFOTEXT_CHARS}"
        )
    return text


def _canonical(params: GenerationParameters) -> str:
    items: list[str] = []
    count = len(params.pairs)
    for index, (key, value) in enumerate(params.pairs):
        if value is None:
            items.append(key)
        else:
            items.append(f"{key}: {_encode(value, last=index == count - 1)}")
    text = _format_body(params.prompt, params.negative_prompt)
    if items:
        text = f"{text}\n{', '.join(items)}"
    return text.strip()


def unreproducible(params: GenerationParameters) -> list[str]:
    """What a diffusers re-run of ``params`` cannot reproduce, one sentence per setting.

    :func:`promptweights.diffusers.from_infotext` warns with each (raises, when strict), and
    ``promptweights infotext --to-diffusers`` lists them: the settings of
    :data:`UNSUPPORTED_SETTINGS` the text holds, a noise source other than A1111's GPU/CPU one.

    >>> text = "a cat\\nSteps: 20, Sampler: Euler, Size: 512x512, Hires upscale: 2"
    >>> unreproducible(parse(text))
    ["Hires upscale 2: the hires-fix pass is not reproduced; the image is rendered at the first \
pass's 512x512, not 1024x1024"]
    """
    written = params.written
    out = []
    for key in UNSUPPORTED_SETTINGS:
        if key.endswith("-1"):  # a `WxH` setting: written whole, as `Hires resize: 1024x1024`
            key = key[:-2]
        if key not in written:
            continue
        if key == "Hires upscale" and params.width and params.height:
            factor = params.hires_upscale or 1.0
            size = params.hires_size or (int(params.width * factor), int(params.height * factor))
            out.append(
                f"Hires upscale {factor:g}: the hires-fix pass is not reproduced; the image is "
                f"rendered at the first pass's {params.width}x{params.height}, not "
                f"{size[0]}x{size[1]}"
            )
        else:
            out.append(f"{key}: {written[key]!r} is not reproduced in diffusers")
    rng = params.settings.get("RNG", "GPU")
    if rng not in ("GPU", "CPU"):
        out.append(f"RNG: {rng}: that noise source is not reproduced (torch's CPU generator is)")
    return out
