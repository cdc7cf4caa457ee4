"""The acknowledgement a server integration puts on the response to a verified tagged request.

Wire form of the ``X-Resilience-FIT-Ack`` header::

    recipe=<recipe name>; injected=<dependency>:<kind>=<n>,<dependency>:<kind>=<n>

``injected`` lists every (dependency, fault kind) the recipe matched while the request ran,
with how many times the fault was applied (0: it matched, but no call ran it, for instance
because the circuit short-circuited the call). Dependency names are percent-encoded. Faults
that downstream services acknowledged to this request are included, so the first hop reports
what the whole chain injected. Only requests whose tag verified get the header: an absent
header means the service did not run the request under the recipe (FIT not enabled, no
middleware, another secret, or over ``max_active``).

The runner reads it to prove that an experiment happened; it is only ever as trustworthy as
the services that send it, so parsing is strict and bounded.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping

__all__ = ["ACK_HEADER", "Ack", "decode_ack", "encode_ack"]

ACK_HEADER = "X-Resilience-FIT-Ack"
# Entries kept in one header; a request that matched more is truncated (and says so).
MAX_ENTRIES = 64
MAX_ACK_LENGTH = 8190
_KIND = re.compile(r"^[a-z_]{1,20}$")
_RECIPE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")

Record = Mapping[tuple[str, str], int]


class Ack:
    """A decoded acknowledgement: the recipe's name and (dependency, kind) -> applied count."""

    __slots__ = ("recipe", "record")

    def __init__(self, recipe: str, record: dict[tuple[str, str], int]) -> None:
        self.recipe = recipe
        self.record = record

    def __repr__(self) -> str:
        return f"Ack({self.recipe!r}, {self.record!r})"


def encode_ack(recipe: str, record: Record) -> str:
    """The header value for a request run under ``recipe`` that matched ``record``."""
    entries = [
        f"{urllib.parse.quote(dep, safe='._-*')}:{kind}={n}"
        for (dep, kind), n in sorted(record.items())[:MAX_ENTRIES]
    ]
    return f"recipe={recipe}; injected={','.join(entries)}"


def decode_ack(value: str | None) -> Ack | None:
    """Parse a header value; None when absent or not an acknowledgement."""
    if not value or len(value) > MAX_ACK_LENGTH:
        return None
    parts = dict(
        part.strip().partition("=")[::2] for part in value.split(";") if "=" in part.strip()
    )
    recipe = parts.get("recipe", "")
    if not _RECIPE.match(recipe) or "injected" not in parts:
        return None
    record: dict[tuple[str, str], int] = {}
    for entry in filter(None, parts["injected"].split(",")[:MAX_ENTRIES]):
        where, _, count = entry.rpartition("=")
        dep, _, kind = where.rpartition(":")
        if not dep or not _KIND.match(kind) or not count.isdigit() or len(count) > 9:
            return None
        key = (urllib.parse.unquote(dep), kind)
        record[key] = record.get(key, 0) + int(count)
    return Ack(recipe, record)
