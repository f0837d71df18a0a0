"""The prompt dialects, one record each: everything that makes a dialect, in one place.

A :class:`Dialect` names its grammar file (the one place its syntax is written: the fast lexer is
built from the grammar's terminals), the tree builder that turns the grammar's rules into nodes,
its bracket table with each bracket's weight factor, the emphasis pass that gives its weighted
spans, and the Hypothesis strategy of well-formed prompts in :mod:`promptweights.testing`. Every
other module looks a dialect up here, by name with :func:`get`.

Adding a dialect: a grammar file in ``grammar/`` (the bracket rules named after the bracket kinds,
an ``UNCLOSED_<closer>`` terminal declared for each closer), a record below, its parity cases and,
where its rules differ from an existing dialect's, a tree builder in :mod:`promptweights._lark` and
an emphasis pass in :mod:`promptweights._emphasis`.

>>> get("novelai").factor("brace")
1.05
>>> [bracket.opener for bracket in get("a1111").brackets]
['(', '[']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ._compel import CompelBuilder, compel_spans
from ._emphasis import a1111_spans, comfy_spans, novelai_spans
from ._lark import ComfyBuilder, NovelAIBuilder, TreeBuilder
from .errors import ArgumentTypeError, UnknownNameError

__all__ = [
    "A1111",
    "COMFY",
    "COMPEL",
    "DIALECTS",
    "NAMES",
    "NOVELAI",
    "Bracket",
    "Dialect",
    "get",
]


@dataclass(frozen=True, slots=True)
class Bracket:
    """One kind of emphasis bracket: ``kind`` is the grammar rule and the ``Emphasis.kind``."""

    kind: str
    opener: str  # "" where the opener is a pattern (``terminal``)
    closer: str
    factor: float  # what the bracket multiplies the weight of its text by
    #: The grammar terminal of an opener that is a pattern and carries its own factor (NovelAI's
    #: ``1.5::``, whose factor is the number written); None for a literal opener.
    terminal: str | None = None


#: ``(dialect, text, max_depth) -> ((segment, weight), ...)``: a dialect's emphasis pass.
SpanFunction = Callable[["Dialect", str, int], tuple[tuple[str, float], ...]]


@dataclass(frozen=True, slots=True, eq=False)
class Dialect:
    """Everything that makes a prompt dialect (see the module docstring).

    Records compare and hash by identity: each is made once, below, and caches are keyed by them.
    """

    name: str
    grammar: str  # the file in the package promptweights.grammar
    builder: type[TreeBuilder]  # grammar rules → tree nodes
    brackets: tuple[Bracket, ...]  # in the order the emphasis pass applies open brackets
    spans: SpanFunction
    strategy: str  # the function in promptweights.testing that builds prompts(dialect=name)
    breaks: bool  # whether BREAK starts a new chunk
    outer_passes: bool  # whether comments, extra networks and AND are cut out first (§1)
    #: Bracket-like rules of the grammar that weigh nothing and are not emphasis: A1111's
    #: per-encoder block ``TE(…)`` (opener terminal ``TE_OPEN``, closer ``)``), resolved by
    #: :func:`promptweights.route` before the emphasis pass.
    groups: tuple[Bracket, ...] = ()

    def factor(self, kind: str) -> float:
        """The weight factor of the bracket ``kind``."""
        for bracket in self.brackets:
            if bracket.kind == kind:
                return bracket.factor
        raise UnknownNameError("bracket kind", kind, [b.kind for b in self.brackets])


A1111 = Dialect(
    name="a1111",
    grammar="a1111.lark",
    builder=TreeBuilder,
    # A1111 multiplies by 1/1.1 for [x]; it never divides (a1111-behaviour.md §12 trap 8).
    brackets=(Bracket("round", "(", ")", 1.1), Bracket("square", "[", "]", 1 / 1.1)),
    spans=a1111_spans,
    strategy="_a1111_prompts",
    breaks=True,
    outer_passes=True,
    groups=(Bracket("encoders", "TE(", ")", 1.0, terminal="TE_OPEN"),),
)

COMFY = Dialect(
    name="comfy",
    grammar="comfy.lark",
    builder=ComfyBuilder,
    brackets=(Bracket("round", "(", ")", 1.1),),  # weighting-strategies.md §1.3
    spans=comfy_spans,
    strategy="_comfy_prompts",
    breaks=False,
    outer_passes=False,
)

NOVELAI = Dialect(
    name="novelai",
    grammar="novelai.lark",
    builder=NovelAIBuilder,
    # weighting-strategies.md §1.2; V4's numeric weights `1.5::x::` (docs/novelai.md)
    brackets=(
        Bracket("brace", "{", "}", 1.05),
        Bracket("square", "[", "]", 1 / 1.05),
        Bracket("weight", "", "::", 1.0, terminal="WEIGHT"),
    ),
    spans=novelai_spans,
    strategy="_novelai_prompts",
    breaks=False,
    outer_passes=False,
)

COMPEL = Dialect(
    name="compel",
    grammar="compel.lark",
    builder=CompelBuilder,
    # compel 2.5.1: a bracket alone weighs nothing; (x)1.3, (x)+, word- and the operators are read
    # by the builder from what follows the bracket (promptweights/_compel.py).
    brackets=(Bracket("round", "(", ")", 1.0),),
    spans=compel_spans,
    strategy="_compel_prompts",
    breaks=False,
    outer_passes=False,
)

#: Every dialect by name.
DIALECTS: dict[str, Dialect] = {d.name: d for d in (A1111, COMFY, NOVELAI, COMPEL)}
#: The names :func:`get` accepts, as ``promptweights.DIALECTS`` lists them.
NAMES = tuple(DIALECTS)


def get(name: str) -> Dialect:
    """The dialect called ``name``.

    Raises:
        ArgumentTypeError: ``name`` is not a ``str``.
        UnknownNameError: no dialect has that name (the message lists those that exist).
    """
    if not isinstance(name, str):
        raise ArgumentTypeError(f"dialect must be a str, not {type(name).__name__}")
    try:
        return DIALECTS[name]
    except KeyError:
        raise UnknownNameError("dialect", name, NAMES) from None
