"""The threads that run synchronous step functions off the event loop.

A ``ThreadPoolExecutor`` hands each call back through a ``concurrent.futures.Future`` (a
condition lock, callbacks, a work item), and the loop then waits on it through the bridge: about
20 µs of the loop's time per sync step, a third of what a short step costs in all. Here a call is
a tuple on a queue and its outcome goes straight to a callback (the bridge's, which resolves the
asyncio future on the loop, once per burst): about 8 µs. Threads start on demand, up to a bound.
It is still an ``Executor`` (``submit`` works) for anything that wants a plain future.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

log = logging.getLogger(__name__)

Done = Callable[[bool, Any], None]  # (succeeded, result or exception)


class StepThreads(Executor):
    def __init__(self, max_threads: int, name: str = "durablectl-step") -> None:
        self._max = max(1, int(max_threads))
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Done] | None]
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads done with their call and not yet promised another
        self._closed = False

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], done: Done) -> None:
        """Call ``fn(*args)`` in a thread, then ``done(ok, value)`` in that thread."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the step threads are shut down")
            # every call is promised a thread: an idle one (taken off the idle count here),
            # else a new one (up to the bound), so a step that waits for another step running
            # beside it cannot starve it; the threads then touch the lock once per call
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self._max:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self._name}_{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
        self._queue.put((fn, args, done))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()

        def settle(ok: bool, value: Any) -> None:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        self.run(lambda: fn(*args, **kwargs), (), settle)
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, done = item
            try:
                value = fn(*args)
                ok = True
            except StopIteration as exc:  # a future cannot hold one (PEP 479 does the same)
                value, ok = RuntimeError(f"step function raised StopIteration: {exc}"), False
            except BaseException as exc:  # the caller decides; a thread must not die of it
                value, ok = exc, False
            try:
                done(ok, value)
            except Exception:  # pragma: no cover - the bridge's callback does not raise
                log.exception("step thread: delivering a result failed")
            with self._lock:
                self._idle += 1  # about to wait for the next call: it may be promised one

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the threads once the calls already queued are done (or, with
        ``cancel_futures``, dropped: their runs were cancelled with the worker)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()
