"""The package's one base error, so a caller (and the CLI) can catch every infinity-train failure at once."""

from __future__ import annotations


class InfinityTrainError(Exception):
    """Base class of the errors infinity-train raises on purpose; subclasses keep their builtin base too."""
