"""Runtime switches, rollouts and dynamic settings from layered sources, with a safe admin API.

```python
from resilience.flags import Flags, FileSource, EnvSource, EtcdSource

flags = Flags(FileSource("flags.yaml", watch=True), EnvSource())
flags.enabled("new-ranking", key=user_id, attrs={"country": "KR"})
flags.value("ratings.timeout", default=0.5)
flags.bind_circuit("ratings")          # circuits.ratings.forced / .timeout / ... drive the circuit
app.add_subapp("/flags", flags_admin_app(flags, token=secret))

fleet = Flags(EtcdSource(["http://etcd-1:2379"], backup_path="/var/lib/svc/flags.json"))
fleet.ready(2.0)
fleet.write("kill-recommendations", {"on": True}, actor="alice")   # every process sees it
```
"""

from ._admin import AUDIT_KEY, FLAGS_KEY, flags_admin_app
from ._circuit import FORCED_VALUES, POLICY_FIELDS, CircuitBinding
from ._etcd import EtcdSource
from ._evaluate import BUCKETS, Details, Reason, bucket
from ._events import FlagChange, Health, HealthChange
from ._file import FileSource
from ._flags import OVERRIDE, Flags
from ._http import HttpSource
from ._model import Flag, Rule, Variant, parse_document
from ._openfeature import openfeature_provider
from ._source import EnvSource, Feed, InMemorySource, Source
from ._writes import AuditEntry, AuditLog, WriteResult

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
    "EtcdSource",
    "Feed",
    "FileSource",
    "Flag",
    "FlagChange",
    "Flags",
    "Health",
    "HealthChange",
    "HttpSource",
    "InMemorySource",
    "Reason",
    "Rule",
    "Source",
    "Variant",
    "WriteResult",
    "bucket",
    "flags_admin_app",
    "openfeature_provider",
    "parse_document",
]
