"""Old keyword spellings kept for one minor version: they still work and warn (DeprecationWarning)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])


def renamed_keywords(**renames: str) -> Callable[[F], F]:
    """``@renamed_keywords(h_div_w="ratio")``: a call with ``h_div_w=`` warns and is passed on as ``ratio=``;
    giving both spellings is a TypeError."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(f"{function.__name__}() got {old}= and {new}=; pass only {new}=")
                warnings.warn(
                    f"{function.__name__}({old}=...) is deprecated and will be removed; use {new}=",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return cast(F, wrapper)

    return decorate
