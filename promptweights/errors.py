"""The exception types and diagnostics of promptweights.

Every error the library raises on purpose is a :class:`PromptweightsError`. Errors about a piece of
text carry the position they refer to and draw a caret excerpt themselves, so a web UI or a bot can
show the user where the problem is::

    >>> err = PromptSyntaxError("unclosed '('", source="a (b", pos=2)
    >>> print(err)
    unclosed '(' at line 1, column 3
      a (b
        ^
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DIAGNOSTICS",
    "ArgumentTypeError",
    "CompareError",
    "DeviceUnavailableError",
    "Diagnostic",
    "InfotextError",
    "InfotextLimitError",
    "InvalidArgumentError",
    "InvalidWeightError",
    "LimitExceededError",
    "NetworkFileError",
    "PromptSyntaxError",
    "PromptweightsError",
    "PromptweightsWarning",
    "UnknownNameError",
    "UnreproducibleError",
    "UnsupportedPipelineError",
    "line_and_column",
    "warn_or_raise",
]


def line_and_column(source: str, pos: int) -> tuple[int, int]:
    """Return the 1-based line and column of offset ``pos`` in ``source``."""
    pos = max(0, min(pos, len(source)))
    line = source.count("\n", 0, pos) + 1
    column = pos - (source.rfind("\n", 0, pos) + 1) + 1
    return line, column


def caret_excerpt(source: str, pos: int, width: int = 60) -> str:
    """Return the line of ``source`` holding ``pos`` (clipped to ``width``) and a caret under it."""
    pos = max(0, min(pos, len(source)))
    start = source.rfind("\n", 0, pos) + 1
    end = source.find("\n", pos)
    if end == -1:
        end = len(source)
    line = source[start:end]
    column = pos - start
    # Keep long lines readable: show a window around the caret.
    left = max(0, column - width // 2)
    shown = line[left : left + width]
    prefix = "…" if left > 0 else ""
    suffix = "…" if left + width < len(line) else ""
    shown = "".join(ch if ch.isprintable() else "?" for ch in shown)
    return f"  {prefix}{shown}{suffix}\n  {' ' * (len(prefix) + column - left)}^"


class PromptweightsError(Exception):
    """Base class of every error promptweights raises on purpose."""


class PromptSyntaxError(PromptweightsError, ValueError):
    """A prompt that strict mode refuses, with the position of the problem.

    Attributes:
        message: what is wrong, in words.
        source: the text that was parsed.
        pos: 0-based offset of the problem in ``source``.
        line: 1-based line of ``pos``.
        column: 1-based column of ``pos``.
        kind: a short machine-readable name of the problem (see :data:`DIAGNOSTICS`).
    """

    def __init__(self, message: str, *, source: str, pos: int, kind: str = "syntax") -> None:
        self.message = message
        self.source = source
        self.pos = pos
        self.kind = kind
        self.line, self.column = line_and_column(source, pos)
        super().__init__(message)

    def __str__(self) -> str:
        return (
            f"{self.message} at line {self.line}, column {self.column}\n"
            f"{caret_excerpt(self.source, self.pos)}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_syntax_error, (self.message, self.source, self.pos, self.kind))


def _rebuild_syntax_error(message: str, source: str, pos: int, kind: str) -> PromptSyntaxError:
    return PromptSyntaxError(message, source=source, pos=pos, kind=kind)


class LimitExceededError(PromptweightsError, ValueError):
    """An input past a documented resource cap (:mod:`promptweights.limits`)."""


class InvalidArgumentError(PromptweightsError, ValueError):
    """An argument outside what a function accepts (a step count below 1, batch sizes that do not
    match, editing without ``steps=``, an unknown option); the message names the argument."""


class ArgumentTypeError(PromptweightsError, TypeError):
    """An argument of the wrong type (a prompt that is not a ``str``…); the message names it."""


class UnknownNameError(PromptweightsError, KeyError):
    """An unknown name (strategy, dialect, sampler, LoRA…); the message lists the valid ones."""

    def __init__(self, what: str, name: object, known: list[str] | tuple[str, ...]) -> None:
        self.what = what
        self.name = name
        self.known = tuple(known)
        super().__init__(f"unknown {what} {name!r}; known: {', '.join(self.known)}")

    def __str__(self) -> str:
        return str(self.args[0])


class InfotextError(PromptweightsError, ValueError):
    """Generation-parameter text or an image file that cannot be read."""


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """Something lenient mode tolerated: A1111 would reinterpret or reject it silently.

    Attributes:
        kind: a short machine-readable name (``"unclosed"``, ``"stray-closer"``, ``"bad-weight"``…).
        message: what happened, in words.
        pos: 0-based offset in the text that was parsed (after comment stripping).
    """

    kind: str
    message: str
    pos: int

    def to_error(self, source: str) -> PromptSyntaxError:
        """Return the strict-mode exception for this diagnostic."""
        return PromptSyntaxError(self.message, source=source, pos=self.pos, kind=self.kind)


class InvalidWeightError(PromptweightsError, ValueError):
    """A weight that would make conditioning non-finite: a prompt weight (the product along its
    nesting), an ``AND`` weight or an extra-network multiplier that is NaN, infinite or past its
    documented bound (:data:`promptweights.limits.MAX_WEIGHT`,
    :data:`~promptweights.limits.MAX_MULTIPLIER`), or weights whose conditioning overflows the
    model's dtype.

    Attributes:
        message: what is wrong, in words.
        source: the text the weight was found in, or None.
        pos: 0-based offset of the weighted span (or tag) in ``source``, or None.

    >>> print(InvalidWeightError("weight 1e+30 is too large", source="a (red:1e30)", pos=3))
    weight 1e+30 is too large at line 1, column 4
      a (red:1e30)
         ^
    """

    def __init__(self, message: str, *, source: str | None = None, pos: int | None = None) -> None:
        self.message = message
        self.source = source
        self.pos = pos
        super().__init__(message)

    def __str__(self) -> str:
        if self.source is None or self.pos is None:
            return self.message
        line, column = line_and_column(self.source, self.pos)
        return (
            f"{self.message} at line {line}, column {column}\n"
            f"{caret_excerpt(self.source, self.pos)}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_weight_error, (self.message, self.source, self.pos))


def _rebuild_weight_error(message: str, source: str | None, pos: int | None) -> InvalidWeightError:
    return InvalidWeightError(message, source=source, pos=pos)


#: Every diagnostic kind the parser reports: what it means and inputs that trigger it (strict mode
#: raises on each of these; the test suite iterates this table).
DIAGNOSTICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "unclosed": (
        "an opening bracket is never closed; A1111 applies it to the end of the text",
        ("a (b", "[a", "((a)"),
    ),
    "stray-closer": (
        "a closing bracket closes nothing; A1111 keeps it as text",
        ("a b)", "a]", "(a]"),
    ),
    "bad-weight": (
        "an explicit weight that is not a number; A1111 fails on it",
        ("(a:1.2.3)", "(a:.)", "(a:1..2)"),
    ),
    "bad-edit": (
        "colons in square brackets that do not form [from:to:when]; A1111 reads de-emphasised text",
        ("[a:b:x]", "[a:b:c:5]", "[a:b]"),
    ),
    "stray-pipe": (
        "a '|' outside an alternation [a|b]; A1111 then ignores all editing in the prompt",
        ("a|b [c:d:3]", "(a|b)", "[a|b:3]"),
    ),
    "trailing-backslash": (
        "a backslash at the end of a line; A1111 then ignores all editing in the prompt",
        ("a\\", "a\\\nb"),
    ),
    "too-deep": (
        "brackets nested deeper than the depth cap; kept as text",
        ("(" * 300 + "a" + ")" * 300,),
    ),
    "bad-encoders": (
        "a TE( per-encoder section without a name: write name: text",
        ("TE(a cat)", "TE(clip_l: a; dog)", "TE()"),
    ),
    "bad-network": (
        "an extra-network tag whose multiplier is not a number (nor loractl's weight@step "
        "points), or with no name",
        ("<lora:x:abc>", "<lora:te=1>", "<lora:x:0@0,y@1>"),
    ),
}


class InfotextLimitError(InfotextError, LimitExceededError):
    """Generation-parameter text or an image file larger than its documented cap."""


class UnsupportedPipelineError(PromptweightsError, TypeError):
    """A diffusers pipeline (or a feature of one) that ``promptweights.diffusers`` cannot drive."""


class NetworkFileError(PromptweightsError, ValueError):
    """A LoRA or textual-inversion file that cannot be used; the message names the file.

    Missing, not ``.safetensors`` (pickles are never loaded), unreadable by safetensors, non-float
    or non-finite tensors, or tensors that do not fit the pipeline (unknown target module, shape or
    width mismatch; the message names the key with the expected and found shapes).
    """


class CompareError(PromptweightsError, ValueError):
    """A comparison grid that cannot run: bad axes, a bad weight sweep, a span not in the prompt."""


class UnreproducibleError(PromptweightsError, ValueError):
    """Something a call was given that it would not apply, raised in strict mode.

    An infotext setting diffusers cannot reproduce (a hires-fix pass, variation seeds…), an
    extra-network tag without a folder to load it from: lenient mode (the default) warns with a
    :class:`PromptweightsWarning` and goes on without it; ``strict=True`` raises this instead.
    """


class DeviceUnavailableError(PromptweightsError, RuntimeError):
    """A device a call needs is not there: A1111's ``GPU`` noise source without CUDA, say.

    The message names the device and what to use instead.
    """


class PromptweightsWarning(UserWarning):
    """Something given that is not applied, in lenient mode (see :class:`UnreproducibleError`).

    Silence it like any warning: ``warnings.filterwarnings("ignore",
    category=PromptweightsWarning)``; turn it into an error with ``strict=True``.
    """


def warn_or_raise(message: str, *, strict: bool, stacklevel: int = 3) -> None:
    """Warn with :class:`PromptweightsWarning`, or raise :class:`UnreproducibleError` if ``strict``.

    >>> warn_or_raise("Hires upscale is not reproduced", strict=True)
    Traceback (most recent call last):
      ...
    promptweights.errors.UnreproducibleError: Hires upscale is not reproduced
    """
    if strict:
        raise UnreproducibleError(message)
    import warnings

    warnings.warn(message, PromptweightsWarning, stacklevel=stacklevel)
