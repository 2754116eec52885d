"""ctx.step: memoised results, retries, time-outs, failures and bad step ids."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter

import pytest

from durablectl import (
    DurableService,
    ExecutionFailed,
    NonDeterminismError,
    SqliteStore,
    StepFailed,
    workflow,
)
from durablectl.testing import FakeClock

from .conftest import run, until

pytestmark = pytest.mark.usefixtures("cache_mode")  # kept runs and pure replay

counts: Counter[str] = Counter()


def bump(name: str, value: object = None) -> object:
    counts[name] += 1
    return value


@pytest.fixture(autouse=True)
def _reset() -> None:
    counts.clear()


@workflow("steps.memo")
async def memo(ctx, data):
    a = await ctx.step("a", lambda: bump("a", (1, 2)))

    async def async_b():
        counts["b"] += 1
        return {"a": a}

    b = await ctx.step("b", async_b)
    await ctx.sleep(10, step_id="pause")
    c = await ctx.step("c", lambda: bump("c", "done"))
    return [a, b, c]


def test_completed_steps_never_run_again_and_return_the_json_round_trip(
        store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [memo], clock=clock) as service:
            eid = await service.start_execution(memo)
            await until(lambda: store.get_execution(eid).status == "sleeping")
            clock.advance(11)
            result = await service.wait(eid, timeout=5)
            # a tuple comes back as a list, on the first run too
            assert result == [[1, 2], {"a": [1, 2]}, "done"]
    run(main())
    assert counts == Counter({"a": 1, "b": 1, "c": 1})
    steps = {s.step_id: s for s in store.list_step_results(
        store.list_executions()[0].execution_id)}
    assert [s.step_id for s in sorted(steps.values(), key=lambda s: s.seq)] == [
        "a", "b", "pause", "c"]
    assert steps["pause"].kind == "sleep"
    assert steps["a"].kind == "step" and steps["a"].result == [1, 2]


@workflow("steps.retry", max_attempts=1)
async def flaky(ctx, fail_times):
    def body():
        counts["flaky"] += 1
        if counts["flaky"] <= fail_times:
            raise ConnectionError(f"boom {counts['flaky']}")
        return counts["flaky"]

    return await ctx.step("call", body, retries=2)


def test_step_retries_in_process_then_stores_the_result(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [flaky]) as service:
            assert await service.execute(flaky, 2, wait_timeout=5) == 3
    run(main())
    assert counts["flaky"] == 3


def test_step_that_keeps_failing_stores_its_error_and_fails_the_execution(
        store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [flaky]) as service:
            with pytest.raises(ExecutionFailed) as info:
                await service.execute(flaky, 10, wait_timeout=5)
            assert info.value.error is not None
            assert info.value.error.type == "StepFailed"
            assert "boom 3" in info.value.error.message
    run(main())
    assert counts["flaky"] == 3  # 1 + 2 retries
    [execution] = store.list_executions()
    [step] = store.list_step_results(execution.execution_id)
    assert step.error is not None and step.error.type == "ConnectionError"
    assert "Traceback" in (step.error.traceback or "")


caught: list[tuple[str, str, str]] = []


@workflow("steps.caught", max_attempts=1)
async def catches(ctx, _):
    try:
        await ctx.step("bad", lambda: bump("bad") or 1 / 0)
    except StepFailed as exc:
        caught.append((exc.step_id, exc.error_type, type(exc.__cause__).__name__))
    await ctx.sleep(5, step_id="nap")
    return "recovered"


def test_step_failed_is_catchable_and_replays_without_running_again(
        store: SqliteStore, clock: FakeClock) -> None:
    caught.clear()

    async def main() -> None:
        # cache_size=0: this is about replay (a kept run would resume without replaying)
        async with DurableService(store, [catches], clock=clock, cache_size=0) as service:
            eid = await service.start_execution(catches)
            await until(lambda: store.get_execution(eid).status == "sleeping")
            clock.advance(6)
            assert await service.wait(eid, timeout=5) == "recovered"
    run(main())
    assert counts["bad"] == 1
    # first run: the original exception is the cause; replay: same StepFailed, no cause
    assert caught == [("bad", "ZeroDivisionError", "ZeroDivisionError"),
                      ("bad", "ZeroDivisionError", "NoneType")]


@workflow("steps.attempts", max_attempts=3, retry_backoff=2.0)
async def attempts(ctx, _):
    await ctx.step("once", lambda: bump("once", 1))

    def sometimes():
        counts["sometimes"] += 1
        if counts["sometimes"] < 3:
            raise RuntimeError("not yet")
        return "ok"

    return await ctx.step("sometimes", sometimes)


def test_new_attempt_reruns_failed_step_but_not_completed_ones(
        store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [attempts], clock=clock) as service:
            eid = await service.start_execution(attempts)
            await until(lambda: store.get_execution(eid).status == "retrying")
            assert store.get_execution(eid).attempt == 1
            clock.advance(2)  # backoff 2 ** 1
            await until(lambda: store.get_execution(eid).attempt == 2 and
                        store.get_execution(eid).status == "retrying")
            clock.advance(4)  # backoff 2 ** 2
            assert await service.wait(eid, timeout=5) == "ok"
            assert store.get_execution(eid).attempt == 3
    run(main())
    assert counts["once"] == 1
    assert counts["sometimes"] == 3


@workflow("steps.timeout", max_attempts=1)
async def slow(ctx, kind):
    release = threading.Event()

    async def slow_async():
        await asyncio.sleep(5)
        counts["async-finished"] += 1

    def slow_sync():
        release.wait(1)
        counts["sync-finished"] += 1

    fn = slow_async if kind == "async" else slow_sync
    try:
        await ctx.step("slow", fn, timeout=0.05)
    except StepFailed as exc:
        return exc.error_type
    return "no timeout"


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_step_timeout_fails_the_attempt_with_timeout_error(store: SqliteStore,
                                                           kind: str) -> None:
    async def main() -> None:
        async with DurableService(store, [slow], grace_seconds=0) as service:
            assert await service.execute(slow, kind, wait_timeout=5) == "TimeoutError"
    run(main())
    assert counts["async-finished"] == 0
    [execution] = store.list_executions()
    [step] = store.list_step_results(execution.execution_id)
    assert step.error is not None and "timed out after 0.05s" in step.error.message


@workflow("steps.gather")
async def gathered(ctx, n):
    async def item(i):
        await asyncio.sleep(0.01)
        counts[f"item{i}"] += 1
        return i * i

    results = await asyncio.gather(*[ctx.step(f"item-{i}", lambda i=i: item(i))
                                     for i in range(n)])
    return sum(results)


def test_steps_with_distinct_ids_run_concurrently(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [gathered]) as service:
            assert await service.execute(gathered, 5, wait_timeout=5) == 30
    run(main())
    assert sum(counts.values()) == 5


@workflow("steps.duplicate")
async def duplicate(ctx, _):
    await ctx.step("same", lambda: bump("same", 1))
    # swallowing the error must not help: the execution fails at once
    with contextlib.suppress(Exception):
        await ctx.step("same", lambda: bump("same", 2))
    return "unreachable"


@workflow("steps.reserved")
async def reserved(ctx, step_id):
    await ctx.step(step_id, lambda: 1)


@workflow("steps.notjson")
async def not_json(ctx, _):
    await ctx.step("obj", lambda: object())


@pytest.mark.parametrize("wf,arg,expected_type,expected_text", [
    (duplicate, None, "StepIdError", "duplicate step id 'same'"),
    (reserved, "__mine", "StepIdError", "reserved"),
    (reserved, "rollback:x", "StepIdError", "reserved"),
    (not_json, None, "PayloadError", "result of step 'obj' is not JSON"),
])
def test_errors_a_retry_cannot_fix_fail_at_once(store: SqliteStore, wf, arg, expected_type,
                                                expected_text) -> None:
    async def main() -> None:
        async with DurableService(store, [wf]) as service:
            eid = await service.start_execution(wf, arg)
            with pytest.raises(ExecutionFailed) as info:
                await service.wait(eid, timeout=5)
            assert info.value.error.type == expected_type
            assert expected_text in info.value.error.message
            execution = store.get_execution(eid)
            assert execution.attempt == 1  # no retry despite max_attempts=3
            assert execution.status == "failed"
    run(main())
    assert counts["same"] <= 1


versions = {"kind": "step"}


@workflow("steps.nondeterminism")
async def shifting(ctx, _):
    if versions["kind"] == "step":
        await ctx.step("x", lambda: 1)
    else:
        await ctx.sleep(1, step_id="x")
    await ctx.sleep(100, step_id="wait")


def test_replay_that_asks_for_another_kind_is_a_nondeterminism_error(
        store: SqliteStore, clock: FakeClock) -> None:
    versions["kind"] = "step"

    async def main() -> None:
        # replay only: a run kept in memory goes on with the code it started with (a reload
        # that changes the code evicts it: tests/test_sticky.py)
        async with DurableService(store, [shifting], clock=clock, cache_size=0) as service:
            eid = await service.start_execution(shifting)
            await until(lambda: store.get_execution(eid).status == "sleeping")
            versions["kind"] = "sleep"  # the code changed under an in-flight execution
            clock.advance(101)
            with pytest.raises(ExecutionFailed) as info:
                await service.wait(eid, timeout=5)
            assert info.value.error.type == NonDeterminismError.__name__
            assert "'step'" in info.value.error.message and "'sleep'" in info.value.error.message
    run(main())


@workflow("steps.builder")
async def builder_without_up(ctx, _):
    await ctx.step("nothing")


def test_awaiting_a_builder_without_up_fails_clearly(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [builder_without_up]) as service:
            with pytest.raises(ExecutionFailed) as info:
                await service.execute(builder_without_up, max_attempts=1, wait_timeout=5)
            assert "up(fn)" in info.value.error.message
    run(main())
