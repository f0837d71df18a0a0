"""The Beta distribution's quantile function, for A1111's "Beta" σ schedule.

A1111 v1.10.1 calls ``scipy.stats.beta.ppf``; scipy is not a dependency here, so the quantile is
computed in double precision from the regularized incomplete beta function ``I_x(a, b)`` (its
continued fraction, evaluated with the modified Lentz method) and inverted by bisection down to
adjacent doubles. tests/test_a1111_schedules.py checks it against closed forms and, where scipy is
installed, against scipy.
"""

from __future__ import annotations

import math

__all__ = ["beta_cdf", "beta_ppf"]

_TINY = 1e-300
_EPS = 1e-16


def _continued_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of ``I_x(a, b)`` (fast for ``x < (a + 1) / (a + b + 2)``)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    value = d
    for m in range(1, 1000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            value *= c * d
        if abs(c * d - 1.0) < _EPS:
            break
    return value


def beta_cdf(x: float, a: float, b: float) -> float:
    """``I_x(a, b)``, the regularized incomplete beta function (the Beta(a, b) CDF at ``x``).

    >>> round(beta_cdf(0.25, 0.5, 0.5), 12)  # arcsine law: (2/π)·asin(√x)
    0.333333333333
    """
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        a * math.log(x)
        + b * math.log1p(-x)
        - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _continued_fraction(x, a, b) / a
    return 1.0 - front * _continued_fraction(1.0 - x, b, a) / b


def beta_ppf(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(a, b): the ``x`` in [0, 1] with ``I_x(a, b) = q``.

    >>> round(beta_ppf(0.5, 0.6, 0.6), 12), round(beta_ppf(1 / 3, 0.5, 0.5), 12)
    (0.5, 0.25)
    """
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(2100):  # enough halvings to reach the smallest doubles
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return hi if abs(beta_cdf(hi, a, b) - q) <= abs(beta_cdf(lo, a, b) - q) else lo
