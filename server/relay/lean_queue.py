"""A small unbounded queue for python-engineio's per-socket packet queue.

asyncio.Queue allocates four deques up front (items, getters, putters and its join Event's waiters): ~3 KB
per idle browser socket, measured, for a queue that is empty nearly all its life and has one reader. This one
holds a list and creates a waiter only while someone waits: ~0.2 KB.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class LeanQueue(Generic[T]):
    """The part of asyncio.Queue's interface python-engineio uses: put, put_nowait, get, get_nowait,
    task_done, join, qsize, empty. Unbounded, so put never waits."""

    __slots__ = ("_finished", "_getters", "_items", "_unfinished")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._getters: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        self._finished: asyncio.Future[None] | None = None  # only while someone is in join()

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        self._unfinished += 1
        if self._getters:  # each waiter checks again; there is one reader per socket
            for getter in self._getters:
                if not getter.done():
                    getter.set_result(None)

    async def put(self, item: T) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    async def get(self) -> T:
        # Cancelled while waiting (engineio's wait_for timeout), nothing is taken: no item is lost.
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            finally:
                self._getters.remove(getter)
                if not self._getters:
                    self._getters = None
        return self._items.pop(0)

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._finished is not None:
            if not self._finished.done():
                self._finished.set_result(None)
            self._finished = None

    async def join(self) -> None:
        if self._unfinished == 0:
            return
        if self._finished is None:
            self._finished = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._finished)
