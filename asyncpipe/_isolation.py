"""Poison isolation: finding the items of a list message that make its handler fail.

When a handler still fails on a list message after its retries, the node hands the message
to :func:`bisect`, which handles it again in halves, and the failing halves in halves, down
to single items: every part that succeeds goes on, every single item that still fails is
reported alone with its error and its position in the message. One poisonous item in a
batch of ``n`` costs about ``2 log2(n)`` more calls; the batch's other items are not lost.
Each part gets one attempt (the message as a whole has had its retries).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import HandlerSetupError
from ._handler import Rejection

__all__ = ["Part", "bisect"]

#: Handles one part: returns (result, the items it rejected, indexed within the part).
PartCall = Callable[[list[Any]], Awaitable[tuple[Any, list[Rejection]]]]
#: Reports one item that fails on its own: (its error, the item, its index).
ItemFailed = Callable[[Exception, Any, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Part:
    """A part of the message that was handled: where it starts and what came of it."""

    offset: int
    size: int
    result: Any
    rejections: list[Rejection]


async def bisect(items: Sequence[Any], call: PartCall, failed: ItemFailed) -> list[Part]:
    """Handle ``items`` (a message that failed as a whole) in halves, recursively.

    Returns the parts that succeeded, in message order; every item of a part that failed
    alone has been given to ``failed``. Errors that are not the items' fault
    (:class:`HandlerSetupError`, cancellation) propagate.
    """
    done: list[Part] = []

    async def split(offset: int, part: list[Any]) -> None:
        middle = len(part) // 2
        for start, half in ((offset, part[:middle]), (offset + middle, part[middle:])):
            try:
                result, rejections = await call(half)
            except HandlerSetupError:
                raise
            except Exception as exc:
                if len(half) == 1:
                    await failed(exc, half[0], start)
                else:
                    await split(start, half)
            else:
                done.append(Part(start, len(half), result, rejections))

    await split(0, list(items))
    return done
