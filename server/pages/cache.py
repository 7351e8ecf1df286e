"""Hosted pages rendered once per flow version; a page view splices in its nonce, session and DPP.

Two caches, both bounded and per process:
- flows by slug, for `page_flow_cache_seconds` (a flow edited or disabled shows within that time, on every
  instance, with no invalidation message to send): a page view then touches no database at all;
- rendered pages by (flow id, flow updated_at, template version id, SDK script), least recently used out:
  an edit changes updated_at or adds a template version, so a new key, and the old entry ages out.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# Random per process, so no flow name or template text can contain one by chance.
_MARK = f"avatarbff{secrets.token_hex(8)}"
NONCE_MARK = f"{_MARK}nonce"
CONFIG_MARK = f"{_MARK}config"
SESSION_ID_MARK = f"{_MARK}sid"
TOKEN_MARK = f"{_MARK}token"
DPP_MARK = f"{_MARK}dpp"
DPP_SLOT = f'{{"{DPP_MARK}":0}}'  # how the DPP mark (an object standing for the DPP) reads in the config JSON


class Lru(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class TtlCache(Generic[K, V]):
    """Values for `seconds` (0: never kept), at most `size` of them.

    Views arriving while a key loads wait for that one load: when an entry expires under load, 32 views
    would otherwise make 32 identical reads (and open as many database connections).
    """

    def __init__(self, seconds: float, size: int) -> None:
        self.seconds = seconds
        self._items: Lru[K, tuple[float, V]] = Lru(size)
        self._loading: dict[K, asyncio.Task[V]] = {}

    async def get(self, key: K, load: Callable[[], Coroutine[Any, Any, V]]) -> V:
        hit = self._items.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        task = self._loading.get(key)
        if task is None:
            # A task of its own: a view that gives up (its client left) does not cancel the others' load.
            task = asyncio.create_task(load())
            self._loading[key] = task
            task.add_done_callback(lambda done: self._loaded(key, done))
        return await asyncio.shield(task)  # a refusal (unknown or disabled flow) reaches each waiter

    def _loaded(self, key: K, task: asyncio.Task[V]) -> None:
        del self._loading[key]
        if not task.cancelled() and task.exception() is None and self.seconds > 0:
            self._items.put(key, (time.monotonic() + self.seconds, task.result()))


@dataclass(frozen=True)
class PageKey:
    flow_id: int
    flow_updated_at: datetime
    template_version_id: int | None
    sdk_src: str


_SLOTS = re.compile(f"({NONCE_MARK}|{CONFIG_MARK}|{SESSION_ID_MARK}|{TOKEN_MARK}|{re.escape(DPP_SLOT)})")


def _cut(text: str) -> tuple[str, ...]:
    """Text and marks, alternating: a view fills the marks and joins, one pass over the page."""
    return tuple(_SLOTS.split(text))


@dataclass(frozen=True)
class PageShell:
    """A rendered page cut where each view's values go: the nonce (in the HTML and the CSP), the config and,
    inside the config, the session id, the token and the DPP."""

    html: tuple[str, ...]
    config: tuple[str, ...]
    csp: tuple[str, ...]
    permissions: str

    @classmethod
    def of(cls, html: str, config: str, csp: str, permissions: str) -> PageShell:
        return cls(_cut(html), _cut(config), _cut(csp), permissions)

    @property
    def has_dpp(self) -> bool:
        """Whether the page's config carries the DPP (iframe pages; the relay sends socket pages' own)."""
        return DPP_SLOT in self.config

    def fill(self, nonce: str, session_id: str, token: str, dpp_json: str | None) -> tuple[str, str]:
        """The page's HTML and CSP for one view. Each mark is filled once, in one pass: no value (the DPP
        carries visitor text) is ever searched for marks."""
        values = {
            NONCE_MARK: nonce,
            SESSION_ID_MARK: session_id,
            TOKEN_MARK: token,
            DPP_SLOT: dpp_json or "null",
        }
        values[CONFIG_MARK] = "".join([values.get(part, part) for part in self.config])
        html = "".join([values.get(part, part) for part in self.html])
        return html, "".join([values.get(part, part) for part in self.csp])
