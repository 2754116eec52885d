"""Concurrent durable calls meeting suspension: gather and TaskGroup."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from durablectl import DurableService, SqliteStore, workflow
from durablectl.testing import FakeClock

from .conftest import run, until

pytestmark = pytest.mark.usefixtures("cache_mode")  # kept runs and pure replay

ran: Counter[str] = Counter()


async def slow(name: str) -> str:
    await asyncio.sleep(0.05)
    ran[name] += 1
    return name


@workflow("conc.gather")
async def gathered(ctx, _):
    # the sleep parks the run while the slow step is still going: the step must still be
    # stored before the execution is let go, and never run again after the wake-up
    results = await asyncio.gather(ctx.step("slow", lambda: slow("slow")),
                                   ctx.sleep(10, step_id="nap"))
    after = await ctx.step("after", lambda: slow("after"))
    return [results[0], after]


@workflow("conc.taskgroup")
async def grouped(ctx, _):
    async with asyncio.TaskGroup() as group:
        first = group.create_task(ctx.step("first", lambda: slow("first")))
        group.create_task(ctx.wait_for_signal("go", step_id="go"))
    return first.result()


def test_gather_with_a_sleep_stores_the_running_step_before_parking(
        store: SqliteStore, clock: FakeClock) -> None:
    ran.clear()

    async def main() -> None:
        async with DurableService(store, [gathered], clock=clock) as service:
            eid = await service.start_execution(gathered)
            await until(lambda: store.get_execution(eid).status == "sleeping")
            assert "slow" in {s.step_id for s in store.list_step_results(eid)}
            clock.advance(11)
            assert await service.wait(eid, timeout=5) == ["slow", "after"]
    run(main())
    assert ran == Counter({"slow": 1, "after": 1})


def test_a_taskgroup_that_parks_is_parked_not_failed(store: SqliteStore) -> None:
    ran.clear()

    async def main() -> None:
        async with DurableService(store, [grouped]) as service:
            eid = await service.start_execution(grouped)
            await until(lambda: store.get_execution(eid).status == "waiting")
            await service.signal(eid, "go")
            assert await service.wait(eid, timeout=5) == "first"
    run(main())
    assert ran["first"] == 1
