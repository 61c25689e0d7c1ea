"""The package's one base error, so a caller (and the ``infinity`` CLI) can catch every infinity-model failure at
once."""

from __future__ import annotations


class InfinityModelError(Exception):
    """Base class of the errors infinity-model raises on purpose; subclasses keep their builtin base too."""
