"""Toxiproxy: apply a recipe's proxies and toxics for a run and always remove them after.

This talks to Toxiproxy's HTTP API with a small urllib client instead of driving
toxiproxy-python, because that library cannot be made to meet the runner's two needs: it keeps
the server address in class attributes of ``APIConsumer`` (one server per process, shared by
every thread), and its ``Proxy`` methods call ``requests`` without a timeout and without passing
any through, so a stalled server hangs the runner (and its cleanup) forever. The API it wraps is
small and stable (Toxiproxy v2: /proxies, /proxies/{p}, /proxies/{p}/toxics/{t}, /version).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import attrs

from ..errors import ToxiproxyError
from ._recipe import ProxySpec, Recipe, ToxicSpec

__all__ = ["DEFAULT_TOXIPROXY", "Injection", "ToxiproxyClient"]

log = logging.getLogger("resilience.fit")

DEFAULT_TOXIPROXY = "http://127.0.0.1:8474"
DEFAULT_API_TIMEOUT = 2.0


class ToxiproxyClient:
    """A Toxiproxy server's API, every request bounded by ``timeout`` seconds.

    Args:
        url: the server's API address, ``http://host:port``.
        timeout: seconds for one API request (connect and read).
    """

    def __init__(self, url: str = DEFAULT_TOXIPROXY, timeout: float = DEFAULT_API_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise ToxiproxyError(f"{method} {path}: {exc.code} {detail}", exc.code) from exc
        except (OSError, ValueError) as exc:  # refused, timed out, bad URL
            raise ToxiproxyError(f"{method} {path}: {exc}") from exc
        return json.loads(raw) if raw.strip() else None

    @staticmethod
    def _quote(name: str) -> str:
        return urllib.parse.quote(name, safe="")

    def version(self) -> str:
        """The server's version (v2.12 answers JSON ``{"version": ...}``, older ones text)."""
        request = urllib.request.Request(self.url + "/version")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text: str = response.read().decode().strip()
        except (OSError, ValueError) as exc:
            raise ToxiproxyError(f"GET /version: {exc}") from exc
        try:
            data: Any = json.loads(text)
            return str(data["version"])
        except (ValueError, KeyError, TypeError):
            return text

    def proxies(self) -> dict[str, Any]:
        return dict(self._request("GET", "/proxies") or {})

    def create_proxy(self, name: str, listen: str, upstream: str) -> dict[str, Any]:
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": True}
        return dict(self._request("POST", "/proxies", body))

    def delete_proxy(self, name: str) -> None:
        self._request("DELETE", f"/proxies/{self._quote(name)}")

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._request("POST", f"/proxies/{self._quote(name)}", {"enabled": enabled})

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        return list(self._request("GET", f"/proxies/{self._quote(proxy)}/toxics") or [])

    def add_toxic(self, spec: ToxicSpec) -> None:
        body = {
            "name": spec.toxic_name,
            "type": spec.type,
            "stream": spec.stream,
            "toxicity": spec.toxicity,
            "attributes": dict(spec.attributes),
        }
        self._request("POST", f"/proxies/{self._quote(spec.proxy)}/toxics", body)

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._request("DELETE", f"/proxies/{self._quote(proxy)}/toxics/{self._quote(name)}")


@attrs.define
class Injection:
    """What a recipe changed on a Toxiproxy server; ``remove()`` undoes it, step by step.

    Use as ``with Injection.apply(client, recipe) as injection:``; the block's exit (also on
    an error, a cancellation or Ctrl-C) removes every toxic added, re-enables every proxy taken
    down and deletes every proxy created. A step that fails to undo is logged and kept in
    ``leftovers`` instead of stopping the others.
    """

    client: ToxiproxyClient
    created: list[str] = attrs.Factory(list)
    toxics: list[tuple[str, str]] = attrs.Factory(list)
    disabled: list[str] = attrs.Factory(list)
    leftovers: list[str] = attrs.Factory(list)

    @classmethod
    def apply(cls, client: ToxiproxyClient, recipe: Recipe) -> Injection:
        injection = cls(client)
        done = False
        try:
            injection._apply(recipe.proxies, recipe.toxics)
            done = True
        finally:  # a failed step (or Ctrl-C) halfway: undo what was applied, let the error through
            if not done:
                injection.remove()
        return injection

    def _apply(self, proxies: tuple[ProxySpec, ...], toxics: tuple[ToxicSpec, ...]) -> None:
        existing = self.client.proxies() if proxies else {}
        for proxy in proxies:
            if proxy.name not in existing:
                self.client.create_proxy(proxy.name, proxy.listen, proxy.upstream)
                self.created.append(proxy.name)
        for toxic in toxics:
            if toxic.type == "down":
                self.client.set_enabled(toxic.proxy, False)
                self.disabled.append(toxic.proxy)
            else:
                self.client.add_toxic(toxic)
                self.toxics.append((toxic.proxy, toxic.toxic_name))

    @property
    def applied(self) -> list[str]:
        return [f"{p}/{t}" for p, t in self.toxics] + [f"{p} down" for p in self.disabled]

    def remove(self) -> list[str]:
        """Undo everything; returns what could not be undone (empty when all went well)."""
        steps: list[tuple[str, Any]] = []
        steps += [(f"toxic {p}/{t}", (self.client.remove_toxic, p, t)) for p, t in self.toxics]
        steps += [(f"proxy {p} enable", (self.client.set_enabled, p, True)) for p in self.disabled]
        steps += [(f"proxy {p} delete", (self.client.delete_proxy, p)) for p in self.created]
        self.toxics, self.disabled, self.created = [], [], []
        for label, (fn, *args) in steps:
            try:
                fn(*args)
            except ToxiproxyError as exc:
                if exc.status == 404:  # already gone: what we wanted
                    continue
                log.error("could not undo %s: %s", label, exc)
                self.leftovers.append(label)
        return list(self.leftovers)

    def __enter__(self) -> Injection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
