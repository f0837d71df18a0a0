"""Weighting strategies: how each tool turns per-token weights into conditioning.

Every strategy is a small pure function with one signature::

    strategy(z, w, extras) -> Tensor

* ``z``: float32 ``(V, K, T, D)`` — the unweighted encodings of ``V`` texts encoded together (the
  schedule variants of one prompt), ``K`` chunks of ``T`` positions, ``D`` channels;
* ``w``: float32 ``(V, K, T)`` — per-position weights (BOS/EOS/PAD are 1);
* ``extras``: an :class:`Extras` with the span index of every position and the extra encodings the
  strategy declared in its ``needs`` attribute (a :class:`Needs`): the builder plans and batches
  those passes, a strategy never calls an encoder.

The math and the notation (``z``, ``w``, ``e``, ``M``) follow ``weighting-strategies.md``; each
docstring names the tool and the section. ``STRATEGIES`` at the bottom is the registry; anywhere a
name is accepted, a callable with the same signature is accepted too.

Token normalisations (``none``, ``mean``, ``length``, ``length+mean``; §3.10) rewrite ``w`` before
the strategy and compose with any of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import torch
from torch import Tensor

from promptweights.errors import ArgumentTypeError, InvalidArgumentError, UnknownNameError

__all__ = [
    "NORMALIZATIONS",
    "POLICIES",
    "STRATEGIES",
    "STRATEGY_SIGNATURE",
    "Extras",
    "Needs",
    "Normalization",
    "Policy",
    "Strategy",
    "a1111",
    "a1111_no_norm",
    "comfy",
    "comfy_plus_plus",
    "compel",
    "down_weight",
    "get_normalization",
    "get_strategy",
    "ignore",
    "lerp_eos",
    "lpw",
    "needs_of",
    "no_syntax",
    "span_lerp",
]


@dataclass(frozen=True, slots=True)
class Needs:
    """What a strategy needs besides ``z``, declared as data so the builder can batch every pass.

    Attributes:
        empty: ``e``, the empty prompt's encoding (one window, cached per encoder).
        masked_fragments: compel's masked re-encodings: for every span with weight < 1, the text
            encoded again with that span's positions removed from the attention mask.
        substituted_levels: ADV's cumulative substitutions: for every distinct word weight below
            the bound (``"one"``: 1; ``"max"``: the largest weight), the text encoded again with
            every word token of weight at or below that level replaced by the mask token (``+``).
        substituted_groups: ADV comfy++'s substitutions: for every span with weight > 1, the text
            encoded again with that span's tokens replaced by the mask token.
        syntax: ``False`` when prompt syntax is literal text (brackets, weights and BREAK included).
        masked_weighted: like ``masked_fragments`` for every span whose weight is not 1 (above
            1 too): the decoder-LLM lerp's anchors.
    """

    empty: bool = False
    masked_fragments: bool = False
    substituted_levels: Literal["one", "max"] | None = None
    substituted_groups: bool = False
    syntax: bool = True
    masked_weighted: bool = False


@dataclass(frozen=True, slots=True)
class Extras:
    """Everything a strategy gets besides ``z`` and ``w``, for one group of ``V`` texts.

    Attributes:
        fragments: int64 ``(V, K, T)``: the index of the span each position came from, ``-1`` for
            BOS/EOS/PAD.
        empty: ``e``, float32 ``(T, D)``, when ``Needs.empty``.
        masked: per text, ``(span index, span weight, encoding (K, T, D))`` for every span with
            weight < 1 in span order, when ``Needs.masked_fragments`` (weight ≠ 1 with
            ``Needs.masked_weighted``).
        levels: per text, ``(level, encoding (K, T, D))`` in increasing level order, when
            ``Needs.substituted_levels``.
        groups: per text, ``(span index, encoding (K, T, D))`` for every span with weight > 1, when
            ``Needs.substituted_groups``.
    """

    fragments: Tensor
    empty: Tensor | None = None
    masked: tuple[tuple[tuple[int, float, Tensor], ...], ...] = ()
    levels: tuple[tuple[tuple[float, Tensor], ...], ...] = ()
    groups: tuple[tuple[tuple[int, Tensor], ...], ...] = ()


class Strategy(Protocol):
    """The signature all strategies share; an optional ``needs`` attribute holds :class:`Needs`."""

    def __call__(self, z: Tensor, w: Tensor, extras: Extras, /) -> Tensor:
        """Return the weighted conditioning, same shape as ``z``."""
        ...


class Normalization(Protocol):
    """The signature of a token normalisation: new weights from weights and span indices."""

    def __call__(self, w: Tensor, fragments: Tensor, /) -> Tensor:
        """Return normalised weights, same shape as ``w``."""
        ...


#: How every strategy is called, as error messages name it.
STRATEGY_SIGNATURE = "strategy(z, w, extras) -> Tensor"

_F = TypeVar("_F", bound=Callable[..., Tensor])
_NO_NEEDS = Needs()


def _declare(needs: Needs) -> Callable[[_F], _F]:
    def mark(strategy: _F) -> _F:
        setattr(strategy, "needs", needs)  # noqa: B010 - attributes on functions defeat mypy
        return strategy

    return mark


def needs_of(strategy: Strategy) -> Needs:
    """Return what ``strategy`` declared in its ``needs`` attribute (nothing if it has none)."""
    needs = getattr(strategy, "needs", _NO_NEEDS)
    if not isinstance(needs, Needs):
        raise ArgumentTypeError(
            f"strategy.needs must be a promptweights.strategies.Needs, got {needs!r}"
        )
    return needs


def _require(value: Tensor | None, what: str) -> Tensor:
    if value is None:
        raise InvalidArgumentError(f"this strategy needs {what}; declare it in its Needs")
    return value


def _lerp_from(anchor: Tensor, z: Tensor, w: Tensor) -> Tensor:
    """``anchor + w·(z − anchor)`` where ``w ≠ 1``, ``z`` copied exactly where ``w = 1``."""
    weights = w.unsqueeze(-1)
    return torch.where(weights == 1.0, z, anchor + (z - anchor) * weights)


def _mixture(base: Tensor, levels: tuple[tuple[float, Tensor], ...]) -> Tensor:
    """ADV's linear mixture (§3.8): ``u₁·B + Σ (u_{k+1} − u_k)·Q_k`` with ``u_{m+1} = 1``."""
    if not levels:
        return base
    bounds = [u for u, _ in levels] + [1.0]
    out = base * bounds[0]
    for k, (_, q) in enumerate(levels):
        out = out + q * (bounds[k + 1] - bounds[k])
    return out


# --- strategies ----------------------------------------------------------------------------------


@_declare(Needs())
def a1111(z: Tensor, w: Tensor, extras: Extras) -> Tensor:
    """A1111 "Original" emphasis (sd_emphasis.py 1.8+): multiply, restore chunk means (§3.1)."""
    # On a T5/umT5 window this is Forge's T5 engine (§5): the mean over the pipeline's window.
    # The mean is over every text encoded together for one chunk index (a1111-behaviour.md §9.1):
    # the schedule variants of one prompt share the factor s, BOS/EOS/PAD included.
    # A chunk index without weights is returned as it is: A1111's factor is exactly 1 there, except
    # when the mean is 0 (a layer norm without bias), where A1111 divides 0 by 0.
    out = torch.empty_like(z)
    for k in range(z.shape[1]):
        chunk = z[:, k].contiguous()
        if bool((w[:, k] == 1.0).all()):
            out[:, k] = chunk
            continue
        weighted = chunk * w[:, k].unsqueeze(-1)
        out[:, k] = weighted * (chunk.mean() / weighted.mean())
    return out


@_declare(Needs())
def a1111_no_norm(z: Tensor, w: Tensor, extras: Extras) -> Tensor:
    """A1111/Forge "No norm" emphasis and sd_embed (2025-04): plain multiply ``w·z`` (§3.2)."""
    return z * w.unsqueeze(-1)


@_declare(Needs())
def lpw(z: Tensor, w: Tensor, extras: Extras) -> Tensor:
    """diffusers lpw_stable_diffusion (2026-02): multiply, restore each text's whole mean (§3.1)."""
    if bool((w == 1.0).all()):
        return z
    weighted = z * w.unsqueeze(-1)
    before = z.mean(dim=(1, 2, 3), keepdim=True)
    after = weighted.mean(dim=(1, 2, 3), keepdim=True)
    return weighted * (before / after)


@_declare(Needs())
def lerp_eos(z: Tensor, w: Tensor, extras: Extras) -> Tensor:
    """diffusers lpw_stable_diffusion_xl, sd_embed SDXL-2p: lerp from chunk's last slot (§3.12)."""
    return _lerp_from(z[:, :, -1:, :], z, w)


@_declare(Needs(empty=True))
def comfy(z: Tensor, w: Tensor, extras: Extras) -> Tensor:
    """ComfyUI default (sd1_clip.py, 2023+): lerp from the empty prompt, ``e + w(z − e)`` (§3.3)."""
    # ComfyUI weights T5 the same way (§5): e is then the encoded empty T5 window.
    return _lerp_from(_require(extras.empty, "the empty prompt"), z, w)


@_declare(Needs(empty=True, masked_fragments=True))
def compel(z: Tensor, w: Tensor, extras: Extras) -> Tensor:
    """compel 2.5.1: lerp from empty, then blend masked re-encodings with tan((1−w)·π/2) (§3.5)."""
    e = _require(extras.empty, "the empty prompt")
    out = torch.empty_like(z)
    for v in range(z.shape[0]):
        base = _lerp_from(e, z[v], w[v])
        masked = extras.masked[v] if extras.masked else ()
        if not masked:
            out[v] = base
            continue
        candidates = [base] + [_lerp_from(e, m, w[v]) for _, _, m in masked]
        lambdas = [1.0] + [math.tan((1.0 - max(1e-5, wf)) * math.pi / 2) for _, wf, _ in masked]
        mix = torch.tensor(lambdas, dtype=z.dtype, device=z.device)
        mix = mix / mix.sum()
        out[v] = (torch.stack(candidates) * mix.reshape(-1, 1, 1, 1)).sum(dim=0)
    return out


@_declare(Needs(substituted_levels="one", substituted_groups=True))
def comfy_plus_plus(z: Tensor, w: Tensor, extras: Extras) -> Tensor:
    """ComfyUI_ADV_CLIP_emb "comfy++" (63984de): masked-word lerp up, linear mixture down (§3.9)."""
    out = torch.empty_like(z)
    for v in range(z.shape[0]):
        mixed = _mixture(z[v], extras.levels[v] if extras.levels else ())
        up = torch.clamp(w[v], min=1.0) - 1.0
        for g, n in extras.groups[v] if extras.groups else ():
            here = (extras.fragments[v] == g).unsqueeze(-1)
            mixed = mixed + torch.where(here, (z[v] - n) * up.unsqueeze(-1), 0.0)
        out[v] = mixed
    return out


@_declare(Needs(substituted_levels="max"))
def down_weight(z: Tensor, w: Tensor, extras: Extras) -> Tensor:
    """ComfyUI_ADV_CLIP_emb "down_weight" (63984de): divide by the top weight, mix down (§3.9)."""
    out = torch.empty_like(z)
    for v in range(z.shape[0]):
        words = extras.fragments[v] >= 0
        top = max(1.0, float(w[v][words].max())) if bool(words.any()) else 1.0
        levels = tuple((u / top, q) for u, q in (extras.levels[v] if extras.levels else ()))
        out[v] = _mixture(z[v], levels)
    return out


@_declare(Needs(masked_weighted=True))
def span_lerp(z: Tensor, w: Tensor, extras: Extras) -> Tensor:
    """Decoder LLMs (promptweights): lerp from the span-masked re-encoding (compel §3.5, §3.3)."""
    # Per weighted span f: z + (w_f − 1)·(z − m_f) from the span's first token on, m_f the text
    # encoded with the span hidden from the attention mask (compel's masked re-encoding as the
    # anchor, ComfyUI's lerp as the rule). A causal LLM's states after a span all carry it, so a
    # weight cannot act on the span's own tokens alone: w < 1 moves every state from the span on
    # towards the encoding that never saw the span (w = 0: after the span, the text without it),
    # w > 1 away from it. Positions before the span (template included) are z exactly; several
    # spans add their moves.
    out = z.clone()
    positions = torch.arange(z.shape[2], device=z.device)
    for v in range(z.shape[0]):
        for f, wf, m in extras.masked[v] if extras.masked else ():
            here = extras.fragments[v] == f  # (K, T)
            if wf == 1.0 or not bool(here.any()):
                continue
            first = torch.where(here, positions, z.shape[2]).min(dim=-1, keepdim=True).values
            after = (positions >= first).unsqueeze(-1)  # (K, T, 1)
            out[v] = torch.where(after, out[v] + (wf - 1.0) * (z[v] - m), out[v])
    return out


@_declare(Needs())
def ignore(z: Tensor, w: Tensor, extras: Extras) -> Tensor:
    """A1111 "Ignore" emphasis: brackets parsed and removed, weights ignored (§3.1, a1111 §9.1)."""
    return z


@_declare(Needs(syntax=False))
def no_syntax(z: Tensor, w: Tensor, extras: Extras) -> Tensor:
    """A1111 "None" emphasis: prompt syntax is literal text, BREAK included (a1111 §9.1)."""
    return z


# --- token normalisations (§3.10) ----------------------------------------------------------------


def normalize_none(w: Tensor, fragments: Tensor) -> Tensor:
    """ADV token_normalization "none": weights unchanged."""
    return w


def normalize_length(w: Tensor, fragments: Tensor) -> Tensor:
    """ADV "length": ``w' = 1 + (w − 1)/√n`` for a span of ``n`` tokens (§3.10)."""
    out = w.clone()
    for v in range(w.shape[0]):
        words = fragments[v] >= 0
        if not bool(words.any()):
            continue
        counts = torch.bincount(fragments[v][words]).to(w.dtype)
        n = counts[fragments[v][words]]
        out[v][words] = 1.0 + (w[v][words] - 1.0) / torch.sqrt(n)
    return out


def normalize_mean(w: Tensor, fragments: Tensor) -> Tensor:
    """ADV "mean": shift word-token weights so that their mean is 1 (§3.10)."""
    out = w.clone()
    for v in range(w.shape[0]):
        words = fragments[v] >= 0
        if not bool(words.any()):
            continue
        out[v][words] = w[v][words] + (1.0 - w[v][words].mean())
    return out


def normalize_length_mean(w: Tensor, fragments: Tensor) -> Tensor:
    """ADV "length+mean": ``length`` first, then ``mean`` (§3.10)."""
    return normalize_mean(normalize_length(w, fragments), fragments)


def get_strategy(strategy: str | Strategy) -> Strategy:
    """Return the strategy registered as ``strategy``, or ``strategy`` itself if it is callable.

    Raises:
        UnknownNameError: for an unknown name; the message lists the known ones.
        ArgumentTypeError: for something that is neither a name nor a callable taking three
            positional arguments (:data:`STRATEGY_SIGNATURE`).

    >>> get_strategy(lambda z, w: z)
    Traceback (most recent call last):
      ...
    promptweights.errors.ArgumentTypeError: a strategy is called as strategy(z, w, extras) -> \
Tensor with z (V, K, T, D), w (V, K, T) and an Extras; '<lambda>' takes (z, w)
    """
    if callable(strategy):
        _check_callable(strategy)
        return strategy
    if not isinstance(strategy, str):
        raise ArgumentTypeError(
            f"strategy must be a name or a callable {STRATEGY_SIGNATURE}, "
            f"not {type(strategy).__name__}"
        )
    try:
        return STRATEGIES[strategy]
    except KeyError:
        raise UnknownNameError("strategy", strategy, list(STRATEGIES)) from None


def _check_callable(strategy: Callable[..., object]) -> None:
    """A callable strategy must take ``(z, w, extras)`` positionally."""
    import inspect

    try:
        signature = inspect.signature(strategy)
    except (TypeError, ValueError):  # a builtin or C callable without one: trust it
        return
    try:
        signature.bind(None, None, None)
    except TypeError:
        name = getattr(strategy, "__name__", type(strategy).__name__)
        raise ArgumentTypeError(
            f"a strategy is called as {STRATEGY_SIGNATURE} with z (V, K, T, D), w (V, K, T) and "
            f"an Extras; {name!r} takes ({', '.join(signature.parameters)})"
        ) from None


def get_normalization(normalization: str | Normalization) -> Normalization:
    """Return the token normalisation registered as ``normalization``, or the callable itself.

    Raises:
        UnknownNameError: for an unknown name; the message lists the known ones.
    """
    if callable(normalization):
        return normalization
    try:
        return NORMALIZATIONS[normalization]
    except KeyError:
        raise UnknownNameError("normalization", normalization, list(NORMALIZATIONS)) from None


NORMALIZATIONS: dict[str, Normalization] = {
    "none": normalize_none,
    "mean": normalize_mean,
    "length": normalize_length,
    "length+mean": normalize_length_mean,
}

STRATEGIES: dict[str, Strategy] = {
    "a1111": a1111,
    "a1111-no-norm": a1111_no_norm,
    "lpw": lpw,
    "lerp-eos": lerp_eos,
    "comfy": comfy,
    "compel": compel,
    "comfy++": comfy_plus_plus,
    "down-weight": down_weight,
    "ignore": ignore,
    "none": no_syntax,
    "span-lerp": span_lerp,
}


# --- weighting policies per encoder kind (the family records name them) --------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    """How prompt weights apply to one kind of text encoder: data a family record names per tower.

    Attributes:
        name: its key in :data:`POLICIES`.
        default: the strategy (a :data:`STRATEGIES` name) that ``encode``'s default gives it.
        alternatives: other strategies that are meaningful on it.
        why: the reasoning, as the README's table gives it.
        off: not empty: weighting is off on this encoder, for this reason; its weights are
            dropped (a diagnostic in lenient mode, refused in strict mode) unless another
            encoder of the family reads the same text with its weights.
    """

    name: str
    default: str
    alternatives: tuple[str, ...]
    why: str
    off: str = ""

    @property
    def weighted(self) -> bool:
        """Whether weights apply on this encoder."""
        return not self.off

    def strategy(self, requested: str | Strategy | None) -> str | Strategy:
        """The strategy to run on this encoder: ``requested`` (``None``: :attr:`default`); when
        weighting is off, ``"ignore"`` (brackets removed, weights not applied), unless
        ``requested`` reads prompt syntax as literal text (``"none"``), which every encoder then
        reads alike."""
        if requested is None:
            requested = self.default
        if self.weighted or not needs_of(get_strategy(requested)).syntax:
            return requested
        return "ignore"


_CLIP_ALTERNATIVES = tuple(name for name in STRATEGIES if name not in ("a1111", "span-lerp"))

#: The policies, by name: ``"clip"`` (every CLIP tower whose sequence the denoiser reads), ``"t5"``
#: (T5 and umT5 windows), ``"llm"`` (decoder LLMs with a chat template) and ``"pooled-only"``
#: (a CLIP tower of which only the unweighted pooled vector is used: Flux's CLIP-L).
POLICIES: dict[str, Policy] = {
    "clip": Policy(
        "clip",
        "a1111",
        _CLIP_ALTERNATIVES,
        "A1111's emphasis is what the prompts users share were written for; every other tool's "
        "math is a strategy of its own (weighting-strategies.md §3)",
    ),
    "t5": Policy(
        "t5",
        "a1111",
        ("comfy", "a1111-no-norm", "compel", "ignore", "none"),
        "Forge's T5 engine multiplies and restores the window's mean (a1111, over the "
        "pipeline's window); ComfyUI lerps every token from the encoded empty prompt (comfy, "
        "one extra window per encoder, cached); T5 is bidirectional, so weights act after the "
        "encoder and neighbours are untouched (§5)",
    ),
    "llm": Policy(
        "llm",
        "span-lerp",
        ("ignore", "none"),
        "a decoder LLM is causal, so a span's weight reaches every state after it: lerp from "
        "the encoding with the span hidden from the attention mask (one extra row per weighted "
        "span, from the KV cache of the text before it), masked rather than removed so that "
        "every position keeps its counterpart; scaling states (a1111) would scale the LLM's "
        "outlier channels, and the empty prompt's states (comfy) sit at other positions",
    ),
    "pooled-only": Policy(
        "pooled-only",
        "ignore",
        (),
        "only the pooled vector is read, and the pooled vector is never weighted",
        off="only its pooled vector reaches the denoiser, and pooled vectors are never weighted",
    ),
}
