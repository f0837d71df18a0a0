"""Hypothesis strategies for prompts, for property tests in promptweights and in projects using it.

This is the only module of promptweights that imports Hypothesis (install the ``testing`` extra).
The strategies follow Hypothesis' own API style: plural nouns, keyword-only options, options that
say which examples are *valid* (never how often something is drawn), and invalid options raise
:class:`hypothesis.errors.InvalidArgument` when the strategy is first drawn from::

    from hypothesis import given
    from promptweights import parse, render
    from promptweights.testing import prompts

    @given(prompts(dialect="a1111"))
    def test_round_trip(text):
        tree = parse(text)
        assert parse(render(tree)) == tree

* :func:`prompts` — well-formed prompt text using every construct of a dialect;
* :func:`trees` — parsed :class:`~promptweights.tree.Prompt` trees;
* :func:`weights` — explicit weight literals such as ``1.3``, ``.5`` or ``+2`` as A1111 reads them;
* :func:`bracket_soup` — arbitrary hostile text for "never crashes" properties.

Installing promptweights also registers :func:`trees` for the ``Prompt`` type, so
``st.from_type(Prompt)`` and ``st.builds(...)`` work without importing this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

    from promptweights.tree import Prompt


# The "hypothesis" entry point in pyproject.toml names the hook below, and Hypothesis runs it while
# it is being imported. Importing this module imports Hypothesis, so the hook and what it uses must
# exist before that import: otherwise `import promptweights.testing` in a fresh interpreter meets a
# half-initialised module and fails.


def _hypothesis_setup_hook() -> None:
    """Register :func:`trees` as the strategy for :class:`~promptweights.tree.Prompt`."""
    try:
        from promptweights.tree import Prompt
    except ImportError:  # a half-installed or older promptweights: nothing to register
        return
    from hypothesis import strategies

    strategies.register_type_strategy(Prompt, _trees_for_type)


def _trees_for_type(_: type) -> SearchStrategy[Prompt]:
    # Resolved when st.from_type(Prompt) is first drawn, by then this module is complete.
    return trees()


import hypothesis.strategies as st  # noqa: E402 (after the hook, see above)
from hypothesis.errors import InvalidArgument  # noqa: E402

from promptweights import dialects  # noqa: E402

__all__ = [
    "DIALECTS",
    "bracket_soup",
    "dynamic_prompts",
    "per_encoder_prompts",
    "prompts",
    "trees",
    "weights",
]

T = TypeVar("T")

#: The dialect names :func:`prompts` and :func:`trees` accept (the same as ``promptweights.parse``).
DIALECTS = dialects.NAMES

# ---------------------------------------------------------------------------------------------
# Argument checks. They run inside st.deferred, i.e. when a test first draws from the strategy.


def _check_dialect(dialect: object, where: str) -> str:
    if not isinstance(dialect, str) or dialect not in DIALECTS:
        raise InvalidArgument(
            f"{where}(dialect={dialect!r}): dialect must be one of {', '.join(DIALECTS)}"
        )
    return dialect


def _check_bound(value: object, name: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction | Decimal):
        raise InvalidArgument(f"{where}({name}={value!r}): {name} must be a real number or None")
    as_float = float(value)
    if not math.isfinite(as_float):
        # A1111's weight syntax is digits and a dot: it cannot spell inf or nan.
        raise InvalidArgument(f"{where}({name}={value!r}): {name} must be finite")
    return as_float


def _check_size(value: object, name: str, where: str, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        expected = "a non-negative integer or None" if optional else "a non-negative integer"
        raise InvalidArgument(f"{where}({name}={value!r}): {name} must be {expected}")
    return value


def _lazily(call: str, build: Callable[[], st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """``st.deferred(build)``, shown as ``call``: arguments are checked at the first draw."""
    build.__name__ = build.__qualname__ = call
    return st.deferred(build)


def _check_flag(value: object, name: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{where}({name}={value!r}): {name} must be True or False")
    return value


# ---------------------------------------------------------------------------------------------
# weights()

# Zero code points of decimal-digit scripts that Python's float() reads (A1111 uses float()).
_DIGIT_ZEROS = (0x0660, 0x06F0, 0x0966, 0x09E6, 0x0E50, 0xFF10)


def _plain_decimal(value: float) -> str:
    """Write ``value`` with digits and a dot only, so that ``float()`` gives back ``value``."""
    text = repr(value)
    if "e" in text or "E" in text:
        # repr round-trips; the Decimal of that repr is the same number without an exponent.
        text = format(Decimal(text), "f")
    return text


def _restyle(literal: str, style: str) -> str:
    """Rewrite a plain decimal literal in another spelling A1111 reads as the same float."""
    sign = "-" if literal.startswith("-") else ""
    digits = literal.lstrip("-")
    whole, _, fraction = digits.partition(".")
    fraction = fraction.rstrip("0")
    if style == "short":  # 1.0 -> 1, 0.5 -> .5, 2.50 -> 2.5
        whole = "" if whole == "0" and fraction else whole
        return sign + whole + ("." + fraction if fraction else "")
    if style == "dot":  # 2.0 -> 2.  (A1111 and lark both read a trailing dot)
        return sign + whole + "." + fraction
    if style == "plus":
        return (sign or "+") + digits
    if style == "zero":  # leading zero: 5 -> 05
        return sign + "0" + digits
    return literal


@st.composite
def _weight_literals(
    draw: st.DrawFn,
    min_value: float | None,
    max_value: float | None,
    allow_unicode_digits: bool,
) -> str:
    value = draw(
        st.floats(min_value=min_value, max_value=max_value, allow_nan=False, allow_infinity=False)
    )
    literal = _restyle(
        _plain_decimal(value), draw(st.sampled_from(("plain", "short", "dot", "plus", "zero")))
    )
    if allow_unicode_digits and draw(st.booleans()):
        zero = draw(st.sampled_from(_DIGIT_ZEROS))
        literal = "".join(chr(zero + int(ch)) if ch.isdigit() else ch for ch in literal)
    return literal


def weights(
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    allow_unicode_digits: bool = False,
) -> st.SearchStrategy[str]:
    """Explicit weight literals, the ``1.3`` of ``(x:1.3)``, as A1111 reads them.

    Every example matches A1111's weight pattern ``[+-]?[.0-9]+`` and ``float()`` reads it, in
    any of its spellings: ``1.5``, ``.5``, ``2.``, ``2``, ``+2``, ``05``, ``-0.25`` and long plain
    decimals for very large or small numbers (there is no exponent form). The same literals are
    valid ``AND`` weights (``a AND b:.5``); ``weights().map(float)`` gives the numbers.

    Args:
        min_value: the smallest value ``float(example)`` may have, or ``None`` for no bound.
        max_value: the largest value ``float(example)`` may have, or ``None`` for no bound.
        allow_unicode_digits: also write digits of other scripts (``٣``, ``５``), which A1111's
            emphasis parser accepts because Python's ``float()`` does. Lark grammars using
            ``[0-9]`` do not, so this is off by default.

    Returns:
        A strategy for ``str`` literals. Examples shrink towards the simplest number in range
        (``0.0`` if allowed), written plainly.

    Raises:
        InvalidArgument: (when drawn) a bound that is not a finite real number, or
            ``min_value > max_value``.
    """

    def build() -> st.SearchStrategy[str]:
        low = _check_bound(min_value, "min_value", "weights")
        high = _check_bound(max_value, "max_value", "weights")
        unicode_digits = _check_flag(allow_unicode_digits, "allow_unicode_digits", "weights")
        if low is not None and high is not None and low > high:
            raise InvalidArgument(
                f"weights(min_value={min_value!r}, max_value={max_value!r}): "
                "min_value must not exceed max_value"
            )
        return _weight_literals(low, high, unicode_digits)

    return _lazily(
        f"weights(min_value={min_value!r}, max_value={max_value!r}, "
        f"allow_unicode_digits={allow_unicode_digits!r})",
        build,
    )


# ---------------------------------------------------------------------------------------------
# prompts(): building blocks. Each dialect gets plain words that hold none of its syntax
# characters, and constructs drawn with st.recursive so that examples shrink bottom-up.

_VOCABULARY = (
    "a",
    "cat",
    "masterpiece",
    "best quality",
    "1girl",
    "solo",
    "red hair",
    "blue eyes",
    "looking at viewer",
    "landscape",
    "night sky",
    "score_9",
    "by greg rutkowski",
    "8k",
    "highres",
    "café",
    "猫",
    "ねこ耳",
    "ñandú",
    "city-pop",
    "rule of thirds",
    "o'keeffe",
)
# Plain-text characters for random words: no ASCII capitals (so no accidental AND or BREAK), and
# none of \ ( ) [ ] { } : | < > # which carry syntax in at least one dialect.
_WORD_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_-'.!?/&%+=*~éüßøæñçΩжλ猫日本"
_SEPARATORS = ("", " ", ", ", ",", "  ", " , ")
_TOP_SEPARATORS = (*_SEPARATORS, "\n", ",\n", "\n\n")


def _words(plain: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(_VOCABULARY),
        st.text(alphabet=_WORD_ALPHABET + plain, min_size=1, max_size=8),
    )


def _texts(plain: str = "") -> st.SearchStrategy[str]:
    """Runs of plain words separated by spaces or commas: never empty, no syntax characters.

    ``plain`` adds characters that are syntax in other dialects but plain text in this one.
    """
    return st.lists(_words(plain), min_size=1, max_size=3).map(" ".join)


@st.composite
def _joined(draw: st.DrawFn, items: st.SearchStrategy[str], separators: tuple[str, ...]) -> str:
    """One to four ``items`` with a separator drawn between each pair."""
    parts = draw(st.lists(items, min_size=1, max_size=4))
    out = [parts[0]]
    for part in parts[1:]:
        out.append(draw(st.sampled_from(separators)))
        out.append(part)
    return "".join(out)


def _spaces() -> st.SearchStrategy[str]:
    return st.sampled_from(("", " ", "  "))


@st.composite
def _explicit(draw: st.DrawFn, inner: st.SearchStrategy[str], open_: str, close: str) -> str:
    """``(x:1.3)`` with optional spaces around the number, as A1111 and ComfyUI allow."""
    body = draw(inner)
    weight = draw(weights())
    return f"{open_}{body}:{draw(_spaces())}{weight}{draw(_spaces())}{close}"


def _whens() -> st.SearchStrategy[str]:
    """Edit steps: integers are absolute steps, numbers with a dot fractions (§4.2)."""
    digits = st.text(alphabet="0123456789", min_size=1, max_size=3)
    return st.one_of(
        st.integers(min_value=0, max_value=200).map(str),
        st.builds("0.{}".format, digits),
        st.builds(".{}".format, digits),
        st.builds("{}.{}".format, st.integers(min_value=0, max_value=3), digits),
    )


@st.composite
def _edits(draw: st.DrawFn, inner: st.SearchStrategy[str]) -> str:
    """``[from:to:when]``, ``[to:when]``, ``[from::when]`` and ``[:to:when]``."""
    form = draw(st.sampled_from(("full", "to", "from", "empty-from")))
    when = f"{draw(_spaces())}{draw(_whens())}{draw(_spaces())}"
    if form == "to":
        return f"[{draw(inner)}:{when}]"
    before = "" if form == "empty-from" else draw(inner)
    after = "" if form == "from" else draw(inner)
    return f"[{before}:{after}:{when}]"


@st.composite
def _alternations(draw: st.DrawFn, inner: st.SearchStrategy[str]) -> str:
    """``[a|b]``, ``[a|b|c]`` and forms with empty options (``[a|]``, ``[|a]``, ``[a||b]``)."""
    options = draw(st.lists(st.one_of(inner, st.just("")), min_size=2, max_size=4).filter(any))
    return "[" + "|".join(options) + "]"


def _a1111_inline() -> st.SearchStrategy[str]:
    """Everything A1111 allows inside brackets: emphasis, escapes, editing, alternation."""
    escapes = st.sampled_from(("\\(", "\\)", "\\[", "\\]", "\\\\"))

    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        inner = _joined(children, _SEPARATORS)
        return st.one_of(
            inner.map("({})".format),
            _explicit(inner, "(", ")"),
            inner.map("[{}]".format),
            _edits(inner),
            _alternations(inner),
        )

    return st.recursive(st.one_of(_texts(), escapes), extend, max_leaves=12)


def _networks() -> st.SearchStrategy[str]:
    """``<lora:name>``, ``<lora:name:0.8>``, ``<lyco:name:0.5:1>``, ``<lora:name:te=0.5>``…"""
    names = st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.",
        min_size=1,
        max_size=16,
    )
    multipliers = weights(min_value=-4, max_value=4)
    args = st.one_of(
        st.just(""),
        st.builds(":{}".format, multipliers),
        st.builds(":{}:{}".format, multipliers, multipliers),
        st.builds(":te={}".format, multipliers),
        st.builds(":{}:unet={}".format, multipliers, multipliers),
    )
    kinds = st.sampled_from(("lora", "lyco", "hypernet"))
    return st.builds("<{}:{}{}>".format, kinds, names, args)


def _comments() -> st.SearchStrategy[str]:
    """A ``#`` comment up to the end of its line; it may hold any syntax, which is ignored."""
    body = st.text(
        alphabet=st.characters(exclude_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
        max_size=20,
    )
    return st.builds(" #{}\n".format, body)


@st.composite
def _chunks(draw: st.DrawFn, inline: st.SearchStrategy[str]) -> str:
    """Top-level text between BREAKs: inline items, networks, line-end comments."""
    items = [draw(inline)]
    separators = st.one_of(st.sampled_from(_TOP_SEPARATORS), _comments())
    for item in draw(st.lists(st.one_of(inline, _networks()), max_size=4)):
        items.append(draw(separators))
        items.append(item)
    return "".join(items)


@st.composite
def _a1111_subprompts(draw: st.DrawFn) -> str:
    """One AND part: chunks joined by BREAK, then optionally an AND weight ``:0.5``."""
    chunks = draw(st.lists(_chunks(_a1111_inline()), min_size=1, max_size=3))
    breaks = st.sampled_from((" BREAK ", "\nBREAK\n", " BREAK\n", ", BREAK "))
    text = chunks[0]
    for chunk in chunks[1:]:
        text += draw(breaks) + chunk
    if draw(st.booleans()):
        text += f"{draw(_spaces())}:{draw(_spaces())}{draw(weights())}"
    return text


@st.composite
def _a1111_prompts(draw: st.DrawFn) -> str:
    parts = draw(st.lists(_a1111_subprompts(), min_size=1, max_size=3))
    return draw(st.sampled_from((" AND ", "\nAND\n", " AND\n"))).join(parts)


@st.composite
def _per_encoder(draw: st.DrawFn, names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """A prompt with ``TE(…)`` blocks, and the text each encoder should read."""
    inline = _a1111_inline()
    text: list[str] = []
    routed: dict[str, list[str]] = {name: [] for name in names}
    for i in range(draw(st.integers(min_value=1, max_value=4))):
        if i:
            separator = draw(st.sampled_from(_TOP_SEPARATORS))
            text.append(separator)
            for parts in routed.values():
                parts.append(separator)
        if draw(st.booleans()):
            outside = draw(inline)
            text.append(outside)
            for parts in routed.values():
                parts.append(outside)
            continue
        named = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
        if re.match(r"\w", "".join(text)[-1:]):
            # `TE(` opens a block only where no word character precedes it.
            text.append(" ")
            for parts in routed.values():
                parts.append(" ")
        sections = []
        for name in named:
            content = draw(st.one_of(st.just(""), inline.map(" {}".format), inline))
            head = f"{draw(_spaces())}{name}{draw(_spaces())}:"
            sections.append(head + content)
            routed[name].append(content)
        text.append("TE(" + ";".join(sections) + ")")
    return "".join(text), {name: "".join(parts) for name, parts in routed.items()}


def per_encoder_prompts(
    names: tuple[str, ...] = ("clip_l", "t5"), *, with_routes: bool = False
) -> st.SearchStrategy[Any]:
    """a1111 prompts with per-encoder blocks ``TE(clip_l: …; t5: …)`` (see promptweights.routing).

    Text outside the blocks and each section's content are :func:`prompts`' inline constructs
    (emphasis, escapes, editing, alternation, nested); each block names one or more of ``names``,
    each at most once, with optional spaces around the name. Every example parses without a
    diagnostic.

    Args:
        names: the encoder names the blocks use (a family's,
            ``promptweights.diffusers.encoder_names(pipe)``).
        with_routes: draw ``(text, {name: text that encoder reads})`` pairs, the second worked
            out from the pieces drawn (not by promptweights), for testing a router.

    Returns:
        A strategy for ``str`` prompts, or for pairs with ``with_routes``.
    """
    checked = tuple(names)
    if not checked or not all(isinstance(n, str) and n.isidentifier() for n in checked):
        raise InvalidArgument(f"per_encoder_prompts: names must be identifiers, not {names!r}")
    pairs = _per_encoder(checked)
    return pairs if with_routes else pairs.map(lambda pair: pair[0])


def _not_a_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


def _comfy_prompts() -> st.SearchStrategy[str]:
    """ComfyUI: round-bracket emphasis and weights, ``\\(`` escapes, literal ``[x]``, embeddings."""
    names = st.builds(
        "{}{}".format,
        st.sampled_from("abcdefghijklmnopqrstuvwxyz"),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", max_size=11),
    ).filter(_not_a_float)  # `(embedding:inf)` would be a weight in ComfyUI
    embeddings = st.builds("embedding:{}".format, names)
    base = st.one_of(_texts("[]{}|<>#"), st.sampled_from(("\\(", "\\)")), embeddings)

    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        inner = _joined(children, _SEPARATORS)
        return st.one_of(
            inner.map("({})".format),
            _explicit(inner, "(", ")"),
            inner.map("[{}]".format),  # square brackets are plain text in ComfyUI
        )

    return _joined(st.recursive(base, extend, max_leaves=12), _TOP_SEPARATORS)


def _novelai_weights() -> st.SearchStrategy[str]:
    """The numbers of V4's ``1.5::x::``: signed, with or without a dot (``-1``, ``.5``, ``2.``)."""
    return weights(min_value=-10, max_value=10).filter(lambda w: "e" not in w)


def _no_number_before(text: str) -> str:
    """``text`` with a space added where it ends in a number: before ``::`` that would read as
    the weight of a new section (``score_9::`` opens one)."""
    return text + " " if text[-1:].isdigit() or text.endswith(".") else text


def _novelai_prompts() -> st.SearchStrategy[str]:
    """NovelAI: ``{x}`` and ``[x]`` emphasis and V4's ``1.5::x::`` / ``-1::x::`` numeric
    weights, nested, with backslash escapes."""
    escapes = st.sampled_from(("\\{", "\\}", "\\[", "\\]", "\\\\"))

    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        inner = _joined(children, _SEPARATORS)
        return st.one_of(
            inner.map("{{{}}}".format),
            inner.map("[{}]".format),
            st.builds("{}::{}::".format, _novelai_weights(), inner.map(_no_number_before)),
        )

    inline = st.recursive(st.one_of(_texts("()|<>#"), escapes), extend, max_leaves=12)
    return _joined(inline, _TOP_SEPARATORS)


# compel: words hold none of ( ) " , . + - = \ (its syntax) and no capitals that could spell an
# operator such as withLora.
_COMPEL_WORDS = tuple(word for word in _VOCABULARY if not set(word) & set('()",.+=\\'))
_COMPEL_ALPHABET = "".join(c for c in _WORD_ALPHABET if c not in '()",.+-=\\')


def _compel_words() -> st.SearchStrategy[str]:
    """One word compel reads as one ``non_syntax_word``."""
    single = tuple(word for word in _COMPEL_WORDS if " " not in word)
    return st.one_of(
        st.sampled_from(single), st.text(alphabet=_COMPEL_ALPHABET, min_size=1, max_size=8)
    )


def _compel_numbers() -> st.SearchStrategy[str]:
    """compel's weight numbers: ``1.3``, ``.5``, ``2``, ``1.`` (no sign, no exponent)."""
    tenths = st.integers(min_value=0, max_value=30)
    return st.one_of(
        tenths.map(lambda n: f"{n // 10}.{n % 10}"),
        tenths.map(lambda n: f".{n}"),
        st.integers(min_value=0, max_value=3).map(str),
        st.integers(min_value=0, max_value=3).map("{}.".format),
    )


def _compel_suffixes() -> st.SearchStrategy[str]:
    signs = st.integers(min_value=1, max_value=3)
    return st.one_of(signs.map("+".__mul__), signs.map("-".__mul__), _compel_numbers())


def _compel_inline(quotes: bool) -> st.SearchStrategy[str]:
    """What compel reads inside a bracket or a quoted string (``quotes``: quoted strings may
    appear, i.e. not already inside one)."""
    word = _compel_words()
    attend = st.one_of(st.sampled_from(("+", "++", "-", "--")), _compel_numbers())
    base = st.one_of(
        word,
        st.builds("{}{}".format, word, st.sampled_from(("+", "++", "-", "--", "+++"))),
        st.builds("{}.attend({})".format, word, attend),
        st.sampled_from(_COMPEL_WORDS),
    )

    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        inner = _joined(children, (" ", ", ", "  ", " , "))
        return st.one_of(
            inner.map("({})".format),
            st.builds("({}){}".format, inner, _compel_suffixes()),
            st.builds("({}).attend({})".format, inner, attend),
        )

    unquoted = st.recursive(base, extend, max_leaves=8)
    if not quotes:
        return unquoted
    inner = _joined(unquoted, (" ", ", ", "  "))
    suffix = st.one_of(st.just(""), _compel_suffixes())
    return st.one_of(unquoted, st.builds('"{}"{}'.format, inner, suffix))


@st.composite
def _compel_swaps(draw: st.DrawFn) -> str:
    """``target.swap(replacement[, t_start=0.3])``."""
    inline = _compel_inline(quotes=False)
    target = draw(st.one_of(_compel_words(), _joined(inline, (" ",)).map("({})".format)))
    replacement = draw(_joined(inline, (" ",)))
    options = draw(
        st.lists(
            st.builds(
                "{}={}".format,
                st.sampled_from(("s_start", "s_end", "t_start", "t_end")),
                st.integers(min_value=0, max_value=10).map(lambda n: f"{n / 10}"),
            ),
            max_size=2,
            unique_by=lambda option: option.split("=")[0],
        )
    )
    tail = "".join(f", {option}" for option in options)
    return f"{target}.swap({replacement}{tail})"


def _compel_loras() -> st.SearchStrategy[str]:
    names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=10)
    weight = st.one_of(st.just(""), _compel_numbers().map(", {}".format))
    return st.builds("withLora({}{})".format, names, weight)


def _compel_plain() -> st.SearchStrategy[str]:
    """A plain compel prompt: words, weighted terms, swaps and LoRAs."""
    item = st.one_of(_compel_inline(quotes=True), _compel_swaps(), _compel_loras())
    return _joined(item, (" ", ", ", "  ", "\n"))


@st.composite
def _compel_operators(draw: st.DrawFn) -> str:
    """``("a", "b").blend(0.7, 0.3)`` or ``("a", "b").and(1, 0.5)``: the whole prompt."""
    members = draw(st.lists(_joined(_compel_inline(quotes=False), (" ",)), min_size=1, max_size=3))
    name = draw(st.sampled_from(("blend", "and")))
    weights_ = draw(
        st.one_of(
            st.just([]),
            st.lists(_compel_numbers(), min_size=len(members), max_size=len(members)),
        )
    )
    if name == "blend" and weights_ and draw(st.booleans()):
        weights_.append("no_normalize")
    quoted = ", ".join(f'"{member}"' for member in members)
    return f"({quoted}).{name}({', '.join(weights_)})"


def _compel_prompts() -> st.SearchStrategy[str]:
    """compel 2.5.1: ``(x)1.3``, ``(x)++``, ``word-``, ``"x"+``, ``.attend()``, ``.swap()``,
    ``withLora()``, and ``.blend()`` / ``.and()`` as the whole prompt."""
    return st.one_of(_compel_plain(), _compel_operators())


def _prompt_builder(dialect: str) -> Callable[[], st.SearchStrategy[str]]:
    """The builder the dialect's record names (``Dialect.strategy``, a function of this module)."""
    builder: Callable[[], st.SearchStrategy[str]] = globals()[dialects.get(dialect).strategy]
    return builder


def prompts(*, dialect: str = "a1111") -> st.SearchStrategy[str]:
    """Well-formed prompt text in ``dialect``, using every construct the dialect has.

    Every example parses without a diagnostic (``parse(text, dialect=dialect, strict=True)`` does
    not raise): brackets are balanced, weights and edit steps are numbers, and no character that
    carries syntax appears outside the construct it belongs to.

    * ``"a1111"``: ``(x)``, ``((x))``, ``(x:1.3)``, ``[x]``, escapes (``\\(`` ``\\)``
      ``\\[`` ``\\]`` ``\\\\``), prompt editing ``[a:b:5]`` ``[a:0.5]`` ``[a::5]`` ``[:b:.25]``
      with integer and decimal steps, alternation ``[a|b]`` including empty options, all of these
      nested, ``BREAK``, ``AND`` with ``:w`` weights, extra networks ``<lora:name:0.8>`` and
      ``#`` comments at line ends. Per-encoder blocks ``TE(clip_l: …; t5: …)`` come from
      :func:`per_encoder_prompts` (their names depend on the model).
    * ``"comfy"``: ``(x)``, ``(x:1.3)`` nested, ``\\(`` ``\\)`` escapes, ``embedding:name``, and
      as plain text ``[x]`` and the characters ``[]{}|<>#``.
    * ``"novelai"``: ``{x}``, ``[x]``, V4's numeric weights ``1.5::x::`` and ``-1::x::``, nested,
      backslash escapes, and as plain text the characters ``()|<>#``.
    * ``"compel"``: ``(x)``, ``(x)1.3``, ``(x)++``, ``"x"-``, ``word+``, ``x.attend(0.5)`` nested,
      ``x.swap(y, t_start=0.3)``, ``withLora(name, 0.5)``, and ``("a", "b").blend(0.7, 0.3)`` or
      ``("a", "b").and()`` as the whole prompt.

    Plain words mix English tags, non-ASCII letters and random lower-case words; they never spell
    ``AND`` or ``BREAK`` by accident.

    Args:
        dialect: ``"a1111"``, ``"comfy"`` or ``"novelai"``, as for ``promptweights.parse``.

    Returns:
        A strategy for ``str`` prompts. Examples shrink towards the single word ``"a"``, then
        towards shallow, short constructs.

    Raises:
        InvalidArgument: (when drawn) an unknown ``dialect``.
    """

    def build() -> st.SearchStrategy[str]:
        return _prompt_builder(_check_dialect(dialect, "prompts"))()

    return _lazily(f"prompts(dialect={dialect!r})", build)


# ---------------------------------------------------------------------------------------------
# trees()


class _ParseAs:
    """``parse(text, dialect=...)``, importing promptweights only when first called."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def __call__(self, text: str) -> Prompt:
        from promptweights import parse

        return parse(text, dialect=self.dialect)

    def __repr__(self) -> str:
        return f"parse(dialect={self.dialect!r})"


def trees(*, dialect: str = "a1111") -> st.SearchStrategy[Prompt]:
    """Parsed :class:`~promptweights.tree.Prompt` trees of well-formed prompts in ``dialect``.

    The same as ``prompts(dialect=dialect).map(lambda text: parse(text, dialect=dialect))``;
    promptweights itself is imported only when the first example is drawn.

    Args:
        dialect: ``"a1111"``, ``"comfy"`` or ``"novelai"``.

    Returns:
        A strategy for :class:`~promptweights.tree.Prompt`. Examples shrink as :func:`prompts`
        does: towards the tree of the single word ``"a"``.

    Raises:
        InvalidArgument: (when drawn) an unknown ``dialect``.
    """

    def build() -> st.SearchStrategy[Prompt]:
        checked = _check_dialect(dialect, "trees")
        return prompts(dialect=checked).map(_ParseAs(checked))

    return _lazily(f"trees(dialect={dialect!r})", build)


# ---------------------------------------------------------------------------------------------
# bracket_soup()

# Fragments that stress every parser of every dialect: brackets of all kinds, separators, escape
# backslashes, numbers that almost are weights, keywords with and without word boundaries.
_SOUP_PIECES = (
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ":",
    "|",
    "\\",
    "<",
    ">",
    "#",
    " ",
    "\n",
    ",",
    ".",
    "0",
    "1",
    "5",
    "+",
    "-",
    "e",
    "=",
    "a",
    "BREAK",
    "AND",
    " AND ",
    " BREAK ",
    "aBREAK",
    "ANDb",
    "\\(",
    "\\)",
    "\\[",
    "\\]",
    "\\\\",
    "\\:",
    "\\|",
    "::",
    ":1.2)",
    ": 1.5 )",
    ":0.5]",
    ":5]",
    ":.5]",
    ":1e2)",
    ":1.2.3)",
    ":.)",
    ":-1)",
    ":+.)",
    ":٣)",
    "<lora:",
    "<lora:x:0.8>",
    "<lyco:y:te=0.5:unet=1>",
    "<:>",
    "embedding:",
    "[a|b]",
    "[a:b:3]",
    "[a::0.5]",
    "#x\n",
    "\r\n",
    "\t",
    "\x00",
    "\u00a0",
    "\u2028",
    "\u200b",
    "\ufeff",
    "\ud800",
    "\udfff",
)


@st.composite
def _soups(draw: st.DrawFn, min_size: int, max_size: int | None) -> str:
    pieces = st.one_of(
        st.sampled_from(_SOUP_PIECES),
        # Controls, surrogates, separators, format characters, combining marks and non-ASCII
        # decimal digits (which Python's float() accepts).
        st.characters(categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Cf", "Mn", "Nd")),
        st.characters(),
    )
    text = "".join(draw(st.lists(pieces, min_size=min_size, max_size=max_size)))
    return text if max_size is None else text[:max_size]


def bracket_soup(*, min_size: int = 0, max_size: int | None = None) -> st.SearchStrategy[str]:
    """Arbitrary text that is hostile to prompt parsers, for "never crashes" properties.

    Heavy in the characters that carry syntax in some dialect (``()[]{}:|\\<>#``), ``BREAK`` and
    ``AND`` with and without word boundaries, almost-weights (``:1.2.3)``, ``:.)``, ``:1e2)``,
    ``:٣)``), escapes, extra-network fragments, comments, control characters, lone surrogates,
    Unicode spaces and line separators — and any other character.

    Args:
        min_size: the fewest characters an example has.
        max_size: the most characters an example has, or ``None`` for no limit.

    Returns:
        A strategy for ``str``. Examples shrink towards the empty string, then towards short
        runs of ``(``.

    Raises:
        InvalidArgument: (when drawn) a size that is not a non-negative integer, or
            ``min_size > max_size``.
    """

    def build() -> st.SearchStrategy[str]:
        low = _check_size(min_size, "min_size", "bracket_soup", optional=False)
        high = _check_size(max_size, "max_size", "bracket_soup", optional=True)
        assert low is not None
        if high is not None and low > high:
            raise InvalidArgument(
                f"bracket_soup(min_size={min_size!r}, max_size={max_size!r}): "
                "min_size must not exceed max_size"
            )
        return _soups(low, high)

    return _lazily(f"bracket_soup(min_size={min_size!r}, max_size={max_size!r})", build)


# ---------------------------------------------------------------------------------------------
# dynamic_prompts(): templates of promptweights.dynamic (grammar/dynamic.lark)

_DYNAMIC_WORDS = "abcdefghijklmnopqrstuvwxyz éß猫,"


def _dynamic_words() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(("cat", "red hair", "night sky", "1girl", "score_9", "café")),
        st.text(alphabet=_DYNAMIC_WORDS, min_size=1, max_size=6),
    )


@st.composite
def _dynamic_variants(draw: st.DrawFn, inner: st.SearchStrategy[str]) -> str:
    """``{a|b}``, ``{2::a|b}``, ``{2$$a|b|c}``, ``{1-2$$ and $$a|b}``, ``{-2$$…}``, ``{2-$$…}``."""
    options = draw(st.lists(inner, min_size=1, max_size=3))
    if draw(st.booleans()):
        weights = st.sampled_from(("", "2::", "0.5::", "1::", ".25::"))
        options = [draw(weights) + option for option in options]
    prefix = ""
    if draw(st.booleans()):
        low = draw(st.integers(0, 3))
        high = draw(st.integers(low, 3))
        count = draw(st.sampled_from((str(low), f"{low}-{high}", f"-{high}", f"{low}-")))
        separator = draw(st.sampled_from(("", "$$ and $$", "$$ $$", "$$ / $$")))
        prefix = count + (separator or "$$")
    return "{" + prefix + "|".join(options) + "}"


def dynamic_prompts(*, wildcards: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    """Templates for :func:`promptweights.dynamic.expand`, using every construct it reads.

    Variants ``{a|b}`` with weights ``{2::a|b}``, ranges ``{2$$a|b}``, ``{1-3$$ and $$a|b}``,
    ``{-2$$…}``, ``{2-$$…}``, nested; the wildcards ``__name__`` of ``wildcards``; and A1111
    syntax that expansion leaves alone: ``[a|b]`` alternation (with variants inside),
    ``(x:1.2)``. Every example expands without a diagnostic in the ``"a1111"`` dialect when every
    name in ``wildcards`` exists, and each prompt it gives parses with ``strict=True``. Examples
    are small (at most a few hundred prompts each), but check
    :func:`promptweights.dynamic.count` before expanding with a low ``limit``.

    Args:
        wildcards: wildcard names (without underscores around them) examples may use.

    Returns:
        A strategy for ``str`` templates; examples shrink towards ``"cat"``.

    Raises:
        InvalidArgument: (when drawn) ``wildcards`` that is not a tuple of names made of
            letters, digits, single underscores, ``-``, ``/`` and ``.``.
    """

    def build() -> st.SearchStrategy[str]:
        valid = isinstance(wildcards, tuple) and all(
            isinstance(name, str) and re.fullmatch(r"(?:[A-Za-z0-9\-/.]|_(?!_))+", name)
            for name in wildcards
        )
        if not valid:
            raise InvalidArgument(
                f"dynamic_prompts(wildcards={wildcards!r}): give a tuple of wildcard names"
            )
        leaves = [_dynamic_words()]
        if wildcards:
            leaves.append(st.sampled_from(wildcards).map("__{}__".format))

        def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
            inner = _joined(children, ("", " ", ", "))
            return st.one_of(
                _dynamic_variants(inner),
                st.lists(inner, min_size=2, max_size=3).map(lambda o: "[" + "|".join(o) + "]"),
                st.builds("({}:{})".format, inner, st.sampled_from(("1.2", "0.8", "2"))),
            )

        return _joined(st.recursive(st.one_of(leaves), extend, max_leaves=6), (", ", " "))

    return _lazily(f"dynamic_prompts(wildcards={wildcards!r})", build)
