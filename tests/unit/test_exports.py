"""The public face: every package's ``__all__`` is sorted, complete and importable."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import resilience

PACKAGES = ["resilience", "resilience.circuit", "resilience.errors", "resilience.context"] + [
    f"resilience.{m.name}"
    for m in pkgutil.iter_modules(resilience.__path__)
    if m.ispkg and not m.name.startswith("_")
]


def _isort_key(name: str) -> tuple[int, str]:
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


@pytest.mark.parametrize("name", sorted(set(PACKAGES)))
def test_all_is_sorted_and_importable(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    # isort-style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions
    assert list(exported) == sorted(exported, key=_isort_key)
    for attr in exported:
        assert hasattr(module, attr), f"{name}.{attr} is in __all__ but missing"
    public = {
        n for n, v in vars(module).items()
        if not n.startswith("_") and getattr(v, "__module__", "").startswith(name + "._")
    }  # fmt: skip
    assert public <= set(exported), (
        f"{name} defines public names not in __all__: {public - set(exported)}"
    )
