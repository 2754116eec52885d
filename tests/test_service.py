"""The service API: starting, idempotency, waiting, cancelling, attempts and time-outs."""

from __future__ import annotations

import asyncio
import logging
from typing import TypedDict

import pytest

from durablectl import (
    Branch,
    DurableClient,
    DurableError,
    DurableService,
    Event,
    ExecutionCancelled,
    ExecutionFailed,
    ExecutionNotActive,
    ExecutionNotFound,
    ResultTypeError,
    Signal,
    SqliteStore,
    WaitTimedOut,
    WorkflowNotFound,
    durable_events,
    workflow,
)
from durablectl.testing import FakeClock

from .conftest import run, until

Go = Signal("go")
Shipped = Event("order.shipped")


@workflow("svc.echo", alias="svc.echo-latest")
async def echo(ctx, data) -> dict:
    return {"echo": data}


@workflow("svc.blocked")
async def blocked(ctx, _) -> str:
    await ctx.wait_for_signal(Go, step_id="go")
    return "done"


class Out(TypedDict):
    n: int


@workflow("svc.typed")
async def typed(ctx, value) -> Out:
    return value


def test_idempotency_key_returns_the_same_execution(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [echo, blocked]) as service:
            first = await service.start_execution(echo, 1, idempotency_key="k")
            again = await service.start_execution(echo, 2, idempotency_key="k")
            other = await service.start_execution(blocked, None, idempotency_key="k")
            assert first == again != other
            assert await service.wait(first, timeout=5) == {"echo": 1}
    run(main())


def test_alias_resolves_once_at_start_to_the_concrete_id(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [echo]) as service:
            eid = await service.start_execution("svc.echo-latest", "x")
            assert store.get_execution(eid).workflow_id == "svc.echo"
            assert await service.wait(eid, timeout=5) == {"echo": "x"}
    run(main())


def test_unknown_workflow_is_refused_and_nothing_is_stored(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [echo]) as service:
            with pytest.raises(WorkflowNotFound, match=r"svc\.nope"):
                await service.start_execution("svc.nope")
    run(main())
    assert store.list_executions() == []
    # a client in another process sees the ids the worker recorded
    with pytest.raises(WorkflowNotFound) as info:
        DurableClient(store).start_execution("svc.ech0")
    assert info.value.known == ["svc.echo"]
    assert info.value.exit_code == 3


def test_client_start_before_any_worker_recorded_waits_for_one(store: SqliteStore) -> None:
    client = DurableClient(store)
    with pytest.warns(UserWarning, match="no worker is running"):
        eid = client.start_execution("svc.echo", {"early": True})
    assert store.get_execution(eid).status == "pending"

    async def main() -> None:
        async with DurableService(store, [echo]) as service:
            assert await service.wait(eid, timeout=5) == {"echo": {"early": True}}
    run(main())


def test_execute_strict_checks_the_return_annotation(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [typed, echo]) as service:
            done = await service.execute_strict(typed, {"n": 1}, wait_timeout=5)
            assert done.data == {"n": 1} and done.execution_id
            with pytest.raises(ResultTypeError, match="returned list"):
                await service.execute_strict(typed, [1], wait_timeout=5)
            assert (await service.execute_strict(echo, 3, wait_timeout=5)).data == {"echo": 3}
    run(main())


def test_wait_times_out_and_the_execution_goes_on(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [blocked]) as service:
            eid = await service.start_execution(blocked)
            with pytest.raises(WaitTimedOut) as info:
                await service.wait(eid, timeout=0.05)
            assert isinstance(info.value, TimeoutError) and info.value.exit_code == 5
            with pytest.raises(WaitTimedOut):
                await service.execute(blocked, wait_timeout=0.05)
            await service.signal(eid, Go)
            assert await service.wait(eid, timeout=5) == "done"
            with pytest.raises(ExecutionNotFound):
                await service.wait("missing", timeout=1)
    run(main())


def test_cancel_a_parked_execution_at_once(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [blocked]) as service:
            eid = await service.start_execution(blocked)
            await until(lambda: store.get_execution(eid).status == "waiting")
            await service.cancel_execution(eid, "customer left")
            with pytest.raises(ExecutionCancelled, match="customer left"):
                await service.wait(eid, timeout=5)
            with pytest.raises(ExecutionNotActive):
                await service.cancel_execution(eid)
            with pytest.raises(ExecutionNotActive):
                await service.signal(eid, Go)
            assert store.next_due_at() is None
    run(main())


ran_after_cancel: list[str] = []


@workflow("svc.long")
async def long_running(ctx, _):
    await ctx.step("slow", lambda: asyncio.sleep(0.3))
    await ctx.step("after", lambda: ran_after_cancel.append("after"))
    return "finished"


def test_cancel_a_running_execution_stops_it_at_its_next_durable_call(
        store: SqliteStore) -> None:
    ran_after_cancel.clear()

    async def main() -> None:
        async with DurableService(store, [long_running]) as service:
            eid = await service.start_execution(long_running)
            await until(lambda: eid in service.runner.contexts)
            await service.cancel_execution(eid)
            with pytest.raises(ExecutionCancelled):
                await service.wait(eid, timeout=5)
            await until(lambda: not service.runner.running)
            assert store.get_execution(eid).status == "cancelled"
    run(main())
    assert ran_after_cancel == []


attempts_seen: list[int] = []


@workflow("svc.failing", max_attempts=2, retry_backoff=3.0)
async def failing(ctx, _):
    attempts_seen.append(ctx.attempt)
    raise ValueError(f"attempt {ctx.attempt} broke")


def test_failed_attempts_retry_with_backoff_until_attempts_run_out(
        store: SqliteStore, clock: FakeClock) -> None:
    attempts_seen.clear()

    async def main() -> None:
        async with DurableService(store, [failing], clock=clock) as service:
            eid = await service.start_execution(failing)
            await until(lambda: store.get_execution(eid).status == "retrying")
            assert store.next_due_at() == pytest.approx(clock.timestamp() + 3.0)
            clock.advance(3)
            with pytest.raises(ExecutionFailed) as info:
                await service.wait(eid, timeout=5)
            assert info.value.error.type == "ValueError"
            assert "attempt 2 broke" in info.value.error.message
            # the start call's max_attempts wins over the declaration
            one = await service.start_execution(failing, max_attempts=1)
            with pytest.raises(ExecutionFailed):
                await service.wait(one, timeout=5)
            assert store.get_execution(one).attempt == 1
    run(main())
    assert attempts_seen == [1, 2, 1]


@workflow("svc.slowpoke", max_attempts=5)
async def slowpoke(ctx, _):
    await ctx.sleep(3600, step_id="nap")
    return "late"


def test_execution_timeout_counts_from_creation_across_sleeps(
        store: SqliteStore, clock: FakeClock) -> None:
    async def main() -> None:
        async with DurableService(store, [slowpoke], clock=clock) as service:
            eid = await service.start_execution(slowpoke, timeout=60)
            await until(lambda: store.get_execution(eid).status == "sleeping")
            clock.advance(61)
            with pytest.raises(ExecutionFailed) as info:
                await service.wait(eid, timeout=5)
            execution = store.get_execution(eid)
            assert execution.status == "failed" and execution.status_reason == "timeout"
            assert info.value.error.type == "TimeoutError"
    run(main())


emitted: list[object] = []


@workflow("svc.events")
async def eventful(ctx, value):
    await ctx.emit(Shipped, {"order": value}, step_id="notify")
    await ctx.note("shipped", {"carrier": "dhl"})
    size = await ctx.switch("size", value, [
        Branch("small", lambda v: v < 10, lambda v: f"small {v}"),
        Branch("big", lambda v: v >= 10, lambda v: f"big {v}"),
    ])
    await ctx.sleep(5, step_id="nap")
    return size


def test_emit_note_and_switch_are_recorded_once_and_replayed(
        store: SqliteStore, clock: FakeClock) -> None:
    emitted.clear()
    kinds: list[str] = []

    async def main() -> None:
        async with DurableService(store, [eventful], clock=clock) as service:
            service.on(Shipped, emitted.append)
            service.on(durable_events.audit_appended, lambda r: kinds.append(r.kind))
            service.on(durable_events.note, lambda r: (_ for _ in ()).throw(RuntimeError("x")))
            eid = await service.start_execution(eventful, 12)
            await until(lambda: store.get_execution(eid).status == "sleeping")
            clock.advance(6)
            assert await service.wait(eid, timeout=5) == "big 12"
            steps = {s.step_id: s for s in store.list_step_results(eid)}
            assert steps["notify"].kind == "emit"
            assert steps["__note:0"].result == {"message": "shipped", "meta": {"carrier": "dhl"}}
            assert steps["size"].result == {"branch": "big", "result": "big 12"}
            audit = {a.kind: a.data for a in store.list_audit_entries(eid)}
            assert audit["emit_published"] == {"step_id": "notify", "event": "order.shipped"}
            assert audit["switch_evaluated"] == {"step_id": "size", "branch": "big"}
            assert audit["note"] == {"message": "shipped", "meta": {"carrier": "dhl"}}
            await asyncio.sleep(0.01)
    run(main())
    assert emitted == [{"order": 12}]  # not re-emitted on replay
    assert "execution_status_changed" in kinds and "emit_published" in kinds


@workflow("svc.implicit")
async def implicit_sleep(ctx, _):
    await ctx.sleep(0)
    return "ok"


def test_implicit_step_id_policies(store: SqliteStore, caplog) -> None:
    async def main() -> None:
        async with DurableService(store, [implicit_sleep], implicit_step_ids="error") as svc:
            with pytest.raises(ExecutionFailed, match="implicit_step_ids"):
                await svc.execute(implicit_sleep, wait_timeout=5)
        async with DurableService(store, [implicit_sleep], implicit_step_ids="warn") as svc:
            with caplog.at_level(logging.WARNING):
                assert await svc.execute(implicit_sleep, wait_timeout=5) == "ok"
    run(main())
    assert "without a step_id" in caplog.text
    with pytest.raises(ValueError):
        DurableService(store, [], implicit_step_ids="sometimes")


def test_errors_carry_exit_codes() -> None:
    assert WorkflowNotFound("x").exit_code == 3
    assert issubclass(ExecutionNotActive, DurableError)
    assert ExecutionNotFound("x").exit_code == 3


@workflow("svc.waits_for_ever")
async def waits_for_ever(ctx, _):
    await ctx.wait_for_signal("never", step_id="never")


def test_many_waiters_share_one_poll_and_see_an_end_committed_by_another_process(
        store: SqliteStore, db_path) -> None:
    reads: dict[str, int] = {"get_execution": 0, "ended_among": 0}

    class Counting(SqliteStore):
        def get_execution(self, execution_id):  # type: ignore[no-untyped-def]
            reads["get_execution"] += 1
            return super().get_execution(execution_id)

        def ended_among(self, execution_ids):  # type: ignore[no-untyped-def]
            reads["ended_among"] += 1
            return super().ended_among(execution_ids)

    counting = Counting(db_path)

    async def main() -> None:
        async with DurableService(counting, [waits_for_ever]) as service:
            ids = [await service.start_execution(waits_for_ever) for _ in range(200)]
            await until(lambda: all(store.get_execution(e).status == "waiting" for e in ids))
            reads.update(get_execution=0, ended_among=0)
            waiters = [asyncio.ensure_future(service.wait(e, timeout=30)) for e in ids]
            await asyncio.sleep(1.3)
            # one read per waiter to begin with, then one read for all of them per poll
            assert reads["get_execution"] == len(ids)
            assert 1 <= reads["ended_among"] <= 4
            # another process (another connection: no commit of this service) cancels one
            other = SqliteStore(db_path)
            try:
                other.cancel_execution(ids[0], reason="elsewhere", now=0.0)
            finally:
                other.close()
            with pytest.raises(ExecutionCancelled):
                await asyncio.wait_for(waiters[0], 2.0)
            assert not any(w.done() for w in waiters[1:])
            for w in waiters[1:]:
                w.cancel()
            await asyncio.gather(*waiters[1:], return_exceptions=True)
    try:
        run(main())
    finally:
        counting.close()
