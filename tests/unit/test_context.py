"""Request scope: sync and async entry, isolation between requests, propagation to workers."""

from __future__ import annotations

import asyncio

import pytest

from resilience import current_scope, protect, request_scope


def test_sync_scope_is_visible_inside_and_gone_after() -> None:
    assert current_scope() is None
    with request_scope({"user": 1}) as scope:
        assert current_scope() is scope
        scope.memo["k"] = "v"
    assert current_scope() is None
    assert scope.memo == {}  # nothing is kept after the request


async def test_async_scopes_of_concurrent_requests_do_not_mix() -> None:
    async def request(user: int) -> tuple[int, int]:
        async with request_scope({"user": user}):
            await asyncio.sleep(0.01)
            scope = current_scope()
            assert scope is not None
            return user, scope.attrs["user"]

    results = await asyncio.gather(*(request(u) for u in range(10)))
    assert all(a == b for a, b in results)


def test_scope_follows_a_call_into_the_dependency_pool() -> None:
    @protect("svc")
    def in_worker() -> object:
        return current_scope()

    with request_scope() as scope:
        assert in_worker() is scope


def test_a_scope_cannot_be_entered_twice() -> None:
    scope = request_scope()
    with scope, pytest.raises(RuntimeError):
        scope.__enter__()


def test_the_fit_context_offers_what_the_circuit_reads() -> None:
    from resilience.context import FIT, FaultContext
    from resilience.fit import Recipe, active

    recipe = Recipe.from_dict({"name": "exp-1", "faults": [{"dependency": "a", "error": True}]})
    with active(recipe) as context:
        held: FaultContext | None = FIT.get()
        assert held is context
        assert held.recipe_name == "exp-1" and held.bulkhead_share == 0.1
        assert held.fault_for("a") is not None and held.fault_for("b") is None
    with active(recipe, bulkhead_share=0.5) as context:
        assert context.bulkhead_share == 0.5
