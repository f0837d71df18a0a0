"""Weighting strategies on the toy tensors of weighting-strategies.md §7 (expected values: there).

Three positions, d = 2: BOS [1,1], "cat" [2,0], EOS/PAD [0,2]; empty prompt e: [1,1], [0.5,0.5],
[0,1]; "cat-masked" encoding M: [1,1], [0.4,0.6], [0,1.5].
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from promptweights.errors import UnknownNameError
from promptweights.strategies import (
    NORMALIZATIONS,
    STRATEGIES,
    Extras,
    Needs,
    get_normalization,
    get_strategy,
    needs_of,
)

Z = torch.tensor([[[[1.0, 1.0], [2.0, 0.0], [0.0, 2.0]]]])  # (V=1, K=1, T=3, D=2)
E = torch.tensor([[1.0, 1.0], [0.5, 0.5], [0.0, 1.0]])
M = torch.tensor([[[1.0, 1.0], [0.4, 0.6], [0.0, 1.5]]])  # (K=1, T=3, D=2)
FRAGMENTS = torch.tensor([[[-1, 0, -1]]])


def weights(cat: float) -> Tensor:
    return torch.tensor([[[1.0, cat, 1.0]]])


def extras(cat: float) -> Extras:
    masked = ((0, cat, M),) if cat < 1 else ()
    return Extras(fragments=FRAGMENTS, empty=E, masked=(masked,))


def run(name: str, cat: float) -> Tensor:
    return STRATEGIES[name](Z, weights(cat), extras(cat))[0, 0]


def rows(*values: list[float]) -> Tensor:
    return torch.tensor(values, dtype=torch.float32)


# --- §7 golden table ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cat", "expected"),
    [
        ("comfy", 1.5, rows([1, 1], [2.75, -0.25], [0, 2])),
        ("comfy", 0.5, rows([1, 1], [1.25, 0.25], [0, 2])),
        ("a1111", 1.5, rows([6 / 7, 6 / 7], [3 * 6 / 7, 0], [0, 2 * 6 / 7])),
        ("a1111", 0.5, rows([1.2, 1.2], [1.2, 0], [0, 2.4])),
        ("a1111-no-norm", 1.5, rows([1, 1], [3, 0], [0, 2])),
        ("a1111-no-norm", 0.5, rows([1, 1], [1, 0], [0, 2])),
        ("lerp-eos", 1.5, rows([1, 1], [3, -1], [0, 2])),
        ("lerp-eos", 0.5, rows([1, 1], [1, 1], [0, 2])),
        ("compel", 1.5, rows([1, 1], [2.75, -0.25], [0, 2])),
        ("compel", 0.5, rows([1, 1], [0.85, 0.40], [0, 1.75])),
        ("lpw", 1.5, rows([6 / 7, 6 / 7], [3 * 6 / 7, 0], [0, 2 * 6 / 7])),
        ("ignore", 1.5, rows([1, 1], [2, 0], [0, 2])),
        ("none", 0.5, rows([1, 1], [2, 0], [0, 2])),
    ],
)
def test_golden_toy_examples(name: str, cat: float, expected: Tensor) -> None:
    torch.testing.assert_close(run(name, cat), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("cat", "s"), [(0.5, -0.5), (1.5, 0.25)])
def test_a1111_mean_restore_instability(cat: float, s: float) -> None:
    # §7: BOS [1,-1], cat [0.2,0.1], EOS [-0.2,-0.05] (sum 0.05).
    z = torch.tensor([[[[1.0, -1.0], [0.2, 0.1], [-0.2, -0.05]]]])
    out = STRATEGIES["a1111"](z, weights(cat), Extras(fragments=FRAGMENTS))
    expected = z * weights(cat).unsqueeze(-1) * s
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_a1111_couples_texts_of_one_group_per_chunk_but_not_chunks() -> None:
    # Two texts encoded together (schedule variants) share s per chunk index (a1111 §9.1).
    z = torch.stack([Z[0], Z[0] * 2.0])  # (2, 1, 3, 2): means 1 and 2
    z = torch.cat([z, z + 1.0], dim=1)  # two chunks
    w = torch.tensor([[[1.0, 1.5, 1.0], [1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]])
    out = STRATEGIES["a1111"](z, w, Extras(fragments=torch.zeros(2, 2, 3, dtype=torch.long)))
    # chunk 0: sum before = 6 + 12 = 18, after = 6 + 1 (cat's extra half of [2,0]) + 12 = 19.
    s = 18 / 19
    torch.testing.assert_close(out[:, 0], z[:, 0] * w[:, 0].unsqueeze(-1) * s)
    # chunk 1 has only weight 1: untouched, bit for bit.
    assert torch.equal(out[:, 1], z[:, 1])


def test_lpw_restores_each_texts_mean_over_all_chunks() -> None:
    z = torch.cat([Z, Z + 1.0], dim=1)  # (1, 2, 3, 2): sums 6 and 12
    w = torch.tensor([[[1.0, 1.5, 1.0], [1.0, 1.0, 1.0]]])
    out = STRATEGIES["lpw"](z, w, Extras(fragments=torch.zeros(1, 2, 3, dtype=torch.long)))
    s = 18 / 19
    torch.testing.assert_close(out, z * w.unsqueeze(-1) * s)


def test_compel_two_fragments_at_half_each_get_a_third() -> None:
    m1 = M
    m2 = M * 3.0
    w = torch.tensor([[[1.0, 0.5, 0.5]]])
    ext = Extras(
        fragments=torch.tensor([[[-1, 0, 1]]]),
        empty=E,
        masked=(((0, 0.5, m1), (1, 0.5, m2)),),
    )
    out = STRATEGIES["compel"](Z, w, ext)[0]

    def lerp(x: Tensor) -> Tensor:
        return torch.where(w[0].unsqueeze(-1) == 1, x, E + (x - E) * w[0].unsqueeze(-1))

    expected = (lerp(Z[0]) + lerp(m1) + lerp(m2)) / 3
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("cat", [0.9, 0.25, 0.0, -1.0])
def test_compel_tan_share(cat: float) -> None:
    # §3.5: the unmasked sequence keeps 1/(1+λ), λ = tan((1 − max(w, 1e-5))·π/2).
    lam = math.tan((1 - max(cat, 1e-5)) * math.pi / 2)
    out = run("compel", cat)
    b = torch.where(weights(cat)[0, 0].unsqueeze(-1) == 1, Z[0, 0], E + (Z[0, 0] - E) * cat)
    m = torch.where(weights(cat)[0, 0].unsqueeze(-1) == 1, M[0], E + (M[0] - E) * cat)
    expected = (b + lam * m) / (1 + lam)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_down_weight_and_comfy_plus_plus_follow_the_adv_formulas() -> None:
    # `(cat:1.5) dog` → down_weight: cat 1.0, dog 1/1.5; out = (2/3)·B + (1/3)·Q(dog substituted).
    z = torch.tensor([[[[1.0, 1.0], [2.0, 0.0], [1.0, 3.0], [0.0, 2.0]]]])
    w = torch.tensor([[[1.0, 1.5, 1.0, 1.0]]])
    frag = torch.tensor([[[-1, 0, 1, -1]]])
    q_dog = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [5.0, 5.0], [4.0, 4.0]]])
    out = STRATEGIES["down-weight"](z, w, Extras(fragments=frag, levels=(((1.0, q_dog),),)))
    torch.testing.assert_close(out[0], z[0] * (2 / 3) + q_dog * (1 / 3))
    # comfy++ with the same up-weight: out[j] = B[j] + (w−1)·(B[j] − N[j]) on cat's positions.
    n_cat = torch.tensor([[[1.0, 1.0], [0.0, 1.0], [7.0, 7.0], [9.0, 9.0]]])
    out = STRATEGIES["comfy++"](z, w, Extras(fragments=frag, groups=(((0, n_cat),),)))
    expected = z.clone()
    expected[0, 0, 1] = z[0, 0, 1] + 0.5 * (z[0, 0, 1] - n_cat[0, 1])
    torch.testing.assert_close(out, expected)
    # comfy++ down part: two levels 0.25 < 0.5 → 0.25·B + 0.25·Q1 + 0.5·Q2 (§3.8 README example).
    w = torch.tensor([[[1.0, 0.25, 0.5, 1.0]]])
    q1, q2 = z[0] + 1.0, z[0] + 2.0
    out = STRATEGIES["comfy++"](z, w, Extras(fragments=frag, levels=(((0.25, q1), (0.5, q2)),)))
    torch.testing.assert_close(out[0], 0.25 * z[0] + 0.25 * q1 + 0.5 * q2)


def test_weight_zero_and_negative() -> None:
    torch.testing.assert_close(run("a1111-no-norm", 0.0)[1], torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(run("comfy", 0.0)[1], E[1])
    torch.testing.assert_close(run("a1111-no-norm", -1.0)[1], torch.tensor([-2.0, 0.0]))
    torch.testing.assert_close(run("comfy", -1.0)[1], torch.tensor([-1.0, 1.0]))
    for name in STRATEGIES:
        assert torch.isfinite(run(name, 0.0)).all(), name
        assert torch.isfinite(run(name, -0.5)).all(), name


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_all_weights_one_is_the_identity_bit_for_bit(name: str) -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 3, 77, 8)
    w = torch.ones(2, 3, 77)
    frag = torch.full((2, 3, 77), -1)
    ext = Extras(fragments=frag, empty=torch.randn(77, 8), masked=((), ()), levels=((), ()))
    assert torch.equal(STRATEGIES[name](z, w, ext), z)


# --- registry and normalisation ----------------------------------------------------------------


def test_registry_names_and_needs() -> None:
    assert list(STRATEGIES) == [
        "a1111",
        "a1111-no-norm",
        "lpw",
        "lerp-eos",
        "comfy",
        "compel",
        "comfy++",
        "down-weight",
        "ignore",
        "none",
        "span-lerp",
    ]
    assert needs_of(STRATEGIES["a1111"]) == Needs()
    assert needs_of(STRATEGIES["span-lerp"]) == Needs(masked_weighted=True)
    assert needs_of(STRATEGIES["comfy"]).empty
    assert needs_of(STRATEGIES["compel"]) == Needs(empty=True, masked_fragments=True)
    assert needs_of(STRATEGIES["comfy++"]).substituted_levels == "one"
    assert needs_of(STRATEGIES["comfy++"]).substituted_groups
    assert needs_of(STRATEGIES["down-weight"]).substituted_levels == "max"
    assert not needs_of(STRATEGIES["none"]).syntax
    for strategy in STRATEGIES.values():
        assert strategy.__doc__
        assert "\n" not in strategy.__doc__.strip()
        assert "§" in strategy.__doc__


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown strategy 'a1112'; known: a1111, ") as info:
        get_strategy("a1112")
    assert "compel" in info.value.known
    with pytest.raises(KeyError):
        get_normalization("median")


def test_callable_accepted_where_a_name_is() -> None:
    def double(z: Tensor, w: Tensor, extras: Extras) -> Tensor:
        return z * 2

    assert get_strategy(double) is double
    assert needs_of(double) == Needs()
    assert get_strategy("compel") is STRATEGIES["compel"]
    assert get_normalization("mean") is NORMALIZATIONS["mean"]


def test_bad_needs_attribute_is_reported() -> None:
    def odd(z: Tensor, w: Tensor, extras: Extras) -> Tensor:
        return z

    odd.needs = {"empty"}  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="Needs"):
        needs_of(odd)


def test_length_normalisation_readme_example() -> None:
    # 3 tokens at 1.5 → 1 + 0.5/√3 ≈ 1.2887 each; specials untouched.
    w = torch.tensor([[[1.0, 1.5, 1.5, 1.5, 1.0, 1.0]]])
    frag = torch.tensor([[[-1, 1, 1, 1, 0, -1]]])
    out = get_normalization("length")(w, frag)
    expected = torch.tensor([[[1.0, 1.2887, 1.2887, 1.2887, 1.0, 1.0]]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)


def test_mean_normalisation_example() -> None:
    # `a (cat:1.5) on table` (4 word tokens) → mean 1.125 → cat 1.375, the others 0.875.
    w = torch.tensor([[[1.0, 1.0, 1.5, 1.0, 1.0, 1.0]]])
    frag = torch.tensor([[[-1, 0, 1, 2, 2, -1]]])
    out = get_normalization("mean")(w, frag)
    expected = torch.tensor([[[1.0, 0.875, 1.375, 0.875, 0.875, 1.0]]])
    torch.testing.assert_close(out, expected)
    both = get_normalization("length+mean")(w, frag)
    length = get_normalization("length")(w, frag)
    torch.testing.assert_close(both, get_normalization("mean")(length, frag))
    assert get_normalization("none")(w, frag) is w


# --- properties ----------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(2, 6)),
    levels=st.lists(st.sampled_from([0.0, 0.5, 0.9, 1.0, 1.1, 1.5, -1.0]), min_size=1),
)
def test_mean_restoring_strategies_keep_their_means(
    seed: int, shape: tuple[int, int, int], levels: list[float]
) -> None:
    v, k, t = shape
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(v, k, t, 4, generator=gen, dtype=torch.float64) + 1.0
    picks = torch.randint(0, len(levels), (v, k, t), generator=gen)
    w = torch.tensor(levels, dtype=torch.float64)[picks]
    ext = Extras(fragments=torch.zeros(v, k, t, dtype=torch.long))
    weighted = z * w.unsqueeze(-1)
    a1111 = STRATEGIES["a1111"](z, w, ext)
    for chunk in range(k):
        # A1111: every chunk index keeps the mean over all texts of the group (§3.1).
        if abs(float(weighted[:, chunk].mean())) > 1e-3:
            assert math.isclose(
                float(a1111[:, chunk].mean()), float(z[:, chunk].mean()), rel_tol=1e-9, abs_tol=1e-9
            )
    lpw = STRATEGIES["lpw"](z, w, ext)
    for text in range(v):
        # lpw: every text keeps its mean over all its chunks.
        if abs(float(weighted[text].mean())) > 1e-3:
            assert math.isclose(
                float(lpw[text].mean()), float(z[text].mean()), rel_tol=1e-9, abs_tol=1e-9
            )
    # Positions of weight 1 are copied exactly by the lerp strategies.
    ones = (w == 1.0).unsqueeze(-1).expand_as(z)
    lerp = STRATEGIES["lerp-eos"](z, w, ext)
    assert torch.equal(lerp[ones], z[ones])
