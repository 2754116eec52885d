"""Parked executions cost rows, not memory (SPEC §5, §10): with ``cache_size = 0`` nothing of a
parked execution stays alive in the worker, and otherwise at most ``cache_size`` of them are
held (decoded histories and kept suspended runs). Counted with the garbage collector, so a
reference kept by mistake anywhere (a runner dict, a task, a closure) fails the test."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from durablectl import DurableService, SqliteStore, workflow
from durablectl.context import WorkflowContext
from durablectl.testing import FakeClock
from tests.conftest import run, until

PARKED = 60  # half sleeping, half waiting


@workflow("t.parked.sleep")
async def sleep_long(ctx: Any, data: dict[str, Any]) -> int:
    await ctx.sleep(3600, step_id="nap")
    return int(data["i"])


@workflow("t.parked.wait")
async def wait_forever(ctx: Any, data: dict[str, Any]) -> Any:
    return await ctx.wait_for_signal("t.parked.go", step_id="go")


def _parked(store: SqliteStore) -> int:
    counts = store.count_executions()
    return counts.get("sleeping", 0) + counts.get("waiting", 0)


def _alive(kind: type) -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


def _workflow_frames() -> int:
    """Suspended coroutines of the two workflow functions still alive anywhere."""
    codes = {sleep_long.fn.__code__, wait_forever.fn.__code__}
    gc.collect()
    return sum(1 for obj in gc.get_objects()
               if asyncio.iscoroutine(obj) and getattr(obj, "cr_code", None) in codes)


async def _park_all(service: DurableService, store: SqliteStore) -> list[str]:
    ids = []
    for i in range(PARKED // 2):
        ids.append(await service.start_execution(sleep_long, {"i": i}))
        ids.append(await service.start_execution(wait_forever, {"i": i}))
    await until(lambda: _parked(store) == PARKED and not service.runner.running)
    return ids


@pytest.mark.parametrize("cache_size", [0, 7])
def test_parked_executions_hold_at_most_their_share_of_the_cache(
        store: SqliteStore, clock: FakeClock, cache_size: int) -> None:
    async def main() -> None:
        async with DurableService(store, [sleep_long, wait_forever], clock=clock,
                                  cache_size=cache_size) as service:
            ids = await _park_all(service, store)
            runner = service.runner
            assert runner.running == {} and runner.contexts == {}
            env = runner.env
            assert env.histories is not None and len(env.histories) <= cache_size
            sticky = getattr(env, "sticky", None)
            assert sticky is None or len(sticky) <= cache_size
            assert _alive(WorkflowContext) <= cache_size
            assert _workflow_frames() <= cache_size
            # parked for good: every one of them still wakes and finishes
            for execution_id in ids[1::2]:
                await service.signal(execution_id, "t.parked.go", "late")
            for execution_id in ids[1::2]:
                assert await service.wait(execution_id, timeout=10) == "late"
            assert _parked(store) == PARKED // 2

    run(main())


def test_a_restarted_worker_loads_nothing_of_parked_executions(
        store: SqliteStore, clock: FakeClock) -> None:
    """Start-up recovery frees leases with set-based updates: it does not read the parked
    executions into memory (what makes a daemon's start-up cost flat in their number)."""

    async def main() -> None:
        async with DurableService(store, [sleep_long, wait_forever], clock=clock) as service:
            await _park_all(service, store)
        async with DurableService(store, [sleep_long, wait_forever], clock=clock) as service:
            await asyncio.sleep(0.05)
            assert service.runner.running == {}
            assert len(service.runner.env.histories or ()) == 0
            assert _workflow_frames() == 0
            assert _parked(store) == PARKED

    run(main())


def test_marking_unloaded_workflows_covers_each_one_not_loaded(store: SqliteStore) -> None:
    """``mark_unloaded`` visits the distinct workflow ids through their index (so that queued
    executions of loaded workflows cost nothing however many there are): every workflow not
    loaded is still found, whatever its place in the id order."""
    from durablectl import DurableClient

    client = DurableClient(store)
    with pytest.warns(UserWarning):
        queued = {wf: [client.start_execution(wf, {}) for _ in range(2)]
                  for wf in ("a.first", "m.loaded", "z.last")}
    marked = store.mark_unloaded(workflow_ids=["m.loaded"], reason_prefix="not loaded: ")
    assert marked == 4
    for workflow_id, ids in queued.items():
        for execution_id in ids:
            found = store.get_execution(execution_id)
            assert found is not None
            expected = None if workflow_id == "m.loaded" else f"not loaded: {workflow_id}"
            assert found.status_reason == expected
    assert store.mark_unloaded(workflow_ids=["m.loaded"], reason_prefix="not loaded: ") == 0
    assert store.mark_unloaded(workflow_ids=[], reason_prefix="not loaded: ") == 2
