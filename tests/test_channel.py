"""Channel: a bounded, closable FIFO between tasks (the edges of a pipeline)."""

from __future__ import annotations

import asyncio

import pytest

from asyncpipe import Channel, ChannelClosed, EndOfStream


async def let_tasks_run(steps: int = 5) -> None:
    """Give every ready task a few turns of the event loop (no wall-clock waiting)."""
    for _ in range(steps):
        await asyncio.sleep(0)


def test_capacity_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="'edge'"):
        Channel(0, "edge")


# -- bounded -------------------------------------------------------------------------------


async def test_put_waits_while_the_channel_is_full() -> None:
    channel: Channel[int] = Channel(2)
    await channel.put(1)
    await channel.put(2)
    putter = asyncio.create_task(channel.put(3))
    await let_tasks_run()
    assert not putter.done()
    assert len(channel) == 2
    await channel.get()  # clean up: let the putter finish
    async with asyncio.timeout(10):
        await putter


async def test_waiting_put_resumes_when_an_item_is_taken() -> None:
    channel: Channel[int] = Channel(1)
    await channel.put(1)
    putter = asyncio.create_task(channel.put(2))
    await let_tasks_run()
    assert await channel.get() == 1
    async with asyncio.timeout(10):
        await putter
    assert await channel.get() == 2


async def test_put_nowait_returns_false_when_full() -> None:
    channel: Channel[str] = Channel(1)
    assert channel.put_nowait("a") is True
    assert channel.put_nowait("b") is False
    assert len(channel) == 1


async def test_items_come_out_in_fifo_order() -> None:
    channel: Channel[int] = Channel(8)
    for i in range(5):
        await channel.put(i)
    assert [await channel.get() for _ in range(5)] == [0, 1, 2, 3, 4]


async def test_get_waits_until_an_item_is_put() -> None:
    channel: Channel[str] = Channel(1)
    getter = asyncio.create_task(channel.get())
    await let_tasks_run()
    assert not getter.done()
    await channel.put("x")
    async with asyncio.timeout(10):
        assert await getter == "x"


# -- closing -------------------------------------------------------------------------------


async def test_close_lets_receivers_drain_then_iteration_ends() -> None:
    channel: Channel[int] = Channel(4)
    await channel.put(1)
    await channel.put(2)
    channel.close()
    async with asyncio.timeout(10):
        assert [item async for item in channel] == [1, 2]


async def test_get_on_a_closed_drained_channel_raises_end_of_stream() -> None:
    channel: Channel[int] = Channel(4)
    await channel.put(1)
    channel.close()
    assert await channel.get() == 1
    with pytest.raises(EndOfStream):
        await channel.get()


async def test_close_wakes_a_waiting_receiver_with_end_of_stream() -> None:
    channel: Channel[int] = Channel(1)
    getter = asyncio.create_task(channel.get())
    await let_tasks_run()
    channel.close()
    async with asyncio.timeout(10):
        with pytest.raises(EndOfStream):
            await getter


async def test_put_into_a_closed_channel_raises_channel_closed() -> None:
    channel: Channel[int] = Channel(1)
    channel.close()
    with pytest.raises(ChannelClosed, match="'edge'|closed"):
        await channel.put(1)


async def test_close_makes_a_waiting_put_raise_channel_closed() -> None:
    channel: Channel[int] = Channel(1)
    await channel.put(1)
    putter = asyncio.create_task(channel.put(2))
    await let_tasks_run()
    channel.close()
    async with asyncio.timeout(10):
        with pytest.raises(ChannelClosed):
            await putter
    assert [item async for item in channel] == [1]


async def test_closing_last_sender_closes_the_channel() -> None:
    channel: Channel[int] = Channel(1)
    channel.add_sender()
    channel.add_sender()
    channel.close_sender()
    assert not channel.closed
    channel.close_sender()
    assert channel.closed


async def test_closing_last_sender_ends_iteration_after_draining() -> None:
    channel: Channel[int] = Channel(4)
    channel.add_sender()
    channel.add_sender()
    await channel.put(1)
    channel.close_sender()
    await channel.put(2)  # the other sender is still open
    channel.close_sender()
    async with asyncio.timeout(10):
        assert [item async for item in channel] == [1, 2]


async def test_add_sender_to_a_closed_channel_raises_channel_closed() -> None:
    channel: Channel[int] = Channel(1)
    channel.close()
    with pytest.raises(ChannelClosed):
        channel.add_sender()


# -- aborting ------------------------------------------------------------------------------


async def test_abort_drops_buffered_items() -> None:
    channel: Channel[int] = Channel(4)
    await channel.put(1)
    await channel.put(2)
    channel.abort()
    assert len(channel) == 0
    with pytest.raises(EndOfStream):
        await channel.get()


async def test_abort_makes_a_waiting_put_raise_channel_closed() -> None:
    channel: Channel[int] = Channel(1)
    await channel.put(1)
    putter = asyncio.create_task(channel.put(2))
    await let_tasks_run()
    channel.abort()
    async with asyncio.timeout(10):
        with pytest.raises(ChannelClosed):
            await putter
    assert len(channel) == 0


# -- cancellation --------------------------------------------------------------------------


async def test_cancelled_getter_passes_its_wake_up_to_the_next_getter() -> None:
    channel: Channel[str] = Channel(4)
    first = asyncio.create_task(channel.get())
    second = asyncio.create_task(channel.get())
    await let_tasks_run()
    channel.put_nowait("item")  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it gets to run
    async with asyncio.timeout(10):
        assert await second == "item"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_cancelled_putter_passes_its_wake_up_to_the_next_putter() -> None:
    channel: Channel[int] = Channel(1)
    await channel.put(0)
    first = asyncio.create_task(channel.put(1))
    await let_tasks_run()
    second = asyncio.create_task(channel.put(2))
    await let_tasks_run()
    assert await channel.get() == 0  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it gets to run
    async with asyncio.timeout(10):
        await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await channel.get() == 2
    assert len(channel) == 0


async def test_cancelled_put_enqueues_nothing() -> None:
    channel: Channel[int] = Channel(1)
    await channel.put(1)
    putter = asyncio.create_task(channel.put(2))
    await let_tasks_run()
    putter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await putter
    assert await channel.get() == 1
    assert len(channel) == 0
    assert channel.statistics().waiting_senders == 0


async def test_cancelled_get_takes_no_item() -> None:
    channel: Channel[int] = Channel(1)
    getter = asyncio.create_task(channel.get())
    await let_tasks_run()
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    await channel.put(7)
    assert channel.statistics().waiting_receivers == 0
    assert await channel.get() == 7


# -- statistics ----------------------------------------------------------------------------


async def test_high_water_records_the_largest_depth_ever_reached() -> None:
    channel: Channel[int] = Channel(5)
    for i in range(3):
        await channel.put(i)
    await channel.get()
    await channel.get()
    await channel.put(3)
    assert len(channel) == 2
    assert channel.high_water == 3
    assert channel.statistics().high_water == 3


async def test_statistics_report_capacity_depth_senders_and_state() -> None:
    channel: Channel[int] = Channel(3, "edge")
    channel.add_sender()
    await channel.put(1)
    stats = channel.statistics()
    assert (stats.capacity, stats.depth, stats.senders, stats.closed) == (3, 1, 1, False)
    channel.close_sender()
    assert channel.statistics().closed is True


async def test_statistics_count_waiting_senders() -> None:
    channel: Channel[int] = Channel(1)
    await channel.put(0)
    putters = [asyncio.create_task(channel.put(i)) for i in (1, 2)]
    await let_tasks_run()
    assert channel.statistics().waiting_senders == 2
    for expected in (0, 1, 2):
        assert await channel.get() == expected
    async with asyncio.timeout(10):
        await asyncio.gather(*putters)
    assert channel.statistics().waiting_senders == 0


async def test_statistics_count_waiting_receivers() -> None:
    channel: Channel[int] = Channel(1)
    getter = asyncio.create_task(channel.get())
    await let_tasks_run()
    assert channel.statistics().waiting_receivers == 1
    await channel.put(1)
    async with asyncio.timeout(10):
        assert await getter == 1
    assert channel.statistics().waiting_receivers == 0
