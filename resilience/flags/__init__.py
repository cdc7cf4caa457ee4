"""Runtime switches, rollouts and dynamic settings from layered sources, with a safe admin API.

```python
from resilience.flags import Flags, FileSource, EnvSource

flags = Flags(FileSource("flags.yaml", watch=True), EnvSource())
flags.enabled("new-ranking", key=user_id, attrs={"country": "KR"})
flags.value("ratings.timeout", default=0.5)
flags.bind_circuit("ratings")          # circuits.ratings.forced / .timeout / ... drive the circuit
app.add_subapp("/flags", flags_admin_app(flags, token=secret))
```
"""

from ._admin import AUDIT_KEY, FLAGS_KEY, AuditEntry, AuditLog, flags_admin_app
from ._circuit import FORCED_VALUES, POLICY_FIELDS, CircuitBinding
from ._flags import OVERRIDE, FlagChange, Flags
from ._model import BUCKETS, Details, Flag, Reason, Rule, Variant, bucket, parse_document
from ._openfeature import openfeature_provider
from ._sources import EnvSource, Feed, FileSource, HttpSource, InMemorySource, Source

__all__ = [
    "AUDIT_KEY",
    "BUCKETS",
    "FLAGS_KEY",
    "FORCED_VALUES",
    "OVERRIDE",
    "POLICY_FIELDS",
    "AuditEntry",
    "AuditLog",
    "CircuitBinding",
    "Details",
    "EnvSource",
    "Feed",
    "FileSource",
    "Flag",
    "FlagChange",
    "Flags",
    "HttpSource",
    "InMemorySource",
    "Reason",
    "Rule",
    "Source",
    "Variant",
    "bucket",
    "flags_admin_app",
    "openfeature_provider",
    "parse_document",
]
