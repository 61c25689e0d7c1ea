"""The package's one base error, so a caller (and the CLI) can catch every infinity-data failure at once."""

from __future__ import annotations


class InfinityDataError(Exception):
    """Base class of the errors infinity-data raises on purpose; subclasses keep their builtin base too."""
