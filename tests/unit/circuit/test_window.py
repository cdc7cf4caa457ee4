"""Rolling window: bucket rotation under a fake clock, folding, percentiles, cumulative totals."""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience.circuit._window import (
    FAILURE,
    LATENCY_BOUNDS,
    SHORT_CIRCUITED,
    SUCCESS,
    TIMEOUT,
    RollingWindow,
)
from resilience.testing import FakeClock


def test_counts_leave_the_window_bucket_by_bucket() -> None:
    clock = FakeClock(0.0)
    w = RollingWindow(10.0, 10, clock, None)
    w.record_call(FAILURE, 0.01, clock())  # bucket 0
    clock.advance(3.0)
    w.add_success(0.001, clock())  # bucket 3
    w.record_call(TIMEOUT, 1.0, clock())
    assert w.snapshot().counts[:3] == (1, 1, 1)
    clock.advance(7.0)  # t=10: bucket 0 has left the window, bucket 3 has not
    snap = w.snapshot()
    assert (snap.count(SUCCESS), snap.count(FAILURE), snap.count(TIMEOUT)) == (1, 0, 1)
    clock.advance(3.0)  # t=13: everything has left
    assert w.snapshot().calls == 0
    # ... but nothing is lost for the cumulative (Prometheus) totals
    totals = w.totals()
    assert (totals.count(SUCCESS), totals.count(FAILURE), totals.count(TIMEOUT)) == (1, 1, 1)


def test_a_long_idle_gap_clears_every_bucket() -> None:
    clock = FakeClock(0.0)
    w = RollingWindow(10.0, 10, clock, None)
    for _ in range(5):
        w.record(SHORT_CIRCUITED, clock())
    clock.advance(1000.0)
    assert w.snapshot().count(SHORT_CIRCUITED) == 0
    assert w.totals().count(SHORT_CIRCUITED) == 5


def test_folded_successes_match_a_direct_histogram() -> None:
    clock = FakeClock(0.0)
    lat = [0.00005, 0.0001, 0.00015, 0.003, 0.003, 0.07, 0.5, 1.0, 7.0, 100.0]
    folded = RollingWindow(10.0, 10, clock, 0.4)
    direct = RollingWindow(10.0, 10, clock, 0.4)
    for x in lat * 60:  # more than one fold batch
        folded.add_success(x, clock())
        direct.record_call(SUCCESS, x, clock())
    a, b = folded.snapshot(), direct.snapshot()
    assert a.histogram == b.histogram
    assert a.slow == b.slow == 4 * 60
    assert a.latency_sum == pytest.approx(b.latency_sum)
    assert a.count(SUCCESS) == len(lat) * 60
    assert len(a.histogram) == len(LATENCY_BOUNDS) + 1


def test_percentiles_land_in_the_right_bucket() -> None:
    clock = FakeClock(0.0)
    w = RollingWindow(10.0, 10, clock, None)
    for _ in range(90):
        w.add_success(0.003, clock())  # (0.002, 0.005]
    for _ in range(10):
        w.add_success(0.3, clock())  # (0.2, 0.5]
    snap = w.snapshot()
    p50, p99 = snap.percentile(0.5), snap.percentile(0.99)
    assert p50 is not None and 0.002 < p50 <= 0.005
    assert p99 is not None and 0.2 < p99 <= 0.5
    assert RollingWindow(10.0, 10, clock, None).snapshot().percentile(0.5) is None


def test_concurrent_successes_are_all_counted() -> None:
    clock = FakeClock(0.0)
    w = RollingWindow(10.0, 10, clock, None)

    def work() -> None:
        for _ in range(5000):
            w.add_success(0.001, clock())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.snapshot().count(SUCCESS) == 40_000


def test_failure_rate_counts_failures_and_timeouts() -> None:
    clock = FakeClock(0.0)
    w = RollingWindow(10.0, 10, clock, None)
    w.add_success(0.001, clock())
    w.record_call(FAILURE, 0.001, clock())
    w.record_call(TIMEOUT, 1.0, clock())
    w.record_call(SUCCESS, 0.001, clock())
    assert w.snapshot().failure_rate == 0.5


# -- fine percentiles ---------------------------------------------------------------------------


def test_thirty_millisecond_calls_read_thirty_milliseconds() -> None:
    clock = FakeClock(0.0)
    w = RollingWindow(10.0, 10, clock, None)
    for i in range(1000):
        w.add_success(0.030 + (i % 7) * 1e-5, clock())
    p50, p99, p100 = w.percentiles([0.5, 0.99, 1.0])
    assert p50 == pytest.approx(0.030, rel=0.02)
    assert p99 == pytest.approx(0.03006, rel=0.02)
    assert p100 == 0.03006  # the largest sample, exactly


@settings(max_examples=200)
@given(
    st.lists(st.floats(min_value=1e-6, max_value=50.0), min_size=1, max_size=1500),
    st.lists(st.booleans(), min_size=1, max_size=1500),
)
def test_percentiles_are_within_five_percent_of_the_samples(
    latencies: list[float], fast: list[bool]
) -> None:
    clock = FakeClock(0.0)
    w = RollingWindow(10.0, 10, clock, None)
    for i, x in enumerate(latencies):
        if fast[i % len(fast)]:
            w.add_success(x, clock())  # folded in batches
        else:
            w.record_call(FAILURE, x, clock())
        if i % 200 == 199:
            clock.advance(0.7)  # spread over several buckets of the window
    qs = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 1.0]
    ordered = sorted(latencies)
    for q, got in zip(qs, w.percentiles(qs), strict=True):
        rank = max(1, math.ceil(q * len(ordered)))
        assert got == pytest.approx(ordered[rank - 1], rel=0.05), (q, got)


def test_percentiles_cover_the_rolling_window_only() -> None:
    clock = FakeClock(0.0)
    w = RollingWindow(10.0, 10, clock, None)
    for _ in range(100):
        w.add_success(2.0, clock())
    clock.advance(5.0)
    for _ in range(100):
        w.add_success(0.010, clock())
    assert w.percentiles([0.25])[0] == pytest.approx(0.010, rel=0.02)
    clock.advance(6.0)  # the 2 s calls have left the window
    assert w.percentiles([1.0]) == [0.010]
    clock.advance(20.0)
    assert w.percentiles([0.5, 1.0]) == [0.0, 0.0]


def test_the_peak_is_kept_per_bucket() -> None:
    clock = FakeClock(0.0)
    w = RollingWindow(10.0, 10, clock, None)
    seen = [3]
    w.peak_probe = lambda: seen.pop() if seen else 0
    assert w.peak() == 3
    clock.advance(5.0)
    assert w.peak() == 3  # still in the window
    clock.advance(6.0)
    assert w.peak() == 0
