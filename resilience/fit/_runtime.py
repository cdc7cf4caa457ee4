"""FIT in a process: off until ``enable``; tags verified against its keys; recipes activated.

Nothing here runs on a protected call. Injection points read the ``FIT`` contextvar, which is
set only for a request that arrived with a valid tag (or inside ``active``), so a process with
FIT enabled pays nothing on requests without a tag.
"""

from __future__ import annotations

import contextlib
import contextvars
import random as _random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

import attrs

from ..circuit import registry
from ..context import FIT
from ..errors import ConfigError
from ._faults import ActiveRecipe, stats
from ._recipe import Recipe
from ._tags import (
    ACCEPTED,
    DEFAULT_KEY_ID,
    DEFAULT_MAX_TTL,
    DISABLED,
    MALFORMED,
    check_key_id,
    secret_bytes,
    verify_tag,
)

__all__ = [
    "FitConfig",
    "activate",
    "active",
    "current_tag",
    "disable",
    "enable",
    "enabled",
    "tag_counts",
]


@attrs.frozen(kw_only=True)
class FitConfig:
    """What ``enable`` set up: the keys tags may be signed with and the recipes known by id."""

    keys: Mapping[str, bytes]
    key_id: str
    recipes: Mapping[str, Recipe]
    max_ttl: float
    clock: Callable[[], float]
    random: Callable[[], float]


_config: FitConfig | None = None
# The verified tag of the running request, copied onto outgoing requests (see trace_config).
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
    clock: Callable[[], float] = time.time,
    random: Callable[[], float] = _random.random,
) -> FitConfig:
    """Accept tags signed with ``secret`` (as ``key_id``) from now on.

    Args:
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
    known: dict[str, Recipe] = {}
    for recipe in recipes:
        if not isinstance(recipe, Recipe):
            raise ConfigError("recipes", f"must be Recipe objects, got {recipe!r}")
        known[recipe.name] = recipe
    _config = FitConfig(
        keys=keys, key_id=key_id, recipes=known, max_ttl=float(max_ttl), clock=clock, random=random
    )
    registry().add_metrics_source(stats)
    return _config


def disable() -> None:
    """Ignore every tag from now on (requests already under a recipe finish under it)."""
    global _config
    _config = None


def enabled() -> bool:
    return _config is not None


def tag_counts() -> dict[str, int]:
    """Tags seen by verification result (``accepted``, ``bad_signature``, ``disabled``...)."""
    with stats._lock:
        return dict(stats.tags)


def activate(tag: str | None) -> ActiveRecipe | None:
    """Verify a request's tag and return the context to activate, or None; never raises.

    Every tag that is present is counted by result; an absent tag counts nothing.
    """
    if tag is None:
        return None
    config = _config
    if config is None:
        stats.tag(DISABLED)
        return None
    try:
        verdict = verify_tag(
            tag,
            keys=config.keys,
            now=config.clock(),
            max_ttl=config.max_ttl,
            recipes=config.recipes,
        )
    except Exception:  # verify_tag is written not to raise; a forged tag must never get through
        stats.tag(MALFORMED)
        return None
    stats.tag(verdict.result)
    if verdict.result != ACCEPTED or verdict.recipe is None:
        return None
    return ActiveRecipe(verdict.recipe, random=config.random, tag=tag)


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
) -> Iterator[ActiveRecipe]:
    """Run the block under ``recipe`` without HTTP (tests); works whether FIT is enabled or not.

    ``random`` decides probabilities and jitter; pass ``lambda: 0.0`` to make every fault fire.
    """
    if not isinstance(recipe, Recipe):
        recipe = Recipe.from_dict(recipe)
    registry().add_metrics_source(stats)
    with scoped(ActiveRecipe(recipe, random=random)) as context:
        assert context is not None
        yield context
