"""An OpenFeature provider over ``Flags`` (needs the ``openfeature`` extra).

```python
from openfeature import api
from resilience.flags import openfeature_provider

api.set_provider(openfeature_provider(flags))
api.get_client().get_boolean_value("new-ranking", False, EvaluationContext("user-1", {...}))
```

The targeting key is the rollout key and the context attributes feed the rules. Reasons and
error codes map onto OpenFeature's; every flag change is emitted as CONFIGURATION_CHANGED.
openfeature is imported only when a provider is made, so ``resilience.flags`` works without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._flags import FlagChange, Flags

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
            self._unsubscribe: Callable[[], None] | None = None

        def get_metadata(self) -> Metadata:
            return Metadata(name=PROVIDER_NAME)

        def initialize(self, evaluation_context: EvaluationContext) -> None:
            self._unsubscribe = flags.on_change(None, self._changed)

        def shutdown(self) -> None:
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None

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
            return FlagResolutionDetails(
                value=d.value,
                reason=reasons[d.reason.value],
                variant=d.variant,
                error_code=None if d.error_code is None else error_codes[d.error_code],
                error_message=d.error_message,
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
