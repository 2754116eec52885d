"""Await the store's grouped writes (and steps run in threads) from the event loop, cheaply.

``asyncio.wrap_future`` wakes the loop once per future (a write to its self-pipe each time). A
grouped commit resolves dozens of writes at once, so the bridge queues the resolutions and
wakes the loop once per burst. A write's outcome goes straight from the writer thread to the
bridge (``Store.submit_to``): no ``concurrent.futures.Future`` (a lock and a condition
variable each) is made for it."""

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
        # made on its loop (RunEnv.bridge): resolutions from the loop itself (a store that
        # commits on the loop) need no wake-up through the loop's self-pipe
        self._loop_thread = threading.get_ident()

    def call(self, method: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Submit a store write to the next grouped commit; the result arrives after it."""
        outer: asyncio.Future[T] = self.loop.create_future()
        self._store.submit_to(_Settle(self, outer), method, *args, **kwargs)
        return outer

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
            if threading.get_ident() == self._loop_thread:
                self.loop.call_soon(self._drain)
            else:
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


class _Settle:
    """The writer's sink for one write awaited on the loop (``store.base.JobSink``)."""

    __slots__ = ("_bridge", "_done", "_outer")

    def __init__(self, bridge: FutureBridge, outer: asyncio.Future[Any]) -> None:
        self._bridge = bridge
        self._outer = outer
        self._done = False

    def set_running_or_notify_cancel(self) -> bool:
        # the awaiting task was cancelled before the writer took the job: drop it unrun, as a
        # cancelled future's job is (read from the writer thread: one flag, under the GIL)
        return not self._outer.cancelled()

    def set_result(self, result: Any, /) -> None:
        self._done = True
        self._bridge._deliver(self._outer, True, result)

    def set_exception(self, exception: BaseException | None, /) -> None:
        self._done = True
        self._bridge._deliver(self._outer, False, exception)

    def done(self) -> bool:
        return self._done
