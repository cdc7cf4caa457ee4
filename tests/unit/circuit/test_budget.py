"""Retry budget: Finagle's ratio + reserve over a sliding ttl, shared by every caller."""

from __future__ import annotations

import threading

import pytest

from resilience.circuit._budget import Ledger, RetryAccount, RetryBudget
from resilience.errors import ConfigError


def test_defaults_are_finagles() -> None:
    budget = RetryBudget()
    assert (budget.ratio, budget.min_per_second, budget.ttl) == (0.2, 10.0, 10.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": 1001}, "ratio"),
        ({"ratio": "0.2"}, "ratio"),
        ({"min_per_second": -1}, "min_per_second"),
        ({"min_per_second": float("nan")}, "min_per_second"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": 1e9}, "ttl"),
        ({"ttl": None}, "ttl"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        RetryBudget(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def drain(account: RetryAccount, now: float) -> int:
    n = 0
    while account.try_withdraw(now):
        n += 1
    return n


def test_the_reserve_allows_min_per_second_times_ttl_retries() -> None:
    account = RetryAccount(RetryBudget())
    assert account.balance(0.0) == 100
    assert drain(account, 0.0) == 100
    assert account.balance(0.0) == 0


def test_five_calls_earn_one_retry_at_the_default_ratio() -> None:
    account = RetryAccount(RetryBudget(min_per_second=0))
    for _ in range(4):
        account.deposit(0.0)
    assert not account.try_withdraw(0.0)
    account.deposit(0.0)
    assert account.try_withdraw(0.0)
    assert not account.try_withdraw(0.0)
    for _ in range(50):
        account.deposit(0.1)
    assert drain(account, 0.2) == 10


def test_ratio_zero_leaves_the_reserve_only() -> None:
    account = RetryAccount(RetryBudget(ratio=0, min_per_second=1, ttl=5))
    for _ in range(1000):
        account.deposit(0.0)
    assert drain(account, 0.0) == 5


def test_deposits_and_withdrawals_expire_after_ttl() -> None:
    account = RetryAccount(RetryBudget(min_per_second=0, ttl=10))
    for _ in range(10):
        account.deposit(0.0)
    assert account.balance(9.0) == 2
    assert account.balance(10.5) == 0  # deposits from t=0 are gone

    reserve_only = RetryAccount(RetryBudget(ratio=0, min_per_second=1, ttl=10))
    assert drain(reserve_only, 0.0) == 10
    assert reserve_only.balance(5.0) == 0
    assert reserve_only.balance(10.5) == 10  # the withdrawals expired as well


def test_outage_retries_stay_near_the_ratio() -> None:
    """1,000 calls/s for 10 s, every attempt failing, Retry(attempts=3): <= 1.25 per call."""
    account = RetryAccount(RetryBudget())
    calls = attempts = 0
    for i in range(10_000):
        now = i / 1000
        account.deposit(now)
        calls += 1
        attempts += 1
        for _ in range(2):  # two retries allowed by attempts=3
            if not account.try_withdraw(now):
                break
            attempts += 1
    assert attempts / calls <= 1.25
    assert attempts / calls > 1.15  # the budget does allow its 20% + reserve


def test_a_slightly_older_now_is_booked_in_the_current_slice() -> None:
    ledger = Ledger(ttl=10.0, reserve=0)
    ledger.put(5.0, 3)
    ledger.put(4.95, 2)  # another thread read the clock a moment earlier
    assert ledger.balance(5.0) == 5
    assert ledger.balance(14.95) == 5
    assert ledger.balance(16.0) == 0


def test_a_long_quiet_spell_expires_everything() -> None:
    ledger = Ledger(ttl=1.0, reserve=1)
    for t in range(10):
        ledger.put(t * 0.1, 1)
    assert ledger.balance(0.95) == 11
    assert ledger.balance(1e6) == 1


def test_threads_never_withdraw_more_than_the_balance() -> None:
    account = RetryAccount(RetryBudget(ratio=0.5, min_per_second=0, ttl=60))
    for _ in range(2000):
        account.deposit(1.0)
    got = [0] * 8
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        start.wait()
        for _ in range(500):
            if account.try_withdraw(1.0):
                got[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(got) == 1000
