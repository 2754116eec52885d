"""Workers: unknown workflows wait, payload limits, audit off, recovery of dead workers."""

from __future__ import annotations

import pytest

from durablectl import (
    DurableClient,
    DurableService,
    ExecutionFailed,
    PayloadError,
    SqliteStore,
    durable_events,
    workflow,
)

from .conftest import run, until


@workflow("workers.known")
async def known(ctx, value):
    return await ctx.step("double", lambda: value * 2)


@workflow("workers.other")
async def other(ctx, value):
    return f"other {value}"


@workflow("workers.big", max_attempts=1)
async def big(ctx, size):
    return await ctx.step("blob", lambda: "x" * size)


def test_an_execution_whose_workflow_is_not_loaded_waits_with_a_reason(
        store: SqliteStore) -> None:
    async def main() -> str:
        async with DurableService(store, [known, other]):
            pass  # records both ids, as a deploy that had both would
        client = DurableClient(store)
        with pytest.warns(UserWarning):
            eid = client.start_execution("workers.other", 1)
        async with DurableService(store, [known]) as service:
            await until(lambda: (store.get_execution(eid).status_reason or "").startswith(
                "workflow not loaded"))
            assert store.get_execution(eid).status == "pending"
            assert await service.execute(known, 2, wait_timeout=5) == 4
            assert store.get_execution(eid).status == "pending"  # not failed
        async with DurableService(store, [other]) as service:
            assert await service.wait(eid, timeout=5) == "other 1"
        return eid
    eid = run(main())
    assert store.get_execution(eid).status_reason is None


def test_payloads_over_the_limit_are_refused_naming_the_step(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [big], max_payload_bytes=1000) as service:
            with pytest.raises(PayloadError, match="over the limit"):
                await service.start_execution(big, "y" * 2000)
            with pytest.raises(ExecutionFailed) as info:
                await service.execute(big, 5000, wait_timeout=5)
            assert info.value.error.type == "PayloadError"
            assert "step 'blob'" in info.value.error.message
            assert await service.execute(big, 10, wait_timeout=5) == "x" * 10
    run(main())


def test_audit_off_stores_no_entries_but_still_publishes_events(store: SqliteStore) -> None:
    seen: list[str] = []

    async def main() -> str:
        async with DurableService(store, [known], audit=False) as service:
            service.on(durable_events.step_completed, lambda r: seen.append(r.data["step_id"]))
            eid = await service.start_execution(known, 3)
            assert await service.wait(eid, timeout=5) == 6
            return eid
    eid = run(main())
    assert store.list_audit_entries(eid) == []
    assert seen == ["double"]


def test_recover_frees_the_executions_of_a_worker_that_is_gone(store: SqliteStore,
                                                               db_path) -> None:
    # a worker that "died": registered, then its lock released without unregistering
    ghost = SqliteStore(db_path)
    ghost.register_worker(worker_id="ghost", pid=999999, hostname="h", real_now=0.0)
    client = DurableClient(store)
    eid = client.start_execution("workers.known", 5)
    claim = ghost.claim_execution(eid, worker_id="ghost", workflow_ids=["workers.known"],
                                  now=0.0, real_now=0.0, lease_until=4e9)
    assert claim is not None
    assert [w.worker_id for w in client.live_workers()] == ["ghost"]
    ghost.close()  # closing drops the kernel lock, as a SIGKILL would
    assert client.live_workers() == []
    assert client.recover() == 1
    assert store.get_execution(eid).lease_owner is None

    async def main() -> None:
        async with DurableService(store, [known]) as service:
            assert await service.wait(eid, timeout=5) == 10
    run(main())


@workflow("workers.strict", max_attempts=1, retry_backoff=5.0, timeout=90)
async def strict(ctx, _):
    return "ok"


def test_a_client_start_gets_the_declared_attempts_and_timeout(store: SqliteStore) -> None:
    async def main() -> None:
        async with DurableService(store, [strict]):
            pass  # the worker records the declaration with the id
    run(main())
    client = DurableClient(store)
    with pytest.warns(UserWarning):
        eid = client.start_execution("workers.strict")
    execution = store.get_execution(eid)
    assert execution.max_attempts == 1
    assert execution.deadline is not None
    assert (execution.deadline - execution.created_at).total_seconds() == pytest.approx(90)
    with pytest.warns(UserWarning):
        other = client.start_execution("workers.strict", max_attempts=4)
    assert store.get_execution(other).max_attempts == 4
