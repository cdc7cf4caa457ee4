"""Secrets kept out of names, status, logs and metric labels.

A source URL may carry credentials (``https://user:pw@host/flags?token=...``): a source is named
by its URL with those replaced by ``***``, and every message it reports goes through a
``Redactor`` that knows the raw secrets (password, token values, header values), so an
exception text that quotes the URL cannot leak them either.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

__all__ = ["MASK", "Redactor", "redact_url", "url_secrets"]

MASK = "***"
_SENSITIVE = re.compile(
    r"token|key|secret|pass|pwd|auth|sig|credential|session|cookie", re.IGNORECASE
)


def _split(url: str) -> urllib.parse.SplitResult | None:
    try:
        return urllib.parse.urlsplit(url)
    except ValueError:
        return None


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url``: its password and sensitive query values (raw and decoded)."""
    parts = _split(url)
    if parts is None:
        return []
    found: list[str] = []
    if parts.password:
        found += [parts.password, urllib.parse.unquote(parts.password)]
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=False):
        if _SENSITIVE.search(name) and value:
            found.append(value)
    raw = [p.partition("=")[2] for p in parts.query.split("&") if "=" in p]
    found += [v for v in raw if v and urllib.parse.unquote_plus(v) in found]
    return found


def redact_url(url: str) -> str:
    """``url`` with its password and sensitive query values replaced by ``***``."""
    parts = _split(url)
    if parts is None:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _ = userinfo.partition(":")
        netloc = f"{user}{':' + MASK if sep else ''}@{host}"
    query = "&".join(
        f"{name}={MASK}" if _SENSITIVE.search(urllib.parse.unquote_plus(name)) and sep else piece
        for piece in parts.query.split("&")
        if piece
        for name, sep, _ in [piece.partition("=")]
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class Redactor:
    """Replaces every known secret in a text by ``***`` (longest first)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        keep = {s for s in (*self._secrets, *secrets) if s and len(s) >= 3}
        self._secrets = sorted(keep, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text
