"""Time sources. The only module that reads the wall clock.

Workflow time (timestamps, sleeps, time-outs, backoff, schedules) comes from a ``Clock`` so tests
can move it. Leases and heartbeats use :func:`real_time` even under a fake clock: a test that
advances a week must not steal a running execution's lease.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Workflow time. ``subscribe`` lets a runner wake up when a fake clock moves."""

    def now(self) -> datetime: ...

    def timestamp(self) -> float: ...

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]: ...


class SystemClock:
    """The real clock; it never moves by itself, so subscribers are never called."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def timestamp(self) -> float:
        return time.time()

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        return lambda: None


class FakeClock:
    """A clock that only moves when told; moving it wakes every subscribed runner."""

    def __init__(self, start: datetime | None = None) -> None:
        if start is None:
            start = datetime(2030, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start datetime")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[], None]] = []

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def timestamp(self) -> float:
        return self.now().timestamp()

    def advance(self, delta: float | timedelta) -> datetime:
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        if seconds < 0:
            raise ValueError("a clock cannot go backwards; use set() to jump")
        with self._lock:
            self._now = self._now + timedelta(seconds=seconds)
            now = self._now
        self._notify()
        return now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("FakeClock.set needs a timezone-aware datetime")
        with self._lock:
            self._now = when.astimezone(UTC)
        self._notify()

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def _notify(self) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            callback()


def real_time() -> float:
    """Wall-clock seconds, for leases and heartbeats shared between processes."""
    return time.time()


def monotonic() -> float:
    """Monotonic seconds, for in-process waits (step time-outs, retry waits, wait time-outs)."""
    return time.monotonic()


def to_datetime(ts: float | None) -> datetime | None:
    """Epoch seconds as stored in the database -> an aware UTC datetime."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def seconds_of(duration: float | int | timedelta) -> float:
    """Every duration argument accepts seconds or a timedelta (SPEC §2)."""
    if isinstance(duration, timedelta):
        return duration.total_seconds()
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        raise TypeError(f"a duration is seconds or a timedelta, not {type(duration).__name__}")
    return float(duration)
