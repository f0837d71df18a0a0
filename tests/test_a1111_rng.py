"""promptweights.a1111: A1111's noise sources, seed rules, ENSD and Brownian noise.

Expected values come from published sources (Random123's known-answer vectors, the output that
A1111's ``rng_philox.py`` documents) or from the second reading in ``_a1111_noise_reference.py``,
which never imports promptweights.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from promptweights.a1111 import philox
from promptweights.a1111.rng import (
    ImageRNG,
    batch_seeds,
    brownian_noise_sampler,
    create_generator,
    randn,
    randn_without_seed,
    sigma_bounds,
    slerp,
)
from promptweights.errors import (
    ArgumentTypeError,
    DeviceUnavailableError,
    InvalidArgumentError,
    UnknownNameError,
)
from tests._a1111_noise_reference import job_seeds, nv_numbers, philox_block, reference_noise
from tests._a1111_sampling_reference import load_k_diffusion

SHAPE = (4, 8, 8)
ATOL = 1e-5

# Random123 1.14, tests/kat_vectors, its "philox4x32 R counter[4] key[2] output[4]" lines (hex).
KAT = [
    (
        7,
        "00000000 00000000 00000000 00000000",
        "00000000 00000000",
        "5f6fb709 0d893f64 4f121f81 4f730a48",
    ),
    (
        7,
        "ffffffff ffffffff ffffffff ffffffff",
        "ffffffff ffffffff",
        "5207ddc2 45165e59 4d8ee751 8c52f662",
    ),
    (
        7,
        "243f6a88 85a308d3 13198a2e 03707344",
        "a4093822 299f31d0",
        "4dfccaba 190a87f0 c47362ba b6b5242a",
    ),
    (
        10,
        "00000000 00000000 00000000 00000000",
        "00000000 00000000",
        "6627e8d5 e169c58d bc57ac4c 9b00dbd8",
    ),
    (
        10,
        "ffffffff ffffffff ffffffff ffffffff",
        "ffffffff ffffffff",
        "408f276d 41c83b0e a20bc7c6 6d5451fd",
    ),
    (
        10,
        "243f6a88 85a308d3 13198a2e 03707344",
        "a4093822 299f31d0",
        "d16cfe09 94fdcceb 5001e420 24126ea1",
    ),
]

# A1111 modules/rng_philox.py, its docstring: Generator(seed=0).randn(shape=(3, 4)) prints this
# (and torch.randn(3, 4, device="cuda") after torch.manual_seed(0) gives the same numbers).
A1111_NV_SEED0 = [
    [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
    [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
    [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
]


# Philox4x32 and the NV source ---------------------------------------------------------------


def _words(text: str) -> list[int]:
    return [int(word, 16) for word in text.split()]


@pytest.mark.parametrize(("rounds", "counter", "key", "expected"), KAT)
def test_philox_matches_random123_known_answers(
    rounds: int, counter: str, key: str, expected: str
) -> None:
    words = philox.philox4x32(_words(counter), _words(key), rounds)
    assert [int(w) for w in words[:, 0]] == _words(expected)


def test_test_reading_of_philox_matches_random123_too() -> None:
    for rounds, counter, key, expected in KAT:
        assert philox_block(_words(counter), _words(key), rounds) == _words(expected)


def test_philox_runs_many_counters_at_once() -> None:
    counters = np.array([[1, 2, 3], [0, 0, 7], [5, 6, 0xFFFFFFFF], [0, 9, 1]], dtype=np.uint32)
    key = [0xDEADBEEF, 0x12345678]
    batched = philox.philox4x32(counters, key)
    for column in range(3):
        expected = philox_block([int(c) for c in counters[:, column]], key)
        assert [int(w) for w in batched[:, column]] == expected


def test_nv_first_draw_is_the_output_a1111_documents() -> None:
    got = philox.Generator(0).randn((3, 4))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor(A1111_NV_SEED0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 123456789, 2**32 + 5, 2**64 - 1])
def test_nv_draws_match_the_second_reading(seed: int) -> None:
    generator = philox.Generator(seed)
    for draw in range(3):  # the counter's offset moves by one per draw
        got = generator.randn((2, 3, 5))
        expected = torch.tensor(nv_numbers(seed, draw, 30)).reshape(2, 3, 5).float()
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    assert generator.offset == 3


def test_nv_and_cpu_sources_differ_and_cpu_is_torchs_generator() -> None:
    nv, cpu = randn(42, SHAPE, source="NV"), randn(42, SHAPE, source="CPU")
    assert not torch.allclose(nv, cpu)
    torch.testing.assert_close(
        cpu, torch.randn(SHAPE, generator=torch.Generator().manual_seed(42)), atol=0, rtol=0
    )
    assert 0.8 < float(nv.std()) < 1.2
    assert abs(float(nv.mean())) < 0.2


def test_randn_without_seed_continues_a_generator() -> None:
    for source in ("CPU", "NV"):
        generator = create_generator(9, source)
        first, second = randn_without_seed(SHAPE, generator), randn_without_seed(SHAPE, generator)
        assert torch.equal(first, randn(9, SHAPE, source=source))
        assert not torch.allclose(first, second)


# Seed rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strength", [0.0, 0.5])
def test_batch_seeds_follow_a1111s_rule(strength: float) -> None:
    assert batch_seeds(1000, 4, subseed=77, subseed_strength=strength) == tuple(
        tuple(seeds) for seeds in job_seeds(1000, 77, 4, strength)
    )


@pytest.mark.parametrize("source", ["CPU", "NV"])
@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("resize", [None, (48, 80), (104, 40)], ids=["no-resize", "wide", "tall"])
@pytest.mark.parametrize("ensd", [0, 31337])
def test_image_rng_matches_the_second_reading(
    source: str, strength: float, resize: tuple[int, int] | None, ensd: int
) -> None:
    seeds, subseeds = job_seeds(2024, 55, 2, strength)  # a batch of two
    height, width = resize or (0, 0)
    rng = ImageRNG(
        SHAPE,
        seeds,
        subseeds=subseeds,
        subseed_strength=strength,
        seed_resize_from_h=height,
        seed_resize_from_w=width,
        source=source,
        ensd=ensd,
    )
    got = [rng.next(), rng.next(), rng.next()]  # A1111 asks next() for the initial noise too
    expected = reference_noise(
        SHAPE,
        seeds,
        subseeds=subseeds,
        strength=strength,
        resize_from=resize,
        source=source,
        ensd=ensd,
        steps=2,
    )
    for noise, want in zip(got, expected, strict=True):
        assert noise.shape == (2, *SHAPE)
        assert noise.dtype == torch.float32
        torch.testing.assert_close(noise, want, atol=ATOL, rtol=0)


def test_strength_zero_is_the_seed_alone_and_one_is_the_variation_seed() -> None:
    plain = ImageRNG(SHAPE, [5], subseeds=[6], subseed_strength=0.0).first()
    assert torch.equal(plain[0], randn(5, SHAPE))
    full = ImageRNG(SHAPE, [5], subseeds=[6], subseed_strength=1.0).first()
    torch.testing.assert_close(full[0], randn(6, SHAPE), atol=ATOL, rtol=0)


def test_each_image_of_a_batch_is_the_image_made_alone() -> None:
    batch = ImageRNG(SHAPE, [7, 8], subseeds=[1, 2], subseed_strength=0.3, ensd=4)
    alone = [
        ImageRNG(SHAPE, [s], subseeds=[u], subseed_strength=0.3, ensd=4)
        for s, u in [(7, 1), (8, 2)]
    ]
    for _ in range(3):
        rows = batch.next()
        for index, single in enumerate(alone):
            torch.testing.assert_close(rows[index], single.next()[0], atol=0, rtol=0)


@pytest.mark.parametrize("source", ["CPU", "NV"])
def test_ensd_reseeds_the_step_noise_only(source: str) -> None:
    with_ensd = ImageRNG(SHAPE, [100], source=source, ensd=31337)
    without = ImageRNG(SHAPE, [100], source=source)
    assert torch.equal(with_ensd.first(), without.first())
    assert torch.equal(with_ensd.next()[0], randn(100 + 31337, SHAPE, source=source))
    continued = create_generator(100, source)
    randn_without_seed(SHAPE, continued)
    assert torch.equal(without.next()[0], randn_without_seed(SHAPE, continued))


def test_ensd_has_a1111s_setting_name_too() -> None:
    named = ImageRNG(SHAPE, [5], eta_noise_seed_delta=9)
    short = ImageRNG(SHAPE, [5], ensd=9)
    named.first()
    short.first()
    assert torch.equal(named.next(), short.next())
    with pytest.raises(InvalidArgumentError, match="disagree"):
        ImageRNG(SHAPE, [5], ensd=1, eta_noise_seed_delta=2)


def test_first_starts_over() -> None:
    rng = ImageRNG(SHAPE, [3, 4], source="NV", ensd=1)
    initial, step = rng.first(), rng.next()
    assert torch.equal(rng.first(), initial)
    assert torch.equal(rng.next(), step)


def test_seed_resize_to_the_same_size_changes_nothing() -> None:
    plain = ImageRNG(SHAPE, [11]).first()
    same = ImageRNG(SHAPE, [11], seed_resize_from_h=64, seed_resize_from_w=64).first()
    assert torch.equal(plain, same)


def test_slerp_keeps_a1111s_swapped_linear_branch() -> None:
    low = randn(1, SHAPE)
    # Parallel noise takes the linear branch, which A1111 writes as low*val + high*(1 - val).
    torch.testing.assert_close(slerp(0.3, low, 2 * low), low * 1.7, atol=ATOL, rtol=0)


def test_noise_lands_on_the_requested_device_in_float32() -> None:
    noise = ImageRNG(SHAPE, [1], device=torch.device("cpu")).first()
    assert noise.device.type == "cpu"
    assert noise.dtype == torch.float32


def test_gpu_source_needs_cuda() -> None:
    if torch.cuda.is_available():  # pragma: no cover - benchmarks/gpu.sh runs this on a GPU
        torch.testing.assert_close(
            randn(0, (3, 4), source="GPU", device="cuda").cpu(),
            torch.tensor(A1111_NV_SEED0),
            atol=1e-5,
            rtol=0,
        )
        return
    with pytest.raises(DeviceUnavailableError, match="NV"):
        randn(0, SHAPE, source="GPU")
    with pytest.raises(DeviceUnavailableError):
        ImageRNG(SHAPE, [0], source="GPU")


# Brownian noise -----------------------------------------------------------------------------


def _tree_increment(
    seed: int, x: torch.Tensor, t0: float, t1: float, s: float, e: float
) -> torch.Tensor:
    """k-diffusion's BrownianTreeNoiseSampler, read from its documentation, for one image."""
    import torchsde

    tree = torchsde.BrownianTree(
        torch.tensor(t0), torch.zeros_like(x), torch.tensor(t1), entropy=seed
    )
    low, high = min(s, e), max(s, e)
    sign = 1 if s < e else -1
    return tree(torch.tensor(low), torch.tensor(high)) * sign / torch.tensor(e - s).abs().sqrt()


def test_brownian_noise_is_one_seeded_tree_per_image() -> None:
    pytest.importorskip("torchsde")
    sigmas = torch.tensor([14.6146, 6.0, 2.0, 0.5, 0.0292, 0.0])
    sigma_min, sigma_max = sigma_bounds(sigmas)
    assert float(sigma_min) == pytest.approx(0.0292)
    assert float(sigma_max) == pytest.approx(14.6146)
    x = torch.zeros(2, *SHAPE)
    sampler = brownian_noise_sampler(x, sigma_min, sigma_max, [10, 20])
    for s, e in [(6.0, 2.0), (2.0, 0.5), (0.5, 0.0292)]:
        got = sampler(torch.tensor(s), torch.tensor(e))
        assert got.shape == x.shape
        for index, seed in enumerate([10, 20]):
            want = _tree_increment(seed, x[0], float(sigma_min), float(sigma_max), s, e)
            torch.testing.assert_close(got[index], want, atol=ATOL, rtol=1e-5)


def test_brownian_noise_of_an_image_does_not_depend_on_its_batch() -> None:
    pytest.importorskip("torchsde")
    pair = brownian_noise_sampler(torch.zeros(2, *SHAPE), 0.03, 14.6, [1, 2])
    alone = brownian_noise_sampler(torch.zeros(1, *SHAPE), 0.03, 14.6, [2])
    torch.testing.assert_close(pair(7.0, 3.0)[1], alone(7.0, 3.0)[0], atol=0, rtol=0)


def test_brownian_noise_ignores_the_rng_source_and_can_draw_elsewhere() -> None:
    pytest.importorskip("torchsde")
    x = torch.zeros(1, *SHAPE, dtype=torch.float64)
    plain = brownian_noise_sampler(x, 0.03, 14.6, [5])(3.0, 1.0)
    for source in ("CPU", "NV"):
        noise = brownian_noise_sampler(x, 0.03, 14.6, [5], source=source)(3.0, 1.0)
        torch.testing.assert_close(noise, plain, atol=0, rtol=0)
    # device= names where the trees draw; here the CPU again, so the noise is the same.
    on_cpu = brownian_noise_sampler(x, 0.03, 14.6, [5], device="cpu")(3.0, 1.0)
    torch.testing.assert_close(on_cpu, plain, atol=0, rtol=0)
    assert plain.dtype == torch.float64
    with pytest.raises(UnknownNameError):
        brownian_noise_sampler(x, 0.03, 14.6, [5], source="cuda")


def test_nv_brownian_noise_draws_cudas_numbers_from_philox(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torchsde")
    x = torch.zeros(2, 2, 4, 4)
    steps = [(14.6, 6.0), (6.0, 0.03)]
    got = brownian_noise_sampler(x, 0.03, 14.6, [11, 12], device="NV")
    ours = [got(torch.tensor(s), torch.tensor(e)) for s, e in steps]
    plain = brownian_noise_sampler(x, 0.03, 14.6, [11, 12])(torch.tensor(14.6), torch.tensor(6.0))
    assert not torch.allclose(ours[0], plain)  # the CPU generator's numbers are others

    # The second reading: every tree draw is the first NV draw after seeding with its seed.
    from torchsde._brownian import brownian_interval

    def first_nv_draw(size: tuple[int, ...], dtype: torch.dtype, device: object, seed: int):  # type: ignore[no-untyped-def]
        values = nv_numbers(int(seed), 0, int(np.prod(size)))
        return torch.tensor(values, dtype=torch.float64).reshape(tuple(size)).to(dtype)

    monkeypatch.setattr(brownian_interval, "_randn", first_nv_draw)
    for (s, e), noise in zip(steps, ours, strict=True):
        for index, seed in enumerate([11, 12]):
            want = _tree_increment(seed, x[0], 0.03, 14.6, s, e)
            torch.testing.assert_close(noise[index], want, atol=ATOL, rtol=1e-5)


def test_nv_brownian_noise_leaves_other_torchsde_trees_alone() -> None:
    pytest.importorskip("torchsde")
    from torchsde._brownian import brownian_interval

    brownian_noise_sampler(torch.zeros(1, 2, 4, 4), 0.03, 14.6, [1], device="NV")(5.0, 1.0)
    # Outside our NV trees torchsde draws as it always does: a fresh generator of the device.
    drawn = brownian_interval._randn((3,), torch.float32, torch.device("cpu"), 5)
    want = torch.randn(3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(drawn, want, atol=0, rtol=0)


def test_brownian_noise_matches_k_diffusion_where_installed() -> None:
    try:
        sampling, _ = load_k_diffusion()  # sampling.py alone: the package __init__ needs skimage
    except ImportError:
        pytest.skip("k-diffusion is not installed (requirements-kdiffusion.txt)")
    x = torch.zeros(2, *SHAPE)
    ours = brownian_noise_sampler(x, torch.tensor(0.03), torch.tensor(14.6), [3, 4])
    theirs = sampling.BrownianTreeNoiseSampler(
        x, torch.tensor(0.03), torch.tensor(14.6), seed=[3, 4]
    )
    for s, e in [(14.6, 5.0), (5.0, 0.03)]:
        a, b = ours(torch.tensor(s), torch.tensor(e)), theirs(torch.tensor(s), torch.tensor(e))
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_missing_torchsde_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchsde", None)
    with pytest.raises(ImportError, match=r"promptweights\[a1111\]"):
        brownian_noise_sampler(torch.zeros(1, *SHAPE), 0.03, 14.6, [1])


# Bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: randn(1, SHAPE, source="cuda"), UnknownNameError),
        (lambda: randn(-1, SHAPE), InvalidArgumentError),
        (lambda: randn(2**64, SHAPE), InvalidArgumentError),
        (lambda: randn(True, SHAPE), ArgumentTypeError),
        (lambda: randn(1.5, SHAPE), ArgumentTypeError),
        (lambda: randn(1, (4, -1)), InvalidArgumentError),
        (lambda: randn(1, 4), ArgumentTypeError),
        (lambda: randn(1, SHAPE, device="nowhere"), InvalidArgumentError),
        (lambda: randn_without_seed(SHAPE, "gen"), ArgumentTypeError),
        (lambda: philox.philox4x32([1, 2, 3], [0, 0]), InvalidArgumentError),
        (lambda: philox.philox4x32([0, 0, 0, 2**32], [0, 0]), InvalidArgumentError),
        (lambda: philox.philox4x32([0, 0, 0, 0], [0, 0], rounds=0), InvalidArgumentError),
        (lambda: ImageRNG((4, 8), [1]), InvalidArgumentError),
        (lambda: ImageRNG(SHAPE, []), InvalidArgumentError),
        (lambda: ImageRNG(SHAPE, 5), ArgumentTypeError),
        (
            lambda: ImageRNG(SHAPE, [1], subseed_strength=float("nan"), subseeds=[2]),
            InvalidArgumentError,
        ),
        (lambda: ImageRNG(SHAPE, [1], subseed_strength=0.5), InvalidArgumentError),
        (lambda: ImageRNG(SHAPE, [2**64 - 1], ensd=1), InvalidArgumentError),
        (lambda: ImageRNG(SHAPE, [1], ensd=1.5), ArgumentTypeError),
        (lambda: batch_seeds(1, -2), InvalidArgumentError),
        (lambda: slerp(0.5, torch.zeros(3), torch.zeros(3)), InvalidArgumentError),
        (lambda: sigma_bounds(torch.zeros(3)), InvalidArgumentError),
        (
            lambda: brownian_noise_sampler(torch.zeros(2, *SHAPE), 0.1, 1.0, [1]),
            InvalidArgumentError,
        ),
        (
            lambda: brownian_noise_sampler(torch.zeros(1, *SHAPE), 1.0, 1.0, [1]),
            InvalidArgumentError,
        ),
        (lambda: brownian_noise_sampler("x", 0.1, 1.0, [1]), ArgumentTypeError),
        (
            lambda: brownian_noise_sampler(
                torch.zeros(1, 2, dtype=torch.float64), 0, 1, [1], device="NV"
            ),
            InvalidArgumentError,
        ),  # type: ignore[arg-type]
    ],
)
def test_bad_input_raises_our_errors(call: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        call()  # type: ignore[operator]


def test_the_package_stays_out_of_import_promptweights() -> None:
    import subprocess

    code = "import sys, promptweights; print('promptweights.a1111' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
