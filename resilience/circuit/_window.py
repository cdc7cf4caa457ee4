"""Rolling window of time buckets: outcome counts, latency histograms, peak concurrency.

One row of numbers per time bucket; recording a call touches only the current row, under a
short lock held for a few increments (never while user code runs). Rows that fall out of the
window are added to ``retired`` totals so cumulative counters (Prometheus) stay exact. Each row
also keeps a fine latency histogram (``_latency``: percentiles within 2%, over the window only),
the smallest and largest latency, and the most calls in flight at once.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence

import attrs

from ._latency import FINE_BOUNDS, FINE_SIZE, LATENCY_BOUNDS, bin_sorted, percentiles

__all__ = [
    "CALL_OUTCOMES",
    "EXCEPTION_THROWN",
    "FAILURE",
    "FALLBACK_FAILURE",
    "FALLBACK_MISSING",
    "FALLBACK_SUCCESS",
    "IGNORED",
    "LATENCY_BOUNDS",
    "OUTCOMES",
    "RATE_LIMITED",
    "REJECTED",
    "RETRIED",
    "RETRY_BUDGET_EXHAUSTED",
    "SHORT_CIRCUITED",
    "SUCCESS",
    "TIMEOUT",
    "RollingWindow",
    "WindowSnapshot",
]

# What the window counts, per bucket: the outcome of every attempt (the breaker reads these),
# then events around calls (fallbacks, exceptions handed to callers, retries).
(
    SUCCESS,
    FAILURE,
    TIMEOUT,
    SHORT_CIRCUITED,
    REJECTED,
    FALLBACK_SUCCESS,
    FALLBACK_FAILURE,
    IGNORED,
    RATE_LIMITED,
    EXCEPTION_THROWN,
    FALLBACK_MISSING,
    RETRIED,
    RETRY_BUDGET_EXHAUSTED,
) = range(13)
OUTCOMES = (
    "success",
    "failure",
    "timeout",
    "short_circuited",
    "rejected",
    "fallback_success",
    "fallback_failure",
    "ignored",
    "rate_limited",
    "exception_thrown",
    "fallback_missing",
    "retried",
    "retry_budget_exhausted",
)
# The main outcomes of a caller's call (``resilience_calls_total``), indexes into OUTCOMES.
CALL_OUTCOMES = (SUCCESS, FAILURE, TIMEOUT, SHORT_CIRCUITED, REJECTED, RATE_LIMITED, IGNORED)
_N_OUT = len(OUTCOMES)
_H0 = _N_OUT  # first histogram slot; one more than bounds for +Inf
_SLOW = _H0 + len(LATENCY_BOUNDS) + 1
_SUM = _SLOW + 1
_TOTALS = _SUM + 1  # slots up to here add up into the cumulative totals; the rest do not
_MIN, _MAX, _PEAK = _TOTALS, _TOTALS + 1, _TOTALS + 2
_ROW = _PEAK + 1
_INF = float("inf")
_FINE_ZEROS = [0] * FINE_SIZE


def _new_row() -> list[float]:
    row: list[float] = [0] * _ROW
    row[_SUM] = 0.0
    row[_MIN] = _INF
    row[_MAX] = 0.0
    return row


_FOLD_AT = 512  # pending successes folded at once: bounds memory and the cost of one fold


@attrs.frozen
class WindowSnapshot:
    """Counts over a span of time: per outcome, the latency histogram, slow calls, latency sum."""

    counts: tuple[int, ...]
    histogram: tuple[int, ...]  # per bucket, not cumulative; last is +Inf
    slow: int
    latency_sum: float

    def count(self, outcome: int) -> int:
        return self.counts[outcome]

    @property
    def calls(self) -> int:
        """Calls that ran and finished with a verdict: success + failure + timeout."""
        c = self.counts
        return c[SUCCESS] + c[FAILURE] + c[TIMEOUT]

    @property
    def failure_rate(self) -> float:
        calls = self.calls
        return 0.0 if calls == 0 else (self.counts[FAILURE] + self.counts[TIMEOUT]) / calls

    @property
    def slow_rate(self) -> float:
        calls = self.calls
        return 0.0 if calls == 0 else self.slow / calls

    def percentile(self, q: float) -> float | None:
        """Latency at quantile ``q`` (0..1), linearly interpolated inside its bucket."""
        total = sum(self.histogram)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for i, n in enumerate(self.histogram):
            if n and seen + n >= rank:
                lo = 0.0 if i == 0 else LATENCY_BOUNDS[i - 1]
                hi = LATENCY_BOUNDS[i] if i < len(LATENCY_BOUNDS) else LATENCY_BOUNDS[-1]
                return lo + (hi - lo) * max(0.0, rank - seen) / n
            seen += n
        return LATENCY_BOUNDS[-1]


class RollingWindow:
    """Time-bucketed counters over the last ``window`` seconds, read through ``clock``."""

    def __init__(
        self, window: float, buckets: int, clock: Callable[[], float], slow_call: float | None
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._n = buckets
        self._width = window / buckets
        self._rows: list[list[float]] = [_new_row() for _ in range(buckets)]
        self._fine: list[list[int]] = [list(_FINE_ZEROS) for _ in range(buckets)]
        self._retired: list[float] = [0] * _TOTALS
        self._retired[_SUM] = 0.0
        # Most calls in flight since it was last asked (the dependency's permits and pool);
        # asked when a bucket closes and when the peak is read.
        self.peak_probe: Callable[[], int] | None = None
        # Told of each bucket as it closes: (caller calls in it, when). Retry budgets count
        # their deposits this way, at no cost to a call (see Dependency.retry_budget).
        self.on_close: Callable[[int, float], None] | None = None
        # Attempts followed by a retry, per outcome: cumulative only (see ``superseded``).
        self._superseded = [0] * _N_OUT
        # Successes are appended here without a lock (list.append is atomic) and folded into
        # their row's counts and histogram in batches: the success path never takes the lock.
        self._pending: list[list[float]] = [[] for _ in range(buckets)]
        self._epoch = int(clock() / self._width)
        self._row = self._rows[self._epoch % buckets]
        self._ok = self._pending[self._epoch % buckets]
        self._edge = (self._epoch + 1) * self._width
        # None disables the slow-call count; a float compare per call is all it costs.
        self.slow_call = slow_call if slow_call is not None else float("inf")

    def resize(self, window: float, buckets: int, slow_call: float | None) -> None:
        """Apply a new window shape; counts kept so far move to the cumulative totals."""
        with self._lock:
            self._close()
            for i in range(len(self._rows)):
                self._fold(i)
                self._retire(i)
            self._n = buckets
            self._width = window / buckets
            self._rows = [_new_row() for _ in range(buckets)]
            self._fine = [list(_FINE_ZEROS) for _ in range(buckets)]
            self._pending = [[] for _ in range(buckets)]
            self._epoch = int(self._clock() / self._width)
            self._row = self._rows[self._epoch % buckets]
            self._ok = self._pending[self._epoch % buckets]
            self._edge = (self._epoch + 1) * self._width
            self.slow_call = slow_call if slow_call is not None else float("inf")

    def _retire(self, i: int) -> None:
        # Called with the lock held: row i's counts join the cumulative totals; it starts over.
        row = self._rows[i]
        retired = self._retired
        for slot in range(_TOTALS):
            retired[slot] += row[slot]
        row[:] = _new_row()
        self._fine[i][:] = _FINE_ZEROS

    def _fold(self, i: int) -> None:
        # Called with the lock held: move row i's pending success latencies into its counts.
        pending = self._pending[i]
        k = len(pending)
        if not k:
            return
        batch = pending[:k]
        del pending[:k]  # appends racing with us land after index k and are kept
        batch.sort()
        row = self._rows[i]
        row[SUCCESS] += k
        row[_SUM] += sum(batch)
        row[_SLOW] += k - bisect_left(batch, self.slow_call)
        if batch[0] < row[_MIN]:
            row[_MIN] = batch[0]
        if batch[-1] > row[_MAX]:
            row[_MAX] = batch[-1]
        bin_sorted(batch, self._fine[i])
        below = 0
        for j, bound in enumerate(LATENCY_BOUNDS):
            upto = bisect_right(batch, bound, below)
            row[_H0 + j] += upto - below
            below = upto
            if below == k:
                return
        row[_SLOW - 1] += k - below

    def _calls_in(self, i: int) -> int:
        # Called with the lock held: caller calls recorded in row i (attempts, less retries).
        row = self._rows[i]
        attempts = sum(row[outcome] for outcome in CALL_OUTCOMES) + len(self._pending[i])
        return int(attempts - row[RETRIED])

    def _close(self) -> None:
        # Called with the lock held: the current bucket closes (time moved on, or a reset).
        on_close = self.on_close
        if on_close is not None:
            calls = self._calls_in(self._epoch % self._n)
            if calls > 0:
                on_close(calls, min(self._edge, self._clock()))

    def open_calls(self, now: float) -> int:
        """Caller calls recorded in the bucket still open at ``now`` (closed ones were told to
        ``on_close``)."""
        with self._lock:
            self._advance(int(now / self._width))
            return self._calls_in(self._epoch % self._n)

    def _advance(self, epoch: int) -> None:
        # Called with the lock held. Clears every bucket the clock moved past.
        if epoch <= self._epoch:  # a clock that went backwards keeps the current bucket
            return
        self._close()
        if self.peak_probe is not None:  # the closing bucket gets the peak seen during it
            row = self._row
            row[_PEAK] = max(row[_PEAK], self.peak_probe())
        steps = min(epoch - self._epoch, self._n)
        for k in range(1, steps + 1):
            i = (self._epoch + k) % self._n
            self._fold(i)
            self._retire(i)
        self._epoch = epoch
        self._row = self._rows[epoch % self._n]
        self._ok = self._pending[epoch % self._n]
        self._edge = (epoch + 1) * self._width

    def add_success(self, latency: float, now: float) -> None:
        """Record a fast success (latency below the slow-call threshold): lock-free."""
        if now >= self._edge:
            with self._lock:
                self._advance(int(now / self._width))
        ok = self._ok
        ok.append(latency)
        if len(ok) >= _FOLD_AT:
            with self._lock:
                self._fold(self._epoch % self._n)

    def record_call(self, outcome: int, latency: float, now: float) -> None:
        """Record a call that ran (success, failure or timeout) and took ``latency`` seconds."""
        epoch = int(now / self._width)
        with self._lock:
            if epoch != self._epoch:
                self._advance(epoch)
            row = self._row
            row[outcome] += 1
            row[_H0 + bisect_left(LATENCY_BOUNDS, latency)] += 1
            row[_SUM] += latency
            if latency >= self.slow_call:
                row[_SLOW] += 1
            if latency < row[_MIN]:
                row[_MIN] = latency
            if latency > row[_MAX]:
                row[_MAX] = latency
            self._fine[self._epoch % self._n][bisect_left(FINE_BOUNDS, latency)] += 1

    def record(self, outcome: int, now: float) -> None:
        """Record an outcome without a latency (rejections, fallbacks, ignored)."""
        epoch = int(now / self._width)
        with self._lock:
            if epoch != self._epoch:
                self._advance(epoch)
            self._row[outcome] += 1

    def supersede(self, outcome: int) -> None:
        """An attempt recorded as ``outcome`` is being retried: the caller's call will end with
        another attempt's outcome. The rolling counts keep it (the breaker judges attempts)."""
        with self._lock:
            self._superseded[outcome] += 1

    def superseded(self) -> tuple[int, ...]:
        """Cumulative attempts per outcome that were followed by a retry."""
        with self._lock:
            return tuple(self._superseded)

    def reset(self) -> None:
        """Start a fresh window (the breaker closed); counts move to the cumulative totals."""
        with self._lock:
            self._close()
            for i in range(len(self._rows)):
                self._fold(i)
                self._retire(i)

    def _sum(self, include_retired: bool) -> WindowSnapshot:
        for i in range(self._n):
            self._fold(i)
        total: list[float] = list(self._retired) if include_retired else [0] * _TOTALS
        for row in self._rows:
            for i in range(_TOTALS):
                total[i] += row[i]
        return WindowSnapshot(
            counts=tuple(int(x) for x in total[:_N_OUT]),
            histogram=tuple(int(x) for x in total[_H0:_SLOW]),
            slow=int(total[_SLOW]),
            latency_sum=float(total[_SUM]),
        )

    def snapshot(self, now: float | None = None) -> WindowSnapshot:
        """Counts over the rolling window as of ``now``."""
        now = self._clock() if now is None else now
        with self._lock:
            self._advance(int(now / self._width))
            return self._sum(include_retired=False)

    def percentiles(self, qs: Sequence[float], now: float | None = None) -> list[float]:
        """Latency in seconds at each quantile of ``qs`` (0..1) over the rolling window, within
        2% of the sample at that rank; quantiles 0 and 1 are the exact smallest and largest.
        Calls that ran count (successes, failures, timeouts); all 0.0 when none did."""
        now = self._clock() if now is None else now
        with self._lock:
            self._advance(int(now / self._width))
            for i in range(self._n):
                self._fold(i)
            fine = list(map(sum, zip(*self._fine, strict=True)))
            low = min(row[_MIN] for row in self._rows)
            high = max(row[_MAX] for row in self._rows)
        return percentiles(fine, qs, low, high)

    def peak(self, now: float | None = None) -> int:
        """The most calls in flight at once during the rolling window (needs ``peak_probe``)."""
        now = self._clock() if now is None else now
        with self._lock:
            self._advance(int(now / self._width))
            row = self._row
            if self.peak_probe is not None:
                row[_PEAK] = max(row[_PEAK], self.peak_probe())
            return int(max(r[_PEAK] for r in self._rows))

    def rates(self, now: float) -> tuple[int, float, float]:
        """What the breaker judges, over the rolling window: calls that ran, the failure ratio
        and the slow-call ratio. Cheap: nothing is folded (pending successes are fast ones)."""
        with self._lock:
            self._advance(int(now / self._width))
            ok = failed = slow = 0.0
            for row, pending in zip(self._rows, self._pending, strict=True):
                ok += row[SUCCESS] + len(pending)
                failed += row[FAILURE] + row[TIMEOUT]
                slow += row[_SLOW]
        calls = int(ok + failed)
        if not calls:
            return 0, 0.0, 0.0
        return calls, failed / calls, slow / calls

    def successes(self) -> int:
        """Cumulative successes (cheaper than ``totals()``: nothing is folded)."""
        with self._lock:
            rows = sum(row[SUCCESS] for row in self._rows)
            pending = sum(len(p) for p in self._pending)
            return int(self._retired[SUCCESS] + rows + pending)

    def totals(self) -> WindowSnapshot:
        """Cumulative counts since the window was created (for Prometheus counters)."""
        with self._lock:
            return self._sum(include_retired=True)
