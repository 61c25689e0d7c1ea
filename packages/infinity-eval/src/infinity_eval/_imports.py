"""Resolving user plug-ins given as `package.module:attribute` import paths."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["import_object"]


def import_object(spec: str, what: str = "object") -> Any:
    """Import `package.module:attr[.sub]`; errors name the spec and what was expected."""
    if ":" not in spec:
        raise ValueError(f"{what} {spec!r} is not an import path of the form 'package.module:name'")
    module_name, attr = spec.split(":", 1)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"cannot import module {module_name!r} for {what} {spec!r}: {err}") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"module {module_name!r} has no attribute {attr!r} ({what} {spec!r})")
        obj = getattr(obj, part)
    return obj
