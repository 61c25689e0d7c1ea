"""``infinity serve``: a local web page and HTTP API that draw images scale by scale (extra ``[serve]``).

``create_app`` (in :mod:`.app`) wraps a loaded :class:`~infinity_model.pipeline.InfinityPipeline` in a Starlette
application; :mod:`.worker` queues and micro-batches requests; :mod:`.schema` checks them. Importing this
package is cheap: the submodules (and Starlette) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ServeLimits", "create_app", "describe_pipeline"]

_WHERE = {
    "create_app": ".app",
    "ServeLimits": ".schema",
    "describe_pipeline": ".cli",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)
