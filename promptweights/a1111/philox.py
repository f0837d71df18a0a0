"""A1111's ``NV`` noise source: Philox4x32-10 and cuRAND's Box–Muller, on the CPU.

A1111 (``modules/rng_philox.py``, v1.10.1) offers ``Settings → Sampler parameters → Random number
generator source: NV``, a generator that gives on any machine the numbers that
``torch.randn(shape, device="cuda")`` gives on an NVIDIA GPU right after seeding. It draws them with
the counter-based Philox4x32-10 generator (Salmon et al., "Parallel random numbers: as easy as 1, 2,
3", SC 2011), the one cuRAND uses, and turns pairs of 32-bit words into normal numbers with
cuRAND's Box–Muller transform. This module computes the same numbers, to the bit, as A1111's own
NumPy code:

* the key is the seed as an unsigned 64-bit integer, split into its low and high 32-bit words;
* element ``i`` of a draw of ``n`` numbers uses the counter ``(offset, 0, i, 0)``, where ``offset``
  counts the draws made so far with this generator (0 for the first);
* of the four words Philox returns, the first two ``(x, y)`` give the number
  ``sqrt(-2 ln u) · sin(v)`` with ``u = x·2⁻³² + 2⁻³³`` and ``v = y·2π·2⁻³² + π·2⁻³²`` — the first
  of the pair Box–Muller makes; the constants are A1111's float32 roundings, the arithmetic is
  float64 and the result is rounded to float32.

A1111 moves the counter's first word on by one per draw. That the first draw after seeding equals
CUDA's is A1111's documented claim (for tensors of up to one number per resident GPU thread: torch's
kernel then uses the first output of each thread); whether later draws, such as ancestral samplers'
step noise, also agree depends on how torch advances its own offset, and ``benchmarks/gpu.sh``
reports it. Either way these are the numbers A1111's NV source gives.

>>> Generator(0).randn((2, 3))
tensor([[-0.9247, -0.4253, -2.6438],
        [ 0.1452, -0.1209, -0.5797]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from promptweights.errors import ArgumentTypeError, InvalidArgumentError

__all__ = [
    "PHILOX_M",
    "PHILOX_W",
    "Generator",
    "box_muller",
    "check_seed",
    "check_shape",
    "philox4x32",
]

#: Philox4x32's two round multipliers (Salmon et al. 2011, table 2).
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
#: Philox4x32's key increments ("Weyl sequence"): the golden ratio and sqrt(3) - 1, as 32-bit words.
PHILOX_W = (0x9E3779B9, 0xBB67AE85)

_MASK32 = np.uint64(0xFFFFFFFF)
# cuRAND's CURAND_2POW32_INV and CURAND_2POW32_INV_2PI as A1111 writes them: float32 roundings of
# these decimal literals (the second is a float64 product rounded once).
_TWO_POW32_INV = float(np.float32(2.3283064e-10))
_TWO_POW32_INV_2PI = float(np.float32(2.3283064e-10 * 6.2831855))
_MAX_SEED = 2**64 - 1

UInt32Array = npt.NDArray[np.uint32]


def _words(values: npt.ArrayLike, rows: int, name: str) -> UInt32Array:
    array = np.asarray(values)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] != rows:
        raise InvalidArgumentError(
            f"{name} must have {rows} rows of 32-bit words, got {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer) or array.size == 0:
        raise InvalidArgumentError(f"{name} must hold unsigned 32-bit integers")
    if int(array.min()) < 0 or int(array.max()) > 0xFFFFFFFF:
        raise InvalidArgumentError(f"{name} must hold unsigned 32-bit integers")
    return array.astype(np.uint32)


def _mulhilo(a: UInt32Array, m: int) -> tuple[UInt32Array, UInt32Array]:
    """The high and low 32-bit words of the 64-bit products ``a * m``."""
    product = a.astype(np.uint64) * np.uint64(m)
    return (product >> np.uint64(32)).astype(np.uint32), (product & _MASK32).astype(np.uint32)


def philox4x32(counter: npt.ArrayLike, key: npt.ArrayLike, rounds: int = 10) -> UInt32Array:
    """Run Philox4x32 on ``N`` counters at once and return the ``(4, N)`` output words.

    Each round multiplies counter words 0 and 2 by :data:`PHILOX_M`, and makes the new counter
    ``(hi(c2·M1) ^ c1 ^ k0, lo(c2·M1), hi(c0·M0) ^ c3 ^ k1, lo(c0·M0))``; the key grows by
    :data:`PHILOX_W` between rounds. This is the Random123 reference algorithm; the test suite
    checks it against Random123's published known-answer vectors.

    Args:
        counter: four rows of ``N`` unsigned 32-bit words (or four words: ``N = 1``).
        key: two rows of ``N`` unsigned 32-bit words (or two words).
        rounds: the number of rounds, 10 for Philox4x32-10 (cuRAND's and A1111's).

    Returns:
        A ``(4, N)`` ``uint32`` array.

    Raises:
        InvalidArgumentError: rows of the wrong count, words outside 32 bits, rounds below 1.

    >>> [hex(int(word)) for word in philox4x32([0, 0, 0, 0], [0, 0])[:, 0]]
    ['0x6627e8d5', '0xe169c58d', '0xbc57ac4c', '0x9b00dbd8']
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InvalidArgumentError(f"rounds must be a positive integer, got {rounds!r}")
    c = _words(counter, 4, "counter").copy()
    k = _words(key, 2, "key").astype(np.uint64)
    if k.shape[1] != c.shape[1]:
        k = np.broadcast_to(k, (2, c.shape[1])).copy()
    for index in range(rounds):
        if index:
            k = (k + np.asarray(PHILOX_W, dtype=np.uint64)[:, None]) & _MASK32
        hi0, lo0 = _mulhilo(c[0], PHILOX_M[0])
        hi1, lo1 = _mulhilo(c[2], PHILOX_M[1])
        key0, key1 = k[0].astype(np.uint32), k[1].astype(np.uint32)
        c = np.stack([hi1 ^ c[1] ^ key0, lo1, hi0 ^ c[3] ^ key1, lo0])
    return c


def box_muller(x: UInt32Array, y: UInt32Array) -> npt.NDArray[np.float32]:
    """cuRAND's Box–Muller transform of two 32-bit words, as A1111 computes it: the sine output.

    ``u`` is ``x`` mapped into (0, 1] and ``v`` is ``y`` mapped into (0, 2π]; the result is
    ``sqrt(-2 ln u) · sin(v)`` computed in float64 and rounded to float32.
    """
    u = x.astype(np.float64) * _TWO_POW32_INV + _TWO_POW32_INV / 2
    v = y.astype(np.float64) * _TWO_POW32_INV_2PI + _TWO_POW32_INV_2PI / 2
    radius = np.sqrt(-2.0 * np.log(u))
    return np.asarray(radius * np.sin(v)).astype(np.float32)


def check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """Return ``shape`` as a tuple of sizes; raise our errors for a bad one."""
    if isinstance(shape, int | str | bytes) or not isinstance(shape, Sequence | torch.Size):
        raise ArgumentTypeError(f"shape must be a sequence of sizes, got {shape!r}")
    sizes = tuple(shape)
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidArgumentError(f"shape must hold non-negative integers, got {shape!r}")
    if int(np.prod(sizes, dtype=np.int64)) > 2**32:
        raise InvalidArgumentError(
            f"shape {sizes} holds more than 2**32 numbers; one Philox draw indexes at most 2**32"
        )
    return sizes


def check_seed(seed: object, name: str = "seed") -> int:
    """Return ``seed`` if it is an integer in [0, 2**64); raise our errors otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ArgumentTypeError(f"{name} must be an integer, got {seed!r}")
    value = int(seed)
    if not 0 <= value <= _MAX_SEED:
        raise InvalidArgumentError(f"{name} must lie in [0, 2**64 - 1], got {value}")
    return value


class Generator:
    """A1111's ``NV`` generator: ``torch.randn(..., device="cuda")``'s numbers, on the CPU.

    Every :meth:`randn` call is one Philox draw: it uses the counter offset :attr:`offset` and then
    advances it by one, as A1111 does.

    Args:
        seed: an integer in ``[0, 2**64)``.

    Raises:
        ArgumentTypeError: ``seed`` is not an integer.
        InvalidArgumentError: ``seed`` is negative or does not fit 64 bits.

    >>> generator = Generator(0)
    >>> first, second = generator.randn((4,)), generator.randn((4,))
    >>> generator.offset, bool((first != second).all())
    (2, True)
    """

    def __init__(self, seed: int) -> None:
        self.seed = check_seed(seed)
        self.offset = 0

    def __repr__(self) -> str:
        return f"Generator(seed={self.seed}, offset={self.offset})"

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        """Draw a float32 CPU tensor of ``shape`` standard normal numbers; advance :attr:`offset`.

        Raises:
            ArgumentTypeError: ``shape`` is not a sequence.
            InvalidArgumentError: a negative size, or more than 2**32 numbers.
        """
        sizes = check_shape(shape)
        count = int(np.prod(sizes, dtype=np.int64))
        counter = np.zeros((4, count), dtype=np.uint32)
        counter[0] = self.offset & 0xFFFFFFFF
        counter[2] = np.arange(count, dtype=np.uint64).astype(np.uint32)
        key = np.array([[self.seed & 0xFFFFFFFF], [self.seed >> 32]], dtype=np.uint32)
        self.offset += 1
        words = philox4x32(counter, key) if count else np.zeros((4, 0), dtype=np.uint32)
        return torch.from_numpy(box_muller(words[0], words[1]).reshape(sizes))
