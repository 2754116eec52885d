"""Await the store's ``concurrent.futures.Future``s from the event loop, cheaply.

``asyncio.wrap_future`` wakes the loop once per future (a write to its self-pipe each time). A
grouped commit resolves dozens of futures at once, so the bridge queues the resolutions and
wakes the loop once per burst."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from durablectl.store.base import Store

T = TypeVar("T")


class FutureBridge:
    """One per event loop: ``await bridge.call(store.method, ...)``."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self.loop = loop
        self._ready: deque[tuple[asyncio.Future[Any], Future[Any]]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def call(self, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Submit a store write to the next grouped commit; the result arrives after it."""
        return self.wrap(self._store.submit(method, *args, **kwargs))

    def wrap(self, inner: Future[T]) -> asyncio.Future[T]:
        """Any concurrent future (a store write, a step running in a thread) as an asyncio
        future on this loop."""
        outer: asyncio.Future[T] = self.loop.create_future()
        outer.add_done_callback(lambda f: inner.cancel() if f.cancelled() else None)
        inner.add_done_callback(lambda f: self._resolved(outer, f))
        return outer

    def _resolved(self, outer: asyncio.Future[Any], inner: Future[Any]) -> None:
        with self._lock:
            self._ready.append((outer, inner))
            if self._scheduled:
                return
            self._scheduled = True
        # a closed loop raises RuntimeError: nobody is waiting any more
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            ready = list(self._ready)
            self._ready.clear()
            self._scheduled = False
        for outer, inner in ready:
            if outer.done():
                continue
            if inner.cancelled():
                outer.cancel()
                continue
            error = inner.exception()
            if error is not None:
                outer.set_exception(error)
            else:
                outer.set_result(inner.result())
