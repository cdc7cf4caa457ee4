"""Request collapsing: batches from threads and from coroutines, per-caller outcomes, the
protected batch call (breaker, fallback) and request scope."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from resilience.circuit import Policy, Registry
from resilience.circuit._collapse import AsyncCollapsed, Collapse, Collapsed, collapse
from resilience.context import request_scope
from resilience.errors import CircuitOpenError, ConfigError, FallbackFailedError

LONG = 30.0  # a window no test waits out: batches close by filling up


@pytest.fixture
def reg() -> Registry:
    return Registry()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"key": ""}, "key"),
        ({"key": "users", "window": -1}, "window"),
        ({"key": "users", "max_batch": 0}, "max_batch"),
        ({"key": "users", "scope": "thread"}, "scope"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Collapse(**kwargs)
    assert info.value.field == field
    with pytest.raises(ConfigError) as info:
        collapse(**kwargs)
    assert info.value.field == field


def test_a_sync_batch_function_cannot_have_a_coroutine_fallback(reg: Registry) -> None:
    async def fb(key: int) -> str:
        return "x"

    with pytest.raises(ConfigError) as info:

        @collapse("users", fallback=fb, registry=reg)
        def load(ids: list[int]) -> Mapping[int, str]:
            return {}

    assert info.value.field == "fallback"


# -- threads ---------------------------------------------------------------------------------


class Loader:
    """A sync batch function that records its batches."""

    def __init__(self, fail: Exception | None = None, result: Any = None) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail
        self.result = result
        self.lock = threading.Lock()

    def __call__(self, ids: list[int]) -> Any:
        with self.lock:
            self.batches.append(list(ids))
        if self.fail is not None:
            raise self.fail
        if self.result is not None:
            return self.result
        return {i: f"user{i}" for i in ids if i >= 0}


def in_threads(fn: Callable[[int], Any], keys: list[int]) -> list[Any]:
    out: list[Any] = [None] * len(keys)

    def run(i: int) -> None:
        try:
            out[i] = fn(keys[i])
        except Exception as exc:
            out[i] = exc

    threads = []
    for i in range(len(keys)):
        t = threading.Thread(target=run, args=(i,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(10)
    return out


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


def pending_keys(collapsed: Collapsed[int, str]) -> int:
    batch = collapsed._global.pending
    return 0 if batch is None else len(batch.keys)


def test_threads_share_one_batch_and_each_gets_its_value(reg: Registry) -> None:
    loader = Loader()
    load = collapse("users", window=LONG, max_batch=8, registry=reg)(loader)
    assert isinstance(load, Collapsed)
    results = in_threads(load.one, list(range(8)))
    assert results == [f"user{i}" for i in range(8)]
    assert len(loader.batches) == 1 and sorted(loader.batches[0]) == list(range(8))
    # the dependency saw one call
    assert reg.dependency("users").window.totals().calls == 1


def test_a_key_asked_twice_is_fetched_once(reg: Registry) -> None:
    loader = Loader()
    load = collapse("users", window=0.5, registry=reg)(loader)
    results = in_threads(load.one, [7, 7, 8])
    assert results == ["user7", "user7", "user8"]
    assert len(loader.batches) == 1 and sorted(loader.batches[0]) == [7, 8]


def test_the_window_closes_a_batch_that_does_not_fill(reg: Registry) -> None:
    loader = Loader()
    load = collapse("users", window=0.005, max_batch=100, registry=reg)(loader)
    assert load.one(3) == "user3"
    assert load.one(4) == "user4"
    assert loader.batches == [[3], [4]]


def test_a_missing_key_fails_only_its_caller(reg: Registry) -> None:
    load = collapse("users", window=LONG, max_batch=3, registry=reg)(Loader())
    results = in_threads(load.one, [1, -5, 2])
    assert results[0] == "user1" and results[2] == "user2"
    assert isinstance(results[1], KeyError) and results[1].args == (-5,)


def test_a_batch_error_reaches_every_caller_of_the_batch(reg: Registry) -> None:
    boom = ConnectionError("down")
    load = collapse("users", window=LONG, max_batch=3, registry=reg)(Loader(fail=boom))
    assert in_threads(load.one, [1, 2, 3]) == [boom, boom, boom]
    bad = collapse("other", window=0, registry=reg)(Loader(result=["not", "a", "mapping"]))
    with pytest.raises(TypeError, match="must return a mapping"):
        bad.one(1)


def test_the_batch_goes_through_the_breaker(reg: Registry) -> None:
    loader = Loader()
    load = collapse("users", window=0, registry=reg)(loader)
    reg.dependency("users").force_open()
    with pytest.raises(CircuitOpenError):
        load.one(1)
    assert loader.batches == []


def test_fallback_is_per_caller(reg: Registry) -> None:
    boom = ConnectionError("down")

    def fallback(key: int) -> str:
        if key == 2:
            raise LookupError("no default for 2")
        return f"default{key}"

    load = collapse("users", window=LONG, max_batch=3, fallback=fallback, registry=reg)(
        Loader(fail=boom)
    )
    results = in_threads(load.one, [1, 2, 3])
    assert results[0] == "default1" and results[2] == "default3"
    failed = results[1]
    assert isinstance(failed, FallbackFailedError)
    assert failed.error is boom and isinstance(failed.fallback_error, LookupError)

    static = collapse("static", window=0, fallback="?", registry=reg)(Loader(fail=boom))
    assert static.one(1) == "?"


def test_calling_the_batch_function_directly_is_protected_not_collapsed(reg: Registry) -> None:
    loader = Loader()
    load = collapse("users", registry=reg)(loader)
    assert load([1, 2]) == {1: "user1", 2: "user2"}
    assert reg.dependency("users").window.totals().calls == 1
    assert load.__wrapped__ is loader and "users" in repr(load)


def test_request_scope_collapses_per_request(reg: Registry) -> None:
    loader = Loader()
    load = collapse("users", window=LONG, max_batch=2, scope="request", registry=reg)(loader)
    out: dict[str, list[Any]] = {}

    def request(name: str, keys: list[int]) -> None:
        with request_scope():
            out[name] = in_threads(_in_context(load.one), keys)

    a = threading.Thread(target=request, args=("a", [1, 2]))
    b = threading.Thread(target=request, args=("b", [3, 4]))
    a.start()
    b.start()
    a.join(10)
    b.join(10)
    assert out == {"a": ["user1", "user2"], "b": ["user3", "user4"]}
    assert sorted(sorted(batch) for batch in loader.batches) == [[1, 2], [3, 4]]
    # outside any request scope: no collapsing, no waiting for the window
    started = time.monotonic()
    assert load.one(5) == "user5"
    assert time.monotonic() - started < LONG / 2
    assert loader.batches[-1] == [5]


def _in_context(fn: Callable[[int], Any]) -> Callable[[int], Any]:
    """Run ``fn`` in new threads within the caller's context (its request scope)."""
    import contextvars

    ctx = contextvars.copy_context()

    def run(key: int) -> Any:
        return ctx.copy().run(fn, key)

    return run


def test_an_interrupted_leader_does_not_strand_its_followers(reg: Registry) -> None:
    def load_batch(ids: list[int]) -> Mapping[int, str]:
        raise KeyboardInterrupt

    reg.dependency("kb", isolation="semaphore")  # the batch runs on the leader's thread
    load = collapse("kb", window=LONG, max_batch=2, registry=reg)(load_batch)
    out: dict[str, BaseException] = {}

    def call(name: str, key: int) -> None:
        try:
            load.one(key)
        except BaseException as exc:
            out[name] = exc

    leader = threading.Thread(target=call, args=("leader", 1))
    leader.start()
    wait_for(lambda: pending_keys(load) == 1)
    follower = threading.Thread(target=call, args=("follower", 2))
    follower.start()
    leader.join(10)
    follower.join(10)
    assert isinstance(out["leader"], KeyboardInterrupt)
    assert isinstance(out["follower"], RuntimeError)  # told, as an Exception, not left waiting
    assert isinstance(out["follower"].__cause__, KeyboardInterrupt)


# -- asyncio ---------------------------------------------------------------------------------


class AsyncLoader:
    def __init__(self, fail: Exception | None = None, gate: asyncio.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail
        self.gate = gate

    async def __call__(self, ids: list[int]) -> Mapping[int, str]:
        self.batches.append(list(ids))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return {i: f"user{i}" for i in ids if i >= 0}


def async_collapse(reg: Registry, loader: AsyncLoader, **kwargs: Any) -> AsyncCollapsed[int, str]:
    async def load(ids: list[int]) -> Mapping[int, str]:
        return await loader(ids)

    collapsed = collapse("users", registry=reg, **kwargs)(load)
    assert isinstance(collapsed, AsyncCollapsed)
    return collapsed


async def test_coroutines_share_one_batch(reg: Registry) -> None:
    loader = AsyncLoader()
    load = async_collapse(reg, loader, window=LONG, max_batch=10)
    results = await asyncio.gather(*(load.one(i) for i in range(10)))
    assert results == [f"user{i}" for i in range(10)]
    assert loader.batches == [list(range(10))]
    assert reg.dependency("users").window.totals().calls == 1


async def test_max_batch_splits_and_the_window_closes_the_rest(reg: Registry) -> None:
    loader = AsyncLoader()
    load = async_collapse(reg, loader, window=0.001, max_batch=4)
    results = await asyncio.gather(*(load.one(i) for i in [1, 2, 2, 3, 4, 5, 6]))
    assert results == ["user1", "user2", "user2", "user3", "user4", "user5", "user6"]
    assert loader.batches == [[1, 2, 3, 4], [5, 6]]


async def test_window_zero_batches_one_loop_turn(reg: Registry) -> None:
    loader = AsyncLoader()
    load = async_collapse(reg, loader, window=0)
    assert await asyncio.gather(load.one(1), load.one(2)) == ["user1", "user2"]
    assert await load.one(3) == "user3"
    assert loader.batches == [[1, 2], [3]]


async def test_async_outcomes_per_caller(reg: Registry) -> None:
    load = async_collapse(reg, AsyncLoader(), window=LONG, max_batch=2)
    ok, missing = await asyncio.gather(load.one(1), load.one(-1), return_exceptions=True)
    assert ok == "user1" and isinstance(missing, KeyError)

    boom = ConnectionError("down")
    failing = collapse("failing", window=LONG, max_batch=2, registry=reg)(
        AsyncLoader(fail=boom).__call__
    )
    assert await asyncio.gather(failing.one(1), failing.one(2), return_exceptions=True) == [
        boom,
        boom,
    ]


async def test_async_fallback_per_key_may_be_a_coroutine(reg: Registry) -> None:
    async def fallback(key: int) -> str:
        if key == 2:
            raise LookupError(key)
        return f"default{key}"

    loader = AsyncLoader(fail=ConnectionError("down"))
    load = async_collapse(reg, loader, window=LONG, max_batch=2, fallback=fallback)
    one, two = await asyncio.gather(load.one(1), load.one(2), return_exceptions=True)
    assert one == "default1"
    assert isinstance(two, FallbackFailedError) and isinstance(two.error, ConnectionError)


async def test_a_cancelled_caller_leaves_the_batch_to_the_others(reg: Registry) -> None:
    gate = asyncio.Event()
    loader = AsyncLoader(gate=gate)
    load = async_collapse(reg, loader, window=LONG, max_batch=2)
    first = asyncio.create_task(load.one(1))
    second = asyncio.create_task(load.one(2))
    await asyncio.sleep(0.001)
    assert loader.batches == [[1, 2]]
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    assert await second == "user2"


async def test_async_request_scope(reg: Registry) -> None:
    loader = AsyncLoader()
    load = async_collapse(reg, loader, window=LONG, max_batch=2, scope="request")

    async def request(keys: list[int]) -> list[str]:
        async with request_scope():
            return list(await asyncio.gather(*(load.one(k) for k in keys)))

    assert await asyncio.gather(request([1, 2]), request([3, 4])) == [
        ["user1", "user2"],
        ["user3", "user4"],
    ]
    assert sorted(loader.batches) == [[1, 2], [3, 4]]
    assert await load.one(5) == "user5"  # outside a scope: a batch of one, at once
    assert loader.batches[-1] == [5]


async def test_async_direct_call_and_policy(reg: Registry) -> None:
    reg.dependency("users", Policy(timeout=0.5))
    loader = AsyncLoader()
    load = async_collapse(reg, loader)
    assert await load([1]) == {1: "user1"}
    assert load.dependency.policy.timeout == 0.5
