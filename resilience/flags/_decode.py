"""Decoding flag documents (JSON, YAML, TOML) safely: bounded in size, nesting and aliases.

A document larger than its source's ``max_bytes`` is refused before it is decoded. YAML aliases
may add at most ``MAX_ALIAS_NODES`` nodes to what the document spells out, so a few hundred
bytes of nested aliases (a "billion laughs") are refused at once instead of expanding into
gigabytes. Nesting deep enough to exhaust the parser (``RecursionError``) is a parse error like
any other. Every refusal is a ``DecodeError`` whose ``kind`` is ``too_large`` or ``parse``; the
source reports it and the last good state stays.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

__all__ = ["DEFAULT_MAX_BYTES", "MAX_ALIAS_NODES", "DecodeError", "check_size", "decode"]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MAX_ALIAS_NODES = 100_000


class DecodeError(Exception):
    """A document that cannot be installed; ``kind`` is ``too_large`` or ``parse``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_size(size: int, max_bytes: int, what: str) -> None:
    if size > max_bytes:
        raise DecodeError("too_large", f"{what} is {size} bytes, more than the {max_bytes} allowed")


def decode(data: bytes, fmt: str, what: str) -> Any:
    """``data`` decoded as ``fmt`` (json, yaml, toml); ``DecodeError`` says why not."""
    try:
        text = data.decode("utf-8")
        if fmt == "json":
            return json.loads(text)
        if fmt == "toml":
            return tomllib.loads(text)
        return _load_yaml(text)
    except DecodeError:
        raise
    except RecursionError as exc:
        raise DecodeError("parse", f"{what}: nested too deeply") from exc
    except ImportError:
        raise
    except Exception as exc:  # json, yaml, toml and utf-8 each raise their own errors
        raise DecodeError("parse", f"{what}: {exc}") from exc


def _load_yaml(text: str) -> Any:
    try:
        import yaml
    except ImportError as exc:  # the optional extra is missing: say which one
        raise ImportError("YAML flag files need PyYAML: pip install 'resilience[yaml]'") from exc
    return yaml.load(text, Loader=_yaml_loader(yaml))


_YAML_LOADER: Any = None


def _expanded_size(root: Any) -> tuple[int, int]:
    """(distinct nodes, nodes once every alias is expanded) of a composed YAML node graph."""
    sizes: dict[int, int] = {}
    order: list[Any] = []
    stack = [root]
    while stack:  # iterative post-order: no recursion on deep documents
        node = stack.pop()
        if id(node) in sizes:
            continue
        sizes[id(node)] = -1
        order.append(node)
        value = node.value
        if isinstance(value, list):
            for item in value:
                stack.extend(item if isinstance(item, tuple) else (item,))
    for node in reversed(order):
        value = node.value
        total = 1
        if isinstance(value, list):
            for item in value:
                for child in item if isinstance(item, tuple) else (item,):
                    total += max(sizes[id(child)], 1)
        sizes[id(node)] = total
    return len(order), sizes[id(root)]


def _yaml_loader(yaml: Any) -> Any:
    """PyYAML's SafeLoader with YAML 1.2 booleans and a bound on alias expansion.

    YAML 1.1 reads ``on``, ``off``, ``yes`` and ``no`` as booleans, so ``{on: true}`` (the flag
    format's own key) would become ``{True: True}``: only true/false are bools here.
    """
    global _YAML_LOADER
    if _YAML_LOADER is None:

        class FlagLoader(yaml.SafeLoader):  # type: ignore[misc]
            def compose_document(self) -> Any:
                node = super().compose_document()
                if node is not None:
                    distinct, expanded = _expanded_size(node)
                    if expanded - distinct > MAX_ALIAS_NODES:
                        raise DecodeError(
                            "parse",
                            f"YAML aliases expand the document by {expanded - distinct} nodes, "
                            f"more than the {MAX_ALIAS_NODES} allowed",
                        )
                return node

        FlagLoader.yaml_implicit_resolvers = {
            first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }
        FlagLoader.add_implicit_resolver(
            "tag:yaml.org,2002:bool",
            re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
            list("tTfF"),
        )
        _YAML_LOADER = FlagLoader
    return _YAML_LOADER
