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
from durablectl.threads import StepThreads

T = TypeVar("T")


class FutureBridge:
    """One per event loop: ``await bridge.call(store.method, ...)``."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self.loop = loop
        self._ready: deque[tuple[asyncio.Future[Any], bool, Any]] = deque()
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

    def run(self, threads: StepThreads, fn: Callable[..., T], /,
            *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` in one of ``threads``, as an asyncio future on this loop (no
        ``concurrent.futures.Future`` in between)."""
        outer: asyncio.Future[T] = self.loop.create_future()
        threads.run(fn, args, lambda ok, value: self._deliver(outer, ok, value))
        return outer

    def _resolved(self, outer: asyncio.Future[Any], inner: Future[Any]) -> None:
        if inner.cancelled():
            self._deliver(outer, False, None)
            return
        error = inner.exception()
        self._deliver(outer, error is None, inner.result() if error is None else error)

    def _deliver(self, outer: asyncio.Future[Any], ok: bool, value: Any) -> None:
        """From any thread: settle ``outer`` on the loop (``ok`` False with no exception:
        cancel it); the loop is woken once per burst of these."""
        with self._lock:
            self._ready.append((outer, ok, value))
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
        for outer, ok, value in ready:
            if outer.done():
                continue
            if ok:
                outer.set_result(value)
            elif value is None:
                outer.cancel()
            else:
                outer.set_exception(value)
