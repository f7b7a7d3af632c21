"""Helper for package ``__init__`` modules."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

__all__ = ["claim_module"]


def claim_module(namespace: dict[str, Any], names: Iterable[str], module: str) -> None:
    """Make the public objects ``names`` defined in ``module``'s private submodules report
    ``module`` itself as their module (for docs, reprs and pickling by reference)."""
    prefix = module + "._"
    for name in names:
        obj = namespace[name]
        if getattr(obj, "__module__", "").startswith(prefix):
            with contextlib.suppress(AttributeError, TypeError):
                obj.__module__ = module
