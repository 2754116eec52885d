"""Runs kept in memory between wake-ups (durablectl/sticky.py): a parked workflow resumes where
it stopped instead of replaying, and whenever that could differ from a replay (another worker ran
on, an operator edited a step, the code was reloaded, the cache is full) it replays instead."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from durablectl import DurableOperator, DurableService, Signal, SqliteStore, workflow
from durablectl.errors import ExecutionNotActive
from durablectl.testing import FakeClock

from .conftest import run, until

PING = Signal("sticky.ping")
passes: Counter[str] = Counter()  # how often the workflow code itself ran past a point
ran: Counter[str] = Counter()  # how often each step body ran
closed: list[str] = []


def body(name: str, value: Any) -> Any:
    ran[name] += 1
    return value


@pytest.fixture(autouse=True)
def _reset() -> None:
    passes.clear()
    ran.clear()
    closed.clear()


@workflow("sticky.loop")
async def loop(ctx: Any, data: dict[str, Any]) -> dict[str, Any]:
    total = 0
    try:
        for i in range(data["n"]):
            passes[f"{ctx.execution_id}:top-{i}"] += 1
            payload = await ctx.wait_for_signal(PING, step_id=f"wait-{i}")
            total += await ctx.step(f"add-{i}", lambda p=payload: body("add", p["v"]))
    finally:
        closed.append(ctx.execution_id)
    return {"total": total}


async def _parked_on(store: SqliteStore, eid: str, i: int) -> None:
    """Wait until the execution is parked on ``wait-i`` (its previous step stored)."""
    def ready() -> bool:
        found = store.get_execution(eid)
        return found is not None and found.status == "waiting" and (
            i == 0 or any(s.step_id == f"add-{i - 1}" for s in store.list_step_results(eid)))
    await until(ready)


def test_a_signal_loop_resumes_its_kept_run_instead_of_replaying(
        store: SqliteStore, clock: FakeClock) -> None:
    n = 30

    async def main() -> None:
        async with DurableService(store, [loop], clock=clock) as service:
            eid = await service.start_execution(loop, {"n": n})
            for i in range(n):
                await _parked_on(store, eid, i)
                await service.signal(eid, PING, {"v": i})
            assert await service.wait(eid, timeout=5) == {"total": sum(range(n))}
            assert service.runner.env.sticky is not None
            assert service.runner.env.sticky.resumed == n
            # each iteration's code ran once: no replay of the earlier ones
            assert all(passes[f"{eid}:top-{i}"] == 1 for i in range(n))
    run(main())
    assert ran["add"] == n


def test_without_a_cache_every_wake_up_replays(store: SqliteStore, clock: FakeClock) -> None:
    n = 5

    async def main() -> None:
        async with DurableService(store, [loop], clock=clock, cache_size=0) as service:
            eid = await service.start_execution(loop, {"n": n})
            for i in range(n):
                await _parked_on(store, eid, i)
                await service.signal(eid, PING, {"v": i})
            assert await service.wait(eid, timeout=5) == {"total": sum(range(n))}
            assert len(service.runner.env.sticky or ()) == 0
            # iteration i's code ran in the run that reached it and in every later wake-up
            assert [passes[f"{eid}:top-{i}"] for i in range(n)] == [n + 1 - i for i in range(n)]
    run(main())
    assert ran["add"] == n  # replay never runs a stored step again


def test_the_cache_is_bounded_and_an_evicted_run_replays(
        store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [loop], clock=clock, cache_size=2) as service:
            sticky = service.runner.env.sticky
            assert sticky is not None
            ids = []
            for kept in (1, 2, 2):  # one after the other, so the order of parking is known
                ids.append(await service.start_execution(loop, {"n": 2}))
                await until(lambda kept=kept: len(sticky) == kept and ids[-1] in sticky)
            first, second, third = ids
            assert sticky.evicted == 1
            # the evicted run ended as a park always ends: its finally block ran
            await until(lambda: closed == [first])
            await service.signal(third, PING, {"v": 1})
            await _parked_on(store, third, 1)
            assert passes[f"{third}:top-0"] == 1  # kept: resumed
            await until(lambda: third in sticky)
            await service.signal(first, PING, {"v": 1})
            await _parked_on(store, first, 1)
            assert passes[f"{first}:top-0"] == 2  # evicted: replayed
            await until(lambda: closed == [first, second])  # the least recently parked went
            for eid in (first, second, third):
                if eid == second:
                    await service.signal(eid, PING, {"v": 1})
                    await _parked_on(store, eid, 1)
                await service.signal(eid, PING, {"v": 2})
            for eid in (first, second, third):
                assert await service.wait(eid, timeout=5) == {"total": 3}
    run(main())
    assert ran["add"] == 6


def test_a_run_kept_here_is_dropped_when_another_worker_ran_the_execution_meanwhile(
        store: SqliteStore, clock: FakeClock, db_path: Any) -> None:
    async def main() -> None:
        async with DurableService(store, [loop], clock=clock) as first:
            eid = await first.start_execution(loop, {"n": 3})
            await _parked_on(store, eid, 0)
            await until(lambda: eid in (first.runner.env.sticky or ()))
            other_store = SqliteStore(db_path)
            try:
                async with DurableService(other_store, [loop], clock=clock) as second:
                    # the other worker takes the signal, runs add-0 and parks on wait-1
                    await second.signal(eid, PING, {"v": 10})
                    await _parked_on(store, eid, 1)
            finally:
                other_store.close()
            # back here: the kept run still waits on wait-0 and must not resume from there
            await first.signal(eid, PING, {"v": 20})
            await _parked_on(store, eid, 2)
            await first.signal(eid, PING, {"v": 30})
            assert await first.wait(eid, timeout=5) == {"total": 60}
    run(main())
    assert ran["add"] == 3  # each step body once, whoever ran it


@workflow("sticky.priced")
async def priced(ctx: Any, _: Any) -> int:
    price = await ctx.step("price", lambda: body("price", 1))
    extra = await ctx.wait_for_signal(PING, step_id="extra")
    return int(price + extra)


def test_an_operator_edit_of_an_earlier_step_makes_the_next_wake_up_replay(
        store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [priced], clock=clock) as service:
            eid = await service.start_execution(priced)
            await until(lambda: store.get_execution(eid).status == "waiting")
            await until(lambda: eid in (service.runner.env.sticky or ()))
            DurableOperator(store, clock=clock).edit_state(eid, "price", 100, reason="fix",
                                                           actor="ops")
            await service.signal(eid, PING, 5)
            assert await service.wait(eid, timeout=5) == 105  # the kept run would say 6
    run(main())
    assert ran["price"] == 1


def test_a_reloaded_definition_is_not_resumed_with_the_old_code(
        store: SqliteStore, clock: FakeClock) -> None:
    @workflow("sticky.versioned")
    async def old(ctx: Any, _: Any) -> str:
        await ctx.wait_for_signal(PING, step_id="go")
        return "old code"

    @workflow("sticky.versioned")
    async def new(ctx: Any, _: Any) -> str:
        await ctx.wait_for_signal(PING, step_id="go")
        return "new code"

    async def main() -> None:
        async with DurableService(store, [old], clock=clock) as service:
            eid = await service.start_execution(old)
            await until(lambda: store.get_execution(eid).status == "waiting")
            service.registry.replace([new])  # what the daemon does when the file changes
            await service.signal(eid, PING, None)
            assert await service.wait(eid, timeout=5) == "new code"
    run(main())


@workflow("sticky.sleeper")
async def sleeper(ctx: Any, _: Any) -> list[int]:
    seen = []
    for i in range(3):
        passes[f"sleep-{i}"] += 1
        await ctx.sleep(10, step_id=f"nap-{i}")
        seen.append(await ctx.step(f"after-{i}", lambda i=i: body("after", i)))
    return seen


def test_a_kept_sleep_resumes_when_its_timer_fires(store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [sleeper], clock=clock) as service:
            eid = await service.start_execution(sleeper)
            for i in range(3):
                await until(lambda i=i: store.get_execution(eid).status == "sleeping" and len(
                    store.list_step_results(eid)) == 2 * i)
                clock.advance(11)
            assert await service.wait(eid, timeout=5) == [0, 1, 2]
    run(main())
    assert [passes[f"sleep-{i}"] for i in range(3)] == [1, 1, 1]


@workflow("sticky.mutates")
async def mutates(ctx: Any, _: Any) -> list[int]:
    items = await ctx.step("items", lambda: [1, 2])
    items.append(99)  # the workflow's own copy
    # parked inside gather: not a plain await of the workflow's task, so never kept
    await asyncio.gather(ctx.sleep(5, step_id="a"), ctx.sleep(5, step_id="b"))
    return list(items)


def test_a_value_the_workflow_mutates_does_not_change_what_replay_returns(
        store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [mutates], clock=clock) as service:
            eid = await service.start_execution(mutates)
            await until(lambda: store.get_execution(eid).status == "sleeping")
            assert eid not in (service.runner.env.sticky or ())
            clock.advance(6)
            # replayed from the cached history: "items" is [1, 2] again, then 99 appended once
            assert await service.wait(eid, timeout=5) == [1, 2, 99]
    run(main())


def test_stopping_the_service_ends_kept_runs(store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> str:
        async with DurableService(store, [loop], clock=clock) as service:
            eid = await service.start_execution(loop, {"n": 2})
            await _parked_on(store, eid, 0)
            assert closed == []
        return eid

    eid = run(main())
    assert closed == [eid]
    assert store.get_execution(eid).status == "waiting"  # still parked in the database


def test_a_cancelled_execution_is_never_resumed(store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [loop], clock=clock) as service:
            eid = await service.start_execution(loop, {"n": 2})
            await _parked_on(store, eid, 0)
            await service.cancel_execution(eid, reason="no longer needed")
            assert store.get_execution(eid).status == "cancelled"
            await until(lambda: closed == [eid])  # the kept run was dropped at once
            with pytest.raises(ExecutionNotActive):
                await service.signal(eid, PING, {"v": 1})
            await asyncio.sleep(0.05)
            assert ran["add"] == 0
    run(main())


def test_a_kept_run_cancelled_by_another_process_is_dropped_within_a_second(
        store: SqliteStore, clock: FakeClock, db_path: Any) -> None:
    """Its ``finally`` blocks run soon after the cancel, not when the cache evicts it."""
    async def main() -> None:
        async with DurableService(store, [loop], clock=clock) as service:
            eid = await service.start_execution(loop, {"n": 2})
            await _parked_on(store, eid, 0)
            assert eid in (service.runner.env.sticky or ())
            other = SqliteStore(db_path)  # another process's connection: no nudge, no hook
            try:
                other.cancel_execution(eid, reason="from elsewhere", now=clock.timestamp())
            finally:
                other.close()
            await until(lambda: closed == [eid], timeout=3)
            assert eid not in (service.runner.env.sticky or ())
            assert store.get_execution(eid).status == "cancelled"
            assert ran["add"] == 0
    run(main())
