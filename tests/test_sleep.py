"""ctx.sleep and parking: a parked execution holds no task, thread or coroutine."""

from __future__ import annotations

import asyncio
import gc
from datetime import timedelta

import pytest

from durablectl import DurableService, SqliteStore, workflow
from durablectl.testing import FakeClock

from .conftest import run, until

pytestmark = pytest.mark.usefixtures("cache_mode")  # kept runs and pure replay


@workflow("sleep.week")
async def week(ctx, _):
    await ctx.step("before", lambda: "x")
    await ctx.sleep(timedelta(days=7))
    await ctx.sleep(30)
    return "woke"


def test_a_week_long_sleep_takes_milliseconds_with_a_fake_clock(
        store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [week], clock=clock) as service:
            eid = await service.start_execution(week)
            await until(lambda: store.get_execution(eid).status == "sleeping")
            due = store.next_due_at()
            assert due == clock.timestamp() + 7 * 86400
            clock.advance(timedelta(days=3))
            await asyncio.sleep(0.05)
            assert store.get_execution(eid).status == "sleeping"
            assert store.next_due_at() == due  # replays never move the due time
            clock.advance(timedelta(days=4))
            await until(lambda: store.get_execution(eid).status == "sleeping" and
                        store.next_due_at() != due)
            clock.advance(30)
            assert await service.wait(eid, timeout=5) == "woke"
            ids = [(s.step_id, s.kind) for s in store.list_step_results(eid)]
            assert ids == [("before", "step"), ("__sleep:0", "sleep"), ("__sleep:1", "sleep")]
            kinds = [a.kind for a in store.list_audit_entries(eid)]
            assert kinds.count("sleep_scheduled") == 2
            assert kinds.count("sleep_completed") == 2
    run(main())


live_frames: list[object] = []


@workflow("sleep.parked")
async def parked(ctx, i):
    await ctx.step("s", lambda: i)
    await ctx.sleep(3600, step_id="long")
    return i


def test_parked_executions_hold_no_task_and_no_coroutine(store: SqliteStore,
                                                         clock: FakeClock) -> None:
    n = 300

    async def main() -> None:
        baseline = len(asyncio.all_tasks())
        async with DurableService(store, [parked], clock=clock, cache_size=0) as service:
            ids = [await service.start_execution(parked, i) for i in range(n)]
            await until(lambda: store.count_executions().get("sleeping") == n, timeout=20)
            await until(lambda: not service.runner.running)
            gc.collect()
            coroutines = [o for o in gc.get_objects()
                          if asyncio.iscoroutine(o) and getattr(o, "__name__", "") == "parked"]
            assert coroutines == []
            # only the service's loop task and its wake-up wait are alive
            assert len(asyncio.all_tasks()) <= baseline + 2
            clock.advance(3601)
            results = [await service.wait(eid, timeout=10) for eid in ids]
            assert results == list(range(n))
    run(main())
