"""Lazy package exports (PEP 562): a package names its API without importing torch up front."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_getattr(package: str, exports: Mapping[str, str], namespace: dict) -> Callable[[str], object]:
    """A module `__getattr__` that imports `exports[name]` on first use and caches it in `namespace`."""

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
