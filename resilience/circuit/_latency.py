"""A fine log-linear latency histogram: percentiles within 2% of the true sample values.

The rolling window keeps, per time bucket, counts over ``FINE_BOUNDS``: from 10 ns to 60 s,
each bucket at most 4% wider than its lower bound, and every bound of the coarse Prometheus
series (``LATENCY_BOUNDS``) is also a fine bound. A percentile reads the bucket holding its rank
and answers the bucket's geometric middle, so it is within 2% of the sample at that rank (clamped
to the exact minimum and maximum, which the window keeps too). Hystrix's stream shows these.

Binning stays off the per-call path: successes are appended to a list and binned in batches,
where a sorted batch is cut at the fine bounds it spans with C-level ``bisect`` calls.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate, pairwise, repeat
from operator import add, sub

__all__ = ["FINE_BOUNDS", "LATENCY_BOUNDS", "bin_sorted", "percentiles"]

# Upper bounds (seconds) of the Prometheus latency histogram, a 1-2-5 series from 100 us to 60 s.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
    1.0, 2.0, 5.0, 10.0, 20.0, 60.0,
)  # fmt: skip
_RATIO = 1.04  # widest fine bucket, relative to its lower bound


def _fine_bounds() -> tuple[float, ...]:
    coarse = [1e-8, 2e-8, 5e-8, 1e-7, 2e-7, 5e-7, 1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5]
    coarse += LATENCY_BOUNDS
    out: list[float] = []
    for lo, hi in pairwise(coarse):
        steps = math.ceil(math.log(hi / lo) / math.log(_RATIO))
        out.extend(lo * (hi / lo) ** (k / steps) for k in range(steps))
    out.append(coarse[-1])
    return tuple(out)


# A latency x falls in bucket j = ``bisect_left(FINE_BOUNDS, x)``, so that
# FINE_BOUNDS[j-1] < x <= FINE_BOUNDS[j] (Prometheus' ``le``); the last bucket is above 60 s.
FINE_BOUNDS = _fine_bounds()
FINE_SIZE = len(FINE_BOUNDS) + 1


def bin_sorted(batch: list[float], fine: list[int]) -> None:
    """Add the latencies of a sorted, non-empty ``batch`` to the ``fine`` bucket counts."""
    lo = bisect_left(FINE_BOUNDS, batch[0])
    hi = bisect_left(FINE_BOUNDS, batch[-1])
    if lo == hi:
        fine[lo] += len(batch)
        return
    # How many of the batch fall at or below each bound it spans; differences are per bucket.
    cuts = list(map(bisect_right, repeat(batch, hi - lo), FINE_BOUNDS[lo:hi]))
    cuts.append(len(batch))
    counts = map(sub, cuts, [0, *cuts[:-1]])
    fine[lo : hi + 1] = map(add, fine[lo : hi + 1], counts)


def percentiles(fine: Sequence[int], qs: Sequence[float], low: float, high: float) -> list[float]:
    """Latencies (seconds) at quantiles ``qs`` (0..1) of the counts ``fine``; 0.0 if empty.

    ``low`` and ``high`` are the exact smallest and largest samples: quantile 0 and 1 answer
    them, and every answer stays between them.
    """
    cumulative = list(accumulate(fine))
    total = cumulative[-1] if cumulative else 0
    if total == 0:
        return [0.0] * len(qs)
    out = []
    last = len(FINE_BOUNDS)
    for q in qs:
        if q <= 0.0 or q >= 1.0:
            out.append(low if q <= 0.0 else high)
            continue
        rank = max(1, math.ceil(q * total))
        j = bisect_left(cumulative, rank)
        if j == 0:
            value = FINE_BOUNDS[0]
        elif j >= last:
            value = high
        else:
            value = math.sqrt(FINE_BOUNDS[j - 1] * FINE_BOUNDS[j])
        out.append(min(high, max(low, value)))
    return out
