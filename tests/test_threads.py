"""The step threads (durablectl/threads.py): sync step functions run off the loop, their outcome
reaches the caller, threads start on demand up to the bound, and steps that wait for each other
never starve."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from durablectl.threads import StepThreads


def outcome_of(threads: StepThreads, fn: Any, *args: Any) -> tuple[bool, Any]:
    got: list[tuple[bool, Any]] = []
    finished = threading.Event()

    def done(ok: bool, value: Any) -> None:
        got.append((ok, value))
        finished.set()

    threads.run(fn, args, done)
    assert finished.wait(5)
    return got[0]


def test_results_and_exceptions_reach_the_callback_from_another_thread() -> None:
    threads = StepThreads(4)
    try:
        ok, value = outcome_of(threads, lambda a, b: (a + b, threading.current_thread().name),
                               2, 3)
        assert ok and value[0] == 5 and value[1].startswith("durablectl-step_")
        ok, error = outcome_of(threads, lambda: 1 / 0)
        assert not ok and isinstance(error, ZeroDivisionError)

        def stops() -> None:
            raise StopIteration("done")

        ok, error = outcome_of(threads, stops)  # a future cannot carry StopIteration
        assert not ok and isinstance(error, RuntimeError) and "StopIteration" in str(error)
        assert threads.submit(lambda x: x * 2, 21).result(timeout=5) == 42
    finally:
        threads.shutdown()


def test_threads_start_on_demand_and_stay_within_the_bound() -> None:
    threads = StepThreads(3)
    release = threading.Event()
    started: list[str] = []
    lock = threading.Lock()

    def blocked() -> None:
        with lock:
            started.append(threading.current_thread().name)
        release.wait(5)

    try:
        assert outcome_of(threads, lambda: "warm") == (True, "warm")
        futures = [threads.submit(blocked) for _ in range(5)]
        time.sleep(0.2)
        assert len(started) == 3  # the bound: the other two wait for a thread
        release.set()
        for future in futures:
            future.result(timeout=5)
        assert len(set(started)) == 3
    finally:
        threads.shutdown()


def test_a_step_that_waits_for_another_running_beside_it_is_not_starved() -> None:
    threads = StepThreads(8)
    ready = threading.Event()
    try:
        # one thread became idle first; then two calls at once, the first waiting for the second
        assert outcome_of(threads, lambda: None) == (True, None)
        waiter = threads.submit(lambda: ready.wait(5))
        setter = threads.submit(ready.set)
        assert waiter.result(timeout=5) is True
        setter.result(timeout=5)
    finally:
        threads.shutdown()


def test_shutdown_stops_the_threads_and_refuses_new_calls() -> None:
    threads = StepThreads(2)
    assert threads.submit(lambda: 1).result(timeout=5) == 1
    threads.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="shut down"):
        threads.run(lambda: 1, (), lambda ok, value: None)
    assert not [t for t in threading.enumerate() if t.name.startswith("durablectl-step_")
                and t.is_alive() and t in threads._threads]
