"""Keyed state, windows and durable state stores.

A node given ``key=`` routes each record to one lane by :func:`stable_hash` of its key.
"""

from __future__ import annotations

from .._exports import claim_module as _claim_module
from .._keys import stable_hash

__all__ = ["stable_hash"]

_claim_module(globals(), __all__, __name__)
stable_hash.__module__ = __name__  # defined in the core (routing), public here
