"""The package's one base error, so a caller (and the CLI) can catch every bsq-tokenizer failure at once."""

from __future__ import annotations


class BSQTokenizerError(Exception):
    """Base class of the errors bsq-tokenizer raises on purpose; subclasses keep their builtin base too."""
