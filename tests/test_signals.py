"""wait_for_signal: buffering, FIFO, exactly-once delivery, time-outs, and wrong signal use."""

from __future__ import annotations

from datetime import timedelta

import pytest

from durablectl import (
    DurableClient,
    DurableService,
    ExecutionNotActive,
    ExecutionNotFound,
    Signal,
    SignalResult,
    SqliteStore,
    workflow,
)
from durablectl.testing import FakeClock

from .conftest import run, until

pytestmark = pytest.mark.usefixtures("cache_mode")  # kept runs and pure replay

Item = Signal("item")
Approved = Signal("approved")


@workflow("signals.collect")
async def collect(ctx, n):
    got = []
    for i in range(n):
        got.append(await ctx.wait_for_signal(Item, step_id=f"item-{i}"))
    return got


def test_signals_sent_before_the_wait_are_buffered_and_consumed_in_order(
        store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [collect]) as service:
            eid = await service.start_execution(collect, 3)
            # all three arrive at once, possibly before the first wait exists
            for value in ("a", "b", "c"):
                await service.signal(eid, Item, value)
            assert await service.wait(eid, timeout=5) == ["a", "b", "c"]
    run(main())


def test_signals_from_another_process_reach_a_waiting_workflow(store: SqliteStore,
                                                               db_path) -> None:
    async def main() -> None:
        async with DurableService(store, [collect]) as service:
            eid = await service.start_execution(collect, 2)
            await until(lambda: store.get_execution(eid).status == "waiting")
            other = SqliteStore(db_path)  # another connection, as the CLI would have
            client = DurableClient(other)
            assert client.signal(eid, "item", {"n": 1}) == 1
            assert client.signal(eid, "item", {"n": 2}) == 2
            other.close()
            assert await service.wait(eid, timeout=5) == [{"n": 1}, {"n": 2}]
    run(main())


def test_each_signal_is_delivered_once(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [collect]) as service:
            first = await service.start_execution(collect, 2)
            await until(lambda: store.get_execution(first).status == "waiting")
            for value in range(4):
                await service.signal(first, Item, value)
            assert await service.wait(first, timeout=5) == [0, 1]
    run(main())
    with store.raw_read() as conn:
        rows = conn.execute("SELECT seq, consumed_by FROM signals ORDER BY seq").fetchall()
    # two consumed by the two waits, two still buffered (the execution finished first)
    assert rows == [(1, "item-0"), (2, "item-1"), (3, None), (4, None)]


@workflow("signals.timeout")
async def approval(ctx, _):
    answer = await ctx.wait_for_signal(Approved, timeout=timedelta(days=2), step_id="approval")
    assert isinstance(answer, SignalResult)
    return {"kind": answer.kind, "payload": answer.payload}


def test_wait_with_timeout_returns_timeout_when_the_deadline_passes(
        store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [approval], clock=clock) as service:
            eid = await service.start_execution(approval)
            await until(lambda: store.get_execution(eid).status == "waiting")
            clock.advance(timedelta(days=2, seconds=1))
            assert await service.wait(eid, timeout=5) == {"kind": "timeout", "payload": None}
            kinds = [a.kind for a in store.list_audit_entries(eid)]
            assert "signal_waiting" in kinds and "signal_timed_out" in kinds
    run(main())


def test_signal_before_the_deadline_wins_and_cancels_the_timer(
        store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [approval], clock=clock) as service:
            eid = await service.start_execution(approval)
            await until(lambda: store.get_execution(eid).status == "waiting")
            clock.advance(timedelta(days=1))
            await service.signal(eid, Approved, {"by": "ann"})
            assert await service.wait(eid, timeout=5) == {"kind": "signal",
                                                          "payload": {"by": "ann"}}
            clock.advance(timedelta(days=5))  # the old time-out must not do anything now
            assert store.next_due_at() is None
            delivered = [a for a in store.list_audit_entries(eid)
                         if a.kind == "signal_delivered"]
            assert delivered[0].data == {"step_id": "approval", "signal": "approved", "seq": 1}
    run(main())


@workflow("signals.implicit")
async def implicit(ctx, _):
    first = await ctx.wait_for_signal(Item)
    second = await ctx.wait_for_signal(Item)
    return [first, second]


def test_implicit_wait_ids_count_per_signal(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [implicit]) as service:
            eid = await service.start_execution(implicit)
            await service.signal(eid, Item, 1)
            await service.signal(eid, Item, 2)
            assert await service.wait(eid, timeout=5) == [1, 2]
            ids = [s.step_id for s in store.list_step_results(eid)]
            assert ids == ["__signal:item:0", "__signal:item:1"]
    run(main())


def test_signal_to_unknown_or_finished_execution_is_refused(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [collect]) as service:
            with pytest.raises(ExecutionNotFound, match="nope"):
                await service.signal("nope", Item, 1)
            eid = await service.start_execution(collect, 0)
            assert await service.wait(eid, timeout=5) == []
            with pytest.raises(ExecutionNotActive, match="completed"):
                await service.signal(eid, Item, 1)
    run(main())
    client = DurableClient(store)
    with pytest.raises(ExecutionNotFound):
        client.signal("nope", "item")
    with pytest.raises(Exception, match="not JSON"):
        client.signal("nope", "item", {1, 2})
