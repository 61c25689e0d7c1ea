"""The package's one base error, so a caller (and the CLI) can catch every infinity-eval failure at once."""

from __future__ import annotations


class InfinityEvalError(Exception):
    """Base class of the errors infinity-eval raises on purpose; subclasses keep their builtin base too."""
