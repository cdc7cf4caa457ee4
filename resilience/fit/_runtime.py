"""FIT in a process: off until ``enable``; tags verified against its keys; recipes activated.

Nothing here runs on a protected call. Injection points read the ``FIT`` contextvar, which is
set only for a request that arrived with a valid tag (or inside ``active``), so a process with
FIT enabled pays nothing on requests without a tag.
"""

from __future__ import annotations

import contextlib
import contextvars
import random as _random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

import attrs

from ..circuit import registry
from ..context import FIT
from ..errors import ConfigError
from ._faults import DEFAULT_BULKHEAD_SHARE, ActiveRecipe, stats
from ._hosts import PRIVATE_NETWORKS, HostPolicy
from ._recipe import Recipe
from ._tags import (
    ACCEPTED,
    DEFAULT_KEY_ID,
    DEFAULT_MAX_TTL,
    DISABLED,
    MALFORMED,
    OVER_LIMIT,
    Verdict,
    check_key_id,
    secret_bytes,
    verify_tag,
)

__all__ = [
    "DEFAULT_MAX_ACTIVE",
    "FitConfig",
    "activate",
    "active",
    "active_requests",
    "admit",
    "config",
    "current_tag",
    "disable",
    "enable",
    "enabled",
    "release",
    "tag_counts",
]

DEFAULT_MAX_ACTIVE = 100


@attrs.frozen(kw_only=True)
class FitConfig:
    """What ``enable`` set up: the keys tags may be signed with and the recipes known by id."""

    keys: Mapping[str, bytes]
    key_id: str
    recipes: Mapping[str, Recipe]
    max_ttl: float
    max_active: int
    bulkhead_share: float
    propagate_to: HostPolicy
    clock: Callable[[], float]
    random: Callable[[], float]


class _Slots:
    """Tagged requests under a recipe right now, in this process (the ``max_active`` cap)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0

    def take(self, limit: int) -> bool:
        with self._lock:
            if self.active >= limit:
                return False
            self.active += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.active -= 1


_config: FitConfig | None = None
_slots = _Slots()
# Tags that verified, by (config, exact tag text): a run reuses its tag for many requests and
# every hop verifies it, and parsing the recipe dominates verification (~150 us). Only tags
# whose signature matched are kept; expiry is still checked on every use; bounded.
_verified: dict[tuple[int, str], Verdict] = {}
_VERIFIED_SIZE = 256
_verified_lock = threading.Lock()


def _remember(config_id: int, tag: str, verdict: Verdict) -> None:
    with _verified_lock:
        if len(_verified) >= _VERIFIED_SIZE:
            _verified.clear()
        _verified[(config_id, tag)] = verdict


# The verified tag of the running request, copied onto outgoing requests by the client glue.
_TAG: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "resilience_fit_tag", default=None
)


def enable(
    *,
    secret: str | bytes,
    key_id: str = DEFAULT_KEY_ID,
    previous_keys: Mapping[str, str | bytes] | None = None,
    recipes: Iterable[Recipe] = (),
    max_ttl: float = DEFAULT_MAX_TTL,
    max_active: int = DEFAULT_MAX_ACTIVE,
    bulkhead_share: float = DEFAULT_BULKHEAD_SHARE,
    propagate_to: Iterable[str] = PRIVATE_NETWORKS,
    clock: Callable[[], float] = time.time,
    random: Callable[[], float] = _random.random,
) -> FitConfig:
    """Accept tags signed with ``secret`` (as ``key_id``) from now on.

    Args:
        max_active: at most this many tagged requests run under a recipe at once in this
            process; the tag of a request past the cap is ignored (the request runs untagged)
            and counted ``over_limit``.
        bulkhead_share: the share of a dependency's bulkhead (threads or permits) that tagged
            calls may hold at once, at least one; read by the circuit's injection point.
        propagate_to: hosts the client integrations forward the tag to: addresses, networks
            (``"10.0.0.0/8"``), host names, ``"*.suffix"`` patterns, or ``"*"``. Default:
            loopback, the private ranges and ``localhost`` (``fit.PRIVATE_NETWORKS``).
        previous_keys: more key ids and secrets still accepted, so secrets can rotate: deploy
            the new key everywhere as an extra key, then switch signers to it, then drop the old.
        recipes: recipes a tag may name by id (their ``name``) instead of carrying them.
        max_ttl: tags that claim to live longer than this many seconds are refused.
        clock: wall-clock seconds, to check expiry (tests pass a fake).
        random: floats in [0, 1) for fault probabilities and jitter (tests pass a fixed one).
    """
    global _config
    keys = {check_key_id(key_id): secret_bytes(secret)}
    for kid, value in (previous_keys or {}).items():
        keys.setdefault(check_key_id(kid, "previous_keys"), secret_bytes(value, "previous_keys"))
    if isinstance(max_ttl, bool) or not isinstance(max_ttl, (int, float)) or max_ttl <= 0:
        raise ConfigError("max_ttl", f"must be a number of seconds > 0, got {max_ttl!r}")
    if isinstance(max_active, bool) or not isinstance(max_active, int) or max_active < 1:
        raise ConfigError("max_active", f"must be an integer >= 1, got {max_active!r}")
    if (
        isinstance(bulkhead_share, bool)
        or not isinstance(bulkhead_share, (int, float))
        or not 0 < bulkhead_share <= 1
    ):
        raise ConfigError("bulkhead_share", f"must be a fraction in (0, 1], got {bulkhead_share!r}")
    policy = HostPolicy(propagate_to)
    known: dict[str, Recipe] = {}
    for recipe in recipes:
        if not isinstance(recipe, Recipe):
            raise ConfigError("recipes", f"must be Recipe objects, got {recipe!r}")
        known[recipe.name] = recipe
    with _verified_lock:  # another key set: nothing verified under the old one stands
        _verified.clear()
    _config = FitConfig(
        keys=keys,
        key_id=key_id,
        recipes=known,
        max_ttl=float(max_ttl),
        max_active=max_active,
        bulkhead_share=float(bulkhead_share),
        propagate_to=policy,
        clock=clock,
        random=random,
    )
    registry().add_metrics_source(stats)
    return _config


def disable() -> None:
    """Ignore every tag from now on (requests already under a recipe finish under it)."""
    global _config
    _config = None
    with _verified_lock:
        _verified.clear()


def enabled() -> bool:
    return _config is not None


def config() -> FitConfig | None:
    """What ``enable`` set up, or None while FIT is off."""
    return _config


def tag_counts() -> dict[str, int]:
    """Tags seen by verification result (``accepted``, ``bad_signature``, ``disabled``...)."""
    with stats._lock:
        return dict(stats.tags)


def _verify(tag: str | None) -> tuple[ActiveRecipe | None, FitConfig | None]:
    """Verify a tag; returns the context (not yet counted as accepted) and the config."""
    if tag is None:
        return None, None
    config = _config
    if config is None:
        stats.tag(DISABLED)
        return None, None
    now = config.clock()
    verdict = _verified.get((id(config), tag))
    if verdict is not None and verdict.expires is not None and verdict.expires <= now:
        verdict = None  # expired since: verify again, which says so
    if verdict is None:
        try:
            verdict = verify_tag(
                tag, keys=config.keys, now=now, max_ttl=config.max_ttl, recipes=config.recipes
            )
        except Exception:  # verify_tag is written not to raise; a forged tag must never pass
            stats.tag(MALFORMED)
            return None, None
        if verdict.result == ACCEPTED:
            _remember(id(config), tag, verdict)
    if verdict.result != ACCEPTED or verdict.recipe is None:
        stats.tag(verdict.result)
        return None, None
    context = ActiveRecipe(
        verdict.recipe, random=config.random, tag=tag, bulkhead_share=config.bulkhead_share
    )
    return context, config


def activate(tag: str | None) -> ActiveRecipe | None:
    """Verify a tag and return the context it names, or None; never raises, takes no slot.

    Every tag that is present is counted by result; an absent tag counts nothing. Server
    integrations use :func:`admit`, which also enforces ``max_active``.
    """
    context, _ = _verify(tag)
    if context is not None:
        stats.tag(ACCEPTED)
    return context


def admit(tag: str | None) -> ActiveRecipe | None:
    """Verify a request's tag and take one of the ``max_active`` slots for it; never raises.

    Returns None (the request runs untagged) for an absent or invalid tag, and for a valid one
    past the cap (counted ``over_limit``). A context returned must be given back with
    :func:`release` when the request ends.
    """
    context, config = _verify(tag)
    if context is None or config is None:
        return None
    if not _slots.take(config.max_active):
        stats.tag(OVER_LIMIT)
        return None
    stats.tag(ACCEPTED)
    return context


def release(context: ActiveRecipe | None) -> None:
    """Give back the slot :func:`admit` took for ``context`` (None: nothing to give back)."""
    if context is not None:
        _slots.give()


def active_requests() -> int:
    """Tagged requests running under a recipe in this process right now."""
    return _slots.active


def current_tag() -> str | None:
    """The verified tag of the running request (to forward by hand), or None."""
    return _TAG.get()


@contextlib.contextmanager
def scoped(context: ActiveRecipe | None) -> Iterator[ActiveRecipe | None]:
    """Run the block under ``context`` (or under no recipe at all when None)."""
    fit_token = FIT.set(context)
    tag_token = _TAG.set(context.tag if context is not None else None)
    try:
        yield context
    finally:
        _TAG.reset(tag_token)
        FIT.reset(fit_token)


@contextlib.contextmanager
def active(
    recipe: Recipe | Mapping[str, object],
    *,
    random: Callable[[], float] = _random.random,
    bulkhead_share: float = DEFAULT_BULKHEAD_SHARE,
) -> Iterator[ActiveRecipe]:
    """Run the block under ``recipe`` without HTTP (tests); works whether FIT is enabled or not.

    ``random`` decides probabilities and jitter; pass ``lambda: 0.0`` to make every fault fire.
    The block takes no ``max_active`` slot.
    """
    if not isinstance(recipe, Recipe):
        recipe = Recipe.from_dict(recipe)
    registry().add_metrics_source(stats)
    with scoped(ActiveRecipe(recipe, random=random, bulkhead_share=bulkhead_share)) as context:
        assert context is not None
        yield context
