"""The relay's packet queue for browser sockets keeps the asyncio.Queue promises python-engineio uses."""

from __future__ import annotations

import asyncio

import pytest

from server.relay.lean_queue import LeanQueue


async def test_items_come_out_in_order_to_a_waiting_reader() -> None:
    queue: LeanQueue[int] = LeanQueue()
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    await queue.put(1)
    queue.put_nowait(2)
    assert await reader == 1
    assert queue.get_nowait() == 2
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_a_reader_that_times_out_takes_nothing() -> None:
    queue: LeanQueue[str] = LeanQueue()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), 0.01)  # how engineio polls
    queue.put_nowait("packet")
    assert queue.qsize() == 1
    assert await asyncio.wait_for(queue.get(), 1) == "packet"
    assert queue.empty()


async def test_join_waits_until_every_item_is_done() -> None:
    queue: LeanQueue[int] = LeanQueue()
    await queue.join()  # nothing put: returns at once
    queue.put_nowait(1)
    queue.put_nowait(2)
    joined = asyncio.ensure_future(queue.join())
    await queue.get()
    queue.task_done()
    await asyncio.sleep(0)
    assert not joined.done()
    queue.get_nowait()
    queue.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(ValueError, match="too many"):
        queue.task_done()
