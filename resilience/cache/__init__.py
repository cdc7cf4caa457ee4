"""A zone-replicated memcached client (EVCache-style), sync and asyncio.

```python
from resilience.cache import ReplicatedCache

cache = ReplicatedCache(
    zones={"a": ["10.0.0.1:11211", "10.0.0.2:11211"], "b": [...], "c": [...]},
    local_zone="a", name="profile", timeout=0.05, default_ttl=900)
cache.set("user:1", {"name": "Ada"})   # every zone, in parallel; a WriteResult
cache.get("user:1")                    # local zone first, then the others
```
"""

from ._async import AsyncReplicatedCache
from ._base import CacheBase
from ._config import CacheConfig
from ._serde import JsonSerde, PickleSerde, Serde
from ._sync import ReplicatedCache
from ._writes import WritePolicy, WriteResult

__all__ = [
    "AsyncReplicatedCache",
    "CacheBase",
    "CacheConfig",
    "JsonSerde",
    "PickleSerde",
    "ReplicatedCache",
    "Serde",
    "WritePolicy",
    "WriteResult",
]
