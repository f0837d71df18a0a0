"""Resource limits: the most one prompt or one request may make promptweights do.

promptweights sits behind web UIs and bots that pass it whatever users type, so every way a short
text can multiply work has a cap, and passing a cap raises
:class:`~promptweights.errors.LimitExceededError` before any model runs:

* the length of one prompt (:func:`promptweights.parse`, the diffusers adapter);
* the entries of one prompt's schedule (:func:`promptweights.schedules`): ``[a|b]`` alternates at
  every step, so a request for 100,000 steps would otherwise render 100,000 texts; and the
  characters they add up to (a 1 MB prompt with one ``[a|b]`` renders 1 MB per step);
* the ``AND`` parts of one prompt (:func:`promptweights.split_and`): each costs a UNet pass
  per step;
* the rows one :func:`promptweights.builder.build` call encodes (chunks × variants × extra
  encodings), the number that decides what a request costs the text encoder;
* the tokens of conditioning one build returns or hands a strategy, counted after repetition:
  ``" BREAK ".join(["red"] * 100000)`` encodes one unique row, but would return 100,000 windows
  (23 GB on SD1.5). It is checked on the chunk count, before any window is encoded.

Nesting depth is capped differently: brackets past :data:`~promptweights.tree.DEFAULT_MAX_DEPTH`
stay text, with a diagnostic, and nothing raises.

The defaults are generous for real prompts (A1111's longest realistic request, 150 steps of
alternation on a second-order sampler with a four-chunk prompt, stays within each of them). Pass
your own :class:`Limits` to the adapter (``encode(..., limits=Limits(rows=256))``) or the number to
the function (``schedules(text, steps, max_variants=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidArgumentError

__all__ = ["DEFAULT_LIMITS", "MAX_MULTIPLIER", "MAX_PROMPT_CHARS", "MAX_WEIGHT", "Limits"]

#: Longest prompt accepted (characters): 1 MiB. Parsing takes about 250 bytes of memory per
#: character at worst (10,000s of nested brackets), so this bounds one parse to about 250 MB.
MAX_PROMPT_CHARS = 1_048_576

#: Largest effective prompt weight (the product along a span's nesting, as ``weighted_spans``
#: gives it) and ``AND`` weight accepted, in absolute value. Users write up to ±100 nested ten
#: deep (1e20); text-encoder outputs stay below 1e4, and a strategy sums at most about 1e9 of
#: their products, so at 1e24 every float32 intermediate stays below 1e37 (float32 ends at 3.4e38).
#: ``(red:1e38)`` used to overflow float32 and give NaN conditioning without an error; past the
#: bound, :class:`~promptweights.errors.InvalidWeightError` names the span and its position. The
#: result is also checked in the model's dtype: weights that overflow float16 raise the same way.
MAX_WEIGHT = 1e24

#: Largest extra-network multiplier (``<lora:x:m>``, ``te=``, ``unet=``) accepted, in absolute
#: value: far past what any LoRA is used at (sliders go to about ±10), and far from where a
#: float16 layer overflows.
MAX_MULTIPLIER = 1000.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps for one request; each must be at least 1.

    >>> Limits(rows=256).variants
    512
    """

    #: Characters in one prompt text.
    prompt_chars: int = MAX_PROMPT_CHARS
    #: Entries in one prompt's schedule (prompt editing and alternation).
    variants: int = 512
    #: Characters of all the texts one prompt's schedule renders.
    schedule_chars: int = 16_000_000
    #: ``AND`` parts in one prompt.
    and_parts: int = 64
    #: Rows (token windows) one build encodes per text encoder.
    rows: int = 1024
    #: Token positions one build returns or hands a strategy, per text encoder: every text's
    #: chunks (each group padded to the longest), plus one window per chunk for each extra
    #: encoding a strategy receives (compel's masked spans, ADV's levels and groups).
    output_tokens: int = 524_288

    def __post_init__(self) -> None:
        for name in (
            "prompt_chars",
            "variants",
            "schedule_chars",
            "and_parts",
            "rows",
            "output_tokens",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(f"Limits.{name} must be a positive int, not {value!r}")


#: The limits used when none are given.
DEFAULT_LIMITS = Limits()
