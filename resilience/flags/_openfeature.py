"""An OpenFeature provider over ``Flags`` (needs the ``openfeature`` extra).

```python
from openfeature import api
from resilience.flags import openfeature_provider

api.set_provider(openfeature_provider(flags))
api.get_client().get_boolean_value("new-ranking", False, EvaluationContext("user-1", {...}))
```

The targeting key is the rollout key and the context attributes feed the rules. Reasons and
error codes map onto OpenFeature's (``on: false`` is DISABLED; rules that did not match and no
rollout give DEFAULT); ``flag_metadata`` carries the flag's ``source`` and, when the source
knows it, its ``version`` (etcd's revision of the key). Events: every flag change is
CONFIGURATION_CHANGED; a source that fails emits PROVIDER_ERROR, then PROVIDER_STALE while the
last good state is served; PROVIDER_READY when every source is healthy again.
openfeature is imported only when a provider is made, so ``resilience.flags`` works without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._events import FlagChange, Health, HealthChange
from ._flags import Flags

if TYPE_CHECKING:
    from openfeature.provider import AbstractProvider

__all__ = ["openfeature_provider"]

PROVIDER_NAME = "resilience.flags"


def openfeature_provider(flags: Flags) -> AbstractProvider:
    """An OpenFeature provider evaluating ``flags`` (``ImportError`` names the extra if missing)."""
    try:
        from openfeature.evaluation_context import EvaluationContext
        from openfeature.event import ProviderEventDetails
        from openfeature.exception import ErrorCode
        from openfeature.flag_evaluation import FlagResolutionDetails, Reason
        from openfeature.provider import AbstractProvider, Metadata
    except ImportError as exc:
        raise ImportError(
            "the OpenFeature provider needs openfeature-sdk: pip install 'resilience[openfeature]'"
        ) from exc

    reasons = {
        "static": Reason.STATIC,
        "targeting_match": Reason.TARGETING_MATCH,
        "split": Reason.SPLIT,
        "default": Reason.DEFAULT,
        "disabled": Reason.DISABLED,
        "error": Reason.ERROR,
    }
    error_codes = {
        "flag_not_found": ErrorCode.FLAG_NOT_FOUND,
        "type_mismatch": ErrorCode.TYPE_MISMATCH,
        "targeting_key_missing": ErrorCode.TARGETING_KEY_MISSING,
        "general": ErrorCode.GENERAL,
    }

    class ResilienceProvider(AbstractProvider):
        """OpenFeature resolution through ``Flags.details``."""

        def __init__(self) -> None:
            super().__init__()
            self.flags = flags
            self._unsubscribe: list[Callable[[], None]] = []

        def get_metadata(self) -> Metadata:
            return Metadata(name=PROVIDER_NAME)

        def initialize(self, evaluation_context: EvaluationContext) -> None:
            self._unsubscribe = [
                flags.on_change(None, self._changed),
                flags.on_health(self._health),
            ]
            if flags.health() is not Health.OK:
                self._health(
                    HealthChange(
                        old=Health.OK,
                        new=flags.health(),
                        source=None,
                        message="a flag source is failing",
                    )
                )

        def shutdown(self) -> None:
            for undo in self._unsubscribe:
                undo()
            self._unsubscribe = []

        def _health(self, change: HealthChange) -> None:
            message = change.message or f"flag sources are {change.new.value}"
            if change.source is not None:
                message = f"{change.source}: {message}"
            if change.message is not None and change.new is not Health.OK:
                self.emit_provider_error(
                    ProviderEventDetails(message=message, error_code=ErrorCode.GENERAL)
                )
            if change.new is Health.STALE:
                self.emit_provider_stale(ProviderEventDetails(message=message))
            elif change.new is Health.OK and change.old is not Health.OK:
                self.emit_provider_ready(ProviderEventDetails(message=message))

        def _changed(self, change: FlagChange) -> None:
            self.emit_provider_configuration_changed(
                ProviderEventDetails(flags_changed=[change.name])
            )

        def _resolve(
            self, key: str, default: Any, ctx: EvaluationContext | None
        ) -> FlagResolutionDetails[Any]:
            target = None if ctx is None else ctx.targeting_key
            attributes = None if ctx is None else dict(ctx.attributes)
            d = flags.details(key, target, attributes, default=default)
            metadata: dict[str, Any] = {}
            if d.source is not None:
                metadata["source"] = d.source
            if d.version is not None:
                metadata["version"] = d.version
            return FlagResolutionDetails(
                value=d.value,
                reason=reasons[d.reason.value],
                variant=d.variant,
                error_code=None if d.error_code is None else error_codes[d.error_code],
                error_message=d.error_message,
                flag_metadata=metadata,
            )

        def resolve_boolean_details(
            self,
            flag_key: str,
            default_value: bool,
            evaluation_context: EvaluationContext | None = None,
        ) -> FlagResolutionDetails[bool]:
            return self._resolve(flag_key, default_value, evaluation_context)

        def resolve_string_details(
            self,
            flag_key: str,
            default_value: str,
            evaluation_context: EvaluationContext | None = None,
        ) -> FlagResolutionDetails[str]:
            return self._resolve(flag_key, default_value, evaluation_context)

        def resolve_integer_details(
            self,
            flag_key: str,
            default_value: int,
            evaluation_context: EvaluationContext | None = None,
        ) -> FlagResolutionDetails[int]:
            return self._resolve(flag_key, default_value, evaluation_context)

        def resolve_float_details(
            self,
            flag_key: str,
            default_value: float,
            evaluation_context: EvaluationContext | None = None,
        ) -> FlagResolutionDetails[float]:
            return self._resolve(flag_key, default_value, evaluation_context)

        def resolve_object_details(
            self,
            flag_key: str,
            default_value: Sequence[Any] | Mapping[str, Any],
            evaluation_context: EvaluationContext | None = None,
        ) -> FlagResolutionDetails[Sequence[Any] | Mapping[str, Any]]:
            return self._resolve(flag_key, default_value, evaluation_context)

    return ResilienceProvider()
